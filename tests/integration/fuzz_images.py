#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Fuzzing of ghost images: a few hundred damaged copies of two real images, each refused.

Two images of one ckpt_victim (checkpointed twice, a moment apart) are cut into records and
damaged in seeded ways: bits flipped in the header, the credentials, record headers, payloads and
the trailer; truncations at record boundaries and inside records; splices of the two images;
records swapped, repeated, dropped; length fields changed. Some swapped and repeated variants are
re-hashed (every record hash and the trailer recomputed, with the system's libxxhash), so that
only the structure of the stream can refuse them.

For every damaged image `ghost inspect` must exit non-zero with exactly one line "ghost: ..." on
stderr, without a crash signal and within a timeout; for a sample (every re-hashed one and a share
of the others) `ghost restart` must do the same and no process of the image may be running
afterwards (none whose command line names the victim's directory, no ghost-restart of this build).
With --tree the victim runs as the child of a shell (`sh -c 'VICTIM & wait'`): the images are
process trees (the shell's stream, then the victim's, in one file) and the damage reaches the
tree's records, its second stream and the place where one stream ends and the next begins.
Exit status: 0 pass, 1 fail.
"""
import argparse
import os
import random
import re
import shutil
import signal
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bad_input import REC_HDR, load_xxh3, rehash  # noqa: E402
from procs import kill_all, pid_alive, ppid  # noqa: E402

T0 = time.monotonic()
TYPES = {1: "header", 2: "process", 3: "region", 4: "pages", 5: "file", 6: "thread", 7: "trailer",
         8: "credentials", 9: "object", 10: "object data", 11: "tracking", 12: "page reference",
         13: "file lock", 14: "tree member", 15: "tree shared file", 16: "tree shared memory"}


def log(msg):
    print(f"[fuzz_images {time.monotonic() - T0:6.2f}s] {msg}", flush=True)


class Failure(Exception):
    pass


def records(data):
    """[(offset, end, type)] of every record; the image must be intact."""
    out, off = [], 0
    while off < len(data):
        _, rtype, _, length, _ = REC_HDR.unpack_from(data, off)
        end = off + REC_HDR.size + length
        out.append((off, end, rtype))
        off = end
    if not out or out[-1][2] != 7 or off != len(data):
        raise Failure("the intact image does not parse as records ending with a trailer")
    return out


class Fuzzer:
    def __init__(self, a):
        self.a = a
        self.ghost = os.path.abspath(a.ghost)
        self.restorer = os.path.join(os.path.dirname(os.path.dirname(self.ghost)), "ghost-core", "restore",
                                     "ghost-restart")
        self.work = os.path.abspath(a.workdir)
        self.rng = random.Random(a.seed)
        self.popens, self.pids, self.failures = [], set(), []
        self.reasons = {}

    def run(self, argv, what, timeout=None):
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             start_new_session=True)
        self.popens.append((p, what))
        try:
            out, err = p.communicate(timeout=timeout or self.a.cmd_timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.communicate()
            return None, "", ""
        return p.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")

    # -- the two images ---------------------------------------------------------------------------
    def make_images(self):
        d = os.path.join(self.work, "victim")
        os.makedirs(d)
        pidf = os.path.join(self.work, "victim.pid")
        victim = [os.path.abspath(self.a.victim), "--dir", d]
        if self.a.tree:  # the victim as a shell's child: a tree
            victim = ["/bin/sh", "-c", '"$0" "$@" & wait'] + victim
        with open(os.path.join(self.work, "victim.out"), "wb") as o:
            runner = subprocess.Popen([self.ghost, "launch", "--pid-file", pidf, "--"] + victim,
                                      stdin=subprocess.DEVNULL, stdout=o, stderr=subprocess.STDOUT,
                                      start_new_session=True)
        self.popens.append((runner, "ghost launch (victim)"))
        deadline = time.monotonic() + self.a.cmd_timeout
        while not (os.path.exists(pidf) and open(pidf).read().strip() and os.path.exists(os.path.join(d, "beat"))):
            if time.monotonic() > deadline or runner.poll() is not None:
                raise Failure("the victim did not start under ghost")
            time.sleep(0.02)
        pid = int(open(pidf).read().split()[0])
        self.pids.add(pid)
        images = []
        for n, kill in ((1, False), (2, True)):
            ck = os.path.join(self.work, f"ckpt{n}")
            rc, out, err = self.run([self.ghost, "checkpoint", "--dir", ck] + (["--kill"] if kill else []) + [str(pid)],
                                    "ghost checkpoint")
            if rc != 0:
                raise Failure(f"ghost checkpoint of the victim failed ({rc}): {err.strip()}")
            if self.a.tree and "processes=2" not in out:
                raise Failure(f"the victim's image is not a tree of 2 processes: {out.strip()}")
            images.append(open(os.path.join(ck, "image.ghost"), "rb").read())
            time.sleep(0.05)
        runner.wait(timeout=self.a.cmd_timeout)
        self.victim_dir = d
        for img in images:
            path = os.path.join(self.work, "intact.ghost")
            open(path, "wb").write(img)
            rc, out, err = self.run([self.ghost, "inspect", path], "ghost inspect (intact)")
            if rc != 0:
                raise Failure(f"ghost inspect refuses an intact image: {err.strip()}")
        return images

    # -- damage -----------------------------------------------------------------------------------
    def mutants(self, a, b):
        rng, ra, rb = self.rng, records(a), records(b)
        xxh3 = load_xxh3()
        if xxh3 is None or rehash(a, xxh3) != a:
            raise Failure("cannot re-hash images (libxxhash through ctypes, or the image layout changed)")
        rec = lambda i: a[ra[i][0]:ra[i][1]]  # noqa: E731
        by_type = {}
        for i, (_, _, t) in enumerate(ra):
            by_type.setdefault(t, []).append(i)
        n = len(ra)
        log(f"image: {len(a)} bytes, {n} records: " +
            ", ".join(f"{len(v)} {TYPES.get(t, t)}" for t, v in sorted(by_type.items())))

        def flip(data, lo, hi, what):
            data = bytearray(data)
            pos = rng.randrange(lo, hi)
            data[pos] ^= 1 << rng.randrange(8)
            return f"bit flip in {what} at {pos}", bytes(data)

        out = []
        for _ in range(self.a.count // 6):  # flips, spread over the kinds of bytes
            kind = rng.choice(["header", "credentials", "record header", "payload", "trailer", "anywhere"])
            fixed_kind = {"header": 1, "credentials": 8, "trailer": 7}.get(kind)
            if fixed_kind in by_type:
                i = by_type[fixed_kind][0]
                out.append(flip(a, ra[i][0], ra[i][1], kind))
            elif kind == "record header":
                i = rng.randrange(n)
                out.append(flip(a, ra[i][0], ra[i][0] + REC_HDR.size, f"the header of record {i}"))
            elif kind == "payload":
                i = rng.randrange(n)
                out.append(flip(a, ra[i][0] + REC_HDR.size, ra[i][1], f"the payload of record {i}"))
            else:
                out.append(flip(a, 0, len(a), "the image"))
        for _ in range(self.a.count // 10):
            i = rng.randrange(n)
            out.append((f"truncated after record {i}", a[:ra[i][0]]))
            out.append((f"truncated inside record {i}", a[:rng.randrange(ra[i][0] + 1, ra[i][1])]))
        for _ in range(self.a.count // 10):
            i, j = rng.randrange(1, len(ra)), rng.randrange(1, len(rb))
            out.append((f"splice: records 0-{i - 1} of one image, {j}- of the other", a[:ra[i][0]] + b[rb[j][0]:]))
            out.append(("splice at bytes", a[:rng.randrange(len(a))] + b[rng.randrange(len(b)):]))
        swaps = []
        for _ in range(self.a.count // 6):
            i, j = sorted(rng.sample(range(n), 2))
            if rng.random() < 0.4 and j < n - 1:  # neighbours, the likeliest mix-up
                j = i + 1
            swaps.append((i, j))
        # Two records of one kind: pages of two regions, two regions, two files, two threads.
        for t in (4, 3, 5, 6):
            if len(by_type.get(t, [])) >= 2:
                for _ in range(3):
                    swaps.append(tuple(sorted(rng.sample(by_type[t], 2))))
        for i, j in swaps:
            if rec(i) == rec(j):
                continue
            data = a[:ra[i][0]] + rec(j) + a[ra[i][1]:ra[j][0]] + rec(i) + a[ra[j][1]:]
            out.append((f"records {i} ({TYPES[ra[i][2]]}) and {j} ({TYPES[ra[j][2]]}) swapped", data))
            out.append((f"records {i} and {j} swapped, re-hashed", rehash(data, xxh3), True))
        for _ in range(self.a.count // 12):
            i = rng.randrange(n)
            at = rng.choice([ra[i][1], ra[rng.randrange(n)][0]])
            data = a[:at] + rec(i) + a[at:]
            out.append((f"record {i} ({TYPES[ra[i][2]]}) repeated at {at}", data))
            if ra[i][2] != 7 and at <= ra[-1][0]:
                out.append((f"record {i} repeated at {at}, re-hashed", rehash(data, xxh3), True))
            j = rng.randrange(n)
            out.append((f"record {j} ({TYPES[ra[j][2]]}) dropped", a[:ra[j][0]] + a[ra[j][1]:]))
        for _ in range(self.a.count // 10):
            i = rng.randrange(n)
            length = struct.unpack_from("<Q", a, ra[i][0] + 8)[0]
            new = rng.choice([0, 1, length - 1, length + 1, length + 4096, length * 2, 1 << 40, (1 << 64) - 1,
                              rng.randrange(1 << 32)])
            if new == length:
                continue
            data = bytearray(a)
            struct.pack_into("<Q", data, ra[i][0] + 8, new)
            out.append((f"length of record {i} ({TYPES[ra[i][2]]}) {length} -> {new}", bytes(data)))
        result = []
        for m in out:
            if m[1] != a and m[1] != b:
                result.append((m[0], m[1], len(m) > 2))
        return result

    # -- checks -----------------------------------------------------------------------------------
    def image_processes(self):
        """Processes of the image: command line naming the victim's directory, or a restorer left
        behind by our `ghost restart` (orphaned: other tests' restorers, running at the same time
        under ctest -j, still have their `ghost restart` or launcher as parent)."""
        found = set()
        key = self.victim_dir.encode()
        for ent in os.listdir("/proc"):
            if not ent.isdigit() or int(ent) == os.getpid():
                continue
            try:
                cmd = open(f"/proc/{ent}/cmdline", "rb").read()
                exe = os.readlink(f"/proc/{ent}/exe")
            except OSError:
                continue
            if (key in cmd or (exe == self.restorer and ppid(int(ent)) == 1)) and pid_alive(int(ent)):
                found.add(int(ent))
        return found

    def refused(self, argv, what):
        start = time.monotonic()
        rc, out, err = self.run(argv, what)
        lines = [line for line in err.splitlines() if line.strip()]
        if rc is None:
            return f"{what}: no answer within {self.a.cmd_timeout:.0f}s (hang)"
        if rc < 0:
            return f"{what}: died of signal {-rc}"
        if rc == 0:
            return f"{what}: exited 0 (accepted the image); stdout {out.strip()[-300:]!r}"
        if len(lines) != 1 or not lines[0].startswith("ghost: "):
            return f"{what}: exited {rc} with stderr {err.strip()[:400]!r}, expected one line 'ghost: ...'"
        reason = re.sub(r"\d+", "N", lines[0].split(": ")[-1])
        self.reasons[f"{what}: {reason}"] = self.reasons.get(f"{what}: {reason}", 0) + 1
        if time.monotonic() - start > self.a.cmd_timeout / 2:
            log(f"  slow: {what} took {time.monotonic() - start:.1f}s")
        return None

    def check(self, k, name, data, restart):
        path = os.path.join(self.work, "damaged.ghost")
        with open(path, "wb") as f:
            f.write(data)
        problems = []
        why = self.refused([self.ghost, "inspect", path], "inspect")
        if why:
            problems.append(why)
        if restart:
            pidf = os.path.join(self.work, "restart.pid")
            if os.path.exists(pidf):
                os.unlink(pidf)
            why = self.refused([self.ghost, "restart", "--pid-file", pidf, path], "restart")
            if why:
                problems.append(why)
            alive = self.image_processes()
            if os.path.exists(pidf) and open(pidf).read().strip():
                rpid = int(open(pidf).read().split()[0])
                if pid_alive(rpid):
                    alive.add(rpid)
            if alive:
                problems.append(f"restart: process(es) {sorted(alive)} of the image running")
                for pid in alive:
                    self.pids.add(pid)
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        if os.environ.get("FUZZ_DEBUG"):
            log(f"  {k} {name}")
        for p in problems:
            self.failures.append(f"mutant {k} ({name}): {p}")
            log(f"  FAILED mutant {k} ({name}): {p}")

    def main(self):
        shutil.rmtree(self.work, ignore_errors=True)
        os.makedirs(self.work)
        try:
            a, b = self.make_images()
            mutants = self.mutants(a, b)
            restarts = 0
            for k, (name, data, rehashed) in enumerate(mutants):
                restart = rehashed or self.rng.random() < self.a.restart_share
                restarts += restart
                self.check(k, name, data, restart)
            log(f"{len(mutants)} damaged images, {restarts} of them also given to ghost restart; refusals:")
            for reason, count in sorted(self.reasons.items(), key=lambda kv: -kv[1]):
                log(f"  {count:4d}  {reason}")
        except Failure as e:
            self.failures.append(str(e))
        finally:
            kill_all(self.popens, self.pids, log)
        if self.failures:
            log(f"{len(self.failures)} failure(s); first: {self.failures[0]}")
            print("FAIL fuzz_images", flush=True)
            return 1
        shutil.rmtree(self.work, ignore_errors=True)
        print("PASS fuzz_images", flush=True)
        return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ghost", required=True)
    ap.add_argument("--victim", required=True, help="the ckpt_victim test program")
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--seed", type=int, default=9)
    ap.add_argument("--count", type=int, default=300, help="about this many damaged images")
    ap.add_argument("--restart-share", type=float, default=0.15,
                    help="share of the not re-hashed images also given to ghost restart")
    ap.add_argument("--cmd-timeout", type=float, default=20.0)
    ap.add_argument("--tree", action="store_true", help="images of a tree: the victim under a shell")
    return Fuzzer(ap.parse_args()).main()


if __name__ == "__main__":
    sys.exit(main())
