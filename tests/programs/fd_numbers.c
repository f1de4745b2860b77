// SPDX-License-Identifier: Apache-2.0
// A program that puts its descriptors on numbers of its choosing, as shells and daemons do: two
// pipes are dup2()ed onto 3/4 and 5/6, everything from 7 up is closed (closefrom style), and
// from then on the lowest free number must stay 7 and 3-6 must stay its pipes. Records go
// through both pipes all along, and the second one also carries what a forked child writes into
// fd 5 (a child must find the parent's numbers intact). Under ghost nothing of the agent may
// occupy, close or replace these numbers, before or after a checkpoint, restart or duplication.
#include "common.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

static void check_numbers(uint64_t step) {
    struct stat a_r, a_w, b_w, b_r;
    if (fstat(3, &a_r) || fstat(4, &a_w) || fstat(5, &b_w) || fstat(6, &b_r))
        t_fail("step %" PRIu64 ": fstat of fds 3-6: %s", step, strerror(errno));
    if (!S_ISFIFO(a_r.st_mode) || a_r.st_ino != a_w.st_ino || !S_ISFIFO(b_r.st_mode) ||
        b_r.st_ino != b_w.st_ino || a_r.st_ino == b_r.st_ino)
        t_fail("step %" PRIu64 ": fds 3/4 and 5/6 are no longer the program's two pipes", step);
    if ((fcntl(3, F_GETFL) & O_ACCMODE) != O_RDONLY ||
        (fcntl(4, F_GETFL) & O_ACCMODE) != O_WRONLY ||
        (fcntl(5, F_GETFL) & O_ACCMODE) != O_WRONLY || (fcntl(6, F_GETFL) & O_ACCMODE) != O_RDONLY)
        t_fail("step %" PRIu64 ": the access modes of fds 3-6 changed", step);
    int probe = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (probe != 7)
        t_fail("step %" PRIu64 ": the lowest free descriptor is %d, not 7", step, probe);
    close(probe);
}

static void put(int fd, uint64_t v, const char *what) {
    t_write_all(fd, &v, sizeof v, what);
}

static uint64_t get(int fd, const char *what) {
    uint64_t v = 0;
    if (t_read_full(fd, &v, sizeof v, what) != sizeof v) t_fail("%s: end of file", what);
    return v;
}

int main(int argc, char **argv) {
    t_init("fd_numbers");
    static const char *const known[] = {"--steps", "--fork-every", NULL};
    t_check_args(argc, argv, known, "[--steps N] [--fork-every N]");
    uint64_t steps = t_opt_u64(argc, argv, "--steps", 400000);
    uint64_t fork_every = t_opt_u64(argc, argv, "--fork-every", 0);

    int a[2], b[2];
    if (pipe(a) != 0 || pipe(b) != 0) t_fail("pipe: %s", strerror(errno));
    // Away from 3-6 first, so that the dup2()s below cannot overwrite one another.
    int tmp[4] = {fcntl(a[0], F_DUPFD, 20), fcntl(a[1], F_DUPFD, 20), fcntl(b[1], F_DUPFD, 20),
                  fcntl(b[0], F_DUPFD, 20)};
    for (int i = 0; i < 4; i++) {
        if (tmp[i] < 0) t_fail("F_DUPFD: %s", strerror(errno));
        if (dup2(tmp[i], 3 + i) != 3 + i) t_fail("dup2 onto %d: %s", 3 + i, strerror(errno));
    }
    if (syscall(SYS_close_range, 7, ~0U, 0) != 0) t_fail("close_range: %s", strerror(errno));
    check_numbers(0);
    t_line("pipes on 3/4 and 5/6, nothing from 7 up");

    uint64_t h = T_FNV_INIT;
    for (uint64_t i = 1; i <= steps; i++) {
        put(4, t_mix64(i), "fd 4");
        put(5, t_mix64(~i), "fd 5");
        uint64_t x = get(3, "fd 3"), y = get(6, "fd 6");
        if (x != t_mix64(i) || y != t_mix64(~i)) t_fail("step %" PRIu64 ": a record changed", i);
        h = t_fnv1a(h, &x, sizeof x);
        if (fork_every && i % fork_every == 0) {
            fflush(stdout);
            pid_t c = fork();
            if (c < 0) t_fail("fork: %s", strerror(errno));
            if (c == 0) {
                uint64_t v = t_mix64(i * 3);
                _exit(write(5, &v, sizeof v) == (ssize_t)sizeof v ? 0 : 10 + errno % 100);
            }
            int ws;
            if (waitpid(c, &ws, 0) != c) t_fail("waitpid: %s", strerror(errno));
            if (!WIFEXITED(ws) || WEXITSTATUS(ws) != 0)
                t_fail("step %" PRIu64 ": the child could not write to fd 5 (status %#x)", i, ws);
            if (get(6, "fd 6") != t_mix64(i * 3)) t_fail("step %" PRIu64 ": child record", i);
        }
        if (i % (steps / 10) == 0) {
            check_numbers(i);
            t_line("step %" PRIu64 " hash %016" PRIx64, i, h);
        }
    }
    return t_pass();
}
