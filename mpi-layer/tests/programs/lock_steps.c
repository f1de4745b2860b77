/* SPDX-License-Identifier: Apache-2.0 */
/* A job whose ranks contend for one exclusive passive-target lock (the shared counter / task
 * queue pattern): every step, each rank takes MPI_Win_lock(EXCLUSIVE) on rank 0's window
 * (MPI_Win_allocate), reads it (MPI_Get + MPI_Win_flush), computes SLEEP_MS outside MPI while it
 * holds the lock, adds its share (MPI_Put) and unlocks; the others wait inside MPI_Win_lock
 * meanwhile. A checkpoint nearly always finds one rank in its critical section, outside MPI with
 * the lock held, and others waiting for it (run_job_ckpt.sh lock). Every 10 steps, and at the end,
 * the counters are read under a shared lock and checked (the additions commute: the result does
 * not depend on the order the ranks got the lock in). Prints only at the end.
 * Usage: lock_steps STEPS [SLEEP_MS] (any number of ranks) */
#include "mpit.h"

enum { N = 16 };

int main(int argc, char **argv) {
    mpit_init(&argc, &argv, "lock_steps");
    int steps = argc > 1 ? atoi(argv[1]) : 100;
    int sleep_ms = argc > 2 ? atoi(argv[2]) : 20;
    mpit_iters = 1; /* (the first argument is the step count here) */
    const int r = mpit_rank, n = mpit_size;
    long long *mem = NULL;
    MPI_Win win;
    CHECK_MPI(MPI_Win_allocate(N * (MPI_Aint)sizeof(long long), (int)sizeof(long long),
                               MPI_INFO_NULL, MPI_COMM_WORLD, &mem, &win));
    for (int i = 0; i < N; i++)
        mem[i] = 0;
    CHECK_MPI(MPI_Barrier(MPI_COMM_WORLD));
    /* After step s (all ranks done): counter i holds (s + 1) * (i + 1) * (1 + 2 + ... + n). */
    const long long ranks_sum = (long long)n * (n + 1) / 2;
    for (int s = 0; s < steps; s++) {
        mpit_step(s, steps);
        long long v[N];
        CHECK_MPI(MPI_Win_lock(MPI_LOCK_EXCLUSIVE, 0, 0, win));
        CHECK_MPI(MPI_Get(v, N, MPI_LONG_LONG, 0, 0, N, MPI_LONG_LONG, win));
        CHECK_MPI(MPI_Win_flush(0, win));
        mpit_sleep_ms(sleep_ms); /* the critical section's work, outside MPI, lock held */
        for (int i = 0; i < N; i++)
            v[i] += (long long)(i + 1) * (r + 1);
        CHECK_MPI(MPI_Put(v, N, MPI_LONG_LONG, 0, 0, N, MPI_LONG_LONG, win));
        CHECK_MPI(MPI_Win_unlock(0, win));
        mpit_sleep_ms(sleep_ms / 2);
        if (s % 10 == 9 || s == steps - 1) {
            CHECK_MPI(MPI_Barrier(MPI_COMM_WORLD));
            long long g[N];
            CHECK_MPI(MPI_Win_lock(MPI_LOCK_SHARED, 0, 0, win));
            CHECK_MPI(MPI_Get(g, N, MPI_LONG_LONG, 0, 0, N, MPI_LONG_LONG, win));
            CHECK_MPI(MPI_Win_unlock(0, win));
            for (int i = 0; i < N; i++)
                CHECK(g[i] == (long long)(s + 1) * (i + 1) * ranks_sum);
            for (int i = 0; i < N; i++)
                mpit_mix((unsigned long long)g[i]);
            CHECK_MPI(MPI_Barrier(MPI_COMM_WORLD));
        }
    }
    printf("rank %d: %d steps, sum %016llx\n", r, steps, mpit_sum);
    CHECK_MPI(MPI_Win_free(&win));
    return mpit_finish();
}
