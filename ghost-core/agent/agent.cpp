// SPDX-License-Identifier: Apache-2.0
// libghost.so: the agent that `ghost launch` preloads into a process. It owns a manager thread that
// listens on the process's control socket. On PARK it stops every other thread at a park point
// inside a signal handler (their interrupted registers, FP/AVX state included, stay in the signal
// frame on their own stack), records what only the process itself can read (signal actions, brk,
// robust lists, rseq, timers) in its state block and answers PARKED. The exporter then reads the
// whole process from outside. RESUME (or the client going away) lets the threads go.
//
// After a restore the same code runs again from the park points, in a new process: each thread
// fixes what the kernel keeps per task (tid, robust list, clear_child_tid, rseq), the manager
// re-creates the control socket and unmaps the restorer, and everybody returns from the handler
// into the application.
//
// Hazard: once one thread is parked it may hold any libc lock (malloc, stdio, the loader), so the
// manager only uses system calls and stack buffers between parking and resuming.
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
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
constexpr int park_timeout_ms = 10000;

int g_listen_fd = -1;
int g_trigger_pipe[2] = {-1, -1};
int g_tid_offset = -1; // offset of struct pthread's tid from the thread pointer
int g_trigger_signal = SIGUSR2;
pid_t g_spawned_checkpoint = -1;
char g_socket_path[128];
char g_ckpt_dir[4096];
char g_ghost_bin[4096];
char g_exe_path[4096]; // /proc/self/exe at start

ghost::agent::state &st = ghost_agent_state;

void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
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
    (void)!write(2, buf, len);
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
    if (slot->rseq_registered) {
        // glibc registers the 32-byte struct rseq even though it exports __rseq_size = 20.
        long r = sys::call(SYS_rseq, slot->fs_base + __rseq_offset, 32, 0, RSEQ_SIG);
        if (sys::failed(r)) ((volatile int32_t *)(slot->fs_base + __rseq_offset))[1] = -2;
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

void park_handler(int, siginfo_t *, void *ucontext) {
    int saved_errno = errno;
    thread_slot *volatile slot = find_slot(raw_gettid());
    if (!slot) return; // not part of this park: a thread born after the scan is found next round
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
    volatile uint32_t gen = load(&st.resume_gen);
    void *volatile interrupted = ucontext;
    if (ghost_context_save(&slot->ctx) == 0) {
        __atomic_store_n(&slot->state, (uint32_t)ghost::agent::slot_parked, __ATOMIC_RELEASE);
        __atomic_add_fetch(&st.parked, 1, __ATOMIC_ACQ_REL);
        futex_wake_all(&st.parked);
    } else {
        fix_task_state(slot);
        if (g_tid_offset >= 0) // see fix_lock_owners_after_restore
            ghost::agent::fix_interrupted_thread(interrupted, slot->old_tid, slot->tid);
        __atomic_add_fetch(&st.restored, 1, __ATOMIC_ACQ_REL);
        futex_wake_all(&st.restored);
    }
    while (load(&st.resume_gen) == gen)
        futex(&st.resume_gen, FUTEX_WAIT, gen, nullptr);
    // Every signal is blocked in this handler: they wait for the mask the frame gives back.
    requeue(slot->pending, slot->pending_count, raw_gettid());
    errno = saved_errno;
}

void trigger_handler(int) {
    int saved_errno = errno;
    char c = 'c';
    if (g_trigger_pipe[1] >= 0) (void)!write(g_trigger_pipe[1], &c, 1);
    errno = saved_errno;
}

bool task_alive(int tid) {
    return sys::call(SYS_tgkill, sys::call(SYS_getpid), tid, 0) == 0;
}

// Lists /proc/self/task with getdents64 (opendir would malloc). Signals every thread not yet in the
// table. Returns the number of newly signalled threads, or -1.
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
            if (st.thread_count >= (uint32_t)ghost::agent::max_threads) {
                sys::call(SYS_close, dir);
                return -1;
            }
            thread_slot *slot = &st.threads[st.thread_count];
            memset(slot, 0, sizeof *slot);
            slot->tid = tid;
            slot->state = ghost::agent::slot_signalled;
            slot->flags = tid == (int)sys::call(SYS_getpid) ? ghost::image::thread_main : 0;
            __atomic_store_n(&st.thread_count, st.thread_count + 1, __ATOMIC_RELEASE);
            if (sys::call(SYS_tgkill, sys::call(SYS_getpid), tid, park_signal) != 0)
                slot->state = ghost::agent::slot_free; // it exited meanwhile
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
        if (t.state == ghost::agent::slot_signalled && !task_alive(t.tid)) t.state = 0;
        if (t.state != ghost::agent::slot_free && !(t.flags & ghost::image::thread_manager)) n++;
    }
    return n;
}

// Stops every application thread at its park point. On failure the parked ones are released.
bool park_all(const char **why) {
    int self = raw_gettid();
    st.parked = 0;
    st.restored = 0;
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
            *why = "cannot list or signal the process's threads";
            return false;
        }
        // Wait until every signalled thread is parked; threads may exit meanwhile.
        for (;;) {
            uint32_t parked = load(&st.parked);
            if (parked >= signalled_live_count()) break;
            struct timespec now, step = {0, 5 * 1000 * 1000};
            clock_gettime(CLOCK_MONOTONIC, &now);
            long ms = (now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000;
            if (ms > park_timeout_ms) {
                *why = "a thread did not reach its park point in 10 s (does it block signal 63?)";
                return false;
            }
            futex(&st.parked, FUTEX_WAIT, parked, &step);
        }
        if (added == 0) return true; // a full scan found nobody new: the set is closed
    }
}

void resume_all() {
    requeue(st.shared_pending, st.shared_pending_count, 0);
    st.shared_pending_count = 0;
    __atomic_add_fetch(&st.resume_gen, 1, __ATOMIC_ACQ_REL);
    futex_wake_all(&st.resume_gen);
}

void capture_process_state() {
    for (int sig = 1; sig <= ghost::image::max_signals; sig++) {
        ghost::uapi::kernel_sigaction ka = {};
        if (sig != SIGKILL && sig != SIGSTOP) sys::call(SYS_rt_sigaction, sig, nullptr, &ka, 8);
        st.actions[sig - 1] = {ka.handler, ka.flags, ka.restorer, ka.mask};
    }
    st.brk = (uint64_t)sys::call(SYS_brk, 0);
    // The manager blocks every signal and has none of its own pending: what it takes is the
    // process's shared queue.
    st.shared_pending_count =
        take_pending(pending_mask("ShdPnd:"), st.shared_pending, ghost::agent::max_pending_shared);
    struct itimerval it = {};
    getitimer(ITIMER_REAL, &it);
    st.itimer_real[0] = (uint64_t)it.it_interval.tv_sec;
    st.itimer_real[1] = (uint64_t)it.it_interval.tv_usec;
    st.itimer_real[2] = (uint64_t)it.it_value.tv_sec;
    st.itimer_real[3] = (uint64_t)it.it_value.tv_usec;
}

void set_internal_fds(int conn) {
    st.internal_fd_count = 0;
    const int fds[] = {g_listen_fd, g_trigger_pipe[0], g_trigger_pipe[1], conn};
    for (int fd : fds)
        if (fd >= 0) st.internal_fds[st.internal_fd_count++] = fd;
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
    g_listen_fd = fd;
    if (pipe2(g_trigger_pipe, O_CLOEXEC | O_NONBLOCK) != 0)
        g_trigger_pipe[0] = g_trigger_pipe[1] = -1;
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
// lock_owners.h): rewritten while every other thread is still held. Without the tid field of
// struct pthread (g_tid_offset unknown) glibc keeps using the old ids, which then stay right.
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
    if (!n || g_tid_offset < 0) return;
    ghost::agent::lock_fix_result r = ghost::agent::fix_lock_owners(changes, n, heads, h);
    if (r.incomplete)
        say("not all memory could be checked for locks held under the threads' old ids");
}

// The manager's half of a restore: runs in the new process once its own context is back.
void after_restore_manager(thread_slot *self) {
    fix_task_state(self);
    // Threads that exited while being parked left free slots: only parked ones come back.
    uint32_t others = 0;
    for (uint32_t i = 1; i < st.thread_count; i++)
        others += st.threads[i].state == ghost::agent::slot_parked;
    for (uint32_t got; (got = load(&st.restored)) < others;)
        futex(&st.restored, FUTEX_WAIT, got, nullptr);
    if (st.restorer_end > st.restorer_start)
        munmap((void *)st.restorer_start, st.restorer_end - st.restorer_start);
    fix_lock_owners_after_restore();
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
    g_trigger_pipe[0] = g_trigger_pipe[1] = -1;
    g_spawned_checkpoint = -1;
    open_control_socket();
    restore_timers();
}

// Returns true when it returns in a restored process, where `conn` is not a descriptor of ours.
bool handle_park(int conn) {
    const char *why = nullptr;
    set_internal_fds(conn);
    if (!park_all(&why)) {
        resume_all();
        char line[256];
        int n = snprintf(line, sizeof line, "ERROR %s\n", why);
        ghost::control::write_all(conn, line, (size_t)n);
        return false;
    }
    capture_process_state();
    thread_slot *volatile self = &st.threads[0];
    record_task_state(self);
    volatile uint32_t gen = load(&st.resume_gen);
    (void)gen;
    if (ghost_context_save(&self->ctx) == 0) {
        char line[128];
        int n = snprintf(line, sizeof line, "PARKED %lx %u\n", (unsigned long)&st,
                         (unsigned)st.thread_count);
        ghost::control::write_all(conn, line, (size_t)n);
        // Blocks until the exporter is done; EOF (the client died) also resumes.
        long got = ghost::control::read_line(conn, line, sizeof line, -1);
        resume_all();
        if (got >= 0 && strcmp(line, "RESUME") == 0)
            ghost::control::write_all(conn, "RESUMED\n", 8);
        return false;
    }
    after_restore_manager(self);
    resume_all();
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
        g_spawned_checkpoint = child;
    else
        say("cannot start %s for a signalled checkpoint", g_ghost_bin);
    posix_spawn_file_actions_destroy(&fa);
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
    if (strcmp(line, "PARK") == 0) {
        return handle_park(conn);
    } else if (strcmp(line, "PING") == 0) {
        char reply[48];
        int n = snprintf(reply, sizeof reply, "PONG %d\n", getpid());
        ghost::control::write_all(conn, reply, (size_t)n);
    } else {
        ghost::control::write_all(conn, "ERROR unknown request\n", 22);
    }
    return false;
}

void *manager_main(void *) {
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, nullptr);
    for (;;) {
        if (g_spawned_checkpoint > 0 && waitpid(g_spawned_checkpoint, nullptr, WNOHANG) != 0)
            g_spawned_checkpoint = -1;
        struct pollfd p[2] = {{g_listen_fd, POLLIN, 0}, {g_trigger_pipe[0], POLLIN, 0}};
        int r = poll(p, 2, 1000);
        if (r <= 0) continue;
        if (p[1].revents & POLLIN) {
            char drain[16];
            while (read(g_trigger_pipe[0], drain, sizeof drain) > 0) {
            }
            spawn_checkpoint();
        }
        if (p[0].revents & POLLIN) {
            int conn = accept4(g_listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
            if (conn < 0) continue;
            // After a restore, `conn` is a number from the old process: the application may
            // already have reopened it, so it must not be closed.
            if (!serve(conn)) close(conn);
        }
    }
    return nullptr;
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

void start_manager() {
    if (!open_control_socket()) return;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old); // the manager is born with every signal blocked
    pthread_t manager;
    if (pthread_create(&manager, &attr, confirm_tid_offset, nullptr) != 0)
        say("cannot start the manager thread");
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    pthread_attr_destroy(&attr);
}

void after_fork_child() {
    // A forked child is a process of its own: it gets its own socket and manager.
    g_spawned_checkpoint = -1;
    if (g_listen_fd >= 0) close(g_listen_fd);
    for (int &fd : g_trigger_pipe)
        if (fd >= 0) close(fd), fd = -1;
    g_listen_fd = -1;
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
    const char *trig = getenv("GHOST_CKPT_SIGNAL");
    if (trig) g_trigger_signal = atoi(trig);
    find_tid_offset();
    ghost::agent::lock_owners_init();
    ssize_t n = readlink("/proc/self/exe", g_exe_path, sizeof g_exe_path - 1);
    g_exe_path[n > 0 ? n : 0] = 0;

    struct sigaction sa = {};
    sa.sa_sigaction = park_handler;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigfillset(&sa.sa_mask);
    sigaction(park_signal, &sa, nullptr);
    if (g_trigger_signal > 0 && g_trigger_signal < 65) {
        struct sigaction ta = {};
        ta.sa_handler = trigger_handler;
        ta.sa_flags = SA_RESTART;
        sigaction(g_trigger_signal, &ta, nullptr);
    }
    start_manager();
    pthread_atfork(nullptr, nullptr, after_fork_child);
    atexit(remove_socket);
}

} // namespace
