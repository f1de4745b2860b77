/* SPDX-License-Identifier: Apache-2.0 */
/* Intercommunicators that live across checkpoints (run_job_ckpt.sh), as coupled codes keep
 * them: the ranks split in two groups (even and odd world ranks), joined by
 * MPI_Intercomm_create over MPI_COMM_WORLD; a duplicate of the intercommunicator, and the
 * intracommunicator MPI_Intercomm_merge makes of it (the odd group first). Each step exchanges a
 * message with the rank of the same number in the other group, reduces over the intercommunicator
 * (each group gets the other's sum), broadcasts from a root that changes group every step, reduces
 * over the merged communicator and synchronises on the duplicate; the remote group's world ranks
 * are checked through MPI_Comm_remote_group. Then the odd group sleeps SLEEP_MS (outside
 * MPI) while the even group waits inside MPI_Intercomm_create for it (a scratch
 * intercommunicator, freed at once). Prints only at the end. Usage: inter_steps STEPS [SLEEP_MS]
 * (an even number of ranks) */
#include "mpit.h"

int main(int argc, char **argv) {
    mpit_init(&argc, &argv, "inter_steps");
    int steps = argc > 1 ? atoi(argv[1]) : 100;
    int sleep_ms = argc > 2 ? atoi(argv[2]) : 20;
    int r = mpit_rank, n = mpit_size;
    if (n < 2 || n % 2) {
        printf("rank %d: inter_steps needs an even number of ranks\n", r);
        return mpit_finish();
    }
    int color = r % 2;
    MPI_Comm local, inter, inter_dup, merged;
    CHECK_MPI(MPI_Comm_split(MPI_COMM_WORLD, color, r, &local));
    /* leaders: world ranks 0 (even group) and 1 (odd group), each its group's rank 0 */
    CHECK_MPI(MPI_Intercomm_create(local, 0, MPI_COMM_WORLD, color == 0 ? 1 : 0, 77, &inter));
    CHECK_MPI(MPI_Comm_dup(inter, &inter_dup));
    CHECK_MPI(MPI_Intercomm_merge(inter, color == 0 ? 1 : 0, &merged));
    int me = -1, mine = 0, theirs = 0, msize = 0, mrank = -1;
    CHECK_MPI(MPI_Comm_rank(inter, &me));
    CHECK_MPI(MPI_Comm_size(inter, &mine));
    CHECK_MPI(MPI_Comm_remote_size(inter, &theirs));
    CHECK_MPI(MPI_Comm_size(merged, &msize));
    CHECK_MPI(MPI_Comm_rank(merged, &mrank));
    CHECK(msize == n);
    CHECK(mrank == (color == 1 ? me : (n / 2) + me)); /* odd group first (high = 0) */
    MPI_Group remote, world;
    CHECK_MPI(MPI_Comm_remote_group(inter, &remote));
    CHECK_MPI(MPI_Comm_group(MPI_COMM_WORLD, &world));

    unsigned long long state = 31 + (unsigned long long)r;
    for (int s = 0; s < steps; s++) {
        mpit_step(s, steps);
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        long long x = (long long)(state >> 24);
        /* point to point with the same-numbered rank over there */
        long long got = -1;
        CHECK_MPI(MPI_Sendrecv(&x, 1, MPI_LONG_LONG, me, s, &got, 1, MPI_LONG_LONG, me, s, inter,
                               MPI_STATUS_IGNORE));
        mpit_mix((unsigned long long)got);
        /* collectives over the intercommunicator */
        long long sum = 0, one = s + r;
        CHECK_MPI(MPI_Allreduce(&one, &sum, 1, MPI_LONG_LONG, MPI_SUM, inter));
        long long want = 0;
        for (int k = 0; k < n; k++)
            if (k % 2 != color) want += s + k;
        CHECK(sum == want);
        int root_group = s % 2; /* the group the root is in this step */
        long long b = color == root_group ? 1000LL * s : -1;
        int root = color == root_group ? (me == 0 ? MPI_ROOT : MPI_PROC_NULL) : 0;
        CHECK_MPI(MPI_Bcast(&b, 1, MPI_LONG_LONG, root, inter));
        if (color != root_group) CHECK(b == 1000LL * s);
        long long total = 0;
        CHECK_MPI(MPI_Allreduce(&x, &total, 1, MPI_LONG_LONG, MPI_SUM, merged));
        mpit_mix((unsigned long long)total);
        CHECK_MPI(MPI_Barrier(inter_dup));
        int w = -1, first = 0;
        CHECK_MPI(MPI_Group_translate_ranks(remote, 1, &first, world, &w));
        CHECK(w == (color == 0 ? 1 : 0));
        /* the step's sleep, taken by the odd group only, right before both groups make a scratch
         * intercommunicator: the even group waits inside MPI_Intercomm_create meanwhile, where a
         * checkpoint finds it (it must let the odd group come) */
        if (color == 1) mpit_sleep_ms(sleep_ms);
        MPI_Comm scratch;
        CHECK_MPI(MPI_Intercomm_create(local, 0, MPI_COMM_WORLD, color == 0 ? 1 : 0, 78, &scratch));
        CHECK_MPI(MPI_Barrier(scratch));
        CHECK_MPI(MPI_Comm_free(&scratch));
    }
    CHECK_MPI(MPI_Group_free(&remote));
    CHECK_MPI(MPI_Group_free(&world));
    CHECK_MPI(MPI_Comm_free(&merged));
    CHECK_MPI(MPI_Comm_free(&inter_dup));
    CHECK_MPI(MPI_Comm_free(&inter));
    CHECK_MPI(MPI_Comm_free(&local));
    printf("rank %d: inter_steps %d steps checksum %016llx\n", r, steps, mpit_sum);
    return mpit_finish();
}
