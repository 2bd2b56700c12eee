//! The CDB forms and parameter lists the driver decodes but the disk class driver rarely or never
//! sends, through the real stack (BuildIo, StartIo, the ring, the device model, the interrupt,
//! the DPC): what a tool like sg_raw, the HLK's SCSI Compliance Test or a filter driver may send.
//!
//! - MODE SELECT(6) and (10) parameter lists, good and bad: header, short and long block
//!   descriptors, page headers, subpage format, unknown pages, wrong page lengths, truncation;
//! - MODE SENSE block descriptors (short and long) and the CDB fields it refuses;
//! - the CONTROL byte, READ CAPACITY's PMI, REPORT LUNS' SELECT REPORT, REQUEST SENSE;
//! - READ/WRITE/VERIFY in every length, WRITE SAME with NDOB and on disks that cannot write
//!   zeroes, UNMAP parameter lists with bad headers and limits.
//!
//! Each refusal is checked for its sense key, ASC/ASCQ and, where SPC-4 4.5.2.4.2 has the
//! driver give one, its sense-key-specific field pointer (SKSV, C/D, BPV, BIT POINTER, FIELD
//! POINTER). The expected bytes come from SPC-4 and SBC-3, not from the driver's tables.

use storport_sys as ffi;
use vioblk_sim::device::{DeviceConfig, features};
use vioblk_sim::stack::Stack;
use vioblk_sim::target::{ScsiCompletion, ScsiRequest, ScsiTarget};

mod scsi_stack;
use scsi_stack::{assert_clean, assert_good, default_stack, start};

/// ASC values (SPC-4 D.2), ASCQ 00h for all.
const PARAMETER_LIST_LENGTH_ERROR: u8 = 0x1A;
const INVALID_OPCODE: u8 = 0x20;
const LBA_OUT_OF_RANGE: u8 = 0x21;
const INVALID_FIELD_IN_CDB: u8 = 0x24;
const INVALID_FIELD_IN_PARAMETER_LIST: u8 = 0x26;

/// The default model's capacity in 512-byte blocks.
const BLOCKS: u64 = 128 * 1024;

/// A field pointer in the CDB (C/D = 1): `byte`, and `bit` when BPV is set.
fn in_cdb(byte: u16, bit: Option<u8>) -> [u8; 3] {
    pointer(true, byte, bit)
}

/// A field pointer in the parameter list (C/D = 0).
fn in_list(byte: u16, bit: Option<u8>) -> [u8; 3] {
    pointer(false, byte, bit)
}

fn pointer(cdb: bool, byte: u16, bit: Option<u8>) -> [u8; 3] {
    let mut first = 0x80 | if cdb { 0x40 } else { 0 };
    if let Some(bit) = bit {
        first |= 0x08 | bit;
    }
    let [high, low] = byte.to_be_bytes();
    [first, high, low]
}

/// CHECK CONDITION, ILLEGAL REQUEST, `asc`/00h in fixed-format sense data, no data moved; the
/// sense-key-specific bytes are the field pointer `field`, or not valid (SKSV = 0) when `None`.
fn assert_illegal(c: &ScsiCompletion, asc: u8, field: Option<[u8; 3]>, what: &str) {
    assert_eq!(
        c.srb_status,
        ffi::SRB_STATUS_ERROR | ffi::SRB_STATUS_AUTOSENSE_VALID,
        "{what}: {c:?}"
    );
    assert_eq!(c.scsi_status, ffi::SCSISTAT_CHECK_CONDITION, "{what}");
    assert!(c.sense.len() >= 18, "{what}: sense {:02X?}", c.sense);
    assert_eq!(c.sense[0] & 0x7F, 0x70, "{what}: fixed format");
    assert_eq!(
        (c.sense[2] & 0x0F, c.sense[12], c.sense[13]),
        (0x5, asc, 0),
        "{what}: key/ASC/ASCQ in {:02X?}",
        c.sense
    );
    match field {
        Some(field) => assert_eq!(c.sense[15..18], field, "{what}: field pointer"),
        None => assert_eq!(c.sense[15] & 0x80, 0, "{what}: no field pointer"),
    }
    assert_eq!(c.data_transfer_length, 0, "{what}: no data moves");
}

fn data_in(stack: &Stack, cdb: Vec<u8>, allocation: u32) -> Vec<u8> {
    let what = format!("CDB {cdb:02X?}");
    let c = stack.execute(ScsiRequest::data_in(cdb, allocation));
    assert_eq!(c.scsi_status, ffi::SCSISTAT_GOOD, "{what}: {c:?}");
    assert_eq!(c.data_transfer_length as usize, c.data_in.len(), "{what}");
    c.data_in
}

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| ((i as u64).wrapping_mul(0x9E37) ^ seed.wrapping_mul(0x5BD1)) as u8)
        .collect()
}

fn disk_bytes(stack: &Stack, offset: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    stack.device.read_disk(offset, &mut out).unwrap();
    out
}

// ---------------------------------------------------------------------------------------------
// MODE SELECT parameter lists

/// MODE SELECT(6) with PF = 1 and the list as its PARAMETER LIST LENGTH.
fn select6(stack: &Stack, list: Vec<u8>) -> ScsiCompletion {
    let length = u8::try_from(list.len()).unwrap();
    stack.execute(ScsiRequest::data_out(
        vec![0x15, 0x10, 0, 0, length, 0],
        list,
    ))
}

/// MODE SELECT(10) with PF = 1.
fn select10(stack: &Stack, list: Vec<u8>) -> ScsiCompletion {
    let [high, low] = u16::try_from(list.len()).unwrap().to_be_bytes();
    stack.execute(ScsiRequest::data_out(
        vec![0x55, 0x10, 0, 0, 0, 0, 0, high, low, 0],
        list,
    ))
}

/// The Caching page (SBC-3 6.4.5) as the default model reports it, WCE as given.
fn caching(wce: bool) -> Vec<u8> {
    let mut page = vec![0x08, 0x12, if wce { 0x04 } else { 0x00 }];
    page.resize(20, 0);
    page
}

/// A short block descriptor (SBC-3 6.4.2.2): NUMBER OF LOGICAL BLOCKS, LOGICAL BLOCK LENGTH.
fn short_descriptor(blocks: u32, length: u32) -> Vec<u8> {
    let mut d = blocks.to_be_bytes().to_vec();
    d.push(0);
    d.extend(&length.to_be_bytes()[1..]);
    d
}

/// A long block descriptor (SBC-3 6.4.2.3).
fn long_descriptor(blocks: u64, length: u32) -> Vec<u8> {
    let mut d = blocks.to_be_bytes().to_vec();
    d.extend([0; 4]);
    d.extend(length.to_be_bytes());
    d
}

fn wce(stack: &Stack) -> bool {
    let data = data_in(stack, vec![0x1A, 0x08, 0x08, 0, 0xFF, 0], 255);
    data[6] & 0x04 != 0
}

#[test]
fn mode_select_headers_and_block_descriptors() {
    let stack = default_stack();
    // A header alone, and PARAMETER LIST LENGTH 0: nothing to change.
    assert_good(&select6(&stack, vec![0; 4]), "MODE SELECT(6) header only");
    assert_good(&select10(&stack, vec![0; 8]), "MODE SELECT(10) header only");
    let c = stack.execute(ScsiRequest::no_data(vec![0x15, 0x10, 0, 0, 0, 0]));
    assert_good(&c, "MODE SELECT(6) PARAMETER LIST LENGTH 0");
    let c = stack.execute(ScsiRequest::no_data(vec![
        0x55, 0x10, 0, 0, 0, 0, 0, 0, 0, 0,
    ]));
    assert_good(&c, "MODE SELECT(10) PARAMETER LIST LENGTH 0");

    // A PARAMETER LIST LENGTH whose list is not transferred: PARAMETER LIST LENGTH ERROR.
    let c = stack.execute(ScsiRequest::no_data(vec![0x15, 0x10, 0, 0, 4, 0]));
    assert_illegal(
        &c,
        PARAMETER_LIST_LENGTH_ERROR,
        None,
        "MODE SELECT(6) list not transferred",
    );

    // A list shorter than its header (SPC-4 7.5.5): PARAMETER LIST LENGTH ERROR.
    let c = select6(&stack, vec![0; 3]);
    assert_illegal(
        &c,
        PARAMETER_LIST_LENGTH_ERROR,
        None,
        "MODE SELECT(6) 3 bytes",
    );
    let c = select10(&stack, vec![0; 7]);
    assert_illegal(
        &c,
        PARAMETER_LIST_LENGTH_ERROR,
        None,
        "MODE SELECT(10) 7 bytes",
    );

    // MEDIUM TYPE other than 00h (byte 1 of the 6-byte header, byte 2 of the 10-byte one).
    let c = select6(&stack, vec![0, 0x01, 0, 0]);
    assert_illegal(
        &c,
        INVALID_FIELD_IN_PARAMETER_LIST,
        Some(in_list(1, None)),
        "medium 6",
    );
    let c = select10(&stack, vec![0, 0, 0x01, 0, 0, 0, 0, 0]);
    assert_illegal(
        &c,
        INVALID_FIELD_IN_PARAMETER_LIST,
        Some(in_list(2, None)),
        "medium 10",
    );
    // WP and DPOFUA in the DEVICE-SPECIFIC PARAMETER are ignored (SBC-3 6.4.1).
    assert_good(&select6(&stack, vec![0, 0, 0x90, 0]), "WP|DPOFUA ignored");

    // BLOCK DESCRIPTOR LENGTH neither 0 nor 8 (16 with LONGLBA).
    let c = select6(&stack, vec![0, 0, 0, 4, 0, 0, 0, 0]);
    assert_illegal(
        &c,
        INVALID_FIELD_IN_PARAMETER_LIST,
        Some(in_list(3, None)),
        "BDL 4",
    );
    let mut list = vec![0, 0, 0, 0, 0, 0, 0, 16];
    list.extend([0; 16]);
    let c = select10(&stack, list);
    assert_illegal(
        &c,
        INVALID_FIELD_IN_PARAMETER_LIST,
        Some(in_list(6, None)),
        "BDL 16 short",
    );
    // A descriptor announced but cut off by the list's end.
    let c = select6(&stack, vec![0, 0, 0, 8, 0, 0, 0, 0]);
    assert_illegal(&c, PARAMETER_LIST_LENGTH_ERROR, None, "descriptor cut off");

    // Short descriptors: the current geometry, or 0 blocks (keep the capacity), are accepted.
    for blocks in [BLOCKS as u32, 0] {
        let mut list = vec![0, 0, 0, 8];
        list.extend(short_descriptor(blocks, 512));
        list.extend(caching(false));
        assert_good(
            &select6(&stack, list),
            &format!("short descriptor {blocks}"),
        );
        assert!(!wce(&stack), "the page after the descriptor is applied");
        let mut list = vec![0, 0, 0, 0, 0, 0, 0, 8];
        list.extend(short_descriptor(blocks, 512));
        list.extend(caching(true));
        assert_good(
            &select10(&stack, list),
            &format!("short descriptor(10) {blocks}"),
        );
        assert!(wce(&stack));
    }
    // ... but not another capacity (byte 4: NUMBER OF LOGICAL BLOCKS) or block length (byte 9).
    let mut list = vec![0, 0, 0, 8];
    list.extend(short_descriptor(5, 512));
    let c = select6(&stack, list);
    assert_illegal(
        &c,
        INVALID_FIELD_IN_PARAMETER_LIST,
        Some(in_list(4, None)),
        "blocks",
    );
    let mut list = vec![0, 0, 0, 8];
    list.extend(short_descriptor(0, 4096));
    list.extend(caching(false));
    let c = select6(&stack, list);
    assert_illegal(
        &c,
        INVALID_FIELD_IN_PARAMETER_LIST,
        Some(in_list(9, None)),
        "length",
    );
    assert!(wce(&stack), "a refused list changes nothing");

    // Long descriptors (MODE SELECT(10), LONGLBA): NUMBER OF LOGICAL BLOCKS at byte 8, LOGICAL
    // BLOCK LENGTH at byte 8 + 12.
    let mut list = vec![0, 0, 0, 0, 0x01, 0, 0, 16];
    list.extend(long_descriptor(BLOCKS, 512));
    assert_good(&select10(&stack, list), "long descriptor");
    let mut list = vec![0, 0, 0, 0, 0x01, 0, 0, 16];
    list.extend(long_descriptor(BLOCKS + 1, 512));
    let c = select10(&stack, list);
    assert_illegal(
        &c,
        INVALID_FIELD_IN_PARAMETER_LIST,
        Some(in_list(8, None)),
        "long blocks",
    );
    let mut list = vec![0, 0, 0, 0, 0x01, 0, 0, 16];
    list.extend(long_descriptor(0, 520));
    let c = select10(&stack, list);
    assert_illegal(
        &c,
        INVALID_FIELD_IN_PARAMETER_LIST,
        Some(in_list(20, None)),
        "long length",
    );
    // LONGLBA with an 8-byte descriptor.
    let mut list = vec![0, 0, 0, 0, 0x01, 0, 0, 8];
    list.extend(short_descriptor(0, 512));
    let c = select10(&stack, list);
    assert_illegal(
        &c,
        INVALID_FIELD_IN_PARAMETER_LIST,
        Some(in_list(6, None)),
        "LONGLBA 8",
    );
    assert_clean(&stack);
}

#[test]
fn mode_select_page_errors_point_at_the_field() {
    let stack = default_stack();
    let with_page = |page: &[u8]| {
        let mut list = vec![0u8; 4];
        list.extend(page);
        list
    };
    // Pages with PF = 0 would be vendor specific: INVALID FIELD IN CDB, byte 1 bit 4.
    let list = with_page(&caching(false));
    let c = stack.execute(ScsiRequest::data_out(vec![0x15, 0x00, 0, 0, 24, 0], list));
    assert_illegal(&c, INVALID_FIELD_IN_CDB, Some(in_cdb(1, Some(4))), "PF = 0");
    assert!(wce(&stack), "nothing applied");
    // A header with PF = 0 and no page is fine.
    let c = stack.execute(ScsiRequest::data_out(
        vec![0x15, 0x00, 0, 0, 4, 0],
        vec![0; 4],
    ));
    assert_good(&c, "PF = 0 without pages");

    // One byte of a page header.
    let c = select6(&stack, with_page(&[0x08]));
    assert_illegal(&c, PARAMETER_LIST_LENGTH_ERROR, None, "page header cut");
    // SPF (subpage format, byte 0 bit 6): no subpages exist.
    let mut spf = caching(false);
    spf[0] |= 0x40;
    let c = select6(&stack, with_page(&spf));
    assert_illegal(
        &c,
        INVALID_FIELD_IN_PARAMETER_LIST,
        Some(in_list(4, Some(6))),
        "SPF",
    );
    // A page shorter than its PAGE LENGTH.
    let c = select6(&stack, with_page(&caching(false)[..10]));
    assert_illegal(&c, PARAMETER_LIST_LENGTH_ERROR, None, "page cut");
    // A page the disk does not have (Read-Write Error Recovery, 01h): the PAGE CODE, bit 5.
    let mut unknown = vec![0x01, 0x0A];
    unknown.resize(12, 0);
    let c = select6(&stack, with_page(&unknown));
    assert_illegal(
        &c,
        INVALID_FIELD_IN_PARAMETER_LIST,
        Some(in_list(4, Some(5))),
        "page 01h",
    );
    // A PAGE LENGTH other than the page's (12h for Caching): byte 5.
    let mut short = vec![0x08, 0x10, 0x00];
    short.resize(18, 0);
    let c = select6(&stack, with_page(&short));
    assert_illegal(
        &c,
        INVALID_FIELD_IN_PARAMETER_LIST,
        Some(in_list(5, None)),
        "length",
    );
    // A field that is not changeable in the caching page (RCD, byte 2 bit 0): the first
    // differing bit.
    let mut rcd = caching(true);
    rcd[2] |= 0x01;
    let c = select6(&stack, with_page(&rcd));
    assert_illegal(
        &c,
        INVALID_FIELD_IN_PARAMETER_LIST,
        Some(in_list(6, Some(0))),
        "RCD",
    );
    // A valid page after a refused one is not applied: the Caching page with WCE off, then the
    // unknown page.
    let mut list = with_page(&caching(false));
    list.extend(&unknown);
    let c = select6(&stack, list);
    assert_illegal(
        &c,
        INVALID_FIELD_IN_PARAMETER_LIST,
        Some(in_list(24, Some(5))),
        "second",
    );
    assert!(wce(&stack), "a refused list changes nothing");
    // The PS bit is reserved in MODE SELECT: a page sent with it is still the Caching page.
    let mut ps = caching(false);
    ps[0] |= 0x80;
    assert_good(&select6(&stack, with_page(&ps)), "PS ignored");
    assert!(!wce(&stack));
    // SP = 1 (save the pages) in MODE SELECT(6): byte 1 bit 0.
    let c = stack.execute(ScsiRequest::data_out(
        vec![0x15, 0x11, 0, 0, 24, 0],
        with_page(&caching(true)),
    ));
    assert_illegal(&c, INVALID_FIELD_IN_CDB, Some(in_cdb(1, Some(0))), "SP = 1");
    assert!(!wce(&stack));
    assert_clean(&stack);
}

// ---------------------------------------------------------------------------------------------
// MODE SENSE

#[test]
fn mode_sense_block_descriptors_and_refused_fields() {
    let stack = default_stack();
    // DBD = 0: MODE SENSE(6) has a short descriptor, BLOCK DESCRIPTOR LENGTH 8.
    let data = data_in(&stack, vec![0x1A, 0x00, 0x08, 0, 0xFF, 0], 255);
    assert_eq!(data[3], 8, "BLOCK DESCRIPTOR LENGTH");
    assert_eq!(data[4..12], short_descriptor(BLOCKS as u32, 512)[..]);
    assert_eq!(data[12..], caching(true)[..]);
    assert_eq!(usize::from(data[0]), data.len() - 1, "MODE DATA LENGTH");
    // MODE SENSE(10) without LLBAA: the short descriptor; with LLBAA the long one, LONGLBA set.
    let data = data_in(&stack, vec![0x5A, 0x00, 0x08, 0, 0, 0, 0, 0, 0xFF, 0], 255);
    assert_eq!((data[4] & 0x01, data[6], data[7]), (0, 0, 8));
    assert_eq!(data[8..16], short_descriptor(BLOCKS as u32, 512)[..]);
    assert_eq!(data[16..], caching(true)[..]);
    let data = data_in(&stack, vec![0x5A, 0x10, 0x08, 0, 0, 0, 0, 0, 0xFF, 0], 255);
    assert_eq!((data[4] & 0x01, data[6], data[7]), (1, 0, 16));
    assert_eq!(data[8..24], long_descriptor(BLOCKS, 512)[..]);
    assert_eq!(data[24..], caching(true)[..]);
    assert_eq!(
        usize::from(u16::from_be_bytes([data[0], data[1]])),
        data.len() - 2
    );
    // A descriptor restated as MODE SENSE gave it is accepted back.
    let mut list = vec![0u8; 8];
    list[4] = 0x01;
    list[7] = 16;
    list.extend(&data[8..]);
    assert_good(&select10(&stack, list), "MODE SENSE(10) data sent back");
    // The allocation length cuts the data (the MODE DATA LENGTH still says all of it).
    let data = data_in(&stack, vec![0x1A, 0x00, 0x3F, 0, 6, 0], 6);
    assert_eq!(data.len(), 6);
    assert!(usize::from(data[0]) > 6);

    // A page the disk does not have: byte 2 bit 5 (the PAGE CODE's top bit).
    for page in [0x01u8, 0x02, 0x19, 0x3E] {
        let c = stack.execute(ScsiRequest::data_in(
            vec![0x1A, 0x08, page, 0, 0xFF, 0],
            255,
        ));
        assert_illegal(&c, INVALID_FIELD_IN_CDB, Some(in_cdb(2, Some(5))), "page");
    }
    // A subpage other than 00h and FFh: byte 3.
    for subpage in [0x01u8, 0x7F] {
        let c = stack.execute(ScsiRequest::data_in(
            vec![0x5A, 0x08, 0x08, subpage, 0, 0, 0, 0, 0xFF, 0],
            255,
        ));
        assert_illegal(&c, INVALID_FIELD_IN_CDB, Some(in_cdb(3, None)), "subpage");
    }
    assert_clean(&stack);
}

// ---------------------------------------------------------------------------------------------
// CONTROL byte, READ CAPACITY, REPORT LUNS, REQUEST SENSE

#[test]
fn control_byte_naca_and_link_are_refused_in_every_length() {
    let stack = default_stack();
    // (CDB, allocation length; 0 for a command without data)
    let cdbs: [(Vec<u8>, u32); 6] = [
        (vec![0x00, 0, 0, 0, 0, 0], 0),                     // TEST UNIT READY
        (vec![0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], 8),         // READ CAPACITY(10)
        (vec![0x2F, 0, 0, 0, 0, 0, 0, 0, 1, 0], 0),         // VERIFY(10)
        (vec![0xAF, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0], 0),   // VERIFY(12)
        (vec![0xA0, 0, 0, 0, 0, 0, 0, 0, 0, 16, 0, 0], 16), // REPORT LUNS
        (
            vec![0x9E, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0],
            32,
        ), // READ CAPACITY(16)
    ];
    let request = |cdb: Vec<u8>, allocation: u32| {
        if allocation == 0 {
            ScsiRequest::no_data(cdb)
        } else {
            ScsiRequest::data_in(cdb, allocation)
        }
    };
    for (cdb, allocation) in cdbs {
        let last = cdb.len() - 1;
        for (bit, value) in [(2u8, 0x04u8), (0, 0x01)] {
            let mut bad = cdb.clone();
            bad[last] = value;
            let c = stack.execute(request(bad, allocation));
            let at = u16::try_from(last).unwrap();
            assert_illegal(
                &c,
                INVALID_FIELD_IN_CDB,
                Some(in_cdb(at, Some(bit))),
                &format!("CONTROL {value:02X} in {cdb:02X?}"),
            );
        }
        // Without the bits, every one of these is GOOD.
        let c = stack.execute(request(cdb.clone(), allocation));
        assert_eq!(c.scsi_status, ffi::SCSISTAT_GOOD, "{cdb:02X?}: {c:?}");
    }
    assert_clean(&stack);
}

#[test]
fn read_capacity_pmi_report_luns_select_and_request_sense() {
    let stack = default_stack();
    // READ CAPACITY(10) with a LOGICAL BLOCK ADDRESS and PMI = 0: byte 2 (SBC-3 5.15.1).
    let c = stack.execute(ScsiRequest::data_in(
        vec![0x25, 0, 0, 0, 0, 9, 0, 0, 0, 0],
        8,
    ));
    assert_illegal(
        &c,
        INVALID_FIELD_IN_CDB,
        Some(in_cdb(2, None)),
        "RC10 LBA without PMI",
    );
    // With PMI = 1 the last LBA and the block length.
    let data = data_in(&stack, vec![0x25, 0, 0, 0, 0, 9, 0, 0, 1, 0], 8);
    let mut expected = u32::try_from(BLOCKS - 1).unwrap().to_be_bytes().to_vec();
    expected.extend(512u32.to_be_bytes());
    assert_eq!(data, expected);
    // READ CAPACITY(16): the same rule at byte 14; and a service action other than 10h.
    let mut rc16 = vec![0x9E, 0x10, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 32, 0, 0];
    let c = stack.execute(ScsiRequest::data_in(rc16.clone(), 32));
    assert_illegal(
        &c,
        INVALID_FIELD_IN_CDB,
        Some(in_cdb(2, None)),
        "RC16 LBA without PMI",
    );
    rc16[14] = 0x01;
    let data = data_in(&stack, rc16, 32);
    assert_eq!(
        data[..12],
        [&(BLOCKS - 1).to_be_bytes()[..], &[0, 0, 2, 0]].concat()
    );
    let c = stack.execute(ScsiRequest::data_in(
        vec![0x9E, 0x11, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0],
        32,
    ));
    assert_illegal(
        &c,
        INVALID_FIELD_IN_CDB,
        Some(in_cdb(1, Some(4))),
        "service action 11h",
    );

    // REPORT LUNS: SELECT REPORT 01h (well-known LUNs only: none), 02h (all: LUN 0), 03h and
    // above are refused at byte 2.
    let data = data_in(&stack, vec![0xA0, 0, 0x01, 0, 0, 0, 0, 0, 0, 16, 0, 0], 16);
    assert_eq!(data, [0u8; 8]);
    let data = data_in(&stack, vec![0xA0, 0, 0x02, 0, 0, 0, 0, 0, 0, 16, 0, 0], 16);
    assert_eq!(data, [0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    for select in [0x03u8, 0x10, 0xFF] {
        let c = stack.execute(ScsiRequest::data_in(
            vec![0xA0, 0, select, 0, 0, 0, 0, 0, 0, 16, 0, 0],
            16,
        ));
        assert_illegal(
            &c,
            INVALID_FIELD_IN_CDB,
            Some(in_cdb(2, None)),
            "SELECT REPORT",
        );
    }
    // REPORT LUNS cut to its 8-byte header: the LUN LIST LENGTH still says 8.
    let data = data_in(&stack, vec![0xA0, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0], 8);
    assert_eq!(data, [0, 0, 0, 8, 0, 0, 0, 0]);

    // REQUEST SENSE: DESC = 1 is refused at byte 1 bit 0; the allocation length cuts the data.
    let c = stack.execute(ScsiRequest::data_in(vec![0x03, 0x01, 0, 0, 18, 0], 18));
    assert_illegal(
        &c,
        INVALID_FIELD_IN_CDB,
        Some(in_cdb(1, Some(0))),
        "DESC = 1",
    );
    let data = data_in(&stack, vec![0x03, 0, 0, 0, 8, 0], 8);
    assert_eq!(data.len(), 8);
    assert_eq!((data[0] & 0x7F, data[2] & 0x0F), (0x70, 0));
    assert_clean(&stack);
}

// ---------------------------------------------------------------------------------------------
// READ, WRITE, VERIFY, WRITE AND VERIFY in every length

fn rw(opcode: u8, flags: u8, lba: u64, blocks: u32) -> Vec<u8> {
    match opcode {
        0x08 | 0x0A => {
            let lba = u32::try_from(lba).unwrap().to_be_bytes();
            vec![opcode, lba[1] & 0x1F, lba[2], lba[3], blocks as u8, 0]
        }
        0x28 | 0x2A | 0x2E | 0x2F | 0x41 => {
            let mut c = vec![opcode, flags, 0, 0, 0, 0, 0, 0, 0, 0];
            c[2..6].copy_from_slice(&u32::try_from(lba).unwrap().to_be_bytes());
            c[7..9].copy_from_slice(&u16::try_from(blocks).unwrap().to_be_bytes());
            c
        }
        0xA8 | 0xAA | 0xAE | 0xAF => {
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

#[test]
fn every_length_of_write_and_verify_read_and_verify() {
    let stack = default_stack();
    // WRITE AND VERIFY(10), (12), (16): written like WRITE (BYTCHK = 0), read back by READ of
    // another length.
    for (n, (write, read)) in [(0x2Eu8, 0xA8u8), (0xAE, 0x88), (0x8E, 0x28)]
        .into_iter()
        .enumerate()
    {
        let lba = 1000 + 64 * n as u64;
        let data = pattern(lba, 8 * 512);
        let c = stack.execute(ScsiRequest::data_out(rw(write, 0, lba, 8), data.clone()));
        assert_good(&c, &format!("WRITE AND VERIFY {write:02X}"));
        assert_eq!(disk_bytes(&stack, lba * 512, 8 * 512), data);
        let c = stack.execute(ScsiRequest::data_in(rw(read, 0, lba, 8), 8 * 512));
        assert_good(&c, &format!("READ {read:02X}"));
        assert_eq!(c.data_in, data);
    }
    // VERIFY(10), (12), (16): GOOD within the disk, LBA OUT OF RANGE past it, nothing read.
    let reads = |stack: &Stack| stack.device.counters().iter().map(|c| c.reads).sum::<u64>();
    let before = reads(&stack);
    // A READ or WRITE of 8 blocks with no data buffer at all: nothing to move the data to.
    for opcode in [0x28u8, 0x2A] {
        let c = stack.execute(ScsiRequest::no_data(rw(opcode, 0, 1000, 8)));
        assert_illegal(
            &c,
            INVALID_FIELD_IN_CDB,
            None,
            &format!("{opcode:02X} without a buffer"),
        );
    }
    for opcode in [0x2Fu8, 0xAF, 0x8F] {
        let c = stack.execute(ScsiRequest::no_data(rw(opcode, 0, BLOCKS - 8, 8)));
        assert_good(&c, &format!("VERIFY {opcode:02X} to the end"));
        let c = stack.execute(ScsiRequest::no_data(rw(opcode, 0, BLOCKS - 8, 9)));
        assert_illegal(
            &c,
            LBA_OUT_OF_RANGE,
            None,
            &format!("VERIFY {opcode:02X} past end"),
        );
        // VERIFY of 0 blocks: nothing to verify.
        let c = stack.execute(ScsiRequest::no_data(rw(opcode, 0, 0, 0)));
        assert_good(&c, &format!("VERIFY {opcode:02X} of nothing"));
    }
    assert_eq!(reads(&stack), before, "VERIFY reads nothing");
    // READ(6) with TRANSFER LENGTH 0 means 256 blocks (SBC-3 5.10).
    let data = pattern(7, 256 * 512);
    let c = stack.execute(ScsiRequest::data_out(rw(0x0A, 0, 2048, 0), data.clone()));
    assert_good(&c, "WRITE(6) of 256 blocks");
    let c = stack.execute(ScsiRequest::data_in(rw(0x08, 0, 2048, 0), 256 * 512));
    assert_good(&c, "READ(6) of 256 blocks");
    assert_eq!(c.data_in, data);
    // WRITE(12) and READ(12) past the end.
    let c = stack.execute(ScsiRequest::data_in(rw(0xA8, 0, BLOCKS - 1, 2), 1024));
    assert_illegal(&c, LBA_OUT_OF_RANGE, None, "READ(12) past end");
    let c = stack.execute(ScsiRequest::data_out(rw(0xAA, 0, BLOCKS, 1), vec![0; 512]));
    assert_illegal(&c, LBA_OUT_OF_RANGE, None, "WRITE(12) past end");
    // RDPROTECT / WRPROTECT (byte 1 bits 7:5) in every length: not supported.
    for opcode in [0x28u8, 0x2A, 0xA8, 0xAA, 0x88, 0x8A, 0x2F, 0xAF, 0x8F] {
        let cdb = rw(opcode, 0x20, 16, 1);
        let request = match opcode {
            0x2A | 0xAA | 0x8A => ScsiRequest::data_out(cdb, vec![0; 512]),
            0x2F | 0xAF | 0x8F => ScsiRequest::no_data(cdb),
            _ => ScsiRequest::data_in(cdb, 512),
        };
        let c = stack.execute(request);
        let field = Some(in_cdb(1, Some(5)));
        assert_illegal(
            &c,
            INVALID_FIELD_IN_CDB,
            field,
            &format!("PROTECT {opcode:02X}"),
        );
    }
    assert_clean(&stack);
}

// ---------------------------------------------------------------------------------------------
// WRITE SAME and UNMAP

#[test]
fn write_same_ndob_writes_zeroes_without_data() {
    let stack = default_stack();
    let data = pattern(3, 16 * 512);
    let c = stack.execute(ScsiRequest::data_out(rw(0x2A, 0, 700, 16), data.clone()));
    assert_good(&c, "fill");
    // WRITE SAME(16) NDOB (byte 1 bit 0), UNMAP = 0: zeroes written with no data-out.
    let c = stack.execute(ScsiRequest::no_data(rw(0x93, 0x01, 704, 4)));
    assert_good(&c, "WRITE SAME(16) NDOB");
    let after = disk_bytes(&stack, 700 * 512, 16 * 512);
    assert_eq!(after[..4 * 512], data[..4 * 512]);
    assert!(after[4 * 512..8 * 512].iter().all(|&b| b == 0));
    assert_eq!(after[8 * 512..], data[8 * 512..]);
    // WRITE SAME(10) without UNMAP, a zero block: written as zeroes.
    let c = stack.execute(ScsiRequest::data_out(rw(0x41, 0, 710, 4), vec![0; 512]));
    assert_good(&c, "WRITE SAME(10) zeroes");
    assert!(
        disk_bytes(&stack, 710 * 512, 4 * 512)
            .iter()
            .all(|&b| b == 0)
    );
    assert_eq!(disk_bytes(&stack, 714 * 512, 512), data[14 * 512..15 * 512]);
    // ANCHOR (byte 1 bit 4) and LBDATA (bit 1) are refused.
    for (flags, bit) in [(0x10u8, 4u8), (0x02, 1), (0x04, 2)] {
        let c = stack.execute(ScsiRequest::data_out(rw(0x93, flags, 720, 1), vec![0; 512]));
        assert_illegal(
            &c,
            INVALID_FIELD_IN_CDB,
            Some(in_cdb(1, Some(bit))),
            "WRITE SAME bit",
        );
    }
    // A data-out buffer shorter than the one logical block WRITE SAME repeats: nothing is
    // written.
    let c = stack.execute(ScsiRequest::data_out(rw(0x41, 0, 715, 1), vec![0xA5; 100]));
    assert_illegal(&c, INVALID_FIELD_IN_CDB, None, "WRITE SAME short buffer");
    assert_eq!(disk_bytes(&stack, 715 * 512, 512), data[15 * 512..]);
    // Past the end.
    let c = stack.execute(ScsiRequest::data_out(
        rw(0x93, 0x08, BLOCKS - 1, 2),
        vec![0; 512],
    ));
    assert_illegal(&c, LBA_OUT_OF_RANGE, None, "WRITE SAME past end");
    assert_clean(&stack);
}

#[test]
fn write_same_and_unmap_on_disks_that_cannot() {
    // Neither discard nor write-zeroes: WRITE SAME and UNMAP are not supported commands.
    let stack = start(DeviceConfig {
        features: Some(features::DEFAULT & !(features::DISCARD | features::WRITE_ZEROES)),
        ..DeviceConfig::default()
    });
    for cdb in [
        rw(0x41, 0x08, 16, 1),
        rw(0x93, 0x08, 16, 1),
        vec![0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0],
    ] {
        let c = stack.execute(ScsiRequest::data_out(cdb.clone(), vec![0; 512]));
        assert_illegal(&c, INVALID_OPCODE, None, &format!("{cdb:02X?}"));
    }
    // VPD B0h says so: MAXIMUM UNMAP LBA COUNT and DESCRIPTOR COUNT 0, and B2h has no LBPU.
    let b0 = data_in(&stack, vec![0x12, 0x01, 0xB0, 0, 0xFF, 0], 255);
    assert_eq!(b0[20..28], [0u8; 8]);
    let b2 = data_in(&stack, vec![0x12, 0x01, 0xB2, 0, 0xFF, 0], 255);
    assert_eq!(b2[5] & 0xE0, 0, "LBPU, LBPWS, LBPWS10");
    assert_clean(&stack);

    // Discard only: WRITE SAME must unmap (zeroes cannot be written without write-zeroes):
    // UNMAP = 0 is refused at byte 1 bit 3; UNMAP = 1 discards.
    let stack = start(DeviceConfig {
        features: Some(features::DEFAULT & !features::WRITE_ZEROES),
        ..DeviceConfig::default()
    });
    let c = stack.execute(ScsiRequest::data_out(rw(0x41, 0, 16, 8), vec![0; 512]));
    assert_illegal(
        &c,
        INVALID_FIELD_IN_CDB,
        Some(in_cdb(1, Some(3))),
        "WRITE SAME w/o UNMAP",
    );
    let data = pattern(5, 8 * 512);
    assert_good(
        &stack.execute(ScsiRequest::data_out(rw(0x2A, 0, 16, 8), data)),
        "fill",
    );
    let c = stack.execute(ScsiRequest::data_out(rw(0x93, 0x08, 16, 8), vec![0; 512]));
    assert_good(&c, "WRITE SAME(16) UNMAP by discard");
    let discards: u64 = stack.device.counters().iter().map(|c| c.discards).sum();
    assert_eq!(discards, 1);
    assert!(
        disk_bytes(&stack, 16 * 512, 8 * 512)
            .iter()
            .all(|&b| b == 0)
    );
    assert_clean(&stack);
}

fn unmap_cdb(len: usize) -> Vec<u8> {
    let mut c = vec![0x42, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    c[7..9].copy_from_slice(&u16::try_from(len).unwrap().to_be_bytes());
    c
}

/// An UNMAP parameter list (SBC-3 5.28.2) with the given descriptors.
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

fn unmap(stack: &Stack, list: Vec<u8>) -> ScsiCompletion {
    stack.execute(ScsiRequest::data_out(unmap_cdb(list.len()), list))
}

#[test]
fn unmap_parameter_list_errors() {
    let stack = default_stack();
    let data = pattern(9, 8 * 512);
    assert_good(
        &stack.execute(ScsiRequest::data_out(rw(0x2A, 0, 64, 8), data.clone())),
        "fill",
    );
    // Shorter than the 8-byte header (SBC-3 5.28.2).
    for len in [2usize, 6] {
        let c = unmap(&stack, vec![0; len]);
        assert_illegal(
            &c,
            PARAMETER_LIST_LENGTH_ERROR,
            None,
            &format!("{len} bytes"),
        );
    }
    // UNMAP DATA LENGTH too small for the BLOCK DESCRIPTOR DATA LENGTH: byte 0.
    let mut list = unmap_list(&[(64, 8)]);
    list[1] = 6;
    let c = unmap(&stack, list);
    assert_illegal(
        &c,
        INVALID_FIELD_IN_PARAMETER_LIST,
        Some(in_list(0, None)),
        "UDL",
    );
    // More descriptors than MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT (the model's max_discard_seg
    // and max_write_zeroes_seg, 8): byte 2.
    let ranges: Vec<(u64, u32)> = (0..9).map(|i| (64 + i, 1)).collect();
    let c = unmap(&stack, unmap_list(&ranges));
    assert_illegal(
        &c,
        INVALID_FIELD_IN_PARAMETER_LIST,
        Some(in_list(2, None)),
        "count",
    );
    assert_eq!(
        disk_bytes(&stack, 64 * 512, 8 * 512),
        data,
        "nothing unmapped"
    );
    // Descriptors of 0 blocks are skipped; a trailing partial descriptor is ignored.
    let mut list = unmap_list(&[(64, 0), (66, 2), (0, 0)]);
    list.extend([0u8; 7]);
    let c = unmap(&stack, list);
    assert_good(&c, "UNMAP with empty descriptors");
    let after = disk_bytes(&stack, 64 * 512, 8 * 512);
    assert_eq!(after[..2 * 512], data[..2 * 512]);
    assert!(after[2 * 512..4 * 512].iter().all(|&b| b == 0));
    assert_eq!(after[4 * 512..], data[4 * 512..]);
    // Only empty descriptors: GOOD without a request to the device.
    let zeroes = |s: &Stack| {
        s.device
            .counters()
            .iter()
            .map(|c| c.write_zeroes)
            .sum::<u64>()
    };
    let before = zeroes(&stack);
    assert_good(&unmap(&stack, unmap_list(&[(64, 0)])), "UNMAP of nothing");
    assert_good(&unmap(&stack, unmap_list(&[])), "UNMAP header only");
    // PARAMETER LIST LENGTH 0: no parameter list, nothing to do (SBC-3 5.28.1).
    let c = stack.execute(ScsiRequest::no_data(unmap_cdb(0)));
    assert_good(&c, "UNMAP PARAMETER LIST LENGTH 0");
    // A PARAMETER LIST LENGTH whose list is not transferred: a list shorter than its header.
    let c = stack.execute(ScsiRequest::no_data(unmap_cdb(24)));
    assert_illegal(
        &c,
        PARAMETER_LIST_LENGTH_ERROR,
        None,
        "UNMAP list not transferred",
    );
    assert_eq!(zeroes(&stack), before);
    assert_clean(&stack);
}

#[test]
fn unmap_over_the_maximum_lba_count_points_at_the_descriptor() {
    // MAXIMUM UNMAP LBA COUNT is the smaller of the device's discard and write-zeroes limits:
    // 64 blocks here.
    let stack = start(DeviceConfig {
        max_discard_sectors: 64,
        max_write_zeroes_sectors: 64,
        ..DeviceConfig::default()
    });
    let b0 = data_in(&stack, vec![0x12, 0x01, 0xB0, 0, 0xFF, 0], 255);
    assert_eq!(b0[20..24], 64u32.to_be_bytes());
    let data = pattern(11, 128 * 512);
    assert_good(
        &stack.execute(ScsiRequest::data_out(rw(0x2A, 0, 0, 128), data.clone())),
        "fill",
    );
    // 40 + 40 blocks: the second descriptor's NUMBER OF LOGICAL BLOCKS (8 + 16 + 8 = 32).
    let c = unmap(&stack, unmap_list(&[(0, 40), (64, 40)]));
    assert_illegal(
        &c,
        INVALID_FIELD_IN_PARAMETER_LIST,
        Some(in_list(32, None)),
        "LBA count",
    );
    assert_eq!(disk_bytes(&stack, 0, 128 * 512), data, "nothing unmapped");
    // 64 in one descriptor is within the limit; 65 is not (the first descriptor, byte 16).
    assert_good(&unmap(&stack, unmap_list(&[(0, 64)])), "64 blocks");
    assert!(disk_bytes(&stack, 0, 64 * 512).iter().all(|&b| b == 0));
    let c = unmap(&stack, unmap_list(&[(0, 65)]));
    assert_illegal(
        &c,
        INVALID_FIELD_IN_PARAMETER_LIST,
        Some(in_list(16, None)),
        "65 blocks",
    );
    assert_clean(&stack);
}

// ---------------------------------------------------------------------------------------------
// What the device says about itself

/// A serial number with spaces around it and bytes outside printable ASCII: VPD 80h has it
/// trimmed, each such byte as `_` (SPC-4 7.8.15: PRODUCT SERIAL NUMBER is ASCII).
#[test]
fn a_serial_with_unprintable_bytes_is_sanitised() {
    let serial = " AB\u{1}C\u{7F} ";
    let vpd80 = |stack: &Stack| data_in(stack, vec![0x12, 0x01, 0x80, 0, 0xFF, 0], 255);
    // HwStorInitialize waits 5 ms for GET_ID; a busy machine may answer later, and the driver
    // then names the adapter's location instead: up to 5 starts, as in driver_scsi.
    let page = (0..5)
        .map(|_| {
            let stack = start(DeviceConfig {
                serial: serial.to_owned(),
                ..DeviceConfig::default()
            });
            let page = vpd80(&stack);
            assert_clean(&stack);
            page
        })
        .find(|page| !page[4..].starts_with(b"PCI-"))
        .expect("GET_ID answered in time in one of 5 starts");
    assert_eq!(page[1], 0x80);
    assert_eq!(page[4..], *b"AB_C_");
    assert_eq!(usize::from(u16::from_be_bytes([page[2], page[3]])), 5);
}

/// A device of capacity 0 is a unit without a medium: TEST UNIT READY, READ CAPACITY and READ
/// are NOT READY / MEDIUM NOT PRESENT (SPC-4 4.5.6); INQUIRY still answers.
#[test]
fn an_empty_disk_has_no_medium() {
    let stack = start(DeviceConfig {
        capacity_sectors: 0,
        ..DeviceConfig::default()
    });
    let inquiry = data_in(&stack, vec![0x12, 0, 0, 0, 36, 0], 36);
    assert_eq!(inquiry[0] & 0x1F, 0x00, "a direct-access block device");
    for (cdb, allocation) in [
        (vec![0x00, 0, 0, 0, 0, 0], 0u32),
        (vec![0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], 8),
        (rw(0x28, 0, 0, 1), 512),
        (rw(0x2F, 0, 0, 1), 0),
    ] {
        let request = if allocation == 0 {
            ScsiRequest::no_data(cdb.clone())
        } else {
            ScsiRequest::data_in(cdb.clone(), allocation)
        };
        let c = stack.execute(request);
        assert_eq!(
            c.srb_status,
            ffi::SRB_STATUS_ERROR | ffi::SRB_STATUS_AUTOSENSE_VALID,
            "{cdb:02X?}: {c:?}"
        );
        assert_eq!(
            (c.sense[2] & 0x0F, c.sense[12], c.sense[13]),
            (0x2, 0x3A, 0x00),
            "{cdb:02X?}: NOT READY / MEDIUM NOT PRESENT"
        );
    }
    assert_clean(&stack);
}

/// A READ or WRITE whose buffer is larger than its transfer (a SCSI pass-through may send one):
/// only the transfer moves, and the SRB says so: DataTransferLength is the transfer and the
/// status DATA_OVERRUN (Storport's convention for an underrun), for plain and FUA writes
/// (whose FLUSH completes the request) and for reads; the blocks past the transfer are left
/// alone.
#[test]
fn a_buffer_larger_than_the_transfer_is_an_underrun() {
    let stack = default_stack();
    for (n, (opcode, flags)) in [(0x2Au8, 0u8), (0x2A, 0x08), (0x8A, 0), (0x8A, 0x08)]
        .into_iter()
        .enumerate()
    {
        let what = format!("WRITE {opcode:02X} (byte 1 {flags:02X})");
        let lba = 3000 + 64 * n as u64;
        let data = pattern(lba, 8 * 512);
        let after = disk_bytes(&stack, (lba + 8) * 512, 8 * 512);
        let mut buffer = data.clone();
        buffer.extend(pattern(lba + 1, 8 * 512));
        let c = stack.execute(ScsiRequest::data_out(rw(opcode, flags, lba, 8), buffer));
        assert_eq!(
            c.srb_status & 0x3F,
            ffi::SRB_STATUS_DATA_OVERRUN,
            "{what}: {c:?}"
        );
        assert_eq!(c.data_transfer_length, 8 * 512, "{what}");
        assert_eq!(disk_bytes(&stack, lba * 512, 8 * 512), data, "{what}");
        assert_eq!(
            disk_bytes(&stack, (lba + 8) * 512, 8 * 512),
            after,
            "{what}"
        );
        let c = stack.execute(ScsiRequest::data_in(rw(0x28, 0, lba, 8), 16 * 512));
        assert_eq!(
            c.srb_status & 0x3F,
            ffi::SRB_STATUS_DATA_OVERRUN,
            "READ after {what}: {c:?}"
        );
        assert_eq!(c.data_transfer_length, 8 * 512, "READ after {what}");
        assert_eq!(
            c.data_in.get(..8 * 512),
            Some(&data[..]),
            "READ after {what}"
        );
    }
    // The same transfers with buffers of their own size are plain successes.
    let c = stack.execute(ScsiRequest::data_in(rw(0x28, 0, 3000, 8), 8 * 512));
    assert_good(&c, "READ with an exact buffer");
    assert_eq!(c.data_transfer_length, 8 * 512);
    assert_clean(&stack);
}
