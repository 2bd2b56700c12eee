//! The SCSI layer: CDB and parameter bytes in, block operations, data and sense bytes out.
//!
//! Windows' disk class driver speaks SCSI (SPC-4, SBC-3) to a Storport miniport; a virtio-blk
//! device speaks reads, writes, flushes, discards and write-zeroes in 512-byte sectors. This
//! module is the translation between the two, and nothing else: it names neither virtio nor
//! Storport nor an SRB, allocates nothing and never panics on any input (every CDB, parameter list
//! and buffer length is untrusted; arithmetic is checked, slices are reached with `get`).
//!
//! The HBA layer uses it in three steps:
//!
//! 1. Describe the disk once (and again after a configuration change) as a [`DiskInfo`].
//! 2. [`decode`] each CDB into a [`Command`] or a [`Sense`] for CHECK CONDITION:
//!    - [`Command::Read`] / [`Command::Write`]: block I/O ([`Io::sectors`] gives the 512-byte
//!      sector range); [`Command::Flush`]; [`Command::Good`]: complete at once with GOOD;
//!    - [`Command::DataIn`]: INQUIRY, READ CAPACITY, MODE SENSE, REPORT LUNS answered at once
//!      by [`DataIn::write`] into the data-in buffer;
//!    - [`Command::RequestSense`]: answered by [`request_sense`] from the pending sense data;
//!    - [`Command::Unmap`], [`Command::WriteSame`], [`Command::ModeSelect`]: need the data-out
//!      buffer first, then [`unmap::parse`](parse_unmap), [`WriteSame::plan`] or
//!      [`ModeSelect::parse`] turn it into discard / write-zeroes segments or a cache change.
//! 3. Map a failed block operation to sense data with [`Sense::for_block_error`].
//!
//! Sense data is always fixed format (SPC-4 4.5.3). Reserved CDB fields are not checked (SPC-4
//! 2.4.3 permits either); defined fields the device cannot honour are rejected with ILLEGAL
//! REQUEST / INVALID FIELD IN CDB and a sense-key-specific field pointer (SPC-4 4.5.2.4.2).

#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_possible_truncation
)]

mod capacity;
mod cdb;
mod data;
mod disk;
mod inquiry;
mod luns;
mod mode;
mod sense;
mod unmap;
mod write_same;

pub use cdb::{Command, DataIn, Io, decode, decode_read_write, reports_unit_attention};
pub use disk::{
    BlockSize, Deallocation, DiscardLimits, DiskInfo, SectorRange, Segment, Serial, WriteCache,
    WriteZeroesLimits, to_sectors,
};
pub use mode::{CacheChange, ModeSelect};
pub use sense::{BlockError, BlockOp, FieldPointer, Sense, SenseKey, request_sense};
pub use unmap::{Segments, UnmapList, parse as parse_unmap};
pub use write_same::{WriteSame, WriteSamePlan};

// Test-only (the garbage-in fuzz loop), kept under tests/ with the other test code.
#[cfg(test)]
#[path = "tests/fuzz.rs"]
mod fuzz;
#[cfg(test)]
mod testdisk;
