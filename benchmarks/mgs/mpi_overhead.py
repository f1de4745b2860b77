#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Runtime of the MPI MGS (compute-bound) under ghostrun against plain mpirun, in one run.

Two ranks, each bound to a core (a 2-core machine runs nothing else well), launches alternating
native/ghost with the order flipped every round; the figure compared is the program's own compute
time (`timing ... compute_s=`), the median over rounds. --aa runs mpirun in both columns: the noise
floor of the machine, to read the ghost figure against. Every run must print the same result line.

usage: mpi_overhead.py --build BUILD [--n 3000] [--repeat 3] [--rounds 7] [--aa] [--out CSV]
Writes the rows to --out (default results/mpi_overhead_bound.csv) and a summary on stdout."""
import argparse
import csv
import os
import re
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", required=True)
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--aa", action="store_true", help="mpirun in both columns (noise floor)")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    prog = os.path.join(a.build, "benchmarks", "mgs", "mgs_mpi")
    ghostrun = os.path.join(a.build, "launcher", "ghostrun", "ghostrun")
    for exe in (prog, ghostrun):
        if not os.access(exe, os.X_OK):
            sys.exit(f"mpi_overhead: {exe} is missing (build the MPI targets first)")
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    launch = {"native": ["mpirun"], "ghost": ["mpirun"] if a.aa else [ghostrun]}
    rows, outputs = [], set()
    for r in range(a.rounds):
        for mode in ("native", "ghost") if r % 2 == 0 else ("ghost", "native"):
            cmd = launch[mode] + ["-np", "2", "--bind-to", "core", prog, "--n", str(a.n), "--repeat",
                                  str(a.repeat)]
            t0 = time.monotonic()
            p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
            wall = time.monotonic() - t0
            m = re.search(r"compute_s=([0-9.]+)", p.stderr)
            if p.returncode != 0 or not m:
                sys.exit(f"mpi_overhead: {mode} run failed ({p.returncode}): {p.stderr.strip()[-300:]}")
            outputs.add(p.stdout.strip())
            rows.append({"round": r, "mode": mode, "n": a.n, "repeat": a.repeat,
                         "compute_s": float(m.group(1)), "wall_s": round(wall, 3),
                         "output": p.stdout.strip()})
            print(f"round {r} {mode}: compute {m.group(1)} s, wall {wall:.2f} s", flush=True)
    if len(outputs) != 1:
        sys.exit(f"mpi_overhead: runs disagree: {sorted(outputs)}")
    out = a.out or os.path.join(HERE, "results", "mpi_overhead_aa.csv" if a.aa else "mpi_overhead_bound.csv")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        w.writeheader()
        w.writerows(rows)
    nat = statistics.median(r["compute_s"] for r in rows if r["mode"] == "native")
    gho = statistics.median(r["compute_s"] for r in rows if r["mode"] == "ghost")
    label = "native (second column, A/A)" if a.aa else "ghost"
    print(f"mgs_mpi n={a.n} repeat={a.repeat}, 2 ranks bound, {a.rounds} rounds: native {nat:.3f} s, "
          f"{label} {gho:.3f} s, ratio {gho / nat:.4f} ({(gho / nat - 1) * 100:+.2f} %); "
          f"load {open('/proc/loadavg').read().split()[0]}; output: {outputs.pop()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
