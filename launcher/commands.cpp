// SPDX-License-Identifier: Apache-2.0
#include "launcher/commands.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <poll.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <climits>
#include <csignal>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>
#include <thread>

#include <hwloc.h>

#include "ghost-core/elf_build_id.h"
#include "ghost-core/export.h"
#include "ghost-core/image_reader.h"
#include "ghost-core/import.h"
#include "ghost-core/park_client.h"
#include "ghost-core/proc_reader.h"
#include "ghost-core/process_tree.h"
#include "launcher/install_paths.h"
#include "resources/fs/atomic_file.h"
#include "resources/fs/fs_resource.h"
#include "resources/mem/mem_resource.h"
#include "resources/registry.h"
#include "resources/ucx/ucx_resource.h"
#include "runtime/control.h"
#include "runtime/job_protocol.h"

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
// Written once the process's agent answers on its control socket (or the process is gone, or 5 s
// have passed: a program the agent cannot enter): a script that runs `ghost checkpoint` as soon
// as the file exists must not find the process before its agent has made the socket (a launched
// program's agent makes it as the program starts; under load that is tens of ms after the fork).
// Not for another user's process (root restoring a user's image): its socket is in that user's
// runtime directory.
void write_pid_file(const std::string &file, pid_t pid) {
    if (file.empty()) return;
    struct stat st;
    const std::string proc = "/proc/" + std::to_string(pid);
    if (::stat(proc.c_str(), &st) == 0 && st.st_uid == ::geteuid())
        for (int tries = 0; tries < 1000; tries++) {
            if (control::probe_socket(pid, false) == 1 || control::process_gone(pid)) break;
            ::usleep(5000);
        }
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

// Why the image named by `arg` cannot be opened: `err`, unless `arg` is a job's checkpoint
// directory that lost its `latest` (a full disk when it was to be written, or the job ran to its
// end on one): then which generations to name instead.
std::string unopened_image(const std::string &arg, const error &err) {
    std::error_code ec;
    std::string newest;
    int best = -1;
    for (const auto &e : std::filesystem::directory_iterator(arg, ec)) {
        std::string n = e.path().filename().string();
        if (n.rfind("gen-", 0) != 0 || n.find_first_not_of("0123456789", 4) != std::string::npos ||
            n.size() == 4 || n.size() > 12)
            continue;
        if (int g = std::atoi(n.c_str() + 4); g > best) best = g, newest = n;
    }
    if (best < 0) return err.message;
    return arg + " holds checkpoints of an MPI job but no `latest`: name one of its generations, " +
           "e.g. " + arg + "/" + newest;
}

// A variable of the process's environment (as it was at its start), or "".
std::string process_env(pid_t pid, const std::string &name) {
    std::string env, prefix = name + "=";
    std::ifstream in("/proc/" + std::to_string(pid) + "/environ", std::ios::binary);
    while (std::getline(in, env, '\0'))
        if (env.rfind(prefix, 0) == 0) return env.substr(prefix.size());
    return {};
}

// GHOST_CKPT_DIR from the process's environment (set by `ghost launch`), else ./ghost-ckpt.
std::string default_ckpt_dir(pid_t pid) {
    std::string dir = process_env(pid, "GHOST_CKPT_DIR");
    return dir.empty() ? absolute("ghost-ckpt") : dir;
}

// A sink for --to TARGET (resources/registry.h), opened before the process is parked: a remote
// one connects and authenticates now. Its secret: --secret-file, $GHOST_JOB_SECRET, or the
// process's own GHOST_JOB_SECRET (an MPI rank's).
result<std::unique_ptr<res::sink>>
open_target(const std::string &to, const std::string &secret_file, pid_t pid, bool remote_only) {
    auto t = res::find_resource(to);
    if (!t) return t.err();
    if (!t->kind->caps.durable && !t->kind->caps.remote)
        return error{"--to " + to +
                     ": a memory image would end with this command (give "
                     "ucx://HOST:PORT or fs:PATH)"};
    if (remote_only && !t->kind->caps.remote)
        return error{"--to names where the copy runs: ucx://HOST:PORT (a `ghost receive --restore` "
                     "there), not " +
                     to};
    res::sink_request req;
    if (t->kind->caps.remote) {
        auto secret = res::read_ucx_secret(secret_file, process_env(pid, "GHOST_JOB_SECRET"));
        if (!secret) return secret.err();
        req.secret = *secret;
    }
    return res::open_sink(*t, req);
}

std::string seconds(double s) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.3f", s);
    return buf;
}

// Why a checkpoint of `pid` failed, in one line: a process that ended meanwhile (killed, say)
// makes every read of its memory fail with whatever error the kernel gives a vanished process
// (ENOENT, EIO, ESRCH); the user is told that, with the reader's error after it. A process being
// killed loses its memory before it becomes a zombie: it is given 100 ms to show it has ended.
std::string checkpoint_failure(pid_t pid, const std::string &why) {
    std::string head = "checkpoint of pid " + std::to_string(pid) + " failed: ";
    for (int tries = 0; tries < 20; tries++) {
        if (control::process_gone(pid))
            return head + "the process ended during the checkpoint (" + why + ")";
        ::usleep(5000);
    }
    return head + why;
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

bool names_job(const std::string &target);
int checkpoint_job(const checkpoint_args &a);
bool is_job_checkpoint(const std::string &dir);

// An incremental checkpoint's parent (export_options): `parent`, or by default the image at `path`
// that the new one replaces, which then stays under a name of its own made from its scan id
// (DIR/STEM-ID.ghost, a hard link made now) since the new image takes pages from it. No parent
// (a whole image, tracking starts) when there is none yet or it was taken without tracking.
result<void> incremental_parent(const std::string &path, const std::string &parent,
                                core::export_options &xo) {
    namespace fs = std::filesystem;
    xo.track = true;
    std::string from = parent.empty() ? path : absolute(parent);
    struct stat sb;
    if (::stat(from.c_str(), &sb) != 0) {
        if (parent.empty() && errno == ENOENT) return {};
        return sys_error("no previous image " + from);
    }
    auto src = res::open_file_source(from);
    if (!src) return src.err();
    auto head = core::read_image(**src, true);
    if (!head) return error{from + ": " + head.err().message};
    if (!head->scan_id) return {}; // taken without tracking
    if (parent.empty()) {
        fs::path p(path);
        char id[24];
        std::snprintf(id, sizeof id, "%016llx", (unsigned long long)head->scan_id);
        std::string kept = (p.parent_path() / (p.stem().string() + "-" + id + ".ghost")).string();
        if (::link(from.c_str(), kept.c_str()) != 0 && errno != EEXIST)
            return sys_error("cannot keep the previous image as " + kept);
        from = kept;
    }
    std::error_code ec;
    std::string name = fs::relative(from, fs::path(path).parent_path(), ec).string();
    if (ec || name.empty()) return error{"cannot name " + from + " from " + path};
    xo.parent_path = from, xo.parent_name = name;
    return {};
}

// After an incremental checkpoint into the image it replaces: the images kept for earlier ones
// (DIR/STEM-ID.ghost) that the new image does not read go.
void prune_kept_images(const std::string &path, const std::vector<std::string> &sources) {
    namespace fs = std::filesystem;
    fs::path p(path);
    std::string prefix = p.stem().string() + "-";
    std::error_code ec;
    for (const auto &e : fs::directory_iterator(p.parent_path(), ec)) {
        std::string name = e.path().filename().string();
        if (name.rfind(prefix, 0) != 0 || e.path().extension() != ".ghost" ||
            name.size() != prefix.size() + 16 + 6)
            continue;
        if (std::find(sources.begin(), sources.end(), name) == sources.end())
            ::unlink(e.path().c_str());
    }
}

// A process with descendants (process_tree.h): every live process of the tree parked (the root
// first), the tree listed again to see that it held still meanwhile, then one image file with
// each process's stream, the root's first. Whole images only; to a file only.
struct parked_tree {
    core::tree_plan plan;
    std::vector<core::parked_process> members; // the live descendants, in plan.live() order
};

// With the root parked (it starts no child meanwhile): parks its descendants as listed, then
// lists the tree again to see it held still. A tree being born or reaped (a child that ended or
// whose agent does not listen yet, a grandchild forked meanwhile) is parked again, for about a
// second.
result<parked_tree> park_tree(const core::parked_process &root) {
    pid_t pid = root.pid();
    std::string failure;
    for (int attempt = 0; attempt < 20; attempt++) {
        if (attempt) ::usleep(20000 * (useconds_t)std::min(attempt, 5));
        std::vector<core::parked_process> members; // resumed when dropped
        std::set<pid_t> skip = {::getpid()};
        auto theirs = core::agent_children(root); // not the program's children
        if (!theirs) return theirs.err();
        skip.insert(theirs->begin(), theirs->end());
        auto plan = core::list_tree(pid, skip);
        if (!plan) return plan.err(); // (a stopped or traced process, a foreign group)
        bool all = true;
        for (pid_t p : plan->live()) {
            if (p == pid) continue;
            auto proc = core::parked_process::park(p);
            if (!proc) {
                failure = "cannot park pid " + std::to_string(p) + " of the process tree of pid " +
                          std::to_string(pid) + ": " + proc.err().message;
                all = false;
                break;
            }
            members.push_back(std::move(*proc));
            auto more = core::agent_children(members.back());
            if (!more) return more.err();
            skip.insert(more->begin(), more->end());
        }
        if (!all) continue;
        auto again = core::list_tree(pid, skip);
        if (!again) return again.err();
        bool same = again->members.size() == plan->members.size();
        for (size_t i = 0; same && i < plan->members.size(); i++)
            same = std::memcmp(&again->members[i], &plan->members[i], sizeof plan->members[i]) == 0;
        if (same) return parked_tree{std::move(*plan), std::move(members)};
        failure = "the process tree of pid " + std::to_string(pid) +
                  " kept changing while it was parked (processes starting or ending): try again";
    }
    return error{failure};
}

int checkpoint_tree(const checkpoint_args &a, core::parked_process &root, parked_tree *tree,
                    const std::string &path, clock_type::time_point t0) {
    std::string head = "checkpoint of pid " + a.target + " failed: ";
    if (!a.to.empty()) return fail(head + "a process tree is written to an image file, not --to");
    std::vector<core::parked_process *> procs = {&root};
    for (auto &m : tree->members)
        procs.push_back(&m);
    std::vector<const core::parked_process *> parked(procs.begin(), procs.end());
    if (auto r = core::plan_tree(tree->plan, parked); !r) return fail(head + r.err().message);
    double park_s = since(t0);
    auto sink = res::create_file_sink(path);
    if (!sink) return fail(sink.err().message);
    auto t1 = clock_type::now();
    core::export_stats total;
    for (const core::parked_process *p : procs) {
        core::tree_part part = tree->plan.part(p->pid());
        core::export_options xo;
        xo.tree = &part;
        auto stats = core::export_process(*p, **sink, xo);
        if (!stats) {
            (*sink)->abort();
            return fail(checkpoint_failure(p->pid(), stats.err().message));
        }
        total.image_bytes += stats->image_bytes;
        total.memory_bytes += stats->memory_bytes;
        total.threads += stats->threads;
    }
    double export_s = since(t1);
    auto t2 = clock_type::now();
    if (auto c = (*sink)->commit(); !c) {
        (*sink)->abort();
        return fail(head + c.err().message);
    }
    double sync_s = since(t2);
    if (a.kill) {
        for (auto it = procs.rbegin(); it != procs.rend(); ++it)
            (*it)->kill_now(); // children first: none runs on without its parent
        // Gone (reaped by whoever inherits them) before we say so: a restart right after needs
        // their pids.
        for (int waited = 0; waited < 5000; waited += 5) {
            bool any = false;
            for (const core::parked_process *p : procs)
                any |= p->pid() != a.pid && ::kill(p->pid(), 0) == 0;
            for (const auto &m : tree->plan.members)
                any |= m.state == image::tree_zombie && ::kill(m.pid, 0) == 0;
            if (!any) break;
            ::usleep(5000);
        }
    } else {
        for (core::parked_process *p : procs)
            if (auto r = p->resume(); !r) return fail(r.err().message);
    }
    if (a.incremental)
        std::fprintf(stderr, "ghost: a whole image: a process tree is never incremental\n");
    std::printf("checkpoint pid=%d image=%s bytes=%llu memory_bytes=%llu threads=%llu "
                "processes=%zu zombies=%zu park_s=%s export_s=%s sync_s=%s total_s=%s%s\n",
                (int)a.pid, path.c_str(), (unsigned long long)total.image_bytes,
                (unsigned long long)total.memory_bytes, (unsigned long long)total.threads,
                procs.size(), tree->plan.members.size() + 1 - procs.size(), seconds(park_s).c_str(),
                seconds(export_s).c_str(), seconds(sync_s).c_str(), seconds(since(t0)).c_str(),
                a.kill ? " killed=1" : "");
    return 0;
}

namespace {
// The image's resource, watched: whether a failure came from it (the receiver lost, a full disk)
// rather than from the process (its memory cannot be tracked).
class watched_sink final : public res::sink {
  public:
    explicit watched_sink(res::sink &inner) : inner_(inner) {}
    result<void> write(const void *data, size_t len) override {
        return watch(inner_.write(data, len));
    }
    result<void> commit() override { return watch(inner_.commit()); }
    void abort() noexcept override { inner_.abort(); }
    std::string describe() const override { return inner_.describe(); }
    bool failed() const { return failed_; }

  private:
    result<void> watch(result<void> r) {
        if (!r) failed_ = true;
        return r;
    }
    res::sink &inner_;
    bool failed_ = false;
};
} // namespace

// A pre-copy that failed: with `resource`, because of where it went (the same resource would fail
// a whole image too), which the report line says for the rank's coordinator (a migration then
// stops before the job does); otherwise the process sends a whole image instead.
static int precopy_failed(pid_t pid, bool resource, const std::string &why) {
    if (resource) std::printf("checkpoint pid=%d precopy=1 failed=resource\n", (int)pid);
    return fail("pre-copy of pid " + std::to_string(pid) + " failed: " + why);
}

// `ghost checkpoint --precopy-index FILE`: the process runs on while its write tracking is armed
// and its memory copied (FILE is not left when this fails). With `last_round` (--after-precopy
// FILE2, --to only: the same receiver): a further round, only the pages written since the round
// whose index FILE2 holds; FILE may be FILE2, which it then replaces once the round is in (a
// round that fails leaves it: the image after it is whole if the failed round's scan began).
static int precopy_process(const checkpoint_args &a, core::parked_process &proc,
                           result<std::unique_ptr<res::sink>> opened, const std::string &path,
                           const core::image_index *last_round, clock_type::time_point t0) {
    if (a.to.empty()) opened = res::create_file_sink(path, !a.no_mkdir);
    if (!opened) {
        (void)proc.resume();
        return precopy_failed(a.pid, true, opened.err().message);
    }
    watched_sink sink(**opened);
    core::image_index index;
    auto stats = core::export_precopy(proc, sink, index, last_round, kPrecopyName);
    if (!stats) {
        sink.abort();
        return precopy_failed(a.pid, sink.failed(), stats.err().message);
    }
    auto t_commit = clock_type::now();
    if (auto c = sink.commit(); !c) {
        sink.abort();
        return precopy_failed(a.pid, true, c.err().message);
    }
    // (The receiver holds this round now: no index of an older one may stay.)
    if (last_round) ::unlink(a.precopy_index.c_str());
    if (auto saved = core::save_index(index, a.precopy_index); !saved)
        return precopy_failed(a.pid, false, saved.err().message);
    // export_s: the copy while the process ran; written_bytes: what the process wrote meanwhile
    // (what a round after this one would copy).
    std::printf("checkpoint pid=%d image=%s precopy=1 bytes=%llu memory_bytes=%llu export_s=%s "
                "sync_s=%s total_s=%s written_bytes=%llu\n",
                (int)a.pid, path.c_str(), (unsigned long long)stats->image_bytes,
                (unsigned long long)stats->memory_bytes, seconds(stats->live_s).c_str(),
                seconds(since(t_commit)).c_str(), seconds(since(t0)).c_str(),
                (unsigned long long)stats->written_since_bytes);
    return 0;
}

// --standby: waits for 'g' and then the end of standard input (the agent's go: it closes its end
// of the socket at once, so that the image holds no descriptor of it), true; the end alone,
// false. Meanwhile the sink is kept serviced (a receiver that goes away ends the wait with its
// error). A go whose end does not follow within a second (a child of the process holding the
// socket) is taken as it is.
result<bool> wait_for_go(res::sink &out) {
    // Ready: said on the same socket (the agent's caller waits for it before it lets the job be
    // stopped). Standard input of another kind (a user's pipe) hears nothing.
    (void)!::send(0, "r", 1, MSG_NOSIGNAL);
    bool got_go = false;
    auto go_at = clock_type::now();
    for (;;) {
        pollfd p{0, POLLIN, 0};
        int n = ::poll(&p, 1, got_go ? 10 : 50);
        if (n < 0 && errno != EINTR) return sys_error("cannot wait for the go");
        if (n > 0) {
            char c[16];
            ssize_t r = ::read(0, c, sizeof c);
            if (r < 0 && errno != EINTR && errno != EAGAIN) return sys_error("cannot read the go");
            if (r == 0) return got_go;
            for (ssize_t i = 0; i < r; i++)
                if (c[i] == 'g' && !got_go) got_go = true, go_at = clock_type::now();
        }
        if (got_go && clock_type::now() - go_at > std::chrono::seconds(1)) return true;
        if (!got_go)
            if (auto alive = out.idle(); !alive) return alive.err();
    }
}

int cmd_checkpoint(checkpoint_args a) {
    auto t0 = clock_type::now();
    // --image names one process's image (a rank checkpointing itself): the target is a pid, even
    // when a killed coordinator's job socket with the same number stays behind.
    if (a.image.empty() && names_job(a.target)) {
        if (!a.to.empty())
            return fail("--to is for one process; a job's images go to its directory");
        return checkpoint_job(a);
    }
    char *end = nullptr;
    long pid = std::strtol(a.target.c_str(), &end, 10);
    if (a.target.empty() || *end || pid <= 0 || pid > INT_MAX)
        return fail("'" + a.target + "' is neither a job id nor a process id");
    a.pid = (pid_t)pid;
    if (::kill(a.pid, 0) != 0 && errno == ESRCH)
        return fail("no job or process " + a.target + " (it has ended?)");
    // A job id is ghostrun's pid: without its socket, ghostrun is ending with its job.
    if (a.image.empty()) {
        char comm[32] = "";
        if (FILE *f = std::fopen(("/proc/" + a.target + "/comm").c_str(), "re")) {
            if (!std::fgets(comm, sizeof comm, f)) comm[0] = 0;
            std::fclose(f);
        }
        if (std::strcmp(comm, "ghostrun\n") == 0)
            return fail("job " + a.target + ": the job ended (its coordinator is exiting)");
    }
    std::string dir = a.dir.empty() ? default_ckpt_dir(a.pid) : absolute(a.dir);
    std::string path = a.image.empty() ? dir + "/image.ghost" : absolute(a.image);
    // (Before connecting: a receiver is not left with a connection given up at once.)
    if (a.standby && (a.to.empty() || !a.precopy_index.empty() || a.kill))
        return fail("--standby goes with --to, and neither with --precopy-index nor --kill");
    result<std::unique_ptr<res::sink>> sink = error{};
    if (!a.to.empty()) { // before parking: a receiver that is not there costs the process nothing
        if (!a.dir.empty() || !a.image.empty()) return fail("--to replaces --dir and --image");
        sink = open_target(a.to, a.secret_file, a.pid, false);
        if (!sink && !a.precopy_index.empty())
            return precopy_failed(a.pid, true, sink.err().message);
        if (!sink) return fail("checkpoint of pid " + a.target + " failed: " + sink.err().message);
        path = a.to;
    }
    if (!a.parent.empty() && !a.incremental) return fail("--parent goes with --incremental");
    if (!a.precopy_index.empty() && (a.incremental || a.kill))
        return fail("--precopy-index goes with neither --incremental nor --kill");
    // (Rounds go to a receiver, which puts each over the last: files would need a name each.)
    if (!a.precopy_index.empty() && !a.after_precopy.empty() && a.to.empty())
        return fail("--precopy-index with --after-precopy (a further pre-copy round) needs --to");
    if (!a.after_precopy.empty() && a.incremental)
        return fail("--after-precopy and --incremental name two different parents");
    std::optional<core::image_index> precopy;
    if (!a.after_precopy.empty()) {
        auto idx = core::load_index(a.after_precopy);
        if (!idx) return fail("checkpoint of pid " + a.target + " failed: " + idx.err().message);
        precopy = std::move(*idx);
    }
    if (a.incremental && !a.to.empty())
        return fail("--incremental writes an image file; --to streams one");
    if (a.standby) {
        // Connected, the index read: the rest waits for the process to be quiescent (its go).
        auto go = wait_for_go(**sink);
        if (!go) return fail("checkpoint of pid " + a.target + " failed: " + go.err().message);
        if (!*go) return 3;     // dismissed: the process was not touched
        t0 = clock_type::now(); // (the times reported start at the go)
    }
    if (!a.precopy_index.empty()) { // the process is not parked (not quiescent: an MPI rank)
        auto running = core::parked_process::attach_running(a.pid);
        if (!running) return fail(running.err().message);
        return precopy_process(a, *running, std::move(sink), path, precopy ? &*precopy : nullptr,
                               t0);
    }
    auto proc = core::parked_process::park(a.pid);
    if (!proc) return fail(proc.err().message);
    // Tests only: GHOST_TEST_CHECKPOINTER_STOP names a file holding a piece of an image path; the
    // checkpointer of a matching --image stops itself here, its process parked, until SIGCONT (the
    // file goes, once): a test can kill a rank while its checkpoint is surely being written.
    if (const char *f = std::getenv("GHOST_TEST_CHECKPOINTER_STOP"); f && *f && !a.image.empty()) {
        char want[256] = "";
        if (std::FILE *in = std::fopen(f, "re")) {
            if (!std::fgets(want, sizeof want, in)) want[0] = 0;
            std::fclose(in);
            want[std::strcspn(want, "\n")] = 0;
            if (*want && path.find(want) != std::string::npos && ::unlink(f) == 0)
                ::kill(::getpid(), SIGSTOP);
        }
    }
    // A process with children: its tree (not for an MPI rank's own image, --image: a rank's
    // children are refused by its export, and its job's checkpoint with it).
    if (a.image.empty()) {
        auto tree = park_tree(*proc);
        if (!tree) return fail("checkpoint of pid " + a.target + " failed: " + tree.err().message);
        if (!tree->plan.members.empty() && precopy)
            return fail("checkpoint of pid " + a.target +
                        " failed: a process with children is not pre-copied");
        if (!tree->plan.members.empty()) return checkpoint_tree(a, *proc, &*tree, path, t0);
    }
    core::export_options xo;
    if (precopy) {
        xo.track = true;
        xo.parent_index = &*precopy;
        xo.parent_name = kPrecopyName;
    }
    if (a.incremental) {
        if (auto r = incremental_parent(path, a.parent, xo); !r)
            return fail("checkpoint of pid " + a.target + " failed: " + r.err().message);
    }
    double park_s = since(t0);
    if (a.to.empty()) sink = res::create_file_sink(path, !a.no_mkdir);
    if (!sink) return fail(sink.err().message);
    auto t1 = clock_type::now();
    auto stats = core::export_process(*proc, **sink, xo);
    if (!stats) {
        (*sink)->abort();
        return fail(checkpoint_failure(a.pid, stats.err().message));
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
    if (a.incremental && a.parent.empty()) prune_kept_images(path, stats->sources);
    std::string incremental;
    if (a.incremental || precopy) {
        if (!stats->tracking_note.empty())
            std::fprintf(stderr, "ghost: a whole image: %s\n", stats->tracking_note.c_str());
        incremental = " incremental=" + std::to_string(stats->incremental ? 1 : 0) +
                      " referenced_bytes=" + std::to_string(stats->referenced_bytes);
    }
    std::printf("checkpoint pid=%d image=%s bytes=%llu memory_bytes=%llu threads=%llu park_s=%s "
                "export_s=%s sync_s=%s total_s=%s%s%s\n",
                (int)a.pid, path.c_str(), (unsigned long long)stats->image_bytes,
                (unsigned long long)stats->memory_bytes, (unsigned long long)stats->threads,
                seconds(park_s).c_str(), seconds(export_s).c_str(), seconds(sync_s).c_str(),
                seconds(since(t0)).c_str(), incremental.c_str(), a.kill ? " killed=1" : "");
    return 0;
}

int cmd_restart(const restart_args &a) {
    auto t0 = clock_type::now();
    if (is_job_checkpoint(a.image)) {
        // An MPI job: ghostrun checks the checkpoint, launches it under a new coordinator and
        // ends as the job ends.
        if (!a.pid_file.empty() || a.new_pid)
            return fail("--pid-file and --new-pid are for one process, not for a job");
        auto run = ghostrun();
        if (!run) return fail(run.err().message);
        std::vector<std::string> args = {*run, "--from-ghost", "--restart", a.image};
        for (const auto &o : a.mpirun_opts)
            args.push_back(o);
        std::vector<char *> argv;
        for (auto &s : args)
            argv.push_back(s.data());
        argv.push_back(nullptr);
        std::fflush(nullptr);
        ::execv(argv[0], argv.data());
        return fail("cannot run " + *run + ": " + std::strerror(errno));
    }
    if (!a.mpirun_opts.empty())
        return fail("mpirun options are for an MPI job's checkpoint directory; " + a.image +
                    " is not one");
    auto restorer_path = restorer();
    if (!restorer_path) return fail(restorer_path.err().message);
    control::remove_stale_sockets(); // e.g. that of the checkpointed process, if it was killed
    std::string path = image_path(a.image);
    auto src = res::open_file_source(path);
    if (!src) return fail(unopened_image(a.image, src.err()));
    auto head = core::read_image(**src, true);
    if (!head) return fail("cannot restart from " + path + ": " + head.err().message);
    if (head->header.flags & image::header_job_rank)
        return fail(
            "cannot restart from " + path + ": it is one rank's image of an MPI job's " +
            "checkpoint; restart the job from its checkpoint directory (ghost restart DIR)");
    if (auto c = core::check_compatible(head->header); !c)
        return fail("cannot restart from " + path + ": " + c.err().message);
    auto sources = core::open_sources(path, *head);
    if (!sources) return fail("cannot restart from " + path + ": " + sources.err().message);
    int fd = (*src)->stream_fd();
    core::import_options opt;
    opt.restorer = *restorer_path;
    opt.want_pid = a.new_pid ? 0 : head->header.pid;
    opt.source_fds = *sources;
    // A process tree: its shared descriptions made here, its layout given to the restorers.
    auto tree = core::read_tree_layout(fd, head->header.pid);
    if (!tree) return fail("cannot restart from " + path + ": " + tree.err().message);
    if (!tree->members.empty()) {
        struct stat sb;
        if (::fstat(fd, &sb) != 0) return fail("cannot restart from " + path + ": cannot stat it");
        auto shared = core::make_shared_files(*tree, sb.st_uid, fd);
        if (!shared) return fail("cannot restart from " + path + ": " + shared.err().message);
        opt.tree_fds = *shared;
        opt.tree_args.push_back("--tree-root=" + std::to_string(head->header.pid));
        size_t live = 0;
        for (const auto &m : tree->members) {
            uint64_t offset = m.state == image::tree_live ? tree->offsets[live++] : 0;
            if (m.state == image::tree_live) opt.tree_pids.push_back(m.pid);
            opt.tree_args.push_back("--tree-member=" + std::to_string(m.pid) + ":" +
                                    std::to_string(m.ppid) + ":" + std::to_string(m.pgid) + ":" +
                                    std::to_string(m.sid) + ":" + std::to_string(m.state) + ":" +
                                    std::to_string(m.wait_status) + ":" + std::to_string(offset));
        }
        std::string list;
        for (int s : *shared)
            list += (list.empty() ? "" : ",") + std::to_string(s);
        if (!list.empty()) opt.tree_args.push_back("--tree-shared=" + list);
        opt.processes = (int)live + 1;
    }
    ::lseek(fd, 0, SEEK_SET);
    auto pid = core::import_process(fd, opt);
    for (int s : *sources)
        ::close(s);
    for (int s : opt.tree_fds)
        ::close(s);
    if (!pid) return fail("cannot restart from " + path + ": " + pid.err().message);
    src->reset();
    std::string import_s = seconds(since(t0));
    // Restored once it can be checkpointed again: its agent answers on its control socket.
    if (!core::wait_agent_ready(*pid, 10000) && ::kill(*pid, 0) == 0)
        std::fprintf(stderr,
                     "ghost: warning: the restored pid %d does not answer on its control "
                     "socket (it cannot be checkpointed)\n",
                     (int)*pid);
    std::fprintf(stderr, "ghost: restored pid=%d import_s=%s\n", (int)*pid, import_s.c_str());
    write_pid_file(a.pid_file, *pid);
    return wait_child(*pid);
}

namespace {

// The rank's end of the coordinator: a TCP connection to the first of GHOST_JOB_COORD's addresses
// that answers ("addr,addr,...:port"), or -1.
int connect_coordinator(const std::string &coord) {
    size_t colon = coord.rfind(':');
    if (colon == std::string::npos) return -1;
    int port = std::atoi(coord.c_str() + colon + 1);
    std::istringstream list(coord.substr(0, colon));
    std::string addr;
    while (std::getline(list, addr, ',')) {
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_port = htons((uint16_t)port);
        if (::inet_pton(AF_INET, addr.c_str(), &a.sin_addr) != 1) continue;
        int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) continue;
        if (::connect(fd, (sockaddr *)&a, sizeof a) == 0) return fd;
        ::close(fd);
    }
    return -1;
}

// The receiving end's sink: the verified stream goes into the restorer's pipe; commit() waits for
// the restorer's "OK <pid>" (the whole image taken, the process about to run).
// Tests only: GHOST_TEST_RECEIVE_DIE names a file holding a byte count (and "stop" after it: the
// receiver freezes instead, as a host that stops answering mid-transfer), or "round N"; when it
// exists, the receiver dies (as killed) once that much has arrived (pre-copy included), or as the
// Nth pre-copy round begins to arrive (test_receive_die_in_round), and the file goes (once).
struct receive_die_hook {
    long long at = LLONG_MAX; // bytes
    long long round = 0;
    int signal = SIGKILL;
};
const receive_die_hook &test_receive_die_hook() {
    static receive_die_hook hook;
    static bool read = false;
    if (read) return hook;
    read = true;
    const char *f = std::getenv("GHOST_TEST_RECEIVE_DIE");
    std::FILE *in = f && *f ? std::fopen(f, "re") : nullptr;
    if (!in) return hook;
    long long n = 0;
    char how[8] = "";
    if (std::fscanf(in, "round %lld", &n) == 1) {
        if (::unlink(f) == 0) hook.round = n;
    } else if (int got = std::fscanf(in, "%lld %7s", &n, how); got >= 1 && ::unlink(f) == 0) {
        hook.at = n;
        hook.signal = got == 2 && std::strcmp(how, "stop") == 0 ? SIGSTOP : SIGKILL;
    }
    std::fclose(in);
    return hook;
}
void test_receive_die(size_t len) {
    static long long received = 0;
    const receive_die_hook &hook = test_receive_die_hook();
    if ((received += (long long)len) >= hook.at) ::kill(::getpid(), hook.signal);
}
void test_receive_die_in_round(uint32_t round) {
    if (test_receive_die_hook().round == (long long)round) ::kill(::getpid(), SIGKILL);
}

class pipe_restore_sink final : public res::sink {
  public:
    pipe_restore_sink(int image_fd, int status_fd) : image_fd_(image_fd), status_fd_(status_fd) {}
    ~pipe_restore_sink() override { abort(); }
    result<void> write(const void *data, size_t len) override {
        test_receive_die(len);
        return feed(data, len);
    }
    // Into the restorer's pipe, without the test's count (a pre-copy round's marker).
    result<void> feed(const void *data, size_t len) {
        const char *p = (const char *)data;
        while (len) {
            if (image_fd_ < 0) return error{"the restorer's input was closed"};
            ssize_t n = ::write(image_fd_, p, len);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) return status_error("the restorer stopped reading the image");
            p += n;
            len -= (size_t)n;
        }
        return {};
    }
    result<void> commit() override {
        if (image_fd_ >= 0) ::close(image_fd_);
        image_fd_ = -1;
        return expect("OK ", 120000, "the image");
    }
    void abort() noexcept override {
        if (image_fd_ >= 0) ::close(image_fd_);
        image_fd_ = -1;
    }
    std::string describe() const override { return "the rank's restorer"; }
    // A restorer started on a pre-copy (--say-placed) says "PLACED" once it has put it in place.
    result<void> wait_placed() { return expect("PLACED", 600000, "the pre-copy"); }

  private:
    // The restorer's next status line: `word` (its verdict on `what`), or ERR and why not.
    result<void> expect(const char *word, int timeout_ms, const char *what) {
        char line[600];
        long n = control::read_line(status_fd_, line, sizeof line, timeout_ms);
        size_t len = std::strlen(word);
        if (n >= (long)len && std::strncmp(line, word, len) == 0) return {};
        if (n > 4 && std::strncmp(line, "ERR ", 4) == 0)
            return error{std::string("the restorer refused ") + what + ": " + (line + 4)};
        return error{std::string("the restorer ended without taking ") + what};
    }
    error status_error(const char *what) {
        abort();
        char line[600];
        long n = control::read_line(status_fd_, line, sizeof line, 1000);
        if (n > 4 && std::strncmp(line, "ERR ", 4) == 0)
            return error{std::string("the restorer refused the image: ") + (line + 4)};
        return error{what};
    }
    int image_fd_, status_fd_;
    size_t written_ = 0;
};

// A helper process beside the one that becomes a rank (which execs the restorer next): forked
// twice, so that it is no child of the restored program (whose wait() must not see it) and is
// reaped by init. Returns 0 in the helper, its intermediate parent's pid (reaped) in the caller,
// -1 on failure.
pid_t fork_orphan() {
    std::fflush(nullptr);
    pid_t child = ::fork();
    if (child == 0 && ::fork() != 0) ::_exit(0);
    if (child > 0) {
        int ws = 0;
        ::waitpid(child, &ws, 0);
    }
    return child;
}

// The receiver of `restart-rank --receive`, in a process of its own (the rank's process becomes
// the restorer): listens on the address this host reaches the coordinator from, says
// RECEIVER <job> <secret> <rank> <addr:port> to the coordinator, and feeds the verified stream to
// the restorer. A pre-copy (image_format.h, header_pages_only) may come first: it goes into the
// memfd `round_fds[0]`, and the image after it comes on a new connection. Further pre-copy rounds
// may come between (each only the pages written during the last): each goes into the next memfd
// of `round_fds`, which the restorer shares, and once whole, the restorer is told so in its pipe
// (image::precopy_round_marker), ahead of the image; its sender hears it is in once the restorer
// has put it in place. One byte on `decision_fd`
// tells the rank's process how to start the restorer: kWithPrecopy (with the memfd as its source)
// as soon as a whole pre-copy is in, so that the restorer places it while the job still runs and
// then waits for the image; kWhole when the image comes with no pre-copy before it. Ends with the
// transfer, or when the coordinator closes its connection first (the migration was given up) or
// the restorer is gone.
constexpr char kWithPrecopy = 'P', kWhole = 'W';
[[noreturn]] void run_rank_receiver(int coord_fd, const std::string &job, const std::string &secret,
                                    long rank, int image_fd, int status_fd, const int *round_fds,
                                    int decision_fd) {
    sockaddr_in local{};
    socklen_t len = sizeof local;
    char addr[INET_ADDRSTRLEN] = "127.0.0.1";
    if (::getsockname(coord_fd, (sockaddr *)&local, &len) == 0)
        ::inet_ntop(AF_INET, &local.sin_addr, addr, sizeof addr);
    std::signal(SIGPIPE, SIG_IGN);
    static std::atomic<bool> committing{false};
    std::thread([coord_fd] {
        for (;;) {
            pollfd p = {coord_fd, POLLIN, 0};
            int r = ::poll(&p, 1, 1000);
            if (r < 0 && errno == EINTR) continue;
            char c;
            if (r > 0 && ::recv(coord_fd, &c, 1, MSG_DONTWAIT) <= 0 && !committing.load()) {
                std::fprintf(stderr, "ghost: restart-rank: the migration was given up\n");
                ::_exit(1);
            }
        }
    }).detach();
    res::ucx_receive_options opt;
    opt.listen = {addr, 0};
    opt.secret = secret;
    opt.accept_timeout_ms = 600000;
    opt.on_listening = [&](const res::ucx_address &bound) {
        std::string l = "RECEIVER " + job + " " + secret + " " + std::to_string(rank) + " " +
                        bound.str() + "\n";
        (void)control::write_all(coord_fd, l.data(), l.size());
    };
    // Which image this is shows in its header record's flags, in the first verified bytes.
    struct routing_sink final : res::sink {
        pipe_restore_sink restorer;
        const int *round_fds;
        int decision_fd;
        uint32_t rounds = 0; // pre-copy rounds in (after the first, the restorer started on it)
        std::string head;    // the first bytes, until the header's flags are in
        enum { undecided, to_precopy, to_restorer } route = undecided;
        routing_sink(int i, int s, const int *r, int d)
            : restorer(i, s), round_fds(r), decision_fd(d) {}
        result<void> write(const void *d, size_t n) override {
            if (route != undecided) return pass(d, n);
            head.append((const char *)d, n);
            return decide(false);
        }
        // From the header record (a pre-copy?) and the one after it (a tracking record with a
        // source: the image takes pages from the pre-copy). `at_end`: that is all there is.
        result<void> decide(bool at_end) {
            constexpr size_t rh = sizeof(image::record_header);
            image::record_header h0{}, h1{};
            image::header_record hr{};
            image::tracking_record t{};
            if (head.size() < rh + sizeof hr && !at_end) return {};
            if (head.size() >= rh + sizeof hr) {
                std::memcpy(&h0, head.data(), rh);
                std::memcpy(&hr, head.data() + rh, sizeof hr);
            }
            size_t next = rh + (size_t)std::min<uint64_t>(h0.length, 1 << 20);
            bool pre = (hr.flags & image::header_pages_only) != 0;
            if (!pre && !at_end && head.size() < next + rh + sizeof t) return {};
            if (head.size() >= next + rh + sizeof t) {
                std::memcpy(&h1, head.data() + next, rh);
                std::memcpy(&t, head.data() + next + rh, sizeof t);
            }
            bool takes = h1.type == image::rec_tracking && t.source_count > 0;
            if (pre) {
                if (rounds == image::max_precopy_rounds)
                    return error{"more pre-copy rounds came than a migration makes"};
                test_receive_die_in_round(rounds + 1);
                route = to_precopy;
                if (::ftruncate(round_fds[rounds], 0) != 0 ||
                    ::lseek(round_fds[rounds], 0, SEEK_SET) != 0)
                    return sys_error("cannot reset the pre-copy's memory file");
            } else {
                bool have_precopy = rounds > 0;
                if (takes && !have_precopy)
                    return error{"the image takes pages from a pre-copy that did not come here"};
                route = to_restorer;
                // (After a pre-copy, the restorer placed it and waits: it takes a whole image as
                // well as one that takes pages from the pre-copy.)
                char c = kWhole;
                if (!have_precopy && ::write(decision_fd, &c, 1) != 1)
                    return error{"the rank's process is gone"};
            }
            std::string first = std::move(head);
            return pass(first.data(), first.size());
        }
        result<void> pass(const void *d, size_t n) {
            if (route == to_restorer) return restorer.write(d, n);
            test_receive_die(n);
            for (const char *p = (const char *)d; n;) {
                ssize_t w = ::write(round_fds[rounds], p, n);
                if (w < 0 && errno == EINTR) continue;
                if (w <= 0) return sys_error("cannot store the pre-copy in memory");
                p += w, n -= (size_t)w;
            }
            return {};
        }
        result<void> commit() override {
            if (route == undecided) GHOST_TRY(decide(true));
            if (route == to_precopy) {
                // The sender hears that its pre-copy round is in only once it is in place: the
                // job is stopped for the image after the last.
                char c = kWithPrecopy;
                if (rounds == 0 && ::write(decision_fd, &c, 1) != 1)
                    return error{"the rank's process is gone"};
                if (rounds > 0)
                    GHOST_TRY(restorer.feed(image::precopy_round_marker,
                                            sizeof image::precopy_round_marker));
                rounds++;
                route = undecided;
                return restorer.wait_placed();
            }
            committing = true;
            return restorer.commit();
        }
        void abort() noexcept override {
            if (route == to_precopy) (void)!::ftruncate(round_fds[rounds], 0);
            if (route != to_restorer) // (a pre-copy the restorer started on stays)
                route = undecided, head.clear();
            else
                restorer.abort();
        }
        std::string describe() const override { return restorer.describe(); }
    } out(image_fd, status_fd, round_fds, decision_fd);
    res::ucx_image_receiver rx(opt);
    auto fail = [&](const error &e) {
        std::fprintf(stderr, "ghost: restart-rank %ld --receive: %s\n", rank, e.message.c_str());
        ::_exit(1);
    };
    if (auto l = rx.listen(); !l) fail(l.err());
    for (int failed = 0;;) {
        auto got = rx.receive(out);
        // A pre-copy that failed leaves the rank to take a whole image (its sender knows).
        if (!got && (out.route == routing_sink::to_restorer || ++failed == 4)) fail(got.err());
        if (got && !(got->summary.header.flags & image::header_pages_only)) ::_exit(0);
    }
}

// The gate of `restart-rank` under ghostrun (runtime/job_protocol.h), in a process of its own
// (orphaned: no child of the restored rank): tells the coordinator this rank's restorer's verdict
// on its image and hands the coordinator's answer back, GO once every rank's image is verified.
[[noreturn]] void run_restart_gate(int coord_fd, const std::string &hello, long rank,
                                   const std::string &image, int restorer_fd) {
    // Not a writer of the rank's output: mpirun's forwarding would wait for this process too.
    int null = ::open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null >= 0) {
        ::dup2(null, 0);
        ::dup2(null, 1);
    }
    std::signal(SIGPIPE, SIG_IGN);
    (void)control::write_all(coord_fd, hello.data(), hello.size());
    std::string from_restorer, from_coord;
    for (;;) {
        pollfd p[2] = {{restorer_fd, POLLIN, 0}, {coord_fd, POLLIN, 0}};
        if (::poll(p, 2, -1) < 0) {
            if (errno == EINTR) continue;
            ::_exit(1);
        }
        char buf[1024];
        if (p[0].revents) {
            ssize_t n = ::read(restorer_fd, buf, sizeof buf);
            if (n <= 0) { // killed, or it failed before the gate was set up (its stderr says why)
                std::string l = "ENDED rank " + std::to_string(rank) +
                                "'s restorer ended before its image " + image + " was verified\n";
                (void)control::write_all(coord_fd, l.data(), l.size());
                ::_exit(0);
            }
            from_restorer.append(buf, (size_t)n);
            for (size_t nl; (nl = from_restorer.find('\n')) != std::string::npos;) {
                std::string line = from_restorer.substr(0, nl);
                from_restorer.erase(0, nl + 1);
                std::string l = line == "VERIFIED" ? "VERIFIED\n"
                                : line.rfind("ERR ", 0) == 0
                                    ? "REFUSED rank " + std::to_string(rank) + "'s image " + image +
                                          ": " + line.substr(4) + "\n"
                                    : "REFUSED rank " + std::to_string(rank) +
                                          "'s restorer said: " + line + "\n";
                (void)control::write_all(coord_fd, l.data(), l.size());
                if (l[0] == 'R') ::_exit(0);
            }
        }
        if (p[1].revents) {
            ssize_t n = ::read(coord_fd, buf, sizeof buf);
            if (n <= 0) ::_exit(1); // the coordinator is gone: the restorer sees the gate end
            from_coord.append(buf, (size_t)n);
            size_t nl = from_coord.find('\n');
            if (nl == std::string::npos) continue;
            std::string word = from_coord.substr(0, nl);
            if (word == "GO" || word == "NOGO") {
                char c = word == "GO" ? 'G' : 'N';
                (void)!::write(restorer_fd, &c, 1);
                ::_exit(0);
            }
            std::fprintf(stderr, "ghost: restart-rank %ld: the coordinator said: %s\n", rank,
                         word.c_str());
            ::_exit(1);
        }
    }
}

} // namespace

// This process's MPI rank as mpirun gives it, or -1 once said why (`restart-rank` runs as a rank).
static long mpi_rank_from_env() {
    const char *rank = nullptr;
    for (const char *v : {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK"})
        if ((rank = std::getenv(v)) && *rank) break;
    if (!rank || !*rank) {
        fail("restart-rank runs as an MPI rank under mpirun (no OMPI_COMM_WORLD_RANK, PMIX_RANK or "
             "PMI_RANK in the environment)");
        return -1;
    }
    char *end = nullptr;
    long r = std::strtol(rank, &end, 10);
    if (*end || r < 0) {
        fail(std::string("bad MPI rank '") + rank + "'");
        return -1;
    }
    return r;
}

// `ghost restart-rank DIR`: this rank's process becomes the restorer of DIR/rank<R>.ghost. Under
// ghostrun, behind a gate: the restorer verifies the whole image, then waits until every rank's
// is verified (a refusal anywhere ends every rank quietly, and ghostrun says why in one line).
int cmd_restart_rank(const std::string &dir) {
    long r = mpi_rank_from_env();
    if (r < 0) return 1;
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
    auto sources = core::open_sources(path, *head);
    if (!sources)
        return fail("cannot restart rank " + std::to_string(r) + " from " + path + ": " +
                    sources.err().message);
    for (int s : *sources)
        ::fcntl(s, F_SETFD, 0);
    int fd = ::dup((*src)->stream_fd()); // without close-on-exec
    if (fd < 0 || ::lseek(fd, 0, SEEK_SET) != 0) return fail("cannot reopen " + path);
    std::string image_arg = std::to_string(fd), sources_arg = core::sources_arg(*sources);
    // Without a coordinator (no status socket, -1): the restorer reports a failure on stderr and
    // exits 1, which mpirun sees as the rank's failure.
    std::string status_arg = "-1";
    const char *coord = std::getenv(job::kEnvCoordinator), *job = std::getenv(job::kEnvJob),
               *secret = std::getenv(job::kEnvSecret);
    if (coord && *coord && job && *job && secret && *secret) {
        const char *size = nullptr;
        for (const char *v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE"})
            if ((size = std::getenv(v)) && *size) break;
        if (!size || std::atol(size) <= 0)
            return fail("restart-rank: no OMPI_COMM_WORLD_SIZE or PMI_SIZE in the environment");
        int coord_fd = connect_coordinator(coord);
        if (coord_fd < 0) return fail(std::string("cannot reach the job coordinator at ") + coord);
        int sp[2];
        if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) != 0)
            return fail("cannot create a socket pair");
        std::string hello = std::string("GATE ") + job + " " + secret + " " + std::to_string(r) +
                            " " + std::to_string(std::atol(size)) + "\n";
        pid_t child = fork_orphan();
        if (child < 0) return fail("cannot fork the restart gate");
        if (child == 0) {
            ::close(sp[0]);
            ::close(fd);
            for (int s : *sources)
                ::close(s);
            run_restart_gate(coord_fd, hello, r, path, sp[1]);
        }
        ::close(sp[1]);
        ::close(coord_fd);
        ::fcntl(sp[0], F_SETFD, 0);
        status_arg = std::to_string(sp[0]);
    }
    std::vector<const char *> argv = {"ghost-restart", image_arg.c_str(), status_arg.c_str(),
                                      "--rank"};
    if (status_arg != "-1") argv.push_back("--gate");
    if (!sources_arg.empty()) argv.push_back(sources_arg.c_str());
    argv.push_back(nullptr);
    std::fflush(nullptr);
    ::execve(restorer_path->c_str(), (char *const *)argv.data(), environ);
    return fail("cannot run the restorer " + *restorer_path + ": " + std::strerror(errno));
}

// GHOST_BIND="RANK:CPU,..." (ghostrun --balance moved RANK here): this process, and with it the
// rank it becomes (the affinity outlives execve and the restore), binds to the core of CPU on its
// host. Empty when there is nothing to do, else why the binding failed (the rank runs unbound).
std::string bind_moved_rank(long rank) {
    const char *spec = std::getenv("GHOST_BIND");
    if (!spec || !*spec) return "";
    long cpu = -1;
    std::istringstream in(spec);
    for (std::string item; std::getline(in, item, ',');) {
        char *end = nullptr;
        long r = std::strtol(item.c_str(), &end, 10);
        if (*end == ':' && r == rank) cpu = std::strtol(end + 1, nullptr, 10);
    }
    if (cpu < 0) return "";
    hwloc_topology_t topo;
    if (hwloc_topology_init(&topo) != 0) return "hwloc cannot start";
    std::string why;
    if (hwloc_topology_load(topo) != 0) {
        why = "hwloc cannot read this host's topology";
    } else if (hwloc_obj_t pu = hwloc_get_pu_obj_by_os_index(topo, (unsigned)cpu); !pu) {
        why = "this host has no CPU " + std::to_string(cpu);
    } else {
        // The whole core (its hardware threads), as mpirun's --bind-to core does.
        hwloc_obj_t core = hwloc_get_ancestor_obj_by_type(topo, HWLOC_OBJ_CORE, pu);
        if (hwloc_set_cpubind(topo, core ? core->cpuset : pu->cpuset, HWLOC_CPUBIND_PROCESS) != 0)
            why = std::string("cannot bind to CPU ") + std::to_string(cpu) + ": " +
                  std::strerror(errno);
    }
    hwloc_topology_destroy(topo);
    return why;
}

// The exit status of process `pid` as a shell shows it, read from its pidfd once its parent (not
// us) has reaped it (PIDFD_INFO_EXIT, Linux 6.15); -1 when the kernel cannot tell.
int reaped_status(int pidfd) {
    struct pidfd_info {
        uint64_t mask, cgroupid;
        uint32_t pid, tgid, ppid, ruid, rgid, euid, egid, suid, sgid, fsuid, fsgid;
        int32_t exit_code;
    };
    constexpr uint64_t info_exit = 1u << 3;                            // PIDFD_INFO_EXIT
    const unsigned long get_info = _IOWR(0xFF, 11, struct pidfd_info); // PIDFD_GET_INFO
    for (int unreaped = 0;;) {
        struct pollfd p = {pidfd, POLLIN, 0};
        int r = ::poll(&p, 1, -1);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return -1;
        if (!(p.revents & POLLHUP)) {          // exited, not reaped yet: its parent reaps it
            if (++unreaped > 30000) return -1; // 30 s: a parent that never does
            ::usleep(1000);
            continue;
        }
        pidfd_info info{};
        info.mask = info_exit;
        if (::ioctl(pidfd, get_info, &info) != 0 || !(info.mask & info_exit)) return -1;
        int ws = info.exit_code;
        if (WIFEXITED(ws)) return WEXITSTATUS(ws);
        if (WIFSIGNALED(ws)) return 128 + WTERMSIG(ws);
        return 1;
    }
}

// Until its switch, a process of a live migration's new mpirun is the migration's, not the job's:
// ghostrun reports a failure here in one line (the migration is given up, the job goes on where
// it was), so the process says why and ends quietly (status 0). An MPI launcher that saw it fail
// would print a page of its own (Open MPI: "the job has been aborted"; Hydra: "BAD TERMINATION").
static int given_up(const std::string &why) {
    (void)fail(why);
    return 0;
}

// `ghost migrate --keep`: in the new mpirun, the process of a rank that keeps its own (pid,
// on this host). It hands the rank what a process of this launch has (runtime/job_protocol.h,
// keep_hello), then stands for it: the signals mpirun sends go to the rank, and its exit status
// is the rank's. Before the rank took it (kKeepAdopted), it passes nothing on: the migration may
// still be abandoned, and the rank goes on under its old mpirun.
int run_placeholder(long rank, pid_t pid, const char *secret) {
    // Its mpirun gone, the placeholder follows (and, once it stands for the rank, takes the rank
    // with it: that launch is over).
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    const std::string what =
        "restart-rank " + std::to_string(rank) + " (kept in pid " + std::to_string(pid) + ")";
    char dir[4096];
    const char *why = nullptr;
    if (!control::runtime_dir(dir, sizeof dir, &why)) return given_up(what + ": " + why);
    std::string path = std::string(dir) + "/keep-" + std::to_string(pid) + ".sock";
    int pidfd = (int)::syscall(SYS_pidfd_open, pid, 0);
    if (pidfd < 0) return given_up(what + ": no such process on this host");
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    if (path.size() >= sizeof a.sun_path) return given_up(what + ": socket path too long");
    std::memcpy(a.sun_path, path.c_str(), path.size() + 1);
    int s = -1;
    // The rank listens once the coordinator's ACCEPT reached it: after the moving ranks'
    // pre-copies, which take as long as their memory takes to copy. The coordinator gives up on
    // its side first (it ends this mpirun, and this process with it: PR_SET_PDEATHSIG); the bound
    // here only keeps a placeholder whose coordinator vanished from waiting for ever.
    for (int i = 0; i < 360000; i++) {
        s = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (s >= 0 && ::connect(s, (sockaddr *)&a, sizeof a) == 0) break;
        if (s >= 0) ::close(s);
        s = -1;
        struct pollfd p = {pidfd, POLLIN, 0};
        if (::poll(&p, 1, 10) > 0) return given_up(what + ": the rank's process ended");
    }
    if (s < 0) return given_up(what + ": the rank never listened at " + path);
    std::string env;
    for (char **e = environ; *e; e++)
        env.append(*e, std::strlen(*e) + 1);
    int fds[4] = {0, 1, 2, -1};
    uint32_t nfds = 3;
    if (const char *pmi = std::getenv("PMI_FD"); pmi && *pmi) {
        int fd = std::atoi(pmi);
        if (fd > 2 && ::fcntl(fd, F_GETFD) >= 0) fds[nfds++] = fd;
    }
    job::keep_hello h{};
    std::memcpy(h.magic, job::kKeepMagic, sizeof h.magic);
    h.rank = (int32_t)rank;
    h.secret_len = (uint32_t)std::strlen(secret);
    h.env_len = env.size();
    h.nfds = nfds;
    alignas(cmsghdr) char cbuf[CMSG_SPACE(sizeof fds)] = {};
    iovec iov = {&h, sizeof h};
    msghdr m{};
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    m.msg_control = cbuf;
    m.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
    cmsghdr *cm = CMSG_FIRSTHDR(&m);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(nfds * sizeof(int));
    std::memcpy(CMSG_DATA(cm), fds, nfds * sizeof(int));
    ::signal(SIGPIPE, SIG_IGN); // a rank that refused us closes the connection: an error here
    auto write_all = [s](const char *p, size_t n) {
        while (n) {
            ssize_t k = ::send(s, p, n, MSG_NOSIGNAL);
            if (k < 0 && errno == EINTR) continue;
            if (k <= 0) return false;
            p += k;
            n -= (size_t)k;
        }
        return true;
    };
    if (::sendmsg(s, &m, MSG_NOSIGNAL) != (ssize_t)sizeof h || !write_all(secret, h.secret_len) ||
        !write_all(env.data(), env.size()))
        return given_up(what + ": cannot reach the rank: " + std::strerror(errno));
    for (int i = 0; i < 3; i++) // the rank holds them now; mpirun's pipes stay open through it
        if (fds[i] >= 0) ::close(fds[i]);
    bool adopted = false;
    for (;;) {
        // The rank's process (its end), and while it is open the rank's word.
        struct pollfd p[2] = {{pidfd, POLLIN, 0}, {s, POLLIN, 0}};
        int r = ::poll(p, s >= 0 ? 2 : 1, -1);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return adopted ? fail(what + ": poll failed") : given_up(what + ": poll failed");
        if (s >= 0 && (p[1].revents & (POLLIN | POLLHUP | POLLERR))) {
            char c = 0;
            ssize_t k = ::read(s, &c, 1);
            if (k == 1 && c == job::kKeepAdopted) {
                adopted = true;
                g_child = pid; // from now on mpirun's signals are the rank's
                struct sigaction sa {};
                sa.sa_handler = forward_signal;
                sa.sa_flags = SA_RESTART;
                for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2})
                    ::sigaction(sig, &sa, nullptr);
                continue;
            }
            if (k == 1 && c == job::kKeepDetached) return 0; // the rank went on to the next job
            if (k < 0 && errno == EINTR) continue;
            if (!adopted) return 0; // abandoned: the rank goes on under its old mpirun
            ::close(s);             // the rank's process is ending: its status follows
            s = -1;
            continue;
        }
        if (p[0].revents) {
            if (!adopted) return 0;
            int status = reaped_status(pidfd);
            if (status < 0)
                return fail(what + ": the exit status of the rank cannot be read (PIDFD_INFO_EXIT "
                                   "needs Linux 6.15)");
            return status;
        }
    }
}

// The rank's pid in GHOST_KEEP ("<rank>:<pid>,..."), or 0: this rank moves.
pid_t kept_pid(long rank) {
    const char *keep = std::getenv(job::kEnvKeep);
    for (const char *at = keep; at && *at;) {
        char *end = nullptr;
        long r = std::strtol(at, &end, 10);
        if (*end != ':') return 0;
        long pid = std::strtol(end + 1, &end, 10);
        if (r == rank) return (pid_t)pid;
        if (*end != ',') return 0;
        at = end + 1;
    }
    return 0;
}

// `ghost restart-rank --receive` (a live migration, runtime/job_protocol.h): this rank's process
// becomes the restorer of an image that streams in from the rank's old process; a receiver
// process of its own (orphaned: no child of the restored rank) takes the stream.
int cmd_restart_rank_receive() {
    long r = mpi_rank_from_env();
    if (r < 0) return 1;
    const char *coord = std::getenv(job::kEnvCoordinator), *job = std::getenv(job::kEnvJob),
               *secret = std::getenv(job::kEnvSecret);
    if (!coord || !*coord || !job || !*job || !secret || !*secret)
        return fail("restart-rank --receive runs under ghostrun (no " +
                    std::string(job::kEnvCoordinator) + ", " + job::kEnvJob + " or " +
                    job::kEnvSecret + " in the environment)");
    if (pid_t kept = kept_pid(r); kept > 0) return run_placeholder(r, kept, secret);
    // Tests only (GHOST_TEST_RECEIVE_DIE, see pipe_restore_sink): a file that says "start stop"
    // freezes this process before it reaches anyone, as a new rank process stopped as soon as it
    // runs (the file goes, once).
    if (const char *f = std::getenv("GHOST_TEST_RECEIVE_DIE"); f && *f) {
        char word[8] = "";
        if (std::FILE *in = std::fopen(f, "re")) {
            bool at_start = std::fscanf(in, "%7s", word) == 1 && std::strcmp(word, "start") == 0;
            std::fclose(in);
            if (at_start && ::unlink(f) == 0) ::kill(::getpid(), SIGSTOP);
        }
    }
    auto restorer_path = restorer();
    if (!restorer_path) return given_up(restorer_path.err().message);
    int coord_fd = connect_coordinator(coord);
    if (coord_fd < 0) return given_up(std::string("cannot reach the job coordinator at ") + coord);
    int img[2], st[2], decision[2];
    if (::pipe2(img, O_CLOEXEC) != 0 || ::pipe2(st, O_CLOEXEC) != 0 ||
        ::pipe2(decision, O_CLOEXEC) != 0)
        return given_up("cannot create a pipe");
    ::fcntl(img[1], F_SETPIPE_SZ, 1 << 20);
    int rounds[image::max_precopy_rounds];
    for (int &fd : rounds)
        if ((fd = ::memfd_create("ghost-precopy", MFD_CLOEXEC)) < 0)
            return given_up("cannot create a memory file for the pre-copy");
    pid_t child = fork_orphan();
    if (child < 0) return given_up("cannot fork the receiver");
    if (child == 0) {
        ::close(img[0]);
        ::close(st[1]);
        ::close(decision[0]);
        run_rank_receiver(coord_fd, job, secret, r, img[1], st[0], rounds, decision[1]);
    }
    ::close(img[1]);
    ::close(st[0]);
    ::close(decision[1]);
    ::close(coord_fd);
    // Only the rank's process: its receiver (forked above) keeps every CPU for the transfer.
    if (std::string why = bind_moved_rank(r); !why.empty())
        std::fprintf(stderr, "ghost: restart-rank %ld: runs unbound: %s\n", r, why.c_str());
    // The restorer starts as soon as a pre-copy is in (it places it, then waits for the image),
    // or with the image itself when none came first.
    char how = 0;
    while (::read(decision[0], &how, 1) < 0 && errno == EINTR) {
    }
    if (how != kWithPrecopy && how != kWhole) return 0; // the receiver said why
    ::close(decision[0]);
    ::fcntl(img[0], F_SETFD, 0);
    ::fcntl(st[1], F_SETFD, 0);
    std::string image_arg = std::to_string(img[0]), status_arg = std::to_string(st[1]);
    // The first round is the restorer's source from the start, the others once they are in.
    std::string sources_arg = "--sources=" + std::to_string(rounds[0]), rounds_arg = "--rounds=";
    for (uint32_t i = 0; i < image::max_precopy_rounds; i++) {
        if (how == kWithPrecopy)
            ::fcntl(rounds[i], F_SETFD, 0);
        else
            ::close(rounds[i]);
        if (i > 0)
            rounds_arg +=
                std::to_string(rounds[i]) + (i + 1 < image::max_precopy_rounds ? "," : "");
    }
    std::vector<const char *> argv = {"ghost-restart", image_arg.c_str(), status_arg.c_str(),
                                      "--rank", "--moving"};
    if (how == kWithPrecopy) { // (placed at once: the receiver waits for its PLACED)
        argv.push_back(sources_arg.c_str());
        argv.push_back(rounds_arg.c_str());
        argv.push_back("--say-placed");
    }
    argv.push_back(nullptr);
    ::execve(restorer_path->c_str(), (char *const *)argv.data(), environ);
    return given_up("cannot run the restorer " + *restorer_path + ": " + std::strerror(errno));
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
    int status = reaped_status(pidfd);
    ::close(pidfd);
    if (status < 0)
        return fail("the exit status of the copy " + std::to_string(copy) +
                    " cannot be read (PIDFD_INFO_EXIT needs Linux 6.15)");
    return status;
}

// The copy is restored by a `ghost receive --restore` elsewhere: the image streams there while it
// is exported, and the original goes on once the export is done.
int duplicate_to(const duplicate_args &a) {
    auto t0 = clock_type::now();
    auto sink = open_target(a.to, a.secret_file, a.pid, true);
    if (!sink)
        return fail("cannot duplicate pid " + std::to_string(a.pid) + ": " + sink.err().message);
    auto proc = core::parked_process::park(a.pid);
    if (!proc) return fail(proc.err().message);
    auto stats = core::export_process(*proc, **sink);
    if (!stats) {
        (*sink)->abort();
        return fail("cannot duplicate pid " + std::to_string(a.pid) + ": " + stats.err().message);
    }
    if (auto r = proc->resume(); !r) return fail(r.err().message);
    double export_s = since(t0);
    auto t1 = clock_type::now();
    if (auto c = (*sink)->commit(); !c)
        return fail("cannot duplicate pid " + std::to_string(a.pid) + ": " + c.err().message);
    std::fprintf(stderr,
                 "ghost: duplicate pid=%d to=%s bytes=%llu export_s=%s confirm_s=%s total_s=%s\n",
                 (int)a.pid, a.to.c_str(), (unsigned long long)stats->image_bytes,
                 seconds(export_s).c_str(), seconds(since(t1)).c_str(), seconds(since(t0)).c_str());
    return 0;
}

namespace {

// A pre-copy held in memory for a copy made here: the image (its source for the restorer, which
// places it ahead) and its index (the parent of the image taken next).
struct precopied {
    std::unique_ptr<res::source> source;
    core::image_index index;
    uint64_t bytes = 0;
    double seconds = 0;
};

result<precopied> precopy_in_memory(pid_t pid, uint64_t resident) {
    auto t0 = clock_type::now();
    auto running = core::parked_process::attach_running(pid);
    if (!running) return running.err();
    auto sink = res::mem_sink::create(resident);
    if (!sink) return sink.err();
    precopied p;
    auto stats = core::export_precopy(*running, **sink, p.index);
    if (!stats) return error{"the pre-copy failed: " + stats.err().message};
    if (auto c = (*sink)->commit(); !c) return c.err();
    auto src = (*sink)->open_source();
    if (!src) return src.err();
    p.source = std::move(*src);
    p.bytes = stats->image_bytes;
    p.seconds = since(t0);
    return p;
}

} // namespace

int cmd_duplicate(const duplicate_args &a) {
    if (a.precopy && (!a.via_image || !a.to.empty()))
        return fail("--precopy goes with --via-image (a local copy through an image)");
    if (!a.to.empty()) {
        if (!a.pid_file.empty() || a.detach)
            return fail("--pid-file and --detach are for a local copy (the receiver has the pid)");
        return duplicate_to(a);
    }
    auto t0 = clock_type::now();
    std::string fallback = "--via-image";
    if (!a.via_image) {
        auto fast = core::request_fast_duplicate(a.pid, !a.new_ids);
        if (!fast) return fail(fast.err().message);
        if (fast->copy > 0) {
            std::fprintf(stderr,
                         "ghost: duplicate pid=%d copy=%d via=fork ids=%s park_s=%s fork_s=%s "
                         "total_s=%s\n",
                         (int)a.pid, (int)fast->copy, fast->kept_ids ? "kept" : "new",
                         seconds(fast->park_s).c_str(), seconds(fast->fork_s).c_str(),
                         seconds(since(t0)).c_str());
            write_pid_file(a.pid_file, fast->copy);
            if (a.detach) {
                ::close(fast->pidfd);
                return 0;
            }
            return wait_copy(fast->copy, fast->pidfd);
        }
        fallback = fast->fallback; // said with the result: an error stays one line
    }
    auto restorer_path = restorer();
    if (!restorer_path) return fail(restorer_path.err().message);
    // The image's memory is taken while the process still runs; it is stopped only for the copy.
    // (Unreadable for a pid that is not ours: parking then says why.)
    // (After a pre-copy the image holds only what was written since: its sink grows as it must.)
    auto resident = core::resident_bytes(a.pid);
    auto sink = res::mem_sink::create(resident && !a.precopy ? *resident : 0);
    if (!sink) return fail(sink.err().message);
    double prepare_s = since(t0);
    core::export_options xo;
    std::optional<precopied> pre;
    if (a.precopy) {
        auto got = precopy_in_memory(a.pid, resident ? *resident : 0);
        if (!got)
            return fail("cannot duplicate pid " + std::to_string(a.pid) + ": " + got.err().message);
        pre = std::move(*got);
        xo.track = true;
        xo.parent_index = &pre->index;
        xo.parent_name = kPrecopyName;
    }
    auto t_park = clock_type::now();
    auto proc = core::parked_process::park(a.pid);
    if (!proc) return fail(proc.err().message);
    auto stats = core::export_process(*proc, **sink, xo);
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
    if (pre) opt.source_fds.push_back(pre->source->stream_fd());
    auto pid = core::import_process((*src)->stream_fd(), opt);
    if (!pid)
        return fail("cannot duplicate pid " + std::to_string(a.pid) + ": " + pid.err().message);
    src->reset();
    sink->reset();
    // export_s: while the process was stopped (with --precopy, precopy_s: before, while it ran).
    std::fprintf(stderr,
                 "ghost: duplicate pid=%d copy=%d via=image (%s) bytes=%llu prepare_s=%s "
                 "%sexport_s=%s import_s=%s total_s=%s\n",
                 (int)a.pid, (int)*pid, fallback.c_str(), (unsigned long long)stats->image_bytes,
                 seconds(prepare_s).c_str(),
                 pre ? ("precopy_bytes=" + std::to_string(pre->bytes) +
                        " precopy_s=" + seconds(pre->seconds) + " ")
                           .c_str()
                     : "",
                 seconds(export_s).c_str(), seconds(since(t1)).c_str(), seconds(since(t0)).c_str());
    write_pid_file(a.pid_file, *pid);
    if (a.detach) return 0;
    return wait_child(*pid);
}

namespace {

// Feeds the stream to the restorer through a pipe while it arrives: the restorer reads an image
// in order (a pipe is read by its main thread alone), verifies it again and lets the process run
// only after the trailer. Started on the first piece (the header's pid is tried for the new
// process); commit() closes the pipe and waits for the restored process to be about to run.
class restore_sink final : public res::sink {
  public:
    explicit restore_sink(std::string restorer) : restorer_(std::move(restorer)) {}
    ~restore_sink() override { abort(); }

    result<void> write(const void *data, size_t len) override {
        if (!started_) GHOST_TRY(start(data, len));
        if (write_fd_ < 0) return error{"the restorer's input was closed"};
        const char *p = (const char *)data;
        while (len) {
            ssize_t n = ::write(write_fd_, p, len);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) {
                if (errno != EPIPE) return sys_error("cannot feed the restorer");
                close_input();
                return restorer_error();
            }
            p += n;
            len -= (size_t)n;
        }
        return {};
    }

    result<void> commit() override {
        if (!started_) return error{"the image is empty"};
        close_input();
        if (!pid_) return restorer_error();
        committed_ = true;
        return {};
    }

    void abort() noexcept override {
        close_input();
        if (pid_ && !committed_) { // cannot happen (a cut image is refused); never leave one
            ::kill(*pid_, SIGKILL);
            ::waitpid(*pid_, nullptr, 0);
            pid_ = error{"the image was dropped"};
        }
    }

    std::string describe() const override { return "the restorer"; }
    pid_t pid() const { return pid_.value(); }

  private:
    result<void> start(const void *data, size_t len) {
        started_ = true;
        core::import_options opt;
        opt.restorer = restorer_;
        opt.inherit_stdio = true;
        // The header record comes first; the restorer checks it again.
        constexpr size_t pid_at =
            sizeof(image::record_header) + offsetof(image::header_record, pid);
        if (len >= pid_at + sizeof(int32_t))
            std::memcpy(&opt.want_pid, (const char *)data + pid_at, 4);
        int p[2];
        if (::pipe2(p, O_CLOEXEC) != 0) return sys_error("cannot create a pipe");
        ::fcntl(p[1], F_SETPIPE_SZ, 1 << 20); // fewer, larger hand-overs (best effort)
        write_fd_ = p[1];
        int read_fd = p[0];
        feeder_ = std::thread([this, read_fd, opt] {
            pid_ = core::import_process(read_fd, opt);
            ::close(read_fd);
        });
        return {};
    }

    void close_input() {
        if (write_fd_ >= 0) ::close(write_fd_);
        write_fd_ = -1;
        if (feeder_.joinable()) feeder_.join();
    }

    error restorer_error() const {
        return error{"the restorer refused the image: " +
                     (pid_ ? std::string("?") : pid_.err().message)};
    }

    std::string restorer_;
    bool started_ = false, committed_ = false;
    int write_fd_ = -1;
    std::thread feeder_;
    result<pid_t> pid_ = error{"the restorer did not finish"};
};

} // namespace

int cmd_receive(const receive_args &a) {
    auto t0 = clock_type::now();
    auto listen = res::parse_ucx_address(a.listen, true);
    if (!listen) return fail("--listen: " + listen.err().message);
    auto secret = res::read_ucx_secret(a.secret_file);
    if (!secret) return fail(secret.err().message);
    res::ucx_receive_options opt;
    opt.listen = *listen;
    opt.secret = *secret;
    opt.accept_timeout_ms = a.timeout_s * 1000;
    if (listen->port == 0) // the port the kernel picked: whoever sends needs it
        opt.on_listening = [](const res::ucx_address &bound) {
            std::fprintf(stderr, "ghost: receiving on %s\n", bound.str().c_str());
        };
    std::signal(SIGPIPE, SIG_IGN); // a restorer that refuses the image closes the pipe early
    if (a.restore) {
        auto restorer_path = restorer();
        if (!restorer_path) return fail(restorer_path.err().message);
        control::remove_stale_sockets();
        restore_sink out(*restorer_path);
        auto got = res::receive_ucx_image(opt, out);
        if (!got) return fail(got.err().message);
        pid_t pid = out.pid();
        std::fprintf(stderr,
                     "ghost: received from=%s bytes=%llu memory_bytes=%llu receive_s=%s "
                     "restored pid=%d total_s=%s\n",
                     got->peer.c_str(), (unsigned long long)got->summary.image_bytes,
                     (unsigned long long)got->summary.memory_bytes, seconds(got->seconds).c_str(),
                     (int)pid, seconds(since(t0)).c_str());
        write_pid_file(a.pid_file, pid);
        return wait_child(pid);
    }
    std::string path = absolute(image_path(a.out));
    auto out = res::create_file_sink(path);
    if (!out) return fail(out.err().message);
    auto got = res::receive_ucx_image(opt, **out);
    if (!got) return fail(got.err().message);
    double gbps = got->seconds > 0 ? (double)got->summary.image_bytes / got->seconds / 1e9 : 0;
    std::printf("received image=%s from=%s bytes=%llu memory_bytes=%llu records=%llu "
                "receive_s=%s gb_per_s=%.2f\n",
                path.c_str(), got->peer.c_str(), (unsigned long long)got->summary.image_bytes,
                (unsigned long long)got->summary.memory_bytes,
                (unsigned long long)got->summary.records, seconds(got->seconds).c_str(), gbps);
    return 0;
}

// What `ghost inspect` says of a descriptor beyond its kind: its path, or the state it is made
// again with.
std::string file_detail(const core::file_summary &f) {
    const std::string &d = f.data;
    auto state = [&](auto &st) {
        return d.size() >= sizeof st && (std::memcpy(&st, d.data(), sizeof st), true);
    };
    switch (f.record.kind) {
    case image::file_dup:
        return "of fd " + std::to_string(f.record.dup_of);
    case image::file_object:
        return "object #" + std::to_string(f.record.pipe_id);
    case image::file_eventfd: {
        image::eventfd_state st{};
        if (!state(st)) break;
        return "count " + std::to_string(st.count) + (st.semaphore ? " (semaphore)" : "");
    }
    case image::file_timerfd: {
        image::timerfd_state st{};
        if (!state(st)) break;
        char text[128];
        std::snprintf(text, sizeof text,
                      "clock %d, %s %lld.%09lld s, interval %lld.%09lld s, %llu unread", st.clock,
                      (st.settime_flags & 1) && (st.clock == 0 || st.clock == 8) ? "at" : "in",
                      (long long)st.value[0], (long long)st.value[1], (long long)st.interval[0],
                      (long long)st.interval[1], (unsigned long long)st.ticks);
        return text;
    }
    case image::file_signalfd: {
        uint64_t mask = 0;
        if (!state(mask)) break;
        char text[48];
        std::snprintf(text, sizeof text, "mask %#llx", (unsigned long long)mask);
        return text;
    }
    case image::file_epoll: {
        std::string out = std::to_string(d.size() / sizeof(image::epoll_watch)) + " watches:";
        for (size_t at = 0; at + sizeof(image::epoll_watch) <= d.size();
             at += sizeof(image::epoll_watch)) {
            image::epoll_watch w;
            std::memcpy(&w, d.data() + at, sizeof w);
            out += " fd " + std::to_string(w.fd);
        }
        return out;
    }
    case image::file_inotify: {
        std::string out;
        int count = 0;
        for (size_t at = 0; at + sizeof(image::inotify_watch) <= d.size();) {
            image::inotify_watch w;
            std::memcpy(&w, d.data() + at, sizeof w);
            at += sizeof w;
            out += " " + std::to_string(w.wd) + "=" + std::string(d.c_str() + at);
            at += w.path_len;
            count++;
        }
        return std::to_string(count) + " watches:" + out;
    }
    case image::file_socket_pair: {
        image::socket_state st{};
        if (!state(st)) break;
        return std::string(st.type == SOCK_STREAM  ? "stream"
                           : st.type == SOCK_DGRAM ? "datagram"
                                                   : "seqpacket") +
               " pair #" + std::to_string(f.record.pipe_id) + " end " + std::to_string(st.end) +
               ", " + std::to_string(d.size() - sizeof st) + " bytes queued";
    }
    case image::file_socket_endpoint: {
        image::socket_endpoint ep{};
        if (!state(ep)) break;
        auto address = [](const uint8_t *a, uint32_t len) -> std::string {
            char host[INET6_ADDRSTRLEN] = "?";
            uint16_t port = (uint16_t)(a[2] << 8 | a[3]);
            if (len >= 2 && a[0] == AF_UNIX)
                return a[2]
                           ? std::string((const char *)a + 2, strnlen((const char *)a + 2, len - 2))
                           : "@" + std::string((const char *)a + 3, len > 3 ? len - 3 : 0);
            if (a[0] == AF_INET) inet_ntop(AF_INET, a + 4, host, sizeof host);
            if (a[0] == AF_INET6) inet_ntop(AF_INET6, a + 8, host, sizeof host);
            return (a[0] == AF_INET6 ? "[" + std::string(host) + "]" : std::string(host)) + ":" +
                   std::to_string(port);
        };
        std::string out = ep.backlog       ? "listening on "
                          : ep.type != 2   ? "not connected, on "
                          : ep.family == 1 ? "datagrams on "
                                           : "UDP on ";
        out += address(ep.local, ep.local_len);
        if (ep.backlog) out += ", backlog " + std::to_string(ep.backlog);
        if (ep.peer_len) out += ", connected to " + address(ep.peer, ep.peer_len);
        return out;
    }
    default:
        return f.path;
    }
    return "(bad state)";
}

int cmd_inspect(const std::string &arg) {
    std::string path = image_path(arg);
    auto src = res::open_file_source(path);
    if (!src) return fail(unopened_image(arg, src.err()));
    auto s = core::read_image(**src);
    if (!s) return fail(path + ": " + s.err().message);
    const image::header_record &h = s->header;
    std::printf("image      %s\n", path.c_str());
    std::printf("format     %u, ghost %s, kernel %s, host %s\n", h.format_version, h.ghost_version,
                h.kernel_release, h.hostname);
    std::printf("process    pid %d, %zu threads, %s (build id %s)\n", h.pid, s->threads.size(),
                s->exe.c_str(),
                core::hex(std::string((const char *)h.exe_build_id, h.exe_build_id_len)).c_str());
    if (h.flags & image::header_job_rank)
        std::printf("job rank   yes: it restarts only with its job (ghost restart DIR)\n");
    if (h.flags & image::header_pages_only)
        std::printf("pre-copy   yes: pages only, taken while the process ran (the source of the "
                    "image after it)\n");
    else
        std::printf("cwd        %s\n", s->cwd.c_str());
    size_t next_stream = 0;
    for (const auto &m : s->tree_members) {
        std::string what = m.state == image::tree_zombie
                               ? "zombie, wait status " + std::to_string(m.wait_status)
                               : "";
        if (m.state == image::tree_live && next_stream < s->tree_images.size()) {
            const auto &t = s->tree_images[next_stream++];
            what = std::to_string(t.threads.size()) + " threads, " + t.exe + ", " +
                   std::to_string(t.memory_bytes) + " memory bytes";
        }
        std::printf("tree       pid %d (parent %d, group %d, session %d): %s\n", m.pid, m.ppid,
                    m.pgid, m.sid, what.c_str());
    }
    if (s->tree_shared)
        std::printf("tree       %u open file descriptions shared\n", s->tree_shared);
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
    if (s->scan_id) {
        std::printf("tracking   scan %016llx; %llu bytes of memory taken from %zu older images%s\n",
                    (unsigned long long)s->scan_id, (unsigned long long)s->referenced_bytes,
                    s->sources.size(), s->sources.empty() ? " (a whole image)" : ":");
        for (const auto &src : s->sources)
            std::printf("  %s (%llu bytes, scan %016llx)\n",
                        std::string(src.name, strnlen(src.name, sizeof src.name)).c_str(),
                        (unsigned long long)src.size, (unsigned long long)src.scan_id);
    }
    if (!s->objects.empty()) std::printf("objects    %zu\n", s->objects.size());
    for (const auto &o : s->objects)
        std::printf("  #%-3llu %-7s size %-10llu %10llu stored  mode %04o seals %#x  %s\n",
                    (unsigned long long)o.record.id,
                    o.record.kind == image::object_memfd ? "memfd" : "deleted",
                    (unsigned long long)o.record.size, (unsigned long long)o.stored_bytes,
                    o.record.mode, o.record.seals, o.name.c_str());
    static const char *kinds[] = {"?",     "anon", "shared", "file",          "file-shared",
                                  "stack", "heap", "object", "object-private"};
    std::printf("regions    %zu\n", s->regions.size());
    for (const auto &r : s->regions) {
        const auto &rr = r.record;
        std::string referenced =
            r.referenced_bytes ? " +" + std::to_string(r.referenced_bytes) + " referenced " : "";
        std::printf("  %012llx-%012llx %c%c%c %-11s %10llu stored  %s%s\n",
                    (unsigned long long)rr.start, (unsigned long long)rr.end,
                    rr.prot & 1 ? 'r' : '-', rr.prot & 2 ? 'w' : '-', rr.prot & 4 ? 'x' : '-',
                    rr.kind < 9 ? kinds[rr.kind] : "?", (unsigned long long)r.stored_bytes,
                    referenced.c_str(), r.path.c_str());
    }
    std::printf("files      %zu\n", s->files.size());
    for (const auto &f : s->files)
        std::printf("  fd %-4d %-11s offset %-10lld %s\n", f.record.fd,
                    image::file_kind_name(f.record.kind), (long long)f.record.offset,
                    file_detail(f).c_str());
    if (!s->locks.empty()) std::printf("file locks %zu\n", s->locks.size());
    for (const auto &l : s->locks) {
        const char *kind = l.kind == image::lock_flock ? "flock"
                           : l.kind == image::lock_ofd ? "ofd"
                                                       : "posix";
        std::string range = l.kind == image::lock_flock
                                ? ""
                                : " bytes " + std::to_string(l.start) + "-" +
                                      (l.end < 0 ? std::string("end") : std::to_string(l.end));
        std::printf("  fd %-4d %-5s %s%s\n", l.fd, kind, l.write ? "write" : "read", range.c_str());
    }
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

namespace {

// A conversation with a job's coordinator over <runtime dir>/job-<JOB>.sock.
struct job_link {
    int fd = -1;
    ~job_link() {
        if (fd >= 0) ::close(fd);
    }
};

bool valid_job(const std::string &job) {
    return !job.empty() && job.size() < 12 &&
           job.find_first_not_of("0123456789") == std::string::npos;
}

// Connects a stream socket to the Unix socket `path`: the fd, -1 if nobody listens there, -2 if no
// socket could be opened (errno set).
int unix_connect(const char *path) {
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -2;
    sockaddr_un u{};
    u.sun_family = AF_UNIX;
    std::snprintf(u.sun_path, sizeof u.sun_path, "%s", path);
    if (::connect(fd, (sockaddr *)&u, sizeof u) != 0) {
        ::close(fd);
        return -1;
    }
    return fd;
}

std::string job_socket_path(const char *runtime_dir, const std::string &job) {
    return std::string(runtime_dir) + "/job-" + job + ".sock";
}

// Connects; on failure a one-line reason that says whether the job or its coordinator is gone.
result<int> job_connect(const std::string &job) {
    if (!valid_job(job))
        return error{"'" + job + "' is not a job id (ghostrun prints it at start)"};
    char dir[4096];
    const char *why = nullptr;
    if (!control::runtime_dir(dir, sizeof dir, &why)) return error{why};
    std::string path = job_socket_path(dir, job);
    struct stat sb;
    if (::stat(path.c_str(), &sb) != 0)
        return error{"no job " + job + " (no coordinator in " + dir + ")"};
    int fd = unix_connect(path.c_str());
    if (fd == -2) return sys_error("cannot open a socket");
    if (fd < 0)
        return error{"job " + job + ": its coordinator (ghostrun pid " + job +
                     ") is not running; the ranks run on without checkpoints"};
    return fd;
}

struct rank_row {
    std::string rank, pid, host, state;
    // The rank's own figures (RSTAT), when it has sent any: their age, CPU time, resident memory,
    // messages it sent to each world rank.
    std::string stats_age, cpu_s, rss_bytes;
    std::vector<std::string> sent, sent_bytes; // messages, and their payload bytes
    // Since the layer reports them: time on a CPU and runnable without one, the host's CPUs, the
    // rank's CPU binding (runtime/job_protocol.h, STATS).
    std::string run_s, wait_s, cpus, bound;
    std::string records; // the layer's records of MPI objects (tombstones among them)
};
// The built-in balancer's state (ghostrun --balance): BALANCER and BHOST lines.
struct balancer_row {
    std::string interval_s, state, moves, failed, last;
    struct host {
        std::string name, ranks, cpus, cpu_share, avoided;
    };
    std::vector<host> hosts;
};
struct job_row {
    std::string job, ranks, mpirun, program, problem;
    bool balancing = false;
    balancer_row balancer;
    std::vector<rank_row> rows;
    std::string ckpt_gen, ckpt_dir; // the last checkpoint, if any
    long long ckpt_time = 0;
};

} // namespace

namespace {
// Someone listens on the Unix socket `path`.
bool socket_answers(const char *path) {
    int fd = unix_connect(path);
    if (fd < 0) return false;
    ::close(fd);
    return true;
}
} // namespace

// A job socket names a job, even a stale one (its coordinator was killed: the job's commands then
// say so), unless the coordinator is gone and the number is now a live process's under ghost.
bool names_job(const std::string &target) {
    if (!valid_job(target)) return false;
    char dir[4096];
    const char *why = nullptr;
    if (!control::runtime_dir(dir, sizeof dir, &why)) return false;
    std::string path = job_socket_path(dir, target);
    struct stat sb;
    if (::stat(path.c_str(), &sb) != 0) return false;
    if (socket_answers(path.c_str())) return true;
    char agent[4096];
    return !control::socket_path((pid_t)std::atol(target.c_str()), agent, sizeof agent, &why) ||
           !socket_answers(agent);
}

bool is_job_checkpoint(const std::string &dir) {
    struct stat sb;
    return ::stat(dir.c_str(), &sb) == 0 && S_ISDIR(sb.st_mode) &&
           (::access((dir + "/latest").c_str(), F_OK) == 0 ||
            ::access((dir + "/manifest.json").c_str(), F_OK) == 0);
}

namespace {

// One request to a job's coordinator and its one-line answer: "OK ..." is returned without
// "OK ", anything else is the one-line error `what` failed with.
result<std::string> job_request(const std::string &job, const std::string &req, long wait_ms,
                                const std::string &what) {
    auto fd = job_connect(job);
    if (!fd) return fd.err();
    job_link link{*fd};
    std::string line_out = req + "\n";
    if (!control::write_all(link.fd, line_out.data(), line_out.size()))
        return error{"job " + job + ": the coordinator does not answer"};
    char line[8192];
    if (control::read_line(link.fd, line, sizeof line, (int)std::min(wait_ms, 0x7fffffffL)) < 0)
        return error{"job " + job + ": the coordinator did not answer the " + what + " request"};
    std::string l = line;
    if (l.rfind("OK ", 0) == 0) return l.substr(3);
    if (l.rfind("ERROR ", 0) == 0)
        return error{what + " of job " + job + " failed: " + l.substr(6)};
    return error{"job " + job + ": unexpected answer '" + l + "'"};
}

} // namespace

// The coordinator runs the whole checkpoint (runtime/job_protocol.h); this only asks and prints.
int checkpoint_job(const checkpoint_args &a) {
    const long save_ms = 600000;
    std::string req = "CHECKPOINT " + std::string(a.kill ? "1 " : "0 ") +
                      std::to_string(a.timeout_ms) + " " + std::to_string(save_ms) + " " +
                      (a.dir.empty() ? "-" : absolute(a.dir));
    auto ok = job_request(a.target, req, a.timeout_ms + save_ms + 15000, "checkpoint");
    if (!ok) return fail(ok.err().message);
    std::printf("checkpoint job=%s %s\n", a.target.c_str(), ok->c_str());
    return 0;
}

// A migration is a checkpoint with kill and a relaunch that the coordinator places
// (runtime/job_protocol.h, MIGRATE); this only checks the request, asks and prints.
int cmd_migrate(const migrate_args &a) {
    std::string dir = "ucx";
    if (a.via.rfind("fs:", 0) == 0 && a.via.size() > 3) {
        dir = absolute(a.via.substr(3));
    } else if (a.via == "fs") {
        dir = "-"; // the job's --ckpt-dir
    } else if (!a.via.empty() && a.via != "ucx") {
        return fail("--via takes ucx, fs or fs:DIR, got '" + a.via + "'");
    }
    if (a.keep && dir != "ucx")
        return fail("--keep is for --via ucx (the ranks that stay keep "
                    "their processes while the moved ones stream)");
    if (a.precopy == 1 && dir != "ucx")
        return fail("--precopy is for --via ucx (through files nothing is copied before the job "
                    "stops)");
    bool precopy = a.precopy != 0 && dir == "ucx";
    if (a.precopy_rounds && !precopy)
        return fail("--precopy-rounds goes with the pre-copy (--via ucx, without --no-precopy)");
    if (a.keep) dir += "+keep";
    if (precopy) dir += "+precopy";
    if (a.precopy_rounds) dir += "+rounds" + std::to_string(a.precopy_rounds);
    if (!job::is_host_name(a.to)) return fail("'" + a.to + "' is not a host name");
    if (a.ranks.empty() || a.ranks.find_first_not_of("0123456789,") != std::string::npos)
        return fail("--rank takes R[,R2...], got '" + a.ranks + "'");
    if (!names_job(a.job)) return fail("no job " + a.job + " of this user is running");
    const long save_ms = 600000;
    std::string req = "MIGRATE " + std::to_string(a.timeout_ms) + " " +
                      std::to_string(a.start_timeout_ms) + " " + a.to + " " + a.ranks + " " + dir;
    // Relaunched once on the new placement and, if that fails, once where the ranks were.
    auto ok = job_request(a.job, req, a.timeout_ms + save_ms + 2L * a.start_timeout_ms + 30000,
                          "migration");
    if (!ok) return fail(ok.err().message);
    std::printf("migrate job=%s %s\n", a.job.c_str(), ok->c_str());
    return 0;
}

namespace {

job_row job_status(const std::string &job) {
    job_row j;
    j.job = job;
    auto fd = job_connect(job);
    if (!fd) {
        j.problem = fd.err().message;
        return j;
    }
    job_link link{*fd};
    if (!control::write_all(link.fd, "STATUS\n", 7)) {
        j.problem = "job " + job + ": the coordinator does not answer";
        return j;
    }
    char line[4096];
    for (;;) {
        if (control::read_line(link.fd, line, sizeof line, 5000) < 0) {
            j.problem = "job " + job + ": the coordinator does not answer";
            return j;
        }
        std::istringstream in(line);
        std::string kind;
        in >> kind;
        if (kind == "END") break;
        if (kind == "ERROR") { // (the job ended as it asked)
            std::string why;
            std::getline(in >> std::ws, why);
            j.problem = "job " + job + ": " + why;
            return j;
        }
        if (kind == "JOB") {
            in >> j.job >> j.ranks >> j.mpirun;
            std::getline(in >> std::ws, j.program);
        } else if (kind == "RANK") {
            rank_row r;
            in >> r.rank >> r.pid >> r.host >> r.state;
            j.rows.push_back(r);
        } else if (kind == "RSTAT") {
            std::string rank;
            size_t n = 0;
            in >> rank;
            for (auto &r : j.rows)
                if (r.rank == rank) {
                    in >> r.stats_age >> r.cpu_s >> r.rss_bytes >> n;
                    for (size_t i = 0; i < n && i < 1u << 20 && in; i++) {
                        std::string v;
                        in >> v;
                        r.sent.push_back(v);
                    }
                    for (std::string k, v; in >> k >> v;) {
                        if (k == "run_s") r.run_s = v;
                        if (k == "wait_s") r.wait_s = v;
                        if (k == "cpus") r.cpus = v;
                        if (k == "bound") r.bound = v;
                        if (k == "records") r.records = v;
                        if (k == "bytes") {
                            std::istringstream list(v);
                            for (std::string b; std::getline(list, b, ',');)
                                r.sent_bytes.push_back(b);
                        }
                    }
                }
        } else if (kind == "BALANCER") {
            j.balancing = true;
            in >> j.balancer.interval_s >> j.balancer.state >> j.balancer.moves >>
                j.balancer.failed;
            std::getline(in >> std::ws, j.balancer.last);
        } else if (kind == "BHOST") {
            balancer_row::host h;
            in >> h.name >> h.ranks >> h.cpus >> h.cpu_share >> h.avoided;
            j.balancer.hosts.push_back(h);
        } else if (kind == "CKPT") {
            in >> j.ckpt_gen >> j.ckpt_time;
            std::getline(in >> std::ws, j.ckpt_dir);
        }
    }
    return j;
}

// A number as JSON, or null (a figure the coordinator relays from a rank is not trusted to be one).
std::string json_num(const std::string &s) {
    char *end = nullptr;
    if (s.empty()) return "null";
    std::strtod(s.c_str(), &end);
    return *end || s.find_first_of("xXnNiI") != std::string::npos ? "null" : s;
}

std::string json_str(const std::string &s) {
    std::string o = "\"";
    for (char c : s) {
        if (c == '"' || c == '\\') o += '\\';
        if ((unsigned char)c < 0x20) continue;
        o += c;
    }
    return o + "\"";
}

} // namespace

int cmd_status(const status_args &a) {
    char dir[4096];
    const char *why = nullptr;
    if (!control::runtime_dir(dir, sizeof dir, &why)) return fail(why);
    std::vector<std::string> jobs;
    std::vector<int> pids;
    if (!a.job.empty()) {
        if (!valid_job(a.job))
            return fail("'" + a.job + "' is not a job id (ghostrun prints it at start)");
        jobs.push_back(a.job);
    } else {
        DIR *d = ::opendir(dir);
        if (!d) return fail(std::string("cannot list ") + dir);
        while (dirent *e = ::readdir(d)) {
            std::string n = e->d_name;
            if (n.rfind("job-", 0) == 0 && n.size() > 9 && n.substr(n.size() - 5) == ".sock")
                jobs.push_back(n.substr(4, n.size() - 9));
            char *end = nullptr;
            long pid = std::strtol(e->d_name, &end, 10);
            if (pid <= 0 || pid > INT_MAX || std::strcmp(end, ".sock") != 0) continue;
            // Listed only when its agent answers: a socket file outlives a killed process, and its
            // pid may name another process by now. Those of gone processes are removed on the way.
            if (control::probe_socket((int)pid, true) == 1) pids.push_back((int)pid);
        }
        ::closedir(d);
        std::sort(jobs.begin(), jobs.end());
    }
    std::vector<job_row> rows;
    for (const auto &j : jobs)
        rows.push_back(job_status(j));
    if (!a.job.empty() && !rows[0].problem.empty()) return fail(rows[0].problem);
    if (a.json) {
        std::printf("{\"jobs\": [");
        for (size_t i = 0; i < rows.size(); i++) {
            const auto &j = rows[i];
            std::printf("%s{\"job\": %s, \"coordinator\": %s", i ? ", " : "",
                        json_str(j.job).c_str(),
                        j.problem.empty() ? "\"running\"" : "\"not running\"");
            if (!j.problem.empty()) std::printf(", \"problem\": %s", json_str(j.problem).c_str());
            if (j.problem.empty())
                std::printf(", \"size\": %s, \"mpirun_pid\": %s, \"program\": %s", j.ranks.c_str(),
                            j.mpirun.c_str(), json_str(j.program).c_str());
            if (!j.ckpt_gen.empty())
                std::printf(", \"last_checkpoint\": {\"generation\": %s, \"dir\": %s, \"time\": "
                            "%lld, \"age_s\": %lld}",
                            j.ckpt_gen.c_str(), json_str(j.ckpt_dir).c_str(), j.ckpt_time,
                            (long long)::time(nullptr) - j.ckpt_time);
            else if (j.problem.empty())
                std::printf(", \"last_checkpoint\": null");
            std::printf(", \"ranks\": [");
            for (size_t k = 0; k < j.rows.size(); k++) {
                const rank_row &r = j.rows[k];
                std::printf("%s{\"rank\": %s, \"pid\": %s, \"host\": %s, \"state\": %s",
                            k ? ", " : "", r.rank.c_str(), r.pid.c_str(), json_str(r.host).c_str(),
                            json_str(r.state).c_str());
                if (!r.cpu_s.empty()) {
                    std::printf(", \"cpu_s\": %s, \"rss_bytes\": %s, \"stats_age_s\": %s, "
                                "\"messages_sent_to\": [",
                                r.cpu_s.c_str(), r.rss_bytes.c_str(), r.stats_age.c_str());
                    for (size_t i = 0; i < r.sent.size(); i++)
                        std::printf("%s%s", i ? ", " : "", r.sent[i].c_str());
                    std::printf("]");
                    if (!r.sent_bytes.empty()) {
                        std::printf(", \"bytes_sent_to\": [");
                        for (size_t i = 0; i < r.sent_bytes.size(); i++)
                            std::printf("%s%s", i ? ", " : "", json_num(r.sent_bytes[i]).c_str());
                        std::printf("]");
                    }
                    if (!r.run_s.empty()) std::printf(", \"run_s\": %s", json_num(r.run_s).c_str());
                    if (!r.wait_s.empty())
                        std::printf(", \"wait_s\": %s", json_num(r.wait_s).c_str());
                    if (!r.cpus.empty())
                        std::printf(", \"host_cpus\": %s", json_num(r.cpus).c_str());
                    if (!r.bound.empty())
                        std::printf(", \"bound_cpus\": %s", json_str(r.bound).c_str());
                    if (!r.records.empty())
                        std::printf(", \"mpi_records\": %s", json_num(r.records).c_str());
                }
                std::printf("}");
            }
            std::printf("]");
            if (j.balancing) {
                const balancer_row &b = j.balancer;
                std::printf(", \"balancer\": {\"interval_s\": %s, \"state\": %s, \"moves\": %s, "
                            "\"failed\": %s, \"last\": %s, \"hosts\": [",
                            json_num(b.interval_s).c_str(), json_str(b.state).c_str(),
                            json_num(b.moves).c_str(), json_num(b.failed).c_str(),
                            json_str(b.last).c_str());
                for (size_t k = 0; k < b.hosts.size(); k++)
                    std::printf("%s{\"host\": %s, \"ranks\": %s, \"cpus\": %s, \"cpu_share\": "
                                "%s, \"avoided\": %s}",
                                k ? ", " : "", json_str(b.hosts[k].name).c_str(),
                                json_num(b.hosts[k].ranks).c_str(),
                                json_num(b.hosts[k].cpus).c_str(),
                                json_num(b.hosts[k].cpu_share).c_str(),
                                b.hosts[k].avoided == "1" ? "true" : "false");
                std::printf("]}");
            }
            std::printf("}");
        }
        std::printf("], \"processes\": [");
        for (size_t i = 0; i < pids.size(); i++)
            std::printf("%s{\"pid\": %d, \"checkpoints\": %s}", i ? ", " : "", pids[i],
                        json_str(default_ckpt_dir(pids[i])).c_str());
        std::printf("]}\n");
        return 0;
    }
    for (const auto &j : rows) {
        if (!j.problem.empty()) {
            std::printf("job %s: %s\n", j.job.c_str(), j.problem.c_str());
            continue;
        }
        std::printf("job %s  %s ranks  mpirun pid %s  %s\n", j.job.c_str(), j.ranks.c_str(),
                    j.mpirun.c_str(), j.program.c_str());
        if (!j.ckpt_gen.empty())
            std::printf("  last checkpoint: generation %s, %lld s ago, %s\n", j.ckpt_gen.c_str(),
                        (long long)::time(nullptr) - j.ckpt_time, j.ckpt_dir.c_str());
        else
            std::printf("  last checkpoint: none\n");
        for (const auto &r : j.rows)
            std::printf("  rank %-4s pid %-8s host %-16s %s\n", r.rank.c_str(), r.pid.c_str(),
                        r.host.c_str(), r.state.c_str());
        if (j.balancing)
            std::printf("  balancer: every %s s, %s, %s move(s), %s failed; last: %s\n",
                        j.balancer.interval_s.c_str(), j.balancer.state.c_str(),
                        j.balancer.moves.c_str(), j.balancer.failed.c_str(),
                        j.balancer.last.c_str());
    }
    for (int pid : pids) {
        std::string exe = "?";
        char buf[4096];
        ssize_t n =
            ::readlink(("/proc/" + std::to_string(pid) + "/exe").c_str(), buf, sizeof buf - 1);
        if (n > 0) exe.assign(buf, (size_t)n);
        std::printf("pid %-8d %s  checkpoints: %s\n", pid, exe.c_str(),
                    default_ckpt_dir(pid).c_str());
    }
    if (rows.empty() && pids.empty()) std::printf("no process is running under ghost\n");
    return 0;
}

int cmd_quiesce(const quiesce_args &a) {
    auto fd = job_connect(a.job);
    if (!fd) return fail(fd.err().message);
    job_link link{*fd};
    std::string req = "QUIESCE " + std::to_string(a.timeout_ms) + "\n";
    if (!control::write_all(link.fd, req.data(), req.size()))
        return fail("job " + a.job + ": the coordinator does not answer");
    char line[4096];
    // The coordinator answers within its deadline (the job resumes either way).
    if (control::read_line(link.fd, line, sizeof line, a.timeout_ms * 2 + 5000) < 0)
        return fail("job " + a.job + ": the coordinator did not answer the quiesce request");
    std::string l = line;
    if (l.rfind("OK ", 0) == 0) {
        std::printf("quiesce job=%s ranks=%s\n", a.job.c_str(), l.substr(3).c_str());
        return 0;
    }
    if (l.rfind("ERROR ", 0) == 0)
        return fail("quiesce of job " + a.job + " failed: " + l.substr(6));
    return fail("job " + a.job + ": unexpected answer '" + l + "'");
}

} // namespace ghost::launcher
