//! The I/O path: BuildIo, StartIo, interrupts, DPCs and completion.

use core::sync::atomic::Ordering;

use storport::Srb;
use storport::context::{self, StartIo};
use storport::dpc::MayIssueDpc;
use storport::miniport::{BuildIoOutcome, MessageContext};
use storport::perf;
use storport::srb::Completed;
use storport::srb::{Function, Status as SrbStatus};

use crate::scsi::{self, BlockError, Command, DiskInfo, Sense, SenseKey};
use crate::virtio::{RequestBuilder, Status};

use super::queue::{Batch, Drained, InFlight, SubmitError};
use super::request::{self, Extension, Op, Preparation, Prepared};
use super::{Adapter, Mode};

use super::events::{CAPACITY_CHANGED, CAPACITY_REFUSED as LOG_CAPACITY_REFUSED, Cause};

/// The INQUIRY operation code (SPC-4 6.6).
const INQUIRY: u8 = 0x12;

/// HwStorBuildIo: everything that needs no lock.
pub(super) fn build_io(
    adapter: &Adapter,
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
            let Some(builder) = adapter.builder.as_ref() else {
                return BuildIoOutcome::Completed(srb.complete(SrbStatus::NoDevice));
            };
            let preparation = request::prepare_flush(builder, &extension);
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
                    if set_write_cache(adapter, change.write_cache_enabled) {
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
            let write = matches!(command, Command::Write(_));
            let Some((extension, builder)) = block_request(adapter, &srb) else {
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
            prepared(srb, preparation)
        }
        Command::Flush => {
            let Some((extension, builder)) = block_request(adapter, &srb) else {
                return BuildIoOutcome::Completed(srb.complete(SrbStatus::InternalError));
            };
            let preparation = request::prepare_flush(builder, &extension);
            let preparation = record(&extension, preparation);
            prepared(srb, preparation)
        }
        Command::Unmap {
            parameter_list_length,
        } => {
            let Some((extension, builder)) = block_request(adapter, &srb) else {
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
            let Some((extension, builder)) = block_request(adapter, &srb) else {
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

fn extension_of(srb: &Srb) -> Option<Extension<'_>> {
    Extension::new(srb.extension()?)
}

/// What laying out a block request needs: the request's SRB extension and the builder.
fn block_request<'a, 's>(
    adapter: &'a Adapter,
    srb: &'s Srb,
) -> Option<(Extension<'s>, &'a RequestBuilder)> {
    Some((extension_of(srb)?, adapter.builder.as_ref()?))
}

/// Switches the device's write cache (MODE SELECT, caching page WCE).
fn set_write_cache(adapter: &Adapter, enabled: bool) -> bool {
    let (Some(config), Some(transport)) = (adapter.config.as_ref(), adapter.transport.as_ref())
    else {
        return false;
    };
    let mode = if enabled {
        crate::virtio::WriteCache::WriteBack
    } else {
        crate::virtio::WriteCache::WriteThrough
    };
    let done = config.set_write_cache(transport, mode);
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

/// Completes with CHECK CONDITION and the sense data (autosense).
pub(super) fn check_condition(mut srb: Srb, sense: &Sense) -> Completed {
    let mut bytes = [0u8; 18];
    let len = sense.write(&mut bytes);
    srb.set_data_transfer_length(0);
    srb.complete_check_condition(bytes.get(..len).unwrap_or(&[]))
}

/// Whether `srb` is one of the reset SRBs StartIo holds until the reset completes.
fn is_reset_request(srb: &Srb) -> bool {
    matches!(
        srb.function(),
        Function::ResetLogicalUnit | Function::ResetDevice | Function::ResetBus
    )
}

/// Runs `$body` with `$token` bound to the StartIo context's token, whichever kind Storport
/// gave (both kinds may take the queue locks; only their types differ): the one place the
/// `Concurrent`/`Serialized` match is written.
macro_rules! with_start_io_token {
    ($ctx:expr, |$token:ident| $body:expr) => {
        match $ctx {
            StartIo::Concurrent($token) => $body,
            StartIo::Serialized($token) => $body,
        }
    };
}

/// What putting a request on a ring came to.
enum Submitted {
    /// On the ring; ring the doorbell (after the lock is released).
    Notify(crate::virtio::QueueNotifier),
    /// On the ring; the device asked not to be notified.
    Quiet,
    /// The ring is full: Storport retries it.
    Full(InFlight),
    /// The ring broke between the reset check and the lock.
    Broken(InFlight),
    /// A reset began between the first reset check and the lock.
    Resetting(InFlight),
    /// The queue's lock closure did not run (its DPC is not bound yet, or Storport refused the
    /// lock, or the adapter is stopped): the request is still in `pending`.
    NotRun,
}

impl Submitted {
    /// The outcome of `Queue::submit` run under a queue lock (`None`: the closure did not run).
    fn from_lock<E>(
        outcome: Result<Option<Result<Option<crate::virtio::QueueNotifier>, SubmitError>>, E>,
    ) -> Submitted {
        match outcome {
            Ok(Some(Ok(Some(notifier)))) => Submitted::Notify(notifier),
            Ok(Some(Ok(None))) => Submitted::Quiet,
            Ok(Some(Err(SubmitError::Full(request)))) => Submitted::Full(request),
            Ok(Some(Err(SubmitError::Broken(request)))) => Submitted::Broken(request),
            Ok(Some(Err(SubmitError::Resetting(request)))) => Submitted::Resetting(request),
            Ok(None) | Err(_) => Submitted::NotRun,
        }
    }
}

/// HwStorStartIo: put the prepared request on a ring.
pub(super) fn start_io(adapter: &Adapter, ctx: StartIo<'_>, srb: Srb) {
    if adapter.removed.load(Ordering::Acquire) {
        let _ = srb.complete(SrbStatus::NoDevice);
        return;
    }
    if is_reset_request(&srb) {
        with_start_io_token!(ctx, |token| super::reset::hold_reset_request(
            adapter, token, srb
        ));
        return;
    }
    let Some(extension) = extension_of(&srb) else {
        let _ = srb.complete(SrbStatus::InternalError);
        return;
    };
    let Some(Prepared { built, op }) = extension.prepared() else {
        let _ = srb.complete(SrbStatus::InternalError);
        return;
    };
    if adapter.resetting() {
        let _ = srb.complete(SrbStatus::Busy);
        return;
    }
    let request = InFlight {
        srb,
        op,
        max_written: built.max_written,
    };
    let mode = adapter.mode();
    let queue = if mode == Mode::MultiQueue {
        queue_for(adapter, &request.srb)
    } else {
        0
    };
    let mut pending = Some(request);
    let epoch = adapter.epoch.load(Ordering::Acquire);
    let mut submit = |q: &mut super::queue::Queue| {
        // Looked at again under the queue's lock: the reset DPC sets the stage before it takes
        // each queue's lock to hand its requests back, so a request that passed the check
        // above while that pass ran would otherwise land on a ring already handed back, and
        // be outstanding when the reset SRB completes (and on a ring the restart re-zeroes).
        if adapter.resetting() {
            return pending.take().map(|r| Err(SubmitError::Resetting(r)));
        }
        q.sync_epoch(epoch);
        pending.take().map(|r| q.submit(r, &built))
    };
    let outcome = match mode {
        Mode::MultiQueue => match adapter.queues.get(queue) {
            Some(cell) => Submitted::from_lock(
                with_start_io_token!(ctx, |token| cell.with(token, |q, _| submit(q)))
            ),
            None => Submitted::NotRun,
        },
        Mode::SingleInterrupt | Mode::Dump => {
            Submitted::from_lock(with_start_io_token!(ctx, |token| adapter
                .single
                .synchronize(token, &mut submit)))
        }
        Mode::Stopped => Submitted::NotRun,
    };
    match outcome {
        // Rung after the lock is released (DESIGN.md: notification outside the lock).
        Submitted::Notify(notifier) => notifier.notify(),
        Submitted::Quiet => {}
        Submitted::Full(request) => busy(adapter, request),
        // As for a request that arrives during a reset: Storport sends it again.
        Submitted::Resetting(request) => {
            let _ = request.srb.complete(SrbStatus::Busy);
        }
        // Whoever found the ring broken (a drain) has started the reset; Storport sends the
        // request again once the device is back.
        #[cfg(not(feature = "planted-race"))]
        Submitted::Broken(request) => {
            let _ = request.srb.complete(SrbStatus::Busy);
        }
        // The planted bug (test builds only, see Cargo.toml): the code before fb79d8a.
        #[cfg(feature = "planted-race")]
        Submitted::Broken(request) => {
            let _ = check_condition(
                request.srb,
                &Sense::new(SenseKey::HardwareError, 0x44, 0x00),
            );
        }
        Submitted::NotRun => fail_submit(adapter, pending),
    }
}

fn fail_submit(adapter: &Adapter, pending: Option<InFlight>) {
    if let Some(request) = pending {
        busy(adapter, request);
    }
}

/// The ring is full: Storport holds the LU's requests until one completes, then retries this
/// one (with a fresh SRB extension, through BuildIo again).
fn busy(adapter: &Adapter, request: InFlight) {
    if let (Some(port), Some(address)) = (adapter.port, request.srb.address()) {
        port.device_busy(address, 1);
    }
    let _ = request.srb.complete(SrbStatus::Busy);
}

/// The queue Storport's message steering chose for `srb` (StartIo runs on the CPU whose MSI-X
/// message is `message`; queue `q` is served by message `q + 1`).
#[inline]
fn queue_for(adapter: &Adapter, srb: &Srb) -> usize {
    let active = usize::from(adapter.active_queues.load(Ordering::Relaxed)).max(1);
    match perf::start_io_parameters(srb) {
        // Storport steers by the messages the driver asked for, so the queue is in range and
        // no division is needed; the remainder only guards a message beyond them.
        Some((message, _)) if message >= 1 => {
            let queue = message as usize - 1;
            if queue < active {
                queue
            } else {
                queue % active
            }
        }
        _ => 0,
    }
}

/// HwStorInterrupt: line-based interrupts, and the dump stack's polling.
pub(super) fn interrupt(adapter: &Adapter, ctx: &mut context::Interrupt) -> bool {
    let mode = adapter.mode();
    if mode == Mode::Dump {
        super::reset::write_pending_dump_reset(adapter, ctx);
    }
    if mode != Mode::Dump {
        let Some(transport) = adapter.transport.as_ref() else {
            return false;
        };
        // Reading the ISR status acknowledges the (level-triggered) interrupt.
        let isr = transport.read_isr();
        if isr.0 == 0xFF && super::reset::vanished(adapter) {
            // All ones: the device is gone (surprise removal). Not our interrupt; fail what is
            // outstanding and touch the device no more.
            super::reset::device_removed(adapter, &*ctx);
            return false;
        }
        if !isr.queue() && !isr.config_changed() {
            return false;
        }
        if isr.config_changed() {
            config_changed(adapter);
            reset_if_device_needs_it(adapter, &*ctx);
        }
        if !isr.queue() {
            return true;
        }
    }
    // Single queue behind the interrupt lock, which this routine holds: drain and complete here,
    // at most MAX_BATCHES batches; the rest is the DPC's.
    for round in 1..=MAX_BATCHES {
        let mut batch = Batch::new();
        let drained = adapter.single.get(ctx).drain(&mut batch);
        if batch.take_internal() {
            super::setup::take_late_identity(adapter);
        }
        let resubmit = finish_batch(adapter, &mut batch);
        if let Some(request) = resubmit {
            let notifier = adapter
                .single
                .get(ctx)
                .resubmit_flush(request, adapter.builder.as_ref());
            if let Some(notifier) = notifier {
                notifier.notify();
            }
        }
        match drained {
            Drained::More if round < MAX_BATCHES => continue,
            Drained::More => {
                // Enough for one interrupt: the single queue's DPC drains the rest. Without one
                // (dump stack), the next poll does.
                if mode != Mode::Dump {
                    adapter.single_dpc.issue(&*ctx, 0, 0);
                }
                break;
            }
            Drained::Idle => break,
            Drained::Broken(_) => {
                // The reset DPC resets the device, hands its requests back once it can no longer
                // write into them, and restarts it, as in the multi-queue mode (else they would
                // wait for Storport's timeout, and the disk for Storport's bus reset). A dump
                // stack has no DPC: its polled ISR does it.
                if mode == Mode::Dump {
                    super::reset::dump_reset(adapter, ctx);
                } else {
                    super::reset::begin_reset(adapter, &*ctx, Cause::BrokenRing(0));
                }
                break;
            }
        }
    }
    true
}

/// Batches one DPC (or ISR) run completes at most before it leaves the rest to a new run: the
/// time spent at DISPATCH (or DIRQL) per run is bounded, whatever the device does.
pub(super) const MAX_BATCHES: usize = 2;

/// HwMSInterruptRoutine.
pub(super) fn message_interrupt(
    adapter: &Adapter,
    ctx: MessageContext<'_>,
    message_id: u32,
) -> bool {
    let MessageContext::PerMessage(token) = ctx else {
        return false;
    };
    match adapter.mode() {
        Mode::MultiQueue => {
            if message_id == 0 {
                config_changed(adapter);
                reset_if_device_needs_it(adapter, &*token);
                return true;
            }
            let queue = message_id as usize - 1;
            match adapter.queues.get(queue) {
                Some(cell) => {
                    cell.dpc().issue(token, queue, 0);
                    true
                }
                None => false,
            }
        }
        Mode::SingleInterrupt => {
            // One message for configuration and the queue: the DPC tells them apart.
            if adapter
                .transport
                .as_ref()
                .is_some_and(|t| t.read_isr().config_changed())
            {
                config_changed(adapter);
                reset_if_device_needs_it(adapter, &*token);
            }
            adapter.single_dpc.issue(token, 0, 0);
            true
        }
        Mode::Dump | Mode::Stopped => false,
    }
}

/// HwStorDpcRoutine of a queue (or of the single queue).
pub(super) fn queue_dpc(adapter: &Adapter, ctx: &mut context::Dpc, queue: usize) {
    for round in 1..=MAX_BATCHES {
        let mut batch = Batch::new();
        let epoch = adapter.epoch.load(Ordering::Acquire);
        let drained = match adapter.mode() {
            Mode::MultiQueue => {
                let Some(cell) = adapter.queues.get(queue) else {
                    return;
                };
                cell.with(ctx, |q, _| {
                    q.sync_epoch(epoch);
                    q.drain(&mut batch)
                })
            }
            Mode::SingleInterrupt => adapter.single.synchronize(ctx, |q| {
                q.sync_epoch(epoch);
                q.drain(&mut batch)
            }),
            Mode::Dump | Mode::Stopped => return,
        };
        // Completion happens here, after the queue lock is released.
        if batch.take_internal() {
            super::setup::take_late_identity(adapter);
        }
        if let Some(request) = finish_batch(adapter, &mut batch) {
            let notifier = match adapter.mode() {
                Mode::MultiQueue => adapter
                    .queues
                    .get(queue)
                    .and_then(|cell| {
                        cell.with(ctx, |q, _| {
                            q.resubmit_flush(request, adapter.builder.as_ref())
                        })
                        .ok()
                    })
                    .flatten(),
                _ => adapter
                    .single
                    .synchronize(ctx, |q| q.resubmit_flush(request, adapter.builder.as_ref()))
                    .ok()
                    .flatten(),
            };
            if let Some(notifier) = notifier {
                notifier.notify();
            }
        }
        match drained {
            Ok(Drained::More) if round < MAX_BATCHES => continue,
            Ok(Drained::More) => {
                // Bounded work per run: queue this DPC again for the rest (it runs after this
                // one returns, so other DPCs and StartIo get the CPU and the lock in between).
                match adapter.mode() {
                    Mode::MultiQueue => {
                        if let Some(cell) = adapter.queues.get(queue) {
                            cell.dpc().issue(&*ctx, queue, 0);
                        }
                    }
                    _ => {
                        adapter.single_dpc.issue(&*ctx, 0, 0);
                    }
                }
                return;
            }
            Ok(Drained::Idle) | Err(_) => return,
            Ok(Drained::Broken(_)) => {
                super::reset::begin_reset(adapter, &*ctx, Cause::BrokenRing(queue));
                return;
            }
        }
    }
}

/// Completes a batch. Returns a FUA write whose data is on the device and which now needs its
/// FLUSH (at most one per batch is carried; the rest are flushed the same way in turn).
fn finish_batch(adapter: &Adapter, batch: &mut Batch) -> Option<InFlight> {
    let mut carried = None;
    for (request, used_len) in batch.drain() {
        if let Some(request) = finish(adapter, request, used_len) {
            match carried {
                None => carried = Some(request),
                // One FLUSH is carried per batch. A second FUA write in the same batch is handed
                // back BUSY: its data is on the device, and Storport sends it again (write, then
                // FLUSH), so it is never completed before it is durable.
                Some(_) => {
                    let _ = request.srb.complete(SrbStatus::Busy);
                }
            }
        }
    }
    carried
}

/// Completes one request from its status byte. Returns it instead when it is a FUA write that
/// still needs its FLUSH.
fn finish(adapter: &Adapter, request: InFlight, used_len: u32) -> Option<InFlight> {
    let status = request
        .area()
        .map_or(Status::Invalid(u8::MAX), |area| area.status());
    let InFlight {
        srb,
        op,
        max_written,
    } = request;
    if adapter.tracing.load(Ordering::Relaxed)
        && let Some(port) = adapter.port
    {
        let byte = match status {
            Status::Ok => 0,
            Status::IoError => 1,
            Status::Unsupported => 2,
            Status::Invalid(byte) => byte,
        };
        super::events::io_completed(port, &srb, byte);
    }
    // The device may not claim to have written more than the request offered (2.7.8.1).
    if used_len > max_written || matches!(status, Status::Invalid(_)) {
        if let Some(port) = adapter.port {
            port.log_error(
                Some(&srb),
                super::events::BAD_COMPLETION,
                u32::from(op as u8),
            );
        }
        let _ = check_condition(srb, &Sense::new(SenseKey::HardwareError, 0x44, 0x00));
        return None;
    }
    match status {
        Status::Ok if op == Op::WriteFua => Some(InFlight {
            srb,
            op: Op::Flush,
            max_written: 1,
        }),
        Status::Ok => {
            let _ = srb.complete(SrbStatus::Success);
            None
        }
        Status::IoError => {
            let _ = check_condition(srb, &Sense::for_block_error(op.block_op(), BlockError::Io));
            None
        }
        Status::Unsupported | Status::Invalid(_) => {
            let _ = check_condition(
                srb,
                &Sense::for_block_error(op.block_op(), BlockError::Unsupported),
            );
            None
        }
    }
}

/// The configuration-change interrupt also announces DEVICE_NEEDS_RESET (VIRTIO 1.2 2.1.2): the
/// device stopped and will complete nothing more. Stop it and have the reset DPC hand its
/// requests back and restart it, rather than wait for Storport's timeout and bus reset.
fn reset_if_device_needs_it<C: MayIssueDpc>(adapter: &Adapter, ctx: &C) {
    if adapter.resetting() {
        return;
    }
    let Some(status) = adapter.transport.as_ref().map(|t| t.device_status()) else {
        return;
    };
    if status.vanished() {
        super::reset::device_removed(adapter, ctx);
    } else if status.needs_reset() {
        super::reset::begin_reset(adapter, ctx, Cause::NeedsReset);
    }
}

/// The configuration-change interrupt: re-read the capacity; if it changed, raise a UNIT
/// ATTENTION for the next command and ask Storport to look at the disk again.
pub(super) fn config_changed(adapter: &Adapter) {
    let (Some(transport), Some(port)) = (adapter.transport.as_ref(), adapter.port) else {
        return;
    };
    // A vanished device's configuration reads all ones: nothing to learn from it.
    if adapter.removed.load(Ordering::Acquire) || transport.device_status().vanished() {
        return;
    }
    let Ok(config) = crate::virtio::BlkConfig::read(transport, adapter.features) else {
        return;
    };
    if !super::disk::capacity_is_valid(config.capacity) {
        // Nonsense: keep the capacity the disk had, and say so in the event log.
        port.log_error(None, LOG_CAPACITY_REFUSED, 0);
        return;
    }
    if adapter.disk.resize(config.capacity) {
        port.log_error(None, CAPACITY_CHANGED, config.capacity as u32);
        port.notify_bus_change(0);
    }
}
