//! One I/O thread per packed virtqueue (VIRTIO 1.2 2.8), the packed counterpart of
//! `queue_thread` (which serves split rings over rust-vmm `virtio-queue`).
//!
//! The same pattern: sleep until a doorbell, then take buffers with notifications disabled
//! until none is left, re-enable them and go round again if a buffer slipped in meanwhile;
//! after each used buffer ask the driver area whether to interrupt. A protocol error sets
//! DEVICE_NEEDS_RESET. Of the fault modes, NeedsReset, LostRequest and BadStatus apply to
//! packed rings as they are; the split ring's used-ring lies (UsedIdOutOfRange, UsedLenTooLarge,
//! UsedIdxJump) become the packed ring's own: an id past the queue size, a length past the
//! buffer, and a used descriptor written with the previous lap's wrap pattern. `Slow` holds a
//! request as on a split ring. Bus Master Enable and surprise removal are honoured as there: a
//! device whose DMA is cut (or that is gone) takes no buffer and writes nothing, and every
//! device write into a buffer is reported to the [`super::model`]'s watch first, so a write
//! into a request the driver already completed is seen (virtio-win #1326).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;

use vm_memory::Bytes;

use super::blk::{self, ChainError, Segments};
use super::fault::FaultMode;
use super::model::Shared;
use super::packed::{Chain, PackedRing, RingMemory};

/// Starts the thread serving packed queue `index`.
pub fn spawn(shared: Arc<Shared>, index: u16, ring: PackedRing) -> std::io::Result<JoinHandle<()>> {
    storport_sim::sched::spawn(format!("virtio-blk-pq{index}"), move || {
        run(&shared, index, ring)
    })
}

/// A protocol error: the device stops serving the queue.
struct Broken;

fn run(shared: &Shared, index: u16, mut ring: PackedRing) {
    let ctl = &shared.queue_ctl[usize::from(index)];
    let mut segs = Segments::default();
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

fn drain(
    shared: &Shared,
    index: u16,
    ring: &mut PackedRing,
    segs: &mut Segments,
) -> Result<(), Broken> {
    let mem = &*shared.mem;
    let ctl = &shared.queue_ctl[usize::from(index)];
    loop {
        ring.disable_notification(mem).map_err(|_| Broken)?;
        loop {
            if shared.is_broken() || ctl.stopping() || !shared.dma_allowed() {
                return Ok(());
            }
            let Some(chain) = ring.pop(mem).map_err(|_| Broken)? else {
                break;
            };
            storport_sim::sched::switch("device step");
            let served = serve(shared, index, ring, &chain, segs);
            shared.queue_stats[usize::from(index)]
                .served
                .fetch_add(1, Ordering::Relaxed);
            shared.events.notify();
            served?;
        }
        if !ring.enable_notification(mem).map_err(|_| Broken)? {
            return Ok(());
        }
    }
}

fn serve(
    shared: &Shared,
    index: u16,
    ring: &mut PackedRing,
    chain: &Chain,
    segs: &mut Segments,
) -> Result<(), Broken> {
    let mem = &*shared.mem;
    let chain_len = match segs.collect_elements(&chain.elements, mem) {
        Ok(len) => len,
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
    let outcome = serve_now(shared, index, ring, chain, chain_len, fault, segs);
    if fault == FaultMode::Slow {
        shared.holds_ended.fetch_add(1, Ordering::AcqRel);
    }
    outcome
}

fn stopping(shared: &Shared, index: u16) -> bool {
    shared
        .queue_ctl
        .get(usize::from(index))
        .is_none_or(super::queue_thread::QueueControl::stopping)
        || shared.is_removed()
}

fn serve_now(
    shared: &Shared,
    index: u16,
    ring: &mut PackedRing,
    chain: &Chain,
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
    // it if the request was already completed.
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
    let (id, len) = match fault {
        FaultMode::UsedIdOutOfRange => (ring.size().saturating_add(7), outcome.used_len),
        FaultMode::UsedLenTooLarge => (
            chain.id,
            u32::try_from(chain_len + 4096).unwrap_or(u32::MAX),
        ),
        _ => (chain.id, outcome.used_len),
    };
    if id == chain.id && fault != FaultMode::UsedIdxJump {
        ring.add_used(mem, id, len).map_err(|_| Broken)?;
    } else {
        // A lie the ring's own bookkeeping refuses to write: write the descriptor by hand at
        // the next used position (an unknown id, or the previous lap's wrap pattern).
        let (position, wrap) = ring.next_used();
        let both = super::packed::desc_flags::AVAIL | super::packed::desc_flags::USED;
        let (current, previous) = if wrap { (both, 0) } else { (0, both) };
        let flags = if fault == FaultMode::UsedIdxJump {
            previous
        } else {
            current
        };
        let word = u64::from(len) | u64::from(id) << 32 | u64::from(flags) << 48;
        mem.store_u64(ring.slot_address(position) + 8, word, Ordering::Release)
            .ok_or(Broken)?;
        // The next buffer goes to the next position, as the split ring's used index moves on.
        ring.retire_by_hand(chain.id).map_err(|_| Broken)?;
    }
    let wanted = fault != FaultMode::None || ring.needs_notification(mem).map_err(|_| Broken)?;
    if wanted {
        stats.interrupts.fetch_add(1, Ordering::Relaxed);
        shared.signal_queue(index);
    } else {
        stats.suppressed.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}
