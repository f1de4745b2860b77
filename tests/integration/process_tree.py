#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""A process with a child cannot be carried yet: `ghost checkpoint` (with and without --kill) and
`ghost duplicate` must refuse it in one line naming the child, before anything is killed, and the
parent and its child must go on (the parent then reaps the child and exits 0). The children (all
under ghost themselves: they inherit the agent):
  sleeping  a shell's background job, waited for with `wait`;
  zombie    a child that exited and is not reaped yet (reaped at the end: its status must be 3);
  piped     a child whose stdin and stdout are pipes to the parent (the refusal must name the
            child, not the pipes: they are only its symptom);
  system    system(3): a shell that runs `sleep` (posix_spawn's vfork, then a wait).

Usage: process_tree.py --ghost GHOST --workdir DIR
Exit status: 0 pass, 1 fail.
"""
import argparse
import os
import shutil
import subprocess
import sys
import time

from procs import kill_all, pid_alive

PY = "/usr/bin/python3"
CASES = {
    "sleeping": ["/bin/sh", "-c", "sleep 6 & wait $!"],
    "zombie": [PY, "-c", "import os, time\n"
               "p = os.fork()\n"
               "if p == 0: os._exit(3)\n"
               "time.sleep(6)\n"
               "st = os.waitpid(p, 0)[1]\n"
               "raise SystemExit(0 if os.waitstatus_to_exitcode(st) == 3 else 1)\n"],
    "piped": [PY, "-c", "import subprocess\n"
              "p = subprocess.Popen(['/bin/sh', '-c', 'sleep 6; read x; echo got $x'],"
              " stdin=subprocess.PIPE, stdout=subprocess.PIPE)\n"
              "out = p.communicate(b'line\\n')[0]\n"
              "raise SystemExit(0 if out == b'got line\\n' and p.returncode == 0 else 1)\n"],
    "system": [PY, "-c", "import os\n"
               "raise SystemExit(0 if os.system('sleep 6; exit 4') >> 8 == 4 else 1)\n"],
}


def fail(msg):
    print(f"FAIL process_tree: {msg}", flush=True)
    sys.exit(1)


def one_case(ghost, work, name, argv):
    work = os.path.join(work, name)
    os.makedirs(work)
    pid_file = os.path.join(work, "parent.pid")
    ckpt = os.path.join(work, "ckpt")
    launch = subprocess.Popen([ghost, "launch", "--ckpt-dir", ckpt, "--pid-file", pid_file, "--"] + argv,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    started = []
    try:
        deadline = time.monotonic() + 10
        parent = None
        while time.monotonic() < deadline:
            try:
                parent = int(open(pid_file).read())
                kids = open(f"/proc/{parent}/task/{parent}/children").read().split()
                if kids:
                    started.append(int(kids[0]))
                    break
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        if not started:
            fail(f"{name}: the parent did not start its child")
        started.append(parent)
        time.sleep(0.3)  # (the zombie's child has exited by now; the others sleep)
        for cmd in (["checkpoint", "--dir", ckpt, str(parent)],
                    ["checkpoint", "--kill", "--dir", ckpt, str(parent)],
                    ["duplicate", "--detach", str(parent)]):
            r = subprocess.run([ghost] + cmd, capture_output=True, text=True, timeout=30)
            lines = r.stderr.strip().splitlines()
            if r.returncode == 0:
                fail(f"{name}: ghost {' '.join(cmd)} accepted a process with a child")
            if len(lines) != 1 or "has a child process" not in lines[0]:
                fail(f"{name}: ghost {' '.join(cmd)}: expected one line naming the child, got {lines}")
            if not pid_alive(parent) or (name != "zombie" and not pid_alive(started[0])):
                fail(f"{name}: ghost {' '.join(cmd)} left the parent or its child dead")
        if os.path.exists(os.path.join(ckpt, "image.ghost")):
            fail(f"{name}: a refused checkpoint left an image")
        rc = launch.wait(timeout=30)
        if rc != 0:
            fail(f"{name}: the parent exited with {rc} after the refusals: "
                 f"{launch.stderr.read().decode(errors='replace').strip()!r}")
        print(f"{name}: refused in one line three times, then the parent ended well", flush=True)
    except subprocess.TimeoutExpired as e:
        fail(f"{name}: timed out: {e}")
    finally:
        kill_all([(launch, "ghost launch")], started, lambda m: print(m, flush=True))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ghost", required=True)
    ap.add_argument("--workdir", required=True)
    a = ap.parse_args()
    shutil.rmtree(a.workdir, ignore_errors=True)
    os.makedirs(a.workdir)
    for name, argv in CASES.items():
        one_case(a.ghost, a.workdir, name, argv)
    print("PASS process_tree", flush=True)


if __name__ == "__main__":
    main()
