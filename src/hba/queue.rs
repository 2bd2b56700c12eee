//! One request queue of the adapter: its split ring and the requests in flight on it.
//!
//! A [`Queue`] is the state one lock guards (DESIGN.md "The I/O path"): the driver side of a
//! virtqueue and the table that maps a ring id back to its request. The id the ring hands out
//! is the slot index, so finding a completed request is one array access, never a list walk
//! (viostor walks a list). Work done under the lock is only ring stores and slot moves: the
//! request was built before (BuildIo), and completions are handed out in a [`Batch`] to be
//! completed after the lock is released.

use storport::Srb;
use storport::srb::SrbTable;

use storport::srb::Status as SrbStatus;

use crate::virtio::{
    BuiltRequest, QueueError, QueueNotifier, RequestArea, RequestBuilder, UsedElem, Virtqueue,
};

use super::request::{Extension, Op, Prepared};

/// Ring slots per queue: the largest queue size the driver uses. With indirect descriptors
/// each request takes one slot, so this is also the most requests in flight per queue.
pub const SLOTS: usize = 128;

/// A request's virtio-blk request area (header, status byte, descriptor table) in its SRB
/// extension, looked up again when needed: the extension is Storport's memory until the
/// request completes, so its views borrow the `Srb` and end when it is completed. A request on
/// the ring is kept as its `Srb` only (one word in the queue's [`SrbTable`]); what its
/// completion needs besides (operation, `max_written`) is in the area's private word.
pub fn area_of(srb: &Srb) -> Option<RequestArea<'_>> {
    Extension::new(srb.extension()?).map(|extension| extension.area)
}
/// What a drain found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drained {
    /// The ring is empty and interrupts are re-enabled.
    Idle,
    /// The batch is full: drain again after completing it.
    More,
    /// The device wrote nonsense into the ring; the queue is unusable until reset.
    Broken(QueueError),
}

/// Completed requests, moved out under the lock and completed after it is released.
pub struct Batch {
    entries: [Option<(Srb, u32)>; Batch::CAPACITY],
    len: usize,
    /// The driver's own request (the start-up GET_ID) completed in this drain: its answer is
    /// in the adapter's identify area, to be read after the lock is released.
    internal: bool,
}

impl Batch {
    /// Requests per batch: bounds the stack a batch takes and the time the lock is held.
    pub const CAPACITY: usize = 32;

    /// An empty batch.
    pub const fn new() -> Self {
        Self {
            entries: [const { None }; Batch::CAPACITY],
            len: 0,
            internal: false,
        }
    }

    /// Whether the driver's own request completed in a drain since the last call.
    pub fn take_internal(&mut self) -> bool {
        core::mem::replace(&mut self.internal, false)
    }

    fn is_full(&self) -> bool {
        self.len >= Self::CAPACITY
    }

    fn push(&mut self, request: Srb, used_len: u32) {
        if let Some(entry) = self.entries.get_mut(self.len) {
            *entry = Some((request, used_len));
            self.len = self.len.saturating_add(1);
        }
    }

    /// Takes the requests out, in completion order, with the length the device reported.
    pub fn drain(&mut self) -> impl Iterator<Item = (Srb, u32)> + '_ {
        let len = core::mem::replace(&mut self.len, 0);
        self.entries.iter_mut().take(len).filter_map(Option::take)
    }
}

/// A request queue: the driver side of one virtqueue and its requests in flight.
pub struct Queue {
    ring: Option<Virtqueue>,
    /// The adapter epoch this queue's ring state belongs to (see `Adapter::epoch`).
    epoch: u32,
    notifier: Option<QueueNotifier>,
    indirect: bool,
    slots: SrbTable<SLOTS>,
    /// The ring id of the driver's own request (GET_ID at start) while the device holds it:
    /// HwStorInitialize stops polling for it after a few milliseconds, and a later answer is
    /// taken by the next drain. No slot ever holds this id while it is set (the ring does not
    /// hand out an id in flight), so the answer cannot be mistaken for a request's.
    internal: Option<u16>,
}

/// Why a request could not be submitted.
pub enum SubmitError {
    /// The ring is full (or the queue is not set up): retry later.
    Full(Srb),
    /// The queue is broken (the device misbehaved): fail the request.
    Broken(Srb),
    /// A reset began before the queue's lock was taken (the caller checks under the lock):
    /// the reset's pass over this queue may already be done, so the request must not go on.
    Resetting(Srb),
}

impl Queue {
    /// A queue with no ring yet.
    pub const EMPTY: Self = Self {
        ring: None,
        epoch: 0,
        notifier: None,
        indirect: true,
        slots: SrbTable::EMPTY,
        internal: None,
    };

    /// Attaches the ring (HwStorFindAdapter).
    pub fn attach(&mut self, ring: Virtqueue, indirect: bool) {
        self.ring = Some(ring);
        self.indirect = indirect;
    }

    /// The ring's bus addresses, once attached.
    pub fn addresses(&self) -> Option<crate::virtio::QueueAddresses> {
        self.ring.as_ref().map(Virtqueue::addresses)
    }

    /// Records where to notify the device (HwStorInitialize, after queue setup).
    pub fn set_notifier(&mut self, notifier: QueueNotifier) {
        self.notifier = Some(notifier);
    }

    /// Puts a built request on the ring and publishes it. Returns the notifier to ring after
    /// the lock is released, when the device wants a notification.
    #[inline]
    pub fn submit(
        &mut self,
        request: Srb,
        built: &BuiltRequest,
    ) -> Result<Option<QueueNotifier>, SubmitError> {
        let Some(ring) = self.ring.as_mut() else {
            return Err(SubmitError::Full(request));
        };
        if ring.is_broken() {
            return Err(SubmitError::Broken(request));
        }
        let pushed = if self.indirect && !ring.is_packed() {
            ring.push_indirect(built.table_address, built.table_len)
        } else {
            // The rarer layouts read the request's table again, through its area.
            let Some(area) = area_of(&request) else {
                return Err(SubmitError::Broken(request));
            };
            if !self.indirect {
                ring.push_chain(area.descriptors(built))
            } else if area.repack_table(built) {
                // A packed ring's indirect table has the packed layout (VIRTIO 1.2 2.8.7).
                ring.push_indirect(built.table_address, built.table_len)
            } else {
                return Err(SubmitError::Broken(request));
            }
        };
        let Ok(id) = pushed else {
            return Err(SubmitError::Full(request));
        };
        // The ring handed out an id outside the slot table or one still in use: the ring's
        // own bookkeeping forbids both, so this is unreachable; refuse rather than lose a
        // request.
        if let Err(request) = self.slots.insert(usize::from(id), request) {
            return Err(SubmitError::Broken(request));
        }
        ring.publish();
        Ok(if ring.needs_notify() {
            self.notifier
        } else {
            None
        })
    }

    /// Moves completed requests into `batch` until the ring is empty (then re-enables the
    /// interrupt, checking once more for the completion that raced it) or the batch is full.
    #[inline]
    pub fn drain(&mut self, batch: &mut Batch) -> Drained {
        let Some(ring) = self.ring.as_mut() else {
            return Drained::Idle;
        };
        // A ring broken earlier (by the start-up GET_ID poll, or by a drain on another CPU whose
        // reset has not run yet) yields nothing more: say so every time, never "pending".
        if let Some(error) = ring.error() {
            return Drained::Broken(error);
        }
        loop {
            while !batch.is_full() {
                match ring.pop_used() {
                    Some(Ok(UsedElem { id, len })) => {
                        if self.internal == Some(id) {
                            // The start-up GET_ID, answered after HwStorInitialize stopped
                            // polling: the caller reads the answer after the lock.
                            self.internal = None;
                            batch.internal = true;
                        } else if let Some(request) = self.slots.take(usize::from(id)) {
                            batch.push(request, len);
                        }
                        // The ring validated the id as in flight, and every id in flight is
                        // either a slot's or the internal request's: there is no third case.
                    }
                    Some(Err(error)) => return Drained::Broken(error),
                    None => break,
                }
            }
            // VIRTIO 1.2 2.7.10: re-enable, then look again, or a completion that arrived in
            // between would wait for an interrupt that is not coming.
            let pending = ring.enable_interrupts();
            if let Some(error) = ring.error() {
                return Drained::Broken(error);
            }
            if !pending {
                // Also when the batch is exactly full: the ring is empty, so the caller need
                // not take the lock again just to find that out.
                return Drained::Idle;
            }
            if batch.is_full() {
                // With event idx, used_event now names an element the device already wrote,
                // so this asks for no extra interrupt.
                return Drained::More;
            }
        }
    }

    /// Moves up to a batch of in-flight requests out (reset: the device no longer runs).
    /// Returns whether any are left.
    pub fn cancel(&mut self, batch: &mut Batch) -> bool {
        for index in 0..SLOTS {
            if batch.is_full() {
                return true;
            }
            if let Some(request) = self.slots.take(index) {
                batch.push(request, 0);
            }
        }
        false
    }

    /// Forgets the ring's progress after a device reset: indices back to 0, memory zeroed.
    pub fn reset_ring(&mut self) {
        if let Some(ring) = self.ring.as_mut() {
            ring.reset();
        }
        // A reset device answers nothing it held: an unanswered GET_ID is forgotten.
        self.internal = None;
    }

    /// Forgets the ring state if the device was re-initialised over zeroed rings since this
    /// queue last ran (adapter restart; nothing is in flight then).
    #[inline]
    pub fn sync_epoch(&mut self, epoch: u32) {
        if self.epoch != epoch {
            self.epoch = epoch;
            self.reset_ring();
        }
    }

    /// Puts a request of the driver's own on the ring (GET_ID at start) and always asks for a
    /// notification. Its completion is found with [`Queue::poll_internal`].
    pub fn submit_internal(
        &mut self,
        area: &RequestArea,
        built: &BuiltRequest,
    ) -> Option<QueueNotifier> {
        let ring = self.ring.as_mut()?;
        // As for any request: an indirect table only when the device accepted them
        // (VIRTIO 1.2 2.7.5.3.1), else the table's descriptors as a chain on the ring.
        let pushed = if self.indirect {
            if ring.is_packed() && !area.repack_table(built) {
                return None;
            }
            ring.push_indirect(built.table_address, built.table_len)
        } else {
            ring.push_chain(area.descriptors(built))
        };
        let id = pushed.ok()?;
        ring.publish();
        let _ = ring.needs_notify();
        self.internal = Some(id);
        self.notifier
    }

    /// Whether the queue's ring is broken (the device broke the used ring's rules).
    pub fn is_broken(&self) -> bool {
        self.ring.as_ref().is_some_and(Virtqueue::is_broken)
    }

    /// Whether the driver's own request completed (the one used element, naming it).
    pub fn poll_internal(&mut self) -> bool {
        let Some(ring) = self.ring.as_mut() else {
            return false;
        };
        match ring.pop_used() {
            Some(Ok(used)) => {
                let ours = self.internal == Some(used.id);
                self.internal = None;
                // Move the interrupt threshold (used_event) past what was just polled: left at
                // 0, the device would never interrupt for this queue's next completions
                // (VIRTIO 1.2 2.7.7.2), and the first requests on it would wait for Storport's
                // timeout. Nothing else is in flight during HwStorInitialize.
                if ring.enable_interrupts() {
                    // More than one element for the one request in flight: a duplicate or an
                    // invented completion. Taking it breaks the ring (the id is no longer in
                    // flight), which the caller sees and repairs before any request uses it.
                    let _ = ring.pop_used();
                }
                ours
            }
            _ => false,
        }
    }

    /// Puts the FLUSH that completes a FUA write on the ring, in the same request area.
    pub fn resubmit_flush(
        &mut self,
        request: Srb,
        builder: Option<&RequestBuilder>,
    ) -> Option<QueueNotifier> {
        let area = area_of(&request);
        // The write's underrun (a buffer larger than its transfer) carries over to the FLUSH.
        let underrun = area
            .as_ref()
            .and_then(RequestArea::load_private)
            .is_some_and(super::request::recorded_underrun);
        let built = area.and_then(|area| {
            let built = builder.and_then(|b| b.build_flush(&area).ok())?;
            // What the FLUSH's completion reads back (operation, underrun, `max_written`).
            Extension { area }.record(&Prepared {
                built,
                op: Op::Flush,
                underrun,
            });
            Some(built)
        });
        let Some(built) = built else {
            // No FLUSH on this device: the write is as durable as it gets.
            let _ = request.complete(if underrun {
                SrbStatus::DataOverrun
            } else {
                SrbStatus::Success
            });
            return None;
        };
        match self.submit(request, &built) {
            Ok(notifier) => notifier,
            // The data is written but not yet durable: have Storport send the write again.
            Err(
                SubmitError::Full(request)
                | SubmitError::Broken(request)
                | SubmitError::Resetting(request),
            ) => {
                let _ = request.complete(SrbStatus::Busy);
                None
            }
        }
    }
}
