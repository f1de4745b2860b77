/* SPDX-License-Identifier: Apache-2.0 */
/* Blocking and nonblocking collectives, a user-defined (non-commutative) op and MPI_IN_PLACE. */
#include "mpit.h"

static __thread int tls_probe;
static int *main_probe, op_tls_bad;

/* 2x2 integer matrix product: associative, not commutative */
static void matmul(void *in, void *inout, int *len, MPI_Datatype *dt) {
    if (&tls_probe != main_probe) op_tls_bad++; /* called back with the application's TLS */
    int *a = in, *b = inout;
    int sz;
    MPI_Type_size(*dt, &sz); /* the datatype handle must be the application's own */
    for (int i = 0; i < *len; i++, a += 4, b += 4) {
        int c[4] = {a[0] * b[0] + a[1] * b[2], a[0] * b[1] + a[1] * b[3], a[2] * b[0] + a[3] * b[2],
                    a[2] * b[1] + a[3] * b[3]};
        memcpy(b, c, sizeof c);
    }
    (void)sz;
}

int main(int argc, char **argv) {
    mpit_init(&argc, &argv, "collectives");
    MPIT_REPEAT {
        main_probe = &tls_probe;
        int r = mpit_rank, n = mpit_size;
        int *cnt = malloc(n * sizeof(int)), *dsp = malloc(n * sizeof(int));
        int *sb = malloc(4 * n * n * sizeof(int)), *rb = malloc(4 * n * n * sizeof(int));
        for (int i = 0; i < n; i++)
            cnt[i] = i + 1, dsp[i] = i * n;
        for (int i = 0; i < 4 * n * n; i++)
            sb[i] = r * 10000 + i;

        int v = r + 1, s = 0;
        CHECK_MPI(MPI_Barrier(MPI_COMM_WORLD));
        int b = (r == 0) ? 4242 : 0;
        CHECK_MPI(MPI_Bcast(&b, 1, MPI_INT, 0, MPI_COMM_WORLD));
        CHECK(b == 4242);
        CHECK_MPI(MPI_Reduce(&v, &s, 1, MPI_INT, MPI_SUM, n - 1, MPI_COMM_WORLD));
        if (r == n - 1) CHECK(s == n * (n + 1) / 2);
        CHECK_MPI(MPI_Allreduce(&v, &s, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD));
        CHECK(s == n);
        s = v;
        CHECK_MPI(MPI_Allreduce(MPI_IN_PLACE, &s, 1, MPI_INT, MPI_PROD, MPI_COMM_WORLD));
        int fact = 1;
        for (int i = 1; i <= n; i++)
            fact *= i;
        CHECK(s == fact);
        struct {
            double v;
            int i;
        } mi = {(double)((r * 7) % n), r}, mo;
        CHECK_MPI(MPI_Allreduce(&mi, &mo, 1, MPI_DOUBLE_INT, MPI_MAXLOC, MPI_COMM_WORLD));
        CHECK(mo.v == (double)(n - 1));

        /* user op: product of per-rank matrices [[1,r],[0,1]] in rank order = [[1,sum],[0,1]] */
        MPI_Op op;
        MPI_Datatype mat;
        CHECK_MPI(MPI_Type_contiguous(4, MPI_INT, &mat));
        CHECK_MPI(MPI_Type_commit(&mat));
        CHECK_MPI(MPI_Op_create(matmul, 0, &op));
        int m[4] = {1, r, 0, 1}, mr[4];
        CHECK_MPI(MPI_Allreduce(m, mr, 1, mat, op, MPI_COMM_WORLD));
        CHECK(mr[0] == 1 && mr[1] == n * (n - 1) / 2 && mr[3] == 1);
        CHECK_MPI(MPI_Scan(m, mr, 1, mat, op, MPI_COMM_WORLD));
        CHECK(mr[1] == r * (r + 1) / 2);
        CHECK(op_tls_bad == 0);
        CHECK_MPI(MPI_Op_free(&op));
        CHECK(op == MPI_OP_NULL);
        CHECK_MPI(MPI_Type_free(&mat));

        CHECK_MPI(MPI_Gather(&v, 1, MPI_INT, rb, 1, MPI_INT, 0, MPI_COMM_WORLD));
        if (r == 0)
            for (int i = 0; i < n; i++)
                CHECK(rb[i] == i + 1);
        CHECK_MPI(MPI_Gatherv(sb, r + 1, MPI_INT, rb, cnt, dsp, MPI_INT, 0, MPI_COMM_WORLD));
        if (r == 0)
            for (int i = 0; i < n; i++)
                CHECK(rb[dsp[i] + i] == i * 10000 + i);
        CHECK_MPI(MPI_Scatter(sb, 2, MPI_INT, rb, 2, MPI_INT, 1 % n, MPI_COMM_WORLD));
        CHECK(rb[1] == (1 % n) * 10000 + 2 * r + 1);
        CHECK_MPI(MPI_Scatterv(sb, cnt, dsp, MPI_INT, rb, r + 1, MPI_INT, 0, MPI_COMM_WORLD));
        CHECK(rb[r] == r * n + r);
        CHECK_MPI(MPI_Allgather(&v, 1, MPI_INT, rb, 1, MPI_INT, MPI_COMM_WORLD));
        for (int i = 0; i < n; i++)
            CHECK(rb[i] == i + 1);
        CHECK_MPI(MPI_Allgatherv(sb, r + 1, MPI_INT, rb, cnt, dsp, MPI_INT, MPI_COMM_WORLD));
        for (int i = 0; i < n; i++)
            CHECK(rb[dsp[i]] == i * 10000);
        CHECK_MPI(MPI_Alltoall(sb, 2, MPI_INT, rb, 2, MPI_INT, MPI_COMM_WORLD));
        for (int i = 0; i < n; i++)
            CHECK(rb[2 * i] == i * 10000 + 2 * r);
        int *sc = malloc(n * sizeof(int)), *sd = malloc(n * sizeof(int)),
            *rc = malloc(n * sizeof(int)), *rd = malloc(n * sizeof(int));
        for (int i = 0; i < n; i++)
            sc[i] = 1, sd[i] = i, rc[i] = 1, rd[i] = i;
        CHECK_MPI(MPI_Alltoallv(sb, sc, sd, MPI_INT, rb, rc, rd, MPI_INT, MPI_COMM_WORLD));
        for (int i = 0; i < n; i++)
            CHECK(rb[i] == i * 10000 + r);
        MPI_Datatype *ty = malloc(n * sizeof(MPI_Datatype));
        int *sdb = malloc(n * sizeof(int)), *rdb = malloc(n * sizeof(int));
        for (int i = 0; i < n; i++)
            ty[i] = MPI_INT, sdb[i] = i * (int)sizeof(int), rdb[i] = i * (int)sizeof(int);
        CHECK_MPI(MPI_Alltoallw(sb, sc, sdb, ty, rb, rc, rdb, ty, MPI_COMM_WORLD));
        for (int i = 0; i < n; i++)
            CHECK(rb[i] == i * 10000 + r);
        CHECK_MPI(MPI_Reduce_scatter_block(sb, rb, 2, MPI_INT, MPI_SUM, MPI_COMM_WORLD));
        CHECK(rb[0] == 10000 * n * (n - 1) / 2 + n * 2 * r);
        CHECK_MPI(MPI_Reduce_scatter(sb, rb, cnt, MPI_INT, MPI_SUM, MPI_COMM_WORLD));
        CHECK_MPI(MPI_Exscan(&v, &s, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD));
        if (r > 0) CHECK(s == r * (r + 1) / 2);

        /* nonblocking collectives, completed in a mixed order */
        MPI_Request q[6];
        int ib = (r == 0) ? 77 : 0, ia = 0, ig[64], iw[64];
        CHECK_MPI(MPI_Ibarrier(MPI_COMM_WORLD, &q[0]));
        CHECK_MPI(MPI_Ibcast(&ib, 1, MPI_INT, 0, MPI_COMM_WORLD, &q[1]));
        CHECK_MPI(MPI_Iallreduce(&v, &ia, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD, &q[2]));
        CHECK_MPI(MPI_Iallgather(&v, 1, MPI_INT, ig, 1, MPI_INT, MPI_COMM_WORLD, &q[3]));
        CHECK_MPI(MPI_Ialltoallw(sb, sc, sdb, ty, iw, rc, rdb, ty, MPI_COMM_WORLD, &q[4]));
        CHECK_MPI(MPI_Iscan(&v, &s, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD, &q[5]));
        CHECK_MPI(MPI_Waitall(6, q, MPI_STATUSES_IGNORE));
        CHECK(ib == 77 && ia == n * (n + 1) / 2 && ig[n - 1] == n && iw[0] == r &&
              s == (r + 1) * (r + 2) / 2);
        int ir = 0;
        CHECK_MPI(MPI_Ireduce(&v, &ir, 1, MPI_INT, MPI_MIN, 0, MPI_COMM_WORLD, &q[0]));
        CHECK_MPI(MPI_Igather(&v, 1, MPI_INT, ig, 1, MPI_INT, 0, MPI_COMM_WORLD, &q[1]));
        CHECK_MPI(MPI_Iscatter(sb, 1, MPI_INT, &ia, 1, MPI_INT, 0, MPI_COMM_WORLD, &q[2]));
        CHECK_MPI(MPI_Ialltoall(sb, 1, MPI_INT, ig + n, 1, MPI_INT, MPI_COMM_WORLD, &q[3]));
        CHECK_MPI(MPI_Iexscan(&v, &s, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD, &q[4]));
        CHECK_MPI(MPI_Ireduce_scatter_block(sb, &ib, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD, &q[5]));
        for (int k = 5; k >= 0; k--)
            CHECK_MPI(MPI_Wait(&q[k], MPI_STATUS_IGNORE));
        if (r == 0) CHECK(ir == 1);
        CHECK(ia == r && ig[n] == r && ib == (n - 1) * 10000 + r);
#if MPI_VERSION >= 4
        /* persistent collectives (MPI-4), started together and completed with MPI_Waitall */
        int px = 0, py = 0;
        CHECK_MPI(MPI_Allreduce_init(&px, &py, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD, MPI_INFO_NULL,
                                     &q[0]));
        CHECK_MPI(MPI_Barrier_init(MPI_COMM_WORLD, MPI_INFO_NULL, &q[1]));
        for (int k = 0; k < 3; k++) {
            px = r + k;
            CHECK_MPI(MPI_Startall(2, q));
            CHECK_MPI(MPI_Waitall(2, q, MPI_STATUSES_IGNORE));
            CHECK(py == n * (n - 1) / 2 + n * k);
        }
        CHECK_MPI(MPI_Request_free(&q[0]));
        CHECK_MPI(MPI_Request_free(&q[1]));
#endif
        if (r == 0) printf("rank 0: collectives on %d ranks\n", n);
    }
    return mpit_finish();
}
