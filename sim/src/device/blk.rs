//! virtio-blk requests: parsing a descriptor chain and executing it (VIRTIO 1.2 5.2.6).
//!
//! A request is `struct virtio_blk_req { le32 type; le32 reserved; le64 sector; u8 data[];
//! u8 status; }` spread over the chain in any framing (VIRTIO_F_VERSION_1 implies
//! ANY_LAYOUT, 2.7.4.2): device-readable bytes first, then device-writable ones, the last
//! byte being the status. [`Segments::collect`] checks the chain's structure (a chain that
//! is cut short, loops, or points outside guest memory is a protocol error the device answers
//! with DEVICE_NEEDS_RESET, as QEMU's `virtio_error`); [`execute`] checks the request (IOERR or
//! UNSUPP) and performs it on the [`Backend`].

use std::ops::Deref;

use virtio_queue::DescriptorChain;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use super::backend::Backend;
use super::config::{DeviceConfig, features};

/// Request types (VIRTIO 1.2 5.2.6).
pub mod req_type {
    /// Read.
    pub const IN: u32 = 0;
    /// Write.
    pub const OUT: u32 = 1;
    /// Flush the write cache.
    pub const FLUSH: u32 = 4;
    /// Device ID string (20 bytes).
    pub const GET_ID: u32 = 8;
    /// Discard.
    pub const DISCARD: u32 = 11;
    /// Write zeroes.
    pub const WRITE_ZEROES: u32 = 13;
}

/// Status values.
pub mod req_status {
    /// Success.
    pub const OK: u8 = 0;
    /// Device or driver error.
    pub const IOERR: u8 = 1;
    /// Request unsupported by the device.
    pub const UNSUPP: u8 = 2;
}

/// Bytes in the request header.
pub const HEADER_LEN: u32 = 16;
/// Bytes in the GET_ID answer.
pub const ID_LEN: usize = 20;
/// Bytes in one DISCARD / WRITE_ZEROES segment.
const DWZ_SEGMENT_LEN: usize = 16;

/// A chain the device cannot even answer: the driver broke the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChainError {
    /// Empty, cut short (a descriptor read failed, a loop, a bad next index or indirect table),
    /// or pointing outside guest memory.
    Malformed,
    /// The last descriptor is not a device-writable buffer with room for the status byte.
    NoStatus,
}

/// One guest buffer of a chain.
#[derive(Clone, Copy, Debug)]
struct Buffer {
    addr: GuestAddress,
    len: u32,
    writable: bool,
}

/// What kind of request a chain was, for the counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// IN.
    Read,
    /// OUT.
    Write,
    /// FLUSH.
    Flush,
    /// GET_ID.
    GetId,
    /// DISCARD.
    Discard,
    /// WRITE_ZEROES.
    WriteZeroes,
    /// Anything else, or a header too short to tell.
    Other,
}

/// The result of executing a request.
#[derive(Clone, Copy, Debug)]
pub struct Outcome {
    /// Status to store.
    pub status: u8,
    /// Where to store it.
    pub status_addr: GuestAddress,
    /// Bytes written to device-writable buffers, status included (the used length).
    pub used_len: u32,
    /// Data bytes moved to or from the disk.
    pub data_bytes: u64,
    /// Request kind.
    pub kind: Kind,
}

/// The buffers of one chain, reused across requests by a queue thread.
#[derive(Default)]
pub struct Segments {
    buffers: Vec<Buffer>,
    ranges: Vec<(GuestAddress, u32)>,
}

/// What the executor needs to know about the device.
pub struct Context<'a> {
    /// Static configuration.
    pub config: &'a DeviceConfig,
    /// Current capacity in sectors.
    pub capacity: u64,
    /// Negotiated features.
    pub negotiated: u64,
    /// Whether the write cache is write-back (else every write is durable before completion).
    pub writeback: bool,
    /// The disk.
    pub backend: &'a Backend,
    /// Guest memory.
    pub mem: &'a GuestMemoryMmap,
}

impl Segments {
    /// Walks `chain`, checking its structure.
    pub fn collect<M>(
        &mut self,
        chain: DescriptorChain<M>,
        mem: &GuestMemoryMmap,
    ) -> Result<u64, ChainError>
    where
        M: Deref<Target = GuestMemoryMmap>,
    {
        self.buffers.clear();
        let mut last_has_next = true;
        let mut total = 0u64;
        for d in chain {
            last_has_next = d.has_next();
            if d.len() > 0 && !GuestMemoryBackend::check_range(mem, d.addr(), d.len() as usize) {
                return Err(ChainError::Malformed);
            }
            total += u64::from(d.len());
            self.buffers.push(Buffer {
                addr: d.addr(),
                len: d.len(),
                writable: d.is_write_only(),
            });
        }
        // The iterator ends silently on errors; a last descriptor still announcing a successor
        // means the walk was cut short (VIRTIO 1.2 2.7.5.2 bounds the chain by the queue size).
        if self.buffers.is_empty() || last_has_next {
            return Err(ChainError::Malformed);
        }
        match self.buffers.last() {
            Some(b) if b.writable && b.len >= 1 => Ok(total),
            _ => Err(ChainError::NoStatus),
        }
    }

    /// The device-writable buffers of the chain (data in, status), as (guest address, length).
    pub fn writable(&self) -> impl Iterator<Item = (u64, u32)> + '_ {
        self.buffers
            .iter()
            .filter(|b| b.writable)
            .map(|b| (b.addr.raw_value(), b.len))
    }

    /// Takes the elements of a packed ring's buffer (already walked by
    /// [`super::packed::PackedRing::pop`]), checking them as [`Self::collect`] does.
    pub fn collect_elements(
        &mut self,
        elements: &[super::packed::Element],
        mem: &GuestMemoryMmap,
    ) -> Result<u64, ChainError> {
        self.buffers.clear();
        let mut total = 0u64;
        for e in elements {
            let addr = GuestAddress(e.addr);
            if e.len > 0 && !GuestMemoryBackend::check_range(mem, addr, e.len as usize) {
                return Err(ChainError::Malformed);
            }
            total += u64::from(e.len);
            self.buffers.push(Buffer {
                addr,
                len: e.len,
                writable: e.writable,
            });
        }
        match self.buffers.last() {
            None => Err(ChainError::Malformed),
            Some(b) if b.writable && b.len >= 1 => Ok(total),
            _ => Err(ChainError::NoStatus),
        }
    }

    /// Fills `self.ranges` with the bytes of the buffers of one direction, skipping the first
    /// `skip` bytes and dropping the last `drop` bytes; returns how many bytes that is.
    fn select(&mut self, writable: bool, skip: u64, drop: u64) -> u64 {
        self.ranges.clear();
        let total: u64 = self
            .buffers
            .iter()
            .filter(|b| b.writable == writable)
            .map(|b| u64::from(b.len))
            .sum();
        let end = total.saturating_sub(drop);
        let mut pos = 0u64;
        for b in self.buffers.iter().filter(|b| b.writable == writable) {
            let (start, stop) = (pos, pos + u64::from(b.len));
            pos = stop;
            let lo = start.max(skip);
            let hi = stop.min(end);
            if lo < hi {
                self.ranges
                    .push((b.addr.unchecked_add(lo - start), (hi - lo) as u32));
            }
        }
        end.saturating_sub(skip)
    }
}

fn gather(mem: &GuestMemoryMmap, ranges: &[(GuestAddress, u32)], out: &mut [u8]) -> bool {
    let mut done = 0usize;
    for &(addr, len) in ranges {
        if done == out.len() {
            break;
        }
        let n = (len as usize).min(out.len() - done);
        if mem.read_slice(&mut out[done..done + n], addr).is_err() {
            return false;
        }
        done += n;
    }
    done == out.len()
}

/// Executes the request in `segs` (already collected).
pub fn execute(ctx: &Context<'_>, segs: &mut Segments) -> Outcome {
    // By `collect`, the last buffer is writable with at least one byte.
    let last = segs.buffers[segs.buffers.len() - 1];
    let mut out = Outcome {
        status: req_status::IOERR,
        status_addr: last.addr.unchecked_add(u64::from(last.len) - 1),
        used_len: 1,
        data_bytes: 0,
        kind: Kind::Other,
    };
    // Device-readable buffers must all precede device-writable ones (VIRTIO 1.2 2.7.4.2).
    let first_writable = segs.buffers.iter().position(|b| b.writable).unwrap_or(0);
    if segs.buffers[first_writable..].iter().any(|b| !b.writable) {
        return out;
    }
    segs.select(false, 0, 0);
    let mut header = [0u8; HEADER_LEN as usize];
    if !gather(ctx.mem, &segs.ranges, &mut header) {
        return out;
    }
    let kind = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let sector = u64::from_le_bytes([
        header[8], header[9], header[10], header[11], header[12], header[13], header[14],
        header[15],
    ]);
    let (status, used_len) = match kind {
        req_type::IN => {
            out.kind = Kind::Read;
            read(ctx, segs, sector, &mut out.data_bytes)
        }
        req_type::OUT => {
            out.kind = Kind::Write;
            (write(ctx, segs, sector, &mut out.data_bytes), 1)
        }
        req_type::FLUSH => {
            out.kind = Kind::Flush;
            let ok = ctx.backend.flush().is_ok();
            (
                if ok {
                    req_status::OK
                } else {
                    req_status::IOERR
                },
                1,
            )
        }
        req_type::GET_ID => {
            out.kind = Kind::GetId;
            get_id(ctx, segs)
        }
        req_type::DISCARD => {
            out.kind = Kind::Discard;
            (discard_or_zero(ctx, segs, false), 1)
        }
        req_type::WRITE_ZEROES => {
            out.kind = Kind::WriteZeroes;
            (discard_or_zero(ctx, segs, true), 1)
        }
        _ => (req_status::UNSUPP, 1),
    };
    out.status = status;
    out.used_len = used_len;
    out
}

/// Checks a data transfer of `len` bytes at `sector`: whole logical blocks inside the disk.
fn range_ok(ctx: &Context<'_>, sector: u64, len: u64) -> bool {
    let block = u64::from(ctx.config.logical_block_size.max(512));
    let block_sectors = block / 512;
    len.is_multiple_of(block)
        && sector.is_multiple_of(block_sectors)
        && sector
            .checked_add(len / 512)
            .is_some_and(|end| end <= ctx.capacity)
}

/// Checks the data segments against `seg_max` and `size_max` when they were negotiated.
fn segments_ok(ctx: &Context<'_>, ranges: &[(GuestAddress, u32)]) -> bool {
    let seg_max_ok =
        ctx.negotiated & features::SEG_MAX == 0 || ranges.len() <= ctx.config.seg_max as usize;
    let size_max_ok = ctx.negotiated & features::SIZE_MAX == 0
        || ranges.iter().all(|&(_, len)| len <= ctx.config.size_max);
    seg_max_ok && size_max_ok
}

fn read(ctx: &Context<'_>, segs: &mut Segments, sector: u64, moved: &mut u64) -> (u8, u32) {
    // Nothing device-readable may follow the header, and the data is device-writable.
    if segs.select(false, u64::from(HEADER_LEN), 0) != 0 {
        return (req_status::IOERR, 1);
    }
    let len = segs.select(true, 0, 1);
    if !range_ok(ctx, sector, len) || !segments_ok(ctx, &segs.ranges) {
        return (req_status::IOERR, 1);
    }
    let mut offset = sector * 512;
    for &(addr, n) in &segs.ranges {
        if ctx
            .backend
            .read_to_guest(offset, ctx.mem, addr, n as usize)
            .is_err()
        {
            return (req_status::IOERR, 1);
        }
        offset += u64::from(n);
    }
    *moved = len;
    (
        req_status::OK,
        u32::try_from(len).unwrap_or(u32::MAX).saturating_add(1),
    )
}

fn write(ctx: &Context<'_>, segs: &mut Segments, sector: u64, moved: &mut u64) -> u8 {
    if segs.select(true, 0, 1) != 0 {
        return req_status::IOERR;
    }
    let len = segs.select(false, u64::from(HEADER_LEN), 0);
    if ctx.config.read_only || !range_ok(ctx, sector, len) || !segments_ok(ctx, &segs.ranges) {
        return req_status::IOERR;
    }
    let mut offset = sector * 512;
    for &(addr, n) in &segs.ranges {
        if ctx
            .backend
            .write_from_guest(offset, ctx.mem, addr, n as usize, !ctx.writeback)
            .is_err()
        {
            return req_status::IOERR;
        }
        offset += u64::from(n);
    }
    *moved = len;
    req_status::OK
}

fn get_id(ctx: &Context<'_>, segs: &mut Segments) -> (u8, u32) {
    let room = segs.select(true, 0, 1);
    let mut id = [0u8; ID_LEN];
    let serial = ctx.config.serial.as_bytes();
    let n = serial.len().min(ID_LEN);
    id[..n].copy_from_slice(&serial[..n]);
    let mut left = (room as usize).min(ID_LEN);
    let written = left;
    let mut from = 0usize;
    for &(addr, len) in &segs.ranges {
        let n = (len as usize).min(left);
        if n == 0 {
            break;
        }
        if ctx.mem.write_slice(&id[from..from + n], addr).is_err() {
            return (req_status::IOERR, 1);
        }
        from += n;
        left -= n;
    }
    (req_status::OK, written as u32 + 1)
}

fn discard_or_zero(ctx: &Context<'_>, segs: &mut Segments, zeroes: bool) -> u8 {
    let (feature, max_seg, max_sectors) = if zeroes {
        (
            features::WRITE_ZEROES,
            ctx.config.max_write_zeroes_seg,
            ctx.config.max_write_zeroes_sectors,
        )
    } else {
        (
            features::DISCARD,
            ctx.config.max_discard_seg,
            ctx.config.max_discard_sectors,
        )
    };
    if ctx.negotiated & feature == 0 {
        return req_status::UNSUPP;
    }
    if ctx.config.read_only {
        return req_status::IOERR;
    }
    let len = segs.select(false, u64::from(HEADER_LEN), 0);
    if len == 0 || !len.is_multiple_of(DWZ_SEGMENT_LEN as u64) {
        return req_status::IOERR;
    }
    let count = len / DWZ_SEGMENT_LEN as u64;
    if count > u64::from(max_seg) {
        // As QEMU: more segments than advertised is unsupported.
        return req_status::UNSUPP;
    }
    let mut raw = vec![0u8; len as usize];
    if !gather(ctx.mem, &segs.ranges, &mut raw) {
        return req_status::IOERR;
    }
    // Validate every segment before touching the disk.
    let mut ranges = Vec::with_capacity(count as usize);
    for seg in raw.chunks_exact(DWZ_SEGMENT_LEN) {
        let sector = u64::from_le_bytes(seg[0..8].try_into().unwrap_or([0xFF; 8]));
        let sectors = u32::from_le_bytes(seg[8..12].try_into().unwrap_or([0xFF; 4]));
        let flags = u32::from_le_bytes(seg[12..16].try_into().unwrap_or([0xFF; 4]));
        // Bit 0 is `unmap`, meaningful for WRITE_ZEROES only; other bits are reserved
        // (VIRTIO 1.2 5.2.6.2: UNSUPP).
        let allowed = if zeroes { 1 } else { 0 };
        if flags & !allowed != 0 {
            return req_status::UNSUPP;
        }
        if sectors > max_sectors
            || sector
                .checked_add(u64::from(sectors))
                .is_none_or(|end| end > ctx.capacity)
        {
            return req_status::IOERR;
        }
        ranges.push((sector, sectors));
    }
    // On a RAM backend discarded blocks read back as zeroes, like WRITE_ZEROES, so a guest can
    // check the effect; a file backend writes zeroes.
    for (sector, sectors) in ranges {
        if ctx
            .backend
            .zero(sector * 512, u64::from(sectors) * 512)
            .is_err()
        {
            return req_status::IOERR;
        }
    }
    req_status::OK
}
