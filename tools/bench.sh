#!/usr/bin/env bash
# The I/O-path benchmark (README "Performance"): builds the qd32_reads example (release, with
# debug symbols: the release profile has debug = 1), then `cargo bench -p vioblk-sim --bench
# io_path`, which prints a table and, on its last line, the same figures as one JSON object:
#   (a) driver instructions per 4 KiB random read at QD32 and QD1 and per write at QD32
#       (callgrind; only the driver and crates/storport; submission, completion, total),
#   (b) lock acquisitions per read by kind,
#   (c) CPU time per I/O of the whole stack and of the device model driven directly, in the same
#       run (median of 3 alternating runs), heap allocations and context switches per I/O
#       (getrusage, a counting global allocator),
#   (d) the SRB extension and device extension sizes,
#   (e) the shipped image's own instructions per read (VIOBLK_BENCH_IMAGE or
#       target/package/vioblk.sys), (f) one job three ways (needs qemu-storage-daemon; skip
#       with VIOBLK_BENCH_NO_THREE_WAY=1), (g) a full ring: QD 1024 on one queue of 128,
#   (h) the instruction ratio: whole-process instructions per read, the device model driven
#       directly over the whole stack (callgrind).
# Targets are reported, not asserted; the exit status is non-zero only for a broken run.
# Needs valgrind for (a), (e) and (h) (apt-get install valgrind); without it they read "skipped".
# Environment: CARGO_TARGET_DIR as for cargo; VIOBLK_KEEP_CALLGRIND=1 keeps the callgrind
# outputs (the bench prints where) for callgrind_annotate; VIOBLK_BENCH_ONLY=a,h runs only the
# sections named (letters as above; (g) is part of (c)).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release -p vioblk-sim --example qd32_reads
target_dir="${CARGO_TARGET_DIR:-$(cargo metadata --format-version 1 --no-deps \
    | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')}"
export VIOBLK_QD32_BIN="$target_dir/release/examples/qd32_reads"
# (e) the shipped image's own instructions per read, when .ci/windows-image has built it.
if [ -z "${VIOBLK_BENCH_IMAGE:-}" ] && [ -f "$target_dir/package/vioblk.sys" ]; then
    export VIOBLK_BENCH_IMAGE="$target_dir/package/vioblk.sys"
fi
if ! command -v valgrind >/dev/null; then
    echo "bench.sh: valgrind not found: the instruction counts (a) will be skipped" >&2
fi
exec cargo bench -p vioblk-sim --bench io_path
