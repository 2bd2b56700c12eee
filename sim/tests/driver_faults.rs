//! A hostile or dying device (issue 10): the real driver on the user-mode Storport over the
//! device model, with many requests in flight when the device misbehaves.
//!
//! Each test names the confirmed defect it guards against. What must hold: nothing hangs (every
//! wait has a deadline whose expiry fails the test), every request completes exactly once with a
//! clean status (success with the right data, BUS_RESET, HARDWARE ERROR, NO_DEVICE after
//! removal), the device never writes into a request after it was completed, the disk serves I/O
//! again after recovery, and the user-mode Storport reports no violation (its watchdog included).
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use storport_sim::{Completion, PortOptions, Request, RequestHandle, function};
use storport_sys as ffi;
use vioblk_sim::device::{DeviceConfig, FaultMode, VirtioBlkDevice};
use vioblk_sim::stack::{Stack, StackOptions};

/// Sense key HARDWARE ERROR (SPC-4 table 51).
const HARDWARE_ERROR: u8 = 0x4;
/// The longest any scenario may take before it counts as hung.
const DEADLINE: Duration = Duration::from_secs(20);

#[derive(Clone, Copy, Debug)]
enum Interrupts {
    /// One MSI-X message per queue.
    MultiQueue,
    /// INTx: one queue behind the interrupt lock, completed in the ISR.
    Intx,
    /// One MSI-X message for everything: one queue, completed in a DPC.
    SingleMessage,
}

const ALL_MODES: [Interrupts; 3] = [
    Interrupts::MultiQueue,
    Interrupts::Intx,
    Interrupts::SingleMessage,
];

fn options(interrupts: Interrupts, queues: u16) -> StackOptions {
    StackOptions {
        device: DeviceConfig {
            num_queues: queues,
            ..DeviceConfig::default()
        },
        port: PortOptions {
            // Requests that must time out get a TimeOutValue of 1 s (500 ms here); the others 20 s.
            timeout_scale: 0.5,
            // Issue 10: no callback of the driver runs longer than 10 ms of CPU under any fault.
            // The watchdog charges CPU time (and stalls), so a loaded machine does not trip it.
            isr_budget: Duration::from_millis(10),
            dpc_budget: Duration::from_millis(10),
            raised_irql_budget: Duration::from_millis(10),
            reset_grace: Duration::from_secs(2),
            multi_tier_reset: true,
            reset_tier_wait: Duration::from_millis(500),
            ..PortOptions::default()
        },
        intx: matches!(interrupts, Interrupts::Intx),
        max_messages: matches!(interrupts, Interrupts::SingleMessage).then_some(1),
        ..StackOptions::default()
    }
}

fn start_with(
    interrupts: Interrupts,
    queues: u16,
    prepare: impl FnOnce(&VirtioBlkDevice),
) -> Stack {
    let stack = Stack::start_with(options(interrupts, queues), prepare).expect("the stack starts");
    // HwStorInitialize waits at most 1 ms for GET_ID and then goes on (the answer is taken later);
    // on a busy machine the device may take that request only now. A fault armed for "the next
    // request" must not land on it: wait until the device has taken it (unless the test armed
    // a fault before the start, which may be meant for it, or a fault has fired already).
    if !stack.device.fault_armed() && stack.device.faults_fired() == 0 {
        wait_for(&stack, "the device took the start-up GET_ID", |s| {
            s.device.counters().first().is_some_and(|c| c.get_ids >= 1)
        });
    }
    stack
}

/// Fails the test without tearing the stack down: a CPU thread stuck in the driver would make
/// the teardown (which joins the CPU threads) hang as well, so the process ends here.
fn hung(stack: &Stack, what: &str) -> ! {
    let log = stack.adapter.log();
    let tail = log[log.len().saturating_sub(20)..].join("\n");
    // Straight to the process's stderr: the test harness's capture of eprintln! is lost with
    // the process.
    let _ = std::io::Write::write_fmt(
        &mut std::io::stderr().lock(),
        format_args!("HUNG: {what}\nlast log lines:\n{tail}\n"),
    );
    std::process::exit(101);
}

fn assert_clean(stack: &Stack) {
    let violations = stack.violations();
    assert!(
        violations.is_empty(),
        "Storport violations:\n{}",
        violations.join("\n")
    );
    assert_eq!(
        stack.device.watch().hits(),
        0,
        "device writes after completion"
    );
}

fn rw10(opcode: u8, lba: u32, blocks: u16) -> Vec<u8> {
    let mut c = vec![opcode, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    c[2..6].copy_from_slice(&lba.to_be_bytes());
    c[7..9].copy_from_slice(&blocks.to_be_bytes());
    c
}

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| {
            ((i as u64).wrapping_mul(0x9E37) ^ seed.wrapping_mul(0x5BD1) ^ (i as u64 >> 9)) as u8
        })
        .collect()
}

fn read(lba: u32, timeout: u32) -> Request {
    Request::data_in(&rw10(0x28, lba, 8), 4096).timeout(timeout)
}

fn is_hardware_error(c: &Completion) -> bool {
    c.srb_status == ffi::SRB_STATUS_ERROR | ffi::SRB_STATUS_AUTOSENSE_VALID
        && c.scsi_status == ffi::SCSISTAT_CHECK_CONDITION
        && c.sense.len() >= 14
        && c.sense[2] & 0x0F == HARDWARE_ERROR
        && (c.sense[12], c.sense[13]) == (0x44, 0x00)
}

fn status(c: &Completion) -> u8 {
    c.srb_status & 0x3F
}

fn brief(c: &Completion) -> String {
    format!(
        "srb_status {:#04x} scsi_status {:#04x} sense {:02x?}",
        c.srb_status,
        c.scsi_status,
        &c.sense[..c.sense.len().min(14)]
    )
}

/// Writes a known 4 KiB pattern at each of `n` LBAs 8 apart from `base` (directly on the disk).
fn prepare_data(device: &VirtioBlkDevice, base: u32, n: u32) {
    for i in 0..n {
        let lba = base + 8 * i;
        device
            .write_disk(u64::from(lba) * 512, &pattern(u64::from(lba), 4096))
            .unwrap();
    }
}

/// Waits for every handle before `end`; a request that never comes back is a hang.
fn wait_all(stack: &Stack, handles: Vec<RequestHandle>, end: Instant) -> Vec<Completion> {
    let mut done = Vec::new();
    for h in handles {
        loop {
            if let Some(c) = h.wait_timeout(Duration::from_millis(20)) {
                done.push(c);
                break;
            }
            if Instant::now() > end {
                hung(stack, "a request never completed");
            }
        }
    }
    done
}

/// Submits `n` 4 KiB reads of the prepared data (on the submitting thread's CPU, so on one queue
/// with one queue per CPU message).
fn burst(stack: &Stack, base: u32, n: u32, timeout: u32) -> Vec<RequestHandle> {
    (0..n)
        .map(|i| stack.adapter.submit(read(base + 8 * i, timeout)))
        .collect()
}

/// Every completion of a burst over prepared data: the right data, or a clean failure.
fn check_burst(
    completions: &[Completion],
    base: u32,
    allowed_failure: impl Fn(&Completion) -> bool,
) {
    for (i, c) in completions.iter().enumerate() {
        let lba = base + 8 * i as u32;
        if status(c) == ffi::SRB_STATUS_SUCCESS {
            assert!(
                c.data == pattern(u64::from(lba), 4096),
                "wrong data at LBA {lba}"
            );
        } else {
            assert!(
                allowed_failure(c),
                "request {i} failed uncleanly: {}",
                brief(c)
            );
        }
    }
}

/// Reads until one succeeds with the right data (the class driver's retries); every failure on
/// the way must be clean. Then 32 more reads in flight must all succeed.
fn recovers(stack: &Stack, base: u32) {
    let end = Instant::now() + DEADLINE;
    loop {
        let h = stack.adapter.submit(read(base, 40));
        let c = wait_all(stack, vec![h], end).remove(0);
        if status(&c) == ffi::SRB_STATUS_SUCCESS {
            assert!(
                c.data == pattern(u64::from(base), 4096),
                "data after recovery"
            );
            break;
        }
        assert!(
            status(&c) == ffi::SRB_STATUS_BUS_RESET || is_hardware_error(&c),
            "a retry failed uncleanly: {}",
            brief(&c)
        );
        if Instant::now() > end {
            hung(stack, "the disk did not come back");
        }
        std::thread::yield_now();
    }
    let handles = burst(stack, base, 32, 40);
    let all = wait_all(stack, handles, end);
    check_burst(&all, base, |_| false);
}

/// Waits for `cond` before the deadline.
fn wait_for(stack: &Stack, what: &str, mut cond: impl FnMut(&Stack) -> bool) {
    let end = Instant::now() + DEADLINE;
    while !cond(stack) {
        if Instant::now() > end {
            hung(stack, what);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

// ------------------------------------------------------------------------------------------
// Confirmed 1: Queue::drain spun forever on a broken ring.

/// MSI-X, one queue (its own message and DPC), 32 reads in flight, and the device breaks the
/// used ring on the 5th: every request comes back and the disk recovers.
#[test]
fn broken_ring_with_32_in_flight_does_not_hang_the_queue_dpc() {
    for mode in [
        FaultMode::UsedIdxJump,
        FaultMode::UsedIdOutOfRange,
        FaultMode::DuplicateUsedId,
    ] {
        let stack = start_with(Interrupts::MultiQueue, 1, |d| prepare_data(d, 1024, 32));
        stack.device.arm_fault(mode, 5);
        let handles = burst(&stack, 1024, 32, 40);
        let done = wait_all(&stack, handles, Instant::now() + DEADLINE);
        assert_eq!(stack.device.faults_fired(), 1, "{mode:?} fired");
        check_burst(&done, 1024, |c| status(c) == ffi::SRB_STATUS_BUS_RESET);
        recovers(&stack, 1024);
        assert_clean(&stack);
    }
}

/// A used-index jump on the start-up GET_ID, then a message interrupt for queue 0: the DPC must
/// not loop on the broken ring, and the disk works.
#[test]
fn used_idx_jump_on_get_id_then_an_interrupt_does_not_hang() {
    let stack = start_with(Interrupts::MultiQueue, 2, |d| {
        prepare_data(d, 2048, 32);
        d.arm_fault(FaultMode::UsedIdxJump, 1);
    });
    wait_for(&stack, "the GET_ID was the victim", |s| {
        s.device.faults_fired() == 1
    });
    // Queue 0 is served by message 1.
    stack.adapter.raise_interrupt(1);
    recovers(&stack, 2048);
    assert_clean(&stack);
}

// ------------------------------------------------------------------------------------------
// Confirmed 2: a bad GET_ID completion broke queue 0 for good.

#[test]
fn bad_get_id_completion_leaves_every_queue_working() {
    for interrupts in ALL_MODES {
        for mode in [
            FaultMode::UsedIdxJump,
            FaultMode::UsedIdOutOfRange,
            FaultMode::DuplicateUsedId,
        ] {
            let stack = Arc::new(start_with(interrupts, 4, |d| {
                prepare_data(d, 4096, 16);
                d.arm_fault(mode, 1);
            }));
            wait_for(&stack, "the GET_ID was the victim", |s| {
                s.device.faults_fired() == 1
            });
            // Sixteen reads from sixteen threads (new threads are new CPUs: every queue).
            let handles: Vec<RequestHandle> = (0..16u32)
                .map(|i| {
                    let s = stack.clone();
                    std::thread::spawn(move || s.adapter.submit(read(4096 + 8 * i, 40)))
                        .join()
                        .unwrap()
                })
                .collect();
            let done = wait_all(&stack, handles, Instant::now() + DEADLINE);
            for (i, c) in done.iter().enumerate() {
                let lba = 4096 + 8 * i as u32;
                // On a loaded machine the GET_ID may complete after the driver stopped polling for
                // it; its duplicate then breaks the ring under the first requests, and the reset
                // hands them back (BUS_RESET, retried by the class driver). Never a HARDWARE
                // ERROR, and the retry succeeds.
                let c = if status(c) == ffi::SRB_STATUS_BUS_RESET {
                    let h = stack.adapter.submit(read(lba, 40));
                    wait_all(&stack, vec![h], Instant::now() + DEADLINE).remove(0)
                } else {
                    c.clone()
                };
                assert_eq!(
                    status(&c),
                    ffi::SRB_STATUS_SUCCESS,
                    "{interrupts:?} {mode:?}: read {i}: {}",
                    brief(&c)
                );
                assert!(c.data == pattern(u64::from(lba), 4096));
            }
            assert_clean(&stack);
        }
    }
}

/// The driver's RESET_STARTED event log code (src/hba/events.rs); its unique id is the cause
/// (4: a broken ring).
const LOG_RESET_STARTED: u32 = 0x0013_0006;

/// The same bad GET_ID completion from a device that also ignores the reset HwStorInitialize
/// writes to repair queue 0 (the reset at FindAdapter, on a device still at status 0, is
/// ignored harmlessly): the adapter still starts, the reset machine takes over from
/// HwStorPassiveInitialize (a broken-ring reset in the event log), and every read succeeds.
#[test]
fn bad_get_id_completion_and_an_ignored_reset_at_start() {
    for interrupts in ALL_MODES {
        let stack = start_with(interrupts, 2, |d| {
            prepare_data(d, 4096, 32);
            d.arm_fault(FaultMode::UsedIdxJump, 1);
            d.ignore_resets(2);
        });
        wait_for(&stack, "the GET_ID was the victim", |s| {
            s.device.faults_fired() == 1
        });
        wait_for(&stack, "the broken-ring reset is logged", |s| {
            s.adapter
                .event_log()
                .iter()
                .any(|e| e.code == LOG_RESET_STARTED && e.unique_id == 4)
        });
        recovers(&stack, 4096);
        assert_clean(&stack);
    }
}

// ------------------------------------------------------------------------------------------
// Confirmed 3: a reset the device does not acknowledge still completed requests.

/// The device holds a read for 1.5 s and ignores the first reset; Storport resets the bus with
/// the read outstanding. The driver must not hand the read back while the device can still
/// write into it: it cuts the device's DMA (Bus Master Enable) first, and logs it.
#[test]
fn unacknowledged_reset_cuts_dma_before_completing() {
    for interrupts in ALL_MODES {
        let stack = start_with(interrupts, 1, |d| prepare_data(d, 512, 32));
        stack.device.set_slow_ms(1500);
        stack.device.arm_fault(FaultMode::Slow, 1);
        let handles = burst(&stack, 512, 32, 40);
        wait_for(&stack, "the slow request reached the device", |s| {
            s.device.faults_fired() == 1
        });
        stack.device.ignore_resets(1);
        assert!(stack.adapter.reset_bus());
        let done = wait_all(&stack, handles, Instant::now() + DEADLINE);
        check_burst(&done, 512, |c| status(c) == ffi::SRB_STATUS_BUS_RESET);
        assert!(
            done.iter().any(|c| status(c) == ffi::SRB_STATUS_BUS_RESET),
            "{interrupts:?}: the held read came back with BUS_RESET"
        );
        // The device's hold ends after the completion; it must then find its DMA cut.
        wait_for(&stack, "the device's hold ended", |s| {
            s.device.holds_ended() == 1
        });
        assert_eq!(
            stack.device.watch().hits(),
            0,
            "{interrupts:?}: the device wrote into a request already completed \
             (virtio-win #1326): {:?}",
            stack.violations()
        );
        assert!(
            stack
                .adapter
                .log()
                .iter()
                .any(|l| l.contains("code 0x130001")),
            "{interrupts:?}: the unacknowledged reset is logged"
        );
        recovers(&stack, 512);
        assert_clean(&stack);
    }
}

/// The negative of the rule above: the device model does report a write into a completed
/// request. With an orderly reset the device stops at once, so the watch stays quiet; a write
/// into memory the port freed is recorded.
#[test]
fn the_device_model_reports_writes_into_completed_requests() {
    let stack = start_with(Interrupts::MultiQueue, 1, |d| prepare_data(d, 0, 1));
    let c = stack.adapter.execute(read(0, 40));
    assert_eq!(status(&c), ffi::SRB_STATUS_SUCCESS);
    assert_eq!(stack.device.watch().hits(), 0);
    assert!(stack.violations().is_empty());
    // A block of guest memory the port allocated for a request and freed at its completion: the
    // most recently freed data buffer is at the first address the port hands out again, which a
    // second request of the same size reuses; a device write there between the two is a
    // violation. Find one by asking the watch about every 4 KiB block of the region.
    let mem = stack.device.guest_memory();
    let mut found = false;
    for block in 0..(mem.len as u64 / 4096) {
        let addr = mem.guest_base + block * 4096;
        if !stack.device.watch().device_write(addr, 1) {
            found = true;
            break;
        }
    }
    assert!(found, "a freed request block is watched");
    assert!(
        stack
            .violations()
            .iter()
            .any(|v| v.contains("memory of a request already completed")),
        "{:?}",
        stack.violations()
    );
}

/// The driver's event log codes (src/hba/events.rs).
const LOG_RESET_NOT_ACKNOWLEDGED: u32 = 0x0013_0001;
const LOG_DEVICE_GIVEN_UP: u32 = 0x0013_0002;

/// Whether a write of PCI configuration space clears (`false`) or sets (`true`) Bus Master
/// Enable (command register, offset 4, bit 2).
fn writes_bus_master(offset: u32, bytes: &[u8], enabled: bool) -> bool {
    offset == 4 && bytes.first().is_some_and(|b| (b & 0x04 != 0) == enabled)
}

/// As above, on a machine where Bus Master Enable cannot be cleared (Storport's
/// StorPortSetBusDataByOffset fails): with no way to stop the device's DMA, the driver keeps
/// the held read rather than complete it while the device may still write into it, logs the
/// unacknowledged reset, and asks the device to reset again until it does; then every read
/// comes back (BUS_RESET or its data) and the disk works. A stop the device ignores, whose DMA
/// cannot be cut either, fails (ScsiStopAdapter Unsuccessful); the restart brings it back.
#[test]
fn a_reset_whose_dma_cannot_be_cut_keeps_the_requests_until_the_device_resets() {
    let stack = start_with(Interrupts::MultiQueue, 1, |d| prepare_data(d, 512, 32));
    stack
        .adapter
        .refuse_bus_data_writes(Some(Box::new(|offset, bytes: &[u8]| {
            writes_bus_master(offset, bytes, false)
        })));
    stack.device.set_slow_ms(1500);
    stack.device.arm_fault(FaultMode::Slow, 1);
    let handles = burst(&stack, 512, 32, 40);
    wait_for(&stack, "the slow request reached the device", |s| {
        s.device.faults_fired() == 1
    });
    stack.device.ignore_resets(1);
    assert!(stack.adapter.reset_bus());
    let done = wait_all(&stack, handles, Instant::now() + DEADLINE);
    check_burst(&done, 512, |c| status(c) == ffi::SRB_STATUS_BUS_RESET);
    wait_for(&stack, "the device's hold ended", |s| {
        s.device.holds_ended() == 1
    });
    assert!(
        !stack.device.dma_cut(),
        "the refused write reached the device"
    );
    let log = stack.adapter.log();
    assert!(
        log.iter()
            .any(|l| l.contains("StorPortSetBusDataByOffset(0x4") && l.ends_with("refused")),
        "the driver tried to clear Bus Master Enable"
    );
    assert!(
        stack
            .adapter
            .event_log()
            .iter()
            .any(|e| e.code == LOG_RESET_NOT_ACKNOWLEDGED),
        "the unacknowledged reset is logged"
    );
    recovers(&stack, 512);
    assert_clean(&stack);

    stack.device.ignore_resets(1);
    assert_eq!(
        stack.adapter.stop(),
        Some(1),
        "ScsiStopAdapter: the DMA could not be cut"
    );
    assert!(!stack.device.dma_cut());
    stack.adapter.restart().expect("restart");
    recovers(&stack, 512);
    assert_clean(&stack);
}

/// A machine where Bus Master Enable, once cleared, cannot be set again: after a reset the
/// device ignored (its DMA cut, the requests handed back), the device acknowledges a later one
/// but cannot be given memory access back. The driver gives up on it (logged) and fails reads
/// at once with HARDWARE ERROR rather than send them to a device that cannot reach them, until a
/// later bus reset finds Bus Master Enable settable again and brings the disk back. A restart
/// after a stop that had to cut the DMA fails the same way (ScsiSetRunningConfig and
/// ScsiRestartAdapter Unsuccessful).
#[test]
fn a_device_whose_dma_cannot_be_restored_is_given_up_until_a_later_reset() {
    let stack = start_with(Interrupts::MultiQueue, 1, |d| prepare_data(d, 512, 32));
    let refuse_enable = || -> storport_sim::BusDataRefusal {
        Box::new(|offset, bytes: &[u8]| writes_bus_master(offset, bytes, true))
    };
    stack.adapter.refuse_bus_data_writes(Some(refuse_enable()));
    stack.device.set_slow_ms(1500);
    stack.device.arm_fault(FaultMode::Slow, 1);
    let handles = burst(&stack, 512, 32, 40);
    wait_for(&stack, "the slow request reached the device", |s| {
        s.device.faults_fired() == 1
    });
    stack.device.ignore_resets(1);
    assert!(stack.adapter.reset_bus());
    let done = wait_all(&stack, handles, Instant::now() + DEADLINE);
    check_burst(&done, 512, |c| status(c) == ffi::SRB_STATUS_BUS_RESET);
    wait_for(&stack, "the device was given up on", |s| {
        s.adapter
            .event_log()
            .iter()
            .any(|e| e.code == LOG_DEVICE_GIVEN_UP)
    });
    assert!(stack.device.dma_cut(), "Bus Master Enable stays cleared");
    let c = stack.adapter.execute(read(512, 40));
    assert!(is_hardware_error(&c), "{}", brief(&c));

    stack.adapter.refuse_bus_data_writes(None);
    assert!(stack.adapter.reset_bus());
    recovers(&stack, 512);
    assert!(!stack.device.dma_cut());
    assert_clean(&stack);

    stack.adapter.refuse_bus_data_writes(Some(refuse_enable()));
    stack.device.ignore_resets(1);
    assert_eq!(
        stack.adapter.stop(),
        Some(0),
        "ScsiStopAdapter cuts the DMA"
    );
    assert!(stack.device.dma_cut());
    assert!(stack.adapter.restart().is_err(), "restarted without DMA");
    assert!(
        stack
            .adapter
            .log()
            .iter()
            .any(|l| l == "AdapterControl(ScsiSetRunningConfig) = Some(1)"),
        "{:?}",
        stack.adapter.log()
    );
    // With ScsiSetRunningConfig failed, ScsiRestartAdapter tries Bus Master Enable itself (the
    // fallback for a Storport that skips ScsiSetRunningConfig, see driver_hibernate), which the
    // user-mode Storport reports; nothing else is.
    let violations = stack.port.violations();
    assert!(
        !violations.is_empty()
            && violations
                .iter()
                .all(|v| v.rule == storport_sim::Rule::AdapterControl
                    && v.message.contains("ScsiRestartAdapter")),
        "{violations:#?}"
    );
}

/// The driver's RESET_COMPLETED event log code (src/hba/events.rs; unique id: the cause).
const LOG_RESET_COMPLETED: u32 = 0x0013_0007;

/// How the first reset of [`a_reset_asked_for_while_the_device_restarts_runs_after_it`] starts,
/// and the cause id the event log names for it.
#[derive(Clone, Copy, Debug)]
enum FirstReset {
    Bus,
    LogicalUnitSrb,
    DeviceSrb,
    NeedsReset,
    BrokenRing,
}

/// Storport resets the bus while the reset machine is bringing the device back (after a reset
/// the device first ignored, so its DMA was cut): the reset in progress serves the requests it
/// handed back, and the one asked for meanwhile runs when it is done, with the cause of the
/// first (the event log shows the reset started and completed twice), whatever started the
/// first one. The moment is exact: the bus reset is sent from inside the restart, when the
/// driver sets Bus Master Enable again.
#[test]
fn a_reset_asked_for_while_the_device_restarts_runs_after_it() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Mutex, mpsc};
    for (first, cause) in [
        (FirstReset::Bus, 3),
        (FirstReset::LogicalUnitSrb, 1),
        (FirstReset::DeviceSrb, 2),
        (FirstReset::NeedsReset, 5),
        (FirstReset::BrokenRing, 4),
    ] {
        let stack = start_with(Interrupts::MultiQueue, 1, |d| prepare_data(d, 512, 32));
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let done_rx = Mutex::new(done_rx);
        let armed = AtomicBool::new(true);
        stack
            .adapter
            .refuse_bus_data_writes(Some(Box::new(move |offset, bytes: &[u8]| {
                if writes_bus_master(offset, bytes, true) && armed.swap(false, Ordering::AcqRel) {
                    let _ = go_tx.send(());
                    let _ = done_rx.lock().unwrap().recv_timeout(DEADLINE);
                }
                false
            })));
        std::thread::scope(|scope| {
            let adapter = &stack.adapter;
            scope.spawn(move || {
                if go_rx.recv_timeout(DEADLINE).is_ok() {
                    assert!(adapter.reset_bus());
                    let _ = done_tx.send(());
                }
            });
            stack.device.ignore_resets(1);
            let mut handles = Vec::new();
            match first {
                FirstReset::NeedsReset => stack.device.arm_fault(FaultMode::NeedsReset, 1),
                FirstReset::BrokenRing => stack.device.arm_fault(FaultMode::UsedIdxJump, 1),
                _ => {
                    stack.device.set_slow_ms(1500);
                    stack.device.arm_fault(FaultMode::Slow, 1);
                }
            }
            handles.extend(burst(&stack, 512, 8, 40));
            wait_for(&stack, "the fault fired", |s| s.device.faults_fired() == 1);
            match first {
                FirstReset::Bus => assert!(stack.adapter.reset_bus()),
                FirstReset::LogicalUnitSrb => handles.push(
                    stack
                        .adapter
                        .submit(Request::function(function::RESET_LOGICAL_UNIT)),
                ),
                FirstReset::DeviceSrb => handles.push(
                    stack
                        .adapter
                        .submit(Request::function(function::RESET_DEVICE)),
                ),
                FirstReset::NeedsReset | FirstReset::BrokenRing => {}
            }
            let done = wait_all(&stack, handles, Instant::now() + DEADLINE);
            for c in &done {
                assert!(
                    matches!(
                        status(c),
                        ffi::SRB_STATUS_SUCCESS | ffi::SRB_STATUS_BUS_RESET
                    ),
                    "{first:?}: {}",
                    brief(c)
                );
            }
            let resets = |s: &Stack| -> Vec<(u32, u32)> {
                s.adapter
                    .event_log()
                    .iter()
                    .filter(|e| matches!(e.code, LOG_RESET_STARTED | LOG_RESET_COMPLETED))
                    .map(|e| (e.code, e.unique_id))
                    .collect()
            };
            wait_for(&stack, "the second reset completed", |s| {
                resets(s).len() >= 4
            });
            assert_eq!(
                resets(&stack),
                [
                    (LOG_RESET_STARTED, cause),
                    (LOG_RESET_COMPLETED, cause),
                    (LOG_RESET_STARTED, cause),
                    (LOG_RESET_COMPLETED, cause),
                ],
                "{first:?}"
            );
        });
        recovers(&stack, 512);
        assert_clean(&stack);
    }
}

// ------------------------------------------------------------------------------------------
// Confirmed 4: resets polled 1000 x 1 ms at raised IRQL (ISR, DPC, HwStorResetBus, stop).

/// DEVICE_NEEDS_RESET from a device that ignores the first reset: the driver's ISR (INTx), its
/// DPCs and HwStorResetBus must stay within the watchdog budgets (the old driver polled for a
/// second in the ISR and in the reset DPC).
#[test]
fn reset_of_a_device_that_does_not_acknowledge_never_waits_in_a_callback() {
    for interrupts in ALL_MODES {
        // Started through `start_with`, which waits for the device to take GET_ID: the
        // NeedsReset armed next is meant for a read, not for a GET_ID the device took late.
        let stack = start_with(interrupts, 2, |d| prepare_data(d, 256, 32));
        stack.device.ignore_resets(1);
        stack.device.arm_fault(FaultMode::NeedsReset, 1);
        let handles = burst(&stack, 256, 8, 40);
        let done = wait_all(&stack, handles, Instant::now() + DEADLINE);
        check_burst(&done, 256, |c| status(c) == ffi::SRB_STATUS_BUS_RESET);
        recovers(&stack, 256);
        // No callback of the driver waited for the device (the watchdog is quiet).
        assert_clean(&stack);
        // Stop on a device that ignores its reset: the DMA is cut instead of a long poll.
        stack.device.ignore_resets(1);
        assert_eq!(stack.adapter.stop(), Some(0), "{interrupts:?}: stop");
        assert!(stack.device.dma_cut(), "{interrupts:?}: DMA cut at stop");
        stack.adapter.restart().expect("restart");
        // Restart waits at most 1 ms at DIRQL for the device's reset; on a loaded machine the
        // reset machine finishes it and sets Bus Master Enable again a little later.
        wait_for(&stack, "DMA back after restart", |s| !s.device.dma_cut());
        recovers(&stack, 256);
        assert_clean(&stack);
    }
}

// ------------------------------------------------------------------------------------------
// Confirmed 5: surprise removal (all-ones reads) was not recognised.

/// The device vanishes with 32 reads in flight on one queue: they time out, Storport's reset
/// finds all ones, and every request (outstanding and new) fails with NO_DEVICE.
#[test]
fn surprise_removal_fails_requests_with_no_device() {
    for interrupts in ALL_MODES {
        let stack = start_with(interrupts, 1, |d| prepare_data(d, 128, 32));
        stack.device.set_slow_ms(60_000);
        stack.device.arm_fault(FaultMode::Slow, 1);
        // A 1 s TimeOutValue (500 ms scaled): Storport's reset comes quickly.
        let handles = burst(&stack, 128, 32, 1);
        wait_for(&stack, "the slow request reached the device", |s| {
            s.device.faults_fired() == 1
        });
        stack.device.surprise_remove();
        let done = wait_all(&stack, handles, Instant::now() + DEADLINE);
        for (i, c) in done.iter().enumerate() {
            let s = status(c);
            assert!(
                s == ffi::SRB_STATUS_NO_DEVICE || (i > 0 && s == ffi::SRB_STATUS_SUCCESS),
                "{interrupts:?}: request {i}: {}",
                brief(&c.clone())
            );
        }
        assert_eq!(status(&done[0]), ffi::SRB_STATUS_NO_DEVICE);
        // New requests fail at once.
        let c = stack.adapter.execute(read(128, 40));
        assert_eq!(
            status(&c),
            ffi::SRB_STATUS_NO_DEVICE,
            "{interrupts:?}: new request"
        );
        assert_clean(&stack);
    }
}

/// INTx: a vanished device's ISR status reads 0xFF (both bits): the ISR must not claim the
/// interrupt nor reset in a loop, and outstanding requests fail with NO_DEVICE at once.
#[test]
fn intx_isr_recognises_all_ones() {
    let stack = start_with(Interrupts::Intx, 1, |d| prepare_data(d, 64, 8));
    stack.device.set_slow_ms(60_000);
    stack.device.arm_fault(FaultMode::Slow, 1);
    let handles = burst(&stack, 64, 8, 40);
    wait_for(&stack, "the slow request reached the device", |s| {
        s.device.faults_fired() == 1
    });
    stack.device.surprise_remove();
    stack.adapter.raise_interrupt(0);
    let done = wait_all(&stack, handles, Instant::now() + DEADLINE);
    assert!(
        done.iter().all(|c| matches!(
            status(c),
            ffi::SRB_STATUS_NO_DEVICE | ffi::SRB_STATUS_SUCCESS
        )),
        "every request completed, failed ones with NO_DEVICE"
    );
    assert_eq!(status(&done[0]), ffi::SRB_STATUS_NO_DEVICE);
    assert!(
        !stack.adapter.log().iter().any(|l| l.contains("timed out")),
        "no Storport timeout was needed"
    );
    assert_clean(&stack);
}

/// The PnP surprise-removal sequence: ScsiAdapterSurpriseRemoval and ScsiUnitSurpriseRemoval are
/// supported and fail what is outstanding with NO_DEVICE; the remove (stop) succeeds at once.
#[test]
fn pnp_surprise_removal_sequence() {
    for interrupts in ALL_MODES {
        let stack = start_with(interrupts, 2, |d| prepare_data(d, 32, 16));
        stack.device.set_slow_ms(60_000);
        stack.device.arm_fault(FaultMode::Slow, 1);
        let handles = burst(&stack, 32, 16, 40);
        wait_for(&stack, "the slow request reached the device", |s| {
            s.device.faults_fired() == 1
        });
        stack.device.surprise_remove();
        let (adapter, unit) = stack.adapter.surprise_remove();
        assert_eq!(
            adapter,
            Some(0),
            "{interrupts:?}: ScsiAdapterSurpriseRemoval"
        );
        assert_eq!(unit, Some(0), "{interrupts:?}: ScsiUnitSurpriseRemoval");
        let done = wait_all(&stack, handles, Instant::now() + DEADLINE);
        assert_eq!(status(&done[0]), ffi::SRB_STATUS_NO_DEVICE);
        assert_clean(&stack);
    }
}

// ------------------------------------------------------------------------------------------
// Confirmed 6 and 7: LU and device resets did nothing; ResetDetected lacked its PathId.

/// A request the device lost, then SRB_FUNCTION_RESET_LOGICAL_UNIT (or RESET_DEVICE): the reset
/// completes the lost request (BUS_RESET) before it completes itself, long before the lost
/// request's own timeout; then ResetDetected names path 0.
#[test]
fn lu_and_device_resets_complete_what_is_outstanding() {
    for interrupts in ALL_MODES {
        for reset in [function::RESET_LOGICAL_UNIT, function::RESET_DEVICE] {
            let stack = start_with(interrupts, 1, |d| prepare_data(d, 300, 32));
            stack.device.arm_fault(FaultMode::LostRequest, 3);
            let handles = burst(&stack, 300, 32, 40);
            // Every other read of the burst served and back (none waiting to be sent again
            // after a BUSY): then the one outstanding request is the lost one, and "nothing
            // outstanding when the reset SRB is back" says the reset handed it back, with no
            // request Storport sent after the reset began to blur it.
            let reads = |s: &Stack| s.device.counters().iter().map(|c| c.reads).sum::<u64>();
            let end = Instant::now() + DEADLINE;
            while !(stack.device.faults_fired() == 1
                && reads(&stack) == 32
                && stack.adapter.outstanding() == 1)
            {
                if Instant::now() > end {
                    hung(
                        &stack,
                        &format!(
                            "the burst served but for the lost request: fault fired {}, \
                             reads served {}, outstanding {}",
                            stack.device.faults_fired(),
                            reads(&stack),
                            stack.adapter.outstanding()
                        ),
                    );
                }
                std::thread::yield_now();
            }
            let c = stack.adapter.execute(Request::function(reset).timeout(40));
            assert_eq!(
                status(&c),
                ffi::SRB_STATUS_SUCCESS,
                "{interrupts:?} {reset:#x}: the reset SRB"
            );
            // Everything is back by the time the reset SRB is: no waiting for the 20 s timeout.
            assert_eq!(stack.adapter.outstanding(), 0, "{interrupts:?} {reset:#x}");
            let done = wait_all(&stack, handles, Instant::now() + DEADLINE);
            check_burst(&done, 300, |c| status(c) == ffi::SRB_STATUS_BUS_RESET);
            // The lost one (the third the device took, whichever that was) came back.
            assert!(
                done.iter().any(|c| status(c) == ffi::SRB_STATUS_BUS_RESET),
                "{interrupts:?} {reset:#x}: the lost request"
            );
            assert!(
                stack
                    .adapter
                    .log()
                    .iter()
                    .any(|l| l == "ResetDetected(path 0)"),
                "{interrupts:?}: ResetDetected with its PathId"
            );
            recovers(&stack, 300);
            assert_clean(&stack);
        }
    }
}

/// Storport's multi-tier reset after a timeout: the LU reset SRB already brings the lost request
/// back, so HwStorResetBus is not needed.
#[test]
fn a_timeout_is_recovered_by_the_lu_reset_tier() {
    for interrupts in ALL_MODES {
        let stack = start_with(interrupts, 1, |d| prepare_data(d, 700, 32));
        stack.device.arm_fault(FaultMode::LostRequest, 1);
        let h = stack.adapter.submit(read(700, 1));
        let done = wait_all(&stack, vec![h], Instant::now() + DEADLINE);
        assert_eq!(
            status(&done[0]),
            ffi::SRB_STATUS_BUS_RESET,
            "{interrupts:?}"
        );
        wait_for(&stack, "the LU reset tier finished", |s| {
            s.adapter
                .log()
                .iter()
                .any(|l| l.contains("SRB_FUNCTION_RESET_LOGICAL_UNIT completed"))
        });
        let log = stack.adapter.log();
        assert!(
            log.iter()
                .any(|l| l.contains("SRB_FUNCTION_RESET_LOGICAL_UNIT completed with Some(1)")),
            "{interrupts:?}: {log:?}"
        );
        assert!(!log.iter().any(|l| l.contains("HwStorResetBus")), "{log:?}");
        recovers(&stack, 700);
        assert_clean(&stack);
    }
}

// ------------------------------------------------------------------------------------------
// Confirmed 8: the queue DPC had no bound on its work per run.

/// 128 completions pile up before the first interrupt: one DPC (or ISR) run completes at most
/// 64 of them and leaves the rest to the next run.
#[test]
fn one_dpc_run_completes_a_bounded_number_of_requests() {
    for interrupts in ALL_MODES {
        // With chained descriptors (VIOBLK_SIM_FEATURES_OFF=indirect) a read takes three of
        // the 128 ring entries the driver uses: only 40 fit while the interrupts are held.
        let n = if vioblk_sim::device::features_off_from_env()
            & vioblk_sim::device::features::INDIRECT_DESC
            != 0
        {
            40u32
        } else {
            128
        };
        let stack = start_with(interrupts, 1, |d| prepare_data(d, 0, n));
        // A GET_ID the device answered after HwStorInitialize stopped polling keeps its ring
        // entry until a drain takes the answer: one read first (its completion comes after
        // that answer on the one used ring), so that all 128 entries are free.
        let first = stack.adapter.submit(read(0, 40));
        let first = wait_all(&stack, vec![first], Instant::now() + DEADLINE).remove(0);
        assert_eq!(
            status(&first),
            ffi::SRB_STATUS_SUCCESS,
            "{interrupts:?}: first read"
        );
        stack.device.hold_interrupts(true);
        let handles: Vec<RequestHandle> = (0..n)
            .map(|i| stack.adapter.submit(read(8 * i, 40)))
            .collect();
        wait_for(&stack, "the device served every read", |s| {
            // The first read, then the n.
            s.device.counters().iter().map(|c| c.reads).sum::<u64>() > u64::from(n)
        });
        stack.device.hold_interrupts(false);
        let done = wait_all(&stack, handles, Instant::now() + DEADLINE);
        check_burst(&done, 0, |_| false);
        let most = stack.adapter.max_completions_per_run();
        assert!(
            (1..=64).contains(&most),
            "{interrupts:?}: {most} completions in one run"
        );
        assert_clean(&stack);
    }
}

// ------------------------------------------------------------------------------------------
// Confirmed 9: a device that can carry no request, or a capacity of u64::MAX, was a disk.

#[test]
fn a_device_that_can_serve_no_request_is_not_a_disk() {
    let refused = |config: DeviceConfig| {
        Stack::start(StackOptions {
            device: config,
            ..StackOptions::default()
        })
        .err()
    };
    // A queue of 2 leaves no descriptor for data (header and status take two).
    assert!(
        refused(DeviceConfig {
            max_queue_size: 2,
            features: Some(
                vioblk_sim::device::features::DEFAULT
                    & !vioblk_sim::device::features::INDIRECT_DESC
            ),
            ..DeviceConfig::default()
        })
        .is_some(),
        "queue size 2 without indirect descriptors"
    );
    // A queue of 3 (not a power of two): the driver may use 2, which leaves no descriptor for
    // data, not even in an indirect table (a chain is at most the queue size long, 2.7.5.3.1).
    assert!(
        refused(DeviceConfig {
            max_queue_size: 3,
            ..DeviceConfig::default()
        })
        .is_some(),
        "queue size 3"
    );
    // size_max 1: 4096 segments per page.
    assert!(
        refused(DeviceConfig {
            size_max: 1,
            ..DeviceConfig::default()
        })
        .is_some(),
        "size_max 1"
    );
    // Negative: the smallest usable devices are still disks, and serve I/O.
    for config in [
        DeviceConfig {
            max_queue_size: 4,
            features: Some(
                vioblk_sim::device::features::DEFAULT
                    & !vioblk_sim::device::features::INDIRECT_DESC,
            ),
            ..DeviceConfig::default()
        },
        DeviceConfig {
            size_max: 4096,
            ..DeviceConfig::default()
        },
    ] {
        let stack = Stack::start(StackOptions {
            device: config.clone(),
            ..StackOptions::default()
        })
        .unwrap_or_else(|e| panic!("{config:?}: {e}"));
        stack.device.write_disk(0, &pattern(0, 4096)).unwrap();
        let c = stack.adapter.execute(read(0, 40));
        assert_eq!(status(&c), ffi::SRB_STATUS_SUCCESS, "{config:?}");
        assert!(c.data == pattern(0, 4096));
        assert_clean(&stack);
    }
}

#[test]
fn a_capacity_of_u64_max_is_refused() {
    // At start: not a disk.
    let started = Stack::start_with(StackOptions::default(), |d| {
        d.announce_capacity(u64::MAX);
    });
    assert!(started.is_err(), "a disk of u64::MAX sectors was started");
    // At run time: the change is refused and logged; the disk keeps its size.
    let stack = Stack::start(StackOptions::default()).unwrap();
    let sectors = DeviceConfig::default().capacity_sectors;
    stack.device.announce_capacity(u64::MAX);
    wait_for(&stack, "the change was seen", |s| {
        s.adapter.log().iter().any(|l| l.contains("code 0x130004"))
    });
    let rc = stack
        .adapter
        .execute(Request::data_in(&[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], 8));
    assert_eq!(status(&rc), ffi::SRB_STATUS_SUCCESS, "{}", brief(&rc));
    assert_eq!(
        rc.data[..4],
        u32::try_from(sectors - 1).unwrap().to_be_bytes()
    );
    // Negative: a real resize is accepted.
    stack.device.resize(sectors / 2).unwrap();
    wait_for(&stack, "the resize was seen", |s| {
        s.adapter
            .log()
            .iter()
            .any(|l| l.starts_with("BusChangeDetected"))
    });
    assert_clean(&stack);
}

// ------------------------------------------------------------------------------------------
// Every request fault, in every interrupt mode, at start-up (the GET_ID), at queue depth 1 after
// the disk sat idle, and with 32 requests in flight on one queue.

#[derive(Clone, Copy, Debug)]
enum When {
    /// The start-up GET_ID is the victim.
    StartUp,
    /// One request at a time, the disk idle before.
    QueueDepth1,
    /// The 5th of 32 requests in flight on one queue.
    Burst32,
}

/// Whether a failure is a clean one for `mode`: a request the device mishandled fails with
/// HARDWARE ERROR (a completion the driver can see is wrong) or comes back with BUS_RESET (the
/// device was reset under it); nothing else.
fn clean_failure(c: &Completion) -> bool {
    status(c) == ffi::SRB_STATUS_BUS_RESET || is_hardware_error(c)
}

fn fault_matrix(interrupts: Interrupts) {
    for mode in FaultMode::ALL {
        for when in [When::StartUp, When::QueueDepth1, When::Burst32] {
            let stack = start_with(interrupts, 2, |d| {
                prepare_data(d, 8192, 32);
                d.set_slow_ms(100);
                if let When::StartUp = when {
                    d.arm_fault(mode, 1);
                }
            });
            match when {
                When::StartUp => {}
                When::QueueDepth1 => {
                    stack.device.arm_fault(mode, 1);
                    // TimeOutValue 1 s (500 ms scaled): a lost request is timed out quickly.
                    let h = stack.adapter.submit(read(8192, 1));
                    let done = wait_all(&stack, vec![h], Instant::now() + DEADLINE);
                    check_burst(&done, 8192, clean_failure);
                }
                When::Burst32 => {
                    stack.device.arm_fault(mode, 5);
                    let handles = burst(&stack, 8192, 32, 1);
                    let done = wait_all(&stack, handles, Instant::now() + DEADLINE);
                    check_burst(&done, 8192, clean_failure);
                }
            }
            wait_for(&stack, "the fault fired", |s| s.device.faults_fired() == 1);
            recovers(&stack, 8192);
            let violations = stack.violations();
            assert!(
                violations.is_empty() && stack.device.watch().hits() == 0,
                "{interrupts:?} {mode:?} {when:?}:\n{}",
                violations.join("\n")
            );
        }
    }
}

#[test]
fn every_fault_at_start_up_depth_one_and_in_a_burst_multi_queue() {
    fault_matrix(Interrupts::MultiQueue);
}

#[test]
fn every_fault_at_start_up_depth_one_and_in_a_burst_intx() {
    fault_matrix(Interrupts::Intx);
}

#[test]
fn every_fault_at_start_up_depth_one_and_in_a_burst_single_message() {
    fault_matrix(Interrupts::SingleMessage);
}

// ------------------------------------------------------------------------------------------
// A crash-dump stack (polled, no DPC, no timer): a broken ring is reset by the polled ISR.

#[test]
fn a_dump_stack_recovers_from_a_broken_ring() {
    for mode in [
        FaultMode::UsedIdxJump,
        FaultMode::UsedIdOutOfRange,
        FaultMode::DuplicateUsedId,
    ] {
        let stack = Stack::start_with(
            StackOptions {
                dump: true,
                ..StackOptions::default()
            },
            |d| prepare_data(d, 64, 4),
        )
        .expect("the dump stack starts");
        // The fault is meant for the read, not for a GET_ID the device took late.
        wait_for(&stack, "the device took the start-up GET_ID", |s| {
            s.device.counters().first().is_some_and(|c| c.get_ids >= 1)
        });
        stack.device.arm_fault(mode, 1);
        let h = stack.adapter.submit(read(64, 40));
        let victim = wait_all(&stack, vec![h], Instant::now() + DEADLINE).remove(0);
        assert!(
            status(&victim) == ffi::SRB_STATUS_BUS_RESET
                || (status(&victim) == ffi::SRB_STATUS_SUCCESS && victim.data == pattern(64, 4096)),
            "{mode:?}: victim {}",
            brief(&victim)
        );
        // The next requests are served (the old driver failed them with HARDWARE ERROR until the
        // stack was torn down).
        for i in 0..4u32 {
            let h = stack.adapter.submit(read(64 + 8 * i, 40));
            let c = wait_all(&stack, vec![h], Instant::now() + DEADLINE).remove(0);
            assert_eq!(
                status(&c),
                ffi::SRB_STATUS_SUCCESS,
                "{mode:?}: {}",
                brief(&c)
            );
            assert!(c.data == pattern(u64::from(64 + 8 * i), 4096));
        }
        assert_clean(&stack);
    }
}

/// The same with a device that also ignores the first reset the polled ISR writes: the next
/// poll finds the ring still broken and resets again; the request comes back with BUS_RESET
/// (never with data the broken ring may not have delivered) and the disk is served after, also
/// after LU and device reset SRBs.
#[test]
fn a_dump_stack_resets_again_when_the_device_ignored_the_reset() {
    let stack = Stack::start_with(
        StackOptions {
            dump: true,
            ..StackOptions::default()
        },
        |d| prepare_data(d, 64, 4),
    )
    .expect("the dump stack starts");
    wait_for(&stack, "the device took the start-up GET_ID", |s| {
        s.device.counters().first().is_some_and(|c| c.get_ids >= 1)
    });
    stack.device.arm_fault(FaultMode::UsedIdxJump, 1);
    stack.device.ignore_resets(1);
    let h = stack.adapter.submit(read(64, 40));
    let victim = wait_all(&stack, vec![h], Instant::now() + DEADLINE).remove(0);
    assert!(
        status(&victim) == ffi::SRB_STATUS_BUS_RESET
            || (status(&victim) == ffi::SRB_STATUS_SUCCESS && victim.data == pattern(64, 4096)),
        "victim {}",
        brief(&victim)
    );
    // The victim's used element may be taken before the device moves used.idx on: the ring is
    // then found broken at the next poll, under the next read, which comes back BUS_RESET and
    // is sent again (the class driver's retry). At most those two reads see the fault.
    let mut bus_resets = 0;
    loop {
        let h = stack.adapter.submit(read(64, 40));
        let c = wait_all(&stack, vec![h], Instant::now() + DEADLINE).remove(0);
        if status(&c) == ffi::SRB_STATUS_SUCCESS {
            assert!(c.data == pattern(64, 4096));
            break;
        }
        assert_eq!(status(&c), ffi::SRB_STATUS_BUS_RESET, "{}", brief(&c));
        bus_resets += 1;
        assert!(bus_resets < 2, "the dump stack did not come back");
    }
    for i in 0..4u32 {
        let h = stack.adapter.submit(read(64 + 8 * i, 40));
        let c = wait_all(&stack, vec![h], Instant::now() + DEADLINE).remove(0);
        assert_eq!(status(&c), ffi::SRB_STATUS_SUCCESS, "{}", brief(&c));
        assert!(c.data == pattern(u64::from(64 + 8 * i), 4096));
    }
    // A dump stack has no reset machine: an LU or device reset SRB finds nothing outstanding
    // (one polled request at a time, already ended) and succeeds; the disk is still served.
    for f in [function::RESET_LOGICAL_UNIT, function::RESET_DEVICE] {
        let c = stack.adapter.execute(Request::function(f));
        assert_eq!(status(&c), ffi::SRB_STATUS_SUCCESS, "{f:#x}: {}", brief(&c));
    }
    let c = stack.adapter.execute(read(88, 40));
    assert_eq!(status(&c), ffi::SRB_STATUS_SUCCESS, "{}", brief(&c));
    assert!(c.data == pattern(88, 4096));
    assert_clean(&stack);
}

// ------------------------------------------------------------------------------------------
// A device slow to reset (30 ms): the reset machine waits for it from its timer, never in a
// callback; stop cuts its DMA instead of waiting, and restart leaves it to the machine.

#[test]
fn a_device_slow_to_reset_is_waited_for_by_the_machine() {
    for interrupts in ALL_MODES {
        let stack = start_with(interrupts, 2, |d| prepare_data(d, 1500, 32));
        stack.device.set_reset_delay_ms(30);
        stack.device.arm_fault(FaultMode::NeedsReset, 5);
        let handles = burst(&stack, 1500, 32, 40);
        let done = wait_all(&stack, handles, Instant::now() + DEADLINE);
        check_burst(&done, 1500, |c| status(c) == ffi::SRB_STATUS_BUS_RESET);
        recovers(&stack, 1500);
        assert_eq!(stack.adapter.stop(), Some(0), "{interrupts:?}: stop");
        assert!(
            stack.device.dma_cut(),
            "{interrupts:?}: stop did not wait 30 ms"
        );
        stack.adapter.restart().expect("restart");
        recovers(&stack, 1500);
        assert!(!stack.device.dma_cut(), "{interrupts:?}: DMA back");
        // Again, restarting only once the device's 30 ms reset is over (as on a loaded
        // machine): restart's own reset meets a device already reset, which must not read 0
        // before that reset is done (the model did, and dropped the driver's writes after).
        assert_eq!(stack.adapter.stop(), Some(0), "{interrupts:?}: stop");
        std::thread::sleep(Duration::from_millis(100));
        stack
            .adapter
            .restart()
            .expect("restart after the reset ended");
        recovers(&stack, 1500);
        assert!(!stack.device.dma_cut(), "{interrupts:?}: DMA back");
        assert_clean(&stack);
    }
}

/// A GET_ID whose answer breaks queue 0's ring (an id out of range, or the answer given twice)
/// while HwStorInitialize still polls for it: the
/// driver resets the device there and then, before Storport sends anything, so the first reads
/// all succeed at once (no BUS_RESET handed back) and no reset is logged later. In deterministic
/// mode (`storport_sim::sched`) the device answers while the poll runs, the same way for each
/// seed; on threads a loaded machine can delay the answer past the poll, when the reset machine
/// repairs the ring instead (`bad_get_id_completion_leaves_every_queue_working`).
#[test]
fn a_get_id_breaking_queue_zero_during_the_poll_is_repaired_before_any_request() {
    const RESET_STARTED: u32 = 0x0013_0006;
    // An id out of range; and the GET_ID answered twice (the poll takes its answer, then finds
    // a second used element for a request no longer in flight).
    for (seed, fault) in (1..=4)
        .map(|seed| (seed, FaultMode::UsedIdOutOfRange))
        .chain((1..=4).map(|seed| (seed, FaultMode::DuplicateUsedId)))
    {
        deterministically(&format!("seed {seed} {fault:?}"), seed, 20_000_000, || {
            let stack = Stack::start_with(options(Interrupts::MultiQueue, 1), |d| {
                prepare_data(d, 1024, 8);
                d.arm_fault(fault, 1);
            })?;
            if stack.device.faults_fired() != 1 {
                return Err("the fault did not fire on GET_ID during start".to_owned());
            }
            for i in 0..8u32 {
                let lba = 1024 + 8 * i;
                let c = stack.adapter.execute(read(lba, 40));
                if status(&c) != ffi::SRB_STATUS_SUCCESS || c.data != pattern(u64::from(lba), 4096)
                {
                    return Err(format!("read {i}: {}", brief(&c)));
                }
            }
            let resets: Vec<_> = stack
                .adapter
                .event_log()
                .into_iter()
                .filter(|e| e.code == RESET_STARTED)
                .collect();
            if !resets.is_empty() {
                return Err(format!("a reset ran after the start: {resets:?}"));
            }
            no_violations(&stack)
        });
    }
}

/// Runs `body` under the deterministic scheduler with `seed`: a failure of the run (a livelock,
/// a panic) or of `body` fails the test, named `what`.
fn deterministically(
    what: &str,
    seed: u64,
    max_steps: u64,
    body: impl FnOnce() -> Result<(), String>,
) {
    let (result, report) = storport_sim::sched::run(seed, max_steps, body);
    assert_eq!(report.failure, None, "{what}");
    if let Err(e) = result {
        panic!("{what}: {e}");
    }
}

/// `Err` naming Storport's violations, if there are any.
fn no_violations(stack: &Stack) -> Result<(), String> {
    let violations = stack.violations();
    if violations.is_empty() {
        Ok(())
    } else {
        Err(format!("violations: {violations:?}"))
    }
}

/// Reads racing a ring the device breaks (a used index jumping ahead on the 4th of 16 reads in
/// flight), in deterministic mode (`storport_sim::sched`) over 8 seeds: each seed fixes where the
/// submissions fall against the drain that finds the ring broken and the reset that follows
/// (before the reset check, between it and the queue lock, after the hand-back), the same way on
/// every run. Whatever the interleaving, every read comes back with its data or BUS_RESET (a
/// request met during the reset is answered BUSY and sent again by the port), none is lost,
/// the disk reads afterwards and Storport sees no violation.
#[test]
fn reads_racing_a_broken_ring_in_deterministic_mode() {
    for seed in 1..=8 {
        deterministically(&format!("seed {seed}"), seed, 50_000_000, || {
            let stack = Stack::start_with(options(Interrupts::MultiQueue, 1), |d| {
                prepare_data(d, 2048, 16);
            })?;
            stack.device.arm_fault(FaultMode::UsedIdxJump, 4);
            let handles = burst(&stack, 2048, 16, 40);
            let mut bus_resets = 0;
            for (i, h) in handles.into_iter().enumerate() {
                let lba = 2048 + 8 * i as u32;
                let c = h.wait();
                let good = status(&c) == ffi::SRB_STATUS_SUCCESS
                    && c.data == pattern(u64::from(lba), 4096);
                if !good && status(&c) != ffi::SRB_STATUS_BUS_RESET {
                    return Err(format!("read {i}: {}", brief(&c)));
                }
                bus_resets += usize::from(!good);
            }
            if stack.device.faults_fired() != 1 || bus_resets == 0 {
                return Err(format!(
                    "the ring did not break under the burst: {} faults, {bus_resets} BUS_RESET",
                    stack.device.faults_fired()
                ));
            }
            for i in 0..16u32 {
                let lba = 2048 + 8 * i;
                let c = stack.adapter.execute(read(lba, 40));
                if status(&c) != ffi::SRB_STATUS_SUCCESS || c.data != pattern(u64::from(lba), 4096)
                {
                    return Err(format!("read {i} after the reset: {}", brief(&c)));
                }
            }
            no_violations(&stack)
        });
    }
}

/// A device that ignores a reset and then takes 30 ms over the next one: the machine cuts its
/// DMA, hands the requests back, asks again and keeps polling while the device is still
/// resetting (it gives up only after its whole restart budget), and the disk works after.
#[test]
fn a_device_that_ignores_a_reset_then_takes_its_time_over_the_next_is_waited_for() {
    for interrupts in ALL_MODES {
        let stack = start_with(interrupts, 1, |d| prepare_data(d, 512, 32));
        stack.device.ignore_resets(1);
        stack.device.set_reset_delay_ms(30);
        assert!(stack.adapter.reset_bus());
        recovers(&stack, 512);
        let log = stack.adapter.log();
        assert!(
            log.iter().any(|l| l.contains("code 0x130001")),
            "{interrupts:?}: the unacknowledged reset is logged: {log:#?}"
        );
        assert!(
            !log.iter().any(|l| l.contains("code 0x130002")),
            "{interrupts:?}: the device was given up on: {log:#?}"
        );
        assert_clean(&stack);
    }
}
