//! The fuzz targets' invariants as property tests on the stable toolchain (proptest), in the
//! normal suite: the same bodies (`fuzz_cases::*::run`) over inputs proptest generates, plus
//! tests that each oracle check can fire and regression tests for what the fuzzers found.
//!
//! proptest draws the raw bytes and `arbitrary` builds the structured input from them, exactly
//! as libFuzzer's bytes become inputs in `fuzz/`: one input format, two engines. A failing case
//! is shrunk by proptest and can be replayed in the fuzz target from the same bytes.

use fuzz_cases::ring::{self, Drainable, Model, Op, Violation};
use fuzz_cases::{bringup, scsi, srb, with_input};
use proptest::prelude::*;
use vioblk::virtio::UsedElem;

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..max)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn scsi_any_cdb_any_parameters_any_disk(data in bytes(1024)) {
        with_input(&data, scsi::run);
    }

    #[test]
    fn srb_any_bytes_any_scatter_gather_list(data in bytes(2048)) {
        with_input(&data, srb::run);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn used_ring_any_device_writes(data in bytes(2048)) {
        with_input(&data, ring::run);
    }

    /// Structured: a well-behaved device with random reordering never breaks the queue.
    #[test]
    fn used_ring_honest_device_never_breaks(
        size_log2 in 0u8..9,
        packed in any::<bool>(),
        event_idx in any::<bool>(),
        steps in proptest::collection::vec((0u8..6, any::<u8>(), any::<u8>()), 0..200),
    ) {
        let ops = steps
            .iter()
            .map(|&(kind, a, b)| match kind {
                0 => Op::PushIndirect { entries: u16::from(a % 4) + 1 },
                1 => Op::PushChain { readable: a % 3 + 1, writable: b % 3 },
                2 => Op::Publish,
                3 => Op::Fetch,
                4 => Op::Complete { pick: a, len: u32::from(b) },
                _ => Op::Drain,
            })
            .collect();
        let input = ring::Input { size_log2, packed, event_idx, ops };
        prop_assert_eq!(ring::execute(&input), Ok(()));
    }
}

proptest! {
    // Each case starts an adapter (threads, guest memory): fewer cases.
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn bringup_any_configuration_bytes(data in bytes(512)) {
        with_input(&data, bringup::run);
    }
}

/// Bring-up over the model as it is (no override) starts and answers: the target reaches the
/// driver's whole start path, not only its refusals.
#[test]
fn bringup_of_a_well_behaved_device_starts() {
    let input = bringup::Input {
        device: bringup::Device {
            features: None,
            num_queues: 2,
            max_queue_size: 128,
            capacity_sectors: 2048,
            block_4k: false,
            physical_block_exp: 0,
            seg_max: 64,
            size_max: 1 << 16,
            read_only: false,
            writeback: true,
            discard: (1 << 16, 4),
            write_zeroes: (1 << 16, 4),
            msix_vectors: None,
        },
        intx: false,
        max_messages: 0,
        cpus: 1,
        pci: vec![],
        common: vec![],
        config: vec![],
    };
    assert!(bringup::starts(&input), "a plain model must start");
    bringup::run(&input);
}

/// The `srb` target's layout reaches what the driver reads: the CDB, the address, the sense
/// buffer and the data buffer, and a CDB block the offset table does not name is not read.
#[test]
fn srb_layout_reaches_the_cdb_address_and_buffers() {
    let mut cdb = [0u8; 32];
    cdb[..6].copy_from_slice(&[0x12, 0, 0, 0, 36, 0]);
    let mut input = srb::Input {
        srb: srb::Layout::Parts {
            function: 0,
            flags: 0,
            address: Some((1, 0, 2, 3)),
            blocks: vec![
                srb::Block::Pnp {
                    action: 7,
                    flags: 1,
                },
                srb::Block::Cdb {
                    long: false,
                    cdb_len: 6,
                    cdb,
                    sense_len: 18,
                    sense: true,
                },
            ],
            count: None,
            length: None,
        },
        patches: vec![],
        well_formed_header: false,
        data_len: 36,
        sense: vec![0x70; 40],
        sg: vec![],
        kind: 0,
        sector: 0,
        max_data_segments: 0,
        max_segment_size: 0,
    };
    let parsed = srb::parse_srb(&input);
    assert!(parsed.accepted);
    assert_eq!(&parsed.cdb[..parsed.cdb_len], &cdb[..6]);
    assert_eq!(
        parsed.address.map(|a| (a.path, a.target, a.lun)),
        Some((0, 2, 3))
    );
    assert_eq!(parsed.pnp.map(|p| p.action), Some(7));
    assert_eq!(parsed.sense_written, Some(18));
    assert_eq!(parsed.data_len, 36);
    // NumSrbExData = 1: the CDB block (the second) is not listed, so there is no CDB.
    if let srb::Layout::Parts { count, .. } = &mut input.srb {
        *count = Some(1);
    }
    let parsed = srb::parse_srb(&input);
    assert_eq!(parsed.cdb_len, 0);
    assert_eq!(parsed.pnp.map(|p| p.action), Some(7));
}

// ---- The ring oracle's checks can fire. ----

fn elem(id: u16) -> Result<UsedElem, ()> {
    Ok(UsedElem { id, len: 0 })
}

#[test]
fn oracle_flags_a_second_completion() {
    let mut model = Model::default();
    model.pushed(3, true).unwrap();
    model.popped(elem(3)).unwrap();
    assert_eq!(model.popped(elem(3)), Err(Violation::NotInFlight(3)));
}

#[test]
fn oracle_flags_an_invented_completion() {
    let mut model = Model::default();
    assert_eq!(model.popped(elem(7)), Err(Violation::NotInFlight(7)));
}

#[test]
fn oracle_flags_an_unpublished_completion() {
    let mut model = Model::default();
    model.pushed(1, false).unwrap();
    assert_eq!(model.popped(elem(1)), Err(Violation::Unpublished(1)));
    model.publish();
    assert_eq!(model.popped(elem(1)), Ok(()));
}

#[test]
fn oracle_flags_an_id_handed_out_twice() {
    let mut model = Model::default();
    model.pushed(0, true).unwrap();
    assert_eq!(model.pushed(0, true), Err(Violation::IdReused(0)));
}

#[test]
fn oracle_flags_output_after_an_error() {
    let mut model = Model::default();
    model.pushed(0, true).unwrap();
    model.popped(Err(())).unwrap();
    assert_eq!(model.popped(elem(0)), Err(Violation::AfterBroken));
}

/// A queue that always says a completion is pending but never yields one.
struct Liar;

impl Drainable for Liar {
    fn pop(&mut self) -> Option<Result<UsedElem, ()>> {
        None
    }
    fn enable_interrupts(&mut self) -> bool {
        true
    }
}

/// A queue that yields the same id for ever.
struct Repeater;

impl Drainable for Repeater {
    fn pop(&mut self) -> Option<Result<UsedElem, ()>> {
        Some(Ok(UsedElem { id: 0, len: 0 }))
    }
    fn enable_interrupts(&mut self) -> bool {
        false
    }
}

#[test]
fn oracle_flags_a_drain_that_does_not_end() {
    let mut model = Model::default();
    assert_eq!(
        ring::drain(&mut Liar, &mut model, 8),
        Err(Violation::DrainDoesNotEnd)
    );
    let mut model = Model::default();
    model.pushed(0, true).unwrap();
    // The first element is fine, the second is a second completion of id 0.
    assert_eq!(
        ring::drain(&mut Repeater, &mut model, 8),
        Err(Violation::NotInFlight(0))
    );
}

// ---- Regressions: what the used-ring target found. ----

/// A packed queue broken by an unknown id kept answering "pending" from `enable_interrupts`,
/// so a drain that loops while completions are pending never ended (the split queue already
/// answered false once broken).
#[test]
fn broken_packed_queue_does_not_report_pending_completions() {
    let input = ring::Input {
        size_log2: 2,
        packed: true,
        event_idx: false,
        ops: vec![
            Op::PushIndirect { entries: 1 },
            // A used descriptor in the current lap naming an id that is not in flight.
            Op::WriteUsed {
                index: 0,
                id: 3,
                len: 0,
                lap: true,
            },
            Op::Drain,
        ],
    };
    assert_eq!(ring::execute(&input), Ok(()));
}

/// A split queue completed an id that was pushed but not yet published: the device cannot
/// have seen it, and its descriptors went back to the free list while the avail entry naming
/// them was still to be published.
#[test]
fn split_queue_refuses_a_completion_of_an_unpublished_chain() {
    let input = ring::Input {
        size_log2: 2,
        packed: false,
        event_idx: false,
        ops: vec![
            Op::PushIndirect { entries: 1 },
            Op::Publish,
            Op::PushIndirect { entries: 1 },
            // The device names the second chain (id 1), which it was never given.
            Op::WriteUsed {
                index: 0,
                id: 1,
                len: 0,
                lap: false,
            },
            Op::BumpUsedIdx { by: 1 },
            Op::Drain,
        ],
    };
    assert_eq!(ring::execute(&input), Ok(()));
}
