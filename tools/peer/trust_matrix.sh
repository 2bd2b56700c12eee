#!/usr/bin/env bash
# The hostile-device matrix on this branch: every test of sim/tests/driver_trust.rs (a device
# that misbehaves, resets with I/O in flight, stop and restart, many threads) run on a driver
# image with Windows' rules only, one test at a time, each with a deadline.
#
#   tools/peer/trust_matrix.sh IMAGE.sys [SECONDS-PER-TEST]      (default 40)
#
# Prints `test | pass`, `test | FAIL: first line of the panic` or `test | HUNG (N s)`. A pass means
# the driver met driver_trust's assertions, which are vioblk's contract (precise statuses, a
# ResetDetected notification, every request completed exactly once, no Storport violation);
# a FAIL names the assertion it missed.
set -euo pipefail
cd "$(dirname "$0")/../.."
image="$(realpath "${1:?usage: tools/peer/trust_matrix.sh IMAGE.sys [SECONDS]}")"
deadline="${2:-40}"
bin="$(cargo test -p vioblk-sim --test driver_trust --no-run --message-format=json 2>/dev/null \
    | sed -n 's/.*"executable":"\([^"]*driver_trust[^"]*\)".*/\1/p' | tail -n 1)"
[ -x "$bin" ] || { echo "trust_matrix.sh: could not build the driver_trust test binary" >&2; exit 1; }
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
for t in $("$bin" --list 2>/dev/null | sed -n 's/: test$//p'); do
    rc=0
    VIOBLK_DRIVER_IMAGE="$image" VIOBLK_WINDOWS_RULES_ONLY=1 timeout "$deadline" \
        "$bin" --exact "$t" --test-threads=1 >"$log" 2>&1 || rc=$?
    case "$rc" in
        0) echo "$t | pass" ;;
        124) echo "$t | HUNG ($deadline s)" ;;
        *) echo "$t | FAIL: $(grep -m1 -A1 'panicked at' "$log" | tail -n 1 | cut -c1-160)" ;;
    esac
done
