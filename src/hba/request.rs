//! From a Storport request to a virtio-blk request: the work of HwStorBuildIo.
//!
//! BuildIo runs without a lock, on several CPUs at once, so everything that needs no shared
//! state happens here (DESIGN.md "The I/O path"): the SCSI command is decoded, commands the
//! driver answers itself (INQUIRY, READ CAPACITY, MODE SENSE, ...) are completed at once, and a
//! block request is laid out in the SRB extension: the virtio-blk header, the status byte and
//! the indirect descriptor table over the request's scatter-gather list. StartIo then only puts
//! the table on a ring.
//!
//! # The SRB extension
//!
//! The whole extension is the [`RequestArea`]: header (0..16), status byte (16), indirect
//! table (32..) or discard segments. [`Prepared`], what BuildIo built for StartIo, is one word
//! at 24..32, in the status byte's slot past the byte the device is shown
//! ([`crate::virtio::PRIVATE_OFFSET`]): descriptors, operation and `max_written`; the table's
//! address follows from the area's.

use storport::dma::DmaRegion;

use crate::scsi::{self, BlockError, BlockOp, DiskInfo, Sense};
use crate::virtio::{
    BuildError, BuiltRequest, RangeSegment, RequestArea, RequestBuilder, RequestType, area_size,
};

/// Data segments one request may carry: Storport is told `NumberOfPhysicalBreaks` = this - 1.
pub const MAX_SEGMENTS: u16 = 64;

/// The SRB extension size: a request area for `MAX_SEGMENTS` (the prepared record lives in
/// the status byte's slot).
pub const SRB_EXTENSION_SIZE: usize = area_size(MAX_SEGMENTS);

/// What a block request does (for the sense data of a failure, and FUA).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Op {
    /// VIRTIO_BLK_T_IN.
    Read = 1,
    /// VIRTIO_BLK_T_OUT.
    Write = 2,
    /// VIRTIO_BLK_T_OUT that must be durable: a FLUSH follows before completion.
    WriteFua = 3,
    /// VIRTIO_BLK_T_FLUSH.
    Flush = 4,
    /// VIRTIO_BLK_T_DISCARD.
    Discard = 5,
    /// VIRTIO_BLK_T_WRITE_ZEROES.
    WriteZeroes = 6,
}

impl Op {
    fn from_byte(byte: u8) -> Option<Op> {
        Some(match byte {
            1 => Op::Read,
            2 => Op::Write,
            3 => Op::WriteFua,
            4 => Op::Flush,
            5 => Op::Discard,
            6 => Op::WriteZeroes,
            _ => return None,
        })
    }

    /// The SCSI layer's name for the operation, for sense data.
    pub fn block_op(self) -> BlockOp {
        match self {
            Op::Read => BlockOp::Read,
            Op::Write | Op::WriteFua => BlockOp::Write,
            Op::Flush => BlockOp::Flush,
            Op::Discard => BlockOp::Discard,
            Op::WriteZeroes => BlockOp::WriteZeroes,
        }
    }
}

/// A block request BuildIo prepared in the SRB extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prepared {
    /// The request as the builder laid it out.
    pub built: BuiltRequest,
    /// What it does.
    pub op: Op,
    /// The SRB's buffer is longer than the transfer its CDB names (a pass-through may send
    /// one): only the transfer moves, DataTransferLength is cut to it and success is reported
    /// as DATA_OVERRUN (Storport's convention for an underrun).
    pub underrun: bool,
}

/// The SRB extension of one request.
pub struct Extension<'a> {
    /// The virtio-blk request area (with the prepared record in its private word).
    pub area: RequestArea<'a>,
}

impl<'a> Extension<'a> {
    /// Wraps an SRB extension; `None` if Storport gave misaligned memory or less than a
    /// request area needs.
    pub fn new(region: DmaRegion<'a>) -> Option<Extension<'a>> {
        Some(Extension {
            area: RequestArea::new(region)?,
        })
    }

    /// Records what BuildIo prepared, for StartIo and the completion: descriptors (bits
    /// 0..16), operation (16..24), the underrun (24) and `max_written` (32..64) in one word.
    pub fn record(&self, prepared: &Prepared) {
        let b = &prepared.built;
        self.area.store_private(
            u64::from(b.descriptors)
                | u64::from(prepared.op as u8) << 16
                | if prepared.underrun { UNDERRUN } else { 0 }
                | u64::from(b.max_written) << 32,
        );
    }

    /// Reads back the request BuildIo prepared (StartIo, on the same request).
    pub fn built(&self) -> Option<BuiltRequest> {
        let word = self.area.load_private()?;
        let [d0, d1, op, _, w0, w1, w2, w3] = word.to_le_bytes();
        Op::from_byte(op)?;
        let descriptors = u16::from_le_bytes([d0, d1]);
        let max_written = u32::from_le_bytes([w0, w1, w2, w3]);
        Some(self.area.built(descriptors, max_written))
    }
}

/// Bit 24 of the private word (its byte 3, otherwise unused): [`Prepared::underrun`].
const UNDERRUN: u64 = 1 << 24;

/// Whether the private word records an underrun ([`Prepared::underrun`]).
#[inline]
pub fn recorded_underrun(word: u64) -> bool {
    word & UNDERRUN != 0
}

/// What a completion needs of the private word [`Extension::record`] wrote: the operation and
/// the most a correct used length can say. `None` if the word holds no operation.
#[inline]
pub fn recorded_op(word: u64) -> Option<(Op, u32)> {
    let [_, _, op, _, w0, w1, w2, w3] = word.to_le_bytes();
    Some((Op::from_byte(op)?, u32::from_le_bytes([w0, w1, w2, w3])))
}

/// The outcome of preparing a block request.
pub enum Preparation {
    /// Laid out; StartIo puts it on a ring.
    Ready(Prepared),
    /// The request fails with this sense data (CHECK CONDITION).
    Check(Sense),
    /// Nothing to do: complete with GOOD (e.g. a flush the device does not need).
    Good,
}

/// Lays out a read or write of `io` over the request's data segments.
pub fn prepare_io(
    builder: &RequestBuilder,
    extension: &Extension,
    disk: &DiskInfo,
    io: &scsi::Io,
    write: bool,
    data_len: u32,
    segments: impl Iterator<Item = (u64, u32)>,
) -> Preparation {
    let (Some(range), Some(bytes)) = (io.sectors(disk), io.bytes(disk)) else {
        return Preparation::Check(Sense::LBA_OUT_OF_RANGE);
    };
    // The class driver's buffer must hold the transfer the CDB names; a shorter buffer is a
    // malformed request, not something to read past.
    if u64::from(data_len) < bytes {
        return Preparation::Check(Sense::invalid_cdb_field(7, None));
    }
    let mut remaining = bytes;
    let bounded = segments.map_while(move |(address, length)| {
        if remaining == 0 {
            return None;
        }
        let take = u64::from(length).min(remaining);
        remaining = remaining.saturating_sub(take);
        Some((address, u32::try_from(take).unwrap_or(length)))
    });
    let (kind, op) = match (write, io.fua) {
        (false, _) => (RequestType::In, Op::Read),
        (true, false) => (RequestType::Out, Op::Write),
        (true, true) => (RequestType::Out, Op::WriteFua),
    };
    match builder.build_data(&extension.area, kind, range.sector, bounded) {
        Ok(built) => Preparation::Ready(Prepared {
            built,
            op,
            underrun: u64::from(data_len) > bytes,
        }),
        Err(error) => Preparation::Check(build_error_sense(error, op)),
    }
}

/// Lays out a FLUSH, or answers GOOD at once when the device has no write cache to flush.
pub fn prepare_flush(builder: &RequestBuilder, extension: &Extension) -> Preparation {
    if !builder.limits().flush {
        return Preparation::Good;
    }
    match builder.build_flush(&extension.area) {
        Ok(built) => Preparation::Ready(Prepared {
            built,
            op: Op::Flush,
            underrun: false,
        }),
        Err(error) => Preparation::Check(build_error_sense(error, Op::Flush)),
    }
}

/// Lays out a DISCARD or WRITE_ZEROES of `segments`.
pub fn prepare_ranges(
    builder: &RequestBuilder,
    extension: &Extension,
    zeroes: Option<bool>,
    segments: impl Iterator<Item = scsi::Segment>,
) -> Preparation {
    let (kind, op, unmap) = match zeroes {
        None => (RequestType::Discard, Op::Discard, false),
        Some(unmap) => (RequestType::WriteZeroes, Op::WriteZeroes, unmap),
    };
    let ranges = segments.map(|s| RangeSegment {
        sector: s.sector,
        num_sectors: s.sectors,
        unmap,
    });
    match builder.build_ranges(&extension.area, kind, ranges) {
        Ok(built) => Preparation::Ready(Prepared {
            built,
            op,
            underrun: false,
        }),
        // An UNMAP with only empty descriptors deallocates nothing: done.
        Err(BuildError::NoData) => Preparation::Good,
        Err(error) => Preparation::Check(build_error_sense(error, op)),
    }
}

/// The sense data for a request the builder refused.
fn build_error_sense(error: BuildError, op: Op) -> Sense {
    match error {
        // Limits Storport was told (NumberOfPhysicalBreaks, MaximumTransferLength) or the SCSI
        // layer enforced: a request beyond them is malformed.
        BuildError::TooManySegments | BuildError::TooLong | BuildError::RangeTooLarge => {
            Sense::invalid_cdb_field(0, None)
        }
        BuildError::NotSectorMultiple | BuildError::EmptySegment | BuildError::NoData => {
            Sense::invalid_cdb_field(0, None)
        }
        BuildError::Unsupported | BuildError::WrongType => {
            Sense::for_block_error(op.block_op(), BlockError::Unsupported)
        }
    }
}
