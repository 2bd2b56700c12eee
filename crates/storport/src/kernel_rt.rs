//! What a `no_std` kernel image needs that rustc and LLVM expect to find.
//!
//! The driver links with `/NODEFAULTLIB` (no C runtime), yet the code rustc generates calls
//! `memcpy`, `memmove`, `memset` and `memcmp` for copies, fills and comparisons, and LLVM emits a
//! reference to `_fltused` in any module that touches floating point (MSVC's convention: the CRT
//! defines it to say "floating-point support is linked"); the unwind data of the prebuilt `core`
//! names the CRT's `__CxxFrameHandler3`. This module supplies all of them:
//!
//! | C / MSVC                                   | here                                   |
//! |--------------------------------------------|----------------------------------------|
//! | `memcpy`, `memmove`, `memset`, `memcmp`    | imported from `ntoskrnl.exe` (raw-dylib) |
//! | `int _fltused` (CRT)                       | `_fltused`, defined in assembly        |
//! | `KeBugCheckEx` (wdm.h, `NtosKrnl.lib`)     | [`bug_check`], for the panic handler   |
//! | `__CxxFrameHandler3` (CRT)                 | a stub that never handles, in assembly |
//!
//! The memory routines come from ntoskrnl.exe because that is where the WDK's own `memcpy` and
//! friends resolve for every kernel driver (`RtlCopyMemory` and `RtlFillMemory` are macros over
//! them in wdm.h), so no code of ours implements them. `raw-dylib` makes rustc write the import
//! table entries itself: no `ntoskrnl.lib` is needed when linking on Linux with rust-lld.
//!
//! `__chkstk` is deliberately absent: rustc calls it only for stack frames larger than a page, and
//! a kernel stack is 12-24 KB, so such a frame is a bug the link error should expose.
//!
//! This module exists only on Windows (`#[cfg(target_os = "windows")]` on its `mod` line); the
//! host build gets all of this from std.

use core::ffi::{c_int, c_void};

#[link(name = "ntoskrnl.exe", kind = "raw-dylib", modifiers = "+verbatim")]
unsafe extern "C" {
    /// Copies `count` bytes from `src` to `dest`; the ranges must not overlap (C11 7.24.2.1).
    pub fn memcpy(dest: *mut c_void, src: *const c_void, count: usize) -> *mut c_void;

    /// Copies `count` bytes from `src` to `dest`; the ranges may overlap (C11 7.24.2.2).
    pub fn memmove(dest: *mut c_void, src: *const c_void, count: usize) -> *mut c_void;

    /// Fills `count` bytes at `dest` with the byte `value` (C11 7.24.6.1).
    pub fn memset(dest: *mut c_void, value: c_int, count: usize) -> *mut c_void;

    /// Compares `count` bytes at `a` and `b` (C11 7.24.4.1).
    pub fn memcmp(a: *const c_void, b: *const c_void, count: usize) -> c_int;
}

#[link(name = "ntoskrnl.exe", kind = "raw-dylib", modifiers = "+verbatim")]
unsafe extern "system" {
    /// `VOID KeBugCheckEx(ULONG, ULONG_PTR, ULONG_PTR, ULONG_PTR, ULONG_PTR)`, declared
    /// `DECLSPEC_NORETURN` in wdm.h.
    fn KeBugCheckEx(code: u32, p1: usize, p2: usize, p3: usize, p4: usize) -> !;
}

// `_fltused`: the symbol MSVC-convention object code references when it uses floating point.
//
// The CRT defines it as `int _fltused = 0x9875;`; only its presence matters. It is defined in
// assembly rather than as a `#[no_mangle] static` because rustc exports every `#[no_mangle]`
// item of a cdylib, and the driver image should export `DriverEntry` alone (pecheck checks).
// Read-only data: nothing writes it.
core::arch::global_asm!(
    ".section .rdata,\"dr\"",
    ".globl _fltused",
    ".p2align 2",
    "_fltused:",
    ".long 0x9875",
);

// `__CxxFrameHandler3`: the MSVC language-specific exception handler ("personality routine").
//
// The prebuilt `core` of x86_64-pc-windows-msvc is compiled with `panic=unwind`, so the unwind
// data (`.xdata`) of its functions that have cleanups names `__CxxFrameHandler3`, which the CRT
// provides and a `/NODEFAULTLIB` kernel image lacks. vioblk never unwinds: `panic = "abort"` and
// the panic handler bug-checks. The only way the kernel could call this handler is an SEH
// exception raised below a Rust frame and caught above it; the answer that is right for code
// that has no handlers and no cleanups to run is `ExceptionContinueSearch` (1) in both the
// dispatch and the unwind pass, which is all this does. Leaf function: no stack, no unwind data
// needed. Assembly, not a `#[no_mangle] extern fn`, so that the image does not export it.
core::arch::global_asm!(
    ".section .text,\"xr\"",
    ".globl __CxxFrameHandler3",
    ".p2align 4",
    "__CxxFrameHandler3:",
    "mov eax, 1",
    "ret",
);

/// The bug check code the driver's panic handler passes to [`bug_check`]: `0xE0000B1C`.
///
/// KeBugCheckEx's documentation asks a driver for a code distinct from those Windows and its
/// drivers already use (bugcodes.h, "Bug check code reference"). Microsoft's codes are small
/// (0x1-0x1FF), a few of them with the 0x10000000 or 0xC0000000 bits set, and 0xDEADDEAD; the
/// 0xE0000000 range is used by none of them. Parameters by convention of this project: the
/// panic's line, its column, the address of the file name bytes and their length.
pub const PANIC_BUG_CHECK_CODE: u32 = 0xE000_0B1C;

/// Brings the system down with `KeBugCheckEx(code, p1, p2, p3, p4)`; never returns.
///
/// For the panic handler only: a driver that detects a recoverable problem logs it and fails
/// the request instead. Callable at any IRQL.
pub fn bug_check(code: u32, p1: usize, p2: usize, p3: usize, p4: usize) -> ! {
    // SAFETY: KeBugCheckEx may be called at any IRQL (wdm.h, "IRQL: Any level"); it takes five
    // plain integers and dereferences none of them, and it does not return.
    unsafe { KeBugCheckEx(code, p1, p2, p3, p4) }
}
