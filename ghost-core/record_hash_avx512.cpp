// SPDX-License-Identifier: Apache-2.0
// Built with -mavx512f (ghost-core/CMakeLists.txt); only called after the CPU was found to have
// AVX-512F with ZMM state enabled.
#define XXH_VECTOR XXH_AVX512
#define GHOST_HASH_PATH avx512
#include "ghost-core/record_hash_impl.h"

namespace ghost::image {
const record_hasher::ops record_hash_avx512_ops{avx512::reset, avx512::update, avx512::digest};
} // namespace ghost::image
