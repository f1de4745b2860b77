// SPDX-License-Identifier: Apache-2.0
// The SSE2 path of the record hash (the x86-64 baseline) and the choice of path. Built into the
// host side and into the freestanding restorer: no libc, no guarded statics.
#define XXH_VECTOR XXH_SSE2
#define GHOST_HASH_PATH sse2
#include "ghost-core/record_hash_impl.h"

#include <cpuid.h>

namespace ghost::image {

const record_hasher::ops record_hash_sse2_ops{sse2::reset, sse2::update, sse2::digest};

namespace {
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

const record_hasher::ops *record_hash_ops() {
    // cpuid leaves the VM (slow): asked once. Threads racing here all store the same answer.
    static const record_hasher::ops *chosen = nullptr;
    const record_hasher::ops *p = __atomic_load_n(&chosen, __ATOMIC_RELAXED);
    if (!p) {
        p = cpu_has_avx2() ? &record_hash_avx2_ops : &record_hash_sse2_ops;
        __atomic_store_n(&chosen, p, __ATOMIC_RELAXED);
    }
    return p;
}

const char *record_hash_path() {
    return record_hash_ops() == &record_hash_avx2_ops ? "avx2" : "sse2";
}

} // namespace ghost::image
