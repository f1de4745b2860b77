// SPDX-License-Identifier: Apache-2.0
// Built with -mavx2 (ghost-core/CMakeLists.txt); only called after the CPU was found to have AVX2.
#define XXH_VECTOR XXH_AVX2
#define GHOST_HASH_PATH avx2
#include "ghost-core/record_hash_impl.h"

namespace ghost::image {
const record_hasher::ops record_hash_avx2_ops{avx2::reset, avx2::update, avx2::digest};
} // namespace ghost::image
