#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Checkpoint/restart/duplicate harness for ghost's self-checking test programs.

For one program:
  1. run it natively (no ghost) to get the reference stdout;
  2. mode "restart": run it under `ghost launch` with stdout redirected to a file and, at random
     moments, take plain checkpoints (`ghost checkpoint`, and one `kill -USR2`), then
     `ghost checkpoint --kill` + `ghost restart` cycles (at least --restarts of them), until it
     finishes; its final stdout must equal the reference and its exit status must be 0;
     mode "duplicate": `ghost duplicate` it at a random moment; the original must finish with the
     reference stdout, the copy (whose stdout is that of `ghost duplicate`) with a suffix of the
     reference that starts at a line boundary and ends with the PASS line; both exit 0. The copy
     must be made by the fast path (a fork made by the process's agent: "via=fork" in the report);
     as root the copy keeps the original's pid and thread ids in a pid namespace of its own ("ids=kept");
     mode "duplicate_new_ids": the same with `ghost duplicate --new-ids` (the copy's threads get new ids,
     the locks they held are rewritten: "ids=new");
     mode "duplicate_image": the same through `ghost duplicate --via-image` (export + restore);
     mode "duplicate_image_precopy": the same with --precopy (the memory copied while the program
     runs, placed by the restorer, then the image of what was written since; the copy's threads
     get new ids);
     mode "incremental": mode "restart" with `ghost checkpoint --incremental`: each image stores
     only the pages written since the one before (the SIGUSR2 checkpoint, a whole image, breaks
     the chain), and each restart reads its chain back;
     mode "precopy": mode "restart" where each checkpoint is a pre-copy (`ghost checkpoint
     --precopy-index`: the memory copied while the program runs on) and then the image itself
     (`--after-precopy`), which stores only the pages written since the pre-copy began and takes
     the others from it: a page written while the pre-copy ran and missed by the tracking would
     restart with old data, which the program's self-check finds.
A moment is a point of the reference run (a time in it); the ghost run reaches it by the program's
progress, not by the wall clock: as soon as the program has used the CPU time the reference had
used by then, or printed the first reference line that came after it, or run (in all its
segments) as long, whichever comes first (taking the first only ever acts earlier). An action
itself takes time while the program runs on (a plain checkpoint's program resumes before the
command ends), and CPU time per unit of work varies with load; so under ghost the programs also
wait before their PASS line until a gate file exists (GHOST_TEST_GATE, tests/programs/common.h),
which is made once the planned actions are done: a program that got there first waits, checkpoints
and restarts included, and the log says so. Nothing is timed by the wall clock alone, and an idle
machine is as good as a loaded one.
With --ctty every process started here (the reference run too) gets a pty of its own as its
controlling terminal: a program's /dev/tty then belongs to whichever command restarts it.
Every wait has a timeout; on any failure every process started here is killed (by pid / process
group) and the harness exits 1 with a clear message. The random seed is printed; --seed replays.

In the program's arguments, "{tmpdir}" is replaced by a fresh directory for each run (the
reference run and the ghost run get different ones).

Usage:
  ckpt_harness.py --ghost PATH --mode restart|duplicate [options] -- PROGRAM ARGS...
Exit status: 0 pass, 1 fail, 2 usage.
"""
import argparse
import os
import random
import shutil
import shlex
import signal
import subprocess
import sys
import tempfile
import time

T0 = time.monotonic()


def log(msg):
    print(f"[harness {time.monotonic() - T0:7.2f}s] {msg}", flush=True)


class Failure(Exception):
    pass


from procs import kill_all, pid_alive  # noqa: E402


def tail(path, n=15):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return "(missing)"
    lines = data.decode("utf-8", "replace").splitlines()
    if not lines:
        return "(empty)"
    return "\n".join("    | " + l for l in lines[-n:])


class Tracker:
    """Everything this harness started, so that it can all be killed on failure."""

    def __init__(self, ctty=False):
        self.popens = []  # (Popen, what)
        self.pids = set()  # program pids read from pid files
        self.ctty = ctty
        self.masters = []  # pty masters of the processes' controlling terminals

    def popen(self, argv, what, **kw):
        log(f"start {what}: {' '.join(argv)}")
        if self.ctty:
            # A new pty per process: opened by the new session leader, its slave becomes the
            # session's controlling terminal (a terminal belongs to one session at a time).
            master, slave = os.openpty()
            name = os.ttyname(slave)
            os.close(slave)
            self.masters.append(master)
            kw["preexec_fn"] = lambda: os.close(os.open(name, os.O_RDWR))
        p = subprocess.Popen(argv, start_new_session=True, **kw)
        self.popens.append((p, what))
        return p

    def kill_all(self):
        kill_all(self.popens, self.pids, log)
        for m in self.masters:
            os.close(m)
        self.masters = []


def wait_exit(p, timeout, what):
    try:
        return p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise Failure(f"{what} did not exit within {timeout:.0f}s (hang?)") from None


def run(argv, timeout, what, tracker, **kw):
    """Runs a short command to completion; returns (rc, stdout, stderr) as text."""
    p = tracker.popen(argv, what, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise Failure(f"{what} did not finish within {timeout:.0f}s (hang?)") from None
    return p.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


def read_pid_file(path, runner, timeout, what, tracker):
    """Waits until the pid file names a live process; fails if the runner exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(path) as f:
                text = f.read().strip()
            if text:
                pid = int(text.split()[0])
                tracker.pids.add(pid)
                return pid
        except (FileNotFoundError, ValueError):
            pass
        if runner.poll() is not None:
            # A pid file written just before a quick exit still counts.
            try:
                with open(path) as f:
                    pid = int(f.read().split()[0])
                tracker.pids.add(pid)
                return pid
            except (OSError, ValueError, IndexError):
                pass
            raise Failure(f"{what} exited with status {runner.returncode} before writing its pid file {path}")
        time.sleep(0.01)
    raise Failure(f"{what}: pid file {path} not written within {timeout:.0f}s")


def parse_kv_line(out, what):
    lines = [l for l in out.splitlines() if l.strip()]
    if len(lines) != 1:
        raise Failure(f"{what}: expected one stdout line of key=value pairs, got {len(lines)}: {out!r}")
    kv = {}
    toks = lines[0].split()
    if toks and toks[0] == "checkpoint":  # ghost prefixes the pairs with the command's name
        toks = toks[1:]
    for tok in toks:
        if "=" not in tok:
            raise Failure(f"{what}: stdout token {tok!r} is not key=value: {lines[0]!r}")
        k, v = tok.split("=", 1)
        kv[k] = v
    for key in ("pid", "image", "bytes"):
        if key not in kv:
            raise Failure(f"{what}: no {key}= in stdout line {lines[0]!r}")
    return kv


def one_line_stderr(err):
    lines = [l for l in err.splitlines() if l.strip()]
    return lines[0] if len(lines) == 1 else repr(err.strip())


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """CPU time (user + system, all threads, gone ones included) of a live process, or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()
    try:
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14, 15)
    except (IndexError, ValueError):
        return None


class LineCounter:
    """Counts the complete lines of a growing output file, reading only what is new."""

    def __init__(self, path):
        self.path, self.pos, self.lines = path, 0, 0

    def count(self):
        try:
            with open(self.path, "rb") as f:
                f.seek(self.pos)
                data = f.read()
        except OSError:
            return self.lines
        self.pos += len(data)
        self.lines += data.count(b"\n")
        return self.lines


class Moment:
    """A point of the reference run, as the ghost run can recognize it (see the docstring)."""

    def __init__(self, t, cpu, next_line):
        self.t, self.cpu, self.next_line = t, cpu, next_line

    def __str__(self):
        return f"{self.t:.2f}s/cpu {self.cpu:.2f}s/line {self.next_line}"


class Harness:
    def __init__(self, args):
        self.a = args
        self.t = Tracker(args.ctty)
        self.ghost = os.path.abspath(args.ghost)
        self.work = os.path.abspath(args.workdir or tempfile.mkdtemp(prefix=f"ghost-{args.name}-{args.mode}-"))
        marker = os.path.join(self.work, ".ckpt_harness")
        if os.path.isdir(self.work) and os.listdir(self.work):
            if not os.path.exists(marker):
                sys.exit(f"ckpt_harness: --workdir {self.work} is not empty and not a harness work directory")
            shutil.rmtree(self.work)  # left over from an earlier run
        os.makedirs(self.work, exist_ok=True)
        open(marker, "w").close()
        self.ckdir = os.path.join(self.work, "ckpt")
        self.rng = random.Random(args.seed)
        self.ckpt_count = 0
        self.tracked_parent = False  # mode incremental: the last image was tracked, this process's
        self.incremental_count = 0
        self.progress = 0.0  # seconds of program run kept by the last checkpoint --kill
        self.cpu_kept = 0.0  # CPU seconds of the program kept by the last checkpoint --kill
        self.cpu_last = 0.0  # the current segment's CPU seconds when last seen
        self.seg_start = 0.0
        self.out_lines = None  # LineCounter of the program's stdout in the ghost run
        self.runner_err = None
        self.pending_inspects = []

    def path(self, name):
        return os.path.join(self.work, name)

    def prog_argv(self, datadir):
        os.makedirs(datadir, exist_ok=True)
        return [x.replace("{tmpdir}", datadir) for x in self.a.program]

    # -- reference ------------------------------------------------------------------------------
    def reference(self):
        os.environ.pop("GHOST_TEST_GATE", None)  # natively: no gate (one inherited would never open)
        argv = self.prog_argv(self.path("ref-data"))
        with open(self.path("ref.out"), "wb") as out, open(self.path("ref.err"), "wb") as err:
            start = time.monotonic()
            p = self.t.popen(argv, "reference run (native)", stdin=subprocess.DEVNULL, stdout=out, stderr=err)
            rc = self.watch_reference(p, start)
            self.t_ref = time.monotonic() - start
        with open(self.path("ref.out"), "rb") as f:
            self.ref = f.read()
        if rc != 0:
            raise Failure(f"reference run (native, no ghost) exited with {rc}:\n{tail(self.path('ref.out'))}\n"
                          f"stderr:\n{tail(self.path('ref.err'))}")
        if not self.ref.endswith(b"\n") or not self.ref.splitlines()[-1].startswith(b"PASS "):
            raise Failure("reference run did not end with a PASS line")
        shutil.rmtree(self.path("ref-data"), ignore_errors=True)
        # Every ghost command from here on passes it on (a restored program's environment is that
        # of the command that restores it).
        self.gate = self.path("gate")
        os.environ["GHOST_TEST_GATE"] = self.gate
        nlines = self.ref.count(b"\n")
        log(f"reference: {len(self.ref)} bytes, {nlines} lines, {self.t_ref:.2f}s natively")

    def watch_reference(self, p, start):
        """Waits for the reference run, noting when each line came and the CPU time used."""
        lines = LineCounter(self.path("ref.out"))
        self.ref_cpu = [(0.0, 0.0)]  # (seconds since start, CPU seconds), rising
        self.ref_line_times = []  # seconds since start at which each line was seen
        while True:
            rc = p.poll()
            now = time.monotonic() - start
            cpu = cpu_seconds(p.pid) if rc is None else None
            if cpu is not None and cpu >= self.ref_cpu[-1][1]:
                self.ref_cpu.append((now, cpu))
            n = lines.count()
            self.ref_line_times += [now] * (n - len(self.ref_line_times))
            if rc is not None:
                return rc
            if now > self.a.ref_timeout:
                raise Failure(f"reference run did not exit within {self.a.ref_timeout:.0f}s (hang?)")
            time.sleep(0.005)

    def moment(self, t):
        """The reference run's state t seconds after its start."""
        cpu = 0.0
        for (t0, c0), (t1, c1) in zip(self.ref_cpu, self.ref_cpu[1:]):
            if t1 >= t:
                cpu = c0 + (c1 - c0) * ((t - t0) / (t1 - t0) if t1 > t0 else 1.0)
                break
        else:
            cpu = self.ref_cpu[-1][1]
        before = sum(1 for lt in self.ref_line_times if lt <= t)
        return Moment(t, cpu, before + 1)

    def program_cpu(self, pid):
        """The program's CPU seconds in all its segments (a restored process counts from zero)."""
        cpu = cpu_seconds(pid)
        if cpu is not None:
            self.cpu_last = cpu
        return self.cpu_kept + self.cpu_last

    def wait_for(self, m, runner, pid, what):
        """Returns once the program (pid, run by runner) has reached moment m."""
        while True:
            if runner.poll() is not None:
                raise self.early_exit(runner, what)
            ran = self.progress + time.monotonic() - self.seg_start
            cpu = self.program_cpu(pid)
            lines = self.out_lines.count()
            why = ("CPU time" if m.cpu > 0 and cpu >= m.cpu else "a later line" if lines >= m.next_line
                   else "run time" if ran >= m.t else
                   "the program waiting at its gate" if os.path.exists(self.gate + ".reached") else None)
            if why:
                log(f"moment {m} reached by {why} (program: {ran:.2f}s run, cpu {cpu:.2f}s, {lines} lines)")
                return
            time.sleep(0.01)

    def open_gate(self, what):
        if os.path.exists(self.gate + ".reached"):
            log(f"note: the program reached its end before {what} (it waited there for them)")
        open(self.gate, "w").close()
        log(f"gate open: {what} done")

    # -- ghost commands -------------------------------------------------------------------------
    def inspect(self, target):
        rc, out, err = run([self.ghost, "inspect", target], self.a.cmd_timeout, "ghost inspect", self.t)
        if rc != 0:
            raise Failure(f"ghost inspect {target} failed ({rc}) on an image ghost just wrote: {one_line_stderr(err)}")
        first = out.splitlines()[0] if out else ""
        log(f"inspect ok: {first[:160]}")

    def inspect_async(self, image):
        """Starts `ghost inspect` of the image just written without waiting, so that the running
        program does not advance meanwhile; a later rename over the image does not affect the open
        file. Collected by finish_inspects()."""
        out = open(self.path(f"inspect-{self.ckpt_count}.out"), "wb")
        err = open(self.path(f"inspect-{self.ckpt_count}.err"), "wb")
        p = self.t.popen([self.ghost, "inspect", image], "ghost inspect (background)", stdout=out, stderr=err)
        out.close()
        err.close()
        self.pending_inspects.append((p, image, self.path(f"inspect-{self.ckpt_count}.err")))

    def finish_inspects(self):
        for p, image, err in self.pending_inspects:
            rc = wait_exit(p, self.a.cmd_timeout, "ghost inspect (background)")
            if rc != 0:
                raise Failure(f"ghost inspect {image} failed ({rc}) on an image ghost had written: {tail(err, 3)}")
        if self.pending_inspects:
            log(f"{len(self.pending_inspects)} background inspect(s) ok")
        self.pending_inspects = []

    def precopy(self, pid):
        """The pre-copy of mode precopy: beside the image, its index in a file of its own."""
        image, index = os.path.join(self.ckdir, "precopy.ghost"), os.path.join(self.ckdir, "precopy.idx")
        if os.path.exists(index):
            os.unlink(index)
        argv = [self.ghost, "checkpoint", "--image", image, "--precopy-index", index, str(pid)]
        rc, out, err = run(argv, self.a.cmd_timeout, "ghost checkpoint --precopy-index", self.t)
        if rc != 0:
            raise Failure(f"ghost checkpoint --precopy-index {pid} exited with {rc}: {err.strip()}")
        kv = parse_kv_line(out, "ghost checkpoint --precopy-index")
        if not os.path.isfile(index) or not os.path.isfile(kv["image"]):
            raise Failure(f"ghost checkpoint --precopy-index: no index or image after: {out.strip()}")
        log(f"pre-copy ok: {out.strip()}")
        return ["--after-precopy", index]

    def checkpoint(self, pid, kill):
        incremental = ["--incremental"] if self.a.mode == "incremental" else []
        if self.a.mode == "precopy":
            incremental = self.precopy(pid)
        argv = [self.ghost, "checkpoint", "--dir", self.ckdir] + incremental + (["--kill"] if kill else []) + [str(pid)]
        what = "ghost checkpoint" + (" --kill" if kill else "") + (" " + incremental[0] if incremental else "")
        rc, out, err = run(argv, self.a.cmd_timeout, what, self.t)
        if rc != 0:
            raise Failure(f"{what} {pid} exited with {rc}: {err.strip()}")
        kv = parse_kv_line(out, what)
        if kv["pid"] != str(pid):
            raise Failure(f"{what}: printed pid={kv['pid']}, checkpointed {pid}")
        if not os.path.isfile(kv["image"]):
            raise Failure(f"{what}: image {kv['image']} does not exist after the command returned")
        if self.a.mode == "precopy":
            # Right after its pre-copy, the image always takes pages from it.
            if kv.get("incremental") != "1":
                raise Failure(f"{what}: a whole image after a pre-copy: {err.strip()}")
            self.incremental_count += 1
            os.unlink(incremental[1])
        elif incremental:
            # The parent is the last image, taken with tracking from this very process.
            # (A whole image is also right when the older images are mostly overwritten, or after
            # the longest chain: ghost says so.)
            allowed = ("mostly overwritten", "incremental ones")
            if self.tracked_parent and kv.get("incremental") != "1" and not any(w in err for w in allowed):
                raise Failure(f"{what}: a whole image where an incremental one was due: {err.strip()}")
            self.tracked_parent = not kill
            self.incremental_count += kv.get("incremental") == "1"
        self.ckpt_count += 1
        log(f"{what} ok: {out.strip()}")
        return kv

    def usr2_checkpoint(self, pid):
        image = os.path.join(self.ckdir, "image.ghost")

        def ident():
            try:
                st = os.stat(image)
                return (st.st_ino, st.st_mtime_ns, st.st_size)
            except FileNotFoundError:
                return None

        before = ident()
        log(f"kill -USR2 {pid}")
        os.kill(pid, signal.SIGUSR2)
        deadline = time.monotonic() + self.a.cmd_timeout
        while ident() == before:
            if time.monotonic() > deadline:
                raise Failure(f"kill -USR2 {pid}: no new {image} within {self.a.cmd_timeout:.0f}s")
            if not pid_alive(pid):
                raise Failure(f"kill -USR2 {pid}: the process died")
            time.sleep(0.02)
        # The image appears by rename once durable; give a concurrent writer no chance to confuse us.
        time.sleep(0.05)
        self.ckpt_count += 1
        log("SIGUSR2 checkpoint: new image appeared")
        self.tracked_parent = False  # a whole image without tracking replaced the last one

    # -- restart mode ---------------------------------------------------------------------------
    def plan(self):
        kinds = ["kill"] * self.a.restarts + ["ckpt"] * self.a.checkpoints
        self.rng.shuffle(kinds)
        if self.a.usr2:
            first_kill = kinds.index("kill") if "kill" in kinds else len(kinds)
            kinds.insert(self.rng.randint(0, first_kill), "usr2")
        weights = [self.rng.uniform(0.2, 1.0) for _ in kinds]
        budget = min(self.a.budget, self.a.cap) * self.t_ref
        at, moments = 0.0, []
        for w in weights:
            at += budget * w / sum(weights)
            moments.append(self.moment(at))
        return list(zip(kinds, moments))

    def early_exit(self, runner, what):
        rc = runner.returncode
        if rc == 0:
            why = (f"the program ({what}) finished (status 0) before all planned actions were done, "
                   f"although it should have waited at its gate {self.gate} (GHOST_TEST_GATE lost from its "
                   f"environment?) (seed {self.a.seed})")
        else:
            why = f"the program ({what}) exited with status {rc} before the next planned action"
        return Failure(why + f"\n  program stdout (tail):\n{tail(self.path('out.txt'), 5)}"
                       f"\n  program stderr (tail):\n{tail(self.path('launch.err'), 5)}"
                       + (f"\n  {what} stderr (tail):\n{tail(self.runner_err, 5)}"
                          if self.runner_err != self.path("launch.err") else ""))

    def start_launch(self, out_path):
        pidf = self.path("launch.pid")
        argv = [self.ghost, "launch", "--ckpt-dir", self.ckdir, "--pid-file", pidf, "--"] + self.prog_argv(self.path("run-data"))
        self.runner_err = self.path("launch.err")
        with open(out_path, "wb") as out, open(self.runner_err, "wb") as err:
            runner = self.t.popen(argv, "ghost launch", stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        pid = read_pid_file(pidf, runner, self.a.cmd_timeout, "ghost launch", self.t)
        self.seg_start = time.monotonic()
        self.out_lines = LineCounter(out_path)
        log(f"program pid {pid}")
        return runner, pid

    def restart_mode(self):
        plan = self.plan()
        log("plan: " + ", ".join(f"{k}@{m}" for k, m in plan))
        out_path = self.path("out.txt")
        runner, pid = self.start_launch(out_path)
        what = "ghost launch"
        restarts = 0
        for kind, moment in plan:
            self.wait_for(moment, runner, pid, what)
            if kind == "ckpt":
                self.checkpoint(pid, kill=False)
                if runner.poll() is not None:
                    raise self.early_exit(runner, what)
                if not pid_alive(pid):
                    raise Failure(f"the program (pid {pid}) is gone after a checkpoint without --kill, "
                                  f"but {what} has not exited")
                self.inspect_async(self.ckdir)
            elif kind == "usr2":
                self.usr2_checkpoint(pid)
                self.inspect_async(self.ckdir)
            else:
                kill_issued = time.monotonic()
                self.program_cpu(pid)  # (its last reading before the kill is what the image keeps)
                kv = self.checkpoint(pid, kill=True)
                self.progress += kill_issued - self.seg_start
                self.cpu_kept += self.cpu_last
                self.cpu_last = 0.0
                rc = wait_exit(runner, self.a.cmd_timeout, f"{what} after checkpoint --kill")
                if rc != 128 + signal.SIGKILL:
                    raise Failure(f"{what} exited with {rc} after checkpoint --kill, expected {128 + signal.SIGKILL}"
                                  f"\n  stderr:\n{tail(self.runner_err)}")
                deadline = time.monotonic() + 10
                while pid_alive(pid):
                    if time.monotonic() > deadline:
                        raise Failure(f"program pid {pid} still alive 10 s after checkpoint --kill")
                    time.sleep(0.01)
                self.finish_inspects()
                self.inspect(self.ckdir)
                restarts += 1
                target = self.ckdir if restarts % 2 else kv["image"]
                pidf = self.path(f"restart-{restarts}.pid")
                self.runner_err = self.path(f"restart-{restarts}.err")
                with open(self.path(f"restart-{restarts}.out"), "wb") as out, open(self.runner_err, "wb") as err:
                    runner = self.t.popen(shlex.split(self.a.restart_under) + [self.ghost, "restart", "--pid-file", pidf, target], f"ghost restart #{restarts}",
                                          stdin=subprocess.DEVNULL, stdout=out, stderr=err)
                what = f"ghost restart #{restarts}"
                pid = read_pid_file(pidf, runner, self.a.cmd_timeout, what, self.t)
                self.seg_start = time.monotonic()
                log(f"restored program pid {pid} (program progress kept so far: {self.progress:.2f}s)")
        self.open_gate("the planned actions")
        rc = wait_exit(runner, self.final_timeout(), f"{what} (waiting for the program to finish)")
        self.finish_inspects()
        with open(out_path, "rb") as f:
            got = f.read()
        extra = ""
        for i in range(1, restarts + 1):
            sz = os.path.getsize(self.path(f"restart-{i}.out"))
            if sz:
                extra += f"\n  note: ghost restart #{i} printed {sz} bytes on its own stdout:\n{tail(self.path(f'restart-{i}.out'), 5)}"
        if rc != 0:
            raise Failure(f"{what} exited with {rc} (program exit status), expected 0"
                          f"\n  program stdout (tail):\n{tail(out_path)}"
                          f"\n  program stderr (tail):\n{tail(self.path('launch.err'))}"
                          f"\n  {what} stderr (tail):\n{tail(self.runner_err)}{extra}")
        self.compare(got, "final stdout", extra)
        if restarts < self.a.restarts:
            raise Failure(f"only {restarts} restarts done")
        if self.a.mode in ("incremental", "precopy") and self.incremental_count == 0:
            raise Failure("no checkpoint made an incremental image")
        log(f"restart mode ok: {restarts} restarts, {self.ckpt_count} checkpoints in all"
            + (f", {self.incremental_count} incremental" if self.a.mode in ("incremental", "precopy") else ""))

    # -- duplicate mode -------------------------------------------------------------------------
    def duplicate_mode(self):
        out_path = self.path("out.txt")
        copy_path = self.path("copy.out")
        at, moments = 0.0, []
        for _ in range(self.a.checkpoints):
            at += self.rng.uniform(0.05, 0.25) * self.t_ref
            moments.append(self.moment(at))
        dup_moment = self.moment(min(at + self.rng.uniform(0.1, 0.5) * self.t_ref, self.a.cap * self.t_ref))
        log("plan: " + ", ".join([f"ckpt@{m}" for m in moments] + [f"duplicate@{dup_moment}"]))
        runner, pid = self.start_launch(out_path)
        for m in moments:
            self.wait_for(m, runner, pid, "ghost launch")
            self.checkpoint(pid, kill=False)
        self.wait_for(dup_moment, runner, pid, "ghost launch")
        dpidf = self.path("dup.pid")
        dup_err = self.path("dup.err")
        with open(copy_path, "wb") as out, open(dup_err, "wb") as err:
            via = {"duplicate_image": ["--via-image"], "duplicate_image_precopy": ["--via-image", "--precopy"],
                   "duplicate_new_ids": ["--new-ids"]}.get(self.a.mode, [])
            dup = self.t.popen([self.ghost, "duplicate", "--pid-file", dpidf] + via + [str(pid)], "ghost duplicate",
                               stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        cpid = read_pid_file(dpidf, dup, self.a.cmd_timeout, "ghost duplicate", self.t)
        log(f"copy pid {cpid}")
        self.open_gate("the checkpoints and the duplicate")
        if cpid == pid:
            raise Failure(f"ghost duplicate reports the original's pid {pid} as the copy's")
        rc = wait_exit(runner, self.final_timeout(), "ghost launch (original, waiting to finish)")
        drc = wait_exit(dup, self.final_timeout(), "ghost duplicate (copy, waiting to finish)")
        with open(out_path, "rb") as f:
            got = f.read()
        with open(copy_path, "rb") as f:
            copy = f.read()
        if rc != 0:
            raise Failure(f"original exited with {rc}, expected 0\n  stdout (tail):\n{tail(out_path)}\n"
                          f"  stderr:\n{tail(self.path('launch.err'))}")
        if drc != 0:
            raise Failure(f"ghost duplicate (the copy) exited with {drc}, expected 0\n  copy stdout (tail):\n{tail(copy_path)}\n"
                          f"  ghost duplicate stderr:\n{tail(dup_err)}")
        with open(dup_err, "rb") as f:
            report = [l for l in f.read().decode(errors="replace").splitlines() if l.startswith("ghost: duplicate")]
        log("ghost duplicate: " + (" | ".join(report) or "(no report)"))
        # "duplicate" takes the fast path (a fork made by the agent); "duplicate_image" the
        # export+restore path. Neither may end up on the other.
        fast = any("via=fork" in l for l in report)
        by_image = self.a.mode in ("duplicate_image", "duplicate_image_precopy")
        if fast != (not by_image):
            raise Failure("ghost duplicate took the " + ("fork" if fast else "export+restore") +
                          " path in mode " + self.a.mode + ":\n" + tail(dup_err))
        if (self.a.mode == "duplicate_image_precopy") != any(" precopy_bytes=" in l for l in report):
            raise Failure(f"the copy was made {'without' if by_image else 'with'} a pre-copy in mode {self.a.mode}:\n" + tail(dup_err))
        ids = "kept" if self.a.mode == "duplicate" and os.geteuid() == 0 else "new"
        if fast and not any(f"ids={ids}" in l for l in report):
            raise Failure(f"the copy did not get ids={ids} in mode {self.a.mode}:\n" + tail(dup_err))
        self.compare(got, "original's stdout")
        if not copy:
            raise Failure("the copy printed nothing on the stdout of ghost duplicate")
        if not self.ref.endswith(copy):
            raise Failure("the copy's stdout is not a suffix of the reference output"
                          + self.first_diff_suffix(copy))
        start = len(self.ref) - len(copy)
        if start > 0 and self.ref[start - 1 : start] != b"\n":
            raise Failure(f"the copy's stdout starts in the middle of a reference line (offset {start})")
        if start == 0:
            log("note: the copy's stdout equals the whole reference (duplicated before the first line was flushed?)")
        ncopy, nref = copy.count(b"\n"), self.ref.count(b"\n")
        log(f"duplicate mode ok: the copy printed the last {ncopy} of {nref} lines")

    def first_diff_suffix(self, copy):
        lines = copy.splitlines()
        return f"\n  copy stdout (first lines):\n" + "\n".join("    | " + l.decode("utf-8", "replace") for l in lines[:5])

    # -- common ---------------------------------------------------------------------------------
    def final_timeout(self):
        return max(60.0, self.a.slowdown * self.t_ref + 30.0)

    def compare(self, got, what, extra=""):
        if got == self.ref:
            return
        g, r = got.splitlines(), self.ref.splitlines()
        i = 0
        while i < min(len(g), len(r)) and g[i] == r[i]:
            i += 1
        ctx = [f"  {what} differs from the reference at line {i + 1} ({len(got)} vs {len(self.ref)} bytes):"]
        for j in range(max(0, i - 2), min(max(len(g), len(r)), i + 4)):
            gl = g[j].decode("utf-8", "replace") if j < len(g) else "<EOF>"
            rl = r[j].decode("utf-8", "replace") if j < len(r) else "<EOF>"
            mark = "  " if gl == rl else "! "
            ctx.append(f"   {mark}{j + 1:5d} got: {gl}")
            if gl != rl:
                ctx.append(f"   {mark}{j + 1:5d} ref: {rl}")
        raise Failure(f"{what} != reference output\n" + "\n".join(ctx) + extra)

    def main(self):
        log(f"{self.a.name} mode={self.a.mode} seed={self.a.seed} (replay: --seed {self.a.seed}) workdir={self.work}")
        ok = False
        try:
            if not os.access(self.ghost, os.X_OK):
                raise Failure(f"ghost binary {self.ghost} is not executable")
            self.reference()
            if self.a.mode in ("restart", "incremental", "precopy"):
                self.restart_mode()
            else:
                self.duplicate_mode()
            ok = True
        except Failure as e:
            log(f"FAILURE: {e}")
        except Exception as e:  # a harness bug must not leave processes behind either
            log(f"FAILURE (harness error): {e!r}")
            raise
        finally:
            self.t.kill_all()
            if ok and not self.a.keep:
                shutil.rmtree(self.work, ignore_errors=True)
        if ok:
            print(f"PASS {self.a.name} {self.a.mode} (seed {self.a.seed})", flush=True)
            return 0
        print(f"FAIL {self.a.name} {self.a.mode} (seed {self.a.seed}; work dir kept: {self.work})", flush=True)
        return 1


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ghost", required=True, help="path of the ghost CLI")
    ap.add_argument("--mode", choices=["restart", "incremental", "precopy", "duplicate", "duplicate_new_ids", "duplicate_image",
                                       "duplicate_image_precopy"], required=True)
    ap.add_argument("--name", help="test name for messages (default: program basename)")
    ap.add_argument("--seed", type=int, default=None, help="random seed (default: random, printed)")
    ap.add_argument("--restarts", type=int, default=3, help="checkpoint --kill + restart cycles (restart mode)")
    ap.add_argument("--checkpoints", type=int, default=None,
                    help="plain checkpoints (default: 2 in restart mode, 0 in duplicate mode)")
    ap.add_argument("--no-usr2", dest="usr2", action="store_false", help="no kill -USR2 checkpoint")
    ap.add_argument("--budget", type=float, default=0.5,
                    help="the actions' moments spread over this fraction of the reference run")
    ap.add_argument("--cap", type=float, default=0.75,
                    help="no moment lies beyond this fraction of the reference run")
    ap.add_argument("--ref-timeout", type=float, default=300, help="timeout of the native reference run (s)")
    ap.add_argument("--cmd-timeout", type=float, default=120, help="timeout of each ghost command (s)")
    ap.add_argument("--slowdown", type=float, default=10,
                    help="final wait timeout = max(60, SLOWDOWN x native run time + 30) seconds")
    ap.add_argument("--ctty", action="store_true",
                    help="give every process started here a controlling terminal (a pty of its own)")
    ap.add_argument("--restart-under", default="", metavar="COMMAND",
                    help="a command line (shell words) that `ghost restart` runs under, e.g. "
                         "'deny_syscall process_vm_writev --'")
    ap.add_argument("--workdir", help="work directory (default: a new temp directory)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory on success")
    ap.add_argument("program", nargs=argparse.REMAINDER, help="-- PROGRAM ARGS...")
    a = ap.parse_args()
    if a.program and a.program[0] == "--":
        a.program = a.program[1:]
    if not a.program:
        ap.error("no program given")
    if a.seed is None:
        a.seed = random.SystemRandom().randrange(1, 2**31)
    if a.checkpoints is None:
        a.checkpoints = {"restart": 2, "incremental": 4, "precopy": 3}.get(a.mode, 0)
    if a.mode in ("restart", "incremental", "precopy") and a.restarts < 1:
        ap.error("--restarts must be >= 1")
    if not a.name:
        interp = os.path.basename(a.program[0]).startswith("python") and len(a.program) > 1
        a.name = os.path.splitext(os.path.basename(a.program[1] if interp else a.program[0]))[0]
    return Harness(a).main()


if __name__ == "__main__":
    sys.exit(main())
