//! The real driver end to end: DriverEntry, start, and I/O through the user-mode Storport and
//! the virtio-blk device model, in each interrupt mode.
#![forbid(unsafe_code)]

use storport_sim::{Port, PortOptions};
use storport_sys as ffi;
use vioblk_sim::device::DeviceConfig;
use vioblk_sim::stack::{Stack, StackOptions};
use vioblk_sim::target::{ScsiRequest, ScsiTarget};

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

fn pattern(lba: u32, len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ (lba as u8) ^ seed)
        .collect()
}

fn stack(options: StackOptions) -> Stack {
    Stack::start(options).expect("the stack starts")
}

fn assert_clean(stack: &Stack) {
    let violations = stack.violations();
    assert!(
        violations.is_empty(),
        "Storport violations:\n{}",
        violations.join("\n")
    );
}

/// Writes and reads back blocks through the driver, checks data, INQUIRY and READ CAPACITY.
fn exercise(stack: &Stack, block: usize) {
    let inquiry = stack.execute(ScsiRequest::data_in(vec![0x12, 0, 0, 0, 96, 0], 96));
    // Standard INQUIRY data is shorter than 96 bytes: an underrun, reported as DATA_OVERRUN with
    // the length that moved.
    assert_eq!(inquiry.srb_status, ffi::SRB_STATUS_DATA_OVERRUN, "INQUIRY");
    assert_eq!(inquiry.data_transfer_length as usize, inquiry.data_in.len());
    assert_eq!(&inquiry.data_in[8..14], b"VIOBLK");

    let capacity = stack.execute(ScsiRequest::data_in(
        vec![0x9E, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0],
        32,
    ));
    assert_eq!(
        capacity.srb_status & 0x3F,
        ffi::SRB_STATUS_SUCCESS,
        "READ CAPACITY(16)"
    );
    let last_lba = u64::from_be_bytes(capacity.data_in[0..8].try_into().unwrap());
    let block_len = u32::from_be_bytes(capacity.data_in[8..12].try_into().unwrap());
    assert_eq!(block_len as usize, block);
    assert!(last_lba > 1000);

    for (i, lba) in [0u32, 7, 100, 999].into_iter().enumerate() {
        let data = pattern(lba, 8 * block, i as u8);
        let w = stack.execute(ScsiRequest::data_out(write10(lba, 8), data.clone()));
        assert_eq!(w.srb_status, ffi::SRB_STATUS_SUCCESS, "WRITE(10) at {lba}");
        let r = stack.execute(ScsiRequest::data_in(read10(lba, 8), (8 * block) as u32));
        assert_eq!(r.srb_status, ffi::SRB_STATUS_SUCCESS, "READ(10) at {lba}");
        assert!(r.data_in == data, "data read back at LBA {lba} differs");
        // The device model's own view of the disk agrees.
    }

    // Past the end: ILLEGAL REQUEST, LOGICAL BLOCK ADDRESS OUT OF RANGE.
    let beyond = u32::try_from(last_lba + 1).unwrap();
    let r = stack.execute(ScsiRequest::data_in(read10(beyond, 1), block as u32));
    assert_eq!(
        r.srb_status,
        ffi::SRB_STATUS_ERROR | ffi::SRB_STATUS_AUTOSENSE_VALID
    );
    assert_eq!(r.scsi_status, ffi::SCSISTAT_CHECK_CONDITION);
    assert_eq!(
        (r.sense[2] & 0xF, r.sense[12], r.sense[13]),
        (0x5, 0x21, 0x00)
    );
}

#[test]
fn driver_entry_registers_every_callback_with_storport() {
    let port = Port::new(PortOptions::default());
    // The linked driver, or the image CI runs the suites on (VIOBLK_DRIVER_IMAGE).
    let entry = match vioblk_sim::stack::driver_image(&StackOptions::default()) {
        Some(path) => storport_sim::image::load(&path).unwrap().driver_entry(),
        None => vioblk::DriverEntry,
    };
    let registration = port.load_driver(entry).expect("DriverEntry succeeds");
    let hw = registration.hw_init;
    assert_eq!(hw.HwInitializationDataSize, 208);
    assert_eq!(hw.AdapterInterfaceType, ffi::PCIBus);
    assert!(hw.HwFindAdapter.is_some());
    assert!(hw.HwInitialize.is_some());
    assert!(hw.HwBuildIo.is_some());
    assert!(hw.HwStartIo.is_some());
    assert!(hw.HwInterrupt.is_some());
    assert!(hw.HwResetBus.is_some());
    assert!(hw.HwAdapterControl.is_some());
    assert_eq!(hw.SrbTypeFlags, ffi::SRB_TYPE_FLAG_STORAGE_REQUEST_BLOCK);
    assert_eq!(hw.AddressTypeFlags, ffi::ADDRESS_TYPE_FLAG_BTL8);
    assert_eq!(
        hw.SrbExtensionSize as usize,
        vioblk::hba::SRB_EXTENSION_SIZE
    );
    assert_eq!(hw.MapBuffers, ffi::STOR_MAP_NON_READ_WRITE_BUFFERS);
    assert!(hw.DeviceExtensionSize > 0);
    assert_eq!(hw.NeedPhysicalAddresses, 1);
    assert!(port.violations().is_empty());
}

#[test]
fn multi_queue_msix_reads_and_writes() {
    let stack = stack(StackOptions {
        device: DeviceConfig {
            num_queues: 4,
            ..DeviceConfig::default()
        },
        ..StackOptions::default()
    });
    assert_eq!(
        stack.adapter.synchronization(),
        (true, true),
        "full duplex, per-message locks"
    );
    let (channels, flags) = stack.adapter.perf();
    assert_eq!(channels, 4, "one concurrent channel per queue");
    assert_ne!(flags & ffi::STOR_PERF_CONCURRENT_CHANNELS, 0);
    exercise(&stack, 512);
    assert_clean(&stack);
}

#[test]
fn single_interrupt_intx_reads_and_writes() {
    let stack = stack(StackOptions {
        intx: true,
        ..StackOptions::default()
    });
    exercise(&stack, 512);
    assert_clean(&stack);
}

#[test]
fn four_kn_disk_reads_and_writes() {
    let stack = stack(StackOptions {
        device: DeviceConfig {
            logical_block_size: 4096,
            ..DeviceConfig::default()
        },
        ..StackOptions::default()
    });
    exercise(&stack, 4096);
    assert_clean(&stack);
}

#[test]
fn dump_mode_polls_one_queue() {
    let stack = stack(StackOptions {
        dump: true,
        ..StackOptions::default()
    });
    exercise(&stack, 512);
    assert_clean(&stack);
}

/// `Adapter::submit_to`, the benchmark's submission path: completions come back through a
/// `CompletionQueue` with their tags and data (in recycled buffers), many in flight at once.
#[test]
fn completions_handed_to_a_queue_carry_tags_and_data() {
    use std::time::Duration;
    use storport_sim::{CompletionQueue, Request};
    let stack = stack(StackOptions::default());
    let queue = CompletionQueue::new();
    let mut done = Vec::new();
    let mut wait_for = |n: usize| {
        let mut got = Vec::new();
        while got.len() < n {
            assert!(
                queue.wait_into(&mut done, Duration::from_secs(30)),
                "completions stopped after {} of {n}",
                got.len()
            );
            got.append(&mut done);
        }
        got
    };
    // 32 writes of 4 KiB in flight, each with its own pattern, then 32 reads of them.
    for i in 0..32u32 {
        let req = Request::data_out(&write10(i * 8, 8), pattern(i * 8, 4096, 7));
        stack.adapter.submit_to(&req, &queue, u64::from(i));
    }
    let mut writes = wait_for(32);
    writes.sort_by_key(|(tag, _)| *tag);
    for (i, (tag, c)) in writes.iter().enumerate() {
        assert_eq!(*tag, i as u64);
        assert!(c.is_success(), "write {i}: {c:?}");
    }
    let mut read = Request::data_in(&read10(0, 8), 4096);
    for round in 0..2 {
        for i in 0..32u32 {
            read.cdb = read10(i * 8, 8);
            stack.adapter.submit_to(&read, &queue, u64::from(i));
        }
        for (tag, c) in wait_for(32) {
            assert!(c.is_success(), "read {tag} (round {round}): {c:?}");
            assert_eq!(
                c.data,
                pattern(tag as u32 * 8, 4096, 7),
                "read {tag} (round {round}) returned other bytes"
            );
            queue.recycle(c.data);
        }
    }
    assert_clean(&stack);
}

/// A lending `CompletionQueue` (the benchmark's) hands over the guest buffer the device wrote
/// instead of a copy: the bytes are the ones written, and a buffer held by the submitter is not
/// handed to another request meanwhile (reads of other blocks go on while the first ones are
/// held, and the held bytes do not change).
#[test]
fn a_lending_queue_hands_over_the_buffer_the_device_wrote() {
    use std::time::Duration;
    use storport_sim::{CompletionQueue, Request};
    let stack = stack(StackOptions::default());
    let queue = CompletionQueue::lending();
    let mut done = Vec::new();
    let mut wait_for = |n: usize| {
        let mut got = Vec::new();
        while got.len() < n {
            assert!(
                queue.wait_into(&mut done, Duration::from_secs(30)),
                "completions stopped after {} of {n}",
                got.len()
            );
            got.append(&mut done);
        }
        got
    };
    for i in 0..64u32 {
        let req = Request::data_out(&write10(i * 8, 8), pattern(i * 8, 4096, 3));
        stack.adapter.submit_to(&req, &queue, u64::from(i));
    }
    assert!(wait_for(64).iter().all(|(_, c)| c.is_success()));
    let mut read = Request::data_in(&read10(0, 8), 4096);
    for i in 0..32u32 {
        read.cdb = read10(i * 8, 8);
        stack.adapter.submit_to(&read, &queue, u64::from(i));
    }
    let held = wait_for(32);
    for (tag, c) in &held {
        assert!(c.is_success(), "read {tag}: {c:?}");
        assert!(
            c.data.is_empty() && c.lent.is_some(),
            "read {tag} was copied"
        );
    }
    // The other 32 blocks, several times over, while the first completions are held.
    for round in 0..4 {
        for i in 32..64u32 {
            read.cdb = read10(i * 8, 8);
            stack.adapter.submit_to(&read, &queue, u64::from(i));
        }
        for (tag, c) in wait_for(32) {
            assert!(c.is_success(), "read {tag} (round {round}): {c:?}");
            assert_eq!(c.data_bytes(), pattern(tag as u32 * 8, 4096, 3));
        }
    }
    for (tag, c) in &held {
        assert_eq!(
            c.data_bytes(),
            pattern(*tag as u32 * 8, 4096, 3),
            "held read {tag} changed under its submitter"
        );
    }
    drop(held);
    assert_clean(&stack);
}
