//! Interrupt delivery: the MSI-X table and pending-bit array (PCI 3.0 6.8.2), and the INTx line
//! with the virtio ISR status register (VIRTIO 1.2 4.1.4.5).
//!
//! With MSI-X enabled in the capability, a vector is delivered to the port's
//! [`InterruptSink`] unless the function or the vector is masked, in which case its pending bit
//! is set and the message goes out when it is unmasked. With MSI-X disabled the device uses
//! INTx: it sets the ISR bit (0 for a queue, 1 for a configuration change) and raises the line;
//! reading the ISR register clears it and lowers the line.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use storport_sim::device::InterruptSink;

/// "No vector" (VIRTIO 1.2 4.1.4.3: VIRTIO_MSI_NO_VECTOR).
pub const NO_VECTOR: u16 = 0xFFFF;
/// ISR bit for a used-buffer notification.
pub const ISR_QUEUE: u8 = 1;
/// ISR bit for a configuration change.
pub const ISR_CONFIG: u8 = 2;

const ENTRY_SIZE: usize = 16;

struct Table {
    /// `vectors * 16` bytes: address low, address high, data, vector control.
    entries: Vec<u8>,
    pending: Vec<bool>,
}

/// The device's interrupt state.
pub struct Interrupts {
    vectors: u16,
    table: Mutex<Table>,
    msix_enabled: AtomicBool,
    function_masked: AtomicBool,
    intx_disabled: AtomicBool,
    isr: AtomicU8,
    sink: Mutex<Option<Arc<dyn InterruptSink>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Interrupts {
    /// Interrupt state for `vectors` MSI-X vectors, all masked, MSI-X disabled.
    pub fn new(vectors: u16) -> Self {
        let mut entries = vec![0u8; usize::from(vectors) * ENTRY_SIZE];
        for e in entries.chunks_mut(ENTRY_SIZE) {
            e[12] = 1; // masked at reset (PCI 3.0 6.8.2.9)
        }
        Self {
            vectors,
            table: Mutex::new(Table {
                entries,
                pending: vec![false; usize::from(vectors)],
            }),
            msix_enabled: AtomicBool::new(false),
            function_masked: AtomicBool::new(false),
            intx_disabled: AtomicBool::new(false),
            isr: AtomicU8::new(0),
            sink: Mutex::new(None),
        }
    }

    /// Number of MSI-X vectors.
    pub fn vectors(&self) -> u16 {
        self.vectors
    }

    /// Sets where interrupts go.
    pub fn connect(&self, sink: Arc<dyn InterruptSink>) {
        *lock(&self.sink) = Some(sink);
    }

    fn sink(&self) -> Option<Arc<dyn InterruptSink>> {
        lock(&self.sink).clone()
    }

    /// Whether MSI-X is enabled in the capability.
    pub fn msix_enabled(&self) -> bool {
        self.msix_enabled.load(Ordering::Acquire)
    }

    /// Applies the PCI command register and MSI-X message control after a configuration write.
    pub fn update_pci(&self, command: u16, msix_control: u16) {
        use super::pci::{COMMAND_INTX_DISABLE, MSIX_ENABLE, MSIX_FUNCTION_MASK};
        self.intx_disabled
            .store(command & COMMAND_INTX_DISABLE != 0, Ordering::Release);
        self.function_masked
            .store(msix_control & MSIX_FUNCTION_MASK != 0, Ordering::Release);
        self.msix_enabled
            .store(msix_control & MSIX_ENABLE != 0, Ordering::Release);
        self.deliver_pending();
        if !self.msix_enabled()
            && self.intx_asserted()
            && let Some(sink) = self.sink()
        {
            sink.raise(0);
        }
    }

    /// Signals an event for `vector` (MSI-X) or `isr_bit` (INTx); returns whether a message
    /// or the line went out now (false when masked, pending, or no vector).
    pub fn signal(&self, vector: u16, isr_bit: u8) -> bool {
        if self.msix_enabled() {
            if vector >= self.vectors {
                return false;
            }
            {
                let mut t = lock(&self.table);
                let masked = self.function_masked.load(Ordering::Acquire)
                    || t.entries[usize::from(vector) * ENTRY_SIZE + 12] & 1 != 0;
                if masked {
                    t.pending[usize::from(vector)] = true;
                    return false;
                }
            }
            match self.sink() {
                Some(sink) => {
                    sink.raise(vector);
                    true
                }
                None => false,
            }
        } else {
            self.isr.fetch_or(isr_bit, Ordering::AcqRel);
            if self.intx_disabled.load(Ordering::Acquire) {
                return false;
            }
            match self.sink() {
                Some(sink) => {
                    sink.raise(0);
                    true
                }
                None => false,
            }
        }
    }

    fn deliver_pending(&self) {
        if !self.msix_enabled() || self.function_masked.load(Ordering::Acquire) {
            return;
        }
        let mut due = Vec::new();
        {
            let mut t = lock(&self.table);
            for v in 0..usize::from(self.vectors) {
                if t.pending[v] && t.entries[v * ENTRY_SIZE + 12] & 1 == 0 {
                    t.pending[v] = false;
                    due.push(v as u16);
                }
            }
        }
        if let Some(sink) = self.sink() {
            for v in due {
                sink.raise(v);
            }
        }
    }

    /// Reads and clears the ISR status (VIRTIO 1.2 4.1.4.5: reading resets it to 0).
    pub fn read_isr(&self) -> u8 {
        self.isr.swap(0, Ordering::AcqRel)
    }

    /// Clears the ISR (device reset).
    pub fn clear_isr(&self) {
        self.isr.store(0, Ordering::Release);
    }

    /// Level of INTx.
    pub fn intx_asserted(&self) -> bool {
        !self.msix_enabled()
            && !self.intx_disabled.load(Ordering::Acquire)
            && self.isr.load(Ordering::Acquire) != 0
    }

    /// Reads the MSI-X table (offsets below `pba_offset`) or PBA region of BAR 1.
    pub fn bar_read(&self, offset: u64, pba_offset: u64, out: &mut [u8]) {
        let t = lock(&self.table);
        for (i, b) in out.iter_mut().enumerate() {
            let at = offset.saturating_add(i as u64);
            *b = if at < pba_offset {
                usize::try_from(at)
                    .ok()
                    .and_then(|at| t.entries.get(at).copied())
                    .unwrap_or(0)
            } else {
                let bit0 = (at - pba_offset) * 8;
                let mut byte = 0u8;
                for bit in 0..8 {
                    let v = bit0 + bit;
                    if usize::try_from(v)
                        .ok()
                        .and_then(|v| t.pending.get(v).copied())
                        .unwrap_or(false)
                    {
                        byte |= 1 << bit;
                    }
                }
                byte
            };
        }
    }

    /// Writes the MSI-X table (the PBA is read-only); unmasking delivers a pending message.
    pub fn bar_write(&self, offset: u64, pba_offset: u64, input: &[u8]) {
        {
            let mut t = lock(&self.table);
            for (i, v) in input.iter().enumerate() {
                let at = offset.saturating_add(i as u64);
                if at >= pba_offset {
                    break;
                }
                let Ok(at) = usize::try_from(at) else { break };
                if let Some(b) = t.entries.get_mut(at) {
                    *b = if at % ENTRY_SIZE >= 12 {
                        // Vector control: only the mask bit is defined.
                        if at % ENTRY_SIZE == 12 { v & 1 } else { 0 }
                    } else {
                        *v
                    };
                }
            }
        }
        self.deliver_pending();
    }
}
