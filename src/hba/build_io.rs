//! HwStorBuildIo: everything that needs no lock. The SCSI command is decoded, commands the
//! driver answers itself are completed here, and a block request is laid out in its SRB
//! extension (`request.rs`) and passed on to StartIo (`start_io.rs`).

use core::sync::atomic::Ordering;

use storport::Srb;
use storport::context;
use storport::miniport::BuildIoOutcome;
use storport::srb::Completed;
use storport::srb::{Function, Status as SrbStatus};

use crate::scsi::{self, Command, DiskInfo, Sense, SenseKey};
use crate::virtio::RequestBuilder;

use super::completion::check_condition;
use super::request::{self, Extension, Preparation, Prepared};
use super::{Adapter, Found};

/// The INQUIRY operation code (SPC-4 6.6).
const INQUIRY: u8 = 0x12;

/// HwStorBuildIo: everything that needs no lock.
pub(super) fn build_io(
    adapter: &Adapter,
    found: &Found,
    _ctx: &mut context::BuildIo,
    mut srb: Srb,
) -> BuildIoOutcome {
    let Some(start) = adapter.disk.at_start() else {
        return BuildIoOutcome::Completed(srb.complete(SrbStatus::NoDevice));
    };
    // The device vanished: nothing reaches it again.
    if adapter.removed.load(Ordering::Relaxed) {
        return BuildIoOutcome::Completed(srb.complete(SrbStatus::NoDevice));
    }
    let function = srb.function();
    if adapter.broken.load(Ordering::Relaxed)
        && !adapter.resetting()
        && function == Function::ExecuteScsi
    {
        // A reset could not bring the device back; until another one does, fail fast.
        return BuildIoOutcome::Completed(check_condition(
            srb,
            &Sense::new(SenseKey::HardwareError, 0x44, 0x00),
        ));
    }
    // A power SRB that takes the unit out of D0 (the dump instance's before the machine
    // hibernates or powers off, or a unit going to sleep) writes the device's cache back first:
    // it is served as a FLUSH. Into D0, or without a state, there is nothing to do.
    let function = if function == Function::Power && srb.power().is_some_and(|p| p.leaves_d0()) {
        Function::Flush
    } else {
        function
    };
    match function {
        Function::ExecuteScsi => {}
        Function::Flush | Function::Shutdown => {
            let Some(extension) = extension_of(&srb) else {
                return BuildIoOutcome::Completed(srb.complete(SrbStatus::InternalError));
            };
            let preparation = request::prepare_flush(&found.builder, &extension);
            let preparation = record(&extension, preparation);
            return prepared(srb, preparation);
        }
        // Storport's multi-tier reset: the LU (then the device, then the bus) reset completes
        // every request outstanding on its scope. The adapter has one unit, so each resets the
        // device; StartIo holds the SRB until the reset has handed everything back.
        Function::ResetLogicalUnit | Function::ResetDevice | Function::ResetBus => {
            return BuildIoOutcome::StartIo(srb);
        }
        // virtio-blk cannot abort one request: the request ends with its device, or with the
        // reset Storport sends when it times out.
        Function::AbortCommand | Function::Pnp | Function::Power => {
            return BuildIoOutcome::Completed(srb.complete(SrbStatus::Success));
        }
        // Before it builds the crash-dump stack, Storport asks the running instance what its dump
        // instance allows and hands the dump instance the tunables named here.
        Function::DumpPointers => {
            let Some(limits) = adapter.dump_limits else {
                return BuildIoOutcome::Completed(srb.complete(SrbStatus::InvalidRequest));
            };
            let Some(pointers) = srb.dump_pointers() else {
                return BuildIoOutcome::Completed(srb.complete(SrbStatus::InvalidRequest));
            };
            pointers.answer(found.port, Some(limits), &found.tunables.dump_data());
            return BuildIoOutcome::Completed(srb.complete(SrbStatus::Success));
        }
        // The dump data lives in the device extension: nothing to free.
        Function::FreeDumpPointers => {
            return BuildIoOutcome::Completed(srb.complete(SrbStatus::Success));
        }
        _ => return BuildIoOutcome::Completed(srb.complete(SrbStatus::InvalidRequest)),
    }
    match srb.address() {
        Some(address) if address.target != 0 || address.path != 0 => {
            return BuildIoOutcome::Completed(srb.complete(SrbStatus::NoDevice));
        }
        Some(address) if address.lun != 0 => {
            return BuildIoOutcome::Completed(srb.complete(SrbStatus::InvalidLun));
        }
        Some(_) => {}
        None => return BuildIoOutcome::Completed(srb.complete(SrbStatus::InvalidRequest)),
    }

    // The I/O path: READ and WRITE (10/16) in their ordinary form, decoded from the CDB's head
    // by value; everything else, and anything unusual in these, takes the general decoder.
    let (cdb_len, head) = srb.cdb_head();
    if adapter.disk.is_unchanged()
        && let Some(command @ (Command::Read(io) | Command::Write(io))) =
            scsi::decode_read_write(&head, cdb_len, start)
    {
        // A READ or WRITE reports a pending UNIT ATTENTION first (general path).
        if !adapter.disk.unit_attention_pending() {
            return read_write(found, srb, start, io, matches!(command, Command::Write(_)));
        }
    }
    build_io_general(adapter, found, srb, start)
}

/// BuildIo for everything but the ordinary READ and WRITE: out of line, so the I/O path's
/// frame and code stay small.
#[inline(never)]
#[cold]
fn build_io_general(
    adapter: &Adapter,
    found: &Found,
    mut srb: Srb,
    start: &DiskInfo,
) -> BuildIoOutcome {
    let mut cdb = [0u8; 32];
    let cdb_len = srb.cdb().len().min(cdb.len());
    if let (Some(dst), Some(src)) = (cdb.get_mut(..cdb_len), srb.cdb().get(..cdb_len)) {
        dst.copy_from_slice(src);
    }
    let cdb = cdb.get(..cdb_len).unwrap_or(&[]);
    if scsi::reports_unit_attention(cdb) && adapter.disk.take_unit_attention() {
        return BuildIoOutcome::Completed(check_condition(srb, &Sense::CAPACITY_DATA_HAS_CHANGED));
    }
    // The description as it was at start serves until the capacity or the cache mode changes;
    // only then (and for INQUIRY, which needs the serial number from GET_ID to decide whether
    // VPD page 0x80 exists) is a current copy made. The I/O path copies nothing.
    let updated;
    let disk: &DiskInfo = if cdb.first() == Some(&INQUIRY) || !adapter.disk.is_unchanged() {
        let mut current = adapter.disk.current().unwrap_or(*start);
        current.serial = adapter.disk.serial();
        updated = current;
        &updated
    } else {
        start
    };
    let command = match scsi::decode(cdb, disk) {
        Ok(command) => command,
        Err(sense) => return BuildIoOutcome::Completed(check_condition(srb, &sense)),
    };
    match command {
        Command::Good => {
            srb.set_data_transfer_length(0);
            BuildIoOutcome::Completed(srb.complete(SrbStatus::Success))
        }
        Command::DataIn(data) => {
            let written = srb
                .data_buffer()
                .map_or(0, |buffer| data.write(disk, buffer));
            BuildIoOutcome::Completed(respond(srb, written))
        }
        Command::RequestSense { allocation_length } => {
            let pending = adapter
                .disk
                .take_unit_attention()
                .then_some(Sense::CAPACITY_DATA_HAS_CHANGED);
            let written = srb.data_buffer().map_or(0, |buffer| {
                scsi::request_sense(pending.as_ref(), allocation_length, buffer)
            });
            BuildIoOutcome::Completed(respond(srb, written))
        }
        Command::ModeSelect(select) => {
            let change = match srb.data_buffer() {
                Some(data) => {
                    let len = usize::from(select.parameter_list_length).min(data.len());
                    select.parse(data.get(..len).unwrap_or(&[]), disk)
                }
                None => select.parse(&[], disk),
            };
            match change {
                Ok(Some(change)) => {
                    if set_write_cache(adapter, found, change.write_cache_enabled) {
                        BuildIoOutcome::Completed(srb.complete(SrbStatus::Success))
                    } else {
                        BuildIoOutcome::Completed(check_condition(
                            srb,
                            &Sense::INVALID_FIELD_IN_PARAMETER_LIST,
                        ))
                    }
                }
                Ok(None) => BuildIoOutcome::Completed(srb.complete(SrbStatus::Success)),
                Err(sense) => BuildIoOutcome::Completed(check_condition(srb, &sense)),
            }
        }
        Command::Read(io) | Command::Write(io) => {
            read_write(found, srb, disk, io, matches!(command, Command::Write(_)))
        }
        Command::Flush => {
            let Some((extension, builder)) = block_request(found, &srb) else {
                return BuildIoOutcome::Completed(srb.complete(SrbStatus::InternalError));
            };
            let preparation = request::prepare_flush(builder, &extension);
            let preparation = record(&extension, preparation);
            prepared(srb, preparation)
        }
        Command::Unmap {
            parameter_list_length,
        } => {
            let Some((extension, builder)) = block_request(found, &srb) else {
                return BuildIoOutcome::Completed(srb.complete(SrbStatus::InternalError));
            };
            let preparation = {
                let data = srb.data().unwrap_or(&[]);
                let len = usize::from(parameter_list_length).min(data.len());
                match scsi::parse_unmap(data.get(..len).unwrap_or(&[]), disk) {
                    Ok(list) => request::prepare_ranges(
                        builder,
                        &extension,
                        zeroes_carrier(disk),
                        list.segments(),
                    ),
                    Err(sense) => Preparation::Check(sense),
                }
            };
            let preparation = record(&extension, preparation);
            prepared(srb, preparation)
        }
        Command::WriteSame(same) => {
            let Some((extension, builder)) = block_request(found, &srb) else {
                return BuildIoOutcome::Completed(srb.complete(SrbStatus::InternalError));
            };
            let preparation = {
                let need = usize::try_from(same.data_length(disk)).unwrap_or(usize::MAX);
                let data = srb.data().unwrap_or(&[]);
                if data.len() < need {
                    Preparation::Check(Sense::INVALID_FIELD_IN_CDB)
                } else {
                    match same.plan(data.get(..need).unwrap_or(&[]), disk) {
                        Ok(scsi::WriteSamePlan::Discard(segment)) => request::prepare_ranges(
                            builder,
                            &extension,
                            None,
                            core::iter::once(segment),
                        ),
                        Ok(scsi::WriteSamePlan::WriteZeroes { segment, unmap }) => {
                            request::prepare_ranges(
                                builder,
                                &extension,
                                Some(unmap),
                                core::iter::once(segment),
                            )
                        }
                        Err(sense) => Preparation::Check(sense),
                    }
                }
            };
            let preparation = record(&extension, preparation);
            prepared(srb, preparation)
        }
    }
}

/// Lays out a READ or WRITE in the SRB extension for StartIo.
#[inline]
fn read_write(
    found: &Found,
    mut srb: Srb,
    disk: &DiskInfo,
    io: scsi::Io,
    write: bool,
) -> BuildIoOutcome {
    let Some((extension, builder)) = block_request(found, &srb) else {
        return BuildIoOutcome::Completed(srb.complete(SrbStatus::InternalError));
    };
    let data_len = srb.data_transfer_length();
    let preparation = match srb.scatter_gather() {
        Some(segments) => request::prepare_io(
            builder,
            &extension,
            disk,
            &io,
            write,
            data_len,
            segments.map(|s| (s.address, s.length)),
        ),
        None => Preparation::Check(Sense::INVALID_FIELD_IN_CDB),
    };
    let preparation = record(&extension, preparation);
    // A buffer larger than the transfer: the SRB says how much moves (rare: the length is
    // worked out again only then).
    if let Preparation::Ready(Prepared { underrun: true, .. }) = preparation
        && let Some(bytes) = io.bytes(disk).and_then(|bytes| u32::try_from(bytes).ok())
    {
        srb.set_data_transfer_length(bytes);
    }
    prepared(srb, preparation)
}

/// How UNMAP deallocates on this disk: WRITE_ZEROES with unmap (`Some(true)`) or DISCARD.
fn zeroes_carrier(disk: &DiskInfo) -> Option<bool> {
    match disk.deallocation() {
        Some(scsi::Deallocation::WriteZeroes) => Some(true),
        _ => None,
    }
}

/// Records a prepared request in its SRB extension, for StartIo.
fn record(extension: &Extension<'_>, preparation: Preparation) -> Preparation {
    if let Preparation::Ready(prepared) = &preparation {
        extension.record(prepared);
    }
    preparation
}

/// Passes a prepared (and recorded) request on to StartIo, or completes one that needs no
/// device work.
fn prepared(srb: Srb, preparation: Preparation) -> BuildIoOutcome {
    match preparation {
        Preparation::Ready(_) => BuildIoOutcome::StartIo(srb),
        Preparation::Good => BuildIoOutcome::Completed(srb.complete(SrbStatus::Success)),
        Preparation::Check(sense) => BuildIoOutcome::Completed(check_condition(srb, &sense)),
    }
}

/// The request area in `srb`'s SRB extension.
pub(super) fn extension_of(srb: &Srb) -> Option<Extension<'_>> {
    Extension::new(srb.extension()?)
}

/// What laying out a block request needs: the request's SRB extension and the builder.
fn block_request<'a, 's>(
    found: &'a Found,
    srb: &'s Srb,
) -> Option<(Extension<'s>, &'a RequestBuilder)> {
    Some((extension_of(srb)?, &found.builder))
}

/// Switches the device's write cache (MODE SELECT, caching page WCE).
fn set_write_cache(adapter: &Adapter, found: &Found, enabled: bool) -> bool {
    let mode = if enabled {
        crate::virtio::WriteCache::WriteBack
    } else {
        crate::virtio::WriteCache::WriteThrough
    };
    let done = found.config.set_write_cache(&found.registers, mode);
    if done {
        adapter.disk.set_write_cache(enabled);
    }
    done
}

/// Completes a command the driver answered with `written` bytes of data.
fn respond(mut srb: Srb, written: usize) -> Completed {
    let requested = srb.data_transfer_length();
    let written = u32::try_from(written).unwrap_or(u32::MAX).min(requested);
    srb.set_data_transfer_length(written);
    // An underrun is reported as DATA_OVERRUN with the length that moved (Storport's convention).
    let status = if written < requested {
        SrbStatus::DataOverrun
    } else {
        SrbStatus::Success
    };
    srb.complete(status)
}
