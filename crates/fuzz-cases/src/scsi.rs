//! The SCSI layer: any CDB, with any parameter list (MODE SELECT, UNMAP, WRITE SAME) and any
//! data-in buffer size, against any disk description.
//!
//! `vioblk::scsi` is pure (bytes in, block operations and bytes out), so the whole of what the
//! adapter does with a CDB runs here: [`decode`], then what the adapter would run for the command.
//! The invariants are the ones a class driver relies on:
//!
//! - no panic on any input;
//! - sense data is fixed format and fits [`Sense::LEN`]; a data-in answer fits both the buffer
//!   and the CDB's allocation length; REQUEST SENSE fits its allocation length;
//! - a READ or WRITE is non-empty, inside the disk, and its 512-byte sector range does not
//!   overflow;
//! - an UNMAP list or a WRITE SAME plan only names sectors inside the disk and respects the
//!   limits the disk advertised (descriptor count, blocks per command).

use arbitrary::Arbitrary;
use vioblk::scsi::{
    BlockSize, Command, DiscardLimits, DiskInfo, Sense, Serial, WriteCache, WriteSamePlan,
    WriteZeroesLimits, decode, parse_unmap, reports_unit_attention, request_sense,
};

/// One fuzz input.
#[derive(Arbitrary, Debug, Clone)]
pub struct Input {
    /// The disk.
    pub disk: Disk,
    /// The CDB (any length; the decoder sees all of it).
    pub cdb: Vec<u8>,
    /// The data-out buffer: the parameter list.
    pub params: Vec<u8>,
    /// The data-in buffer's size (taken modulo 4096).
    pub buffer: u16,
}

/// Any disk description the adapter could build from a device's configuration.
#[derive(Arbitrary, Debug, Clone)]
pub struct Disk {
    /// Logical block size in bytes (invalid sizes fall back to 512).
    pub block_size: u32,
    /// Capacity in logical blocks.
    pub capacity: u64,
    /// `physical_block_exponent`.
    pub physical_block_exponent: u8,
    /// `lowest_aligned_lba`.
    pub lowest_aligned_lba: u16,
    /// `min_io_blocks`.
    pub min_io_blocks: u16,
    /// `opt_io_blocks`.
    pub opt_io_blocks: u32,
    /// `read_only`.
    pub read_only: bool,
    /// The write cache: (enabled, changeable).
    pub write_cache: Option<(bool, bool)>,
    /// `write_cache_default`.
    pub write_cache_default: Option<bool>,
    /// `flush`.
    pub flush: bool,
    /// Discard: (max_sectors, max_segments, sector_alignment) as the device reports them.
    pub discard: Option<(u32, u32, u32)>,
    /// Write zeroes: (max_sectors, max_segments, may_unmap).
    pub write_zeroes: Option<(u32, u32, bool)>,
    /// `max_transfer_blocks`.
    pub max_transfer_blocks: u32,
    /// The device's GET_ID bytes.
    pub serial: Vec<u8>,
}

impl Disk {
    /// The description the SCSI layer sees.
    pub fn info(&self) -> DiskInfo {
        DiskInfo {
            physical_block_exponent: self.physical_block_exponent,
            lowest_aligned_lba: self.lowest_aligned_lba,
            min_io_blocks: self.min_io_blocks,
            opt_io_blocks: self.opt_io_blocks,
            read_only: self.read_only,
            write_cache: self.write_cache.map(|(enabled, changeable)| WriteCache {
                enabled,
                changeable,
            }),
            write_cache_default: self.write_cache_default,
            flush: self.flush,
            discard: self
                .discard
                .map(|(s, n, a)| DiscardLimits::from_config(s, n, a)),
            write_zeroes: self
                .write_zeroes
                .map(|(s, n, u)| WriteZeroesLimits::from_config(s, n, u)),
            max_transfer_blocks: self.max_transfer_blocks,
            serial: Serial::from_id(&self.serial),
            block_size: BlockSize::new(self.block_size).unwrap_or(BlockSize::B512),
            capacity: self.capacity,
            vendor: vioblk::hba::VENDOR,
            product: vioblk::hba::PRODUCT,
            revision: vioblk::hba::REVISION,
        }
    }
}

/// Runs one input; panics naming the broken invariant.
pub fn run(input: &Input) {
    let disk = input.disk.info();
    let mut buf = vec![0u8; usize::from(input.buffer % 4096)];
    exercise(&input.cdb, &input.params, &disk, &mut buf);
}

/// Sectors of 512 bytes in the disk.
fn disk_sectors(disk: &DiskInfo) -> u128 {
    u128::from(disk.capacity) * u128::from(disk.block_size.sectors_per_block())
}

/// Everything the adapter runs for `cdb`, with `params` as the data-out buffer and `buf` as
/// the data-in buffer.
pub fn exercise(cdb: &[u8], params: &[u8], disk: &DiskInfo, buf: &mut [u8]) {
    let mut sense = [0u8; 64];
    let _ = reports_unit_attention(cdb);
    match decode(cdb, disk) {
        Err(s) => {
            let n = s.write(&mut sense);
            assert!(n <= Sense::LEN, "sense of {n} bytes");
            assert_eq!(sense[0] & 0x7F, 0x70, "sense is not fixed format");
        }
        Ok(Command::DataIn(data)) => {
            let n = data.write(disk, buf);
            assert!(n <= buf.len(), "{n} bytes of data-in into {}", buf.len());
            assert!(
                n as u64 <= u64::from(data.allocation_length()),
                "{n} bytes past the allocation length {}",
                data.allocation_length()
            );
        }
        Ok(Command::RequestSense { allocation_length }) => {
            let n = request_sense(None, allocation_length, buf);
            assert!(n <= usize::from(allocation_length) && n <= buf.len());
        }
        Ok(Command::Read(io) | Command::Write(io)) => {
            assert!(io.blocks > 0, "an empty transfer reached the device");
            let end = u128::from(io.lba) + u128::from(io.blocks);
            assert!(
                end <= u128::from(disk.capacity),
                "blocks {}+{} past capacity {}",
                io.lba,
                io.blocks,
                disk.capacity
            );
            let range = io
                .sectors(disk)
                .expect("a decoded transfer has a sector range");
            assert!(u128::from(range.sector) + u128::from(range.sectors) <= disk_sectors(disk));
        }
        Ok(Command::Unmap {
            parameter_list_length,
        }) => {
            let len = params.len().min(usize::from(parameter_list_length));
            if let Ok(list) = parse_unmap(&params[..len], disk) {
                assert!(list.segments().count() as u64 <= u64::from(disk.max_unmap_descriptors()));
                let mut total = 0u128;
                for segment in list.segments() {
                    assert!(segment.sectors > 0, "an empty discard segment");
                    let end = u128::from(segment.sector) + u128::from(segment.sectors);
                    assert!(
                        end <= disk_sectors(disk),
                        "discard past the end of the disk"
                    );
                    total += u128::from(segment.sectors);
                }
                let per_block = u128::from(disk.block_size.sectors_per_block());
                assert!(total / per_block <= u128::from(disk.max_unmap_blocks()));
            }
        }
        Ok(Command::WriteSame(ws)) => {
            if let Ok(WriteSamePlan::Discard(s) | WriteSamePlan::WriteZeroes { segment: s, .. }) =
                ws.plan(params, disk)
            {
                assert!(s.sectors > 0, "an empty WRITE SAME segment");
                let end = u128::from(s.sector) + u128::from(s.sectors);
                assert!(
                    end <= disk_sectors(disk),
                    "WRITE SAME past the end of the disk"
                );
            }
        }
        Ok(Command::ModeSelect(ms)) => {
            if let Err(s) = ms.parse(params, disk) {
                assert!(s.write(&mut sense) <= Sense::LEN);
            }
        }
        Ok(Command::Good | Command::Flush) => {}
    }
}
