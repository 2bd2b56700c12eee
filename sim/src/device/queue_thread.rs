//! One I/O thread per virtqueue: the loop every ring shares, and the split ring's part of it,
//! over rust-vmm `virtio-queue` (the packed ring's is in `packed_thread`).
//!
//! A thread sleeps on its [`QueueControl`] condition variable until the driver rings the
//! queue's doorbell (or the device stops it), then drains the available ring: it disables
//! notifications, takes chains until none is left, and re-enables notifications, going round
//! again if the driver added a chain meanwhile (`enable_notification` answers true) — the
//! pattern that loses no kick. After each used entry it asks `needs_notification` (event idx,
//! VIRTIO 1.2 2.7.10) or the avail ring's NO_INTERRUPT flag whether to interrupt. A protocol
//! error stops the thread's processing and sets DEVICE_NEEDS_RESET; the thread then waits to
//! be stopped by the reset. What differs between a split and a packed ring (taking a buffer,
//! writing its used element and the lie a fault tells there, notification suppression) is the
//! [`DeviceRing`] trait; waking, faults, holding a request, running it against the disk,
//! counting and interrupting are written once, here.

use std::num::Wrapping;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;

use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};

use super::blk::{self, ChainError, Kind, Segments, req_status};
use super::fault::FaultMode;
use super::model::Shared;

/// Wakes and stops one queue thread.
#[derive(Default)]
pub struct QueueControl {
    state: Mutex<Wake>,
    cv: Condvar,
}

#[derive(Default)]
struct Wake {
    kicked: bool,
    stop: bool,
}

impl QueueControl {
    /// The driver rang the doorbell.
    pub fn kick(&self) {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .kicked = true;
        storport_sim::sched::notify(self.key());
        self.cv.notify_one();
    }

    /// Asks the thread to stop.
    pub fn stop(&self) {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .stop = true;
        storport_sim::sched::notify(self.key());
        self.cv.notify_one();
    }

    /// What a deterministic scheduler's waiters name this control by.
    fn key(&self) -> usize {
        self as *const Self as usize
    }

    /// Clears both flags (before a thread starts).
    pub fn rearm(&self) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        s.kicked = false;
        s.stop = false;
    }

    /// Waits for a kick; false when asked to stop.
    pub(super) fn wait(&self) -> bool {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        while !s.kicked && !s.stop {
            if storport_sim::sched::active() {
                drop(s);
                storport_sim::sched::wait_on(self.key(), None);
                s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            } else {
                s = self.cv.wait(s).unwrap_or_else(PoisonError::into_inner);
            }
        }
        s.kicked = false;
        !s.stop
    }

    pub(super) fn stopping(&self) -> bool {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .stop
    }
}

/// Live counters of one queue.
#[derive(Default)]
pub struct QueueStats {
    reads: AtomicU64,
    writes: AtomicU64,
    flushes: AtomicU64,
    get_ids: AtomicU64,
    discards: AtomicU64,
    write_zeroes: AtomicU64,
    other: AtomicU64,
    errors: AtomicU64,
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
    notifications: AtomicU64,
    pub(super) interrupts: AtomicU64,
    pub(super) suppressed: AtomicU64,
    pub(super) served: AtomicU64,
}

/// A snapshot of one queue's counters, for the simulator's report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueCounters {
    /// IN requests.
    pub reads: u64,
    /// OUT requests.
    pub writes: u64,
    /// FLUSH requests.
    pub flushes: u64,
    /// GET_ID requests.
    pub get_ids: u64,
    /// DISCARD requests.
    pub discards: u64,
    /// WRITE_ZEROES requests.
    pub write_zeroes: u64,
    /// Requests of other (unsupported) types.
    pub other: u64,
    /// Requests completed with a status other than OK.
    pub errors: u64,
    /// Bytes read from the disk into guest memory.
    pub bytes_read: u64,
    /// Bytes written from guest memory to the disk.
    pub bytes_written: u64,
    /// Doorbell writes received.
    pub notifications: u64,
    /// Interrupts signalled (messages sent or left pending by a mask).
    pub interrupts: u64,
    /// Completions for which notification suppression said no interrupt was needed.
    pub suppressed: u64,
    /// Chains the device took off the available ring and is done with: completed (used entry
    /// and interrupt, if any, written), lost by a fault, or refused as malformed.
    pub served: u64,
}

impl QueueStats {
    /// Counts a doorbell write.
    pub fn notified(&self) {
        self.notifications.fetch_add(1, Ordering::Relaxed);
    }

    /// A snapshot.
    pub fn snapshot(&self) -> QueueCounters {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        QueueCounters {
            reads: g(&self.reads),
            writes: g(&self.writes),
            flushes: g(&self.flushes),
            get_ids: g(&self.get_ids),
            discards: g(&self.discards),
            write_zeroes: g(&self.write_zeroes),
            other: g(&self.other),
            errors: g(&self.errors),
            bytes_read: g(&self.bytes_read),
            bytes_written: g(&self.bytes_written),
            notifications: g(&self.notifications),
            interrupts: g(&self.interrupts),
            suppressed: g(&self.suppressed),
            served: g(&self.served),
        }
    }

    pub(super) fn count(&self, outcome: &blk::Outcome) {
        let c = match outcome.kind {
            Kind::Read => &self.reads,
            Kind::Write => &self.writes,
            Kind::Flush => &self.flushes,
            Kind::GetId => &self.get_ids,
            Kind::Discard => &self.discards,
            Kind::WriteZeroes => &self.write_zeroes,
            Kind::Other => &self.other,
        };
        c.fetch_add(1, Ordering::Relaxed);
        if outcome.status != req_status::OK {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        match outcome.kind {
            Kind::Read => self
                .bytes_read
                .fetch_add(outcome.data_bytes, Ordering::Relaxed),
            Kind::Write => self
                .bytes_written
                .fetch_add(outcome.data_bytes, Ordering::Relaxed),
            _ => 0,
        };
    }
}

/// A protocol error: the device stops serving the queue.
pub(super) struct Broken;

/// What a queue thread needs of its ring, split or packed.
pub(super) trait DeviceRing: Send + 'static {
    /// A buffer taken off the ring, before its segments are collected.
    type Chain<'m>;
    /// What completing a buffer needs once its segments are collected.
    type Taken;
    /// The thread's name, before the queue's index.
    const THREAD_NAME: &'static str;

    /// Asks the driver for no doorbell while the thread is draining.
    fn disable_notification(&mut self, mem: &GuestMemoryMmap) -> Result<(), Broken>;
    /// Asks for doorbells again; true when a buffer was made available meanwhile.
    fn enable_notification(&mut self, mem: &GuestMemoryMmap) -> Result<bool, Broken>;
    /// The next available buffer, if any.
    fn next_chain<'m>(
        &mut self,
        mem: &'m GuestMemoryMmap,
    ) -> Result<Option<Self::Chain<'m>>, Broken>;
    /// Collects the buffer's segments into `segs`: its length in bytes, and what completing it
    /// needs.
    fn collect(
        chain: Self::Chain<'_>,
        segs: &mut Segments,
        mem: &GuestMemoryMmap,
    ) -> Result<(u64, Self::Taken), ChainError>;
    /// Writes the used element for `taken`, with the lie `fault` tells on this kind of ring.
    fn complete(
        &mut self,
        shared: &Shared,
        taken: &Self::Taken,
        chain_len: u64,
        used_len: u32,
        fault: FaultMode,
    ) -> Result<(), Broken>;
    /// Whether the driver wants an interrupt for what was just used.
    fn wants_interrupt(&mut self, mem: &GuestMemoryMmap) -> Result<bool, Broken>;
}

/// Starts the thread serving queue `index` on `ring`.
pub(super) fn spawn<R: DeviceRing>(
    shared: Arc<Shared>,
    index: u16,
    ring: R,
) -> std::io::Result<JoinHandle<()>> {
    storport_sim::sched::spawn(format!("{}{index}", R::THREAD_NAME), move || {
        run(&shared, index, ring)
    })
}

fn run<R: DeviceRing>(shared: &Shared, index: u16, mut ring: R) {
    let ctl = &shared.queue_ctl[usize::from(index)];
    let mut segs = Segments::default();
    // Serve whatever is already there, then wait for doorbells.
    loop {
        if !shared.is_broken()
            && shared.dma_allowed()
            && drain(shared, index, &mut ring, &mut segs).is_err()
        {
            shared.set_needs_reset();
        }
        if !ctl.wait() {
            return;
        }
    }
}

fn drain<R: DeviceRing>(
    shared: &Shared,
    index: u16,
    ring: &mut R,
    segs: &mut Segments,
) -> Result<(), Broken> {
    let mem = &*shared.mem;
    let ctl = &shared.queue_ctl[usize::from(index)];
    loop {
        ring.disable_notification(mem)?;
        loop {
            if shared.is_broken() || ctl.stopping() || !shared.dma_allowed() {
                return Ok(());
            }
            let Some(chain) = ring.next_chain(mem)? else {
                break;
            };
            storport_sim::sched::switch("device step");
            let served = serve(shared, index, ring, chain, segs);
            shared.queue_stats[usize::from(index)]
                .served
                .fetch_add(1, Ordering::Relaxed);
            shared.events.notify();
            served?;
        }
        if !ring.enable_notification(mem)? {
            return Ok(());
        }
    }
}

fn serve<R: DeviceRing>(
    shared: &Shared,
    index: u16,
    ring: &mut R,
    chain: R::Chain<'_>,
    segs: &mut Segments,
) -> Result<(), Broken> {
    let (chain_len, taken) = match R::collect(chain, segs, &shared.mem) {
        Ok(collected) => collected,
        Err(ChainError::Malformed | ChainError::NoStatus) => return Err(Broken),
    };
    let fault = shared.fault.next_request(index);
    if fault != FaultMode::None {
        // Tests wait for a fault to fire (`VirtioBlkDevice::wait_until`).
        shared.events.notify();
    }
    if fault == FaultMode::NeedsReset {
        return Err(Broken);
    }
    if fault == FaultMode::Slow {
        // Held, in short slices so that a reset (which joins this thread) is not held up.
        let until = storport_sim::sched::now() + shared.slow_time();
        while storport_sim::sched::now() < until {
            if stopping(shared, index) {
                // Reset while held: the request is dropped with the rest of the device's state.
                shared.holds_ended.fetch_add(1, Ordering::AcqRel);
                return Ok(());
            }
            storport_sim::sched::sleep(std::time::Duration::from_millis(1));
        }
    }
    let outcome = serve_now(shared, index, ring, &taken, chain_len, fault, segs);
    if fault == FaultMode::Slow {
        shared.holds_ended.fetch_add(1, Ordering::AcqRel);
    }
    outcome
}

fn serve_now<R: DeviceRing>(
    shared: &Shared,
    index: u16,
    ring: &mut R,
    taken: &R::Taken,
    chain_len: u64,
    fault: FaultMode,
    segs: &mut Segments,
) -> Result<(), Broken> {
    let mem = &*shared.mem;
    let stats = &shared.queue_stats[usize::from(index)];
    // Bus mastering off (or the device gone): its memory accesses fail, and the request with
    // them (QEMU drops a disabled function's DMA).
    if !shared.dma_allowed() {
        return Ok(());
    }
    // Every device-writable byte of the buffer is about to be written (data in, status): report
    // it if the request was already completed (virtio-win #1326).
    for (addr, len) in segs.writable() {
        shared.watch.device_write(addr, len as usize);
    }
    let ctx = shared.blk_context();
    let outcome = blk::execute(&ctx, segs);
    stats.count(&outcome);
    if fault == FaultMode::LostRequest {
        return Ok(());
    }
    let status = fault.status(outcome.status);
    mem.write_obj(status, outcome.status_addr)
        .map_err(|_| Broken)?;
    ring.complete(shared, taken, chain_len, outcome.used_len, fault)?;
    // A faulty completion always interrupts, so the driver sees it at once.
    let wanted = fault != FaultMode::None || ring.wants_interrupt(mem)?;
    if wanted {
        stats.interrupts.fetch_add(1, Ordering::Relaxed);
        shared.signal_queue(index);
    } else {
        stats.suppressed.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

/// Whether the thread is asked to stop (or the device is gone).
fn stopping(shared: &Shared, index: u16) -> bool {
    shared
        .queue_ctl
        .get(usize::from(index))
        .is_none_or(QueueControl::stopping)
        || shared.is_removed()
}

/// The split ring (VIRTIO 1.2 2.7), over rust-vmm `virtio-queue`.
impl DeviceRing for Queue {
    type Chain<'m> = virtio_queue::DescriptorChain<&'m GuestMemoryMmap>;
    /// The chain's head index.
    type Taken = u16;
    const THREAD_NAME: &'static str = "virtio-blk-q";

    fn disable_notification(&mut self, mem: &GuestMemoryMmap) -> Result<(), Broken> {
        QueueT::disable_notification(self, mem).map_err(|_| Broken)
    }

    fn enable_notification(&mut self, mem: &GuestMemoryMmap) -> Result<bool, Broken> {
        QueueT::enable_notification(self, mem).map_err(|_| Broken)
    }

    fn next_chain<'m>(
        &mut self,
        mem: &'m GuestMemoryMmap,
    ) -> Result<Option<Self::Chain<'m>>, Broken> {
        // `iter` checks that avail.idx moved by at most the queue size
        // (InvalidAvailRingIndex); `pop_descriptor_chain` would hide that error.
        Ok(self.iter(mem).map_err(|_| Broken)?.next())
    }

    fn collect(
        chain: Self::Chain<'_>,
        segs: &mut Segments,
        mem: &GuestMemoryMmap,
    ) -> Result<(u64, u16), ChainError> {
        let head = chain.head_index();
        Ok((segs.collect(chain, mem)?, head))
    }

    fn complete(
        &mut self,
        shared: &Shared,
        &head: &u16,
        chain_len: u64,
        used_len: u32,
        fault: FaultMode,
    ) -> Result<(), Broken> {
        let mem = &*shared.mem;
        let size = self.size();
        match fault {
            FaultMode::UsedIdOutOfRange => {
                // virtio-queue refuses to write a bad id, so write the element by hand.
                let slot = u64::from(self.next_used() % size);
                let elem = GuestAddress(self.used_ring()).unchecked_add(4 + slot * 8);
                mem.write_obj(u32::from(size) + 7, elem)
                    .map_err(|_| Broken)?;
                mem.write_obj(used_len, elem.unchecked_add(4))
                    .map_err(|_| Broken)?;
                let next = self.next_used().wrapping_add(1);
                publish_used_idx(mem, self, next)
            }
            FaultMode::UsedLenTooLarge => {
                let len = u32::try_from(chain_len + 4096).unwrap_or(u32::MAX);
                self.add_used(mem, head, len).map_err(|_| Broken)
            }
            FaultMode::UsedLenZero => self.add_used(mem, head, 0).map_err(|_| Broken),
            FaultMode::DuplicateUsedId => {
                self.add_used(mem, head, used_len).map_err(|_| Broken)?;
                self.add_used(mem, head, used_len).map_err(|_| Broken)
            }
            FaultMode::UsedIdxJump => {
                self.add_used(mem, head, used_len).map_err(|_| Broken)?;
                let next = (Wrapping(self.next_used()) + Wrapping(size) + Wrapping(1)).0;
                publish_used_idx(mem, self, next)
            }
            _ => self.add_used(mem, head, used_len).map_err(|_| Broken),
        }
    }

    fn wants_interrupt(&mut self, mem: &GuestMemoryMmap) -> Result<bool, Broken> {
        if self.event_idx_enabled() {
            return self.needs_notification(mem).map_err(|_| Broken);
        }
        // virtio-queue ignores VRING_AVAIL_F_NO_INTERRUPT; honour it (VIRTIO 1.2 2.7.7).
        std::sync::atomic::fence(Ordering::SeqCst);
        let flags: u16 = mem
            .load(GuestAddress(self.avail_ring()), Ordering::Relaxed)
            .map_err(|_| Broken)?;
        Ok(u16::from_le(flags) & 1 == 0)
    }
}

fn publish_used_idx(mem: &GuestMemoryMmap, queue: &mut Queue, next: u16) -> Result<(), Broken> {
    queue.set_next_used(next);
    mem.store(
        next.to_le(),
        GuestAddress(queue.used_ring()).unchecked_add(2),
        Ordering::Release,
    )
    .map_err(|_| Broken)
}
