// SPDX-License-Identifier: Apache-2.0
// Kernel-held state a program sets and reads back, checked every step:
//  * POSIX timers: a periodic one signalling the process with a sigev_value, a periodic one
//    signalling one thread (SIGEV_THREAD_ID), an unarmed one, and one armed far in the future
//    (its ids must stay valid, their values and intervals right, and the periodic ones must keep
//    firing);
//  * ITIMER_VIRTUAL and ITIMER_PROF (armed with long periods: still armed, intervals kept);
//  * resource limits lowered by the program (RLIMIT_NOFILE, RLIMIT_CORE, RLIMIT_NPROC soft);
//  * oom_score_adj, a thread's nice value and CPU affinity, a membarrier registration;
//  * the personality (ADDR_NO_RANDOMIZE), the main thread's timer slack and keep-capabilities
//    flag, the process made undumpable and a child subreaper, an mlock()ed buffer.
#define _GNU_SOURCE
#include "common.h"

#include <dirent.h>
#include <linux/membarrier.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/time.h>

static timer_t g_proc_timer, g_thread_timer, g_idle_timer, g_far_timer;
static volatile uint64_t g_proc_ticks, g_thread_ticks;
static volatile int g_bad_value;
static volatile int g_stop;
static volatile pid_t g_worker_tid;
static __thread int t_is_worker; // (a duplicate's threads have other tids)

static void on_proc_timer(int sig, siginfo_t *si, void *uc) {
    (void)sig, (void)uc;
    if (si->si_code != SI_TIMER || si->si_value.sival_int != 4242) g_bad_value = 1;
    g_proc_ticks++;
}

static void on_thread_timer(int sig, siginfo_t *si, void *uc) {
    (void)sig, (void)uc;
    if (si->si_code != SI_TIMER || si->si_value.sival_int != 77 || !t_is_worker) g_bad_value = 2;
    g_thread_ticks++;
}

static void *worker(void *arg) {
    (void)arg;
    t_is_worker = 1;
    g_worker_tid = gettid();
    if (setpriority(PRIO_PROCESS, 0, 7) != 0) t_fail("setpriority: %s", strerror(errno));
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(0, &one);
    if (sched_setaffinity(0, sizeof one, &one) != 0)
        t_fail("sched_setaffinity: %s", strerror(errno));
    while (!g_stop) {
        if (getpriority(PRIO_PROCESS, 0) != 7) t_fail("the worker's nice value changed");
        cpu_set_t now;
        if (sched_getaffinity(0, sizeof now, &now) != 0 || CPU_COUNT(&now) != 1 ||
            !CPU_ISSET(0, &now))
            t_fail("the worker's CPU affinity changed");
        t_sleep_ns(2000000);
    }
    return NULL;
}

// What a failure shows about the timers (stderr): the kernel's view of them, and each thread's
// pending and blocked signals (a stopped periodic timer has its signal pending somewhere).
static void dump_timer_state(void) {
    char buf[8192];
    FILE *f = fopen("/proc/self/timers", "r");
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    if (f) fclose(f);
    buf[n] = 0;
    fprintf(stderr, "timers_sched: /proc/self/timers:\n%s", buf);
    struct itimerspec its;
    timer_gettime(g_thread_timer, &its);
    fprintf(stderr, "timers_sched: thread timer: value %ld.%09ld interval %ld.%09ld overrun %d\n",
            (long)its.it_value.tv_sec, its.it_value.tv_nsec, (long)its.it_interval.tv_sec,
            its.it_interval.tv_nsec, timer_getoverrun(g_thread_timer));
    DIR *d = opendir("/proc/self/task");
    for (struct dirent *e; d && (e = readdir(d));) {
        if (e->d_name[0] == '.') continue;
        char path[300], line[256];
        snprintf(path, sizeof path, "/proc/self/task/%s/status", e->d_name);
        FILE *st = fopen(path, "r");
        while (st && fgets(line, sizeof line, st))
            if (!strncmp(line, "SigPnd:", 7) || !strncmp(line, "ShdPnd:", 7) ||
                !strncmp(line, "SigBlk:", 7) || !strncmp(line, "State:", 6))
                fprintf(stderr, "timers_sched: task %s%s %s", e->d_name,
                        atoi(e->d_name) == g_worker_tid ? " (worker)" : "", line);
        if (st) fclose(st);
        // Where it waits: "NR ARGS... SP PC" (a thread stuck in a system call), or "running".
        snprintf(path, sizeof path, "/proc/self/task/%s/syscall", e->d_name);
        st = fopen(path, "r");
        if (st && fgets(line, sizeof line, st))
            fprintf(stderr, "timers_sched: task %s syscall %s", e->d_name, line);
        if (st) fclose(st);
    }
    if (d) closedir(d);
}

static void check_rlimit(int res, rlim_t soft, const char *name) {
    struct rlimit r;
    if (getrlimit(res, &r) != 0 || r.rlim_cur != soft) t_fail("%s soft limit changed", name);
}

static void check(uint64_t step) {
    struct itimerspec its;
    if (timer_gettime(g_proc_timer, &its) != 0 || its.it_interval.tv_nsec != 3000000)
        t_fail("step %" PRIu64 ": process timer lost (%s)", step, strerror(errno));
    if (timer_gettime(g_thread_timer, &its) != 0 || its.it_interval.tv_nsec != 5000000)
        t_fail("step %" PRIu64 ": thread timer lost", step);
    if (timer_gettime(g_idle_timer, &its) != 0 || its.it_value.tv_sec || its.it_value.tv_nsec)
        t_fail("step %" PRIu64 ": the unarmed timer changed", step);
    if (timer_gettime(g_far_timer, &its) != 0 || its.it_value.tv_sec < 1000 ||
        its.it_value.tv_sec > 3600 || its.it_interval.tv_sec != 7)
        t_fail("step %" PRIu64 ": the far timer changed (%ld s left)", step,
               (long)its.it_value.tv_sec);
    struct itimerval iv;
    if (getitimer(ITIMER_VIRTUAL, &iv) != 0 || iv.it_interval.tv_sec != 500 ||
        (!iv.it_value.tv_sec && !iv.it_value.tv_usec))
        t_fail("step %" PRIu64 ": ITIMER_VIRTUAL lost", step);
    if (getitimer(ITIMER_PROF, &iv) != 0 || iv.it_interval.tv_sec != 600 ||
        (!iv.it_value.tv_sec && !iv.it_value.tv_usec))
        t_fail("step %" PRIu64 ": ITIMER_PROF lost", step);
    check_rlimit(RLIMIT_NOFILE, 200, "RLIMIT_NOFILE");
    check_rlimit(RLIMIT_CORE, 0, "RLIMIT_CORE");
    FILE *f = fopen("/proc/self/oom_score_adj", "r");
    int adj = 0;
    if (!f || fscanf(f, "%d", &adj) != 1 || adj != 345) t_fail("oom_score_adj changed to %d", adj);
    fclose(f);
    long regs = syscall(SYS_membarrier, 1 << 9 /* GET_REGISTRATIONS */, 0, 0);
    if (regs >= 0 && !(regs & MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED))
        t_fail("membarrier registration lost");
    if (g_bad_value) t_fail("a timer signal carried the wrong value or thread (%d)", g_bad_value);
    if (!(personality(0xffffffff) & ADDR_NO_RANDOMIZE)) t_fail("the personality changed");
    int subreaper = 0;
    prctl(PR_GET_CHILD_SUBREAPER, &subreaper, 0, 0, 0);
    if (prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0) != 123456 || prctl(PR_GET_KEEPCAPS, 0, 0, 0, 0) != 1 ||
        prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) != 0 || subreaper != 1)
        t_fail("step %" PRIu64 ": a prctl setting changed (slack %d keepcaps %d dumpable %d "
               "subreaper %d)",
               step, prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0), prctl(PR_GET_KEEPCAPS, 0, 0, 0, 0),
               prctl(PR_GET_DUMPABLE, 0, 0, 0, 0), subreaper);
    char status[4096];
    f = fopen("/proc/self/status", "r");
    size_t n = f ? fread(status, 1, sizeof status - 1, f) : 0;
    if (f) fclose(f);
    status[n] = 0;
    const char *lck = strstr(status, "VmLck:");
    if (!lck || atol(lck + 6) < 64) t_fail("step %" PRIu64 ": the locked memory is gone", step);
}

int main(int argc, char **argv) {
    t_init("timers_sched");
    static const char *const known[] = {"--steps", NULL};
    t_check_args(argc, argv, known, "[--steps N]");
    uint64_t steps = t_opt_u64(argc, argv, "--steps", 300);

    struct sigaction sa = {0};
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sa.sa_sigaction = on_proc_timer;
    sigaction(SIGRTMIN + 1, &sa, NULL);
    sa.sa_sigaction = on_thread_timer;
    sigaction(SIGRTMIN + 2, &sa, NULL);
    // Only the worker takes the thread timer's signal; the main thread blocks it.
    pthread_t w;
    if (pthread_create(&w, NULL, worker, NULL) != 0) t_fail("pthread_create");
    while (!g_worker_tid)
        t_sleep_ns(1000000);
    sigset_t block;
    sigemptyset(&block);
    sigaddset(&block, SIGRTMIN + 2);
    pthread_sigmask(SIG_BLOCK, &block, NULL);

    struct sigevent ev = {0};
    ev.sigev_notify = SIGEV_SIGNAL;
    ev.sigev_signo = SIGRTMIN + 1;
    ev.sigev_value.sival_int = 4242;
    if (timer_create(CLOCK_MONOTONIC, &ev, &g_proc_timer) != 0) t_fail("timer_create");
    ev.sigev_notify = SIGEV_THREAD_ID;
    ev.sigev_signo = SIGRTMIN + 2;
    ev.sigev_value.sival_int = 77;
    ev._sigev_un._tid = g_worker_tid;
    if (timer_create(CLOCK_MONOTONIC, &ev, &g_thread_timer) != 0) t_fail("timer_create thread");
    ev.sigev_notify = SIGEV_NONE;
    if (timer_create(CLOCK_REALTIME, &ev, &g_idle_timer) != 0) t_fail("timer_create idle");
    if (timer_create(CLOCK_MONOTONIC, &ev, &g_far_timer) != 0) t_fail("timer_create far");
    struct itimerspec its = {{0, 3000000}, {0, 3000000}};
    timer_settime(g_proc_timer, 0, &its, NULL);
    its = (struct itimerspec){{0, 5000000}, {0, 5000000}};
    timer_settime(g_thread_timer, 0, &its, NULL);
    its = (struct itimerspec){{7, 0}, {3000, 0}};
    timer_settime(g_far_timer, 0, &its, NULL);
    struct itimerval iv = {{500, 0}, {500, 0}};
    setitimer(ITIMER_VIRTUAL, &iv, NULL);
    iv = (struct itimerval){{600, 0}, {600, 0}};
    setitimer(ITIMER_PROF, &iv, NULL);
    struct rlimit r = {200, 4096};
    if (setrlimit(RLIMIT_NOFILE, &r) != 0) t_fail("setrlimit NOFILE");
    r = (struct rlimit){0, 0};
    if (setrlimit(RLIMIT_CORE, &r) != 0) t_fail("setrlimit CORE");
    FILE *f = fopen("/proc/self/oom_score_adj", "w");
    if (!f || fprintf(f, "345\n") < 0 || fclose(f) != 0) t_fail("cannot set oom_score_adj");
    syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0);
    if (personality(ADDR_NO_RANDOMIZE) < 0) t_fail("personality");
    if (prctl(PR_SET_TIMERSLACK, 123456, 0, 0, 0) || prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) ||
        prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) || prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0))
        t_fail("prctl: %s", strerror(errno));
    static char pinned[64 << 10] __attribute__((aligned(4096)));
    if (mlock(pinned, sizeof pinned) != 0) t_fail("mlock: %s", strerror(errno));

    uint64_t last_proc = 0, last_thread = 0;
    for (uint64_t s = 0; s < steps; s++) {
        check(s);
        t_sleep_ns(10000000);
        if (s % 50 == 49) {
            // The periodic timers keep firing (at least a few times in 50 steps of 10 ms).
            if (g_proc_ticks - last_proc < 5 || g_thread_ticks - last_thread < 5) {
                dump_timer_state();
                t_fail("step %" PRIu64 ": the periodic timers stopped (%" PRIu64 ", %" PRIu64 ")",
                       s, g_proc_ticks - last_proc, g_thread_ticks - last_thread);
            }
            last_proc = g_proc_ticks, last_thread = g_thread_ticks;
            t_line("step %" PRIu64 " checked", s + 1);
        }
    }
    g_stop = 1;
    pthread_join(w, NULL);
    check(steps);
    return t_pass();
}
