// SPDX-License-Identifier: Apache-2.0
// A server's sockets, checked every step: a TCP listener on 127.0.0.1 (and on ::1, IPv6 only,
// where the machine has IPv6), a Unix stream listener bound to a path in --dir, a Unix seqpacket
// listener on an abstract name, and two UDP sockets on 127.0.0.1, one connected to the other.
// Each step connects to every listener, accepts, passes a byte each way, closes both ends, and
// sends a datagram each way between the UDP sockets; every address (the ports the kernel chose at
// the start) must stay the same. A step does its exchanges with every signal blocked, so a
// checkpoint never finds a connection waiting to be accepted or a datagram queued (it would be
// refused); in between it sleeps 1 ms.
#define _GNU_SOURCE
#include "common.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>

struct listener {
    const char *what;
    int fd, type;
    struct sockaddr_storage addr;
    socklen_t len;
};

static int bound(int family, int type, const void *addr, socklen_t len, const char *what) {
    int fd = socket(family, type | SOCK_CLOEXEC, 0);
    if (fd < 0) t_fail("socket (%s): %s", what, strerror(errno));
    int one = 1;
    if (family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (bind(fd, (const struct sockaddr *)addr, len) != 0) {
        if (family == AF_INET6) { // (no IPv6 here)
            close(fd);
            return -1;
        }
        t_fail("bind (%s): %s", what, strerror(errno));
    }
    return fd;
}

static void add_listener(struct listener *l, int family, int type, const void *addr, socklen_t len,
                         int backlog, const char *what) {
    l->what = what, l->type = type;
    l->fd = bound(family, type, addr, len, what);
    if (l->fd < 0) return;
    if (listen(l->fd, backlog) != 0) t_fail("listen (%s): %s", what, strerror(errno));
    l->len = sizeof l->addr;
    if (getsockname(l->fd, (struct sockaddr *)&l->addr, &l->len) != 0) t_fail("getsockname");
}

static void same_address(int fd, const struct sockaddr_storage *addr, socklen_t len,
                         const char *what, long step) {
    struct sockaddr_storage now;
    socklen_t now_len = sizeof now;
    if (getsockname(fd, (struct sockaddr *)&now, &now_len) != 0 || now_len != len ||
        memcmp(&now, addr, len) != 0)
        t_fail("step %ld: the %s socket's address changed", step, what);
}

static void exchange(struct listener *l, long step) {
    int client = socket(l->addr.ss_family, l->type | SOCK_CLOEXEC, 0);
    if (client < 0 || connect(client, (struct sockaddr *)&l->addr, l->len) != 0)
        t_fail("step %ld: connect to the %s listener: %s", step, l->what, strerror(errno));
    int server = accept4(l->fd, NULL, NULL, SOCK_CLOEXEC);
    if (server < 0) t_fail("step %ld: accept (%s): %s", step, l->what, strerror(errno));
    char out = (char)step, in = 0;
    if (write(client, &out, 1) != 1 || read(server, &in, 1) != 1 || in != out ||
        write(server, &out, 1) != 1 || read(client, &in, 1) != 1 || in != out)
        t_fail("step %ld: the %s connection lost its byte", step, l->what);
    close(client);
    close(server);
}

int main(int argc, char **argv) {
    t_init("listeners");
    long steps = 1000;
    const char *dir = NULL;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--steps") == 0) steps = atol(argv[i + 1]);
        if (strcmp(argv[i], "--dir") == 0) dir = argv[i + 1];
    }
    if (!dir) t_fail("usage: listeners --dir DIR [--steps N]");

    struct listener ls[4];
    int count = 0;
    struct sockaddr_in v4 = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    add_listener(&ls[count++], AF_INET, SOCK_STREAM, &v4, sizeof v4, 7, "TCP");
    struct sockaddr_in6 v6 = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    add_listener(&ls[count], AF_INET6, SOCK_STREAM, &v6, sizeof v6, 5, "TCP/IPv6");
    if (ls[count].fd >= 0) count++;
    struct sockaddr_un path = {.sun_family = AF_UNIX};
    snprintf(path.sun_path, sizeof path.sun_path, "%s/server.sock", dir);
    unlink(path.sun_path); // (left by an earlier run that failed)
    add_listener(&ls[count++], AF_UNIX, SOCK_STREAM, &path, sizeof path, 3, "Unix path");
    struct sockaddr_un abstract = {.sun_family = AF_UNIX};
    int name_len = snprintf(abstract.sun_path + 1, sizeof abstract.sun_path - 1,
                            "ghost-test-listeners-%d", (int)getpid());
    add_listener(&ls[count++], AF_UNIX, SOCK_SEQPACKET, &abstract,
                 (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + name_len), 2,
                 "Unix abstract");

    int u1 = bound(AF_INET, SOCK_DGRAM, &v4, sizeof v4, "UDP");
    int u2 = bound(AF_INET, SOCK_DGRAM, &v4, sizeof v4, "UDP");
    struct sockaddr_storage u1_addr, u2_addr;
    socklen_t u1_len = sizeof u1_addr, u2_len = sizeof u2_addr;
    if (getsockname(u1, (struct sockaddr *)&u1_addr, &u1_len) != 0 ||
        getsockname(u2, (struct sockaddr *)&u2_addr, &u2_len) != 0 ||
        connect(u2, (struct sockaddr *)&u1_addr, u1_len) != 0)
        t_fail("UDP setup: %s", strerror(errno));

    for (long step = 1; step <= steps; step++) {
        sigset_t all, old;
        sigfillset(&all);
        sigprocmask(SIG_BLOCK, &all, &old);
        for (int i = 0; i < count; i++) {
            same_address(ls[i].fd, &ls[i].addr, ls[i].len, ls[i].what, step);
            exchange(&ls[i], step);
        }
        same_address(u1, &u1_addr, u1_len, "UDP", step);
        same_address(u2, &u2_addr, u2_len, "connected UDP", step);
        long out = step, in = 0;
        struct sockaddr_storage from;
        socklen_t from_len = sizeof from;
        if (send(u2, &out, sizeof out, 0) != (ssize_t)sizeof out ||
            recvfrom(u1, &in, sizeof in, 0, (struct sockaddr *)&from, &from_len) !=
                (ssize_t)sizeof in ||
            in != out || from_len != u2_len || memcmp(&from, &u2_addr, u2_len) != 0)
            t_fail("step %ld: the datagram to the UDP socket was lost", step);
        in = 0;
        if (sendto(u1, &out, sizeof out, 0, (struct sockaddr *)&u2_addr, u2_len) !=
                (ssize_t)sizeof out ||
            recv(u2, &in, sizeof in, 0) != (ssize_t)sizeof in || in != out)
            t_fail("step %ld: the datagram to the connected UDP socket was lost", step);
        sigprocmask(SIG_SETMASK, &old, NULL);
        struct timespec ms = {0, 1000000};
        nanosleep(&ms, NULL);
        if (step % 100 == 0) t_line("step %ld: every socket answered", step);
    }
    return t_pass();
}
