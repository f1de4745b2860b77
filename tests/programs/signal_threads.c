// SPDX-License-Identifier: Apache-2.0
// Threads that block every signal, as real programs have them, carried by checkpoints:
//  * a dedicated signal thread: every thread blocks SIGUSR1 (the mask is set before any thread is
//    made) and one thread blocks every signal and takes SIGUSR1 with sigwaitinfo; the main thread
//    sends one per step and waits until it was taken (each exactly once, its value in order);
//  * a POSIX timer that runs a function in a thread (SIGEV_THREAD): glibc's helper thread, which
//    blocks every signal, starts a thread per expiry; the count must keep growing;
//  * what glibc does with its own signals (32, 33): every step a thread blocked in a cancellation
//    point is cancelled (its cleanup handler runs) and the process sets its effective gid (glibc
//    makes every thread take it, with a signal).
#include "common.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>

static atomic_long g_taken, g_ticks;
static atomic_int g_bad;

static void *signal_thread(void *arg) {
    (void)arg;
    sigset_t all, usr1;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    for (;;) {
        siginfo_t si;
        int sig = sigwaitinfo(&usr1, &si);
        if (sig < 0 && errno == EINTR) continue; // glibc's set*id signal ran here
        if (sig < 0) t_fail("sigwaitinfo: %s", strerror(errno));
        if (si.si_value.sival_int == -1) return NULL;
        if (si.si_value.sival_int != (int)atomic_load(&g_taken)) atomic_store(&g_bad, 1);
        atomic_fetch_add(&g_taken, 1);
    }
}

static atomic_long g_cleaned;

static void cleanup(void *arg) {
    (void)arg;
    atomic_fetch_add(&g_cleaned, 1);
}

static void *cancelled_thread(void *arg) {
    (void)arg;
    pthread_cleanup_push(cleanup, NULL);
    for (;;)
        pause(); // a cancellation point
    pthread_cleanup_pop(0);
    return NULL;
}

static void on_tick(union sigval v) {
    if (v.sival_int != 77) atomic_store(&g_bad, 2);
    atomic_fetch_add(&g_ticks, 1);
}

int main(int argc, char **argv) {
    t_init("signal_threads");
    static const char *const known[] = {"--steps", NULL};
    t_check_args(argc, argv, known, "[--steps N]");
    long steps = (long)t_opt_u64(argc, argv, "--steps", 400);
    sigset_t usr1;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &usr1, NULL);
    pthread_t th;
    if (pthread_create(&th, NULL, signal_thread, NULL) != 0) t_fail("pthread_create");
    struct sigevent ev = {0};
    ev.sigev_notify = SIGEV_THREAD;
    ev.sigev_notify_function = on_tick;
    ev.sigev_value.sival_int = 77;
    timer_t timer;
    if (timer_create(CLOCK_MONOTONIC, &ev, &timer) != 0)
        t_fail("timer_create: %s", strerror(errno));
    struct itimerspec its = {{0, 5000000}, {0, 5000000}};
    if (timer_settime(timer, 0, &its, NULL) != 0) t_fail("timer_settime: %s", strerror(errno));
    long last_ticks = 0;
    for (long s = 0; s < steps; s++) {
        union sigval v = {.sival_int = (int)s};
        if (sigqueue(getpid(), SIGUSR1, v) != 0) t_fail("sigqueue: %s", strerror(errno));
        for (int i = 0; atomic_load(&g_taken) != s + 1; i++) {
            if (i > 20000) t_fail("step %ld: the signal thread did not take its signal", s);
            t_sleep_ns(1000000);
        }
        if (atomic_load(&g_bad)) t_fail("step %ld: a signal or tick came wrong (%d)", s, g_bad);
        pthread_t victim;
        void *res = NULL;
        if (pthread_create(&victim, NULL, cancelled_thread, NULL) != 0) t_fail("pthread_create");
        t_sleep_ns(2000000);
        if (pthread_cancel(victim) != 0 || pthread_join(victim, &res) != 0 ||
            res != PTHREAD_CANCELED || atomic_load(&g_cleaned) != s + 1)
            t_fail("step %ld: thread cancellation went wrong", s);
        if (setegid(getegid()) != 0) t_fail("setegid: %s", strerror(errno));
        t_sleep_ns(8000000);
        if (s % 50 == 49) {
            long t = atomic_load(&g_ticks);
            if (t - last_ticks < 5)
                t_fail("step %ld: the thread timer stopped (%ld)", s, t - last_ticks);
            last_ticks = t;
            t_line("step %ld: signals taken in order, timer running", s + 1);
        }
    }
    timer_delete(timer);
    union sigval end = {.sival_int = -1};
    sigqueue(getpid(), SIGUSR1, end);
    pthread_join(th, NULL);
    t_line("taken %ld", (long)atomic_load(&g_taken));
    return t_pass();
}
