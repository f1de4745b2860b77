// SPDX-License-Identifier: Apache-2.0
// Workload of the job checkpoint benchmark (benchmarks/mpi_ckpt/run.py): an MPI program whose ranks
// sit in a chosen state while ghost quiesces or checkpoints the job.
//
//   ckpt_load MODE [--mib M] [--period-ms P] [--write-pct W [--writer R]] [--stop-file F]
//
//   compute  every rank computes (floating point, in registers and L1) and joins an 8-byte
//            MPI_Allreduce after each chunk of about P ms of work (default 100)
//   coll     every rank loops on MPI_Allreduce (8 bytes) and MPI_Barrier
//   recv     rank 0 sleeps P ms, then sends 4 bytes to every other rank; the others wait for it
//            in MPI_Recv (blocked in receives nearly all the time)
//   hold     every rank sleeps P ms (default 20), then joins an MPI_Allreduce; a rank whose loop
//            saw a wall-clock gap of more than 0.5 s (a checkpoint, or a restart) prints
//            "resumed rank R gap G" on stdout
//
// --mib M fills M MiB per rank with pseudo-random (incompressible) bytes before the loop. Every
// rank prints "ready rank R" once MPI is up and its memory filled. With --stop-file F, the loop
// ends when rank 0 sees F exist; each rank then checks its memory against the fill and prints
// "verified rank R" (or "CORRUPT rank R") and the job exits. Without it the job runs until killed.
// --write-pct W (hold): every rank rewrites W% of its pages a second (random pages, each with a new
// version of its contents, the versions in memory too), as a live migration's pre-copy must
// follow: a write that a migration lost leaves a page whose contents do not match its version.
// --writer R: only rank R rewrites (the others hold still).
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint64_t splitmix(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

// The fill's word i (splitmix's i-th output from the rank's seed), and a page's version on top.
static uint64_t fill_word(uint64_t seed, size_t i, uint32_t version) {
    uint64_t s = seed + (uint64_t)i * 0x9e3779b97f4a7c15ULL;
    return splitmix(&s) ^ ((uint64_t)version * 0xd6e8feb86659fd93ULL);
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

static int usage(void) {
    fprintf(stderr, "usage: ckpt_load compute|coll|recv|hold [--mib M] [--period-ms P] "
                    "[--write-pct W [--writer R]] [--stop-file F]\n");
    return 2;
}

int main(int argc, char **argv) {
    if (argc < 2) return usage();
    const char *mode = argv[1];
    long mib = 0, period = -1;
    double write_pct = 0;
    long writer = -1;
    const char *stop = NULL;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--mib") && i + 1 < argc)
            mib = atol(argv[++i]);
        else if (!strcmp(argv[i], "--period-ms") && i + 1 < argc)
            period = atol(argv[++i]);
        else if (!strcmp(argv[i], "--write-pct") && i + 1 < argc)
            write_pct = atof(argv[++i]);
        else if (!strcmp(argv[i], "--writer") && i + 1 < argc)
            writer = atol(argv[++i]);
        else if (!strcmp(argv[i], "--stop-file") && i + 1 < argc)
            stop = argv[++i];
        else
            return usage();
    }
    int m = !strcmp(mode, "compute") ? 0
            : !strcmp(mode, "coll")  ? 1
            : !strcmp(mode, "recv")  ? 2
            : !strcmp(mode, "hold")  ? 3
                                     : -1;
    if (m < 0 || mib < 0 || write_pct < 0 || (write_pct > 0 && m != 3)) return usage();
    if (period < 0) period = m == 3 ? 20 : 100;

    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);

    size_t words = (size_t)mib << 17; // 8-byte words
    const size_t page_words = 512, pages = words / page_words;
    const uint64_t seed = 0x1234567ULL + (uint64_t)rank;
    uint64_t *buf = NULL;
    uint32_t *version = NULL; // of each page
    if (words) {
        buf = malloc(words * 8);
        version = calloc(pages, sizeof *version);
        if (!buf || !version) {
            fprintf(stderr, "ckpt_load: cannot allocate %ld MiB\n", mib);
            MPI_Abort(MPI_COMM_WORLD, 2);
        }
        uint64_t s = seed;
        for (size_t i = 0; i < words; i++)
            buf[i] = splitmix(&s);
    }
    // Pages rewritten per loop: W% of them a second, the loop taking about P ms.
    if (writer >= 0 && writer != rank) write_pct = 0;
    double write_per_loop = (double)pages * write_pct / 100.0 * (double)period / 1000.0, owed = 0;
    uint64_t pick = seed * 31 + 7;
    MPI_Barrier(MPI_COMM_WORLD);
    printf("ready rank %d\n", rank);
    fflush(stdout);

    // About 1 ms of dependent floating-point work per call on this class of machine.
    volatile double sink = 0;
    double x[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    double last = now_s();
    long it = 0;
    for (;; it++) {
        if (m == 0) {
            for (long c = 0; c < period; c++) {
                for (int k = 0; k < 200000; k++)
                    for (int j = 0; j < 8; j++)
                        x[j] = x[j] * 0.999999 + 1e-6;
            }
            sink = x[0];
            double v = x[rank % 8], r;
            MPI_Allreduce(&v, &r, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
        } else if (m == 1) {
            double v = (double)it, r;
            MPI_Allreduce(&v, &r, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
            if (it % 4 == 0) MPI_Barrier(MPI_COMM_WORLD);
        } else if (m == 2) {
            int v = (int)it;
            if (rank == 0) {
                sleep_ms(period);
                for (int d = 1; d < size; d++)
                    MPI_Send(&v, 1, MPI_INT, d, 7, MPI_COMM_WORLD);
            } else {
                MPI_Recv(&v, 1, MPI_INT, 0, 7, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            }
        } else {
            sleep_ms(period);
            for (owed += write_per_loop; owed >= 1 && pages; owed -= 1) {
                size_t pg = (size_t)(splitmix(&pick) % pages);
                uint32_t ver = ++version[pg];
                for (size_t i = pg * page_words; i < (pg + 1) * page_words; i++)
                    buf[i] = fill_word(seed, i, ver);
            }
            double v = (double)it, r;
            MPI_Allreduce(&v, &r, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
            double t = now_s();
            if (t - last > 0.5) {
                printf("resumed rank %d gap %.3f\n", rank, t - last);
                fflush(stdout);
            }
            last = t;
        }
        if (stop && (m != 0 || it % 4 == 0)) {
            // Rank 0 decides for everyone: one small collective (recv mode: sent by rank 0 anyway).
            int flag = rank == 0 && access(stop, F_OK) == 0;
            MPI_Bcast(&flag, 1, MPI_INT, 0, MPI_COMM_WORLD);
            if (flag) break;
        }
    }
    (void)sink;
    int bad = 0;
    for (size_t i = 0; i < words && !bad; i++)
        bad = buf[i] != fill_word(seed, i, version[i / page_words]);
    printf("%s rank %d\n", bad ? "CORRUPT" : "verified", rank);
    fflush(stdout);
    free(buf);
    free(version);
    MPI_Finalize();
    return bad;
}
