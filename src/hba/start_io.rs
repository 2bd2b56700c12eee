//! HwStorStartIo: put the request BuildIo prepared on a ring, under its queue's lock.

use core::sync::atomic::Ordering;

use storport::Srb;
use storport::context::StartIo;
use storport::perf;
use storport::srb::{Function, Status as SrbStatus};

#[cfg(feature = "planted-race")]
use crate::scsi::{Sense, SenseKey};

use super::build_io::extension_of;
#[cfg(feature = "planted-race")]
use super::completion::check_condition;
use super::queue::SubmitError;
use super::{Adapter, Found, Mode};

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
    Full(Srb),
    /// The ring broke between the reset check and the lock.
    Broken(Srb),
    /// A reset began between the first reset check and the lock.
    Resetting(Srb),
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
pub(super) fn start_io(adapter: &Adapter, found: &Found, ctx: StartIo<'_>, srb: Srb) {
    if adapter.removed.load(Ordering::Acquire) {
        let _ = srb.complete(SrbStatus::NoDevice);
        return;
    }
    if is_reset_request(&srb) {
        with_start_io_token!(ctx, |token| super::reset::hold_reset_request(
            adapter, found, token, srb
        ));
        return;
    }
    let Some(extension) = extension_of(&srb) else {
        let _ = srb.complete(SrbStatus::InternalError);
        return;
    };
    // The operation and `max_written` stay in the private word for the completion.
    let Some(built) = extension.built() else {
        let _ = srb.complete(SrbStatus::InternalError);
        return;
    };
    if adapter.resetting() {
        let _ = srb.complete(SrbStatus::Busy);
        return;
    }
    let request = srb;
    let mode = adapter.mode();
    let queue = if mode == Mode::MultiQueue {
        queue_for(adapter, &request)
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
        // The planted bug (test builds only) is the code before that re-check, too.
        if adapter.resetting() && !cfg!(feature = "planted-race") {
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
        Submitted::Full(request) => busy(found, request),
        // As for a request that arrives during a reset: Storport sends it again.
        Submitted::Resetting(request) => {
            let _ = request.complete(SrbStatus::Busy);
        }
        // Whoever found the ring broken (a drain) has started the reset; Storport sends the
        // request again once the device is back.
        #[cfg(not(feature = "planted-race"))]
        Submitted::Broken(request) => {
            let _ = request.complete(SrbStatus::Busy);
        }
        // The planted bug (test builds only, see Cargo.toml): the code before fb79d8a.
        #[cfg(feature = "planted-race")]
        Submitted::Broken(request) => {
            let _ = check_condition(request, &Sense::new(SenseKey::HardwareError, 0x44, 0x00));
        }
        Submitted::NotRun => fail_submit(found, pending),
    }
}

fn fail_submit(found: &Found, pending: Option<Srb>) {
    if let Some(request) = pending {
        busy(found, request);
    }
}

/// The ring is full: Storport holds the LU's requests until one completes, then retries this
/// one (with a fresh SRB extension, through BuildIo again).
fn busy(found: &Found, request: Srb) {
    if let Some(address) = request.address() {
        found.port.device_busy(address, 1);
    }
    let _ = request.complete(SrbStatus::Busy);
}

/// The queue Storport's message steering chose for `srb` (StartIo runs on the CPU whose MSI-X
/// message is `message`; queue `q` is served by message `q + 1`).
#[inline]
fn queue_for(adapter: &Adapter, srb: &Srb) -> usize {
    let active = usize::from(adapter.active_queues.load(Ordering::Relaxed)).max(1);
    let steered = perf::start_io_parameters(srb)
        .and_then(|(message, _)| usize::try_from(message).ok()?.checked_sub(1));
    match steered {
        // Storport steers by the messages the driver asked for, so the queue is in range and
        // no division is needed; the remainder only guards a message beyond them.
        Some(queue) if queue < active => queue,
        Some(queue) => queue.checked_rem(active).unwrap_or(0),
        None => 0,
    }
}
