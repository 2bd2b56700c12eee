#!/usr/bin/env bash
# Coverage-guided fuzzing of vioblk with cargo-fuzz (libFuzzer) on a nightly toolchain.
#
#   tools/fuzz.sh TARGET|all SECONDS [libFuzzer options...]
#
# TARGET is one of scsi, used_ring, bringup, srb (fuzz/fuzz_targets/; their bodies and invariants
# are crates/fuzz-cases). Each target runs for SECONDS over fuzz/corpus/TARGET (the corpus the
# runs grow, not committed) seeded from fuzz/seeds/TARGET (committed). A crash (a broken
# invariant, a panic, an AddressSanitizer report, a hang past the timeout) stops the run, leaves
# the input in fuzz/artifacts/TARGET/ and makes this script fail; replay it with
#   (cd fuzz && cargo +nightly fuzz run --debug-assertions TARGET artifacts/TARGET/crash-...)
#
# Installs what it needs: a nightly toolchain (rustup) and cargo-fuzz (crates.io). If either
# cannot be installed the script fails: it never skips a target.
#
# Builds are release builds with debug assertions and overflow checks on (-a): arithmetic that
# overflows on untrusted input is a crash, as it is in the driver's rules.
#
# At the end it prints one line per target: executions, exec/s, libFuzzer's coverage (`cov`:
# instrumented edges reached; `ft`: features, edges with hit-count buckets) and corpus size.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGETS=(scsi used_ring bringup srb)
usage() {
    echo "usage: tools/fuzz.sh TARGET|all SECONDS [libFuzzer options...]  (targets: ${TARGETS[*]})" >&2
    exit 2
}
[ $# -ge 2 ] || usage
target=$1
seconds=$2
shift 2
case "$seconds" in '' | *[!0-9]*) usage ;; esac
if [ "$target" = all ]; then
    selected=("${TARGETS[@]}")
else
    case " ${TARGETS[*]} " in *" $target "*) selected=("$target") ;; *) usage ;; esac
fi

# The nightly toolchain (cargo-fuzz needs -Zsanitizer and libFuzzer's instrumentation).
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    echo "installing the nightly toolchain (rustup)" >&2
    rustup toolchain install nightly --profile minimal
fi
rustup run nightly rustc --version
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz (crates.io)" >&2
    cargo +nightly install cargo-fuzz --locked
fi
cargo +nightly fuzz --version

# All targets in one build (they share every dependency).
(cd fuzz && cargo +nightly fuzz build --debug-assertions)

summary=()
for t in "${selected[@]}"; do
    mkdir -p "fuzz/corpus/$t"
    log=$(mktemp)
    echo "==== fuzz $t for ${seconds}s ====" >&2
    # -timeout: one input taking longer is a hang (a drain or a start-up that does not end).
    # Leak checking stays on except for bringup, whose port keeps its registration tables for
    # the life of the process (storport-sim's globals, like storport.sys's).
    leaks=1
    [ "$t" = bringup ] && leaks=0
    set +e
    (cd fuzz && cargo +nightly fuzz run --debug-assertions "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$seconds" -timeout=30 -rss_limit_mb=4096 -detect_leaks=$leaks \
        -print_final_stats=1 "$@") 2>&1 | tee "$log" >&2
    status=${PIPESTATUS[0]}
    set -e
    if [ "$status" -ne 0 ]; then
        echo "fuzz target $t failed (status $status); the input is in fuzz/artifacts/$t/" >&2
        rm -f "$log"
        exit 1
    fi
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -n 1)
    rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -n 1)
    last=$(grep -E '^#[0-9]+' "$log" | tail -n 1)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
    corp=$(sed -n 's/.* corp: \([0-9]*\/[0-9A-Za-z]*\).*/\1/p' <<<"$last")
    rm -f "$log"
    summary+=("$(printf '%-10s %6ss %12s execs %8s exec/s  cov %6s  ft %6s  corpus %s' \
        "$t" "$seconds" "${runs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}")")
done

echo
echo "target     time          executions     rate     coverage (edges, features)  corpus"
printf '%s\n' "${summary[@]}"
