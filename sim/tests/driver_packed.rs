//! The real driver over packed virtqueues (VIRTIO_F_RING_PACKED, VIRTIO 1.2 2.8), through the
//! whole stack: the device model offers RING_PACKED, the driver negotiates it and lays out
//! packed rings, and every request goes through them (BuildIo, StartIo, the ring, the model's
//! packed queue thread, the interrupt, the DPC). `packed=0` in the adapter's argument string
//! refuses packed rings.
//!
//! The other suites run in packed mode too: `VIOBLK_SIM_RING=packed cargo test -p vioblk-sim`
//! makes the model offer RING_PACKED with its default features.
#![forbid(unsafe_code)]

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use storport_sim::device::{Bar, DmaWatch, InterruptSink, PciDevice};
use storport_sim::{
    Adapter, AdapterOptions, Completion, InterruptMode, Port, PortOptions, Request,
};
use storport_sys as ffi;
use vioblk_sim::device::{DeviceConfig, VirtioBlkDevice, features};

struct Disk {
    port: Port,
    adapter: Adapter,
    device: Arc<VirtioBlkDevice>,
}

fn start(offered: u64, interrupts: InterruptMode, arguments: Option<&str>) -> Disk {
    start_on(
        DeviceConfig {
            features: Some(offered),
            num_queues: 2,
            ..DeviceConfig::default()
        },
        interrupts,
        arguments,
    )
}

fn start_on(config: DeviceConfig, interrupts: InterruptMode, arguments: Option<&str>) -> Disk {
    let device = Arc::new(VirtioBlkDevice::new(config).expect("the device model starts"));
    let port = Port::new(PortOptions::default());
    port.load_driver(vioblk::DriverEntry)
        .expect("DriverEntry succeeds");
    let adapter = port
        .start_adapter(
            device.clone(),
            device.guest_memory(),
            AdapterOptions {
                interrupts,
                argument_string: arguments.map(str::to_owned),
                ..AdapterOptions::default()
            },
        )
        .expect("the adapter starts");
    Disk {
        port,
        adapter,
        device,
    }
}

fn rw10(opcode: u8, lba: u32, blocks: u16) -> [u8; 10] {
    let mut c = [0u8; 10];
    c[0] = opcode;
    c[2..6].copy_from_slice(&lba.to_be_bytes());
    c[7..9].copy_from_slice(&blocks.to_be_bytes());
    c
}

fn pattern(seed: u32, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(0x9E37) as u8 ^ seed.wrapping_mul(0x5BD1) as u8)
        .collect()
}

/// Writes `count` requests of 1 to 8 blocks at once (all in flight together, far more than a
/// ring of 128 holds at some moments), then reads every one back, also all at once.
fn patterned_io(disk: &Disk, count: u32) {
    let (tx, rx) = mpsc::channel();
    let blocks = |i: u32| 1 + (i % 8) as u16;
    for i in 0..count {
        let data = pattern(i, usize::from(blocks(i)) * 512);
        let tx = tx.clone();
        disk.adapter.submit_with(
            Request::data_out(&rw10(0x2A, i * 8, blocks(i)), data),
            move |c| tx.send((i, c)).unwrap(),
        );
    }
    for _ in 0..count {
        let (i, c) = recv(disk, &rx);
        assert_eq!(c.srb_status, ffi::SRB_STATUS_SUCCESS, "write {i}: {c:?}");
    }
    for i in 0..count {
        let tx = tx.clone();
        disk.adapter.submit_with(
            Request::data_in(&rw10(0x28, i * 8, blocks(i)), u32::from(blocks(i)) * 512),
            move |c| tx.send((i, c)).unwrap(),
        );
    }
    for _ in 0..count {
        let (i, c) = recv(disk, &rx);
        assert_eq!(c.srb_status, ffi::SRB_STATUS_SUCCESS, "read {i}: {c:?}");
        assert_eq!(
            c.data,
            pattern(i, usize::from(blocks(i)) * 512),
            "read {i} back"
        );
    }
}

/// The longest a request may take before the test counts it as hung.
const DEADLINE: Duration = Duration::from_secs(60);

/// Ends the process with a failure: a driver that lost a request would make the teardown (which
/// waits for outstanding requests) hang as well. Written past the test harness's capture.
fn hung(disk: &Disk, what: &str) -> ! {
    let log = disk.adapter.log();
    let tail = log[log.len().saturating_sub(20)..].join("\n");
    let _ = writeln!(
        std::io::stderr().lock(),
        "HUNG (deadline {DEADLINE:?}): {what}\nlast log lines:\n{tail}"
    );
    std::process::exit(101);
}

/// Sends `request` and waits for its completion until the deadline.
fn exec(disk: &Disk, request: Request) -> Completion {
    let handle = disk.adapter.submit(request);
    handle
        .wait_timeout(DEADLINE)
        .unwrap_or_else(|| hung(disk, "a request never completed"))
}

fn recv(disk: &Disk, rx: &mpsc::Receiver<(u32, Completion)>) -> (u32, Completion) {
    rx.recv_timeout(DEADLINE)
        .unwrap_or_else(|_| hung(disk, "a request never completed"))
}

fn assert_clean(disk: &Disk) {
    let violations = disk.port.violations();
    assert!(violations.is_empty(), "Storport violations: {violations:?}");
}

#[test]
fn packed_rings_are_negotiated_and_carry_the_io() {
    for interrupts in [InterruptMode::MsiX, InterruptMode::Intx] {
        let disk = start(features::DEFAULT | features::RING_PACKED, interrupts, None);
        assert_ne!(
            disk.device.negotiated_features() & features::RING_PACKED,
            0,
            "{interrupts:?}: the driver took packed rings"
        );
        patterned_io(&disk, 600);
        // SYNCHRONIZE CACHE and INQUIRY go through the same rings.
        let c = exec(&disk, Request::scsi(&[0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0]));
        assert_eq!(c.srb_status, ffi::SRB_STATUS_SUCCESS);
        let flushes: u64 = disk.device.counters().iter().map(|c| c.flushes).sum();
        assert!(flushes >= 1);
        let served: u64 = disk.device.counters().iter().map(|c| c.served).sum();
        assert!(served >= 1200, "{served} requests through the packed rings");
        let _ = disk.adapter.stop();
        assert_clean(&disk);
    }
}

#[test]
fn packed_rings_without_indirect_descriptors() {
    // Direct chains of header, data and status through the packed ring (2.8.6).
    let disk = start(
        (features::DEFAULT | features::RING_PACKED) & !features::INDIRECT_DESC,
        InterruptMode::MsiX,
        None,
    );
    let negotiated = disk.device.negotiated_features();
    assert_ne!(negotiated & features::RING_PACKED, 0);
    assert_eq!(negotiated & features::INDIRECT_DESC, 0);
    patterned_io(&disk, 300);
    let _ = disk.adapter.stop();
    assert_clean(&disk);
}

#[test]
fn packed_rings_without_event_idx() {
    let disk = start(
        (features::DEFAULT | features::RING_PACKED) & !features::EVENT_IDX,
        InterruptMode::MsiX,
        None,
    );
    assert_ne!(disk.device.negotiated_features() & features::RING_PACKED, 0);
    patterned_io(&disk, 300);
    let _ = disk.adapter.stop();
    assert_clean(&disk);
}

#[test]
fn packed_0_refuses_packed_rings() {
    let disk = start(
        features::DEFAULT | features::RING_PACKED,
        InterruptMode::MsiX,
        Some("packed=0"),
    );
    assert_eq!(
        disk.device.negotiated_features() & features::RING_PACKED,
        0,
        "split rings when refused"
    );
    patterned_io(&disk, 200);
    let _ = disk.adapter.stop();
    assert_clean(&disk);
}

/// A device that lies on its packed ring: the driver notices each lie the way it does on a
/// split ring, and the disk works again afterwards with its data intact.
#[test]
fn packed_ring_lies_are_handled() {
    use vioblk_sim::device::FaultMode;
    for (mode, expect) in [
        // An id past the queue size, and a used descriptor with the previous lap's wrap
        // pattern: the ring is broken, the device is reset, the victim comes back BUS_RESET.
        (FaultMode::UsedIdOutOfRange, ffi::SRB_STATUS_BUS_RESET),
        (FaultMode::UsedIdxJump, ffi::SRB_STATUS_BUS_RESET),
        // A used length past the buffer: that request alone fails, HARDWARE ERROR.
        (
            FaultMode::UsedLenTooLarge,
            ffi::SRB_STATUS_ERROR | ffi::SRB_STATUS_AUTOSENSE_VALID,
        ),
    ] {
        let disk = start(
            features::DEFAULT | features::RING_PACKED,
            InterruptMode::MsiX,
            None,
        );
        let data = pattern(mode as u32, 4096);
        let c = exec(&disk, Request::data_out(&rw10(0x2A, 64, 8), data.clone()));
        assert_eq!(
            c.srb_status,
            ffi::SRB_STATUS_SUCCESS,
            "{mode:?}: first write"
        );
        disk.device.arm_fault(mode, 1);
        let victim = exec(
            &disk,
            Request::data_in(&rw10(0x28, 64, 8), 4096).timeout(600),
        );
        assert_eq!(disk.device.faults_fired(), 1, "{mode:?}: the fault fired");
        assert_eq!(victim.srb_status, expect, "{mode:?}: victim {victim:?}");
        if expect != ffi::SRB_STATUS_BUS_RESET {
            assert_eq!(victim.sense[2] & 0x0F, 0x4, "{mode:?}: HARDWARE ERROR");
        }
        assert_eq!(disk.adapter.activity().timeouts, 0, "{mode:?}: no timeout");
        // The disk works again and the data survived.
        let read = (0..100)
            .map(|_| {
                exec(
                    &disk,
                    Request::data_in(&rw10(0x28, 64, 8), 4096).timeout(600),
                )
            })
            .find(|c| c.srb_status == ffi::SRB_STATUS_SUCCESS)
            .expect("a read succeeds after the recovery");
        assert_eq!(read.data, data, "{mode:?}: data after recovery");
        patterned_io(&disk, 100);
        let _ = disk.adapter.stop();
        assert_clean(&disk);
    }
}

/// The model behind a PCI function whose doorbells (the notify structure, BAR 4 from 3000h)
/// are dropped while `held` is set.
struct HeldDoorbells {
    inner: Arc<VirtioBlkDevice>,
    held: AtomicBool,
}

/// The model's notify structure: BAR 4, 3000h..4000h (queue 0's doorbell at its start).
const NOTIFY: (u8, std::ops::Range<u64>) = (4, 0x3000..0x4000);

impl PciDevice for HeldDoorbells {
    fn config_read(&self, offset: u16, data: &mut [u8]) {
        self.inner.config_read(offset, data);
    }
    fn config_write(&self, offset: u16, data: &[u8]) {
        self.inner.config_write(offset, data);
    }
    fn bars(&self) -> Vec<Bar> {
        self.inner.bars()
    }
    fn bar_read(&self, bar: u8, offset: u64, data: &mut [u8]) {
        self.inner.bar_read(bar, offset, data);
    }
    fn bar_write(&self, bar: u8, offset: u64, data: &[u8]) {
        if bar == NOTIFY.0 && NOTIFY.1.contains(&offset) && self.held.load(Ordering::SeqCst) {
            return;
        }
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

/// The driver's event log code for a queue whose ring the device broke (src/hba/events.rs).
const RING_BROKEN: u32 = 0x0013_0005;

/// A device that writes a used buffer's id a second time, at the used position after it, over
/// a buffer the driver made available there (16 reads go on the one ring while the doorbells
/// are held, so the repeat lands on one of them): the driver takes the buffer as done and then
/// finds an id no longer in flight. The ring is broken: the event log says so once, the device
/// is reset, the reads before the lie succeed with their data, every other one succeeds with
/// its data or comes back BUS_RESET, none times out, and the disk works again afterwards with
/// its data intact.
#[test]
fn a_used_id_repeated_breaks_the_ring() {
    use vioblk_sim::device::FaultMode;
    let inner = Arc::new(
        VirtioBlkDevice::new(DeviceConfig {
            features: Some((features::DEFAULT | features::RING_PACKED) & !features::MQ),
            num_queues: 1,
            ..DeviceConfig::default()
        })
        .expect("the device model starts"),
    );
    let held = Arc::new(HeldDoorbells {
        inner: inner.clone(),
        held: AtomicBool::new(false),
    });
    let port = Port::new(PortOptions::default());
    port.load_driver(vioblk::DriverEntry)
        .expect("DriverEntry succeeds");
    let adapter = port
        .start_adapter(
            held.clone(),
            inner.guest_memory(),
            AdapterOptions::default(),
        )
        .expect("the adapter starts");
    let disk = Disk {
        port,
        adapter,
        device: inner,
    };
    assert_ne!(disk.device.negotiated_features() & features::RING_PACKED, 0);
    let data: Vec<Vec<u8>> = (0..16).map(|i| pattern(0xD0 + i, 4096)).collect();
    for (i, d) in data.iter().enumerate() {
        let lba = u32::try_from(i).unwrap() * 8;
        let c = exec(&disk, Request::data_out(&rw10(0x2A, lba, 8), d.clone()));
        assert_eq!(c.srb_status, ffi::SRB_STATUS_SUCCESS, "write {i}");
    }

    held.held.store(true, Ordering::SeqCst);
    disk.device.arm_fault(FaultMode::DuplicateUsedId, 3);
    // Each submission runs BuildIo and StartIo before it returns: all 16 are on the ring.
    let handles: Vec<_> = (0..16u32)
        .map(|i| {
            disk.adapter
                .submit(Request::data_in(&rw10(0x28, i * 8, 8), 4096).timeout(600))
        })
        .collect();
    held.held.store(false, Ordering::SeqCst);
    held.bar_write(NOTIFY.0, NOTIFY.1.start, &0u16.to_le_bytes());

    let mut reset = 0;
    for (i, h) in handles.into_iter().enumerate() {
        let c = h
            .wait_timeout(DEADLINE)
            .unwrap_or_else(|| hung(&disk, "a read in the burst never completed"));
        if c.srb_status == ffi::SRB_STATUS_SUCCESS {
            assert_eq!(c.data, data[i], "read {i} returned other data");
        } else {
            assert_eq!(c.srb_status, ffi::SRB_STATUS_BUS_RESET, "read {i}: {c:?}");
            assert!(i >= 3, "read {i}, before the lie, failed: {c:?}");
            reset += 1;
        }
    }
    assert_eq!(disk.device.faults_fired(), 1, "the fault fired");
    assert!(reset >= 1, "the buffer the lie overwrote came back");
    let broken = disk
        .adapter
        .event_log()
        .iter()
        .filter(|e| e.code == RING_BROKEN)
        .count();
    assert_eq!(broken, 1, "{:?}", disk.adapter.event_log());
    assert_eq!(disk.adapter.activity().timeouts, 0, "no timeout");
    // The disk works again and the data survived.
    for (i, d) in data.iter().enumerate() {
        let lba = u32::try_from(i).unwrap() * 8;
        let read = (0..100)
            .map(|_| exec(&disk, Request::data_in(&rw10(0x28, lba, 8), 4096)))
            .find(|c| c.srb_status == ffi::SRB_STATUS_SUCCESS)
            .unwrap_or_else(|| panic!("read {i} never succeeds again"));
        assert_eq!(read.data, *d, "read {i} after recovery");
    }
    patterned_io(&disk, 100);
    let _ = disk.adapter.stop();
    assert_clean(&disk);
}

/// Chained descriptors on a packed ring of 8 with event idx: the driver lets Storport send at
/// most 20 KiB, 5 pages, so that a buffer which starts mid-page (6 scatter-gather elements, with
/// the header and the status 8 descriptors) takes the whole ring, and the device must be told
/// of it although its event position was passed a whole lap ago. Every request, of every size
/// up to that, page-aligned or not, succeeds with its data.
#[test]
fn requests_that_fill_a_small_packed_ring_whole() {
    let disk = start_on(
        DeviceConfig {
            features: Some((features::DEFAULT | features::RING_PACKED) & !features::INDIRECT_DESC),
            num_queues: 2,
            max_queue_size: 8,
            ..DeviceConfig::default()
        },
        InterruptMode::MsiX,
        None,
    );
    let negotiated = disk.device.negotiated_features();
    assert_ne!(negotiated & features::RING_PACKED, 0);
    assert_eq!(negotiated & features::INDIRECT_DESC, 0);
    assert_ne!(negotiated & features::EVENT_IDX, 0);
    for blocks in [1u16, 8, 16, 24, 40] {
        for offset in [0, 512, 3584] {
            let what = format!("{blocks} blocks at page offset {offset}");
            let data = pattern(u32::from(blocks) ^ offset, usize::from(blocks) * 512);
            let write = Request {
                buffer_offset: offset,
                ..Request::data_out(&rw10(0x2A, 256, blocks), data.clone())
            };
            let c = exec(&disk, write);
            assert_eq!(c.srb_status, ffi::SRB_STATUS_SUCCESS, "{what}: write {c:?}");
            let read = Request {
                buffer_offset: offset,
                ..Request::data_in(&rw10(0x28, 256, blocks), u32::from(blocks) * 512)
            };
            let c = exec(&disk, read);
            assert_eq!(c.srb_status, ffi::SRB_STATUS_SUCCESS, "{what}: read {c:?}");
            assert!(c.data == data, "{what}: read back");
        }
    }
    let _ = disk.adapter.stop();
    assert_clean(&disk);
}
