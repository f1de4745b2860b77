# SPDX-License-Identifier: Apache-2.0
# An mpi4py job for ghostrun's Python tests (run_py.sh): STEPS steps of a ring exchange of numpy
# arrays (Sendrecv into a buffer, and pickled send/recv), an Allreduce of an array and an
# allreduce of a Python object on COMM_WORLD, and a reduction on a communicator from Comm.Split
# (even and odd ranks); each received value checked, all folded into a per-rank checksum; SLEEP_MS
# of sleep between steps (outside MPI). Prints only at its end, so that a job restarted from a
# checkpoint prints what an uninterrupted one prints.
# Usage: python3 mpi4py_steps.py STEPS [SLEEP_MS [buffers]]
import hashlib
import os
import sys
import tempfile
import time

import numpy as np

# A file opened before mpi4py loads MPI (the layer starts at the first MPI call): the program's,
# carried by a restart; one line per step, checked at the end.
log = tempfile.NamedTemporaryFile("w+", prefix="ghost-py-", delete=False)
# An unnamed one too (O_TMPFILE, opened O_NOFOLLOW: a restart once failed to reopen it), at a low
# number that the restarting launcher also uses.
scratch = tempfile.TemporaryFile("w+")
from mpi4py import MPI  # noqa: E402

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
steps = int(sys.argv[1]) if len(sys.argv) > 1 else 50
sleep_ms = int(sys.argv[2]) if len(sys.argv) > 2 else 20
# "buffers": the collectives on numpy buffers only. mpi4py's collectives on Python objects keep a
# duplicate communicator in an attribute (a keyval), which a restart carries.
objects = not (len(sys.argv) > 3 and sys.argv[3] == "buffers")
right, left = (rank + 1) % size, (rank + size - 1) % size
half = comm.Split(rank % 2, rank)
failures = []


def check(ok, what):
    if not ok and len(failures) < 5:
        failures.append(what)


def values(r, s):  # what rank r sends at step s
    return np.arange(64, dtype=np.float64) * (r + 1) + s


digest = hashlib.sha256()
for s in range(steps):
    out = values(rank, s)
    got = np.empty_like(out)
    comm.Sendrecv(out, dest=right, sendtag=s, recvbuf=got, source=left, recvtag=s)
    check(np.array_equal(got, values(left, s)), f"step {s}: Sendrecv from rank {left}")
    if rank % 2 == 0:
        comm.send(out * 2, dest=right, tag=10000 + s)
        back = comm.recv(source=left, tag=10000 + s)
    else:
        back = comm.recv(source=left, tag=10000 + s)
        comm.send(out * 2, dest=right, tag=10000 + s)
    check(np.array_equal(back, values(left, s) * 2), f"step {s}: pickled array from rank {left}")
    total = np.empty_like(out)
    comm.Allreduce(out, total, op=MPI.SUM)
    want = sum(values(r, s) for r in range(size))
    check(np.array_equal(total, want), f"step {s}: Allreduce")
    if objects:
        obj = comm.allreduce({"n": rank + s}, op=lambda a, b, dt=None: {"n": a["n"] + b["n"]})
    else:
        n = np.array([rank + s], dtype=np.int64)
        comm.Allreduce(MPI.IN_PLACE, n, op=MPI.SUM)
        obj = {"n": int(n[0])}
    check(obj["n"] == sum(range(size)) + size * s, f"step {s}: object allreduce")
    members = list(range(rank % 2, size, 2))
    if objects:
        part = half.allreduce(rank * (s + 1), op=MPI.SUM)
    else:
        p = np.array([rank * (s + 1)], dtype=np.int64)
        half.Allreduce(MPI.IN_PLACE, p, op=MPI.SUM)
        part = int(p[0])
    check(part == sum(members) * (s + 1), f"step {s}: allreduce on the split communicator")
    check(half.Get_size() == len(members), f"step {s}: split size")
    digest.update(total.tobytes())
    digest.update(back.tobytes())
    digest.update(str((obj["n"], part)).encode())
    log.write(f"step {s}\n")
    log.flush()
    scratch.write(f"{s}\n")
    scratch.flush()
    if sleep_ms > 0:
        time.sleep(sleep_ms / 1000)

half.Free()
log.seek(0)
check(log.read() == "".join(f"step {s}\n" for s in range(steps)), "the file opened before MPI")
log.close()
os.unlink(log.name)
scratch.seek(0)
check(scratch.read() == "".join(f"{s}\n" for s in range(steps)), "the unnamed file opened before MPI")
scratch.close()
# One write for both lines: mpirun forwards what it reads, and lines of several ranks must not mix.
verdict = "PASS" if not failures else "FAIL: " + "; ".join(failures)
os.write(1, (f"rank {rank}: mpi4py_steps {steps} steps sub-size {len(members)} checksum "
             f"{digest.hexdigest()[:16]}\nrank {rank}: mpi4py_steps {verdict}\n").encode())
