/* SPDX-License-Identifier: Apache-2.0 */
/* N iterations of one MPI call (2 ranks, ping-pong where it takes a peer), for counting the system
 * calls a call costs: run it under ghostrun with N and with 0 and strace -f -c -e trace=arch_prctl,
 * the difference over N is the count per iteration (mpi-layer/bench/RESULTS.md).
 *   call_count CALL N   CALL: comm_rank send_recv isend_wait allreduce sendrecv wtime */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    const char *what = argc > 1 ? argv[1] : "comm_rank";
    long n = argc > 2 ? atol(argv[2]) : 1000;
    int peer = rank ^ 1, r = 0;
    double x = 1, y = 0, t = 0;
    MPI_Request rq;
    MPI_Barrier(MPI_COMM_WORLD);
    for (long i = 0; i < n; i++) {
        if (!strcmp(what, "comm_rank")) {
            MPI_Comm_rank(MPI_COMM_WORLD, &r);
        } else if (!strcmp(what, "wtime")) {
            t += MPI_Wtime();
        } else if (!strcmp(what, "send_recv")) { /* one Send and one Recv per rank */
            if (rank == 0) {
                MPI_Send(&x, 1, MPI_DOUBLE, peer, 0, MPI_COMM_WORLD);
                MPI_Recv(&y, 1, MPI_DOUBLE, peer, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            } else {
                MPI_Recv(&y, 1, MPI_DOUBLE, peer, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
                MPI_Send(&x, 1, MPI_DOUBLE, peer, 0, MPI_COMM_WORLD);
            }
        } else if (!strcmp(what, "isend_wait")) { /* Isend+Wait on rank 0, Irecv+Wait on 1 */
            if (rank == 0)
                MPI_Isend(&x, 1, MPI_DOUBLE, peer, 0, MPI_COMM_WORLD, &rq);
            else
                MPI_Irecv(&y, 1, MPI_DOUBLE, peer, 0, MPI_COMM_WORLD, &rq);
            MPI_Wait(&rq, MPI_STATUS_IGNORE);
        } else if (!strcmp(what, "sendrecv")) {
            MPI_Sendrecv(&x, 1, MPI_DOUBLE, peer, 0, &y, 1, MPI_DOUBLE, peer, 0, MPI_COMM_WORLD,
                         MPI_STATUS_IGNORE);
        } else if (!strcmp(what, "allreduce")) {
            MPI_Allreduce(&x, &y, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
        }
    }
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 0 && t < 0) printf("%d %f\n", r, t);
    MPI_Finalize();
    return 0;
}
