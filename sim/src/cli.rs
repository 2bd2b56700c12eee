//! The `vioblk-sim` command: parsing, the backends it runs on, and the three subcommands.
//!
//! - `vioblk-sim [run] [flags]`: start the disk as disk.sys would ([`crate::class::start_disk`]),
//!   run a diskspd-like job on it ([`crate::workload`]) and print the [`crate::report`].
//! - `vioblk-sim cdb <hex>... [--data-out <hex>] [--data-in-len N]`: send one CDB, as sg_raw.
//! - `vioblk-sim info`: what the driver registered with Storport.
//!
//! The disk comes from a [`Backend`] chosen by `--target`: [`run_cli`] takes the list, and the
//! first is the default. `main.rs` passes the list; the storport-sim backend running the real
//! driver goes there.
//!
//! Exit codes: 0 success; 1 the job failed (a failed request, a data mismatch, a Storport
//! violation), the disk did not start, or a CDB did not complete with GOOD; 2 bad usage (an
//! option, a value, a path that cannot be used, an option the target cannot honour).

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use crate::class::start_disk;
pub use crate::disk::{Backend, DeviceKind, DiskOptions, InterruptMode, OpenDisk, RamBackend};
use crate::report::cdb_result;
use crate::stats::{Report, Setup};
use crate::target::ScsiRequest;
use crate::workload::{self, Mix, Pattern, Stop, WorkloadOptions};

/// A usage error: printed as `error: <message>`, exit code 2.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn usage<T>(message: impl Into<String>) -> Result<T, UsageError> {
    Err(UsageError(message.into()))
}

/// A parsed command line.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// Run a job.
    Run(RunArgs),
    /// Run a job deterministically under each seed of a range.
    Explore(ExploreArgs),
    /// Run rounds of a job with random faults until a total is reached.
    Soak(SoakArgs),
    /// Send one CDB.
    Cdb(CdbArgs),
    /// Show the driver's registration.
    Info(DiskArgs),
    /// Compare two JSON reports (their paths).
    Compare(String, String),
    /// Print the help.
    Help,
    /// Print the version.
    Version,
}

/// The flags every subcommand takes: which disk.
#[derive(Clone, Debug, PartialEq)]
pub struct DiskArgs {
    /// The backend's name (`None`: the first).
    pub target: Option<String>,
    /// The disk.
    pub disk: DiskOptions,
}

/// `vioblk-sim run`.
#[derive(Clone, Debug, PartialEq)]
pub struct RunArgs {
    /// Which disk.
    pub disk: DiskArgs,
    /// The job.
    pub job: WorkloadOptions,
    /// Print the JSON report instead of the text one.
    pub json: bool,
    /// Faults to inject (`--fault`), in order.
    pub faults: Vec<crate::faults::FaultSpec>,
    /// Where to write the HTML report (`--html`).
    pub html: Option<PathBuf>,
    /// `--deterministic`: one seeded scheduler (seed: the job's `--seed`) over virtual time.
    pub deterministic: bool,
}

/// `vioblk-sim soak`.
#[derive(Clone, Debug, PartialEq)]
pub struct SoakArgs {
    /// The job of every round (its `-d`/`--ios` is the round's length; without `--fault`, each
    /// round gets `chaos,seed=ROUND,every=MS`, MS from `--chaos-every`, 5 by default).
    pub run: RunArgs,
    /// When to stop: after this many I/Os in all, or this much time.
    pub total: Stop,
    /// Turn the interrupt mode each round (no `--interrupts` given).
    pub rotate_interrupts: bool,
    /// Milliseconds between chaos faults in the rounds' own chaos (`--chaos-every`, default 5).
    pub chaos_every_ms: u64,
}

/// `vioblk-sim explore`.
#[derive(Clone, Debug, PartialEq)]
pub struct ExploreArgs {
    /// The job (and disk and faults) each seed runs, deterministically.
    pub run: RunArgs,
    /// The first seed.
    pub first: u64,
    /// The last seed (inclusive).
    pub last: u64,
    /// The options as given (without `explore` and `--seeds`), for the replay command.
    pub options: Vec<String>,
}

/// `vioblk-sim cdb`.
#[derive(Clone, Debug, PartialEq)]
pub struct CdbArgs {
    /// Which disk.
    pub disk: DiskArgs,
    /// The CDB.
    pub cdb: Vec<u8>,
    /// The data-out bytes.
    pub data_out: Vec<u8>,
    /// The data-in buffer size (`None`: guessed from the CDB).
    pub data_in_len: Option<u32>,
}

/// The help text.
pub const HELP: &str = "\
vioblk-sim: run the vioblk Storport miniport on a simulated virtio-blk disk

USAGE:
    vioblk-sim [run] [OPTIONS]           start the disk as disk.sys would, run a job, report
    vioblk-sim cdb <HEX>... [OPTIONS]    send one CDB and show the answer (like sg_raw)
    vioblk-sim info [OPTIONS]            show what the driver registered with Storport
    vioblk-sim compare A.json B.json     two --json reports side by side, and what changed
    vioblk-sim explore --seeds A..B [RUN OPTIONS]
                                         run the job deterministically under each seed; stop
                                         at the first failure and print the command replaying it
    vioblk-sim soak --total-ios N | --hours H [--chaos-every MS] [RUN OPTIONS]
                                         rounds of the job (-d/--ios each, default 10 s) with
                                         chaos faults from the round's seed (one every MS
                                         milliseconds, 5 by default), interrupt mode turning
                                         msix/intx/msi, until the total
    vioblk-sim help | --help | -h        this text
    vioblk-sim --version | -V            the version

With no options, `run` does 2 threads x 16 outstanding 4K random I/Os, 30% writes, for 3 s
on a 64 MiB disk, verifying every read.

JOB OPTIONS (run):
    -t, --threads N          threads issuing I/O [2]
    -o, --outstanding N      I/Os in flight per thread (queue depth) [16]
    -b, --io-size SIZE       bytes per I/O, a multiple of the logical block size: 4K, 64K, 1M [4K]
    -r, --random             random offsets, aligned to the I/O size [default]
    -s, --sequential         sequential offsets; each thread starts at its share of the disk
    -w, --write-percent P    percentage of writes, 0 to 100 [30]
        --unmap-percent P    percentage of UNMAPs, taken from the reads [0]
        --flush-every N      a SYNCHRONIZE CACHE after every N writes of a thread [0: never]
        --fua                writes with FUA
    -d, --duration SECS      how long to run; fractions allowed, e.g. 0.5 [3]
        --ios N              stop after N I/Os instead (deterministic; not with -d)
        --seed N             seed of the offsets and the read/write mix [24301]
        --no-verify          do not stamp blocks or check reads
        --json               print the report as JSON (schema vioblk-sim/report/v1)
        --fault SPEC         inject a device fault into the running job (repeatable; driver
                             target): MODE[,queue=Q][,at=N|seed=S][,after=MS][,ms=N][,count=N]
                             [,sectors=N][,seed=S][,every=MS]. MODE: bad-id, duplicate-id,
                             len-too-long, len-zero, idx-jump, bad-status, lost, needs-reset,
                             slow, reset-ignored, reset-slow, removal, capacity, chaos. The job passes when
                             nothing hangs, no data is wrong, Storport saw no violation, and the
                             disk serves I/O afterwards (after removal: fails it with NO_DEVICE)
        --no-progress        no progress bar (it is only drawn when stderr is a terminal)
        --html FILE          also write the report as a self-contained HTML page with charts

DISKSPD SPELLINGS (run): -b4K -o32 -t4 -r -w30 -d30 -c1G work as in diskspd. Also:
    -L                       latency statistics: always on (accepted and ignored)
    -S, -Su                  no software cache: there is none (accepted)
    -Sh, -Sw                 write-through: writes with FUA (as --fua)
    -r<ALIGN>                random, aligned to ALIGN, which must be the I/O size
    PATH                     a last argument with a / or a . is the file (as --file PATH)
    -W, -C, -D, -Z, ...      diskspd options with no equivalent get a sentence saying so
        --deterministic      one seeded scheduler runs every simulated thread over virtual
                             time (seed: --seed): the same seed gives the same run and the
                             report's digest; model device on RAM only; default --ios 256

DISK OPTIONS (all commands):
        --target NAME        where the disk comes from: TARGETS [TARGET0]
    -c, --capacity SIZE      disk size: 64M, 1G, ... [64M]
        --block-size N       logical block size, 512 or 4096 [512]
        --file PATH          back the disk with a file instead of RAM
        --driver-image PATH  run this vioblk.sys (PE loader) instead of the linked driver
        --param NAME=VALUE   a REG_DWORD under the driver's Parameters\\Device key (repeatable):
                             NumberOfQueues, QueueDepth, MaxTransferKB, PackedRing, MsiX,
                             ResetTimeoutMs (inf/vioblk.inx documents them and their defaults)
        --trace              an ETW session listens: the driver publishes per-I/O events
        --windows-rules-only  check Windows' rules only (the project's own are off; images may
                             use plain mov/movzx register accesses): for viostor.sys
        --queues N           request queues, 1 to 64 [2]
        --interrupts MODE    msix (one message per queue), msi (one message) or intx [msix]
        --device DEVICE      under the driver: model (this project's) or qemu (a
                             qemu-storage-daemon started for the run, over a raw image in
                             tmpfs sized by -c, or --file) [model]
        --vhost-user SOCKET  under the driver: the vhost-user-blk back end at SOCKET (any
                             QEMU block driver: qcow2, NBD, iSCSI, ...)

CDB OPTIONS (cdb):
    <HEX>...                 the CDB, e.g. `12 00 00 00 24 00` or 120000002400
        --data-out HEX       bytes to send (makes the SRB data-out)
        --data-in-len N      data-in buffer size [from the CDB's allocation or transfer length]
    The data length comes from the CDB (READ/WRITE 6/10/12/16, VERIFY, WRITE SAME, MODE
    SENSE/SELECT, INQUIRY, REQUEST SENSE, REPORT LUNS, READ CAPACITY, UNMAP); a given length
    that disagrees is sent as given, with a note. A data-out CDB without --data-out sends zeroes.

SIZE takes K, M, G, T (powers of 1024), with an optional iB or B: 4K, 4KiB, 1M, 4096.
Short options take their value attached or separate: -t4 or -t 4; long ones --x=v or --x v.
Exit status: 0 passed; 1 failed (I/O errors, data mismatches, Storport violations, a CDB not
GOOD, a disk that did not start, a missing qemu-storage-daemon); 2 bad usage (an option, a value,
or a --file, --driver-image or --vhost-user path that cannot be used).
";

/// Parses a size: digits with an optional K, M, G or T suffix (binary), optionally iB or B.
fn parse_size(flag: &str, text: &str) -> Result<u64, UsageError> {
    let bad = || {
        usage(format!(
            "{flag} must be a size such as 4K, 64M or 1G, got {text}"
        ))
    };
    let t = text.trim();
    let upper = t.to_ascii_uppercase();
    let body = upper
        .strip_suffix("IB")
        .or_else(|| upper.strip_suffix('B'))
        .unwrap_or(&upper);
    let (digits, shift) = match body.chars().last() {
        Some('K') => (&body[..body.len() - 1], 10),
        Some('M') => (&body[..body.len() - 1], 20),
        Some('G') => (&body[..body.len() - 1], 30),
        Some('T') => (&body[..body.len() - 1], 40),
        _ => (body, 0),
    };
    let Ok(n) = digits.parse::<u64>() else {
        return bad();
    };
    n.checked_mul(1u64 << shift).map_or_else(bad, Ok)
}

fn parse_number<T: std::str::FromStr>(flag: &str, text: &str) -> Result<T, UsageError> {
    let t = text.trim();
    let parsed = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16)
            .ok()
            .and_then(|v| v.to_string().parse().ok()),
        None => t.parse().ok(),
    };
    parsed.map_or_else(
        || usage(format!("{flag} must be a whole number, got {text}")),
        Ok,
    )
}

/// Parses `NAME=VALUE`: a registry value name and a 32-bit number (decimal or 0x hex).
fn parse_param(text: &str) -> Result<(String, u32), UsageError> {
    let bad = || {
        usage(format!(
            "--param must be NAME=VALUE with VALUE a number from 0 to 4294967295, got '{text}'"
        ))
    };
    let Some((name, value)) = text.split_once('=') else {
        return bad();
    };
    let name = name.trim();
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return bad();
    }
    let value = value.trim();
    let parsed = match value
        .strip_prefix("0x")
        .or_else(|| value.strip_prefix("0X"))
    {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => value.parse::<u32>().ok(),
    };
    match parsed {
        Some(v) => Ok((name.to_owned(), v)),
        None => bad(),
    }
}

/// Parses hex bytes: pairs of digits, with spaces, commas, colons or `0x` between bytes.
fn parse_hex(what: &str, text: &str) -> Result<Vec<u8>, UsageError> {
    let mut digits = String::new();
    for token in text
        .split([' ', ',', ':', '\t', '\n'])
        .filter(|t| !t.is_empty())
    {
        let token = token
            .strip_prefix("0x")
            .or_else(|| token.strip_prefix("0X"))
            .unwrap_or(token);
        // A lone digit is one byte ("0 1a" is 00 1a), as sg_raw reads it.
        if token.len() == 1 {
            digits.push('0');
        }
        digits.push_str(token);
    }
    if !digits.len().is_multiple_of(2) || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return usage(format!(
            "{what} must be hex bytes such as '12 00 00 00 24 00', got '{text}'"
        ));
    }
    Ok((0..digits.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).unwrap_or(0))
        .collect())
}

/// Splits the arguments into (flag, inline value) pairs and positionals.
struct Args<'a> {
    items: std::iter::Peekable<std::slice::Iter<'a, String>>,
}

/// Flags that take no value.
const SWITCHES: &[&str] = &[
    "-r",
    "--random",
    "-s",
    "--sequential",
    "--fua",
    "--no-verify",
    "--json",
    "--no-progress",
    "--deterministic",
    "--trace",
    "-h",
    "--help",
    "-V",
    "--version",
];

/// Short flags whose value, optional, can only be attached (diskspd's `-r4K`, `-Sh`).
const ATTACHED_ONLY: &[&str] = &["-r", "-s", "-S"];

/// diskspd options with no equivalent here, and what they do, for a sentence instead of
/// "unknown option".
const DISKSPD_ONLY: &[(&str, &str)] = &[
    ("-W", "warm-up time"),
    ("-C", "cool-down time"),
    ("-D", "IOPS statistics per interval"),
    ("-R", "the output format"),
    ("-Z", "write buffer contents"),
    ("-F", "total threads"),
    ("-n", "disabling NUMA affinity"),
    ("-a", "CPU affinity"),
    ("-g", "throughput limit"),
    ("-x", "completion routines"),
    ("-B", "the base offset"),
    ("-f", "the maximum offset"),
    ("-T", "the stride between threads"),
    ("-l", "large pages"),
    ("-P", "progress dots"),
    ("-v", "verbose output"),
    ("-z", "the random seed (here: --seed)"),
];

/// Short flags that take a value, which may be attached (`-t4`).
const SHORT_VALUED: &[&str] = &["-t", "-o", "-b", "-w", "-d", "-c"];

enum Arg<'a> {
    Flag(String, Option<&'a str>),
    Positional(&'a str),
}

impl<'a> Args<'a> {
    fn next(&mut self) -> Option<Arg<'a>> {
        let a = self.items.next()?.as_str();
        if let Some(long) = a.strip_prefix("--") {
            if long.is_empty() {
                return Some(Arg::Positional(a));
            }
            return Some(match long.split_once('=') {
                Some((name, value)) => Arg::Flag(format!("--{name}"), Some(value)),
                None => Arg::Flag(a.to_owned(), None),
            });
        }
        if a.len() > 2 && a.starts_with('-') && a.is_char_boundary(2) {
            let (flag, rest) = a.split_at(2);
            // diskspd's -r4K, -si, -Sh: a value only when attached.
            if SHORT_VALUED.contains(&flag) || ATTACHED_ONLY.contains(&flag) {
                return Some(Arg::Flag(flag.to_owned(), Some(rest)));
            }
        }
        if a.starts_with('-') && a.len() > 1 {
            return Some(Arg::Flag(a.to_owned(), None));
        }
        Some(Arg::Positional(a))
    }

    fn value(&mut self, flag: &str, inline: Option<&'a str>) -> Result<&'a str, UsageError> {
        if let Some(v) = inline {
            return Ok(v);
        }
        match self.items.next() {
            Some(v) => Ok(v.as_str()),
            None => usage(format!("option {flag} needs a value")),
        }
    }
}

/// Parses the disk flags common to every subcommand; `Ok(false)` if `flag` is not one.
fn disk_flag<'a>(
    args: &mut Args<'a>,
    flag: &str,
    inline: Option<&'a str>,
    d: &mut DiskArgs,
    targets: &[&str],
) -> Result<bool, UsageError> {
    match flag {
        "--target" => {
            let v = args.value(flag, inline)?;
            if !targets.contains(&v) {
                return usage(format!("--target must be {}, got {v}", one_of(targets)));
            }
            d.target = Some(v.to_owned());
        }
        "-c" | "--capacity" => d.disk.capacity_bytes = parse_size(flag, args.value(flag, inline)?)?,
        "--block-size" => {
            let v = args.value(flag, inline)?;
            match v.trim().parse::<u32>() {
                Ok(n @ (512 | 4096)) => d.disk.logical_block_size = n,
                _ => return usage(format!("--block-size must be 512 or 4096, got {v}")),
            }
        }
        "--file" => d.disk.file = Some(PathBuf::from(args.value(flag, inline)?)),
        "--driver-image" => d.disk.driver_image = Some(PathBuf::from(args.value(flag, inline)?)),
        "--device" => {
            d.disk.device =
                crate::disk::parse_device(args.value(flag, inline)?).map_err(UsageError)?
        }
        "--vhost-user" => {
            let socket = PathBuf::from(args.value(flag, inline)?);
            d.disk.device = DeviceKind::VhostUser(socket);
        }
        "--windows-rules-only" => d.disk.windows_rules_only = true,
        "--trace" => d.disk.trace = true,
        "--param" => {
            let v = args.value(flag, inline)?;
            d.disk.params.push(parse_param(v)?);
        }
        "--queues" => {
            let v = args.value(flag, inline)?;
            match v.trim().parse::<u16>() {
                Ok(n @ 1..=64) => d.disk.queues = n,
                _ => return usage(format!("--queues must be between 1 and 64, got {v}")),
            }
        }
        "--interrupts" => {
            let v = args.value(flag, inline)?;
            d.disk.interrupts = match v.to_ascii_lowercase().as_str() {
                "msix" | "msi-x" => InterruptMode::Msix,
                "intx" => InterruptMode::Intx,
                "msi" => InterruptMode::Msi,
                _ => return usage(format!("--interrupts must be msix, msi or intx, got {v}")),
            };
        }
        _ => return Ok(false),
    }
    Ok(true)
}

fn one_of(names: &[&str]) -> String {
    match names {
        [] => "nothing".to_owned(),
        [one] => (*one).to_owned(),
        [rest @ .., last] => format!("{} or {last}", rest.join(", ")),
    }
}

fn unknown(flag: &str) -> UsageError {
    UsageError(format!("unknown option '{flag}' (see vioblk-sim --help)"))
}

fn check_disk(d: &DiskArgs) -> Result<(), UsageError> {
    let bs = u64::from(d.disk.logical_block_size);
    if d.disk.capacity_bytes == 0 || !d.disk.capacity_bytes.is_multiple_of(bs) {
        return usage(format!(
            "-c must be a non-zero multiple of the logical block size ({bs}), got {}",
            d.disk.capacity_bytes
        ));
    }
    Ok(())
}

/// Parses a command line (without the program name). `targets` are the backend names.
///
/// # Errors
/// A [`UsageError`] whose text names the flag and the value at fault.
pub fn parse(argv: &[String], targets: &[&str]) -> Result<Command, UsageError> {
    let (sub, rest) = match argv.first().map(String::as_str) {
        Some("run") => ("run", &argv[1..]),
        Some("cdb") => ("cdb", &argv[1..]),
        Some("info") => ("info", &argv[1..]),
        Some("compare") => {
            let rest = &argv[1..];
            if rest.iter().any(|a| a == "-h" || a == "--help") {
                return Ok(Command::Help);
            }
            if let Some(flag) = rest.iter().find(|a| a.starts_with('-') && a.len() > 1) {
                return usage(format!(
                    "compare takes no options, got {flag} (see vioblk-sim --help)"
                ));
            }
            return match rest {
                [a, b] => Ok(Command::Compare(a.clone(), b.clone())),
                _ => usage(format!(
                    "compare needs two JSON reports, e.g. vioblk-sim compare before.json after.json \
                     (got {} argument{})",
                    rest.len(),
                    if rest.len() == 1 { "" } else { "s" }
                )),
            };
        }
        Some("explore") => ("explore", &argv[1..]),
        Some("soak") => ("soak", &argv[1..]),
        Some("help") => return Ok(Command::Help),
        _ => ("run", argv),
    };
    let mut args = Args {
        items: rest.iter().peekable(),
    };
    let mut disk = DiskArgs {
        target: None,
        disk: DiskOptions::default(),
    };
    let mut job = WorkloadOptions::default();
    let mut json = false;
    let mut html = None;
    let mut faults = Vec::new();
    let mut duration: Option<Duration> = None;
    let mut ios: Option<u64> = None;
    let mut pattern: Option<&str> = None;
    let mut random_align: Option<(String, u64)> = None;
    let mut write_percent: u32 = u32::from(job.mix.write_percent);
    let mut unmap_percent: u32 = 0;
    let mut hex = Vec::new();
    let mut data_out = Vec::new();
    let mut data_in_len = None;
    let mut deterministic = false;
    let mut seeds: Option<(u64, u64)> = None;
    let mut total: Option<Stop> = None;
    let mut chaos_every_ms: u64 = 5;
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg {
            Arg::Positional(p) if sub == "cdb" => {
                hex.push(p);
                continue;
            }
            // diskspd's target: a path (it has a / or a .) at the end of a job.
            Arg::Positional(p) if sub == "run" && (p.contains('/') || p.contains('.')) => {
                if let Some(f) = &disk.disk.file {
                    return usage(format!(
                        "two files given ({} and {p}): vioblk-sim runs on one disk",
                        f.display()
                    ));
                }
                disk.disk.file = Some(PathBuf::from(p));
                continue;
            }
            Arg::Positional(p) => {
                return usage(format!("unexpected argument '{p}' (see vioblk-sim --help)"));
            }
            Arg::Flag(f, v) => (f, v),
        };
        let flag = flag.as_str();
        // diskspd's spellings: -r[align], -s (not -si), -S[u|w|h|b], -L.
        if sub == "run" {
            match (flag, inline) {
                ("-r", Some(align)) => {
                    random_align = Some((align.to_owned(), parse_size("-r", align)?));
                }
                ("-s", Some(rest)) => {
                    return usage(format!(
                        "-s{rest}: vioblk-sim has plain sequential I/O only (-s: each thread its \
                         own stream); diskspd's interlocked or strided forms are not supported"
                    ));
                }
                ("-S", rest) => {
                    let rest = rest.unwrap_or("");
                    if rest.contains('b') {
                        return usage(
                            "-Sb asks for the OS cache, which vioblk-sim does not have: every \
                             I/O goes to the driver (leave -S out, or -Sh for write-through)",
                        );
                    }
                    if !rest.chars().all(|c| matches!(c, 'u' | 'w' | 'h' | 'r')) {
                        return usage(format!(
                            "-S{rest}: diskspd's caching flags are u, w, h, r or b (e.g. -Sh)"
                        ));
                    }
                    // There is no software cache to bypass; write-through is FUA on writes.
                    if rest.contains('w') || rest.contains('h') {
                        job.fua = true;
                    }
                    continue;
                }
                ("-L", None) => continue,
                _ => {}
            }
            let short = flag.get(..2).filter(|_| !flag.starts_with("--"));
            if let Some((_, what)) = DISKSPD_ONLY.iter().find(|(f, _)| Some(*f) == short) {
                return usage(format!(
                    "{flag}{}: diskspd's option for {what} has no vioblk-sim equivalent; leave \
                     it out (see vioblk-sim --help)",
                    inline.unwrap_or("")
                ));
            }
        }
        if inline.is_some() && SWITCHES.contains(&flag) && !ATTACHED_ONLY.contains(&flag) {
            return usage(format!("option {flag} takes no value"));
        }
        match flag {
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            _ => {}
        }
        if sub == "explore" && flag == "--seeds" {
            let v = args.value(flag, inline)?;
            seeds = Some(parse_seeds(v)?);
            continue;
        }
        if sub == "soak" && flag == "--total-ios" {
            let n: u64 = parse_number(flag, args.value(flag, inline)?)?;
            total = Some(Stop::Ios(n.max(1)));
            continue;
        }
        if sub == "soak" && flag == "--chaos-every" {
            let ms: u64 = parse_number(flag, args.value(flag, inline)?)?;
            if ms == 0 {
                return usage(format!("{flag} must be at least 1, got 0"));
            }
            chaos_every_ms = ms;
            continue;
        }
        if sub == "soak" && flag == "--hours" {
            let h: f64 = parse_number(flag, args.value(flag, inline)?)?;
            if !(h.is_finite() && h > 0.0) {
                return usage(format!("--hours must be a positive number, got {h}"));
            }
            total = Some(Stop::Duration(Duration::from_secs_f64(h * 3600.0)));
            continue;
        }
        let sub = if sub == "explore" || sub == "soak" {
            "run"
        } else {
            sub
        };
        if disk_flag(&mut args, flag, inline, &mut disk, targets)? {
            continue;
        }
        match (sub, flag) {
            ("run", "--deterministic") => deterministic = true,
            ("run", "-t" | "--threads") => {
                job.threads = parse_number(flag, args.value(flag, inline)?)?;
                if job.threads == 0 {
                    return usage(format!("{flag} must be at least 1, got 0"));
                }
            }
            ("run", "-o" | "--outstanding") => {
                job.outstanding = parse_number(flag, args.value(flag, inline)?)?;
                if job.outstanding == 0 {
                    return usage(format!("{flag} must be at least 1, got 0"));
                }
            }
            ("run", "-b" | "--io-size") => {
                let size = parse_size(flag, args.value(flag, inline)?)?;
                job.io_size = u32::try_from(size).ok().filter(|&s| s > 0).map_or_else(
                    || usage(format!("{flag} must be between 1 and 4G-1, got {size}")),
                    Ok,
                )?;
            }
            ("run", "-r" | "--random" | "-s" | "--sequential") => {
                let p = if flag.starts_with("-r") || flag == "--random" {
                    "-r"
                } else {
                    "-s"
                };
                if pattern.is_some_and(|q| q != p) {
                    return usage("-r and -s cannot be used together");
                }
                pattern = Some(p);
            }
            ("run", "-w" | "--write-percent") => {
                let v = args.value(flag, inline)?;
                write_percent = parse_number(flag, v)?;
                if write_percent > 100 {
                    return usage(format!("-w must be between 0 and 100, got {v}"));
                }
            }
            ("run", "--unmap-percent") => {
                let v = args.value(flag, inline)?;
                unmap_percent = parse_number(flag, v)?;
                if unmap_percent > 100 {
                    return usage(format!(
                        "--unmap-percent must be between 0 and 100, got {v}"
                    ));
                }
            }
            ("run", "--flush-every") => {
                job.flush_every = parse_number(flag, args.value(flag, inline)?)?;
            }
            ("run", "--fua") => job.fua = true,
            ("run", "-d" | "--duration") => {
                let v = args.value(flag, inline)?;
                let secs = v.trim().trim_end_matches('s').parse::<f64>().ok();
                match secs.and_then(|s| Duration::try_from_secs_f64(s).ok()) {
                    Some(d) if !d.is_zero() => duration = Some(d),
                    _ => return usage(format!("-d must be a positive number of seconds, got {v}")),
                }
            }
            ("run", "--ios") => {
                let n: u64 = parse_number(flag, args.value(flag, inline)?)?;
                if n == 0 {
                    return usage("--ios must be at least 1, got 0");
                }
                ios = Some(n);
            }
            ("run", "--seed") => job.seed = parse_number(flag, args.value(flag, inline)?)?,
            ("run", "--no-verify") => job.verify = false,
            ("run", "--json") => json = true,
            ("run", "--html") => html = Some(PathBuf::from(args.value(flag, inline)?)),
            ("run", "--no-progress") => job.progress = false,
            ("run", "--fault") => {
                let spec = args.value(flag, inline)?;
                faults.push(crate::faults::FaultSpec::parse(spec).map_err(UsageError)?);
            }
            ("cdb", "--data-out") => data_out = parse_hex("--data-out", args.value(flag, inline)?)?,
            ("cdb", "--data-in-len") => {
                data_in_len = Some(parse_number(flag, args.value(flag, inline)?)?);
            }
            _ => return Err(unknown(flag)),
        }
    }
    check_disk(&disk)?;
    match sub {
        "cdb" => {
            if hex.is_empty() {
                return usage("cdb needs the CDB in hex, e.g. vioblk-sim cdb 12 00 00 00 24 00");
            }
            let cdb = parse_hex("the CDB", &hex.join(" "))?;
            if !(6..=16).contains(&cdb.len()) {
                return usage(format!(
                    "the CDB must be 6 to 16 bytes long, got {}",
                    cdb.len()
                ));
            }
            if data_in_len.is_some() && !data_out.is_empty() {
                return usage(
                    "--data-in-len and --data-out cannot be used together (an SRB moves data one way)",
                );
            }
            Ok(Command::Cdb(CdbArgs {
                disk,
                cdb,
                data_out,
                data_in_len,
            }))
        }
        "info" => Ok(Command::Info(disk)),
        "explore" if seeds.is_none() => usage("explore needs --seeds A..B"),
        _ => {
            if u64::from(write_percent) + u64::from(unmap_percent) > 100 {
                return usage(format!(
                    "-w plus --unmap-percent must be at most 100, got {}",
                    write_percent + unmap_percent
                ));
            }
            job.mix = Mix {
                // Both are at most 100 by the checks above.
                write_percent: u8::try_from(write_percent).unwrap_or(100),
                unmap_percent: u8::try_from(unmap_percent).unwrap_or(0),
            };
            job.pattern = if pattern == Some("-s") {
                Pattern::Sequential
            } else {
                Pattern::Random
            };
            job.stop = match (duration, ios) {
                (Some(_), Some(_)) => return usage("-d and --ios cannot be used together"),
                (Some(d), None) => Stop::Duration(d),
                (None, Some(n)) => Stop::Ios(n),
                (None, None) if deterministic || sub == "explore" => Stop::Ios(DETERMINISTIC_IOS),
                (None, None) => job.stop,
            };
            if let Some((text, align)) = random_align {
                if pattern == Some("-s") {
                    return usage("-r and -s cannot be used together");
                }
                if align != u64::from(job.io_size) {
                    return usage(format!(
                        "-r{text}: random offsets are aligned to the I/O size (-b {}); another \
                         alignment is not supported",
                        job.io_size
                    ));
                }
            }
            if deterministic || sub == "explore" {
                job.progress = false;
                if disk.disk.device != crate::qemu::DeviceKind::Model || disk.disk.file.is_some() {
                    return usage(
                        "--deterministic and explore need the model device on RAM (no --device, \
                         --vhost-user or --file): a host process or file cannot be replayed",
                    );
                }
                if disk.target.as_deref().is_some_and(|t| t != "driver") {
                    return usage("--deterministic and explore run the driver target only");
                }
            }
            let bs = disk.disk.logical_block_size;
            if job.io_size % bs != 0 {
                return usage(format!(
                    "-b must be a multiple of the logical block size ({bs}), got {}",
                    job.io_size
                ));
            }
            if u64::from(job.io_size) > disk.disk.capacity_bytes {
                return usage(format!(
                    "-b ({}) is larger than the disk ({} bytes)",
                    job.io_size, disk.disk.capacity_bytes
                ));
            }
            let slots = disk.disk.capacity_bytes / u64::from(job.io_size);
            let in_flight = u64::from(job.threads) * u64::from(job.outstanding);
            if slots < in_flight {
                return usage(format!(
                    "the disk holds {slots} I/Os of {} bytes, fewer than -t × -o = {in_flight} in \
                     flight: make -c larger, or -b, -t or -o smaller",
                    job.io_size
                ));
            }
            let blocks = disk.disk.capacity_bytes / u64::from(bs);
            if job.verify && blocks > MAX_VERIFIED_BLOCKS {
                return usage(format!(
                    "-c {} with verification tracks {blocks} blocks, {} MiB of memory, more \
                     than the {} MiB vioblk-sim allows itself: add --no-verify, or make -c at \
                     most {}",
                    crate::report::size(disk.disk.capacity_bytes),
                    (blocks * 4) >> 20,
                    (MAX_VERIFIED_BLOCKS * 4) >> 20,
                    crate::report::size(MAX_VERIFIED_BLOCKS * u64::from(bs))
                ));
            }
            disk.disk.max_outstanding = job.threads.saturating_mul(job.outstanding);
            disk.disk.faults = !faults.is_empty();
            let run = RunArgs {
                disk,
                job,
                json,
                faults,
                html,
                deterministic: deterministic || sub == "explore",
            };
            if sub == "soak" {
                let Some(total) = total else {
                    return usage("soak needs --total-ios N or --hours H");
                };
                let mut run = run;
                if duration.is_none() && ios.is_none() {
                    run.job.stop = Stop::Duration(Duration::from_secs(10));
                }
                run.job.progress = false;
                run.disk.disk.faults = true;
                let rotate_interrupts = !rest
                    .iter()
                    .any(|a| a == "--interrupts" || a.starts_with("--interrupts="));
                return Ok(Command::Soak(SoakArgs {
                    run,
                    total,
                    rotate_interrupts,
                    chaos_every_ms,
                }));
            }
            match seeds {
                Some((first, last)) => Ok(Command::Explore(ExploreArgs {
                    run,
                    first,
                    last,
                    options: replay_options(rest),
                })),
                None => Ok(Command::Run(run)),
            }
        }
    }
}

/// I/Os of a deterministic job given neither `-d` nor `--ios`: small, so that many seeds run.
pub const DETERMINISTIC_IOS: u64 = 256;

/// `A..B` (inclusive) or a single seed.
fn parse_seeds(text: &str) -> Result<(u64, u64), UsageError> {
    let (a, b) = text.split_once("..").unwrap_or((text, text));
    let first: u64 = parse_number("--seeds", a)?;
    let last: u64 = parse_number("--seeds", b.strip_prefix('=').unwrap_or(b))?;
    if last < first {
        return usage(format!("--seeds must be A..B with A <= B, got {text}"));
    }
    Ok((first, last))
}

/// The explore options that a replaying `run` takes: all but `--seeds` and `--seed`.
fn replay_options(rest: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut skip_value = false;
    for a in rest {
        if skip_value {
            skip_value = false;
            continue;
        }
        match a.as_str() {
            "--seeds" | "--seed" => skip_value = true,
            s if s.starts_with("--seeds=") || s.starts_with("--seed=") => {}
            "--deterministic" => {}
            _ => out.push(a.clone()),
        }
    }
    out
}

/// Runs the command line `argv` (without the program name) against `backends` (name and
/// backend; the first is the default), writing to `out` and `err`. Returns the exit code.
///
/// `err` must not hold the stderr lock (pass `std::io::stderr()`, not `stderr().lock()`): the
/// progress bar draws on stderr from its own thread while a job runs.
pub fn run_cli(
    argv: &[String],
    backends: &[(&str, &dyn Backend)],
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let names: Vec<&str> = backends.iter().map(|(n, _)| *n).collect();
    let command = match parse(argv, &names) {
        Ok(c) => c,
        Err(e) => {
            let _ = writeln!(err, "error: {e}");
            return 2;
        }
    };
    // A path that cannot work, or an option the target cannot honour, is bad usage too, said
    // before anything starts.
    let disk = match &command {
        Command::Run(r) => Some(&r.disk),
        Command::Cdb(c) => Some(&c.disk),
        Command::Info(d) => Some(d),
        _ => None,
    };
    if let Some(d) = disk {
        let name = d.target.as_deref().or(names.first().copied());
        let ram = name == Some("ram");
        let checked = crate::disk::check_paths(&d.disk)
            .and_then(|()| {
                if ram {
                    crate::disk::RamBackend::check(&d.disk)
                } else {
                    Ok(())
                }
            })
            .and_then(|()| match &command {
                Command::Info(_) if ram => {
                    Err("the ram target loads no driver: info needs the driver target".to_owned())
                }
                Command::Run(r) if ram && !r.faults.is_empty() => Err(
                    "the ram target has no device to inject faults into: --fault needs the \
                     driver target"
                        .to_owned(),
                ),
                _ => Ok(()),
            });
        if let Err(e) = checked {
            let _ = writeln!(err, "error: {e}");
            return 2;
        }
    }
    if let Command::Run(RunArgs {
        html: Some(path), ..
    }) = &command
    {
        let parent = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        if path.is_dir() || !parent.is_dir() {
            let _ = writeln!(
                err,
                "error: --html {}: {} (give a file path in an existing directory)",
                path.display(),
                if path.is_dir() {
                    "is a directory".to_owned()
                } else {
                    format!("the directory {} does not exist", parent.display())
                }
            );
            return 2;
        }
    }
    let pick = |d: &DiskArgs| {
        let name = d
            .target
            .as_deref()
            .unwrap_or(names.first().copied().unwrap_or("none"));
        let backend = backends.iter().find(|(n, _)| *n == name).map(|(_, b)| *b);
        (name.to_owned(), backend)
    };
    let result = match command {
        Command::Help => {
            let help = HELP
                .replace("TARGETS", &one_of(&names))
                .replace("TARGET0", names.first().copied().unwrap_or("none"));
            let _ = out.write_all(help.as_bytes());
            return 0;
        }
        Command::Version => {
            let _ = writeln!(out, "vioblk-sim {}", env!("CARGO_PKG_VERSION"));
            return 0;
        }
        Command::Compare(a, b) => crate::compare::load(&a).and_then(|ja| {
            let jb = crate::compare::load(&b)?;
            let text = crate::compare::compare(&ja, &jb, (&a, &b));
            out.write_all(text.as_bytes()).map_err(|e| e.to_string())?;
            Ok(0)
        }),
        Command::Info(d) => match pick(&d) {
            (_, Some(b)) => b.registration(&d.disk).map(|r| {
                let _ = out.write_all(r.to_text().as_bytes());
                0
            }),
            (name, None) => Err(format!("no target named {name}")),
        },
        Command::Cdb(c) => match pick(&c.disk) {
            (_, Some(b)) => run_cdb(b, &c, out),
            (name, None) => Err(format!("no target named {name}")),
        },
        Command::Run(r) => match pick(&r.disk) {
            (name, Some(b)) => match run_job(b, &name, &r, out) {
                Err(JobError::Usage(e)) => {
                    let _ = writeln!(err, "error: {e}");
                    return 2;
                }
                Err(JobError::Failed(e)) => Err(e),
                Ok(code) => Ok(code),
            },
            (name, None) => Err(format!("no target named {name}")),
        },
        Command::Soak(s) => match pick(&s.run.disk) {
            (name, Some(b)) => run_soak(b, &name, &s, out),
            (name, None) => Err(format!("no target named {name}")),
        },
        Command::Explore(e) => match pick(&e.run.disk) {
            (name, Some(b)) => run_explore(b, &name, &e, out),
            (name, None) => Err(format!("no target named {name}")),
        },
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(err, "error: {e}");
            1
        }
    }
}

/// Why a job did not run: the options do not fit the disk that started (usage, exit code 2),
/// or something failed (exit code 1).
#[derive(Debug)]
pub enum JobError {
    /// The options do not fit the disk that started (exit code 2).
    Usage(String),
    /// Something failed (exit code 1).
    Failed(String),
}

impl From<String> for JobError {
    fn from(e: String) -> Self {
        Self::Failed(e)
    }
}

impl From<JobError> for String {
    fn from(e: JobError) -> Self {
        match e {
            JobError::Usage(e) | JobError::Failed(e) => e,
        }
    }
}

impl std::fmt::Display for JobError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JobError::Usage(e) | JobError::Failed(e) => f.write_str(e),
        }
    }
}

/// The most blocks a verified job tracks (4 bytes each: 1 GiB of generations).
const MAX_VERIFIED_BLOCKS: u64 = 1 << 28;

/// The largest buffer `cdb` allocates from a CDB's length fields alone (64 MiB).
const MAX_DERIVED: u32 = 64 << 20;

/// The SRB `vioblk-sim cdb` sends: the data phase the CDB asks for, unless the options say
/// otherwise; each disagreement between the two is a note for the user (sent as given).
pub fn cdb_request(c: &CdbArgs) -> (ScsiRequest, Vec<String>) {
    use crate::scsi::{Transfer, transfer};
    let (wanted, name) = transfer(&c.cdb, c.disk.disk.logical_block_size);
    let cdb = c.cdb.clone();
    let given_out = c.data_out.len();
    let mut notes = Vec::new();
    let mut note = |n: String| notes.push(n);
    let request = match (c.data_in_len, c.data_out.is_empty()) {
        // The options choose; the CDB only comments.
        (Some(len), _) => {
            match wanted {
                Transfer::In(n) if n == len => {}
                Transfer::In(n) => note(format!(
                    "{name} asks for {n} bytes in; --data-in-len gives a {len}-byte buffer (sent as given)"
                )),
                Transfer::Out(n) => note(format!(
                    "{name} sends {n} bytes out, not in; --data-in-len gives a {len}-byte data-in buffer (sent as given)"
                )),
                Transfer::None => note(format!(
                    "{name} transfers no data; --data-in-len gives a {len}-byte buffer (sent as given)"
                )),
                Transfer::Unknown => {}
            }
            ScsiRequest::data_in(cdb, len)
        }
        (None, false) => {
            match wanted {
                Transfer::Out(n) if n as usize == given_out => {}
                Transfer::Out(n) => note(format!(
                    "{name} sends {n} bytes out; --data-out has {given_out} (sent as given)"
                )),
                Transfer::In(n) => note(format!(
                    "{name} transfers {n} bytes in, not out; --data-out's {given_out} bytes are sent as given"
                )),
                Transfer::None => note(format!(
                    "{name} transfers no data; --data-out's {given_out} bytes are sent as given"
                )),
                Transfer::Unknown => {}
            }
            ScsiRequest::data_out(cdb, c.data_out.clone())
        }
        // Nothing given: the CDB decides, within what vioblk-sim allocates for a buffer.
        (None, true) => match wanted {
            Transfer::In(n) | Transfer::Out(n) if n > MAX_DERIVED => {
                note(format!(
                    "{name} transfers {n} bytes, more than vioblk-sim allocates from the CDB \
                     ({MAX_DERIVED}): sent with no buffer (give --data-in-len or --data-out)"
                ));
                ScsiRequest::no_data(cdb)
            }
            Transfer::In(n) => ScsiRequest::data_in(cdb, n),
            Transfer::Out(0) | Transfer::None => ScsiRequest::no_data(cdb),
            Transfer::Out(n) => {
                note(format!(
                    "{name} sends {n} bytes out: sending {n} zero bytes (choose them with --data-out HEX)"
                ));
                ScsiRequest::data_out(cdb, vec![0; n as usize])
            }
            Transfer::Unknown => {
                note(format!(
                    "operation code {:02x}h is not one vioblk-sim knows the data length of: sent \
                     with no data (give --data-in-len N or --data-out HEX)",
                    c.cdb.first().copied().unwrap_or(0)
                ));
                ScsiRequest::no_data(cdb)
            }
        },
    };
    (request, notes)
}

fn run_cdb(backend: &dyn Backend, c: &CdbArgs, out: &mut dyn Write) -> Result<i32, String> {
    let (request, notes) = cdb_request(c);
    let disk = backend.open(&c.disk.disk)?;
    let completion = disk.target().execute(request.clone());
    let image = disk.driver_image();
    let mut violations = disk.violations();
    violations.extend(disk.close());
    let mut text = image.map(|i| i.headline()).unwrap_or_default();
    for n in &notes {
        text.push_str(&format!("note:        {n}\n"));
    }
    text.push_str(&cdb_result(&request, &completion));
    for v in &violations {
        text.push_str(&format!("storport violation: {v}\n"));
    }
    out.write_all(text.as_bytes()).map_err(|e| e.to_string())?;
    // An underrun (fewer bytes than the allocation length allows, status GOOD) is how a short
    // answer comes back through Storport; sg_raw counts it as success too.
    let underrun = completion.status() == storport_sys::SRB_STATUS_DATA_OVERRUN
        && completion.scsi_status == storport_sys::SCSISTAT_GOOD
        && completion.data_transfer_length < request.data_in_len;
    Ok(
        if (completion.is_success() || underrun) && violations.is_empty() {
            0
        } else {
            1
        },
    )
}

/// The steps a deterministic run may take before it is called a livelock.
const MAX_STEPS: u64 = 200_000_000;

fn run_job(
    backend: &dyn Backend,
    name: &str,
    r: &RunArgs,
    out: &mut dyn Write,
) -> Result<i32, JobError> {
    let (report, image) = job_report(backend, name, r)?;
    let text = if r.json {
        let mut json = report.to_json();
        if let (Some(image), Some(map)) = (&image, json.as_object_mut()) {
            map.insert("driver_image".into(), image.to_json());
        }
        let mut s = serde_json::to_string_pretty(&json).map_err(|e| e.to_string())?;
        s.push('\n');
        s
    } else {
        image.as_ref().map(|i| i.to_text()).unwrap_or_default() + &report.to_text()
    };
    out.write_all(text.as_bytes()).map_err(|e| e.to_string())?;
    if let Some(path) = &r.html {
        let page = crate::html::to_html(&report, image.as_ref())?;
        std::fs::write(path, page).map_err(|e| {
            format!(
                "cannot write the HTML report to {}: {e} (the job itself ran; see above)",
                path.display()
            )
        })?;
    }
    Ok(if report.passed() { 0 } else { 1 })
}

/// Runs the job of `r`, under a seeded scheduler when it is deterministic.
pub fn job_report(
    backend: &dyn Backend,
    name: &str,
    r: &RunArgs,
) -> Result<(Report, Option<crate::image_report::ImageReport>), JobError> {
    if !r.deterministic {
        return job_report_now(backend, name, r);
    }
    let seed = r.job.seed;
    let (result, sched) =
        storport_sim::sched::run(seed, MAX_STEPS, || job_report_now(backend, name, r));
    let mut det = crate::report::Deterministic {
        seed,
        digest: sched.digest,
        steps: sched.steps,
        switches: sched.switches,
        threads: sched.threads,
        virtual_time: sched.virtual_time,
        failure: sched.failure,
    };
    match result {
        Ok((mut report, image)) => {
            if det.failure.is_none() {
                det.failure = unexplained_errors(&report.result, &r.faults);
            }
            report.deterministic = Some(det);
            Ok((report, image))
        }
        Err(e) => Err(match (e, det.failure) {
            (JobError::Failed(e), Some(f)) => JobError::Failed(format!("{e} (seed {seed}: {f})")),
            (e, _) => e,
        }),
    }
}

fn job_report_now(
    backend: &dyn Backend,
    name: &str,
    r: &RunArgs,
) -> Result<(Report, Option<crate::image_report::ImageReport>), JobError> {
    let mut job = r.job.clone();
    // A file that already holds data is not known to be empty: blocks the job has not written
    // itself are then not checked.
    if let Some(path) = &r.disk.disk.file {
        job.starts_empty = std::fs::metadata(path).map_or(true, |m| m.len() == 0);
    }
    // Nor is a vhost-user back end somebody else runs.
    if let DeviceKind::VhostUser(_) = r.disk.disk.device {
        job.starts_empty = false;
    }
    let disk = backend.open(&r.disk.disk)?;
    let geometry = match start_disk(disk.target()) {
        Ok(g) => g,
        Err(e) => {
            let mut message = format!("the disk did not start: {e}");
            for v in disk.violations().into_iter().chain(disk.close()) {
                message.push_str(&format!("\nstorport violation: {v}"));
            }
            return Err(JobError::Failed(message));
        }
    };
    // Options that do not fit what the disk reported (its transfer limits, UNMAP support, write
    // protection) are bad usage, said before any I/O.
    if let Err(e) = workload::validate(&job, &geometry) {
        let _ = disk.close();
        return Err(JobError::Usage(e));
    }
    if !r.faults.is_empty() {
        disk.start_faults(r.faults.clone())?;
    }
    let result = workload::run(disk.target(), &geometry, &job);
    let faults = if r.faults.is_empty() {
        None
    } else {
        disk.finish_faults()
    };
    let result = result?;
    let queues = disk.queue_stats();
    let interrupts = disk.interrupts();
    let image = disk.driver_image();
    let backing = disk.backing();
    let (event_log, etw_events) = disk.event_log();
    let mut violations = disk.violations();
    violations.extend(disk.close());
    let report = Report {
        setup: Setup {
            target: name.to_owned(),
            queues: r.disk.disk.queues,
            interrupts: interrupts.unwrap_or_else(|| "none".to_owned()),
            backing: backing.unwrap_or_else(|| {
                r.disk
                    .disk
                    .file
                    .as_ref()
                    .map_or_else(|| "ram".to_owned(), |p| p.display().to_string())
            }),
        },
        job,
        disk: geometry,
        result,
        queues,
        violations,
        faults,
        deterministic: None,
        event_log,
        etw_events,
    };
    Ok((report, image))
}

/// Failed I/Os under faults none of which can fail an I/O (see `FaultKind::may_fail_io`): a
/// deterministic run fails on them, since each is a request the driver lost to a reset.
fn unexplained_errors(
    result: &crate::workload::WorkloadResult,
    faults: &[crate::faults::FaultSpec],
) -> Option<String> {
    if faults.is_empty() || result.counts.errors == 0 || faults.iter().any(|f| f.kind.may_fail_io())
    {
        return None;
    }
    let how: Vec<String> = result
        .failures
        .iter()
        .map(|(how, n)| format!("{n} x {how}"))
        .collect();
    Some(format!(
        "{} I/O(s) failed, which none of the injected faults explains: {}",
        result.counts.errors,
        how.join(", ")
    ))
}

/// What went wrong in one explored seed, in a sentence.
fn explore_failure(report: &Report) -> Option<String> {
    if let Some(f) = report
        .deterministic
        .as_ref()
        .and_then(|d| d.failure.as_ref())
    {
        return Some(f.clone());
    }
    if report.passed() {
        return None;
    }
    let r = &report.result;
    let mut why = Vec::new();
    if let Some(v) = report.violations.first() {
        why.push(format!(
            "{} Storport violation(s), the first: {v}",
            report.violations.len()
        ));
    }
    if r.verification.mismatches > 0 {
        why.push(format!("{} data mismatch(es)", r.verification.mismatches));
    }
    match &report.faults {
        Some(f) if !f.recovered() => why.push("the disk did not recover from the faults".into()),
        None if r.counts.errors > 0 => why.push(format!("{} failed I/O(s)", r.counts.errors)),
        _ => {}
    }
    if why.is_empty() {
        why.push("the job failed".into());
    }
    Some(why.join("; "))
}

/// `vioblk-sim soak`: rounds of the job, each with its own seed (and, without `--fault`, chaos
/// from that seed), the interrupt mode turning msix, intx, msi unless `--interrupts` was given,
/// until the total; stops at the first failed round.
fn run_soak(
    backend: &dyn Backend,
    name: &str,
    s: &SoakArgs,
    out: &mut dyn Write,
) -> Result<i32, String> {
    let start = std::time::Instant::now();
    let (mut ios, mut blocks, mut errors, mut faults, mut resets) = (0u64, 0u64, 0u64, 0u64, 0u64);
    let (mut mismatches, mut violations) = (0u64, 0usize);
    let rotate = s.rotate_interrupts;
    let mut round = 0u64;
    let say = |out: &mut dyn Write, line: String| -> Result<(), String> {
        out.write_all(line.as_bytes()).map_err(|e| e.to_string())?;
        out.flush().map_err(|e| e.to_string())
    };
    loop {
        let done = match s.total {
            Stop::Ios(n) => ios >= n,
            Stop::Duration(d) => start.elapsed() >= d,
        };
        if done {
            break;
        }
        round += 1;
        let mut run = s.run.clone();
        run.job.seed = s.run.job.seed.wrapping_add(round);
        if rotate {
            run.disk.disk.interrupts =
                [InterruptMode::Msix, InterruptMode::Intx, InterruptMode::Msi]
                    [(round % 3) as usize];
        }
        if run.faults.is_empty() {
            run.faults.push(crate::faults::FaultSpec::parse(&format!(
                "chaos,seed={round},every={}",
                s.chaos_every_ms
            ))?);
        }
        let (report, _) = job_report(backend, name, &run)?;
        let r = &report.result;
        ios += r.counts.ios();
        blocks += r.verification.blocks_verified;
        errors += r.counts.errors;
        mismatches += r.verification.mismatches;
        violations += report.violations.len();
        if let Some(f) = &report.faults {
            faults += f.injected.len() as u64;
            resets += f.resets_detected;
        }
        say(
            out,
            format!(
                "round {round} ({}, seed {}): {} I/Os, {} failed, {} faults, {} mismatches, {} violations; total {ios} I/Os\n",
                run.disk.disk.interrupts.name(),
                run.job.seed,
                r.counts.ios(),
                r.counts.errors,
                report.faults.as_ref().map_or(0, |f| f.injected.len()),
                r.verification.mismatches,
                report.violations.len()
            ),
        )?;
        if !report.passed() {
            say(out, report.to_text())?;
            say(
                out,
                format!("soak: round {round} FAILED (seed {})\n", run.job.seed),
            )?;
            return Ok(1);
        }
    }
    let secs = start.elapsed().as_secs_f64();
    say(
        out,
        format!(
            "soak: {round} rounds, {ios} I/Os ({blocks} blocks verified), {errors} failed I/Os, \
             {faults} faults injected, {resets} resets completed, {mismatches} mismatches, \
             {violations} violations, {secs:.0} s ({:.0} I/Os per second)\n",
            ios as f64 / secs.max(1e-9)
        ),
    )?;
    Ok(if mismatches == 0 && violations == 0 {
        0
    } else {
        1
    })
}

/// `vioblk-sim explore`: runs the job under each seed, stops at the first failure and prints the
/// command that replays it.
fn run_explore(
    backend: &dyn Backend,
    name: &str,
    e: &ExploreArgs,
    out: &mut dyn Write,
) -> Result<i32, String> {
    let replay = |seed: u64| {
        let mut cmd = format!("vioblk-sim run --deterministic --seed {seed}");
        for o in &e.options {
            cmd.push(' ');
            cmd.push_str(o);
        }
        cmd
    };
    let mut digests = std::collections::HashSet::new();
    let mut ios = 0u64;
    for seed in e.first..=e.last {
        let mut run = e.run.clone();
        run.job.seed = seed;
        // A hang the watchdog ends the process for names the seed too.
        storport_sim::watchdog_context(Some(format!("replay: {}", replay(seed))));
        let outcome = job_report(backend, name, &run);
        storport_sim::watchdog_context(None);
        let failure = match &outcome {
            Ok((report, _)) => {
                if let Some(d) = &report.deterministic {
                    digests.insert(d.digest);
                }
                ios += report.result.counts.ios();
                explore_failure(report)
            }
            Err(e) => Some(e.to_string()),
        };
        if let Some(why) = failure {
            let _ = writeln!(
                out,
                "seed {seed}: FAILED after {} passing seed(s): {why}\nreplay: {}",
                seed - e.first,
                replay(seed)
            );
            return Ok(1);
        }
    }
    let n = e.last - e.first + 1;
    out.write_all(
        format!(
            "explored seeds {}..{}: {n} schedule(s) passed, {} distinct digest(s), {ios} I/Os\n",
            e.first,
            e.last,
            digests.len()
        )
        .as_bytes(),
    )
    .map_err(|e| e.to_string())?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TARGETS: &[&str] = &["driver", "ram"];

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_owned).collect()
    }

    fn parse_line(line: &str) -> Result<Command, UsageError> {
        parse(&args(line), TARGETS)
    }

    fn error(line: &str) -> String {
        parse_line(line).expect_err(line).0
    }

    fn run_args(line: &str) -> RunArgs {
        match parse_line(line) {
            Ok(Command::Run(r)) => r,
            other => panic!("{line}: {other:?}"),
        }
    }

    #[test]
    fn no_flags_is_the_default_job() {
        let r = run_args("");
        assert_eq!(r.job, WorkloadOptions::default());
        assert_eq!(r.disk.disk, DiskOptions::default());
        assert_eq!(r.disk.target, None);
        assert!(!r.json);
    }

    #[test]
    fn diskspd_style_flags() {
        let r = run_args(
            "run -t4 -o 8 -b64K -s -w 100 -d0.5 -c 1G --block-size=4096 --queues 4 \
             --interrupts intx --seed 0x10 --fua --flush-every 16 --json --no-progress \
             --target ram",
        );
        assert_eq!(
            (r.job.threads, r.job.outstanding, r.job.io_size),
            (4, 8, 65536)
        );
        assert_eq!(r.job.pattern, Pattern::Sequential);
        assert_eq!(
            r.job.mix,
            Mix {
                write_percent: 100,
                unmap_percent: 0
            }
        );
        assert_eq!(r.job.stop, Stop::Duration(Duration::from_millis(500)));
        assert_eq!(
            (r.job.seed, r.job.fua, r.job.flush_every, r.job.progress),
            (16, true, 16, false)
        );
        assert_eq!(r.disk.disk.capacity_bytes, 1 << 30);
        assert_eq!(r.disk.disk.logical_block_size, 4096);
        assert_eq!(r.disk.disk.queues, 4);
        assert_eq!(r.disk.disk.interrupts, InterruptMode::Intx);
        assert_eq!(r.disk.disk.max_outstanding, 32);
        assert_eq!(r.disk.target.as_deref(), Some("ram"));
        assert!(r.json);
        let r = run_args("--ios 100 --unmap-percent 10 -w 20 --no-verify --file /tmp/x");
        assert_eq!(r.job.stop, Stop::Ios(100));
        assert_eq!(
            r.job.mix,
            Mix {
                write_percent: 20,
                unmap_percent: 10
            }
        );
        assert!(!r.job.verify);
        assert_eq!(r.disk.disk.file, Some(PathBuf::from("/tmp/x")));
    }

    #[test]
    fn diskspd_spellings() {
        let r = run_args("-b4K -o32 -t4 -r -w30 -d30 -L -Sh -c1G");
        assert_eq!(
            (r.job.io_size, r.job.outstanding, r.job.threads),
            (4096, 32, 4)
        );
        assert_eq!(r.job.pattern, Pattern::Random);
        assert_eq!(r.job.mix.write_percent, 30);
        assert_eq!(r.job.stop, Stop::Duration(Duration::from_secs(30)));
        assert!(r.job.fua, "-Sh is write-through");
        assert_eq!(r.disk.disk.capacity_bytes, 1 << 30);
        let r = run_args("-b64K -r64K -Su -S disk.img");
        assert_eq!(r.job.io_size, 65536);
        assert!(!r.job.fua);
        assert_eq!(r.disk.disk.file, Some(PathBuf::from("disk.img")));
        let r = run_args("-Sw -s /tmp/x.img");
        assert!(r.job.fua);
        assert_eq!(r.job.pattern, Pattern::Sequential);
        assert_eq!(r.disk.disk.file, Some(PathBuf::from("/tmp/x.img")));
        let r = run_args("--html /tmp/r.html");
        assert_eq!(r.html, Some(PathBuf::from("/tmp/r.html")));
        for (line, want) in [
            (
                "-Sb",
                "-Sb asks for the OS cache, which vioblk-sim does not have: every I/O goes to \
                 the driver (leave -S out, or -Sh for write-through)",
            ),
            (
                "-Sx",
                "-Sx: diskspd's caching flags are u, w, h, r or b (e.g. -Sh)",
            ),
            (
                "-b4K -r8K",
                "-r8K: random offsets are aligned to the I/O size (-b 4096); another alignment \
                 is not supported",
            ),
            ("-s -r4K", "-r and -s cannot be used together"),
            (
                "-si",
                "-si: vioblk-sim has plain sequential I/O only (-s: each thread its own stream); \
                 diskspd's interlocked or strided forms are not supported",
            ),
            (
                "-W5",
                "-W5: diskspd's option for warm-up time has no vioblk-sim equivalent; leave it \
                 out (see vioblk-sim --help)",
            ),
            (
                "a.img b.img",
                "two files given (a.img and b.img): vioblk-sim runs on one disk",
            ),
        ] {
            assert_eq!(error(line), want, "for `{line}`");
        }
    }

    #[test]
    fn bad_flags_say_what_is_wrong() {
        let cases = [
            (
                "--block-size 1000",
                "--block-size must be 512 or 4096, got 1000",
            ),
            (
                "-b 1000",
                "-b must be a multiple of the logical block size (512), got 1000",
            ),
            (
                "-b 4K --block-size 4096 -b 6K",
                "-b must be a multiple of the logical block size (4096), got 6144",
            ),
            ("-b 4X", "-b must be a size such as 4K, 64M or 1G, got 4X"),
            (
                "-b 2M -c 1M",
                "-b (2097152) is larger than the disk (1048576 bytes)",
            ),
            (
                "-c 1000",
                "-c must be a non-zero multiple of the logical block size (512), got 1000",
            ),
            ("-w 150", "-w must be between 0 and 100, got 150"),
            (
                "-w 80 --unmap-percent 30",
                "-w plus --unmap-percent must be at most 100, got 110",
            ),
            ("-t 0", "-t must be at least 1, got 0"),
            ("-o x", "-o must be a whole number, got x"),
            ("-d 0", "-d must be a positive number of seconds, got 0"),
            ("-d -1", "-d must be a positive number of seconds, got -1"),
            ("-d abc", "-d must be a positive number of seconds, got abc"),
            ("-d 1 --ios 5", "-d and --ios cannot be used together"),
            ("--ios 0", "--ios must be at least 1, got 0"),
            ("-r -s", "-r and -s cannot be used together"),
            ("--queues 0", "--queues must be between 1 and 64, got 0"),
            (
                "--interrupts msi2",
                "--interrupts must be msix, msi or intx, got msi2",
            ),
            ("--target nvme", "--target must be driver or ram, got nvme"),
            (
                "--frobnicate",
                "unknown option '--frobnicate' (see vioblk-sim --help)",
            ),
            ("-t", "option -t needs a value"),
            ("--json=yes", "option --json takes no value"),
            ("--device nvme", "--device must be model or qemu, got nvme"),
            (
                "extra",
                "unexpected argument 'extra' (see vioblk-sim --help)",
            ),
            ("info -t 4", "unknown option '-t' (see vioblk-sim --help)"),
            (
                "cdb",
                "cdb needs the CDB in hex, e.g. vioblk-sim cdb 12 00 00 00 24 00",
            ),
            (
                "cdb 12 00 0g",
                "the CDB must be hex bytes such as '12 00 00 00 24 00', got '12 00 0g'",
            ),
            ("cdb 1200", "the CDB must be 6 to 16 bytes long, got 2"),
        ];
        for (line, want) in cases {
            assert_eq!(error(line), want, "for `{line}`");
        }
    }

    #[test]
    fn cdb_and_info_and_help() {
        match parse_line("cdb 12 00 00 00 24 00 --data-in-len 36 --target ram") {
            Ok(Command::Cdb(c)) => {
                assert_eq!(c.cdb, [0x12, 0, 0, 0, 0x24, 0]);
                assert_eq!(c.data_in_len, Some(36));
                assert_eq!(c.disk.target.as_deref(), Some("ram"));
            }
            other => panic!("{other:?}"),
        }
        match parse_line("cdb 2a000000000000000100 --data-out 0x01,0x02") {
            Ok(Command::Cdb(c)) => {
                assert_eq!(c.cdb.len(), 10);
                assert_eq!(c.data_out, [1, 2]);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse_line("info --queues 1"),
            Ok(Command::Info(_))
        ));
        assert_eq!(parse_line("--help"), Ok(Command::Help));
        assert_eq!(parse_line("help"), Ok(Command::Help));
        assert_eq!(parse_line("run -t 2 -V"), Ok(Command::Version));
    }

    #[test]
    fn sizes() {
        for (text, want) in [
            ("4096", 4096),
            ("4K", 4096),
            ("4k", 4096),
            ("4KiB", 4096),
            ("1MB", 1 << 20),
            ("2G", 2 << 30),
            ("1T", 1 << 40),
        ] {
            assert_eq!(parse_size("-b", text), Ok(want), "{text}");
        }
        assert!(parse_size("-b", "K").is_err());
        assert!(parse_size("-b", "99999999999T").is_err());
    }

    fn cli(line: &str) -> (i32, String, String) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = run_cli(&args(line), &[("ram", &RamBackend)], &mut out, &mut err);
        (
            code,
            String::from_utf8_lossy(&out).into_owned(),
            String::from_utf8_lossy(&err).into_owned(),
        )
    }

    #[test]
    fn run_cli_end_to_end_on_ram() {
        let (code, out, err) = cli("-c 4M --ios 500 --no-progress");
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.contains("result:  PASS"), "{out}");
        let (code, out, _) = cli("--ios 300 -c 4M --json --unmap-percent 5 --flush-every 4");
        assert_eq!(code, 0);
        let j: serde_json::Value = serde_json::from_str(&out).expect("JSON");
        assert_eq!(j["result"]["ios"], 300);
        assert_eq!(j["queues"].as_array().map(Vec::len), Some(2));
        let (code, _, err) = cli("--file /tmp/nope --ios 1");
        assert_eq!(code, 2);
        assert_eq!(
            err,
            "error: the ram target keeps its disk in memory: --file needs the driver target\n"
        );
        let (code, _, err) = cli("info");
        assert_eq!(
            (code, err.as_str()),
            (
                2,
                "error: the ram target loads no driver: info needs the driver target\n"
            )
        );
        let (code, _, err) = cli("--fault lost --ios 10");
        assert_eq!(
            (code, err.as_str()),
            (
                2,
                "error: the ram target has no device to inject faults into: --fault needs the \
                 driver target\n"
            )
        );
        let (code, _, err) = cli("--block-size 1000");
        assert_eq!(
            (code, err.as_str()),
            (2, "error: --block-size must be 512 or 4096, got 1000\n")
        );
        let (code, out, _) = cli("--help");
        assert_eq!(code, 0);
        assert!(
            out.contains("--target NAME        where the disk comes from: ram [ram]"),
            "{out}"
        );
    }
}
