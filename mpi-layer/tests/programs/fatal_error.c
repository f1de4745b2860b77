/* SPDX-License-Identifier: Apache-2.0 */
/* Bad input with the default handler: an invalid rank under MPI_ERRORS_ARE_FATAL must end the job
 * with an error (never hang), as natively. */
#include "mpit.h"

int main(int argc, char **argv) {
    mpit_init(&argc, &argv, "fatal_error");
    int x = 0;
    printf("rank %d: before the bad call\n", mpit_rank);
    fflush(stdout);
    MPI_Barrier(MPI_COMM_WORLD);
    if (mpit_rank == 0) MPI_Send(&x, 1, MPI_INT, mpit_size + 3, 0, MPI_COMM_WORLD);
    MPI_Barrier(MPI_COMM_WORLD);
    printf("rank %d: survived\n", mpit_rank);
    return mpit_finish();
}
