# SPDX-License-Identifier: Apache-2.0
"""Helpers shared by the job checkpoint benchmarks (run.py, dmtcp.py, benchmarks/mgs/mpi_eval.py)
and others: jobs under ghostrun or mpirun whose output lines are timestamped as they arrive,
ghost's key=value lines, the page cache, the machine description, a report that keeps its notes."""

import os
import platform
import re
import signal
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

MPI_ENV = dict(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1")


def write_report(path, lines):
    """Writes `lines` as the report at `path`, keeping what was written by hand below the old
    report's table: everything from its first "## " heading on."""
    notes = ""
    if os.path.exists(path):
        with open(path) as f:
            old = f.read()
        if "\n## " in old:
            notes = old[old.index("\n## "):]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n" + notes)


def die(msg):
    print(f"mpi_ckpt: {msg}", file=sys.stderr)
    sys.exit(1)


def kv(line):
    return dict(re.findall(r"(\w+)=(\S+)", line))


def settle(s=3.0):
    """Memory freed by the previous step is handed back to the VM's host ~2 s later (free page
    reporting) and slows whichever step runs meanwhile: every timed step starts after a pause."""
    time.sleep(s)


def drop_caches():
    subprocess.run(["sync"], check=True)
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")
    settle()


def loadavg():
    return float(open("/proc/loadavg").read().split()[0])


def machine(path="."):
    model = "?"
    fsgs = False
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name") and model == "?":
            model = line.split(":", 1)[1].strip()
        if line.startswith("flags") and " fsgsbase" in line:
            fsgs = True
    # AT_HWCAP2 bit 1: the kernel lets user space use the FSGSBASE instructions (the MPI layer's
    # fast FS switch); read from a child's auxiliary vector.
    hwcap2 = None
    try:
        out = subprocess.run(["env", "LD_SHOW_AUXV=1", "/bin/true"], capture_output=True, text=True).stdout
        m = re.search(r"AT_HWCAP2:\s+(0x[0-9a-f]+)", out)
        if m:
            hwcap2 = int(m.group(1), 16)
    except OSError:
        pass
    mem = open("/proc/meminfo").readline().split()[1]
    fs = subprocess.run(["findmnt", "-no", "FSTYPE,SOURCE", "-T", path], capture_output=True,
                        text=True).stdout.split()
    fsgs_use = ("in use (AT_HWCAP2 bit 1 set)" if hwcap2 is not None and hwcap2 & 2 else
                "not in use" if hwcap2 is not None else "unknown")
    return (f"{model}, {os.cpu_count()} cores, {int(mem) // 1024 // 1024} GiB RAM, kernel "
            f"{platform.release()}, cpuinfo fsgsbase {'yes' if fsgs else 'no'}, FSGSBASE {fsgs_use}, "
            f"filesystem of {path}: {' '.join(fs[:2])}")


class Job:
    """A job (ghostrun, ghost restart, mpirun, dmtcp_launch...) in a session of its own; stdout and
    stderr lines are collected with their arrival time (time.monotonic())."""

    def __init__(self, argv, env=None, cwd=None):
        e = dict(os.environ)
        e.update(MPI_ENV)
        if env:
            e.update(env)
        self.t0 = time.monotonic()
        self.p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env=e, cwd=cwd, start_new_session=True)
        self.out, self.err = [], []
        self.cv = threading.Condition()
        self.threads = [threading.Thread(target=self._read, args=(self.p.stdout, self.out), daemon=True),
                        threading.Thread(target=self._read, args=(self.p.stderr, self.err), daemon=True)]
        for t in self.threads:
            t.start()

    def _read(self, f, dst):
        for line in f:
            with self.cv:
                dst.append((time.monotonic(), line.rstrip("\n")))
                self.cv.notify_all()
        with self.cv:
            self.cv.notify_all()

    def wait_for(self, pred, timeout, what):
        """Waits until pred(out, err) is true; returns the monotonic time it became true."""
        end = time.monotonic() + timeout
        with self.cv:
            while True:
                r = pred(self.out, self.err)
                if r:
                    return r
                if self.p.poll() is not None and not self.threads[0].is_alive():
                    raise RuntimeError(f"{what}: the job ended (status {self.p.returncode}); "
                                       f"stderr: {self.tail()}")
                left = end - time.monotonic()
                if left <= 0:
                    raise RuntimeError(f"{what}: not within {timeout} s; stderr: {self.tail()}")
                self.cv.wait(min(left, 0.2))

    def count_lines(self, prefix, n, timeout, what, after=0.0):
        """Time at which the n-th stdout line starting with prefix (arrived after `after`) came."""

        def pred(out, err):
            hits = [t for t, l in out if l.startswith(prefix) and t >= after]
            return hits[n - 1] if len(hits) >= n else None

        return self.wait_for(pred, timeout, what)

    def job_id(self, timeout=60):
        def pred(out, err):
            for _, l in err:
                m = re.match(r"ghostrun: job (\d+)$", l)
                if m:
                    return m.group(1)
            return None

        return self.wait_for(pred, timeout, "ghostrun job id")

    def tail(self, n=5):
        return " | ".join(l for _, l in self.err[-n:])

    def wait(self, timeout=120):
        try:
            return self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise RuntimeError(f"the job did not end within {timeout} s; stderr: {self.tail()}")

    def kill(self):
        try:
            os.killpg(self.p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.p.wait()


def stats(xs):
    xs = sorted(xs)
    if not xs:
        return dict(n=0, median=float("nan"), p90=float("nan"), max=float("nan"), min=float("nan"))
    med = xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2
    p90 = xs[min(len(xs) - 1, int(round(0.9 * (len(xs) - 1))))]
    return dict(n=len(xs), median=med, p90=p90, max=xs[-1], min=xs[0])
