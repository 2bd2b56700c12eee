//! Issue 19: the wrong drivers that used to pass every test. Each test here names the deliberate
//! bug (a "probe") or the surviving cargo-mutants mutant it was written against, and fails when
//! that bug is put back (see the README's "Mutation testing" section for which were confirmed so).
//!
//! Everything runs through the real path: the driver on the user-mode Storport over the device
//! model. What is asserted is what a user would see: the SRB status and sense bytes, the data,
//! the device's own record (its status register, its FLUSH count, its writes into completed
//! requests) and the violations the simulated Storport reports. Every wait has a deadline whose
//! expiry fails the test (a request that never completes is reported, not waited for forever).
#![forbid(unsafe_code)]

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use storport_sim::device::{Bar, DmaWatch, InterruptSink, PciDevice};
use storport_sim::{CallbackKind, Completion, PortOptions, Request, RequestHandle, function};
use storport_sys as ffi;
use vioblk_sim::device::{DeviceConfig, FaultMode, VirtioBlkDevice, features};
use vioblk_sim::stack::{Stack, StackOptions};

/// The longest any scenario may take before it counts as hung.
const DEADLINE: Duration = Duration::from_secs(20);
/// The serial number the device model answers GET_ID with.
const SERIAL: &[u8] = b"VIOBLK-SIM-0001";

/// Sense keys (SPC-4 table 51).
const MEDIUM_ERROR: u8 = 0x3;
const HARDWARE_ERROR: u8 = 0x4;
const ILLEGAL_REQUEST: u8 = 0x5;

fn options(queues: u16) -> StackOptions {
    StackOptions {
        device: DeviceConfig {
            num_queues: queues,
            ..DeviceConfig::default()
        },
        port: PortOptions {
            // A request given 40 s has 20 s before Storport's timeout: longer than DEADLINE, so
            // a request the driver lost is reported by the deadline, not rescued by a reset.
            timeout_scale: 0.5,
            isr_budget: Duration::from_millis(10),
            dpc_budget: Duration::from_millis(10),
            raised_irql_budget: Duration::from_millis(10),
            reset_grace: Duration::from_secs(2),
            multi_tier_reset: true,
            reset_tier_wait: Duration::from_millis(500),
            ..PortOptions::default()
        },
        ..StackOptions::default()
    }
}

fn start(options: StackOptions, prepare: impl FnOnce(&VirtioBlkDevice)) -> Stack {
    let stack = Stack::start_with(options, prepare).expect("the stack starts");
    // HwStorInitialize polls GET_ID for 1 ms; on a busy machine the device takes it later, and
    // a fault the test arms after the start for "the next request" must not land on it: wait
    // until the device has served it (unless a fault was armed before the start, which may be
    // meant for it, or has fired already).
    if !stack.device.fault_armed() && stack.device.faults_fired() == 0 {
        wait_for(&stack, "the device served the start-up GET_ID", |s| {
            total(s, |c| c.get_ids) >= 1
        });
    }
    stack
}

/// Fails the test without tearing the stack down (a request the driver lost would make the
/// teardown wait for it): the process ends here with a failure.
fn hung(stack: &Stack, what: &str) -> ! {
    let log = stack.adapter.log();
    let tail = log[log.len().saturating_sub(20)..].join("\n");
    // Straight to the process's stderr: the test harness's capture of eprintln! would be lost
    // with the process.
    let _ = writeln!(
        std::io::stderr().lock(),
        "HUNG (deadline {DEADLINE:?}): {what}\nlast log lines:\n{tail}"
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

fn rw10(opcode: u8, flags: u8, lba: u32, blocks: u16) -> Vec<u8> {
    let mut c = vec![opcode, flags, 0, 0, 0, 0, 0, 0, 0, 0];
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

fn read(lba: u32) -> Request {
    Request::data_in(&rw10(0x28, 0, lba, 8), 4096).timeout(40)
}

fn status(c: &Completion) -> u8 {
    c.srb_status & 0x3F
}

fn brief(c: &Completion) -> String {
    format!(
        "srb_status {:#04x} scsi_status {:#04x} sense {:02x?} busy retries {}",
        c.srb_status,
        c.scsi_status,
        &c.sense[..c.sense.len().min(14)],
        c.busy_retries
    )
}

/// CHECK CONDITION with autosense carrying `key` and `asc`.
fn is_check(c: &Completion, key: u8, asc: u8) -> bool {
    c.srb_status == ffi::SRB_STATUS_ERROR | ffi::SRB_STATUS_AUTOSENSE_VALID
        && c.scsi_status == ffi::SCSISTAT_CHECK_CONDITION
        && c.sense.len() >= 14
        && c.sense[2] & 0x0F == key
        && c.sense[12] == asc
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

/// Waits for every handle before the deadline; a request that never comes back is a failure.
fn wait_all(stack: &Stack, handles: Vec<RequestHandle>) -> Vec<Completion> {
    let end = Instant::now() + DEADLINE;
    let mut done = Vec::new();
    for (i, h) in handles.into_iter().enumerate() {
        loop {
            if let Some(c) = h.wait_timeout(Duration::from_millis(20)) {
                done.push(c);
                break;
            }
            if Instant::now() > end {
                hung(stack, &format!("request {i} never completed"));
            }
        }
    }
    done
}

fn wait_for(stack: &Stack, what: &str, mut cond: impl FnMut(&Stack) -> bool) {
    let end = Instant::now() + DEADLINE;
    while !cond(stack) {
        if Instant::now() > end {
            hung(stack, what);
        }
        std::thread::yield_now();
    }
}

/// No timeout and no reset happened: the driver completed everything on its own.
fn assert_no_reset(stack: &Stack) {
    let log = stack.adapter.log();
    assert!(
        !log.iter()
            .any(|l| l.contains("timed out") || l.contains("HwStorResetBus")),
        "a request needed Storport's timeout or a reset:\n{}",
        log.join("\n")
    );
}

fn total(stack: &Stack, f: impl Fn(&vioblk_sim::device::QueueCounters) -> u64) -> u64 {
    stack.device.counters().iter().map(f).sum()
}

// ------------------------------------------------------------------------------------------
// Mutant `Batch::is_full -> false`: completions past 32 in one drain were silently dropped.

/// 120 reads in flight on one queue (far above a batch of 32, within the driver's 128 slots),
/// all served by the device while its interrupts are held, then released at once: every
/// request completes with its data, without a Storport timeout.
#[test]
fn far_more_than_a_batch_of_completions_per_queue_all_complete() {
    // With indirect descriptors a read takes one ring entry; without them (CI's feature-off run,
    // VIOBLK_SIM_FEATURES_OFF=indirect) a chain of three, so a 128-entry ring holds 42 reads
    // while the held interrupts keep any from being taken back: 40 is still above a batch.
    let n = if chained() { 40u32 } else { 120u32 };
    let stack = start(options(1), |d| prepare_data(d, 0, n));
    reads_served_while_held(&stack, n, || {});
    assert_no_reset(&stack);
    assert_clean(&stack);
}

/// Whether the device models run without indirect descriptors (CI's feature-off run): a read
/// then takes a chain of three ring entries.
fn chained() -> bool {
    std::env::var("VIOBLK_SIM_FEATURES_OFF").is_ok_and(|v| v.contains("indirect"))
}

/// `n` reads on one queue, all served by the device while it holds its interrupts back;
/// `released` runs just before they are let go; then every read must succeed with its data.
fn reads_served_while_held(stack: &Stack, n: u32, released: impl FnOnce()) {
    stack.device.hold_interrupts(true);
    let handles: Vec<_> = (0..n).map(|i| stack.adapter.submit(read(8 * i))).collect();
    wait_for(stack, "the device served every read", |s| {
        total(s, |c| c.reads) >= u64::from(n)
    });
    released();
    stack.device.hold_interrupts(false);
    let done = wait_all(stack, handles);
    for (i, c) in done.iter().enumerate() {
        assert_eq!(status(c), ffi::SRB_STATUS_SUCCESS, "read {i}: {}", brief(c));
        assert!(
            c.data == pattern(8 * i as u64, 4096),
            "read {i}: wrong data"
        );
    }
}

/// Line-based interrupts (INTx: one queue behind the interrupt lock): HwStorInterrupt completes
/// up to two batches itself and leaves only the rest to the DPC. 60 reads (40 with chained
/// descriptors), all served while the device holds its interrupt back, then one interrupt:
/// every read completes with its data and no DPC ran for them.
#[test]
fn one_interrupt_completes_two_batches_in_the_isr() {
    let n = if chained() { 40u32 } else { 60u32 };
    let stack = start(
        StackOptions {
            intx: true,
            ..options(1)
        },
        |d| prepare_data(d, 0, n),
    );
    let mut before = None;
    reads_served_while_held(&stack, n, || before = Some(stack.adapter.lock_counts()));
    let before = before.expect("taken before the release");
    let runs = stack.adapter.lock_counts().since(&before);
    assert!(runs.runs(CallbackKind::Isr) >= 1, "{runs:?}");
    assert_eq!(
        runs.runs(CallbackKind::Dpc),
        0,
        "{n} completions fit in the ISR's two batches: {runs:?}"
    );
    assert_no_reset(&stack);
    assert_clean(&stack);
}

// ------------------------------------------------------------------------------------------
// Probe: a full ring answered ERROR instead of BUSY.

/// 200 reads at once on one queue of 16 entries, with indirect descriptors and with chained
/// ones: the ring fills, the requests it cannot take are answered BUSY (Storport sends them
/// again), and every one of them succeeds with its data.
#[test]
fn a_full_ring_answers_busy_and_every_request_succeeds() {
    for indirect in [true, false] {
        let mut opts = options(1);
        opts.device.max_queue_size = 16;
        if !indirect {
            opts.device.features =
                Some(features::DEFAULT & !features::INDIRECT_DESC & !features::MQ);
        }
        let stack = start(opts, |d| prepare_data(d, 0, 200));
        // Completions are held until the device has served a full ring (16 reads with
        // indirect descriptors, 5 three-descriptor chains without; one less when a GET_ID the
        // driver stopped polling for still holds its entry until the next drain), so the
        // requests submitted meanwhile find it full whatever the machine's timing.
        stack.device.hold_interrupts(true);
        let handles: Vec<_> = (0..200u32)
            .map(|i| stack.adapter.submit(read(8 * i)))
            .collect();
        // (CI's feature-off run withdraws indirect descriptors from every device.)
        let withdrawn = std::env::var("VIOBLK_SIM_FEATURES_OFF").unwrap_or_default();
        let ring_full = if indirect && !withdrawn.contains("indirect") {
            15
        } else {
            4
        };
        wait_for(&stack, "the device served a full ring", |s| {
            total(s, |c| c.reads) >= ring_full
        });
        stack.device.hold_interrupts(false);
        let done = wait_all(&stack, handles);
        for (i, c) in done.iter().enumerate() {
            assert_eq!(
                status(c),
                ffi::SRB_STATUS_SUCCESS,
                "indirect {indirect}: read {i}: {}",
                brief(c)
            );
            assert!(c.data == pattern(8 * i as u64, 4096), "read {i}: data");
        }
        assert!(
            done.iter().any(|c| c.busy_retries > 0),
            "indirect {indirect}: the ring never filled (the test does not test)"
        );
        assert_clean(&stack);
    }
}

// ------------------------------------------------------------------------------------------
// Probe: a second FUA write in one DPC batch was completed without its FLUSH.

/// 24 FUA writes whose completions land in one batch: each one completed successfully was
/// followed by a FLUSH on the device before its completion, so the device counts at least as
/// many FLUSHes as successful FUA writes.
#[test]
fn every_fua_write_in_a_batch_gets_its_flush() {
    let stack = start(options(1), |_| {});
    stack.device.hold_interrupts(true);
    let n = 24u32;
    let handles: Vec<_> = (0..n)
        .map(|i| {
            stack.adapter.submit(
                Request::data_out(&rw10(0x2A, 0x08, 8 * i, 8), pattern(u64::from(i), 4096))
                    .timeout(40),
            )
        })
        .collect();
    wait_for(&stack, "the device took every write", |s| {
        total(s, |c| c.writes) >= u64::from(n)
    });
    stack.device.hold_interrupts(false);
    let done = wait_all(&stack, handles);
    for (i, c) in done.iter().enumerate() {
        assert_eq!(
            status(c),
            ffi::SRB_STATUS_SUCCESS,
            "FUA write {i}: {}",
            brief(c)
        );
    }
    let flushes = total(&stack, |c| c.flushes);
    assert!(
        flushes >= u64::from(n),
        "{n} FUA writes completed with only {flushes} FLUSHes on the device"
    );
    let mut back = vec![0u8; 4096];
    for i in 0..n {
        stack
            .device
            .read_disk(u64::from(8 * i) * 512, &mut back)
            .unwrap();
        assert!(
            back == pattern(u64::from(i), 4096),
            "FUA write {i} on the disk"
        );
    }
    assert_clean(&stack);
}

/// A FUA write completed together with a request whose used element names no request (an id
/// out of range): the drain takes the write, then finds the ring broken, so the write's FLUSH
/// cannot go on that ring. The write is not completed as durable without its FLUSH: it is
/// answered BUSY, Storport sends it again once the reset brought the device back, and it then
/// succeeds with its FLUSH. The other request comes back with BUS_RESET.
#[test]
fn a_fua_write_whose_flush_meets_a_broken_ring_is_sent_again() {
    let stack = start(options(1), |d| prepare_data(d, 128, 1));
    // One request there and back first: no drain of the start-up requests is still to come,
    // which would take the write early and put its FLUSH on the ring before it breaks.
    let c = stack.adapter.execute(read(128));
    assert_eq!(status(&c), ffi::SRB_STATUS_SUCCESS, "{}", brief(&c));
    stack.device.arm_fault(FaultMode::UsedIdOutOfRange, 2);
    // Both used elements are written before the driver looks.
    stack.device.hold_interrupts(true);
    let write = stack
        .adapter
        .submit(Request::data_out(&rw10(0x2A, 0x08, 64, 8), pattern(64, 4096)).timeout(40));
    wait_for(&stack, "the device took the write", |s| {
        total(s, |c| c.writes) >= 1
    });
    let victim = stack.adapter.submit(read(128));
    wait_for(&stack, "the device answered the read wrongly", |s| {
        s.device.faults_fired() == 1
    });
    stack.device.hold_interrupts(false);
    let done = wait_all(&stack, vec![write, victim]);
    let c = &done[0];
    assert_eq!(status(c), ffi::SRB_STATUS_SUCCESS, "{}", brief(c));
    assert!(c.busy_retries >= 1, "answered BUSY first: {}", brief(c));
    assert_eq!(
        status(&done[1]),
        ffi::SRB_STATUS_BUS_RESET,
        "{}",
        brief(&done[1])
    );
    assert!(
        total(&stack, |c| c.flushes) >= 1,
        "a FLUSH reached the device"
    );
    let mut back = vec![0u8; 4096];
    stack.device.read_disk(64 * 512, &mut back).unwrap();
    assert!(back == pattern(64, 4096), "the write is on the disk");
    assert_clean(&stack);
}

/// A device without FLUSH (no VIRTIO_BLK_F_FLUSH): a FUA write and SYNCHRONIZE CACHE succeed
/// (the write is as durable as the device makes it) and no FLUSH reaches the device.
#[test]
fn a_device_without_flush_is_never_sent_one() {
    let mut opts = options(1);
    opts.device.features = Some(features::DEFAULT & !features::FLUSH & !features::MQ);
    let stack = start(opts, |_| {});
    let c = stack
        .adapter
        .execute(Request::data_out(&rw10(0x2A, 0x08, 64, 8), pattern(64, 4096)).timeout(40));
    assert_eq!(
        status(&c),
        ffi::SRB_STATUS_SUCCESS,
        "FUA write: {}",
        brief(&c)
    );
    let c = stack
        .adapter
        .execute(Request::scsi(&rw10(0x35, 0, 0, 0)).timeout(40));
    assert_eq!(
        status(&c),
        ffi::SRB_STATUS_SUCCESS,
        "SYNCHRONIZE CACHE: {}",
        brief(&c)
    );
    let c = stack
        .adapter
        .execute(Request::function(function::FLUSH).timeout(40));
    assert_eq!(
        status(&c),
        ffi::SRB_STATUS_SUCCESS,
        "SRB_FUNCTION_FLUSH: {}",
        brief(&c)
    );
    assert_eq!(
        total(&stack, |c| c.flushes),
        0,
        "FLUSH sent to a device without it"
    );
    assert_eq!(total(&stack, |c| c.other), 0, "unknown requests sent");
    let mut back = vec![0u8; 4096];
    stack.device.read_disk(64 * 512, &mut back).unwrap();
    assert!(back == pattern(64, 4096), "the FUA write is on the disk");
    assert_clean(&stack);
}

// ------------------------------------------------------------------------------------------
// Probe: VIRTIO_BLK_S_UNSUPP reported as success; and IOERR, on every request type.

fn unmap_list(lba: u64, blocks: u32) -> Vec<u8> {
    let mut p = vec![0, 22, 0, 16, 0, 0, 0, 0];
    p.extend(lba.to_be_bytes());
    p.extend(blocks.to_be_bytes());
    p.extend([0u8; 4]);
    p
}

fn write_same16_unmap(lba: u64, blocks: u32) -> Vec<u8> {
    let mut c = vec![0x93, 0x08, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    c[2..10].copy_from_slice(&lba.to_be_bytes());
    c[10..14].copy_from_slice(&blocks.to_be_bytes());
    c
}

/// Each request type, and which of the device requests it makes fails (1 = the first).
fn request_types() -> Vec<(&'static str, Request, u64, bool)> {
    let list = unmap_list(256, 8);
    let mut unmap = vec![0x42, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    unmap[8] = list.len() as u8;
    vec![
        ("READ(10)", read(0), 1, true),
        (
            "WRITE(10)",
            Request::data_out(&rw10(0x2A, 0, 8, 8), pattern(8, 4096)).timeout(40),
            1,
            false,
        ),
        (
            "WRITE(10) FUA, the write failing",
            Request::data_out(&rw10(0x2A, 0x08, 16, 8), pattern(16, 4096)).timeout(40),
            1,
            false,
        ),
        (
            "WRITE(10) FUA, its FLUSH failing",
            Request::data_out(&rw10(0x2A, 0x08, 24, 8), pattern(24, 4096)).timeout(40),
            2,
            false,
        ),
        (
            "SYNCHRONIZE CACHE(10)",
            Request::scsi(&rw10(0x35, 0, 0, 0)).timeout(40),
            1,
            false,
        ),
        (
            "UNMAP",
            Request::data_out(&unmap, list).timeout(40),
            1,
            false,
        ),
        (
            "WRITE SAME(16) UNMAP",
            Request::data_out(&write_same16_unmap(512, 8), vec![0; 512]).timeout(40),
            1,
            false,
        ),
    ]
}

fn every_request_type_fails_with(mode: FaultMode, key: u8, read_asc: u8, write_asc: u8) {
    // The default device deallocates with WRITE_ZEROES; one without WRITE_ZEROES with DISCARD.
    for discard_only in [false, true] {
        let mut stack_options = options(1);
        if discard_only {
            stack_options.device.features = Some(features::DEFAULT & !features::WRITE_ZEROES);
        }
        every_request_type_fails_on(start(stack_options, |_| {}), mode, key, read_asc, write_asc);
    }
}

fn every_request_type_fails_on(
    stack: Stack,
    mode: FaultMode,
    key: u8,
    read_asc: u8,
    write_asc: u8,
) {
    for (what, request, nth, is_read) in request_types() {
        let fired = stack.device.faults_fired();
        stack.device.arm_fault(mode, nth);
        let c = stack.adapter.execute(request);
        assert_eq!(
            stack.device.faults_fired(),
            fired + 1,
            "{mode:?}: {what}: the fault did not fire"
        );
        let asc = if is_read { read_asc } else { write_asc };
        assert!(
            is_check(&c, key, asc),
            "{mode:?}: {what}: want CHECK CONDITION key {key:#x} ASC {asc:#04x}, got {}",
            brief(&c)
        );
        assert_eq!(c.data_transfer_length, 0, "{mode:?}: {what}: no data");
    }
    // SRB_FUNCTION_FLUSH (no CDB, no sense buffer): any failure, never SUCCESS.
    stack.device.arm_fault(mode, 1);
    let c = stack
        .adapter
        .execute(Request::function(function::FLUSH).timeout(40));
    assert_ne!(
        status(&c),
        ffi::SRB_STATUS_SUCCESS,
        "{mode:?}: SRB_FUNCTION_FLUSH: {}",
        brief(&c)
    );
    assert!(!stack.device.fault_armed(), "{mode:?}: FLUSH fault unused");
    // The disk still works.
    let c = stack.adapter.execute(read(0));
    assert_eq!(status(&c), ffi::SRB_STATUS_SUCCESS, "{mode:?}: read after");
    assert_no_reset(&stack);
    assert_clean(&stack);
}

#[test]
fn unsupp_fails_every_request_type_with_invalid_command() {
    every_request_type_fails_with(FaultMode::UnsuppStatus, ILLEGAL_REQUEST, 0x20, 0x20);
}

#[test]
fn ioerr_fails_every_request_type_with_a_medium_error() {
    every_request_type_fails_with(FaultMode::IoErrStatus, MEDIUM_ERROR, 0x11, 0x0C);
}

// ------------------------------------------------------------------------------------------
// Probe: the GET_ID status ignored; GET_ID failing or timing out.

fn vpd_80(stack: &Stack) -> Vec<u8> {
    let c = stack
        .adapter
        .execute(Request::data_in(&[0x12, 0x01, 0x80, 0x00, 0xFF, 0x00], 255));
    assert!(
        matches!(
            status(&c),
            ffi::SRB_STATUS_SUCCESS | ffi::SRB_STATUS_DATA_OVERRUN
        ),
        "INQUIRY VPD 80h: {}",
        brief(&c)
    );
    c.data
}

/// Whether a stack started with `opts` reports the device's serial once the device has answered
/// GET_ID (the driver polls for 1 ms at start and takes a later answer from queue 0's next
/// drain, which the answer's interrupt starts): VPD 80h is read until it carries the serial or
/// the deadline passes.
fn serial_read_at_start(opts: StackOptions) -> bool {
    let stack = start(opts, |_| {});
    let end = Instant::now() + DEADLINE;
    let seen = loop {
        if contains(&vpd_80(&stack), SERIAL) {
            break true;
        }
        if Instant::now() > end {
            break false;
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    assert_clean(&stack);
    seen
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// GET_ID (the first request the device sees) fails: the serial the device wrote into the
/// buffer before its failure status is not taken; the disk serves I/O.
#[test]
fn a_failed_get_id_gives_no_serial() {
    for mode in [FaultMode::IoErrStatus, FaultMode::UnsuppStatus] {
        let stack = start(options(1), |d| d.arm_fault(mode, 1));
        // On a loaded machine the device may answer after the driver's 1 ms of polling, and
        // the driver then takes the answer from the used ring later: wait for the answer, then
        // complete a read behind it on the one queue (its drain has passed the answer).
        // (The fault fires when the device takes the request, and GET_ID is counted when it
        // has run: wait for both.)
        wait_for(&stack, "the device answered GET_ID", |s| {
            s.device.faults_fired() == 1 && total(s, |c| c.get_ids) >= 1
        });
        assert_eq!(total(&stack, |c| c.get_ids), 1, "{mode:?}: one GET_ID");
        let c = stack.adapter.execute(read(0));
        assert_eq!(
            status(&c),
            ffi::SRB_STATUS_SUCCESS,
            "{mode:?}: read behind GET_ID"
        );
        let page = vpd_80(&stack);
        assert!(
            !contains(&page, SERIAL),
            "{mode:?}: the serial of a failed GET_ID was used: {page:02x?}"
        );
        // Without the failure, the page carries it (the check above can fail).
        assert!(
            serial_read_at_start(options(4)),
            "no serial from a good GET_ID"
        );
        let c = stack.adapter.execute(read(0));
        assert_eq!(status(&c), ffi::SRB_STATUS_SUCCESS, "{mode:?}: read");
        assert_clean(&stack);
    }
}

/// GET_ID never answered, or answered only after the driver stopped polling for it: start-up
/// is not held up, the disk serves I/O on every queue (queue 0 included, whose used ring
/// carries the late answer), and no request times out.
#[test]
fn a_get_id_that_times_out_does_not_hold_up_the_disk() {
    for mode in [FaultMode::LostRequest, FaultMode::Slow] {
        let stack = start(options(2), |d| {
            d.set_slow_ms(100);
            d.arm_fault(mode, 1);
            prepare_data(d, 0, 64);
        });
        if mode == FaultMode::LostRequest {
            let page = vpd_80(&stack);
            assert!(!contains(&page, SERIAL), "{mode:?}: serial without GET_ID");
        }
        if mode == FaultMode::Slow {
            wait_for(&stack, "the late GET_ID was answered", |s| {
                s.device.holds_ended() == 1
            });
        }
        for q in 0..2u32 {
            let adapter = &stack.adapter;
            let handles = std::thread::scope(|s| {
                s.spawn(move || {
                    (0..32u32)
                        .map(|i| adapter.submit(read(8 * (32 * q + i))))
                        .collect::<Vec<_>>()
                })
                .join()
                .unwrap()
            });
            for (i, c) in wait_all(&stack, handles).iter().enumerate() {
                assert_eq!(
                    status(c),
                    ffi::SRB_STATUS_SUCCESS,
                    "{mode:?}: {i}: {}",
                    brief(c)
                );
                assert!(c.data == pattern(8 * (32 * u64::from(q) + i as u64), 4096));
            }
        }
        if mode == FaultMode::LostRequest {
            // Never answered: no serial, and the GET_ID costs the queue one ring entry.
            let page = vpd_80(&stack);
            assert!(!contains(&page, SERIAL), "{mode:?}: serial without GET_ID");
        }
        assert_no_reset(&stack);
        assert_clean(&stack);
    }
}

// ------------------------------------------------------------------------------------------
// Probe: ScsiStopAdapter not resetting the device.

/// After ScsiStopAdapter the device is reset (device_status 0: no DMA, no interrupt); after
/// ScsiRestartAdapter it is live again and serves I/O.
#[test]
fn stop_adapter_resets_the_device_and_restart_brings_it_back() {
    for queues in [1u16, 4] {
        let stack = start(options(queues), |d| prepare_data(d, 0, 8));
        let c = stack.adapter.execute(read(0));
        assert_eq!(status(&c), ffi::SRB_STATUS_SUCCESS);
        assert_ne!(stack.device.status(), 0, "running device has a status");
        assert_eq!(stack.adapter.stop(), Some(0), "ScsiStopAdapter");
        // Quiet: reset (device_status 0), or, when the device did not finish its reset within
        // the 1 ms ScsiStopAdapter may wait (a loaded machine), its DMA cut.
        assert!(
            stack.device.status() == 0 || stack.device.dma_cut(),
            "{queues} queue(s): device_status {:#04x} after ScsiStopAdapter, DMA not cut",
            stack.device.status()
        );
        stack.adapter.restart().expect("ScsiRestartAdapter");
        wait_for(&stack, "DRIVER_OK after restart", |s| {
            s.device.status() & 0x0F == 0x0F && !s.device.dma_cut()
        });
        for i in 0..8u32 {
            let c = stack.adapter.execute(read(8 * i));
            assert_eq!(
                status(&c),
                ffi::SRB_STATUS_SUCCESS,
                "after restart: {}",
                brief(&c)
            );
            assert!(c.data == pattern(u64::from(8 * i), 4096));
        }
        assert_clean(&stack);
    }
}

// ------------------------------------------------------------------------------------------
// Probe: HwStorResetBus failing in dump mode.

/// A crash-dump stack: HwStorResetBus succeeds (a FALSE would make the dump fail), and the disk
/// still reads and writes afterwards.
#[test]
fn reset_bus_succeeds_on_a_dump_stack() {
    let mut opts = options(1);
    opts.dump = true;
    let stack = start(opts, |d| prepare_data(d, 0, 4));
    assert!(stack.adapter.reset_bus(), "HwStorResetBus in dump mode");
    let c = stack
        .adapter
        .execute(Request::data_out(&rw10(0x2A, 0, 32, 8), pattern(32, 4096)).timeout(40));
    assert_eq!(status(&c), ffi::SRB_STATUS_SUCCESS, "write: {}", brief(&c));
    let c = stack
        .adapter
        .execute(Request::data_in(&rw10(0x28, 0, 32, 8), 4096).timeout(40));
    assert_eq!(status(&c), ffi::SRB_STATUS_SUCCESS, "read: {}", brief(&c));
    assert!(c.data == pattern(32, 4096));
    assert_clean(&stack);
}

// ------------------------------------------------------------------------------------------
// Probe: a data buffer shorter than the CDB's transfer accepted.

/// READ(10) and WRITE(10) of 8 blocks (4 KiB) with a 2 KiB buffer: ILLEGAL REQUEST, INVALID
/// FIELD IN CDB, and nothing reaches the device (it would write past the buffer).
#[test]
fn a_buffer_shorter_than_the_transfer_is_refused() {
    let stack = start(options(1), |_| {});
    let before = stack.device.counters();
    let c = stack
        .adapter
        .execute(Request::data_in(&rw10(0x28, 0, 0, 8), 2048).timeout(40));
    assert!(
        is_check(&c, ILLEGAL_REQUEST, 0x24),
        "short READ: {}",
        brief(&c)
    );
    let c = stack
        .adapter
        .execute(Request::data_out(&rw10(0x2A, 0, 0, 8), vec![0xAB; 2048]).timeout(40));
    assert!(
        is_check(&c, ILLEGAL_REQUEST, 0x24),
        "short WRITE: {}",
        brief(&c)
    );
    let after = stack.device.counters();
    let sum =
        |v: &[vioblk_sim::device::QueueCounters]| v.iter().map(|c| c.reads + c.writes).sum::<u64>();
    assert_eq!(
        sum(&before),
        sum(&after),
        "a short request reached the device"
    );
    // Exactly as long is fine.
    let c = stack
        .adapter
        .execute(Request::data_in(&rw10(0x28, 0, 0, 4), 2048).timeout(40));
    assert_eq!(status(&c), ffi::SRB_STATUS_SUCCESS, "{}", brief(&c));
    assert_clean(&stack);
}

// ------------------------------------------------------------------------------------------
// Probe: the broken-device fast fail in BuildIo removed.

/// A device that never acknowledges a reset is given up on: from then on each request fails at
/// once with HARDWARE ERROR (not after Storport's 20 s timeout), and the device sees none.
#[test]
fn a_device_given_up_on_fails_requests_at_once() {
    let stack = start(options(1), |d| prepare_data(d, 0, 4));
    stack.device.ignore_resets(u32::MAX);
    stack.device.arm_fault(FaultMode::NeedsReset, 1);
    let first = stack.adapter.submit(read(0));
    let c = wait_all(&stack, vec![first]).remove(0);
    assert!(
        status(&c) == ffi::SRB_STATUS_BUS_RESET || is_check(&c, HARDWARE_ERROR, 0x44),
        "the request the device dropped: {}",
        brief(&c)
    );
    // The driver gives up after its restart polls (about a second of reset DPCs).
    wait_for(&stack, "the driver gave up on the device", |s| {
        s.adapter.log().iter().any(|l| l.contains("code 0x130002"))
    });
    let served = total(&stack, |c| c.reads);
    for i in 0..4u32 {
        let h = stack.adapter.submit(read(8 * i));
        // Far less than the request's timeout: the driver answers it itself.
        let Some(c) = h.wait_timeout(Duration::from_secs(5)) else {
            hung(
                &stack,
                "a request to a dead device waited for Storport's timeout",
            );
        };
        assert!(
            is_check(&c, HARDWARE_ERROR, 0x44),
            "request {i} to a dead device: {}",
            brief(&c)
        );
    }
    assert_eq!(
        total(&stack, |c| c.reads),
        served,
        "the dead device was sent requests"
    );
    assert!(stack.violations().is_empty(), "{:?}", stack.violations());
}

// ------------------------------------------------------------------------------------------
// FindAdapter on a function that is not virtio-blk, or that refuses the features.

/// The device model behind a PCI function that differs in one way.
struct Altered {
    inner: Arc<VirtioBlkDevice>,
    /// Answer this PCI device id instead of virtio-blk's.
    device_id: Option<u16>,
    /// Never keep FEATURES_OK set (the device refuses the features the driver accepted).
    refuse_features: bool,
}

/// The modern virtio-pci layout of the model: common configuration at offset 0 of BAR 4,
/// `device_status` at byte 0x14 of it (VIRTIO 1.2 4.1.4.3).
const DEVICE_STATUS: (u8, u64) = (4, 0x14);
const FEATURES_OK: u8 = 8;
const FAILED: u8 = 0x80;

impl PciDevice for Altered {
    fn config_read(&self, offset: u16, data: &mut [u8]) {
        self.inner.config_read(offset, data);
        if let Some(id) = self.device_id {
            for (i, byte) in data.iter_mut().enumerate() {
                match usize::from(offset) + i {
                    2 => *byte = id.to_le_bytes()[0],
                    3 => *byte = id.to_le_bytes()[1],
                    _ => {}
                }
            }
        }
    }
    fn config_write(&self, offset: u16, data: &[u8]) {
        self.inner.config_write(offset, data);
    }
    fn bars(&self) -> Vec<Bar> {
        self.inner.bars()
    }
    fn bar_read(&self, bar: u8, offset: u64, data: &mut [u8]) {
        self.inner.bar_read(bar, offset, data);
        if self.refuse_features && (bar, offset) == DEVICE_STATUS && data.len() == 1 {
            data[0] &= !FEATURES_OK;
        }
    }
    fn bar_write(&self, bar: u8, offset: u64, data: &[u8]) {
        self.inner.bar_write(bar, offset, data);
    }
    fn connect_interrupts(&self, sink: Arc<dyn InterruptSink>) {
        self.inner.connect_interrupts(sink);
    }
    fn msix_message_count(&self) -> u16 {
        self.inner.msix_message_count()
    }
    fn intx_asserted(&self) -> bool {
        self.inner.intx_asserted()
    }
    fn dma_watch(&self) -> Option<Arc<DmaWatch>> {
        self.inner.dma_watch()
    }
}

fn start_altered(device_id: Option<u16>, refuse_features: bool) -> (Arc<VirtioBlkDevice>, bool) {
    let inner = Arc::new(VirtioBlkDevice::new(DeviceConfig::default()).unwrap());
    let memory = inner.guest_memory();
    let altered = Arc::new(Altered {
        inner: inner.clone(),
        device_id,
        refuse_features,
    });
    let started = Stack::on_device(altered, memory, options(4)).is_ok();
    (inner, started)
}

/// A virtio function that is not a block device (virtio-net, modern 0x1041; transitional
/// 0x1000): FindAdapter does not claim it, and the device is left untouched.
#[test]
fn find_adapter_does_not_claim_another_virtio_device() {
    for id in [0x1041u16, 0x1000, 0x1043] {
        let (device, started) = start_altered(Some(id), false);
        assert!(!started, "device id {id:#06x} was claimed as a disk");
        assert_eq!(device.status(), 0, "device id {id:#06x} was touched");
    }
    // The same wrapper with virtio-blk's id starts: the refusal above is the id's doing.
    let (device, started) = start_altered(Some(0x1042), false);
    assert!(started, "virtio-blk behind the wrapper");
    assert_eq!(device.status() & 0x0F, 0x0F, "DRIVER_OK");
}

/// A device that clears FEATURES_OK (it cannot work with what the driver accepted): the adapter
/// does not start, the device is told FAILED, and it never got DRIVER_OK.
#[test]
fn find_adapter_fails_on_a_device_that_refuses_the_features() {
    let (device, started) = start_altered(None, true);
    assert!(!started, "an adapter started on refused features");
    let s = device.status();
    assert_eq!(s & FAILED, FAILED, "status {s:#04x}: FAILED not set");
    assert_eq!(s & 0x04, 0, "status {s:#04x}: DRIVER_OK set");
    // The same wrapper without the refusal starts.
    let (_, started) = start_altered(None, false);
    assert!(started);
}

// ------------------------------------------------------------------------------------------
// BuildIo's address check (`||` -> `&&` there would let a request to another target on path 0
// reach the one disk).

/// The adapter has one disk, at path 0, target 0, LUN 0: a request to any other target or path
/// fails with NO_DEVICE, to another LUN with INVALID_LUN, and none reaches the device.
#[test]
fn only_path_0_target_0_lun_0_is_a_disk() {
    let stack = start(options(1), |d| prepare_data(d, 0, 1));
    let served = |s: &Stack| total(s, |c| c.reads);
    let before = served(&stack);
    for ((path, target, lun), want) in [
        ((0, 1, 0), ffi::SRB_STATUS_NO_DEVICE),
        ((1, 0, 0), ffi::SRB_STATUS_NO_DEVICE),
        ((1, 1, 0), ffi::SRB_STATUS_NO_DEVICE),
        ((0, 0, 1), ffi::SRB_STATUS_INVALID_LUN),
    ] {
        let c = stack.adapter.execute(read(0).at(path, target, lun));
        assert_eq!(
            status(&c),
            want,
            "read at {path}:{target}:{lun}: {}",
            brief(&c)
        );
    }
    assert_eq!(
        served(&stack),
        before,
        "a request for another address reached the disk"
    );
    let c = stack.adapter.execute(read(0));
    assert_eq!(status(&c), ffi::SRB_STATUS_SUCCESS, "0:0:0: {}", brief(&c));
    assert!(c.data == pattern(0, 4096));
    assert_clean(&stack);
}

/// GET_ID answered 100 ms after start, long after HwStorInitialize stopped polling for it (1 ms),
/// with reads in flight on every queue meanwhile: the driver takes the late answer from queue
/// 0's used ring (VPD 80h then carries the device's serial), never completes it as a request
/// nor mistakes it for one (every read returns its own data; the ring id GET_ID held is handed
/// out again afterwards), and nothing waits for a timeout. In every interrupt mode, over split
/// and packed rings, with and without indirect descriptors and event idx.
#[test]
fn a_late_get_id_answer_still_gives_the_serial() {
    let plain = features::DEFAULT & !(features::INDIRECT_DESC | features::EVENT_IDX);
    // The name, the options, and whether every request goes to queue 0.
    let configurations: [(&str, StackOptions, bool); 5] = [
        ("4 queues", options(4), false),
        ("1 queue", options(1), true),
        (
            "INTx",
            StackOptions {
                intx: true,
                ..options(2)
            },
            true,
        ),
        (
            "packed",
            {
                let mut opts = options(2);
                opts.device.features = Some(features::DEFAULT | features::RING_PACKED);
                opts
            },
            false,
        ),
        (
            "chained, no event idx",
            {
                let mut opts = options(2);
                opts.device.features = Some(plain);
                opts
            },
            false,
        ),
    ];
    for (what, opts, one_queue) in configurations {
        let stack = start(opts, |d| {
            d.set_slow_ms(100);
            d.arm_fault(FaultMode::Slow, 1);
            prepare_data(d, 0, 64);
        });
        // Reads on every queue, from several threads, while the device holds GET_ID (those on
        // queue 0 wait behind it: the device serves a queue in order).
        let adapter = &stack.adapter;
        let handles = std::thread::scope(|s| {
            let threads: Vec<_> = (0..4u32)
                .map(|t| {
                    s.spawn(move || {
                        (0..8u32)
                            .map(|i| adapter.submit(read(8 * (8 * t + i))))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            threads
                .into_iter()
                .flat_map(|t| t.join().unwrap())
                .collect::<Vec<_>>()
        });
        for (i, c) in wait_all(&stack, handles).iter().enumerate() {
            assert_eq!(
                status(c),
                ffi::SRB_STATUS_SUCCESS,
                "{what}: read {i}: {}",
                brief(c)
            );
            assert!(
                c.data == pattern(8 * i as u64, 4096),
                "{what}: read {i}: data"
            );
        }
        wait_for(&stack, "the late GET_ID was answered", |s| {
            s.device.holds_ended() == 1
        });
        assert_eq!(total(&stack, |c| c.get_ids), 1, "{what}: one GET_ID");
        if one_queue {
            // The reads completed after GET_ID on the one used ring, and the drain that took
            // the answer recorded it before completing anything after it.
            assert_eq!(
                &vpd_80(&stack)[4..],
                SERIAL,
                "{what}: VPD 80h after the reads"
            );
        }
        // Elsewhere the answer raised queue 0's interrupt, and the drain it started records it.
        wait_for(
            &stack,
            &format!("{what}: VPD 80h shows the late serial"),
            |s| contains(&vpd_80(s), SERIAL),
        );
        // More reads: the ring id GET_ID held is free again and names a request now.
        for round in 0..2u32 {
            let handles: Vec<_> = (0..32u32)
                .map(|i| stack.adapter.submit(read(8 * ((i + round) % 64))))
                .collect();
            for (i, c) in wait_all(&stack, handles).iter().enumerate() {
                let lba = 8 * ((i as u32 + round) % 64);
                assert_eq!(status(c), ffi::SRB_STATUS_SUCCESS, "{what}: {}", brief(c));
                assert!(
                    c.data == pattern(u64::from(lba), 4096),
                    "{what}: data at {lba}"
                );
            }
        }
        assert_eq!(&vpd_80(&stack)[4..], SERIAL, "{what}: the serial stays");
        assert_no_reset(&stack);
        assert_clean(&stack);
    }
}

// ------------------------------------------------------------------------------------------
// Surviving mutant `delete ! in Queue::submit_internal`: over packed rings, GET_ID was never sent.

/// Over packed rings as over split ones, the serial number comes from GET_ID.
#[test]
fn get_id_is_sent_over_packed_rings_too() {
    for packed in [false, true] {
        let mut opts = options(4);
        // Named either way, so that VIOBLK_SIM_RING=packed does not turn the split case packed.
        let ring = if packed { features::RING_PACKED } else { 0 };
        opts.device.features = Some(features::DEFAULT | ring);
        let stack = start(opts.clone(), |_| {});
        assert_eq!(
            stack.device.negotiated_features() & features::RING_PACKED != 0,
            packed
        );
        assert_eq!(total(&stack, |c| c.get_ids), 1, "packed {packed}: GET_ID");
        drop(stack);
        assert!(
            serial_read_at_start(opts),
            "packed {packed}: no serial in VPD 80h"
        );
    }
}

// ------------------------------------------------------------------------------------------
// A surprise removal is logged. (The mutant `delete ! in device_removed` survives this test: on
// the PnP path the second notification logs instead of the first.)

/// PnP surprise removal: the driver logs it (StorPortLogError 0x00130003) once, and fails new
/// requests with NO_DEVICE.
#[test]
fn surprise_removal_is_logged_once() {
    let stack = start(options(2), |_| {});
    let _ = stack.adapter.surprise_remove();
    let logged = stack
        .adapter
        .log()
        .iter()
        .filter(|l| l.contains("code 0x130003"))
        .count();
    assert_eq!(logged, 1, "{:?}", stack.adapter.log());
    assert!(stack.violations().is_empty(), "{:?}", stack.violations());
}
