// SPDX-License-Identifier: Apache-2.0
// The agent's lock-owner rewriting (ghost-core/agent/lock_owners.cpp) in this process: locks built
// by glibc itself (locked here, then copied with their owner id replaced by an id no thread has)
// must be found and rewritten, exactly once each; ints that merely equal an old id, locks of kinds
// that never check their owner, inconsistent look-alikes and shared file memory must be left
// alone. Not sanitized: the scan reads the whole process.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#include "ghost-core/agent/lock_owners.h"

namespace {

using ghost::agent::fix_interrupted_thread;
using ghost::agent::fix_lock_owners;
using ghost::agent::tid_change;

// Ids far from this process's own (pid_max is at most 2^22).
constexpr int32_t old_a = 0x3fff01, new_a = 0x3fff02, old_b = 0x3fff02, new_b = 0x3fff03;

int32_t own_tid() {
    return (int32_t)syscall(SYS_gettid);
}

struct mutex_view {
    uint32_t lock, count;
    int32_t owner;
    uint32_t nusers, kind;
    uint32_t spins_elision;
    uint64_t prev, next;
};
static_assert(sizeof(mutex_view) == sizeof(pthread_mutex_t));

struct rwlock_view {
    uint32_t readers, writers, wrphase_futex, writers_futex, pad3, pad4;
    int32_t cur_writer;
    uint32_t rest[7];
};
static_assert(sizeof(rwlock_view) == sizeof(pthread_rwlock_t));

// A mutex of the given kind, locked by this thread (twice if recursive), copied into *out, then
// unlocked: *out is glibc's own held state, with this thread's id replaced by `owner`. (Written in
// place: a stray copy with the old id on the stack would be found by the scan too.)
void held_mutex(mutex_view *out, int type, int protocol, int32_t owner) {
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_settype(&a, type);
    if (protocol) pthread_mutexattr_setprotocol(&a, protocol);
    pthread_mutex_t m;
    EXPECT_EQ(pthread_mutex_init(&m, &a), 0);
    EXPECT_EQ(pthread_mutex_lock(&m), 0);
    if (type == PTHREAD_MUTEX_RECURSIVE) {
        EXPECT_EQ(pthread_mutex_lock(&m), 0);
    }
    memcpy(out, &m, sizeof *out);
    if (type == PTHREAD_MUTEX_RECURSIVE) {
        EXPECT_EQ(pthread_mutex_unlock(&m), 0);
    }
    EXPECT_EQ(pthread_mutex_unlock(&m), 0);
    pthread_mutex_destroy(&m);
    pthread_mutexattr_destroy(&a);
    EXPECT_EQ(out->owner, own_tid());
    out->owner = owner;
    if ((out->lock & 0x3fffffff) == (uint32_t)own_tid())
        out->lock = (out->lock & ~0x3fffffffu) | owner;
}

void held_rwlock(rwlock_view *out, int32_t writer) {
    pthread_rwlock_t l;
    pthread_rwlock_init(&l, nullptr);
    EXPECT_EQ(pthread_rwlock_wrlock(&l), 0);
    memcpy(out, &l, sizeof *out);
    EXPECT_EQ(pthread_rwlock_unlock(&l), 0);
    pthread_rwlock_destroy(&l);
    EXPECT_EQ(out->cur_writer, own_tid());
    out->cur_writer = writer;
}

// Objects live at 8-byte aligned places in this buffer (as in a program's .bss or heap).
struct alignas(64) arena {
    mutex_view recursive, errorcheck, pi, normal, chained;
    rwlock_view rwlock, rw_read_phase;
    mutex_view no_count, linked, bad_kind;
    int32_t plain_ints[64];
};

TEST(LockOwners, RewritesHeldLocksAndNothingElse) {
    static arena a;
    held_mutex(&a.recursive, PTHREAD_MUTEX_RECURSIVE, 0, old_a);
    held_mutex(&a.errorcheck, PTHREAD_MUTEX_ERRORCHECK, 0, old_a);
    held_mutex(&a.pi, PTHREAD_MUTEX_ERRORCHECK, PTHREAD_PRIO_INHERIT, old_a);
    held_mutex(&a.normal, PTHREAD_MUTEX_NORMAL, 0, old_a);
    held_mutex(&a.chained, PTHREAD_MUTEX_RECURSIVE, 0, old_b); // old_b == new_a
    held_rwlock(&a.rwlock, old_a);
    held_rwlock(&a.rw_read_phase, old_a);
    a.rw_read_phase.readers = 8; // one reader, no writer: not write-locked
    // Look-alikes: a recursive mutex with no count, one with list links, a kind glibc never sets.
    held_mutex(&a.no_count, PTHREAD_MUTEX_RECURSIVE, 0, old_a);
    a.no_count.count = 0;
    held_mutex(&a.linked, PTHREAD_MUTEX_ERRORCHECK, 0, old_a);
    a.linked.next = (uint64_t)&a;
    held_mutex(&a.bad_kind, PTHREAD_MUTEX_ERRORCHECK, 0, old_a);
    a.bad_kind.kind |= 0x1000;
    for (int i = 0; i < 64; i++)
        a.plain_ints[i] = i % 3 == 0 ? old_a : i % 3 == 1 ? 1 : 0;

    // The same held recursive mutex in shared file memory: never written.
    FILE *f = tmpfile();
    ASSERT_NE(f, nullptr);
    ASSERT_EQ(ftruncate(fileno(f), 4096), 0);
    auto *shared =
        (mutex_view *)mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fileno(f), 0);
    ASSERT_NE(shared, MAP_FAILED);
    held_mutex(shared, PTHREAD_MUTEX_RECURSIVE, 0, old_a);

    const tid_change changes[] = {{old_b, new_b}, {old_a, new_a}};
    auto r = fix_lock_owners(changes, 2, nullptr, 0);
    EXPECT_FALSE(r.incomplete);
    EXPECT_EQ(a.recursive.owner, new_a);
    EXPECT_EQ(a.errorcheck.owner, new_a);
    EXPECT_EQ(a.pi.owner, new_a);
    EXPECT_EQ(a.pi.lock & 0x3fffffff, (uint32_t)new_a);
    EXPECT_EQ(a.rwlock.cur_writer, new_a);
    EXPECT_EQ(a.chained.owner, new_b); // rewritten once, not twice (new_a == old_b)
    EXPECT_EQ(r.mutexes, 4u);
    EXPECT_EQ(r.rwlocks, 1u);

    EXPECT_EQ(a.normal.owner, old_a);
    EXPECT_EQ(a.rw_read_phase.cur_writer, old_a);
    EXPECT_EQ(a.no_count.owner, old_a);
    EXPECT_EQ(a.linked.owner, old_a);
    EXPECT_EQ(a.bad_kind.owner, old_a);
    for (int i = 0; i < 64; i += 3)
        EXPECT_EQ(a.plain_ints[i], old_a) << i;
    EXPECT_EQ(shared->owner, old_a);
    munmap(shared, 4096);
    fclose(f);
}

// The scan reads memory in chunks that start at page boundaries: held mutexes across every page
// boundary of a 2 MiB mapping, their owner word first the first word of a page, then the last
// one before it, are found wherever a chunk happens to end.
TEST(LockOwners, LocksAcrossPageBoundaries) {
    constexpr size_t len = 2 << 20, page = 4096, pages = len / page;
    auto *mem = (unsigned char *)mmap(nullptr, len, PROT_READ | PROT_WRITE,
                                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ASSERT_NE(mem, MAP_FAILED);
    for (size_t owner_offset : {8, 16}) { // from the mutex's start to the boundary
        auto at = [&](size_t i) { return (mutex_view *)(mem + i * page - owner_offset); };
        held_mutex(at(1), PTHREAD_MUTEX_RECURSIVE, 0, old_a);
        for (size_t i = 2; i < pages; i++)
            memcpy(at(i), at(1), sizeof(mutex_view));
        const tid_change changes[] = {{old_a, new_a}};
        auto r = fix_lock_owners(changes, 1, nullptr, 0);
        EXPECT_FALSE(r.incomplete);
        EXPECT_EQ(r.mutexes, pages - 1) << "owner " << owner_offset - 8 << " bytes before a page";
        for (size_t i = 1; i < pages; i++)
            EXPECT_EQ(at(i)->owner, new_a) << "page " << i;
        memset(mem, 0, len);
    }
    munmap(mem, len);
}

TEST(LockOwners, RobustListEntries) {
    // A robust mutex as glibc leaves it on its owner's robust list: lock word = owner id (with
    // FUTEX_WAITERS), __list.__next = the list head; the head's futex offset points back to the
    // lock word. A robust mutex that is not on a list is left alone (the scan skips robust kinds).
    struct alignas(64) robust_setup {
        uint64_t head[3]; // struct robust_list_head: next, futex_offset, list_op_pending
        mutex_view listed, pending, unlisted;
    };
    static robust_setup s;
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_settype(&a, PTHREAD_MUTEX_ERRORCHECK);
    pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    pthread_mutex_t m;
    ASSERT_EQ(pthread_mutex_init(&m, &a), 0);
    ASSERT_EQ(pthread_mutex_lock(&m), 0);
    memcpy(&s.listed, &m, sizeof s.listed);
    ASSERT_EQ(pthread_mutex_unlock(&m), 0);
    pthread_mutexattr_destroy(&a);
    ASSERT_EQ(s.listed.lock, (uint32_t)own_tid());
    s.listed.lock = 0x80000000u | old_a;
    s.listed.owner = old_a;
    s.pending = s.listed;
    s.unlisted = s.listed;
    constexpr int64_t offset = -(int64_t)offsetof(mutex_view, next); // from __list.__next to __lock
    s.head[0] = (uint64_t)&s.listed.next;
    s.head[1] = (uint64_t)offset;
    s.head[2] = (uint64_t)&s.pending.next;
    s.listed.next = (uint64_t)&s.head[0];
    s.listed.prev = (uint64_t)&s.head[0];
    s.pending.next = s.pending.prev = 0;

    const tid_change changes[] = {{old_a, new_a}};
    const uint64_t heads[] = {(uint64_t)&s.head[0]};
    auto r = fix_lock_owners(changes, 1, heads, 1);
    EXPECT_EQ(r.robust, 2u);
    EXPECT_EQ(s.listed.lock, 0x80000000u | new_a);
    EXPECT_EQ(s.listed.owner, new_a);
    EXPECT_EQ(s.pending.lock, 0x80000000u | new_a);
    EXPECT_EQ(s.unlisted.lock, 0x80000000u | old_a);
    EXPECT_EQ(s.unlisted.owner, old_a);
}

TEST(LockOwners, WaitingThreadGetsItsNewId) {
    // A thread stopped in a futex wait (to be restarted) on a recursive mutex's lock word: its
    // old id in callee-saved registers and in the frames above its stack pointer becomes the new
    // one; other registers and values are left; a wait on a normal mutex changes nothing.
    static mutex_view recursive, normal;
    held_mutex(&recursive, PTHREAD_MUTEX_RECURSIVE, 0, old_b);
    held_mutex(&normal, PTHREAD_MUTEX_NORMAL, 0, old_b);
    static const unsigned char syscall_insn[2] = {0x0f, 0x05};
    alignas(16) static int32_t stack[64];
    for (auto *target : {&recursive, &normal}) {
        for (int i = 0; i < 64; i++)
            stack[i] = i % 4 == 1 ? old_a : i;
        ucontext_t uc = {};
        greg_t *g = uc.uc_mcontext.gregs;
        g[REG_RAX] = SYS_futex;
        g[REG_RIP] = (greg_t)syscall_insn;
        g[REG_RDI] = (greg_t)target;
        g[REG_RSP] = (greg_t)stack;
        g[REG_RBX] = old_a;
        g[REG_R13] = old_a;
        g[REG_RDX] = old_a; // an argument register (the futex's expected value): left alone
        fix_interrupted_thread(&uc, old_a, new_a);
        bool fixes = target == &recursive;
        EXPECT_EQ(g[REG_RBX], fixes ? new_a : old_a);
        EXPECT_EQ(g[REG_R13], fixes ? new_a : old_a);
        EXPECT_EQ(g[REG_RDX], old_a);
        for (int i = 0; i < 64; i++) {
            int32_t want = i % 4 != 1 ? i : fixes && i < 32 ? new_a : old_a; // 128-byte window
            EXPECT_EQ(stack[i], want) << i;
        }
    }
}

TEST(LockOwners, ThreadStoppedInLibcGetsItsNewId) {
    // A thread stopped while running libc code (here: at pthread_mutex_lock's first instruction)
    // may hold its id in any register; elsewhere (not libc, not a wait) nothing is changed.
    ghost::agent::lock_owners_init();
    static const unsigned char not_libc[2] = {0x90, 0x90};
    alignas(16) static int32_t stack[64];
    const void *in_libc = (const void *)&pthread_mutex_lock;
    for (const void *rip : {in_libc, (const void *)not_libc}) {
        for (int i = 0; i < 64; i++)
            stack[i] = i % 4 == 1 ? old_a : i;
        ucontext_t uc = {};
        greg_t *g = uc.uc_mcontext.gregs;
        g[REG_RIP] = (greg_t)rip;
        g[REG_RSP] = (greg_t)stack;
        g[REG_RAX] = old_a;
        g[REG_RDX] = old_a;
        g[REG_R12] = old_a;
        g[REG_RCX] = old_b;
        fix_interrupted_thread(&uc, old_a, new_a);
        bool fixes = rip == in_libc;
        EXPECT_EQ(g[REG_RAX], fixes ? new_a : old_a);
        EXPECT_EQ(g[REG_RDX], fixes ? new_a : old_a);
        EXPECT_EQ(g[REG_R12], fixes ? new_a : old_a);
        EXPECT_EQ(g[REG_RCX], old_b);
        EXPECT_EQ(g[REG_RSP], (greg_t)stack);
        for (int i = 0; i < 64; i++) {
            int32_t want = i % 4 != 1 ? i : fixes && i < 32 ? new_a : old_a;
            EXPECT_EQ(stack[i], want) << i;
        }
    }
}

} // namespace
