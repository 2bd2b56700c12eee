//! The driver against a device that misbehaves, resets with I/O in flight, stop and restart,
//! and many threads at once: all through the real stack (the user-mode Storport over the
//! virtio-blk model), never by calling driver internals.
//!
//! What must hold in every scenario: nothing panics or hangs; the request the device mistreated
//! fails with a precise status (CHECK CONDITION / HARDWARE ERROR, or SRB_STATUS_BUS_RESET when a
//! reset took it back); every request completes exactly once; later requests succeed once the
//! driver has reset the device (or fail cleanly until then); and the user-mode Storport reports
//! no violation.
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use storport_sim::{PATIENCE, PortOptions, Request, RequestHandle};
use storport_sys as ffi;
use vioblk_sim::device::{DeviceConfig, FaultMode};
use vioblk_sim::stack::{Stack, StackOptions};
use vioblk_sim::target::{ScsiCompletion, ScsiRequest, ScsiTarget};

/// Sense key HARDWARE ERROR (SPC-4 table 51).
const HARDWARE_ERROR: u8 = 0x4;
/// How long the port lets requests stay outstanding after HwStorResetBus (0xF0/1 after that).
/// No test waits it out (they wait until every request a reset found has completed or been
/// reported), so it is generous: only a request the driver really left behind reaches it.
const RESET_GRACE: Duration = Duration::from_secs(10);
/// Scales every TimeOutValue (the 1 s of a request meant to time out becomes 500 ms).
const TIMEOUT_SCALE: f64 = 0.5;
/// TimeOutValue of every request not meant to time out: 60 s, 30 s scaled, which no loaded
/// machine reaches; Storport's timeout fires only for a request the device really lost.
const PATIENT_TIMEOUT_S: u32 = 60;
/// TimeOutValue of the request the device loses: Storport times it out after 500 ms.
const LOST_TIMEOUT_S: u32 = 1;

#[derive(Clone, Copy, Debug)]
enum Interrupts {
    /// One MSI-X message per queue, four queues.
    MultiQueue,
    /// INTx: one queue behind the interrupt lock, completed in the ISR.
    Intx,
    /// One MSI-X message for everything: one queue, completed in a DPC.
    SingleMessage,
}

fn options(interrupts: Interrupts, classic_locks: bool) -> StackOptions {
    StackOptions {
        device: DeviceConfig {
            num_queues: 4,
            ..DeviceConfig::default()
        },
        port: PortOptions {
            timeout_scale: TIMEOUT_SCALE,
            reset_grace: RESET_GRACE,
            acquire_spinlock_ex_not_implemented: classic_locks,
            ..PortOptions::default()
        },
        intx: matches!(interrupts, Interrupts::Intx),
        max_messages: matches!(interrupts, Interrupts::SingleMessage).then_some(1),
        ..StackOptions::default()
    }
}

fn start(interrupts: Interrupts) -> Stack {
    Stack::start(options(interrupts, false)).expect("the stack starts")
}

fn assert_clean(stack: &Stack) {
    let violations = stack.violations();
    assert!(
        violations.is_empty(),
        "Storport violations:\n{}",
        violations.join("\n")
    );
}

/// Waits until every request outstanding at a bus reset so far has completed or been reported
/// (a request still outstanding `RESET_GRACE` after the reset is 0xF0/1), then checks that
/// nothing is outstanding and for violations.
fn assert_clean_after_reset(stack: &Stack) {
    let settled = stack.adapter.wait_until(
        "the requests outstanding at each bus reset to complete (or be reported 0xF0/1)",
        RESET_GRACE + PATIENCE,
        || stack.adapter.outstanding_after_reset() == 0,
    );
    if let Err(e) = settled {
        panic!("{e}; {} left", stack.adapter.outstanding_after_reset());
    }
    assert_eq!(stack.adapter.outstanding(), 0, "requests left outstanding");
    assert_clean(stack);
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

/// `request` with a TimeOutValue no loaded machine reaches.
fn patient(request: ScsiRequest) -> ScsiRequest {
    ScsiRequest {
        timeout_s: PATIENT_TIMEOUT_S,
        ..request
    }
}

fn read_req(lba: u32, blocks: u16) -> ScsiRequest {
    patient(ScsiRequest::data_in(
        rw10(0x28, lba, blocks),
        u32::from(blocks) * 512,
    ))
}

fn write_req(lba: u32, data: Vec<u8>) -> ScsiRequest {
    let blocks = u16::try_from(data.len() / 512).unwrap();
    patient(ScsiRequest::data_out(rw10(0x2A, lba, blocks), data))
}

/// A completion without its data, for messages.
fn brief(c: &ScsiCompletion) -> String {
    format!(
        "srb_status {:#04x} scsi_status {:#04x} sense {:02x?}",
        c.srb_status, c.scsi_status, c.sense
    )
}

fn is_hardware_error(c: &ScsiCompletion) -> bool {
    c.srb_status == ffi::SRB_STATUS_ERROR | ffi::SRB_STATUS_AUTOSENSE_VALID
        && c.scsi_status == ffi::SCSISTAT_CHECK_CONDITION
        && c.sense.len() >= 14
        && c.sense[0] & 0x7F == 0x70
        && c.sense[2] & 0x0F == HARDWARE_ERROR
        && (c.sense[12], c.sense[13]) == (0x44, 0x00)
}

fn is_bus_reset(c: &ScsiCompletion) -> bool {
    c.status() == ffi::SRB_STATUS_BUS_RESET
}

/// ResetDetected notifications so far: the driver sends one when it finishes a reset (its own,
/// of a device that misbehaved, or Storport's HwStorResetBus).
fn resets_detected(stack: &Stack) -> usize {
    stack
        .adapter
        .log()
        .iter()
        .filter(|l| l.starts_with("ResetDetected"))
        .count()
}

/// Sends `request` until it succeeds, as the class driver retries: every failure on the way
/// must be a clean one (HARDWARE ERROR while the device is down, BUS_RESET from a reset), and
/// is retried once the driver has finished the reset that brings the device back.
/// Returns the successful completion and the number of failures before it.
fn until_success(stack: &Stack, request: &ScsiRequest) -> (ScsiCompletion, u32) {
    let begun = Instant::now();
    let mut failures = 0;
    loop {
        let resets = resets_detected(stack);
        let c = stack.execute(request.clone());
        if c.is_success() {
            return (c, failures);
        }
        assert!(
            is_hardware_error(&c) || is_bus_reset(&c),
            "a retry failed uncleanly: {}",
            brief(&c)
        );
        failures += 1;
        // Either failure means a reset is under way (the driver fails requests fast only while
        // the device is stopped for one, and hands requests back with BUS_RESET from one).
        let back = stack.adapter.wait_until(
            "the driver to finish its reset (ResetDetected)",
            PATIENCE.saturating_sub(begun.elapsed()),
            || resets_detected(stack) > resets,
        );
        if let Err(e) = back {
            panic!(
                "the disk did not come back after {failures} failure(s), the last {}: {e}",
                brief(&c)
            );
        }
    }
}

/// Writes known data, arms `mode` for the next request, reads, and returns that read's
/// completion; then checks the disk recovers with its data intact and nothing leaked.
fn fault_scenario(interrupts: Interrupts, mode: FaultMode) -> ScsiCompletion {
    let stack = start(interrupts);
    let data = pattern(u64::from(mode as u8), 8 * 512);
    let c = stack.execute(write_req(64, data.clone()));
    assert!(c.is_success(), "first write: {}", brief(&c));
    stack.device.arm_fault(mode, 1);
    let begun = Instant::now();
    // Only a request the device silently drops needs Storport's timeout to be recovered; a
    // completion the driver can see, or DEVICE_NEEDS_RESET, is handled without it. So the
    // victim has a TimeOutValue that runs out at once (500 ms) when the device loses it, and
    // otherwise one no loaded machine reaches: if the driver failed to handle the fault itself,
    // the victim would be recovered only by Storport's timeout, seen below.
    let must_time_out = mode == FaultMode::LostRequest;
    let victim = stack.execute(ScsiRequest {
        timeout_s: if must_time_out {
            LOST_TIMEOUT_S
        } else {
            PATIENT_TIMEOUT_S
        },
        ..read_req(64, 8)
    });
    assert_eq!(stack.device.faults_fired(), 1, "{mode:?}: the fault fired");
    let timed_out = stack.adapter.log().iter().any(|l| l.contains("timed out"));
    assert_eq!(
        timed_out,
        must_time_out,
        "{interrupts:?} {mode:?}: Storport timeout; victim {} after {:?}",
        brief(&victim),
        begun.elapsed()
    );
    let timeouts = stack.adapter.activity().timeouts;
    assert_eq!(
        timeouts,
        u64::from(must_time_out),
        "{mode:?}: requests timed out"
    );

    // Later requests succeed once the device is back, and the data survived.
    let (c, _) = until_success(&stack, &read_req(64, 8));
    assert!(c.data_in == data, "{mode:?}: data after recovery");
    let more = pattern(99, 4096);
    let (_, _) = until_success(&stack, &write_req(128, more.clone()));
    let (c, failures) = until_success(&stack, &read_req(128, 8));
    assert_eq!(failures, 0, "{mode:?}: the disk is healthy again");
    assert!(c.data_in == more);
    // A burst on every queue.
    let handles: Vec<RequestHandle> = (0..32u32)
        .map(|i| {
            stack.adapter.submit(
                Request::data_in(&rw10(0x28, 64, 8), 4096).timeout(PATIENT_TIMEOUT_S + i % 2),
            )
        })
        .collect();
    for h in handles {
        let c = h.wait();
        assert!(
            c.is_success(),
            "{mode:?}: burst after recovery: {:#x}",
            c.srb_status
        );
        assert!(c.data == data);
    }
    assert_clean_after_reset(&stack);
    victim
}

#[test]
fn used_id_out_of_range_fails_the_request_and_resets() {
    for interrupts in [
        Interrupts::MultiQueue,
        Interrupts::Intx,
        Interrupts::SingleMessage,
    ] {
        let c = fault_scenario(interrupts, FaultMode::UsedIdOutOfRange);
        // The ring cannot say which request the device meant: the driver resets the device and
        // hands every request on it back with BUS_RESET, for the class driver to retry.
        assert!(is_bus_reset(&c), "{interrupts:?}: victim {}", brief(&c));
    }
}

#[test]
fn used_idx_jump_fails_the_request_and_resets() {
    for interrupts in [
        Interrupts::MultiQueue,
        Interrupts::Intx,
        Interrupts::SingleMessage,
    ] {
        let c = fault_scenario(interrupts, FaultMode::UsedIdxJump);
        // The device used more than it was given. The first element names the victim
        // correctly, so it completes, or the whole ring is reset under it.
        assert!(
            c.is_success() || is_bus_reset(&c),
            "{interrupts:?}: victim {}",
            brief(&c)
        );
    }
}

#[test]
fn used_len_too_large_is_a_hardware_error() {
    for interrupts in [
        Interrupts::MultiQueue,
        Interrupts::Intx,
        Interrupts::SingleMessage,
    ] {
        let c = fault_scenario(interrupts, FaultMode::UsedLenTooLarge);
        assert!(
            is_hardware_error(&c),
            "{interrupts:?}: victim {}",
            brief(&c)
        );
    }
}

#[test]
fn bad_status_is_a_hardware_error() {
    for interrupts in [
        Interrupts::MultiQueue,
        Interrupts::Intx,
        Interrupts::SingleMessage,
    ] {
        let c = fault_scenario(interrupts, FaultMode::BadStatus);
        assert!(
            is_hardware_error(&c),
            "{interrupts:?}: victim {}",
            brief(&c)
        );
    }
}

#[test]
fn lost_request_times_out_and_the_bus_reset_completes_it() {
    for interrupts in [
        Interrupts::MultiQueue,
        Interrupts::Intx,
        Interrupts::SingleMessage,
    ] {
        let c = fault_scenario(interrupts, FaultMode::LostRequest);
        assert!(is_bus_reset(&c), "{interrupts:?}: victim {}", brief(&c));
    }
}

#[test]
fn needs_reset_is_recovered() {
    for interrupts in [
        Interrupts::MultiQueue,
        Interrupts::Intx,
        Interrupts::SingleMessage,
    ] {
        let c = fault_scenario(interrupts, FaultMode::NeedsReset);
        // The device announced it stopped: the driver resets it and hands the request back.
        assert!(is_bus_reset(&c), "{interrupts:?}: victim {}", brief(&c));
    }
}

/// Submits `n` requests (large reads and writes, so some are still on the device), with the
/// first one lost by the device so at least one is certainly in flight; resets the bus; checks
/// every request completes exactly once and the disk works after.
fn reset_with_io_in_flight(interrupts: Interrupts) {
    let stack = start(interrupts);
    let done = Arc::new(AtomicUsize::new(0));
    stack.device.arm_fault(FaultMode::LostRequest, 1);
    let mut handles = Vec::new();
    for i in 0..24u32 {
        let lba = 1024 + 256 * (i % 8);
        let req = if i % 2 == 0 {
            Request::data_in(&rw10(0x28, lba, 128), 128 * 512)
        } else {
            Request::data_out(&rw10(0x2A, lba, 128), pattern(u64::from(i), 128 * 512))
        };
        handles.push(stack.adapter.submit(req.timeout(PATIENT_TIMEOUT_S)));
    }
    // Callback completions too (ScsiTarget::submit), counted.
    for i in 0..8u32 {
        let done = done.clone();
        stack.submit(
            read_req(2048 + 16 * i, 16),
            Box::new(move |c| {
                assert!(c.is_success() || is_bus_reset(&c), "{}", brief(&c));
                done.fetch_add(1, Ordering::SeqCst);
            }),
        );
    }
    assert!(stack.adapter.reset_bus(), "HwStorResetBus returns TRUE");
    let mut reset = 0;
    for h in handles {
        let c = h.wait();
        let bus_reset = c.status() == ffi::SRB_STATUS_BUS_RESET;
        assert!(
            c.is_success() || bus_reset,
            "after reset: {:#x}",
            c.srb_status
        );
        reset += usize::from(bus_reset);
    }
    assert!(reset >= 1, "the lost request was completed by the reset");
    // The port wakes waiters after each completion callback has run.
    let completed =
        stack
            .adapter
            .wait_until("the 8 callback requests to complete", PATIENCE, || {
                done.load(Ordering::SeqCst) >= 8
            });
    if let Err(e) = completed {
        panic!("{e}: {} completed", done.load(Ordering::SeqCst));
    }
    if let Err(e) = stack.adapter.drain(PATIENCE) {
        panic!("{e}");
    }
    // The disk works after the reset.
    let data = pattern(7, 64 * 512);
    let (_, _) = until_success(&stack, &write_req(8, data.clone()));
    let (c, failures) = until_success(&stack, &read_req(8, 64));
    assert_eq!(failures, 0);
    assert!(c.data_in == data);
    assert!(
        stack
            .adapter
            .log()
            .iter()
            .any(|l| l.starts_with("ResetDetected"))
    );
    // Nothing was completed twice and nothing stayed outstanding (0xF1/0x2004, 0xF0/1).
    assert_eq!(done.load(Ordering::SeqCst), 8);
    assert_clean_after_reset(&stack);
}

#[test]
fn bus_reset_with_io_in_flight_multi_queue() {
    reset_with_io_in_flight(Interrupts::MultiQueue);
}

#[test]
fn bus_reset_with_io_in_flight_intx() {
    reset_with_io_in_flight(Interrupts::Intx);
}

#[test]
fn bus_reset_with_io_in_flight_single_message() {
    reset_with_io_in_flight(Interrupts::SingleMessage);
}

#[test]
fn repeated_bus_resets_while_idle() {
    let stack = start(Interrupts::MultiQueue);
    for i in 0..5u64 {
        assert!(stack.adapter.reset_bus());
        let data = pattern(i, 4096);
        let (_, _) = until_success(&stack, &write_req(16, data.clone()));
        let (c, _) = until_success(&stack, &read_req(16, 8));
        assert!(c.data_in == data);
    }
    assert_clean_after_reset(&stack);
}

fn stop_restart(interrupts: Interrupts) {
    let stack = start(interrupts);
    let data = pattern(1, 16 * 512);
    let c = stack.execute(write_req(40, data.clone()));
    assert!(c.is_success(), "first write: {}", brief(&c));
    for round in 0..2u64 {
        assert_eq!(stack.adapter.stop(), Some(0), "ScsiStopAdapter succeeds");
        stack
            .adapter
            .restart()
            .expect("ScsiRestartAdapter succeeds");
        // A restart whose device reset takes longer than the 1 ms HwStorAdapterControl may wait
        // (a loaded machine) leaves it to the reset machine, which hands a request it holds
        // back with BUS_RESET: retried, as disk.sys does.
        let (c, _) = until_success(&stack, &read_req(40, 16));
        assert!(c.data_in == data, "read after restart {round}");
        let more = pattern(10 + round, 8 * 512);
        let _ = until_success(&stack, &write_req(200, more.clone()));
        let mut on_disk = vec![0u8; more.len()];
        stack.device.read_disk(200 * 512, &mut on_disk).unwrap();
        assert!(on_disk == more);
        // Every queue works: a burst spreads over the CPUs.
        let handles: Vec<RequestHandle> = (0..16)
            .map(|_| {
                stack.adapter.submit(
                    Request::data_in(&rw10(0x28, 40, 16), 16 * 512).timeout(PATIENT_TIMEOUT_S),
                )
            })
            .collect();
        for h in handles {
            let c = h.wait();
            assert!(c.is_success(), "burst after restart: {:#x}", c.srb_status);
            assert!(c.data == data);
        }
    }
    assert_clean(&stack);
}

#[test]
fn stop_and_restart_multi_queue() {
    stop_restart(Interrupts::MultiQueue);
}

#[test]
fn stop_and_restart_intx() {
    stop_restart(Interrupts::Intx);
}

#[test]
fn capacity_change_while_stopped_is_seen_after_restart() {
    let stack = start(Interrupts::MultiQueue);
    let sectors = DeviceConfig::default().capacity_sectors;
    assert_eq!(stack.adapter.stop(), Some(0));
    // The host resizes the disk while the adapter is stopped: no interrupt can tell the driver.
    stack.device.resize(sectors / 2).unwrap();
    stack.adapter.restart().unwrap();
    let tur = patient(ScsiRequest::no_data(vec![0x00, 0, 0, 0, 0, 0]));
    let c = stack.execute(tur.clone());
    assert_eq!(
        (
            c.scsi_status,
            c.sense.get(2).map(|k| k & 0x0F),
            c.sense.get(12),
            c.sense.get(13)
        ),
        (
            ffi::SCSISTAT_CHECK_CONDITION,
            Some(0x6),
            Some(&0x2A),
            Some(&0x09)
        ),
        "UNIT ATTENTION / CAPACITY DATA HAS CHANGED after restart: {}",
        brief(&c)
    );
    assert!(stack.execute(tur).is_success());
    let rc = stack.execute(patient(ScsiRequest::data_in(
        vec![0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        8,
    )));
    assert!(rc.is_success());
    assert_eq!(
        rc.data_in[..4],
        u32::try_from(sectors / 2 - 1).unwrap().to_be_bytes()
    );
    // A read past the new end is refused by the driver, not sent to fail on the device.
    let c = stack.execute(read_req(u32::try_from(sectors / 2).unwrap(), 1));
    assert_eq!(c.sense.get(12), Some(&0x21), "{}", brief(&c));
    assert_clean(&stack);
}

/// A small deterministic generator (xorshift64*), one per thread.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// Four threads, each doing `ops` random 4 KiB reads and writes over its own region, checking
/// every read against what it last wrote there.
fn concurrency(interrupts: Interrupts, classic_locks: bool, ops: usize) {
    let stack = Arc::new(Stack::start(options(interrupts, classic_locks)).expect("stack"));
    const SLOTS: u64 = 64;
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let stack = stack.clone();
            std::thread::spawn(move || {
                let mut rng = Rng(0x1234_5678 ^ (t + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
                let mut written = vec![None::<u64>; SLOTS as usize];
                let base = t * SLOTS * 8;
                for op in 0..ops {
                    let slot = rng.next() % SLOTS;
                    let lba = u32::try_from(base + slot * 8).unwrap();
                    if rng.next().is_multiple_of(2) {
                        let seed = (t << 32) | op as u64;
                        let c = stack.execute(write_req(lba, pattern(seed, 4096)));
                        assert!(c.is_success(), "thread {t} write {op}: {}", brief(&c));
                        written[slot as usize] = Some(seed);
                    } else {
                        let c = stack.execute(read_req(lba, 8));
                        assert!(c.is_success(), "thread {t} read {op}: {}", brief(&c));
                        let expected = match written[slot as usize] {
                            Some(seed) => pattern(seed, 4096),
                            None => vec![0; 4096],
                        };
                        assert!(c.data_in == expected, "thread {t} op {op}: data mismatch");
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("worker thread");
    }
    let per_queue: Vec<u64> = stack
        .device
        .counters()
        .iter()
        .map(|c| c.reads + c.writes)
        .collect();
    assert_eq!(per_queue.iter().sum::<u64>(), 4 * ops as u64);
    if matches!(interrupts, Interrupts::MultiQueue) {
        assert!(
            per_queue.iter().filter(|&&n| n > 0).count() > 1,
            "requests spread over the queues: {per_queue:?}"
        );
    }
    assert_clean(&stack);
}

#[test]
fn four_threads_random_io_multi_queue() {
    concurrency(Interrupts::MultiQueue, false, 300);
}

#[test]
fn four_threads_random_io_intx() {
    concurrency(Interrupts::Intx, false, 300);
}

#[test]
fn four_threads_random_io_classic_locks() {
    concurrency(Interrupts::MultiQueue, true, 200);
    concurrency(Interrupts::Intx, true, 200);
}

#[test]
fn every_queue_completes_its_first_request_without_a_timeout() {
    // Queue 0 carried the GET_ID the driver polled at start; its first interrupt-driven
    // completion must still interrupt. A new thread is a new simulated CPU, so new threads reach
    // every queue in turn.
    let stack = Arc::new(start(Interrupts::MultiQueue));
    let served = |stack: &Stack| {
        stack
            .device
            .counters()
            .iter()
            .filter(|c| c.reads > 0)
            .count()
    };
    let mut threads = 0;
    while served(&stack) < 4 {
        assert!(threads < 64, "some queue never served a request");
        threads += 1;
        let s = stack.clone();
        let c = std::thread::spawn(move || s.execute(read_req(8, 8)))
            .join()
            .unwrap();
        // A completion that did not interrupt would leave the read to Storport's timeout (30 s),
        // whose bus reset hands it back with BUS_RESET.
        assert!(c.is_success(), "first read: {}", brief(&c));
    }
    let seen = stack.adapter.activity();
    assert_eq!((seen.timeouts, seen.resets), (0, 0), "no timeout, no reset");
    assert!(!stack.adapter.log().iter().any(|l| l.contains("timed out")));
    assert_clean(&stack);
}
