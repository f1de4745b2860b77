#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Credentials of restored processes (needs root; creates the user ghost-test when missing).

  user_by_root  ckpt_victim launched and checkpointed by the user ghost-test, restarted by root:
                the restored process runs as ghost-test (Uid, Gid, Groups of /proc/PID/status),
                with no capabilities, the launch's no_new_privs and bounding set, is the user's
                (dumpable: the user can checkpoint it again, and restart that image) and passes;
  forged        images root must refuse in one line, nothing of them running afterwards: a root
                image chowned to ghost-test; ghost-test's own image with its credentials patched
                to root's (every hash recomputed); a root image that group and others may write;
                and ghost-test restarting a root image it can read.
Exit status: 0 pass, 1 fail, 77 skipped (not root, or no way to create the user).
"""
import argparse
import os
import pwd
import shutil
import signal
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bad_input import REC_HDR, load_xxh3, rehash  # noqa: E402
from procs import kill_all, pid_alive, status  # noqa: E402

T0 = time.monotonic()
USER = "ghost-test"
REC_CREDENTIALS = 8


def log(msg):
    print(f"[credentials {time.monotonic() - T0:6.2f}s] {msg}", flush=True)


class Failure(Exception):
    pass


class Test:
    def __init__(self, a):
        self.a = a
        self.ghost = os.path.abspath(a.ghost)
        self.victim = os.path.abspath(a.victim)
        self.work = os.path.abspath(a.workdir)
        self.popens, self.pids, self.failures = [], set(), []

    def ensure_user(self):
        try:
            pw = pwd.getpwnam(USER)
        except KeyError:
            r = subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                                "--groups", "users", USER], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            if r.returncode != 0:
                return None
            pw = pwd.getpwnam(USER)
        self.uid, self.gid = pw.pw_uid, pw.pw_gid
        self.groups = sorted(set(os.getgrouplist(USER, pw.pw_gid)))
        return pw

    def as_user(self, argv, restricted=False):
        """argv run as the user; restricted: also without CAP_NET_RAW in the bounding set and with
        no_new_privs, both of which a restore must keep."""
        extra = ["--no-new-privs", "--bounding-set=-net_raw"] if restricted else []
        return ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--init-groups"] + extra + [
            "env", f"GHOST_RUNTIME_DIR={self.user_runtime}"] + argv

    def popen(self, argv, what, **kw):
        log(f"start {what}")
        p = subprocess.Popen(argv, start_new_session=True, **kw)
        self.popens.append((p, what))
        return p

    def run(self, argv, what):
        p = self.popen(argv, what, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            out, err = p.communicate(timeout=self.a.cmd_timeout)
        except subprocess.TimeoutExpired:
            raise Failure(f"{what}: no answer within {self.a.cmd_timeout:.0f}s (hang)") from None
        return p.returncode, out.decode(errors="replace"), err.decode(errors="replace")

    def wait_for(self, cond, what):
        deadline = time.monotonic() + self.a.cmd_timeout
        while not cond():
            if time.monotonic() > deadline:
                raise Failure(f"timed out waiting for {what}")
            time.sleep(0.02)

    def read_pid(self, path, runner, what):
        self.wait_for(lambda: runner.poll() is not None or (os.path.exists(path) and open(path).read().strip()),
                      f"{what} to write {path}")
        if not (os.path.exists(path) and open(path).read().strip()):
            raise Failure(f"{what} exited with {runner.returncode} without writing its pid file")
        pid = int(open(path).read().split()[0])
        self.pids.add(pid)
        return pid

    def user_dir(self, name):
        d = os.path.join(self.work, name)
        os.makedirs(d)
        os.chown(d, self.uid, self.gid)
        return d

    def launch(self, tag, user):
        """A victim under ghost, launched by the user or by root: (runner, pid, data dir, stdout)."""
        d = self.user_dir(f"{tag}-data") if user else os.path.join(self.work, f"{tag}-data")
        os.makedirs(d, exist_ok=True)
        out = os.path.join(self.work, f"{tag}.out")
        open(out, "wb").close()
        if user:
            os.chown(out, self.uid, self.gid)
        pidf = os.path.join(d, "launch.pid")  # the launcher writes it as whoever launches
        argv = [self.ghost, "launch", "--pid-file", pidf, "--", self.victim, "--dir", d]
        with open(out, "wb") as o:
            runner = self.popen(self.as_user(argv, restricted=True) if user else argv, f"ghost launch ({tag})",
                                stdin=subprocess.DEVNULL, stdout=o, stderr=subprocess.STDOUT)
        pid = self.read_pid(pidf, runner, f"ghost launch ({tag})")
        self.wait_for(lambda: os.path.exists(os.path.join(d, "beat")), f"the {tag} victim's first heartbeat")
        return runner, pid, d, out

    def checkpoint(self, pid, ckdir, user, kill=True):
        argv = [self.ghost, "checkpoint", "--dir", ckdir] + (["--kill"] if kill else []) + [str(pid)]
        rc, out, err = self.run(self.as_user(argv) if user else argv, "ghost checkpoint" + (" (as the user)" if user else ""))
        if rc != 0:
            raise Failure(f"ghost checkpoint of pid {pid} failed ({rc}): {err.strip()}")
        return os.path.join(ckdir, "image.ghost")

    def image_processes(self, data_dir):
        found = set()
        for ent in os.listdir("/proc"):
            if ent.isdigit() and int(ent) != os.getpid():
                try:
                    if data_dir.encode() in open(f"/proc/{ent}/cmdline", "rb").read() and pid_alive(int(ent)):
                        found.add(int(ent))
                except OSError:
                    pass
        return found

    # -- subtests ---------------------------------------------------------------------------------
    def t_user_by_root(self):
        runner, pid, d, out = self.launch("user", user=True)
        image = self.checkpoint(pid, self.user_dir("user-ckpt"), user=True)
        runner.wait(timeout=self.a.cmd_timeout)
        self.wait_for(lambda: not pid_alive(pid), "the user's victim to die")
        pidf = os.path.join(self.work, "user-restart.pid")
        with open(os.path.join(self.work, "user-restart.err"), "wb") as e:
            r = self.popen([self.ghost, "restart", "--pid-file", pidf, image], "ghost restart (root, the user's image)",
                           stdin=subprocess.DEVNULL, stdout=e, stderr=subprocess.STDOUT)
        rpid = self.read_pid(pidf, r, "ghost restart")
        beat = os.path.join(d, "beat")
        b0 = open(beat, "rb").read()
        self.wait_for(lambda: open(beat, "rb").read() != b0, "the restored victim's heartbeat")
        st = status(rpid)
        want = {"Uid": [str(self.uid)] * 4, "Gid": [str(self.gid)] * 4, "Groups": [str(g) for g in self.groups],
                "CapInh": ["0" * 16], "CapPrm": ["0" * 16], "CapEff": ["0" * 16], "CapAmb": ["0" * 16],
                "NoNewPrivs": ["1"]}
        for key, value in want.items():
            got = sorted(st[key], key=int) if key == "Groups" else st[key]
            if got != value:
                self.failures.append(f"restored by root, the user's process has {key} {' '.join(got)}, expected {' '.join(value)}")
        log(f"  restored pid {rpid}: Uid {' '.join(st['Uid'])} Gid {' '.join(st['Gid'])} Groups {' '.join(st['Groups'])} "
            f"CapEff {st['CapEff'][0]} CapPrm {st['CapPrm'][0]} CapBnd {st['CapBnd'][0]} NoNewPrivs {st['NoNewPrivs'][0]}")
        if int(st["CapBnd"][0], 16) & (1 << 13):
            self.failures.append(f"the restored process has CAP_NET_RAW in its bounding set ({st['CapBnd'][0]})")
        if os.stat(f"/proc/{rpid}/status").st_uid != self.uid:
            self.failures.append("the restored process is not dumpable (its /proc files belong to root)")
        again = self.checkpoint(rpid, self.user_dir("user-ckpt2"), user=True, kill=False)  # still the user's
        open(os.path.join(d, "stop"), "w").close()
        rc = r.wait(timeout=self.a.cmd_timeout)
        text = open(out, "rb").read()
        if rc != 0 or not text.endswith(b"PASS ckpt_victim\n"):
            self.failures.append(f"the restored victim did not pass: exit {rc}, stdout {text[-200:]!r}")
        # The user restarting its own image (taken from the process root restored): stops at once.
        rc, o, err = self.run(self.as_user([self.ghost, "restart", again]), "ghost restart (the user, its own image)")
        text = open(out, "rb").read()
        if rc != 0 or not text.endswith(b"PASS ckpt_victim\n"):
            self.failures.append(f"the user's restart of its own image: exit {rc}, stderr {err.strip()[:300]!r}")
        self.user_image = image

    def refused(self, argv, what, data_dir, expect):
        rc, out, err = self.run(argv, what)
        lines = [line for line in err.splitlines() if line.strip()]
        if rc == 0 or len(lines) != 1 or expect not in lines[0]:
            self.failures.append(f"{what}: exit {rc}, stderr {err.strip()[:300]!r}; expected one line with {expect!r}")
        else:
            log(f"  ok: {lines[0]}")
        alive = self.image_processes(data_dir)
        if alive:
            self.failures.append(f"{what}: process(es) {sorted(alive)} of the image running")
            for p in alive:
                self.pids.add(p)
                os.kill(p, signal.SIGKILL)

    def t_forged(self):
        runner, pid, d, out = self.launch("root", user=False)
        root_image = self.checkpoint(pid, os.path.join(self.work, "root-ckpt"), user=False)
        runner.wait(timeout=self.a.cmd_timeout)
        self.wait_for(lambda: not pid_alive(pid), "root's victim to die")
        data = open(root_image, "rb").read()

        def image_file(name, content, owner, mode=0o600):
            path = os.path.join(self.work, name)
            with open(path, "wb") as f:
                f.write(content)
            os.chown(path, owner, owner and self.gid)
            os.chmod(path, mode)
            return path

        chowned = image_file("chowned.ghost", data, self.uid)
        self.refused([self.ghost, "restart", chowned], "root restarting a root image owned by the user", d,
                     f"owned by uid {self.uid} but its process ran as uid 0")
        # The user's own image, its credentials record made root's: a forgery any user could make.
        xxh3 = load_xxh3()
        if xxh3 is None:
            raise Failure("libxxhash cannot be loaded through ctypes: cannot forge an image")
        user = bytearray(open(self.user_image, "rb").read())
        off = 0
        while off < len(user):
            _, rtype, _, length, _ = REC_HDR.unpack_from(user, off)
            if rtype == REC_CREDENTIALS:
                p = off + REC_HDR.size
                struct.pack_into("<8I5Q", user, p, *([0] * 8), *([(1 << 41) - 1] * 4), 0)
                break
            off += REC_HDR.size + length
        else:
            raise Failure("no credentials record in the user's image")
        forged = image_file("forged.ghost", rehash(bytes(user), xxh3), self.uid)
        user_data = os.path.join(self.work, "user-data")
        self.refused([self.ghost, "restart", forged], "root restarting the user's image patched to root", user_data,
                     f"owned by uid {self.uid} but its process ran as uid 0")
        struct.pack_into("<4I4I", user, p, *([self.uid] * 4), *([self.gid] * 4))  # only the capabilities
        forged = image_file("forged-caps.ghost", rehash(bytes(user), xxh3), self.uid)
        self.refused([self.ghost, "restart", forged], "root restarting the user's image given capabilities",
                     user_data, "but its process had capabilities")
        writable = image_file("writable.ghost", data, 0, 0o622)
        self.refused([self.ghost, "restart", writable], "root restarting a root image others may write", d,
                     "may be written by group or others")
        readable = image_file("readable.ghost", data, self.uid)
        self.refused(self.as_user([self.ghost, "restart", readable]), "the user restarting a root image", d,
                     f"ran as uid 0, which uid {self.uid} may not take")

    def main(self):
        if os.geteuid() != 0:
            print("SKIP credentials: needs root", flush=True)
            return 77
        if self.ensure_user() is None or not shutil.which("setpriv"):
            print(f"SKIP credentials: no user {USER} and useradd failed, or no setpriv", flush=True)
            return 77
        shutil.rmtree(self.work, ignore_errors=True)
        os.makedirs(self.work)
        os.chmod(self.work, 0o755)
        self.user_runtime = self.user_dir("run")
        os.chmod(self.user_runtime, 0o700)
        try:
            for t in ("user_by_root", "forged"):
                log(f"=== {t}")
                getattr(self, f"t_{t}")()
        except Failure as e:
            self.failures.append(str(e))
        finally:
            kill_all(self.popens, self.pids, log)
        for f in self.failures:
            log(f"FAILED: {f}")
        if self.failures:
            print("FAIL credentials", flush=True)
            return 1
        shutil.rmtree(self.work, ignore_errors=True)
        print("PASS credentials", flush=True)
        return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ghost", required=True)
    ap.add_argument("--victim", required=True, help="the ckpt_victim test program")
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--cmd-timeout", type=float, default=20.0)
    return Test(ap.parse_args()).main()


if __name__ == "__main__":
    sys.exit(main())
