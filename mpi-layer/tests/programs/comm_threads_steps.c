/* SPDX-License-Identifier: Apache-2.0 */
/* Communicators made concurrently by several threads (MPI_THREAD_MULTIPLE), for job-level
 * checkpoint tests: in each of STEPS steps, THREADS threads each take their own communicator's
 * group, duplicate the communicator, split the duplicate in two, make a communicator of the
 * group over the duplicate (MPI_Comm_create, and under Open MPI MPI_Comm_create_group), reduce
 * over them and free them, a few times. The
 * threads run at once, so the ranks make these communicators in different orders (as MPICH's
 * threads/comm tests do): a checkpoint holds live ones made in different orders, and a restart
 * that replayed each rank's own order would wait for ever. The threads' communicators duplicate
 * one, so an MPI may hand one group object to every thread, counting each hand-out, which each
 * thread frees. Every reduced value is checked and folded into the checksum; SLEEP_MS of sleep
 * between steps (outside MPI). Prints only at the end.
 * Usage: comm_threads_steps STEPS [SLEEP_MS [THREADS]] */
#include <pthread.h>

#include "mpit.h"

enum { kMaxThreads = 8, kRounds = 4 };

struct worker {
    MPI_Comm comm; /* this thread's own duplicate of MPI_COMM_WORLD */
    int index, step;
    unsigned long long sum; /* of what it received this step */
    int failures;
};

static void *work(void *arg) {
    struct worker *w = arg;
    int r = mpit_rank, n = mpit_size;
    for (int k = 0; k < kRounds; k++) {
        MPI_Comm dup, half, all_of;
        MPI_Group group;
        if (MPI_Comm_group(w->comm, &group) != MPI_SUCCESS ||
            MPI_Comm_dup(w->comm, &dup) != MPI_SUCCESS ||
            MPI_Comm_split(dup, r % 2, n - r, &half) != MPI_SUCCESS) {
            w->failures++;
            return NULL;
        }
        if (MPI_Comm_create(dup, group, &all_of) != MPI_SUCCESS) {
            w->failures++;
            return NULL;
        }
#if defined(OPEN_MPI)
        /* And MPI_Comm_create_group (collective over its group only: a checkpoint may find a
         * thread inside it whose peer on the other rank is parked before it). Not under MPICH
         * 4.0.2, which crashes natively when threads make them at once. */
        MPI_Comm of_group;
        if (MPI_Comm_create_group(dup, group, 7 + k, &of_group) != MPI_SUCCESS) {
            w->failures++;
            return NULL;
        }
#endif
        long long mine = (long long)r * 1000003 + w->index * 101 + w->step * 7 + k, all = 0;
        MPI_Allreduce(&mine, &all, 1, MPI_LONG_LONG, MPI_SUM, dup);
        long long want = 0;
        for (int i = 0; i < n; i++)
            want += (long long)i * 1000003 + w->index * 101 + w->step * 7 + k;
        if (all != want) w->failures++;
        long long part = 0, want_part = 0;
        MPI_Allreduce(&mine, &part, 1, MPI_LONG_LONG, MPI_SUM, half);
        for (int i = r % 2; i < n; i += 2)
            want_part += (long long)i * 1000003 + w->index * 101 + w->step * 7 + k;
        if (part != want_part) w->failures++;
        long long again = 0;
        MPI_Allreduce(&mine, &again, 1, MPI_LONG_LONG, MPI_SUM, all_of);
        int same = MPI_UNEQUAL;
        MPI_Comm_compare(all_of, dup, &same);
        if (same != MPI_CONGRUENT || again != want) w->failures++;
#if defined(OPEN_MPI)
        long long grouped = 0;
        MPI_Allreduce(&mine, &grouped, 1, MPI_LONG_LONG, MPI_SUM, of_group);
        if (grouped != want) w->failures++;
        w->sum = w->sum * 1099511628211ull + (unsigned long long)grouped;
        MPI_Comm_free(&of_group);
#endif
        w->sum = w->sum * 1099511628211ull + (unsigned long long)all;
        w->sum = w->sum * 1099511628211ull + (unsigned long long)part;
        MPI_Comm_free(&all_of);
        MPI_Comm_free(&half);
        MPI_Comm_free(&dup);
        MPI_Group_free(&group);
    }
    return NULL;
}

int main(int argc, char **argv) {
    mpit_name = "comm_threads_steps";
    int provided = 0;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
    mpit_started();
    MPI_Comm_rank(MPI_COMM_WORLD, &mpit_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &mpit_size);
    CHECK(provided == MPI_THREAD_MULTIPLE);
    int steps = argc > 1 ? atoi(argv[1]) : 100;
    int sleep_ms = argc > 2 ? atoi(argv[2]) : 20;
    int threads = argc > 3 ? atoi(argv[3]) : 4;
    if (threads < 1 || threads > kMaxThreads) threads = 4;
    struct worker w[kMaxThreads];
    for (int t = 0; t < threads; t++) {
        w[t].index = t;
        CHECK_MPI(MPI_Comm_dup(MPI_COMM_WORLD, &w[t].comm));
    }
    for (int s = 0; s < steps; s++) {
        mpit_step(s, steps);
        pthread_t th[kMaxThreads];
        for (int t = 0; t < threads; t++) {
            w[t].step = s;
            w[t].sum = 0;
            w[t].failures = 0;
            CHECK(pthread_create(&th[t], NULL, work, &w[t]) == 0);
        }
        for (int t = 0; t < threads; t++) {
            pthread_join(th[t], NULL);
            CHECK(w[t].failures == 0);
            mpit_mix(w[t].sum);
        }
        mpit_sleep_ms(sleep_ms);
    }
    for (int t = 0; t < threads; t++)
        CHECK_MPI(MPI_Comm_free(&w[t].comm));
    printf("rank %d: comm_threads_steps %d steps checksum %016llx\n", mpit_rank, steps, mpit_sum);
    return mpit_finish();
}
