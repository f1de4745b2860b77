// SPDX-License-Identifier: Apache-2.0
// File mappings in a temp directory (--dir):
//  * map_private.dat mapped MAP_PRIVATE and modified word by word (copy-on-write pages); a shadow
//    copy on the heap must always equal the mapping, and the file itself must never change;
//  * map_shared.dat mapped MAP_SHARED: step s writes slot s (content depends on s only, so that
//    redoing a step after a restart, or a duplicate doing the same, is idempotent), alternately
//    through the mapping and with pwrite(); each write is read back the other way (coherence);
//  * an anonymous MAP_SHARED region and a read-only (mprotect) anonymous region.
// At the end everything is verified again, and /proc/self/maps must show the regions with their
// protections and files.
#include "common.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>

#define PAGE 4096
#define SLOT 64
#define RO_PAGES 16

static unsigned char priv_byte(uint64_t off) {
    return (unsigned char)(t_mix64(off / 8) >> (off % 8 * 8));
}

static void slot_bytes(uint64_t s, unsigned char *buf) {
    for (int j = 0; j < SLOT / 8; j++) {
        uint64_t v = t_mix64(s * 8 + (uint64_t)j + 0x1234567);
        memcpy(buf + j * 8, &v, 8);
    }
}

static void check_slot(const unsigned char *ms, int fd, uint64_t s, const char *when) {
    unsigned char want[SLOT], got[SLOT];
    slot_bytes(s, want);
    if (memcmp(ms + s * SLOT, want, SLOT) != 0)
        t_fail("%s: shared mapping slot %" PRIu64 " wrong (mapping not shared with the file?)",
               when, s);
    ssize_t n;
    do
        n = pread(fd, got, SLOT, (off_t)(s * SLOT));
    while (n < 0 && errno == EINTR);
    if (n != SLOT) t_fail("%s: pread slot %" PRIu64 ": %zd %s", when, s, n, strerror(errno));
    if (memcmp(got, want, SLOT) != 0)
        t_fail("%s: file slot %" PRIu64 " wrong (mapping not shared with the file?)", when, s);
}

// Finds the /proc/self/maps line covering addr; returns its permission string and path.
static void maps_lookup(const void *addr, char perms[8], char *path, size_t path_size) {
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f) t_fail("open /proc/self/maps: %s", strerror(errno));
    char line[4096];
    perms[0] = 0;
    path[0] = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        char p[8];
        int off = 0;
        if (sscanf(line, "%lx-%lx %7s %*s %*s %*s%n", &lo, &hi, p, &off) < 3) continue;
        if ((uintptr_t)addr < lo || (uintptr_t)addr >= hi) continue;
        strcpy(perms, p);
        const char *q = line + off;
        while (*q == ' ')
            q++;
        snprintf(path, path_size, "%s", q);
        path[strcspn(path, "\n")] = 0;
        break;
    }
    fclose(f);
    if (!perms[0]) t_fail("address %p not in /proc/self/maps", addr);
}

static int ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

int main(int argc, char **argv) {
    t_init("file_mappings");
    static const char *const known[] = {"--dir", "--steps", "--private-pages", NULL};
    const char *usage = "--dir DIR [--steps N] [--private-pages N]";
    t_check_args(argc, argv, known, usage);
    const char *dir = t_opt_str(argc, argv, "--dir", NULL);
    uint64_t steps = t_opt_u64(argc, argv, "--steps", 300000);
    uint64_t ppages = t_opt_u64(argc, argv, "--private-pages", 256);
    if (!dir || steps < 1 || ppages < 2) t_usage(usage);
    t_line("file_mappings steps=%" PRIu64 " private_pages=%" PRIu64, steps, ppages);

    char ppath[4096], spath[4096];
    t_path(ppath, sizeof ppath, dir, "map_private.dat");
    t_path(spath, sizeof spath, dir, "map_shared.dat");

    // The private file: created once, never written afterwards.
    const size_t psize = ppages * PAGE;
    unsigned char *shadow = malloc(psize);
    if (!shadow) t_fail("malloc");
    for (size_t i = 0; i < psize; i++)
        shadow[i] = priv_byte(i);
    int fd = open(ppath, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) t_fail("create %s: %s", ppath, strerror(errno));
    t_write_all(fd, shadow, psize, "map_private.dat");
    close(fd);
    int fdp = open(ppath, O_RDONLY);
    if (fdp < 0) t_fail("open %s: %s", ppath, strerror(errno));
    unsigned char *mp = mmap(NULL, psize, PROT_READ | PROT_WRITE, MAP_PRIVATE, fdp, 0);
    if (mp == MAP_FAILED) t_fail("mmap private: %s", strerror(errno));

    // The shared file.
    const size_t ssize = (steps * SLOT + PAGE - 1) / PAGE * PAGE;
    int fds = open(spath, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fds < 0) t_fail("create %s: %s", spath, strerror(errno));
    if (ftruncate(fds, (off_t)ssize) != 0) t_fail("ftruncate: %s", strerror(errno));
    unsigned char *ms = mmap(NULL, ssize, PROT_READ | PROT_WRITE, MAP_SHARED, fds, 0);
    if (ms == MAP_FAILED) t_fail("mmap shared: %s", strerror(errno));

    uint64_t *sa = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sa == MAP_FAILED) t_fail("mmap shared anon: %s", strerror(errno));
    unsigned char *ro =
        mmap(NULL, RO_PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (ro == MAP_FAILED) t_fail("mmap anon: %s", strerror(errno));
    for (size_t i = 0; i < RO_PAGES * PAGE; i++)
        ro[i] = (unsigned char)(i * 7 + 3);
    const uint64_t ro_sum = t_fnv1a(T_FNV_INIT, ro, RO_PAGES * PAGE);
    if (mprotect(ro, RO_PAGES * PAGE, PROT_READ) != 0) t_fail("mprotect: %s", strerror(errno));

    unsigned char buf[SLOT], page[PAGE];
    for (uint64_t s = 0; s < steps; s++) {
        // Shared file slot s.
        slot_bytes(s, buf);
        if (s % 2 == 0) {
            memcpy(ms + s * SLOT, buf, SLOT);
        } else {
            ssize_t n;
            do
                n = pwrite(fds, buf, SLOT, (off_t)(s * SLOT));
            while (n < 0 && errno == EINTR);
            if (n != SLOT) t_fail("pwrite slot %" PRIu64 ": %s", s, strerror(errno));
        }
        check_slot(ms, fds, s, "just written");
        check_slot(ms, fds, t_mix64(s) % (s + 1), "earlier");

        // Private copy-on-write page.
        uint64_t q = t_mix64(s ^ 0xabcdef) % ppages;
        uint64_t w = s % (PAGE / 8);
        uint64_t val = t_mix64(s + 77);
        memcpy(mp + q * PAGE + w * 8, &val, 8);
        memcpy(shadow + q * PAGE + w * 8, &val, 8);
        if (memcmp(mp + q * PAGE, shadow + q * PAGE, PAGE) != 0 ||
            t_fnv1a(T_FNV_INIT, mp + q * PAGE, PAGE) !=
                t_fnv1a(T_FNV_INIT, shadow + q * PAGE, PAGE))
            t_fail("private page %" PRIu64 " differs from its shadow at step %" PRIu64, q, s);
        uint64_t q2 = t_mix64(s * 3 + 1) % ppages;
        if (memcmp(mp + q2 * PAGE, shadow + q2 * PAGE, PAGE) != 0)
            t_fail("private page %" PRIu64 " differs from its shadow (step %" PRIu64 ")", q2, s);

        // Anonymous shared page.
        if (sa[0] != s) t_fail("shared anon counter %" PRIu64 " != %" PRIu64, sa[0], s);
        sa[1 + s % 511] = t_mix64(s);
        sa[0] = s + 1;

        if (s % 1024 == 0) {
            // The private file must not have received any of the private writes.
            uint64_t pg = t_mix64(s) % ppages;
            ssize_t n;
            do
                n = pread(fdp, page, PAGE, (off_t)(pg * PAGE));
            while (n < 0 && errno == EINTR);
            if (n != PAGE) t_fail("pread private file: %s", strerror(errno));
            for (size_t i = 0; i < PAGE; i++)
                if (page[i] != priv_byte(pg * PAGE + i))
                    t_fail("private file changed at offset %" PRIu64, (uint64_t)(pg * PAGE + i));
            if (t_fnv1a(T_FNV_INIT, ro, RO_PAGES * PAGE) != ro_sum)
                t_fail("read-only region changed");
            for (uint64_t i = 1; i < 512; i++) {
                uint64_t last = i - 1 <= s ? s - (s - (i - 1)) % 511 : UINT64_MAX;
                if (last != UINT64_MAX && sa[i] != t_mix64(last))
                    t_fail("shared anon word %" PRIu64 " wrong", i);
            }
        }
        if ((s + 1) % (steps / 10 ? steps / 10 : 1) == 0)
            t_line("step %" PRIu64 " shared ok private=%016" PRIx64, s + 1,
                   t_fnv1a(T_FNV_INIT, shadow, psize));
    }

    // Final verification.
    for (uint64_t s = 0; s < steps; s++)
        check_slot(ms, fds, s, "final");
    if (msync(ms, ssize, MS_SYNC) != 0) t_fail("msync: %s", strerror(errno));
    if (memcmp(mp, shadow, psize) != 0) t_fail("final: private mapping differs from shadow");
    for (uint64_t pg = 0; pg < ppages; pg++) {
        if (pread(fdp, page, PAGE, (off_t)(pg * PAGE)) != PAGE)
            t_fail("pread: %s", strerror(errno));
        for (size_t i = 0; i < PAGE; i++)
            if (page[i] != priv_byte(pg * PAGE + i))
                t_fail("final: private file changed at offset %" PRIu64, (uint64_t)(pg * PAGE + i));
    }
    if (t_fnv1a(T_FNV_INIT, ro, RO_PAGES * PAGE) != ro_sum) t_fail("read-only region changed");
    struct stat st;
    if (fstat(fds, &st) != 0 || (size_t)st.st_size != ssize)
        t_fail("shared file size %lld != %zu", (long long)st.st_size, ssize);

    char perms[8], path[4096];
    maps_lookup(ms, perms, path, sizeof path);
    if (strcmp(perms, "rw-s") != 0 || !ends_with(path, "/map_shared.dat"))
        t_fail("shared mapping in /proc/self/maps is '%s %s', expected 'rw-s .../map_shared.dat'",
               perms, path);
    maps_lookup(mp, perms, path, sizeof path);
    if (strcmp(perms, "rw-p") != 0 || !ends_with(path, "/map_private.dat"))
        t_fail("private mapping in /proc/self/maps is '%s %s', expected 'rw-p .../map_private.dat'",
               perms, path);
    maps_lookup(ro, perms, path, sizeof path);
    if (strcmp(perms, "r--p") != 0) t_fail("read-only region has permissions %s", perms);
    maps_lookup(sa, perms, path, sizeof path);
    if (strcmp(perms, "rw-s") != 0) t_fail("anonymous shared region has permissions %s", perms);

    t_line("final ok slots=%" PRIu64 " private=%016" PRIx64, steps,
           t_fnv1a(T_FNV_INIT, shadow, psize));
    munmap(mp, psize);
    munmap(ms, ssize);
    close(fdp);
    close(fds);
    free(shadow);
    return t_pass();
}
