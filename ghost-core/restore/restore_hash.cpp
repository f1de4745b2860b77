// SPDX-License-Identifier: Apache-2.0
// The record hash for the restorer, on the SSE2 path (x86-64 baseline), and the choice of path.
// Same code as the host side (ghost-core/record_hash_impl.h), without its C++ runtime parts.
#define XXH_VECTOR XXH_SSE2
#define GHOST_HASH_PATH sse2
#include "ghost-core/record_hash_impl.h"

#include <cpuid.h>

#include "ghost-core/restore/restore_hash.h"

namespace ghost::image {

extern const record_hasher::ops record_hash_avx2_ops;

namespace {
const record_hasher::ops sse2_ops{sse2::reset, sse2::update, sse2::digest};

// AVX2 in the CPU, and YMM state enabled by the kernel (XCR0 bits 1 and 2).
bool cpu_has_avx2() {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_OSXSAVE)) return false;
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    if ((lo & 6) != 6) return false;
    if (__get_cpuid_max(0, nullptr) < 7) return false;
    __cpuid_count(7, 0, a, b, c, d);
    return b & bit_AVX2;
}
} // namespace

const record_hasher::ops *restore_hash_ops() {
    static const record_hasher::ops *chosen = nullptr; // set once, before the page workers start
    if (!chosen) chosen = cpu_has_avx2() ? &record_hash_avx2_ops : &sse2_ops;
    return chosen;
}

} // namespace ghost::image
