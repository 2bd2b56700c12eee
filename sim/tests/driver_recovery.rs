//! Recovery paths through the real stack that the other suites reach only by the way: a device
//! that vanishes with one notification only, reset SRBs against a vanished device and while
//! another reset runs, and the SRB functions Storport sends besides EXECUTE_SCSI.
//!
//! Each test asserts what Storport and an administrator see: SRB statuses, the system event
//! log, the violations the user-mode Storport reports.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU32, Ordering};
use std::time::Duration;

use storport_sim::device::{Bar, DmaWatch, InterruptSink, PciDevice};
use storport_sim::{
    Adapter, AdapterOptions, Completion, InterruptMode, PATIENCE, Port, PortOptions, Request,
    RequestHandle, function,
};
use storport_sys as ffi;
use vioblk_sim::device::{DeviceConfig, FaultMode, VirtioBlkDevice, features};
use vioblk_sim::stack::{Stack, StackOptions};
use vioblk_sim::target::{ScsiRequest, ScsiTarget};

/// The driver's SURPRISE_REMOVAL event log code (src/hba/events.rs).
const SURPRISE_REMOVAL: u32 = 0x0013_0003;

/// The longest a request may take before the test counts it as hung.
const DEADLINE: Duration = Duration::from_secs(60);

/// Ends the process with a failure: a request the driver lost would make the teardown (which
/// waits for outstanding requests) hang too. Written past the test harness's capture.
fn hung(adapter: &Adapter, what: &str) -> ! {
    let log = adapter.log();
    let tail = log[log.len().saturating_sub(20)..].join("\n");
    let _ = writeln!(
        std::io::stderr().lock(),
        "HUNG (deadline {DEADLINE:?}): {what}\nlast log lines:\n{tail}"
    );
    std::process::exit(101);
}

fn wait(adapter: &Adapter, handle: RequestHandle, what: &str) -> Completion {
    handle
        .wait_timeout(DEADLINE)
        .unwrap_or_else(|| hung(adapter, what))
}

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
/// ISR reads all ones; with MSI-X, a configuration interrupt finds the device status all ones):
/// the surprise removal is in the event log at once, before Storport's PnP notifications, and
/// once only after them. Requests and reset SRBs sent in between fail with NO_DEVICE without
/// touching the device.
#[test]
fn a_removal_seen_once_is_logged_at_once() {
    for intx in [true, false] {
        let stack = start(intx, DeviceConfig::default());
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
            .unwrap_or_else(|e| {
                panic!(
                    "intx {intx}: {e}; the log: {:#x?}",
                    stack.adapter.event_log()
                )
            });
        assert_eq!(removals(&stack), 1, "{:#x?}", stack.adapter.event_log());

        let c = stack.execute(ScsiRequest::data_in(read10(0, 8), 4096));
        assert_eq!(
            c.status(),
            ffi::SRB_STATUS_NO_DEVICE,
            "intx {intx}: read after removal"
        );
        for reset in [function::RESET_LOGICAL_UNIT, function::RESET_DEVICE] {
            let c = stack.adapter.execute(Request::function(reset));
            assert_eq!(
                c.status(),
                ffi::SRB_STATUS_NO_DEVICE,
                "intx {intx}: reset {reset:#x}"
            );
        }

        // Storport's own notifications follow: they do not log the removal again.
        let (adapter, unit) = stack.adapter.surprise_remove();
        assert_eq!((adapter, unit), (Some(0), Some(0)));
        assert_eq!(removals(&stack), 1, "{:#x?}", stack.adapter.event_log());
        assert_clean(&stack);
    }
}

/// SRB functions other than EXECUTE_SCSI: ABORT_COMMAND, PNP, POWER without a power transition
/// and FREE_DUMP_POINTERS are completed SUCCESS; an unknown function (IO_CONTROL) and a
/// DUMP_POINTERS without a buffer INVALID_REQUEST; the disk still reads afterwards.
#[test]
fn other_srb_functions() {
    let stack = start(false, DeviceConfig::default());
    for (f, expected) in [
        (function::ABORT_COMMAND, ffi::SRB_STATUS_SUCCESS),
        (function::PNP, ffi::SRB_STATUS_SUCCESS),
        (function::POWER, ffi::SRB_STATUS_SUCCESS),
        (function::IO_CONTROL, ffi::SRB_STATUS_INVALID_REQUEST),
        // Nothing to free: the dump data lives in the device extension.
        (
            u32::from(ffi::SRB_FUNCTION_FREE_DUMP_POINTERS),
            ffi::SRB_STATUS_SUCCESS,
        ),
        // DUMP_POINTERS without its MINIPORT_DUMP_POINTERS buffer: nothing to answer in.
        (
            u32::from(ffi::SRB_FUNCTION_DUMP_POINTERS),
            ffi::SRB_STATUS_INVALID_REQUEST,
        ),
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
            let c = wait(&stack.adapter, handle, "a reset SRB");
            assert!(
                matches!(c.status(), ffi::SRB_STATUS_SUCCESS | ffi::SRB_STATUS_BUSY),
                "intx {intx}: reset {f:#x}: {c:?}"
            );
        }
        let c = wait(&stack.adapter, lost, "the lost request");
        assert_eq!(c.status(), ffi::SRB_STATUS_BUS_RESET, "intx {intx}: {c:?}");
        let c = stack.execute(ScsiRequest::data_in(read10(16, 8), 4096));
        assert_eq!(c.srb_status, ffi::SRB_STATUS_SUCCESS, "intx {intx}: {c:?}");
        assert_clean(&stack);
    }
}

fn pattern(seed: u32, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| ((i as u32).wrapping_mul(0x9E37) ^ seed.wrapping_mul(0x5BD1)) as u8)
        .collect()
}

/// Whether `c` is a failure the driver may give for a request the device mishandled: BUS_RESET
/// (the device was reset under it) or CHECK CONDITION with MEDIUM ERROR (the device said
/// IOERR), HARDWARE ERROR (a completion that cannot be right) or ILLEGAL REQUEST (UNSUPP).
fn clean_failure(c: &Completion) -> bool {
    c.status() == ffi::SRB_STATUS_BUS_RESET
        || (c.srb_status == ffi::SRB_STATUS_ERROR | ffi::SRB_STATUS_AUTOSENSE_VALID
            && matches!(c.sense.get(2).map(|k| k & 0x0F), Some(0x3..=0x5)))
}

/// Every fault the device model injects, on packed virtqueues, with MSI-X and with INTx, in a
/// burst of 16 reads: each read comes back with its data or fails cleanly (no request is lost,
/// none returns wrong data), the disk works afterwards with its data intact, and the user-mode
/// Storport reports no violation.
#[test]
fn every_fault_on_packed_rings() {
    let modes = FaultMode::ALL
        .into_iter()
        .chain([FaultMode::IoErrStatus, FaultMode::UnsuppStatus]);
    for mode in modes {
        for interrupts in [InterruptMode::MsiX, InterruptMode::Intx] {
            let what = format!("{mode:?} {interrupts:?}");
            let device = Arc::new(
                VirtioBlkDevice::new(DeviceConfig {
                    features: Some(features::DEFAULT | features::RING_PACKED),
                    num_queues: 2,
                    ..DeviceConfig::default()
                })
                .expect("the device model starts"),
            );
            device.set_slow_ms(100);
            let port = Port::new(PortOptions::default());
            port.load_driver(vioblk::DriverEntry)
                .expect("DriverEntry succeeds");
            let adapter = port
                .start_adapter(
                    device.clone(),
                    device.guest_memory(),
                    AdapterOptions {
                        interrupts,
                        ..AdapterOptions::default()
                    },
                )
                .expect("the adapter starts");
            let data: Vec<Vec<u8>> = (0..16).map(|i| pattern(i, 4096)).collect();
            for (i, d) in data.iter().enumerate() {
                let lba = u32::try_from(i).unwrap() * 8;
                let h = adapter.submit(Request::data_out(&write10(lba), d.clone()));
                let c = wait(&adapter, h, "a write");
                assert_eq!(c.srb_status, ffi::SRB_STATUS_SUCCESS, "{what}: write {i}");
            }
            device.arm_fault(mode, 3);
            // TimeOutValue 1 s: a request the device loses is recovered by Storport's timeout.
            let handles: Vec<RequestHandle> = (0..16u32)
                .map(|i| adapter.submit(Request::data_in(&read10(i * 8, 8), 4096).timeout(1)))
                .collect();
            for (i, h) in handles.into_iter().enumerate() {
                let c = wait(&adapter, h, "a read in the burst");
                if c.status() == ffi::SRB_STATUS_SUCCESS {
                    assert_eq!(c.data, data[i], "{what}: read {i} returned wrong data");
                } else {
                    assert!(clean_failure(&c), "{what}: read {i}: {c:?}");
                }
            }
            assert_eq!(device.faults_fired(), 1, "{what}: the fault fired");
            // The disk works again, its data intact (a reset may still be finishing: BUSY and
            // BUS_RESET are retried as the class driver would).
            for (i, d) in data.iter().enumerate() {
                let lba = u32::try_from(i).unwrap() * 8;
                let read = (0..100)
                    .map(|_| {
                        let h = adapter.submit(Request::data_in(&read10(lba, 8), 4096));
                        wait(&adapter, h, "a read after the fault")
                    })
                    .find(|c| c.status() == ffi::SRB_STATUS_SUCCESS)
                    .unwrap_or_else(|| panic!("{what}: read {i} never succeeds again"));
                assert_eq!(read.data, *d, "{what}: read {i} after recovery");
            }
            let _ = adapter.stop();
            let violations = port.violations();
            assert!(violations.is_empty(), "{what}: {violations:#?}");
        }
    }
}

fn write10(lba: u32) -> Vec<u8> {
    let mut c = read10(lba, 8);
    c[0] = 0x2A;
    c
}

// ---------------------------------------------------------------------------------------------
// A device that lies at start

/// A patch applied to what the model answers: (BAR or `None` for configuration space, offset,
/// the bytes read).
type Patch = Box<dyn Fn(Option<u8>, u64, &mut [u8]) + Send + Sync>;

/// The device model behind a PCI function whose reads `patch` alters.
struct Lying {
    inner: Arc<VirtioBlkDevice>,
    patch: Patch,
}

impl PciDevice for Lying {
    fn config_read(&self, offset: u16, data: &mut [u8]) {
        self.inner.config_read(offset, data);
        (self.patch)(None, u64::from(offset), data);
    }
    fn config_write(&self, offset: u16, data: &[u8]) {
        self.inner.config_write(offset, data);
    }
    fn bars(&self) -> Vec<Bar> {
        self.inner.bars()
    }
    fn bar_read(&self, bar: u8, offset: u64, data: &mut [u8]) {
        self.inner.bar_read(bar, offset, data);
        (self.patch)(Some(bar), offset, data);
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

/// Sets the bytes of a read that fall in `at..at + value.len()` (in the space `space`).
fn overlay(space: Option<u8>, at: u64, value: &'static [u8]) -> Patch {
    Box::new(move |s, offset, data: &mut [u8]| {
        if s != space {
            return;
        }
        for (i, byte) in data.iter_mut().enumerate() {
            let position = offset + i as u64;
            if let Some(v) = position
                .checked_sub(at)
                .and_then(|k| value.get(usize::try_from(k).ok()?))
            {
                *byte = *v;
            }
        }
    })
}

/// Common configuration of the model: BAR 4 offset 0 (VIRTIO 1.2 4.1.4.3).
const COMMON: Option<u8> = Some(4);
const FEATURES_OK: u8 = 0x08;
const DRIVER_OK: u8 = 0x04;

/// Starts the driver on the model behind `patch`: whether the adapter started, and the model's
/// device status afterwards.
fn start_lying(patch: Patch) -> (bool, u8) {
    let inner = Arc::new(VirtioBlkDevice::new(DeviceConfig::default()).unwrap());
    let memory = inner.guest_memory();
    let lying = Arc::new(Lying {
        inner: inner.clone(),
        patch,
    });
    let started = Stack::on_device(lying, memory, StackOptions::default());
    let ok = match started {
        Ok(stack) => {
            let violations = stack.violations();
            assert!(violations.is_empty(), "{violations:#?}");
            true
        }
        Err(_) => false,
    };
    (ok, inner.status())
}

/// FindAdapter refuses a function whose virtio structures cannot be found or used, without
/// touching the device (status 0), and a device that cannot be driven once it has been reset
/// (DRIVER_OK never set). An unchanged device behind the same wrapper starts.
#[test]
fn find_adapter_refuses_a_device_that_lies_at_start() {
    let (started, status) = start_lying(Box::new(|_, _, _| {}));
    assert!(started, "the wrapper itself is harmless");
    assert_eq!(status & 0x0F, 0x0F, "status {status:#04x}");
    // Untouched: no capability list (status register bit 4 of PCI status, and the capabilities
    // pointer, 34h); BAR 4 (20h) read as I/O space.
    let untouched: [(&str, Patch); 3] = [
        ("no capabilities pointer", overlay(None, 0x34, &[0x00])),
        (
            "capabilities pointer into the header",
            overlay(None, 0x34, &[0x10]),
        ),
        ("BAR 4 in I/O space", overlay(None, 0x20, &[0x01])),
    ];
    for (what, patch) in untouched {
        let (started, status) = start_lying(patch);
        assert!(!started, "{what}: the adapter started");
        assert_eq!(status, 0, "{what}: the device was touched");
    }
    // Reset, then found unusable: queue size 0 (queue_size, 18h), no queue at all (num_queues,
    // 12h, with MQ offered: see the model's default).
    let generation = AtomicU8::new(0);
    let unstable: Patch = Box::new(move |space, offset, data: &mut [u8]| {
        if space == COMMON && offset == 0x15 && data.len() == 1 {
            data[0] = generation.fetch_add(1, Ordering::Relaxed);
        }
    });
    let failed: [(&str, Patch); 7] = [
        ("queue size 0", overlay(COMMON, 0x18, &[0, 0])),
        ("no queue", overlay(COMMON, 0x12, &[0, 0])),
        // queue_msix_vector (1Ah) and msix_config (10h) read back NO_VECTOR: the device could
        // not allocate the vector (VIRTIO 1.2 4.1.4.3.1).
        ("queue vector refused", overlay(COMMON, 0x1A, &[0xFF, 0xFF])),
        (
            "configuration vector refused",
            overlay(COMMON, 0x10, &[0xFF, 0xFF]),
        ),
        // queue_notify_off (1Eh) past the notification structure.
        (
            "notify offset out of range",
            overlay(COMMON, 0x1E, &[0xFF, 0xFF]),
        ),
        // config_generation (15h) moves on every read: the configuration is never stable.
        ("configuration never stable", unstable),
        // device_status (14h) never reads 0 after the reset.
        ("reset never acknowledged", overlay(COMMON, 0x14, &[0x01])),
    ];
    for (what, patch) in failed {
        let (started, status) = start_lying(patch);
        assert!(!started, "{what}: the adapter started");
        assert_eq!(status & DRIVER_OK, 0, "{what}: status {status:#04x}");
    }
    // A device without VIRTIO_F_VERSION_1 (a legacy-only device): refused before any feature
    // is written (no FEATURES_OK, never DRIVER_OK).
    let device = Arc::new(
        VirtioBlkDevice::new(DeviceConfig {
            features: Some(features::DEFAULT & !features::VERSION_1),
            ..DeviceConfig::default()
        })
        .unwrap(),
    );
    let started = Stack::on_device(
        device.clone(),
        device.guest_memory(),
        StackOptions::default(),
    );
    assert!(started.is_err(), "a device without VERSION_1 started");
    let status = device.status();
    assert_eq!(
        status & (FEATURES_OK | DRIVER_OK),
        0,
        "without VERSION_1: {status:#04x}"
    );
}

// ---------------------------------------------------------------------------------------------
// Odd capability lists and device configurations (VIRTIO 1.2 4.1.4, 5.2.4)

/// All of `patches`, in order.
fn patches(patches: Vec<Patch>) -> Patch {
    Box::new(move |space, offset, data: &mut [u8]| {
        for p in &patches {
            p(space, offset, data);
        }
    })
}

/// Starts the driver on a model built from `config` behind `patch`: the stack if the adapter
/// started (with no Storport violation), and the model.
fn start_lying_on(
    config: DeviceConfig,
    patch: Patch,
) -> (Option<Stack<Lying>>, Arc<VirtioBlkDevice>) {
    let inner = Arc::new(VirtioBlkDevice::new(config).unwrap());
    start_lying_over(inner, patch)
}

/// [`start_lying_on`] over a model already built (which `patch` may consult).
fn start_lying_over(
    inner: Arc<VirtioBlkDevice>,
    patch: Patch,
) -> (Option<Stack<Lying>>, Arc<VirtioBlkDevice>) {
    let memory = inner.guest_memory();
    let lying = Arc::new(Lying {
        inner: inner.clone(),
        patch,
    });
    let stack = Stack::on_device(lying, memory, StackOptions::default()).ok();
    if let Some(stack) = &stack {
        let violations = stack.violations();
        assert!(violations.is_empty(), "{violations:#?}");
    }
    (stack, inner)
}

/// 16 writes of distinct data in flight, then 16 reads in flight: every one succeeds and each
/// read returns what was written there.
fn round_trip(stack: &Stack<Lying>, what: &str) {
    let data = |i: u32| -> Vec<u8> {
        (0..4096u32)
            .map(|k| (k.wrapping_mul(31) ^ i.wrapping_mul(0x9E) ^ (k >> 8)) as u8)
            .collect()
    };
    let writes: Vec<_> = (0..16u32)
        .map(|i| {
            stack
                .adapter
                .submit(Request::data_out(&write10(i * 8), data(i)))
        })
        .collect();
    for (i, h) in writes.into_iter().enumerate() {
        let c = wait(&stack.adapter, h, what);
        assert_eq!(
            c.srb_status & 0x3F,
            ffi::SRB_STATUS_SUCCESS,
            "{what}: write {i}"
        );
    }
    let reads: Vec<_> = (0..16u32)
        .map(|i| {
            stack
                .adapter
                .submit(Request::data_in(&read10(i * 8, 8), 4096))
        })
        .collect();
    for (i, h) in reads.into_iter().enumerate() {
        let c = wait(&stack.adapter, h, what);
        assert_eq!(
            c.srb_status & 0x3F,
            ffi::SRB_STATUS_SUCCESS,
            "{what}: read {i}"
        );
        assert!(
            c.data == data(i as u32),
            "{what}: read {i} returned other data"
        );
    }
}

/// The WCE bit of the caching mode page (MODE SENSE(6), current values, no block descriptors).
fn write_cache_enabled(stack: &Stack<Lying>, what: &str) -> bool {
    let c = stack.execute(ScsiRequest::data_in(vec![0x1A, 0x08, 0x08, 0, 24, 0], 24));
    assert_eq!(
        c.srb_status & 0x3F,
        ffi::SRB_STATUS_SUCCESS,
        "{what}: MODE SENSE"
    );
    let page = c.data_in.get(4..).unwrap_or_default();
    assert_eq!(
        page.first().map(|b| b & 0x3F),
        Some(0x08),
        "{what}: {:02x?}",
        c.data_in
    );
    page[2] & 0x04 != 0
}

/// One `struct virtio_pci_cap` (16 bytes, or 20 with `notify_off_multiplier`) at `at`, whose
/// next pointer is `next`.
fn virtio_cap(
    at: u64,
    next: u8,
    cfg_type: u8,
    bar: u8,
    offset: u32,
    length: u32,
    multiplier: Option<u32>,
) -> Patch {
    let mut bytes = vec![0x09, next, 16, cfg_type, bar, 0, 0, 0];
    bytes.extend_from_slice(&offset.to_le_bytes());
    bytes.extend_from_slice(&length.to_le_bytes());
    if let Some(m) = multiplier {
        bytes[2] = 20;
        bytes.extend_from_slice(&m.to_le_bytes());
    }
    overlay(None, at, Box::leak(bytes.into_boxed_slice()))
}

/// Capabilities a driver must skip, ahead of the model's own in the list (4.1.4.1: the first
/// usable one of each type wins): a PCI Express capability; a virtio capability shorter
/// than `struct virtio_pci_cap`; a common configuration in BAR 7 (there is none); one whose
/// offset + length wraps 32 bits; a notify capability without `notify_off_multiplier`, and one
/// with an odd multiplier (4.1.4.4: 0 or an even power of two; this one, 1001h, would put
/// queue 1's doorbell past the structure); after the model's list, a second MSI-X capability
/// with one message, which must not replace the first; in another list, a common configuration
/// at a misaligned offset. The adapter starts on the model's structures with all its queues,
/// and data written with many requests in flight reads back.
#[test]
fn unusable_capabilities_are_skipped() {
    // The model's list: MSI-X at 40h ... PCI-configuration access at 94h (next 0, at 95h);
    // A8h..100h is free.
    let list = patches(vec![
        overlay(None, 0x34, &[0xA8]),
        // cap_len 8, claiming to be the ISR status in BAR 4; what would be its offset and
        // length are the next capability's bytes (an offset far past the BAR).
        overlay(None, 0xA8, &[0x09, 0xB0, 8, 3, 4, 0, 0, 0]),
        virtio_cap(0xB0, 0xC0, 1, 7, 0, 0x1000, None),
        virtio_cap(0xC0, 0xD0, 1, 4, 0xFFFF_F000, 0x2000, None),
        // A notify structure over the ISR status (a doorbell there would never ring), 16
        // bytes long: what would be its multiplier is the next capability's first four bytes.
        virtio_cap(0xD0, 0xE0, 2, 4, 0x1000, 0x1000, None),
        // PCI Express (id 10h), four bytes here: an even "multiplier" (2E410h).
        overlay(None, 0xE0, &[0x10, 0xE4, 0x02, 0x00]),
        virtio_cap(0xE4, 0x40, 2, 4, 0x3000, 0x1000, Some(0x1001)),
        // After the model's last capability: MSI-X with a table of one entry.
        overlay(None, 0x95, &[0xF8]),
        overlay(None, 0xF8, &[0x11, 0x00, 0x00, 0x00]),
    ]);
    let (stack, device) = start_lying_on(DeviceConfig::default(), list);
    let stack = stack.expect("the adapter starts on the model's own capabilities");
    assert_eq!(
        device.status() & 0x0F,
        0x0F,
        "status {:#04x}",
        device.status()
    );
    assert_eq!(
        device.running_queues(),
        usize::from(DeviceConfig::default().num_queues),
        "the second MSI-X capability limited the queues"
    );
    round_trip(&stack, "odd capabilities");
    assert_clean_lying(&stack);
    drop(stack);

    // A common configuration at a misaligned offset (2) ahead of the model's: every 32-bit
    // register in it would be misaligned.
    let misaligned = patches(vec![
        overlay(None, 0x34, &[0xA8]),
        virtio_cap(0xA8, 0x40, 1, 4, 2, 0x1000, None),
    ]);
    let (stack, device) = start_lying_on(DeviceConfig::default(), misaligned);
    let stack = stack.expect("the adapter starts past a misaligned common configuration");
    assert_eq!(
        device.status() & 0x0F,
        0x0F,
        "status {:#04x}",
        device.status()
    );
    round_trip(&stack, "misaligned common configuration");
    assert_clean_lying(&stack);
    drop(stack);

    // A list the driver cannot walk: the PCI status register (06h) without "capabilities list"
    // (bit 4), or a capability whose next pointer is itself. The device is left untouched.
    let refused: [(&str, Patch); 2] = [
        (
            "no capabilities list bit",
            overlay(None, 0x06, &[0x00, 0x00]),
        ),
        ("a capability list that loops", overlay(None, 0x41, &[0x40])),
    ];
    for (what, patch) in refused {
        let (stack, device) = start_lying_on(DeviceConfig::default(), patch);
        assert!(stack.is_none(), "{what}: the adapter started");
        assert_eq!(device.status(), 0, "{what}: the device was touched");
    }
}

fn assert_clean_lying(stack: &Stack<Lying>) {
    let violations = stack.violations();
    assert!(violations.is_empty(), "{violations:#?}");
}

/// The device configuration's length (the device capability's `length`, at 7Ch) cut to
/// `length` bytes.
fn device_config_length(length: u8) -> Patch {
    overlay(None, 0x7C, Box::leak(Box::new([length, 0, 0, 0])))
}

/// The device configuration (BAR 4 at 2000h in the model) with `value` at `offset`.
fn device_config(offset: u64, value: &'static [u8]) -> Patch {
    overlay(Some(4), 0x2000 + offset, value)
}

/// A device configuration the driver cannot use (5.2.4): a field of a negotiated feature
/// outside the structure, or a value no disk has. FindAdapter refuses the device: it was
/// reset and never told DRIVER_OK, and it is told FAILED.
#[test]
fn find_adapter_refuses_an_unusable_device_configuration() {
    // Each field outside the structure with only its own feature offered (besides the ring's),
    // so no other field is missing: the same device with the whole structure starts.
    let only = |feature: u64| DeviceConfig {
        features: Some(
            features::VERSION_1 | features::INDIRECT_DESC | features::EVENT_IDX | feature,
        ),
        ..DeviceConfig::default()
    };
    let outside = [
        // SIZE_MAX: size_max (08h).
        ("size_max outside", features::SIZE_MAX, 8),
        // GEOMETRY: cylinders (10h) inside, heads (12h) outside.
        ("heads outside", features::GEOMETRY, 0x12),
        // TOPOLOGY: opt_io_size (1Ch).
        ("opt_io_size outside", features::TOPOLOGY, 0x1C),
        // DISCARD: max_discard_seg (28h).
        ("max_discard_seg outside", features::DISCARD, 0x28),
        // WRITE_ZEROES: max_write_zeroes_seg (34h).
        ("max_write_zeroes_seg outside", features::WRITE_ZEROES, 0x34),
    ];
    for (what, feature, length) in outside {
        let (stack, device) = start_lying_on(only(feature), device_config_length(length));
        assert!(stack.is_none(), "{what}: the adapter started");
        let status = device.status();
        assert_eq!(status & DRIVER_OK, 0, "{what}: status {status:#04x}");
        assert_eq!(
            status & 0x80,
            0x80,
            "{what}: status {status:#04x}: FAILED not set"
        );
        let (stack, _) = start_lying_on(only(feature), device_config_length(0x3C));
        assert!(stack.is_some(), "{what}: the whole structure was refused");
    }
    let cases: [(&str, DeviceConfig, Patch); 3] = [
        // blk_size (14h) not a power of two.
        (
            "blk_size 100",
            DeviceConfig::default(),
            device_config(0x14, &[100, 0, 0, 0]),
        ),
        // physical_block_exp (18h) 16: 65536 logical blocks per physical block.
        (
            "physical_block_exp 16",
            DeviceConfig::default(),
            device_config(0x18, &[16]),
        ),
        // num_queues (22h) 0 with MQ.
        (
            "num_queues 0",
            DeviceConfig::default(),
            device_config(0x22, &[0, 0]),
        ),
    ];
    for (what, config, patch) in cases {
        let (stack, device) = start_lying_on(config, patch);
        assert!(stack.is_none(), "{what}: the adapter started");
        let status = device.status();
        assert_eq!(status & DRIVER_OK, 0, "{what}: status {status:#04x}");
        assert_eq!(
            status & 0x80,
            0x80,
            "{what}: status {status:#04x}: FAILED not set"
        );
    }
    // Queue 1 offers a smaller ring (queue_size, 18h, read with queue_select, 16h, at 1) than
    // queue 0, whose size the driver chose for every queue: its setup is refused.
    let inner = Arc::new(VirtioBlkDevice::new(DeviceConfig::default()).unwrap());
    let model = inner.clone();
    let smaller: Patch = Box::new(move |space, offset, data: &mut [u8]| {
        if space == COMMON && offset == 0x18 && data.len() == 2 {
            let mut select = [0u8; 2];
            model.bar_read(4, 0x16, &mut select);
            if u16::from_le_bytes(select) == 1 {
                data.copy_from_slice(&16u16.to_le_bytes());
            }
        }
    });
    let (stack, device) = start_lying_over(inner, smaller);
    assert!(
        stack.is_none(),
        "queue 1 smaller than queue 0: the adapter started"
    );
    let status = device.status();
    assert_eq!(
        status & DRIVER_OK,
        0,
        "queue 1 smaller: status {status:#04x}"
    );
    // The same wrapper with the whole structure starts.
    let (stack, _) = start_lying_on(DeviceConfig::default(), device_config_length(0x3C));
    assert!(
        stack.is_some(),
        "a complete device configuration was refused"
    );
}

/// Device configurations a disk may have: GEOMETRY offered, TOPOLOGY not; the write cache as
/// the features and `writeback` say (5.2.5.1: with CONFIG_WCE, `writeback`; without it, on
/// when FLUSH is offered). Each disk starts and keeps its data, and MODE SENSE's caching page
/// shows the cache the device has.
#[test]
fn device_configurations_a_disk_may_have() {
    let cases: [(&str, u64, bool, bool); 4] = [
        (
            "geometry, no topology",
            (features::DEFAULT | features::GEOMETRY) & !features::TOPOLOGY,
            true,
            true,
        ),
        ("writeback 0", features::DEFAULT, false, false),
        (
            "FLUSH without CONFIG_WCE",
            features::DEFAULT & !features::CONFIG_WCE,
            true,
            true,
        ),
        (
            "neither FLUSH nor CONFIG_WCE",
            features::DEFAULT & !(features::CONFIG_WCE | features::FLUSH),
            true,
            false,
        ),
    ];
    for (what, offered, writeback, cache) in cases {
        let (stack, device) = start_lying_on(
            DeviceConfig {
                features: Some(offered),
                writeback,
                ..DeviceConfig::default()
            },
            Box::new(|_, _, _| {}),
        );
        let stack = stack.unwrap_or_else(|| panic!("{what}: the adapter did not start"));
        assert_eq!(
            device.negotiated_features() & (features::GEOMETRY | features::TOPOLOGY),
            offered & (features::GEOMETRY | features::TOPOLOGY),
            "{what}"
        );
        assert_eq!(write_cache_enabled(&stack, what), cache, "{what}: WCE");
        round_trip(&stack, what);
        assert_clean_lying(&stack);
    }
}

/// The model behind a PCI function whose first reset is acknowledged late: after the driver
/// first writes 0 to `device_status`, the next `polls` reads of it say 1 (ACKNOWLEDGE), then
/// the model answers again.
struct LateReset {
    inner: Arc<VirtioBlkDevice>,
    polls: u32,
    /// Reads still to answer 1; `u32::MAX` until the first reset.
    pending: AtomicU32,
}

/// `device_status` in the model's common configuration (BAR 4, 14h).
const DEVICE_STATUS: (u8, u64) = (4, 0x14);

impl PciDevice for LateReset {
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
        if (bar, offset) == DEVICE_STATUS && data.len() == 1 {
            let late = self
                .pending
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                    (n != u32::MAX && n > 0).then(|| n - 1)
                })
                .is_ok();
            if late {
                data[0] = 1;
            }
        }
    }
    fn bar_write(&self, bar: u8, offset: u64, data: &[u8]) {
        if (bar, offset) == DEVICE_STATUS && data == [0] {
            let _ = self.pending.compare_exchange(
                u32::MAX,
                self.polls,
                Ordering::SeqCst,
                Ordering::SeqCst,
            );
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

/// The driver's first reset polls `device_status` 1000 times, 1 ms apart, then reads it once
/// more (src/virtio/transport.rs, PATIENT_RESET_POLLS). A device that reads 0 only at that last
/// read is not given up on: the adapter starts and the disk keeps its data. (One that never
/// reads 0 is refused: `find_adapter_refuses_a_device_that_lies_at_start`.)
#[test]
fn a_reset_acknowledged_at_the_last_poll_still_counts() {
    let inner = Arc::new(VirtioBlkDevice::new(DeviceConfig::default()).unwrap());
    let late = Arc::new(LateReset {
        inner: inner.clone(),
        polls: 1000,
        pending: AtomicU32::new(u32::MAX),
    });
    let stack = Stack::on_device(late.clone(), inner.guest_memory(), StackOptions::default())
        .expect("the adapter starts on a reset acknowledged at the last poll");
    assert_eq!(
        late.pending.load(Ordering::SeqCst),
        0,
        "the driver read device_status fewer times than the device lied"
    );
    let status = inner.status();
    assert_eq!(status & 0x0F, 0x0F, "status {status:#04x}");
    let c = stack.execute(ScsiRequest::data_out(write10(0), vec![0x5A; 4096]));
    assert_eq!(c.srb_status & 0x3F, ffi::SRB_STATUS_SUCCESS, "write");
    let c = stack.execute(ScsiRequest::data_in(read10(0, 8), 4096));
    assert_eq!(c.srb_status & 0x3F, ffi::SRB_STATUS_SUCCESS, "read");
    assert!(c.data_in == [0x5A; 4096], "read back");
    let violations = stack.violations();
    assert!(violations.is_empty(), "{violations:#?}");
}

/// The device-specific configuration (VIRTIO 1.2 5.2.4) in the model's BAR 4.
const DEVICE_CONFIG: u64 = 0x2000;

/// Starts the driver on the model behind `patch` and hands the stack back.
fn start_on_lying(patch: Patch) -> Stack<Lying> {
    let inner = Arc::new(VirtioBlkDevice::new(DeviceConfig::default()).unwrap());
    let memory = inner.guest_memory();
    let lying = Arc::new(Lying { inner, patch });
    Stack::on_device(lying, memory, StackOptions::default()).expect("the stack starts")
}

/// A device whose configuration holds values the driver must read conservatively: a minimum I/O
/// size of 0 (none stated), write zeroes that may not unmap (so UNMAP is carried by DISCARD)
/// and a discard alignment of 16 sectors. VPD page B0h reports the granularities as the driver
/// read them (the physical block, and the discard alignment); UNMAP goes to the device as a
/// DISCARD, and I/O works.
#[test]
fn a_device_with_odd_configuration_values_is_read_conservatively() {
    let fields: [(u64, &'static [u8]); 3] = [
        (26, &[0, 0]),        // min_io_size
        (44, &[16, 0, 0, 0]), // discard_sector_alignment
        (56, &[0]),           // write_zeroes_may_unmap
    ];
    let patches: Vec<Patch> = fields
        .iter()
        .map(|&(at, value)| overlay(COMMON, DEVICE_CONFIG + at, value))
        .collect();
    let stack = start_on_lying(Box::new(move |space, offset, data: &mut [u8]| {
        for patch in &patches {
            patch(space, offset, data);
        }
    }));
    let data_in = |cdb: &[u8], len: u32| {
        let c = stack.adapter.execute(Request::data_in(cdb, len));
        assert!(
            matches!(
                c.status(),
                ffi::SRB_STATUS_SUCCESS | ffi::SRB_STATUS_DATA_OVERRUN
            ),
            "{cdb:02X?}: {c:?}"
        );
        c.data_bytes().to_vec()
    };
    // Block Limits (SBC-3 table 208).
    let physical = 1u16 << DeviceConfig::default().physical_block_exp;
    let b0 = data_in(&[0x12, 0x01, 0xB0, 0, 0xFF, 0], 255);
    assert_eq!(
        b0[6..8],
        physical.to_be_bytes(),
        "OPTIMAL TRANSFER LENGTH GRANULARITY: the physical block: {b0:02X?}"
    );
    assert_eq!(
        b0[28..32],
        [0, 0, 0, 16],
        "OPTIMAL UNMAP GRANULARITY: the discard alignment: {b0:02X?}"
    );
    // UNMAP of 8 blocks goes to the device as a DISCARD; the disk reads and writes.
    let c = stack
        .adapter
        .execute(Request::data_out(&write10(64), pattern(3, 4096)));
    assert_eq!(c.status(), ffi::SRB_STATUS_SUCCESS, "{c:?}");
    let mut list = vec![0, 22, 0, 16, 0, 0, 0, 0];
    list.extend(64u64.to_be_bytes());
    list.extend(8u32.to_be_bytes());
    list.extend([0; 4]);
    let c = stack
        .adapter
        .execute(Request::data_out(&[0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0], list));
    assert_eq!(c.status(), ffi::SRB_STATUS_SUCCESS, "UNMAP: {c:?}");
    let discards: u64 = stack
        .device
        .inner
        .counters()
        .iter()
        .map(|c| c.discards)
        .sum();
    assert_eq!(discards, 1);
    let c = stack.adapter.execute(Request::data_in(&read10(0, 8), 4096));
    assert_eq!(c.status(), ffi::SRB_STATUS_SUCCESS, "{c:?}");
    let violations = stack.violations();
    assert!(violations.is_empty(), "{violations:#?}");
}

/// The driver's RESET_NOT_ACKNOWLEDGED event log code (src/hba/events.rs).
const RESET_NOT_ACKNOWLEDGED: u32 = 0x0013_0001;

/// A device that vanishes around a PnP stop, before Storport knows (no request outstanding, so
/// no interrupt tells the driver): ScsiStopAdapter finds all ones and stops without a reset
/// complaint; ScsiSetRunningConfig touches nothing, and ScsiRestartAdapter refuses to start the
/// vanished device. Vanishing between the stop and the restart ends the same way.
#[test]
fn a_device_that_vanishes_around_a_stop_is_not_restarted() {
    for vanish_before_stop in [true, false] {
        let what = if vanish_before_stop {
            "vanished before the stop"
        } else {
            "vanished while stopped"
        };
        let stack = start(false, DeviceConfig::default());
        let c = stack.execute(ScsiRequest::data_in(read10(0, 8), 4096));
        assert_eq!(c.srb_status, ffi::SRB_STATUS_SUCCESS, "{what}: {c:?}");
        if vanish_before_stop {
            stack.device.surprise_remove();
        }
        assert_eq!(stack.adapter.stop(), Some(0), "{what}: ScsiStopAdapter");
        if !vanish_before_stop {
            stack.device.surprise_remove();
        }
        assert!(
            stack.adapter.restart().is_err(),
            "{what}: a vanished device was restarted"
        );
        assert!(
            stack
                .adapter
                .log()
                .iter()
                .any(|l| l == "AdapterControl(ScsiSetRunningConfig) = Some(0)"),
            "{what}: {:?}",
            stack.adapter.log()
        );
        let log = stack.adapter.event_log();
        assert!(
            !log.iter().any(|e| e.code == RESET_NOT_ACKNOWLEDGED),
            "{what}: a vanished device is no unacknowledged reset: {log:#x?}"
        );
        assert_clean(&stack);
    }
}

/// A machine that cannot give the adapter its ring memory (StorPortGetUncachedExtension returns
/// NULL: here the guest memory is too small for the rings): HwStorFindAdapter fails, and the
/// device it had already reset and negotiated with is told so (FAILED), never DRIVER_OK.
#[test]
fn no_ring_memory_fails_the_start_and_the_device() {
    const FAILED: u8 = 0x80;
    let device = Arc::new(
        VirtioBlkDevice::new(DeviceConfig {
            guest_memory_size: 4 << 10,
            ..DeviceConfig::default()
        })
        .unwrap(),
    );
    let started = Stack::on_device(
        device.clone(),
        device.guest_memory(),
        StackOptions::default(),
    );
    let Err(error) = started else {
        panic!("the adapter started without its ring memory");
    };
    assert!(error.contains("FindAdapter"), "{error}");
    let status = device.status();
    assert_eq!(
        status & (FAILED | DRIVER_OK),
        FAILED,
        "status {status:#04x}"
    );
}

/// A device with more queues and MSI-X messages than the driver uses (32; the driver takes 16)
/// that signals a message the driver gave no queue: the interrupt is not the driver's, nothing
/// is completed or broken by it, and every queue keeps working.
#[test]
fn an_interrupt_on_a_message_without_a_queue_is_not_claimed() {
    let stack = start(
        false,
        DeviceConfig {
            num_queues: 32,
            ..DeviceConfig::default()
        },
    );
    for message in [17, 32] {
        stack.adapter.raise_interrupt(message);
    }
    let handles: Vec<RequestHandle> = (0..32u32)
        .map(|i| {
            let adapter = &stack.adapter;
            std::thread::scope(|s| {
                s.spawn(|| adapter.submit(Request::data_in(&read10(8 * i, 8), 4096)))
                    .join()
                    .unwrap()
            })
        })
        .collect();
    for handle in handles {
        let c = wait(&stack.adapter, handle, "a read");
        assert_eq!(c.status(), ffi::SRB_STATUS_SUCCESS, "{c:?}");
    }
    assert_clean(&stack);
}

/// A Storport that breaks its contract and sends requests without the SRB extension the driver
/// asked for: every request that needs one to reach the device (READ, WRITE, SYNCHRONIZE CACHE,
/// UNMAP, WRITE SAME, SRB_FUNCTION_FLUSH) fails with INTERNAL_ERROR without touching the
/// device; commands the driver answers itself (INQUIRY) still work; and with the extensions
/// back, the disk reads and writes.
#[test]
fn requests_without_an_srb_extension_fail_without_reaching_the_device() {
    let stack = start(false, DeviceConfig::default());
    let mut unmap_list = vec![0, 22, 0, 16, 0, 0, 0, 0];
    unmap_list.extend(64u64.to_be_bytes());
    unmap_list.extend(8u32.to_be_bytes());
    unmap_list.extend([0; 4]);
    let device_requests = |s: &Stack| -> u64 {
        s.device
            .counters()
            .iter()
            .map(|c| c.reads + c.writes + c.flushes + c.discards + c.write_zeroes)
            .sum()
    };
    stack.adapter.withhold_srb_extensions(true);
    let before = device_requests(&stack);
    let requests = [
        ("READ(10)", Request::data_in(&read10(0, 8), 4096)),
        (
            "WRITE(10)",
            Request::data_out(&write10(0), pattern(1, 4096)),
        ),
        (
            "SYNCHRONIZE CACHE(10)",
            Request::scsi(&[0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
        ),
        (
            "UNMAP",
            Request::data_out(&[0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0], unmap_list),
        ),
        (
            "WRITE SAME(10)",
            Request::data_out(&[0x41, 0, 0, 0, 0, 64, 0, 0, 8, 0], vec![0; 512]),
        ),
        ("SRB_FUNCTION_FLUSH", Request::function(function::FLUSH)),
    ];
    for (what, request) in requests {
        let c = stack.adapter.execute(request);
        assert_eq!(c.status(), ffi::SRB_STATUS_INTERNAL_ERROR, "{what}: {c:?}");
    }
    assert_eq!(
        device_requests(&stack),
        before,
        "a request reached the device"
    );
    let c = stack
        .adapter
        .execute(Request::data_in(&[0x12, 0, 0, 0, 36, 0], 36));
    assert_eq!(c.status(), ffi::SRB_STATUS_SUCCESS, "INQUIRY: {c:?}");
    stack.adapter.withhold_srb_extensions(false);
    let c = stack
        .adapter
        .execute(Request::data_out(&write10(0), pattern(1, 4096)));
    assert_eq!(c.status(), ffi::SRB_STATUS_SUCCESS, "{c:?}");
    let c = stack.adapter.execute(Request::data_in(&read10(0, 8), 4096));
    assert_eq!(c.status(), ffi::SRB_STATUS_SUCCESS, "{c:?}");
    assert!(c.data_bytes() == pattern(1, 4096));
    assert_clean(&stack);
}

/// A device that offers fewer features after a stop than it did at the start (here FLUSH
/// withdrawn): the restart cannot give the disk what Storport and the class driver were told
/// (a write cache that can be flushed), so it fails, and the device is told so (FAILED), instead
/// of running with features the device no longer has.
#[test]
fn a_restart_that_finds_a_feature_withdrawn_fails() {
    let withdrawn = Arc::new(AtomicU8::new(0));
    let flag = withdrawn.clone();
    let flush_bit = features::FLUSH as u32;
    let patch: Patch = Box::new(move |space, offset, data| {
        // device_feature (common configuration 04h), the low half holding FLUSH (bit 9).
        if flag.load(Ordering::Acquire) == 1 && space == COMMON && offset == 0x04 && data.len() == 4
        {
            let value = u32::from_le_bytes([data[0], data[1], data[2], data[3]]) & !flush_bit;
            data.copy_from_slice(&value.to_le_bytes());
        }
    });
    let inner = Arc::new(VirtioBlkDevice::new(DeviceConfig::default()).unwrap());
    let (stack, inner) = start_lying_over(inner, patch);
    let stack = stack.expect("the device starts with every feature");
    round_trip(&stack, "before the stop");
    assert_eq!(stack.adapter.stop(), Some(0));
    withdrawn.store(1, Ordering::Release);
    assert!(
        stack.adapter.restart().is_err(),
        "the restart went on without FLUSH"
    );
    assert_ne!(
        inner.status() & 0x80,
        0,
        "FAILED set: {:#04x}",
        inner.status()
    );
    assert_eq!(
        inner.status() & DRIVER_OK,
        0,
        "DRIVER_OK: {:#04x}",
        inner.status()
    );
}
