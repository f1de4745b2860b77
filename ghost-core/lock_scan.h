// SPDX-License-Identifier: Apache-2.0
// Finding, in a process's own memory, the words that may name a thread by an id it had before a
// restore: the search that the lock fix (agent/lock_owners.h) starts from. Two users:
//  - the restorer, which searches the memory it has just restored, on its page workers, once the
//    image's threads (their old ids) are known, and leaves the agent the list of words found;
//  - the agent itself, which searches everything where no such list is given (a fast duplicate, a
//    restorer that could not finish its search).
// Only raw system calls and the caller's buffers: usable before libc is, and inside the restorer.
// Memory is read through /proc/self/mem rather than touched in place: see lock_owners.cpp.
#pragma once

#include <asm/unistd.h>
#include <emmintrin.h>
#include <fcntl.h>
#include <stdint.h>

#include "runtime/raw_syscall.h"

namespace ghost::lock_scan {

constexpr uint64_t page_size = 4096;
constexpr uint32_t futex_tid_mask = 0x3fffffffu; // a futex word's flag bits aside

// The old ids looked for, [min, min + span]. An 8-byte aligned word whose low half (a lock word,
// an owner field: glibc's lock objects are 8-byte aligned) holds one of them is a candidate.
struct id_span {
    uint32_t min = 0, span = 0;

    bool holds(uint64_t word) const { return ((uint32_t)word & futex_tid_mask) - min <= span; }
    bool covers(const id_span &o) const { return o.min >= min && o.min + o.span <= min + span; }

    // Whether any of the eight words at `block` (64-byte aligned) is a candidate: SSE2 on the
    // words' low halves (the odd 32-bit lanes are made to fail), since almost every block holds
    // none.
    bool any_in_block(const void *block) const {
        const __m128i mask = _mm_set_epi32(0, (int)futex_tid_mask, 0, (int)futex_tid_mask);
        const __m128i low = _mm_set_epi32(1, (int)min, 1, (int)min);
        const __m128i bias = _mm_set1_epi32((int)0x80000000u);
        const __m128i limit = _mm_xor_si128(_mm_set1_epi32((int)span), bias);
        __m128i above = _mm_set1_epi32(-1);
        for (int i = 0; i < 4; i++) {
            __m128i v = _mm_load_si128((const __m128i *)block + i);
            __m128i d = _mm_xor_si128(_mm_sub_epi32(_mm_and_si128(v, mask), low), bias);
            above = _mm_and_si128(above, _mm_cmpgt_epi32(d, limit)); // unsigned d > span
        }
        return _mm_movemask_epi8(above) != 0xffff;
    }
};

// The span of a set of ids (those <= 0 left out); false when none is left.
template <class Ids> bool span_of(const Ids &ids, uint32_t count, id_span &out) {
    uint32_t lo = ~0u, hi = 0;
    for (uint32_t i = 0; i < count; i++) {
        if (ids[i] <= 0) continue;
        uint32_t id = (uint32_t)ids[i];
        lo = id < lo ? id : lo;
        hi = id > hi ? id : hi;
    }
    if (lo > hi) return false;
    out = {lo, hi - lo};
    return true;
}

// One line of /proc/self/maps: "start-end perms offset dev inode   path".
struct map_entry {
    uint64_t start, end;
    bool
        searched; // readable memory that is not a device's (reads may have effects) or the kernel's
    bool writable; // the process's own to rewrite: private and writable, or the shared anonymous
                   // memory a restore made a memfd of (ghost-shared)
};

inline uint64_t parse_hex(const char *&p, const char *end) {
    uint64_t v = 0;
    for (; p < end; p++) {
        char c = *p;
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0) break;
        v = v << 4 | (uint64_t)d;
    }
    return v;
}

inline bool starts_with(const char *p, const char *end, const char *prefix) {
    for (; *prefix; p++, prefix++)
        if (p >= end || *p != *prefix) return false;
    return true;
}

// False for a line that is not a mapping.
inline bool parse_map_line(const char *p, const char *end, map_entry &e) {
    e.start = parse_hex(p, end);
    if (p >= end || *p++ != '-') return false;
    e.end = parse_hex(p, end);
    if (end - p < 5 || *p++ != ' ') return false;
    const char *perms = p;
    const char *path = p + 4;
    for (int field = 0; field < 4 && path < end; field++) { // past perms, offset, dev, inode
        while (path < end && *path != ' ')
            path++;
        while (path < end && *path == ' ')
            path++;
    }
    e.searched =
        perms[0] == 'r' && !starts_with(path, end, "/dev/") && !starts_with(path, end, "[v");
    e.writable = e.searched && perms[1] == 'w' &&
                 (perms[3] == 'p' || starts_with(path, end, "/memfd:ghost-shared"));
    return true;
}

// Calls line(p, end) for each line of /proc/self/maps, read through `buf`; false when the file
// could not be read, or held a line longer than `buf`.
template <class F> bool for_each_map_line(char *buf, uint64_t size, F line) {
    int fd = (int)sys::call(__NR_open, "/proc/self/maps", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    bool ok = true;
    uint64_t have = 0;
    for (;;) {
        long n = sys::call(__NR_read, fd, buf + have, size - have);
        if (n == -4) continue; // EINTR
        if (n < 0) ok = false;
        if (n <= 0) break;
        have += (uint64_t)n;
        uint64_t from = 0;
        for (uint64_t i = 0; i < have; i++)
            if (buf[i] == '\n') {
                line(buf + from, buf + i);
                from = i + 1;
            }
        if (from == 0 && have == size) {
            ok = false;
            break;
        }
        for (uint64_t i = from; i < have; i++) // the unfinished line to the front
            buf[i - from] = buf[i];
        have -= from;
    }
    sys::call(__NR_close, fd);
    return ok;
}

// The runs of present (or swapped) pages of ranges of this process: PAGEMAP_SCAN (Linux 6.7) on
// /proc/self/pagemap, or mincore where the kernel lacks it; every page of what neither can tell.
class present_pages {
  public:
    // `pagemap`: /proc/self/pagemap open, or -1 (mincore only).
    void use(int pagemap) {
        pagemap_ = pagemap;
        use_pagemap_ = pagemap >= 0;
        guard_category_ = true;
    }

    template <class F> void each_run(uint64_t start, uint64_t end, F run) {
        for (uint64_t at = start; use_pagemap_ && at < end;) {
            pm_scan_arg arg = {};
            arg.size = sizeof arg;
            arg.start = at;
            arg.end = end;
            arg.vec = (uint64_t)regions_;
            arg.vec_len = sizeof regions_ / sizeof regions_[0];
            arg.category_anyof_mask = arg.return_mask = page_is_present | page_is_swapped;
            // Guard pages (MADV_GUARD_INSTALL) count as swapped and fault when read: left out
            // where the kernel knows the category (6.14), which it refuses with EINVAL otherwise.
            if (guard_category_) arg.category_mask = arg.category_inverted = page_is_guard;
            long n = sys::call(__NR_ioctl, pagemap_, pagemap_scan_ioctl, &arg);
            if (n == -22 /* EINVAL */ && guard_category_) {
                guard_category_ = false;
                continue;
            }
            if (sys::failed(n) && at == start) {
                use_pagemap_ = false; // a kernel without PAGEMAP_SCAN: mincore below
                break;
            }
            if (sys::failed(n) || arg.walk_end <= at) { // cannot go on: the rest, every page
                run(at, end);
                return;
            }
            for (long i = 0; i < n; i++)
                run(regions_[i].start, regions_[i].end);
            at = arg.walk_end;
            if (at >= end) return;
        }
        if (use_pagemap_) return;
        for (uint64_t at = start; at < end;) { // mincore: resident pages, a chunk at a time
            uint64_t len = end - at;
            if (len > sizeof incore_ * page_size) len = sizeof incore_ * page_size;
            uint64_t pages = len / page_size;
            if (sys::failed(sys::call(__NR_mincore, at, len, incore_))) {
                run(at, at + len);
            } else {
                for (uint64_t i = 0; i < pages;) {
                    if (!(incore_[i] & 1)) {
                        i++;
                        continue;
                    }
                    uint64_t j = i;
                    while (j < pages && (incore_[j] & 1))
                        j++;
                    run(at + i * page_size, at + j * page_size);
                    i = j;
                }
            }
            at += len;
        }
    }

  private:
    struct pm_scan_arg {
        uint64_t size, flags, start, end, walk_end, vec, vec_len, max_pages;
        uint64_t category_inverted, category_mask, category_anyof_mask, return_mask;
    };
    struct page_region {
        uint64_t start, end, categories;
    };
    static constexpr unsigned long pagemap_scan_ioctl = 0xc0606610; // _IOWR('f', 16, pm_scan_arg)
    static constexpr uint64_t page_is_present = 1 << 3, page_is_swapped = 1 << 4,
                              page_is_guard = 1 << 8;

    int pagemap_ = -1;
    bool use_pagemap_ = false;
    bool guard_category_ = true;
    page_region regions_[256];
    unsigned char incore_[4096];
};

} // namespace ghost::lock_scan
