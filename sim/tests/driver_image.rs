//! The shipped image (vioblk.sys) under the simulator: the default job in both interrupt modes,
//! `cdb` and `info` naming it, and the loud failures (an unknown register access form, a register
//! access without the marker, an import off the list) on copies of it patched here.
//!
//! The image is the one `VIOBLK_DRIVER_IMAGE` names: `.ci/run`, after `.ci/windows-image`, sets
//! it to `target/package/vioblk.sys` and runs this file with the driver_io, driver_scsi and
//! driver_trust suites. Without the variable (the workspace test step, which runs before the
//! image exists) these tests print SKIPPED and do nothing.

use std::path::PathBuf;
use std::process::{Command, Output};

use storport_sim::image::{IMAGE_FAULT_EXIT_CODE, MARKER};

fn image() -> Option<PathBuf> {
    match std::env::var_os("VIOBLK_DRIVER_IMAGE").filter(|v| !v.is_empty()) {
        Some(path) => Some(PathBuf::from(path)),
        None => {
            println!("SKIPPED: VIOBLK_DRIVER_IMAGE is not set (build it with .ci/windows-image)");
            None
        }
    }
}

fn vioblk_sim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vioblk-sim"))
        .args(args)
        .output()
        .expect("the binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A copy of the image with `patch` applied, in a file of its own.
fn patched(name: &str, patch: impl FnOnce(&mut Vec<u8>) -> usize) -> (PathBuf, usize) {
    let mut bytes = std::fs::read(image().expect("checked by the caller")).unwrap();
    let sites = patch(&mut bytes);
    let path = std::env::temp_dir().join(format!(
        "vioblk-image-test-{}-{name}.sys",
        std::process::id()
    ));
    std::fs::write(&path, bytes).unwrap();
    (path, sites)
}

/// Each 32-bit register read (`mov r32, dword ptr [r64]`, opcode 8B, with or without a REX
/// prefix) right after a marker: (file offset of the marker, of the opcode byte).
fn read32_sites(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut sites = Vec::new();
    for at in 0..bytes.len().saturating_sub(MARKER.len() + 2) {
        if bytes[at..at + MARKER.len()] != MARKER {
            continue;
        }
        let next = at + MARKER.len();
        let opcode = if (0x40..=0x4f).contains(&bytes[next]) && bytes[next] & 0x08 == 0 {
            next + 1
        } else {
            next
        };
        if bytes[opcode] == 0x8b {
            sites.push((at, opcode));
        }
    }
    sites
}

fn run_job(interrupts: &str) {
    let Some(image) = image() else { return };
    let image = image.to_str().unwrap();
    let out = vioblk_sim(&[
        "--driver-image",
        image,
        "--interrupts",
        interrupts,
        "--ios",
        "20000",
        "--no-progress",
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    assert!(stdout.contains(&format!("image:   {image}, ")), "{stdout}");
    assert!(
        stdout.contains(&format!("interrupts {interrupts}")),
        "{stdout}"
    );
    assert!(stdout.contains(" 0 mismatches"), "{stdout}");
    assert!(stdout.contains("storport: no violations"), "{stdout}");
    assert!(stdout.contains("result:  PASS"), "{stdout}");
    assert!(
        stdout.contains("HwStorStartIo (image+") && stdout.contains("HwStorBuildIo (image+"),
        "{stdout}"
    );
    let mmio = stdout
        .lines()
        .find_map(|l| l.strip_prefix("mmio:"))
        .expect("an mmio line");
    let count: u64 = mmio.split_whitespace().next().unwrap().parse().unwrap();
    assert!(count > 0, "{mmio}");
}

#[test]
fn every_register_access_in_the_image_is_a_fixed_form_after_the_marker() {
    let Some(image) = image() else { return };
    let bytes = std::fs::read(&image).unwrap();
    let allowlist = pecheck::Allowlist::load(&pecheck::default_allowlist_path()).unwrap();
    let report = pecheck::check(&bytes, &allowlist);
    // pecheck disassembles every code section (iced-x86): each marker is followed by one of the
    // eight mov/movzx [reg] forms, and every occurrence of the marker's bytes was decoded.
    assert!(report.passed(), "{:#?}", report.problems);
    let accesses = &report.register_accesses;
    assert!(
        accesses.total() > 0,
        "no register accesses: {}",
        accesses.summary()
    );
    // Reads and writes of the widths virtio-pci uses are all there.
    for (form, n) in pecheck::registers::Form::ALL.iter().zip(accesses.counts) {
        if !matches!(
            form,
            pecheck::registers::Form::Read64 | pecheck::registers::Form::Write64
        ) {
            assert!(n > 0, "no {} site: {}", form.name(), accesses.summary());
        }
    }
}

#[test]
fn the_default_job_passes_on_the_image_with_msix() {
    run_job("msix");
}

#[test]
fn the_default_job_passes_on_the_image_with_intx() {
    run_job("intx");
}

#[test]
fn json_reports_name_the_image() {
    let Some(image) = image() else { return };
    let out = vioblk_sim(&[
        "--driver-image",
        image.to_str().unwrap(),
        "--ios",
        "2000",
        "--json",
        "--no-progress",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let reported = &json["driver_image"];
    let size = std::fs::metadata(&image).unwrap().len();
    assert_eq!(reported["path"], image.to_str().unwrap());
    assert_eq!(reported["size"], size);
    assert!(reported["checksum"].as_str().unwrap().starts_with("0x"));
    assert_eq!(reported["kernel_stack_bytes"], 24576);
    let deepest = reported["stack_use"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["bytes"].as_u64().unwrap())
        .max()
        .unwrap();
    assert!(deepest > 0 && deepest <= 24576, "{reported}");
}

#[test]
fn cdb_and_info_name_the_image() {
    let Some(image) = image() else { return };
    let image = image.to_str().unwrap();
    let out = vioblk_sim(&[
        "cdb",
        "12",
        "00",
        "00",
        "00",
        "24",
        "00",
        "--driver-image",
        image,
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.starts_with(&format!("image:   {image}, ")),
        "{stdout}"
    );
    assert!(stdout.contains("VIOBLK"), "{stdout}");

    let out = vioblk_sim(&["info", "--driver-image", image]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("DriverImage"), "{stdout}");
    assert!(stdout.contains(image), "{stdout}");
}

#[test]
fn an_unknown_register_access_form_is_a_loud_failure() {
    if image().is_none() {
        return;
    }
    // Every 32-bit register read becomes `cmp r32, dword ptr [r64]` (opcode 3B, same operands):
    // the form LLVM produced from a volatile load before register access went through asm!.
    let (path, sites) = patched("cmp", |bytes| {
        let sites = read32_sites(bytes);
        for &(_, opcode) in &sites {
            bytes[opcode] = 0x3b;
        }
        sites.len()
    });
    assert!(sites > 0, "the image has 32-bit register reads");
    let out = vioblk_sim(&["--driver-image", path.to_str().unwrap(), "--ios", "10"]);
    let stderr = text(&out.stderr);
    std::fs::remove_file(&path).unwrap();
    assert_eq!(out.status.code(), Some(IMAGE_FAULT_EXIT_CODE), "{stderr}");
    assert!(
        stderr.contains("unknown register access: `cmp ")
            && stderr.contains("(image+0x")
            && stderr.contains("not one of the fixed mov/movzx [reg] forms")
            && stderr.contains("HwStorFindAdapter"),
        "{stderr}"
    );
}

#[test]
fn a_register_access_without_the_marker_is_a_loud_failure() {
    if image().is_none() {
        return;
    }
    // The marker before every 32-bit read becomes an ordinary 7-byte NOP.
    let (path, sites) = patched("nomarker", |bytes| {
        let sites = read32_sites(bytes);
        for &(marker, _) in &sites {
            bytes[marker + 3..marker + 7].fill(0);
        }
        sites.len()
    });
    assert!(sites > 0);
    let out = vioblk_sim(&["--driver-image", path.to_str().unwrap(), "--ios", "10"]);
    let stderr = text(&out.stderr);
    std::fs::remove_file(&path).unwrap();
    assert_eq!(out.status.code(), Some(IMAGE_FAULT_EXIT_CODE), "{stderr}");
    assert!(
        stderr.contains("unknown register access: `mov ") && stderr.contains("no marker before it"),
        "{stderr}"
    );
}

#[test]
fn an_image_with_an_import_off_the_list_does_not_load() {
    if image().is_none() {
        return;
    }
    let (path, sites) = patched("import", |bytes| {
        let name = b"StorPortDeviceBusy\0";
        let at = bytes
            .windows(name.len())
            .position(|w| w == name)
            .expect("the image imports StorPortDeviceBusy");
        bytes[at + name.len() - 2] = b'z';
        1
    });
    assert_eq!(sites, 1);
    let out = vioblk_sim(&["--driver-image", path.to_str().unwrap(), "--ios", "10"]);
    let stderr = text(&out.stderr);
    std::fs::remove_file(&path).unwrap();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the image imports storport.sys!StorPortDeviceBusz"),
        "{stderr}"
    );
}

/// The image reads the registry through storport-sim's import thunks: a tunable out of range is
/// clamped and in the report's event log, and one in range takes effect (two queues of four).
#[test]
fn the_image_reads_its_registry_tunables() {
    let Some(image) = image() else { return };
    let image = image.to_str().unwrap();
    let out = vioblk_sim(&[
        "--driver-image",
        image,
        "--queues",
        "4",
        "--param",
        "NumberOfQueues=2",
        "--param",
        "ResetTimeoutMs=1",
        "--ios",
        "2000",
        "--no-progress",
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    assert!(
        stdout.contains("0x00130009 id 6 (0:0:0): tunable clamped"),
        "{stdout}"
    );
    assert!(stdout.contains("event log: 1 entry"), "{stdout}");
    // Only queues 0 and 1 carried I/O.
    let idle = |q: &str| {
        stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(q))
            .is_some_and(|l| l.split_whitespace().nth(1) == Some("0"))
    };
    assert!(idle("2") && idle("3") && !idle("0"), "{stdout}");
    assert!(stdout.contains("result:  PASS"), "{stdout}");
}

/// The `deterministic:` line of a run's text report (seed, digest and counts).
fn deterministic_line(stdout: &str) -> String {
    stdout
        .lines()
        .find(|l| l.starts_with("deterministic:"))
        .unwrap_or_else(|| panic!("no deterministic line in:\n{stdout}"))
        .to_owned()
}

/// A deterministic job on the image: two threads, a bad used id on the first request (a broken
/// ring, a device reset, the requests retried), INTx; returns stdout after checking it passed.
fn deterministic_image_run(image: &str, seed: &str) -> String {
    let out = vioblk_sim(&[
        "run",
        "--deterministic",
        "--seed",
        seed,
        "--ios",
        "64",
        "-t",
        "2",
        "-o",
        "8",
        "--fault",
        "bad-id",
        "--interrupts",
        "intx",
        "--driver-image",
        image,
        "--no-progress",
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("result:  PASS"), "{stdout}");
    // The fault really broke the ring and the image's driver recovered by a reset.
    assert!(
        stdout.contains("1 completed by the driver"),
        "no reset completed:\n{stdout}"
    );
    assert!(stdout.contains("reset completed"), "{stdout}");
    stdout
}

#[test]
fn a_deterministic_run_on_the_image_replays_with_the_same_digest() {
    let Some(image) = image() else { return };
    let image = image.to_str().unwrap();
    let first = deterministic_line(&deterministic_image_run(image, "9"));
    let again = deterministic_line(&deterministic_image_run(image, "9"));
    assert_eq!(first, again, "the same seed gave two transcripts");
    assert!(
        first.starts_with("deterministic: seed 9, digest "),
        "{first}"
    );
    // Other seeds are other schedules of the image's register accesses and callbacks.
    let digest = |line: &str| line.split_whitespace().nth(4).map(str::to_owned);
    let mut digests = std::collections::BTreeSet::new();
    digests.insert(digest(&first));
    for seed in ["10", "11", "12"] {
        digests.insert(digest(&deterministic_line(&deterministic_image_run(
            image, seed,
        ))));
    }
    assert_eq!(digests.len(), 4, "{digests:?}");
}

#[test]
fn explore_on_the_image_runs_every_seed_under_chaos() {
    let Some(image) = image() else { return };
    let out = vioblk_sim(&[
        "explore",
        "--seeds",
        "1..40",
        "--ios",
        "8",
        "-o",
        "4",
        "--fault",
        "chaos,seed=2,every=1",
        "--driver-image",
        image.to_str().unwrap(),
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("explored seeds 1..40: 40 schedule(s) passed, 40 distinct digest(s)"),
        "{stdout}"
    );
}
