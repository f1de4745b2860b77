// SPDX-License-Identifier: Apache-2.0
// The record hash in the restorer: a state in the caller's memory and the functions of the vector
// path this CPU has (no constructor: it lives in static storage of a freestanding program).
#pragma once

#include "ghost-core/record_hash.h"

namespace ghost::image {

struct restore_hash {
    alignas(64) unsigned char state[record_hasher::state_size];
    void reset(uint64_t seed) { record_hash_ops()->reset(state, seed); }
    void update(const void *p, size_t n) { record_hash_ops()->update(state, p, n); }
    uint64_t digest() const { return record_hash_ops()->digest(state); }
};

} // namespace ghost::image
