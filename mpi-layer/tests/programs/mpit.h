/* SPDX-License-Identifier: Apache-2.0 */
/* Tiny self-check helpers for the MPI test corpus. Every program prints deterministic lines only
 * (compared between plain mpirun and ghostrun after sorting) and ends with "rank R: NAME
 * PASS|FAIL". */
#ifndef MPIT_H
#define MPIT_H
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int mpit_rank, mpit_size, mpit_failures;
static int mpit_checks __attribute__((unused));
static const char *mpit_name = "test";
/* Repetitions of a program's whole body (its first argument, default 1): long enough runs for
 * checkpoints at random moments (run_job_random.sh); every repetition checks itself again. */
static int mpit_iters = 1;

#define MPIT_REPEAT                                                                                \
    for (int mpit_iter = 0; mpit_iter < mpit_iters && (mpit_step(mpit_iter, mpit_iters), 1);       \
         mpit_iter++)

/* The program's own working time, from MPI_Init's return to mpit_finish, without the launcher's
 * start-up: with MPIT_WORK_TIME set, rank 0 prints "mpit: work_ms=N" on stderr at the end
 * (run_job_random.sh spreads its checkpoint moments over it). */
static double mpit_t0;
static inline double mpit_now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}
static inline void mpit_started(void) {
    mpit_t0 = mpit_now_ms();
}

/* A harness that acts on a running job (checkpoints it at chosen moments, migrates a rank) follows
 * its progress rather than the clock, which neither an idle nor a loaded machine keeps to: with
 * MPIT_PROGRESS_FILE set, rank 0 writes the index of each step it starts into that file; with
 * MPIT_HOLD_FILE set, every rank waits before the last step, outside MPI, until that file exists,
 * so that the job cannot end under the harness (with rank 0 alone held, the others would wait
 * inside a collective of the last step, which a quiesce cannot run forward). Programs call
 * mpit_step at the start of each step (MPIT_REPEAT does). */
static inline void mpit_step(int i, int total) {
    const char *p = getenv("MPIT_PROGRESS_FILE");
    if (mpit_rank == 0 && p && *p) {
        FILE *f = fopen(p, "w");
        if (f) {
            fprintf(f, "%d\n", i);
            fclose(f);
        }
    }
    const char *hold = getenv("MPIT_HOLD_FILE");
    if (i != total - 1 || !hold || !*hold) return;
    while (access(hold, F_OK) != 0) {
        struct timespec ts = {0, 10 * 1000000L};
        while (nanosleep(&ts, &ts) != 0) {
        }
    }
}

/* Step programs (job_steps.c and its kin): a checksum of everything a rank received (FNV-1a
 * over 64-bit words), and a sleep outside MPI between steps. */
static unsigned long long mpit_sum __attribute__((unused)) = 1469598103934665603ull;
static inline void mpit_mix(unsigned long long v) {
    mpit_sum = (mpit_sum ^ v) * 1099511628211ull;
}
static inline void mpit_sleep_ms(int ms) {
    if (ms <= 0) return;
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        mpit_checks++;                                                                             \
        if (!(cond)) {                                                                             \
            mpit_failures++;                                                                       \
            printf("rank %d: %s FAIL %s:%d %s\n", mpit_rank, mpit_name, __FILE__, __LINE__,        \
                   #cond);                                                                         \
        }                                                                                          \
    } while (0)

#define CHECK_MPI(call) CHECK((call) == MPI_SUCCESS)

static inline void mpit_init(int *argc, char ***argv, const char *name) {
    mpit_name = name;
    MPI_Init(argc, argv);
    mpit_started();
    MPI_Comm_rank(MPI_COMM_WORLD, &mpit_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &mpit_size);
    if (*argc > 1 && atoi((*argv)[1]) > 0) mpit_iters = atoi((*argv)[1]);
}

static inline int mpit_finish(void) {
    int all = 0;
    /* What this rank printed leaves before any rank prints its verdict: the launcher forwards
     * each rank's output in the chunks stdio writes (4096 bytes, ending mid-line), so another
     * rank's verdict written between two of them splits a line (seen with MPICH's Hydra). */
    fflush(stdout);
    MPI_Allreduce(&mpit_failures, &all, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    printf("rank %d: %s %s\n", mpit_rank, mpit_name, all == 0 ? "PASS" : "FAIL");
    fflush(stdout);
    if (mpit_rank == 0 && mpit_t0 > 0 && getenv("MPIT_WORK_TIME"))
        fprintf(stderr, "mpit: work_ms=%.0f\n", mpit_now_ms() - mpit_t0);
    MPI_Finalize();
    return all == 0 ? 0 : 1;
}
#endif
