// SPDX-License-Identifier: Apache-2.0
// Threads that spend their lives in the blocking calls the kernel ends with EINTR whenever any
// signal handler runs (SA_RESTART or not): nanosleep with and without rem, relative and absolute
// clock_nanosleep, poll, ppoll, select, pselect, sem_timedwait (a futex wait with a timeout) and
// sigtimedwait. None of them is ever sent a signal of the program's, so an EINTR can only come
// from outside: this program treats it as a failure. A checkpoint, a restart or a duplicate must
// not show through.
#include "common.h"

#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <sys/select.h>

static uint64_t g_rounds, g_us;

static void rel_timespec(struct timespec *ts, uint64_t us) {
    ts->tv_sec = (time_t)(us / 1000000);
    ts->tv_nsec = (long)(us % 1000000) * 1000;
}

static void abs_timespec(clockid_t clock, struct timespec *ts, uint64_t us) {
    clock_gettime(clock, ts);
    ts->tv_nsec += (long)(us % 1000000) * 1000;
    ts->tv_sec += (time_t)(us / 1000000) + ts->tv_nsec / 1000000000;
    ts->tv_nsec %= 1000000000;
}

enum kind {
    k_nanosleep,
    k_nanosleep_rem,
    k_clock_rel,
    k_clock_abs,
    k_poll,
    k_ppoll,
    k_select,
    k_pselect,
    k_sem_timedwait,
    k_sigtimedwait,
    k_count
};
static const char *const names[k_count] = {
    "nanosleep", "nanosleep_rem", "clock_nanosleep_rel", "clock_nanosleep_abs", "poll", "ppoll",
    "select",    "pselect",       "sem_timedwait",       "sigtimedwait"};

static sem_t g_never_posted;

static void one_wait(enum kind k) {
    struct timespec ts, rem;
    int rc;
    switch (k) {
    case k_nanosleep:
        rel_timespec(&ts, g_us);
        if (nanosleep(&ts, NULL) != 0) t_fail("nanosleep: %s", strerror(errno));
        break;
    case k_nanosleep_rem:
        rel_timespec(&ts, g_us);
        if (nanosleep(&ts, &rem) != 0) t_fail("nanosleep (rem): %s", strerror(errno));
        break;
    case k_clock_rel:
        rel_timespec(&ts, g_us);
        if ((rc = clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, NULL)) != 0)
            t_fail("clock_nanosleep: %s", strerror(rc));
        break;
    case k_clock_abs:
        abs_timespec(CLOCK_MONOTONIC, &ts, g_us);
        if ((rc = clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL)) != 0)
            t_fail("clock_nanosleep (absolute): %s", strerror(rc));
        break;
    case k_poll:
        if ((rc = poll(NULL, 0, (int)(g_us / 1000))) != 0)
            t_fail("poll returned %d: %s", rc, strerror(errno));
        break;
    case k_ppoll:
        rel_timespec(&ts, g_us);
        if ((rc = ppoll(NULL, 0, &ts, NULL)) != 0)
            t_fail("ppoll returned %d: %s", rc, strerror(errno));
        break;
    case k_select: {
        struct timeval tv = {(time_t)(g_us / 1000000), (suseconds_t)(g_us % 1000000)};
        if ((rc = select(0, NULL, NULL, NULL, &tv)) != 0)
            t_fail("select returned %d: %s", rc, strerror(errno));
        break;
    }
    case k_pselect:
        rel_timespec(&ts, g_us);
        if ((rc = pselect(0, NULL, NULL, NULL, &ts, NULL)) != 0)
            t_fail("pselect returned %d: %s", rc, strerror(errno));
        break;
    case k_sem_timedwait:
        abs_timespec(CLOCK_REALTIME, &ts, g_us);
        if (sem_timedwait(&g_never_posted, &ts) == 0 || errno != ETIMEDOUT)
            t_fail("sem_timedwait: %s", strerror(errno));
        break;
    case k_sigtimedwait: {
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGUSR1); // blocked in every thread, never sent
        rel_timespec(&ts, g_us);
        if (sigtimedwait(&set, NULL, &ts) >= 0 || errno != EAGAIN)
            t_fail("sigtimedwait: %s", strerror(errno));
        break;
    }
    default:
        t_fail("bad kind");
    }
}

static uint64_t g_done[k_count];

static void *waiter(void *arg) {
    enum kind k = (enum kind)(intptr_t)arg;
    for (uint64_t r = 0; r < g_rounds; r++) {
        one_wait(k);
        __atomic_store_n(&g_done[k], r + 1, __ATOMIC_RELEASE);
    }
    return NULL;
}

int main(int argc, char **argv) {
    t_init("timed_waits");
    static const char *const known[] = {"--rounds", "--us", NULL};
    t_check_args(argc, argv, known, "[--rounds N] [--us MICROSECONDS]");
    g_rounds = t_opt_u64(argc, argv, "--rounds", 400);
    g_us = t_opt_u64(argc, argv, "--us", 10000);
    if (g_us < 1000) t_usage("--us must be at least 1000");
    sigset_t usr1;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &usr1, NULL); // inherited by every waiter
    sem_init(&g_never_posted, 0, 0);
    pthread_t t[k_count];
    for (int k = 0; k < k_count; k++)
        if (pthread_create(&t[k], NULL, waiter, (void *)(intptr_t)k) != 0)
            t_fail("pthread_create failed");
    // Progress lines at fixed points of the nanosleep waiter's count, the others checked at the
    // end.
    for (uint64_t step = 1; step <= 10; step++) {
        uint64_t want = g_rounds * step / 10;
        while (__atomic_load_n(&g_done[k_nanosleep], __ATOMIC_ACQUIRE) < want)
            t_sleep_ns(2000000);
        t_line("progress %" PRIu64 "/10", step);
    }
    for (int k = 0; k < k_count; k++) {
        pthread_join(t[k], NULL);
        t_line("%s: %" PRIu64 " waits, no EINTR", names[k], g_done[k]);
    }
    return t_pass();
}
