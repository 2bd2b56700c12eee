//! Hibernation through the dump instance (issue 17 item 3): the running disk's device is left
//! in some state, the hibernation stack (DUMP_MODE_HIBER, one CPU, polled) takes it over, powers
//! the unit up, writes the image and powers it down (SRB_FUNCTION_POWER: its cache is written
//! back); the machine "powers off" (every adapter and the device are dropped; only the backing
//! file stays); at the next boot a resume instance (DUMP_MODE_RESUME) and then the normal
//! instance read the image back, byte for byte.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::sync::Arc;

use storport_sim::{Adapter, AdapterOptions, Port, PortOptions, Request, function};
use storport_sys as ffi;
use vioblk_sim::device::{BackendConfig, DeviceConfig, FaultMode, VirtioBlkDevice};

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
    Arc::new(
        VirtioBlkDevice::new(DeviceConfig {
            backend: BackendConfig::File(file.0.clone()),
            ..DeviceConfig::default()
        })
        .expect("the device model starts"),
    )
}

fn port() -> Port {
    let port = Port::new(PortOptions::default());
    port.load_driver(vioblk::DriverEntry)
        .expect("DriverEntry succeeds");
    port
}

fn start(port: &Port, device: &Arc<VirtioBlkDevice>, dump_mode: Option<u8>) -> Adapter {
    port.start_adapter(
        device.clone(),
        device.guest_memory(),
        AdapterOptions {
            dump_mode,
            ..AdapterOptions::default()
        },
    )
    .unwrap_or_else(|e| panic!("the adapter (dump mode {dump_mode:?}) starts: {e:?}"))
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
