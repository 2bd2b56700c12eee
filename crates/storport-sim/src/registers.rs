//! Device registers: StorPortGetDeviceBase maps part of an access range to an address the host
//! never dereferences (non-canonical, so a stray dereference faults at once); the register
//! accessors recognise it and forward to the device's BAR.
//!
//! Address = `TAG | serial << 40 | window << 32 | offset`.

use std::ffi::c_void;

use crate::adapter::AdapterInner;
use crate::rules::Rule;

const TAG: u64 = 0x5A00_0000_0000_0000;
const TAG_MASK: u64 = 0xFF00_0000_0000_0000;

/// One mapping made by StorPortGetDeviceBase.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Window {
    pub bar: u8,
    pub bar_offset: u64,
    pub len: u64,
    pub mapped: bool,
}

/// StorPortGetDeviceBase.
pub(crate) fn map(
    a: &AdapterInner,
    bus_type: u32,
    io_address: i64,
    bytes: u32,
    in_io_space: u8,
) -> *mut c_void {
    let addr = io_address as u64;
    let bars = a.device.bars();
    let hit = bars
        .iter()
        .find(|b| addr >= b.address && addr.saturating_add(bytes as u64) <= b.address + b.size);
    let listed = a.access_ranges.iter().any(|r| {
        addr >= r.RangeStart as u64
            && addr + bytes as u64 <= r.RangeStart as u64 + r.RangeLength as u64
    });
    let bar = match hit {
        Some(b) if listed && bytes > 0 && in_io_space == 0 && bus_type == crate::abi::PCI_BUS => b,
        _ => {
            a.report(
                Rule::BadDeviceBase,
                [addr, bytes as u64, in_io_space as u64],
                format!(
                    "StorPortGetDeviceBase({addr:#x}, {bytes} bytes, InIoSpace={in_io_space}, bus {bus_type}) is not inside an assigned memory range"
                ),
            );
            return std::ptr::null_mut();
        }
    };
    let mut w = a.windows.write().unwrap_or_else(|e| e.into_inner());
    let idx = w.len() as u64;
    w.push(Window {
        bar: bar.index,
        bar_offset: addr - bar.address,
        len: bytes as u64,
        mapped: true,
    });
    (TAG | (a.serial & 0xFFFF) << 40 | (idx & 0xFF) << 32) as *mut c_void
}

/// StorPortFreeDeviceBase.
pub(crate) fn unmap(a: &AdapterInner, base: *mut c_void) {
    let v = base as u64;
    let idx = ((v >> 32) & 0xFF) as usize;
    let mut w = a.windows.write().unwrap_or_else(|e| e.into_inner());
    match w.get_mut(idx) {
        Some(win) if v & TAG_MASK == TAG && v & 0xFFFF_FFFF == 0 => win.mapped = false,
        _ => {
            drop(w);
            a.report(
                Rule::BadDeviceBase,
                [v, 0, 0],
                format!("StorPortFreeDeviceBase({v:#x}) of an address never mapped"),
            );
        }
    }
}

/// Resolves a register address to (BAR, offset), checking bounds and alignment.
fn resolve(a: &AdapterInner, reg: *mut c_void, size: u64) -> Option<(u8, u64)> {
    let v = reg as u64;
    let ok_tag = v & TAG_MASK == TAG && (v >> 40) & 0xFFFF == a.serial & 0xFFFF;
    let idx = ((v >> 32) & 0xFF) as usize;
    let off = v & 0xFFFF_FFFF;
    let w = a.windows.read().unwrap_or_else(|e| e.into_inner());
    let win = w.get(idx).copied();
    drop(w);
    match win {
        Some(win) if ok_tag && win.mapped && off + size <= win.len && off.is_multiple_of(size) => {
            Some((win.bar, win.bar_offset + off))
        }
        _ => {
            a.report(
                Rule::BadRegisterAddress,
                [v, size, 0],
                format!("register access of {size} bytes at {v:#x}: not inside a range mapped by StorPortGetDeviceBase (or misaligned)"),
            );
            None
        }
    }
}

pub(crate) fn read(a: &AdapterInner, reg: *mut c_void, buf: &mut [u8]) {
    crate::sched::switch("register read");
    match resolve(a, reg, buf.len() as u64) {
        Some((bar, off)) => a.device.bar_read(bar, off, buf),
        None => buf.fill(0xFF),
    }
}

pub(crate) fn write(a: &AdapterInner, reg: *mut c_void, buf: &[u8]) {
    crate::sched::switch("register write");
    if let Some((bar, off)) = resolve(a, reg, buf.len() as u64) {
        a.device.bar_write(bar, off, buf);
    }
}

/// The adapter serial (low 16 bits) a register address made by `map` belongs to, for register
/// calls with a NULL device extension: on x64 Windows the accessors ignore the extension
/// (layouts.md), and viostor passes NULL. `None` for an address `map` did not make.
pub(crate) fn serial_of(reg: *mut c_void) -> Option<u64> {
    let v = reg as u64;
    (v & TAG_MASK == TAG).then_some((v >> 40) & 0xFFFF)
}
