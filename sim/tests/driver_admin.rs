//! What a Windows administrator meets around the disk (issue 17 items 2, 4 and 5), through the
//! whole stack: registry tunables read with StorPortRegistryRead in HwStorFindAdapter (clamped
//! and logged when out of range), the system event log entries (StorPortLogError) of every event
//! the driver reports, ETW events while a trace session listens (HwStorTracingEnabled), and
//! HwStorUnitControl's start and power types as Storport sends them.
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::Duration;

use storport_sim::{
    Adapter, AdapterOptions, EventLogEntry, PATIENCE, Port, PortOptions, Request, function,
};
use storport_sys as ffi;
use vioblk_sim::device::{DeviceConfig, FaultMode, VirtioBlkDevice, features};

// The driver's event log codes (src/hba/events.rs).
const BAD_COMPLETION: u32 = 0x0013_0000;
const RESET_NOT_ACKNOWLEDGED: u32 = 0x0013_0001;
const SURPRISE_REMOVAL: u32 = 0x0013_0003;
const CAPACITY_REFUSED: u32 = 0x0013_0004;
const RING_BROKEN: u32 = 0x0013_0005;
const RESET_STARTED: u32 = 0x0013_0006;
const RESET_COMPLETED: u32 = 0x0013_0007;
const CAPACITY_CHANGED: u32 = 0x0013_0008;
const TUNABLE_CLAMPED: u32 = 0x0013_0009;
const CONFIGURATION_REFUSED: u32 = 0x0013_000A;

struct Disk {
    port: Port,
    adapter: Adapter,
    device: Arc<VirtioBlkDevice>,
}

fn device(config: DeviceConfig) -> Arc<VirtioBlkDevice> {
    Arc::new(VirtioBlkDevice::new(config).expect("the device model starts"))
}

fn port() -> Port {
    let port = Port::new(PortOptions {
        reset_grace: Duration::from_secs(5),
        ..PortOptions::default()
    });
    port.load_driver(vioblk::DriverEntry)
        .expect("DriverEntry succeeds");
    port
}

fn start_on(device: Arc<VirtioBlkDevice>, options: AdapterOptions) -> Disk {
    let port = port();
    let adapter = port
        .start_adapter(device.clone(), device.guest_memory(), options)
        .expect("the adapter starts");
    Disk {
        port,
        adapter,
        device,
    }
}

fn start(queues: u16, registry: &[(&str, u32)], tracing: bool) -> Disk {
    start_on(
        device(DeviceConfig {
            num_queues: queues,
            ..DeviceConfig::default()
        }),
        AdapterOptions {
            registry: registry.iter().map(|&(n, v)| (n.to_owned(), v)).collect(),
            tracing,
            ..AdapterOptions::default()
        },
    )
}

fn rw10(opcode: u8, lba: u32, blocks: u16) -> Vec<u8> {
    let mut c = vec![opcode, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    c[2..6].copy_from_slice(&lba.to_be_bytes());
    c[7..9].copy_from_slice(&blocks.to_be_bytes());
    c
}

fn read(disk: &Disk, lba: u32) -> storport_sim::Completion {
    disk.adapter
        .execute(Request::data_in(&rw10(0x28, lba, 8), 4096))
}

fn assert_clean(disk: &Disk) {
    let violations = disk.port.violations();
    assert!(
        violations.is_empty(),
        "Storport violations: {violations:#?}"
    );
}

fn entries(disk: &Disk, code: u32) -> Vec<EventLogEntry> {
    disk.adapter
        .event_log()
        .into_iter()
        .filter(|e| e.code == code)
        .collect()
}

fn has(disk: &Disk, code: u32, unique_id: u32) -> bool {
    entries(disk, code).iter().any(|e| e.unique_id == unique_id)
}

fn wait_for_entry(disk: &Disk, code: u32, unique_id: u32) {
    disk.adapter
        .wait_until(
            format!("event log entry {code:#x} id {unique_id}"),
            PATIENCE,
            || has(disk, code, unique_id),
        )
        .unwrap_or_else(|e| panic!("{e}; the log: {:#x?}", disk.adapter.event_log()));
}

// ---- Item 4: registry tunables ------------------------------------------------------------

/// Without registry values the driver uses its defaults, reads every tunable once, and writes
/// nothing to the event log.
#[test]
fn without_registry_values_the_defaults_hold_and_nothing_is_logged() {
    let disk = start(4, &[], false);
    let reads: Vec<String> = disk
        .adapter
        .log()
        .into_iter()
        .filter(|l| l.starts_with("RegistryRead("))
        .collect();
    for name in [
        "NumberOfQueues",
        "QueueDepth",
        "MaxTransferKB",
        "PackedRing",
        "MsiX",
        "ResetTimeoutMs",
    ] {
        assert!(
            reads.contains(&format!("RegistryRead({name}) = None")),
            "{name} read: {reads:?}"
        );
    }
    let (max_transfer, _, per_lun) = disk.adapter.limits().expect("FindAdapter ran");
    // The device's segment limits (size_max, seg_max) set it below the 1 MiB default here.
    assert!(max_transfer > 64 * 1024, "{max_transfer}");
    assert_eq!(per_lun, 4 * 128, "4 queues of 128");
    assert_eq!(disk.adapter.perf().0, 4, "4 channels");
    assert!(
        disk.adapter.event_log().is_empty(),
        "{:?}",
        disk.adapter.event_log()
    );
    assert_eq!(read(&disk, 0).srb_status, ffi::SRB_STATUS_SUCCESS);
    assert_clean(&disk);
}

/// Each tunable in range changes what the driver does, and nothing is logged.
#[test]
fn tunables_in_range_shape_the_adapter() {
    let disk = start(
        4,
        &[
            ("NumberOfQueues", 2),
            ("QueueDepth", 40),
            ("MaxTransferKB", 64),
        ],
        false,
    );
    let (max_transfer, breaks, per_lun) = disk.adapter.limits().expect("FindAdapter ran");
    assert_eq!(max_transfer, 64 * 1024);
    assert_eq!(breaks, 16);
    assert_eq!(per_lun, 40);
    assert_eq!(disk.adapter.perf().0, 2, "2 queues, 2 channels");
    // The I/O spreads over 2 device queues only.
    for lba in 0..64 {
        assert_eq!(read(&disk, lba * 8).srb_status, ffi::SRB_STATUS_SUCCESS);
    }
    let counters = disk.device.counters();
    assert!(
        counters.iter().skip(2).all(|c| c.reads == 0),
        "{counters:?}"
    );
    assert!(entries(&disk, TUNABLE_CLAMPED).is_empty());
    assert_clean(&disk);
}

/// `MsiX = 0`: one interrupt for everything (one queue), although the device offers more.
#[test]
fn msix_0_takes_the_single_interrupt_mode() {
    let disk = start(4, &[("MsiX", 0)], false);
    assert_eq!(disk.adapter.perf().0, 1, "one channel");
    for lba in 0..16 {
        assert_eq!(read(&disk, lba * 8).srb_status, ffi::SRB_STATUS_SUCCESS);
    }
    let counters = disk.device.counters();
    assert!(
        counters.iter().skip(1).all(|c| c.reads == 0),
        "{counters:?}"
    );
    assert_clean(&disk);
}

/// `PackedRing = 0` refuses packed rings the device offers; 1 (the default) takes them.
#[test]
fn packed_ring_0_refuses_packed_rings() {
    for (value, packed) in [(0, false), (1, true)] {
        let disk = start_on(
            device(DeviceConfig {
                features: Some(features::DEFAULT | features::RING_PACKED),
                ..DeviceConfig::default()
            }),
            AdapterOptions {
                registry: vec![("PackedRing".to_owned(), value)],
                ..AdapterOptions::default()
            },
        );
        assert_eq!(
            disk.device.negotiated_features() & features::RING_PACKED != 0,
            packed,
            "PackedRing = {value}"
        );
        assert_eq!(read(&disk, 0).srb_status, ffi::SRB_STATUS_SUCCESS);
        assert_clean(&disk);
    }
}

/// Values out of range are clamped to the nearest bound and logged with the tunable's id.
#[test]
fn tunables_out_of_range_are_clamped_and_logged() {
    let disk = start(
        4,
        &[
            ("NumberOfQueues", 0),
            ("QueueDepth", 1_000_000),
            ("MaxTransferKB", 1),
            ("PackedRing", 7),
            ("MsiX", 2),
            ("ResetTimeoutMs", 0),
        ],
        false,
    );
    let ids: Vec<u32> = entries(&disk, TUNABLE_CLAMPED)
        .iter()
        .map(|e| e.unique_id)
        .collect();
    assert_eq!(ids, [1, 2, 3, 4, 5, 6], "one entry per tunable, in order");
    let (max_transfer, _, per_lun) = disk.adapter.limits().expect("FindAdapter ran");
    assert_eq!(max_transfer, 4096, "MaxTransferKB clamped up to 4");
    assert_eq!(
        per_lun, 128,
        "NumberOfQueues clamped up to 1: one queue of 128"
    );
    assert_eq!(disk.adapter.perf().0, 1);
    assert_eq!(read(&disk, 0).srb_status, ffi::SRB_STATUS_SUCCESS);
    assert_clean(&disk);
}

/// `ResetTimeoutMs`: how long the driver waits for a device that ignores its reset before it
/// cuts the DMA; the event log entry says how many 1 ms polls it waited.
#[test]
fn reset_timeout_ms_sets_the_wait_before_the_dma_cut() {
    let disk = start(1, &[("ResetTimeoutMs", 25)], false);
    disk.device.ignore_resets(1);
    assert!(disk.adapter.reset_bus());
    wait_for_entry(&disk, RESET_NOT_ACKNOWLEDGED, 25);
    wait_for_entry(&disk, RESET_COMPLETED, 3);
    assert_eq!(read(&disk, 0).srb_status, ffi::SRB_STATUS_SUCCESS);
    assert_clean(&disk);
}

/// A dump stack reads no registry (its HwStorFindAdapter runs at HIGH_LEVEL).
#[test]
fn a_dump_stack_reads_no_registry() {
    let disk = start_on(
        device(DeviceConfig::default()),
        AdapterOptions {
            dump_mode: Some(1),
            registry: vec![("NumberOfQueues".to_owned(), 0)],
            ..AdapterOptions::default()
        },
    );
    assert!(
        !disk
            .adapter
            .log()
            .iter()
            .any(|l| l.starts_with("RegistryRead(")),
        "{:?}",
        disk.adapter.log()
    );
    assert!(disk.adapter.event_log().is_empty());
    assert_eq!(read(&disk, 0).srb_status, ffi::SRB_STATUS_SUCCESS);
    assert_clean(&disk);
}

// ---- Item 5: the event log and ETW ----------------------------------------------------------

/// A reset by each tier: RESET_STARTED and RESET_COMPLETED name the tier (1 LU, 2 device,
/// 3 bus); a broken ring adds RING_BROKEN with the queue, and its reset says 4.
#[test]
fn every_reset_is_logged_with_its_tier_and_outcome() {
    // One queue, so the ring the device breaks is queue 0's whichever CPU submits.
    let disk = start(1, &[], false);
    for (reset, tier) in [
        (function::RESET_LOGICAL_UNIT, 1),
        (function::RESET_DEVICE, 2),
        (function::RESET_BUS, 3),
    ] {
        let c = disk.adapter.execute(Request::function(reset).timeout(20));
        assert_eq!(c.srb_status & 0x3F, ffi::SRB_STATUS_SUCCESS, "{reset:#x}");
        wait_for_entry(&disk, RESET_STARTED, tier);
        wait_for_entry(&disk, RESET_COMPLETED, tier);
    }
    assert!(disk.adapter.reset_bus());
    disk.adapter
        .wait_until("two bus resets completed", PATIENCE, || {
            entries(&disk, RESET_COMPLETED)
                .iter()
                .filter(|e| e.unique_id == 3)
                .count()
                == 2
        })
        .unwrap();
    // The device breaks queue 0's ring (an id out of range) on the next request.
    disk.device
        .arm_fault_on(FaultMode::UsedIdOutOfRange, Some(0), 1);
    let handles: Vec<_> = (0..8)
        .map(|i| {
            disk.adapter
                .submit(Request::data_in(&rw10(0x28, i * 8, 8), 4096).timeout(20))
        })
        .collect();
    for h in handles {
        let c = h.wait_timeout(PATIENCE).expect("completed");
        assert!(
            matches!(
                c.srb_status & 0x3F,
                ffi::SRB_STATUS_SUCCESS | ffi::SRB_STATUS_BUS_RESET
            ),
            "{c:?}"
        );
    }
    assert_eq!(disk.device.faults_fired(), 1);
    wait_for_entry(&disk, RING_BROKEN, 0);
    wait_for_entry(&disk, RESET_STARTED, 4);
    wait_for_entry(&disk, RESET_COMPLETED, 4);
    assert_eq!(read(&disk, 0).srb_status, ffi::SRB_STATUS_SUCCESS);
    assert_clean(&disk);
}

/// A capacity change is logged with the new capacity; a refused one with its own code.
#[test]
fn capacity_changes_are_logged() {
    let disk = start(1, &[], false);
    let sectors = disk.device.capacity() * 2;
    disk.device.resize(sectors).expect("the backend grows");
    wait_for_entry(&disk, CAPACITY_CHANGED, sectors as u32);
    disk.device.announce_capacity(u64::MAX);
    wait_for_entry(&disk, CAPACITY_REFUSED, 0);
    assert!(entries(&disk, CAPACITY_CHANGED).len() == 1);
    assert_clean(&disk);
}

/// A disk resized and resized back before the next command: the capacity is as at start
/// again, but it changed meanwhile, so the next READ (on the I/O path) reports the UNIT
/// ATTENTION (CAPACITY DATA HAS CHANGED, 2Ah/09h) first; the one after it reads.
#[test]
fn a_capacity_changed_and_changed_back_is_still_a_unit_attention() {
    let disk = start(1, &[], false);
    let sectors = disk.device.capacity();
    disk.device.resize(sectors * 2).expect("the backend grows");
    wait_for_entry(&disk, CAPACITY_CHANGED, (sectors * 2) as u32);
    disk.device.resize(sectors).expect("the backend shrinks");
    wait_for_entry(&disk, CAPACITY_CHANGED, sectors as u32);
    let c = read(&disk, 0);
    assert_eq!(
        c.srb_status,
        ffi::SRB_STATUS_ERROR | ffi::SRB_STATUS_AUTOSENSE_VALID,
        "{c:?}"
    );
    assert_eq!(
        (c.sense[2] & 0x0F, c.sense[12], c.sense[13]),
        (0x06, 0x2A, 0x09)
    );
    assert_eq!(read(&disk, 0).srb_status, ffi::SRB_STATUS_SUCCESS);
    assert_clean(&disk);
}

/// A device that vanished: SURPRISE_REMOVAL, once.
#[test]
fn surprise_removal_is_logged_once() {
    let disk = start(1, &[], false);
    disk.device.surprise_remove();
    let (adapter, unit) = disk.adapter.surprise_remove();
    assert_eq!(adapter, Some(0));
    assert_eq!(unit, Some(0));
    assert_eq!(entries(&disk, SURPRISE_REMOVAL).len(), 1);
    // A unit that is gone does not start again.
    assert_eq!(disk.adapter.unit_start(), Some(1));
    assert_clean(&disk);
}

/// A configuration the driver refuses at start (a capacity whose byte count overflows 64 bits)
/// is in the machine's event log although the adapter never started.
#[test]
fn a_refused_configuration_is_logged() {
    let device = device(DeviceConfig::default());
    device.announce_capacity(u64::MAX);
    let port = port();
    let started = port.start_adapter(
        device.clone(),
        device.guest_memory(),
        AdapterOptions::default(),
    );
    assert!(started.is_err(), "the adapter must not start");
    let log = port.event_log();
    assert!(
        log.iter()
            .any(|(_, e)| e.code == CONFIGURATION_REFUSED && e.unique_id == 1),
        "{log:#x?}"
    );
}

/// Every event kind above has its own code.
#[test]
fn event_codes_are_distinct() {
    let codes = [
        BAD_COMPLETION,
        RESET_NOT_ACKNOWLEDGED,
        0x0013_0002,
        SURPRISE_REMOVAL,
        CAPACITY_REFUSED,
        RING_BROKEN,
        RESET_STARTED,
        RESET_COMPLETED,
        CAPACITY_CHANGED,
        TUNABLE_CLAMPED,
        CONFIGURATION_REFUSED,
    ];
    let mut sorted = codes.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), codes.len());
    for code in codes {
        assert_ne!(vioblk_sim::report::event_name(code), "other", "{code:#x}");
    }
}

/// With a trace session listening, every completed I/O is an ETW event naming its opcode and
/// the device's status (also a failing one); without one, or after it stops, none is published.
#[test]
fn etw_events_only_while_tracing_is_on() {
    let disk = start(2, &[], true);
    for lba in 0..10 {
        assert_eq!(read(&disk, lba * 8).srb_status, ffi::SRB_STATUS_SUCCESS);
    }
    let events = disk.adapter.etw_events();
    let io: Vec<_> = events.iter().filter(|e| e.id == 1).collect();
    assert!(io.len() >= 10, "{events:#?}");
    let last = io.last().expect("an event");
    assert_eq!(last.description, "vioblk I/O completed");
    assert_eq!(last.parameters[0], ("Opcode".to_owned(), 0x28));
    assert_eq!(last.parameters[1], ("VirtioStatus".to_owned(), 0));
    assert_eq!(last.keywords, 1, "STORPORT_ETW_EVENT_KEYWORD_IO");
    assert!(last.with_srb);
    // A request the device fails names the status it gave: IOERR (1), UNSUPP (2), or a byte
    // outside the specification (the model's 7Fh), which is also a bad completion.
    for (fault, status, sense_key) in [
        (FaultMode::IoErrStatus, 1, 0x03),
        (FaultMode::UnsuppStatus, 2, 0x05),
        (FaultMode::BadStatus, 0x7F, 0x04),
    ] {
        disk.device.arm_fault(fault, 1);
        let c = read(&disk, 64);
        assert_eq!(
            c.srb_status,
            ffi::SRB_STATUS_ERROR | ffi::SRB_STATUS_AUTOSENSE_VALID,
            "{fault:?}: {c:?}"
        );
        assert_eq!(c.sense[2] & 0x0F, sense_key, "{fault:?}: {c:?}");
        let events = disk.adapter.etw_events();
        let last = events.iter().rfind(|e| e.id == 1).expect("an event");
        assert_eq!(last.parameters[0], ("Opcode".to_owned(), 0x28), "{fault:?}");
        assert_eq!(
            last.parameters[1],
            ("VirtioStatus".to_owned(), status),
            "{fault:?}"
        );
    }
    disk.adapter.set_tracing(false);
    let before = disk.adapter.etw_events().len();
    for lba in 0..10 {
        assert_eq!(read(&disk, lba * 8).srb_status, ffi::SRB_STATUS_SUCCESS);
    }
    assert_eq!(disk.adapter.etw_events().len(), before, "tracing is off");
    assert_clean(&disk);

    let quiet = start(2, &[], false);
    assert_eq!(read(&quiet, 0).srb_status, ffi::SRB_STATUS_SUCCESS);
    assert!(quiet.adapter.etw_events().is_empty());
    assert_clean(&quiet);
}

// ---- Item 2: HwStorUnitControl --------------------------------------------------------------

/// The driver reports start, power, remove and surprise removal; Storport sent ScsiUnitStart
/// when the unit started; ScsiUnitPower moves the unit through D3, D1 and D2 and back to D0
/// (traced when tracing is on), and I/O works after; an unknown D-state is refused;
/// ScsiUnitRemove succeeds.
#[test]
fn unit_control_start_and_power() {
    let disk = start(2, &[], true);
    assert_eq!(
        disk.adapter.supported_unit_controls(),
        [
            ffi::ScsiUnitStart,
            ffi::ScsiUnitPower,
            ffi::ScsiUnitRemove,
            ffi::ScsiUnitSurpriseRemoval
        ]
    );
    assert!(
        disk.adapter
            .log()
            .iter()
            .any(|l| l == "UnitControl(ScsiUnitStart) = Some(0)"),
        "{:?}",
        disk.adapter.log()
    );
    // StorPowerActionHibernate (3) to D3, then back to D0 (no action); D1 and D2 (a unit's
    // idle states) are recorded the same way.
    assert_eq!(disk.adapter.unit_power(4, 3), Some(0));
    assert_eq!(disk.adapter.unit_power(1, 0), Some(0));
    assert_eq!(disk.adapter.unit_power(2, 1), Some(0));
    assert_eq!(disk.adapter.unit_power(3, 2), Some(0));
    assert_eq!(disk.adapter.unit_power(1, 0), Some(0));
    assert_eq!(read(&disk, 0).srb_status, ffi::SRB_STATUS_SUCCESS);
    let power: Vec<_> = disk
        .adapter
        .etw_events()
        .into_iter()
        .filter(|e| e.id == 2)
        .map(|e| (e.parameters[0].1, e.parameters[1].1))
        .collect();
    assert_eq!(power, [(4, 3), (1, 0), (2, 1), (3, 2), (1, 0)]);
    assert_eq!(disk.adapter.unit_power(9, 0), Some(1), "no such D-state");
    assert_eq!(disk.adapter.unit_start(), Some(0));
    // An orderly removal of the unit (Storport drained it first): nothing to undo.
    assert_eq!(disk.adapter.unit_remove(), Some(0));
    assert_clean(&disk);
}
