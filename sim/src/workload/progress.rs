//! The progress bar on stderr while a job runs (only when stderr is a terminal).

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::Stop;

/// Counters the workload threads bump and the progress bar reads.
#[derive(Default)]
pub struct Live {
    /// I/Os completed.
    pub ios: AtomicU64,
    /// Bytes moved by completed I/Os.
    pub bytes: AtomicU64,
    /// Failed requests.
    pub errors: AtomicU64,
    /// Set when the job is over.
    pub finished: AtomicBool,
}

/// Whether a bar would be seen at all.
pub fn wanted(enabled: bool) -> bool {
    enabled && std::io::stderr().is_terminal()
}

/// Draws the bar until `live.finished`, then clears it. Runs on its own thread.
pub fn run(live: &Live, stop: Stop, mismatches: &dyn Fn() -> u64) {
    let (len, template) = match stop {
        Stop::Duration(d) => (
            u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1),
            "{spinner} [{elapsed_precise}] [{bar:30}] {msg}",
        ),
        Stop::Ios(n) => (
            n.max(1),
            "{spinner} [{elapsed_precise}] [{bar:30}] {pos}/{len} I/Os {msg}",
        ),
    };
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    let start = Instant::now();
    let (mut last_ios, mut last_bytes, mut last_at) = (0u64, 0u64, start);
    while !live.finished.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(100));
        let now = Instant::now();
        let ios = live.ios.load(Ordering::Relaxed);
        let bytes = live.bytes.load(Ordering::Relaxed);
        let dt = now.duration_since(last_at).as_secs_f64().max(1e-9);
        let iops = (ios - last_ios) as f64 / dt;
        let mibs = (bytes - last_bytes) as f64 / dt / (1024.0 * 1024.0);
        (last_ios, last_bytes, last_at) = (ios, bytes, now);
        match stop {
            Stop::Duration(_) => {
                bar.set_position(
                    u64::try_from(start.elapsed().as_millis())
                        .unwrap_or(len)
                        .min(len),
                );
            }
            Stop::Ios(_) => bar.set_position(ios.min(len)),
        }
        bar.set_message(format!(
            "{iops:.0} IOPS  {mibs:.1} MiB/s  errors {}  mismatches {}",
            live.errors.load(Ordering::Relaxed),
            mismatches()
        ));
    }
    bar.finish_and_clear();
}
