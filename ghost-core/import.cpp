// SPDX-License-Identifier: Apache-2.0
#include "ghost-core/import.h"
#include "ghost-core/image_trailer.h"

#include <fcntl.h>
#include <grp.h>
#include <linux/sched.h>
#include <pwd.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "runtime/control.h"
#include "runtime/uapi.h"

namespace ghost::core {

namespace {

// fork() that asks for a given pid first (clone3 set_tid: root or CAP_CHECKPOINT_RESTORE, pid
// free).
pid_t fork_with_pid(pid_t want) {
    if (want > 0) {
        uapi::clone_args args{};
        args.exit_signal = SIGCHLD;
        uint64_t tid = (uint64_t)want;
        args.set_tid = (uint64_t)&tid;
        args.set_tid_size = 1;
        long r = ::syscall(SYS_clone3, &args, sizeof args);
        if (r >= 0) return (pid_t)r;
    }
    return ::fork();
}

// "--owner-groups=UID:GID,GID...": the groups the group database gives the owner of the image
// file, when it is neither us nor root. The restorer checks the image's gids against them (it
// cannot ask NSS itself); without them, an image of another owner may record no group at all.
std::string owner_groups_arg(int image_fd) {
    struct stat sb;
    if (::fstat(image_fd, &sb) != 0 || sb.st_uid == ::geteuid() || sb.st_uid == 0) return {};
    passwd pw, *found = nullptr;
    std::vector<char> buf(1 << 16);
    if (::getpwuid_r(sb.st_uid, &pw, buf.data(), buf.size(), &found) != 0 || !found) return {};
    std::vector<gid_t> groups(64);
    int n = (int)groups.size();
    while (::getgrouplist(pw.pw_name, pw.pw_gid, groups.data(), &n) < 0) {
        if (n <= (int)groups.size() || n > 4096) return {}; // (the restorer takes 4096)
        groups.resize((size_t)n);
    }
    std::string arg = "--owner-groups=" + std::to_string(sb.st_uid);
    for (int i = 0; i < n; i++)
        arg += (i ? "," : ":") + std::to_string(groups[(size_t)i]);
    return arg;
}

} // namespace

result<std::vector<int>> open_sources(const std::string &image_path, const image_summary &head) {
    std::vector<int> fds;
    auto fail = [&](const std::string &why) -> result<std::vector<int>> {
        for (int fd : fds)
            ::close(fd);
        return error{why};
    };
    struct stat own;
    if (head.sources.empty()) return fds;
    if (::stat(image_path.c_str(), &own) != 0) return fail("cannot stat " + image_path);
    size_t slash = image_path.rfind('/');
    std::string dir = slash == std::string::npos ? "." : image_path.substr(0, slash);
    for (const auto &src : head.sources) {
        std::string name(src.name, strnlen(src.name, sizeof src.name));
        std::string path = dir + "/" + name;
        std::string who = "it takes pages from the older image " + path;
        int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0) return fail(who + ", which cannot be opened: " + std::strerror(errno));
        fds.push_back(fd);
        struct stat sb;
        if (::fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode) || sb.st_uid != own.st_uid)
            return fail(who + ", which is not a regular file of the image's owner");
        uint64_t size = 0, sum = 0;
        const char *why = "";
        if (!read_image_trailer(fd, &size, &sum, &why)) return fail(who + ": " + why);
        if (size != src.size || sum != src.hash_sum)
            return fail(who + ", which is not the image it was taken after (replaced or changed)");
    }
    return fds;
}

std::string sources_arg(const std::vector<int> &fds) {
    std::string arg;
    for (int fd : fds)
        arg += (arg.empty() ? "--sources=" : ",") + std::to_string(fd);
    return arg;
}

namespace {

// A tree's restorers, each on the one status socket: all say VERIFIED (or one ERR: every other
// is told NOGO and ends), then each "OK pid". A failure after the gate (rare: placing
// descriptors, credentials) kills those that already said OK; the others failed themselves.
// Whether a restorer of the tree ended without a word (it crashed): the root (our child) ended,
// or a descendant's pid has been missing for a while (it shows up at once, its parent forks it
// first thing).
bool restorer_vanished(pid_t root, const std::vector<pid_t> &pids, int &missing_checks) {
    siginfo_t info{};
    if (::waitid(P_PID, (id_t)root, &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info.si_pid == root)
        return true;
    bool missing = false;
    for (pid_t p : pids) {
        char path[64], state = 0;
        std::snprintf(path, sizeof path, "/proc/%d/stat", (int)p);
        if (FILE *f = std::fopen(path, "re")) {
            if (std::fscanf(f, "%*d (%*[^)]) %c", &state) != 1) state = 0;
            std::fclose(f);
        }
        missing |= state == 0 || state == 'Z' || state == 'X';
    }
    missing_checks = missing ? missing_checks + 1 : 0;
    return missing_checks >= 3;
}

// The parent of `pid` (0 if it is gone).
pid_t parent_of(pid_t pid) {
    char path[64];
    std::snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int ppid = 0;
    if (FILE *f = std::fopen(path, "re")) {
        if (std::fscanf(f, "%*d (%*[^)]) %*c %d", &ppid) != 1) ppid = 0;
        std::fclose(f);
    }
    return (pid_t)ppid;
}

// Ends every process of a tree whose restore failed: the root, then each descendant once it is
// ours (`ghost restart` is their subreaper while they restore: as their parents die they become
// our children, and a pid that is our child is one of them). A pid whose process's parent is not
// ours either (another process had that pid: the restore failed on it) is left alone at once;
// one whose parent is ours becomes ours when that parent ends (at most 3 s are given).
void end_tree(pid_t root, const std::vector<pid_t> &pids) {
    ::kill(root, SIGKILL);
    int ws;
    ::waitpid(root, &ws, 0);
    std::vector<pid_t> left = pids;
    for (int round = 0; round < 300 && !left.empty(); round++) {
        if (round) ::usleep(10000);
        std::vector<pid_t> still, ours = {root}, not_yet;
        for (pid_t p : left) {
            pid_t r = ::waitpid(p, &ws, WNOHANG);
            if (r == p) { // reaped
                ours.push_back(p);
                continue;
            }
            if (r == 0) { // ours, alive
                ::kill(p, SIGKILL);
                ours.push_back(p);
                still.push_back(p);
                continue;
            }
            not_yet.push_back(p);
        }
        for (pid_t p : not_yet) // a child of one of ours still, or another process's
            if (pid_t parent = parent_of(p);
                parent && std::find(ours.begin(), ours.end(), parent) != ours.end())
                still.push_back(p);
        left = std::move(still);
    }
    while (::waitpid(-1, &ws, WNOHANG) > 0) { // their zombie children, orphaned to us
    }
    ::prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0);
}

result<pid_t> await_tree(int status, pid_t root, int processes, const std::vector<pid_t> &pids) {
    char line[600];
    constexpr int line_timeout_ms = 60000; // (once a line has started: written at once)
    int missing_checks = 0;
    // The next line; -2 when a restorer vanished without one.
    auto next_line = [&]() -> long {
        for (;;) {
            pollfd p{status, POLLIN, 0};
            int r = ::poll(&p, 1, 1000);
            if (r > 0) return control::read_line(status, line, sizeof line, line_timeout_ms);
            if (r < 0 && errno != EINTR) return -1;
            if (restorer_vanished(root, pids, missing_checks)) return -2;
        }
    };
    auto refuse_all = [&](const std::string &why) -> result<pid_t> {
        std::string nogo((size_t)processes, 'N');
        (void)control::write_all(status, nogo.data(), nogo.size());
        ::close(status);
        end_tree(root, pids);
        return error{why};
    };
    for (int verified = 0; verified < processes;) {
        long n = next_line();
        if (n >= 8 && std::strncmp(line, "VERIFIED", 8) == 0) {
            verified++;
            continue;
        }
        if (n > 4 && std::strncmp(line, "ERR ", 4) == 0) return refuse_all(line + 4);
        return refuse_all(n == -2 ? "a restorer of the tree died"
                          : n < 0 ? "a restorer of the tree did not answer"
                                  : "a restorer of the tree ended without a reason");
    }
    std::string go((size_t)processes, 'G');
    if (!control::write_all(status, go.data(), go.size()))
        return refuse_all("cannot tell the tree's restorers to go on");
    std::string why;
    for (int done = 0; done < processes && why.empty(); done++) {
        long n = next_line();
        if (n > 3 && std::strncmp(line, "OK ", 3) == 0) continue;
        why = n > 4 && std::strncmp(line, "ERR ", 4) == 0 ? line + 4
              : n == -2                                   ? "a restorer of the tree died"
                        : "a restorer of the tree ended without a reason";
    }
    if (!why.empty()) {
        ::close(status);
        end_tree(root, pids);
        return error{why};
    }
    ::prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0); // (the tree's later orphans are not ours)
    std::string run((size_t)processes, 'R');     // every process restored: all of them run
    (void)control::write_all(status, run.data(), run.size());
    ::close(status);
    return root;
}

} // namespace

result<pid_t> import_process(int image_fd, const import_options &opt) {
    bool tree = !opt.tree_args.empty();
    // A tree's restorers become ours as their parents die, so that a failed restore is ended
    // whole and reaped here (end_tree), leaving no orphan to init.
    if (tree) ::prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    int status[2];
    if (tree ? ::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, status) != 0
             : ::pipe2(status, O_CLOEXEC) != 0)
        return sys_error("cannot create a pipe");
    std::string image_arg = std::to_string(image_fd), status_arg = std::to_string(status[1]);
    std::string owner_arg = owner_groups_arg(image_fd);
    std::vector<const char *> argv = {"ghost-restart", image_arg.c_str(), status_arg.c_str()};
    if (opt.inherit_stdio) argv.push_back("--inherit-stdio");
    if (!owner_arg.empty()) argv.push_back(owner_arg.c_str());
    std::string sources = sources_arg(opt.source_fds);
    if (!sources.empty()) argv.push_back(sources.c_str());
    if (tree) argv.push_back("--gate");
    for (const auto &t : opt.tree_args)
        argv.push_back(t.c_str());
    argv.push_back(nullptr);
    const char *envp[] = {nullptr};
    pid_t child = fork_with_pid(opt.want_pid);
    if (child < 0) {
        int e = errno;
        ::close(status[0]);
        ::close(status[1]);
        return sys_error("cannot start the restorer", e);
    }
    if (child == 0) {
        // Only async-signal-safe calls here: the parent may have threads.
        ::fcntl(image_fd, F_SETFD, 0);
        ::fcntl(status[1], F_SETFD, 0);
        for (int fd : opt.source_fds)
            ::fcntl(fd, F_SETFD, 0);
        for (int fd : opt.tree_fds)
            ::fcntl(fd, F_SETFD, 0);
        sigset_t none;
        sigemptyset(&none);
        ::sigprocmask(SIG_SETMASK, &none, nullptr);
        ::execve(opt.restorer.c_str(), (char *const *)argv.data(), (char *const *)envp);
        char msg[] = "ERR cannot run the restorer\n";
        (void)!::write(status[1], msg, sizeof msg - 1);
        ::_exit(127);
    }
    ::close(status[1]);
    if (tree) return await_tree(status[0], child, opt.processes, opt.tree_pids);
    char line[600];
    long n = control::read_line(status[0], line, sizeof line, -1);
    ::close(status[0]);
    if (n >= 3 && std::strncmp(line, "OK ", 3) == 0) return child;
    // Failed: make sure nothing half-restored survives, then report the restorer's reason.
    ::kill(child, SIGKILL);
    int ws;
    ::waitpid(child, &ws, 0);
    if (n > 4 && std::strncmp(line, "ERR ", 4) == 0) return error{line + 4};
    if (WIFSIGNALED(ws))
        return error{std::string("the restorer died of signal ") + strsignal(WTERMSIG(ws))};
    return error{"the restorer failed without a reason"};
}

} // namespace ghost::core
