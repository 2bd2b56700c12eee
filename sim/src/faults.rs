//! `vioblk-sim run --fault SPEC`: injecting device faults into a running job, and what the report
//! says about them.
//!
//! A SPEC is a mode and comma-separated settings:
//!
//! | SPEC | fault |
//! |---|---|
//! | `bad-id`, `duplicate-id`, `len-too-long`, `len-zero`, `idx-jump`, `bad-status`, `lost`, `needs-reset`, `slow` | one request misbehaves ([`FaultMode`]) |
//! | `reset-ignored` | the device ignores its next reset(s) (`count=N`, default 1) |
//! | `reset-slow` | every reset from now on takes `ms` milliseconds (default 200) |
//! | `removal` | surprise removal: every register reads all ones, nothing more is served |
//! | `capacity` | the host resizes the disk (`sectors=N`, default: 1 MiB larger) |
//! | `chaos` | random request faults (and ignored resets) every `every=MS` milliseconds, from `seed=N` |
//!
//! Settings: `queue=Q` (only requests on queue Q), `at=N` (the Nth request after arming, default
//! 1), `seed=S` (a request fault without `at`: the Nth request with N drawn from 1..=1000 by the
//! seed), `after=MS` (arm MS milliseconds into the job, default 0), `ms=N` (how long `slow` holds
//! its request, default 200). Several `--fault` are armed one after the other, each once the previous
//! one fired.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::device::{FaultMode, VirtioBlkDevice};

/// What a `--fault` injects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// One request misbehaves.
    Request(FaultMode),
    /// The device ignores its next `count` resets.
    ResetIgnored,
    /// Every reset takes `slow_ms`.
    ResetSlow,
    /// The device vanishes.
    SurpriseRemoval,
    /// The disk is resized.
    CapacityChange,
    /// Random faults until the job ends.
    Chaos,
}

/// One `--fault SPEC`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultSpec {
    /// What.
    pub kind: FaultKind,
    /// Only requests on this queue.
    pub queue: Option<u16>,
    /// The Nth request after arming.
    pub at: u64,
    /// Milliseconds into the job before arming.
    pub after_ms: u64,
    /// How long a `slow` request is held.
    pub slow_ms: u64,
    /// Resets to ignore (`reset-ignored`).
    pub count: u32,
    /// The new capacity (`capacity`), in sectors; `None`: 1 MiB more.
    pub sectors: Option<u64>,
    /// Chaos: the interval between faults, and the seed.
    pub every_ms: u64,
    /// Chaos: the seed.
    pub seed: u64,
    /// The text as given.
    pub text: String,
}

impl FaultSpec {
    /// Parses `MODE[,key=value]...`.
    pub fn parse(text: &str) -> Result<FaultSpec, String> {
        let mut parts = text.split(',');
        let mode = parts.next().unwrap_or_default();
        let kind = match mode {
            "reset-ignored" => FaultKind::ResetIgnored,
            "reset-slow" => FaultKind::ResetSlow,
            "removal" => FaultKind::SurpriseRemoval,
            "capacity" => FaultKind::CapacityChange,
            "chaos" => FaultKind::Chaos,
            other => FaultKind::Request(other.parse().map_err(|e| {
                format!(
                    "{e}; modes: {}, reset-ignored, reset-slow, removal, capacity, chaos",
                    FaultMode::ALL.map(FaultMode::name).join(", ")
                )
            })?),
        };
        let mut spec = FaultSpec {
            kind,
            queue: None,
            at: 1,
            after_ms: 0,
            slow_ms: 200,
            count: 1,
            sectors: None,
            every_ms: 5,
            seed: 1,
            text: text.to_owned(),
        };
        let mut at_given = false;
        let mut seed_given = false;
        for part in parts {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| format!("fault setting `{part}` is not key=value"))?;
            let number = |what: &str| {
                value
                    .parse::<u64>()
                    .map_err(|_| format!("fault setting {what} needs a number, got `{value}`"))
            };
            match key {
                "queue" => {
                    spec.queue = Some(
                        u16::try_from(number("queue")?)
                            .map_err(|_| format!("queue {value} is too large"))?,
                    );
                }
                "at" => {
                    spec.at = number("at")?.max(1);
                    at_given = true;
                }
                "after" => spec.after_ms = number("after")?,
                "ms" => spec.slow_ms = number("ms")?,
                "count" => {
                    spec.count = u32::try_from(number("count")?)
                        .map_err(|_| format!("count {value} is too large"))?;
                }
                "sectors" => spec.sectors = Some(number("sectors")?),
                "every" => spec.every_ms = number("every")?.max(1),
                "seed" => {
                    spec.seed = number("seed")?;
                    seed_given = true;
                }
                other => return Err(format!("unknown fault setting `{other}`")),
            }
        }
        if matches!(spec.kind, FaultKind::Request(_)) && seed_given && !at_given {
            // splitmix64 of the seed: the same seed picks the same request.
            let mut z = spec.seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            spec.at = 1 + (z ^ (z >> 31)) % 1000;
        }
        Ok(spec)
    }

    /// Whether the device is gone after this fault.
    pub fn removes(&self) -> bool {
        self.kind == FaultKind::SurpriseRemoval
    }
}

/// What the injector did and how the driver recovered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FaultReport {
    /// The faults asked for, as given.
    pub specs: Vec<String>,
    /// What was injected, in order ("idx-jump on queue 1", "removal", ...).
    pub injected: Vec<String>,
    /// When each of `injected` happened, milliseconds from the start of the job.
    pub injected_at_ms: Vec<u64>,
    /// Storport's LU reset SRBs (multi-tier reset, first tier).
    pub lu_resets: u64,
    /// Storport's device reset SRBs (second tier).
    pub device_resets: u64,
    /// HwStorResetBus calls.
    pub bus_resets: u64,
    /// Resets the driver completed (ResetDetected).
    pub resets_detected: u64,
    /// Resets the device did not acknowledge: its DMA was cut.
    pub dma_cuts: u64,
    /// The driver recognised a surprise removal.
    pub removal_detected: bool,
    /// Reads of the check after the job, and how many got the expected answer (success, or
    /// NO_DEVICE after a removal).
    pub check_reads: u32,
    /// Reads of the check that got the expected answer.
    pub check_ok: u32,
    /// Whether the device was removed (the check then expects NO_DEVICE).
    pub removed: bool,
}

impl FaultReport {
    /// Whether the disk came back (or, after removal, fails every request with NO_DEVICE).
    pub fn recovered(&self) -> bool {
        self.check_reads > 0 && self.check_ok == self.check_reads
    }

    /// The report's `faults` object.
    pub fn to_json(&self) -> Value {
        json!({
            "specs": self.specs,
            "injected": self.injected,
            "injected_at_ms": self.injected_at_ms,
            "resets": {
                "lu": self.lu_resets, "device": self.device_resets, "bus": self.bus_resets,
                "detected": self.resets_detected, "dma_cut": self.dma_cuts,
            },
            "removal_detected": self.removal_detected,
            "removed": self.removed,
            "check": { "reads": self.check_reads, "as_expected": self.check_ok },
            "recovered": self.recovered(),
        })
    }

    /// The report's text section.
    pub fn to_text(&self) -> String {
        let mut s = String::from("\nfaults\n");
        s.push_str(&format!("  asked:      {}\n", self.specs.join("  ")));
        // Each distinct fault once, with how often it was injected.
        let mut kinds: Vec<(&str, usize)> = Vec::new();
        for what in &self.injected {
            match kinds.iter_mut().find(|(k, _)| *k == what.as_str()) {
                Some((_, n)) => *n += 1,
                None => kinds.push((what, 1)),
            }
        }
        let list: Vec<String> = kinds
            .iter()
            .map(|(k, n)| {
                if *n == 1 {
                    (*k).to_owned()
                } else {
                    format!("{k} x{n}")
                }
            })
            .collect();
        s.push_str(&format!(
            "  injected:   {} fault(s){}{}\n",
            self.injected.len(),
            if list.is_empty() { "" } else { ": " },
            list.join(", ")
        ));
        s.push_str(&format!(
            "  resets:     LU {}, device {}, bus {}; {} completed by the driver, {} with the DMA cut\n",
            self.lu_resets, self.device_resets, self.bus_resets, self.resets_detected, self.dma_cuts
        ));
        if self.removed {
            s.push_str(&format!(
                "  removal:    {}; after the job {} of {} reads failed with NO_DEVICE\n",
                if self.removal_detected {
                    "recognised by the driver"
                } else {
                    "NOT recognised"
                },
                self.check_ok,
                self.check_reads
            ));
        } else {
            s.push_str(&format!(
                "  recovery:   after the job {} of {} reads served\n",
                self.check_ok, self.check_reads
            ));
        }
        s
    }
}

/// The thread that arms faults while a job runs.
pub struct Injector {
    stop: Arc<AtomicBool>,
    injected: Arc<Mutex<Vec<(Instant, String)>>>,
    begun: Instant,
    thread: Option<JoinHandle<()>>,
    specs: Vec<FaultSpec>,
}

impl Injector {
    /// Starts arming `specs` on `device` (which has `queues` queues).
    pub fn start(device: Arc<VirtioBlkDevice>, queues: u16, specs: Vec<FaultSpec>) -> Injector {
        let stop = Arc::new(AtomicBool::new(false));
        let injected = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, injected, specs) = (stop.clone(), injected.clone(), specs.clone());
            std::thread::Builder::new()
                .name("fault-injector".into())
                .spawn(move || run(&device, queues, &specs, &stop, &injected))
                .ok()
        };
        Injector {
            stop,
            injected,
            begun: Instant::now(),
            thread,
            specs,
        }
    }

    /// Stops injecting (disarming what did not fire) and says what was injected, and when
    /// (milliseconds after the start).
    pub fn finish(mut self, device: &VirtioBlkDevice) -> (Vec<(u64, String)>, Vec<FaultSpec>) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        device.arm_fault(FaultMode::None, 1);
        device.ignore_resets(0);
        device.set_reset_delay_ms(0);
        let injected =
            std::mem::take(&mut *self.injected.lock().unwrap_or_else(PoisonError::into_inner));
        let begun = self.begun;
        let injected = injected
            .into_iter()
            .map(|(at, what)| {
                let ms = at.saturating_duration_since(begun).as_millis();
                (u64::try_from(ms).unwrap_or(u64::MAX), what)
            })
            .collect();
        (injected, std::mem::take(&mut self.specs))
    }
}

fn note(injected: &Mutex<Vec<(Instant, String)>>, what: String) {
    injected
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push((Instant::now(), what));
}

/// Sleeps until `until` or a stop; false on a stop.
fn sleep_until(until: Instant, stop: &AtomicBool) -> bool {
    while Instant::now() < until {
        if stop.load(Ordering::Acquire) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1).min(until - Instant::now()));
    }
    !stop.load(Ordering::Acquire)
}

fn run(
    device: &VirtioBlkDevice,
    queues: u16,
    specs: &[FaultSpec],
    stop: &AtomicBool,
    injected: &Mutex<Vec<(Instant, String)>>,
) {
    let begun = Instant::now();
    for spec in specs {
        if !sleep_until(begun + Duration::from_millis(spec.after_ms), stop) {
            return;
        }
        match spec.kind {
            FaultKind::Request(mode) => {
                device.set_slow_ms(spec.slow_ms);
                let fired = device.faults_fired();
                device.arm_fault_on(mode, spec.queue, spec.at);
                while device.faults_fired() == fired {
                    if !sleep_until(Instant::now() + Duration::from_millis(1), stop) {
                        return;
                    }
                }
                let (mode, queue) = device
                    .fired_faults()
                    .last()
                    .copied()
                    .unwrap_or((mode, spec.queue.unwrap_or(0)));
                note(injected, format!("{} on queue {queue}", mode.name()));
            }
            FaultKind::ResetIgnored => {
                device.ignore_resets(spec.count);
                note(injected, format!("reset-ignored x{}", spec.count));
            }
            FaultKind::ResetSlow => {
                device.set_reset_delay_ms(spec.slow_ms);
                note(injected, format!("reset-slow {} ms", spec.slow_ms));
            }
            FaultKind::SurpriseRemoval => {
                device.surprise_remove();
                note(injected, "removal".to_owned());
            }
            FaultKind::CapacityChange => {
                let sectors = spec.sectors.unwrap_or(device.capacity() + 2048);
                match device.resize(sectors) {
                    Ok(()) => note(injected, format!("capacity {sectors} sectors")),
                    Err(e) => note(injected, format!("capacity change failed: {e}")),
                }
            }
            FaultKind::Chaos => chaos(device, queues, spec, stop, injected),
        }
    }
}

/// Random faults every `every_ms` until the job ends: a request fault on a random queue within
/// the next few requests, now and then an ignored reset.
fn chaos(
    device: &VirtioBlkDevice,
    queues: u16,
    spec: &FaultSpec,
    stop: &AtomicBool,
    injected: &Mutex<Vec<(Instant, String)>>,
) {
    let mut rng = spec.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = || {
        rng ^= rng >> 12;
        rng ^= rng << 25;
        rng ^= rng >> 27;
        rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    device.set_slow_ms(spec.slow_ms.min(50));
    let mut seen = device.fired_faults().len();
    loop {
        if !sleep_until(Instant::now() + Duration::from_millis(spec.every_ms), stop) {
            return;
        }
        let fired = device.fired_faults();
        for (mode, queue) in fired.iter().skip(seen) {
            note(injected, format!("{} on queue {queue}", mode.name()));
        }
        seen = fired.len();
        if device.fault_armed() {
            continue;
        }
        let pick = next();
        if pick % 16 == 0 {
            device.ignore_resets(1);
            note(injected, "reset-ignored x1".to_owned());
        }
        let mode = FaultMode::ALL[(pick >> 8) as usize % FaultMode::ALL.len()];
        let queue = spec
            .queue
            .unwrap_or(((pick >> 24) % u64::from(queues.max(1))) as u16);
        device.arm_fault_on(mode, Some(queue), 1 + (pick >> 40) % 8);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse() {
        let s = FaultSpec::parse("idx-jump,queue=1,at=500").unwrap();
        assert_eq!(s.kind, FaultKind::Request(FaultMode::UsedIdxJump));
        assert_eq!((s.queue, s.at), (Some(1), 500));
        let s = FaultSpec::parse("slow,ms=30,after=100").unwrap();
        assert_eq!((s.slow_ms, s.after_ms), (30, 100));
        let s = FaultSpec::parse("chaos,seed=7,every=3").unwrap();
        assert_eq!((s.kind, s.seed, s.every_ms), (FaultKind::Chaos, 7, 3));
        assert!(FaultSpec::parse("removal").unwrap().removes());
        assert_eq!(
            FaultSpec::parse("capacity,sectors=4096").unwrap().sectors,
            Some(4096)
        );
        // A seed without `at` draws the request; the same seed, the same request.
        let a = FaultSpec::parse("lost,seed=9").unwrap();
        assert!((1..=1000).contains(&a.at));
        assert_eq!(FaultSpec::parse("lost,seed=9").unwrap().at, a.at);
        assert_eq!(FaultSpec::parse("lost,seed=9,at=3").unwrap().at, 3);
        assert!(FaultSpec::parse("nonsense").is_err());
        assert!(FaultSpec::parse("lost,at").is_err());
        assert!(FaultSpec::parse("lost,at=x").is_err());
        assert!(FaultSpec::parse("lost,colour=red").is_err());
        assert!(FaultSpec::parse("lost,queue=70000").is_err());
    }
}
