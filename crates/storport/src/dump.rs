//! Crash dump and hibernation: what the running instance of a miniport hands to its dump
//! instance (SRB_FUNCTION_DUMP_POINTERS), and the memory a dump instance marks for the
//! hibernation file (StorPortMarkDumpMemory).
//!
//! # Dump pointers
//!
//! A miniport that sets [`feature::DUMP_POINTERS`] in `FeatureSupport` receives, in its running
//! instance, an SRB_FUNCTION_DUMP_POINTERS request whose data buffer is a
//! `MINIPORT_DUMP_POINTERS` (Windows 8 and later; the DDI page of the structure). The miniport
//! sets `Version` and `Size`, the dump instance's `MaximumTransferLength` when it differs, and
//! may name private data that Storport hands to the dump instance's HwStorFindAdapter as
//! `PORT_CONFIGURATION_INFORMATION.MiniportDumpData`. The layer keeps that data in the device
//! extension's header ([`DUMP_DATA_WORDS`] words behind a signature), which lives as long as the
//! running adapter, so nothing is allocated; [`crate::PortConfiguration::dump_data`] reads it back
//! in the dump instance.
//!
//! # Marking memory
//!
//! StorPortMarkDumpMemory (Windows 8 and later) may only be called from DriverEntry or
//! HwStorFindAdapter; the DDI page asks a miniport to call it at least when `DumpMode` is
//! DUMP_MODE_MARK_MEMORY or DUMP_MODE_HIBER, for the memory it uses to write the dump or
//! hibernation file. With a length of 0 it marks the whole image section holding the address:
//! [`mark_image_sections`] marks the sections of this image that hold code, read-only data and
//! writable data. The device extension, the uncached extension and the SRB extensions are
//! Storport's own allocations for the dump stack.

use core::sync::atomic::{AtomicU32, Ordering};

use crate::context;
use crate::ffi;
use crate::port::Port;

/// `HW_INITIALIZATION_DATA.FeatureSupport` bits (STOR_FEATURE_*) a miniport may declare in
/// [`crate::Miniport::FEATURE_SUPPORT`].
pub mod feature {
    use crate::ffi;

    /// STOR_FEATURE_DUMP_POINTERS: the running instance answers SRB_FUNCTION_DUMP_POINTERS.
    pub const DUMP_POINTERS: u32 = ffi::STOR_FEATURE_DUMP_POINTERS;
    /// STOR_FEATURE_DUMP_RESUME_CAPABLE: the dump instance can read the hibernation file back
    /// (DUMP_MODE_RESUME), so Windows may resume through it.
    pub const DUMP_RESUME_CAPABLE: u32 = ffi::STOR_FEATURE_DUMP_RESUME_CAPABLE;
}

/// Words of private data a running instance hands to its dump instance.
pub const DUMP_DATA_WORDS: usize = 8;

/// Marks the header's words as the layer's dump data ("SPDD").
const SIGNATURE: u32 = u32::from_le_bytes(*b"SPDD");

/// The dump data in the device extension's header: signature, word count, words.
#[repr(C)]
pub(crate) struct DumpDataCell {
    words: [AtomicU32; 2 + DUMP_DATA_WORDS],
}

impl DumpDataCell {
    pub(crate) const fn new() -> Self {
        Self {
            words: [const { AtomicU32::new(0) }; 2 + DUMP_DATA_WORDS],
        }
    }

    fn store(&self, data: &[u32; DUMP_DATA_WORDS]) {
        for (cell, value) in self.words.iter().skip(2).zip(data) {
            cell.store(*value, Ordering::Relaxed);
        }
        let [signature, count, ..] = &self.words;
        count.store(DUMP_DATA_WORDS as u32, Ordering::Relaxed);
        signature.store(SIGNATURE, Ordering::Release);
    }

    fn as_ptr(&self) -> ffi::PVOID {
        self.words.as_ptr().cast_mut().cast()
    }
}

/// Reads dump data written by [`DumpPointers::answer`] at `raw` (the dump instance's
/// `MiniportDumpData`), or `None` when it is not the layer's.
///
/// # Safety
///
/// `raw` is NULL or points at `2 + DUMP_DATA_WORDS` readable, 4-byte aligned words.
pub(crate) unsafe fn read_dump_data(raw: ffi::PVOID) -> Option<[u32; DUMP_DATA_WORDS]> {
    if raw.is_null() || !raw.cast::<u32>().is_aligned() {
        return None;
    }
    let mut words = [0u32; 2 + DUMP_DATA_WORDS];
    for (i, word) in words.iter_mut().enumerate() {
        // SAFETY: by this function's `# Safety`, the `i`-th word is readable; a volatile read
        // because the running instance wrote it through atomics of the same size.
        *word = unsafe { raw.cast::<u32>().wrapping_add(i).read_volatile() };
    }
    let [signature, count, data @ ..] = words;
    (signature == SIGNATURE && count == DUMP_DATA_WORDS as u32).then_some(data)
}

/// The `MINIPORT_DUMP_POINTERS` of an SRB_FUNCTION_DUMP_POINTERS request, to fill in
/// ([`crate::Srb::dump_pointers`]).
///
/// # Invariants
///
/// `raw` is the request's data buffer, a `MINIPORT_DUMP_POINTERS` exclusively ours until the
/// request completes (the `'a` borrow of the SRB).
pub struct DumpPointers<'a> {
    raw: &'a mut ffi::MINIPORT_DUMP_POINTERS,
}

impl<'a> DumpPointers<'a> {
    /// # Safety
    ///
    /// `raw` points at the request's `MINIPORT_DUMP_POINTERS`, valid and exclusively ours for
    /// `'a`.
    pub(crate) unsafe fn new(raw: *mut ffi::MINIPORT_DUMP_POINTERS) -> Self {
        // SAFETY: by this function's `# Safety`, `raw` is valid and exclusively ours for `'a`.
        let raw = unsafe { &mut *raw };
        // INVARIANT: by this function's `# Safety`.
        Self { raw }
    }

    /// Answers the request: `Version` and `Size`, the dump instance's transfer limits
    /// (`MaximumTransferLength`, `NumberOfPhysicalBreaks`) when given, and `data` as the private
    /// data the dump instance's HwStorFindAdapter will find
    /// ([`crate::PortConfiguration::dump_data`]). What Storport initialised (bus, access ranges,
    /// bus master) is left as it is.
    pub fn answer(self, port: Port, limits: Option<(u32, u32)>, data: &[u32; DUMP_DATA_WORDS]) {
        let cell = &crate::miniport::header(&port).dump_data;
        cell.store(data);
        self.raw.Version = ffi::DUMP_MINIPORT_VERSION_1;
        self.raw.Size = core::mem::size_of::<ffi::MINIPORT_DUMP_POINTERS>() as u16;
        self.raw.AdapterObject = core::ptr::null_mut();
        self.raw.MappedRegisterBase = core::ptr::null_mut();
        self.raw.CommonBufferSize = 0;
        self.raw.MiniportPrivateDumpData = cell.as_ptr();
        if let Some((max_transfer, breaks)) = limits {
            self.raw.MaximumTransferLength = max_transfer;
            self.raw.NumberOfPhysicalBreaks = breaks;
        }
    }
}

/// Something in this image's writable data section (a non-zero initial value keeps it out of
/// an uninitialised-data section).
static WRITABLE_MARK: AtomicU32 = AtomicU32::new(0x4D41_524B);
/// Something in this image's read-only data section.
static READ_ONLY_MARK: [u8; 8] = *b"dumpmark";

/// StorPortMarkDumpMemory for the image sections that hold the code, the read-only data and the
/// writable data of this image (length 0: each whole section). Only from HwStorFindAdapter (the
/// token); Storport ignores it outside a dump stack. Returns how many calls Storport accepted.
pub fn mark_image_sections(_ctx: &context::FindAdapter, port: Port) -> u32 {
    let code = mark_image_sections as *const () as ffi::PVOID;
    let read_only = READ_ONLY_MARK.as_ptr().cast_mut().cast();
    // Read through the atomic so the compiler keeps it in the writable section.
    let _ = WRITABLE_MARK.load(Ordering::Relaxed);
    let writable = WRITABLE_MARK.as_ptr().cast();
    let mut accepted = 0;
    for address in [code, read_only, writable] {
        // SAFETY: MarkDumpMemory takes (PVOID Address, ULONG_PTR Length, ULONG Flags) after the
        // extension (storport.h's inline wrapper); the address is in this image, length 0 names
        // its whole section, flags 0 a virtual address. `port` is this adapter.
        let status = unsafe {
            ffi::StorPortExtendedFunction(
                ffi::ExtFunctionMarkDumpMemory,
                port.extension(),
                address,
                0usize,
                0u32,
            )
        };
        if status == ffi::STOR_STATUS_SUCCESS {
            accepted += 1;
        }
    }
    accepted
}
