//! What an image built outside this project needs beyond `imports.rs` (issue 16: viostor, built
//! by `tools/peer/viostor.sh`, run beside vioblk.sys): the further storport.sys and ntoskrnl.exe
//! imports a C miniport links against, and the register-access forms a C compiler emits.
//!
//! - Imports: StorPortSetDeviceQueueDepth, StorPortMoveMemory, DbgPrint, KeBugCheck,
//!   MmGetPhysicalAddress, KeQueryActiveProcessorCountEx, KeQueryMaximumProcessorCountEx,
//!   KeGetCurrentIrql, strlen. `imports::bind` falls back to `bind` here.
//! - Register forms: Windows' own register accessors on x64 are plain volatile accesses, so a C
//!   image's register reads and writes are whatever `mov`/`movzx` forms the compiler chose, with
//!   any addressing mode and no marker. With `accept_plain_register_accesses(true)` the fault
//!   handler also performs those (`emulate_plain`): loads `mov r8|r16|r32|r64, [m]`,
//!   `movzx r32|r64, byte|word [m]`, stores `mov [m], r|imm` of every width. The address is the
//!   fault address itself, so the addressing mode needs no decoding. Any other instruction
//!   touching a window (`cmp`, `test`, `add`, a string instruction, ...) still ends the process
//!   naming it. vioblk.sys is always run with the marker check (the default).

#![allow(non_snake_case, reason = "the imports keep their Windows names")]

use std::ffi::{c_char, c_void};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use iced_x86::{Code, Instruction};

use super::gate::import_stub;
use crate::adapter::with_adapter;
use crate::rules::Rule;

unsafe extern "C" {
    fn StorPortDebugPrint(level: u32, format: *const c_char, ...);
}

static PLAIN: AtomicBool = AtomicBool::new(false);

/// Accesses performed in the plain mode, by kind: load, store of a register, store of an immediate.
pub static PLAIN_ACCESSES: [AtomicU64; 3] = [const { AtomicU64::new(0) }; 3];

/// Lets the MMIO emulation perform unmarked `mov`/`movzx` register accesses (for images not
/// built with `crates/storport`, such as viostor). Off by default.
pub fn accept_plain_register_accesses(on: bool) {
    PLAIN.store(on, Ordering::Release);
}

pub(super) fn plain_enabled() -> bool {
    PLAIN.load(Ordering::Acquire)
}

/// One register access decoded from an unmarked instruction.
pub(super) enum Plain {
    /// Load of `width` bytes into a register: `zero_upper` for movzx and 32-bit destinations
    /// (the whole 64-bit register is written), otherwise only the low `dest_width` bytes change.
    Load {
        width: usize,
        dest_width: usize,
        zero_upper: bool,
    },
    /// Store of a register's low `width` bytes.
    StoreReg { width: usize },
    /// Store of an immediate.
    StoreImm { width: usize, value: u64 },
}

pub(super) fn decode(i: &Instruction) -> Option<Plain> {
    use Plain::*;
    Some(match i.code() {
        Code::Mov_r8_rm8 => Load {
            width: 1,
            dest_width: 1,
            zero_upper: false,
        },
        Code::Mov_r16_rm16 => Load {
            width: 2,
            dest_width: 2,
            zero_upper: false,
        },
        Code::Mov_r32_rm32 => Load {
            width: 4,
            dest_width: 4,
            zero_upper: true,
        },
        Code::Mov_r64_rm64 => Load {
            width: 8,
            dest_width: 8,
            zero_upper: true,
        },
        Code::Movzx_r32_rm8 | Code::Movzx_r64_rm8 => Load {
            width: 1,
            dest_width: 8,
            zero_upper: true,
        },
        Code::Movzx_r32_rm16 | Code::Movzx_r64_rm16 => Load {
            width: 2,
            dest_width: 8,
            zero_upper: true,
        },
        Code::Movzx_r16_rm8 => Load {
            width: 1,
            dest_width: 2,
            zero_upper: false,
        },
        Code::Mov_rm8_r8 => StoreReg { width: 1 },
        Code::Mov_rm16_r16 => StoreReg { width: 2 },
        Code::Mov_rm32_r32 => StoreReg { width: 4 },
        Code::Mov_rm64_r64 => StoreReg { width: 8 },
        Code::Mov_rm8_imm8 => StoreImm {
            width: 1,
            value: i.immediate8() as u64,
        },
        Code::Mov_rm16_imm16 => StoreImm {
            width: 2,
            value: i.immediate16() as u64,
        },
        Code::Mov_rm32_imm32 => StoreImm {
            width: 4,
            value: i.immediate32() as u64,
        },
        Code::Mov_rm64_imm32 => StoreImm {
            width: 8,
            value: i.immediate32to64() as u64,
        },
        _ => return None,
    })
}

/// Performs a register read of `width` bytes at the port's `at` for `devext`.
pub(super) fn read(devext: *mut c_void, at: *mut c_void, width: usize) -> u64 {
    use crate::exports as e;
    match width {
        1 => u64::from(e::StorPortReadRegisterUchar(devext, at.cast())),
        2 => u64::from(e::StorPortReadRegisterUshort(devext, at.cast())),
        4 => u64::from(e::StorPortReadRegisterUlong(devext, at.cast())),
        _ => e::StorPortReadRegisterUlong64(devext, at.cast()),
    }
}

/// Performs a register write of `width` bytes at the port's `at` for `devext`.
pub(super) fn write(devext: *mut c_void, at: *mut c_void, width: usize, value: u64) {
    use crate::exports as e;
    match width {
        1 => e::StorPortWriteRegisterUchar(devext, at.cast(), value as u8),
        2 => e::StorPortWriteRegisterUshort(devext, at.cast(), value as u16),
        4 => e::StorPortWriteRegisterUlong(devext, at.cast(), value as u32),
        _ => e::StorPortWriteRegisterUlong64(devext, at.cast(), value),
    }
}

// ---- Imports ----------------------------------------------------------------------------------

extern "win64" fn t_StorPortSetDeviceQueueDepth(
    devext: *mut c_void,
    path: u8,
    target: u8,
    lun: u8,
    depth: u32,
) -> u8 {
    with_adapter(devext, |a| {
        a.log(format!(
            "SetDeviceQueueDepth({path}/{target}/{lun}, {depth})"
        ));
    });
    1
}
import_stub!(
    storport_sim_imp_set_device_queue_depth,
    t_StorPortSetDeviceQueueDepth
);

extern "win64" fn t_StorPortMoveMemory(dst: *mut c_void, src: *const c_void, n: u32) {
    // SAFETY: the image's arguments, with RtlMoveMemory's contract.
    unsafe { libc::memmove(dst, src, n as usize) };
}
import_stub!(storport_sim_imp_move_memory, t_StorPortMoveMemory);

extern "win64" fn t_DbgPrint(
    format: *const c_char,
    a0: usize,
    a1: usize,
    a2: usize,
    a3: usize,
    a4: usize,
    a5: usize,
    a6: usize,
) -> u32 {
    // SAFETY: forwards the format and up to seven integer or pointer arguments (the import gate
    // copies stack arguments 5 to 13) to the shim's debug print, which formats what the format
    // names.
    unsafe { StorPortDebugPrint(0, format, a0, a1, a2, a3, a4, a5, a6) };
    0
}
import_stub!(storport_sim_imp_dbg_print, t_DbgPrint);

extern "win64" fn t_KeBugCheck(code: u32) {
    eprintln!("storport-sim: *** STOP {code:#010x}: the driver image called KeBugCheck");
    std::process::exit(super::imports::BUG_CHECK_EXIT_CODE);
}
import_stub!(storport_sim_imp_ke_bug_check, t_KeBugCheck);

/// The adapter of the innermost callback on this thread.
fn current<R>(f: impl FnOnce(&crate::adapter::AdapterInner) -> R) -> Option<R> {
    let p = crate::cpu::CTX.with(|c| c.frames.borrow().last().map(|f| f.adapter))?;
    // SAFETY: a frame's adapter is alive for the whole callback (see `with_adapter`).
    Some(f(unsafe { &*p }))
}

extern "win64" fn t_MmGetPhysicalAddress(va: *mut c_void) -> i64 {
    let host = va as usize;
    current(|a| match a.alloc.to_guest(host) {
        Some(pa) => pa as i64,
        None => {
            a.report(
                Rule::DmaOutsideGuestMemory,
                [host as u64, 0, 0],
                format!("MmGetPhysicalAddress({host:#x}): not DMA-able memory from the port"),
            );
            0
        }
    })
    .unwrap_or(0)
}
import_stub!(
    storport_sim_imp_mm_get_physical_address,
    t_MmGetPhysicalAddress
);

extern "win64" fn t_KeQueryActiveProcessorCountEx(_group: u16) -> u32 {
    current(|a| a.cpus()).unwrap_or(1)
}
import_stub!(
    storport_sim_imp_ke_query_active_processor_count_ex,
    t_KeQueryActiveProcessorCountEx
);
import_stub!(
    storport_sim_imp_ke_query_maximum_processor_count_ex,
    t_KeQueryActiveProcessorCountEx
);

extern "win64" fn t_KeGetCurrentIrql() -> u8 {
    crate::cpu::CTX.with(|c| c.irql.get())
}
import_stub!(storport_sim_imp_ke_get_current_irql, t_KeGetCurrentIrql);

extern "win64" fn t_strlen(s: *const c_char) -> usize {
    // SAFETY: the image's NUL-terminated string.
    unsafe { libc::strlen(s) }
}
import_stub!(storport_sim_imp_strlen, t_strlen);

unsafe extern "C" {
    static storport_sim_imp_set_device_queue_depth: u8;
    static storport_sim_imp_move_memory: u8;
    static storport_sim_imp_dbg_print: u8;
    static storport_sim_imp_ke_bug_check: u8;
    static storport_sim_imp_mm_get_physical_address: u8;
    static storport_sim_imp_ke_query_active_processor_count_ex: u8;
    static storport_sim_imp_ke_query_maximum_processor_count_ex: u8;
    static storport_sim_imp_ke_get_current_irql: u8;
    static storport_sim_imp_strlen: u8;
}

/// The Windows x64 entry point for one of the imports above, or `None`.
pub(super) fn bind(dll: &str, function: &str) -> Option<usize> {
    macro_rules! table {
        ($($dll:literal $name:literal => $stub:ident,)*) => {
            match (dll, function) {
                // Only the address of a static import stub is taken.
                $(($dll, $name) => Some(std::ptr::addr_of!($stub) as usize),)*
                _ => None,
            }
        };
    }
    table! {
        "storport.sys" "StorPortSetDeviceQueueDepth" => storport_sim_imp_set_device_queue_depth,
        "storport.sys" "StorPortMoveMemory" => storport_sim_imp_move_memory,
        "ntoskrnl.exe" "DbgPrint" => storport_sim_imp_dbg_print,
        "ntoskrnl.exe" "KeBugCheck" => storport_sim_imp_ke_bug_check,
        "ntoskrnl.exe" "MmGetPhysicalAddress" => storport_sim_imp_mm_get_physical_address,
        "ntoskrnl.exe" "KeQueryActiveProcessorCountEx" => storport_sim_imp_ke_query_active_processor_count_ex,
        "ntoskrnl.exe" "KeQueryMaximumProcessorCountEx" => storport_sim_imp_ke_query_maximum_processor_count_ex,
        "ntoskrnl.exe" "KeGetCurrentIrql" => storport_sim_imp_ke_get_current_irql,
        "ntoskrnl.exe" "strlen" => storport_sim_imp_strlen,
    }
}
