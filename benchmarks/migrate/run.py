#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Migration downtime (issue 11): `ghost migrate JOB --rank 1 --to HOST` of a 4-rank job whose ranks
hold M MiB of random data each (benchmarks/mpi_ckpt/ckpt_load hold), optionally rewriting W% of
their pages a second (--write-pct: rank 1, the one moved, does), with the images streamed over UCX (the default)
after a pre-copy (the default: the memory copied and put in place while the job runs, then what was written
since) or without one (--no-precopy), through a directory on disk (the job's --ckpt-dir) and through one in memory (/dev/shm); against a native
`mpirun` start-up of the same program (what a relaunch cannot beat) and `ucx_perftest` tag
bandwidth (tcp, 1 MiB messages), measured in the same run, for the issue's bound:
image / UCX bandwidth + native start-up + 100 ms. The job checks its memory (and every page's
version) at the end.

  run.py --build BUILD [--sizes 64,256,1024] [--reps 3] [--write-pct W] [--vias keep-precopy,keep]
         [--host HOST] [--out results/migrate.md]

HOST defaults to this host's name (the emulated-host fixture, tests/hosts, gives others)."""

import argparse
import importlib.util
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

_spec = importlib.util.spec_from_file_location(
    "image_ucx_run", os.path.join(os.path.dirname(HERE), "image_ucx", "run.py"))
_image_ucx = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_image_ucx)
perftest = _image_ucx.perftest  # ucx_perftest tag_bw, as benchmarks/image_ucx measures it


PHASES = ("precopy_bytes", "precopy_rounds", "bytes", "prepare_s", "precopy_s", "quiesce_s", "export_s", "relaunch_s",
          "transfer_s", "reconnect_s", "downtime_s", "total_s")
SHOWN = ("prepare_s", "precopy_s", "quiesce_s", "transfer_s", "export_s", "relaunch_s", "reconnect_s",
         "downtime_s", "total_s")
# label -> `ghost migrate` options, for --vias
ALL_VIAS = {
    "keep-precopy": ("ucx --keep (pre-copy)", ["--keep"]),
    "keep-precopy1": ("ucx --keep (pre-copy, 1 round)", ["--keep", "--precopy-rounds", "1"]),
    "keep": ("ucx --keep --no-precopy", ["--keep", "--no-precopy"]),
    "ucx-precopy": ("ucx (pre-copy)", []),
    "ucx": ("ucx --no-precopy", ["--no-precopy"]),
    "disk": ("disk", ["--via", "fs"]),
    "memory": ("memory", None),  # --via fs:<shm dir>
}


def VIAS(a, shm, mib):
    """(label, `ghost migrate` options) of each way the images travel."""
    out = []
    for name in a.vias.split(","):
        label, opts = ALL_VIAS[name]
        out.append((label, opts if opts is not None else ["--via", f"fs:{shm}/via-{mib}"]))
    return out


def migrate_job(a, j, ghost, shm, mib, stop, rows):
    """The migrations of one job (ranks of MIB MiB each), then its end (STOP: its stop file) and
    its memory check."""
    job = j.job_id()
    j.count_lines("ready rank", a.np, 300, "fill")
    for rep in range(a.reps):
        for via, opts in VIAS(a, shm, mib):
            settle(2)
            cmd = [ghost, "migrate", job, "--rank", "1", "--to", a.host] + opts
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
    if verified != a.np or any("CORRUPT" in l for _, l in j.out):
        sys.exit(f"migrate: only {verified} of {a.np} ranks verified their memory after the migrations "
                 f"({mib} MiB): {[l for _, l in j.out if 'CORRUPT' in l]}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", required=True)
    ap.add_argument("--sizes", default="64,256,1024")
    ap.add_argument("--write-pct", type=float, default=0)
    ap.add_argument("--vias", default="keep-precopy,keep,ucx,disk")
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
    rows, startups, ucx_bw = [], [], []

    for _ in range(a.reps):  # native start-up: mpirun until every rank is ready
        settle(1)
        t0 = time.monotonic()
        j = Job(["mpirun.openmpi", "-np", str(a.np), load, "hold", "--stop-file", f"{work}/stop0"])
        j.count_lines("ready rank", a.np, 120, "native start-up")
        startups.append(time.monotonic() - t0)
        open(f"{work}/stop0", "w").close()
        j.wait(120)
        os.unlink(f"{work}/stop0")

    for _ in range(a.reps):  # the bandwidth of the bound: ucx_perftest tag_bw, tcp loopback, 1 MiB
        settle(1)
        bw = perftest({"UCX_TLS": "tcp", "UCX_NET_DEVICES": "lo"}, 1 << 20, 1024)
        if bw:
            ucx_bw.append(bw)
    if not ucx_bw:
        sys.exit("migrate: ucx_perftest gave no bandwidth (apt-get install ucx-utils)")

    for mib in [int(x) for x in a.sizes.split(",")]:
        stop = f"{work}/stop-{mib}"
        j = Job([ghostrun, "--ckpt-dir", f"{work}/ck-{mib}", "-np", str(a.np), load, "hold", "--mib",
                 str(mib), "--write-pct", str(a.write_pct), "--writer", "1", "--stop-file", stop])
        try:
            migrate_job(a, j, ghost, shm, mib, stop, rows)
        finally:
            if j.p.poll() is None:  # a failed step: the job goes, not left computing behind us
                j.kill()


    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    su = stats(startups)["median"]
    bw = stats(ucx_bw)["median"]
    with open(a.out, "w") as o:
        o.write(f"## ghost migrate: rank 1 of {a.np} ranks to {a.host}"
                + (f", rank 1 rewriting {a.write_pct:g}% of its pages a second" if a.write_pct else "") + "\n\n")
        o.write(f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {machine(work)}; images over UCX "
                f"(tcp/shm here) for 'ucx', the job's --ckpt-dir for 'disk', /dev/shm for 'memory'. Open MPI (ob1). "
                f"Each rank holds M MiB of random data; every rank verified it (and each page's version) "
                f"after the migrations. Medians of {a.reps} migrations per row. Seconds; MB = 10^6 bytes.\n\n")
        o.write("| MiB per rank | images via | pre-copied MB | rounds | sent MB (stopped) | "
                + " | ".join(k[:-2] for k in SHOWN) + " | downtime min-max | bound | downtime / bound |\n|"
                + "---|" * (8 + len(SHOWN)) + "\n")
        for mib in sorted({r["mib"] for r in rows}):
            bound = mib * (1 << 20) / (bw * 1e9) + su + 0.1
            for via, _ in VIAS(a, shm, mib):
                sel = [r for r in rows if r["mib"] == mib and r["via"] == via]
                if not sel:
                    continue
                m = {k: stats([r[k] for r in sel])["median"] for k in PHASES if all(k in r for r in sel)}
                mb = lambda k: f"{m[k] / 1e6:.0f}" if k in m else "–"  # noqa: E731
                cell = [f"{m[k]:.3f}" if k in m else "–" for k in SHOWN]
                rounds = f"{m['precopy_rounds']:.0f}" if "precopy_rounds" in m else "–"
                down = [r["downtime_s"] for r in sel]
                o.write(f"| {mib} | {via} | {mb('precopy_bytes')} | {rounds} | {mb('bytes')} | {' | '.join(cell)} | "
                        f"{min(down):.3f}-{max(down):.3f} | {bound:.3f} | {m['downtime_s'] / bound:.2f} |\n")
        o.write(f"\nNative `mpirun -np {a.np}` start-up of the same program (until every rank is ready): "
                f"median {su:.3f} s of {a.reps}. `ucx_perftest -t tag_bw` (tcp, loopback, 1 MiB): median "
                f"{bw:.2f} GB/s of {len(ucx_bw)}. bound = M MiB / that bandwidth + native start-up + 0.1 s "
                f"(issue 11). Load average at each migration: "
                f"{min(r['load'] for r in rows):.1f}-{max(r['load'] for r in rows):.1f}.\n\n")
        o.write("downtime = the time the job was stopped: over UCX, from the quiesce until every rank is "
                "connected to the coordinator again (quiesce, transfer = what was not pre-copied streamed "
                "from the old process into the new one, reconnect = the restores and fresh lower halves); "
                "through a directory (disk, memory): from the request (quiesce, export = every image "
                "written, relaunch = the old mpirun's end, the new one, the restores, MPI_Init). Before "
                "the quiesce, while the job runs on (UCX only): prepare = the new mpirun and its "
                "receivers, precopy = rank 1's memory copied to its receiver and put in place in its new "
                "process; total = from the request. "
                "Without --keep every rank is relaunched (and pre-copies); with --keep only rank 1 "
                "(the others take a fresh lower half in place during reconnect, see README.md).\n")
    print(f"written {a.out}")


if __name__ == "__main__":
    main()
