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
// The widest vector path that both the CPU and the kernel (the register state it saves: XCR0)
// allow: AVX2 needs YMM state (bits 1, 2), AVX-512 also opmask and ZMM state (bits 5, 6, 7).
const record_hasher::ops *widest_path() {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_OSXSAVE)) return &record_hash_sse2_ops;
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    if ((lo & 0x6) != 0x6 || __get_cpuid_max(0, nullptr) < 7) return &record_hash_sse2_ops;
    __cpuid_count(7, 0, a, b, c, d);
    if ((b & bit_AVX512F) && (lo & 0xe6) == 0xe6) return &record_hash_avx512_ops;
    if (b & bit_AVX2) return &record_hash_avx2_ops;
    return &record_hash_sse2_ops;
}
} // namespace

const record_hasher::ops *record_hash_ops() {
    // cpuid leaves the VM (slow): asked once. Threads racing here all store the same answer.
    static const record_hasher::ops *chosen = nullptr;
    const record_hasher::ops *p = __atomic_load_n(&chosen, __ATOMIC_RELAXED);
    if (!p) {
        p = widest_path();
        __atomic_store_n(&chosen, p, __ATOMIC_RELAXED);
    }
    return p;
}

const char *record_hash_path() {
    const record_hasher::ops *p = record_hash_ops();
    return p == &record_hash_avx512_ops ? "avx512" : p == &record_hash_avx2_ops ? "avx2" : "sse2";
}

} // namespace ghost::image
