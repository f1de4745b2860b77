// SPDX-License-Identifier: Apache-2.0
// The fast duplicate: a copy of a parked process made by fork (copy-on-write memory) instead of an
// image export and a restore. The manager parks every thread as for a checkpoint; then one parked
// application thread (the main one: the copy's pid is its new tid) forks from its park handler,
// since only an application thread has the program's descriptor table (the manager has its own).
// In the child, where that thread is alone, it fixes what fork shares but a duplicate must not,
// re-creates every other parked thread (the manager included) from its saved park point with
// clone(CLONE_VM|CLONE_THREAD|CLONE_SETTLS...), and resumes its own: from there on the copy runs
// the restore path of the agent (new tids in struct pthread, robust lists, lock owners, rseq,
// timers), exactly as a restored process does. The original resumes as soon as fork returns.
//
// Same semantics as the export+restore duplicate:
//  * fds 0-2 are those of `ghost duplicate` (sent with the request);
//  * regular files and directories are reopened (own offsets, same flags and positions), several
//    descriptors of one open file description stay one description;
//  * a pipe the process holds both ends of is a new pipe with the same size and buffered data;
//  * memory that fork would share or drop is made the copy's own: shared anonymous mappings are
//    copied into new ones, MADV_DONTFORK and MADV_WIPEONFORK regions are carried with their data
//    (the advice stays set in both processes);
//  * the copy's parent is the original (fork cannot give it another), but with exit signal 0: the
//    original gets no SIGCHLD and its wait()/waitpid(-1)/waitid(P_ALL) never see it (only a wait
//    with __WALL or __WCLONE would); the original's manager reaps it. `ghost duplicate` gets a
//    pidfd of the copy and reads its exit status from it (PIDFD_INFO_EXIT, Linux 6.15).
// Keeping the ids. The copy's threads would get new ids, and every lock word that names its
// owner by thread id (recursive and error-checking mutexes, glibc's loader lock...) held at the
// park would still name the original's: the agent then reads all the copy's memory to rewrite
// them (lock_owners.h), 0.2-1 s for 1 GiB. When `ghost duplicate` can make a pid namespace (root)
// and hands it with the request, the copy is made in it instead, under the original's pid and
// thread ids (clone3 set_tid), and nothing needs rewriting: only /proc has to show that namespace
// (a mount namespace of the copy's own with a new /proc; the host's /proc stays reachable under
// the runtime directory, so that ghost still names the copy by the pid the host knows). The copy
// then sees no parent (getppid() is 0: the original is outside its namespace), as a process
// CRIU restores in a new pid namespace. Without the namespace, or when it cannot be used, the
// copy gets new ids and the agent rewrites the lock owners.
// Anything else (sockets, ptys, devices other than null/zero/random, named pipes, pipes to other
// processes, SysV or memfd shared memory, a registered component such as the MPI layer, a main
// thread that has exited) makes the request answer FALLBACK with the reason, and `ghost
// duplicate` takes the export+restore path, which carries it or refuses it with its own reason.
#pragma once

#include <stdint.h>

#include "ghost-core/agent/agent_state.h"

namespace ghost::agent {

enum dup_phase : uint32_t { dup_idle = 0, dup_requested = 1, dup_done = 2 };

// Handed from the manager to the forking thread (in the agent's .bss, so the copy has it too).
struct dup_request {
    uint32_t phase;     // futex: dup_requested -> dup_done (set by the forker)
    int32_t forker_tid; // the thread that forks
    int32_t manager_tid;
    int32_t stdio[3];      // `ghost duplicate`'s fds 0-2, numbers in the manager's own table
    int32_t pid_namespace; // the copy's pid namespace (number in the manager's table), or -1
    char host_proc[200];   // where the copy finds the host's /proc (runtime/control.h, host_pid)
    int32_t copy_pid;      // the result: > 0 the copy runs; 0: fall back (why)
    uint8_t kept_ids;      // the copy runs under the original's pid and thread ids
    uint64_t fork_ns;      // how long the preparation and fork took in the original
    char why[200];
};

// In the forking thread's park handler, every other application thread parked (their contexts
// and the manager's saved in `st`). Returns in the original once req.copy_pid or req.why is set;
// in the copy it does not return: it resumes `self`'s saved context (ghost_context_save then
// returns 1 there) after starting the other threads from theirs.
void duplicate_fork(dup_request &req, state &st, thread_slot *self);

} // namespace ghost::agent
