#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""The MGS evaluation for the MPI program: mgs_mpi at 4 ranks under ghostrun, for each matrix size the
job's image size (sum over the ranks) and the time to checkpoint (`ghost checkpoint JOB --dir D
--kill`) and restart (`ghost restart D` until every rank is running again) to disk and to memory
(a tmpfs directory), next to the sequential evaluation's plots.

    benchmarks/mgs/mpi_eval.py [--build build] [--sizes 500,1000,2000,3000] [--ranks 4]
                               [--reps 1] [--disk-dir DIR] [--mem-dir DIR]

Writes benchmarks/mgs/results/{mpi_ckpt.csv,mpi_ckpt.md,mpi_image_size.png,mpi_ckpt_restart.png}.
Each job holds (`--hold`) after its computation with both matrices resident; the checkpoint is
taken there; the restored job is released with SIGUSR1 to every rank, verifies Q and prints its
line, which must be the same for the disk and the memory restart and have error < 1e-8. Needs root
(the page cache is dropped before a restart from disk)."""

import argparse
import csv
import os
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
sys.path.insert(0, os.path.join(ROOT, "benchmarks", "mpi_ckpt"))
from common import Job, die, drop_caches, kv, loadavg, machine, settle  # noqa: E402


def ghost_status(ghost, jid):
    r = subprocess.run([ghost, "status", jid], capture_output=True, text=True)
    return re.findall(r"^  rank (\d+)\s+pid (\d+)\s+host \S+\s+(\S+)$", r.stdout, re.M)


def one(args, ghost, ghostrun, mgs, n, where, d):
    ck = os.path.join(d, f"mgs-{n}")
    shutil.rmtree(ck, ignore_errors=True)
    job = Job([ghostrun, "--ckpt-dir", ck, "-np", str(args.ranks), mgs, "--n", str(n), "--hold", "600"])
    try:
        jid = job.job_id()
        job.wait_for(lambda o, e: sum("holding after the computation" in l for _, l in e) >= args.ranks,
                     900, f"n={n}: every rank holding")
        settle()
        t0 = time.monotonic()
        r = subprocess.run([ghost, "checkpoint", jid, "--dir", ck, "--kill"], capture_output=True, text=True)
        wall = time.monotonic() - t0
        if r.returncode != 0:
            raise RuntimeError(f"n={n} {where}: ghost checkpoint --kill: {r.stderr.strip()}")
        rc = job.wait(60)
        if rc != 75:
            raise RuntimeError(f"n={n} {where}: ghostrun exited {rc} after checkpoint --kill")
    finally:
        if job.p.poll() is None:
            job.kill()
    c = kv(r.stdout)
    if where == "disk":
        drop_caches()
    else:
        settle()
    t0 = time.monotonic()
    rj = Job([ghost, "restart", ck])
    try:
        rjid = rj.job_id()
        deadline = time.monotonic() + 300
        while True:
            st = ghost_status(ghost, rjid)
            if len(st) == args.ranks and all(s == "running" for _, _, s in st):
                break
            if time.monotonic() > deadline or rj.p.poll() is not None:
                raise RuntimeError(f"n={n} {where}: restarted ranks not running: {st} {rj.tail()}")
            time.sleep(0.005)
        restart = time.monotonic() - t0
        for _, pid, _ in st:
            os.kill(int(pid), signal.SIGUSR1)
        rc = rj.wait(900)
        line = [l for _, l in rj.out if l.startswith("mgs_mpi ")]
        if rc != 0 or not line:
            raise RuntimeError(f"n={n} {where}: restarted job exited {rc}, output {rj.out} {rj.tail()}")
    finally:
        if rj.p.poll() is None:
            rj.kill()
    shutil.rmtree(ck, ignore_errors=True)
    err = float(kv(line[0])["error"])
    if err > 1e-8:
        raise RuntimeError(f"n={n} {where}: restored job's error {err}")
    return dict(n=n, where=where, ranks=args.ranks, bytes=int(c["bytes"]), matrix_bytes=16 * n * n,
                ckpt_wall_s=wall, ckpt_total_s=float(c["total_s"]), quiesce_s=float(c["quiesce_s"]),
                export_s=float(c["export_s"]), sync_s=float(c["sync_s"]), restart_s=restart,
                output=line[0], load=loadavg())


def plots(rows, out):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("mpi_eval: matplotlib missing, no plots", file=sys.stderr)
        return
    ns = sorted({r["n"] for r in rows})

    def med(n, where, k):
        xs = [r[k] for r in rows if r["n"] == n and r["where"] == where]
        return statistics.median(xs) if xs else float("nan")

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(ns, [med(n, "disk", "bytes") / 2**20 for n in ns], "o-", label="image (sum over 4 ranks)")
    ax.plot(ns, [16 * n * n / 2**20 for n in ns], "--", label="two n×n double matrices")
    ax.set_xlabel("matrix size n")
    ax.set_ylabel("MiB")
    ax.set_title("mgs_mpi, 4 ranks: job image size")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "mpi_image_size.png"), dpi=110)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 4))
    for where, mark in (("disk", "o"), ("memory", "s")):
        ax.plot(ns, [med(n, where, "ckpt_wall_s") for n in ns], mark + "-", label=f"checkpoint to {where}")
        ax.plot(ns, [med(n, where, "restart_s") for n in ns], mark + "--", label=f"restart from {where}")
    ax.set_xlabel("matrix size n")
    ax.set_ylabel("seconds")
    ax.set_title("mgs_mpi, 4 ranks: job checkpoint and restart (medians)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "mpi_ckpt_restart.png"), dpi=110)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--sizes", default="500,1000,2000,3000")
    ap.add_argument("--ranks", type=int, default=4)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--disk-dir", default=None)
    ap.add_argument("--mem-dir", default=None, help="a tmpfs directory (default: one in /dev/shm)")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    args = ap.parse_args()
    if os.geteuid() != 0:
        die("needs root (drop_caches)")
    b = os.path.abspath(args.build)
    ghost, ghostrun = os.path.join(b, "launcher", "ghost"), os.path.join(b, "launcher", "ghostrun", "ghostrun")
    mgs = os.path.join(b, "benchmarks", "mgs", "mgs_mpi")
    for exe in (ghost, ghostrun, mgs):
        if not os.access(exe, os.X_OK):
            die(f"{exe} is missing: build first")
    try:
        sizes = [int(s) for s in args.sizes.split(",")]
    except ValueError:
        die(f"bad --sizes {args.sizes!r}")
    own = []
    disk = args.disk_dir or tempfile.mkdtemp(prefix="ghost-mgs-mpi-", dir=ROOT)
    mem = args.mem_dir or tempfile.mkdtemp(prefix="ghost-mgs-mpi-", dir="/dev/shm")
    own += [p for p, a in ((disk, args.disk_dir), (mem, args.mem_dir)) if a is None]
    for p in own:
        os.chmod(p, 0o700)
    rows = []
    info = dict(machine=machine(disk), mem_fs=machine(mem).split("filesystem of")[-1],
                start=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), load_at_start=loadavg())
    try:
        for n in sizes:
            for rep in range(args.reps):
                order = ("disk", "memory") if rep % 2 == 0 else ("memory", "disk")
                for where in order:
                    row = one(args, ghost, ghostrun, mgs, n, where, disk if where == "disk" else mem)
                    row["rep"] = rep
                    rows.append(row)
                    print(", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                                    for k, v in row.items()), flush=True)
            outs = {r["output"] for r in rows if r["n"] == n}
            if len(outs) != 1:
                raise RuntimeError(f"n={n}: the restored jobs printed different lines: {outs}")
    finally:
        for p in own:
            shutil.rmtree(p, ignore_errors=True)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "mpi_ckpt.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        w.writeheader()
        w.writerows(rows)
    plots(rows, args.out)
    lines = [f"# mgs_mpi at {args.ranks} ranks: job image size, checkpoint and restart", "",
             f"Run {info['start']} (load average {info['load_at_start']:.2f} at start, "
             f"{loadavg():.2f} at the end); {info['machine']}; memory dir:{info['mem_fs']}. "
             f"{args.reps} repetition(s) per size and target; shared 2-core VM (other helpers' jobs "
             "running): noisy.", "",
             "| n | 16n² MiB | image MiB (sum) | image / 16n² | target | checkpoint s (wall) | "
             "quiesce / export / sync s | restart s (→ every rank running) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['n']} | {r['matrix_bytes'] / 2**20:.1f} | {r['bytes'] / 2**20:.1f} | "
                     f"{r['bytes'] / r['matrix_bytes']:.2f} | {r['where']} | {r['ckpt_wall_s']:.3f} | "
                     f"{r['quiesce_s']:.3f} / {r['export_s']:.3f} / {r['sync_s']:.3f} | {r['restart_s']:.3f} |")
    lines += ["", "Checkpoint: `ghost checkpoint JOB --dir D --kill` from start to exit, with every rank "
              "holding after its computation (both matrices resident), images durable (fsync'd; on "
              "tmpfs fsync is free). Restart: `ghost restart D` (page cache dropped first for disk) "
              "until `ghost status` shows every rank of the new job `running` (reconnected to its "
              "coordinator after the restore), polled every 5 ms. Every restored job was then released "
              "and verified Q (error < 1e-8, the same line from the disk and the memory restart). "
              "Image = sum of the 4 rank images (each also carries its MPI library's upper-half state, "
              "code pages it changed, and its share of the matrices).", "",
              "![image size](mpi_image_size.png) ![checkpoint and restart](mpi_ckpt_restart.png)"]
    with open(os.path.join(args.out, "mpi_ckpt.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
