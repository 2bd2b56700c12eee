//! The driver's crash-dump path against QEMU's own virtio-blk-pci (issue 6).
//!
//! The `vioblk-uefi` application is built once (a nested
//! `cargo build --release --target x86_64-unknown-uefi -p vioblk-uefi` with its own target
//! directory, so the outer cargo's lock is not in the way) and booted twice in QEMU (q35, OVMF):
//!
//! - one boot carries every device configuration at once, each a `virtio-blk-pci` device of its
//!   own at a fixed PCI location (00:10.0, 00:11.0, ...) with a fresh 64 MiB sparse disk image;
//!   the application gives each disk a dump stack of its own and runs the scenario on it, and the
//!   boot passes only when QEMU exits with the application's pass code (isa-debug-exit 0x10 ->
//!   33). Each configuration's test checks its own disk's part of the transcript and its image;
//! - `corrupted_expectation_fails` proves the harness can fail: the application is told to
//!   expect a pattern other than the one it writes, must report FAIL and exit with the fail code
//!   (35).
//!
//! Almost all of a boot is OVMF starting (about 5 s of CPU under TCG, 15 to 25 s of wall time on
//! a loaded 2-core machine; the scenario takes about 0.1 s per disk), which is why the
//! configurations share one boot. The two boots run side by side, at most one per core. The
//! expectations reach the application as `vioblk.cfg` on the boot FAT folder, one section per
//! disk (see `src/expect.rs`). After QEMU exits each image file is read from Linux and every
//! byte is checked against that disk's `@wrote`/`@zero`/`@unmapped` lines: the patterned blocks
//! must be where the driver said it wrote them, and everything else must still be zero.
//!
//! Nothing here sleeps or polls a clock: the harness waits on QEMU's serial output, its stderr
//! and its exit, each wait bounded by a generous deadline whose expiry fails the test and says
//! which step did not happen. KVM is used when `/dev/kvm` opens and a firmware-only probe boot
//! shows it can run OVMF (nested KVM often cannot); otherwise TCG.
//!
//! Without qemu-system-x86_64, the OVMF firmware or the x86_64-unknown-uefi target the tests
//! print `SKIPPED: ...` and pass, except when the `CI` environment variable is set (CI installs
//! them, so a missing tool there is a failure).

use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::num::NonZero;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Condvar, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

#[path = "../src/pattern.rs"]
#[allow(
    dead_code,
    reason = "the application uses all of it; the test only some"
)]
mod pattern;

/// Size of every disk image.
const IMAGE_SIZE: u64 = 64 * 1024 * 1024;
/// QEMU's exit status when the application writes 0x10 to isa-debug-exit: (0x10 << 1) | 1.
const EXIT_PASS: i32 = 33;
/// QEMU's exit status when the application writes 0x11: (0x11 << 1) | 1.
const EXIT_FAIL: i32 = 35;
/// What one boot may take for the firmware to start the application. OVMF needs about 5 s of CPU
/// under TCG, 15 to 25 s of wall time on a loaded machine; the deadline only has to end a boot
/// that will never finish.
const FIRMWARE_ALLOWANCE: Duration = Duration::from_secs(120);
/// What one boot may take for each disk on top (the scenario takes about 0.1 s per disk).
const DISK_ALLOWANCE: Duration = Duration::from_secs(30);
/// What the KVM probe may take for the firmware's first output (about 1 s under KVM).
const PROBE_DEADLINE: Duration = Duration::from_secs(60);
/// The PCI device number (on bus 0) of the first disk; the others follow.
const FIRST_SLOT: usize = 0x10;

/// One device configuration and what the application must find on it.
struct Disk {
    /// Name (also the image file's, and the disk's name in the transcript).
    name: &'static str,
    /// Extra `-drive` options for the disk.
    drive: &'static str,
    /// Extra `-device virtio-blk-pci` properties.
    device: &'static str,
    /// Lines of the disk's `vioblk.cfg` section besides location, name, seed and capacity.
    expect: &'static str,
    /// Seed of the written pattern.
    seed: u64,
    /// A different seed the application must expect instead (the failing case).
    expect_seed: Option<u64>,
}

impl Disk {
    const fn new(
        name: &'static str,
        drive: &'static str,
        device: &'static str,
        expect: &'static str,
        seed: u64,
    ) -> Self {
        Disk {
            name,
            drive,
            device,
            expect,
            seed,
            expect_seed: None,
        }
    }

    fn is_read_only(&self) -> bool {
        self.expect.contains("read_only=1")
    }
}

const FIVE_TWELVE: &str = "block_size=512\n";

/// The configurations that must pass; they share one boot, and each has a test below.
const CONFIGURATIONS: [Disk; 9] = [
    Disk::new("defaults", "", "", FIVE_TWELVE, 0x1001),
    Disk::new(
        "4kn",
        "",
        ",logical_block_size=4096,physical_block_size=4096",
        "block_size=4096\n",
        0x4096,
    ),
    Disk::new(
        "indirect_desc-off",
        "",
        ",indirect_desc=off",
        FIVE_TWELVE,
        0x1D0F,
    ),
    Disk::new("event_idx-off", "", ",event_idx=off", FIVE_TWELVE, 0xE1D0),
    Disk::new("num-queues-4", "", ",num-queues=4", FIVE_TWELVE, 0x4444),
    Disk::new(
        "discard-write-zeroes",
        ",discard=unmap",
        ",discard=on,write-zeroes=on",
        "block_size=512\nlbpme=1\nlbprz=1\nunmap=1\n",
        0xD15C,
    ),
    Disk::new(
        "read-only",
        ",readonly=on",
        "",
        "block_size=512\nread_only=1\n",
        0x0404,
    ),
    // Packed virtqueues (VIRTIO 1.2 2.8): the driver negotiates them when offered.
    Disk::new("packed", "", ",packed=on", FIVE_TWELVE, 0x9ACD),
    Disk::new(
        "packed-indirect_desc-off",
        "",
        ",packed=on,indirect_desc=off",
        FIVE_TWELVE,
        0x9AC0,
    ),
];

/// The configuration whose expectation is wrong: its boot must fail.
const CORRUPTED: Disk = Disk {
    expect_seed: Some(0xBAD ^ 1),
    ..Disk::new("corrupted", "", "", FIVE_TWELVE, 0xBAD)
};

/// What the tools are.
struct Tools {
    qemu: PathBuf,
    code: PathBuf,
    vars: PathBuf,
}

/// Finds QEMU, OVMF and the UEFI target, or says what is missing.
fn tools() -> Result<Tools, String> {
    let qemu = match std::env::var_os("QEMU") {
        Some(path) => Some(PathBuf::from(path)).filter(|p| p.is_file()),
        None => which("qemu-system-x86_64"),
    };
    let qemu =
        qemu.ok_or("qemu-system-x86_64 not found (Debian: apt-get install qemu-system-x86)")?;
    let dirs = [
        "/usr/share/OVMF",
        "/usr/share/ovmf",
        "/usr/share/qemu",
        "/usr/share/edk2/ovmf",
        "/usr/share/edk2/x64",
    ];
    let pairs = [
        ("OVMF_CODE_4M.fd", "OVMF_VARS_4M.fd"),
        ("OVMF_CODE.fd", "OVMF_VARS.fd"),
    ];
    let firmware = std::env::var_os("OVMF_CODE")
        .zip(std::env::var_os("OVMF_VARS"))
        .map(|(c, v)| (PathBuf::from(c), PathBuf::from(v)))
        .or_else(|| {
            dirs.iter()
                .flat_map(|d| {
                    pairs
                        .iter()
                        .map(move |(c, v)| (Path::new(d).join(c), Path::new(d).join(v)))
                })
                .find(|(c, v)| c.is_file() && v.is_file())
        });
    let (code, vars) = firmware.ok_or("OVMF firmware not found (Debian: apt-get install ovmf)")?;
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let libdir = Command::new(rustc)
        .args([
            "--print",
            "target-libdir",
            "--target",
            "x86_64-unknown-uefi",
        ])
        .current_dir(workspace())
        .output()
        .map_err(|e| format!("rustc: {e}"))?;
    let libdir = PathBuf::from(String::from_utf8_lossy(&libdir.stdout).trim());
    let has_core = fs::read_dir(&libdir)
        .map(|entries| {
            entries
                .flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("libcore-"))
        })
        .unwrap_or(false);
    if !has_core {
        return Err("the x86_64-unknown-uefi target is not installed (rustup target add x86_64-unknown-uefi)".into());
    }
    Ok(Tools { qemu, code, vars })
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("uefi/ sits in the workspace")
        .to_path_buf()
}

/// The tools, or `None` after printing SKIPPED (and failing under CI).
fn tools_or_skip(test: &str) -> Option<Tools> {
    match tools() {
        Ok(tools) => Some(tools),
        Err(reason) => {
            let line = format!("SKIPPED: {test}: {reason}");
            println!("{line}");
            // Straight to the process's stderr: libtest captures print!/eprint! of passing tests,
            // and a skip must be seen.
            let _ = writeln!(std::io::stderr(), "{line}");
            assert!(
                std::env::var_os("CI").is_none(),
                "{line} (CI is set: the tools must be installed)"
            );
            None
        }
    }
}

/// Builds the application once for all tests of this binary.
fn application() -> PathBuf {
    static APP: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    APP.get_or_init(build)
        .clone()
        .unwrap_or_else(|e| panic!("building vioblk-uefi failed:\n{e}"))
}

fn build() -> Result<PathBuf, String> {
    let root = workspace();
    let target_dir = std::env::var_os("VIOBLK_UEFI_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target").join("uefi-build"));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let started = Instant::now();
    let output = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--target",
            "x86_64-unknown-uefi",
            "-p",
            "vioblk-uefi",
        ])
        .current_dir(&root)
        .env("CARGO_TARGET_DIR", &target_dir)
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_MAKEFLAGS")
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    let efi = target_dir
        .join("x86_64-unknown-uefi")
        .join("release")
        .join("vioblk-uefi.efi");
    println!(
        "built {} in {:.1} s",
        efi.display(),
        started.elapsed().as_secs_f64()
    );
    efi.is_file()
        .then_some(efi)
        .ok_or_else(|| "cargo succeeded but no vioblk-uefi.efi".into())
}

/// The accelerator the boots use, and why.
struct Accelerator {
    /// KVM (true) or TCG.
    kvm: bool,
    /// Why, for the log.
    why: String,
}

impl Accelerator {
    fn name(&self) -> &'static str {
        if self.kvm { "KVM" } else { "TCG" }
    }
}

/// The accelerator, chosen once for every boot of this binary.
fn accelerator(tools: &Tools) -> &'static Accelerator {
    static ACCELERATOR: OnceLock<Accelerator> = OnceLock::new();
    ACCELERATOR.get_or_init(|| {
        let chosen = choose_accelerator(tools);
        report(format_args!(
            "accelerator: {} ({})",
            chosen.name(),
            chosen.why
        ));
        chosen
    })
}

/// KVM if `/dev/kvm` opens and the firmware runs under it, otherwise TCG; `VIOBLK_QEMU_ACCEL`
/// (`kvm` or `tcg`) decides instead when set.
fn choose_accelerator(tools: &Tools) -> Accelerator {
    let tcg = |why: String| Accelerator { kvm: false, why };
    match std::env::var("VIOBLK_QEMU_ACCEL").as_deref() {
        Ok("kvm") => {
            return Accelerator {
                kvm: true,
                why: "VIOBLK_QEMU_ACCEL=kvm".into(),
            };
        }
        Ok("tcg") => return tcg("VIOBLK_QEMU_ACCEL=tcg".into()),
        Ok(other) => return tcg(format!("VIOBLK_QEMU_ACCEL={other} is neither kvm nor tcg")),
        Err(_) => {}
    }
    if let Err(e) = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        return tcg(format!("/dev/kvm: {e}"));
    }
    // A /dev/kvm that opens is not proof: nested KVM may fail on the firmware's first
    // instructions, and then QEMU reports "KVM internal error" and hangs instead of exiting. A
    // boot of the firmware alone shows it: under a working KVM OVMF clears the serial console
    // about a second after the start.
    let dir = run_directory("kvm-probe");
    let mut command = qemu(tools, true, &dir);
    let probe = {
        let _slot = Slots::take();
        run_qemu(&mut command, PROBE_DEADLINE, &|serial, stderr| {
            !serial.is_empty() || contains(stderr, b"KVM internal error")
        })
    };
    let _ = fs::remove_dir_all(&dir);
    let run = match probe {
        Ok(run) => run,
        Err(e) => return tcg(format!("the KVM probe did not run: {e}")),
    };
    let stderr = String::from_utf8_lossy(&run.stderr);
    if contains(&run.stderr, b"KVM internal error") {
        return tcg(format!(
            "/dev/kvm opens, but KVM cannot run OVMF here: {}",
            stderr.lines().find(|l| l.contains("KVM")).unwrap_or("")
        ));
    }
    if run.serial.is_empty() {
        return tcg(format!(
            "/dev/kvm opens, but the firmware printed nothing under KVM ({}; {})",
            match run.end {
                End::Deadline(limit) => format!("nothing within {} s", limit.as_secs()),
                _ => format!("QEMU exited with {:?}", run.status),
            },
            stderr.trim()
        ));
    }
    Accelerator {
        kvm: true,
        why: format!(
            "the firmware started under KVM in {:.1} s",
            run.elapsed.as_secs_f64()
        ),
    }
}

/// Boots at once: one per core. A TCG boot keeps one host core busy, so more boots than cores
/// only make each one slower.
struct Slots {
    free: Mutex<usize>,
    freed: Condvar,
    total: usize,
}

/// A slot for one boot, returned when dropped.
struct Slot(&'static Slots);

impl Slots {
    fn get() -> &'static Slots {
        static SLOTS: OnceLock<Slots> = OnceLock::new();
        SLOTS.get_or_init(|| {
            let total = std::thread::available_parallelism().map_or(1, NonZero::get);
            Slots {
                free: Mutex::new(total),
                freed: Condvar::new(),
                total,
            }
        })
    }

    /// Waits until a slot is free (each holder's boot has its own deadline) and takes it.
    fn take() -> Slot {
        let slots = Slots::get();
        let mut free = slots.free.lock().unwrap_or_else(PoisonError::into_inner);
        while *free == 0 {
            free = slots
                .freed
                .wait(free)
                .unwrap_or_else(PoisonError::into_inner);
        }
        *free -= 1;
        Slot(slots)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(PoisonError::into_inner) += 1;
        self.0.freed.notify_one();
    }
}

/// A fresh directory for one QEMU run.
fn run_directory(name: &str) -> PathBuf {
    static RUN: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "vioblk-uefi-{name}-{}-{}",
        std::process::id(),
        RUN.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("create the run directory");
    dir
}

/// QEMU with the firmware (its variable store copied into `dir`) and nothing else: no default
/// devices (no network card, whose boot option would cost time), COM1 on stdout, and the
/// isa-debug-exit device through which the application ends the run.
fn qemu(tools: &Tools, kvm: bool, dir: &Path) -> Command {
    let vars = dir.join("OVMF_VARS.fd");
    fs::copy(&tools.vars, &vars).expect("copy OVMF_VARS");
    let mut command = Command::new(&tools.qemu);
    command
        .args(["-nodefaults", "-display", "none", "-no-reboot"])
        .args(["-machine", "q35", "-accel", if kvm { "kvm" } else { "tcg" }])
        .args(["-m", "256", "-smp", "1", "-serial", "stdio"])
        .arg("-drive")
        .arg(format!(
            "if=pflash,format=raw,unit=0,readonly=on,file={}",
            tools.code.display()
        ))
        .arg("-drive")
        .arg(format!(
            "if=pflash,format=raw,unit=1,file={}",
            vars.display()
        ))
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]);
    command
}

/// How a QEMU run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// QEMU exited by itself.
    Exited,
    /// What the caller waited for was seen, and QEMU was stopped.
    Seen,
    /// The deadline passed first, and QEMU was stopped.
    Deadline(Duration),
}

/// One QEMU run as it was watched.
struct Run {
    /// Exit status (None: stopped by the harness, or killed by a signal).
    status: Option<i32>,
    /// How the wait on QEMU ended.
    end: End,
    /// Everything written to COM1.
    serial: Vec<u8>,
    /// QEMU's own stderr.
    stderr: Vec<u8>,
    /// From the start to the application's first line, if it came.
    application: Option<Duration>,
    /// From the start to the end of the run.
    elapsed: Duration,
}

/// A chunk of QEMU's output, or the end of one of its streams.
enum Output {
    Serial(Vec<u8>),
    Stderr(Vec<u8>),
    Closed,
}

/// Forwards what `from` yields to `to` until the stream ends.
fn forward(mut from: impl Read + Send + 'static, to: Sender<Output>, wrap: fn(Vec<u8>) -> Output) {
    std::thread::spawn(move || {
        let mut buffer = [0u8; 4096];
        loop {
            match from.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => {
                    if to.send(wrap(buffer[..n].to_vec())).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let _ = to.send(Output::Closed);
    });
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Runs QEMU until it exits, until `seen(serial, stderr)` holds, or until `deadline` has passed,
/// whichever comes first, then stops it. The wait is on QEMU's output and the end of its
/// streams (they close when it exits), never on a clock.
fn run_qemu(
    command: &mut Command,
    deadline: Duration,
    seen: &dyn Fn(&[u8], &[u8]) -> bool,
) -> Result<Run, String> {
    let started = Instant::now();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start QEMU: {e}"))?;
    let (to, from) = mpsc::channel();
    forward(
        child.stdout.take().expect("piped stdout"),
        to.clone(),
        Output::Serial,
    );
    forward(
        child.stderr.take().expect("piped stderr"),
        to,
        Output::Stderr,
    );
    let mut run = Run {
        status: None,
        end: End::Exited,
        serial: Vec::new(),
        stderr: Vec::new(),
        application: None,
        elapsed: Duration::ZERO,
    };
    let mut open = 2;
    let take = |output, run: &mut Run, open: &mut usize| match output {
        Output::Serial(bytes) => {
            run.serial.extend_from_slice(&bytes);
            if run.application.is_none() && contains(&run.serial, b"vioblk-uefi:") {
                run.application = Some(started.elapsed());
            }
        }
        Output::Stderr(bytes) => run.stderr.extend_from_slice(&bytes),
        Output::Closed => *open -= 1,
    };
    while open > 0 {
        let Some(left) = deadline.checked_sub(started.elapsed()) else {
            run.end = End::Deadline(deadline);
            break;
        };
        match from.recv_timeout(left) {
            Ok(output) => take(output, &mut run, &mut open),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                run.end = End::Deadline(deadline);
                break;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if seen(&run.serial, &run.stderr) {
            run.end = End::Seen;
            break;
        }
    }
    if run.end != End::Exited {
        let _ = child.kill();
    }
    let status = child.wait().map_err(|e| format!("waiting for QEMU: {e}"))?;
    run.status = status.code().filter(|_| run.end == End::Exited);
    run.elapsed = started.elapsed();
    // What was still on its way: QEMU is gone, so both streams end now.
    while open > 0 {
        match from.recv() {
            Ok(output) => take(output, &mut run, &mut open),
            Err(_) => break,
        }
    }
    Ok(run)
}

/// How one boot ended.
struct Boot {
    /// The boot's name.
    name: &'static str,
    /// QEMU's exit status (None: stopped after the deadline, or killed by a signal).
    status: Option<i32>,
    /// How the wait on QEMU ended.
    end: End,
    /// The serial transcript without terminal escape sequences.
    transcript: String,
    /// QEMU's own stderr.
    stderr: String,
    /// From QEMU's start to the application's first line (the firmware's part of the boot).
    firmware: Option<Duration>,
    /// Wall time of the boot.
    elapsed: Duration,
    /// The run's directory (removed when everything in it passed).
    dir: PathBuf,
}

impl Boot {
    /// The disk image of `disk`.
    fn image(&self, disk: &Disk) -> PathBuf {
        image(&self.dir, disk)
    }

    /// One line for the log: how long the boot took and where the time went.
    fn timing(&self, accelerator: &Accelerator, disks: usize) -> String {
        let ending = match self.status {
            Some(status) => format!("QEMU exit {status}"),
            None => "QEMU stopped".into(),
        };
        let split = match self.firmware {
            Some(firmware) => format!(
                "firmware {:.1} s, application {:.1} s",
                firmware.as_secs_f64(),
                self.elapsed.saturating_sub(firmware).as_secs_f64()
            ),
            None => "the application never started".into(),
        };
        format!(
            "boot `{}` ({disks} disk(s), {}): {ending} after {:.1} s ({split})",
            self.name,
            accelerator.name(),
            self.elapsed.as_secs_f64(),
        )
    }
}

/// The deadline of a boot with `disks` disks: its allowances, times the boots that may run at
/// once (they share the machine with each other and with whatever else runs on it).
/// `VIOBLK_QEMU_TIMEOUT` (seconds) overrides it.
fn boot_deadline(disks: usize) -> Duration {
    std::env::var("VIOBLK_QEMU_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or_else(|| {
            let one = FIRMWARE_ALLOWANCE + DISK_ALLOWANCE * disks as u32;
            one * Slots::get().total as u32
        })
}

/// The disk image of `disk` in the run directory `dir`.
fn image(dir: &Path, disk: &Disk) -> PathBuf {
    dir.join(format!("{}.img", disk.name))
}

/// The PCI location the harness gives the disk at `index`.
fn location(index: usize) -> String {
    format!("00:{:02x}.0", FIRST_SLOT + index)
}

/// Boots the application once with one virtio-blk-pci device per disk.
fn boot(tools: &Tools, app: &Path, name: &'static str, disks: &[Disk]) -> Result<Boot, String> {
    let accelerator = accelerator(tools);
    let dir = run_directory(name);
    let esp = dir.join("esp");
    fs::create_dir_all(esp.join("EFI").join("BOOT")).expect("create the ESP folder");
    fs::copy(app, esp.join("EFI").join("BOOT").join("BOOTX64.EFI")).expect("copy the application");
    let mut cfg = String::new();
    for (index, disk) in disks.iter().enumerate() {
        cfg.push_str(&format!(
            "disk={}\nname={}\nseed={:#x}\ncapacity={IMAGE_SIZE}\n",
            location(index),
            disk.name,
            disk.seed
        ));
        if let Some(other) = disk.expect_seed {
            cfg.push_str(&format!("expect_seed={other:#x}\n"));
        }
        cfg.push_str(disk.expect);
    }
    fs::write(esp.join("vioblk.cfg"), cfg).expect("write vioblk.cfg");

    let mut command = qemu(tools, accelerator.kvm, &dir);
    command
        .arg("-drive")
        .arg(format!(
            "if=none,id=esp,format=raw,file=fat:rw:{}",
            esp.display()
        ))
        .args(["-device", "ide-hd,drive=esp,bootindex=0"]);
    for (index, disk) in disks.iter().enumerate() {
        let image = image(&dir, disk);
        fs::File::create(&image)
            .and_then(|f| f.set_len(IMAGE_SIZE))
            .expect("create the disk image");
        command.arg("-drive").arg(format!(
            "if=none,id=d{index},format=raw,file={}{}",
            image.display(),
            disk.drive
        ));
        command.arg("-device").arg(format!(
            "virtio-blk-pci,drive=d{index},disable-legacy=on,bus=pcie.0,addr={:#x}{}",
            FIRST_SLOT + index,
            disk.device
        ));
    }
    let run = {
        let _slot = Slots::take();
        run_qemu(&mut command, boot_deadline(disks.len()), &|_, _| false)?
    };
    let _ = fs::write(dir.join("serial.log"), &run.serial);
    let boot = Boot {
        name,
        status: run.status,
        end: run.end,
        transcript: strip_escapes(&String::from_utf8_lossy(&run.serial)),
        stderr: String::from_utf8_lossy(&run.stderr).into_owned(),
        firmware: run.application,
        elapsed: run.elapsed,
        dir,
    };
    report(format_args!("{}", boot.timing(accelerator, disks.len())));
    Ok(boot)
}

/// Removes terminal escape sequences (the firmware console's) and carriage returns.
fn strip_escapes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for c in chars.by_ref() {
                        if c.is_ascii_alphabetic() {
                            break;
                        }
                    }
                }
            }
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

/// Whether the boot passed: the pass exit code and the PASS line, nothing else.
fn verdict(boot: &Boot) -> Result<(), String> {
    match boot.status {
        Some(EXIT_PASS) if boot.transcript.contains("VIOBLK-UEFI RESULT: PASS") => Ok(()),
        Some(EXIT_PASS) => Err("exit code 33 without a PASS line".into()),
        Some(EXIT_FAIL) => Err("the application reported FAIL (exit code 35)".into()),
        Some(other) => Err(format!(
            "QEMU exited with {other} (not the application's code)"
        )),
        None => Err(unfinished(boot)),
    }
}

/// What did not happen in a boot QEMU did not end by itself.
fn unfinished(boot: &Boot) -> String {
    let End::Deadline(limit) = boot.end else {
        return format!(
            "QEMU was killed by a signal after {:.0} s",
            boot.elapsed.as_secs_f64()
        );
    };
    let seconds = limit.as_secs();
    let last = boot
        .transcript
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    if last.is_empty() {
        format!("the firmware printed nothing on the serial console within {seconds} s")
    } else if !boot.transcript.contains("vioblk-uefi:") {
        format!(
            "the firmware did not start the application within {seconds} s (last line: `{last}`)"
        )
    } else if !boot.transcript.contains("VIOBLK-UEFI RESULT:") {
        format!("the application did not finish within {seconds} s (last line: `{last}`)")
    } else {
        format!(
            "the application printed its verdict but QEMU did not exit within {seconds} s (is isa-debug-exit missing?)"
        )
    }
}

/// The transcript from the application's first line on.
fn application_transcript(boot: &Boot) -> &str {
    let start = boot.transcript.find("vioblk-uefi:").unwrap_or(0);
    &boot.transcript[start..]
}

/// A failure message with what the boot left: the disk's part of the transcript (the whole
/// application transcript without a disk, or when the disk has none), QEMU's stderr, and the
/// run directory, which is kept.
fn explain(boot: &Boot, disk: Option<&str>, why: &str) -> String {
    let transcript = disk
        .and_then(|name| section(&boot.transcript, name).ok())
        .map_or_else(|| application_transcript(boot), |s| s.text);
    format!(
        "boot `{}`{}: {why}\n--- transcript ({}) ---\n{transcript}\n--- QEMU stderr ---\n{}\n(run directory kept: {})",
        boot.name,
        disk.map(|name| format!(", disk `{name}`"))
            .unwrap_or_default(),
        boot.dir.join("serial.log").display(),
        boot.stderr,
        boot.dir.display()
    )
}

/// One disk's part of the transcript.
struct Section<'a> {
    /// From its BEGIN line to its END line.
    text: &'a str,
    /// Whether the END line says PASS.
    passed: bool,
}

/// The part of the transcript between the disk's BEGIN and END lines.
fn section<'a>(transcript: &'a str, name: &str) -> Result<Section<'a>, String> {
    let begin = format!("VIOBLK-UEFI DISK BEGIN {name} ");
    let end = format!("VIOBLK-UEFI DISK END {name}: ");
    let start = transcript
        .find(&begin)
        .ok_or("the application never started this disk (no BEGIN line)")?;
    let rest = &transcript[start..];
    let stop = rest
        .find(&end)
        .ok_or("the run ended inside this disk's scenario (no END line)")?;
    let line_end = rest[stop..].find('\n').map_or(rest.len(), |n| stop + n);
    Ok(Section {
        text: &rest[..line_end],
        passed: rest[stop + end.len()..line_end].starts_with("PASS"),
    })
}

/// What the image must hold in one byte range, by the transcript.
#[derive(Clone, Copy, Debug)]
enum Content {
    Pattern(u64),
    Zeroes,
    Unspecified,
}

/// Parses the transcript's `@` lines into ranges; later lines take precedence.
fn layout(transcript: &str) -> Vec<(u64, u64, Content)> {
    let mut ranges = Vec::new();
    for line in transcript.lines() {
        let mut words = line.split_whitespace();
        let tag = words.next().unwrap_or("");
        let numbers: Vec<u64> = words
            .map(|w| match w.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16).unwrap_or(u64::MAX),
                None => w.parse().unwrap_or(u64::MAX),
            })
            .collect();
        let content = match (tag, numbers.as_slice()) {
            ("@wrote", [_, _, seed]) => Content::Pattern(*seed),
            ("@zero", [_, _]) => Content::Zeroes,
            ("@unmapped", [_, _]) => Content::Unspecified,
            _ => continue,
        };
        ranges.push((numbers[0], numbers[1], content));
    }
    ranges
}

/// Checks every byte of the image against the transcript: written ranges hold the pattern,
/// zeroed ones zeroes, and every byte nobody wrote is still zero. Returns how many ranges the
/// transcript names.
fn check_image(image: &Path, transcript: &str) -> Result<usize, String> {
    let data = fs::read(image).map_err(|e| format!("cannot read the image: {e}"))?;
    if data.len() as u64 != IMAGE_SIZE {
        return Err(format!(
            "image is {} bytes, expected {IMAGE_SIZE}",
            data.len()
        ));
    }
    let ranges = layout(transcript);
    check_content(&data, &ranges)?;
    Ok(ranges.len())
}

/// Checks `data` against `ranges` (later ranges win where they overlap).
fn check_content(data: &[u8], ranges: &[(u64, u64, Content)]) -> Result<(), String> {
    let size = data.len() as u64;
    for &(offset, len, _) in ranges {
        if offset % 8 != 0 || len % 8 != 0 || offset.checked_add(len).is_none_or(|e| e > size) {
            return Err(format!("bad range in the transcript: {offset} {len}"));
        }
    }
    // The image cut at every range's edges: each piece lies wholly inside or outside each range,
    // and belongs to the last range that covers it.
    let mut edges: Vec<u64> = ranges
        .iter()
        .flat_map(|&(offset, len, _)| [offset, offset + len])
        .chain([0, size])
        .collect();
    edges.sort_unstable();
    edges.dedup();
    for piece in edges.windows(2) {
        let (start, end) = (piece[0], piece[1]);
        let owner = ranges
            .iter()
            .rev()
            .find(|&&(offset, len, _)| offset <= start && end <= offset + len)
            .map(|&(_, _, content)| content);
        let bytes = &data[start as usize..end as usize];
        let bad = match owner {
            Some(Content::Pattern(seed)) => pattern::mismatch(seed, start, bytes),
            Some(Content::Zeroes) | None => first_nonzero(bytes),
            Some(Content::Unspecified) => None,
        };
        if let Some(at) = bad {
            let offset = (start + at as u64) & !7;
            let word = &data[offset as usize..offset as usize + 8];
            let value = u64::from_le_bytes(word.try_into().expect("8 bytes"));
            return Err(format!(
                "image word at offset {offset:#x} is {value:#018x}; expected {}",
                match owner {
                    Some(Content::Pattern(seed)) => format!("the pattern of seed {seed:#x}"),
                    _ => "zero (never written, or zeroed)".into(),
                }
            ));
        }
    }
    Ok(())
}

/// The first byte of `bytes` that is not zero. Whole pages are compared with a slice comparison
/// (memcmp), which keeps a 64 MiB image quick to check in an unoptimised test build.
fn first_nonzero(bytes: &[u8]) -> Option<usize> {
    const ZEROES: [u8; 4096] = [0; 4096];
    let mut at = 0;
    for chunk in bytes.chunks(ZEROES.len()) {
        if chunk != &ZEROES[..chunk.len()] {
            return chunk.iter().position(|&b| b != 0).map(|i| at + i);
        }
        at += chunk.len();
    }
    None
}

/// Prints one result line straight to the process's stderr (libtest captures the print macros
/// of passing tests; the per-configuration timings belong in the log).
fn report(args: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr().lock(), "{args}");
}

/// Checks one disk of a boot: its part of the transcript says PASS, it ran on the device the
/// harness put at its location, and its image holds what the transcript says was written.
fn check_disk(boot: &Boot, index: usize, disk: &Disk) -> Result<String, String> {
    let fail = |why: &str| explain(boot, Some(disk.name), why);
    let part = section(&boot.transcript, disk.name).map_err(|why| match boot.status {
        Some(_) => fail(&why),
        None => fail(&format!("{why}: {}", unfinished(boot))),
    })?;
    let at = location(index);
    if !part.text.lines().next().unwrap_or("").ends_with(&at) {
        return Err(fail(&format!("the disk was not tested at {at}")));
    }
    if !part.passed {
        return Err(fail("the application reported FAIL for this disk"));
    }
    // The driver says when it took packed virtqueues (FindAdapter's debug print): exactly on
    // the devices offering them.
    let packed = part.text.contains("vioblk: packed virtqueues");
    if packed != disk.device.contains("packed=on") {
        return Err(fail(&format!(
            "packed virtqueues {} but the device has `{}`",
            if packed { "taken" } else { "not taken" },
            disk.device
        )));
    }
    let writes = part
        .text
        .lines()
        .filter(|l| l.starts_with("@wrote"))
        .count();
    if writes == 0 && !disk.is_read_only() {
        return Err(fail("the transcript names no written ranges"));
    }
    let ranges = check_image(&boot.image(disk), part.text)
        .map_err(|why| fail(&format!("image check failed: {why}")))?;
    Ok(format!(
        "image verified from Linux ({ranges} ranges, {writes} writes)"
    ))
}

/// The boot every configuration shares, and each configuration's outcome.
struct Shared {
    boot: Result<Boot, String>,
    disks: Vec<Result<String, String>>,
}

/// Boots the configurations once (the first test to ask does it; the others wait for it) and
/// checks every disk; the run directory goes when everything passed.
fn shared(tools: &Tools) -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let app = application();
        let boot = boot(tools, &app, "configurations", &CONFIGURATIONS);
        let disks: Vec<_> = CONFIGURATIONS
            .iter()
            .enumerate()
            .map(|(index, disk)| match &boot {
                Ok(boot) => check_disk(boot, index, disk),
                Err(why) => Err(why.clone()),
            })
            .collect();
        if let Ok(boot) = &boot
            && verdict(boot).is_ok()
            && disks.iter().all(Result::is_ok)
        {
            let _ = fs::remove_dir_all(&boot.dir);
        }
        Shared { boot, disks }
    })
}

/// The test of one configuration: its disk in the shared boot.
fn configuration(name: &str) {
    let Some(tools) = tools_or_skip(&format!("qemu {name}")) else {
        return;
    };
    let index = CONFIGURATIONS
        .iter()
        .position(|d| d.name == name)
        .expect("a configuration of this name");
    match &shared(&tools).disks[index] {
        Ok(summary) => report(format_args!("PASS {name}: {summary}")),
        Err(why) => panic!("{why}"),
    }
}

#[test]
fn defaults() {
    configuration("defaults");
}

#[test]
fn native_4k() {
    configuration("4kn");
}

#[test]
fn indirect_descriptors_off() {
    configuration("indirect_desc-off");
}

#[test]
fn event_idx_off() {
    configuration("event_idx-off");
}

#[test]
fn four_queues() {
    configuration("num-queues-4");
}

#[test]
fn discard_and_write_zeroes() {
    configuration("discard-write-zeroes");
}

#[test]
fn read_only() {
    configuration("read-only");
}

#[test]
fn packed_rings() {
    configuration("packed");
}

#[test]
fn packed_rings_without_indirect_descriptors() {
    configuration("packed-indirect_desc-off");
}

/// The shared boot as a whole: QEMU must end with the pass code and the PASS line, which the
/// application gives only when every disk passed and nothing else went wrong.
#[test]
fn every_configuration_passes_in_one_boot() {
    let Some(tools) = tools_or_skip("qemu configurations") else {
        return;
    };
    let boot = match &shared(&tools).boot {
        Ok(boot) => boot,
        Err(why) => panic!("{why}"),
    };
    if let Err(why) = verdict(boot) {
        panic!("{}", explain(boot, None, &why));
    }
    report(format_args!(
        "PASS configurations: exit {EXIT_PASS}, {} disks in one boot",
        CONFIGURATIONS.len()
    ));
}

/// The harness can fail: the application expects a pattern other than the one it writes, so it
/// must report FAIL, and QEMU must exit with the fail code, which `verdict` rejects.
#[test]
fn corrupted_expectation_fails() {
    let Some(tools) = tools_or_skip("qemu corrupted expectation") else {
        return;
    };
    let app = application();
    let boot = boot(&tools, &app, "corrupted", std::slice::from_ref(&CORRUPTED))
        .unwrap_or_else(|why| panic!("{why}"));
    if boot.status != Some(EXIT_FAIL) {
        let instead = match verdict(&boot) {
            Ok(()) => "it passed".into(),
            Err(why) => why,
        };
        panic!(
            "{}",
            explain(
                &boot,
                Some(CORRUPTED.name),
                &format!("expected the application to fail with exit code {EXIT_FAIL}; {instead}")
            )
        );
    }
    let why = explain(
        &boot,
        Some(CORRUPTED.name),
        "expected FAIL because the data differs",
    );
    assert!(verdict(&boot).is_err(), "{why}");
    assert!(
        boot.transcript.contains("VIOBLK-UEFI RESULT: FAIL"),
        "{why}"
    );
    let part = section(&boot.transcript, CORRUPTED.name).unwrap_or_else(|e| panic!("{e}\n{why}"));
    assert!(!part.passed, "{why}");
    assert!(part.text.contains("data differs"), "{why}");
    report(format_args!(
        "PASS corrupted: the application reported FAIL and QEMU exited with {EXIT_FAIL}"
    ));
    let _ = fs::remove_dir_all(&boot.dir);
}

#[test]
fn transcript_layout_is_parsed_with_later_lines_winning() {
    let ranges =
        layout("x\n@wrote 4096 1024 0x10\nnoise @zero 1 1\n@zero 4096 512\n@unmapped 0 8\n");
    assert_eq!(ranges.len(), 3);
    assert!(matches!(ranges[0], (4096, 1024, Content::Pattern(0x10))));
    assert!(matches!(ranges[1], (4096, 512, Content::Zeroes)));
    assert!(matches!(ranges[2], (0, 8, Content::Unspecified)));
    assert_eq!(strip_escapes("a\u{1b}[2J\u{1b}[=3hb\r\n"), "ab\n");
}

#[test]
fn image_content_is_checked_word_by_word() {
    let mut data = vec![0u8; 64 * 1024];
    pattern::fill(7, 4096, &mut data[4096..8192]);
    data[20000] = 0xFF;
    let ranges = [
        (4096, 4096, Content::Pattern(7)),
        (6144, 1024, Content::Zeroes),
        (16384, 8192, Content::Unspecified),
    ];
    // The zeroed range wins over the pattern where they overlap.
    let err = check_content(&data, &ranges).unwrap_err();
    assert!(err.contains("offset 0x1800"), "{err}");
    data[6144..7168].fill(0);
    assert_eq!(check_content(&data, &ranges), Ok(()));
    data[8192] = 1;
    let err = check_content(&data, &ranges).unwrap_err();
    assert!(
        err.contains("offset 0x2000") && err.contains("zero"),
        "{err}"
    );
    data[8192] = 0;
    data[5000] ^= 1;
    let err = check_content(&data, &ranges).unwrap_err();
    assert!(
        err.contains("offset 0x1388") && err.contains("seed 0x7"),
        "{err}"
    );
    assert!(check_content(&data, &[(65536, 8, Content::Zeroes)]).is_err());
    assert!(check_content(&data, &[(4, 8, Content::Zeroes)]).is_err());
}

#[test]
fn sections_are_found_by_name_and_end() {
    let transcript = "x\nVIOBLK-UEFI DISK BEGIN a at 00:10.0\n@wrote 0 8 0x1\n\
        VIOBLK-UEFI DISK END a: PASS\nVIOBLK-UEFI DISK BEGIN ab at 00:11.0\n\
        VIOBLK-UEFI DISK END ab: FAIL (1 failed checks, 0 rule violations)\n\
        VIOBLK-UEFI DISK BEGIN c at 00:12.0\n@wrote 0 8 0x1\n";
    let a = section(transcript, "a").expect("a");
    assert!(a.passed);
    assert_eq!(layout(a.text).len(), 1);
    assert!(a.text.ends_with("END a: PASS"));
    let ab = section(transcript, "ab").expect("ab");
    assert!(!ab.passed);
    assert!(ab.text.starts_with("VIOBLK-UEFI DISK BEGIN ab at 00:11.0"));
    assert!(section(transcript, "c").is_err(), "no END line");
    assert!(section(transcript, "d").is_err(), "no BEGIN line");
}

#[test]
fn only_the_pass_code_with_the_pass_line_passes() {
    let boot = |status: Option<i32>, end: End, transcript: &str| Boot {
        name: "test",
        status,
        end,
        transcript: transcript.into(),
        stderr: String::new(),
        firmware: None,
        elapsed: Duration::ZERO,
        dir: PathBuf::new(),
    };
    let pass = "vioblk-uefi: x\nVIOBLK-UEFI RESULT: PASS\n";
    assert!(verdict(&boot(Some(EXIT_PASS), End::Exited, pass)).is_ok());
    assert!(verdict(&boot(Some(EXIT_PASS), End::Exited, "no verdict line\n")).is_err());
    assert!(verdict(&boot(Some(EXIT_FAIL), End::Exited, pass)).is_err());
    assert!(verdict(&boot(Some(0), End::Exited, pass)).is_err());
    assert!(verdict(&boot(Some(1), End::Exited, "")).is_err());
    assert!(verdict(&boot(None, End::Exited, pass)).is_err());
    // A boot stopped at its deadline fails, saying which step did not happen.
    let limit = End::Deadline(Duration::from_secs(9));
    let why = |transcript| verdict(&boot(None, limit, transcript)).unwrap_err();
    assert!(why("").contains("printed nothing"));
    assert!(why("BdsDxe: loading\n").contains("did not start the application"));
    assert!(why("vioblk-uefi: x\nREAD(10)\n").contains("did not finish within 9 s"));
    assert!(why(pass).contains("did not exit"));
}
