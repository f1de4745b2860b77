// SPDX-License-Identifier: Apache-2.0
// One thread, one poll loop: mpirun's exit (SIGCHLD through a self-pipe), rank connections (TCP)
// and `ghost` commands (Unix socket). A quiesce epoch walks every rank through the phases of
// runtime/job_protocol.h; a deadline, a rank that disconnects or reports an error ends the epoch
// and resumes everyone, so nobody waits unboundedly on a dead peer.
#include "coordinator.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <set>
#include <sstream>
#include <vector>

#include "ckpt_dir.h"
#include "creations.h"
#include "ghost-core/image_format.h"
#include "runtime/control.h"
#include "runtime/job_protocol.h"

namespace ghost::run {
namespace {

using clock_type = std::chrono::steady_clock;
constexpr size_t kMaxLine = 1 << 20;
constexpr int kHelloTimeoutMs = 5000;

int g_sig_pipe[2] = {-1, -1};
pid_t g_child = -1;
volatile sig_atomic_t g_user_stop = 0; // a user or batch system asked the job to end
volatile sig_atomic_t g_stop_request =
    0; // SIGUSR1: checkpoint, then stop (a batch system's warning)

void on_signal(int sig, siginfo_t *si, void *) {
    int saved = errno;
    if (sig == SIGCHLD || sig == SIGUSR1) {
        if (sig == SIGUSR1) g_stop_request = 1; // not forwarded: the coordinator's own
        char c = 0;
        (void)!write(g_sig_pipe[1], &c, 1);
    } else {
        if (sig != SIGUSR2) g_user_stop = 1;
    }
    if (sig != SIGCHLD && sig != SIGUSR1 && g_child > 0 && si && si->si_code != SI_KERNEL) {
        // A terminal's signals (SI_KERNEL) reach mpirun directly: it is in our process group.
        kill(g_child, sig);
    }
    errno = saved;
}

std::vector<std::string> split(const std::string &s) {
    std::vector<std::string> out;
    std::istringstream in(s);
    std::string w;
    while (in >> w)
        out.push_back(w);
    return out;
}

// What follows the first `n` words of `line` (a reason at the end of a protocol line).
std::string after_words(const std::string &line, size_t n) {
    size_t at = 0;
    for (size_t i = 0; i < n && at != std::string::npos; i++) {
        at = line.find_first_not_of(" \t", at);
        if (at != std::string::npos) at = line.find_first_of(" \t", at);
    }
    if (at != std::string::npos) at = line.find_first_not_of(" \t", at);
    return at == std::string::npos ? std::string() : line.substr(at);
}

bool equal_secret(const std::string &a, const std::string &b) {
    if (a.size() != b.size()) return false;
    unsigned char d = 0; // constant time
    for (size_t i = 0; i < a.size(); i++)
        d |= (unsigned char)(a[i] ^ b[i]);
    return d == 0;
}

std::string peer_name(const sockaddr_storage &ss) {
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (ss.ss_family == AF_INET) {
        auto *in = (const sockaddr_in *)&ss;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
        port = ntohs(in->sin_port);
    }
    return std::string(host) + ":" + std::to_string(port);
}

double secs(clock_type::duration d) {
    return std::chrono::duration<double>(d).count();
}

struct conn {
    int fd = -1;
    bool is_rank = false; // TCP (rank) or Unix (command)
    bool hello = false;   // rank authenticated
    std::string peer;
    std::string in;
    clock_type::time_point opened;
    // rank
    int rank = -1, size = 0;
    long pid = 0;
    std::string host, state = "connecting";
    std::string stats;       // the rank's latest STATS line, without "STATS "
    bool incoming = false;   // a rank of a live migration's new mpirun, before the switch
    bool receiver = false;   // a `restart-rank --receive` that said RECEIVER
    bool reattached = false; // a kept rank that runs on its fresh lower half (REATTACHED)
    bool gate = false;       // a restarting rank's gate that said GATE
    bool verified = false;   // (gate) its rank's image is verified
    clock_type::time_point stats_time;
};

enum class phase { idle, clock, drained, saving, resumed };

struct epoch_state {
    phase ph = phase::idle;
    long id = 0;
    int cli_fd = -1; // the command that asked
    clock_type::time_point start, deadline, t_counts, t_drain;
    std::map<int, std::map<std::string, unsigned long long>> clocks; // rank -> id -> seq
    // rank -> its "<id>:<size>:<pos>[~],..." words: the creations collective over each
    // communicator that a restart would replay there (job_protocol.h)
    std::map<int, std::vector<std::string>> made;
    bool creating = false; // this round: a rank has a thread inside a communicator creation
    // Since when rounds have found a thread inside a creation (none: time_point{}), and which
    // ranks: one that waits for processes no clock brings there (MPI_Intercomm_create waits for
    // the other group, which nothing makes run forward) never returns; the threads parked at a
    // safe point are then let through it once (PASS), so that the other group gets there too.
    clock_type::time_point creating_since;
    std::set<int> creating_ranks;
    int passes = 0;
    std::map<int, std::vector<unsigned long long>> counts; // rank -> sent to each
    std::map<int, std::pair<unsigned long long, unsigned long long>> drained;
    std::map<int, bool> answered;
    int rounds = 0;
    // A checkpoint: after QUIESCED every rank writes its image (SAVE), then the manifest.
    bool ckpt = false, kill = false;
    int gen = 0;
    long save_ms = 0;
    std::string dir, tmp;
    clock_type::time_point t_saved;
    std::map<int, manifest_rank> saved;
    double export_s = 0, sync_s = 0;
    // A migration: a checkpoint with kill, then a new mpirun that places these ranks on mig_host.
    bool migrate = false;
    std::vector<int> mig_ranks;
    std::string mig_host;
    bool live = false; // a live migration (--via ucx): quiescent ranks stream to new processes
};

// A migration between its images and its answer: the old mpirun ends, a new one starts every rank
// from the images, the moved ones on their new host; the answer waits until all have connected.
struct migration {
    bool active = false, launched = false, fallback = false;
    int cli = -1;
    int generation = 0;
    std::string gen_dir, host, ranks; // ranks as "1,3"
    std::vector<std::string> hosts_new, hosts_old;
    clock_type::time_point start, t_drain, t_saved, t_launch, deadline, kill_at;
    long start_ms = 60000; // how long a relaunched mpirun has to bring every rank back
    double export_s = 0;
    std::string failure; // why the new placement did not come up (then: where it was)
    // A live migration (--via ucx): the old ranks stay quiescent while a new mpirun starts a
    // receiver for every rank; each old rank streams its image there (SEND), then STOP.
    bool live = false, sending = false, switched = false;
    std::string deferred;  // a failed live migration's answer, once its new mpirun is gone
    bool all_sent = false; // every image is in its new process, which holds until the switch
    std::map<int, std::string> receivers; // rank -> addr:port
    clock_type::time_point t_receivers, t_sending, t_sent;
    unsigned long long bytes = 0;
    bool by_balancer = false; // the built-in balancer asked (its answer goes to it)
    // `ghost migrate --keep`: the ranks that do not move keep their processes (ACCEPT, DETACH).
    bool keep = false;
    std::set<int> moving;
    long epoch = 0;   // the live migration's epoch, for the RESUME after a keep's switch
    std::string bind; // "RANK:CPU,...": where the new processes bind (ghostrun --balance)
    // A live migration's prelude, while the job runs (pre): the new mpirun and its receivers
    // start, then (unless --no-precopy) each rank that moves copies its memory there (PRECOPY); the
    // quiesce comes after. The ranks that answered PRECOPIED send only what they wrote since (SEND
    // ... precopied).
    bool pre = false, precopy = false;
    long pre_id = 0, quiesce_ms = 10000;
    std::set<int> precopying, precopied;
    unsigned long long precopy_bytes = 0;
    int precopy_rounds = 0;     // the most any rank made
    int precopy_rounds_max = 0; // what the request allows (0: the ranks' most)
    clock_type::time_point t_quiesce;
};

struct last_checkpoint {
    int gen = 0;
    std::string dir; // the generation's
    long long time = 0;
};

struct server {
    coordinator_setup &s;
    const job_config &cfg;
    std::string program;
    std::vector<conn> conns;
    epoch_state ep;
    long next_epoch = 1;
    int job_size = 0;
    last_checkpoint last;
    // The gates of the ranks that restart from images (job_protocol.h): none runs on before every
    // one has verified its image. A refusal ends the launch; it is the job's last word.
    struct {
        std::string refusal;
        bool opened = false;
        clock_type::time_point opened_at;
    } gates;
    bool announced = false;
    bool stopped_after_ckpt = false;
    clock_type::time_point next_periodic;
    // Periodic checkpoints refused in a row (a rank was inside something a checkpoint cannot
    // carry at that moment: an open epoch, a creation): the next try comes after 1, 2, 4 ... 64 s
    // rather than a whole interval later (a job with --interval 3600 would otherwise go an hour
    // more without a checkpoint).
    int periodic_failures = 0;
    migration mv;
    long mv_start_ms = 60000; // the next migration's (its request's) start bound
    // A live migration's two mpiruns: the new one until the switch, the old one until reaped.
    pid_t new_mpirun = -1, old_mpirun = -1, switched_to = -1;
    // The mpiruns of kept ranks' processes (`ghost migrate --keep`): each ends with its last one.
    std::vector<pid_t> retired;
    // The job's mpirun's status when it ended during a live migration, before the switch (-1:
    // it did not): the job's end only if the migration then fails.
    int ended_during_move = -1;
    clock_type::time_point new_mpirun_kill_at = clock_type::time_point::max();
    const clock_type::time_point born_ = clock_type::now();
    bool restart_told = false; // the restart's "every rank runs again" line

    server(coordinator_setup &setup, const job_config &c) : s(setup), cfg(c) {
        program = c.argv.empty() ? "?" : c.argv[0];
        if (c.restarted_gen > 0) last = {c.restarted_gen, c.restarted_dir, c.restarted_time};
        next_periodic = clock_type::now() + interval();
    }

    clock_type::duration interval() const {
        return std::chrono::duration_cast<clock_type::duration>(
            std::chrono::duration<double>(cfg.interval_s));
    }

    // With --ghost-verbose each line carries the seconds since the coordinator started: what
    // waited on what in a failed migration or checkpoint shows in the log.
    void note(const std::string &msg) {
        if (cfg.verbose)
            fprintf(stderr, "ghostrun: job %s: [%.3f] %s\n", s.job.c_str(),
                    secs(clock_type::now() - born_), msg.c_str());
        else
            fprintf(stderr, "ghostrun: job %s: %s\n", s.job.c_str(), msg.c_str());
    }

    void send_line(int fd, const std::string &line) {
        std::string l = line + "\n";
        (void)control::write_all(fd, l.data(), l.size());
    }

    conn *rank_conn(int r) {
        for (auto &c : conns)
            if (c.is_rank && c.hello && c.rank == r && c.fd >= 0) return &c;
        return nullptr;
    }

    std::vector<conn *> live_ranks() {
        std::vector<conn *> v;
        for (auto &c : conns)
            if (c.is_rank && c.hello && c.fd >= 0 && c.state != "lost" && !c.incoming)
                v.push_back(&c);
        return v;
    }

    void accept_on(int lfd, bool is_rank) {
        sockaddr_storage ss{};
        socklen_t len = sizeof ss;
        int fd = accept4(lfd, (sockaddr *)&ss, &len, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0) return;
        conn c;
        c.fd = fd;
        c.is_rank = is_rank;
        c.opened = clock_type::now();
        if (is_rank) {
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            c.peer = peer_name(ss);
        } else {
            ucred cr{};
            socklen_t cl = sizeof cr;
            if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &cl) != 0 || cr.uid != getuid()) {
                fprintf(stderr, "ghostrun: job %s: refused a command from uid %u (not the owner)\n",
                        s.job.c_str(), (unsigned)cr.uid);
                close(fd);
                return;
            }
            c.peer = "pid " + std::to_string(cr.pid);
        }
        conns.push_back(std::move(c));
    }

    // A rank whose answer to the epoch's current phase has not come (a rank that answered keeps
    // its "quiescing" state until the phase ends, so the state alone does not tell).
    bool awaited(const conn &c) const {
        if (!c.is_rank || !c.hello || ep.ph == phase::idle || c.state == "finalized") return false;
        auto it = ep.answered.find(c.rank);
        return it == ep.answered.end() || !it->second;
    }

    void drop(conn &c, const char *why) {
        if (c.fd < 0) return;
        if (c.is_rank && c.hello && c.state != "finalized") {
            // An old rank of a live migration whose image its new process has taken (SENT comes
            // after the receiver's verdict) is not needed any more: its end (mpirun taking the
            // others down after one died) does not undo the move.
            const bool image_moved = ep.live && !c.incoming && c.state == "sent";
            c.state = "lost";
            if (mv.active && mv.pre)
                pre_abort("rank " + std::to_string(c.rank) + " (pid " + std::to_string(c.pid) +
                          " on " + c.host + ") " + why);
            if (ep.ph != phase::idle && !image_moved)
                abort_epoch("rank " + std::to_string(c.rank) + " (pid " + std::to_string(c.pid) +
                            " on " + c.host + ") " + why);
        }
        if (!c.is_rank && c.fd == ep.cli_fd) ep.cli_fd = -1;
        if (!c.is_rank && c.fd == waiting.cli) waiting.cli = -1;
        if (!c.is_rank && c.fd == mv.cli) mv.cli = -1;
        close(c.fd);
        c.fd = -1;
    }

    // ---- ranks ----

    // A first line "<word> <job> <secret> ..." of `n` words (HELLO, GATE): true when it
    // names this job with its secret; else the connection is logged, told and closed.
    bool authenticated(conn &c, const std::vector<std::string> &w, const char *word, size_t n) {
        if (w.size() == n && w[0] == word && w[1] == s.job && equal_secret(w[2], s.secret))
            return true;
        fprintf(stderr, "ghostrun: job %s: refused a connection from %s: %s\n", s.job.c_str(),
                c.peer.c_str(),
                w.size() == n && w[0] == word && w[1] == s.job ? "wrong secret"
                                                               : "not a rank of this job");
        send_line(c.fd, "REFUSED authentication failed");
        close(c.fd);
        c.fd = -1;
        return false;
    }

    void on_hello(conn &c, const std::vector<std::string> &w) {
        if (!authenticated(c, w, "HELLO", 7)) return;
        c.hello = true;
        c.rank = atoi(w[3].c_str());
        c.size = atoi(w[4].c_str());
        c.pid = atol(w[5].c_str());
        c.host = w[6];
        c.state = "running";
        c.incoming = mv.active && mv.live && (!mv.switched || mv.keep);
        if (c.incoming && !mv.switched && !(ep.live && ep.ph != phase::idle)) {
            // A new rank of a live migration that was abandoned: its mpirun is being ended, and
            // the job goes on (or ends) where it was.
            send_line(c.fd, "REFUSED the migration was abandoned");
            close(c.fd);
            c.fd = -1;
            c.hello = false;
            c.incoming = false;
            c.rank = -1;
            return;
        }
        if (c.size > job_size) job_size = c.size;
        for (auto &o : conns) // a rank that reconnects replaces its old entry
            if (&o != &c && o.is_rank && o.hello && o.rank == c.rank && o.fd < 0) o.rank = -1;
        send_line(c.fd, "WELCOME");
        if (cfg.restarted_gen > 0 && !restart_told && !mv.active && job_not_ready().empty()) {
            restart_told = true;
            double ready_s = secs(clock_type::now() - cfg.restart_began);
            fprintf(stderr,
                    "ghostrun: job %s: restarted from %s: every rank runs again %.2f s after the "
                    "restart began (images checked before launch in %.2f s, verified by the "
                    "ranks %.2f s in)\n",
                    s.job.c_str(), cfg.restarted_dir.c_str(), ready_s, cfg.restart_verify_s,
                    gates.opened ? secs(gates.opened_at - cfg.restart_began) : 0.0);
        }
        if (mv.active && mv.keep && mv.switched) return keep_maybe_resume();
        if (c.incoming && mv.all_sent && incoming_ready()) return live_switch();
        if (mv.active && !mv.live && mv.launched && job_not_ready().empty()) finish_migration();
        if (mv.active && mv.live && mv.switched && job_not_ready().empty()) finish_live();
    }

    void announce() {
        if (announced) return;
        announced = true;
        if (cfg.announce) cfg.announce();
    }

    // GATE <job> <secret> <rank> <size>: a rank's gate, while its restorer verifies its image.
    void on_gate(conn &c, const std::vector<std::string> &w) {
        if (!authenticated(c, w, "GATE", 5)) return;
        c.gate = true;
        c.rank = atoi(w[3].c_str());
        c.size = atoi(w[4].c_str());
        if (!gates.refusal.empty()) close_gates("NOGO");
    }

    // Sends GO or NOGO to every gate of the launch and closes them.
    void close_gates(const char *word) {
        for (auto &g : conns)
            if (g.gate && g.fd >= 0) {
                send_line(g.fd, word);
                close(g.fd);
                g.fd = -1;
            }
    }

    // VERIFIED, REFUSED <rank R's image PATH: reason>, or ENDED <why>: the restorer ended
    // without a verdict (killed, or it could not start): no word on the image, and mpirun takes
    // the launch down as for any rank that dies.
    void on_gate_line(conn &c, const std::vector<std::string> &w, const std::string &line) {
        if (w[0] == "REFUSED" && line.size() > 8) {
            if (gates.refusal.empty()) gates.refusal = line.substr(8);
            return close_gates("NOGO");
        }
        if (w[0] == "ENDED") {
            if (cfg.verbose) note(line.substr(6));
            return drop(c, "ended");
        }
        if (w[0] != "VERIFIED") return drop(c, "sent a bad gate line");
        c.verified = true;
        std::set<int> ready;
        for (auto &g : conns)
            if (g.gate && g.fd >= 0 && g.verified) ready.insert(g.rank);
        if ((int)ready.size() < c.size || !gates.refusal.empty()) return;
        gates.opened = true;
        gates.opened_at = clock_type::now();
        close_gates("GO");
        announce();
    }

    void on_rank_line(conn &c, const std::string &line) {
        auto w = split(line);
        if (w.empty()) return;
        if (c.gate) return on_gate_line(c, w, line);
        if (!c.hello && w[0] == "GATE") return on_gate(c, w);
        if (!c.hello && !w.empty() && w[0] == "RECEIVER") return on_receiver(c, w);
        if (!c.hello) return on_hello(c, w);
        if (w[0] == "STATS") {
            c.stats = line.substr(6);
            c.stats_time = clock_type::now();
            return;
        }
        if (w[0] == "TOMBSTONES") return on_tombstones(c, w);
        if (w[0] == "REATTACHED" && mv.active && mv.keep && mv.switched && w.size() >= 2 &&
            atol(w[1].c_str()) == mv.epoch) {
            c.reattached = true;
            c.incoming = true;
            return keep_maybe_resume();
        }
        if (w[0] == "ERROR" && mv.active && mv.keep && mv.switched && w.size() >= 2 &&
            atol(w[1].c_str()) == mv.epoch) {
            // A kept rank that could not join the new job: it ends, and the job with it.
            fprintf(stderr, "ghostrun: job %s: rank %d:%s\n", s.job.c_str(), c.rank,
                    line.substr(line.find(w[1]) + w[1].size()).c_str());
            return;
        }
        if (w[0] == "PRECOPIED" || w[0] == "NOPRECOPY") return on_precopy_answer(c, w, line);
        if (w[0] == "FINALIZED") {
            c.state = "finalized";
            if (mv.active && mv.pre)
                pre_abort("rank " + std::to_string(c.rank) + " called MPI_Finalize");
            if (ep.ph != phase::idle)
                abort_epoch("rank " + std::to_string(c.rank) + " called MPI_Finalize");
            return;
        }
        if (w.size() < 2 || atol(w[1].c_str()) != ep.id || ep.ph == phase::idle) return;
        if (w[0] == "ERROR") {
            std::string why = line.substr(line.find(w[1]) + w[1].size());
            abort_epoch("rank " + std::to_string(c.rank) + ":" + why);
            return;
        }
        if (w[0] == "CLOCK" && ep.ph == phase::clock) {
            auto &m = ep.clocks[c.rank];
            size_t n = w.size() > 2 ? strtoul(w[2].c_str(), nullptr, 10) : 0;
            for (size_t i = 0; i < n && 4 + 2 * i < w.size() + 1 && 3 + 2 * i + 1 < w.size(); i++)
                m[w[3 + 2 * i]] = strtoull(w[4 + 2 * i].c_str(), nullptr, 10);
            // After the pairs: "creating K" (K threads of this rank are inside a collective that
            // makes a communicator, not reported yet: the other members may be in it already),
            // then "sent N s0 .. s(N-1)", the messages this rank sent to each world rank (final
            // if this round agrees: the rank's threads stay at their safe points).
            size_t at = 3 + 2 * n;
            if (at + 1 < w.size() && w[at] == "creating") {
                if (strtoul(w[at + 1].c_str(), nullptr, 10) > 0) {
                    ep.creating = true;
                    ep.creating_ranks.insert(c.rank);
                }
                at += 2;
            }
            if (!read_made(w, at, ep.made[c.rank])) {
                abort_epoch("rank " + std::to_string(c.rank) + ": a short 'made' list in '" +
                            line.substr(0, 80) + "'");
                return;
            }
            size_t size = at + 1 < w.size() && w[at] == "sent"
                              ? strtoul(w[at + 1].c_str(), nullptr, 10)
                              : w.size();
            if (at + 2 + size != w.size()) {
                abort_epoch("rank " + std::to_string(c.rank) + ": no message counts in '" +
                            line.substr(0, 80) + "'");
                return;
            }
            auto &sent = ep.counts[c.rank];
            sent.clear();
            for (size_t i = at + 2; i < w.size(); i++)
                sent.push_back(strtoull(w[i].c_str(), nullptr, 10));
            ep.answered[c.rank] = true;
            c.state = "quiescing";
            if (all_answered()) send_targets();
        } else if (w[0] == "DRAINED" && ep.ph == phase::drained && w.size() >= 4) {
            ep.drained[c.rank] = {strtoull(w[2].c_str(), nullptr, 10),
                                  strtoull(w[3].c_str(), nullptr, 10)};
            ep.answered[c.rank] = true;
            c.state = "quiesced";
            if (all_answered()) quiesced();
        } else if (w[0] == "SAVED" && ep.ph == phase::saving && w.size() >= 4) {
            manifest_rank &m = ep.saved[c.rank];
            m.rank = c.rank;
            m.host = c.host;
            m.pid = c.pid;
            m.bytes = strtoull(w[2].c_str(), nullptr, 10);
            m.hash = w[3];
            if (w.size() >= 6) {
                ep.export_s = std::max(ep.export_s, atof(w[4].c_str()));
                ep.sync_s = std::max(ep.sync_s, atof(w[5].c_str()));
            }
            ep.answered[c.rank] = true;
            c.state = "saved";
            if (all_answered()) saved_all();
        } else if (w[0] == "SENT" && ep.ph == phase::saving && ep.live && w.size() >= 5) {
            mv.bytes += strtoull(w[2].c_str(), nullptr, 10);
            mv.export_s = std::max(mv.export_s, atof(w[3].c_str()));
            ep.answered[c.rank] = true;
            c.state = "sent";
            if (all_answered()) live_sent();
        } else if (w[0] == "ACCEPTED" && ep.ph == phase::saving && ep.live && mv.keep) {
            ep.answered[c.rank] = true;
            c.state = "accepted";
            if (mv.sending && all_answered()) live_sent();
        } else if (w[0] == "RESUMED" && ep.ph == phase::resumed) {
            ep.answered[c.rank] = true;
            c.state = "running";
            if (all_answered()) finish_epoch();
        }
    }

    bool all_answered() {
        for (auto *c : live_ranks())
            if (c->state != "finalized" && !ep.answered[c->rank]) return false;
        return true;
    }

    void next_phase(phase p, const std::string &line_for_all) {
        ep.ph = p;
        ep.answered.clear();
        for (auto *c : live_ranks())
            if (!line_for_all.empty()) send_line(c->fd, line_for_all);
    }

    // Tombstone rounds (job_protocol.h, TOMBSTONES): a job that makes and frees communicators
    // step after step would otherwise keep every creation's record until its next checkpoint,
    // and one never checkpointed for ever. Started when a rank's records (its STATS) grew by
    // kTombstoneGrowth since the last round; only between epochs and migrations.
    static constexpr long kTombstoneGrowth = 1000;
    struct tombstone_round {
        long id = 0; // 0: none running
        clock_type::time_point start;
        std::map<int, std::vector<std::string>> made;
    } tomb;
    long next_tomb_round = 1;
    std::map<int, long> records_floor; // per rank: its fewest records since the last round
    // A communicator's creation is dead only once the creations over it are gone: a round that
    // pruned some is followed by another (a second later, at most kTombstoneCascade in a row).
    static constexpr int kTombstoneCascade = 8;
    int tomb_followups = 0;
    clock_type::time_point tomb_followup_at = clock_type::time_point::max();
    // A round can find nothing to prune while the ranks run (a member had not returned from a
    // creation the others listed) and the job then stop growing: a rank that still holds
    // kTombstoneGrowth records is looked at again every kTombstoneRecheck.
    static constexpr auto kTombstoneRecheck = std::chrono::seconds(10);
    clock_type::time_point tomb_last_round{};

    // A rank's creation list, "made <k> <word>..." at w[at] (CLOCK, TOMBSTONES): into `out`
    // (empty without one), `at` past it; false if the list is shorter than it says.
    static bool read_made(const std::vector<std::string> &w, size_t &at,
                          std::vector<std::string> &out) {
        out.clear();
        if (at + 1 >= w.size() || w[at] != "made") return true;
        size_t k = strtoul(w[at + 1].c_str(), nullptr, 10);
        if (at + 2 + k > w.size()) return false;
        out.assign(w.begin() + (long)at + 2, w.begin() + (long)(at + 2 + k));
        at += 2 + k;
        return true;
    }

    static long stats_records(const std::string &stats) {
        auto w = split(stats);
        for (size_t i = 0; i + 1 < w.size(); i++)
            if (w[i] == "records") return atol(w[i + 1].c_str());
        return -1;
    }

    void tombstone_tick(clock_type::time_point now) {
        if (tomb.id != 0 && now - tomb.start > std::chrono::seconds(10)) tomb.id = 0; // unanswered
        if (tomb.id != 0 || ep.ph != phase::idle || mv.active || !job_not_ready().empty()) return;
        bool grown = false;
        for (auto *c : live_ranks()) {
            long n = stats_records(c->stats);
            if (n < 0) continue;
            long &floor = records_floor[c->rank]; // 0 before the first round
            floor = std::min(floor, n);
            grown |= n >= floor + kTombstoneGrowth ||
                     (n >= kTombstoneGrowth && now - tomb_last_round >= kTombstoneRecheck);
        }
        bool followup = now >= tomb_followup_at;
        if (!grown && !followup) return;
        tomb_followup_at = clock_type::time_point::max();
        tomb_followups = followup && !grown ? tomb_followups + 1 : 0;
        tomb = {next_tomb_round++, now, {}};
        tomb_last_round = now;
        for (auto *c : live_ranks()) {
            records_floor[c->rank] = std::max(0L, stats_records(c->stats));
            send_line(c->fd, "TOMBSTONES " + std::to_string(tomb.id));
        }
    }

    // A rank's "TOMBSTONES <id> [made <m> <word>...]"; once every rank answered, each is told
    // which of its tombstones every member holds dead (deadness lasts: a freed or null result
    // never comes back, and records made later name new objects), unless an epoch or a migration
    // began meanwhile (its own agreement prunes then).
    void on_tombstones(conn &c, const std::vector<std::string> &w) {
        if (tomb.id == 0 || w.size() < 2 || atol(w[1].c_str()) != tomb.id) return;
        size_t at = 2;
        if (!read_made(w, at, tomb.made[c.rank])) tomb.made[c.rank].clear(); // prunes nothing
        if ((int)tomb.made.size() < job_size) return;
        long id = tomb.id;
        tomb.id = 0;
        if (ep.ph != phase::idle || mv.active) return;
        std::map<std::string, std::vector<std::string>> prune;
        agree_on_creations(tomb.made, false, prune);
        if (prune.empty()) return;
        if (tomb_followups < kTombstoneCascade)
            tomb_followup_at = clock_type::now() + std::chrono::seconds(1);
        for (auto *r : live_ranks())
            if (std::string words = prune_words(tomb.made[r->rank], prune); !words.empty())
                send_line(r->fd, "PRUNE " + std::to_string(id) + words);
    }

    // Largest sequence number per communicator; ranks behind run forward to it. Running forward
    // may carry a rank past collectives on other communicators: rounds repeat until every
    // communicator's members agree, then the final targets let the ranks park for good, and the
    // drain targets (from the message counts of that round) follow at once.
    void send_targets() {
        std::map<std::string, unsigned long long> mx, mn;
        for (auto &[r, m] : ep.clocks)
            for (auto &[id, seq] : m) {
                if (!mx.count(id) || seq > mx[id]) mx[id] = seq;
                if (!mn.count(id) || seq < mn[id]) mn[id] = seq;
            }
        // Not while a communicator is being made: its members that have returned from the
        // creation may be inside a collective on it that the others, still inside the creation,
        // do not report yet; another round, once they have returned, has it from every member.
        bool agreed = mx == mn && !ep.creating;
        if (!ep.creating) {
            ep.creating_since = {};
            ep.creating_ranks.clear();
        } else if (ep.creating_since == clock_type::time_point{}) {
            ep.creating_since = clock_type::now();
        } else if (clock_type::now() - ep.creating_since > std::chrono::milliseconds(300)) {
            if (cfg.verbose)
                note("epoch " + std::to_string(ep.id) +
                     ": a thread stays inside a communicator creation; parked threads pass");
            for (auto *c : live_ranks())
                send_line(c->fd, "PASS " + std::to_string(ep.id));
            ep.creating_since = clock_type::now();
            ep.passes++;
        }
        std::map<std::string, std::vector<std::string>> prune;
        if (agreed)
            if (std::string why = agree_on_creations(ep.made, true, prune); !why.empty()) {
                if (cfg.verbose) // what each rank listed: why the creations disagree
                    for (auto &[r, words] : ep.made) {
                        std::string l = "rank " + std::to_string(r) + " made";
                        for (const std::string &w : words)
                            l += " " + w;
                        note(l);
                    }
                return abort_epoch(why);
            }
        ep.creating = false;
        ep.rounds++;
        ep.answered.clear();
        auto clocks = std::move(ep.clocks);
        ep.clocks.clear();
        if (!agreed) ep.counts.clear(); // the next round's reports bring new ones
        for (auto *c : live_ranks()) {
            auto &mine = clocks[c->rank];
            std::string l = "TARGET " + std::to_string(ep.id) + " " + (agreed ? "1 " : "0 ") +
                            std::to_string(mine.size());
            for (auto &[id, seq] : mine)
                l += " " + id + " " + std::to_string(mx[id]);
            if (agreed) l += prune_words(ep.made[c->rank], prune);
            send_line(c->fd, l);
        }
        if (agreed) send_drain();
    }

    void send_drain() {
        ep.t_counts = clock_type::now();
        ep.ph = phase::drained;
        ep.answered.clear();
        for (auto *c : live_ranks()) {
            unsigned long long expected = 0;
            for (auto &[r, v] : ep.counts)
                if ((size_t)c->rank < v.size()) expected += v[c->rank];
            send_line(c->fd, "DRAIN " + std::to_string(ep.id) + " " + std::to_string(expected));
        }
    }

    void quiesced() {
        ep.t_drain = clock_type::now();
        if (ep.live) return live_launch();
        if (ep.ckpt) {
            std::string id = std::to_string(ep.id);
            next_phase(phase::saving, "QUIESCED " + id);
            ep.deadline = clock_type::now() + std::chrono::milliseconds(ep.save_ms + 5000);
            for (auto *c : live_ranks()) {
                c->state = "saving";
                // Incremental: each rank's image takes what it did not write since from its image
                // in the last complete generation (job_protocol.h, PARENT).
                if (cfg.incremental)
                    send_line(c->fd, "PARENT " + id + " " +
                                         (last.gen > 0 ? last.dir + "/" + rank_image(c->rank)
                                                       : std::string("-")));
                send_line(c->fd, "SAVE " + id + " " + std::to_string(ep.save_ms) + " " + ep.tmp +
                                     "/" + rank_image(c->rank));
            }
            return;
        }
        resume_all();
    }

    void resume_all() {
        next_phase(phase::resumed, "QUIESCED " + std::to_string(ep.id));
        for (auto *c : live_ranks())
            send_line(c->fd, "RESUME " + std::to_string(ep.id));
    }

    // Every rank's image is durable: the manifest and the `latest` pointer follow.
    void saved_all() {
        auto t0 = clock_type::now();
        manifest m;
        m.generation = ep.gen;
        m.job = s.job;
        m.flavour = cfg.flavour;
        m.mpirun_opts = cfg.mpirun_opts;
        m.argv = cfg.argv;
        m.time = (long long)time(nullptr);
        m.interval_s = cfg.interval_s;
        m.incremental = cfg.incremental;
        m.auto_restarts = cfg.auto_restarts;
        for (auto &[r, e] : ep.saved)
            m.ranks.push_back(e);
        if ((int)m.ranks.size() != job_size)
            return abort_epoch("only " + std::to_string(m.ranks.size()) + " of " +
                               std::to_string(job_size) + " ranks saved an image");
        auto gen = publish_generation(ep.dir, ep.tmp, m);
        if (!gen) return abort_epoch("cannot publish the checkpoint: " + gen.err().message);
        ep.tmp.clear(); // published: nothing to discard any more
        ep.t_saved = clock_type::now();
        ep.sync_s += secs(ep.t_saved - t0);
        last = {m.generation, *gen, m.time};
        periodic_failures = 0;
        // The next periodic checkpoint comes an interval after this one ended, not after it
        // began: a checkpoint that takes as long as the interval would otherwise follow the
        // previous one at once, again and again, and the job would hardly run between them.
        if (cfg.interval_s > 0) next_periodic = ep.t_saved + interval();
        unsigned long long bytes = 0;
        for (auto &r : m.ranks)
            bytes += r.bytes;
        char buf[1024];
        snprintf(buf, sizeof buf,
                 "OK generation=%d dir=%s ranks=%zu bytes=%llu quiesce_s=%.3f export_s=%.3f "
                 "sync_s=%.3f total_s=%.3f%s",
                 m.generation, gen->c_str(), m.ranks.size(), bytes, secs(ep.t_drain - ep.start),
                 ep.export_s, ep.sync_s, secs(ep.t_saved - ep.start), ep.kill ? " killed=1" : "");
        if (ep.cli_fd >= 0 && !ep.migrate) send_line(ep.cli_fd, buf);
        if (cfg.verbose || ep.cli_fd < 0) note(std::string("checkpoint ") + (buf + 3));
        if (ep.kill && ep.migrate) {
            // The images are durable: the ranks end, and when their mpirun has ended a new one
            // starts them again (run() -> migration_relaunch), the moved ones on their new host.
            mv.active = true;
            mv.cli = ep.cli_fd;
            mv.generation = m.generation;
            mv.gen_dir = *gen;
            mv.host = ep.mig_host;
            for (int r : ep.mig_ranks)
                mv.ranks += (mv.ranks.empty() ? "" : ",") + std::to_string(r);
            for (auto &r : m.ranks) {
                mv.hosts_old.push_back(r.host);
                bool moved = std::find(ep.mig_ranks.begin(), ep.mig_ranks.end(), r.rank) !=
                             ep.mig_ranks.end();
                mv.hosts_new.push_back(moved ? ep.mig_host : r.host);
            }
            mv.start = ep.start;
            mv.start_ms = mv_start_ms;
            mv.t_drain = ep.t_drain;
            mv.t_saved = ep.t_saved;
            mv.export_s = ep.export_s;
        }
        if (ep.kill) {
            // The images are durable: the whole job goes, ranks through their mpirun.
            if (!mv.active) stopped_after_ckpt = true;
            std::string stop = "STOP " + std::to_string(ep.id);
            ep = epoch_state{};
            // (With the mpiruns of ranks an earlier --keep move kept: their processes end too.)
            end_mpirun(g_child, true);
            for (pid_t p : retired)
                end_mpirun(p, true);
            for (auto *c : live_ranks()) {
                send_line(c->fd, stop); // each rank ends itself, still quiescent
                c->state = "stopped";
            }
            end_mpirun(g_child, false);
            for (pid_t p : retired)
                end_mpirun(p, false);
            return;
        }
        ep.cli_fd = -1; // answered
        resume_all();
    }

    void finish_epoch() {
        if (ep.ckpt) {
            ep = epoch_state{};
            return;
        }
        unsigned long long msgs = 0, bytes = 0;
        for (auto &[r, d] : ep.drained)
            msgs += d.first, bytes += d.second;
        char buf[512];
        snprintf(buf, sizeof buf,
                 "OK %zu quiesce_s=%.6f drain_s=%.6f total_s=%.6f clock_rounds=%d drained=%llu "
                 "bytes=%llu",
                 ep.drained.size(), secs(ep.t_counts - ep.start), secs(ep.t_drain - ep.t_counts),
                 secs(clock_type::now() - ep.start), ep.rounds, msgs, bytes);
        if (ep.cli_fd >= 0) send_line(ep.cli_fd, buf);
        ep = epoch_state{};
    }

    void abort_epoch(const std::string &reason) {
        // A checkpoint that fails leaves the previous generation as it was; a log that the
        // reason names outlives it.
        const std::string why = keep_named_logs(ep.tmp, reason);
        long id = ep.id;
        int cli = ep.cli_fd;
        bool live = ep.live;
        // Asked by nobody waiting (not a balancer's move): a periodic one, or SIGUSR1's (kill).
        bool own = ep.ckpt && cli < 0 && !ep.migrate && !ep.live;
        bool periodic = own && cfg.interval_s > 0, usr1 = own && ep.kill;
        if (cfg.verbose) note("epoch " + std::to_string(id) + " abandoned: " + why);
        discard_generation(ep.tmp);
        ep = epoch_state{};
        for (auto *c : live_ranks()) {
            send_line(c->fd, "RESUME " + std::to_string(id));
            if (c->state == "quiescing" || c->state == "quiesced" || c->state == "saving" ||
                c->state == "saved" || c->state == "sending" || c->state == "sent" ||
                c->state == "accepting" || c->state == "accepted")
                c->state = "running";
        }
        if (cli >= 0) send_line(cli, "ERROR " + why + "; the job resumed");
        if (periodic) {
            auto retry = std::min(interval(),
                                  std::chrono::duration_cast<clock_type::duration>(
                                      std::chrono::seconds(1LL << std::min(periodic_failures, 6))));
            periodic_failures++;
            next_periodic = std::min(next_periodic, clock_type::now() + retry);
            char again[64];
            snprintf(again, sizeof again, "; the job resumed; next try in %.0f s", secs(retry));
            if (!usr1) note("periodic checkpoint failed: " + why + again);
        }
        if (usr1) note("SIGUSR1: the checkpoint failed: " + why + "; the job runs on, not stopped");
        if (live) live_abort(why);
    }

    static constexpr const char *kNotYet = " has not connected yet";
    static constexpr const char *kBusy = "a quiesce or checkpoint is in progress";

    // A `ghost checkpoint` that came while ranks were still starting (a job just launched or
    // restarted), or while another checkpoint ran (a periodic one, say: a drain hook's
    // `checkpoint --kill` must not fail because of it): begun once the other has ended and every
    // rank is connected, or refused when ranks have not all connected by its deadline (counted
    // from the end of the checkpoint it waited for).
    struct waiting_checkpoint {
        int cli = -1;
        std::string dir;
        bool kill = false;
        long quiesce_ms = 0, save_ms = 0;
        clock_type::time_point deadline = clock_type::time_point::max();
    } waiting;

    static bool not_yet(const std::string &why) {
        return why == "no rank has connected yet" ||
               (why.size() > strlen(kNotYet) &&
                why.compare(why.size() - strlen(kNotYet), std::string::npos, kNotYet) == 0);
    }

    // Whether the waiting checkpoint must wait on (true), or has begun or been refused.
    bool keep_waiting(const std::string &why) {
        if (why.empty()) return false;
        if (why == kBusy) return true; // that checkpoint has deadlines of its own
        if (!not_yet(why)) return false;
        auto now = clock_type::now();
        if (waiting.deadline == clock_type::time_point::max())
            waiting.deadline = now + std::chrono::milliseconds(
                                         waiting.quiesce_ms > 0 ? waiting.quiesce_ms : 10000);
        return now < waiting.deadline;
    }

    void retry_waiting() {
        if (waiting.cli < 0) return;
        std::string why = begin_checkpoint(waiting.cli, waiting.dir, waiting.kill,
                                           waiting.quiesce_ms, waiting.save_ms);
        if (keep_waiting(why)) return;
        if (!why.empty()) send_line(waiting.cli, "ERROR " + why);
        waiting = waiting_checkpoint{};
    }

    // Empty when every rank is connected and none has finalized, else why not.
    std::string job_not_ready() {
        if (job_size == 0) return "no rank has connected yet";
        std::vector<int> seen(job_size, -1); // -1: never connected, 0: gone
        for (auto &r : conns)
            if (r.is_rank && r.hello && !r.incoming && r.rank >= 0 && r.rank < job_size)
                seen[r.rank] = r.state == "finalized" ? 2 : r.fd >= 0 && r.state != "lost" ? 1 : 0;
        for (int r = 0; r < job_size; r++) {
            if (seen[r] == -1) return "rank " + std::to_string(r) + kNotYet;
            if (seen[r] == 0) return "rank " + std::to_string(r) + " is not connected any more";
            if (seen[r] == 2) return "rank " + std::to_string(r) + " has called MPI_Finalize";
        }
        return "";
    }

    void begin_epoch(int cli_fd, long ms) {
        ep.id = next_epoch++;
        ep.cli_fd = cli_fd;
        ep.start = clock_type::now();
        ep.deadline = ep.start + std::chrono::milliseconds(ms > 0 ? ms : 10000);
        next_phase(phase::clock, "QUIESCE " + std::to_string(ep.id) + " " + std::to_string(ms));
    }

    // Empty when the checkpoint began (its answer comes later), else why not.
    std::string begin_checkpoint(int cli_fd, const std::string &dir, bool kill, long quiesce_ms,
                                 long save_ms) {
        if (ep.ph != phase::idle) return kBusy;
        if (stopped_after_ckpt) return "the job is being stopped after its checkpoint";
        if (mv.active) return "a migration is in progress";
        if (auto why = job_not_ready(); !why.empty()) return why;
        int gen = next_generation(dir);
        auto tmp = begin_generation(dir, gen, s.job);
        if (!tmp) return tmp.err().message;
        ep.ckpt = true;
        ep.kill = kill;
        ep.gen = gen;
        ep.dir = dir;
        ep.tmp = *tmp;
        ep.save_ms = save_ms > 0 ? save_ms : 600000;
        begin_epoch(cli_fd, quiesce_ms);
        return "";
    }

    // ---- commands ----

    void on_command(conn &c, const std::string &line) {
        auto w = split(line);
        if (w.empty()) return;
        if (w[0] == "STATUS") {
            send_line(c.fd, "JOB " + s.job + " " + std::to_string(job_size) + " " +
                                std::to_string((long)g_child) + " " + program);
            std::map<int, conn *> by_rank;
            for (auto &r : conns)
                if (r.is_rank && r.hello && r.rank >= 0) by_rank[r.rank] = &r;
            auto now = clock_type::now();
            for (auto &[r, rc] : by_rank) {
                send_line(c.fd, "RANK " + std::to_string(r) + " " + std::to_string(rc->pid) + " " +
                                    rc->host + " " + rc->state);
                if (!rc->stats.empty()) {
                    char age[32];
                    snprintf(age, sizeof age, "%.3f", secs(now - rc->stats_time));
                    send_line(c.fd, "RSTAT " + std::to_string(r) + " " + age + " " + rc->stats);
                }
            }
            balance_status(c.fd);
            if (last.gen > 0)
                send_line(c.fd, "CKPT " + std::to_string(last.gen) + " " +
                                    std::to_string(last.time) + " " + last.dir);
            send_line(c.fd, "END");
        } else if (w[0] == "QUIESCE") {
            if (ep.ph != phase::idle) return send_line(c.fd, "ERROR a quiesce is in progress");
            if (mv.active) return send_line(c.fd, "ERROR a migration is in progress");
            long ms = w.size() > 1 ? atol(w[1].c_str()) : 10000;
            if (auto why = job_not_ready(); !why.empty()) return send_line(c.fd, "ERROR " + why);
            begin_epoch(c.fd, ms);
        } else if (w[0] == "CHECKPOINT" && w.size() >= 5) {
            // CHECKPOINT <kill> <quiesce_ms> <save_ms> <dir or ->
            size_t at = 0;
            for (int k = 0; k < 4 && at != std::string::npos; k++)
                at = line.find(' ', at + (k ? 1 : 0));
            std::string dir = at == std::string::npos ? "-" : line.substr(at + 1);
            if (dir == "-") dir = cfg.ckpt_dir;
            if (dir.empty() || dir[0] != '/')
                return send_line(c.fd, "ERROR the checkpoint directory must be absolute");
            std::string why =
                begin_checkpoint(c.fd, dir, w[1] == "1", atol(w[2].c_str()), atol(w[3].c_str()));
            if (!why.empty() && waiting.cli < 0) {
                waiting = {c.fd, dir, w[1] == "1", atol(w[2].c_str()), atol(w[3].c_str())};
                if (keep_waiting(why)) return;
                waiting = waiting_checkpoint{};
            }
            if (!why.empty()) send_line(c.fd, "ERROR " + why);
        } else if (w[0] == "MIGRATE" && w.size() >= 6) {
            // MIGRATE <quiesce_ms> <start_ms> <host> <ranks> <dir or ->
            size_t at = 0;
            for (int k = 0; k < 5 && at != std::string::npos; k++)
                at = line.find(' ', at + (k ? 1 : 0));
            std::string dir = at == std::string::npos ? "-" : line.substr(at + 1);
            if (dir == "-") dir = cfg.ckpt_dir;
            if (dir.rfind("ucx", 0) != 0 && (dir.empty() || dir[0] != '/'))
                return send_line(c.fd, "ERROR the image directory must be absolute");
            std::string why =
                begin_migration(c.fd, atol(w[1].c_str()), atol(w[2].c_str()), w[3], w[4], dir);
            if (!why.empty()) send_line(c.fd, "ERROR " + why);
        } else {
            send_line(c.fd, "ERROR unknown request " + w[0]);
        }
    }

    // ---- the built-in balancer (ghostrun --balance) ----
    //
    // Every interval it compares, per host, the share of the CPU its ranks got of what they wanted:
    // run / (run + wait) over the window, from STATS run_s and wait_s (/proc/self/schedstat: time
    // on a CPU, time runnable without one). An oversubscribed host, one whose CPU quota is used up
    // or whose cores a hog competes for makes its ranks wait, whatever they compute; a rank that
    // sleeps or blocks wants nothing and counts as satisfied. It moves one rank from the host whose
    // ranks got the least to the one expected to give it the most, through begin_migration as
    // `ghost migrate --via ucx` does. Hysteresis: a minimum gain, the same move proposed on
    // kBalanceStreak windows in a row, one move at a time; no ping-pong: a rank never returns to a
    // host it was moved away from, and a host left (or a destination that failed) is no destination
    // for kBalanceAvoidWindows windows.

    static constexpr double kBalanceOverloaded = 0.8; // ranks that get more are not held back
    static constexpr double kBalanceMinGain = 1.5;    // the destination's share / the source's
    // ... and at least this much more of a CPU: on a machine where every rank gets a few percent,
    // ratios of small shares are noise, and a move (its downtime) would cost more than it gives.
    static constexpr double kBalanceMinGainCpu = 0.05;
    static constexpr int kBalanceStreak = 2;
    static constexpr double kBalancePrecopyShare = 0.5; // a source starved below: no pre-copy
    static constexpr int kBalanceAvoidWindows = 30;
    static constexpr long kBalanceQuiesceMs = 10000, kBalanceStartMs = 30000;

    struct rank_sample {
        long pid = 0;
        double run_s = 0, wait_s = 0;
        clock_type::time_point at;
    };
    struct balance_host {
        int ranks = 0;
        long cpus = 0;
        double got = -1; // the CPU share its ranks got of what they wanted (mean); -1: unmeasured
        std::set<long> bound_cpus; // CPUs that a rank here is bound to (fewer than all)
    };
    struct balancer {
        clock_type::time_point next;
        long window = 0;
        std::map<int, rank_sample> base;           // each rank at the window's start
        std::map<std::string, balance_host> hosts; // the last window's view (every host seen)
        std::map<std::string, long> avoid_until;   // host -> window
        std::map<int, std::set<std::string>> left; // rank -> hosts it was moved away from
        std::string proposal;
        int streak = 0;
        bool in_flight = false;
        int moving_rank = -1;
        std::string moving_from, moving_to;
        int moves = 0, failed = 0;
        std::string state = "measuring", last = "-";
        // Its moves keep the other ranks' processes (`ghost migrate --keep`: only the moved rank's
        // memory moves), until one such move fails: a rank may refuse to be kept (a window of
        // shared memory ties it to its node's ranks), and the next moves then relaunch them all.
        bool keep = true;
    } bal;

    // The figures of a STATS line (without "STATS ") the balancer uses; false if it has none.
    static bool parse_stats(const std::string &stats, rank_sample *smp, long *cpus,
                            std::set<long> *bound) {
        auto w = split(stats);
        if (w.size() < 3) return false;
        size_t at = 3 + strtoul(w[2].c_str(), nullptr, 10);
        bool have_run = false, have_wait = false;
        for (; at + 1 < w.size(); at += 2) {
            if (w[at] == "run_s") smp->run_s = atof(w[at + 1].c_str()), have_run = true;
            if (w[at] == "wait_s") smp->wait_s = atof(w[at + 1].c_str()), have_wait = true;
            if (w[at] == "cpus") *cpus = atol(w[at + 1].c_str());
            if (w[at] == "bound") {
                std::istringstream in(w[at + 1]);
                std::string range;
                while (std::getline(in, range, ',')) {
                    long lo = atol(range.c_str()), hi = lo;
                    if (size_t dash = range.find('-'); dash != std::string::npos)
                        hi = atol(range.c_str() + dash + 1);
                    for (long c = lo; c <= hi && c - lo < 4096; c++)
                        bound->insert(c);
                }
            }
        }
        return have_run && have_wait && *cpus > 0;
    }

    void balance_tick() {
        if (cfg.balance_interval_s <= 0) return;
        auto now = clock_type::now();
        if (now < bal.next) return;
        auto every = std::chrono::duration_cast<clock_type::duration>(
            std::chrono::duration<double>(cfg.balance_interval_s));
        bal.next = now + every;
        if (bal.in_flight) return;
        bal.window++;
        if (ep.ph != phase::idle || mv.active || new_mpirun > 0 || stopped_after_ckpt ||
            !job_not_ready().empty()) {
            // A checkpoint, a migration, ranks starting or ending: the next window starts anew.
            bal.state = "waiting";
            bal.base.clear();
            bal.streak = 0;
            return;
        }
        std::map<std::string, balance_host> view;
        std::map<int, double> got; // rank -> its CPU share over the window
        std::map<int, rank_sample> next_base;
        bool complete = true;
        for (auto *c : live_ranks()) {
            rank_sample smp;
            smp.pid = c->pid;
            smp.at = c->stats_time;
            long cpus = 0;
            std::set<long> bound;
            if (!parse_stats(c->stats, &smp, &cpus, &bound)) {
                complete = false;
                continue;
            }
            next_base[c->rank] = smp;
            balance_host &h = view[c->host];
            h.ranks++;
            h.cpus = std::max(h.cpus, cpus);
            if ((long)bound.size() < cpus) h.bound_cpus.insert(bound.begin(), bound.end());
            auto b = bal.base.find(c->rank);
            double dt = b == bal.base.end() ? 0 : secs(smp.at - b->second.at);
            if (b == bal.base.end() || b->second.pid != smp.pid ||
                dt < cfg.balance_interval_s / 2) {
                complete = false; // a new process, or no sample since the window began
                continue;
            }
            double run = smp.run_s - b->second.run_s, wait = smp.wait_s - b->second.wait_s;
            // Runnable less than a tenth of the window: it wants no CPU, nothing holds it back.
            got[c->rank] = run + wait < dt / 10 ? 1.0 : std::clamp(run / (run + wait), 0.0, 1.0);
        }
        bal.base = next_base;
        for (auto &[name, h] : view) {
            double sum = 0;
            int n = 0;
            for (auto *c : live_ranks())
                if (c->host == name && got.count(c->rank)) sum += got[c->rank], n++;
            h.got = n > 0 && n == h.ranks ? sum / n : -1;
        }
        // Hosts seen before and empty now keep their CPUs and the share they gave when last
        // measured (a slow host left by its ranks stays known as slow).
        for (auto &[name, h] : bal.hosts)
            if (!view.count(name)) view[name] = {0, h.cpus, h.got, {}};
        bal.hosts = view;
        if (!complete) {
            bal.state = "measuring";
            bal.streak = 0;
            return;
        }
        // The source: the host whose ranks got the least.
        std::string src;
        for (auto &[name, h] : view)
            if (h.ranks > 0 && (src.empty() || h.got < view[src].got)) src = name;
        if (src.empty() || view[src].got >= kBalanceOverloaded) {
            bal.state = "balanced";
            bal.streak = 0;
            return;
        }
        // Its rank that got the least (the lowest number among equals).
        int rank = -1;
        for (auto *c : live_ranks())
            if (c->host == src && (rank < 0 || got[c->rank] < got[rank])) rank = c->rank;
        // The destination: the host expected to give most with one more rank (one with no free
        // CPU then shares its CPUs among one more rank); one never measured is assumed idle.
        std::string dst;
        double best = -1;
        for (auto &[name, h] : view) {
            if (name == src || bal.left[rank].count(name)) continue;
            if (auto a = bal.avoid_until.find(name);
                a != bal.avoid_until.end() && bal.window < a->second)
                continue;
            double measured = h.got >= 0 ? h.got : 1.0;
            double expected = h.ranks + 1 <= h.cpus
                                  ? measured
                                  : std::min(measured, (double)h.cpus / (h.ranks + 1));
            if (expected > best) best = expected, dst = name;
        }
        double src_got = std::max(view[src].got, 0.001);
        if (dst.empty() || best < src_got * kBalanceMinGain ||
            best - view[src].got < kBalanceMinGainCpu) {
            bal.state = "balanced";
            bal.streak = 0;
            return;
        }
        std::string proposal = std::to_string(rank) + " " + src + " " + dst;
        bal.streak = proposal == bal.proposal ? bal.streak + 1 : 1;
        bal.proposal = proposal;
        if (bal.streak < kBalanceStreak) {
            bal.state = "considering";
            return;
        }
        // A free CPU of the destination (no rank there is bound to it) for the moved rank.
        const balance_host &d = view[dst];
        long cpu = -1;
        for (long c = 0; c < d.cpus && cpu < 0; c++)
            if (!d.bound_cpus.count(c)) cpu = c;
        char why[512];
        snprintf(why, sizeof why,
                 "%s: its %d rank(s) got %.2f of the CPU time they wanted; %s (%d rank(s), %ld "
                 "CPU(s)): %.2f expected with it",
                 src.c_str(), view[src].ranks, view[src].got, dst.c_str(), d.ranks, d.cpus, best);
        // With its pre-copy, as `ghost migrate` does (the memory moves while the job runs),
        // unless the source is starved: the job already runs at its ranks' pace there, and a
        // pre-copy, which shares their CPU and spawns and connects a checkpointer of its own,
        // would take longer than the stop it shortens (at 2% of a CPU: 50 s against 8). The
        // binding goes with the new mpirun, which starts at once.
        bool precopy = view[src].got >= kBalancePrecopyShare;
        std::string via = std::string(bal.keep ? "ucx+keep" : "ucx") + (precopy ? "+precopy" : "");
        std::string err =
            begin_migration(-1, kBalanceQuiesceMs, kBalanceStartMs, dst, std::to_string(rank), via,
                            cpu >= 0 ? std::to_string(rank) + ":" + std::to_string(cpu) : "");
        bal.streak = 0;
        bal.proposal.clear();
        if (!err.empty()) {
            bal.state = "waiting";
            note("balancer: rank " + std::to_string(rank) + " stays on " + src + ": " + err);
            return;
        }
        mv.by_balancer = true;
        bal.in_flight = true;
        bal.moving_rank = rank;
        bal.moving_from = src;
        bal.moving_to = dst;
        bal.state = "moving";
        note("balancer: moving rank " + std::to_string(rank) + " from " + src + " to " + dst +
             " (" + why + ")" +
             (cpu >= 0 ? "; it binds to CPU " + std::to_string(cpu) + " there"
                       : "; no free CPU there to bind it to"));
    }

    // The balancer's migration ended (`line`: its answer, OK or ERROR; mv is still that migration).
    void balance_done(const std::string &line) {
        bal.in_flight = false;
        bal.base.clear(); // the next window measures the new placement
        bal.next = clock_type::now();
        std::string r = std::to_string(bal.moving_rank);
        if (line.rfind("OK ", 0) == 0) {
            bal.moves++;
            bal.left[bal.moving_rank].insert(bal.moving_from);
            bal.avoid_until[bal.moving_from] = bal.window + kBalanceAvoidWindows;
            std::string downtime = "?";
            if (size_t at = line.find("downtime_s="); at != std::string::npos)
                downtime = split(line.substr(at + 11))[0];
            bal.last = "rank " + r + " moved from " + bal.moving_from + " to " + bal.moving_to +
                       " (downtime " + downtime + " s)";
            bal.state = "measuring";
            note("balancer: rank " + r + " runs on " + bal.moving_to + " now (downtime " +
                 downtime + " s)");
        } else {
            bal.failed++;
            bal.avoid_until[bal.moving_to] = bal.window + kBalanceAvoidWindows;
            std::string why = line.rfind("ERROR ", 0) == 0 ? line.substr(6) : line;
            bal.last = "rank " + r + " could not move to " + bal.moving_to;
            bal.state = "measuring";
            bal.keep = false;
            note("balancer: moving rank " + r + " to " + bal.moving_to + " failed: " + why +
                 "; that host is avoided for " + std::to_string(kBalanceAvoidWindows) +
                 " intervals" +
                 (mv.keep ? "; the next moves relaunch every rank (no --keep)" : ""));
        }
    }

    void balance_status(int fd) {
        if (cfg.balance_interval_s <= 0) return;
        char head[128];
        snprintf(head, sizeof head, "BALANCER %g %s %d %d ", cfg.balance_interval_s,
                 bal.state.c_str(), bal.moves, bal.failed);
        send_line(fd, head + bal.last);
        for (auto &[name, h] : bal.hosts) {
            char l[512];
            auto a = bal.avoid_until.find(name);
            bool avoided = a != bal.avoid_until.end() && bal.window < a->second;
            if (h.got >= 0)
                snprintf(l, sizeof l, "BHOST %s %d %ld %.3f %d", name.c_str(), h.ranks, h.cpus,
                         h.got, avoided ? 1 : 0);
            else
                snprintf(l, sizeof l, "BHOST %s %d %ld - %d", name.c_str(), h.ranks, h.cpus,
                         avoided ? 1 : 0);
            send_line(fd, l);
        }
    }

    // ---- migration ----

    // Empty when the migration began (its answer comes once the ranks run again), else why not.
    // The one way a migration starts: `ghost migrate` (MIGRATE) and the built-in balancer.
    // start_ms bounds how long the new processes have to come up (--start-timeout).
    // `bind`: GHOST_BIND for the moved ranks' new processes (live migrations only).
    std::string begin_migration(int cli_fd, long quiesce_ms, long start_ms, const std::string &host,
                                const std::string &rank_list, const std::string &dir,
                                const std::string &bind = "") {
        if (!job::is_host_name(host)) return "'" + host + "' is not a host name";
        if (auto why = job_not_ready(); !why.empty()) return why;
        std::vector<int> ranks;
        std::istringstream in(rank_list);
        std::string item;
        while (std::getline(in, item, ',')) {
            char *end = nullptr;
            long r = strtol(item.c_str(), &end, 10);
            if (item.empty() || *end || r < 0 || r >= job_size)
                return "'" + item + "' is not a rank of this job (0.." +
                       std::to_string(job_size - 1) + ")";
            if (std::find(ranks.begin(), ranks.end(), (int)r) != ranks.end())
                return "rank " + item + " is named twice";
            ranks.push_back((int)r);
        }
        if (ranks.empty()) return "no rank to migrate";
        if (!cfg.relaunch) return "this ghostrun cannot relaunch its ranks";
        if (mv.active) return "a migration is in progress";
        // Before either kind begins: a live one copies it now, one through files once its images
        // are written (saved_all).
        mv_start_ms = std::max(1000L, start_ms);
        // "ucx", "ucx+keep", "ucx+precopy", "ucx+keep+precopy", each "+precopy" maybe followed by
        // "+rounds<N>"
        if (dir.rfind("ucx", 0) == 0) {
            bool keep = false, precopy = false;
            int rounds = 0;
            std::istringstream words(dir.substr(3));
            for (std::string w; std::getline(words, w, '+');)
                if (w == "keep")
                    keep = true;
                else if (w == "precopy")
                    precopy = true;
                else if (precopy && w.rfind("rounds", 0) == 0 && w.size() == 7 && w[6] >= '1' &&
                         w[6] <= '0' + (int)ghost::image::max_precopy_rounds)
                    rounds = w[6] - '0';
                else if (!w.empty())
                    return "unknown live migration option '" + w + "'";
            return begin_live_migration(cli_fd, quiesce_ms, host, ranks, keep, precopy, rounds,
                                        bind);
        }
        std::string why = begin_checkpoint(cli_fd, dir, true, quiesce_ms, 0);
        if (!why.empty()) return why;
        ep.migrate = true;
        ep.mig_ranks = ranks;
        ep.mig_host = host;
        return "";
    }

    // ---- live migration (MIGRATE ... ucx) ----

    std::string begin_live_migration(int cli_fd, long quiesce_ms, const std::string &host,
                                     const std::vector<int> &ranks, bool keep, bool precopy,
                                     int precopy_rounds, const std::string &bind) {
        if (ep.ph != phase::idle) return kBusy;
        if (stopped_after_ckpt) return "the job is being stopped after its checkpoint";
        if (mv.active) return "a migration is in progress";
        if (new_mpirun > 0) return "the mpirun of a failed migration is still ending";
        std::vector<std::string> hosts(job_size);
        for (auto *c : live_ranks())
            if (c->rank >= 0 && c->rank < job_size) hosts[c->rank] = c->host;
        mv = migration{};
        mv.active = mv.live = true;
        mv.keep = keep;
        mv.precopy = precopy;
        mv.precopy_rounds_max = precopy_rounds;
        mv.bind = bind;
        mv.moving = std::set<int>(ranks.begin(), ranks.end());
        mv.cli = cli_fd;
        mv.host = host;
        for (int r : ranks)
            mv.ranks += (mv.ranks.empty() ? "" : ",") + std::to_string(r);
        mv.hosts_old = hosts;
        for (int r : ranks)
            hosts[r] = host;
        mv.hosts_new = hosts;
        mv.start_ms = mv_start_ms;
        mv.quiesce_ms = quiesce_ms;
        mv.start = clock_type::now();
        mv.pre = true;
        mv.pre_id = next_epoch++;
        // The new mpirun starts while the job runs: its receivers (and a kept rank's
        // placeholder, which waits for its rank's ACCEPT) are there before anything stops.
        std::string kept;
        if (mv.keep)
            for (auto *c : live_ranks())
                if (!mv.moving.count(c->rank))
                    kept += (kept.empty() ? "" : ",") + std::to_string(c->rank) + ":" +
                            std::to_string(c->pid);
        mv.t_launch = mv.start;
        mv.launched = true;
        mv.deadline = mv.t_launch + std::chrono::milliseconds(mv.start_ms);
        pid_t child = cfg.relaunch("", mv.hosts_new, mv.bind, kept);
        if (child <= 0) {
            mv = migration{};
            return "cannot start mpirun";
        }
        new_mpirun = child;
        new_mpirun_kill_at = clock_type::time_point::max();
        return "";
    }

    // The ranks that stream an image: those that move, or all when every rank is relaunched.
    bool streams(int rank) const { return !mv.keep || mv.moving.count(rank); }

    // Every receiver listens: the moving ranks copy their memory while they run (PRECOPY) if the
    // request asks for it (ghost migrate does, unless --no-precopy).
    void start_precopies() {
        mv.t_receivers = clock_type::now();
        if (!mv.precopy) return quiesce_for_move();
        const long ms = 600000;
        mv.deadline = mv.t_receivers + std::chrono::milliseconds(ms + 5000);
        for (auto *c : live_ranks()) {
            if (!streams(c->rank)) continue;
            mv.precopying.insert(c->rank);
            c->state = "precopying";
            send_line(c->fd,
                      "PRECOPY " + std::to_string(mv.pre_id) + " " + std::to_string(ms) +
                          " ucx://" + mv.receivers[c->rank] +
                          (mv.precopy_rounds_max ? " " + std::to_string(mv.precopy_rounds_max)
                                                 : std::string()));
        }
        if (mv.precopying.empty()) quiesce_for_move();
    }

    // PRECOPIED <id> <bytes> <copy_s> <rounds>, or NOPRECOPY <id> process|receiver <why>:
    // "process", that rank sends a whole image; "receiver", its receiver failed and the migration
    // stops before the job does (a whole image would wait there for the start timeout, the job
    // stopped).
    void on_precopy_answer(conn &c, const std::vector<std::string> &w, const std::string &line) {
        if (!mv.active || !mv.pre || w.size() < 2 || atol(w[1].c_str()) != mv.pre_id ||
            !mv.precopying.erase(c.rank))
            return;
        c.state = "running";
        if (w[0] == "PRECOPIED") {
            mv.precopied.insert(c.rank);
            if (w.size() >= 3) mv.precopy_bytes += strtoull(w[2].c_str(), nullptr, 10);
            if (w.size() >= 5) mv.precopy_rounds = std::max(mv.precopy_rounds, atoi(w[4].c_str()));
        } else {
            std::string why = after_words(line, 3);
            if (why.empty()) why = "no reason given";
            if (w.size() >= 3 && w[2] == "receiver")
                return pre_abort("rank " + std::to_string(c.rank) + ": " + why);
            note("migration: rank " + std::to_string(c.rank) +
                 " sends a whole image (no pre-copy: " + why + ")");
        }
        if (mv.precopying.empty()) quiesce_for_move();
    }

    // The prelude is over: the job stops (the quiesce), then the images go (live_launch).
    void quiesce_for_move() {
        mv.pre = false;
        if (auto why = job_not_ready(); !why.empty()) return pre_abort(why);
        ep.live = true;
        ep.migrate = true;
        ep.mig_ranks = std::vector<int>(mv.moving.begin(), mv.moving.end());
        ep.mig_host = mv.host;
        begin_epoch(-1, mv.quiesce_ms);
        mv.t_quiesce = ep.start;
        mv.epoch = ep.id;
    }

    // The prelude failed (the job ran on throughout): the new mpirun goes, the job stays.
    void pre_abort(const std::string &why) {
        mv.pre = false;
        for (auto *c : live_ranks())
            if (c->state == "precopying") c->state = "running";
        live_abort(why);
    }

    // Every rank is quiescent and stays so: the staying ones of a keep wait for their
    // placeholders, the others stream their images to the receivers (there since the prelude).
    void live_launch() {
        next_phase(phase::saving, "QUIESCED " + std::to_string(ep.id));
        mv.t_drain = ep.t_drain;
        ep.deadline = clock_type::now() + std::chrono::milliseconds(mv.start_ms);
        for (auto *c : live_ranks())
            c->state = "quiesced";
        // The staying ranks wait for their placeholders (ACCEPTED, or ERROR: abandoned).
        if (mv.keep)
            for (auto *c : live_ranks())
                if (!mv.moving.count(c->rank)) {
                    c->state = "accepting";
                    send_line(c->fd, "ACCEPT " + std::to_string(ep.id) + " " +
                                         std::to_string(mv.start_ms));
                }
        start_sending();
    }

    // RECEIVER <job> <secret> <rank> <addr:port>: a new rank process listens for its image.
    void on_receiver(conn &c, const std::vector<std::string> &w) {
        if (w.size() != 5 || w[1] != s.job || !equal_secret(w[2], s.secret)) {
            fprintf(stderr, "ghostrun: job %s: refused a receiver from %s: %s\n", s.job.c_str(),
                    c.peer.c_str(), "authentication failed");
            close(c.fd);
            c.fd = -1;
            return;
        }
        int r = atoi(w[3].c_str());
        if (!mv.active || !mv.live || !mv.pre || !mv.precopying.empty() ||
            mv.t_receivers != clock_type::time_point{} || r < 0 || r >= job_size ||
            mv.receivers.count(r)) {
            close(c.fd); // not asked for: it ends itself
            c.fd = -1;
            return;
        }
        if (mv.keep && !mv.moving.count(r)) {
            close(c.fd); // a kept rank has a placeholder, not a receiver
            c.fd = -1;
            return;
        }
        c.receiver = true;
        c.rank = -1;
        mv.receivers[r] = w[4];
        if ((int)mv.receivers.size() < (mv.keep ? (int)mv.moving.size() : job_size)) return;
        start_precopies();
    }

    // Each old rank streams its image to its new process (after its pre-copy: what it wrote
    // since).
    void start_sending() {
        mv.sending = true;
        mv.t_sending = clock_type::now();
        const long save_ms = 600000;
        ep.deadline = mv.t_sending + std::chrono::milliseconds(save_ms + 5000);
        if (!mv.keep) ep.answered.clear(); // (a kept rank's ACCEPTED may have come already)
        for (auto *rc : live_ranks()) {
            if (!streams(rc->rank)) continue;
            rc->state = "sending";
            send_line(rc->fd, "SEND " + std::to_string(ep.id) + " " + std::to_string(save_ms) +
                                  " ucx://" + mv.receivers[rc->rank] +
                                  (mv.precopied.count(rc->rank) ? " precopied" : ""));
        }
    }

    void close_receivers() {
        for (auto &c : conns)
            if (c.receiver && c.fd >= 0) {
                close(c.fd);
                c.fd = -1;
            }
    }

    // Every new rank process has its image, runs again on its fresh lower half and has said HELLO
    // (it holds, quiescent, until RESUME: it has run no step of the program yet).
    bool incoming_ready() {
        std::vector<bool> seen(job_size, false);
        for (auto &c : conns)
            if (c.is_rank && c.hello && c.incoming && c.fd >= 0 && c.rank >= 0 && c.rank < job_size)
                seen[c.rank] = true;
        return std::find(seen.begin(), seen.end(), false) == seen.end();
    }

    // Every image is in its new process: the switch waits for them all to connect, so that a
    // new process that fails to come up leaves the old ranks to go on (nothing has run twice).
    void live_sent() {
        mv.all_sent = true;
        mv.t_sent = clock_type::now();
        ep.deadline = mv.t_sent + std::chrono::milliseconds(mv.start_ms);
        if (mv.keep) return keep_switch();
        if (incoming_ready()) live_switch();
    }

    // `ghost migrate --keep`: every moved image is in its new process, every staying rank has its
    // placeholder. The moved ranks' old processes leave the old job (LEAVE), the staying ones
    // leave it too and join the new one in place (DETACH): the old mpirun keeps their processes
    // and ends with them. From here a failure is the job's (its old lower halves are gone).
    void keep_switch() {
        const std::string e = std::to_string(ep.id);
        ep = epoch_state{};
        for (auto &c : conns) {
            if (!c.is_rank || !c.hello || c.incoming || c.fd < 0) continue;
            if (mv.moving.count(c.rank)) {
                send_line(c.fd, "LEAVE " + e);
                close(c.fd);
                c.fd = -1;
                c.hello = false;
                c.rank = -1;
            } else {
                send_line(c.fd, "DETACH " + e);
                c.state = "detaching";
                c.reattached = false;
            }
        }
        close_receivers();
        if (g_child > 0) retired.push_back(g_child);
        g_child = switched_to = new_mpirun;
        new_mpirun = -1;
        mv.switched = true;
        if (cfg.set_placement) cfg.set_placement(mv.hosts_new);
        mv.deadline = clock_type::now() + std::chrono::milliseconds(mv.start_ms);
        keep_maybe_resume();
    }

    // Every moved rank's new process said HELLO and every staying rank REATTACHED: all go on.
    void keep_maybe_resume() {
        if (!mv.active || !mv.keep || !mv.switched) return;
        std::vector<conn *> ready(job_size, nullptr);
        for (auto &c : conns)
            if (c.is_rank && c.hello && c.fd >= 0 && c.rank >= 0 && c.rank < job_size &&
                (mv.moving.count(c.rank) ? c.incoming : c.reattached))
                ready[c.rank] = &c;
        if (std::find(ready.begin(), ready.end(), nullptr) != ready.end()) return;
        for (conn *c : ready) {
            send_line(c->fd, "RESUME " + std::to_string(mv.epoch));
            c->incoming = c->reattached = false;
            c->state = "running";
        }
        finish_live();
    }

    // Ends an mpirun whose processes the job no longer needs: old ranks that end themselves (STOP:
    // each, still quiescent, kills itself), or a migration's new processes that are given up.
    // Called before the STOP lines (`before`) and after. Each launcher prints a failure banner
    // for a process a signal ends unless it is ending the job itself by then: Hydra ("BAD
    // TERMINATION", into the job's stdout, for its own SIGTERM's too) is killed outright before
    // the lines (its proxies end with their connection to it, saying nothing); Open MPI's mpirun
    // ("the job has been aborted") is stopped before them and sent SIGTERM after them, then let
    // go on: it takes SIGTERM before the SIGCHLDs of ranks that ended meanwhile (the lower
    // signal first), however late ghostrun got to send it, and takes down quietly what is left.
    void end_mpirun(pid_t mpirun, bool before) {
        if (mpirun <= 0) return;
        if (cfg.flavour == "mpich") {
            if (before) kill(mpirun, SIGKILL);
            return;
        }
        if (before) {
            kill(mpirun, SIGSTOP);
            return;
        }
        kill(mpirun, SIGTERM);
        kill(mpirun, SIGCONT);
    }

    // The old ranks end (still quiescent), their mpirun too; the new ranks go on (RESUME): the job
    // is the new mpirun's from now on.
    void live_switch() {
        std::string stop = "STOP " + std::to_string(ep.id), go = "RESUME " + std::to_string(ep.id);
        ep = epoch_state{};
        // Every old process ends: those of the old mpirun, and those an earlier --keep move kept,
        // whose mpiruns are retired.
        old_mpirun = g_child;
        end_mpirun(old_mpirun, true);
        for (pid_t p : retired)
            end_mpirun(p, true);
        for (auto &c : conns)
            if (c.is_rank && c.hello && !c.incoming && c.fd >= 0) {
                send_line(c.fd, stop);
                close(c.fd);
                c.fd = -1;
                c.hello = false; // forgotten with the loop's clean-up
                c.rank = -1;
            }
        close_receivers();
        for (auto &c : conns) {
            if (c.incoming && c.fd >= 0) send_line(c.fd, go);
            c.incoming = false;
        }
        end_mpirun(old_mpirun, false);
        for (pid_t p : retired)
            end_mpirun(p, false);
        g_child = switched_to = new_mpirun;
        new_mpirun = -1;
        mv.switched = true;
        if (cfg.set_placement) cfg.set_placement(mv.hosts_new);
        mv.deadline = clock_type::now() + std::chrono::milliseconds(mv.start_ms);
        if (job_not_ready().empty()) finish_live();
    }

    void finish_live() {
        auto now = clock_type::now();
        char buf[1024];
        // While the job ran: prepare (the new mpirun and its receivers), precopy; while it was
        // stopped (downtime): quiesce, transfer (what was not pre-copied; export: the slowest
        // sender's export, within it), reconnect.
        snprintf(buf, sizeof buf,
                 "OK ranks=%s to=%s via=%s bytes=%llu precopy_bytes=%llu precopy_rounds=%d "
                 "prepare_s=%.3f precopy_s=%.3f quiesce_s=%.3f transfer_s=%.3f export_s=%.3f "
                 "reconnect_s=%.3f "
                 "downtime_s=%.3f total_s=%.3f",
                 mv.ranks.c_str(), mv.host.c_str(), mv.keep ? "ucx+keep" : "ucx", mv.bytes,
                 mv.precopy_bytes, mv.precopy_rounds, secs(mv.t_receivers - mv.start),
                 secs(mv.t_quiesce - mv.t_receivers), secs(mv.t_drain - mv.t_quiesce),
                 secs(mv.t_sent - mv.t_sending), mv.export_s, secs(now - mv.t_sent),
                 secs(now - mv.t_quiesce), secs(now - mv.start));
        migration_answer(buf);
    }

    // The live migration failed before the switch: the old ranks were told RESUME (abort_epoch);
    // the new mpirun and whatever it started go.
    void live_abort(const std::string &why) {
        if (new_mpirun > 0) {
            end_mpirun(new_mpirun, true);
            end_mpirun(new_mpirun, false);
            new_mpirun_kill_at = clock_type::now() + std::chrono::seconds(5);
        }
        close_receivers();
        for (auto &c : conns)
            if (c.incoming) {
                if (c.fd >= 0) close(c.fd);
                c.fd = -1;
                c.hello = false;
                c.incoming = false;
                c.rank = -1;
            }
        std::string answer = "ERROR the ranks could not move to " + mv.host + " (" + why +
                             "); the job goes on where it was";
        // Answered once the new mpirun and what it started are gone: the job is then wholly
        // back where it was, and a new request finds nothing of this one.
        if (new_mpirun > 0) {
            mv.deferred = answer;
            return;
        }
        migration_answer(answer);
    }

    // A live migration that does not complete after its switch (a new rank that never connects)
    // is the job's failure now: its old processes are gone.
    void check_live() {
        auto now = clock_type::now();
        if (new_mpirun > 0 && now >= new_mpirun_kill_at) {
            kill(new_mpirun, SIGKILL);
            new_mpirun_kill_at = clock_type::time_point::max();
        }
        if (mv.active && mv.pre && now >= mv.deadline) {
            char why[160];
            if (mv.t_receivers == clock_type::time_point{})
                snprintf(why, sizeof why, "%d of %d receivers appeared within %.1f s",
                         (int)mv.receivers.size(), mv.keep ? (int)mv.moving.size() : job_size,
                         mv.start_ms / 1000.0);
            else
                snprintf(why, sizeof why, "the pre-copies did not end in time");
            return pre_abort(why);
        }
        if (mv.active && mv.live && mv.switched && now >= mv.deadline)
            migration_answer("ERROR the migrated ranks did not connect within " +
                             std::to_string(mv.start_ms / 1000) + " s after their transfer");
    }

    // The mpiruns of kept ranks' processes end with them, normally just after the job's own
    // mpirun. Once the job is over (or restarts from its checkpoint), what is left of them after
    // `grace` is ended: no process of the job outlives it.
    void end_retired(std::chrono::milliseconds grace) {
        auto until = clock_type::now() + grace;
        int sig = 0;
        while (!retired.empty()) {
            int ws = 0;
            retired.erase(std::remove_if(retired.begin(), retired.end(),
                                         [&ws](pid_t p) { return waitpid(p, &ws, WNOHANG) == p; }),
                          retired.end());
            if (retired.empty()) break;
            if (clock_type::now() >= until) {
                sig = sig ? SIGKILL : SIGTERM;
                for (pid_t p : retired)
                    kill(p, sig);
                until = clock_type::now() + std::chrono::seconds(5);
                if (sig == SIGKILL) {
                    for (pid_t p : retired)
                        waitpid(p, &ws, 0);
                    retired.clear();
                }
            }
            usleep(20000);
        }
    }

    // Reaps a live migration's other mpirun (the new one before the switch, the old one after).
    void reap_other_mpiruns() {
        int ws = 0;
        if (old_mpirun > 0 && waitpid(old_mpirun, &ws, WNOHANG) == old_mpirun) old_mpirun = -1;
        retired.erase(std::remove_if(retired.begin(), retired.end(),
                                     [&ws](pid_t p) { return waitpid(p, &ws, WNOHANG) == p; }),
                      retired.end());
        if (new_mpirun > 0 && waitpid(new_mpirun, &ws, WNOHANG) == new_mpirun) {
            new_mpirun = -1;
            new_mpirun_kill_at = clock_type::time_point::max();
            if (cfg.verbose) note("the migration's new mpirun is gone");
            if (mv.active && !mv.deferred.empty()) return migration_answer(mv.deferred);
            if (mv.active && mv.pre)
                return pre_abort("the new mpirun exited with status " +
                                 std::to_string(WIFEXITED(ws)     ? WEXITSTATUS(ws)
                                                : WIFSIGNALED(ws) ? 128 + WTERMSIG(ws)
                                                                  : 1));
            if (mv.active && mv.live && !mv.switched && ep.live && ep.ph != phase::idle)
                abort_epoch("the new mpirun exited with status " +
                            std::to_string(WIFEXITED(ws)     ? WEXITSTATUS(ws)
                                           : WIFSIGNALED(ws) ? 128 + WTERMSIG(ws)
                                                             : 1));
        }
    }

    // The ranks of the job that a relaunch replaces are gone with their mpirun; the new ones say
    // HELLO again.
    void forget_ranks() {
        gates.refusal.clear();
        gates.opened = false;
        for (auto &c : conns)
            if (c.is_rank && c.fd >= 0) {
                close(c.fd);
                c.fd = -1;
            }
        conns.erase(
            std::remove_if(conns.begin(), conns.end(), [](const conn &c) { return c.is_rank; }),
            conns.end());
    }

    // mpirun ended during a migration: the old one after its ranks' images (start the new
    // placement), or a new one before all its ranks connected (go back where they were; if that
    // fails too, the job's ordinary end or automatic restart follows). Returns the new mpirun or
    // -1.
    pid_t migration_relaunch(int status) {
        if (g_user_stop) {
            migration_answer("ERROR ghostrun was told to stop during the migration; the images "
                             "are in " +
                             mv.gen_dir + " (ghost restart " + cfg_dir_of(mv.gen_dir) + ")");
            stopped_after_ckpt = true;
            return -1;
        }
        if (mv.launched && !mv.fallback)
            mv.failure = mv.failure.empty() ? "mpirun exited with status " + std::to_string(status)
                                            : mv.failure;
        const std::vector<std::string> *hosts = &mv.hosts_new;
        if (mv.launched) {
            if (mv.fallback) {
                migration_answer("ERROR the ranks could not start on " + mv.host + " (" +
                                 mv.failure + ") nor where they were (mpirun exited with status " +
                                 std::to_string(status) + ")");
                return -1;
            }
            note("migration: the ranks did not come up on " + mv.host + " (" + mv.failure +
                 "); relaunching them where they were");
            mv.fallback = true;
            hosts = &mv.hosts_old;
        }
        forget_ranks();
        mv.launched = true;
        mv.t_launch = clock_type::now();
        mv.deadline = mv.t_launch + std::chrono::milliseconds(mv.start_ms);
        mv.kill_at = clock_type::time_point::max();
        pid_t child = cfg.relaunch(mv.gen_dir, *hosts, "", "");
        if (child > 0) {
            g_child = child;
            next_periodic = clock_type::now() + interval();
            return child;
        }
        if (!mv.fallback) {
            mv.failure = "cannot start mpirun";
            return migration_relaunch(status);
        }
        migration_answer("ERROR cannot start mpirun to relaunch the ranks");
        return -1;
    }

    // A relaunched mpirun whose ranks do not all connect in time is ended (its exit, in run(),
    // brings the fallback): SIGTERM lets it take its ranks and daemons down, SIGKILL follows.
    void check_migration_deadline() {
        if (!mv.active || !mv.launched || mv.live) return;
        auto now = clock_type::now();
        if (now >= mv.kill_at) {
            if (g_child > 0) kill(g_child, SIGKILL);
            mv.kill_at = clock_type::time_point::max();
        }
        if (now < mv.deadline) return;
        char why[96];
        snprintf(why, sizeof why, "its ranks did not connect within %.1f s", mv.start_ms / 1000.0);
        mv.failure = why;
        mv.deadline = clock_type::time_point::max();
        mv.kill_at = now + std::chrono::seconds(5);
        if (g_child > 0) kill(g_child, SIGTERM);
    }

    void finish_migration() {
        auto now = clock_type::now();
        if (mv.fallback) {
            migration_answer("ERROR the ranks could not start on " + mv.host + " (" + mv.failure +
                             "); the job goes on where it was, from generation " +
                             std::to_string(mv.generation));
            return;
        }
        char buf[1024];
        snprintf(buf, sizeof buf,
                 "OK ranks=%s to=%s generation=%d quiesce_s=%.3f export_s=%.3f relaunch_s=%.3f "
                 "downtime_s=%.3f",
                 mv.ranks.c_str(), mv.host.c_str(), mv.generation, secs(mv.t_drain - mv.start),
                 mv.export_s, secs(now - mv.t_launch), secs(now - mv.start));
        migration_answer(buf);
    }

    void migration_answer(const std::string &line) {
        if (mv.by_balancer) {
            balance_done(line);
            mv = migration{};
            return;
        }
        if (mv.cli >= 0)
            send_line(mv.cli, line);
        else if (cfg.verbose || line.rfind("ERROR", 0) == 0)
            note("migration: " + line);
        mv = migration{};
    }

    void check_deadline() {
        if (ep.ph == phase::idle || clock_type::now() < ep.deadline) return;
        if (ep.live && mv.all_sent) {
            char why[128];
            snprintf(why, sizeof why, "the new rank processes did not all connect within %.1f s",
                     mv.start_ms / 1000.0);
            return abort_epoch(why);
        }
        if (ep.ph == phase::clock && !ep.creating_ranks.empty()) {
            std::string who;
            for (int r : ep.creating_ranks)
                who += (who.empty() ? "" : ",") + std::to_string(r);
            return abort_epoch("rank(s) " + who +
                               " stayed inside a communicator creation that waits for ranks "
                               "not in it (MPI_Intercomm_create waits for the other group)");
        }
        static const char *names[] = {"", "CLOCK", "DRAINED", "SAVED", "RESUMED"};
        std::string late;
        for (auto *c : live_ranks())
            if (c->state != "finalized" && !ep.answered[c->rank])
                late += (late.empty() ? "" : ",") + std::to_string(c->rank);
        abort_epoch("timeout: rank(s) " + late + " did not answer " + names[(int)ep.ph] +
                    " in time");
    }

    void read_from(conn &c) {
        char buf[65536];
        ssize_t n = read(c.fd, buf, sizeof buf);
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
        if (n <= 0) return drop(c, "disconnected");
        c.in.append(buf, (size_t)n);
        size_t pos;
        while (c.fd >= 0 && (pos = c.in.find('\n')) != std::string::npos) {
            std::string line = c.in.substr(0, pos);
            c.in.erase(0, pos + 1);
            if (c.is_rank)
                on_rank_line(c, line);
            else
                on_command(c, line);
        }
        if (c.fd >= 0 && c.in.size() > kMaxLine) drop(c, "sent an over-long line");
    }

    // mpirun ended with `status`: relaunched from the newest complete checkpoint when
    // --auto-restart allows (returns the new mpirun), else -1. A launch in which a rank refused
    // its image (the gates; mpirun's status is then 0) cannot go on from that generation: it is
    // set aside, and the one before it is tried.
    pid_t maybe_relaunch(int status) {
        const bool refused = !gates.refusal.empty();
        if ((status == 0 && !refused) || stopped_after_ckpt || g_user_stop || !cfg.relaunch)
            return -1;
        std::string what =
            refused ? gates.refusal : "mpirun exited with status " + std::to_string(status);
        if (restarts_done >= cfg.auto_restarts) {
            if (cfg.auto_restarts > 0)
                note(what + "; " + std::to_string(restarts_done) + " automatic restart(s) used up");
            return -1;
        }
        // Only a checkpoint of this job (or of the one it was restarted from): another job may
        // have left generations in the same directory.
        if (last.gen == 0) {
            note(what + "; no checkpoint of this job to restart from");
            return -1;
        }
        result<std::string> gen = last.dir;
        auto m = read_manifest(*gen);
        if (m && refused) {
            gen = set_aside_generation(last.dir, *m);
            if (!gen) {
                note(what + "; cannot restart: " + gen.err().message);
                return -1;
            }
            note(what + "; " + last.dir + " set aside as " + last.dir + ".refused");
            m = read_manifest(*gen);
        }
        if (m) {
            if (auto v = verify_generation(*gen, *m); !v) m = v.err();
        }
        if (!m) {
            note(what + "; cannot restart: " + m.err().message);
            return -1;
        }
        if (ep.ph != phase::idle) abort_epoch("mpirun exited");
        end_retired(std::chrono::seconds(2)); // no kept process of the failed run runs on
        forget_ranks();
        restarts_done++;
        note((refused ? std::string("an image was refused") : what) + "; restarting from " + *gen +
             " (automatic restart " + std::to_string(restarts_done) + " of " +
             std::to_string(cfg.auto_restarts) + ")");
        pid_t child = cfg.relaunch(*gen, {}, "", "");
        if (child > 0) {
            g_child = child;
            last = {m->generation, *gen, m->time};
            next_periodic = clock_type::now() + interval();
        }
        return child;
    }

    int restarts_done = 0;

    // SIGUSR1 (Slurm's --signal=B:USR1@SECONDS before a time limit or preemption): as
    // `ghost checkpoint JOB --kill` into the job's checkpoint directory; ghostrun then exits with
    // kExitStoppedAfterCheckpoint. A checkpoint in progress becomes one that stops the job. When no
    // checkpoint can be taken (ranks not all there yet, one finalized), the job runs on.
    void stop_after_checkpoint() {
        if (stopped_after_ckpt) return;
        if (ep.ckpt && ep.ph == phase::resumed) {
            // Published already, its ranks resuming: too late to make it stop the job. Asked
            // again once they all have (the loop looks at the request after every event).
            g_stop_request = 1;
            return;
        }
        if (ep.ph != phase::idle && ep.ckpt) {
            ep.kill = true;
            note("SIGUSR1: the job stops after the checkpoint in progress");
            return;
        }
        if (ep.ph != phase::idle) abort_epoch("SIGUSR1 asked for a checkpoint");
        std::string why = begin_checkpoint(-1, cfg.ckpt_dir, true, 30000, 0);
        if (!why.empty())
            note("SIGUSR1: no checkpoint taken: " + why + "; the job runs on");
        else
            note("SIGUSR1: checkpointing into " + cfg.ckpt_dir + ", then stopping");
    }

    int run(pid_t child) {
        int status = -1;
        while (status < 0) {
            std::vector<pollfd> p = {
                {g_sig_pipe[0], POLLIN, 0}, {s.tcp_fd, POLLIN, 0}, {s.unix_fd, POLLIN, 0}};
            size_t base = p.size();
            for (auto &c : conns)
                p.push_back({c.fd, POLLIN, 0});
            poll(p.data(), p.size(), 200);
            if (switched_to > 0) {
                child = switched_to; // a live migration's new mpirun is the job's now
                switched_to = -1;
            }
            if (p[0].revents) {
                char tmp[64];
                (void)!read(g_sig_pipe[0], tmp, sizeof tmp);
                reap_other_mpiruns();
                int ws = 0;
                pid_t r = waitpid(child, &ws, WNOHANG);
                if (r == child) {
                    status = WIFEXITED(ws)     ? WEXITSTATUS(ws)
                             : WIFSIGNALED(ws) ? 128 + WTERMSIG(ws)
                                               : 1;
                    if (mv.active && mv.live && !mv.switched) {
                        // The job's mpirun ended (a rank died, mpirun took the others down) while
                        // the ranks' images streamed to the new one: if every image arrived, the
                        // move completes from them and the new mpirun is the job's; if not, the
                        // job ended here (below, once the move has failed). Reaped: that pid is
                        // nobody's to signal any more.
                        g_child = -1;
                        ended_during_move = status;
                        status = -1;
                        continue;
                    }
                    if (mv.active && !mv.live) {
                        if (pid_t next = migration_relaunch(status); next > 0) {
                            child = next;
                            status = -1;
                            continue;
                        }
                    }
                    if (pid_t next = maybe_relaunch(status); next > 0) {
                        child = next;
                        status = -1;
                        continue;
                    }
                }
            }
            if (ended_during_move >= 0 && !mv.active) {
                if (g_child > 0) {
                    ended_during_move = -1; // moved: the job goes on under the new mpirun
                } else {
                    status = ended_during_move;
                    ended_during_move = -1;
                    if (pid_t next = maybe_relaunch(status); next > 0) {
                        child = next;
                        status = -1;
                    }
                    continue;
                }
            }
            if (g_stop_request) {
                g_stop_request = 0;
                stop_after_checkpoint();
            }
            if (p[1].revents & POLLIN) accept_on(s.tcp_fd, true);
            if (p[2].revents & POLLIN) accept_on(s.unix_fd, false);
            // Ranks the epoch still waits for are read first: when a rank dies during a
            // checkpoint, the MPI launcher takes the others down with it, and their ends often
            // arrive in the same round; the failure then names the rank that stopped answering,
            // not the first by number.
            std::vector<bool> first(p.size() - base);
            for (size_t i = base; i < p.size(); i++)
                first[i - base] = awaited(conns[i - base]);
            for (int pass = 0; pass < 2; pass++)
                for (size_t i = base; i < p.size(); i++) {
                    conn &c = conns[i - base];
                    if (first[i - base] != (pass == 0)) continue;
                    if (c.fd >= 0 && (p[i].revents & (POLLIN | POLLHUP | POLLERR))) read_from(c);
                }
            auto now = clock_type::now();
            for (auto &c : conns)
                if (c.fd >= 0 && c.is_rank && !c.hello && !c.receiver && !c.gate &&
                    now - c.opened > std::chrono::milliseconds(kHelloTimeoutMs)) {
                    fprintf(stderr, "ghostrun: job %s: refused a connection from %s: no greeting\n",
                            s.job.c_str(), c.peer.c_str());
                    close(c.fd);
                    c.fd = -1;
                }
            check_deadline();
            check_migration_deadline();
            check_live();
            retry_waiting();
            balance_tick();
            tombstone_tick(now);
            if (cfg.interval_s > 0 && ep.ph == phase::idle && now >= next_periodic) {
                next_periodic = now + interval();
                // Not before every rank is there, nor after one finalized: silently skipped.
                if (job_not_ready().empty()) {
                    std::string why = begin_checkpoint(-1, cfg.ckpt_dir, false, 10000, 0);
                    if (!why.empty()) note("periodic checkpoint not taken: " + why);
                }
            }
            // Forget closed connections, except ranks (their state stays visible).
            std::vector<conn> keep;
            for (auto &c : conns)
                if (c.fd >= 0 || (c.is_rank && c.hello && c.rank >= 0))
                    keep.push_back(std::move(c));
            conns.swap(keep);
        }
        if (new_mpirun > 0) kill(new_mpirun, SIGKILL);
        end_retired(std::chrono::seconds(5));
        if (ep.cli_fd >= 0) send_line(ep.cli_fd, "ERROR the job ended");
        if (mv.cli >= 0) send_line(mv.cli, "ERROR the job ended during the migration");
        if (waiting.cli >= 0)
            send_line(waiting.cli, "ERROR the job ended before its ranks connected");
        // Commands that came with the job's end (unread, or still in the listen queue) are
        // answered too, not left to a closed connection ('the coordinator did not answer'): no
        // new one can come once the socket's name is gone.
        unlink(s.socket_path.c_str());
        for (size_t n = conns.size() + 1; n != conns.size();) {
            n = conns.size();
            accept_on(s.unix_fd, false);
        }
        for (auto &c : conns)
            if (c.fd >= 0 && !c.is_rank && c.fd != ep.cli_fd && c.fd != waiting.cli)
                send_line(c.fd, "ERROR the job ended");
        discard_generation(ep.tmp);
        if (!gates.refusal.empty()) { // the ranks ended quietly, nothing of the program ran
            fprintf(stderr, "%s: cannot restart: %s\n", cfg.me.c_str(), gates.refusal.c_str());
            return 2;
        }
        // Ended before every rank of a restart ran again (mpirun or a rank killed, a host gone):
        // nothing of the program ran on, and the checkpoint is as it was.
        if (status != 0 && cfg.restarted_gen > 0 && !restart_told && !stopped_after_ckpt)
            note("the restart from " + cfg.restarted_dir + " failed: mpirun exited with status " +
                 std::to_string(status) + " before every rank ran again; the checkpoint is " +
                 "unchanged (ghost restart " + cfg_dir_of(cfg.restarted_dir) + " tries again)");
        if (status == 0 && !stopped_after_ckpt && last.gen > 0) {
            if (auto marked = mark_ended(last.dir); !marked) note(marked.err().message);
        }
        if (stopped_after_ckpt) {
            note("stopped after its checkpoint " + last.dir + " (mpirun status " +
                 std::to_string(status) + "); go on with: ghost restart " + cfg_dir_of(last.dir));
            return kExitStoppedAfterCheckpoint;
        }
        return status;
    }

    static std::string cfg_dir_of(const std::string &gen_dir) {
        size_t slash = gen_dir.rfind('/');
        return slash == std::string::npos || slash == 0 ? gen_dir : gen_dir.substr(0, slash);
    }
};

std::string advertised_addresses(int port) {
    std::string list;
    if (const char *e = getenv("GHOST_COORD_ADDR"); e && *e) {
        list = e;
    } else {
        ifaddrs *ifa = nullptr;
        if (getifaddrs(&ifa) == 0) {
            for (ifaddrs *i = ifa; i; i = i->ifa_next) {
                if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET) continue;
                if (!(i->ifa_flags & IFF_UP) || (i->ifa_flags & IFF_LOOPBACK)) continue;
                char a[INET_ADDRSTRLEN];
                inet_ntop(AF_INET, &((sockaddr_in *)i->ifa_addr)->sin_addr, a, sizeof a);
                list += (list.empty() ? "" : ",") + std::string(a);
            }
            freeifaddrs(ifa);
        }
        list += (list.empty() ? "" : ",") + std::string("127.0.0.1");
    }
    return list + ":" + std::to_string(port);
}

} // namespace

result<coordinator_setup> coordinator_prepare(const std::string &job) {
    coordinator_setup s;
    s.job = job;
    char dir[4096];
    const char *why = nullptr;
    if (!control::runtime_dir(dir, sizeof dir, &why))
        return error{std::string("cannot set up the job coordinator: ") + why};
    unsigned char raw[job::kSecretHexLen / 2];
    if (getrandom(raw, sizeof raw, 0) != (ssize_t)sizeof raw)
        return sys_error("cannot make the job secret");
    static const char hex[] = "0123456789abcdef";
    for (unsigned char b : raw)
        s.secret += hex[b >> 4], s.secret += hex[b & 15];
    s.secret_path = std::string(dir) + "/job-" + job + ".secret";
    s.socket_path = std::string(dir) + "/job-" + job + ".sock";
    int sf =
        open(s.secret_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (sf < 0) return sys_error("cannot write " + s.secret_path);
    std::string line = s.secret + "\n";
    bool ok = control::write_all(sf, line.data(), line.size());
    close(sf);
    if (!ok) return sys_error("cannot write " + s.secret_path);

    s.tcp_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (s.tcp_fd < 0) return sys_error("cannot open the coordinator's TCP socket");
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_ANY);
    socklen_t alen = sizeof a;
    if (bind(s.tcp_fd, (sockaddr *)&a, sizeof a) != 0 || listen(s.tcp_fd, 1024) != 0 ||
        getsockname(s.tcp_fd, (sockaddr *)&a, &alen) != 0)
        return sys_error("cannot listen on TCP for the ranks");
    s.advertised = advertised_addresses(ntohs(a.sin_port));

    s.unix_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (s.unix_fd < 0) return sys_error("cannot open the coordinator's command socket");
    sockaddr_un u{};
    u.sun_family = AF_UNIX;
    if (s.socket_path.size() >= sizeof u.sun_path)
        return error{"cannot listen on " + s.socket_path + ": path too long"};
    strcpy(u.sun_path, s.socket_path.c_str());
    unlink(s.socket_path.c_str());
    if (bind(s.unix_fd, (sockaddr *)&u, sizeof u) != 0 || chmod(s.socket_path.c_str(), 0600) != 0 ||
        listen(s.unix_fd, 16) != 0)
        return sys_error("cannot listen on " + s.socket_path);
    return s;
}

int coordinator_run(coordinator_setup &s, pid_t child, const job_config &cfg) {
    g_child = child;
    server srv(s, cfg);
    int rc = srv.run(child);
    close(s.tcp_fd);
    close(s.unix_fd);
    unlink(s.socket_path.c_str());
    unlink(s.secret_path.c_str());
    return rc;
}

// Installs the self-pipe and the forwarding handlers; must run before the fork so that no SIGCHLD
// is missed.
void coordinator_signals() {
    if (pipe2(g_sig_pipe, O_CLOEXEC | O_NONBLOCK) != 0) return;
    struct sigaction sa {};
    sa.sa_sigaction = on_signal;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    for (int sig : {SIGCHLD, SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2})
        sigaction(sig, &sa, nullptr);
}

} // namespace ghost::run
