// SPDX-License-Identifier: Apache-2.0
// Process and thread state that lives in the kernel, that a program set and can read back, and that
// the image carries in the agent's state block: interval timers besides ITIMER_REAL, POSIX timers
// (same ids, notification, value and remaining time), resource limits, oom_score_adj, membarrier
// registrations, whether the process is dumpable and a child subreaper, its mlock()ed ranges; per
// thread: scheduling policy, priority and nice value, CPU affinity (within the affinity the
// restoring process was given), timer slack, keep-capabilities, execution domain (personality).
//
// capture_* run while the process is parked (the manager for the process, each thread in its park
// handler); restore_* run in a restored process before any thread returns to the program. Both
// use system calls and stack buffers only.
#pragma once

#include <stdint.h>

namespace ghost::agent {

struct posix_timer {
    int32_t id;
    int32_t clock;
    int32_t notify; // SIGEV_SIGNAL, SIGEV_NONE or SIGEV_THREAD_ID
    int32_t signo;
    int32_t thread_slot; // SIGEV_THREAD_ID: index of the target thread's slot, else -1
    uint32_t pad;
    uint64_t value;       // sigev_value
    int64_t interval[2];  // tv_sec, tv_nsec
    int64_t remaining[2]; // tv_sec, tv_nsec; zero: disarmed
};
inline constexpr int max_posix_timers = 64;
inline constexpr int rlimit_count = 16; // RLIM_NLIMITS
inline constexpr int max_locked_ranges = 64;

struct process_extras {
    uint64_t itimer_virtual[4], itimer_prof[4]; // interval sec/usec, value sec/usec
    uint64_t rlimits[rlimit_count][2];          // soft, hard
    int32_t oom_score_adj;
    uint32_t membarrier_registrations; // MEMBARRIER_CMD_GET_REGISTRATIONS
    uint32_t posix_timer_count;
    int32_t dumpable;        // PR_GET_DUMPABLE
    int32_t child_subreaper; // PR_GET_CHILD_SUBREAPER
    uint32_t locked_count;   // mlock()ed ranges (VmFlags "lo"), at most max_locked_ranges
    uint64_t locked[max_locked_ranges][2]; // start, end
    posix_timer timers[max_posix_timers];
};

struct thread_extras {
    uint8_t sched_attr[56]; // struct sched_attr (SCHED_ATTR_SIZE_VER1)
    uint64_t affinity[16];  // CPU mask, 1024 CPUs
    uint32_t affinity_bytes;
    int32_t keepcaps;     // PR_GET_KEEPCAPS
    uint64_t timer_slack; // PR_GET_TIMERSLACK (ns)
    uint32_t personality; // (per thread, as the kernel keeps it)
    uint32_t pad;
};

struct state;
struct thread_slot;

// Returns nullptr, or why the process cannot be parked as it is (its timers cannot be carried).
const char *capture_process_extras(state &st);
void restore_process_extras(const state &st);
void capture_thread_extras(thread_extras &t);
void restore_thread_extras(const thread_extras &t);

} // namespace ghost::agent
