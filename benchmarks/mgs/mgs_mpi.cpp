// SPDX-License-Identifier: Apache-2.0
// MPI Modified Gram-Schmidt: the columns of the n x n matrix are distributed block-cyclically over
// the ranks (blocks of mgs::kBlock columns; block b lives on rank b % size). At step b the owner of
// block b orthonormalises its columns and broadcasts them; every rank then projects them out of its
// own later columns. Each column receives exactly the same sequence of floating-point operations as
// in the sequential program, so Q, the error and the checksum are bit-identical to `mgs`.
//
// Verification is distributed: the local column panels travel around a ring so that every pair
// (i <= j) of columns meets once; the maximum |q_i . q_j - delta_ij| is reduced to rank 0, as are
// the per-column sums used for the checksum (summed in column order on rank 0).
//
// stdout (rank 0 only, deterministic for a given n and seed, independent of the number of ranks
// except for the ranks= field):
//   mgs_mpi n=<n> ranks=<p> error=<%.3e> checksum=<%.12e>
#include "mgs_common.hpp"

#include <mpi.h>

#include <algorithm>
#include <climits>
#include <memory>
#include <new>
#include <vector>

namespace {

constexpr const char *kProg = "mgs_mpi";

struct Layout {
    std::size_t n = 0, nblocks = 0;
    int rank = 0, size = 1;
    std::size_t local_blocks(int r) const {
        std::size_t rr = std::size_t(r), p = std::size_t(size);
        return nblocks > rr ? (nblocks - rr + p - 1) / p : 0;
    }
    std::size_t block_width(std::size_t b) const {
        return std::min(mgs::kBlock, n - b * mgs::kBlock);
    }
    // Number of columns held by rank r.
    std::size_t local_cols(int r) const {
        std::size_t c = 0;
        for (std::size_t lb = 0; lb < local_blocks(r); ++lb)
            c += block_width(lb * std::size_t(size) + std::size_t(r));
        return c;
    }
    // Global index of the first column of local block lb of rank r.
    std::size_t global_col(int r, std::size_t lb) const {
        return (lb * std::size_t(size) + std::size_t(r)) * mgs::kBlock;
    }
};

int finish(int code) {
    MPI_Finalize();
    return code;
}

} // namespace

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    Layout L;
    MPI_Comm_rank(MPI_COMM_WORLD, &L.rank);
    MPI_Comm_size(MPI_COMM_WORLD, &L.size);
    const bool root = L.rank == 0;

    mgs::Options opt;
    auto pr = mgs::parse_options(argc, argv, opt);
    if (pr.status == mgs::ParseStatus::help) {
        if (root) std::printf(mgs::usage_text(), kProg);
        return finish(0);
    }
    if (pr.status == mgs::ParseStatus::error) {
        if (root) std::fprintf(stderr, "%s: error: %s\n", kProg, pr.message.c_str());
        return finish(2);
    }
    // All ranks are assumed to share one node (the worst case): the whole problem must fit.
    std::string msg = mgs::memory_check(kProg, opt.n);
    int bad = msg.empty() ? 0 : 1, any_bad = 0;
    MPI_Allreduce(&bad, &any_bad, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    if (any_bad) {
        if (bad && root) std::fprintf(stderr, "%s\n", msg.c_str());
        if (!bad && root)
            std::fprintf(stderr, "%s: error: n=%zu does not fit in memory on another rank\n", kProg,
                         opt.n);
        return finish(2);
    }
    mgs::install_release_handler();

    const std::size_t n = opt.n;
    L.n = n;
    L.nblocks = (n + mgs::kBlock - 1) / mgs::kBlock;
    const std::size_t nlb = L.local_blocks(L.rank);
    const std::size_t ncols = L.local_cols(L.rank);
    std::size_t max_cols = 0;
    for (int r = 0; r < L.size; ++r)
        max_cols = std::max(max_cols, L.local_cols(r));
    if (max_cols * n > std::size_t(INT_MAX)) {
        if (root)
            std::fprintf(stderr, "%s: error: n=%zu: local panel too large for one message\n", kProg,
                         n);
        return finish(2);
    }
    // a: the input columns (kept for --repeat), later reused as the ring buffer of the
    // verification, hence sized for the largest rank. q: the local columns of Q.
    const std::size_t cap = std::max<std::size_t>(max_cols * n, 1);
    std::unique_ptr<double[]> a(new (std::nothrow) double[cap]);
    std::unique_ptr<double[]> q(new (std::nothrow) double[cap]);
    std::vector<double> panel;
    try {
        panel.resize(mgs::kBlock * n);
    } catch (const std::bad_alloc &) {
        a.reset();
    }
    if (!a || !q) {
        std::fprintf(stderr, "%s: error: rank %d: n=%zu: cannot allocate memory\n", kProg, L.rank,
                     n);
        MPI_Abort(MPI_COMM_WORLD, 2);
    }

    double t0 = mgs::now_s();
    std::fill(a.get() + ncols * n, a.get() + cap, 0.0);
    for (std::size_t lb = 0, off = 0; lb < nlb; ++lb) {
        std::size_t g = L.global_col(L.rank, lb);
        std::size_t w = L.block_width(lb * std::size_t(L.size) + std::size_t(L.rank));
        for (std::size_t c = 0; c < w; ++c, off += n)
            mgs::generate_column(opt.seed, n, g + c, a.get() + off);
    }
    std::copy(a.get(), a.get() + cap, q.get());
    double t_init = mgs::now_s() - t0;

    mgs::hold(kProg, "before the computation", opt.pre_hold);

    MPI_Barrier(MPI_COMM_WORLD);
    double t1 = mgs::now_s();
    bool zero_column = false;
    for (unsigned long rep = 1; rep <= opt.repeat; ++rep) {
        double tr = mgs::now_s();
        if (rep > 1) std::copy(a.get(), a.get() + ncols * n, q.get());
        std::size_t next_local = 0; // first local block not yet finished
        for (std::size_t b = 0; b < L.nblocks; ++b) {
            const int owner = int(b % std::size_t(L.size));
            const std::size_t w = L.block_width(b);
            const double *src = panel.data();
            if (owner == L.rank) {
                double *blk = q.get() + next_local * mgs::kBlock * n;
                for (std::size_t j = 0; j < w; ++j) {
                    if (!mgs::normalise(blk + j * n, n)) zero_column = true;
                    for (std::size_t j2 = j + 1; j2 < w; ++j2)
                        mgs::project_out(blk + j2 * n, blk + j * n, n);
                }
                std::copy(blk, blk + w * n, panel.data());
                ++next_local;
            }
            MPI_Bcast(panel.data(), int(w * n), MPI_DOUBLE, owner, MPI_COMM_WORLD);
            // Project the w broadcast columns out of every later local column (k outer, so each
            // column sees them in increasing order, as in the sequential program).
            if (next_local < nlb) {
                double *first = q.get() + next_local * mgs::kBlock * n;
                std::size_t later = ncols - next_local * mgs::kBlock;
                for (std::size_t k = 0; k < w; ++k)
                    for (std::size_t j = 0; j < later; ++j)
                        mgs::project_out(first + j * n, src + k * n, n);
            }
        }
        if (opt.progress) {
            MPI_Barrier(MPI_COMM_WORLD);
            if (root) {
                std::fprintf(stderr, "%s: repeat %lu/%lu done in %.3f s\n", kProg, rep, opt.repeat,
                             mgs::now_s() - tr);
                std::fflush(stderr);
            }
        }
    }
    MPI_Barrier(MPI_COMM_WORLD);
    double t_compute = mgs::now_s() - t1;

    mgs::hold(kProg, "after the computation", opt.hold);

    // ---- distributed verification ----
    MPI_Barrier(MPI_COMM_WORLD);
    double t2 = mgs::now_s();
    double *ring = a.get(); // the input is no longer needed
    std::copy(q.get(), q.get() + cap, ring);
    double local_err = 0;
    const int left = (L.rank + L.size - 1) % L.size, right = (L.rank + 1) % L.size;
    for (int s = 0; s < L.size; ++s) {
        const int src_rank = (L.rank + s) % L.size;
        const std::size_t src_nlb = L.local_blocks(src_rank);
        for (std::size_t lb = 0; lb < nlb; ++lb) {
            std::size_t gi0 = L.global_col(L.rank, lb);
            std::size_t wi = L.block_width(gi0 / mgs::kBlock);
            const double *qi = q.get() + lb * mgs::kBlock * n;
            for (std::size_t rb = 0; rb < src_nlb; ++rb) {
                std::size_t gj0 = L.global_col(src_rank, rb);
                if (gj0 + mgs::kBlock <= gi0) continue; // pairs i <= j only
                std::size_t wj = L.block_width(gj0 / mgs::kBlock);
                const double *qj = ring + rb * mgs::kBlock * n;
                for (std::size_t i = 0; i < wi; ++i)
                    for (std::size_t j = 0; j < wj; ++j) {
                        if (gi0 + i > gj0 + j) continue;
                        local_err =
                            std::max(local_err, mgs::ortho_deviation(qi + i * n, qj + j * n, n,
                                                                     gi0 + i == gj0 + j));
                    }
            }
        }
        if (s + 1 < L.size)
            MPI_Sendrecv_replace(ring, int(max_cols * n), MPI_DOUBLE, left, 0, right, 0,
                                 MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    }
    double err = 0;
    MPI_Reduce(&local_err, &err, 1, MPI_DOUBLE, MPI_MAX, 0, MPI_COMM_WORLD);

    std::vector<double> colsum(n, 0.0), colsum_all(root ? n : 0);
    for (std::size_t lb = 0; lb < nlb; ++lb) {
        std::size_t g = L.global_col(L.rank, lb);
        std::size_t w = L.block_width(g / mgs::kBlock);
        for (std::size_t c = 0; c < w; ++c)
            colsum[g + c] = mgs::column_sum(q.get() + (lb * mgs::kBlock + c) * n, n);
    }
    MPI_Reduce(colsum.data(), root ? colsum_all.data() : nullptr, int(n), MPI_DOUBLE, MPI_SUM, 0,
               MPI_COMM_WORLD);
    int zero_local = zero_column ? 1 : 0, zero_any = 0;
    MPI_Reduce(&zero_local, &zero_any, 1, MPI_INT, MPI_MAX, 0, MPI_COMM_WORLD);
    double t_verify = mgs::now_s() - t2;

    int code = 0;
    if (root) {
        double checksum = 0;
        for (std::size_t j = 0; j < n; ++j)
            checksum += colsum_all[j];
        std::printf("%s n=%zu ranks=%d error=%.3e checksum=%.12e\n", kProg, n, L.size, err,
                    checksum);
        std::fflush(stdout);
        std::fprintf(stderr,
                     "%s: timing n=%zu ranks=%d repeat=%lu init_s=%.6f compute_s=%.6f "
                     "verify_s=%.6f\n",
                     kProg, n, L.size, opt.repeat, t_init, t_compute, t_verify);
        if (zero_any)
            std::fprintf(stderr, "%s: error: zero column during orthogonalisation\n", kProg);
        if (!(err <= mgs::kTolerance)) {
            std::fprintf(stderr, "%s: error: orthonormality error %.3e above tolerance %.1e\n",
                         kProg, err, mgs::kTolerance);
            code = 1;
        }
        if (zero_any) code = 1;
    }
    MPI_Bcast(&code, 1, MPI_INT, 0, MPI_COMM_WORLD);
    return finish(code);
}
