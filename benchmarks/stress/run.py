#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Stress run: every checkpoint/restart and duplicate case of the test suite (the
`integration.<program>.<mode>` tests that CTest knows, so the list is never kept twice), run again
and again with fresh seeds. Each run's outcome, seed and time go to results/runs.csv; the failure
count per case and the failed seeds (replay: ckpt_harness.py --seed N) to results/report.md, with
the machine noted.

Usage: benchmarks/stress/run.py [--build build] [--rounds N] [--only REGEX] [--timeout S]
"""
import argparse
import csv
import datetime
import json
import os
import platform
import random
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def harness_cases(build, only):
    """(name, argv) of every integration test that drives ckpt_harness.py."""
    out = subprocess.run(["ctest", "--test-dir", build, "--show-only=json-v1"],
                         capture_output=True, text=True, check=True).stdout
    cases = []
    for t in json.loads(out)["tests"]:
        cmd = t.get("command") or []
        if not any(c.endswith("ckpt_harness.py") for c in cmd):
            continue
        if only and not re.search(only, t["name"]):
            continue
        cases.append((t["name"], cmd))
    return cases


def machine():
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    hwcap2 = subprocess.run(["sh", "-c", "LD_SHOW_AUXV=1 /bin/true | grep AT_HWCAP2"],
                            capture_output=True, text=True).stdout.split()[-1:] or ["?"]
    return (f"{platform.node()}: {os.cpu_count()} cores, {cpu}, Linux {platform.release()}, "
            f"AT_HWCAP2 {hwcap2[0]}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--only", help="regex on the test names")
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--results", default=os.path.join(HERE, "results"))
    a = ap.parse_args()
    cases = harness_cases(a.build, a.only)
    if not cases:
        sys.exit("stress: no harness cases found (is the tree built and configured?)")
    os.makedirs(a.results, exist_ok=True)
    rng = random.Random()
    rows = []
    started = time.monotonic()
    for rnd in range(a.rounds):
        for name, cmd in cases:
            seed = rng.randrange(1, 2**31)
            argv = list(cmd)
            # --seed goes before the program's "--".
            cut = argv.index("--")
            argv[cut:cut] = ["--seed", str(seed)]
            t0 = time.monotonic()
            try:
                r = subprocess.run(argv, capture_output=True, text=True, timeout=a.timeout)
                outcome = "pass" if r.returncode == 0 else "fail"
                why = "" if r.returncode == 0 else (r.stdout.strip().splitlines() or ["?"])[-1]
            except subprocess.TimeoutExpired:
                outcome, why = "hang", f"no end within {a.timeout:.0f} s"
            secs = time.monotonic() - t0
            rows.append({"round": rnd, "case": name, "seed": seed, "outcome": outcome,
                         "seconds": f"{secs:.1f}", "why": why})
            print(f"[{time.monotonic() - started:7.0f}s] round {rnd} {name} seed {seed}: {outcome}"
                  + (f" ({why})" if why else ""), flush=True)
    with open(os.path.join(a.results, "runs.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        w.writeheader()
        w.writerows(rows)
    with open(os.path.join(a.results, "report.md"), "w") as f:
        f.write(f"# Stress run, {datetime.date.today()}\n\nMachine: {machine()}\n\n")
        f.write(f"{a.rounds} rounds of {len(cases)} cases, {len(rows)} runs, "
                f"{sum(r['outcome'] != 'pass' for r in rows)} failed or hung.\n\n")
        f.write("| case | runs | failed | hung | failed seeds |\n|---|---|---|---|---|\n")
        for name, _ in cases:
            mine = [r for r in rows if r["case"] == name]
            bad = [r for r in mine if r["outcome"] != "pass"]
            f.write(f"| {name} | {len(mine)} | {sum(r['outcome'] == 'fail' for r in mine)} | "
                    f"{sum(r['outcome'] == 'hang' for r in mine)} | "
                    f"{', '.join(str(r['seed']) for r in bad) or '-'} |\n")
    failures = sum(r["outcome"] != "pass" for r in rows)
    print(f"{len(rows) - failures} passed, {failures} failed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
