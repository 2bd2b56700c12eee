//! Resets as a state machine, adapter stop and restart, and a device that vanished.
//!
//! A reset completes every request in flight exactly once, and only after the device can no
//! longer write into their memory (DESIGN.md "Trust and failure"; viostor #1326 completed a
//! request the device then wrote into). Nothing waits at raised IRQL: the reset is written to
//! `device_status` and then watched in short steps.
//!
//! ```text
//!  begin_reset (ISR, DPC, HwStorResetBus, StartIo of an LU/device reset SRB, passive init)
//!    | issue the reset DPC, which writes device_status = 0
//!    v
//!  Waiting --- reset DPC: device_status == 0? --no--> HwStorTimer in RESET_POLL_US re-issues
//!    |                                                the DPC; after ACK_POLLS polls: clear Bus
//!    | yes (or DMA cut)                               Master Enable (StorPortSetBusData), log,
//!    v                                                go on as if acknowledged
//!  hand every request back (BUS_RESET; queue by queue, each under its own lock), complete the
//!  held LU/device reset SRBs, then bring the device back (reset acknowledged -> Bus Master on ->
//!  features, rings, vectors, DRIVER_OK). A device that still does not acknowledge is written
//!  again and watched (Restarting) for RESTART_POLLS polls, then given up on: requests fail with
//!  HARDWARE ERROR until the next reset.
//! ```
//!
//! A device whose registers read all ones was surprise-removed: it is not touched again, and
//! every request (outstanding or new) fails with SRB_STATUS_NO_DEVICE.
//!
//! HwStorResetBus may take only the interrupt lock (seed 003, full duplex), and with one queue
//! per MSI-X message the queues need their DPC locks: that is why the work runs in the reset DPC,
//! one queue lock at a time; new requests are answered BUSY until it is done.

use core::sync::atomic::Ordering;

use storport::dpc::MayIssueDpc;
use storport::miniport::{AdapterControlStatus, request_timer};
use storport::srb::Status as SrbStatus;
use storport::{Srb, context};

use super::queue::{Batch, Queue};
use super::{Adapter, Control, Mode, RESET_DPC};

/// How long the reset DPC waits between looks at `device_status`.
const RESET_POLL_US: u32 = 1_000;
/// Looks at `device_status` before the device's DMA is cut: about 200 ms.
pub(super) const ACK_POLLS: u32 = 200;
/// Looks at `device_status` after the DMA was cut before the device is given up on.
const RESTART_POLLS: u32 = 1_000;
/// Held LU, device and bus reset SRBs (Storport sends them one at a time per LU).
pub(super) const HELD_RESETS: usize = 4;

// StorPortLogError codes: `super::events`.
use super::events::{
    Cause, DEVICE_GIVEN_UP as LOG_DEVICE_GIVEN_UP, RESET_COMPLETED as LOG_RESET_COMPLETED,
    RESET_NOT_ACKNOWLEDGED as LOG_RESET_NOT_ACKNOWLEDGED, RESET_STARTED as LOG_RESET_STARTED,
    RING_BROKEN, SURPRISE_REMOVAL as LOG_SURPRISE_REMOVAL,
};

/// Where the reset machine is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum Stage {
    /// No reset in progress.
    Idle = 0,
    /// The reset is written; waiting for the device to acknowledge it.
    Waiting = 1,
    /// Requests were handed back after the DMA was cut; waiting for the device to acknowledge
    /// a reset so it can be brought back.
    Restarting = 2,
}

impl Stage {
    pub(super) fn from_u8(value: u8) -> Stage {
        match value {
            1 => Stage::Waiting,
            2 => Stage::Restarting,
            _ => Stage::Idle,
        }
    }
}

/// The reset SRBs (SRB_FUNCTION_RESET_LOGICAL_UNIT, RESET_DEVICE, RESET_BUS) waiting for the
/// reset in progress to hand back what was outstanding.
pub struct HeldResets {
    srbs: [Option<Srb>; HELD_RESETS],
}

impl HeldResets {
    /// None held.
    pub const EMPTY: Self = Self {
        srbs: [const { None }; HELD_RESETS],
    };

    /// Holds `srb`, or gives it back when every place is taken.
    fn hold(&mut self, srb: Srb) -> Result<(), Srb> {
        match self.srbs.iter_mut().find(|s| s.is_none()) {
            Some(slot) => {
                *slot = Some(srb);
                Ok(())
            }
            None => Err(srb),
        }
    }

    fn take_all(&mut self) -> [Option<Srb>; HELD_RESETS] {
        core::mem::replace(&mut self.srbs, [const { None }; HELD_RESETS])
    }
}

fn stage(adapter: &Adapter) -> Stage {
    Stage::from_u8(adapter.reset_stage.load(Ordering::Acquire))
}

fn set_stage(adapter: &Adapter, stage: Stage) {
    adapter.reset_stage.store(stage as u8, Ordering::Release);
}

/// Starts a reset: issues the reset DPC, which writes the reset to the device and watches it.
/// The write is left to the DPC because a device may take its time over it (a register write that
/// makes the host drain its I/O): not in the ISR. A reset already in progress absorbs this one:
/// it hands back every request that is outstanding when it gets to that step.
pub(super) fn begin_reset<C: MayIssueDpc>(adapter: &Adapter, ctx: &C, cause: Cause) {
    match adapter.mode() {
        Mode::Stopped => return,
        // A dump stack has no DPC and no timer: stop the device, and requests fail until the
        // stack is torn down (there is one request at a time, polled).
        Mode::Dump => {
            adapter.broken.store(true, Ordering::Release);
            // The write goes through the one transport, behind the interrupt lock: the polled
            // ISR, which holds it, makes it (`write_pending_dump_reset`).
            adapter.dump_reset_pending.store(true, Ordering::Release);
            return;
        }
        Mode::MultiQueue | Mode::SingleInterrupt => {}
    }
    if adapter
        .reset_stage
        .compare_exchange(
            Stage::Idle as u8,
            Stage::Waiting as u8,
            Ordering::AcqRel,
            Ordering::Acquire,
        )
        .is_err()
    {
        // One is in progress; if it is past handing requests back, it starts again when done.
        adapter.reset_again.store(true, Ordering::Release);
        return;
    }
    adapter.reset_cause.store(cause.id(), Ordering::Release);
    if let Some(port) = adapter.port {
        if let Cause::BrokenRing(queue) = cause {
            port.log_error(None, RING_BROKEN, u32::try_from(queue).unwrap_or(u32::MAX));
        }
        port.log_error(None, LOG_RESET_STARTED, u32::from(cause.id()));
    }
    // Polls 0: the reset is not written yet (the DPC writes it), set before the DPC is issued.
    adapter.reset_polls.store(0, Ordering::Release);
    adapter.reset_dpc.issue(ctx, RESET_DPC, 0);
}

/// A dump stack has no DPC and no timer, and one request at a time: the polled ISR that found
/// the ring broken resets the device itself, waiting the transport's bounded 1 ms, hands the
/// request back (BUS_RESET) and brings the device back. A device that does not acknowledge stays
/// stopped, and requests fail, until the stack is torn down.
pub(super) fn dump_reset(adapter: &Adapter, ctx: &mut context::Interrupt) {
    let Some(port) = adapter.port else {
        return;
    };
    let acknowledged = adapter
        .control
        .get(ctx)
        .transport
        .as_mut()
        .is_some_and(|t| t.reset(&mut |us| port.stall(us)).is_ok());
    if !acknowledged {
        adapter.broken.store(true, Ordering::Release);
        return;
    }
    loop {
        let mut batch = Batch::new();
        let more = cancel(adapter.single.get(ctx), &mut batch);
        complete_all(&mut batch, SrbStatus::BusReset);
        if !more {
            break;
        }
    }
    let restarted = adapter
        .control
        .get(ctx)
        .transport
        .as_mut()
        .is_some_and(|t| super::setup::reprogram(adapter, t, port));
    adapter.broken.store(!restarted, Ordering::Release);
}

/// The machine is back to idle: start again if a reset was asked for meanwhile.
fn end_reset(adapter: &Adapter, ctx: &context::Dpc) {
    set_stage(adapter, Stage::Idle);
    if adapter.reset_again.swap(false, Ordering::AcqRel) {
        let cause = Cause::from_id(adapter.reset_cause.load(Ordering::Acquire));
        begin_reset(adapter, ctx, cause);
    }
}

/// Writes the reset to `device_status`, unless the device is gone: through the one transport,
/// in the interrupt-lock cell that serialises every status write (StorPortSynchronizeAccess).
fn write_reset(adapter: &Adapter, ctx: &mut context::Dpc) {
    if adapter.removed.load(Ordering::Acquire) {
        return;
    }
    let _ = adapter.control.synchronize(ctx, |control| {
        if let Some(transport) = control.transport.as_mut() {
            transport.request_reset();
        }
    });
}

/// A dump stack's reset asked for by `begin_reset`, written by the polled ISR, which holds the
/// interrupt lock.
pub(super) fn write_pending_dump_reset(adapter: &Adapter, ctx: &mut context::Interrupt) {
    if !adapter.dump_reset_pending.swap(false, Ordering::AcqRel)
        || adapter.removed.load(Ordering::Acquire)
    {
        return;
    }
    if let Some(transport) = adapter.control.get(ctx).transport.as_mut() {
        transport.request_reset();
    }
}

/// The device vanished (its registers read all ones): never touch it again, and have the reset
/// DPC fail what is outstanding with NO_DEVICE.
pub(super) fn device_removed<C: MayIssueDpc>(adapter: &Adapter, ctx: &C) {
    if !adapter.removed.swap(true, Ordering::AcqRel)
        && let Some(port) = adapter.port
    {
        port.log_error(None, LOG_SURPRISE_REMOVAL, 0);
    }
    begin_reset(adapter, ctx, Cause::Removal);
}

/// Whether the device's registers read all ones: a surprise-removed PCI function.
pub(super) fn vanished(adapter: &Adapter) -> bool {
    adapter
        .transport
        .as_ref()
        .is_some_and(|t| t.device_status().vanished())
}

/// HwStorResetBus: starts the reset and returns; the reset DPC completes every outstanding
/// request once the device can no longer write into it.
pub(super) fn reset_bus(adapter: &Adapter, ctx: &mut context::ResetBus) -> bool {
    if matches!(adapter.mode(), Mode::MultiQueue | Mode::SingleInterrupt) {
        begin_reset(adapter, &*ctx, Cause::Bus);
    }
    true
}

/// SRB_FUNCTION_RESET_LOGICAL_UNIT, RESET_DEVICE or RESET_BUS (from StartIo): the reset
/// completes every request outstanding on the unit (the adapter has one), then this SRB.
pub(super) fn hold_reset_request<C>(adapter: &Adapter, ctx: &mut C, srb: Srb)
where
    C: MayIssueDpc + storport::lock::MayAcquireInterrupt,
{
    if adapter.removed.load(Ordering::Acquire) {
        let _ = srb.complete(SrbStatus::NoDevice);
        return;
    }
    if !matches!(adapter.mode(), Mode::MultiQueue | Mode::SingleInterrupt) {
        // No reset machine here (dump stack): the one polled request has already ended.
        let _ = srb.complete(SrbStatus::Success);
        return;
    }
    let cause = Cause::of_function(srb.function());
    let mut pending = Some(srb);
    let held =
        adapter
            .held_resets
            .synchronize(ctx, |held| match pending.take().map(|s| held.hold(s)) {
                Some(Err(srb)) => Some(srb),
                _ => None,
            });
    match held {
        // Held: the reset completes it.
        Ok(None) => begin_reset(adapter, &*ctx, cause),
        // Every place taken: resets already in progress will hand this unit's requests back.
        Ok(Some(srb)) => {
            let _ = srb.complete(SrbStatus::Busy);
        }
        Err(_) => {
            if let Some(srb) = pending {
                let _ = srb.complete(SrbStatus::Busy);
            }
        }
    }
}

/// HwStorTimer: the reset machine's next look at the device.
pub(super) fn timer(adapter: &Adapter, ctx: &mut context::Timer) {
    if stage(adapter) != Stage::Idle {
        adapter.reset_dpc.issue(&*ctx, RESET_DPC, 0);
    }
}

/// The reset DPC: one step of the machine, never a wait.
pub(super) fn reset_dpc(adapter: &Adapter, ctx: &mut context::Dpc) {
    let Some(port) = adapter.port else {
        return;
    };
    let current = stage(adapter);
    if current == Stage::Idle {
        return;
    }
    if adapter.removed.load(Ordering::Acquire) || vanished(adapter) {
        if !adapter.removed.swap(true, Ordering::AcqRel) {
            port.log_error(None, LOG_SURPRISE_REMOVAL, 0);
        }
        cancel_all(adapter, ctx, SrbStatus::NoDevice);
        complete_held(adapter, ctx, SrbStatus::NoDevice);
        set_stage(adapter, Stage::Idle);
        return;
    }
    if current == Stage::Waiting && adapter.reset_polls.load(Ordering::Acquire) == 0 {
        write_reset(adapter, ctx);
        adapter.reset_polls.store(1, Ordering::Release);
    }
    let acknowledged = adapter
        .transport
        .as_ref()
        .is_some_and(|t| t.reset_acknowledged());
    match current {
        Stage::Waiting if !acknowledged => {
            let polls = adapter.reset_polls.fetch_add(1, Ordering::AcqRel) + 1;
            if polls < adapter.tunables.reset_timeout_ms {
                request_timer::<Adapter>(port, RESET_POLL_US);
                return;
            }
            // The device ignores the reset and may still write into any request: cut its DMA
            // before handing them back, and say so in the event log.
            let cut = port.set_bus_master(false);
            adapter.dma_cut.store(cut, Ordering::Release);
            port.log_error(None, LOG_RESET_NOT_ACKNOWLEDGED, polls);
            if !cut {
                // No way to stop it: the requests stay with the device rather than be written
                // after completion; keep asking it to reset.
                adapter.reset_polls.store(0, Ordering::Release);
                write_reset(adapter, ctx);
                request_timer::<Adapter>(port, RESET_POLL_US);
                return;
            }
            hand_back(adapter, ctx);
            // Ask again; bring it back once it acknowledges.
            adapter.reset_polls.store(0, Ordering::Release);
            set_stage(adapter, Stage::Restarting);
            write_reset(adapter, ctx);
            request_timer::<Adapter>(port, RESET_POLL_US);
        }
        Stage::Waiting => {
            hand_back(adapter, ctx);
            restart_after_reset(adapter, ctx);
        }
        Stage::Restarting if !acknowledged => {
            let polls = adapter.reset_polls.fetch_add(1, Ordering::AcqRel) + 1;
            if polls < RESTART_POLLS {
                if polls.is_multiple_of(100) {
                    write_reset(adapter, ctx);
                }
                request_timer::<Adapter>(port, RESET_POLL_US);
                return;
            }
            port.log_error(None, LOG_DEVICE_GIVEN_UP, polls);
            give_up(adapter, ctx);
        }
        Stage::Restarting => restart_after_reset(adapter, ctx),
        Stage::Idle => {}
    }
}

/// The device can no longer write into any request: complete them all, and the held reset SRBs.
fn hand_back(adapter: &Adapter, ctx: &mut context::Dpc) {
    cancel_all(adapter, ctx, SrbStatus::BusReset);
    complete_held(adapter, ctx, SrbStatus::Success);
}

/// The device acknowledged the reset: bring it back over the (now empty) rings.
fn restart_after_reset(adapter: &Adapter, ctx: &mut context::Dpc) {
    // Requests that reached a ring between the hand-back and now are handed back too: the ring
    // is re-initialised under them; so are reset SRBs that arrived meanwhile. A reset asked for
    // before this point is served by it.
    adapter.reset_again.store(false, Ordering::Release);
    cancel_all(adapter, ctx, SrbStatus::BusReset);
    complete_held(adapter, ctx, SrbStatus::Success);
    let restarted = adapter
        .control
        .synchronize(ctx, |control| restart_device(adapter, control))
        .unwrap_or(false);
    if restarted {
        adapter.broken.store(false, Ordering::Release);
        if let Some(port) = adapter.port {
            let cause = adapter.reset_cause.load(Ordering::Acquire);
            port.log_error(None, LOG_RESET_COMPLETED, u32::from(cause));
        }
        end_reset(adapter, ctx);
        // While the device was reset it could not announce a configuration change (it only
        // does once DRIVER_OK is set): look at the capacity again.
        super::completion::config_changed(adapter);
        if let Some(port) = adapter.port {
            port.notify_reset_detected(0);
        }
    } else {
        if let Some(port) = adapter.port {
            port.log_error(None, LOG_DEVICE_GIVEN_UP, 0);
        }
        give_up(adapter, ctx);
    }
}

/// The device cannot be brought back: requests fail with HARDWARE ERROR until a later reset
/// (Storport's, on a timeout) succeeds.
fn give_up(adapter: &Adapter, ctx: &mut context::Dpc) {
    adapter.broken.store(true, Ordering::Release);
    complete_held(adapter, ctx, SrbStatus::Success);
    adapter.reset_again.store(false, Ordering::Release);
    set_stage(adapter, Stage::Idle);
    if let Some(port) = adapter.port {
        port.notify_reset_detected(0);
    }
}

/// Hands every request on every queue back with `status` (the device no longer runs them).
fn cancel_all(adapter: &Adapter, ctx: &mut context::Dpc, status: SrbStatus) {
    match adapter.mode() {
        Mode::MultiQueue => {
            let active = usize::from(adapter.active_queues.load(Ordering::Acquire));
            for cell in adapter.queues.iter().take(active) {
                loop {
                    let mut batch = Batch::new();
                    let more = cell
                        .with(ctx, |q, _| cancel(q, &mut batch))
                        .unwrap_or(false);
                    complete_all(&mut batch, status);
                    if !more {
                        break;
                    }
                }
            }
        }
        Mode::SingleInterrupt => loop {
            let mut batch = Batch::new();
            let more = adapter
                .single
                .synchronize(ctx, |q| cancel(q, &mut batch))
                .unwrap_or(false);
            complete_all(&mut batch, status);
            if !more {
                break;
            }
        },
        Mode::Dump | Mode::Stopped => {}
    }
}

/// Completes the held reset SRBs with `status`.
fn complete_held(adapter: &Adapter, ctx: &mut context::Dpc, status: SrbStatus) {
    let held = adapter
        .held_resets
        .synchronize(ctx, HeldResets::take_all)
        .unwrap_or([const { None }; HELD_RESETS]);
    for srb in held.into_iter().flatten() {
        let _ = srb.complete(status);
    }
}

/// Moves a batch of the queue's requests out; when none are left, forgets the ring.
fn cancel(queue: &mut Queue, batch: &mut Batch) -> bool {
    let more = queue.cancel(batch);
    if !more {
        queue.reset_ring();
    }
    more
}

/// Completes cancelled requests: Storport retries requests completed with BUS_RESET.
fn complete_all(batch: &mut Batch, status: SrbStatus) {
    for (request, _) in batch.drain() {
        let _ = request.srb.complete(status);
    }
}

/// Brings the device back with the same features, rings and vectors (the rings were zeroed);
/// Bus Master Enable is set again only once the device acknowledged its reset.
fn restart_device(adapter: &Adapter, control: &mut Control) -> bool {
    let (Some(transport), Some(port)) = (control.transport.as_mut(), adapter.port) else {
        return false;
    };
    super::setup::reprogram(adapter, transport, port)
}

/// HwStorAdapterControl(ScsiStopAdapter): Storport has drained the adapter; make the device quiet
/// (no DMA, no interrupts) until restarted. Runs at DIRQL holding the interrupt lock
/// (layouts.md), so it takes no lock and waits at most the transport's 1 ms for the reset; a
/// device that does not stop in that time has its DMA cut.
pub(super) fn stop(adapter: &Adapter, ctx: &mut context::AdapterControl) -> AdapterControlStatus {
    if adapter.removed.load(Ordering::Acquire) {
        return AdapterControlStatus::Success;
    }
    // Storport holds the interrupt lock for a stop: the one transport is reached directly.
    let Some(held) = ctx.stop_restart() else {
        return AdapterControlStatus::Unsuccessful;
    };
    let control = adapter.control.get(held);
    if let (Some(transport), Some(port)) = (control.transport.as_mut(), adapter.port)
        && transport.reset(&mut |us| port.stall(us)).is_err()
    {
        if transport.device_status().vanished() {
            adapter.removed.store(true, Ordering::Release);
            return AdapterControlStatus::Success;
        }
        port.log_error(None, LOG_RESET_NOT_ACKNOWLEDGED, 0);
        let cut = port.set_bus_master(false);
        adapter.dma_cut.store(cut, Ordering::Release);
        if !cut {
            return AdapterControlStatus::Unsuccessful;
        }
    }
    AdapterControlStatus::Success
}

/// HwStorAdapterControl(ScsiRestartAdapter): re-initialise the device over the same rings.
/// No request is in flight (Storport stopped the adapter drained), so the rings are zeroed here
/// and each queue forgets its ring state when it next runs (the epoch).
pub(super) fn restart(
    adapter: &Adapter,
    ctx: &mut context::AdapterControl,
) -> AdapterControlStatus {
    if adapter.removed.load(Ordering::Acquire) {
        return AdapterControlStatus::Unsuccessful;
    }
    let Some(port) = adapter.port else {
        return AdapterControlStatus::Unsuccessful;
    };
    // Storport holds the interrupt lock for a restart: the one transport is reached directly.
    let Some(held) = ctx.stop_restart() else {
        return AdapterControlStatus::Unsuccessful;
    };
    let control = adapter.control.get(held);
    let Some(transport) = control.transport.as_mut() else {
        return AdapterControlStatus::Unsuccessful;
    };
    // The device was reset at stop; if it has not finished (or takes longer than the 1 ms this
    // DIRQL routine may wait), the reset machine brings it back: requests are answered BUSY
    // meanwhile.
    let acknowledged = transport.reset(&mut |us| port.stall(us)).is_ok();
    for (_, region) in adapter.rings.iter().flatten() {
        region.zero();
    }
    adapter.epoch.fetch_add(1, Ordering::AcqRel);
    if !acknowledged {
        if transport.device_status().vanished() {
            adapter.removed.store(true, Ordering::Release);
            return AdapterControlStatus::Unsuccessful;
        }
        begin_reset(adapter, &*ctx, Cause::NeedsReset);
        return AdapterControlStatus::Success;
    }
    if super::setup::reprogram(adapter, transport, port) {
        adapter.broken.store(false, Ordering::Release);
        // The disk may have been resized while the adapter was stopped, when the device could
        // not interrupt: re-read the capacity (a UNIT ATTENTION follows if it changed).
        super::completion::config_changed(adapter);
        AdapterControlStatus::Success
    } else {
        AdapterControlStatus::Unsuccessful
    }
}

/// HwStorAdapterControl(ScsiAdapterSurpriseRemoval) and HwStorUnitControl(ScsiUnitSurpriseRemoval):
/// the device is gone. Outstanding requests fail with NO_DEVICE from the reset DPC.
pub(super) fn surprise_removal<C: MayIssueDpc>(adapter: &Adapter, ctx: &C) {
    device_removed(adapter, ctx);
}
