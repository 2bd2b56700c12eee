//! The explorer finds a planted interleaving bug (build with `--features planted-race`).
//!
//! The driver is built with the bug fb79d8a fixed put back: a request whose submission races
//! with a queue DPC that finds the ring broken (StartIo passed the reset check, then the DPC
//! drained the bad used element and began the reset before StartIo got the queue lock) fails
//! HARDWARE ERROR 04/44/00 instead of going back to Storport BUSY. Only some interleavings
//! show it: the threaded mode did not in 40 runs of this job (README). `vioblk-sim explore` must
//! find a seed that does within [`SEEDS`] seeds, and the command it prints must replay the same
//! failure, digest for digest.
#![forbid(unsafe_code)]

use vioblk_sim::cli::run_cli;
use vioblk_sim::driver::DriverBackend;

/// The explorer must find the bug within this many seeds.
const SEEDS: u64 = 20;

/// Runs the command line (without the program name): exit code and standard output.
fn cli(line: &str) -> (i32, String) {
    let argv: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = run_cli(&argv, &[("driver", &DriverBackend)], &mut out, &mut err);
    let text = String::from_utf8_lossy(&out).into_owned() + &String::from_utf8_lossy(&err);
    (code, text)
}

#[test]
fn explore_finds_the_planted_race_and_its_seed_replays_it() {
    let (code, out) = cli(&format!(
        "explore --seeds 1..{SEEDS} --ios 32 -o 4 --fault bad-id"
    ));
    assert_eq!(
        code, 1,
        "the explorer found nothing in {SEEDS} seeds:\n{out}"
    );
    assert!(
        out.contains("which none of the injected faults explains")
            && out.contains("HARDWARE ERROR: INTERNAL TARGET FAILURE (44h/00h)"),
        "{out}"
    );
    let replay = out
        .lines()
        .find_map(|l| l.strip_prefix("replay: vioblk-sim "))
        .unwrap_or_else(|| panic!("no replay command in:\n{out}"));
    assert!(
        replay.starts_with("run --deterministic --seed "),
        "{replay}"
    );
    assert!(replay.ends_with("--ios 32 -o 4 --fault bad-id"), "{replay}");
    // The replay fails the same way, twice, with the same transcript.
    let digest = |text: &str| {
        text.lines()
            .find(|l| l.starts_with("deterministic: seed"))
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("no digest in:\n{text}"))
    };
    let (code1, first) = cli(replay);
    let (code2, second) = cli(replay);
    assert_eq!((code1, code2), (1, 1), "{first}\n{second}");
    assert!(first.contains("HARDWARE ERROR"), "{first}");
    assert_eq!(digest(&first), digest(&second));
}
