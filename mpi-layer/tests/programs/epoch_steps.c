/* SPDX-License-Identifier: Apache-2.0 */
/* A job whose first steps hold a post/start/complete/wait epoch open (rank 0 posts to rank 1
 * before the first step; rank 1 starts, puts and completes at step HOLD, where rank 0 waits):
 * a checkpoint is refused while it is open (such epochs are not carried), so ghostrun's periodic
 * checkpoints of that time fail and must be tried again soon after the epoch closes, not an
 * interval later (run_job_ckpt.sh retry). Every step: a reduction and SLEEP_MS of sleep outside
 * MPI. Prints only at the end. Usage: epoch_steps STEPS [SLEEP_MS [HOLD]] (2 ranks or more;
 * ranks above 1 take part in the reductions only) */
#include "mpit.h"

int main(int argc, char **argv) {
    mpit_init(&argc, &argv, "epoch_steps");
    int steps = argc > 1 ? atoi(argv[1]) : 100;
    int sleep_ms = argc > 2 ? atoi(argv[2]) : 20;
    int hold = argc > 3 ? atoi(argv[3]) : steps / 2;
    int r = mpit_rank;
    CHECK(mpit_size >= 2);
    long long *mem = calloc(1, sizeof(long long));
    MPI_Win win;
    CHECK_MPI(MPI_Win_create(mem, (MPI_Aint)sizeof(long long), (int)sizeof(long long),
                             MPI_INFO_NULL, MPI_COMM_WORLD, &win));
    MPI_Group world, peer;
    CHECK_MPI(MPI_Comm_group(MPI_COMM_WORLD, &world));
    int other = r == 0 ? 1 : 0;
    CHECK_MPI(MPI_Group_incl(world, 1, &other, &peer));
    if (r == 0) CHECK_MPI(MPI_Win_post(peer, 0, win));
    long long total = 0;
    for (int s = 0; s < steps; s++) {
        mpit_step(s, steps);
        if (s == hold && r == 1) {
            long long v = 1000 + hold;
            CHECK_MPI(MPI_Win_start(peer, 0, win));
            CHECK_MPI(MPI_Put(&v, 1, MPI_LONG_LONG, 0, 0, 1, MPI_LONG_LONG, win));
            CHECK_MPI(MPI_Win_complete(win));
        }
        if (s == hold && r == 0) {
            CHECK_MPI(MPI_Win_wait(win));
            CHECK(*mem == 1000 + hold);
        }
        long long x = (long long)s * (r + 1), sum = 0;
        CHECK_MPI(MPI_Allreduce(&x, &sum, 1, MPI_LONG_LONG, MPI_SUM, MPI_COMM_WORLD));
        total += sum;
        mpit_mix((unsigned long long)sum);
        mpit_sleep_ms(sleep_ms);
    }
    CHECK(hold >= steps || r != 0 || *mem == 1000 + hold);
    CHECK_MPI(MPI_Group_free(&peer));
    CHECK_MPI(MPI_Group_free(&world));
    CHECK_MPI(MPI_Win_free(&win));
    free(mem);
    printf("rank %d: epoch_steps %d steps total %lld checksum %016llx\n", r, steps, total,
           mpit_sum);
    return mpit_finish();
}
