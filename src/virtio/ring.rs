//! The split virtqueue, driver side (VIRTIO 1.2 2.7).
//!
//! A split virtqueue is three areas of memory shared with the device:
//!
//! | area | C | alignment (2.7) | written by |
//! |---|---|---|---|
//! | descriptor table | `struct virtq_desc[N]` | 16 | driver |
//! | available ring | `struct virtq_avail` (`flags, idx, ring[N], used_event`) | 2 | driver |
//! | used ring | `struct virtq_used` (`flags, idx, ring[N] {id, len}, avail_event`) | 4 | device |
//!
//! [`SplitQueue`] places them in one caller-provided [`DmaRegion`] (the used ring on its own
//! 64-byte cache line, so the device's writes do not share a line with the driver's), hands out
//! descriptor chains from a private free list, publishes them in batches, decides whether the
//! device needs a notification (event index or `VIRTQ_USED_F_NO_NOTIFY`, 2.7.10), asks for or
//! suppresses interrupts (`used_event` or `VIRTQ_AVAIL_F_NO_INTERRUPT`, 2.7.7), and takes
//! completions off the used ring.
//!
//! The memory is only ever accessed as atomics: a descriptor is two relaxed 64-bit stores,
//! an available ring entry a relaxed 16-bit store, `avail.idx` a release store (2.7.13: the
//! descriptors and ring entries must be visible before the index), `used.idx` an acquire load
//! (the used elements are read after it), and a full fence sits where the spec asks for one:
//! between publishing `avail.idx` and reading `avail_event`/`used.flags` (2.7.13.4), and between
//! writing `used_event`/`avail.flags` and re-reading `used.idx` (2.7.14).
//!
//! The used ring is written by an untrusted device. [`SplitQueue::pop_used`] validates it: the
//! used index may not run ahead of what was made available, an id must be below the queue size
//! and name a chain that is in flight and published. The driver's bookkeeping (free list, chain heads and
//! tails) lives in the queue itself, never in device-visible memory, so the device cannot
//! corrupt it. Every operation is O(1) except [`SplitQueue::push_chain`], which is linear in the
//! chain it writes.

use core::sync::atomic::{AtomicU16, AtomicU64, Ordering, fence};

use storport::dma::DmaRegion;

/// The largest queue the driver uses. The device may offer more (up to 32768); the driver
/// writes a smaller `queue_size` (4.1.4.3), which keeps the per-queue bookkeeping a fixed
/// 768-byte array and no allocation. The adapter asks for no more than its 128 request slots
/// per queue (`hba::SLOTS`), so a larger ring would only be bookkeeping in the device
/// extension that nothing uses.
pub const MAX_QUEUE_SIZE: u16 = 128;

/// `struct virtq_desc` flags (2.7.5).
mod desc_flags {
    /// VIRTQ_DESC_F_NEXT: the chain continues at `next`.
    pub const NEXT: u16 = 1;
    /// VIRTQ_DESC_F_WRITE: the buffer is device-writable.
    pub const WRITE: u16 = 2;
    /// VIRTQ_DESC_F_INDIRECT: the buffer is a table of descriptors.
    pub const INDIRECT: u16 = 4;
}

/// VIRTQ_AVAIL_F_NO_INTERRUPT (2.7.6, 2.7.7).
#[cfg(any(test, feature = "test-utils"))]
const AVAIL_F_NO_INTERRUPT: u16 = 1;
/// VIRTQ_USED_F_NO_NOTIFY (2.7.8, 2.7.10).
const USED_F_NO_NOTIFY: u16 = 1;

/// Size of `struct virtq_desc`, as a `u32` (descriptor table lengths).
pub(crate) const DESCRIPTOR_BYTES: u32 = 16;
/// Size of `struct virtq_desc`.
pub(crate) const DESCRIPTOR_SIZE: usize = DESCRIPTOR_BYTES as usize;

/// Cache-line size the used ring is aligned to.
const CACHE_LINE: usize = 64;

/// "No descriptor" in the private links.
const NONE: u16 = u16::MAX;

/// A split virtqueue size the driver can use.
///
/// # Invariants
///
/// A power of two in `1..=MAX_QUEUE_SIZE` (2.7: "Queue Size value is always a power of 2").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueSize(u16);

impl QueueSize {
    /// `size` if it is a power of two no larger than [`MAX_QUEUE_SIZE`].
    pub const fn new(size: u16) -> Option<Self> {
        if size != 0 && size.is_power_of_two() && size <= MAX_QUEUE_SIZE {
            // INVARIANT: checked above.
            Some(Self(size))
        } else {
            None
        }
    }

    /// The largest usable size not above `device_max` (the device's `queue_size`) or
    /// `wanted`: their minimum rounded down to a power of two. `None` if either is 0.
    pub fn choose(device_max: u16, wanted: u16) -> Option<Self> {
        let limit = device_max.min(wanted).min(MAX_QUEUE_SIZE);
        if limit == 0 {
            return None;
        }
        // The largest power of two <= limit; limit <= 128, so nothing overflows.
        let size = (u32::from(limit) + 1).next_power_of_two() / 2;
        Self::new(u16::try_from(size).ok()?)
    }

    /// The size.
    pub const fn get(self) -> u16 {
        self.0
    }

    #[expect(
        clippy::arithmetic_side_effects,
        reason = "INVARIANT: self.0 >= 1, so self.0 - 1 does not underflow"
    )]
    fn mask(self) -> u16 {
        self.0 - 1
    }

    fn usize(self) -> usize {
        usize::from(self.0)
    }
}

/// Byte offsets of the three areas for one queue size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Layout {
    avail: usize,
    avail_len: usize,
    used: usize,
    used_len: usize,
    total: usize,
}

#[expect(
    clippy::arithmetic_side_effects,
    reason = "only Layout::new calls it, with align = CACHE_LINE (64, not 0) and value below \
              7 KiB (a queue of at most MAX_QUEUE_SIZE = 256 entries: 6784 bytes): no overflow"
)]
const fn align_up(value: usize, align: usize) -> usize {
    value.div_ceil(align) * align
}

impl Layout {
    #[expect(
        clippy::arithmetic_side_effects,
        reason = "n = size <= MAX_QUEUE_SIZE (256, QueueSize's invariant): every term is below \
                  7 KiB (6784 bytes at 256)"
    )]
    const fn new(size: QueueSize) -> Self {
        let n = size.0 as usize;
        let avail = DESCRIPTOR_SIZE * n;
        // flags, idx, ring[n], used_event.
        let avail_len = 2 + 2 + 2 * n + 2;
        let used = align_up(avail + avail_len, CACHE_LINE);
        // flags, idx, ring[n] of {id, len}, avail_event.
        let used_len = 2 + 2 + 8 * n + 2;
        let total = align_up(used + used_len, CACHE_LINE);
        Self {
            avail,
            avail_len,
            used,
            used_len,
            total,
        }
    }
}

/// The bus addresses of a queue's three areas, for the transport's queue setup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueAddresses {
    /// The queue size.
    pub size: u16,
    /// `queue_desc`: the descriptor table.
    pub descriptors: u64,
    /// `queue_driver`: the available ring.
    pub driver: u64,
    /// `queue_device`: the used ring.
    pub device: u64,
}

/// One buffer of a request: where it is, how long, and who writes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Descriptor {
    /// Bus address of the buffer.
    pub address: u64,
    /// Length in bytes.
    pub len: u32,
    /// The device writes the buffer (VIRTQ_DESC_F_WRITE); otherwise it reads it.
    pub device_writable: bool,
}

/// A descriptor as stored in a table (`struct virtq_desc`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawDescriptor {
    /// `addr`.
    pub address: u64,
    /// `len`.
    pub len: u32,
    /// `flags` (NEXT 1, WRITE 2, INDIRECT 4).
    pub flags: u16,
    /// `next`.
    pub next: u16,
}

impl RawDescriptor {
    /// The buffer part of the descriptor.
    pub fn descriptor(&self) -> Descriptor {
        Descriptor {
            address: self.address,
            len: self.len,
            device_writable: self.flags & desc_flags::WRITE != 0,
        }
    }

    /// VIRTQ_DESC_F_NEXT is set.
    #[cfg(test)]
    pub fn has_next(&self) -> bool {
        self.flags & desc_flags::NEXT != 0
    }

    /// VIRTQ_DESC_F_INDIRECT is set.
    #[cfg(test)]
    pub fn is_indirect(&self) -> bool {
        self.flags & desc_flags::INDIRECT != 0
    }
}

/// A table of `struct virtq_desc` in DMA memory: a queue's descriptor area or an indirect
/// table (2.7.5, 2.7.5.3).
///
/// # Invariants
///
/// `region.u64s()` is `Some` (the region starts 8-aligned), so each 16-byte descriptor is two
/// naturally aligned 64-bit words.
#[derive(Clone, Copy, Debug)]
pub struct DescriptorTable<'a> {
    region: DmaRegion<'a>,
}

impl<'a> DescriptorTable<'a> {
    /// A table over `region`, or `None` unless the region starts 8-aligned.
    pub fn new(region: DmaRegion<'a>) -> Option<Self> {
        region.u64s()?;
        // INVARIANT: u64s() is Some (checked above); a DmaRegion never changes.
        Some(Self { region })
    }

    /// How many descriptors fit.
    pub fn capacity(&self) -> usize {
        self.region.len() / DESCRIPTOR_SIZE
    }

    /// Bus address of descriptor 0.
    pub fn physical_address(&self) -> u64 {
        self.region.physical_address()
    }

    /// Writes descriptor `index` as two relaxed 64-bit stores (the caller publishes with a
    /// release store). Returns `false` (and writes nothing) if `index` is out of range.
    pub(crate) fn write(&self, index: u16, d: RawDescriptor) -> bool {
        let Some((addr, rest)) = self.words(index) else {
            return false;
        };
        // Little-endian `le64 addr; le32 len; le16 flags; le16 next` (2.7.5).
        let word = u64::from(d.len) | u64::from(d.flags) << 32 | u64::from(d.next) << 48;
        addr.store(d.address.to_le(), Ordering::Relaxed);
        rest.store(word.to_le(), Ordering::Relaxed);
        true
    }

    /// Reads descriptor `index` back, or `None` if it is out of range.
    pub fn read(&self, index: u16) -> Option<RawDescriptor> {
        let (addr, rest) = self.words(index)?;
        let word = u64::from_le(rest.load(Ordering::Relaxed));
        Some(RawDescriptor {
            address: u64::from_le(addr.load(Ordering::Relaxed)),
            len: (word & 0xFFFF_FFFF) as u32,
            flags: ((word >> 32) & 0xFFFF) as u16,
            next: (word >> 48) as u16,
        })
    }

    fn words(&self, index: u16) -> Option<(&AtomicU64, &AtomicU64)> {
        let words = self.region.u64s()?;
        let first = usize::from(index) * 2;
        Some((words.get(first)?, words.get(first.checked_add(1)?)?))
    }
}

/// A used ring element as the driver accepts it (`struct virtq_used_elem`, 2.7.8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UsedElem {
    /// The head of the completed chain: the id [`SplitQueue::push_indirect`] or
    /// [`SplitQueue::push_chain`] returned.
    pub id: u16,
    /// Bytes the device says it wrote into the chain's device-writable buffers. Untrusted:
    /// the caller checks it against what the request could hold.
    pub len: u32,
}

/// The device broke the used ring's rules; the queue is unusable until reset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingError {
    /// `used.idx` ran ahead of the chains made available (2.7.8: the device adds one used
    /// element per available chain).
    IndexOutOfRange {
        /// The `used.idx` read.
        used_idx: u16,
        /// The driver's next used index.
        last_used: u16,
    },
    /// A used id is not below the queue size (2.7.8: id is a descriptor chain head index).
    IdOutOfRange {
        /// The id read.
        id: u32,
    },
    /// A used id names a descriptor that heads no chain the device was given (a double
    /// completion, an invented id, or a chain pushed but not yet published).
    UnknownId {
        /// The id read.
        id: u16,
    },
}

/// Why a buffer could not be made available.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushError {
    /// Not enough free descriptors; retry after completions.
    Full,
    /// A chain with no descriptors.
    EmptyChain,
    /// A device-readable descriptor after a device-writable one (2.7.4.2: "The driver MUST
    /// place any device-writable descriptor elements after any device-readable descriptor
    /// elements").
    WritableBeforeReadable,
    /// An indirect table whose length is 0, not a multiple of 16 bytes, or longer than the
    /// queue size (2.7.5.3.1: "A driver MUST NOT create a descriptor chain longer than the
    /// Queue Size of the device").
    InvalidTable,
}

/// Why a region cannot hold a queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayoutError {
    /// The region is smaller than [`SplitQueue::memory_size`].
    TooSmall {
        /// Bytes needed.
        needed: usize,
    },
    /// The region's bus address is not 16-aligned (2.7: descriptor table alignment) or its
    /// virtual address not 8-aligned.
    Misaligned,
}

/// The driver's bookkeeping for one descriptor.
#[derive(Clone, Copy, Debug)]
struct Slot {
    /// Next descriptor on the free list, or of the chain this descriptor is in.
    next: u16,
    /// For a chain head in flight: the chain's last descriptor; [`NONE`] otherwise.
    tail: u16,
    /// For a chain head in flight: the chain's length.
    count: u16,
}

const IDLE_SLOT: Slot = Slot {
    next: NONE,
    tail: NONE,
    count: 0,
};

/// The driver side of one split virtqueue.
///
/// # Invariants
///
/// - `desc`, `avail` and `used` are the areas of `Layout::new(size)` inside one region
///   whose bus address is 16-aligned and virtual address 8-aligned, so `avail.u16s()`,
///   `used.u16s()` and `used.u32s()` are `Some` and long enough for the indices used below.
/// - The free list starts at `free_head`, follows `slots[i].next`, and holds exactly
///   `num_free` descriptors; the descriptors not on it form the chains in flight.
/// - A chain head `h` is in flight iff `slots[h].tail != NONE`; then the chain is `h`,
///   `slots[h].next`, ... up to `slots[h].tail`, `slots[h].count` descriptors.
/// - `last_used <= used_seen <= published <= next_avail` in wrapping u16 arithmetic, each
///   distance at most `size`: `published - last_used` chains are with the device,
///   `next_avail - published` written but not yet published.
/// - `broken` is set once the device broke the used ring (with the first rule it broke);
///   nothing more is taken from it until [`SplitQueue::reset`].
#[derive(Debug)]
pub struct SplitQueue {
    desc: DescriptorTable<'static>,
    avail: DmaRegion<'static>,
    used: DmaRegion<'static>,
    size: QueueSize,
    event_idx: bool,
    slots: [Slot; MAX_QUEUE_SIZE as usize],
    /// Bit `h` set: the chain headed by `h` is pushed but not yet published. [`Self::publish`]
    /// publishes every pushed chain at once, so it clears them all. Private, like every other
    /// piece of bookkeeping: the device cannot write it.
    unpublished: [u64; MAX_QUEUE_SIZE as usize / 64],
    free_head: u16,
    num_free: u16,
    /// Next free available ring index (free-running, wraps at 2^16).
    next_avail: u16,
    /// The `avail.idx` last stored.
    published: u16,
    /// `avail.idx` when notification was last decided.
    notified_at: u16,
    /// Next used ring index to take.
    last_used: u16,
    /// The last `used.idx` read and validated.
    used_seen: u16,
    broken: Option<RingError>,
}

impl SplitQueue {
    /// Bytes of DMA memory a queue of `size` needs (a multiple of 64).
    pub const fn memory_size(size: QueueSize) -> usize {
        Layout::new(size).total
    }

    /// Places a queue of `size` in `memory` (which it zeroes) with event-index notification
    /// suppression if VIRTIO_F_EVENT_IDX was negotiated.
    ///
    /// `memory` should be 64-aligned so the used ring gets its own cache line; it must be
    /// 16-aligned (bus address) and 8-aligned (virtual address).
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
        let desc = DescriptorTable::new(region(0, layout.avail)?).ok_or(LayoutError::Misaligned)?;
        let avail = region(layout.avail, layout.avail_len)?;
        let used = region(layout.used, layout.used_len)?;
        // The areas start at multiples of 64 from an 8-aligned start: all aligned.
        if avail.u16s().is_none() || used.u16s().is_none() || used.u32s().is_none() {
            return Err(LayoutError::Misaligned);
        }
        let mut queue = Self {
            desc,
            avail,
            used,
            size,
            event_idx,
            slots: [IDLE_SLOT; MAX_QUEUE_SIZE as usize],
            unpublished: [0; MAX_QUEUE_SIZE as usize / 64],
            free_head: 0,
            num_free: 0,
            next_avail: 0,
            published: 0,
            notified_at: 0,
            last_used: 0,
            used_seen: 0,
            broken: None,
        };
        queue.reset();
        Ok(queue)
    }

    /// Returns the queue to its initial state: zeroed rings, every descriptor free, nothing in
    /// flight. Call it only after the device was reset (or before it was told the addresses),
    /// since chains still in flight are forgotten.
    pub fn reset(&mut self) {
        self.desc.region.zero();
        self.avail.zero();
        self.used.zero();
        let n = self.size.get();
        for (i, slot) in self.slots.iter_mut().enumerate() {
            let next = i
                .checked_add(1)
                .and_then(|next| u16::try_from(next).ok())
                .unwrap_or(NONE);
            *slot = Slot {
                next: if next < n { next } else { NONE },
                ..IDLE_SLOT
            };
        }
        // INVARIANT: the free list is 0, 1, ..., n - 1: all n descriptors; nothing in flight.
        self.unpublished = [0; MAX_QUEUE_SIZE as usize / 64];
        self.free_head = 0;
        self.num_free = n;
        self.next_avail = 0;
        self.published = 0;
        self.notified_at = 0;
        self.last_used = 0;
        self.used_seen = 0;
        self.broken = None;
    }

    /// The bus addresses to give the transport.
    pub fn addresses(&self) -> QueueAddresses {
        QueueAddresses {
            size: self.size.get(),
            descriptors: self.desc.physical_address(),
            driver: self.avail.physical_address(),
            device: self.used.physical_address(),
        }
    }

    /// The queue size.
    #[cfg(test)]
    pub fn size(&self) -> QueueSize {
        self.size
    }

    /// Free descriptors.
    #[cfg(test)]
    pub fn num_free(&self) -> u16 {
        self.num_free
    }

    /// Chains published to the device and not yet taken off the used ring.
    pub fn outstanding(&self) -> u16 {
        self.published.wrapping_sub(self.last_used)
    }

    /// Whether the device broke the used ring (see [`RingError`]).
    pub fn is_broken(&self) -> bool {
        self.broken.is_some()
    }

    /// The rule the device broke, once the queue is broken.
    pub fn error(&self) -> Option<RingError> {
        self.broken
    }

    /// Whether `id` heads a chain in flight (pushed and not yet completed).
    #[cfg(any(test, feature = "test-utils"))]
    pub fn is_in_flight(&self, id: u16) -> bool {
        id < self.size.get() && self.slot(id).is_some_and(|s| s.tail != NONE)
    }

    /// The ids of all chains in flight, for completing them after a reset. O(size).
    #[cfg(test)]
    pub fn in_flight(&self) -> impl Iterator<Item = u16> + '_ {
        (0..self.size.get()).filter(|&id| self.is_in_flight(id))
    }

    /// Makes an indirect table of `table_len` bytes at bus address `table` available as one
    /// descriptor (2.7.5.3); returns its id. Visible to the device after [`Self::publish`].
    pub fn push_indirect(&mut self, table: u64, table_len: u32) -> Result<u16, PushError> {
        let entries = table_len / DESCRIPTOR_BYTES;
        if table_len == 0
            || !table_len.is_multiple_of(DESCRIPTOR_BYTES)
            || entries > u32::from(self.size.get())
        {
            return Err(PushError::InvalidTable);
        }
        if self.num_free == 0 {
            return Err(PushError::Full);
        }
        let head = self.free_head;
        let written = self.desc.write(
            head,
            RawDescriptor {
                address: table,
                len: table_len,
                flags: desc_flags::INDIRECT,
                next: 0,
            },
        );
        let Some(next_free) = self.slot(head).map(|s| s.next).filter(|_| written) else {
            // Unreachable by the free-list invariant; refuse rather than corrupt.
            return Err(PushError::Full);
        };
        self.free_head = next_free;
        #[expect(
            clippy::arithmetic_side_effects,
            reason = "num_free != 0 was checked above, with nothing in between taking one"
        )]
        let num_free = self.num_free - 1;
        self.num_free = num_free;
        self.make_available(head, head, 1);
        Ok(head)
    }

    /// Makes a chain of direct descriptors available (for a device without
    /// VIRTIO_F_INDIRECT_DESC); returns the id of its head. Visible after [`Self::publish`].
    ///
    /// Device-readable descriptors must come before device-writable ones. Linear in the length
    /// of the chain; on any error nothing is made available and no descriptor is lost.
    pub fn push_chain<I>(&mut self, chain: I) -> Result<u16, PushError>
    where
        I: IntoIterator<Item = Descriptor>,
    {
        let mut chain = chain.into_iter().peekable();
        if chain.peek().is_none() {
            return Err(PushError::EmptyChain);
        }
        // Walk the free list without unlinking: on failure the list is unchanged, on success
        // the first `count` descriptors of it become the chain, already linked in order.
        let head = self.free_head;
        let mut current = head;
        let mut tail = head;
        let mut count: u16 = 0;
        let mut seen_writable = false;
        while let Some(d) = chain.next() {
            if count == self.num_free {
                return Err(PushError::Full);
            }
            if seen_writable && !d.device_writable {
                return Err(PushError::WritableBeforeReadable);
            }
            seen_writable |= d.device_writable;
            let Some(next_free) = self.slot(current).map(|s| s.next) else {
                return Err(PushError::Full);
            };
            let more = chain.peek().is_some();
            let mut flags = if d.device_writable {
                desc_flags::WRITE
            } else {
                0
            };
            if more {
                flags |= desc_flags::NEXT;
            }
            let raw = RawDescriptor {
                address: d.address,
                len: d.len,
                flags,
                next: if more { next_free } else { 0 },
            };
            if !self.desc.write(current, raw) {
                return Err(PushError::Full);
            }
            tail = current;
            current = next_free;
            #[expect(
                clippy::arithmetic_side_effects,
                reason = "count < num_free (<= MAX_QUEUE_SIZE) was checked at the loop's top"
            )]
            let next_count = count + 1;
            count = next_count;
        }
        // INVARIANT: `count` descriptors leave the free list, which now starts after `tail`.
        self.free_head = current;
        #[expect(
            clippy::arithmetic_side_effects,
            reason = "the loop ends with count <= num_free (it returns Full at count == num_free)"
        )]
        let num_free = self.num_free - count;
        self.num_free = num_free;
        self.make_available(head, tail, count);
        Ok(head)
    }

    /// Publishes every chain pushed since the last publish: one release store of `avail.idx`
    /// (2.7.13.3: descriptors and ring entries are visible before the index).
    pub fn publish(&mut self) {
        if self.published == self.next_avail {
            return;
        }
        if let Some(idx) = self.avail_word(1) {
            idx.store(self.next_avail.to_le(), Ordering::Release);
        }
        self.published = self.next_avail;
        self.unpublished = [0; MAX_QUEUE_SIZE as usize / 64];
    }

    /// Whether the device must be notified of what was published since the last call
    /// (2.7.13.4). With event index: `vring_need_event(avail_event, new, old)` (2.7.10);
    /// otherwise unless the device set VIRTQ_USED_F_NO_NOTIFY.
    pub fn needs_notify(&mut self) -> bool {
        // The avail.idx store must be visible before the device's suppression word is read,
        // or a device that just went idle is never woken (2.7.13.4: full barrier).
        fence(Ordering::SeqCst);
        let old = self.notified_at;
        let new = self.published;
        self.notified_at = new;
        if old == new {
            return false;
        }
        if self.event_idx {
            #[expect(
                clippy::arithmetic_side_effects,
                reason = "size <= MAX_QUEUE_SIZE (256): the index is at most 1026"
            )]
            let avail_event = self.used_word(2 + 4 * self.size.usize());
            let event = avail_event.map_or(old, |w| u16::from_le(w.load(Ordering::Relaxed)));
            need_event(event, new, old)
        } else {
            let flags = self
                .used_word(0)
                .map_or(0, |w| u16::from_le(w.load(Ordering::Relaxed)));
            flags & USED_F_NO_NOTIFY == 0
        }
    }

    /// Takes the next element off the used ring, validating it (2.7.8, 2.7.14).
    ///
    /// `None` when the ring is empty or the queue is broken. `Some(Err(_))` once, when the
    /// device breaks the ring's rules; the queue is then broken and returns `None` until
    /// [`Self::reset`], so `while let Some(r) = q.pop_used()` always ends.
    pub fn pop_used(&mut self) -> Option<Result<UsedElem, RingError>> {
        if self.broken.is_some() {
            return None;
        }
        if self.last_used == self.used_seen {
            let used_idx = u16::from_le(self.used_word(1)?.load(Ordering::Acquire));
            if used_idx == self.last_used {
                return None;
            }
            // 2.7.8: one used element per available chain, so the device cannot be further
            // ahead than what it was given.
            if used_idx.wrapping_sub(self.last_used) > self.outstanding() {
                return Some(Err(self.fail(RingError::IndexOutOfRange {
                    used_idx,
                    last_used: self.last_used,
                })));
            }
            self.used_seen = used_idx;
        }
        let index = usize::from(self.last_used & self.size.mask());
        let used = self.used.u32s()?;
        // used.ring[index] is the two words after the 4-byte flags/idx header.
        #[expect(
            clippy::arithmetic_side_effects,
            reason = "index = last_used & mask < size <= 256: the word index is at most 512"
        )]
        let (id_word, len_word) = (1 + 2 * index, 2 + 2 * index);
        let id = u32::from_le(used.get(id_word)?.load(Ordering::Relaxed));
        let len = u32::from_le(used.get(len_word)?.load(Ordering::Relaxed));
        self.last_used = self.last_used.wrapping_add(1);

        let head = match u16::try_from(id) {
            Ok(head) if head < self.size.get() => head,
            _ => return Some(Err(self.fail(RingError::IdOutOfRange { id }))),
        };
        let Some(&slot) = self.slot(head).filter(|s| s.tail != NONE) else {
            return Some(Err(self.fail(RingError::UnknownId { id: head })));
        };
        // 2.7.8: the device returns chains it took from the available ring; one pushed but not
        // yet published is not there (its descriptors would rejoin the free list while the
        // entry naming them is still to be published).
        if self.is_unpublished(head) {
            return Some(Err(self.fail(RingError::UnknownId { id: head })));
        }
        // Return the chain to the free list in O(1): splice it in front.
        let free_head = self.free_head;
        if let Some(tail) = self.slot_mut(slot.tail) {
            tail.next = free_head;
        }
        if let Some(h) = self.slot_mut(head) {
            h.tail = NONE;
            h.count = 0;
        }
        // INVARIANT: the chain's `count` descriptors rejoin the free list.
        self.free_head = head;
        self.num_free = self.num_free.saturating_add(slot.count);
        Some(Ok(UsedElem { id: head, len }))
    }

    /// Asks the device for an interrupt at the next completion and returns whether
    /// completions are already pending, in which case the caller must drain again: they may
    /// have arrived before the request took effect, and no interrupt would announce them
    /// (2.7.14, the classic lost-wakeup race).
    ///
    /// A broken queue answers false: nothing more will be taken from it, so "pending"
    /// completions there are no reason to drain again (a caller looping on this answer would
    /// never stop).
    pub fn enable_interrupts(&mut self) -> bool {
        if self.broken.is_some() {
            return false;
        }
        if self.event_idx {
            // Interrupt when the device writes used element `last_used` (2.7.7).
            #[expect(
                clippy::arithmetic_side_effects,
                reason = "size <= MAX_QUEUE_SIZE (256): the index is at most 258"
            )]
            let used_event = self.avail_word(2 + self.size.usize());
            if let Some(w) = used_event {
                w.store(self.last_used.to_le(), Ordering::Relaxed);
            }
        } else if let Some(flags) = self.avail_word(0) {
            flags.store(0, Ordering::Relaxed);
        }
        fence(Ordering::SeqCst);
        self.used_word(1)
            .is_some_and(|w| u16::from_le(w.load(Ordering::Acquire)) != self.last_used)
    }

    /// Asks the device not to interrupt for completions (a hint: the device may still).
    #[cfg(any(test, feature = "test-utils"))]
    pub fn disable_interrupts(&mut self) {
        if self.event_idx {
            // 2.7.7.1: with event index `avail.flags` must stay 0. An event one behind the next
            // used index is only crossed again after 2^16 completions: none can be in flight.
            #[expect(
                clippy::arithmetic_side_effects,
                reason = "size <= MAX_QUEUE_SIZE (256): the index is at most 258"
            )]
            let used_event = self.avail_word(2 + self.size.usize());
            if let Some(w) = used_event {
                w.store(self.last_used.wrapping_sub(1).to_le(), Ordering::Relaxed);
            }
        } else if let Some(flags) = self.avail_word(0) {
            flags.store(AVAIL_F_NO_INTERRUPT.to_le(), Ordering::Relaxed);
        }
    }

    /// Records chain `head..=tail` in flight and puts `head` in the next available entry.
    fn make_available(&mut self, head: u16, tail: u16, count: u16) {
        if let Some(slot) = self.slot_mut(head) {
            slot.tail = tail;
            slot.count = count;
        }
        let index = usize::from(self.next_avail & self.size.mask());
        if let Some(entry) = self.avail_word(2 + index) {
            entry.store(head.to_le(), Ordering::Relaxed);
        }
        if let Some(word) = self.unpublished.get_mut(usize::from(head / 64)) {
            *word |= 1 << (head % 64);
        }
        self.next_avail = self.next_avail.wrapping_add(1);
    }

    /// Whether `head` was made available after the last publish.
    fn is_unpublished(&self, head: u16) -> bool {
        self.unpublished
            .get(usize::from(head / 64))
            .is_some_and(|word| word & (1 << (head % 64)) != 0)
    }

    fn fail(&mut self, error: RingError) -> RingError {
        self.broken = Some(error);
        error
    }

    fn slot(&self, index: u16) -> Option<&Slot> {
        self.slots.get(usize::from(index))
    }

    fn slot_mut(&mut self, index: u16) -> Option<&mut Slot> {
        self.slots.get_mut(usize::from(index))
    }

    fn avail_word(&self, index: usize) -> Option<&AtomicU16> {
        self.avail.u16s()?.get(index)
    }

    fn used_word(&self, index: usize) -> Option<&AtomicU16> {
        self.used.u16s()?.get(index)
    }
}

/// `vring_need_event` (2.7.7, 2.7.10): whether moving the index from `old` to `new` crossed the
/// other side's `event` index, i.e. `event` is in `[old, new)` modulo 2^16.
pub(crate) fn need_event(event: u16, new: u16, old: u16) -> bool {
    new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::arithmetic_side_effects,
        clippy::cast_possible_truncation,
        clippy::panic,
        reason = "tests index fixed buffers and fail by panicking"
    )]

    extern crate std;
    use super::*;
    use std::vec::Vec;

    /// A leaked, 64-aligned DMA buffer of `len` bytes at bus address `phys`.
    pub(crate) fn dma(len: usize, phys: u64) -> DmaRegion<'static> {
        // Over-allocate by a cache line and start at a 64-aligned word.
        let words: Vec<AtomicU64> = (0..len / 8 + 8).map(|_| AtomicU64::new(0)).collect();
        let words: &'static [AtomicU64] = std::boxed::Box::leak(words.into_boxed_slice());
        let skip = (64 - (words.as_ptr() as usize % 64)) % 64 / 8;
        DmaRegion::from_test_buffer(&words[skip..skip + len / 8 + 1], phys)
    }

    /// The device side of a queue, written for these tests: reads the available ring and
    /// descriptors, writes the used ring (through the same memory the queue uses).
    struct Device {
        desc: DescriptorTable<'static>,
        avail: DmaRegion<'static>,
        used: DmaRegion<'static>,
        size: u16,
        last_avail: u16,
        used_idx: u16,
    }

    impl Device {
        fn new(memory: DmaRegion<'static>, size: QueueSize) -> Self {
            let l = Layout::new(size);
            Self {
                desc: DescriptorTable::new(memory.subregion(0, l.avail).unwrap()).unwrap(),
                avail: memory.subregion(l.avail, l.avail_len).unwrap(),
                used: memory.subregion(l.used, l.used_len).unwrap(),
                size: size.get(),
                last_avail: 0,
                used_idx: 0,
            }
        }

        fn avail(&self, i: usize) -> u16 {
            self.avail.u16s().unwrap()[i].load(Ordering::Acquire)
        }

        /// Takes the next available head, if any.
        fn pop_avail(&mut self) -> Option<u16> {
            if self.avail(1) == self.last_avail {
                return None;
            }
            let head = self.avail(2 + usize::from(self.last_avail % self.size));
            self.last_avail = self.last_avail.wrapping_add(1);
            Some(head)
        }

        /// The chain starting at `head`.
        fn chain(&self, head: u16) -> Vec<RawDescriptor> {
            let mut out = Vec::new();
            let mut i = head;
            loop {
                let d = self.desc.read(i).unwrap();
                out.push(d);
                if !d.has_next() {
                    return out;
                }
                i = d.next;
            }
        }

        /// The chain of the next available head.
        fn next_chain(&mut self) -> Vec<RawDescriptor> {
            let head = self.pop_avail().unwrap();
            self.chain(head)
        }

        fn write_used(&mut self, id: u32, len: u32) {
            let slot = usize::from(self.used_idx % self.size);
            let words = self.used.u32s().unwrap();
            words[1 + 2 * slot].store(id, Ordering::Relaxed);
            words[2 + 2 * slot].store(len, Ordering::Relaxed);
            self.used_idx = self.used_idx.wrapping_add(1);
            self.set_used_idx(self.used_idx);
        }

        fn set_used_idx(&self, idx: u16) {
            self.used.u16s().unwrap()[1].store(idx, Ordering::Release);
        }

        fn set_avail_event(&self, value: u16) {
            self.used.u16s().unwrap()[2 + 4 * usize::from(self.size)]
                .store(value, Ordering::Relaxed);
        }

        fn set_used_flags(&self, value: u16) {
            self.used.u16s().unwrap()[0].store(value, Ordering::Relaxed);
        }

        fn used_event(&self) -> u16 {
            self.avail(2 + usize::from(self.size))
        }
    }

    fn queue(size: u16, event_idx: bool) -> (SplitQueue, Device) {
        let size = QueueSize::new(size).unwrap();
        let memory = dma(SplitQueue::memory_size(size), 0x10_0000);
        let q = SplitQueue::new(memory, size, event_idx).unwrap();
        (q, Device::new(memory, size))
    }

    #[test]
    fn sizes_and_layout() {
        assert_eq!(QueueSize::new(0), None);
        assert_eq!(QueueSize::new(96), None);
        assert_eq!(QueueSize::new(256), None);
        assert_eq!(QueueSize::choose(1024, 256).unwrap().get(), 128);
        assert_eq!(QueueSize::choose(96, 1000).unwrap().get(), 64);
        assert_eq!(QueueSize::choose(1, 1).unwrap().get(), 1);
        assert_eq!(QueueSize::choose(0, 128), None);
        assert_eq!(
            QueueSize::choose(32768, 32768).unwrap().get(),
            MAX_QUEUE_SIZE
        );

        let l = Layout::new(QueueSize::new(128).unwrap());
        assert_eq!(l.avail, 2048);
        assert_eq!(l.avail_len, 262);
        assert_eq!(l.used, 2048 + 320);
        assert_eq!(l.used % 64, 0);
        assert_eq!(l.total, 2368 + 1088);
        for shift in 0..=7 {
            let size = QueueSize::new(1 << shift).unwrap();
            let l = Layout::new(size);
            assert!(l.avail + l.avail_len <= l.used && l.used + l.used_len <= l.total);
            assert_eq!(SplitQueue::memory_size(size) % 64, 0);
        }

        let size = QueueSize::new(8).unwrap();
        let need = SplitQueue::memory_size(size);
        let m = dma(need, 0x1000);
        assert_eq!(
            SplitQueue::new(m.subregion(0, need - 1).unwrap(), size, false).unwrap_err(),
            LayoutError::TooSmall { needed: need }
        );
        assert_eq!(
            SplitQueue::new(dma(need, 0x1008), size, false).unwrap_err(),
            LayoutError::Misaligned
        );
        // 16-aligned works; a 4-byte offset misaligns both addresses.
        let spare = dma(need + 64, 0x1000);
        assert!(SplitQueue::new(spare.subregion(16, need).unwrap(), size, false).is_ok());
        assert_eq!(
            SplitQueue::new(spare.subregion(4, need).unwrap(), size, false).unwrap_err(),
            LayoutError::Misaligned
        );
        let q = SplitQueue::new(m, size, false).unwrap();
        let a = q.addresses();
        assert_eq!((a.size, a.descriptors, a.driver), (8, 0x1000, 0x1000 + 128));
        assert_eq!(a.device, 0x1000 + 192);
    }

    #[test]
    fn indirect_push_publish_pop() {
        let (mut q, mut dev) = queue(8, false);
        let a = q.push_indirect(0xA000, 3 * 16).unwrap();
        let b = q.push_indirect(0xB000, 4 * 16).unwrap();
        assert_ne!(a, b);
        // Nothing visible before publish.
        assert_eq!(dev.pop_avail(), None);
        q.publish();
        assert_eq!(q.outstanding(), 2);
        assert!(q.needs_notify());
        assert!(!q.needs_notify(), "nothing new published");

        let ha = dev.pop_avail().unwrap();
        let hb = dev.pop_avail().unwrap();
        assert_eq!((ha, hb), (a, b));
        assert_eq!(
            dev.chain(ha),
            [RawDescriptor {
                address: 0xA000,
                len: 48,
                flags: desc_flags::INDIRECT,
                next: 0
            }]
        );
        assert_eq!(q.pop_used(), None);
        dev.write_used(u32::from(hb), 7);
        dev.write_used(u32::from(ha), 0);
        assert_eq!(q.pop_used(), Some(Ok(UsedElem { id: b, len: 7 })));
        assert_eq!(q.pop_used(), Some(Ok(UsedElem { id: a, len: 0 })));
        assert_eq!(q.pop_used(), None);
        assert_eq!(q.num_free(), 8);
        assert_eq!(q.outstanding(), 0);
    }

    #[test]
    fn indirect_table_checks() {
        let (mut q, _) = queue(4, false);
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
    }

    #[test]
    fn indices_wrap_around() {
        // 70000 requests through a 4-entry queue: every 16-bit index wraps.
        let (mut q, mut dev) = queue(4, true);
        let mut next_table = 0u64;
        for round in 0..70_000u32 {
            let batch = 1 + round % 4;
            let mut ids = Vec::new();
            for _ in 0..batch {
                next_table += 16;
                ids.push((q.push_indirect(next_table, 16).unwrap(), next_table));
            }
            q.publish();
            let mut seen = Vec::new();
            while let Some(head) = dev.pop_avail() {
                seen.push((head, dev.desc.read(head).unwrap().address));
            }
            assert_eq!(seen, ids);
            // Complete in reverse order.
            for &(head, _) in ids.iter().rev() {
                dev.write_used(u32::from(head), round);
            }
            for &(head, _) in ids.iter().rev() {
                assert_eq!(
                    q.pop_used(),
                    Some(Ok(UsedElem {
                        id: head,
                        len: round
                    }))
                );
            }
            assert_eq!(q.pop_used(), None);
        }
        assert_eq!(q.num_free(), 4);
    }

    #[test]
    fn need_event_math() {
        // event in [old, new) => notify.
        assert!(need_event(0, 1, 0));
        assert!(!need_event(1, 1, 0));
        assert!(need_event(5, 10, 5));
        assert!(need_event(9, 10, 5));
        assert!(!need_event(10, 10, 5));
        assert!(!need_event(4, 10, 5));
        // Across the wrap.
        assert!(need_event(0xFFFF, 2, 0xFFFE));
        assert!(need_event(1, 2, 0xFFFE));
        assert!(!need_event(2, 2, 0xFFFE));
        assert!(!need_event(0xFFFD, 2, 0xFFFE));
    }

    #[test]
    fn event_idx_notification() {
        let (mut q, mut dev) = queue(8, true);
        // The device asks to be kicked when avail.idx moves past 0.
        dev.set_avail_event(0);
        q.push_indirect(0x1000, 16).unwrap();
        q.publish();
        assert!(q.needs_notify());
        // The device is busy and wants a kick only after index 3.
        dev.set_avail_event(3);
        q.push_indirect(0x1000, 16).unwrap();
        q.publish(); // avail.idx 1 -> 2
        assert!(!q.needs_notify());
        q.push_indirect(0x1000, 16).unwrap();
        q.push_indirect(0x1000, 16).unwrap();
        q.publish(); // 2 -> 4 crosses 3
        assert!(q.needs_notify());
        while dev.pop_avail().is_some() {}
    }

    #[test]
    fn flag_notification() {
        let (mut q, dev) = queue(8, false);
        dev.set_used_flags(USED_F_NO_NOTIFY);
        q.push_indirect(0x1000, 16).unwrap();
        q.publish();
        assert!(!q.needs_notify());
        dev.set_used_flags(0);
        q.push_indirect(0x1000, 16).unwrap();
        q.publish();
        assert!(q.needs_notify());
    }

    #[test]
    fn interrupt_suppression() {
        let (mut q, mut dev) = queue(8, true);
        let id = q.push_indirect(0x1000, 16).unwrap();
        q.publish();
        dev.pop_avail();
        q.disable_interrupts();
        assert_eq!(dev.used_event(), 0xFFFF);
        assert!(!q.enable_interrupts());
        assert_eq!(dev.used_event(), 0);
        // A completion racing with re-enabling is reported so the caller drains again.
        dev.write_used(u32::from(id), 0);
        assert!(q.enable_interrupts());
        assert!(q.pop_used().unwrap().is_ok());
        assert!(!q.enable_interrupts());
        assert_eq!(dev.used_event(), 1);

        let (mut q, dev) = queue(8, false);
        q.disable_interrupts();
        assert_eq!(dev.avail(0), AVAIL_F_NO_INTERRUPT);
        assert!(!q.enable_interrupts());
        assert_eq!(dev.avail(0), 0);
    }

    #[test]
    fn hostile_used_index() {
        let (mut q, mut dev) = queue(8, false);
        q.push_indirect(0x1000, 16).unwrap();
        q.push_indirect(0x1000, 16).unwrap();
        q.publish();
        q.push_indirect(0x1000, 16).unwrap(); // pushed, not published
        dev.pop_avail();
        // Three used entries for two published chains.
        dev.set_used_idx(3);
        assert_eq!(
            q.pop_used(),
            Some(Err(RingError::IndexOutOfRange {
                used_idx: 3,
                last_used: 0
            }))
        );
        assert!(q.is_broken());
        assert_eq!(q.pop_used(), None);
        // Broken: nothing is "pending" any more (a caller draining until enable_interrupts says
        // false would otherwise spin: issue 10), and the first rule broken is kept.
        assert!(!q.enable_interrupts());
        assert_eq!(
            q.error(),
            Some(RingError::IndexOutOfRange {
                used_idx: 3,
                last_used: 0
            })
        );
        q.reset();
        assert_eq!(q.error(), None);
        // Negative: a healthy ring with a completion waiting says so.
        q.push_indirect(0x1000, 16).unwrap();
        q.publish();
        dev.set_used_idx(1);
        assert!(q.enable_interrupts());
        // A jump backwards is a jump of almost 2^16 forwards.
        let (mut q, dev) = queue(8, false);
        q.push_indirect(0x1000, 16).unwrap();
        q.publish();
        dev.set_used_idx(0xFFFF);
        assert!(matches!(
            q.pop_used(),
            Some(Err(RingError::IndexOutOfRange { .. }))
        ));
    }

    #[test]
    fn hostile_used_ids() {
        let (mut q, mut dev) = queue(8, false);
        q.push_indirect(0x1000, 16).unwrap();
        q.publish();
        dev.write_used(8, 0);
        assert_eq!(q.pop_used(), Some(Err(RingError::IdOutOfRange { id: 8 })));
        assert_eq!(q.pop_used(), None);

        let (mut q, mut dev) = queue(8, false);
        q.push_indirect(0x1000, 16).unwrap();
        q.publish();
        dev.write_used(0x1_0000, 0);
        assert_eq!(
            q.pop_used(),
            Some(Err(RingError::IdOutOfRange { id: 0x1_0000 }))
        );

        // An idle descriptor.
        let (mut q, mut dev) = queue(8, false);
        q.push_indirect(0x1000, 16).unwrap();
        q.publish();
        dev.write_used(5, 0);
        assert_eq!(q.pop_used(), Some(Err(RingError::UnknownId { id: 5 })));

        // A double completion.
        let (mut q, mut dev) = queue(8, false);
        let a = q.push_indirect(0x1000, 16).unwrap();
        q.push_indirect(0x1000, 16).unwrap();
        q.publish();
        dev.write_used(u32::from(a), 0);
        dev.write_used(u32::from(a), 0);
        assert_eq!(q.pop_used(), Some(Ok(UsedElem { id: a, len: 0 })));
        assert_eq!(q.pop_used(), Some(Err(RingError::UnknownId { id: a })));
        assert_eq!(q.pop_used(), None);

        // A chain pushed but not yet published (found by the used-ring fuzz target: it used to
        // complete, its descriptors rejoining the free list before the device was given them).
        let (mut q, mut dev) = queue(8, false);
        let a = q.push_indirect(0x1000, 16).unwrap();
        q.publish();
        let b = q.push_indirect(0x2000, 16).unwrap();
        dev.write_used(u32::from(b), 0);
        assert_eq!(q.pop_used(), Some(Err(RingError::UnknownId { id: b })));
        assert_eq!(q.pop_used(), None);
        // Once published, the same completion is fine.
        let (mut q, mut dev) = queue(8, false);
        q.push_indirect(0x1000, 16).unwrap();
        q.publish();
        let b = q.push_indirect(0x2000, 16).unwrap();
        q.publish();
        dev.write_used(u32::from(b), 0);
        assert_eq!(q.pop_used(), Some(Ok(UsedElem { id: b, len: 0 })));
        let _ = a;

        // A non-head descriptor of a direct chain is not an id.
        let (mut q, mut dev) = queue(8, false);
        let d = |w| Descriptor {
            address: 0x2000,
            len: 16,
            device_writable: w,
        };
        let head = q.push_chain([d(false), d(true)]).unwrap();
        q.publish();
        let second = dev.next_chain()[0].next;
        assert_ne!(second, head);
        dev.write_used(u32::from(second), 0);
        assert_eq!(q.pop_used(), Some(Err(RingError::UnknownId { id: second })));
        // Reset clears the broken state.
        q.reset();
        assert!(!q.is_broken());
        assert_eq!(q.num_free(), 8);
    }

    #[test]
    fn direct_chains() {
        let (mut q, mut dev) = queue(8, false);
        let d = |address, w| Descriptor {
            address,
            len: 0x200,
            device_writable: w,
        };
        let a = q
            .push_chain([d(0x1000, false), d(0x2000, true), d(0x3000, true)])
            .unwrap();
        let b = q.push_chain([d(0x4000, false), d(0x5000, false)]).unwrap();
        assert_eq!(q.num_free(), 3);
        // Does not fit: nothing is taken.
        assert_eq!(
            q.push_chain([d(0, false), d(0, false), d(0, false), d(0, true)]),
            Err(PushError::Full)
        );
        assert_eq!(q.num_free(), 3);
        assert_eq!(q.push_chain([]), Err(PushError::EmptyChain));
        assert_eq!(
            q.push_chain([d(0, true), d(0, false)]),
            Err(PushError::WritableBeforeReadable)
        );
        assert_eq!(q.num_free(), 3);
        q.publish();

        let chain = dev.next_chain();
        let flags: Vec<_> = chain.iter().map(|c| (c.address, c.flags)).collect();
        assert_eq!(
            flags,
            [
                (0x1000, desc_flags::NEXT),
                (0x2000, desc_flags::NEXT | desc_flags::WRITE),
                (0x3000, desc_flags::WRITE)
            ]
        );
        assert_eq!(dev.next_chain().len(), 2);
        assert_eq!(q.in_flight().collect::<Vec<_>>().len(), 2);
        dev.write_used(u32::from(a), 0x400);
        assert_eq!(q.pop_used(), Some(Ok(UsedElem { id: a, len: 0x400 })));
        assert_eq!(q.num_free(), 6);
        dev.write_used(u32::from(b), 0);
        assert!(q.pop_used().unwrap().is_ok());
        assert_eq!(q.num_free(), 8);
        // The recycled descriptors make a full-length chain.
        let all = [d(0, false); 8];
        let c = q.push_chain(all).unwrap();
        assert_eq!(q.num_free(), 0);
        q.publish();
        assert_eq!(dev.next_chain().len(), 8);
        dev.write_used(u32::from(c), 0);
        assert!(q.pop_used().unwrap().is_ok());
        assert_eq!(q.num_free(), 8);
        assert!(!q.is_in_flight(c));
    }

    #[test]
    fn mixed_random_completion_order() {
        // Direct chains of varying lengths completed out of order keep the free list whole.
        let (mut q, mut dev) = queue(16, true);
        let mut in_flight: Vec<u16> = Vec::new();
        let mut seed = 12345u32;
        for _ in 0..5000 {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let len = 1 + (seed >> 16) as usize % 5;
            let chain = (0..len).map(|i| Descriptor {
                address: i as u64,
                len: 1,
                device_writable: i + 1 == len,
            });
            match q.push_chain(chain) {
                Ok(id) => in_flight.push(id),
                Err(PushError::Full) => {}
                Err(e) => panic!("{e:?}"),
            }
            q.publish();
            while dev.pop_avail().is_some() {}
            if !in_flight.is_empty() && seed.is_multiple_of(3) {
                let pick = (seed as usize / 7) % in_flight.len();
                let id = in_flight.swap_remove(pick);
                dev.write_used(u32::from(id), 0);
                assert_eq!(q.pop_used(), Some(Ok(UsedElem { id, len: 0 })));
            }
            let used: u16 = in_flight
                .iter()
                .map(|&h| q.slots[usize::from(h)].count)
                .sum();
            assert_eq!(used + q.num_free(), 16);
        }
    }
}
