//! Device registers: a mapped MMIO window of a BAR.
//!
//! On Windows and under UEFI a register access is a volatile load or store at the mapped
//! address (what the WDK's `READ_REGISTER_*`/`WRITE_REGISTER_*` macros expand to on x64). On the
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
/// lifetime. Every access is bounds-checked against `len`.
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
    /// Reads `width` bytes (1, 2 or 4) at `offset`.
    fn read(&self, offset: usize, width: u8) -> u64;
    /// Writes `width` bytes (1, 2 or 4) at `offset`.
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

    fn in_range(&self, offset: usize, width: usize) -> bool {
        offset.checked_add(width).is_some_and(|end| end <= self.len)
    }

    /// Reads an 8-bit register; all ones if `offset` is outside the window.
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

    /// Reads a 16-bit register; all ones if `offset` is outside the window.
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

    /// Reads a 32-bit register; all ones if `offset` is outside the window.
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

    /// Writes an 8-bit register; ignored if `offset` is outside the window.
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

    /// Writes a 16-bit register; ignored if `offset` is outside the window.
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

    /// Writes a 32-bit register; ignored if `offset` is outside the window.
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

    #[cfg(any(test, feature = "test-utils"))]
    fn test_offset(&self, offset: usize) -> usize {
        self.test_origin.wrapping_add(offset)
    }
}

// The one platform-dependent function family: a register access.

#[cfg(any(target_os = "windows", target_os = "uefi"))]
mod access {
    use core::ffi::c_void;

    macro_rules! volatile_access {
        ($read:ident, $write:ident, $t:ty) => {
            /// Volatile register read.
            ///
            /// # Safety
            ///
            /// `register` is a mapped, aligned device register.
            #[inline(always)]
            pub(super) unsafe fn $read(_extension: *mut c_void, register: *mut $t) -> $t {
                // SAFETY: by this function's `# Safety`.
                unsafe { core::ptr::read_volatile(register) }
            }

            /// Volatile register write.
            ///
            /// # Safety
            ///
            /// `register` is a mapped, aligned device register.
            #[inline(always)]
            pub(super) unsafe fn $write(_extension: *mut c_void, register: *mut $t, value: $t) {
                // SAFETY: by this function's `# Safety`.
                unsafe { core::ptr::write_volatile(register, value) }
            }
        };
    }
    volatile_access!(read_register_u8, write_register_u8, u8);
    volatile_access!(read_register_u16, write_register_u16, u16);
    volatile_access!(read_register_u32, write_register_u32, u32);
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
}

use access::{
    read_register_u8, read_register_u16, read_register_u32, write_register_u8, write_register_u16,
    write_register_u32,
};
