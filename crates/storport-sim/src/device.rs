//! The interface between the user-mode Storport and a simulated PCI device.
//!
//! storport-sim is device-agnostic: it sees a device only through [`PciDevice`] (configuration
//! space, BAR registers) and gives the device an [`InterruptSink`] to signal message interrupts
//! with. All DMA-able memory the miniport receives is carved from one [`GuestMemory`] region that
//! the device model owns and shares: the miniport sees host pointers, the device sees guest-physical
//! addresses (`guest_base + (host - host_base)`).

use std::sync::Arc;

/// A PCI function as the port driver sees it.
///
/// Accesses are little-endian byte slices of 1, 2, 4 or 8 bytes at naturally aligned offsets.
/// Implementations must be callable from any simulated CPU thread at once.
pub trait PciDevice: Send + Sync {
    /// Reads `data.len()` bytes of PCI configuration space (256 bytes, or 4096 for extended
    /// space) starting at `offset`. Bytes past the end read as 0xFF.
    fn config_read(&self, offset: u16, data: &mut [u8]);
    /// Writes PCI configuration space; read-only bits are ignored.
    fn config_write(&self, offset: u16, data: &[u8]);
    /// The memory BARs the device decodes: what the PnP manager would assign.
    fn bars(&self) -> Vec<Bar>;
    /// Reads a register in BAR `bar` at byte `offset` (a device-side MMIO read).
    fn bar_read(&self, bar: u8, offset: u64, data: &mut [u8]);
    /// Writes a register in BAR `bar` at byte `offset` (a device-side MMIO write).
    fn bar_write(&self, bar: u8, offset: u64, data: &[u8]);
    /// Called once when the port connects the device: where interrupts go from now on.
    fn connect_interrupts(&self, sink: Arc<dyn InterruptSink>);
    /// Number of MSI-X messages the device offers (0: INTx only).
    fn msix_message_count(&self) -> u16;
    /// Level of the INTx line (for INTx mode; a device without INTx may always answer false).
    fn intx_asserted(&self) -> bool;
    /// The device's [`DmaWatch`], if it checks its writes against completed requests' memory.
    fn dma_watch(&self) -> Option<Arc<DmaWatch>> {
        None
    }
}

/// One memory BAR as assigned by the (simulated) PnP manager.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bar {
    /// BAR index 0..=5 (a 64-bit BAR is named by its lower index).
    pub index: u8,
    /// Physical address the BAR is assigned at.
    pub address: u64,
    /// Size in bytes (a power of two).
    pub size: u64,
    /// Whether the BAR is 64-bit.
    pub is_64bit: bool,
}

/// Where a device sends its interrupts: implemented by the port.
pub trait InterruptSink: Send + Sync {
    /// Signals MSI/MSI-X message `message` (or, with INTx, the line: `message` is ignored).
    /// May be called from any device thread; delivery is asynchronous.
    fn raise(&self, message: u16);
}

/// The guest-memory region all DMA-able allocations are carved from.
#[derive(Clone)]
pub struct GuestMemory {
    /// Host address of the region's first byte.
    pub host_base: *mut u8,
    /// Guest-physical address of the region's first byte.
    pub guest_base: u64,
    /// Length in bytes.
    pub len: usize,
    /// Keeps the mapping alive while the port uses it.
    pub owner: Arc<dyn Send + Sync>,
}

// SAFETY: `host_base` points into a mapping kept alive by `owner`, which is Send + Sync; the
// pointer itself is just an address shared by every simulated CPU, as physical memory is.
unsafe impl Send for GuestMemory {}
// SAFETY: as for Send: the region is shared memory by design; accesses are synchronised by the
// miniport's and the device's own protocols (rings, barriers), as on real hardware.
unsafe impl Sync for GuestMemory {}

/// Where a [`DmaWatch`] reports a write (guest address, length).
type WatchReport = Box<dyn Fn(u64, usize) + Send + Sync>;

/// Memory of completed requests, watched for device writes.
///
/// viostor's bug virtio-win #1326 (and vioscsi PR #965) was a reset that completed requests the
/// device still owned: the host later wrote into pages Windows had reused. The port marks the
/// guest memory of every request it completes (SRB extension, data buffer) as freed until it
/// hands that block out again; a device model calls [`DmaWatch::device_write`] before it writes
/// into guest memory, and a write into a freed block is reported as a violation
/// ([`crate::Rule::WriteAfterCompletion`]) of the adapter the device belongs to.
#[derive(Default)]
pub struct DmaWatch {
    /// Freed blocks as (start, end), sorted by start: a vector rather than a tree, so that
    /// marking and reusing blocks allocates nothing once it has grown to the blocks in use.
    freed: std::sync::Mutex<Vec<(u64, u64)>>,
    report: std::sync::Mutex<Option<WatchReport>>,
    hits: std::sync::atomic::AtomicU64,
}

impl DmaWatch {
    /// A watch with nothing freed.
    pub fn new() -> Self {
        Self::default()
    }

    /// The port freed `[guest, guest + len)` (a completed request's memory).
    pub(crate) fn freed(&self, guest: u64, len: usize) {
        let end = guest.saturating_add(len as u64);
        let mut v = self.freed.lock().unwrap_or_else(|e| e.into_inner());
        let at = v.partition_point(|&(s, _)| s < guest);
        match v.get_mut(at) {
            Some(e) if e.0 == guest => e.1 = end,
            _ => v.insert(at, (guest, end)),
        }
    }

    /// The port handed the block at `guest` out again.
    pub(crate) fn reused(&self, guest: u64) {
        let mut v = self.freed.lock().unwrap_or_else(|e| e.into_inner());
        if let Ok(at) = v.binary_search_by_key(&guest, |&(s, _)| s) {
            v.remove(at);
        }
    }

    /// A fresh block `[guest, guest + len)` was handed out (another allocator over the same
    /// memory may have freed what it overlaps): no longer memory of a completed request.
    pub(crate) fn claimed(&self, guest: u64, len: usize) {
        let end = guest.saturating_add(len as u64);
        let mut v = self.freed.lock().unwrap_or_else(|e| e.into_inner());
        v.retain(|&(s, e)| e <= guest || s >= end);
    }

    /// Where violations go (the port connects its adapter).
    pub(crate) fn connect(&self, report: Box<dyn Fn(u64, usize) + Send + Sync>) {
        *self.report.lock().unwrap_or_else(|e| e.into_inner()) = Some(report);
    }

    /// The device is about to write `len` bytes at guest address `addr`. Returns false (and
    /// reports the violation) when that memory belongs to a request the port already completed.
    pub fn device_write(&self, addr: u64, len: usize) -> bool {
        if len == 0 {
            return true;
        }
        let last = addr.saturating_add(len as u64 - 1);
        let hit = {
            let v = self.freed.lock().unwrap_or_else(|e| e.into_inner());
            // The last block starting at or before `last` is the only one that can overlap.
            let at = v.partition_point(|&(s, _)| s <= last);
            at > 0 && v.get(at - 1).is_some_and(|&(_, end)| end > addr)
        };
        if hit {
            self.hits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if let Some(report) = self
                .report
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
            {
                report(addr, len);
            }
        }
        !hit
    }

    /// How many device writes hit freed memory.
    pub fn hits(&self) -> u64 {
        self.hits.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::DmaWatch;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn a_write_into_freed_memory_is_reported_until_the_block_is_reused() {
        let watch = DmaWatch::new();
        let reported = Arc::new(AtomicU64::new(0));
        let r = reported.clone();
        watch.connect(Box::new(move |addr, _| r.store(addr, Ordering::SeqCst)));
        // Nothing freed: every write is fine.
        assert!(watch.device_write(0x1000, 4096));
        watch.freed(0x2000, 0x1000);
        // Before, after and touching the edges of the freed block: fine.
        assert!(watch.device_write(0x1000, 0x1000));
        assert!(watch.device_write(0x3000, 16));
        // Inside it, or overlapping it: reported.
        assert!(!watch.device_write(0x2FFF, 1));
        assert_eq!(reported.load(Ordering::SeqCst), 0x2FFF);
        assert!(!watch.device_write(0x1800, 0x1000));
        assert_eq!(watch.hits(), 2);
        // Handed out again: the new owner's memory.
        watch.reused(0x2000);
        assert!(watch.device_write(0x2000, 0x1000));
        assert!(watch.device_write(0x2000, 0));
        assert_eq!(watch.hits(), 2);
    }
}
