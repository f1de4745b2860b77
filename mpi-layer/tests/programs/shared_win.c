/* SPDX-License-Identifier: Apache-2.0 */
/* Windows of memory shared by the ranks of a node (MPI_Win_allocate_shared), used as programs use
 * them: load/store into the other ranks' parts (pointers from MPI_Win_shared_query, kept across
 * steps), MPI_Win_sync and barriers inside an MPI_Win_lock_all epoch held all run long, MPI_Put
 * into a neighbour's part with fences on a second window (alloc_shared_noncontig, and a rank with
 * an empty part), a third window made and freed every few steps, and windows of MPI_COMM_SELF.
 * Every step checks every value it reads. Usage: shared_win STEPS [SLEEP_MS] (any number of ranks
 * on one host) */
#include <stdint.h>

#include "mpit.h"

#define PART 4096 /* doubles per rank in the first window */

static double value(int step, int rank, int i) {
    return (double)step * 1e6 + rank * 1e4 + i;
}

int main(int argc, char **argv) {
    mpit_init(&argc, &argv, "shared_win");
    int steps = argc > 1 ? atoi(argv[1]) : 100;
    int sleep_ms = argc > 2 ? atoi(argv[2]) : 10;
    MPI_Comm node;
    CHECK_MPI(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node));
    int r, n;
    MPI_Comm_rank(node, &r);
    MPI_Comm_size(node, &n);

    /* Windows of one process (MPI_COMM_SELF), which Open MPI serves natively with its osc sm. */
    {
        int *one = NULL, *own = NULL;
        MPI_Win w_alloc, w_shared;
        CHECK_MPI(MPI_Win_allocate(sizeof(int), sizeof(int), MPI_INFO_NULL, MPI_COMM_SELF, &one,
                                   &w_alloc));
        CHECK_MPI(MPI_Win_allocate_shared(sizeof(int), sizeof(int), MPI_INFO_NULL, MPI_COMM_SELF,
                                          &own, &w_shared));
        int v = 7 + r;
        CHECK_MPI(MPI_Win_fence(0, w_alloc));
        CHECK_MPI(MPI_Put(&v, 1, MPI_INT, 0, 0, 1, MPI_INT, w_alloc));
        CHECK_MPI(MPI_Win_fence(0, w_alloc));
        CHECK(*one == 7 + r);
        *own = v;
        CHECK_MPI(MPI_Win_free(&w_shared));
        CHECK_MPI(MPI_Win_free(&w_alloc));
    }

    /* Window 1: contiguous parts of different sizes, lock_all held from here to the end. */
    double *mine = NULL;
    MPI_Win win;
    MPI_Aint bytes = (MPI_Aint)sizeof(double) * PART * (r % 2 + 1);
    CHECK_MPI(MPI_Win_allocate_shared(bytes, sizeof(double), MPI_INFO_NULL, node, &mine, &win));
    int *flavor = NULL, flag = 0;
    CHECK_MPI(MPI_Win_get_attr(win, MPI_WIN_CREATE_FLAVOR, &flavor, &flag));
    CHECK(flag && *flavor == MPI_WIN_FLAVOR_SHARED);
    double **part = malloc(sizeof(double *) * (size_t)n);
    MPI_Aint *part_bytes = malloc(sizeof(MPI_Aint) * (size_t)n);
    for (int i = 0; i < n; i++) {
        int du = 0;
        CHECK_MPI(MPI_Win_shared_query(win, i, &part_bytes[i], &du, &part[i]));
        CHECK(du == (int)sizeof(double));
        CHECK(part_bytes[i] == (MPI_Aint)sizeof(double) * PART * (i % 2 + 1));
        /* contiguous in rank order */
        if (i > 0) CHECK((char *)part[i] == (char *)part[i - 1] + part_bytes[i - 1]);
    }
    CHECK(part[r] == mine);
    CHECK_MPI(MPI_Win_lock_all(MPI_MODE_NOCHECK, win));

    /* Window 2: noncontiguous, odd ranks give no memory; each even rank puts into the next even
     * rank's part under fences. */
    MPI_Info info;
    MPI_Info_create(&info);
    MPI_Info_set(info, "alloc_shared_noncontig", "true");
    long long *slots = NULL;
    MPI_Win fenced;
    int even = r % 2 == 0;
    CHECK_MPI(MPI_Win_allocate_shared(even ? (MPI_Aint)(sizeof(long long) * 64) : 0,
                                      sizeof(long long), info, node, &slots, &fenced));
    MPI_Info_free(&info);
    CHECK(even || slots == NULL);
    int evens = (n + 1) / 2, target = ((r / 2 + 1) % evens) * 2;

    long long total = 0;
    for (int s = 0; s < steps; s++) {
        mpit_step(s, steps);
        for (int i = 0; i < PART * (r % 2 + 1); i++)
            mine[i] = value(s, r, i);
        MPI_Win_sync(win);
        CHECK_MPI(MPI_Barrier(node));
        MPI_Win_sync(win);
        int other = (r + 1 + s % (n > 1 ? n - 1 : 1)) % n;
        unsigned long long seen = 0;
        for (int i = 0; i < PART * (other % 2 + 1); i++) {
            CHECK(part[other][i] == value(s, other, i));
            seen += (unsigned long long)part[other][i];
        }
        mpit_mix(seen);
        CHECK_MPI(MPI_Barrier(node)); /* nobody writes the next step's values under a reader */

        CHECK_MPI(MPI_Win_fence(0, fenced));
        if (even) {
            long long v = (long long)s * 100 + r;
            CHECK_MPI(MPI_Put(&v, 1, MPI_LONG_LONG, target, s % 64, 1, MPI_LONG_LONG, fenced));
        }
        CHECK_MPI(MPI_Win_fence(0, fenced));
        if (even) {
            int from = ((r / 2 + evens - 1) % evens) * 2;
            CHECK(slots[s % 64] == (long long)s * 100 + from);
            total += slots[s % 64];
        }

        if (s % 5 == 0) { /* a window made and freed */
            int *tmp = NULL;
            MPI_Win w3;
            CHECK_MPI(
                MPI_Win_allocate_shared(sizeof(int), sizeof(int), MPI_INFO_NULL, node, &tmp, &w3));
            *tmp = s + r;
            CHECK_MPI(MPI_Win_fence(0, w3));
            int *left = NULL, du = 0;
            MPI_Aint sz = 0;
            CHECK_MPI(MPI_Win_shared_query(w3, (r + n - 1) % n, &sz, &du, &left));
            CHECK(*left == s + (r + n - 1) % n);
            CHECK_MPI(MPI_Win_fence(0, w3));
            CHECK_MPI(MPI_Win_free(&w3));
        }
        mpit_sleep_ms(sleep_ms);
    }
    CHECK_MPI(MPI_Win_unlock_all(win));
    CHECK_MPI(MPI_Win_free(&fenced));
    CHECK_MPI(MPI_Win_free(&win));
    free(part);
    free(part_bytes);
    MPI_Comm_free(&node);
    printf("rank %d: shared_win %d steps total %lld checksum %016llx\n", mpit_rank, steps, total,
           mpit_sum);
    return mpit_finish();
}
