// SPDX-License-Identifier: Apache-2.0
// memcpy bandwidth reference for the MGS evaluation: how fast can this machine copy an image-sized
// buffer in memory? Two figures are measured:
//   warm: source and destination already faulted in (pure copy bandwidth);
//   cold: destination freshly mmap'ed for every copy, so the time includes the page faults of
//         first touch (what a memory checkpoint into a new buffer pays).
// usage: memcpy_bench SIZE [--reps R]      SIZE in bytes, suffixes K, M, G (powers of 1024) allowed
// stdout: memcpy bytes=N reps=R warm_gbps=X warm_best_s=T cold_gbps=Y cold_best_s=U
//         (GB/s = 1e9 bytes per second, from the best of R repetitions)
#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>
#include <time.h>

namespace {

double now_s() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return double(ts.tv_sec) + double(ts.tv_nsec) * 1e-9;
}

bool parse_size(std::string_view s, std::uint64_t &out) {
    std::uint64_t mult = 1;
    if (!s.empty()) {
        switch (s.back()) {
        case 'K':
        case 'k':
            mult = 1ULL << 10;
            break;
        case 'M':
        case 'm':
            mult = 1ULL << 20;
            break;
        case 'G':
        case 'g':
            mult = 1ULL << 30;
            break;
        default:
            break;
        }
        if (mult != 1) s.remove_suffix(1);
    }
    std::uint64_t v = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (s.empty() || ec != std::errc() || p != s.data() + s.size() || v == 0) return false;
    if (v > (1ULL << 46) / mult) return false;
    out = v * mult;
    return true;
}

void *map(std::size_t bytes) {
    void *p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? nullptr : p;
}

} // namespace

int main(int argc, char **argv) {
    std::uint64_t bytes = 0;
    unsigned reps = 5;
    bool have_size = false;
    for (int i = 1; i < argc; ++i) {
        std::string_view a = argv[i];
        if (a == "--help" || a == "-h") {
            std::printf("usage: memcpy_bench SIZE [--reps R]  (SIZE in bytes, K/M/G suffixes)\n");
            return 0;
        }
        if (a == "--reps") {
            if (i + 1 >= argc) {
                std::fprintf(stderr, "memcpy_bench: error: --reps needs a value\n");
                return 2;
            }
            std::string_view v = argv[++i];
            auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), reps);
            if (v.empty() || ec != std::errc() || p != v.data() + v.size() || reps == 0 ||
                reps > 10000) {
                std::fprintf(stderr, "memcpy_bench: error: invalid --reps '%s'\n", argv[i]);
                return 2;
            }
        } else if (!have_size && parse_size(a, bytes)) {
            have_size = true;
        } else {
            std::fprintf(stderr, "memcpy_bench: error: unexpected argument '%s' (try --help)\n",
                         argv[i]);
            return 2;
        }
    }
    if (!have_size) {
        std::fprintf(stderr, "memcpy_bench: error: missing SIZE (try --help)\n");
        return 2;
    }
    const std::size_t n = bytes;
    auto *src = static_cast<unsigned char *>(map(n));
    auto *dst = static_cast<unsigned char *>(map(n));
    if (!src || !dst) {
        std::fprintf(stderr, "memcpy_bench: error: cannot map 2 x %llu bytes: %s\n",
                     static_cast<unsigned long long>(n), std::strerror(errno));
        return 2;
    }
    // Non-zero, non-trivial source content.
    std::uint64_t x = 0x9e3779b97f4a7c15ULL;
    for (std::size_t i = 0; i < n; ++i) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        src[i] = static_cast<unsigned char>(x);
    }
    std::memset(dst, 1, n);
    std::memcpy(dst, src, n); // warm-up

    double warm_best = 1e30;
    for (unsigned r = 0; r < reps; ++r) {
        double t = now_s();
        std::memcpy(dst, src, n);
        warm_best = std::min(warm_best, now_s() - t);
    }
    munmap(dst, n);

    double cold_best = 1e30;
    unsigned check = 0;
    for (unsigned r = 0; r < reps; ++r) {
        double t = now_s();
        auto *d = static_cast<unsigned char *>(map(n));
        if (!d) {
            std::fprintf(stderr, "memcpy_bench: error: mmap: %s\n", std::strerror(errno));
            return 2;
        }
        std::memcpy(d, src, n);
        cold_best = std::min(cold_best, now_s() - t);
        check += d[n / 2];
        munmap(d, n);
    }
    munmap(src, n);

    std::printf("memcpy bytes=%llu reps=%u warm_gbps=%.3f warm_best_s=%.6f cold_gbps=%.3f "
                "cold_best_s=%.6f\n",
                static_cast<unsigned long long>(n), reps, double(n) / warm_best / 1e9, warm_best,
                double(n) / cold_best / 1e9, cold_best);
    return check == 0xFFFFFFFFu ? 3 : 0; // keep the copies observable
}
