#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Measurement half of the MGS evaluation (called by run-eval.sh; see README.md).

Writes into --out: system.json, native.csv, references.csv, and, unless --no-ghost, image_size.csv,
disk.csv, memory.csv, overhead.csv, correctness.csv (plus ghost_status.json describing what ran).
report.py turns them into report.md and the PNG plots.

The ghost CLI is driven through the contract of issue 4:
  ghost launch [--ckpt-dir DIR] [--pid-file FILE] -- PROG ARGS...
  ghost checkpoint [--dir DIR] [--kill] PID   -> stdout: checkpoint ... bytes= export_s= write_s= total_s=
  ghost restart [--pid-file FILE] DIR|IMAGE   -> stderr: restored pid=N import_s=... total_s=...
  ghost duplicate [--via mem|pipe] PID        -> stdout: key=value (export_s, import_s, total_s, bytes)
  ghost inspect DIR|IMAGE                     -> exit 0 if intact
Key=value output is parsed leniently: unknown keys are kept, missing ones become empty cells.
"""
import argparse
import csv
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

PROG = "run-eval.sh"
KV_RE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=(\S+)")
EXPECT_RE = re.compile(r"^mgs n=\d+ error=\S+ checksum=\S+$", re.M)


def log(msg):
    print(f"[eval {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def die(msg, code=2):
    print(f"{PROG}: error: {msg}", file=sys.stderr, flush=True)
    sys.exit(code)


def parse_kv(text):
    return {k: v for k, v in KV_RE.findall(text)}


def fnum(d, *keys):
    for k in keys:
        v = d.get(k)
        if v is None:
            continue
        try:
            return float(v)
        except ValueError:
            pass
    return None


def mem_available():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def matrix_bytes(n):
    return 2 * n * n * 8


def run(cmd, timeout=None, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


def run_logged(cmd, base, timeout, env=None):
    """Run cmd with stdout/stderr in files (not pipes: a restored or duplicated process may inherit
    them and keep them open); returns (status, stdout, stderr). Raises TimeoutExpired."""
    out, err = Path(f"{base}.out"), Path(f"{base}.err")
    with open(out, "w") as fo, open(err, "w") as fe:
        p = PROCS.track(subprocess.Popen(cmd, stdout=fo, stderr=fe, stdin=subprocess.DEVNULL, env=env))
    try:
        p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        raise
    return p.returncode, read_text(out), read_text(err)


def sh_out(cmd):
    try:
        r = run(cmd, timeout=30)
        return (r.stdout or r.stderr).strip()
    except Exception as e:  # noqa: BLE001 - best effort system description
        return f"unavailable ({e})"


class Procs:
    """Every process we start or learn about, so that nothing is left behind (killed by pid)."""

    def __init__(self):
        self.popens = []
        self.pids = set()
        self.cmdlines = set()  # exact mgs command lines we launched under ghost (to find copies)

    def track(self, p):
        self.popens.append(p)
        return p

    def cleanup(self):
        for pid in list(self.pids):
            kill_pid(pid, signal.SIGKILL)
        self.pids.clear()
        for cl in self.cmdlines:  # duplicates/restored copies whose pid we never learnt
            for pid in find_copies(list(cl), {os.getpid()}):
                kill_pid(pid, signal.SIGKILL)
        for p in self.popens:
            if p.poll() is None:
                try:
                    p.kill()
                    p.wait(timeout=10)
                except Exception:  # noqa: BLE001
                    pass


PROCS = Procs()


def kill_pid(pid, sig):
    try:
        os.kill(pid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # zombies count as dead
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_pid_gone(pid, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not pid_alive(pid):
            return True
        time.sleep(0.01)
    return False


def read_text(path):
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def wait_for(path, pattern, timeout, proc=None, pid=None):
    """Poll file `path` until regex `pattern` matches; returns (match, seconds waited) or (None, t)."""
    rx = re.compile(pattern, re.M)
    t0 = time.monotonic()
    while True:
        m = rx.search(read_text(path))
        if m:
            return m, time.monotonic() - t0
        if proc is not None and proc.poll() is not None:
            m = rx.search(read_text(path))
            return m, time.monotonic() - t0
        if pid is not None and not pid_alive(pid):
            m = rx.search(read_text(path))
            return m, time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            return None, time.monotonic() - t0
        time.sleep(0.005)


def read_pid_file(path, timeout, proc=None):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        txt = read_text(path).strip()
        if txt.isdigit():
            return int(txt)
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.005)
    txt = read_text(path).strip()
    return int(txt) if txt.isdigit() else None


def drop_caches(enabled):
    os.sync()
    if not enabled:
        return False
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def rss_of(pid):
    out = {}
    for fn, keys in (("status", ("VmRSS", "VmSize", "VmData")), ("smaps_rollup", ("Rss", "Pss"))):
        for line in read_text(f"/proc/{pid}/{fn}").splitlines():
            k = line.split(":")[0]
            if k in keys:
                out[k.lower() + "_kb"] = int(line.split()[1])
    return out


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def write_csv(path, rows, fields=None):
    if fields is None:
        fields = []
        for r in rows:
            for k in r:
                if k not in fields:
                    fields.append(k)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in fields})


# ---------------------------------------------------------------------------------------------


def system_info(a):
    lscpu = sh_out(["lscpu"])
    model = re.search(r"Model name:\s*(.+)", lscpu)
    fs = sh_out(["findmnt", "-n", "-T", str(a.disk_dir), "-o", "SOURCE,FSTYPE,OPTIONS"])
    dev = fs.split()[0] if fs and not fs.startswith("unavailable") else ""
    lsblk = sh_out(["lsblk", "-d", "-n", "-o", "NAME,MODEL,ROTA,SIZE", dev]) if dev.startswith("/dev/") else ""
    mem_total = 0
    for line in read_text("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            mem_total = int(line.split()[1]) * 1024
    git = sh_out(["git", "-C", str(a.repo), "rev-parse", "--short", "HEAD"])
    ghost_version = ""
    if a.ghost and os.access(a.ghost, os.X_OK):
        try:
            r = run([a.ghost, "--version"], timeout=10)
            ghost_version = (r.stdout or r.stderr).strip().splitlines()[0] if r.returncode == 0 else ""
        except Exception:  # noqa: BLE001
            pass
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "cpu_model": model.group(1).strip() if model else platform.processor(),
        "cpus": os.cpu_count(),
        "hypervisor": (re.search(r"Hypervisor vendor:\s*(.+)", lscpu) or [None, ""])[1],
        "mem_total_bytes": mem_total,
        "mem_available_bytes": mem_available(),
        "kernel": platform.release(),
        "os": sh_out(["sh", "-c", ". /etc/os-release && echo \"$PRETTY_NAME\""]),
        "disk_dir": str(a.disk_dir),
        "disk_fs": fs,
        "disk_device": lsblk,
        "gxx": sh_out(["g++", "--version"]).splitlines()[0],
        "cmake": sh_out(["cmake", "--version"]).splitlines()[0],
        "openmpi": sh_out(["sh", "-c", "mpirun --version 2>&1 | head -1"]),
        "python": sys.version.split()[0],
        "matplotlib": __import__("matplotlib").__version__,
        "git": git if re.fullmatch(r"[0-9a-f]{4,40}", git or "") else "no commit",
        "ghost": str(a.ghost) if a.ghost else "",
        "ghost_version": ghost_version,
        "mgs": str(a.mgs),
        "drop_caches": a.can_drop,
        "sizes": a.sizes,
        "quick": a.quick,
        "reps": a.reps,
        "hold_at": a.hold_at,
        "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def mgs_args(a, n, hold=None, repeat=1, progress=False):
    args = [str(a.mgs), "--n", str(n), "--seed", str(a.seed)]
    if repeat != 1:
        args += ["--repeat", str(repeat)]
    if progress:
        args.append("--progress")
    if hold:
        args += ["--pre-hold" if a.hold_at == "start" else "--hold", str(hold)]
    return args


def parse_timing(text):
    m = re.search(r"timing (.*)$", text, re.M)
    return parse_kv(m.group(1)) if m else {}


def native_run(a, n, logdir):
    """Native reference run with a hold: footprint at the hold point, expected output, times."""
    out, err = logdir / f"native-{n}.out", logdir / f"native-{n}.err"
    args = mgs_args(a, n, hold=a.hold_s)
    t0 = time.monotonic()
    with open(out, "w") as fo, open(err, "w") as fe:
        p = PROCS.track(subprocess.Popen(args, stdout=fo, stderr=fe))
    m, _ = wait_for(err, r"holding", a.timeout_for(n), proc=p)
    fp = rss_of(p.pid) if m else {}
    t_hold = time.monotonic() - t0
    if m:
        kill_pid(p.pid, signal.SIGUSR1)
    try:
        p.wait(timeout=a.timeout_for(n))
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        die(f"native mgs --n {n} timed out (see {err})", 1)
    wall = time.monotonic() - t0
    text = read_text(out)
    if p.returncode != 0 or not EXPECT_RE.search(text):
        die(f"native mgs --n {n} failed with status {p.returncode} (see {err})", 1)
    t = parse_timing(read_text(err))
    row = {
        "n": n,
        "matrix_bytes": matrix_bytes(n),
        "init_s": fnum(t, "init_s"),
        "compute_s": fnum(t, "compute_s"),
        "verify_s": fnum(t, "verify_s"),
        "to_hold_s": round(t_hold, 6),
        "wall_s": round(wall, 6),
        "vmrss_kb": fp.get("vmrss_kb"),
        "rss_kb": fp.get("rss_kb"),
        "vmsize_kb": fp.get("vmsize_kb"),
        "output": text.strip(),
    }
    return row, text


def references(a, n, nbytes, src_file):
    """dd write (conv=fsync) and cold read of nbytes on the disk filesystem, memcpy of nbytes."""
    rows = []
    dst = a.disk_dir / "dd-ref.bin"
    for rep in range(a.reps):
        if dst.exists():
            dst.unlink()
        os.sync()
        src = str(src_file) if src_file else "/dev/urandom"
        t0 = time.monotonic()
        r = run(["dd", f"if={src}", f"of={dst}", "bs=4M", f"count={nbytes}", "iflag=count_bytes,fullblock",
                 "conv=fsync"], timeout=3600)
        t_write = time.monotonic() - t0
        if r.returncode != 0:
            die(f"dd write failed: {r.stderr.strip().splitlines()[-1] if r.stderr else r.returncode}", 1)
        cold = drop_caches(a.can_drop)
        t0 = time.monotonic()
        r = run(["dd", f"if={dst}", "of=/dev/null", "bs=4M"], timeout=3600)
        t_read = time.monotonic() - t0
        if r.returncode != 0:
            die("dd read failed", 1)
        rows.append({"n": n, "rep": rep, "bytes": nbytes, "dd_write_s": round(t_write, 6),
                     "dd_read_cold_s": round(t_read, 6), "read_cache_dropped": cold})
    if dst.exists():
        dst.unlink()
    r = run([str(a.memcpy), str(nbytes), "--reps", str(max(3, a.reps))], timeout=600)
    if r.returncode != 0:
        die(f"memcpy_bench failed: {r.stderr.strip()}", 1)
    kv = parse_kv(r.stdout)
    for row in rows:
        row.update({"memcpy_warm_gbps": fnum(kv, "warm_gbps"), "memcpy_warm_s": fnum(kv, "warm_best_s"),
                    "memcpy_cold_gbps": fnum(kv, "cold_gbps"), "memcpy_cold_s": fnum(kv, "cold_best_s")})
    return rows


# ---- ghost-dependent parts -------------------------------------------------------------------


class GhostRunError(Exception):
    pass


def launch_under_ghost(a, n, tag, logdir, hold=True, repeat=1, progress=False):
    ckdir = a.disk_dir / f"ckpt-{tag}"
    shutil.rmtree(ckdir, ignore_errors=True)
    ckdir.mkdir(parents=True)
    pidf = a.disk_dir / f"{tag}.pid"
    pidf.unlink(missing_ok=True)
    out, err = logdir / f"{tag}.launch.out", logdir / f"{tag}.launch.err"
    margs = mgs_args(a, n, hold=a.hold_s if hold else None, repeat=repeat, progress=progress)
    PROCS.cmdlines.add(tuple(margs))
    cmd = [str(a.ghost), "launch", "--ckpt-dir", str(ckdir), "--pid-file", str(pidf), "--"] + margs
    with open(out, "w") as fo, open(err, "w") as fe:
        p = PROCS.track(subprocess.Popen(cmd, stdout=fo, stderr=fe))
    pid = read_pid_file(pidf, 30, proc=p)
    if pid is None:
        raise GhostRunError(f"ghost launch wrote no pid file ({pidf}); status {p.poll()}, see {err}")
    PROCS.pids.add(pid)
    return p, pid, ckdir, out, err


def wait_hold(a, n, p, err):
    m, _ = wait_for(err, r"holding", a.timeout_for(n), proc=p)
    if not m:
        raise GhostRunError(f"mgs under ghost never reached its hold point (see {err})")


def finish_launch(p, timeout=60):
    try:
        return p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        return None


def disk_rep(a, n, rep, expected, logdir):
    tag = f"disk-{n}-{rep}"
    p, pid, ckdir, lout, lerr = launch_under_ghost(a, n, tag, logdir)
    wait_hold(a, n, p, lerr)
    row = {"n": n, "rep": rep}
    # checkpoint to disk, killing the original
    t0 = time.monotonic()
    rc, so, se = run_logged([str(a.ghost), "checkpoint", "--dir", str(ckdir), "--kill", str(pid)],
                            logdir / f"{tag}.checkpoint", a.timeout_for(n))
    row["ckpt_wall_s"] = round(time.monotonic() - t0, 6)
    if rc != 0:
        raise GhostRunError(f"ghost checkpoint exited {rc}: {(se or so).strip()[:300]}")
    kv = parse_kv(so + "\n" + se)
    row.update({"ckpt_park_s": fnum(kv, "park_s"), "ckpt_export_s": fnum(kv, "export_s"),
                "ckpt_write_s": fnum(kv, "write_s", "sync_s"), "ckpt_total_s": fnum(kv, "total_s"),
                "memory_bytes": fnum(kv, "memory_bytes"), "ckpt_output": " ".join(f"{k}={v}" for k, v in kv.items())})
    image = Path(kv["image"]) if "image" in kv else ckdir / "image.ghost"
    row["image_bytes"] = int(fnum(kv, "bytes") or 0) or (image.stat().st_size if image.exists() else None)
    row["image_file_bytes"] = image.stat().st_size if image.exists() else None
    row["dir_bytes"] = sum(f.stat().st_size for f in ckdir.rglob("*") if f.is_file())
    wait_pid_gone(pid, 30)
    PROCS.pids.discard(pid)
    finish_launch(p, 30)
    rc, _, _ = run_logged([str(a.ghost), "inspect", str(ckdir)], logdir / f"{tag}.inspect", 300)
    row["inspect_ok"] = rc == 0
    # restart with a cold page cache
    row["restart_cache_dropped"] = drop_caches(a.can_drop)
    rpid_f = a.disk_dir / f"{tag}.restart.pid"
    rpid_f.unlink(missing_ok=True)
    rout, rerr = logdir / f"{tag}.restart.out", logdir / f"{tag}.restart.err"
    t0 = time.monotonic()
    with open(rout, "w") as fo, open(rerr, "w") as fe:
        rp = PROCS.track(subprocess.Popen([str(a.ghost), "restart", "--pid-file", str(rpid_f), str(ckdir)],
                                          stdout=fo, stderr=fe))
    m, waited = wait_for(rerr, r"restored pid=\d+.*$", a.timeout_for(n), proc=rp)
    row["restart_wall_s"] = round(waited, 6)
    if not m:
        finish_launch(rp, 5)
        raise GhostRunError(f"ghost restart printed no 'restored' line, status {rp.poll()}: "
                            f"{read_text(rerr).strip()[:300]}")
    kv = parse_kv(m.group(0))
    # total: as reported by ghost, else the driver's time from starting `ghost restart` to its line
    row.update({"restart_import_s": fnum(kv, "import_s"),
                "restart_total_s": fnum(kv, "total_s") or round(waited, 6),
                "restart_total_from": "ghost" if fnum(kv, "total_s") else "driver-wall",
                "restart_output": m.group(0).strip()})
    rpid = int(kv["pid"]) if kv.get("pid", "").isdigit() else read_pid_file(rpid_f, 10)
    if rpid:
        PROCS.pids.add(rpid)
        kill_pid(rpid, signal.SIGUSR1)  # end the hold in the restored process
    status = finish_launch(rp, a.timeout_for(n))
    if rpid:
        wait_pid_gone(rpid, 10)
        PROCS.pids.discard(rpid)
    got = EXPECT_RE.findall(read_text(rout)) + EXPECT_RE.findall(read_text(lout))
    row["restart_status"] = status
    row["output_matches"] = status == 0 and expected in got
    shutil.rmtree(ckdir, ignore_errors=True)
    return row


def find_copies(args, known):
    """Other live processes running exactly our mgs command line (the duplicate's copy)."""
    want = "\0".join(args) + "\0"
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) in known:
            continue
        try:
            if (d / "cmdline").read_text(errors="replace") == want:
                found.append(int(d.name))
        except OSError:
            continue
    return found


def memory_rep(a, n, rep, expected, logdir):
    tag = f"mem-{n}-{rep}"
    p, pid, ckdir, lout, lerr = launch_under_ghost(a, n, tag, logdir)
    wait_hold(a, n, p, lerr)
    row = {"n": n, "rep": rep, "via": a.dup_via if "--via" in a.dup_help else "default"}
    cmd = [str(a.ghost), "duplicate"]
    copy_pidf = a.disk_dir / f"{tag}.copy.pid"
    copy_pidf.unlink(missing_ok=True)
    if "--via" in a.dup_help:
        cmd += ["--via", a.dup_via]
    if "--pid-file" in a.dup_help:
        cmd += ["--pid-file", str(copy_pidf)]
    if "--detach" in a.dup_help:  # otherwise the CLI waits for the copy to end
        cmd += ["--detach"]
    t0 = time.monotonic()
    rc, so, se = run_logged(cmd + [str(pid)], logdir / f"{tag}.duplicate", a.timeout_for(n))
    row["dup_wall_s"] = round(time.monotonic() - t0, 6)
    if rc != 0:
        raise GhostRunError(f"ghost duplicate exited {rc}: {(se or so).strip()[:300]}")
    kv = parse_kv(so + "\n" + se)
    row["dup_output"] = " ".join(f"{k}={v}" for k, v in kv.items())
    row.update({"export_s": fnum(kv, "export_s"), "import_s": fnum(kv, "import_s"),
                "total_s": fnum(kv, "total_s"),
                "ckpt_total_s": fnum(kv, "checkpoint_total_s", "ckpt_total_s"),
                "restart_total_s": fnum(kv, "restart_total_s"),
                "bytes": fnum(kv, "bytes")})
    copy = None
    for k in ("copy", "copy_pid", "new_pid", "dup_pid", "child_pid", "clone_pid", "pid2"):
        if kv.get(k, "").isdigit():
            copy = int(kv[k])
            break
    if copy is None and kv.get("pid", "").isdigit() and int(kv["pid"]) != pid:
        copy = int(kv["pid"])
    if copy is None and copy_pidf.exists():
        copy = read_pid_file(copy_pidf, 5)
    if copy is None:
        copies = find_copies(mgs_args(a, n, hold=a.hold_s), {pid, os.getpid()})
        copy = copies[0] if copies else None
    row["copy_pid_known"] = copy is not None
    for q in (pid, copy):
        if q:
            PROCS.pids.add(q)
            kill_pid(q, signal.SIGUSR1)
    finish_launch(p, a.timeout_for(n))
    if copy:
        row["copy_finished"] = wait_pid_gone(copy, a.timeout_for(n))
        if not row["copy_finished"]:
            kill_pid(copy, signal.SIGKILL)
    PROCS.pids.discard(pid)
    PROCS.pids.discard(copy)
    got = EXPECT_RE.findall(read_text(lout))
    row["original_status"] = p.returncode
    row["output_matches"] = p.returncode == 0 and expected in got
    row["outputs_seen"] = len(got)
    shutil.rmtree(ckdir, ignore_errors=True)
    return row


def overhead_runs(a, logdir):
    n, rep_count, repeat = a.overhead_n, a.overhead_reps, a.overhead_repeat
    rows = []
    for i in range(rep_count):
        for mode in (("native", "ghost") if i % 2 == 0 else ("ghost", "native")):
            args = mgs_args(a, n, repeat=repeat)
            if mode == "ghost":
                args = [str(a.ghost), "launch", "--"] + args
            t0 = time.monotonic()
            rc, so, se = run_logged(args, logdir / f"overhead-{mode}-{i}", a.timeout_for(n) * repeat)
            wall = time.monotonic() - t0
            if rc != 0:
                raise GhostRunError(f"overhead run ({mode}) exited {rc}: {se.strip()[-300:]}")
            t = parse_timing(se)
            rows.append({"n": n, "repeat": repeat, "iteration": i, "mode": mode, "wall_s": round(wall, 6),
                         "compute_s": fnum(t, "compute_s"), "verify_s": fnum(t, "verify_s"),
                         "output": so.strip()})
    return rows


def mpi_overhead_runs(a, logdir, ranks=4):
    """MPI MGS with `ranks` ranks under plain mpirun and under ghostrun (the split-process MPI layer),
    alternating; both must print the sequential program's line."""
    mgs_mpi = a.mgs.parent / "mgs_mpi"
    ghostrun = a.ghost.parent / "ghostrun" / "ghostrun"
    for exe in (mgs_mpi, ghostrun):
        if not exe.exists():
            raise GhostRunError(f"{exe} is missing (build the MPI targets)")
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    n, repeat = a.overhead_n, a.overhead_repeat
    rows = []
    for i in range(a.overhead_reps):
        for mode in (("native", "ghost") if i % 2 == 0 else ("ghost", "native")):
            launcher = ["mpirun"] if mode == "native" else [str(ghostrun)]
            args = launcher + ["--oversubscribe", "-np", str(ranks)] + [str(mgs_mpi)] + mgs_args(a, n, repeat=repeat)[1:]
            t0 = time.monotonic()
            rc, so, se = run_logged(args, logdir / f"mpi-overhead-{mode}-{i}", a.timeout_for(n) * repeat * 2, env=env)
            wall = time.monotonic() - t0
            if rc != 0:
                raise GhostRunError(f"MPI overhead run ({mode}) exited {rc}: {se.strip()[-300:]}")
            t = parse_timing(se)
            rows.append({"n": n, "ranks": ranks, "repeat": repeat, "iteration": i, "mode": mode,
                         "wall_s": round(wall, 6), "compute_s": fnum(t, "compute_s"), "output": so.strip()})
    return rows


def correctness_run(a, logdir):
    """Checkpoint (--kill) in the middle of a --repeat run, restart, compare stdout byte for byte."""
    n, repeat = a.correct_n, a.correct_repeat
    ref = run(mgs_args(a, n, repeat=repeat), timeout=a.timeout_for(n) * repeat)
    if ref.returncode != 0:
        raise GhostRunError("native reference for the correctness run failed")
    tag = f"midrun-{n}"
    p, pid, ckdir, lout, lerr = launch_under_ghost(a, n, tag, logdir, hold=False, repeat=repeat, progress=True)
    at = max(1, repeat // 2)
    m, _ = wait_for(lerr, rf"repeat {at}/{repeat} done", a.timeout_for(n) * repeat, proc=p)
    if not m:
        raise GhostRunError(f"mid-run test: no progress line (see {lerr})")
    rc, so, se = run_logged([str(a.ghost), "checkpoint", "--dir", str(ckdir), "--kill", str(pid)],
                            logdir / f"{tag}.checkpoint", a.timeout_for(n))
    if rc != 0:
        raise GhostRunError(f"mid-run checkpoint exited {rc}: {(se or so).strip()[:300]}")
    wait_pid_gone(pid, 30)
    PROCS.pids.discard(pid)
    finish_launch(p, 30)
    drop_caches(a.can_drop)
    rout, rerr = logdir / f"{tag}.restart.out", logdir / f"{tag}.restart.err"
    with open(rout, "w") as fo, open(rerr, "w") as fe:
        rp = PROCS.track(subprocess.Popen([str(a.ghost), "restart", str(ckdir)], stdout=fo, stderr=fe))
    status = finish_launch(rp, a.timeout_for(n) * repeat)
    restored_out = read_text(rout) or read_text(lout)
    shutil.rmtree(ckdir, ignore_errors=True)
    return [{"n": n, "repeat": repeat, "checkpoint_after_repeat": at, "restart_status": status,
             "expected": ref.stdout.strip(), "got": restored_out.strip(),
             "byte_identical": status == 0 and restored_out == ref.stdout}]


# ---------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(prog="eval.py")
    ap.add_argument("--repo", type=Path, required=True)
    ap.add_argument("--mgs", type=Path, required=True)
    ap.add_argument("--memcpy", type=Path, required=True)
    ap.add_argument("--ghost", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--disk-dir", type=Path, required=True)
    ap.add_argument("--sizes", required=True)
    ap.add_argument("--sizes-explicit", action="store_true")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--large-reps", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--hold-at", choices=("end", "start"), default="end")
    ap.add_argument("--dup-via", default="mem")
    ap.add_argument("--overhead-n", type=int, default=2000)
    ap.add_argument("--overhead-repeat", type=int, default=1)
    ap.add_argument("--overhead-reps", type=int, default=5)
    ap.add_argument("--correct-n", type=int, default=1000)
    ap.add_argument("--correct-repeat", type=int, default=6)
    a = ap.parse_args()
    a.hold_s = 3600
    a.sizes = [int(s) for s in a.sizes.split(",") if s]
    a.out.mkdir(parents=True, exist_ok=True)
    a.disk_dir.mkdir(parents=True, exist_ok=True)
    logdir = a.disk_dir / "logs"
    logdir.mkdir(parents=True, exist_ok=True)
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("1\n")
        a.can_drop = True
    except OSError:
        a.can_drop = False
        log("warning: cannot write /proc/sys/vm/drop_caches (not root?): reads will not be cold")

    # ---- sizes that fit ----
    avail = mem_available()
    free_disk = shutil.disk_usage(a.disk_dir).free
    sizes, skipped = [], []
    for n in a.sizes:
        need = matrix_bytes(n)
        need_ghost = 3 * need  # original + duplicate copy + in-memory image
        if need * 1.1 > avail or (a.ghost and need_ghost > avail * 0.9) or 2.5 * need > free_disk:
            why = (f"n={n} does not fit: needs {need / 2**20:.0f} MiB for the matrices "
                   f"({need_ghost / 2**20:.0f} MiB for a memory duplicate, {2.5 * need / 2**20:.0f} MiB of disk); "
                   f"MemAvailable {avail / 2**20:.0f} MiB, disk free {free_disk / 2**20:.0f} MiB")
            if a.sizes_explicit:
                die(why)
            skipped.append(why)
            log("skipping " + why)
        else:
            sizes.append(n)
    a.sizes = sizes
    native_est = {}

    def timeout_for(n):
        est = native_est.get(n)
        if est is None:
            est = 10 * (n / 1000.0) ** 3  # generous: ~0.35 s per 1000^3 here
        return 120 + 5 * est

    a.timeout_for = timeout_for
    a.dup_help = ""
    if a.ghost:  # adapt to the options this ghost CLI actually has (--via, --pid-file, --detach)
        try:
            r = run([str(a.ghost), "duplicate", "--help"], timeout=10)
            a.dup_help = r.stdout + r.stderr
        except (OSError, subprocess.TimeoutExpired):
            pass
    sysinfo = system_info(a)
    sysinfo["skipped_sizes"] = skipped
    (a.out / "system.json").write_text(json.dumps(sysinfo, indent=2, default=str) + "\n")

    # random source for dd, in tmpfs (so that dd measures the disk, not the generator)
    src_file = None
    max_bytes = max((matrix_bytes(n) for n in sizes), default=0) + (64 << 20)
    shm = Path("/dev/shm")
    if shm.is_dir() and shutil.disk_usage(shm).free > max_bytes + (256 << 20) and max_bytes < avail * 0.4:
        src_file = shm / f"ghost-mgs-rand-{os.getpid()}"
        log(f"generating {max_bytes / 2**20:.0f} MiB of random data in {src_file}")
        r = run(["dd", "if=/dev/urandom", f"of={src_file}", "bs=4M", f"count={max_bytes}",
                 "iflag=count_bytes,fullblock"], timeout=3600)
        if r.returncode != 0:
            src_file.unlink(missing_ok=True)
            src_file = None

    native_rows, ref_rows = [], []
    disk_rows, mem_rows, status = [], [], {"ghost": bool(a.ghost), "errors": []}
    try:
        expected = {}
        for n in sizes:
            log(f"n={n}: native reference run")
            row, text = native_run(a, n, logdir)
            native_rows.append(row)
            native_est[n] = (row["compute_s"] or 0) + (row["verify_s"] or 0)
            expected[n] = EXPECT_RE.search(text).group(0)
            log(f"n={n}: compute {row['compute_s']:.3f} s, verify {row['verify_s']:.3f} s, "
                f"RSS at hold {row['vmrss_kb']} KiB")
            write_csv(a.out / "native.csv", native_rows)
            reps = a.reps if n <= 2000 else min(a.reps, a.large_reps)
            image_bytes = None
            if a.ghost:
                for rep in range(reps):
                    log(f"n={n}: ghost disk checkpoint/restart, rep {rep + 1}/{reps}")
                    try:
                        disk_rows.append(disk_rep(a, n, rep, expected[n], logdir))
                        image_bytes = disk_rows[-1].get("image_bytes") or image_bytes
                    except (GhostRunError, subprocess.TimeoutExpired) as e:
                        status["errors"].append(f"disk n={n} rep={rep}: {e}")
                        log(f"ghost disk run failed: {e}")
                        disk_rows.append({"n": n, "rep": rep, "error": str(e)})
                    write_csv(a.out / "disk.csv", disk_rows)
                    log(f"n={n}: ghost duplicate (memory resource), rep {rep + 1}/{reps}")
                    try:
                        mem_rows.append(memory_rep(a, n, rep, expected[n], logdir))
                    except (GhostRunError, subprocess.TimeoutExpired) as e:
                        status["errors"].append(f"memory n={n} rep={rep}: {e}")
                        log(f"ghost duplicate failed: {e}")
                        mem_rows.append({"n": n, "rep": rep, "error": str(e)})
                    write_csv(a.out / "memory.csv", mem_rows)
                    PROCS.cleanup()
            nbytes = int(image_bytes) if image_bytes else (row["vmrss_kb"] or 0) * 1024 or matrix_bytes(n)
            log(f"n={n}: references for {nbytes / 2**20:.1f} MiB "
                f"({'ghost image' if image_bytes else 'native RSS at hold'})")
            for rr in references(a, n, nbytes, src_file):
                rr["bytes_source"] = "ghost-image" if image_bytes else "native-rss"
                ref_rows.append(rr)
            write_csv(a.out / "references.csv", ref_rows)

        if a.ghost:
            log(f"overhead: n={a.overhead_n}, {a.overhead_reps} alternating native/ghost pairs")
            try:
                write_csv(a.out / "overhead.csv", overhead_runs(a, logdir))
            except (GhostRunError, subprocess.TimeoutExpired) as e:
                status["errors"].append(f"overhead: {e}")
                log(f"overhead runs failed: {e}")
            log(f"MPI overhead: mgs_mpi n={a.overhead_n}, 4 ranks, mpirun vs ghostrun")
            try:
                write_csv(a.out / "mpi_overhead.csv", mpi_overhead_runs(a, logdir))
            except (GhostRunError, subprocess.TimeoutExpired) as e:
                status["errors"].append(f"mpi overhead: {e}")
                log(f"MPI overhead runs failed: {e}")
            log(f"correctness: checkpoint in the middle of mgs --n {a.correct_n} --repeat {a.correct_repeat}")
            try:
                write_csv(a.out / "correctness.csv", correctness_run(a, logdir))
            except (GhostRunError, subprocess.TimeoutExpired) as e:
                status["errors"].append(f"correctness: {e}")
                log(f"correctness run failed: {e}")
        else:
            for f in ("disk.csv", "memory.csv", "overhead.csv", "mpi_overhead.csv", "correctness.csv"):
                (a.out / f).unlink(missing_ok=True)
    finally:
        PROCS.cleanup()
        if src_file:
            src_file.unlink(missing_ok=True)
    (a.out / "ghost_status.json").write_text(json.dumps(status, indent=2) + "\n")
    if status["errors"]:
        log(f"{len(status['errors'])} ghost measurement(s) failed; see ghost_status.json and {logdir}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        PROCS.cleanup()
        die("interrupted", 130)
