//! HwStorFindAdapter's view of the adapter: PORT_CONFIGURATION_INFORMATION.
//!
//! Storport describes the adapter it found (bus, slot, access ranges, interrupt, dump mode) in a
//! `PORT_CONFIGURATION_INFORMATION` (layouts.md: 224 bytes, Win8+), and the miniport answers in the
//! same structure (transfer limits, DMA width, synchronization model, message interrupts). The
//! structure is only valid during HwStorFindAdapter, so [`PortConfiguration`] borrows it for
//! that call. Reading PCI configuration space, mapping register ranges and taking the uncached
//! extension are done through it too, because Storport allows them only there.

use core::ptr::NonNull;

use crate::dma::DmaRegion;
use crate::ffi;
use crate::miniport::{Miniport, message_interrupt_trampoline};
use crate::port::Port;
use crate::register::RegisterWindow;

/// One bus-relative address range of the adapter (ACCESS_RANGE): a BAR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccessRange {
    /// Bus-relative start address.
    pub start: u64,
    /// Length in bytes.
    pub length: u32,
    /// Memory space (true) or I/O port space (false).
    pub in_memory: bool,
}

/// Why the adapter was loaded for a crash-dump or hibernation stack (DUMP_MODE_*).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DumpMode {
    /// DUMP_MODE_CRASH: writing a crash dump.
    Crash,
    /// DUMP_MODE_HIBER: writing the hibernation file.
    Hibernate,
    /// DUMP_MODE_MARK_MEMORY.
    MarkMemory,
    /// DUMP_MODE_RESUME: resuming from hibernation.
    Resume,
    /// A dump stack without a known mode (the "dump=1" argument string only).
    Unknown,
}

/// The miniport's answer about interrupts: how requests complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageSynchronization {
    /// InterruptSynchronizeAll: one lock for all messages.
    All,
    /// InterruptSynchronizePerMessage: one lock per message.
    PerMessage,
}

/// PORT_CONFIGURATION_INFORMATION for the duration of HwStorFindAdapter.
///
/// # Invariants
///
/// `raw` is the structure Storport passed to the running HwStorFindAdapter, valid and exclusively
/// ours for `'a`; `arguments` is its NUL-terminated argument string or NULL; `port` is the adapter.
pub struct PortConfiguration<'a> {
    raw: &'a mut ffi::PORT_CONFIGURATION_INFORMATION,
    arguments: *const i8,
    port: Port,
}

impl<'a> PortConfiguration<'a> {
    /// Wraps Storport's structure.
    ///
    /// # Safety
    ///
    /// `raw` is the PORT_CONFIGURATION_INFORMATION Storport passed to the running HwStorFindAdapter
    /// of `port`, valid for `'a`; `arguments` is NULL or a NUL-terminated string valid for `'a`.
    pub(crate) unsafe fn new(
        raw: NonNull<ffi::PORT_CONFIGURATION_INFORMATION>,
        arguments: *const i8,
        port: Port,
    ) -> Self {
        // SAFETY: by this function's `# Safety`.
        let raw = unsafe { &mut *raw.as_ptr() };
        // INVARIANT: by this function's `# Safety`.
        Self {
            raw,
            arguments,
            port,
        }
    }

    /// The argument string Storport passed ("dump=1" in a dump stack), without the NUL.
    pub fn argument_string(&self) -> &[u8] {
        if self.arguments.is_null() {
            return &[];
        }
        // SAFETY: by the type invariant the string is NUL-terminated; the walk is bounded.
        let mut len = 0usize;
        while len < 512 {
            // SAFETY: bytes before the terminating NUL are readable (type invariant).
            if unsafe { self.arguments.wrapping_add(len).read() } == 0 {
                break;
            }
            len += 1;
        }
        // SAFETY: `len` bytes were just read.
        unsafe { core::slice::from_raw_parts(self.arguments.cast::<u8>(), len) }
    }

    /// Whether the adapter runs in a crash-dump or hibernation stack, and why.
    pub fn dump_mode(&self) -> Option<DumpMode> {
        let mode = match self.raw.DumpMode {
            ffi::DUMP_MODE_CRASH => Some(DumpMode::Crash),
            ffi::DUMP_MODE_HIBER => Some(DumpMode::Hibernate),
            ffi::DUMP_MODE_MARK_MEMORY => Some(DumpMode::MarkMemory),
            ffi::DUMP_MODE_RESUME => Some(DumpMode::Resume),
            _ => None,
        };
        let argument = contains(self.argument_string(), b"dump=1");
        match (mode, argument) {
            (Some(mode), _) => Some(mode),
            (None, true) => Some(DumpMode::Unknown),
            (None, false) => None,
        }
    }

    /// The private data the running instance named in its answer to SRB_FUNCTION_DUMP_POINTERS
    /// ([`crate::dump::DumpPointers::answer`]), which Storport passes to a dump instance as
    /// `MiniportDumpData`; `None` outside a dump stack, when Storport passed none, or when it is
    /// not the layer's (signature and length checked).
    pub fn dump_data(&self) -> Option<[u32; crate::dump::DUMP_DATA_WORDS]> {
        self.dump_mode()?;
        // SAFETY: in a dump stack, MiniportDumpData is NULL or the MiniportPrivateDumpData the
        // running instance returned in MINIPORT_DUMP_POINTERS (the Storport contract): with this
        // layer, the dump words in the running adapter's device extension, which outlives the
        // dump stack built from it.
        unsafe { crate::dump::read_dump_data(self.raw.MiniportDumpData) }
    }

    /// The REG_DWORD `name` under the miniport's `Parameters\\Device` key (StorPortRegistryRead
    /// with Global = 1), or `None` when it is not set, is not a DWORD, or cannot be read.
    ///
    /// Storport allows registry reads at PASSIVE_LEVEL only, through the one registry buffer an
    /// adapter may hold (StorPortAllocateRegistryBuffer, freed again here on every path). A dump
    /// stack's HwStorFindAdapter runs at HIGH_LEVEL: there the answer is `None` without a call.
    pub fn registry_dword(&self, name: &core::ffi::CStr) -> Option<u32> {
        if self.dump_mode().is_some() {
            return None;
        }
        let devext = self.port.extension();
        let mut length: ffi::ULONG = 4;
        // SAFETY: the adapter's extension (`port`'s invariant), at PASSIVE_LEVEL (HwStorFindAdapter
        // outside a dump stack), and a valid in/out length.
        let buffer = unsafe { ffi::StorPortAllocateRegistryBuffer(devext, &mut length) };
        if buffer.is_null() {
            return None;
        }
        let mut read = length.min(4);
        // SAFETY: a NUL-terminated name, the registry buffer just allocated, and its length
        // (at most the `length` bytes Storport gave).
        let found = unsafe {
            ffi::StorPortRegistryRead(
                devext,
                name.as_ptr().cast_mut().cast(),
                1,
                ffi::MINIPORT_REG_DWORD,
                buffer,
                &mut read,
            )
        };
        let value = if found != 0 && read == 4 && length >= 4 {
            // SAFETY: Storport wrote `read` = 4 bytes into the buffer of `length` >= 4 bytes; the
            // read is unaligned-safe.
            Some(u32::from_le(unsafe {
                buffer.cast::<u32>().read_unaligned()
            }))
        } else {
            None
        };
        // SAFETY: the buffer StorPortAllocateRegistryBuffer returned above, freed once.
        unsafe { ffi::StorPortFreeRegistryBuffer(devext, buffer) };
        value
    }

    /// The system I/O bus number and slot of the adapter.
    pub fn bus_slot(&self) -> (u32, u32) {
        (self.raw.SystemIoBusNumber, self.raw.SlotNumber)
    }

    /// The access ranges Storport assigned (at most 16 are considered).
    pub fn access_ranges(&self) -> impl Iterator<Item = AccessRange> + '_ {
        let count = if self.raw.AccessRanges.is_null() {
            0
        } else {
            self.raw.NumberOfAccessRanges.min(16)
        };
        let base = self.raw.AccessRanges;
        (0..count as usize).map(move |i| {
            // SAFETY: Storport's array has NumberOfAccessRanges entries (i is below it) and lives
            // during FindAdapter (type invariant).
            let r = unsafe { base.wrapping_add(i).read() };
            AccessRange {
                start: r.RangeStart as u64,
                length: r.RangeLength,
                in_memory: r.RangeInMemory != 0,
            }
        })
    }

    /// Reads the adapter's PCI configuration space into `buffer` (StorPortGetBusData).
    /// Returns the number of bytes read.
    pub fn read_pci_config(&self, buffer: &mut [u8]) -> usize {
        let length = u32::try_from(buffer.len()).unwrap_or(u32::MAX);
        // SAFETY: `buffer` is valid for `length` bytes; the bus and slot are the ones Storport
        // reported for this adapter.
        let read = unsafe {
            ffi::StorPortGetBusData(
                self.port.extension(),
                ffi::PCIConfiguration,
                self.raw.SystemIoBusNumber,
                self.raw.SlotNumber,
                buffer.as_mut_ptr().cast(),
                length,
            )
        };
        (read as usize).min(buffer.len())
    }

    /// Maps a memory access range for register access (StorPortGetDeviceBase).
    pub fn map_registers(&self, range: AccessRange) -> Option<RegisterWindow> {
        if !range.in_memory || range.length == 0 {
            return None;
        }
        let start = i64::try_from(range.start).ok()?;
        // SAFETY: the range is one Storport assigned to this adapter.
        let base = unsafe {
            ffi::StorPortGetDeviceBase(
                self.port.extension(),
                self.raw.AdapterInterfaceType,
                self.raw.SystemIoBusNumber,
                start,
                range.length,
                0,
            )
        };
        if base.is_null() {
            return None;
        }
        // SAFETY: StorPortGetDeviceBase mapped `length` bytes of this adapter's registers, which
        // stay mapped for the adapter's lifetime.
        Some(unsafe {
            RegisterWindow::new(base.cast(), range.length as usize, self.port.extension())
        })
    }

    /// Takes the adapter's uncached extension: `bytes` of DMA-able, physically contiguous memory
    /// (StorPortGetUncachedExtension, allowed only here, after SrbExtensionSize is set).
    pub fn uncached_extension(&mut self, bytes: u32) -> Option<DmaRegion<'static>> {
        // SAFETY: called during HwStorFindAdapter with this adapter's configuration.
        let va =
            unsafe { ffi::StorPortGetUncachedExtension(self.port.extension(), self.raw, bytes) };
        let va = NonNull::new(va.cast::<u8>())?;
        let mut length: ffi::ULONG = 0;
        // SAFETY: translating an address of this adapter's uncached extension (no SRB).
        let phys = unsafe {
            ffi::StorPortGetPhysicalAddress(
                self.port.extension(),
                core::ptr::null_mut(),
                va.as_ptr().cast(),
                &mut length,
            )
        };
        if length < bytes {
            return None;
        }
        // SAFETY: the uncached extension is `bytes` of contiguous common-buffer memory (Storport
        // reported a contiguous length of at least `bytes`), valid as long as the adapter.
        Some(unsafe { DmaRegion::new(va, phys as u64, bytes as usize) })
    }

    /// Sets the transfer limits: largest transfer in bytes, and the number of scatter-gather
    /// elements the adapter takes minus one (NumberOfPhysicalBreaks).
    pub fn set_transfer_limits(&mut self, maximum_transfer_length: u32, physical_breaks: u32) {
        self.raw.MaximumTransferLength = maximum_transfer_length;
        self.raw.NumberOfPhysicalBreaks = physical_breaks;
    }

    /// Describes a bus-master, scatter-gather, full 64-bit DMA adapter with one bus, one target
    /// and `luns` logical units, using SRB_EX and BTL8 addresses. (The synchronization model is
    /// `Miniport::Duplex`, which the FindAdapter trampoline declares.)
    pub fn set_bus_master_adapter(&mut self, alignment_mask: u32, luns: u8) {
        self.raw.AlignmentMask = alignment_mask;
        self.raw.ScatterGather = 1;
        self.raw.Master = 1;
        self.raw.CachesData = 1;
        self.raw.Dma32BitAddresses = 1;
        self.raw.Dma64BitAddresses = ffi::SCSI_DMA64_MINIPORT_FULL64BIT_NO_BOUNDARY_REQ_SUPPORTED;
        self.raw.NumberOfBuses = 1;
        self.raw.MaximumNumberOfTargets = 1;
        self.raw.MaximumNumberOfLogicalUnits = luns;
        self.raw.TaggedQueuing = 1;
        self.raw.AutoRequestSense = 1;
        self.raw.MultipleRequestPerLu = 1;
        self.raw.WmiDataProvider = 0;
        self.raw.SrbType = ffi::SRB_TYPE_STORAGE_REQUEST_BLOCK;
        self.raw.AddressType = ffi::STORAGE_ADDRESS_TYPE_BTL8;
    }

    /// Declares the synchronization model: only the FindAdapter trampoline does, from
    /// `Miniport::Duplex`, so the model and the tokens cannot disagree.
    pub(crate) fn set_synchronization_model(&mut self, model: ffi::STOR_SYNCHRONIZATION_MODEL) {
        self.raw.SynchronizationModel = model;
    }

    /// Sets how many requests Storport may send at once (adapter-wide and per LU), where the
    /// structure has these fields (CONFIG_INFO_VERSION_3).
    pub fn set_queue_depth(&mut self, adapter: u32, per_lun: u32) {
        if self.raw.Length as usize >= core::mem::size_of::<ffi::PORT_CONFIGURATION_INFORMATION>() {
            self.raw.MaxNumberOfIO = adapter;
            self.raw.MaxIOsPerLun = per_lun;
            self.raw.InitialLunQueueDepth = per_lun;
        }
    }

    /// Registers HwMSInterruptRoutine for `M` with the given synchronization mode.
    pub fn use_message_interrupts<M: Miniport>(&mut self, mode: MessageSynchronization) {
        self.raw.HwMSInterruptRoutine = Some(message_interrupt_trampoline::<M>);
        crate::miniport::header(&self.port).per_message.store(
            mode == MessageSynchronization::PerMessage,
            core::sync::atomic::Ordering::Relaxed,
        );
        self.raw.InterruptSynchronizationMode = match mode {
            MessageSynchronization::All => ffi::InterruptSynchronizeAll,
            MessageSynchronization::PerMessage => ffi::InterruptSynchronizePerMessage,
        };
    }
}

/// Whether `haystack` contains `needle`, ASCII case-insensitively.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}
