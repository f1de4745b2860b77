/* SPDX-License-Identifier: Apache-2.0 */
/* A stencil-style job whose topologies live across checkpoints (run_job_ckpt.sh): made once,
 * before the first step, and used in every step: a periodic 2-D Cartesian grid (made with
 * reorder = 1, as solvers do), its rows (MPI_Cart_sub), a weighted distributed graph
 * (MPI_Dist_graph_create_adjacent), an unweighted one made with MPI_Dist_graph_create, and a
 * graph (MPI_Graph_create). Each step exchanges halos with Cart_shift + Sendrecv, runs neighbour
 * collectives on every topology, reduces along the rows, checks what it received and what each
 * topology says of itself (coordinates, neighbours, weights), and folds it all into a checksum.
 * Each step also makes sub-communicators as solvers' phases do, most of them freed soon after:
 * a split of the grid that leaves its rank 0 out (MPI_COMM_NULL there), one of which is kept
 * for three steps, and a communicator created from a group without the last rank, whose
 * duplicate outlives it by a step; so that at any checkpoint some ranks hold live results of
 * creations that others hold as MPI_COMM_NULL or freed (a restart must replay them on every
 * member, and the records of those dead everywhere must not pile up). SLEEP_MS of sleep between
 * steps (outside MPI). Prints only at the end, so that a job restarted
 * from a checkpoint prints what an uninterrupted one prints.
 * Usage: topo_steps STEPS [SLEEP_MS] */
#include "mpit.h"

int main(int argc, char **argv) {
    mpit_init(&argc, &argv, "topo_steps");
    int steps = argc > 1 ? atoi(argv[1]) : 100;
    int sleep_ms = argc > 2 ? atoi(argv[2]) : 20;
    int n = mpit_size;

    int dims[2] = {0, 0}, periods[2] = {1, 1};
    CHECK_MPI(MPI_Dims_create(n, 2, dims));
    MPI_Comm cart, row, dg, dgs, graph;
    CHECK_MPI(MPI_Cart_create(MPI_COMM_WORLD, 2, dims, periods, 1, &cart));
    int r; /* this process's rank in the grid (reorder may differ from the world rank) */
    MPI_Comm_rank(cart, &r);
    int coords[2];
    CHECK_MPI(MPI_Cart_coords(cart, r, 2, coords));
    int remain[2] = {0, 1};
    CHECK_MPI(MPI_Cart_sub(cart, remain, &row));

    /* distributed graphs over the grid's ranks: each sends to the next, weights 3 + rank */
    int to = (r + 1) % n, from = (r + n - 1) % n, wout = 3 + r, win = 3 + from;
    CHECK_MPI(
        MPI_Dist_graph_create_adjacent(cart, 1, &from, &win, 1, &to, &wout, MPI_INFO_NULL, 0, &dg));
    int deg = 1;
    CHECK_MPI(
        MPI_Dist_graph_create(cart, 1, &r, &deg, &to, MPI_UNWEIGHTED, MPI_INFO_NULL, 0, &dgs));
    /* a ring as a graph */
    int *index = malloc((size_t)n * sizeof(int)), *edges = malloc(2 * (size_t)n * sizeof(int));
    for (int i = 0; i < n; i++) {
        index[i] = 2 * (i + 1);
        edges[2 * i] = (i + n - 1) % n;
        edges[2 * i + 1] = (i + 1) % n;
    }
    CHECK_MPI(MPI_Graph_create(cart, n, index, edges, 0, &graph));
    free(index);
    free(edges);

    MPI_Group grid_group, all_but_last;
    CHECK_MPI(MPI_Comm_group(cart, &grid_group));
    int last = n - 1;
    CHECK_MPI(MPI_Group_excl(grid_group, 1, &last, &all_but_last));
    MPI_Comm kept = MPI_COMM_NULL, dup_kept = MPI_COMM_NULL;

    unsigned long long state = 777 + (unsigned long long)r;
    for (int s = 0; s < steps; s++) {
        mpit_step(s, steps);
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        long long v = (long long)(state >> 20);

        /* the topologies still say what they were made as */
        int topo, nd, c2[2], gd[2], gp[2], gc[2], cr;
        MPI_Topo_test(cart, &topo);
        CHECK(topo == MPI_CART);
        MPI_Cartdim_get(cart, &nd);
        CHECK(nd == 2);
        CHECK_MPI(MPI_Cart_get(cart, 2, gd, gp, gc));
        CHECK(gd[0] == dims[0] && gd[1] == dims[1] && gp[0] == 1 && gp[1] == 1);
        CHECK(gc[0] == coords[0] && gc[1] == coords[1]);
        CHECK_MPI(MPI_Cart_coords(cart, r, 2, c2));
        CHECK_MPI(MPI_Cart_rank(cart, c2, &cr));
        CHECK(cr == r);

        /* halo exchange along each dimension */
        for (int d = 0; d < 2; d++) {
            int src, dst;
            CHECK_MPI(MPI_Cart_shift(cart, d, 1, &src, &dst));
            long long got = -1;
            CHECK_MPI(MPI_Sendrecv(&v, 1, MPI_LONG_LONG, dst, s, &got, 1, MPI_LONG_LONG, src, s,
                                   cart, MPI_STATUS_IGNORE));
            mpit_mix((unsigned long long)got);
            mpit_mix((unsigned long long)src * 131u + (unsigned long long)dst);
        }
        /* neighbour collectives: 4 neighbours on the grid */
        long long nb[4] = {-1, -1, -1, -1};
        CHECK_MPI(MPI_Neighbor_allgather(&v, 1, MPI_LONG_LONG, nb, 1, MPI_LONG_LONG, cart));
        for (int k = 0; k < 4; k++)
            mpit_mix((unsigned long long)nb[k]);
        /* along the row */
        long long rowsum = 0;
        CHECK_MPI(MPI_Allreduce(&v, &rowsum, 1, MPI_LONG_LONG, MPI_SUM, row));
        int rs;
        MPI_Comm_size(row, &rs);
        CHECK(rs == dims[1]);
        mpit_mix((unsigned long long)rowsum);

        /* weighted distributed graph: neighbours and weights as made */
        int in, out, weighted, s1, d1, sw, dw;
        CHECK_MPI(MPI_Dist_graph_neighbors_count(dg, &in, &out, &weighted));
        CHECK(in == 1 && out == 1 && weighted);
        CHECK_MPI(MPI_Dist_graph_neighbors(dg, 1, &s1, &sw, 1, &d1, &dw));
        CHECK(s1 == from && d1 == to && sw == win && dw == wout);
        long long left = -1;
        CHECK_MPI(MPI_Neighbor_alltoall(&v, 1, MPI_LONG_LONG, &left, 1, MPI_LONG_LONG, dg));
        mpit_mix((unsigned long long)left);
        CHECK_MPI(MPI_Dist_graph_neighbors_count(dgs, &in, &out, &weighted));
        CHECK(in == 1 && out == 1);
        left = -1;
        CHECK_MPI(MPI_Neighbor_allgather(&v, 1, MPI_LONG_LONG, &left, 1, MPI_LONG_LONG, dgs));
        mpit_mix((unsigned long long)left);

        /* the ring graph */
        int nn, gnb[2];
        CHECK_MPI(MPI_Graph_neighbors_count(graph, r, &nn));
        CHECK(nn == 2);
        CHECK_MPI(MPI_Graph_neighbors(graph, r, 2, gnb));
        CHECK(gnb[0] == from && gnb[1] == to);
        long long ring[2] = {-1, -1};
        CHECK_MPI(MPI_Neighbor_allgather(&v, 1, MPI_LONG_LONG, ring, 1, MPI_LONG_LONG, graph));
        mpit_mix((unsigned long long)ring[0]);
        mpit_mix((unsigned long long)ring[1]);

        /* sub-communicators: null on some ranks, freed on the others (one kept for a while) */
        MPI_Comm part;
        CHECK_MPI(MPI_Comm_split(cart, r == 0 ? MPI_UNDEFINED : r % 2, r, &part));
        CHECK((r == 0) == (part == MPI_COMM_NULL));
        if (part != MPI_COMM_NULL) {
            long long psum = 0;
            CHECK_MPI(MPI_Allreduce(&v, &psum, 1, MPI_LONG_LONG, MPI_SUM, part));
            mpit_mix((unsigned long long)psum);
            if (s % 3 == 0) {
                if (kept != MPI_COMM_NULL) CHECK_MPI(MPI_Comm_free(&kept));
                kept = part;
            } else {
                CHECK_MPI(MPI_Comm_free(&part));
            }
        }
        if (kept != MPI_COMM_NULL) {
            int ks;
            MPI_Comm_size(kept, &ks);
            CHECK(ks == (r % 2 ? n / 2 : n / 2 - 1));
            CHECK_MPI(MPI_Barrier(kept));
        }
        if (dup_kept != MPI_COMM_NULL) CHECK_MPI(MPI_Comm_free(&dup_kept));
        MPI_Comm created;
        CHECK_MPI(MPI_Comm_create(cart, all_but_last, &created));
        CHECK((r == last) == (created == MPI_COMM_NULL));
        if (created != MPI_COMM_NULL) {
            CHECK_MPI(MPI_Comm_dup(created, &dup_kept));
            CHECK_MPI(MPI_Comm_free(&created)); /* the duplicate outlives it by a step */
            long long csum = 0;
            CHECK_MPI(MPI_Allreduce(&v, &csum, 1, MPI_LONG_LONG, MPI_SUM, dup_kept));
            mpit_mix((unsigned long long)csum);
        }

        mpit_sleep_ms(sleep_ms);
    }
    if (kept != MPI_COMM_NULL) CHECK_MPI(MPI_Comm_free(&kept));
    if (dup_kept != MPI_COMM_NULL) CHECK_MPI(MPI_Comm_free(&dup_kept));
    MPI_Group_free(&all_but_last);
    MPI_Group_free(&grid_group);
    MPI_Comm all[] = {cart, row, dg, dgs, graph};
    for (int i = 0; i < 5; i++)
        CHECK_MPI(MPI_Comm_free(&all[i]));
    printf("rank %d: topo_steps %d steps grid %dx%d at (%d,%d) checksum %016llx\n", mpit_rank,
           steps, dims[0], dims[1], coords[0], coords[1], mpit_sum);
    return mpit_finish();
}
