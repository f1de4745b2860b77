#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Cases of the preloaded agent that need a driver: each step has a hard timeout, and on any
failure every process started here is killed.

Subtests (--only NAME):
  blocked_park  a program blocks every signal (tests/programs/blocked_park.c). Traced by another
                process (this one), so that ghost cannot let it take the park signal: `ghost
                checkpoint` is refused within the park timeout with one line naming the thread
                and what to do. Untraced: `ghost checkpoint --kill` parks it (ghost takes the park
                signal out of its mask for the moment of the park) and `ghost restart` brings it
                back with every signal still blocked (the program checks its mask); it then
                unblocks them (the park signal the refused park left pending must not keep it),
                can be checkpointed, and ends on SIGTERM.
  dup_wait      `ghost duplicate` of tests/programs/dup_wait.c, which polls waitpid(-1)/waitid(P_ALL)
                all along: it takes the fast path, the original never sees the copy (no wait, no
                SIGCHLD), `ghost duplicate` ends with the copy's exit status (42) and
                `--detach` at once with 0, its copy then being reaped by the original's agent.
  maps_resume   tests/programs/maps_resume.c reads /proc/self/smaps up to a mapping's range line;
                `ghost checkpoint --kill` + `ghost restart`; the program must read on from that
                mapping's next line (a byte offset would land elsewhere: the restored listing is
                longer before it), see its VmFlags and then the next mapping, and exit 0.
  slow_start    tests/programs/slow_start.c, whose library's constructor takes 400 ms before the
                agent's runs, under `ghost launch --pid-file`: `ghost checkpoint` as soon as the
                pid file exists must find the agent (the file is written once it answers).
Exit status: 0 pass, 1 fail.
"""
import argparse
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

T0 = time.monotonic()


def log(msg):
    print(f"[agent_cases {time.monotonic() - T0:7.2f}s] {msg}", flush=True)


class Failure(Exception):
    pass


from procs import kill_all, status  # noqa: E402


class Cases:
    def __init__(self, a):
        self.a = a
        self.ghost = os.path.abspath(a.ghost)
        self.popens = []
        self.pids = set()
        self.work = tempfile.mkdtemp(prefix="ghost-agent-cases-")

    def popen(self, argv, what, **kw):
        log(f"start {what}: {' '.join(argv)}")
        p = subprocess.Popen(argv, start_new_session=True, **kw)
        self.popens.append((p, what))
        return p

    def run(self, argv, what, timeout=60):
        p = self.popen(argv, what, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise Failure(f"{what} did not finish within {timeout}s (hang?)") from None
        return p.returncode, out.decode(errors="replace"), err.decode(errors="replace")

    def wait_file(self, path, timeout, why, proc=None):
        deadline = time.monotonic() + timeout
        while not os.path.exists(path):
            if time.monotonic() > deadline:
                raise Failure(f"{path} did not appear within {timeout}s: {why}")
            if proc is not None and proc.poll() is not None:
                raise Failure(f"the program ended (status {proc.returncode}) before {path} appeared")
            time.sleep(0.01)

    def touch(self, path):
        open(path, "w").close()

    def blocked_park(self):
        d = os.path.join(self.work, "blocked_park")
        os.makedirs(d)
        env = dict(os.environ, GHOST_PARK_TIMEOUT_MS="1000")
        out = open(os.path.join(d, "out.txt"), "wb")
        runner = self.popen([self.ghost, "launch", "--ckpt-dir", os.path.join(d, "ckpt"), "--",
                             self.a.blocked_park, "--dir", d], "ghost launch blocked_park",
                            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.PIPE, env=env)
        out.close()
        blocked = os.path.join(d, "blocked")
        self.wait_file(blocked, 30, "the program did not start", runner)
        with open(blocked) as f:
            tid = int(f.read())
        self.pids.add(tid)
        libc = ctypes.CDLL(None, use_errno=True)
        libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
        if libc.ptrace(0x4206, tid, None, None) != 0:  # PTRACE_SEIZE: the program keeps running
            raise Failure(f"cannot trace the program: {os.strerror(ctypes.get_errno())}")
        try:
            rc, so, se = self.run([self.ghost, "checkpoint", str(tid)], "ghost checkpoint (blocked, traced)")
        finally:
            libc.ptrace(0x4207, tid, None, None)  # PTRACE_INTERRUPT, then PTRACE_DETACH once stopped
            os.waitpid(tid, 0x40000000)  # __WALL
            libc.ptrace(17, tid, None, None)
        lines = [l for l in se.splitlines() if l.strip()]
        if rc == 0 or len(lines) != 1:
            raise Failure(f"checkpoint of a traced program that blocks every signal: status {rc}, stderr {se!r} "
                          "(expected a refusal in one line)")
        for want in (f"thread {tid} ", "blocks signal 63", "checkpoint again"):
            if want not in lines[0]:
                raise Failure(f"the refusal does not say {want!r}: {lines[0]}")
        log(f"refused as expected: {lines[0]}")
        ckpt = os.path.join(d, "ckpt2")
        rc, so, se = self.run([self.ghost, "checkpoint", "--kill", "--dir", ckpt, str(tid)],
                              "ghost checkpoint --kill (signals blocked)")
        if rc != 0:
            raise Failure(f"checkpoint --kill of the program that blocks every signal failed ({rc}): {se.strip()}")
        log(f"checkpoint --kill while every signal is blocked: ok ({so.strip()})")
        runner.wait(timeout=20)
        runner = self.popen([self.ghost, "restart", ckpt], "ghost restart blocked_park",
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 20
        while not os.path.exists(f"/proc/{tid}/task/{tid}") and time.monotonic() < deadline:
            time.sleep(0.05)
        self.touch(os.path.join(d, "go"))
        self.wait_file(os.path.join(d, "unblocked"), 20,
                       "once it unblocked its signals, the late park signal kept the program in the agent",
                       runner)
        rc, so, se = self.run([self.ghost, "checkpoint", str(tid)], "ghost checkpoint (signals unblocked)")
        if rc != 0:
            raise Failure(f"checkpoint after the program unblocked its signals failed ({rc}): {se.strip()}")
        log("checkpoint after unblocking: ok")
        os.kill(tid, signal.SIGTERM)
        try:
            rc = runner.wait(timeout=20)
        except subprocess.TimeoutExpired:
            raise Failure("the program did not end within 20s of SIGTERM") from None
        if rc != 128 + signal.SIGTERM:
            raise Failure(f"after SIGTERM, ghost restart exited with {rc}, expected {128 + signal.SIGTERM}")
        with open(os.path.join(d, "out.txt"), "rb") as f:
            text = f.read()
        if b"FAIL" in text or b"signals unblocked" not in text:
            raise Failure(f"the restored program did not go on right: {text[-300:]!r}")
        log("ended on SIGTERM")

    def dup_wait(self):
        # A copy in a pid namespace of its own under the original's pid (as root), then one with a
        # pid of its own (--new-ids).
        for detach, new_ids in ((False, False), (True, False), (False, True), (True, True)):
            d = os.path.join(self.work, "dup_wait" + ("_detach" if detach else "") + ("_new_ids" if new_ids else ""))
            os.makedirs(d)
            out = open(os.path.join(d, "out.txt"), "wb")
            runner = self.popen([self.ghost, "launch", "--ckpt-dir", os.path.join(d, "ckpt"),
                                 "--pid-file", os.path.join(d, "pid"), "--",
                                 self.a.dup_wait, "--dir", d, "--copy-status", "42"],
                                "ghost launch dup_wait", stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.PIPE)
            out.close()
            self.wait_file(os.path.join(d, "ready"), 30, "the program did not start", runner)
            self.wait_file(os.path.join(d, "pid"), 30, "ghost launch wrote no pid file", runner)
            with open(os.path.join(d, "pid")) as f:
                pid = int(f.read())
            self.pids.add(pid)
            argv = [self.ghost, "duplicate", "--pid-file", os.path.join(d, "copy.pid")] + (["--new-ids"] if new_ids else [])
            rc, so, se = self.run(argv + (["--detach"] if detach else []) + [str(pid)],
                                  "ghost duplicate" + (" --detach" if detach else ""))
            if "via=fork" not in se:
                raise Failure(f"ghost duplicate did not take the fast path: {se.strip()}")
            ids = "new" if new_ids or os.geteuid() != 0 else "kept"
            if f"ids={ids}" not in se:
                raise Failure(f"ghost duplicate's copy did not get ids={ids}: {se.strip()}")
            with open(os.path.join(d, "copy.pid")) as f:
                copy = int(f.read())
            self.pids.add(copy)
            if detach:
                if rc != 0:
                    raise Failure(f"ghost duplicate --detach exited with {rc}: {se.strip()}")
                deadline = time.monotonic() + 20
                while os.path.exists(f"/proc/{copy}"):  # exits, then the original's agent reaps it
                    if time.monotonic() > deadline:
                        raise Failure(f"the detached copy {copy} was not reaped within 20 s")
                    time.sleep(0.01)
            elif rc != 42 or so.strip().splitlines()[-1:] != ["copy 42"]:
                raise Failure(f"ghost duplicate exited with {rc} (expected the copy's 42), stdout "
                              f"{so!r}, stderr {se.strip()!r}")
            log(f"copy {copy} of {pid}: ghost duplicate{' --detach' if detach else ''} exited with {rc}")
            self.release_and_check(d, runner, "dup_wait", "the original")
            log("the original never saw the copy")

    def launch_python(self, d, prog):
        """`ghost launch` of Python running `prog`, once its own code runs (its agent listens by
        then: it starts before main). Returns the pid."""
        ready = os.path.join(d, "ready")
        prog = f"open({ready!r}, 'w').close()\n" + prog
        runner = self.popen([self.ghost, "launch", "--pid-file", os.path.join(d, "pid"), "--", sys.executable, "-c", prog],
                            "ghost launch python", stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
        self.wait_file(os.path.join(d, "pid"), 30, "ghost launch wrote no pid file", runner)
        with open(os.path.join(d, "pid")) as f:
            pid = int(f.read())
        self.pids.add(pid)
        self.wait_file(ready, 30, "the program did not start", runner)
        return pid

    def dup_nested(self):
        """A copy that keeps the original's pid (root: its own pid namespace), duplicated in turn:
        every pid ghost reports is the host's, each command reaches the process it names, and the
        namespace's init ends with the copy."""
        if os.geteuid() != 0:
            log("not root: copies get ids of their own, nothing to check here")
            return
        d = os.path.join(self.work, "dup_nested")
        os.makedirs(d)
        pid = self.launch_python(d, "import time\ntime.sleep(120)\n")

        def duplicate(of, name):
            pf = os.path.join(d, name + ".pid")
            # To files: the copy keeps the streams of `ghost duplicate` open (a pipe would never end).
            err = os.path.join(d, name + ".err")
            with open(err, "wb") as ef:
                p = self.popen([self.ghost, "duplicate", "--detach", "--pid-file", pf, str(of)],
                               f"ghost duplicate {name}", stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=ef)
            try:
                rc = p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                raise Failure(f"ghost duplicate {name} did not finish within 60s (hang?)") from None
            with open(err) as f:
                se = f.read()
            if rc != 0 or "via=fork" not in se:
                raise Failure(f"ghost duplicate of {of} failed ({rc}): {se.strip()}")
            with open(pf) as f:
                copy = int(f.read())
            self.pids.add(copy)
            if f"copy={copy} " not in se:
                raise Failure(f"--pid-file says {copy}, the report: {se.strip()}")
            return copy, se

        first, se = duplicate(pid, "first")
        ns = os.stat(f"/proc/{first}/ns/pid").st_ino
        if "ids=kept" not in se or ns == os.stat(f"/proc/{pid}/ns/pid").st_ino:
            raise Failure(f"the first copy did not get a pid namespace of its own: {se.strip()}")
        if status(first)["NSpid"] != [str(first), str(pid)]:
            raise Failure(f"copy {first} is not pid {pid} in its namespace: NSpid {status(first)['NSpid']}")
        second, se = duplicate(first, "second")
        st = status(second)
        if st["PPid"] != [str(first)] or len(st["NSpid"]) != 2 or os.stat(f"/proc/{second}/ns/pid").st_ino != ns:
            raise Failure(f"ghost reported copy {second}, which is not the first copy's child in its namespace: "
                          f"PPid {st['PPid']} NSpid {st['NSpid']}")
        # A command given the host's pid of a copy reaches that very process.
        image = os.path.join(d, "second.ghost")
        rc, _, se = self.run([self.ghost, "checkpoint", "--kill", "--image", image, str(second)],
                             "ghost checkpoint --kill second")
        if rc != 0:
            raise Failure(f"ghost checkpoint --kill of the second copy failed ({rc}): {se.strip()}")
        deadline = time.monotonic() + 10
        while os.path.exists(f"/proc/{second}") and time.monotonic() < deadline:
            time.sleep(0.01)
        for p, who in ((second, "the second copy"), (first, "the first copy"), (pid, "the original")):
            alive = os.path.exists(f"/proc/{p}") and status(p)["State"][0] != "Z"
            if alive != (p != second):
                raise Failure(f"after the checkpoint --kill of {second}, {who} ({p}) is "
                              + ("alive" if alive else "gone"))
        # The namespace's init (pid 1 there) ends once the first copy has ended.
        init = None
        for e in os.listdir("/proc"):
            if e.isdigit():
                try:
                    if os.stat(f"/proc/{e}/ns/pid").st_ino == ns and status(int(e))["NSpid"][-1:] == ["1"]:
                        init = int(e)
                except (OSError, KeyError):
                    pass
        if init is None:
            raise Failure("no init found in the first copy's pid namespace")
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while os.path.exists(f"/proc/{init}") and status(init)["State"][0] != "Z":
            if time.monotonic() > deadline:
                raise Failure(f"the namespace's init {init} did not end within 20 s of its copy")
            time.sleep(0.01)
        log(f"copies {first} (pid {pid} in its namespace) and {second}; init {init} ended with them")

    def dup_tree(self):
        """A copy in a pid namespace of its own (root) that forks: the tree's checkpoint is refused
        in one line (its processes know each other by that namespace's pids), the copy untouched."""
        if os.geteuid() != 0:
            log("not root: copies get ids of their own, nothing to check here")
            return
        d = os.path.join(self.work, "dup_tree")
        os.makedirs(d)
        prog = ("import os, time\n"
                "time.sleep(2.0)\n"
                "child = os.fork()\n"
                "if child == 0:\n"
                "    time.sleep(3.0)\n"
                "    os._exit(7)\n"
                "_, st = os.waitpid(child, 0)\n"
                "print('child', os.WEXITSTATUS(st), flush=True)\n")
        pid = self.launch_python(d, prog)  # it forks 2 s later
        out = os.path.join(d, "copy.out")
        with open(out, "wb") as of:
            dup = self.popen([self.ghost, "duplicate", "--pid-file", os.path.join(d, "copy.pid"), str(pid)],
                             "ghost duplicate", stdin=subprocess.DEVNULL, stdout=of, stderr=subprocess.PIPE)
        self.wait_file(os.path.join(d, "copy.pid"), 30, "ghost duplicate wrote no pid file", dup)
        with open(os.path.join(d, "copy.pid")) as f:
            copy = int(f.read())
        self.pids.add(copy)
        deadline = time.monotonic() + 20
        while not open(f"/proc/{copy}/task/{copy}/children").read().split():
            if time.monotonic() > deadline:
                raise Failure(f"the copy {copy} did not fork within 20 s")
            time.sleep(0.01)
        rc, _, se = self.run([self.ghost, "checkpoint", "--kill", "--dir", os.path.join(d, "ckpt"), str(copy)],
                             "ghost checkpoint --kill (the copy's tree)")
        lines = se.strip().splitlines()
        if rc == 0 or len(lines) != 1 or "pid namespace of their own" not in lines[0]:
            raise Failure(f"the checkpoint of the copy's tree was not refused in one line ({rc}): {se.strip()!r}")
        try:
            rc = dup.wait(timeout=20)
        except subprocess.TimeoutExpired:
            raise Failure("the copy did not finish within 20 s of the refusal") from None
        with open(out) as f:
            text = f.read()
        if rc != 0 or text.strip() != "child 7":
            raise Failure(f"the copy did not go on untouched: ghost duplicate exited with {rc}, printed {text!r}")
        log(f"copy {copy}'s tree refused: {lines[0]}")

    def maps_resume(self):
        d = os.path.join(self.work, "maps_resume")
        os.makedirs(d)
        ck = os.path.join(d, "ckpt")
        out = open(os.path.join(d, "out.txt"), "wb")
        runner = self.popen([self.ghost, "launch", "--ckpt-dir", ck, "--pid-file", os.path.join(d, "pid"),
                             "--", self.a.maps_resume, "--dir", d], "ghost launch maps_resume",
                            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.PIPE)
        out.close()
        self.wait_file(os.path.join(d, "ready"), 30, "the program did not start", runner)
        self.wait_file(os.path.join(d, "pid"), 30, "ghost launch wrote no pid file", runner)
        with open(os.path.join(d, "pid")) as f:
            pid = int(f.read())
        self.pids.add(pid)
        rc, so, se = self.run([self.ghost, "checkpoint", "--kill", "--dir", ck, str(pid)], "ghost checkpoint --kill")
        if rc != 0:
            raise Failure(f"ghost checkpoint --kill failed ({rc}): {se.strip()}")
        runner.wait(timeout=30)
        restart = self.popen([self.ghost, "restart", "--pid-file", os.path.join(d, "pid2"), ck],
                             "ghost restart", stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        self.wait_file(os.path.join(d, "pid2"), 30, "ghost restart wrote no pid file", restart)
        with open(os.path.join(d, "pid2")) as f:
            self.pids.add(int(f.read()))
        self.release_and_check(d, restart, "maps_resume", "the restored program")
        log("the restored program read on where it had stopped")

    def slow_start(self):
        d = os.path.join(self.work, "slow_start")
        os.makedirs(d)
        ck = os.path.join(d, "ckpt")
        pidf = os.path.join(d, "pid")
        out = open(os.path.join(d, "out.txt"), "wb")
        runner = self.popen([self.ghost, "launch", "--ckpt-dir", ck, "--pid-file", pidf, "--",
                             self.a.slow_start, "--dir", d], "ghost launch slow_start",
                            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.PIPE)
        out.close()
        deadline = time.monotonic() + 30
        while not (os.path.exists(pidf) and os.path.getsize(pidf) > 0):
            if time.monotonic() > deadline or runner.poll() is not None:
                raise Failure("ghost launch wrote no pid file")
            time.sleep(0.001)
        with open(pidf) as f:
            pid = int(f.read())
        self.pids.add(pid)
        rc, so, se = self.run([self.ghost, "checkpoint", "--dir", ck, str(pid)], "ghost checkpoint")
        if rc != 0:
            raise Failure(f"ghost checkpoint as soon as the pid file existed failed ({rc}): {se.strip()}")
        self.release_and_check(d, runner, "slow_start", "the program")
        log("checkpointed as soon as its pid file existed")

    def release_and_check(self, d, proc, name, who):
        """Lets the program in d go on (its go file), waits for it and checks its PASS line."""
        self.touch(os.path.join(d, "go"))
        try:
            rc = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            raise Failure(f"{who} did not end within 30 s") from None
        with open(os.path.join(d, "out.txt")) as f:
            text = f.read()
        if rc != 0 or f"PASS {name}" not in text:
            raise Failure(f"{who} exited with {rc}: {text.strip()!r} "
                          f"{proc.stderr.read().decode(errors='replace').strip()!r}")

    def main(self):
        ok = False
        try:
            getattr(self, self.a.only)()
            ok = True
        except Failure as e:
            log(f"FAILURE: {e}")
        finally:
            kill_all(self.popens, self.pids, log)
            if ok:
                shutil.rmtree(self.work, ignore_errors=True)
        print(f"{'PASS' if ok else 'FAIL'} agent_cases {self.a.only}" + ("" if ok else f" (work dir {self.work})"),
              flush=True)
        return 0 if ok else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ghost", required=True)
    ap.add_argument("--blocked-park", required=True, help="path of tests/programs/blocked_park")
    ap.add_argument("--dup-wait", required=True, help="path of tests/programs/dup_wait")
    ap.add_argument("--maps-resume", required=True, help="path of tests/programs/maps_resume")
    ap.add_argument("--slow-start", required=True, help="path of tests/programs/slow_start")
    ap.add_argument("--only", required=True, choices=["blocked_park", "dup_wait", "dup_nested", "dup_tree", "maps_resume", "slow_start"])
    return Cases(ap.parse_args()).main()


if __name__ == "__main__":
    sys.exit(main())
