// SPDX-License-Identifier: Apache-2.0
#include "launcher/commands.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>

#include "ghost-core/elf_build_id.h"
#include "ghost-core/export.h"
#include "ghost-core/image_reader.h"
#include "ghost-core/import.h"
#include "ghost-core/park_client.h"
#include "ghost-core/proc_reader.h"
#include "launcher/install_paths.h"
#include "resources/fs/atomic_file.h"
#include "resources/fs/fs_resource.h"
#include "resources/mem/mem_resource.h"
#include "runtime/control.h"

extern char **environ;

namespace ghost::launcher {

namespace {

using clock_type = std::chrono::steady_clock;

double since(clock_type::time_point t) {
    return std::chrono::duration<double>(clock_type::now() - t).count();
}

std::string absolute(const std::string &path) {
    if (!path.empty() && path[0] == '/') return path;
    char cwd[4096];
    if (!::getcwd(cwd, sizeof cwd)) return path;
    return std::string(cwd) + "/" + path;
}

// Written to a file nobody else can name or redirect, then renamed over `file` (a symlink planted
// there is replaced, not written through). The process already runs: a failure is only reported.
void write_pid_file(const std::string &file, pid_t pid) {
    if (file.empty()) return;
    if (auto r = res::replace_file(file, std::to_string(pid) + "\n"); !r)
        std::fprintf(stderr, "ghost: cannot write pid file %s: %s\n", file.c_str(),
                     r.err().message.c_str());
}

pid_t g_child = -1;

void forward_signal(int sig) {
    if (g_child > 0) ::kill(g_child, sig);
}

// Waits for our child, passing on the signals a terminal or a batch system sends; returns the
// child's status the way a shell reports it.
int wait_child(pid_t child) {
    g_child = child;
    struct sigaction sa {};
    sa.sa_handler = forward_signal;
    sa.sa_flags = SA_RESTART;
    for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2})
        ::sigaction(sig, &sa, nullptr);
    int ws = 0;
    while (::waitpid(child, &ws, 0) < 0)
        if (errno != EINTR)
            return fail(std::string("cannot wait for pid ") + std::to_string(child));
    if (WIFEXITED(ws)) return WEXITSTATUS(ws);
    if (WIFSIGNALED(ws)) return 128 + WTERMSIG(ws);
    return 1;
}

// The image file named by a command-line argument: a directory holds image.ghost.
std::string image_path(const std::string &arg) {
    struct stat sb;
    if (::stat(arg.c_str(), &sb) == 0 && S_ISDIR(sb.st_mode)) return arg + "/image.ghost";
    return arg;
}

// GHOST_CKPT_DIR from the process's environment (set by `ghost launch`), else ./ghost-ckpt.
std::string default_ckpt_dir(pid_t pid) {
    std::string env;
    std::ifstream in("/proc/" + std::to_string(pid) + "/environ", std::ios::binary);
    while (std::getline(in, env, '\0'))
        if (env.rfind("GHOST_CKPT_DIR=", 0) == 0) return env.substr(15);
    return absolute("ghost-ckpt");
}

std::string seconds(double s) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.3f", s);
    return buf;
}

// Pipes and sockets above stderr that the launching shell or batch system leaked into us: a plain
// process could never be restarted with them (their other end is another process), so the program
// does not get them. Files, directories and devices stay.
void close_inherited_channels() {
    DIR *d = ::opendir("/proc/self/fd");
    if (!d) return;
    std::vector<int> doomed;
    while (dirent *e = ::readdir(d)) {
        int fd = std::atoi(e->d_name);
        struct stat sb;
        if (fd > 2 && fd != ::dirfd(d) && ::fstat(fd, &sb) == 0 &&
            (S_ISFIFO(sb.st_mode) || S_ISSOCK(sb.st_mode)))
            doomed.push_back(fd);
    }
    ::closedir(d);
    for (int fd : doomed)
        ::close(fd);
}

} // namespace

int fail(const std::string &message) {
    std::fprintf(stderr, "ghost: %s\n", message.c_str());
    return 1;
}

int cmd_launch(const launch_args &a) {
    auto agent = agent_library();
    if (!agent) return fail(agent.err().message);
    std::string dir = absolute(a.ckpt_dir);
    std::string preload = *agent;
    control::remove_stale_sockets(); // of processes killed since (their sockets outlive them)
    if (const char *old = std::getenv("LD_PRELOAD"); old && *old) preload += std::string(":") + old;
    pid_t child = ::fork();
    if (child < 0) return fail(std::string("cannot fork: ") + std::strerror(errno));
    if (child == 0) {
        if (!a.keep_fds) close_inherited_channels();
        ::setenv("LD_PRELOAD", preload.c_str(), 1);
        ::setenv("GHOST_CKPT_DIR", dir.c_str(), 1);
        ::setenv("GHOST_BIN", self_path().c_str(), 1);
        ::setenv("GHOST_CKPT_SIGNAL", std::to_string(a.ckpt_signal).c_str(), 1);
        std::vector<char *> argv;
        for (const std::string &s : a.command)
            argv.push_back(const_cast<char *>(s.c_str()));
        argv.push_back(nullptr);
        ::execvp(argv[0], argv.data());
        std::fprintf(stderr, "ghost: cannot run %s: %s\n", argv[0], std::strerror(errno));
        ::_exit(127);
    }
    write_pid_file(a.pid_file, child);
    return wait_child(child);
}

int cmd_checkpoint(const checkpoint_args &a) {
    auto t0 = clock_type::now();
    if (a.pid <= 0) return fail("invalid pid " + std::to_string(a.pid));
    std::string dir = a.dir.empty() ? default_ckpt_dir(a.pid) : absolute(a.dir);
    std::string path = a.image.empty() ? dir + "/image.ghost" : absolute(a.image);
    auto proc = core::parked_process::park(a.pid);
    if (!proc) return fail(proc.err().message);
    double park_s = since(t0);
    auto sink = res::create_file_sink(path);
    if (!sink) return fail(sink.err().message);
    auto t1 = clock_type::now();
    auto stats = core::export_process(*proc, **sink);
    if (!stats) {
        (*sink)->abort();
        return fail("checkpoint of pid " + std::to_string(a.pid) +
                    " failed: " + stats.err().message);
    }
    double export_s = since(t1);
    auto t2 = clock_type::now();
    if (auto c = (*sink)->commit(); !c) {
        (*sink)->abort();
        return fail("checkpoint of pid " + std::to_string(a.pid) + " failed: " + c.err().message);
    }
    double sync_s = since(t2);
    if (a.kill) {
        proc->kill_now();
    } else if (auto r = proc->resume(); !r) {
        return fail(r.err().message);
    }
    std::printf("checkpoint pid=%d image=%s bytes=%llu memory_bytes=%llu threads=%llu park_s=%s "
                "export_s=%s sync_s=%s total_s=%s%s\n",
                (int)a.pid, path.c_str(), (unsigned long long)stats->image_bytes,
                (unsigned long long)stats->memory_bytes, (unsigned long long)stats->threads,
                seconds(park_s).c_str(), seconds(export_s).c_str(), seconds(sync_s).c_str(),
                seconds(since(t0)).c_str(), a.kill ? " killed=1" : "");
    return 0;
}

int cmd_restart(const restart_args &a) {
    auto t0 = clock_type::now();
    auto restorer_path = restorer();
    if (!restorer_path) return fail(restorer_path.err().message);
    control::remove_stale_sockets(); // e.g. that of the checkpointed process, if it was killed
    std::string path = image_path(a.image);
    auto src = res::open_file_source(path);
    if (!src) return fail(src.err().message);
    auto head = core::read_image(**src, true);
    if (!head) return fail("cannot restart from " + path + ": " + head.err().message);
    if (auto c = core::check_compatible(head->header); !c)
        return fail("cannot restart from " + path + ": " + c.err().message);
    int fd = (*src)->stream_fd();
    ::lseek(fd, 0, SEEK_SET);
    core::import_options opt;
    opt.restorer = *restorer_path;
    opt.want_pid = a.new_pid ? 0 : head->header.pid;
    auto pid = core::import_process(fd, opt);
    if (!pid) return fail("cannot restart from " + path + ": " + pid.err().message);
    src->reset();
    std::fprintf(stderr, "ghost: restored pid=%d import_s=%s\n", (int)*pid,
                 seconds(since(t0)).c_str());
    write_pid_file(a.pid_file, *pid);
    return wait_child(*pid);
}

int cmd_restart_rank(const std::string &dir) {
    const char *rank = nullptr;
    for (const char *v : {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK"})
        if ((rank = std::getenv(v)) && *rank) break;
    if (!rank || !*rank)
        return fail("restart-rank runs as an MPI rank under mpirun (no OMPI_COMM_WORLD_RANK, "
                    "PMIX_RANK or PMI_RANK in the environment)");
    char *end = nullptr;
    long r = std::strtol(rank, &end, 10);
    if (*end || r < 0) return fail(std::string("bad MPI rank '") + rank + "'");
    auto restorer_path = restorer();
    if (!restorer_path) return fail(restorer_path.err().message);
    std::string path = dir + "/rank" + std::to_string(r) + ".ghost";
    auto src = res::open_file_source(path);
    if (!src) return fail("rank " + std::to_string(r) + ": " + src.err().message);
    // Only the header here: the restorer verifies every record as it reads them.
    auto head = core::read_image(**src, true);
    if (!head)
        return fail("cannot restart rank " + std::to_string(r) + " from " + path + ": " +
                    head.err().message);
    if (auto c = core::check_compatible(head->header); !c)
        return fail("cannot restart rank " + std::to_string(r) + " from " + path + ": " +
                    c.err().message);
    int fd = ::dup((*src)->stream_fd()); // without close-on-exec
    if (fd < 0 || ::lseek(fd, 0, SEEK_SET) != 0) return fail("cannot reopen " + path);
    std::string image_arg = std::to_string(fd);
    // No status pipe (-1): the restorer reports a failure on stderr and exits 1, which mpirun
    // sees as the rank's failure.
    const char *argv[] = {"ghost-restart", image_arg.c_str(), "-1", "--rank", nullptr};
    std::fflush(nullptr);
    ::execve(restorer_path->c_str(), (char *const *)argv, environ);
    return fail("cannot run the restorer " + *restorer_path + ": " + std::strerror(errno));
}

// Waits for a copy made by a fast duplicate (not our child: the original's, which reaps it) and
// returns its status as a shell shows it. The exit status comes from its pidfd once it is reaped
// (PIDFD_INFO_EXIT).
int wait_copy(pid_t copy, int pidfd) {
    g_child = copy;
    struct sigaction sa {};
    sa.sa_handler = forward_signal;
    sa.sa_flags = SA_RESTART;
    for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2})
        ::sigaction(sig, &sa, nullptr);
    struct pidfd_info {
        uint64_t mask, cgroupid;
        uint32_t pid, tgid, ppid, ruid, rgid, euid, egid, suid, sgid, fsuid, fsgid;
        int32_t exit_code;
    };
    constexpr uint64_t info_exit = 1u << 3;                            // PIDFD_INFO_EXIT
    const unsigned long get_info = _IOWR(0xFF, 11, struct pidfd_info); // PIDFD_GET_INFO
    for (;;) {
        struct pollfd p = {pidfd, POLLIN, 0};
        int r = ::poll(&p, 1, -1);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return fail("cannot wait for the copy " + std::to_string(copy));
        if (!(p.revents & POLLHUP)) { // exited, not reaped yet: the original's agent reaps it
            ::usleep(1000);
            continue;
        }
        pidfd_info info{};
        info.mask = info_exit;
        if (::ioctl(pidfd, get_info, &info) != 0 || !(info.mask & info_exit))
            return fail("the exit status of the copy " + std::to_string(copy) +
                        " cannot be read (PIDFD_INFO_EXIT needs Linux 6.15)");
        ::close(pidfd);
        int ws = info.exit_code;
        if (WIFEXITED(ws)) return WEXITSTATUS(ws);
        if (WIFSIGNALED(ws)) return 128 + WTERMSIG(ws);
        return 1;
    }
}

int cmd_duplicate(const duplicate_args &a) {
    auto t0 = clock_type::now();
    if (!a.via_image) {
        auto fast = core::request_fast_duplicate(a.pid);
        if (!fast) return fail(fast.err().message);
        if (fast->copy > 0) {
            std::fprintf(stderr,
                         "ghost: duplicate pid=%d copy=%d via=fork park_s=%s fork_s=%s "
                         "total_s=%s\n",
                         (int)a.pid, (int)fast->copy, seconds(fast->park_s).c_str(),
                         seconds(fast->fork_s).c_str(), seconds(since(t0)).c_str());
            write_pid_file(a.pid_file, fast->copy);
            if (a.detach) {
                ::close(fast->pidfd);
                return 0;
            }
            return wait_copy(fast->copy, fast->pidfd);
        }
        std::fprintf(stderr, "ghost: duplicate pid=%d: no fast copy (%s): export and restore\n",
                     (int)a.pid, fast->fallback.c_str());
    }
    auto restorer_path = restorer();
    if (!restorer_path) return fail(restorer_path.err().message);
    // The image's memory is taken while the process still runs; it is stopped only for the copy.
    // (Unreadable for a pid that is not ours: parking then says why.)
    auto resident = core::resident_bytes(a.pid);
    auto sink = res::mem_sink::create(resident ? *resident : 0);
    if (!sink) return fail(sink.err().message);
    double prepare_s = since(t0);
    auto t_park = clock_type::now();
    auto proc = core::parked_process::park(a.pid);
    if (!proc) return fail(proc.err().message);
    auto stats = core::export_process(*proc, **sink);
    if (!stats)
        return fail("cannot duplicate pid " + std::to_string(a.pid) + ": " + stats.err().message);
    // The image is whole once export returns: the process goes on before the memory image is
    // cut to its length (which frees what was taken ahead and not used).
    if (auto r = proc->resume(); !r) return fail(r.err().message);
    double export_s = since(t_park);
    if (auto c = (*sink)->commit(); !c) return fail(c.err().message);
    auto t1 = clock_type::now();
    auto src = (*sink)->open_source();
    if (!src) return fail(src.err().message);
    core::import_options opt;
    opt.restorer = *restorer_path;
    opt.inherit_stdio = true;
    auto pid = core::import_process((*src)->stream_fd(), opt);
    if (!pid)
        return fail("cannot duplicate pid " + std::to_string(a.pid) + ": " + pid.err().message);
    src->reset();
    sink->reset();
    std::fprintf(stderr,
                 "ghost: duplicate pid=%d copy=%d bytes=%llu prepare_s=%s export_s=%s import_s=%s "
                 "total_s=%s\n",
                 (int)a.pid, (int)*pid, (unsigned long long)stats->image_bytes,
                 seconds(prepare_s).c_str(), seconds(export_s).c_str(), seconds(since(t1)).c_str(),
                 seconds(since(t0)).c_str());
    write_pid_file(a.pid_file, *pid);
    if (a.detach) return 0;
    return wait_child(*pid);
}

int cmd_inspect(const std::string &arg) {
    std::string path = image_path(arg);
    auto src = res::open_file_source(path);
    if (!src) return fail(src.err().message);
    auto s = core::read_image(**src);
    if (!s) return fail(path + ": " + s.err().message);
    const image::header_record &h = s->header;
    std::printf("image      %s\n", path.c_str());
    std::printf("format     %u, ghost %s, kernel %s, host %s\n", h.format_version, h.ghost_version,
                h.kernel_release, h.hostname);
    std::printf("process    pid %d, %zu threads, %s (build id %s)\n", h.pid, s->threads.size(),
                s->exe.c_str(),
                core::hex(std::string((const char *)h.exe_build_id, h.exe_build_id_len)).c_str());
    std::printf("cwd        %s\n", s->cwd.c_str());
    const image::credentials_record &c = s->creds;
    std::string groups;
    for (uint32_t g : s->groups)
        groups += (groups.empty() ? "" : ",") + std::to_string(g);
    std::printf("creds      uid %u/%u/%u/%u gid %u/%u/%u/%u groups %s; capabilities eff %llx prm "
                "%llx inh %llx amb %llx bnd %llx%s\n",
                c.uid[0], c.uid[1], c.uid[2], c.uid[3], c.gid[0], c.gid[1], c.gid[2], c.gid[3],
                groups.empty() ? "-" : groups.c_str(), (unsigned long long)c.cap_effective,
                (unsigned long long)c.cap_permitted, (unsigned long long)c.cap_inheritable,
                (unsigned long long)c.cap_ambient, (unsigned long long)c.cap_bounding,
                c.no_new_privs ? "; no_new_privs" : "");
    std::printf("size       %llu bytes in %llu records, %llu bytes of memory; checksums OK\n",
                (unsigned long long)s->image_bytes, (unsigned long long)s->records,
                (unsigned long long)s->memory_bytes);
    static const char *kinds[] = {"?", "anon", "shared", "file", "file-shared", "stack", "heap"};
    std::printf("regions    %zu\n", s->regions.size());
    for (const auto &r : s->regions) {
        const auto &rr = r.record;
        std::printf("  %012llx-%012llx %c%c%c %-11s %10llu stored  %s\n",
                    (unsigned long long)rr.start, (unsigned long long)rr.end,
                    rr.prot & 1 ? 'r' : '-', rr.prot & 2 ? 'w' : '-', rr.prot & 4 ? 'x' : '-',
                    rr.kind < 7 ? kinds[rr.kind] : "?", (unsigned long long)r.stored_bytes,
                    r.path.c_str());
    }
    std::printf("files      %zu\n", s->files.size());
    for (const auto &f : s->files)
        std::printf("  fd %-4d %-11s offset %-10lld %s\n", f.record.fd,
                    image::file_kind_name(f.record.kind), (long long)f.record.offset,
                    f.record.kind == image::file_dup
                        ? ("of fd " + std::to_string(f.record.dup_of)).c_str()
                        : f.path.c_str());
    std::printf("threads    %zu\n", s->threads.size());
    for (const auto &t : s->threads)
        std::printf("  tid %-8d %s\n", t.tid,
                    t.flags & image::thread_main      ? "main"
                    : t.flags & image::thread_manager ? "ghost manager"
                                                      : "");
    // Intact, but can it be restored here? Same checks as `ghost restart` makes first.
    if (auto c = core::check_compatible(h); !c)
        return fail(path + " cannot be restored here: " + c.err().message);
    return 0;
}

int cmd_status() {
    char dir[4096];
    const char *why = nullptr;
    if (!control::runtime_dir(dir, sizeof dir, &why)) return fail(why);
    DIR *d = ::opendir(dir);
    if (!d) return fail(std::string("cannot list ") + dir);
    int found = 0;
    while (dirent *e = ::readdir(d)) {
        char *end = nullptr;
        long pid = std::strtol(e->d_name, &end, 10);
        if (pid <= 0 || pid > INT_MAX || std::strcmp(end, ".sock") != 0) continue;
        // Listed only when its agent answers: a socket file outlives a killed process, and its pid
        // may name another process by now. Those of gone processes are removed on the way.
        if (control::probe_socket((int)pid, true) != 1) continue;
        std::string exe = "?";
        char buf[4096];
        ssize_t n =
            ::readlink(("/proc/" + std::to_string(pid) + "/exe").c_str(), buf, sizeof buf - 1);
        if (n > 0) exe.assign(buf, (size_t)n);
        std::printf("pid %-8d %s  checkpoints: %s\n", (int)pid, exe.c_str(),
                    default_ckpt_dir((pid_t)pid).c_str());
        found++;
    }
    ::closedir(d);
    if (!found) std::printf("no process is running under ghost\n");
    return 0;
}

} // namespace ghost::launcher
