//! The virtio-blk device model checked by the oracle: the independent (Storport-less) driver.
#![forbid(unsafe_code)]

use std::sync::Arc;

use storport_sim::PATIENCE;
use storport_sim::device::PciDevice;
use vioblk_sim::device::oracle::{
    BenchParams, Buf, DirectDriver, DriverError, RingError, random_reads, req_status, types,
};
use vioblk_sim::device::{
    BackendConfig, DeviceConfig, FaultMode, VIRTIO_BAR, VirtioBlkDevice, features as f, status,
};

const BASIC: u64 = f::VERSION_1 | f::MQ | f::FLUSH | f::BLK_SIZE | f::SEG_MAX | f::SIZE_MAX;

fn device(config: DeviceConfig) -> Arc<VirtioBlkDevice> {
    Arc::new(VirtioBlkDevice::new(config).expect("device"))
}

fn started(config: DeviceConfig, features: u64, queues: u16) -> DirectDriver {
    DirectDriver::start(device(config), features, queues, 64).expect("start")
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

#[test]
fn features_ok_is_refused_without_version_1_or_with_unoffered_bits() {
    let mut d = DirectDriver::new(device(DeviceConfig::default())).unwrap();
    let offered = d.regs().device_features();
    assert_eq!(offered & f::VERSION_1, f::VERSION_1);
    assert_eq!(offered & f::RO, 0);
    assert_eq!(d.negotiate(f::FLUSH), Err(DriverError::FeaturesRefused));
    assert_eq!(
        d.negotiate(f::VERSION_1 | f::RO),
        Err(DriverError::FeaturesRefused)
    );
    assert_eq!(
        d.negotiate(f::VERSION_1 | f::FLUSH),
        Ok(f::VERSION_1 | f::FLUSH)
    );
    assert_eq!(d.device().negotiated_features(), f::VERSION_1 | f::FLUSH);
    // Reset clears the status and the negotiation.
    d.reset();
    assert_eq!(d.regs().status(), 0);
    assert_eq!(d.device().negotiated_features(), 0);
}

#[test]
fn data_round_trips_on_several_queues() {
    let d = started(
        DeviceConfig::default(),
        BASIC | f::EVENT_IDX | f::INDIRECT_DESC,
        4,
    );
    for q in 0..4u16 {
        let data = pattern(q as u8, 8192);
        assert_eq!(d.write(q, 64 * u64::from(q), &data), Ok(req_status::OK));
    }
    for q in 0..4u16 {
        // Read through another queue than the one that wrote.
        let c = d.read((q + 1) % 4, 64 * u64::from(q), 8192).unwrap();
        assert_eq!(c.status, req_status::OK);
        assert_eq!(c.used_len, 8193);
        assert_eq!(c.data, pattern(q as u8, 8192));
        let mut disk = vec![0u8; 8192];
        d.device()
            .read_disk(64 * 512 * u64::from(q), &mut disk)
            .unwrap();
        assert_eq!(disk, pattern(q as u8, 8192));
    }
    let counters = d.device().counters();
    for c in &counters {
        assert_eq!((c.reads, c.writes, c.errors), (1, 1, 0));
        assert_eq!((c.bytes_read, c.bytes_written), (8192, 8192));
        assert!(c.notifications >= 2);
        assert!(c.interrupts >= 1);
    }
    let flush = d.request(0, types::FLUSH, 0, &[], 0).unwrap();
    assert_eq!(flush.status, req_status::OK);
}

#[test]
fn get_id_returns_the_zero_padded_serial() {
    let config = DeviceConfig {
        serial: "SER-42".into(),
        ..DeviceConfig::default()
    };
    let d = started(config, BASIC, 1);
    let c = d.request(0, types::GET_ID, 0, &[], 20).unwrap();
    assert_eq!(c.status, req_status::OK);
    assert_eq!(c.used_len, 21);
    let mut want = [0u8; 20];
    want[..6].copy_from_slice(b"SER-42");
    assert_eq!(c.data, want);
}

fn segment(sector: u64, sectors: u32, flags: u32) -> Vec<u8> {
    let mut s = Vec::new();
    s.extend_from_slice(&sector.to_le_bytes());
    s.extend_from_slice(&sectors.to_le_bytes());
    s.extend_from_slice(&flags.to_le_bytes());
    s
}

#[test]
fn discard_and_write_zeroes_zero_their_ranges() {
    let d = started(
        DeviceConfig::default(),
        BASIC | f::DISCARD | f::WRITE_ZEROES,
        1,
    );
    let data = pattern(7, 16 * 512);
    assert_eq!(d.write(0, 100, &data), Ok(req_status::OK));
    let mut segs = segment(102, 2, 0);
    segs.extend(segment(110, 1, 0));
    let c = d.request(0, types::DISCARD, 0, &segs, 0).unwrap();
    assert_eq!(c.status, req_status::OK);
    let c = d
        .request(0, types::WRITE_ZEROES, 0, &segment(104, 1, 1), 0)
        .unwrap();
    assert_eq!(c.status, req_status::OK);
    let back = d.read(0, 100, 16 * 512).unwrap().data;
    for s in 0..16u64 {
        let chunk = &back[(s as usize) * 512..(s as usize + 1) * 512];
        if matches!(s, 2 | 3 | 4 | 10) {
            assert!(chunk.iter().all(|b| *b == 0), "sector {s} not zeroed");
        } else {
            assert_eq!(chunk, &data[(s as usize) * 512..(s as usize + 1) * 512]);
        }
    }
    // The unmap flag is for WRITE_ZEROES only; reserved flags are unsupported.
    let c = d
        .request(0, types::DISCARD, 0, &segment(0, 1, 1), 0)
        .unwrap();
    assert_eq!(c.status, req_status::UNSUPP);
    let c = d
        .request(0, types::WRITE_ZEROES, 0, &segment(0, 1, 2), 0)
        .unwrap();
    assert_eq!(c.status, req_status::UNSUPP);
    // More segments than max_discard_seg (8).
    let many: Vec<u8> = (0..9).flat_map(|i| segment(i, 1, 0)).collect();
    let c = d.request(0, types::DISCARD, 0, &many, 0).unwrap();
    assert_eq!(c.status, req_status::UNSUPP);
    // Past the end, and a ragged segment list.
    let cap = d.device().capacity();
    let c = d
        .request(0, types::DISCARD, 0, &segment(cap - 1, 2, 0), 0)
        .unwrap();
    assert_eq!(c.status, req_status::IOERR);
    let c = d.request(0, types::DISCARD, 0, &[0u8; 15], 0).unwrap();
    assert_eq!(c.status, req_status::IOERR);
}

#[test]
fn discard_without_the_feature_is_unsupported() {
    let d = started(DeviceConfig::default(), BASIC, 1);
    let c = d
        .request(0, types::DISCARD, 0, &segment(0, 1, 0), 0)
        .unwrap();
    assert_eq!(c.status, req_status::UNSUPP);
}

#[test]
fn read_only_device_refuses_writes() {
    let config = DeviceConfig {
        read_only: true,
        ..DeviceConfig::default()
    };
    let dev = device(config);
    dev.write_disk(0, &pattern(3, 512)).unwrap();
    let d = DirectDriver::start(dev, BASIC | f::RO | f::DISCARD | f::WRITE_ZEROES, 1, 64).unwrap();
    assert_eq!(d.regs().device_features() & f::RO, f::RO);
    assert_eq!(d.write(0, 0, &[1u8; 512]), Ok(req_status::IOERR));
    let c = d
        .request(0, types::DISCARD, 0, &segment(0, 1, 0), 0)
        .unwrap();
    assert_eq!(c.status, req_status::IOERR);
    let c = d
        .request(0, types::WRITE_ZEROES, 0, &segment(0, 1, 0), 0)
        .unwrap();
    assert_eq!(c.status, req_status::IOERR);
    let c = d.read(0, 0, 512).unwrap();
    assert_eq!((c.status, c.data), (req_status::OK, pattern(3, 512)));
}

#[test]
fn out_of_range_and_malformed_requests_fail_with_ioerr() {
    let d = started(DeviceConfig::default(), BASIC, 1);
    let cap = d.device().capacity();
    assert_eq!(d.read(0, cap - 1, 4096).unwrap().status, req_status::IOERR);
    assert_eq!(
        d.read(0, u64::MAX - 1, 4096).unwrap().status,
        req_status::IOERR
    );
    assert_eq!(d.read(0, cap - 8, 4096).unwrap().status, req_status::OK);
    assert_eq!(d.write(0, cap, &[0u8; 512]), Ok(req_status::IOERR));
    // Not a whole number of sectors.
    assert_eq!(d.read(0, 0, 100).unwrap().status, req_status::IOERR);
    // A read whose data buffer is device-readable (wrong direction).
    assert_eq!(
        d.request(0, types::IN, 0, &[0u8; 512], 0).unwrap().status,
        req_status::IOERR
    );
    let c = d.request(0, 99, 0, &[], 0).unwrap();
    assert_eq!(c.status, req_status::UNSUPP);
    assert_eq!(d.device().queue_counters(0).unwrap().other, 1);
}

#[test]
fn logical_block_size_is_enforced() {
    let config = DeviceConfig {
        logical_block_size: 4096,
        ..DeviceConfig::default()
    };
    let d = started(config, BASIC, 1);
    let mut blk = [0u8; 4];
    d.regs().device_cfg(20, &mut blk);
    assert_eq!(u32::from_le_bytes(blk), 4096);
    assert_eq!(d.read(0, 8, 4096).unwrap().status, req_status::OK);
    assert_eq!(d.read(0, 1, 4096).unwrap().status, req_status::IOERR);
    assert_eq!(d.read(0, 8, 512).unwrap().status, req_status::IOERR);
}

#[test]
fn event_idx_suppresses_interrupts_until_used_event() {
    let d = started(DeviceConfig::default(), BASIC | f::EVENT_IDX, 1);
    let area = d.alloc(5 * 1024, 4096).unwrap();
    let mut q = d.queue(0);
    let vector = q.vector();
    assert_eq!(vector, 1);
    let before = d.sink().count(vector);
    // Interrupt only once the fifth completion is used (used_event = 4).
    q.set_used_event(4);
    for i in 0..5u64 {
        let base = area + i * 1024;
        let mut header = [0u8; 16];
        header[8..].copy_from_slice(&i.to_le_bytes());
        use vm_memory::Bytes;
        d.device()
            .memory()
            .write_slice(&header, vm_memory::GuestAddress(base))
            .unwrap();
        let bufs = [
            Buf {
                addr: base,
                len: 16,
                device_writable: false,
            },
            Buf {
                addr: base + 512,
                len: 512,
                device_writable: true,
            },
            Buf {
                addr: base + 16,
                len: 1,
                device_writable: true,
            },
        ];
        q.add(&bufs).unwrap();
    }
    assert!(q.kick(d.regs()));
    d.device()
        .wait_until("the device to use all five requests", PATIENCE, || {
            q.used_idx() == 5
        })
        .unwrap();
    // The device is done with all five, so their one interrupt has been sent.
    assert_eq!(d.sink().count(vector) - before, 1);
    let c = d.device().queue_counters(0).unwrap();
    assert_eq!((c.interrupts, c.suppressed), (1, 4));
    for _ in 0..5 {
        assert!(q.pop_used().unwrap().is_some());
    }
}

#[test]
fn resize_bumps_generation_and_raises_the_config_interrupt() {
    let d = started(DeviceConfig::default(), BASIC, 1);
    let generation = d.regs().common8(0x15);
    let before = d.sink().count(0);
    let new_cap = d.device().capacity() * 2;
    d.device().resize(new_cap).unwrap();
    assert_eq!(d.sink().wait(0, before, PATIENCE), Ok(before + 1));
    assert_eq!(d.regs().common8(0x15), generation.wrapping_add(1));
    let mut cap = [0u8; 8];
    d.regs().device_cfg(0, &mut cap);
    assert_eq!(u64::from_le_bytes(cap), new_cap);
    // The new space is usable.
    assert_eq!(
        d.write(0, new_cap - 8, &pattern(9, 4096)),
        Ok(req_status::OK)
    );
    assert_eq!(d.read(0, new_cap - 8, 4096).unwrap().data, pattern(9, 4096));
}

#[test]
fn reset_stops_the_queue_threads() {
    let mut d = started(DeviceConfig::default(), BASIC, 4);
    assert_eq!(d.device().running_queues(), 4);
    assert_eq!(d.read(2, 0, 512).unwrap().status, req_status::OK);
    let dev = d.device().clone();
    d.reset();
    assert_eq!(dev.running_queues(), 0);
    assert_eq!(d.regs().status(), 0);
    // A doorbell after reset reaches no thread and changes nothing.
    dev.bar_write(VIRTIO_BAR, 0x3000, &0u16.to_le_bytes());
    assert_eq!(dev.running_queues(), 0);
    // The device can be brought up again.
    d.negotiate(BASIC).unwrap();
    d.setup_queues(2, 32).unwrap();
    d.driver_ok();
    assert_eq!(dev.running_queues(), 2);
    assert_eq!(d.read(1, 0, 512).unwrap().status, req_status::OK);
}

#[test]
fn writeback_is_writable_only_with_config_wce() {
    let d = started(DeviceConfig::default(), BASIC, 1);
    let mut wb = [0u8];
    d.regs().write_device_cfg(32, &[0]);
    d.regs().device_cfg(32, &mut wb);
    assert_eq!(wb, [1]);
    let d = started(DeviceConfig::default(), BASIC | f::CONFIG_WCE, 1);
    d.regs().write_device_cfg(32, &[0]);
    d.regs().device_cfg(32, &mut wb);
    assert_eq!(wb, [0]);
    let mut nq = [0u8; 2];
    d.regs().device_cfg(34, &mut nq);
    assert_eq!(u16::from_le_bytes(nq), 4);
}

#[test]
fn intx_mode_completes_and_reports_through_isr() {
    let config = DeviceConfig {
        msix_vectors: Some(0),
        ..DeviceConfig::default()
    };
    let d = started(config, BASIC, 1);
    assert_eq!(d.device().msix_message_count(), 0);
    assert_eq!(d.read(0, 0, 512).unwrap().status, req_status::OK);
    assert!(d.sink().count(0) >= 1);
    // The completion's ISR bit was read (and cleared) by the driver; a resize sets bit 1.
    d.device().resize(d.device().capacity() + 8).unwrap();
    assert!(d.device().intx_asserted());
    assert_eq!(d.regs().isr(), 2);
    assert!(!d.device().intx_asserted());
}

#[test]
fn bad_ring_address_sets_needs_reset() {
    let dev = device(DeviceConfig::default());
    let mut d = DirectDriver::new(dev.clone()).unwrap();
    d.negotiate(BASIC).unwrap();
    let desc = d.alloc(64 * 16, 4096).unwrap();
    let avail = d.alloc(4096, 4096).unwrap();
    let regs = d.regs();
    regs.write_common(0x16, &0u16.to_le_bytes()); // queue_select
    regs.write_common(0x18, &64u16.to_le_bytes()); // queue_size
    regs.write_common(0x20, &desc.to_le_bytes());
    regs.write_common(0x28, &avail.to_le_bytes());
    regs.write_common(0x30, &0x10u64.to_le_bytes()); // used ring outside guest memory
    regs.write_common(0x1C, &1u16.to_le_bytes()); // queue_enable
    assert_eq!(regs.common16(0x1C), 1);
    d.driver_ok();
    assert_ne!(d.regs().status() & status::DEVICE_NEEDS_RESET, 0);
    assert_eq!(dev.running_queues(), 0);
    // A queue size that is not a power of two is refused the same way.
    d.negotiate(BASIC).unwrap();
    let regs = d.regs();
    regs.write_common(0x18, &48u16.to_le_bytes());
    regs.write_common(0x20, &desc.to_le_bytes());
    regs.write_common(0x28, &avail.to_le_bytes());
    regs.write_common(0x30, &(avail + 2048).to_le_bytes());
    regs.write_common(0x1C, &1u16.to_le_bytes());
    d.driver_ok();
    assert_ne!(d.regs().status() & status::DEVICE_NEEDS_RESET, 0);
}

#[test]
fn chain_without_a_writable_status_sets_needs_reset() {
    let d = started(DeviceConfig::default(), BASIC, 1);
    let area = d.alloc(4096, 4096).unwrap();
    let before = d.sink().count(0);
    {
        let mut q = d.queue(0);
        q.add(&[
            Buf {
                addr: area,
                len: 16,
                device_writable: false,
            },
            Buf {
                addr: area + 16,
                len: 1,
                device_writable: false,
            },
        ])
        .unwrap();
        q.kick(d.regs());
    }
    assert_eq!(d.sink().wait(0, before, PATIENCE), Ok(before + 1));
    assert_ne!(d.regs().status() & status::DEVICE_NEEDS_RESET, 0);
}

/// Arms `mode` for the second read from now and returns the driver and that read's outcome.
/// Each of these faults ends the request at once (a bad used entry, a bad status, or
/// DEVICE_NEEDS_RESET); the lost request has its own test.
fn faulty(mode: FaultMode) -> (DirectDriver, Result<u8, DriverError>) {
    let d = started(DeviceConfig::default(), BASIC | f::EVENT_IDX, 1);
    assert_eq!(d.read(0, 0, 512).unwrap().status, req_status::OK);
    d.device().arm_fault(mode, 2);
    assert_eq!(d.read(0, 0, 512).unwrap().status, req_status::OK);
    let r = d.read(0, 0, 512).map(|c| c.status);
    assert_eq!(d.device().faults_fired(), 1);
    (d, r)
}

#[test]
fn fault_used_id_out_of_range_is_detected() {
    let (_, r) = faulty(FaultMode::UsedIdOutOfRange);
    assert_eq!(r, Err(DriverError::Ring(RingError::BadId(64 + 7))));
}

#[test]
fn fault_used_len_too_large_is_detected() {
    let (_, r) = faulty(FaultMode::UsedLenTooLarge);
    assert!(
        matches!(r, Err(DriverError::Ring(RingError::BadLen { .. }))),
        "{r:?}"
    );
}

#[test]
fn fault_used_idx_jump_is_detected() {
    let (_, r) = faulty(FaultMode::UsedIdxJump);
    assert!(
        matches!(r, Err(DriverError::Ring(RingError::IdxJump { .. }))),
        "{r:?}"
    );
}

#[test]
fn fault_bad_status_is_visible() {
    let (d, r) = faulty(FaultMode::BadStatus);
    assert_eq!(r, Ok(0x7F));
    assert_eq!(d.read(0, 0, 512).unwrap().status, req_status::OK);
}

#[test]
fn fault_lost_request_never_completes() {
    let d = started(DeviceConfig::default(), BASIC | f::EVENT_IDX, 1);
    assert_eq!(d.read(0, 0, 512).unwrap().status, req_status::OK);
    d.device().arm_fault(FaultMode::LostRequest, 2);
    assert_eq!(d.read(0, 0, 512).unwrap().status, req_status::OK);
    // The victim, a read, placed by hand: waiting for its completion would only end by timing
    // out. Instead wait until the device is done with it, then see that it left no trace.
    let area = d.alloc(4096, 4096).unwrap();
    let mut header = [0u8; 16];
    header[0..4].copy_from_slice(&types::IN.to_le_bytes());
    use vm_memory::Bytes;
    d.device()
        .memory()
        .write_slice(&header, vm_memory::GuestAddress(area))
        .unwrap();
    let mut q = d.queue(0);
    let vector = q.vector();
    let interrupts = d.sink().count(vector);
    let used = q.used_idx();
    let served = d.device().queue_counters(0).unwrap().served;
    q.enable_interrupts();
    q.add(&[
        Buf {
            addr: area,
            len: 16,
            device_writable: false,
        },
        Buf {
            addr: area + 512,
            len: 512,
            device_writable: true,
        },
        Buf {
            addr: area + 16,
            len: 1,
            device_writable: true,
        },
    ])
    .unwrap();
    q.kick(d.regs());
    d.device()
        .wait_until(
            "the device to take the victim and be done with it",
            PATIENCE,
            || d.device().queue_counters(0).unwrap().served > served,
        )
        .unwrap();
    assert_eq!(d.device().faults_fired(), 1);
    let c = d.device().queue_counters(0).unwrap();
    assert_eq!(c.reads, 3, "the device executed the victim");
    assert_eq!(q.used_idx(), used, "no used entry");
    assert_eq!(q.pop_used(), Ok(None));
    assert_eq!(d.sink().count(vector), interrupts, "no interrupt");
    assert_eq!(d.regs().status() & status::DEVICE_NEEDS_RESET, 0);
}

#[test]
fn fault_needs_reset_stops_the_device() {
    let (mut d, r) = faulty(FaultMode::NeedsReset);
    assert_eq!(r, Err(DriverError::NeedsReset));
    assert_ne!(d.regs().status() & status::DEVICE_NEEDS_RESET, 0);
    assert!(d.sink().count(0) >= 1);
    d.reset();
    assert_eq!(d.regs().status(), 0);
}

#[test]
fn file_backend_round_trips() {
    let dir = std::env::temp_dir().join(format!("vioblk-device-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("disk.img");
    let config = DeviceConfig {
        backend: BackendConfig::File(path.clone()),
        capacity_sectors: 2048,
        writeback: false,
        ..DeviceConfig::default()
    };
    {
        let d = started(config.clone(), BASIC | f::CONFIG_WCE, 2);
        assert_eq!(d.write(1, 16, &pattern(5, 4096)), Ok(req_status::OK));
        assert_eq!(
            d.request(0, types::FLUSH, 0, &[], 0).unwrap().status,
            req_status::OK
        );
    }
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 2048 * 512);
    {
        let d = started(config, BASIC, 1);
        assert_eq!(d.read(0, 16, 4096).unwrap().data, pattern(5, 4096));
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn pci_identity_and_cfg_window() {
    let dev = device(DeviceConfig::default());
    let mut id = [0u8; 4];
    dev.config_read(0, &mut id);
    assert_eq!(id, [0xF4, 0x1A, 0x42, 0x10]);
    let mut class = [0u8; 4];
    dev.config_read(8, &mut class);
    assert_eq!(class, [1, 0, 0, 1]);
    let bars = dev.bars();
    assert!(
        bars.iter()
            .any(|b| b.index == 4 && b.is_64bit && b.size == 0x4000)
    );
    assert!(bars.iter().any(|b| b.index == 1 && !b.is_64bit));
    // Find the pci-cfg capability and read num_queues (common + 0x12) through it.
    let mut at = {
        let mut b = [0u8];
        dev.config_read(0x34, &mut b);
        u16::from(b[0])
    };
    let mut cap = None;
    while at != 0 {
        let mut h = [0u8; 4];
        dev.config_read(at, &mut h);
        if h[0] == 9 && h[3] == 5 {
            cap = Some(at);
        }
        at = u16::from(h[1]);
    }
    let cap = cap.expect("pci-cfg capability");
    dev.config_write(cap + 4, &[4]);
    dev.config_write(cap + 8, &0x12u32.to_le_bytes());
    dev.config_write(cap + 12, &2u32.to_le_bytes());
    let mut nq = [0u8; 2];
    dev.config_read(cap + 16, &mut nq);
    assert_eq!(u16::from_le_bytes(nq), 4);
}

#[test]
fn direct_random_read_benchmark_runs() {
    let config = DeviceConfig {
        num_queues: 2,
        ..DeviceConfig::default()
    };
    let report = random_reads(
        device(config),
        &BenchParams {
            queues: 2,
            queue_depth: 16,
            requests_per_queue: 2000,
            ..BenchParams::default()
        },
    )
    .unwrap();
    assert_eq!(report.completions, 4000);
    assert_eq!(report.errors, 0);
    assert!(report.iops > 0.0);
}
