//! A virtqueue of either layout, chosen when VIRTIO_F_RING_PACKED is negotiated or not
//! (VIRTIO 1.2 2.6: "Each device can have zero or more virtqueues ... split or packed").
//!
//! [`Virtqueue`] gives the adapter one set of operations over a [`SplitQueue`] (2.7) or a
//! [`PackedQueue`] (2.8), so the I/O path does not care which the device took. The differences
//! that leaks through: a packed ring's indirect tables have the packed descriptor layout (the
//! caller rewrites a request's table with `RequestArea::repack_table` before
//! [`Virtqueue::push_indirect`]). In both layouts the caller checks the used length.

use storport::dma::DmaRegion;

use super::packed::{PackedQueue, PackedRingError};
use super::ring::{
    Descriptor, LayoutError, PushError, QueueAddresses, QueueSize, RingError, SplitQueue, UsedElem,
};

/// What the device broke, in whichever layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueError {
    /// A split ring's used ring (2.7.8).
    Split(RingError),
    /// A packed ring's used descriptors (2.8).
    Packed(PackedRingError),
}

/// The driver side of one virtqueue, split or packed.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "the driver has no heap to box into; a queue lives in the device extension either \
              way, and the split ring's bookkeeping is the larger (about 0.9 KiB against 0.6 KiB)"
)]
pub enum Virtqueue {
    /// VIRTIO_F_RING_PACKED not negotiated.
    Split(SplitQueue),
    /// VIRTIO_F_RING_PACKED negotiated.
    Packed(PackedQueue),
}

impl Virtqueue {
    /// Bytes of DMA memory a queue of `size` needs in the layout `packed` selects.
    pub fn memory_size(size: QueueSize, packed: bool) -> usize {
        if packed {
            PackedQueue::memory_size(size)
        } else {
            SplitQueue::memory_size(size)
        }
    }

    /// Places a queue in `memory` (see [`SplitQueue::new`] and [`PackedQueue::new`]).
    pub fn new(
        memory: DmaRegion<'static>,
        size: QueueSize,
        event_idx: bool,
        packed: bool,
    ) -> Result<Self, LayoutError> {
        if packed {
            Self::new_packed(memory, size, event_idx)
        } else {
            Self::new_split(memory, size, event_idx)
        }
    }

    // Each layout is built in a frame of its own: a queue is a few KiB of bookkeeping, and one
    // frame holding both (or a queue and its copy) would pass a page, which on Windows needs
    // `__chkstk` (the kernel stack is 24 KiB; the driver links no stack probe).
    #[inline(never)]
    fn new_packed(
        memory: DmaRegion<'static>,
        size: QueueSize,
        event_idx: bool,
    ) -> Result<Self, LayoutError> {
        PackedQueue::new(memory, size, event_idx).map(Self::Packed)
    }

    #[inline(never)]
    fn new_split(
        memory: DmaRegion<'static>,
        size: QueueSize,
        event_idx: bool,
    ) -> Result<Self, LayoutError> {
        SplitQueue::new(memory, size, event_idx).map(Self::Split)
    }

    /// Whether this is a packed ring.
    pub fn is_packed(&self) -> bool {
        matches!(self, Self::Packed(_))
    }

    /// Back to the initial state (after a device reset).
    pub fn reset(&mut self) {
        match self {
            Self::Split(q) => q.reset(),
            Self::Packed(q) => q.reset(),
        }
    }

    /// The bus addresses for the transport's queue setup.
    pub fn addresses(&self) -> QueueAddresses {
        match self {
            Self::Split(q) => q.addresses(),
            Self::Packed(q) => q.addresses(),
        }
    }

    /// Whether the device broke the ring.
    pub fn is_broken(&self) -> bool {
        match self {
            Self::Split(q) => q.is_broken(),
            Self::Packed(q) => q.is_broken(),
        }
    }

    /// The rule the device broke, once the queue is broken.
    pub fn error(&self) -> Option<QueueError> {
        match self {
            Self::Split(q) => q.error().map(QueueError::Split),
            Self::Packed(q) => q.error().map(QueueError::Packed),
        }
    }

    /// Buffers made available and not yet taken back.
    #[cfg(any(test, feature = "test-utils"))]
    pub fn outstanding(&self) -> u16 {
        match self {
            Self::Split(q) => q.outstanding(),
            Self::Packed(q) => q.outstanding(),
        }
    }

    /// Whether `id` names a buffer in flight.
    #[cfg(any(test, feature = "test-utils"))]
    pub fn is_in_flight(&self, id: u16) -> bool {
        match self {
            Self::Split(q) => q.is_in_flight(id),
            Self::Packed(q) => q.is_in_flight(id),
        }
    }

    /// Makes an indirect table available as one buffer.
    pub fn push_indirect(&mut self, table: u64, table_len: u32) -> Result<u16, PushError> {
        match self {
            Self::Split(q) => q.push_indirect(table, table_len),
            Self::Packed(q) => q.push_indirect(table, table_len),
        }
    }

    /// Makes a chain of direct descriptors available.
    pub fn push_chain<I>(&mut self, chain: I) -> Result<u16, PushError>
    where
        I: IntoIterator<Item = Descriptor>,
    {
        match self {
            Self::Split(q) => q.push_chain(chain),
            Self::Packed(q) => q.push_chain(chain),
        }
    }

    /// Publishes what was pushed (a split ring's `avail.idx`; a packed ring's buffers are
    /// visible once pushed).
    pub fn publish(&mut self) {
        if let Self::Split(q) = self {
            q.publish();
        }
    }

    /// Whether the device must be notified of what was published since the last call.
    pub fn needs_notify(&mut self) -> bool {
        match self {
            Self::Split(q) => q.needs_notify(),
            Self::Packed(q) => q.needs_notify(),
        }
    }

    /// Takes the next used buffer, validated; an error once, then `None` until reset. The
    /// used length is the device's, for the caller to check.
    pub fn pop_used(&mut self) -> Option<Result<UsedElem, QueueError>> {
        match self {
            Self::Split(q) => q.pop_used().map(|r| r.map_err(QueueError::Split)),
            Self::Packed(q) => q.pop_used().map(|r| r.map_err(QueueError::Packed)),
        }
    }

    /// Asks for an interrupt at the next used buffer; `true` if one is already there.
    pub fn enable_interrupts(&mut self) -> bool {
        match self {
            Self::Split(q) => q.enable_interrupts(),
            Self::Packed(q) => q.enable_interrupts(),
        }
    }

    /// Asks the device not to interrupt.
    #[cfg(any(test, feature = "test-utils"))]
    pub fn disable_interrupts(&mut self) {
        match self {
            Self::Split(q) => q.disable_interrupts(),
            Self::Packed(q) => q.disable_interrupts(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail by panicking")]

    use super::*;
    use crate::virtio::ring::tests::dma;

    #[test]
    fn both_layouts_through_one_interface() {
        let size = QueueSize::new(8).unwrap();
        assert_eq!(Virtqueue::memory_size(size, true), 256);
        assert_eq!(
            Virtqueue::memory_size(size, false),
            SplitQueue::memory_size(size)
        );
        for packed in [false, true] {
            let memory = dma(Virtqueue::memory_size(size, packed), 0x4000);
            let mut q = Virtqueue::new(memory, size, true, packed).unwrap();
            assert_eq!(q.is_packed(), packed);
            assert_eq!(q.addresses().descriptors, 0x4000);
            let id = q.push_indirect(0x9000, 32).unwrap();
            q.publish();
            assert!(q.needs_notify());
            assert!(q.is_in_flight(id));
            assert_eq!(q.outstanding(), 1);
            assert_eq!(q.pop_used(), None);
            assert!(!q.enable_interrupts());
            q.disable_interrupts();
            q.reset();
            assert_eq!(q.outstanding(), 0);
            assert!(!q.is_broken());
            assert_eq!(
                q.push_chain(core::iter::empty()),
                Err(PushError::EmptyChain)
            );
        }
        assert_eq!(
            Virtqueue::new(dma(64, 0x4000), size, false, true).unwrap_err(),
            LayoutError::TooSmall { needed: 256 }
        );
    }
}
