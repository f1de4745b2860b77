/* SPDX-License-Identifier: Apache-2.0 */
/* MPI loaded with dlopen, as Python's mpi4py does: the program links no MPI library, so the layer
 * starts its lower half at the first MPI call, long after the program has filled its malloc heap
 * (brk). Just before MPI_Init, the heap's top chunk is used up but for a few hundred bytes: the
 * layer's own start-up then grows the heap by brk (reading /proc/self/maps), and memory the program
 * allocates afterwards (BUF) lies in that growth. A rank whose image left it out (taken for the
 * lower half's start-up) crashed in its restart or read zeros there (mpi4py.bench ringtest
 * restarted: SIGSEGV in free() in the layer's after_restore). Then STEPS steps of a ring Sendrecv
 * and an Allreduce, each checked, SLEEP_MS of sleep between steps (outside MPI), BUF checked at
 * the end. Prints only at its end, "rank R: lazy_mpi ... PASS|FAIL".
 * Usage: lazy_mpi STEPS [SLEEP_MS] (run under ghostrun with --mpi: nothing names the MPI) */
#include <dlfcn.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mpi.h>

static void *lib;
/* The global scope, as the dynamic linker binds a module's calls (a preloaded library first). */
static void *sym(const char *name) {
    void *p = dlsym(RTLD_DEFAULT, name);
    if (!p) {
        fprintf(stderr, "lazy_mpi: %s: %s\n", name, dlerror());
        exit(2);
    }
    return p;
}

#define FN(name) __typeof__(name) *p_##name = (__typeof__(name) *)sym(#name)

/* Uses up the top chunk of the main arena (no mmap for these sizes) until at most 512 bytes of it
 * are left: the next allocation of a few KiB must grow the heap by brk. */
static void fill_heap_top(void) {
    mallopt(M_MMAP_THRESHOLD, 1 << 30);
    for (int i = 0; i < 100000; i++) {
        size_t top = mallinfo2().keepcost;
        if (top <= 512 + 64) return;
        size_t take = top > 4096 + 512 ? 4096 : top - 512 - 32;
        if (!malloc(take)) return;
    }
}

int main(int argc, char **argv) {
    int steps = argc > 1 ? atoi(argv[1]) : 100;
    int sleep_ms = argc > 2 ? atoi(argv[2]) : 20;
#ifdef OPEN_MPI
    const char *soname = "libmpi.so.40";
#else
    const char *soname = "libmpich.so.12";
#endif
    lib = dlopen(soname, RTLD_NOW | RTLD_GLOBAL);
    if (!lib) {
        fprintf(stderr, "lazy_mpi: dlopen %s: %s\n", soname, dlerror());
        return 2;
    }
    FN(MPI_Init);
    FN(MPI_Comm_rank);
    FN(MPI_Comm_size);
    FN(MPI_Sendrecv);
    FN(MPI_Allreduce);
    FN(MPI_Finalize);
#ifdef OPEN_MPI
    MPI_Comm world = (MPI_Comm)sym("ompi_mpi_comm_world");
    MPI_Datatype ll = (MPI_Datatype)sym("ompi_mpi_long_long_int");
    MPI_Op sum = (MPI_Op)sym("ompi_mpi_op_sum");
#else
    MPI_Comm world = MPI_COMM_WORLD;
    MPI_Datatype ll = MPI_LONG_LONG;
    MPI_Op sum = MPI_SUM;
#endif
    fill_heap_top();
    p_MPI_Init(&argc, &argv);
    int r, n;
    p_MPI_Comm_rank(world, &r);
    p_MPI_Comm_size(world, &n);
    /* in the heap's growth (below the mmap threshold, set above) */
    size_t words = 8192;
    uint64_t *buf = malloc(words * sizeof *buf);
    for (size_t i = 0; i < words; i++)
        buf[i] = 0x9e3779b97f4a7c15ull * (i + 1) + (uint64_t)r;
    int bad = 0;
    unsigned long long check = 1469598103934665603ull;
    int right = (r + 1) % n, left = (r + n - 1) % n;
    for (int s = 0; s < steps; s++) {
        long long out = (long long)r * 1000003 + s, in = -1, total = 0;
        MPI_Status st;
        p_MPI_Sendrecv(&out, 1, ll, right, s, &in, 1, ll, left, s, world, &st);
        if (in != (long long)left * 1000003 + s) bad++;
        p_MPI_Allreduce(&out, &total, 1, ll, sum, world);
        if (total != 1000003LL * n * (n - 1) / 2 + (long long)n * s) bad++;
        check = (check ^ (unsigned long long)total) * 1099511628211ull;
        if (sleep_ms > 0) {
            struct timespec ts = {sleep_ms / 1000, (long)(sleep_ms % 1000) * 1000000L};
            while (nanosleep(&ts, &ts) != 0) {
            }
        }
    }
    size_t wrong = 0;
    for (size_t i = 0; i < words; i++)
        wrong += buf[i] != 0x9e3779b97f4a7c15ull * (i + 1) + (uint64_t)r;
    if (wrong) printf("rank %d: lazy_mpi FAIL: %zu words of the heap buffer changed\n", r, wrong);
    if (bad) printf("rank %d: lazy_mpi FAIL: %d wrong values received\n", r, bad);
    printf("rank %d: lazy_mpi %d steps checksum %016llx\n", r, steps, check);
    printf("rank %d: lazy_mpi %s\n", r, wrong || bad ? "FAIL" : "PASS");
    fflush(stdout);
    p_MPI_Finalize();
    return 0;
}
