// SPDX-License-Identifier: Apache-2.0
// The in-process agent's state block: lives in the agent's .bss, so it is part of every image. The
// exporter reads it from outside (process_vm_readv) while the process is parked; the restorer
// writes the hand-off fields into the restored copy before the threads run again. Plain data only.
#pragma once

#include <stdint.h>

#include "ghost-core/image_format.h"

namespace ghost::agent {

inline constexpr uint64_t state_magic = 0x5453544854534f47ULL; // "GOSTHTST"
inline constexpr uint32_t state_version = 1;
inline constexpr int max_threads = 1024;
inline constexpr int max_internal_fds = 8;
inline constexpr int park_signal = 63; // SIGRTMAX - 1 with glibc

// Callee-saved state at a function call boundary (System V x86_64): what ghost_context_save stores
// and the restorer loads to resume a thread at its park point. Layout is used from assembly.
struct saved_context {
    uint64_t rbx, rbp, r12, r13, r14, r15, rsp, rip; // offsets 0..56
    uint32_t mxcsr;                                  // 64
    uint32_t fpucw;                                  // 68
};
static_assert(sizeof(saved_context) == 72);

// A pending signal taken off the kernel's queue at park time and queued again, siginfo and all,
// before the thread runs again (in this process or in a restored one).
struct pending_signal {
    int32_t signo;
    uint32_t flags;    // pending_from_self
    uint8_t info[128]; // siginfo_t
};
// Sent by the process to itself (kill(getpid()), raise, sigqueue): in a copy with another pid,
// it was sent by the copy, and si_pid says so.
inline constexpr uint32_t pending_from_self = 1;
inline constexpr int max_pending_per_thread = 8;
inline constexpr int max_pending_shared = 32;

enum slot_state : uint32_t { slot_free = 0, slot_signalled = 1, slot_parked = 2 };

struct thread_slot {
    int32_t tid;
    uint32_t state; // slot_state
    uint32_t flags; // image::thread_main, image::thread_manager
    uint32_t rseq_registered;
    uint64_t fs_base;
    uint64_t robust_head, robust_len;
    uint64_t clear_child_tid;
    saved_context ctx;
    uint32_t pending_count;
    int32_t old_tid; // after a restore: the tid this thread had before it (tid is the new one)
    char name[16];   // the thread's comm (PR_GET_NAME): ps and top show it
    pending_signal pending[max_pending_per_thread];
};

struct state {
    uint64_t magic;
    uint32_t version;
    uint32_t thread_count;  // slots in use during a park
    uint32_t parked;        // futex: threads that reached their park point
    uint32_t resume_gen;    // futex: bumped to let parked threads go
    uint32_t restored;      // futex: threads done with post-restore fix-ups
    uint32_t restore_count; // how many times this process image has been restored
    uint64_t brk;           // sbrk(0) at park time
    image::signal_action actions[image::max_signals];
    uint64_t itimer_real[4];
    uint32_t shared_pending_count;
    uint32_t pad0;
    pending_signal shared_pending[max_pending_shared];
    int32_t internal_fds[max_internal_fds]; // the agent's own descriptors: never saved
    uint32_t internal_fd_count;
    uint32_t pad;
    // Written by the restorer into the restored copy:
    uint64_t restorer_start, restorer_end; // to unmap once every thread has left it
    thread_slot threads[max_threads];
};

} // namespace ghost::agent
