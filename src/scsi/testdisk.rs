//! Disks the unit tests share.

use super::disk::{BlockSize, DiscardLimits, DiskInfo, Serial, WriteCache, WriteZeroesLimits};

/// A 1 GiB 512-byte-block disk like QEMU's default: changeable write-back cache, flush,
/// discard and write-zeroes (may unmap), 1 MiB transfers, serial "QM00001".
pub(super) fn disk512() -> DiskInfo {
    DiskInfo {
        physical_block_exponent: 0,
        write_cache: Some(WriteCache {
            enabled: true,
            changeable: true,
        }),
        flush: true,
        discard: Some(DiscardLimits::from_config(0x3F_FFFF, 1, 0)),
        write_zeroes: Some(WriteZeroesLimits::from_config(0x3F_FFFF, 1, true)),
        max_transfer_blocks: 2048,
        serial: Serial::from_id(b"QM00001\0"),
        ..DiskInfo::new(BlockSize::B512, 1 << 21)
    }
}

/// A 4Kn disk of the same size: 4096-byte blocks, discard only (no write-zeroes),
/// discard alignment 8 sectors, 16 discard segments, 1 MiB transfers.
pub(super) fn disk4k() -> DiskInfo {
    DiskInfo {
        write_cache: Some(WriteCache {
            enabled: true,
            changeable: true,
        }),
        flush: true,
        discard: Some(DiscardLimits::from_config(0x3F_FFFF, 16, 8)),
        write_zeroes: None,
        max_transfer_blocks: 256,
        serial: Serial::from_id(b"4KN-SERIAL"),
        ..DiskInfo::new(BlockSize::B4096, 1 << 18)
    }
}
