/* SPDX-License-Identifier: Apache-2.0 */
/* Cartesian, graph and distributed-graph topologies, and neighbourhood collectives. */
#include "mpit.h"

int main(int argc, char **argv) {
    mpit_init(&argc, &argv, "topo");
    MPIT_REPEAT {
        int r = mpit_rank, n = mpit_size;
        int dims[2] = {0, 0}, periods[2] = {1, 0};
        CHECK_MPI(MPI_Dims_create(n, 2, dims));
        CHECK(dims[0] * dims[1] == n);
        MPI_Comm cart;
        CHECK_MPI(MPI_Cart_create(MPI_COMM_WORLD, 2, dims, periods, 0, &cart));
        int topo, nd, coords[2], cr, src, dst;
        MPI_Topo_test(cart, &topo);
        CHECK(topo == MPI_CART);
        MPI_Cartdim_get(cart, &nd);
        CHECK(nd == 2);
        CHECK_MPI(MPI_Cart_coords(cart, r, 2, coords));
        CHECK_MPI(MPI_Cart_rank(cart, coords, &cr));
        CHECK(cr == r);
        int gd[2], gp[2], gc[2];
        CHECK_MPI(MPI_Cart_get(cart, 2, gd, gp, gc));
        CHECK(gd[0] == dims[0] && gp[0] == 1 && gc[1] == coords[1]);
        CHECK_MPI(MPI_Cart_shift(cart, 0, 1, &src, &dst));
        CHECK(dst != MPI_PROC_NULL);
        CHECK_MPI(MPI_Cart_shift(cart, 1, 1, &src, &dst));
        if (coords[1] == dims[1] - 1) CHECK(dst == MPI_PROC_NULL);
        int remain[2] = {1, 0};
        MPI_Comm row;
        CHECK_MPI(MPI_Cart_sub(cart, remain, &row));
        int rs;
        MPI_Comm_size(row, &rs);
        CHECK(rs == dims[0]);
        /* neighbour collectives on the cart: 4 neighbours (some PROC_NULL) */
        int sb[4] = {r, r, r, r}, rb[4] = {-1, -1, -1, -1};
        CHECK_MPI(MPI_Neighbor_alltoall(sb, 1, MPI_INT, rb, 1, MPI_INT, cart));
        int up, down;
        MPI_Cart_shift(cart, 0, 1, &up, &down);
        CHECK(rb[0] == up && rb[1] == down);
        int ag[4] = {-1, -1, -1, -1};
        CHECK_MPI(MPI_Neighbor_allgather(&r, 1, MPI_INT, ag, 1, MPI_INT, cart));
        CHECK(ag[1] == down);
        int cnt[4] = {1, 1, 1, 1};
        MPI_Aint dsp[4] = {0, 4, 8, 12};
        MPI_Datatype ty[4] = {MPI_INT, MPI_INT, MPI_INT, MPI_INT};
        int wb[4] = {-1, -1, -1, -1};
        CHECK_MPI(MPI_Neighbor_alltoallw(sb, cnt, dsp, ty, wb, cnt, dsp, ty, cart));
        CHECK(wb[0] == up);
        MPI_Request q;
        CHECK_MPI(MPI_Ineighbor_alltoallw(sb, cnt, dsp, ty, wb, cnt, dsp, ty, cart, &q));
        CHECK_MPI(MPI_Wait(&q, MPI_STATUS_IGNORE));
        CHECK(wb[1] == down);

        /* ring as a graph */
        int *index = malloc(n * sizeof(int)), *edges = malloc(2 * n * sizeof(int));
        for (int i = 0; i < n; i++) {
            index[i] = 2 * (i + 1);
            edges[2 * i] = (i + n - 1) % n;
            edges[2 * i + 1] = (i + 1) % n;
        }
        MPI_Comm graph;
        CHECK_MPI(MPI_Graph_create(MPI_COMM_WORLD, n, index, edges, 0, &graph));
        MPI_Topo_test(graph, &topo);
        CHECK(topo == MPI_GRAPH);
        int nn, nb[2];
        CHECK_MPI(MPI_Graph_neighbors_count(graph, r, &nn));
        CHECK(nn == 2);
        CHECK_MPI(MPI_Graph_neighbors(graph, r, 2, nb));
        CHECK(nb[0] == (r + n - 1) % n && nb[1] == (r + 1) % n);
        int gn, ge;
        MPI_Graphdims_get(graph, &gn, &ge);
        CHECK(gn == n && ge == 2 * n);
        int ga[2] = {-1, -1};
        CHECK_MPI(MPI_Neighbor_allgather(&r, 1, MPI_INT, ga, 1, MPI_INT, graph));
        CHECK(ga[0] == nb[0] && ga[1] == nb[1]);

        /* distributed graph: everyone sends to its right neighbour, weighted and unweighted */
        int to = (r + 1) % n, from = (r + n - 1) % n, w = 5;
        MPI_Comm dg, dgu;
        CHECK_MPI(MPI_Dist_graph_create_adjacent(MPI_COMM_WORLD, 1, &from, &w, 1, &to, &w,
                                                 MPI_INFO_NULL, 0, &dg));
        CHECK_MPI(MPI_Dist_graph_create_adjacent(MPI_COMM_WORLD, 1, &from, MPI_UNWEIGHTED, 1, &to,
                                                 MPI_UNWEIGHTED, MPI_INFO_NULL, 0, &dgu));
        int in, out, weighted;
        CHECK_MPI(MPI_Dist_graph_neighbors_count(dg, &in, &out, &weighted));
        CHECK(in == 1 && out == 1 && weighted == 1);
        CHECK_MPI(MPI_Dist_graph_neighbors_count(dgu, &in, &out, &weighted));
        CHECK(weighted == 0);
        int s1, d1, sw, dw;
        CHECK_MPI(MPI_Dist_graph_neighbors(dg, 1, &s1, &sw, 1, &d1, &dw));
        CHECK(s1 == from && d1 == to && sw == 5);
        int got = -1;
        CHECK_MPI(MPI_Neighbor_alltoall(&r, 1, MPI_INT, &got, 1, MPI_INT, dgu));
        CHECK(got == from);
        MPI_Comm dgs;
        int deg = 1;
        CHECK_MPI(MPI_Dist_graph_create(MPI_COMM_WORLD, 1, &r, &deg, &to, MPI_UNWEIGHTED,
                                        MPI_INFO_NULL, 0, &dgs));
        got = -1;
        CHECK_MPI(MPI_Neighbor_allgather(&r, 1, MPI_INT, &got, 1, MPI_INT, dgs));
        CHECK(got == from);
        MPI_Comm cl[] = {cart, row, graph, dg, dgu, dgs};
        for (int i = 0; i < 6; i++)
            CHECK_MPI(MPI_Comm_free(&cl[i]));
        if (r == 0) printf("rank 0: grid %dx%d\n", dims[0], dims[1]);
    }
    return mpit_finish();
}
