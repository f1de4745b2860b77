/* SPDX-License-Identifier: Apache-2.0 */
/* One-sided basics: Win_create, Win_allocate, Put/Get/Accumulate with fences, passive target
 * lock/unlock, request-based Rput, Win_get_group, Alloc_mem. */
#include "mpit.h"

int main(int argc, char **argv) {
    mpit_init(&argc, &argv, "onesided");
    int r = mpit_rank, n = mpit_size, right = (r + 1) % n, left = (r + n - 1) % n;
    int *mem = calloc(16, sizeof(int));
    MPI_Win w;
    CHECK_MPI(
        MPI_Win_create(mem, 16 * sizeof(int), sizeof(int), MPI_INFO_NULL, MPI_COMM_WORLD, &w));
    CHECK_MPI(MPI_Win_fence(0, w));
    int v = r + 100;
    CHECK_MPI(MPI_Put(&v, 1, MPI_INT, right, 0, 1, MPI_INT, w));
    CHECK_MPI(MPI_Accumulate(&v, 1, MPI_INT, 0, 1, 1, MPI_INT, MPI_SUM, w));
    CHECK_MPI(MPI_Win_fence(0, w));
    CHECK(mem[0] == left + 100);
    if (r == 0) CHECK(mem[1] == n * 100 + n * (n - 1) / 2);
    int g = -1;
    CHECK_MPI(MPI_Get(&g, 1, MPI_INT, left, 0, 1, MPI_INT, w));
    CHECK_MPI(MPI_Win_fence(0, w));
    CHECK(g == (left + n - 1) % n + 100);
    MPI_Group wg;
    CHECK_MPI(MPI_Win_get_group(w, &wg));
    int gs;
    MPI_Group_size(wg, &gs);
    CHECK(gs == n);
    MPI_Group_free(&wg);
    CHECK_MPI(MPI_Win_free(&w));
    CHECK(w == MPI_WIN_NULL);

    int *base;
    MPI_Win w2;
    CHECK_MPI(
        MPI_Win_allocate(8 * sizeof(int), sizeof(int), MPI_INFO_NULL, MPI_COMM_WORLD, &base, &w2));
    for (int i = 0; i < 8; i++)
        base[i] = r;
    MPI_Barrier(MPI_COMM_WORLD);
    CHECK_MPI(MPI_Win_lock(MPI_LOCK_SHARED, right, 0, w2));
    int got[2] = {-1, -1};
    CHECK_MPI(MPI_Get(got, 2, MPI_INT, right, 3, 2, MPI_INT, w2));
    CHECK_MPI(MPI_Win_unlock(right, w2));
    CHECK(got[0] == right && got[1] == right);
    MPI_Barrier(MPI_COMM_WORLD);
    CHECK_MPI(MPI_Win_lock(MPI_LOCK_EXCLUSIVE, right, 0, w2));
    MPI_Request q;
    int x = 1000 + r;
    CHECK_MPI(MPI_Rput(&x, 1, MPI_INT, right, 7, 1, MPI_INT, w2, &q));
    CHECK_MPI(MPI_Wait(&q, MPI_STATUS_IGNORE));
    CHECK_MPI(MPI_Win_unlock(right, w2));
    MPI_Barrier(MPI_COMM_WORLD);
    CHECK_MPI(MPI_Win_lock(MPI_LOCK_SHARED, r, 0, w2));
    CHECK(base[7] == 1000 + left);
    CHECK_MPI(MPI_Win_unlock(r, w2));
    CHECK_MPI(MPI_Win_free(&w2));

    void *am;
    CHECK_MPI(MPI_Alloc_mem(4096, MPI_INFO_NULL, &am));
    memset(am, 1, 4096);
    CHECK_MPI(MPI_Free_mem(am));
    free(mem);
    return mpit_finish();
}
