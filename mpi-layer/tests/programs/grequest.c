// SPDX-License-Identifier: Apache-2.0
// Generalized requests and user data representations: MPI calls back into user code from inside
// Wait/Test/Cancel and MPI-IO. Output must match between mpirun and ghostrun.
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mpit.h"

struct greq_state {
    int value;
    int queried, freed, cancelled;
};

static int query_fn(void *extra, MPI_Status *status) {
    struct greq_state *s = extra;
    s->queried++;
    MPI_Status_set_elements(status, MPI_INT, s->value);
    MPI_Status_set_cancelled(status, s->cancelled);
    status->MPI_SOURCE = MPI_UNDEFINED;
    status->MPI_TAG = MPI_UNDEFINED;
    return MPI_SUCCESS;
}
static int free_fn(void *extra) {
    ((struct greq_state *)extra)->freed++;
    return MPI_SUCCESS;
}
static int cancel_fn(void *extra, int complete) {
    struct greq_state *s = extra;
    if (!complete) s->cancelled = 1;
    return MPI_SUCCESS;
}

static int extents;
static int extent_fn(MPI_Datatype dt, MPI_Aint *extent, void *extra) {
    int size;
    MPI_Type_size(dt, &size);
    *extent = size;
    extents++;
    (*(int *)extra)++;
    return MPI_SUCCESS;
}

static void generalized_requests(int rank) {
    struct greq_state s = {100 + rank, 0, 0, 0};
    MPI_Request r;
    CHECK_MPI(MPI_Grequest_start(query_fn, free_fn, cancel_fn, &s, &r));
    int flag = 1;
    MPI_Status st;
    CHECK_MPI(MPI_Test(&r, &flag, &st));
    CHECK_MPI(MPI_Grequest_complete(r));
    CHECK_MPI(MPI_Wait(&r, &st));
    int count = -1;
    MPI_Get_count(&st, MPI_INT, &count);
    printf("rank %d: greq test-before-complete=%d count=%d queried=%d freed=%d null=%d\n", rank,
           flag, count, s.queried > 0, s.freed, r == MPI_REQUEST_NULL);
    CHECK(flag == 0 && count == 100 + rank && s.queried > 0 && s.freed == 1 &&
          r == MPI_REQUEST_NULL);

    // Cancelled before completion; then mixed with a point-to-point request in Waitall.
    struct greq_state c = {7, 0, 0, 0};
    MPI_Request reqs[2];
    CHECK_MPI(MPI_Grequest_start(query_fn, free_fn, cancel_fn, &c, &reqs[0]));
    CHECK_MPI(MPI_Cancel(&reqs[0]));
    int peer = rank ^ 1, out = rank * 10, in = -1;
    CHECK_MPI(MPI_Irecv(&in, 1, MPI_INT, peer, 5, MPI_COMM_WORLD, &reqs[1]));
    CHECK_MPI(MPI_Send(&out, 1, MPI_INT, peer, 5, MPI_COMM_WORLD));
    CHECK_MPI(MPI_Grequest_complete(reqs[0]));
    MPI_Status sts[2];
    CHECK_MPI(MPI_Waitall(2, reqs, sts));
    int cancelled = 0;
    MPI_Test_cancelled(&sts[0], &cancelled);
    printf("rank %d: greq cancelled=%d freed=%d recv=%d from %d\n", rank, cancelled, c.freed, in,
           sts[1].MPI_SOURCE);
    CHECK(cancelled == 1 && c.freed == 1 && in == peer * 10 && sts[1].MPI_SOURCE == peer);
}

// A user data representation. Neither MPI here converts through user functions (Open MPI refuses
// user datareps; MPICH registers one with MPI_CONVERSION_FN_NULL, but ROMIO will not set a view
// with it): the registration crosses the split, and whatever the MPI answers, ghost answers too.
static void data_representation(int rank, const char *dir) {
    static int calls;
    int rc = MPI_Register_datarep("ghost_ext", MPI_CONVERSION_FN_NULL, MPI_CONVERSION_FN_NULL,
                                  extent_fn, &calls);
    if (rc != MPI_SUCCESS) {
        int cls;
        MPI_Error_class(rc, &cls);
        printf("rank %d: datarep refused by this MPI, class %d\n", rank, cls);
        return;
    }
    char path[512];
    snprintf(path, sizeof path, "%s/datarep.%d", dir, rank);
    MPI_File fh;
    CHECK_MPI(
        MPI_File_open(MPI_COMM_SELF, path, MPI_MODE_CREATE | MPI_MODE_RDWR, MPI_INFO_NULL, &fh));
    int data[4] = {0x01020304, 0x0a0b0c0d, rank, -2}, back[4] = {0};
    rc = MPI_File_set_view(fh, 0, MPI_INT, MPI_INT, "ghost_ext", MPI_INFO_NULL);
    if (rc != MPI_SUCCESS) { // MPICH registers it, then ROMIO refuses to use it
        int cls;
        MPI_Error_class(rc, &cls);
        printf("rank %d: datarep registered, view refused by this MPI, class %d\n", rank, cls);
        CHECK_MPI(MPI_File_close(&fh));
        unlink(path);
        return;
    }
    CHECK_MPI(MPI_File_write_at(fh, 0, data, 4, MPI_INT, MPI_STATUS_IGNORE));
    CHECK_MPI(MPI_File_sync(fh));
    CHECK_MPI(MPI_File_read_at(fh, 0, back, 4, MPI_INT, MPI_STATUS_IGNORE));
    char rep[MPI_MAX_DATAREP_STRING + 1] = "";
    MPI_Offset disp;
    MPI_Datatype et, ft;
    CHECK_MPI(MPI_File_get_view(fh, &disp, &et, &ft, rep));
    CHECK_MPI(MPI_File_close(&fh));
    unlink(path);
    printf("rank %d: datarep %s roundtrip=%d extent-callbacks>0=%d\n", rank, rep,
           memcmp(back, data, sizeof data) == 0, calls > 0 && extents > 0);
    CHECK(memcmp(back, data, sizeof data) == 0 && calls > 0 && strcmp(rep, "ghost_ext") == 0);
}

int main(int argc, char **argv) {
    mpit_init(&argc, &argv, "grequest");
    CHECK(mpit_size % 2 == 0); // pairs of ranks exchange a message
    if (mpit_size % 2 == 0) generalized_requests(mpit_rank);
    char dir[64];
    snprintf(dir, sizeof dir, "/tmp/ghost-mpit-datarep-%d", (int)getpid());
    mkdir(dir, 0700);
    data_representation(mpit_rank, dir);
    rmdir(dir);
    return mpit_finish();
}
