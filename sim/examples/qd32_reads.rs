//! N 4 KiB random reads at queue depth 32 through the real stack (the vioblk driver on the
//! user-mode Storport over the virtio-blk model), then exit. The workload of `tools/bench.sh`'s
//! callgrind measurement and of `cargo bench -p vioblk-sim --bench io_path` (which includes this
//! file as a module).
//!
//! ```text
//! qd32_reads [IOS] [SEED] [--qd N] [--write] [--direct] [--stats]
//!                                 defaults: 20000 reads, seed 1, queue depth 32
//! ```
//!
//! `--write`: WRITE(16)s of 4 KiB instead. `--direct`: the device model driven directly
//! (`direct::random_reads`, one queue), no driver and no Storport: the other side of the
//! benchmark's instruction ratio. `--stats`: after a warm-up of 5,000 requests, the measured
//! run's CPU time, context switches and heap allocations (the example installs
//! `storport_sim::measure::CountingAlloc`) on one line, `qd32_reads: stats {json}`.
//!
//! With `VIOBLK_DRIVER_IMAGE` set the stack runs that vioblk.sys, and the example prints the
//! image's address range (the benchmark counts the instructions executed inside it).
//!
//! One submitting thread keeps 32 READ(16)s of 4 KiB in flight at random 4 KiB-aligned offsets
//! (xorshift64*, fixed seed, so every run issues the same requests). IOS = 0 only starts and
//! stops the stack: the callgrind baseline for setup cost. Exits 1 on a failed read or a
//! Storport rule violation.
#![forbid(unsafe_code)]
#![allow(dead_code)]

use std::time::{Duration, Instant};

use storport_sim::{CompletionQueue, PortOptions, Request};

#[global_allocator]
static ALLOC: storport_sim::measure::CountingAlloc = storport_sim::measure::CountingAlloc;
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
    /// SRB_STATUS_BUSY answers the port retried (a full ring), over all requests.
    pub busy_retries: u64,
}

fn read16(lba: u64, blocks: u32) -> [u8; 16] {
    rw16(0x88, lba, blocks)
}

fn rw16(op: u8, lba: u64, blocks: u32) -> [u8; 16] {
    let mut cdb = [0u8; 16];
    cdb[0] = op;
    cdb[2..10].copy_from_slice(&lba.to_be_bytes());
    cdb[10..14].copy_from_slice(&blocks.to_be_bytes());
    cdb
}

/// Runs `ios` random 4 KiB reads at QD32 through `stack`.
pub fn run(stack: &Stack, ios: u64, seed: u64) -> RunReport {
    run_with(stack, ios, seed, QUEUE_DEPTH, false)
}

/// Runs `ios` random 4 KiB reads (or writes) with `qd` in flight through `stack`.
pub fn run_with(stack: &Stack, ios: u64, seed: u64, qd: usize, write: bool) -> RunReport {
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
    // One request reused for every submission (only its LBA changes) and completions taken
    // from a CompletionQueue once per DPC run, the data lent in the guest buffer the device
    // wrote (as a Windows class driver's buffer is the one the device writes) and given back
    // when the completion is dropped: the submitter allocates and copies nothing per request,
    // so the allocation count is the port's and the driver's.
    let queue = CompletionQueue::lending();
    let mut req = if write {
        Request::data_out(&rw16(0x8A, 0, per_io), vec![0x5A; BLOCK as usize])
    } else {
        Request::data_in(&read16(0, per_io), BLOCK)
    };
    let mut submit = |lba: u64| {
        req.cdb[2..10].copy_from_slice(&lba.to_be_bytes());
        stack.adapter.submit_to(&req, &queue, lba);
    };
    let mut done = Vec::with_capacity(qd.max(1));
    let start = Instant::now();
    let mut submitted = 0u64;
    let mut ok = 0u64;
    let mut failed = 0u64;
    let mut busy_retries = 0u64;
    while submitted < ios && submitted < qd.max(1) as u64 {
        submit(next_lba());
        submitted += 1;
    }
    while ok + failed < submitted {
        if !queue.wait_into(&mut done, Duration::from_secs(30)) {
            // Lost completions: count them as failed rather than hang.
            failed += submitted - ok - failed;
            break;
        }
        for (_, c) in done.drain(..) {
            if c.srb_status & 0x3F == 1 && !c.port_rejected {
                ok += 1;
            } else {
                failed += 1;
            }
            busy_retries += u64::from(c.busy_retries);
            // Dropping the completion gives its lent guest buffer back to the port.
            if submitted < ios {
                submit(next_lba());
                submitted += 1;
            }
        }
    }
    RunReport {
        ok,
        failed,
        elapsed: start.elapsed(),
        busy_retries,
    }
}

/// Command-line options of the example.
#[derive(Clone, Copy, Debug)]
pub struct Args {
    /// Requests to run.
    pub ios: u64,
    /// Seed of the offset generator.
    pub seed: u64,
    /// Requests in flight.
    pub qd: usize,
    /// WRITE(16) instead of READ(16).
    pub write: bool,
    /// The device model driven directly (`direct::random_reads`), no driver, no Storport.
    pub direct: bool,
    /// Warm up, then print the run's CPU time, context switches and allocations.
    pub stats: bool,
}

/// Parses `[IOS] [SEED] [--qd N] [--write] [--direct] [--stats]`.
pub fn parse_args(args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut a = Args {
        ios: 20_000,
        seed: 1,
        qd: QUEUE_DEPTH,
        write: false,
        direct: false,
        stats: false,
    };
    let mut positional = 0;
    let mut args = args.peekable();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--qd" => {
                a.qd = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|&q| q > 0)
                    .ok_or("--qd needs a queue depth above 0")?;
            }
            "--write" => a.write = true,
            "--direct" => a.direct = true,
            "--stats" => a.stats = true,
            v => {
                let n: u64 = v
                    .parse()
                    .map_err(|_| format!("unexpected argument {v:?}"))?;
                match positional {
                    0 => a.ios = n,
                    1 => a.seed = n,
                    _ => return Err(format!("unexpected argument {v:?}")),
                }
                positional += 1;
            }
        }
    }
    if a.direct && a.write {
        return Err("--direct runs reads only".into());
    }
    Ok(a)
}

/// Requests run before a `--stats` measurement (pools and rings reach their steady state).
const WARM_UP: u64 = 5_000;

/// Prints the line the benchmark parses: per-run totals of the measured part.
fn print_stats(ios: u64, busy_retries: u64, spent: &storport_sim::measure::Usage) {
    println!(
        "qd32_reads: stats {{\"ios\":{ios},\"cpu_us\":{},\"context_switches\":{},\"allocations\":{},\"busy_retries\":{busy_retries}}}",
        spent.cpu_us, spent.context_switches, spent.allocations
    );
}

fn run_direct(a: &Args) -> Result<(), String> {
    use vioblk_sim::device::VirtioBlkDevice;
    use vioblk_sim::device::oracle::{self as direct, BenchParams};
    // A fresh device per run: the direct driver starts from ring index 0.
    let device = || {
        VirtioBlkDevice::new(device_config())
            .map(std::sync::Arc::new)
            .map_err(|e| format!("device model: {e:?}"))
    };
    let params = |ios: u64| BenchParams {
        queues: 1,
        queue_depth: a.qd.min(usize::from(u16::MAX)) as u16,
        requests_per_queue: ios,
        block_size: BLOCK,
        seed: a.seed,
    };
    if a.ios == 0 {
        return Ok(());
    }
    if a.stats {
        direct::random_reads(device()?, &params(WARM_UP)).map_err(|e| format!("{e:?}"))?;
    }
    let dev = device()?;
    let before = storport_sim::measure::Usage::now();
    let r = direct::random_reads(dev, &params(a.ios)).map_err(|e| format!("{e:?}"))?;
    let spent = storport_sim::measure::Usage::now().since(&before);
    println!(
        "qd32_reads: direct {} ok, {} errors, {:?}",
        r.completions, r.errors, r.elapsed
    );
    if a.stats {
        print_stats(r.completions, 0, &spent);
    }
    if r.errors != 0 || r.completions != a.ios {
        return Err("the direct run lost or failed requests".into());
    }
    Ok(())
}

fn main() {
    let a = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("qd32_reads: {e}");
            std::process::exit(2);
        }
    };
    if a.direct {
        if let Err(e) = run_direct(&a) {
            eprintln!("qd32_reads: {e}");
            std::process::exit(1);
        }
        return;
    }
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
    let mut warm_failed = 0;
    if a.stats && a.ios > 0 {
        warm_failed = run_with(&stack, WARM_UP, a.seed ^ 0x5555, a.qd, a.write).failed;
    }
    let before = storport_sim::measure::Usage::now();
    let r = run_with(&stack, a.ios, a.seed, a.qd, a.write);
    let spent = storport_sim::measure::Usage::now().since(&before);
    let violations = stack.violations();
    println!(
        "qd32_reads: {} ok, {} failed, {:?}, {} violations",
        r.ok,
        r.failed + warm_failed,
        r.elapsed,
        violations.len()
    );
    if a.stats {
        print_stats(r.ok + r.failed, r.busy_retries, &spent);
    }
    for v in &violations {
        eprintln!("{v}");
    }
    if r.failed + warm_failed != 0 || !violations.is_empty() {
        std::process::exit(1);
    }
}
