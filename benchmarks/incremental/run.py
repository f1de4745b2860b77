#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Incremental checkpoints: what one costs against a whole image, for a process of --mib MiB that
rewrites a given share of its pages every second (benchmarks/incremental/dirty.c).

For each rate (--rates, percent of the pages per second): the process is started under
`ghost launch`; a tracked whole image is taken, then --reps incremental checkpoints one second
apart (`ghost checkpoint --incremental`), then --reps whole ones one second apart (plain
`ghost checkpoint` into another directory); the ratio of the medians is reported with the bytes
written and the pages the process wrote in between. Last, the process is checkpointed --kill
incrementally and `ghost restart` of the chain is timed against a restart of the last whole image
(page cache warm for both).

    benchmarks/incremental/run.py [--build build] [--mib 1024] [--rates 1,10,50] [--reps 5] [--dir DIR]

Writes benchmarks/incremental/results/{results.csv,report.md}."""

import argparse
import csv
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def kv(line):
    return dict(t.split("=", 1) for t in line.split() if "=" in t)


def checkpoint(ghost, pid, d, incremental, kill=False):
    argv = [ghost, "checkpoint", "--dir", d] + (["--incremental"] if incremental else []) + \
        (["--kill"] if kill else []) + [str(pid)]
    t0 = time.monotonic()
    r = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    wall = time.monotonic() - t0
    if r.returncode != 0:
        sys.exit(f"incremental: {' '.join(argv)} failed: {r.stderr.strip()}")
    v = kv(r.stdout)
    v["wall_s"] = wall
    return v


def restart_time(ghost, image):
    """Seconds until `ghost restart` reports the process restored; the process is then killed."""
    t0 = time.monotonic()
    p = subprocess.Popen([ghost, "restart", "--new-pid", image], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    line = p.stderr.readline()
    took = time.monotonic() - t0
    m = re.search(r"restored pid=(\d+)", line)
    if not m:
        p.kill()
        sys.exit(f"incremental: restart of {image} failed: {line.strip()} {p.stderr.read().strip()}")
    os.kill(int(m.group(1)), signal.SIGKILL)
    p.wait()
    return took


def machine():
    cpu = "?"
    try:
        for l in open("/proc/cpuinfo"):
            if l.startswith("model name"):
                cpu = l.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    fsgs = "fsgsbase" in open("/proc/cpuinfo").read()
    return (f"{cpu}, {os.cpu_count()} cores, kernel {platform.release()}, "
            f"cpuinfo fsgsbase {'yes' if fsgs else 'no'}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--mib", type=int, default=1024)
    ap.add_argument("--rates", default="1,10,50")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--dir", default=None, help="where the images go (default: a directory under /work or /tmp)")
    a = ap.parse_args()
    ghost = os.path.join(a.build, "launcher", "ghost")
    dirty = os.path.join(a.build, "benchmarks", "incremental", "incremental_dirty")
    base = a.dir or tempfile.mkdtemp(prefix="ghost-incr-", dir="/work" if os.path.isdir("/work") else None)
    os.makedirs(base, exist_ok=True)
    fs = subprocess.run(["df", "--output=fstype,source", base], capture_output=True, text=True).stdout.split("\n")[1].strip()
    rows = []
    restarts = []
    for rate in [float(x) for x in a.rates.split(",")]:
        inc_dir, whole_dir = os.path.join(base, f"inc-{rate:g}"), os.path.join(base, f"whole-{rate:g}")
        for d in (inc_dir, whole_dir):
            shutil.rmtree(d, ignore_errors=True)
        pidf = os.path.join(base, "pid")
        if os.path.exists(pidf):
            os.unlink(pidf)
        p = subprocess.Popen([ghost, "launch", "--ckpt-dir", inc_dir, "--pid-file", pidf, "--", dirty, str(a.mib), str(rate)],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        if p.stdout.readline().strip() != "ready":
            sys.exit("incremental: the process did not get ready")
        pid = int(open(pidf).read().split()[0])
        first = checkpoint(ghost, pid, inc_dir, True)
        rows.append({"rate_pct_s": rate, "kind": "first (tracked whole)", **first})
        for kind, d, inc in (("incremental", inc_dir, True), ("whole", whole_dir, False)):
            for _ in range(a.reps):
                time.sleep(1.0)
                rows.append({"rate_pct_s": rate, "kind": kind, **checkpoint(ghost, pid, d, inc)})
        # Restart: the chain of the last incremental image against the last whole one.
        time.sleep(1.0)
        last = checkpoint(ghost, pid, inc_dir, True, kill=True)
        rows.append({"rate_pct_s": rate, "kind": "incremental --kill", **last})
        p.wait()
        chain = restart_time(ghost, os.path.join(inc_dir, "image.ghost"))
        whole = restart_time(ghost, os.path.join(whole_dir, "image.ghost"))
        restarts.append((rate, chain, whole, len([f for f in os.listdir(inc_dir) if f.endswith(".ghost")]) - 1))
    shutil.rmtree(base, ignore_errors=True)

    out = os.path.join(HERE, "results")
    os.makedirs(out, exist_ok=True)
    keys = ["rate_pct_s", "kind", "bytes", "memory_bytes", "referenced_bytes", "export_s", "sync_s", "total_s", "wall_s"]
    with open(os.path.join(out, "results.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow(r)
    med = lambda rs, k: statistics.median(float(r[k]) for r in rs)
    lines = [f"## Incremental checkpoints: {a.mib} MiB process rewriting a share of its pages every second",
             "",
             f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {machine()}; images on {fs}; "
             f"medians of {a.reps} checkpoints one second apart (the process keeps writing); seconds "
             "as `ghost checkpoint` reports them (total: park to resume, image fsync'd). A single "
             "process: no MPI call, so the FSGSBASE path does not enter.",
             "",
             "| rate (% of pages/s) | incremental: bytes | total_s | whole: bytes | total_s | time ratio | bytes ratio |",
             "|---|---|---|---|---|---|---|"]
    for rate in sorted({r["rate_pct_s"] for r in rows}):
        inc = [r for r in rows if r["rate_pct_s"] == rate and r["kind"] == "incremental"]
        whole = [r for r in rows if r["rate_pct_s"] == rate and r["kind"] == "whole"]
        bi, bw = med(inc, "bytes"), med(whole, "bytes")
        ti, tw = med(inc, "total_s"), med(whole, "total_s")
        lines.append(f"| {rate:g} | {bi / 1e6:.1f} MB | {ti:.3f} | {bw / 1e6:.1f} MB | {tw:.3f} | "
                     f"{ti / tw:.3f} | {bi / bw:.3f} |")
    lines += ["", "Restart (`ghost restart` until it reports the process restored, page cache warm):", "",
              "| rate | from the incremental chain | older images read | from a whole image | ratio |", "|---|---|---|---|---|"]
    for rate, chain, whole, n in restarts:
        lines.append(f"| {rate:g} | {chain:.3f} s | {n} | {whole:.3f} s | {chain / whole:.2f} |")
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
