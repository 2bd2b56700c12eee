//! Kernel stacks: image routines run on a stack the size of a Windows x64 kernel stack.
//!
//! Each host thread that calls into an image (a simulated CPU, an interrupt line, the timer, the
//! submitting thread) gets, on its first call, a mapping of [`GUARD`] inaccessible bytes below
//! [`KERNEL_STACK_SIZE`] (`KERNEL_STACK_SIZE` of the x64 WDK, 24 KiB) usable ones, and an
//! alternate signal stack, so that the fault handler runs even when the kernel stack is
//! exhausted. Touching the guard page is a kernel-stack overflow: the fault handler reports it
//! as bug check 0x7F (UNEXPECTED_KERNEL_MODE_TRAP, double fault) naming the routine, and ends
//! the process with [`STACK_OVERFLOW_EXIT_CODE`].
//!
//! Nesting follows Windows: a routine the image triggers from inside a Storport call (a
//! synchronized-access routine) runs on the same kernel stack below the caller's frame, while
//! the user-mode Storport's own code runs on the host stack (see `gate`).
//!
//! Depth: the stack is filled with [`PATTERN`] when mapped; when a routine returns, the lowest
//! qword no longer holding the pattern gives the deepest use (from the top of the stack, so a
//! nested routine's figure includes its callers' frames), which is recorded for that routine's
//! slot; when the outermost routine returns, the used part is filled again.

use std::cell::RefCell;
use std::ffi::c_void;
use std::sync::atomic::Ordering;

use super::gate;

/// `KERNEL_STACK_SIZE` on x64 (ntddk.h): 24 KiB.
pub const KERNEL_STACK_SIZE: usize = 0x6000;
/// One inaccessible page below the stack.
pub const GUARD: usize = 0x1000;
/// Size of the alternate signal stack the fault handler runs on.
const ALT_STACK: usize = 256 << 10;
/// What each byte of an untouched stack holds.
const PATTERN_BYTE: u8 = 0x5A;
/// What an untouched stack qword holds.
const PATTERN: u64 = u64::from_ne_bytes([PATTERN_BYTE; 8]);
/// Headroom left at the top of the stack (the gate's home space and stack arguments).
const TOP_RESERVE: usize = 64;
/// Space left below the image's stack pointer when a nested routine starts (the import gate's
/// frame and the home space of its call).
const NESTED_RESERVE: usize = 128;
/// Exit status of a process whose image overflowed a kernel stack (bug check 0x7F).
pub const STACK_OVERFLOW_EXIT_CODE: i32 = 0x7F;

/// One thread's kernel stack: one mapping of the alternate signal stack, the guard page and the
/// stack, in that order from low addresses. The signal stack lies below the kernel stack so that
/// the fault handler always runs at a lower stack pointer than the code it interrupted (what
/// valgrind's callgrind expects of a signal frame).
///
/// # Invariants
///
/// `alt..alt + ALT_STACK + GUARD + KERNEL_STACK_SIZE` is a private anonymous mapping owned by
/// this value; `base = alt + ALT_STACK`, and the `GUARD` bytes at `base` are inaccessible.
struct KernelStack {
    base: usize,
    alt: usize,
    /// Frames of the routines running on it, innermost last: (slot, previous host stack
    /// pointer, previous image stack pointer).
    frames: Vec<(usize, usize, usize)>,
    /// Where the host stack continues while the image is inside an import.
    host_rsp: usize,
    /// The image's stack pointer at its last import call.
    image_rsp: usize,
}

impl KernelStack {
    fn new() -> KernelStack {
        let alt = map(ALT_STACK + GUARD + KERNEL_STACK_SIZE);
        let base = alt + ALT_STACK;
        // SAFETY: the guard page lies inside the mapping just made.
        let r = unsafe { libc::mprotect(base as *mut c_void, GUARD, libc::PROT_NONE) };
        assert_eq!(r, 0, "mprotect of a kernel stack's guard page");
        // INVARIANT: both mappings are fresh and owned here.
        let stack = KernelStack {
            base,
            alt,
            frames: Vec::with_capacity(8),
            host_rsp: 0,
            image_rsp: 0,
        };
        stack.fill(stack.low());
        let ss = libc::stack_t {
            ss_sp: alt as *mut c_void,
            ss_flags: 0,
            ss_size: ALT_STACK,
        };
        // SAFETY: `ss` describes a mapping this value owns until it is dropped, and `drop`
        // disables the alternate stack before unmapping it.
        let r = unsafe { libc::sigaltstack(&ss, std::ptr::null_mut()) };
        assert_eq!(r, 0, "sigaltstack");
        stack
    }

    /// The lowest usable address.
    fn low(&self) -> usize {
        self.base + GUARD
    }

    /// One past the highest usable address.
    fn top(&self) -> usize {
        self.base + GUARD + KERNEL_STACK_SIZE
    }

    /// Fills `from..top` with the pattern (between outermost routines only: a running routine's
    /// frames are never overwritten).
    fn fill(&self, from: usize) {
        // SAFETY: `from..top` is the usable part of the stack (type invariant), which no routine
        // uses when this is called.
        unsafe { std::ptr::write_bytes(from as *mut u8, PATTERN_BYTE, self.top() - from) };
    }

    /// The lowest address written since the last fill.
    fn lowest_touched(&self) -> usize {
        let len = (self.top() - self.low()) / 8;
        // SAFETY: the usable part of the stack (type invariant), aligned; called by host code
        // while no image code runs on this thread, so nothing writes it meanwhile.
        let words = unsafe { std::slice::from_raw_parts(self.low() as *const u64, len) };
        let untouched = words
            .iter()
            .position(|&w| w != PATTERN)
            .unwrap_or(words.len());
        self.low() + untouched * 8
    }
}

impl Drop for KernelStack {
    fn drop(&mut self) {
        let disable = libc::stack_t {
            ss_sp: std::ptr::null_mut(),
            ss_flags: libc::SS_DISABLE,
            ss_size: 0,
        };
        let mut current = libc::stack_t {
            ss_sp: std::ptr::null_mut(),
            ss_flags: 0,
            ss_size: 0,
        };
        // SAFETY: reads this thread's alternate stack setting into `current`.
        unsafe { libc::sigaltstack(std::ptr::null(), &mut current) };
        if current.ss_sp as usize == self.alt {
            // SAFETY: turns off the alternate stack that is about to be unmapped.
            unsafe { libc::sigaltstack(&disable, std::ptr::null_mut()) };
        }
        // SAFETY: by the type invariant; no routine runs on the thread any more and the
        // alternate stack is no longer installed.
        unsafe {
            libc::munmap(
                self.alt as *mut c_void,
                ALT_STACK + GUARD + KERNEL_STACK_SIZE,
            )
        };
    }
}

fn map(len: usize) -> usize {
    // SAFETY: a fresh anonymous mapping; no existing memory is affected.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert!(p != libc::MAP_FAILED, "mmap of a kernel stack");
    p as usize
}

thread_local! {
    static STACK: RefCell<Option<KernelStack>> = const { RefCell::new(None) };
}

/// The callback gate enters slot `index`; `host_rsp` is where host code continues meanwhile.
/// Returns the kernel stack pointer the routine starts at (16-byte aligned).
pub(super) fn enter(index: usize, host_rsp: usize) -> usize {
    STACK.with(|s| {
        let mut s = s.borrow_mut();
        let stack = s.get_or_insert_with(KernelStack::new);
        let rsp = if stack.frames.is_empty() {
            stack.top() - TOP_RESERVE
        } else {
            (stack.image_rsp - NESTED_RESERVE) & !15
        };
        stack.frames.push((index, stack.host_rsp, stack.image_rsp));
        stack.host_rsp = host_rsp;
        rsp
    })
}

/// The routine entered last returned; gives its slot.
pub(super) fn exit() -> usize {
    STACK.with(|s| {
        let mut s = s.borrow_mut();
        let Some(stack) = s.as_mut() else {
            return 0;
        };
        let Some((index, host_rsp, image_rsp)) = stack.frames.pop() else {
            return 0;
        };
        stack.host_rsp = host_rsp;
        stack.image_rsp = image_rsp;
        // A nested routine's figure counts its callers' frames too: the stack is one.
        let lowest = stack.lowest_touched();
        gate::DEEPEST[index].fetch_max(stack.top() - lowest, Ordering::Relaxed);
        gate::CALLS[index].fetch_add(1, Ordering::Relaxed);
        if stack.frames.is_empty() {
            stack.fill(lowest);
        }
        index
    })
}

/// The import gate leaves the image, whose stack pointer is `image_rsp`; gives the host stack.
pub(super) fn to_host(image_rsp: usize) -> usize {
    STACK.with(|s| {
        let mut s = s.borrow_mut();
        match s.as_mut() {
            Some(stack) => {
                stack.image_rsp = image_rsp;
                stack.host_rsp
            }
            None => {
                eprintln!("storport-sim: an image import was called outside any image routine");
                std::process::abort();
            }
        }
    })
}

/// If `address` is in this thread's guard page: the routine running (its slot), innermost.
pub(super) fn guard_hit(address: usize) -> Option<Option<usize>> {
    STACK
        .try_with(|s| {
            let s = s.try_borrow().ok()?;
            let stack = s.as_ref()?;
            (address >= stack.base && address < stack.low())
                .then(|| stack.frames.last().map(|f| f.0))
        })
        .ok()
        .flatten()
}

/// Whether `address..address + len` lies in the usable part of this thread's kernel stack (what
/// a fault handler may read of an interrupted image routine's frame).
pub(super) fn holds(address: usize, len: usize) -> bool {
    STACK
        .try_with(|s| {
            let Ok(s) = s.try_borrow() else {
                return false;
            };
            s.as_ref().is_some_and(|stack| {
                address >= stack.low()
                    && address
                        .checked_add(len)
                        .is_some_and(|end| end <= stack.top())
            })
        })
        .unwrap_or(false)
}

/// The routine running innermost on this thread's kernel stack, if any (its slot).
pub(super) fn current() -> Option<usize> {
    STACK
        .try_with(|s| {
            let s = s.try_borrow().ok()?;
            s.as_ref()?.frames.last().map(|f| f.0)
        })
        .ok()
        .flatten()
}
