// SPDX-License-Identifier: Apache-2.0
#include "ghost-core/park_client.h"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>

#include "ghost-core/agent/agent_state.h"
#include "runtime/control.h"

namespace ghost::core {

namespace {

// A connection to the agent of `pid`, checked to be that process's and of our user.
result<int> connect_agent(pid_t pid) {
    std::string who = "pid " + std::to_string(pid);
    if (pid <= 0) return error{"invalid pid " + std::to_string(pid)};
    if (::kill(pid, 0) != 0 && errno == ESRCH) return error{"no process with " + who};
    struct stat sb {};
    bool foreign = ::stat(("/proc/" + std::to_string(pid)).c_str(), &sb) == 0 &&
                   sb.st_uid != ::getuid(); // (root may go on: its agent's socket decides)
    if (foreign && ::getuid() != 0) return error{who + " belongs to another user"};
    char path[128];
    const char *why = nullptr;
    if (!control::socket_path(pid, path, sizeof path, &why)) return error{why};
    // Non-blocking: a connect to an agent whose backlog is full (it stopped accepting) would
    // wait for ever; it is tried again for 5 s instead.
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) return sys_error("cannot create a socket");
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path, std::strlen(path) + 1); // socket_path checked the size
    for (int waited_ms = 0;; waited_ms += 10) {
        if (::connect(fd, (sockaddr *)&addr, sizeof addr) == 0) break;
        int e = errno;
        if (e == EAGAIN && waited_ms < 5000) {
            ::usleep(10000);
            continue;
        }
        ::close(fd);
        if ((e == ENOENT || e == ECONNREFUSED) && foreign)
            return error{who + " belongs to user " + std::to_string(sb.st_uid) +
                             ", whose agent listens in that user's runtime directory: run ghost "
                             "as that user",
                         e};
        if (e == ENOENT || e == ECONNREFUSED)
            return error{who + " is not running under ghost (no control socket)", e};
        if (e == EAGAIN)
            return error{"the ghost agent of " + who + " accepts no connection (for 5 s)", e};
        return sys_error("cannot connect to the ghost agent of " + who, e);
    }
    ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    // The socket file could be a stale one re-bound by somebody else: check who answers.
    ucred cred{};
    socklen_t len = sizeof cred;
    if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || cred.pid != pid) {
        ::close(fd);
        return error{who + " is not running under ghost (its socket belongs to another process)"};
    }
    if (cred.uid != ::getuid() && ::getuid() != 0) {
        ::close(fd);
        return error{who + " belongs to another user"};
    }
    return fd;
}

// One answer line of the agent, byte by byte, and the descriptor attached to it (-1 if none).
void read_line_with_fd(int fd, char *line, size_t size, int timeout_ms, int &passed) {
    size_t len = 0;
    alignas(struct cmsghdr) char control[CMSG_SPACE(3 * sizeof(int))] = {};
    while (len + 1 < size) {
        struct pollfd p = {fd, POLLIN, 0};
        if (::poll(&p, 1, timeout_ms) != 1) break;
        char ch;
        struct iovec iov = {&ch, 1};
        struct msghdr msg = {};
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control;
        msg.msg_controllen = sizeof control;
        ssize_t got = ::recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) break;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
            if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS &&
                c->cmsg_len >= CMSG_LEN(sizeof(int))) {
                int got_fd;
                std::memcpy(&got_fd, CMSG_DATA(c), sizeof got_fd);
                if (passed < 0)
                    passed = got_fd;
                else
                    ::close(got_fd);
            }
        if (ch == '\n') break;
        line[len++] = ch;
    }
    line[len] = 0;
}

// The agent asks (UNBLOCK TID, agent.cpp ask_unblock) for a thread that blocks the park signal:
// stopped under ptrace, if the signal is still pending on it (it has not taken it), bit 63 is
// taken out of its mask and the mask it had is told ("MASK TID HEX"); once the agent has it
// ("GO") the thread goes on and takes the signal. Otherwise "NOMASK TID" (it cannot be traced:
// another tracer, no permission): the park waits for the thread as it would have.
void unblock_thread(int conn, pid_t pid, pid_t tid) {
    constexpr uint64_t park_bit = 1ULL << (63 - 1);
    std::string nomask = "NOMASK " + std::to_string(tid) + "\n";
    if (::ptrace(PTRACE_SEIZE, tid, 0, 0) != 0) {
        control::write_all(conn, nomask.data(), nomask.size());
        return;
    }
    int pass_on = 0; // a signal stopped on its way to the thread goes on with it
    bool stopped = ::ptrace(PTRACE_INTERRUPT, tid, 0, 0) == 0;
    while (stopped) {
        int status = 0;
        if (::waitpid(tid, &status, __WALL) != tid || !WIFSTOPPED(status)) {
            stopped = false; // gone
            break;
        }
        if (status >> 16 == PTRACE_EVENT_STOP) break;
        pass_on = WSTOPSIG(status); // a signal-delivery stop came first: we are stopped too
        break;
    }
    std::string answer = nomask;
    bool told = false;
    if (stopped) {
        uint64_t mask = 0, pending = 0;
        std::FILE *f = std::fopen(
            ("/proc/" + std::to_string(pid) + "/task/" + std::to_string(tid) + "/status").c_str(),
            "re");
        char line[256];
        while (f && std::fgets(line, sizeof line, f))
            if (std::strncmp(line, "SigPnd:", 7) == 0)
                pending = std::strtoull(line + 7, nullptr, 16);
        if (f) std::fclose(f);
        if ((pending & park_bit) && ::ptrace(PTRACE_GETSIGMASK, tid, sizeof mask, &mask) == 0 &&
            (mask & park_bit)) {
            uint64_t open = mask & ~park_bit;
            if (::ptrace(PTRACE_SETSIGMASK, tid, sizeof open, &open) == 0) {
                char hex[32];
                std::snprintf(hex, sizeof hex, "%llx", (unsigned long long)mask);
                answer = "MASK " + std::to_string(tid) + " " + hex + "\n";
                told = true;
            }
        }
    }
    control::write_all(conn, answer.data(), answer.size());
    if (told) { // the thread stays stopped until the agent has the mask
        char go[16];
        control::read_line(conn, go, sizeof go, 10000);
    }
    if (stopped) ::ptrace(PTRACE_DETACH, tid, 0, pass_on);
}

} // namespace

result<parked_process> parked_process::park(pid_t pid, int timeout_ms) {
    std::string who = "pid " + std::to_string(pid);
    auto conn = connect_agent(pid);
    if (!conn) return conn.err();
    int fd = *conn;
    if (!control::write_all(fd, "PARK UNBLOCK\n", 13)) {
        ::close(fd);
        return sys_error("cannot talk to the ghost agent of " + who);
    }
    char line[256];
    for (;;) {
        if (control::read_line(fd, line, sizeof line, timeout_ms) < 0) {
            ::close(fd);
            return error{"the ghost agent of " + who + " did not answer"};
        }
        if (std::strncmp(line, "UNBLOCK ", 8) != 0) break;
        unblock_thread(fd, pid, (pid_t)std::atoi(line + 8));
    }
    unsigned long state = 0;
    unsigned threads = 0;
    if (std::strncmp(line, "ERROR ", 6) == 0) {
        ::close(fd);
        return error{"cannot park " + who + ": " + (line + 6)};
    }
    if (std::sscanf(line, "PARKED %lx %u", &state, &threads) != 2) {
        ::close(fd);
        return error{"unexpected answer from the ghost agent of " + who + ": " + line};
    }
    return parked_process(pid, fd, state, threads);
}

result<parked_process> parked_process::attach_running(pid_t pid, int timeout_ms) {
    std::string who = "pid " + std::to_string(pid);
    auto conn = connect_agent(pid);
    if (!conn) return conn.err();
    int fd = *conn;
    char line[256];
    unsigned long state = 0;
    unsigned threads = 0;
    if (!control::write_all(fd, "TRACK\n", 6) ||
        control::read_line(fd, line, sizeof line, timeout_ms) < 0 ||
        std::sscanf(line, "TRACKING %lx %u", &state, &threads) != 2) {
        ::close(fd);
        return error{"the ghost agent of " + who + " does not give its write tracking"};
    }
    return parked_process(pid, fd, state, threads, false);
}

result<int> parked_process::tracking_fd() const {
    if (!control::write_all(conn_, "TRACKFD\n", 8))
        return sys_error("cannot talk to the ghost agent of pid " + std::to_string(pid_));
    char line[320];
    int fd = -1;
    read_line_with_fd(conn_, line, sizeof line, 10000, fd);
    if (std::strcmp(line, "TRACKFD") == 0 && fd >= 0) return fd;
    if (fd >= 0) ::close(fd);
    if (std::strncmp(line, "ERROR ", 6) == 0) return error{line + 6};
    return error{"the ghost agent of pid " + std::to_string(pid_) + " has no write tracking"};
}

namespace {

// Sends `fds` with one byte.
bool send_fds(int sock, const int *fds, size_t count) {
    char byte = 0;
    struct iovec iov = {&byte, 1};
    alignas(struct cmsghdr) char control[CMSG_SPACE(4 * sizeof(int))] = {};
    struct msghdr msg = {};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(count * sizeof(int));
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(count * sizeof(int));
    std::memcpy(CMSG_DATA(c), fds, count * sizeof(int));
    return ::sendmsg(sock, &msg, MSG_NOSIGNAL) == 1;
}

// The init of a copy's pid namespace (pid 1 there: when it ends, the kernel kills everything in
// the namespace). Once the command has its answer (or is gone: `ctl` ends either way), the copy
// is the process of pid `original` in this namespace, or there is none; the init follows it,
// reaps the orphans the namespace hands it meanwhile, and ends once the copy and every process
// left after it have ended. Raw system calls only: it is a fork of the command.
[[noreturn]] void copy_namespace_init(int ctl, pid_t original) {
    if (ctl > 0) ::syscall(SYS_close_range, 0, ctl - 1, 0);
    ::syscall(SYS_close_range, ctl + 1, ~0U, 0);
    ::setsid(); // out of the terminal's process group: ^C to the command does not end the copy
    if (::chdir("/") != 0) ::_exit(1);
    ::prctl(PR_SET_NAME, "ghost-copy-ns", 0, 0, 0);
    sigset_t all, child;
    sigfillset(&all);
    ::sigprocmask(SIG_SETMASK, &all, nullptr);
    sigemptyset(&child);
    sigaddset(&child, SIGCHLD);
    int children = ::signalfd(-1, &child, SFD_CLOEXEC | SFD_NONBLOCK);
    for (char byte;;) {
        ssize_t got = ::read(ctl, &byte, 1);
        if (got == 0 || (got < 0 && errno != EINTR)) break;
    }
    ::close(ctl);
    int copy = (int)::syscall(SYS_pidfd_open, original, 0);
    auto reap = [](int flags) {
        siginfo_t info;
        for (;;) {
            std::memset(&info, 0, sizeof info);
            long r = ::waitid(P_ALL, 0, &info, WEXITED | __WALL | flags);
            if (r < 0 && errno == EINTR) continue;
            if (r < 0 || info.si_pid == 0) return;
        }
    };
    while (copy >= 0) {
        struct pollfd p[2] = {{copy, POLLIN, 0}, {children, POLLIN, 0}};
        if (::poll(p, 2, -1) < 0 && errno != EINTR) break;
        if (p[1].revents) {
            struct signalfd_siginfo si;
            while (::read(children, &si, sizeof si) > 0) {
            }
            reap(WNOHANG);
        }
        if (p[0].revents) break;
    }
    reap(0); // the copy's descendants come to this process as they are orphaned
    ::_exit(0);
}

// A pid namespace for a copy that keeps the original's ids (fast_duplicate.h): its init, a
// connection to it, and the namespace as a descriptor to hand to the agent. Root only: without it
// the copy gets new ids.
struct copy_namespace {
    pid_t init = -1;
    int ctl = -1, ns = -1;

    copy_namespace(bool wanted, pid_t original) {
        if (!wanted || ::geteuid() != 0) return;
        int pair[2];
        if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) return;
        long child = ::syscall(SYS_clone, CLONE_NEWPID | SIGCHLD, nullptr, nullptr, nullptr, 0);
        if (child == 0) {
            ::close(pair[0]);
            copy_namespace_init(pair[1], original);
        }
        ::close(pair[1]);
        if (child < 0) {
            ::close(pair[0]);
            return;
        }
        init = (pid_t)child;
        ctl = pair[0];
        ns = ::open(("/proc/" + std::to_string(init) + "/ns/pid").c_str(), O_RDONLY | O_CLOEXEC);
    }
    // The command has its answer: with `copy_made` the init follows the copy from now on.
    // Otherwise it ends, and with it whatever the namespace holds: a copy an agent made after
    // the command stopped waiting, which nobody was told of.
    void release(bool copy_made = false) {
        if (ns >= 0) ::close(ns);
        if (ctl >= 0) ::close(ctl);
        if (!copy_made && init > 0) {
            ::kill(init, SIGKILL);
            ::waitpid(init, nullptr, 0);
        }
        ns = ctl = init = -1;
    }
    ~copy_namespace() { release(); }
};

} // namespace

result<fast_duplicate> request_fast_duplicate(pid_t pid, bool keep_ids, int timeout_ms) {
    std::string who = "pid " + std::to_string(pid);
    auto conn = connect_agent(pid);
    if (!conn) return conn.err();
    int fd = *conn;
    copy_namespace ns(keep_ids, pid);
    // The request line, then our fds 0-2 (the copy's standard streams) and the copy's pid
    // namespace, when there is one, in a message of one byte.
    const int fds[4] = {0, 1, 2, ns.ns};
    if (!control::write_all(fd, "DUPLICATE\n", 10) || !send_fds(fd, fds, ns.ns >= 0 ? 4 : 3)) {
        ::close(fd);
        return sys_error("cannot talk to the ghost agent of " + who);
    }
    // The answer line, with the copy's pidfd attached to it.
    char line[320];
    int pidfd = -1;
    read_line_with_fd(fd, line, sizeof line, timeout_ms, pidfd);
    ::close(fd);
    fast_duplicate r;
    unsigned long long park_us = 0, fork_us = 0;
    int copy = 0, kept = 0;
    if (std::strncmp(line, "FALLBACK ", 9) == 0) {
        r.fallback = line + 9;
    } else if (std::strncmp(line, "ERROR ", 6) == 0) {
        if (pidfd >= 0) ::close(pidfd);
        if (std::strcmp(line + 6, "unknown request") == 0) { // an agent older than this
            r.fallback = "the agent has no fast duplicate";
            return r;
        }
        return error{"cannot park " + who + ": " + (line + 6)};
    } else if (std::sscanf(line, "DUPLICATED %d %llu %llu %d", &copy, &park_us, &fork_us, &kept) >=
                   3 &&
               copy > 0 && pidfd >= 0) {
        if (kept) ns.release(true);
        r.copy = copy;
        r.kept_ids = kept != 0;
        r.pidfd = pidfd;
        r.park_s = (double)park_us / 1e6;
        r.fork_s = (double)fork_us / 1e6;
        return r;
    } else {
        if (pidfd >= 0) ::close(pidfd);
        if (!line[0]) return error{"the ghost agent of " + who + " did not answer"};
        return error{"unexpected answer from the ghost agent of " + who + ": " + line};
    }
    if (pidfd >= 0) ::close(pidfd);
    return r;
}

parked_process::parked_process(parked_process &&other) noexcept
    : pid_(other.pid_), conn_(other.conn_), state_(other.state_), threads_(other.threads_),
      parked_(other.parked_) {
    other.conn_ = -1;
}

parked_process::~parked_process() {
    if (conn_ >= 0) (void)resume();
}

result<void> parked_process::resume() {
    if (conn_ < 0) return {};
    int fd = conn_;
    conn_ = -1;
    if (!parked_) { // (attach_running: it never stopped)
        ::close(fd);
        return {};
    }
    bool sent = control::write_all(fd, "RESUME\n", 7);
    char line[64];
    bool answered = sent && control::read_line(fd, line, sizeof line, 10000) >= 0;
    ::close(fd);
    // The agent answers once the threads run again: a process that ends at once (a `sleep`
    // whose time ran out during the park) may be gone before it could. It did resume.
    if (!answered && !control::process_gone(pid_))
        return error{"pid " + std::to_string(pid_) + " did not confirm its resumption"};
    return {};
}

void parked_process::kill_now() {
    ::kill(pid_, SIGKILL);
    if (conn_ >= 0) ::close(conn_);
    conn_ = -1;
}

bool wait_agent_ready(pid_t pid, int timeout_ms) {
    // (A real deadline: each try may itself wait, for a connection or an answer.)
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    while (std::chrono::steady_clock::now() <= deadline) {
        if (::kill(pid, 0) != 0 && errno == ESRCH) return false;
        // A zombie (it ended right after its restore) never answers either.
        siginfo_t info{};
        if (::waitid(P_PID, (id_t)pid, &info, WEXITED | WNOHANG | WNOWAIT) == 0 &&
            info.si_pid == pid)
            return false;
        if (auto fd = connect_agent(pid)) {
            char line[64];
            bool ok = control::write_all(*fd, "PING\n", 5) &&
                      control::read_line(*fd, line, sizeof line, 2000) >= 0 &&
                      std::strncmp(line, "PONG ", 5) == 0;
            ::close(*fd);
            if (ok) return true;
        }
        ::usleep(5000);
    }
    return false;
}

result<std::unique_ptr<agent::state>> read_agent_state(const parked_process &p) {
    // (Not zeroed either: a fresh 1.5 MB costs a page fault per page touched, 4 ms here.)
    std::unique_ptr<agent::state> st(new agent::state);
    auto *local = reinterpret_cast<char *>(st.get());
    uint64_t remote = p.state_address();
    const size_t slots = offsetof(agent::state, threads),
                 tail = offsetof(agent::state, excluded_region_count);
    auto read = [&](size_t from, size_t len) {
        iovec l{local + from, len}, r{(void *)(remote + from), len};
        return ::process_vm_readv(p.pid(), &l, 1, &r, 1, 0) == (ssize_t)len;
    };
    if (!read(0, slots))
        return sys_error("cannot read the ghost agent's state of pid " + std::to_string(p.pid()));
    if (st->magic != agent::state_magic || st->version != agent::state_version)
        return error{"pid " + std::to_string(p.pid()) + " runs a ghost agent of another version"};
    size_t used =
        std::min<uint32_t>(st->thread_count, agent::max_threads) * sizeof(agent::thread_slot);
    iovec l[2] = {{local + slots, used}, {local + tail, sizeof(agent::state) - tail}};
    iovec r[2] = {{(void *)(remote + slots), used},
                  {(void *)(remote + tail), sizeof(agent::state) - tail}};
    if (::process_vm_readv(p.pid(), l, 2, r, 2, 0) != (ssize_t)(used + sizeof(agent::state) - tail))
        return sys_error("cannot read the ghost agent's state of pid " + std::to_string(p.pid()));
    return st;
}

} // namespace ghost::core
