// SPDX-License-Identifier: Apache-2.0
// The in-process agent's state block: lives in the agent's .bss, so it is part of every image. The
// exporter reads it from outside (process_vm_readv) while the process is parked; the restorer
// writes the hand-off fields into the restored copy before the threads run again. Plain data only.
#pragma once

#include <stdint.h>

#include "ghost-core/agent/process_extras.h"
#include "ghost-core/image_format.h"

namespace ghost::agent {

inline constexpr uint64_t state_magic = 0x5453544854534f47ULL; // "GOSTHTST"
inline constexpr uint32_t state_version = 7;
inline constexpr int max_threads = 1024;
inline constexpr int max_internal_fds = 8;
inline constexpr int park_signal = 63; // SIGRTMAX - 1 with glibc
// What components (ghost_agent.h) leave out of an image: an MPI rank's lower half.
inline constexpr int max_excluded_regions = 4096;
inline constexpr int max_excluded_fds = 1024;
inline constexpr int max_excluded_threads = 256;
inline constexpr int max_inherited_fds = 256;

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

// A slot is made `signalled` by the manager when it sends the park signal. The thread claims it
// (signalled -> parking) when the signal arrives; the manager cancels it (signalled -> free) when
// it gives up. Whoever changes it first decides: a park signal that finds its slot in any other
// state arrived late (after a park ended or was given up) and returns at once.
enum slot_state : uint32_t { slot_free = 0, slot_signalled = 1, slot_parked = 2, slot_parking = 3 };

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
    // The system call the thread was blocked in when it was signalled (/proc/.../syscall, read
    // by the manager just before the park signal): number, first argument and the address after
    // its `syscall` instruction; sys_nr < 0 when it was not in one.
    int64_t sys_nr;
    uint64_t sys_arg0, sys_pc;
    thread_extras extras; // scheduling and affinity
    pending_signal pending[max_pending_per_thread];
};

struct state {
    uint64_t magic;
    uint32_t version;
    uint32_t thread_count;  // slots in use during a park
    uint32_t parked;        // futex: threads that reached their park point
    uint32_t resume_gen;    // futex: bumped to let parked threads go
    uint32_t restored;      // futex: threads done with post-restore fix-ups
    uint32_t sweep_gen;     // bumped to make parked threads take signals queued to them late
    uint32_t swept;         // futex: threads that did
    uint32_t main_requeue;  // futex: 1 while the main thread has shared signals to queue again
    uint32_t restore_count; // how many times this process image has been restored
    uint64_t brk;           // sbrk(0) at park time
    image::signal_action actions[image::max_signals];
    uint64_t itimer_real[4];
    process_extras extras; // other timers, limits, ...
    uint32_t shared_pending_count;
    uint32_t thp_disabled; // PR_GET_THP_DISABLE at park time
    pending_signal shared_pending[max_pending_shared];
    int32_t internal_fds[max_internal_fds]; // the agent's own descriptors: never saved
    uint32_t internal_fd_count;
    int32_t checkpointer_pid; // the `ghost checkpoint` the agent started itself (not a child to
                              // carry), or 0 or -1
    // Copies made by fast duplicates (children with exit signal 0, the agent reaps them): not the
    // program's children either.
    int32_t copy_pids[64];
    uint32_t copy_count;
    // Written by the restorer into the restored copy:
    uint64_t restorer_start, restorer_end; // to unmap once every thread has left it
    // The words of the restored memory that may hold the threads' old ids, as the restorer found
    // them (lock_scan.h; address order), in its own memory: read by the lock fix before that is
    // unmapped. 0 when the restorer did not search it all.
    uint64_t lock_words;
    uint32_t lock_word_count;
    uint32_t lock_ids_min, lock_ids_span;
    uint32_t lock_words_pad;
    thread_slot threads[max_threads];

    // Filled during a park by the components' exclude hooks (ghost_agent.h); the exporter leaves
    // these out of the image. Meaningless outside a park.
    uint32_t excluded_region_count;
    uint32_t excluded_fd_count;
    uint32_t excluded_thread_count;
    uint32_t pad1;
    struct range {
        uint64_t start, end;
    } excluded_regions[max_excluded_regions];
    int32_t excluded_fds[max_excluded_fds];
    int32_t excluded_threads[max_excluded_threads];

    // Written by the restorer into the restored copy (0 when it had nothing to hand over): the
    // environment of the new process (a NULL-terminated char* array followed by its strings, in a
    // private mapping [env_map, env_map + env_map_len) the restorer made), and the descriptors it
    // inherited and kept (a rank's launcher fds).
    uint64_t env;
    uint64_t env_map, env_map_len;
    uint32_t restore_flags; // ghost_restore_info.flags (GHOST_RESTORED_RANK)
    uint32_t inherited_fd_count;
    int32_t inherited_fds[max_inherited_fds];

    // Written by the exporter (process_vm_writev) before it write-protects the process's memory
    // for an incremental image: the scan id of that image. Pages written since are exactly those
    // the next image must store, but only if its parent is the image of this scan (an export that
    // failed after its scan leaves an id no image on disk has).
    uint64_t track_scan_id;
};

} // namespace ghost::agent
