// SPDX-License-Identifier: Apache-2.0
#include "runtime/control.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

namespace ghost::control {

bool runtime_dir(char *out, size_t out_size, const char **why) {
    const char *env = getenv("GHOST_RUNTIME_DIR");
    const char *xdg = getenv("XDG_RUNTIME_DIR");
    int n;
    if (env && *env)
        n = snprintf(out, out_size, "%s", env);
    else if (xdg && *xdg)
        n = snprintf(out, out_size, "%s/ghost", xdg);
    else
        n = snprintf(out, out_size, "/tmp/ghost-%u", (unsigned)getuid());
    if (n < 0 || (size_t)n >= out_size) {
        *why = "runtime directory path too long";
        return false;
    }
    if (mkdir(out, 0700) != 0 && errno != EEXIST) {
        *why = "cannot create the runtime directory";
        return false;
    }
    struct stat st;
    if (lstat(out, &st) != 0 || !S_ISDIR(st.st_mode)) {
        *why = "the runtime directory is not a directory";
        return false;
    }
    // Sockets in it accept checkpoint requests: nobody else may own it or reach into it.
    if (st.st_uid != getuid() || (st.st_mode & 0077) != 0) {
        *why = "the runtime directory is owned by another user or open to others";
        return false;
    }
    return true;
}

namespace {

// <runtime dir `dir`>/hostproc
bool host_proc_name(const char *dir, char *out, size_t out_size) {
    int n = snprintf(out, out_size, "%s/hostproc", dir);
    return n >= 0 && (size_t)n < out_size;
}

// Whether this process is in a copy's namespaces: the host's /proc is mounted at `proc`.
bool in_copy_namespace(const char *dir, char *proc, size_t size) {
    constexpr long proc_magic = 0x9fa0;
    struct statfs fs;
    return host_proc_name(dir, proc, size) && statfs(proc, &fs) == 0 && fs.f_type == proc_magic;
}

// host_pid, the runtime directory `dir` known.
int host_pid_in(const char *dir, int pid) {
    char proc[4200];
    if (!in_copy_namespace(dir, proc, sizeof proc)) return pid;
    // That /proc's "thread-self" names this thread as "<host pid>/task/<host tid>". (A path
    // through the link itself did not resolve there: it is read instead.) The thread's own
    // directory, since threads may have descriptor tables of their own (the agent's manager).
    char path[4300], self[64];
    snprintf(path, sizeof path, "%s/thread-self", proc);
    ssize_t n = readlink(path, self, sizeof self - 1);
    if (n <= 0) return -1;
    self[n] = 0;
    if (pid == getpid()) return atoi(self);
    // A pidfd's fdinfo gives its pid in the namespace of the /proc it is read through.
    int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (pidfd < 0) return -1;
    char info[1024];
    snprintf(path, sizeof path, "%s/%s/fdinfo/%d", proc, self, pidfd);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t len = fd >= 0 ? read(fd, info, sizeof info - 1) : -1;
    if (fd >= 0) close(fd);
    close(pidfd);
    if (len <= 0) return -1;
    info[len] = 0;
    const char *at = strstr(info, "\nPid:");
    long host = at ? strtol(at + 6, nullptr, 10) : -1;
    return host > 0 && host < INT_MAX ? (int)host : -1;
}

} // namespace

bool host_proc_path(char *out, size_t out_size) {
    char dir[4096];
    const char *why = nullptr;
    return runtime_dir(dir, sizeof dir, &why) && host_proc_name(dir, out, out_size) &&
           (mkdir(out, 0700) == 0 || errno == EEXIST);
}

int host_pid(int pid) {
    char dir[4096];
    const char *why = nullptr;
    return runtime_dir(dir, sizeof dir, &why) ? host_pid_in(dir, pid) : pid;
}

bool socket_path(int pid, char *out, size_t out_size, const char **why) {
    char dir[4096];
    if (!runtime_dir(dir, sizeof dir, why)) return false;
    int host = host_pid_in(dir, pid);
    if (host <= 0) {
        *why = "cannot tell the pid the host knows the process by";
        return false;
    }
    int n = snprintf(out, out_size, "%s/%d.sock", dir, host);
    if (n < 0 || (size_t)n >= out_size || (size_t)n >= 108) { // sun_path
        *why = "control socket path too long";
        return false;
    }
    return true;
}

bool process_gone(int pid) {
    if (pid <= 0) return false;
    if (kill(pid, 0) != 0 && errno == ESRCH) return true;
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    char buf[512];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return false;
    buf[n] = 0;
    // "pid (comm) S ...": the command name may hold anything, ')' included.
    const char *paren = strrchr(buf, ')');
    return paren && paren[1] == ' ' && (paren[2] == 'Z' || paren[2] == 'X');
}

int probe_socket(int pid, bool remove_stale) {
    char path[128];
    const char *why = nullptr;
    if (!socket_path(pid, path, sizeof path, &why)) return -1;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    struct sockaddr_un addr = {};
    addr.sun_family = AF_UNIX;
    memcpy(addr.sun_path, path, strlen(path) + 1); // socket_path checked the size
    int state = -1;
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) == 0) {
        // A listener of another pid would be somebody else's socket at this name.
        struct ucred cred = {};
        socklen_t len = sizeof cred;
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 && cred.pid == pid) state = 1;
    } else if (errno == ECONNREFUSED && process_gone(pid)) {
        // Checked in this order: a process that takes the pid later binds a socket of its own.
        state = 0;
        if (remove_stale) unlink(path);
    }
    close(fd);
    return state;
}

int remove_stale_sockets() {
    char dir[4096];
    const char *why = nullptr;
    char proc[4200];
    if (!runtime_dir(dir, sizeof dir, &why)) return 0;
    // The names are the host's pids, which mean other processes (or none) in a copy's namespace.
    if (in_copy_namespace(dir, proc, sizeof proc)) return 0;
    DIR *d = opendir(dir);
    if (!d) return 0;
    int removed = 0;
    while (struct dirent *e = readdir(d)) {
        char *end = nullptr;
        long pid = strtol(e->d_name, &end, 10);
        if (pid > 0 && pid < INT_MAX && strcmp(end, ".sock") == 0)
            removed += probe_socket((int)pid, true) == 0;
    }
    closedir(d);
    return removed;
}

int receive_fds(int sock, int *fds, int max) {
    constexpr int most = 8;
    if (max > most) max = most;
    char byte;
    struct iovec iov = {&byte, 1};
    alignas(struct cmsghdr) char control[CMSG_SPACE(most * sizeof(int))] = {};
    struct msghdr msg = {};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE((size_t)max * sizeof(int));
    if (recvmsg(sock, &msg, MSG_CMSG_CLOEXEC) != 1) return -1;
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    if (!c || c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) return 0;
    int n = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
    if (n > max) n = max; // (the kernel drops what does not fit: MSG_CTRUNC)
    memcpy(fds, CMSG_DATA(c), (size_t)n * sizeof(int));
    return n;
}

long read_line(int fd, char *out, size_t out_size, int timeout_ms) {
    size_t len = 0;
    while (len + 1 < out_size) {
        struct pollfd p = {fd, POLLIN, 0};
        int r = poll(&p, 1, timeout_ms);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;
        char c;
        ssize_t got = read(fd, &c, 1);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) return -1;
        if (c == '\n') {
            out[len] = 0;
            return (long)len;
        }
        out[len++] = c;
    }
    return -1;
}

// Sockets are written with MSG_NOSIGNAL: a peer that has gone (a job that ended while `ghost
// checkpoint` asked it) is an error to report, not a SIGPIPE that kills the writer (or, in the
// agent, the program).
bool write_all(int fd, const char *buf, size_t len) {
    while (len) {
        ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
        if (n < 0 && errno == ENOTSOCK) n = write(fd, buf, len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return false;
        buf += n;
        len -= (size_t)n;
    }
    return true;
}

} // namespace ghost::control
