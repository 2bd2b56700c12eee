//! Every SCSI command the driver supports, through the real stack (BuildIo, StartIo, the ring,
//! the device model, the interrupt, the DPC), checked byte for byte against SPC-4 and SBC-3:
//! the data, the SRB status, the SCSI status and the sense key / ASC / ASCQ.
//!
//! The expected bytes are written here from the standards and from the device model's
//! configuration (what a virtio-blk device with that `virtio_blk_config` must look like as a SCSI
//! disk), never read back from the driver's own tables.
#![forbid(unsafe_code)]

use storport_sim::device::PciDevice;
use storport_sim::{PATIENCE, PortOptions, Request};
use storport_sys as ffi;
use vioblk_sim::device::{BackendConfig, DeviceConfig, features};
use vioblk_sim::stack::{Stack, StackOptions};
use vioblk_sim::target::{ScsiCompletion, ScsiRequest, ScsiTarget};

mod scsi_stack;
use scsi_stack::{assert_clean, assert_good, default_stack, start};

/// SCSI sense keys (SPC-4 table 51).
mod key {
    pub const NO_SENSE: u8 = 0x0;
    pub const MEDIUM_ERROR: u8 = 0x3;
    pub const ILLEGAL_REQUEST: u8 = 0x5;
    pub const UNIT_ATTENTION: u8 = 0x6;
    pub const DATA_PROTECT: u8 = 0x7;
}

const SERIAL: &[u8] = b"VIOBLK-SIM-0001";

/// CHECK CONDITION with autosense: fixed-format current sense data (SPC-4 4.5.3) with `key`,
/// `asc`, `ascq`.
fn assert_check(c: &ScsiCompletion, sense_key: u8, asc: u8, ascq: u8, what: &str) {
    assert_eq!(
        c.srb_status,
        ffi::SRB_STATUS_ERROR | ffi::SRB_STATUS_AUTOSENSE_VALID,
        "{what}: {c:?}"
    );
    assert_eq!(c.scsi_status, ffi::SCSISTAT_CHECK_CONDITION, "{what}");
    assert!(c.sense.len() >= 14, "{what}: sense {:?}", c.sense);
    assert_eq!(c.sense[0] & 0x7F, 0x70, "{what}: response code");
    assert!(c.sense[7] >= 6, "{what}: additional sense length");
    assert_eq!(
        (c.sense[2] & 0x0F, c.sense[12], c.sense[13]),
        (sense_key, asc, ascq),
        "{what}: key/ASC/ASCQ"
    );
    assert_eq!(c.data_transfer_length, 0, "{what}: no data moves");
}

/// A command answered with parameter data of its own length: SUCCESS when it fills the
/// allocation, else an underrun (SRB_STATUS_DATA_OVERRUN with the length that moved).
fn data_in(stack: &Stack, cdb: Vec<u8>, allocation: u32) -> Vec<u8> {
    let what = format!("CDB {cdb:02X?}");
    let c = stack.execute(ScsiRequest::data_in(cdb, allocation));
    assert_eq!(c.scsi_status, ffi::SCSISTAT_GOOD, "{what}: {c:?}");
    assert_eq!(c.data_transfer_length as usize, c.data_in.len(), "{what}");
    let expected = if c.data_in.len() == allocation as usize {
        ffi::SRB_STATUS_SUCCESS
    } else {
        ffi::SRB_STATUS_DATA_OVERRUN
    };
    assert_eq!(c.srb_status, expected, "{what}");
    c.data_in
}

fn inquiry_vpd(stack: &Stack, page: u8) -> Vec<u8> {
    let data = data_in(stack, vec![0x12, 0x01, page, 0x00, 0xFF, 0x00], 255);
    assert_eq!(data[0], 0x00, "VPD {page:02X}: peripheral");
    assert_eq!(data[1], page, "VPD {page:02X}: page code");
    let length = usize::from(u16::from_be_bytes([data[2], data[3]]));
    assert_eq!(data.len(), 4 + length, "VPD {page:02X}: PAGE LENGTH");
    data
}

/// A stack whose driver has the device's serial number. HwStorInitialize polls GET_ID for 1 ms;
/// a device that answers later (what a busy machine sometimes makes of a healthy one) has its
/// answer taken by the driver's next drain of queue 0, so VPD 80h carries the serial from then
/// on: wait for that (a deadline whose expiry fails the test), never start again.
fn stack_with_serial(start: impl FnOnce() -> Stack) -> Stack {
    let stack = start();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while inquiry_vpd(&stack, 0x80)[4..] != *SERIAL {
        assert!(
            std::time::Instant::now() < deadline,
            "VPD 80h never carried the serial the device answered GET_ID with"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    stack
}

fn rw_cdb(opcode: u8, flags: u8, lba: u64, blocks: u32) -> Vec<u8> {
    match opcode {
        0x08 | 0x0A => {
            assert!(lba < 1 << 21 && blocks <= 256);
            let lba = (lba as u32).to_be_bytes();
            vec![opcode, lba[1] & 0x1F, lba[2], lba[3], blocks as u8, 0]
        }
        0x28 | 0x2A | 0x2E | 0x2F | 0x35 | 0x41 => {
            let mut c = vec![opcode, flags, 0, 0, 0, 0, 0, 0, 0, 0];
            c[2..6].copy_from_slice(&u32::try_from(lba).unwrap().to_be_bytes());
            c[7..9].copy_from_slice(&u16::try_from(blocks).unwrap().to_be_bytes());
            c
        }
        0xA8 | 0xAA => {
            let mut c = vec![opcode, flags, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
            c[2..6].copy_from_slice(&u32::try_from(lba).unwrap().to_be_bytes());
            c[6..10].copy_from_slice(&blocks.to_be_bytes());
            c
        }
        _ => {
            let mut c = vec![opcode, flags, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
            c[2..10].copy_from_slice(&lba.to_be_bytes());
            c[10..14].copy_from_slice(&blocks.to_be_bytes());
            c
        }
    }
}

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| ((i as u64).wrapping_mul(0x9E37) ^ seed.wrapping_mul(0x5BD1)) as u8)
        .collect()
}

fn write(stack: &Stack, opcode: u8, flags: u8, lba: u64, data: Vec<u8>) -> ScsiCompletion {
    let blocks = u32::try_from(data.len() / 512).unwrap();
    stack.execute(ScsiRequest::data_out(
        rw_cdb(opcode, flags, lba, blocks),
        data,
    ))
}

fn read(stack: &Stack, opcode: u8, lba: u64, blocks: u32, block: u32) -> ScsiCompletion {
    stack.execute(ScsiRequest::data_in(
        rw_cdb(opcode, 0, lba, blocks),
        blocks * block,
    ))
}

fn disk_bytes(stack: &Stack, offset: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    stack.device.read_disk(offset, &mut out).unwrap();
    out
}

fn flushes(stack: &Stack) -> u64 {
    stack.device.counters().iter().map(|c| c.flushes).sum()
}

/// The device's `writeback` field (virtio_blk_config offset 32), found the way a driver finds
/// it: the vendor capability of type VIRTIO_PCI_CAP_DEVICE_CFG (VIRTIO 1.2 4.1.4).
fn device_writeback(stack: &Stack) -> u8 {
    let dev = &*stack.device;
    let mut b = [0u8; 1];
    dev.config_read(0x34, &mut b);
    let mut at = u16::from(b[0]);
    for _ in 0..48 {
        assert!(at >= 0x40, "no device configuration capability");
        let mut cap = [0u8; 12];
        dev.config_read(at, &mut cap);
        if cap[0] == 0x09 && cap[3] == 4 {
            let offset = u64::from(u32::from_le_bytes(cap[8..12].try_into().unwrap()));
            let mut wb = [0u8; 1];
            dev.bar_read(cap[4], offset + 32, &mut wb);
            return wb[0];
        }
        at = u16::from(cap[1]);
    }
    panic!("capability list does not end");
}

/// Waits until the driver has seen a configuration change (it tells Storport with
/// BusChangeDetected) after `before` such notifications.
fn wait_bus_changes(stack: &Stack, before: usize) {
    let waited = stack.adapter.wait_until(
        "the driver to report the configuration change (BusChangeDetected)",
        PATIENCE,
        || bus_changes(stack) > before,
    );
    if let Err(e) = waited {
        panic!("{e}; log: {:?}", stack.adapter.log());
    }
}

fn bus_changes(stack: &Stack) -> usize {
    stack
        .adapter
        .log()
        .iter()
        .filter(|l| l.starts_with("BusChangeDetected"))
        .count()
}

// ---------------------------------------------------------------------------------------------
// INQUIRY

#[test]
fn standard_inquiry_spc4() {
    let stack = default_stack();
    let data = data_in(&stack, vec![0x12, 0, 0, 0, 0xFF, 0], 255);
    // SPC-4 6.6.2: ADDITIONAL LENGTH is n - 4.
    assert!(data.len() >= 36);
    assert_eq!(usize::from(data[4]) + 5, data.len(), "ADDITIONAL LENGTH");
    assert_eq!(data[0], 0x00, "connected direct-access block device");
    assert_eq!(data[1] & 0x80, 0, "not removable");
    assert_eq!(data[2], 0x06, "VERSION: SPC-4");
    assert_eq!(data[3] & 0x0F, 0x02, "RESPONSE DATA FORMAT 2");
    assert_eq!(data[3] & 0xC0, 0, "obsolete NORMACA/TRMTSK clear");
    assert_eq!(data[5], 0x00, "no SCCS, ACC, TPGS, 3PC, PROTECT");
    assert_eq!(data[7] & 0x02, 0x02, "CMDQUE: command queuing");
    assert_eq!(&data[8..16], b"VIOBLK  ", "T10 VENDOR IDENTIFICATION");
    assert_eq!(&data[16..32], b"virtio-blk disk ", "PRODUCT IDENTIFICATION");
    assert_eq!(&data[32..36], b"0001", "PRODUCT REVISION LEVEL");
    // VERSION DESCRIPTORS (SPC-4 table 141) at 58..74: SAM-5, SPC-4, SBC-3.
    assert_eq!(data.len(), 74);
    let versions: Vec<u16> = data[58..74]
        .chunks(2)
        .map(|v| u16::from_be_bytes([v[0], v[1]]))
        .filter(|&v| v != 0)
        .collect();
    assert_eq!(versions, [0x00A0, 0x0460, 0x04C0]);

    // The allocation length truncates (SPC-4 4.2.5.6): exactly 36 bytes is a full transfer.
    let short = stack.execute(ScsiRequest::data_in(vec![0x12, 0, 0, 0, 36, 0], 36));
    assert_good(&short, "INQUIRY(36)");
    assert_eq!(short.data_in, data[..36]);
    // EVPD = 0 with a page code is an invalid field (SPC-4 6.6.1).
    let c = stack.execute(ScsiRequest::data_in(vec![0x12, 0, 0x80, 0, 36, 0], 36));
    assert_check(
        &c,
        key::ILLEGAL_REQUEST,
        0x24,
        0x00,
        "INQUIRY page without EVPD",
    );
    // An unsupported VPD page.
    let c = stack.execute(ScsiRequest::data_in(vec![0x12, 1, 0x86, 0, 64, 0], 64));
    assert_check(&c, key::ILLEGAL_REQUEST, 0x24, 0x00, "VPD 86h");
    assert_clean(&stack);
}

#[test]
fn vpd_pages_sbc3() {
    let stack = stack_with_serial(default_stack);
    let config = DeviceConfig::default();

    // 00h Supported VPD Pages (SPC-4 7.8.16), ascending.
    let p = inquiry_vpd(&stack, 0x00);
    assert_eq!(p[4..], [0x00, 0x80, 0x83, 0xB0, 0xB1, 0xB2]);

    // 80h Unit Serial Number (SPC-4 7.8.17): the GET_ID string.
    let p = inquiry_vpd(&stack, 0x80);
    assert_eq!(&p[4..], SERIAL);

    // 83h Device Identification (SPC-4 7.8.6): designation descriptors.
    let p = inquiry_vpd(&stack, 0x83);
    let mut at = 4;
    let mut t10 = None;
    let mut naa = None;
    while at < p.len() {
        assert!(at + 4 <= p.len(), "descriptor header past the page");
        let (code_set, assoc_type, len) = (p[at] & 0x0F, p[at + 1], usize::from(p[at + 3]));
        let body = &p[at + 4..at + 4 + len];
        // Association 00b: the logical unit.
        assert_eq!(assoc_type & 0x30, 0, "association: logical unit");
        match assoc_type & 0x0F {
            1 => {
                assert_eq!(code_set, 2, "T10 vendor ID is ASCII");
                t10 = Some(body.to_vec());
            }
            3 => {
                assert_eq!(code_set, 1, "NAA is binary");
                naa = Some(body.to_vec());
            }
            other => panic!("unexpected designator type {other}"),
        }
        at += 4 + len;
    }
    assert_eq!(at, p.len(), "descriptors fill the page exactly");
    let t10 = t10.expect("a T10 vendor ID designator");
    assert_eq!(&t10[..8], b"VIOBLK  ", "T10 VENDOR IDENTIFICATION");
    assert!(
        t10.ends_with(SERIAL),
        "vendor specific part carries the serial"
    );
    let naa = naa.expect("an NAA designator");
    assert_eq!(naa.len(), 8);
    assert_eq!(naa[0] >> 4, 0x3, "NAA 3h: locally assigned");
    assert_eq!(inquiry_vpd(&stack, 0x83), p, "the identifier is stable");

    // B0h Block Limits (SBC-3 6.5.3): page length 3Ch.
    let p = inquiry_vpd(&stack, 0xB0);
    assert_eq!(p.len(), 64);
    let be32 = |at: usize| u32::from_be_bytes(p[at..at + 4].try_into().unwrap());
    assert_eq!(p[4] & 0x01, 0x01, "WSNZ: WRITE SAME of 0 blocks is refused");
    assert_eq!(p[5], 0, "no COMPARE AND WRITE");
    // OPTIMAL TRANSFER LENGTH GRANULARITY: min_io_size (1); OPTIMAL TRANSFER LENGTH: opt_io_size.
    assert_eq!(u16::from_be_bytes([p[6], p[7]]), 1);
    assert_eq!(be32(12), 1 << config.physical_block_exp);
    let max_transfer = be32(8);
    assert!(
        (8..=2048).contains(&max_transfer),
        "MAXIMUM TRANSFER LENGTH {max_transfer}"
    );
    // UNMAP is carried by WRITE_ZEROES with unmap: its limits, in 512-byte blocks.
    assert_eq!(
        be32(20),
        config.max_write_zeroes_sectors,
        "MAX UNMAP LBA COUNT"
    );
    assert_eq!(
        be32(24),
        config.max_write_zeroes_seg,
        "MAX UNMAP DESCRIPTORS"
    );
    assert_eq!(be32(28), 1, "OPTIMAL UNMAP GRANULARITY");
    assert_eq!(be32(32) & 0x8000_0000, 0, "UGAVALID = 0");
    assert_eq!(
        u64::from_be_bytes(p[36..44].try_into().unwrap()),
        u64::from(config.max_write_zeroes_sectors),
        "MAXIMUM WRITE SAME LENGTH"
    );
    // A transfer over MAXIMUM TRANSFER LENGTH is an invalid field in the CDB (SBC-3 6.5.3).
    let over = stack.execute(ScsiRequest::data_in(
        rw_cdb(0x28, 0, 0, max_transfer + 1),
        512,
    ));
    assert_check(
        &over,
        key::ILLEGAL_REQUEST,
        0x24,
        0x00,
        "READ over the limit",
    );
    let at_limit = read(&stack, 0x28, 0, max_transfer, 512);
    assert_good(&at_limit, "READ at the limit");

    // B1h Block Device Characteristics (SBC-3 6.5.2): non-rotating medium.
    let p = inquiry_vpd(&stack, 0xB1);
    assert_eq!(p.len(), 64);
    assert_eq!(p[4..6], [0x00, 0x01]);
    assert!(p[6..].iter().all(|&b| b == 0));

    // B2h Logical Block Provisioning (SBC-3 6.5.4): LBPU, LBPWS, LBPWS10, LBPRZ; thin.
    let p = inquiry_vpd(&stack, 0xB2);
    assert_eq!(p, [0x00, 0xB2, 0x00, 0x04, 0x00, 0xE4, 0x02, 0x00]);
    assert_clean(&stack);
}

#[test]
fn vpd_80_without_serial_names_the_adapter_location() {
    let stack = start(DeviceConfig {
        serial: String::new(),
        ..DeviceConfig::default()
    });
    let p = inquiry_vpd(&stack, 0x00);
    assert_eq!(p[4..], [0x00, 0x80, 0x83, 0xB0, 0xB1, 0xB2]);
    // Bus 0, slot 0: the serial the driver builds from the adapter's location.
    let p = inquiry_vpd(&stack, 0x80);
    assert_eq!(&p[4..], b"PCI-0000000000000000");
    assert_clean(&stack);
}

// ---------------------------------------------------------------------------------------------
// READ CAPACITY

#[test]
fn read_capacity_10_and_16() {
    let stack = default_stack();
    let sectors = DeviceConfig::default().capacity_sectors;
    let last = sectors - 1;
    let rc10 = data_in(&stack, vec![0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], 8);
    let mut expected = (last as u32).to_be_bytes().to_vec();
    expected.extend(512u32.to_be_bytes());
    assert_eq!(rc10, expected, "READ CAPACITY(10)");

    let rc16 = data_in(
        &stack,
        vec![0x9E, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0],
        32,
    );
    let mut expected = last.to_be_bytes().to_vec();
    expected.extend(512u32.to_be_bytes());
    // No protection; LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT = physical_block_exp (3);
    // LBPME and LBPRZ (write-zeroes may unmap); LOWEST ALIGNED LBA 0.
    expected.extend([0x00, 0x03, 0xC0, 0x00]);
    expected.extend([0u8; 16]);
    assert_eq!(rc16, expected, "READ CAPACITY(16)");

    // Truncated by the allocation length.
    let c = stack.execute(ScsiRequest::data_in(
        vec![0x9E, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 12, 0, 0],
        12,
    ));
    assert_good(&c, "READ CAPACITY(16) alloc 12");
    assert_eq!(c.data_in, rc16[..12]);
    // PMI = 0 with an LBA is an invalid field (SBC-3 5.15.1).
    let c = stack.execute(ScsiRequest::data_in(
        vec![0x25, 0, 0, 0, 0, 1, 0, 0, 0, 0],
        8,
    ));
    assert_check(&c, key::ILLEGAL_REQUEST, 0x24, 0x00, "RC10 LBA without PMI");
    // Another SERVICE ACTION IN(16) service action.
    let c = stack.execute(ScsiRequest::data_in(
        vec![0x9E, 0x12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0],
        32,
    ));
    assert_check(&c, key::ILLEGAL_REQUEST, 0x24, 0x00, "SAI 12h");
    assert_clean(&stack);
}

#[test]
fn read_capacity_16_on_4kn_with_physical_exponent_and_discard_only() {
    let stack = start(DeviceConfig {
        logical_block_size: 4096,
        physical_block_exp: 2,
        // Discard without write-zeroes: LBPME without LBPRZ (unmapped data is unspecified).
        features: Some(features::DEFAULT & !features::WRITE_ZEROES),
        ..DeviceConfig::default()
    });
    let blocks = DeviceConfig::default().capacity_sectors / 8;
    let rc16 = data_in(
        &stack,
        vec![0x9E, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0],
        32,
    );
    assert_eq!(rc16[..8], (blocks - 1).to_be_bytes());
    assert_eq!(rc16[8..12], 4096u32.to_be_bytes());
    assert_eq!(rc16[12..16], [0x00, 0x02, 0x80, 0x00]);
    let b2 = inquiry_vpd(&stack, 0xB2);
    assert_eq!(b2[5], 0xE0, "LBPU, LBPWS, LBPWS10; no LBPRZ");
    assert_clean(&stack);
}

// ---------------------------------------------------------------------------------------------
// READ and WRITE

#[test]
fn read_and_write_6_10_12_16_round_trip() {
    let stack = default_stack();
    let writes = [0x0Au8, 0x2A, 0xAA, 0x8A];
    let reads = [0x08u8, 0x28, 0xA8, 0x88];
    for (i, &w) in writes.iter().enumerate() {
        let lba = 1000 + 64 * i as u64;
        let data = pattern(lba, 16 * 512);
        assert_good(&write(&stack, w, 0, lba, data.clone()), "WRITE");
        assert_eq!(disk_bytes(&stack, lba * 512, data.len()), data, "on disk");
        // Read back with every READ variant.
        for &r in &reads {
            let c = read(&stack, r, lba, 16, 512);
            assert_good(&c, &format!("READ {r:02X}"));
            assert_eq!(c.data_transfer_length, 16 * 512);
            assert!(c.data_in == data, "READ {r:02X} after WRITE {w:02X}");
        }
    }
    // READ(6)/WRITE(6): TRANSFER LENGTH 0 means 256 blocks (SBC-3 5.8).
    let data = pattern(7, 256 * 512);
    let c = stack.execute(ScsiRequest::data_out(
        vec![0x0A, 0x00, 0x10, 0x00, 0x00, 0x00],
        data.clone(),
    ));
    assert_good(&c, "WRITE(6) 256 blocks");
    let c = stack.execute(ScsiRequest::data_in(
        vec![0x08, 0x00, 0x10, 0x00, 0x00, 0x00],
        256 * 512,
    ));
    assert_good(&c, "READ(6) 256 blocks");
    assert!(c.data_in == data);
    assert_eq!(disk_bytes(&stack, 0x1000 * 512, data.len()), data);
    // Zero blocks in the 10-byte commands: nothing moves, GOOD.
    let c = stack.execute(ScsiRequest::no_data(rw_cdb(0x28, 0, 5, 0)));
    assert_good(&c, "READ(10) 0 blocks");
    // The device's view: one write per WRITE.
    let total_writes: u64 = stack.device.counters().iter().map(|c| c.writes).sum();
    assert_eq!(total_writes, 5);
    assert_clean(&stack);
}

#[test]
fn four_kn_read_write_16() {
    let stack = start(DeviceConfig {
        logical_block_size: 4096,
        ..DeviceConfig::default()
    });
    let data = pattern(3, 3 * 4096);
    let c = stack.execute(ScsiRequest::data_out(rw_cdb(0x8A, 0, 5, 3), data.clone()));
    assert_good(&c, "WRITE(16) 4Kn");
    // LBA 5 of 4096 bytes is byte 20480 of the disk.
    assert_eq!(disk_bytes(&stack, 5 * 4096, data.len()), data);
    let c = read(&stack, 0x88, 5, 3, 4096);
    assert_good(&c, "READ(16) 4Kn");
    assert!(c.data_in == data);
    assert_clean(&stack);
}

#[test]
fn write_10_fua_flushes_a_write_back_cache() {
    let stack = default_stack();
    assert_eq!(device_writeback(&stack), 1, "write-back at start");
    let before = flushes(&stack);
    assert_good(&write(&stack, 0x2A, 0, 10, pattern(1, 4096)), "WRITE(10)");
    assert_eq!(flushes(&stack), before, "a plain write does not flush");
    assert_good(
        &write(&stack, 0x2A, 0x08, 20, pattern(2, 4096)),
        "WRITE(10) FUA",
    );
    assert_eq!(flushes(&stack), before + 1, "FUA: the device saw a FLUSH");
    assert_eq!(disk_bytes(&stack, 20 * 512, 4096), pattern(2, 4096));
    // WRITE(16) FUA and WRITE AND VERIFY(10) (BYTCHK 0) too.
    assert_good(
        &write(&stack, 0x8A, 0x08, 30, pattern(3, 512)),
        "WRITE(16) FUA",
    );
    assert_eq!(flushes(&stack), before + 2);
    assert_good(
        &write(&stack, 0x2E, 0, 40, pattern(4, 512)),
        "WRITE AND VERIFY(10)",
    );
    assert_eq!(flushes(&stack), before + 3);
    assert_eq!(disk_bytes(&stack, 40 * 512, 512), pattern(4, 512));
    assert_clean(&stack);
}

// ---------------------------------------------------------------------------------------------
// MODE SENSE / MODE SELECT

#[test]
fn mode_sense_6_and_10_caching_page() {
    let stack = default_stack();
    let blocks = u32::try_from(DeviceConfig::default().capacity_sectors).unwrap();
    // MODE SENSE(6), caching page, with the short block descriptor (SPC-4 7.5.5, SBC-3 6.4.2).
    let data = data_in(&stack, vec![0x1A, 0x00, 0x08, 0x00, 32, 0x00], 32);
    let mut expected = vec![31, 0x00, 0x10, 0x08]; // DPOFUA, one 8-byte descriptor
    expected.extend(blocks.to_be_bytes());
    expected.extend([0x00, 0x00, 0x02, 0x00]);
    let mut caching = vec![0x08, 0x12, 0x04]; // WCE
    caching.resize(20, 0);
    expected.extend(&caching);
    assert_eq!(data, expected, "MODE SENSE(6)");

    // MODE SENSE(10) with DBD.
    let data = data_in(&stack, vec![0x5A, 0x08, 0x08, 0, 0, 0, 0, 0, 28, 0], 28);
    let mut expected = vec![0x00, 26, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00];
    expected.extend(&caching);
    assert_eq!(data, expected, "MODE SENSE(10) DBD");

    // MODE SENSE(10) with LLBAA: the 16-byte block descriptor (SBC-3 6.4.2.3).
    let data = data_in(&stack, vec![0x5A, 0x10, 0x08, 0, 0, 0, 0, 0, 44, 0], 44);
    assert_eq!(data[..8], [0x00, 42, 0x00, 0x10, 0x01, 0x00, 0x00, 16]);
    assert_eq!(data[8..16], u64::from(blocks).to_be_bytes());
    assert_eq!(data[16..24], [0, 0, 0, 0, 0, 0, 0x02, 0x00]);
    assert_eq!(data[24..], caching);

    // Changeable values: WCE can be changed (CONFIG_WCE).
    let data = data_in(&stack, vec![0x1A, 0x08, 0x48, 0x00, 24, 0x00], 24);
    assert_eq!(data[..4], [23, 0x00, 0x10, 0x00]);
    assert_eq!(data[4..], caching, "changeable mask: WCE");

    // All pages: caching, control (SPC-4 7.5.8), power condition, informational exceptions
    // (every page control value: tests/driver_scsi_compliance.rs).
    let data = data_in(&stack, vec![0x1A, 0x08, 0x3F, 0x00, 0xFF, 0x00], 255);
    assert_eq!(data.len(), 4 + 20 + 12 + 40 + 12);
    assert_eq!(usize::from(data[0]) + 1, data.len());
    assert_eq!(data[4..24], caching);
    assert_eq!(data[24..26], [0x0A, 0x0A], "control page code and length");
    // An unsupported page.
    let c = stack.execute(ScsiRequest::data_in(vec![0x1A, 0, 0x19, 0, 32, 0], 32));
    assert_check(&c, key::ILLEGAL_REQUEST, 0x24, 0x00, "page 19h");
    assert_clean(&stack);
}

#[test]
fn mode_select_6_and_10_switch_the_write_cache() {
    let stack = default_stack();
    let wce = |stack: &Stack| {
        let d = data_in(stack, vec![0x1A, 0x08, 0x08, 0x00, 24, 0x00], 24);
        d[4 + 2] & 0x04 != 0
    };
    assert!(wce(&stack));

    // MODE SELECT(6), PF = 1: header, caching page with WCE = 0.
    let mut params = vec![0u8, 0, 0, 0, 0x08, 0x12];
    params.resize(24, 0);
    let c = stack.execute(ScsiRequest::data_out(vec![0x15, 0x10, 0, 0, 24, 0], params));
    assert_good(&c, "MODE SELECT(6) WCE=0");
    assert!(!wce(&stack), "MODE SENSE shows WCE = 0");
    assert_eq!(device_writeback(&stack), 0, "the device is write-through");
    // With the cache off FUA needs no flush.
    let before = flushes(&stack);
    assert_good(&write(&stack, 0x2A, 0x08, 8, pattern(9, 512)), "FUA, WT");
    assert_eq!(flushes(&stack), before);

    // MODE SELECT(10): 8-byte header, caching page with WCE = 1.
    let mut params = vec![0u8; 8];
    params.extend([0x08, 0x12, 0x04]);
    params.resize(28, 0);
    let c = stack.execute(ScsiRequest::data_out(
        vec![0x55, 0x10, 0, 0, 0, 0, 0, 0, 28, 0],
        params,
    ));
    assert_good(&c, "MODE SELECT(10) WCE=1");
    assert!(wce(&stack), "MODE SENSE shows WCE = 1");
    assert_eq!(device_writeback(&stack), 1, "the device is write-back");

    // Changing a field that is not changeable: INVALID FIELD IN PARAMETER LIST.
    let mut params = vec![0u8, 0, 0, 0, 0x08, 0x12, 0x05]; // RCD too
    params.resize(24, 0);
    let c = stack.execute(ScsiRequest::data_out(vec![0x15, 0x10, 0, 0, 24, 0], params));
    assert_check(&c, key::ILLEGAL_REQUEST, 0x26, 0x00, "MODE SELECT RCD");
    // SP = 1: saving is not supported.
    let c = stack.execute(ScsiRequest::data_out(
        vec![0x15, 0x11, 0, 0, 4, 0],
        vec![0; 4],
    ));
    assert_check(&c, key::ILLEGAL_REQUEST, 0x24, 0x00, "MODE SELECT SP");
    assert!(wce(&stack));
    assert_clean(&stack);
}

#[test]
fn mode_sense_write_protect_on_a_read_only_disk() {
    let stack = start(DeviceConfig {
        read_only: true,
        ..DeviceConfig::default()
    });
    let data = data_in(&stack, vec![0x1A, 0x08, 0x08, 0x00, 24, 0x00], 24);
    assert_eq!(data[2] & 0x80, 0x80, "WP");
    let data = data_in(&stack, vec![0x5A, 0x08, 0x08, 0, 0, 0, 0, 0, 28, 0], 28);
    assert_eq!(data[3] & 0x80, 0x80, "WP (10)");
    // Writes, UNMAP and WRITE SAME are refused before reaching the device.
    for (what, c) in [
        ("WRITE(10)", write(&stack, 0x2A, 0, 0, pattern(1, 512))),
        ("WRITE(16)", write(&stack, 0x8A, 0, 0, pattern(1, 512))),
        ("WRITE(6)", write(&stack, 0x0A, 0, 0, pattern(1, 512))),
        (
            "UNMAP",
            stack.execute(ScsiRequest::data_out(
                vec![0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0],
                unmap_list(&[(0, 1)]),
            )),
        ),
        (
            "WRITE SAME(16)",
            stack.execute(ScsiRequest::data_out(
                rw_cdb(0x93, 0x08, 0, 1),
                vec![0; 512],
            )),
        ),
    ] {
        assert_check(&c, key::DATA_PROTECT, 0x27, 0x00, what);
    }
    let writes: u64 = stack.device.counters().iter().map(|c| c.writes).sum();
    assert_eq!(writes, 0);
    // Reads still work.
    assert_good(&read(&stack, 0x28, 0, 8, 512), "READ on RO");
    assert_clean(&stack);
}

// ---------------------------------------------------------------------------------------------
// Cache, provisioning, verification

#[test]
fn synchronize_cache_start_stop_and_flush_functions_reach_the_device() {
    let stack = default_stack();
    let mut expected = flushes(&stack);
    let c = stack.execute(ScsiRequest::no_data(rw_cdb(0x35, 0, 0, 0)));
    assert_good(&c, "SYNCHRONIZE CACHE(10)");
    expected += 1;
    assert_eq!(flushes(&stack), expected);
    let c = stack.execute(ScsiRequest::no_data(rw_cdb(0x91, 0, 100, 8)));
    assert_good(&c, "SYNCHRONIZE CACHE(16)");
    expected += 1;
    assert_eq!(flushes(&stack), expected);
    // Past the end is out of range (SBC-3 5.22).
    let blocks = DeviceConfig::default().capacity_sectors;
    let c = stack.execute(ScsiRequest::no_data(rw_cdb(0x91, 0, blocks, 1)));
    assert_check(&c, key::ILLEGAL_REQUEST, 0x21, 0x00, "SYNC CACHE past end");

    // START STOP UNIT: a stop writes the cache back (SBC-3 5.25); a start does nothing.
    let c = stack.execute(ScsiRequest::no_data(vec![0x1B, 0, 0, 0, 0x00, 0]));
    assert_good(&c, "STOP");
    expected += 1;
    assert_eq!(flushes(&stack), expected);
    let c = stack.execute(ScsiRequest::no_data(vec![0x1B, 0, 0, 0, 0x01, 0]));
    assert_good(&c, "START");
    let c = stack.execute(ScsiRequest::no_data(vec![0x1B, 0, 0, 0, 0x04, 0]));
    assert_good(&c, "STOP NO_FLUSH");
    assert_eq!(flushes(&stack), expected);

    // SRB_FUNCTION_FLUSH and SHUTDOWN flush; RESET_LOGICAL_UNIT succeeds.
    for f in [ffi::SRB_FUNCTION_FLUSH, ffi::SRB_FUNCTION_SHUTDOWN] {
        let c = stack.execute(ScsiRequest::function(f));
        assert_eq!(c.srb_status, ffi::SRB_STATUS_SUCCESS, "function {f:#x}");
        expected += 1;
        assert_eq!(flushes(&stack), expected, "function {f:#x}");
    }
    let c = stack.execute(ScsiRequest::function(ffi::SRB_FUNCTION_RESET_LOGICAL_UNIT));
    assert_eq!(c.srb_status, ffi::SRB_STATUS_SUCCESS, "RESET_LOGICAL_UNIT");
    // The disk still works.
    assert_good(&write(&stack, 0x2A, 0, 3, pattern(3, 512)), "WRITE after");
    assert_clean(&stack);
}

/// An UNMAP parameter list (SBC-3 5.28.2) of `(lba, blocks)` descriptors.
fn unmap_list(ranges: &[(u64, u32)]) -> Vec<u8> {
    let descriptors = u16::try_from(16 * ranges.len()).unwrap();
    let mut p = Vec::new();
    p.extend((descriptors + 6).to_be_bytes());
    p.extend(descriptors.to_be_bytes());
    p.extend([0u8; 4]);
    for &(lba, blocks) in ranges {
        p.extend(lba.to_be_bytes());
        p.extend(blocks.to_be_bytes());
        p.extend([0u8; 4]);
    }
    p
}

fn unmap_cdb(len: usize) -> Vec<u8> {
    let mut c = vec![0x42, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    c[7..9].copy_from_slice(&u16::try_from(len).unwrap().to_be_bytes());
    c
}

#[test]
fn unmap_and_write_same_zero_the_range() {
    let stack = default_stack();
    let fill = |lba: u64, blocks: usize| {
        assert_good(
            &write(&stack, 0x2A, 0, lba, pattern(lba, blocks * 512)),
            "fill",
        );
    };
    fill(100, 16);
    fill(300, 8);
    let list = unmap_list(&[(100, 8), (300, 8)]);
    let c = stack.execute(ScsiRequest::data_out(unmap_cdb(list.len()), list));
    assert_good(&c, "UNMAP");
    // LBPRZ: unmapped blocks read as zeroes; the blocks around them are untouched.
    let r = read(&stack, 0x28, 100, 16, 512);
    assert_good(&r, "READ after UNMAP");
    assert!(r.data_in[..8 * 512].iter().all(|&b| b == 0));
    assert_eq!(r.data_in[8 * 512..], pattern(100, 16 * 512)[8 * 512..]);
    assert!(
        disk_bytes(&stack, 300 * 512, 8 * 512)
            .iter()
            .all(|&b| b == 0)
    );
    let zeroes: u64 = stack.device.counters().iter().map(|c| c.write_zeroes).sum();
    assert_eq!(
        zeroes, 1,
        "one WRITE_ZEROES (unmap) request for both descriptors"
    );

    // WRITE SAME(10) and (16) with UNMAP, one zero block of data.
    fill(500, 8);
    fill(600, 8);
    let c = stack.execute(ScsiRequest::data_out(
        rw_cdb(0x41, 0x08, 500, 8).into_iter().collect::<Vec<_>>(),
        vec![0; 512],
    ));
    assert_good(&c, "WRITE SAME(10) UNMAP");
    let c = stack.execute(ScsiRequest::data_out(
        rw_cdb(0x93, 0x08, 600, 4),
        vec![0; 512],
    ));
    assert_good(&c, "WRITE SAME(16) UNMAP");
    assert!(
        disk_bytes(&stack, 500 * 512, 8 * 512)
            .iter()
            .all(|&b| b == 0)
    );
    assert!(
        disk_bytes(&stack, 600 * 512, 4 * 512)
            .iter()
            .all(|&b| b == 0)
    );
    assert_eq!(
        disk_bytes(&stack, 604 * 512, 4 * 512),
        pattern(600, 8 * 512)[4 * 512..]
    );
    // A non-zero pattern cannot be written by write-zeroes.
    let c = stack.execute(ScsiRequest::data_out(
        rw_cdb(0x93, 0x08, 600, 4),
        vec![1; 512],
    ));
    assert_check(&c, key::ILLEGAL_REQUEST, 0x24, 0x00, "WRITE SAME pattern");
    // NUMBER OF LOGICAL BLOCKS 0 with WSNZ.
    let c = stack.execute(ScsiRequest::data_out(
        rw_cdb(0x93, 0x08, 600, 0),
        vec![0; 512],
    ));
    assert_check(&c, key::ILLEGAL_REQUEST, 0x24, 0x00, "WRITE SAME 0 blocks");
    // UNMAP of a range past the end.
    let blocks = DeviceConfig::default().capacity_sectors;
    let list = unmap_list(&[(blocks - 4, 8)]);
    let c = stack.execute(ScsiRequest::data_out(unmap_cdb(list.len()), list));
    assert_check(&c, key::ILLEGAL_REQUEST, 0x21, 0x00, "UNMAP past end");
    // PARAMETER LIST LENGTH 0: nothing to do.
    let c = stack.execute(ScsiRequest::no_data(unmap_cdb(0)));
    assert_good(&c, "UNMAP empty");
    assert_clean(&stack);
}

#[test]
fn unmap_by_discard_when_write_zeroes_is_missing() {
    let stack = start(DeviceConfig {
        features: Some(features::DEFAULT & !features::WRITE_ZEROES),
        ..DeviceConfig::default()
    });
    assert_good(&write(&stack, 0x2A, 0, 64, pattern(64, 8 * 512)), "fill");
    let list = unmap_list(&[(64, 8)]);
    let c = stack.execute(ScsiRequest::data_out(unmap_cdb(list.len()), list));
    assert_good(&c, "UNMAP");
    let discards: u64 = stack.device.counters().iter().map(|c| c.discards).sum();
    assert_eq!(discards, 1);
    // The model zeroes discarded ranges (LBPRZ = 0 would allow anything).
    let r = read(&stack, 0x28, 64, 8, 512);
    assert!(r.data_in.iter().all(|&b| b == 0));
    assert_clean(&stack);
}

#[test]
fn verify_test_unit_ready_request_sense_report_luns() {
    let stack = default_stack();
    let blocks = DeviceConfig::default().capacity_sectors;
    let c = stack.execute(ScsiRequest::no_data(rw_cdb(0x2F, 0, 10, 100)));
    assert_good(&c, "VERIFY(10)");
    let c = stack.execute(ScsiRequest::no_data(rw_cdb(0x8F, 0, blocks - 8, 8)));
    assert_good(&c, "VERIFY(16) up to the end");
    let c = stack.execute(ScsiRequest::no_data(rw_cdb(0x8F, 0, blocks - 8, 9)));
    assert_check(&c, key::ILLEGAL_REQUEST, 0x21, 0x00, "VERIFY(16) past end");
    // BYTCHK = 01b needs a compare, which is not supported.
    let c = stack.execute(ScsiRequest::no_data(rw_cdb(0x2F, 0x02, 10, 1)));
    assert_check(&c, key::ILLEGAL_REQUEST, 0x24, 0x00, "VERIFY BYTCHK");
    assert_eq!(
        stack.device.counters().iter().map(|c| c.reads).sum::<u64>(),
        0,
        "VERIFY reads nothing"
    );

    let c = stack.execute(ScsiRequest::no_data(vec![0x00, 0, 0, 0, 0, 0]));
    assert_good(&c, "TEST UNIT READY");

    // REQUEST SENSE with nothing pending: NO SENSE, fixed format (SPC-4 6.39).
    let data = data_in(&stack, vec![0x03, 0, 0, 0, 18, 0], 18);
    assert_eq!(data[0] & 0x7F, 0x70);
    assert_eq!(data[2] & 0x0F, key::NO_SENSE);
    assert_eq!(data[7], 10);
    assert_eq!((data[12], data[13]), (0, 0));
    // DESC = 1 (descriptor format) is not supported.
    let c = stack.execute(ScsiRequest::data_in(vec![0x03, 1, 0, 0, 18, 0], 18));
    assert_check(&c, key::ILLEGAL_REQUEST, 0x24, 0x00, "REQUEST SENSE DESC");

    // REPORT LUNS (SPC-4 6.33): LUN 0 only.
    let data = data_in(&stack, vec![0xA0, 0, 0x00, 0, 0, 0, 0, 0, 0, 16, 0, 0], 16);
    assert_eq!(data, [0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert_clean(&stack);
}

// ---------------------------------------------------------------------------------------------
// Errors

#[test]
fn unknown_opcode_out_of_range_and_bad_luns() {
    let stack = default_stack();
    for cdb in [
        vec![0xC5, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        vec![0x3C, 0x02, 0, 0, 0, 0, 0, 0, 0x10, 0], // READ BUFFER
        vec![0x89, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0], // COMPARE AND WRITE
    ] {
        let c = stack.execute(ScsiRequest::no_data(cdb.clone()));
        assert_check(&c, key::ILLEGAL_REQUEST, 0x20, 0x00, &format!("{cdb:02X?}"));
    }
    // LOGICAL BLOCK ADDRESS OUT OF RANGE: starting past the end, and crossing it (SBC-3 4.5).
    let blocks = DeviceConfig::default().capacity_sectors;
    for (lba, count) in [(blocks, 1u32), (blocks - 1, 2), (u64::MAX, 1)] {
        let c = stack.execute(ScsiRequest::data_in(
            rw_cdb(0x88, 0, lba, count),
            count * 512,
        ));
        assert_check(&c, key::ILLEGAL_REQUEST, 0x21, 0x00, "READ(16) range");
    }
    let c = write(&stack, 0x8A, 0, blocks - 1, pattern(1, 1024));
    assert_check(&c, key::ILLEGAL_REQUEST, 0x21, 0x00, "WRITE(16) range");
    let c = read(&stack, 0x88, blocks - 1, 1, 512);
    assert_good(&c, "last block");
    // The control byte's NACA bit is not supported.
    let c = stack.execute(ScsiRequest::no_data(vec![0x00, 0, 0, 0, 0, 0x04]));
    assert_check(&c, key::ILLEGAL_REQUEST, 0x24, 0x00, "NACA");

    // Only LUN 0 of target 0 exists.
    let c = stack
        .adapter
        .execute(Request::scsi(&[0x00, 0, 0, 0, 0, 0]).at(0, 0, 1));
    assert_eq!(c.srb_status, ffi::SRB_STATUS_INVALID_LUN, "LUN 1");
    let c = stack
        .adapter
        .execute(Request::data_in(&[0x12, 0, 0, 0, 36, 0], 36).at(0, 0, 7));
    assert_eq!(c.srb_status, ffi::SRB_STATUS_INVALID_LUN, "INQUIRY LUN 7");
    let c = stack
        .adapter
        .execute(Request::scsi(&[0x00, 0, 0, 0, 0, 0]).at(0, 1, 0));
    assert_eq!(c.status(), ffi::SRB_STATUS_NO_DEVICE, "target 1");
    assert_clean(&stack);
}

#[test]
fn capacity_change_raises_a_unit_attention_once() {
    let stack = default_stack();
    let sectors = DeviceConfig::default().capacity_sectors;
    let before = bus_changes(&stack);
    stack.device.resize(sectors * 2).unwrap();
    wait_bus_changes(&stack, before);
    // INQUIRY and REPORT LUNS neither report nor clear it (SPC-4 5.14).
    assert_good(
        &stack.execute(ScsiRequest::data_in(vec![0x12, 0, 0, 0, 36, 0], 36)),
        "INQUIRY under UA",
    );
    let c = stack.execute(ScsiRequest::no_data(vec![0x00, 0, 0, 0, 0, 0]));
    assert_check(&c, key::UNIT_ATTENTION, 0x2A, 0x09, "TUR after resize");
    let c = stack.execute(ScsiRequest::no_data(vec![0x00, 0, 0, 0, 0, 0]));
    assert_good(&c, "the UA is reported once");
    let rc = data_in(&stack, vec![0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], 8);
    assert_eq!(
        rc[..4],
        u32::try_from(sectors * 2 - 1).unwrap().to_be_bytes()
    );
    // The new blocks are usable.
    let data = pattern(5, 512);
    assert_good(
        &write(&stack, 0x8A, 0, sectors * 2 - 1, data.clone()),
        "new end",
    );
    assert!(read(&stack, 0x88, sectors * 2 - 1, 1, 512).data_in == data);

    // Shrink; this time REQUEST SENSE returns the unit attention as its data and clears it.
    let before = bus_changes(&stack);
    stack.device.resize(sectors / 2).unwrap();
    wait_bus_changes(&stack, before);
    let data = data_in(&stack, vec![0x03, 0, 0, 0, 18, 0], 18);
    assert_eq!(
        (data[0] & 0x7F, data[2] & 0x0F, data[12], data[13]),
        (0x70, key::UNIT_ATTENTION, 0x2A, 0x09)
    );
    let c = stack.execute(ScsiRequest::no_data(vec![0x00, 0, 0, 0, 0, 0]));
    assert_good(&c, "cleared by REQUEST SENSE");
    let rc16 = data_in(
        &stack,
        vec![0x9E, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0],
        32,
    );
    assert_eq!(rc16[..8], (sectors / 2 - 1).to_be_bytes());
    let c = read(&stack, 0x88, sectors / 2, 1, 512);
    assert_check(&c, key::ILLEGAL_REQUEST, 0x21, 0x00, "past the new end");
    assert_clean(&stack);
}

#[test]
fn device_io_error_is_a_medium_error() {
    // A file-backed disk whose file shrinks under the device (the host's storage failing): the
    // device answers VIRTIO_BLK_S_IOERR, which the driver reports as MEDIUM ERROR.
    let dir = std::env::temp_dir().join(format!("vioblk-ioerr-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("disk.img");
    let _ = std::fs::remove_file(&path);
    let stack = start(DeviceConfig {
        backend: BackendConfig::File(path.clone()),
        ..DeviceConfig::default()
    });
    assert_good(&write(&stack, 0x2A, 0, 4000, pattern(1, 4096)), "WRITE");
    assert_good(&read(&stack, 0x28, 4000, 8, 512), "READ");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let c = read(&stack, 0x28, 4000, 8, 512);
    // MEDIUM ERROR / UNRECOVERED READ ERROR (SPC-4 D.2: 11h/00h).
    assert_check(&c, key::MEDIUM_ERROR, 0x11, 0x00, "READ of a lost block");
    let errors: u64 = stack.device.counters().iter().map(|c| c.errors).sum();
    assert_eq!(errors, 1, "the device reported one IOERR");
    // Blocks that still exist read fine.
    assert_good(&read(&stack, 0x28, 0, 8, 512), "READ of a surviving block");
    assert_clean(&stack);
    drop(stack);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn intx_and_classic_locks_answer_the_same() {
    // The same commands in the single-interrupt mode, with the pre-1809 lock fallback.
    let stack = stack_with_serial(|| {
        Stack::start(StackOptions {
            intx: true,
            port: PortOptions {
                acquire_spinlock_ex_not_implemented: true,
                ..PortOptions::default()
            },
            ..StackOptions::default()
        })
        .unwrap()
    });
    assert_eq!(&inquiry_vpd(&stack, 0x80)[4..], SERIAL);
    let before = flushes(&stack);
    assert_good(&write(&stack, 0x2A, 0x08, 9, pattern(9, 4096)), "FUA");
    assert_eq!(flushes(&stack), before + 1);
    assert!(read(&stack, 0xA8, 9, 8, 512).data_in == pattern(9, 4096));
    let list = unmap_list(&[(9, 8)]);
    assert_good(
        &stack.execute(ScsiRequest::data_out(unmap_cdb(list.len()), list)),
        "UNMAP",
    );
    assert!(disk_bytes(&stack, 9 * 512, 4096).iter().all(|&b| b == 0));
    assert_clean(&stack);
}
