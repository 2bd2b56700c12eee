//! CDB decoding: what a SCSI command asks of the disk.
//!
//! [`decode`] reads a command descriptor block (SPC-4 4.2; SBC-3 5 for the block commands) and
//! either says what to do ([`Command`]) or why the command ends in CHECK CONDITION ([`Sense`]).
//! The CDB is untrusted: it may be short, carry any bits, or name blocks past the end; nothing
//! here panics or overflows.
//!
//! Checks run in this order: the operation code (INVALID COMMAND OPERATION CODE), the CDB
//! length and the CONTROL byte (NACA and LINK are not supported, SAM-5 5.2), defined fields the
//! disk cannot honour (INVALID FIELD IN CDB with a field pointer; reserved fields are not
//! checked, SPC-4 2.4.3), readiness (an empty disk is NOT READY / MEDIUM NOT PRESENT), the
//! block range (LOGICAL BLOCK ADDRESS OUT OF RANGE, overflow-safe), then write protection
//! (DATA PROTECT / WRITE PROTECTED).
//!
//! | Command (opcode)                          | Result                                      |
//! |-------------------------------------------|---------------------------------------------|
//! | READ 6/10/12/16 (08h 28h A8h 88h)          | [`Command::Read`], or Good for 0 blocks     |
//! | WRITE 6/10/12/16 (0Ah 2Ah AAh 8Ah)         | [`Command::Write`], or Good for 0 blocks    |
//! | WRITE AND VERIFY 10/12/16 (2Eh AEh 8Eh)    | [`Command::Write`] with FUA (BYTCHK = 0)    |
//! | VERIFY 10/12/16 (2Fh AFh 8Fh)              | Good after the range check (BYTCHK = 0)     |
//! | SYNCHRONIZE CACHE 10/16 (35h 91h)          | [`Command::Flush`] (Good without a flush)   |
//! | UNMAP (42h)                               | [`Command::Unmap`]                          |
//! | WRITE SAME 10/16 (41h 93h)                 | [`Command::WriteSame`]                      |
//! | MODE SELECT 6/10 (15h 55h)                 | [`Command::ModeSelect`]                     |
//! | INQUIRY, READ CAPACITY 10/16, MODE SENSE 6/10, REPORT LUNS | [`Command::DataIn`]          |
//! | REQUEST SENSE (03h)                       | [`Command::RequestSense`]                   |
//! | TEST UNIT READY (00h)                     | Good                                        |
//! | START STOP UNIT (1Bh)                     | Good, or [`Command::Flush`] for stop/standby|
//! | anything else                             | INVALID COMMAND OPERATION CODE              |

use super::capacity::{read_capacity_10, read_capacity_16};
use super::data::Response;
use super::disk::{DiskInfo, SectorRange, to_sectors};
use super::inquiry;
use super::luns;
use super::mode::{self, ModeSelect, ModeSense, PageControl};
use super::sense::Sense;
use super::write_same::WriteSame;

mod op {
    pub(super) const TEST_UNIT_READY: u8 = 0x00;
    pub(super) const REQUEST_SENSE: u8 = 0x03;
    pub(super) const READ_6: u8 = 0x08;
    pub(super) const WRITE_6: u8 = 0x0A;
    pub(super) const INQUIRY: u8 = 0x12;
    pub(super) const MODE_SELECT_6: u8 = 0x15;
    pub(super) const MODE_SENSE_6: u8 = 0x1A;
    pub(super) const START_STOP_UNIT: u8 = 0x1B;
    pub(super) const READ_CAPACITY_10: u8 = 0x25;
    pub(super) const READ_10: u8 = 0x28;
    pub(super) const WRITE_10: u8 = 0x2A;
    pub(super) const WRITE_AND_VERIFY_10: u8 = 0x2E;
    pub(super) const VERIFY_10: u8 = 0x2F;
    pub(super) const SYNCHRONIZE_CACHE_10: u8 = 0x35;
    pub(super) const WRITE_SAME_10: u8 = 0x41;
    pub(super) const UNMAP: u8 = 0x42;
    pub(super) const MODE_SELECT_10: u8 = 0x55;
    pub(super) const MODE_SENSE_10: u8 = 0x5A;
    pub(super) const READ_16: u8 = 0x88;
    pub(super) const WRITE_16: u8 = 0x8A;
    pub(super) const WRITE_AND_VERIFY_16: u8 = 0x8E;
    pub(super) const VERIFY_16: u8 = 0x8F;
    pub(super) const SYNCHRONIZE_CACHE_16: u8 = 0x91;
    pub(super) const WRITE_SAME_16: u8 = 0x93;
    pub(super) const SERVICE_ACTION_IN_16: u8 = 0x9E;
    pub(super) const REPORT_LUNS: u8 = 0xA0;
    pub(super) const READ_12: u8 = 0xA8;
    pub(super) const WRITE_12: u8 = 0xAA;
    pub(super) const WRITE_AND_VERIFY_12: u8 = 0xAE;
    pub(super) const VERIFY_12: u8 = 0xAF;
}

/// READ CAPACITY(16)'s service action under SERVICE ACTION IN(16) (SBC-3 5.16.1).
const READ_CAPACITY_16: u8 = 0x10;

/// What a CDB asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// Complete now with GOOD status and no data.
    Good,
    /// Read blocks into the data-in buffer.
    Read(Io),
    /// Write blocks from the data-out buffer.
    Write(Io),
    /// Flush the device's write cache, then complete with GOOD.
    Flush,
    /// Fetch `parameter_list_length` bytes of data-out, then [`parse_unmap`](super::parse_unmap).
    Unmap {
        /// The PARAMETER LIST LENGTH (never 0).
        parameter_list_length: u16,
    },
    /// Fetch [`WriteSame::data_length`] bytes of data-out, then [`WriteSame::plan`].
    WriteSame(WriteSame),
    /// Fetch the parameter list, then [`ModeSelect::parse`].
    ModeSelect(ModeSelect),
    /// Fill the data-in buffer with [`DataIn::write`], then complete with GOOD.
    DataIn(DataIn),
    /// Fill the data-in buffer with [`request_sense`](super::request_sense), then complete.
    RequestSense {
        /// The ALLOCATION LENGTH.
        allocation_length: u8,
    },
}

/// A block read or write: at least one block, in range, within the transfer limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Io {
    /// The first logical block.
    pub lba: u64,
    /// The number of logical blocks (never 0).
    pub blocks: u32,
    /// The write must be durable before completion: flush after writing. Set only for a write
    /// with FUA (or WRITE AND VERIFY) while the write cache is enabled and the device can flush.
    pub fua: bool,
}

impl Io {
    /// The 512-byte sector range of the transfer.
    pub fn sectors(&self, disk: &DiskInfo) -> Option<SectorRange> {
        to_sectors(self.lba, u64::from(self.blocks), disk)
    }

    /// The transfer length in bytes (what the data buffer must hold).
    pub fn bytes(&self, disk: &DiskInfo) -> Option<u64> {
        u64::from(self.blocks).checked_mul(u64::from(disk.block_size.bytes()))
    }
}

/// A command answered from the disk description: INQUIRY, READ CAPACITY, MODE SENSE or
/// REPORT LUNS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataIn {
    data: Data,
    allocation_length: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Data {
    StandardInquiry,
    Vpd(u8),
    ReadCapacity10,
    ReadCapacity16,
    ModeSense(ModeSense),
    ReportLuns(u8),
}

impl DataIn {
    /// The ALLOCATION LENGTH (8 for READ CAPACITY(10), which has none).
    pub fn allocation_length(&self) -> u32 {
        self.allocation_length
    }

    /// Writes the parameter data into `buf`, truncated to the allocation length and to
    /// `buf.len()`; returns the number of bytes written (the residual is an underrun, not an
    /// error, SPC-4 4.2.5.6).
    pub fn write(&self, disk: &DiskInfo, buf: &mut [u8]) -> usize {
        let mut r = Response::new();
        match self.data {
            Data::StandardInquiry => inquiry::standard(disk, &mut r),
            Data::Vpd(page) => inquiry::vpd(page, disk, &mut r),
            Data::ReadCapacity10 => read_capacity_10(disk, &mut r),
            Data::ReadCapacity16 => read_capacity_16(disk, &mut r),
            Data::ModeSense(request) => mode::mode_sense(&request, disk, &mut r),
            Data::ReportLuns(select) => luns::report_luns(select, &mut r),
        }
        let allocation = usize::try_from(self.allocation_length).unwrap_or(usize::MAX);
        r.copy_out(allocation, buf)
    }
}

/// Whether a pending unit attention is reported for this CDB instead of running it.
///
/// INQUIRY, REPORT LUNS and REQUEST SENSE run despite a unit attention (SAM-5 5.14, SPC-4
/// 5.14); REQUEST SENSE then returns it as its data. Every other command, including an unknown
/// or empty one, reports it (and the caller then clears it).
pub fn reports_unit_attention(cdb: &[u8]) -> bool {
    !matches!(
        cdb.first(),
        Some(&(op::INQUIRY | op::REPORT_LUNS | op::REQUEST_SENSE))
    )
}

/// READ(10), WRITE(10), READ(16) and WRITE(16) in their ordinary form, decoded from the
/// CDB's first 16 bytes copied out by value (`len` is the whole CDB's length): the I/O path's
/// commands, ahead of [`decode`].
///
/// `None` for any other command, and for one of these with anything out of the ordinary (a
/// short CDB, CONTROL or protection bits, no blocks, more than the maximum transfer length,
/// out of range, no medium, a write to a read-only disk), which [`decode`] then answers with
/// its exact sense data. When it is `Some`, it is what [`decode`] returns for the same CDB
/// (`tests::the_fast_path_agrees_with_decode`).
#[inline]
pub fn decode_read_write(cdb: &[u8; 16], len: usize, disk: &DiskInfo) -> Option<Command> {
    let [
        opcode,
        flags,
        b2,
        b3,
        b4,
        b5,
        b6,
        b7,
        b8,
        b9,
        b10,
        b11,
        b12,
        b13,
        _,
        b15,
    ] = *cdb;
    let (write, lba, blocks, control) = match opcode {
        op::READ_10 | op::WRITE_10 if len >= 10 => (
            opcode == op::WRITE_10,
            u64::from(u32::from_be_bytes([b2, b3, b4, b5])),
            u32::from(u16::from_be_bytes([b7, b8])),
            b9,
        ),
        op::READ_16 | op::WRITE_16 if len >= 16 => (
            opcode == op::WRITE_16,
            u64::from_be_bytes([b2, b3, b4, b5, b6, b7, b8, b9]),
            u32::from_be_bytes([b10, b11, b12, b13]),
            b15,
        ),
        _ => return None,
    };
    // NACA and LINK (CONTROL), RDPROTECT/WRPROTECT: refused by `decode`, with a field pointer.
    if control & 0x05 != 0 || flags & 0xE0 != 0 || blocks == 0 {
        return None;
    }
    if disk.max_transfer_blocks != 0 && blocks > disk.max_transfer_blocks {
        return None;
    }
    if disk.check_ready().is_err()
        || disk.check_range(lba, u64::from(blocks)).is_err()
        || (write && disk.check_writable().is_err())
    {
        return None;
    }
    let fua = write && flags & 0x08 != 0 && disk.write_cache_enabled() && disk.flush;
    let io = Io { lba, blocks, fua };
    Some(if write {
        Command::Write(io)
    } else {
        Command::Read(io)
    })
}

/// A CDB of at least the length its operation code needs.
struct Cdb<'a>(&'a [u8]);

impl<'a> Cdb<'a> {
    /// Checks the length and the CONTROL byte (last byte, SAM-5 5.2): NACA (bit 2) and the
    /// obsolete LINK (bit 0) are not supported.
    fn new(bytes: &'a [u8], length: usize) -> Result<Self, Sense> {
        let control_at = length.checked_sub(1).ok_or(Sense::INVALID_FIELD_IN_CDB)?;
        let control = *bytes.get(control_at).ok_or(Sense::INVALID_FIELD_IN_CDB)?;
        let at = u16::try_from(control_at).unwrap_or(u16::MAX);
        if control & 0x04 != 0 {
            return Err(Sense::invalid_cdb_field(at, Some(2)));
        }
        if control & 0x01 != 0 {
            return Err(Sense::invalid_cdb_field(at, Some(0)));
        }
        Ok(Self(bytes))
    }

    fn u8(&self, at: usize) -> u8 {
        self.0.get(at).copied().unwrap_or(0)
    }

    fn bit(&self, at: usize, bit: u8) -> bool {
        self.u8(at) & 1u8.checked_shl(u32::from(bit)).unwrap_or(0) != 0
    }

    fn array<const N: usize>(&self, at: usize) -> [u8; N] {
        let mut out = [0u8; N];
        for (dst, &src) in out.iter_mut().zip(self.0.get(at..).unwrap_or(&[])) {
            *dst = src;
        }
        out
    }

    fn be16(&self, at: usize) -> u16 {
        u16::from_be_bytes(self.array(at))
    }

    fn be32(&self, at: usize) -> u32 {
        u32::from_be_bytes(self.array(at))
    }

    fn be64(&self, at: usize) -> u64 {
        u64::from_be_bytes(self.array(at))
    }
}

/// Fails with INVALID FIELD IN CDB at `byte`, pointing at the highest set bit of `value & mask`.
fn refuse_bits(cdb: &Cdb<'_>, byte: u16, mask: u8) -> Result<(), Sense> {
    let set = cdb.u8(usize::from(byte)) & mask;
    if set == 0 {
        return Ok(());
    }
    let bit = 7u8.saturating_sub(u8::try_from(set.leading_zeros()).unwrap_or(0));
    Err(Sense::invalid_cdb_field(byte, Some(bit)))
}

/// Decodes `cdb` for `disk`.
///
/// # Errors
///
/// The sense data for CHECK CONDITION when the command is unsupported, malformed, out of
/// range, or a write to a read-only disk (see the module documentation for the order).
pub fn decode(cdb: &[u8], disk: &DiskInfo) -> Result<Command, Sense> {
    let Some(&opcode) = cdb.first() else {
        return Err(Sense::INVALID_OPCODE);
    };
    match opcode {
        op::TEST_UNIT_READY => {
            Cdb::new(cdb, 6)?;
            disk.check_ready()?;
            Ok(Command::Good)
        }
        op::REQUEST_SENSE => {
            let c = Cdb::new(cdb, 6)?;
            // DESC = 1 asks for descriptor format, which is not supported (SPC-4 6.39).
            refuse_bits(&c, 1, 0x01)?;
            Ok(Command::RequestSense {
                allocation_length: c.u8(4),
            })
        }
        op::INQUIRY => inquiry(cdb, disk),
        op::READ_CAPACITY_10 => {
            let c = Cdb::new(cdb, 10)?;
            check_pmi(&c, c.be32(2) != 0, 8)?;
            disk.check_ready()?;
            Ok(data_in(Data::ReadCapacity10, 8))
        }
        op::SERVICE_ACTION_IN_16 => {
            let c = Cdb::new(cdb, 16)?;
            if c.u8(1) & 0x1F != READ_CAPACITY_16 {
                return Err(Sense::invalid_cdb_field(1, Some(4)));
            }
            check_pmi(&c, c.be64(2) != 0, 14)?;
            disk.check_ready()?;
            Ok(data_in(Data::ReadCapacity16, c.be32(10)))
        }
        op::MODE_SENSE_6 | op::MODE_SENSE_10 => mode_sense(cdb, opcode == op::MODE_SENSE_10),
        op::MODE_SELECT_6 => {
            let c = Cdb::new(cdb, 6)?;
            mode_select(&c, u16::from(c.u8(4)), false)
        }
        op::MODE_SELECT_10 => {
            let c = Cdb::new(cdb, 10)?;
            mode_select(&c, c.be16(7), true)
        }
        op::REPORT_LUNS => {
            let c = Cdb::new(cdb, 12)?;
            let select = c.u8(2);
            if !luns::supports_select(select) {
                return Err(Sense::invalid_cdb_field(2, None));
            }
            Ok(data_in(Data::ReportLuns(select), c.be32(6)))
        }
        op::START_STOP_UNIT => start_stop_unit(cdb, disk),
        op::READ_6 | op::WRITE_6 => {
            let c = Cdb::new(cdb, 6)?;
            let lba = u32::from_be_bytes([0, c.u8(1) & 0x1F, c.u8(2), c.u8(3)]);
            // TRANSFER LENGTH 0 means 256 blocks in the 6-byte commands (SBC-3 5.8).
            let blocks = match c.u8(4) {
                0 => 256,
                n => u32::from(n),
            };
            let rw = Rw {
                write: opcode == op::WRITE_6,
                verify: false,
                has_flags: false,
                length_at: 4,
            };
            block_io(&c, disk, rw, u64::from(lba), blocks)
        }
        op::READ_10 | op::WRITE_10 | op::WRITE_AND_VERIFY_10 => {
            let c = Cdb::new(cdb, 10)?;
            let rw = Rw::new(opcode, op::READ_10, op::WRITE_AND_VERIFY_10, 7);
            block_io(&c, disk, rw, u64::from(c.be32(2)), u32::from(c.be16(7)))
        }
        op::READ_12 | op::WRITE_12 | op::WRITE_AND_VERIFY_12 => {
            let c = Cdb::new(cdb, 12)?;
            let rw = Rw::new(opcode, op::READ_12, op::WRITE_AND_VERIFY_12, 6);
            block_io(&c, disk, rw, u64::from(c.be32(2)), c.be32(6))
        }
        op::READ_16 | op::WRITE_16 | op::WRITE_AND_VERIFY_16 => {
            let c = Cdb::new(cdb, 16)?;
            let rw = Rw::new(opcode, op::READ_16, op::WRITE_AND_VERIFY_16, 10);
            block_io(&c, disk, rw, c.be64(2), c.be32(10))
        }
        op::VERIFY_10 => {
            let c = Cdb::new(cdb, 10)?;
            verify(&c, disk, u64::from(c.be32(2)), u64::from(c.be16(7)))
        }
        op::VERIFY_12 => {
            let c = Cdb::new(cdb, 12)?;
            verify(&c, disk, u64::from(c.be32(2)), u64::from(c.be32(6)))
        }
        op::VERIFY_16 => {
            let c = Cdb::new(cdb, 16)?;
            verify(&c, disk, c.be64(2), u64::from(c.be32(10)))
        }
        op::SYNCHRONIZE_CACHE_10 => {
            let c = Cdb::new(cdb, 10)?;
            synchronize_cache(disk, u64::from(c.be32(2)), u64::from(c.be16(7)))
        }
        op::SYNCHRONIZE_CACHE_16 => {
            let c = Cdb::new(cdb, 16)?;
            synchronize_cache(disk, c.be64(2), u64::from(c.be32(10)))
        }
        op::UNMAP => unmap(cdb, disk),
        op::WRITE_SAME_10 => {
            if !supports_write_same(disk) {
                return Err(Sense::INVALID_OPCODE);
            }
            let c = Cdb::new(cdb, 10)?;
            write_same(
                &c,
                disk,
                false,
                u64::from(c.be32(2)),
                u32::from(c.be16(7)),
                7,
            )
        }
        op::WRITE_SAME_16 => {
            if !supports_write_same(disk) {
                return Err(Sense::INVALID_OPCODE);
            }
            let c = Cdb::new(cdb, 16)?;
            write_same(&c, disk, true, c.be64(2), c.be32(10), 10)
        }
        _ => Err(Sense::INVALID_OPCODE),
    }
}

fn data_in(data: Data, allocation_length: u32) -> Command {
    Command::DataIn(DataIn {
        data,
        allocation_length,
    })
}

/// INQUIRY (SPC-4 6.6): EVPD selects a VPD page; CMDDT is obsolete and refused.
fn inquiry(cdb: &[u8], disk: &DiskInfo) -> Result<Command, Sense> {
    let c = Cdb::new(cdb, 6)?;
    refuse_bits(&c, 1, 0x02)?;
    let page = c.u8(2);
    let allocation_length = u32::from(c.be16(3));
    if !c.bit(1, 0) {
        if page != 0 {
            return Err(Sense::invalid_cdb_field(2, None));
        }
        return Ok(data_in(Data::StandardInquiry, allocation_length));
    }
    if !inquiry::supports_vpd(page, disk) {
        return Err(Sense::invalid_cdb_field(2, None));
    }
    Ok(data_in(Data::Vpd(page), allocation_length))
}

/// READ CAPACITY: with PMI = 0 the LOGICAL BLOCK ADDRESS must be 0 (SBC-3 5.15.1); with
/// PMI = 1 the last LBA is reported too, as no later block is slower to reach.
fn check_pmi(c: &Cdb<'_>, lba_set: bool, pmi_at: usize) -> Result<(), Sense> {
    if lba_set && !c.bit(pmi_at, 0) {
        return Err(Sense::invalid_cdb_field(2, None));
    }
    Ok(())
}

/// MODE SENSE(6) (SPC-4 6.11) and MODE SENSE(10) (SPC-4 6.12).
fn mode_sense(cdb: &[u8], ten: bool) -> Result<Command, Sense> {
    let c = Cdb::new(cdb, if ten { 10 } else { 6 })?;
    let control = match c.u8(2) >> 6 {
        0 => PageControl::Current,
        1 => PageControl::Changeable,
        2 => PageControl::Default,
        _ => PageControl::Saved,
    };
    let page = c.u8(2) & 0x3F;
    if !mode::supports_page(page) {
        return Err(Sense::invalid_cdb_field(2, Some(5)));
    }
    // Subpage 00h is the page itself, FFh all its subpages; there are no others.
    if !matches!(c.u8(3), 0x00 | 0xFF) {
        return Err(Sense::invalid_cdb_field(3, None));
    }
    let request = ModeSense {
        ten,
        control,
        page,
        dbd: c.bit(1, 3),
        llbaa: ten && c.bit(1, 4),
    };
    let allocation_length = if ten {
        u32::from(c.be16(7))
    } else {
        u32::from(c.u8(4))
    };
    Ok(data_in(Data::ModeSense(request), allocation_length))
}

/// MODE SELECT(6) (SPC-4 6.9) and MODE SELECT(10) (SPC-4 6.10): SP = 1 would save the pages,
/// which is not supported; an empty parameter list is not an error.
fn mode_select(c: &Cdb<'_>, parameter_list_length: u16, ten: bool) -> Result<Command, Sense> {
    refuse_bits(c, 1, 0x01)?;
    if parameter_list_length == 0 {
        return Ok(Command::Good);
    }
    Ok(Command::ModeSelect(ModeSelect {
        parameter_list_length,
        ten,
        page_format: c.bit(1, 4),
    }))
}

/// START STOP UNIT's POWER CONDITION values (SBC-3 table 78; SBC-4 5.31).
mod power {
    pub(super) const START_VALID: u8 = 0x0;
    pub(super) const ACTIVE: u8 = 0x1;
    pub(super) const IDLE: u8 = 0x2;
    pub(super) const STANDBY: u8 = 0x3;
    pub(super) const LU_CONTROL: u8 = 0x7;
    pub(super) const FORCE_IDLE_0: u8 = 0xA;
    pub(super) const FORCE_STANDBY_0: u8 = 0xB;
}

/// START STOP UNIT (SBC-3 5.25, SBC-4 5.31).
///
/// A virtio-blk device has no power conditions: the unit is always ready, so every transition
/// is accepted and the unit stays in the active power condition (the Power Condition mode page
/// enables no timer). What a transition must still do is keep the data: entering a condition
/// in which the medium may not be accessed (stopped, standby) writes the cache back first
/// unless NO_FLUSH is set. By POWER CONDITION (byte 4, bits 7:4):
///
/// - 0h START_VALID: START = 1 (and LOEJ = 1: load the medium already loaded) is GOOD;
///   START = 0 stops: a flush. START = 0 with LOEJ = 1 would eject a medium that is not
///   removable (RMB = 0): INVALID FIELD IN CDB.
/// - 1h ACTIVE, 7h LU_CONTROL (no timer to start): GOOD.
/// - 2h IDLE, Ah FORCE_IDLE_0: GOOD; POWER CONDITION MODIFIER 0-2 (idle_a, idle_b, idle_c).
/// - 3h STANDBY, Bh FORCE_STANDBY_0: a flush; POWER CONDITION MODIFIER 0-1 (standby_z,
///   standby_y).
/// - Any other value is reserved or obsolete: INVALID FIELD IN CDB at byte 4, bit 7.
///
/// START and LOEJ are ignored unless POWER CONDITION is START_VALID (SBC-3 5.25); the
/// modifier is reserved (not checked) for the conditions that have none. IMMED is ignored:
/// completing after the flush is always allowed.
fn start_stop_unit(cdb: &[u8], disk: &DiskInfo) -> Result<Command, Sense> {
    let c = Cdb::new(cdb, 6)?;
    let condition = c.u8(4) >> 4;
    let modifier = c.u8(3) & 0x0F;
    let no_flush = c.bit(4, 2);
    let stops = match condition {
        power::START_VALID => {
            let (loej, start) = (c.bit(4, 1), c.bit(4, 0));
            if loej && !start {
                return Err(Sense::invalid_cdb_field(4, Some(1)));
            }
            !start
        }
        power::ACTIVE | power::LU_CONTROL => false,
        power::IDLE | power::FORCE_IDLE_0 => {
            if modifier > 2 {
                return Err(Sense::invalid_cdb_field(3, Some(3)));
            }
            false
        }
        power::STANDBY | power::FORCE_STANDBY_0 => {
            if modifier > 1 {
                return Err(Sense::invalid_cdb_field(3, Some(3)));
            }
            true
        }
        _ => return Err(Sense::invalid_cdb_field(4, Some(7))),
    };
    Ok(if stops && !no_flush && disk.flush {
        Command::Flush
    } else {
        Command::Good
    })
}

/// How a READ/WRITE variant reads.
#[derive(Clone, Copy)]
struct Rw {
    write: bool,
    /// WRITE AND VERIFY: BYTCHK must be 0 and the write is forced to the medium.
    verify: bool,
    /// Byte 1 carries RDPROTECT/WRPROTECT, DPO, FUA (not in the 6-byte commands).
    has_flags: bool,
    /// Where TRANSFER LENGTH is, for the field pointer.
    length_at: u16,
}

impl Rw {
    fn new(opcode: u8, read: u8, write_and_verify: u8, length_at: u16) -> Self {
        Self {
            write: opcode != read,
            verify: opcode == write_and_verify,
            has_flags: true,
            length_at,
        }
    }
}

/// READ and WRITE (SBC-3 5.8-5.11, 5.32-5.35) and WRITE AND VERIFY (SBC-3 5.36-5.38).
fn block_io(c: &Cdb<'_>, disk: &DiskInfo, rw: Rw, lba: u64, blocks: u32) -> Result<Command, Sense> {
    let mut fua = false;
    if rw.has_flags {
        // No protection information: RDPROTECT/WRPROTECT must be 000b (SBC-3 table 90).
        refuse_bits(c, 1, 0xE0)?;
        if rw.verify {
            refuse_bits(c, 1, 0x06)?; // BYTCHK: no byte-by-byte compare.
        }
        fua = rw.verify || c.bit(1, 3);
    }
    if disk.max_transfer_blocks != 0 && blocks > disk.max_transfer_blocks {
        // SBC-3 6.5.3: a TRANSFER LENGTH over MAXIMUM TRANSFER LENGTH is an invalid field.
        return Err(Sense::invalid_cdb_field(rw.length_at, None));
    }
    disk.check_ready()?;
    disk.check_range(lba, u64::from(blocks))?;
    if rw.write {
        disk.check_writable()?;
    }
    if blocks == 0 {
        return Ok(Command::Good);
    }
    let fua = rw.write && fua && disk.write_cache_enabled() && disk.flush;
    let io = Io { lba, blocks, fua };
    Ok(if rw.write {
        Command::Write(io)
    } else {
        Command::Read(io)
    })
}

/// VERIFY (SBC-3 5.29-5.31): the medium check is the range check; BYTCHK != 0 (compare with
/// data-out) and VRPROTECT are not supported.
fn verify(c: &Cdb<'_>, disk: &DiskInfo, lba: u64, blocks: u64) -> Result<Command, Sense> {
    refuse_bits(c, 1, 0xE0)?;
    refuse_bits(c, 1, 0x06)?;
    disk.check_ready()?;
    disk.check_range(lba, blocks)?;
    Ok(Command::Good)
}

/// SYNCHRONIZE CACHE (SBC-3 5.22, 5.23): the whole cache is flushed whatever the range (0
/// blocks means "to the end"), after the range is checked. IMMED is ignored: completing after
/// the flush is always allowed. Without a flush the device writes through.
fn synchronize_cache(disk: &DiskInfo, lba: u64, blocks: u64) -> Result<Command, Sense> {
    disk.check_ready()?;
    disk.check_range(lba, blocks)?;
    Ok(if disk.flush {
        Command::Flush
    } else {
        Command::Good
    })
}

/// UNMAP (SBC-3 5.28.1).
fn unmap(cdb: &[u8], disk: &DiskInfo) -> Result<Command, Sense> {
    if disk.deallocation().is_none() {
        return Err(Sense::INVALID_OPCODE);
    }
    let c = Cdb::new(cdb, 10)?;
    refuse_bits(&c, 1, 0x01)?; // ANCHOR, with ANC_SUP = 0.
    disk.check_ready()?;
    disk.check_writable()?;
    match c.be16(7) {
        0 => Ok(Command::Good),
        parameter_list_length => Ok(Command::Unmap {
            parameter_list_length,
        }),
    }
}

fn supports_write_same(disk: &DiskInfo) -> bool {
    disk.write_zeroes.is_some() || disk.deallocation().is_some()
}

/// WRITE SAME(10) and (16) (SBC-3 5.41, 5.42); see [`WriteSame`] for what can be carried out.
fn write_same(
    c: &Cdb<'_>,
    disk: &DiskInfo,
    sixteen: bool,
    lba: u64,
    blocks: u32,
    length_at: u16,
) -> Result<Command, Sense> {
    // WRPROTECT, ANCHOR, PBDATA/LBDATA (obsolete): none supported. Bit 0 is NDOB in (16).
    refuse_bits(c, 1, 0xE0 | 0x10 | 0x06)?;
    let unmap = c.bit(1, 3);
    let ndob = sixteen && c.bit(1, 0);
    if !unmap && disk.write_zeroes.is_none() {
        // Only zeroes can be written, and only by write-zeroes.
        return Err(Sense::invalid_cdb_field(1, Some(3)));
    }
    // WSNZ = 1: NUMBER OF LOGICAL BLOCKS 0 ("to the end") is refused (SBC-3 6.5.3).
    if blocks == 0 || blocks > disk.max_write_same_blocks() {
        return Err(Sense::invalid_cdb_field(length_at, None));
    }
    disk.check_ready()?;
    disk.check_range(lba, u64::from(blocks))?;
    disk.check_writable()?;
    Ok(Command::WriteSame(WriteSame {
        lba,
        blocks,
        unmap,
        ndob,
    }))
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
    use std::vec::Vec;

    use super::*;
    use crate::scsi::disk::{BlockSize, Serial, WriteCache};
    use crate::scsi::sense::SenseKey;
    use crate::scsi::testdisk::{disk4k, disk512};

    fn rw10(opcode: u8, flags: u8, lba: u32, blocks: u16) -> [u8; 10] {
        let mut c = [0u8; 10];
        c[0] = opcode;
        c[1] = flags;
        c[2..6].copy_from_slice(&lba.to_be_bytes());
        c[7..9].copy_from_slice(&blocks.to_be_bytes());
        c
    }

    fn rw16(opcode: u8, flags: u8, lba: u64, blocks: u32) -> [u8; 16] {
        let mut c = [0u8; 16];
        c[0] = opcode;
        c[1] = flags;
        c[2..10].copy_from_slice(&lba.to_be_bytes());
        c[10..14].copy_from_slice(&blocks.to_be_bytes());
        c
    }

    fn rw12(opcode: u8, lba: u32, blocks: u32) -> [u8; 12] {
        let mut c = [0u8; 12];
        c[0] = opcode;
        c[2..6].copy_from_slice(&lba.to_be_bytes());
        c[6..10].copy_from_slice(&blocks.to_be_bytes());
        c
    }

    fn io(lba: u64, blocks: u32, fua: bool) -> Io {
        Io { lba, blocks, fua }
    }

    /// The I/O path's decoder answers only what `decode` answers the same, over READ and WRITE
    /// (10) and (16) with every flag byte, CONTROL byte, length and range near the disk's end,
    /// on disks with and without a write cache, read-only, empty and with a transfer limit.
    #[test]
    fn the_fast_path_agrees_with_decode() {
        let mut disks = Vec::new();
        for base in [disk512(), disk4k()] {
            disks.push(base);
            let mut d = base;
            d.read_only = true;
            disks.push(d);
            let mut d = base;
            d.capacity = 0;
            disks.push(d);
            let mut d = base;
            d.max_transfer_blocks = 8;
            d.write_cache = Some(WriteCache {
                enabled: false,
                changeable: true,
            });
            disks.push(d);
            let mut d = base;
            d.max_transfer_blocks = 0;
            d.write_cache = None;
            disks.push(d);
            let mut d = base;
            d.flush = false;
            disks.push(d);
        }
        let mut rng = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut fast = 0;
        for disk in &disks {
            for opcode in [
                op::READ_10,
                op::WRITE_10,
                op::READ_16,
                op::WRITE_16,
                op::READ_12,
                0x00,
            ] {
                for round in 0..400 {
                    let r = next();
                    let flags = if round % 2 == 0 {
                        (r & 0x08) as u8
                    } else {
                        r as u8
                    };
                    let lba = match round % 4 {
                        0 => r >> 40 & 0xFF,
                        1 => disk.capacity.saturating_sub(r >> 8 & 0xF),
                        2 => r >> 16 & 0xFFFF_FFFF,
                        _ => r,
                    };
                    let blocks = (r >> 24 & 0x1F) as u32;
                    let mut head = [0u8; 16];
                    let full = if opcode == op::READ_10 || opcode == op::WRITE_10 {
                        let mut c = rw10(opcode, flags, lba as u32, blocks as u16);
                        c[9] = if round % 3 == 0 { (r >> 48) as u8 } else { 0 };
                        head[..10].copy_from_slice(&c);
                        c.to_vec()
                    } else {
                        let mut c = rw16(opcode, flags, lba, blocks);
                        c[15] = if round % 3 == 0 { (r >> 48) as u8 } else { 0 };
                        head.copy_from_slice(&c);
                        c.to_vec()
                    };
                    for len in [full.len(), full.len().saturating_sub(1), 6] {
                        let cdb = &full[..len];
                        if let Some(command) = decode_read_write(&head, len, disk) {
                            fast += 1;
                            assert_eq!(Ok(command), decode(cdb, disk), "{cdb:02x?}");
                        }
                    }
                }
            }
        }
        // It does take the common case.
        assert!(fast > 1000, "{fast}");
        let c = rw16(op::READ_16, 0, 8, 8);
        assert_eq!(
            decode_read_write(&c, 16, &disk512()),
            Some(Command::Read(io(8, 8, false)))
        );
        // Both lengths: READ(10) and WRITE(10) too.
        for opcode in [op::READ_10, op::WRITE_10] {
            let mut head = [0u8; 16];
            head[..10].copy_from_slice(&rw10(opcode, 0, 8, 8));
            let io = io(8, 8, false);
            let expected = if opcode == op::READ_10 {
                Command::Read(io)
            } else {
                Command::Write(io)
            };
            assert_eq!(decode_read_write(&head, 10, &disk512()), Some(expected));
        }
    }

    fn answer(cdb: &[u8], disk: &DiskInfo) -> Vec<u8> {
        let Ok(Command::DataIn(data)) = decode(cdb, disk) else {
            panic!("{:?}", decode(cdb, disk));
        };
        let mut buf = [0u8; 512];
        let n = data.write(disk, &mut buf);
        buf[..n].to_vec()
    }

    #[test]
    fn read_write_6() {
        let d = disk512();
        assert_eq!(
            decode(&[0x08, 0x01, 0x02, 0x03, 0x04, 0], &d),
            Ok(Command::Read(io(0x01_0203, 4, false)))
        );
        // Bits 7:5 of byte 1 are not part of the LBA.
        assert_eq!(
            decode(&[0x08, 0xE0, 0, 5, 1, 0], &d),
            Ok(Command::Read(io(5, 1, false)))
        );
        // 0 means 256 blocks.
        assert_eq!(
            decode(&[0x0A, 0, 0, 0, 0, 0], &d),
            Ok(Command::Write(io(0, 256, false)))
        );
    }

    #[test]
    fn read_write_10_12_16() {
        let d = disk512();
        assert_eq!(
            decode(&rw10(0x28, 0, 100, 8), &d),
            Ok(Command::Read(io(100, 8, false)))
        );
        assert_eq!(
            decode(&rw10(0x2A, 0, 100, 8), &d),
            Ok(Command::Write(io(100, 8, false)))
        );
        assert_eq!(
            decode(&rw12(0xA8, 7, 9), &d),
            Ok(Command::Read(io(7, 9, false)))
        );
        assert_eq!(
            decode(&rw12(0xAA, 7, 9), &d),
            Ok(Command::Write(io(7, 9, false)))
        );
        assert_eq!(
            decode(&rw16(0x88, 0, 1 << 20, 2048), &d),
            Ok(Command::Read(io(1 << 20, 2048, false)))
        );
        assert_eq!(
            decode(&rw16(0x8A, 0x10, 3, 1), &d),
            Ok(Command::Write(io(3, 1, false)))
        );
    }

    #[test]
    fn fua_only_matters_with_an_enabled_cache() {
        let mut d = disk512();
        assert_eq!(
            decode(&rw10(0x2A, 0x08, 0, 1), &d),
            Ok(Command::Write(io(0, 1, true)))
        );
        assert_eq!(
            decode(&rw10(0x28, 0x08, 0, 1), &d),
            Ok(Command::Read(io(0, 1, false)))
        );
        assert_eq!(
            decode(&rw10(0x2E, 0, 0, 1), &d),
            Ok(Command::Write(io(0, 1, true)))
        );
        d.write_cache = Some(WriteCache {
            enabled: false,
            changeable: true,
        });
        assert_eq!(
            decode(&rw10(0x2A, 0x08, 0, 1), &d),
            Ok(Command::Write(io(0, 1, false)))
        );
    }

    #[test]
    fn zero_length_transfers_complete_good() {
        let d = disk512();
        assert_eq!(decode(&rw10(0x28, 0, 5, 0), &d), Ok(Command::Good));
        assert_eq!(decode(&rw16(0x8A, 0, 5, 0), &d), Ok(Command::Good));
        assert_eq!(decode(&rw12(0xA8, 5, 0), &d), Ok(Command::Good));
        // Still range-checked.
        assert_eq!(
            decode(&rw10(0x28, 0, 1 << 21, 0), &d).unwrap_err().asc,
            0x21
        );
    }

    #[test]
    fn lba_out_of_range_is_overflow_safe() {
        let d = disk512();
        let last = (1u64 << 21) - 1;
        assert_eq!(
            decode(&rw16(0x88, 0, last, 1), &d),
            Ok(Command::Read(io(last, 1, false)))
        );
        let e = decode(&rw16(0x88, 0, last, 2), &d).unwrap_err();
        assert_eq!(
            (e.key, e.asc, e.ascq),
            (SenseKey::IllegalRequest, 0x21, 0x00)
        );
        assert_eq!(e.information, Some(last));
        assert_eq!(
            decode(&rw16(0x88, 0, u64::MAX, 1), &d).unwrap_err().asc,
            0x21
        );
        assert_eq!(
            decode(&rw16(0x8A, 0, u64::MAX - 1, 2048), &d)
                .unwrap_err()
                .asc,
            0x21
        );
        assert_eq!(
            decode(&rw16(0x8F, 0, u64::MAX, u32::MAX), &d)
                .unwrap_err()
                .asc,
            0x21
        );
    }

    #[test]
    fn transfer_limit_is_an_invalid_field() {
        let d = disk512();
        assert_eq!(
            decode(&rw10(0x28, 0, 0, 2049), &d),
            Err(Sense::invalid_cdb_field(7, None))
        );
        assert_eq!(
            decode(&rw16(0x8A, 0, 0, u32::MAX), &d),
            Err(Sense::invalid_cdb_field(10, None))
        );
        assert_eq!(
            decode(&rw12(0xA8, 0, 4096), &d),
            Err(Sense::invalid_cdb_field(6, None))
        );
        // READ(6) of 256 blocks on a disk limited to 255.
        let mut small = d;
        small.max_transfer_blocks = 255;
        assert_eq!(
            decode(&[0x08, 0, 0, 0, 0, 0], &small),
            Err(Sense::invalid_cdb_field(4, None))
        );
        small.max_transfer_blocks = 0;
        assert!(decode(&rw16(0x88, 0, 0, 1 << 21), &small).is_ok());
    }

    #[test]
    fn protection_fields_refused() {
        let d = disk512();
        assert_eq!(
            decode(&rw10(0x28, 0x20, 0, 1), &d),
            Err(Sense::invalid_cdb_field(1, Some(5)))
        );
        assert_eq!(
            decode(&rw16(0x8A, 0xE0, 0, 1), &d),
            Err(Sense::invalid_cdb_field(1, Some(7)))
        );
        assert_eq!(
            decode(&rw10(0x2E, 0x02, 0, 1), &d),
            Err(Sense::invalid_cdb_field(1, Some(1)))
        );
    }

    #[test]
    fn read_only_disk_refuses_writes() {
        let mut d = disk512();
        d.read_only = true;
        assert_eq!(
            decode(&rw10(0x28, 0, 0, 1), &d),
            Ok(Command::Read(io(0, 1, false)))
        );
        for cdb in [
            &rw10(0x2A, 0, 0, 1)[..],
            &rw10(0x2A, 0, 0, 0),
            &[0x0A, 0, 0, 0, 1, 0],
            &rw16(0x8E, 0, 0, 1),
        ] {
            let e = decode(cdb, &d).unwrap_err();
            assert_eq!((e.key, e.asc, e.ascq), (SenseKey::DataProtect, 0x27, 0x00));
        }
        assert_eq!(
            decode(&rw16(0x93, 0x08, 0, 1), &d),
            Err(Sense::WRITE_PROTECTED)
        );
        assert_eq!(
            decode(&[0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0], &d),
            Err(Sense::WRITE_PROTECTED)
        );
        // The range is checked first.
        assert_eq!(
            decode(&rw10(0x2A, 0, 1 << 21, 1), &d).unwrap_err().asc,
            0x21
        );
        // Flushing and verifying are not writes.
        assert_eq!(decode(&rw10(0x35, 0, 0, 0), &d), Ok(Command::Flush));
        assert_eq!(decode(&rw10(0x2F, 0, 0, 1), &d), Ok(Command::Good));
    }

    #[test]
    fn four_kn_io_in_logical_blocks() {
        let d = disk4k();
        let Ok(Command::Write(w)) = decode(&rw10(0x2A, 0, 10, 2), &d) else {
            panic!()
        };
        assert_eq!(
            w.sectors(&d),
            Some(SectorRange {
                sector: 80,
                sectors: 16
            })
        );
        assert_eq!(w.bytes(&d), Some(8192));
        assert_eq!(
            decode(&rw10(0x28, 0, 1 << 18, 1), &d).unwrap_err().asc,
            0x21
        );
        assert_eq!(
            decode(&rw10(0x28, 0, 0, 257), &d),
            Err(Sense::invalid_cdb_field(7, None))
        );
    }

    #[test]
    fn control_byte_and_short_cdbs() {
        let d = disk512();
        let mut c = rw10(0x28, 0, 0, 1);
        c[9] = 0x04;
        assert_eq!(decode(&c, &d), Err(Sense::invalid_cdb_field(9, Some(2))));
        c[9] = 0x01;
        assert_eq!(decode(&c, &d), Err(Sense::invalid_cdb_field(9, Some(0))));
        c[9] = 0xC0; // vendor specific bits are ignored
        assert!(decode(&c, &d).is_ok());
        assert_eq!(decode(&c[..9], &d), Err(Sense::INVALID_FIELD_IN_CDB));
        assert_eq!(decode(&[0x88; 15], &d), Err(Sense::INVALID_FIELD_IN_CDB));
        assert_eq!(decode(&[], &d), Err(Sense::INVALID_OPCODE));
        // A longer buffer (Storport's 16-byte CDB) is fine.
        let mut long = [0u8; 16];
        long[..10].copy_from_slice(&rw10(0x28, 0, 0, 1));
        assert!(decode(&long, &d).is_ok());
    }

    #[test]
    fn unknown_opcodes() {
        let d = disk512();
        for opcode in [0x04u8, 0x1E, 0x2B, 0x4D, 0x5E, 0x7F, 0x89, 0xA3, 0xC0, 0xFF] {
            let e = decode(&[opcode; 16], &d).unwrap_err();
            assert_eq!(
                (e.key, e.asc, e.ascq),
                (SenseKey::IllegalRequest, 0x20, 0x00),
                "{opcode:#x}"
            );
        }
        let mut no_provisioning = d;
        no_provisioning.discard = None;
        no_provisioning.write_zeroes = None;
        assert_eq!(
            decode(&[0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0], &no_provisioning),
            Err(Sense::INVALID_OPCODE)
        );
        assert_eq!(
            decode(&rw16(0x93, 0x08, 0, 1), &no_provisioning),
            Err(Sense::INVALID_OPCODE)
        );
        assert_eq!(
            decode(&rw10(0x41, 0, 0, 1), &no_provisioning),
            Err(Sense::INVALID_OPCODE)
        );
    }

    #[test]
    fn synchronize_cache() {
        let mut d = disk512();
        assert_eq!(decode(&rw10(0x35, 0x02, 0, 0), &d), Ok(Command::Flush));
        assert_eq!(decode(&rw16(0x91, 0, 5, 10), &d), Ok(Command::Flush));
        assert_eq!(
            decode(&rw16(0x91, 0, 1 << 21, 0), &d).unwrap_err().asc,
            0x21
        );
        d.flush = false;
        assert_eq!(decode(&rw10(0x35, 0, 0, 0), &d), Ok(Command::Good));
    }

    #[test]
    fn verify_range_and_bytchk() {
        let d = disk512();
        assert_eq!(decode(&rw10(0x2F, 0, 0, 100), &d), Ok(Command::Good));
        assert_eq!(decode(&rw12(0xAF, 0, 1 << 21), &d), Ok(Command::Good));
        assert_eq!(
            decode(&rw16(0x8F, 0, 1, 1 << 21), &d).unwrap_err().asc,
            0x21
        );
        assert_eq!(
            decode(&rw10(0x2F, 0x02, 0, 1), &d),
            Err(Sense::invalid_cdb_field(1, Some(1)))
        );
        assert_eq!(
            decode(&rw16(0x8F, 0x04, 0, 1), &d),
            Err(Sense::invalid_cdb_field(1, Some(2)))
        );
    }

    #[test]
    fn unmap_cdb() {
        let d = disk512();
        assert_eq!(
            decode(&[0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0], &d),
            Ok(Command::Unmap {
                parameter_list_length: 24
            })
        );
        assert_eq!(
            decode(&[0x42, 0, 0, 0, 0, 0, 0, 0, 0, 0], &d),
            Ok(Command::Good)
        );
        assert_eq!(
            decode(&[0x42, 1, 0, 0, 0, 0, 0, 0, 24, 0], &d),
            Err(Sense::invalid_cdb_field(1, Some(0)))
        );
    }

    #[test]
    fn write_same_cdbs() {
        let d = disk512();
        let expect = |lba, blocks, unmap, ndob| {
            Ok(Command::WriteSame(WriteSame {
                lba,
                blocks,
                unmap,
                ndob,
            }))
        };
        assert_eq!(
            decode(&rw10(0x41, 0x08, 10, 20), &d),
            expect(10, 20, true, false)
        );
        assert_eq!(
            decode(&rw16(0x93, 0x00, 10, 20), &d),
            expect(10, 20, false, false)
        );
        assert_eq!(
            decode(&rw16(0x93, 0x09, 10, 20), &d),
            expect(10, 20, true, true)
        );
        // NDOB does not exist in WRITE SAME(10); bit 0 there is ignored.
        assert_eq!(
            decode(&rw10(0x41, 0x09, 10, 20), &d),
            expect(10, 20, true, false)
        );
        assert_eq!(
            decode(&rw16(0x93, 0x08, 0, 0), &d),
            Err(Sense::invalid_cdb_field(10, None))
        );
        assert_eq!(
            decode(&rw10(0x41, 0x08, 0, 0), &d),
            Err(Sense::invalid_cdb_field(7, None))
        );
        assert_eq!(
            decode(&rw16(0x93, 0x08, 0, 0x40_0000), &d),
            Err(Sense::invalid_cdb_field(10, None))
        );
        assert_eq!(
            decode(&rw16(0x93, 0x18, 0, 1), &d),
            Err(Sense::invalid_cdb_field(1, Some(4)))
        );
        assert_eq!(
            decode(&rw16(0x93, 0x0A, 0, 1), &d),
            Err(Sense::invalid_cdb_field(1, Some(1)))
        );
        assert_eq!(
            decode(&rw16(0x93, 0x08, 1 << 21, 1), &d).unwrap_err().asc,
            0x21
        );
        // Discard-only 4Kn disk: UNMAP = 0 cannot be carried out.
        let mut d4 = disk4k();
        d4.capacity = 1 << 30;
        assert_eq!(
            decode(&rw16(0x93, 0x00, 0, 1), &d4),
            Err(Sense::invalid_cdb_field(1, Some(3)))
        );
        assert_eq!(
            decode(&rw16(0x93, 0x08, 0, 0x7_FFFF), &d4),
            expect(0, 0x7_FFFF, true, false)
        );
        assert_eq!(
            decode(&rw16(0x93, 0x08, 0, 0x8_0000), &d4),
            Err(Sense::invalid_cdb_field(10, None))
        );
    }

    #[test]
    fn test_unit_ready_and_empty_disk() {
        let d = disk512();
        assert_eq!(decode(&[0; 6], &d), Ok(Command::Good));
        let empty = DiskInfo::new(BlockSize::B512, 0);
        let e = decode(&[0; 6], &empty).unwrap_err();
        assert_eq!((e.key, e.asc, e.ascq), (SenseKey::NotReady, 0x3A, 0x00));
        assert_eq!(
            decode(&[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], &empty),
            Err(Sense::MEDIUM_NOT_PRESENT)
        );
        assert_eq!(
            decode(&rw10(0x28, 0, 0, 1), &empty),
            Err(Sense::MEDIUM_NOT_PRESENT)
        );
        // INQUIRY still works.
        assert!(decode(&[0x12, 0, 0, 0, 36, 0], &empty).is_ok());
    }

    #[test]
    fn start_stop_unit() {
        let d = disk512();
        let ssu = |modifier: u8, byte4: u8| decode(&[0x1B, 0, 0, modifier, byte4, 0], &d);
        // START_VALID: start, stop (flush), stop with NO_FLUSH, load, eject (refused).
        assert_eq!(ssu(0, 0x01), Ok(Command::Good));
        assert_eq!(
            decode(&[0x1B, 1, 0, 0, 0x00, 0], &d),
            Ok(Command::Flush),
            "IMMED"
        );
        assert_eq!(ssu(0, 0x04), Ok(Command::Good));
        assert_eq!(ssu(0, 0x03), Ok(Command::Good));
        assert_eq!(ssu(0, 0x02), Err(Sense::invalid_cdb_field(4, Some(1))));
        // ACTIVE and LU_CONTROL: nothing to do; START and LOEJ are ignored.
        assert_eq!(ssu(0, 0x10), Ok(Command::Good));
        assert_eq!(ssu(0, 0x12), Ok(Command::Good));
        assert_eq!(ssu(0, 0x70), Ok(Command::Good));
        // IDLE and FORCE_IDLE_0 with idle_a, idle_b, idle_c; a fourth modifier is refused.
        for condition in [0x20, 0xA0] {
            for modifier in 0..=2 {
                assert_eq!(ssu(modifier, condition), Ok(Command::Good));
            }
            assert_eq!(ssu(3, condition), Err(Sense::invalid_cdb_field(3, Some(3))));
            assert_eq!(
                ssu(0x0F, condition),
                Err(Sense::invalid_cdb_field(3, Some(3)))
            );
        }
        // STANDBY and FORCE_STANDBY_0 with standby_z, standby_y: the cache is written back
        // first unless NO_FLUSH.
        for condition in [0x30, 0xB0] {
            for modifier in 0..=1 {
                assert_eq!(ssu(modifier, condition), Ok(Command::Flush));
                assert_eq!(ssu(modifier, condition | 0x04), Ok(Command::Good));
            }
            assert_eq!(ssu(2, condition), Err(Sense::invalid_cdb_field(3, Some(3))));
        }
        // The modifier is reserved, not checked, where the condition has none.
        assert_eq!(ssu(0x0F, 0x10), Ok(Command::Good));
        assert_eq!(ssu(0x0F, 0x00), Ok(Command::Flush));
        // Reserved and obsolete conditions.
        for condition in [0x4, 0x5, 0x6, 0x8, 0x9, 0xC, 0xD, 0xE, 0xF] {
            assert_eq!(
                ssu(0, condition << 4 | 0x01),
                Err(Sense::invalid_cdb_field(4, Some(7))),
                "{condition:X}"
            );
        }
        // A disk without a cache to flush stops without a flush.
        let mut through = d;
        through.flush = false;
        through.write_cache = None;
        assert_eq!(
            decode(&[0x1B, 0, 0, 0, 0x00, 0], &through),
            Ok(Command::Good)
        );
        assert_eq!(
            decode(&[0x1B, 0, 0, 0, 0x30, 0], &through),
            Ok(Command::Good)
        );
        // NACA in the CONTROL byte.
        assert_eq!(
            decode(&[0x1B, 0, 0, 0, 0x01, 0x04], &d),
            Err(Sense::invalid_cdb_field(5, Some(2)))
        );
    }

    #[test]
    fn request_sense_cdb() {
        let d = disk512();
        assert_eq!(
            decode(&[0x03, 0, 0, 0, 18, 0], &d),
            Ok(Command::RequestSense {
                allocation_length: 18
            })
        );
        assert_eq!(
            decode(&[0x03, 1, 0, 0, 18, 0], &d),
            Err(Sense::invalid_cdb_field(1, Some(0)))
        );
    }

    #[test]
    fn unit_attention_exemptions() {
        assert!(!reports_unit_attention(&[0x12, 0, 0, 0, 36, 0]));
        assert!(!reports_unit_attention(&[0xA0; 12]));
        assert!(!reports_unit_attention(&[0x03; 6]));
        assert!(reports_unit_attention(&[0x00; 6]));
        assert!(reports_unit_attention(&[0x28; 10]));
        assert!(reports_unit_attention(&[]));
    }

    #[test]
    fn inquiry_standard_and_truncation() {
        let d = disk512();
        let full = answer(&[0x12, 0, 0, 0, 0xFF, 0], &d);
        assert_eq!(full.len(), 74);
        assert_eq!(answer(&[0x12, 0, 0, 0, 36, 0], &d), full[..36]);
        assert_eq!(answer(&[0x12, 0, 0, 0, 5, 0], &d), full[..5]);
        assert!(answer(&[0x12, 0, 0, 0, 0, 0], &d).is_empty());
        // 16-bit allocation length (SPC-4).
        assert_eq!(answer(&[0x12, 0, 0, 0x01, 0x00, 0], &d).len(), 74);
        // A short data buffer truncates too.
        let Ok(Command::DataIn(data)) = decode(&[0x12, 0, 0, 0, 0xFF, 0], &d) else {
            panic!()
        };
        assert_eq!(data.allocation_length(), 255);
        let mut tiny = [0u8; 3];
        assert_eq!(data.write(&d, &mut tiny), 3);
        assert_eq!(tiny, [0, 0, 6]);
    }

    #[test]
    fn inquiry_vpd_and_errors() {
        let d = disk512();
        assert_eq!(answer(&[0x12, 1, 0x00, 0, 0xFF, 0], &d)[3], 6);
        assert_eq!(&answer(&[0x12, 1, 0x80, 0, 0xFF, 0], &d)[4..], b"QM00001");
        assert_eq!(answer(&[0x12, 1, 0xB0, 0, 0xFF, 0], &d).len(), 64);
        assert_eq!(answer(&[0x12, 1, 0xB0, 0, 4, 0], &d), [0, 0xB0, 0, 0x3C]);
        assert_eq!(
            decode(&[0x12, 0, 0x80, 0, 0xFF, 0], &d),
            Err(Sense::invalid_cdb_field(2, None))
        );
        assert_eq!(
            decode(&[0x12, 1, 0xC0, 0, 0xFF, 0], &d),
            Err(Sense::invalid_cdb_field(2, None))
        );
        assert_eq!(
            decode(&[0x12, 2, 0, 0, 0xFF, 0], &d),
            Err(Sense::invalid_cdb_field(1, Some(1)))
        );
        let mut no_serial = d;
        no_serial.serial = Serial::NONE;
        assert_eq!(
            decode(&[0x12, 1, 0x80, 0, 0xFF, 0], &no_serial),
            Err(Sense::invalid_cdb_field(2, None))
        );
    }

    #[test]
    fn read_capacity_cdbs() {
        let d = disk4k();
        assert_eq!(
            answer(&[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], &d),
            [0, 0x03, 0xFF, 0xFF, 0, 0, 0x10, 0]
        );
        assert_eq!(
            decode(&[0x25, 0, 0, 0, 0, 1, 0, 0, 0, 0], &d),
            Err(Sense::invalid_cdb_field(2, None))
        );
        assert!(decode(&[0x25, 0, 0, 0, 0, 1, 0, 0, 1, 0], &d).is_ok());
        let mut rc16 = [0u8; 16];
        rc16[0] = 0x9E;
        rc16[1] = 0x10;
        rc16[13] = 32;
        let data = answer(&rc16, &d);
        assert_eq!(data.len(), 32);
        assert_eq!(data[..12], [0, 0, 0, 0, 0, 0x03, 0xFF, 0xFF, 0, 0, 0x10, 0]);
        assert_eq!(data[14], 0x80);
        rc16[13] = 12;
        assert_eq!(answer(&rc16, &d).len(), 12);
        rc16[1] = 0x12; // GET LBA STATUS
        assert_eq!(decode(&rc16, &d), Err(Sense::invalid_cdb_field(1, Some(4))));
        rc16[1] = 0x10;
        rc16[9] = 1; // LBA without PMI
        assert_eq!(decode(&rc16, &d), Err(Sense::invalid_cdb_field(2, None)));
    }

    #[test]
    fn mode_sense_cdbs() {
        let d = disk512();
        let data = answer(&[0x1A, 0x08, 0x08, 0, 0xFF, 0], &d);
        assert_eq!(data[..4], [23, 0, 0x10, 0]);
        assert_eq!(data[4..7], [0x08, 0x12, 0x04]);
        assert_eq!(
            answer(&[0x1A, 0, 0x3F, 0, 0xFF, 0], &d).len(),
            4 + 8 + 20 + 12 + 40 + 12
        );
        assert_eq!(
            answer(&[0x1A, 0, 0x3F, 0xFF, 0xFF, 0], &d).len(),
            4 + 8 + 20 + 12 + 40 + 12
        );
        assert_eq!(answer(&[0x1A, 0, 0x3F, 0, 4, 0], &d), [95, 0, 0x10, 8]);
        let ten = answer(&[0x5A, 0x10, 0x0A, 0, 0, 0, 0, 0, 0xFF, 0], &d);
        assert_eq!(ten[..8], [0, 34, 0, 0x10, 1, 0, 0, 16]);
        assert_eq!(ten[24..28], [0x0A, 0x0A, 0x02, 0x10]);
        // Changeable values.
        assert_eq!(answer(&[0x1A, 0x08, 0x48, 0, 0xFF, 0], &d)[6], 0x04);
        // Saved values are the default values.
        assert_eq!(
            answer(&[0x1A, 0, 0xFF, 0, 0xFF, 0], &d),
            answer(&[0x1A, 0, 0xBF, 0, 0xFF, 0], &d)
        );
        assert_eq!(answer(&[0x1A, 0, 0xFF, 0, 0xFF, 0], &d).len(), 4 + 8 + 84);
        // Informational exceptions and power condition, alone.
        assert_eq!(
            answer(&[0x1A, 0x08, 0xDC, 0, 0xFF, 0], &d),
            [15, 0, 0x10, 0, 0x1C, 0x0A, 0x08, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(
            answer(&[0x1A, 0x08, 0x1A, 0, 0xFF, 0], &d)[4..6],
            [0x1A, 0x26]
        );
        for unsupported in [0x00, 0x01, 0x19, 0x1B, 0x1D, 0x3E] {
            assert_eq!(
                decode(&[0x1A, 0, unsupported, 0, 0xFF, 0], &d),
                Err(Sense::invalid_cdb_field(2, Some(5))),
                "{unsupported:02X}"
            );
        }
        assert_eq!(
            decode(&[0x1A, 0, 0x08, 0x01, 0xFF, 0], &d),
            Err(Sense::invalid_cdb_field(3, None))
        );
        let mut ro = d;
        ro.read_only = true;
        assert_eq!(answer(&[0x1A, 0x08, 0x08, 0, 0xFF, 0], &ro)[2], 0x90);
    }

    #[test]
    fn mode_select_cdbs() {
        let d = disk512();
        assert_eq!(
            decode(&[0x15, 0x10, 0, 0, 24, 0], &d),
            Ok(Command::ModeSelect(ModeSelect {
                parameter_list_length: 24,
                ten: false,
                page_format: true
            }))
        );
        assert_eq!(
            decode(&[0x55, 0x10, 0, 0, 0, 0, 0, 0, 28, 0], &d),
            Ok(Command::ModeSelect(ModeSelect {
                parameter_list_length: 28,
                ten: true,
                page_format: true
            }))
        );
        assert_eq!(
            decode(&[0x15, 0x11, 0, 0, 24, 0], &d),
            Err(Sense::invalid_cdb_field(1, Some(0)))
        );
        assert_eq!(decode(&[0x15, 0x10, 0, 0, 0, 0], &d), Ok(Command::Good));
        // A read-only disk may still switch its cache.
        let mut ro = d;
        ro.read_only = true;
        assert!(matches!(
            decode(&[0x15, 0x10, 0, 0, 24, 0], &ro),
            Ok(Command::ModeSelect(_))
        ));
    }

    #[test]
    fn report_luns_cdb() {
        let d = disk512();
        let mut c = [0u8; 12];
        c[0] = 0xA0;
        c[9] = 16;
        assert_eq!(
            answer(&c, &d),
            [0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        c[9] = 8;
        assert_eq!(answer(&c, &d), [0, 0, 0, 8, 0, 0, 0, 0]);
        c[2] = 0x01;
        c[9] = 16;
        assert_eq!(answer(&c, &d), [0, 0, 0, 0, 0, 0, 0, 0]);
        c[2] = 0x05;
        assert_eq!(decode(&c, &d), Err(Sense::invalid_cdb_field(2, None)));
    }
}
