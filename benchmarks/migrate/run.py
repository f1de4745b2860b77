#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Migration downtime (issue 11): `ghost migrate JOB --rank 1 --to HOST` of a 4-rank job whose ranks
hold M MiB of random data each (benchmarks/mpi_ckpt/ckpt_load hold), with the images streamed over
UCX (the default), through a directory on disk (the job's --ckpt-dir) and through one in memory
(/dev/shm), against a native `mpirun` start-up of the same program (what a relaunch cannot beat).
The job checks its memory at the end.

  run.py --build BUILD [--sizes 16,64,256] [--reps 3] [--host HOST] [--out results/migrate.md]

HOST defaults to this host's name (the emulated-host fixture, tests/hosts, gives others)."""

import argparse
import atexit
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "mpi_ckpt"))
from common import Job, kv, loadavg, machine, settle, stats  # noqa: E402


PHASES = ("quiesce_s", "export_s", "relaunch_s", "transfer_s", "reconnect_s", "downtime_s")


def VIAS(shm, mib):
    """(label, --via argument or None for the default) of each way the images travel."""
    return (("ucx", None), ("ucx --keep", "keep"), ("disk", "fs"), ("memory", f"fs:{shm}/via-{mib}"))


def migrate_job(a, j, ghost, shm, mib, stop, rows):
    """The migrations of one job (ranks of MIB MiB each), then its end (STOP: its stop file) and
    its memory check."""
    job = j.job_id()
    j.count_lines("ready rank", a.np, 300, "fill")
    for rep in range(a.reps):
        for via, how in VIAS(shm, mib):
            settle(2)
            cmd = [ghost, "migrate", job, "--rank", "1", "--to", a.host]
            if how == "keep":  # the ranks that stay keep their processes; rank 1 streams
                cmd += ["--keep"]
            elif how:
                cmd += ["--via", how]
            la = loadavg()
            t0 = time.monotonic()
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
            wall = time.monotonic() - t0
            if r.returncode != 0:
                sys.exit(f"migrate: {' '.join(cmd)} failed: {r.stderr.strip()}")
            f = kv(r.stdout)
            rows.append(dict(mib=mib, via=via, rep=rep, load=la, wall=wall,
                             **{k: float(f[k]) for k in PHASES if k in f}))
            print(f"{mib} MiB via {via}: {r.stdout.strip()}", flush=True)
    open(stop, "w").close()
    j.wait(300)
    verified = sum(1 for _, l in j.out if l.startswith("verified rank"))
    if verified != a.np:
        sys.exit(f"migrate: only {verified} of {a.np} ranks verified their memory after the migrations "
                 f"({mib} MiB): {[l for _, l in j.out if 'CORRUPT' in l]}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", required=True)
    ap.add_argument("--sizes", default="16,64,256")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--np", type=int, default=4)
    ap.add_argument("--host", default=socket.gethostname())
    ap.add_argument("--out", default=os.path.join(HERE, "results", "migrate.md"))
    a = ap.parse_args()
    b = os.path.abspath(a.build)
    ghostrun = os.path.join(b, "launcher", "ghostrun", "ghostrun")
    ghost = os.path.join(b, "launcher", "ghost")
    load = os.path.join(b, "benchmarks", "mpi_ckpt", "ckpt_load")
    for p in (ghostrun, ghost, load):
        if not os.access(p, os.X_OK):
            sys.exit(f"migrate: {p} is missing (build the project and its benchmarks first)")
    work = tempfile.mkdtemp(prefix="ghost-migrate-", dir="/var/tmp")
    shm = tempfile.mkdtemp(prefix="ghost-migrate-", dir="/dev/shm")
    # The images of every size stay until the end (two generations per directory): gone with
    # the run, failed or not (left in /dev/shm they held memory the next run needed).
    for d in (work, shm):
        atexit.register(shutil.rmtree, d, True)
    rows, startups = [], []

    for _ in range(a.reps):  # native start-up: mpirun until every rank is ready
        settle(1)
        t0 = time.monotonic()
        j = Job(["mpirun.openmpi", "-np", str(a.np), load, "hold", "--stop-file", f"{work}/stop0"])
        j.count_lines("ready rank", a.np, 120, "native start-up")
        startups.append(time.monotonic() - t0)
        open(f"{work}/stop0", "w").close()
        j.wait(120)
        os.unlink(f"{work}/stop0")

    for mib in [int(x) for x in a.sizes.split(",")]:
        stop = f"{work}/stop-{mib}"
        j = Job([ghostrun, "--ckpt-dir", f"{work}/ck-{mib}", "-np", str(a.np), load, "hold", "--mib",
                 str(mib), "--stop-file", stop])
        try:
            migrate_job(a, j, ghost, shm, mib, stop, rows)
        finally:
            if j.p.poll() is None:  # a failed step: the job goes, not left computing behind us
                j.kill()


    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    su = stats(startups)["median"]
    with open(a.out, "w") as o:
        o.write(f"## ghost migrate: rank 1 of {a.np} ranks to {a.host}\n\n")
        o.write(f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {machine(work)}; images over UCX "
                f"(tcp/shm here) for 'ucx', the job's --ckpt-dir for 'disk', /dev/shm for 'memory'. Open MPI (ob1). Each rank holds M MiB of random data; every rank verified it "
                f"after the migrations. Medians of {a.reps} migrations per row. Seconds.\n\n")
        o.write("| MiB per rank | images via | quiesce | export | relaunch | transfer | reconnect | downtime "
                "| relaunch / native mpirun start-up |\n|---|---|---|---|---|---|---|---|---|\n")
        for mib in sorted({r["mib"] for r in rows}):
            for via, _ in VIAS(shm, mib):
                sel = [r for r in rows if r["mib"] == mib and r["via"] == via]
                m = {k: stats([r[k] for r in sel])["median"] for k in PHASES if all(k in r for r in sel)}
                cell = [f"{m[k]:.3f}" if k in m else "–" for k in PHASES]
                o.write(f"| {mib} | {via} | {' | '.join(cell)} | {m['relaunch_s'] / su:.2f} |\n")
        o.write(f"\nNative `mpirun -np {a.np}` start-up of the same program (until every rank is ready): "
                f"median {su:.3f} s of {a.reps}. Load average at each migration: "
                f"{min(r['load'] for r in rows):.1f}-{max(r['load'] for r in rows):.1f}.\n\n")
        o.write("downtime = from the request until every rank is connected to the coordinator again. "
                "Through a directory (disk, memory): quiesce, every rank's image written (export), the old "
                "mpirun's end, then relaunch = the new mpirun, the restores, the new lower halves' "
                "MPI_Init. Over UCX: quiesce, relaunch = the new mpirun and each new rank's receiver "
                "ready, transfer = every image streamed from its old process into its new one, "
                "reconnect = the restores, the new lower halves' MPI_Init. Every rank is relaunched, "
                "not only the moved one, except with --keep: only rank 1 streams and is relaunched; "
                "the others keep their processes and take a fresh lower half in place during "
                "reconnect (see README.md).\n")
    print(f"written {a.out}")


if __name__ == "__main__":
    main()
