// SPDX-License-Identifier: Apache-2.0
// Workload of benchmarks/fast_duplicate/run.py: --mib MiB of random data touched once, two threads
// that write to it all the time, and a main thread that looks at the clock every 100 us.
//  * In the original: a gap of more than 1 ms between two looks (the process was parked) is
//    printed as "gap <us>" on stdout, which run.py reads as the stop the original saw itself.
//  * In a copy (getpid() is not the original's, or its pid namespace is not the original's: a CRIU
//    copy is restored in a new pid namespace under the original's pid, see criu.py): its first
//    look prints "copy <CLOCK_MONOTONIC ns>" on its stdout (that of `ghost duplicate`) and it exits
//    0: run.py and criu.py take that as the moment the copy runs.
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static volatile pid_t g_self;
static ino_t g_pidns;
static uint64_t *g_mem;
static size_t g_words;

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000ULL + (uint64_t)t.tv_nsec;
}

static ino_t pidns(void) {
    struct stat st;
    return stat("/proc/self/ns/pid", &st) == 0 ? st.st_ino : 0;
}

static void *writer(void *arg) {
    uint64_t x = (uint64_t)(uintptr_t)arg * 0x9e3779b97f4a7c15ULL + 1;
    for (;;) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        g_mem[x % g_words] += x;
        if ((x & 0xfff) == 0) usleep(100);
    }
    return NULL;
}

int main(int argc, char **argv) {
    size_t mib = argc > 2 && strcmp(argv[1], "--mib") == 0 ? strtoull(argv[2], NULL, 10) : 64;
    g_words = mib << 17;
    g_mem = malloc(g_words * 8);
    if (!g_mem) return 1;
    uint64_t x = 88172645463325252ULL;
    for (size_t i = 0; i < g_words; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        g_mem[i] = x;
    }
    g_self = getpid();
    g_pidns = pidns();
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&t[i], NULL, writer, (void *)(uintptr_t)(i + 1));
    printf("ready\n");
    fflush(stdout);
    uint64_t last = now_ns();
    for (;;) {
        uint64_t now = now_ns();
        int gap = now - last > 1000000;
        // A copy was stopped since the original's last look (parked for the fork, frozen for the
        // dump), so its first looks see a gap: only then is the pid namespace looked at, a lookup
        // in /proc too slow to make every 100 us.
        if (getpid() != g_self || (gap && pidns() != g_pidns)) {
            printf("copy %llu\n", (unsigned long long)now);
            fflush(stdout);
            _exit(0);
        }
        if (gap) {
            printf("gap %llu\n", (unsigned long long)((now - last) / 1000));
            fflush(stdout);
        }
        last = now;
        usleep(100);
    }
}
