/* SPDX-License-Identifier: Apache-2.0 */
/* Point-to-point in every mode: standard, buffered, synchronous, ready; Sendrecv(_replace);
 * wildcard receives and their statuses; Get_count; PROC_NULL. */
#include "mpit.h"

int main(int argc, char **argv) {
    mpit_init(&argc, &argv, "p2p_modes");
    MPIT_REPEAT {
        int right = (mpit_rank + 1) % mpit_size, left = (mpit_rank + mpit_size - 1) % mpit_size;
        int buf[64], got[64];
        MPI_Status st;
        for (int i = 0; i < 64; i++)
            buf[i] = mpit_rank * 1000 + i;

        /* standard, in a ring with even/odd ordering to avoid deadlock on any transport */
        for (int mode = 0; mode < 3; mode++) {
            int bsize = 64 * sizeof(int) + MPI_BSEND_OVERHEAD;
            void *bbuf = malloc(bsize);
            if (mode == 1) MPI_Buffer_attach(bbuf, bsize);
            if (mpit_rank % 2 == 0) {
                if (mode == 0)
                    CHECK_MPI(MPI_Send(buf, 64, MPI_INT, right, 10 + mode, MPI_COMM_WORLD));
                if (mode == 1)
                    CHECK_MPI(MPI_Bsend(buf, 64, MPI_INT, right, 10 + mode, MPI_COMM_WORLD));
                if (mode == 2)
                    CHECK_MPI(MPI_Ssend(buf, 64, MPI_INT, right, 10 + mode, MPI_COMM_WORLD));
                CHECK_MPI(MPI_Recv(got, 64, MPI_INT, left, 10 + mode, MPI_COMM_WORLD, &st));
            } else {
                CHECK_MPI(MPI_Recv(got, 64, MPI_INT, left, 10 + mode, MPI_COMM_WORLD, &st));
                if (mode == 0)
                    CHECK_MPI(MPI_Send(buf, 64, MPI_INT, right, 10 + mode, MPI_COMM_WORLD));
                if (mode == 1)
                    CHECK_MPI(MPI_Bsend(buf, 64, MPI_INT, right, 10 + mode, MPI_COMM_WORLD));
                if (mode == 2)
                    CHECK_MPI(MPI_Ssend(buf, 64, MPI_INT, right, 10 + mode, MPI_COMM_WORLD));
            }
            if (mode == 1) {
                void *p;
                int sz;
                MPI_Buffer_detach(&p, &sz);
                CHECK(p == bbuf && sz == bsize);
            }
            free(bbuf);
            CHECK(st.MPI_SOURCE == left && st.MPI_TAG == 10 + mode);
            CHECK(got[5] == left * 1000 + 5);
        }

        /* ready mode: the receiver posts first and says so */
        if (mpit_size >= 2 && mpit_rank < 2) {
            int peer = 1 - mpit_rank;
            if (mpit_rank == 0) {
                MPI_Request r;
                CHECK_MPI(MPI_Irecv(got, 8, MPI_INT, peer, 20, MPI_COMM_WORLD, &r));
                CHECK_MPI(MPI_Send(NULL, 0, MPI_INT, peer, 21, MPI_COMM_WORLD));
                CHECK_MPI(MPI_Wait(&r, &st));
                CHECK(r == MPI_REQUEST_NULL && got[7] == 1007);
            } else {
                CHECK_MPI(MPI_Recv(NULL, 0, MPI_INT, peer, 21, MPI_COMM_WORLD, MPI_STATUS_IGNORE));
                CHECK_MPI(MPI_Rsend(buf, 8, MPI_INT, peer, 20, MPI_COMM_WORLD));
            }
        }

        /* Sendrecv and Sendrecv_replace */
        CHECK_MPI(MPI_Sendrecv(buf, 4, MPI_INT, right, 30, got, 4, MPI_INT, left, 30,
                               MPI_COMM_WORLD, &st));
        CHECK(got[3] == left * 1000 + 3 && st.MPI_SOURCE == left);
        int v = mpit_rank;
        CHECK_MPI(MPI_Sendrecv_replace(&v, 1, MPI_INT, right, 31, left, 31, MPI_COMM_WORLD, &st));
        CHECK(v == left);

        /* wildcards + Get_count */
        if (mpit_rank == 0) {
            int seen = 0;
            for (int i = 1; i < mpit_size; i++) {
                CHECK_MPI(
                    MPI_Recv(got, 64, MPI_INT, MPI_ANY_SOURCE, MPI_ANY_TAG, MPI_COMM_WORLD, &st));
                int n;
                MPI_Get_count(&st, MPI_INT, &n);
                CHECK(n == st.MPI_SOURCE && st.MPI_TAG == 100 + st.MPI_SOURCE);
                seen |= 1 << st.MPI_SOURCE;
            }
            CHECK(seen == ((1 << mpit_size) - 2));
            printf("rank 0: wildcard receives from %d ranks\n", mpit_size - 1);
        } else {
            CHECK_MPI(MPI_Send(buf, mpit_rank, MPI_INT, 0, 100 + mpit_rank, MPI_COMM_WORLD));
        }

        /* PROC_NULL */
        CHECK_MPI(MPI_Send(buf, 1, MPI_INT, MPI_PROC_NULL, 0, MPI_COMM_WORLD));
        CHECK_MPI(MPI_Recv(got, 1, MPI_INT, MPI_PROC_NULL, 0, MPI_COMM_WORLD, &st));
        CHECK(st.MPI_SOURCE == MPI_PROC_NULL && st.MPI_TAG == MPI_ANY_TAG);
    }
    return mpit_finish();
}
