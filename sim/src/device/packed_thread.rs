//! The packed virtqueue's part (VIRTIO 1.2 2.8) of `queue_thread`'s loop, which serves split
//! rings over rust-vmm `virtio-queue` the same way.
//!
//! The same pattern: sleep until a doorbell, then take buffers with notifications disabled until
//! none is left, re-enable them and go round again if a buffer slipped in meanwhile; after each
//! used buffer ask the driver area whether to interrupt. A protocol error sets DEVICE_NEEDS_RESET.
//! Of the fault modes, NeedsReset, LostRequest and BadStatus apply to packed rings as they are; the
//! split ring's used-ring lies (UsedIdOutOfRange, UsedLenTooLarge, UsedIdxJump) become the packed
//! ring's own: an id past the queue size, a length past the buffer, and a used descriptor written
//! with the previous lap's wrap pattern; DuplicateUsedId writes the id again at the used position
//! after the buffer's (which the driver may have made available), before the buffer's own used
//! descriptor. `Slow` holds a request as on a split ring. Bus Master Enable and surprise removal
//! are honoured as there: a device whose DMA is cut (or that is gone) takes no buffer and writes
//! nothing, and every device write into a buffer is reported to the [`super::model`]'s watch first,
//! so a write into a request the driver already completed is seen (virtio-win #1326).

use std::sync::atomic::Ordering;

use vm_memory::GuestMemoryMmap;

use super::blk::{ChainError, Segments};
use super::fault::FaultMode;
use super::model::Shared;
use super::packed::{Chain, PackedRing, RingMemory, desc_flags};
use super::queue_thread::{Broken, DeviceRing};

impl DeviceRing for PackedRing {
    type Chain<'m> = Chain;
    /// The buffer itself (its id).
    type Taken = Chain;
    const THREAD_NAME: &'static str = "virtio-blk-pq";

    fn disable_notification(&mut self, mem: &GuestMemoryMmap) -> Result<(), Broken> {
        PackedRing::disable_notification(self, mem).map_err(|_| Broken)
    }

    fn enable_notification(&mut self, mem: &GuestMemoryMmap) -> Result<bool, Broken> {
        PackedRing::enable_notification(self, mem).map_err(|_| Broken)
    }

    fn next_chain(&mut self, mem: &GuestMemoryMmap) -> Result<Option<Chain>, Broken> {
        self.pop(mem).map_err(|_| Broken)
    }

    fn collect(
        chain: Chain,
        segs: &mut Segments,
        mem: &GuestMemoryMmap,
    ) -> Result<(u64, Chain), ChainError> {
        Ok((segs.collect_elements(&chain.elements, mem)?, chain))
    }

    fn complete(
        &mut self,
        shared: &Shared,
        chain: &Chain,
        chain_len: u64,
        used_len: u32,
        fault: FaultMode,
    ) -> Result<(), Broken> {
        let mem = &*shared.mem;
        let both = desc_flags::AVAIL | desc_flags::USED;
        if fault == FaultMode::DuplicateUsedId {
            // The id once more, at the used position after this buffer's (over whatever the
            // driver made available there), written before the buffer's own used descriptor so
            // that a driver which takes this buffer finds the repeat right after it; the ring's
            // own bookkeeping moves on as for one used buffer.
            let (position, wrap) = self.used_position_after(chain.id).ok_or(Broken)?;
            let flags = if wrap { both } else { 0 };
            let word = u64::from(used_len) | u64::from(chain.id) << 32 | u64::from(flags) << 48;
            mem.store_u64(self.slot_address(position) + 8, word, Ordering::Release)
                .ok_or(Broken)?;
            return self.add_used(mem, chain.id, used_len).map_err(|_| Broken);
        }
        let (id, len) = match fault {
            FaultMode::UsedIdOutOfRange => (self.size().saturating_add(7), used_len),
            FaultMode::UsedLenTooLarge => (
                chain.id,
                u32::try_from(chain_len + 4096).unwrap_or(u32::MAX),
            ),
            _ => (chain.id, used_len),
        };
        if id == chain.id && fault != FaultMode::UsedIdxJump {
            return self.add_used(mem, id, len).map_err(|_| Broken);
        }
        // A lie the ring's own bookkeeping refuses to write: write the descriptor by hand at the
        // next used position (an unknown id, or the previous lap's wrap pattern).
        let (position, wrap) = self.next_used();
        let (current, previous) = if wrap { (both, 0) } else { (0, both) };
        let flags = if fault == FaultMode::UsedIdxJump {
            previous
        } else {
            current
        };
        let word = u64::from(len) | u64::from(id) << 32 | u64::from(flags) << 48;
        mem.store_u64(self.slot_address(position) + 8, word, Ordering::Release)
            .ok_or(Broken)?;
        // The next buffer goes to the next position, as the split ring's used index moves on.
        self.retire_by_hand(chain.id).map_err(|_| Broken)
    }

    fn wants_interrupt(&mut self, mem: &GuestMemoryMmap) -> Result<bool, Broken> {
        self.needs_notification(mem).map_err(|_| Broken)
    }
}
