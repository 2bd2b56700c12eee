//! End-to-end tests of the user-mode Storport with raw test miniports: a well-behaved one shows
//! no violations through the whole lifecycle; a misbehaving one proves each rule fires.
#![allow(clippy::undocumented_unsafe_blocks)]

mod common;

use std::time::Duration;

use common::*;
use storport_sim::*;

fn quiet() -> PortOptions {
    PortOptions::default()
}

#[test]
fn good_miniport_full_lifecycle_has_no_violations() {
    let p = port(quiet());
    let reg = p.registration().unwrap();
    assert_eq!(reg.hw_init.HwInitializationDataSize, 208);
    assert!(reg.hw_init.HwBuildIo.is_some() && reg.hw_init.HwAdapterControl.is_some());
    assert_eq!(
        reg.hw_init.SrbTypeFlags,
        abi::SRB_TYPE_FLAG_STORAGE_REQUEST_BLOCK
    );
    let (a, dev) = start(&p, bad::NONE, 4);
    assert_eq!(a.perf().0, 2, "two concurrent channels");
    assert_eq!(a.synchronization(), (true, true));
    let e = unsafe { &*(a.device_extension() as *const Ext) };
    assert_eq!(e.passive_ran, 1);
    let c = a.execute(Request::data_in(&INQUIRY, 36));
    assert!(c.is_success(), "{c:?}");
    assert_eq!(c.data, vec![0x42; 36]);
    let c = a.execute(Request::data_out(
        &[0x2A, 0, 0, 0, 0, 0, 0, 0, 1, 0],
        vec![7; 512],
    ));
    assert!(c.is_success());
    let c = a.execute(Request::function(function::FLUSH));
    assert!(c.is_success());
    // Many requests from several submitting threads.
    std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| {
                for _ in 0..200 {
                    assert!(read(&a).is_success());
                }
            });
        }
    });
    assert!(dev.doorbells.load(std::sync::atomic::Ordering::SeqCst) >= 602);
    assert_eq!(a.stop(), Some(0));
    a.restart().unwrap();
    assert!(read(&a).is_success());
    assert!(a.reset_bus());
    assert!(read(&a).is_success());
    assert!(a.log().iter().any(|l| l.contains("dpc done 1")));
    drop(a);
    let v = p.violations();
    assert!(
        v.is_empty(),
        "{}",
        v.iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn callback_completions_sustain_throughput() {
    let p = port(quiet());
    let (a, _dev) = start(&p, bad::NONE, 4);
    let a = std::sync::Arc::new(a);
    let (tx, rx) = std::sync::mpsc::channel();
    let n = 2000;
    let t = std::time::Instant::now();
    for _ in 0..n {
        let tx = tx.clone();
        a.submit_with(Request::data_in(&READ10, 4096), move |c| {
            tx.send(c.is_success()).unwrap()
        });
    }
    for i in 0..n {
        let ok = rx
            .recv_timeout(PATIENCE)
            .unwrap_or_else(|e| panic!("completion {i} of {n} not delivered ({e})"));
        assert!(ok, "completion {i} failed");
    }
    eprintln!("{n} requests in {:?}", t.elapsed());
    assert!(p.violations().is_empty(), "{:#?}", p.violations());
}

#[test]
fn classic_lock_fallback_when_ex_not_implemented() {
    let p = port(PortOptions {
        acquire_spinlock_ex_not_implemented: true,
        ..quiet()
    });
    let (a, _dev) = start(&p, bad::NONE, 2);
    assert!(read(&a).is_success());
    let e = unsafe { &*(a.device_extension() as *const Ext) };
    assert!(e.ex_fallbacks.load(std::sync::atomic::Ordering::Relaxed) > 0);
    drop(a);
    assert!(p.violations().is_empty(), "{:?}", p.violations());
}

#[test]
fn intx_mode_works() {
    let p = port(quiet());
    let (a, _dev) = start_with(
        &p,
        0,
        AdapterOptions {
            interrupts: InterruptMode::Intx,
            ..Default::default()
        },
        0,
    )
    .unwrap();
    for _ in 0..20 {
        assert!(read(&a).is_success());
    }
    drop(a);
    assert!(p.violations().is_empty(), "{:?}", p.violations());
}

#[test]
fn dump_mode_polls_the_isr() {
    let p = port(quiet());
    let (a, _dev) = start_with(
        &p,
        0,
        AdapterOptions {
            dump_mode: Some(1),
            ..Default::default()
        },
        4,
    )
    .unwrap();
    let e = unsafe { &*(a.device_extension() as *const Ext) };
    assert_eq!(e.dump, 1);
    for _ in 0..5 {
        assert!(read(&a).is_success());
    }
    drop(a);
    assert!(p.violations().is_empty(), "{:?}", p.violations());
}

/// RequestedDumpBufferSize honoured: the running instance asked for 8 KiB, and the dump instance
/// built from its dump pointers finds a DumpRegion of that size in guest memory (a physical
/// address the device can reach, the virtual one writable); one built without them gets none.
/// A dump instance allowing less per request than the pointers promised is reported.
#[test]
fn the_dump_stack_gets_the_buffer_its_running_instance_asked_for() {
    let p = port(quiet());
    let (a, _dev) = start(&p, 0, 2);
    assert_eq!(a.requested_dump_buffer_size(), 8192);
    let promised = |max_transfer| storport_sim::DumpPointers {
        version: 0x0100,
        size: 0x70,
        max_transfer,
        breaks: abi::SP_UNINITIALIZED_VALUE,
        private_data: 0,
        common_buffer_size: 0,
        requested_dump_buffer: a.requested_dump_buffer_size(),
    };
    let dump = |pointers| {
        start_with(
            &p,
            0,
            AdapterOptions {
                dump_mode: Some(2),
                dump_pointers: pointers,
                ..Default::default()
            },
            4,
        )
        .unwrap()
    };
    let (d, _dev) = dump(Some(promised(abi::SP_UNINITIALIZED_VALUE)));
    let e = unsafe { &*(d.device_extension() as *const Ext) };
    let (virt, phys, len) = e.dump_region;
    assert_eq!(len, 8192);
    assert_ne!(virt, 0);
    assert_eq!(d.dump_region(), Some((virt, phys as u64, 8192)));
    // Writable, and the dump instance still serves I/O.
    unsafe { std::ptr::write_bytes(virt as *mut u8, 0x5A, 8192) };
    assert!(read(&d).is_success());
    drop(d);
    let (bare, _dev) = dump(None);
    let e = unsafe { &*(bare.device_extension() as *const Ext) };
    assert_eq!(e.dump_region, (0, 0, 0));
    drop(bare);
    assert!(p.violations().is_empty(), "{:#?}", p.violations());
    // The check can fire: pointers that promised more than the dump instance allows.
    let (over, _dev) = dump(Some(promised(u32::MAX - 1)));
    drop(over);
    assert!(
        p.violations()
            .iter()
            .any(|v| v.rule == Rule::DumpMode && v.message.contains("MINIPORT_DUMP_POINTERS")),
        "{:#?}",
        p.violations()
    );
    drop(a);
}

#[test]
fn busy_is_retried_with_a_fresh_extension() {
    let p = port(quiet());
    let (a, _dev) = start(&p, bad::BUSY_ONCE, 2);
    let c = read(&a);
    assert!(c.is_success());
    assert_eq!(c.busy_retries, 1);
    drop(a);
    assert!(p.violations().is_empty(), "{:#?}", p.violations());
}

#[test]
fn request_timer_call_runs_hw_timer() {
    let p = port(quiet());
    let (a, _dev) = start(&p, bad::TIMER, 2);
    assert!(read(&a).is_success());
    // BuildIo asked for one call, 1 ms later.
    a.wait_until("HwStorTimer to run", PATIENCE, || {
        a.activity().timer_calls >= 1
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let e = unsafe { &*(a.device_extension() as *const Ext) };
    assert_eq!(e.timer_calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(a.activity().timer_calls, 1, "RequestTimerCall is one-shot");
    drop(a);
    assert!(p.violations().is_empty(), "{:?}", p.violations());
}

// ---------------------------------------------------------------- one negative test per rule

fn expect(bad: u32, rule: Rule) -> Vec<Violation> {
    expect_with(bad, rule, quiet())
}

fn expect_with(bad: u32, rule: Rule, opts: PortOptions) -> Vec<Violation> {
    let v = provoke(bad, rule, opts);
    assert!(has(&v, rule), "expected {rule:?}, got {v:#?}");
    v
}

#[test]
fn rule_lock_order() {
    expect(bad::LOCK_ORDER, Rule::LockOrder);
}
#[test]
fn rule_lock_reacquire() {
    expect(bad::REACQUIRE, Rule::LockReacquire);
}
#[test]
fn rule_lock_release_not_held() {
    expect(bad::RELEASE_NOT_HELD, Rule::LockReleaseNotHeld);
}
#[test]
fn rule_lock_held_at_return() {
    expect(bad::HELD_AT_RETURN, Rule::LockHeldAtReturn);
}
#[test]
fn rule_two_dpc_locks() {
    expect(bad::TWO_DPC, Rule::TwoDpcLocks);
}
#[test]
fn rule_lock_not_allowed_in_isr() {
    let v = expect(bad::NOT_ALLOWED, Rule::LockNotAllowed);
    let x = v.iter().find(|x| x.rule == Rule::LockNotAllowed).unwrap();
    assert_eq!(x.callback, "HwMSInterruptRoutine");
    assert!(!x.lock_history.is_empty());
}
#[test]
fn rule_irql_changed() {
    expect(bad::IRQL_CHANGED, Rule::IrqlChanged);
}
#[test]
fn rule_notification_type() {
    expect(bad::NOTIFICATION, Rule::NotificationType);
}
#[test]
fn rule_status_pending() {
    expect(bad::STATUS_PENDING, Rule::StatusPending);
}
#[test]
fn rule_buildio_false_without_completion() {
    expect(bad::BUILDIO_FALSE, Rule::BuildIoCompletion);
}
#[test]
fn rule_buildio_true_after_completion() {
    expect(bad::BUILDIO_TRUE_COMPLETED, Rule::BuildIoCompletion);
}
#[test]
fn rule_passive_init_outside_initialize() {
    expect(bad::PASSIVE_CONTEXT, Rule::PassiveInitContext);
}
#[test]
fn rule_perf_opts_outside_init() {
    expect(bad::PERF_CONTEXT, Rule::PerfOptsContext);
}
#[test]
fn rule_uncached_extension_outside_find_adapter() {
    let v = expect(bad::UNCACHED_CONTEXT, Rule::UncachedExtension);
    let x = v
        .iter()
        .find(|x| x.rule == Rule::UncachedExtension)
        .unwrap();
    assert_eq!((x.code, x.params[0]), (0xF1, 0x2002));
}
#[test]
fn rule_uncached_extension_before_srb_extension_size() {
    expect(bad::UNCACHED_ORDER, Rule::UncachedExtension);
}
#[test]
fn rule_find_adapter_return_value() {
    let p = port(quiet());
    let r = start_with(
        &p,
        0,
        AdapterOptions {
            argument_string: Some(format!("bad={}", bad::FIND_RETURN)),
            ..Default::default()
        },
        2,
    );
    assert!(matches!(r, Err(StartError::FindAdapter(7))));
    assert!(has(&p.violations(), Rule::FindAdapterReturn));
}
#[test]
fn rule_find_adapter_limits() {
    expect(bad::LIMITS, Rule::FindAdapterLimits);
}
#[test]
fn rule_double_completion() {
    let v = expect(bad::DOUBLE_COMPLETE, Rule::DoubleCompletion);
    let x = v.iter().find(|x| x.rule == Rule::DoubleCompletion).unwrap();
    assert_eq!((x.code, x.params[0]), (0xF1, 0x2004));
}
#[test]
fn rule_unknown_srb() {
    expect(bad::UNKNOWN_SRB, Rule::UnknownSrb);
}
#[test]
fn rule_watchdog() {
    let v = expect_with(
        bad::WATCHDOG,
        Rule::Watchdog,
        PortOptions {
            isr_budget: Duration::from_millis(5),
            ..quiet()
        },
    );
    assert_eq!(
        v.iter().find(|x| x.rule == Rule::Watchdog).unwrap().code,
        0x133
    );
}
#[test]
fn rule_dma_outside_guest_memory() {
    expect(bad::DMA_OUTSIDE, Rule::DmaOutsideGuestMemory);
}
#[test]
fn rule_bad_register_address() {
    let v = expect(bad::BAD_REGISTER, Rule::BadRegisterAddress);
    assert_eq!(
        v.iter()
            .find(|x| x.rule == Rule::BadRegisterAddress)
            .unwrap()
            .params[0],
        0x2005
    );
}
#[test]
fn rule_bad_device_base() {
    let v = expect(bad::BAD_DEVICE_BASE, Rule::BadDeviceBase);
    assert_eq!(
        v.iter()
            .find(|x| x.rule == Rule::BadDeviceBase)
            .unwrap()
            .params[0],
        0x2003
    );
}
#[test]
fn rule_stall_too_long() {
    let v = expect(bad::STALL, Rule::StallTooLong);
    assert_eq!(
        v.iter()
            .find(|x| x.rule == Rule::StallTooLong)
            .unwrap()
            .params[0],
        0x2001
    );
}
#[test]
fn rule_synchronize_access_from_isr() {
    expect(bad::SYNC_FROM_ISR, Rule::SynchronizeAccessContext);
}
#[test]
fn rule_synchronize_access_holding_interrupt_lock() {
    expect(bad::SYNC_HOLDING_INTERRUPT, Rule::SynchronizeAccessContext);
}
#[test]
fn rule_msi_lock_outside_per_message() {
    expect(bad::MSI_LOCK_MODE, Rule::MsiLock);
}
#[test]
fn rule_registry_read_into_a_foreign_buffer() {
    expect(bad::REGISTRY_FOREIGN_BUFFER, Rule::RegistryAccess);
}
#[test]
fn rule_registry_buffer_at_dispatch() {
    expect(bad::REGISTRY_AT_DISPATCH, Rule::RegistryAccess);
}
#[test]
fn registry_read_through_the_registry_buffer_is_clean() {
    let p = port(quiet());
    let opts = AdapterOptions {
        argument_string: Some(format!("bad={}", bad::REGISTRY_GOOD)),
        registry: vec![("Tunable".to_owned(), 77)],
        ..Default::default()
    };
    let (a, _dev) = start_with(&p, 0, opts, 2).unwrap();
    drop(a);
    assert!(p.violations().is_empty(), "{:#?}", p.violations());
}
#[test]
fn rule_prohibited_ddi() {
    expect(bad::PROHIBITED, Rule::ProhibitedDdi);
}
#[test]
fn rule_no_wait_in_startio() {
    expect(bad::NO_WAIT, Rule::NoWait);
}
#[test]
fn rule_half_duplex() {
    expect(bad::HALF_DUPLEX, Rule::HalfDuplex);
}
#[test]
fn rule_invalid_lock_kind() {
    expect(bad::INVALID_KIND, Rule::InvalidParameter);
}
#[test]
fn rule_adapter_control_protocol() {
    expect(bad::ADAPTER_CONTROL, Rule::AdapterControl);
}
#[test]
fn rule_dump_mode_refuses_dpcs() {
    let p = port(quiet());
    let opts = AdapterOptions {
        dump_mode: Some(1),
        argument_string: Some(format!("bad={}", bad::DUMP_DPC)),
        ..Default::default()
    };
    let (a, _dev) = start_with(&p, 0, opts, 2).unwrap();
    drop(a);
    assert!(has(&p.violations(), Rule::DumpMode));
}
#[test]
fn rule_registration() {
    for mode in 1..=3 {
        DRIVER_MODE.with(|m| m.set(mode));
        let p = Port::new(quiet());
        assert!(p.load_driver(DriverEntry).is_err(), "mode {mode}");
        assert!(has(&p.violations(), Rule::Registration));
    }
    DRIVER_MODE.with(|m| m.set(0));
}
#[test]
fn rule_outside_callback() {
    let p = port(quiet());
    let (a, _dev) = start(&p, bad::NONE, 2);
    let mut h = abi::StorLockHandle::default();
    unsafe {
        StorPortNotification(
            abi::ACQUIRE_SPIN_LOCK,
            a.device_extension(),
            abi::START_IO_LOCK,
            std::ptr::null_mut::<u8>(),
            &mut h as *mut _,
        )
    };
    unsafe {
        StorPortNotification(
            abi::RELEASE_SPIN_LOCK,
            a.device_extension(),
            &mut h as *mut _,
        )
    };
    drop(a);
    assert!(has(&p.violations(), Rule::OutsideCallback));
}
#[test]
fn rule_not_completed_after_reset() {
    let opts = PortOptions {
        timeout_scale: 0.2,
        reset_grace: Duration::from_millis(300),
        ..quiet()
    };
    let p = port(opts);
    let (a, dev) = start(&p, bad::NONE, 2);
    dev.answer.store(false, std::sync::atomic::Ordering::SeqCst);
    // The device swallows the request: it times out (200 ms), Storport calls HwStorResetBus,
    // the test miniport completes nothing there, and 300 ms later the port reports it.
    let _h = a.submit(Request::data_in(&READ10, 4096).timeout(1));
    let x = p
        .wait_for_violation(Rule::NotCompletedAfterReset, PATIENCE)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((x.code, x.params[0]), (0xF0, 1));
    let seen = a.activity();
    assert_eq!((seen.timeouts, seen.resets), (1, 1), "{seen:?}");
    assert_eq!(a.outstanding_after_reset(), 0, "reported, so settled");
}
#[test]
fn rule_not_completed_in_time() {
    let opts = PortOptions {
        timeout_scale: 0.1,
        reset_on_timeout: false,
        ..quiet()
    };
    let p = port(opts);
    let (a, dev) = start(&p, bad::NONE, 2);
    dev.answer.store(false, std::sync::atomic::Ordering::SeqCst);
    let _h = a.submit(Request::data_in(&READ10, 4096).timeout(1));
    let x = p
        .wait_for_violation(Rule::NotCompletedInTime, PATIENCE)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((x.code, x.params[0]), (0xF0, 3));
    let seen = a.activity();
    assert_eq!((seen.timeouts, seen.resets), (1, 0), "no reset: {seen:?}");
}

unsafe extern "C" {
    fn StorPortSetBusDataByOffset(
        d: *mut std::ffi::c_void,
        bus_data_type: u32,
        bus: u32,
        slot: u32,
        buffer: *mut std::ffi::c_void,
        offset: u32,
        length: u32,
    ) -> u32;
}

/// `Adapter::refuse_bus_data_writes`: a write the filter refuses returns 0 (and is logged),
/// the others go through with their length; `None` lets every write through again.
#[test]
fn refused_bus_data_writes_return_zero() {
    let p = port(quiet());
    let (a, _dev) = start(&p, bad::NONE, 2);
    let write = |offset: u32, bytes: &mut [u8]| unsafe {
        StorPortSetBusDataByOffset(
            a.device_extension(),
            abi::PCI_CONFIGURATION,
            0,
            0,
            bytes.as_mut_ptr().cast(),
            offset,
            bytes.len() as u32,
        )
    };
    assert_eq!(write(4, &mut [0x06, 0x00]), 2, "nothing refused yet");
    // Refuse writes that set Bus Master Enable (command register bit 2).
    a.refuse_bus_data_writes(Some(Box::new(|offset, bytes: &[u8]| {
        offset == 4 && bytes.first().is_some_and(|b| b & 0x04 != 0)
    })));
    assert_eq!(
        write(4, &mut [0x06, 0x00]),
        0,
        "Bus Master Enable set: refused"
    );
    assert_eq!(write(4, &mut [0x02, 0x00]), 2, "cleared: written");
    assert_eq!(write(0x40, &mut [0x04]), 1, "another register: written");
    assert!(
        a.log()
            .iter()
            .any(|l| l.contains("StorPortSetBusDataByOffset(0x4, [06, 00]) refused")),
        "{:?}",
        a.log()
    );
    a.refuse_bus_data_writes(None);
    assert_eq!(write(4, &mut [0x06, 0x00]), 2, "let through again");
    assert!(a.violations().is_empty(), "{:?}", a.violations());
}

/// The unit-control calls are sent only to a miniport that has HwStorUnitControl (this test
/// miniport has none): `None`, and nothing reported. (vioblk's suites show them delivered.)
#[test]
fn unit_controls_need_hw_unit_control() {
    let p = port(quiet());
    let (a, _dev) = start(&p, bad::NONE, 2);
    assert_eq!(a.unit_start(), None);
    assert_eq!(a.unit_remove(), None);
    assert_eq!(a.unit_power(1, 0), None);
    assert!(a.violations().is_empty(), "{:?}", a.violations());
}

/// `Adapter::withhold_srb_extensions`: requests sent meanwhile reach the miniport with
/// SrbExtension NULL (this test miniport counts them), the others with their extension.
#[test]
fn withheld_srb_extensions_reach_the_miniport_as_null() {
    let p = port(quiet());
    let (a, _dev) = start(&p, bad::NONE, 2);
    let e = unsafe { &*(a.device_extension() as *const Ext) };
    let before = e.no_srb_extension.load(std::sync::atomic::Ordering::SeqCst);
    assert!(read(&a).is_success());
    assert_eq!(
        e.no_srb_extension.load(std::sync::atomic::Ordering::SeqCst),
        before
    );
    a.withhold_srb_extensions(true);
    assert!(read(&a).is_success());
    assert_eq!(
        e.no_srb_extension.load(std::sync::atomic::Ordering::SeqCst),
        before + 1
    );
    a.withhold_srb_extensions(false);
    assert!(read(&a).is_success());
    assert_eq!(
        e.no_srb_extension.load(std::sync::atomic::Ordering::SeqCst),
        before + 1
    );
}
