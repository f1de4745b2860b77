// SPDX-License-Identifier: Apache-2.0
// The hash every image record carries: XXH3-64 of the payload, seeded with the record type.
// Hashing runs on every byte of an image twice (export, verify), so it takes the widest vector path
// the CPU has (here AVX2 hashes at 4x the SSE2 path of the shared library, AVX-512 at 1.4x AVX2);
// the value is the same on every path.
#pragma once

#include <cstddef>
#include <cstdint>

namespace ghost::image {

class record_hasher;

// The implementation every vector path provides (record_hash_impl.h).
struct record_hash_ops_t {
    void (*reset)(void *state, uint64_t seed);
    void (*update)(void *state, const void *data, size_t len);
    uint64_t (*digest)(const void *state);
};

// Each vector path (AVX2 and AVX-512 only to be called where CPU and kernel have them), and the one
// this machine should use (record_hash_sse2.cpp).
extern const record_hash_ops_t record_hash_sse2_ops;
extern const record_hash_ops_t record_hash_avx2_ops;
extern const record_hash_ops_t record_hash_avx512_ops;
const record_hash_ops_t *record_hash_ops();
// Which vector path hashes: "avx512", "avx2" or "sse2".
const char *record_hash_path();

// Header-only and without a constructor that runs code at load time, so that the freestanding
// restorer uses it too (in static storage: default-construct, then reset()).
class record_hasher {
  public:
    using ops = record_hash_ops_t;
    static constexpr size_t state_size = 576; // sizeof(XXH3_state_t), checked where it is known

    record_hasher() = default;
    explicit record_hasher(uint64_t seed) { reset(seed); }
    void reset(uint64_t seed) { record_hash_ops()->reset(state_, seed); }
    void update(const void *data, size_t len) {
        if (len) record_hash_ops()->update(state_, data, len);
    }
    uint64_t digest() const { return record_hash_ops()->digest(state_); }

  private:
    alignas(64) unsigned char state_[state_size];
};

} // namespace ghost::image
