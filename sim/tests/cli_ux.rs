//! `vioblk-sim` as a new user meets it (issue 18): CDBs that need no length option, errors that
//! are sentences with the right exit code, diskspd's spellings, and `compare`.
//!
//! The `cdb` cases run the real driver (the default target): the lengths matter only when a
//! driver checks them.
#![forbid(unsafe_code)]

use std::process::{Command, Output};

fn vioblk_sim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vioblk-sim"))
        .args(args)
        .env_remove("VIOBLK_QEMU_STORAGE_DAEMON")
        .output()
        .expect("the binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `args`; returns (exit code, stdout, stderr).
fn run(args: &[&str]) -> (i32, String, String) {
    let out = vioblk_sim(args);
    (
        out.status.code().unwrap_or(-1),
        text(&out.stdout),
        text(&out.stderr),
    )
}

#[test]
fn read_6_and_read_12_need_no_length_option() {
    for cdb in ["08 00 00 01 01 00", "a8 00 00 00 00 01 00 00 00 01 00 00"] {
        let args: Vec<&str> = ["cdb"].into_iter().chain(cdb.split(' ')).collect();
        let (code, out, err) = run(&args);
        assert_eq!(code, 0, "{cdb}: {out}{err}");
        assert!(out.contains("SCSI status: GOOD (0x00)"), "{out}");
        assert!(out.contains("data in:     512 of 512 bytes"), "{out}");
        assert!(!out.contains("note:"), "{out}");
    }
}

#[test]
fn every_supported_cdb_gets_its_data_phase() {
    // (CDB, what the answer shows): each succeeds with no length option.
    let cases = [
        ("12 00 00 00 24 00", "data in:     36 of 36 bytes"),
        ("12 01 80 00 ff 00", "of 255 bytes"),
        ("03 00 00 00 12 00", "of 18 bytes"),
        ("25 00 00 00 00 00 00 00 00 00", "data in:     8 of 8 bytes"),
        (
            "9e 10 00 00 00 00 00 00 00 00 00 00 00 20 00 00",
            "data in:     32 of 32 bytes",
        ),
        ("1a 00 3f 00 c0 00", "of 192 bytes"),
        ("5a 00 3f 00 00 00 00 00 c0 00", "of 192 bytes"),
        (
            "a0 00 00 00 00 00 00 00 00 10 00 00",
            "data in:     16 of 16 bytes",
        ),
        (
            "88 00 00 00 00 00 00 00 00 00 00 00 00 02 00 00",
            "data in:     1024 of 1024 bytes",
        ),
        ("2f 00 00 00 00 00 00 00 01 00", "data in:     0 of 0 bytes"),
        ("35 00 00 00 00 00 00 00 00 00", "data in:     0 of 0 bytes"),
    ];
    for (cdb, want) in cases {
        let args: Vec<&str> = ["cdb"].into_iter().chain(cdb.split(' ')).collect();
        let (code, out, err) = run(&args);
        assert_eq!(code, 0, "{cdb}: {out}{err}");
        assert!(out.contains(want), "{cdb}: want {want:?} in\n{out}");
    }
    // Data-out CDBs: the length of WRITE(6)/(12) and UNMAP's parameter list come from the CDB.
    let (code, out, err) = run(&[
        "cdb",
        "0a",
        "00",
        "00",
        "02",
        "01",
        "00",
        "--data-out",
        &"ab ".repeat(512),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!out.contains("note:"), "{out}");
    let (code, out, _) = run(&[
        "cdb", "aa", "0", "0", "0", "0", "3", "0", "0", "0", "1", "0", "0",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("note:        WRITE(12) sends 512 bytes out: sending 512 zero bytes"),
        "{out}"
    );
    assert!(
        out.contains("data out:    512 of 512 bytes transferred"),
        "{out}"
    );
    let (code, out, err) = run(&[
        "cdb",
        "42 00 00 00 00 00 00 00 18 00",
        "--data-out",
        "00 16 00 10 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 08 00 00 00 00",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!out.contains("note:"), "{out}");
    assert!(
        out.contains("data out:    24 of 24 bytes transferred"),
        "{out}"
    );
}

#[test]
fn a_length_that_disagrees_with_the_cdb_is_said() {
    // READ(10) of one block with a 100-byte buffer: sent as given, and the driver refuses it.
    let (code, out, _) = run(&[
        "cdb",
        "28 00 00 00 00 00 00 00 01 00",
        "--data-in-len",
        "100",
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.starts_with(
            "note:        READ(10) asks for 512 bytes in; --data-in-len gives a 100-byte buffer (sent as given)\n"
        ),
        "{out}"
    );
    // INQUIRY with data out.
    let (_, out, _) = run(&["cdb", "12 00 00 00 24 00", "--data-out", "00 01"]);
    assert!(
        out.contains("note:        INQUIRY transfers 36 bytes in, not out; --data-out's 2 bytes are sent as given"),
        "{out}"
    );
    // UNMAP whose parameter list length is not the data given.
    let (_, out, _) = run(&[
        "cdb",
        "42 00 00 00 00 00 00 00 18 00",
        "--data-out",
        "00 06",
    ]);
    assert!(
        out.contains("note:        UNMAP sends 24 bytes out; --data-out has 2 (sent as given)"),
        "{out}"
    );
    // TEST UNIT READY with a buffer.
    let (_, out, _) = run(&["cdb", "00 00 00 00 00 00", "--data-in-len", "8"]);
    assert!(
        out.contains(
            "note:        TEST UNIT READY transfers no data; --data-in-len gives a 8-byte buffer"
        ),
        "{out}"
    );
    // An operation code nobody knows: said, and sent with no data.
    let (code, out, _) = run(&["cdb", "c0 00 00 00 00 00"]);
    assert_eq!(code, 1);
    assert!(
        out.contains("note:        operation code c0h is not one vioblk-sim knows"),
        "{out}"
    );
    assert!(out.contains("INVALID COMMAND OPERATION CODE"), "{out}");
    // A transfer length past what is allocated from a CDB alone.
    let (_, out, _) = run(&["cdb", "88 00 00 00 00 00 00 00 00 00 ff ff ff ff 00 00"]);
    assert!(
        out.contains("more than vioblk-sim allocates from the CDB"),
        "{out}"
    );
    // Both directions at once is bad usage.
    let (code, _, err) = run(&[
        "cdb",
        "28 0 0 0 0 0 0 0 1 0",
        "--data-in-len",
        "512",
        "--data-out",
        "00",
    ]);
    assert_eq!(code, 2);
    assert_eq!(
        err,
        "error: --data-in-len and --data-out cannot be used together (an SRB moves data one way)\n"
    );
}

#[test]
fn bad_paths_are_sentences_with_exit_code_2() {
    let dir = std::env::temp_dir().join(format!("vioblk-ux-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let d = dir.display().to_string();
    let missing = format!("{d}/no/such/dir/disk.img");
    let cases: Vec<(Vec<&str>, String)> = vec![
        (
            vec!["--file", &d],
            format!("--file {d} is a directory: give a file inside it, e.g. --file {d}/disk.img"),
        ),
        (
            vec!["--file", "/dev/null"],
            "--file /dev/null is not a regular file (a device, pipe or socket): give a disk image \
             file (it is created if missing, and grown to -c)"
                .to_owned(),
        ),
        (
            vec!["--file", &missing],
            format!("--file {missing}: the directory {d}/no/such/dir does not exist (create it first)"),
        ),
        (
            vec!["--driver-image", "/nonexistent.sys"],
            "--driver-image /nonexistent.sys: no such file or directory (build one with `bash \
             .ci/windows-image`)"
                .to_owned(),
        ),
        (
            vec!["--driver-image", &d],
            format!("--driver-image {d} is not a file: give the path of a vioblk.sys"),
        ),
        (
            vec!["--vhost-user", "/etc/hostname"],
            "--vhost-user /etc/hostname is not a socket: give the socket a vhost-user-blk back end \
             listens on"
                .to_owned(),
        ),
        (
            vec!["--target", "ram", "--device", "qemu"],
            "the ram target has no device under a driver: --device and --vhost-user need the \
             driver target"
                .to_owned(),
        ),
    ];
    for (args, want) in cases {
        for sub in [
            &["run", "--ios", "1"][..],
            &["cdb", "00", "0", "0", "0", "0", "0"],
            &["info"],
        ] {
            let all: Vec<&str> = sub.iter().copied().chain(args.iter().copied()).collect();
            let (code, out, err) = run(&all);
            assert_eq!(code, 2, "{all:?}: {out}{err}");
            assert_eq!(err, format!("error: {want}\n"), "{all:?}");
            assert!(out.is_empty(), "{all:?}: {out}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_missing_qemu_storage_daemon_is_a_failure_that_says_what_to_install() {
    let out = Command::new(env!("CARGO_BIN_EXE_vioblk-sim"))
        .args(["--device", "qemu", "--ios", "1", "--no-progress"])
        .env("VIOBLK_QEMU_STORAGE_DAEMON", "")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "error: qemu-storage-daemon is not installed, and --device qemu runs it: install it \
         (Debian: apt-get install qemu-system-common) or name it in VIOBLK_QEMU_STORAGE_DAEMON\n"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_vioblk-sim"))
        .args(["--device", "qemu", "--ios", "1", "--no-progress"])
        .env("VIOBLK_QEMU_STORAGE_DAEMON", "/nonexistent/qsd")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.starts_with("error: cannot run qemu-storage-daemon at /nonexistent/qsd ("),
        "{err}"
    );
    assert!(!err.contains("Os {"), "a Rust debug value: {err}");
}

#[test]
fn diskspd_command_line_runs_and_prints_the_per_thread_table() {
    let dir = std::env::temp_dir().join(format!("vioblk-ux-diskspd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("test.dat");
    let file = file.to_str().expect("utf-8 path");
    // diskspd's habits: attached values, -L, -Sh, and the target file last (created, sized by -c).
    let (code, out, err) = run(&[
        "-b4K",
        "-o8",
        "-t4",
        "-r",
        "-w30",
        "-d0.3",
        "-L",
        "-Sh",
        "-c8M",
        "--no-progress",
        file,
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("4 threads x 8 outstanding, 4 KiB random, 30% writes, FUA"),
        "{out}"
    );
    assert!(
        out.contains("\nTotal IO (AvgLat and LatStdDev in ms)\nthread |"),
        "{out}"
    );
    for t in 0..4 {
        assert!(
            out.contains(&format!("\n     {t} | ")),
            "no row for thread {t}: {out}"
        );
    }
    assert!(out.contains(&format!("| {file} (8 MiB)\n")), "{out}");
    assert!(out.contains("\ntotal:  "), "{out}");
    assert_eq!(std::fs::metadata(file).map(|m| m.len()).ok(), Some(8 << 20));
    let (code, _, err) = run(&["-W5", "--ios", "1"]);
    assert_eq!(code, 2);
    assert_eq!(
        err,
        "error: -W5: diskspd's option for warm-up time has no vioblk-sim equivalent; leave it \
         out (see vioblk-sim --help)\n"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn compare_two_reports() {
    let dir = std::env::temp_dir().join(format!("vioblk-ux-compare-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let json = |name: &str, args: &[&str]| {
        let path = dir.join(name);
        let mut all = vec![
            "--target",
            "ram",
            "-c4M",
            "--ios",
            "2000",
            "--json",
            "--no-progress",
        ];
        all.extend_from_slice(args);
        let (code, out, err) = run(&all);
        assert_eq!(code, 0, "{err}");
        std::fs::write(&path, out).expect("write");
        path.to_str().expect("utf-8").to_owned()
    };
    let a = json("a.json", &["-t2"]);
    let b = json("b.json", &["-t4"]);
    let (code, out, err) = run(&["compare", &a, &b]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("result  "), "{out}");
    assert!(out.contains("\nIOPS  "), "{out}");
    assert!(out.contains("latency p99 (us)"), "{out}");
    assert!(
        out.contains("not the same work: threads 2 vs 4 (figures compare different jobs)\n"),
        "{out}"
    );
    // Bad inputs: sentences, 2 for usage, 1 for files that are not reports.
    let (code, _, err) = run(&["compare", &a]);
    assert_eq!(
        (code, err.as_str()),
        (
            2,
            "error: compare needs two JSON reports, e.g. vioblk-sim compare before.json after.json (got 1 argument)\n"
        )
    );
    let missing = dir.join("missing.json");
    let missing = missing.to_str().expect("utf-8");
    let (code, _, err) = run(&["compare", &a, missing]);
    assert_eq!(code, 1);
    assert_eq!(
        err,
        format!(
            "error: cannot read {missing}: no such file (give a report written by vioblk-sim --json)\n"
        )
    );
    let text = dir.join("text.json");
    std::fs::write(&text, "result: PASS").expect("write");
    let (code, _, err) = run(&["compare", text.to_str().expect("utf-8"), &a]);
    assert_eq!(code, 1);
    assert!(err.contains("is not JSON ("), "{err}");
    let other = dir.join("other.json");
    std::fs::write(&other, "{\"a\": 1}").expect("write");
    let (code, _, err) = run(&["compare", &a, other.to_str().expect("utf-8")]);
    assert_eq!(code, 1);
    assert!(err.contains("is JSON but not a vioblk-sim report"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sizes_that_cannot_work_are_sentences() {
    let cases: [(&[&str], i32, &str); 4] = [
        (
            &["-c", "1T", "--ios", "1"],
            2,
            "error: -c 1 TiB with verification tracks 2147483648 blocks, 8192 MiB of memory, \
             more than the 1024 MiB vioblk-sim allows itself: add --no-verify, or make -c at \
             most 128 GiB\n",
        ),
        // More than the 128 TiB of a process's address space, whatever the overcommit policy.
        (
            &["--target", "ram", "-c", "200T", "--ios", "1", "--no-verify"],
            1,
            "error: the ram target keeps the disk in memory, and -c 200 TiB is more than this \
             process can allocate: give a smaller -c, or use the driver target\n",
        ),
        (
            &["-b", "16M", "-c", "64M", "--ios", "1"],
            2,
            "error: the disk holds 4 I/Os of 16777216 bytes, fewer than -t × -o = 32 in flight: \
             make -c larger, or -b, -t or -o smaller\n",
        ),
        // Known only once the disk reported its limits (the RAM disk's MAXIMUM UNMAP LBA COUNT
        // is 4M blocks): still bad usage, said before any I/O.
        (
            &[
                "--target",
                "ram",
                "-c4G",
                "-b3G",
                "-t1",
                "-o1",
                "--ios",
                "1",
                "--unmap-percent",
                "50",
            ],
            2,
            "error: -b (3221225472) exceeds the disk's maximum UNMAP LBA count: use a smaller -b, \
             or no --unmap-percent\n",
        ),
    ];
    for (args, code, want) in cases {
        let mut all = args.to_vec();
        all.push("--no-progress");
        let (got, out, err) = run(&all);
        assert_eq!((got, err.as_str()), (code, want), "{args:?}: {out}");
    }
}
