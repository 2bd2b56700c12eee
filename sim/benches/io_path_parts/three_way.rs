//! (f) One job three ways: 4 KiB random reads at queue depth 32 through the driver over the
//! project's device model, through the driver over qemu-storage-daemon (vhost-user-blk, raw
//! image in tmpfs), and by a vhost-user client with no driver against the same kind of daemon
//! (`vioblk_sim::device::vhost_direct`). For each: IOPS, and CPU time per read of this process
//! (every thread: the user-mode Storport, the driver, the device or the vhost-user front end)
//! and of the daemon, from /proc/PID/stat. Skipped, with the reason, without qemu-storage-daemon.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use storport_sim::{Adapter, PortOptions, Request};
use vioblk_sim::device::{VhostUserOptions, vhost_direct};
use vioblk_sim::qemu::{DaemonOptions, QemuStack, QemuStorageDaemon, daemon_binary};
use vioblk_sim::stack::StackOptions;

use super::qd32;

/// Reads per way.
pub const IOS: u64 = 50_000;

/// One way's figures.
pub struct Way {
    pub name: &'static str,
    pub iops: f64,
    /// CPU microseconds per read: this process, the daemon.
    pub cpu_us_self: f64,
    pub cpu_us_daemon: Option<f64>,
}

/// utime + stime of `pid` ("self" for this process), in seconds.
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces: count from the closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat(5), i.e. 12 and 13 after the state (field 3).
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / clock_ticks())
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

struct Meter {
    daemon: Option<String>,
    start_self: f64,
    start_daemon: f64,
}

impl Meter {
    fn start(daemon: Option<u32>) -> Meter {
        let daemon = daemon.map(|p| p.to_string());
        Meter {
            start_self: cpu_seconds("self").unwrap_or(0.0),
            start_daemon: daemon.as_deref().and_then(cpu_seconds).unwrap_or(0.0),
            daemon,
        }
    }

    fn finish(&self, name: &'static str, ok: u64, elapsed: Duration) -> Way {
        let per = |s: f64| 1e6 * s / ok.max(1) as f64;
        Way {
            name,
            iops: ok as f64 / elapsed.as_secs_f64().max(1e-9),
            cpu_us_self: per(cpu_seconds("self").unwrap_or(0.0) - self.start_self),
            cpu_us_daemon: self
                .daemon
                .as_deref()
                .and_then(cpu_seconds)
                .map(|s| per(s - self.start_daemon)),
        }
    }
}

fn read16(lba: u64, blocks: u32) -> [u8; 16] {
    let mut cdb = [0u8; 16];
    cdb[0] = 0x88;
    cdb[2..10].copy_from_slice(&lba.to_be_bytes());
    cdb[10..14].copy_from_slice(&blocks.to_be_bytes());
    cdb
}

/// `ios` random 4 KiB reads at QD32 through `adapter` (qd32::run for any device); returns the
/// reads that succeeded and the time taken, or why the run is broken.
fn driver_reads(
    adapter: &Adapter,
    capacity_sectors: u64,
    ios: u64,
) -> Result<(u64, Duration), String> {
    let per_io = qd32::BLOCK / 512;
    let blocks = (capacity_sectors * 512 / u64::from(qd32::BLOCK)).max(1);
    let mut rng = 7u64;
    let mut next_lba = move || {
        rng ^= rng >> 12;
        rng ^= rng << 25;
        rng ^= rng >> 27;
        rng.wrapping_mul(0x2545_F491_4F6C_DD1D) % blocks * u64::from(per_io)
    };
    let (tx, rx) = mpsc::channel::<bool>();
    let submit = |lba: u64| {
        let tx = tx.clone();
        adapter.submit_with(
            Request::data_in(&read16(lba, per_io), qd32::BLOCK),
            move |c| {
                let _ = tx.send(c.srb_status & 0x3F == 1 && !c.port_rejected);
            },
        );
    };
    let start = Instant::now();
    let (mut submitted, mut ok) = (0u64, 0u64);
    while submitted < ios && submitted < qd32::QUEUE_DEPTH as u64 {
        submit(next_lba());
        submitted += 1;
    }
    while ok < submitted {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(true) => ok += 1,
            Ok(false) => return Err("a read failed".to_owned()),
            Err(_) => return Err("a read did not complete within 30 s".to_owned()),
        }
        if submitted < ios {
            submit(next_lba());
            submitted += 1;
        }
    }
    Ok((ok, start.elapsed()))
}

fn daemon_options() -> DaemonOptions {
    DaemonOptions {
        capacity_bytes: qd32::device_config().capacity_sectors * 512,
        num_queues: qd32::device_config().num_queues,
        ..DaemonOptions::default()
    }
}

/// Runs the three ways; `Err` says why the qemu ways were skipped or broke.
pub fn run(broken: &mut Vec<String>) -> Result<Vec<Way>, String> {
    let mut ways = Vec::new();
    // 1. The driver over the model.
    let stack = qd32::start_stack()?;
    let capacity = stack.device.capacity();
    let _ = driver_reads(&stack.adapter, capacity, 5_000);
    let m = Meter::start(None);
    match driver_reads(&stack.adapter, capacity, IOS) {
        Ok((ok, t)) => ways.push(m.finish("driver over the device model", ok, t)),
        Err(e) => broken.push(format!("(f) driver over the model: {e}")),
    }
    drop(stack);

    if daemon_binary().is_none() {
        return Err("qemu-storage-daemon is not installed".to_owned());
    }
    // 2. The driver over qemu-storage-daemon.
    let q = QemuStack::start(
        &daemon_options(),
        VhostUserOptions {
            num_queues: qd32::device_config().num_queues,
            ..VhostUserOptions::default()
        },
        StackOptions {
            // As qd32::start_stack: no buffer poisoning (a port cost, not a device one).
            port: PortOptions {
                poison: false,
                ..PortOptions::default()
            },
            ..StackOptions::default()
        },
    )?;
    let pid = q.daemon.as_ref().map(QemuStorageDaemon::pid);
    let capacity = q.stack.device.capacity();
    let _ = driver_reads(&q.stack.adapter, capacity, 5_000);
    let m = Meter::start(pid);
    match driver_reads(&q.stack.adapter, capacity, IOS) {
        Ok((ok, t)) => ways.push(m.finish("driver over qemu-storage-daemon", ok, t)),
        Err(e) => broken.push(format!("(f) driver over qemu-storage-daemon: {e}")),
    }
    let violations = q.stack.violations();
    if !violations.is_empty() {
        broken.push(format!(
            "(f) violations over qemu-storage-daemon: {violations:?}"
        ));
    }
    drop(q);

    // 3. A vhost-user client, no driver, against a fresh daemon.
    let d = QemuStorageDaemon::start(&daemon_options())?;
    let m = Meter::start(Some(d.pid()));
    match vhost_direct::random_reads(d.socket(), qd32::QUEUE_DEPTH as u16, qd32::BLOCK, IOS, 1) {
        Ok(r) if r.errors == 0 => {
            ways.push(m.finish("vhost-user client, no driver", r.ok, r.elapsed))
        }
        Ok(r) => broken.push(format!("(f) direct vhost-user client: {r:?}")),
        Err(e) => broken.push(format!("(f) direct vhost-user client: {e}")),
    }
    Ok(ways)
}
