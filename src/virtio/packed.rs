//! The packed virtqueue, driver side (VIRTIO 1.2 2.8).
//!
//! A packed virtqueue is one ring of descriptors that both sides write, plus two small event
//! suppression structures:
//!
//! | area | C | alignment (2.8.10.1) | written by |
//! |---|---|---|---|
//! | descriptor ring | `struct pvirtq_desc[N]` (`addr, len, id, flags`) | 16 | driver (available), device (used) |
//! | driver area | `struct pvirtq_event_suppress` (`desc_event_off_wrap, desc_event_flags`) | 4 | driver |
//! | device area | `struct pvirtq_event_suppress` | 4 | device |
//!
//! The driver makes a buffer available by writing its descriptors at the next ring positions
//! with `AVAIL` equal to its Driver Ring Wrap Counter and `USED` its inverse (2.8.1, 2.8.6); the
//! counter flips each time the position passes the end of the ring. The head's flags are
//! written last, with a release store, so the device never sees half a chain (2.8.6: the first
//! descriptor of a list is made available only after the rest of the list). A buffer is
//! therefore visible to the device as soon as it is pushed; there is no separate index to
//! publish.
//!
//! The device marks a buffer used by writing one descriptor, with the buffer's id, the length
//! it wrote and `AVAIL == USED ==` its Device Ring Wrap Counter, at its next used position, and
//! then moves on by as many positions as the buffer's chain took (2.8.6). The driver
//! reads the descriptor at its own next used position with an acquire load: it is used when
//! both bits equal the driver's used wrap counter.
//!
//! Buffer ids are the driver's (2.8.6: the device returns the Buffer ID the driver chose);
//! here they come from a private free list of `size` ids, and each id in flight remembers how
//! many ring positions its chain took and how many bytes of it the device may write. The
//! driver's bookkeeping never lives in device-visible memory.
//!
//! Indirect descriptors (2.8.7): one ring descriptor with `VIRTQ_DESC_F_INDIRECT` points at a
//! table of `struct pvirtq_desc` laid out in order (no `next` links: the table's length gives
//! their number, and `NEXT` must not be set there); [`IndirectTable`] writes such a table.
//!
//! Event suppression (2.8.10): the driver asks for or refuses interrupts in the driver area
//! (`ENABLE`, `DISABLE`, or with VIRTIO_F_EVENT_IDX `DESC`: interrupt when the used descriptor
//! at an offset/wrap is written), and reads the device area to decide whether the device must be
//! notified of new buffers (the same three modes, for available descriptors).
//!
//! The ring is written by an untrusted device. [`PackedQueue::pop_used`] validates what it reads:
//! the descriptor at the next used position must be either still available (the pattern the
//! driver wrote) or used in the current lap, never the previous lap's pattern or the inverse of
//! the driver's; the id must be below the queue size and name a buffer in flight (an invented id
//! or a second completion of the same buffer is an error). A violation is an error once, then the
//! queue is broken and yields nothing more until [`PackedQueue::reset`]: never a panic, an
//! out-of-bounds access or a loop that does not end. The used length is passed on for the caller
//! to check against what the request could hold, as on the split ring ([`UsedElem::len`]): the
//! caller knows that bound, and keeping it here would double the id table (the queue must stay
//! small enough to be built in one stack page). Every operation is O(1) except [`PackedQueue::push_chain`],
//! linear in the chain it writes, and [`PackedQueue::in_flight`], O(size).

#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_possible_truncation
)]

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};

use storport::dma::DmaRegion;

use super::ring::{
    Descriptor, LayoutError, MAX_QUEUE_SIZE, PushError, QueueAddresses, QueueSize, UsedElem,
    need_event,
};

/// `struct pvirtq_desc` flags (2.8.1, 2.8.6, 2.8.14).
mod desc_flags {
    /// VIRTQ_DESC_F_NEXT: the buffer continues in the next ring position.
    pub(super) const NEXT: u16 = 1;
    /// VIRTQ_DESC_F_WRITE: the element is device-writable.
    pub(super) const WRITE: u16 = 2;
    /// VIRTQ_DESC_F_INDIRECT: the element is a table of descriptors.
    pub(super) const INDIRECT: u16 = 4;
    /// VIRTQ_DESC_F_AVAIL (bit 7).
    pub(super) const AVAIL: u16 = 1 << 7;
    /// VIRTQ_DESC_F_USED (bit 15).
    pub(super) const USED: u16 = 1 << 15;
}

/// `struct pvirtq_event_suppress` values (2.8.10).
mod event {
    /// RING_EVENT_FLAGS_ENABLE: notify on every event.
    pub(super) const ENABLE: u16 = 0;
    /// RING_EVENT_FLAGS_DISABLE: do not notify.
    pub(super) const DISABLE: u16 = 1;
    /// RING_EVENT_FLAGS_DESC: notify when the descriptor at `desc_event_off_wrap` is reached
    /// (only with VIRTIO_F_EVENT_IDX).
    pub(super) const DESC: u16 = 2;
    /// The wrap counter bit of `desc_event_off_wrap`; bits 0-14 are the offset.
    pub(super) const WRAP: u16 = 1 << 15;
}

/// Size of `struct pvirtq_desc`.
const DESCRIPTOR_SIZE: usize = 16;
/// The same, as a table length.
const DESCRIPTOR_BYTES: u32 = 16;

/// Cache-line size: the device area gets a line of its own.
const CACHE_LINE: usize = 64;

/// "No id" in the free list.
const NONE: u16 = u16::MAX;

/// Byte offsets of the three areas for one queue size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Layout {
    /// The descriptor ring's length (it starts at 0).
    ring: usize,
    /// The driver area (4 bytes), on the cache line after the ring.
    driver: usize,
    /// The device area (4 bytes), on the next cache line.
    device: usize,
    total: usize,
}

impl Layout {
    fn new(size: QueueSize) -> Self {
        // size <= MAX_QUEUE_SIZE (128): 2 KiB of ring, far from any overflow.
        let ring = usize::from(size.get()).saturating_mul(DESCRIPTOR_SIZE);
        let driver = ring.div_ceil(CACHE_LINE).saturating_mul(CACHE_LINE);
        let device = driver.saturating_add(CACHE_LINE);
        Self {
            ring,
            driver,
            device,
            total: device.saturating_add(CACHE_LINE),
        }
    }
}

/// The device broke the packed ring's rules; the queue is unusable until reset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PackedRingError {
    /// The descriptor at the driver's next used position has a wrap pattern that is neither
    /// "available in this lap" nor "used in this lap" (2.8.1, 2.8.2: a used descriptor has
    /// AVAIL and USED both equal to the device's wrap counter, which equals the driver's used
    /// wrap counter at that position).
    WrapMismatch {
        /// The ring position.
        position: u16,
        /// The flags read.
        flags: u16,
    },
    /// A used id is not below the queue size (ids are the driver's, all below it).
    IdOutOfRange {
        /// The id read.
        id: u16,
    },
    /// A used id names no buffer in flight: invented, or the same buffer completed twice.
    UnknownId {
        /// The id read.
        id: u16,
    },
}

/// The driver's bookkeeping for one buffer id.
#[derive(Clone, Copy, Debug)]
struct IdSlot {
    /// Next id on the free list.
    next: u16,
    /// Ring positions the buffer takes while in flight; 0 when the id is free.
    count: u16,
}

const FREE_ID: IdSlot = IdSlot {
    next: NONE,
    count: 0,
};

/// The driver side of one packed virtqueue.
///
/// # Invariants
///
/// - `ring`, `driver` and `device` are the areas of `Layout::new(size)` in one region whose bus
///   address is 16-aligned and virtual address 8-aligned: `ring.u64s()` holds `2 * size` words,
///   `driver.u32s()` and `device.u32s()` at least one.
/// - The ids free list starts at `free_id`, follows `ids[i].next`, and holds exactly
///   `size - in_flight` ids, each with `count == 0`; every other id below `size` is in flight
///   with `count >= 1`, and the counts of the ids in flight sum to `in_ring <= size`.
/// - `next_avail` and `last_used` are positions below `size`; walking `in_ring` positions from
///   (`last_used`, `used_wrap`) reaches (`next_avail`, `avail_wrap`).
/// - `broken` holds the rule the device broke, once it did; nothing more is taken from the ring.
#[derive(Debug)]
pub struct PackedQueue {
    ring: DmaRegion<'static>,
    driver: DmaRegion<'static>,
    device: DmaRegion<'static>,
    size: QueueSize,
    event_idx: bool,
    ids: [IdSlot; MAX_QUEUE_SIZE as usize],
    free_id: u16,
    in_flight: u16,
    in_ring: u16,
    next_avail: u16,
    avail_wrap: bool,
    last_used: u16,
    used_wrap: bool,
    /// Descriptors made available since the device was last considered for a notification.
    added: u16,
    broken: Option<PackedRingError>,
}

impl PackedQueue {
    /// Bytes of DMA memory a packed queue of `size` needs (a multiple of 64).
    pub fn memory_size(size: QueueSize) -> usize {
        Layout::new(size).total
    }

    /// Places a packed queue of `size` in `memory` (which it zeroes), using `DESC` event
    /// suppression if VIRTIO_F_EVENT_IDX was negotiated.
    ///
    /// `memory` must be 16-aligned (bus address; 2.8.10.1: the descriptor ring's alignment) and
    /// 8-aligned (virtual address); 64-aligned keeps the device area on its own cache line.
    pub fn new(
        memory: DmaRegion<'static>,
        size: QueueSize,
        event_idx: bool,
    ) -> Result<Self, LayoutError> {
        let layout = Layout::new(size);
        if memory.len() < layout.total {
            return Err(LayoutError::TooSmall {
                needed: layout.total,
            });
        }
        if !memory.physical_address().is_multiple_of(16) {
            return Err(LayoutError::Misaligned);
        }
        let region = |offset, len| memory.subregion(offset, len).ok_or(LayoutError::Misaligned);
        let ring = region(0, layout.ring)?;
        let driver = region(layout.driver, 4)?;
        let device = region(layout.device, 4)?;
        let two = usize::from(size.get()).saturating_mul(2);
        if ring.u64s().is_none_or(|w| w.len() < two)
            || driver.u32s().is_none_or(<[AtomicU32]>::is_empty)
            || device.u32s().is_none_or(<[AtomicU32]>::is_empty)
        {
            return Err(LayoutError::Misaligned);
        }
        let mut queue = Self {
            ring,
            driver,
            device,
            size,
            event_idx,
            ids: [FREE_ID; MAX_QUEUE_SIZE as usize],
            free_id: 0,
            in_flight: 0,
            in_ring: 0,
            next_avail: 0,
            avail_wrap: true,
            last_used: 0,
            used_wrap: true,
            added: 0,
            broken: None,
        };
        queue.reset();
        Ok(queue)
    }

    /// Returns the queue to its initial state: zeroed memory, every id free, both wrap counters
    /// 1 (2.8.1), nothing in flight. Call it only after the device was reset (or before it was
    /// told the addresses), since buffers still in flight are forgotten.
    pub fn reset(&mut self) {
        self.ring.zero();
        self.driver.zero();
        self.device.zero();
        let n = self.size.get();
        for (i, slot) in (0u16..).zip(self.ids.iter_mut()) {
            let next = i.saturating_add(1);
            *slot = IdSlot {
                next: if next < n { next } else { NONE },
                ..FREE_ID
            };
        }
        // INVARIANT: the free list is 0, 1, ..., n - 1; nothing in flight; both sides at
        // position 0 with wrap counters set.
        self.free_id = 0;
        self.in_flight = 0;
        self.in_ring = 0;
        self.next_avail = 0;
        self.avail_wrap = true;
        self.last_used = 0;
        self.used_wrap = true;
        self.added = 0;
        self.broken = None;
    }

    /// The bus addresses to give the transport: `queue_desc` is the ring, `queue_driver` the
    /// driver area and `queue_device` the device area (4.1.4.3).
    pub fn addresses(&self) -> QueueAddresses {
        QueueAddresses {
            size: self.size.get(),
            descriptors: self.ring.physical_address(),
            driver: self.driver.physical_address(),
            device: self.device.physical_address(),
        }
    }

    /// The queue size.
    #[cfg(test)]
    pub fn size(&self) -> QueueSize {
        self.size
    }

    /// Free ring positions.
    pub fn num_free(&self) -> u16 {
        self.size.get().saturating_sub(self.in_ring)
    }

    /// Buffers made available and not yet taken back.
    pub fn outstanding(&self) -> u16 {
        self.in_flight
    }

    /// Whether the device broke the ring (see [`PackedRingError`]).
    pub fn is_broken(&self) -> bool {
        self.broken.is_some()
    }

    /// The rule the device broke, once the queue is broken.
    pub fn error(&self) -> Option<PackedRingError> {
        self.broken
    }

    /// Whether `id` names a buffer in flight.
    #[cfg(any(test, feature = "test-utils"))]
    pub fn is_in_flight(&self, id: u16) -> bool {
        id < self.size.get() && self.slot(id).is_some_and(|s| s.count != 0)
    }

    /// The ids of all buffers in flight, for completing them after a reset. O(size).
    #[cfg(test)]
    pub fn in_flight(&self) -> impl Iterator<Item = u16> + '_ {
        (0..self.size.get()).filter(|&id| self.is_in_flight(id))
    }

    /// Makes an indirect table of `table_len` bytes at bus address `table` available as one
    /// ring descriptor (2.8.7); returns the buffer id.
    pub fn push_indirect(&mut self, table: u64, table_len: u32) -> Result<u16, PushError> {
        let size = u32::from(self.size.get());
        // 2.8.7 (as 2.7.5.3.1 for split rings): a table of whole descriptors, no longer than the queue.
        if table_len == 0
            || !table_len.is_multiple_of(DESCRIPTOR_BYTES)
            || table_len > size.saturating_mul(DESCRIPTOR_BYTES)
        {
            return Err(PushError::InvalidTable);
        }
        if self.num_free() == 0 || self.free_id == NONE {
            return Err(PushError::Full);
        }
        let id = self.free_id;
        let flags = self.avail_pattern(self.avail_wrap) | desc_flags::INDIRECT;
        if !self.write(
            self.next_avail,
            table,
            table_len,
            id,
            flags,
            Ordering::Release,
        ) {
            return Err(PushError::Full);
        }
        let (next_avail, avail_wrap) = self.advance(self.next_avail, self.avail_wrap, 1);
        self.commit(id, 1, next_avail, avail_wrap);
        Ok(id)
    }

    /// Makes a buffer of direct descriptors available, one ring position each (2.8.6: `NEXT`
    /// chains them); returns its id. Visible to the device at once: the head is written last.
    ///
    /// Device-readable elements must come before device-writable ones (2.8.6 as 2.7.4.2).
    /// Linear in the length of the chain; on any error nothing is made available.
    pub fn push_chain<I>(&mut self, chain: I) -> Result<u16, PushError>
    where
        I: IntoIterator<Item = Descriptor>,
    {
        let mut chain = chain.into_iter().peekable();
        if chain.peek().is_none() {
            return Err(PushError::EmptyChain);
        }
        let id = self.free_id;
        let free = self.num_free();
        if id == NONE {
            return Err(PushError::Full);
        }
        // Write every element after the head, then the head: until the head's flags change, the
        // device (which reads the ring in order) cannot reach any of them. On failure the
        // elements already written are retracted, or the device would take them for buffers
        // once it reaches their positions after a later, shorter chain.
        let (mut position, mut wrap) = (self.next_avail, self.avail_wrap);
        let mut count: u16 = 0;
        let mut seen_writable = false;
        let mut head = None;
        while let Some(d) = chain.next() {
            let refused = if count >= free {
                Some(PushError::Full)
            } else if seen_writable && !d.device_writable {
                Some(PushError::WritableBeforeReadable)
            } else {
                None
            };
            if let Some(error) = refused {
                self.retract(count);
                return Err(error);
            }
            seen_writable |= d.device_writable;
            let mut flags = self.avail_pattern(wrap);
            if d.device_writable {
                flags |= desc_flags::WRITE;
            }
            if chain.peek().is_some() {
                flags |= desc_flags::NEXT;
            }
            if count == 0 {
                head = Some((d.address, d.len, flags));
            } else if !self.write(position, d.address, d.len, id, flags, Ordering::Relaxed) {
                self.retract(count);
                return Err(PushError::Full);
            }
            (position, wrap) = self.advance(position, wrap, 1);
            count = count.saturating_add(1);
        }
        let Some((address, len, flags)) = head else {
            return Err(PushError::EmptyChain);
        };
        if !self.write(self.next_avail, address, len, id, flags, Ordering::Release) {
            return Err(PushError::Full);
        }
        self.commit(id, count, position, wrap);
        Ok(id)
    }

    /// Marks the `count - 1` positions after the next available one (the elements of a chain
    /// that was refused after its head) with the previous lap's used pattern, which the device
    /// never takes for an available descriptor (2.8.1).
    fn retract(&self, count: u16) {
        let (mut position, mut wrap) = self.advance(self.next_avail, self.avail_wrap, 1);
        for _ in 1..count {
            let flags = if wrap {
                0
            } else {
                desc_flags::AVAIL | desc_flags::USED
            };
            self.write(position, 0, 0, 0, flags, Ordering::Relaxed);
            (position, wrap) = self.advance(position, wrap, 1);
        }
    }

    /// Whether the device must be notified of the buffers made available since the last call
    /// (2.8.10: read the device area after a full barrier). `ENABLE`: yes;
    /// `DISABLE`: no; `DESC` (with event index): whether the new buffers passed the device's
    /// offset/wrap; anything else is read as `ENABLE` (notifying too often is harmless).
    pub fn needs_notify(&mut self) -> bool {
        // The buffers' flags must be visible before the device's suppression word is read, or a
        // device that just went idle is never woken.
        fence(Ordering::SeqCst);
        let added = core::mem::replace(&mut self.added, 0);
        if added == 0 {
            return false;
        }
        let word = self
            .device
            .u32s()
            .and_then(|w| w.first())
            .map_or(0, |w| u32::from_le(w.load(Ordering::Relaxed)));
        let off_wrap = (word & 0xFFFF) as u16;
        let flags = (word >> 16) as u16;
        match flags & 0x3 {
            event::DISABLE => false,
            event::DESC if self.event_idx => {
                if added >= self.size.get() {
                    return true;
                }
                // Positions as 16-bit numbers relative to the current lap, as Linux's
                // virtqueue_kick_prepare_packed: the previous lap is "negative".
                let new = self.next_avail;
                let old = new.wrapping_sub(added);
                let mut event_at = off_wrap & !event::WRAP;
                if (off_wrap & event::WRAP != 0) != self.avail_wrap {
                    event_at = event_at.wrapping_sub(self.size.get());
                }
                need_event(event_at, new, old)
            }
            _ => true,
        }
    }

    /// Takes the next used buffer off the ring, validating it (2.8.1, 2.8.2, 2.8.6).
    ///
    /// `None` when nothing is used yet, nothing is in flight, or the queue is broken.
    /// `Some(Err(_))` once, when the device breaks the ring's rules; the queue is then broken
    /// and returns `None` until [`Self::reset`], so `while let Some(r) = q.pop_used()` ends.
    pub fn pop_used(&mut self) -> Option<Result<UsedElem, PackedRingError>> {
        if self.broken.is_some() || self.in_ring == 0 {
            return None;
        }
        let position = self.last_used;
        let word = u64::from_le(self.word(position)?.load(Ordering::Acquire));
        let len = (word & 0xFFFF_FFFF) as u32;
        let id = ((word >> 32) & 0xFFFF) as u16;
        let flags = (word >> 48) as u16;
        let avail = flags & desc_flags::AVAIL != 0;
        let used = flags & desc_flags::USED != 0;
        if avail != used && avail == self.used_wrap {
            return None; // Still the pattern the driver wrote: not used yet.
        }
        if avail != used || used != self.used_wrap {
            return Some(Err(
                self.fail(PackedRingError::WrapMismatch { position, flags })
            ));
        }
        if id >= self.size.get() {
            return Some(Err(self.fail(PackedRingError::IdOutOfRange { id })));
        }
        let Some(slot) = self.slot(id).copied().filter(|s| s.count != 0) else {
            return Some(Err(self.fail(PackedRingError::UnknownId { id })));
        };
        // 2.8.6: the device's next used position is after the buffer's chain.

        (self.last_used, self.used_wrap) = self.advance(position, self.used_wrap, slot.count);
        let free_id = self.free_id;
        if let Some(s) = self.slot_mut(id) {
            *s = IdSlot {
                next: free_id,
                ..FREE_ID
            };
        }
        // INVARIANT: the id rejoins the free list; its positions leave the ring.
        self.free_id = id;
        self.in_flight = self.in_flight.saturating_sub(1);
        self.in_ring = self.in_ring.saturating_sub(slot.count);
        Some(Ok(UsedElem { id, len }))
    }

    /// Asks the device for an interrupt at the next used buffer and returns whether one is
    /// already used, in which case the caller must drain again: it may have been written before
    /// the request took effect (2.8.10; the lost-wakeup race).
    ///
    /// A broken queue answers false, as a split one does: nothing more will be taken from it,
    /// so a caller that drains while this says "pending" must not be told to go round again.
    pub fn enable_interrupts(&mut self) -> bool {
        if self.broken.is_some() {
            return false;
        }
        let value = if self.event_idx {
            // Interrupt when the device writes the used descriptor at `last_used` (2.8.10).
            let wrap = if self.used_wrap { event::WRAP } else { 0 };
            u32::from(self.last_used | wrap) | u32::from(event::DESC) << 16
        } else {
            u32::from(event::ENABLE) << 16
        };
        self.set_driver_event(value);
        fence(Ordering::SeqCst);
        self.used_pending()
    }

    /// Asks the device not to interrupt for used buffers (a hint: the device may still).
    pub fn disable_interrupts(&mut self) {
        self.set_driver_event(u32::from(event::DISABLE) << 16);
    }

    /// Whether the descriptor at the next used position is marked used in this lap.
    fn used_pending(&self) -> bool {
        if self.in_ring == 0 {
            return false;
        }
        self.word(self.last_used).is_some_and(|w| {
            let flags = (u64::from_le(w.load(Ordering::Acquire)) >> 48) as u16;
            let avail = flags & desc_flags::AVAIL != 0;
            let used = flags & desc_flags::USED != 0;
            avail == used && used == self.used_wrap
        })
    }

    /// AVAIL equal to the wrap counter, USED its inverse (2.8.1).
    fn avail_pattern(&self, wrap: bool) -> u16 {
        if wrap {
            desc_flags::AVAIL
        } else {
            desc_flags::USED
        }
    }

    /// The position `count` after `position`, flipping `wrap` on passing the end (2.8.1).
    fn advance(&self, position: u16, wrap: bool, count: u16) -> (u16, bool) {
        let size = u32::from(self.size.get());
        let next = u32::from(position).saturating_add(u32::from(count));
        if next >= size {
            // count <= size and position < size, so one lap at most.
            let wrapped = u16::try_from(next.saturating_sub(size)).unwrap_or(0);
            (wrapped, !wrap)
        } else {
            (u16::try_from(next).unwrap_or(0), wrap)
        }
    }

    /// Records buffer `id` of `count` positions in flight, ending at (`next_avail`, `wrap`).
    fn commit(&mut self, id: u16, count: u16, next_avail: u16, wrap: bool) {
        let next_free = self.slot(id).map_or(NONE, |s| s.next);
        if let Some(slot) = self.slot_mut(id) {
            *slot = IdSlot { next: NONE, count };
        }
        // INVARIANT: the id leaves the free list with its `count` positions.
        self.free_id = next_free;
        self.in_flight = self.in_flight.saturating_add(1);
        self.in_ring = self.in_ring.saturating_add(count);
        self.added = self.added.saturating_add(count);
        self.next_avail = next_avail;
        self.avail_wrap = wrap;
    }

    /// Writes the descriptor at `position` (`le64 addr; le32 len; le16 id; le16 flags`, 2.8.13):
    /// the address relaxed, then `len`, `id` and `flags` as one 64-bit store with `order`.
    fn write(
        &self,
        position: u16,
        address: u64,
        len: u32,
        id: u16,
        flags: u16,
        order: Ordering,
    ) -> bool {
        let Some((addr, rest)) = self.words(position) else {
            return false;
        };
        let word = u64::from(len) | u64::from(id) << 32 | u64::from(flags) << 48;
        addr.store(address.to_le(), Ordering::Relaxed);
        rest.store(word.to_le(), order);
        true
    }

    /// The second word (len, id, flags) of the descriptor at `position`.
    fn word(&self, position: u16) -> Option<&AtomicU64> {
        self.words(position).map(|(_, rest)| rest)
    }

    fn words(&self, position: u16) -> Option<(&AtomicU64, &AtomicU64)> {
        let words = self.ring.u64s()?;
        let first = usize::from(position).checked_mul(2)?;
        Some((words.get(first)?, words.get(first.checked_add(1)?)?))
    }

    fn set_driver_event(&self, value: u32) {
        if let Some(w) = self.driver.u32s().and_then(|w| w.first()) {
            w.store(value.to_le(), Ordering::Relaxed);
        }
    }

    fn fail(&mut self, error: PackedRingError) -> PackedRingError {
        self.broken = Some(error);
        error
    }

    fn slot(&self, id: u16) -> Option<&IdSlot> {
        self.ids.get(usize::from(id))
    }

    fn slot_mut(&mut self, id: u16) -> Option<&mut IdSlot> {
        self.ids.get_mut(usize::from(id))
    }
}

/// A table of `struct pvirtq_desc` for an indirect buffer (2.8.7): elements in order, only
/// `VIRTQ_DESC_F_WRITE` in their flags, ids unused.
///
/// # Invariants
///
/// `region.u64s()` is `Some` (the region starts 8-aligned).
#[derive(Clone, Copy, Debug)]
pub struct IndirectTable<'a> {
    region: DmaRegion<'a>,
}

impl<'a> IndirectTable<'a> {
    /// A table over `region`, or `None` unless the region starts 8-aligned.
    pub fn new(region: DmaRegion<'a>) -> Option<Self> {
        region.u64s()?;
        // INVARIANT: checked above; a DmaRegion never changes.
        Some(Self { region })
    }

    /// How many descriptors fit.
    #[cfg(test)]
    pub fn capacity(&self) -> usize {
        self.region.len() / DESCRIPTOR_SIZE
    }

    /// Bus address of element 0.
    pub fn physical_address(&self) -> u64 {
        self.region.physical_address()
    }

    /// Writes element `index` (relaxed; the ring descriptor that points here is the release).
    /// Returns `false` (and writes nothing) if `index` is out of range.
    pub fn write(&self, index: u16, d: Descriptor) -> bool {
        let Some((addr, rest)) = self.words(index) else {
            return false;
        };
        let flags = if d.device_writable {
            desc_flags::WRITE
        } else {
            0
        };
        addr.store(d.address.to_le(), Ordering::Relaxed);
        rest.store(
            (u64::from(d.len) | u64::from(flags) << 48).to_le(),
            Ordering::Relaxed,
        );
        true
    }

    /// Reads element `index` back, or `None` if it is out of range.
    #[cfg(test)]
    pub fn read(&self, index: u16) -> Option<Descriptor> {
        let (addr, rest) = self.words(index)?;
        let word = u64::from_le(rest.load(Ordering::Relaxed));
        Some(Descriptor {
            address: u64::from_le(addr.load(Ordering::Relaxed)),
            len: (word & 0xFFFF_FFFF) as u32,
            device_writable: (word >> 48) as u16 & desc_flags::WRITE != 0,
        })
    }

    fn words(&self, index: u16) -> Option<(&AtomicU64, &AtomicU64)> {
        let words = self.region.u64s()?;
        let first = usize::from(index).checked_mul(2)?;
        Some((words.get(first)?, words.get(first.checked_add(1)?)?))
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::arithmetic_side_effects,
        clippy::cast_possible_truncation,
        clippy::panic,
        reason = "tests index fixed buffers and fail by panicking"
    )]

    extern crate std;
    use std::collections::HashMap;
    use std::vec::Vec;

    use super::*;
    use crate::virtio::ring::tests::dma;

    const AVAIL: u16 = desc_flags::AVAIL;
    const USED: u16 = desc_flags::USED;

    /// The device side of a packed queue, written for these tests from VIRTIO 1.2 2.8: reads
    /// available descriptors in ring order, writes used descriptors (through the queue's memory).
    struct Device {
        ring: DmaRegion<'static>,
        driver: DmaRegion<'static>,
        device: DmaRegion<'static>,
        size: u16,
        next_avail: u16,
        avail_wrap: bool,
        next_used: u16,
        used_wrap: bool,
        counts: HashMap<u16, u16>,
    }

    /// One element as the device reads it: address, length, flags.
    type Element = (u64, u32, u16);

    impl Device {
        fn new(memory: DmaRegion<'static>, size: QueueSize) -> Self {
            let l = Layout::new(size);
            Self {
                ring: memory.subregion(0, l.ring).unwrap(),
                driver: memory.subregion(l.driver, 4).unwrap(),
                device: memory.subregion(l.device, 4).unwrap(),
                size: size.get(),
                next_avail: 0,
                avail_wrap: true,
                next_used: 0,
                used_wrap: true,
                counts: HashMap::new(),
            }
        }

        /// (addr, len, id, flags) at `position`.
        fn read(&self, position: u16) -> (u64, u32, u16, u16) {
            let w = self.ring.u64s().unwrap();
            let rest = w[2 * usize::from(position) + 1].load(Ordering::Acquire);
            let addr = w[2 * usize::from(position)].load(Ordering::Relaxed);
            (addr, rest as u32, (rest >> 32) as u16, (rest >> 48) as u16)
        }

        fn step(&self, position: u16, wrap: bool) -> (u16, bool) {
            if position + 1 == self.size {
                (0, !wrap)
            } else {
                (position + 1, wrap)
            }
        }

        /// Takes the next available buffer: its id and elements.
        fn pop(&mut self) -> Option<(u16, Vec<Element>)> {
            let (_, _, _, flags) = self.read(self.next_avail);
            let available =
                (flags & AVAIL != 0) == self.avail_wrap && (flags & USED != 0) != self.avail_wrap;
            if !available {
                return None;
            }
            let (mut position, mut wrap) = (self.next_avail, self.avail_wrap);
            let mut elements = Vec::new();
            let mut count = 0;
            loop {
                let (addr, len, id, flags) = self.read(position);
                // Every element of a chain carries the wrap pattern of its own position.
                assert_eq!(flags & AVAIL != 0, wrap, "AVAIL at {position}");
                assert_eq!(flags & USED != 0, !wrap, "USED at {position}");
                elements.push((addr, len, flags & !(AVAIL | USED)));
                count += 1;
                (position, wrap) = self.step(position, wrap);
                if flags & desc_flags::NEXT == 0 {
                    (self.next_avail, self.avail_wrap) = (position, wrap);
                    assert!(self.counts.insert(id, count).is_none(), "id {id} reused");
                    return Some((id, elements));
                }
            }
        }

        /// Marks buffer `id` used with `len` bytes written (2.8.6: one descriptor at the next
        /// used position, then skip the buffer's positions).
        fn complete(&mut self, id: u16, len: u32) {
            let count = self.counts.remove(&id).unwrap();
            let flags = if self.used_wrap { AVAIL | USED } else { 0 };
            self.write_used(self.next_used, id, len, flags);
            for _ in 0..count {
                (self.next_used, self.used_wrap) = self.step(self.next_used, self.used_wrap);
            }
        }

        /// Writes a used descriptor as a (possibly lying) device would.
        fn write_used(&self, position: u16, id: u16, len: u32, flags: u16) {
            let w = self.ring.u64s().unwrap();
            let word = u64::from(len) | u64::from(id) << 32 | u64::from(flags) << 48;
            w[2 * usize::from(position) + 1].store(word, Ordering::Release);
        }

        fn set_event(&self, off_wrap: u16, flags: u16) {
            let word = u32::from(off_wrap) | u32::from(flags) << 16;
            self.device.u32s().unwrap()[0].store(word, Ordering::Relaxed);
        }

        /// (off_wrap, flags) of the driver area.
        fn driver_event(&self) -> (u16, u16) {
            let word = self.driver.u32s().unwrap()[0].load(Ordering::Relaxed);
            (word as u16, (word >> 16) as u16)
        }
    }

    fn queue(size: u16, event_idx: bool) -> (PackedQueue, Device) {
        let (q, dev, _) = queue_in_memory(size, event_idx);
        (q, dev)
    }

    fn queue_in_memory(size: u16, event_idx: bool) -> (PackedQueue, Device, DmaRegion<'static>) {
        let size = QueueSize::new(size).unwrap();
        let memory = dma(PackedQueue::memory_size(size), 0x20_0000);
        let q = PackedQueue::new(memory, size, event_idx).unwrap();
        (q, Device::new(memory, size), memory)
    }

    fn readable(address: u64, len: u32) -> Descriptor {
        Descriptor {
            address,
            len,
            device_writable: false,
        }
    }

    fn writable(address: u64, len: u32) -> Descriptor {
        Descriptor {
            address,
            len,
            device_writable: true,
        }
    }

    #[test]
    fn layout_and_addresses() {
        let size = QueueSize::new(8).unwrap();
        let l = Layout::new(size);
        assert_eq!((l.ring, l.driver, l.device, l.total), (128, 128, 192, 256));
        let l = Layout::new(QueueSize::new(128).unwrap());
        assert_eq!(
            (l.ring, l.driver, l.device, l.total),
            (2048, 2048, 2112, 2176)
        );
        let l = Layout::new(QueueSize::new(1).unwrap());
        assert_eq!((l.ring, l.driver, l.device, l.total), (16, 64, 128, 192));

        let need = PackedQueue::memory_size(size);
        let m = dma(need, 0x1000);
        assert_eq!(
            PackedQueue::new(m.subregion(0, need - 1).unwrap(), size, false).unwrap_err(),
            LayoutError::TooSmall { needed: need }
        );
        assert_eq!(
            PackedQueue::new(dma(need, 0x1008), size, false).unwrap_err(),
            LayoutError::Misaligned
        );
        let spare = dma(need + 64, 0x1000);
        assert_eq!(
            PackedQueue::new(spare.subregion(4, need).unwrap(), size, false).unwrap_err(),
            LayoutError::Misaligned
        );
        let q = PackedQueue::new(m, size, false).unwrap();
        let a = q.addresses();
        assert_eq!(
            (a.size, a.descriptors, a.driver, a.device),
            (8, 0x1000, 0x1000 + 128, 0x1000 + 192)
        );
        assert_eq!((q.num_free(), q.outstanding()), (8, 0));
    }

    #[test]
    fn chain_is_written_head_last_with_the_wrap_pattern() {
        let (mut q, mut dev) = queue(4, false);
        let id = q
            .push_chain([
                readable(0x100, 16),
                writable(0x200, 512),
                writable(0x300, 1),
            ])
            .unwrap();
        assert_eq!((q.num_free(), q.outstanding()), (1, 1));
        assert!(q.is_in_flight(id));
        // The ring as 2.8.13 lays it out: addr, len, id, flags; AVAIL = 1, USED = 0 in lap 1.
        assert_eq!(dev.read(0), (0x100, 16, id, AVAIL | desc_flags::NEXT));
        assert_eq!(
            dev.read(1),
            (0x200, 512, id, AVAIL | desc_flags::NEXT | desc_flags::WRITE)
        );
        assert_eq!(dev.read(2), (0x300, 1, id, AVAIL | desc_flags::WRITE));
        let (seen, elements) = dev.pop().unwrap();
        assert_eq!(seen, id);
        assert_eq!(elements.len(), 3);
        assert_eq!(dev.pop(), None);
        assert_eq!(q.pop_used(), None, "not used yet");
        dev.complete(id, 513);
        assert_eq!(q.pop_used(), Some(Ok(UsedElem { id, len: 513 })));
        assert_eq!(q.pop_used(), None);
        assert_eq!((q.num_free(), q.outstanding()), (4, 0));
        assert!(!q.is_in_flight(id));

        // The next chain crosses the end of the ring: its last two elements are in lap 2
        // (AVAIL = 0, USED = 1).
        let id = q
            .push_chain([readable(1, 16), writable(2, 8), writable(3, 1)])
            .unwrap();
        assert_eq!(dev.read(3).3, AVAIL | desc_flags::NEXT);
        assert_eq!(dev.read(0).3, USED | desc_flags::NEXT | desc_flags::WRITE);
        assert_eq!(dev.read(1).3, USED | desc_flags::WRITE);
        assert_eq!(dev.pop().unwrap().0, id);
        dev.complete(id, 9);
        assert_eq!(q.pop_used(), Some(Ok(UsedElem { id, len: 9 })));
    }

    #[test]
    fn indirect_buffers_and_tables() {
        let (mut q, mut dev) = queue(4, false);
        let id = q.push_indirect(0xA000, 3 * 16).unwrap();
        assert_eq!(dev.read(0), (0xA000, 48, id, AVAIL | desc_flags::INDIRECT));
        assert_eq!(dev.pop().unwrap().1, [(0xA000, 48, desc_flags::INDIRECT)]);
        dev.complete(id, 513);
        assert_eq!(q.pop_used(), Some(Ok(UsedElem { id, len: 513 })));

        assert_eq!(q.push_indirect(0x1000, 0), Err(PushError::InvalidTable));
        assert_eq!(q.push_indirect(0x1000, 40), Err(PushError::InvalidTable));
        assert_eq!(
            q.push_indirect(0x1000, 5 * 16),
            Err(PushError::InvalidTable)
        );
        for _ in 0..4 {
            q.push_indirect(0x1000, 4 * 16).unwrap();
        }
        assert_eq!(q.push_indirect(0x1000, 16), Err(PushError::Full));

        // The table: packed layout, only WRITE in the flags, no NEXT.
        let table = IndirectTable::new(dma(64, 0x5000)).unwrap();
        assert!(table.capacity() >= 4);
        assert_eq!(table.physical_address(), 0x5000);
        assert!(table.write(0, readable(0x10, 16)));
        assert!(table.write(1, writable(0x20, 1)));
        assert!(!table.write(u16::MAX, writable(0x20, 1)));
        assert_eq!(table.read(0), Some(readable(0x10, 16)));
        assert_eq!(table.read(1), Some(writable(0x20, 1)));
        let words = table.region.u64s().unwrap();
        assert_eq!(
            words[3].load(Ordering::Relaxed),
            1 | u64::from(desc_flags::WRITE) << 48
        );
    }

    #[test]
    fn push_errors_leave_nothing_visible() {
        let (mut q, mut dev) = queue(4, false);
        assert_eq!(q.push_chain([]), Err(PushError::EmptyChain));
        assert_eq!(
            q.push_chain([writable(1, 1), readable(2, 2)]),
            Err(PushError::WritableBeforeReadable)
        );
        assert_eq!(
            q.push_chain((0..5).map(|i| readable(i, 1))),
            Err(PushError::Full)
        );
        assert_eq!(dev.pop(), None, "the failed chains are not visible");
        // A shorter chain after a refused longer one: the refused elements after its head are
        // not taken for buffers.
        let short = q.push_chain([readable(7, 1)]).unwrap();
        assert_eq!(dev.pop().unwrap(), (short, std::vec![(7, 1, 0)]));
        assert_eq!(
            dev.pop(),
            None,
            "the refused chain's elements stay invisible"
        );
        dev.complete(short, 0);
        assert_eq!(q.pop_used(), Some(Ok(UsedElem { id: short, len: 0 })));
        assert_eq!((q.num_free(), q.outstanding()), (4, 0));
        let id = q.push_chain((0..4).map(|i| readable(i, 1))).unwrap();
        assert_eq!(q.push_chain([readable(9, 1)]), Err(PushError::Full));
        assert_eq!(dev.pop().unwrap().1.len(), 4);
        dev.complete(id, 0);
        assert_eq!(q.pop_used(), Some(Ok(UsedElem { id, len: 0 })));
        assert_eq!(q.num_free(), 4);
    }

    /// Many buffers in flight, completed out of order, through a small ring: both wrap
    /// counters flip thousands of times, chains straddle the end of the ring.
    #[test]
    fn device_and_driver_with_many_in_flight_and_wraparounds() {
        for size in [1u16, 2, 4, 8, 64] {
            let (mut q, mut dev) = queue(size, size % 2 == 0);
            let mut rng = 0x2545_F491_4F6C_DD1Du64;
            let mut next = move || {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng
            };
            // id -> (expected elements, writable bytes)
            let mut expected: HashMap<u16, (Vec<Element>, u32)> = HashMap::new();
            let mut popped: Vec<u16> = Vec::new();
            let mut completed = 0u32;
            let mut address = 0u64;
            for _round in 0..4000 {
                // Fill while there is room.
                loop {
                    let want = 1 + (next() % 3) as u16;
                    address += 0x1000;
                    let result = if next() % 4 == 0 {
                        let writable = (next() % 4096) as u32;
                        q.push_indirect(address, 16).map(|id| {
                            let e = (address, 16, desc_flags::INDIRECT);
                            (id, std::vec![e], writable)
                        })
                    } else {
                        let chain: Vec<Descriptor> = (0..want)
                            .map(|i| Descriptor {
                                address: address + u64::from(i),
                                len: 100 + u32::from(i),
                                device_writable: i + 1 == want && want > 1,
                            })
                            .collect();
                        let writable = chain
                            .iter()
                            .filter(|d| d.device_writable)
                            .map(|d| d.len)
                            .sum();
                        q.push_chain(chain.iter().copied()).map(|id| {
                            let elements = chain
                                .iter()
                                .enumerate()
                                .map(|(i, d)| {
                                    let mut f = 0;
                                    if i + 1 < chain.len() {
                                        f |= desc_flags::NEXT;
                                    }
                                    if d.device_writable {
                                        f |= desc_flags::WRITE;
                                    }
                                    (d.address, d.len, f)
                                })
                                .collect();
                            (id, elements, writable)
                        })
                    };
                    match result {
                        Ok((id, elements, writable)) => {
                            assert!(expected.insert(id, (elements, writable)).is_none());
                        }
                        Err(PushError::Full) => break,
                        Err(e) => panic!("{e:?}"),
                    }
                }
                let _ = q.needs_notify();
                // The device takes everything available, in ring order.
                while let Some((id, elements)) = dev.pop() {
                    assert_eq!(elements, expected[&id].0, "buffer {id}");
                    popped.push(id);
                }
                // It completes a random part of what it holds, in random order.
                let n = (next() as usize) % (popped.len() + 1);
                for _ in 0..n {
                    let i = (next() as usize) % popped.len();
                    let id = popped.swap_remove(i);
                    let len = expected[&id].1;
                    dev.complete(id, len);
                }
                // The driver takes them back, in the order the device wrote them.
                let _ = q.enable_interrupts();
                while let Some(r) = q.pop_used() {
                    let UsedElem { id, len } = r.unwrap();
                    let (_, writable) = expected.remove(&id).unwrap();
                    assert_eq!(len, writable);
                    completed += 1;
                }
                assert_eq!(usize::from(q.outstanding()), expected.len());
            }
            // Drain.
            for id in popped.drain(..) {
                let len = expected[&id].1;
                dev.complete(id, len);
            }
            while let Some(r) = q.pop_used() {
                expected.remove(&r.unwrap().id).unwrap();
            }
            assert!(expected.is_empty());
            assert_eq!((q.num_free(), q.outstanding()), (size, 0));
            // Every size goes round its ring hundreds of times at least.
            assert!(completed > 1000, "size {size}: {completed}");
            assert!(!q.is_broken());
        }
    }

    #[test]
    fn device_lies_are_errors_once_then_nothing() {
        type Lie = fn(&mut Device, u16) -> PackedRingError;
        let lies: [(&str, Lie); 5] = [
            ("id out of range", |dev, _| {
                dev.write_used(0, 4, 0, AVAIL | USED);
                PackedRingError::IdOutOfRange { id: 4 }
            }),
            ("unknown id", |dev, id| {
                let other = (id + 1) % 4;
                dev.write_used(0, other, 0, AVAIL | USED);
                PackedRingError::UnknownId { id: other }
            }),
            ("previous lap's used pattern", |dev, id| {
                dev.write_used(0, id, 0, 0);
                PackedRingError::WrapMismatch {
                    position: 0,
                    flags: 0,
                }
            }),
            ("inverse of the driver's pattern", |dev, id| {
                dev.write_used(0, id, 0, USED);
                PackedRingError::WrapMismatch {
                    position: 0,
                    flags: USED,
                }
            }),
            ("u16::MAX id", |dev, _| {
                dev.write_used(0, u16::MAX, u32::MAX, 0xFFFF);
                PackedRingError::IdOutOfRange { id: u16::MAX }
            }),
        ];
        for (what, lie) in lies {
            let (mut q, mut dev, memory) = queue_in_memory(4, false);
            let id = q.push_chain([readable(1, 16), writable(2, 8)]).unwrap();
            dev.pop().unwrap();
            let error = lie(&mut dev, id);
            assert_eq!(q.pop_used(), Some(Err(error)), "{what}");
            assert!(q.is_broken(), "{what}");
            assert_eq!(q.pop_used(), None, "{what}: nothing after the error");
            // Found by the used-ring fuzz target: a broken queue used to answer "pending" here
            // (the descriptor at the next used position is marked used), so a drain looping
            // while completions are pending never ended.
            assert!(
                !q.enable_interrupts(),
                "{what}: broken, so nothing is pending"
            );
            // A reset makes the queue usable again.
            q.reset();
            let mut dev = Device::new(memory, q.size());
            assert!(!q.is_broken());
            let id = q.push_chain([writable(3, 4)]).unwrap();
            dev.pop().unwrap();
            dev.complete(id, 4);
            assert_eq!(q.pop_used(), Some(Ok(UsedElem { id, len: 4 })), "{what}");
        }
    }

    /// The used length is the caller's to check (as on the split ring): passed on unchanged,
    /// and the queue goes on.
    #[test]
    fn a_length_past_the_buffer_is_passed_on() {
        let (mut q, mut dev) = queue(4, false);
        let a = q.push_chain([readable(1, 16), writable(2, 8)]).unwrap();
        let b = q.push_indirect(0x3000, 32).unwrap();
        dev.pop().unwrap();
        dev.pop().unwrap();
        dev.complete(a, 9);
        dev.complete(b, 513);
        assert_eq!(q.pop_used(), Some(Ok(UsedElem { id: a, len: 9 })));
        assert!(!q.is_broken());
        assert!(!q.is_in_flight(a));
        assert_eq!(q.pop_used(), Some(Ok(UsedElem { id: b, len: 513 })));
        assert_eq!((q.num_free(), q.outstanding()), (4, 0));
    }

    /// A device writing random words anywhere in the ring and its event area: the driver
    /// never panics, never reads out of bounds, every drain ends, and its bookkeeping stays
    /// within the ring.
    #[test]
    fn random_device_writes_never_panic_or_loop() {
        let mut rng = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for size in [1u16, 2, 8, 32] {
            let (mut q, dev) = queue(size, true);
            let mut errors = 0u32;
            for _ in 0..3000 {
                for _ in 0..(next() % 4) {
                    let _ = if next() % 2 == 0 {
                        q.push_indirect(next(), 16 * (1 + (next() % 2) as u32))
                    } else {
                        let n = 1 + next() % 3;
                        q.push_chain((0..n).map(|i| writable(i, next() as u32)))
                    };
                }
                let _ = q.needs_notify();
                // Random (sometimes plausible) used descriptors and device events.
                for _ in 0..(next() % 3) {
                    let position = (next() % u64::from(size)) as u16;
                    let id = if next() % 2 == 0 {
                        (next() % u64::from(size)) as u16
                    } else {
                        next() as u16
                    };
                    let flags = [0, AVAIL | USED, AVAIL, USED][(next() % 4) as usize];
                    dev.write_used(position, id, next() as u32, flags);
                }
                dev.set_event(next() as u16, next() as u16);
                let mut taken = 0;
                while let Some(r) = q.pop_used() {
                    taken += 1;
                    assert!(taken <= u32::from(size) + 1, "a drain that does not end");
                    if r.is_err() {
                        errors += 1;
                    }
                }
                let _ = q.enable_interrupts();
                assert!(q.num_free() <= size && q.outstanding() <= size);
                assert!(u32::from(q.outstanding()) <= u32::from(size - q.num_free()));
                if q.is_broken() {
                    assert_eq!(q.pop_used(), None);
                    q.reset();
                    // The test's device forgets too (its memory is zeroed by the reset).
                }
            }
            assert!(errors > 0, "size {size}: the lies were noticed");
        }
    }

    #[test]
    fn duplicate_completion_is_an_error() {
        let (mut q, mut dev) = queue(4, false);
        let a = q.push_chain([writable(1, 8)]).unwrap();
        let b = q.push_chain([writable(2, 8)]).unwrap();
        dev.pop().unwrap();
        dev.pop().unwrap();
        dev.complete(a, 8);
        assert_eq!(q.pop_used(), Some(Ok(UsedElem { id: a, len: 8 })));
        // The device completes `a` again at the next used position instead of `b`.
        dev.write_used(1, a, 8, AVAIL | USED);
        assert_eq!(
            q.pop_used(),
            Some(Err(PackedRingError::UnknownId { id: a }))
        );
        assert!(q.is_in_flight(b));
        assert_eq!(q.in_flight().collect::<Vec<_>>(), [b]);
    }

    #[test]
    fn a_used_descriptor_with_nothing_in_flight_is_ignored() {
        let (mut q, dev) = queue(4, false);
        dev.write_used(0, 0, 0, AVAIL | USED);
        assert_eq!(q.pop_used(), None);
        assert!(!q.enable_interrupts());
        assert!(!q.is_broken());
    }

    #[test]
    fn device_event_suppression_decides_notifications() {
        let (mut q, mut dev) = queue(4, false);
        assert!(!q.needs_notify(), "nothing added");
        q.push_chain([readable(1, 1)]).unwrap();
        assert!(q.needs_notify(), "ENABLE (zeroed area)");
        assert!(!q.needs_notify(), "nothing new");
        dev.set_event(0, event::DISABLE);
        q.push_chain([readable(1, 1)]).unwrap();
        assert!(!q.needs_notify(), "DISABLE");
        // DESC without event index is read as ENABLE; reserved value 3 too.
        dev.set_event(1, event::DESC);
        q.push_chain([readable(1, 1)]).unwrap();
        assert!(q.needs_notify(), "DESC without EVENT_IDX");
        dev.set_event(0, 3);
        q.push_chain([readable(1, 1)]).unwrap();
        assert!(q.needs_notify(), "reserved");
        let _ = &mut dev;

        // With event index: positions 0..=3 taken in lap 1; the next pushes go to lap 2.
        let (mut q, mut dev) = queue(4, true);
        let a = q.push_chain([readable(1, 1), readable(2, 1)]).unwrap();
        // The device wants a notification when position 1 (lap 1, wrap bit set) is made
        // available: passed by this push (positions 0, 1).
        dev.set_event(1 | event::WRAP, event::DESC);
        assert!(q.needs_notify());
        q.push_chain([readable(3, 1)]).unwrap(); // position 2
        assert!(!q.needs_notify(), "event 1 already passed");
        dev.set_event(3 | event::WRAP, event::DESC);
        q.push_chain([readable(4, 1)]).unwrap(); // position 3
        assert!(q.needs_notify(), "event at 3 reached");
        // Make room and cross into lap 2.
        for _ in 0..3 {
            let (id, _) = dev.pop().unwrap();
            dev.complete(id, 0);
        }
        let _ = a;
        while let Some(r) = q.pop_used() {
            r.unwrap();
        }
        // Event at position 0 of lap 2 (wrap bit clear): crossing the ring end reaches it.
        dev.set_event(0, event::DESC);
        q.push_chain([readable(5, 1), readable(6, 1)]).unwrap(); // positions 0, 1 of lap 2
        assert!(q.needs_notify(), "event in the new lap");
        // An event in the previous lap (wrap bit set, position 3) has passed.
        dev.set_event(3 | event::WRAP, event::DESC);
        let (id, _) = dev.pop().unwrap();
        dev.complete(id, 0);
        q.pop_used().unwrap().unwrap();
        q.push_chain([readable(7, 1)]).unwrap();
        assert!(!q.needs_notify(), "event in the previous lap");
        // An out-of-range offset from the device is just a value: no panic.
        dev.set_event(0x7FFF, event::DESC);
        let (id, _) = dev.pop().unwrap();
        dev.complete(id, 0);
        q.pop_used().unwrap().unwrap();
        q.push_chain([readable(8, 1)]).unwrap();
        let _ = q.needs_notify();
    }

    #[test]
    fn driver_event_suppression_and_the_lost_wakeup_check() {
        let (mut q, mut dev) = queue(4, true);
        q.disable_interrupts();
        assert_eq!(dev.driver_event(), (0, event::DISABLE));
        assert!(!q.enable_interrupts());
        // DESC at the next used position (0) with the used wrap counter (1).
        assert_eq!(dev.driver_event(), (event::WRAP, event::DESC));
        let id = q.push_chain([writable(1, 4)]).unwrap();
        assert!(!q.enable_interrupts(), "not used yet");
        dev.pop().unwrap();
        dev.complete(id, 4);
        assert!(q.enable_interrupts(), "already used: drain again");
        q.pop_used().unwrap().unwrap();
        assert_eq!(
            {
                q.enable_interrupts();
                dev.driver_event()
            },
            (1 | event::WRAP, event::DESC)
        );

        let (mut q, dev) = queue(4, false);
        q.disable_interrupts();
        assert_eq!(dev.driver_event(), (0, event::DISABLE));
        assert!(!q.enable_interrupts());
        assert_eq!(dev.driver_event(), (0, event::ENABLE));
    }
}
