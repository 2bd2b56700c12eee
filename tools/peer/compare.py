#!/usr/bin/env python3
"""vioblk.sys and viostor.sys side by side in the simulator: the same jobs, rules and faults.

    tools/peer/compare.py VIOBLK_SYS VIOSTOR_SYS [--duration S] [--callgrind-ios N] [--json]

Builds vioblk-sim (release) and its qd32_reads example, then for each image:

- the default job (2 threads x QD16, 4 KiB random, 30% writes, 64 MiB RAM disk, 2 queues, MSI-X)
  with `--windows-rules-only`: IOPS, latency percentiles, CPU time per I/O (user + system time
  of the whole vioblk-sim process, device model and workload included, from wait4's rusage,
  divided by the I/Os), verification and violations;
- the same job with every rule (the project's own too): violations, or how the run ended
  (viostor's unmarked register accesses end it with an image fault, exit status 0x50);
- instructions per 4 KiB read inside the image's own address range (callgrind over the
  qd32_reads example, N reads minus 0 reads, divided by N: submission and completion), with
  VIOBLK_WINDOWS_RULES_ONLY=1 for both images;
- the fault matrix: when `vioblk-sim --help` lists `--fault`, one run per fault mode (the
  hostile-device modes), each reported as pass / fail / how it ended. Without `--fault` in this
  build the matrix is reported as unavailable.

Both images run in one invocation of this script, one after the other, on the same machine.
Nothing here downloads anything; the viostor image comes from tools/peer/viostor.sh.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
FAULT_MODES = [
    "bad-id", "duplicate-id", "len-too-long", "len-zero", "idx-jump", "bad-status", "lost",
    "needs-reset", "slow", "reset-ignored", "reset-slow", "removal", "capacity", "chaos",
]


def target_dir():
    if os.environ.get("CARGO_TARGET_DIR"):
        return os.path.abspath(os.environ["CARGO_TARGET_DIR"])
    meta = subprocess.run(["cargo", "metadata", "--format-version", "1", "--no-deps"],
                          cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(meta.stdout)["target_directory"]


def run_timed(cmd, env=None, timeout=600):
    """Runs cmd; returns (exit status, stdout, stderr, user+system CPU seconds)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        p = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        deadline = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                p.kill()
                pid, status, usage = os.wait4(p.pid, 0)
                break
            time.sleep(0.05)
        out.seek(0)
        err.seek(0)
        code = os.waitstatus_to_exitcode(status)
        return (code, out.read().decode(errors="replace"), err.read().decode(errors="replace"),
                usage.ru_utime + usage.ru_stime)


def job(sim, image, args, extra):
    cmd = [sim, "run", "--driver-image", image, "--json", "--no-progress",
           "-d", str(args.duration)] + extra
    code, out, err, cpu = run_timed(cmd)
    report = None
    try:
        report = json.loads(out)
    except ValueError:
        pass
    lines = [l for l in err.splitlines() if l.strip()]
    return {"exit": code, "report": report, "cpu_s": cpu, "stderr": lines[-3:],
            "stops": [l for l in lines if "*** STOP" in l]}


def instructions_in(path, lo, hi):
    position, after_calls, total = 0, False, 0
    with open(path) as f:
        for line in f:
            first = line.split(None, 1)[0] if line.strip() else ""
            if not (first.startswith("0x") or first[:1] in "+-*") or first == "":
                after_calls = line.startswith("calls=")
                continue
            if first.startswith("0x"):
                position = int(first, 16)
            elif first.startswith("+"):
                position += int(first[1:], 0)
            elif first.startswith("-"):
                position -= int(first[1:], 0)
            if after_calls:
                after_calls = False
                continue
            words = line.split()
            cost = int(words[1], 0) if len(words) > 1 else 0
            if lo <= position < hi:
                total += cost
    return total


def image_instructions(qd32, image, ios):
    if shutil.which("valgrind") is None:
        return None, "valgrind not installed"
    env = dict(os.environ, VIOBLK_DRIVER_IMAGE=image, VIOBLK_WINDOWS_RULES_ONLY="1")
    counts = []
    with tempfile.TemporaryDirectory() as d:
        for n in (ios, 0):
            out = os.path.join(d, f"cg.{n}.out")
            p = subprocess.run(
                ["valgrind", "--tool=callgrind", "--vex-iropt-register-updates=allregs-at-mem-access",
                 f"--callgrind-out-file={out}", "--dump-instr=yes", "--dump-line=no",
                 "--compress-pos=no", qd32, str(n), "1"],
                env=env, capture_output=True, text=True)
            if p.returncode != 0:
                return None, f"callgrind run failed ({p.returncode}): {p.stderr.strip().splitlines()[-1:]}"
            m = re.search(r"qd32_reads: image .* at (0x[0-9a-f]+) size (0x[0-9a-f]+)", p.stdout)
            if not m:
                return None, "qd32_reads did not print the image's address range"
            lo = int(m.group(1), 16)
            counts.append(instructions_in(out, lo, lo + int(m.group(2), 16)))
    return (counts[0] - counts[1]) / ios, None


def ended(r):
    """How a run that printed no report ended: the watchdog's STOP, or an exit status."""
    if r["exit"] == 0x33:
        for line in r["stops"]:
            m = re.search(r"Watchdog: (Hw\w+) has not returned", line)
            if m:
                return f"STOP 0x133: {m.group(1)} never returned"
        return "STOP 0x133 (the watchdog ended the machine)"
    if r["exit"] == -9:
        return "HUNG: killed at the deadline"
    return f"exit status {r['exit']:#x}"


def fault_cell(s):
    """One cell of the fault matrix: pass/FAIL, and what it took (Storport's resets, the DMA cut)."""
    if "passed" not in s:
        return s["ended"]
    f = s.get("faults") or {}
    if not f.get("injected"):
        return ("pass" if s["passed"] else "FAIL") + " (the fault never fired)"
    r = f.get("resets") or {}
    how = [f"{k} reset {r[k]}" for k in ("lu", "bus", "device") if r.get(k)]
    if r.get("dma_cut"):
        how.append(f"DMA cut {r['dma_cut']}")
    why = []
    if not s["passed"]:
        if s.get("errors"):
            why.append(f"{s['errors']} I/O errors")
        if s.get("mismatches"):
            why.append(f"{s['mismatches']} mismatches")
        if s.get("violations"):
            why.append("violation " + str(s["violations"][0])[:80])
        if not f.get("recovered", True):
            why.append("not recovered")
    text = "pass" if s["passed"] else "FAIL"
    details = why + how
    return text + (f" ({'; '.join(details)})" if details else "")


def summarize(r):
    rep = r["report"]
    if rep is None:
        return {"ended": ended(r), "stderr": r["stderr"]}
    res = rep["result"]
    lat = rep["latency_us"]["all"]
    return {
        "passed": rep["passed"],
        "iops": round(res["iops"]),
        "ios": res["ios"],
        "cpu_us_per_io": round(r["cpu_s"] * 1e6 / max(res["ios"], 1), 2),
        "p50_us": lat["p50"], "p90_us": lat["p90"], "p99_us": lat["p99"], "p99_9_us": lat["p99_9"],
        "mismatches": rep["verification"]["mismatches"],
        # Device-model counts: on a hypervisor each notify is a VM exit, each interrupt an injection.
        "notifies_per_io": round(sum(q["notifications"] for q in rep.get("queues") or []) / max(res["ios"], 1), 3),
        "interrupts_per_io": round(sum(q["interrupts"] for q in rep.get("queues") or []) / max(res["ios"], 1), 3),
        "violations": rep["violations"],
        "errors": res.get("errors", 0),
        "faults": rep.get("faults"),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("vioblk")
    ap.add_argument("viostor")
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--callgrind-ios", type=int, default=2000)
    ap.add_argument("--no-callgrind", action="store_true")
    ap.add_argument("--no-faults", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    subprocess.run(["cargo", "build", "--release", "-p", "vioblk-sim", "--bin", "vioblk-sim",
                    "--example", "qd32_reads"], cwd=ROOT, check=True)
    t = target_dir()
    sim = os.path.join(t, "release", "vioblk-sim")
    qd32 = os.path.join(t, "release", "examples", "qd32_reads")
    helptext = subprocess.run([sim, "--help"], capture_output=True, text=True).stdout
    has_faults = "--fault" in helptext

    images = {"vioblk.sys": os.path.abspath(args.vioblk), "viostor.sys": os.path.abspath(args.viostor)}
    commit_file = images["viostor.sys"] + ".commit"
    result = {"viostor_commit": open(commit_file).read().strip() if os.path.exists(commit_file) else "unknown",
              "duration_s": args.duration, "drivers": {}}
    for name, image in images.items():
        d = {}
        d["windows_rules_only"] = summarize(job(sim, image, args, ["--windows-rules-only"]))
        d["all_rules"] = summarize(job(sim, image, args, []))
        if not args.no_callgrind:
            per_read, why = image_instructions(qd32, image, args.callgrind_ios)
            d["image_instructions_per_read"] = round(per_read, 1) if per_read is not None else why
        if has_faults and not args.no_faults:
            d["faults"] = {}
            for mode in FAULT_MODES:
                s = summarize(job(sim, image, args, ["--windows-rules-only", "--fault", mode]))
                d["faults"][mode] = s
        result["drivers"][name] = d
    result["fault_matrix"] = "run" if has_faults and not args.no_faults else (
        "unavailable: this vioblk-sim has no --fault (hostile-device branch not merged)" if not has_faults else "skipped")

    if args.json:
        print(json.dumps(result, indent=2))
        return
    names = list(images)
    def row(label, f):
        print(f"| {label} | " + " | ".join(f(result['drivers'][n]) for n in names) + " |")
    print(f"viostor: kvm-guest-drivers-windows {result['viostor_commit']}\n")
    print("| | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    w = lambda d: d["windows_rules_only"]
    row("IOPS (default job, Windows rules only)", lambda d: str(w(d).get("iops", w(d).get("ended"))))
    for k in ("p50_us", "p90_us", "p99_us", "p99_9_us"):
        row(f"latency {k[:-3].replace('_', '.')} (us)", lambda d, k=k: str(w(d).get(k, "-")))
    row("CPU time per I/O (us, whole process)", lambda d: str(w(d).get("cpu_us_per_io", "-")))
    row("notifies per I/O (VM exits on a hypervisor)", lambda d: str(w(d).get("notifies_per_io", "-")))
    row("interrupts per I/O", lambda d: str(w(d).get("interrupts_per_io", "-")))
    row("image instructions per 4 KiB read", lambda d: str(d.get("image_instructions_per_read", "-")))
    row("verified, mismatches", lambda d: str(w(d).get("mismatches", "-")))
    row("violations, Windows rules only", lambda d: str(len(w(d).get("violations", []))) if "violations" in w(d) else w(d)["ended"])
    row("all rules (the project's own too)", lambda d: (
        f"{len(d['all_rules']['violations'])} violations" if "violations" in d["all_rules"]
        else f"{d['all_rules']['ended']}: {' / '.join(d['all_rules']['stderr'])[:160]}"))
    if "faults" in result["drivers"][names[0]]:
        for mode in FAULT_MODES:
            row(f"fault {mode}", lambda d, m=mode: fault_cell(d["faults"][m]))
    else:
        print(f"\nfault matrix: {result['fault_matrix']}")


if __name__ == "__main__":
    sys.exit(main())
