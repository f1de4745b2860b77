// SPDX-License-Identifier: Apache-2.0
// Descriptors that are held more than once or are terminals, checked at every step:
//  * pipe A (enlarged to 256 KiB, about 100 KiB always buffered in it) held through its two ends,
//    a dup() and an F_DUPFD_CLOEXEC copy (same open file descriptions), and reopened through
//    /proc/self/fd for writing and, non-blocking, for reading (new open file descriptions of the
//    same pipe). Each step writes a record through one of the three writers and reads the oldest
//    record through one of the three readers: the byte stream must come out in order. Which
//    descriptors share an open file description (kcmp), their flags and the pipe's size are
//    checked at every step;
//  * pipe B, held only through a read-write descriptor reopened from /proc/self/fd (both of its
//    own ends closed): written and read back through that one descriptor;
//  * /dev/tty, when the process has a controlling terminal ("tty none" otherwise): still a
//    terminal;
//  * a pty pair of its own (raw, 33x77, 38400 baud): termios and window size checked at every
//    step, data exchanged both ways at the start and at the end only (nothing is in flight while
//    it runs).
#include "common.h"

#include <fcntl.h>
#include <linux/kcmp.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <termios.h>

#define BACKLOG (100 * 1024)
#define PIPE_SIZE (256 * 1024)

static unsigned char stream_byte(uint64_t pos) {
    return (unsigned char)(t_mix64(pos / 8) >> (pos % 8 * 8));
}

static uint64_t rec_len(uint64_t step) {
    return 1 + t_mix64(step ^ 0xabc) % 300;
}

static int same_description(int a, int b) {
    pid_t self = getpid();
    long r = syscall(SYS_kcmp, self, self, KCMP_FILE, a, b);
    if (r < 0) t_fail("kcmp %d %d: %s", a, b, strerror(errno));
    return r == 0;
}

static void check_flags(int fd, int want_fl, int want_cloexec, const char *what) {
    int fl = fcntl(fd, F_GETFL), fd_flags = fcntl(fd, F_GETFD);
    if (fl < 0 || fd_flags < 0) t_fail("fcntl %s: %s", what, strerror(errno));
    if ((fl & (O_ACCMODE | O_NONBLOCK)) != want_fl)
        t_fail("%s: flags %#o, expected %#o", what, fl & (O_ACCMODE | O_NONBLOCK), want_fl);
    if (!!(fd_flags & FD_CLOEXEC) != want_cloexec)
        t_fail("%s: close-on-exec %d, expected %d", what, !!(fd_flags & FD_CLOEXEC), want_cloexec);
}

static void read_exact(int fd, unsigned char *buf, size_t len, const char *what) {
    size_t got = 0;
    while (got < len) {
        ssize_t n = read(fd, buf + got, len - got);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) t_fail("read %s: %s", what, n < 0 ? strerror(errno) : "end of file");
        got += (size_t)n;
    }
}

static void pty_exchange(int master, int slave, const char *tag) {
    char msg[64], got[64];
    int len = snprintf(msg, sizeof msg, "to-slave %s", tag);
    t_write_all(master, msg, (size_t)len, "pty master");
    read_exact(slave, (unsigned char *)got, (size_t)len, "pty slave");
    if (memcmp(got, msg, (size_t)len) != 0) t_fail("pty: the slave read '%.*s'", len, got);
    len = snprintf(msg, sizeof msg, "to-master %s", tag);
    t_write_all(slave, msg, (size_t)len, "pty slave");
    read_exact(master, (unsigned char *)got, (size_t)len, "pty master");
    if (memcmp(got, msg, (size_t)len) != 0) t_fail("pty: the master read '%.*s'", len, got);
}

static void check_pty(int master, int slave, const struct termios *want) {
    struct termios t;
    struct winsize ws;
    if (tcgetattr(slave, &t) != 0) t_fail("tcgetattr pty slave: %s", strerror(errno));
    if (t.c_iflag != want->c_iflag || t.c_oflag != want->c_oflag || t.c_cflag != want->c_cflag ||
        t.c_lflag != want->c_lflag || memcmp(t.c_cc, want->c_cc, sizeof t.c_cc) != 0 ||
        cfgetospeed(&t) != B38400)
        t_fail("pty termios changed");
    if (ioctl(master, TIOCGWINSZ, &ws) != 0 || ws.ws_row != 33 || ws.ws_col != 77)
        t_fail("pty window size changed");
}

int main(int argc, char **argv) {
    t_init("odd_fds");
    static const char *const known[] = {"--steps", NULL};
    const char *usage = "[--steps N]";
    t_check_args(argc, argv, known, usage);
    uint64_t steps = t_opt_u64(argc, argv, "--steps", 400000);
    t_line("odd_fds steps=%" PRIu64, steps);

    // Pipe A and its many handles.
    int a[2];
    if (pipe(a) != 0) t_fail("pipe: %s", strerror(errno));
    if (fcntl(a[1], F_SETPIPE_SZ, PIPE_SIZE) < PIPE_SIZE)
        t_fail("F_SETPIPE_SZ: %s", strerror(errno));
    int w_dup = dup(a[1]);
    int r_dup = fcntl(a[0], F_DUPFD_CLOEXEC, 20);
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", a[1]);
    int w_re = open(path, O_WRONLY);
    snprintf(path, sizeof path, "/proc/self/fd/%d", a[0]);
    int r_re = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (w_dup < 0 || r_dup < 0 || w_re < 0 || r_re < 0) t_fail("dup/reopen: %s", strerror(errno));
    int writers[3] = {a[1], w_dup, w_re}, readers[3] = {a[0], r_dup, r_re};

    // Pipe B, held only through a read-write reopen.
    int b[2];
    if (pipe(b) != 0) t_fail("pipe: %s", strerror(errno));
    snprintf(path, sizeof path, "/proc/self/fd/%d", b[0]);
    int b_rw = open(path, O_RDWR);
    if (b_rw < 0) t_fail("reopen pipe B read-write: %s", strerror(errno));
    close(b[0]);
    close(b[1]);

    int tty = open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (tty < 0 && errno != ENXIO) t_fail("open /dev/tty: %s", strerror(errno));
    t_line(tty >= 0 ? "tty yes" : "tty none");

    int master = posix_openpt(O_RDWR | O_NOCTTY);
    if (master < 0 || grantpt(master) != 0 || unlockpt(master) != 0)
        t_fail("posix_openpt: %s", strerror(errno));
    int slave = open(ptsname(master), O_RDWR | O_NOCTTY);
    if (slave < 0) t_fail("open pty slave: %s", strerror(errno));
    struct termios want;
    if (tcgetattr(slave, &want) != 0) t_fail("tcgetattr: %s", strerror(errno));
    cfmakeraw(&want);
    want.c_cc[VMIN] = 1;
    want.c_cc[VTIME] = 0;
    cfsetspeed(&want, B38400);
    if (tcsetattr(slave, TCSANOW, &want) != 0 || tcgetattr(slave, &want) != 0)
        t_fail("tcsetattr: %s", strerror(errno));
    struct winsize ws = {.ws_row = 33, .ws_col = 77};
    if (ioctl(master, TIOCSWINSZ, &ws) != 0) t_fail("TIOCSWINSZ: %s", strerror(errno));
    pty_exchange(master, slave, "start");

    uint64_t wpos = 0, rpos = 0;
    unsigned char buf[512];
    while (wpos < BACKLOG) {
        size_t n = sizeof buf;
        for (size_t i = 0; i < n; i++)
            buf[i] = stream_byte(wpos + i);
        t_write_all(a[1], buf, n, "pipe A");
        wpos += n;
    }
    uint64_t b_count = 0;
    for (uint64_t s = 0; s < steps; s++) {
        if (!same_description(a[1], w_dup) || !same_description(a[0], r_dup) ||
            same_description(a[1], w_re) || same_description(a[0], r_re))
            t_fail("step %" PRIu64 ": descriptors share the wrong open file descriptions", s);
        check_flags(a[0], O_RDONLY, 0, "pipe A read end");
        check_flags(r_dup, O_RDONLY, 1, "pipe A read copy");
        check_flags(r_re, O_RDONLY | O_NONBLOCK, 1, "pipe A read reopen");
        check_flags(w_re, O_WRONLY, 0, "pipe A write reopen");
        check_flags(b_rw, O_RDWR, 0, "pipe B");
        if (fcntl(a[0], F_GETPIPE_SZ) != PIPE_SIZE) t_fail("pipe A: size changed");
        int queued = 0;
        if (ioctl(a[0], FIONREAD, &queued) != 0 || (uint64_t)queued != wpos - rpos)
            t_fail("step %" PRIu64 ": pipe A holds %d bytes, expected %" PRIu64, s, queued,
                   wpos - rpos);

        uint64_t n = rec_len(s);
        for (uint64_t i = 0; i < n; i++)
            buf[i] = stream_byte(wpos + i);
        t_write_all(writers[s % 3], buf, n, "pipe A");
        wpos += n;
        uint64_t m = rec_len(s + 7);
        unsigned char got[512];
        read_exact(readers[(s / 3) % 3], got, m, "pipe A");
        for (uint64_t i = 0; i < m; i++)
            if (got[i] != stream_byte(rpos + i))
                t_fail("pipe A: wrong byte at stream offset %" PRIu64, rpos + i);
        rpos += m;
        // The backlog stays between BACKLOG and BACKLOG + 8 KiB (+ a record).
        while (wpos - rpos < BACKLOG) {
            for (size_t i = 0; i < 256; i++)
                buf[i] = stream_byte(wpos + i);
            t_write_all(a[1], buf, 256, "pipe A");
            wpos += 256;
        }
        while (wpos - rpos > BACKLOG + 8192) {
            read_exact(a[0], got, 256, "pipe A");
            for (uint64_t i = 0; i < 256; i++)
                if (got[i] != stream_byte(rpos + i))
                    t_fail("pipe A: wrong byte at stream offset %" PRIu64, rpos + i);
            rpos += 256;
        }

        uint64_t v = t_mix64(s);
        t_write_all(b_rw, &v, sizeof v, "pipe B");
        uint64_t back = 0;
        read_exact(b_rw, (unsigned char *)&back, sizeof back, "pipe B");
        if (back != v) t_fail("pipe B: read back a different word");
        b_count++;

        if (tty >= 0 && !isatty(tty)) t_fail("step %" PRIu64 ": /dev/tty is no terminal", s);
        check_pty(master, slave, &want);
        if ((s + 1) % (steps / 8 ? steps / 8 : 1) == 0)
            t_line("step %" PRIu64 " pipe A at %" PRIu64, s + 1, rpos);
    }
    pty_exchange(master, slave, "end");
    while (rpos < wpos) {
        uint64_t m = wpos - rpos < sizeof buf ? wpos - rpos : sizeof buf;
        read_exact(a[0], buf, m, "pipe A");
        for (uint64_t i = 0; i < m; i++)
            if (buf[i] != stream_byte(rpos + i))
                t_fail("pipe A: wrong byte at stream offset %" PRIu64, rpos + i);
        rpos += m;
    }
    int queued = -1;
    if (ioctl(a[0], FIONREAD, &queued) != 0 || queued != 0) t_fail("pipe A: data left over");
    t_line("pipe A drained at %" PRIu64 ", pipe B %" PRIu64 " words", rpos, b_count);
    return t_pass();
}
