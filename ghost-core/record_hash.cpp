// SPDX-License-Identifier: Apache-2.0
#define XXH_VECTOR XXH_SSE2
#define GHOST_HASH_PATH sse2
#include "ghost-core/record_hash_impl.h"

namespace ghost::image {

extern const record_hasher::ops record_hash_avx2_ops;

namespace {

const record_hasher::ops sse2_ops{sse2::reset, sse2::update, sse2::digest};

bool cpu_has_avx2() {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2"); // also checks that the OS saves the YMM state
}

const record_hasher::ops &chosen_ops() {
    static const record_hasher::ops &ops = cpu_has_avx2() ? record_hash_avx2_ops : sse2_ops;
    return ops;
}

} // namespace

record_hasher::record_hasher(uint64_t seed) {
    chosen_ops().reset(state_, seed);
}

void record_hasher::update(const void *data, size_t len) {
    if (len) chosen_ops().update(state_, data, len);
}

uint64_t record_hasher::digest() const {
    return chosen_ops().digest(state_);
}

const char *record_hash_path() {
    return &chosen_ops() == &record_hash_avx2_ops ? "avx2" : "sse2";
}

} // namespace ghost::image
