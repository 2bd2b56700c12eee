//! The disk as SCSI describes it, from what the virtio-blk device reported.
//!
//! [`describe`] turns the negotiated `virtio_blk_config` into the `scsi::DiskInfo` the SCSI layer
//! answers from. Two things change at run time: the capacity (a configuration-change interrupt
//! after the host resizes the disk) and the write-cache mode (MODE SELECT with CONFIG_WCE). They
//! live in atomics beside the description; [`DiskState::current`] gives the description as it is
//! now.

use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};

use crate::scsi::{self, BlockSize, DiskInfo, Serial};
use crate::virtio::{self, BlkConfig};

/// Vendor identification in INQUIRY data (8 bytes, space padded by the SCSI layer).
pub const VENDOR: &str = "VIOBLK";
/// Product identification in INQUIRY data.
pub const PRODUCT: &str = "virtio-blk disk";
/// Product revision in INQUIRY data.
pub const REVISION: &str = "0001";

/// The largest capacity, in 512-byte sectors, the driver accepts: one whose byte count fits in
/// 64 bits. Anything above is a device reporting nonsense (VIRTIO 1.2 5.2.4 gives no limit, so the
/// driver draws it where its arithmetic ends).
pub const MAX_SECTORS: u64 = u64::MAX >> 9;

/// Whether `sectors` is a capacity the driver accepts (see [`MAX_SECTORS`]).
pub fn capacity_is_valid(sectors: u64) -> bool {
    sectors <= MAX_SECTORS
}

/// Builds the SCSI description of a disk the device describes with `config`, where one request
/// moves at most `max_transfer_bytes`.
pub fn describe(config: &BlkConfig, max_transfer_bytes: u32, serial: Serial) -> DiskInfo {
    let block_size = config
        .blk_size
        .and_then(BlockSize::new)
        .unwrap_or(BlockSize::B512);
    let topology = config.topology;
    DiskInfo {
        block_size,
        capacity: block_size.blocks_from_sectors(config.capacity),
        physical_block_exponent: topology.map_or(0, |t| t.physical_block_exp),
        lowest_aligned_lba: topology.map_or(0, |t| u16::from(t.alignment_offset)),
        min_io_blocks: topology.map_or(0, |t| t.min_io_size),
        opt_io_blocks: topology.map_or(0, |t| t.opt_io_size),
        read_only: config.read_only,
        write_cache: config.flush.then_some(scsi::WriteCache {
            enabled: config.write_cache == virtio::WriteCache::WriteBack,
            changeable: config.cache_mode_writable,
        }),
        // The mode the device came up in stays the default when MODE SELECT changes it.
        write_cache_default: Some(config.write_cache == virtio::WriteCache::WriteBack),
        flush: config.flush,
        discard: config.discard.map(|d| {
            scsi::DiscardLimits::from_config(d.max_sectors, d.max_segments, d.sector_alignment)
        }),
        write_zeroes: config.write_zeroes.map(|w| {
            scsi::WriteZeroesLimits::from_config(w.max_sectors, w.max_segments, w.may_unmap)
        }),
        #[expect(
            clippy::arithmetic_side_effects,
            reason = "BlockSize's invariant: bytes() >= 512, never 0"
        )]
        max_transfer_blocks: max_transfer_bytes / block_size.bytes(),
        serial,
        vendor: VENDOR,
        product: PRODUCT,
        revision: REVISION,
    }
}

/// The disk description plus what changes at run time.
pub struct DiskState {
    /// The description at start (capacity and cache mode as they were then).
    info: Option<DiskInfo>,
    /// Capacity in logical blocks, now.
    capacity: AtomicU64,
    /// Write cache enabled (WCE), now.
    write_cache_enabled: AtomicBool,
    /// A UNIT ATTENTION (capacity changed) waits for the next command.
    unit_attention: AtomicBool,
    /// The serial number until GET_ID gives one (built from the adapter's location).
    fallback_serial: Serial,
    /// The serial number from GET_ID: written once (by HwStorInitialize, or by the drain that
    /// found a late answer), while INQUIRYs may read it on other CPUs, so it is published
    /// through `serial_state` and never changes after.
    serial: [AtomicU8; 20],
    serial_len: AtomicU8,
    /// `SERIAL_NONE`, `SERIAL_WRITING` (one writer claimed it) or `SERIAL_READY`.
    serial_state: AtomicU8,
}

/// No serial number from GET_ID yet.
const SERIAL_NONE: u8 = 0;
/// A writer is filling the serial number in.
const SERIAL_WRITING: u8 = 1;
/// The serial number from GET_ID is complete and final.
const SERIAL_READY: u8 = 2;

impl DiskState {
    /// No disk yet (the device extension's initial value, built at compile time).
    #[expect(
        clippy::declare_interior_mutable_const,
        reason = "only `Miniport::INITIAL` uses it, to build the device extension's initial value"
    )]
    pub const EMPTY: Self = Self {
        info: None,
        capacity: AtomicU64::new(0),
        write_cache_enabled: AtomicBool::new(false),
        unit_attention: AtomicBool::new(false),
        fallback_serial: Serial::NONE,
        serial: [const { AtomicU8::new(0) }; 20],
        serial_len: AtomicU8::new(0),
        serial_state: AtomicU8::new(SERIAL_NONE),
    };

    /// Records the disk found at start.
    pub fn set(&mut self, info: DiskInfo) {
        self.capacity.store(info.capacity, Ordering::Relaxed);
        self.write_cache_enabled.store(
            info.write_cache.is_some_and(|c| c.enabled),
            Ordering::Relaxed,
        );
        self.info = Some(info);
    }

    /// The description as it was at start, or `None` before the adapter was found.
    #[inline]
    pub fn at_start(&self) -> Option<&DiskInfo> {
        self.info.as_ref()
    }

    /// Whether the capacity and the cache mode are still what they were at start.
    #[inline]
    pub fn is_unchanged(&self) -> bool {
        self.info.as_ref().is_some_and(|info| {
            info.capacity == self.capacity.load(Ordering::Relaxed)
                && info
                    .write_cache
                    .is_none_or(|c| c.enabled == self.write_cache_enabled.load(Ordering::Relaxed))
        })
    }

    /// The description as it is now, or `None` before the adapter was found.
    #[inline]
    pub fn current(&self) -> Option<DiskInfo> {
        let mut info = self.info?;
        info.capacity = self.capacity.load(Ordering::Relaxed);
        if let Some(cache) = info.write_cache.as_mut() {
            cache.enabled = self.write_cache_enabled.load(Ordering::Relaxed);
        }
        Some(info)
    }

    /// Records a new capacity (in 512-byte sectors); returns whether it changed, in which case
    /// a UNIT ATTENTION is now pending.
    pub fn resize(&self, sectors: u64) -> bool {
        let Some(info) = self.info.as_ref() else {
            return false;
        };
        if !capacity_is_valid(sectors) {
            return false;
        }
        let blocks = info.block_size.blocks_from_sectors(sectors);
        let old = self.capacity.swap(blocks, Ordering::Relaxed);
        if old != blocks {
            self.unit_attention.store(true, Ordering::Release);
        }
        old != blocks
    }

    /// Sets the serial number used until GET_ID gives one (HwStorFindAdapter).
    pub fn set_fallback_serial(&mut self, serial: Serial) {
        self.fallback_serial = serial;
    }

    /// Records the serial number read with GET_ID. Only the first call counts: a device answers
    /// the one GET_ID once, and an INQUIRY on another CPU must never see half of a change.
    pub fn set_serial(&self, serial: Serial) {
        if self
            .serial_state
            .compare_exchange(
                SERIAL_NONE,
                SERIAL_WRITING,
                Ordering::Acquire,
                Ordering::Relaxed,
            )
            .is_err()
        {
            return;
        }
        let bytes = serial.as_bytes();
        for (dst, src) in self.serial.iter().zip(bytes) {
            dst.store(*src, Ordering::Relaxed);
        }
        self.serial_len
            .store(u8::try_from(bytes.len()).unwrap_or(0), Ordering::Relaxed);
        self.serial_state.store(SERIAL_READY, Ordering::Release);
    }

    /// The serial number: GET_ID's once it is recorded, else the fallback (only INQUIRY needs
    /// it, so [`DiskState::current`] leaves it out).
    pub fn serial(&self) -> Serial {
        if self.serial_state.load(Ordering::Acquire) != SERIAL_READY {
            return self.fallback_serial;
        }
        let len = usize::from(self.serial_len.load(Ordering::Relaxed));
        let mut bytes = [0u8; 20];
        for (dst, src) in bytes.iter_mut().zip(&self.serial).take(len) {
            *dst = src.load(Ordering::Relaxed);
        }
        Serial::from_id(bytes.get(..len).unwrap_or(&[]))
    }

    /// Records the write-cache mode now in force.
    pub fn set_write_cache(&self, enabled: bool) {
        self.write_cache_enabled.store(enabled, Ordering::Relaxed);
    }

    /// Whether a UNIT ATTENTION waits for the next command (without taking it).
    #[inline]
    pub fn unit_attention_pending(&self) -> bool {
        self.unit_attention.load(Ordering::Relaxed)
    }

    /// Takes the pending UNIT ATTENTION, if any.
    #[inline]
    pub fn take_unit_attention(&self) -> bool {
        self.unit_attention.load(Ordering::Relaxed)
            && self.unit_attention.swap(false, Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_limit() {
        assert!(capacity_is_valid(0));
        assert!(capacity_is_valid(MAX_SECTORS));
        assert!(!capacity_is_valid(MAX_SECTORS + 1));
        assert!(!capacity_is_valid(u64::MAX));
        // Every accepted capacity's byte count fits in 64 bits.
        assert!(MAX_SECTORS.checked_mul(512).is_some());
    }
}
