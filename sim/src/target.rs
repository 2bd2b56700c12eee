//! The SCSI disk as the class-driver model sees it: [`ScsiTarget`], [`ScsiRequest`] and
//! [`ScsiCompletion`].
//!
//! Windows' disk class driver (disk.sys over classpnp) hands Storport one SRB per command and
//! gets it back completed with an SRB status, a SCSI status, sense data and the data-in bytes.
//! [`ScsiRequest`] and [`ScsiCompletion`] are that exchange with the C structure stripped away:
//! the `SrbFunction` (`SRB_FUNCTION_*`), the CDB, the data buffer split by direction, the
//! `SrbFlags` direction bits, `TimeOutValue`, and the target and LUN of the address.
//!
//! Two implementations exist: the storport-sim adapter running the real vioblk driver
//! (`crate::stack::Stack`), and the in-memory double `crate::ram::RamScsiTarget`. This module
//! is a leaf: it names no other module of this crate.

use std::sync::mpsc;

use storport::ffi::{
    SCSISTAT_GOOD, SRB_FLAGS_DATA_IN, SRB_FLAGS_DATA_OUT, SRB_FUNCTION_EXECUTE_SCSI, SRB_STATUS,
    SRB_STATUS_AUTOSENSE_VALID, SRB_STATUS_INTERNAL_ERROR, SRB_STATUS_SUCCESS,
};

/// One SRB as disk.sys would send it (the fields of `SCSI_REQUEST_BLOCK` / `STORAGE_REQUEST_BLOCK`
/// that matter to a disk).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScsiRequest {
    /// `SRB_FUNCTION_*` (as a ULONG, as `SrbFunction` is in an SRB_EX).
    pub function: u32,
    /// The CDB (6, 10, 12 or 16 bytes for EXECUTE_SCSI).
    pub cdb: Vec<u8>,
    /// The data-out buffer (empty unless `flags` has `SRB_FLAGS_DATA_OUT`).
    pub data_out: Vec<u8>,
    /// The size of the data-in buffer (0 unless `flags` has `SRB_FLAGS_DATA_IN`).
    pub data_in_len: u32,
    /// `SRB_FLAGS_*`: the direction bits at least.
    pub flags: u32,
    /// `TimeOutValue` in seconds.
    pub timeout_s: u32,
    /// Target ID of the address (path 0).
    pub target: u8,
    /// LUN of the address.
    pub lun: u8,
}

/// The default timeout disk.sys gives an I/O, in seconds (its `TimeOutValue` default).
pub const DEFAULT_TIMEOUT_S: u32 = 10;

impl ScsiRequest {
    /// An EXECUTE_SCSI SRB with no data transfer.
    pub fn no_data(cdb: impl Into<Vec<u8>>) -> Self {
        Self {
            function: u32::from(SRB_FUNCTION_EXECUTE_SCSI),
            cdb: cdb.into(),
            timeout_s: DEFAULT_TIMEOUT_S,
            ..Self::default()
        }
    }

    /// An EXECUTE_SCSI SRB that reads up to `len` bytes from the device.
    pub fn data_in(cdb: impl Into<Vec<u8>>, len: u32) -> Self {
        Self {
            data_in_len: len,
            flags: SRB_FLAGS_DATA_IN,
            ..Self::no_data(cdb)
        }
    }

    /// An EXECUTE_SCSI SRB that sends `data` to the device.
    pub fn data_out(cdb: impl Into<Vec<u8>>, data: Vec<u8>) -> Self {
        Self {
            data_out: data,
            flags: SRB_FLAGS_DATA_OUT,
            ..Self::no_data(cdb)
        }
    }

    /// A non-SCSI SRB (`SRB_FUNCTION_FLUSH`, `RESET_LOGICAL_UNIT`, ...) with no CDB.
    pub fn function(function: u8) -> Self {
        Self {
            function: u32::from(function),
            timeout_s: DEFAULT_TIMEOUT_S,
            ..Self::default()
        }
    }
}

/// A completed SRB.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScsiCompletion {
    /// `SrbStatus`, including the `SRB_STATUS_AUTOSENSE_VALID` and `QUEUE_FROZEN` bits.
    pub srb_status: u8,
    /// `ScsiStatus` (`SCSISTAT_*`).
    pub scsi_status: u8,
    /// The autosense data (valid when `srb_status` has `SRB_STATUS_AUTOSENSE_VALID`).
    pub sense: Vec<u8>,
    /// The data-in bytes the device returned (`data_transfer_length` of them).
    pub data_in: Vec<u8>,
    /// `DataTransferLength` on completion: the bytes actually moved.
    pub data_transfer_length: u32,
}

impl ScsiCompletion {
    /// A completion that never reached a device (`status` is an `SRB_STATUS_*`).
    pub fn port_error(status: u8) -> Self {
        Self {
            srb_status: status,
            ..Self::default()
        }
    }

    /// The SRB status without the `QUEUE_FROZEN` and `AUTOSENSE_VALID` bits (`SRB_STATUS()`).
    pub fn status(&self) -> u8 {
        SRB_STATUS(self.srb_status)
    }

    /// Whether the SRB succeeded with GOOD status.
    pub fn is_success(&self) -> bool {
        self.status() == SRB_STATUS_SUCCESS && self.scsi_status == SCSISTAT_GOOD
    }

    /// The sense data, when the SRB says it is valid.
    pub fn valid_sense(&self) -> Option<&[u8]> {
        (self.srb_status & SRB_STATUS_AUTOSENSE_VALID != 0 && !self.sense.is_empty())
            .then_some(self.sense.as_slice())
    }
}

/// The callback [`ScsiTarget::submit`] completes a request through.
pub type Done = Box<dyn FnOnce(ScsiCompletion) + Send>;

/// A SCSI disk as the class driver sees it: send an SRB, get its completion.
pub trait ScsiTarget: Send + Sync {
    /// Sends `request` and waits for its completion.
    ///
    /// The default submits and waits on a channel; a target that can do better overrides it.
    fn execute(&self, request: ScsiRequest) -> ScsiCompletion {
        let (tx, rx) = mpsc::channel();
        self.submit(
            request,
            Box::new(move |completion| {
                // The receiver only goes away if the caller stopped waiting, which it does not.
                let _ = tx.send(completion);
            }),
        );
        rx.recv()
            .unwrap_or_else(|_| ScsiCompletion::port_error(SRB_STATUS_INTERNAL_ERROR))
    }

    /// Sends `request` and returns at once; `done` runs on some other thread (or this one) with
    /// the completion. Every submitted request is completed exactly once.
    fn submit(&self, request: ScsiRequest, done: Done);
}
