/* SPDX-License-Identifier: Apache-2.0 */
/* OSU-style micro-benchmarks in one program, for ghost vs native comparisons. Each figure is the
 * best of several short batches (the machine is shared: a batch that was descheduled says nothing
 * about the code path), after a warm-up batch: latency    one-way ping-pong latency (ns) for 8 B ..
 * 4 MiB (Send/Recv, as osu_latency) bandwidth  window of 64 Isend/Irecv then an ack (MB/s, as
 * osu_bw) allreduce  MPI_Allreduce of doubles over all ranks (ns per call, as osu_allreduce) calls
 * per-call cost on rank 0 alone (ns): Comm_rank, Iprobe, 8-byte Sendrecv to self,
 *              Isend+Irecv+Waitall to self — the wrapper overhead without inter-process scheduling
 * Output (rank 0): "<test> <bytes> <value>" lines. Usage: osu_like
 * [latency|bandwidth|allreduce|all] */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int rank, size;

static void latency(char *sbuf, char *rbuf) {
    for (size_t bytes = 8; bytes <= (4u << 20); bytes *= 2) {
        if (bytes > 8 && bytes < 1024 && bytes != 64 && bytes != 256) continue;
        int iters = bytes <= 8192         ? 200
                    : bytes >= (1u << 20) ? 4
                                          : 20,
            batches = bytes <= 8192 ? 300 : 60;
        double best = 1e30;
        for (int b = -1; b < batches; b++) {
            MPI_Barrier(MPI_COMM_WORLD);
            double t0 = MPI_Wtime();
            for (int i = 0; i < iters; i++) {
                if (rank == 0) {
                    MPI_Send(sbuf, (int)bytes, MPI_CHAR, 1, 1, MPI_COMM_WORLD);
                    MPI_Recv(rbuf, (int)bytes, MPI_CHAR, 1, 1, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
                } else if (rank == 1) {
                    MPI_Recv(rbuf, (int)bytes, MPI_CHAR, 0, 1, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
                    MPI_Send(sbuf, (int)bytes, MPI_CHAR, 0, 1, MPI_COMM_WORLD);
                }
            }
            double t = MPI_Wtime() - t0;
            if (b >= 0 && t < best) best = t;
        }
        if (rank == 0) printf("latency %zu %.1f\n", bytes, best * 1e9 / (2.0 * iters));
    }
}

static void bandwidth(char *sbuf, char *rbuf) {
    enum { W = 64 };
    MPI_Request rq[W];
    for (size_t bytes = 8; bytes <= (4u << 20); bytes *= bytes >= 32768 ? 2 : 4) {
        int iters = bytes <= 8192 ? 20 : bytes >= (1u << 20) ? 2 : 5, batches = 30;
        double best = 1e30;
        for (int b = -1; b < batches; b++) {
            MPI_Barrier(MPI_COMM_WORLD);
            double t0 = MPI_Wtime();
            for (int i = 0; i < iters; i++) {
                if (rank == 0) {
                    for (int w = 0; w < W; w++)
                        MPI_Isend(sbuf, (int)bytes, MPI_CHAR, 1, 2, MPI_COMM_WORLD, &rq[w]);
                    MPI_Waitall(W, rq, MPI_STATUSES_IGNORE);
                    MPI_Recv(rbuf, 4, MPI_CHAR, 1, 3, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
                } else if (rank == 1) {
                    for (int w = 0; w < W; w++)
                        MPI_Irecv(rbuf, (int)bytes, MPI_CHAR, 0, 2, MPI_COMM_WORLD, &rq[w]);
                    MPI_Waitall(W, rq, MPI_STATUSES_IGNORE);
                    MPI_Send(sbuf, 4, MPI_CHAR, 0, 3, MPI_COMM_WORLD);
                }
            }
            double t = MPI_Wtime() - t0;
            if (b >= 0 && t < best) best = t;
        }
        if (rank == 0)
            printf("bandwidth %zu %.1f\n", bytes, (double)bytes * W * iters / best / 1e6);
    }
}

static void allreduce(void) {
    for (size_t n = 1; n <= 65536; n *= 16) {
        double *a = calloc(n, sizeof(double)), *b = calloc(n, sizeof(double));
        int iters = n <= 256 ? 1000 : 20, batches = 30;
        double best = 1e30;
        for (int k = -1; k < batches; k++) {
            MPI_Barrier(MPI_COMM_WORLD);
            double t0 = MPI_Wtime();
            for (int i = 0; i < iters; i++)
                MPI_Allreduce(a, b, (int)n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
            double t = MPI_Wtime() - t0, tmax;
            MPI_Allreduce(&t, &tmax, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
            if (k >= 0 && tmax < best) best = tmax;
        }
        if (rank == 0) printf("allreduce %zu %.1f\n", n * sizeof(double), best * 1e9 / iters);
        free(a);
        free(b);
    }
}

static void calls(char *sbuf, char *rbuf) {
    if (rank != 0) return;
    const char *names[] = {"comm_rank", "iprobe", "sendrecv_self", "isend_irecv_self"};
    for (int k = 0; k < 4; k++) {
        int iters = 2000, batches = 300, flag, r;
        double best = 1e30;
        MPI_Request q[2];
        for (int b = -1; b < batches; b++) {
            double t0 = MPI_Wtime();
            for (int i = 0; i < iters; i++) {
                if (k == 0)
                    MPI_Comm_rank(MPI_COMM_WORLD, &r);
                else if (k == 1)
                    MPI_Iprobe(MPI_ANY_SOURCE, 77, MPI_COMM_SELF, &flag, MPI_STATUS_IGNORE);
                else if (k == 2)
                    MPI_Sendrecv(sbuf, 8, MPI_CHAR, 0, 5, rbuf, 8, MPI_CHAR, 0, 5, MPI_COMM_SELF,
                                 MPI_STATUS_IGNORE);
                else {
                    MPI_Irecv(rbuf, 8, MPI_CHAR, 0, 6, MPI_COMM_SELF, &q[0]);
                    MPI_Isend(sbuf, 8, MPI_CHAR, 0, 6, MPI_COMM_SELF, &q[1]);
                    MPI_Waitall(2, q, MPI_STATUSES_IGNORE);
                }
            }
            double t = MPI_Wtime() - t0;
            if (b >= 0 && t < best) best = t;
        }
        printf("calls:%s 0 %.1f\n", names[k], best * 1e9 / iters);
    }
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    const char *what = argc > 1 ? argv[1] : "all";
    char *sbuf = malloc(4u << 20), *rbuf = malloc(4u << 20);
    memset(sbuf, 1, 4u << 20);
    memset(rbuf, 0, 4u << 20);
    if (!strcmp(what, "latency") || !strcmp(what, "all")) latency(sbuf, rbuf);
    if (!strcmp(what, "bandwidth") || !strcmp(what, "all")) bandwidth(sbuf, rbuf);
    if (!strcmp(what, "allreduce") || !strcmp(what, "all")) allreduce();
    if (!strcmp(what, "calls")) calls(sbuf, rbuf); /* run it with one rank */
    fflush(stdout);
    MPI_Finalize();
    return 0;
}
