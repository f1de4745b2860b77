#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Image I/O benchmark: checkpoint and restart of 256 MiB .. 4 GiB processes of random data, beside
dd (write with fsync, cold read) of the same size on the same filesystem and memcpy, measured
alternately in one run; the memory resource (duplicate: export to a memfd, import from it); image
size against touched memory; zero and untouched memory.

    benchmarks/image_io/run.py [--build build] [--sizes 256,1024,4096] [--reps 5] [--dir DIR]

Writes benchmarks/image_io/results/{results.csv,report.md}. Needs root (drop_caches)."""

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


def die(msg):
    print(f"image_io: {msg}", file=sys.stderr)
    sys.exit(1)


SETTLE_S = 3.0


def settle():
    """Lets the machine come to rest before a timed step: on a VM that reports free pages to its
    host (virtio free page reporting, seen here), memory freed by the previous step (a killed
    process, a dropped cache) is handed back some 2 s later and costs a host fault when it is used
    again; a step timed while that happens is slowed by it. Both sides of each ratio wait alike."""
    time.sleep(SETTLE_S)


def drop_caches():
    subprocess.run(["sync"], check=True)
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")
    settle()


def kv(line):
    return dict(re.findall(r"(\w+)=(\S+)", line))


class Bench:
    def __init__(self, args):
        self.ghost = os.path.join(args.build, "launcher", "ghost")
        self.fill = os.path.join(args.build, "benchmarks", "image_io", "image_io_fill")
        self.memcpy = os.path.join(args.build, "benchmarks", "mgs", "memcpy_bench")
        for exe in (self.ghost, self.fill, self.memcpy):
            if not os.access(exe, os.X_OK):
                die(f"{exe} is missing: build first (cmake -S . -B {args.build} && ninja -C {args.build})")
        self.dir = args.dir
        os.makedirs(self.dir, exist_ok=True)

    def launch(self, mib, mode="random"):
        ckpt = os.path.join(self.dir, "ckpt")
        pidfile = os.path.join(self.dir, "pid")
        if os.path.exists(pidfile):
            os.unlink(pidfile)
        p = subprocess.Popen([self.ghost, "launch", "--ckpt-dir", ckpt, "--pid-file", pidfile, "--",
                              self.fill, str(mib), mode], stdout=subprocess.PIPE, text=True)
        if p.stdout.readline().strip() != "ready":
            die("the fill process did not start")
        for _ in range(100):
            if os.path.exists(pidfile):
                break
            time.sleep(0.01)
        return p, int(open(pidfile).read()), ckpt

    def checkpoint_kill(self, mib, mode="random"):
        p, pid, ckpt = self.launch(mib, mode)
        settle()
        out = subprocess.run([self.ghost, "checkpoint", "--kill", str(pid)], capture_output=True,
                             text=True)
        p.wait()
        if out.returncode != 0:
            die("checkpoint failed: " + out.stderr.strip())
        return kv(out.stdout), ckpt

    def restart(self, ckpt, cold):
        if cold:
            drop_caches()
        else:  # the image in the page cache, as right after it was written
            subprocess.run(["cat", os.path.join(ckpt, "image.ghost")], stdout=subprocess.DEVNULL,
                           check=True)
            settle()
        t0 = time.monotonic()
        pidfile = os.path.join(self.dir, "rpid")
        if os.path.exists(pidfile):
            os.unlink(pidfile)
        p = subprocess.Popen([self.ghost, "restart", "--pid-file", pidfile, ckpt],
                             stderr=subprocess.PIPE, text=True)
        line = p.stderr.readline()
        total = time.monotonic() - t0
        m = kv(line)
        if "import_s" not in m:
            p.kill()
            die("restart failed: " + line.strip())
        # The restored process is the fill process waiting for SIGUSR1: verify its data, then end.
        for _ in range(100):
            if os.path.exists(pidfile):
                break
            time.sleep(0.01)
        os.kill(int(open(pidfile).read()), signal.SIGUSR1)
        p.wait(timeout=120)
        return float(m["import_s"]), total

    def duplicate(self, mib):
        p, pid, _ = self.launch(mib)
        settle()
        # The copy inherits the command's std streams and outlives it: no pipes here.
        log = os.path.join(self.dir, "duplicate.log")
        with open(log, "w") as err:
            rc = subprocess.run([self.ghost, "duplicate", "--detach", "--pid-file",
                                 os.path.join(self.dir, "dpid"), str(pid)], stdout=subprocess.DEVNULL,
                                stderr=err).returncode
        text = open(log).read()
        m = kv(text)
        if rc != 0 or "export_s" not in m:
            os.kill(pid, signal.SIGKILL)
            die("duplicate failed: " + text.strip())
        os.kill(int(m["copy"]), signal.SIGKILL)
        os.kill(pid, signal.SIGKILL)
        p.wait()
        return float(m["prepare_s"]), float(m["export_s"]), float(m["import_s"]), int(m["bytes"])

    def dd_write(self, mib, src):
        dst = os.path.join(self.dir, "dd.out")
        settle()
        t0 = time.monotonic()
        subprocess.run(["dd", f"if={src}", f"of={dst}", "bs=4M", "conv=fsync"], check=True,
                       capture_output=True)
        return time.monotonic() - t0

    def dd_read(self):
        drop_caches()
        t0 = time.monotonic()
        subprocess.run(["dd", f"if={os.path.join(self.dir, 'dd.out')}", "of=/dev/null", "bs=4M"],
                       check=True, capture_output=True)
        return time.monotonic() - t0

    def memcpy_s(self, mib):
        """Seconds to memcpy MIB: into memory already faulted in, and into fresh pages."""
        settle()
        out = subprocess.run([self.memcpy, f"{mib}M", "--reps", "3"], capture_output=True, text=True)
        warm = re.search(r"warm_gbps=([0-9.]+)", out.stdout + out.stderr)
        cold = re.search(r"cold_gbps=([0-9.]+)", out.stdout + out.stderr)
        if not warm or not cold:
            die("memcpy_bench printed no GB/s figure: " + out.stdout + out.stderr)
        return (mib << 20) / (float(warm.group(1)) * 1e9), (mib << 20) / (float(cold.group(1)) * 1e9)


def machine():
    model = "?"
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem = open("/proc/meminfo").readline().split()[1]
    fs = subprocess.run(["findmnt", "-no", "FSTYPE,SOURCE", "-T", "."], capture_output=True,
                        text=True).stdout.strip()
    return (f"{model}, {os.cpu_count()} cores, {int(mem) // 1024 // 1024} GiB RAM, "
            f"kernel {platform.release()}, filesystem {fs}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--sizes", default="256,1024,4096", help="MiB, comma-separated")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--dir", default=None, help="scratch directory on the filesystem to measure")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    args = ap.parse_args()
    if os.geteuid() != 0:
        die("needs root (to drop the page cache for cold reads)")
    try:
        sizes = [int(s) for s in args.sizes.split(",")]
    except ValueError:
        die(f"bad --sizes {args.sizes!r}: expected MiB numbers separated by commas")
    avail = int([l for l in open("/proc/meminfo") if l.startswith("MemAvailable")][0].split()[1]) // 1024
    for s in sizes:
        if s * 2.5 > avail:  # the process, its duplicate or restored copy, and the page cache
            die(f"{s} MiB does not fit: {avail} MiB of memory available")
    own_dir = args.dir is None
    args.dir = args.dir or tempfile.mkdtemp(prefix="ghost-image-io-", dir=ROOT)
    b = Bench(args)
    free = shutil.disk_usage(args.dir).free >> 20
    if max(sizes) * 3 > free:
        die(f"not enough disk in {args.dir}: {free} MiB free")
    rows = []
    try:
        for mib in sizes:
            src = os.path.join(args.dir, "random.src")
            subprocess.run(["dd", "if=/dev/urandom", f"of={src}", "bs=1M", f"count={mib}"], check=True,
                           capture_output=True)
            for rep in range(args.reps):
                # Alternate ghost and dd, and which of the two goes first, so that both see the
                # same state of a noisy machine.
                if rep % 2 == 0:
                    c, ckpt = b.checkpoint_kill(mib)
                    ddw = b.dd_write(mib, src)
                    cold, cold_total = b.restart(ckpt, cold=True)
                    ddr = b.dd_read()
                else:
                    ddw = b.dd_write(mib, src)
                    c, ckpt = b.checkpoint_kill(mib)
                    ddr = b.dd_read()
                    cold, cold_total = b.restart(ckpt, cold=True)
                warm, _ = b.restart(ckpt, cold=False)
                prep, exp, imp, dbytes = b.duplicate(mib)
                mc, mc_fresh = b.memcpy_s(mib)
                row = dict(size_mib=mib, rep=rep, image_bytes=int(c["bytes"]),
                           memory_bytes=int(c["memory_bytes"]), checkpoint_s=float(c["total_s"]),
                           export_s=float(c["export_s"]), sync_s=float(c["sync_s"]), dd_write_s=ddw,
                           restart_cold_s=cold, restart_warm_s=warm, dd_cold_read_s=ddr,
                           mem_prepare_s=prep, mem_export_s=exp, mem_import_s=imp, memcpy_s=mc,
                           memcpy_fresh_s=mc_fresh)
                rows.append(row)
                print(", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()),
                      flush=True)
            os.unlink(src)
        # Zero and untouched memory cost nothing.
        extra = []
        for mode in ("zero", "sparse"):
            c, _ = b.checkpoint_kill(1024, mode)
            extra.append((mode, int(c["bytes"]), int(c["memory_bytes"])))
    finally:
        if own_dir:
            shutil.rmtree(args.dir, ignore_errors=True)
    write_results(args.out, rows, extra)


def med(rows, key):
    return statistics.median(r[key] for r in rows)


def write_results(out, rows, extra):
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "results.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        w.writeheader()
        w.writerows(rows)
    lines = ["# Image I/O: ghost checkpoint/restart against dd and memcpy", "",
             f"Machine: {machine()}.  ",
             f"Run: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; medians of "
             f"{len({r['rep'] for r in rows})} alternating repetitions; processes hold random data.", "",
             "| size | image / touched | checkpoint s | dd write+fsync s | ratio | restart cold s | "
             "dd cold read s | ratio | restart warm s | mem prepare s | mem export s | mem import s | "
             "memcpy s | mem export GB/s | memcpy GB/s | export / memcpy bandwidth | memcpy fresh GB/s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for mib in sorted({r["size_mib"] for r in rows}):
        rs = [r for r in rows if r["size_mib"] == mib]
        ck, ddw, rc, ddr = med(rs, "checkpoint_s"), med(rs, "dd_write_s"), med(rs, "restart_cold_s"), med(rs, "dd_cold_read_s")
        me, mc = med(rs, "mem_export_s"), med(rs, "memcpy_s")
        ratio_img = med(rs, "image_bytes") / (mib << 20)
        lines.append(f"| {mib} MiB | {ratio_img:.4f} | {ck:.3f} | {ddw:.3f} | {ck / ddw:.2f} | {rc:.3f} | "
                     f"{ddr:.3f} | {rc / ddr:.2f} | {med(rs, 'restart_warm_s'):.3f} | "
                     f"{med(rs, 'mem_prepare_s'):.3f} | {me:.3f} | "
                     f"{med(rs, 'mem_import_s'):.3f} | {mc:.3f} | {(mib << 20) / me / 1e9:.2f} | "
                     f"{(mib << 20) / mc / 1e9:.2f} | {mc / me:.2f} | "
                     f"{(mib << 20) / med(rs, 'memcpy_fresh_s') / 1e9:.2f} |")
    lines += ["", "Zero and untouched memory (1 GiB mapped):", ""]
    for mode, total, mem in extra:
        what = "written with zeros" if mode == "zero" else "1/64 of the pages touched"
        lines.append(f"- {what}: image {total} bytes, of which {mem} bytes of memory")
    lines += ["", "Ratios are ghost / reference measured alternately in the same run (below 1: ghost is "
              "faster); which of the two goes first alternates between repetitions, and every timed "
              "step starts after a 3 s pause (memory freed by the step before is handed back to the "
              "VM's host meanwhile, and would slow whichever step came first). Checkpoint = park + export + durable commit (fsync, rename); restart = from the "
              "`ghost restart` command to the restored threads running, cold = page cache dropped first, "
              "warm = the image read into the page cache first. "
              "mem = `ghost duplicate` through a memfd: prepare = allocating the image memory while the "
              "process still runs (sized by its resident memory); export = parked until resumed, the "
              "image complete in memory; import includes starting the restorer. memcpy = copy into a "
              "buffer already faulted in (the goal's reference); memcpy fresh = into newly mapped pages."]
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
