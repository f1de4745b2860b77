// SPDX-License-Identifier: Apache-2.0
// glibc (2.35+) registers a struct rseq for every thread; sched_getcpu() reads its cpu_id. After a
// restore the kernel must have each thread's area registered again, or the area goes stale. Four
// threads each pin themselves to the CPUs they may use in turn and check, at every step, that the
// rseq area's cpu_id and sched_getcpu() name the CPU they are pinned to; now and then each asks the
// kernel whether its area is registered (registering the same area again answers EBUSY).
#include "common.h"

#include <pthread.h>
#include <sched.h>
#include <sys/rseq.h>
#include <sys/syscall.h>

#define THREADS 4

static uint64_t g_steps;
static int g_cpus[CPU_SETSIZE], g_ncpus;

static volatile struct rseq *own_rseq(void) {
    return (volatile struct rseq *)((char *)__builtin_thread_pointer() + __rseq_offset);
}

static void check_registered(int t, uint64_t step) {
    // glibc registers 32 bytes (sizeof struct rseq with its padding) whatever __rseq_size says.
    long r = syscall(SYS_rseq, own_rseq(), 32, 0, RSEQ_SIG);
    if (r == 0) t_fail("thread %d step %" PRIu64 ": its rseq area was not registered", t, step);
    if (errno != EBUSY)
        t_fail("thread %d step %" PRIu64 ": rseq registration check: %s", t, step, strerror(errno));
}

static void *worker(void *arg) {
    int t = (int)(intptr_t)arg;
    uint64_t h = (uint64_t)t;
    int cpu = -1;
    for (uint64_t i = 1; i <= g_steps; i++) {
        if (i % 8 == 1) { // a new CPU every 8 steps; steps are mostly computation
            cpu = g_cpus[(i / 8 + (uint64_t)t) % (uint64_t)g_ncpus];
            cpu_set_t one;
            CPU_ZERO(&one);
            CPU_SET(cpu, &one);
            if (sched_setaffinity(0, sizeof one, &one) != 0)
                t_fail("sched_setaffinity: %s", strerror(errno));
        }
        for (int k = 0; k < 2000; k++)
            h = t_mix64(h + (uint64_t)k);
        // (After sched_setaffinity returns, the thread runs on that CPU.)
        int seen = (int)own_rseq()->cpu_id, libc = sched_getcpu();
        if (seen != cpu || libc != cpu)
            t_fail("thread %d step %" PRIu64 ": pinned to CPU %d, rseq cpu_id says %d, "
                   "sched_getcpu %d",
                   t, i, cpu, seen, libc);
        if (i % 64 == 0) check_registered(t, i);
    }
    return (void *)(uintptr_t)(h & 1); // (keeps the computation)
}

int main(int argc, char **argv) {
    t_init("rseq_threads");
    static const char *const known[] = {"--steps", NULL};
    t_check_args(argc, argv, known, "[--steps N]");
    g_steps = t_opt_u64(argc, argv, "--steps", 20000);
    t_line("rseq_threads steps=%" PRIu64, g_steps);
    if (__rseq_size == 0) t_fail("glibc did not register rseq (needs glibc 2.35+)");
    cpu_set_t allowed;
    if (sched_getaffinity(0, sizeof allowed, &allowed) != 0)
        t_fail("sched_getaffinity: %s", strerror(errno));
    for (int c = 0; c < CPU_SETSIZE; c++)
        if (CPU_ISSET(c, &allowed)) g_cpus[g_ncpus++] = c;
    check_registered(-1, 0);
    pthread_t th[THREADS];
    for (int t = 0; t < THREADS; t++)
        if (pthread_create(&th[t], NULL, worker, (void *)(intptr_t)t) != 0)
            t_fail("pthread_create");
    for (int t = 0; t < THREADS; t++)
        pthread_join(th[t], NULL);
    check_registered(-1, g_steps);
    t_line("%d threads checked %" PRIu64 " steps each", THREADS, g_steps);
    return t_pass();
}
