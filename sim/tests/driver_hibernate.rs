//! Hibernation through the dump instance (issue 17 item 3): the running disk's device is left
//! in some state, the hibernation stack (DUMP_MODE_HIBER, one CPU, polled) takes it over, powers
//! the unit up, writes the image and powers it down (SRB_FUNCTION_POWER: its cache is written
//! back); the machine "powers off" (every adapter and the device are dropped; only the backing
//! file stays); at the next boot a resume instance (DUMP_MODE_RESUME) and then the normal
//! instance read the image back, byte for byte.
//!
//! The multi-phase resume (Windows 8 and later) is modelled end to end as well: Storport asks
//! the running instance for its dump pointers (SRB_FUNCTION_DUMP_POINTERS) before it builds the
//! hibernation stack and hands their private data to the dump instances; the running instance
//! leaves D0 and stops; the hibernation instance writes the image; the machine powers off (the
//! device is reset and loses Bus Master Enable; the running instance's memory is what the image
//! restores); the resume instance (DUMP_MODE_RESUME) reads the image back and leaves the device
//! in some state; then Storport powers the running instance's adapter up again
//! (ScsiSetRunningConfig at PASSIVE_LEVEL, then ScsiRestartAdapter at DIRQL) and many requests
//! are sent at once, every block read back verified.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::sync::Arc;

use storport_sim::device::PciDevice;
use storport_sim::{Adapter, AdapterOptions, DumpPointers, Port, PortOptions, Request, function};
use storport_sys as ffi;
use vioblk_sim::device::{BackendConfig, DeviceConfig, FaultMode, VirtioBlkDevice, features};

/// Where the image goes, and how much of it (4 KiB blocks).
const IMAGE_LBA: u32 = 8192;
const IMAGE_BLOCKS: u32 = 64;
/// What the running system had written before it hibernated.
const DATA_LBA: u32 = 64;

/// STOR_POWER_ACTION: StorPowerActionNone, StorPowerActionHibernate.
const ACTION_NONE: u32 = 0;
const ACTION_HIBERNATE: u32 = 3;

struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn device(file: &TempFile) -> Arc<VirtioBlkDevice> {
    device_offering(file, None)
}

fn device_offering(file: &TempFile, offered: Option<u64>) -> Arc<VirtioBlkDevice> {
    Arc::new(
        VirtioBlkDevice::new(DeviceConfig {
            backend: BackendConfig::File(file.0.clone()),
            features: offered,
            ..DeviceConfig::default()
        })
        .expect("the device model starts"),
    )
}

fn temp(name: &str) -> TempFile {
    let file = TempFile(std::env::temp_dir().join(format!(
        "vioblk-hibernate-{}-{name}.img",
        std::process::id()
    )));
    let _ = std::fs::remove_file(&file.0);
    file
}

fn port() -> Port {
    let port = Port::new(PortOptions::default());
    port.load_driver(vioblk::DriverEntry)
        .expect("DriverEntry succeeds");
    port
}

fn start(port: &Port, device: &Arc<VirtioBlkDevice>, dump_mode: Option<u8>) -> Adapter {
    start_with(
        port,
        device,
        AdapterOptions {
            dump_mode,
            ..AdapterOptions::default()
        },
    )
}

fn start_with(port: &Port, device: &Arc<VirtioBlkDevice>, options: AdapterOptions) -> Adapter {
    let mode = options.dump_mode;
    port.start_adapter(device.clone(), device.guest_memory(), options)
        .unwrap_or_else(|e| panic!("the adapter (dump mode {mode:?}) starts: {e:?}"))
}

/// A dump instance (`mode`) built from the running instance's dump pointers.
fn start_dump(
    port: &Port,
    device: &Arc<VirtioBlkDevice>,
    mode: u8,
    pointers: Option<DumpPointers>,
) -> Adapter {
    start_with(
        port,
        device,
        AdapterOptions {
            dump_mode: Some(mode),
            dump_pointers: pointers,
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

fn block(seed: u32) -> Vec<u8> {
    (0..4096u32)
        .map(|i| (i.wrapping_mul(0x9E37_79B9) ^ seed.wrapping_mul(0x85EB_CA6B)).to_le_bytes()[1])
        .collect()
}

fn write(adapter: &Adapter, lba: u32, data: Vec<u8>) {
    let c = adapter.execute(Request::data_out(&rw10(0x2A, lba, 8), data));
    assert_eq!(
        c.srb_status,
        ffi::SRB_STATUS_SUCCESS,
        "write at {lba}: {c:?}"
    );
}

fn read(adapter: &Adapter, lba: u32) -> Vec<u8> {
    let c = adapter.execute(Request::data_in(&rw10(0x28, lba, 8), 4096));
    assert_eq!(
        c.srb_status,
        ffi::SRB_STATUS_SUCCESS,
        "read at {lba}: {c:?}"
    );
    c.data
}

/// SRB_FUNCTION_POWER with its SRBEX_DATA_POWER (Type 0x61, Length 12, flags, the device power
/// state at 0xC, the action at 0x10; 24 bytes).
fn power(state: u32, action: u32) -> Request {
    let mut ex = vec![0u8; 24];
    ex[0..4].copy_from_slice(&0x61u32.to_le_bytes());
    ex[4..8].copy_from_slice(&12u32.to_le_bytes());
    ex[0xC..0x10].copy_from_slice(&state.to_le_bytes());
    ex[0x10..0x14].copy_from_slice(&action.to_le_bytes());
    let mut r = Request::function(function::POWER);
    r.ex_data.push(ex);
    r
}

fn flushes(device: &VirtioBlkDevice) -> u64 {
    device.counters().iter().map(|c| c.flushes).sum()
}

fn assert_clean(port: &Port, what: &str) {
    let v = port.violations();
    assert!(v.is_empty(), "{what}: Storport violations: {v:#?}");
}

/// How the running instance leaves the device when the hibernation stack takes it over.
#[derive(Clone, Copy, Debug)]
enum Left {
    /// Running, idle (DRIVER_OK, rings live).
    Running,
    /// A request still held by the device.
    InFlight,
    /// The device set DEVICE_NEEDS_RESET.
    NeedsReset,
    /// The running instance was stopped (ScsiStopAdapter: the device reset).
    Stopped,
}

fn hibernate_and_resume(left: Left) {
    let file = TempFile(std::env::temp_dir().join(format!(
        "vioblk-hibernate-{}-{left:?}.img",
        std::process::id()
    )));
    let _ = std::fs::remove_file(&file.0);

    // The running system.
    {
        let device = device(&file);
        let running_port = port();
        let running = start(&running_port, &device, None);
        for i in 0..8 {
            write(&running, DATA_LBA + 8 * i, block(1000 + i));
        }
        // Data is durable only once flushed: the running system flushed before hibernating.
        let c = running.execute(Request::function(function::FLUSH));
        assert_eq!(c.srb_status, ffi::SRB_STATUS_SUCCESS);
        let held = match left {
            Left::Running => None,
            Left::InFlight => {
                device.set_slow_ms(60_000);
                device.arm_fault(FaultMode::Slow, 1);
                let h = running.submit(Request::data_in(&rw10(0x28, 0, 8), 4096).timeout(120));
                device
                    .wait_until("the device holds the read", storport_sim::PATIENCE, || {
                        device.faults_fired() == 1
                    })
                    .unwrap();
                Some(h)
            }
            Left::NeedsReset => {
                device.arm_fault(FaultMode::NeedsReset, 1);
                let h = running.submit(Request::data_in(&rw10(0x28, 0, 8), 4096).timeout(120));
                device
                    .wait_until("the device broke", storport_sim::PATIENCE, || {
                        device.faults_fired() == 1
                    })
                    .unwrap();
                Some(h)
            }
            Left::Stopped => {
                assert_eq!(running.stop(), Some(0));
                None
            }
        };

        // The machine goes to its hibernation state: one CPU, everything else frozen. The
        // running instance is not called again (its DPCs and timers stop where they are), and
        // the device stays as it was left.
        drop(running);
        drop(running_port);
        // The hibernation stack: a second instance of the driver over the same function.
        let hiber_port = port();
        let hiber = start(&hiber_port, &device, Some(2));
        let c = hiber.execute(power(ffi::StorPowerDeviceD0, ACTION_HIBERNATE));
        assert_eq!(c.srb_status, ffi::SRB_STATUS_SUCCESS, "{left:?}: power up");
        for i in 0..IMAGE_BLOCKS {
            write(&hiber, IMAGE_LBA + 8 * i, block(i));
        }
        let before = flushes(&device);
        let c = hiber.execute(power(ffi::StorPowerDeviceD3, ACTION_HIBERNATE));
        assert_eq!(
            c.srb_status,
            ffi::SRB_STATUS_SUCCESS,
            "{left:?}: power down"
        );
        assert_eq!(
            flushes(&device),
            before + 1,
            "{left:?}: the power-down wrote the cache back"
        );
        assert_clean(&hiber_port, "the hibernation stack");
        // Power off: nothing is stopped or completed; everything goes.
        drop(held);
        drop(hiber);
    }

    // The next boot: a fresh device over the same disk; the resume instance reads the image,
    // then the normal instance starts and sees it and the data written before.
    let device = device(&file);
    let boot = port();
    let resume = start(&boot, &device, Some(4));
    let c = resume.execute(power(ffi::StorPowerDeviceD0, ACTION_NONE));
    assert_eq!(c.srb_status, ffi::SRB_STATUS_SUCCESS);
    for i in 0..IMAGE_BLOCKS {
        assert!(
            read(&resume, IMAGE_LBA + 8 * i) == block(i),
            "{left:?}: image block {i} read back by the resume instance"
        );
    }
    drop(resume);
    let normal = start(&boot, &device, None);
    for i in 0..IMAGE_BLOCKS {
        assert!(
            read(&normal, IMAGE_LBA + 8 * i) == block(i),
            "{left:?}: image block {i} after resume"
        );
    }
    for i in 0..8 {
        assert!(
            read(&normal, DATA_LBA + 8 * i) == block(1000 + i),
            "{left:?}: data block {i} after resume"
        );
    }
    assert_clean(&boot, "the resumed machine");
}

#[test]
fn hibernation_from_a_running_device() {
    hibernate_and_resume(Left::Running);
}

#[test]
fn hibernation_with_a_request_still_in_the_device() {
    hibernate_and_resume(Left::InFlight);
}

#[test]
fn hibernation_from_a_device_that_needs_a_reset() {
    hibernate_and_resume(Left::NeedsReset);
}

#[test]
fn hibernation_after_the_adapter_stopped() {
    hibernate_and_resume(Left::Stopped);
}

/// The power SRB into D0, and one without a state, write nothing back; out of D0 (D1 to D3)
/// each flushes once, on the normal instance too.
#[test]
fn only_a_power_down_flushes() {
    let file = TempFile(
        std::env::temp_dir().join(format!("vioblk-hibernate-flush-{}.img", std::process::id())),
    );
    let device = device(&file);
    let port = port();
    let adapter = start(&port, &device, None);
    let before = flushes(&device);
    let c = adapter.execute(power(ffi::StorPowerDeviceD0, ACTION_NONE));
    assert_eq!(c.srb_status, ffi::SRB_STATUS_SUCCESS);
    let c = adapter.execute(Request::function(function::POWER));
    assert_eq!(c.srb_status, ffi::SRB_STATUS_SUCCESS);
    assert_eq!(flushes(&device), before, "D0 and no state flush nothing");
    for (n, state) in [
        ffi::StorPowerDeviceD1,
        ffi::StorPowerDeviceD2,
        ffi::StorPowerDeviceD3,
    ]
    .into_iter()
    .enumerate()
    {
        let c = adapter.execute(power(state, ACTION_NONE));
        assert_eq!(c.srb_status, ffi::SRB_STATUS_SUCCESS);
        assert_eq!(flushes(&device), before + n as u64 + 1, "D{}", state - 1);
    }
    assert_clean(&port, "power SRBs");
}

/// Storport's SRB_FUNCTION_DUMP_POINTERS to the running instance: the answer names
/// DUMP_MINIPORT_VERSION_1, the structure's size, the limits the dump instance will report, and
/// private data that carries the administrator's tunables to the dump instance (which reads no
/// registry). Here PackedRing = 0 and MaxTransferKB = 16: the hibernation instance built from the
/// pointers refuses the packed rings the device offers and allows 16 KiB per request, what the
/// pointers promised; one built without them (Storport passing no MiniportDumpData) takes packed
/// rings and what its 16-entry ring carries (52 KiB), so the data is what made the difference.
#[test]
fn dump_pointers_carry_the_limits_and_the_tunables_to_the_dump_instance() {
    let file = temp("pointers");
    let device = device_offering(&file, Some(features::DEFAULT | features::RING_PACKED));
    let running_port = port();
    let running = start_with(
        &running_port,
        &device,
        AdapterOptions {
            registry: vec![("PackedRing".into(), 0), ("MaxTransferKB".into(), 16)],
            ..AdapterOptions::default()
        },
    );
    assert_eq!(
        device.negotiated_features() & features::RING_PACKED,
        0,
        "PackedRing = 0 refuses packed rings in the running instance"
    );
    let pointers = running
        .dump_pointers()
        .expect("the running instance answers SRB_FUNCTION_DUMP_POINTERS");
    assert_eq!(pointers.version, 0x0100, "DUMP_MINIPORT_VERSION_1");
    assert_eq!(pointers.size, 0x70, "sizeof(MINIPORT_DUMP_POINTERS)");
    assert_eq!(pointers.max_transfer, 16 * 1024, "MaxTransferKB in force");
    assert_eq!(pointers.breaks, 4);
    assert_ne!(pointers.private_data, 0, "private data named");
    assert_eq!(pointers.common_buffer_size, 0);
    assert_eq!(
        pointers.requested_dump_buffer, 0,
        "no dump buffer asked for: the driver transfers straight from the request's buffers"
    );

    // The machine freezes; the running instance's memory (and its answer) stays where it is.
    let hiber_port = port();
    let hiber = start_dump(&hiber_port, &device, 2, Some(pointers));
    assert_eq!(
        device.negotiated_features() & features::RING_PACKED,
        0,
        "the hibernation instance took PackedRing = 0 from the dump data"
    );
    assert_eq!(
        hiber.limits().map(|l| (l.0, l.1)),
        Some((pointers.max_transfer, pointers.breaks)),
        "the dump instance allows what the pointers said"
    );
    assert!(
        hiber.dump_region().is_none(),
        "no DumpRegion without a request for one"
    );
    write(&hiber, IMAGE_LBA, block(7));
    assert!(read(&hiber, IMAGE_LBA) == block(7));
    assert_clean(
        &hiber_port,
        "the hibernation instance built from the dump pointers",
    );
    drop(hiber);

    // Without the dump data: the defaults (packed rings, 1 MiB).
    let bare_port = port();
    let bare = start_dump(&bare_port, &device, 2, None);
    assert_ne!(
        device.negotiated_features() & features::RING_PACKED,
        0,
        "without the dump data the dump instance takes the packed rings offered"
    );
    assert!(
        bare.limits().is_some_and(|l| l.0 > pointers.max_transfer),
        "without the dump data the dump instance allows more than 16 KiB: {:?}",
        bare.limits()
    );
    drop(bare);
    drop(running);
    assert_clean(&running_port, "the running instance");
}

/// StorPortMarkDumpMemory from HwStorFindAdapter in DUMP_MODE_HIBER and DUMP_MODE_MARK_MEMORY
/// (the DDI page asks for it at least there): the sections holding the image's code, read-only
/// data and writable data, each by an address inside it and a length of 0. A crash-dump or
/// resume instance and the running instance mark nothing.
#[test]
fn the_hibernation_instance_marks_its_image_for_resume() {
    let file = temp("mark");
    let device = device(&file);
    let running_port = port();
    let running = start(&running_port, &device, None);
    assert!(running.marked_dump_memory().is_empty());
    for (mode, marks) in [(1u8, 0usize), (2, 3), (3, 3), (4, 0)] {
        let dump_port = port();
        let dump = start_dump(&dump_port, &device, mode, running.dump_pointers());
        let marked = dump.marked_dump_memory();
        assert_eq!(marked.len(), marks, "dump mode {mode}: {marked:x?}");
        assert!(
            marked
                .iter()
                .all(|&(address, length, flags)| address != 0 && length == 0 && flags == 0),
            "dump mode {mode}: whole sections by virtual address: {marked:x?}"
        );
        let mut addresses: Vec<usize> = marked.iter().map(|m| m.0).collect();
        addresses.dedup();
        assert_eq!(addresses.len(), marks, "three distinct places");
        assert_clean(&dump_port, "marking");
    }
}

/// Powers the machine off under the device: its registers go back to their reset values and the
/// function loses Bus Master Enable (the PCI command register's bit 2).
fn power_off(device: &VirtioBlkDevice) {
    device.reset();
    let mut command = [0u8; 2];
    device.config_read(4, &mut command);
    let value = u16::from_le_bytes(command) & !0x4;
    device.config_write(4, &value.to_le_bytes());
}

/// How the resume instance leaves the device when the running instance powers up again.
#[derive(Clone, Copy, Debug)]
enum Resumed {
    /// Running, idle, its rings live.
    Running,
    /// A request of the resume instance still held by the device.
    InFlight,
    /// The device set DEVICE_NEEDS_RESET.
    NeedsReset,
    /// The device takes 50 ms to acknowledge a reset, longer than ScsiRestartAdapter may wait:
    /// the restart hands over to the reset machine while requests arrive.
    SlowReset,
}

fn multi_phase_resume(resumed: Resumed) {
    let file = temp(&format!("multiphase-{resumed:?}"));
    let device = device(&file);
    let running_port = port();
    let running = start(&running_port, &device, None);
    for i in 0..8 {
        write(&running, DATA_LBA + 8 * i, block(1000 + i));
    }
    // At boot (and whenever the dump configuration changes) Storport asks for the pointers.
    let pointers = running.dump_pointers().expect("dump pointers");

    // Hibernation: the disk leaves D0 (its cache written back) and the adapter stops.
    let before = flushes(&device);
    let c = running.execute(power(ffi::StorPowerDeviceD3, ACTION_HIBERNATE));
    assert_eq!(c.srb_status, ffi::SRB_STATUS_SUCCESS, "{resumed:?}: D3");
    assert_eq!(flushes(&device), before + 1, "{resumed:?}: the D3 flushed");
    assert_eq!(running.stop(), Some(0), "{resumed:?}: ScsiStopAdapter");

    let hiber_port = port();
    let hiber = start_dump(&hiber_port, &device, 2, Some(pointers));
    let c = hiber.execute(power(ffi::StorPowerDeviceD0, ACTION_HIBERNATE));
    assert_eq!(c.srb_status, ffi::SRB_STATUS_SUCCESS);
    for i in 0..IMAGE_BLOCKS {
        write(&hiber, IMAGE_LBA + 8 * i, block(i));
    }
    let c = hiber.execute(power(ffi::StorPowerDeviceD3, ACTION_HIBERNATE));
    assert_eq!(c.srb_status, ffi::SRB_STATUS_SUCCESS);
    assert_clean(&hiber_port, "the hibernation instance");
    drop(hiber);
    power_off(&device);

    // Phase 2 of the resume: the resume instance reads the image through the dump stack.
    let resume_port = port();
    let resume = start_dump(&resume_port, &device, 4, Some(pointers));
    let c = resume.execute(power(ffi::StorPowerDeviceD0, ACTION_NONE));
    assert_eq!(c.srb_status, ffi::SRB_STATUS_SUCCESS);
    for i in 0..IMAGE_BLOCKS {
        assert!(
            read(&resume, IMAGE_LBA + 8 * i) == block(i),
            "{resumed:?}: image block {i} read by the resume instance"
        );
    }
    let held = match resumed {
        Resumed::Running => None,
        Resumed::InFlight => {
            device.set_slow_ms(60_000);
            device.arm_fault(FaultMode::Slow, 1);
            let h = resume.submit(Request::data_in(&rw10(0x28, 0, 8), 4096).timeout(120));
            device
                .wait_until("the device holds the read", storport_sim::PATIENCE, || {
                    device.faults_fired() == 1
                })
                .unwrap();
            Some(h)
        }
        Resumed::NeedsReset => {
            device.arm_fault(FaultMode::NeedsReset, 1);
            let h = resume.submit(Request::data_in(&rw10(0x28, 0, 8), 4096).timeout(120));
            device
                .wait_until("the device broke", storport_sim::PATIENCE, || {
                    device.faults_fired() == 1
                })
                .unwrap();
            Some(h)
        }
        Resumed::SlowReset => {
            device.set_reset_delay_ms(50);
            None
        }
    };
    assert!(
        resume.marked_dump_memory().is_empty(),
        "the resume instance marks nothing"
    );
    // The resume instance is abandoned where it stands: the restored kernel takes over.
    drop(held);
    drop(resume);

    // Phase 3: the running instance's memory is restored; Storport powers its adapter up
    // (ScsiSetRunningConfig, then ScsiRestartAdapter) and the disk goes back to D0.
    running
        .restart()
        .unwrap_or_else(|e| panic!("{resumed:?}: the running instance restarts: {e:?}"));
    let log = running.log().join("\n");
    assert!(
        log.contains("AdapterControl(ScsiSetRunningConfig) = Some(0)"),
        "{resumed:?}: ScsiSetRunningConfig sent and answered"
    );
    let c = running.execute(power(ffi::StorPowerDeviceD0, ACTION_NONE));
    assert_eq!(c.srb_status, ffi::SRB_STATUS_SUCCESS);
    // Everything at once: the image and the data, each block read back verified.
    let mut handles = Vec::new();
    for i in 0..IMAGE_BLOCKS {
        let h = running.submit(Request::data_in(&rw10(0x28, IMAGE_LBA + 8 * i, 8), 4096));
        handles.push((h, block(i), format!("image block {i}")));
    }
    for i in 0..8 {
        let h = running.submit(Request::data_in(&rw10(0x28, DATA_LBA + 8 * i, 8), 4096));
        handles.push((h, block(1000 + i), format!("data block {i}")));
    }
    for (h, expected, what) in handles {
        let c = h
            .wait_timeout(std::time::Duration::from_secs(120))
            .unwrap_or_else(|| panic!("{resumed:?}: {what} never completed"));
        assert_eq!(
            c.srb_status,
            ffi::SRB_STATUS_SUCCESS,
            "{resumed:?}: {what}: {c:?}"
        );
        assert!(c.data == expected, "{resumed:?}: {what} read back");
    }
    // And the running instance writes again.
    write(&running, DATA_LBA, block(77));
    assert!(read(&running, DATA_LBA) == block(77));
    assert!(!device.dma_cut(), "{resumed:?}: Bus Master Enable is back");
    assert_clean(&running_port, "the resumed running instance");
    assert_clean(&resume_port, "the resume instance");
}

#[test]
fn multi_phase_resume_from_a_running_resume_instance() {
    multi_phase_resume(Resumed::Running);
}

#[test]
fn multi_phase_resume_with_a_request_still_in_the_device() {
    multi_phase_resume(Resumed::InFlight);
}

#[test]
fn multi_phase_resume_from_a_device_that_needs_a_reset() {
    multi_phase_resume(Resumed::NeedsReset);
}

#[test]
fn multi_phase_resume_from_a_device_slow_to_reset() {
    multi_phase_resume(Resumed::SlowReset);
}

/// ScsiSetRunningConfig restores Bus Master Enable after a stop that had to cut it (the device
/// ignored its reset): the restart then re-initialises the device without touching PCI
/// configuration from ScsiRestartAdapter, which the HwStorAdapterControl page forbids. Restarted
/// by a Storport that skips ScsiSetRunningConfig, the driver has to restore it from
/// ScsiRestartAdapter, and the user-mode Storport reports that (the check can fire).
#[test]
fn set_running_config_restores_bus_mastering_before_the_restart() {
    for send_running_config in [true, false] {
        let file = temp(&format!("running-config-{send_running_config}"));
        let device = device(&file);
        let port = port();
        let adapter = start(&port, &device, None);
        write(&adapter, DATA_LBA, block(5));
        device.ignore_resets(1);
        assert_eq!(adapter.stop(), Some(0));
        assert!(
            device.dma_cut(),
            "the stop cut DMA from a device that ignored its reset"
        );
        if send_running_config {
            adapter.restart().expect("restart");
        } else {
            adapter.restart_without_running_config().expect("restart");
        }
        assert!(!device.dma_cut(), "Bus Master Enable restored");
        assert!(read(&adapter, DATA_LBA) == block(5));
        let v = port.violations();
        if send_running_config {
            assert!(v.is_empty(), "{v:#?}");
        } else {
            assert!(
                v.iter()
                    .any(|v| v.rule == storport_sim::Rule::AdapterControl
                        && v.message.contains("ScsiRestartAdapter")),
                "PCI configuration written from ScsiRestartAdapter is reported: {v:#?}"
            );
        }
    }
}

/// What the user-mode Storport refuses in an answer to SRB_FUNCTION_DUMP_POINTERS.
#[test]
fn a_wrong_dump_pointers_answer_is_refused() {
    let mut good = vec![0u8; 0x70];
    good[0..2].copy_from_slice(&0x0100u16.to_le_bytes());
    good[2..4].copy_from_slice(&0x70u16.to_le_bytes());
    assert!(storport_sim::parse_dump_pointers(&good).is_ok());
    let mut version = good.clone();
    version[0..2].copy_from_slice(&0x0200u16.to_le_bytes());
    assert!(storport_sim::parse_dump_pointers(&version).is_err());
    let mut size = good.clone();
    size[2..4].copy_from_slice(&0x68u16.to_le_bytes());
    assert!(storport_sim::parse_dump_pointers(&size).is_err());
    let mut common = good.clone();
    common[0x38..0x3C].copy_from_slice(&(64 * 1024 + 1u32).to_le_bytes());
    assert!(storport_sim::parse_dump_pointers(&common).is_err());
    assert!(storport_sim::parse_dump_pointers(&good[..0x40]).is_err());
}
