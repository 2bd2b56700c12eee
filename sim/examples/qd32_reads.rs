//! N 4 KiB random reads at queue depth 32 through the real stack (the vioblk driver on the
//! user-mode Storport over the virtio-blk model), then exit. The workload of `tools/bench.sh`'s
//! callgrind measurement and of `cargo bench -p vioblk-sim --bench io_path` (which includes this
//! file as a module).
//!
//! ```text
//! qd32_reads [IOS] [SEED]        defaults: 20000 reads, seed 1
//! ```
//!
//! With `VIOBLK_DRIVER_IMAGE` set the stack runs that vioblk.sys, and the example prints the
//! image's address range (the benchmark counts the instructions executed inside it).
//!
//! One submitting thread keeps 32 READ(16)s of 4 KiB in flight at random 4 KiB-aligned offsets
//! (xorshift64*, fixed seed, so every run issues the same requests). IOS = 0 only starts and
//! stops the stack: the callgrind baseline for setup cost. Exits 1 on a failed read or a
//! Storport rule violation.

#![allow(dead_code)]

use std::sync::mpsc;
use std::time::{Duration, Instant};

use storport_sim::{PortOptions, Request};
use vioblk_sim::device::DeviceConfig;
use vioblk_sim::stack::{Stack, StackOptions};

/// Bytes per read.
pub const BLOCK: u32 = 4096;
/// Requests in flight.
pub const QUEUE_DEPTH: usize = 32;

/// The device both the driver and the direct baseline run against: the default virtio-blk
/// model (4 queues, MSI-X, indirect descriptors, event idx) with a 256 MiB RAM disk.
pub fn device_config() -> DeviceConfig {
    DeviceConfig {
        capacity_sectors: 512 * 1024,
        ..DeviceConfig::default()
    }
}

/// The stack with the checks that cost time in the port and are no part of the driver turned
/// off (buffer poisoning), and with watchdog budgets of an hour: under valgrind every instruction
/// costs tens of times its native CPU time. Every Storport rule is still checked.
pub fn start_stack() -> Result<Stack, String> {
    Stack::start(StackOptions {
        device: device_config(),
        port: PortOptions {
            poison: false,
            // Under valgrind the CPU-time watchdog would measure valgrind, and one thread runs
            // at a time, so a callback can wait minutes for the scheduler. Instructions are what
            // this run counts.
            isr_budget: Duration::from_secs(3600),
            dpc_budget: Duration::from_secs(3600),
            raised_irql_budget: Duration::from_secs(3600),
            watchdog_hang_wall: Duration::from_secs(3600),
            ..PortOptions::default()
        },
        ..StackOptions::default()
    })
}

/// What one run did.
pub struct RunReport {
    /// Reads completed with SRB_STATUS_SUCCESS.
    pub ok: u64,
    /// Reads completed otherwise (or rejected by the port).
    pub failed: u64,
    /// First submission to last completion.
    pub elapsed: Duration,
}

fn read16(lba: u64, blocks: u32) -> [u8; 16] {
    let mut cdb = [0u8; 16];
    cdb[0] = 0x88;
    cdb[2..10].copy_from_slice(&lba.to_be_bytes());
    cdb[10..14].copy_from_slice(&blocks.to_be_bytes());
    cdb
}

/// Runs `ios` random 4 KiB reads at QD32 through `stack`.
pub fn run(stack: &Stack, ios: u64, seed: u64) -> RunReport {
    let sector = stack.device.config().logical_block_size.max(512);
    let per_io = BLOCK / sector;
    let blocks = (stack.device.capacity() * 512 / u64::from(BLOCK)).max(1);
    let mut rng = seed.max(1);
    let mut next_lba = move || {
        // xorshift64*
        rng ^= rng >> 12;
        rng ^= rng << 25;
        rng ^= rng >> 27;
        rng.wrapping_mul(0x2545_F491_4F6C_DD1D) % blocks * u64::from(per_io)
    };
    let (tx, rx) = mpsc::channel::<bool>();
    let submit = |lba: u64| {
        let tx = tx.clone();
        stack
            .adapter
            .submit_with(Request::data_in(&read16(lba, per_io), BLOCK), move |c| {
                let _ = tx.send(c.srb_status & 0x3F == 1 && !c.port_rejected);
            });
    };
    let start = Instant::now();
    let mut submitted = 0u64;
    let mut ok = 0u64;
    let mut failed = 0u64;
    while submitted < ios && submitted < QUEUE_DEPTH as u64 {
        submit(next_lba());
        submitted += 1;
    }
    while ok + failed < submitted {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(true) => ok += 1,
            Ok(false) => failed += 1,
            Err(_) => {
                // Lost completions: count them as failed rather than hang.
                failed += submitted - ok - failed;
                break;
            }
        }
        if submitted < ios {
            submit(next_lba());
            submitted += 1;
        }
    }
    RunReport {
        ok,
        failed,
        elapsed: start.elapsed(),
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let ios: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(20_000);
    let seed: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(1);
    let stack = match start_stack() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("qd32_reads: {e}");
            std::process::exit(1);
        }
    };
    if let Some(image) = stack.image {
        // The benchmark counts the image's own instructions by this address range.
        println!(
            "qd32_reads: image {} at {:#x} size {:#x}",
            image.path.display(),
            image.base,
            image.size
        );
    }
    // READ CAPACITY(16) first, as the disk class driver sends it before any I/O (viostor
    // refuses reads until it has answered one: it learns the last LBA there).
    let mut capacity = [0u8; 16];
    capacity[0] = 0x9E;
    capacity[1] = 0x10;
    capacity[13] = 32;
    let _ = stack
        .adapter
        .submit(storport_sim::Request::data_in(&capacity, 32))
        .wait();
    let r = run(&stack, ios, seed);
    let violations = stack.violations();
    println!(
        "qd32_reads: {} ok, {} failed, {:?}, {} violations",
        r.ok,
        r.failed,
        r.elapsed,
        violations.len()
    );
    for v in &violations {
        eprintln!("{v}");
    }
    if r.failed != 0 || !violations.is_empty() {
        std::process::exit(1);
    }
}
