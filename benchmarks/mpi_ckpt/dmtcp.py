#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""ghost against DMTCP on the same 2-rank Open MPI job (ckpt_load hold, 2 x 256 MiB of random data):
checkpoint time and restart time, alternately in one run. DMTCP is not part of ghost: build it
yourself (./configure --prefix=P && make && make install) and pass --dmtcp P/bin.

    benchmarks/mpi_ckpt/dmtcp.py --dmtcp /tmp/dmtcp-inst/bin [--build build] [--reps 3]
                                 [--mib 256] [--dir DIR] [-- MPIRUN OPTIONS]

Here DMTCP 5.0 ran with: its checkpoint signal moved off SIGUSR2 (used by Open MPI's mpirun; the
default 12 and SIGUSR1 both fail: --ckpt-signal 40), hwloc I/O discovery off (JOB_ENV, both tools:
otherwise "Unimplemented file type: path=vda" at launch), and `-- --mca btl self,tcp` (passed to
both tools' mpirun; the default shared-memory transport was not tried under DMTCP).

Both jobs write stdout to a file; "runs again" = every rank printed `resumed rank R` after the restart
(its first 20 ms loop with an MPI_Allreduce after the restore). DMTCP writes its images without
gzip (--no-gzip: random data does not compress) and does not fsync them; the table gives its time
with and without a following `sync`. Page cache dropped before each restart (both). Writes
results/dmtcp.csv and results/dmtcp.md."""

import argparse
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import HERE, MPI_ENV, ROOT, Job, die, drop_caches, kv, loadavg, machine, settle, stats  # noqa: E402
from run import write_csv  # noqa: E402

# hwloc's I/O discovery leaves a descriptor of the block device open in mpirun, which DMTCP cannot
# checkpoint ("Unimplemented file type: path=vda"): both tools run the job without it.
JOB_ENV = {"HWLOC_COMPONENTS": "-linuxio,-pci"}


def lines_in(path, prefix):
    try:
        data = open(path, "rb").read().replace(b"\0", b"").decode(errors="replace")
    except OSError:
        return 0
    return sum(1 for l in data.splitlines() if l.startswith(prefix))


def wait_lines(path, prefix, n, timeout, what, proc=None):
    end = time.monotonic() + timeout
    while lines_in(path, prefix) < n:
        if time.monotonic() > end:
            raise RuntimeError(f"{what}: {n} '{prefix}' lines not within {timeout} s")
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: the process ended with status {proc.returncode}")
        time.sleep(0.002)
    return time.monotonic()


class Dmtcp:
    def __init__(self, bindir, d, np_, mib, extra, load):
        self.bin = bindir
        self.d = d
        self.np, self.mib, self.extra, self.load = np_, mib, extra, load
        self.env = dict(os.environ, **MPI_ENV, **JOB_ENV)

    def tool(self, name):
        return os.path.join(self.bin, name)

    def coordinator(self):
        pf = os.path.join(self.d, "port")
        if os.path.exists(pf):
            os.unlink(pf)
        subprocess.run([self.tool("dmtcp_coordinator"), "--daemon", "--exit-on-last", "-p", "0",
                        "--port-file", pf, "--ckptdir", self.ck], check=True, capture_output=True,
                       env=self.env)
        for _ in range(500):
            if os.path.exists(pf) and open(pf).read().strip():
                return open(pf).read().strip()
            time.sleep(0.01)
        raise RuntimeError("dmtcp_coordinator wrote no port")

    def checkpoint(self):
        self.ck = os.path.join(self.d, "dmtcp-ck")
        shutil.rmtree(self.ck, ignore_errors=True)
        os.makedirs(self.ck)
        self.outf = os.path.join(self.d, "dmtcp.out")
        self.port = self.coordinator()
        with open(self.outf, "w") as out:
            p = subprocess.Popen([self.tool("dmtcp_launch"), "-h", "localhost", "-p", self.port,
                                  "--no-gzip", "--ckpt-signal", "40", "--ckptdir", self.ck, "mpirun", *self.extra, "-np",
                                  str(self.np), self.load, "hold", "--mib", str(self.mib)],
                                 stdout=out, stderr=subprocess.STDOUT, env=self.env,
                                 start_new_session=True)
        try:
            wait_lines(self.outf, "ready rank", self.np, 180, "dmtcp job ready", p)
            settle()
            t0 = time.monotonic()
            r = subprocess.run([self.tool("dmtcp_command"), "-h", "localhost", "-p", self.port,
                                "--bcheckpoint"], capture_output=True, text=True, env=self.env)
            t1 = time.monotonic()
            subprocess.run(["sync"], check=True)
            t2 = time.monotonic()
            if r.returncode != 0:
                raise RuntimeError(f"dmtcp_command --bcheckpoint: {r.stdout} {r.stderr}")
            imgs = glob.glob(os.path.join(self.ck, "ckpt_*.dmtcp"))
            if not imgs:
                raise RuntimeError(f"DMTCP wrote no image in {self.ck}; output: "
                                   f"{open(self.outf).read()[-2000:]}")
            size = sum(os.path.getsize(f) for f in imgs)
            subprocess.run([self.tool("dmtcp_command"), "-h", "localhost", "-p", self.port, "--kill"],
                           capture_output=True, env=self.env)
            p.wait(timeout=60)
        finally:
            if p.poll() is None:
                os.killpg(p.pid, 9)
                p.wait()
        return dict(ckpt_s=t1 - t0, ckpt_sync_s=t2 - t0, bytes=size, images=len(imgs))

    def restart(self):
        script = os.path.join(self.ck, "dmtcp_restart_script.sh")
        imgs = sorted(glob.glob(os.path.join(self.ck, "ckpt_*.dmtcp")))
        # The restored ranks' output (through the restored mpirun's pty) goes to dmtcp_restart's
        # stdout.
        routf = os.path.join(self.d, "dmtcp.rout")
        drop_caches()
        port = self.coordinator()
        t0 = time.monotonic()
        p = subprocess.Popen([self.tool("dmtcp_restart"), "-h", "localhost", "-p", port, *imgs],
                             stdout=open(routf, "w"), stderr=open(os.path.join(self.d, "dmtcp.rerr"), "w"),
                             env=self.env, start_new_session=True)
        try:
            t = wait_lines(routf, "resumed rank", self.np, 180, "dmtcp restart", p)
        except RuntimeError as e:
            raise RuntimeError(f"{e}; stderr: {open(os.path.join(self.d, 'dmtcp.rerr')).read()[-2000:]}")
        finally:
            subprocess.run([self.tool("dmtcp_command"), "-h", "localhost", "-p", port, "--kill"],
                           capture_output=True, env=self.env)
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, 9)
                p.wait()
        del script
        return t - t0


class Ghost:
    def __init__(self, build, d, np_, mib, extra, load):
        self.ghost = os.path.join(build, "launcher", "ghost")
        self.ghostrun = os.path.join(build, "launcher", "ghostrun", "ghostrun")
        self.d, self.np, self.mib, self.extra, self.load = d, np_, mib, extra, load
        self.ck = os.path.join(d, "ghost-ck")

    def checkpoint(self):
        shutil.rmtree(self.ck, ignore_errors=True)
        job = Job([self.ghostrun, "--ckpt-dir", self.ck, *self.extra, "-np", str(self.np), self.load,
                   "hold", "--mib", str(self.mib)], env=JOB_ENV)
        try:
            jid = job.job_id()
            job.count_lines("ready rank", self.np, 180, "ghost job ready")
            settle()
            t0 = time.monotonic()
            r = subprocess.run([self.ghost, "checkpoint", jid, "--dir", self.ck, "--kill"],
                               capture_output=True, text=True)
            t1 = time.monotonic()
            if r.returncode != 0:
                raise RuntimeError(f"ghost checkpoint: {r.stderr.strip()}")
            job.wait(60)
        finally:
            if job.p.poll() is None:
                job.kill()
        m = kv(r.stdout)
        return dict(ckpt_s=t1 - t0, ckpt_sync_s=t1 - t0, bytes=int(m["bytes"]), images=int(m["ranks"]))

    def restart(self):
        drop_caches()
        t0 = time.monotonic()
        job = Job([self.ghost, "restart", self.ck], env=JOB_ENV)
        try:
            t = job.count_lines("resumed rank", self.np, 180, "ghost restart")
        finally:
            job.kill()
        return t - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dmtcp", required=True, help="directory of dmtcp_launch etc.")
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--np", type=int, default=2)
    ap.add_argument("--dir", default=None)
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("mpirun_opts", nargs="*")
    args = ap.parse_args()
    if os.geteuid() != 0:
        die("needs root (drop_caches)")
    if not os.access(os.path.join(args.dmtcp, "dmtcp_launch"), os.X_OK):
        die(f"no dmtcp_launch in {args.dmtcp}")
    build = os.path.abspath(args.build)
    load = os.path.join(build, "benchmarks", "mpi_ckpt", "ckpt_load")
    own = args.dir is None
    d = args.dir or tempfile.mkdtemp(prefix="ghost-dmtcp-", dir=ROOT)
    os.chmod(d, 0o700)
    where = machine(d)
    g = Ghost(build, d, args.np, args.mib, args.mpirun_opts, load)
    m = Dmtcp(args.dmtcp, d, args.np, args.mib, args.mpirun_opts, load)
    rows = []
    try:
        for rep in range(args.reps):
            for name, tool in ((("ghost", g), ("dmtcp", m)) if rep % 2 == 0 else (("dmtcp", m), ("ghost", g))):
                la = loadavg()
                c = tool.checkpoint()
                rs = tool.restart()
                row = dict(rep=rep, tool=name, load=la, **c, restart_s=rs)
                rows.append(row)
                print("dmtcp " + ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                                           for k, v in row.items()), flush=True)
    finally:
        if own:
            shutil.rmtree(d, ignore_errors=True)
    write_csv(os.path.join(args.out, "dmtcp.csv"), rows)

    def med(tool, k):
        return stats([r[k] for r in rows if r["tool"] == tool])["median"]

    ver = subprocess.run([os.path.join(args.dmtcp, "dmtcp_launch"), "--version"], capture_output=True,
                         text=True).stdout.splitlines()
    lines = [f"## ghost vs DMTCP: {args.np} ranks x {args.mib} MiB (Open MPI)", "",
             f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {where}; DMTCP "
             f"{ver[0] if ver else '?'} built from source; mpirun options: "
             f"{' '.join(args.mpirun_opts) or '(none)'}; medians of {args.reps} alternating "
             "repetitions. Seconds.", "",
             "| | image bytes | checkpoint | checkpoint + sync | restart (cold cache) → every rank ran a loop |",
             "|---|---|---|---|---|"]
    for t in ("ghost", "dmtcp"):
        lines.append(f"| {t} | {int(med(t, 'bytes'))} | {med(t, 'ckpt_s'):.3f} | {med(t, 'ckpt_sync_s'):.3f} "
                     f"| {med(t, 'restart_s'):.3f} |")
    cr = med("dmtcp", "ckpt_sync_s") / med("ghost", "ckpt_s")
    rr = med("dmtcp", "restart_s") / med("ghost", "restart_s")
    cr0 = med("dmtcp", "ckpt_s") / med("ghost", "ckpt_s")
    lines += ["", f"DMTCP / ghost: checkpoint {cr0:.2f}x without DMTCP's sync, {cr:.2f}x with it (ghost's "
              f"images are fsync'd before it returns); restart {rr:.2f}x. Target (issue 10): ghost at "
              f"least 3x faster for each — checkpoint {'met' if cr >= 3 else 'not met'}, restart "
              f"{'met' if rr >= 3 else 'not met'}."]
    with open(os.path.join(args.out, "dmtcp.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    subprocess.run([sys.executable, os.path.join(HERE, "report.py"), args.out])


if __name__ == "__main__":
    main()
