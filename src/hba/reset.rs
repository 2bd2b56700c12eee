//! Bus reset, adapter stop and restart, and a device that misbehaved.
//!
//! A reset completes every request in flight exactly once, and only after the device can no
//! longer write into their memory (DESIGN.md "Trust and failure"; viostor #1326 completed a
//! request the device then wrote into): the device is reset first, the requests are completed
//! after. HwStorResetBus may take only the interrupt lock (seed 003, full duplex), so with one
//! queue per MSI-X message the work on the queues (which need their DPC locks) runs in the
//! reset DPC, one queue lock at a time; new requests are answered BUSY until it is done.

use core::sync::atomic::Ordering;

use storport::context;
use storport::dpc::MayIssueDpc;
use storport::ffi;
use storport::miniport::AdapterControlStatus;

use super::queue::{Batch, Queue};
use super::{Adapter, Control, Mode, RESET_DPC};

/// HwStorResetBus.
pub(super) fn reset_bus(adapter: &Adapter, ctx: &mut context::ResetBus) -> bool {
    match adapter.mode() {
        // A dump stack ignores resets: there is one request, polled to its end.
        Mode::Dump | Mode::Stopped => true,
        Mode::MultiQueue => {
            adapter.resetting.store(true, Ordering::Release);
            let _ = adapter
                .control
                .synchronize(ctx, |control| stop_device(adapter, control));
            adapter.reset_dpc.issue(ctx, RESET_DPC, 0);
            true
        }
        Mode::SingleInterrupt => {
            adapter.resetting.store(true, Ordering::Release);
            let _ = adapter
                .control
                .synchronize(ctx, |control| stop_device(adapter, control));
            loop {
                let mut batch = Batch::new();
                let more = adapter
                    .single
                    .synchronize(ctx, |q| cancel(q, &mut batch))
                    .unwrap_or(false);
                complete_reset(&mut batch);
                if !more {
                    break;
                }
            }
            let restarted = adapter
                .control
                .synchronize(ctx, |control| restart_device(adapter, control))
                .unwrap_or(false);
            finish_reset(adapter, restarted);
            true
        }
    }
}

/// The reset DPC: empties every queue (one DPC lock at a time, or the single queue under the
/// interrupt lock), then restarts the device.
///
/// In the single-interrupt mode the queue in use is `single`, not `queues`: a broken ring found
/// by its ISR or DPC is emptied here too, or its requests would wait for Storport's timeout and
/// its ring would still hold the old indices when the device restarts at index 0.
pub(super) fn reset_dpc(adapter: &Adapter, ctx: &mut context::Dpc) {
    match adapter.mode() {
        Mode::MultiQueue => {
            let active = usize::from(adapter.active_queues.load(Ordering::Acquire));
            for cell in adapter.queues.iter().take(active) {
                loop {
                    let mut batch = Batch::new();
                    let more = cell
                        .with(ctx, |q, _| cancel(q, &mut batch))
                        .unwrap_or(false);
                    complete_reset(&mut batch);
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
            complete_reset(&mut batch);
            if !more {
                break;
            }
        },
        Mode::Dump | Mode::Stopped => {}
    }
    let restarted = adapter
        .control
        .synchronize(ctx, |control| restart_device(adapter, control))
        .unwrap_or(false);
    finish_reset(adapter, restarted);
}

/// Issues the reset DPC from a queue DPC or the ISR that found the device broken. A dump stack
/// has no DPCs: there the device stays stopped and requests fail until the stack is torn down.
pub(super) fn schedule_reset<C: MayIssueDpc>(adapter: &Adapter, ctx: &C) {
    if adapter.mode() == Mode::Dump {
        return;
    }
    adapter.resetting.store(true, Ordering::Release);
    adapter.reset_dpc.issue(ctx, RESET_DPC, 0);
}

/// The device wrote nonsense into a ring: stop it at once (reset: no more DMA), and fail
/// requests until a reset brings it back.
pub(super) fn device_broken(adapter: &Adapter) {
    adapter.broken.store(true, Ordering::Release);
    if let (Some(transport), Some(port)) = (adapter.transport.as_ref(), adapter.port) {
        let mut transport = transport.clone();
        let _ = transport.reset(&mut |us| port.stall(us));
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
fn complete_reset(batch: &mut Batch) {
    for (request, _) in batch.drain() {
        let _ = request.srb.complete(ffi::SRB_STATUS_BUS_RESET);
    }
}

fn finish_reset(adapter: &Adapter, restarted: bool) {
    if restarted {
        adapter.broken.store(false, Ordering::Release);
        // While the device was reset it could not announce a configuration change (it only
        // does once DRIVER_OK is set): look at the capacity again.
        super::io::config_changed(adapter);
    }
    adapter.resetting.store(false, Ordering::Release);
    if let Some(port) = adapter.port {
        port.notify_reset_detected();
    }
}

/// Resets the device: it stops processing and no longer touches guest memory.
fn stop_device(adapter: &Adapter, control: &mut Control) -> bool {
    let (Some(transport), Some(port)) = (control.transport.as_mut(), adapter.port) else {
        return false;
    };
    transport.reset(&mut |us| port.stall(us)).is_ok()
}

/// Brings the device back with the same features, rings and vectors (the rings were zeroed).
fn restart_device(adapter: &Adapter, control: &mut Control) -> bool {
    let (Some(transport), Some(port)) = (control.transport.as_mut(), adapter.port) else {
        return false;
    };
    super::setup::reprogram(adapter, transport, port)
}

/// HwStorAdapterControl(ScsiStopAdapter): Storport has drained the adapter; reset the device so
/// it is quiet (no DMA, no interrupts) until restarted. Runs at DIRQL with the interrupt lock
/// held (layouts.md), so it takes no lock.
pub(super) fn stop(adapter: &Adapter, _ctx: &mut context::AdapterControl) -> AdapterControlStatus {
    if let (Some(transport), Some(port)) = (adapter.transport.as_ref(), adapter.port) {
        let mut transport = transport.clone();
        if transport.reset(&mut |us| port.stall(us)).is_err() {
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
    _ctx: &mut context::AdapterControl,
) -> AdapterControlStatus {
    let (Some(transport), Some(port)) = (adapter.transport.as_ref(), adapter.port) else {
        return AdapterControlStatus::Unsuccessful;
    };
    for (_, region) in adapter.rings.iter().flatten() {
        region.zero();
    }
    adapter.epoch.fetch_add(1, Ordering::AcqRel);
    let mut transport = transport.clone();
    if super::setup::reprogram(adapter, &mut transport, port) {
        adapter.broken.store(false, Ordering::Release);
        // The disk may have been resized while the adapter was stopped, when the device could
        // not interrupt: re-read the capacity (a UNIT ATTENTION follows if it changed).
        super::io::config_changed(adapter);
        AdapterControlStatus::Success
    } else {
        AdapterControlStatus::Unsuccessful
    }
}
