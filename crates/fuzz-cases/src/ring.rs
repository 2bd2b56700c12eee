//! The used ring as a state machine: submissions, publishes, drains and resets by the driver,
//! interleaved with whatever a device may write into the ring's memory.
//!
//! The device here is two things at once: an honest one (it takes what was made available and
//! completes it, in any order, as VIRTIO 1.2 2.7.8 / 2.8.6 describe) and a hostile one (it writes
//! any used entry, length, used index or descriptor word it likes, anywhere in the queue's
//! memory). The driver side is `vioblk::virtio::Virtqueue`, split or packed, driven the way the
//! adapter drives it (`hba::queue`: push, publish, drain until `enable_interrupts` says nothing
//! is pending). [`Model`] is the oracle; it checks, after every step:
//!
//! - a drain terminates (at most `size + 1` elements and two passes; more means a loop that an
//!   adapter's DPC would never leave);
//! - every completion names a buffer that was published and not yet completed: nothing
//!   completes twice, nothing invented, nothing pushed but not yet published (split ring);
//! - after an error the queue is broken and yields nothing until reset;
//! - while the queue is not broken its bookkeeping agrees with the model (`outstanding`,
//!   `is_in_flight` for every id), so no buffer is lost either;
//! - nothing panics.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use arbitrary::Arbitrary;
use storport::dma::DmaRegion;
use vioblk::virtio::{Descriptor, QueueSize, UsedElem, Virtqueue};

/// Bytes of ring memory: the largest queue (256 entries, split layout) fits.
const MEMORY: usize = 8192;
/// The bus address the ring memory pretends to be at.
const BASE: u64 = 0x4000_0000;

/// One fuzz input.
#[derive(Arbitrary, Debug, Clone)]
pub struct Input {
    /// log2 of the queue size (taken modulo 8: 1..=128 entries, `MAX_QUEUE_SIZE`).
    pub size_log2: u8,
    /// A packed ring (VIRTIO_F_RING_PACKED) instead of a split one.
    pub packed: bool,
    /// VIRTIO_F_EVENT_IDX.
    pub event_idx: bool,
    /// What happens, in order.
    pub ops: Vec<Op>,
}

/// One step, by the driver or by the device.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Op {
    /// Driver: an indirect table of `entries` descriptors (invalid sizes included).
    PushIndirect {
        /// Table entries.
        entries: u16,
    },
    /// Driver: a direct chain of `readable` device-readable then `writable` device-writable
    /// descriptors (each count taken modulo 8).
    PushChain {
        /// Device-readable descriptors.
        readable: u8,
        /// Device-writable descriptors.
        writable: u8,
    },
    /// Driver: publish what was pushed, and decide on a notification.
    Publish,
    /// Driver: the adapter's drain (pop until empty, re-enable, look again).
    Drain,
    /// Driver: take at most one element.
    PopOne,
    /// Driver: ask for no interrupts.
    DisableInterrupts,
    /// Driver and device: a reset (the device forgets everything; the adapter cancels what was
    /// in flight and resets the ring).
    Reset,
    /// Honest device: take everything newly available.
    Fetch,
    /// Honest device: complete the `pick`-th buffer it holds with `len` bytes written.
    Complete {
        /// Which held buffer (modulo their number).
        pick: u8,
        /// The used length.
        len: u32,
    },
    /// Hostile device: write a used element (split: `used.ring[index]`; packed: the descriptor
    /// at `index` with the used flags of `lap`).
    WriteUsed {
        /// Ring index (modulo the size).
        index: u16,
        /// The id written.
        id: u32,
        /// The length written.
        len: u32,
        /// Packed: which wrap counter's used pattern (true: both bits set).
        lap: bool,
    },
    /// Hostile device: set the used index (split) or the device event word (packed).
    WriteUsedIdx {
        /// The value.
        value: u16,
    },
    /// Hostile device: advance the used index by `by` without writing entries.
    BumpUsedIdx {
        /// How far.
        by: u8,
    },
    /// Hostile device: four arbitrary bytes anywhere in the queue's memory.
    WriteRaw {
        /// Byte offset (modulo the queue's memory size).
        offset: u16,
        /// The bytes.
        value: u32,
    },
}

thread_local! {
    // One leaked, 64-aligned buffer per thread, reused by every input (a fuzzer runs millions).
    static WORDS: &'static [AtomicU64] = {
        let words: Vec<AtomicU64> = (0..MEMORY / 8 + 8).map(|_| AtomicU64::new(0)).collect();
        let words: &'static [AtomicU64] = Box::leak(words.into_boxed_slice());
        let skip = (64 - (words.as_ptr() as usize % 64)) % 64 / 8;
        &words[skip..skip + MEMORY / 8]
    };
    static BUSY: RefCell<()> = const { RefCell::new(()) };
}

/// The queue's memory as the device sees it: bytes at offsets from [`BASE`].
struct Memory {
    words: &'static [AtomicU64],
    len: usize,
}

impl Memory {
    fn read(&self, offset: usize, out: &mut [u8]) {
        for (i, b) in out.iter_mut().enumerate() {
            let at = offset + i;
            *b = if at < self.len {
                (self.words[at / 8].load(Ordering::Acquire) >> (8 * (at % 8))) as u8
            } else {
                0
            };
        }
    }

    fn write(&self, offset: usize, bytes: &[u8]) {
        for (i, &b) in bytes.iter().enumerate() {
            let at = offset + i;
            if at >= self.len {
                return;
            }
            let shift = 8 * (at % 8);
            let word = &self.words[at / 8];
            let old = word.load(Ordering::Relaxed);
            word.store(
                (old & !(0xFF << shift)) | (u64::from(b) << shift),
                Ordering::Release,
            );
        }
    }

    fn u16(&self, offset: usize) -> u16 {
        let mut b = [0; 2];
        self.read(offset, &mut b);
        u16::from_le_bytes(b)
    }

    fn u64(&self, offset: usize) -> u64 {
        let mut b = [0; 8];
        self.read(offset, &mut b);
        u64::from_le_bytes(b)
    }
}

/// The honest device's view of the queue.
struct Device {
    size: u16,
    packed: bool,
    desc: usize,
    avail: usize,
    used: usize,
    /// Split: next available index to take. Packed: next position to read.
    next_avail: u16,
    avail_wrap: bool,
    /// Split: next used index to write. Packed: next position to write.
    next_used: u16,
    used_wrap: bool,
    /// Buffers taken and not completed: (id, ring positions it took).
    held: Vec<(u16, u16)>,
}

impl Device {
    fn new(queue: &Virtqueue, size: u16, packed: bool) -> Self {
        let a = queue.addresses();
        Self {
            size,
            packed,
            desc: (a.descriptors - BASE) as usize,
            avail: (a.driver - BASE) as usize,
            used: (a.device - BASE) as usize,
            next_avail: 0,
            avail_wrap: true,
            next_used: 0,
            used_wrap: true,
            held: Vec::new(),
        }
    }

    fn reset(&mut self) {
        self.next_avail = 0;
        self.avail_wrap = true;
        self.next_used = 0;
        self.used_wrap = true;
        self.held.clear();
    }

    /// Packed: the flags word of the descriptor at `position`.
    fn packed_word(&self, m: &Memory, position: u16) -> u64 {
        m.u64(self.desc + 16 * usize::from(position) + 8)
    }

    fn advance(&self, position: u16, wrap: bool, by: u16) -> (u16, bool) {
        let next = u32::from(position) + u32::from(by);
        let size = u32::from(self.size);
        if next >= size {
            ((next - size) as u16, !wrap)
        } else {
            (next as u16, wrap)
        }
    }

    /// Takes every buffer made available since the last fetch.
    fn fetch(&mut self, m: &Memory) {
        if self.packed {
            // At most one lap: a device never reads past what it has not completed.
            for _ in 0..self.size {
                let in_ring: u16 = self.held.iter().map(|&(_, n)| n).sum();
                if in_ring >= self.size {
                    return;
                }
                let word = self.packed_word(m, self.next_avail);
                let flags = (word >> 48) as u16;
                let avail = flags & (1 << 7) != 0;
                let used = flags & (1 << 15) != 0;
                if avail != self.avail_wrap || used == self.avail_wrap {
                    return;
                }
                let id = ((word >> 32) & 0xFFFF) as u16;
                // Follow NEXT to the end of the chain, within what is free of the ring.
                let mut count = 1u16;
                let (mut position, mut wrap) = (self.next_avail, self.avail_wrap);
                let mut flags = flags;
                while flags & 1 != 0 && count < self.size - in_ring {
                    (position, wrap) = self.advance(position, wrap, 1);
                    flags = (self.packed_word(m, position) >> 48) as u16;
                    count += 1;
                }
                let _ = wrap;
                (self.next_avail, self.avail_wrap) =
                    self.advance(self.next_avail, self.avail_wrap, count);
                self.held.push((id, count));
            }
        } else {
            let avail_idx = m.u16(self.avail + 2);
            while self.next_avail != avail_idx && self.held.len() < usize::from(self.size) {
                let slot = usize::from(self.next_avail % self.size);
                let head = m.u16(self.avail + 4 + 2 * slot);
                self.held.push((head, 1));
                self.next_avail = self.next_avail.wrapping_add(1);
            }
        }
    }

    /// Completes the `pick`-th held buffer.
    fn complete(&mut self, m: &Memory, pick: u8, len: u32) {
        if self.held.is_empty() {
            return;
        }
        let (id, count) = self.held.remove(usize::from(pick) % self.held.len());
        if self.packed {
            let flags: u16 = if self.used_wrap {
                (1 << 7) | (1 << 15)
            } else {
                0
            };
            let at = self.desc + 16 * usize::from(self.next_used);
            m.write(at + 8, &len.to_le_bytes());
            m.write(at + 12, &id.to_le_bytes());
            m.write(at + 14, &flags.to_le_bytes());
            (self.next_used, self.used_wrap) = self.advance(self.next_used, self.used_wrap, count);
        } else {
            let slot = usize::from(self.next_used % self.size);
            m.write(self.used + 4 + 8 * slot, &u32::from(id).to_le_bytes());
            m.write(self.used + 8 + 8 * slot, &len.to_le_bytes());
            self.next_used = self.next_used.wrapping_add(1);
            m.write(self.used + 2, &self.next_used.to_le_bytes());
        }
    }
}

/// What the driver may legitimately get back: the oracle.
#[derive(Debug, Default)]
pub struct Model {
    /// Pushed, not yet published (split ring), by id: the submission number.
    pub pending: BTreeMap<u16, u64>,
    /// Published and not yet completed, by id.
    pub published: BTreeMap<u16, u64>,
    /// The queue reported an error (and must now yield nothing until reset).
    pub broken: bool,
    submissions: u64,
}

/// An invariant the driver's queue broke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// A push handed out an id still in flight.
    IdReused(u16),
    /// A completion named an id that was pushed but never published.
    Unpublished(u16),
    /// A completion named an id not in flight (completed twice, or never submitted).
    NotInFlight(u16),
    /// A broken queue yielded an element.
    AfterBroken,
    /// A drain did not end.
    DrainDoesNotEnd,
    /// The queue's `outstanding` or `is_in_flight` disagrees with what was submitted.
    Bookkeeping(String),
}

impl Model {
    /// A push returned `id`.
    pub fn pushed(&mut self, id: u16, visible_at_once: bool) -> Result<(), Violation> {
        if self.pending.contains_key(&id) || self.published.contains_key(&id) {
            return Err(Violation::IdReused(id));
        }
        self.submissions += 1;
        if visible_at_once {
            self.published.insert(id, self.submissions);
        } else {
            self.pending.insert(id, self.submissions);
        }
        Ok(())
    }

    /// Everything pushed was published.
    pub fn publish(&mut self) {
        self.published.append(&mut self.pending);
    }

    /// The queue gave back `result`.
    pub fn popped(&mut self, result: Result<UsedElem, ()>) -> Result<(), Violation> {
        if self.broken {
            return Err(Violation::AfterBroken);
        }
        match result {
            Ok(UsedElem { id, .. }) => {
                if self.published.remove(&id).is_some() {
                    Ok(())
                } else if self.pending.contains_key(&id) {
                    Err(Violation::Unpublished(id))
                } else {
                    Err(Violation::NotInFlight(id))
                }
            }
            Err(()) => {
                self.broken = true;
                Ok(())
            }
        }
    }

    /// Device and ring reset: nothing in flight.
    pub fn reset(&mut self) {
        self.pending.clear();
        self.published.clear();
        self.broken = false;
    }
}

fn check(queue: &Virtqueue, model: &Model, size: u16) -> Result<(), Violation> {
    if queue.is_broken() != model.broken {
        return Err(Violation::Bookkeeping(format!(
            "queue broken: {}, model: {}",
            queue.is_broken(),
            model.broken
        )));
    }
    if model.broken {
        return Ok(());
    }
    let expected = if queue.is_packed() {
        model.published.len() + model.pending.len()
    } else {
        model.published.len()
    };
    if usize::from(queue.outstanding()) != expected {
        return Err(Violation::Bookkeeping(format!(
            "outstanding {} but {} published and not completed",
            queue.outstanding(),
            expected
        )));
    }
    for id in 0..size {
        let in_model = model.published.contains_key(&id) || model.pending.contains_key(&id);
        if queue.is_in_flight(id) != in_model {
            return Err(Violation::Bookkeeping(format!(
                "id {id}: queue says in flight {}, model {in_model}",
                queue.is_in_flight(id)
            )));
        }
    }
    Ok(())
}

/// The two calls a drain makes, so the drain can be shown to stop a queue that never does.
pub trait Drainable {
    /// `pop_used`, with the error reduced to its occurrence.
    fn pop(&mut self) -> Option<Result<UsedElem, ()>>;
    /// `enable_interrupts`: whether completions are already pending.
    fn enable_interrupts(&mut self) -> bool;
}

impl Drainable for Virtqueue {
    fn pop(&mut self) -> Option<Result<UsedElem, ()>> {
        self.pop_used().map(|r| r.map_err(|_| ()))
    }

    fn enable_interrupts(&mut self) -> bool {
        Virtqueue::enable_interrupts(self)
    }
}

/// Pops one element into the model.
fn pop(queue: &mut impl Drainable, model: &mut Model) -> Result<bool, Violation> {
    match queue.pop() {
        Some(result) => model.popped(result).map(|()| true),
        None => Ok(false),
    }
}

/// The adapter's drain (`hba::queue::Queue::drain`, without a batch limit): pop until empty,
/// re-enable interrupts, and go round again while the queue says completions are pending.
/// A queue of `size` entries has at most `size` elements and one error to give: more, or a
/// third pass, is a drain that does not end.
pub fn drain(queue: &mut impl Drainable, model: &mut Model, size: u16) -> Result<(), Violation> {
    let mut popped = 0u32;
    for _pass in 0..3 {
        while pop(queue, model)? {
            popped += 1;
            if popped > u32::from(size) + 1 {
                return Err(Violation::DrainDoesNotEnd);
            }
        }
        if !queue.enable_interrupts() {
            return Ok(());
        }
    }
    Err(Violation::DrainDoesNotEnd)
}

/// Runs one input; panics naming the broken invariant.
pub fn run(input: &Input) {
    if let Err((step, violation)) = execute(input) {
        panic!("used ring invariant broken at step {step}: {violation:?}");
    }
}

/// Runs one input; the first broken invariant and the step that broke it.
pub fn execute(input: &Input) -> Result<(), (usize, Violation)> {
    // One input at a time per thread: the ring memory is shared by them.
    BUSY.with(|busy| {
        let _guard = busy.borrow_mut();
        WORDS.with(|&words| execute_in(input, words))
    })
}

fn execute_in(input: &Input, words: &'static [AtomicU64]) -> Result<(), (usize, Violation)> {
    let size = 1u16 << (input.size_log2 % 8);
    let Some(queue_size) = QueueSize::new(size) else {
        return Ok(());
    };
    let region = DmaRegion::from_test_buffer(words, BASE);
    let Ok(mut queue) = Virtqueue::new(region, queue_size, input.event_idx, input.packed) else {
        return Ok(());
    };
    let memory = Memory {
        words,
        len: Virtqueue::memory_size(queue_size, input.packed),
    };
    let mut device = Device::new(&queue, size, input.packed);
    let mut model = Model::default();
    let mut next_table = 0x10_0000u64;
    for (step, op) in input.ops.iter().enumerate() {
        let at = |v| (step, v);
        match *op {
            Op::PushIndirect { entries } => {
                next_table += 0x1000;
                if let Ok(id) = queue.push_indirect(next_table, u32::from(entries) * 16) {
                    model.pushed(id, input.packed).map_err(at)?;
                }
            }
            Op::PushChain { readable, writable } => {
                let chain = (0..readable % 8)
                    .map(|i| (i, false))
                    .chain((0..writable % 8).map(|i| (i, true)))
                    .map(|(i, device_writable)| Descriptor {
                        address: 0x20_0000 + u64::from(i) * 0x200,
                        len: 512,
                        device_writable,
                    });
                if let Ok(id) = queue.push_chain(chain) {
                    model.pushed(id, input.packed).map_err(at)?;
                }
            }
            Op::Publish => {
                queue.publish();
                model.publish();
                let _ = queue.needs_notify();
            }
            Op::Drain => drain(&mut queue, &mut model, size).map_err(at)?,
            Op::PopOne => {
                pop(&mut queue, &mut model).map_err(at)?;
            }
            Op::DisableInterrupts => queue.disable_interrupts(),
            Op::Reset => {
                queue.reset();
                device.reset();
                model.reset();
            }
            Op::Fetch => device.fetch(&memory),
            Op::Complete { pick, len } => device.complete(&memory, pick, len),
            Op::WriteUsed {
                index,
                id,
                len,
                lap,
            } => {
                let index = usize::from(index % size);
                if input.packed {
                    let at = device.desc + 16 * index;
                    let flags: u16 = if lap { (1 << 7) | (1 << 15) } else { 0 };
                    memory.write(at + 8, &len.to_le_bytes());
                    memory.write(at + 12, &(id as u16).to_le_bytes());
                    memory.write(at + 14, &flags.to_le_bytes());
                } else {
                    memory.write(device.used + 4 + 8 * index, &id.to_le_bytes());
                    memory.write(device.used + 8 + 8 * index, &len.to_le_bytes());
                }
            }
            Op::WriteUsedIdx { value } => {
                if input.packed {
                    memory.write(device.used, &u32::from(value).to_le_bytes());
                } else {
                    memory.write(device.used + 2, &value.to_le_bytes());
                }
            }
            Op::BumpUsedIdx { by } => {
                if !input.packed {
                    let idx = memory.u16(device.used + 2).wrapping_add(u16::from(by));
                    memory.write(device.used + 2, &idx.to_le_bytes());
                }
            }
            Op::WriteRaw { offset, value } => {
                let offset = usize::from(offset) % memory.len.max(1);
                memory.write(offset, &value.to_le_bytes());
            }
        }
        check(&queue, &model, size).map_err(|v| (step, v))?;
    }
    // The adapter always ends with a drain (the DPC); it must end as well.
    let end = input.ops.len();
    drain(&mut queue, &mut model, size).map_err(|v| (end, v))?;
    check(&queue, &model, size).map_err(|v| (end, v))
}
