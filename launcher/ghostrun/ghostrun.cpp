// SPDX-License-Identifier: Apache-2.0
// ghostrun [GHOST OPTIONS] [MPIRUN OPTIONS] PROGRAM ARGS   (DESIGN.md section 5)
//
// An mpirun wrapper: finds PROGRAM among mpirun's own options (which pass through untouched), picks
// the MPI implementation from the program's libraries, and starts that implementation's mpirun with
// the split-process layer for every rank: LD_PRELOAD=libghost_mpi_<flavour>.so and the stub MPI
// library first on LD_LIBRARY_PATH. ghostrun stays as the job's coordinator (coordinator.cpp),
// prints "ghostrun: job JOB" on stderr, forwards signals to mpirun and exits with mpirun's status;
// its own errors are one line and status 2.
#include <asm/prctl.h>
#include <sys/auxv.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "ckpt_dir.h"
#include "coordinator.h"
#include "mpi_detect.h"
#include "slurm_nodes.h"
#include "runtime/job_protocol.h"

#ifndef GHOST_MPI_LIBDIR_DEFAULT
#define GHOST_MPI_LIBDIR_DEFAULT ""
#endif
#ifndef GHOST_AGENT_LIB_DEFAULT
#define GHOST_AGENT_LIB_DEFAULT ""
#endif
#ifndef GHOST_BIN_DEFAULT
#define GHOST_BIN_DEFAULT ""
#endif

namespace ghost::run {
namespace {

// "ghost" when `ghost restart` runs us: its errors are the user's command's.
const char *g_me = "ghostrun";

[[noreturn]] void die(const std::string &msg) {
    fprintf(stderr, "%s: %s\n", g_me, msg.c_str());
    exit(2);
}

void usage(FILE *f) {
    fprintf(
        f,
        "usage: ghostrun [--ckpt-dir DIR] [--interval SECONDS] [--incremental]\n"
        "                [--auto-restart N] [--fresh]\n"
        "                [--balance [--balance-interval SECONDS]] [--mpi openmpi|mpich]\n"
        "                [MPIRUN OPTIONS] PROGRAM [ARGS]\n"
        "       ghostrun --restart DIR [--interval SECONDS] [--auto-restart N] [MPIRUN OPTIONS]\n"
        "Runs an MPI program under mpirun with every rank split into an application half and a\n"
        "disposable MPI half. mpirun options pass through unchanged; the MPI implementation\n"
        "(Open MPI libmpi.so.40 or MPICH libmpich.so.12) is chosen from PROGRAM's libraries\n"
        "(for Python, from those of its mpi4py), or named with --mpi.\n"
        "When DIR (--ckpt-dir, default ./ghost-ckpt) holds a complete checkpoint of the same\n"
        "program, the job resumes from it (--fresh: starts afresh). SIGUSR1 to ghostrun:\n"
        "checkpoint into DIR and stop (exit status 75; the next run resumes).\n"
        "--incremental: each checkpoint stores only the pages a rank wrote since the previous\n"
        "one (the generations it takes the others from are kept).\n"
        "--balance: every --balance-interval seconds (default 10) the coordinator compares how\n"
        "long each host's ranks wait for a CPU and live-migrates a rank from an overloaded host\n"
        "to one with room, binding it to a free CPU there.\n"
        "Environment: GHOST_MPI_LIBDIR (layer libraries), GHOST_MPIRUN_OPENMPI, "
        "GHOST_MPIRUN_MPICH.\n");
}

// mpirun options (Open MPI's orterun and MPICH's Hydra) that consume following words.
const std::set<std::string> &one_arg_options() {
    static const std::set<std::string> s = {
        // Open MPI
        "-np", "--np", "-n", "--n", "-c", "-H", "--host", "-host", "-hostfile", "--hostfile",
        "-machinefile", "--machinefile", "--default-hostfile", "-rf", "--rankfile", "--map-by",
        "-map-by", "--rank-by", "-rank-by", "--bind-to", "-bind-to", "-x", "-wdir", "--wdir", "-wd",
        "--wd", "-path", "--path", "--prefix", "-output-filename", "--output-filename",
        "--npernode", "-npernode", "-N", "--npersocket", "-npersocket", "-cpus-per-proc",
        "--cpus-per-proc", "-cpus-per-rank", "--cpus-per-rank", "--app", "--tune", "--timeout",
        "--stdin", "-stdin", "--preload-files", "--ompi-server", "--report-uri", "--report-pid",
        "--personality", "--cpu-set", "-cpu-set", "--slot-list", "--max-restarts", "--hetero-nodes",
        "--launch-agent", "--output-proctable", "--xterm", "-s",
        // MPICH Hydra
        "-f", "-hosts", "-genvlist", "-envlist", "-configfile", "-launcher", "-launcher-exec",
        "-ppn", "-iface", "-rmk", "-demux", "-errfile-pattern", "-outfile-pattern",
        "-prepend-pattern", "-bootstrap", "-bootstrap-exec", "-gdb", "-profile", "-binding",
        "-topolib", "-ckpointlib", "-ckpoint-prefix", "-ckpoint-num", "-nameserver", "-localhost",
        "-usize", "-gpus-per-proc"};
    return s;
}
const std::set<std::string> &two_arg_options() {
    static const std::set<std::string> s = {"--mca", "-mca", "--gmca", "-gmca", "-genv", "-env"};
    return s;
}

struct parsed {
    std::string ckpt_dir, interval, auto_restart, restart, mpi, balance_interval;
    bool verbose = false, from_ghost = false, fresh = false, balance = false, incremental = false;
    std::vector<std::string> mpirun_opts;
    std::string program;
    std::vector<std::string> program_args;
};

parsed parse(int argc, char **argv) {
    parsed p;
    int i = 1;
    auto value = [&](const std::string &opt, std::string *dst) {
        std::string a = argv[i];
        auto eq = a.find('=');
        if (eq != std::string::npos) {
            *dst = a.substr(eq + 1);
        } else {
            if (i + 1 >= argc) die("option " + opt + " needs a value");
            *dst = argv[++i];
        }
    };
    for (; i < argc; i++) {
        std::string a = argv[i];
        std::string name = a.substr(0, a.find('='));
        if (a == "--help" || a == "-h") {
            usage(stdout);
            exit(0);
        } else if (name == "--ckpt-dir") {
            value(name, &p.ckpt_dir);
        } else if (name == "--interval") {
            value(name, &p.interval);
        } else if (a == "--balance") {
            p.balance = true;
        } else if (name == "--balance-interval") {
            value(name, &p.balance_interval);
        } else if (name == "--auto-restart") {
            value(name, &p.auto_restart);
        } else if (name == "--restart") {
            value(name, &p.restart);
        } else if (name == "--mpi") {
            value(name, &p.mpi);
        } else if (a == "--from-ghost") { // `ghost restart` runs us (hidden)
            p.from_ghost = true;
            g_me = "ghost";
        } else if (a == "--fresh") {
            p.fresh = true;
        } else if (a == "--incremental") {
            p.incremental = true;
        } else if (a == "--ghost-verbose") {
            p.verbose = true;
        } else if (a == "--") {
            i++;
            break;
        } else if (!a.empty() && a[0] == '-') {
            p.mpirun_opts.push_back(a);
            if (a.find('=') == std::string::npos) {
                int extra = one_arg_options().count(a) ? 1 : two_arg_options().count(a) ? 2 : 0;
                for (int k = 0; k < extra; k++) {
                    if (i + 1 >= argc) die("mpirun option " + a + " needs a value");
                    p.mpirun_opts.push_back(argv[++i]);
                }
            }
        } else {
            break;
        }
    }
    if (!p.restart.empty()) {
        if (i < argc)
            die("--restart takes no program (the checkpoint names it): " + std::string(argv[i]));
        return p;
    }
    if (i >= argc) {
        usage(stderr);
        die("no program given");
    }
    p.program = argv[i++];
    for (; i < argc; i++)
        p.program_args.push_back(argv[i]);
    return p;
}

bool positive_number(const std::string &s) {
    if (s.empty()) return false;
    char *end = nullptr;
    double v = strtod(s.c_str(), &end);
    return end && *end == 0 && v >= 0;
}

std::string lib_dir() {
    const char *env = getenv("GHOST_MPI_LIBDIR");
    if (env && *env) return env;
    return GHOST_MPI_LIBDIR_DEFAULT;
}

std::string from_env_or(const char *var, const char *fallback) {
    const char *env = getenv(var);
    return env && *env ? env : fallback;
}

std::string absolute(const std::string &path) {
    if (!path.empty() && path[0] == '/') return path;
    char cwd[4096];
    if (!getcwd(cwd, sizeof cwd)) return path;
    return std::string(cwd) + "/" + path;
}

// The value of -np (or its synonyms) in mpirun options, or "".
std::string np_of(const std::vector<std::string> &opts) {
    for (size_t i = 0; i < opts.size(); i++) {
        const std::string &o = opts[i];
        for (const char *n : {"-np", "--np", "-n", "--n", "-c"}) {
            if (o == n && i + 1 < opts.size()) return opts[i + 1];
            std::string eq = std::string(n) + "=";
            if (o.rfind(eq, 0) == 0) return o.substr(eq.size());
        }
    }
    return "";
}

// The original job's mpirun options without where and how many ranks ran: a restart places the
// ranks anew (its own options, -np from the manifest), transport options stay.
std::vector<std::string> without_placement(const std::vector<std::string> &opts) {
    static const std::set<std::string> placement = {"-np",
                                                    "--np",
                                                    "-n",
                                                    "--n",
                                                    "-c",
                                                    "-H",
                                                    "--host",
                                                    "-host",
                                                    "-hostfile",
                                                    "--hostfile",
                                                    "-machinefile",
                                                    "--machinefile",
                                                    "--default-hostfile",
                                                    "-rf",
                                                    "--rankfile",
                                                    "-f",
                                                    "-hosts",
                                                    "-ppn",
                                                    "--npernode",
                                                    "-npernode",
                                                    "-N",
                                                    "--map-by",
                                                    "-map-by",
                                                    "--oversubscribe",
                                                    "-oversubscribe"};
    std::vector<std::string> out;
    for (size_t i = 0; i < opts.size(); i++) {
        const std::string &o = opts[i];
        std::string name = o.substr(0, o.find('='));
        if (placement.count(name)) {
            if (o.find('=') == std::string::npos && one_arg_options().count(o)) i++;
            continue;
        }
        out.push_back(o);
        int extra = o.find('=') != std::string::npos ? 0
                    : one_arg_options().count(o)     ? 1
                    : two_arg_options().count(o)     ? 2
                                                     : 0;
        for (int k = 0; k < extra && i + 1 < opts.size(); k++)
            out.push_back(opts[++i]);
    }
    return out;
}

// `base` followed by `over`, where a parameter or variable that `over` sets (`--mca NAME V`,
// `-genv NAME V`...) is taken out of `base`: mpirun refuses an MCA parameter given twice, and the
// later word is the user's.
std::vector<std::string> overridden(const std::vector<std::string> &base,
                                    const std::vector<std::string> &over) {
    auto names_set = [](const std::vector<std::string> &opts) {
        std::set<std::string> names;
        for (size_t i = 0; i + 1 < opts.size(); i++)
            if (two_arg_options().count(opts[i])) names.insert(opts[++i]);
        return names;
    };
    std::set<std::string> set_again = names_set(over);
    std::vector<std::string> out;
    for (size_t i = 0; i < base.size(); i++) {
        if (two_arg_options().count(base[i]) && i + 1 < base.size() &&
            set_again.count(base[i + 1])) {
            i += 2; // the option, its name and its value
            continue;
        }
        out.push_back(base[i]);
    }
    for (const auto &o : over)
        out.push_back(o);
    return out;
}

struct launcher {
    bool ompi = false;
    std::string mpirun, preload, ldpath, stub, ghost_bin;
    std::string job, ckpt_dir;
    coordinator_setup *coord = nullptr;

    // mpirun's command line: the layer's environment for a fresh start, only the coordinator's
    // for restarted ranks (`ghost restart-rank` execs the restorer; the image brings its layer).
    std::vector<std::string> command(const std::vector<std::string> &opts,
                                     const std::vector<std::string> &program, bool restart) {
        std::vector<std::string> cmd = {mpirun};
        auto setenv_rank = [&](const std::string &k, const std::string &v) {
            if (ompi) {
                cmd.push_back("-x");
                cmd.push_back(k + "=" + v);
            } else {
                cmd.push_back("-genv");
                cmd.push_back(k);
                cmd.push_back(v);
            }
        };
        if (!restart) {
            setenv_rank("LD_PRELOAD", preload);
            setenv_rank("LD_LIBRARY_PATH", ldpath);
            setenv_rank("GHOST_STUB_DIR", stub);
            setenv_rank("GHOST_BIN", ghost_bin);
            setenv_rank("GHOST_CKPT_SIGNAL", "0"); // ranks are checkpointed on request
            setenv_rank("GHOST_CKPT_DIR", ckpt_dir);
        }
        // The coordinator's address, the job id and the secret reach the ranks through mpirun's
        // environment; Open MPI forwards a variable named by -x NAME, Hydra forwards the whole
        // environment by default. Never as a value on a command line (/proc/PID/cmdline is
        // public; /proc/PID/environ is readable only by the owner, like the secret's 0600 file).
        if (ompi)
            for (const char *k : {job::kEnvCoordinator, job::kEnvJob, job::kEnvSecret}) {
                cmd.push_back("-x");
                cmd.push_back(k);
            }
        for (const auto &o : opts)
            cmd.push_back(o);
        for (const auto &a : program)
            cmd.push_back(a);
        return cmd;
    }

    pid_t start(const std::vector<std::string> &cmd, bool verbose) {
        if (verbose) {
            fprintf(stderr, "ghostrun: job %s: coordinator at %s:", job.c_str(),
                    coord->advertised.c_str());
            for (const auto &c : cmd)
                fprintf(stderr, " %s", c.c_str());
            fprintf(stderr, "\n");
        }
        std::vector<char *> av;
        for (auto &c : cmd)
            av.push_back(const_cast<char *>(c.c_str()));
        av.push_back(nullptr);
        pid_t child = fork();
        if (child < 0) return -1;
        if (child == 0) {
            setenv(job::kEnvCoordinator, coord->advertised.c_str(), 1);
            setenv(job::kEnvJob, job.c_str(), 1);
            setenv(job::kEnvSecret, coord->secret.c_str(), 1);
            execvp(av[0], av.data());
            fprintf(stderr, "ghostrun: cannot start %s: %s\n", mpirun.c_str(), strerror(errno));
            _exit(127);
        }
        return child;
    }
};

// Without user-space FSGSBASE (AT_HWCAP2 bit 1, Linux >= 5.9 on a CPU that has it) every MPI call
// switches the thread pointer with two arch_prctl system calls (mpi-layer/upper/fs.h): say so, in
// one line, with what two such calls cost here (best of a few batches of ARCH_SET_FS to the value
// the register already holds). GHOST_MPI_FORCE_ARCH_PRCTL=1 forces that path in the ranks.
void fsgsbase_notice() {
    const char *force = getenv("GHOST_MPI_FORCE_ARCH_PRCTL");
    const bool forced = force && *force == '1';
    if ((getauxval(AT_HWCAP2) & 2) && !forced) return;
    unsigned long fs = 0;
    if (syscall(SYS_arch_prctl, ARCH_GET_FS, &fs) != 0) return;
    double best = 1e18;
    for (int batch = 0; batch < 5; batch++) {
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        for (int i = 0; i < 100; i++)
            syscall(SYS_arch_prctl, ARCH_SET_FS, fs);
        clock_gettime(CLOCK_MONOTONIC, &b);
        double ns = ((double)(b.tv_sec - a.tv_sec) * 1e9 + (double)(b.tv_nsec - a.tv_nsec)) / 100;
        if (ns < best) best = ns;
    }
    fprintf(
        stderr,
        "ghostrun: %s: each MPI call costs about %.0f ns more (2 arch_prctl calls of %.0f ns)\n",
        forced ? "GHOST_MPI_FORCE_ARCH_PRCTL=1 (FS switched by arch_prctl)"
               : "this kernel has no user-space FSGSBASE",
        2 * best, best);
}

// Sets up the launcher for an MPI flavour ("openmpi" or "mpich").
void prepare(launcher &l, const std::string &fl) {
    l.ompi = fl == "openmpi";
    std::string dir = lib_dir();
    std::string layer = dir + "/libghost_mpi_" + fl + ".so";
    l.stub = dir + "/stub-" + fl;
    if (access(layer.c_str(), R_OK) != 0)
        die("ghost was built without " + fl + " support (" + layer + " missing)");
    const char *mr_env = getenv(l.ompi ? "GHOST_MPIRUN_OPENMPI" : "GHOST_MPIRUN_MPICH");
    l.mpirun = mr_env && *mr_env ? mr_env : (l.ompi ? "mpirun.openmpi" : "mpirun.mpich");
    // Every rank carries one ghost agent (libghost.so) next to the layer: the layer registers
    // with it (ghost_agent.h), so that a rank can be parked and exported without its lower half.
    std::string agent = from_env_or("GHOST_AGENT_LIB", GHOST_AGENT_LIB_DEFAULT);
    l.ghost_bin = from_env_or("GHOST_BIN", GHOST_BIN_DEFAULT);
    if (agent.empty() || access(agent.c_str(), R_OK) != 0)
        die("cannot find the ghost agent libghost.so (set GHOST_AGENT_LIB)");
    l.preload = agent + ":" + layer;
    if (const char *old = getenv("LD_PRELOAD"); old && *old) l.preload += std::string(":") + old;
    l.ldpath = l.stub;
    if (const char *old = getenv("LD_LIBRARY_PATH"); old && *old)
        l.ldpath += std::string(":") + old;
}

std::string parent_dir(const std::string &path) {
    size_t slash = path.rfind('/');
    return slash == std::string::npos || slash == 0 ? "/" : path.substr(0, slash);
}

// Before an automatic restart under Slurm: the allocation's nodes whose slurmd no longer answers
// (Slurm keeps a lost node in the allocation until SlurmdTimeout) are left out. Returns, when a
// node is gone, rank R's node for every rank of generation `gen`: its own if it answers, else the
// nodes left in turn; nothing when every node answers, outside Slurm, or when it cannot be known
// (then the restart goes as placed before; the reason in one line).
std::optional<std::vector<std::string>> without_lost_nodes(const std::string &gen,
                                                           const std::string &job) {
    auto nodes = probe_slurm_nodes(3000);
    auto say = [&job](const std::string &msg) {
        fprintf(stderr, "ghostrun: job %s: %s\n", job.c_str(), msg.c_str());
    };
    if (!nodes) {
        say("cannot tell which Slurm nodes are left (" + nodes.err().message +
            "); restarting as before");
        return std::nullopt;
    }
    std::vector<size_t> alive;
    std::string gone;
    for (size_t i = 0; i < nodes->size(); i++) {
        const slurm_node &n = (*nodes)[i];
        if (n.answers)
            alive.push_back(i);
        else
            gone +=
                (gone.empty() ? "" : ", ") + n.name + " (" +
                (n.port > 0 ? "slurmd at " + n.addr + ":" + std::to_string(n.port) + ": " : "") +
                n.why + ")";
    }
    if (gone.empty()) return std::nullopt;
    if (alive.empty()) {
        say("no node of the Slurm allocation answers: " + gone);
        return std::nullopt;
    }
    auto m = read_manifest(gen);
    if (!m) return std::nullopt; // the relaunch reports it
    // hosts[R]: rank R's node; a manifest whose ranks are not 0..N-1 once each is left to the
    // relaunch's own checks.
    std::vector<std::string> hosts(m->ranks.size());
    std::string moved;
    size_t next = 0;
    for (const auto &r : m->ranks) {
        if (r.rank < 0 || (size_t)r.rank >= hosts.size()) return std::nullopt;
        int at = node_of_host(*nodes, r.host);
        if (at >= 0 && (*nodes)[at].answers) {
            hosts[r.rank] = (*nodes)[at].name;
            continue;
        }
        hosts[r.rank] = (*nodes)[alive[next++ % alive.size()]].name;
        moved += (moved.empty() ? "" : ", ") + std::to_string(r.rank) + " to " + hosts[r.rank];
    }
    for (const auto &h : hosts)
        if (h.empty()) return std::nullopt;
    say("left out the lost Slurm node(s) " + gone + "; " +
        (moved.empty() ? std::string("no rank ran there") : "rank(s) " + moved));
    // The lost node's share of the job's earlier step (mpirun's daemons, started with srun) never
    // ends until Slurm declares the node down: its CPUs on the nodes left stay taken, and a new
    // step would wait for them. The new daemons share them (srun --overlap).
    setenv("SLURM_OVERLAP", "1", 1);
    return hosts;
}

} // namespace
} // namespace ghost::run

int main(int argc, char **argv) {
    using namespace ghost::run;
    parsed p = parse(argc, argv);
    job_config cfg;
    cfg.verbose = p.verbose;
    cfg.incremental = p.incremental;
    if (!p.interval.empty()) {
        // (A bound: an interval past the clock's range came out as no wait at all.)
        // 0: none (a restarted job keeps its own interval unless told so).
        if (!positive_number(p.interval) || atof(p.interval.c_str()) > 31536000)
            die("--interval needs a number of seconds (up to 31536000, a year; 0: none), got '" +
                p.interval + "'");
        cfg.interval_s = atof(p.interval.c_str());
    }
    if (!p.balance_interval.empty()) {
        if (!p.balance) die("--balance-interval goes with --balance");
        if (!positive_number(p.balance_interval) || atof(p.balance_interval.c_str()) < 0.2 ||
            atof(p.balance_interval.c_str()) > 86400)
            die("--balance-interval needs a number of seconds (0.2 to 86400), got '" +
                p.balance_interval + "'");
    }
    if (p.balance)
        cfg.balance_interval_s =
            p.balance_interval.empty() ? 10.0 : atof(p.balance_interval.c_str());
    if (!p.auto_restart.empty()) {
        if (p.auto_restart.find_first_not_of("0123456789") != std::string::npos ||
            p.auto_restart.size() > 6)
            die("--auto-restart needs a count, got '" + p.auto_restart + "'");
        cfg.auto_restarts = atoi(p.auto_restart.c_str());
    }
    launcher l;
    std::vector<std::string> cmd;
    // The ranks of a checkpointed job again, under this new coordinator, after every check.
    // `opts` are the mpirun options to place and run them (the manifest's size when without -np).
    auto restart_from = [&](const std::string &gen, const manifest &m,
                            std::vector<std::string> opts) {
        cfg.restart_began = std::chrono::steady_clock::now();
        // Everything but the pages' hashes, before anything is launched: each rank's restorer
        // verifies its whole image as it reads it, and no rank runs on before all have (gates).
        if (auto v = verify_generation(gen, m); !v)
            die("cannot restart from " + gen + ": " + v.err().message);
        cfg.restart_verify_s =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - cfg.restart_began)
                .count();
        if (m.flavour != "openmpi" && m.flavour != "mpich")
            die("cannot restart from " + gen + ": unknown MPI '" + m.flavour + "'");
        // The images hold the program's upper half, built against the MPI it loaded: a manifest
        // edited to name the other MPI would start them under a launcher they cannot talk to.
        if (!m.argv.empty()) {
            program_plan now =
                plan_program(m.argv[0], std::vector<std::string>(m.argv.begin() + 1, m.argv.end()));
            const char *loads = now.mpi.flavour == mpi_flavour::openmpi ? "openmpi"
                                : now.mpi.flavour == mpi_flavour::mpich ? "mpich"
                                                                        : nullptr;
            if (now.mpi.error.empty() && loads && m.flavour != loads)
                die("cannot restart from " + gen + ": its manifest names MPI '" + m.flavour +
                    "', but " + m.argv[0] + " loads " + now.mpi.library);
        }
        std::string size = std::to_string(m.ranks.size());
        if (std::string np = np_of(p.mpirun_opts); !np.empty() && np != size)
            die("cannot restart from " + gen + ": the checkpoint is of " + size +
                " ranks, -np asks for " + np +
                (p.restart.empty() ? " (--fresh starts afresh)" : ""));
        prepare(l, m.flavour);
        cfg.flavour = m.flavour;
        if (np_of(opts).empty()) {
            opts.insert(opts.begin(), size);
            opts.insert(opts.begin(), "-np");
        }
        cfg.mpirun_opts = opts;
        cfg.argv = m.argv;
        cfg.restarted_gen = m.generation;
        cfg.restarted_dir = gen;
        cfg.restarted_time = m.time;
        l.ckpt_dir = cfg.ckpt_dir;
        cmd = l.command(cfg.mpirun_opts, std::vector<std::string>{l.ghost_bin, "restart-rank", gen},
                        true);
    };
    // The job's checkpoint directory is its own while this process lives (held before anything
    // is read from it: a resume would otherwise start from another live job's generation).
    auto claim_ckpt_dir = [&cfg] {
        auto claimed = claim_checkpoint_dir(cfg.ckpt_dir);
        if (!claimed) die(claimed.err().message);
    };
    if (!p.restart.empty()) {
        auto gen = resolve_generation(p.restart);
        if (!gen) die("cannot restart from " + p.restart + ": " + gen.err().message);
        auto m = read_manifest(*gen);
        if (!m) die("cannot restart from " + p.restart + ": " + m.err().message);
        cfg.ckpt_dir = p.ckpt_dir.empty() ? parent_dir(*gen) : absolute(p.ckpt_dir);
        claim_ckpt_dir();
        // The job keeps its periodic checkpoints, their kind and its automatic restarts, unless
        // this command sets them again.
        if (p.interval.empty()) cfg.interval_s = m->interval_s;
        if (p.auto_restart.empty()) cfg.auto_restarts = m->auto_restarts;
        cfg.incremental = cfg.incremental || m->incremental;
        // The original's transport options, then this command's (which win).
        std::vector<std::string> opts =
            overridden(without_placement(m->mpirun_opts), p.mpirun_opts);
        restart_from(*gen, *m, opts);
    } else {
        program_plan plan = plan_program(p.program, p.program_args);
        mpi_detection &d = plan.mpi;
        if (!d.error.empty()) die("cannot run " + p.program + ": " + d.error);
        const char *named = p.mpi.empty()        ? nullptr
                            : p.mpi == "openmpi" ? "libmpi.so.40"
                            : p.mpi == "mpich"   ? "libmpich.so.12"
                                                 : "";
        if (named && !*named) die("--mpi takes openmpi or mpich, got '" + p.mpi + "'");
        if (named && d.flavour != mpi_flavour::none && d.library != named)
            die("--mpi " + p.mpi + " names " + named + ", but " + p.program + " loads " +
                d.library);
        if (named) {
            d.flavour = p.mpi == "openmpi" ? mpi_flavour::openmpi : mpi_flavour::mpich;
        } else if (d.flavour == mpi_flavour::none) {
            die(p.program + " is not an MPI program (it links neither libmpi.so.40 nor " +
                "libmpich.so.12" + (plan.why_unknown.empty() ? "" : ": " + plan.why_unknown) +
                "); name its MPI with --mpi openmpi|mpich");
        }
        if (d.flavour == mpi_flavour::unsupported)
            die(p.program + " uses " + d.library +
                "; ghost supports libmpi.so.40 (Open MPI 4.1) and libmpich.so.12 (MPICH 4.0)");
        cfg.flavour = d.flavour == mpi_flavour::openmpi ? "openmpi" : "mpich";
        prepare(l, cfg.flavour);
        cfg.ckpt_dir = absolute(p.ckpt_dir.empty() ? "ghost-ckpt" : p.ckpt_dir);
        claim_ckpt_dir();
        cfg.mpirun_opts = p.mpirun_opts;
        cfg.argv = plan.command;
        l.ckpt_dir = cfg.ckpt_dir;
        cmd = l.command(cfg.mpirun_opts, plan.command, false);
        // DIR holds a complete checkpoint of this very program (a requeued batch job, the job
        // script run again): go on from it, unless told --fresh.
        if (!p.fresh) {
            if (auto gen = resumable_generation(cfg.ckpt_dir)) {
                auto m = read_manifest(*gen);
                if (!m)
                    die("cannot resume from " + *gen + ": " + m.err().message +
                        " (--fresh starts afresh)");
                if (m->argv == cfg.argv && m->flavour == cfg.flavour) {
                    fprintf(stderr, "ghostrun: resuming from %s (--fresh starts afresh)\n",
                            gen->c_str());
                    restart_from(*gen, *m, p.mpirun_opts);
                } else {
                    fprintf(stderr,
                            "ghostrun: %s holds a checkpoint of another program (%s): starting "
                            "afresh\n",
                            cfg.ckpt_dir.c_str(), m->argv.empty() ? "?" : m->argv[0].c_str());
                }
            }
        }
    }
    l.job = std::to_string((long)getpid());
    auto coord = coordinator_prepare(l.job);
    if (!coord) die(coord.err().message);
    l.coord = &*coord;
    // An automatic restart runs the ranks from the newest generation, placed as before (without
    // -np, mpirun picked the size: the manifest's is given then). A migration names every rank's
    // host: rank R on hosts[R] (Open MPI's sequential mapper, Hydra's host list in rank order),
    // the job's placement from then on.
    auto placed = [&l, &cfg](const std::vector<std::string> &hosts) {
        std::vector<std::string> opts = {"-np", std::to_string(hosts.size())};
        std::string list;
        for (const auto &h : hosts)
            list += (list.empty() ? "" : ",") + h + (l.ompi ? "" : ":1");
        if (l.ompi) {
            opts.insert(opts.end(), {"--host", list, "--map-by", "seq"});
            // Open MPI yields the CPU while it waits only where it counts more ranks than slots,
            // and a host list gives every rank a slot: ranks relaunched onto a host with more of
            // them than CPUs would spin where the first launch's yielded (10x slower steps under
            // load). Told so, from this host's CPU count (the hosts of a job alike), unless the
            // user's options set it.
            std::map<std::string, long> per_host;
            long most = 0;
            for (const auto &h : hosts)
                most = std::max(most, ++per_host[h]);
            bool user_sets = false;
            for (const auto &o : cfg.mpirun_opts)
                user_sets |= o.find("mpi_yield_when_idle") != std::string::npos;
            if (most > sysconf(_SC_NPROCESSORS_ONLN) && !user_sets)
                opts.insert(opts.end(), {"--mca", "mpi_yield_when_idle", "1"});
        } else {
            opts.insert(opts.end(), {"-hosts", list});
        }
        for (const auto &o : without_placement(cfg.mpirun_opts))
            opts.push_back(o);
        return opts;
    };
    cfg.set_placement = [&cfg, placed](const std::vector<std::string> &hosts) {
        cfg.mpirun_opts = placed(hosts);
    };
    cfg.relaunch = [&l, &cfg, placed, verbose = p.verbose](
                       const std::string &gen, const std::vector<std::string> &hosts,
                       const std::string &bind, const std::string &keep) -> pid_t {
        if (gen.empty()) { // a live migration's receivers
            std::vector<std::string> opts = placed(hosts);
            // Not secret: values on the command line are fine.
            for (const auto &[name, value] :
                 {std::pair<std::string, std::string>{"GHOST_BIND", bind},
                  {ghost::job::kEnvKeep, keep}}) {
                if (value.empty()) continue;
                std::vector<std::string> env =
                    l.ompi ? std::vector<std::string>{"-x", name + "=" + value}
                           : std::vector<std::string>{"-genv", name, value};
                opts.insert(opts.begin(), env.begin(), env.end());
            }
            return l.start(
                l.command(opts, std::vector<std::string>{l.ghost_bin, "restart-rank", "--receive"},
                          true),
                verbose);
        }
        if (hosts.empty()) { // an automatic restart: without the Slurm nodes that are gone
            if (auto left_out = without_lost_nodes(gen, l.job)) {
                cfg.mpirun_opts = placed(*left_out);
                // The nodes left hold fewer slots (Slurm's tasks per node) than the job has ranks.
                if (l.ompi) cfg.mpirun_opts.push_back("--oversubscribe");
            }
        } else {
            cfg.mpirun_opts = placed(hosts);
        }
        std::vector<std::string> opts = cfg.mpirun_opts;
        if (np_of(opts).empty()) {
            auto m = read_manifest(gen);
            if (!m) return -1;
            opts.insert(opts.begin(), std::to_string(m->ranks.size()));
            opts.insert(opts.begin(), "-np");
        }
        return l.start(
            l.command(opts, std::vector<std::string>{l.ghost_bin, "restart-rank", gen}, true),
            verbose);
    };
    cfg.me = g_me;
    cfg.announce = [job = l.job] {
        fprintf(stderr, "ghostrun: job %s\n", job.c_str());
        fsgsbase_notice();
    };
    if (cfg.restarted_gen == 0) { // else once the ranks' images are verified
        cfg.announce();
        cfg.announce = nullptr;
    }
    coordinator_signals();
    pid_t child = l.start(cmd, p.verbose);
    if (child < 0) die(std::string("cannot fork: ") + strerror(errno));
    return coordinator_run(*coord, child, cfg);
}
