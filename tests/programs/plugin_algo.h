// SPDX-License-Identifier: Apache-2.0
// The computation of the dlopen test plugin, shared by the plugin and by the reference copy that
// dlopen_state keeps in the main executable: both run it on their own state and must agree.
#pragma once

#include <stdint.h>

#define PLUGIN_WORDS 64
#define PLUGIN_ROUNDS 4

static inline uint64_t plugin_mix(uint64_t x) {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

static inline void plugin_algo_init(uint64_t *state, uint64_t seed) {
    for (int i = 0; i < PLUGIN_WORDS; i++)
        state[i] = plugin_mix(seed + (uint64_t)i);
}

static inline uint64_t plugin_algo_step(uint64_t *state, uint64_t x) {
    for (int r = 0; r < PLUGIN_ROUNDS; r++)
        for (int i = 0; i < PLUGIN_WORDS; i++)
            state[i] = plugin_mix(state[i] ^ x ^ (state[(i + 1) % PLUGIN_WORDS] >> r));
    return state[x % PLUGIN_WORDS];
}

static inline uint64_t plugin_algo_checksum(const uint64_t *state) {
    uint64_t h = 0;
    for (int i = 0; i < PLUGIN_WORDS; i++)
        h = plugin_mix(h ^ state[i]);
    return h;
}
