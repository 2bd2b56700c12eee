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
