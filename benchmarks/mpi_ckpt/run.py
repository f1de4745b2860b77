#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Job checkpoint benchmark (issue 10, "Speed"): quiescence latency, checkpoint/restart of a job
against dd and a native start-up, and the cost of ghostrun --interval.

    benchmarks/mpi_ckpt/run.py [--build build] [--what quiesce,io,interval] [--dir DIR]
                               [--requests 20] [--checkpoints 5] [--reps 3] [--interval-pairs 3]

  quiesce   8 ranks of ckpt_load in each state (compute, coll, recv) and of mgs_mpi; --requests
            `ghost quiesce JOB` (0.2-0.5 s apart) and --checkpoints `ghost checkpoint JOB` (to
            /dev/shm); the coordinator's phase times and the command's wall time
  io        4 ranks x 256 MiB of random data: `ghost checkpoint JOB --dir D --kill` against dd of
            the same 1 GiB with conv=fsync into D, alternately; `ghost restart D` (page cache
            dropped) until every rank has run a loop again, against a native `mpirun` start-up of
            the same program plus 1.25x a cold read of the images
  interval  mgs_mpi, 4 ranks, under ghostrun with and without --interval 10, alternately: the
            extra time against the sum of the checkpoint times ghostrun reports

Writes benchmarks/mpi_ckpt/results/{quiesce.csv,io.csv,interval.csv,<section>.md}; report.py
(called at the end) joins the sections into report.md. Needs root (drop_caches)."""

import argparse
import csv
import glob
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import HERE, ROOT, Job, die, drop_caches, kv, loadavg, machine, settle, stats  # noqa: E402


class Tools:
    def __init__(self, build):
        self.ghost = os.path.join(build, "launcher", "ghost")
        self.ghostrun = os.path.join(build, "launcher", "ghostrun", "ghostrun")
        self.load = os.path.join(build, "benchmarks", "mpi_ckpt", "ckpt_load")
        self.mgs = os.path.join(build, "benchmarks", "mgs", "mgs_mpi")
        for exe in (self.ghost, self.ghostrun, self.load, self.mgs):
            if not os.access(exe, os.X_OK):
                die(f"{exe} is missing: build first (cmake -S . -B {build} -G Ninja && ninja -C {build})")

    def ghost_cmd(self, *args, timeout=300):
        pre = []
        if args and args[0] == "nice":
            pre, args = list(args[:3]), args[3:]
        t0 = time.monotonic()
        r = subprocess.run([*pre, self.ghost, *args], capture_output=True, text=True, timeout=timeout)
        return r, time.monotonic() - t0


def write_csv(path, rows):
    if not rows:
        return
    keys = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)


# ---------------------------------------------------------------- quiescence

# name: (ranks, argv). "compute, 2 ranks" gives each rank a core of its own (not oversubscribed).
QUIESCE_WORKLOADS = {
    "compute": (8, lambda t: [t.load, "compute", "--period-ms", "100"]),
    "collectives": (8, lambda t: [t.load, "coll"]),
    "recv": (8, lambda t: [t.load, "recv", "--period-ms", "200"]),
    "mgs_mpi": (8, lambda t: [t.mgs, "--n", "1200", "--repeat", "1000"]),
    "compute, 2 ranks": (2, lambda t: [t.load, "compute", "--period-ms", "100"]),
}
# Rows run with `nice -n -10` (job and command), which on a machine shared with other work
# approximates one where the job has the cores to itself.
NICE_WORKLOADS = {"compute, nice -10": "compute", "compute, 2 ranks, nice -10": "compute, 2 ranks"}


def quiesce_section(t, args, out):
    rows = []
    shm = tempfile.mkdtemp(prefix="ghost-qbench-", dir="/dev/shm")
    os.chmod(shm, 0o700)
    try:
        runs = [(n, w, []) for n, w in QUIESCE_WORKLOADS.items()]
        if args.nice:
            runs += [(n, QUIESCE_WORKLOADS[b], ["nice", "-n", "-10"]) for n, b in NICE_WORKLOADS.items()]
        for name, (np_, argv), prefix in runs:
            ck = os.path.join(shm, name.replace(",", "").replace(" ", "-"))
            job = Job([*prefix, t.ghostrun, "--ckpt-dir", ck, "-np", str(np_), *argv(t)])
            try:
                jid = job.job_id()
                if name != "mgs_mpi":
                    job.count_lines("ready rank", np_, 120, f"{name}: every rank ready")
                time.sleep(2.0)
                la = loadavg()
                kinds = ["quiesce"] * args.requests + ["checkpoint"] * args.checkpoints
                for i, kind in enumerate(kinds):
                    time.sleep(random.uniform(0.2, 0.5))
                    if kind == "quiesce":
                        r, wall = t.ghost_cmd(*prefix, "quiesce", jid)
                    else:
                        r, wall = t.ghost_cmd(*prefix, "checkpoint", jid, "--dir", ck)
                    if r.returncode != 0:
                        raise RuntimeError(f"{name}: ghost {kind} {jid}: {r.stderr.strip()}")
                    m = kv(r.stdout)
                    row = dict(workload=name, ranks=np_, kind=kind, i=i, wall_s=round(wall, 6), load=la)
                    for k in ("quiesce_s", "drain_s", "total_s", "clock_rounds", "drained", "export_s",
                              "sync_s", "bytes"):
                        if k in m:
                            row[k] = m[k]
                    rows.append(row)
                    print(f"quiesce {name} {kind} {i}: {r.stdout.strip()} wall={wall:.4f}", flush=True)
            finally:
                job.kill()
                shutil.rmtree(ck, ignore_errors=True)
    finally:
        shutil.rmtree(shm, ignore_errors=True)
    write_csv(os.path.join(out, "quiesce.csv"), rows)
    lines = ["## Quiescence, 8 ranks (and 2)", "",
             f"{args.requests} `ghost quiesce JOB` and {args.checkpoints} `ghost checkpoint JOB` "
             "(to /dev/shm) requests per workload, 0.2-0.5 s apart (random), 8 ranks on "
             f"{os.cpu_count()} cores (oversubscribed; the 2-rank rows: a core each; nice -10: job and commands under `nice -n -10`, taking precedence over the rest of the shared machine). "
             "Milliseconds, median / p90 / max.", "",
             "| workload | ranks | requests | quiesce (request → every rank's counts) | drain | "
             "quiesce + drain (→ every rank parked) | total (→ resumed) "
             "| command wall | clock rounds (median) | checkpoint: quiesce+drain | checkpoint total |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]

    def f(xs):
        s = stats([float(x) * 1000 for x in xs])
        return f"{s['median']:.1f} / {s['p90']:.1f} / {s['max']:.1f}"

    def parked(q):
        return [float(r["quiesce_s"]) + float(r["drain_s"]) for r in q]

    for name, np_ in [(n, w[0]) for n, w in QUIESCE_WORKLOADS.items()] + \
            [(n, QUIESCE_WORKLOADS[b][0]) for n, b in NICE_WORKLOADS.items()]:
        q = [r for r in rows if r["workload"] == name and r["kind"] == "quiesce"]
        c = [r for r in rows if r["workload"] == name and r["kind"] == "checkpoint"]
        if not q:
            continue
        rounds = stats([float(r["clock_rounds"]) for r in q])["median"]
        lines.append(f"| {name} | {np_} | {len(q)} | {f([r['quiesce_s'] for r in q])} | "
                     f"{f([r['drain_s'] for r in q])} | {f(parked(q))} | {f([r['total_s'] for r in q])} | "
                     f"{f([r['wall_s'] for r in q])} | {rounds:g} | "
                     f"{f([r['quiesce_s'] for r in c]) if c else '-'} | "
                     f"{f([r['total_s'] for r in c]) if c else '-'} |")
    lines += ["", "By number of collective-clock rounds (quiesce + drain, ms, median / p90 / max): "
              "one round = every rank was at a safe point of the same collective count; more = some "
              "ranks were already inside the next collective and the others had to run forward to it "
              "(finish their compute chunk) first.", ""]
    for name in [*QUIESCE_WORKLOADS, *NICE_WORKLOADS]:
        q = [r for r in rows if r["workload"] == name and r["kind"] == "quiesce"]
        if not q:
            continue
        by = {}
        for r in q:
            by.setdefault(int(r["clock_rounds"]), []).append(r)
        lines.append(f"- {name}: " + "; ".join(f"{k} round{'s' if k > 1 else ''}: {len(v)} requests, {f(parked(v))}"
                                              for k, v in sorted(by.items())))
    for name in ("compute", "compute, 2 ranks", *NICE_WORKLOADS):
        comp = parked([r for r in rows if r["workload"] == name and r["kind"] == "quiesce"])
        if comp:
            med = stats(comp)["median"] * 1000
            lines += ["", f"Target (issue 10): request → every rank parked ≤ 10 ms median when ranks "
                      f"compute ({name}): quiesce + drain median **{med:.1f} ms** — "
                      f"{'met' if med <= 10 else 'not met'}."]
    lines += ["", "Phases (coordinator's clock): quiesce = request until every rank has reported its "
              "message counts (parked at a safe point, collective clocks agreed); drain = until every "
              "in-flight message has been received into the layer; total = until every rank was told "
              "to resume. `ghost checkpoint`'s quiesce_s is quiesce + drain. command wall = the "
              "`ghost quiesce` process from start to exit (connect, request, answer)."]
    return lines


# ---------------------------------------------------------------- image I/O and restart

def io_section(t, args, out):
    d = args.dir
    ck = os.path.join(d, "ckpt")
    stop = os.path.join(d, "stop")
    src = os.path.join(d, "random.src")
    mib, np_ = args.mib, 4
    subprocess.run(["dd", "if=/dev/urandom", f"of={src}", "bs=1M", f"count={mib * np_}"], check=True,
                   capture_output=True)
    subprocess.run(["cat", src], stdout=subprocess.DEVNULL, check=True)  # hot in the page cache
    rows = []

    def ghost_ckpt():
        shutil.rmtree(ck, ignore_errors=True)
        if os.path.exists(stop):
            os.unlink(stop)
        job = Job([t.ghostrun, "--ckpt-dir", ck, "-np", str(np_), t.load, "hold", "--mib", str(mib),
                   "--stop-file", stop])
        try:
            jid = job.job_id()
            job.count_lines("ready rank", np_, 180, "every rank ready")
            settle()
            r, wall = t.ghost_cmd("checkpoint", jid, "--dir", ck, "--kill")
            if r.returncode != 0:
                raise RuntimeError(f"ghost checkpoint --kill: {r.stderr.strip()}")
            rc = job.wait(60)
            if rc != 75:
                raise RuntimeError(f"ghostrun exited {rc} after checkpoint --kill, expected 75")
        finally:
            if job.p.poll() is None:
                job.kill()
        m = kv(r.stdout)
        m["wall_s"] = wall
        return m

    def dd_write():
        settle()
        t0 = time.monotonic()
        subprocess.run(["dd", f"if={src}", f"of={os.path.join(d, 'dd.out')}", "bs=4M", "conv=fsync"],
                       check=True, capture_output=True)
        return time.monotonic() - t0

    def dd_direct():
        settle()
        t0 = time.monotonic()
        subprocess.run(["dd", f"if={src}", f"of={os.path.join(d, 'dd.out')}", "bs=4M", "oflag=direct",
                        "conv=fsync"], check=True, capture_output=True)
        return time.monotonic() - t0

    def restart():
        drop_caches()
        t0 = time.monotonic()
        job = Job([t.ghost, "restart", ck])
        try:
            t_run = job.count_lines("resumed rank", np_, 180, "every restored rank ran a loop")
            job.job_id()
            t_job = min(t for t, l in job.err if l.startswith("ghostrun: job "))
            open(stop, "w").close()
            job.count_lines("verified rank", np_, 60, "every restored rank verified its memory")
            rc = job.wait(60)
            if rc != 0 or any(l.startswith("CORRUPT") for _, l in job.out):
                raise RuntimeError(f"restarted job: status {rc}, output {job.out}")
        finally:
            if job.p.poll() is None:
                job.kill()
            if os.path.exists(stop):
                os.unlink(stop)
        return t_run - t0, t_job - t0

    def cold_read():
        imgs = sorted(glob.glob(os.path.join(ck, "latest", "rank*.ghost")) or
                      glob.glob(os.path.join(ck, "gen-*", "rank*.ghost")))
        drop_caches()
        t0 = time.monotonic()
        for f in imgs:
            subprocess.run(["dd", f"if={f}", "of=/dev/null", "bs=4M"], check=True, capture_output=True)
        return time.monotonic() - t0

    def native_start(runner):
        settle(1.0)
        if os.path.exists(stop):
            os.unlink(stop)
        t0 = time.monotonic()
        job = Job([*runner, "-np", str(np_), t.load, "hold", "--stop-file", stop])
        try:
            t_ready = job.count_lines("ready rank", np_, 120, "native start-up")
            open(stop, "w").close()
            job.wait(60)
        finally:
            if job.p.poll() is None:
                job.kill()
            os.unlink(stop)
        return t_ready - t0

    try:
        for rep in range(args.reps):
            la = loadavg()
            if rep % 2 == 0:
                c = ghost_ckpt()
                ddw = dd_write()
                ddd = dd_direct()
                rs, rj = restart()
                cr = cold_read()
                ns = native_start(["mpirun"])
                gs = native_start([t.ghostrun])
            else:
                ddd = dd_direct()
                ddw = dd_write()
                c = ghost_ckpt()
                cr = cold_read()
                rs, rj = restart()
                gs = native_start([t.ghostrun])
                ns = native_start(["mpirun"])
            row = dict(rep=rep, load=la, ranks=np_, mib_per_rank=mib, bytes=int(c["bytes"]),
                       ckpt_total_s=float(c["total_s"]), ckpt_quiesce_s=float(c["quiesce_s"]),
                       ckpt_export_s=float(c["export_s"]), ckpt_sync_s=float(c["sync_s"]),
                       ckpt_wall_s=c["wall_s"], dd_write_s=ddw, dd_direct_write_s=ddd, restart_s=rs, restart_job_s=rj, cold_read_s=cr,
                       mpirun_start_s=ns, ghostrun_start_s=gs)
            rows.append(row)
            print("io " + ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                                    for k, v in row.items()), flush=True)
    finally:
        for p in (src, os.path.join(d, "dd.out")):
            if os.path.exists(p):
                os.unlink(p)
        shutil.rmtree(ck, ignore_errors=True)
    write_csv(os.path.join(out, "io.csv"), rows)

    def med(k):
        return stats([r[k] for r in rows])["median"]

    ck_r = stats([r["ckpt_wall_s"] / r["dd_write_s"] for r in rows])["median"]
    ref = [r["mpirun_start_s"] + 1.25 * r["cold_read_s"] for r in rows]
    rs_r = stats([r["restart_s"] / x for r, x in zip(rows, ref)])["median"]
    lines = [f"## Checkpoint and restart of {np_} ranks x {mib} MiB of random data", "",
             f"Medians of {len(rows)} repetitions; ghost and its reference alternate (order flipped "
             "every repetition), each timed step after a 3 s pause. Seconds.", "",
             "| image bytes | checkpoint (command wall) | phases: quiesce / export / sync / total | "
             "dd write+fsync of the same bytes | ratio (median of per-rep ratios) | dd oflag=direct "
             "+fsync | ratio |",
             "|---|---|---|---|---|---|---|",
             f"| {int(med('bytes'))} | {med('ckpt_wall_s'):.3f} | {med('ckpt_quiesce_s'):.3f} / "
             f"{med('ckpt_export_s'):.3f} / {med('ckpt_sync_s'):.3f} / {med('ckpt_total_s'):.3f} | "
             f"{med('dd_write_s'):.3f} | **{ck_r:.2f}** | {med('dd_direct_write_s'):.3f} | "
             f"{stats([r['ckpt_wall_s'] / r['dd_direct_write_s'] for r in rows])['median']:.2f} |", "",
             "| restart (cold cache) → every rank ran a loop | of which → `ghostrun: job` line (checks "
             "before launch, ghostrun and mpirun start, every rank's image verified by its restorer) "
             "| mpirun start-up | ghostrun start-up | "
             "cold read of the images | mpirun + 1.25 x read | ratio |",
             "|---|---|---|---|---|---|---|",
             f"| {med('restart_s'):.3f} | {med('restart_job_s'):.3f} | {med('mpirun_start_s'):.3f} | {med('ghostrun_start_s'):.3f} | "
             f"{med('cold_read_s'):.3f} | {stats(ref)['median']:.3f} | **{rs_r:.2f}** |", "",
             "Every repetition (load = 1-minute load average at its start):", "",
             "| rep | load | checkpoint | dd | dd direct | restart | mpirun start-up | cold read |",
             "|---|---|---|---|---|---|---|---|",
             *[f"| {r['rep']} | {r['load']:.1f} | {r['ckpt_wall_s']:.3f} | {r['dd_write_s']:.3f} | "
               f"{r['dd_direct_write_s']:.3f} | {r['restart_s']:.3f} | {r['mpirun_start_s']:.3f} | "
               f"{r['cold_read_s']:.3f} |" for r in rows], "",
             f"Targets (issue 10): checkpoint within 1.25x of dd — {'met' if ck_r <= 1.25 else 'not met'} "
             f"({ck_r:.2f}); restart within native start-up + 1.25x cold read — "
             f"{'met' if rs_r <= 1.0 else 'not met'} ({rs_r:.2f}).", "",
             "checkpoint = `ghost checkpoint JOB --dir D --kill` from start to exit (the images and "
             "manifest durable); its phases as it prints them (quiesce includes the drain; export = "
             "the slowest rank's image write, sync = fsyncs, manifest, publication). dd = `dd "
             "if=<1 GiB file of /dev/urandom bytes, in the page cache> of=D/dd.out bs=4M conv=fsync` "
             "(through the page cache, as the issue states it; ghost writes its images with O_DIRECT "
             "where the filesystem allows it, so `oflag=direct` is the like-for-like reference). "
             "restart = from `ghost restart D` (page cache dropped) until the last rank printed "
             "`resumed rank R` (its first loop after the restore: a 20 ms sleep and an MPI_Allreduce "
             "with every other rank; the line comes through mpirun's output forwarding); the restored "
             "ranks then check all their memory. start-up = `mpirun -np 4` (resp. `ghostrun -np 4`) "
             "of the same program without the fill, until every rank printed `ready`. cold read = "
             "`dd` of each rank image to /dev/null one after the other, page cache dropped."]
    return lines


# ---------------------------------------------------------------- --interval

def interval_section(t, args, out):
    d = args.dir
    rows = []
    argv = [t.mgs, "--n", str(args.interval_n), "--repeat", str(args.interval_repeat)]
    if os.path.exists(os.path.join(out, "interval-ghostrun.log")):
        os.unlink(os.path.join(out, "interval-ghostrun.log"))
    ref_out = None
    for pair in range(args.interval_pairs):
        order = ("plain", "interval") if pair % 2 == 0 else ("interval", "plain")
        for kind in order:
            ck = os.path.join(d, f"ick-{kind}")
            shutil.rmtree(ck, ignore_errors=True)
            settle()
            la = loadavg()
            extra = ["--interval", str(args.interval)] if kind == "interval" else []
            ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.monotonic()
            job = Job([t.ghostrun, "--ckpt-dir", ck, *extra, "-np", "4", *argv])
            rc = job.wait(1800)
            wall = time.monotonic() - t0
            ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
            out_lines = [l for _, l in job.out]
            if rc != 0:
                raise RuntimeError(f"mgs_mpi ({kind}) exited {rc}: {job.tail()}")
            if ref_out is None:
                ref_out = out_lines
            elif out_lines != ref_out:
                raise RuntimeError(f"mgs_mpi ({kind}) printed {out_lines}, expected {ref_out}")
            ck_lines = [kv(l) for _, l in job.err if "checkpoint generation=" in l]
            notes = [l for _, l in job.err if l.startswith("ghostrun: job ") and "repeat" not in l]
            with open(os.path.join(out, "interval-ghostrun.log"), "a") as f:
                f.write(f"# pair {pair} {kind}: ghostrun's own lines\n" + "".join(l + "\n" for l in notes))
            comp = [float(kv(l)["compute_s"]) for _, l in job.err if "compute_s=" in l]
            row = dict(pair=pair, kind=kind, load=la, wall_s=wall, cpu_s=cpu, checkpoints=len(ck_lines),
                       ckpt_sum_s=sum(float(c["total_s"]) for c in ck_lines),
                       ckpt_quiesce_sum_s=sum(float(c["quiesce_s"]) for c in ck_lines),
                       bytes_per_ckpt=int(ck_lines[0]["bytes"]) if ck_lines else 0,
                       compute_s=comp[0] if comp else "")
            rows.append(row)
            print("interval " + ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                                          for k, v in row.items()), flush=True)
            shutil.rmtree(ck, ignore_errors=True)
    write_csv(os.path.join(out, "interval.csv"), rows)
    plain = [r for r in rows if r["kind"] == "plain"]
    inter = [r for r in rows if r["kind"] == "interval"]
    extra = [i["wall_s"] - p["wall_s"] - i["ckpt_sum_s"] for p, i in zip(plain, inter)]
    lines = [f"## ghostrun --interval {args.interval}: mgs_mpi --n {args.interval_n} --repeat "
             f"{args.interval_repeat}, 4 ranks", "",
             f"{len(plain)} pairs, alternating (order flipped every pair), 3 s pause before each run; "
             "the output of every run is the same line. Seconds.", "",
             "| pair | without: wall | with: wall | checkpoints | sum of checkpoint total_s | "
             "with − without − checkpoints | CPU s without | CPU s with |", "|---|---|---|---|---|---|---|---|"]
    for k, (p, i) in enumerate(zip(plain, inter)):
        lines.append(f"| {k} | {p['wall_s']:.2f} | {i['wall_s']:.2f} | {i['checkpoints']} | "
                     f"{i['ckpt_sum_s']:.3f} | {extra[k]:+.2f} | {p['cpu_s']:.1f} | {i['cpu_s']:.1f} |")
    s = stats(extra)
    pw = stats([r["wall_s"] for r in plain])
    aa = [abs(plain[k]["wall_s"] - plain[k - 1]["wall_s"]) for k in range(1, len(plain))]
    lines += ["", f"Median extra time beyond the checkpoints: **{s['median']:+.2f} s** "
              f"(range {s['min']:+.2f} … {s['max']:+.2f}); run-to-run spread of the plain runs: "
              f"{', '.join(f'{x:.2f}' for x in aa) or '-'} s on a median wall time of {pw['median']:.2f} s.",
              "Target (issue 10): periodic checkpoints cost no more than the checkpoints themselves "
              "(extra ≈ 0 within the noise). CPU s = user + system time of the whole job (ghostrun, "
              "mpirun, ranks, checkpointers), less sensitive to the machine's other load than wall "
              "time but not free of it (ranks waiting in collectives poll)."]
    return lines


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--what", default="quiesce,io,interval")
    ap.add_argument("--dir", default=None, help="scratch directory on the filesystem to measure")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--requests", type=int, default=20)
    ap.add_argument("--checkpoints", type=int, default=5)
    ap.add_argument("--nice", action=argparse.BooleanOptionalAction, default=True,
                    help="also the 2-rank compute row under nice -n -10 (quiesce)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--interval", type=float, default=10)
    ap.add_argument("--interval-pairs", type=int, default=3)
    ap.add_argument("--interval-n", type=int, default=1500)
    ap.add_argument("--interval-repeat", type=int, default=50)
    args = ap.parse_args()
    if os.geteuid() != 0:
        die("needs root (to drop the page cache for cold reads)")
    what = args.what.split(",")
    for w in what:
        if w not in ("quiesce", "io", "interval"):
            die(f"unknown section {w!r} in --what (quiesce, io, interval)")
    t = Tools(os.path.abspath(args.build))
    own = args.dir is None
    args.dir = args.dir or tempfile.mkdtemp(prefix="ghost-mpi-ckpt-", dir=ROOT)
    os.chmod(args.dir, 0o700)
    os.makedirs(args.out, exist_ok=True)
    info = dict(machine=machine(args.dir), start=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                load_at_start=loadavg(), args=vars(args))
    try:
        for w in what:
            lines = {"quiesce": quiesce_section, "io": io_section, "interval": interval_section}[w](t, args, args.out)
            lines[1:1] = ["", f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
                          f"load average {loadavg():.2f} at the end; {info['machine']}."]
            with open(os.path.join(args.out, f"{w}.md"), "w") as f:
                f.write("\n".join(lines) + "\n")
            print("\n".join(lines), flush=True)
    finally:
        if own:
            shutil.rmtree(args.dir, ignore_errors=True)
    with open(os.path.join(args.out, "system.json"), "w") as f:
        json.dump(info, f, indent=1)
    subprocess.run([sys.executable, os.path.join(HERE, "report.py"), args.out])


if __name__ == "__main__":
    main()
