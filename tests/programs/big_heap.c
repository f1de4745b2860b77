// SPDX-License-Identifier: Apache-2.0
// A large malloc'd buffer (--mib, default 2048) filled with a pattern that depends on the word's
// position and on the pass number. Pass 0 fills it; every later pass verifies each chunk against
// the previous pass's pattern and rewrites it with the new one, one chunk per step; after each step
// a pseudo-random probe chunk is spot-checked (already rewritten -> new pattern, else old). Beside
// it, a table of many small malloc'd nodes (the brk heap) is continuously verified, freed and
// reallocated. The final pass verifies everything.
#include "common.h"

static inline uint64_t pat(uint64_t i, uint64_t pass) {
    uint64_t x = (i * 0x9e3779b97f4a7c15ULL) ^ ((pass + 1) * 0xd1b54a32d192ed03ULL);
    return x ^ (x >> 29);
}

struct node {
    uint64_t gen;
    uint64_t size;
    uint64_t sum;
    unsigned char data[];
};

static struct node *node_make(uint64_t slot, uint64_t gen) {
    uint64_t size = 16 + t_mix64(slot * 1000003 + gen) % 480;
    struct node *n = malloc(sizeof *n + size);
    if (!n) t_fail("malloc node");
    n->gen = gen;
    n->size = size;
    uint64_t seed = t_mix64(slot ^ (gen << 32));
    for (uint64_t b = 0; b < size; b++)
        n->data[b] = (unsigned char)(seed >> ((b % 8) * 8)) ^ (unsigned char)b;
    n->sum = t_fnv1a(T_FNV_INIT, n->data, size);
    return n;
}

static void node_check(const struct node *n, uint64_t slot, uint64_t gen) {
    if (n->gen != gen)
        t_fail("node %" PRIu64 ": generation %" PRIu64 " != %" PRIu64, slot, n->gen, gen);
    uint64_t size = 16 + t_mix64(slot * 1000003 + gen) % 480;
    if (n->size != size)
        t_fail("node %" PRIu64 ": size %" PRIu64 " != %" PRIu64, slot, n->size, size);
    if (t_fnv1a(T_FNV_INIT, n->data, size) != n->sum)
        t_fail("node %" PRIu64 ": data corrupted", slot);
    uint64_t seed = t_mix64(slot ^ (gen << 32));
    for (uint64_t b = 0; b < size; b += 37)
        if (n->data[b] != ((unsigned char)(seed >> ((b % 8) * 8)) ^ (unsigned char)b))
            t_fail("node %" PRIu64 ": byte %" PRIu64 " wrong", slot, b);
}

int main(int argc, char **argv) {
    t_init("big_heap");
    static const char *const known[] = {"--mib", "--passes", "--chunk-kib", "--nodes", NULL};
    const char *usage = "[--mib N] [--passes N] [--chunk-kib N] [--nodes N]";
    t_check_args(argc, argv, known, usage);
    uint64_t mib = t_opt_u64(argc, argv, "--mib", 2048);
    uint64_t passes = t_opt_u64(argc, argv, "--passes", 3);
    uint64_t chunk_kib = t_opt_u64(argc, argv, "--chunk-kib", 1024);
    uint64_t nnodes = t_opt_u64(argc, argv, "--nodes", 20000);
    if (mib < 1 || passes < 1 || chunk_kib < 4 || (mib * 1024) % chunk_kib || nnodes < 1)
        t_usage(usage);

    const uint64_t words = mib * 1024 * 1024 / 8;
    const uint64_t chunk_words = chunk_kib * 1024 / 8;
    const uint64_t nchunks = words / chunk_words;
    t_line("big_heap mib=%" PRIu64 " passes=%" PRIu64 " chunks=%" PRIu64 " nodes=%" PRIu64, mib,
           passes, nchunks, nnodes);

    uint64_t *heap = malloc(words * 8);
    if (!heap) t_fail("malloc(%" PRIu64 " MiB) failed", mib);
    struct node **nodes = calloc(nnodes, sizeof *nodes);
    uint64_t *node_gen = calloc(nnodes, sizeof *node_gen);
    if (!nodes || !node_gen) t_fail("calloc");
    for (uint64_t i = 0; i < nnodes; i++)
        nodes[i] = node_make(i, 0);

    uint64_t step = 0;
    for (uint64_t pass = 0; pass <= passes; pass++) {
        uint64_t acc = 0;
        for (uint64_t c = 0; c < nchunks; c++, step++) {
            uint64_t *w = heap + c * chunk_words;
            uint64_t base = c * chunk_words;
            if (pass == 0) {
                for (uint64_t i = 0; i < chunk_words; i++)
                    w[i] = pat(base + i, 0);
            } else {
                for (uint64_t i = 0; i < chunk_words; i++) {
                    if (w[i] != pat(base + i, pass - 1))
                        t_fail("pass %" PRIu64 ": word %" PRIu64 " is %016" PRIx64
                               ", expected %016" PRIx64,
                               pass, base + i, w[i], pat(base + i, pass - 1));
                    w[i] = pat(base + i, pass);
                }
            }
            for (uint64_t i = 0; i < chunk_words; i += 4096)
                acc += w[i] ^ (w[i] >> 17);

            // Spot check of another chunk.
            uint64_t q = t_mix64(step) % nchunks;
            if (pass > 0 || q <= c) {
                uint64_t want_pass = q <= c ? pass : pass - 1;
                for (uint64_t j = 0; j < 64; j++) {
                    uint64_t i = q * chunk_words + t_mix64(step * 64 + j) % chunk_words;
                    if (heap[i] != pat(i, want_pass))
                        t_fail("probe in pass %" PRIu64 ": word %" PRIu64 " is %016" PRIx64
                               ", expected %016" PRIx64 " (pass %" PRIu64 ")",
                               pass, i, heap[i], pat(i, want_pass), want_pass);
                }
            }

            // Small nodes: verify one, replace it, verify another.
            uint64_t slot = step % nnodes;
            node_check(nodes[slot], slot, node_gen[slot]);
            free(nodes[slot]);
            nodes[slot] = node_make(slot, ++node_gen[slot]);
            uint64_t other = t_mix64(step ^ 0x5555) % nnodes;
            node_check(nodes[other], other, node_gen[other]);
        }
        uint64_t nh = T_FNV_INIT;
        for (uint64_t i = 0; i < nnodes; i++) {
            node_check(nodes[i], i, node_gen[i]);
            nh = t_fnv1a(nh, &nodes[i]->sum, sizeof nodes[i]->sum);
        }
        t_line("pass %" PRIu64 " %s sample=%016" PRIx64 " nodes=%016" PRIx64, pass,
               pass == 0 ? "filled" : "verified+rewritten", acc, nh);
    }

    // Final full verification.
    for (uint64_t i = 0; i < words; i++)
        if (heap[i] != pat(i, passes))
            t_fail("final: word %" PRIu64 " is %016" PRIx64 ", expected %016" PRIx64, i, heap[i],
                   pat(i, passes));
    t_line("final verify ok words=%" PRIu64 " steps=%" PRIu64, words, step);
    for (uint64_t i = 0; i < nnodes; i++)
        free(nodes[i]);
    free(nodes);
    free(node_gen);
    free(heap);
    return t_pass();
}
