//! The completion path: HwStorInterrupt, HwMSInterruptRoutine, the queues' DPCs, completing
//! what the device used, and the configuration-change interrupt.

use core::sync::atomic::Ordering;

use storport::Srb;
use storport::context;
use storport::dpc::MayIssueDpc;
use storport::miniport::MessageContext;
use storport::srb::Completed;
use storport::srb::Status as SrbStatus;

use crate::scsi::{BlockError, Sense, SenseKey};
use crate::virtio::{CompletedArea, Status};

use super::queue::{Batch, Drained};
use super::request::{self, Op};
use super::{Adapter, Found, Mode};

use super::events::{CAPACITY_CHANGED, CAPACITY_REFUSED as LOG_CAPACITY_REFUSED, Cause};

/// Completes with CHECK CONDITION and the sense data (autosense).
pub(super) fn check_condition(mut srb: Srb, sense: &Sense) -> Completed {
    let mut bytes = [0u8; 18];
    let len = sense.write(&mut bytes);
    srb.set_data_transfer_length(0);
    srb.complete_check_condition(bytes.get(..len).unwrap_or(&[]))
}

/// HwStorInterrupt: line-based interrupts, and the dump stack's polling.
pub(super) fn interrupt(adapter: &Adapter, found: &Found, ctx: &mut context::Interrupt) -> bool {
    let mode = adapter.mode();
    if mode == Mode::Dump {
        super::reset::write_pending_dump_reset(adapter, found, ctx);
    }
    if mode != Mode::Dump {
        let transport = &found.registers;
        // Reading the ISR status acknowledges the (level-triggered) interrupt.
        let isr = transport.read_isr();
        if isr.0 == 0xFF && super::reset::vanished(found) {
            // All ones: the device is gone (surprise removal). Not our interrupt; fail what is
            // outstanding and touch the device no more.
            super::reset::device_removed(adapter, found, &*ctx);
            return false;
        }
        if !isr.queue() && !isr.config_changed() {
            return false;
        }
        if isr.config_changed() {
            config_changed(adapter, found);
            reset_if_device_needs_it(adapter, found, &*ctx);
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
            super::setup::take_late_identity(adapter, found);
        }
        let resubmit = finish_batch(adapter, found, &mut batch);
        if let Some(request) = resubmit {
            let notifier = adapter
                .single
                .get(ctx)
                .resubmit_flush(request, Some(&found.builder));
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
                    super::reset::dump_reset(adapter, found, ctx);
                } else {
                    super::reset::begin_reset(adapter, found, &*ctx, Cause::BrokenRing(0));
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
    found: &Found,
    ctx: MessageContext<'_>,
    message_id: u32,
) -> bool {
    let MessageContext::PerMessage(token) = ctx else {
        return false;
    };
    match adapter.mode() {
        Mode::MultiQueue => {
            // Message 0 announces configuration changes; message q + 1 serves queue q.
            let Some(queue) = usize::try_from(message_id)
                .ok()
                .and_then(|m| m.checked_sub(1))
            else {
                config_changed(adapter, found);
                reset_if_device_needs_it(adapter, found, &*token);
                return true;
            };
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
            if found.registers.read_isr().config_changed() {
                config_changed(adapter, found);
                reset_if_device_needs_it(adapter, found, &*token);
            }
            adapter.single_dpc.issue(token, 0, 0);
            true
        }
        Mode::Dump | Mode::Stopped => false,
    }
}

/// HwStorDpcRoutine of a queue (or of the single queue).
pub(super) fn queue_dpc(adapter: &Adapter, found: &Found, ctx: &mut context::Dpc, queue: usize) {
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
            super::setup::take_late_identity(adapter, found);
        }
        if let Some(request) = finish_batch(adapter, found, &mut batch) {
            let notifier = match adapter.mode() {
                Mode::MultiQueue => adapter
                    .queues
                    .get(queue)
                    .and_then(|cell| {
                        cell.with(ctx, |q, _| q.resubmit_flush(request, Some(&found.builder)))
                            .ok()
                    })
                    .flatten(),
                _ => adapter
                    .single
                    .synchronize(ctx, |q| q.resubmit_flush(request, Some(&found.builder)))
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
                super::reset::begin_reset(adapter, found, &*ctx, Cause::BrokenRing(queue));
                return;
            }
        }
    }
}

/// Completes a batch. Returns a FUA write whose data is on the device and which now needs its
/// FLUSH (at most one per batch is carried; the rest are flushed the same way in turn).
fn finish_batch(adapter: &Adapter, found: &Found, batch: &mut Batch) -> Option<Srb> {
    let mut carried = None;
    for (request, used_len) in batch.drain() {
        if let Some(request) = finish(adapter, found, request, used_len) {
            match carried {
                None => carried = Some(request),
                // One FLUSH is carried per batch. A second FUA write in the same batch is handed
                // back BUSY: its data is on the device, and Storport sends it again (write, then
                // FLUSH), so it is never completed before it is durable.
                Some(_) => {
                    let _ = request.complete(SrbStatus::Busy);
                }
            }
        }
    }
    carried
}

/// Completes one request from its status byte. Returns it instead when it is a FUA write that
/// still needs its FLUSH.
fn finish(adapter: &Adapter, found: &Found, srb: Srb, used_len: u32) -> Option<Srb> {
    // The area as CPU memory: the status byte and the private word (operation and
    // `max_written`, recorded by BuildIo or by the FLUSH of a FUA write); no bus address.
    let (status, word) = match srb.extension_memory().and_then(CompletedArea::new) {
        Some(area) => (area.status(), area.load_private()),
        None => (Status::Invalid(u8::MAX), None),
    };
    let recorded = word.and_then(request::recorded_op);
    let (op, max_written) = recorded.unwrap_or((Op::Read, 0));
    if adapter.tracing.load(Ordering::Relaxed) {
        let byte = match status {
            Status::Ok => 0,
            Status::IoError => 1,
            Status::Unsupported => 2,
            Status::Invalid(byte) => byte,
        };
        super::events::io_completed(found.port, &srb, byte);
    }
    // The device may not claim to have written more than the request offered (2.7.8.1).
    if used_len > max_written || recorded.is_none() || matches!(status, Status::Invalid(_)) {
        found.port.log_error(
            Some(&srb),
            super::events::BAD_COMPLETION,
            u32::from(op as u8),
        );
        let _ = check_condition(srb, &Sense::new(SenseKey::HardwareError, 0x44, 0x00));
        return None;
    }
    match status {
        Status::Ok if op == Op::WriteFua => Some(srb),
        Status::Ok => {
            let _ = srb.complete(if word.is_some_and(request::recorded_underrun) {
                SrbStatus::DataOverrun
            } else {
                SrbStatus::Success
            });
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
fn reset_if_device_needs_it<C: MayIssueDpc>(adapter: &Adapter, found: &Found, ctx: &C) {
    if adapter.resetting() {
        return;
    }
    let status = found.registers.device_status();
    if status.vanished() {
        super::reset::device_removed(adapter, found, ctx);
    } else if status.needs_reset() {
        super::reset::begin_reset(adapter, found, ctx, Cause::NeedsReset);
    }
}

/// The configuration-change interrupt: re-read the capacity; if it changed, raise a UNIT
/// ATTENTION for the next command and ask Storport to look at the disk again.
pub(super) fn config_changed(adapter: &Adapter, found: &Found) {
    let (transport, port) = (&found.registers, found.port);
    // A vanished device's configuration reads all ones: nothing to learn from it.
    if adapter.removed.load(Ordering::Acquire) || transport.device_status().vanished() {
        return;
    }
    let Ok(config) = crate::virtio::BlkConfig::read(transport, found.features) else {
        return;
    };
    if !super::disk::capacity_is_valid(config.capacity) {
        // Nonsense: keep the capacity the disk had, and say so in the event log.
        port.log_error(None, LOG_CAPACITY_REFUSED, 0);
        return;
    }
    if adapter.disk.resize(config.capacity) {
        // The event's unique id holds the capacity's low 32 bits (sectors).
        port.log_error(
            None,
            CAPACITY_CHANGED,
            (config.capacity & 0xFFFF_FFFF) as u32,
        );
        port.notify_bus_change(0);
    }
}
