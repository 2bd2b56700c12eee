//! SCSI vocabulary shared by the class model, the RAM double and the report: operation codes,
//! sense keys, CDB builders (SPC-4, SBC-3), sense data and the names of status bytes.
//!
//! - [`opcode`] and [`cdb`]: SCSI operation codes and CDB builders: READ and WRITE (6), (10),
//!   (12) and (16) with FUA, READ CAPACITY (10) and (16), INQUIRY standard and VPD, MODE SENSE
//!   (6) and (10), TEST UNIT READY, SYNCHRONIZE CACHE, UNMAP with its parameter list, REPORT
//!   LUNS, REQUEST SENSE.
//! - [`Sense`]: fixed and descriptor sense data (SPC-4 4.5), with the common sense keys and
//!   additional sense codes in words; [`srb_status_name`] and [`scsi_status_name`] name the
//!   status bytes of a completion.
//!
//! A leaf: it names no other module of this crate, so every layer can use it.

use std::fmt;

use storport::ffi;

/// SCSI operation codes (SPC-4 annex D, SBC-3 table 13).
pub mod opcode {
    /// TEST UNIT READY.
    pub const TEST_UNIT_READY: u8 = 0x00;
    /// REQUEST SENSE.
    pub const REQUEST_SENSE: u8 = 0x03;
    /// INQUIRY.
    pub const INQUIRY: u8 = 0x12;
    /// MODE SELECT (6).
    pub const MODE_SELECT_6: u8 = 0x15;
    /// MODE SENSE (6).
    pub const MODE_SENSE_6: u8 = 0x1A;
    /// READ CAPACITY (10).
    pub const READ_CAPACITY_10: u8 = 0x25;
    /// READ (10).
    pub const READ_10: u8 = 0x28;
    /// WRITE (10).
    pub const WRITE_10: u8 = 0x2A;
    /// SYNCHRONIZE CACHE (10).
    pub const SYNCHRONIZE_CACHE_10: u8 = 0x35;
    /// UNMAP.
    pub const UNMAP: u8 = 0x42;
    /// MODE SELECT (10).
    pub const MODE_SELECT_10: u8 = 0x55;
    /// MODE SENSE (10).
    pub const MODE_SENSE_10: u8 = 0x5A;
    /// READ (16).
    pub const READ_16: u8 = 0x88;
    /// WRITE (16).
    pub const WRITE_16: u8 = 0x8A;
    /// SYNCHRONIZE CACHE (16).
    pub const SYNCHRONIZE_CACHE_16: u8 = 0x91;
    /// SERVICE ACTION IN (16); service action 10h is READ CAPACITY (16).
    pub const SERVICE_ACTION_IN_16: u8 = 0x9E;
    /// REPORT LUNS.
    pub const REPORT_LUNS: u8 = 0xA0;
}

/// Sense keys (SPC-4 table 48).
pub mod sense_key {
    /// NO SENSE.
    pub const NO_SENSE: u8 = 0x0;
    /// RECOVERED ERROR.
    pub const RECOVERED_ERROR: u8 = 0x1;
    /// NOT READY.
    pub const NOT_READY: u8 = 0x2;
    /// MEDIUM ERROR.
    pub const MEDIUM_ERROR: u8 = 0x3;
    /// HARDWARE ERROR.
    pub const HARDWARE_ERROR: u8 = 0x4;
    /// ILLEGAL REQUEST.
    pub const ILLEGAL_REQUEST: u8 = 0x5;
    /// UNIT ATTENTION.
    pub const UNIT_ATTENTION: u8 = 0x6;
    /// DATA PROTECT.
    pub const DATA_PROTECT: u8 = 0x7;
    /// ABORTED COMMAND.
    pub const ABORTED_COMMAND: u8 = 0xB;
}

/// CDB builders. Each returns the CDB bytes; the caller picks the SRB direction.
pub mod cdb {
    use super::opcode;

    /// TEST UNIT READY (SPC-4 6.47).
    pub fn test_unit_ready() -> [u8; 6] {
        [opcode::TEST_UNIT_READY, 0, 0, 0, 0, 0]
    }

    /// REQUEST SENSE, fixed format (SPC-4 6.39).
    pub fn request_sense(allocation: u8) -> [u8; 6] {
        [opcode::REQUEST_SENSE, 0, 0, 0, allocation, 0]
    }

    /// Standard INQUIRY (SPC-4 6.6).
    pub fn inquiry(allocation: u16) -> [u8; 6] {
        let a = allocation.to_be_bytes();
        [opcode::INQUIRY, 0, 0, a[0], a[1], 0]
    }

    /// INQUIRY of vital product data page `page` (EVPD = 1).
    pub fn inquiry_vpd(page: u8, allocation: u16) -> [u8; 6] {
        let a = allocation.to_be_bytes();
        [opcode::INQUIRY, 0x01, page, a[0], a[1], 0]
    }

    /// READ CAPACITY (10) (SBC-3 5.15).
    pub fn read_capacity_10() -> [u8; 10] {
        [opcode::READ_CAPACITY_10, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    }

    /// READ CAPACITY (16) (SBC-3 5.16): SERVICE ACTION IN (16), service action 10h.
    pub fn read_capacity_16(allocation: u32) -> [u8; 16] {
        let mut c = [0u8; 16];
        c[0] = opcode::SERVICE_ACTION_IN_16;
        c[1] = 0x10;
        c[10..14].copy_from_slice(&allocation.to_be_bytes());
        c
    }

    /// The page-control field of MODE SENSE (SPC-4 6.11.1, table 98).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum PageControl {
        /// Current values.
        Current = 0,
        /// Changeable values (a mask).
        Changeable = 1,
        /// Default values.
        Default = 2,
        /// Saved values.
        Saved = 3,
    }

    /// MODE SENSE (6) (SPC-4 6.11) of `page`; `dbd` disables block descriptors.
    pub fn mode_sense_6(page: u8, control: PageControl, dbd: bool, allocation: u8) -> [u8; 6] {
        let pc = (control as u8) << 6;
        [
            opcode::MODE_SENSE_6,
            if dbd { 0x08 } else { 0 },
            pc | (page & 0x3F),
            0,
            allocation,
            0,
        ]
    }

    /// MODE SENSE (10) (SPC-4 6.12) of `page`; `dbd` disables block descriptors.
    pub fn mode_sense_10(page: u8, control: PageControl, dbd: bool, allocation: u16) -> [u8; 10] {
        let pc = (control as u8) << 6;
        let a = allocation.to_be_bytes();
        [
            opcode::MODE_SENSE_10,
            if dbd { 0x08 } else { 0 },
            pc | (page & 0x3F),
            0,
            0,
            0,
            0,
            a[0],
            a[1],
            0,
        ]
    }

    fn rw10(op: u8, lba: u32, blocks: u16, fua: bool) -> [u8; 10] {
        let mut c = [0u8; 10];
        c[0] = op;
        c[1] = if fua { 0x08 } else { 0 };
        c[2..6].copy_from_slice(&lba.to_be_bytes());
        c[7..9].copy_from_slice(&blocks.to_be_bytes());
        c
    }

    fn rw16(op: u8, lba: u64, blocks: u32, fua: bool) -> [u8; 16] {
        let mut c = [0u8; 16];
        c[0] = op;
        c[1] = if fua { 0x08 } else { 0 };
        c[2..10].copy_from_slice(&lba.to_be_bytes());
        c[10..14].copy_from_slice(&blocks.to_be_bytes());
        c
    }

    /// READ (10) (SBC-3 5.11); `fua` forces the read from the medium.
    pub fn read_10(lba: u32, blocks: u16, fua: bool) -> [u8; 10] {
        rw10(opcode::READ_10, lba, blocks, fua)
    }

    /// READ (16) (SBC-3 5.13).
    pub fn read_16(lba: u64, blocks: u32, fua: bool) -> [u8; 16] {
        rw16(opcode::READ_16, lba, blocks, fua)
    }

    /// WRITE (10) (SBC-3 5.40); `fua` asks for the data on the medium before GOOD.
    pub fn write_10(lba: u32, blocks: u16, fua: bool) -> [u8; 10] {
        rw10(opcode::WRITE_10, lba, blocks, fua)
    }

    /// WRITE (16) (SBC-3 5.42).
    pub fn write_16(lba: u64, blocks: u32, fua: bool) -> [u8; 16] {
        rw16(opcode::WRITE_16, lba, blocks, fua)
    }

    /// SYNCHRONIZE CACHE (10) of the whole medium (LBA 0, 0 blocks: SBC-3 5.22).
    pub fn synchronize_cache_10() -> [u8; 10] {
        [opcode::SYNCHRONIZE_CACHE_10, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    }

    /// SYNCHRONIZE CACHE (16) of `blocks` blocks from `lba` (0 blocks: to the end).
    pub fn synchronize_cache_16(lba: u64, blocks: u32) -> [u8; 16] {
        rw16(opcode::SYNCHRONIZE_CACHE_16, lba, blocks, false)
    }

    /// UNMAP (SBC-3 5.28) with a parameter list of `parameter_list_length` bytes.
    pub fn unmap(parameter_list_length: u16) -> [u8; 10] {
        let l = parameter_list_length.to_be_bytes();
        [opcode::UNMAP, 0, 0, 0, 0, 0, 0, l[0], l[1], 0]
    }

    /// The UNMAP parameter list (SBC-3 5.28.2): an 8-byte header and one 16-byte block
    /// descriptor per `(lba, blocks)` range. At most 4095 ranges fit the 16-bit lengths.
    pub fn unmap_parameter_list(ranges: &[(u64, u32)]) -> Vec<u8> {
        let ranges = &ranges[..ranges.len().min(4095)];
        let descriptors = ranges.len() * 16;
        let mut p = Vec::with_capacity(8 + descriptors);
        // UNMAP DATA LENGTH excludes its own two bytes; the count fits in u16 by the cut above.
        p.extend_from_slice(
            &u16::try_from(descriptors + 6)
                .unwrap_or(u16::MAX)
                .to_be_bytes(),
        );
        p.extend_from_slice(&u16::try_from(descriptors).unwrap_or(u16::MAX).to_be_bytes());
        p.extend_from_slice(&[0; 4]);
        for &(lba, blocks) in ranges {
            p.extend_from_slice(&lba.to_be_bytes());
            p.extend_from_slice(&blocks.to_be_bytes());
            p.extend_from_slice(&[0; 4]);
        }
        p
    }

    /// REPORT LUNS (SPC-4 6.33), select report 0.
    pub fn report_luns(allocation: u32) -> [u8; 12] {
        let mut c = [0u8; 12];
        c[0] = opcode::REPORT_LUNS;
        c[6..10].copy_from_slice(&allocation.to_be_bytes());
        c
    }
}

/// Parsed sense data (SPC-4 4.5): fixed (70h/71h) or descriptor (72h/73h) format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sense {
    /// RESPONSE CODE (70h to 73h).
    pub response_code: u8,
    /// SENSE KEY.
    pub key: u8,
    /// ADDITIONAL SENSE CODE.
    pub asc: u8,
    /// ADDITIONAL SENSE CODE QUALIFIER.
    pub ascq: u8,
    /// The INFORMATION field, when the VALID bit says it holds something (fixed format).
    pub information: Option<u32>,
}

impl Sense {
    /// Parses sense bytes; `None` for anything that is not sense data SPC-4 defines.
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        let response_code = bytes.first()? & 0x7F;
        match response_code {
            0x70 | 0x71 => {
                let valid = bytes[0] & 0x80 != 0;
                let information = bytes
                    .get(3..7)
                    .filter(|_| valid)
                    .and_then(|b| b.try_into().ok())
                    .map(u32::from_be_bytes);
                Some(Self {
                    response_code,
                    key: bytes.get(2)? & 0x0F,
                    asc: bytes.get(12).copied().unwrap_or(0),
                    ascq: bytes.get(13).copied().unwrap_or(0),
                    information,
                })
            }
            0x72 | 0x73 => Some(Self {
                response_code,
                key: bytes.get(1)? & 0x0F,
                asc: bytes.get(2).copied().unwrap_or(0),
                ascq: bytes.get(3).copied().unwrap_or(0),
                information: None,
            }),
            _ => None,
        }
    }

    /// The sense key in words.
    pub fn key_name(&self) -> &'static str {
        sense_key_name(self.key)
    }

    /// The additional sense code and qualifier in words, for the common ones.
    pub fn asc_name(&self) -> Option<&'static str> {
        asc_name(self.asc, self.ascq)
    }
}

impl fmt::Display for Sense {
    /// `ILLEGAL REQUEST: INVALID FIELD IN CDB (24h/00h)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.key_name())?;
        if let Some(words) = self.asc_name() {
            write!(f, ": {words}")?;
        }
        write!(f, " ({:02X}h/{:02X}h)", self.asc, self.ascq)
    }
}

/// The name of a sense key (SPC-4 table 48).
pub fn sense_key_name(key: u8) -> &'static str {
    match key & 0x0F {
        0x0 => "NO SENSE",
        0x1 => "RECOVERED ERROR",
        0x2 => "NOT READY",
        0x3 => "MEDIUM ERROR",
        0x4 => "HARDWARE ERROR",
        0x5 => "ILLEGAL REQUEST",
        0x6 => "UNIT ATTENTION",
        0x7 => "DATA PROTECT",
        0x8 => "BLANK CHECK",
        0x9 => "VENDOR SPECIFIC",
        0xA => "COPY ABORTED",
        0xB => "ABORTED COMMAND",
        0xD => "VOLUME OVERFLOW",
        0xE => "MISCOMPARE",
        _ => "RESERVED",
    }
}

/// The common additional sense codes (SPC-4 table 50), in words.
pub fn asc_name(asc: u8, ascq: u8) -> Option<&'static str> {
    Some(match (asc, ascq) {
        (0x00, 0x00) => "NO ADDITIONAL SENSE INFORMATION",
        (0x04, 0x00) => "LOGICAL UNIT NOT READY, CAUSE NOT REPORTABLE",
        (0x04, 0x01) => "LOGICAL UNIT IS IN PROCESS OF BECOMING READY",
        (0x04, 0x02) => "LOGICAL UNIT NOT READY, INITIALIZING COMMAND REQUIRED",
        (0x0C, 0x00) => "WRITE ERROR",
        (0x11, 0x00) => "UNRECOVERED READ ERROR",
        (0x1A, 0x00) => "PARAMETER LIST LENGTH ERROR",
        (0x20, 0x00) => "INVALID COMMAND OPERATION CODE",
        (0x21, 0x00) => "LOGICAL BLOCK ADDRESS OUT OF RANGE",
        (0x24, 0x00) => "INVALID FIELD IN CDB",
        (0x25, 0x00) => "LOGICAL UNIT NOT SUPPORTED",
        (0x26, 0x00) => "INVALID FIELD IN PARAMETER LIST",
        (0x27, 0x00) => "WRITE PROTECTED",
        (0x28, 0x00) => "NOT READY TO READY CHANGE, MEDIUM MAY HAVE CHANGED",
        (0x29, 0x00) => "POWER ON, RESET, OR BUS DEVICE RESET OCCURRED",
        (0x29, 0x01) => "POWER ON OCCURRED",
        (0x29, 0x02) => "SCSI BUS RESET OCCURRED",
        (0x2A, 0x01) => "MODE PARAMETERS CHANGED",
        (0x2A, 0x09) => "CAPACITY DATA HAS CHANGED",
        (0x2C, 0x00) => "COMMAND SEQUENCE ERROR",
        (0x39, 0x00) => "SAVING PARAMETERS NOT SUPPORTED",
        (0x3A, 0x00) => "MEDIUM NOT PRESENT",
        (0x3F, 0x0E) => "REPORTED LUNS DATA HAS CHANGED",
        (0x44, 0x00) => "INTERNAL TARGET FAILURE",
        (0x4E, 0x00) => "OVERLAPPED COMMANDS ATTEMPTED",
        (0x55, 0x03) => "INSUFFICIENT RESOURCES",
        _ => return None,
    })
}

/// The name of an SRB status (`SRB_STATUS_*` without the flag bits).
pub fn srb_status_name(status: u8) -> &'static str {
    match ffi::SRB_STATUS(status) {
        ffi::SRB_STATUS_PENDING => "PENDING",
        ffi::SRB_STATUS_SUCCESS => "SUCCESS",
        ffi::SRB_STATUS_ABORTED => "ABORTED",
        ffi::SRB_STATUS_ABORT_FAILED => "ABORT_FAILED",
        ffi::SRB_STATUS_ERROR => "ERROR",
        ffi::SRB_STATUS_BUSY => "BUSY",
        ffi::SRB_STATUS_INVALID_REQUEST => "INVALID_REQUEST",
        ffi::SRB_STATUS_INVALID_PATH_ID => "INVALID_PATH_ID",
        ffi::SRB_STATUS_NO_DEVICE => "NO_DEVICE",
        ffi::SRB_STATUS_TIMEOUT => "TIMEOUT",
        ffi::SRB_STATUS_SELECTION_TIMEOUT => "SELECTION_TIMEOUT",
        ffi::SRB_STATUS_COMMAND_TIMEOUT => "COMMAND_TIMEOUT",
        ffi::SRB_STATUS_MESSAGE_REJECTED => "MESSAGE_REJECTED",
        ffi::SRB_STATUS_BUS_RESET => "BUS_RESET",
        ffi::SRB_STATUS_PARITY_ERROR => "PARITY_ERROR",
        ffi::SRB_STATUS_REQUEST_SENSE_FAILED => "REQUEST_SENSE_FAILED",
        ffi::SRB_STATUS_NO_HBA => "NO_HBA",
        ffi::SRB_STATUS_DATA_OVERRUN => "DATA_OVERRUN",
        ffi::SRB_STATUS_UNEXPECTED_BUS_FREE => "UNEXPECTED_BUS_FREE",
        ffi::SRB_STATUS_PHASE_SEQUENCE_FAILURE => "PHASE_SEQUENCE_FAILURE",
        ffi::SRB_STATUS_BAD_SRB_BLOCK_LENGTH => "BAD_SRB_BLOCK_LENGTH",
        ffi::SRB_STATUS_REQUEST_FLUSHED => "REQUEST_FLUSHED",
        ffi::SRB_STATUS_INVALID_LUN => "INVALID_LUN",
        ffi::SRB_STATUS_INVALID_TARGET_ID => "INVALID_TARGET_ID",
        ffi::SRB_STATUS_BAD_FUNCTION => "BAD_FUNCTION",
        ffi::SRB_STATUS_ERROR_RECOVERY => "ERROR_RECOVERY",
        ffi::SRB_STATUS_NOT_POWERED => "NOT_POWERED",
        ffi::SRB_STATUS_LINK_DOWN => "LINK_DOWN",
        ffi::SRB_STATUS_INSUFFICIENT_RESOURCES => "INSUFFICIENT_RESOURCES",
        ffi::SRB_STATUS_THROTTLED_REQUEST => "THROTTLED_REQUEST",
        ffi::SRB_STATUS_INVALID_PARAMETER => "INVALID_PARAMETER",
        ffi::SRB_STATUS_INTERNAL_ERROR => "INTERNAL_ERROR",
        _ => "UNKNOWN",
    }
}

/// The name of a SCSI status byte (SAM-5 table 38).
pub fn scsi_status_name(status: u8) -> &'static str {
    match status {
        ffi::SCSISTAT_GOOD => "GOOD",
        ffi::SCSISTAT_CHECK_CONDITION => "CHECK CONDITION",
        ffi::SCSISTAT_CONDITION_MET => "CONDITION MET",
        ffi::SCSISTAT_BUSY => "BUSY",
        ffi::SCSISTAT_INTERMEDIATE => "INTERMEDIATE",
        ffi::SCSISTAT_INTERMEDIATE_COND_MET => "INTERMEDIATE-CONDITION MET",
        ffi::SCSISTAT_RESERVATION_CONFLICT => "RESERVATION CONFLICT",
        ffi::SCSISTAT_COMMAND_TERMINATED => "COMMAND TERMINATED",
        ffi::SCSISTAT_QUEUE_FULL => "TASK SET FULL",
        0x30 => "ACA ACTIVE",
        0x40 => "TASK ABORTED",
        _ => "UNKNOWN",
    }
}

/// The data phase a CDB asks for, from its allocation, transfer or parameter list length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transfer {
    /// No data.
    None,
    /// This many bytes from the device (data-in).
    In(u32),
    /// This many bytes to the device (data-out).
    Out(u32),
    /// An operation code this table does not know: the length cannot be derived.
    Unknown,
}

/// What `cdb` transfers on a disk of `block_size`-byte blocks, and the command's name.
///
/// Covers every command the vioblk driver supports (SPC-4, SBC-3): READ and WRITE (6), (10),
/// (12), (16), WRITE AND VERIFY, VERIFY (with BYTCHK), WRITE SAME, MODE SENSE and SELECT, INQUIRY,
/// REQUEST SENSE, REPORT LUNS, READ CAPACITY (10) and (16), UNMAP, SYNCHRONIZE CACHE, TEST UNIT
/// READY and START STOP UNIT. A CDB too short for its fields reads them as zero.
pub fn transfer(cdb: &[u8], block_size: u32) -> (Transfer, &'static str) {
    let byte = |at: usize| cdb.get(at).map_or(0, |&b| u32::from(b));
    let be16 = |at: usize| (byte(at) << 8) | byte(at + 1);
    let be32 = |at: usize| (be16(at) << 16) | be16(at + 2);
    let blocks = |n: u32| n.saturating_mul(block_size);
    // VERIFY's BYTCHK (SBC-3 5.27): 00b no data, 01b the blocks, 11b one block.
    let verify = |n: u32| match (byte(1) >> 1) & 3 {
        1 => Transfer::Out(blocks(n)),
        3 => Transfer::Out(block_size),
        _ => Transfer::None,
    };
    let Some(&op) = cdb.first() else {
        return (Transfer::Unknown, "an empty CDB");
    };
    match op {
        0x00 => (Transfer::None, "TEST UNIT READY"),
        0x03 => (Transfer::In(byte(4)), "REQUEST SENSE"),
        // TRANSFER LENGTH 0 means 256 blocks in the 6-byte commands (SBC-3 5.8).
        0x08 => (
            Transfer::In(blocks(if byte(4) == 0 { 256 } else { byte(4) })),
            "READ(6)",
        ),
        0x0A => (
            Transfer::Out(blocks(if byte(4) == 0 { 256 } else { byte(4) })),
            "WRITE(6)",
        ),
        0x12 => (Transfer::In(be16(3)), "INQUIRY"),
        0x15 => (Transfer::Out(byte(4)), "MODE SELECT(6)"),
        0x1A => (Transfer::In(byte(4)), "MODE SENSE(6)"),
        0x1B => (Transfer::None, "START STOP UNIT"),
        0x25 => (Transfer::In(8), "READ CAPACITY(10)"),
        0x28 => (Transfer::In(blocks(be16(7))), "READ(10)"),
        0x2A => (Transfer::Out(blocks(be16(7))), "WRITE(10)"),
        0x2E => (Transfer::Out(blocks(be16(7))), "WRITE AND VERIFY(10)"),
        0x2F => (verify(be16(7)), "VERIFY(10)"),
        0x35 => (Transfer::None, "SYNCHRONIZE CACHE(10)"),
        // NDOB (SBC-3 5.45): no data-out buffer.
        0x41 => (Transfer::Out(block_size), "WRITE SAME(10)"),
        0x42 => (Transfer::Out(be16(7)), "UNMAP"),
        0x55 => (Transfer::Out(be16(7)), "MODE SELECT(10)"),
        0x5A => (Transfer::In(be16(7)), "MODE SENSE(10)"),
        0x88 => (Transfer::In(blocks(be32(10))), "READ(16)"),
        0x8A => (Transfer::Out(blocks(be32(10))), "WRITE(16)"),
        0x8E => (Transfer::Out(blocks(be32(10))), "WRITE AND VERIFY(16)"),
        0x8F => (verify(be32(10)), "VERIFY(16)"),
        0x91 => (Transfer::None, "SYNCHRONIZE CACHE(16)"),
        0x93 if byte(1) & 1 != 0 => (Transfer::None, "WRITE SAME(16)"),
        0x93 => (Transfer::Out(block_size), "WRITE SAME(16)"),
        0x9E if byte(1) & 0x1F == 0x10 => (Transfer::In(be32(10)), "READ CAPACITY(16)"),
        0x9E => (Transfer::In(be32(10)), "SERVICE ACTION IN(16)"),
        0xA0 => (Transfer::In(be32(6)), "REPORT LUNS"),
        0xA8 => (Transfer::In(blocks(be32(6))), "READ(12)"),
        0xAA => (Transfer::Out(blocks(be32(6))), "WRITE(12)"),
        0xAE => (Transfer::Out(blocks(be32(6))), "WRITE AND VERIFY(12)"),
        0xAF => (verify(be32(6)), "VERIFY(12)"),
        _ => (Transfer::Unknown, "an unknown command"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transfer_lengths_of_every_supported_cdb() {
        let cases: &[(&[u8], Transfer)] = &[
            (&[0x08, 0, 0, 1, 1, 0], Transfer::In(512)),
            (&[0x08, 0, 0, 1, 0, 0], Transfer::In(256 * 512)),
            (&[0x0A, 0, 0, 1, 2, 0], Transfer::Out(1024)),
            (&[0xA8, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0], Transfer::In(512)),
            (
                &[0xAA, 0, 0, 0, 0, 1, 0, 0, 0, 3, 0, 0],
                Transfer::Out(1536),
            ),
            (&cdb::read_10(0, 8, false), Transfer::In(4096)),
            (&cdb::write_16(0, 2, true), Transfer::Out(1024)),
            (&cdb::read_16(0, 1, false), Transfer::In(512)),
            (&[0x2F, 0, 0, 0, 0, 0, 0, 0, 4, 0], Transfer::None),
            (&[0x2F, 2, 0, 0, 0, 0, 0, 0, 4, 0], Transfer::Out(2048)),
            (&[0x2F, 6, 0, 0, 0, 0, 0, 0, 4, 0], Transfer::Out(512)),
            (&[0x12, 1, 0x80, 0, 0xFF, 0], Transfer::In(255)),
            (&[0x03, 0, 0, 0, 18, 0], Transfer::In(18)),
            (&[0x1A, 0, 0x3F, 0, 192, 0], Transfer::In(192)),
            (&[0x5A, 0, 0x3F, 0, 0, 0, 0, 1, 0, 0], Transfer::In(256)),
            (&[0x15, 0x10, 0, 0, 24, 0], Transfer::Out(24)),
            (&[0x55, 0x10, 0, 0, 0, 0, 0, 0, 28, 0], Transfer::Out(28)),
            (&cdb::unmap(24), Transfer::Out(24)),
            (&cdb::report_luns(16), Transfer::In(16)),
            (&cdb::read_capacity_10(), Transfer::In(8)),
            (&cdb::read_capacity_16(32), Transfer::In(32)),
            (&cdb::test_unit_ready(), Transfer::None),
            (&cdb::synchronize_cache_10(), Transfer::None),
            (&[0x41, 0, 0, 0, 0, 0, 0, 0, 8, 0], Transfer::Out(512)),
            (
                &[0x93, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0],
                Transfer::None,
            ),
            (&[0xC0, 0, 0, 0, 0, 0], Transfer::Unknown),
            (&[0x28, 0], Transfer::In(0)),
        ];
        for (c, want) in cases {
            assert_eq!(transfer(c, 512).0, *want, "{c:02x?}");
        }
        assert_eq!(
            transfer(&cdb::read_10(0, 1, false), 4096).0,
            Transfer::In(4096)
        );
        assert_eq!(transfer(&[0x28; 10], 512).1, "READ(10)");
    }
}
