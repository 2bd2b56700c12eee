//! Device registers: a mapped MMIO window of a BAR.
//!
//! On Windows and under UEFI a register access is one fixed `mov`/`movzx` instruction at the
//! mapped address, in an `asm!` block after [`REGISTER_ACCESS_MARKER`] (what the WDK's
//! `READ_REGISTER_*`/`WRITE_REGISTER_*` macros do on x64, with the instruction form pinned). On the
//! host the same accesses go through `StorPortReadRegister*`/`StorPortWriteRegister*`, which the
//! user-mode Storport defines and forwards to the device model. Nothing else in the driver is
//! conditional on the platform.

use core::ffi::c_void;

#[cfg(not(any(target_os = "windows", target_os = "uefi")))]
use crate::ffi;

/// A window of memory-mapped device registers.
///
/// # Invariants
///
/// `base..base + len` lies inside one range returned by `StorPortGetDeviceBase` for this
/// adapter (`extension` is the adapter's device extension), and stays mapped for the adapter's
/// lifetime. Every access is bounds-checked against `len` and must be naturally aligned.
#[derive(Clone, Copy, Debug)]
pub struct RegisterWindow {
    base: *mut u8,
    len: usize,
    extension: *mut c_void,
    #[cfg(any(test, feature = "test-utils"))]
    test: Option<&'static dyn TestRegisters>,
    #[cfg(any(test, feature = "test-utils"))]
    test_origin: usize,
}

// SAFETY: the window is an address range of device registers shared by all CPUs; each access is
// a single volatile (or port-mediated) load or store, as on hardware.
unsafe impl Send for RegisterWindow {}
// SAFETY: as for Send.
unsafe impl Sync for RegisterWindow {}

#[cfg(any(test, feature = "test-utils"))]
impl core::fmt::Debug for dyn TestRegisters {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("TestRegisters")
    }
}

/// A register file for unit tests of code built on [`RegisterWindow`].
#[cfg(any(test, feature = "test-utils"))]
pub trait TestRegisters: Sync {
    /// Reads `width` bytes (1, 2, 4 or 8) at `offset`.
    fn read(&self, offset: usize, width: u8) -> u64;
    /// Writes `width` bytes (1, 2, 4 or 8) at `offset`.
    fn write(&self, offset: usize, width: u8, value: u64);
    /// Size of the register file in bytes.
    fn len(&self) -> usize;
    /// Whether the register file is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl RegisterWindow {
    /// Makes a window.
    ///
    /// # Safety
    ///
    /// `base..base + len` must be device registers mapped by `StorPortGetDeviceBase` for the
    /// adapter whose device extension is `extension`, mapped for as long as the window is used.
    pub(crate) unsafe fn new(base: *mut u8, len: usize, extension: *mut c_void) -> Self {
        // INVARIANT: guaranteed by the caller.
        Self {
            base,
            len,
            extension,
            #[cfg(any(test, feature = "test-utils"))]
            test: None,
            #[cfg(any(test, feature = "test-utils"))]
            test_origin: 0,
        }
    }

    /// A window over a test register file.
    #[cfg(any(test, feature = "test-utils"))]
    pub fn from_test_device(dev: &'static dyn TestRegisters) -> RegisterWindow {
        RegisterWindow {
            base: core::ptr::null_mut(),
            len: dev.len(),
            extension: core::ptr::null_mut(),
            test: Some(dev),
            test_origin: 0,
        }
    }

    /// Length of the window in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the window is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The part of the window at `offset` of `len` bytes, or `None` if it does not fit.
    pub fn subwindow(&self, offset: usize, len: usize) -> Option<RegisterWindow> {
        let end = offset.checked_add(len)?;
        if end > self.len {
            return None;
        }
        // INVARIANT: the sub-range lies inside this window, hence inside the mapped range.
        Some(RegisterWindow {
            base: self.base.wrapping_add(offset),
            len,
            extension: self.extension,
            #[cfg(any(test, feature = "test-utils"))]
            test: self.test,
            #[cfg(any(test, feature = "test-utils"))]
            test_origin: self.test_origin.wrapping_add(offset),
        })
    }

    /// Whether an access of `width` bytes at `offset` lies inside the window and is naturally
    /// aligned: a misaligned MMIO access may be split or fault, and the offsets come from the
    /// device (its capabilities), which is not trusted.
    fn in_range(&self, offset: usize, width: usize) -> bool {
        offset.checked_add(width).is_some_and(|end| end <= self.len)
            && self.address(offset).is_multiple_of(width)
    }

    /// The address an access at `offset` touches (in a test register file, its offset there).
    fn address(&self, offset: usize) -> usize {
        #[cfg(any(test, feature = "test-utils"))]
        if self.test.is_some() {
            return self.test_origin.wrapping_add(offset);
        }
        (self.base as usize).wrapping_add(offset)
    }

    /// Reads an 8-bit register; all ones if `offset` is outside the window or misaligned.
    pub fn read_u8(&self, offset: usize) -> u8 {
        if !self.in_range(offset, 1) {
            return u8::MAX;
        }
        #[cfg(any(test, feature = "test-utils"))]
        if let Some(t) = self.test {
            return t.read(self.test_offset(offset), 1) as u8;
        }
        let register = self.base.wrapping_add(offset);
        // SAFETY: `register` is inside the mapped window (checked above; type invariant).
        unsafe { read_register_u8(self.extension, register) }
    }

    /// Reads a 16-bit register; all ones if `offset` is outside the window or misaligned.
    pub fn read_u16(&self, offset: usize) -> u16 {
        if !self.in_range(offset, 2) {
            return u16::MAX;
        }
        #[cfg(any(test, feature = "test-utils"))]
        if let Some(t) = self.test {
            return t.read(self.test_offset(offset), 2) as u16;
        }
        let register = self.base.wrapping_add(offset).cast::<u16>();
        // SAFETY: `register` is inside the mapped window (checked above; type invariant).
        unsafe { read_register_u16(self.extension, register) }
    }

    /// Reads a 32-bit register; all ones if `offset` is outside the window or misaligned.
    pub fn read_u32(&self, offset: usize) -> u32 {
        if !self.in_range(offset, 4) {
            return u32::MAX;
        }
        #[cfg(any(test, feature = "test-utils"))]
        if let Some(t) = self.test {
            return t.read(self.test_offset(offset), 4) as u32;
        }
        let register = self.base.wrapping_add(offset).cast::<u32>();
        // SAFETY: `register` is inside the mapped window (checked above; type invariant).
        unsafe { read_register_u32(self.extension, register) }
    }

    /// Writes an 8-bit register; ignored if `offset` is outside the window or misaligned.
    pub fn write_u8(&self, offset: usize, value: u8) {
        if !self.in_range(offset, 1) {
            return;
        }
        #[cfg(any(test, feature = "test-utils"))]
        if let Some(t) = self.test {
            return t.write(self.test_offset(offset), 1, value.into());
        }
        let register = self.base.wrapping_add(offset);
        // SAFETY: `register` is inside the mapped window (checked above; type invariant).
        unsafe { write_register_u8(self.extension, register, value) }
    }

    /// Writes a 16-bit register; ignored if `offset` is outside the window or misaligned.
    pub fn write_u16(&self, offset: usize, value: u16) {
        if !self.in_range(offset, 2) {
            return;
        }
        #[cfg(any(test, feature = "test-utils"))]
        if let Some(t) = self.test {
            return t.write(self.test_offset(offset), 2, value.into());
        }
        let register = self.base.wrapping_add(offset).cast::<u16>();
        // SAFETY: `register` is inside the mapped window (checked above; type invariant).
        unsafe { write_register_u16(self.extension, register, value) }
    }

    /// Writes a 32-bit register; ignored if `offset` is outside the window or misaligned.
    pub fn write_u32(&self, offset: usize, value: u32) {
        if !self.in_range(offset, 4) {
            return;
        }
        #[cfg(any(test, feature = "test-utils"))]
        if let Some(t) = self.test {
            return t.write(self.test_offset(offset), 4, value.into());
        }
        let register = self.base.wrapping_add(offset).cast::<u32>();
        // SAFETY: `register` is inside the mapped window (checked above; type invariant).
        unsafe { write_register_u32(self.extension, register, value) }
    }

    /// Reads a 64-bit register; all ones if `offset` is outside the window or misaligned.
    pub fn read_u64(&self, offset: usize) -> u64 {
        if !self.in_range(offset, 8) {
            return u64::MAX;
        }
        #[cfg(any(test, feature = "test-utils"))]
        if let Some(t) = self.test {
            return t.read(self.test_offset(offset), 8);
        }
        let register = self.base.wrapping_add(offset).cast::<u64>();
        // SAFETY: `register` is inside the mapped window (checked above; type invariant).
        unsafe { read_register_u64(self.extension, register) }
    }

    /// Writes a 64-bit register; ignored if `offset` is outside the window or misaligned.
    pub fn write_u64(&self, offset: usize, value: u64) {
        if !self.in_range(offset, 8) {
            return;
        }
        #[cfg(any(test, feature = "test-utils"))]
        if let Some(t) = self.test {
            return t.write(self.test_offset(offset), 8, value);
        }
        let register = self.base.wrapping_add(offset).cast::<u64>();
        // SAFETY: `register` is inside the mapped window (checked above; type invariant).
        unsafe { write_register_u64(self.extension, register, value) }
    }

    #[cfg(any(test, feature = "test-utils"))]
    fn test_offset(&self, offset: usize) -> usize {
        self.test_origin.wrapping_add(offset)
    }
}

// The one platform-dependent function family: a register access.

#[cfg(any(target_os = "windows", target_os = "uefi"))]
mod access {
    //! Register access on hardware: one `asm!` instruction per width and direction.
    //!
    //! A volatile load written in Rust is free to become any instruction LLVM likes: the
    //! feasibility spike found volatile loads folded into `cmp`/`test` with a memory operand. The
    //! image must contain only instruction forms the simulator's MMIO emulation knows (and that a
    //! reader of the disassembly can check), so every access is one fixed instruction inside an
    //! `asm!` block, preceded by [`MARKER`](super::REGISTER_ACCESS_MARKER):
    //!
    //! | width | read | write |
    //! |---|---|---|
    //! | 8 | `movzx r32, byte ptr [r64]` | `mov byte ptr [r64], r8` |
    //! | 16 | `movzx r32, word ptr [r64]` | `mov word ptr [r64], r16` |
    //! | 32 | `mov r32, dword ptr [r64]` | `mov dword ptr [r64], r32` |
    //! | 64 | `mov r64, qword ptr [r64]` | `mov qword ptr [r64], r64` |
    //!
    //! The blocks leave out `nomem`, so each is a compiler barrier for other memory accesses, as
    //! `READ_REGISTER_*`/`WRITE_REGISTER_*` are on x64 (with their `_ReadWriteBarrier`).

    use core::arch::asm;
    use core::ffi::c_void;

    macro_rules! asm_access {
        ($read:ident, $write:ident, $t:ty, $load:literal, $store:literal) => {
            /// Register read: the marker, then one fixed load instruction.
            ///
            /// # Safety
            ///
            /// `register` is a mapped, aligned device register.
            #[inline(always)]
            pub(super) unsafe fn $read(_extension: *mut c_void, register: *mut $t) -> $t {
                let value: u64;
                // SAFETY: by this function's `# Safety`; the instruction reads `register` only.
                unsafe {
                    asm!(
                        ".byte 0x0f, 0x1f, 0x80, 0x4d, 0x4d, 0x49, 0x4f",
                        $load,
                        value = lateout(reg) value,
                        register = in(reg) register,
                        options(nostack, preserves_flags),
                    )
                };
                #[allow(
                    clippy::unnecessary_cast,
                    reason = "a no-op for the 64-bit instance, a truncation of zero bits otherwise"
                )]
                let value = value as $t;
                value
            }

            /// Register write: the marker, then one fixed store instruction.
            ///
            /// # Safety
            ///
            /// `register` is a mapped, aligned device register.
            #[inline(always)]
            pub(super) unsafe fn $write(_extension: *mut c_void, register: *mut $t, value: $t) {
                let value = u64::from(value);
                // SAFETY: by this function's `# Safety`; the instruction writes `register` only.
                unsafe {
                    asm!(
                        ".byte 0x0f, 0x1f, 0x80, 0x4d, 0x4d, 0x49, 0x4f",
                        $store,
                        value = in(reg) value,
                        register = in(reg) register,
                        options(nostack, preserves_flags),
                    )
                };
            }
        };
    }
    asm_access!(
        read_register_u8,
        write_register_u8,
        u8,
        "movzx {value:e}, byte ptr [{register}]",
        "mov byte ptr [{register}], {value:l}"
    );
    asm_access!(
        read_register_u16,
        write_register_u16,
        u16,
        "movzx {value:e}, word ptr [{register}]",
        "mov word ptr [{register}], {value:x}"
    );
    asm_access!(
        read_register_u32,
        write_register_u32,
        u32,
        "mov {value:e}, dword ptr [{register}]",
        "mov dword ptr [{register}], {value:e}"
    );
    asm_access!(
        read_register_u64,
        write_register_u64,
        u64,
        "mov {value}, qword ptr [{register}]",
        "mov qword ptr [{register}], {value}"
    );
}

#[cfg(not(any(target_os = "windows", target_os = "uefi")))]
mod access {
    use super::ffi;
    use core::ffi::c_void;

    macro_rules! port_access {
        ($read:ident, $write:ident, $t:ty, $port_read:ident, $port_write:ident) => {
            /// Register read through the user-mode Storport.
            ///
            /// # Safety
            ///
            /// `register` lies in a range the port mapped for the adapter of `extension`.
            #[inline(always)]
            pub(super) unsafe fn $read(extension: *mut c_void, register: *mut $t) -> $t {
                // SAFETY: by this function's `# Safety`; the port validates the address too.
                unsafe { ffi::$port_read(extension, register) }
            }

            /// Register write through the user-mode Storport.
            ///
            /// # Safety
            ///
            /// `register` lies in a range the port mapped for the adapter of `extension`.
            #[inline(always)]
            pub(super) unsafe fn $write(extension: *mut c_void, register: *mut $t, value: $t) {
                // SAFETY: by this function's `# Safety`; the port validates the address too.
                unsafe { ffi::$port_write(extension, register, value) }
            }
        };
    }
    port_access!(
        read_register_u8,
        write_register_u8,
        u8,
        StorPortReadRegisterUchar,
        StorPortWriteRegisterUchar
    );
    port_access!(
        read_register_u16,
        write_register_u16,
        u16,
        StorPortReadRegisterUshort,
        StorPortWriteRegisterUshort
    );
    port_access!(
        read_register_u32,
        write_register_u32,
        u32,
        StorPortReadRegisterUlong,
        StorPortWriteRegisterUlong
    );
    port_access!(
        read_register_u64,
        write_register_u64,
        u64,
        StorPortReadRegisterUlong64,
        StorPortWriteRegisterUlong64
    );
}

use access::{
    read_register_u8, read_register_u16, read_register_u32, read_register_u64, write_register_u8,
    write_register_u16, write_register_u32, write_register_u64,
};

/// The 7 bytes in front of every register access instruction of the Windows and UEFI builds:
/// `nop dword ptr [rax + 0x4F494D4D]` ("MMIO"), a multi-byte NOP no compiler emits as padding.
///
/// It costs one decoded NOP per access and lets a reader of the image (the disassembly test of
/// `tools/pecheck`, the simulator's MMIO emulation) tell a register access from every other
/// memory access: the instruction after a marker is one of the eight fixed forms of
/// `access`, and a register window touched by anything not after a marker is a bug.
pub const REGISTER_ACCESS_MARKER: [u8; 7] = [0x0f, 0x1f, 0x80, 0x4d, 0x4d, 0x49, 0x4f];
