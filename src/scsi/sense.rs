//! Sense data: why a command ended in CHECK CONDITION.
//!
//! [`Sense`] holds the sense key, the additional sense code and qualifier (ASC/ASCQ, SPC-4
//! D.2), an optional INFORMATION value and an optional sense-key-specific field pointer. It is
//! written as fixed-format sense data, current error (response code 70h, SPC-4 4.5.3), 18 bytes,
//! into a buffer of any length (truncated when shorter, SPC-4 4.5.1).
//!
//! Fixed format (SPC-4 table 48):
//!
//! ```text
//!  0  VALID | RESPONSE CODE (70h)      8..=11  COMMAND-SPECIFIC INFORMATION
//!  1  obsolete                        12      ADDITIONAL SENSE CODE
//!  2  FILEMARK EOM ILI SDAT_OVFL KEY  13      ADDITIONAL SENSE CODE QUALIFIER
//!  3..=6  INFORMATION                 14      FIELD REPLACEABLE UNIT CODE
//!  7  ADDITIONAL SENSE LENGTH (10)    15..=17 SKSV | SENSE KEY SPECIFIC
//! ```

/// The sense key (SPC-4 4.5.6, table 51).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum SenseKey {
    /// No specific sense key information.
    NoSense = 0x0,
    /// The command completed after recovery action.
    RecoveredError = 0x1,
    /// The logical unit is not accessible.
    NotReady = 0x2,
    /// An unrecovered error in the medium or the recorded data.
    MediumError = 0x3,
    /// A non-recoverable hardware failure.
    HardwareError = 0x4,
    /// An illegal field in the CDB or the parameter data.
    IllegalRequest = 0x5,
    /// A unit attention condition (e.g. changed capacity).
    UnitAttention = 0x6,
    /// A write to a protected block.
    DataProtect = 0x7,
    /// The device server aborted the command.
    AbortedCommand = 0xB,
}

/// Where the offending field is, for INVALID FIELD IN CDB / PARAMETER LIST (SPC-4 4.5.2.4.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FieldPointer {
    /// The field is in the CDB (C/D = 1), else in the parameter list.
    pub in_cdb: bool,
    /// The byte holding the field (its most significant byte).
    pub byte: u16,
    /// The bit within that byte (the field's most significant bit), if it is not a whole byte.
    pub bit: Option<u8>,
}

/// Sense data for CHECK CONDITION.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sense {
    /// The sense key.
    pub key: SenseKey,
    /// The additional sense code.
    pub asc: u8,
    /// The additional sense code qualifier.
    pub ascq: u8,
    /// The INFORMATION field (e.g. the first failing LBA); reported only when it fits 32 bits.
    pub information: Option<u64>,
    /// The sense-key-specific field pointer.
    pub field_pointer: Option<FieldPointer>,
}

/// A block operation the device failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockError {
    /// The device reported an I/O error.
    Io,
    /// The device does not support the operation.
    Unsupported,
}

/// The kind of block operation that failed, for [`Sense::for_block_error`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockOp {
    /// A read.
    Read,
    /// A write.
    Write,
    /// A cache flush.
    Flush,
    /// A discard.
    Discard,
    /// A write-zeroes.
    WriteZeroes,
}

impl Sense {
    /// The length of fixed-format sense data written by [`Sense::write`].
    pub const LEN: usize = 8 + ADDITIONAL_SENSE_LENGTH as usize;

    /// NO SENSE / NO ADDITIONAL SENSE INFORMATION (00h/00h).
    pub const NO_SENSE: Self = Self::new(SenseKey::NoSense, 0x00, 0x00);
    /// NOT READY / MEDIUM NOT PRESENT (3Ah/00h).
    pub const MEDIUM_NOT_PRESENT: Self = Self::new(SenseKey::NotReady, 0x3A, 0x00);
    /// MEDIUM ERROR / UNRECOVERED READ ERROR (11h/00h).
    pub const UNRECOVERED_READ_ERROR: Self = Self::new(SenseKey::MediumError, 0x11, 0x00);
    /// MEDIUM ERROR / WRITE ERROR (0Ch/00h).
    pub const WRITE_ERROR: Self = Self::new(SenseKey::MediumError, 0x0C, 0x00);
    /// ILLEGAL REQUEST / PARAMETER LIST LENGTH ERROR (1Ah/00h).
    pub const PARAMETER_LIST_LENGTH_ERROR: Self = Self::new(SenseKey::IllegalRequest, 0x1A, 0x00);
    /// ILLEGAL REQUEST / INVALID COMMAND OPERATION CODE (20h/00h).
    pub const INVALID_OPCODE: Self = Self::new(SenseKey::IllegalRequest, 0x20, 0x00);
    /// ILLEGAL REQUEST / LOGICAL BLOCK ADDRESS OUT OF RANGE (21h/00h).
    pub const LBA_OUT_OF_RANGE: Self = Self::new(SenseKey::IllegalRequest, 0x21, 0x00);
    /// ILLEGAL REQUEST / INVALID FIELD IN CDB (24h/00h), without a field pointer.
    pub const INVALID_FIELD_IN_CDB: Self = Self::new(SenseKey::IllegalRequest, 0x24, 0x00);
    /// ILLEGAL REQUEST / INVALID FIELD IN PARAMETER LIST (26h/00h), without a field pointer.
    pub const INVALID_FIELD_IN_PARAMETER_LIST: Self =
        Self::new(SenseKey::IllegalRequest, 0x26, 0x00);
    /// ILLEGAL REQUEST / SAVING PARAMETERS NOT SUPPORTED (39h/00h).
    pub const SAVING_PARAMETERS_NOT_SUPPORTED: Self =
        Self::new(SenseKey::IllegalRequest, 0x39, 0x00);
    /// UNIT ATTENTION / CAPACITY DATA HAS CHANGED (2Ah/09h).
    pub const CAPACITY_DATA_HAS_CHANGED: Self = Self::new(SenseKey::UnitAttention, 0x2A, 0x09);
    /// UNIT ATTENTION / MODE PARAMETERS CHANGED (2Ah/01h).
    pub const MODE_PARAMETERS_CHANGED: Self = Self::new(SenseKey::UnitAttention, 0x2A, 0x01);
    /// DATA PROTECT / WRITE PROTECTED (27h/00h).
    pub const WRITE_PROTECTED: Self = Self::new(SenseKey::DataProtect, 0x27, 0x00);

    /// Sense data with `key`, `asc` and `ascq` and nothing else.
    pub const fn new(key: SenseKey, asc: u8, ascq: u8) -> Self {
        Self {
            key,
            asc,
            ascq,
            information: None,
            field_pointer: None,
        }
    }

    /// INVALID FIELD IN CDB pointing at `byte`, and at `bit` when the field is not a whole byte.
    pub const fn invalid_cdb_field(byte: u16, bit: Option<u8>) -> Self {
        Self::INVALID_FIELD_IN_CDB.with_field(FieldPointer {
            in_cdb: true,
            byte,
            bit,
        })
    }

    /// INVALID FIELD IN PARAMETER LIST pointing at `byte` (and `bit`) of the parameter list.
    pub const fn invalid_parameter_field(byte: u16, bit: Option<u8>) -> Self {
        Self::INVALID_FIELD_IN_PARAMETER_LIST.with_field(FieldPointer {
            in_cdb: false,
            byte,
            bit,
        })
    }

    /// This sense data with the INFORMATION field set to `information`.
    #[must_use]
    pub const fn with_information(mut self, information: u64) -> Self {
        self.information = Some(information);
        self
    }

    /// This sense data with a sense-key-specific field pointer.
    #[must_use]
    pub const fn with_field(mut self, field: FieldPointer) -> Self {
        self.field_pointer = Some(field);
        self
    }

    /// The sense data for a block operation the device failed.
    ///
    /// An I/O error reading is MEDIUM ERROR / UNRECOVERED READ ERROR; writing, flushing,
    /// discarding or zeroing is MEDIUM ERROR / WRITE ERROR; an operation the device does not
    /// support is ILLEGAL REQUEST / INVALID COMMAND OPERATION CODE.
    pub const fn for_block_error(op: BlockOp, error: BlockError) -> Self {
        match (error, op) {
            (BlockError::Unsupported, _) => Self::INVALID_OPCODE,
            (BlockError::Io, BlockOp::Read) => Self::UNRECOVERED_READ_ERROR,
            (BlockError::Io, _) => Self::WRITE_ERROR,
        }
    }

    /// Writes fixed-format sense data into `buf`, truncated to its length; returns the number of
    /// bytes written (at most [`Sense::LEN`]).
    pub fn write(&self, buf: &mut [u8]) -> usize {
        let mut data = [0u8; Self::LEN];
        let information = self.information.and_then(|info| u32::try_from(info).ok());
        // VALID (bit 7) says INFORMATION is defined by the standard (SPC-4 4.5.3).
        data[0] = 0x70 | if information.is_some() { 0x80 } else { 0 };
        data[2] = self.key as u8;
        data[3..7].copy_from_slice(&information.unwrap_or(0).to_be_bytes());
        data[7] = ADDITIONAL_SENSE_LENGTH;
        data[12] = self.asc;
        data[13] = self.ascq;
        if let Some(field) = self.field_pointer {
            // SKSV | C/D | BPV | BIT POINTER, then FIELD POINTER (SPC-4 table 46).
            let mut sks = 0x80;
            if field.in_cdb {
                sks |= 0x40;
            }
            if let Some(bit) = field.bit {
                sks |= 0x08 | (bit & 0x07);
            }
            data[15] = sks;
            data[16..18].copy_from_slice(&field.byte.to_be_bytes());
        }
        copy_truncated(&data, buf)
    }
}

/// ADDITIONAL SENSE LENGTH of fixed-format data: the bytes after byte 7.
const ADDITIONAL_SENSE_LENGTH: u8 = 10;

/// Copies as much of `data` as fits into `buf`; returns the number of bytes copied.
pub(super) fn copy_truncated(data: &[u8], buf: &mut [u8]) -> usize {
    let n = data.len().min(buf.len());
    if let (Some(dst), Some(src)) = (buf.get_mut(..n), data.get(..n)) {
        dst.copy_from_slice(src);
    }
    n
}

/// Answers REQUEST SENSE (SPC-4 6.39): writes the `pending` sense data (e.g. a unit attention
/// the caller then clears), or NO SENSE when there is none, truncated to `allocation_length`
/// and to `buf`; returns the number of bytes written.
pub fn request_sense(pending: Option<&Sense>, allocation_length: u8, buf: &mut [u8]) -> usize {
    let len = usize::from(allocation_length).min(buf.len());
    let buf = buf.get_mut(..len).unwrap_or(&mut []);
    pending.unwrap_or(&Sense::NO_SENSE).write(buf)
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

    #[test]
    fn fixed_format_invalid_opcode() {
        let mut buf = [0xEEu8; 32];
        assert_eq!(Sense::INVALID_OPCODE.write(&mut buf), 18);
        assert_eq!(
            buf[..18],
            [
                0x70, 0, 0x05, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x20, 0, 0, 0, 0, 0
            ]
        );
        assert_eq!(buf[18], 0xEE);
    }

    #[test]
    fn information_sets_valid_only_when_it_fits() {
        let mut buf = [0u8; 18];
        Sense::UNRECOVERED_READ_ERROR
            .with_information(0x1234_5678)
            .write(&mut buf);
        assert_eq!(buf[0], 0xF0);
        assert_eq!(buf[2], 0x03);
        assert_eq!(buf[3..7], [0x12, 0x34, 0x56, 0x78]);
        assert_eq!((buf[12], buf[13]), (0x11, 0x00));
        Sense::LBA_OUT_OF_RANGE
            .with_information(1 << 32)
            .write(&mut buf);
        assert_eq!(buf[0], 0x70);
        assert_eq!(buf[3..7], [0, 0, 0, 0]);
    }

    #[test]
    fn field_pointer_cdb_with_bit() {
        let mut buf = [0u8; 18];
        Sense::invalid_cdb_field(1, Some(4)).write(&mut buf);
        assert_eq!((buf[12], buf[13]), (0x24, 0x00));
        assert_eq!(buf[15..18], [0x80 | 0x40 | 0x08 | 4, 0, 1]);
        Sense::invalid_parameter_field(0x0102, None).write(&mut buf);
        assert_eq!((buf[12], buf[13]), (0x26, 0x00));
        assert_eq!(buf[15..18], [0x80, 0x01, 0x02]);
    }

    #[test]
    fn truncates_to_short_buffers() {
        let mut empty: [u8; 0] = [];
        assert_eq!(Sense::WRITE_PROTECTED.write(&mut empty), 0);
        let mut three = [0u8; 3];
        assert_eq!(Sense::WRITE_PROTECTED.write(&mut three), 3);
        assert_eq!(three, [0x70, 0, 0x07]);
    }

    #[test]
    fn block_errors_map_to_medium_errors() {
        assert_eq!(
            Sense::for_block_error(BlockOp::Read, BlockError::Io),
            Sense::UNRECOVERED_READ_ERROR
        );
        assert_eq!(
            Sense::for_block_error(BlockOp::Write, BlockError::Io),
            Sense::WRITE_ERROR
        );
        assert_eq!(
            Sense::for_block_error(BlockOp::Flush, BlockError::Io),
            Sense::WRITE_ERROR
        );
        assert_eq!(
            Sense::for_block_error(BlockOp::Discard, BlockError::Unsupported),
            Sense::INVALID_OPCODE
        );
        let ua = Sense::CAPACITY_DATA_HAS_CHANGED;
        assert_eq!((ua.key as u8, ua.asc, ua.ascq), (6, 0x2A, 0x09));
    }

    #[test]
    fn request_sense_pending_or_no_sense() {
        let mut buf = [0xFFu8; 64];
        assert_eq!(request_sense(None, 252, &mut buf), 18);
        assert_eq!(
            buf[..18],
            [0x70, 0, 0, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        let ua = Sense::CAPACITY_DATA_HAS_CHANGED;
        assert_eq!(request_sense(Some(&ua), 14, &mut buf), 14);
        assert_eq!(
            buf[..14],
            [0x70, 0, 6, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x2A, 0x09]
        );
        assert_eq!(buf[14], 0);
        assert_eq!(request_sense(Some(&ua), 0, &mut buf), 0);
        assert_eq!(request_sense(Some(&ua), 18, &mut buf[..4]), 4);
    }
}
