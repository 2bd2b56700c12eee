//! READ CAPACITY parameter data: how many blocks, how big, how they map to physical blocks.
//!
//! READ CAPACITY(10) (SBC-3 5.15.2, table 63) reports the last LBA in 32 bits and FFFFFFFFh when
//! it does not fit, which tells the initiator to use READ CAPACITY(16). READ CAPACITY(16) (SBC-3
//! 5.16.2, table 66) adds the physical-block exponent, the lowest aligned LBA, and the
//! provisioning bits LBPME (the disk deallocates) and LBPRZ (unmapped blocks read as zeroes).
//! Both are only built for a ready disk, so a last LBA exists.

use super::data::Response;
use super::disk::DiskInfo;
use super::inquiry::{lbprz, physical_exponent};

/// READ CAPACITY(10) data, 8 bytes.
pub(super) fn read_capacity_10(disk: &DiskInfo, r: &mut Response) {
    let last = disk.last_lba().unwrap_or(0);
    r.be32(u32::try_from(last).unwrap_or(u32::MAX));
    r.be32(disk.block_size.bytes());
}

/// READ CAPACITY(16) data, 32 bytes.
pub(super) fn read_capacity_16(disk: &DiskInfo, r: &mut Response) {
    r.be64(disk.last_lba().unwrap_or(0));
    r.be32(disk.block_size.bytes());
    r.u8(0x00); // P_TYPE, PROT_EN: no protection information.
    r.u8(physical_exponent(disk)); // P_I_EXPONENT = 0 | LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT
    let mut aligned = (disk.lowest_aligned_lba & 0x3FFF).to_be_bytes();
    if disk.deallocation().is_some() {
        aligned[0] |= 0x80; // LBPME
    }
    if lbprz(disk) {
        aligned[0] |= 0x40; // LBPRZ
    }
    r.put(&aligned);
    r.zeros(16);
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

    use super::*;
    use crate::scsi::disk::{BlockSize, DiskInfo};
    use crate::scsi::testdisk::{disk4k, disk512};

    fn rc10(disk: &DiskInfo) -> [u8; 8] {
        let mut r = Response::new();
        read_capacity_10(disk, &mut r);
        r.as_bytes().try_into().unwrap()
    }

    fn rc16(disk: &DiskInfo) -> [u8; 32] {
        let mut r = Response::new();
        read_capacity_16(disk, &mut r);
        r.as_bytes().try_into().unwrap()
    }

    #[test]
    fn read_capacity_10_small_and_huge() {
        assert_eq!(rc10(&disk512()), [0x00, 0x1F, 0xFF, 0xFF, 0, 0, 0x02, 0x00]);
        assert_eq!(rc10(&disk4k()), [0x00, 0x03, 0xFF, 0xFF, 0, 0, 0x10, 0x00]);
        let edge = DiskInfo::new(BlockSize::B512, 1 << 32);
        assert_eq!(rc10(&edge)[..4], [0xFF, 0xFF, 0xFF, 0xFF]);
        let fits = DiskInfo::new(BlockSize::B512, (1 << 32) - 1);
        assert_eq!(rc10(&fits)[..4], [0xFF, 0xFF, 0xFF, 0xFE]);
    }

    #[test]
    fn read_capacity_16_fields() {
        let mut d = disk512();
        d.capacity = 1 << 40;
        d.physical_block_exponent = 3;
        d.lowest_aligned_lba = 0x0107;
        let data = rc16(&d);
        assert_eq!(data[..8], ((1u64 << 40) - 1).to_be_bytes());
        assert_eq!(data[8..12], 512u32.to_be_bytes());
        assert_eq!(data[12], 0);
        assert_eq!(data[13], 3);
        assert_eq!(data[14..16], [0x80 | 0x40 | 0x01, 0x07]);
        assert!(data[16..].iter().all(|&b| b == 0));
    }

    #[test]
    fn read_capacity_16_provisioning_bits() {
        // Discard only: LBPME without LBPRZ.
        assert_eq!(rc16(&disk4k())[14], 0x80);
        // Nothing to deallocate.
        let plain = DiskInfo::new(BlockSize::B4096, 10);
        let data = rc16(&plain);
        assert_eq!(data[..8], 9u64.to_be_bytes());
        assert_eq!(data[8..12], 4096u32.to_be_bytes());
        assert_eq!(data[14], 0);
        // An exponent that does not fit four bits is not reported.
        let mut odd = plain;
        odd.physical_block_exponent = 16;
        assert_eq!(rc16(&odd)[13], 0);
    }
}
