/* SPDX-License-Identifier: Apache-2.0 */
/* A communicator from MPI_Comm_create_group that one member has freed and the others have not:
 * a restart replays its creation collectively over its group, so the member that freed it must
 * replay it too (and free it again), or the others wait for ever. Every rank makes it
 * over MPI_COMM_WORLD's group and reduces on it; rank 1 frees it; rank 0 creates DIR/freed and
 * the ranks wait (a barrier every 20 ms) until DIR/go exists; then the others free it, and every
 * rank checks a reduction on MPI_COMM_WORLD. Usage: group_freed DIR */
#include <sys/stat.h>

#include "mpit.h"

static int exists(const char *dir, const char *name) {
    char path[4096];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return stat(path, &st) == 0;
}

int main(int argc, char **argv) {
    mpit_init(&argc, &argv, "group_freed");
    CHECK(argc > 1 && mpit_size >= 2);
    const char *dir = argv[1];
    MPI_Group all;
    MPI_Comm made;
    CHECK_MPI(MPI_Comm_group(MPI_COMM_WORLD, &all));
    CHECK_MPI(MPI_Comm_create_group(MPI_COMM_WORLD, all, 5, &made));
    int one = 1, n = 0;
    CHECK_MPI(MPI_Allreduce(&one, &n, 1, MPI_INT, MPI_SUM, made));
    CHECK(n == mpit_size);
    if (mpit_rank == 1) CHECK_MPI(MPI_Comm_free(&made));
    CHECK_MPI(MPI_Barrier(MPI_COMM_WORLD));
    if (mpit_rank == 0) {
        char path[4096];
        snprintf(path, sizeof path, "%s/freed", dir);
        FILE *f = fopen(path, "w");
        CHECK(f != NULL);
        if (f) fclose(f);
    }
    for (int go = 0; !go;) {
        mpit_sleep_ms(20);
        go = mpit_rank == 0 && exists(dir, "go");
        CHECK_MPI(MPI_Bcast(&go, 1, MPI_INT, 0, MPI_COMM_WORLD));
    }
    if (mpit_rank != 1) CHECK_MPI(MPI_Comm_free(&made));
    CHECK_MPI(MPI_Group_free(&all));
    n = 0;
    CHECK_MPI(MPI_Allreduce(&one, &n, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD));
    CHECK(n == mpit_size);
    return mpit_finish();
}
