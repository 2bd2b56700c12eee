//! What the I/O-path benchmark counts per request besides instructions: heap allocations (a
//! counting wrapper around the system allocator that a benchmark binary installs as its
//! `#[global_allocator]`), CPU time and context switches of the whole process (getrusage).
//!
//! ```text
//!   #[global_allocator]
//!   static ALLOC: storport_sim::measure::CountingAlloc = storport_sim::measure::CountingAlloc;
//!   let before = storport_sim::measure::Usage::now();
//!   ... run ...
//!   let spent = storport_sim::measure::Usage::now().since(&before);
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

/// The system allocator, counting every allocation and reallocation (not frees).
pub struct CountingAlloc;

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so
// `System`'s guarantees hold; the counter is a relaxed atomic and allocates nothing.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded with the caller's layout (GlobalAlloc::alloc's contract).
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator, i.e. from `System`, with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: `ptr` came from `System` with `layout` (GlobalAlloc::realloc's contract).
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Allocations so far in this process (0 unless [`CountingAlloc`] is the global allocator).
pub fn allocations() -> u64 {
    ALLOCATIONS.load(Ordering::Relaxed)
}

/// The process's resource use at one moment (all threads, finished ones included).
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    /// User + system CPU time, microseconds.
    pub cpu_us: u64,
    /// Voluntary + involuntary context switches.
    pub context_switches: u64,
    /// Heap allocations ([`allocations`]).
    pub allocations: u64,
}

impl Usage {
    /// Now.
    pub fn now() -> Self {
        // SAFETY: an all-zero `rusage` is a valid value of the plain C struct.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `ru` is a valid, writable `rusage` for the call's duration.
        let ok = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } == 0;
        let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
        Usage {
            cpu_us: if ok {
                us(ru.ru_utime) + us(ru.ru_stime)
            } else {
                0
            },
            context_switches: if ok {
                (ru.ru_nvcsw + ru.ru_nivcsw) as u64
            } else {
                0
            },
            allocations: allocations(),
        }
    }

    /// What was spent since `before`.
    pub fn since(&self, before: &Usage) -> Usage {
        Usage {
            cpu_us: self.cpu_us.saturating_sub(before.cpu_us),
            context_switches: self
                .context_switches
                .saturating_sub(before.context_switches),
            allocations: self.allocations.saturating_sub(before.allocations),
        }
    }
}
