// SPDX-License-Identifier: Apache-2.0
// The floor under a fork-path duplicate: what one plain fork() of a process holding N MiB of
// written memory costs on this machine (the call alone: the page-table copy, during which a
// duplicate's original stays parked), and fork + the child's exit + waitpid. A duplicate cannot
// park its original for less than the first figure.
//
//   fork_floor MIB [REPS]    prints one line per repetition: "MIB fork_ms fork_exit_wait_ms"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
        printf("%zu %.1f %.1f\n", mib, t1 - t0, now_ms() - t0);
    }
    return 0;
}
