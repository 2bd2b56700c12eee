//! The driver over every combination of the ring features a device may or may not offer
//! (issue 19): indirect descriptors on or off (chained descriptors: a request takes several ring
//! entries, so the ring fills sooner), event idx on or off (flag-based notification
//! suppression), in each interrupt mode. Each runs the verified diskspd-like workload of
//! `vioblk-sim` (reads, writes with FUA, UNMAP, SYNCHRONIZE CACHE) with more requests in flight
//! than the ring holds. What must hold: every request succeeds, every read returns what was
//! written, the device negotiated exactly what was offered, and Storport saw no violation.
//!
//! `VIOBLK_SIM_FEATURES_OFF=indirect,event-idx` runs any other suite in these modes (CI does,
//! for the driver suites).
#![forbid(unsafe_code)]

use std::time::Duration;

use storport_sim::PortOptions;
use vioblk_sim::class;
use vioblk_sim::device::{DeviceConfig, features};
use vioblk_sim::stack::{Stack, StackOptions};
use vioblk_sim::workload::{self, Mix, Pattern, Stop, WorkloadOptions};

#[derive(Clone, Copy, Debug)]
enum Interrupts {
    MultiQueue,
    Intx,
    SingleMessage,
}

fn run(interrupts: Interrupts, off: u64, fua: bool) {
    let queues = 4;
    let offered = features::DEFAULT & !off;
    let stack = Stack::start(StackOptions {
        device: DeviceConfig {
            num_queues: queues,
            // Small rings: with chained descriptors a 16 KiB request takes up to 6 entries, so
            // 4 threads x 24 in flight overflow them (BUSY, then Storport's retry).
            max_queue_size: 64,
            features: Some(offered),
            capacity_sectors: 16 * 1024,
            ..DeviceConfig::default()
        },
        port: PortOptions {
            // A hang is a request that outlives its 10 s timeout (scaled), reported as such.
            timeout_scale: 1.0,
            ..PortOptions::default()
        },
        intx: matches!(interrupts, Interrupts::Intx),
        max_messages: matches!(interrupts, Interrupts::SingleMessage).then_some(1),
        ..StackOptions::default()
    })
    .expect("the stack starts");
    let what = format!("{interrupts:?}, features off {off:#x}, fua {fua}");
    let negotiated = stack.device.negotiated_features();
    for bit in [features::INDIRECT_DESC, features::EVENT_IDX] {
        assert_eq!(
            negotiated & bit,
            offered & bit,
            "{what}: negotiated {negotiated:#x}"
        );
    }
    let disk = class::start_disk(&stack).expect("the class driver starts the disk");
    let result = workload::run(
        &stack,
        &disk,
        &WorkloadOptions {
            threads: 4,
            outstanding: 24,
            io_size: 16 * 1024,
            pattern: Pattern::Random,
            mix: Mix {
                write_percent: 40,
                unmap_percent: 10,
            },
            flush_every: 16,
            fua,
            stop: Stop::Ios(1200),
            seed: 0x19 ^ off,
            verify: true,
            starts_empty: true,
            progress: false,
        },
    )
    .expect("the job runs");
    assert_eq!(result.counts.errors, 0, "{what}: {:?}", result.failures);
    assert_eq!(result.counts.ios(), 1200, "{what}");
    assert!(result.counts.flushes > 0, "{what}: no SYNCHRONIZE CACHE");
    assert_eq!(
        result.verification.mismatches, 0,
        "{what}: {:?}",
        result.verification
    );
    assert!(
        result.verification.blocks_verified > 0,
        "{what}: nothing verified"
    );
    let violations = stack.violations();
    assert!(violations.is_empty(), "{what}: {}", violations.join("\n"));
    assert_eq!(
        stack.device.watch().hits(),
        0,
        "{what}: DMA after completion"
    );
    let seen = stack.adapter.activity();
    assert_eq!(
        (seen.timeouts, seen.resets),
        (0, 0),
        "{what}: a timeout or reset"
    );
    if matches!(interrupts, Interrupts::MultiQueue) {
        let used = stack
            .device
            .counters()
            .iter()
            .filter(|c| c.reads + c.writes > 0)
            .count();
        assert!(used > 1, "{what}: one queue carried everything");
    }
    // Nothing is left hanging: the adapter drains.
    stack
        .adapter
        .drain(Duration::from_secs(10))
        .expect("nothing outstanding");
}

const COMBINATIONS: [u64; 3] = [
    features::INDIRECT_DESC,
    features::EVENT_IDX,
    features::INDIRECT_DESC | features::EVENT_IDX,
];

#[test]
fn multi_queue_without_indirect_or_event_idx() {
    for off in COMBINATIONS {
        run(Interrupts::MultiQueue, off, false);
    }
    run(Interrupts::MultiQueue, COMBINATIONS[2], true);
}

#[test]
fn intx_without_indirect_or_event_idx() {
    for off in COMBINATIONS {
        run(Interrupts::Intx, off, off == COMBINATIONS[2]);
    }
}

#[test]
fn single_message_without_indirect_or_event_idx() {
    for off in COMBINATIONS {
        run(Interrupts::SingleMessage, off, off == COMBINATIONS[0]);
    }
}
