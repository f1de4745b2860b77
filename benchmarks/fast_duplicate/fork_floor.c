// SPDX-License-Identifier: Apache-2.0
// The floor under a fork-path duplicate: what one plain fork() of a process holding N MiB of
// written memory costs on this machine (the call alone: the page-table copy, during which a
// duplicate's original stays parked), and fork + the child's exit + waitpid. A duplicate cannot
// park its original for less than the first figure. The third figure is fork + the child reading
// all its memory once through /proc/self/mem (as the copy's lock-owner scan does, see
// ghost-core/agent/lock_owners.cpp) + its exit + waitpid: a copy that gets new thread ids and must
// find the locks held under the old ones cannot run sooner.
//
//   fork_floor MIB [REPS]    one line per repetition: "MIB fork_ms fork_exit_wait_ms
//                            fork_read_exit_wait_ms"
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: fork_floor MIB [REPS]\n");
        return 2;
    }
    size_t mib = strtoul(argv[1], NULL, 10);
    int reps = argc > 2 ? atoi(argv[2]) : 5;
    size_t n = mib << 20;
    char *p = malloc(n);
    if (!p) return 1;
    memset(p, 1, n); // every page present and private, as the duplicate benchmark's
    for (int i = 0; i < reps; i++) {
        double t0 = now_ms();
        pid_t c = fork();
        if (c == 0) _exit(p[n / 2] == 1 ? 0 : 1);
        double t1 = now_ms();
        if (c < 0) return 1;
        waitpid(c, NULL, 0);
        double t2 = now_ms();
        c = fork();
        if (c == 0) {
            static char chunk[256 << 10];
            int fd = open("/proc/self/mem", O_RDONLY | O_CLOEXEC);
            for (size_t at = 0; fd >= 0 && at < n; at += sizeof chunk) {
                size_t len = n - at < sizeof chunk ? n - at : sizeof chunk;
                if (pread(fd, chunk, len, (off_t)(uintptr_t)(p + at)) != (ssize_t)len) _exit(1);
            }
            _exit(fd >= 0 ? 0 : 1);
        }
        if (c < 0) return 1;
        int status = 0;
        waitpid(c, &status, 0);
        if (status != 0) return 1;
        printf("%zu %.1f %.1f %.1f\n", mib, t1 - t0, t2 - t0, now_ms() - t2);
    }
    return 0;
}
