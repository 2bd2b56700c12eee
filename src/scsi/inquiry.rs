//! INQUIRY data: who the logical unit is and what it can do.
//!
//! Standard INQUIRY data (SPC-4 6.6.2) names a direct-access block device (peripheral device
//! type 00h) that claims SPC-4 and command queuing. Vital product data pages (SPC-4 7.8):
//!
//! - 00h Supported VPD Pages (SPC-4 7.8.16);
//! - 80h Unit Serial Number (SPC-4 7.8.17), only when [`DiskInfo::serial`] is not empty (the
//!   HBA layer gives the device's GET_ID serial or, when that is empty, one built from the
//!   adapter's location with [`Serial::from_location`](super::Serial::from_location), so two
//!   disks in one machine never share an identifier);
//! - 83h Device Identification (SPC-4 7.8.6): a T10 vendor ID designator (vendor, product,
//!   serial) and, with a serial, an NAA 3h "locally assigned" designator whose 60-bit value is the
//!   FNV-1a hash of the serial, so the identifier is the same on every boot;
//! - B0h Block Limits (SBC-3 6.5.3), B1h Block Device Characteristics (SBC-3 6.5.2),
//!   B2h Logical Block Provisioning (SBC-3 6.5.4).

use super::data::Response;
use super::disk::{Deallocation, DiskInfo};

/// Peripheral qualifier 000b (connected) and device type 00h (direct access block device).
const PERIPHERAL: u8 = 0x00;

/// VPD page codes, in ascending order as the Supported VPD Pages page lists them.
const PAGES: [u8; 6] = [0x00, 0x80, 0x83, 0xB0, 0xB1, 0xB2];

/// Whether VPD page `page` is reported for `disk`.
pub(super) fn supports_vpd(page: u8, disk: &DiskInfo) -> bool {
    PAGES.contains(&page) && (page != 0x80 || !disk.serial.is_empty())
}

/// Standard INQUIRY data, 74 bytes (SPC-4 table 139).
pub(super) fn standard(disk: &DiskInfo, r: &mut Response) {
    r.u8(PERIPHERAL);
    r.u8(0x00); // RMB = 0: not removable.
    r.u8(0x06); // VERSION: SPC-4.
    r.u8(0x12); // HISUP = 1, RESPONSE DATA FORMAT = 2.
    r.u8(74 - 5); // ADDITIONAL LENGTH (n - 4).
    r.u8(0x00); // SCCS, ACC, TPGS, 3PC, PROTECT: none.
    r.u8(0x00); // ENCSERV, MULTIP: none.
    r.u8(0x02); // CMDQUE = 1.
    r.ascii(disk.vendor.as_bytes(), 8);
    r.ascii(disk.product.as_bytes(), 16);
    r.ascii(disk.revision.as_bytes(), 4);
    r.zeros(20); // Vendor specific (36..=55).
    r.zeros(2); // CLOCKING, QAS, IUS; reserved.
    // VERSION DESCRIPTORS (SPC-4 table 141): SAM-5, SPC-4, SBC-3, no version claimed.
    for version in [0x00A0u16, 0x0460, 0x04C0] {
        r.be16(version);
    }
    r.zeros(10);
}

/// VPD page `page`; writes nothing for a page [`supports_vpd`] rejects.
pub(super) fn vpd(page: u8, disk: &DiskInfo, r: &mut Response) {
    if !supports_vpd(page, disk) {
        return;
    }
    r.u8(PERIPHERAL);
    r.u8(page);
    r.be16(0); // PAGE LENGTH, patched below.
    match page {
        0x00 => supported_pages(disk, r),
        0x80 => r.put(disk.serial.as_bytes()),
        0x83 => device_identification(disk, r),
        0xB0 => block_limits(disk, r),
        0xB1 => block_device_characteristics(r),
        _ => logical_block_provisioning(disk, r),
    }
    let length = u16::try_from(r.len().saturating_sub(4)).unwrap_or(0);
    r.patch(2, &length.to_be_bytes());
}

fn supported_pages(disk: &DiskInfo, r: &mut Response) {
    for page in PAGES {
        if supports_vpd(page, disk) {
            r.u8(page);
        }
    }
}

/// Device Identification designation descriptors (SPC-4 7.8.6.1, table 459).
fn device_identification(disk: &DiskInfo, r: &mut Response) {
    let serial = disk.serial.as_bytes();
    // T10 vendor ID based (SPC-4 7.8.6.4): code set 2 (ASCII), association 0 (logical unit),
    // designator type 1; T10 VENDOR IDENTIFICATION then vendor specific: product and serial.
    r.u8(0x02);
    r.u8(0x01);
    r.u8(0x00);
    r.u8(u8::try_from(8usize.saturating_add(16).saturating_add(serial.len())).unwrap_or(0));
    r.ascii(disk.vendor.as_bytes(), 8);
    r.ascii(disk.product.as_bytes(), 16);
    r.put(serial);
    if !serial.is_empty() {
        // NAA (SPC-4 7.8.6.6): code set 1 (binary), association 0, designator type 3, length 8;
        // NAA 3h is a locally assigned 60-bit value (SPC-4 7.8.6.6.3).
        r.u8(0x01);
        r.u8(0x03);
        r.u8(0x00);
        r.u8(8);
        r.be64((0x3 << 60) | (fnv1a(serial) >> 4));
    }
}

/// The 64-bit FNV-1a hash: a fixed, well-known function, so identifiers are stable.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3)
    })
}

/// Block Limits (SBC-3 table 208), page length 3Ch.
fn block_limits(disk: &DiskInfo, r: &mut Response) {
    let dealloc = disk.deallocation();
    let granularity = granularity_blocks(disk);
    r.u8(0x01); // WSNZ = 1: WRITE SAME with NUMBER OF LOGICAL BLOCKS 0 is refused.
    r.u8(0x00); // MAXIMUM COMPARE AND WRITE LENGTH: not supported.
    r.be16(u16::try_from(granularity).unwrap_or(0)); // OPTIMAL TRANSFER LENGTH GRANULARITY
    r.be32(disk.max_transfer_blocks); // MAXIMUM TRANSFER LENGTH (0: no limit)
    r.be32(disk.opt_io_blocks); // OPTIMAL TRANSFER LENGTH
    r.be32(0); // MAXIMUM PREFETCH LENGTH
    r.be32(disk.max_unmap_blocks()); // MAXIMUM UNMAP LBA COUNT
    r.be32(disk.max_unmap_descriptors()); // MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT
    // OPTIMAL UNMAP GRANULARITY: the discard alignment when discarding, else the physical block.
    let unmap_granularity = match (dealloc, disk.discard) {
        (None, _) => 0,
        (Some(Deallocation::Discard), Some(d)) if d.sector_alignment != 0 => u32::try_from(
            disk.block_size
                .blocks_from_sectors(u64::from(d.sector_alignment))
                .max(1),
        )
        .unwrap_or(1),
        (Some(_), _) => granularity.max(1),
    };
    r.be32(unmap_granularity);
    r.be32(0); // UGAVALID = 0: no unmap granularity alignment reported.
    r.be64(u64::from(disk.max_write_same_blocks())); // MAXIMUM WRITE SAME LENGTH
    r.zeros(20);
}

/// The preferred I/O granularity in blocks: the minimum I/O size, else the physical block.
fn granularity_blocks(disk: &DiskInfo) -> u32 {
    if disk.min_io_blocks != 0 {
        u32::from(disk.min_io_blocks)
    } else {
        1u32.checked_shl(u32::from(physical_exponent(disk)))
            .unwrap_or(1)
    }
}

/// The physical block exponent as READ CAPACITY(16) can state it (4 bits; else 0, unknown).
pub(super) fn physical_exponent(disk: &DiskInfo) -> u8 {
    if disk.physical_block_exponent <= 15 {
        disk.physical_block_exponent
    } else {
        0
    }
}

/// Block Device Characteristics (SBC-3 table 206), page length 3Ch.
fn block_device_characteristics(r: &mut Response) {
    r.be16(0x0001); // MEDIUM ROTATION RATE: non-rotating medium.
    r.u8(0x00); // PRODUCT TYPE: not indicated.
    r.u8(0x00); // WABEREQ, WACEREQ, NOMINAL FORM FACTOR: not reported.
    r.zeros(0x3C - 4);
}

/// Logical Block Provisioning (SBC-3 table 209), page length 4.
fn logical_block_provisioning(disk: &DiskInfo, r: &mut Response) {
    let dealloc = disk.deallocation();
    r.u8(0x00); // THRESHOLD EXPONENT: no thresholds.
    let mut flags = 0u8;
    if dealloc.is_some() {
        flags |= 0x80 | 0x40 | 0x20; // LBPU, LBPWS, LBPWS10.
    }
    if lbprz(disk) {
        flags |= 0x04; // LBPRZ.
    }
    r.u8(flags); // ANC_SUP = 0, DP = 0.
    r.u8(if dealloc.is_some() { 0x02 } else { 0x00 }); // PROVISIONING TYPE: thin, else full.
    r.u8(0x00);
}

/// Whether unmapped blocks read as zeroes (LBPRZ): only when write-zeroes deallocates.
pub(super) fn lbprz(disk: &DiskInfo) -> bool {
    disk.deallocation() == Some(Deallocation::WriteZeroes)
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::arithmetic_side_effects,
        clippy::cast_possible_truncation,
        clippy::panic,
        reason = "tests index fixed buffers and fail by panicking"
    )]

    extern crate std;

    use super::*;
    use crate::scsi::disk::{Serial, WriteZeroesLimits};
    use crate::scsi::testdisk::{disk4k, disk512};

    fn page(page: u8, disk: &DiskInfo) -> std::vec::Vec<u8> {
        let mut r = Response::new();
        vpd(page, disk, &mut r);
        assert!(!r.overflowed());
        r.as_bytes().to_vec()
    }

    #[test]
    fn standard_data_layout() {
        let mut r = Response::new();
        standard(&disk512(), &mut r);
        let d = r.as_bytes();
        assert_eq!(d.len(), 74);
        assert_eq!(d[..8], [0x00, 0x00, 0x06, 0x12, 69, 0, 0, 0x02]);
        assert_eq!(&d[8..16], b"VIOBLK  ");
        assert_eq!(&d[16..32], b"virtio-blk disk ");
        assert_eq!(&d[32..36], b"0001");
        assert_eq!(d[58..64], [0x00, 0xA0, 0x04, 0x60, 0x04, 0xC0]);
        assert!(d[64..].iter().all(|&b| b == 0));
    }

    #[test]
    fn supported_pages_with_and_without_serial() {
        assert_eq!(
            page(0x00, &disk512()),
            [0, 0, 0, 6, 0x00, 0x80, 0x83, 0xB0, 0xB1, 0xB2]
        );
        let mut d = disk512();
        d.serial = Serial::NONE;
        assert_eq!(page(0x00, &d), [0, 0, 0, 5, 0x00, 0x83, 0xB0, 0xB1, 0xB2]);
        assert!(!supports_vpd(0x80, &d));
        assert!(page(0x80, &d).is_empty());
        assert!(!supports_vpd(0xB3, &d));
    }

    #[test]
    fn unit_serial_number() {
        assert_eq!(page(0x80, &disk512()), b"\x00\x80\x00\x07QM00001");
    }

    #[test]
    fn device_identification_is_deterministic() {
        let p = page(0x83, &disk512());
        let t10_len = 8 + 16 + 7;
        assert_eq!(u16::from_be_bytes([p[2], p[3]]) as usize, p.len() - 4);
        assert_eq!(p[4..8], [0x02, 0x01, 0x00, t10_len as u8]);
        assert_eq!(&p[8..8 + t10_len], b"VIOBLK  virtio-blk disk QM00001");
        let naa = &p[8 + t10_len..];
        assert_eq!(naa[..4], [0x01, 0x03, 0x00, 8]);
        assert_eq!(naa[4] >> 4, 0x3);
        assert_eq!(naa.len(), 12);
        assert_eq!(p, page(0x83, &disk512()));
        // A different serial gives a different NAA value.
        assert_ne!(page(0x83, &disk4k())[4 + 4 + 8 + 16 + 10..], naa[..]);
        // Without a serial: only the T10 vendor ID designator.
        let mut d = disk512();
        d.serial = Serial::NONE;
        assert_eq!(page(0x83, &d)[3], 4 + 24);
    }

    #[test]
    fn fnv1a_reference_values() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn block_limits_512() {
        let p = page(0xB0, &disk512());
        assert_eq!(p.len(), 64);
        assert_eq!(p[..4], [0, 0xB0, 0, 0x3C]);
        assert_eq!(p[4], 0x01);
        assert_eq!(p[6..8], [0, 1]);
        assert_eq!(p[8..12], 2048u32.to_be_bytes());
        assert_eq!(p[20..24], 0x3F_FFFFu32.to_be_bytes());
        assert_eq!(p[24..28], 1u32.to_be_bytes());
        assert_eq!(p[28..32], 1u32.to_be_bytes());
        assert_eq!(p[32..36], [0, 0, 0, 0]);
        assert_eq!(p[36..44], 0x3F_FFFFu64.to_be_bytes());
    }

    #[test]
    fn block_limits_4kn_in_logical_blocks() {
        let mut d = disk4k();
        d.physical_block_exponent = 0;
        let p = page(0xB0, &d);
        assert_eq!(p[8..12], 256u32.to_be_bytes());
        // 0x3F_FFFF sectors of discard are 0x7_FFFF whole 4 KiB blocks, not 0x3F_FFFF.
        assert_eq!(p[20..24], 0x7_FFFFu32.to_be_bytes());
        assert_eq!(p[24..28], 16u32.to_be_bytes());
        // Discard alignment 8 sectors = 1 block.
        assert_eq!(p[28..32], 1u32.to_be_bytes());
        assert_eq!(p[36..44], 0x7_FFFFu64.to_be_bytes());
    }

    #[test]
    fn block_limits_without_provisioning() {
        let mut d = disk512();
        d.discard = None;
        d.write_zeroes = None;
        d.physical_block_exponent = 3;
        let p = page(0xB0, &d);
        assert_eq!(p[6..8], [0, 8]);
        assert!(p[20..44].iter().all(|&b| b == 0));
    }

    #[test]
    fn block_device_characteristics_non_rotating() {
        let p = page(0xB1, &disk512());
        assert_eq!(p.len(), 64);
        assert_eq!(p[..6], [0, 0xB1, 0, 0x3C, 0, 1]);
    }

    #[test]
    fn logical_block_provisioning_variants() {
        // Write-zeroes may unmap: thin, LBPU/LBPWS/LBPWS10 and LBPRZ.
        assert_eq!(page(0xB2, &disk512()), [0, 0xB2, 0, 4, 0, 0xE4, 0x02, 0]);
        // Discard only: no LBPRZ.
        assert_eq!(page(0xB2, &disk4k()), [0, 0xB2, 0, 4, 0, 0xE0, 0x02, 0]);
        // Write-zeroes that may not unmap and no discard: nothing to deallocate.
        let mut d = disk512();
        d.discard = None;
        d.write_zeroes = Some(WriteZeroesLimits::from_config(8, 1, false));
        assert_eq!(page(0xB2, &d), [0, 0xB2, 0, 4, 0, 0, 0, 0]);
    }
}
