//! The RAM disk's SCSI side: CDB bytes in; a command, response bytes or sense data out.
//!
//! Pure: it names no Storport type. It serves the commands a class driver needs for a disk of
//! 512-byte blocks (SPC-4, SBC-3): TEST UNIT READY, INQUIRY (standard data and VPD page 0x00),
//! MODE SENSE(6) (header only), READ CAPACITY(10/16), READ/WRITE(10/16), SYNCHRONIZE
//! CACHE(10/16) and REPORT LUNS. Every CDB is untrusted: short CDBs, bad fields and out-of-range
//! block addresses become [`Sense`], never a panic.

/// Bytes per logical block.
pub const BLOCK_SIZE: usize = 512;

/// A block range of a READ or WRITE, checked against the disk's size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Blocks {
    /// First logical block.
    pub lba: u64,
    /// Number of blocks (0 moves nothing).
    pub count: u32,
}

impl Blocks {
    /// The range's bytes on the disk, or `None` if it does not fit in `disk_bytes`.
    pub fn byte_range(self, disk_bytes: usize) -> Option<core::ops::Range<usize>> {
        let start = usize::try_from(self.lba).ok()?.checked_mul(BLOCK_SIZE)?;
        let end = start.checked_add(self.byte_count()?)?;
        (end <= disk_bytes).then_some(start..end)
    }

    /// Bytes the command moves.
    pub fn byte_count(self) -> Option<usize> {
        usize::try_from(self.count).ok()?.checked_mul(BLOCK_SIZE)
    }
}

/// A command the RAM disk serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// TEST UNIT READY.
    TestUnitReady,
    /// INQUIRY: standard data (`page: None`) or a VPD page.
    Inquiry {
        /// The VPD page (EVPD set), if any.
        page: Option<u8>,
        /// ALLOCATION LENGTH.
        allocation: usize,
    },
    /// MODE SENSE(6) of all pages: a header without pages.
    ModeSense6 {
        /// ALLOCATION LENGTH.
        allocation: usize,
    },
    /// READ CAPACITY(10).
    ReadCapacity10,
    /// READ CAPACITY(16) (SERVICE ACTION IN(16), service action 0x10).
    ReadCapacity16 {
        /// ALLOCATION LENGTH.
        allocation: usize,
    },
    /// SYNCHRONIZE CACHE(10/16): nothing is cached.
    SynchronizeCache,
    /// REPORT LUNS: LUN 0 only.
    ReportLuns {
        /// ALLOCATION LENGTH.
        allocation: usize,
    },
    /// READ(10/16).
    Read(Blocks),
    /// WRITE(10/16).
    Write(Blocks),
}

/// Fixed-format sense data (SPC-4 4.5.3): why a command was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sense {
    /// SENSE KEY.
    pub key: u8,
    /// ADDITIONAL SENSE CODE.
    pub asc: u8,
    /// ADDITIONAL SENSE CODE QUALIFIER.
    pub ascq: u8,
}

impl Sense {
    /// ILLEGAL REQUEST, INVALID COMMAND OPERATION CODE (05/20/00).
    pub const INVALID_OPCODE: Sense = Sense::illegal_request(0x20);
    /// ILLEGAL REQUEST, LOGICAL BLOCK ADDRESS OUT OF RANGE (05/21/00).
    pub const LBA_OUT_OF_RANGE: Sense = Sense::illegal_request(0x21);
    /// ILLEGAL REQUEST, INVALID FIELD IN CDB (05/24/00).
    pub const INVALID_FIELD_IN_CDB: Sense = Sense::illegal_request(0x24);

    const fn illegal_request(asc: u8) -> Sense {
        Sense {
            key: 0x05,
            asc,
            ascq: 0,
        }
    }

    /// The 18 bytes of fixed-format sense data: current error, ADDITIONAL SENSE LENGTH 10.
    pub fn bytes(self) -> [u8; 18] {
        let mut data = [0u8; 18];
        data[0] = 0x70;
        data[2] = self.key;
        data[7] = 10;
        data[12] = self.asc;
        data[13] = self.ascq;
        data
    }
}

/// `N` bytes of the CDB at `at`; a CDB too short for its operation code has an invalid field.
fn field<const N: usize>(cdb: &[u8], at: usize) -> Result<[u8; N], Sense> {
    cdb.get(at..at.checked_add(N).ok_or(Sense::INVALID_FIELD_IN_CDB)?)
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or(Sense::INVALID_FIELD_IN_CDB)
}

/// A block range, refused with LBA OUT OF RANGE unless it ends within `block_count`
/// (SBC-3 5.8: the check covers the whole transfer).
fn blocks(lba: u64, count: u32, block_count: u64) -> Result<Blocks, Sense> {
    match lba.checked_add(u64::from(count)) {
        Some(end) if end <= block_count => Ok(Blocks { lba, count }),
        _ => Err(Sense::LBA_OUT_OF_RANGE),
    }
}

/// Decodes a CDB for a disk of `block_count` blocks.
pub fn decode(cdb: &[u8], block_count: u64) -> Result<Command, Sense> {
    let [opcode] = field::<1>(cdb, 0).map_err(|_| Sense::INVALID_OPCODE)?;
    match opcode {
        0x00 => Ok(Command::TestUnitReady),
        0x12 => {
            let [flags, page] = field::<2>(cdb, 1)?;
            let allocation = usize::from(u16::from_be_bytes(field(cdb, 3)?));
            match (flags & 0x03, page) {
                (0x00, 0x00) => Ok(Command::Inquiry {
                    page: None,
                    allocation,
                }),
                (0x01, 0x00) => Ok(Command::Inquiry {
                    page: Some(page),
                    allocation,
                }),
                // CmdDt, or a page this disk does not have.
                _ => Err(Sense::INVALID_FIELD_IN_CDB),
            }
        }
        0x1A => {
            let [page] = field::<1>(cdb, 2)?;
            let [allocation] = field::<1>(cdb, 4)?;
            // Current values of all pages (PC 00b, page 0x3F): there are none, the header says so.
            if page != 0x3F {
                return Err(Sense::INVALID_FIELD_IN_CDB);
            }
            Ok(Command::ModeSense6 {
                allocation: usize::from(allocation),
            })
        }
        0x25 => Ok(Command::ReadCapacity10),
        0x9E => {
            let [service_action] = field::<1>(cdb, 1)?;
            if service_action & 0x1F != 0x10 {
                return Err(Sense::INVALID_FIELD_IN_CDB);
            }
            Ok(Command::ReadCapacity16 {
                allocation: allocation(u32::from_be_bytes(field(cdb, 10)?)),
            })
        }
        0x28 | 0x2A => {
            let lba = u64::from(u32::from_be_bytes(field(cdb, 2)?));
            let count = u32::from(u16::from_be_bytes(field(cdb, 7)?));
            let range = blocks(lba, count, block_count)?;
            Ok(if opcode == 0x28 {
                Command::Read(range)
            } else {
                Command::Write(range)
            })
        }
        0x88 | 0x8A => {
            let lba = u64::from_be_bytes(field(cdb, 2)?);
            let count = u32::from_be_bytes(field(cdb, 10)?);
            let range = blocks(lba, count, block_count)?;
            Ok(if opcode == 0x88 {
                Command::Read(range)
            } else {
                Command::Write(range)
            })
        }
        0x35 | 0x91 => Ok(Command::SynchronizeCache),
        0xA0 => Ok(Command::ReportLuns {
            allocation: allocation(u32::from_be_bytes(field(cdb, 6)?)),
        }),
        _ => Err(Sense::INVALID_OPCODE),
    }
}

/// A 32-bit ALLOCATION LENGTH as a byte count (saturating: the buffer bounds it anyway).
fn allocation(length: u32) -> usize {
    usize::try_from(length).unwrap_or(usize::MAX)
}

/// Standard INQUIRY data (SPC-4 6.6.2): a direct-access block device, SPC-4, response format 2,
/// command queuing.
const STANDARD_INQUIRY: [u8; 36] = {
    let mut data = [0u8; 36];
    data[2] = 0x06;
    data[3] = 0x02;
    data[4] = 36 - 5;
    data[7] = 0x02;
    let id = *b"STORPORTRAM DISK        0001";
    let mut i = 0;
    while i < id.len() {
        data[8 + i] = id[i];
        i += 1;
    }
    data
};

/// Writes the data-in response of a command that is not a READ or WRITE into `buffer`, cut to
/// its allocation length and to the buffer. Returns the number of bytes written.
pub fn reply(command: Command, block_count: u64, buffer: &mut [u8]) -> usize {
    let mut data = [0u8; 36];
    let (length, allocation) = match command {
        Command::Inquiry {
            page: None,
            allocation,
        } => {
            data = STANDARD_INQUIRY;
            (data.len(), allocation)
        }
        // VPD page 0x00, SUPPORTED VPD PAGES: just itself.
        Command::Inquiry {
            page: Some(_),
            allocation,
        } => {
            data[3] = 1;
            (5, allocation)
        }
        // MODE DATA LENGTH 3: a header, no block descriptor, no page; not write protected.
        Command::ModeSense6 { allocation } => {
            data[0] = 3;
            (4, allocation)
        }
        Command::ReadCapacity10 => {
            let last = u32::try_from(block_count.saturating_sub(1)).unwrap_or(u32::MAX);
            write_be(&mut data, 0, &last.to_be_bytes());
            write_be(&mut data, 4, &(BLOCK_SIZE as u32).to_be_bytes());
            (8, 8)
        }
        Command::ReadCapacity16 { allocation } => {
            write_be(&mut data, 0, &block_count.saturating_sub(1).to_be_bytes());
            write_be(&mut data, 8, &(BLOCK_SIZE as u32).to_be_bytes());
            (32, allocation)
        }
        // LUN LIST LENGTH 8: one entry, LUN 0 (all zeros).
        Command::ReportLuns { allocation } => {
            data[3] = 8;
            (16, allocation)
        }
        Command::TestUnitReady
        | Command::SynchronizeCache
        | Command::Read(_)
        | Command::Write(_) => (0, 0),
    };
    let count = length.min(allocation).min(buffer.len());
    match (buffer.get_mut(..count), data.get(..count)) {
        (Some(to), Some(from)) => {
            to.copy_from_slice(from);
            count
        }
        _ => 0,
    }
}

/// Copies `bytes` into `data` at `at` (within the 36-byte response: the callers' offsets fit).
fn write_be(data: &mut [u8], at: usize, bytes: &[u8]) {
    if let Some(to) = data.get_mut(at..at.saturating_add(bytes.len())) {
        to.copy_from_slice(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BLOCKS: u64 = 2048;

    #[test]
    fn read_and_write_decode_their_block_ranges() {
        let read10 = [0x28, 0, 0, 0, 0x07, 0xF0, 0, 0, 0x10, 0];
        assert_eq!(
            decode(&read10, BLOCKS),
            Ok(Command::Read(Blocks {
                lba: 0x7F0,
                count: 16
            }))
        );
        let write16 = [0x8A, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0];
        assert_eq!(
            decode(&write16, BLOCKS),
            Ok(Command::Write(Blocks { lba: 1, count: 2 }))
        );
    }

    #[test]
    fn out_of_range_and_overflowing_ranges_are_refused() {
        // The last block is fine, one more is not.
        assert!(decode(&[0x28, 0, 0, 0, 0x07, 0xFF, 0, 0, 1, 0], BLOCKS).is_ok());
        assert_eq!(
            decode(&[0x28, 0, 0, 0, 0x07, 0xFF, 0, 0, 2, 0], BLOCKS),
            Err(Sense::LBA_OUT_OF_RANGE)
        );
        let mut read16 = [
            0x88, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 1, 0, 0,
        ];
        assert_eq!(decode(&read16, BLOCKS), Err(Sense::LBA_OUT_OF_RANGE));
        read16[2..10].copy_from_slice(&BLOCKS.to_be_bytes());
        read16[13] = 0;
        // A zero-length transfer at the end is still inside; past it is not.
        assert_eq!(
            decode(&read16, BLOCKS),
            Ok(Command::Read(Blocks {
                lba: BLOCKS,
                count: 0
            }))
        );
        read16[2..10].copy_from_slice(&(BLOCKS + 1).to_be_bytes());
        assert_eq!(decode(&read16, BLOCKS), Err(Sense::LBA_OUT_OF_RANGE));
    }

    #[test]
    fn unknown_short_and_invalid_cdbs_are_refused() {
        assert_eq!(decode(&[], BLOCKS), Err(Sense::INVALID_OPCODE));
        assert_eq!(
            decode(&[0x4D, 0, 0, 0, 0, 0], BLOCKS),
            Err(Sense::INVALID_OPCODE)
        );
        assert_eq!(
            decode(&[0x28, 0, 0], BLOCKS),
            Err(Sense::INVALID_FIELD_IN_CDB)
        );
        assert_eq!(
            decode(&[0x12, 1, 0x83, 0, 255, 0], BLOCKS),
            Err(Sense::INVALID_FIELD_IN_CDB)
        );
        assert_eq!(
            decode(&[0x12, 0, 0x80, 0, 255, 0], BLOCKS),
            Err(Sense::INVALID_FIELD_IN_CDB)
        );
        assert_eq!(
            decode(
                &[0x9E, 0x11, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0],
                BLOCKS
            ),
            Err(Sense::INVALID_FIELD_IN_CDB)
        );
        assert_eq!(
            Sense::INVALID_OPCODE.bytes(),
            [0x70, 0, 5, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x20, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn replies_are_cut_to_allocation_length_and_buffer() {
        let mut buffer = [0xAAu8; 64];
        let inquiry = decode(&[0x12, 0, 0, 0, 36, 0], BLOCKS).unwrap();
        assert_eq!(reply(inquiry, BLOCKS, &mut buffer), 36);
        assert_eq!(&buffer[8..24], b"STORPORTRAM DISK");
        let short = decode(&[0x12, 0, 0, 0, 5, 0], BLOCKS).unwrap();
        assert_eq!(reply(short, BLOCKS, &mut buffer), 5);
        assert_eq!(reply(inquiry, BLOCKS, &mut buffer[..3]), 3);

        let mut capacity = [0u8; 8];
        assert_eq!(reply(Command::ReadCapacity10, BLOCKS, &mut capacity), 8);
        assert_eq!(capacity, [0, 0, 0x07, 0xFF, 0, 0, 0x02, 0]);
        let rc16 = decode(
            &[0x9E, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0],
            BLOCKS,
        )
        .unwrap();
        let mut long = [0xFFu8; 32];
        assert_eq!(reply(rc16, BLOCKS, &mut long), 32);
        assert_eq!(long[..12], [0, 0, 0, 0, 0, 0, 0x07, 0xFF, 0, 0, 0x02, 0]);
        assert!(long[12..].iter().all(|&b| b == 0));

        let luns = decode(&[0xA0, 0, 0, 0, 0, 0, 0, 0, 0, 16, 0, 0], BLOCKS).unwrap();
        let mut list = [0xFFu8; 16];
        assert_eq!(reply(luns, BLOCKS, &mut list), 16);
        assert_eq!(list, [0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn byte_ranges_are_checked() {
        let blocks = Blocks {
            lba: 2047,
            count: 1,
        };
        assert_eq!(blocks.byte_range(1 << 20), Some(2047 * 512..1 << 20));
        assert_eq!(
            Blocks {
                lba: 2047,
                count: 2
            }
            .byte_range(1 << 20),
            None
        );
        assert_eq!(
            Blocks {
                lba: u64::MAX,
                count: 1
            }
            .byte_range(1 << 20),
            None
        );
    }
}
