#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Bad-input tests for the ghost CLI.

Subtests (--only a,b,...; default all):
  corrupt    bytes flipped in the middle / a bit flipped / a header byte changed;
  truncated  the image cut to half, to all but one byte, to 100 bytes, to nothing;
  foreign    the kernel release in the header patched, the magic changed, an ELF executable,
             random bytes and a text file renamed to image.ghost;
             For each bad image, `ghost inspect` and `ghost restart` must exit non-zero with exactly
             one line on stderr within a timeout, and nothing may be restored (no pid file naming a
             live process, the victim's heartbeat file and stdout unchanged, no new process running
             the victim). A control restart from the intact image must then work.
  not_ghost  `ghost checkpoint` (with and without --kill) and `ghost duplicate` of a process not
             running under ghost, checkpoint of a pid that does not exist, restart/inspect of a
             missing path, launch of a missing program: one-line error, non-zero exit, and the
             plain process is left alone;
  refused_fds  a victim holding a descriptor a restart could not rebuild exactly (/proc/self/ns/net,
             a /proc file of the process, an epoll instance watching a descriptor number closed
             since, an inotify instance with an event queued, a listening socket with a connection
             waiting, a socket or a pty master shared with a child,
             a terminal that is not its controlling terminal, a Linux AIO context, an attached SysV
             shared memory segment, a named pipe with unread data, a memfd beyond the size an image
             carries, a POSIX message queue, also through the fork path of `ghost duplicate`;
             and not descriptors: a seccomp filter the program installed, a thread in seccomp
             strict mode, memory where ghost's restorer runs):
             `ghost checkpoint --kill` and
             `ghost duplicate` must fail with one line naming the descriptor, write no image, and
             leave the victim running (it then stops on request with its PASS line);
  shared_stdio  a victim whose fds 0-2 are one socket (one open file description) is checkpointed,
             killed and restarted with stdin /dev/null and stdout a file: its std streams are
             the restarting command's, so its last lines and PASS must reach that file;
  full_disk  checkpoints into a small tmpfs (needs root; skipped with a message if mount fails):
             one that fits, then a bigger one that does not -> one-line error, the process still
             runs (also with --kill), the previous image is byte-identical, `ghost inspect` accepts
             it and a restart from it runs the program to its PASS line.
  killed_writer  `ghost checkpoint` of a grown (512 MiB) victim SIGKILLed while it writes the
             image: nothing is left in the checkpoint directory (not even for a moment on disk
             once the writer is dead), the previous image is byte-identical and inspects, the
             victim runs on; a temporary of an earlier ghost whose writer is gone is removed by the
             next checkpoint.
  target_dies  the process dies (SIGKILL) while `ghost checkpoint` exports it, at four points
             over the export of a victim with 20000 mappings: the checkpoint must fail in one line
             within the timeout (a checkpointer must never wait forever for a process that is
             gone), leaving nothing in the checkpoint directory.
  symlink_attack  an image directory of another user, or one other users may write to (or below
             one), is refused with one line and nothing is written; a symlink planted at the image
             name or at a pid file (and its old temporary name <file>.tmp) is replaced, never
             written through.
  stale_sockets  (own runtime directory) the control socket of a SIGKILLed victim, and sockets
             named after a zombie and after a live process not under ghost: `ghost status` lists
             none of them (only the live victim), removes those of gone processes, keeps the
             other; `ghost launch` removes those of gone processes too.
  restart_killed  `ghost restart` killed (SIGKILL) while its restorer is still reading the image:
             the restored program, whose report then finds no reader, must go on running (no
             SIGPIPE) and finish with its PASS line.
  restart_ready  a checkpoint asked the moment `ghost restart --new-pid` has written its pid file
             (the restored agent rewrites lock owners over 256 MiB before it listens again) must
             succeed: `ghost restart` reports a restored process only once its agent answers.
  incremental_sources  an incremental image whose older image (its source) is missing, was
             replaced by another image, or had bytes flipped: `ghost restart` fails with one line
             and nothing runs; with the source back, the restart runs the victim to its PASS line.
  file_lock  a victim holding an exclusive flock lock: `ghost duplicate` is refused in one line
             naming the lock (the copy could not hold it beside the original), no copy made; after
             `checkpoint --kill`, a restart while another process holds the lock is refused in one
             line and nothing runs; once it is free the restart runs and the victim holds it again.
  stale_job_socket  a killed ghostrun's job socket whose number is now the pid of a process
             under ghost: `ghost checkpoint PID` checkpoints the process (it took the number for
             the dead job and refused).
Exit status: 0 pass, 1 fail, 77 all selected subtests skipped.
"""
import argparse
import ctypes
import fcntl
import hashlib
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

T0 = time.monotonic()
SUBTESTS = ["corrupt", "truncated", "foreign", "not_ghost", "refused_fds", "shared_stdio", "full_disk",
            "killed_writer", "target_dies", "symlink_attack", "stale_sockets", "restart_killed",
            "restart_ready", "stale_job_socket", "incremental_sources", "file_lock"]
MARKER = ".ghost-test-workdir"


def log(msg):
    print(f"[bad_input {time.monotonic() - T0:7.2f}s] {msg}", flush=True)


class Failure(Exception):
    pass


class Skip(Exception):
    pass


from procs import kill_all, pid_alive, ppid  # noqa: E402


def pid_state(pid):
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    return stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3].decode()


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def read_or_none(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


REC_HDR = struct.Struct("<IHHQQ")  # magic, type, version, length, hash (ghost-core/image_format.h)
REC_TRAILER = 7


def load_xxh3():
    """XXH3_64bits_withSeed from the system's libxxhash, through ctypes (None if unavailable)."""
    for name in ("libxxhash.so.0", "libxxhash.so"):
        try:
            lib = ctypes.CDLL(name)
            f = lib.XXH3_64bits_withSeed
            f.restype = ctypes.c_uint64
            f.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint64]
            return lambda data, seed=0: f(data, len(data), seed)
        except (OSError, AttributeError):
            continue
    return None


def rehash(data, xxh3):
    """Recomputes every record hash, the trailer's hash sum and the trailer's own hash, so that a
    patched image is consistent and only its content can be refused."""
    out = bytearray(data)
    off, hashes, count, payload_bytes = 0, [], 0, 0
    while off + REC_HDR.size <= len(out):
        magic, rtype, ver, length, _ = REC_HDR.unpack_from(out, off)
        start = off + REC_HDR.size
        payload = bytes(out[start:start + length])
        if rtype == REC_TRAILER:
            total = sum(hashes) % (1 << 64)
            payload = struct.pack("<QQQ", count, payload_bytes, total) + payload[24:]
            out[start:start + length] = payload
        h = xxh3(payload, rtype)
        REC_HDR.pack_into(out, off, magic, rtype, ver, length, h)
        if rtype == REC_TRAILER:
            return bytes(out)
        hashes.append(h)
        count += 1
        payload_bytes += length
        off = start + length
    raise ValueError("no trailer record found")


class Env:
    def __init__(self, a):
        self.a = a
        self.ghost = os.path.abspath(a.ghost)
        self.victim = os.path.abspath(a.victim)
        self.popens = []
        self.pids = set()
        self.mounts = []
        self.failures = []

    # -- process bookkeeping ----------------------------------------------------------------------
    def popen(self, argv, what, **kw):
        log(f"start {what}: {' '.join(argv)}")
        p = subprocess.Popen(argv, start_new_session=True, **kw)
        self.popens.append((p, what))
        return p

    def run(self, argv, what, timeout=None):
        timeout = timeout or self.a.cmd_timeout
        p = self.popen(argv, what, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise Failure(f"{what} did not finish within {timeout:.0f}s (hang)") from None
        return p.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")

    def kill_all(self):
        kill_all(self.popens, self.pids, log)
        self.popens = []

    def wait_exit(self, p, what, timeout=None):
        timeout = timeout or self.a.cmd_timeout
        try:
            return p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise Failure(f"{what} did not exit within {timeout:.0f}s (hang)") from None

    def wait_for(self, cond, what, timeout=None):
        deadline = time.monotonic() + (timeout or self.a.cmd_timeout)
        while not cond():
            if time.monotonic() > deadline:
                raise Failure(f"timed out waiting for {what}")
            time.sleep(0.02)

    def read_pid(self, path, runner, what):
        def ready():
            if runner.poll() is not None:
                return True
            t = read_or_none(path)
            return bool(t and t.strip())

        self.wait_for(ready, f"{what} to write {path}")
        t = read_or_none(path)
        if not t or not t.strip():
            raise Failure(f"{what} exited with {runner.returncode} without writing its pid file")
        pid = int(t.split()[0])
        self.pids.add(pid)
        return pid

    # -- assertions -------------------------------------------------------------------------------
    def expect_error(self, argv, what, timeout=None):
        """The command must fail with exactly one line on stderr. Returns that line."""
        start = time.monotonic()
        rc, out, err = self.run(argv, what, timeout)
        lines = [l for l in err.splitlines() if l.strip()]
        took = time.monotonic() - start
        if rc == 0:
            raise Failure(f"{what}: exited 0, expected an error (stdout: {out.strip()[:200]!r})")
        if len(lines) != 1:
            raise Failure(f"{what}: exited {rc} with {len(lines)} stderr lines, expected exactly one: {err.strip()[:600]!r}")
        log(f"  ok ({rc}, {took:.2f}s): {lines[0]}")
        return lines[0]

    # -- the victim -------------------------------------------------------------------------------
    def start_victim(self, tag, ckdir, extra=()):
        d = os.path.join(self.work, f"{tag}-data")
        os.makedirs(d, exist_ok=True)
        out = os.path.join(self.work, f"{tag}.out")
        pidf = os.path.join(self.work, f"{tag}.pid")
        with open(out, "wb") as o, open(os.path.join(self.work, f"{tag}.err"), "wb") as e:
            runner = self.popen([self.ghost, "launch", "--ckpt-dir", ckdir, "--pid-file", pidf, "--", self.victim,
                                 "--dir", d, *extra], f"ghost launch ({tag} victim)", stdin=subprocess.DEVNULL, stdout=o,
                                stderr=e)
        pid = self.read_pid(pidf, runner, "ghost launch")
        beat = os.path.join(d, "beat")
        self.wait_for(lambda: read_or_none(beat), "the victim's first heartbeat")
        return runner, pid, d, out

    def checkpoint_ok(self, pid, ckdir, kill=False):
        argv = [self.ghost, "checkpoint", "--dir", ckdir] + (["--kill"] if kill else []) + [str(pid)]
        rc, out, err = self.run(argv, "ghost checkpoint" + (" --kill" if kill else ""))
        if rc != 0:
            raise Failure(f"ghost checkpoint of the victim failed ({rc}): {err.strip()}")
        image = os.path.join(ckdir, "image.ghost")
        if not os.path.isfile(image):
            raise Failure(f"no {image} after a successful checkpoint")
        return image

    def victim_processes(self):
        """Pids whose executable is the victim binary."""
        found = set()
        for ent in os.listdir("/proc"):
            if not ent.isdigit():
                continue
            try:
                if os.readlink(f"/proc/{ent}/exe") == self.victim and pid_alive(int(ent)):
                    found.add(int(ent))
            except OSError:
                pass
        return found

    def snapshot(self, data_dir, out):
        return (read_or_none(os.path.join(data_dir, "beat")), read_or_none(out))

    def prepare_killed_victim(self, tag):
        """A victim checkpointed once and then killed: (good image, data dir, stdout path)."""
        ckdir = os.path.join(self.work, f"{tag}-ckpt")
        runner, pid, d, out = self.start_victim(tag, ckdir)
        time.sleep(0.3)
        image = self.checkpoint_ok(pid, ckdir)
        rc, o, err = self.run([self.ghost, "inspect", image], "ghost inspect (intact image)")
        if rc != 0:
            raise Failure(f"ghost inspect rejects an intact image: {err.strip()}")
        time.sleep(0.2)
        os.kill(pid, signal.SIGKILL)
        self.wait_exit(runner, "ghost launch after SIGKILL of the victim")
        self.wait_for(lambda: not pid_alive(pid), "the victim to die")
        return image, d, out

    def check_rejected(self, tag, image_bytes, data_dir, out):
        bad_dir = os.path.join(self.work, f"bad-{tag}")
        os.makedirs(bad_dir, exist_ok=True)
        bad = os.path.join(bad_dir, "image.ghost")
        with open(bad, "wb") as f:
            f.write(image_bytes)
        log(f"[{tag}] {len(image_bytes)} bytes")
        before_procs = self.victim_processes()
        before = self.snapshot(data_dir, out)
        try:
            self.expect_error([self.ghost, "inspect", bad], f"ghost inspect ({tag})")
        except Failure as e:
            self.failures.append(str(e))
            log(f"  FAILED: {e}")
        for target in (bad_dir, bad):
            pidf = os.path.join(self.work, f"bad-{tag}.pid")
            if os.path.exists(pidf):
                os.unlink(pidf)
            try:
                self.expect_error([self.ghost, "restart", "--pid-file", pidf, target], f"ghost restart ({tag}, {os.path.basename(target)})")
            except Failure as e:
                self.failures.append(str(e))
                log(f"  FAILED: {e}")
            # Nothing may have come back to life.
            t = read_or_none(pidf)
            if t and t.strip():
                rpid = int(t.split()[0])
                self.pids.add(rpid)
                if pid_alive(rpid):
                    self.failures.append(f"ghost restart ({tag}): pid file names a live process {rpid}")
                    log(f"  FAILED: restored process {rpid} is alive")
            time.sleep(0.3)
            new = self.victim_processes() - before_procs
            if new:
                self.pids.update(new)
                self.failures.append(f"ghost restart ({tag}): victim process(es) {sorted(new)} running")
                log(f"  FAILED: victim processes {sorted(new)} running after a rejected restart")
            if self.snapshot(data_dir, out) != before:
                self.failures.append(f"ghost restart ({tag}): the victim's heartbeat or stdout changed: something ran")
                log("  FAILED: the victim's heartbeat/stdout changed after a rejected restart")
            for pid in new:
                os.kill(pid, signal.SIGKILL)

    def control_restart(self, image, data_dir, out):
        """The intact image must still restore and run to PASS."""
        pidf = os.path.join(self.work, "control.pid")
        with open(os.path.join(self.work, "control.out"), "wb") as o, open(os.path.join(self.work, "control.err"), "wb") as e:
            r = self.popen([self.ghost, "restart", "--pid-file", pidf, image], "ghost restart (control, intact image)",
                           stdin=subprocess.DEVNULL, stdout=o, stderr=e)
        pid = self.read_pid(pidf, r, "ghost restart (control)")
        if not pid_alive(pid):
            raise Failure("control restart: the restored victim is not running")
        beat = os.path.join(data_dir, "beat")
        b0 = read_or_none(beat)
        self.wait_for(lambda: read_or_none(beat) != b0, "the restored victim's heartbeat", 20)
        with open(os.path.join(data_dir, "stop"), "w"):
            pass
        rc = self.wait_exit(r, "control restart (waiting for the victim to stop)")
        text = read_or_none(out) or b""
        if rc != 0 or not text.endswith(b"PASS ckpt_victim\n"):
            raise Failure(f"control restart from the intact image: exit {rc}, stdout {text[-200:]!r}")
        log("  control restart from the intact image: ok")

    # -- subtests ---------------------------------------------------------------------------------
    def t_incremental_sources(self):
        ckdir = os.path.join(self.work, "incr-ckpt")
        runner, pid, d, out = self.start_victim("incr", ckdir)
        time.sleep(0.2)
        kvs = []
        for kill in (False, True):
            argv = [self.ghost, "checkpoint", "--incremental", "--dir", ckdir] + (["--kill"] if kill else []) + [str(pid)]
            rc, o, err = self.run(argv, "ghost checkpoint --incremental")
            if rc != 0:
                raise Failure(f"ghost checkpoint --incremental of the victim failed ({rc}): {err.strip()}")
            kvs.append(dict(t.split("=", 1) for t in o.split()[1:] if "=" in t))
            time.sleep(0.2)
        if kvs[1].get("incremental") != "1":
            raise Failure(f"the second checkpoint is not incremental: {kvs[1]}")
        self.wait_exit(runner, "ghost launch after checkpoint --kill")
        image = os.path.join(ckdir, "image.ghost")
        sources = [f for f in os.listdir(ckdir) if f.startswith("image-") and f.endswith(".ghost")]
        if len(sources) != 1:
            raise Failure(f"expected one kept older image in {ckdir}, found {sources}")
        src = os.path.join(ckdir, sources[0])
        saved = src + ".saved"
        os.rename(src, saved)

        def rejected(tag):
            before_procs = self.victim_processes()
            before = self.snapshot(d, out)
            pidf = os.path.join(self.work, f"incr-{tag}.pid")
            try:
                self.expect_error([self.ghost, "restart", "--pid-file", pidf, image], f"ghost restart ({tag})")
            except Failure as e:
                self.failures.append(str(e))
                log(f"  FAILED: {e}")
            time.sleep(0.3)
            new = self.victim_processes() - before_procs
            if new or self.snapshot(d, out) != before:
                self.pids.update(new)
                self.failures.append(f"ghost restart ({tag}): something ran")
                log(f"  FAILED: something ran after a rejected restart ({tag})")

        rejected("source missing")
        shutil.copyfile(image, src)  # another image under the source's name
        rejected("source replaced")
        # A byte flipped inside a pages record that the incremental image references.
        img = open(image, "rb").read()
        target, off = None, 0
        while off + 24 <= len(img):
            magic, rtype, _, length, _ = struct.unpack_from("<IHHQQ", img, off)
            if rtype == 12:  # rec_page_ref
                _, _, _, _, target, _, rlen, _ = struct.unpack_from("<QQIIQQQQ", img, off + 24)
                break
            off += 24 + length
        if target is None:
            raise Failure("the incremental image has no page reference")
        data = bytearray(open(saved, "rb").read())
        data[target + 24 + 8 + rlen // 2] ^= 0x5A
        with open(src, "wb") as f:
            f.write(data)
        rejected("source corrupt")
        os.replace(saved, src)
        self.control_restart(image, d, out)

    def t_corrupt(self):
        image, d, out = self.prepare_killed_victim("corrupt")
        data = open(image, "rb").read()
        mid = len(data) // 2
        flipped = bytearray(data)
        for i in range(mid, mid + 16):
            flipped[i] ^= 0xFF
        self.check_rejected("bytes-flipped-middle", bytes(flipped), d, out)
        one = bytearray(data)
        one[len(data) * 3 // 4] ^= 0x10
        self.check_rejected("bit-flipped", bytes(one), d, out)
        hdr = bytearray(data)
        hdr[40] ^= 0x01  # inside the header record
        self.check_rejected("header-byte", bytes(hdr), d, out)
        self.control_restart(image, d, out)

    def t_truncated(self):
        image, d, out = self.prepare_killed_victim("truncated")
        data = open(image, "rb").read()
        self.check_rejected("half", data[: len(data) // 2], d, out)
        self.check_rejected("minus-one-byte", data[:-1], d, out)
        self.check_rejected("100-bytes", data[:100], d, out)
        self.check_rejected("empty", b"", d, out)
        self.control_restart(image, d, out)

    def t_foreign(self):
        image, d, out = self.prepare_killed_victim("foreign")
        data = open(image, "rb").read()
        release = os.uname().release.encode()
        pos = data.find(release, 0, 64 * 1024)
        if pos < 0:
            self.failures.append(f"the kernel release {release.decode()!r} is not in the image's first 64 KiB")
            log("  FAILED: kernel release not found in the header")
        else:
            other = bytearray(release)
            # Same length, different release: bump the first digit (9 -> 1).
            for i, c in enumerate(other):
                if chr(c).isdigit():
                    other[i] = ord("1") if c == ord("9") else c + 1
                    break
            patched = data[:pos] + bytes(other) + data[pos + len(release):]
            log(f"  kernel release at offset {pos}: {release.decode()} -> {other.decode()}")
            self.check_rejected("other-kernel-release", patched, d, out)
            # The same with all checksums recomputed: only the release itself can be refused.
            xxh3 = load_xxh3()
            if xxh3 is None:
                log("  note: libxxhash not loadable through ctypes; no re-hashed variant")
            else:
                if rehash(data, xxh3) != data:
                    self.failures.append("re-hashing the intact image does not reproduce it (image layout changed?)")
                    log("  FAILED: re-hash of the intact image differs; skipping the re-hashed variant")
                else:
                    self.check_rejected("other-kernel-release-rehashed", rehash(patched, xxh3), d, out)
        magic = data.find(b"GHOSTIMG", 0, 4096)
        if magic >= 0:
            bad_magic = data[:magic] + b"GHOSTIMX" + data[magic + 8:]
            self.check_rejected("bad-file-magic", bad_magic, d, out)
            xxh3 = load_xxh3()
            if xxh3 is not None and rehash(data, xxh3) == data:
                self.check_rejected("bad-file-magic-rehashed", rehash(bad_magic, xxh3), d, out)
        self.check_rejected("bad-record-magic", b"XXXX" + data[4:], d, out)
        self.check_rejected("elf-executable", open("/bin/true", "rb").read(), d, out)
        self.check_rejected("random-bytes", random.Random(7).randbytes(1 << 20), d, out)
        self.check_rejected("text-file", b"this is not a ghost image\n" * 100, d, out)
        self.control_restart(image, d, out)

    def t_not_ghost(self):
        plain = self.popen(["sleep", "1000"], "plain sleep (not under ghost)", stdin=subprocess.DEVNULL)
        self.pids.add(plain.pid)
        time.sleep(0.2)
        ck = os.path.join(self.work, "notghost-ckpt")
        checks = [
            ([self.ghost, "checkpoint", "--dir", ck, str(plain.pid)], "checkpoint of a process not under ghost"),
            ([self.ghost, "checkpoint", "--dir", ck, "--kill", str(plain.pid)], "checkpoint --kill of a process not under ghost"),
            ([self.ghost, "duplicate", str(plain.pid)], "duplicate of a process not under ghost"),
        ]
        # A pid that does not exist: one of ours, reaped.
        gone = subprocess.Popen(["true"])
        gone.wait()
        missing_pid = gone.pid
        if pid_alive(missing_pid):
            missing_pid = int(open("/proc/sys/kernel/pid_max").read()) - 1
        checks += [
            ([self.ghost, "checkpoint", "--dir", ck, str(missing_pid)], f"checkpoint of non-existent pid {missing_pid}"),
            ([self.ghost, "checkpoint", "--dir", ck, "--kill", str(missing_pid)], f"checkpoint --kill of non-existent pid {missing_pid}"),
            ([self.ghost, "restart", os.path.join(self.work, "no-such-dir")], "restart of a missing directory"),
            ([self.ghost, "restart", os.path.join(self.work)], "restart of a directory without image"),
            ([self.ghost, "inspect", os.path.join(self.work, "no-such-image.ghost")], "inspect of a missing image"),
            ([self.ghost, "launch", "--", os.path.join(self.work, "no-such-program")], "launch of a missing program"),
        ]
        for argv, what in checks:
            try:
                self.expect_error(argv, what)
            except Failure as e:
                self.failures.append(str(e))
                log(f"  FAILED: {e}")
            if not pid_alive(plain.pid):
                raise Failure(f"{what}: the plain process {plain.pid} was killed")
            if pid_state(plain.pid) in ("T", "t"):
                raise Failure(f"{what}: the plain process {plain.pid} was left stopped/traced")
        if os.path.exists(os.path.join(ck, "image.ghost")):
            self.failures.append("an image was written for a process not under ghost")
        os.kill(plain.pid, signal.SIGKILL)
        plain.wait(timeout=10)

        # A process under ghost that belongs to somebody else (here: root's, asked by nobody), and
        # a wrong flag: one line, non-zero, the process untouched.
        ours_ck = os.path.join(self.work, "notours-ckpt")
        runner, vpid, _, _ = self.start_victim("notours", ours_ck)
        nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        for argv, what in [
            (nobody + [self.ghost, "checkpoint", "--dir", "/tmp", str(vpid)], "checkpoint of another user's process"),
            (nobody + [self.ghost, "duplicate", str(vpid)], "duplicate of another user's process"),
            ([self.ghost, "checkpoint", "--no-such-flag", str(vpid)], "checkpoint with a wrong flag"),
            ([self.ghost, "checkpoint", "not-a-pid"], "checkpoint of a pid that is not a number"),
            ([self.ghost, "duplicate", "--precopy", str(vpid)], "duplicate --precopy without --via-image"),
            ([self.ghost, "duplicate", "--via-image", "--precopy", "--to", "ucx://127.0.0.1:1", str(vpid)],
             "duplicate --precopy to another host"),
        ]:
            try:
                self.expect_error(argv, what)
            except Failure as e:
                self.failures.append(str(e))
                log(f"  FAILED: {e}")
            if not pid_alive(vpid) or pid_state(vpid) in ("T", "t"):
                raise Failure(f"{what}: the victim {vpid} was killed or left stopped")
        self.checkpoint_ok(vpid, ours_ck, kill=True)
        self.wait_exit(runner, "ghost launch (notours victim)")

    def t_refused_fds(self):
        # Each kind, and a word its one-line refusal must contain (the thing it names).
        names = {"aio": "AIO context", "sysvshm": "SysV shared memory segment key 0x00000000",
                 "fifo_data": "descriptor", "memfd_big": "descriptor", "mqueue": "message queue",
                 "seccomp_filter": "seccomp filter", "seccomp_strict": "seccomp strict mode",
                 "restorer_zone": "where ghost's restorer runs"}
        for kind in ["netns", "procfile", "epoll_stale", "inotify_queued", "tcp_pending", "socketpair", "ptmx", "pts", "aio", "sysvshm", "fifo_data",
                     "memfd_big", "mqueue", "seccomp_filter", "seccomp_strict", "restorer_zone"]:
            ckdir = os.path.join(self.work, f"{kind}-ckpt")
            runner, pid, d, out = self.start_victim(kind, ckdir, ["--hold", kind])
            beat = os.path.join(d, "beat")
            for argv, what in [
                ([self.ghost, "checkpoint", "--dir", ckdir, "--kill", str(pid)], f"checkpoint --kill ({kind})"),
                # The image path's refusals (a fork duplicate carries some of these kinds as they
                # are, and falls back to the image path for the others).
                ([self.ghost, "duplicate", "--via-image", str(pid)], f"duplicate ({kind})"),
            ] + ([([self.ghost, "duplicate", str(pid)], "duplicate, the fork path first (mqueue)")]
                 if kind == "mqueue" else []):
                before = self.victim_processes()
                try:
                    line = self.expect_error(argv, what)
                    if names.get(kind, "descriptor") not in line:
                        raise Failure(f"{what}: the error does not name the {names.get(kind, 'descriptor')}: "
                                      f"{line!r}")
                except Failure as e:
                    self.failures.append(str(e))
                    log(f"  FAILED: {e}")
                if not pid_alive(pid) or pid_state(pid) in ("T", "t"):
                    raise Failure(f"{what}: the victim {pid} was killed or left stopped")
                new = self.victim_processes() - before
                if new:
                    self.pids.update(new)
                    raise Failure(f"{what}: victim process(es) {sorted(new)} appeared (a copy was made)")
                if os.path.exists(os.path.join(ckdir, "image.ghost")):
                    raise Failure(f"{what}: an image was written")
                b0 = read_or_none(beat)
                self.wait_for(lambda: read_or_none(beat) != b0, f"the victim's heartbeat after {what}")
            with open(os.path.join(d, "stop"), "w"):
                pass
            rc = self.wait_exit(runner, f"the {kind} victim to stop")
            text = read_or_none(out) or b""
            if rc != 0 or not text.endswith(b"PASS ckpt_victim\n"):
                raise Failure(f"the {kind} victim did not finish well after the refusals: exit {rc}, "
                              f"stdout {text[-200:]!r}")

    def t_file_lock(self):
        ckdir = os.path.join(self.work, "flock-ckpt")
        runner, pid, d, out = self.start_victim("flock", ckdir, ["--hold", "flock"])
        lock_path = os.path.join(d, "lock")
        # A copy cannot hold the original's exclusive lock beside it: refused, no copy made.
        before = self.victim_processes()
        line = self.expect_error([self.ghost, "duplicate", str(pid)], "duplicate of a holder of an exclusive flock")
        if "file lock" not in line:
            raise Failure(f"the duplicate's refusal does not name the file lock: {line!r}")
        if self.victim_processes() - before or not pid_alive(pid):
            raise Failure("a refused duplicate made a copy, or the original is gone")
        # Carried by a checkpoint --kill and a restart, which is refused while another process
        # holds the lock (nothing runs), and runs once it is free: the victim holds it again.
        image = self.checkpoint_ok(pid, ckdir, kill=True)
        self.wait_exit(runner, "the killed victim's ghost launch")
        pidf = os.path.join(self.work, "flock-restart.pid")
        with open(lock_path, "r+") as f:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            line = self.expect_error([self.ghost, "restart", "--pid-file", pidf, image],
                                     "restart while another process holds the victim's lock")
            if "held by another process" not in line:
                raise Failure(f"the refused restart does not say the lock is held: {line!r}")
            time.sleep(0.3)
            if self.victim_processes() - before:
                raise Failure("a refused restart left a victim process running")
        os.unlink(pidf) if os.path.exists(pidf) else None
        with open(os.path.join(self.work, "flock-restart.err"), "wb") as e:
            r = self.popen([self.ghost, "restart", "--pid-file", pidf, image], "ghost restart (lock free)",
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=e)
        self.read_pid(pidf, r, "ghost restart (lock free)")
        beat = os.path.join(d, "beat")
        b0 = read_or_none(beat)
        self.wait_for(lambda: read_or_none(beat) != b0, "the restored victim's heartbeat", 20)
        with open(lock_path, "r+") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                raise Failure("the restored victim does not hold its flock lock")
            except BlockingIOError:
                log("  the restored victim holds its lock again")
        with open(os.path.join(d, "stop"), "w"):
            pass
        rc = self.wait_exit(r, "the restored victim to stop")
        text = read_or_none(out) or b""
        if rc != 0 or not text.endswith(b"PASS ckpt_victim\n"):
            raise Failure(f"the restored flock victim did not finish well: exit {rc}, stdout {text[-200:]!r}")

    def t_shared_stdio(self):
        import socket
        ours, theirs = socket.socketpair()
        ckdir = os.path.join(self.work, "ckpt")
        d = os.path.join(self.work, "data")
        os.makedirs(d)
        pidf = os.path.join(self.work, "victim.pid")
        runner = self.popen([self.ghost, "launch", "--ckpt-dir", ckdir, "--pid-file", pidf, "--", self.victim, "--dir", d],
                            "ghost launch (victim on one socket as fds 0-2)", stdin=theirs, stdout=theirs, stderr=theirs)
        theirs.close()
        pid = self.read_pid(pidf, runner, "ghost launch")
        beat = os.path.join(d, "beat")
        self.wait_for(lambda: read_or_none(beat), "the victim's first heartbeat")
        self.checkpoint_ok(pid, ckdir, kill=True)
        self.wait_exit(runner, "ghost launch after checkpoint --kill")
        ours.close()
        out = os.path.join(self.work, "restart.out")
        with open(out, "wb") as o, open(os.path.join(self.work, "restart.err"), "wb") as e:
            r = self.popen([self.ghost, "restart", "--pid-file", pidf + "2", ckdir], "ghost restart",
                           stdin=subprocess.DEVNULL, stdout=o, stderr=e)
        self.read_pid(pidf + "2", r, "ghost restart")
        b0 = read_or_none(beat)
        self.wait_for(lambda: read_or_none(beat) != b0, "the restored victim's heartbeat", 20)
        with open(os.path.join(d, "stop"), "w"):
            pass
        rc = self.wait_exit(r, "ghost restart (waiting for the victim to stop)")
        text = read_or_none(out) or b""
        if rc != 0 or not text.endswith(b"PASS ckpt_victim\n"):
            raise Failure(f"restart with stdout to a file: exit {rc}, its stdout {text[-200:]!r} (the victim's "
                          f"stdout is not the restarting command's)")

    def t_full_disk(self):
        mnt = os.path.join(self.work, "tmpfs")
        os.makedirs(mnt, exist_ok=True)
        # Size the tmpfs from a first image in a normal directory, so that it fits.
        probe_dir = os.path.join(self.work, "fulldisk-probe")
        runner, pid, d, out = self.start_victim("fulldisk", mnt)
        time.sleep(0.3)
        probe = self.checkpoint_ok(pid, probe_dir)
        small = os.path.getsize(probe)
        size_mib = max(8, (small * 3 // 2 + (1 << 20)) >> 20)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mib}m,mode=0700", "tmpfs", mnt],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
        if r.returncode != 0:
            raise Skip(f"cannot mount a tmpfs ({r.stdout.decode().strip()}); full-disk test needs root")
        self.mounts.append(mnt)
        log(f"tmpfs of {size_mib} MiB on {mnt} (first image: {small} bytes)")

        image = self.checkpoint_ok(pid, mnt)
        good = sha256(image)
        log(f"small checkpoint into the tmpfs ok: {os.path.getsize(image)} bytes")
        with open(os.path.join(d, "grow.tmp"), "w") as f:
            f.write(f"{size_mib * 2}\n")
        os.rename(os.path.join(d, "grow.tmp"), os.path.join(d, "grow"))
        self.wait_for(lambda: os.path.exists(os.path.join(d, "grown")), "the victim to grow")

        for kill in (False, True):
            what = "checkpoint" + (" --kill" if kill else "") + " into a full tmpfs"
            try:
                self.expect_error([self.ghost, "checkpoint", "--dir", mnt] + (["--kill"] if kill else []) + [str(pid)], what)
            except Failure as e:
                self.failures.append(str(e))
                log(f"  FAILED: {e}")
            if not pid_alive(pid):
                raise Failure(f"{what}: the process is gone after a failed checkpoint")
            if not os.path.exists(image) or sha256(image) != good:
                self.failures.append(f"{what}: the previous image was changed or removed")
                log("  FAILED: previous image changed")
            left = sorted(set(os.listdir(mnt)) - {"image.ghost"})
            if left:
                log(f"  WARNING: {what} left files behind in the checkpoint directory: {left}")
            rc, o, err = self.run([self.ghost, "inspect", mnt], "ghost inspect (previous image)")
            if rc != 0:
                self.failures.append(f"{what}: ghost inspect rejects the previous image: {err.strip()}")
                log(f"  FAILED: inspect of the previous image: {err.strip()}")

        os.kill(pid, signal.SIGKILL)
        self.wait_exit(runner, "ghost launch after SIGKILL")
        self.wait_for(lambda: not pid_alive(pid), "the victim to die")
        os.unlink(os.path.join(d, "grown"))
        self.control_restart(mnt, d, out)

    def grow_victim(self, d, mib):
        with open(os.path.join(d, "grow.tmp"), "w") as f:
            f.write(f"{mib}\n")
        os.rename(os.path.join(d, "grow.tmp"), os.path.join(d, "grow"))
        self.wait_for(lambda: os.path.exists(os.path.join(d, "grown")), "the victim to grow")

    def expect_beats(self, d, what):
        beat = os.path.join(d, "beat")
        b0 = read_or_none(beat)
        self.wait_for(lambda: read_or_none(beat) != b0, f"the victim's heartbeat ({what})")

    def t_killed_writer(self):
        ckdir = os.path.join(self.work, "ckpt")
        runner, pid, d, out = self.start_victim("killed", ckdir)
        image = self.checkpoint_ok(pid, ckdir)
        good = sha256(image)
        self.grow_victim(d, 512)
        # SIGKILLed once it has written 4 MiB of the image (found among its descriptors by the
        # file it writes into: the checkpoint directory's).
        cp = self.popen([self.ghost, "checkpoint", "--dir", ckdir, str(pid)], "ghost checkpoint (to be killed)",
                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def writing():
            if cp.poll() is not None:
                return True
            try:
                for fd in os.listdir(f"/proc/{cp.pid}/fd"):
                    try:
                        target = os.readlink(f"/proc/{cp.pid}/fd/{fd}")
                        size = os.stat(f"/proc/{cp.pid}/fd/{fd}").st_size
                        if target.startswith(ckdir + "/") and size >= 4 << 20:
                            log(f"the checkpoint writes {target}: {size >> 20} MiB so far")
                            return True
                    except OSError:
                        pass
            except OSError:
                pass
            return False

        deadline = time.monotonic() + self.a.cmd_timeout
        while not writing():  # polled closely: the image takes a few hundred ms to write
            if time.monotonic() > deadline:
                raise Failure("timed out waiting for the checkpoint to write its image")
            time.sleep(0.001)
        if cp.poll() is not None:
            raise Failure(f"the checkpoint finished (exit {cp.returncode}) before it could be killed mid-write")
        os.kill(cp.pid, signal.SIGKILL)
        self.wait_exit(cp, "the killed checkpoint")
        log(f"killed ghost checkpoint {cp.pid} while it wrote the image")
        left = sorted(set(os.listdir(ckdir)) - {"image.ghost"})
        if left:
            self.failures.append(f"the killed checkpoint left files in {ckdir}: {left}")
            log(f"  FAILED: debris {left}")
        if sha256(image) != good:
            self.failures.append("the previous image changed after a killed checkpoint")
        rc, o, err = self.run([self.ghost, "inspect", image], "ghost inspect (previous image)")
        if rc != 0:
            self.failures.append(f"ghost inspect rejects the previous image after a killed checkpoint: {err.strip()}")
        if not pid_alive(pid) or pid_state(pid) in ("T", "t"):
            raise Failure("the victim is gone or stopped after its checkpointer was killed")
        self.expect_beats(d, "after the killed checkpoint")

        # The debris of an earlier ghost (".image.ghost.tmp-<pid>" of a writer that is gone).
        gone = subprocess.Popen(["true"])
        gone.wait()
        debris = os.path.join(ckdir, f".image.ghost.tmp-{gone.pid}")
        with open(debris, "wb") as f:
            f.write(b"\0" * (1 << 20))
        self.checkpoint_ok(pid, ckdir)
        left = sorted(set(os.listdir(ckdir)) - {"image.ghost"})
        if left:
            self.failures.append(f"a checkpoint left stale temporaries of gone writers in place: {left}")
            log(f"  FAILED: stale temporaries kept: {left}")
        os.kill(pid, signal.SIGKILL)
        self.wait_exit(runner, "ghost launch after SIGKILL of the victim")

    def t_target_dies(self):
        ckdir = os.path.join(self.work, "ckpt-dies")
        runner, pid, d, out = self.start_victim("dies", ckdir, ["--maps", "20000"])
        start = time.monotonic()
        self.checkpoint_ok(pid, ckdir)
        took = time.monotonic() - start
        log(f"a whole checkpoint of the victim with 20000 mappings takes {took:.2f}s")
        os.kill(pid, signal.SIGKILL)
        self.wait_exit(runner, "ghost launch after SIGKILL of the victim")
        shutil.rmtree(ckdir)
        for frac in (0.2, 0.4, 0.6, 0.8):
            runner, pid, d, out = self.start_victim(f"dies{int(frac * 100)}", ckdir, ["--maps", "20000"])
            cp = self.popen([self.ghost, "checkpoint", "--dir", ckdir, str(pid)], "ghost checkpoint (its target killed)",
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            time.sleep(took * frac)
            os.kill(pid, signal.SIGKILL)
            try:
                o, err = cp.communicate(timeout=self.a.cmd_timeout)
            except subprocess.TimeoutExpired:
                cp.kill()
                cp.communicate()
                raise Failure(f"ghost checkpoint did not exit within {self.a.cmd_timeout}s after its target "
                              f"was killed {took * frac:.2f}s into the export")
            lines = [l for l in err.decode(errors="replace").splitlines() if l.strip()]
            if cp.returncode == 0:
                log(f"  the checkpoint finished before the kill ({took * frac:.2f}s)")
            elif len(lines) != 1:
                self.failures.append(f"target killed {took * frac:.2f}s into its checkpoint: exit {cp.returncode} "
                                     f"with {len(lines)} stderr lines, expected one: {lines[:4]}")
            else:
                log(f"  ok ({cp.returncode}) killed at {took * frac:.2f}s: {lines[0]}")
            self.wait_exit(runner, "ghost launch after SIGKILL of the victim")
            left = sorted(n for n in os.listdir(ckdir) if n != "image.ghost") if os.path.isdir(ckdir) else []
            if left:
                self.failures.append(f"a checkpoint whose target died left files in {ckdir}: {left}")
            shutil.rmtree(ckdir, ignore_errors=True)

    def t_symlink_attack(self):
        target = os.path.join(self.work, "precious")
        with open(target, "w") as f:
            f.write("root's file\n")

        def untouched(what):
            if read_or_none(target) != b"root's file\n":
                raise Failure(f"{what}: the file behind a planted symlink was overwritten")

        runner, pid, d, out = self.start_victim("symlink", os.path.join(self.work, "ckpt"))
        # Directories other users can change: refused before anything is written.
        theirs = os.path.join(self.work, "theirs")
        os.makedirs(theirs)
        os.chown(theirs, 65534, 65534)
        os.symlink(target, os.path.join(theirs, "image.ghost"))
        last = int(open("/proc/sys/kernel/ns_last_pid").read())
        for p in range(last + 1, last + 200):  # the temporary names earlier versions would use
            os.symlink(target, os.path.join(theirs, f".image.ghost.tmp-{p}"))
        open_dir = os.path.join(self.work, "open")
        os.makedirs(open_dir)
        os.chmod(open_dir, 0o777)
        for ck, what in [(theirs, "a directory of another user"), (open_dir, "a world-writable directory"),
                         (os.path.join(open_dir, "sub"), "a directory below a world-writable one")]:
            try:
                line = self.expect_error([self.ghost, "checkpoint", "--dir", ck, str(pid)], f"checkpoint into {what}")
                if "refusing" not in line:
                    self.failures.append(f"checkpoint into {what}: not refused for what it is: {line}")
            except Failure as e:
                self.failures.append(str(e))
                log(f"  FAILED: {e}")
            untouched(f"checkpoint into {what}")
            if not pid_alive(pid) or pid_state(pid) in ("T", "t"):
                raise Failure(f"checkpoint into {what}: the victim was killed or left stopped")
        if os.path.exists(os.path.join(open_dir, "sub")):
            self.failures.append("a directory was created below a refused one")
        # Our own directory with a symlink planted at the image's name: replaced, not followed.
        mine = os.path.join(self.work, "mine")
        os.makedirs(mine, mode=0o700)
        os.symlink(target, os.path.join(mine, "image.ghost"))
        image = self.checkpoint_ok(pid, mine)
        untouched("checkpoint over a planted symlink")
        if os.path.islink(image):
            self.failures.append("the image name is still a symlink after a checkpoint")
        # A pid file and its old temporary name planted as symlinks.
        pidf = os.path.join(self.work, "planted.pid")
        os.symlink(target, pidf)
        os.symlink(target, pidf + ".tmp")
        r2 = self.popen([self.ghost, "launch", "--pid-file", pidf, "--", "sleep", "1000"], "ghost launch (planted pid file)",
                        stdin=subprocess.DEVNULL)
        self.wait_for(lambda: not os.path.islink(pidf) or read_or_none(target) != b"root's file\n" or r2.poll() is not None,
                      "the planted pid file to be written")
        untouched("ghost launch --pid-file over a planted symlink")
        text = read_or_none(pidf)
        if not text or not text.strip().isdigit():
            self.failures.append(f"the pid file holds {text!r}, not a pid")
        else:
            self.pids.add(int(text))
        os.kill(pid, signal.SIGKILL)
        self.wait_exit(runner, "ghost launch after SIGKILL of the victim")

    def t_stale_sockets(self):
        rt = tempfile.mkdtemp(prefix="ghost-rt-")  # short: socket paths must fit in 108 bytes
        try:
            self.stale_sockets(rt)
        finally:
            shutil.rmtree(rt, ignore_errors=True)

    def stale_sockets(self, rt):
        env = dict(os.environ, GHOST_RUNTIME_DIR=rt)

        def status():
            p = self.popen([self.ghost, "status"], "ghost status", env=env, stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            try:
                o, e = p.communicate(timeout=self.a.cmd_timeout)
            except subprocess.TimeoutExpired:
                raise Failure("ghost status did not finish (hang)") from None
            if p.returncode != 0:
                raise Failure(f"ghost status failed ({p.returncode}): {e.decode().strip()}")
            listed = {int(l.split()[1]) for l in o.decode().splitlines() if l.startswith("pid ")}
            log(f"  ghost status lists {sorted(listed)}")
            return listed

        def plant_socket(pid):
            path = os.path.join(rt, f"{pid}.sock")
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.bind(path)
            s.close()  # the file stays, nobody listens: what a killed process leaves
            return path

        def launch(tag):
            d = os.path.join(self.work, f"{tag}-data")
            os.makedirs(d)
            pidf = os.path.join(self.work, f"{tag}.pid")
            r = self.popen([self.ghost, "launch", "--ckpt-dir", os.path.join(self.work, f"{tag}-ckpt"), "--pid-file", pidf,
                            "--", self.victim, "--dir", d], f"ghost launch ({tag})", env=env, stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL)
            vpid = self.read_pid(pidf, r, "ghost launch")
            self.wait_for(lambda: os.path.exists(os.path.join(rt, f"{vpid}.sock")), "the victim's control socket")
            return r, vpid

        r1, killed = launch("killed")
        r2, live = launch("live")
        if status() != {killed, live}:
            raise Failure("ghost status does not list exactly the two victims")
        os.kill(killed, signal.SIGKILL)
        self.wait_exit(r1, "ghost launch after SIGKILL of its victim")
        zombie = subprocess.Popen(["true"])  # not waited for: a zombie once it exits
        self.wait_for(lambda: not pid_alive(zombie.pid), "the zombie")
        plain = self.popen(["sleep", "1000"], "plain sleep (not under ghost)", stdin=subprocess.DEVNULL)
        self.pids.add(plain.pid)
        killed_sock = os.path.join(rt, f"{killed}.sock")
        zombie_sock = plant_socket(zombie.pid)
        plain_sock = plant_socket(plain.pid)
        listed = status()
        if listed != {live}:
            self.failures.append(f"ghost status lists {sorted(listed)}; only the live victim {live} runs under ghost "
                                 f"(killed {killed}, zombie {zombie.pid}, plain {plain.pid})")
        for path, what in [(killed_sock, "the killed victim"), (zombie_sock, "a zombie")]:
            if os.path.exists(path):
                self.failures.append(f"ghost status kept the stale socket of {what}: {path}")
        if not os.path.exists(plain_sock):
            self.failures.append("ghost status removed the socket named after a live process")
        if not os.path.exists(os.path.join(rt, f"{live}.sock")):
            raise Failure("ghost status removed the socket of the live victim")
        zombie.wait()
        # `ghost launch` sweeps too.
        gone = subprocess.Popen(["true"])
        gone.wait()
        gone_sock = plant_socket(gone.pid)
        r3, third = launch("third")
        if os.path.exists(gone_sock):
            self.failures.append("ghost launch kept the stale socket of a gone process")
        # A killed ghostrun leaves job-<its pid>.sock; a rank that later gets that pid still
        # checkpoints itself (`ghost checkpoint --image IMAGE PID`: a process, never a job).
        plant_socket(f"job-{live}")
        image = os.path.join(self.work, "reused-pid.ghost")
        p = self.popen([self.ghost, "checkpoint", "--image", image, str(live)], "ghost checkpoint --image", env=env,
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            o, e = p.communicate(timeout=self.a.cmd_timeout)
        except subprocess.TimeoutExpired:
            raise Failure("ghost checkpoint --image did not finish (hang)") from None
        if p.returncode != 0 or not os.path.isfile(image):
            self.failures.append(f"ghost checkpoint --image of pid {live} with a stale job-{live}.sock failed "
                                 f"({p.returncode}): {e.decode().strip()}")
        for p in (live, third):
            os.kill(p, signal.SIGKILL)
        self.wait_exit(r2, "ghost launch (live)")
        self.wait_exit(r3, "ghost launch (third)")

    def t_restart_killed(self):
        ckdir = os.path.join(self.work, "killed-ckpt")
        runner, pid, d, out = self.start_victim("killed", ckdir)
        # 64 MiB more memory: the restore then takes long enough to be caught in the middle.
        with open(os.path.join(d, "grow.tmp"), "w") as f:
            f.write("64\n")
        os.rename(os.path.join(d, "grow.tmp"), os.path.join(d, "grow"))
        self.wait_for(lambda: os.path.exists(os.path.join(d, "grown")), "the victim to grow")
        self.checkpoint_ok(pid, ckdir, kill=True)
        self.wait_exit(runner, "ghost launch after checkpoint --kill")
        self.wait_for(lambda: not pid_alive(pid), "the victim to die")

        def pipes(p):
            found = set()
            try:
                for fd in os.listdir(f"/proc/{p}/fd"):
                    try:
                        link = os.readlink(f"/proc/{p}/fd/{fd}")
                    except OSError:
                        continue
                    if link.startswith("pipe:"):
                        found.add(link)
            except OSError:
                pass
            return found

        # The restorer is stopped (SIGSTOP) as soon as it appears; if it still holds its end of
        # the status pipe and `ghost restart` has not heard from it, `ghost restart` is killed
        # and the restorer let go: its "OK" then finds no reader. Otherwise (too late) again.
        restored = None
        for attempt in range(1, 6):
            pidf = os.path.join(self.work, f"killed-{attempt}.pid")
            err = os.path.join(self.work, f"killed-{attempt}.err")
            with open(os.path.join(self.work, f"killed-{attempt}.out"), "wb") as o, open(err, "wb") as e:
                r = self.popen([self.ghost, "restart", "--pid-file", pidf, ckdir], f"ghost restart (attempt {attempt})",
                               stdin=subprocess.DEVNULL, stdout=o, stderr=e)
            child, deadline = None, time.monotonic() + self.a.cmd_timeout
            while child is None:
                if ppid(pid) == r.pid:  # the image's pid, when it is free
                    child = pid
                elif r.poll() is not None or time.monotonic() > deadline:
                    break
            if child is None:
                raise Failure(f"ghost restart (attempt {attempt}) started no restorer with the image's pid {pid} "
                              f"(exit {r.poll()}): {(read_or_none(err) or b'').decode().strip()}")
            self.pids.add(child)
            os.kill(child, signal.SIGSTOP)
            self.wait_for(lambda: pid_state(child) in ("T", "t"), "the restorer to stop")
            time.sleep(0.05)  # had the report been written, ghost restart would show it by now
            early = pipes(child) & pipes(r.pid) and not read_or_none(pidf) and r.poll() is None
            if early:
                os.kill(r.pid, signal.SIGKILL)
                self.wait_exit(r, "ghost restart after SIGKILL")
                os.kill(child, signal.SIGCONT)
                restored = child
                log(f"  attempt {attempt}: ghost restart killed while restorer {child} was still restoring")
                break
            log(f"  attempt {attempt}: the restorer had already reported; again")
            os.kill(child, signal.SIGCONT)
            os.kill(child, signal.SIGKILL)
            self.wait_exit(r, "ghost restart after its program was killed")
            self.wait_for(lambda: not pid_alive(child), "the restored victim to die")
        if restored is None:
            raise Failure("could not stop the restorer before it reported, in 5 attempts")
        beat = os.path.join(d, "beat")
        b0 = read_or_none(beat)
        self.wait_for(lambda: read_or_none(beat) != b0 or not pid_alive(restored),
                      "the restored victim's heartbeat", 20)
        time.sleep(0.5)
        if not pid_alive(restored):
            raise Failure(f"the restored victim {restored} died after ghost restart was killed (SIGPIPE?)")
        with open(os.path.join(d, "stop"), "w"):
            pass
        self.wait_for(lambda: not pid_alive(restored), "the restored victim to stop")
        text = read_or_none(out) or b""
        if not text.endswith(b"PASS ckpt_victim\n"):
            raise Failure(f"the restored victim did not finish with its PASS line: {text[-200:]!r}")
        log("  the restored victim went on and finished after ghost restart was killed")

    def t_restart_ready(self):
        ckdir = os.path.join(self.work, "ready-ckpt")
        runner, pid, d, out = self.start_victim("ready", ckdir)
        with open(os.path.join(d, "grow.tmp"), "w") as f:
            f.write("256\n")
        os.rename(os.path.join(d, "grow.tmp"), os.path.join(d, "grow"))
        self.wait_for(lambda: os.path.exists(os.path.join(d, "grown")), "the victim to grow")
        for attempt in range(1, 4):
            self.checkpoint_ok(pid, ckdir, kill=True)
            self.wait_exit(runner, "ghost launch / restart after checkpoint --kill")
            self.wait_for(lambda: not pid_alive(pid), "the victim to die")
            pidf = os.path.join(self.work, f"ready-{attempt}.pid")
            with open(os.path.join(self.work, f"ready-{attempt}.err"), "wb") as e:
                runner = self.popen([self.ghost, "restart", "--new-pid", "--pid-file", pidf, ckdir],
                                    f"ghost restart --new-pid (attempt {attempt})", stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=e)
            pid = self.read_pid(pidf, runner, "ghost restart")
            rc, _, err = self.run([self.ghost, "checkpoint", "--dir", ckdir, str(pid)],
                                  "ghost checkpoint right after the restart")
            if rc != 0:
                raise Failure(f"a checkpoint right after ghost restart reported pid {pid} failed: {err.strip()}")
            log(f"  attempt {attempt}: checkpoint of the just restored pid {pid} ok")
        with open(os.path.join(d, "stop"), "w"):
            pass
        self.wait_exit(runner, "ghost restart of the stopped victim")

    def t_stale_job_socket(self):
        rt = tempfile.mkdtemp(prefix="ghost-rt-")  # short: socket paths must fit in 108 bytes
        old = os.environ.get("GHOST_RUNTIME_DIR")
        os.environ["GHOST_RUNTIME_DIR"] = rt
        try:
            ckdir = os.path.join(self.work, "stalejob-ckpt")
            runner, pid, d, out = self.start_victim("stalejob", ckdir)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.bind(os.path.join(rt, f"job-{pid}.sock"))
            s.close()  # what a killed ghostrun leaves; its number is now the victim's pid
            self.checkpoint_ok(pid, ckdir)
            log(f"  pid {pid} checkpointed despite a stale job-{pid}.sock")
            with open(os.path.join(d, "stop"), "w"):
                pass
            self.wait_exit(runner, "ghost launch of the stopped victim")
        finally:
            if old is None:
                os.environ.pop("GHOST_RUNTIME_DIR", None)
            else:
                os.environ["GHOST_RUNTIME_DIR"] = old
            shutil.rmtree(rt, ignore_errors=True)

    def main(self):
        selected = self.a.only.split(",") if self.a.only else SUBTESTS
        for s in selected:
            if s not in SUBTESTS:
                print(f"unknown subtest {s}; known: {', '.join(SUBTESTS)}", file=sys.stderr)
                return 2
        if not os.access(self.ghost, os.X_OK):
            print(f"FAIL: ghost binary {self.ghost} is not executable", flush=True)
            return 1
        results = {}
        for s in selected:
            self.work = os.path.join(self.a.workdir, s)
            shutil.rmtree(self.work, ignore_errors=True)
            os.makedirs(self.work)
            self.failures = []
            log(f"=== {s}")
            try:
                getattr(self, f"t_{s}")()
                results[s] = "FAIL" if self.failures else "PASS"
            except Skip as e:
                log(f"SKIP {s}: {e}")
                results[s] = "SKIP"
            except Failure as e:
                self.failures.append(str(e))
                log(f"FAILURE: {e}")
                results[s] = "FAIL"
            finally:
                self.kill_all()
                for m in self.mounts:
                    subprocess.run(["umount", m], timeout=30)
                self.mounts = []
            for f in self.failures:
                log(f"  {s}: {f}")
            if results[s] == "PASS" and not self.a.keep:
                shutil.rmtree(self.work, ignore_errors=True)
        for s, r in results.items():
            print(f"{r} bad_input.{s}", flush=True)
        if any(r == "FAIL" for r in results.values()):
            print(f"(work dir kept: {self.a.workdir})", flush=True)
            return 1
        if all(r == "SKIP" for r in results.values()):
            return 77
        return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ghost", required=True)
    ap.add_argument("--victim", required=True, help="path of the ckpt_victim test program")
    ap.add_argument("--only", help="comma-separated subtests: " + ",".join(SUBTESTS))
    ap.add_argument("--workdir", help="work directory (default: a new temp directory)")
    ap.add_argument("--cmd-timeout", type=float, default=60)
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    a.workdir = os.path.abspath(a.workdir or tempfile.mkdtemp(prefix="ghost-bad-input-"))
    os.makedirs(a.workdir, exist_ok=True)
    return Env(a).main()


if __name__ == "__main__":
    sys.exit(main())
