#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Process trees: a process and its descendants (all under ghost: they inherit the agent) are
checkpointed into one image and restarted as the same tree. For each case the tree is launched
with its output to a file (a description every process of the tree shares), then:
  - `ghost duplicate` must refuse it in one line naming the child (duplicates of trees are not
    made), every process going on;
  - `ghost checkpoint` (without --kill) must write the image and let the tree go on, and a
    restart of it while the tree runs must be refused in one line (its pids are taken);
  - `ghost checkpoint --kill`, then `ghost restart` of that image: the restored tree must finish
    as an uninterrupted one would (the root's status 0, its RESULT line in the output file).
The cases:
  sleeping  a shell's background job (a waiting Python), waited for with `wait`;
  zombie    a child that exited (status 3) and is not reaped yet: its parent reaps it after the
            restart and must see status 3;
  piped     a child whose stdin and stdout are pipes to the parent, a line in flight in one;
  system    system(3): a shell that runs a waiting Python (a grandchild), whose exit status
            comes back.
  shared_memory  parent and child share anonymous memory (a shared mapping made before the fork).
  semaphore      a multiprocessing semaphore (sem_open: a deleted /dev/shm file both map): the
                 parent waits on it across the restart, the child posts it after.
  socketpair     a multiprocessing.Pipe (a socketpair) split between parent and child, a message
                 queued in it, answered after the restart.
And one the restart cannot rebuild, refused in one line before anything is killed:
  held_memfd     parent and child map one memfd and hold it through a descriptor (Python's mmap
                 keeps a dup of it).

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
# Each tree waits (go() in Python, WAIT in a shell: a Python process) until this script creates
# the file TREE_GO names, once it has refused a duplicate, checkpointed the tree and checkpointed
# it with --kill, and restarted it: a fixed sleep had to cover those steps under the ASan build
# on a loaded machine, and cost its whole length in every case on any other.
GO = ("import os, time\n"
      "def go():\n"
      "    while not os.path.exists(os.environ['TREE_GO']): time.sleep(0.02)\n")
WAIT = PY + " -c 'import os, time\nwhile not os.path.exists(os.environ[\"TREE_GO\"]): time.sleep(0.02)'"
CASES = {
    "sleeping": (["/bin/sh", "-c", WAIT + " & wait $!; echo RESULT $?"], "RESULT 0"),
    "zombie": ([PY, "-c", GO +
                "p = os.fork()\n"
                "if p == 0: os._exit(3)\n"
                "go()\n"
                "st = os.waitpid(p, 0)[1]\n"
                "print('RESULT', os.waitstatus_to_exitcode(st), flush=True)\n"], "RESULT 3"),
    "piped": ([PY, "-c", "import subprocess\n"
               f"p = subprocess.Popen(['/bin/sh', '-c', {WAIT + '; read x; echo got $x'!r}],"
               " stdin=subprocess.PIPE, stdout=subprocess.PIPE)\n"
               "p.stdin.write(b'line\\n'); p.stdin.flush()\n"
               "out = p.communicate()[0]\n"
               "print('RESULT', out.decode().strip(), p.returncode, flush=True)\n"],
              "RESULT got line 0"),
    "system": ([PY, "-c", "import os\n"
                f"print('RESULT', os.system({WAIT + '; exit 4'!r}) >> 8, flush=True)\n"],
               "RESULT 4"),
    # Parent and child share anonymous memory (a shared mapping made before the fork), written by
    # both before the checkpoint and by the child after the restart: one object again.
    "shared_memory": ([PY, "-c", GO + "import mmap\n"
                       "m = mmap.mmap(-1, 1 << 20)\n"
                       "m[5000] = 5\n"
                       "p = os.fork()\n"
                       "if p == 0:\n"
                       "    m[0] = 1; go(); m[1] = m[0] + m[5000] + m[9000]; os._exit(0)\n"
                       "m[9000] = 9\n"
                       "os.waitpid(p, 0)\n"
                       "print('RESULT', m[1], flush=True)\n"], "RESULT 15"),
    # The parent waits in sem_wait (a futex in the shared mapping) through the restart.
    "semaphore": ([PY, "-c", GO + "import multiprocessing\n"
                   "s = multiprocessing.Semaphore(0)\n"
                   "p = os.fork()\n"
                   "if p == 0:\n"
                   "    go(); s.release(); os._exit(0)\n"
                   "s.acquire()\n"
                   "os.waitpid(p, 0)\n"
                   "print('RESULT acquired', flush=True)\n"], "RESULT acquired"),
    # A socketpair split between parent and child, a message queued at the child's end: the
    # restart makes one pair again and gives each its end.
    "socketpair": ([PY, "-c", GO + "import multiprocessing\n"
                    "a, b = multiprocessing.Pipe()\n"
                    "p = os.fork()\n"
                    "if p == 0:\n"
                    "    a.close(); go(); b.send(b.recv() + ' pong'); os._exit(0)\n"
                    "b.close(); a.send('ping')\n"
                    "r = a.recv()\n"
                    "os.waitpid(p, 0)\n"
                    "print('RESULT', r, flush=True)\n"], "RESULT ping pong"),
}
REFUSED = {
    # A memfd both map and hold (mmap.mmap keeps a dup): two objects after a restart.
    "held_memfd": ([PY, "-c", GO + "import mmap\n"
                    "fd = os.memfd_create('both')\n"
                    "os.ftruncate(fd, 4096)\n"
                    "m = mmap.mmap(fd, 4096)\n"
                    "p = os.fork()\n"
                    "if p == 0:\n"
                    "    go(); m[0] = 7; os._exit(0)\n"
                    "os.waitpid(p, 0)\n"
                    "raise SystemExit(0 if m[0] == 7 else 1)\n"], "share"),
}


def fail(msg):
    print(f"FAIL process_tree: {msg}", flush=True)
    sys.exit(1)


def run_ghost(ghost, cmd, timeout=60):
    return subprocess.run([ghost] + cmd, capture_output=True, text=True, timeout=timeout)


def start_tree(ghost, work, argv):
    """Launches argv under ghost, its output to work/out, TREE_GO naming work/go; returns
    (Popen, parent pid, child pid)."""
    pid_file = os.path.join(work, "parent.pid")
    out = open(os.path.join(work, "out"), "wb")
    env = dict(os.environ, TREE_GO=os.path.join(work, "go"))
    launch = subprocess.Popen([ghost, "launch", "--pid-file", pid_file, "--"] + argv,
                              stdout=out, stderr=subprocess.PIPE, start_new_session=True, env=env)
    out.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            parent = int(open(pid_file).read())
            kids = open(f"/proc/{parent}/task/{parent}/children").read().split()
            if kids:
                time.sleep(0.3)  # (the zombie's child has exited by now; the others sleep)
                return launch, parent, int(kids[0])
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    kill_all([(launch, "ghost launch")], [], lambda m: print(m, flush=True))
    fail("the parent did not start its child")


def one_case(ghost, work, name, argv, expected):
    work = os.path.join(work, name)
    os.makedirs(work)
    ckpt = os.path.join(work, "ckpt")
    launch, parent, child = start_tree(ghost, work, argv)
    started = [child, parent]
    restart = None
    try:
        def refused(cmd, reason):
            r = run_ghost(ghost, cmd)
            lines = r.stderr.strip().splitlines()
            if r.returncode == 0 or len(lines) != 1 or reason not in lines[0]:
                fail(f"{name}: ghost {cmd[0]}: expected one line ({reason}), got "
                     f"rc {r.returncode} {lines}")
            if not pid_alive(parent) or (name != "zombie" and not pid_alive(child)):
                fail(f"{name}: the refused {cmd[0]} left the parent or its child dead")

        refused(["duplicate", "--detach", str(parent)], "has a child process")
        r = run_ghost(ghost, ["checkpoint", "--dir", ckpt, str(parent)])
        if r.returncode != 0:
            fail(f"{name}: ghost checkpoint failed: {r.stderr.strip()}")
        if not pid_alive(parent) or (name != "zombie" and not pid_alive(child)):
            fail(f"{name}: the checkpoint left the parent or its child dead")
        # Restarted while the tree still runs: its pids are taken; one line, nothing left.
        refused(["restart", ckpt], "another process has it now")
        r = run_ghost(ghost, ["checkpoint", "--kill", "--dir", ckpt, str(parent)])
        if r.returncode != 0 or "processes=" not in r.stdout:
            fail(f"{name}: ghost checkpoint --kill failed: {r.stderr.strip()} {r.stdout.strip()}")
        launch.wait(timeout=30)
        if pid_alive(parent) or pid_alive(child):
            fail(f"{name}: checkpoint --kill left a process of the tree running")
        restart = subprocess.Popen([ghost, "restart", ckpt], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, start_new_session=True)
        open(os.path.join(work, "go"), "w").close()  # the restored tree goes on to its end
        out, err = restart.communicate(timeout=60)
        got = open(os.path.join(work, "out")).read().split("\n")
        if restart.returncode != 0 or expected not in got:
            fail(f"{name}: the restarted tree ended with {restart.returncode}, output {got!r}, "
                 f"restart said {err.decode(errors='replace').strip()!r}")
        print(f"{name}: duplicate refused, checkpointed running, killed, restarted: {expected}",
              flush=True)
    except subprocess.TimeoutExpired as e:
        fail(f"{name}: timed out: {e}")
    finally:
        popens = [(launch, "ghost launch")] + ([(restart, "ghost restart")] if restart else [])
        kill_all(popens, started, lambda m: print(m, flush=True))


def refused_case(ghost, work, name, argv, reason):
    work = os.path.join(work, name)
    os.makedirs(work)
    ckpt = os.path.join(work, "ckpt")
    launch, parent, child = start_tree(ghost, work, argv)
    try:
        for cmd in (["checkpoint", "--dir", ckpt, str(parent)],
                    ["checkpoint", "--kill", "--dir", ckpt, str(parent)]):
            r = run_ghost(ghost, cmd)
            lines = r.stderr.strip().splitlines()
            if r.returncode == 0 or len(lines) != 1 or reason not in lines[0]:
                fail(f"{name}: ghost {' '.join(cmd)}: expected one line ({reason}), got {lines}")
            if not pid_alive(parent) or not pid_alive(child):
                fail(f"{name}: ghost {' '.join(cmd)} left the parent or its child dead")
        if os.path.exists(os.path.join(ckpt, "image.ghost")):
            fail(f"{name}: a refused checkpoint left an image")
        open(os.path.join(work, "go"), "w").close()
        rc = launch.wait(timeout=30)
        if rc != 0:
            fail(f"{name}: the tree ended with {rc} after the refusals")
        print(f"{name}: refused in one line ({lines[0]}), then the tree ended well", flush=True)
    except subprocess.TimeoutExpired as e:
        fail(f"{name}: timed out: {e}")
    finally:
        kill_all([(launch, "ghost launch")], [child, parent], lambda m: print(m, flush=True))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ghost", required=True)
    ap.add_argument("--workdir", required=True)
    a = ap.parse_args()
    shutil.rmtree(a.workdir, ignore_errors=True)
    os.makedirs(a.workdir)
    for name, (argv, expected) in CASES.items():
        one_case(a.ghost, a.workdir, name, argv, expected)
    for name, (argv, reason) in REFUSED.items():
        refused_case(a.ghost, a.workdir, name, argv, reason)
    print("PASS process_tree", flush=True)


if __name__ == "__main__":
    main()
