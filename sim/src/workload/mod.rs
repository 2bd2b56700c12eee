//! A diskspd-like workload over a [`ScsiTarget`], with data verification.
//!
//! [`run`] starts `threads` threads that each keep `outstanding` requests in flight (diskspd `-t`
//! and `-o`), each request one I/O of `io_size` bytes (`-b`) at a random or sequential offset
//! (`-r`, `-s`) that is a READ, a WRITE (`-w` percent) or an UNMAP, plus a SYNCHRONIZE CACHE
//! every so many writes, for a duration (`-d`) or a fixed number of I/Os. The SRBs are the ones
//! disk.sys would send ([`crate::class`]).
//!
//! - [`generator`]: slots, the in-flight bitmap and the pattern;
//! - [`verify`]: stamped blocks and the shadow map every read is checked against;
//! - [`stats`]: counts and latency histograms;
//! - [`progress`]: the progress bar.

pub mod generator;
pub mod progress;
pub mod stats;
pub mod verify;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::class::{self, DiskGeometry, describe_completion};
use crate::target::{ScsiCompletion, ScsiRequest, ScsiTarget};

pub use generator::{Mix, OpKind, Pattern};
pub use stats::{
    CURVE_QUANTILES, Counts, Interval, Latencies, LatencySummary, TIMELINE_INTERVAL, ThreadSummary,
};
pub use verify::{Mismatch, MismatchKind, Verification};

use generator::{Generator, SlotMap};
use progress::Live;
use stats::{Recorded, ThreadStats};
use verify::{Shadow, UNKNOWN};

/// When a job ends.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Stop {
    /// After this long (requests in flight then are completed and counted).
    Duration(Duration),
    /// After this many reads, writes and unmaps in all.
    Ios(u64),
}

/// A job.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkloadOptions {
    /// Threads (diskspd `-t`).
    pub threads: u32,
    /// Requests in flight per thread (diskspd `-o`).
    pub outstanding: u32,
    /// Bytes per I/O (diskspd `-b`): a multiple of the logical block size.
    pub io_size: u32,
    /// Random or sequential.
    pub pattern: Pattern,
    /// Percentage of writes and unmaps.
    pub mix: Mix,
    /// A SYNCHRONIZE CACHE after every this many writes of a thread (0: never).
    pub flush_every: u32,
    /// Writes with FUA.
    pub fua: bool,
    /// When to stop.
    pub stop: Stop,
    /// The seed of the offsets and the mix.
    pub seed: u64,
    /// Verify every read against the shadow map.
    pub verify: bool,
    /// Whether the disk is known to be all zeroes at the start (else blocks not yet written
    /// are not checked).
    pub starts_empty: bool,
    /// Draw a progress bar on stderr (when it is a terminal).
    pub progress: bool,
}

impl Default for WorkloadOptions {
    /// The job `vioblk-sim` runs with no flags: 2 threads, 16 outstanding each, 4 KiB random,
    /// 30% writes, 3 seconds, verified.
    fn default() -> Self {
        Self {
            threads: 2,
            outstanding: 16,
            io_size: 4096,
            pattern: Pattern::Random,
            mix: Mix {
                write_percent: 30,
                unmap_percent: 0,
            },
            flush_every: 0,
            fua: false,
            stop: Stop::Duration(Duration::from_secs(3)),
            seed: 0x5EED,
            verify: true,
            starts_empty: true,
            progress: true,
        }
    }
}

/// What a job did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WorkloadResult {
    /// Wall-clock time from the first request to the last completion.
    pub elapsed: Duration,
    /// Operation and byte counts.
    pub counts: Counts,
    /// Latency percentiles.
    pub latencies: Latencies,
    /// The first failed requests, described.
    pub errors: Vec<String>,
    /// Failed requests by how they failed (SRB status, SCSI status and sense, in words), most
    /// frequent first.
    pub failures: Vec<(String, u64)>,
    /// The verification tally.
    pub verification: Verification,
    /// Each thread's totals.
    pub threads: Vec<ThreadSummary>,
    /// Completed I/Os and bytes per [`TIMELINE_INTERVAL`], from the start of the job.
    pub timeline: Vec<Interval>,
    /// Latency of every request at [`CURVE_QUANTILES`]: (quantile, microseconds).
    pub latency_curve: Vec<(f64, f64)>,
    /// SRBs one READ or WRITE became: 1, or more when the request is larger than the disk's
    /// maximum transfer length and the class driver split it.
    pub transfers_per_request: u32,
}

impl WorkloadResult {
    /// Reads, writes and unmaps per second.
    pub fn iops(&self) -> f64 {
        self.counts.ios() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// MiB read and written per second.
    pub fn mib_per_s(&self) -> f64 {
        (self.counts.bytes_read + self.counts.bytes_written) as f64
            / self.elapsed.as_secs_f64().max(1e-9)
            / (1024.0 * 1024.0)
    }
}

/// Checks that `opts` can run on `disk`; the message names the flag at fault.
///
/// # Errors
/// The first problem found, as a sentence for `error: ...`.
pub fn validate(opts: &WorkloadOptions, disk: &DiskGeometry) -> Result<(), String> {
    let bs = disk.logical_block_size;
    if opts.threads == 0 {
        return Err("-t must be at least 1, got 0".to_owned());
    }
    if opts.outstanding == 0 {
        return Err("-o must be at least 1, got 0".to_owned());
    }
    if opts.io_size == 0 || bs == 0 || !opts.io_size.is_multiple_of(bs) {
        return Err(format!(
            "-b must be a multiple of the logical block size ({bs}), got {}",
            opts.io_size
        ));
    }
    let slots = disk.capacity_bytes() / u64::from(opts.io_size);
    if slots == 0 {
        return Err(format!(
            "-b ({}) is larger than the disk ({} bytes)",
            opts.io_size,
            disk.capacity_bytes()
        ));
    }
    let total = u64::from(opts.threads) * u64::from(opts.outstanding);
    if slots < total {
        return Err(format!(
            "the disk holds {slots} I/Os of {} bytes, fewer than -t × -o = {total} in flight: \
             make -c larger, or -b, -t or -o smaller",
            opts.io_size
        ));
    }
    let blocks = opts.io_size / bs;
    // A READ or WRITE larger than the disk's maximum transfer length is split, as classpnp
    // splits it (`transfer_blocks`); only UNMAP has a limit of its own below.
    if opts.mix.write_percent > 100 {
        return Err(format!(
            "-w must be between 0 and 100, got {}",
            opts.mix.write_percent
        ));
    }
    if u16::from(opts.mix.write_percent) + u16::from(opts.mix.unmap_percent) > 100 {
        return Err(format!(
            "-w plus --unmap-percent must be at most 100, got {}",
            u16::from(opts.mix.write_percent) + u16::from(opts.mix.unmap_percent)
        ));
    }
    if opts.mix.write_percent > 0 && disk.write_protected {
        return Err("the disk is write-protected: use -w 0".to_owned());
    }
    if opts.mix.unmap_percent > 0 {
        if !disk.unmap_supported() {
            return Err("--unmap-percent needs a disk that supports UNMAP (LBPME)".to_owned());
        }
        if disk.limits.is_some_and(|l| blocks > l.max_unmap_lba_count) {
            return Err(format!(
                "-b ({}) exceeds the disk's maximum UNMAP LBA count: use a smaller -b, or no \
                 --unmap-percent",
                opts.io_size
            ));
        }
    }
    if let Stop::Duration(d) = opts.stop
        && d.is_zero()
    {
        return Err("-d must be a positive number of seconds, got 0".to_owned());
    }
    Ok(())
}

/// Everything the threads share.
struct Job<'a> {
    target: &'a dyn ScsiTarget,
    disk: &'a DiskGeometry,
    opts: &'a WorkloadOptions,
    map: SlotMap,
    shadow: Option<Shadow>,
    blocks_per_io: u32,
    /// Blocks per SRB of a READ or WRITE: `blocks_per_io`, or the disk's maximum transfer
    /// length when that is smaller (the request is then split, as classpnp does).
    transfer_blocks: u32,
    deadline: Option<Instant>,
    reserved: AtomicU64,
    live: Live,
    start: Instant,
}

impl Job<'_> {
    /// Takes one I/O from the job's budget; false when the job is over.
    fn reserve(&self) -> bool {
        match self.opts.stop {
            Stop::Duration(_) => self.deadline.is_none_or(|d| Instant::now() < d),
            Stop::Ios(n) => self.reserved.fetch_add(1, Ordering::Relaxed) < n,
        }
    }

    /// Gives back an I/O reserved but not issued.
    fn unreserve(&self) {
        if let Stop::Ios(_) = self.opts.stop {
            self.reserved.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Runs `opts` against `target`, a disk started as `disk`.
///
/// # Errors
/// Options the disk cannot run ([`validate`]).
pub fn run(
    target: &dyn ScsiTarget,
    disk: &DiskGeometry,
    opts: &WorkloadOptions,
) -> Result<WorkloadResult, String> {
    validate(opts, disk)?;
    let slots = disk.capacity_bytes() / u64::from(opts.io_size);
    let shadow = opts
        .verify
        .then(|| Shadow::new(disk.capacity_blocks, opts.starts_empty));
    let start = Instant::now();
    let job = Job {
        target,
        disk,
        opts,
        map: SlotMap::new(slots),
        shadow,
        blocks_per_io: opts.io_size / disk.logical_block_size,
        transfer_blocks: transfer_blocks(disk, opts.io_size / disk.logical_block_size),
        deadline: match opts.stop {
            Stop::Duration(d) => Some(start + d),
            Stop::Ios(_) => None,
        },
        reserved: AtomicU64::new(0),
        live: Live::default(),
        start,
    };
    let mut total = ThreadStats::new();
    let mut threads = Vec::new();
    std::thread::scope(|scope| {
        let job = &job;
        let bar = progress::wanted(opts.progress).then(|| {
            scope.spawn(move || {
                let mismatches = || job.shadow.as_ref().map_or(0, Shadow::mismatches);
                progress::run(&job.live, opts.stop, &mismatches);
            })
        });
        let workers: Vec<_> = (0..opts.threads)
            .map(|t| {
                std::thread::Builder::new()
                    .name(format!("workload-{t}"))
                    .spawn_scoped(scope, move || worker(job, t))
            })
            .collect();
        for (t, w) in (0..).zip(workers) {
            match w.map(|h| h.join()) {
                Ok(Ok(stats)) => {
                    threads.push(stats.summary(t));
                    total.merge(&stats);
                }
                Ok(Err(_)) => total.error("a workload thread panicked".to_owned()),
                Err(e) => total.error(format!("cannot start a workload thread: {e}")),
            }
        }
        job.live.finished.store(true, Ordering::Release);
        if let Some(bar) = bar {
            let _ = bar.join();
        }
    });
    let elapsed = start.elapsed();
    Ok(WorkloadResult {
        elapsed,
        counts: total.counts,
        latencies: total.latencies(),
        errors: total.errors.clone(),
        failures: {
            let mut f: Vec<(String, u64)> = total.failures.clone().into_iter().collect();
            f.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            f
        },
        verification: job.shadow.as_ref().map(Shadow::summary).unwrap_or_default(),
        threads,
        latency_curve: total.latency_curve(),
        timeline: total.timeline,
        transfers_per_request: job.blocks_per_io.div_ceil(job.transfer_blocks.max(1)),
    })
}

/// Blocks per SRB for requests of `blocks`: the disk's maximum transfer length (VPD page 0xB0)
/// when the request is larger, as classpnp splits a transfer at the adapter's
/// MaximumTransferLength.
fn transfer_blocks(disk: &DiskGeometry, blocks: u32) -> u32 {
    match disk.limits.map(|l| l.max_transfer_blocks) {
        Some(max) if max != 0 && blocks > max => max,
        _ => blocks.max(1),
    }
}

/// One request in flight.
struct Pending {
    op: Op,
    /// The slot it holds in the map (none for a flush).
    slot: Option<u64>,
    lba: u64,
    /// The generation written to each block (writes).
    generations: Vec<u32>,
    /// Times it was sent again after a busy target or a unit attention.
    retries: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Read,
    Write,
    Unmap,
    Flush,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Read => "READ",
            Op::Write => "WRITE",
            Op::Unmap => "UNMAP",
            Op::Flush => "SYNCHRONIZE CACHE",
        }
    }
}

/// How often a request is sent again, as classpnp does (its MAXIMUM_RETRIES).
const RETRIES: u32 = 4;

/// Whether disk.sys would send a request again rather than fail it: a busy or full target, a
/// bus reset, or a unit attention (reported once after a reset; SAM-5 5.14).
fn retryable(c: &ScsiCompletion) -> bool {
    use storport::ffi;
    let unit_attention = c.scsi_status == ffi::SCSISTAT_CHECK_CONDITION
        && c.valid_sense()
            .and_then(class::Sense::parse)
            .is_some_and(|s| s.key == class::sense_key::UNIT_ATTENTION);
    matches!(c.status(), ffi::SRB_STATUS_BUSY | ffi::SRB_STATUS_BUS_RESET)
        || matches!(c.scsi_status, ffi::SCSISTAT_BUSY | ffi::SCSISTAT_QUEUE_FULL)
        || unit_attention
}

type Completed = (usize, Duration, ScsiCompletion);

/// The SRBs of `p` (built again, identically, for a retry): one, or for a READ or WRITE larger
/// than the disk's maximum transfer length, one per `transfer_blocks` in LBA order.
fn requests(job: &Job<'_>, p: &Pending) -> Vec<ScsiRequest> {
    let parts = |f: &dyn Fn(u64, u32, std::ops::Range<usize>) -> ScsiRequest| {
        let bs = job.disk.logical_block_size as usize;
        let step = job.transfer_blocks.max(1);
        (0..job.blocks_per_io)
            .step_by(step as usize)
            .map(|first| {
                let n = step.min(job.blocks_per_io - first);
                let at = first as usize * bs;
                f(p.lba + u64::from(first), n, at..at + n as usize * bs)
            })
            .collect()
    };
    match p.op {
        Op::Read => parts(&|lba, n, _| job.disk.read(lba, n, false)),
        Op::Write => {
            let data = write_data(job, p.lba, &p.generations);
            parts(&|lba, _, range| {
                job.disk
                    .write(lba, data.get(range).unwrap_or(&[]).to_vec(), job.opts.fua)
            })
        }
        Op::Unmap => vec![job.disk.unmap(&[(p.lba, job.blocks_per_io)])],
        Op::Flush => vec![class::flush()],
    }
}

/// The parts of a split request completed so far.
struct Split {
    left: usize,
    parts: Vec<Option<ScsiCompletion>>,
}

/// One completion for a request split into `parts` (each complete): the first part that did
/// not succeed, in LBA order, or success with the parts' data joined.
fn merge(parts: Vec<Option<ScsiCompletion>>) -> ScsiCompletion {
    let parts: Vec<ScsiCompletion> = parts.into_iter().map(Option::unwrap_or_default).collect();
    if let Some(failed) = parts.iter().find(|c| !c.is_success()) {
        return failed.clone();
    }
    let mut merged = ScsiCompletion {
        srb_status: parts.first().map_or(0, |c| c.srb_status),
        ..ScsiCompletion::default()
    };
    for c in parts {
        merged.data_transfer_length = merged
            .data_transfer_length
            .saturating_add(c.data_transfer_length);
        merged.data_in.extend_from_slice(&c.data_in);
    }
    merged
}

/// Sends the SRBs of one request under `tag`; one completion comes back on `tx` when all of
/// them have completed (the parts of a split request are in flight together, as classpnp's
/// transfer packets are).
fn send(
    job: &Job<'_>,
    stats: &mut ThreadStats,
    tag: usize,
    p: &Pending,
    tx: &mpsc::Sender<Completed>,
) {
    let issued = Instant::now();
    let mut parts = requests(job, p);
    if matches!(p.op, Op::Read | Op::Write) {
        stats.counts.transfers += parts.len() as u64;
    }
    if parts.len() == 1 {
        let tx = tx.clone();
        let request = parts.remove(0);
        job.target.submit(
            request,
            Box::new(move |c| {
                // The thread waits for every request it issued, so it is still receiving.
                let _ = tx.send((tag, issued.elapsed(), c));
            }),
        );
        return;
    }
    let split = std::sync::Arc::new(std::sync::Mutex::new(Split {
        left: parts.len(),
        parts: vec![None; parts.len()],
    }));
    for (i, request) in parts.into_iter().enumerate() {
        let tx = tx.clone();
        let split = split.clone();
        job.target.submit(
            request,
            Box::new(move |c| {
                let done = {
                    let mut s = split.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some(slot) = s.parts.get_mut(i) {
                        *slot = Some(c);
                    }
                    s.left -= 1;
                    (s.left == 0).then(|| std::mem::take(&mut s.parts))
                };
                if let Some(parts) = done {
                    let _ = tx.send((tag, issued.elapsed(), merge(parts)));
                }
            }),
        );
    }
}

/// One workload thread: keeps `outstanding` requests in flight until the job is over.
fn worker(job: &Job<'_>, thread: u32) -> ThreadStats {
    let opts = job.opts;
    let qd = usize::try_from(opts.outstanding).unwrap_or(1);
    let mut generator = Generator::new(
        opts.pattern,
        opts.mix,
        job.map.slots(),
        thread,
        opts.threads,
        opts.seed,
    );
    let (tx, rx) = mpsc::channel::<Completed>();
    let mut pending: Vec<Option<Pending>> = (0..qd).map(|_| None).collect();
    let mut free: Vec<usize> = (0..qd).rev().collect();
    let mut stats = ThreadStats::new();
    let mut writes_issued = 0u64;
    let mut flush_due = false;
    let mut over = false;
    loop {
        while let Some(&tag) = free.last() {
            let mut p = Pending {
                op: Op::Flush,
                slot: None,
                lba: 0,
                generations: Vec::new(),
                retries: 0,
            };
            if flush_due {
                flush_due = false;
            } else {
                if over || !job.reserve() {
                    over = true;
                    break;
                }
                let Some(slot) = generator.next_slot(&job.map) else {
                    job.unreserve();
                    break;
                };
                p.op = match generator.next_kind() {
                    OpKind::Read => Op::Read,
                    OpKind::Write => Op::Write,
                    OpKind::Unmap => Op::Unmap,
                };
                p.slot = Some(slot);
                p.lba = slot * u64::from(job.blocks_per_io);
            }
            if p.op == Op::Write {
                writes_issued += 1;
                flush_due = opts.flush_every != 0
                    && writes_issued.is_multiple_of(u64::from(opts.flush_every));
                // The slot is this thread's alone until the write completes, so these are the
                // generations that follow the last completed ones.
                p.generations = (p.lba..p.lba + u64::from(job.blocks_per_io))
                    .map(|lba| job.shadow.as_ref().map_or(1, |s| s.next_generation(lba)))
                    .collect();
            }
            free.pop();
            send(job, &mut stats, tag, &p, &tx);
            pending[tag] = Some(p);
        }
        if free.len() == qd {
            if over {
                break;
            }
            // Every free slot is held by other threads' I/Os: let them complete.
            std::thread::yield_now();
            continue;
        }
        // This thread holds a sender, so the channel cannot close while requests are out.
        let Ok((tag, latency, completion)) = rx.recv() else {
            break;
        };
        let Some(mut p) = pending[tag].take() else {
            continue;
        };
        if retryable(&completion) && p.retries < RETRIES {
            p.retries += 1;
            stats.counts.retries += 1;
            send(job, &mut stats, tag, &p, &tx);
            pending[tag] = Some(p);
            continue;
        }
        complete(job, &mut stats, p, latency, &completion);
        free.push(tag);
    }
    stats
}

/// The stamped data of a write at `lba` with these block generations.
fn write_data(job: &Job<'_>, lba: u64, generations: &[u32]) -> Vec<u8> {
    let bs = job.disk.logical_block_size as usize;
    let mut data = vec![0u8; job.opts.io_size as usize];
    for ((block_lba, block), &generation) in (lba..).zip(data.chunks_mut(bs)).zip(generations) {
        verify::stamp(block, block_lba, generation);
    }
    data
}

/// Accounts for one completed request and releases its slot.
fn complete(
    job: &Job<'_>,
    stats: &mut ThreadStats,
    p: Pending,
    latency: Duration,
    c: &ScsiCompletion,
) {
    let bytes = u64::from(job.opts.io_size);
    let blocks = u64::from(job.blocks_per_io);
    let bs = job.disk.logical_block_size as usize;
    let lbas = p.lba..p.lba + blocks;
    let ok = c.is_success() && (p.op != Op::Read || c.data_in.len() == job.opts.io_size as usize);
    let recorded = match p.op {
        Op::Read => Recorded::Read,
        Op::Write => Recorded::Write,
        _ => Recorded::Other,
    };
    stats.latency(recorded, latency);
    if ok {
        match p.op {
            Op::Read => {
                stats.counts.reads += 1;
                stats.counts.bytes_read += bytes;
                if let Some(shadow) = &job.shadow {
                    shadow.verify_read(&c.data_in, p.lba, bs);
                }
            }
            Op::Write => {
                stats.counts.writes += 1;
                stats.counts.bytes_written += bytes;
                if let Some(shadow) = &job.shadow {
                    for (lba, &g) in lbas.zip(&p.generations) {
                        shadow.set(lba, g);
                    }
                }
            }
            Op::Unmap => {
                stats.counts.unmaps += 1;
                if let Some(shadow) = &job.shadow {
                    // Unmapped blocks read as zeroes only with LBPRZ (SBC-3 4.7.4.5).
                    let after = if job.disk.lbprz { 0 } else { UNKNOWN };
                    lbas.for_each(|lba| shadow.set(lba, after));
                }
            }
            Op::Flush => stats.counts.flushes += 1,
        }
        if p.op != Op::Flush {
            job.live.ios.fetch_add(1, Ordering::Relaxed);
            let moved = if matches!(p.op, Op::Read | Op::Write) {
                bytes
            } else {
                0
            };
            job.live.bytes.fetch_add(moved, Ordering::Relaxed);
            stats.completed_at(job.start.elapsed(), moved);
        }
    } else {
        let what = if c.is_success() {
            format!(
                "returned {} bytes, not {}",
                c.data_in.len(),
                job.opts.io_size
            )
        } else {
            describe_completion(c)
        };
        let range = match p.op {
            Op::Flush => String::new(),
            _ => format!(" of LBA {}+{}", p.lba, blocks),
        };
        stats.failed_as(what.clone());
        stats.error(format!("{}{range}: {what}", p.op.name()));
        job.live.errors.fetch_add(1, Ordering::Relaxed);
        // A failed write or unmap may have changed some, all or none of its blocks.
        if let (Op::Write | Op::Unmap, Some(shadow)) = (p.op, &job.shadow) {
            lbas.for_each(|lba| shadow.set(lba, UNKNOWN));
        }
    }
    if let Some(slot) = p.slot {
        job.map.release(slot);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::AtomicBool as Flag;

    use super::*;
    use crate::class::start_disk;
    use crate::ram::{RamConfig, RamScsiTarget};
    use crate::target::{Done, ScsiRequest};

    fn ram(capacity: u64, block: u32) -> RamScsiTarget {
        RamScsiTarget::new(RamConfig {
            capacity_bytes: capacity,
            logical_block_size: block,
            queues: 2,
            ..RamConfig::default()
        })
        .expect("RAM disk")
    }

    fn job(ios: u64) -> WorkloadOptions {
        WorkloadOptions {
            stop: Stop::Ios(ios),
            progress: false,
            ..WorkloadOptions::default()
        }
    }

    #[test]
    fn a_verified_random_job_on_the_ram_disk() {
        let t = ram(4 << 20, 512);
        let disk = start_disk(&t).expect("starts");
        let opts = WorkloadOptions {
            mix: Mix {
                write_percent: 50,
                unmap_percent: 10,
            },
            flush_every: 8,
            ..job(4000)
        };
        let r = run(&t, &disk, &opts).expect("runs");
        assert_eq!(r.counts.ios(), 4000);
        assert_eq!(r.counts.errors, 0, "{:?}", r.errors);
        assert!(r.counts.flushes > 0);
        assert!(r.counts.unmaps > 0);
        assert!(r.verification.blocks_verified > 0);
        assert_eq!(r.verification.mismatches, 0, "{:?}", r.verification.samples);
        assert_eq!(r.latencies.all.count, r.counts.ios() + r.counts.flushes);
    }

    #[test]
    fn sequential_job_wraps_around_the_disk() {
        let t = ram(1 << 20, 4096);
        let disk = start_disk(&t).expect("starts");
        let opts = WorkloadOptions {
            pattern: Pattern::Sequential,
            io_size: 64 << 10,
            threads: 1,
            outstanding: 4,
            mix: Mix {
                write_percent: 100,
                unmap_percent: 0,
            },
            ..job(40)
        };
        let r = run(&t, &disk, &opts).expect("runs");
        assert_eq!(r.counts.writes, 40);
        // 16 slots of 64 KiB, 40 writes: every block was written 2 or 3 times.
        let mut first = vec![0u8; 4096];
        first.copy_from_slice(&t.peek(0, 4096));
        assert_eq!(verify::check_block(&first, 0, 3), Ok(()));
        let last = t.peek((1 << 20) - 4096, 4096);
        assert_eq!(verify::check_block(&last, 255, 2), Ok(()));
    }

    /// Wraps a target and fails if two outstanding requests ever overlap.
    struct OverlapChecker {
        inner: RamScsiTarget,
        busy: Mutex<Vec<(u64, u64)>>,
        overlapped: Flag,
    }

    fn range(r: &ScsiRequest) -> Option<(u64, u64)> {
        let c = &r.cdb;
        match c.first()? {
            0x28 | 0x2A => Some((
                u64::from(u32::from_be_bytes(c[2..6].try_into().ok()?)),
                u64::from(u16::from_be_bytes(c[7..9].try_into().ok()?)),
            )),
            _ => None,
        }
    }

    impl ScsiTarget for std::sync::Arc<OverlapChecker> {
        fn submit(&self, request: ScsiRequest, done: Done) {
            let Some((lba, n)) = range(&request) else {
                return self.inner.submit(request, done);
            };
            {
                let mut busy = self.busy.lock().expect("lock");
                if busy.iter().any(|&(l, m)| lba < l + m && l < lba + n) {
                    self.overlapped.store(true, Ordering::Relaxed);
                }
                busy.push((lba, n));
            }
            let me = std::sync::Arc::clone(self);
            self.inner.submit(
                request,
                Box::new(move |c| {
                    me.busy.lock().expect("lock").retain(|&r| r != (lba, n));
                    done(c);
                }),
            );
        }
    }

    #[test]
    fn no_two_outstanding_ios_overlap() {
        let checker = std::sync::Arc::new(OverlapChecker {
            inner: ram(256 << 10, 512),
            busy: Mutex::new(Vec::new()),
            overlapped: Flag::new(false),
        });
        let disk = start_disk(&checker).expect("starts");
        // 64 slots, 4 × 8 = 32 in flight: collisions are frequent if the bitmap fails.
        let opts = WorkloadOptions {
            threads: 4,
            outstanding: 8,
            ..job(5000)
        };
        let r = run(&checker, &disk, &opts).expect("runs");
        assert_eq!(r.counts.ios(), 5000);
        assert!(!checker.overlapped.load(Ordering::Relaxed));
        assert_eq!(r.verification.mismatches, 0);
    }

    /// A RAM disk whose reads and writes can be made to misbehave on chosen blocks.
    struct Faulty {
        inner: RamScsiTarget,
        /// Flip a byte of LBA 77 in every read that covers it, once it has been written.
        corrupt_77: bool,
        /// Drop a write to a block that already holds a stamp (a lost overwrite).
        lose_overwrites: bool,
    }

    impl ScsiTarget for Faulty {
        fn submit(&self, request: ScsiRequest, done: Done) {
            let Some((lba, n)) = range(&request) else {
                return self.inner.submit(request, done);
            };
            if request.cdb[0] == 0x2A
                && self.lose_overwrites
                && self.inner.peek(lba * 512, 8) == verify::MAGIC
            {
                return done(ScsiCompletion {
                    srb_status: storport::ffi::SRB_STATUS_SUCCESS,
                    ..ScsiCompletion::default()
                });
            }
            if request.cdb[0] == 0x28 && self.corrupt_77 && (lba..lba + n).contains(&77) {
                let at = usize::try_from((77 - lba) * 512 + 100).expect("small");
                return self.inner.submit(
                    request,
                    Box::new(move |mut c| {
                        if c.data_in.get(at - 100..at - 92) == Some(&verify::MAGIC[..]) {
                            c.data_in[at] ^= 0x40;
                        }
                        done(c)
                    }),
                );
            }
            self.inner.submit(request, done);
        }
    }

    fn mixed(ios: u64) -> WorkloadOptions {
        WorkloadOptions {
            threads: 2,
            outstanding: 4,
            mix: Mix {
                write_percent: 50,
                unmap_percent: 0,
            },
            ..job(ios)
        }
    }

    #[test]
    fn a_corrupted_block_is_reported_with_its_lba() {
        let t = Faulty {
            inner: ram(64 << 10, 512),
            corrupt_77: true,
            lose_overwrites: false,
        };
        let disk = start_disk(&t).expect("starts");
        let r = run(&t, &disk, &mixed(3000)).expect("runs");
        assert!(r.verification.mismatches > 0);
        let m = r.verification.samples[0];
        assert_eq!((m.lba, m.kind), (77, MismatchKind::Checksum));
        assert!(m.to_string().starts_with("LBA 77: generation"), "{m}");
    }

    #[test]
    fn lost_writes_are_reported() {
        let t = ram(64 << 10, 512);
        t.set_drop_writes(true);
        let disk = start_disk(&t).expect("starts");
        let r = run(&t, &disk, &mixed(2000)).expect("runs");
        let m = r.verification.samples.first().copied().expect("a mismatch");
        assert_eq!(m.kind, MismatchKind::Zeroes);
        assert!(m.to_string().ends_with("found zeroes (lost write)"), "{m}");
    }

    #[test]
    fn a_stale_generation_is_reported() {
        let t = Faulty {
            inner: ram(64 << 10, 512),
            corrupt_77: false,
            lose_overwrites: true,
        };
        let disk = start_disk(&t).expect("starts");
        let r = run(&t, &disk, &mixed(3000)).expect("runs");
        let m = r.verification.samples.first().copied().expect("a mismatch");
        assert_eq!(m.kind, MismatchKind::Stale { found: 1 });
        assert!(
            m.to_string().contains("found generation 1 (stale data)"),
            "{m}"
        );
        assert_eq!(r.counts.errors, 0);
    }

    /// Fails the first attempt of every other request, alternately with BUSY and a unit
    /// attention; its retry (the same CDB, as no two I/Os overlap) goes through.
    struct Busy(
        RamScsiTarget,
        Mutex<(u64, std::collections::HashSet<Vec<u8>>)>,
    );

    impl ScsiTarget for Busy {
        fn submit(&self, request: ScsiRequest, done: Done) {
            let fail = {
                let mut state = self.1.lock().expect("lock");
                let (n, failed) = &mut *state;
                *n += 1;
                if failed.remove(&request.cdb) || *n % 2 == 0 {
                    None
                } else {
                    failed.insert(request.cdb.clone());
                    Some(*n % 4 == 1)
                }
            };
            match fail {
                None => self.0.submit(request, done),
                Some(true) => done(ScsiCompletion::port_error(storport::ffi::SRB_STATUS_BUSY)),
                Some(false) => {
                    let mut sense = vec![0u8; 18];
                    sense[0] = 0x70;
                    sense[2] = crate::class::sense_key::UNIT_ATTENTION;
                    sense[12] = 0x29;
                    done(ScsiCompletion {
                        srb_status: storport::ffi::SRB_STATUS_ERROR
                            | storport::ffi::SRB_STATUS_AUTOSENSE_VALID,
                        scsi_status: storport::ffi::SCSISTAT_CHECK_CONDITION,
                        sense,
                        ..ScsiCompletion::default()
                    });
                }
            }
        }
    }

    #[test]
    fn busy_and_unit_attention_are_retried() {
        let t = Busy(ram(64 << 10, 512), Mutex::default());
        let disk = start_disk(&t).expect("starts despite the busy target");
        let r = run(&t, &disk, &mixed(1000)).expect("runs");
        assert_eq!(r.counts.errors, 0, "{:?}", r.errors);
        assert_eq!(r.counts.ios(), 1000);
        assert!(r.counts.retries >= 300, "{}", r.counts.retries);
        assert_eq!(r.verification.mismatches, 0);
    }

    #[test]
    fn bad_options_are_refused() {
        let t = ram(64 << 10, 4096);
        let disk = start_disk(&t).expect("starts");
        let bad = |o: WorkloadOptions| validate(&o, &disk).expect_err("refused");
        assert_eq!(
            bad(WorkloadOptions {
                io_size: 1000,
                ..job(1)
            }),
            "-b must be a multiple of the logical block size (4096), got 1000"
        );
        assert_eq!(
            bad(WorkloadOptions {
                io_size: 1 << 20,
                ..job(1)
            }),
            "-b (1048576) is larger than the disk (65536 bytes)"
        );
        assert_eq!(
            bad(job(1)),
            "the disk holds 16 I/Os of 4096 bytes, fewer than -t × -o = 32 in flight: make -c \
             larger, or -b, -t or -o smaller"
        );
    }
}
