//! The disk description: what the device reported, in the terms the SCSI answers need.
//!
//! [`DiskInfo`] is plain data the HBA layer fills from the device configuration (and rebuilds
//! after a configuration change, e.g. a capacity change). Block addresses and counts in SCSI are
//! in logical blocks of [`DiskInfo::block_size`]; the device always counts 512-byte sectors, so
//! every conversion goes through [`to_sectors`] with checked arithmetic (a 4096-byte logical block
//! is eight sectors: getting this wrong corrupts data, as viostor's UNMAP did on 4Kn disks).
//!
//! Deallocation (UNMAP, WRITE SAME with UNMAP) has two possible carriers, chosen by
//! [`DiskInfo::deallocation`]: write-zeroes with its unmap flag when the device may unmap there
//! (then unmapped blocks are guaranteed to read as zeroes, and LBPRZ is reported, SBC-3 4.7.3.5),
//! otherwise discard (then the contents of unmapped blocks are unspecified and LBPRZ is zero).

use super::sense::Sense;

/// The size of a logical block: a power of two from 512 to 65536 bytes.
///
/// # Invariants
///
/// The value is a power of two in `512..=65536`, so it is a whole number of 512-byte sectors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockSize(u32);

impl BlockSize {
    /// 512-byte logical blocks.
    pub const B512: Self = Self(512);
    /// 4096-byte logical blocks ("4Kn").
    pub const B4096: Self = Self(4096);

    /// Returns the block size of `bytes`, or `None` if it is not a power of two in 512..=65536.
    pub const fn new(bytes: u32) -> Option<Self> {
        if bytes >= 512 && bytes <= 65536 && bytes.is_power_of_two() {
            // INVARIANT: checked just above.
            Some(Self(bytes))
        } else {
            None
        }
    }

    /// The size in bytes.
    pub const fn bytes(self) -> u32 {
        self.0
    }

    /// The number of 512-byte sectors in one logical block (at least 1).
    pub const fn sectors_per_block(self) -> u32 {
        self.0 >> 9
    }

    /// Converts a count of 512-byte sectors to whole logical blocks, rounding down.
    pub const fn blocks_from_sectors(self, sectors: u64) -> u64 {
        sectors >> self.sectors_per_block().trailing_zeros()
    }
}

/// The volatile write cache, when the device has one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteCache {
    /// Writes are cached (write-back); SCSI's WCE bit.
    pub enabled: bool,
    /// The host may switch the cache on and off (the device offers writeback configuration).
    pub changeable: bool,
}

/// Discard limits, in 512-byte sectors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiscardLimits {
    /// Most sectors one request may discard (over all its segments).
    pub max_sectors: u32,
    /// Most segments in one request (at least 1).
    pub max_segments: u32,
    /// Preferred alignment and granularity of a discard, in sectors (0: none).
    pub sector_alignment: u32,
}

impl DiscardLimits {
    /// Builds the limits from raw configuration values: a zero maximum means "no limit stated"
    /// and becomes `u32::MAX` sectors or one segment (the conservative reading).
    pub const fn from_config(max_sectors: u32, max_segments: u32, sector_alignment: u32) -> Self {
        Self {
            max_sectors: if max_sectors == 0 {
                u32::MAX
            } else {
                max_sectors
            },
            max_segments: if max_segments == 0 { 1 } else { max_segments },
            sector_alignment,
        }
    }
}

/// Write-zeroes limits, in 512-byte sectors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteZeroesLimits {
    /// Most sectors one request may zero (over all its segments).
    pub max_sectors: u32,
    /// Most segments in one request (at least 1).
    pub max_segments: u32,
    /// The device may deallocate the zeroed range when asked to (the unmap flag).
    pub may_unmap: bool,
}

impl WriteZeroesLimits {
    /// Builds the limits from raw configuration values, as [`DiscardLimits::from_config`] does.
    pub const fn from_config(max_sectors: u32, max_segments: u32, may_unmap: bool) -> Self {
        Self {
            max_sectors: if max_sectors == 0 {
                u32::MAX
            } else {
                max_sectors
            },
            max_segments: if max_segments == 0 { 1 } else { max_segments },
            may_unmap,
        }
    }
}

/// How the disk deallocates blocks for UNMAP and WRITE SAME with the UNMAP bit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deallocation {
    /// Write zeroes with the unmap flag set: unmapped blocks read back as zeroes (LBPRZ = 1).
    WriteZeroes,
    /// Discard: unmapped blocks read back unspecified data (LBPRZ = 0).
    Discard,
}

/// The unit serial number, at most 20 printable ASCII bytes.
///
/// # Invariants
///
/// `len <= 20` and `bytes[..len]` is printable ASCII without leading or trailing spaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Serial {
    bytes: [u8; 20],
    len: u8,
}

impl Serial {
    /// No serial number.
    pub const NONE: Self = Self {
        bytes: [0; 20],
        len: 0,
    };

    /// Builds the serial from a device identifier string (up to 20 bytes, NUL-terminated when
    /// shorter): stops at the first NUL, replaces bytes that are not printable ASCII with `_`,
    /// trims spaces at both ends. Deterministic, so the disk's identity is stable across boots.
    pub fn from_id(raw: &[u8]) -> Self {
        let raw = raw.get(..20).unwrap_or(raw);
        let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
        let raw = raw.get(..end).unwrap_or(&[]);
        let start = raw.iter().position(|&b| b != b' ').unwrap_or(raw.len());
        let stop = raw
            .iter()
            .rposition(|&b| b != b' ')
            .map_or(start, |i| i.saturating_add(1));
        let trimmed = raw.get(start..stop).unwrap_or(&[]);
        let mut serial = Self::NONE;
        for (dst, &src) in serial.bytes.iter_mut().zip(trimmed) {
            *dst = if (0x20..0x7F).contains(&src) {
                src
            } else {
                b'_'
            };
        }
        // INVARIANT: `trimmed` is at most 20 bytes (`raw` was cut to 20) and was sanitized.
        serial.len = u8::try_from(trimmed.len().min(20)).unwrap_or(0);
        serial
    }

    /// Builds a serial for a unit whose device gave none, from where its adapter sits: `bus` and
    /// `slot` are two numbers the host gives each adapter, unique among the adapters of one
    /// machine and the same on every boot of an unchanged machine (a PCI bus number and slot).
    /// The result is `"PCI-"` and the two numbers as eight hexadecimal digits each, 20 bytes,
    /// so two serial-less disks in one machine never share VPD 80h and 83h identifiers.
    pub fn from_location(bus: u32, slot: u32) -> Self {
        const HEX: &[u8; 16] = b"0123456789ABCDEF";
        let mut serial = Self::NONE;
        let digits = bus.to_be_bytes().into_iter().chain(slot.to_be_bytes());
        let mut text = [0u8; 20];
        for (dst, &src) in text.iter_mut().zip(b"PCI-") {
            *dst = src;
        }
        for (pair, byte) in text
            .get_mut(4..)
            .unwrap_or(&mut [])
            .chunks_mut(2)
            .zip(digits)
        {
            for (dst, nibble) in pair.iter_mut().zip([byte >> 4, byte & 0x0F]) {
                *dst = HEX.get(usize::from(nibble)).copied().unwrap_or(b'0');
            }
        }
        serial.bytes = text;
        // INVARIANT: 20 bytes of "PCI-" and hexadecimal digits: printable, no spaces.
        serial.len = 20;
        serial
    }

    /// The serial number bytes (empty when there is none).
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or(&[])
    }

    /// Whether there is no serial number.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A range of 512-byte sectors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SectorRange {
    /// The first sector.
    pub sector: u64,
    /// The number of sectors.
    pub sectors: u64,
}

/// One discard or write-zeroes segment: a sector range whose length fits the 32-bit count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// The first sector.
    pub sector: u64,
    /// The number of sectors (never 0).
    pub sectors: u32,
}

/// Converts `blocks` logical blocks at `lba` to 512-byte sectors, or `None` if the sector
/// range would not fit 64 bits.
pub fn to_sectors(lba: u64, blocks: u64, disk: &DiskInfo) -> Option<SectorRange> {
    let per_block = u64::from(disk.block_size.sectors_per_block());
    let sector = lba.checked_mul(per_block)?;
    let sectors = blocks.checked_mul(per_block)?;
    sector.checked_add(sectors)?;
    Some(SectorRange { sector, sectors })
}

/// Everything the SCSI answers need to know about the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskInfo {
    /// The logical block size.
    pub block_size: BlockSize,
    /// The capacity in logical blocks (0 reads as "medium not present").
    pub capacity: u64,
    /// log2 of logical blocks per physical block (0 when unknown; values over 15 are not reported).
    pub physical_block_exponent: u8,
    /// The lowest aligned logical block address (the alignment offset, in logical blocks).
    pub lowest_aligned_lba: u16,
    /// The minimum I/O size in logical blocks (0 when unknown).
    pub min_io_blocks: u16,
    /// The optimal I/O size in logical blocks (0 when unknown).
    pub opt_io_blocks: u32,
    /// The disk refuses writes.
    pub read_only: bool,
    /// The volatile write cache, if any (`None`: writes are write-through).
    pub write_cache: Option<WriteCache>,
    /// Whether the write cache was enabled when the device came up: MODE SENSE's default and
    /// saved WCE (the values a power-on loads; the device returns to them on a reset). `None`:
    /// the current value.
    pub write_cache_default: Option<bool>,
    /// The device can flush its cache.
    pub flush: bool,
    /// Discard limits, when the device discards.
    pub discard: Option<DiscardLimits>,
    /// Write-zeroes limits, when the device writes zeroes.
    pub write_zeroes: Option<WriteZeroesLimits>,
    /// The largest READ or WRITE in logical blocks (0: no limit).
    pub max_transfer_blocks: u32,
    /// The unit serial number.
    pub serial: Serial,
    /// T10 vendor identification (8 ASCII characters; padded or cut).
    pub vendor: &'static str,
    /// Product identification (16 ASCII characters; padded or cut).
    pub product: &'static str,
    /// Product revision level (4 ASCII characters; padded or cut).
    pub revision: &'static str,
}

impl DiskInfo {
    /// A writable disk of `capacity` blocks of `block_size` with no cache, discard or
    /// write-zeroes and no serial: the base unit tests fill in (the HBA layer describes every
    /// field itself, `hba::disk::describe`).
    #[cfg(test)]
    pub const fn new(block_size: BlockSize, capacity: u64) -> Self {
        Self {
            block_size,
            capacity,
            physical_block_exponent: 0,
            lowest_aligned_lba: 0,
            min_io_blocks: 0,
            opt_io_blocks: 0,
            read_only: false,
            write_cache: None,
            write_cache_default: None,
            flush: false,
            discard: None,
            write_zeroes: None,
            max_transfer_blocks: 0,
            serial: Serial::NONE,
            vendor: "VIOBLK",
            product: "virtio-blk disk",
            revision: "0001",
        }
    }

    /// Whether the write cache is enabled.
    pub fn write_cache_enabled(&self) -> bool {
        self.write_cache.is_some_and(|cache| cache.enabled)
    }

    /// Whether the write cache is enabled at power-on (see [`Self::write_cache_default`]).
    pub(super) fn write_cache_enabled_by_default(&self) -> bool {
        self.write_cache
            .is_some_and(|cache| self.write_cache_default.unwrap_or(cache.enabled))
    }

    /// Whether the FUA bit is honoured (by a flush after the write): the device can flush.
    pub(super) fn supports_fua(&self) -> bool {
        self.flush
    }

    /// How UNMAP deallocates, if the disk can deallocate at all.
    pub fn deallocation(&self) -> Option<Deallocation> {
        match (self.write_zeroes, self.discard) {
            (Some(zeroes), _) if zeroes.may_unmap => Some(Deallocation::WriteZeroes),
            (_, Some(_)) => Some(Deallocation::Discard),
            _ => None,
        }
    }

    /// The (max sectors, max segments) of the deallocation carrier.
    fn deallocation_limits(&self) -> Option<(u32, u32)> {
        match self.deallocation()? {
            Deallocation::WriteZeroes => self.write_zeroes.map(|l| (l.max_sectors, l.max_segments)),
            Deallocation::Discard => self.discard.map(|l| (l.max_sectors, l.max_segments)),
        }
    }

    /// The most logical blocks one UNMAP may name in total (Block Limits MAXIMUM UNMAP LBA
    /// COUNT). Each descriptor then fits one segment, so one segment per descriptor suffices.
    pub fn max_unmap_blocks(&self) -> u32 {
        self.deallocation_limits()
            .map_or(0, |(sectors, _)| self.sectors_to_blocks_u32(sectors))
    }

    /// The most descriptors one UNMAP may carry (MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT).
    pub fn max_unmap_descriptors(&self) -> u32 {
        self.deallocation_limits()
            .map_or(0, |(_, segments)| segments)
    }

    /// The most blocks one WRITE SAME may name (MAXIMUM WRITE SAME LENGTH): the smaller of the
    /// limits of the carriers it may use (write-zeroes, and deallocation for the UNMAP bit).
    pub fn max_write_same_blocks(&self) -> u32 {
        let zeroes = self
            .write_zeroes
            .map(|l| self.sectors_to_blocks_u32(l.max_sectors));
        let dealloc = self
            .deallocation_limits()
            .map(|(sectors, _)| self.sectors_to_blocks_u32(sectors));
        match (zeroes, dealloc) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => 0,
        }
    }

    fn sectors_to_blocks_u32(&self, sectors: u32) -> u32 {
        u32::try_from(self.block_size.blocks_from_sectors(u64::from(sectors))).unwrap_or(u32::MAX)
    }

    /// The last logical block address, or `None` for an empty disk.
    pub fn last_lba(&self) -> Option<u64> {
        self.capacity.checked_sub(1)
    }

    /// NOT READY / MEDIUM NOT PRESENT for an empty disk (SPC-4 4.5.6), else ready.
    pub(super) fn check_ready(&self) -> Result<(), Sense> {
        if self.capacity == 0 {
            Err(Sense::MEDIUM_NOT_PRESENT)
        } else {
            Ok(())
        }
    }

    /// LOGICAL BLOCK ADDRESS OUT OF RANGE unless `lba` names a block and `lba + blocks` does
    /// not pass the capacity, computed without overflow (SBC-3 4.5).
    pub(super) fn check_range(&self, lba: u64, blocks: u64) -> Result<(), Sense> {
        match lba.checked_add(blocks) {
            Some(end) if lba < self.capacity && end <= self.capacity => Ok(()),
            _ => Err(Sense::LBA_OUT_OF_RANGE.with_information(lba)),
        }
    }

    /// DATA PROTECT / WRITE PROTECTED for a read-only disk (SBC-3 4.11).
    pub(super) fn check_writable(&self) -> Result<(), Sense> {
        if self.read_only {
            Err(Sense::WRITE_PROTECTED)
        } else {
            Ok(())
        }
    }
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
    use crate::scsi::testdisk::{disk4k, disk512};

    #[test]
    fn block_size_accepts_powers_of_two_only() {
        assert_eq!(BlockSize::new(512), Some(BlockSize::B512));
        assert_eq!(BlockSize::new(4096), Some(BlockSize::B4096));
        assert_eq!(BlockSize::new(65536).unwrap().sectors_per_block(), 128);
        for bad in [0, 1, 256, 520, 1000, 4095, 131072, u32::MAX] {
            assert_eq!(BlockSize::new(bad), None, "{bad}");
        }
        assert_eq!(BlockSize::B4096.blocks_from_sectors(17), 2);
        assert_eq!(BlockSize::B512.blocks_from_sectors(u64::MAX), u64::MAX);
    }

    #[test]
    fn serial_is_sanitized_and_trimmed() {
        assert_eq!(Serial::from_id(b"QM00001\0\0\0").as_bytes(), b"QM00001");
        assert_eq!(Serial::from_id(b"  ab c  ").as_bytes(), b"ab c");
        assert_eq!(Serial::from_id(b"a\x01b\xffc").as_bytes(), b"a_b_c");
        assert_eq!(
            Serial::from_id(b"0123456789abcdefghijKLMN").as_bytes(),
            b"0123456789abcdefghij"
        );
        assert!(Serial::from_id(b"\0abc").is_empty());
        assert!(Serial::from_id(b"     ").is_empty());
        assert!(Serial::from_id(b"").is_empty());
    }

    #[test]
    fn serial_from_location_is_unique_per_location() {
        assert_eq!(
            Serial::from_location(0, 0x18).as_bytes(),
            b"PCI-0000000000000018"
        );
        assert_eq!(
            Serial::from_location(0xDEAD_BEEF, u32::MAX).as_bytes(),
            b"PCI-DEADBEEFFFFFFFFF"
        );
        assert_ne!(Serial::from_location(0, 1), Serial::from_location(1, 0));
        assert_ne!(Serial::from_location(0, 1), Serial::from_location(0, 2));
        // It survives the sanitizer unchanged (a valid serial).
        let s = Serial::from_location(3, 0x2A);
        assert_eq!(Serial::from_id(s.as_bytes()), s);
    }

    #[test]
    fn sectors_for_4kn_and_512() {
        let d = disk4k();
        assert_eq!(
            to_sectors(10, 3, &d),
            Some(SectorRange {
                sector: 80,
                sectors: 24
            })
        );
        assert_eq!(to_sectors(u64::MAX / 8 + 1, 1, &d), None);
        assert_eq!(to_sectors(0, u64::MAX, &d), None);
        assert_eq!(
            to_sectors(u64::MAX - 1, 1, &disk512()),
            Some(SectorRange {
                sector: u64::MAX - 1,
                sectors: 1
            })
        );
        assert_eq!(to_sectors(u64::MAX, 1, &disk512()), None);
    }

    #[test]
    fn range_check_is_overflow_safe() {
        let d = disk512();
        assert!(d.check_range(0, d.capacity).is_ok());
        assert!(d.check_range(d.capacity - 1, 1).is_ok());
        assert!(d.check_range(d.capacity - 1, 2).is_err());
        assert!(d.check_range(d.capacity, 0).is_err());
        assert!(d.check_range(u64::MAX, 2).is_err());
        assert!(d.check_range(1, u64::MAX).is_err());
    }

    #[test]
    fn deallocation_prefers_write_zeroes_that_may_unmap() {
        let mut d = disk512();
        assert_eq!(d.deallocation(), Some(Deallocation::WriteZeroes));
        d.write_zeroes = Some(WriteZeroesLimits::from_config(100, 1, false));
        assert_eq!(d.deallocation(), Some(Deallocation::Discard));
        assert_eq!(d.max_write_same_blocks(), 100);
        d.discard = None;
        assert_eq!(d.deallocation(), None);
        assert_eq!(d.max_unmap_blocks(), 0);
        assert_eq!(d.max_unmap_descriptors(), 0);
        d.write_zeroes = None;
        assert_eq!(d.max_write_same_blocks(), 0);
    }

    #[test]
    fn limits_in_blocks_on_4kn() {
        let d = disk4k();
        // 0x3F_FFFF sectors -> 0x7_FFFF whole 4096-byte blocks.
        assert_eq!(d.max_unmap_blocks(), 0x7_FFFF);
        assert_eq!(d.max_write_same_blocks(), 0x7_FFFF);
        let limits = DiscardLimits::from_config(0, 0, 8);
        assert_eq!(limits.max_sectors, u32::MAX);
        assert_eq!(limits.max_segments, 1);
    }
}
