/* SPDX-License-Identifier: Apache-2.0 */
/* A long-running mix for quiescence tests: every iteration has one rank late (it computes first)
 * so that the others wait in MPI_Recv, MPI_Probe, a collective or a Waitall with pending
 * Isend/Irecv when a quiesce request comes; blocking and nonblocking point-to-point, large
 * (rendezvous) messages, wildcards, Mprobe, persistent requests, collectives on MPI_COMM_WORLD, a
 * duplicate and a split communicator. Prints a per-rank checksum (deterministic) and PASS.
 * Usage: quiesce_mix [ITERATIONS] [threads] */
#include <pthread.h>

#include "mpit.h"

#define BIG (64 * 1024)

static double spin(int us) {
    double t0 = MPI_Wtime(), x = 1;
    while ((MPI_Wtime() - t0) * 1e6 < us)
        x = x * 1.0000001 + 1e-9;
    return x;
}

static unsigned long long sum;
static void mixin(const int *v, int n) {
    for (int i = 0; i < n; i++)
        sum = sum * 1000003ull + (unsigned)v[i];
}

static int nthreads_fails[4];
static MPI_Comm tcomm[4];
static int iters;

static void *worker(void *arg) {
    int t = (int)(long)arg, r = mpit_rank, n = mpit_size;
    int right = (r + 1) % n, left = (r + n - 1) % n;
    for (int i = 0; i < iters; i++) {
        if (t == 0) mpit_step(i, iters);
        int out = r * 100000 + t * 1000 + i % 1000, in = -1, s = 0;
        if (t == 0 && r == 0 && i % 16 == 0) spin(2000);
        if (i % 2 == t % 2) spin(300); /* computing threads while the others are in MPI */
        MPI_Sendrecv(&out, 1, MPI_INT, right, i, &in, 1, MPI_INT, left, i, tcomm[t],
                     MPI_STATUS_IGNORE);
        if (in != left * 100000 + t * 1000 + i % 1000) nthreads_fails[t]++;
        MPI_Request q[2];
        MPI_Irecv(&in, 1, MPI_INT, left, 50 + t, MPI_COMM_WORLD, &q[0]);
        MPI_Isend(&out, 1, MPI_INT, right, 50 + t, MPI_COMM_WORLD, &q[1]);
        MPI_Waitall(2, q, MPI_STATUSES_IGNORE);
        if (in != left * 100000 + t * 1000 + i % 1000) nthreads_fails[t]++;
        if (i % 8 == 0) {
            int one = 1;
            MPI_Allreduce(&one, &s, 1, MPI_INT, MPI_SUM, tcomm[t]);
            if (s != n) nthreads_fails[t]++;
        }
    }
    return NULL;
}

static void threaded(void) {
    for (int t = 0; t < 4; t++)
        MPI_Comm_dup(MPI_COMM_WORLD, &tcomm[t]);
    pthread_t th[4];
    for (int t = 0; t < 4; t++)
        pthread_create(&th[t], NULL, worker, (void *)(long)t);
    for (int t = 0; t < 4; t++)
        pthread_join(th[t], NULL);
    for (int t = 0; t < 4; t++) {
        CHECK(nthreads_fails[t] == 0);
        MPI_Comm_free(&tcomm[t]);
    }
    if (mpit_rank == 0) printf("rank 0: quiesce_mix threads x4, %d iterations\n", iters);
}

int main(int argc, char **argv) {
    iters = argc > 1 ? atoi(argv[1]) : 200;
    int use_threads = argc > 2 && strcmp(argv[2], "threads") == 0;
    if (use_threads) {
        int provided;
        MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
        mpit_started();
        mpit_name = "quiesce_mix";
        MPI_Comm_rank(MPI_COMM_WORLD, &mpit_rank);
        MPI_Comm_size(MPI_COMM_WORLD, &mpit_size);
        if (provided == MPI_THREAD_MULTIPLE) threaded();
        return mpit_finish();
    }
    mpit_init(&argc, &argv, "quiesce_mix");
    int r = mpit_rank, n = mpit_size;
    int right = (r + 1) % n, left = (r + n - 1) % n;
    MPI_Comm dup, half;
    MPI_Comm_dup(MPI_COMM_WORLD, &dup);
    MPI_Comm_split(MPI_COMM_WORLD, r % 2, r, &half);
    int hr, hn;
    MPI_Comm_rank(half, &hr);
    MPI_Comm_size(half, &hn);
    int *big = malloc(BIG * sizeof(int)), *bigin = malloc(BIG * sizeof(int));
    int small[16], in[16];
    int pin[4], pout[4];
    MPI_Request pers[2];
    MPI_Recv_init(pin, 4, MPI_INT, left, 900, dup, &pers[0]);
    MPI_Send_init(pout, 4, MPI_INT, right, 900, dup, &pers[1]);
    MPI_Status st;
    for (int it = 0; it < iters; it++) {
        mpit_step(it, iters);
        int late = it % n; /* this iteration's late rank computes first */
        for (int i = 0; i < 16; i++)
            small[i] = r * 1000 + it * 16 + i;
        for (int i = 0; i < BIG; i += 997)
            big[i] = r + it + i;
        /* 1. ring, blocking: the late rank's right neighbour waits in MPI_Recv */
        if (r == late) spin(1500);
        if (r % 2 == 0) {
            CHECK_MPI(MPI_Send(small, 16, MPI_INT, right, 1, MPI_COMM_WORLD));
            CHECK_MPI(MPI_Recv(in, 16, MPI_INT, left, 1, MPI_COMM_WORLD, &st));
        } else {
            CHECK_MPI(MPI_Recv(in, 16, MPI_INT, left, 1, MPI_COMM_WORLD, &st));
            CHECK_MPI(MPI_Send(small, 16, MPI_INT, right, 1, MPI_COMM_WORLD));
        }
        CHECK(in[3] == left * 1000 + it * 16 + 3);
        mixin(in, 16);
        /* 2. a large message (rendezvous), pending Isend/Irecv across computation */
        MPI_Request q[2];
        CHECK_MPI(MPI_Irecv(bigin, BIG, MPI_INT, left, 2, dup, &q[0]));
        CHECK_MPI(MPI_Isend(big, BIG, MPI_INT, right, 2, dup, &q[1]));
        if (r == late) spin(1500);
        CHECK_MPI(MPI_Waitall(2, q, MPI_STATUSES_IGNORE));
        CHECK(bigin[997] == left + it + 997);
        mixin(bigin + 997 * 5, 1);
        /* 3. wildcard receives at the late rank's successor, Probe + Get_count first */
        int root = (late + 1) % n;
        if (r == root) {
            for (int k = 1; k < n; k++) {
                int cnt;
                CHECK_MPI(MPI_Probe(MPI_ANY_SOURCE, 3, MPI_COMM_WORLD, &st));
                MPI_Get_count(&st, MPI_INT, &cnt);
                CHECK(cnt == 1 + st.MPI_SOURCE % 7);
                CHECK_MPI(MPI_Recv(in, 16, MPI_INT, st.MPI_SOURCE, 3, MPI_COMM_WORLD, &st));
                CHECK(in[0] == st.MPI_SOURCE * 1000 + it * 16);
            }
        } else {
            if (r == late) spin(1500);
            CHECK_MPI(MPI_Send(small, 1 + r % 7, MPI_INT, root, 3, MPI_COMM_WORLD));
        }
        /* 4. Mprobe/Mrecv and Iprobe loops in a ring on the duplicate */
        CHECK_MPI(MPI_Isend(small, 5, MPI_INT, right, 4, dup, &q[1]));
        MPI_Message m;
        if (r == late) spin(800);
        CHECK_MPI(MPI_Mprobe(left, 4, dup, &m, &st));
        CHECK_MPI(MPI_Mrecv(in, 16, MPI_INT, &m, &st));
        CHECK(in[4] == left * 1000 + it * 16 + 4);
        int flag = 0;
        CHECK_MPI(MPI_Isend(small, 6, MPI_INT, right, 5, dup, &q[0]));
        while (!flag)
            CHECK_MPI(MPI_Iprobe(left, 5, dup, &flag, &st));
        CHECK_MPI(MPI_Recv(in, 16, MPI_INT, left, 5, dup, MPI_STATUS_IGNORE));
        CHECK_MPI(MPI_Waitall(2, q, MPI_STATUSES_IGNORE));
        /* 5. persistent requests */
        for (int i = 0; i < 4; i++)
            pout[i] = r * 10 + it + i;
        CHECK_MPI(MPI_Startall(2, pers));
        if (r == late) spin(800);
        CHECK_MPI(MPI_Waitall(2, pers, MPI_STATUSES_IGNORE));
        CHECK(pin[2] == left * 10 + it + 2);
        mixin(pin, 4);
        /* 6. collectives: the late rank makes the others wait inside them */
        int v = r + it, s = 0;
        if (r == late) spin(1500);
        CHECK_MPI(MPI_Allreduce(&v, &s, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD));
        CHECK(s == n * it + n * (n - 1) / 2);
        int b = r == late ? it * 7 : -1;
        CHECK_MPI(MPI_Bcast(&b, 1, MPI_INT, late, dup));
        CHECK(b == it * 7);
        CHECK_MPI(MPI_Barrier(half));
        int hs = 0;
        CHECK_MPI(MPI_Allreduce(&v, &hs, 1, MPI_INT, MPI_MAX, half));
        int *a2a = malloc(2 * n * sizeof(int)), *a2b = malloc(2 * n * sizeof(int));
        for (int i = 0; i < 2 * n; i++)
            a2a[i] = r * 100 + i;
        CHECK_MPI(MPI_Alltoall(a2a, 2, MPI_INT, a2b, 2, MPI_INT, dup));
        CHECK(a2b[2 * left] == left * 100 + 2 * r);
        mixin(a2b, 2 * n);
        free(a2a);
        free(a2b);
        /* 7. Sendrecv, and Waitany/Testsome over a receive and a send */
        CHECK_MPI(MPI_Sendrecv(small, 3, MPI_INT, right, 7, in, 3, MPI_INT, left, 7, MPI_COMM_WORLD,
                               &st));
        CHECK(in[2] == left * 1000 + it * 16 + 2 && st.MPI_SOURCE == left);
        CHECK_MPI(MPI_Irecv(in, 16, MPI_INT, left, 8, MPI_COMM_WORLD, &q[0]));
        if (r == late) spin(800);
        CHECK_MPI(MPI_Isend(small, 8, MPI_INT, right, 8, MPI_COMM_WORLD, &q[1]));
        int idx, done = 0, outc, idxs[2];
        CHECK_MPI(MPI_Waitany(2, q, &idx, &st));
        done++;
        while (done < 2) {
            CHECK_MPI(MPI_Testsome(2, q, &outc, idxs, MPI_STATUSES_IGNORE));
            if (outc != MPI_UNDEFINED) done += outc;
        }
        CHECK(in[7] == left * 1000 + it * 16 + 7);
        mixin(in, 8);
    }
    MPI_Request_free(&pers[0]);
    MPI_Request_free(&pers[1]);
    MPI_Comm_free(&dup);
    MPI_Comm_free(&half);
    free(big);
    free(bigin);
    printf("rank %d: quiesce_mix %d iterations checksum %llx\n", r, iters, sum);
    return mpit_finish();
}
