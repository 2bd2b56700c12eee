//! The layer's second miniport: the RAM disk of `examples/ramdisk` (storport-ramdisk), built on
//! `crates/storport` alone, loaded into the user-mode Storport with every rule checked.
//!
//! It proves the layer is not vioblk's alone: the RAM disk's identity and capacity, patterned
//! WRITE(10)/WRITE(16) from several threads with many requests in flight read back with
//! READ(10)/READ(16), exact sense data for what it refuses, the StartIo lock held around every
//! StartIo, and no Storport violation.

mod common;

use std::sync::Arc;

use storport_ramdisk::{BLOCK_COUNT, DISK_BYTES, MAX_TRANSFER};
use storport_sim::device::{Bar, InterruptSink, PciDevice};
use storport_sim::*;
use storport_sys as ffi;

/// What the RAM disk adapter sits on: a PCI function with no BARs and no interrupts.
struct NoHardware;

impl PciDevice for NoHardware {
    fn config_read(&self, _offset: u16, data: &mut [u8]) {
        data.fill(0);
    }
    fn config_write(&self, _offset: u16, _data: &[u8]) {}
    fn bars(&self) -> Vec<Bar> {
        Vec::new()
    }
    fn bar_read(&self, _bar: u8, _offset: u64, data: &mut [u8]) {
        data.fill(0xFF);
    }
    fn bar_write(&self, _bar: u8, _offset: u64, _data: &[u8]) {}
    fn connect_interrupts(&self, _sink: Arc<dyn InterruptSink>) {}
    fn msix_message_count(&self) -> u16 {
        0
    }
    fn intx_asserted(&self) -> bool {
        false
    }
}

const BLOCK: usize = 512;

/// Loads the RAM disk (DriverEntry -> StorPortInitialize) and starts its adapter.
fn start() -> (Port, Adapter) {
    start_with(PortOptions::default(), None)
}

/// [`start`] with port options and the adapter's argument string.
fn start_with(options: PortOptions, arguments: Option<&str>) -> (Port, Adapter) {
    let port = Port::new(options);
    let registration = port
        .load_driver(storport_ramdisk::driver_entry)
        .expect("the RAM disk registers");
    assert_eq!(registration.status, 0);
    let adapter = port
        .start_adapter(
            Arc::new(NoHardware),
            common::memory(32),
            AdapterOptions {
                argument_string: arguments.map(str::to_string),
                ..AdapterOptions::default()
            },
        )
        .expect("the RAM disk adapter starts");
    (port, adapter)
}

fn assert_no_violations(port: &Port) {
    let violations = port.violations();
    assert!(
        violations.is_empty(),
        "{}",
        violations
            .iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

fn read10(lba: u32, blocks: u16) -> Vec<u8> {
    let mut cdb = vec![0x28, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    cdb[2..6].copy_from_slice(&lba.to_be_bytes());
    cdb[7..9].copy_from_slice(&blocks.to_be_bytes());
    cdb
}

fn write10(lba: u32, blocks: u16) -> Vec<u8> {
    let mut cdb = read10(lba, blocks);
    cdb[0] = 0x2A;
    cdb
}

fn read16(lba: u64, blocks: u32) -> Vec<u8> {
    let mut cdb = vec![0x88, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    cdb[2..10].copy_from_slice(&lba.to_be_bytes());
    cdb[10..14].copy_from_slice(&blocks.to_be_bytes());
    cdb
}

fn write16(lba: u64, blocks: u32) -> Vec<u8> {
    let mut cdb = read16(lba, blocks);
    cdb[0] = 0x8A;
    cdb
}

/// A READ or WRITE of `blocks` at `lba`, in the 10- or 16-byte form.
fn io_cdb(write: bool, long: bool, lba: u64, blocks: u32) -> Vec<u8> {
    match (write, long) {
        (false, false) => read10(lba as u32, blocks as u16),
        (true, false) => write10(lba as u32, blocks as u16),
        (false, true) => read16(lba, blocks),
        (true, true) => write16(lba, blocks),
    }
}

/// Fixed-format sense data: ILLEGAL REQUEST with `asc`/00.
fn illegal_request(asc: u8) -> Vec<u8> {
    vec![
        0x70, 0, 0x05, 0, 0, 0, 0, 10, 0, 0, 0, 0, asc, 0, 0, 0, 0, 0,
    ]
}

/// SRB_STATUS_ERROR | SRB_STATUS_AUTOSENSE_VALID.
const ERROR_WITH_SENSE: u8 = ffi::SRB_STATUS_ERROR | ffi::SRB_STATUS_AUTOSENSE_VALID;

/// Fills `data` (whole blocks starting at `lba`) with a pattern naming the block, the writer and
/// the generation, so a block read back from the wrong place or the wrong write shows.
fn pattern(data: &mut [u8], lba: u64, writer: u64, generation: u64) {
    for (i, block) in data.chunks_mut(BLOCK).enumerate() {
        for (j, word) in block.chunks_mut(8).enumerate() {
            let value = (lba + i as u64) << 40 | writer << 32 | generation << 12 | j as u64;
            word.copy_from_slice(&value.to_le_bytes());
        }
    }
}

/// A small deterministic generator (xorshift64*), one per thread.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

/// Sends requests to an adapter and counts them.
struct Sender<'a> {
    adapter: &'a Adapter,
    sent: &'a std::cell::Cell<u64>,
}

impl Sender<'_> {
    fn execute(&self, request: Request) -> Completion {
        self.sent.set(self.sent.get() + 1);
        self.adapter.execute(request)
    }
}

#[test]
fn ramdisk_reports_identity_capacity_and_answers_without_the_disk() {
    let (port, adapter) = start();
    // Every request goes through this, so the count of BuildIo calls is known.
    let sent = std::cell::Cell::new(0u64);
    let a = Sender {
        adapter: &adapter,
        sent: &sent,
    };
    let reg = port.registration().expect("registered");
    assert_eq!(
        reg.hw_init.MapBuffers, 3,
        "STOR_MAP_ALL_BUFFERS_INCLUDING_READ_WRITE"
    );
    assert_eq!(reg.hw_init.NumberOfAccessRanges, 0);

    let c = a.execute(Request::data_in(&[0x12, 0, 0, 0, 36, 0], 36));
    assert_eq!(c.srb_status, ffi::SRB_STATUS_SUCCESS, "{c:?}");
    assert_eq!(c.data.len(), 36);
    assert_eq!(c.data[..8], [0x00, 0, 0x06, 0x02, 31, 0, 0, 0x02]);
    assert_eq!(&c.data[8..36], b"STORPORTRAM DISK        0001");
    // A larger buffer: the 36 bytes moved are an underrun.
    let c = a.execute(Request::data_in(&[0x12, 0, 0, 0, 96, 0], 96));
    assert_eq!(c.srb_status, ffi::SRB_STATUS_DATA_OVERRUN, "{c:?}");
    assert_eq!(c.data_transfer_length, 36);
    let c = a.execute(Request::data_in(&[0x12, 1, 0, 0, 8, 0], 8));
    assert_eq!(c.srb_status, ffi::SRB_STATUS_DATA_OVERRUN, "{c:?}");
    assert_eq!(c.data, [0, 0, 0, 1, 0]);

    let c = a.execute(Request::data_in(&[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], 8));
    assert_eq!(c.srb_status, ffi::SRB_STATUS_SUCCESS, "{c:?}");
    let last = (BLOCK_COUNT - 1) as u32;
    assert_eq!(c.data[..4], last.to_be_bytes());
    assert_eq!(c.data[4..8], 512u32.to_be_bytes());
    let mut rc16 = vec![0x9E, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0];
    let c = a.execute(Request::data_in(&rc16, 32));
    assert_eq!(c.srb_status, ffi::SRB_STATUS_SUCCESS, "{c:?}");
    assert_eq!(c.data[..8], (BLOCK_COUNT - 1).to_be_bytes());
    assert_eq!(c.data[8..12], 512u32.to_be_bytes());
    assert_eq!(c.data[12..], [0; 20]);
    assert_eq!(BLOCK_COUNT * 512, DISK_BYTES as u64);
    // ALLOCATION LENGTH 12 cuts the answer.
    rc16[13] = 12;
    let c = a.execute(Request::data_in(&rc16, 32));
    assert_eq!(c.data_transfer_length, 12, "{c:?}");

    let c = a.execute(Request::data_in(&[0x1A, 0, 0x3F, 0, 4, 0], 4));
    assert_eq!(c.srb_status, ffi::SRB_STATUS_SUCCESS, "{c:?}");
    assert_eq!(c.data, [3, 0, 0, 0]);
    let c = a.execute(Request::data_in(
        &[0xA0, 0, 0, 0, 0, 0, 0, 0, 0, 16, 0, 0],
        16,
    ));
    assert_eq!(c.srb_status, ffi::SRB_STATUS_SUCCESS, "{c:?}");
    assert_eq!(c.data, [0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);

    for cdb in [
        &[0x00, 0, 0, 0, 0, 0][..],
        &[0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        &[0x91, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    ] {
        let c = a.execute(Request::scsi(cdb));
        assert_eq!(c.srb_status, ffi::SRB_STATUS_SUCCESS, "{cdb:02x?}: {c:?}");
    }
    for f in [
        function::FLUSH,
        function::SHUTDOWN,
        function::RESET_LOGICAL_UNIT,
    ] {
        let c = a.execute(Request::function(f));
        assert_eq!(c.srb_status, ffi::SRB_STATUS_SUCCESS, "function {f:#x}");
    }
    let c = a.execute(Request::function(function::IO_CONTROL));
    assert_eq!(c.srb_status, ffi::SRB_STATUS_INVALID_REQUEST);

    // None of these needed the disk: BuildIo answered them all; StartIo never ran.
    let counts = adapter.lock_counts();
    assert_eq!(counts.runs(CallbackKind::BuildIo), sent.get());
    assert_eq!(counts.runs(CallbackKind::StartIo), 0);
    drop(adapter);
    assert_no_violations(&port);
}

#[test]
fn ramdisk_refuses_with_exact_sense_and_leaves_the_disk_untouched() {
    let (port, a) = start();
    // An operation code it does not serve (LOG SENSE): 05/20/00.
    let c = a.execute(Request::data_in(&[0x4D, 0, 0, 0, 0, 0, 0, 0, 64, 0], 64));
    assert_eq!(c.srb_status, ERROR_WITH_SENSE, "{c:?}");
    assert_eq!(c.scsi_status, ffi::SCSISTAT_CHECK_CONDITION);
    assert_eq!(c.sense, illegal_request(0x20));
    assert_eq!(c.data_transfer_length, 0);

    // Blocks past the end: 05/21/00, in every form, including an LBA that overflows.
    let past_end: [Request; 4] = [
        Request::data_in(&read10((BLOCK_COUNT - 1) as u32, 2), 2 * BLOCK as u32),
        Request::data_out(&write10(BLOCK_COUNT as u32, 1), vec![0xEE; BLOCK]),
        Request::data_out(&write16(BLOCK_COUNT - 1, 2), vec![0xEE; 2 * BLOCK]),
        Request::data_in(&read16(u64::MAX, 1), BLOCK as u32),
    ];
    for request in past_end {
        let cdb = request.cdb.clone();
        let c = a.execute(request);
        assert_eq!(c.srb_status, ERROR_WITH_SENSE, "{cdb:02x?}: {c:?}");
        assert_eq!(c.scsi_status, ffi::SCSISTAT_CHECK_CONDITION, "{cdb:02x?}");
        assert_eq!(c.sense, illegal_request(0x21), "{cdb:02x?}");
    }

    // Invalid fields: a VPD page it lacks, a buffer shorter than the transfer: 05/24/00.
    let c = a.execute(Request::data_in(&[0x12, 1, 0x83, 0, 64, 0], 64));
    assert_eq!(c.srb_status, ERROR_WITH_SENSE, "{c:?}");
    assert_eq!(c.sense, illegal_request(0x24));
    let c = a.execute(Request::data_out(&write10(0, 2), vec![0xEE; BLOCK]));
    assert_eq!(c.srb_status, ERROR_WITH_SENSE, "{c:?}");
    assert_eq!(c.sense, illegal_request(0x24));

    // Without autosense: CHECK CONDITION, no sense, no AUTOSENSE_VALID.
    let c = a.execute(Request {
        flags: flags::DATA_IN | flags::DISABLE_AUTOSENSE,
        ..Request::data_in(&[0x4D, 0, 0, 0, 0, 0, 0, 0, 64, 0], 64)
    });
    assert_eq!(c.srb_status, ffi::SRB_STATUS_ERROR, "{c:?}");
    assert_eq!(c.scsi_status, ffi::SCSISTAT_CHECK_CONDITION);
    assert!(c.sense.is_empty());

    // Only LUN 0 of target 0 on path 0 exists.
    let inquiry = [0x12, 0, 0, 0, 36, 0];
    let c = a.execute(Request::data_in(&inquiry, 36).at(0, 0, 1));
    assert_eq!(c.srb_status, ffi::SRB_STATUS_INVALID_LUN, "{c:?}");
    let c = a.execute(Request::data_in(&inquiry, 36).at(0, 1, 0));
    assert_eq!(c.srb_status, ffi::SRB_STATUS_NO_DEVICE, "{c:?}");
    let c = a.execute(Request::data_out(&write10(0, 1), vec![0xEE; BLOCK]).at(1, 0, 0));
    assert_eq!(c.srb_status, ffi::SRB_STATUS_NO_DEVICE, "{c:?}");

    // Nothing refused reached the disk: it still reads as zeros at both ends.
    for lba in [0, BLOCK_COUNT - 2] {
        let c = a.execute(Request::data_in(&read16(lba, 2), 2 * BLOCK as u32));
        assert_eq!(c.srb_status, ffi::SRB_STATUS_SUCCESS, "{c:?}");
        assert!(c.data.iter().all(|&b| b == 0), "LBA {lba} was written");
    }
    drop(a);
    assert_no_violations(&port);
}

/// Who held the StartIo lock around the RAM disk's StartIo calls.
struct StartIoLocks {
    start_ios: u64,
    /// Acquisitions by the port around StartIo (one channel).
    by_port: u64,
    /// Acquisitions by the miniport inside StartIo (concurrent channels).
    by_miniport: u64,
    /// Every lock the miniport took, in any callback.
    miniport_total: u64,
}

/// Patterned WRITE(10)/WRITE(16) from several threads, each with many requests in flight, read
/// back with READ(10)/READ(16) as they go and, after a bus reset and a stop/restart, over the
/// whole disk. Returns who held the StartIo lock.
fn patterned_io(a: &Adapter) -> StartIoLocks {
    const THREADS: u64 = 4;
    const ROUNDS: u64 = 24;
    /// Requests one thread has in flight at once; each owns one slot of the thread's region.
    const IN_FLIGHT: u64 = 16;
    let region = BLOCK_COUNT / THREADS;
    let slot = region / IN_FLIGHT;
    let max_blocks = u64::from(MAX_TRANSFER) / BLOCK as u64;

    let shadows: Vec<Vec<u8>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..THREADS)
            .map(|writer| {
                s.spawn(move || {
                    let first = writer * region;
                    let mut shadow = vec![0u8; region as usize * BLOCK];
                    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (writer + 1));
                    for generation in 1..=ROUNDS {
                        // IN_FLIGHT writes to disjoint slots, submitted before any is waited for
                        // (the RAM disk completes each inside StartIo, so what overlaps is the
                        // four threads' requests); odd rounds use WRITE(16), even WRITE(10).
                        let writes: Vec<_> = (0..IN_FLIGHT)
                            .map(|i| {
                                let count = 1 + rng.below(slot);
                                let offset = i * slot + rng.below(slot - count + 1);
                                let lba = first + offset;
                                let at = offset as usize * BLOCK;
                                let data = &mut shadow[at..at + count as usize * BLOCK];
                                pattern(data, lba, writer, generation);
                                let cdb = io_cdb(true, generation % 2 == 1, lba, count as u32);
                                (lba, a.submit(Request::data_out(&cdb, data.to_vec())))
                            })
                            .collect();
                        for (lba, handle) in writes {
                            let c = handle.wait();
                            assert_eq!(c.srb_status, ffi::SRB_STATUS_SUCCESS, "write {lba}: {c:?}");
                        }
                        // Then IN_FLIGHT reads anywhere in the region, READ(10) and READ(16) mixed.
                        let reads: Vec<_> = (0..IN_FLIGHT)
                            .map(|i| {
                                let count = 1 + rng.below(max_blocks.min(region));
                                let offset = rng.below(region - count + 1);
                                let cdb = io_cdb(false, i % 2 == 1, first + offset, count as u32);
                                let request =
                                    Request::data_in(&cdb, (count as usize * BLOCK) as u32);
                                (offset as usize, count as usize, a.submit(request))
                            })
                            .collect();
                        for (offset, count, handle) in reads {
                            let c = handle.wait();
                            assert_eq!(c.srb_status, ffi::SRB_STATUS_SUCCESS, "{c:?}");
                            let expected = &shadow[offset * BLOCK..(offset + count) * BLOCK];
                            assert!(
                                c.data == expected,
                                "writer {writer}, round {generation}: blocks {}..{} differ",
                                first + offset as u64,
                                first + (offset + count) as u64
                            );
                        }
                    }
                    shadow
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });

    // A bus reset and a stop/restart keep the bytes (they live in the device extension).
    assert!(a.reset_bus());
    assert_eq!(a.stop(), Some(0));
    a.restart().expect("restart");

    // The whole disk, read back in the largest transfers, is what the threads wrote.
    let disk: Vec<u8> = shadows.concat();
    assert_eq!(disk.len(), DISK_BYTES);
    for (i, expected) in disk.chunks(MAX_TRANSFER as usize).enumerate() {
        let lba = (i * MAX_TRANSFER as usize / BLOCK) as u64;
        let blocks = (expected.len() / BLOCK) as u32;
        let c = a.execute(Request::data_in(
            &io_cdb(false, i % 2 == 0, lba, blocks),
            expected.len() as u32,
        ));
        assert_eq!(c.srb_status, ffi::SRB_STATUS_SUCCESS, "{c:?}");
        assert!(c.data == expected, "blocks from {lba} differ");
    }

    // The lock discipline, as the port counted it (the callers check who held the lock).
    let counts = a.lock_counts();
    let start_ios = counts.runs(CallbackKind::StartIo);
    // Every READ and WRITE went to StartIo, nothing else did.
    let expected = THREADS * ROUNDS * 2 * IN_FLIGHT + (DISK_BYTES / MAX_TRANSFER as usize) as u64;
    assert_eq!(start_ios, expected);
    let start_io = CallbackKind::StartIo as usize;
    let lock = LockKind::StartIo as usize;
    StartIoLocks {
        start_ios,
        by_port: counts.port[start_io][lock],
        by_miniport: counts.miniport[start_io][lock],
        miniport_total: counts.miniport.iter().flatten().sum(),
    }
}

#[test]
fn ramdisk_keeps_patterned_writes_with_storport_holding_the_start_io_lock() {
    let (port, a) = start();
    assert_eq!(a.perf().0, 1, "one channel");
    let locks = patterned_io(&a);
    // One channel: Storport held the StartIo lock around every StartIo; the miniport took none.
    assert_eq!(locks.by_port, locks.start_ios);
    assert_eq!(locks.miniport_total, 0);
    drop(a);
    assert_no_violations(&port);
}

#[test]
fn ramdisk_keeps_patterned_writes_with_concurrent_channels_taking_the_start_io_lock() {
    let (port, a) = start_with(PortOptions::default(), Some("channels=4"));
    assert_eq!(a.perf().0, 4, "four concurrent channels granted");
    let locks = patterned_io(&a);
    // Concurrent channels: Storport held nothing; StartIo took the lock once per request.
    assert_eq!(locks.by_port, 0);
    assert_eq!(locks.by_miniport, locks.start_ios);
    assert_eq!(locks.miniport_total, locks.start_ios);
    drop(a);
    assert_no_violations(&port);
}

#[test]
fn ramdisk_falls_back_to_the_classic_lock_call() {
    // A Storport before Windows 10 1809: StorPortAcquireSpinLockEx is not implemented and the
    // layer falls back to StorPortAcquireSpinLock, with the same outcome.
    let options = PortOptions {
        acquire_spinlock_ex_not_implemented: true,
        ..PortOptions::default()
    };
    let (port, a) = start_with(options, Some("channels=2"));
    assert_eq!(a.perf().0, 2);
    record_lock_calls(true);
    let locks = patterned_io(&a);
    assert_eq!(locks.by_miniport, locks.start_ios);
    let calls: Vec<LockCall> = a
        .lock_calls()
        .into_iter()
        .filter(|c| c.callback == "HwStorStartIo")
        .collect();
    record_lock_calls(false);
    let count = |api: LockApi| calls.iter().filter(|c| c.api == api).count() as u64;
    // Each StartIo: the Ex call answered NOT_IMPLEMENTED, the classic StartIo-lock acquire, the
    // release.
    assert_eq!(count(LockApi::AcquireEx), locks.start_ios);
    assert!(
        calls
            .iter()
            .filter(|c| c.api == LockApi::AcquireEx)
            .all(|c| c.status == abi::STOR_STATUS_NOT_IMPLEMENTED)
    );
    assert_eq!(count(LockApi::Acquire), locks.start_ios);
    assert!(
        calls
            .iter()
            .filter(|c| c.api == LockApi::Acquire)
            .all(|c| c.kind == abi::START_IO_LOCK)
    );
    assert_eq!(count(LockApi::Release), locks.start_ios);
    drop(a);
    assert_no_violations(&port);
}
