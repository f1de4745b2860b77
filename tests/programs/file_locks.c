// SPDX-License-Identifier: Apache-2.0
// File locks held across checkpoints: an flock lock on one file, an OFD record lock and a POSIX
// record lock (taken through a descriptor that has a dup) on another, and a shared flock on a
// directory. Each round a tester description of its own (opened once, holding nothing) checks
// that every lock is still held: an exclusive flock fails, F_OFD_GETLK names a conflicting lock
// over each range (and none just past the POSIX range). With --shared 1 the locks are shared
// (several processes, a duplicate among them, may hold them at once); the checks try exclusive
// ones. The tester never closes a descriptor of a locked file: closing any would drop the
// process's POSIX locks on it.
#include "common.h" // first: it asks for _GNU_SOURCE (OFD locks)

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>

static int conflicts(int tester, short type, off_t start, off_t len) {
    struct flock q = {.l_type = type, .l_whence = SEEK_SET, .l_start = start, .l_len = len};
    if (fcntl(tester, F_OFD_GETLK, &q) != 0) t_fail("F_OFD_GETLK: %s", strerror(errno));
    return q.l_type != F_UNLCK;
}

static void take(int fd, int cmd, short type, off_t start, off_t len) {
    struct flock l = {.l_type = type, .l_whence = SEEK_SET, .l_start = start, .l_len = len};
    if (fcntl(fd, cmd, &l) != 0) t_fail("cannot take a record lock: %s", strerror(errno));
}

int main(int argc, char **argv) {
    t_init("file_locks");
    static const char *const known[] = {"--dir", "--rounds", "--shared", NULL};
    const char *usage = "--dir DIR [--rounds N] [--shared 0|1]";
    t_check_args(argc, argv, known, usage);
    const char *dir = t_opt_str(argc, argv, "--dir", NULL);
    uint64_t rounds = t_opt_u64(argc, argv, "--rounds", 200);
    int shared = (int)t_opt_u64(argc, argv, "--shared", 0);
    if (!dir || rounds < 2) t_usage(usage);
    t_line("file_locks rounds=%" PRIu64 " shared=%d", rounds, shared);
    char p_a[4096], p_b[4096];
    t_path(p_a, sizeof p_a, dir, "a.lock");
    t_path(p_b, sizeof p_b, dir, "b.dat");
    int a = open(p_a, O_RDWR | O_CREAT, 0600), b = open(p_b, O_RDWR | O_CREAT, 0600);
    int d = open(dir, O_RDONLY | O_DIRECTORY);
    if (a < 0 || b < 0 || d < 0) t_fail("open: %s", strerror(errno));
    int b_posix = open(p_b, O_RDWR); // POSIX lock through this one, which has a dup
    int b_dup = dup(b_posix);
    if (b_posix < 0 || b_dup < 0) t_fail("open/dup: %s", strerror(errno));
    short type = shared ? F_RDLCK : F_WRLCK;
    if (flock(a, (shared ? LOCK_SH : LOCK_EX) | LOCK_NB) != 0) t_fail("flock: %s", strerror(errno));
    if (flock(d, LOCK_SH | LOCK_NB) != 0) t_fail("flock dir: %s", strerror(errno));
    take(b, F_OFD_SETLK, type, 0, 100);
    take(b_posix, F_SETLK, type, 200, 10);
    take(b_posix, F_SETLK, F_RDLCK, 4096, 0); // to the end of the file, however long
    int tester_a = open(p_a, O_RDWR), tester_b = open(p_b, O_RDWR);
    int tester_d = open(dir, O_RDONLY | O_DIRECTORY);
    if (tester_a < 0 || tester_b < 0 || tester_d < 0) t_fail("open tester: %s", strerror(errno));
    uint64_t sum = 0;
    for (uint64_t r = 0; r < rounds; r++) {
        if (flock(tester_a, LOCK_EX | LOCK_NB) == 0) t_fail("round %" PRIu64 ": flock lost", r);
        if (errno != EWOULDBLOCK) t_fail("flock tester: %s", strerror(errno));
        if (flock(tester_d, LOCK_EX | LOCK_NB) == 0)
            t_fail("round %" PRIu64 ": directory flock lost", r);
        if (!conflicts(tester_b, F_WRLCK, 10, 20)) t_fail("round %" PRIu64 ": OFD lock lost", r);
        if (!conflicts(tester_b, F_WRLCK, 205, 1)) t_fail("round %" PRIu64 ": POSIX lock lost", r);
        if (conflicts(tester_b, F_WRLCK, 210, 100))
            t_fail("round %" PRIu64 ": a lock where none was taken", r);
        if (!conflicts(tester_b, F_WRLCK, 1 << 20, 1))
            t_fail("round %" PRIu64 ": POSIX lock to the end of the file lost", r);
        char rec[32];
        int n = snprintf(rec, sizeof rec, "%08" PRIu64 "\n", r);
        if (pwrite(a, rec, (size_t)n, 0) != n) t_fail("pwrite: %s", strerror(errno));
        for (int i = 0; i < n; i++)
            sum = sum * 31 + (unsigned char)rec[i];
        if (r % 20 == 0) t_line("round %" PRIu64 " locks held", r);
        struct timespec ms = {0, 20 * 1000 * 1000};
        while (nanosleep(&ms, &ms) != 0 && errno == EINTR) {
        }
    }
    t_line("sum %" PRIu64, sum);
    return t_pass();
}
