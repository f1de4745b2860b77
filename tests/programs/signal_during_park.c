// SPDX-License-Identifier: Apache-2.0
// A signal of the program's that comes while a checkpoint has its thread parked must end the
// blocking call it came for, as it would have without the checkpoint. In each step the main
// thread blocks in one call that only a signal ends: read() of an empty pipe (its SIGALRM handler
// has no SA_RESTART), pause(), sigsuspend(), and nanosleep(), poll() and clock_nanosleep() with
// long timeouts. A helper thread watches it (/proc/self/syscall) and, once it is
// blocked in that step's call, sends it one SIGALRM (tgkill): natively the call then always ends
// with EINTR, after the handler ran once. Under ghost a checkpoint parks both threads at any
// point: the signal may be pending when the park signal overtakes it, or come during the park.
// The call must still end with EINTR, not be issued again to wait for a signal that already came
// (read, pause and sigsuspend would wait for ever, the sleeps their whole timeout). The helper
// also fails the program when a step takes more than a few seconds of run time. ghost's own
// checkpoint signal (SIGUSR2, which the harness sends once) is no event of the program's either:
// taken by the main thread (the kernel's first choice), it must not end the call.
#include "common.h"

#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>

static volatile uint64_t g_step, g_alarms;
static volatile pid_t g_main_tid;
static int g_pipe[2];

static void on_alarm(int sig) {
    (void)sig;
    g_alarms++;
}

static const char *const g_kinds[] = {"read",      "pause", "sigsuspend",
                                      "nanosleep", "poll",  "clock_nanosleep"};
// The call each kind's glibc function makes (and the other one it may make instead).
static const long g_numbers[][2] = {{SYS_read, SYS_read},
                                    {SYS_pause, SYS_ppoll},
                                    {SYS_rt_sigsuspend, SYS_rt_sigsuspend},
                                    {SYS_nanosleep, SYS_clock_nanosleep},
                                    {SYS_poll, SYS_ppoll},
                                    {SYS_clock_nanosleep, SYS_clock_nanosleep}};
enum { n_kinds = sizeof g_kinds / sizeof g_kinds[0] };

// The system call the main thread is blocked in (-1: running, or unknown). /proc/self/syscall is
// the thread group leader's: a /proc file of the process itself, which a checkpoint carries (one
// of another thread would be refused).
static long main_blocked_in(void) {
    char buf[256];
    FILE *f = fopen("/proc/self/syscall", "r");
    if (!f) return -1;
    long nr = -1;
    if (!fgets(buf, sizeof buf, f) || sscanf(buf, "%ld", &nr) != 1) nr = -1;
    fclose(f);
    return nr;
}

// Run time, not wall time: parks, checkpoints and the time between a kill and a restart do not
// count (its sleeps resume for what is left of them).
static void *helper(void *arg) {
    uint64_t steps = (uint64_t)(uintptr_t)arg, signalled = UINT64_MAX, seen = 0, still = 0;
    sigset_t park;
    sigemptyset(&park);
    sigaddset(&park, SIGRTMAX - 1);
    for (;;) {
        uint64_t s = g_step;
        if (s >= steps) return NULL;
        // Looking and signalling as one step for a park (ghost parks threads with SIGRTMAX-1):
        // parked in between, this thread would send its signal as the threads resume, when the
        // main thread, in its call when looked at, may be between its park and the call again.
        // No thread of the program can see that window natively, as none can see a park.
        pthread_sigmask(SIG_BLOCK, &park, NULL);
        long nr = s == signalled ? -1 : main_blocked_in();
        if ((nr == g_numbers[s % n_kinds][0] || nr == g_numbers[s % n_kinds][1]) && g_step == s) {
            if (syscall(SYS_tgkill, getpid(), g_main_tid, SIGALRM) != 0)
                t_fail("tgkill: %s", strerror(errno));
            signalled = s;
        }
        pthread_sigmask(SIG_UNBLOCK, &park, NULL);
        t_sleep_ns(1000 * 1000);
        if (s != seen) {
            seen = s, still = 0;
        } else if (++still == 4000) {
            t_fail("step %llu: %s was not ended by its SIGALRM within 4 s", (unsigned long long)s,
                   g_kinds[s % n_kinds]);
        }
    }
}

static long block_in(int kind) {
    char c;
    struct timespec five = {5, 0};
    sigset_t none;
    sigemptyset(&none);
    struct pollfd p = {g_pipe[0], POLLIN, 0};
    switch (kind) {
    case 0:
        return read(g_pipe[0], &c, 1);
    case 1:
        return pause();
    case 2:
        return sigsuspend(&none);
    case 3:
        return nanosleep(&five, NULL);
    case 4:
        return poll(&p, 1, 5000);
    default: {
        int e = clock_nanosleep(CLOCK_MONOTONIC, 0, &five, NULL);
        if (e) errno = e;
        return e ? -1 : 0;
    }
    }
}

int main(int argc, char **argv) {
    t_init("signal_during_park");
    static const char *const known[] = {"--steps", NULL};
    t_check_args(argc, argv, known, "[--steps N]");
    uint64_t steps = t_opt_u64(argc, argv, "--steps", 1200);
    if (pipe(g_pipe) != 0) t_fail("pipe: %s", strerror(errno));
    struct sigaction sa = {0};
    sa.sa_handler = on_alarm; // no SA_RESTART: a read() it interrupts returns EINTR
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGALRM, &sa, NULL) != 0) t_fail("sigaction: %s", strerror(errno));
    g_main_tid = gettid();
    if (g_main_tid != getpid()) t_fail("main is not the thread group leader");
    pthread_t w;
    if (pthread_create(&w, NULL, helper, (void *)(uintptr_t)steps) != 0) t_fail("pthread_create");
    for (uint64_t s = 0; s < steps; s++) {
        int kind = (int)(s % n_kinds);
        uint64_t before = g_alarms;
        long r = block_in(kind);
        if (r != -1 || errno != EINTR)
            t_fail("step %llu: %s returned %ld (%s), not EINTR", (unsigned long long)s,
                   g_kinds[kind], r, r == -1 ? strerror(errno) : "no error");
        if (g_alarms != before + 1)
            t_fail("step %llu: %s ended, %llu SIGALRM handled", (unsigned long long)s,
                   g_kinds[kind], (unsigned long long)(g_alarms - before));
        g_step = s + 1;
        if ((s + 1) % 200 == 0)
            t_line("step %llu: every call ended by its signal", (unsigned long long)(s + 1));
    }
    pthread_join(w, NULL);
    return t_pass();
}
