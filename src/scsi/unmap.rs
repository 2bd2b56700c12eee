//! The UNMAP parameter list: which block ranges to deallocate.
//!
//! SBC-3 5.28.2 (table 96): an 8-byte header (UNMAP DATA LENGTH, UNMAP BLOCK DESCRIPTOR DATA
//! LENGTH, reserved) then 16-byte block descriptors (table 97: 8-byte LBA, 4-byte NUMBER OF
//! LOGICAL BLOCKS, reserved). [`parse`] validates the whole list before anything is issued, so a
//! bad descriptor never leaves a half-done UNMAP:
//!
//! - a list of 0..=7 bytes is PARAMETER LIST LENGTH ERROR (SBC-3 5.28.1; 0 bytes: the list the
//!   CDB announced was not transferred); header lengths that claim more than the list holds
//!   are PARAMETER LIST LENGTH ERROR; an UNMAP DATA LENGTH smaller than the descriptors it must
//!   contain is INVALID FIELD IN PARAMETER LIST;
//! - descriptors cut short by the parameter list length, or an incomplete last descriptor (a
//!   descriptor data length that is not a multiple of 16), are ignored (SBC-3 5.28.2);
//! - more descriptors than MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT, or more blocks in total than
//!   MAXIMUM UNMAP LBA COUNT, is INVALID FIELD IN PARAMETER LIST (SBC-3 5.28.1); nothing is
//!   silently dropped or split;
//! - a range past the capacity is LOGICAL BLOCK ADDRESS OUT OF RANGE; zero-block descriptors
//!   are skipped (not an error).
//!
//! Because the total is bounded by one segment's worth of sectors and the descriptor count by
//! the segment count (see [`DiskInfo::max_unmap_blocks`]), each non-empty descriptor becomes
//! exactly one [`Segment`] and they all fit one device request.

use super::disk::{DiskInfo, Segment, to_sectors};
use super::sense::Sense;

const HEADER: usize = 8;
const DESCRIPTOR: usize = 16;

/// A validated UNMAP parameter list.
///
/// # Invariants
///
/// `descriptors` holds whole 16-byte descriptors, each in range of the disk it was parsed for,
/// whose sector ranges fit a [`Segment`]; there are at most that disk's descriptor limit.
#[derive(Clone, Copy, Debug)]
pub struct UnmapList<'a> {
    descriptors: &'a [u8],
    sectors_per_block: u64,
}

/// Parses and validates an UNMAP parameter list (the data-out bytes, at most the CDB's
/// PARAMETER LIST LENGTH) for `disk`.
///
/// # Errors
///
/// The sense data for CHECK CONDITION, as listed in the module documentation.
pub fn parse<'a>(params: &'a [u8], disk: &DiskInfo) -> Result<UnmapList<'a>, Sense> {
    let sectors_per_block = u64::from(disk.block_size.sectors_per_block());
    // Shorter than the header, including nothing at all (a PARAMETER LIST LENGTH whose list was
    // not transferred; a PARAMETER LIST LENGTH of 0 is GOOD before any list is read, `cdb`).
    let Some(&[dl0, dl1, bd0, bd1]) = params.get(..4) else {
        return Err(Sense::PARAMETER_LIST_LENGTH_ERROR);
    };
    if params.len() < HEADER {
        return Err(Sense::PARAMETER_LIST_LENGTH_ERROR);
    }
    let data_length = usize::from(u16::from_be_bytes([dl0, dl1]));
    let descriptor_length = usize::from(u16::from_be_bytes([bd0, bd1]));
    // UNMAP DATA LENGTH counts the bytes after itself: 6 header bytes plus the descriptors.
    if descriptor_length != 0 && data_length < descriptor_length.saturating_add(HEADER - 2) {
        return Err(Sense::invalid_parameter_field(0, None));
    }
    // Only whole descriptors both announced and transferred are used.
    let available = params.len().saturating_sub(HEADER).min(descriptor_length);
    let whole = available
        .checked_div(DESCRIPTOR)
        .unwrap_or(0)
        .saturating_mul(DESCRIPTOR);
    let descriptors = params
        .get(HEADER..HEADER.saturating_add(whole))
        .unwrap_or(&[]);

    let count = descriptors.len().checked_div(DESCRIPTOR).unwrap_or(0);
    if u64::try_from(count).unwrap_or(u64::MAX) > u64::from(disk.max_unmap_descriptors()) {
        return Err(Sense::invalid_parameter_field(2, None));
    }
    let mut total: u64 = 0;
    for (index, descriptor) in descriptors.chunks_exact(DESCRIPTOR).enumerate() {
        let (lba, blocks) = fields(descriptor);
        if blocks == 0 {
            continue;
        }
        // The field pointer names this descriptor's NUMBER OF LOGICAL BLOCKS.
        let at = index.saturating_mul(DESCRIPTOR).saturating_add(HEADER + 8);
        total = total.saturating_add(u64::from(blocks));
        if total > u64::from(disk.max_unmap_blocks()) {
            return Err(Sense::invalid_parameter_field(
                u16::try_from(at).unwrap_or(u16::MAX),
                None,
            ));
        }
        disk.check_range(lba, u64::from(blocks))?;
        // Guaranteed by the limits above; checked anyway so the invariant never rests on them.
        let fits = to_sectors(lba, u64::from(blocks), disk)
            .is_some_and(|range| u32::try_from(range.sectors).is_ok());
        if !fits {
            return Err(Sense::invalid_parameter_field(
                u16::try_from(at).unwrap_or(u16::MAX),
                None,
            ));
        }
    }
    // INVARIANT: every descriptor was checked above.
    Ok(UnmapList {
        descriptors,
        sectors_per_block,
    })
}

/// The LBA and NUMBER OF LOGICAL BLOCKS of one 16-byte descriptor.
fn fields(descriptor: &[u8]) -> (u64, u32) {
    let mut lba = [0u8; 8];
    let mut blocks = [0u8; 4];
    for (dst, &src) in lba.iter_mut().zip(descriptor) {
        *dst = src;
    }
    for (dst, &src) in blocks.iter_mut().zip(descriptor.get(8..).unwrap_or(&[])) {
        *dst = src;
    }
    (u64::from_be_bytes(lba), u32::from_be_bytes(blocks))
}

impl<'a> UnmapList<'a> {
    /// The segments to deallocate, in list order, one per non-empty descriptor.
    pub fn segments(&self) -> Segments<'a> {
        Segments {
            descriptors: self.descriptors.chunks_exact(DESCRIPTOR),
            sectors_per_block: self.sectors_per_block,
        }
    }

    /// The number of segments [`Self::segments`] yields (unit tests; the driver only iterates).
    #[cfg(test)]
    pub fn segment_count(&self) -> usize {
        self.segments().count()
    }
}

/// The segments of an [`UnmapList`], without allocating.
#[derive(Clone, Debug)]
pub struct Segments<'a> {
    descriptors: core::slice::ChunksExact<'a, u8>,
    sectors_per_block: u64,
}

impl Iterator for Segments<'_> {
    type Item = Segment;

    fn next(&mut self) -> Option<Segment> {
        for descriptor in self.descriptors.by_ref() {
            let (lba, blocks) = fields(descriptor);
            // By the `UnmapList` invariant these conversions succeed for non-empty descriptors.
            let sector = lba.checked_mul(self.sectors_per_block);
            let sectors = u64::from(blocks)
                .checked_mul(self.sectors_per_block)
                .and_then(|s| u32::try_from(s).ok());
            if let (Some(sector), Some(sectors)) = (sector, sectors)
                && sectors != 0
            {
                return Some(Segment { sector, sectors });
            }
        }
        None
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

    extern crate std;
    use std::vec::Vec;

    use super::*;
    use crate::scsi::disk::{DiscardLimits, WriteZeroesLimits};
    use crate::scsi::testdisk::{disk4k, disk512};

    fn list(descriptors: &[(u64, u32)]) -> Vec<u8> {
        let bd = descriptors.len() * 16;
        let mut out = Vec::new();
        out.extend_from_slice(&((bd + 6) as u16).to_be_bytes());
        out.extend_from_slice(&(bd as u16).to_be_bytes());
        out.extend_from_slice(&[0; 4]);
        for &(lba, blocks) in descriptors {
            out.extend_from_slice(&lba.to_be_bytes());
            out.extend_from_slice(&blocks.to_be_bytes());
            out.extend_from_slice(&[0; 4]);
        }
        out
    }

    fn segments(params: &[u8], disk: &DiskInfo) -> Result<Vec<Segment>, Sense> {
        parse(params, disk).map(|l| l.segments().collect())
    }

    #[test]
    fn one_descriptor_512() {
        let d = disk512();
        assert_eq!(
            segments(&list(&[(100, 8)]), &d),
            Ok(std::vec![Segment {
                sector: 100,
                sectors: 8
            }])
        );
    }

    #[test]
    fn descriptors_on_4kn_become_eight_sectors_per_block() {
        let d = disk4k();
        let got = segments(&list(&[(10, 3), (0, 0), ((1 << 18) - 1, 1)]), &d).unwrap();
        assert_eq!(
            got,
            [
                Segment {
                    sector: 80,
                    sectors: 24
                },
                Segment {
                    sector: ((1 << 18) - 1) * 8,
                    sectors: 8
                }
            ]
        );
        assert_eq!(
            parse(&list(&[(10, 3), (0, 0)]), &d)
                .unwrap()
                .segment_count(),
            1
        );
    }

    #[test]
    fn range_checked_in_logical_blocks_on_4kn() {
        let d = disk4k();
        // The last block exists; one past it does not (in 512-byte terms it would look fine).
        assert!(parse(&list(&[(d.capacity - 1, 1)]), &d).is_ok());
        assert_eq!(parse(&list(&[(d.capacity, 1)]), &d).unwrap_err().asc, 0x21);
        assert_eq!(
            parse(&list(&[(d.capacity - 1, 2)]), &d).unwrap_err().asc,
            0x21
        );
        assert_eq!(parse(&list(&[(u64::MAX, 1)]), &d).unwrap_err().asc, 0x21);
    }

    #[test]
    fn lba_count_limit_in_blocks_on_4kn() {
        let mut d = disk4k();
        d.capacity = 1 << 30;
        let max = d.max_unmap_blocks();
        assert_eq!(max, 0x7_FFFF);
        assert!(parse(&list(&[(0, max)]), &d).is_ok());
        let seg = segments(&list(&[(0, max)]), &d).unwrap();
        assert_eq!(
            seg,
            [Segment {
                sector: 0,
                sectors: max * 8
            }]
        );
        assert_eq!(
            parse(&list(&[(0, max), (1 << 20, 1)]), &d).unwrap_err(),
            Sense::invalid_parameter_field(8 + 16 + 8, None)
        );
    }

    #[test]
    fn descriptor_count_limit() {
        let d = disk512(); // one segment per request
        assert!(parse(&list(&[(0, 1)]), &d).is_ok());
        assert_eq!(
            parse(&list(&[(0, 1), (5, 1)]), &d).unwrap_err(),
            Sense::invalid_parameter_field(2, None)
        );
        let d4 = disk4k(); // 16 segments
        let many: Vec<(u64, u32)> = (0..16).map(|i| (i * 10, 2)).collect();
        assert_eq!(segments(&list(&many), &d4).unwrap().len(), 16);
        let too_many: Vec<(u64, u32)> = (0..17).map(|i| (i * 10, 2)).collect();
        assert!(parse(&list(&too_many), &d4).is_err());
    }

    #[test]
    fn header_lengths_checked() {
        let d = disk512();
        // Nothing at all is short too: the list the CDB announced was not transferred.
        for short in 0..8 {
            assert_eq!(
                parse(&list(&[(0, 1)])[..short], &d).unwrap_err(),
                Sense::PARAMETER_LIST_LENGTH_ERROR
            );
        }
        // Header only, no descriptors: nothing to do.
        assert_eq!(segments(&list(&[]), &d), Ok(Vec::new()));
        // UNMAP DATA LENGTH too small for the descriptors it announces.
        let mut bad = list(&[(0, 1)]);
        bad[1] = 6;
        assert_eq!(
            parse(&bad, &d).unwrap_err(),
            Sense::invalid_parameter_field(0, None)
        );
    }

    #[test]
    fn truncated_and_partial_descriptors_are_ignored() {
        let d = disk4k();
        let full = list(&[(1, 1), (2, 1)]);
        // Cut by the parameter list length inside the second descriptor.
        assert_eq!(
            segments(&full[..8 + 16 + 5], &d).unwrap(),
            [Segment {
                sector: 8,
                sectors: 8
            }]
        );
        // Descriptor data length not a multiple of 16: the incomplete one is ignored.
        let mut partial = full.clone();
        partial[3] = 16 + 12;
        assert_eq!(
            segments(&partial, &d).unwrap(),
            [Segment {
                sector: 8,
                sectors: 8
            }]
        );
        // Descriptor data length larger than the list: only what arrived is used.
        let mut big = full.clone();
        big[0] = 0x10;
        big[2] = 0x10;
        assert_eq!(segments(&big, &d).unwrap().len(), 2);
    }

    #[test]
    fn write_zeroes_carrier_limits() {
        let mut d = disk512();
        d.write_zeroes = Some(WriteZeroesLimits::from_config(64, 2, true));
        d.discard = Some(DiscardLimits::from_config(1 << 20, 8, 0));
        assert_eq!(d.max_unmap_blocks(), 64);
        assert!(parse(&list(&[(0, 32), (100, 32)]), &d).is_ok());
        assert!(parse(&list(&[(0, 32), (100, 33)]), &d).is_err());
        assert!(parse(&list(&[(0, 1), (1, 1), (2, 1)]), &d).is_err());
    }

    #[test]
    fn no_deallocation_rejects_any_descriptor() {
        let mut d = disk512();
        d.discard = None;
        d.write_zeroes = None;
        assert!(parse(&list(&[(0, 1)]), &d).is_err());
    }
}
