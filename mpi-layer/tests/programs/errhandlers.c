/* SPDX-License-Identifier: Apache-2.0 */
/* Error handlers and error codes: ERRORS_RETURN, user handlers called with the application's own
 * handles, invalid handles and arguments (same error classes as native), Error_string/class,
 * user error classes, window error handlers. */
#include "mpit.h"

static int calls, tls_bad;
static MPI_Comm seen_comm;
static int seen_class;
static __thread int tls_probe;
static int *main_probe;
static void comm_handler(MPI_Comm *c, int *code, ...) {
    calls++;
    if (&tls_probe != main_probe) tls_bad++; /* called back with the application's TLS */
    seen_comm = *c;
    MPI_Error_class(*code, &seen_class);
}
static int win_calls;
static void win_handler(MPI_Win *w, int *code, ...) {
    (void)w, (void)code;
    win_calls++;
}

static void report(const char *what, int rc) {
    int cls = -1;
    if (rc != MPI_SUCCESS) MPI_Error_class(rc, &cls);
    if (mpit_rank == 0)
        printf("rank 0: %s -> %s class %d\n", what, rc == MPI_SUCCESS ? "ok" : "error", cls);
}

int main(int argc, char **argv) {
    mpit_init(&argc, &argv, "errhandlers");
    MPIT_REPEAT {
        calls = win_calls = 0;
        if (mpit_iter > 0) MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_ARE_FATAL);
        main_probe = &tls_probe;
        int x = 0;
        MPI_Errhandler eh;
        CHECK_MPI(MPI_Comm_get_errhandler(MPI_COMM_WORLD, &eh));
        CHECK(eh == MPI_ERRORS_ARE_FATAL);
        CHECK_MPI(MPI_Errhandler_free(&eh));
        CHECK_MPI(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));

        int rc = MPI_Send(&x, 1, MPI_INT, mpit_size + 5, 0, MPI_COMM_WORLD);
        int cls;
        MPI_Error_class(rc, &cls);
        CHECK(rc != MPI_SUCCESS && cls == MPI_ERR_RANK);
        report("send to invalid rank", rc);
        report("send with negative count", MPI_Send(&x, -1, MPI_INT, 0, 0, MPI_COMM_WORLD));
        report("send with DATATYPE_NULL", MPI_Send(&x, 1, MPI_DATATYPE_NULL, 0, 0, MPI_COMM_WORLD));
        report("send with invalid tag", MPI_Send(&x, 1, MPI_INT, 0, -7, MPI_COMM_WORLD));
        report("reduce with OP_NULL",
               MPI_Reduce(&x, &cls, 1, MPI_INT, MPI_OP_NULL, 0, MPI_COMM_WORLD));
        MPI_Op sum = MPI_SUM;
        report("free of a predefined op", MPI_Op_free(&sum));
        MPI_Datatype dnull = MPI_DATATYPE_NULL;
        report("commit of DATATYPE_NULL", MPI_Type_commit(&dnull));
        int gs;
        report("size of GROUP_NULL", MPI_Group_size(MPI_GROUP_NULL, &gs));
        char es[MPI_MAX_ERROR_STRING];
        int len;
        CHECK_MPI(MPI_Error_string(rc, es, &len));
        CHECK(len > 0);

        /* a user handler, inherited by a duplicate; it sees the application's handle */
        MPI_Errhandler mine;
        CHECK_MPI(MPI_Comm_create_errhandler(comm_handler, &mine));
        MPI_Comm dup;
        MPI_Comm_dup(MPI_COMM_WORLD, &dup);
        CHECK_MPI(MPI_Comm_set_errhandler(dup, mine));
        MPI_Errhandler back;
        CHECK_MPI(MPI_Comm_get_errhandler(dup, &back));
        CHECK(back == mine);
        MPI_Errhandler_free(&back);
        rc = MPI_Send(&x, 1, MPI_INT, mpit_size + 1, 0, dup);
        CHECK(calls == 1 && seen_comm == dup && seen_class == MPI_ERR_RANK);
        CHECK_MPI(MPI_Comm_call_errhandler(dup, MPI_ERR_OTHER));
        CHECK(calls == 2 && seen_class == MPI_ERR_OTHER);
        MPI_Comm dup2;
        MPI_Comm_dup(dup, &dup2);
        MPI_Send(&x, 1, MPI_INT, -3, 0, dup2);
        CHECK(calls == 3 && seen_comm == dup2 && tls_bad == 0);
        MPI_Comm_free(&dup2);
        MPI_Comm_free(&dup);
        CHECK_MPI(MPI_Errhandler_free(&mine));
        CHECK(mine == MPI_ERRHANDLER_NULL);

        /* user error classes and codes */
        int ucls, ucode;
        CHECK_MPI(MPI_Add_error_class(&ucls));
        CHECK_MPI(MPI_Add_error_code(ucls, &ucode));
        CHECK_MPI(MPI_Add_error_string(ucode, "ghost test error"));
        MPI_Error_string(ucode, es, &len);
        CHECK(strcmp(es, "ghost test error") == 0);
        MPI_Error_class(ucode, &cls);
        CHECK(cls == ucls);

        /* window error handler */
        int mem[4];
        MPI_Win w;
        MPI_Win_create(mem, sizeof mem, sizeof(int), MPI_INFO_NULL, MPI_COMM_WORLD, &w);
        MPI_Errhandler weh;
        CHECK_MPI(MPI_Win_create_errhandler(win_handler, &weh));
        CHECK_MPI(MPI_Win_set_errhandler(w, weh));
        CHECK_MPI(MPI_Win_call_errhandler(w, MPI_ERR_OTHER));
        CHECK(win_calls == 1);
        MPI_Errhandler_free(&weh);
        MPI_Win_free(&w);
    }
    return mpit_finish();
}
