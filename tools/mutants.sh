#!/usr/bin/env bash
# Mutation testing of the driver and the safe Storport layer (issue 19) with cargo-mutants.
#
#   tools/mutants.sh [--in-diff BASE] [--file PATH]... [--re REGEX] [--timeout SECS] [--max N]
#                    [--every N] [--in-place] [--out DIR]
#
# Scope: src/hba, src/virtio, src/scsi (package vioblk) and crates/storport/src (package
# storport); the test-only files under them (src/scsi/tests/, testdisk.rs) are not mutated.
# With --file, only those files; with --in-diff BASE, only the mutants on lines changed since
# the merge base of BASE and HEAD (what CI runs); with --re, only mutants whose name matches.
# With --max N, at most about N mutants per package; with --every N, one mutant in N of every
# package (cargo-mutants' round-robin shard 0/N over its unshuffled list: a systematic sample at
# the same rate everywhere, the same mutants on the same tree). One job (-j 1): the suites
# themselves run many threads, and a loaded machine must not turn a slow test into a "timeout".
# --in-place mutates this work tree itself instead of a copy (no copy of target/, incremental
# builds stay warm); use it only in a checkout nobody edits meanwhile.
#
# The suites that matter: for the driver, its unit tests and the simulator's driver suites (the
# real driver on the user-mode Storport over the device model); for crates/storport, its unit
# tests, storport-sim's suites and the same driver suites.
#
# Hangs. Every suite here has its own deadline (DEADLINE in the driver suites, storport-sim's
# watchdog and request timeouts): a mutant that makes the driver hang fails a test by that
# deadline, which cargo-mutants counts as caught. The per-mutant timeout (--timeout, default
# 600 s) is far above those deadlines, so a mutant cargo-mutants reports as a TIMEOUT hung
# without the simulator noticing: a silent hang, a defect of the tests, listed as such and
# counted as not detected in the score.
#
# Output: mutants.out/ under --out (default target/mutants), one directory per package, and a
# summary: caught, missed, silent hangs, unviable, the score caught / (caught + missed +
# silent hangs), and every missed mutant and silent hang by name. Exit status 0 when nothing was
# missed and nothing hung silently, 1 otherwise, 2 on a usage error.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,32p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }

in_diff=""
files=()
timeout=600
max=0
every=0
in_place=0
re_args=()
out="target/mutants"
while [ $# -gt 0 ]; do
    case "$1" in
        --in-diff) in_diff="${2:?--in-diff needs a git revision}"; shift 2 ;;
        --file) files+=("${2:?--file needs a path}"); shift 2 ;;
        --re) re_args=(--re "${2:?--re needs a regular expression}"); shift 2 ;;
        --timeout) timeout="${2:?--timeout needs seconds}"; shift 2 ;;
        --max) max="${2:?--max needs a count}"; shift 2 ;;
        --every) every="${2:?--every needs a count}"; shift 2 ;;
        --in-place) in_place=1; shift ;;
        --out) out="${2:?--out needs a directory}"; shift 2 ;;
        -h|--help) usage ;;
        *) echo "tools/mutants.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done

if ! command -v cargo-mutants >/dev/null 2>&1; then
    echo "tools/mutants.sh: installing cargo-mutants (cargo install cargo-mutants --locked)"
    cargo install cargo-mutants --locked
fi

in_scope() {
    case "$1" in
        src/scsi/tests/*|src/scsi/testdisk.rs) return 1 ;;
        src/hba/*.rs|src/virtio/*.rs|src/scsi/*.rs|crates/storport/src/*.rs) return 0 ;;
        *) return 1 ;;
    esac
}

diff_file=""
if [ -n "$in_diff" ]; then
    base=$(git merge-base "$in_diff" HEAD)
    diff_file=$(mktemp)
    trap 'rm -f "$diff_file"' EXIT
    git diff "$base" HEAD -- src crates/storport/src >"$diff_file"
    if [ ${#files[@]} -eq 0 ]; then
        while IFS= read -r f; do files+=("$f"); done \
            < <(git diff --name-only --diff-filter=AM "$base" HEAD -- src crates/storport/src)
    fi
    echo "mutants: lines changed since $(git rev-parse --short "$base") ($in_diff)"
elif [ ${#files[@]} -eq 0 ]; then
    while IFS= read -r f; do files+=("$f"); done \
        < <(ls src/hba/*.rs src/virtio/*.rs src/scsi/*.rs crates/storport/src/*.rs)
fi

driver_suites=(--test driver_probes --test driver_io --test driver_trust --test driver_faults
    --test driver_scsi --test driver_scsi_compliance --test driver_scsi_forms --test driver_recovery
    --test driver_feature_matrix --test driver_packed --test driver_admin --test driver_hibernate)
storport_suites=(--test sim --test lock_wrappers --test multi_tier --test removal --test watchdog --test register_window
    --test example_miniport)

# One job (cargo-mutants' default, and --in-place allows no other).
place_args=(--copy-target true --jobs 1)
[ "$in_place" -eq 1 ] && place_args=(--in-place)

mkdir -p "$out"
summary="$out/summary.txt"
: >"$summary"
driver_files=() storport_files=()
for f in "${files[@]}"; do
    in_scope "$f" && [ -f "$f" ] || continue
    case "$f" in
        crates/storport/src/*) storport_files+=("$f") ;;
        *) driver_files+=("$f") ;;
    esac
done

total_caught=0 total_missed=0 total_hung=0 total_unviable=0 total_skipped=0
# One cargo-mutants run per package (one build tree, copied with the warm target directory).
run_package() {
    local name="$1"; shift
    local file_args=() f
    while [ "$1" != "--" ]; do file_args+=(--file "$1"); shift; done
    shift
    [ ${#file_args[@]} -gt 0 ] || return 0
    local diff_args=()
    [ -n "$diff_file" ] && diff_args=(--in-diff "$diff_file")
    local count
    # The package is named: without it cargo-mutants lists the root package's mutants only, and
    # crates/storport/src was never in scope.
    count=$(cargo mutants --list --package "$name" "${file_args[@]}" "${diff_args[@]}" "${re_args[@]}" 2>/dev/null | grep -c . || true)
    if [ "$count" -eq 0 ]; then
        echo "$name: no mutant in scope" | tee -a "$summary"
        return 0
    fi
    local shard_args=()
    if [ "$every" -gt 1 ]; then
        shard_args=(--shard "0/$every" --sharding round-robin)
        total_skipped=$((total_skipped + count - (count + every - 1) / every))
        echo "$name: $count mutants, running one in $every (shard 0/$every)" | tee -a "$summary"
    elif [ "$max" -gt 0 ] && [ "$count" -gt "$max" ]; then
        # Over the budget: one shard of about `max` mutants (a deterministic sample).
        local shards=$(( (count + max - 1) / max ))
        shard_args=(--shard "0/$shards" --sharding round-robin)
        total_skipped=$((total_skipped + count - (count + shards - 1) / shards))
        echo "$name: $count mutants, running shard 0/$shards of them" | tee -a "$summary"
    fi
    local dir="$out/$name"
    rm -rf "$dir"
    echo "mutants: $name: $count mutants in ${file_args[*]}"
    set +e
    cargo mutants "${file_args[@]}" "${diff_args[@]}" "${re_args[@]}" "${shard_args[@]}" \
        --timeout "$timeout" --baseline skip --no-shuffle "${place_args[@]}" \
        --output "$dir" --colors never "$@"
    local status=$?
    set -e
    # cargo-mutants: 0 all caught, 2 some missed, 3 some timed out; anything else (1 a usage
    # error, 4 a failed baseline, 70 an internal error) means no score.
    case "$status" in
        0|2|3) ;;
        *) echo "tools/mutants.sh: cargo mutants failed for $name (exit status $status)" >&2; exit 1 ;;
    esac
    local o="$dir/mutants.out" caught missed hung unviable
    caught=$(grep -c . "$o/caught.txt" 2>/dev/null || true)
    missed=$(grep -c . "$o/missed.txt" 2>/dev/null || true)
    hung=$(grep -c . "$o/timeout.txt" 2>/dev/null || true)
    unviable=$(grep -c . "$o/unviable.txt" 2>/dev/null || true)
    caught=${caught:-0} missed=${missed:-0} hung=${hung:-0} unviable=${unviable:-0}
    total_caught=$((total_caught + caught))
    total_missed=$((total_missed + missed))
    total_hung=$((total_hung + hung))
    total_unviable=$((total_unviable + unviable))
    {
        echo "$name: caught $caught, missed $missed, silent hangs $hung, unviable $unviable"
        sed 's/^/    MISSED /' "$o/missed.txt" 2>/dev/null || true
        sed 's/^/    SILENT HANG (test defect) /' "$o/timeout.txt" 2>/dev/null || true
    } | tee -a "$summary"
}

# The target selection goes to both cargo-mutants phases (build and test), so that only these
# suites are built for each mutant.
cargo_test_args() { local a; for a in "$@"; do printf -- '--cargo-test-arg=%s\n' "$a"; done; }
mapfile -t driver_args < <(cargo_test_args --lib "${driver_suites[@]}")
mapfile -t storport_args < <(cargo_test_args --lib "${storport_suites[@]}" "${driver_suites[@]}")
run_package vioblk "${driver_files[@]}" -- --package vioblk --test-package vioblk,vioblk-sim \
    "${driver_args[@]}"
run_package storport "${storport_files[@]}" -- --package storport \
    --test-package storport,storport-sim,vioblk-sim "${storport_args[@]}"

viable=$((total_caught + total_missed + total_hung))
{
    echo
    echo "mutants summary: caught $total_caught, missed $total_missed, silent hangs $total_hung, unviable $total_unviable"
    if [ "$viable" -gt 0 ]; then
        echo "score: $total_caught / $viable viable = $(awk "BEGIN { printf \"%.1f\", 100 * $total_caught / $viable }")%"
    else
        echo "score: no viable mutant in scope"
    fi
    if [ "$total_skipped" -gt 0 ]; then
        echo "not run (outside the sample): $total_skipped"
    fi
} | tee -a "$summary"
[ "$total_missed" -eq 0 ] && [ "$total_hung" -eq 0 ]
