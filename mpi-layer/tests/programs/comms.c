/* SPDX-License-Identifier: Apache-2.0 */
/* Communicators and groups: dup, split, split_type, create, create_group, group algebra,
 * intercommunicators, names, attributes with copy/delete callbacks, compare. */
#include "mpit.h"

static int copies, deletes, freed_key = MPI_KEYVAL_INVALID;
static int copy_cb(MPI_Comm old, int key, void *extra, void *in, void *out, int *flag) {
    if (freed_key != MPI_KEYVAL_INVALID) CHECK(key == freed_key);
    int sz;
    MPI_Comm_size(old, &sz); /* the handle given must be usable by the application */
    *(void **)out = (char *)in + 1;
    *flag = 1;
    copies += *(int *)extra;
    return MPI_SUCCESS;
}
static int delete_cb(MPI_Comm c, int key, void *val, void *extra) {
    (void)c, (void)val, (void)extra;
    if (freed_key != MPI_KEYVAL_INVALID) CHECK(key == freed_key);
    deletes++;
    return MPI_SUCCESS;
}

int main(int argc, char **argv) {
    mpit_init(&argc, &argv, "comms");
    MPIT_REPEAT {
        copies = deletes = 0;
        int r = mpit_rank, n = mpit_size, res;
        MPI_Comm dup, half, node, even, viagroup, inter, merged;
        CHECK_MPI(MPI_Comm_dup(MPI_COMM_WORLD, &dup));
        CHECK_MPI(MPI_Comm_compare(dup, MPI_COMM_WORLD, &res));
        CHECK(res == MPI_CONGRUENT);
        CHECK_MPI(MPI_Comm_compare(MPI_COMM_WORLD, MPI_COMM_WORLD, &res));
        CHECK(res == MPI_IDENT);
        CHECK_MPI(MPI_Comm_split(MPI_COMM_WORLD, r % 2, -r, &half));
        int hr, hs;
        MPI_Comm_rank(half, &hr);
        MPI_Comm_size(half, &hs);
        CHECK(hs == (n + 1 - r % 2) / 2 && hr == hs - 1 - r / 2);
        CHECK_MPI(
            MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node));
        MPI_Comm_size(node, &hs);
        CHECK(hs == n);
        MPI_Comm undef;
        CHECK_MPI(MPI_Comm_split(MPI_COMM_WORLD, r == 0 ? MPI_UNDEFINED : 1, 0, &undef));
        if (r == 0)
            CHECK(undef == MPI_COMM_NULL);
        else
            MPI_Comm_free(&undef);

        MPI_Group world, evens, odds, uni, inter_g, diff, rng, empty;
        CHECK_MPI(MPI_Comm_group(MPI_COMM_WORLD, &world));
        int *ranks = malloc(n * sizeof(int)), ne = 0;
        for (int i = 0; i < n; i += 2)
            ranks[ne++] = i;
        CHECK_MPI(MPI_Group_incl(world, ne, ranks, &evens));
        CHECK_MPI(MPI_Group_excl(world, ne, ranks, &odds));
        CHECK_MPI(MPI_Group_union(odds, evens, &uni));
        CHECK_MPI(MPI_Group_intersection(evens, odds, &inter_g));
        CHECK(inter_g == MPI_GROUP_EMPTY);
        CHECK_MPI(MPI_Group_difference(world, evens, &diff));
        CHECK_MPI(MPI_Group_compare(diff, odds, &res));
        CHECK(res == MPI_IDENT);
        CHECK_MPI(MPI_Group_compare(uni, world, &res));
        CHECK(res == MPI_SIMILAR || (n <= 2 && res == MPI_IDENT) || res == MPI_IDENT);
        int range[1][3] = {{0, n - 1, 2}};
        CHECK_MPI(MPI_Group_range_incl(world, 1, range, &rng));
        CHECK_MPI(MPI_Group_compare(rng, evens, &res));
        CHECK(res == MPI_IDENT);
        int tr = -5, zero = 0;
        CHECK_MPI(MPI_Group_translate_ranks(evens, 1, &zero, world, &tr));
        CHECK(tr == 0);
        CHECK_MPI(MPI_Group_incl(world, 0, NULL, &empty));
        CHECK(empty == MPI_GROUP_EMPTY);
        int gs;
        MPI_Group_size(odds, &gs);
        CHECK(gs == n / 2);

        CHECK_MPI(MPI_Comm_create(MPI_COMM_WORLD, evens, &even));
        if (r % 2 == 0) {
            MPI_Comm_size(even, &hs);
            CHECK(hs == ne);
            CHECK_MPI(MPI_Comm_create_group(MPI_COMM_WORLD, evens, 7, &viagroup));
            int s = 1, t = 0;
            MPI_Allreduce(&s, &t, 1, MPI_INT, MPI_SUM, viagroup);
            CHECK(t == ne);
            MPI_Comm_free(&viagroup);
            MPI_Comm_free(&even);
        } else {
            CHECK(even == MPI_COMM_NULL);
        }

        /* intercommunicator between the two halves */
        if (n >= 2) {
            /* local leader = rank 0 of `half`, which the key -r made the highest world rank of each
             * parity */
            int max_even = (n - 1) % 2 == 0 ? n - 1 : n - 2,
                max_odd = (n - 1) % 2 == 1 ? n - 1 : n - 2;
            CHECK_MPI(MPI_Intercomm_create(half, 0, MPI_COMM_WORLD, r % 2 == 0 ? max_odd : max_even,
                                           99, &inter));
            int flag, rs;
            MPI_Comm_test_inter(inter, &flag);
            MPI_Comm_remote_size(inter, &rs);
            CHECK(flag == 1 && rs == (r % 2 == 0 ? n / 2 : (n + 1) / 2));
            MPI_Group rg;
            CHECK_MPI(MPI_Comm_remote_group(inter, &rg));
            MPI_Group_size(rg, &gs);
            CHECK(gs == rs);
            MPI_Group_free(&rg);
            CHECK_MPI(MPI_Intercomm_merge(inter, r % 2, &merged));
            MPI_Comm_size(merged, &hs);
            CHECK(hs == n);
            int s = r, t = 0;
            MPI_Allreduce(&s, &t, 1, MPI_INT, MPI_SUM, merged);
            CHECK(t == n * (n - 1) / 2);
            MPI_Comm_free(&merged);
            MPI_Comm_free(&inter);
        }

        /* names and attributes */
        MPI_Comm_set_name(dup, "ghost-dup");
        char nm[MPI_MAX_OBJECT_NAME];
        int nl;
        MPI_Comm_get_name(dup, nm, &nl);
        CHECK(strcmp(nm, "ghost-dup") == 0);
        int key, one = 1;
        CHECK_MPI(MPI_Comm_create_keyval(copy_cb, delete_cb, &key, &one));
        static char payload[8];
        CHECK_MPI(MPI_Comm_set_attr(dup, key, payload));
        MPI_Comm dup2;
        CHECK_MPI(MPI_Comm_dup(dup, &dup2));
        void *val;
        int flag;
        CHECK_MPI(MPI_Comm_get_attr(dup2, key, &val, &flag));
        CHECK(flag && val == payload + 1 && copies == 1);
        int *tag_ub;
        CHECK_MPI(MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_TAG_UB, &tag_ub, &flag));
        CHECK(flag && *tag_ub >= 32767);
        CHECK_MPI(MPI_Comm_free(&dup2));
        CHECK(deletes == 1 && dup2 == MPI_COMM_NULL);
        /* A keyval freed while an attribute uses it lives on (MPI-1 5.7.1): keyvals made
         * after it are others, and its callbacks still get its number. */
        freed_key = key;
        CHECK_MPI(MPI_Comm_free_keyval(&key));
        CHECK(key == MPI_KEYVAL_INVALID);
        int later[4];
        for (int k = 0; k < 4; k++) {
            CHECK_MPI(MPI_Comm_create_keyval(MPI_COMM_NULL_COPY_FN, MPI_COMM_NULL_DELETE_FN,
                                             &later[k], NULL));
            CHECK(later[k] != freed_key);
        }
        CHECK_MPI(MPI_Comm_dup(dup, &dup2));
        CHECK_MPI(MPI_Comm_get_attr(dup2, freed_key, &val, &flag));
        CHECK(flag && val == payload + 1 && copies == 2);
        CHECK_MPI(MPI_Comm_free(&dup2));
        CHECK(deletes == 2);
        CHECK_MPI(MPI_Comm_delete_attr(dup, freed_key));
        CHECK(deletes == 3);
        freed_key = MPI_KEYVAL_INVALID;
        for (int k = 0; k < 4; k++)
            CHECK_MPI(MPI_Comm_free_keyval(&later[k]));

        /* Fortran handle conversions give back the same handle */
        MPI_Fint fc = MPI_Comm_c2f(dup);
        CHECK(MPI_Comm_f2c(fc) == dup);
        CHECK(MPI_Comm_f2c(MPI_Comm_c2f(MPI_COMM_WORLD)) == MPI_COMM_WORLD);
        CHECK(MPI_Type_f2c(MPI_Type_c2f(MPI_DOUBLE)) == MPI_DOUBLE);

        /* the same group handed out twice must be freeable twice */
        MPI_Group g1, g2;
        MPI_Comm_group(dup, &g1);
        MPI_Comm_group(dup, &g2);
        CHECK_MPI(MPI_Group_free(&g1));
        MPI_Group_size(g2, &gs);
        CHECK(gs == n);
        CHECK_MPI(MPI_Group_free(&g2));

        MPI_Group gl[] = {world, evens, odds, uni, diff, rng};
        for (int i = 0; i < 6; i++)
            CHECK_MPI(MPI_Group_free(&gl[i]));
        MPI_Comm_free(&half);
        MPI_Comm_free(&node);
        CHECK_MPI(MPI_Comm_free(&dup));
        CHECK(dup == MPI_COMM_NULL);
    }
    return mpit_finish();
}
