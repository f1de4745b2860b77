#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Images over the network (resources/ucx) between real processes on this host: a `ghost receive`
listening on 127.0.0.1 (port chosen by the kernel) and `ghost checkpoint/duplicate --to ucx://`.

Subtests (--only a,b,...; default all):
  restore         checkpoint --kill to a `receive --restore`: the original ends only after the
                  receiver's verdict, the copy runs on from where it was (its heartbeat goes on),
                  stops on request with its PASS line on the receiver's stdout, and the receiver
                  exits with the copy's status 0.
  out             checkpoint (the process goes on) to a `receive --out FILE`: the file is a whole
                  image (`ghost inspect` accepts it), the process runs on to its PASS line.
  duplicate       duplicate --to: the original keeps running, the copy runs at the receiver; both
                  stop on request with their PASS lines.
  wrong_secret    the sender's secret is not the receiver's: both fail in one line, nothing is
                  restored, the original (checkpoint --kill) runs on untouched.
  receiver_killed the receiver SIGKILLed while a 768 MiB image streams in: the sender fails in one
                  line within the timeout, the process runs on to its PASS line, no copy is left.
  sender_killed   `ghost checkpoint --kill` SIGKILLed while the image streams: the receiver fails in
                  one line within the timeout, nothing is restored, the process runs on.
  corrupt         one bit of the stream flipped on the way (GHOST_UCX_TEST_FLIP_AT): the receiver
                  refuses the record, both fail in one line, nothing is restored, the process runs on.
  standby         checkpoint --standby (a migration's final image): connected, it says it is ready
                  on its standard input (a socket) while the process runs on untouched; its end
                  alone dismisses it (exit 3, the process not parked, no image); 'g' then the end is
                  its go: a whole image at the receiver, the process runs on.
Exit status: 0 pass, 1 fail.
"""
import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from procs import kill_all, pid_alive  # noqa: E402

T0 = time.monotonic()
SUBTESTS = ["restore", "out", "duplicate", "wrong_secret", "receiver_killed", "sender_killed", "corrupt",
            "standby"]


def log(msg):
    print(f"[ucx_transfer {time.monotonic() - T0:7.2f}s] {msg}", flush=True)


class Failure(Exception):
    pass


def read_or_none(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def one_line(err, what, ignore=r"^ghost: receiving on "):
    lines = [l for l in err.splitlines() if l.strip() and not re.match(ignore, l)]
    if len(lines) != 1:
        raise Failure(f"{what}: {len(lines)} stderr lines, expected exactly one: {err.strip()[:600]!r}")
    return lines[0]


class Env:
    def __init__(self, a):
        self.a = a
        self.ghost = os.path.abspath(a.ghost)
        self.victim = os.path.abspath(a.victim)
        self.popens = []
        self.pids = set()

    def popen(self, argv, what, **kw):
        log(f"start {what}: {' '.join(argv)}")
        p = subprocess.Popen(argv, start_new_session=True, **kw)
        self.popens.append((p, what))
        return p

    def run(self, argv, what, env=None, timeout=None):
        p = self.popen(argv, what, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       env=env)
        try:
            out, err = p.communicate(timeout=timeout or self.a.cmd_timeout)
        except subprocess.TimeoutExpired:
            raise Failure(f"{what} did not finish within {self.a.cmd_timeout:.0f}s (hang)") from None
        return p.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")

    def wait_for(self, cond, what, timeout=None):
        deadline = time.monotonic() + (timeout or self.a.cmd_timeout)
        while not cond():
            if time.monotonic() > deadline:
                raise Failure(f"timed out waiting for {what}")
            time.sleep(0.01)

    def wait_exit(self, p, what):
        try:
            return p.wait(timeout=self.a.cmd_timeout)
        except subprocess.TimeoutExpired:
            raise Failure(f"{what} did not exit within {self.a.cmd_timeout:.0f}s (hang)") from None

    def secret(self, name, value):
        path = os.path.join(self.work, name)
        with open(path, "w") as f:
            f.write(value + "\n")
        os.chmod(path, 0o600)
        return path

    def start_victim(self, tag):
        d = os.path.join(self.work, f"{tag}-data")
        os.makedirs(d, exist_ok=True)
        out = os.path.join(self.work, f"{tag}.out")
        pidf = os.path.join(self.work, f"{tag}.pid")
        with open(out, "wb") as o:
            runner = self.popen([self.ghost, "launch", "--ckpt-dir", os.path.join(self.work, "ck"), "--pid-file",
                                 pidf, "--", self.victim, "--dir", d], f"ghost launch ({tag})",
                                stdin=subprocess.DEVNULL, stdout=o, stderr=subprocess.STDOUT)
        self.wait_for(lambda: runner.poll() is not None or (read_or_none(pidf) or b"").strip(), "the pid file")
        if runner.poll() is not None:
            raise Failure(f"ghost launch exited {runner.returncode}")
        pid = int(read_or_none(pidf).split()[0])
        self.pids.add(pid)
        self.wait_for(lambda: read_or_none(os.path.join(d, "beat")), "the victim's first heartbeat")
        return runner, pid, d, out

    def beats_on(self, d, what):
        """The heartbeat file changes within a few seconds: a copy of the victim runs."""
        before = read_or_none(os.path.join(d, "beat"))
        self.wait_for(lambda: read_or_none(os.path.join(d, "beat")) != before, f"{what}'s heartbeat to go on",
                      timeout=10)

    def start_receiver(self, secret_file, *mode):
        err = os.path.join(self.work, f"receiver-{len(self.popens)}.err")
        out = os.path.join(self.work, f"receiver-{len(self.popens)}.out")
        with open(out, "wb") as o, open(err, "wb") as e:
            p = self.popen([self.ghost, "receive", "--listen", "127.0.0.1:0", "--secret-file", secret_file,
                            "--timeout", "60", *mode], "ghost receive", stdin=subprocess.DEVNULL, stdout=o,
                           stderr=e)
        port = []

        def listening():
            m = re.search(rb"receiving on 127\.0\.0\.1:(\d+)", read_or_none(err) or b"")
            if m:
                port.append(int(m.group(1)))
            return m or p.poll() is not None

        self.wait_for(listening, "the receiver to listen")
        if not port:
            raise Failure(f"ghost receive exited {p.returncode}: {(read_or_none(err) or b'').decode()!r}")
        return p, f"ucx://127.0.0.1:{port[0]}", out, err

    def victim_copies(self):
        found = set()
        for ent in os.listdir("/proc"):
            if ent.isdigit():
                try:
                    if os.readlink(f"/proc/{ent}/exe") == self.victim and pid_alive(int(ent)):
                        found.add(int(ent))
                except OSError:
                    pass
        return found

    def stop_and_pass(self, d, runner, out, what):
        open(os.path.join(d, "stop"), "w").close()
        rc = self.wait_exit(runner, what)
        text = (read_or_none(out) or b"").decode("utf-8", "replace")
        if rc != 0 or "PASS ckpt_victim" not in text:
            raise Failure(f"{what} exited {rc} without its PASS line: {text.strip()[-400:]!r}")

    def refused_and_untouched(self, argv, what, receiver, rerr, runner, d, out, env=None, expect=""):
        before = self.victim_copies()
        rc, sout, serr = self.run(argv, what, env=env)
        line = one_line(serr, what)
        if rc == 0:
            raise Failure(f"{what} exited 0: {sout.strip()!r}")
        if expect and not re.search(expect, line):
            raise Failure(f"{what}: unexpected reason {line!r} (expected /{expect}/)")
        log(f"  sender refused ({rc}): {line}")
        rrc = self.wait_exit(receiver, "ghost receive")
        rline = one_line((read_or_none(rerr) or b"").decode(), "ghost receive")
        if rrc == 0:
            raise Failure("ghost receive exited 0 after a refused transfer")
        log(f"  receiver refused ({rrc}): {rline}")
        time.sleep(0.3)
        if self.victim_copies() - before:
            raise Failure(f"a copy of the victim runs after {what} was refused")
        if runner.poll() is not None:
            raise Failure(f"the original ended (exit {runner.returncode}) after {what} was refused")
        self.beats_on(d, "the original")
        self.stop_and_pass(d, runner, out, "the original")

    # -- subtests ---------------------------------------------------------------------------------
    def t_restore(self):
        sf = self.secret("secret", "restore-" + os.urandom(16).hex())
        runner, pid, d, out = self.start_victim("v")
        receiver, url, rout, rerr = self.start_receiver(sf, "--restore")
        rc, sout, serr = self.run([self.ghost, "checkpoint", "--kill", str(pid), "--to", url, "--secret-file", sf],
                                  "ghost checkpoint --kill --to")
        if rc != 0:
            raise Failure(f"checkpoint --to failed ({rc}): {serr.strip()}")
        if not re.match(rf"checkpoint pid={pid} image={re.escape(url)} .* killed=1$", sout.strip()):
            raise Failure(f"unexpected checkpoint line {sout.strip()!r}")
        if self.wait_exit(runner, "the original's ghost launch") == 0:
            raise Failure("the original exited 0 after checkpoint --kill")
        self.wait_for(lambda: re.search(rb"restored pid=(\d+)", read_or_none(rerr) or b""), "the restore line")
        copy = int(re.search(rb"restored pid=(\d+)", read_or_none(rerr)).group(1))
        self.pids.add(copy)
        self.beats_on(d, "the copy")
        self.stop_and_pass(d, receiver, rout, "the restored copy (via ghost receive)")
        log("  copy ran to PASS at the receiver")

    def t_out(self):
        sf = self.secret("secret", "out-" + os.urandom(16).hex())
        runner, pid, d, out = self.start_victim("v")
        image = os.path.join(self.work, "received", "image.ghost")
        receiver, url, rout, rerr = self.start_receiver(sf, "--out", image)
        rc, sout, serr = self.run([self.ghost, "checkpoint", str(pid), "--to", url, "--secret-file", sf],
                                  "ghost checkpoint --to")
        if rc != 0:
            raise Failure(f"checkpoint --to failed ({rc}): {serr.strip()}")
        self.received_whole(receiver, rout, rerr, image)
        self.beats_on(d, "the original")
        self.stop_and_pass(d, runner, out, "the original")

    def received_whole(self, receiver, rout, rerr, image):
        """The receiver (`--out IMAGE`) ended well, with a whole image that `ghost inspect` takes."""
        if self.wait_exit(receiver, "ghost receive") != 0:
            raise Failure(f"ghost receive failed: {(read_or_none(rerr) or b'').decode().strip()}")
        rline = (read_or_none(rout) or b"").decode().strip()
        if not re.match(rf"received image={re.escape(image)} from=127\.0\.0\.1:\d+ bytes=\d+", rline):
            raise Failure(f"unexpected receive line {rline!r}")
        rc, iout, ierr = self.run([self.ghost, "inspect", image], "ghost inspect")
        if rc != 0 or "checksums OK" not in iout:
            raise Failure(f"ghost inspect of the received image failed ({rc}): {ierr.strip()}")

    def standby(self, pid, url, sf, tag):
        """A `checkpoint --standby` once it said it is ready: (process, our end of its input)."""
        ours, theirs = socket.socketpair()
        err = open(os.path.join(self.work, f"standby-{tag}.err"), "wb")
        out = open(os.path.join(self.work, f"standby-{tag}.out"), "wb")
        p = self.popen([self.ghost, "checkpoint", str(pid), "--to", url, "--secret-file", sf, "--standby"],
                       f"ghost checkpoint --standby ({tag})", stdin=theirs, stdout=out, stderr=err)
        theirs.close()
        ours.settimeout(self.a.cmd_timeout)
        try:
            said = ours.recv(1)
        except socket.timeout:
            raise Failure("the standby did not say it is ready") from None
        if said != b"r":
            raise Failure(f"the standby said {said!r} instead of ready (exit {p.poll()}): "
                          f"{(read_or_none(err.name) or b'').decode().strip()}")
        return p, ours, out.name, err.name

    def t_standby(self):
        sf = self.secret("secret", "standby-" + os.urandom(16).hex())
        runner, pid, d, out = self.start_victim("v")
        # Dismissed: the process was never parked (its heartbeat went on throughout), no image.
        image = os.path.join(self.work, "received", "dismissed.ghost")
        receiver, url, rout, rerr = self.start_receiver(sf, "--out", image)
        sb, ours, sout, serr = self.standby(pid, url, sf, "dismissed")
        self.beats_on(d, "the process beside a ready standby")
        ours.close()
        rc = self.wait_exit(sb, "the dismissed standby")
        if rc != 3:
            raise Failure(f"the dismissed standby exited {rc}, not 3: {(read_or_none(serr) or b'').decode().strip()}")
        if self.wait_exit(receiver, "ghost receive") == 0 or os.path.exists(image):
            raise Failure("the receiver of a dismissed standby made an image")
        self.beats_on(d, "the process after the dismissal")
        # Its go: a whole image.
        image = os.path.join(self.work, "received", "image.ghost")
        receiver, url, rout, rerr = self.start_receiver(sf, "--out", image)
        sb, ours, sout, serr = self.standby(pid, url, sf, "go")
        ours.sendall(b"g")
        ours.close()
        if self.wait_exit(sb, "the standby after its go") != 0:
            raise Failure(f"the standby failed after its go: {(read_or_none(serr) or b'').decode().strip()}")
        line = (read_or_none(sout) or b"").decode().strip()
        if not re.match(rf"checkpoint pid={pid} image={re.escape(url)} bytes=\d+ ", line):
            raise Failure(f"unexpected checkpoint line {line!r}")
        self.received_whole(receiver, rout, rerr, image)
        self.beats_on(d, "the original")
        self.stop_and_pass(d, runner, out, "the original")

    def t_duplicate(self):
        sf = self.secret("secret", "dup-" + os.urandom(16).hex())
        runner, pid, d, out = self.start_victim("v")
        receiver, url, rout, rerr = self.start_receiver(sf, "--restore")
        rc, sout, serr = self.run([self.ghost, "duplicate", str(pid), "--to", url, "--secret-file", sf],
                                  "ghost duplicate --to")
        if rc != 0:
            raise Failure(f"duplicate --to failed ({rc}): {serr.strip()}")
        one_line(serr, "ghost duplicate --to")
        self.wait_for(lambda: re.search(rb"restored pid=(\d+)", read_or_none(rerr) or b""), "the restore line")
        copy = int(re.search(rb"restored pid=(\d+)", read_or_none(rerr)).group(1))
        self.pids.add(copy)
        if runner.poll() is not None:
            raise Failure("the original ended after duplicate --to")
        open(os.path.join(d, "stop"), "w").close()
        for p, o, what in ((runner, out, "the original"), (receiver, rout, "the copy")):
            rc = self.wait_exit(p, what)
            text = (read_or_none(o) or b"").decode("utf-8", "replace")
            if rc != 0 or "PASS ckpt_victim" not in text:
                raise Failure(f"{what} exited {rc} without its PASS line: {text.strip()[-400:]!r}")
        log("  original and copy ran to PASS")

    def t_wrong_secret(self):
        sf = self.secret("secret", "right-" + os.urandom(16).hex())
        wrong = self.secret("wrong", "wrong-" + os.urandom(16).hex())
        runner, pid, d, out = self.start_victim("v")
        receiver, url, rout, rerr = self.start_receiver(sf, "--restore")
        self.refused_and_untouched([self.ghost, "checkpoint", "--kill", str(pid), "--to", url, "--secret-file", wrong],
                                   "ghost checkpoint --kill (wrong secret)", receiver, rerr, runner, d, out,
                                   expect="wrong secret")

    def t_corrupt(self):
        sf = self.secret("secret", "corrupt-" + os.urandom(16).hex())
        runner, pid, d, out = self.start_victim("v")
        receiver, url, rout, rerr = self.start_receiver(sf, "--restore")
        env = dict(os.environ, GHOST_UCX_TEST_FLIP_AT="300000")  # in the victim's page data
        self.refused_and_untouched([self.ghost, "checkpoint", "--kill", str(pid), "--to", url, "--secret-file", sf],
                                   "ghost checkpoint --kill (a bit flipped)", receiver, rerr, runner, d, out, env=env,
                                   expect="corrupt")

    def t_sender_killed(self):
        sf = self.secret("secret", "skilled-" + os.urandom(16).hex())
        runner, pid, d, out = self.start_victim("v")
        with open(os.path.join(d, "grow"), "w") as f:
            f.write("768\n")
        self.wait_for(lambda: os.path.exists(os.path.join(d, "grown")), "the victim to grow")
        receiver, url, rout, rerr = self.start_receiver(sf, "--restore")
        before = self.victim_copies()
        sender = self.popen([self.ghost, "checkpoint", "--kill", str(pid), "--to", url, "--secret-file", sf],
                            "ghost checkpoint --kill --to", stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)

        def written():
            try:
                with open(f"/proc/{receiver.pid}/io") as f:
                    return int(re.search(r"wchar: (\d+)", f.read()).group(1))
            except (OSError, AttributeError):
                return 0

        self.wait_for(lambda: written() > (32 << 20) or sender.poll() is not None, "the stream to get going")
        if sender.poll() is not None:
            raise Failure(f"the checkpoint ended ({sender.returncode}) before it could be killed")
        os.killpg(sender.pid, signal.SIGKILL)
        sender.wait()
        log(f"  sender killed after {written() >> 20} MiB")
        rrc = self.wait_exit(receiver, "ghost receive")
        rline = one_line((read_or_none(rerr) or b"").decode(), "ghost receive (sender killed)")
        if rrc == 0:
            raise Failure("ghost receive exited 0 after its sender was killed")
        log(f"  receiver failed ({rrc}): {rline}")
        self.wait_for(lambda: not (self.victim_copies() - before), "the half-restored copy to be gone", timeout=10)
        if runner.poll() is not None:
            raise Failure(f"the original ended (exit {runner.returncode}) after its checkpointer was killed")
        self.beats_on(d, "the original")
        self.stop_and_pass(d, runner, out, "the original")

    def t_receiver_killed(self):
        sf = self.secret("secret", "killed-" + os.urandom(16).hex())
        runner, pid, d, out = self.start_victim("v")
        with open(os.path.join(d, "grow"), "w") as f:
            f.write("768\n")
        self.wait_for(lambda: os.path.exists(os.path.join(d, "grown")), "the victim to grow")
        receiver, url, rout, rerr = self.start_receiver(sf, "--restore")
        before = self.victim_copies()
        sender = self.popen([self.ghost, "checkpoint", "--kill", str(pid), "--to", url, "--secret-file", sf],
                            "ghost checkpoint --kill --to", stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)

        def written():  # what the receiver has passed on to its restorer
            try:
                with open(f"/proc/{receiver.pid}/io") as f:
                    return int(re.search(r"wchar: (\d+)", f.read()).group(1))
            except (OSError, AttributeError):
                return 0

        self.wait_for(lambda: written() > (32 << 20) or sender.poll() is not None, "the stream to get going")
        if sender.poll() is not None:
            sout, serr = sender.communicate()
            raise Failure(f"the checkpoint ended ({sender.returncode}) before the receiver could be killed: "
                          f"{serr.decode().strip()!r}; receiver: {(read_or_none(rerr) or b'').decode().strip()!r}")
        os.killpg(receiver.pid, signal.SIGKILL)
        log(f"  receiver killed after {written() >> 20} MiB")
        try:
            sout, serr = sender.communicate(timeout=self.a.cmd_timeout)
        except subprocess.TimeoutExpired:
            raise Failure("the sender hung after the receiver was killed") from None
        line = one_line(serr.decode(), "ghost checkpoint --kill (receiver killed)")
        if sender.returncode == 0:
            raise Failure(f"the checkpoint succeeded without a receiver: {sout.decode().strip()!r}")
        log(f"  sender failed ({sender.returncode}): {line}")
        self.wait_for(lambda: not (self.victim_copies() - before), "the half-restored copy to be gone", timeout=10)
        if runner.poll() is not None:
            raise Failure(f"the original ended (exit {runner.returncode}) after the receiver was killed")
        self.beats_on(d, "the original")
        self.stop_and_pass(d, runner, out, "the original")

    def main(self):
        selected = self.a.only.split(",") if self.a.only else SUBTESTS
        for s in selected:
            if s not in SUBTESTS:
                print(f"unknown subtest {s}; known: {', '.join(SUBTESTS)}", file=sys.stderr)
                return 2
        results = {}
        for s in selected:
            self.work = os.path.join(self.a.workdir, s)
            shutil.rmtree(self.work, ignore_errors=True)
            os.makedirs(self.work)
            log(f"=== {s}")
            try:
                getattr(self, f"t_{s}")()
                results[s] = "PASS"
            except Failure as e:
                log(f"FAILURE: {e}")
                results[s] = "FAIL"
            finally:
                kill_all(self.popens, self.pids, log)
                self.popens, self.pids = [], set()
            if results[s] == "PASS" and not self.a.keep:
                shutil.rmtree(self.work, ignore_errors=True)
        for s, r in results.items():
            print(f"{r} ucx_transfer.{s}", flush=True)
        return 1 if any(r == "FAIL" for r in results.values()) else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ghost", required=True)
    ap.add_argument("--victim", required=True, help="path of the ckpt_victim test program")
    ap.add_argument("--only", help="comma-separated subtests: " + ",".join(SUBTESTS))
    ap.add_argument("--workdir", help="work directory (default: a new temp directory)")
    ap.add_argument("--cmd-timeout", type=float, default=60)
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    a.workdir = os.path.abspath(a.workdir or tempfile.mkdtemp(prefix="ghost-ucx-"))
    os.makedirs(a.workdir, exist_ok=True)
    return Env(a).main()


if __name__ == "__main__":
    sys.exit(main())
