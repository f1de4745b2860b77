/* SPDX-License-Identifier: Apache-2.0 */
/* A job that runs long in wall time and little in CPU, for job-level checkpoint tests: STEPS steps
 * of a ring exchange (Sendrecv), a nonblocking exchange the other way (Isend/Irecv/Waitall), an
 * Allreduce and a Bcast from a rotating root, each received value checked, all folded into a
 * per-rank checksum; SLEEP_MS of sleep between steps (outside MPI), and WORK thousand rounds of
 * integer arithmetic (a CPU-bound job whose progress is its steps: the balancer's tests), folded
 * into the checksum too. Prints only at the end, so that a job restarted from a checkpoint prints
 * what an uninterrupted one prints.
 * HOLD_MIB: every rank holds that much memory, each page stamped with its number and a version;
 * rank 1 spends its sleep rewriting random pages (32 a millisecond, each with a new version), so
 * that a live migration's pre-copy of it goes in rounds, and takes and frees a buffer of a few MiB
 * each step (its mappings change between rounds); at the end every rank checks every page against
 * the version it last wrote (a write a migration lost fails the check).
 * Usage: job_steps STEPS [SLEEP_MS [WORK [HOLD_MIB]]] */
#include "mpit.h"

#include <time.h>

#define HOLD_PAGE_WORDS 512 /* 4 KiB */
static unsigned long long *held;
static unsigned *held_version;
static size_t held_pages;

static unsigned long long stamp(size_t page, unsigned version) {
    return (page * 0x9e3779b97f4a7c15ull) ^ ((unsigned long long)version << 32 | version);
}

static void hold_write(size_t page) {
    unsigned v = ++held_version[page];
    unsigned long long *w = held + page * HOLD_PAGE_WORDS;
    w[0] = page, w[1] = v, w[HOLD_PAGE_WORDS - 1] = stamp(page, v);
}

/* Sleeps `ms`, rewriting 32 random pages a millisecond meanwhile. */
static void hold_rewrite_ms(int ms, unsigned long long *rng) {
    struct timespec end, now;
    clock_gettime(CLOCK_MONOTONIC, &end);
    end.tv_nsec += (long)ms * 1000000L;
    end.tv_sec += end.tv_nsec / 1000000000L, end.tv_nsec %= 1000000000L;
    for (;;) {
        for (int i = 0; i < 32; i++) {
            *rng = *rng * 6364136223846793005ull + 1442695040888963407ull;
            hold_write((size_t)(*rng >> 33) % held_pages);
        }
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec > end.tv_sec || (now.tv_sec == end.tv_sec && now.tv_nsec >= end.tv_nsec))
            return;
        mpit_sleep_ms(1);
    }
}

int main(int argc, char **argv) {
    mpit_init(&argc, &argv, "job_steps");
    int steps = argc > 1 ? atoi(argv[1]) : 100;
    int sleep_ms = argc > 2 ? atoi(argv[2]) : 20;
    long work = argc > 3 ? atol(argv[3]) * 1000 : 0;
    long hold_mib = argc > 4 ? atol(argv[4]) : 0;
    int r = mpit_rank, n = mpit_size;
    unsigned long long rng = 777 + (unsigned long long)r;
    if (hold_mib > 0) {
        held_pages = (size_t)hold_mib * 256;
        held = malloc(held_pages * HOLD_PAGE_WORDS * sizeof *held);
        held_version = calloc(held_pages, sizeof *held_version);
        CHECK(held && held_version);
        for (size_t p = 0; p < held_pages; p++)
            hold_write(p);
    }
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
        if (held && r == 1) {
            size_t len = ((size_t)2 << 20) + (size_t)(s % 7) * 4096;
            unsigned char *churn = malloc(len);
            CHECK(churn != NULL);
            memset(churn, s & 0xff, len);
            CHECK(churn[len - 1] == (unsigned char)(s & 0xff));
            free(churn);
            hold_rewrite_ms(sleep_ms, &rng);
        } else
            mpit_sleep_ms(sleep_ms);
    }
    if (held) {
        size_t bad = 0;
        for (size_t p = 0; p < held_pages; p++) {
            const unsigned long long *w = held + p * HOLD_PAGE_WORDS;
            unsigned v = held_version[p];
            bad += w[0] != p || w[1] != v || w[HOLD_PAGE_WORDS - 1] != stamp(p, v);
        }
        if (bad)
            printf("rank %d: %zu of %zu held pages are not as last written\n", r, bad, held_pages);
        CHECK(bad == 0);
    }
    printf("rank %d: job_steps %d steps checksum %016llx\n", r, steps, mpit_sum);
    return mpit_finish();
}
