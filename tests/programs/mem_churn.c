// SPDX-License-Identifier: Apache-2.0
// Anonymous memory that keeps changing shape and contents: pages written, pages given back
// (MADV_DONTNEED: they must read as zeros), mappings replaced by others of another size at the
// same address, made read-only and writable again. Aimed at incremental images and pre-copies,
// whose restore starts from older pages: one the program gave back or replaced since must not
// come back with its old contents, and a page written since must not keep them.
//
// Every page's expected contents follow from a version the program keeps per page (0: zeros);
// every step checks every page against it. Deterministic: a fixed seed, no addresses printed.
#include "common.h"

#include <sys/mman.h>

enum { slot_count = 24, page = 4096, max_pages = 1024 };

struct slot {
    uint64_t *base; // (uint64_t words of the pages)
    uint32_t pages; // mapped
    int readonly;   // PROT_READ only for now
    uint32_t version[max_pages];
};

static struct slot g_slot[slot_count];
static uint64_t g_rng = 0x5eed;
static uint32_t g_next_version = 1;

static uint64_t next_random(void) {
    g_rng = t_mix64(g_rng);
    return g_rng;
}

static uint64_t word_of(int slot, uint32_t pg, uint32_t version, uint32_t w) {
    return t_mix64(((uint64_t)slot << 48) ^ ((uint64_t)pg << 32) ^ ((uint64_t)version << 12) ^ w);
}

static uint32_t slot_size(int i) {
    // Mostly small mappings, a few large ones (many pages per image record).
    return i % 6 == 0 ? 256 + (uint32_t)(next_random() % (max_pages - 256))
                      : 1 + (uint32_t)(next_random() % 64);
}

static void map_slot(int i, void *where) {
    struct slot *s = &g_slot[i];
    uint32_t pages = slot_size(i);
    void *p = MAP_FAILED;
    if (where) // the same address, when it is free (it is: the old mapping just went)
        p = mmap(where, (size_t)pages * page, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    if (p == MAP_FAILED)
        p = mmap(NULL, (size_t)pages * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                 -1, 0);
    if (p == MAP_FAILED) t_fail("mmap: %s", strerror(errno));
    s->base = (uint64_t *)p;
    s->pages = pages;
    s->readonly = 0;
    memset(s->version, 0, sizeof s->version);
}

static void write_pages(int i, uint32_t first, uint32_t count) {
    struct slot *s = &g_slot[i];
    for (uint32_t pg = first; pg < first + count; pg++) {
        uint32_t v = g_next_version++;
        uint64_t *w = s->base + (size_t)pg * (page / 8);
        for (uint32_t k = 0; k < page / 8; k++)
            w[k] = word_of(i, pg, v, k);
        s->version[pg] = v;
    }
}

static void check(uint64_t step) {
    for (int i = 0; i < slot_count; i++) {
        struct slot *s = &g_slot[i];
        for (uint32_t pg = 0; pg < s->pages; pg++) {
            const uint64_t *w = s->base + (size_t)pg * (page / 8);
            uint32_t v = s->version[pg];
            for (uint32_t k = 0; k < page / 8; k += 97) {
                uint64_t want = v ? word_of(i, pg, v, k) : 0;
                if (w[k] != want)
                    t_fail("step %" PRIu64 ": slot %d page %u word %u holds %016" PRIx64
                           ", wants %016" PRIx64 " (version %u%s)",
                           step, i, pg, k, w[k], want, v, v ? "" : ": given back");
            }
        }
    }
}

static void churn(void) {
    int i = (int)(next_random() % slot_count);
    struct slot *s = &g_slot[i];
    uint32_t first = (uint32_t)(next_random() % s->pages);
    uint32_t count = 1 + (uint32_t)(next_random() % (s->pages - first));
    if (count > 64) count = 1 + count % 64;
    switch (next_random() % 8) {
    case 0: // give pages back
        if (madvise(s->base + (size_t)first * (page / 8), (size_t)count * page, MADV_DONTNEED))
            t_fail("madvise: %s", strerror(errno));
        memset(&s->version[first], 0, count * sizeof s->version[0]);
        break;
    case 1: // another mapping, of another size, where this one was
        if (munmap(s->base, (size_t)s->pages * page)) t_fail("munmap: %s", strerror(errno));
        map_slot(i, s->base);
        break;
    case 2: // read-only, or writable again
        s->readonly = !s->readonly;
        if (mprotect(s->base, (size_t)s->pages * page,
                     s->readonly ? PROT_READ : PROT_READ | PROT_WRITE))
            t_fail("mprotect: %s", strerror(errno));
        break;
    default:
        if (!s->readonly) write_pages(i, first, count);
    }
}

int main(int argc, char **argv) {
    t_init("mem_churn");
    static const char *const known[] = {"--steps", "--per-step", NULL};
    const char *usage = "[--steps N] [--per-step N]";
    t_check_args(argc, argv, known, usage);
    uint64_t steps = t_opt_u64(argc, argv, "--steps", 300);
    uint64_t per_step = t_opt_u64(argc, argv, "--per-step", 40);
    for (int i = 0; i < slot_count; i++) {
        map_slot(i, NULL);
        write_pages(i, 0, g_slot[i].pages);
    }
    for (uint64_t s = 0; s < steps; s++) {
        for (uint64_t k = 0; k < per_step; k++)
            churn();
        check(s);
        if (s % (steps / 10 ? steps / 10 : 1) == 0) {
            uint64_t h = T_FNV_INIT;
            for (int i = 0; i < slot_count; i++) {
                h = t_fnv1a(h, &g_slot[i].pages, sizeof g_slot[i].pages);
                h = t_fnv1a(h, g_slot[i].version, g_slot[i].pages * sizeof(uint32_t));
            }
            t_line("step %" PRIu64 " checked, state %016" PRIx64, s, h);
        }
        t_sleep_ns(10 * 1000 * 1000);
    }
    check(steps);
    return t_pass();
}
