// SPDX-License-Identifier: Apache-2.0
// The rank's side of the job coordinator (runtime/job_protocol.h): a thread of the upper half,
// started after MPI_Init, that registers the rank and runs quiesce epochs. Every wait is bounded;
// when the coordinator goes away the rank resumes and runs on without checkpoints.
#include <arpa/inet.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <linux/membarrier.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <unordered_map>
#include <string>
#include <vector>

#include "attribution.h"
#include "ghost-core/agent/ghost_agent.h"
#include "ghost-core/image_format.h"
#include "ghost-core/image_trailer.h"
#include "files.h"
#include "lower_api.h"
#include "p2p.h"
#include "quiesce_state.h"
#include "runtime/job_protocol.h"
#include "wrapper_support.h"

namespace ghost::mpi {
namespace {

// The creations collective over a tracked communicator that this rank keeps records of (live,
// or tombstones: freed since, or MPI_COMM_NULL here): a restart replays them collectively over
// the parent, so every member must hold the same ones. Per parent communicator one word,
// "<id>:<size>:<pos>[~],<pos>[~],..." (hex id and clock positions; "~": dead here and named by no
// kept record). The coordinator prunes the tombstones dead on every member (their creation need
// not be replayed anywhere) and refuses the epoch if the members of a communicator would replay
// different creations over it (runtime/job_protocol.h). In an epoch (`with_order`) each position
// also carries "@<n>": the creation's place in the order a restart of this rank would replay them
// (replay_order), which the coordinator checks is one order on every rank. Empty if there are none.
constexpr size_t kMaxChainedReport = 100000; // the coordinator takes lines up to 1 MiB

struct chained_entry {
    uint64_t parent_id, pos;
    int size;
    bool dead;
    const record *rec;
    size_t order = 0;
};

std::string made_report(size_t *count, bool with_order) {
    std::vector<chained_entry> all;
    records_visit_chained(
        [](const record *r, bool dead, void *arg) {
            chain_name n = chained_name(r);
            ((std::vector<chained_entry> *)arg)
                ->push_back({n.parent_id, n.pos, r->parent_size, dead, r});
        },
        &all);
    *count = all.size();
    if (all.empty() || all.size() > kMaxChainedReport) return "";
    if (with_order) {
        records_read_guard reading; // the order's records are read after replay_order returns
        std::unordered_map<const record *, size_t> place;
        for (const auto &[r, v] : replay_order())
            if (chained(r)) place.emplace(r, place.size() + 1);
        for (chained_entry &e : all)
            if (auto it = place.find(e.rec); it != place.end()) e.order = it->second;
    }
    std::stable_sort(all.begin(), all.end(), [](const chained_entry &x, const chained_entry &y) {
        return x.parent_id != y.parent_id ? x.parent_id < y.parent_id : x.pos < y.pos;
    });
    std::string out;
    size_t parents = 0;
    char b[64];
    for (size_t i = 0; i < all.size(); i++) {
        const chained_entry &e = all[i];
        if (i == 0 || e.parent_id != all[i - 1].parent_id) {
            parents++;
            snprintf(b, sizeof b, " %llx:%d:", (unsigned long long)e.parent_id, e.size);
        } else {
            snprintf(b, sizeof b, ",");
        }
        out += b;
        snprintf(b, sizeof b, "%llx%s", (unsigned long long)e.pos, e.dead ? "~" : "");
        out += b;
        if (e.order) {
            snprintf(b, sizeof b, "@%zx", e.order);
            out += b;
        }
    }
    return " made " + std::to_string(parents) + out;
}

// The coordinator's " prune <k> <id>:<pos>,<pos>,..." at the end of an agreeing TARGET line: the
// tombstones dead on every member, dropped (they are not replayed by anyone).
size_t apply_prune(const std::vector<std::string> &w) {
    size_t at = 0;
    while (at < w.size() && w[at] != "prune")
        at++;
    size_t dropped = 0;
    for (size_t i = at + 2; i < w.size(); i++) {
        const std::string &t = w[i];
        size_t colon = t.find(':');
        if (colon == std::string::npos) continue;
        uint64_t id = strtoull(t.c_str(), nullptr, 16);
        std::vector<uint64_t> pos;
        for (size_t p = colon + 1; p < t.size();) {
            char *end;
            pos.push_back(strtoull(t.c_str() + p, &end, 16));
            p = (size_t)(end - t.c_str()) + 1;
        }
        std::sort(pos.begin(), pos.end());
        dropped += records_release(id, pos);
    }
    return dropped;
}

int g_fd = -1;
int g_rank = -1;
pthread_t g_thread;
bool g_thread_started = false;
volatile int g_stop = 0;
std::mutex g_write_mu;
std::string g_inbuf;
char g_error[256] = "no quiesce has been requested";
std::atomic<int> g_local{0}; // 0 running, 1 quiescing, 2 quiesced
std::atomic<int> g_resume_req{0};
// A restored rank: the old connection is gone (g_fd -1 from thread_after_restore on); once the rank
// is rebuilt, the client connects to the new job's coordinator named by these.
std::atomic<int> g_reconnect{0};
std::string *g_new_coord, *g_new_job, *g_new_secret;
char g_job_id[64]; // the job whose coordinator this rank last connected to

void log_line(const char *fmt, const char *a = "", const char *b = "") {
    char msg[512];
    int n = snprintf(msg, sizeof msg, "ghost-mpi: rank %d: ", g_rank);
    int m = snprintf(msg + n, sizeof msg - (size_t)n, fmt, a, b);
    if (m > 0) (void)!write(2, msg, (size_t)std::min(n + m, (int)sizeof msg - 1));
}

long now_ms() {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

bool g_debug = false;

bool send_line(const std::string &l) {
    if (g_debug && l.rfind("HELLO", 0) != 0) log_line("-> %s\n", l.c_str());
    std::lock_guard<std::mutex> g(g_write_mu);
    if (g_fd < 0) return false;
    std::string s = l + "\n";
    const char *p = s.data();
    size_t left = s.size();
    while (left) {
        ssize_t n = send(g_fd, p, left, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return false;
        p += n;
        left -= (size_t)n;
    }
    return true;
}

// Appends what the coordinator sent within timeout_ms to g_inbuf, taking no line. 1: something
// arrived; 0: nothing (or restored meanwhile: the poll was of the old connection); -1: EOF or
// error.
int receive_some(int timeout_ms) {
    struct pollfd p = {g_fd, POLLIN, 0};
    int r;
    while ((r = poll(&p, 1, timeout_ms)) < 0 && errno == EINTR) {
    }
    if (r <= 0) return r;
    if (g_fd < 0) return 0;
    char buf[4096];
    ssize_t n;
    while ((n = recv(g_fd, buf, sizeof buf, MSG_DONTWAIT)) < 0 && errno == EINTR) {
    }
    if (n < 0 && errno == EAGAIN) return 0;
    if (n <= 0) return -1;
    g_inbuf.append(buf, (size_t)n);
    return 1;
}

// 1: a line; 0: nothing within timeout_ms; -1: EOF or error.
int read_line(std::string *out, int timeout_ms) {
    for (;;) {
        if (g_fd < 0) { // restored, not connected again yet
            struct timespec ts = {timeout_ms / 1000, (timeout_ms % 1000) * 1000000L};
            nanosleep(&ts, nullptr);
            return 0;
        }
        size_t nl = g_inbuf.find('\n');
        if (nl != std::string::npos) {
            *out = g_inbuf.substr(0, nl);
            g_inbuf.erase(0, nl + 1);
            if (g_debug) log_line("<- %s\n", out->c_str());
            return 1;
        }
        int r = receive_some(timeout_ms);
        if (r <= 0) return r;
        timeout_ms = 0;
    }
}

std::vector<std::string> words(const std::string &s) {
    std::vector<std::string> w;
    size_t i = 0;
    while (i < s.size()) {
        while (i < s.size() && s[i] == ' ')
            i++;
        size_t j = i;
        while (j < s.size() && s[j] != ' ')
            j++;
        if (j > i) w.push_back(s.substr(i, j - i));
        i = j;
    }
    return w;
}

void raise_flag() {
    g_qflag = 1;
    if (!g_gate_fence) syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
}

// Parked threads leave their safe points when they see the flag down. Not by a pass (PASS): a
// thread the resume woke that has not run yet when the next epoch raises the flag again still looks
// parked to that epoch, so it must stay parked; let through by a pass, it went on into a send after
// that epoch's counts were reported ("messages were sent after the collective clocks agreed", seen
// with back-to-back checkpoints of LAMMPS and HPCC ranks under load).
void resume_local() {
    Q.phase = phase_run;
    Q.behind = 0;
    g_qflag = 0;
    g_local = 0;
    quiesce_wake();
}

// What settled() names for a thread outside MPI in a one-sided epoch it opened (after "a thread
// stayed inside ").
constexpr const char *rma_epoch_open = "a one-sided epoch it opened, outside MPI (MPI_Win_lock "
                                       "held, or operations no flush, unlock or fence completed)";

// Every application thread is outside MPI or parked (or, when allow_coll, inside a blocking
// collective; one that makes a communicator only when allow_create). Otherwise names a thread's
// call in `why`.
bool settled(bool allow_coll, const char **why, bool allow_send = true, bool allow_create = true) {
    const uint32_t passes = Q.passes.load(std::memory_order_acquire);
    for (thread_gate *t : gate_threads()) {
        // depth before the epoch counters: a wrapper notes its lock or unlock (win_note) before
        // its gate lowers depth, so a thread seen outside MPI shows the counters it left with.
        const int depth = __atomic_load_n(&t->depth, __ATOMIC_ACQUIRE);
        // A thread holding a passive-target lock, or with one-sided operations no synchronisation
        // has completed, passes its safe points (safe_point) until its unlock, flush or fence.
        // Outside MPI (computing in its critical section) it is not settled: it enters MPI again
        // without stopping, also while this rank holds quiescent and while it is saved, and its
        // synchronisation then waits for a target rank that holds quiescent without progress (or
        // is stopped for its image). Under MPICH, MPI_Win_unlock spins in ucp_ep_flush holding the
        // library's global lock, the agent's hook blocks on it at its first lower call, and the
        // checkpoint ends after 15 s with "the ghost agent of pid N did not answer". Waiting here
        // lets the epoch close while every rank still progresses (wait_for pokes the lower half);
        // its next call then parks at its safe point (and a lock waiter it released gets the lock
        // and closes its epoch the same way).
        if (depth == 0 && (__atomic_load_n(&t->rma_locks, __ATOMIC_RELAXED) > 0 ||
                           __atomic_load_n(&t->rma_ops, __ATOMIC_RELAXED) > 0)) {
            *why = rma_epoch_open;
            return false;
        }
        // A thread a PASS let go on that has not run yet is still flagged parked: had it counted
        // as parked, this rank reported clocks it was about to change (it enters its call after
        // the report, inside a creation or a collective the agreement did not see).
        if (depth == 0 || (t->parked && t->park_passes == passes)) continue;
        if (allow_coll && t->in_coll && (allow_create || !t->in_create)) continue;
        if (allow_coll && allow_create && t->in_group_create) continue;
        if (allow_send && t->in_send) continue;
        *why = t->fn >= 0 && (size_t)t->fn < g_nfns ? g_fn_names[t->fn] : "an MPI call";
        return false;
    }
    return true;
}

enum wait_result { w_ok, w_abort, w_timeout, w_gone };

// Whether a RESUME (the epoch abandoned) is among the lines received and not taken yet; the lines
// up to it are then dropped with it.
bool take_buffered_resume() {
    for (size_t at = 0; at < g_inbuf.size();) {
        size_t nl = g_inbuf.find('\n', at);
        if (nl == std::string::npos) return false;
        if (g_inbuf.compare(at, 7, "RESUME ") == 0) {
            g_inbuf.erase(0, nl + 1);
            return true;
        }
        at = nl + 1;
    }
    return false;
}

// Waits for cond, or (want_line) for the coordinator's next line. Lines that arrive while waiting
// for cond are left for the next step (the drain target follows the clock agreement at once),
// but a RESUME among them abandons the epoch.
template <class C> wait_result wait_for(C cond, long deadline, bool want_line, std::string *line) {
    // A passive-target synchronisation (MPI_Win_unlock, MPI_Win_flush) of another rank waits for
    // this one's lower half to progress: while threads are held, this thread progresses it, also
    // while it waits for the coordinator's next line (a rank that has reported its clocks waits
    // there for the others, one of which may be inside such a call: without progress here, it
    // stayed there until the epoch timed out). Only with windows: each poke is a lower call,
    // at most one per millisecond, which on an oversubscribed node takes the CPU from the ranks
    // being waited for.
    const bool poke = g_windows.load(std::memory_order_relaxed) > 0;
    auto progress = [&] {
        static long last_poke;
        if (!poke || Q.phase.load() == phase_run) return;
        if (long now = now_ms(); now != last_poke) {
            last_poke = now;
            drain_progress();
        }
    };
    for (;;) {
        if (!want_line && cond()) return w_ok;
        if (now_ms() > deadline) return w_timeout;
        if (want_line) {
            int r = read_line(line, poke ? 1 : 20);
            if (r < 0) return w_gone;
            if (r > 0 && line->rfind("PASS ", 0) == 0) { // parked threads go on once
                Q.passes.fetch_add(1, std::memory_order_release);
                quiesce_wake();
                continue;
            }
            if (r > 0) return line->rfind("RESUME ", 0) == 0 ? w_abort : w_ok;
            progress();
        } else {
            if (g_fd >= 0 && receive_some(0) < 0) return w_gone;
            if (take_buffered_resume()) return w_abort;
            progress();
            struct timespec ts = {0, 100000};
            nanosleep(&ts, nullptr);
        }
        if (g_stop) return w_gone;
    }
}

enum save_result { save_done, save_failed, save_restored };

// SAVE <epoch> <timeout_ms> <path>: the agent's checkpointer writes this quiescent rank's image
// (ghost_agent.h); SAVED <epoch> <bytes> <hash> or ERROR <epoch> <reason> goes back. This thread
// is parked and saved with the others: in a restored copy the wait returns 1.
bool connect_now(const char *coord, const char *job, const char *secret);

// In the new process of a live migration (restored from a SEND image, under the same
// coordinator): once the layer has rebuilt the lower half and named the new coordinator
// (coord_after_restore), it connects and holds, quiescent, in the same epoch until every new
// process is there and the old ranks are gone (RESUME): a migration that fails before then lets
// the old ranks go on, and this copy has run no step of the program. False (the ordinary
// after-restore path: resume, then connect) when the coordinator is another one.
bool held_after_live_restore(const std::string &) {
    // The thread runs again before the layer's after_restore: wait for it (it sets g_reconnect).
    for (int i = 0; i < 30000 && !g_reconnect.load(); i++) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, nullptr);
    }
    if (!g_reconnect.load() || !g_new_coord || g_new_coord->empty() || g_new_job->empty() ||
        strcmp(g_new_job->c_str(), g_job_id) != 0)
        return false;
    g_reconnect = 0;
    g_resume_req = 0;
    g_inbuf.clear();
    if (connect_now(g_new_coord->c_str(), g_new_job->c_str(), g_new_secret->c_str())) return true;
    g_resume_req = 1; // no coordinator any more: run on without checkpoints
    return false;
}

// The checkpointer's report line ("checkpoint pid=... bytes=N ... export_s=X sync_s=Y ..." in its
// log file), the same for a saved and a sent image; a pre-copy that failed because of where it
// went says "failed=resource" there.
struct checkpointer_report {
    bool found = false;
    bool resource_failed = false;
    unsigned long long bytes = 0;
    unsigned long long written_bytes = 0; // a pre-copy: what the process wrote meanwhile
    double export_s = 0, sync_s = 0;
};
checkpointer_report read_checkpointer_report(const std::string &log) {
    checkpointer_report r;
    if (FILE *f = fopen(log.c_str(), "re")) {
        char l[2048];
        while (fgets(l, sizeof l, f))
            if (strncmp(l, "checkpoint pid=", 15) == 0) {
                if (strstr(l, " failed=resource")) r.resource_failed = true;
                const char *b = strstr(l, " bytes="), *x = strstr(l, " export_s="),
                           *y = strstr(l, " sync_s=");
                if (!x || !y) continue;
                r.found = true;
                r.bytes = b ? strtoull(b + 7, nullptr, 10) : 0;
                if (const char *wr = strstr(l, " written_bytes="))
                    r.written_bytes = strtoull(wr + 15, nullptr, 10);
                r.export_s = atof(x + 10);
                r.sync_s = atof(y + 8);
            }
        fclose(f);
    }
    return r;
}

// ERROR <epoch> <reason>, the reason on one line.
save_result send_save_error(const std::string &e, char *why) {
    for (char *c = why; *c; c++)
        if (*c == '\n') *c = ' ';
    send_line("ERROR " + e + " " + why);
    return save_failed;
}

// PARENT <epoch> <path>|-: the next SAVE of this epoch is incremental (job_protocol.h).
struct save_parent {
    bool incremental = false;
    std::string path; // "": a whole image that starts the tracking
};

void standby_dismiss();

save_result save_image(const std::string &e, const std::string &line, const save_parent &parent) {
    standby_dismiss(); // (a checkpointer at a time)
    auto w = words(line);
    size_t at = line.find(' ', line.find(' ', line.find(' ') + 1) + 1);
    if (w.size() < 4 || at == std::string::npos) {
        send_line("ERROR " + e + " bad request " + line);
        return save_failed;
    }
    long timeout_ms = atol(w[2].c_str());
    std::string path = line.substr(at + 1);
    using request_fn = int (*)(const char *, int);
    using incremental_fn = int (*)(const char *, const char *, int);
    using wait_fn = int (*)(int, char *, size_t);
    files_read_shared_positions();
    auto request = (request_fn)dlsym(RTLD_DEFAULT, "ghost_agent_request_checkpoint");
    auto incremental = (incremental_fn)dlsym(RTLD_DEFAULT, "ghost_agent_request_incremental");
    auto wait = (wait_fn)dlsym(RTLD_DEFAULT, "ghost_agent_checkpoint_wait");
    char why[512] = "";
    int rc = -1;
    if (!request || !wait || (parent.incremental && !incremental))
        snprintf(why, sizeof why, "no ghost agent in this rank (libghost.so not preloaded)");
    // The requests are settled here, by this thread (the rank holds quiescent): the agent's
    // manager, which runs the component hooks, then needs no lower call for them.
    else if (requests_before_checkpoint(g_rank, req_convert, why, sizeof why) != 0)
        ;
    // Buffered output goes out now, from a thread with the process's descriptors (the agent's
    // manager has a table of its own), else a job that goes on prints it and its image holds it
    // too (printed twice by a restart from this image).
    else if (fflush(nullptr),
             (parent.incremental
                  ? incremental(path.c_str(), parent.path.c_str(), GHOST_CHECKPOINT_IN_DIR)
                  : request(path.c_str(), GHOST_CHECKPOINT_IN_DIR)) != 0)
        snprintf(why, sizeof why,
                 "the agent cannot start a checkpointer (no ghost binary known, "
                 "or one is running)");
    else
        rc = wait(timeout_ms > 0 ? (int)timeout_ms : -1, why, sizeof why);
    if (rc == 1) return save_restored;
    uint64_t size = 0, sum = 0;
    const char *bad = "";
    if (rc == 0) {
        int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0 || !core::read_image_trailer(fd, &size, &sum, &bad)) {
            snprintf(why, sizeof why, "the image %s is unreadable: %s", path.c_str(),
                     fd < 0 ? strerror(errno) : bad);
            rc = -1;
        }
        if (fd >= 0) close(fd);
    }
    if (rc != 0) return send_save_error(e, why);
    // The checkpointer's report is PATH.log; without one the phase times are 0.
    checkpointer_report rep = read_checkpointer_report(path + ".log");
    send_line("SAVED " + e + " " + std::to_string(size) + " " + core::image_hash_name(sum) + " " +
              std::to_string(rep.export_s) + " " + std::to_string(rep.sync_s));
    return save_done;
}

char g_secret[128]; // the job secret this rank authenticated with (for SEND's receiver)

// The private runtime directory (runtime/control.cpp's choice, owner only).
std::string private_dir() {
    char dir[4096];
    const char *env = getenv("GHOST_RUNTIME_DIR"), *xdg = getenv("XDG_RUNTIME_DIR");
    if (env && *env)
        snprintf(dir, sizeof dir, "%s", env);
    else if (xdg && *xdg)
        snprintf(dir, sizeof dir, "%s/ghost", xdg);
    else
        snprintf(dir, sizeof dir, "/tmp/ghost-%u", (unsigned)getuid());
    mkdir(dir, 0700);
    return dir;
}

// A staying rank of `ghost migrate --keep` (runtime/job_protocol.h, keep_hello): its placeholder
// in the new mpirun hands over what a rank of that launch has (environment, streams, PMI_FD).
struct keep_state {
    int listen = -1; // <runtime dir>/keep-<pid>.sock while ACCEPT waits for the placeholder
    long deadline = 0;
    std::string path;
    int pending = -1; // the new placeholder's connection, until DETACH
    int fds[4] = {-1, -1, -1, -1};
    uint32_t nfds = 0;
    std::vector<std::string> env;
    int current = -1; // the placeholder this process runs under (after a keep), or -1
};
keep_state g_keep;

void keep_abandon() {
    if (g_keep.listen >= 0) {
        close(g_keep.listen);
        unlink(g_keep.path.c_str());
    }
    g_keep.listen = -1;
    if (g_keep.pending >= 0) close(g_keep.pending);
    g_keep.pending = -1;
    for (int &fd : g_keep.fds) {
        if (fd >= 0) close(fd);
        fd = -1;
    }
    g_keep.nfds = 0;
    g_keep.env.clear();
}

// ACCEPT <epoch> <timeout_ms>: what a checkpoint would refuse is refused now, then the rank
// listens for its placeholder (keep_poll takes it).
void keep_accept(const std::string &e, const std::vector<std::string> &w) {
    keep_abandon();
    char why[512] = "";
    if (!in_place_prepare(g_rank, why, sizeof why)) {
        send_line("ERROR " + e + " " + why);
        return;
    }
    g_keep.path = private_dir() + "/keep-" + std::to_string((long)getpid()) + ".sock";
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    if (g_keep.path.size() >= sizeof a.sun_path) {
        send_line("ERROR " + e + " the runtime directory's path is too long for a socket");
        return;
    }
    memcpy(a.sun_path, g_keep.path.c_str(), g_keep.path.size() + 1);
    unlink(g_keep.path.c_str());
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    mode_t old = umask(077);
    bool ok = fd >= 0 && bind(fd, (sockaddr *)&a, sizeof a) == 0 && listen(fd, 4) == 0;
    umask(old);
    if (!ok) {
        if (fd >= 0) close(fd);
        send_line("ERROR " + e + " cannot listen on " + g_keep.path + ": " + strerror(errno));
        return;
    }
    attribution_note_upper_fd(fd, upper_fd_use::placeholder);
    g_keep.listen = fd;
    long ms = w.size() >= 3 ? atol(w[2].c_str()) : 60000;
    g_keep.deadline = now_ms() + (ms > 0 ? ms : 60000);
}

bool read_full(int fd, void *buf, size_t n, long deadline) {
    char *p = (char *)buf;
    while (n) {
        struct pollfd pf = {fd, POLLIN, 0};
        long left = deadline - now_ms();
        if (left <= 0 || poll(&pf, 1, (int)std::min(left, 1000L)) < 0) return false;
        ssize_t k = read(fd, p, n);
        if (k == 0 || (k < 0 && errno != EAGAIN && errno != EINTR)) return false;
        if (k > 0) {
            p += k;
            n -= (size_t)k;
        }
    }
    return true;
}

// One placeholder's keep_hello, checked: ACCEPTED, or ERROR (the migration is abandoned).
void keep_poll(const std::string &e) {
    if (g_keep.listen < 0) return;
    auto refuse = [&](const std::string &why) {
        keep_abandon();
        send_line("ERROR " + e + " " + why);
    };
    int c = accept4(g_keep.listen, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) {
        if (now_ms() > g_keep.deadline)
            refuse("no placeholder of the new mpirun reached rank " + std::to_string(g_rank) +
                   " in time");
        return;
    }
    ucred cred{};
    socklen_t len = sizeof cred;
    if (getsockopt(c, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || cred.uid != getuid()) {
        close(c); // another user's: not ours to take
        return;
    }
    job::keep_hello h{};
    int fds[4] = {-1, -1, -1, -1};
    alignas(cmsghdr) char cbuf[CMSG_SPACE(sizeof fds)];
    iovec iov = {&h, sizeof h};
    msghdr m{};
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    m.msg_control = cbuf;
    m.msg_controllen = sizeof cbuf;
    struct pollfd pf = {c, POLLIN, 0};
    ssize_t got = poll(&pf, 1, 2000) == 1 ? recvmsg(c, &m, MSG_CMSG_CLOEXEC | MSG_WAITALL) : -1;
    uint32_t nfds = 0;
    for (cmsghdr *cm = got > 0 ? CMSG_FIRSTHDR(&m) : nullptr; cm; cm = CMSG_NXTHDR(&m, cm))
        if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
            nfds = (uint32_t)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));
            if (nfds > 4) nfds = 4;
            memcpy(fds, CMSG_DATA(cm), nfds * sizeof(int));
        }
    auto drop = [&] {
        for (uint32_t i = 0; i < nfds; i++)
            close(fds[i]);
        close(c);
    };
    if (got != (ssize_t)sizeof h || memcmp(h.magic, job::kKeepMagic, 8) != 0 || h.rank != g_rank ||
        h.nfds != nfds || nfds < 3 || h.secret_len >= 1024 || h.env_len > (64u << 20)) {
        drop(); // not this rank's placeholder: refuse it, keep listening for the right one
        return;
    }
    std::string secret(h.secret_len, '\0'), env(h.env_len, '\0');
    long deadline = now_ms() + 5000;
    if (!read_full(c, secret.data(), secret.size(), deadline) ||
        !read_full(c, env.data(), env.size(), deadline) || secret != g_secret) {
        drop();
        return;
    }
    std::vector<std::string> vars;
    for (size_t at = 0; at < env.size();) {
        size_t end = env.find('\0', at);
        if (end == std::string::npos) end = env.size();
        if (end > at) vars.push_back(env.substr(at, end - at));
        at = end + 1;
    }
    // Hydra's PMI connection is a descriptor the environment names: without it the fresh lower
    // half could not reach its launcher.
    bool names_pmi_fd = std::any_of(
        vars.begin(), vars.end(), [](const std::string &v) { return v.rfind("PMI_FD=", 0) == 0; });
    if (names_pmi_fd && nfds < 4) {
        drop();
        return refuse("the placeholder of rank " + std::to_string(g_rank) +
                      " could not hand over its PMI_FD");
    }
    close(g_keep.listen);
    unlink(g_keep.path.c_str());
    g_keep.listen = -1;
    attribution_note_upper_fd(c, upper_fd_use::placeholder);
    g_keep.pending = c;
    memcpy(g_keep.fds, fds, sizeof fds);
    g_keep.nfds = nfds;
    g_keep.env = std::move(vars);
    send_line("ACCEPTED " + e);
}

// A std stream the launcher gave (a pipe or socket to it, a terminal) is the placeholder's from
// now on; one the program pointed at a file of its own stays (as a restart would keep it).
bool launcher_stream(int fd) {
    struct stat sb {};
    if (fstat(fd, &sb) != 0) return true;
    return S_ISFIFO(sb.st_mode) || S_ISSOCK(sb.st_mode) || (S_ISCHR(sb.st_mode) && isatty(fd));
}

// DETACH <epoch>: out of the old job, into the placeholder's (in_place_switch), or the rank ends.
void keep_detach(const std::string &e) {
    if (g_keep.pending < 0) {
        send_line("ERROR " + e + " DETACH without a placeholder");
        return;
    }
    for (int k = 0; k < 3; k++) {
        if (launcher_stream(k)) dup2(g_keep.fds[k], k);
        close(g_keep.fds[k]);
        g_keep.fds[k] = -1;
    }
    int32_t inherited[1];
    int ninherited = 0;
    std::vector<char *> envp;
    for (auto &v : g_keep.env) {
        if (g_keep.nfds > 3 && v.rfind("PMI_FD=", 0) == 0) {
            v = "PMI_FD=" + std::to_string(g_keep.fds[3]);
            fcntl(g_keep.fds[3], F_SETFD, 0);
            inherited[ninherited++] = g_keep.fds[3];
        }
        envp.push_back(v.data());
    }
    envp.push_back(nullptr);
    char why[512] = "";
    bool ok = in_place_switch(envp.data(), inherited, ninherited, why, sizeof why);
    if (g_keep.current >= 0) { // the previous placeholder: its rank finalized in its job
        char d = job::kKeepDetached;
        (void)!write(g_keep.current, &d, 1);
        close(g_keep.current);
        g_keep.current = -1;
    }
    g_keep.fds[3] = -1;
    g_keep.nfds = 0;
    g_keep.env.clear();
    if (!ok) {
        send_line("ERROR " + e + " " + why);
        log_line("rank cannot go on after its lower half was given up: %s\n", why);
        _exit(1);
    }
    g_keep.current = g_keep.pending;
    g_keep.pending = -1;
    char a = job::kKeepAdopted;
    (void)!write(g_keep.current, &a, 1);
    send_line("REATTACHED " + e);
}

// LEAVE <epoch>: a moved rank's old process, its image in its new one: out of the old job with
// the others (MPI_Finalize), then gone without flushing anything (its new process prints it).
[[noreturn]] void keep_leave() {
    char why[256] = "";
    if (!in_place_leave(why, sizeof why)) log_line("%s\n", why);
    _exit(0);
}

// SEND <epoch> <timeout_ms> <target> [precopied]: the agent streams this quiescent rank's image
// (with "precopied", after this rank's PRECOPY to the same receiver: only what was written since)
// to a receiver of the job (`ghost checkpoint --to TARGET`, ghost_agent_request_send), the secret
// from a 0600 file in the private runtime directory (a restored rank's environment may hold an
// older job's); SENT <epoch> <bytes> <export_s> <sync_s> once the receiver's verdict said the image
// is complete (the process is not killed: it stays quiescent until STOP or RESUME), or ERROR
// <epoch> <reason>. Where this rank's sending checkpointer keeps its files (secret, log, a
// pre-copy's index).
std::string send_base() {
    return private_dir() + "/send-" + std::to_string((long)getpid());
}

// Whether the last PRECOPY of this process succeeded: the next SEND takes only what was written
// since (the index file is then <send_base()>.precopy-index).
bool g_precopied = false;

// The checkpointer of this rank's final image, started once the pre-copy rounds are done
// (GHOST_CHECKPOINT_STANDBY): connected to the receiver, the rounds' index read, it waits for the
// SEND that follows the job's quiesce, which then does not wait for its start (about 50 ms here:
// the process, UCX, the connection). Anything else dismisses it, and so does a SEND that does not
// come within 30 s (a migration given up before its quiesce says nothing to the ranks).
bool g_standby = false;
long g_standby_since = 0;
std::string g_standby_to; // its receiver

using send_request_fn = int (*)(const char *, const char *, const char *, int);
using checkpoint_wait_fn = int (*)(int, char *, size_t);
using standby_release_fn = int (*)(int);

// The secret a sending checkpointer authenticates with, in a 0600 file of the private runtime
// directory (a restored rank's environment may hold an older job's).
bool write_send_secret(const std::string &secret_file) {
    unlink(secret_file.c_str());
    int sf = open(secret_file.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    std::string sl = std::string(g_secret) + "\n";
    bool written = sf >= 0 && write(sf, sl.data(), sl.size()) == (ssize_t)sl.size();
    if (sf >= 0) close(sf);
    return written;
}

void standby_start(const std::string &to) {
    auto request = (send_request_fn)dlsym(RTLD_DEFAULT, "ghost_agent_request_send");
    std::string base = send_base(), secret_file = base + ".secret", log = base + ".log";
    unlink(log.c_str());
    if (request && write_send_secret(secret_file) &&
        request(to.c_str(), secret_file.c_str(), base.c_str(),
                GHOST_CHECKPOINT_AFTER_PRECOPY | GHOST_CHECKPOINT_STANDBY) == 0) {
        g_standby = true;
        g_standby_since = now_ms();
        g_standby_to = to;
        // The job is stopped only once it is ready (while the rank still runs): else its start
        // would be the job's wait all the same.
        auto ready = (int (*)(int))dlsym(RTLD_DEFAULT, "ghost_agent_standby_ready");
        if (!ready || ready(10000) != 1) standby_dismiss(); // a SEND starts a checkpointer then
        return;
    }
    unlink(secret_file.c_str()); // a SEND starts a checkpointer of its own
}

void standby_dismiss() {
    if (!g_standby) return;
    g_standby = false;
    auto release = (standby_release_fn)dlsym(RTLD_DEFAULT, "ghost_agent_standby_release");
    auto wait = (checkpoint_wait_fn)dlsym(RTLD_DEFAULT, "ghost_agent_checkpoint_wait");
    char why[256];
    if (release && wait && release(0) == 0) wait(5000, why, sizeof why);
    std::string base = send_base();
    unlink((base + ".secret").c_str());
    unlink((base + ".log").c_str());
}

// The agent streams this process's image (or, with GHOST_CHECKPOINT_PRECOPY, its pre-copy) to
// `to` and this waits for the receiver's verdict: 0, 1 (in a restored copy) or -1 with `why`.
// The final image after a pre-copy goes through the standby, when there is one for that receiver
// (one left by a migration given up after its pre-copy is dismissed).
int stream_image(const std::string &to, long timeout_ms, int flags, bool quiescent, char *why,
                 size_t len, checkpointer_report *rep) {
    bool standing_by = g_standby && g_standby_to == to &&
                       (flags & GHOST_CHECKPOINT_AFTER_PRECOPY) &&
                       !(flags & GHOST_CHECKPOINT_PRECOPY);
    if (!standing_by) standby_dismiss();
    g_standby = false;
    auto request = (send_request_fn)dlsym(RTLD_DEFAULT, "ghost_agent_request_send");
    auto wait = (checkpoint_wait_fn)dlsym(RTLD_DEFAULT, "ghost_agent_checkpoint_wait");
    auto release = (standby_release_fn)dlsym(RTLD_DEFAULT, "ghost_agent_standby_release");
    int rc = -1;
    std::string base = send_base();
    std::string secret_file = base + ".secret", log = base + ".log";
    if (!standing_by) unlink(log.c_str());
    bool written = standing_by || write_send_secret(secret_file);
    bool started = false;
    if (!request || !wait || !release) {
        snprintf(why, len, "no ghost agent in this rank (libghost.so not preloaded)");
    } else if (!written) {
        snprintf(why, len, "cannot write %s: %s", secret_file.c_str(), strerror(errno));
    } else if (!quiescent || requests_before_checkpoint(g_rank, req_convert, why, len) == 0) {
        fflush(nullptr);
        // (A standby that failed on its own, its receiver gone say, is waited for like any
        // other: its log says why.)
        started = standing_by ? (release(1), true)
                              : request(to.c_str(), secret_file.c_str(), base.c_str(), flags) == 0;
        if (started)
            rc = wait(timeout_ms > 0 ? (int)timeout_ms : -1, why, len);
        else
            snprintf(why, len,
                     "the agent cannot start a checkpointer (no ghost binary known, "
                     "or one is running)");
    }
    if (standing_by && !started) {
        char ignored[256];
        if (release && wait && release(0) == 0) wait(5000, ignored, sizeof ignored);
    }
    unlink(secret_file.c_str());
    if (rc == 1) return rc; // the copy on the receiving side
    *rep = read_checkpointer_report(log);
    unlink(log.c_str());
    if (rc == 0 && (!rep->found || rep->bytes == 0)) {
        snprintf(why, len, "the checkpointer reported nothing");
        rc = -1;
    }
    return rc;
}

// A pre-copy goes in rounds: the first copies all the memory while the rank runs, each next one
// what was written during the last (so that what the job waits for at the end is what was
// written during a short round, not during the whole copy). After each round its checkpointer
// says what the rank wrote meanwhile: what the next round, or the image, would take. Another
// round comes only if that is more than the job should wait for (8 MiB) and, after the second,
// at most half of what this round copied (else the next round would take about as long, and
// leave about as much: the rank writes as fast as the rounds copy); and at most `most` rounds (at
// most image::max_precopy_rounds: each round is a source of the image after them, which its
// receiver keeps in memory until the rank runs).
// Tests only: GHOST_TEST_PRECOPY_SMALL=BYTES stands for the 8 MiB (0: a round follows any write).
unsigned long long small_precopy_round() {
    const char *t = getenv("GHOST_TEST_PRECOPY_SMALL");
    return t && *t ? strtoull(t, nullptr, 10) : 8ULL << 20;
}
bool another_precopy_round(int done, int most, unsigned long long copied,
                           unsigned long long written) {
    return done < most && written > small_precopy_round() && (done == 1 || written <= copied / 2);
}

// PRECOPY <migration> <timeout_ms> <target> [<most rounds>]: while the rank runs, its memory goes
// to the receiver of its coming image (core::export_precopy), in rounds; PRECOPIED <migration>
// <bytes> <copy_s> <rounds>, or NOPRECOPY <migration> process|receiver <reason>: "process", the
// migration sends a whole image instead; "receiver", the receiver failed (lost, refused): a whole
// image would fail there too. A round after the first that fails for the process ends the rounds:
// the image after them takes what it can from those the receiver has (it is whole if the failed
// round had begun a new scan: the export sees that).
void precopy_image(const std::vector<std::string> &w) {
    standby_dismiss(); // an earlier migration's, given up
    std::string base = send_base(), index = base + ".precopy-index";
    unlink(index.c_str());
    g_precopied = false;
    int most = w.size() == 5 ? atoi(w[4].c_str()) : (int)ghost::image::max_precopy_rounds;
    if ((w.size() != 4 && w.size() != 5) || most < 1 ||
        most > (int)ghost::image::max_precopy_rounds) {
        send_line("NOPRECOPY " + (w.size() > 1 ? w[1] : std::string("-")) + " process bad request");
        return;
    }
    long start = now_ms(), timeout_ms = atol(w[2].c_str());
    unsigned long long total = 0;
    int rounds = 0;
    for (bool more = true; more;) {
        char why[512] = "";
        checkpointer_report rep;
        long left = timeout_ms > 0 ? std::max(1L, timeout_ms - (now_ms() - start)) : 0;
        int flags = GHOST_CHECKPOINT_PRECOPY | (rounds ? GHOST_CHECKPOINT_AFTER_PRECOPY : 0);
        int rc = stream_image(w[3], left, flags, false, why, sizeof why, &rep);
        if (rc != 0 && (rounds == 0 || rep.resource_failed)) {
            for (char *c = why; *c; c++)
                if (*c == '\n') *c = ' ';
            unlink(index.c_str());
            send_line("NOPRECOPY " + w[1] + (rep.resource_failed ? " receiver " : " process ") +
                      why);
            return;
        }
        if (rc != 0) break;
        total += rep.bytes;
        rounds++;
        more = another_precopy_round(rounds, most, rep.bytes, rep.written_bytes);
    }
    g_precopied = access(index.c_str(), F_OK) == 0;
    if (g_precopied) standby_start(w[3]);
    send_line("PRECOPIED " + w[1] + " " + std::to_string(total) + " " +
              std::to_string((double)(now_ms() - start) / 1000.0) + " " + std::to_string(rounds));
}

save_result send_image(const std::string &e, const std::string &line) {
    auto w = words(line);
    bool precopied = w.size() == 5 && w[4] == "precopied";
    if (w.size() != 4 && !precopied) {
        send_line("ERROR " + e + " bad request " + line);
        return save_failed;
    }
    files_read_shared_positions();
    char why[512] = "";
    checkpointer_report rep;
    int flags = precopied && g_precopied ? GHOST_CHECKPOINT_AFTER_PRECOPY : 0;
    int rc = stream_image(w[3], atol(w[2].c_str()), flags, true, why, sizeof why, &rep);
    g_precopied = false; // (also in the copy on the receiving side: its pid has no index file)
    if (rc == 1) return save_restored;
    unlink((send_base() + ".precopy-index").c_str());
    if (rc != 0) return send_save_error(e, why);
    send_line("SENT " + e + " " + std::to_string(rep.bytes) + " " + std::to_string(rep.export_s) +
              " " + std::to_string(rep.sync_s));
    return save_done;
}

// One quiesce epoch (runtime/job_protocol.h). Returns false when the coordinator is gone.
bool run_epoch(const std::string &e, long timeout_ms) {
    // A standby is for this epoch's SEND, which takes it; the epoch ended otherwise, it goes.
    struct standby_guard {
        ~standby_guard() { standby_dismiss(); }
    } standby_ends_with_epoch;
    long deadline = now_ms() + (timeout_ms * 9) / 10;
    const char *why = "";
    std::string line;
    auto fail = [&](wait_result r, const std::string &what) {
        resume_local();
        if (r == w_gone) return false;
        if (r == w_timeout) {
            snprintf(g_error, sizeof g_error, "%s", what.c_str());
            send_line("ERROR " + e + " " + what);
        }
        return true;
    };
    g_local = 1;
    Q.phase = phase_clock;
    raise_flag();
    auto r = wait_for([&] { return settled(true, &why); }, deadline, false, nullptr);
    if (r != w_ok) return fail(r, std::string("a thread stayed inside ") + why);

    // Collective clock rounds until the coordinator says every communicator's members agree.
    std::vector<uint64_t> reported(g_world_size);
    for (int round = 0;; round++) {
        std::string clock;
        int n = 0;
        comms_visit(
            [](comm_info *c, void *arg) {
                if (!c->tracked) return;
                char b[64];
                snprintf(b, sizeof b, " %llx %llu", (unsigned long long)c->id,
                         (unsigned long long)c->seq.load());
                *(std::string *)arg += b;
            },
            &clock);
        for (char ch : clock)
            n += ch == ' ';
        // Threads inside a communicator creation: the new communicator is not in the report yet,
        // but members that have returned may be inside a collective on it already (MPICH lets a
        // rank leave MPI_Cart_create or MPI_Dist_graph_create_adjacent first). The coordinator
        // then asks for another round, in which they may return (running forward, below).
        int creating = 0;
        for (thread_gate *t : gate_threads())
            creating += t->in_create != 0 || t->in_group_create != 0;
        if (creating) clock += " creating " + std::to_string(creating);
        size_t chained = 0;
        clock += made_report(&chained, true);
        if (chained > kMaxChainedReport)
            return fail(w_timeout, "this rank keeps records of " + std::to_string(chained) +
                                       " communicator creations, more than a checkpoint can "
                                       "agree on (" +
                                       std::to_string(kMaxChainedReport) + ")");
        // The messages sent to each world rank: if this round agrees, the threads stay at their
        // safe points and these are final, so the coordinator sends the drain targets with the
        // agreement (no round of its own for the counts).
        clock += " sent " + std::to_string(g_world_size);
        for (int i = 0; i < g_world_size; i++) {
            reported[i] = __atomic_load_n(&g_sent[i], __ATOMIC_RELAXED);
            clock += " " + std::to_string(reported[i]);
        }
        send_line("CLOCK " + e + " " + std::to_string(n / 2) + clock);
        r = wait_for([] { return false; }, deadline, true, &line);
        if (r != w_ok)
            return fail(r, "reported its collective clocks, but another rank did not report in "
                           "time (its threads did not reach a safe point; the coordinator sent "
                           "no targets)");
        auto w = words(line);
        if (w.size() < 4 || w[0] != "TARGET" || w[1] != e)
            return fail(w_timeout, "unexpected " + line);
        if (w[2] == "1") {
            apply_prune(w);
            break;
        }
        struct target_set {
            std::vector<std::pair<uint64_t, uint64_t>> t;
        } ts;
        for (size_t i = 4; i + 1 < w.size(); i += 2)
            ts.t.push_back(
                {strtoull(w[i].c_str(), nullptr, 16), strtoull(w[i + 1].c_str(), nullptr, 10)});
        comms_visit(
            [](comm_info *c, void *arg) {
                c->target = c->seq.load();
                for (auto &p : ((target_set *)arg)->t)
                    if (c->tracked && p.first == c->id) c->target = p.second;
            },
            &ts);
        Q.behind = is_behind();
        Q.phase = phase_forward;
        quiesce_wake();
        // Running forward ends when this rank has caught up and its threads are parked again (or
        // inside a collective that the next round lets the others reach). A thread inside a
        // communicator creation is given a moment to return (its new communicator then is in the
        // next report); it may also wait for members that the next round sends forward.
        const long round_start = now_ms();
        r = wait_for(
            [&] {
                bool b = is_behind();
                if (!b && Q.behind.load()) {
                    Q.behind = 0;
                    quiesce_wake();
                }
                return !b && (settled(true, &why, true, false) ||
                              (now_ms() - round_start >= 5 && settled(true, &why)));
            },
            deadline, false, nullptr);
        if (r != w_ok)
            return fail(r, std::string("running forward to the collective targets (round ") +
                               std::to_string(round + 1) + "): " +
                               (is_behind() ? std::string("still behind")
                                            : std::string("a thread stayed inside ") + why));
        Q.phase = phase_clock;
    }
    Q.phase = phase_hold;
    quiesce_wake();
    r = wait_for([&] { return settled(false, &why); }, deadline, false, nullptr);
    if (r != w_ok) return fail(r, std::string("a thread stayed inside ") + why);

    // A thread leaving a collective stops at its next call's entry, before it could send: the
    // counts of the last report still hold (checked: the coordinator's drain targets are theirs).
    for (int i = 0; i < g_world_size; i++)
        if (__atomic_load_n(&g_sent[i], __ATOMIC_RELAXED) != reported[i])
            return fail(w_timeout, "messages were sent after the collective clocks agreed");
    r = wait_for([] { return false; }, deadline, true, &line);
    if (r != w_ok) return fail(r, "no drain target from the coordinator");
    auto w = words(line);
    if (w.size() < 3 || w[0] != "DRAIN" || w[1] != e) return fail(w_timeout, "unexpected " + line);
    uint64_t expected = strtoull(w[2].c_str(), nullptr, 10), msgs = 0, bytes = 0;
    long left = deadline - now_ms();
    std::string still;
    if (drain_until(expected, left > 0 ? left : 0, &msgs, &bytes, &still) != 0)
        return fail(w_timeout, "drain: " + still);
    // Blocking sends of this rank return once their receivers drained them.
    r = wait_for([&] { return settled(false, &why, false); }, deadline, false, nullptr);
    if (r != w_ok) return fail(r, std::string("a thread stayed inside ") + why);
    send_line("DRAINED " + e + " " + std::to_string(msgs) + " " + std::to_string(bytes));

    // Other ranks may still drain messages this rank sends: keep the lower half progressing,
    // once per millisecond at least (a transfer that needs the sender moves a socket buffer's
    // worth per step). Waiting in poll meanwhile rather than spinning leaves the CPU to the ranks
    // still draining: 8 ranks spinning on 2 cores made the drain of computing ranks, with nothing
    // in flight, take 15 ms.
    for (;;) {
        std::string l;
        int rr = read_line(&l, 1);
        if (rr < 0) return fail(w_gone, "");
        if (rr > 0 && l.rfind("QUIESCED ", 0) == 0) break;
        if (rr > 0 && l.rfind("RESUME ", 0) == 0) return fail(w_abort, "");
        if (now_ms() > deadline + timeout_ms)
            return fail(w_timeout, "no QUIESCED from the coordinator");
        drain_progress();
    }
    g_local = 2;
    // Quiescent: hold until the coordinator (or the agent, ghost_mpi_resume) resumes the job.
    save_parent parent;
    for (;;) {
        std::string l;
        int rr = read_line(&l, 20);
        if (rr < 0) return fail(w_gone, "");
        if (rr > 0 && l.rfind("STOP " + e, 0) == 0) {
            // checkpoint --kill: the images are durable and the job must not run one step past
            // them (its output would be printed twice once restarted). Nothing is flushed.
            syscall(SYS_kill, getpid(), SIGKILL);
        }
        if (rr > 0 && l.rfind("PARENT " + e + " ", 0) == 0) {
            parent.incremental = true;
            parent.path = l.substr(8 + e.size());
            if (parent.path == "-") parent.path.clear();
            continue;
        }
        if (rr > 0 && l.rfind("SAVE " + e + " ", 0) == 0) {
            // In a restored copy of the rank (save_restored), the restore ends this epoch
            // (coord_after_restore asks for the resume below) and the client connects to the new
            // job's coordinator.
            save_image(e, l, parent);
            continue;
        }
        if (rr > 0 && l.rfind("SEND " + e + " ", 0) == 0) {
            if (send_image(e, l) == save_restored && held_after_live_restore(e)) continue;
            continue;
        }
        if (rr > 0 && l.rfind("ACCEPT " + e + " ", 0) == 0) {
            keep_accept(e, words(l));
            continue;
        }
        keep_poll(e);
        if (rr > 0 && l == "DETACH " + e) {
            keep_detach(e);
            continue;
        }
        if (rr > 0 && l == "LEAVE " + e) keep_leave();
        if ((rr > 0 && l.rfind("RESUME ", 0) == 0) || g_resume_req.exchange(0)) {
            keep_abandon();
            resume_local();
            send_line("RESUMED " + e);
            return true;
        }
        if (g_stop) return fail(w_gone, "");
    }
}

bool connect_now(const char *coord, const char *job, const char *secret);

// The CPU list `set` as "0-3,6" (an empty set: "-").
std::string cpu_list(const cpu_set_t &set) {
    std::string out;
    for (int c = 0; c < CPU_SETSIZE; c++) {
        if (!CPU_ISSET(c, &set)) continue;
        int last = c;
        while (last + 1 < CPU_SETSIZE && CPU_ISSET(last + 1, &set))
            last++;
        out += (out.empty() ? "" : ",") + std::to_string(c);
        if (last > c) out += "-" + std::to_string(last);
        c = last;
    }
    return out.empty() ? "-" : out;
}

// STATS <cpu_s> <rss_bytes> <n> <messages sent to world rank 0> ... <to n-1>
//       run_s <s> wait_s <s> cpus <n> bound <list>
// what a load balancer reads through `ghost status --json` (the coordinator keeps each rank's
// latest, its built-in balancer among others). run_s and wait_s: how long the rank's main thread
// ran, and how long it was runnable but not running (/proc/self/schedstat: a host whose cores are
// oversubscribed or whose cgroup's CPU quota is used up makes its ranks wait there, whatever they
// compute); cpus: the CPUs this host has online (its capacity); bound: those the rank may run on.
std::string stats_line() {
    struct timespec cpu = {};
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &cpu);
    unsigned long long pages_total = 0, pages_resident = 0;
    if (FILE *f = fopen("/proc/self/statm", "re")) {
        if (fscanf(f, "%llu %llu", &pages_total, &pages_resident) != 2) pages_resident = 0;
        fclose(f);
    }
    // /proc/self is the thread group leader: the thread that runs the program's main().
    unsigned long long on_cpu_ns = 0, run_delay_ns = 0;
    if (FILE *f = fopen("/proc/self/schedstat", "re")) {
        if (fscanf(f, "%llu %llu", &on_cpu_ns, &run_delay_ns) != 2) on_cpu_ns = run_delay_ns = 0;
        fclose(f);
    }
    cpu_set_t bound;
    CPU_ZERO(&bound);
    if (sched_getaffinity(0, sizeof bound, &bound) != 0) CPU_ZERO(&bound);
    char head[96];
    snprintf(head, sizeof head, "STATS %.3f %llu %d", cpu.tv_sec + cpu.tv_nsec / 1e9,
             pages_resident * (unsigned long long)sysconf(_SC_PAGESIZE), g_sent ? g_world_size : 0);
    std::string l = head;
    for (int i = 0; g_sent && i < g_world_size; i++)
        l += " " + std::to_string(__atomic_load_n(&g_sent[i], __ATOMIC_RELAXED));
    char tail[96];
    snprintf(tail, sizeof tail, " run_s %.3f wait_s %.3f cpus %ld bound ", on_cpu_ns / 1e9,
             run_delay_ns / 1e9, sysconf(_SC_NPROCESSORS_ONLN));
    l += tail + cpu_list(bound);
    // The layer's records (creations a restart replays, tombstones among them): the coordinator
    // asks for the tombstones when they grow between checkpoints (TOMBSTONES, PRUNE).
    l += " records " + std::to_string(records_live());
    if (g_sent_bytes && g_world_size > 0) {
        l += " bytes ";
        for (int i = 0; i < g_world_size; i++)
            l += (i ? "," : "") +
                 std::to_string(__atomic_load_n(&g_sent_bytes[i], __ATOMIC_RELAXED));
    }
    return l;
}

constexpr long kStatsEveryMs = 1000;

void *client_main(void *) {
    bool told = false;
    long next_stats = 0;
    while (!g_stop) {
        if (g_fd >= 0 && now_ms() >= next_stats) {
            next_stats = now_ms() + kStatsEveryMs;
            send_line(stats_line());
        }
        if (g_reconnect.exchange(0)) {
            // A restored rank: the job is a new one, with its own coordinator.
            g_inbuf.clear();
            told = false;
            if (g_new_coord->empty()) {
                log_line("restarted without a job coordinator; no checkpoints\n");
                break;
            }
            if (!connect_now(g_new_coord->c_str(), g_new_job->c_str(), g_new_secret->c_str()))
                break;
            continue;
        }
        if (g_standby && now_ms() - g_standby_since > 30000) standby_dismiss();
        std::string l;
        int r = read_line(&l, 200);
        if (r < 0 && g_reconnect.load()) continue;
        if (r < 0) {
            if (!g_stop && !told)
                log_line("the job coordinator is gone; running on without checkpoints\n");
            told = true;
            break;
        }
        if (r == 0) continue;
        auto w = words(l);
        if (w.size() >= 2 && w[0] == "TOMBSTONES") {
            size_t count = 0;
            send_line("TOMBSTONES " + w[1] + made_report(&count, false));
        } else if (w.size() >= 2 && w[0] == "PRUNE") {
            apply_prune(w);
        }
        if (w.size() >= 2 && w[0] == "PRECOPY") precopy_image(w);
        if (w.size() >= 2 && w[0] == "QUIESCE") {
            long ms = w.size() >= 3 ? atol(w[2].c_str()) : 10000;
            if (!run_epoch(w[1], ms > 0 ? ms : 10000)) {
                if (!g_stop)
                    log_line("the job coordinator is gone; running on without checkpoints\n");
                break;
            }
        }
    }
    standby_dismiss();
    resume_local();
    return nullptr;
}

int connect_to(const std::string &addr, int port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) return -1;
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, addr.c_str(), &a.sin_addr) != 1) {
        close(fd);
        return -1;
    }
    if (connect(fd, (sockaddr *)&a, sizeof a) != 0 && errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    struct pollfd p = {fd, POLLOUT, 0};
    int err = 0;
    socklen_t len = sizeof err;
    if (poll(&p, 1, 2000) != 1 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err) {
        close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

// Connects and says HELLO; false (after one line on stderr) when no coordinator takes this rank.
bool connect_now(const char *coord, const char *job, const char *secret) {
    std::string c = coord;
    size_t colon = c.rfind(':');
    if (colon == std::string::npos) {
        log_line("bad %s; no coordinator\n", job::kEnvCoordinator);
        return false;
    }
    int port = atoi(c.c_str() + colon + 1);
    std::string list = c.substr(0, colon);
    char host[256] = "?";
    gethostname(host, sizeof host - 1);
    for (size_t pos = 0; pos <= list.size() && g_fd < 0;) {
        size_t comma = list.find(',', pos);
        std::string addr =
            list.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
        pos = comma == std::string::npos ? list.size() + 1 : comma + 1;
        int fd = connect_to(addr, port);
        if (fd < 0) continue;
        g_fd = fd;
        g_inbuf.clear();
        send_line(std::string("HELLO ") + job + " " + secret + " " + std::to_string(g_rank) + " " +
                  std::to_string(g_world_size) + " " + std::to_string((long)getpid()) + " " + host);
        std::string reply;
        if (read_line(&reply, 5000) != 1 || reply != "WELCOME") {
            close(g_fd);
            g_fd = -1;
            if (reply.rfind("REFUSED", 0) == 0) {
                log_line("the job coordinator refused this rank (%s); no checkpoints\n",
                         reply.c_str());
                return false;
            }
        }
    }
    if (g_fd < 0) {
        log_line("cannot reach the job coordinator at %s; no checkpoints\n", coord);
        return false;
    }
    snprintf(g_secret, sizeof g_secret, "%s", secret);
    snprintf(g_job_id, sizeof g_job_id, "%s", job);
    attribution_note_upper_fd(g_fd, upper_fd_use::coordinator);
    return true;
}

void connect_coordinator() {
    const char *coord = getenv(job::kEnvCoordinator);
    const char *job = getenv(job::kEnvJob);
    const char *secret = getenv(job::kEnvSecret);
    if (!coord || !*coord || !job || !secret) return; // not under ghostrun's coordinator
    g_debug = getenv("GHOST_MPI_QUIESCE_DEBUG") != nullptr;
    if (!connect_now(coord, job, secret)) return;
    if (pthread_create(&g_thread, nullptr, client_main, nullptr) != 0) {
        close(g_fd);
        g_fd = -1;
        return log_line("cannot start the coordinator thread; no checkpoints\n");
    }
    g_thread_started = true;
}

} // namespace

bool rank_quiescent() {
    return g_local.load() == 2;
}

const char *thread_off_safe_point() {
    const char *why = nullptr;
    return rank_quiescent() && !settled(false, &why, false) ? why : nullptr;
}

void coord_thread_after_restore() {
    g_fd = -1; // that descriptor was left out of the image; its number may be reused
    // So was the connection to a placeholder (a kept rank's image, moved since): a restored rank
    // runs under its own launcher. Its numbers may be another descriptor's now.
    g_keep.current = g_keep.pending = g_keep.listen = -1;
    for (int &fd : g_keep.fds)
        fd = -1;
    g_keep.nfds = 0;
}

void coord_after_restore(char *const *envp) {
    auto value = [&](const char *name) {
        size_t n = strlen(name);
        for (char *const *e = envp; e && *e; e++)
            if (strncmp(*e, name, n) == 0 && (*e)[n] == '=') return std::string(*e + n + 1);
        return std::string();
    };
    if (!g_new_coord) {
        g_new_coord = new std::string();
        g_new_job = new std::string();
        g_new_secret = new std::string();
    }
    *g_new_coord = value(job::kEnvCoordinator);
    *g_new_job = value(job::kEnvJob);
    *g_new_secret = value(job::kEnvSecret);
    g_inbuf.clear();
    if (g_thread_started) {
        // The epoch the image was taken in ends here (every rank was quiescent in it: nothing in
        // flight, drained messages in upper memory); then the client connects again.
        g_reconnect = 1;
        if (g_local.load() != 0) g_resume_req = 1;
        return;
    }
    if (g_new_coord->empty() || g_new_job->empty() || g_new_secret->empty()) return;
    if (!connect_now(g_new_coord->c_str(), g_new_job->c_str(), g_new_secret->c_str())) return;
    if (pthread_create(&g_thread, nullptr, client_main, nullptr) != 0) {
        close(g_fd);
        g_fd = -1;
        return log_line("cannot start the coordinator thread; no checkpoints\n");
    }
    g_thread_started = true;
}

void quiesce_after_init(int provided) {
    note_transport_choice();
    g_threads_multiple = provided == MPI_THREAD_MULTIPLE;
    const char *why = nullptr;
    if (!comms_init(&why)) {
        log_line("quiescence unavailable: %s\n", why);
        return;
    }
    if (syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) != 0)
        g_gate_fence = true;
    bool spawned = false;
    {
        lower_call lc;
        static auto rank = (int (*)(MPI_Comm, int *))lower_fn("MPI_Comm_rank");
        rank(L.world, &g_rank);
        // A process that MPI_Comm_spawn started is no rank of the job ghostrun launched (its world
        // is its own, its rank 0 another process than the job's): registered, it answered for
        // that rank (after it ended, "rank 0 has called MPI_Finalize" refused every checkpoint of
        // the job). It takes no part in checkpoints: the parents' are refused while their
        // intercommunicator to it lives.
        static auto get_parent = (int (*)(MPI_Comm *))lower_fn("MPI_Comm_get_parent");
        const MPI_Comm none = (MPI_Comm)g_lower_null[(int)kind::comm];
        MPI_Comm parent = none;
        if (get_parent && get_parent(&parent) == MPI_SUCCESS) spawned = parent != none;
    }
    if (!spawned) connect_coordinator();
}

void quiesce_before_finalize() {
    if (!g_thread_started) return;
    send_line("FINALIZED");
    g_stop = 1;
    {
        std::lock_guard<std::mutex> g(g_write_mu);
        shutdown(g_fd, SHUT_RDWR);
    }
    pthread_join(g_thread, nullptr);
    g_thread_started = false;
    std::lock_guard<std::mutex> g(g_write_mu);
    close(g_fd);
    g_fd = -1;
}

} // namespace ghost::mpi

using namespace ghost::mpi;

// Blocks until this rank is quiescent in the epoch the coordinator started (all its application
// threads parked outside the lower half, in-flight messages drained); 0, or -1 (reason from
// ghost_mpi_quiesce_error()) when no epoch reaches that point within timeout_ms.
extern "C" GHOST_EXPORT int ghost_mpi_quiesce(int timeout_ms) {
    long end = now_ms() + (timeout_ms > 0 ? timeout_ms : 0);
    while (g_local.load() != 2) {
        if (now_ms() > end) return -1;
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, nullptr);
    }
    return 0;
}

// Ends the quiescent state this rank is in (the coordinator hears RESUMED); 0, or -1 if it was not
// quiescent.
extern "C" GHOST_EXPORT int ghost_mpi_resume(void) {
    if (g_local.load() != 2) return -1;
    g_resume_req = 1;
    for (int i = 0; i < 5000 && g_local.load() == 2; i++) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, nullptr);
    }
    return g_local.load() == 2 ? -1 : 0;
}

extern "C" GHOST_EXPORT const char *ghost_mpi_quiesce_error(void) {
    return g_error;
}

// The upper-half fd of this rank's connection to the job coordinator, or -1: an image must not
// carry it (the connection is made again after a restart).
extern "C" GHOST_EXPORT int ghost_mpi_coord_fd(void) {
    return g_fd;
}

// The connection to the placeholder this rank runs under after `ghost migrate --keep`, or -1:
// an image leaves it out (a restart runs under a new launcher).
extern "C" GHOST_EXPORT int ghost_mpi_keep_fd(void) {
    return g_keep.current;
}
