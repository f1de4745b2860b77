/* SPDX-License-Identifier: Apache-2.0 */
/* MPI-IO files that live across checkpoints (run_job_ckpt.sh), as a solver keeps its output
 * open: a file shared by every rank (opened with an info object freed at once), with a view
 * that interleaves the ranks' blocks through a resized datatype freed after MPI_File_set_view,
 * in atomic mode; and a file per rank (MPI_COMM_SELF) with MPI_ERRORS_ARE_FATAL set on it. Each
 * step writes a block with MPI_File_write_all (the individual file pointer moves on), one word
 * to the rank's file with MPI_File_write, checks both pointers and the file's error handler,
 * reads the block back with MPI_File_read_at_all, and leaves an MPI_File_iread_at pending
 * across the sleep between steps (a checkpoint then finds it in flight); every fifth step a
 * scratch file opened with MPI_MODE_DELETE_ON_CLOSE is written, read and closed. A log file
 * shared by every rank is written through its shared file pointer every third step (a record of
 * each rank with MPI_File_write_ordered, then rank 0's marker with MPI_File_write_shared), its
 * shared pointer checked. At the end the
 * view goes back to plain integers and every block of every rank is checked, as is each rank's
 * file. The rank's file is written through MPI_File_f2c of its Fortran handle, taken once (as
 * a Fortran program holds it). The files live in a directory rank 0 makes (under TMPDIR or /tmp)
 * and removes. Prints only at the end. Usage: mpiio_steps STEPS [SLEEP_MS] */
#include <dirent.h>

#include "mpit.h"

#define B 4 /* integers per rank per step */

static int value(int step, int rank, int i) {
    return step * 1000 + rank * 10 + i;
}

int main(int argc, char **argv) {
    mpit_init(&argc, &argv, "mpiio_steps");
    int steps = argc > 1 ? atoi(argv[1]) : 100;
    int sleep_ms = argc > 2 ? atoi(argv[2]) : 20;
    int r = mpit_rank, n = mpit_size;

    char dir[512] = "";
    if (r == 0) {
        const char *base = getenv("TMPDIR");
        snprintf(dir, sizeof dir, "%s/ghost-file-steps.XXXXXX", base && *base ? base : "/tmp");
        CHECK(mkdtemp(dir) != NULL);
    }
    CHECK_MPI(MPI_Bcast(dir, sizeof dir, MPI_CHAR, 0, MPI_COMM_WORLD));
    char shared_path[600], mine_path[600], scratch_path[600], log_path[600];
    snprintf(shared_path, sizeof shared_path, "%s/shared.dat", dir);
    snprintf(mine_path, sizeof mine_path, "%s/rank-%d.dat", dir, r);
    snprintf(scratch_path, sizeof scratch_path, "%s/scratch.dat", dir);
    snprintf(log_path, sizeof log_path, "%s/log.dat", dir);

    MPI_Info info;
    CHECK_MPI(MPI_Info_create(&info));
    CHECK_MPI(MPI_Info_set(info, "access_style", "write_mostly"));
    MPI_File fs, fm;
    CHECK_MPI(
        MPI_File_open(MPI_COMM_WORLD, shared_path, MPI_MODE_CREATE | MPI_MODE_RDWR, info, &fs));
    CHECK_MPI(MPI_Info_free(&info));
    MPI_Datatype block, ftype;
    CHECK_MPI(MPI_Type_contiguous(B, MPI_INT, &block));
    CHECK_MPI(MPI_Type_create_resized(block, 0, (MPI_Aint)(B * n * sizeof(int)), &ftype));
    CHECK_MPI(MPI_Type_commit(&ftype));
    CHECK_MPI(MPI_Type_free(&block));
    CHECK_MPI(MPI_File_set_view(fs, (MPI_Offset)(r * B * sizeof(int)), MPI_INT, ftype, "native",
                                MPI_INFO_NULL));
    CHECK_MPI(MPI_Type_free(&ftype));
    CHECK_MPI(MPI_File_set_atomicity(fs, 1));
    CHECK_MPI(MPI_File_open(MPI_COMM_SELF, mine_path, MPI_MODE_CREATE | MPI_MODE_RDWR,
                            MPI_INFO_NULL, &fm));
    CHECK_MPI(MPI_File_set_errhandler(fm, MPI_ERRORS_ARE_FATAL));
    MPI_File flog;
    CHECK_MPI(MPI_File_open(MPI_COMM_WORLD, log_path, MPI_MODE_CREATE | MPI_MODE_RDWR,
                            MPI_INFO_NULL, &flog));
    CHECK_MPI(MPI_File_set_view(flog, 0, MPI_INT, MPI_INT, "native", MPI_INFO_NULL));
    /* The rank's file as a Fortran program holds it (its Fortran handle), taken back each step */
    const MPI_Fint fm_fortran = MPI_File_c2f(fm);

    unsigned long long state = 7 + (unsigned long long)r;
    int first[B] = {0};
    MPI_Request pending = MPI_REQUEST_NULL;
    for (int s = 0; s < steps; s++) {
        mpit_step(s, steps);
        if (pending != MPI_REQUEST_NULL) { /* started before the sleep */
            MPI_Status st;
            int count = -1;
            CHECK_MPI(MPI_Wait(&pending, &st));
            CHECK_MPI(MPI_Get_count(&st, MPI_INT, &count));
            CHECK(count == B);
            for (int i = 0; i < B; i++)
                CHECK(first[i] == value(0, r, i));
        }
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        int vals[B], got[B];
        for (int i = 0; i < B; i++)
            vals[i] = value(s, r, i);
        MPI_Status st;
        CHECK_MPI(MPI_File_write_all(fs, vals, B, MPI_INT, &st));
        MPI_Offset pos = -1;
        CHECK_MPI(MPI_File_get_position(fs, &pos));
        CHECK(pos == (MPI_Offset)(s + 1) * B);
        /* collective: the block may have been written by another rank (collective buffering) */
        CHECK_MPI(MPI_File_read_at_all(fs, (MPI_Offset)s * B, got, B, MPI_INT, &st));
        for (int i = 0; i < B; i++)
            CHECK(got[i] == vals[i]);
        int atomic = 0;
        CHECK_MPI(MPI_File_get_atomicity(fs, &atomic));
        CHECK(atomic == 1);

        CHECK(MPI_File_f2c(fm_fortran) == fm && MPI_File_c2f(fm) == fm_fortran);
        CHECK_MPI(MPI_File_write(MPI_File_f2c(fm_fortran), &state, 1, MPI_UNSIGNED_LONG_LONG, &st));
        CHECK_MPI(MPI_File_get_position(fm, &pos));
        CHECK(pos == (MPI_Offset)(s + 1) * (MPI_Offset)sizeof state);
        MPI_Errhandler eh;
        CHECK_MPI(MPI_File_get_errhandler(fm, &eh));
        CHECK(eh == MPI_ERRORS_ARE_FATAL);
        CHECK_MPI(MPI_Errhandler_free(&eh));

        if (s % 5 == 0) {
            MPI_File ft;
            CHECK_MPI(MPI_File_open(MPI_COMM_WORLD, scratch_path,
                                    MPI_MODE_CREATE | MPI_MODE_RDWR | MPI_MODE_DELETE_ON_CLOSE,
                                    MPI_INFO_NULL, &ft));
            int w = s + r, back = -1;
            CHECK_MPI(
                MPI_File_write_at_all(ft, (MPI_Offset)(r * sizeof(int)), &w, 1, MPI_INT, &st));
            CHECK_MPI(MPI_File_sync(ft));
            CHECK_MPI(MPI_Barrier(MPI_COMM_WORLD));
            CHECK_MPI(MPI_File_sync(ft));
            int right = (r + 1) % n;
            CHECK_MPI(
                MPI_File_read_at(ft, (MPI_Offset)(right * sizeof(int)), &back, 1, MPI_INT, &st));
            CHECK(back == s + right);
            CHECK_MPI(MPI_File_close(&ft));
            mpit_mix((unsigned long long)back);
        }
        if (s % 3 == 0) {
            /* the log (entry s / 3): every rank's record in rank order, then rank 0's marker,
             * at the shared pointer, which then stands after the entry on every rank */
            int rec = value(s, r, 0), marker = -s - 1;
            CHECK_MPI(MPI_File_write_ordered(flog, &rec, 1, MPI_INT, &st));
            if (r == 0) CHECK_MPI(MPI_File_write_shared(flog, &marker, 1, MPI_INT, &st));
            CHECK_MPI(MPI_Barrier(MPI_COMM_WORLD));
            MPI_Offset shared_pos = -1;
            CHECK_MPI(MPI_File_get_position_shared(flog, &shared_pos));
            CHECK(shared_pos == (MPI_Offset)(s / 3 + 1) * (n + 1));
            CHECK_MPI(MPI_Barrier(MPI_COMM_WORLD)); /* read before anyone moves it on */
        }
        mpit_mix((unsigned long long)got[B - 1]);
        mpit_mix((unsigned long long)pos);
        /* pending across the sleep (a checkpoint may come in it): the first block again */
        memset(first, 0, sizeof first);
        CHECK_MPI(MPI_File_iread_at(fs, 0, first, B, MPI_INT, &pending));
        mpit_sleep_ms(sleep_ms);
    }
    if (pending != MPI_REQUEST_NULL) CHECK_MPI(MPI_Wait(&pending, MPI_STATUS_IGNORE));

    /* every rank's blocks, read back by each rank through a plain view */
    CHECK_MPI(MPI_File_sync(fs));
    CHECK_MPI(MPI_Barrier(MPI_COMM_WORLD));
    CHECK_MPI(MPI_File_set_view(fs, 0, MPI_INT, MPI_INT, "native", MPI_INFO_NULL));
    size_t total = (size_t)steps * B * (size_t)n;
    int *all = calloc(total, sizeof(int));
    MPI_Status st;
    CHECK_MPI(MPI_File_read_at_all(fs, 0, all, (int)total, MPI_INT, &st));
    long bad = 0;
    for (int s = 0; s < steps; s++)
        for (int k = 0; k < n; k++)
            for (int i = 0; i < B; i++)
                bad += all[((size_t)s * n + (size_t)k) * B + (size_t)i] != value(s, k, i);
    CHECK(bad == 0);
    free(all);
    unsigned long long *words = calloc((size_t)steps, sizeof *words);
    CHECK_MPI(MPI_File_read_at(fm, 0, words, steps, MPI_UNSIGNED_LONG_LONG, &st));
    unsigned long long again = 7 + (unsigned long long)r;
    long wrong = 0;
    for (int s = 0; s < steps; s++) {
        again = again * 6364136223846793005ull + 1442695040888963407ull;
        wrong += words[s] != again;
        mpit_mix(words[s]);
    }
    CHECK(wrong == 0);
    free(words);
    int entries = (steps + 2) / 3;
    int *logged = calloc((size_t)entries * (size_t)(n + 1), sizeof(int));
    CHECK_MPI(MPI_File_sync(flog));
    CHECK_MPI(MPI_Barrier(MPI_COMM_WORLD));
    CHECK_MPI(MPI_File_read_at_all(flog, 0, logged, entries * (n + 1), MPI_INT, &st));
    long misplaced = 0;
    for (int i = 0; i < entries; i++) {
        for (int k = 0; k < n; k++)
            misplaced += logged[(size_t)i * (size_t)(n + 1) + (size_t)k] != value(3 * i, k, 0);
        misplaced += logged[(size_t)i * (size_t)(n + 1) + (size_t)n] != -3 * i - 1;
    }
    CHECK(misplaced == 0);
    free(logged);
    CHECK_MPI(MPI_File_close(&flog));
    CHECK_MPI(MPI_File_close(&fm));
    CHECK_MPI(MPI_File_close(&fs));
    CHECK_MPI(MPI_Barrier(MPI_COMM_WORLD));
    if (r == 0) {
        CHECK_MPI(MPI_File_delete(shared_path, MPI_INFO_NULL));
        CHECK_MPI(MPI_File_delete(log_path, MPI_INFO_NULL));
        for (int k = 0; k < n; k++) {
            char p[600];
            snprintf(p, sizeof p, "%s/rank-%d.dat", dir, k);
            CHECK(unlink(p) == 0);
        }
        /* ROMIO (MPICH) keeps the shared file pointer in a hidden file beside the file
         * (".log.dat.shfp.N"), removed when the file is closed: a process killed with the file
         * open (checkpoint --kill) leaves its own, as any killed MPICH job does */
        DIR *d = opendir(dir);
        CHECK(d != NULL);
        for (struct dirent *e; d && (e = readdir(d));) {
            if (strncmp(e->d_name, ".log.dat.shfp.", 14) != 0) continue;
            char p[900];
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            CHECK(unlink(p) == 0);
        }
        if (d) closedir(d);
        CHECK(rmdir(dir) == 0);
    }
    printf("rank %d: mpiio_steps %d steps bad %ld wrong %ld checksum %016llx\n", r, steps, bad,
           wrong, mpit_sum);
    return mpit_finish();
}
