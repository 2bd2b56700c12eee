//! Garbage in, no panic out: random CDBs, parameter lists and buffer sizes against every disk
//! shape, with a fixed-seed xorshift generator so failures reproduce.

#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::arithmetic_side_effects,
    clippy::cast_possible_truncation,
    clippy::panic,
    reason = "test code; a panic is the failure being looked for"
)]

extern crate std;

use super::disk::{BlockSize, DiskInfo, Serial};
use super::testdisk::{disk4k, disk512};
use super::*;

/// xorshift64* (Vigna): small, deterministic, good enough to shake a parser.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            *b = self.next() as u8;
        }
    }
}

/// Opcodes the decoder knows, so random CDBs reach past the opcode check often.
const KNOWN: [u8; 30] = [
    0x00, 0x03, 0x08, 0x0A, 0x12, 0x15, 0x1A, 0x1B, 0x25, 0x28, 0x2A, 0x2E, 0x2F, 0x35, 0x41, 0x42,
    0x55, 0x5A, 0x88, 0x8A, 0x8E, 0x8F, 0x91, 0x93, 0x9E, 0xA0, 0xA8, 0xAA, 0xAE, 0xAF,
];

fn disks(rng: &mut Rng) -> [DiskInfo; 5] {
    let mut odd = disk512();
    odd.capacity = rng.next();
    odd.physical_block_exponent = rng.next() as u8;
    odd.lowest_aligned_lba = rng.next() as u16;
    odd.min_io_blocks = rng.next() as u16;
    odd.max_transfer_blocks = rng.next() as u32;
    odd.read_only = rng.next() & 1 == 1;
    odd.serial = Serial::from_id(&rng.next().to_le_bytes());
    let mut big = DiskInfo {
        capacity: u64::MAX,
        ..disk4k()
    };
    big.block_size = BlockSize::new(65536).unwrap();
    [
        disk512(),
        disk4k(),
        DiskInfo::new(BlockSize::B512, 0),
        odd,
        big,
    ]
}

/// Runs everything a caller would run for `cdb` and `params`.
fn exercise(cdb: &[u8], params: &[u8], disk: &DiskInfo, buf: &mut [u8]) {
    let mut sense = [0u8; 32];
    let _ = reports_unit_attention(cdb);
    match decode(cdb, disk) {
        Err(s) => {
            assert!(s.write(&mut sense) <= Sense::LEN);
        }
        Ok(Command::DataIn(data)) => {
            let n = data.write(disk, buf);
            assert!(n <= buf.len() && n as u64 <= u64::from(data.allocation_length()));
        }
        Ok(Command::RequestSense { allocation_length }) => {
            assert!(request_sense(None, allocation_length, buf) <= usize::from(allocation_length));
        }
        Ok(Command::Read(io) | Command::Write(io)) => {
            assert!(io.blocks > 0);
            let range = io.sectors(disk).unwrap();
            assert!(range.sector.checked_add(range.sectors).is_some());
            assert!(io.lba + u64::from(io.blocks) <= disk.capacity);
        }
        Ok(Command::Unmap {
            parameter_list_length,
        }) => {
            let len = params.len().min(usize::from(parameter_list_length));
            if let Ok(list) = parse_unmap(&params[..len], disk) {
                let mut total = 0u64;
                let count = list.segment_count();
                assert!(count as u64 <= u64::from(disk.max_unmap_descriptors()));
                for segment in list.segments() {
                    let end = segment.sector + u64::from(segment.sectors);
                    assert!(end <= disk.capacity * u64::from(disk.block_size.sectors_per_block()));
                    total += u64::from(segment.sectors);
                }
                let per_block = u64::from(disk.block_size.sectors_per_block());
                assert!(total / per_block <= u64::from(disk.max_unmap_blocks()));
            }
        }
        Ok(Command::WriteSame(ws)) => {
            if let Ok(WriteSamePlan::Discard(s) | WriteSamePlan::WriteZeroes { segment: s, .. }) =
                ws.plan(params, disk)
            {
                assert!(s.sectors > 0);
            }
        }
        Ok(Command::ModeSelect(ms)) => {
            let _ = ms.parse(params, disk);
        }
        Ok(Command::Good | Command::Flush) => {}
    }
}

#[test]
fn random_cdbs_and_parameter_lists_never_panic() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut cdb = [0u8; 20];
    let mut params = [0u8; 600];
    let mut buf = [0u8; 300];
    for _ in 0..200_000u32 {
        // Fresh disks every round, one of them with random geometry.
        let all = disks(&mut rng);
        let disk = &all[rng.below(all.len() as u64) as usize];
        rng.fill(&mut cdb);
        if rng.next() & 3 != 0 {
            cdb[0] = KNOWN[rng.below(KNOWN.len() as u64) as usize];
        }
        // Keep the CONTROL byte clean half the time so decoding goes deeper.
        if rng.next() & 1 == 0 {
            for b in cdb.iter_mut().skip(5) {
                if rng.next() & 1 == 0 {
                    *b = 0;
                }
            }
        }
        let cdb_len = rng.below(cdb.len() as u64 + 1) as usize;
        rng.fill(&mut params);
        // Make plausible UNMAP / MODE SELECT headers some of the time.
        if rng.next() & 1 == 0 {
            params[0] = 0;
            params[2] = 0;
            params[1] = rng.below(256) as u8;
            params[3] = (rng.below(16) * 16) as u8;
            for d in params.iter_mut().skip(8).step_by(16) {
                *d = 0;
            }
        }
        let params_len = rng.below(params.len() as u64 + 1) as usize;
        let buf_len = rng.below(buf.len() as u64 + 1) as usize;
        exercise(
            &cdb[..cdb_len],
            &params[..params_len],
            disk,
            &mut buf[..buf_len],
        );
    }
}

#[test]
fn every_opcode_with_zeroed_and_full_cdbs() {
    let mut buf = [0u8; 256];
    for disk in disks(&mut Rng(1)) {
        for opcode in 0..=255u8 {
            for fill in [0x00u8, 0xFF, 0x5A] {
                for len in [0usize, 1, 6, 10, 12, 16] {
                    let mut cdb = [fill; 16];
                    cdb[0] = opcode;
                    exercise(&cdb[..len.clamp(1, 16)], &[fill; 64], &disk, &mut buf);
                }
            }
        }
    }
}
