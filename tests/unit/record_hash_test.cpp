// SPDX-License-Identifier: Apache-2.0
// The record hash is the same value on every vector path and equals the reference XXH3 of the
// shared library: images written on one machine verify on another.
#include <gtest/gtest.h>
#define XXH_STATIC_LINKING_ONLY // the state layout, to fill it with stale contents
#include <xxhash.h>

#include <cstddef>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "ghost-core/record_hash.h"

namespace {

using ghost::image::record_hasher;

uint64_t hash_with(const record_hasher::ops &ops, uint64_t seed,
                   const std::vector<std::string> &parts) {
    alignas(64) unsigned char state[record_hasher::state_size];
    ops.reset(state, seed);
    for (const auto &p : parts)
        ops.update(state, p.data(), p.size());
    return ops.digest(state);
}

TEST(RecordHash, EveryPathGivesTheReferenceXxh3) {
    std::mt19937_64 rng(7);
    bool avx2 = __builtin_cpu_supports("avx2"), avx512 = __builtin_cpu_supports("avx512f");
    // Sizes around XXH3's internal boundaries (16, 128, 240, stripes, blocks, its 256-byte buffer).
    for (size_t n :
         {0, 1, 8, 16, 17, 128, 129, 240, 241, 255, 256, 257, 1024, 4096, 65536, 262152}) {
        std::string data(n, '\0');
        for (auto &c : data)
            c = (char)rng();
        for (size_t split : {size_t(0), size_t(8), n / 3}) {
            if (split > n) continue;
            std::vector<std::string> parts{data.substr(0, split), data.substr(split)};
            uint64_t seed = 4; // rec_pages
            uint64_t want = XXH3_64bits_withSeed(data.data(), data.size(), seed);
            EXPECT_EQ(hash_with(ghost::image::record_hash_sse2_ops, seed, parts), want) << n;
            if (avx2) {
                EXPECT_EQ(hash_with(ghost::image::record_hash_avx2_ops, seed, parts), want) << n;
            }
            if (avx512) {
                EXPECT_EQ(hash_with(ghost::image::record_hash_avx512_ops, seed, parts), want) << n;
            }
            record_hasher h(seed);
            for (const auto &p : parts)
                h.update(p.data(), p.size());
            EXPECT_EQ(h.digest(), want) << n;
        }
    }
    // (The library also asks the kernel, through XCR0; so does record_hash_ops.)
    EXPECT_STREQ(ghost::image::record_hash_path(), avx512 ? "avx512" : avx2 ? "avx2" : "sse2");
}

// A hasher lives in whatever memory it is given (stacks, static storage in the restorer): reset()
// must not trust what was there before. XXH3's reset with a seed skips deriving its secret when
// the state already names that seed, so stale memory that names it (a hasher of the same record
// type that used the same stack slot, its secret since overwritten) gave a wrong hash, now and
// then.
TEST(RecordHash, ResetIgnoresWhatTheMemoryHeld) {
    std::string data(4096, '\0');
    std::mt19937_64 rng(11);
    for (auto &c : data)
        c = (char)rng();
    const uint64_t seed = 4;
    uint64_t want = XXH3_64bits_withSeed(data.data(), data.size(), seed);
    std::vector<const record_hasher::ops *> paths{&ghost::image::record_hash_sse2_ops};
    if (__builtin_cpu_supports("avx2")) paths.push_back(&ghost::image::record_hash_avx2_ops);
    if (__builtin_cpu_supports("avx512f")) paths.push_back(&ghost::image::record_hash_avx512_ops);
    for (const auto *ops : paths) {
        alignas(64) unsigned char state[record_hasher::state_size];
        std::memset(state, 0x5a, sizeof state); // a stale secret ...
        uint64_t stale_seed = seed;             // ... under the right seed, no external secret
        const void *no_secret = nullptr;
        std::memcpy(state + offsetof(XXH3_state_t, seed), &stale_seed, sizeof stale_seed);
        std::memcpy(state + offsetof(XXH3_state_t, extSecret), &no_secret, sizeof no_secret);
        ops->reset(state, seed);
        ops->update(state, data.data(), data.size());
        EXPECT_EQ(ops->digest(state), want);
    }
}

} // namespace
