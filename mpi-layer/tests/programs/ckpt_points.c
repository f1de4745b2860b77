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
 *   data must land with the vector's stride; a status's MPI_ERROR preset by the program stays.
 * CASE contents: every rank holds a struct datatype built from a vector it has freed, and the
 *   vector as MPI_Type_get_contents handed it back; after the point both are decoded and used. */
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

/* The vector a struct was built from, checked by decoding it and by a message sent with it. */
static void check_vector(MPI_Datatype v) {
    int ni = -1, na = -1, nd = -1, comb = -1, ints[3], sz = -1;
    MPI_Aint addrs[1];
    MPI_Datatype inner[1];
    CHECK_MPI(MPI_Type_get_envelope(v, &ni, &na, &nd, &comb));
    CHECK(comb == MPI_COMBINER_VECTOR && ni == 3 && na == 0 && nd == 1);
    CHECK_MPI(MPI_Type_get_contents(v, 3, 0, 1, ints, addrs, inner));
    CHECK(ints[0] == 3 && ints[1] == 1 && ints[2] == 2 && inner[0] == MPI_INT);
    CHECK_MPI(MPI_Type_size(v, &sz));
    CHECK(sz == 3 * (int)sizeof(int));
    int out[6] = {1, -1, 2, -1, 3, -1}, in[6] = {0, 0, 0, 0, 0, 0};
    MPI_Datatype c; /* returned types are not committed: a committed duplicate carries data */
    CHECK_MPI(MPI_Type_dup(v, &c));
    CHECK_MPI(MPI_Type_commit(&c));
    CHECK_MPI(MPI_Sendrecv(out, 1, c, 0, 70, in, 1, c, 0, 70, MPI_COMM_SELF, MPI_STATUS_IGNORE));
    CHECK(in[0] == 1 && in[2] == 2 && in[4] == 3 && in[1] == 0);
    CHECK_MPI(MPI_Type_free(&c));
}

static void case_contents(void) {
    MPI_Datatype vec, st, got[2];
    int bl[2] = {1, 1}, ints[3];
    MPI_Aint disp[2] = {0, 64}, addrs[2];
    MPI_Datatype members[2];
    CHECK_MPI(MPI_Type_vector(3, 1, 2, MPI_INT, &vec));
    members[0] = vec;
    members[1] = MPI_DOUBLE;
    CHECK_MPI(MPI_Type_create_struct(2, bl, disp, members, &st));
    CHECK_MPI(MPI_Type_commit(&st));
    CHECK_MPI(MPI_Type_free(&vec));
    CHECK_MPI(MPI_Type_get_contents(st, 3, 2, 2, ints, addrs, got));
    CHECK(ints[0] == 2 && got[1] == MPI_DOUBLE);
    point();
    check_vector(got[0]);
    CHECK_MPI(MPI_Type_free(&got[0]));
    MPI_Datatype again[2];
    CHECK_MPI(MPI_Type_get_contents(st, 3, 2, 2, ints, addrs, again));
    check_vector(again[0]);
    CHECK_MPI(MPI_Type_free(&again[0]));
    CHECK_MPI(MPI_Type_free(&st));
    printf("rank %d: contents: the struct's vector decoded and used\n", mpit_rank);
}

int main(int argc, char **argv) {
    mpit_init(&argc, &argv, "ckpt_points");
    if (argc < 3) {
        if (mpit_rank == 0) fprintf(stderr, "usage: ckpt_points DIR mprobe|bsend|freed|contents\n");
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
    else if (strcmp(argv[2], "contents") == 0)
        case_contents();
    else
        CHECK(!"unknown case");
    return mpit_finish();
}
