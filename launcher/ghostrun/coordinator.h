// SPDX-License-Identifier: Apache-2.0
// The job coordinator: lives in ghostrun, next to the mpirun it started. Ranks reach it over TCP
// (authenticated with the job's secret), the `ghost` command over a Unix socket in the owner's
// private runtime directory. Protocols: runtime/job_protocol.h.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "runtime/result.h"

namespace ghost::run {

struct coordinator_setup {
    std::string job;         // job id (ghostrun's pid)
    std::string secret;      // hex; given to the ranks through the environment
    std::string advertised;  // "addr,addr,...:port" the ranks try in turn
    std::string socket_path; // <runtime dir>/job-<JOB>.sock
    std::string secret_path; // <runtime dir>/job-<JOB>.secret (0600)
    int tcp_fd = -1, unix_fd = -1;
};

// Creates the secret (and its 0600 file), the TCP listener and the Unix socket.
result<coordinator_setup> coordinator_prepare(const std::string &job);

// Installs the SIGCHLD self-pipe and the handlers that forward signals to mpirun; call before the
// fork.
void coordinator_signals();

// What the coordinator knows about the job beyond its connections: for the manifests of its
// checkpoints (ckpt_dir.h), `ghost status`, periodic checkpoints and automatic restarts.
struct job_config {
    std::string ckpt_dir; // absolute
    std::string flavour;  // openmpi | mpich
    std::vector<std::string> mpirun_opts;
    std::vector<std::string> argv; // the program (absolute) and its arguments
    double interval_s = 0;         // > 0: a checkpoint every interval_s seconds
    bool incremental = false;      // images store only what was written since the previous ones
    int auto_restarts = 0;         // relaunches left after a failure
    bool verbose = false;
    double balance_interval_s = 0; // > 0: the built-in balancer samples the ranks this often
    // The generation this job was restarted from (0: a fresh start), its directory and time.
    int restarted_gen = 0;
    std::string restarted_dir;
    long long restarted_time = 0;
    // A restart's start (before its images were verified) and how long the verification took:
    // the coordinator tells when every rank runs again.
    std::chrono::steady_clock::time_point restart_began;
    double restart_verify_s = 0;
    // Prints the job's first lines ("ghostrun: job JOB", ...). A restart calls it once every
    // rank's image is verified (a refused image ends the restart with its one line instead).
    std::function<void()> announce;
    std::string me = "ghostrun"; // how ghostrun's own errors begin ("ghost" under `ghost restart`)
    // Starts a new mpirun whose ranks restart from a generation directory; returns its pid or -1.
    // `hosts` empty: placed as the job's ranks were; else rank R on hosts[R], which becomes the
    // job's placement from then on (mpirun_opts changes with it: a migration). gen_dir empty: the
    // ranks run `ghost restart-rank --receive` (a live migration; the placement changes only
    // through set_placement, once it has succeeded).
    // bind: "RANK:CPU,..." (a live migration's receivers only): the new process of RANK binds to
    // the core of that CPU on its host before its image arrives (GHOST_BIND).
    // keep: "RANK:PID,..." (`ghost migrate --keep`): those ranks keep their processes; their new
    // process is a placeholder (GHOST_KEEP, runtime/job_protocol.h).
    std::function<pid_t(const std::string &gen_dir, const std::vector<std::string> &hosts,
                        const std::string &bind, const std::string &keep)>
        relaunch;
    std::function<void(const std::vector<std::string> &hosts)> set_placement;
};

// ghostrun's exit status when `ghost checkpoint JOB --kill` stopped the job after its checkpoint
// (EX_TEMPFAIL: the job can go on with `ghost restart DIR`).
constexpr int kExitStoppedAfterCheckpoint = 75;

// Serves ranks and commands until mpirun (`child`) exits; forwards the signals a user or batch
// system sends to ghostrun; removes the socket and secret files. A failed mpirun is relaunched
// from the newest complete checkpoint while cfg.auto_restarts lasts. Returns the job's status the
// way a shell reports it, or kExitStoppedAfterCheckpoint.
int coordinator_run(coordinator_setup &s, pid_t child, const job_config &cfg);

} // namespace ghost::run
