# SPDX-License-Identifier: Apache-2.0
"""mpi4py's lowercase API, as Python programs use it: N ping-pongs of a small pickled dict between
ranks 0 and 1 (comm.send; comm.recv, which is MPI_Mprobe, MPI_Get_count, MPI_Mrecv). Prints the
time per round trip. Usage: mpirun -np 2 python3 py_pingpong.py N (or under ghostrun)."""
import sys

from mpi4py import MPI

comm = MPI.COMM_WORLD
n = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
obj = {"a": list(range(10))}
t = MPI.Wtime()
for _ in range(n):
    if comm.rank == 0:
        comm.send(obj, dest=1, tag=1)
        obj = comm.recv(source=1, tag=2)
    elif comm.rank == 1:
        obj = comm.recv(source=0, tag=1)
        comm.send(obj, dest=0, tag=2)
if comm.rank == 0 and n > 0:
    print("py_pingpong: %d round trips, %.2f us each" % (n, (MPI.Wtime() - t) / n * 1e6))
