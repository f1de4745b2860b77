// SPDX-License-Identifier: Apache-2.0
// A process holding a given amount of memory for the image I/O benchmark:
//   fill MIB random|zero|sparse
// random: MIB of incompressible data; zero: MIB written with zeros; sparse: MIB allocated, 1/64 of
// it touched. Prints "ready" when done, then waits; on SIGUSR1 re-verifies the data and prints the
// sum.
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static volatile sig_atomic_t verify;
static void on_usr1(int sig) {
    (void)sig, verify = 1;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: fill MIB random|zero|sparse\n");
        return 2;
    }
    size_t bytes = (size_t)atol(argv[1]) << 20;
    const char *mode = argv[2];
    uint64_t *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        fprintf(stderr, "fill: cannot allocate %s MiB\n", argv[1]);
        return 2;
    }
    uint64_t x = 88172645463325252ULL;
    size_t words = bytes / 8;
    if (strcmp(mode, "random") == 0) {
        for (size_t i = 0; i < words; i++)
            x ^= x << 13, x ^= x >> 7, x ^= x << 17, p[i] = x;
    } else if (strcmp(mode, "zero") == 0) {
        memset(p, 0, bytes);
    } else if (strcmp(mode, "sparse") == 0) {
        for (size_t i = 0; i < words; i += 64 * 512)
            p[i] = ++x; // one page in 64
    } else {
        fprintf(stderr, "fill: unknown mode %s\n", mode);
        return 2;
    }
    signal(SIGUSR1, on_usr1);
    printf("ready\n");
    fflush(stdout);
    while (!verify)
        pause();
    uint64_t sum = 0;
    for (size_t i = 0; i < words; i++)
        sum += p[i];
    printf("sum %016llx\n", (unsigned long long)sum);
    return 0;
}
