//! The driver's crash-dump path against QEMU's own virtio-blk-pci (issue 6).
//!
//! Each test builds the `vioblk-uefi` application once (a nested
//! `cargo build --release --target x86_64-unknown-uefi -p vioblk-uefi` with its own target
//! directory, so the outer cargo's lock is not in the way), boots it in QEMU (TCG, q35, OVMF)
//! with a fresh 64 MiB sparse disk image behind a `virtio-blk-pci` device of one configuration,
//! and passes only when QEMU exits with the application's pass code (isa-debug-exit 0x10 -> 33).
//! The expectations of the configuration reach the application as `vioblk.cfg` on the boot FAT
//! folder (see `src/expect.rs`). After QEMU exits the image file is read from Linux and every
//! byte is checked against the transcript's `@wrote`/`@zero`/`@unmapped` lines: the patterned
//! blocks must be where the driver said it wrote them, and everything else must still be zero.
//!
//! `corrupted_expectation_fails` proves the harness can fail: the application is told to expect
//! a pattern other than the one it writes, must report FAIL and exit with the fail code (35).
//!
//! Without qemu-system-x86_64, the OVMF firmware or the x86_64-unknown-uefi target the tests
//! print `SKIPPED: ...` and pass, except when the `CI` environment variable is set (CI installs
//! them, so a missing tool there is a failure).

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
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
/// How long one boot may take before QEMU is killed (a boot takes ~5 s under TCG; the machine
/// may be busy). `VIOBLK_QEMU_TIMEOUT` (seconds) overrides it.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// One device configuration and what the application must find.
struct Config {
    /// Name (also the temporary directory's).
    name: &'static str,
    /// Extra `-drive` options for the disk.
    drive: &'static str,
    /// Extra `-device virtio-blk-pci` properties.
    device: &'static str,
    /// Lines of `vioblk.cfg` besides name, seed and capacity.
    expect: &'static str,
    /// Seed of the written pattern.
    seed: u64,
    /// A different seed the application must expect instead (the failing case).
    expect_seed: Option<u64>,
}

impl Config {
    const fn new(
        name: &'static str,
        drive: &'static str,
        device: &'static str,
        expect: &'static str,
    ) -> Self {
        Config {
            name,
            drive,
            device,
            expect,
            seed: 0,
            expect_seed: None,
        }
    }
}

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

/// How one boot ended.
struct Boot {
    /// QEMU's exit status (None: killed after the timeout or by a signal).
    status: Option<i32>,
    /// The serial transcript without terminal escape sequences.
    transcript: String,
    /// QEMU's own stderr.
    stderr: String,
    /// Wall time of the boot.
    elapsed: Duration,
    /// The disk image.
    image: PathBuf,
    /// The run's directory (removed when the test passes).
    dir: PathBuf,
}

/// Boots the application once with `config`'s disk.
fn boot(tools: &Tools, app: &Path, config: &Config) -> Boot {
    static RUN: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "vioblk-uefi-{}-{}-{}",
        config.name,
        std::process::id(),
        RUN.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = fs::remove_dir_all(&dir);
    let esp = dir.join("esp");
    fs::create_dir_all(esp.join("EFI").join("BOOT")).expect("create the ESP folder");
    fs::copy(app, esp.join("EFI").join("BOOT").join("BOOTX64.EFI")).expect("copy the application");
    let mut cfg = format!(
        "name={}\nseed={:#x}\ncapacity={IMAGE_SIZE}\n",
        config.name, config.seed
    );
    if let Some(other) = config.expect_seed {
        cfg.push_str(&format!("expect_seed={other:#x}\n"));
    }
    cfg.push_str(config.expect);
    fs::write(esp.join("vioblk.cfg"), cfg).expect("write vioblk.cfg");
    let vars = dir.join("OVMF_VARS.fd");
    fs::copy(&tools.vars, &vars).expect("copy OVMF_VARS");
    let image = dir.join("disk.img");
    fs::File::create(&image)
        .and_then(|f| f.set_len(IMAGE_SIZE))
        .expect("create the disk image");
    let serial = dir.join("serial.log");

    let drive = format!(
        "if=none,id=d0,format=raw,file={}{}",
        image.display(),
        config.drive
    );
    let device = format!("virtio-blk-pci,drive=d0,disable-legacy=on{}", config.device);
    let mut command = Command::new(&tools.qemu);
    command
        .args([
            "-nodefaults",
            "-display",
            "none",
            "-no-reboot",
            "-machine",
            "q35",
            "-accel",
            "tcg",
        ])
        .args(["-m", "256", "-smp", "1"])
        .arg("-serial")
        .arg(format!("file:{}", serial.display()))
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
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
        .arg("-drive")
        .arg(format!(
            "if=none,id=esp,format=raw,file=fat:rw:{}",
            esp.display()
        ))
        .args(["-device", "ide-hd,drive=esp,bootindex=0"])
        .arg("-drive")
        .arg(drive)
        .arg("-device")
        .arg(device)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let timeout = std::env::var("VIOBLK_QEMU_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_TIMEOUT);
    let started = Instant::now();
    let mut child = command.spawn().expect("start qemu-system-x86_64");
    let mut stderr_pipe = child.stderr.take().expect("piped stderr");
    let stderr_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr_pipe.read_to_string(&mut text);
        text
    });
    let status = loop {
        match child.try_wait().expect("wait for qemu") {
            Some(status) => break status.code(),
            None if started.elapsed() > timeout => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    let elapsed = started.elapsed();
    let stderr = stderr_reader.join().unwrap_or_default();
    let raw = fs::read(&serial).unwrap_or_default();
    Boot {
        status,
        transcript: strip_escapes(&String::from_utf8_lossy(&raw)),
        stderr,
        elapsed,
        image,
        dir,
    }
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
        None => Err(format!(
            "QEMU killed after {:.0} s (timeout or signal)",
            boot.elapsed.as_secs_f64()
        )),
    }
}

/// The transcript from the application's first line on.
fn application_transcript(boot: &Boot) -> &str {
    let start = boot.transcript.find("vioblk-uefi:").unwrap_or(0);
    &boot.transcript[start..]
}

fn explain(config: &Config, boot: &Boot, why: &str) -> String {
    format!(
        "configuration `{}`: {why}\n--- transcript ({}) ---\n{}\n--- QEMU stderr ---\n{}\n(run directory kept: {})",
        config.name,
        boot.dir.join("serial.log").display(),
        application_transcript(boot),
        boot.stderr,
        boot.dir.display()
    )
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
/// zeroed ones zeroes, and every byte nobody wrote is still zero.
fn check_image(image: &Path, transcript: &str) -> Result<usize, String> {
    let data = fs::read(image).map_err(|e| format!("cannot read the image: {e}"))?;
    if data.len() as u64 != IMAGE_SIZE {
        return Err(format!(
            "image is {} bytes, expected {IMAGE_SIZE}",
            data.len()
        ));
    }
    let ranges = layout(transcript);
    // The content of each 8-byte word: the last range covering it wins.
    let words = data.len() / 8;
    let mut owner: Vec<Option<Content>> = vec![None; words];
    for &(offset, len, content) in &ranges {
        let (start, end) = (offset / 8, (offset + len).div_ceil(8));
        if offset % 8 != 0 || len % 8 != 0 || end as usize > words {
            return Err(format!("bad range in the transcript: {offset} {len}"));
        }
        for slot in &mut owner[start as usize..end as usize] {
            *slot = Some(content);
        }
    }
    for (i, chunk) in data.chunks_exact(8).enumerate() {
        let value = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        let offset = i as u64 * 8;
        let good = match owner[i] {
            Some(Content::Pattern(seed)) => value == pattern::word(seed, offset),
            Some(Content::Zeroes) | None => value == 0,
            Some(Content::Unspecified) => true,
        };
        if !good {
            return Err(format!(
                "image word at offset {offset:#x} is {value:#018x}; expected {}",
                match owner[i] {
                    Some(Content::Pattern(seed)) => format!("the pattern of seed {seed:#x}"),
                    _ => "zero (never written, or zeroed)".into(),
                }
            ));
        }
    }
    Ok(ranges.len())
}

/// Prints one result line straight to the process's stderr (libtest captures the print macros
/// of passing tests; the per-configuration timings belong in the log).
fn report(args: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr().lock(), "{args}");
}

/// Runs one configuration that must pass, then checks the image from Linux.
fn passes(config: Config) {
    let test = format!("qemu {}", config.name);
    let Some(tools) = tools_or_skip(&test) else {
        return;
    };
    let app = application();
    let boot = boot(&tools, &app, &config);
    if let Err(why) = verdict(&boot) {
        panic!("{}", explain(&config, &boot, &why));
    }
    let writes = boot
        .transcript
        .lines()
        .filter(|l| l.starts_with("@wrote"))
        .count();
    let read_only = config.expect.contains("read_only=1");
    if writes == 0 && !read_only {
        panic!(
            "{}",
            explain(&config, &boot, "the transcript names no written ranges")
        );
    }
    match check_image(&boot.image, &boot.transcript) {
        Ok(ranges) => {
            report(format_args!(
                "PASS {}: exit {EXIT_PASS} in {:.1} s; image verified from Linux ({ranges} ranges, {writes} writes)",
                config.name,
                boot.elapsed.as_secs_f64()
            ));
            let _ = fs::remove_dir_all(&boot.dir);
        }
        Err(why) => panic!(
            "{}",
            explain(&config, &boot, &format!("image check failed: {why}"))
        ),
    }
}

const FIVE_TWELVE: &str = "block_size=512\n";

#[test]
fn defaults() {
    passes(Config {
        seed: 0x1001,
        ..Config::new("defaults", "", "", FIVE_TWELVE)
    });
}

#[test]
fn native_4k() {
    passes(Config {
        seed: 0x4096,
        ..Config::new(
            "4kn",
            "",
            ",logical_block_size=4096,physical_block_size=4096",
            "block_size=4096\n",
        )
    });
}

#[test]
fn indirect_descriptors_off() {
    passes(Config {
        seed: 0x1D0F,
        ..Config::new("indirect_desc-off", "", ",indirect_desc=off", FIVE_TWELVE)
    });
}

#[test]
fn event_idx_off() {
    passes(Config {
        seed: 0xE1D0,
        ..Config::new("event_idx-off", "", ",event_idx=off", FIVE_TWELVE)
    });
}

#[test]
fn four_queues() {
    passes(Config {
        seed: 0x4444,
        ..Config::new("num-queues-4", "", ",num-queues=4", FIVE_TWELVE)
    });
}

#[test]
fn discard_and_write_zeroes() {
    passes(Config {
        seed: 0xD15C,
        ..Config::new(
            "discard-write-zeroes",
            ",discard=unmap",
            ",discard=on,write-zeroes=on",
            "block_size=512\nlbpme=1\nlbprz=1\nunmap=1\n",
        )
    });
}

#[test]
fn read_only() {
    passes(Config {
        seed: 0x0404,
        ..Config::new(
            "read-only",
            ",readonly=on",
            "",
            "block_size=512\nread_only=1\n",
        )
    });
}

/// The harness can fail: the application expects a pattern other than the one it writes, so it
/// must report FAIL, and QEMU must exit with the fail code, which `verdict` rejects.
#[test]
fn corrupted_expectation_fails() {
    let Some(tools) = tools_or_skip("qemu corrupted expectation") else {
        return;
    };
    let app = application();
    let config = Config {
        seed: 0xBAD,
        expect_seed: Some(0xBAD ^ 1),
        ..Config::new("corrupted", "", "", FIVE_TWELVE)
    };
    let boot = boot(&tools, &app, &config);
    let why = explain(&config, &boot, "expected the application to fail");
    assert_eq!(boot.status, Some(EXIT_FAIL), "{why}");
    assert!(verdict(&boot).is_err(), "{why}");
    assert!(
        boot.transcript.contains("VIOBLK-UEFI RESULT: FAIL"),
        "{why}"
    );
    assert!(boot.transcript.contains("data differs"), "{why}");
    report(format_args!(
        "PASS corrupted: the application reported FAIL and QEMU exited with {EXIT_FAIL} in {:.1} s",
        boot.elapsed.as_secs_f64()
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
fn only_the_pass_code_with_the_pass_line_passes() {
    let boot = |status: Option<i32>, transcript: &str| Boot {
        status,
        transcript: transcript.into(),
        stderr: String::new(),
        elapsed: Duration::ZERO,
        image: PathBuf::new(),
        dir: PathBuf::new(),
    };
    assert!(verdict(&boot(Some(EXIT_PASS), "VIOBLK-UEFI RESULT: PASS\n")).is_ok());
    assert!(verdict(&boot(Some(EXIT_PASS), "no verdict line\n")).is_err());
    assert!(verdict(&boot(Some(EXIT_FAIL), "VIOBLK-UEFI RESULT: PASS\n")).is_err());
    assert!(verdict(&boot(Some(0), "VIOBLK-UEFI RESULT: PASS\n")).is_err());
    assert!(verdict(&boot(Some(1), "")).is_err());
    assert!(verdict(&boot(None, "VIOBLK-UEFI RESULT: PASS\n")).is_err());
}
