/* SPDX-License-Identifier: Apache-2.0 */
/* Nonblocking collectives in flight across checkpoints (run_job_ckpt.sh), as solvers overlap a
 * reduction with computation: each step starts an MPI_Iallreduce on MPI_COMM_WORLD, an
 * MPI_Ibcast from a rotating root and an MPI_Ialltoall on a duplicate, then sleeps SLEEP_MS
 * outside MPI with all three pending (where a checkpoint request usually finds the ranks), then
 * completes them (Waitall, or Test loops on odd steps) and an MPI_Ibarrier; each result is
 * checked and folded into a checksum. Every other step also starts an MPI_Comm_idup of the
 * duplicate (pending across the sleep too), whose result is used until the next one replaces it;
 * rank 0 comes to its first use late, the others wait in an MPI_Allreduce on it meanwhile.
 * Every 10 steps, all ranks but one (in turn) make a communicator with MPI_Comm_create_group
 * (collective over its group only) and a duplicate of it; they reduce on both every step, the
 * last member coming late on even steps.
 * Prints only at the end.
 * Usage: nbc_steps STEPS [SLEEP_MS] */
#include "mpit.h"

int main(int argc, char **argv) {
    mpit_init(&argc, &argv, "nbc_steps");
    int steps = argc > 1 ? atoi(argv[1]) : 100;
    int sleep_ms = argc > 2 ? atoi(argv[2]) : 20;
    int r = mpit_rank, n = mpit_size;
    MPI_Comm dup;
    CHECK_MPI(MPI_Comm_dup(MPI_COMM_WORLD, &dup));
    long long *out = malloc((size_t)n * sizeof(long long)),
              *in = malloc((size_t)n * sizeof(long long));
    MPI_Comm idup = MPI_COMM_NULL, gcomm = MPI_COMM_NULL, gdup = MPI_COMM_NULL;
    unsigned long long state = 4321 + (unsigned long long)r;
    for (int s = 0; s < steps; s++) {
        mpit_step(s, steps);
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        long long v = (long long)(state >> 24), total = 0, b = (r == s % n) ? v : -1;
        for (int i = 0; i < n; i++) {
            out[i] = v + i;
            in[i] = -1;
        }
        MPI_Request q[4];
        q[3] = MPI_REQUEST_NULL;
        MPI_Comm fresh = MPI_COMM_NULL;
        if (s % 2 == 1) CHECK_MPI(MPI_Comm_idup(dup, &fresh, &q[3]));
        CHECK_MPI(MPI_Iallreduce(&v, &total, 1, MPI_LONG_LONG, MPI_SUM, MPI_COMM_WORLD, &q[0]));
        CHECK_MPI(MPI_Ibcast(&b, 1, MPI_LONG_LONG, s % n, MPI_COMM_WORLD, &q[1]));
        CHECK_MPI(MPI_Ialltoall(out, 1, MPI_LONG_LONG, in, 1, MPI_LONG_LONG, dup, &q[2]));
        mpit_sleep_ms(sleep_ms);
        if (s % 2 == 0) {
            CHECK_MPI(MPI_Waitall(4, q, MPI_STATUSES_IGNORE));
        } else {
            for (int k = 0; k < 4; k++) {
                int done = 0;
                while (!done)
                    CHECK_MPI(MPI_Test(&q[k], &done, MPI_STATUS_IGNORE));
            }
        }
        for (int i = 0; i < n; i++)
            CHECK(in[i] != -1);
        CHECK(b != -1);
        if (r == s % n) CHECK(b == v);
        MPI_Request bar;
        CHECK_MPI(MPI_Ibarrier(MPI_COMM_WORLD, &bar));
        CHECK_MPI(MPI_Wait(&bar, MPI_STATUS_IGNORE));
        if (fresh != MPI_COMM_NULL) {
            if (idup != MPI_COMM_NULL) CHECK_MPI(MPI_Comm_free(&idup));
            idup = fresh;
            // Rank 0 uses the new communicator last: the others wait inside their first
            // collective on it, which rank 0's checkpoint must let it reach.
            if (r == 0) mpit_sleep_ms(sleep_ms / 2);
        }
        if (idup != MPI_COMM_NULL) {
            long long sum = 0;
            CHECK_MPI(MPI_Allreduce(&v, &sum, 1, MPI_LONG_LONG, MPI_SUM, idup));
            CHECK(sum == total);
        }
        if (s % 10 == 0 && n > 1) {
            if (gcomm != MPI_COMM_NULL) {
                CHECK_MPI(MPI_Comm_free(&gdup));
                CHECK_MPI(MPI_Comm_free(&gcomm));
            }
            int out = (s / 10) % n;
            if (r != out) {
                MPI_Group all, g;
                CHECK_MPI(MPI_Comm_group(dup, &all));
                CHECK_MPI(MPI_Group_excl(all, 1, &out, &g));
                CHECK_MPI(MPI_Comm_create_group(dup, g, 100 + s, &gcomm));
                CHECK_MPI(MPI_Comm_dup(gcomm, &gdup));
                CHECK_MPI(MPI_Group_free(&g));
                CHECK_MPI(MPI_Group_free(&all));
            }
        }
        if (gcomm != MPI_COMM_NULL) {
            int gr = -1, gn = 0;
            CHECK_MPI(MPI_Comm_rank(gcomm, &gr));
            CHECK_MPI(MPI_Comm_size(gcomm, &gn));
            CHECK(gn == n - 1);
            if (s % 2 == 0 && gr == gn - 1) mpit_sleep_ms(sleep_ms / 2);
            long long gsum = 0, gmax = 0;
            CHECK_MPI(MPI_Allreduce(&v, &gsum, 1, MPI_LONG_LONG, MPI_SUM, gcomm));
            CHECK_MPI(MPI_Allreduce(&v, &gmax, 1, MPI_LONG_LONG, MPI_MAX, gdup));
            CHECK(gmax >= v);
            mpit_mix((unsigned long long)gsum);
            mpit_mix((unsigned long long)gmax);
        }
        mpit_mix((unsigned long long)total);
        mpit_mix((unsigned long long)b);
        for (int i = 0; i < n; i++)
            mpit_mix((unsigned long long)in[i]);
    }
    free(out);
    free(in);
    CHECK_MPI(MPI_Comm_free(&dup));
    if (idup != MPI_COMM_NULL) CHECK_MPI(MPI_Comm_free(&idup));
    if (gcomm != MPI_COMM_NULL) {
        CHECK_MPI(MPI_Comm_free(&gdup));
        CHECK_MPI(MPI_Comm_free(&gcomm));
    }
    printf("rank %d: nbc_steps %d steps checksum %016llx\n", r, steps, mpit_sum);
    return mpit_finish();
}
