//! storport-ramdisk: a RAM disk miniport built on the `storport` layer alone.
//!
//! The proof that `crates/storport` serves more than vioblk, in the spirit of the Linux kernel's
//! rnull under `block::mq`: no hardware, no unsafe code, no heap, no panics. One adapter, one
//! target, LUN 0: a 1 MiB disk of 512-byte blocks whose bytes live in the device extension.
//!
//! Where the work happens and under which lock:
//!
//! - **HwStorBuildIo** (no lock, concurrently on several CPUs) routes every request: it answers
//!   what needs no disk bytes (INQUIRY, READ CAPACITY, MODE SENSE, REPORT LUNS, TEST UNIT READY,
//!   SYNCHRONIZE CACHE, other SRB functions, wrong addresses, bad CDBs, out-of-range blocks) and
//!   passes READ and WRITE on.
//! - **HwStorStartIo** copies between the request's buffer and the disk. The disk is a
//!   [`StartIoShared`] cell: its bytes are reachable only holding the adapter's StartIo lock.
//!   By default the adapter asks for no concurrent channels, so Storport holds that lock around
//!   StartIo and the StartIo token proves it ([`StartIo::Serialized`]). With `channels=N` in the
//!   argument string it asks for N concurrent channels in HwStorInitialize; when Storport grants
//!   them it no longer holds the lock, and StartIo takes it through the cell
//!   ([`StartIo::Concurrent`]). Requests are completed after the copy.
//!
//! MapBuffers is STOR_MAP_ALL_BUFFERS_INCLUDING_READ_WRITE, so every data buffer, READ and WRITE
//! included, has a system address ([`Srb::data_buffer`]).
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

pub mod scsi;

// The unit tests link the layer's StorPort* calls; the user-mode Storport defines them.
#[cfg(test)]
use storport_sim as _;

use core::ffi::c_void;

use storport::context::{self, StartIo};
use storport::perf::{self, PerfRequest};
use storport::srb::{Address, Function, Status};
use storport::sync::StartIoShared;
use storport::{
    AdapterControl, AdapterControlStatus, BuildIoOutcome, FindAdapterStatus, MapBuffers, Miniport,
    Port, PortConfiguration, Srb,
};

use scsi::{Blocks, Command, Sense};

/// The disk's size in bytes.
pub const DISK_BYTES: usize = 1 << 20;
/// The disk's size in blocks.
pub const BLOCK_COUNT: u64 = (DISK_BYTES / scsi::BLOCK_SIZE) as u64;
/// The largest transfer Storport may send (MaximumTransferLength).
pub const MAX_TRANSFER: u32 = 128 * 1024;

/// The RAM disk adapter: what lives in its device extension.
pub struct RamDisk {
    /// The disk's bytes, guarded by the StartIo lock.
    disk: StartIoShared<[u8; DISK_BYTES]>,
    /// The adapter, once found.
    port: Option<Port>,
    /// Concurrent StartIo channels to ask for (`channels=N`; 1: none).
    channels: u32,
}

/// DriverEntry's work for the RAM disk: registers [`RamDisk`] with Storport.
///
/// It is not exported as `DriverEntry` (that needs `#[unsafe(no_mangle)]`, and vioblk defines the
/// symbol in the same test binaries): a Windows image of this example would export it with one
/// line calling this function.
pub extern "C" fn driver_entry(driver_object: *mut c_void, registry_path: *mut c_void) -> u32 {
    storport::miniport::driver_entry::<RamDisk>(driver_object, registry_path)
}

/// How a request ends.
enum Outcome {
    /// The command moved this many data bytes (READ/WRITE, or a reply).
    Moved(usize),
    /// The request is refused with CHECK CONDITION and this sense data.
    Refused(Sense),
    /// The request ends with this SRB status and no data.
    Status(Status),
}

/// What BuildIo decided for a request.
enum Route {
    /// A READ or WRITE: StartIo copies it under the StartIo lock.
    Disk,
    /// Answered without the disk.
    Now(Outcome),
}

impl Miniport for RamDisk {
    type Duplex = storport::context::FullDuplex;
    const INITIAL: Self = RamDisk {
        disk: StartIoShared::new([0; DISK_BYTES]),
        port: None,
        channels: 1,
    };
    // Nothing per request: StartIo decodes the CDB again rather than carrying BuildIo's result.
    const SRB_EXTENSION_SIZE: u32 = 0;
    const ACCESS_RANGES: u32 = 0;
    const MAP_BUFFERS: MapBuffers = MapBuffers::AllIncludingReadWrite;

    fn find_adapter(
        &mut self,
        _ctx: &mut context::FindAdapter,
        port: Port,
        config: &mut PortConfiguration<'_>,
    ) -> FindAdapterStatus {
        // No hardware to look for: whatever Storport offers is the RAM disk.
        self.disk.bind(port);
        self.port = Some(port);
        self.channels = channels(config.argument_string());
        // One bus, one target, one LU, SRB_EX with BTL8 addresses, full duplex. The RAM disk does
        // no DMA, but the description costs nothing.
        config.set_bus_master_adapter(0, 1);
        // Buffers are copied through their system addresses, so physical breaks do not matter;
        // allow one per page of the largest (unaligned) transfer.
        config.set_transfer_limits(MAX_TRANSFER, MAX_TRANSFER / 4096 + 1);
        FindAdapterStatus::Found
    }

    fn initialize(&self, ctx: &mut context::Initialize) -> bool {
        if self.channels > 1
            && let Some(port) = self.port
        {
            // Not granted (an older Storport): StartIo stays serialised, which is just as correct.
            let _ = perf::initialize(
                ctx,
                port,
                PerfRequest {
                    concurrent_channels: self.channels,
                    ..PerfRequest::default()
                },
            );
        }
        true
    }

    fn build_io(&self, _ctx: &mut context::BuildIo, mut srb: Srb) -> BuildIoOutcome {
        match route(&mut srb) {
            Route::Disk => BuildIoOutcome::StartIo(srb),
            Route::Now(outcome) => BuildIoOutcome::Completed(finish(srb, outcome)),
        }
    }

    fn start_io(&self, ctx: StartIo<'_>, mut srb: Srb) {
        let outcome = match scsi::decode(srb.cdb(), BLOCK_COUNT) {
            Ok(Command::Read(blocks)) => self.transfer(ctx, &mut srb, Direction::Read, blocks),
            Ok(Command::Write(blocks)) => self.transfer(ctx, &mut srb, Direction::Write, blocks),
            // BuildIo passes on nothing else.
            _ => Outcome::Status(Status::InternalError),
        };
        let _ = finish(srb, outcome);
    }

    fn interrupt(&self, _ctx: &mut context::Interrupt) -> bool {
        // No hardware, no interrupt.
        false
    }

    fn reset_bus(&self, _ctx: &mut context::ResetBus, _path_id: u32) -> bool {
        // Every request completes inside BuildIo or StartIo: nothing is outstanding to reset.
        true
    }

    fn adapter_control(
        &self,
        _ctx: &mut context::AdapterControl,
        control: AdapterControl,
    ) -> AdapterControlStatus {
        match control {
            // The disk keeps its bytes across a stop and a restart: they are in the extension.
            AdapterControl::Stop | AdapterControl::Restart => AdapterControlStatus::Success,
            AdapterControl::Other(_) => AdapterControlStatus::Unsuccessful,
        }
    }
}

/// Which way a transfer goes.
#[derive(Clone, Copy)]
enum Direction {
    /// Disk to buffer.
    Read,
    /// Buffer to disk.
    Write,
}

impl RamDisk {
    /// Copies a READ or WRITE between the request's buffer and the disk, holding the StartIo lock.
    fn transfer(
        &self,
        ctx: StartIo<'_>,
        srb: &mut Srb,
        direction: Direction,
        blocks: Blocks,
    ) -> Outcome {
        let (Some(range), Some(length)) = (blocks.byte_range(DISK_BYTES), blocks.byte_count())
        else {
            return Outcome::Refused(Sense::LBA_OUT_OF_RANGE);
        };
        if length == 0 {
            return Outcome::Moved(0);
        }
        // The buffer must hold the whole transfer (SBC-3: TRANSFER LENGTH blocks).
        let Some(buffer) = srb.data_buffer().and_then(|b| b.get_mut(..length)) else {
            return Outcome::Refused(Sense::INVALID_FIELD_IN_CDB);
        };
        let copy = |disk: &mut [u8; DISK_BYTES]| match (disk.get_mut(range), direction) {
            (Some(bytes), Direction::Read) => {
                buffer.copy_from_slice(bytes);
                Outcome::Moved(length)
            }
            (Some(bytes), Direction::Write) => {
                bytes.copy_from_slice(buffer);
                Outcome::Moved(length)
            }
            (None, _) => Outcome::Refused(Sense::LBA_OUT_OF_RANGE),
        };
        match ctx {
            // One channel: Storport holds the StartIo lock around this callback.
            StartIo::Serialized(token) => copy(self.disk.get(token)),
            // Concurrent channels: take it (StorPortAcquireSpinLockEx StartIoLock).
            // A refused lock was reported by the layer; the request fails without touching the disk.
            StartIo::Concurrent(token) => self
                .disk
                .with(token, |disk, _held| copy(disk))
                .unwrap_or(Outcome::Status(Status::Error)),
        }
    }
}

/// The N of `channels=N` in the argument string: 1 when absent, not a number, or not in 1..=64.
fn channels(arguments: &[u8]) -> u32 {
    const KEY: &[u8] = b"channels=";
    let Some(at) = arguments.windows(KEY.len()).position(|w| w == KEY) else {
        return 1;
    };
    arguments
        .get(at + KEY.len()..)
        .unwrap_or_default()
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .try_fold(0u32, |n, &digit| {
            n.checked_mul(10)?.checked_add(u32::from(digit - b'0'))
        })
        .filter(|n| (1..=64).contains(n))
        .unwrap_or(1)
}

/// Routes a request in BuildIo: answers everything but READ and WRITE.
fn route(srb: &mut Srb) -> Route {
    match srb.function() {
        Function::ExecuteScsi => {}
        // Nothing is cached and nothing is ever outstanding: flushes, resets, power and PnP
        // requests have nothing to do.
        Function::Flush
        | Function::Shutdown
        | Function::ResetBus
        | Function::ResetDevice
        | Function::ResetLogicalUnit
        | Function::Power
        | Function::Pnp => return Route::Now(Outcome::Status(Status::Success)),
        _ => return Route::Now(Outcome::Status(Status::InvalidRequest)),
    }
    match srb.address() {
        Some(Address {
            path: 0,
            target: 0,
            lun: 0,
        }) => {}
        Some(Address {
            path: 0, target: 0, ..
        }) => return Route::Now(Outcome::Status(Status::InvalidLun)),
        _ => return Route::Now(Outcome::Status(Status::NoDevice)),
    }
    match scsi::decode(srb.cdb(), BLOCK_COUNT) {
        Ok(Command::Read(_) | Command::Write(_)) => Route::Disk,
        Ok(command) => {
            let written = srb
                .data_buffer()
                .map_or(0, |buffer| scsi::reply(command, BLOCK_COUNT, buffer));
            Route::Now(Outcome::Moved(written))
        }
        Err(sense) => Route::Now(Outcome::Refused(sense)),
    }
}

/// Completes a request.
fn finish(mut srb: Srb, outcome: Outcome) -> storport::srb::Completed {
    match outcome {
        Outcome::Moved(moved) => {
            let requested = srb.data_transfer_length();
            let moved = u32::try_from(moved).unwrap_or(u32::MAX).min(requested);
            srb.set_data_transfer_length(moved);
            // An underrun is DATA_OVERRUN with the length that moved (Storport's convention).
            if moved < requested {
                srb.complete(Status::DataOverrun)
            } else {
                srb.complete(Status::Success)
            }
        }
        Outcome::Refused(sense) => {
            srb.set_data_transfer_length(0);
            srb.complete_check_condition(&sense.bytes())
        }
        Outcome::Status(status) => {
            srb.set_data_transfer_length(0);
            srb.complete(status)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::channels;

    #[test]
    fn channels_come_from_the_argument_string() {
        assert_eq!(channels(b""), 1);
        assert_eq!(channels(b"channels=4"), 4);
        assert_eq!(channels(b"dump=1 channels=16"), 16);
        assert_eq!(channels(b"channels="), 1);
        assert_eq!(channels(b"channels=0"), 1);
        assert_eq!(channels(b"channels=65"), 1);
        assert_eq!(channels(b"channels=99999999999999"), 1);
    }
}
