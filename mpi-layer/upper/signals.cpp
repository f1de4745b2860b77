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

__attribute__((no_stack_protector, noinline)) void trampoline(int sig, siginfo_t *si, void *uc) {
    uintptr_t fs = read_fs_base();
    uintptr_t up = upper_fs_for(fs); // non-zero only when FS is a lower TCB lent to an upper thread
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
