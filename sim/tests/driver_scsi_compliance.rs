//! What the HLK's SCSI Compliance Test 2.0 asks of a disk beyond the basic commands, through the
//! real stack (BuildIo, StartIo, the ring, the device model, the interrupt, the DPC):
//!
//! - MODE SENSE(6) and (10) with page code 3Fh return the Caching (08h), Control (0Ah), Power
//!   Condition (1Ah) and Informational Exceptions Control (1Ch) pages for every page control
//!   value, saved values included (they are the default values: nothing can be saved);
//!   MODE SELECT accepts the pages restated and refuses any change but WCE;
//! - START STOP UNIT with every POWER CONDITION value (SBC-3 5.25, SBC-4 5.31);
//! - two disks in one machine have different VPD 80h and 83h identifiers, whether their devices
//!   give serial numbers or not.
//!
//! The expected bytes are written here from SPC-4 and SBC-3, never read back from the driver's
//! own tables.
#![forbid(unsafe_code)]

use std::sync::Arc;

use storport_sim::{Adapter, AdapterOptions, Port, PortOptions, Request};
use storport_sys as ffi;
use vioblk_sim::device::{DeviceConfig, VirtioBlkDevice};
use vioblk_sim::stack::{Stack, StackOptions};
use vioblk_sim::target::{ScsiCompletion, ScsiRequest, ScsiTarget};

fn default_stack() -> Stack {
    Stack::start(StackOptions::default()).expect("the stack starts")
}

fn assert_clean(port: &Port) {
    let violations = port.violations();
    assert!(violations.is_empty(), "Storport violations: {violations:?}");
}

fn assert_good(c: &ScsiCompletion, what: &str) {
    assert_eq!(c.srb_status, ffi::SRB_STATUS_SUCCESS, "{what}: {c:?}");
    assert_eq!(c.scsi_status, ffi::SCSISTAT_GOOD, "{what}");
}

/// CHECK CONDITION, ILLEGAL REQUEST with `asc`/00h and fixed-format sense; `pointer` is the
/// sense-key-specific field pointer (SKSV, C/D, BPV, bit, field) when one is expected.
fn assert_illegal(c: &ScsiCompletion, asc: u8, pointer: Option<[u8; 3]>, what: &str) {
    assert_eq!(
        c.srb_status,
        ffi::SRB_STATUS_ERROR | ffi::SRB_STATUS_AUTOSENSE_VALID,
        "{what}: {c:?}"
    );
    assert_eq!(c.scsi_status, ffi::SCSISTAT_CHECK_CONDITION, "{what}");
    assert_eq!(c.sense[0] & 0x7F, 0x70, "{what}: fixed format");
    assert_eq!((c.sense[2] & 0x0F, c.sense[12], c.sense[13]), (0x5, asc, 0));
    if let Some(pointer) = pointer {
        assert_eq!(c.sense[15..18], pointer, "{what}: field pointer");
    }
}

fn data_in(target: &dyn ScsiTarget, cdb: Vec<u8>, allocation: u32) -> Vec<u8> {
    let what = format!("CDB {cdb:02X?}");
    let c = target.execute(ScsiRequest::data_in(cdb, allocation));
    assert_eq!(c.scsi_status, ffi::SCSISTAT_GOOD, "{what}: {c:?}");
    assert_eq!(c.data_transfer_length as usize, c.data_in.len(), "{what}");
    c.data_in
}

fn flushes(stack: &Stack) -> u64 {
    stack.device.counters().iter().map(|c| c.flushes).sum()
}

// ---------------------------------------------------------------------------------------------
// MODE SENSE page 3Fh

/// Caching (SBC-3 6.4.5): WCE as given.
fn caching(wce: bool) -> Vec<u8> {
    let mut page = vec![0x08, 0x12, if wce { 0x04 } else { 0x00 }];
    page.resize(20, 0);
    page
}

/// Control (SPC-4 7.5.8): GLTSD, QUEUE ALGORITHM MODIFIER 1; or the changeable mask (none).
fn control(changeable: bool) -> Vec<u8> {
    let mut page = vec![0x0A, 0x0A];
    if !changeable {
        page.extend([0x02, 0x10]);
    }
    page.resize(12, 0);
    page
}

/// Power Condition (SPC-4 7.5.13): no timer enabled, CCF IDLE/STANDBY/STOPPED 01b.
fn power_condition(changeable: bool) -> Vec<u8> {
    let mut page = vec![0x1A, 0x26];
    page.resize(40, 0);
    if !changeable {
        page[39] = 0b0101_0100;
    }
    page
}

/// Informational Exceptions Control (SPC-4 7.5.14): DEXCPT = 1, MRIE = 0.
fn informational_exceptions(changeable: bool) -> Vec<u8> {
    let mut page = vec![0x1C, 0x0A, if changeable { 0x00 } else { 0x08 }];
    page.resize(12, 0);
    page
}

fn all_pages(changeable: bool, wce: bool) -> Vec<u8> {
    let mut pages = caching(wce);
    pages.extend(control(changeable));
    pages.extend(power_condition(changeable));
    pages.extend(informational_exceptions(changeable));
    pages
}

#[test]
fn mode_sense_all_pages_for_every_page_control() {
    let stack = default_stack();
    // PC: current, changeable, default, saved (SPC-4 6.11, table 98). The default device offers
    // CONFIG_WCE with the cache on: WCE is set and changeable.
    for pc in 0u8..4 {
        let changeable = pc == 1;
        let pages = all_pages(changeable, true);
        // MODE SENSE(6), DBD: 4-byte header (MODE DATA LENGTH, medium type, DPOFUA, no
        // descriptor), then the pages.
        let data = data_in(&stack, vec![0x1A, 0x08, pc << 6 | 0x3F, 0, 0xFF, 0], 255);
        let mut expected = vec![u8::try_from(3 + pages.len()).unwrap(), 0, 0x10, 0];
        expected.extend(&pages);
        assert_eq!(data, expected, "MODE SENSE(6) PC={pc}");
        // Subpage FFh (all subpages): the same pages, none has subpages.
        let data = data_in(&stack, vec![0x1A, 0x08, pc << 6 | 0x3F, 0xFF, 0xFF, 0], 255);
        assert_eq!(data, expected, "MODE SENSE(6) PC={pc} subpage FFh");
        // MODE SENSE(10), DBD: 8-byte header.
        let data = data_in(
            &stack,
            vec![0x5A, 0x08, pc << 6 | 0x3F, 0, 0, 0, 0, 0x01, 0x00, 0],
            256,
        );
        let mut expected = u16::try_from(6 + pages.len())
            .unwrap()
            .to_be_bytes()
            .to_vec();
        expected.extend([0, 0x10, 0, 0, 0, 0]);
        expected.extend(&pages);
        assert_eq!(data, expected, "MODE SENSE(10) PC={pc}");
        // Each page alone, by its own code.
        let mut at = 0;
        for page in [0x08u8, 0x0A, 0x1A, 0x1C] {
            let data = data_in(&stack, vec![0x1A, 0x08, pc << 6 | page, 0, 0xFF, 0], 255);
            let length = usize::from(pages[at + 1]) + 2;
            assert_eq!(data[4..], pages[at..at + length], "page {page:02X} PC={pc}");
            assert_eq!(usize::from(data[0]), 3 + length);
            at += length;
        }
    }
    assert_clean(&stack.port);
}

#[test]
fn saved_values_are_the_power_on_values_and_mode_select_stays_consistent() {
    let stack = default_stack();
    // Switch the cache off with MODE SELECT(6) (SP = 0: current values only). The current
    // values show WCE = 0; the default and saved values stay what a power-on loads, the cache
    // on as the device came up.
    let mut params = vec![0u8, 0, 0, 0];
    params.extend(caching(false));
    let c = stack.execute(ScsiRequest::data_out(vec![0x15, 0x10, 0, 0, 24, 0], params));
    assert_good(&c, "MODE SELECT(6) WCE=0");
    let data = data_in(&stack, vec![0x1A, 0x08, 0x3F, 0, 0xFF, 0], 255);
    assert_eq!(data[4..], all_pages(false, false), "current after WCE=0");
    for pc in [2u8, 3] {
        let data = data_in(&stack, vec![0x1A, 0x08, pc << 6 | 0x3F, 0, 0xFF, 0], 255);
        assert_eq!(data[4..], all_pages(false, true), "PC={pc} after WCE=0");
    }

    // MODE SELECT(10) restating all four pages as MODE SENSE reported them, WCE back on.
    let mut params = vec![0u8; 8];
    params.extend(all_pages(false, true));
    let length = u16::try_from(params.len()).unwrap().to_be_bytes();
    let c = stack.execute(ScsiRequest::data_out(
        vec![0x55, 0x10, 0, 0, 0, 0, 0, length[0], length[1], 0],
        params.clone(),
    ));
    assert_good(&c, "MODE SELECT(10) of every page");
    for pc in [0u8, 2, 3] {
        let data = data_in(&stack, vec![0x1A, 0x08, pc << 6 | 0x3F, 0, 0xFF, 0], 255);
        assert_eq!(data[4..], all_pages(false, true), "PC={pc} after WCE=1");
    }

    // Informational exceptions on (DEXCPT = 0): not changeable. Parameter byte 8 + 20 + 12 +
    // 40 + 2 = 82, bit 3 (SPC-4 7.5.1: INVALID FIELD IN PARAMETER LIST, C/D = 0).
    let mut dexcpt = params.clone();
    dexcpt[82] = 0;
    let c = stack.execute(ScsiRequest::data_out(
        vec![0x55, 0x10, 0, 0, 0, 0, 0, length[0], length[1], 0],
        dexcpt,
    ));
    assert_illegal(&c, 0x26, Some([0x8B, 0x00, 82]), "DEXCPT = 0");
    // An idle_a timer enabled in the power condition page (byte 8 + 32 + 3 = 43, bit 1).
    let mut idle = params.clone();
    idle[43] = 0x02;
    let c = stack.execute(ScsiRequest::data_out(
        vec![0x55, 0x10, 0, 0, 0, 0, 0, length[0], length[1], 0],
        idle,
    ));
    assert_illegal(&c, 0x26, Some([0x89, 0x00, 43]), "IDLE_A");
    // SP = 1 (save the pages): not with PS = 0 pages (SPC-4 6.9): INVALID FIELD IN CDB, byte 1
    // bit 0 (C/D = 1).
    let c = stack.execute(ScsiRequest::data_out(
        vec![0x55, 0x11, 0, 0, 0, 0, 0, length[0], length[1], 0],
        params,
    ));
    assert_illegal(&c, 0x24, Some([0xC8, 0x00, 0x01]), "SP = 1");
    // Every page's PS bit is 0: none can be saved.
    let data = data_in(&stack, vec![0x1A, 0x08, 0x3F, 0, 0xFF, 0], 255);
    for at in [4usize, 24, 36, 76] {
        assert_eq!(data[at] & 0x80, 0, "PS of the page at {at}");
    }
    assert_clean(&stack.port);
}

// ---------------------------------------------------------------------------------------------
// START STOP UNIT

#[test]
fn start_stop_unit_every_power_condition() {
    let stack = default_stack();
    let ssu = |modifier: u8, byte4: u8| {
        stack.execute(ScsiRequest::no_data(vec![0x1B, 0, 0, modifier, byte4, 0]))
    };
    // (POWER CONDITION, modifier, byte 4's low bits, writes the cache back)
    let accepted: [(u8, u8, u8, bool, &str); 16] = [
        (0x0, 0, 0x01, false, "START"),
        (0x0, 0, 0x00, true, "STOP"),
        (0x0, 0, 0x04, false, "STOP NO_FLUSH"),
        (0x0, 0, 0x03, false, "START LOEJ (load)"),
        (0x1, 0, 0x00, false, "ACTIVE"),
        (0x2, 0, 0x00, false, "IDLE idle_a"),
        (0x2, 1, 0x00, false, "IDLE idle_b"),
        (0x2, 2, 0x00, false, "IDLE idle_c"),
        (0x3, 0, 0x00, true, "STANDBY standby_z"),
        (0x3, 1, 0x00, true, "STANDBY standby_y"),
        (0x3, 1, 0x04, false, "STANDBY NO_FLUSH"),
        (0x7, 0, 0x00, false, "LU_CONTROL"),
        (0xA, 0, 0x00, false, "FORCE_IDLE_0 idle_a"),
        (0xA, 2, 0x00, false, "FORCE_IDLE_0 idle_c"),
        (0xB, 0, 0x00, true, "FORCE_STANDBY_0 standby_z"),
        (0xB, 1, 0x04, false, "FORCE_STANDBY_0 NO_FLUSH"),
    ];
    for (condition, modifier, low, flushes_cache, what) in accepted {
        let before = flushes(&stack);
        assert_good(&ssu(modifier, condition << 4 | low), what);
        let expected = before + u64::from(flushes_cache);
        assert_eq!(flushes(&stack), expected, "{what}: flushes");
        // The unit is still ready and its data still readable.
        let c = stack.execute(ScsiRequest::no_data(vec![0; 6]));
        assert_good(&c, &format!("TEST UNIT READY after {what}"));
    }
    // Reserved and obsolete conditions: INVALID FIELD IN CDB at byte 4 bit 7 (C/D = 1, BPV).
    for condition in [0x4u8, 0x5, 0x6, 0x8, 0x9, 0xC, 0xD, 0xE, 0xF] {
        let c = ssu(0, condition << 4 | 0x01);
        assert_illegal(&c, 0x24, Some([0xCF, 0x00, 0x04]), "reserved condition");
    }
    // Modifiers past idle_c and standby_y: byte 3 bit 3.
    for (condition, modifier) in [(0x2u8, 3u8), (0xA, 0xF), (0x3, 2), (0xB, 3)] {
        let c = ssu(modifier, condition << 4);
        assert_illegal(&c, 0x24, Some([0xCB, 0x00, 0x03]), "modifier");
    }
    // Ejecting a medium that is not removable (RMB = 0): byte 4 bit 1.
    let c = ssu(0, 0x02);
    assert_illegal(&c, 0x24, Some([0xC9, 0x00, 0x04]), "eject");
    assert_clean(&stack.port);
}

// ---------------------------------------------------------------------------------------------
// Two disks in one machine

/// One adapter on `port`: a virtio-blk device with `serial` at PCI slot `slot`.
fn disk(port: &Port, serial: &str, slot: u32) -> (Adapter, Arc<VirtioBlkDevice>) {
    let device = Arc::new(
        VirtioBlkDevice::new(DeviceConfig {
            serial: serial.to_owned(),
            ..DeviceConfig::default()
        })
        .expect("the device model starts"),
    );
    let adapter = port
        .start_adapter(
            device.clone(),
            device.guest_memory(),
            AdapterOptions {
                bus_number: 0,
                slot_number: slot,
                ..AdapterOptions::default()
            },
        )
        .expect("the adapter starts");
    (adapter, device)
}

fn vpd(adapter: &Adapter, page: u8) -> Vec<u8> {
    let c = adapter.execute(Request::data_in(&[0x12, 0x01, page, 0x00, 0xFF, 0x00], 255));
    assert_eq!(c.srb_status & 0x3F, ffi::SRB_STATUS_DATA_OVERRUN, "{c:?}");
    assert_eq!(c.data[1], page);
    assert_eq!(
        usize::from(u16::from_be_bytes([c.data[2], c.data[3]])) + 4,
        c.data.len()
    );
    c.data
}

/// The NAA designator's 8 bytes from a VPD 83h page.
fn naa(page: &[u8]) -> Vec<u8> {
    let mut at = 4;
    while at + 4 <= page.len() {
        let length = usize::from(page[at + 3]);
        if page[at + 1] & 0x0F == 3 {
            return page[at + 4..at + 4 + length].to_vec();
        }
        at += 4 + length;
    }
    panic!("no NAA designator in {page:02X?}");
}

fn two_disks_differ(serials: [&str; 2], expected_80: [&[u8]; 2]) {
    let port = Port::new(PortOptions::default());
    port.load_driver(vioblk::DriverEntry)
        .expect("DriverEntry succeeds");
    let (first, _a) = disk(&port, serials[0], 0x18);
    let (second, _b) = disk(&port, serials[1], 0x20);
    // HwStorInitialize polls GET_ID for 1 ms; a device that answered later (a busy machine)
    // has its answer taken by the driver's next drain of queue 0: wait for it (a deadline whose
    // expiry fails the test) before the identifiers are compared and found stable.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    for (adapter, expected) in [(&first, expected_80[0]), (&second, expected_80[1])] {
        while vpd(adapter, 0x80)[4..] != *expected && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
    let (s1, s2) = (vpd(&first, 0x80), vpd(&second, 0x80));
    assert_eq!(&s1[4..], expected_80[0]);
    assert_eq!(&s2[4..], expected_80[1]);
    let (d1, d2) = (vpd(&first, 0x83), vpd(&second, 0x83));
    assert_ne!(d1, d2, "VPD 83h pages differ");
    assert_ne!(naa(&d1), naa(&d2), "NAA identifiers differ");
    assert_eq!(naa(&d1)[0] >> 4, 0x3, "NAA 3h");
    // And they are stable: asked again, each disk gives the same identifiers.
    assert_eq!(vpd(&first, 0x83), d1);
    assert_eq!(vpd(&second, 0x83), d2);
    // Both disks work side by side.
    for adapter in [&first, &second] {
        let c = adapter.execute(Request::scsi(&[0; 6]));
        assert_eq!(c.srb_status, ffi::SRB_STATUS_SUCCESS);
    }
    let _ = first.stop();
    let _ = second.stop();
    assert_clean(&port);
}

#[test]
fn two_disks_with_serials_have_different_identifiers() {
    two_disks_differ(
        ["DISK-ONE", "DISK-TWO"],
        [b"DISK-ONE".as_slice(), b"DISK-TWO".as_slice()],
    );
}

#[test]
fn two_disks_without_serials_have_different_identifiers() {
    // The devices give no serial (GET_ID answers 20 zero bytes): each adapter's location does.
    two_disks_differ(
        ["", ""],
        [
            b"PCI-0000000000000018".as_slice(),
            b"PCI-0000000000000020".as_slice(),
        ],
    );
}
