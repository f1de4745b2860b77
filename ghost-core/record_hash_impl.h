// SPDX-License-Identifier: Apache-2.0
// One vector path of record_hasher; included by record_hash_sse2.cpp (SSE2, the x86-64 baseline),
// record_hash_avx2.cpp (compiled with -mavx2) and record_hash_avx512.cpp (-mavx512f).
// XXH_INLINE_ALL keeps each copy private to its unit.
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "ghost-core/record_hash.h"

namespace ghost::image {
namespace GHOST_HASH_PATH {

static_assert(sizeof(XXH3_state_t) == record_hasher::state_size);
static_assert(alignof(XXH3_state_t) <= 64);

// A state is reused in place (stack slots, the restorer's static storage): XXH3's reset with a seed
// keeps the secret it finds when the state already names that seed, so the seed is forgotten first
// (XXH3_INITSTATE); otherwise a stale state naming the same seed over a since-overwritten secret
// hashes wrong.
inline void reset(void *state, uint64_t seed) {
    auto *s = static_cast<XXH3_state_t *>(state);
    XXH3_INITSTATE(s);
    XXH3_64bits_reset_withSeed(s, seed);
}
inline void update(void *state, const void *data, size_t len) {
    XXH3_64bits_update(static_cast<XXH3_state_t *>(state), data, len);
}
inline uint64_t digest(const void *state) {
    return XXH3_64bits_digest(static_cast<const XXH3_state_t *>(state));
}

} // namespace GHOST_HASH_PATH
} // namespace ghost::image
