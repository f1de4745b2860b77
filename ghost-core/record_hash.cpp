// SPDX-License-Identifier: Apache-2.0
#include "ghost-core/record_hash.h"

namespace ghost::image {

record_hasher::record_hasher(uint64_t seed) {
    record_hash_ops()->reset(state_, seed);
}

void record_hasher::update(const void *data, size_t len) {
    if (len) record_hash_ops()->update(state_, data, len);
}

uint64_t record_hasher::digest() const {
    return record_hash_ops()->digest(state_);
}

const char *record_hash_path() {
    return record_hash_ops() == &record_hash_avx2_ops ? "avx2" : "sse2";
}

} // namespace ghost::image
