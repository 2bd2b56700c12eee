//! Memory for the driver: pages below 4 GiB from the firmware, identity mapped.
//!
//! OVMF maps memory one to one (virtual = physical), so the bus address of a byte is its pointer
//! value; pages below 4 GiB keep every address usable by 32-bit DMA as well. What Storport hands
//! a miniport in a crash dump is not guaranteed to be 1 KiB aligned (storport.md section 7), so
//! the port deliberately hands out memory [`MISALIGN`] bytes past a page boundary.

use core::ptr::NonNull;

use uefi::boot::{self, AllocateType, MemoryType};

/// How far past a page boundary the driver's DMA memory starts: 8-byte aligned (every structure
/// Storport returns is), 64-byte aligned, but on purpose not 1 KiB or page aligned.
pub const MISALIGN: usize = 64;

/// Bytes in a page.
pub const PAGE: usize = 4096;

/// A block of zeroed, physically contiguous memory below 4 GiB.
#[derive(Clone, Copy, Debug)]
pub struct Block {
    /// First usable byte.
    pub start: NonNull<u8>,
    /// Usable bytes from `start` to the end of the pages.
    pub len: usize,
}

impl Block {
    /// The block's bus address (identity mapping).
    pub fn physical(&self) -> u64 {
        self.start.as_ptr() as u64
    }

    /// Whether `address..address + 1` lies in the block; if so, how many contiguous bytes follow.
    pub fn contiguous_from(&self, address: usize) -> Option<usize> {
        let start = self.start.as_ptr() as usize;
        let end = start.checked_add(self.len)?;
        (start..end).contains(&address).then(|| end - address)
    }
}

/// Allocates enough pages for `bytes` bytes starting `offset` bytes into the first page, zeroed.
pub fn allocate(bytes: usize, offset: usize) -> Option<Block> {
    let total = bytes.checked_add(offset)?;
    let pages = total.div_ceil(PAGE).max(1);
    let base = boot::allocate_pages(
        AllocateType::MaxAddress(0xFFFF_FFFF),
        MemoryType::LOADER_DATA,
        pages,
    )
    .ok()?;
    let span = pages * PAGE;
    // SAFETY: the firmware just gave us `span` bytes at `base`, mapped one to one and unused.
    unsafe { core::ptr::write_bytes(base.as_ptr(), 0, span) };
    // SAFETY: `offset < span` because `span >= bytes + offset` and the block is non-empty or
    // `offset` is small; the pointer stays inside the allocation.
    let start = unsafe { base.as_ptr().add(offset.min(span - 1)) };
    Some(Block {
        start: NonNull::new(start)?,
        len: span - offset.min(span - 1),
    })
}
