/* SPDX-License-Identifier: Apache-2.0 */
/* Nonblocking and persistent requests: Isend/Ibsend/Issend/Irsend/Irecv, every Wait and Test
 * variant, Send_init/Recv_init/Start/Startall, Request_free, Cancel, Request_get_status. */
#include "mpit.h"

#define N 16

int main(int argc, char **argv) {
    mpit_init(&argc, &argv, "nonblocking");
    MPIT_REPEAT {
        int right = (mpit_rank + 1) % mpit_size, left = (mpit_rank + mpit_size - 1) % mpit_size;
        int sbuf[4][N], rbuf[4][N];
        MPI_Request rq[8];
        MPI_Status st[8];
        for (int k = 0; k < 4; k++)
            for (int i = 0; i < N; i++)
                sbuf[k][i] = mpit_rank * 100 + k * 10 + i;

        /* Waitall over four receives and four sends of different modes */
        int bsize = N * sizeof(int) + MPI_BSEND_OVERHEAD;
        void *bb = malloc(bsize);
        MPI_Buffer_attach(bb, bsize);
        for (int k = 0; k < 4; k++)
            CHECK_MPI(MPI_Irecv(rbuf[k], N, MPI_INT, left, k, MPI_COMM_WORLD, &rq[k]));
        MPI_Barrier(MPI_COMM_WORLD); /* receives are posted everywhere: Irsend is legal */
        CHECK_MPI(MPI_Isend(sbuf[0], N, MPI_INT, right, 0, MPI_COMM_WORLD, &rq[4]));
        CHECK_MPI(MPI_Ibsend(sbuf[1], N, MPI_INT, right, 1, MPI_COMM_WORLD, &rq[5]));
        CHECK_MPI(MPI_Issend(sbuf[2], N, MPI_INT, right, 2, MPI_COMM_WORLD, &rq[6]));
        CHECK_MPI(MPI_Irsend(sbuf[3], N, MPI_INT, right, 3, MPI_COMM_WORLD, &rq[7]));
        CHECK_MPI(MPI_Waitall(8, rq, st));
        for (int k = 0; k < 8; k++)
            CHECK(rq[k] == MPI_REQUEST_NULL);
        for (int k = 0; k < 4; k++)
            CHECK(rbuf[k][N - 1] == left * 100 + k * 10 + N - 1 && st[k].MPI_TAG == k);
        void *p;
        int sz;
        MPI_Buffer_detach(&p, &sz);
        free(bb);

        /* Waitany / Waitsome / Testany / Testsome / Testall / Test */
        for (int variant = 0; variant < 5; variant++) {
            for (int k = 0; k < 4; k++)
                MPI_Irecv(rbuf[k], N, MPI_INT, left, 40 + k, MPI_COMM_WORLD, &rq[k]);
            for (int k = 0; k < 4; k++)
                MPI_Isend(sbuf[k], N, MPI_INT, right, 40 + k, MPI_COMM_WORLD, &rq[4 + k]);
            int done = 0, flag, idx, outc, idxs[8];
            while (done < 8) {
                if (variant == 0) {
                    CHECK_MPI(MPI_Waitany(8, rq, &idx, &st[0]));
                    CHECK(idx >= 0 && idx < 8 && rq[idx] == MPI_REQUEST_NULL);
                    done++;
                } else if (variant == 1) {
                    CHECK_MPI(MPI_Waitsome(8, rq, &outc, idxs, st));
                    done += outc;
                } else if (variant == 2) {
                    CHECK_MPI(MPI_Testany(8, rq, &idx, &flag, &st[0]));
                    if (flag && idx != MPI_UNDEFINED) done++;
                } else if (variant == 3) {
                    CHECK_MPI(MPI_Testsome(8, rq, &outc, idxs, st));
                    if (outc != MPI_UNDEFINED) done += outc;
                } else {
                    CHECK_MPI(MPI_Testall(8, rq, &flag, st));
                    if (flag) done = 8;
                }
            }
            for (int k = 0; k < 8; k++)
                CHECK(rq[k] == MPI_REQUEST_NULL);
            CHECK(rbuf[3][0] == left * 100 + 30);
        }
        {
            MPI_Request r;
            int flag = 0;
            MPI_Irecv(rbuf[0], N, MPI_INT, left, 50, MPI_COMM_WORLD, &r);
            MPI_Send(sbuf[0], N, MPI_INT, right, 50, MPI_COMM_WORLD);
            while (!flag)
                CHECK_MPI(MPI_Test(&r, &flag, &st[0]));
            CHECK(r == MPI_REQUEST_NULL && st[0].MPI_SOURCE == left);
        }

        /* persistent requests, started several times */
        MPI_Request ps[2];
        CHECK_MPI(MPI_Recv_init(rbuf[0], N, MPI_INT, left, 60, MPI_COMM_WORLD, &ps[0]));
        CHECK_MPI(MPI_Send_init(sbuf[1], N, MPI_INT, right, 60, MPI_COMM_WORLD, &ps[1]));
        for (int it = 0; it < 3; it++) {
            sbuf[1][0] = it;
            if (it == 1) {
                CHECK_MPI(MPI_Start(&ps[0]));
                CHECK_MPI(MPI_Start(&ps[1]));
            } else {
                CHECK_MPI(MPI_Startall(2, ps));
            }
            CHECK_MPI(MPI_Waitall(2, ps, st));
            CHECK(ps[0] != MPI_REQUEST_NULL && ps[1] != MPI_REQUEST_NULL);
            CHECK(rbuf[0][0] == it);
        }
        int flag = 0;
        CHECK_MPI(MPI_Request_get_status(ps[0], &flag, &st[0]));
        CHECK(flag == 1);
        CHECK_MPI(MPI_Request_free(&ps[0]));
        CHECK_MPI(MPI_Request_free(&ps[1]));
        CHECK(ps[0] == MPI_REQUEST_NULL && ps[1] == MPI_REQUEST_NULL);

        /* cancel a receive that never matches */
        MPI_Request c;
        CHECK_MPI(MPI_Irecv(rbuf[0], N, MPI_INT, left, 999, MPI_COMM_WORLD, &c));
        CHECK_MPI(MPI_Cancel(&c));
        CHECK_MPI(MPI_Wait(&c, &st[0]));
        int cancelled = 0;
        MPI_Test_cancelled(&st[0], &cancelled);
        CHECK(cancelled == 1 && c == MPI_REQUEST_NULL);

        /* Request_free on an active send, then a matching blocking receive */
        MPI_Request f;
        CHECK_MPI(MPI_Isend(sbuf[2], N, MPI_INT, right, 70, MPI_COMM_WORLD, &f));
        CHECK_MPI(MPI_Request_free(&f));
        CHECK(f == MPI_REQUEST_NULL);
        CHECK_MPI(MPI_Recv(rbuf[2], N, MPI_INT, left, 70, MPI_COMM_WORLD, MPI_STATUS_IGNORE));
        CHECK(rbuf[2][1] == left * 100 + 21);
        /* Wait on MPI_REQUEST_NULL is legal and returns an empty status */
        MPI_Request nul = MPI_REQUEST_NULL;
        CHECK_MPI(MPI_Wait(&nul, &st[0]));
        MPI_Barrier(MPI_COMM_WORLD);
    }
    return mpit_finish();
}
