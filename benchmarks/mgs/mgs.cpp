// SPDX-License-Identifier: Apache-2.0
// Sequential Modified Gram-Schmidt: orthonormal basis of n pseudo-random vectors of dimension n.
// The workload of the seed paper's evaluation (Kerrighed ghost processes, Section 5).
//
// stdout (deterministic for a given n and seed):
//   mgs n=<n> error=<max|Q^T Q - I| %.3e> checksum=<sum of the entries of Q %.12e>
// stderr: timings and, with --progress, one line per repeat.
#include "mgs_common.hpp"

#include <algorithm>
#include <memory>
#include <new>

namespace {

constexpr const char *kProg = "mgs";

// In-place MGS on the column-major n x n matrix q. Column blocks are processed left to right: first
// every finished column is projected out of the block (k outer so that q_k is read once per block),
// then the block itself is orthonormalised. Every column j receives the projections of columns
// 0..j-1 in increasing order, exactly as in the textbook (right-looking) MGS, so the result is the
// same bit for bit; only the memory traffic changes.
bool mgs_inplace(double *q, std::size_t n) {
    for (std::size_t jb = 0; jb < n; jb += mgs::kBlock) {
        std::size_t je = std::min(n, jb + mgs::kBlock);
        for (std::size_t k = 0; k < jb; ++k) {
            const double *qk = q + k * n;
            for (std::size_t j = jb; j < je; ++j)
                mgs::project_out(q + j * n, qk, n);
        }
        for (std::size_t j = jb; j < je; ++j) {
            if (!mgs::normalise(q + j * n, n)) return false;
            for (std::size_t j2 = j + 1; j2 < je; ++j2)
                mgs::project_out(q + j2 * n, q + j * n, n);
        }
    }
    return true;
}

// max over i <= j of |q_i . q_j - delta_ij|, blocked over column pairs.
double orthonormality_error(const double *q, std::size_t n) {
    double err = 0;
    for (std::size_t ib = 0; ib < n; ib += mgs::kBlock) {
        std::size_t ie = std::min(n, ib + mgs::kBlock);
        for (std::size_t jb = ib; jb < n; jb += mgs::kBlock) {
            std::size_t je = std::min(n, jb + mgs::kBlock);
            for (std::size_t i = ib; i < ie; ++i)
                for (std::size_t j = std::max(i, jb); j < je; ++j)
                    err = std::max(err, mgs::ortho_deviation(q + i * n, q + j * n, n, i == j));
        }
    }
    return err;
}

} // namespace

int main(int argc, char **argv) {
    mgs::Options opt;
    auto pr = mgs::parse_options(argc, argv, opt);
    if (pr.status == mgs::ParseStatus::help) {
        std::printf(mgs::usage_text(), kProg);
        return 0;
    }
    if (pr.status == mgs::ParseStatus::error) {
        std::fprintf(stderr, "%s: error: %s\n", kProg, pr.message.c_str());
        return 2;
    }
    if (auto msg = mgs::memory_check(kProg, opt.n); !msg.empty()) {
        std::fprintf(stderr, "%s\n", msg.c_str());
        return 2;
    }
    mgs::install_release_handler();

    const std::size_t n = opt.n;
    std::unique_ptr<double[]> a(new (std::nothrow) double[n * n]);
    std::unique_ptr<double[]> q(new (std::nothrow) double[n * n]);
    if (!a || !q) {
        std::fprintf(stderr, "%s: error: n=%zu: cannot allocate %.1f MiB\n", kProg, n,
                     double(n) * double(n) * 16.0 / 1048576.0);
        return 2;
    }

    double t0 = mgs::now_s();
    for (std::size_t j = 0; j < n; ++j)
        mgs::generate_column(opt.seed, n, j, a.get() + j * n);
    std::copy(a.get(), a.get() + n * n, q.get());
    double t_init = mgs::now_s() - t0;

    mgs::hold(kProg, "before the computation", opt.pre_hold);

    double t1 = mgs::now_s();
    for (unsigned long r = 1; r <= opt.repeat; ++r) {
        double tr = mgs::now_s();
        if (r > 1) std::copy(a.get(), a.get() + n * n, q.get());
        if (!mgs_inplace(q.get(), n)) {
            std::fprintf(stderr, "%s: error: n=%zu: zero column during orthogonalisation\n", kProg,
                         n);
            return 1;
        }
        if (opt.progress) {
            std::fprintf(stderr, "%s: repeat %lu/%lu done in %.3f s\n", kProg, r, opt.repeat,
                         mgs::now_s() - tr);
            std::fflush(stderr);
        }
    }
    double t_compute = mgs::now_s() - t1;

    mgs::hold(kProg, "after the computation", opt.hold);

    double t2 = mgs::now_s();
    double err = orthonormality_error(q.get(), n);
    double checksum = 0;
    for (std::size_t j = 0; j < n; ++j)
        checksum += mgs::column_sum(q.get() + j * n, n);
    double t_verify = mgs::now_s() - t2;

    std::printf("%s n=%zu error=%.3e checksum=%.12e\n", kProg, n, err, checksum);
    std::fflush(stdout);
    std::fprintf(stderr, "%s: timing n=%zu repeat=%lu init_s=%.6f compute_s=%.6f verify_s=%.6f\n",
                 kProg, n, opt.repeat, t_init, t_compute, t_verify);
    if (!(err <= mgs::kTolerance)) {
        std::fprintf(stderr, "%s: error: orthonormality error %.3e above tolerance %.1e\n", kProg,
                     err, mgs::kTolerance);
        return 1;
    }
    return 0;
}
