// SPDX-License-Identifier: Apache-2.0
// The job coordinator: lives in ghostrun, next to the mpirun it started. Ranks reach it over TCP
// (authenticated with the job's secret), the `ghost` command over a Unix socket in the owner's
// private runtime directory. Protocols: runtime/job_protocol.h.
#pragma once

#include <sys/types.h>

#include <string>

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

// Serves ranks and commands until mpirun (`child`) exits; forwards the signals a user or batch
// system sends to ghostrun; removes the socket and secret files. Returns mpirun's status the way a
// shell reports it.
int coordinator_run(coordinator_setup &s, pid_t child, const std::string &program);

} // namespace ghost::run
