/* SPDX-License-Identifier: Apache-2.0 */
/* MPI_THREAD_MULTIPLE: several threads per rank inside MPI at once, each on its own communicator,
 * plus one shared communicator with per-thread tags; errno stays per thread. */
#include <errno.h>
#include <pthread.h>

#include "mpit.h"

#define T 4
#define ITERS 300

static MPI_Comm comms[T];
static int fails[T];

static void *worker(void *arg) {
    int t = (int)(long)arg, r = mpit_rank, n = mpit_size;
    int right = (r + 1) % n, left = (r + n - 1) % n;
    for (int i = 0; i < ITERS; i++) {
        int out = r * 100000 + t * 1000 + i, in = -1;
        errno = 1000 + t;
        if (MPI_Sendrecv(&out, 1, MPI_INT, right, i, &in, 1, MPI_INT, left, i, comms[t],
                         MPI_STATUS_IGNORE) != MPI_SUCCESS)
            fails[t]++;
        if (in != left * 100000 + t * 1000 + i) fails[t]++;
        if (errno != 1000 + t) fails[t]++; /* the lower half must not clobber this thread's errno */
        /* shared communicator, tag = thread */
        MPI_Request q[2];
        in = -1;
        MPI_Irecv(&in, 1, MPI_INT, left, 50 + t, MPI_COMM_WORLD, &q[0]);
        MPI_Isend(&out, 1, MPI_INT, right, 50 + t, MPI_COMM_WORLD, &q[1]);
        MPI_Waitall(2, q, MPI_STATUSES_IGNORE);
        if (in != left * 100000 + t * 1000 + i) fails[t]++;
    }
    int s = 0, one = 1;
    MPI_Allreduce(&one, &s, 1, MPI_INT, MPI_SUM, comms[t]);
    if (s != n) fails[t]++;
    return NULL;
}

int main(int argc, char **argv) {
    int provided;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
    mpit_name = "threads";
    MPI_Comm_rank(MPI_COMM_WORLD, &mpit_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &mpit_size);
    int q;
    MPI_Query_thread(&q);
    CHECK(q == provided);
    if (provided < MPI_THREAD_MULTIPLE) {
        printf("rank %d: MPI_THREAD_MULTIPLE not provided (%d)\n", mpit_rank, provided);
        return mpit_finish();
    }
    for (int t = 0; t < T; t++)
        MPI_Comm_dup(MPI_COMM_WORLD, &comms[t]);
    pthread_t th[T];
    for (int t = 0; t < T; t++)
        pthread_create(&th[t], NULL, worker, (void *)(long)t);
    for (int t = 0; t < T; t++)
        pthread_join(th[t], NULL);
    for (int t = 0; t < T; t++) {
        CHECK(fails[t] == 0);
        MPI_Comm_free(&comms[t]);
    }
    /* a second wave of threads reuses lower TLS blocks of the first */
    for (int t = 0; t < T; t++)
        MPI_Comm_dup(MPI_COMM_WORLD, &comms[t]);
    for (int t = 0; t < T; t++)
        pthread_create(&th[t], NULL, worker, (void *)(long)t);
    for (int t = 0; t < T; t++)
        pthread_join(th[t], NULL);
    for (int t = 0; t < T; t++) {
        CHECK(fails[t] == 0);
        MPI_Comm_free(&comms[t]);
    }
    if (mpit_rank == 0) printf("rank 0: %d threads x %d iterations, provided MULTIPLE\n", T, ITERS);
    return mpit_finish();
}
