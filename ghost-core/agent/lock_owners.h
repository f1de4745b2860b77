// SPDX-License-Identifier: Apache-2.0
// Lock words that name their owner by thread id, made to name the owner's new id after a restore
// in which some threads could not keep theirs (a duplicate always; a restart whose ids were
// taken). glibc stores the owner's tid in recursive, error-checking, robust, priority-inheritance
// and priority-protect mutexes (the loader's _dl_load_lock and _dl_load_write_lock are recursive
// mutexes) and in a write-locked rwlock; left alone, the owner's unlock fails with EPERM and its
// next lock deadlocks. stdio and libc-internal recursive locks store the owner's struct pthread
// address, which a restore keeps, and need nothing.
//
// Why rewriting rather than keeping the ids: a copy that keeps them needs a new PID namespace
// (privilege or a user namespace, an init process, its own /proc, control sockets no longer named
// by a unique pid, and every tool that talks to the copy by pid speaking across namespaces). The
// lock words of glibc's ABI are few and stable, and the kernel sees a robust or PI lock's owner
// only through the same word, so rewriting them leaves the process as if its threads had always
// had their new ids.
#pragma once

#include <stdint.h>

#include "ghost-core/lock_scan.h"

namespace ghost::agent {

struct tid_change {
    int32_t from, to;
};

struct lock_fix_result {
    uint32_t robust;  // robust mutexes found through the threads' robust lists
    uint32_t mutexes; // other mutexes found by the scan
    uint32_t rwlocks; // write-locked rwlocks found by the scan
    bool incomplete;  // some memory could not be listed or scanned
};

// At agent start (normal context, libc usable): records the agent's own address range, which the
// scan leaves alone.
void lock_owners_init();

// What a restorer found (lock_scan.h): the words of the memory that may hold one of `ids`, in
// address order, after searching all of what the fix would scan; and where the restorer itself
// is (left alone: it goes once the fix is done).
struct found_words {
    const uint64_t *words; // null: nothing was searched
    uint32_t count;
    lock_scan::id_span ids;
    uint64_t restorer_start, restorer_end;
};

// In a restored process, with every other thread held at its park point: rewrites the owner of
// every lock held under an old id of `changes` (each id in `from` at most once; `to` is the id
// the same thread has now). `robust_heads` are the threads' registered robust-list heads. With
// `found` (and the old ids among those it was searched for), only the words it lists are looked
// at; otherwise the memory is scanned. Only system calls and static buffers: any libc lock may be
// held.
lock_fix_result fix_lock_owners(const tid_change *changes, uint32_t count,
                                const uint64_t *robust_heads, uint32_t head_count,
                                const found_words *found = nullptr);

// In a restored thread whose id changed, from its park point, before it runs on. A thread
// stopped inside glibc may hold its id, read before the stop, in a register or its frame, and
// would store the old one as a lock's owner (or signal the old tid): a thread waiting for a mutex
// that checks its owner (stopped in the futex call the restore restarts) keeps it in a callee-
// saved register or the lock function's frame; a thread stopped while running libc code, in any
// register. The old id is replaced there (`ucontext` is the park signal's interrupted context)
// and in the 128 bytes of stack above the stack pointer (the lock functions' frames).
void fix_interrupted_thread(void *ucontext, int32_t old_tid, int32_t new_tid);

} // namespace ghost::agent
