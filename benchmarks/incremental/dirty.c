// SPDX-License-Identifier: Apache-2.0
// A process for the incremental checkpoint benchmark:
//   dirty MIB PERCENT_PER_S
// fills MIB of memory with incompressible data, prints "ready", then rewrites PERCENT_PER_S of
// its pages every second (in 100 steps a second, pages drawn at random), until killed.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>

static uint64_t next(uint64_t *x) {
    *x ^= *x << 13, *x ^= *x >> 7, *x ^= *x << 17;
    return *x;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: dirty MIB PERCENT_PER_S\n");
        return 2;
    }
    size_t bytes = (size_t)atol(argv[1]) << 20, pages = bytes / 4096;
    double percent = atof(argv[2]);
    uint64_t *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return 2;
    uint64_t x = 88172645463325252ULL;
    for (size_t i = 0; i < bytes / 8; i++)
        p[i] = next(&x);
    printf("ready\n");
    fflush(stdout);
    double per_step = (double)pages * percent / 100.0 / 100.0, owed = 0;
    for (;;) {
        owed += per_step;
        for (; owed >= 1; owed -= 1) {
            size_t page = next(&x) % pages;
            for (size_t w = 0; w < 512; w += 8) // a cache line of every 64 bytes: a real write
                p[page * 512 + w] = next(&x);
        }
        struct timespec t = {0, 10 * 1000 * 1000};
        nanosleep(&t, NULL);
    }
}
