// SPDX-License-Identifier: Apache-2.0
// An event loop on anonymous-inode descriptors, as asyncio, libuv or a server's loop holds them,
// checked every step:
//  * an epoll instance (and a dup of it, used on odd steps) watching: a semaphore eventfd
//    (level-triggered), a periodic timerfd (edge-triggered), a signalfd of SIGUSR1, a second
//    epoll instance that watches an eventfd of its own (nested), a stream socketpair that wakes
//    the loop (a byte per step, as asyncio's self-pipe; with --dir its reading end is on fd 0),
//    and a pipe through a one-shot watch that fired once at the start and must stay disarmed;
//  * an eventfd whose counter is beyond 32 bits, a semaphore eventfd holding 3, a one-shot timerfd
//    that expired unread (its expiration must still be there at the end), and an absolute
//    CLOCK_REALTIME timerfd an hour away (still armed for the same date), and a socketpair with
//    100000 bytes queued at one end from the start (read back at the end) and a send buffer size
//    set on the other;
//  * with --dir, an inotify instance (watched through the epoll instance) with watch 1 on the
//    directory (IN_CREATE) and watch 3 on a file in it (IN_MODIFY; watch 2 was removed: a
//    restart must give the watches their numbers again). Every 10th step creates a file and
//    writes the watched one, and reads their events, with every signal blocked: a checkpoint
//    never finds events queued (it would be refused, as their order cannot be carried).
// Each step writes the eventfds, queues SIGUSR1 with the step's number, waits in epoll_wait for
// exactly the events it caused, and checks each descriptor's state. A step also waits 2 ms in an
// epoll_wait of its own: the loop spends its time blocked there, where a park usually finds it.
#define _GNU_SOURCE
#include "common.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>

enum {
    ev_semaphore = 1,
    ev_timer = 3,
    ev_signal = 4,
    ev_nested = 5,
    ev_oneshot = 6,
    ev_inner = 7,
    ev_wake = 8,
    ev_inotify = 9
};

static const uint64_t big_base = 0x100000005ULL;

static uint64_t read_u64(int fd, const char *what) {
    uint64_t v = 0;
    if (read(fd, &v, sizeof v) != (ssize_t)sizeof v) t_fail("read %s: %s", what, strerror(errno));
    return v;
}

static void write_u64(int fd, uint64_t v, const char *what) {
    if (write(fd, &v, sizeof v) != (ssize_t)sizeof v) t_fail("write %s: %s", what, strerror(errno));
}

static void watch(int ep, int fd, uint32_t events, uint64_t data) {
    struct epoll_event ev = {.events = events, .data.u64 = data};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0) t_fail("epoll_ctl: %s", strerror(errno));
}

static int64_t ns_of(struct timespec t) {
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

int main(int argc, char **argv) {
    t_init("event_loop");
    long steps = 1000;
    const char *dir = NULL;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--steps") == 0) steps = atol(argv[i + 1]);
        if (strcmp(argv[i], "--dir") == 0) dir = argv[i + 1];
    }

    sigset_t usr1;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    if (sigprocmask(SIG_BLOCK, &usr1, NULL) != 0) t_fail("sigprocmask");

    int semaphore = eventfd(0, EFD_SEMAPHORE | EFD_NONBLOCK);
    int big = eventfd(0, EFD_NONBLOCK);
    int held = eventfd(3, EFD_SEMAPHORE | EFD_NONBLOCK);
    int inner_efd = eventfd(0, EFD_NONBLOCK);
    int periodic = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
    int expired = timerfd_create(CLOCK_BOOTTIME, TFD_NONBLOCK);
    int dated = timerfd_create(CLOCK_REALTIME, TFD_NONBLOCK);
    int sigfd = signalfd(-1, &usr1, SFD_NONBLOCK);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    int inner = epoll_create1(0);
    int pause_ep = epoll_create1(0);
    int pipe_fds[2], wake[2], queued[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, wake) != 0 ||
        socketpair(AF_UNIX, SOCK_STREAM, 0, queued) != 0)
        t_fail("socketpair: %s", strerror(errno));
    // With --dir (not duplicated: a copy's std streams are those of `ghost duplicate`), the
    // wake-up pair's reading end is the process's stdin, as a pipe or socketpair a parent set up
    // would be: a restart must make it again with its pair, not take the restarter's stdin.
    if (dir) {
        if (dup2(wake[0], 0) != 0) t_fail("dup2: %s", strerror(errno));
        close(wake[0]);
        wake[0] = 0;
    }
    int sndbuf = 50000;
    if (setsockopt(wake[1], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf) != 0)
        t_fail("SO_SNDBUF: %s", strerror(errno));
    static unsigned char pattern[100000];
    for (size_t i = 0; i < sizeof pattern; i++)
        pattern[i] = (unsigned char)(i * 7 + i / 251);
    if (write(queued[1], pattern, sizeof pattern) != (ssize_t)sizeof pattern)
        t_fail("cannot queue the pattern in the socketpair: %s", strerror(errno));
    if (semaphore < 0 || big < 0 || held < 0 || inner_efd < 0 || periodic < 0 || expired < 0 ||
        dated < 0 || sigfd < 0 || ep < 0 || inner < 0 || pause_ep < 0 || pipe2(pipe_fds, 0) != 0)
        t_fail("cannot make the descriptors: %s", strerror(errno));
    int ep_dup = dup(ep);
    write_u64(big, big_base, "the big eventfd");

    struct itimerspec every_5ms = {{0, 5000000}, {0, 5000000}};
    struct itimerspec once_1ms = {{0, 0}, {0, 1000000}};
    if (timerfd_settime(periodic, 0, &every_5ms, NULL) != 0 ||
        timerfd_settime(expired, 0, &once_1ms, NULL) != 0)
        t_fail("timerfd_settime: %s", strerror(errno));
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    struct itimerspec in_an_hour = {{0, 0}, {now.tv_sec + 3600, now.tv_nsec}};
    if (timerfd_settime(dated, TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET, &in_an_hour, NULL) != 0)
        t_fail("timerfd_settime (absolute): %s", strerror(errno));
    int64_t dated_at = ns_of(in_an_hour.it_value);

    watch(ep, semaphore, EPOLLIN, ev_semaphore);
    watch(ep, periodic, EPOLLIN | EPOLLET, ev_timer);
    watch(ep, sigfd, EPOLLIN, ev_signal);
    watch(inner, inner_efd, EPOLLIN, ev_inner);
    watch(ep, inner, EPOLLIN, ev_nested);
    if (write(pipe_fds[1], "x", 1) != 1) t_fail("write pipe");
    watch(ep, pipe_fds[0], EPOLLIN | EPOLLONESHOT, ev_oneshot);
    watch(ep, wake[0], EPOLLIN, ev_wake);
    int in = -1, dir_wd = -1, file_wd = -1;
    char watched[4096];
    if (dir) {
        snprintf(watched, sizeof watched, "%s/watched", dir);
        int w = open(watched, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        in = inotify_init1(IN_NONBLOCK);
        if (w < 0 || in < 0) t_fail("inotify setup: %s", strerror(errno));
        close(w);
        dir_wd = inotify_add_watch(in, dir, IN_CREATE);
        int removed = inotify_add_watch(in, watched, IN_ACCESS);
        if (dir_wd != 1 || removed != 2 || inotify_rm_watch(in, removed) != 0)
            t_fail("inotify watches 1 and 2: %s", strerror(errno));
        file_wd = inotify_add_watch(in, watched, IN_MODIFY);
        if (file_wd != 3) t_fail("inotify watch 3: %s", strerror(errno));
        char drain[4096]; // (the removal's IN_IGNORED)
        while (read(in, drain, sizeof drain) > 0) {
        }
        watch(ep, in, EPOLLIN, ev_inotify);
    }
    struct epoll_event got[8];
    uint64_t timer_ticks = 0;
    int n, fired = 0;
    while (!fired) { // (the periodic timer may have expired already on a loaded machine)
        n = epoll_wait(ep, got, 8, 1000);
        if (n <= 0) t_fail("the one-shot watch did not fire");
        for (int i = 0; i < n; i++) {
            if (got[i].data.u64 == ev_timer)
                timer_ticks += read_u64(periodic, "the periodic timerfd");
            else if (got[i].data.u64 == ev_oneshot)
                fired++;
            else
                t_fail("epoll reported data %llu at the start",
                       (unsigned long long)got[i].data.u64);
        }
    }

    for (long step = 1; step <= steps; step++) {
        int loop = step % 2 ? ep_dup : ep;
        write_u64(semaphore, 1, "the semaphore eventfd");
        write_u64(inner_efd, 1, "the inner eventfd");
        if (sigqueue(getpid(), SIGUSR1, (union sigval){.sival_int = (int)step}) != 0)
            t_fail("sigqueue: %s", strerror(errno));
        unsigned char byte = (unsigned char)step;
        if (write(wake[1], &byte, 1) != 1) t_fail("step %ld: write the wake-up socket", step);
        int seen_semaphore = 0, seen_signal = 0, seen_nested = 0, seen_wake = 0;
        while (!(seen_semaphore && seen_signal && seen_nested && seen_wake)) {
            n = epoll_wait(loop, got, 8, 5000);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) t_fail("step %ld: epoll_wait returned %d (%s)", step, n, strerror(errno));
            for (int i = 0; i < n; i++) {
                switch (got[i].data.u64) {
                case ev_semaphore:
                    if (read_u64(semaphore, "the semaphore eventfd") != 1)
                        t_fail("step %ld: the semaphore eventfd read more than 1", step);
                    seen_semaphore++;
                    break;
                case ev_timer:
                    timer_ticks += read_u64(periodic, "the periodic timerfd");
                    break;
                case ev_signal: {
                    struct signalfd_siginfo si;
                    if (read(sigfd, &si, sizeof si) != (ssize_t)sizeof si)
                        t_fail("step %ld: read signalfd: %s", step, strerror(errno));
                    if (si.ssi_signo != SIGUSR1 || si.ssi_int != (int32_t)step)
                        t_fail("step %ld: the signalfd read signal %u value %d", step, si.ssi_signo,
                               si.ssi_int);
                    seen_signal++;
                    break;
                }
                case ev_nested: {
                    struct epoll_event in;
                    if (epoll_wait(inner, &in, 1, 0) != 1 || in.data.u64 != ev_inner)
                        t_fail("step %ld: the nested epoll instance had no event", step);
                    if (read_u64(inner_efd, "the inner eventfd") != 1)
                        t_fail("step %ld: the inner eventfd did not hold 1", step);
                    seen_nested++;
                    break;
                }
                case ev_wake: {
                    unsigned char in[4];
                    if (read(wake[0], in, sizeof in) != 1 || in[0] != byte)
                        t_fail("step %ld: the wake-up socket did not hold its one byte", step);
                    seen_wake++;
                    break;
                }
                default:
                    t_fail("step %ld: epoll reported data %llu", step,
                           (unsigned long long)got[i].data.u64);
                }
            }
            if (seen_semaphore > 1 || seen_signal > 1 || seen_nested > 1 || seen_wake > 1)
                t_fail("step %ld: an event was reported twice", step);
        }
        if (dir && step % 10 == 0) {
            sigset_t all, old;
            sigfillset(&all);
            sigprocmask(SIG_BLOCK, &all, &old);
            char name[4200];
            snprintf(name, sizeof name, "%s/new-%ld", dir, step);
            unlink(name); // (left by an earlier run that failed)
            int c = open(name, O_WRONLY | O_CREAT | O_EXCL, 0644);
            int w = open(watched, O_WRONLY | O_APPEND);
            if (c < 0 || w < 0 || write(w, "x", 1) != 1)
                t_fail("step %ld: cannot make inotify events: %s", step, strerror(errno));
            close(c), close(w);
            int created = 0, modified = 0;
            while (!(created && modified)) {
                if (epoll_wait(loop, got, 8, 5000) <= 0) t_fail("step %ld: no inotify event", step);
                union {
                    struct inotify_event e;
                    char bytes[4096];
                } buf;
                ssize_t len = read(in, &buf, sizeof buf);
                for (char *at = buf.bytes; len > 0 && at < buf.bytes + len;) {
                    struct inotify_event *e = (struct inotify_event *)at;
                    if (e->wd == dir_wd && (e->mask & IN_CREATE) &&
                        strcmp(e->name, strrchr(name, '/') + 1) == 0)
                        created++;
                    else if (e->wd == file_wd && (e->mask & IN_MODIFY))
                        modified++;
                    else
                        t_fail("step %ld: inotify reported wd %d mask %x", step, e->wd, e->mask);
                    at += sizeof *e + e->len;
                }
            }
            unlink(name); // (not watched)
            sigprocmask(SIG_SETMASK, &old, NULL);
        }
        uint64_t k = (uint64_t)(step % 7 + 1);
        write_u64(big, k, "the big eventfd");
        if (read_u64(big, "the big eventfd") != big_base + k)
            t_fail("step %ld: the big eventfd lost its counter", step);
        write_u64(big, big_base, "the big eventfd");

        socklen_t len = sizeof sndbuf;
        if (getsockopt(wake[1], SOL_SOCKET, SO_SNDBUF, &sndbuf, &len) != 0 || sndbuf != 100000)
            t_fail("step %ld: the socket's send buffer is %d bytes", step, sndbuf);
        struct itimerspec cur;
        if (timerfd_gettime(periodic, &cur) != 0 || cur.it_interval.tv_sec != 0 ||
            cur.it_interval.tv_nsec != 5000000)
            t_fail("step %ld: the periodic timerfd lost its interval", step);
        clock_gettime(CLOCK_REALTIME, &now);
        if (timerfd_gettime(dated, &cur) != 0) t_fail("timerfd_gettime: %s", strerror(errno));
        int64_t left = ns_of(cur.it_value), want = dated_at - ns_of(now);
        if (left <= 0 || llabs(left - want) > 2000000000LL)
            t_fail("step %ld: the absolute timerfd is %lld ms off its date", step,
                   (long long)((left - want) / 1000000));
        if (epoll_wait(pause_ep, got, 1, 2) != 0 && errno != EINTR)
            t_fail("step %ld: an empty epoll instance reported an event", step);
        if (step % 100 == 0) t_line("step %ld: events as expected", step);
    }
    if (timer_ticks == 0) t_fail("the periodic timerfd never fired");
    static unsigned char back[sizeof pattern + 1];
    size_t have = 0;
    for (ssize_t n; have < sizeof back; have += (size_t)n)
        if ((n = recv(queued[0], back + have, sizeof back - have, MSG_DONTWAIT)) <= 0) break;
    if (have != sizeof pattern || memcmp(back, pattern, sizeof pattern) != 0)
        t_fail("the socketpair held %zu bytes, not the 100000 queued", have);
    if (read_u64(expired, "the expired timerfd") != 1)
        t_fail("the one-shot timerfd lost its expiration");
    for (int i = 0; i < 3; i++)
        if (read_u64(held, "the semaphore eventfd holding 3") != 1)
            t_fail("the semaphore eventfd holding 3 lost its count");
    uint64_t v;
    if (read(held, &v, sizeof v) != -1 || errno != EAGAIN)
        t_fail("the semaphore eventfd holding 3 held more");
    struct epoll_event rearm = {.events = EPOLLIN | EPOLLONESHOT, .data.u64 = ev_oneshot};
    if (epoll_ctl(ep, EPOLL_CTL_MOD, pipe_fds[0], &rearm) != 0)
        t_fail("epoll_ctl MOD: %s", strerror(errno));
    for (;;) { // what is ready (timer ticks, the one-shot pipe) until the pipe is reported
        n = epoll_wait(ep, got, 8, 5000);
        if (n <= 0) t_fail("the re-armed one-shot watch did not fire");
        for (int i = 0; i < n; i++) {
            if (got[i].data.u64 == ev_oneshot) {
                t_line("one-shot watch fired once more after being re-armed");
                return t_pass();
            }
            if (got[i].data.u64 != ev_timer)
                t_fail("epoll reported data %llu", (unsigned long long)got[i].data.u64);
            timer_ticks += read_u64(periodic, "the periodic timerfd");
        }
    }
}
