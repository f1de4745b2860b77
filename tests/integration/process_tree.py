#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""A process with a child cannot be carried yet: `ghost checkpoint` (with and without --kill) and
`ghost duplicate` must refuse it in one line, before anything is killed, and the parent and its
child must go on (the parent then reaps the child and exits 0).

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


def fail(msg):
    print(f"FAIL process_tree: {msg}", flush=True)
    sys.exit(1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ghost", required=True)
    ap.add_argument("--workdir", required=True)
    a = ap.parse_args()
    shutil.rmtree(a.workdir, ignore_errors=True)
    os.makedirs(a.workdir)
    pid_file = os.path.join(a.workdir, "parent.pid")
    # The parent forks a child that sleeps, then waits for it and exits with its status.
    script = "sleep 6 & wait $!"
    launch = subprocess.Popen([a.ghost, "launch", "--ckpt-dir", os.path.join(a.workdir, "ckpt"),
                               "--pid-file", pid_file, "--", "/bin/sh", "-c", script],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              start_new_session=True)
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
            fail("the parent did not start its child")
        started.append(parent)
        for cmd in (["checkpoint", "--dir", os.path.join(a.workdir, "ckpt"), str(parent)],
                    ["checkpoint", "--kill", "--dir", os.path.join(a.workdir, "ckpt"),
                     str(parent)],
                    ["duplicate", "--detach", str(parent)]):
            r = subprocess.run([a.ghost] + cmd, capture_output=True, text=True, timeout=30)
            lines = r.stderr.strip().splitlines()
            if r.returncode == 0:
                fail(f"ghost {' '.join(cmd)} accepted a process with a child")
            if len(lines) != 1 or "child" not in lines[0]:
                fail(f"ghost {' '.join(cmd)}: expected one line naming the child, got {lines}")
            if not pid_alive(parent) or not pid_alive(started[0]):
                fail(f"ghost {' '.join(cmd)} left the parent or its child dead")
        if os.path.exists(os.path.join(a.workdir, "ckpt", "image.ghost")):
            fail("a refused checkpoint left an image")
        rc = launch.wait(timeout=30)
        if rc != 0:
            fail(f"the parent exited with {rc} after the refusals")
    except subprocess.TimeoutExpired as e:
        fail(f"timed out: {e}")
    finally:
        kill_all([(launch, "ghost launch")], started, lambda m: print(m, flush=True))
    print("PASS process_tree", flush=True)


if __name__ == "__main__":
    main()
