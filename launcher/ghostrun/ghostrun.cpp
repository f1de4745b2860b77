// SPDX-License-Identifier: Apache-2.0
// ghostrun [GHOST OPTIONS] [MPIRUN OPTIONS] PROGRAM ARGS   (DESIGN.md section 5)
//
// An mpirun wrapper: finds PROGRAM among mpirun's own options (which pass through untouched), picks
// the MPI implementation from the program's libraries, and starts that implementation's mpirun with
// the split-process layer for every rank: LD_PRELOAD=libghost_mpi_<flavour>.so and the stub MPI
// library first on LD_LIBRARY_PATH. ghostrun stays as the job's coordinator (coordinator.cpp),
// prints "ghostrun: job JOB" on stderr, forwards signals to mpirun and exits with mpirun's status;
// its own errors are one line and status 2.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include "coordinator.h"
#include "mpi_detect.h"
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

[[noreturn]] void die(const std::string &msg) {
    fprintf(stderr, "ghostrun: %s\n", msg.c_str());
    exit(2);
}

void usage(FILE *f) {
    fprintf(
        f, "usage: ghostrun [--ckpt-dir DIR] [--interval SECONDS] [--auto-restart N] [MPIRUN "
           "OPTIONS] PROGRAM [ARGS]\n"
           "Runs an MPI program under mpirun with every rank split into an application half and a\n"
           "disposable MPI half. mpirun options pass through unchanged; the MPI implementation\n"
           "(Open MPI libmpi.so.40 or MPICH libmpich.so.12) is chosen from PROGRAM's libraries.\n"
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
    std::string ckpt_dir, interval, auto_restart;
    bool verbose = false;
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
        } else if (name == "--auto-restart") {
            value(name, &p.auto_restart);
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

} // namespace
} // namespace ghost::run

int main(int argc, char **argv) {
    using namespace ghost::run;
    parsed p = parse(argc, argv);
    if (!p.interval.empty() && !positive_number(p.interval))
        die("--interval needs a number of seconds, got '" + p.interval + "'");
    if (!p.auto_restart.empty() && !positive_number(p.auto_restart))
        die("--auto-restart needs a count, got '" + p.auto_restart + "'");
    if (!p.interval.empty())
        fprintf(stderr,
                "ghostrun: --interval is not implemented yet; running without checkpoints\n");
    if (!p.auto_restart.empty())
        fprintf(stderr,
                "ghostrun: --auto-restart is not implemented yet; failures are not restarted\n");
    if (!p.ckpt_dir.empty() && p.verbose)
        fprintf(stderr, "ghostrun: checkpoint directory %s (checkpoints not implemented yet)\n",
                p.ckpt_dir.c_str());

    std::string prog = resolve_program(p.program);
    if (prog.empty()) die("cannot run " + p.program + ": no such executable");
    mpi_detection d = detect_mpi(prog);
    if (!d.error.empty()) die("cannot run " + p.program + ": " + d.error);
    if (d.flavour == mpi_flavour::none)
        die(p.program +
            " is not an MPI program (it links neither libmpi.so.40 nor libmpich.so.12)");
    if (d.flavour == mpi_flavour::unsupported)
        die(p.program + " uses " + d.library +
            "; ghost supports libmpi.so.40 (Open MPI 4.1) and libmpich.so.12 (MPICH 4.0)");
    bool ompi = d.flavour == mpi_flavour::openmpi;
    std::string fl = ompi ? "openmpi" : "mpich";
    std::string dir = lib_dir();
    std::string layer = dir + "/libghost_mpi_" + fl + ".so";
    std::string stub = dir + "/stub-" + fl;
    if (access(layer.c_str(), R_OK) != 0)
        die("ghost was built without " + fl + " support (" + layer + " missing)");

    const char *mr_env = getenv(ompi ? "GHOST_MPIRUN_OPENMPI" : "GHOST_MPIRUN_MPICH");
    std::string mpirun = mr_env && *mr_env ? mr_env : (ompi ? "mpirun.openmpi" : "mpirun.mpich");
    // Every rank carries one ghost agent (libghost.so) next to the layer: the layer registers with
    // it (ghost_agent.h), so that a rank can be parked and exported without its lower half.
    std::string agent = from_env_or("GHOST_AGENT_LIB", GHOST_AGENT_LIB_DEFAULT);
    std::string ghost_bin = from_env_or("GHOST_BIN", GHOST_BIN_DEFAULT);
    if (agent.empty() || access(agent.c_str(), R_OK) != 0)
        die("cannot find the ghost agent libghost.so (set GHOST_AGENT_LIB)");
    std::string preload = agent + ":" + layer;
    if (const char *old = getenv("LD_PRELOAD"); old && *old) preload += std::string(":") + old;
    std::string ldpath = stub;
    if (const char *old = getenv("LD_LIBRARY_PATH"); old && *old) ldpath += std::string(":") + old;

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
    setenv_rank("LD_PRELOAD", preload);
    setenv_rank("LD_LIBRARY_PATH", ldpath);
    setenv_rank("GHOST_STUB_DIR", stub);
    setenv_rank("GHOST_BIN", ghost_bin);
    setenv_rank("GHOST_CKPT_SIGNAL", "0"); // ranks are checkpointed on request, not by a signal
    setenv_rank("GHOST_CKPT_DIR", absolute(p.ckpt_dir.empty() ? "ghost-ckpt" : p.ckpt_dir));
    // The coordinator's address, the job id and the secret reach the ranks through mpirun's
    // environment; Open MPI forwards a variable named by -x NAME, Hydra forwards the whole
    // environment by default. Never as a value on a command line (/proc/PID/cmdline is public;
    // /proc/PID/environ is readable only by the owner, like the secret's 0600 file).
    std::string job = std::to_string((long)getpid());
    auto coord = ghost::run::coordinator_prepare(job);
    if (!coord) die(coord.err().message);
    if (ompi)
        for (const char *k :
             {ghost::job::kEnvCoordinator, ghost::job::kEnvJob, ghost::job::kEnvSecret}) {
            cmd.push_back("-x");
            cmd.push_back(k);
        }
    for (const auto &o : p.mpirun_opts)
        cmd.push_back(o);
    cmd.push_back(prog == p.program ? p.program : prog);
    for (const auto &a : p.program_args)
        cmd.push_back(a);
    fprintf(stderr, "ghostrun: job %s\n", job.c_str());
    if (p.verbose) {
        fprintf(stderr, "ghostrun: job %s: coordinator at %s:", job.c_str(),
                coord->advertised.c_str());
        for (const auto &c : cmd)
            fprintf(stderr, " %s", c.c_str());
        fprintf(stderr, "\n");
    }
    std::vector<char *> av;
    for (auto &c : cmd)
        av.push_back(c.data());
    av.push_back(nullptr);
    ghost::run::coordinator_signals();
    pid_t child = fork();
    if (child < 0) die(std::string("cannot fork: ") + strerror(errno));
    if (child == 0) {
        setenv(ghost::job::kEnvCoordinator, coord->advertised.c_str(), 1);
        setenv(ghost::job::kEnvJob, job.c_str(), 1);
        setenv(ghost::job::kEnvSecret, coord->secret.c_str(), 1);
        execvp(av[0], av.data());
        fprintf(stderr, "ghostrun: cannot start %s: %s\n", mpirun.c_str(), strerror(errno));
        _exit(127);
    }
    return ghost::run::coordinator_run(*coord, child, prog);
}
