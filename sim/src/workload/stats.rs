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
        }
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
    }
}
