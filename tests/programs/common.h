// SPDX-License-Identifier: Apache-2.0
// Shared helpers for the self-checking test programs (C and C++). Header-only.
//
// Every program prints deterministic result lines on stdout (no pids, no timings, no paths), then
// "PASS <name>", or "FAIL <name>: <reason>" and exits 1. Lines are flushed one by one, so that a
// copy made by `ghost duplicate` starts its own stdout at a line boundary.
#pragma once

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifdef __cplusplus
extern "C" {
#endif

static const char *t_name = "unknown";

static inline void t_init(const char *name) {
    t_name = name;
}

// Reports a failure on stdout and stderr and ends the process (from any thread).
__attribute__((noreturn, format(printf, 1, 2), unused)) static void t_fail(const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    printf("FAIL %s: %s\n", t_name, msg);
    fflush(stdout);
    fprintf(stderr, "FAIL %s: %s\n", t_name, msg);
    fflush(stderr);
    _exit(1);
}

// Prints one result line and flushes it. Only one thread of a program prints.
__attribute__((format(printf, 1, 2), unused)) static void t_line(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    if (fflush(stdout) != 0) t_fail("fflush(stdout): %s", strerror(errno));
}

// Under ckpt_harness.py (GHOST_TEST_GATE names a file): before its PASS line the program waits
// until that file exists, which the harness makes once its planned checkpoints, restarts or
// duplicate are done. Its actions are timed by the program's progress; this only makes sure that a
// program faster than foreseen (an idle machine, a slow checkpoint command) cannot end before
// them. It writes GATE.reached when it has to wait, so that the harness can say so.
__attribute__((unused)) static void t_gate(void) {
    const char *gate = getenv("GHOST_TEST_GATE");
    if (!gate || !*gate || access(gate, F_OK) == 0) return;
    char reached[4096];
    snprintf(reached, sizeof reached, "%s.reached", gate);
    FILE *f = fopen(reached, "w");
    if (f) fclose(f);
    for (int i = 0; access(gate, F_OK) != 0; i++) {
        if (i > 60000) t_fail("the harness's gate %s did not open within 600 s", gate);
        struct timespec ten_ms = {0, 10 * 1000 * 1000};
        nanosleep(&ten_ms, NULL); // (EINTR: looked at again sooner)
    }
}

__attribute__((unused)) static int t_pass(void) {
    t_gate();
    printf("PASS %s\n", t_name);
    if (fflush(stdout) != 0) t_fail("fflush(stdout): %s", strerror(errno));
    return 0;
}

__attribute__((noreturn, unused)) static void t_usage(const char *usage) {
    fprintf(stderr, "usage: %s %s\n", t_name, usage);
    exit(2);
}

// Options are "--key value" pairs. Every argument must be a known key (list ends with NULL).
__attribute__((unused)) static void t_check_args(int argc, char **argv, const char *const *known,
                                                 const char *usage) {
    for (int i = 1; i < argc; i += 2) {
        int ok = 0;
        for (const char *const *k = known; *k; k++)
            if (strcmp(argv[i], *k) == 0) ok = 1;
        if (!ok || i + 1 >= argc) t_usage(usage);
    }
}

__attribute__((unused)) static const char *t_opt_str(int argc, char **argv, const char *key,
                                                     const char *def) {
    for (int i = 1; i + 1 < argc; i += 2)
        if (strcmp(argv[i], key) == 0) return argv[i + 1];
    return def;
}

__attribute__((unused)) static uint64_t t_opt_u64(int argc, char **argv, const char *key,
                                                  uint64_t def) {
    const char *s = t_opt_str(argc, argv, key, NULL);
    if (!s) return def;
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno || !end || *end || !*s) {
        fprintf(stderr, "%s: bad number for %s: %s\n", t_name, key, s);
        exit(2);
    }
    return (uint64_t)v;
}

static inline uint64_t t_mix64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

static inline uint64_t t_fnv1a(uint64_t h, const void *data, size_t len) {
    const unsigned char *p = (const unsigned char *)data;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}
#define T_FNV_INIT 0xcbf29ce484222325ULL

// Sleeps for ns nanoseconds; an interruption (EINTR) continues with the remaining time.
__attribute__((unused)) static void t_sleep_ns(uint64_t ns) {
    struct timespec req = {(time_t)(ns / 1000000000ULL), (long)(ns % 1000000000ULL)}, rem;
    while (nanosleep(&req, &rem) != 0) {
        if (errno != EINTR) t_fail("nanosleep: %s", strerror(errno));
        req = rem;
    }
}

// write()/read() of a whole buffer; EINTR and short transfers are retried.
__attribute__((unused)) static void t_write_all(int fd, const void *buf, size_t len,
                                                const char *what) {
    const char *p = (const char *)buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) t_fail("write %s: %s", what, n < 0 ? strerror(errno) : "wrote 0 bytes");
        p += n;
        len -= (size_t)n;
    }
}

// Returns the number of bytes read: len, or less at end of file.
__attribute__((unused)) static size_t t_read_full(int fd, void *buf, size_t len, const char *what) {
    char *p = (char *)buf;
    size_t got = 0;
    while (got < len) {
        ssize_t n = read(fd, p + got, len - got);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) t_fail("read %s: %s", what, strerror(errno));
        if (n == 0) break;
        got += (size_t)n;
    }
    return got;
}

// Joins a directory and a file name into buf.
__attribute__((unused)) static void t_path(char *buf, size_t size, const char *dir,
                                           const char *file) {
    if ((size_t)snprintf(buf, size, "%s/%s", dir, file) >= size) t_fail("path too long: %s", dir);
}

#ifdef __cplusplus
}
#endif
