// SPDX-License-Identifier: Apache-2.0
// The `ghost` side of the control protocol (runtime/control.h): parks a managed process so that it
// can be exported from outside, and lets it go again.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>

#include "runtime/result.h"

namespace ghost::agent {
struct state;
}

namespace ghost::core {

class parked_process {
  public:
    // Connects to the agent of `pid` and parks every thread. A process without a ghost agent, or
    // of another user, is refused with a one-line reason.
    static result<parked_process> park(pid_t pid, int timeout_ms = 15000);
    // The same connection without the park (a pre-copy: the agent's state and its write
    // tracking descriptor only; the process runs on). resume() just closes it.
    static result<parked_process> attach_running(pid_t pid, int timeout_ms = 15000);
    bool parked() const { return parked_; }
    parked_process(parked_process &&other) noexcept;
    parked_process &operator=(parked_process &&) = delete;
    ~parked_process(); // resumes if still parked
    result<void> resume();
    // Kills the process without letting it run again (checkpoint --kill).
    void kill_now();
    // The process's own userfaultfd for write tracking (made by its agent, which keeps it open so
    // that the tracking lasts from one checkpoint to the next): registering ranges on it and
    // scanning them applies to the process's memory, not the caller's. The caller closes it.
    result<int> tracking_fd() const;

    pid_t pid() const { return pid_; }
    uint64_t state_address() const { return state_; }
    uint32_t threads() const { return threads_; }

  private:
    parked_process(pid_t pid, int conn, uint64_t state, uint32_t threads, bool parked = true)
        : pid_(pid), conn_(conn), state_(state), threads_(threads), parked_(parked) {}
    pid_t pid_;
    int conn_;
    uint64_t state_;
    uint32_t threads_;
    bool parked_;
};

// The agent's state in a process it parks (its magic and version checked). Of its thread slots,
// most of it (1.5 MB), only those in use (below thread_count) are read: the others hold nothing.
result<std::unique_ptr<agent::state>> read_agent_state(const parked_process &p);

// A fast duplicate (ghost-core/agent/fast_duplicate.h): the agent of `pid` parks it, forks the
// copy and resumes it; the copy's fds 0-2 are the caller's. Either the copy runs (`copy`, and
// `pidfd` to follow it: the caller closes it) or `fallback` says why the export+restore path must
// make this copy. An error when the process cannot be parked at all.
struct fast_duplicate {
    pid_t copy = 0;
    int pidfd = -1;
    double park_s = 0, fork_s = 0; // how long the original was parked; its fork
    bool kept_ids = false;         // the copy runs under the original's pid and thread ids
    std::string fallback;
};
// keep_ids: in a pid namespace of its own under the original's ids, where that can be made.
result<fast_duplicate> request_fast_duplicate(pid_t pid, bool keep_ids, int timeout_ms = 15000);

// Waits until the agent of a just restored `pid` answers on its control socket again (it listens
// only after its components' rebuild, some time after the restorer's verdict), so that whoever
// is told "restored" can checkpoint it at once. False when it does not within timeout_ms or the
// process is gone.
bool wait_agent_ready(pid_t pid, int timeout_ms);

} // namespace ghost::core
