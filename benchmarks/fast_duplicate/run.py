#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Fast duplicate benchmark: `ghost duplicate` of a process holding 64 MiB .. 1 GiB of random data
(benchmarks/fast_duplicate/dup_bench.c, two threads writing to it), by the fork path (as root: the
copy keeps the original's ids in a pid namespace of its own), by the fork path with --new-ids (the
copy's threads get new ids: the locks they hold are rewritten), by the export+restore path
(--via-image) and by it after a pre-copy (--via-image --precopy: the memory copied while the
original runs, then only what it wrote since while it is stopped), measured alternately in one run:

  park_ms   how long the original was stopped: ghost's own report (park_s for the fork path, the
            park-to-resume export_s for the image path) and the longest gap the original's main
            thread saw between two looks at the clock (gap_ms);
  copy_ms   from the start of `ghost duplicate` to the first look at the clock of the copy's main
            thread (CLOCK_MONOTONIC in both).
Beside them, in the same run, the floor: one plain fork() of a process holding as much written
memory (fork_floor.c): the call alone (a fork-path duplicate parks its original at least that
long) and with the child's exit and the waitpid.

    benchmarks/fast_duplicate/run.py [--build build] [--sizes 64,256,1024] [--reps 3]

Writes benchmarks/fast_duplicate/results/{results.csv,report.md} (the notes written by hand below
the table, from "## Notes" on, are kept). Not a test: it takes minutes."""

import argparse
import csv
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "mpi_ckpt"))
from common import write_report  # noqa: E402


def machine():
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1]) // 1024
    thp = open("/sys/kernel/mm/transparent_hugepage/enabled").read().strip()
    return (f"{cpu}, {os.cpu_count()} CPUs, {mem} MiB RAM, Linux {platform.release()}, "
            f"THP {thp}")


def read_until(path, pattern, timeout, alive=None):
    """The matches of `pattern` in the file once there are some; None after `timeout` s, or once
    the process `alive` (a Popen) has ended without them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(path) as f:
            m = re.findall(pattern, f.read())
        if m:
            return m
        if alive is not None and alive.poll() is not None:
            with open(path) as f:
                m = re.findall(pattern, f.read())
            return m or None
        time.sleep(0.002)
    return None


def one(ghost, bench, mib, via, work):
    out = os.path.join(work, "orig.out")
    launch = subprocess.Popen([ghost, "launch", "--ckpt-dir", os.path.join(work, "ckpt"), "--pid-file",
                               os.path.join(work, "pid"), "--", bench, "--mib", str(mib)],
                              stdout=open(out, "w"), stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        if not read_until(out, r"ready", 120):
            raise RuntimeError("the workload did not start")
        pid = int(open(os.path.join(work, "pid")).read())
        time.sleep(1.0)  # settle
        with open(out) as f:
            gaps_before = len(re.findall(r"gap (\d+)", f.read()))
        flags = {"image": ["--via-image"], "image --precopy": ["--via-image", "--precopy"],
                 "fork --new-ids": ["--new-ids"]}.get(via, [])
        argv = [ghost, "duplicate"] + flags + [str(pid)]
        t0 = time.monotonic_ns()
        r = subprocess.run(argv, capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            raise RuntimeError(f"ghost duplicate failed ({r.returncode}): {r.stderr.strip()}")
        m = re.search(r"copy (\d+)", r.stdout)
        if not m:
            raise RuntimeError(f"the copy did not report: {r.stdout!r} {r.stderr!r}")
        copy_ms = (int(m.group(1)) - t0) / 1e6
        rep = r.stderr
        if via.startswith("fork"):
            if "via=fork" not in rep:
                raise RuntimeError(f"not the fork path: {rep.strip()}")
            park_ms = float(re.search(r"park_s=([\d.]+)", rep).group(1)) * 1000
        else:
            park_ms = float(re.search(r"export_s=([\d.]+)", rep).group(1)) * 1000
        time.sleep(0.3)
        with open(out) as f:
            gaps = [int(g) for g in re.findall(r"gap (\d+)", f.read())][gaps_before:]
        gap_ms = max(gaps) / 1000 if gaps else 1.0  # below the 1 ms the workload reports
        return park_ms, gap_ms, copy_ms
    finally:
        os.killpg(launch.pid, signal.SIGKILL)
        launch.wait()


def fork_floor(exe, mib):
    """(fork() call ms, fork + child exit + waitpid ms, the same with the child reading its memory
    once through /proc/self/mem) of plain forks."""
    out = subprocess.run([exe, str(mib), "1"], capture_output=True, text=True, check=True, timeout=300).stdout
    _, call, whole, read = out.split()
    return float(call), float(whole), float(read)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--sizes", default="64,256,1024")
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    ghost = os.path.join(a.build, "launcher", "ghost")
    bench = os.path.join(a.build, "benchmarks", "fast_duplicate", "dup_bench")
    floor = os.path.join(a.build, "benchmarks", "fast_duplicate", "fork_floor")
    res = os.path.join(HERE, "results")
    os.makedirs(res, exist_ok=True)
    rows = []
    for mib in [int(s) for s in a.sizes.split(",")]:
        for rep in range(a.reps):
            for via in ("fork", "fork --new-ids", "image", "image --precopy"):
                with tempfile.TemporaryDirectory(prefix="ghost-fastdup-") as work:
                    park, gap, copy = one(ghost, bench, mib, via, work)
                print(f"{mib:5d} MiB {via:15s} rep {rep}: park {park:8.1f} ms (gap seen {gap:8.1f} ms), "
                      f"copy runs after {copy:8.1f} ms", flush=True)
                rows.append({"mib": mib, "via": via, "rep": rep, "park_ms": round(park, 2),
                             "gap_ms": round(gap, 2), "copy_ms": round(copy, 2)})
            call, whole, read = fork_floor(floor, mib)
            print(f"{mib:5d} MiB fork() rep {rep}: the call {call:8.1f} ms, with exit and wait {whole:8.1f} ms, "
                  f"with a read of the child's memory {read:8.1f} ms", flush=True)
            rows.append({"mib": mib, "via": "plain fork()", "rep": rep, "park_ms": call, "gap_ms": "",
                         "copy_ms": whole})
            rows.append({"mib": mib, "via": "plain fork() + one read", "rep": rep, "park_ms": call,
                         "gap_ms": "", "copy_ms": read})
    with open(os.path.join(res, "results.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    lines = ["# Fast duplicate: fork path vs export+restore path", "",
             f"Machine: {machine()}.", "",
             f"Command: `benchmarks/fast_duplicate/run.py --sizes {a.sizes} --reps {a.reps}` "
             "(medians; every run in results.csv). park = ghost's report of how long the original "
             "was stopped; gap = the longest stop the original's main thread saw itself (1.0 = "
             "below its 1 ms threshold); copy = from the start of `ghost duplicate` (a new process, "
             "its own start-up included) until the copy's main thread runs. plain fork() = "
             "fork_floor.c in the same run: one fork() of a process with as much written memory, "
             "the call alone (park column) and with the child's exit and the waitpid (copy column); "
             "+ one read: the child also reads all its memory once through /proc/self/mem, as the "
             "copy's lock-owner scan does (the floor of a copy whose threads get new ids).", "",
             "| MiB | path | park ms | gap ms | copy runs after ms |", "|---:|---|---:|---:|---:|"]
    for mib in sorted({r["mib"] for r in rows}):
        for via in ("fork", "fork --new-ids", "image", "image --precopy", "plain fork()",
                    "plain fork() + one read"):
            sel = [r for r in rows if r["mib"] == mib and r["via"] == via]
            med = {k: statistics.median(r[k] for r in sel) if sel[0][k] != "" else None
                   for k in ("park_ms", "gap_ms", "copy_ms")}
            gap = f"{med['gap_ms']:.1f}" if med["gap_ms"] is not None else "–"
            lines.append(f"| {mib} | {via} | {med['park_ms']:.1f} | {gap} | {med['copy_ms']:.1f} |")
    write_report(os.path.join(res, "report.md"), lines)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
