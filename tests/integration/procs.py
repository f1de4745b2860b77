# SPDX-License-Identifier: Apache-2.0
"""What the integration scripts share: ending every process a test started, whatever state it is in."""

import os
import signal
import subprocess


def pid_alive(pid):
    """True if pid exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return False
    # The state follows the command name, which is in parentheses and may contain anything.
    state = stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3]
    return state not in (b"Z", b"X")


def ppid(pid):
    """The parent pid of pid, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        return int(stat[stat.rfind(b")") + 2 :].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def status(pid):
    """The fields of /proc/PID/status, each a list of its words."""
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value.split()
    return fields


def kill_all(popens, pids, log):
    """SIGKILLs each Popen's process group (they are started with start_new_session=True) and each
    extra pid (processes restored or duplicated by ghost are nobody's children here), then reaps."""
    for p, what in popens:
        if p.poll() is None:
            log(f"killing {what} (pid {p.pid} and its process group)")
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    for pid in sorted(pids):
        if pid_alive(pid):
            log(f"killing pid {pid}")
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    for p, _ in popens:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
