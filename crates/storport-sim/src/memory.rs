//! Memory the port hands the miniport: a thread-safe allocator over the guest region (uncached
//! extension, SRB extensions, data buffers: everything a device may DMA to) and host-to-guest
//! address translation.
//!
//! The allocator is a bump pointer plus power-of-two size classes with free lists, each class
//! under its own lock, so concurrent requests of different sizes do not contend.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::device::GuestMemory;

const MIN_CLASS_SHIFT: u32 = 6;
const CLASSES: usize = 40;

/// One allocation in the guest region.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Block {
    /// Host address of the first byte.
    pub host: usize,
    /// Usable size (the class size).
    pub size: usize,
    class: u8,
}

/// The allocator over one [`GuestMemory`] region.
pub(crate) struct GuestAllocator {
    pub mem: GuestMemory,
    next: AtomicUsize,
    free: Vec<Mutex<Vec<usize>>>,
    watch: Option<std::sync::Arc<crate::device::DmaWatch>>,
}

impl GuestAllocator {
    pub fn new(mem: GuestMemory) -> Self {
        Self {
            mem,
            next: AtomicUsize::new(0),
            free: (0..CLASSES).map(|_| Mutex::new(Vec::new())).collect(),
            watch: None,
        }
    }

    /// An allocator over `mem` whose blocks start `offset` bytes in: a second user of the same
    /// memory (a dump stack beside the running instance) whose blocks never overlap the first's
    /// as long as that one stays below `offset`.
    pub fn starting_at(mem: GuestMemory, offset: usize) -> Self {
        let allocator = Self::new(mem);
        allocator
            .next
            .store(offset.min(allocator.mem.len), Ordering::Relaxed);
        allocator
    }

    /// Records frees and reuses in `watch` (the device's [`crate::device::DmaWatch`]).
    pub fn with_watch(mut self, watch: Option<std::sync::Arc<crate::device::DmaWatch>>) -> Self {
        self.watch = watch;
        self
    }

    /// Allocates at least `size` bytes, aligned to `min(class size, 4096)`. Not zeroed.
    pub fn alloc(&self, size: usize) -> Option<Block> {
        let size = size.max(1);
        let shift = (usize::BITS - (size - 1).leading_zeros()).max(MIN_CLASS_SHIFT);
        let class = (shift - MIN_CLASS_SHIFT) as usize;
        if class >= CLASSES {
            return None;
        }
        let csize = 1usize << shift;
        if let Some(off) = self.free[class]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
        {
            if let Some(watch) = &self.watch {
                watch.reused(self.mem.guest_base + off as u64);
            }
            return Some(Block {
                host: self.mem.host_base as usize + off,
                size: csize,
                class: class as u8,
            });
        }
        let align = csize.min(4096);
        let base = self.mem.host_base as usize;
        let mut cur = self.next.load(Ordering::Relaxed);
        loop {
            // Align the host address (the guest base is page aligned in every model we know of;
            // the host base may not be, and DMA alignment is about guest addresses, so align both).
            let start = (base + cur).next_multiple_of(align) - base;
            let end = start.checked_add(csize)?;
            if end > self.mem.len {
                return None;
            }
            match self
                .next
                .compare_exchange_weak(cur, end, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => {
                    if let Some(watch) = &self.watch {
                        watch.claimed(self.mem.guest_base + start as u64, csize);
                    }
                    return Some(Block {
                        host: base + start,
                        size: csize,
                        class: class as u8,
                    });
                }
                Err(v) => cur = v,
            }
        }
    }

    /// Marks a block freed for the DMA watch without reusing it yet (it was lent out with a
    /// completion; [`GuestAllocator::free`] takes it back later).
    pub fn retire(&self, b: &Block) {
        if let Some(watch) = &self.watch {
            watch.freed(
                self.mem.guest_base + (b.host - self.mem.host_base as usize) as u64,
                b.size,
            );
        }
    }

    /// Returns a block to its class.
    pub fn free(&self, b: Block) {
        let off = b.host - self.mem.host_base as usize;
        if let Some(watch) = &self.watch {
            watch.freed(self.mem.guest_base + off as u64, b.size);
        }
        self.free[b.class as usize]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(off);
    }

    /// Whether `[host, host + len)` lies in the region.
    pub fn contains(&self, host: usize, len: usize) -> bool {
        let base = self.mem.host_base as usize;
        host >= base
            && host
                .checked_add(len)
                .is_some_and(|e| e <= base + self.mem.len)
    }

    /// The guest-physical address of a host address in the region.
    pub fn to_guest(&self, host: usize) -> Option<u64> {
        self.contains(host, 1)
            .then(|| self.mem.guest_base + (host - self.mem.host_base as usize) as u64)
    }

    /// Bytes from `host` to the end of the region.
    pub fn remaining(&self, host: usize) -> usize {
        self.mem.host_base as usize + self.mem.len - host
    }

    /// Fills a block range with `byte`.
    pub fn fill(&self, host: usize, len: usize, byte: u8) {
        assert!(self.contains(host, len));
        // SAFETY: the range lies inside the guest region (checked above), which `mem.owner`
        // keeps mapped; the port owns the block being filled.
        unsafe { std::ptr::write_bytes(host as *mut u8, byte, len) };
    }

    /// Copies `data` to `host` in the region.
    pub fn write(&self, host: usize, data: &[u8]) {
        assert!(self.contains(host, data.len()));
        // SAFETY: the destination lies inside the guest region (checked above) and cannot
        // overlap `data`, a host buffer.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), host as *mut u8, data.len()) };
    }

    /// Copies `len` bytes at `host` into `out` (replacing its contents, reusing its capacity,
    /// no zero-fill first).
    pub fn read_into(&self, host: usize, len: usize, out: &mut Vec<u8>) {
        assert!(self.contains(host, len));
        out.clear();
        // SAFETY: the source lies inside the guest region (checked above), which `mem.owner`
        // keeps mapped; `out` is a host buffer, so the two cannot overlap.
        out.extend_from_slice(unsafe { std::slice::from_raw_parts(host as *const u8, len) });
    }

    /// Copies `len` bytes at `host` out of the region.
    pub fn read(&self, host: usize, len: usize) -> Vec<u8> {
        assert!(self.contains(host, len));
        let mut v = Vec::new();
        self.read_into(host, len, &mut v);
        v
    }
}

/// A FIFO pool of fixed-size host buffers: a freed buffer is reused only after `quarantine`
/// others, so a late second completion of an SRB still finds its old address unused.
pub(crate) struct FifoPool {
    words: usize,
    quarantine: usize,
    free: Mutex<std::collections::VecDeque<Box<[u64]>>>,
}

impl FifoPool {
    pub fn new(bytes: usize, quarantine: usize) -> Self {
        Self {
            words: bytes.div_ceil(8),
            quarantine,
            free: Mutex::new(Default::default()),
        }
    }

    /// A buffer whose first `used` bytes are zero (the rest holds an older request's bytes).
    pub fn get(&self, used: usize) -> Box<[u64]> {
        let mut f = self.free.lock().unwrap_or_else(|e| e.into_inner());
        if f.len() > self.quarantine
            && let Some(mut b) = f.pop_front()
        {
            let words = used.div_ceil(8).min(b.len());
            b[..words].fill(0);
            return b;
        }
        drop(f);
        vec![0u64; self.words].into_boxed_slice()
    }

    pub fn put(&self, b: Box<[u64]>) {
        if b.len() == self.words {
            self.free
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push_back(b);
        }
    }
}
