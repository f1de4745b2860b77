// SPDX-License-Identifier: Apache-2.0
// Descriptors reopened by path, checked at every tenth of the run:
//  * O_PATH descriptors of a directory, a regular file, a named pipe, /dev/null and (with
//    O_NOFOLLOW) a symbolic link: still O_PATH, still naming the same file (fstat), the directory
//    usable with openat, the link readable with readlinkat;
//  * named pipes: one opened read-write, one with a separate non-blocking reader and a writer:
//    same access modes and flags, still the same FIFO, and data passes through both at the start
//    and at the end (nothing is buffered in them while the program runs: a checkpoint refuses a
//    named pipe with data in it).
#include "common.h"

#include <fcntl.h>
#include <sys/stat.h>

struct held {
    int fd;
    int flags; // O_ACCMODE | O_NONBLOCK | O_PATH | O_NOFOLLOW bits expected
    const char *name;
    char path[4096];
};

enum { h_dir, h_file, h_fifo_path, h_null, h_link, h_rw, h_rd, h_wr, h_count };
static struct held g_held[h_count];

static void check_fd(const struct held *h, const char *when) {
    int fl = fcntl(h->fd, F_GETFL);
    if (fl < 0) t_fail("%s: fcntl %s: %s", when, h->name, strerror(errno));
    int mask = O_ACCMODE | O_NONBLOCK | O_PATH | O_NOFOLLOW;
    if ((fl & mask) != h->flags)
        t_fail("%s: %s has flags %#o, expected %#o", when, h->name, fl & mask, h->flags);
    struct stat a, b;
    if (fstat(h->fd, &a) != 0) t_fail("%s: fstat %s: %s", when, h->name, strerror(errno));
    if (lstat(h->path, &b) != 0) t_fail("%s: lstat %s: %s", when, h->path, strerror(errno));
    if (a.st_dev != b.st_dev || a.st_ino != b.st_ino)
        t_fail("%s: %s no longer names %s", when, h->name, h->path);
}

static void check_all(const char *when) {
    for (int i = 0; i < h_count; i++)
        check_fd(&g_held[i], when);
    int in = openat(g_held[h_dir].fd, "file", O_RDONLY | O_CLOEXEC);
    char buf[64];
    ssize_t n = in < 0 ? -1 : read(in, buf, sizeof buf);
    if (n != 5 || memcmp(buf, "hello", 5) != 0) t_fail("%s: openat through the O_PATH dir", when);
    close(in);
    n = readlinkat(g_held[h_link].fd, "", buf, sizeof buf);
    if (n != 4 || memcmp(buf, "file", 4) != 0) t_fail("%s: readlinkat of the O_PATH link", when);
}

static void exchange(const char *tag) {
    char msg[64], got[64];
    int len = snprintf(msg, sizeof msg, "fifo %s", tag);
    t_write_all(g_held[h_rw].fd, msg, (size_t)len, "rw fifo");
    if (t_read_full(g_held[h_rw].fd, got, (size_t)len, "rw fifo") != (size_t)len ||
        memcmp(got, msg, (size_t)len) != 0)
        t_fail("%s: the read-write fifo returned other data", tag);
    t_write_all(g_held[h_wr].fd, msg, (size_t)len, "fifo writer");
    ssize_t n = read(g_held[h_rd].fd, got, sizeof got); // non-blocking, the data is there
    if (n != len || memcmp(got, msg, (size_t)len) != 0)
        t_fail("%s: the fifo reader got %zd bytes, expected %d", tag, n, len);
}

static void hold(int which, const char *name, const char *path, int flags) {
    struct held *h = &g_held[which];
    h->name = name;
    snprintf(h->path, sizeof h->path, "%s", path);
    h->fd = open(path, flags | O_CLOEXEC);
    if (h->fd < 0) t_fail("open %s: %s", path, strerror(errno));
    h->flags = flags & (O_ACCMODE | O_NONBLOCK | O_PATH | O_NOFOLLOW);
}

int main(int argc, char **argv) {
    t_init("named_fds");
    static const char *const known[] = {"--dir", "--steps", NULL};
    const char *usage = "--dir DIR [--steps N]";
    t_check_args(argc, argv, known, usage);
    const char *dir = t_opt_str(argc, argv, "--dir", NULL);
    if (!dir) t_usage(usage);
    uint64_t steps = t_opt_u64(argc, argv, "--steps", 400000);
    t_line("named_fds steps=%" PRIu64, steps);

    char file[4096], link[4096], fifo1[4096], fifo2[4096];
    t_path(file, sizeof file, dir, "file");
    t_path(link, sizeof link, dir, "link");
    t_path(fifo1, sizeof fifo1, dir, "fifo1");
    t_path(fifo2, sizeof fifo2, dir, "fifo2");
    // (a run before this one in the same directory left them)
    unlink(link), unlink(fifo1), unlink(fifo2);
    int f = open(file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (f < 0 || write(f, "hello", 5) != 5) t_fail("create %s: %s", file, strerror(errno));
    close(f);
    if (symlink("file", link) != 0) t_fail("symlink: %s", strerror(errno));
    if (mkfifo(fifo1, 0600) != 0 || mkfifo(fifo2, 0600) != 0) t_fail("mkfifo: %s", strerror(errno));

    hold(h_dir, "O_PATH dir", dir, O_PATH | O_DIRECTORY);
    g_held[h_dir].flags = O_PATH; // (O_DIRECTORY is not kept in the file's flags)
    hold(h_file, "O_PATH file", file, O_PATH);
    hold(h_fifo_path, "O_PATH fifo", fifo1, O_PATH);
    hold(h_null, "O_PATH /dev/null", "/dev/null", O_PATH);
    hold(h_link, "O_PATH|O_NOFOLLOW link", link, O_PATH | O_NOFOLLOW);
    hold(h_rw, "read-write fifo", fifo1, O_RDWR);
    hold(h_rd, "fifo reader", fifo2, O_RDONLY | O_NONBLOCK);
    hold(h_wr, "fifo writer", fifo2, O_WRONLY);
    check_all("start");
    exchange("start");
    t_line("held O_PATH and fifo descriptors");

    uint64_t h = T_FNV_INIT;
    for (uint64_t i = 1; i <= steps; i++) {
        uint64_t x = t_mix64(i);
        h = t_fnv1a(h, &x, sizeof x);
        if (i % (steps / 10) == 0) {
            check_all("step");
            t_line("step %" PRIu64 " hash %016" PRIx64, i, h);
        }
    }
    exchange("end");
    check_all("end");
    return t_pass();
}
