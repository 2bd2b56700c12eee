#!/usr/bin/env bash
# The I/O-path benchmark (README "Performance"): builds the qd32_reads example (release, with
# debug symbols: the release profile has debug = 1) that the callgrind part runs, then
# `cargo bench -p vioblk-sim --bench io_path`, which prints in one table:
#   (a) driver instructions per 4 KiB random read at QD32 (callgrind; submission, completion,
#       total), (b) lock acquisitions per read by kind, (c) IOPS through the driver vs the
#       device model driven directly, (d) the SRB extension size, (e) the shipped image's own
#       instructions per read (callgrind, by the image's address range; VIOBLK_BENCH_IMAGE or
#       target/package/vioblk.sys).
# Targets are reported, not asserted; the exit status is non-zero only for a broken run.
# Needs valgrind for (a) (apt-get install valgrind); without it (a) reads "skipped".
# Environment: CARGO_TARGET_DIR as for cargo; VIOBLK_KEEP_CALLGRIND=1 keeps the callgrind
# outputs (the bench prints where) for callgrind_annotate.
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
