//! Counts and latency histograms: one [`ThreadStats`] per workload thread, merged at the end.

use std::time::Duration;

use hdrhistogram::Histogram;

/// The largest latency recorded exactly: one hour, in nanoseconds (longer ones saturate).
const MAX_LATENCY_NS: u64 = 3_600_000_000_000;

/// Operation and byte counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// READs completed with success.
    pub reads: u64,
    /// WRITEs completed with success.
    pub writes: u64,
    /// UNMAPs completed with success.
    pub unmaps: u64,
    /// SYNCHRONIZE CACHEs completed with success.
    pub flushes: u64,
    /// Bytes read by successful READs.
    pub bytes_read: u64,
    /// Bytes written by successful WRITEs.
    pub bytes_written: u64,
    /// Requests that completed with anything but success (after their retries).
    pub errors: u64,
    /// Requests sent again after a busy target or a unit attention.
    pub retries: u64,
    /// SRBs sent for READs and WRITEs: more than the requests when a request is larger than
    /// the disk's maximum transfer length and the class driver splits it (retries included).
    pub transfers: u64,
}

impl Counts {
    /// Reads, writes and unmaps (flushes are not I/Os of the job, as in diskspd).
    pub fn ios(&self) -> u64 {
        self.reads + self.writes + self.unmaps
    }

    fn add(&mut self, o: &Self) {
        self.reads += o.reads;
        self.writes += o.writes;
        self.unmaps += o.unmaps;
        self.flushes += o.flushes;
        self.bytes_read += o.bytes_read;
        self.bytes_written += o.bytes_written;
        self.errors += o.errors;
        self.retries += o.retries;
        self.transfers += o.transfers;
    }
}

/// Latency percentiles of one kind of operation, in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LatencySummary {
    /// Operations recorded.
    pub count: u64,
    /// Smallest latency.
    pub min_us: f64,
    /// Mean latency.
    pub mean_us: f64,
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p99_9_us: f64,
    /// Largest latency.
    pub max_us: f64,
}

impl LatencySummary {
    fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        Self {
            count: h.len(),
            min_us: us(h.min()),
            mean_us: h.mean() / 1000.0,
            p50_us: us(h.value_at_quantile(0.50)),
            p90_us: us(h.value_at_quantile(0.90)),
            p99_us: us(h.value_at_quantile(0.99)),
            p99_9_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
        }
    }
}

/// Latencies by operation.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Latencies {
    /// READs.
    pub read: LatencySummary,
    /// WRITEs.
    pub write: LatencySummary,
    /// Every request (reads, writes, unmaps, flushes).
    pub all: LatencySummary,
}

/// The quantiles of the latency curve: evenly spaced in "nines" (0.9, 0.99, ...), as latency
/// percentile plots are drawn.
pub const CURVE_QUANTILES: [f64; 19] = [
    0.0, 0.1, 0.25, 0.5, 0.6, 0.7, 0.75, 0.8, 0.9, 0.95, 0.97, 0.99, 0.995, 0.999, 0.9995, 0.9999,
    0.99995, 0.99999, 1.0,
];

/// How many failed requests are kept with their description.
pub const ERROR_SAMPLES: usize = 8;

/// One thread's counts and histograms.
pub struct ThreadStats {
    /// The counts.
    pub counts: Counts,
    read: Histogram<u64>,
    write: Histogram<u64>,
    all: Histogram<u64>,
    /// The first failed requests, described.
    pub errors: Vec<String>,
    /// Failed requests by how they failed (SRB status, SCSI status and sense, in words).
    pub failures: std::collections::BTreeMap<String, u64>,
    /// Completed I/Os and bytes per [`TIMELINE_INTERVAL`] since the job began.
    pub timeline: Vec<Interval>,
}

/// The width of one bucket of the timeline.
pub const TIMELINE_INTERVAL: Duration = Duration::from_millis(100);

/// The timeline is cut off after this many buckets (a day at 100 ms), so memory is bounded.
const TIMELINE_MAX: usize = 864_000;

/// What completed in one interval of the timeline.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Interval {
    /// Reads, writes and unmaps that completed successfully.
    pub ios: u64,
    /// Bytes they read and wrote.
    pub bytes: u64,
}

/// One workload thread's totals, for the per-thread table (as diskspd prints it).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ThreadSummary {
    /// The thread's index.
    pub thread: u32,
    /// Its counts.
    pub counts: Counts,
    /// Mean latency of its requests, microseconds.
    pub mean_us: f64,
    /// Standard deviation of their latency, microseconds.
    pub stdev_us: f64,
}

fn histogram() -> Histogram<u64> {
    // Three significant digits from 1 ns to an hour: the bounds are constants that
    // new_with_bounds accepts (low >= 1, high >= 2 * low, sigfig <= 5).
    Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3).expect("constant bounds are valid")
}

impl Default for ThreadStats {
    fn default() -> Self {
        Self::new()
    }
}

/// The kind of a completed request, for the histograms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recorded {
    /// A READ.
    Read,
    /// A WRITE.
    Write,
    /// Anything else.
    Other,
}

impl ThreadStats {
    /// Empty statistics.
    pub fn new() -> Self {
        Self {
            counts: Counts::default(),
            read: histogram(),
            write: histogram(),
            all: histogram(),
            errors: Vec::new(),
            failures: std::collections::BTreeMap::new(),
            timeline: Vec::new(),
        }
    }

    /// Counts a successful I/O of `bytes` that completed `since_start` into the job.
    pub fn completed_at(&mut self, since_start: Duration, bytes: u64) {
        let i = usize::try_from(since_start.as_millis() / TIMELINE_INTERVAL.as_millis())
            .unwrap_or(usize::MAX);
        if i >= TIMELINE_MAX {
            return;
        }
        if self.timeline.len() <= i {
            self.timeline.resize(i + 1, Interval::default());
        }
        if let Some(b) = self.timeline.get_mut(i) {
            b.ios += 1;
            b.bytes += bytes;
        }
    }

    /// This thread's totals, as thread `thread`.
    pub fn summary(&self, thread: u32) -> ThreadSummary {
        let us = |ns: f64| ns / 1000.0;
        ThreadSummary {
            thread,
            counts: self.counts,
            mean_us: if self.all.is_empty() {
                0.0
            } else {
                us(self.all.mean())
            },
            stdev_us: if self.all.is_empty() {
                0.0
            } else {
                us(self.all.stdev())
            },
        }
    }

    /// The latency of every request at the quantiles of [`CURVE_QUANTILES`]: (quantile,
    /// microseconds). Empty when nothing completed.
    pub fn latency_curve(&self) -> Vec<(f64, f64)> {
        if self.all.is_empty() {
            return Vec::new();
        }
        CURVE_QUANTILES
            .iter()
            .map(|&q| (q, self.all.value_at_quantile(q) as f64 / 1000.0))
            .collect()
    }

    /// Records the latency of a completed request.
    pub fn latency(&mut self, kind: Recorded, latency: Duration) {
        let ns = u64::try_from(latency.as_nanos())
            .unwrap_or(u64::MAX)
            .clamp(1, MAX_LATENCY_NS);
        match kind {
            Recorded::Read => self.read.saturating_record(ns),
            Recorded::Write => self.write.saturating_record(ns),
            Recorded::Other => {}
        }
        self.all.saturating_record(ns);
    }

    /// Records a failed request.
    pub fn error(&mut self, description: String) {
        self.counts.errors += 1;
        if self.errors.len() < ERROR_SAMPLES {
            self.errors.push(description);
        }
    }

    /// Counts a failed request under `how` it failed.
    pub fn failed_as(&mut self, how: String) {
        *self.failures.entry(how).or_insert(0) += 1;
    }

    /// Adds another thread's statistics to these.
    pub fn merge(&mut self, other: &Self) {
        for (how, n) in &other.failures {
            *self.failures.entry(how.clone()).or_insert(0) += n;
        }
        self.counts.add(&other.counts);
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.read.add(&other.read);
        let _ = self.write.add(&other.write);
        let _ = self.all.add(&other.all);
        if self.timeline.len() < other.timeline.len() {
            self.timeline
                .resize(other.timeline.len(), Interval::default());
        }
        for (a, b) in self.timeline.iter_mut().zip(&other.timeline) {
            a.ios += b.ios;
            a.bytes += b.bytes;
        }
        for e in &other.errors {
            if self.errors.len() < ERROR_SAMPLES {
                self.errors.push(e.clone());
            }
        }
    }

    /// The latency percentiles.
    pub fn latencies(&self) -> Latencies {
        Latencies {
            read: LatencySummary::of(&self.read),
            write: LatencySummary::of(&self.write),
            all: LatencySummary::of(&self.all),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_in_microseconds() {
        let mut a = ThreadStats::new();
        let mut b = ThreadStats::new();
        for us in 1..=1000u64 {
            let s = if us % 2 == 0 { &mut a } else { &mut b };
            s.latency(Recorded::Read, Duration::from_micros(us));
        }
        a.latency(Recorded::Write, Duration::from_millis(5));
        a.merge(&b);
        let l = a.latencies();
        assert_eq!(l.read.count, 1000);
        assert_eq!(l.all.count, 1001);
        // Three significant digits: within 0.1%.
        let near = |v: f64, want: f64| (v - want).abs() <= want * 0.001 + 0.001;
        assert!(near(l.read.p50_us, 500.0), "{}", l.read.p50_us);
        assert!(near(l.read.p99_us, 990.0), "{}", l.read.p99_us);
        assert!(near(l.read.max_us, 1000.0), "{}", l.read.max_us);
        assert!(near(l.write.max_us, 5000.0), "{}", l.write.max_us);
        let curve = a.latency_curve();
        assert_eq!(curve.len(), CURVE_QUANTILES.len());
        assert!((curve[3].1 - 500.0).abs() < 5.0, "{curve:?}");
        assert!((curve.last().unwrap().1 - 5000.0).abs() < 10.0, "{curve:?}");
        assert!(curve.windows(2).all(|w| w[0].1 <= w[1].1), "{curve:?}");
        let t = a.summary(3);
        assert_eq!((t.thread, t.counts), (3, a.counts));
        assert!(t.mean_us > 400.0 && t.stdev_us > 200.0, "{t:?}");
        assert!(ThreadStats::new().latency_curve().is_empty());
    }

    #[test]
    fn timeline_buckets() {
        let mut a = ThreadStats::new();
        let mut b = ThreadStats::new();
        a.completed_at(Duration::from_millis(50), 4096);
        a.completed_at(Duration::from_millis(99), 4096);
        b.completed_at(Duration::from_millis(250), 512);
        a.merge(&b);
        assert_eq!(
            a.timeline,
            [
                Interval {
                    ios: 2,
                    bytes: 8192
                },
                Interval::default(),
                Interval { ios: 1, bytes: 512 }
            ]
        );
        // Far past the bound: dropped, not a huge allocation.
        a.completed_at(Duration::from_secs(1 << 40), 1);
        assert_eq!(a.timeline.len(), 3);
    }
}
