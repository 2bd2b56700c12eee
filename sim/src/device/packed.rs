//! The packed virtqueue, device side (VIRTIO 1.2 2.8), written for the model: rust-vmm's
//! `virtio-queue` has split rings only.
//!
//! [`PackedRing`] reads the descriptor ring the driver fills, in ring order, taking a buffer
//! when the descriptor at its next available position carries `AVAIL ==` its Driver Ring Wrap
//! Counter and `USED` the inverse (2.8.1, 2.8.2); it follows `NEXT` through the ring and
//! `INDIRECT` into a table of `struct pvirtq_desc` (2.8.6, 2.8.7). It marks a buffer used by
//! writing one descriptor (id, written length, `AVAIL == USED ==` its Device Ring Wrap Counter)
//! at its next used position and moving that position on by the buffer's chain length, in
//! whatever order the buffers complete (2.8.6, 2.8.8 without IN_ORDER). Event suppression
//! (2.8.10): it reads the driver area to decide whether a used buffer deserves an interrupt
//! (ENABLE, DISABLE, or DESC with VIRTIO_F_EVENT_IDX) and writes the device area to ask for or
//! refuse notifications of new buffers.
//!
//! The driver is checked as the model checks a split ring: an element that is not available
//! in its lap, a chain longer than the ring, `NEXT` or `INDIRECT` inside an indirect table,
//! `INDIRECT` together with `NEXT`, a table that is empty or not whole descriptors, an id
//! already in flight, or memory outside the guest's is a [`PackedError`], which the model
//! answers with DEVICE_NEEDS_RESET as QEMU's `virtio_error` does.
//!
//! Memory is reached through [`RingMemory`]: the model's `GuestMemoryMmap`, or any other
//! memory a test shares with a driver.

use std::collections::HashMap;
use std::sync::atomic::{Ordering, fence};

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// `struct pvirtq_desc` flags (2.8).
pub mod desc_flags {
    /// VIRTQ_DESC_F_NEXT.
    pub const NEXT: u16 = 1;
    /// VIRTQ_DESC_F_WRITE.
    pub const WRITE: u16 = 2;
    /// VIRTQ_DESC_F_INDIRECT.
    pub const INDIRECT: u16 = 4;
    /// VIRTQ_DESC_F_AVAIL.
    pub const AVAIL: u16 = 1 << 7;
    /// VIRTQ_DESC_F_USED.
    pub const USED: u16 = 1 << 15;
}

/// `struct pvirtq_event_suppress` values (2.8.10).
pub mod event {
    /// RING_EVENT_FLAGS_ENABLE.
    pub const ENABLE: u16 = 0;
    /// RING_EVENT_FLAGS_DISABLE.
    pub const DISABLE: u16 = 1;
    /// RING_EVENT_FLAGS_DESC.
    pub const DESC: u16 = 2;
    /// The wrap bit of `desc_event_off_wrap`.
    pub const WRAP: u16 = 1 << 15;
}

/// The largest packed queue (2.8: "up to 2^15 entries").
pub const MAX_SIZE: u16 = 1 << 15;

/// Atomic access to the memory the rings live in, by guest address.
pub trait RingMemory {
    /// Loads the naturally aligned 64-bit little-endian word at `addr`.
    fn load_u64(&self, addr: u64, order: Ordering) -> Option<u64>;
    /// Loads the naturally aligned 32-bit little-endian word at `addr`.
    fn load_u32(&self, addr: u64, order: Ordering) -> Option<u32>;
    /// Stores a naturally aligned 64-bit little-endian word at `addr`.
    fn store_u64(&self, addr: u64, value: u64, order: Ordering) -> Option<()>;
    /// Stores a naturally aligned 32-bit little-endian word at `addr`.
    fn store_u32(&self, addr: u64, value: u32, order: Ordering) -> Option<()>;
}

impl RingMemory for GuestMemoryMmap {
    fn load_u64(&self, addr: u64, order: Ordering) -> Option<u64> {
        self.load::<u64>(GuestAddress(addr), order)
            .ok()
            .map(u64::from_le)
    }

    fn load_u32(&self, addr: u64, order: Ordering) -> Option<u32> {
        self.load::<u32>(GuestAddress(addr), order)
            .ok()
            .map(u32::from_le)
    }

    fn store_u64(&self, addr: u64, value: u64, order: Ordering) -> Option<()> {
        self.store(value.to_le(), GuestAddress(addr), order).ok()
    }

    fn store_u32(&self, addr: u64, value: u32, order: Ordering) -> Option<()> {
        self.store(value.to_le(), GuestAddress(addr), order).ok()
    }
}

/// What the driver did wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PackedError {
    /// The ring addresses are misaligned (2.8.10.1: ring 16, event areas 4) or the size is 0
    /// or over 2^15.
    BadLayout,
    /// A ring, table or event area address outside guest memory.
    Memory,
    /// The chain breaks the rules (see the module documentation).
    BadChain,
    /// The driver made a buffer available with an id that is still in flight.
    DuplicateId(u16),
    /// The model was asked to complete an id that is not in flight (a model bug).
    UnknownId(u16),
}

/// One element of a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Element {
    /// Guest address.
    pub addr: u64,
    /// Length in bytes.
    pub len: u32,
    /// Device-writable.
    pub writable: bool,
}

/// A buffer the driver made available.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    /// The driver's buffer id.
    pub id: u16,
    /// Its elements, the indirect table's when it has one.
    pub elements: Vec<Element>,
    /// The ring positions it took.
    pub count: u16,
}

/// The device side of one packed virtqueue.
#[derive(Debug)]
pub struct PackedRing {
    desc: u64,
    driver: u64,
    device: u64,
    size: u16,
    event_idx: bool,
    next_avail: u16,
    avail_wrap: bool,
    next_used: u16,
    used_wrap: bool,
    /// Ids in flight and the positions each took.
    in_flight: HashMap<u16, u16>,
    /// Used positions written since the last interrupt decision.
    used_added: u16,
}

impl PackedRing {
    /// A ring at `desc` (descriptor ring), `driver` (driver area) and `device` (device area)
    /// of `size` entries, with DESC event suppression when VIRTIO_F_EVENT_IDX was negotiated.
    pub fn new(
        desc: u64,
        driver: u64,
        device: u64,
        size: u16,
        event_idx: bool,
    ) -> Result<Self, PackedError> {
        if size == 0
            || size > MAX_SIZE
            || !desc.is_multiple_of(16)
            || !driver.is_multiple_of(4)
            || !device.is_multiple_of(4)
        {
            return Err(PackedError::BadLayout);
        }
        Ok(Self {
            desc,
            driver,
            device,
            size,
            event_idx,
            next_avail: 0,
            avail_wrap: true,
            next_used: 0,
            used_wrap: true,
            in_flight: HashMap::new(),
            used_added: 0,
        })
    }

    /// The queue size.
    pub fn size(&self) -> u16 {
        self.size
    }

    /// Buffers taken and not yet marked used.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// The next used position and the device wrap counter there.
    pub fn next_used(&self) -> (u16, bool) {
        (self.next_used, self.used_wrap)
    }

    /// The guest address of the descriptor at `position`.
    pub fn slot_address(&self, position: u16) -> u64 {
        self.slot(position)
    }

    fn step(&self, position: u16, wrap: bool) -> (u16, bool) {
        if position + 1 >= self.size {
            (0, !wrap)
        } else {
            (position + 1, wrap)
        }
    }

    fn slot(&self, position: u16) -> u64 {
        self.desc + 16 * u64::from(position)
    }

    /// (addr, len, id, flags) of the descriptor at `position`, its flags read with acquire.
    fn read<M: RingMemory>(
        &self,
        mem: &M,
        position: u16,
    ) -> Result<(u64, u32, u16, u16), PackedError> {
        let rest = mem
            .load_u64(self.slot(position) + 8, Ordering::Acquire)
            .ok_or(PackedError::Memory)?;
        let addr = mem
            .load_u64(self.slot(position), Ordering::Relaxed)
            .ok_or(PackedError::Memory)?;
        Ok((addr, rest as u32, (rest >> 32) as u16, (rest >> 48) as u16))
    }

    fn available(flags: u16, wrap: bool) -> bool {
        (flags & desc_flags::AVAIL != 0) == wrap && (flags & desc_flags::USED != 0) != wrap
    }

    /// Whether a buffer is available at the next position.
    pub fn has_available<M: RingMemory>(&self, mem: &M) -> Result<bool, PackedError> {
        let (_, _, _, flags) = self.read(mem, self.next_avail)?;
        Ok(Self::available(flags, self.avail_wrap))
    }

    /// Takes the next available buffer, or `None` if the driver made none available.
    pub fn pop<M: RingMemory>(&mut self, mem: &M) -> Result<Option<Chain>, PackedError> {
        if !self.has_available(mem)? {
            return Ok(None);
        }
        let (mut position, mut wrap) = (self.next_avail, self.avail_wrap);
        let mut elements = Vec::new();
        let mut count: u16 = 0;
        loop {
            let (addr, len, id, flags) = self.read(mem, position)?;
            // Every element of the chain is made available in its own position's lap (2.8.1).
            if !Self::available(flags, wrap) {
                return Err(PackedError::BadChain);
            }
            count += 1;
            if count > self.size {
                return Err(PackedError::BadChain);
            }
            (position, wrap) = self.step(position, wrap);
            if flags & desc_flags::INDIRECT != 0 {
                // 2.8.7: INDIRECT alone, never with NEXT, and only as the whole buffer.
                if flags & desc_flags::NEXT != 0 || count != 1 {
                    return Err(PackedError::BadChain);
                }
                self.read_table(mem, addr, len, &mut elements)?;
            } else {
                elements.push(Element {
                    addr,
                    len,
                    writable: flags & desc_flags::WRITE != 0,
                });
            }
            if flags & desc_flags::NEXT == 0 {
                // 2.8.6: the Buffer ID is the last element's.
                if self.in_flight.contains_key(&id) {
                    return Err(PackedError::DuplicateId(id));
                }
                self.in_flight.insert(id, count);
                (self.next_avail, self.avail_wrap) = (position, wrap);
                return Ok(Some(Chain {
                    id,
                    elements,
                    count,
                }));
            }
        }
    }

    fn read_table<M: RingMemory>(
        &self,
        mem: &M,
        table: u64,
        len: u32,
        elements: &mut Vec<Element>,
    ) -> Result<(), PackedError> {
        let entries = len / 16;
        if len == 0
            || !len.is_multiple_of(16)
            || !table.is_multiple_of(16)
            || entries > u32::from(self.size)
        {
            return Err(PackedError::BadChain);
        }
        for i in 0..u64::from(entries) {
            let at = table + 16 * i;
            let addr = mem
                .load_u64(at, Ordering::Relaxed)
                .ok_or(PackedError::Memory)?;
            let rest = mem
                .load_u64(at + 8, Ordering::Relaxed)
                .ok_or(PackedError::Memory)?;
            let flags = (rest >> 48) as u16;
            if flags & (desc_flags::NEXT | desc_flags::INDIRECT) != 0 {
                return Err(PackedError::BadChain);
            }
            elements.push(Element {
                addr,
                len: rest as u32,
                writable: flags & desc_flags::WRITE != 0,
            });
        }
        Ok(())
    }

    /// Marks buffer `id` used with `len` bytes written: one descriptor at the next used
    /// position, released, then the position moves past the buffer's chain (2.8.6).
    pub fn add_used<M: RingMemory>(
        &mut self,
        mem: &M,
        id: u16,
        len: u32,
    ) -> Result<(), PackedError> {
        let count = *self.in_flight.get(&id).ok_or(PackedError::UnknownId(id))?;
        let flags = if self.used_wrap {
            desc_flags::AVAIL | desc_flags::USED
        } else {
            0
        };
        let word = u64::from(len) | u64::from(id) << 32 | u64::from(flags) << 48;
        mem.store_u64(self.slot(self.next_used) + 8, word, Ordering::Release)
            .ok_or(PackedError::Memory)?;
        self.in_flight.remove(&id);
        for _ in 0..count {
            (self.next_used, self.used_wrap) = self.step(self.next_used, self.used_wrap);
        }
        self.used_added = self.used_added.saturating_add(count);
        Ok(())
    }

    /// The used position (and the device wrap counter there) after buffer `id`'s, were `id` the
    /// next buffer used: where a device that repeats the id would write it again. `None` if
    /// `id` is not in flight.
    pub fn used_position_after(&self, id: u16) -> Option<(u16, bool)> {
        let count = *self.in_flight.get(&id)?;
        let (mut position, mut wrap) = (self.next_used, self.used_wrap);
        for _ in 0..count {
            (position, wrap) = self.step(position, wrap);
        }
        Some((position, wrap))
    }

    /// Retires buffer `id` as used without writing its used descriptor: the caller wrote one
    /// by hand (a fault injecting a lie in its place), and the ring moves on past it as if
    /// [`Self::add_used`] had written it.
    pub fn retire_by_hand(&mut self, id: u16) -> Result<(), PackedError> {
        let count = self
            .in_flight
            .remove(&id)
            .ok_or(PackedError::UnknownId(id))?;
        for _ in 0..count {
            (self.next_used, self.used_wrap) = self.step(self.next_used, self.used_wrap);
        }
        self.used_added = self.used_added.saturating_add(count);
        Ok(())
    }

    /// Whether the used buffers added since the last call deserve an interrupt (2.8.10): the
    /// driver area says ENABLE, or DESC (with event index) at a position they passed.
    pub fn needs_notification<M: RingMemory>(&mut self, mem: &M) -> Result<bool, PackedError> {
        fence(Ordering::SeqCst);
        let added = std::mem::replace(&mut self.used_added, 0);
        if added == 0 {
            return Ok(false);
        }
        let word = mem
            .load_u32(self.driver, Ordering::Acquire)
            .ok_or(PackedError::Memory)?;
        let (off_wrap, flags) = (word as u16, (word >> 16) as u16);
        Ok(match flags & 3 {
            event::DISABLE => false,
            event::DESC if self.event_idx => {
                if added >= self.size {
                    return Ok(true);
                }
                let new = self.next_used;
                let old = new.wrapping_sub(added);
                let mut at = off_wrap & !event::WRAP;
                if (off_wrap & event::WRAP != 0) != self.used_wrap {
                    at = at.wrapping_sub(self.size);
                }
                need_event(at, new, old)
            }
            _ => true,
        })
    }

    /// Asks the driver to notify on new buffers and returns whether one is already available
    /// (then the caller must keep going: its notification may have been suppressed).
    pub fn enable_notification<M: RingMemory>(&mut self, mem: &M) -> Result<bool, PackedError> {
        let value = if self.event_idx {
            let wrap = if self.avail_wrap { event::WRAP } else { 0 };
            u32::from(self.next_avail | wrap) | u32::from(event::DESC) << 16
        } else {
            u32::from(event::ENABLE) << 16
        };
        mem.store_u32(self.device, value, Ordering::Relaxed)
            .ok_or(PackedError::Memory)?;
        fence(Ordering::SeqCst);
        self.has_available(mem)
    }

    /// Asks the driver not to notify.
    pub fn disable_notification<M: RingMemory>(&mut self, mem: &M) -> Result<(), PackedError> {
        mem.store_u32(
            self.device,
            u32::from(event::DISABLE) << 16,
            Ordering::Relaxed,
        )
        .ok_or(PackedError::Memory)
    }
}

/// `vring_need_event` (2.7.7, 2.8.10): whether moving from `old` to `new` crossed `event`.
fn need_event(event: u16, new: u16, old: u16) -> bool {
    new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DESC: u64 = 0x1000;
    const DRIVER: u64 = 0x2000;
    const DEVICE: u64 = 0x2040;

    fn memory() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_000)]).unwrap()
    }

    /// Writes a descriptor as a driver would: the flags word last.
    fn put(mem: &GuestMemoryMmap, at: u64, addr: u64, len: u32, id: u16, flags: u16) {
        mem.store_u64(at, addr, Ordering::Relaxed).unwrap();
        let word = u64::from(len) | u64::from(id) << 32 | u64::from(flags) << 48;
        mem.store_u64(at + 8, word, Ordering::Release).unwrap();
    }

    fn avail(wrap: bool) -> u16 {
        if wrap {
            desc_flags::AVAIL
        } else {
            desc_flags::USED
        }
    }

    fn slot(position: u16) -> u64 {
        DESC + 16 * u64::from(position)
    }

    #[test]
    fn layout_is_checked() {
        assert_eq!(
            PackedRing::new(DESC + 8, DRIVER, DEVICE, 4, false).unwrap_err(),
            PackedError::BadLayout
        );
        assert_eq!(
            PackedRing::new(DESC, DRIVER + 2, DEVICE, 4, false).unwrap_err(),
            PackedError::BadLayout
        );
        assert_eq!(
            PackedRing::new(DESC, DRIVER, DEVICE, 0, false).unwrap_err(),
            PackedError::BadLayout
        );
        assert_eq!(
            PackedRing::new(DESC, DRIVER, DEVICE, MAX_SIZE + 1, false).unwrap_err(),
            PackedError::BadLayout
        );
        // Any size up to 2^15, not only powers of two.
        assert!(PackedRing::new(DESC, DRIVER, DEVICE, 3, false).is_ok());
    }

    #[test]
    fn the_used_position_after_a_buffer() {
        let mem = memory();
        let mut ring = PackedRing::new(DESC, DRIVER, DEVICE, 3, false).unwrap();
        // Buffer 7: two elements at positions 0, 1; buffer 9: one at position 2.
        put(&mem, slot(1), 0xB0, 8, 7, avail(true) | desc_flags::WRITE);
        put(&mem, slot(0), 0xA0, 16, 7, avail(true) | desc_flags::NEXT);
        put(&mem, slot(2), 0xC0, 1, 9, avail(true) | desc_flags::WRITE);
        ring.pop(&mem).unwrap().unwrap();
        ring.pop(&mem).unwrap().unwrap();
        // Used first, 7 would take positions 0 and 1 (lap 1): the next is 2, same lap.
        assert_eq!(ring.used_position_after(7), Some((2, true)));
        // 9 first: position 0, then 1; 7 second, from 1: past the end, lap 2.
        assert_eq!(ring.used_position_after(9), Some((1, true)));
        ring.add_used(&mem, 9, 1).unwrap();
        assert_eq!(ring.used_position_after(7), Some((0, false)));
        assert_eq!(
            ring.used_position_after(9),
            None,
            "9 is no longer in flight"
        );
        // Asking writes nothing and moves nothing: 7's used descriptor still goes to 1.
        ring.add_used(&mem, 7, 8).unwrap();
        let used = mem.load_u64(slot(1) + 8, Ordering::Acquire).unwrap();
        assert_eq!(used >> 32 & 0xFFFF, 7);
    }

    #[test]
    fn chains_out_of_order_completion_and_wraps() {
        let mem = memory();
        let mut ring = PackedRing::new(DESC, DRIVER, DEVICE, 3, false).unwrap();
        assert_eq!(
            ring.pop(&mem).unwrap(),
            None,
            "zeroed ring: nothing available"
        );
        // Buffer 7: two elements at positions 0, 1; buffer 9: one at position 2 (lap 1).
        put(&mem, slot(1), 0xB0, 8, 7, avail(true) | desc_flags::WRITE);
        put(&mem, slot(0), 0xA0, 16, 7, avail(true) | desc_flags::NEXT);
        put(&mem, slot(2), 0xC0, 1, 9, avail(true) | desc_flags::WRITE);
        let a = ring.pop(&mem).unwrap().unwrap();
        assert_eq!(
            a,
            Chain {
                id: 7,
                elements: vec![
                    Element {
                        addr: 0xA0,
                        len: 16,
                        writable: false
                    },
                    Element {
                        addr: 0xB0,
                        len: 8,
                        writable: true
                    }
                ],
                count: 2
            }
        );
        let b = ring.pop(&mem).unwrap().unwrap();
        assert_eq!((b.id, b.count), (9, 1));
        assert_eq!(ring.pop(&mem).unwrap(), None, "position 0 is lap 1's");
        // Complete 9 first: its used descriptor goes to position 0; then 7 at position 1.
        ring.add_used(&mem, 9, 1).unwrap();
        let used = |p| mem.load_u64(slot(p) + 8, Ordering::Acquire).unwrap();
        assert_eq!(
            used(0),
            1 | 9 << 32 | u64::from(desc_flags::AVAIL | desc_flags::USED) << 48
        );
        ring.add_used(&mem, 7, 8).unwrap();
        assert_eq!(
            used(1),
            8 | 7 << 32 | u64::from(desc_flags::AVAIL | desc_flags::USED) << 48
        );
        assert_eq!(ring.add_used(&mem, 7, 8), Err(PackedError::UnknownId(7)));
        // Lap 2 starts at position 0: AVAIL = 0, USED = 1; the used wrap counter flipped too
        // (positions 0..=2 consumed), so the next used descriptor has AVAIL = USED = 0.
        put(&mem, slot(0), 0xD0, 4, 1, avail(false) | desc_flags::WRITE);
        let c = ring.pop(&mem).unwrap().unwrap();
        assert_eq!((c.id, c.count), (1, 1));
        ring.add_used(&mem, 1, 4).unwrap();
        assert_eq!(used(0), 4 | 1 << 32);
    }

    #[test]
    fn indirect_tables() {
        let mem = memory();
        let mut ring = PackedRing::new(DESC, DRIVER, DEVICE, 4, false).unwrap();
        put(&mem, 0x3000, 0x100, 16, 0, 0);
        put(&mem, 0x3010, 0x200, 1, 0, desc_flags::WRITE);
        put(
            &mem,
            slot(0),
            0x3000,
            32,
            5,
            avail(true) | desc_flags::INDIRECT,
        );
        let chain = ring.pop(&mem).unwrap().unwrap();
        assert_eq!(chain.id, 5);
        assert_eq!(chain.count, 1);
        assert_eq!(chain.elements.len(), 2);
        assert!(chain.elements[1].writable && !chain.elements[0].writable);
    }

    #[test]
    fn driver_mistakes_are_errors() {
        type Setup = fn(&GuestMemoryMmap);
        let cases: [(&str, Setup, PackedError); 7] = [
            (
                "NEXT inside an indirect table",
                |mem| {
                    put(mem, 0x3000, 0x100, 16, 0, desc_flags::NEXT);
                    put(
                        mem,
                        slot(0),
                        0x3000,
                        16,
                        1,
                        avail(true) | desc_flags::INDIRECT,
                    );
                },
                PackedError::BadChain,
            ),
            (
                "INDIRECT with NEXT",
                |mem| {
                    put(mem, slot(1), 0x100, 1, 1, avail(true));
                    put(
                        mem,
                        slot(0),
                        0x3000,
                        16,
                        1,
                        avail(true) | desc_flags::INDIRECT | desc_flags::NEXT,
                    );
                },
                PackedError::BadChain,
            ),
            (
                "a table of a partial descriptor",
                |mem| {
                    put(
                        mem,
                        slot(0),
                        0x3000,
                        20,
                        1,
                        avail(true) | desc_flags::INDIRECT,
                    )
                },
                PackedError::BadChain,
            ),
            (
                "a chain element not made available",
                |mem| put(mem, slot(0), 0x100, 1, 1, avail(true) | desc_flags::NEXT),
                PackedError::BadChain,
            ),
            (
                "a chain longer than the ring",
                |mem| {
                    for p in 0..4 {
                        let wrap = true;
                        put(mem, slot(p), 0x100, 1, 1, avail(wrap) | desc_flags::NEXT);
                    }
                },
                PackedError::BadChain,
            ),
            (
                "a table outside memory",
                |mem| {
                    put(
                        mem,
                        slot(0),
                        0xFFFF_0000,
                        16,
                        1,
                        avail(true) | desc_flags::INDIRECT,
                    )
                },
                PackedError::Memory,
            ),
            (
                "an id in flight reused",
                |mem| {
                    put(mem, slot(0), 0x100, 1, 3, avail(true));
                    put(mem, slot(1), 0x100, 1, 3, avail(true));
                },
                PackedError::DuplicateId(3),
            ),
        ];
        for (what, setup, error) in cases {
            let mem = memory();
            let mut ring = PackedRing::new(DESC, DRIVER, DEVICE, 4, false).unwrap();
            setup(&mem);
            let result = ring.pop(&mem).and_then(|_| ring.pop(&mem));
            assert_eq!(result, Err(error), "{what}");
        }
    }

    #[test]
    fn event_suppression_both_ways() {
        let mem = memory();
        let mut ring = PackedRing::new(DESC, DRIVER, DEVICE, 4, true).unwrap();
        // The device area: DESC at the next available position with the wrap bit.
        assert!(!ring.enable_notification(&mem).unwrap());
        assert_eq!(
            mem.load_u32(DEVICE, Ordering::Relaxed).unwrap(),
            u32::from(event::WRAP) | u32::from(event::DESC) << 16
        );
        ring.disable_notification(&mem).unwrap();
        assert_eq!(
            mem.load_u32(DEVICE, Ordering::Relaxed).unwrap(),
            u32::from(event::DISABLE) << 16
        );
        put(&mem, slot(0), 0x100, 1, 0, avail(true) | desc_flags::WRITE);
        assert!(
            ring.enable_notification(&mem).unwrap(),
            "one is already there"
        );

        // The driver area decides interrupts.
        let chain = ring.pop(&mem).unwrap().unwrap();
        assert!(!ring.needs_notification(&mem).unwrap(), "nothing used yet");
        ring.add_used(&mem, chain.id, 1).unwrap();
        mem.store_u32(DRIVER, u32::from(event::DISABLE) << 16, Ordering::Relaxed)
            .unwrap();
        assert!(!ring.needs_notification(&mem).unwrap(), "DISABLE");
        put(&mem, slot(1), 0x100, 1, 1, avail(true) | desc_flags::WRITE);
        let chain = ring.pop(&mem).unwrap().unwrap();
        ring.add_used(&mem, chain.id, 1).unwrap();
        // DESC at position 1 of lap 1: just written.
        mem.store_u32(
            DRIVER,
            u32::from(1 | event::WRAP) | u32::from(event::DESC) << 16,
            Ordering::Relaxed,
        )
        .unwrap();
        assert!(ring.needs_notification(&mem).unwrap(), "DESC reached");
        put(&mem, slot(2), 0x100, 1, 2, avail(true) | desc_flags::WRITE);
        let chain = ring.pop(&mem).unwrap().unwrap();
        ring.add_used(&mem, chain.id, 1).unwrap();
        assert!(
            !ring.needs_notification(&mem).unwrap(),
            "DESC already passed"
        );
        mem.store_u32(DRIVER, 0, Ordering::Relaxed).unwrap();
        put(&mem, slot(3), 0x100, 1, 3, avail(true) | desc_flags::WRITE);
        let chain = ring.pop(&mem).unwrap().unwrap();
        ring.add_used(&mem, chain.id, 1).unwrap();
        assert!(ring.needs_notification(&mem).unwrap(), "ENABLE");
    }
}
