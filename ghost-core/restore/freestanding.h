// SPDX-License-Identifier: Apache-2.0
// The little the restorer needs instead of libc: memory and string primitives (the compiler emits
// calls to memcpy/memset), number parsing, and a fixed-size text buffer for one-line messages.
#pragma once

#include <stddef.h>
#include <stdint.h>

extern "C" {
void *memcpy(void *dst, const void *src, size_t n);
void *memmove(void *dst, const void *src, size_t n);
void *memset(void *dst, int c, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
int strcmp(const char *a, const char *b);
}

namespace ghost::freestanding {

inline uint64_t page_align_up(uint64_t v) {
    return (v + 4095) & ~4095ULL;
}

inline bool starts_with(const char *s, const char *prefix) {
    while (*prefix)
        if (*s++ != *prefix++) return false;
    return true;
}

inline uint64_t parse_hex(const char *&p) {
    uint64_t v = 0;
    for (;; p++) {
        char c = *p;
        if (c >= '0' && c <= '9')
            v = v * 16 + (uint64_t)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v = v * 16 + (uint64_t)(c - 'a' + 10);
        else
            return v;
    }
}

inline long parse_dec(const char *p) {
    long v = 0;
    while (*p >= '0' && *p <= '9')
        v = v * 10 + (*p++ - '0');
    return v;
}

const char *errno_name(long err);

// A one-line message under construction; silently truncated at its capacity.
class text {
  public:
    text() { buf_[0] = 0; }
    explicit text(const char *s) : text() { add(s); }
    text &add(const char *s) {
        while (*s && len_ + 1 < sizeof buf_)
            buf_[len_++] = *s++;
        buf_[len_] = 0;
        return *this;
    }
    text &num(long v) {
        char tmp[24];
        int n = 0;
        bool neg = v < 0;
        unsigned long u = neg ? 0UL - (unsigned long)v : (unsigned long)v;
        do
            tmp[n++] = (char)('0' + u % 10);
        while (u /= 10);
        if (neg) tmp[n++] = '-';
        char out[24];
        for (int i = 0; i < n; i++)
            out[i] = tmp[n - 1 - i];
        out[n] = 0;
        return add(out);
    }
    text &hex(uint64_t v) {
        char out[20] = "0x";
        int n = 2;
        bool started = false;
        for (int shift = 60; shift >= 0; shift -= 4) {
            int d = (int)(v >> shift) & 15;
            if (d || started || shift == 0) {
                out[n++] = "0123456789abcdef"[d];
                started = true;
            }
        }
        out[n] = 0;
        return add(out);
    }
    const char *str() const { return buf_; }
    size_t size() const { return len_; }

  private:
    char buf_[512];
    size_t len_ = 0;
};

} // namespace ghost::freestanding
