/* SPDX-License-Identifier: Apache-2.0 */
/* Run under ghostrun with GHOST_MPI_FORCE_ARCH_PRCTL=1 (the path of a kernel without user-space
 * FSGSBASE): counts the arch_prctl system calls the layer makes per MPI call through its test hook
 * ghost_mpi_fs_switches(). A simple call makes at most two (one switch in, one out); calls the
 * upper half answers (Comm_rank, Comm_size, Wtime, Type_size, Type_get_extent,
 * Type_get_true_extent, Get_count of a predefined type, Initialized, Query_thread) make none, once
 * warm. Their answers are checked too. Empty probes in a tight loop are paced: most make none.
 * An 8-byte Send must make some, or the hook counts nothing and the check means nothing. */
#include <dlfcn.h>

#include "mpit.h"

static unsigned long (*switches)(void);
static unsigned long worst[32];
static const char *names[32];
static int nnames;

static int slot(const char *name) {
    for (int i = 0; i < nnames; i++)
        if (strcmp(names[i], name) == 0) return i;
    names[nnames] = name;
    return nnames++;
}

#define COUNT(name, call)                                                                          \
    do {                                                                                           \
        unsigned long b_ = switches();                                                             \
        CHECK_MPI(call);                                                                           \
        unsigned long d_ = switches() - b_;                                                        \
        int s_ = slot(name);                                                                       \
        if (d_ > worst[s_]) worst[s_] = d_;                                                        \
    } while (0)

int main(int argc, char **argv) {
    mpit_init(&argc, &argv, "fs_switches");
    switches = (unsigned long (*)(void))dlsym(RTLD_DEFAULT, "ghost_mpi_fs_switches");
    if (!switches) {
        printf("rank %d: fs_switches FAIL: not under ghostrun (no ghost_mpi_fs_switches)\n",
               mpit_rank);
        MPI_Finalize();
        return 1;
    }
    int peer = mpit_rank ^ 1;
    double x = 1.0, y = 0.0;
    int rank = -1, size = 0, flag = 0, level = -1, tsz = 0;
    /* A derived datatype whose extents differ from its size: 2 doubles 3 apart, resized to a lower
     * bound of -8 and an extent of 40 (true extent: 4 doubles, from 0). */
    MPI_Datatype strided, resized;
    CHECK_MPI(MPI_Type_vector(2, 1, 3, MPI_DOUBLE, &strided));
    CHECK_MPI(MPI_Type_create_resized(strided, -8, 40, &resized));
    CHECK_MPI(MPI_Type_commit(&resized));
    MPI_Aint lb = -1, ext = -1, tlb = -1, text = -1, dlb = -1, dext = -1;
    int c_int = 3, c_byte = 12, c_double = MPI_UNDEFINED, c_resized = MPI_UNDEFINED;
    if (mpit_rank % 2 == 1) c_int = c_byte = c_double = c_resized = -1; /* the receiver's */
    for (int it = 0; it < 50; it++) {
        int warm = it < 5; /* first calls on a communicator may look it up in the lower half */
        if (warm) memset(worst, 0, sizeof worst);
        COUNT("Comm_rank", MPI_Comm_rank(MPI_COMM_WORLD, &rank));
        COUNT("Comm_size", MPI_Comm_size(MPI_COMM_WORLD, &size));
        COUNT("Type_size", MPI_Type_size(MPI_DOUBLE, &tsz));
        COUNT("Type_get_extent", MPI_Type_get_extent(MPI_DOUBLE, &dlb, &dext));
        COUNT("Type_get_extent", MPI_Type_get_extent(resized, &lb, &ext));
        COUNT("Type_get_true_extent", MPI_Type_get_true_extent(resized, &tlb, &text));
        COUNT("Initialized", MPI_Initialized(&flag));
        COUNT("Query_thread", MPI_Query_thread(&level));
        {
            unsigned long b = switches();
            volatile double t = MPI_Wtime();
            (void)t;
            unsigned long d = switches() - b;
            int s = slot("Wtime");
            if (d > worst[s]) worst[s] = d;
        }
        if (peer < mpit_size) {
            MPI_Request rq;
            if (mpit_rank % 2 == 0) {
                COUNT("Send", MPI_Send(&x, 1, MPI_DOUBLE, peer, 1, MPI_COMM_WORLD));
                COUNT("Recv",
                      MPI_Recv(&y, 1, MPI_DOUBLE, peer, 2, MPI_COMM_WORLD, MPI_STATUS_IGNORE));
                COUNT("Isend", MPI_Isend(&x, 1, MPI_DOUBLE, peer, 3, MPI_COMM_WORLD, &rq));
                COUNT("Wait", MPI_Wait(&rq, MPI_STATUS_IGNORE));
            } else {
                COUNT("Recv",
                      MPI_Recv(&y, 1, MPI_DOUBLE, peer, 1, MPI_COMM_WORLD, MPI_STATUS_IGNORE));
                COUNT("Send", MPI_Send(&x, 1, MPI_DOUBLE, peer, 2, MPI_COMM_WORLD));
                COUNT("Irecv", MPI_Irecv(&y, 1, MPI_DOUBLE, peer, 3, MPI_COMM_WORLD, &rq));
                COUNT("Wait", MPI_Wait(&rq, MPI_STATUS_IGNORE));
            }
            /* 12 bytes: 3 ints, 12 bytes, no whole double, no whole 16-byte resized type */
            int three[3] = {1, 2, 3}, got3[3] = {0, 0, 0};
            if (mpit_rank % 2 == 0) {
                CHECK_MPI(MPI_Send(three, 3, MPI_INT, peer, 5, MPI_COMM_WORLD));
            } else {
                MPI_Status st3;
                CHECK_MPI(MPI_Recv(got3, 3, MPI_INT, peer, 5, MPI_COMM_WORLD, &st3));
                COUNT("Get_count", MPI_Get_count(&st3, MPI_INT, &c_int));
                COUNT("Get_count", MPI_Get_count(&st3, MPI_BYTE, &c_byte));
                COUNT("Get_count", MPI_Get_count(&st3, MPI_DOUBLE, &c_double));
                CHECK_MPI(MPI_Get_count(&st3, resized, &c_resized)); /* the library's answer */
                CHECK(got3[2] == 3);
            }
            COUNT("Sendrecv", MPI_Sendrecv(&x, 1, MPI_DOUBLE, peer, 4, &y, 1, MPI_DOUBLE, peer, 4,
                                           MPI_COMM_WORLD, MPI_STATUS_IGNORE));
        }
        COUNT("Allreduce", MPI_Allreduce(&x, &y, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD));
        COUNT("Barrier", MPI_Barrier(MPI_COMM_WORLD));
    }
    CHECK(rank == mpit_rank && size == mpit_size && tsz == (int)sizeof(double) && flag == 1);
    CHECK(dlb == 0 && dext == (MPI_Aint)sizeof(double) && lb == -8 && ext == 40 && tlb == 0 &&
          text == 4 * (MPI_Aint)sizeof(double));
    CHECK(c_int == 3 && c_byte == 12 && c_double == MPI_UNDEFINED && c_resized == MPI_UNDEFINED);
    MPI_Type_free(&resized);
    MPI_Type_free(&strided);
    for (int i = 0; i < nnames; i++) {
        int upper = strcmp(names[i], "Comm_rank") == 0 || strcmp(names[i], "Comm_size") == 0 ||
                    strcmp(names[i], "Type_size") == 0 || strcmp(names[i], "Initialized") == 0 ||
                    strcmp(names[i], "Type_get_extent") == 0 ||
                    strcmp(names[i], "Type_get_true_extent") == 0 ||
                    strcmp(names[i], "Get_count") == 0 || strcmp(names[i], "Query_thread") == 0 ||
                    strcmp(names[i], "Wtime") == 0;
        unsigned long limit = upper ? 0 : 2;
        fprintf(stderr, "rank %d: %s: %lu arch_prctl calls at most (limit %lu)\n", mpit_rank,
                names[i], worst[i], limit);
        if (worst[i] > limit) {
            printf("rank %d: fs_switches FAIL: MPI_%s made %lu arch_prctl calls (limit %lu)\n",
                   mpit_rank, names[i], worst[i], limit);
            mpit_failures++;
        }
    }
    /* Polls in a row are paced on this path (p2p.cpp, "polls without FSGSBASE"): 5 ms of empty
     * probes in a tight loop enter the lower half for at most half of them, and at least once. */
    {
        unsigned long b = switches();
        int calls = 0, found = 0;
        double end = MPI_Wtime() + 0.005;
        while (MPI_Wtime() < end) {
            CHECK_MPI(MPI_Iprobe(MPI_ANY_SOURCE, 999, MPI_COMM_WORLD, &found, MPI_STATUS_IGNORE));
            calls++;
        }
        unsigned long d = switches() - b;
        fprintf(stderr, "rank %d: %d empty Iprobes in a row: %lu arch_prctl calls\n", mpit_rank,
                calls, d);
        if (found || d == 0 || d > (unsigned long)calls) {
            printf("rank %d: fs_switches FAIL: %d empty Iprobes in a row made %lu arch_prctl "
                   "calls (found %d)\n",
                   mpit_rank, calls, d, found);
            mpit_failures++;
        }
        MPI_Barrier(MPI_COMM_WORLD);
    }
    int s = slot("Send");
    if (peer < mpit_size && worst[s] == 0) {
        printf("rank %d: fs_switches FAIL: MPI_Send made no arch_prctl call: the hook counts "
               "nothing (GHOST_MPI_FORCE_ARCH_PRCTL not set?)\n",
               mpit_rank);
        mpit_failures++;
    }
    return mpit_finish();
}
