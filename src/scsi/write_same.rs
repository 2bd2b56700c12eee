//! WRITE SAME: one block of data repeated over a range, or that range deallocated.
//!
//! WRITE SAME(10) and (16) (SBC-3 5.41, 5.42) send one logical block (none with NDOB,
//! SBC-4 5.50) to be written to every block of the range; with the UNMAP bit the device server
//! may deallocate the range instead. The device can only write zeroes or deallocate, never
//! repeat an arbitrary pattern, so:
//!
//! - the data block must be all zeroes (or NDOB); anything else is ILLEGAL REQUEST / INVALID
//!   FIELD IN CDB, as the command cannot be performed as asked;
//! - UNMAP = 1: deallocate with the disk's carrier ([`DiskInfo::deallocation`]): write zeroes
//!   with the unmap flag (reads return zeroes) or discard (LBPRZ = 0, so unmapped blocks read
//!   back unspecified data, which SBC-3 4.7.4.5 permits); without any, write zeroes;
//! - UNMAP = 0: write zeroes without the unmap flag; without write-zeroes, INVALID FIELD IN CDB.
//!
//! The decoder has checked the range and limited it to one segment (MAXIMUM WRITE SAME LENGTH).

use super::disk::{Deallocation, DiskInfo, Segment, to_sectors};
use super::sense::Sense;

/// A decoded WRITE SAME: fetch the data block (unless [`Self::ndob`]), then [`Self::plan`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteSame {
    /// The first logical block.
    pub lba: u64,
    /// The number of logical blocks (never 0).
    pub blocks: u32,
    /// The UNMAP bit: the range may be deallocated.
    pub unmap: bool,
    /// NDOB: no data-out block, zeroes are meant.
    pub ndob: bool,
}

/// What the device must do for a WRITE SAME.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteSamePlan {
    /// Discard the segment.
    Discard(Segment),
    /// Write zeroes to the segment, with the unmap flag when `unmap`.
    WriteZeroes {
        /// The range to zero.
        segment: Segment,
        /// Set the unmap flag (the device may deallocate).
        unmap: bool,
    },
}

impl WriteSame {
    /// The number of data-out bytes to fetch: one logical block, or 0 with NDOB.
    pub fn data_length(&self, disk: &DiskInfo) -> u32 {
        if self.ndob {
            0
        } else {
            disk.block_size.bytes()
        }
    }

    /// Decides how to carry out the command given its data-out block (`data`, ignored with NDOB).
    ///
    /// # Errors
    ///
    /// INVALID FIELD IN CDB when the block is short or not all zeroes, or when zeroes must be
    /// written and the disk cannot write zeroes.
    pub fn plan(&self, data: &[u8], disk: &DiskInfo) -> Result<WriteSamePlan, Sense> {
        if !self.ndob {
            let block = usize::try_from(disk.block_size.bytes()).unwrap_or(usize::MAX);
            let zero = data.get(..block).is_some_and(|b| b.iter().all(|&x| x == 0));
            if !zero {
                return Err(Sense::INVALID_FIELD_IN_CDB);
            }
        }
        let segment = to_sectors(self.lba, u64::from(self.blocks), disk)
            .and_then(|range| {
                let sectors = u32::try_from(range.sectors).ok()?;
                Some(Segment {
                    sector: range.sector,
                    sectors,
                })
            })
            .filter(|segment| segment.sectors != 0)
            .ok_or(Sense::INVALID_FIELD_IN_CDB)?;
        let dealloc = if self.unmap {
            disk.deallocation()
        } else {
            None
        };
        match (dealloc, disk.write_zeroes) {
            (Some(Deallocation::WriteZeroes), _) => Ok(WriteSamePlan::WriteZeroes {
                segment,
                unmap: true,
            }),
            (Some(Deallocation::Discard), _) => Ok(WriteSamePlan::Discard(segment)),
            (None, Some(_)) => Ok(WriteSamePlan::WriteZeroes {
                segment,
                unmap: false,
            }),
            (None, None) => Err(Sense::INVALID_FIELD_IN_CDB),
        }
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

    use super::*;
    use crate::scsi::disk::WriteZeroesLimits;
    use crate::scsi::testdisk::{disk4k, disk512};

    const ZEROES: [u8; 4096] = [0; 4096];

    fn ws(lba: u64, blocks: u32, unmap: bool) -> WriteSame {
        WriteSame {
            lba,
            blocks,
            unmap,
            ndob: false,
        }
    }

    #[test]
    fn zeroes_with_unmap_on_write_zeroes_carrier() {
        let d = disk512();
        assert_eq!(
            ws(8, 16, true).plan(&ZEROES[..512], &d),
            Ok(WriteSamePlan::WriteZeroes {
                segment: Segment {
                    sector: 8,
                    sectors: 16
                },
                unmap: true
            })
        );
        assert_eq!(
            ws(8, 16, false).plan(&ZEROES[..512], &d),
            Ok(WriteSamePlan::WriteZeroes {
                segment: Segment {
                    sector: 8,
                    sectors: 16
                },
                unmap: false
            })
        );
    }

    #[test]
    fn discard_carrier_on_4kn() {
        let d = disk4k();
        assert_eq!(ws(2, 3, true).data_length(&d), 4096);
        assert_eq!(
            ws(2, 3, true).plan(&ZEROES, &d),
            Ok(WriteSamePlan::Discard(Segment {
                sector: 16,
                sectors: 24
            }))
        );
        // Without UNMAP zeroes must be written, which this disk cannot do.
        assert_eq!(
            ws(2, 3, false).plan(&ZEROES, &d),
            Err(Sense::INVALID_FIELD_IN_CDB)
        );
        // Half a block of data is not a block.
        assert_eq!(
            ws(2, 3, true).plan(&ZEROES[..512], &d),
            Err(Sense::INVALID_FIELD_IN_CDB)
        );
    }

    #[test]
    fn non_zero_data_is_refused() {
        let mut block = [0u8; 512];
        block[511] = 1;
        assert_eq!(
            ws(0, 1, true).plan(&block, &disk512()),
            Err(Sense::INVALID_FIELD_IN_CDB)
        );
        assert_eq!(
            ws(0, 1, false).plan(&block, &disk512()),
            Err(Sense::INVALID_FIELD_IN_CDB)
        );
    }

    #[test]
    fn ndob_needs_no_data_and_write_zeroes_without_unmap() {
        let mut d = disk512();
        d.discard = None;
        d.write_zeroes = Some(WriteZeroesLimits::from_config(1024, 1, false));
        let cmd = WriteSame {
            lba: 1,
            blocks: 2,
            unmap: true,
            ndob: true,
        };
        assert_eq!(cmd.data_length(&d), 0);
        assert_eq!(
            cmd.plan(&[], &d),
            Ok(WriteSamePlan::WriteZeroes {
                segment: Segment {
                    sector: 1,
                    sectors: 2
                },
                unmap: false
            })
        );
    }
}
