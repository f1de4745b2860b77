// SPDX-License-Identifier: Apache-2.0
// A small, long-running target for the bad-input tests, steered through files in --dir:
//  * every 5 ms it verifies its memory and rewrites DIR/beat with a counter (so anyone can see
//    whether a copy of it is running);
//  * when DIR/grow appears (holding a size in MiB) it allocates and fills that much memory once,
//    then creates DIR/grown;
//  * when DIR/stop appears it verifies everything, prints its result and exits.
// With --hold KIND it first opens a descriptor ghost must refuse to checkpoint (see hold()).
#include "common.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <mqueue.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#define SMALL (256 * 1024)

static int exists(const char *dir, const char *name) {
    char p[4096];
    t_path(p, sizeof p, dir, name);
    return access(p, F_OK) == 0;
}

static uint64_t pat(uint64_t i) {
    return t_mix64(i ^ 0x5eed);
}

// Another process (not a child: a process with children is refused before its descriptors are
// looked at) that holds the other end of something and ends with this one: a grandchild, its
// parent reaped at once, waiting on a pidfd of this process.
static void child_holding(int fd) {
    pid_t self = getpid();
    pid_t c = fork();
    if (c < 0) t_fail("fork: %s", strerror(errno));
    if (c > 0) {
        if (waitpid(c, NULL, 0) != c) t_fail("waitpid: %s", strerror(errno));
        return;
    }
    if (fork() != 0) _exit(0);
    (void)fd;
    int pidfd = (int)syscall(SYS_pidfd_open, self, 0);
    if (pidfd < 0) _exit(1);
    struct pollfd pfd = {pidfd, POLLIN, 0};
    while (poll(&pfd, 1, -1) < 0 && errno == EINTR) {
    }
    _exit(0);
}

// Descriptors that a restart could not rebuild exactly: each must make a checkpoint fail.
// Strict mode allows read, write and exit only: this thread reads a pipe nobody writes to.
static void *strict_reader(void *arg) {
    int fd = *(int *)arg;
    char byte;
    syscall(SYS_prctl, PR_SET_SECCOMP, SECCOMP_MODE_STRICT, 0, 0, 0);
    syscall(SYS_read, fd, &byte, 1);
    syscall(SYS_exit, 0);
    return NULL;
}

static void hold(const char *kind, const char *dir) {
    int fd = -1;
    if (strcmp(kind, "netns") == 0) {
        fd = open("/proc/self/ns/net", O_RDONLY);
    } else if (strcmp(kind, "procfile") == 0) {
        char path[64]; // another process's (its own would be reopened through /proc/self)
        snprintf(path, sizeof path, "/proc/%d/status", (int)getppid());
        fd = open(path, O_RDONLY);
    } else if (strcmp(kind, "epoll_stale") == 0) {
        // An epoll instance that watches a file under a number closed since, while a dup keeps
        // the file open: a restored watch could only be on another number.
        int efd = eventfd(0, 0);
        fd = epoll_create1(0);
        struct epoll_event ev = {.events = EPOLLIN};
        if (efd < 0 || fd < 0 || epoll_ctl(fd, EPOLL_CTL_ADD, efd, &ev) != 0 || dup(efd) < 0)
            t_fail("epoll_stale: %s", strerror(errno));
        close(efd);
    } else if (strcmp(kind, "tcp_pending") == 0) { // a connection it has not accepted
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t len = sizeof a;
        fd = socket(AF_INET, SOCK_STREAM, 0);
        int client = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0 || client < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
            listen(fd, 4) != 0 || getsockname(fd, (struct sockaddr *)&a, &len) != 0 ||
            connect(client, (struct sockaddr *)&a, len) != 0)
            t_fail("tcp_pending: %s", strerror(errno));
    } else if (strcmp(kind, "inotify_queued") == 0) { // an event it has not read
        fd = inotify_init1(0);
        char made[4096];
        snprintf(made, sizeof made, "%s/made", dir);
        if (fd < 0 || inotify_add_watch(fd, dir, IN_CREATE) < 0 ||
            close(open(made, O_WRONLY | O_CREAT, 0644)) != 0)
            t_fail("inotify: %s", strerror(errno));
    } else if (strcmp(kind, "socketpair") == 0) { // to another process
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) t_fail("socketpair: %s", strerror(errno));
        child_holding(sv[1]);
        close(sv[1]);
        fd = sv[0];
    } else if (strcmp(kind, "ptmx") == 0) { // a pty master whose slave another process holds
        fd = posix_openpt(O_RDWR | O_NOCTTY);
        if (fd < 0 || grantpt(fd) != 0 || unlockpt(fd) != 0) t_fail("posix_openpt");
        int slave = open(ptsname(fd), O_RDWR | O_NOCTTY);
        if (slave < 0) t_fail("open pty slave: %s", strerror(errno));
        child_holding(slave);
        close(slave);
    } else if (strcmp(kind, "pts") == 0) { // a terminal that is not the controlling one
        int master = posix_openpt(O_RDWR | O_NOCTTY);
        if (master < 0 || grantpt(master) != 0 || unlockpt(master) != 0) t_fail("posix_openpt");
        fd = open(ptsname(master), O_RDWR | O_NOCTTY);
        child_holding(master);
        close(master);
    } else if (strcmp(kind, "aio") == 0) { // a Linux AIO context: a mapping "/[aio]"
        unsigned long ctx = 0;
        if (syscall(SYS_io_setup, 8, &ctx) != 0) t_fail("io_setup: %s", strerror(errno));
        fd = 0;
    } else if (strcmp(kind, "sysvshm") == 0) { // an attached SysV segment (removed: no leak)
        int id = shmget(IPC_PRIVATE, 64 * 1024, IPC_CREAT | 0600);
        void *at = id < 0 ? (void *)-1 : shmat(id, NULL, 0);
        if (at == (void *)-1) t_fail("shmget/shmat: %s", strerror(errno));
        memset(at, 0x5a, 4096);
        shmctl(id, IPC_RMID, NULL);
        fd = 0;
    } else if (strcmp(kind, "fifo_data") == 0) { // a named pipe with unread data in it
        char path[4096];
        t_path(path, sizeof path, dir, "fifo");
        if (mkfifo(path, 0600) != 0) t_fail("mkfifo: %s", strerror(errno));
        fd = open(path, O_RDWR);
        if (fd >= 0 && write(fd, "unread", 6) != 6) t_fail("write fifo: %s", strerror(errno));
    } else if (strcmp(kind, "memfd_big") == 0) { // a memfd beyond the size an image carries
        fd = memfd_create("ghost-too-big", MFD_CLOEXEC);
        if (fd >= 0 && ftruncate(fd, 3LL << 30) != 0) t_fail("ftruncate: %s", strerror(errno));
    } else if (strcmp(kind, "mqueue") == 0) { // a POSIX message queue (unlinked: no leak)
        char name[64];
        snprintf(name, sizeof name, "/ghost-victim-%d", (int)getpid());
        fd = mq_open(name, O_RDWR | O_CREAT | O_EXCL, 0600, NULL);
        if (fd >= 0) mq_unlink(name);
    } else if (strcmp(kind, "flock") == 0) { // an exclusive flock lock on DIR/lock (carried)
        char path[4096];
        t_path(path, sizeof path, dir, "lock");
        fd = open(path, O_RDWR | O_CREAT, 0600);
        if (fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) != 0) t_fail("flock: %s", strerror(errno));
    } else if (strcmp(kind, "seccomp_filter") == 0) { // a filter that allows everything
        struct sock_filter allow = BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
        struct sock_fprog prog = {1, &allow};
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
            prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0)
            t_fail("seccomp filter: %s", strerror(errno));
        fd = 0;
    } else if (strcmp(kind, "seccomp_strict") == 0) { // a thread in strict mode, reading a pipe
        static int ends[2];
        pthread_t t;
        if (pipe(ends) != 0 || pthread_create(&t, NULL, strict_reader, &ends[0]) != 0)
            t_fail("strict thread: %s", strerror(errno));
        fd = 0;
    } else if (strcmp(kind, "restorer_zone") == 0) { // memory where the restorer would run
        void *at = mmap((void *)0x200000000000ULL, 1 << 20, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
        if (at != (void *)0x200000000000ULL) t_fail("mmap: %s", strerror(errno));
        memset(at, 1, 4096);
        fd = 0;
    } else {
        t_usage("--dir DIR [--hold "
                "netns|procfile|epoll_stale|inotify_queued|socketpair|ptmx|pts|aio|sysvshm|"
                "fifo_data|memfd_big|mqueue|flock|seccomp_filter|seccomp_strict|restorer_zone]");
    }
    if (fd < 0) t_fail("hold %s: %s", kind, strerror(errno));
}

int main(int argc, char **argv) {
    t_init("ckpt_victim");
    static const char *const known[] = {"--dir", "--hold", "--maps", NULL};
    t_check_args(argc, argv, known, "--dir DIR [--hold KIND] [--maps N]");
    const char *dir = t_opt_str(argc, argv, "--dir", NULL);
    if (!dir) t_usage("--dir DIR [--hold KIND] [--maps N]");
    const char *held = t_opt_str(argc, argv, "--hold", NULL);
    if (held) hold(held, dir);
    // --maps N: N separate two-page mappings (every other one read-only, so that none merge),
    // which make an export spend its time walking regions rather than copying pages.
    const char *maps = t_opt_str(argc, argv, "--maps", NULL);
    for (long m = maps ? atol(maps) : 0; m > 0; m--) {
        char *p = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) t_fail("mmap: %s", strerror(errno));
        p[0] = 1;
        if ((m & 1) && mprotect(p, 8192, PROT_READ) != 0) t_fail("mprotect: %s", strerror(errno));
    }
    t_line("ckpt_victim started");

    uint64_t *small = malloc(SMALL);
    if (!small) t_fail("malloc");
    for (uint64_t i = 0; i < SMALL / 8; i++)
        small[i] = pat(i);
    uint64_t *big = NULL, big_words = 0;

    char beat[4096];
    t_path(beat, sizeof beat, dir, "beat");
    int fd = open(beat, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) t_fail("create %s: %s", beat, strerror(errno));

    for (uint64_t n = 0;; n++) {
        char text[32];
        int len = snprintf(text, sizeof text, "%020" PRIu64 "\n", n);
        ssize_t w;
        do
            w = pwrite(fd, text, (size_t)len, 0);
        while (w < 0 && errno == EINTR);
        if (w != len) t_fail("pwrite beat: %s", strerror(errno));

        uint64_t i = t_mix64(n) % (SMALL / 8);
        if (small[i] != pat(i)) t_fail("small buffer word %" PRIu64 " corrupted", i);
        if (big) {
            uint64_t j = t_mix64(n + 1) % big_words;
            if (big[j] != pat(j + 1000000)) t_fail("big buffer word %" PRIu64 " corrupted", j);
        }
        if (!big && exists(dir, "grow")) {
            char p[4096];
            t_path(p, sizeof p, dir, "grow");
            FILE *f = fopen(p, "r");
            unsigned long long mib = 0;
            if (!f || fscanf(f, "%llu", &mib) != 1 || mib == 0) {
                // Written non-atomically by someone: try again next round.
                if (f) fclose(f);
            } else {
                fclose(f);
                big_words = mib * 1024 * 1024 / 8;
                big = malloc(big_words * 8);
                if (!big) t_fail("malloc %llu MiB", mib);
                for (uint64_t k = 0; k < big_words; k++)
                    big[k] = pat(k + 1000000);
                t_line("grown by %llu MiB", mib);
                t_path(p, sizeof p, dir, "grown");
                int g = open(p, O_WRONLY | O_CREAT, 0644);
                if (g < 0) t_fail("create grown: %s", strerror(errno));
                close(g);
            }
        }
        if (exists(dir, "stop")) break;
        t_sleep_ns(5000000);
    }
    for (uint64_t i = 0; i < SMALL / 8; i++)
        if (small[i] != pat(i)) t_fail("small buffer word %" PRIu64 " corrupted", i);
    for (uint64_t k = 0; k < big_words; k++)
        if (big[k] != pat(k + 1000000)) t_fail("big buffer word %" PRIu64 " corrupted", k);
    close(fd);
    t_line("ckpt_victim stopped, memory ok");
    return t_pass();
}
