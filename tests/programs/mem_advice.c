// SPDX-License-Identifier: Apache-2.0
// Memory state that a program sets with madvise/prctl/mprotect and can see again:
//  * anonymous regions advised MADV_DONTFORK, MADV_DONTDUMP, MADV_HUGEPAGE, MADV_NOHUGEPAGE and
//    MADV_WIPEONFORK (checked in /proc/self/smaps VmFlags every step, data checked too);
//  * a MAP_SHARED file mapping made read-only from a read-write descriptor, made writable again
//    with mprotect every step (the rights a later mprotect needs must survive);
//  * the process's THP-disable flag (PR_SET_THP_DISABLE);
//  * guard pages installed with MADV_GUARD_INSTALL in the middle of a region (checked through
//    /proc/self/pagemap's guard bit, on a descriptor kept open all run long: a process's own /proc
//    files are its own again after a restore; skipped where the kernel has no guard pages).
#include "common.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/prctl.h>

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102
#endif
#define PM_GUARD_REGION (1ULL << 58)

enum { n_advised = 5 };
static const int advice[n_advised] = {MADV_DONTFORK, MADV_DONTDUMP, MADV_HUGEPAGE, MADV_NOHUGEPAGE,
                                      MADV_WIPEONFORK};
static const char *const vmflag[n_advised] = {"dc", "dd", "hg", "nh", "wf"};
static const size_t region_bytes = 4 << 20;
static unsigned char *g_region[n_advised];
static unsigned char *g_guarded;
static int g_have_guards;
static unsigned char *g_shared;
static const size_t shared_bytes = 64 << 10;

// The VmFlags line of the mapping that starts at addr. A failure names the mapping that holds
// addr instead, with its flags, and the one before it (a merge or a lost region shows there).
static void vm_flags_of(void *addr, char *out, size_t size) {
    FILE *f = fopen("/proc/self/smaps", "r");
    if (!f) t_fail("cannot open /proc/self/smaps");
    char line[512], header[512] = "", before[512] = "none", holder[512] = "none";
    int in = 0, holds = 0;
    out[0] = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long start, end;
        if (sscanf(line, "%lx-%lx ", &start, &end) == 2 && strchr(line, ' ') &&
            strchr(line, '-') < strchr(line, ' ')) {
            in = start == (unsigned long)addr;
            if (start <= (unsigned long)addr && (unsigned long)addr < end) {
                snprintf(before, sizeof before, "%s", header);
                snprintf(holder, sizeof holder, "%s", line);
                holds = 1;
            } else {
                holds = 0;
            }
            snprintf(header, sizeof header, "%s", line);
        } else if (strncmp(line, "VmFlags:", 8) == 0) {
            if (in) {
                snprintf(out, size, "%s", line + 8);
                break;
            }
            if (holds) strncat(holder, line, sizeof holder - strlen(holder) - 1);
        }
    }
    int read_error = ferror(f);
    fclose(f);
    for (char *c = holder; *c; c++)
        if (*c == '\n') *c = ' ';
    for (char *c = before; *c; c++)
        if (*c == '\n') *c = ' ';
    if (!out[0])
        t_fail("no mapping starts at %p (read error %d; held by: %s; the one before: %s)", addr,
               read_error, holder, before);
}

static int has_flag(const char *flags, const char *want) {
    char padded[8];
    snprintf(padded, sizeof padded, " %s", want);
    for (const char *p = flags; (p = strstr(p, padded)); p++)
        if (p[3] == ' ' || p[3] == '\n' || p[3] == 0) return 1;
    return 0;
}

// Kept open all run long: after a restore it must read the restored process's own page map.
static int g_pagemap_fd = -1;

static uint64_t pagemap_entry(void *addr) {
    uint64_t e = 0;
    if (pread(g_pagemap_fd, &e, sizeof e, (off_t)((uintptr_t)addr / 4096 * 8)) != sizeof e)
        t_fail("cannot read /proc/self/pagemap");
    return e;
}

static void check(uint64_t step) {
    char flags[512];
    for (int i = 0; i < n_advised; i++) {
        vm_flags_of(g_region[i], flags, sizeof flags);
        if (!has_flag(flags, vmflag[i]))
            t_fail("step %" PRIu64 ": region %d lost its advice (%s missing in VmFlags:%s)", step,
                   i, vmflag[i], flags);
        for (size_t off = 0; off < region_bytes; off += 4096)
            if (g_region[i][off] != (unsigned char)(i * 31 + off / 4096))
                t_fail("step %" PRIu64 ": region %d corrupt at %zu", step, i, off);
    }
    if (prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0) != 1)
        t_fail("step %" PRIu64 ": THP disable flag lost", step);
    if (g_have_guards) {
        for (int p = 0; p < 16; p++) {
            int guard = (pagemap_entry(g_guarded + (size_t)p * 4096) & PM_GUARD_REGION) != 0;
            if (guard != (p >= 4 && p < 8))
                t_fail("step %" PRIu64 ": page %d of the guarded region %s a guard page", step, p,
                       guard ? "became" : "is no longer");
        }
        for (int p = 0; p < 16; p++)
            if (!(p >= 4 && p < 8) && g_guarded[(size_t)p * 4096] != (unsigned char)(p + 1))
                t_fail("step %" PRIu64 ": guarded region page %d corrupt", step, p);
    }
    // The shared file mapping was left read-only; the descriptor it came from was read-write.
    if (mprotect(g_shared, shared_bytes, PROT_READ | PROT_WRITE) != 0)
        t_fail("step %" PRIu64 ": mprotect of the shared file mapping: %s", step, strerror(errno));
    uint64_t *words = (uint64_t *)g_shared;
    if (step && words[step % (shared_bytes / 8)] != t_mix64(step - 1))
        t_fail("step %" PRIu64 ": shared file mapping lost its last write", step);
    words[(step + 1) % (shared_bytes / 8)] = t_mix64(step);
    if (mprotect(g_shared, shared_bytes, PROT_READ) != 0)
        t_fail("mprotect read-only: %s", strerror(errno));
}

int main(int argc, char **argv) {
    t_init("mem_advice");
    static const char *const known[] = {"--dir", "--steps", NULL};
    t_check_args(argc, argv, known, "--dir DIR [--steps N]");
    const char *dir = t_opt_str(argc, argv, "--dir", NULL);
    if (!dir) t_usage("--dir DIR [--steps N]");
    uint64_t steps = t_opt_u64(argc, argv, "--steps", 400);

    if (prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0) != 0)
        t_fail("PR_SET_THP_DISABLE: %s", strerror(errno));
    for (int i = 0; i < n_advised; i++) {
        g_region[i] =
            mmap(NULL, region_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (g_region[i] == MAP_FAILED) t_fail("mmap: %s", strerror(errno));
        if (madvise(g_region[i], region_bytes, advice[i]) != 0)
            t_fail("madvise %s: %s", vmflag[i], strerror(errno));
        for (size_t off = 0; off < region_bytes; off += 4096)
            g_region[i][off] = (unsigned char)(i * 31 + off / 4096);
    }
    g_guarded = mmap(NULL, 16 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (g_guarded == MAP_FAILED) t_fail("mmap: %s", strerror(errno));
    for (int p = 0; p < 16; p++)
        g_guarded[(size_t)p * 4096] = (unsigned char)(p + 1);
    g_have_guards = madvise(g_guarded + 4 * 4096, 4 * 4096, MADV_GUARD_INSTALL) == 0;
    g_pagemap_fd = open("/proc/self/pagemap", O_RDONLY);
    if (g_pagemap_fd < 0) t_fail("cannot open /proc/self/pagemap");

    char path[4096];
    t_path(path, sizeof path, dir, "mem_advice.shared");
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || ftruncate(fd, (off_t)shared_bytes) != 0) t_fail("cannot create %s", path);
    g_shared = mmap(NULL, shared_bytes, PROT_READ, MAP_SHARED, fd, 0);
    if (g_shared == MAP_FAILED) t_fail("mmap shared: %s", strerror(errno));
    close(fd);

    for (uint64_t s = 0; s < steps; s++) {
        check(s);
        if (s % (steps / 10 ? steps / 10 : 1) == 0) t_line("step %" PRIu64 " checked", s);
        t_sleep_ns(10 * 1000 * 1000);
    }
    check(steps);
    return t_pass();
}
