/* SPDX-License-Identifier: Apache-2.0 */
/* A job that runs long in wall time and little in CPU, for job-level checkpoint tests: STEPS steps
 * of a ring exchange (Sendrecv), a nonblocking exchange the other way (Isend/Irecv/Waitall), an
 * Allreduce and a Bcast from a rotating root, each received value checked, all folded into a
 * per-rank checksum; SLEEP_MS of sleep between steps (outside MPI), and WORK thousand rounds of
 * integer arithmetic (a CPU-bound job whose progress is its steps: the balancer's tests), folded
 * into the checksum too. Prints only at the end, so that a job restarted from a checkpoint prints
 * what an uninterrupted one prints.
 * Usage: job_steps STEPS [SLEEP_MS [WORK]] */
#include "mpit.h"

int main(int argc, char **argv) {
    mpit_init(&argc, &argv, "job_steps");
    int steps = argc > 1 ? atoi(argv[1]) : 100;
    int sleep_ms = argc > 2 ? atoi(argv[2]) : 20;
    long work = argc > 3 ? atol(argv[3]) * 1000 : 0;
    int r = mpit_rank, n = mpit_size;
    int right = (r + 1) % n, left = (r + n - 1) % n;
    unsigned long long state = 12345 + (unsigned long long)r;
    MPI_Comm parent = MPI_COMM_WORLD; /* mpirun started the job: no parent (mpi4py asks) */
    CHECK(MPI_Comm_get_parent(&parent) == MPI_SUCCESS && parent == MPI_COMM_NULL);
    for (int s = 0; s < steps; s++) {
        mpit_step(s, steps);
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        long long out = (long long)(state >> 20), in = -1, back = -1;
        /* what the left neighbour sends: its own state, recomputed here to check it */
        MPI_Sendrecv(&out, 1, MPI_LONG_LONG, right, s, &in, 1, MPI_LONG_LONG, left, s,
                     MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        MPI_Request q[2];
        MPI_Irecv(&back, 1, MPI_LONG_LONG, right, 1000000 + s, MPI_COMM_WORLD, &q[0]);
        MPI_Isend(&in, 1, MPI_LONG_LONG, left, 1000000 + s, MPI_COMM_WORLD, &q[1]);
        MPI_Waitall(2, q, MPI_STATUSES_IGNORE);
        CHECK(back == out); /* the right neighbour returned what this rank sent it */
        long long total = 0;
        MPI_Allreduce(&out, &total, 1, MPI_LONG_LONG, MPI_SUM, MPI_COMM_WORLD);
        long long root_val = out;
        MPI_Bcast(&root_val, 1, MPI_LONG_LONG, s % n, MPI_COMM_WORLD);
        if (r == s % n) CHECK(root_val == out);
        mpit_mix((unsigned long long)in);
        mpit_mix((unsigned long long)total);
        mpit_mix((unsigned long long)root_val);
        if (work > 0) {
            unsigned long long x = state;
            for (long i = 0; i < work; i++)
                x = x * 2862933555777941757ull + 3037000493ull + (x >> 29);
            mpit_mix(x);
        }
        mpit_sleep_ms(sleep_ms);
    }
    printf("rank %d: job_steps %d steps checksum %016llx\n", r, steps, mpit_sum);
    return mpit_finish();
}
