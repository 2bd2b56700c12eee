//! virtio-blk: feature bits, the configuration structure and requests (VIRTIO 1.2 5.2).
//!
//! A request is `struct virtio_blk_req` split over descriptors (5.2.6): a device-readable
//! header `{le32 type; le32 reserved; le64 sector}`, the data (device-writable for IN and
//! GET_ID, device-readable for OUT; for DISCARD and WRITE_ZEROES an array of
//! `{le64 sector; le32 num_sectors; le32 flags}` segments), and a device-writable status byte.
//!
//! [`RequestBuilder`] lays a request out inside one [`RequestArea`], the request's own DMA
//! memory (the SRB extension), and writes its indirect descriptor table there:
//!
//! ```text
//!   offset  0  header             16 bytes, device-readable
//!   offset 16  status              1 byte, device-writable (15 bytes padding)
//!   offset 32  descriptor table    16 bytes each: [header, data..., status]
//!   after it   range segments     16 bytes each (DISCARD / WRITE_ZEROES only)
//! ```
//!
//! The byte budget: a table for `n` data segments is `16 * (n + 2)` bytes, so 64 segments
//! alone take 1056 bytes and cannot fit a 1 KiB area next to anything. With the 32-byte
//! header/status block a 1 KiB area ([`AREA_SIZE`]) holds a table of 62 descriptors:
//! [`MAX_DATA_SEGMENTS`] = 60 data segments (Storport's `NumberOfPhysicalBreaks`), or 59 range
//! segments after a 3-entry table. A larger area holds more (`area_size(64)` = 1088 bytes);
//! [`RequestLimits`] derives the limit from the area actually given.
//!
//! Everything read from the device (configuration fields, the status byte) is validated; a
//! status byte other than OK, IOERR or UNSUPP is device misbehaviour ([`Status::Invalid`]).

use core::sync::atomic::Ordering;

use super::packed::IndirectTable;
use super::ring::{
    DESCRIPTOR_BYTES, DESCRIPTOR_SIZE, Descriptor, DescriptorTable, QueueSize, RawDescriptor,
};
use super::transport::{DeviceConfig, DeviceRegisters, TransportError};
use storport::dma::DmaRegion;

/// virtio-blk feature bits (5.2.3), as masks of the 64-bit feature word.
pub mod feature {
    /// VIRTIO_BLK_F_SIZE_MAX (1): `size_max` limits one segment.
    pub const SIZE_MAX: u64 = 1 << 1;
    /// VIRTIO_BLK_F_SEG_MAX (2): `seg_max` limits the data segments of a request.
    pub const SEG_MAX: u64 = 1 << 2;
    /// VIRTIO_BLK_F_GEOMETRY (4).
    pub const GEOMETRY: u64 = 1 << 4;
    /// VIRTIO_BLK_F_RO (5): the disk is read-only.
    pub const RO: u64 = 1 << 5;
    /// VIRTIO_BLK_F_BLK_SIZE (6): `blk_size` is the logical block size.
    pub const BLK_SIZE: u64 = 1 << 6;
    /// VIRTIO_BLK_F_FLUSH (9): VIRTIO_BLK_T_FLUSH is supported.
    pub const FLUSH: u64 = 1 << 9;
    /// VIRTIO_BLK_F_TOPOLOGY (10).
    pub const TOPOLOGY: u64 = 1 << 10;
    /// VIRTIO_BLK_F_CONFIG_WCE (11): `writeback` is readable and writable.
    pub const CONFIG_WCE: u64 = 1 << 11;
    /// VIRTIO_BLK_F_MQ (12): `num_queues` request queues.
    pub const MQ: u64 = 1 << 12;
    /// VIRTIO_BLK_F_DISCARD (13).
    pub const DISCARD: u64 = 1 << 13;
    /// VIRTIO_BLK_F_WRITE_ZEROES (14).
    pub const WRITE_ZEROES: u64 = 1 << 14;

    /// The virtio-blk features this driver understands (to intersect with the offer).
    pub const BLK_SUPPORTED: u64 = SIZE_MAX
        | SEG_MAX
        | GEOMETRY
        | RO
        | BLK_SIZE
        | FLUSH
        | TOPOLOGY
        | CONFIG_WCE
        | MQ
        | DISCARD
        | WRITE_ZEROES;
}

/// Offsets in `struct virtio_blk_config` (5.2.4).
mod config {
    pub const CAPACITY: usize = 0;
    pub const SIZE_MAX: usize = 8;
    pub const SEG_MAX: usize = 12;
    pub const CYLINDERS: usize = 16;
    pub const HEADS: usize = 18;
    pub const SECTORS: usize = 19;
    pub const BLK_SIZE: usize = 20;
    pub const PHYSICAL_BLOCK_EXP: usize = 24;
    pub const ALIGNMENT_OFFSET: usize = 25;
    pub const MIN_IO_SIZE: usize = 26;
    pub const OPT_IO_SIZE: usize = 28;
    pub const WRITEBACK: usize = 32;
    pub const NUM_QUEUES: usize = 34;
    pub const MAX_DISCARD_SECTORS: usize = 36;
    pub const MAX_DISCARD_SEG: usize = 40;
    pub const DISCARD_SECTOR_ALIGNMENT: usize = 44;
    pub const MAX_WRITE_ZEROES_SECTORS: usize = 48;
    pub const MAX_WRITE_ZEROES_SEG: usize = 52;
    pub const WRITE_ZEROES_MAY_UNMAP: usize = 56;
}

/// virtio-blk sectors are always 512 bytes (5.2.6), whatever `blk_size` says.
pub const SECTOR_SIZE: u32 = 512;

/// Legacy disk geometry (VIRTIO_BLK_F_GEOMETRY).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Cylinders.
    pub cylinders: u16,
    /// Heads.
    pub heads: u8,
    /// Sectors per track.
    pub sectors: u8,
}

/// I/O topology (VIRTIO_BLK_F_TOPOLOGY).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Topology {
    /// log2 of logical blocks per physical block.
    pub physical_block_exp: u8,
    /// Offset of the first aligned logical block.
    pub alignment_offset: u8,
    /// Suggested minimum I/O size, in logical blocks.
    pub min_io_size: u16,
    /// Optimal (suggested maximum) I/O size, in logical blocks.
    pub opt_io_size: u32,
}

/// DISCARD limits (VIRTIO_BLK_F_DISCARD).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiscardLimits {
    /// Most sectors in one segment (at least 1).
    pub max_sectors: u32,
    /// Most segments in one request (at least 1).
    pub max_segments: u32,
    /// Alignment of a segment's sector and length, in sectors.
    pub sector_alignment: u32,
}

/// WRITE_ZEROES limits (VIRTIO_BLK_F_WRITE_ZEROES).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteZeroesLimits {
    /// Most sectors in one segment (at least 1).
    pub max_sectors: u32,
    /// Most segments in one request (at least 1).
    pub max_segments: u32,
    /// The device may deallocate when asked to (`write_zeroes_may_unmap`).
    pub may_unmap: bool,
}

/// The disk's write cache mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteCache {
    /// Writes complete from a volatile cache; FLUSH makes them durable.
    WriteBack,
    /// Writes are durable on completion.
    WriteThrough,
}

/// `struct virtio_blk_config` as negotiated and validated (5.2.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlkConfig {
    /// Capacity in 512-byte sectors.
    pub capacity: u64,
    /// Largest segment in bytes (VIRTIO_BLK_F_SIZE_MAX; `None` also when the device says 0).
    pub size_max: Option<u32>,
    /// Most data segments per request (VIRTIO_BLK_F_SEG_MAX; 0 is read as 1).
    pub seg_max: Option<u32>,
    /// Legacy geometry (VIRTIO_BLK_F_GEOMETRY).
    pub geometry: Option<Geometry>,
    /// Logical block size in bytes (VIRTIO_BLK_F_BLK_SIZE): a power of two, 512..=65536.
    pub blk_size: Option<u32>,
    /// I/O topology (VIRTIO_BLK_F_TOPOLOGY).
    pub topology: Option<Topology>,
    /// The cache mode: `writeback` with CONFIG_WCE; write-back with FLUSH alone (5.2.5.1: "if
    /// VIRTIO_BLK_F_FLUSH is negotiated but CONFIG_WCE is not, assume a writeback cache");
    /// write-through without either.
    pub write_cache: WriteCache,
    /// The disk is read-only (VIRTIO_BLK_F_RO).
    pub read_only: bool,
    /// FLUSH is supported.
    pub flush: bool,
    /// CONFIG_WCE: the driver may switch the cache mode.
    pub cache_mode_writable: bool,
    /// Request queues: `num_queues` with VIRTIO_BLK_F_MQ (at least 1), else 1.
    pub num_queues: u16,
    /// DISCARD limits (VIRTIO_BLK_F_DISCARD).
    pub discard: Option<DiscardLimits>,
    /// WRITE_ZEROES limits (VIRTIO_BLK_F_WRITE_ZEROES).
    pub write_zeroes: Option<WriteZeroesLimits>,
}

/// Why the configuration could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlkConfigError {
    /// The transport failed (`config_generation` never settled).
    Transport(TransportError),
    /// A negotiated field lies outside the device configuration structure.
    TooShort,
    /// A field holds an impossible value (the device is broken).
    Invalid(&'static str),
}

/// The raw fields, read in one generation-stable pass.
struct RawConfig {
    capacity: Option<u64>,
    size_max: Option<u32>,
    seg_max: Option<u32>,
    cylinders: Option<u16>,
    heads: Option<u8>,
    sectors: Option<u8>,
    blk_size: Option<u32>,
    physical_block_exp: Option<u8>,
    alignment_offset: Option<u8>,
    min_io_size: Option<u16>,
    opt_io_size: Option<u32>,
    writeback: Option<u8>,
    num_queues: Option<u16>,
    max_discard_sectors: Option<u32>,
    max_discard_seg: Option<u32>,
    discard_sector_alignment: Option<u32>,
    max_write_zeroes_sectors: Option<u32>,
    max_write_zeroes_seg: Option<u32>,
    write_zeroes_may_unmap: Option<u8>,
}

impl RawConfig {
    fn read(c: &DeviceConfig<'_>) -> Self {
        Self {
            capacity: c.u64(config::CAPACITY),
            size_max: c.u32(config::SIZE_MAX),
            seg_max: c.u32(config::SEG_MAX),
            cylinders: c.u16(config::CYLINDERS),
            heads: c.u8(config::HEADS),
            sectors: c.u8(config::SECTORS),
            blk_size: c.u32(config::BLK_SIZE),
            physical_block_exp: c.u8(config::PHYSICAL_BLOCK_EXP),
            alignment_offset: c.u8(config::ALIGNMENT_OFFSET),
            min_io_size: c.u16(config::MIN_IO_SIZE),
            opt_io_size: c.u32(config::OPT_IO_SIZE),
            writeback: c.u8(config::WRITEBACK),
            num_queues: c.u16(config::NUM_QUEUES),
            max_discard_sectors: c.u32(config::MAX_DISCARD_SECTORS),
            max_discard_seg: c.u32(config::MAX_DISCARD_SEG),
            discard_sector_alignment: c.u32(config::DISCARD_SECTOR_ALIGNMENT),
            max_write_zeroes_sectors: c.u32(config::MAX_WRITE_ZEROES_SECTORS),
            max_write_zeroes_seg: c.u32(config::MAX_WRITE_ZEROES_SEG),
            write_zeroes_may_unmap: c.u8(config::WRITE_ZEROES_MAY_UNMAP),
        }
    }
}

/// A negotiated field: `None` when the feature is off, an error when it is on but outside the
/// structure.
fn field<T>(negotiated: bool, value: Option<T>) -> Result<Option<T>, BlkConfigError> {
    match (negotiated, value) {
        (false, _) => Ok(None),
        (true, Some(v)) => Ok(Some(v)),
        (true, None) => Err(BlkConfigError::TooShort),
    }
}

impl BlkConfig {
    /// Reads and validates the configuration for the `features` accepted at FEATURES_OK
    /// (`writeback` may only be read after FEATURES_OK, 5.2.5.1).
    pub fn read(transport: &DeviceRegisters, features: u64) -> Result<Self, BlkConfigError> {
        let raw = transport
            .read_device_config(RawConfig::read)
            .map_err(BlkConfigError::Transport)?;
        let has = |f: u64| features & f != 0;

        let capacity = raw.capacity.ok_or(BlkConfigError::TooShort)?;
        let size_max = field(has(feature::SIZE_MAX), raw.size_max)?.filter(|&s| s != 0);
        // A device that says 0 segments means at least one (as Linux reads it).
        let seg_max = field(has(feature::SEG_MAX), raw.seg_max)?.map(|s| s.max(1));
        let geometry = match (
            field(has(feature::GEOMETRY), raw.cylinders)?,
            raw.heads,
            raw.sectors,
        ) {
            (Some(cylinders), Some(heads), Some(sectors)) => Some(Geometry {
                cylinders,
                heads,
                sectors,
            }),
            (Some(_), _, _) => return Err(BlkConfigError::TooShort),
            _ => None,
        };
        let blk_size = field(has(feature::BLK_SIZE), raw.blk_size)?;
        if let Some(size) = blk_size
            && !(size.is_power_of_two() && (512..=65536).contains(&size))
        {
            return Err(BlkConfigError::Invalid("blk_size"));
        }
        let topology = if has(feature::TOPOLOGY) {
            match (
                raw.physical_block_exp,
                raw.alignment_offset,
                raw.min_io_size,
                raw.opt_io_size,
            ) {
                (Some(physical_block_exp), Some(alignment_offset), Some(min), Some(opt)) => {
                    // 2^exp logical blocks per physical block: more than 2^15 is nonsense.
                    if physical_block_exp > 15 {
                        return Err(BlkConfigError::Invalid("physical_block_exp"));
                    }
                    Some(Topology {
                        physical_block_exp,
                        alignment_offset,
                        min_io_size: min,
                        opt_io_size: opt,
                    })
                }
                _ => return Err(BlkConfigError::TooShort),
            }
        } else {
            None
        };
        let flush = has(feature::FLUSH);
        let cache_mode_writable = has(feature::CONFIG_WCE);
        let write_cache = match field(cache_mode_writable, raw.writeback)? {
            Some(0) => WriteCache::WriteThrough,
            Some(_) => WriteCache::WriteBack,
            None if flush => WriteCache::WriteBack,
            None => WriteCache::WriteThrough,
        };
        let num_queues = match field(has(feature::MQ), raw.num_queues)? {
            Some(0) => return Err(BlkConfigError::Invalid("num_queues")),
            Some(n) => n,
            None => 1,
        };
        let discard = if has(feature::DISCARD) {
            match (
                raw.max_discard_sectors,
                raw.max_discard_seg,
                raw.discard_sector_alignment,
            ) {
                (Some(sectors), Some(segments), Some(alignment)) => Some(DiscardLimits {
                    max_sectors: sectors.max(1),
                    max_segments: segments.max(1),
                    sector_alignment: alignment,
                }),
                _ => return Err(BlkConfigError::TooShort),
            }
        } else {
            None
        };
        let write_zeroes = if has(feature::WRITE_ZEROES) {
            match (
                raw.max_write_zeroes_sectors,
                raw.max_write_zeroes_seg,
                raw.write_zeroes_may_unmap,
            ) {
                (Some(sectors), Some(segments), Some(may_unmap)) => Some(WriteZeroesLimits {
                    max_sectors: sectors.max(1),
                    max_segments: segments.max(1),
                    may_unmap: may_unmap != 0,
                }),
                _ => return Err(BlkConfigError::TooShort),
            }
        } else {
            None
        };
        Ok(Self {
            capacity,
            size_max,
            seg_max,
            geometry,
            blk_size,
            topology,
            write_cache,
            read_only: has(feature::RO),
            flush,
            cache_mode_writable,
            num_queues,
            discard,
            write_zeroes,
        })
    }

    /// Switches the cache mode (MODE SELECT's WCE); `false` without CONFIG_WCE. Re-read the
    /// configuration to see what the device made of it.
    pub fn set_write_cache(&self, transport: &DeviceRegisters, mode: WriteCache) -> bool {
        if !self.cache_mode_writable {
            return false;
        }
        let value = match mode {
            WriteCache::WriteBack => 1,
            WriteCache::WriteThrough => 0,
        };
        transport.write_device_config_u8(config::WRITEBACK, value);
        true
    }
}

/// `virtio_blk_req.type` (5.2.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum RequestType {
    /// VIRTIO_BLK_T_IN: read.
    In = 0,
    /// VIRTIO_BLK_T_OUT: write.
    Out = 1,
    /// VIRTIO_BLK_T_FLUSH.
    Flush = 4,
    /// VIRTIO_BLK_T_GET_ID: up to 20 bytes of serial number.
    GetId = 8,
    /// VIRTIO_BLK_T_DISCARD.
    Discard = 11,
    /// VIRTIO_BLK_T_WRITE_ZEROES.
    WriteZeroes = 13,
}

/// The device-readable request header `{le32 type; le32 reserved; le64 sector}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestHeader {
    /// The request type.
    pub kind: RequestType,
    /// First 512-byte sector (0 for requests without one).
    pub sector: u64,
}

impl RequestHeader {
    /// The header as two little-endian 64-bit words, as it lies in memory.
    pub fn encode(&self) -> [u64; 2] {
        // type in the low half of the first word, reserved (0) in the high half.
        [(self.kind as u32 as u64).to_le(), self.sector.to_le()]
    }
}

/// The status byte the device writes last (5.2.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// VIRTIO_BLK_S_OK (0).
    Ok,
    /// VIRTIO_BLK_S_IOERR (1).
    IoError,
    /// VIRTIO_BLK_S_UNSUPP (2).
    Unsupported,
    /// Anything else, including the value the builder leaves before submission: the device
    /// misbehaved; treat as an I/O error and report it.
    Invalid(u8),
}

impl Status {
    /// Decodes a status byte.
    pub fn from_byte(byte: u8) -> Self {
        match byte {
            0 => Self::Ok,
            1 => Self::IoError,
            2 => Self::Unsupported,
            other => Self::Invalid(other),
        }
    }

    /// Whether the device misbehaved (the byte is not a defined status).
    #[cfg(test)]
    pub fn is_device_misbehaviour(self) -> bool {
        matches!(self, Self::Invalid(_))
    }
}

/// One DISCARD or WRITE_ZEROES segment (`struct virtio_blk_discard_write_zeroes`, 5.2.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RangeSegment {
    /// First 512-byte sector.
    pub sector: u64,
    /// Number of sectors (at least 1).
    pub num_sectors: u32,
    /// WRITE_ZEROES only: the device may deallocate (flags bit 0). Cleared for DISCARD (the
    /// unmap flag is reserved there) and when the device does not allow it.
    pub unmap: bool,
}

/// Offset of the header in a request area.
pub const HEADER_OFFSET: usize = 0;
/// Offset of the status byte in a request area.
pub const STATUS_OFFSET: usize = 16;
/// Offset of the driver's own word in a request area: inside the status byte's 16-byte slot,
/// past the one byte the status descriptor shows the device, so the device never sees it.
pub const PRIVATE_OFFSET: usize = 24;
/// Offset of the indirect descriptor table in a request area.
pub const TABLE_OFFSET: usize = 32;
/// The request area (SRB extension) size the driver plans with.
pub const AREA_SIZE: usize = 1024;
/// Data segments an [`AREA_SIZE`] area holds: 62 table entries less header and status.
pub const MAX_DATA_SEGMENTS: u16 = max_data_segments(AREA_SIZE);

/// Bytes of request area a request with `data_segments` data segments needs.
#[expect(
    clippy::arithmetic_side_effects,
    reason = "data_segments <= u16::MAX: at most 32 + 16 * 65537 = 1_048_624 bytes, which fits \
              any usize Windows runs on"
)]
pub const fn area_size(data_segments: u16) -> usize {
    TABLE_OFFSET + DESCRIPTOR_SIZE * (data_segments as usize + 2)
}

/// Data segments an area of `len` bytes holds.
const fn max_data_segments(len: usize) -> u16 {
    let entries = len.saturating_sub(TABLE_OFFSET) / DESCRIPTOR_SIZE;
    let segments = entries.saturating_sub(2);
    if segments > u16::MAX as usize {
        u16::MAX
    } else {
        #[expect(
            clippy::cast_possible_truncation,
            reason = "segments <= u16::MAX was checked just above"
        )]
        let segments = segments as u16;
        segments
    }
}

/// Range segments an area of `len` bytes holds after a 3-entry table.
const fn max_range_segments(len: usize) -> u32 {
    let segments = len.saturating_sub(TABLE_OFFSET + 3 * DESCRIPTOR_SIZE) / 16;
    if segments > u32::MAX as usize {
        u32::MAX
    } else {
        #[expect(
            clippy::cast_possible_truncation,
            reason = "segments <= u32::MAX was checked just above"
        )]
        let segments = segments as u32;
        segments
    }
}

// The budget: header + status block and a 62-entry table fill 1 KiB exactly; 64 segments
// would need `area_size(64)` = 1088 bytes.
const _: () = assert!(area_size(MAX_DATA_SEGMENTS) == AREA_SIZE);
const _: () = assert!(MAX_DATA_SEGMENTS == 60);
const _: () = assert!(area_size(64) == 1088);
const _: () = assert!(max_range_segments(AREA_SIZE) == 59);

/// A request's own DMA memory (the SRB extension): header, status, table, range segments.
///
/// # Invariants
///
/// The region is at least `area_size(1)` bytes and starts 8-aligned (so `u64s()` is `Some`).
#[derive(Clone, Copy, Debug)]
pub struct RequestArea<'a> {
    region: DmaRegion<'a>,
}

impl<'a> RequestArea<'a> {
    /// Wraps `region`, or `None` if it is too small for any request or not 8-aligned.
    pub fn new(region: DmaRegion<'a>) -> Option<Self> {
        if region.len() < area_size(1) || region.u64s().is_none() {
            return None;
        }
        // INVARIANT: checked above.
        Some(Self { region })
    }

    /// The status byte the device wrote (read after the request's used element).
    pub fn status(&self) -> Status {
        let byte = self
            .region
            .bytes()
            .get(STATUS_OFFSET)
            .map_or(u8::MAX, |b| b.load(Ordering::Relaxed));
        Status::from_byte(byte)
    }

    /// The descriptors of a built request, read back from its table, for
    /// [`super::SplitQueue::push_chain`] when VIRTIO_F_INDIRECT_DESC was not negotiated.
    pub fn descriptors(&self, built: &BuiltRequest) -> impl Iterator<Item = Descriptor> + '_ {
        let table = self.table();
        (0..built.descriptors).map_while(move |i| Some(table?.read(i)?.descriptor()))
    }

    /// Rewrites a built request's indirect table in the packed ring's layout (VIRTIO 1.2
    /// 2.8.7: `addr, len, id, flags`, in order, no `next`), in place, for
    /// [`super::Virtqueue::push_indirect`] on a packed ring. Returns `false` if the table is
    /// not in the area (nothing is then pushed).
    pub fn repack_table(&self, built: &BuiltRequest) -> bool {
        let (Some(split), Some(packed)) = (self.table(), self.packed_table()) else {
            return false;
        };
        // Entry i is read whole before it is written: the two layouts share each 16 bytes.
        (0..built.descriptors).all(|i| {
            split
                .read(i)
                .is_some_and(|raw| packed.write(i, raw.descriptor()))
        })
    }

    fn packed_table(&self) -> Option<IndirectTable<'a>> {
        let len = self.region.len().checked_sub(TABLE_OFFSET)?;
        IndirectTable::new(self.region.subregion(TABLE_OFFSET, len)?)
    }

    fn table(&self) -> Option<DescriptorTable<'a>> {
        let len = self.region.len().checked_sub(TABLE_OFFSET)?;
        DescriptorTable::new(self.region.subregion(TABLE_OFFSET, len)?)
    }

    fn write_header(&self, header: RequestHeader) {
        if let Some(words) = self.region.u64s() {
            let [first, second] = header.encode();
            if let (Some(a), Some(b)) = (words.first(), words.get(1)) {
                a.store(first, Ordering::Relaxed);
                b.store(second, Ordering::Relaxed);
            }
        }
    }

    /// Sets the status byte to a value the device never writes, so a completion without a
    /// status shows as [`Status::Invalid`].
    fn clear_status(&self) {
        if let Some(b) = self.region.bytes().get(STATUS_OFFSET) {
            b.store(u8::MAX, Ordering::Relaxed);
        }
    }

    fn physical(&self, offset: usize) -> u64 {
        self.region.physical_address().wrapping_add(offset as u64)
    }

    fn private_word(&self) -> Option<&core::sync::atomic::AtomicU64> {
        self.region.u64s()?.get(PRIVATE_OFFSET / 8)
    }

    /// Stores the driver's own word ([`PRIVATE_OFFSET`]: never described to the device).
    pub fn store_private(&self, value: u64) {
        if let Some(word) = self.private_word() {
            word.store(value, Ordering::Relaxed);
        }
    }

    /// Loads the driver's own word.
    pub fn load_private(&self) -> Option<u64> {
        Some(self.private_word()?.load(Ordering::Relaxed))
    }

    /// The request built in this area with `descriptors` table entries: the table is always at
    /// offset 32, so only the count and `max_written` need remembering.
    pub fn built(&self, descriptors: u16, max_written: u32) -> BuiltRequest {
        BuiltRequest {
            table_address: self.physical(TABLE_OFFSET),
            table_len: u32::from(descriptors).saturating_mul(DESCRIPTOR_BYTES),
            descriptors,
            max_written,
        }
    }
}

/// A request area as its completion reads it: CPU memory only, no bus address (nothing is
/// handed to the device any more), for the status byte the device wrote and the driver's own
/// word.
///
/// # Invariants
///
/// `words` covers at least the header and the status byte's slot (`TABLE_OFFSET` bytes).
#[derive(Clone, Copy, Debug)]
pub struct CompletedArea<'a> {
    words: &'a [core::sync::atomic::AtomicU64],
}

impl<'a> CompletedArea<'a> {
    /// Wraps the area's memory, or `None` if it is too short to be a request area.
    pub fn new(words: &'a [core::sync::atomic::AtomicU64]) -> Option<Self> {
        // INVARIANT: checked here.
        (words.len() >= TABLE_OFFSET / 8).then_some(Self { words })
    }

    /// The status byte the device wrote (read after the request's used element).
    pub fn status(&self) -> Status {
        let byte = self.words.get(STATUS_OFFSET / 8).map_or(u8::MAX, |w| {
            // Memory order is native byte order: the status byte is the word's byte
            // `STATUS_OFFSET % 8` as it lies in memory.
            let [b0, ..] = w.load(Ordering::Relaxed).to_ne_bytes();
            const _: () = assert!(STATUS_OFFSET.is_multiple_of(8));
            b0
        });
        Status::from_byte(byte)
    }

    /// The driver's own word ([`PRIVATE_OFFSET`]).
    pub fn load_private(&self) -> Option<u64> {
        Some(self.words.get(PRIVATE_OFFSET / 8)?.load(Ordering::Relaxed))
    }
}

/// What a built request hands to the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BuiltRequest {
    /// Bus address of the indirect table (for [`super::SplitQueue::push_indirect`]).
    pub table_address: u64,
    /// Length of the table in bytes.
    pub table_len: u32,
    /// Descriptors in the table.
    pub descriptors: u16,
    /// Bytes the device may write into data buffers plus the status byte: the most a correct
    /// used element's `len` can say.
    pub max_written: u32,
}

/// Why a request could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuildError {
    /// The request type is not built by this function.
    WrongType,
    /// A data request without data, or a range request without segments.
    NoData,
    /// More data segments (after splitting at `size_max`) or range segments than allowed.
    TooManySegments,
    /// A data segment of length 0, or a range segment of 0 sectors.
    EmptySegment,
    /// IN/OUT data that is not a whole number of 512-byte sectors (5.2.6.1).
    NotSectorMultiple,
    /// The data length does not fit 32 bits.
    TooLong,
    /// A range segment above the device's `max_*_sectors`.
    RangeTooLarge,
    /// The operation was not negotiated (DISCARD, WRITE_ZEROES, FLUSH).
    Unsupported,
}

/// The limits a request must respect, from the configuration, the queue and the area.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestLimits {
    /// Data descriptors per request: `seg_max`, the queue size less 2 (2.7.5.3.1: an indirect
    /// table is no longer than the queue) and the area's table capacity.
    pub max_data_segments: u16,
    /// Bytes per data descriptor (`size_max`); longer segments are split.
    pub max_segment_size: u32,
    /// FLUSH was negotiated.
    pub flush: bool,
    /// DISCARD limits, capped by the area, if negotiated.
    pub discard: Option<DiscardLimits>,
    /// WRITE_ZEROES limits, capped by the area, if negotiated.
    pub write_zeroes: Option<WriteZeroesLimits>,
}

impl RequestLimits {
    /// The limits for requests on a queue of `queue_size` in areas of `area_len` bytes.
    pub fn new(config: &BlkConfig, queue_size: QueueSize, area_len: usize) -> Self {
        let by_queue = queue_size.get().saturating_sub(2);
        let by_area = max_data_segments(area_len);
        let by_device = config
            .seg_max
            .map_or(u16::MAX, |s| u16::try_from(s).unwrap_or(u16::MAX));
        let ranges = max_range_segments(area_len);
        Self {
            max_data_segments: by_queue.min(by_area).min(by_device),
            max_segment_size: config.size_max.unwrap_or(u32::MAX),
            flush: config.flush,
            discard: config.discard.map(|d| DiscardLimits {
                max_segments: d.max_segments.min(ranges),
                ..d
            }),
            write_zeroes: config.write_zeroes.map(|w| WriteZeroesLimits {
                max_segments: w.max_segments.min(ranges),
                ..w
            }),
        }
    }
}

/// Builds virtio-blk requests into request areas (runs in BuildIo, without locks).
#[derive(Clone, Copy, Debug)]
pub struct RequestBuilder {
    limits: RequestLimits,
}

impl RequestBuilder {
    /// A builder for requests within `limits`.
    pub fn new(limits: RequestLimits) -> Self {
        Self { limits }
    }

    /// The limits requests are built within.
    pub fn limits(&self) -> &RequestLimits {
        &self.limits
    }

    /// Builds an IN, OUT or GET_ID request over `data`, (bus address, length) pairs as in a
    /// scatter/gather list. IN and GET_ID data is device-writable, OUT data device-readable.
    pub fn build_data<I>(
        &self,
        area: &RequestArea,
        kind: RequestType,
        sector: u64,
        data: I,
    ) -> Result<BuiltRequest, BuildError>
    where
        I: IntoIterator<Item = (u64, u32)>,
    {
        let (device_writable, sector) = match kind {
            RequestType::In => (true, sector),
            RequestType::Out => (false, sector),
            RequestType::GetId => (true, 0),
            _ => return Err(BuildError::WrongType),
        };
        let table = area.table().ok_or(BuildError::TooManySegments)?;
        let limit = self.limits.max_data_segments.min(table_capacity(&table));
        let max_size = self.limits.max_segment_size.max(1);

        // Table entry 0 is the header, 1..=count the data, count + 1 the status.
        let mut count: u16 = 0;
        let mut total: u64 = 0;
        for (mut address, mut len) in data {
            if len == 0 {
                return Err(BuildError::EmptySegment);
            }
            total = total.saturating_add(u64::from(len));
            // Split segments the device cannot take whole (size_max).
            while len > 0 {
                let piece = len.min(max_size);
                if count >= limit {
                    return Err(BuildError::TooManySegments);
                }
                #[expect(
                    clippy::arithmetic_side_effects,
                    reason = "count < limit <= u16::MAX was checked just above"
                )]
                let next = count + 1;
                count = next;
                let written = table.write(
                    count,
                    RawDescriptor {
                        address,
                        len: piece,
                        flags: NEXT | if device_writable { WRITE } else { 0 },
                        next: count.saturating_add(1),
                    },
                );
                if !written {
                    return Err(BuildError::TooManySegments);
                }
                address = address.wrapping_add(u64::from(piece));
                #[expect(
                    clippy::arithmetic_side_effects,
                    reason = "piece = len.min(max_size) <= len"
                )]
                let rest = len - piece;
                len = rest;
            }
        }
        if count == 0 {
            return Err(BuildError::NoData);
        }
        let total = u32::try_from(total).map_err(|_| BuildError::TooLong)?;
        if kind != RequestType::GetId && total % SECTOR_SIZE != 0 {
            return Err(BuildError::NotSectorMultiple);
        }
        let written = if device_writable { total } else { 0 };
        self.finish(area, &table, RequestHeader { kind, sector }, count, written)
    }

    /// Builds a FLUSH request (header and status only).
    pub fn build_flush(&self, area: &RequestArea) -> Result<BuiltRequest, BuildError> {
        if !self.limits.flush {
            return Err(BuildError::Unsupported);
        }
        let table = area.table().ok_or(BuildError::TooManySegments)?;
        let header = RequestHeader {
            kind: RequestType::Flush,
            sector: 0,
        };
        // Header straight to status: descriptor 0 links to 1.
        self.finish(area, &table, header, 0, 0)
    }

    /// Builds a DISCARD or WRITE_ZEROES request over `segments`, which are written into the
    /// area after the table and passed as one device-readable buffer.
    pub fn build_ranges<I>(
        &self,
        area: &RequestArea,
        kind: RequestType,
        segments: I,
    ) -> Result<BuiltRequest, BuildError>
    where
        I: IntoIterator<Item = RangeSegment>,
    {
        let (max_segments, max_sectors, may_unmap) = match kind {
            RequestType::Discard => {
                let d = self.limits.discard.ok_or(BuildError::Unsupported)?;
                (d.max_segments, d.max_sectors, false)
            }
            RequestType::WriteZeroes => {
                let w = self.limits.write_zeroes.ok_or(BuildError::Unsupported)?;
                (w.max_segments, w.max_sectors, w.may_unmap)
            }
            _ => return Err(BuildError::WrongType),
        };
        let table = area.table().ok_or(BuildError::TooManySegments)?;
        let offset = TABLE_OFFSET + 3 * DESCRIPTOR_SIZE;
        let capacity = max_range_segments(area.region.len()).min(max_segments);
        let words = area.region.u64s().ok_or(BuildError::TooManySegments)?;

        let mut count: u32 = 0;
        for segment in segments {
            if count >= capacity {
                return Err(BuildError::TooManySegments);
            }
            if segment.num_sectors == 0 {
                return Err(BuildError::EmptySegment);
            }
            if segment.num_sectors > max_sectors {
                return Err(BuildError::RangeTooLarge);
            }
            let flags = u32::from(segment.unmap && may_unmap);
            // The segment's two words: past the table, 16 bytes per segment before it.
            let word = (count as usize)
                .checked_mul(2)
                .and_then(|w| w.checked_add(offset / 8));
            let Some(word) = word else {
                return Err(BuildError::TooManySegments);
            };
            let (Some(a), Some(b)) = (
                words.get(word),
                word.checked_add(1).and_then(|w| words.get(w)),
            ) else {
                return Err(BuildError::TooManySegments);
            };
            a.store(segment.sector.to_le(), Ordering::Relaxed);
            b.store(
                (u64::from(segment.num_sectors) | u64::from(flags) << 32).to_le(),
                Ordering::Relaxed,
            );
            #[expect(
                clippy::arithmetic_side_effects,
                reason = "count < capacity <= u32::MAX was checked at the loop's top"
            )]
            let next = count + 1;
            count = next;
        }
        if count == 0 {
            return Err(BuildError::NoData);
        }
        let Some(len) = count.checked_mul(16) else {
            return Err(BuildError::TooManySegments);
        };
        let written = table.write(
            1,
            RawDescriptor {
                address: area.physical(offset),
                len,
                flags: NEXT,
                next: 2,
            },
        );
        if !written {
            return Err(BuildError::TooManySegments);
        }
        let header = RequestHeader { kind, sector: 0 };
        self.finish(area, &table, header, 1, 0)
    }

    /// Writes the header, its descriptor (entry 0), the status descriptor (entry
    /// `data + 1`) and clears the status byte.
    fn finish(
        &self,
        area: &RequestArea,
        table: &DescriptorTable,
        header: RequestHeader,
        data: u16,
        data_written: u32,
    ) -> Result<BuiltRequest, BuildError> {
        area.write_header(header);
        area.clear_status();
        let status_index = data.saturating_add(1);
        let header_written = table.write(
            0,
            RawDescriptor {
                address: area.physical(HEADER_OFFSET),
                len: 16,
                flags: NEXT,
                next: 1,
            },
        );
        let status_written = table.write(
            status_index,
            RawDescriptor {
                address: area.physical(STATUS_OFFSET),
                len: 1,
                flags: WRITE,
                next: 0,
            },
        );
        if !(header_written && status_written) {
            return Err(BuildError::TooManySegments);
        }
        let descriptors = status_index.saturating_add(1);
        Ok(BuiltRequest {
            table_address: table.physical_address(),
            table_len: u32::from(descriptors).saturating_mul(DESCRIPTOR_BYTES),
            descriptors,
            max_written: data_written.saturating_add(1),
        })
    }
}

const NEXT: u16 = 1;
const WRITE: u16 = 2;

/// Data segments a table can hold beside the header and status.
fn table_capacity(table: &DescriptorTable) -> u16 {
    u16::try_from(table.capacity().saturating_sub(2)).unwrap_or(u16::MAX)
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::arithmetic_side_effects,
        clippy::cast_possible_truncation,
        clippy::panic,
        reason = "tests index fixed buffers and fail by panicking"
    )]

    extern crate std;
    use super::super::ring::tests::dma;
    use super::super::transport::Transport;
    use super::super::transport::feature::VERSION_1;
    use super::super::transport::tests::{DEVICE, FakeDevice};
    use super::*;
    use std::vec::Vec;

    const PHYS: u64 = 0x7_0000;

    fn area(len: usize) -> RequestArea<'static> {
        RequestArea::new(dma(len, PHYS).subregion(0, len).unwrap()).unwrap()
    }

    fn table(area: &RequestArea, built: &BuiltRequest) -> Vec<RawDescriptor> {
        let t = area.table().unwrap();
        (0..built.descriptors).map(|i| t.read(i).unwrap()).collect()
    }

    fn config() -> BlkConfig {
        BlkConfig {
            capacity: 1 << 21,
            size_max: None,
            seg_max: Some(126),
            geometry: None,
            blk_size: Some(512),
            topology: None,
            write_cache: WriteCache::WriteBack,
            read_only: false,
            flush: true,
            cache_mode_writable: true,
            num_queues: 4,
            discard: Some(DiscardLimits {
                max_sectors: 1 << 22,
                max_segments: 1,
                sector_alignment: 8,
            }),
            write_zeroes: Some(WriteZeroesLimits {
                max_sectors: 1 << 22,
                max_segments: 1000,
                may_unmap: true,
            }),
        }
    }

    fn builder() -> RequestBuilder {
        RequestBuilder::new(RequestLimits::new(
            &config(),
            QueueSize::new(128).unwrap(),
            AREA_SIZE,
        ))
    }

    #[test]
    fn budget() {
        let l = RequestLimits::new(&config(), QueueSize::new(128).unwrap(), AREA_SIZE);
        assert_eq!(l.max_data_segments, 60);
        let l = RequestLimits::new(&config(), QueueSize::new(128).unwrap(), area_size(64));
        assert_eq!(l.max_data_segments, 64);
        // seg_max and the queue size bound it too.
        let mut c = config();
        c.seg_max = Some(8);
        assert_eq!(
            RequestLimits::new(&c, QueueSize::new(128).unwrap(), AREA_SIZE).max_data_segments,
            8
        );
        assert_eq!(
            RequestLimits::new(&config(), QueueSize::new(16).unwrap(), AREA_SIZE).max_data_segments,
            14
        );
        let l = RequestLimits::new(&config(), QueueSize::new(128).unwrap(), AREA_SIZE);
        assert_eq!(l.write_zeroes.unwrap().max_segments, 59);
        assert_eq!(l.discard.unwrap().max_segments, 1);
        assert!(RequestArea::new(dma(64, PHYS).subregion(0, 63).unwrap()).is_none());
        assert!(RequestArea::new(dma(128, PHYS).subregion(4, 100).unwrap()).is_none());
    }

    #[test]
    fn repacked_table_has_the_packed_layout() {
        let a = area(AREA_SIZE);
        let built = builder()
            .build_data(
                &a,
                RequestType::In,
                0x1234,
                [(0x10_0000, 4096), (0x20_0000, 512)],
            )
            .unwrap();
        assert!(a.repack_table(&built));
        // VIRTIO 1.2 2.8.7: le64 addr; le32 len; le16 id (unused, 0); le16 flags (WRITE only).
        let words = a.region.u64s().unwrap();
        let entry = |i: usize| {
            let at = TABLE_OFFSET / 8 + 2 * i;
            (
                words[at].load(Ordering::Relaxed),
                words[at + 1].load(Ordering::Relaxed),
            )
        };
        let write = u64::from(WRITE) << 48;
        assert_eq!(entry(0), (PHYS, 16));
        assert_eq!(entry(1), (0x10_0000, 4096 | write));
        assert_eq!(entry(2), (0x20_0000, 512 | write));
        assert_eq!(entry(3), (PHYS + 16, 1 | write));
        // A table that does not fit the area is refused.
        let short = BuiltRequest {
            descriptors: 200,
            ..built
        };
        assert!(!a.repack_table(&short));
    }

    #[test]
    fn read_table_is_laid_out_as_the_spec_says() {
        let a = area(AREA_SIZE);
        let built = builder()
            .build_data(
                &a,
                RequestType::In,
                0x1234,
                [(0x10_0000, 4096), (0x20_0000, 512)],
            )
            .unwrap();
        assert_eq!(
            built,
            BuiltRequest {
                table_address: PHYS + 32,
                table_len: 64,
                descriptors: 4,
                max_written: 4609,
            }
        );
        let raw = |address, len, flags, next| RawDescriptor {
            address,
            len,
            flags,
            next,
        };
        assert_eq!(
            table(&a, &built),
            [
                raw(PHYS, 16, NEXT, 1),
                raw(0x10_0000, 4096, NEXT | WRITE, 2),
                raw(0x20_0000, 512, NEXT | WRITE, 3),
                raw(PHYS + 16, 1, WRITE, 0),
            ]
        );
        // The bytes themselves: header then the first descriptor, little-endian.
        let bytes: Vec<u8> = a.region.bytes()[..64]
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        assert_eq!(
            &bytes[0..16],
            &[0, 0, 0, 0, 0, 0, 0, 0, 0x34, 0x12, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(
            bytes[16], 0xFF,
            "status cleared to a value the device never writes"
        );
        let mut first = Vec::new();
        first.extend_from_slice(&PHYS.to_le_bytes());
        first.extend_from_slice(&16u32.to_le_bytes());
        first.extend_from_slice(&1u16.to_le_bytes());
        first.extend_from_slice(&1u16.to_le_bytes());
        assert_eq!(&bytes[32..48], &first[..]);
        assert_eq!(a.status(), Status::Invalid(0xFF));
        a.region.bytes()[16].store(0, Ordering::Relaxed);
        assert_eq!(a.status(), Status::Ok);
    }

    #[test]
    fn write_flush_get_id() {
        let a = area(AREA_SIZE);
        let b = builder();
        let built = b
            .build_data(&a, RequestType::Out, 7, [(0x5000, 1024)])
            .unwrap();
        let t = table(&a, &built);
        assert_eq!(t[1].flags, NEXT);
        assert_eq!(t[2].flags, WRITE);
        assert_eq!(built.max_written, 1);
        assert_eq!(a.region.u64s().unwrap()[0].load(Ordering::Relaxed), 1);

        let built = b.build_flush(&a).unwrap();
        assert_eq!(built.descriptors, 2);
        let t = table(&a, &built);
        assert_eq!((t[0].flags, t[0].next), (NEXT, 1));
        assert_eq!((t[1].address, t[1].flags), (PHYS + 16, WRITE));
        assert_eq!(a.region.u64s().unwrap()[0].load(Ordering::Relaxed), 4);

        let built = b
            .build_data(&a, RequestType::GetId, 99, [(0x6000, 20)])
            .unwrap();
        assert_eq!(built.max_written, 21);
        assert_eq!(a.region.u64s().unwrap()[0].load(Ordering::Relaxed), 8);
        assert_eq!(a.region.u64s().unwrap()[1].load(Ordering::Relaxed), 0);

        let mut limits = *b.limits();
        limits.flush = false;
        assert_eq!(
            RequestBuilder::new(limits).build_flush(&a),
            Err(BuildError::Unsupported)
        );
    }

    #[test]
    fn data_checks() {
        let a = area(AREA_SIZE);
        let b = builder();
        let ok = [(0x1000u64, 512u32)];
        assert_eq!(
            b.build_data(&a, RequestType::Flush, 0, ok),
            Err(BuildError::WrongType)
        );
        assert_eq!(
            b.build_data(&a, RequestType::In, 0, []),
            Err(BuildError::NoData)
        );
        assert_eq!(
            b.build_data(&a, RequestType::In, 0, [(0x1000, 0)]),
            Err(BuildError::EmptySegment)
        );
        assert_eq!(
            b.build_data(&a, RequestType::Out, 0, [(0x1000, 500)]),
            Err(BuildError::NotSectorMultiple)
        );
        // 60 segments fit, 61 do not; an endless iterator stops at the limit.
        assert!(
            b.build_data(&a, RequestType::In, 0, (0..60).map(|i| (i * 4096, 4096)))
                .is_ok()
        );
        assert_eq!(
            b.build_data(&a, RequestType::In, 0, (0..61).map(|i| (i * 4096, 4096))),
            Err(BuildError::TooManySegments)
        );
        assert_eq!(
            b.build_data(&a, RequestType::In, 0, core::iter::repeat((0, 4096))),
            Err(BuildError::TooManySegments)
        );
        // A length sum beyond 32 bits.
        assert_eq!(
            b.build_data(&a, RequestType::In, 0, (0..3).map(|_| (0, 0x8000_0000))),
            Err(BuildError::TooLong)
        );
        // A smaller area holds fewer.
        let small = area(area_size(2));
        assert_eq!(
            b.build_data(&small, RequestType::In, 0, (0..3).map(|i| (i * 512, 512))),
            Err(BuildError::TooManySegments)
        );
        assert!(
            b.build_data(&small, RequestType::In, 0, (0..2).map(|i| (i * 512, 512)))
                .is_ok()
        );
    }

    #[test]
    fn segments_are_split_at_size_max() {
        let mut c = config();
        c.size_max = Some(4096);
        c.seg_max = Some(4);
        let b = RequestBuilder::new(RequestLimits::new(
            &c,
            QueueSize::new(64).unwrap(),
            AREA_SIZE,
        ));
        let a = area(AREA_SIZE);
        let built = b
            .build_data(
                &a,
                RequestType::Out,
                0,
                [(0x10_0000, 10240), (0x30_0000, 512)],
            )
            .unwrap();
        let t = table(&a, &built);
        let data: Vec<_> = t[1..5].iter().map(|d| (d.address, d.len)).collect();
        assert_eq!(
            data,
            [
                (0x10_0000, 4096),
                (0x10_1000, 4096),
                (0x10_2000, 2048),
                (0x30_0000, 512)
            ]
        );
        assert_eq!(
            b.build_data(&a, RequestType::Out, 0, [(0, 16384), (0x30_0000, 512)]),
            Err(BuildError::TooManySegments)
        );
    }

    #[test]
    fn discard_and_write_zeroes() {
        let a = area(AREA_SIZE);
        let b = builder();
        let seg = |sector, num_sectors, unmap| RangeSegment {
            sector,
            num_sectors,
            unmap,
        };
        let built = b
            .build_ranges(
                &a,
                RequestType::WriteZeroes,
                [seg(8, 16, true), seg(64, 8, false)],
            )
            .unwrap();
        assert_eq!(built.descriptors, 3);
        let t = table(&a, &built);
        assert_eq!((t[1].address, t[1].len, t[1].flags), (PHYS + 80, 32, NEXT));
        assert_eq!(t[2].flags, WRITE);
        let w = a.region.u64s().unwrap();
        assert_eq!(w[0].load(Ordering::Relaxed), 13);
        assert_eq!(w[10].load(Ordering::Relaxed), 8);
        assert_eq!(w[11].load(Ordering::Relaxed), 16 | 1 << 32);
        assert_eq!(w[13].load(Ordering::Relaxed), 8);

        // DISCARD never sets unmap, and this device allows one segment.
        let built = b
            .build_ranges(&a, RequestType::Discard, [seg(0, 8, true)])
            .unwrap();
        assert_eq!(built.descriptors, 3);
        assert_eq!(w[11].load(Ordering::Relaxed), 8);
        assert_eq!(
            b.build_ranges(
                &a,
                RequestType::Discard,
                [seg(0, 8, false), seg(8, 8, false)]
            ),
            Err(BuildError::TooManySegments)
        );
        assert_eq!(
            b.build_ranges(&a, RequestType::Discard, []),
            Err(BuildError::NoData)
        );
        assert_eq!(
            b.build_ranges(&a, RequestType::Discard, [seg(0, 0, false)]),
            Err(BuildError::EmptySegment)
        );
        assert_eq!(
            b.build_ranges(&a, RequestType::Discard, [seg(0, u32::MAX, false)]),
            Err(BuildError::RangeTooLarge)
        );
        assert_eq!(
            b.build_ranges(&a, RequestType::In, [seg(0, 1, false)]),
            Err(BuildError::WrongType)
        );
        // 59 write-zeroes segments fit in 1 KiB, 60 do not.
        assert!(
            b.build_ranges(
                &a,
                RequestType::WriteZeroes,
                (0..59).map(|i| seg(i * 8, 8, false))
            )
            .is_ok()
        );
        assert_eq!(
            b.build_ranges(
                &a,
                RequestType::WriteZeroes,
                (0..60).map(|i| seg(i * 8, 8, false))
            ),
            Err(BuildError::TooManySegments)
        );
        let mut limits = *b.limits();
        limits.discard = None;
        assert_eq!(
            RequestBuilder::new(limits).build_ranges(&a, RequestType::Discard, [seg(0, 8, false)]),
            Err(BuildError::Unsupported)
        );
    }

    #[test]
    fn direct_chain_from_a_built_request() {
        use super::super::ring::SplitQueue;
        let a = area(AREA_SIZE);
        let built = builder()
            .build_data(&a, RequestType::In, 0, [(0x9000, 512)])
            .unwrap();
        let chain: Vec<_> = a.descriptors(&built).collect();
        assert_eq!(
            chain,
            [
                Descriptor {
                    address: PHYS,
                    len: 16,
                    device_writable: false
                },
                Descriptor {
                    address: 0x9000,
                    len: 512,
                    device_writable: true
                },
                Descriptor {
                    address: PHYS + 16,
                    len: 1,
                    device_writable: true
                },
            ]
        );
        let size = QueueSize::new(8).unwrap();
        let mut q =
            SplitQueue::new(dma(SplitQueue::memory_size(size), 0x1000), size, false).unwrap();
        q.push_chain(a.descriptors(&built)).unwrap();
        assert_eq!(q.num_free(), 5);
    }

    #[test]
    fn statuses() {
        assert_eq!(Status::from_byte(0), Status::Ok);
        assert_eq!(Status::from_byte(1), Status::IoError);
        assert_eq!(Status::from_byte(2), Status::Unsupported);
        assert!(Status::from_byte(3).is_device_misbehaviour());
        assert!(!Status::from_byte(1).is_device_misbehaviour());
        assert_eq!(
            RequestHeader {
                kind: RequestType::WriteZeroes,
                sector: 5
            }
            .encode(),
            [13, 5]
        );
    }

    fn put(dev: &FakeDevice, offset: usize, bytes: &[u8]) {
        dev.state.lock().unwrap().config[offset..offset + bytes.len()].copy_from_slice(bytes);
    }

    #[test]
    fn config_read() {
        let dev = FakeDevice::new(VERSION_1, 1);
        let t = dev.transport(4);
        put(dev, 0, &(1u64 << 33).to_le_bytes());
        put(dev, 8, &65536u32.to_le_bytes());
        put(dev, 12, &0u32.to_le_bytes());
        put(dev, 20, &4096u32.to_le_bytes());
        put(dev, 24, &[3, 0]);
        put(dev, 26, &8u16.to_le_bytes());
        put(dev, 28, &256u32.to_le_bytes());
        put(dev, 32, &[0]);
        put(dev, 34, &300u16.to_le_bytes());
        put(dev, 36, &[0xFF; 12]);
        put(dev, 48, &[0; 9]);
        let all = feature::BLK_SUPPORTED;
        let c = BlkConfig::read(&t.registers(), all).unwrap();
        assert_eq!(c.capacity, 1 << 33);
        assert_eq!(c.size_max, Some(65536));
        assert_eq!(c.seg_max, Some(1), "0 segments reads as 1");
        assert_eq!(c.blk_size, Some(4096));
        assert_eq!(c.topology.unwrap().physical_block_exp, 3);
        assert_eq!(c.topology.unwrap().opt_io_size, 256);
        assert_eq!(c.write_cache, WriteCache::WriteThrough);
        assert_eq!(c.num_queues, 300, "num_queues is le16 at offset 34");
        assert_eq!(c.discard.unwrap().max_segments, u32::MAX);
        assert_eq!(c.write_zeroes.unwrap().max_sectors, 1);
        assert!(!c.write_zeroes.unwrap().may_unmap);

        // Without the features, the fields are not used.
        let c = BlkConfig::read(&t.registers(), feature::FLUSH).unwrap();
        assert_eq!((c.num_queues, c.blk_size, c.seg_max), (1, None, None));
        assert_eq!(c.write_cache, WriteCache::WriteBack);
        let c = BlkConfig::read(&t.registers(), 0).unwrap();
        assert_eq!(c.write_cache, WriteCache::WriteThrough);

        // Switching the cache mode writes `writeback`.
        let c = BlkConfig::read(&t.registers(), all).unwrap();
        assert!(c.set_write_cache(&t.registers(), WriteCache::WriteBack));
        assert_eq!(dev.state.lock().unwrap().config[32], 1);
        assert_eq!(
            BlkConfig::read(&t.registers(), all).unwrap().write_cache,
            WriteCache::WriteBack
        );

        // Impossible values.
        put(dev, 20, &1000u32.to_le_bytes());
        assert_eq!(
            BlkConfig::read(&t.registers(), all),
            Err(BlkConfigError::Invalid("blk_size"))
        );
        put(dev, 20, &512u32.to_le_bytes());
        put(dev, 34, &0u16.to_le_bytes());
        assert_eq!(
            BlkConfig::read(&t.registers(), all),
            Err(BlkConfigError::Invalid("num_queues"))
        );
        let _ = DEVICE;
    }

    #[test]
    fn config_shorter_than_the_features() {
        use storport::register::RegisterWindow;
        let dev = FakeDevice::new(VERSION_1, 1);
        let all = RegisterWindow::from_test_device(dev);
        // A device structure of 24 bytes: capacity..blk_size only.
        let t = Transport::from_windows(
            all.subwindow(0, 64).unwrap(),
            all.subwindow(0x1000, 0x100).unwrap(),
            all.subwindow(0x2000, 1).unwrap(),
            all.subwindow(DEVICE, 24).unwrap(),
            4,
        );
        put(dev, 20, &512u32.to_le_bytes());
        assert!(BlkConfig::read(&t.registers(), feature::BLK_SIZE | feature::SEG_MAX).is_ok());
        assert_eq!(
            BlkConfig::read(&t.registers(), feature::MQ),
            Err(BlkConfigError::TooShort)
        );
        assert_eq!(
            BlkConfig::read(&t.registers(), feature::DISCARD),
            Err(BlkConfigError::TooShort)
        );
    }
}
