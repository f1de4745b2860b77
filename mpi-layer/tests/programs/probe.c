/* SPDX-License-Identifier: Apache-2.0 */
/* Probe, Iprobe, Mprobe, Improbe, Mrecv, Imrecv, MPI_MESSAGE_NO_PROC. */
#include "mpit.h"

int main(int argc, char **argv) {
    mpit_init(&argc, &argv, "probe");
    MPIT_REPEAT {
        int right = (mpit_rank + 1) % mpit_size, left = (mpit_rank + mpit_size - 1) % mpit_size;
        int data[32], got[32];
        MPI_Status st;
        for (int i = 0; i < 32; i++)
            data[i] = mpit_rank + i;
        MPI_Request s[4];
        MPI_Isend(data, 7, MPI_INT, right, 1, MPI_COMM_WORLD, &s[0]);
        MPI_Isend(data, 9, MPI_INT, right, 2, MPI_COMM_WORLD, &s[1]);
        MPI_Isend(data, 11, MPI_INT, right, 3, MPI_COMM_WORLD, &s[2]);
        MPI_Isend(data, 13, MPI_INT, right, 4, MPI_COMM_WORLD, &s[3]);

        int n;
        CHECK_MPI(MPI_Probe(left, 1, MPI_COMM_WORLD, &st));
        MPI_Get_count(&st, MPI_INT, &n);
        CHECK(n == 7 && st.MPI_SOURCE == left && st.MPI_TAG == 1);
        CHECK_MPI(MPI_Recv(got, n, MPI_INT, left, 1, MPI_COMM_WORLD, MPI_STATUS_IGNORE));

        int flag = 0;
        while (!flag)
            CHECK_MPI(MPI_Iprobe(MPI_ANY_SOURCE, 2, MPI_COMM_WORLD, &flag, &st));
        MPI_Get_count(&st, MPI_INT, &n);
        CHECK(n == 9);
        CHECK_MPI(MPI_Recv(got, n, MPI_INT, st.MPI_SOURCE, 2, MPI_COMM_WORLD, MPI_STATUS_IGNORE));

        MPI_Message m;
        CHECK_MPI(MPI_Mprobe(left, 3, MPI_COMM_WORLD, &m, &st));
        CHECK(m != MPI_MESSAGE_NULL);
        MPI_Get_count(&st, MPI_INT, &n);
        CHECK(n == 11);
        CHECK_MPI(MPI_Mrecv(got, n, MPI_INT, &m, &st));
        CHECK(m == MPI_MESSAGE_NULL && got[10] == left + 10);

        flag = 0;
        while (!flag)
            CHECK_MPI(MPI_Improbe(left, 4, MPI_COMM_WORLD, &flag, &m, &st));
        MPI_Get_count(&st, MPI_INT, &n);
        CHECK(n == 13);
        MPI_Request r;
        CHECK_MPI(MPI_Imrecv(got, n, MPI_INT, &m, &r));
        CHECK(m == MPI_MESSAGE_NULL);
        CHECK_MPI(MPI_Wait(&r, &st));
        CHECK(got[12] == left + 12 && st.MPI_TAG == 4);
        CHECK_MPI(MPI_Waitall(4, s, MPI_STATUSES_IGNORE));

        CHECK_MPI(MPI_Mprobe(MPI_PROC_NULL, 0, MPI_COMM_WORLD, &m, &st));
        CHECK(m == MPI_MESSAGE_NO_PROC && st.MPI_SOURCE == MPI_PROC_NULL);
        CHECK_MPI(MPI_Mrecv(got, 1, MPI_INT, &m, &st));
        CHECK(m == MPI_MESSAGE_NULL);
    }
    return mpit_finish();
}
