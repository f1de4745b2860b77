/* SPDX-License-Identifier: Apache-2.0 */
/* MPI-IO basics through the split: open, views with a derived filetype, collective and independent
 * writes/reads, nonblocking read, size, group/info/view queries, close, delete. */
#include <unistd.h>

#include "mpit.h"

int main(int argc, char **argv) {
    mpit_init(&argc, &argv, "io");
    char path[128];
    if (mpit_rank == 0) snprintf(path, sizeof path, "/tmp/ghost-mpit-io-%d", (int)getpid());
    MPI_Bcast(path, sizeof path, MPI_CHAR, 0, MPI_COMM_WORLD);
    MPI_File fh;
    CHECK_MPI(
        MPI_File_open(MPI_COMM_WORLD, path, MPI_MODE_CREATE | MPI_MODE_RDWR, MPI_INFO_NULL, &fh));
    CHECK(fh != MPI_FILE_NULL);
    /* each rank owns every size-th int: a strided view */
    MPI_Datatype ft;
    MPI_Type_vector(8, 1, mpit_size, MPI_INT, &ft);
    MPI_Type_commit(&ft);
    CHECK_MPI(MPI_File_set_view(fh, (MPI_Offset)(mpit_rank * sizeof(int)), MPI_INT, ft, "native",
                                MPI_INFO_NULL));
    int out[8], in[8];
    for (int i = 0; i < 8; i++)
        out[i] = i * mpit_size + mpit_rank;
    MPI_Status st;
    CHECK_MPI(MPI_File_write_at_all(fh, 0, out, 8, MPI_INT, &st));
    int n;
    MPI_Get_count(&st, MPI_INT, &n);
    CHECK(n == 8);
    CHECK_MPI(MPI_File_sync(fh));
    MPI_Barrier(MPI_COMM_WORLD);
    memset(in, 0, sizeof in);
    CHECK_MPI(MPI_File_read_at(fh, 0, in, 8, MPI_INT, &st));
    for (int i = 0; i < 8; i++)
        CHECK(in[i] == out[i]);
    MPI_Request rq;
    memset(in, 0, sizeof in);
    CHECK_MPI(MPI_File_iread_at(fh, 4, in, 4, MPI_INT, &rq));
    CHECK_MPI(MPI_Wait(&rq, &st));
    CHECK(in[0] == out[4] && in[3] == out[7] && rq == MPI_REQUEST_NULL);
    MPI_Offset size;
    CHECK_MPI(MPI_File_get_size(fh, &size));
    CHECK(size == (MPI_Offset)(8 * mpit_size * sizeof(int)));
    MPI_Group g;
    CHECK_MPI(MPI_File_get_group(fh, &g));
    int gs;
    MPI_Group_size(g, &gs);
    CHECK(gs == mpit_size);
    MPI_Group_free(&g);
    MPI_Offset disp;
    MPI_Datatype et, vt;
    char rep[MPI_MAX_DATAREP_STRING];
    CHECK_MPI(MPI_File_get_view(fh, &disp, &et, &vt, rep));
    CHECK(disp == (MPI_Offset)(mpit_rank * sizeof(int)) && et == MPI_INT &&
          strcmp(rep, "native") == 0);
    int vsz;
    MPI_Type_size(vt, &vsz);
    CHECK(vsz == 8 * (int)sizeof(int));
    if (vt != MPI_INT) MPI_Type_free(&vt);
    MPI_Info info;
    CHECK_MPI(MPI_File_get_info(fh, &info));
    CHECK(info != MPI_INFO_NULL);
    MPI_Info_free(&info);
    MPI_Errhandler eh;
    CHECK_MPI(MPI_File_get_errhandler(fh, &eh));
    CHECK(eh == MPI_ERRORS_RETURN); /* the default for files */
    MPI_Errhandler_free(&eh);
    CHECK_MPI(MPI_File_close(&fh));
    CHECK(fh == MPI_FILE_NULL);
    MPI_Type_free(&ft);
    MPI_Barrier(MPI_COMM_WORLD);
    if (mpit_rank == 0) CHECK_MPI(MPI_File_delete(path, MPI_INFO_NULL));
    return mpit_finish();
}
