// SPDX-License-Identifier: Apache-2.0
#include "ghost-core/restore/freestanding.h"

extern "C" {

void *memcpy(void *dst, const void *src, size_t n) {
    // rep movsb is fast on every x86_64 with ERMS and keeps the compiler from calling memcpy here.
    void *ret = dst;
    __asm__ volatile("rep movsb" : "+D"(dst), "+S"(src), "+c"(n) : : "memory");
    return ret;
}

void *memmove(void *dst, const void *src, size_t n) {
    auto *d = (unsigned char *)dst;
    auto *s = (const unsigned char *)src;
    if (d <= s || d >= s + n) return memcpy(dst, src, n);
    while (n--)
        d[n] = s[n];
    return dst;
}

void *memset(void *dst, int c, size_t n) {
    void *ret = dst;
    __asm__ volatile("rep stosb" : "+D"(dst), "+c"(n) : "a"(c) : "memory");
    return ret;
}

int memcmp(const void *a, const void *b, size_t n) {
    auto *x = (const unsigned char *)a;
    auto *y = (const unsigned char *)b;
    for (size_t i = 0; i < n; i++)
        if (x[i] != y[i]) return x[i] - y[i];
    return 0;
}

size_t strlen(const char *s) {
    size_t n = 0;
    while (s[n])
        n++;
    return n;
}

int strcmp(const char *a, const char *b) {
    while (*a && *a == *b)
        a++, b++;
    return (unsigned char)*a - (unsigned char)*b;
}

} // extern "C"

namespace ghost::freestanding {

const char *errno_name(long err) {
    switch (err) {
    case 1:
        return "operation not permitted";
    case 2:
        return "no such file or directory";
    case 6:
        return "no such device or address";
    case 9:
        return "bad file descriptor";
    case 12:
        return "out of memory";
    case 13:
        return "permission denied";
    case 14:
        return "bad address";
    case 16:
        return "device or resource busy";
    case 17:
        return "address in use";
    case 20:
        return "not a directory";
    case 21:
        return "is a directory";
    case 22:
        return "invalid argument";
    case 24:
        return "too many open files";
    case 28:
        return "no space left on device";
    case 40:
        return "too many levels of symbolic links";
    case 19:
        return "no such device";
    case 25:
        return "inappropriate ioctl for device";
    case 38:
        return "function not implemented";
    case 95:
        return "operation not supported";
    case 97:
        return "address family not supported";
    case 98: // (a socket's address; 17 above is what mmap says of memory)
        return "address already in use";
    case 99:
        return "cannot assign requested address";
    case 101:
        return "network is unreachable";
    case 111:
        return "connection refused";
    default:
        return "system error";
    }
}

} // namespace ghost::freestanding
