// SPDX-License-Identifier: Apache-2.0
// Shared pieces of the MGS benchmark programs (mgs.cpp, mgs_mpi.cpp): option parsing, the
// deterministic input generator, the numerical kernels and small helpers.
//
// Determinism: every floating-point result depends only on (n, seed). The kernels below have a
// fixed evaluation order (no reassociation: the build uses neither -ffast-math nor FMA
// contraction), and both programs apply the same sequence of updates to every column, so the
// sequential and the MPI programs produce bit-identical matrices, errors and checksums for any
// number of ranks.
#pragma once

#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <optional>
#include <signal.h>
#include <string>
#include <string_view>
#include <time.h>
#include <unistd.h>

namespace mgs {

// Columns are processed in blocks of this many columns (cache blocking; does not change results).
inline constexpr std::size_t kBlock = 32;
// Orthonormality tolerance on max|Q^T Q - I|.
inline constexpr double kTolerance = 1e-8;

struct Options {
    std::size_t n = 1000;
    std::uint64_t seed = 1;
    unsigned long repeat = 1;
    bool progress = false;
    double hold = 0.0;     // seconds to hold after the computation (before verification)
    double pre_hold = 0.0; // seconds to hold after initialisation (before the computation)
};

enum class ParseStatus { ok, help, error };

struct ParseResult {
    ParseStatus status = ParseStatus::ok;
    std::string message; // one line, for error
};

inline const char *usage_text() {
    return "usage: %s [--n N] [--seed S] [--repeat R] [--progress] [--hold SECONDS] "
           "[--pre-hold SECONDS]\n"
           "  --n N          matrix order: n vectors of dimension n (default 1000)\n"
           "  --seed S       seed of the pseudo-random input (default 1)\n"
           "  --repeat R     redo the orthogonalisation R times (default 1)\n"
           "  --progress     print one line per repeat on stderr\n"
           "  --hold S       after the computation, wait S seconds (or until SIGUSR1) before\n"
           "                 verifying and printing; the matrices stay in memory\n"
           "  --pre-hold S   same, but after initialisation, before the orthogonalisation\n"
           "stdout: one deterministic line 'NAME n=N error=E checksum=C'; timings go to stderr.\n"
           "exit status: 0 ok, 1 orthonormality error above tolerance, 2 bad arguments or size.\n";
}

template <typename T> inline bool parse_unsigned(std::string_view s, T &out) {
    if (s.empty() || s[0] == '-' || s[0] == '+') return false;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
    return ec == std::errc() && p == s.data() + s.size();
}

inline bool parse_seconds(std::string_view s, double &out) {
    if (s.empty()) return false;
    std::string tmp(s);
    char *end = nullptr;
    errno = 0;
    double v = std::strtod(tmp.c_str(), &end);
    if (errno != 0 || end != tmp.c_str() + tmp.size() || !std::isfinite(v) || v < 0 || v > 1e7)
        return false;
    out = v;
    return true;
}

inline ParseResult parse_options(int argc, char **argv, Options &o) {
    auto fail = [](std::string m) { return ParseResult{ParseStatus::error, std::move(m)}; };
    for (int i = 1; i < argc; ++i) {
        std::string_view a = argv[i];
        std::string_view val;
        bool has_inline = false;
        if (a.starts_with("--")) {
            auto eq = a.find('=');
            if (eq != std::string_view::npos) {
                val = a.substr(eq + 1);
                a = a.substr(0, eq);
                has_inline = true;
            }
        }
        auto need_value = [&](std::string_view &v) -> bool {
            if (has_inline) {
                v = val;
                return true;
            }
            if (i + 1 >= argc) return false;
            v = argv[++i];
            return true;
        };
        std::string_view v;
        if (a == "--help" || a == "-h") return {ParseStatus::help, {}};
        if (a == "--progress") {
            if (has_inline) return fail("option --progress takes no value");
            o.progress = true;
        } else if (a == "--n" || a == "--seed" || a == "--repeat" || a == "--hold" ||
                   a == "--pre-hold") {
            if (!need_value(v)) return fail("option " + std::string(a) + " needs a value");
            bool ok = true;
            if (a == "--n") {
                ok = parse_unsigned(v, o.n) && o.n >= 1 && o.n <= 1000000;
            } else if (a == "--seed") {
                ok = parse_unsigned(v, o.seed);
            } else if (a == "--repeat") {
                ok = parse_unsigned(v, o.repeat) && o.repeat >= 1;
            } else if (a == "--hold") {
                ok = parse_seconds(v, o.hold);
            } else {
                ok = parse_seconds(v, o.pre_hold);
            }
            if (!ok)
                return fail("invalid value '" + std::string(v) + "' for " + std::string(a) +
                            (a == "--n"        ? " (expected an integer in 1..1000000)"
                             : a == "--seed"   ? " (expected a non-negative integer)"
                             : a == "--repeat" ? " (expected a positive integer)"
                                               : " (expected seconds >= 0)"));
        } else {
            return fail("unknown argument '" + std::string(argv[i]) + "' (try --help)");
        }
    }
    return {};
}

// MemAvailable from /proc/meminfo in bytes, or nullopt if it cannot be read.
inline std::optional<std::uint64_t> mem_available_bytes() {
    std::ifstream f("/proc/meminfo");
    std::string key;
    std::uint64_t value = 0;
    std::string unit;
    while (f >> key >> value) {
        std::getline(f, unit);
        if (key == "MemAvailable:") return value * 1024;
    }
    return std::nullopt;
}

// Bytes needed for the two n x n matrices (the input A, kept for --repeat, and the result Q).
// Returns nullopt on overflow.
inline std::optional<std::uint64_t> matrix_bytes(std::uint64_t n) {
    if (n > 0 && n > UINT64_MAX / n / 16) return std::nullopt;
    return n * n * 16;
}

// If the matrices do not fit in memory, a one-line message describing why; empty otherwise.
inline std::string memory_check(const char *prog, std::size_t n) {
    auto need = matrix_bytes(n);
    auto avail = mem_available_bytes();
    if (!need) return std::string(prog) + ": error: n=" + std::to_string(n) + " is too large";
    if (avail && *need > *avail) {
        char buf[256];
        std::snprintf(buf, sizeof buf,
                      "%s: error: n=%zu does not fit in memory: needs %.1f MiB (2 matrices of "
                      "n*n doubles) but MemAvailable is %.1f MiB",
                      prog, n, double(*need) / 1048576.0, double(*avail) / 1048576.0);
        return buf;
    }
    return {};
}

// ---- deterministic input ----

inline std::uint64_t splitmix64(std::uint64_t x) {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

// Element (row i, column j) of the input matrix: uniform in [-1, 1) from a counter-based generator
// (so any process can generate any column), plus sqrt(n) on the diagonal to keep the matrix well
// conditioned for every seed (MGS loses orthogonality in proportion to the condition number).
inline double input_element(std::uint64_t seed, std::size_t n, std::size_t i, std::size_t j) {
    std::uint64_t key = splitmix64(seed * 0xd1b54a32d192ed03ULL + 0x8cb92ba72f3d8dd7ULL);
    std::uint64_t r = splitmix64(key ^ (std::uint64_t(j) * n + i));
    double u = double(r >> 11) * 0x1.0p-53; // [0, 1)
    double v = 2.0 * u - 1.0;
    if (i == j) v += std::sqrt(double(n));
    return v;
}

inline void generate_column(std::uint64_t seed, std::size_t n, std::size_t j, double *col) {
    for (std::size_t i = 0; i < n; ++i)
        col[i] = input_element(seed, n, i, j);
}

// ---- kernels (fixed evaluation order) ----

inline double dot(const double *a, const double *b, std::size_t n) {
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0;
    std::size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        s0 += a[i] * b[i];
        s1 += a[i + 1] * b[i + 1];
        s2 += a[i + 2] * b[i + 2];
        s3 += a[i + 3] * b[i + 3];
        s4 += a[i + 4] * b[i + 4];
        s5 += a[i + 5] * b[i + 5];
        s6 += a[i + 6] * b[i + 6];
        s7 += a[i + 7] * b[i + 7];
    }
    for (; i < n; ++i)
        s0 += a[i] * b[i];
    return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7));
}

// y -= r * x
inline void axpy_sub(double *y, double r, const double *x, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i)
        y[i] -= r * x[i];
}

// Orthogonalise column y against the (already normalised) column q.
inline void project_out(double *y, const double *q, std::size_t n) {
    axpy_sub(y, dot(q, y, n), q, n);
}

// Normalise column q in place; returns false if its norm is zero or not finite.
inline bool normalise(double *q, std::size_t n) {
    double nrm = std::sqrt(dot(q, q, n));
    if (!(nrm > 0) || !std::isfinite(nrm)) return false;
    double inv = 1.0 / nrm;
    for (std::size_t i = 0; i < n; ++i)
        q[i] *= inv;
    return true;
}

inline double column_sum(const double *q, std::size_t n) {
    double s = 0;
    for (std::size_t i = 0; i < n; ++i)
        s += q[i];
    return s;
}

// |q_i . q_j - delta_ij|
inline double ortho_deviation(const double *qi, const double *qj, std::size_t n, bool diagonal) {
    double d = dot(qi, qj, n);
    return std::fabs(diagonal ? d - 1.0 : d);
}

// ---- misc ----

inline double now_s() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return double(ts.tv_sec) + double(ts.tv_nsec) * 1e-9;
}

inline volatile sig_atomic_t g_release = 0;

inline void on_sigusr1(int) {
    g_release = 1;
}

inline void install_release_handler() {
    struct sigaction sa {};
    sa.sa_handler = on_sigusr1;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGUSR1, &sa, nullptr);
}

// Wait up to `seconds` (monotonic clock), returning early once SIGUSR1 has been received. Sleeps in
// short slices so that a process restored from a checkpoint keeps honouring the deadline.
inline void hold(const char *prog, const char *when, double seconds) {
    if (seconds <= 0) return;
    std::fprintf(stderr, "%s: holding %s for %.1f s (pid %ld; SIGUSR1 releases)\n", prog, when,
                 seconds, long(getpid()));
    std::fflush(stderr);
    double deadline = now_s() + seconds;
    while (!g_release) {
        double left = deadline - now_s();
        if (left <= 0) break;
        double slice = left < 0.01 ? left : 0.01;
        timespec ts{};
        ts.tv_sec = time_t(slice);
        ts.tv_nsec = long((slice - double(ts.tv_sec)) * 1e9);
        nanosleep(&ts, nullptr);
    }
    std::fprintf(stderr, "%s: hold %s ended (%s)\n", prog, when, g_release ? "SIGUSR1" : "timeout");
    std::fflush(stderr);
    g_release = 0;
}

} // namespace mgs
