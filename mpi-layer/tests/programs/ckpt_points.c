/* SPDX-License-Identifier: Apache-2.0 */
/* MPI state that a job checkpoint (ghost checkpoint JOB) must carry, held at one chosen moment
 * (run_job_point.sh). Every rank writes DIR/ready.<rank> once it holds the state, and waits outside
 * MPI until DIR/go exists; the harness checkpoints the job there (with --kill and a restart, or
 * without: the job goes on), then makes DIR/go. Then the state is used and every value checked.
 *   ckpt_points DIR CASE
 * CASE mprobe: rank 1 has matched rank 0's large message (rendezvous) with MPI_Mprobe and not
 *   received it yet (MPI_Mrecv after the point); a small one after it is not matched yet.
 * CASE bsend: every rank has a buffer attached (MPI_Buffer_attach) and one buffered message sent to
 *   its right neighbour that the neighbour receives after the point; after it, more MPI_Bsend
 *   through the same buffer, then MPI_Buffer_detach must hand back the buffer and its size.
 * CASE freed: rank 1 has a receive pending (MPI_Irecv) with a vector datatype on a duplicated
 *   communicator, and has freed both since (MPI keeps them for the receive) and made a new datatype
 *   and communicator (which may take the freed ones' handles); rank 0 sends after the point. The
 *   data must land with the vector's stride; a status's MPI_ERROR preset by the program stays. */
#include <time.h>
#include <unistd.h>

#include "mpit.h"

static const char *dir;

static void point(void) {
    char path[4096];
    snprintf(path, sizeof path, "%s/ready.%d", dir, mpit_rank);
    FILE *f = fopen(path, "w");
    if (f) {
        fprintf(f, "%d\n", (int)getpid());
        fclose(f);
    }
    snprintf(path, sizeof path, "%s/go", dir);
    struct timespec nap = {0, 20 * 1000 * 1000};
    while (access(path, F_OK) != 0)
        nanosleep(&nap, NULL);
}

#define BIG (64 * 1024) /* ints: a rendezvous message on every transport here */

static void case_mprobe(void) {
    int *big = malloc(BIG * sizeof(int)), v[8];
    if (mpit_rank == 0) {
        MPI_Request q;
        for (int i = 0; i < BIG; i++)
            big[i] = 3 * i + 1;
        CHECK_MPI(MPI_Isend(big, BIG, MPI_INT, 1, 40, MPI_COMM_WORLD, &q));
        for (int i = 0; i < 8; i++)
            v[i] = 100 + i;
        CHECK_MPI(MPI_Send(v, 8, MPI_INT, 1, 41, MPI_COMM_WORLD));
        point();
        CHECK_MPI(MPI_Wait(&q, MPI_STATUS_IGNORE));
    } else if (mpit_rank == 1) {
        MPI_Message m = MPI_MESSAGE_NULL;
        MPI_Status st;
        CHECK_MPI(MPI_Mprobe(0, 40, MPI_COMM_WORLD, &m, &st));
        int n = -1;
        MPI_Get_count(&st, MPI_INT, &n);
        CHECK(n == BIG && st.MPI_SOURCE == 0 && st.MPI_TAG == 40);
        point();
        for (int i = 0; i < BIG; i++)
            big[i] = -1;
        CHECK_MPI(MPI_Mrecv(big, BIG, MPI_INT, &m, &st));
        CHECK(m == MPI_MESSAGE_NULL && st.MPI_SOURCE == 0 && st.MPI_TAG == 40);
        MPI_Get_count(&st, MPI_INT, &n);
        CHECK(n == BIG);
        int bad = 0;
        for (int i = 0; i < BIG; i++)
            bad += big[i] != 3 * i + 1;
        CHECK(bad == 0);
        CHECK_MPI(MPI_Recv(v, 8, MPI_INT, 0, 41, MPI_COMM_WORLD, &st));
        CHECK(v[7] == 107);
        printf("rank 1: mprobe: received %d ints, then %d\n", n, v[7]);
    } else {
        point();
    }
    free(big);
}

static void case_bsend(void) {
    int right = (mpit_rank + 1) % mpit_size, left = (mpit_rank + mpit_size - 1) % mpit_size;
    int bsize = 3 * (16 * (int)sizeof(int) + MPI_BSEND_OVERHEAD);
    char *bbuf = malloc((size_t)bsize);
    int v[16], got[16];
    CHECK_MPI(MPI_Buffer_attach(bbuf, bsize));
    for (int i = 0; i < 16; i++)
        v[i] = mpit_rank * 1000 + i;
    CHECK_MPI(MPI_Bsend(v, 16, MPI_INT, right, 50, MPI_COMM_WORLD));
    point();
    CHECK_MPI(MPI_Recv(got, 16, MPI_INT, left, 50, MPI_COMM_WORLD, MPI_STATUS_IGNORE));
    CHECK(got[15] == left * 1000 + 15);
    for (int k = 0; k < 2; k++) {
        v[0] = mpit_rank * 1000 + 500 + k;
        CHECK_MPI(MPI_Bsend(v, 16, MPI_INT, right, 51 + k, MPI_COMM_WORLD));
    }
    for (int k = 0; k < 2; k++) {
        CHECK_MPI(MPI_Recv(got, 16, MPI_INT, left, 51 + k, MPI_COMM_WORLD, MPI_STATUS_IGNORE));
        CHECK(got[0] == left * 1000 + 500 + k);
    }
    void *p = NULL;
    int sz = -1;
    CHECK_MPI(MPI_Buffer_detach(&p, &sz));
    CHECK(p == bbuf && sz == bsize);
    free(bbuf);
    printf("rank %d: bsend: received from %d\n", mpit_rank, left);
}

static void case_freed(void) {
    enum { N = 8, STRIDE = 3 };
    int v[N * STRIDE];
    MPI_Comm dup;
    CHECK_MPI(MPI_Comm_dup(MPI_COMM_WORLD, &dup));
    if (mpit_rank == 0) {
        point();
        for (int i = 0; i < N; i++)
            v[i] = 7 * i + 5;
        CHECK_MPI(MPI_Send(v, N, MPI_INT, 1, 60, dup));
        CHECK_MPI(MPI_Send(v, 1, MPI_INT, 1, 61, MPI_COMM_WORLD));
    } else if (mpit_rank == 1) {
        MPI_Datatype vec, other;
        MPI_Comm again;
        MPI_Request q;
        CHECK_MPI(MPI_Type_vector(N, 1, STRIDE, MPI_INT, &vec));
        CHECK_MPI(MPI_Type_commit(&vec));
        for (int i = 0; i < N * STRIDE; i++)
            v[i] = -1;
        CHECK_MPI(MPI_Irecv(v, 1, vec, 0, 60, dup, &q));
        CHECK_MPI(MPI_Type_free(&vec));
        CHECK_MPI(MPI_Comm_free(&dup));
        CHECK_MPI(MPI_Type_contiguous(2, MPI_DOUBLE, &other));
        CHECK_MPI(MPI_Type_commit(&other));
        CHECK_MPI(MPI_Comm_dup(MPI_COMM_SELF, &again));
        point();
        MPI_Status st;
        st.MPI_ERROR = 4242;
        CHECK_MPI(MPI_Wait(&q, &st));
        CHECK(st.MPI_SOURCE == 0 && st.MPI_TAG == 60);
        int bad = 0;
        for (int i = 0; i < N * STRIDE; i++)
            bad += v[i] != (i % STRIDE == 0 ? 7 * (i / STRIDE) + 5 : -1);
        CHECK(bad == 0);
        int one = 0;
        st.MPI_ERROR = 4343;
        CHECK_MPI(MPI_Recv(&one, 1, MPI_INT, 0, 61, MPI_COMM_WORLD, &st));
        CHECK(one == 5 && st.MPI_ERROR == 4343);
        int sz = 0;
        CHECK_MPI(MPI_Type_size(other, &sz));
        CHECK(sz == 2 * (int)sizeof(double));
        CHECK_MPI(MPI_Comm_size(again, &sz));
        CHECK(sz == 1);
        CHECK_MPI(MPI_Type_free(&other));
        CHECK_MPI(MPI_Comm_free(&again));
        printf("rank 1: freed: the vector receive got %d ints with stride %d\n", N, STRIDE);
    } else {
        point();
    }
    if (mpit_rank != 1) CHECK_MPI(MPI_Comm_free(&dup));
}

int main(int argc, char **argv) {
    mpit_init(&argc, &argv, "ckpt_points");
    if (argc < 3) {
        if (mpit_rank == 0) fprintf(stderr, "usage: ckpt_points DIR mprobe|bsend|freed\n");
        MPI_Finalize();
        return 2;
    }
    dir = argv[1];
    if (strcmp(argv[2], "mprobe") == 0)
        case_mprobe();
    else if (strcmp(argv[2], "bsend") == 0)
        case_bsend();
    else if (strcmp(argv[2], "freed") == 0)
        case_freed();
    else
        CHECK(!"unknown case");
    return mpit_finish();
}
