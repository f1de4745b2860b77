#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Fast duplicate against CRIU: a copy of a running process holding 64 MiB .. 1 GiB of random data
(benchmarks/fast_duplicate/dup_bench.c, two threads writing to it), made by `ghost duplicate` (the
fork path, "fork" in run.py) and by CRIU (`criu dump --leave-running` then `criu restore`),
measured alternately in one run:

  gap_ms    the longest stop the original's main thread saw between two looks at the clock
            (1.0 = below the workload's 1 ms threshold); park_ms is the tool's own report of it
            (ghost's park_s, CRIU's "Frozen time" of --display-stats);
  copy_ms   from the start of `ghost duplicate` / of `criu dump` until the first look at the clock
            of the copy's main thread (CLOCK_MONOTONIC in both).

ghost: `ghost launch` runs the workload, `ghost duplicate PID` copies it (no image is written).
CRIU: the workload runs in a session of its own (stdio: /dev/null and a pipe), `criu dump -t PID
--leave-running` writes the images to a fresh directory under --images-dir (tmpfs /dev/shm by
default), then `unshare --pid --fork --mount-proc --kill-child criu restore` restores the copy in
a new pid namespace (the original keeps its pid; criu is that namespace's init and waits for the
copy, so the namespace lives until the copy has printed). The original's stdout is a pipe (cat
copies it to a file) that the restore replaces by a file of the copy's own (--inherit-fd): CRIU
would refuse a regular file that has grown since the dump. Everything is killed and the images
removed after each measurement. CRIU is built from its source for this benchmark only (never
part of ghost): see results/criu.md.

    benchmarks/fast_duplicate/criu.py [--build build] [--bench PATH] [--criu /tmp/criu-src/criu/criu]
        [--images-dir /dev/shm] [--sizes 64,256,1024] [--reps 3]

Writes benchmarks/fast_duplicate/results/{criu.csv,criu.md}. Not a test: it takes minutes."""

import argparse
import atexit
import csv
import datetime
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
from run import machine as run_machine, read_until  # noqa: E402  (this benchmark's run.py)

# What a measurement started and made, for the cleanup that must also run when the script is
# interrupted: a killed run leaves no process and no image behind. atexit covers an exception,
# SIGINT, SIGTERM and SIGHUP; a watchdog (a fork of this script in a session of its own, told of
# every process and directory through a pipe) covers SIGKILL: at the pipe's end it kills and
# removes what it was last told of.
_procs = []
_dirs = []
_watch = None


def _kill_tree(pid):
    """SIGKILL pid, its process group and every process below it (/proc/PID/task/*/children)."""
    todo, seen = [pid], []
    while todo:
        p = todo.pop()
        seen.append(p)
        try:
            for tid in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except OSError:
            pass
    for p in seen:
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass


def _tell(line):
    if _watch:
        _watch.write(line + "\n")


def _start_watchdog():
    global _watch
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(w)
        os.setsid()
        pids, dirs = [], []
        with os.fdopen(r) as f:
            for line in f:
                kind, _, arg = line.rstrip("\n").partition(" ")
                if kind == "clear":
                    pids, dirs = [], []
                elif kind == "pid":
                    pids.append(int(arg))
                elif kind == "dir":
                    dirs.append(arg)
        for p in pids:
            _kill_tree(p)
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)
        os._exit(0)
    os.close(r)
    _watch = os.fdopen(w, "w", buffering=1)
    atexit.register(lambda: (_watch.close(), os.waitpid(pid, 0)))


def _cleanup():
    while _procs:
        p = _procs.pop()
        if p.poll() is None:
            _kill_tree(p.pid)
            p.wait()
    while _dirs:
        shutil.rmtree(_dirs.pop(), ignore_errors=True)
    _tell("clear")


def spawn(argv, **kw):
    p = subprocess.Popen(argv, start_new_session=True, **kw)
    _procs.append(p)
    _tell(f"pid {p.pid}")
    return p


def workdir(base):
    d = tempfile.mkdtemp(prefix="ghost-criu-", dir=base)
    _dirs.append(d)
    _tell(f"dir {d}")
    return d


def gaps_after(out, before):
    with open(out) as f:
        gaps = [int(g) for g in re.findall(r"gap (\d+)", f.read())][before:]
    return max(gaps) / 1000 if gaps else 1.0  # below the 1 ms the workload reports


def started(out, proc):
    if not read_until(out, r"ready", 120, proc):
        raise RuntimeError("the workload did not start")
    time.sleep(1.0)  # settle
    with open(out) as f:
        return len(re.findall(r"gap (\d+)", f.read()))


def one_ghost(ghost, bench, mib, base):
    work = workdir(base)
    out = os.path.join(work, "orig.out")
    with open(out, "w") as f:
        launch = spawn([ghost, "launch", "--ckpt-dir", os.path.join(work, "ckpt"), "--pid-file",
                        os.path.join(work, "pid"), "--", bench, "--mib", str(mib)],
                       stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.DEVNULL)
    before = started(out, launch)
    pid = int(open(os.path.join(work, "pid")).read())
    _tell(f"pid {pid}")
    t0 = time.monotonic_ns()
    dup = spawn([ghost, "duplicate", str(pid)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True)
    out_s, err_s = dup.communicate(timeout=300)
    if dup.returncode != 0:
        raise RuntimeError(f"ghost duplicate failed ({dup.returncode}): {err_s.strip()}")
    m = re.search(r"copy (\d+)", out_s)
    if not m:
        raise RuntimeError(f"the copy did not report: {out_s!r} {err_s!r}")
    if "via=fork" not in err_s:
        raise RuntimeError(f"not the fork path: {err_s.strip()}")
    copy_ms = (int(m.group(1)) - t0) / 1e6
    park_ms = float(re.search(r"park_s=([\d.]+)", err_s).group(1)) * 1000
    time.sleep(0.3)
    return {"park_ms": park_ms, "gap_ms": gaps_after(out, before), "copy_ms": copy_ms}


def one_criu(criu, bench, mib, base):
    work = workdir(base)
    out, copy_out, img = (os.path.join(work, n) for n in ("orig.out", "copy.out", "img"))
    os.mkdir(img)
    # The original's stdout is a pipe that cat copies to a file. The copy's stdout is handed to
    # `criu restore` as that pipe (--inherit-fd), a file of its own: CRIU would refuse to restore
    # the original's file as it is, having grown since the dump (it checks the size).
    r, w = os.pipe()
    with open(out, "w") as orig_f:
        spawn(["cat"], stdin=r, stdout=orig_f)
        orig = spawn([bench, "--mib", str(mib)], stdin=subprocess.DEVNULL, stdout=w,
                     stderr=subprocess.DEVNULL)
    ext = f"pipe:[{os.fstat(w).st_ino}]"
    os.close(r)
    os.close(w)
    before = started(out, orig)
    t0 = time.monotonic_ns()
    d = spawn([criu, "dump", "-t", str(orig.pid), "-D", img, "-o", "dump.log", "--leave-running",
               "--display-stats"], stdin=subprocess.DEVNULL,
              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    d_out = d.communicate(timeout=600)[0]
    t1 = time.monotonic_ns()
    if d.returncode != 0:
        log = open(os.path.join(img, "dump.log")).read()[-3000:]
        raise RuntimeError(f"criu dump failed ({d.returncode}): {d_out}\n{log}")
    frozen = re.search(r"Frozen time:\s*(\d+)", d_out)
    image_mib = sum(os.path.getsize(os.path.join(img, n)) for n in os.listdir(img)
                    if not n.endswith(".log")) / 2**20
    with open(copy_out, "w") as copy_f, open(os.path.join(work, "restore.out"), "w") as log_f:
        fd = copy_f.fileno()
        t2 = time.monotonic_ns()
        rest = spawn(["unshare", "--pid", "--fork", "--mount-proc", "--kill-child", criu, "restore",
                      "-D", img, "-o", "restore.log", "--inherit-fd", f"fd[{fd}]:{ext}"],
                     stdin=subprocess.DEVNULL, stdout=log_f, stderr=subprocess.STDOUT, pass_fds=(fd,))
    m = read_until(copy_out, r"copy (\d+)", 600, rest)
    if not m:
        rest.wait(timeout=10)
        log = open(os.path.join(img, "restore.log")).read()[-3000:]
        raise RuntimeError(f"the CRIU copy did not report (restore exit {rest.returncode}): "
                           f"{open(os.path.join(work, 'restore.out')).read()}\n{log}")
    copy_ns = int(m[0])
    rest.wait(timeout=60)
    time.sleep(0.3)
    return {"park_ms": int(frozen.group(1)) / 1000 if frozen else "",
            "gap_ms": gaps_after(out, before), "copy_ms": (copy_ns - t0) / 1e6,
            "dump_ms": (t1 - t0) / 1e6, "restore_ms": (copy_ns - t2) / 1e6,
            "image_mib": round(image_mib, 1)}


def machine():
    # AT_HWCAP2 bit 1: the kernel lets user space use the FSGSBASE instructions.
    out = subprocess.run(["env", "LD_SHOW_AUXV=1", "/bin/true"], capture_output=True, text=True).stdout
    m = re.search(r"AT_HWCAP2:\s+(0x[0-9a-f]+)", out)
    fsgs = ("unknown" if not m else "available (AT_HWCAP2 bit 1 set)" if int(m.group(1), 16) & 2
            else "not available (AT_HWCAP2 bit 1 clear)")
    return f"{run_machine()}, user-space FSGSBASE {fsgs}"


def criu_version(criu):
    v = subprocess.run([criu, "--version"], capture_output=True, text=True).stdout.split()
    src = os.path.dirname(os.path.dirname(os.path.abspath(criu)))
    commit = subprocess.run(["git", "-C", src, "log", "-1", "--format=%H"], capture_output=True,
                            text=True).stdout.strip()
    return " ".join(v) + (f", commit {commit}" if commit else "")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--bench", help="the workload (default: BUILD/benchmarks/fast_duplicate/dup_bench)")
    ap.add_argument("--criu", default="/tmp/criu-src/criu/criu")
    ap.add_argument("--images-dir", default="/dev/shm",
                    help="where each measurement's directory (CRIU's images, ghost's --ckpt-dir) goes")
    ap.add_argument("--sizes", default="64,256,1024")
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    ghost = os.path.join(a.build, "launcher", "ghost")
    bench = a.bench or os.path.join(a.build, "benchmarks", "fast_duplicate", "dup_bench")
    res = os.path.join(HERE, "results")
    os.makedirs(res, exist_ok=True)
    _start_watchdog()
    atexit.register(_cleanup)
    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, lambda n, f: sys.exit(128 + n))
    fs = subprocess.run(["findmnt", "-no", "FSTYPE", "-T", a.images_dir], capture_output=True,
                        text=True).stdout.split()
    load0 = open("/proc/loadavg").read().split()[0]
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    rows = []
    for mib in [int(s) for s in a.sizes.split(",")]:
        for rep in range(a.reps):
            for tool in ("ghost", "criu"):
                try:
                    r = (one_ghost(ghost, bench, mib, a.images_dir) if tool == "ghost" else
                         one_criu(a.criu, bench, mib, a.images_dir))
                finally:
                    _cleanup()
                print(f"{mib:5d} MiB {tool:5s} rep {rep}: park {r['park_ms']:8.1f} ms (gap seen "
                      f"{r['gap_ms']:8.1f} ms), copy runs after {r['copy_ms']:8.1f} ms"
                      + (f" (dump {r['dump_ms']:.1f} ms, restore until the copy runs "
                         f"{r['restore_ms']:.1f} ms, image {r['image_mib']} MiB)" if tool == "criu" else ""),
                      flush=True)
                rows.append({"mib": mib, "tool": tool, "rep": rep,
                             **{k: round(v, 2) if isinstance(v, float) else v for k, v in r.items()}})
    load1 = open("/proc/loadavg").read().split()[0]
    fields = ["mib", "tool", "rep", "park_ms", "gap_ms", "copy_ms", "dump_ms", "restore_ms", "image_mib"]
    with open(os.path.join(res, "criu.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, restval="")
        w.writeheader()
        w.writerows(rows)
    cmd = " ".join(shlex.quote(x) for x in ["benchmarks/fast_duplicate/criu.py"] + sys.argv[1:])
    lines = ["# Fast duplicate: ghost (fork path) vs CRIU (dump --leave-running + restore)", "",
             f"Run {when}, load average {load0} at the start, {load1} at the end. Machine: {machine()}.",
             "",
             f"CRIU: {criu_version(a.criu)}, built from its source for this benchmark only (not part "
             f"of ghost). Images (CRIU) and --ckpt-dir (ghost; its fork path writes no image) in a "
             f"fresh directory under {a.images_dir} ({' '.join(fs[:1])}) for each measurement, removed "
             f"after it.", "",
             f"Command: `{cmd}` (medians; every run in criu.csv). gap = the longest stop the "
             "original's main thread saw itself (1.0 = below its 1 ms threshold); park = the tool's "
             "own report of it (ghost's park_s, CRIU's Frozen time); copy = from the start of "
             "`ghost duplicate` / `criu dump` (new processes, their start-up included) until the "
             "copy's main thread runs; for CRIU that includes the dump, writing the images and "
             "`unshare ... criu restore` in a new pid namespace.", "",
             "| MiB | ghost park ms | ghost gap ms | ghost copy ms | CRIU park ms | CRIU gap ms | "
             "CRIU copy ms | CRIU dump ms | CRIU image MiB | gap CRIU/ghost | copy CRIU/ghost |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for mib in sorted({r["mib"] for r in rows}):
        med = {}
        for tool in ("ghost", "criu"):
            sel = [r for r in rows if r["mib"] == mib and r["tool"] == tool]
            for k in ("park_ms", "gap_ms", "copy_ms", "dump_ms", "image_mib"):
                vals = [r[k] for r in sel if r.get(k, "") != ""]
                med[tool, k] = statistics.median(vals) if vals else float("nan")
        lines.append(f"| {mib} | {med['ghost', 'park_ms']:.1f} | {med['ghost', 'gap_ms']:.1f} | "
                     f"{med['ghost', 'copy_ms']:.1f} | {med['criu', 'park_ms']:.1f} | "
                     f"{med['criu', 'gap_ms']:.1f} | {med['criu', 'copy_ms']:.1f} | "
                     f"{med['criu', 'dump_ms']:.1f} | {med['criu', 'image_mib']:.0f} | "
                     f"{med['criu', 'gap_ms'] / med['ghost', 'gap_ms']:.1f} | "
                     f"{med['criu', 'copy_ms'] / med['ghost', 'copy_ms']:.1f} |")
    with open(os.path.join(res, "criu.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
