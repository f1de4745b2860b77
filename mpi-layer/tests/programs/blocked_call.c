/* SPDX-License-Identifier: Apache-2.0 */
/* A rank held inside one blocking MPI call while the job is checkpointed (run_job_ckpt.sh
 * replace, winfree, windyn, disconnect): the call cannot complete until another rank, which waits
 * outside MPI until DIR/go exists, makes its part of it. blocked_call DIR replace   rank 0 in
 * MPI_Sendrecv_replace (a strided datatype) with rank 1; rank 1 sees rank 0's message arrive
 * (MPI_Iprobe: rank 0 is inside the call), writes DIR/ready, waits for DIR/go, then makes its own
 *   blocked_call DIR winfree   every rank makes a window and reads its right neighbour's through
 *                              it; rank 0 then writes DIR/ready and enters MPI_Win_free (which
 *                              waits for every member in both MPIs), rank 1 waits for DIR/go
 *                              before it frees the window too
 *   blocked_call DIR windyn    rank 0 writes DIR/ready and enters MPI_Win_create_dynamic, rank 1
 *                              waits for DIR/go before it does; then each reads its right
 *                              neighbour's attached region
 *   blocked_call DIR disconnect  as winfree, with MPI_Comm_disconnect of a duplicate of
 *                              MPI_COMM_WORLD
 * Ranks other than 0 and 1 only check in at the end (replace). Prints (buffered) the values each
 * rank sends, then what it received, and PASS. */
#include <time.h>
#include <unistd.h>

#include "mpit.h"

static void touch(const char *dir, const char *name) {
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    if (f) fclose(f);
}

static void wait_for(const char *dir, const char *name) {
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    while (access(p, F_OK) != 0) {
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

int main(int argc, char **argv) {
    mpit_init(&argc, &argv, "blocked_call");
    if (argc < 3) {
        if (mpit_rank == 0)
            fprintf(stderr, "usage: blocked_call DIR replace|winfree|windyn|disconnect\n");
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    const char *dir = argv[1], *mode = argv[2];
    int r = mpit_rank;
    if (strcmp(mode, "replace") == 0) {
        if (r <= 1) {
            /* every other int of 2 * 6: the packed message is 6 ints */
            MPI_Datatype every_other;
            MPI_Type_vector(6, 1, 2, MPI_INT, &every_other);
            MPI_Type_commit(&every_other);
            int buf[12];
            for (int i = 0; i < 12; i++)
                buf[i] = r * 1000 + i;
            int peer = 1 - r;
            if (r == 1) {
                int flag = 0;
                while (!flag)
                    CHECK_MPI(MPI_Iprobe(0, 7, MPI_COMM_WORLD, &flag, MPI_STATUS_IGNORE));
                touch(dir, "ready");
                wait_for(dir, "go");
            }
            /* buffered (stdout is a pipe), not flushed: a checkpoint must neither lose nor
             * misdirect it */
            printf("rank %d: replace sends %d %d %d\n", r, buf[0], buf[2], buf[10]);
            MPI_Status st;
            CHECK_MPI(
                MPI_Sendrecv_replace(buf, 1, every_other, peer, 7, peer, 7, MPI_COMM_WORLD, &st));
            int cnt = -1;
            MPI_Get_count(&st, every_other, &cnt);
            CHECK(st.MPI_SOURCE == peer && st.MPI_TAG == 7 && cnt == 1);
            for (int i = 0; i < 12; i++)
                CHECK(buf[i] == (i % 2 == 0 ? peer : r) * 1000 + i);
            printf("rank %d: replace got %d %d %d from %d\n", r, buf[0], buf[1], buf[10],
                   st.MPI_SOURCE);
            MPI_Type_free(&every_other);
        }
    } else if (strcmp(mode, "winfree") == 0) {
        /* a window whose members reach MPI_Win_free far apart: rank 0 at once, rank 1 after DIR/go
         */
        int mine[4] = {r * 10, r * 10 + 1, r * 10 + 2, r * 10 + 3}, got = -1;
        MPI_Win win;
        CHECK_MPI(
            MPI_Win_create(mine, sizeof mine, sizeof(int), MPI_INFO_NULL, MPI_COMM_WORLD, &win));
        int peer = (r + 1) % mpit_size;
        CHECK_MPI(MPI_Win_fence(0, win));
        CHECK_MPI(MPI_Get(&got, 1, MPI_INT, peer, 2, 1, MPI_INT, win));
        CHECK_MPI(MPI_Win_fence(0, win));
        CHECK(got == peer * 10 + 2);
        printf("rank %d: winfree got %d from %d\n", r, got, peer);
        if (r == 0) touch(dir, "ready");
        if (r == 1) wait_for(dir, "go");
        CHECK_MPI(MPI_Win_free(&win));
        CHECK(win == MPI_WIN_NULL);
        printf("rank %d: winfree freed\n", r);
    } else if (strcmp(mode, "windyn") == 0) {
        /* a dynamic window whose members reach MPI_Win_create_dynamic far apart: rank 0 at once,
         * rank 1 after DIR/go; then each reads its right neighbour's attached region */
        if (r == 0) touch(dir, "ready");
        if (r == 1) wait_for(dir, "go");
        MPI_Win win;
        CHECK_MPI(MPI_Win_create_dynamic(MPI_INFO_NULL, MPI_COMM_WORLD, &win));
        int mine[2] = {r * 10, r * 10 + 1}, got = -1;
        CHECK_MPI(MPI_Win_attach(win, mine, sizeof mine));
        MPI_Aint at, *where = calloc((size_t)mpit_size, sizeof(MPI_Aint));
        CHECK_MPI(MPI_Get_address(&mine[1], &at));
        CHECK_MPI(MPI_Allgather(&at, 1, MPI_AINT, where, 1, MPI_AINT, MPI_COMM_WORLD));
        int peer = (r + 1) % mpit_size;
        CHECK_MPI(MPI_Win_fence(0, win));
        CHECK_MPI(MPI_Get(&got, 1, MPI_INT, peer, where[peer], 1, MPI_INT, win));
        CHECK_MPI(MPI_Win_fence(0, win));
        CHECK(got == peer * 10 + 1);
        printf("rank %d: windyn got %d from %d\n", r, got, peer);
        CHECK_MPI(MPI_Win_detach(win, mine));
        CHECK_MPI(MPI_Win_free(&win));
        free(where);
    } else if (strcmp(mode, "disconnect") == 0) {
        /* a communicator whose members reach MPI_Comm_disconnect far apart: rank 0 at once, rank 1
         * after DIR/go */
        MPI_Comm d;
        CHECK_MPI(MPI_Comm_dup(MPI_COMM_WORLD, &d));
        int mine = r * 10 + 3, got = -1, peer = (r + 1) % mpit_size;
        int left = (r + mpit_size - 1) % mpit_size;
        CHECK_MPI(MPI_Sendrecv(&mine, 1, MPI_INT, peer, 5, &got, 1, MPI_INT, left, 5, d,
                               MPI_STATUS_IGNORE));
        CHECK(got == left * 10 + 3);
        printf("rank %d: disconnect got %d from %d\n", r, got, left);
        if (r == 0) touch(dir, "ready");
        if (r == 1) wait_for(dir, "go");
        CHECK_MPI(MPI_Comm_disconnect(&d));
        CHECK(d == MPI_COMM_NULL);
    } else {
        CHECK(0);
    }
    return mpit_finish();
}
