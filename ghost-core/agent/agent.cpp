// SPDX-License-Identifier: Apache-2.0
// libghost.so: the agent that `ghost launch` preloads into a process. It owns a manager thread that
// listens on the process's control socket. On PARK it stops every other thread at a park point
// inside a signal handler (their interrupted registers, FP/AVX state included, stay in the signal
// frame on their own stack; "PARK UNBLOCK": the requester lets threads that block the park
// signal take it, see ask_unblock), records what only the process itself can read (signal actions,
// brk, robust lists, rseq, timers) in its state block and answers PARKED. The exporter then reads
// the whole process from outside. RESUME (or the client going away) lets the threads go.
//
// After a restore the same code runs again from the park points, in a new process: each thread
// fixes what the kernel keeps per task (tid, robust list, clear_child_tid, rseq), the manager
// re-creates the control socket and unmaps the restorer, and everybody returns from the handler
// into the application.
//
// Hazard: once one thread is parked it may hold any libc lock (malloc, stdio, the loader), so the
// manager only uses system calls and stack buffers between parking and resuming.
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <ucontext.h>
#include <time.h>
#include <unistd.h>

#include "ghost-core/agent/agent_state.h"
#include "ghost-core/agent/process_extras.h"
#include "ghost-core/agent/components.h"
#include "ghost-core/agent/fast_duplicate.h"
#include "ghost-core/agent/ghost_agent.h"
#include "ghost-core/agent/lock_owners.h"
#include "runtime/control.h"
#include "runtime/raw_syscall.h"
#include "runtime/uapi.h"

extern "C" int ghost_context_save(ghost::agent::saved_context *ctx) __attribute__((returns_twice));

extern "C" {
extern const ptrdiff_t __rseq_offset __attribute__((weak));
extern const unsigned int __rseq_size __attribute__((weak));
}

// The block the exporter and restorer work on. Exported so that tools can find it by name too.
extern "C" __attribute__((visibility("default"))) ghost::agent::state ghost_agent_state;
ghost::agent::state ghost_agent_state;

namespace {

using ghost::agent::thread_slot;
namespace sys = ghost::sys;

using ghost::agent::park_signal;
int g_park_timeout_ms = 10000; // GHOST_PARK_TIMEOUT_MS overrides it

// The manager's descriptors live in a descriptor table of its own (unshare(CLONE_FILES)): the
// program can neither see nor close nor replace them, and its own numbers are those it would get
// without ghost. Without a table of its own (unshare refused), they sit high (high_fd) and are
// listed in the state block so that the exporter leaves them out.
bool g_private_files = false;
int g_track_fd = -1; // the userfaultfd of write tracking (send_tracking_fd)
int g_listen_fd = -1;
int g_manager_tid = 0;          // 0 until the manager runs
uint32_t g_manager_ready = 0;   // futex: 1 serving, 2 could not start
uint32_t g_trigger_pending = 0; // the trigger signal came; the manager spawns a checkpoint
int g_tid_offset = -1;          // offset of struct pthread's tid from the thread pointer
int g_trigger_signal = SIGUSR2;
pid_t g_spawned_checkpoint = -1;
// Our end of a standing-by checkpointer's go socket (GHOST_CHECKPOINT_STANDBY), or -1.
int g_standby_go = -1;
// The exit status of the last checkpointer started by spawn_image_checkpoint: whoever reaps it
// (the manager, or a thread in ghost_agent_checkpoint_wait) stores it and then bumps
// g_ckpt_reaped to the request's serial. -1: reaped by somebody else (SIGCHLD ignored).
uint32_t g_ckpt_serial = 0, g_ckpt_reaped = 0, g_ckpt_waiting = 0;
int g_ckpt_status = -1;
uint32_t g_ckpt_restore_count = 0; // st.restore_count when it was requested
char g_ckpt_image[4096];
char g_socket_path[128];
char g_ckpt_dir[4096];
char g_ghost_bin[4096];
char g_exe_path[4096]; // /proc/self/exe at start

ghost::agent::state &st = ghost_agent_state;

void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void reap_checkpointer(bool block);
int raw_gettid();

void say(const char *fmt, ...) {
    char buf[512];
    int n = snprintf(buf, sizeof buf, "ghost-agent[%d]: ", (int)sys::call(SYS_getpid));
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(buf + n, sizeof buf - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (size_t)(m < 0 ? 0 : m);
    if (len > sizeof buf - 2) len = sizeof buf - 2;
    buf[len++] = '\n';
    // The manager's own table has no stderr: it writes to the program's.
    int fd = 2;
    if (g_private_files && raw_gettid() == g_manager_tid)
        fd =
            (int)sys::call(SYS_open, "/proc/self/fd/2", O_WRONLY | O_APPEND | O_CLOEXEC | O_NOCTTY);
    if (fd >= 0) (void)!write(fd, buf, len);
    if (fd != 2 && fd >= 0) sys::call(SYS_close, fd);
}

long futex(uint32_t *addr, int op, uint32_t val, const struct timespec *timeout) {
    return sys::call(SYS_futex, addr, op, val, timeout, 0, 0);
}

void futex_wake_all(uint32_t *addr) {
    futex(addr, FUTEX_WAKE, INT32_MAX, nullptr);
}

uint32_t load(uint32_t *p) {
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

int raw_gettid() {
    return (int)sys::call(SYS_gettid);
}

uint64_t thread_pointer() {
    uint64_t fs;
    __asm__ volatile("mov %%fs:0, %0" : "=r"(fs)); // tcbhead_t.tcb points to itself on x86_64
    return fs;
}

// A slot's tid and state change together: a late park signal must not claim a slot that was
// given to another thread meanwhile.
typedef uint64_t __attribute__((may_alias)) slot_word;
static_assert(offsetof(thread_slot, tid) == 0 && offsetof(thread_slot, state) == 4);

uint64_t make_slot_word(int tid, uint32_t state) {
    return (uint64_t)state << 32 | (uint32_t)tid;
}

bool move_slot(thread_slot *slot, int tid, uint32_t from, uint32_t to) {
    uint64_t expected = make_slot_word(tid, from);
    return __atomic_compare_exchange_n((slot_word *)slot, &expected, make_slot_word(tid, to), false,
                                       __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}

// Takes back a slot whose thread has not claimed it yet; false if the thread was first.
bool cancel_slot(thread_slot &t) {
    return move_slot(&t, t.tid, ghost::agent::slot_signalled, ghost::agent::slot_free);
}

thread_slot *find_slot(int tid) {
    for (uint32_t i = 0; i < st.thread_count; i++)
        if (st.threads[i].tid == tid) return &st.threads[i];
    return nullptr;
}

// What the kernel keeps per task and the image cannot carry in memory.
void record_task_state(thread_slot *slot) {
    slot->fs_base = thread_pointer();
    long len = 0;
    void *head = nullptr;
    sys::call(SYS_get_robust_list, 0, &head, &len);
    slot->robust_head = (uint64_t)head;
    slot->robust_len = (uint64_t)len;
    uint64_t tid_address = 0;
    sys::call(SYS_prctl, PR_GET_TID_ADDRESS, &tid_address, 0, 0, 0);
    sys::call(SYS_prctl, PR_GET_NAME, slot->name, 0, 0, 0);
    slot->clear_child_tid = tid_address;
    ghost::agent::capture_thread_extras(slot->extras);
    slot->rseq_registered = 0;
    if (&__rseq_size && __rseq_size > 0) {
        // struct rseq: cpu_id_start, cpu_id; a negative cpu_id means registration failed or never
        // ran
        auto *rseq = (volatile int32_t *)(slot->fs_base + __rseq_offset);
        slot->rseq_registered = rseq[1] >= 0;
    }
}

// In a restored process: re-establish the per-task kernel state of the calling thread.
void fix_task_state(thread_slot *slot) {
    int tid = raw_gettid();
    slot->old_tid = slot->tid;
    if (tid != slot->tid) {
        // The kernel gave another tid (the old one was taken): glibc caches it in struct pthread.
        if (g_tid_offset >= 0) *(volatile int32_t *)(slot->fs_base + g_tid_offset) = tid;
        slot->tid = tid;
    }
    if (slot->clear_child_tid) sys::call(SYS_set_tid_address, slot->clear_child_tid);
    sys::call(SYS_prctl, PR_SET_NAME, slot->name, 0, 0, 0); // else every thread is "ghost-restart"
    if (slot->robust_head) sys::call(SYS_set_robust_list, slot->robust_head, slot->robust_len);
    ghost::agent::restore_thread_extras(slot->extras);
    if (slot->rseq_registered) {
        // glibc registers the 32-byte struct rseq even though it exports __rseq_size = 20.
        // EBUSY: still registered there (the thread that forked a fast duplicate keeps it).
        long r = sys::call(SYS_rseq, slot->fs_base + __rseq_offset, 32, 0, RSEQ_SIG);
        if (sys::failed(r) && r != -EBUSY)
            ((volatile int32_t *)(slot->fs_base + __rseq_offset))[1] = -2;
    }
}

// Pending signals of one kind ("SigPnd:" this thread's, "ShdPnd:" the process's) from /proc, read
// with raw system calls.
uint64_t pending_mask(const char *field) {
    int fd = (int)sys::call(SYS_open, "/proc/thread-self/status", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    char buf[4096];
    long n = sys::call(SYS_read, fd, buf, sizeof buf - 1);
    sys::call(SYS_close, fd);
    if (n <= 0) return 0;
    buf[n] = 0;
    const char *at = strstr(buf, field);
    if (!at) return 0;
    uint64_t mask = strtoull(at + strlen(field), nullptr, 16);
    return mask & ~(1ULL << (park_signal - 1));
}

// Takes pending signals off the kernel's queues into `out` (siginfo included), so that the image
// carries them; they are queued again by requeue() before the thread runs on.
uint32_t take_pending(uint64_t mask, ghost::agent::pending_signal *out, uint32_t max) {
    uint32_t n = 0;
    if (!mask) return 0;
    long self = sys::call(SYS_getpid);
    uint64_t set = mask;
    struct timespec zero = {0, 0};
    while (n < max) {
        siginfo_t info;
        long sig = sys::call(SYS_rt_sigtimedwait, &set, &info, &zero, 8);
        if (sig <= 0) break;
        out[n].signo = (int32_t)sig;
        out[n].flags =
            info.si_code <= 0 && info.si_pid == self ? ghost::agent::pending_from_self : 0;
        memcpy(out[n].info, &info, sizeof out[n].info);
        n++;
    }
    return n;
}

void requeue(const ghost::agent::pending_signal *p, uint32_t n, int tid) {
    long pid = sys::call(SYS_getpid);
    for (uint32_t i = 0; i < n; i++) {
        siginfo_t info;
        memcpy(&info, p[i].info, sizeof info);
        if (p[i].flags & ghost::agent::pending_from_self) info.si_pid = (pid_t)pid;
        if (tid > 0)
            sys::call(SYS_rt_tgsigqueueinfo, pid, tid, p[i].signo, &info);
        else
            sys::call(SYS_rt_sigqueueinfo, pid, p[i].signo, &info);
    }
}

// What the thread is blocked in, from /proc/self/task/TID/syscall ("NR ARG0..ARG5 SP PC", or
// "running"), read right before it is signalled.
void read_blocked_syscall(thread_slot *slot) {
    slot->sys_nr = -1;
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/self/task/%d/syscall", slot->tid);
    int fd = (int)sys::call(SYS_open, path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    long n = sys::call(SYS_read, fd, buf, sizeof buf - 1);
    sys::call(SYS_close, fd);
    if (n <= 0 || buf[0] < '0' || buf[0] > '9') return;
    buf[n] = 0;
    uint64_t field[9];
    char *at = buf;
    for (uint64_t &f : field) {
        char *end = nullptr;
        f = strtoull(at, &end, 0);
        if (end == at) return;
        at = end;
    }
    slot->sys_nr = (int64_t)field[0];
    slot->sys_arg0 = field[1];
    slot->sys_pc = field[8];
}

// The kernel ends some blocking calls with EINTR whenever a handler runs, SA_RESTART or not
// (sleeps, waits with timeouts, poll/select/epoll, sigtimedwait, pause, sigsuspend). The park
// signal is no event of the program's: when it cut such a call short, the thread's saved context
// is set to issue the same call again on return (rip back onto the `syscall` instruction, rax =
// its number; the argument registers are intact). Calls that the kernel updates in place resume
// for the remaining time (select, pselect6, ppoll; nanosleep and relative clock_nanosleep through
// their rem argument when given); the others wait their whole timeout again, which waiting calls
// allow (a restored process resumes after an unknown delay anyway). The context is on the
// thread's stack, so a restored copy issues the call again too. The condition (rax = -EINTR at
// the very address the thread was blocked at) cannot be met by an EINTR the program already had.
// The immediate of the last `mov $imm32, %eax` (b8 imm32, no REX prefix) among the 16 bytes before
// the `syscall` at `at`, if it is the number of a call that resume_interrupted_syscall issues
// again; -1 otherwise. Stays on the syscall's page (the page before may be unmapped).
int64_t syscall_number_before(const unsigned char *at) {
    static const uint32_t waits[] = {
        SYS_nanosleep,   SYS_clock_nanosleep, SYS_futex,    SYS_poll,
        SYS_ppoll,       SYS_select,          SYS_pselect6, SYS_epoll_wait,
        SYS_epoll_pwait, SYS_rt_sigtimedwait, SYS_pause,    SYS_rt_sigsuspend};
    uint64_t page = (uint64_t)at & ~4095ULL;
    for (int back = 5; back <= 16 && (uint64_t)(at - back - 1) >= page; back++) {
        const unsigned char *mov = at - back;
        if (mov[0] != 0xb8 || (mov[-1] & 0xf0) == 0x40) continue;
        uint32_t imm;
        memcpy(&imm, mov + 1, sizeof imm);
        for (uint32_t w : waits)
            if (imm == w) return imm;
        return -1; // the nearest such move loads another number
    }
    return -1;
}

// The system call the manager saw a thread blocked in before the park (nr < 0: none, or not
// looked at: the trigger signal's handler).
struct seen_call {
    int64_t nr;
    uint64_t arg0, pc;
};

seen_call seen_by_manager(const thread_slot *slot) {
    return {slot->sys_nr, slot->sys_arg0, slot->sys_pc};
}

// What resume_interrupted_syscall changed in the context, to undo when the call is to end with
// EINTR after all (end_call_for_signal).
struct reissued_call {
    bool reissued = false;
    greg_t rdi = 0, rdx = 0;
};

reissued_call resume_interrupted_syscall(const seen_call &seen, ucontext_t *uc) {
    greg_t *r = uc->uc_mcontext.gregs;
    if (r[REG_RAX] != -EINTR) return {};
    if (((const unsigned char *)r[REG_RIP])[-2] != 0x0f ||
        ((const unsigned char *)r[REG_RIP])[-1] != 0x05)
        return {}; // not after a `syscall` instruction
    int64_t nr = -1;
    if (seen.nr >= 0 && (uint64_t)r[REG_RIP] == seen.pc && (uint64_t)r[REG_RDI] == seen.arg0) {
        nr = seen.nr;
    } else if (seen.nr < 0) {
        // Running when the manager looked, blocked when the signal came: the number is known
        // when the call was made by `mov $NR, %eax` shortly before the `syscall`, as glibc's
        // wrappers do (directly before it, or with the argument moves in between).
        nr = syscall_number_before((const unsigned char *)r[REG_RIP] - 2);
    }
    // restart_syscall: the call was cut short before by a stop or a signal without a handler,
    // and the kernel went on with it through its restart block, which a restored process does
    // not have: the call itself is issued again (its arguments are still in their registers).
    if (nr == SYS_restart_syscall)
        nr = syscall_number_before((const unsigned char *)r[REG_RIP] - 2);
    const reissued_call reissued = {true, r[REG_RDI], r[REG_RDX]};
    switch (nr) {
    case SYS_nanosleep:
        if (r[REG_RSI]) r[REG_RDI] = r[REG_RSI]; // the kernel wrote the remaining time there
        break;
    case SYS_clock_nanosleep:
        if (!(r[REG_RSI] & TIMER_ABSTIME) && r[REG_R10]) r[REG_RDX] = r[REG_R10];
        break;
    case SYS_futex: {
        int cmd = (int)(r[REG_RSI] & FUTEX_CMD_MASK);
        if (cmd != FUTEX_WAIT && cmd != FUTEX_WAIT_BITSET) return {};
        break;
    }
    case SYS_poll:
    case SYS_ppoll:
    case SYS_select:
    case SYS_pselect6:
    case SYS_epoll_wait:
    case SYS_epoll_pwait:
    case SYS_rt_sigtimedwait:
    case SYS_pause:
    case SYS_rt_sigsuspend:
        break;
    default:
        return {};
    }
    r[REG_RAX] = (greg_t)nr;
    r[REG_RIP] -= 2;
    return reissued;
}

void trigger_handler(int, siginfo_t *, void *);

// The park is no event of the program's, but a signal of the program's that came meanwhile (or
// was pending when the park signal overtook it) is: the blocking call it came for must end as
// it would have. When a handler of the program's is to run as soon as the thread returns (a
// signal pending here that the interrupted context does not block), the call ends with EINTR:
//  - a call re-issued by resume_interrupted_syscall (one the kernel ends with EINTR whenever a
//    handler runs) keeps the EINTR the park gave it;
//  - a call the kernel restarted for the park signal (its handler has SA_RESTART: rip back on
//    the `syscall`, rax its number), seen blocked in it by the manager, ends with EINTR if a
//    pending signal's handler has no SA_RESTART, as the kernel would have ended it.
// Otherwise the handler would run and the call be issued again, waiting for a signal that already
// came (read of an empty pipe, pause, sigsuspend: for ever).
void end_call_for_signal(const seen_call &seen, ucontext_t *uc, const reissued_call &note) {
    uint64_t blocked;
    memcpy(&blocked, &uc->uc_sigmask, sizeof blocked);
    // Every signal is blocked in the park and trigger handlers: rt_sigpending gives them all.
    uint64_t pending = 0;
    sys::call(SYS_rt_sigpending, &pending, sizeof pending);
    uint64_t deliverable = pending & ~blocked & ~(1ULL << (park_signal - 1));
    bool handled = false, restarts = true;
    for (int sig = 1; deliverable && sig <= 64; sig++) {
        if (!(deliverable >> (sig - 1) & 1)) continue;
        ghost::uapi::kernel_sigaction ka = {};
        if (sys::failed(sys::call(SYS_rt_sigaction, sig, nullptr, &ka, 8))) continue;
        if (ka.handler == (uint64_t)SIG_DFL || ka.handler == (uint64_t)SIG_IGN ||
            ka.handler == (uint64_t)&trigger_handler) // ghost's own, no event of the program's
            continue;
        handled = true;
        if (!(ka.flags & SA_RESTART)) restarts = false;
    }
    if (!handled) return;
    greg_t *r = uc->uc_mcontext.gregs;
    if (note.reissued) {
        r[REG_RIP] += 2;
        r[REG_RAX] = -EINTR;
        r[REG_RDI] = note.rdi;
        r[REG_RDX] = note.rdx;
        return;
    }
    if (restarts || seen.nr < 0 || r[REG_RAX] != seen.nr || (uint64_t)r[REG_RIP] + 2 != seen.pc)
        return;
    const unsigned char *at = (const unsigned char *)r[REG_RIP];
    if (at[0] != 0x0f || at[1] != 0x05) return;
    switch (seen.nr) { // restarted whatever the handler (ERESTARTNOINTR)
    case SYS_clone:
    case SYS_clone3:
    case SYS_fork:
    case SYS_vfork:
    case SYS_execve:
    case SYS_execveat:
        return;
    }
    r[REG_RIP] += 2;
    r[REG_RAX] = -EINTR;
}

ghost::agent::dup_request g_dup; // a fast duplicate under way (manager -> forking thread)

// Threads that block the park signal (a thread that waits for signals with sigwait, glibc's
// helper thread of SIGEV_THREAD timers: they block every signal) would never park. A requester
// that can trace the process (`ghost checkpoint`, "PARK UNBLOCK") is asked to stop such a thread
// while the park signal is still pending on it (so it has not taken it), take that one bit out
// of its mask and tell the mask it found; the thread then takes the signal, and its park handler
// puts that mask back into the interrupted context: the thread resumes with it, or is restored
// with it, as if nothing had happened (see ask_unblock).
struct mask_override {
    int32_t tid; // 0: used
    uint64_t mask;
};
constexpr int max_overrides = 64;
mask_override g_overrides[max_overrides];
uint32_t g_override_count; // written by the manager before the thread can take its signal

void apply_mask_override(int tid, ucontext_t *uc) {
    uint32_t n = __atomic_load_n(&g_override_count, __ATOMIC_ACQUIRE);
    for (uint32_t i = 0; i < n; i++)
        if (g_overrides[i].tid == tid) {
            memcpy(&uc->uc_sigmask, &g_overrides[i].mask, sizeof g_overrides[i].mask);
            g_overrides[i].tid = 0; // once: a late park signal finds the thread's own mask
            return;
        }
}

// A signalled thread that a component claims (ghost_agent.h thread_state) is not parked.
int g_busy_tid = 0; // an application thread inside a component: the park fails

void leave_park(int claim) {
    int tid = raw_gettid();
    thread_slot *slot = find_slot(tid);
    if (slot) __atomic_store_n(&slot->state, (uint32_t)ghost::agent::slot_free, __ATOMIC_RELEASE);
    if (claim == GHOST_THREAD_BUSY) __atomic_store_n(&g_busy_tid, tid, __ATOMIC_RELEASE);
    futex_wake_all(&st.parked);
}

void park_handler(int, siginfo_t *, void *ucontext) {
    // First, before any TLS access: the thread may run on a component's TLS (an MPI call).
    int claim = ghost::agent::components_thread_state();
    if (claim == GHOST_THREAD_OWN) {
        // A component's own thread that takes signals: it leaves this handler blocking every
        // signal (the two glibc keeps for itself aside), so that neither the next park nor a
        // signal of the program's lands on it again.
        uint64_t all = ~((1ULL << (32 - 1)) | (1ULL << (33 - 1)));
        memcpy(&((ucontext_t *)ucontext)->uc_sigmask, &all, sizeof all);
    }
    if (claim != GHOST_THREAD_APP) return leave_park(claim);
    int saved_errno = errno;
    thread_slot *volatile slot = find_slot(raw_gettid());
    if (!slot) return; // not part of this park: a thread born after the scan is found next round
    // Read before the claim: if the claim wins, the manager has not given up on this slot, so the
    // generation it bumps to let the threads go is still ahead.
    volatile uint32_t gen = load(&st.resume_gen);
    if (!move_slot(slot, raw_gettid(), ghost::agent::slot_signalled, ghost::agent::slot_parking))
        return; // a late park signal: its park is over or was given up (the thread blocked it)
    apply_mask_override(raw_gettid(), (ucontext_t *)ucontext);
    const seen_call seen = seen_by_manager(slot);
    const reissued_call reissued = resume_interrupted_syscall(seen, (ucontext_t *)ucontext);
    record_task_state(slot);
    // This thread's own queue, and the process-wide signals it does not block: the park signal
    // only overtook them (the kernel serves a thread's own queue first), they were about to be
    // delivered here, so here they are queued again. The manager takes the rest of the
    // process-wide queue.
    uint64_t interrupted_mask;
    memcpy(&interrupted_mask, &((ucontext_t *)ucontext)->uc_sigmask, sizeof interrupted_mask);
    uint64_t shared = pending_mask("ShdPnd:");
    uint64_t own = (pending_mask("SigPnd:") & ~shared) | (shared & ~interrupted_mask);
    slot->pending_count = take_pending(own, slot->pending, ghost::agent::max_pending_per_thread);
    void *volatile interrupted = ucontext;
    volatile uint32_t sweep = load(&st.sweep_gen);
    if (ghost_context_save(&slot->ctx) == 0) {
        __atomic_store_n(&slot->state, (uint32_t)ghost::agent::slot_parked, __ATOMIC_RELEASE);
        __atomic_add_fetch(&st.parked, 1, __ATOMIC_ACQ_REL);
        futex_wake_all(&st.parked);
    } else {
        fix_task_state(slot);
        if (g_tid_offset >= 0) // see fix_lock_owners_after_restore
            ghost::agent::fix_interrupted_thread(interrupted, slot->old_tid, slot->tid);
        ghost::agent::components_thread_after_restore();
        __atomic_add_fetch(&st.restored, 1, __ATOMIC_ACQ_REL);
        futex_wake_all(&st.restored);
    }
    while (load(&st.resume_gen) == gen) {
        // A fast duplicate names the thread that forks (fast_duplicate.h); the manager wakes
        // the parked threads until it has answered.
        if (load(&g_dup.phase) == ghost::agent::dup_requested &&
            __atomic_load_n(&g_dup.forker_tid, __ATOMIC_ACQUIRE) == raw_gettid()) {
            ghost::agent::duplicate_fork(g_dup, st, slot);
            __atomic_store_n(&g_dup.phase, (uint32_t)ghost::agent::dup_done, __ATOMIC_RELEASE);
            futex_wake_all(&g_dup.phase);
            continue;
        }
        if (uint32_t now = load(&st.sweep_gen); now != sweep) {
            // Signals another thread queued to this one after it had taken its own (sent
            // before that thread parked): taken too, or a checkpoint would lose them.
            sweep = now;
            uint32_t n = slot->pending_count;
            slot->pending_count =
                n + take_pending(pending_mask("SigPnd:"), slot->pending + n,
                                 (uint32_t)ghost::agent::max_pending_per_thread - n);
            __atomic_add_fetch(&st.swept, 1, __ATOMIC_ACQ_REL);
            futex_wake_all(&st.swept);
            continue;
        }
        futex(&st.resume_gen, FUTEX_WAIT, gen, nullptr);
    }
    // Every signal is blocked in this handler: they wait for the mask the frame gives back.
    requeue(slot->pending, slot->pending_count, raw_gettid());
    if ((slot->flags & ghost::image::thread_main) && load(&st.main_requeue)) {
        requeue(st.shared_pending, st.shared_pending_count, 0); // (see resume_all)
        st.shared_pending_count = 0;
        __atomic_store_n(&st.main_requeue, 0, __ATOMIC_RELEASE);
        futex_wake_all(&st.main_requeue);
    }
    end_call_for_signal(seen, (ucontext_t *)interrupted, reissued);
    errno = saved_errno;
}

// The manager waits in ppoll with only the park signal let through: sending it that signal wakes
// it (its park handler finds nothing to do there and returns).
void wake_manager() {
    int tid = __atomic_load_n(&g_manager_tid, __ATOMIC_ACQUIRE);
    if (tid > 0) sys::call(SYS_tgkill, sys::call(SYS_getpid), tid, park_signal);
}

// The trigger signal is ghost's, no event of the program's: a blocking call it cut short is
// issued again (resume_interrupted_syscall; the manager did not look at the thread), unless a
// signal of the program's is to be handled too (end_call_for_signal).
void trigger_handler(int, siginfo_t *, void *ucontext) {
    int saved_errno = errno;
    const seen_call not_seen = {-1, 0, 0};
    const reissued_call reissued = resume_interrupted_syscall(not_seen, (ucontext_t *)ucontext);
    __atomic_store_n(&g_trigger_pending, 1, __ATOMIC_RELEASE);
    wake_manager();
    end_call_for_signal(not_seen, (ucontext_t *)ucontext, reissued);
    errno = saved_errno;
}

bool task_alive(int tid) {
    return sys::call(SYS_tgkill, sys::call(SYS_getpid), tid, 0) == 0;
}

// Lists /proc/self/task with getdents64 (opendir would malloc). Signals every thread not yet in the
// table. Returns the number of newly signalled threads, or -1.
bool task_status_field(int tid, const char *field, char *out, size_t size);

// Seccomp. A thread in strict mode is killed by the park handler's first system call: refused.
// A filter the program installed itself (more filters than the process started with, or was
// restored with: those come again from whoever restarts it) would be lost by an export: refused
// then, not by a fork duplicate, whose copy keeps it.
long g_seccomp_baseline = 0;
bool g_park_for_export = false;
const char *g_signal_refusal = nullptr; // why signal_new_threads refused a thread

long seccomp_filters(int tid, long *mode) {
    char v[32] = "";
    *mode = task_status_field(tid, "Seccomp:", v, sizeof v) ? atol(v) : 0;
    return task_status_field(tid, "Seccomp_filters:", v, sizeof v) ? atol(v) : 0;
}

const char *seccomp_refusal(int tid) {
    static char why[200];
    long mode = 0, filters = seccomp_filters(tid, &mode);
    if (mode == 1)
        snprintf(why, sizeof why,
                 "thread %d runs in seccomp strict mode: ghost cannot park it (any system call "
                 "but read, write and exit kills it)",
                 tid);
    else if (mode == 2 && g_park_for_export && filters > g_seccomp_baseline)
        snprintf(why, sizeof why,
                 "thread %d runs under a seccomp filter the program installed, which ghost cannot "
                 "carry (a restored process would run without it)",
                 tid);
    else
        return nullptr;
    return why;
}

int signal_new_threads(int self) {
    int dir = (int)sys::call(SYS_open, "/proc/self/task", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir < 0) return -1;
    char buf[8192];
    int added = 0;
    for (;;) {
        long n = sys::call(SYS_getdents64, dir, buf, sizeof buf);
        if (n <= 0) break;
        for (long off = 0; off < n;) {
            auto *d = (struct dirent64 *)(buf + off);
            off += d->d_reclen;
            int tid = atoi(d->d_name);
            if (tid <= 0 || tid == self || find_slot(tid)) continue;
            if (ghost::agent::thread_is_excluded(tid)) continue; // a component's (lower half)
            if ((g_signal_refusal = seccomp_refusal(tid))) {
                sys::call(SYS_close, dir);
                return -1;
            }
            if (st.thread_count >= (uint32_t)ghost::agent::max_threads) {
                sys::call(SYS_close, dir);
                return -1;
            }
            thread_slot *slot = &st.threads[st.thread_count];
            memset((char *)slot + sizeof(slot_word), 0, sizeof *slot - sizeof(slot_word));
            __atomic_store_n((slot_word *)slot, make_slot_word(tid, ghost::agent::slot_signalled),
                             __ATOMIC_RELEASE);
            slot->flags = tid == (int)sys::call(SYS_getpid) ? ghost::image::thread_main : 0;
            read_blocked_syscall(slot);
            __atomic_store_n(&st.thread_count, st.thread_count + 1, __ATOMIC_RELEASE);
            if (sys::call(SYS_tgkill, sys::call(SYS_getpid), tid, park_signal) != 0)
                cancel_slot(*slot); // it exited meanwhile
            else
                added++;
        }
    }
    sys::call(SYS_close, dir);
    return added;
}

uint32_t signalled_live_count() {
    uint32_t n = 0;
    for (uint32_t i = 0; i < st.thread_count; i++) {
        thread_slot &t = st.threads[i];
        if (load(&t.state) == ghost::agent::slot_signalled && !task_alive(t.tid)) cancel_slot(t);
        if (load(&t.state) != ghost::agent::slot_free && !(t.flags & ghost::image::thread_manager))
            n++;
    }
    return n;
}

// One field ("SigBlk:", "State:", "Name:") of /proc/self/task/TID/status, up to the end of line.
bool task_status_field(int tid, const char *field, char *out, size_t size) {
    char path[64];
    snprintf(path, sizeof path, "/proc/self/task/%d/status", tid);
    int fd = (int)sys::call(SYS_open, path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    char buf[4096];
    long n = sys::call(SYS_read, fd, buf, sizeof buf - 1);
    sys::call(SYS_close, fd);
    if (n <= 0) return false;
    buf[n] = 0;
    const char *at = strstr(buf, field);
    if (!at) return false;
    at += strlen(field);
    while (*at == ' ' || *at == '\t')
        at++;
    size_t len = strcspn(at, "\n");
    if (len >= size) len = size - 1;
    memcpy(out, at, len);
    out[len] = 0;
    return true;
}

// Why a park was given up, naming the first thread that did not come and what to do about it.
char g_park_failure[240];

const char *describe_stuck_thread(int timeout_ms) {
    int tid = 0;
    for (uint32_t i = 1; i < st.thread_count && !tid; i++)
        if (load(&st.threads[i].state) == ghost::agent::slot_signalled &&
            task_alive(st.threads[i].tid))
            tid = st.threads[i].tid;
    char name[32] = "?", state[32] = "?", blocked[32] = "";
    task_status_field(tid, "Name:", name, sizeof name);
    task_status_field(tid, "State:", state, sizeof state);
    task_status_field(tid, "SigBlk:", blocked, sizeof blocked);
    uint64_t mask = strtoull(blocked, nullptr, 16);
    const char *what;
    if (mask & (1ULL << (park_signal - 1)))
        what = "it blocks signal 63, with which ghost parks threads; let it block only the signals "
               "it needs, then checkpoint again";
    else if (state[0] == 'D')
        what = "it is in an uninterruptible wait (state D); checkpoint again once it is out of it";
    else if (state[0] == 'T' || state[0] == 't')
        what = "it is stopped; let it continue (SIGCONT), then checkpoint again";
    else
        what = "checkpoint again";
    snprintf(g_park_failure, sizeof g_park_failure,
             "thread %d (%s) did not reach its park point in %d ms: %s", tid, name, timeout_ms,
             what);
    return g_park_failure;
}

// DUPLICATE: a thread that still blocks the park signal after a while ends the park at once
// (the request falls back to the export path, which parks it with PARK UNBLOCK).
bool g_blocked_gives_up = false;
const char g_blocked_why[] = "a thread blocks the park signal";

bool signalled_thread_blocks_park_signal() {
    for (uint32_t i = 1; i < st.thread_count; i++) {
        thread_slot &t = st.threads[i];
        char blocked[32] = "";
        if (load(&t.state) == ghost::agent::slot_signalled && task_alive(t.tid) &&
            task_status_field(t.tid, "SigBlk:", blocked, sizeof blocked) &&
            (strtoull(blocked, nullptr, 16) & (1ULL << (park_signal - 1))))
            return true;
    }
    return false;
}

// The requester of a park that can unblock threads ("PARK UNBLOCK"), or -1.
int g_unblock_conn = -1;
int g_unblock_asked[max_overrides];
int g_unblock_asked_count;

// Asks the requester to unblock the park signal of each signalled thread that blocks it (once
// per thread and park). The requester answers "MASK TID HEX" with the thread still stopped (the
// override is recorded before it can take the signal; "GO" lets the requester go on), or
// "NOMASK TID" (it could not trace the thread, or the thread took the signal meanwhile): the
// thread then parks or the park times out as without a requester.
void ask_unblock() {
    for (uint32_t i = 1; i < st.thread_count && g_unblock_conn >= 0; i++) {
        thread_slot &t = st.threads[i];
        if (load(&t.state) != ghost::agent::slot_signalled || !task_alive(t.tid)) continue;
        bool asked = false;
        for (int k = 0; k < g_unblock_asked_count && !asked; k++)
            asked = g_unblock_asked[k] == t.tid;
        if (asked || g_unblock_asked_count == max_overrides) continue;
        char blocked[32] = "";
        task_status_field(t.tid, "SigBlk:", blocked, sizeof blocked);
        if (!(strtoull(blocked, nullptr, 16) & (1ULL << (park_signal - 1)))) continue;
        g_unblock_asked[g_unblock_asked_count++] = t.tid;
        char line[96];
        int n = snprintf(line, sizeof line, "UNBLOCK %d\n", t.tid);
        if (!ghost::control::write_all(g_unblock_conn, line, (size_t)n) ||
            ghost::control::read_line(g_unblock_conn, line, sizeof line, 10000) < 0) {
            g_unblock_conn = -1; // the requester is gone: the park fails as it would
            return;
        }
        if (strncmp(line, "MASK ", 5) != 0) continue;
        char *end = nullptr;
        long tid = strtol(line + 5, &end, 10);
        uint64_t mask = end && *end == ' ' ? strtoull(end + 1, nullptr, 16) : 0;
        if (tid != t.tid) continue;
        uint32_t k = g_override_count;
        if (k < (uint32_t)max_overrides) {
            g_overrides[k] = {(int32_t)tid, mask};
            __atomic_store_n(&g_override_count, k + 1, __ATOMIC_RELEASE);
        }
        ghost::control::write_all(g_unblock_conn, "GO\n", 3);
    }
}

// Once every thread is parked: a thread that was still running could queue a signal to one
// already parked (pthread_kill), after the latter had taken its own pending signals off the
// kernel's queue; nobody can send more now. The parked threads with such signals take them
// (each parked thread answers; a thread woken before it waits is woken again).
void sweep_late_signals() {
    bool late = false;
    uint32_t parked = 0;
    for (uint32_t i = 1; i < st.thread_count; i++) {
        thread_slot &t = st.threads[i];
        if (load(&t.state) != ghost::agent::slot_parked) continue;
        parked++;
        char pending[32] = "";
        if (task_status_field(t.tid, "SigPnd:", pending, sizeof pending) &&
            (strtoull(pending, nullptr, 16) & ~(1ULL << (park_signal - 1))))
            late = true;
    }
    if (!late) return;
    __atomic_store_n(&st.swept, 0, __ATOMIC_RELEASE);
    __atomic_add_fetch(&st.sweep_gen, 1, __ATOMIC_ACQ_REL);
    for (int i = 0; i < 400; i++) { // 2 s at most: a thread that never answers keeps its own
        uint32_t done = load(&st.swept);
        if (done >= parked) break;
        futex_wake_all(&st.resume_gen);
        struct timespec step = {0, 5 * 1000 * 1000};
        futex(&st.swept, FUTEX_WAIT, done, &step);
    }
}

// Stops every application thread at its park point. On failure the parked ones are released.
bool park_all(const char **why) {
    g_override_count = 0;
    g_unblock_asked_count = 0;
    g_signal_refusal = nullptr;
    long next_unblock_ms = 20;
    int self = raw_gettid();
    st.parked = 0;
    st.restored = 0;
    g_busy_tid = 0;
    st.thread_count = 1;
    memset(&st.threads[0], 0, sizeof st.threads[0]);
    st.threads[0].tid = self;
    st.threads[0].state = ghost::agent::slot_parked;
    st.threads[0].flags = ghost::image::thread_manager;
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        int added = signal_new_threads(self);
        if (added < 0) {
            *why =
                g_signal_refusal ? g_signal_refusal : "cannot list or signal the process's threads";
            for (uint32_t i = 1; i < st.thread_count; i++)
                cancel_slot(st.threads[i]); // (as when a park times out)
            return false;
        }
        // Wait until every signalled thread is parked; threads may exit meanwhile.
        for (;;) {
            if (int busy = __atomic_load_n(&g_busy_tid, __ATOMIC_ACQUIRE)) {
                // The others first reach their park points (bounded): one that read the resume
                // generation after the caller's resume would wait for the next one, for ever.
                for (uint32_t p; (p = load(&st.parked)) < signalled_live_count();) {
                    struct timespec now, step = {0, 5 * 1000 * 1000};
                    clock_gettime(CLOCK_MONOTONIC, &now);
                    if ((now.tv_sec - start.tv_sec) * 1000 +
                            (now.tv_nsec - start.tv_nsec) / 1000000 >
                        g_park_timeout_ms)
                        break;
                    futex(&st.parked, FUTEX_WAIT, p, &step);
                }
                for (uint32_t i = 1; i < st.thread_count; i++)
                    cancel_slot(st.threads[i]); // (as when a park times out)
                static char busy_why[128];
                snprintf(busy_why, sizeof busy_why,
                         "thread %d is inside a component (an MPI call): not at a safe point",
                         busy);
                *why = busy_why;
                return false;
            }
            uint32_t parked = load(&st.parked);
            if (parked >= signalled_live_count()) break;
            struct timespec now, step = {0, 5 * 1000 * 1000};
            clock_gettime(CLOCK_MONOTONIC, &now);
            long ms = (now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000;
            // Threads that block the park signal, looked for now and then once the others had
            // their time to come (a thread may block it for a moment, as pthread_create does).
            if (g_unblock_conn >= 0 && ms >= next_unblock_ms) {
                ask_unblock();
                next_unblock_ms = ms + 50;
            }
            if (g_blocked_gives_up && ms >= 200 && signalled_thread_blocks_park_signal()) {
                *why = g_blocked_why;
                for (uint32_t i = 1; i < st.thread_count; i++)
                    cancel_slot(st.threads[i]);
                return false;
            }
            if (ms > g_park_timeout_ms) {
                *why = describe_stuck_thread(g_park_timeout_ms);
                // The park is given up: a thread that takes its slot back before this returns at
                // once when its signal comes (maybe much later); one that claimed it first parks
                // and is let go by resume_all like the others.
                for (uint32_t i = 1; i < st.thread_count; i++)
                    cancel_slot(st.threads[i]);
                return false;
            }
            futex(&st.parked, FUTEX_WAIT, parked, &step);
        }
        if (added == 0) { // a full scan found nobody new: the set is closed
            sweep_late_signals();
            return true;
        }
    }
}

void resume_all() {
    // Signals of the process's queue go back to it. The kernel takes them from a thread other
    // than the main one only as sigqueue() made them (si_code < 0, not SI_TKILL); kill()'s and the
    // kernel's own (SIGCHLD, SIGTERM from a shell...) only from the main thread (tid = pid), which
    // queues them on its way out of the park, before this returns. Without a parked main thread
    // (it ended with pthread_exit) they are sent again with kill(): their sender is then us.
    long pid = sys::call(SYS_getpid);
    bool main_parked = false;
    for (uint32_t i = 1; i < st.thread_count; i++)
        main_parked |= (st.threads[i].flags & ghost::image::thread_main) &&
                       load(&st.threads[i].state) == ghost::agent::slot_parked;
    uint32_t left = 0;
    for (uint32_t i = 0; i < st.shared_pending_count; i++) {
        const ghost::agent::pending_signal &p = st.shared_pending[i];
        int32_t code;
        memcpy(&code, p.info + 8, sizeof code); // siginfo_t: si_signo, si_errno, si_code
        if (code < 0 && code != SI_TKILL)
            requeue(&p, 1, 0);
        else if (main_parked)
            st.shared_pending[left++] = p;
        else
            sys::call(SYS_kill, pid, p.signo);
    }
    st.shared_pending_count = left;
    __atomic_store_n(&st.main_requeue, left ? 1u : 0u, __ATOMIC_RELEASE);
    __atomic_add_fetch(&st.resume_gen, 1, __ATOMIC_ACQ_REL);
    futex_wake_all(&st.resume_gen);
    // Before the next park can take the queue again.
    for (int i = 0; i < 200 && load(&st.main_requeue); i++) {
        struct timespec step = {0, 5 * 1000 * 1000};
        futex(&st.main_requeue, FUTEX_WAIT, 1, &step);
    }
}

// The manager's own pending signals that capture_process_state() took, queued to it again once
// the threads run (in a restored process too: they are in its image).
void requeue_manager_own() {
    thread_slot &self = st.threads[0];
    requeue(self.pending, self.pending_count, raw_gettid());
    self.pending_count = 0;
}

void capture_process_state() {
    for (int sig = 1; sig <= ghost::image::max_signals; sig++) {
        ghost::uapi::kernel_sigaction ka = {};
        if (sig != SIGKILL && sig != SIGSTOP) sys::call(SYS_rt_sigaction, sig, nullptr, &ka, 8);
        st.actions[sig - 1] = {ka.handler, ka.flags, ka.restorer, ka.mask};
    }
    st.brk = (uint64_t)sys::call(SYS_brk, 0);
    st.thp_disabled = sys::call(SYS_prctl, PR_GET_THP_DISABLE, 0, 0, 0, 0) == 1;
    // The process's shared queue (the manager blocks every signal the program's can have).
    st.shared_pending_count =
        take_pending(pending_mask("ShdPnd:"), st.shared_pending, ghost::agent::max_pending_shared);
    // And the manager's own: glibc signals every thread, the manager too, with SIGSETXID when
    // the program changes its ids (setegid...) and waits until each has answered. One still
    // pending here (the manager was busy with the park) was lost by a restart, and the program's
    // set*id call waited for ever. Queued again by requeue_manager_own().
    thread_slot &self = st.threads[0];
    self.pending_count =
        take_pending(pending_mask("SigPnd:"), self.pending, ghost::agent::max_pending_per_thread);
    struct itimerval it = {};
    getitimer(ITIMER_REAL, &it);
    st.itimer_real[0] = (uint64_t)it.it_interval.tv_sec;
    st.itimer_real[1] = (uint64_t)it.it_interval.tv_usec;
    st.itimer_real[2] = (uint64_t)it.it_value.tv_sec;
    st.itimer_real[3] = (uint64_t)it.it_value.tv_usec;
}

void set_internal_fds(int conn) {
    st.internal_fd_count = 0;
    if (g_private_files) return; // the program's table holds none of them
    const int fds[] = {g_listen_fd, conn, g_track_fd};
    for (int fd : fds)
        if (fd >= 0) st.internal_fds[st.internal_fd_count++] = fd;
}

// Whether g_track_fd is still the userfaultfd this agent made: in the program's own table (no
// table of our own) the program may close any descriptor and reuse its number.
bool track_fd_ours() {
    if (g_track_fd < 0) return false;
    if (g_private_files) return true;
    char path[64], target[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", g_track_fd);
    ssize_t n = readlink(path, target, sizeof target - 1);
    if (n <= 0) return false;
    target[n] = 0;
    return strcmp(target, "anon_inode:[userfaultfd]") == 0;
}

void send_with_fd(int conn, const char *line, size_t len, int fd);
int high_fd(int fd);

// TRACKFD, during a park: the exporter gets the process's userfaultfd for write tracking
// (incremental checkpoints). It is made at the first request and kept open from then on:
// closing it would end the tracking of every range registered on it.
void send_tracking_fd(int conn) {
    if (!track_fd_ours()) {
        g_track_fd = -1;
        long fd =
            sys::call(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | ghost::uapi::uffd_user_mode_only);
        if (fd >= 0) {
            ghost::uapi::uffdio_api_arg api = {
                ghost::uapi::uffd_api,
                ghost::uapi::uffd_feature_wp_async | ghost::uapi::uffd_feature_wp_unpopulated, 0};
            if (sys::call(SYS_ioctl, fd, ghost::uapi::uffdio_api_ioctl, &api) == 0) {
                g_track_fd = high_fd((int)fd);
                if (!g_private_files && st.internal_fd_count < ghost::agent::max_internal_fds)
                    st.internal_fds[st.internal_fd_count++] = g_track_fd;
            } else {
                sys::call(SYS_close, fd);
            }
        }
    }
    if (g_track_fd < 0) {
        const char *line = "ERROR this kernel has no asynchronous write tracking (userfaultfd "
                           "with WP_ASYNC, Linux 6.7)\n";
        ghost::control::write_all(conn, line, strlen(line));
        return;
    }
    send_with_fd(conn, "TRACKFD\n", 8, g_track_fd);
}

// Moves a descriptor of the agent out of the program's way: near the top of the first 1024
// numbers (below the soft limit), where programs that put their descriptors on numbers of their
// choosing do not go, without growing the table far (a fork copies it whole).
int high_fd(int fd) {
    struct rlimit lim;
    if (fd < 0 || sys::call(SYS_getrlimit, RLIMIT_NOFILE, &lim) != 0) return fd;
    long top = lim.rlim_cur < 1024 ? (long)lim.rlim_cur : 1024;
    if (top < 64) return fd;
    long high = sys::call(SYS_fcntl, fd, F_DUPFD_CLOEXEC, top - 32);
    if (high < 0) return fd;
    sys::call(SYS_close, fd);
    return (int)high;
}

// Gives the calling (manager) thread a descriptor table of its own, empty: no copy of a program
// descriptor may stay open through it (a pipe's reader would never see end of file).
void take_private_files() {
    g_private_files = sys::call(SYS_unshare, CLONE_FILES) == 0;
    if (!g_private_files) return;
    if (sys::call(SYS_close_range, 0, ~0U, 0) == 0) return;
    for (int fd = 0; fd < 1024; fd++) // close_range needs Linux 5.9
        sys::call(SYS_close, fd);
}

bool open_control_socket() {
    const char *why = nullptr;
    if (!ghost::control::socket_path(getpid(), g_socket_path, sizeof g_socket_path, &why)) {
        say("no control socket: %s", why);
        return false;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return false;
    struct sockaddr_un addr = {};
    addr.sun_family = AF_UNIX;
    memcpy(addr.sun_path, g_socket_path, strlen(g_socket_path) + 1); // socket_path checked the size
    unlink(g_socket_path); // a stale socket of an earlier process with this pid
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(fd, 4) != 0) {
        say("cannot listen on %s: %s", g_socket_path, strerror(errno));
        close(fd);
        return false;
    }
    chmod(g_socket_path, 0600);
    g_listen_fd = high_fd(fd);
    return true;
}

void restore_timers() {
    struct itimerval it = {};
    it.it_interval.tv_sec = (time_t)st.itimer_real[0];
    it.it_interval.tv_usec = (suseconds_t)st.itimer_real[1];
    it.it_value.tv_sec = (time_t)st.itimer_real[2];
    it.it_value.tv_usec = (suseconds_t)st.itimer_real[3];
    // An interval timer read at the instant it expired shows a zero value: it is still armed.
    bool periodic = it.it_interval.tv_sec || it.it_interval.tv_usec;
    if (periodic && !it.it_value.tv_sec && !it.it_value.tv_usec) it.it_value.tv_usec = 1;
    if (it.it_value.tv_sec || it.it_value.tv_usec) setitimer(ITIMER_REAL, &it, nullptr);
}

// Threads that got new ids still own, under their old ids, the locks they held at the park (see
// lock_owners.h): rewritten while every other thread is still held, from the words the restorer
// found (in its memory: before that is unmapped). Without the tid field of struct pthread
// (g_tid_offset unknown) glibc keeps using the old ids, which then stay right.
void fix_lock_owners_after_restore() {
    static ghost::agent::tid_change changes[ghost::agent::max_threads];
    static uint64_t heads[ghost::agent::max_threads];
    uint32_t n = 0, h = 0;
    for (uint32_t i = 0; i < st.thread_count; i++) {
        const thread_slot &t = st.threads[i];
        if (t.state != ghost::agent::slot_parked) continue;
        if (t.old_tid > 0 && t.old_tid != t.tid) changes[n++] = {t.old_tid, t.tid};
        heads[h++] = t.robust_head;
    }
    ghost::agent::found_words found = {(const uint64_t *)st.lock_words,
                                       st.lock_word_count,
                                       {st.lock_ids_min, st.lock_ids_span},
                                       st.restorer_start,
                                       st.restorer_end};
    st.lock_words = 0; // this restore's alone
    if (!n || g_tid_offset < 0) return;
    ghost::agent::lock_fix_result r = ghost::agent::fix_lock_owners(changes, n, heads, h, &found);
    if (r.incomplete)
        say("not all memory could be checked for locks held under the threads' old ids");
}

// The manager's half of a restore: runs in the new process once its own context is back.
void after_restore_manager(thread_slot *self) {
    long mode; // the filters the restorer ran under are this process's own now
    g_seccomp_baseline = seccomp_filters((int)sys::call(SYS_getpid), &mode);
    fix_task_state(self);
    ghost::agent::components_thread_after_restore();
    // Threads that exited while being parked left free slots: only parked ones come back.
    uint32_t others = 0;
    for (uint32_t i = 1; i < st.thread_count; i++)
        others += st.threads[i].state == ghost::agent::slot_parked;
    for (uint32_t got; (got = load(&st.restored)) < others;)
        futex(&st.restored, FUTEX_WAIT, got, nullptr);
    fix_lock_owners_after_restore();
    if (st.restorer_end > st.restorer_start)
        munmap((void *)st.restorer_start, st.restorer_end - st.restorer_start);
    // With the restorer gone, /proc/self/exe can name the program again (needs CAP_SYS_RESOURCE;
    // without it, it keeps naming ghost-restart, which changes nothing for the program).
    int exe = (int)sys::call(SYS_open, g_exe_path, O_RDONLY | O_CLOEXEC);
    if (exe >= 0) {
        sys::call(SYS_prctl, PR_SET_MM, PR_SET_MM_EXE_FILE, exe, 0, 0);
        sys::call(SYS_close, exe);
    }
    st.restorer_start = st.restorer_end = 0;
    st.restore_count++;
    g_listen_fd = -1;
    g_track_fd = -1; // not restored: write tracking starts again at the next checkpoint
    g_spawned_checkpoint = -1;
    g_standby_go = -1;
    __atomic_store_n(&g_manager_tid, raw_gettid(), __ATOMIC_RELEASE);
    restore_timers();
    if (st.thp_disabled) sys::call(SYS_prctl, PR_SET_THP_DISABLE, 1, 0, 0, 0);
    ghost::agent::restore_process_extras(st);
}

// Returns true when it returns in a restored process, where `conn` is not a descriptor of ours.
bool handle_park(int conn) {
    const char *why = nullptr;
    set_internal_fds(conn);
    // Components (ghost_agent.h) first: they quiesce and name their own threads while every libc
    // call is still allowed.
    char cwhy[320];
    if (!ghost::agent::components_quiesce(cwhy, sizeof cwhy)) {
        char line[400];
        int n = snprintf(line, sizeof line, "ERROR %s\n", cwhy);
        ghost::control::write_all(conn, line, (size_t)n);
        return false;
    }
    bool parked = ghost::agent::components_exclude_threads(&why) && park_all(&why);
    if (parked) capture_process_state();
    if (parked && !ghost::agent::components_exclude(&why)) parked = false;
    if (parked && (why = ghost::agent::capture_process_extras(st))) parked = false;
    if (!parked) {
        ghost::agent::components_before_resume();
        resume_all();
        requeue_manager_own();
        char line[256];
        int n = snprintf(line, sizeof line, "ERROR %s\n", why);
        ghost::control::write_all(conn, line, (size_t)n);
        return false;
    }
    thread_slot *volatile self = &st.threads[0];
    record_task_state(self);
    volatile uint32_t gen = load(&st.resume_gen);
    (void)gen;
    if (ghost_context_save(&self->ctx) == 0) {
        char line[128];
        int n = snprintf(line, sizeof line, "PARKED %lx %u\n", (unsigned long)&st,
                         (unsigned)st.thread_count);
        ghost::control::write_all(conn, line, (size_t)n);
        // Blocks until the exporter is done; EOF (the client died) also resumes. Meanwhile the
        // exporter may ask for the write-tracking descriptor.
        long got;
        while ((got = ghost::control::read_line(conn, line, sizeof line, -1)) >= 0 &&
               strcmp(line, "TRACKFD") == 0)
            send_tracking_fd(conn);
        ghost::agent::components_before_resume();
        resume_all();
        requeue_manager_own();
        if (got >= 0 && strcmp(line, "RESUME") == 0)
            ghost::control::write_all(conn, "RESUMED\n", 8);
        return false;
    }
    after_restore_manager(self);
    resume_all();
    requeue_manager_own();
    // Components rebuild on the process's descriptor table (an MPI rank's fresh lower half opens
    // its sockets there); only then does the manager take a table of its own again (the restorer
    // gave every thread one) and listen.
    ghost::agent::components_after_restore();
    take_private_files();
    open_control_socket();
    return true;
}

// Copies made by fast duplicates: children of this process with exit signal 0, reaped by the
// manager (nobody else waits for them) through pidfds in its own table.
constexpr int max_copies = 64;
int g_copy_pidfds[max_copies];
int g_copy_count = 0;
static_assert(max_copies <= (int)(sizeof st.copy_pids / sizeof st.copy_pids[0]));

// The list the exporter reads (agent_state.h), after any change of g_copy_*.
void publish_copies(const pid_t *pids) {
    for (int i = 0; i < g_copy_count; i++)
        st.copy_pids[i] = pids[i];
    __atomic_store_n(&st.copy_count, (uint32_t)g_copy_count, __ATOMIC_RELEASE);
}
pid_t g_copy_pids[max_copies];

// Whether the process has a child that is neither a copy nor the agent's own checkpointer: a fork
// would not carry it (the image path refuses such a process in one line).
bool has_program_children() {
    DIR *d = opendir("/proc/self/task");
    if (!d) return true;
    bool found = false;
    while (dirent *e = readdir(d)) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
        char path[320];
        snprintf(path, sizeof path, "/proc/self/task/%.32s/children", e->d_name);
        FILE *f = fopen(path, "re");
        if (!f) continue;
        for (int child; !found && fscanf(f, "%d", &child) == 1;) {
            bool ours = child == st.checkpointer_pid;
            for (int i = 0; i < g_copy_count && !ours; i++)
                ours = g_copy_pids[i] == child;
            found = !ours;
        }
        fclose(f);
    }
    closedir(d);
    return found;
}

void reap_copies() {
    for (int i = 0; i < g_copy_count;) {
        siginfo_t info = {};
        long r = sys::call(SYS_waitid, 3 /* P_PIDFD */, g_copy_pidfds[i], &info,
                           WEXITED | WNOHANG | __WALL, nullptr);
        if (r == 0 && info.si_pid == 0) {
            i++;
            continue;
        }
        // Reaped, or not ours to reap any more (the program waited for it with __WALL).
        sys::call(SYS_close, g_copy_pidfds[i]);
        --g_copy_count;
        g_copy_pidfds[i] = g_copy_pidfds[g_copy_count];
        g_copy_pids[i] = g_copy_pids[g_copy_count];
        publish_copies(g_copy_pids);
    }
}

// `ghost duplicate` sends its fds 0-2 right after the request line, in one message, and with them
// the copy's pid namespace when it could make one (fast_duplicate.h; else fds[3] is -1).
bool receive_stdio(int conn, int fds[4]) {
    struct pollfd p = {conn, POLLIN, 0};
    if (poll(&p, 1, 5000) != 1) return false;
    int got[4] = {-1, -1, -1, -1};
    int n = ghost::control::receive_fds(conn, got, 4);
    if (n != 3 && n != 4) {
        for (int i = 0; i < n; i++)
            close(got[i]);
        return false;
    }
    for (int i = 0; i < 4; i++)
        fds[i] = got[i] >= 0 ? high_fd(got[i]) : -1;
    return true;
}

void send_with_fd(int conn, const char *line, size_t len, int fd) {
    struct iovec iov = {(void *)line, len};
    alignas(struct cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
    struct msghdr msg = {};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof fd);
    sendmsg(conn, &msg, MSG_NOSIGNAL);
}

uint64_t monotonic_ns() {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000ULL + (uint64_t)t.tv_nsec;
}

// DUPLICATE (fast_duplicate.h): park, have the main thread fork, resume. Answers
// "DUPLICATED <copy pid> <park us> <fork us>" with a pidfd of the copy, "FALLBACK <why>" when the
// export+restore path must make this copy, or "ERROR <why>". Returns true in the copy.
bool handle_duplicate(int conn) {
    int stdio[4];
    if (!receive_stdio(conn, stdio)) {
        ghost::control::write_all(conn, "ERROR no standard streams came with the request\n", 49);
        return false;
    }
    int pid_namespace = stdio[3];
    auto answer = [&](const char *kind, const char *why) {
        for (int fd : stdio)
            if (fd >= 0) close(fd);
        char line[300];
        int n = snprintf(line, sizeof line, "%s %s\n", kind, why);
        ghost::control::write_all(conn, line, (size_t)n);
        return false;
    };
    // A component's process (an MPI rank's lower half, its transports) cannot be forked.
    if (ghost::agent::components_registered() > 0)
        return answer("FALLBACK", "a component (the MPI layer) is registered");
    if (g_copy_count >= max_copies) return answer("FALLBACK", "too many copies running");
    if (has_program_children()) return answer("FALLBACK", "the process has a child process");
    uint64_t t0 = monotonic_ns();
    set_internal_fds(conn);
    const char *why = nullptr;
    // A thread that keeps the park signal blocked: only a park requested with PARK UNBLOCK (the
    // export path's) parks it quickly.
    g_blocked_gives_up = true;
    bool parked = park_all(&why);
    g_blocked_gives_up = false;
    if (!parked && why == g_blocked_why) return answer("FALLBACK", why);
    if (parked) capture_process_state();
    if (parked && (why = ghost::agent::capture_process_extras(st))) parked = false;
    int forker = 0;
    for (uint32_t i = 1; parked && i < st.thread_count && !forker; i++)
        if (st.threads[i].state == ghost::agent::slot_parked &&
            (st.threads[i].flags & ghost::image::thread_main))
            forker = st.threads[i].tid;
    if (!parked || !forker) {
        resume_all();
        return answer(parked ? "FALLBACK" : "ERROR", parked ? "the main thread has ended" : why);
    }
    thread_slot *volatile self = &st.threads[0];
    record_task_state(self);
    if (ghost_context_save(&self->ctx) == 0) {
        g_dup.forker_tid = forker;
        g_dup.manager_tid = raw_gettid();
        memcpy(g_dup.stdio, stdio, sizeof g_dup.stdio);
        g_dup.pid_namespace = pid_namespace;
        g_dup.kept_ids = 0;
        g_dup.host_proc[0] = 0;
        // Under a seccomp filter (any thread's) the copy's mounts could be refused, or kill it:
        // new ids then.
        bool filtered = false;
        for (uint32_t i = 0; i < st.thread_count && !filtered; i++) {
            long mode = 0;
            seccomp_filters(st.threads[i].tid, &mode);
            filtered = mode != 0;
        }
        if (pid_namespace >= 0 &&
            (filtered || !ghost::control::host_proc_path(g_dup.host_proc, sizeof g_dup.host_proc)))
            g_dup.pid_namespace = -1;
        __atomic_store_n(&g_dup.phase, (uint32_t)ghost::agent::dup_requested, __ATOMIC_RELEASE);
        // The forking thread may be between its check and its wait: wake it until it answers.
        while (load(&g_dup.phase) == ghost::agent::dup_requested) {
            futex_wake_all(&st.resume_gen);
            struct timespec step = {0, 1000 * 1000};
            futex(&g_dup.phase, FUTEX_WAIT, ghost::agent::dup_requested, &step);
        }
        resume_all();
        uint64_t park_ns = monotonic_ns() - t0;
        __atomic_store_n(&g_dup.phase, (uint32_t)ghost::agent::dup_idle, __ATOMIC_RELEASE);
        if (g_dup.copy_pid <= 0) return answer("FALLBACK", g_dup.why);
        int pidfd = (int)sys::call(SYS_pidfd_open, g_dup.copy_pid, 0);
        for (int fd : stdio)
            if (fd >= 0) close(fd);
        // Named as the host knows it: this process may itself be a copy in a pid namespace.
        int copy_host_pid = ghost::control::host_pid(g_dup.copy_pid);
        if (copy_host_pid <= 0) { // a copy nobody could name: ended before it runs far
            sys::call(SYS_kill, g_dup.copy_pid, SIGKILL);
            copy_host_pid = 0;
        }
        char line[128];
        int n = snprintf(line, sizeof line, "DUPLICATED %d %llu %llu %d\n", copy_host_pid,
                         (unsigned long long)(park_ns / 1000),
                         (unsigned long long)(g_dup.fork_ns / 1000), (int)g_dup.kept_ids);
        if (pidfd < 0) {
            ghost::control::write_all(conn, line, (size_t)n); // (cannot happen: it is our child)
            return false;
        }
        pidfd = high_fd(pidfd);
        send_with_fd(conn, line, (size_t)n, pidfd);
        g_copy_pidfds[g_copy_count] = pidfd;
        g_copy_pids[g_copy_count++] = g_dup.copy_pid;
        publish_copies(g_copy_pids);
        return false;
    }
    // In the copy, where the forking thread re-created the manager from its saved context.
    __atomic_store_n(&g_dup.phase, (uint32_t)ghost::agent::dup_idle, __ATOMIC_RELEASE);
    if (!g_private_files && g_track_fd >= 0) close(g_track_fd); // the original's tracking
    g_copy_count = 0; // the original's copies are not ours (their pidfds were in its table)
    publish_copies(g_copy_pids);
    after_restore_manager(self);
    resume_all();
    ghost::agent::components_after_restore();
    take_private_files();
    open_control_socket();
    return true;
}

void spawn_checkpoint() {
    if (!g_ghost_bin[0] || g_spawned_checkpoint > 0) return;
    char pid[24];
    snprintf(pid, sizeof pid, "%d", getpid());
    char *argv[] = {(char *)"ghost", (char *)"checkpoint", (char *)"--dir", g_ckpt_dir, pid,
                    nullptr};
    // The checkpointer must not be preloaded with this agent.
    static char *envp[4096];
    int n = 0;
    for (char **e = environ; *e && n < 4095; e++)
        if (strncmp(*e, "LD_PRELOAD=", 11) != 0) envp[n++] = *e;
    envp[n] = nullptr;
    // Its report must not land in the application's own stdout/stderr (a shared file offset would
    // shift the application's output): it goes to <checkpoint dir>/checkpoint.log.
    mkdir(g_ckpt_dir, 0700);
    char log[4200];
    snprintf(log, sizeof log, "%s/checkpoint.log", g_ckpt_dir);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, log, O_WRONLY | O_CREAT | O_APPEND, 0600);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    pid_t child;
    if (posix_spawn(&child, g_ghost_bin, &fa, nullptr, argv, envp) == 0)
        g_spawned_checkpoint = st.checkpointer_pid = child;
    else
        say("cannot start %s for a signalled checkpoint", g_ghost_bin);
    posix_spawn_file_actions_destroy(&fa);
}

// `ghost checkpoint --image PATH [--kill] PID` for this process, started on request of a component
// (ghost_agent_request_checkpoint); its report goes to PATH.log. One at a time. With `to` (a
// stream target, ghost_agent_request_send): `ghost checkpoint --to TO [--secret-file F] PID`,
// the report in image_path.log (image_path then only names the log).
int spawn_image_checkpoint(const char *image_path, int flags, const char *to = nullptr,
                           const char *secret_file = nullptr, const char *parent_image = nullptr,
                           bool incremental = false) {
    if (!g_ghost_bin[0] || !image_path || image_path[0] != '/') return -1;
    pid_t none = -1;
    if (!__atomic_compare_exchange_n(&g_spawned_checkpoint, &none, 0, false, __ATOMIC_ACQ_REL,
                                     __ATOMIC_ACQUIRE))
        return -1; // one is running (0: being started)
    char pid[24], path[4096], log[4200];
    snprintf(pid, sizeof pid, "%d", getpid());
    snprintf(path, sizeof path, "%s", image_path);
    snprintf(log, sizeof log, "%s.log", image_path);
    char parent[4096];
    snprintf(parent, sizeof parent, "%s", image_path);
    if (char *slash = strrchr(parent, '/'); slash && slash != parent) {
        *slash = 0;
        // The log needs this directory (the checkpointer makes deeper ones), unless it is a job
        // generation's, which its coordinator made and removes when the checkpoint fails: made
        // again here, it would outlive the failure.
        if (!(flags & GHOST_CHECKPOINT_IN_DIR)) mkdir(parent, 0700);
    }
    char target[4096], secret[4096];
    snprintf(target, sizeof target, "%s", to ? to : "");
    snprintf(secret, sizeof secret, "%s", secret_file ? secret_file : "");
    char parent_path[4096];
    snprintf(parent_path, sizeof parent_path, "%s", parent_image ? parent_image : "");
    char *argv[16];
    int a = 0;
    argv[a++] = (char *)"ghost";
    argv[a++] = (char *)"checkpoint";
    argv[a++] = to ? (char *)"--to" : (char *)"--image";
    argv[a++] = to ? target : path;
    if (!to && (flags & GHOST_CHECKPOINT_IN_DIR)) argv[a++] = (char *)"--no-mkdir";
    if (to && secret[0]) {
        argv[a++] = (char *)"--secret-file";
        argv[a++] = secret;
    }
    char precopy_index[4200];
    snprintf(precopy_index, sizeof precopy_index, "%s.precopy-index", image_path);
    // (Both: a further pre-copy round, whose index replaces the last round's.)
    if (to && (flags & GHOST_CHECKPOINT_PRECOPY)) {
        argv[a++] = (char *)"--precopy-index";
        argv[a++] = precopy_index;
    }
    if (to && (flags & GHOST_CHECKPOINT_AFTER_PRECOPY)) {
        argv[a++] = (char *)"--after-precopy";
        argv[a++] = precopy_index;
    }
    // A standby reads its go on its standard input (ghost_agent_standby_release): a socket, which
    // a standby that ended meanwhile cannot make the go's send raise SIGPIPE in this process.
    int go[2] = {-1, -1};
    bool standby = to && (flags & GHOST_CHECKPOINT_STANDBY);
    if (standby) {
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, go) != 0) {
            __atomic_store_n(&g_spawned_checkpoint, -1, __ATOMIC_RELEASE);
            return -1;
        }
        argv[a++] = (char *)"--standby";
    }
    if (incremental && !to) {
        argv[a++] = (char *)"--incremental";
        if (parent_path[0]) {
            argv[a++] = (char *)"--parent";
            argv[a++] = parent_path;
        }
    }
    argv[a++] = pid;
    if (flags & GHOST_CHECKPOINT_KILL) argv[a++] = (char *)"--kill";
    argv[a] = nullptr;
    static char *envp[4096];
    int n = 0;
    for (char **e = environ; *e && n < 4095; e++)
        if (strncmp(*e, "LD_PRELOAD=", 11) != 0) envp[n++] = *e;
    envp[n] = nullptr;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, log, O_WRONLY | O_CREAT | O_APPEND, 0600);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    if (standby)
        posix_spawn_file_actions_adddup2(&fa, go[0], 0);
    else
        posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    pid_t child;
    int rc = posix_spawn(&child, g_ghost_bin, &fa, nullptr, argv, envp);
    posix_spawn_file_actions_destroy(&fa);
    if (standby) {
        close(go[0]);
        if (rc == 0)
            g_standby_go = go[1];
        else
            close(go[1]);
    }
    if (rc == 0) {
        snprintf(g_ckpt_image, sizeof g_ckpt_image, "%s", image_path);
        g_ckpt_restore_count = st.restore_count;
        __atomic_add_fetch(&g_ckpt_serial, 1u, __ATOMIC_ACQ_REL);
    }
    __atomic_store_n(&g_spawned_checkpoint, rc == 0 ? child : -1, __ATOMIC_RELEASE);
    return rc == 0 ? 0 : -1;
}

// Reaps the checkpointer if it has ended (`block`: waits for it) and publishes its status.
void reap_checkpointer(bool block) {
    pid_t pid = __atomic_load_n(&g_spawned_checkpoint, __ATOMIC_ACQUIRE);
    if (pid <= 0) return;
    int ws = 0;
    pid_t r = waitpid(pid, &ws, block ? 0 : WNOHANG);
    if (r == 0 || (r < 0 && errno == EINTR)) return;
    // ECHILD: another thread reaped it (and publishes), or SIGCHLD is ignored (status lost).
    if (r < 0 && __atomic_load_n(&g_ckpt_waiting, __ATOMIC_ACQUIRE) && !block) return;
    if (!__atomic_compare_exchange_n(&g_spawned_checkpoint, &pid, -1, false, __ATOMIC_ACQ_REL,
                                     __ATOMIC_ACQUIRE))
        return;
    st.checkpointer_pid = -1;
    g_ckpt_status = r == pid ? ws : -1;
    __atomic_store_n(&g_ckpt_reaped, __atomic_load_n(&g_ckpt_serial, __ATOMIC_ACQUIRE),
                     __ATOMIC_RELEASE);
}

// The last line of PATH.log that starts with "ghost: " (the checkpointer's one-line error).
void checkpointer_error(char *why, size_t len) {
    char log[4200];
    snprintf(log, sizeof log, "%s.log", g_ckpt_image);
    snprintf(why, len, "the checkpointer failed (see %s)", log);
    FILE *f = fopen(log, "re");
    if (!f) return;
    char line[1024];
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "ghost: ", 7) == 0) {
            line[strcspn(line, "\n")] = 0;
            snprintf(why, len, "%s", line + 7);
        }
    fclose(f);
}

// Returns true when it returns in a restored process (see handle_park).
bool serve(int conn) {
    struct ucred cred = {};
    socklen_t len = sizeof cred;
    if (getsockopt(conn, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 ||
        (cred.uid != getuid() && cred.uid != 0)) {
        ghost::control::write_all(conn, "ERROR permission denied\n", 24);
        return false;
    }
    char line[64];
    if (ghost::control::read_line(conn, line, sizeof line, 5000) < 0) return false;
    if (strcmp(line, "PARK") == 0 || strcmp(line, "PARK UNBLOCK") == 0) {
        g_unblock_conn = strcmp(line, "PARK UNBLOCK") == 0 ? conn : -1;
        g_park_for_export = true;
        bool r = handle_park(conn);
        g_unblock_conn = -1;
        g_park_for_export = false;
        return r;
    } else if (strcmp(line, "TRACK") == 0) {
        // A pre-copy (ghost-core/export.h, export_precopy): the state's address and the write
        // tracking descriptor, the process running on. Nothing is parked, so no component is
        // asked anything: what it would leave out is copied too (and found unused later).
        char reply[64];
        int n = snprintf(reply, sizeof reply, "TRACKING %lx %u\n", (unsigned long)&st,
                         (unsigned)st.thread_count);
        ghost::control::write_all(conn, reply, (size_t)n);
        while (ghost::control::read_line(conn, line, sizeof line, 10000) >= 0 &&
               strcmp(line, "TRACKFD") == 0)
            send_tracking_fd(conn);
    } else if (strcmp(line, "DUPLICATE") == 0) {
        return handle_duplicate(conn);
    } else if (strcmp(line, "PING") == 0) {
        char reply[48];
        int n = snprintf(reply, sizeof reply, "PONG %d\n", ghost::control::host_pid(getpid()));
        ghost::control::write_all(conn, reply, (size_t)n);
    } else {
        ghost::control::write_all(conn, "ERROR unknown request\n", 22);
    }
    return false;
}

void remove_socket();

// Without a table of its own, the program may have closed or replaced the listening socket: then
// the manager makes a new one and leaves that number to the program.
ino_t g_listen_ino = 0;

bool listen_fd_ours() {
    struct stat sb;
    return g_listen_fd >= 0 && sys::call(SYS_fstat, g_listen_fd, &sb) == 0 &&
           S_ISSOCK(sb.st_mode) && sb.st_ino == g_listen_ino;
}

void note_listen_fd() {
    struct stat sb;
    g_listen_ino = g_listen_fd >= 0 && sys::call(SYS_fstat, g_listen_fd, &sb) == 0 ? sb.st_ino : 0;
}

// The main thread is gone (a zombie) and no other thread of the program is left: the process
// would have ended without the manager. That happens when the main thread was killed alone (a
// seccomp-strict or SECCOMP_RET_KILL_THREAD violation), left with SYS_exit, or called
// pthread_exit and the last other thread ended (glibc counts the manager among its threads).
// Returns the main thread's exit code as wait() shows it, or -1 while the program goes on.
int program_ended() {
    int fd = (int)sys::call(SYS_open, "/proc/self/stat", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    char buf[1024];
    long n = sys::call(SYS_read, fd, buf, sizeof buf - 1);
    sys::call(SYS_close, fd);
    if (n <= 0) return -1;
    buf[n] = 0;
    const char *state = strrchr(buf, ')');
    if (!state || state[1] != ' ' || state[2] != 'Z') return -1;
    const char *last = strrchr(buf, ' '); // the last field is the exit code
    int code = last ? atoi(last + 1) : 0;
    int dir = (int)sys::call(SYS_open, "/proc/self/task", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir < 0) return -1;
    int self = raw_gettid(), pid = (int)sys::call(SYS_getpid), others = 0;
    char ents[4096];
    for (long got; (got = sys::call(SYS_getdents64, dir, ents, sizeof ents)) > 0;)
        for (long off = 0; off < got;) {
            auto *d = (struct dirent64 *)(ents + off);
            off += d->d_reclen;
            int tid = atoi(d->d_name);
            others += tid > 0 && tid != self && tid != pid;
        }
    sys::call(SYS_close, dir);
    return others ? -1 : code;
}

// Ends the process as the main thread's end would have (the kernel reports the status of the
// thread that ends last): killed by the signal that killed it, or exiting with its code.
[[noreturn]] void end_as_main_thread(int code) {
    int sig = code & 0x7f;
    if (sig) {
        // Nothing of the C library here: the dead thread may have held one of its locks.
        ghost::uapi::kernel_sigaction dfl = {};
        if (sig != SIGKILL) sys::call(SYS_rt_sigaction, sig, &dfl, nullptr, 8);
        uint64_t mask = 1ULL << (sig - 1);
        sys::call(SYS_rt_sigprocmask, SIG_UNBLOCK, &mask, nullptr, 8);
        sys::call(SYS_tgkill, sys::call(SYS_getpid), raw_gettid(), sig);
    }
    for (;;)
        sys::call(SYS_exit, (code >> 8) & 0xff);
}

// glibc counts running threads and lets the last one to end call exit(0) (after main called
// pthread_exit): the manager must not count, or that last one would be the manager, whose
// descriptor table is not the program's. Found by name (a private glibc symbol); without it, the
// manager ends such a process itself (without the program's atexit handlers).
unsigned int *g_nptl_nthreads = nullptr;

void count_manager(int delta) {
    if (g_nptl_nthreads) __atomic_add_fetch(g_nptl_nthreads, (unsigned)delta, __ATOMIC_ACQ_REL);
}

void *manager_main(void *) {
    // Born with every signal blocked; only the park signal gets through, and only while waiting.
    __atomic_store_n(&g_manager_tid, raw_gettid(), __ATOMIC_RELEASE);
    take_private_files();
    bool serving = open_control_socket();
    note_listen_fd();
    if (serving) count_manager(-1); // counted again before it ends through glibc
    __atomic_store_n(&g_manager_ready, serving ? 1u : 2u, __ATOMIC_RELEASE);
    futex_wake_all(&g_manager_ready);
    if (!serving) return nullptr;
    sigset_t wake;
    sigfillset(&wake);
    sigdelset(&wake, park_signal);
    for (int failures = 0;;) {
        if (!__atomic_load_n(&g_ckpt_waiting, __ATOMIC_ACQUIRE)) reap_checkpointer(false);
        if (__atomic_exchange_n(&g_trigger_pending, 0, __ATOMIC_ACQ_REL)) spawn_checkpoint();
        if (!g_private_files && !listen_fd_ours()) {
            g_listen_fd = -1; // closed or replaced by the program: that number is its own now
            open_control_socket();
            note_listen_fd();
        }
        struct pollfd polled[1 + max_copies];
        struct pollfd &p = polled[0];
        p = {g_listen_fd, POLLIN, 0};
        for (int i = 0; i < g_copy_count; i++)
            polled[1 + i] = {g_copy_pidfds[i], POLLIN, 0};
        struct timespec tick = {0, 500 * 1000 * 1000};
        int r = ppoll(polled, 1 + (nfds_t)g_copy_count, &tick, &wake);
        if (g_copy_count) reap_copies();
        if (r < 0 && errno != EINTR && ++failures >= 10) {
            // Refused for good (a seccomp filter that covers every thread): give up serving.
            say("the control socket cannot be served any more: %s", strerror(errno));
            remove_socket();
            count_manager(+1);
            return nullptr;
        }
        if (r == 0) {
            failures = 0;
            int code = program_ended();
            if (code < 0) continue;
            remove_socket();
            end_as_main_thread(code);
        }
        if (r < 0 || !(p.revents & POLLIN)) continue;
        failures = 0;
        int conn = accept4(g_listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
        if (conn < 0) continue;
        conn = high_fd(conn);
        // After a restore, `conn` is a number from the old process: the application may
        // already have reopened it, so it must not be closed.
        if (!serve(conn)) close(conn);
    }
}

// The offset of struct pthread's tid field from the thread pointer: found by looking for the
// calling thread's tid near the start of its TCB, confirmed later from a second thread.
void find_tid_offset() {
    uint64_t tp = thread_pointer();
    int tid = raw_gettid();
    for (int off = 0x2c0; off < 0x800; off += 4)
        if (*(int32_t *)(tp + off) == tid) {
            g_tid_offset = off;
            return;
        }
}

void *confirm_tid_offset(void *) {
    if (g_tid_offset >= 0 && *(int32_t *)(thread_pointer() + g_tid_offset) != raw_gettid())
        g_tid_offset = -1;
    return manager_main(nullptr);
}

// Returns once the manager serves the control socket (or could not): a `ghost checkpoint` right
// after the program starts, or forks, finds it.
void start_manager() {
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old); // the manager is born with every signal blocked
    __atomic_store_n(&g_manager_ready, 0u, __ATOMIC_RELEASE);
    pthread_t manager;
    if (pthread_create(&manager, &attr, confirm_tid_offset, nullptr) != 0)
        say("cannot start the manager thread");
    else
        while (load(&g_manager_ready) == 0)
            futex(&g_manager_ready, FUTEX_WAIT, 0, nullptr);
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    pthread_attr_destroy(&attr);
}

void after_fork_child() {
    // A forked child is a process of its own: it gets its own socket and manager. With a table of
    // its own, the parent's manager left no descriptor in the child.
    g_spawned_checkpoint = -1;
    // (A standing-by checkpointer takes its go from its parent only, which closes its end then.)
    if (g_standby_go >= 0) close(g_standby_go);
    g_standby_go = -1;
    __atomic_store_n(&g_manager_tid, 0, __ATOMIC_RELEASE);
    __atomic_store_n(&g_trigger_pending, 0u, __ATOMIC_RELEASE);
    if (!g_private_files && listen_fd_ours()) close(g_listen_fd);
    g_listen_fd = -1;
    if (track_fd_ours() && !g_private_files) close(g_track_fd); // the parent's tracking
    g_track_fd = -1;
    start_manager();
}

void remove_socket() {
    if (g_socket_path[0] && g_listen_fd >= 0) unlink(g_socket_path);
}

__attribute__((constructor)) void agent_init() {
    const char *off = getenv("GHOST_AGENT");
    if (off && strcmp(off, "off") == 0) return;
    st.magic = ghost::agent::state_magic;
    st.version = ghost::agent::state_version;
    const char *dir = getenv("GHOST_CKPT_DIR");
    snprintf(g_ckpt_dir, sizeof g_ckpt_dir, "%s", dir && *dir ? dir : "ghost-ckpt");
    const char *bin = getenv("GHOST_BIN");
    if (bin) snprintf(g_ghost_bin, sizeof g_ghost_bin, "%s", bin);
    const char *park_ms = getenv("GHOST_PARK_TIMEOUT_MS");
    if (park_ms && atoi(park_ms) > 0) g_park_timeout_ms = atoi(park_ms);
    const char *trig = getenv("GHOST_CKPT_SIGNAL");
    if (trig) g_trigger_signal = atoi(trig);
    find_tid_offset();
    long mode;
    g_seccomp_baseline = seccomp_filters((int)getpid(), &mode);
    g_nptl_nthreads = (unsigned int *)dlvsym(RTLD_DEFAULT, "__nptl_nthreads", "GLIBC_PRIVATE");
    ghost::agent::lock_owners_init();
    ssize_t n = readlink("/proc/self/exe", g_exe_path, sizeof g_exe_path - 1);
    g_exe_path[n > 0 ? n : 0] = 0;

    struct sigaction sa = {};
    sa.sa_sigaction = park_handler;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigfillset(&sa.sa_mask);
    // libc's own sigaction, never an interposer's (the MPI layer's would wrap the handler in its
    // trampoline, which switches FS around it: a thread would be saved with the wrong one).
    using sigaction_fn = int (*)(int, const struct sigaction *, struct sigaction *);
    auto libc_sigaction = (sigaction_fn)dlvsym(RTLD_DEFAULT, "sigaction", "GLIBC_2.2.5");
    (libc_sigaction ? libc_sigaction : sigaction)(park_signal, &sa, nullptr);
    if (g_trigger_signal > 0 && g_trigger_signal < 65) {
        struct sigaction ta = {};
        ta.sa_sigaction = trigger_handler;
        ta.sa_flags = SA_SIGINFO | SA_RESTART;
        sigfillset(&ta.sa_mask); // (end_call_for_signal; a park waits until it has returned)
        sigaction(g_trigger_signal, &ta, nullptr);
    }
    start_manager();
    pthread_atfork(nullptr, nullptr, after_fork_child);
    atexit(remove_socket);
}

} // namespace

extern "C" __attribute__((visibility("default"))) int
ghost_agent_request_checkpoint(const char *image_path, int flags) {
    if (ghost_agent_state.magic != ghost::agent::state_magic) return -1; // agent not running
    return spawn_image_checkpoint(image_path, flags);
}

extern "C" __attribute__((visibility("default"))) int
ghost_agent_request_incremental(const char *image_path, const char *parent, int flags) {
    if (ghost_agent_state.magic != ghost::agent::state_magic) return -1; // agent not running
    return spawn_image_checkpoint(image_path, flags, nullptr, nullptr, parent, true);
}

extern "C" __attribute__((visibility("default"))) int
ghost_agent_request_send(const char *to, const char *secret_file, const char *log_base, int flags) {
    if (ghost_agent_state.magic != ghost::agent::state_magic) return -1; // agent not running
    if (!to || !*to) return -1;
    return spawn_image_checkpoint(log_base, flags, to, secret_file);
}

extern "C" __attribute__((visibility("default"))) int ghost_agent_standby_ready(int timeout_ms) {
    if (ghost_agent_state.magic != ghost::agent::state_magic) return -1; // agent not running
    int fd = __atomic_load_n(&g_standby_go, __ATOMIC_ACQUIRE);
    if (fd < 0) return -1;
    pollfd p{fd, POLLIN, 0};
    int n;
    do
        n = poll(&p, 1, timeout_ms);
    while (n < 0 && errno == EINTR);
    if (n <= 0) return 0;
    char c = 0;
    return recv(fd, &c, 1, MSG_DONTWAIT) == 1 && c == 'r' ? 1 : -1;
}

extern "C" __attribute__((visibility("default"))) int ghost_agent_standby_release(int go) {
    if (ghost_agent_state.magic != ghost::agent::state_magic) return -1; // agent not running
    int fd = __atomic_exchange_n(&g_standby_go, -1, __ATOMIC_ACQ_REL);
    if (fd < 0) return -1;
    if (go) {
        // Closed at once: the standby parks this process only once it has seen the end too, so
        // that no descriptor of it is in the image.
        char g = 'g';
        ssize_t n = send(fd, &g, 1, MSG_NOSIGNAL);
        close(fd);
        return n == 1 ? 0 : -1;
    }
    close(fd);
    // Given up before its go: it has not touched this process (still our unreaped child, so the
    // pid is still its); ghost_agent_checkpoint_wait reaps it.
    pid_t pid = __atomic_load_n(&g_spawned_checkpoint, __ATOMIC_ACQUIRE);
    if (pid > 0) kill(pid, SIGKILL);
    return 0;
}

extern "C" __attribute__((visibility("default"))) int
ghost_agent_checkpoint_wait(int timeout_ms, char *why, size_t len) {
    if (ghost_agent_state.magic != ghost::agent::state_magic) {
        snprintf(why, len, "no ghost agent in this process");
        return -1;
    }
    uint32_t serial = __atomic_load_n(&g_ckpt_serial, __ATOMIC_ACQUIRE);
    if (serial == 0) {
        snprintf(why, len, "no checkpoint was requested");
        return -1;
    }
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    __atomic_add_fetch(&g_ckpt_waiting, 1u, __ATOMIC_ACQ_REL);
    int rc = -2;
    for (int lost_ms = 0; rc == -2;) {
        // The checkpointer parks this thread too; when it comes back in a restored copy of the
        // process, the checkpointer is no child of this one.
        if (st.restore_count != g_ckpt_restore_count) {
            rc = 1;
            break;
        }
        if (__atomic_load_n(&g_ckpt_reaped, __ATOMIC_ACQUIRE) == serial) {
            int ws = g_ckpt_status;
            if (ws != -1 && WIFEXITED(ws) && WEXITSTATUS(ws) == 0) {
                rc = 0;
            } else if (ws == -1) {
                snprintf(why, len, "the checkpointer's exit status was lost (SIGCHLD ignored?)");
                rc = -1;
            } else {
                checkpointer_error(why, len);
                if (WIFSIGNALED(ws))
                    snprintf(why, len, "the checkpointer was killed by signal %d", WTERMSIG(ws));
                rc = -1;
            }
            break;
        }
        pid_t pid = __atomic_load_n(&g_spawned_checkpoint, __ATOMIC_ACQUIRE);
        int ws = 0;
        pid_t r = pid > 0 ? waitpid(pid, &ws, WNOHANG) : 0;
        if (r == pid && pid > 0) {
            if (__atomic_compare_exchange_n(&g_spawned_checkpoint, &pid, -1, false,
                                            __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
                st.checkpointer_pid = -1;
                g_ckpt_status = ws;
                __atomic_store_n(&g_ckpt_reaped, serial, __ATOMIC_RELEASE);
            }
            continue;
        }
        if (r < 0 && errno == ECHILD && (lost_ms += 10) > 1000) reap_checkpointer(true);
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        long ms = (now.tv_sec - t0.tv_sec) * 1000 + (now.tv_nsec - t0.tv_nsec) / 1000000;
        if (timeout_ms >= 0 && ms > timeout_ms) {
            snprintf(why, len, "the checkpointer did not finish within %d ms", timeout_ms);
            rc = -1;
            break;
        }
        // 1 ms naps at first, 10 ms after 200 ms: a live migration's final image (its job
        // stopped meanwhile) takes about 0.1 s to stream, and each millisecond between the
        // checkpointer's end and its report is the job's. (Not a pidfd to poll: this thread is
        // the program's, and its descriptors go into the image the checkpointer is taking.)
        struct timespec nap = {0, (ms < 200 ? 1 : 10) * 1000 * 1000};
        nanosleep(&nap, nullptr);
    }
    __atomic_sub_fetch(&g_ckpt_waiting, 1u, __ATOMIC_ACQ_REL);
    return rc;
}

extern "C" __attribute__((visibility("default"))) int ghost_agent_owns_fd(int fd) {
    // With a descriptor table of its own the manager holds nothing in the program's.
    return fd >= 0 && !g_private_files && fd == g_listen_fd;
}
