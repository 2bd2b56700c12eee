//! What issue 16 (viostor beside vioblk) added to the user-mode Storport, tested without the
//! viostor sources:
//!
//! - `PortOptions::windows_rules_only` turns off the project's own rules (`Rule::PROJECT_ONLY`)
//!   and nothing else: a miniport taking two STOR_DPC locks is not reported, a lock-order
//!   violation (an SDV rule) still is; the device extension is DMA-able, as nonpaged pool is.
//! - Register accessors called with a NULL device extension (viostor does) reach the adapter
//!   whose StorPortGetDeviceBase made the address.
#![allow(clippy::undocumented_unsafe_blocks)]

mod common;

use std::ffi::c_void;

use common::*;
use storport_sim::*;

unsafe extern "C" {
    fn StorPortReadRegisterUlong(d: *mut c_void, r: *mut u32) -> u32;
    fn StorPortGetPhysicalAddress(
        d: *mut c_void,
        srb: *mut c_void,
        va: *mut c_void,
        len: *mut u32,
    ) -> i64;
}

fn windows_only() -> PortOptions {
    PortOptions {
        windows_rules_only: true,
        ..PortOptions::default()
    }
}

#[test]
fn project_rules_are_the_documented_ones() {
    assert_eq!(
        Rule::PROJECT_ONLY,
        &[Rule::TwoDpcLocks, Rule::OutsideCallback]
    );
}

#[test]
fn windows_rules_only_does_not_report_two_dpc_locks() {
    let p = port(windows_only());
    let (a, _dev) = start(&p, bad::TWO_DPC, 2);
    // The request's DPC takes both DPC locks before it completes the request.
    let c = a.submit(Request::data_in(&READ10, 4096)).wait();
    assert_eq!(c.srb_status & 0x3F, 1, "the read completes");
    drop(a);
    let v = p.violations();
    assert!(!has(&v, Rule::TwoDpcLocks), "{v:#?}");
}

#[test]
fn windows_rules_only_still_reports_windows_rules() {
    let v = provoke(bad::LOCK_ORDER, Rule::LockOrder, windows_only());
    assert!(has(&v, Rule::LockOrder));
}

#[test]
fn windows_rules_only_device_extension_is_dma_able() {
    let p = port(windows_only());
    let (a, _dev) = start(&p, bad::NONE, 2);
    let d = a.device_extension();
    let mut len = 0u32;
    let pa = unsafe { StorPortGetPhysicalAddress(d, std::ptr::null_mut(), d, &mut len) };
    assert_ne!(pa, 0);
    assert!(len > 0);
    drop(a);
    assert!(p.violations().is_empty(), "{:#?}", p.violations());
}

#[test]
fn register_access_with_a_null_extension_is_resolved_by_address() {
    let p = port(PortOptions::default());
    let (a, _dev) = start(&p, bad::NONE, 2);
    let e = unsafe { &*(a.device_extension() as *const Ext) };
    let before = unattributed_calls();
    let register = unsafe { e.regs.add(0x10) };
    let v = unsafe { StorPortReadRegisterUlong(std::ptr::null_mut(), register.cast()) };
    assert_eq!(v, 0xFEED_F00D);
    assert_eq!(unattributed_calls(), before);
    drop(a);
    assert!(p.violations().is_empty(), "{:#?}", p.violations());
}
