/* SPDX-License-Identifier: Apache-2.0 */
/* Derived datatypes: constructors, queries (envelope/contents), Pack/Unpack, sends with them. */
#include <stddef.h>

#include "mpit.h"

int main(int argc, char **argv) {
    mpit_init(&argc, &argv, "datatypes");
    MPIT_REPEAT {
        int right = (mpit_rank + 1) % mpit_size, left = (mpit_rank + mpit_size - 1) % mpit_size;
        double a[100], b[100];
        for (int i = 0; i < 100; i++)
            a[i] = mpit_rank * 1000 + i, b[i] = -1;

        MPI_Datatype vec, hvec, idx, blk, st, sub, res, dup, ctg;
        CHECK_MPI(MPI_Type_contiguous(3, MPI_DOUBLE, &ctg));
        CHECK_MPI(MPI_Type_vector(5, 2, 10, MPI_DOUBLE, &vec));
        CHECK_MPI(MPI_Type_create_hvector(4, 1, 3 * sizeof(double), MPI_DOUBLE, &hvec));
        int bl[3] = {1, 2, 3}, dp[3] = {0, 10, 20};
        CHECK_MPI(MPI_Type_indexed(3, bl, dp, MPI_DOUBLE, &idx));
        int dpb[3] = {1, 5, 9};
        CHECK_MPI(MPI_Type_create_indexed_block(3, 2, dpb, MPI_DOUBLE, &blk));
        struct rec {
            int i;
            double d;
            char c[3];
        } recs[4], recr[4];
        int sbl[3] = {1, 1, 3};
        MPI_Aint sdp[3] = {offsetof(struct rec, i), offsetof(struct rec, d),
                           offsetof(struct rec, c)};
        MPI_Datatype sty[3] = {MPI_INT, MPI_DOUBLE, MPI_CHAR}, tmp;
        CHECK_MPI(MPI_Type_create_struct(3, sbl, sdp, sty, &tmp));
        CHECK_MPI(MPI_Type_create_resized(tmp, 0, sizeof(struct rec), &st));
        CHECK_MPI(MPI_Type_free(&tmp));
        int sizes[2] = {10, 10}, subs[2] = {3, 4}, starts[2] = {2, 5};
        CHECK_MPI(MPI_Type_create_subarray(2, sizes, subs, starts, MPI_ORDER_C, MPI_DOUBLE, &sub));
        CHECK_MPI(MPI_Type_create_resized(vec, 0, 7 * sizeof(double), &res));
        CHECK_MPI(MPI_Type_dup(idx, &dup));
        MPI_Datatype all[] = {ctg, vec, hvec, idx, blk, st, sub, res, dup};
        for (int i = 0; i < 9; i++)
            CHECK_MPI(MPI_Type_commit(&all[i]));

        int sz;
        MPI_Aint lb, ext;
        MPI_Type_size(vec, &sz);
        CHECK(sz == 10 * 8);
        MPI_Type_get_extent(res, &lb, &ext);
        CHECK(lb == 0 && ext == 56);
        MPI_Type_size(sub, &sz);
        CHECK(sz == 12 * 8);
        MPI_Type_get_extent(st, &lb, &ext);
        CHECK(ext == sizeof(struct rec));

        int ni, na, nd, comb;
        CHECK_MPI(MPI_Type_get_envelope(idx, &ni, &na, &nd, &comb));
        CHECK(comb == MPI_COMBINER_INDEXED && ni == 7 && nd == 1);
        int ints[7];
        MPI_Aint addrs[1];
        MPI_Datatype types[1];
        CHECK_MPI(MPI_Type_get_contents(idx, 7, 0, 1, ints, addrs, types));
        CHECK(ints[0] == 3 && ints[6] == 20 && types[0] == MPI_DOUBLE);
        CHECK_MPI(MPI_Type_get_envelope(dup, &ni, &na, &nd, &comb));
        CHECK(comb == MPI_COMBINER_DUP && nd == 1);
        CHECK_MPI(MPI_Type_get_contents(dup, 0, 0, 1, ints, addrs, types));
        int tsz;
        MPI_Type_size(types[0], &tsz);
        CHECK(tsz == 6 * 8);
        if (types[0] != MPI_DOUBLE) MPI_Type_free(&types[0]);
        MPI_Type_set_name(vec, "ghost-vector");
        char nm[MPI_MAX_OBJECT_NAME];
        int nl;
        MPI_Type_get_name(vec, nm, &nl);
        CHECK(strcmp(nm, "ghost-vector") == 0);

        for (int t = 0; t < 9; t++) {
            for (int i = 0; i < 100; i++)
                b[i] = -1;
            MPI_Datatype ty = all[t];
            int count = (ty == st) ? 0 : 1;
            if (ty == st) continue;
            CHECK_MPI(MPI_Sendrecv(a, count, ty, right, t, b, count, ty, left, t, MPI_COMM_WORLD,
                                   MPI_STATUS_IGNORE));
            int n = 0;
            MPI_Type_size(ty, &sz);
            for (int i = 0; i < 100; i++)
                if (b[i] != -1) {
                    CHECK(b[i] == left * 1000 + i);
                    n++;
                }
            CHECK(n * 8 == sz);
        }
        for (int i = 0; i < 4; i++)
            recs[i].i = mpit_rank + i, recs[i].d = i * 0.5, memcpy(recs[i].c, "ab", 3);
        CHECK_MPI(MPI_Sendrecv(recs, 4, st, right, 50, recr, 4, st, left, 50, MPI_COMM_WORLD,
                               MPI_STATUS_IGNORE));
        CHECK(recr[3].i == left + 3 && recr[2].d == 1.0 && strcmp(recr[1].c, "ab") == 0);

        char packed[1024];
        int pos = 0, psz;
        MPI_Pack_size(1, vec, MPI_COMM_WORLD, &psz);
        CHECK(psz >= 80);
        CHECK_MPI(MPI_Pack(a, 1, vec, packed, sizeof packed, &pos, MPI_COMM_WORLD));
        CHECK_MPI(MPI_Pack(a, 2, MPI_INT, packed, sizeof packed, &pos, MPI_COMM_WORLD));
        int upos = 0;
        for (int i = 0; i < 100; i++)
            b[i] = -1;
        CHECK_MPI(MPI_Unpack(packed, pos, &upos, b, 1, vec, MPI_COMM_WORLD));
        CHECK(b[11] == a[11] && b[2] == -1);

        for (int i = 0; i < 9; i++)
            CHECK_MPI(MPI_Type_free(&all[i]));
        CHECK(all[0] == MPI_DATATYPE_NULL);
    }
    return mpit_finish();
}
