// SPDX-License-Identifier: Apache-2.0
// Files that exist only in the kernel, held through descriptors and mappings:
//  * memfd "ghost-objects-a" (sealed against growing and shrinking): its descriptor at offset
//    12345, a second open file description of it (reopened O_WRONLY|O_APPEND through /proc), two
//    shared mappings and a private one whose first page was written (copied on write);
//  * memfd "ghost-objects-b", sealed read-only (F_SEAL_WRITE|F_SEAL_SEAL), mapped read-only;
//  * memfd "ghost-objects-c", reachable only through its shared mapping (descriptor closed);
//  * a file deleted while open (read-write, offset 777) and mapped shared, and an O_TMPFILE
//    (opened O_EXCL|O_NOFOLLOW, as Python's tempfile does).
// Every step writes through a descriptor and checks the mappings see it, and the other way round;
// names, sizes, seals, offsets, flags and contents are checked at every tenth of the run.
#include "common.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>

#define A_SIZE (1024 * 1024 + 100)
#define B_SIZE 8192
#define C_SIZE (256 * 1024)
#define D_SIZE (128 * 1024)
#define PAGE 4096

static int a_fd, a_app, b_fd, d_fd, e_fd;
static unsigned char *a_map1, *a_map2, *a_priv, *b_map, *c_map, *d_map;
static char d_path[4096];
static unsigned char c_shadow[C_SIZE]; // what memfd c must hold

static void expect_link(int fd, const char *want_prefix, const char *want_suffix,
                        const char *what) {
    char p[64], got[4096];
    snprintf(p, sizeof p, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(p, got, sizeof got - 1);
    if (n < 0) t_fail("readlink %s: %s", what, strerror(errno));
    got[n] = 0;
    size_t lp = strlen(want_prefix), ls = strlen(want_suffix);
    if (strncmp(got, want_prefix, lp) != 0 || (size_t)n < ls || strcmp(got + n - ls, want_suffix))
        t_fail("%s is now '%s', expected '%s...%s'", what, got, want_prefix, want_suffix);
}

static void expect_fd(int fd, off_t size, off_t pos, int fl, int seals, const char *what) {
    struct stat sb;
    if (fstat(fd, &sb) != 0) t_fail("fstat %s: %s", what, strerror(errno));
    if (sb.st_size != size || sb.st_nlink != 0)
        t_fail("%s: size %lld nlink %lu, expected %lld and 0", what, (long long)sb.st_size,
               (unsigned long)sb.st_nlink, (long long)size);
    off_t at = lseek(fd, 0, SEEK_CUR);
    if (at != pos) t_fail("%s: offset %lld, expected %lld", what, (long long)at, (long long)pos);
    int got = fcntl(fd, F_GETFL) & (O_ACCMODE | O_APPEND | O_NONBLOCK);
    if (got != fl) t_fail("%s: flags %#o, expected %#o", what, got, fl);
    if (seals >= 0 && fcntl(fd, F_GET_SEALS) != seals)
        t_fail("%s: seals %#x, expected %#x", what, fcntl(fd, F_GET_SEALS), seals);
}

static void check_all(const char *when) {
    expect_link(a_fd, "/memfd:ghost-objects-a", " (deleted)", "memfd a");
    expect_link(a_app, "/memfd:ghost-objects-a", " (deleted)", "memfd a's second description");
    expect_link(b_fd, "/memfd:ghost-objects-b", " (deleted)", "memfd b");
    expect_link(d_fd, d_path, " (deleted)", "the deleted file");
    expect_fd(a_fd, A_SIZE, 12345, O_RDWR, F_SEAL_GROW | F_SEAL_SHRINK, "memfd a");
    expect_fd(a_app, A_SIZE, A_SIZE, O_WRONLY | O_APPEND, F_SEAL_GROW | F_SEAL_SHRINK,
              "memfd a's second description");
    expect_fd(b_fd, B_SIZE, 0, O_RDWR, F_SEAL_WRITE | F_SEAL_SEAL, "memfd b");
    expect_fd(d_fd, D_SIZE, 777, O_RDWR, -1, "the deleted file");
    expect_fd(e_fd, 5, 5, O_RDWR, -1, "the O_TMPFILE");
    if (write(b_fd, "x", 1) != -1 || errno != EPERM) t_fail("%s: memfd b is writable", when);
    for (size_t i = 0; i < B_SIZE; i += 97)
        if (b_map[i] != (unsigned char)(i * 7)) t_fail("%s: memfd b's contents changed", when);
    if (memcmp(a_map1, a_map2, A_SIZE) != 0) t_fail("%s: the two shared maps of a differ", when);
    if (a_priv[10] != 0xee) t_fail("%s: the private copy of a's first page was lost", when);
    if (memcmp(a_priv + PAGE, a_map1 + PAGE, A_SIZE - PAGE) != 0)
        t_fail("%s: the private map of a no longer follows a beyond its copied page", when);
    unsigned char buf[D_SIZE];
    if (pread(d_fd, buf, D_SIZE, 0) != D_SIZE || memcmp(buf, d_map, D_SIZE) != 0)
        t_fail("%s: the deleted file and its mapping differ", when);
    char e[8] = {0};
    if (pread(e_fd, e, 5, 0) != 5 || memcmp(e, "tmpf!", 5) != 0)
        t_fail("%s: the O_TMPFILE's contents changed", when);
}

static int memfd(const char *name, unsigned flags, size_t size) {
    int fd = memfd_create(name, flags);
    if (fd < 0 || ftruncate(fd, (off_t)size) != 0) t_fail("memfd %s: %s", name, strerror(errno));
    return fd;
}

static unsigned char *map(int fd, size_t size, int prot, int flags, const char *what) {
    void *p = mmap(NULL, size, prot, flags, fd, 0);
    if (p == MAP_FAILED) t_fail("mmap %s: %s", what, strerror(errno));
    return p;
}

int main(int argc, char **argv) {
    t_init("memory_objects");
    static const char *const known[] = {"--dir", "--steps", NULL};
    const char *usage = "--dir DIR [--steps N]";
    t_check_args(argc, argv, known, usage);
    const char *dir = t_opt_str(argc, argv, "--dir", NULL);
    if (!dir) t_usage(usage);
    uint64_t steps = t_opt_u64(argc, argv, "--steps", 400000);
    t_line("memory_objects steps=%" PRIu64, steps);

    a_fd = memfd("ghost-objects-a", MFD_ALLOW_SEALING, A_SIZE);
    a_map1 = map(a_fd, A_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, "a");
    a_map2 = map(a_fd, A_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, "a again");
    for (size_t i = 0; i < A_SIZE; i += 8)
        a_map1[i] = (unsigned char)t_mix64(i);
    a_priv = map(a_fd, A_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE, "a private");
    a_priv[10] = 0xee;
    if (fcntl(a_fd, F_ADD_SEALS, F_SEAL_GROW | F_SEAL_SHRINK) != 0)
        t_fail("seal a: %s", strerror(errno));
    if (lseek(a_fd, 12345, SEEK_SET) != 12345) t_fail("lseek a");
    char p[64];
    snprintf(p, sizeof p, "/proc/self/fd/%d", a_fd);
    a_app = open(p, O_WRONLY | O_APPEND | O_CLOEXEC);
    if (a_app < 0 || lseek(a_app, 0, SEEK_END) != A_SIZE) t_fail("reopen a: %s", strerror(errno));

    b_fd = memfd("ghost-objects-b", MFD_ALLOW_SEALING | MFD_CLOEXEC, B_SIZE);
    for (size_t i = 0; i < B_SIZE; i += 97)
        if (pwrite(b_fd, &(unsigned char){(unsigned char)(i * 7)}, 1, (off_t)i) != 1)
            t_fail("write b");
    if (fcntl(b_fd, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_SEAL) != 0)
        t_fail("seal b: %s", strerror(errno));
    b_map = map(b_fd, B_SIZE, PROT_READ, MAP_SHARED, "b");

    int c_fd = memfd("ghost-objects-c", 0, C_SIZE);
    c_map = map(c_fd, C_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, "c");
    close(c_fd);

    t_path(d_path, sizeof d_path, dir, "deleted");
    d_fd = open(d_path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (d_fd < 0 || ftruncate(d_fd, D_SIZE) != 0) t_fail("create %s: %s", d_path, strerror(errno));
    d_map = map(d_fd, D_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, "the deleted file");
    if (unlink(d_path) != 0 || lseek(d_fd, 777, SEEK_SET) != 777) t_fail("unlink/lseek");
    // As Python's tempfile.TemporaryFile opens it: the kernel keeps O_NOFOLLOW in its flags.
    e_fd = open(dir, O_TMPFILE | O_RDWR | O_EXCL | O_NOFOLLOW, 0600);
    if (e_fd < 0 || write(e_fd, "tmpf!", 5) != 5) t_fail("O_TMPFILE: %s", strerror(errno));
    check_all("start");
    t_line("memfds, a deleted file and an O_TMPFILE held");

    uint64_t h = T_FNV_INIT;
    for (uint64_t i = 1; i <= steps; i++) {
        uint64_t v = t_mix64(i);
        off_t at = (off_t)(PAGE + v % (A_SIZE - PAGE - 8));
        if (pwrite(a_fd, &v, 8, at) != 8) t_fail("pwrite a: %s", strerror(errno));
        if (memcmp(a_map2 + at, &v, 8) != 0 || memcmp(a_priv + at, &v, 8) != 0)
            t_fail("step %" PRIu64 ": a write through the memfd is not seen in its mappings", i);
        size_t d_at = v % (D_SIZE - 8);
        memcpy(d_map + d_at, &v, 8);
        uint64_t back = 0;
        if (pread(d_fd, &back, 8, (off_t)d_at) != 8 || back != v)
            t_fail("step %" PRIu64 ": a write through the deleted file's map is not in it", i);
        c_map[v % C_SIZE] += 1;
        c_shadow[v % C_SIZE] += 1;
        h = t_fnv1a(h, &v, sizeof v);
        if (i % (steps / 10) == 0) {
            check_all("step");
            if (memcmp(c_map, c_shadow, C_SIZE) != 0)
                t_fail("step %" PRIu64 ": memfd c's contents changed", i);
            t_line("step %" PRIu64 " hash %016" PRIx64, i, h);
        }
    }
    return t_pass();
}
