//! The driver's packed virtqueue (`vioblk::virtio::PackedQueue`) against the model's
//! (`vioblk_sim::device::packed::PackedRing`), over one shared memory: each side written from
//! VIRTIO 1.2 2.8 by itself, so each checks the other.
//!
//! Many buffers in flight (direct chains and indirect tables), completed in random order,
//! through rings small enough that both wrap counters flip thousands of times; the notification
//! protocol in both directions is checked at every step for lost wake-ups: a device asleep with
//! a buffer available must have been notified, and a driver waiting with a used buffer must have
//! been interrupted.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use storport::dma::DmaRegion;
use vioblk::virtio::{Descriptor, IndirectTable, PackedQueue, PushError, QueueSize, UsedElem};
use vioblk_sim::device::packed::{Chain, Element, PackedRing, RingMemory};

/// Guest address of the shared memory's first byte.
const BASE: u64 = 0x10_0000;
/// Where the indirect tables start, from BASE (after the largest ring).
const TABLES: usize = 0x2000;
/// Bytes per indirect table slot (four descriptors).
const TABLE: usize = 64;

/// The shared memory as the model sees it: guest addresses over the driver's DMA region.
struct Shared(DmaRegion<'static>);

impl Shared {
    fn new(len: usize) -> Self {
        let words: Vec<AtomicU64> = (0..len / 8).map(|_| AtomicU64::new(0)).collect();
        let words: &'static [AtomicU64] = Box::leak(words.into_boxed_slice());
        Self(DmaRegion::from_test_buffer(words, BASE))
    }

    fn index(&self, addr: u64, size: u64) -> Option<usize> {
        let offset = addr.checked_sub(BASE)?;
        offset
            .is_multiple_of(size)
            .then_some(usize::try_from(offset / size).ok()?)
    }
}

impl RingMemory for Shared {
    fn load_u64(&self, addr: u64, order: Ordering) -> Option<u64> {
        let w = self.0.u64s()?.get(self.index(addr, 8)?)?;
        Some(u64::from_le(w.load(order)))
    }

    fn load_u32(&self, addr: u64, order: Ordering) -> Option<u32> {
        let w = self.0.u32s()?.get(self.index(addr, 4)?)?;
        Some(u32::from_le(w.load(order)))
    }

    fn store_u64(&self, addr: u64, value: u64, order: Ordering) -> Option<()> {
        let w = self.0.u64s()?.get(self.index(addr, 8)?)?;
        w.store(value.to_le(), order);
        Some(())
    }

    fn store_u32(&self, addr: u64, value: u32, order: Ordering) -> Option<()> {
        let w = self.0.u32s()?.get(self.index(addr, 4)?)?;
        w.store(value.to_le(), order);
        Some(())
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// A request shaped like a virtio-blk one: a 16-byte header, `data` segments, a status byte.
fn request(rng: &mut Rng, address: u64, data: usize) -> Vec<Descriptor> {
    let write = rng.next().is_multiple_of(2);
    let mut chain = vec![Descriptor {
        address,
        len: 16,
        device_writable: false,
    }];
    for i in 0..data {
        chain.push(Descriptor {
            address: address + 0x100 * (i as u64 + 1),
            len: 512 * (1 + rng.below(8) as u32),
            device_writable: !write,
        });
    }
    chain.push(Descriptor {
        address: address + 0xF00,
        len: 1,
        device_writable: true,
    });
    // Readable before writable (2.8.6 as 2.7.4.2).
    chain.sort_by_key(|d| d.device_writable);
    chain
}

fn elements(chain: &[Descriptor]) -> Vec<Element> {
    chain
        .iter()
        .map(|d| Element {
            addr: d.address,
            len: d.len,
            writable: d.device_writable,
        })
        .collect()
}

fn writable_bytes(chain: &[Descriptor]) -> u32 {
    chain
        .iter()
        .filter(|d| d.device_writable)
        .map(|d| d.len)
        .sum()
}

fn run(size: u16, event_idx: bool, rounds: usize, seed: u64) {
    let memory = Shared::new(TABLES + TABLE * 512);
    let queue_size = QueueSize::new(size).unwrap();
    let ring_bytes = PackedQueue::memory_size(queue_size);
    assert!(ring_bytes <= TABLES);
    let mut q = PackedQueue::new(
        memory.0.subregion(0, ring_bytes).unwrap(),
        queue_size,
        event_idx,
    )
    .unwrap();
    let a = q.addresses();
    let mut dev = PackedRing::new(a.descriptors, a.driver, a.device, a.size, event_idx).unwrap();
    let mut rng = Rng(seed);

    // What the driver pushed, by id: the elements the device must see and the bytes it writes.
    let mut expected: HashMap<u16, (Vec<Element>, u32, Option<usize>)> = HashMap::new();
    let mut free_tables: Vec<usize> = (0..usize::from(size) * 2).collect();
    let mut held: Vec<Chain> = Vec::new();
    let (mut device_awake, mut interrupt) = (true, false);
    let (mut pushed, mut completed, mut notifications, mut interrupts) = (0u64, 0u64, 0u64, 0u64);
    let mut address = 0x4000_0000u64;

    for _ in 0..rounds {
        // The driver: a burst of requests, direct or indirect, until the ring is full or the
        // burst ends; then one notification decision for the burst.
        let burst = 1 + rng.below(usize::from(size));
        for _ in 0..burst {
            address += 0x1000;
            let data = rng.below(3);
            let chain = request(&mut rng, address, data);
            let result = if rng.next().is_multiple_of(3) {
                let Some(slot) = free_tables.pop() else {
                    break;
                };
                let at = TABLES + slot * TABLE;
                let table = IndirectTable::new(memory.0.subregion(at, TABLE).unwrap()).unwrap();
                for (i, d) in chain.iter().enumerate() {
                    assert!(table.write(i as u16, *d));
                }
                let len = 16 * chain.len() as u32;
                let pushed = q.push_indirect(table.physical_address(), len);
                if pushed.is_err() {
                    free_tables.push(slot);
                }
                pushed.map(|id| (id, Some(slot)))
            } else {
                q.push_chain(chain.iter().copied()).map(|id| (id, None))
            };
            match result {
                Ok((id, table)) => {
                    let entry = (elements(&chain), writable_bytes(&chain), table);
                    assert!(expected.insert(id, entry).is_none(), "id {id} reused");
                    pushed += 1;
                }
                Err(PushError::Full) => break,
                Err(e) => panic!("{e:?}"),
            }
        }
        if q.needs_notify() {
            device_awake = true;
            notifications += 1;
        }
        // No lost wake-up: a sleeping device with a buffer available was notified.
        assert!(
            device_awake || !dev.has_available(&memory).unwrap(),
            "size {size}: the device sleeps on an available buffer"
        );

        // The device, when awake: takes everything (notifications off), then re-enables them and
        // goes on if a buffer slipped in meanwhile.
        if device_awake && !rng.next().is_multiple_of(4) {
            dev.disable_notification(&memory).unwrap();
            loop {
                while let Some(chain) = dev.pop(&memory).unwrap() {
                    let (elements, _, _) = &expected[&chain.id];
                    assert_eq!(&chain.elements, elements, "buffer {}", chain.id);
                    held.push(chain);
                }
                if !dev.enable_notification(&memory).unwrap() {
                    break;
                }
            }
            device_awake = false;
        }
        // It completes some of what it holds, in random order, interrupting as the driver asks.
        for _ in 0..rng.below(held.len() + 1) {
            let chain = held.swap_remove(rng.below(held.len()));
            dev.add_used(&memory, chain.id, expected[&chain.id].1)
                .unwrap();
        }
        if dev.needs_notification(&memory).unwrap() {
            interrupt = true;
            interrupts += 1;
        }

        // The driver's interrupt path: interrupts off, drain, on again, drain again if needed.
        if interrupt && !rng.next().is_multiple_of(4) {
            interrupt = false;
            q.disable_interrupts();
            loop {
                while let Some(used) = q.pop_used() {
                    let UsedElem { id, len } = used.unwrap();
                    let (_, writable, table) = expected.remove(&id).unwrap();
                    assert_eq!(len, writable, "id {id}");
                    if let Some(slot) = table {
                        free_tables.push(slot);
                    }
                    completed += 1;
                }
                if !q.enable_interrupts() {
                    break;
                }
            }
        }
        // No lost interrupt: a driver waiting with a used buffer was interrupted.
        assert!(
            interrupt || !q.enable_interrupts(),
            "size {size}: a used buffer without an interrupt"
        );
        assert_eq!(usize::from(q.outstanding()), expected.len());
        assert_eq!(dev.in_flight(), held.len());
    }

    assert!(!q.is_broken());
    assert!(
        completed > rounds as u64 / 2,
        "size {size}: {completed} of {pushed}"
    );
    assert!(notifications > 0 && interrupts > 0);
    if event_idx {
        // Suppression works: fewer notifications and interrupts than buffers.
        assert!(
            notifications < pushed,
            "{notifications} notifications for {pushed}"
        );
        assert!(
            interrupts < completed,
            "{interrupts} interrupts for {completed}"
        );
    }
}

#[test]
fn driver_and_model_device_agree_through_many_wraparounds() {
    for (size, event_idx, seed) in [
        (4, false, 1),
        (4, true, 2),
        (16, true, 3),
        (16, false, 4),
        (128, true, 5),
    ] {
        run(size, event_idx, 20_000, seed);
    }
}
