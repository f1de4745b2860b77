/* SPDX-License-Identifier: Apache-2.0 */
/* Attributes that live across checkpoints (run_job_ckpt.sh), as libraries cache state on
 * communicators: made once before the first step: a keyval made and freed (so that a fresh MPI
 * would number the next ones otherwise), a keyval freed right after setting its one attribute on a
 * duplicate of MPI_COMM_WORLD (its delete callback must run at the duplicate's MPI_Comm_free), a
 * communicator keyval with copy and delete callbacks (value set on MPI_COMM_WORLD and on a
 * duplicate, and copied by the callback into a duplicate of that), one with the predefined
 * MPI_COMM_NULL_COPY_FN / MPI_COMM_NULL_DELETE_FN, a deprecated MPI_Keyval_create one (MPI_Attr_put
 * / MPI_Attr_get), and a datatype keyval on a vector type. Each step checks every attribute's value
 * and flag, duplicates a communicator (the copy callback runs and gets the program's keyval) and
 * frees the duplicate (the delete callback runs), reads MPI_TAG_UB, reduces on the duplicate and
 * folds it all into a checksum; SLEEP_MS of sleep between steps (outside MPI). Two info objects
 * (one a duplicate changed after MPI_Info_dup) are kept too, their keys and values checked in every
 * step. At the end the objects are freed: each delete callback must have run once per attribute
 * that existed. Also kept and used in every step: a communicator from MPI_Comm_dup_with_info (its
 * info freed at once), a distributed-array datatype and an MPI_Type_create_f90_real type, and a
 * window (MPI_Win_create) with fence and lock epochs every step, closed before the sleep, a window
 * made by MPI_Win_allocate with a fence epoch every step, a window held under MPI_Win_lock_all from
 * its creation to its end (as ARMCI-MPI and SHMEM-over-MPI libraries hold theirs: every checkpoint
 * finds it locked) with a fetch-and-op completed by a flush of its one target and a put completed
 * by a flush_all every step, a dynamic window (regions attached at the program's addresses, one
 * attached and detached every other step), and an MPI_Alloc_mem block. The windows have a name and
 * error handlers (the program's own, one of them freed at once, and MPI_ERRORS_RETURN), checked and
 * called in every step; the allocated window holds an attribute (a window keyval with a delete
 * callback, which must run once, at its MPI_Win_free). Prints only at the end. Usage: attr_steps
 * STEPS [SLEEP_MS] */
#include "mpit.h"

/* The deprecated keyval calls are used on purpose (old codes still do). */
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"

static int kv_copy = MPI_KEYVAL_INVALID, kv_null = MPI_KEYVAL_INVALID, kv_old = MPI_KEYVAL_INVALID,
           kv_type = MPI_KEYVAL_INVALID, kv_win = MPI_KEYVAL_INVALID;
static long copies, deletes, type_deletes, win_deletes, fin_deletes;
static int kv_fin_number; /* a keyval freed right after its one attribute was set (HDF5 does so) */
static int extra_tag = 4242;        /* extra_state: its address is checked in every callback */
static long awin_calls, lwin_calls; /* calls of the windows' error handlers */
static MPI_Win awin, lwin;

static void awin_errh(MPI_Win *w, int *code, ...) {
    CHECK(*w == awin && *code == MPI_ERR_OTHER);
    awin_calls++;
}
static void lwin_errh(MPI_Win *w, int *code, ...) {
    CHECK(*w == lwin && *code == MPI_ERR_OTHER);
    lwin_calls++;
}

static int copy_cb(MPI_Comm c, int kv, void *extra, void *in, void *out, int *flag) {
    (void)c;
    CHECK(kv == kv_copy && extra == &extra_tag);
    copies++;
    *(void **)out = (void *)((intptr_t)in + 1);
    *flag = 1;
    return MPI_SUCCESS;
}

static int failing_copy_cb(MPI_Comm c, int kv, void *extra, void *in, void *out, int *flag) {
    (void)c, (void)kv, (void)extra, (void)in, (void)out;
    *flag = 0;
    return MPI_ERR_OTHER;
}

static int delete_cb(MPI_Comm c, int kv, void *val, void *extra) {
    (void)c;
    (void)val;
    CHECK(kv == kv_copy && extra == &extra_tag);
    deletes++;
    return MPI_SUCCESS;
}

static int type_delete_cb(MPI_Datatype t, int kv, void *val, void *extra) {
    (void)t;
    CHECK(kv == kv_type && val == (void *)(intptr_t)77 && extra == NULL);
    type_deletes++;
    return MPI_SUCCESS;
}

static int win_delete_cb(MPI_Win w, int kv, void *val, void *extra) {
    CHECK(w == awin && kv == kv_win && val == (void *)(intptr_t)(300 + mpit_rank) &&
          extra == &extra_tag);
    win_deletes++;
    return MPI_SUCCESS;
}

static int fin_delete_cb(MPI_Comm c, int kv, void *val, void *extra) {
    (void)c;
    CHECK(kv == kv_fin_number && val == (void *)(intptr_t)(500 + mpit_rank) && extra == NULL);
    fin_deletes++;
    return MPI_SUCCESS;
}

static void expect(MPI_Comm c, int kv, int want_flag, intptr_t want) {
    void *v = NULL;
    int flag = -1;
    CHECK_MPI(MPI_Comm_get_attr(c, kv, &v, &flag));
    CHECK(flag == want_flag);
    if (want_flag) CHECK((intptr_t)v == want);
}

int main(int argc, char **argv) {
    mpit_init(&argc, &argv, "attr_steps");
    int steps = argc > 1 ? atoi(argv[1]) : 100;
    int sleep_ms = argc > 2 ? atoi(argv[2]) : 20;
    int r = mpit_rank;

    int gone;
    CHECK_MPI(MPI_Comm_create_keyval(MPI_COMM_NULL_COPY_FN, MPI_COMM_NULL_DELETE_FN, &gone, NULL));
    CHECK_MPI(MPI_Comm_free_keyval(&gone));
    /* An attribute whose keyval the program frees at once: MPI keeps the keyval for it, and its
     * delete callback runs when the communicator goes. */
    MPI_Comm dfin;
    int kv_fin;
    CHECK_MPI(MPI_Comm_dup(MPI_COMM_WORLD, &dfin));
    CHECK_MPI(MPI_Comm_create_keyval(MPI_COMM_NULL_COPY_FN, fin_delete_cb, &kv_fin, NULL));
    kv_fin_number = kv_fin;
    CHECK_MPI(MPI_Comm_set_attr(dfin, kv_fin, (void *)(intptr_t)(500 + r)));
    CHECK_MPI(MPI_Comm_free_keyval(&kv_fin));
    CHECK(gone == MPI_KEYVAL_INVALID);
    CHECK_MPI(MPI_Comm_create_keyval(copy_cb, delete_cb, &kv_copy, &extra_tag));
    CHECK_MPI(
        MPI_Comm_create_keyval(MPI_COMM_NULL_COPY_FN, MPI_COMM_NULL_DELETE_FN, &kv_null, NULL));
    CHECK_MPI(MPI_Keyval_create(MPI_NULL_COPY_FN, MPI_NULL_DELETE_FN, &kv_old, NULL));
    CHECK_MPI(MPI_Type_create_keyval(MPI_TYPE_NULL_COPY_FN, type_delete_cb, &kv_type, NULL));
    CHECK_MPI(MPI_Win_create_keyval(MPI_WIN_NULL_COPY_FN, win_delete_cb, &kv_win, &extra_tag));

    /* a window over the program's memory: a fence epoch and a passive-target lock every step,
     * closed before the sleep (made before any attribute is set: an MPI may duplicate the
     * communicator inside); its memory accumulates what the neighbour puts, so it must come
     * back exposed at the same address with the same contents */
    long long *wmem = calloc(2 * (size_t)mpit_size, sizeof(long long));
    MPI_Win win;
    CHECK_MPI(MPI_Win_create(wmem, 2 * mpit_size * (MPI_Aint)sizeof(long long), sizeof(long long),
                             MPI_INFO_NULL, MPI_COMM_WORLD, &win));
    CHECK_MPI(MPI_Win_fence(0, win));
    /* memory the program got from MPI: a window MPI_Win_allocate made (a fence epoch every step:
     * the left neighbour's put must be there) and an MPI_Alloc_mem block that keeps a running
     * sum; both must come back with their contents at the same addresses */
    long long *amem = NULL, *sum = NULL;
    CHECK_MPI(MPI_Win_allocate(2 * (MPI_Aint)sizeof(long long), sizeof(long long), MPI_INFO_NULL,
                               MPI_COMM_WORLD, &amem, &awin));
    amem[0] = amem[1] = 0;
    CHECK_MPI(MPI_Win_fence(0, awin));
    /* an MPI_Comm_dup that an attribute copy callback fails gives MPI_COMM_NULL */
    {
        MPI_Comm fc, newc = MPI_COMM_WORLD;
        int kv_fail;
        CHECK_MPI(MPI_Comm_dup(MPI_COMM_WORLD, &fc));
        CHECK_MPI(MPI_Comm_set_errhandler(fc, MPI_ERRORS_RETURN));
        CHECK_MPI(MPI_Comm_create_keyval(failing_copy_cb, MPI_COMM_NULL_DELETE_FN, &kv_fail, NULL));
        CHECK_MPI(MPI_Comm_set_attr(fc, kv_fail, (void *)(intptr_t)1));
        CHECK(MPI_Comm_dup(fc, &newc) != MPI_SUCCESS);
        CHECK(newc == MPI_COMM_NULL);
        CHECK_MPI(MPI_Comm_delete_attr(fc, kv_fail));
        CHECK_MPI(MPI_Comm_free_keyval(&kv_fail));
        CHECK_MPI(MPI_Comm_free(&fc));
    }
    /* windows' names and error handlers: the program's own handler on awin, MPI_ERRORS_RETURN
     * on win (checked in every step: a restart must set both again) */
    MPI_Errhandler weh;
    CHECK_MPI(MPI_Win_create_errhandler(awin_errh, &weh));
    CHECK_MPI(MPI_Win_set_errhandler(awin, weh));
    CHECK_MPI(MPI_Win_set_errhandler(win, MPI_ERRORS_RETURN));
    CHECK_MPI(MPI_Win_set_name(awin, "ghost allocated window"));
    CHECK_MPI(MPI_Win_set_attr(awin, kv_win, (void *)(intptr_t)(300 + r)));
    long long *lmem = NULL;
    CHECK_MPI(MPI_Win_allocate(2 * (MPI_Aint)sizeof(long long), sizeof(long long), MPI_INFO_NULL,
                               MPI_COMM_WORLD, &lmem, &lwin));
    lmem[0] = lmem[1] = 0;
    CHECK_MPI(MPI_Barrier(MPI_COMM_WORLD)); /* every counter zeroed before any operation */
    CHECK_MPI(MPI_Win_lock_all(0, lwin));
    MPI_Errhandler freed_eh; /* set, then freed at once: the window keeps it */
    CHECK_MPI(MPI_Win_create_errhandler(lwin_errh, &freed_eh));
    CHECK_MPI(MPI_Win_set_errhandler(lwin, freed_eh));
    CHECK_MPI(MPI_Errhandler_free(&freed_eh));
    /* a dynamic window: each rank's region attached at its address (published to the others
     * with MPI_Get_address), written by the left neighbour every step under a lock; a second
     * region attached on even steps and detached on odd ones */
    MPI_Win dwin;
    CHECK_MPI(MPI_Win_create_dynamic(MPI_INFO_NULL, MPI_COMM_WORLD, &dwin));
    long long *dreg = calloc(2, sizeof(long long)), *dextra = calloc(16, sizeof(long long));
    CHECK_MPI(MPI_Win_attach(dwin, dreg, 2 * (MPI_Aint)sizeof(long long)));
    MPI_Aint dmine, *daddr = calloc((size_t)mpit_size, sizeof(MPI_Aint));
    CHECK_MPI(MPI_Get_address(dreg, &dmine));
    CHECK_MPI(MPI_Allgather(&dmine, 1, MPI_AINT, daddr, 1, MPI_AINT, MPI_COMM_WORLD));
    CHECK_MPI(MPI_Alloc_mem(2 * (MPI_Aint)sizeof(long long), MPI_INFO_NULL, &sum));
    sum[0] = 0;
    sum[1] = r;
    MPI_Comm d1, d2;
    CHECK_MPI(MPI_Comm_set_attr(MPI_COMM_WORLD, kv_copy, (void *)(intptr_t)(1000 + r)));
    CHECK_MPI(MPI_Comm_dup(MPI_COMM_WORLD, &d1)); /* copies: d1 gets 1001 + r */
    CHECK_MPI(MPI_Comm_set_attr(d1, kv_null, (void *)(intptr_t)(500 + r)));
    CHECK_MPI(MPI_Attr_put(d1, kv_old, (void *)(intptr_t)(600 + r)));
    CHECK_MPI(MPI_Comm_dup(d1, &d2)); /* copies kv_copy only: d2 gets 1002 + r */
    MPI_Datatype vec;
    CHECK_MPI(MPI_Type_vector(2, 1, 2, MPI_INT, &vec));
    CHECK_MPI(MPI_Type_commit(&vec));
    CHECK_MPI(MPI_Type_set_attr(vec, kv_type, (void *)(intptr_t)77));
    /* info objects kept across steps (as I/O libraries keep their hints) */
    MPI_Info info, info_dup;
    char val[64];
    snprintf(val, sizeof val, "value-%d", r);
    CHECK_MPI(MPI_Info_create(&info));
    CHECK_MPI(MPI_Info_set(info, "ghost_key", val));
    CHECK_MPI(MPI_Info_set(info, "cb_nodes", "2"));
    CHECK_MPI(MPI_Info_dup(info, &info_dup));
    CHECK_MPI(MPI_Info_set(info_dup, "only_in_dup", "yes"));
    CHECK_MPI(MPI_Info_delete(info_dup, "cb_nodes"));
    /* objects of less common creations: a communicator duplicated with hints (their info freed
     * at once, as codes do; the copy callback runs), a distributed-array type (each rank's rows
     * of a 2n x 6 matrix) and a Fortran 90 parameterised real, used in every step */
    MPI_Info hints;
    MPI_Comm dwi;
    CHECK_MPI(MPI_Info_create(&hints));
    CHECK_MPI(MPI_Info_set(hints, "mpi_assert_no_any_tag", "true"));
    CHECK_MPI(MPI_Comm_dup_with_info(MPI_COMM_WORLD, hints, &dwi));
    CHECK_MPI(MPI_Info_free(&hints));
    int n = mpit_size, gsizes[2] = {2 * n, 6},
        distribs[2] = {MPI_DISTRIBUTE_BLOCK, MPI_DISTRIBUTE_BLOCK};
    int dargs[2] = {MPI_DISTRIBUTE_DFLT_DARG, MPI_DISTRIBUTE_DFLT_DARG}, psizes[2] = {n, 1};
    MPI_Datatype darray, f90;
    CHECK_MPI(MPI_Type_create_darray(n, r, 2, gsizes, distribs, dargs, psizes, MPI_ORDER_C, MPI_INT,
                                     &darray));
    CHECK_MPI(MPI_Type_commit(&darray));
    CHECK_MPI(MPI_Type_create_f90_real(15, 300, &f90));
    int *matrix = malloc(sizeof(int) * 12 * (size_t)n);
    for (int i = 0; i < 12 * n; i++)
        matrix[i] = i * 3 + 1;
    long base_copies = copies;
    CHECK(base_copies == 3);

    unsigned long long state = 99 + (unsigned long long)r;
    for (int s = 0; s < steps; s++) {
        mpit_step(s, steps);
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        expect(MPI_COMM_WORLD, kv_copy, 1, 1000 + r);
        {
            void *wval = NULL;
            int wflag = 0;
            CHECK_MPI(MPI_Win_get_attr(awin, kv_win, &wval, &wflag));
            CHECK(wflag && wval == (void *)(intptr_t)(300 + r));
        }
        expect(d1, kv_copy, 1, 1001 + r);
        expect(d2, kv_copy, 1, 1002 + r);
        expect(d1, kv_null, 1, 500 + r);
        expect(d2, kv_null, 0, 0);
        void *v = NULL;
        int flag = 0;
        CHECK_MPI(MPI_Attr_get(d1, kv_old, &v, &flag));
        CHECK(flag && (intptr_t)v == 600 + r);
        CHECK_MPI(MPI_Type_get_attr(vec, kv_type, &v, &flag));
        CHECK(flag && (intptr_t)v == 77);
        int *flavor = NULL; /* what the program asked for, across restarts too */
        CHECK_MPI(MPI_Win_get_attr(awin, MPI_WIN_CREATE_FLAVOR, &flavor, &flag));
        CHECK(flag && *flavor == MPI_WIN_FLAVOR_ALLOCATE);
        CHECK_MPI(MPI_Win_get_attr(win, MPI_WIN_CREATE_FLAVOR, &flavor, &flag));
        CHECK(flag && *flavor == MPI_WIN_FLAVOR_CREATE);
        int *tag_ub = NULL;
        CHECK_MPI(MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_TAG_UB, &tag_ub, &flag));
        CHECK(flag && *tag_ub >= 32767);

        int nkeys = 0, vflag = 0;
        char got[64];
        CHECK_MPI(MPI_Info_get_nkeys(info, &nkeys));
        CHECK(nkeys == 2);
        CHECK_MPI(MPI_Info_get(info, "ghost_key", sizeof got - 1, got, &vflag));
        CHECK(vflag && strcmp(got, val) == 0);
        CHECK_MPI(MPI_Info_get(info, "cb_nodes", sizeof got - 1, got, &vflag));
        CHECK(vflag && strcmp(got, "2") == 0);
        CHECK_MPI(MPI_Info_get_nkeys(info_dup, &nkeys));
        CHECK(nkeys == 2);
        CHECK_MPI(MPI_Info_get(info_dup, "only_in_dup", sizeof got - 1, got, &vflag));
        CHECK(vflag && strcmp(got, "yes") == 0);
        CHECK_MPI(MPI_Info_get(info_dup, "cb_nodes", sizeof got - 1, got, &vflag));
        CHECK(!vflag);

        MPI_Comm tmp;
        CHECK_MPI(MPI_Comm_dup(d2, &tmp)); /* copy callback: tmp gets 1003 + r */
        expect(tmp, kv_copy, 1, 1003 + r);
        long long x = (long long)(state >> 20), total = 0;
        CHECK_MPI(MPI_Allreduce(&x, &total, 1, MPI_LONG_LONG, MPI_SUM, tmp));
        CHECK_MPI(MPI_Comm_free(&tmp)); /* delete callback */
        int packed[4] = {(int)s, -1, (int)r, -1}, out[4] = {0, 0, 0, 0};
        CHECK_MPI(MPI_Sendrecv(packed, 1, vec, 0, s, out, 1, vec, 0, s, MPI_COMM_SELF,
                               MPI_STATUS_IGNORE));
        CHECK(out[0] == s && out[2] == r);
        expect(dwi, kv_copy, 1, 1001 + r);
        CHECK_MPI(MPI_Allreduce(&x, &total, 1, MPI_LONG_LONG, MPI_SUM, dwi));
        int mine[12];
        CHECK_MPI(MPI_Sendrecv(matrix, 1, darray, 0, s, mine, 12, MPI_INT, 0, s, MPI_COMM_SELF,
                               MPI_STATUS_IGNORE));
        for (int i = 0; i < 12; i++)
            CHECK(mine[i] == matrix[12 * r + i]);
        int right = (r + 1) % n, left = (r + n - 1) % n;
        long long one = 1;
        CHECK_MPI(MPI_Put(&x, 1, MPI_LONG_LONG, right, r, 1, MPI_LONG_LONG, win));
        CHECK_MPI(MPI_Win_fence(0, win));
        mpit_mix((unsigned long long)wmem[left]);
        CHECK_MPI(MPI_Win_lock(MPI_LOCK_EXCLUSIVE, right, 0, win));
        CHECK_MPI(
            MPI_Accumulate(&one, 1, MPI_LONG_LONG, right, n + r, 1, MPI_LONG_LONG, MPI_SUM, win));
        CHECK_MPI(MPI_Win_unlock(right, win));
        CHECK_MPI(MPI_Win_fence(0, win));
        CHECK(wmem[n + left] == s + 1);
        long long mark = (s + 1) * 1000LL + r;
        CHECK_MPI(MPI_Put(&mark, 1, MPI_LONG_LONG, right, 0, 1, MPI_LONG_LONG, awin));
        CHECK_MPI(MPI_Win_fence(0, awin));
        CHECK(amem[0] == (s + 1) * 1000LL + left);
        /* under lock_all: my right neighbour's counter holds what I added before (nobody else
         * adds to it), and the left neighbour's mark of this step is in mine */
        long long inc = s + 1, before = -1, lmark = (s + 1) * 100LL + r;
        CHECK_MPI(MPI_Fetch_and_op(&inc, &before, MPI_LONG_LONG, right, 0, MPI_SUM, lwin));
        CHECK_MPI(MPI_Win_flush(right, lwin));
        CHECK(before == (long long)s * (s + 1) / 2);
        CHECK_MPI(MPI_Put(&lmark, 1, MPI_LONG_LONG, right, 1, 1, MPI_LONG_LONG, lwin));
        CHECK_MPI(MPI_Win_flush_all(lwin));
        CHECK_MPI(MPI_Barrier(MPI_COMM_WORLD));
        CHECK_MPI(MPI_Win_sync(lwin));
        CHECK(lmem[1] == (s + 1) * 100LL + left);
        mpit_mix((unsigned long long)(before + lmem[1]));
        CHECK_MPI(MPI_Barrier(MPI_COMM_WORLD)); /* read before the left neighbour's next put */
        long long dval = (s + 1) * 10000LL + r;
        CHECK_MPI(MPI_Win_lock(MPI_LOCK_EXCLUSIVE, right, 0, dwin));
        CHECK_MPI(MPI_Put(&dval, 1, MPI_LONG_LONG, right, daddr[right], 1, MPI_LONG_LONG, dwin));
        CHECK_MPI(MPI_Win_unlock(right, dwin));
        CHECK_MPI(MPI_Barrier(MPI_COMM_WORLD));
        CHECK(dreg[0] == (s + 1) * 10000LL + left);
        if (s % 2 == 0)
            CHECK_MPI(MPI_Win_attach(dwin, dextra, 16 * (MPI_Aint)sizeof(long long)));
        else
            CHECK_MPI(MPI_Win_detach(dwin, dextra));
        CHECK_MPI(MPI_Barrier(MPI_COMM_WORLD)); /* read before the left neighbour's next put */
        mpit_mix((unsigned long long)dreg[0]);
        MPI_Errhandler got_eh;
        char wname[MPI_MAX_OBJECT_NAME] = "";
        int wlen = 0;
        CHECK_MPI(MPI_Win_get_errhandler(awin, &got_eh));
        CHECK(got_eh == weh);
        CHECK_MPI(MPI_Errhandler_free(&got_eh));
        CHECK_MPI(MPI_Win_get_errhandler(win, &got_eh));
        CHECK(got_eh == MPI_ERRORS_RETURN);
        CHECK_MPI(MPI_Errhandler_free(&got_eh));
        CHECK_MPI(MPI_Win_call_errhandler(awin, MPI_ERR_OTHER));
        CHECK_MPI(MPI_Win_call_errhandler(lwin, MPI_ERR_OTHER));
        CHECK(awin_calls == s + 1 && lwin_calls == s + 1);
        CHECK_MPI(MPI_Win_get_name(awin, wname, &wlen));
        CHECK(strcmp(wname, "ghost allocated window") == 0 && wlen == (int)strlen(wname));
        sum[0] += s;
        CHECK(sum[0] == (long long)s * (s + 1) / 2 && sum[1] == r);
        mpit_mix((unsigned long long)amem[0]);
        double d = (double)s / 3.0, e = 0;
        int fsize = 0;
        CHECK_MPI(MPI_Type_size(f90, &fsize));
        CHECK(fsize == 8);
        CHECK_MPI(
            MPI_Sendrecv(&d, 1, f90, 0, s, &e, 1, f90, 0, s, MPI_COMM_SELF, MPI_STATUS_IGNORE));
        CHECK(e == d);
        mpit_mix((unsigned long long)total);
        mpit_mix((unsigned long long)(copies - base_copies) * 7u + (unsigned long long)deletes);

        mpit_sleep_ms(sleep_ms);
    }
    CHECK(copies == base_copies + steps && deletes == steps);
    CHECK_MPI(MPI_Win_free(&win));
    CHECK(win_deletes == 0);
    CHECK_MPI(MPI_Win_free(&awin));
    CHECK(win_deletes == 1);
    CHECK_MPI(MPI_Win_free_keyval(&kv_win));
    CHECK_MPI(MPI_Errhandler_free(&weh));
    if (steps % 2 == 1) CHECK_MPI(MPI_Win_detach(dwin, dextra)); /* the last step attached it */
    CHECK_MPI(MPI_Win_detach(dwin, dreg));
    CHECK_MPI(MPI_Win_free(&dwin));
    free(dreg);
    free(dextra);
    free(daddr);
    CHECK_MPI(MPI_Win_unlock_all(lwin));
    CHECK_MPI(MPI_Barrier(MPI_COMM_WORLD)); /* every rank's operations completed at its target */
    CHECK(lmem[0] == (long long)steps * (steps + 1) / 2);
    CHECK_MPI(MPI_Win_free(&lwin));
    CHECK_MPI(MPI_Free_mem(sum));
    free(wmem);
    CHECK_MPI(MPI_Comm_free(&dwi));
    CHECK_MPI(MPI_Type_free(&darray));
    free(matrix);
    CHECK_MPI(MPI_Comm_free(&d2));
    CHECK_MPI(MPI_Comm_free(&d1));
    CHECK(fin_deletes == 0);
    CHECK_MPI(MPI_Comm_free(&dfin));
    CHECK(fin_deletes == 1);
    CHECK_MPI(MPI_Comm_delete_attr(MPI_COMM_WORLD, kv_copy));
    CHECK(deletes == steps + 4);
    CHECK_MPI(MPI_Type_free(&vec));
    CHECK(type_deletes == 1);
    CHECK_MPI(MPI_Info_free(&info));
    CHECK_MPI(MPI_Info_free(&info_dup));
    CHECK_MPI(MPI_Comm_free_keyval(&kv_copy));
    CHECK_MPI(MPI_Comm_free_keyval(&kv_null));
    CHECK_MPI(MPI_Keyval_free(&kv_old));
    CHECK_MPI(MPI_Type_free_keyval(&kv_type));
    printf("rank %d: attr_steps %d steps copies %ld deletes %ld checksum %016llx\n", r, steps,
           copies, deletes, mpit_sum);
    return mpit_finish();
}
