// SPDX-License-Identifier: Apache-2.0
// The nodes of the Slurm allocation ghostrun runs in, and which of them are still there: an
// automatic restart after a node is lost must leave it out, while Slurm keeps it in the
// allocation until SlurmdTimeout has passed (minutes by default).
#pragma once

#include <string>
#include <vector>

#include "runtime/result.h"

namespace ghost::run {

struct slurm_node {
    std::string name;     // NodeName (what SLURM_JOB_NODELIST and mpirun's --host use)
    std::string hostname; // NodeHostName
    std::string addr;     // NodeAddr (where slurmd listens)
    int port = 0;         // slurmd's port
    bool answers = false; // slurmd accepted a connection and Slurm does not say it is down
    std::string why;      // when it does not: "connection refused", "no answer in 3 s", "DOWN"...
};

// Under Slurm (SLURM_JOB_ID and SLURM_JOB_NODELIST set): every node of the job's allocation as
// `scontrol show node` describes it, each probed at once by a TCP connection to its slurmd (a
// live slurmd's kernel accepts even when slurmd is busy; a dead node refuses or says nothing)
// and by its Slurm state (DOWN, NOT_RESPONDING). Waits `timeout_ms` at most for the answers.
// An empty list outside Slurm; an error when scontrol fails or says nothing usable.
result<std::vector<slurm_node>> probe_slurm_nodes(int timeout_ms);

// The node of `nodes` a rank whose hostname is `host` ran on (by node name, NodeHostName, or
// the hostname's first label): its index, or -1.
int node_of_host(const std::vector<slurm_node> &nodes, const std::string &host);

} // namespace ghost::run
