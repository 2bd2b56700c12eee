//! DMA-able memory shared with the device: the uncached extension and SRB extensions.
//!
//! A [`DmaRegion`] is a view of memory that a bus-master device reads and writes concurrently
//! with the driver (virtqueue rings, indirect descriptor tables, request headers). The driver
//! therefore only ever sees it as atomics (`&[AtomicU16]` and friends): the device is another
//! agent, and plain references to memory it writes would be data races. Ordering between the
//! driver and the device is expressed with the usual release stores, acquire loads and fences.
//!
//! Storport hands out such memory through `StorPortGetUncachedExtension` (once, in
//! HwStorFindAdapter) and as each SRB's `SrbExtension`; `StorPortGetPhysicalAddress` gives the
//! bus address the device must be told.

use core::marker::PhantomData;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU8, AtomicU16, AtomicU32, AtomicU64};

/// A range of DMA-able memory: its virtual address, its physical (bus) address and its length.
///
/// `'a` is how long the memory lives. The adapter's uncached extension lives as long as the
/// adapter (`DmaRegion<'static>`: the driver keeps it in the device extension, which Storport
/// frees with the adapter). An SRB extension lives until its request completes, so
/// [`Srb::extension`](crate::Srb::extension) lends it out borrowed from the request, like the
/// kernel's `Request::data_ref` lends a request's pdu: completing the request (which consumes
/// the `Srb`) ends every view of its extension, and
/// `let r = srb.extension()?; srb.complete(s); r.zero();` does not compile.
///
/// # Invariants
///
/// `virt` is valid for reads and writes of `len` bytes for `'a`. The memory is physically
/// contiguous and `phys` is the bus address of `virt`.
#[derive(Clone, Copy, Debug)]
pub struct DmaRegion<'a> {
    virt: NonNull<u8>,
    phys: u64,
    len: usize,
    _memory: PhantomData<&'a [AtomicU8]>,
}

// SAFETY: a DmaRegion is an address range of shared memory; every access through it is atomic,
// so sharing the view between CPUs creates no data race on the Rust side.
unsafe impl Send for DmaRegion<'_> {}
// SAFETY: as for Send: `&DmaRegion` only yields atomic views.
unsafe impl Sync for DmaRegion<'_> {}

impl<'a> DmaRegion<'a> {
    /// Makes a region from a virtual address, its physical address and a length.
    ///
    /// # Safety
    ///
    /// `virt` must be valid for reads and writes of `len` bytes, physically contiguous at `phys`,
    /// for `'a` (see the type's invariants).
    pub(crate) unsafe fn new(virt: NonNull<u8>, phys: u64, len: usize) -> Self {
        // INVARIANT: guaranteed by the caller.
        Self {
            virt,
            phys,
            len,
            _memory: PhantomData,
        }
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the region has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Physical (bus) address of the region's first byte.
    pub fn physical_address(&self) -> u64 {
        self.phys
    }

    /// The part of the region at `offset` of `len` bytes, or `None` if it does not fit.
    pub fn subregion(&self, offset: usize, len: usize) -> Option<DmaRegion<'a>> {
        let end = offset.checked_add(len)?;
        if end > self.len {
            return None;
        }
        let virt = self.virt.as_ptr().wrapping_add(offset);
        Some(DmaRegion {
            // INVARIANT: `offset + len <= self.len`, so the sub-range lies inside the region.
            virt: NonNull::new(virt)?,
            phys: self.phys.checked_add(offset as u64)?,
            len,
            _memory: PhantomData,
        })
    }

    /// The region as bytes.
    pub fn bytes(&self) -> &[AtomicU8] {
        // SAFETY: by the type invariant `virt` is valid for `len` bytes; AtomicU8 has the size
        // and alignment of u8 and all accesses through it are atomic.
        unsafe { core::slice::from_raw_parts(self.virt.as_ptr().cast::<AtomicU8>(), self.len) }
    }

    /// The region as 16-bit words, or `None` unless it starts 2-aligned (a trailing odd byte
    /// is not included).
    pub fn u16s(&self) -> Option<&[AtomicU16]> {
        self.words::<AtomicU16>()
    }

    /// The region as 32-bit words, or `None` unless it starts 4-aligned.
    pub fn u32s(&self) -> Option<&[AtomicU32]> {
        self.words::<AtomicU32>()
    }

    /// The region as 64-bit words, or `None` unless it starts 8-aligned.
    pub fn u64s(&self) -> Option<&[AtomicU64]> {
        self.words::<AtomicU64>()
    }

    fn words<T>(&self) -> Option<&[T]> {
        let size = core::mem::size_of::<T>();
        if !(self.virt.as_ptr() as usize).is_multiple_of(core::mem::align_of::<T>()) {
            return None;
        }
        let count = self.len / size;
        // SAFETY: the start is aligned for T (checked above), `count * size <= len` bytes are
        // valid by the type invariant, and T is one of the atomic integer types, for which every
        // bit pattern is valid and every access is atomic.
        Some(unsafe { core::slice::from_raw_parts(self.virt.as_ptr().cast::<T>(), count) })
    }

    /// Sets every byte of the region to zero (relaxed; publish with a release store after).
    pub fn zero(&self) {
        for byte in self.bytes() {
            byte.store(0, core::sync::atomic::Ordering::Relaxed);
        }
    }

    /// A region over a test buffer, with a made-up physical address.
    #[cfg(any(test, feature = "test-utils"))]
    pub fn from_test_buffer(buf: &'a [AtomicU64], physical_address: u64) -> DmaRegion<'a> {
        let len = core::mem::size_of_val(buf);
        let virt = NonNull::from(buf).cast::<u8>();
        // SAFETY: the buffer lives for 'a and is only accessed atomically; it is contiguous in this
        // address space, and the physical address is whatever the test chooses.
        unsafe { DmaRegion::new(virt, physical_address, len) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_regions_and_subregions() {
        let mut memory = [0u8; 64];
        let virt = NonNull::new(memory.as_mut_ptr()).expect("an array is not at address 0");
        // SAFETY: `memory` is 64 bytes, valid for reads and writes while `region` and its
        // subregions are used (all of them before it goes out of scope); the physical address
        // is never used for an access.
        let region = unsafe { DmaRegion::new(virt, 0x1000, 64) };
        assert_eq!((region.len(), region.is_empty()), (64, false));
        let tail = region.subregion(48, 16).expect("fits");
        assert_eq!(
            (tail.len(), tail.is_empty(), tail.physical_address()),
            (16, false, 0x1030)
        );
        let empty = region.subregion(64, 0).expect("an empty tail fits");
        assert!(empty.is_empty());
        assert!(empty.bytes().is_empty());
        assert!(region.subregion(60, 8).is_none());
        assert!(region.subregion(usize::MAX, 2).is_none());
    }
}
