//! Recovery paths through the real stack that the other suites reach only by the way: a device
//! that vanishes with one notification only, reset SRBs against a vanished device and while
//! another reset runs, and the SRB functions Storport sends besides EXECUTE_SCSI.
//!
//! Each test asserts what Storport and an administrator see: SRB statuses, the system event
//! log, the violations the user-mode Storport reports.

use std::time::Duration;

use storport_sim::{PATIENCE, PortOptions, Request, function};
use storport_sys as ffi;
use vioblk_sim::device::{DeviceConfig, FaultMode};
use vioblk_sim::stack::{Stack, StackOptions};
use vioblk_sim::target::{ScsiRequest, ScsiTarget};

/// The driver's SURPRISE_REMOVAL event log code (src/hba/events.rs).
const SURPRISE_REMOVAL: u32 = 0x0013_0003;

fn start(intx: bool, device: DeviceConfig) -> Stack {
    Stack::start(StackOptions {
        device,
        intx,
        port: PortOptions {
            reset_grace: Duration::from_secs(5),
            ..PortOptions::default()
        },
        ..StackOptions::default()
    })
    .expect("the stack starts")
}

fn assert_clean(stack: &Stack) {
    let violations = stack.violations();
    assert!(
        violations.is_empty(),
        "Storport violations:\n{}",
        violations.join("\n")
    );
}

fn removals(stack: &Stack) -> usize {
    stack
        .adapter
        .event_log()
        .iter()
        .filter(|e| e.code == SURPRISE_REMOVAL)
        .count()
}

fn read10(lba: u32, blocks: u16) -> Vec<u8> {
    let mut c = vec![0x28, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    c[2..6].copy_from_slice(&lba.to_be_bytes());
    c[7..9].copy_from_slice(&blocks.to_be_bytes());
    c
}

/// A device that vanishes while nothing is outstanding, seen by the driver once only (the INTx
/// ISR reads all ones): the surprise removal is in the event log at once, before Storport's PnP
/// notifications, and once only after them. Requests and reset SRBs sent in between fail with
/// NO_DEVICE without touching the device.
#[test]
fn a_removal_seen_once_is_logged_at_once() {
    let stack = start(true, DeviceConfig::default());
    let c = stack.execute(ScsiRequest::data_in(read10(0, 8), 4096));
    assert_eq!(c.srb_status, ffi::SRB_STATUS_SUCCESS, "{c:?}");
    assert_eq!(removals(&stack), 0);

    stack.device.surprise_remove();
    stack.adapter.raise_interrupt(0);
    stack
        .adapter
        .wait_until("the removal in the event log", PATIENCE, || {
            removals(&stack) > 0
        })
        .unwrap_or_else(|e| panic!("{e}; the log: {:#x?}", stack.adapter.event_log()));
    assert_eq!(removals(&stack), 1, "{:#x?}", stack.adapter.event_log());

    let c = stack.execute(ScsiRequest::data_in(read10(0, 8), 4096));
    assert_eq!(c.status(), ffi::SRB_STATUS_NO_DEVICE, "read after removal");
    for reset in [function::RESET_LOGICAL_UNIT, function::RESET_DEVICE] {
        let c = stack.adapter.execute(Request::function(reset));
        assert_eq!(c.status(), ffi::SRB_STATUS_NO_DEVICE, "reset {reset:#x}");
    }

    // Storport's own notifications follow: they do not log the removal again.
    let (adapter, unit) = stack.adapter.surprise_remove();
    assert_eq!((adapter, unit), (Some(0), Some(0)));
    assert_eq!(removals(&stack), 1, "{:#x?}", stack.adapter.event_log());
    assert_clean(&stack);
}

/// SRB functions other than EXECUTE_SCSI: ABORT_COMMAND, PNP and POWER without a power
/// transition are completed SUCCESS; an unknown function (IO_CONTROL) INVALID_REQUEST; the
/// disk still reads afterwards.
#[test]
fn other_srb_functions() {
    let stack = start(false, DeviceConfig::default());
    for (f, expected) in [
        (function::ABORT_COMMAND, ffi::SRB_STATUS_SUCCESS),
        (function::PNP, ffi::SRB_STATUS_SUCCESS),
        (function::POWER, ffi::SRB_STATUS_SUCCESS),
        (function::IO_CONTROL, ffi::SRB_STATUS_INVALID_REQUEST),
    ] {
        let c = stack.adapter.execute(Request::function(f));
        assert_eq!(c.status(), expected, "function {f:#x}: {c:?}");
    }
    let c = stack.execute(ScsiRequest::data_in(read10(8, 8), 4096));
    assert_eq!(c.srb_status, ffi::SRB_STATUS_SUCCESS, "{c:?}");
    assert_clean(&stack);
}

/// Reset SRBs sent while a reset is already under way (the device lost a request, and keeps
/// the next ones slow): each is held or answered BUSY, none is lost, the lost request comes
/// back with BUS_RESET, and the disk works afterwards.
#[test]
fn resets_while_a_reset_runs() {
    for intx in [false, true] {
        let stack = start(intx, DeviceConfig::default());
        stack.device.arm_fault(FaultMode::LostRequest, 1);
        let lost = stack.adapter.submit(Request::data_in(&read10(16, 8), 4096));
        stack
            .adapter
            .wait_until("the lost request reached the device", PATIENCE, || {
                stack.device.faults_fired() == 1
            })
            .unwrap();
        let resets: Vec<_> = [
            function::RESET_LOGICAL_UNIT,
            function::RESET_DEVICE,
            function::RESET_LOGICAL_UNIT,
            function::RESET_BUS,
            function::RESET_DEVICE,
            function::RESET_LOGICAL_UNIT,
        ]
        .into_iter()
        .map(|f| (f, stack.adapter.submit(Request::function(f))))
        .collect();
        for (f, handle) in resets {
            let c = handle.wait();
            assert!(
                matches!(c.status(), ffi::SRB_STATUS_SUCCESS | ffi::SRB_STATUS_BUSY),
                "intx {intx}: reset {f:#x}: {c:?}"
            );
        }
        let c = lost.wait();
        assert_eq!(c.status(), ffi::SRB_STATUS_BUS_RESET, "intx {intx}: {c:?}");
        let c = stack.execute(ScsiRequest::data_in(read10(16, 8), 4096));
        assert_eq!(c.srb_status, ffi::SRB_STATUS_SUCCESS, "intx {intx}: {c:?}");
        assert_clean(&stack);
    }
}
