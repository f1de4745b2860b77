// SPDX-License-Identifier: Apache-2.0
// Upper signal handlers always run with the upper FS (DESIGN 2.5).
//
// A signal can arrive while a thread executes in the lower half, i.e. with a lower TCB in FS; the
// application's handler would then read the lower TLS (errno, canary, thread_local). libghost
// interposes sigaction() and signal(): the kernel sees one trampoline, which switches to the
// interrupted thread's upper FS when it finds a lower one, calls the application's handler, and
// switches back. Only active in a process where the layer runs; otherwise plain pass-through.
#include <dlfcn.h>
#include <signal.h>
#include <sys/syscall.h>
#include <ucontext.h>

#include <atomic>
#include <cerrno>

#include "runtime.h"

namespace ghost::mpi {
namespace {

using sigaction_fn = int (*)(int, const struct sigaction *, struct sigaction *);

struct user_handler {
    std::atomic<void *> fn{nullptr};
    std::atomic<int> flags{0};
};
user_handler g_handlers[NSIG];

sigaction_fn real_sigaction() {
    static sigaction_fn fn = (sigaction_fn)dlsym(RTLD_NEXT, "sigaction");
    return fn;
}

long raw_syscall4(long nr, long a, long b, long c) {
    long ret;
    asm volatile("syscall" : "=a"(ret) : "a"(nr), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
    return ret;
}

// The signal came to one of the lower half's own threads (the MPI library started it without
// blocking signals): the program's handler cannot run on its TLS. That thread leaves blocking
// every signal (the two glibc keeps for itself aside), and the signal goes back to the process's
// queue for an upper thread to take. A sigqueue()d one goes back as it came; the kernel lets a
// thread re-send a kill()'s, a tgkill()'s or its own signals (si_code >= 0) only to itself, so
// those go back as a kill() of the process's own (the handler sees this pid as the sender). A
// fault of the thread's own is not passed on: it comes again, blocked, and the kernel ends the
// process as it would without a handler. Raw system calls only: no TLS here.
__attribute__((no_stack_protector)) void pass_to_upper_thread(int sig, siginfo_t *si, void *uc) {
    uint64_t all = ~((1ULL << (32 - 1)) | (1ULL << (33 - 1)));
    __builtin_memcpy(&((ucontext_t *)uc)->uc_sigmask, &all, sizeof all);
    const int code = si ? si->si_code : SI_USER;
    bool fault = code > 0 && (sig == SIGSEGV || sig == SIGBUS || sig == SIGILL || sig == SIGFPE ||
                              sig == SIGTRAP);
    if (fault) return;
    long pid = raw_syscall4(SYS_getpid, 0, 0, 0);
    if (code < 0 && code != SI_TKILL)
        raw_syscall4(SYS_rt_sigqueueinfo, pid, sig, (long)si);
    else
        raw_syscall4(SYS_kill, pid, sig, 0);
}

__attribute__((no_stack_protector, noinline)) void trampoline(int sig, siginfo_t *si, void *uc) {
    uintptr_t fs = read_fs_base();
    uintptr_t up = upper_fs_for(fs); // non-zero only when FS is a lower TCB lent to an upper thread
    if (!up && fs_is_upper(fs) == 0) return pass_to_upper_thread(sig, si, uc);
    if (up) write_fs(up);
    int saved_errno = errno;
    void *fn = g_handlers[sig].fn.load(std::memory_order_acquire);
    if (fn && fn != (void *)SIG_IGN && fn != (void *)SIG_DFL) {
        if (g_handlers[sig].flags.load(std::memory_order_relaxed) & SA_SIGINFO)
            ((void (*)(int, siginfo_t *, void *))fn)(sig, si, uc);
        else
            ((void (*)(int))fn)(sig);
    }
    errno = saved_errno;
    if (up) write_fs(fs);
}

bool wrapped(void *h) {
    return h == (void *)trampoline;
}

} // namespace

void signals_adopt_installed() {
    sigaction_fn real = real_sigaction();
    // The ghost agent's park handler must see the interrupted FS: it stays as it is.
    Dl_info agent = {};
    void *reg = dlsym(RTLD_DEFAULT, "ghost_agent_register");
    if (reg && !dladdr(reg, &agent)) agent.dli_fbase = nullptr;
    for (int sig = 1; sig < NSIG; sig++) {
        if (sig == SIGKILL || sig == SIGSTOP) continue;
        struct sigaction cur = {};
        if (real(sig, nullptr, &cur) != 0) continue;
        void *fn = (cur.sa_flags & SA_SIGINFO) ? (void *)cur.sa_sigaction : (void *)cur.sa_handler;
        if (fn == (void *)SIG_IGN || fn == (void *)SIG_DFL || wrapped(fn)) continue;
        Dl_info where = {};
        if (agent.dli_fbase && dladdr(fn, &where) && where.dli_fbase == agent.dli_fbase) continue;
        g_handlers[sig].flags.store(cur.sa_flags);
        g_handlers[sig].fn.store(fn, std::memory_order_release);
        struct sigaction mine = cur;
        mine.sa_flags |= SA_SIGINFO;
        mine.sa_sigaction = trampoline;
        if (real(sig, &mine, nullptr) != 0) g_handlers[sig].fn.store(nullptr);
    }
}

} // namespace ghost::mpi

using namespace ghost::mpi;

extern "C" __attribute__((visibility("default"))) int
sigaction(int sig, const struct sigaction *act, struct sigaction *old) {
    sigaction_fn real = real_sigaction();
    if (!layer_active() || sig <= 0 || sig >= NSIG) return real(sig, act, old);
    void *user_prev = g_handlers[sig].fn.load();
    int user_prev_flags = g_handlers[sig].flags.load();
    bool install = act && act->sa_handler != SIG_IGN && act->sa_handler != SIG_DFL;
    struct sigaction prev;
    int rc;
    if (install) {
        struct sigaction mine = *act;
        mine.sa_flags |= SA_SIGINFO;
        mine.sa_sigaction = trampoline;
        g_handlers[sig].flags.store(act->sa_flags);
        g_handlers[sig].fn.store((act->sa_flags & SA_SIGINFO) ? (void *)act->sa_sigaction
                                                              : (void *)act->sa_handler,
                                 std::memory_order_release);
        rc = real(sig, &mine, &prev);
        if (rc != 0) {
            g_handlers[sig].fn.store(user_prev);
            g_handlers[sig].flags.store(user_prev_flags);
        }
    } else {
        rc = real(sig, act, &prev);
    }
    if (rc == 0 && old) {
        *old = prev;
        if (wrapped((void *)prev.sa_sigaction)) { // report the application's own handler, not ours
            old->sa_flags = (prev.sa_flags & ~SA_SIGINFO) | (user_prev_flags & SA_SIGINFO);
            if (user_prev_flags & SA_SIGINFO)
                old->sa_sigaction = (void (*)(int, siginfo_t *, void *))user_prev;
            else
                old->sa_handler = (sighandler_t)user_prev;
        }
    }
    return rc;
}

extern "C" __attribute__((visibility("default"))) sighandler_t signal(int sig,
                                                                      sighandler_t handler) {
    struct sigaction act = {}, old = {};
    act.sa_handler = handler;
    act.sa_flags = SA_RESTART;
    sigemptyset(&act.sa_mask);
    sigaddset(&act.sa_mask, sig);
    if (sigaction(sig, &act, &old) != 0) return SIG_ERR;
    return old.sa_handler;
}
