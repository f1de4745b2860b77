#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""The built-in balancer against a slow host (issue 11): 3 emulated hosts (tests/hosts), a 6-rank
CPU-bound job (job_steps.c with WORK per step: a ring exchange, an Allreduce and a Bcast each step)
with 2 ranks per host, host 3 made slow (hosts_slow: whatever runs there shares PCT% of one CPU, a
CPU cgroup quota). Runs under ghostrun without and with --balance, alternately, in one run; each
job's output is compared with a native run's (made before host 3 is slowed). Every 0.5 s,
`ghost status --json` gives each rank's host and its progress (steps done: the messages it sent to
its right neighbour, one per step, from the wrappers' counters, which move with a migrated rank).

  run.py --build BUILD [--reps 2] [--flavour openmpi|mpich] [--slow-pct 20] [--steps 300]
         [--work 20000] [--interval 2] [--out results/balance.md] [--plot results/balance.png]

Needs root (network namespaces, a CPU cgroup) and, for the plot, matplotlib
(apt-get install python3-matplotlib); without it the results file still has the figures."""

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "mpi_ckpt"))
from common import MPI_ENV, loadavg, machine  # noqa: E402

HOSTS_SH = os.path.join(ROOT, "tests", "hosts", "hosts.sh")
AGENT = os.path.join(ROOT, "tests", "hosts", "agent.sh")


def hosts_lib(hdir, script):
    """Runs `script` with tests/hosts/hosts.sh sourced and the set in `hdir` described."""
    hid = open(os.path.join(hdir, "id")).read().strip()
    subprocess.run(["bash", "-c", f"source {HOSTS_SH}; HOSTS_DIR={hdir}; HOSTS_ID={hid}; {script}"],
                   check=True)


def rank_steps(r, n, sent):
    return sent[(r + 1) % n] if len(sent) == n else 0


def run_job(argv, ghost, env, np_, timeout=1800):
    """Runs a ghostrun job; samples status every 0.5 s. Returns (wall_s, rc, out, err, samples)."""
    t0 = time.monotonic()
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                         start_new_session=True)
    err_lines = []
    job = None
    samples = []
    import threading
    out = []
    to = threading.Thread(target=lambda: out.extend(p.stdout.read().splitlines()))
    to.start()

    def read_err():
        for line in p.stderr:
            err_lines.append((time.monotonic() - t0, line.rstrip("\n")))
    te = threading.Thread(target=read_err)
    te.start()
    while p.poll() is None:
        if time.monotonic() - t0 > timeout:
            os.killpg(p.pid, 9)
            break
        if job is None:
            for _, l in err_lines:
                if l.startswith("ghostrun: job ") and l[14:].strip().isdigit():
                    job = l[14:].strip()
        if job:
            r = subprocess.run([ghost, "status", "--json", job], capture_output=True, text=True)
            if r.returncode == 0:
                try:
                    j = json.loads(r.stdout)["jobs"][0]
                    ranks = j.get("ranks", [])
                    if len(ranks) == np_ and all("messages_sent_to" in x for x in ranks):
                        samples.append(dict(
                            t=time.monotonic() - t0,
                            hosts={x["rank"]: x["host"] for x in ranks},
                            steps=min(rank_steps(x["rank"], np_, x["messages_sent_to"]) for x in ranks)))
                except (ValueError, KeyError, IndexError):
                    pass
        time.sleep(0.5)
    p.wait()
    wall = time.monotonic() - t0
    to.join()
    te.join()
    return wall, p.returncode, out, err_lines, samples


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", required=True)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--flavour", default="openmpi", choices=["openmpi", "mpich"])
    ap.add_argument("--slow-pct", type=int, default=20)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--work", type=int, default=20000, help="thousand rounds of arithmetic per step")
    ap.add_argument("--interval", default="2")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "balance.md"))
    ap.add_argument("--plot", default=os.path.join(HERE, "results", "balance.png"))
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("balance: needs root (network namespaces, a CPU cgroup)")
    b = os.path.abspath(a.build)
    ghostrun = os.path.join(b, "launcher", "ghostrun", "ghostrun")
    ghost = os.path.join(b, "launcher", "ghost")
    prog = os.path.join(b, "mpi-layer", "tests", f"mpit_job_steps_{a.flavour}")
    for p in (ghostrun, ghost, prog):
        if not os.access(p, os.X_OK):
            sys.exit(f"balance: {p} is missing (build the project first)")
    env = dict(os.environ, **MPI_ENV)
    env["GHOST_HOSTS_KEEP"] = b
    hdir = subprocess.run(["bash", HOSTS_SH, "up", "3"], capture_output=True, text=True, env=env,
                          check=True).stdout.strip()
    try:
        hid = open(os.path.join(hdir, "id")).read().strip()
        ips = open(os.path.join(hdir, "hostfile")).read().split()
        names = [f"{hid}-h{k + 1}" for k in range(3)]
        subnet = ips[0].rsplit(".", 1)[0] + ".0/24"
        shared = os.path.join(hdir, "shared")
        np_ = 6
        hf = os.path.join(shared, "hostfile")
        with open(hf, "w") as f:
            for ip in ips:
                f.write(f"{ip} slots=2\n" if a.flavour == "openmpi" else f"{ip}:2\n")
        if a.flavour == "openmpi":
            mpirun = "mpirun.openmpi"
            reach = ["--mca", "plm_rsh_agent", AGENT, "--mca", "oob_tcp_if_include", subnet,
                     "--mca", "btl_tcp_if_include", subnet]
            place = ["--hostfile", hf]
        else:
            mpirun = "mpirun.mpich"
            reach = ["-launcher", "ssh", "-launcher-exec", AGENT]
            place = ["-f", hf]
        args = [prog, str(a.steps), "0", str(a.work)]
        # The reference: native, before host 3 is slowed.
        t0 = time.monotonic()
        nat = subprocess.run([mpirun, "-np", str(np_)] + reach + place + args, capture_output=True,
                             text=True, env=env, cwd=shared, timeout=1800)
        native_s = time.monotonic() - t0
        if nat.returncode != 0:
            sys.exit(f"balance: the native run failed: {nat.stderr.strip()[-500:]}")
        ref = sorted(l for l in nat.stdout.splitlines() if l.startswith("rank "))
        hosts_lib(hdir, f"hosts_slow 3 {a.slow_pct}")
        runs = []
        for rep in range(a.reps):
            for mode in ("static", "balance"):
                opts = ["--fresh", "--ckpt-dir", os.path.join(shared, f"ck-{mode}-{rep}")]
                if mode == "balance":
                    opts += ["--balance", "--balance-interval", a.interval]
                la = loadavg()
                wall, rc, out, err, samples = run_job(
                    [ghostrun] + opts + ["-np", str(np_)] + place + reach + args, ghost, env, np_)
                got = sorted(l for l in out if l.startswith("rank "))
                moves = [(t, l.split("balancer: ", 1)[1]) for t, l in err if "balancer: " in l]
                runs.append(dict(rep=rep, mode=mode, wall=wall, rc=rc, same=got == ref, load=la,
                                 moves=moves, samples=samples))
                print(f"rep {rep} {mode}: {wall:.1f} s, status {rc}, output "
                      f"{'as native' if got == ref else 'DIFFERS'}, load {la:.2f}, "
                      f"{sum(1 for _, m in moves if ' runs on ' in m)} move(s)", flush=True)
                for t, m in moves:
                    print(f"    {t:6.1f} s  {m}", flush=True)
    finally:
        subprocess.run(["bash", HOSTS_SH, "down", hdir])

    static = [r["wall"] for r in runs if r["mode"] == "static"]
    bal = [r["wall"] for r in runs if r["mode"] == "balance"]
    pairs = [s / b for s, b in zip(static, bal)]
    with open(a.out, "w") as f:
        f.write("# The built-in balancer against a slow host\n\n")
        f.write(f"Machine: {machine(shared if os.path.isdir(shared) else '/var/tmp')}.\n")
        f.write(f"Run: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, `benchmarks/balance/run.py "
                f"--reps {a.reps} --flavour {a.flavour} --slow-pct {a.slow_pct} --steps {a.steps} "
                f"--work {a.work} --interval {a.interval}`; other work shared the 2 cores (load at "
                f"each start below).\n\n")
        f.write(f"6 ranks of job_steps ({a.steps} steps, {a.work}k rounds of arithmetic each), 2 per "
                f"emulated host; host 3's processes share {a.slow_pct}% of one CPU (a CPU cgroup "
                f"quota); the three hosts share this machine's 2 cores. Native run (before host 3 "
                f"was slowed): {native_s:.1f} s.\n\n")
        f.write("| rep | mode | job s | load at start | output | balancer moves |\n")
        f.write("|---|---|---|---|---|---|\n")
        for r in runs:
            mv = "; ".join(f"{t:.0f} s: {m}" for t, m in r["moves"] if " runs on " in m or "failed" in m)
            f.write(f"| {r['rep']} | {r['mode']} | {r['wall']:.1f} | {r['load']:.2f} | "
                    f"{'as native' if r['same'] and r['rc'] == 0 else 'WRONG (status %d)' % r['rc']} | "
                    f"{mv or '-'} |\n")
        if bal:
            f.write(f"\nMean job time: without --balance {sum(static) / len(static):.1f} s, with "
                    f"{sum(bal) / len(bal):.1f} s; speedup per pair (static / balance): "
                    f"{', '.join(f'{x:.2f}' for x in pairs)}.\n")
        f.write(f"\nPlot: `{os.path.basename(a.plot)}` (the last pair: ranks per host and steps "
                f"done over time).\n")
    print(open(a.out).read())
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("balance: no matplotlib (apt-get install python3-matplotlib): no plot")
        return
    last = [r for r in runs if r["rep"] == a.reps - 1]
    fig, axes = plt.subplots(2, len(last), figsize=(6 * len(last), 6), sharex=True, squeeze=False)
    for col, r in enumerate(last):
        s = r["samples"]
        t = [x["t"] for x in s]
        ax = axes[0][col]
        for k, name in enumerate(names):
            ax.step(t, [sum(1 for h in x["hosts"].values() if h == name) for x in s], where="post",
                    label=f"host {k + 1}" + (" (slow)" if k == 2 else ""))
        ax.set_ylabel("ranks")
        ax.set_title(f"{r['mode']}: {r['wall']:.0f} s")
        ax.legend(loc="upper right")
        ax = axes[1][col]
        ax.plot(t, [x["steps"] for x in s])
        for tm, m in r["moves"]:
            if " runs on " in m:
                ax.axvline(tm, color="grey", linestyle=":")
        ax.set_ylabel("steps done (slowest rank)")
        ax.set_xlabel("s")
    fig.tight_layout()
    fig.savefig(a.plot, dpi=90)
    print(f"plot: {a.plot}")


if __name__ == "__main__":
    main()
