// SPDX-License-Identifier: Apache-2.0
// Signal state that must survive a checkpoint:
//  * handlers installed with sigaction: SIGUSR1 (SA_SIGINFO | SA_ONSTACK | SA_RESTART, sa_mask
//    {SIGHUP}) runs on an alternate signal stack, SIGHUP (plain handler), SIGURG (SA_RESETHAND:
//    back to SIG_DFL after its first delivery), SIGPIPE ignored, SIGALRM from an interval timer;
//  * every step the main thread sends itself signals (raise, sigqueue with a value, kill) and
//    checks that each was delivered once, with the right si_code/si_value, on the right stack,
//    with the right mask inside the handler;
//  * the main thread blocks {SIGWINCH, SIGPWR, SIGPROF}; a worker thread blocks a different set
//    and waits for SIGPROF with sigwaitinfo(); both check their own masks every step;
//  * (--pending 1, the default) a SIGWINCH raised at the start and a SIGPWR queued with a value
//    stay pending (blocked) for the whole run and must be delivered when unblocked at the end.
// Counters of all deliveries are printed every tenth of the run.
#include "common.h"

#include <pthread.h>
#include <signal.h>
#include <sys/time.h>

#define ALT_SIZE (64 * 1024)
#define ALARM_US 50000

static char *g_alt;
static volatile sig_atomic_t g_usr1, g_hup, g_winch, g_pwr, g_urg, g_alarm;
static volatile sig_atomic_t g_err;
static volatile int g_expect_code, g_expect_value, g_pwr_value;
// The pid that sent the SIGUSR1 being handled. A duplicate taken while the handler runs holds the
// original's siginfo (sent by the original); a signal still pending when it was taken names the
// copy: either is right, a third pid is not.
static volatile pid_t g_sender;

static int is_tkill(int code) {
    return code == SI_TKILL || code == SI_USER;
}

static void set_err(int code) {
    if (!g_err) g_err = code;
}

static int on_alt_stack(const void *p) {
    return (const char *)p >= g_alt && (const char *)p < g_alt + ALT_SIZE;
}

static void on_usr1(int sig, siginfo_t *info, void *uc) {
    (void)uc;
    char local = 0;
    if (!on_alt_stack(&local)) set_err(1);
    if (sig != SIGUSR1 || info->si_signo != SIGUSR1) set_err(2);
    sigset_t m;
    pthread_sigmask(SIG_BLOCK, NULL, &m);
    if (!sigismember(&m, SIGHUP)) set_err(3);
    if (!sigismember(&m, SIGUSR1)) set_err(4);
    // Thread-directed signals (raise, tgkill) carry SI_TKILL or, on newer kernels, SI_USER.
    if (g_expect_code == SI_QUEUE ? info->si_code != SI_QUEUE : !is_tkill(info->si_code))
        set_err(5);
    if (info->si_code == SI_QUEUE && info->si_value.sival_int != g_expect_value) set_err(6);
    if (info->si_pid != getpid() && info->si_pid != g_sender) set_err(7);
    stack_t ss;
    if (sigaltstack(NULL, &ss) != 0 || !(ss.ss_flags & SS_ONSTACK)) set_err(8);
    g_usr1++;
}

static void on_hup(int sig) {
    char local = 0;
    if (sig != SIGHUP || on_alt_stack(&local)) set_err(9);
    g_hup++;
}

static void on_winch(int sig, siginfo_t *info, void *uc) {
    (void)uc;
    if (sig != SIGWINCH || !is_tkill(info->si_code)) set_err(10);
    g_winch++;
}

static void on_pwr(int sig, siginfo_t *info, void *uc) {
    (void)uc;
    if (sig != SIGPWR || info->si_code != SI_QUEUE) set_err(11);
    g_pwr_value = info->si_value.sival_int;
    g_pwr++;
}

static void on_urg(int sig) {
    if (sig != SIGURG) set_err(12);
    g_urg++;
}

static void on_alarm(int sig) {
    if (sig != SIGALRM) set_err(13);
    g_alarm++;
}

static const char *err_text(int code) {
    switch (code) {
    case 1:
        return "SIGUSR1 handler not on the alternate stack";
    case 2:
        return "SIGUSR1 handler got a wrong signal number";
    case 3:
        return "SIGHUP not blocked inside the SIGUSR1 handler (sa_mask lost)";
    case 4:
        return "SIGUSR1 not blocked inside its own handler";
    case 5:
        return "SIGUSR1 with an unexpected si_code";
    case 6:
        return "SIGUSR1 with a wrong si_value";
    case 7:
        return "SIGUSR1 with a wrong si_pid";
    case 8:
        return "sigaltstack does not report SS_ONSTACK inside the handler";
    case 9:
        return "SIGHUP handler on the alternate stack or wrong signal";
    case 10:
        return "SIGWINCH delivered with a wrong si_code";
    case 11:
        return "SIGPWR delivered with a wrong si_code";
    case 12:
        return "SIGURG handler got a wrong signal";
    case 13:
        return "SIGALRM handler got a wrong signal";
    default:
        return "unknown";
    }
}

static void install(int sig, void (*h)(int), void (*sa)(int, siginfo_t *, void *), int flags,
                    int mask_sig) {
    struct sigaction act;
    memset(&act, 0, sizeof act);
    if (sa)
        act.sa_sigaction = sa;
    else
        act.sa_handler = h;
    act.sa_flags = flags | (sa ? SA_SIGINFO : 0);
    sigemptyset(&act.sa_mask);
    if (mask_sig) sigaddset(&act.sa_mask, mask_sig);
    if (sigaction(sig, &act, NULL) != 0) t_fail("sigaction(%d): %s", sig, strerror(errno));
}

static void check_action(int sig, void *handler, int flags, int mask_sig) {
    struct sigaction act;
    if (sigaction(sig, NULL, &act) != 0) t_fail("sigaction query %d", sig);
    void *h = (act.sa_flags & SA_SIGINFO) ? (void *)act.sa_sigaction : (void *)act.sa_handler;
    if (h != handler) t_fail("signal %d (%s): handler %p != %p", sig, strsignal(sig), h, handler);
    const int interesting = SA_SIGINFO | SA_ONSTACK | SA_RESTART | SA_RESETHAND | SA_NODEFER;
    if ((act.sa_flags & interesting) != flags)
        t_fail("signal %d (%s): flags %#x != %#x", sig, strsignal(sig), act.sa_flags & interesting,
               flags);
    if (mask_sig && !sigismember(&act.sa_mask, mask_sig))
        t_fail("signal %d (%s): sa_mask lost %s", sig, strsignal(sig), strsignal(mask_sig));
}

// Signals this test uses, and whether they must be blocked in the calling thread.
static void check_mask(const int *blocked, int nb, const int *unblocked, int nu, const char *who) {
    sigset_t m;
    if (pthread_sigmask(SIG_BLOCK, NULL, &m) != 0) t_fail("pthread_sigmask query");
    for (int i = 0; i < nb; i++)
        if (!sigismember(&m, blocked[i]))
            t_fail("%s: %s is no longer blocked", who, strsignal(blocked[i]));
    for (int i = 0; i < nu; i++)
        if (sigismember(&m, unblocked[i]))
            t_fail("%s: %s became blocked", who, strsignal(unblocked[i]));
}

static const int k_main_blocked[] = {SIGWINCH, SIGPWR, SIGPROF};
static const int k_main_unblocked[] = {SIGUSR1, SIGHUP, SIGURG, SIGALRM, SIGPIPE};
static const int k_worker_blocked[] = {SIGUSR1, SIGHUP, SIGWINCH, SIGPWR, SIGPROF, SIGALRM, SIGURG};
static const int k_worker_unblocked[] = {SIGPIPE, SIGCHLD};

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cv = PTHREAD_COND_INITIALIZER;
static uint64_t g_prof;
static int g_stop;

static void *worker(void *arg) {
    (void)arg;
    sigset_t set;
    sigemptyset(&set);
    for (size_t i = 0; i < sizeof k_worker_blocked / sizeof *k_worker_blocked; i++)
        sigaddset(&set, k_worker_blocked[i]);
    if (pthread_sigmask(SIG_SETMASK, &set, NULL) != 0) t_fail("worker pthread_sigmask");
    sigset_t wait;
    sigemptyset(&wait);
    sigaddset(&wait, SIGPROF);
    for (;;) {
        siginfo_t info;
        int sig = sigwaitinfo(&wait, &info);
        if (sig < 0 && errno == EINTR) continue;
        if (sig != SIGPROF) t_fail("sigwaitinfo: %d %s", sig, strerror(errno));
        if (!is_tkill(info.si_code)) t_fail("worker: SIGPROF with si_code %d", info.si_code);
        check_mask(k_worker_blocked, sizeof k_worker_blocked / sizeof *k_worker_blocked,
                   k_worker_unblocked, sizeof k_worker_unblocked / sizeof *k_worker_unblocked,
                   "worker thread");
        pthread_mutex_lock(&g_mu);
        int stop = g_stop;
        if (!stop) g_prof++;
        pthread_cond_signal(&g_cv);
        pthread_mutex_unlock(&g_mu);
        if (stop) return NULL;
    }
}

int main(int argc, char **argv) {
    t_init("signals");
    static const char *const known[] = {"--steps", "--pending", NULL};
    const char *usage = "[--steps N] [--pending 0|1]";
    t_check_args(argc, argv, known, usage);
    uint64_t steps = t_opt_u64(argc, argv, "--steps", 350000);
    int pending = (int)t_opt_u64(argc, argv, "--pending", 1);
    if (steps < 10) t_usage(usage);
    t_line("signals steps=%" PRIu64 " pending=%d", steps, pending);

    g_alt = malloc(ALT_SIZE);
    if (!g_alt) t_fail("malloc");
    stack_t ss = {.ss_sp = g_alt, .ss_flags = 0, .ss_size = ALT_SIZE};
    if (sigaltstack(&ss, NULL) != 0) t_fail("sigaltstack: %s", strerror(errno));

    install(SIGUSR1, NULL, on_usr1, SA_ONSTACK | SA_RESTART, SIGHUP);
    install(SIGHUP, on_hup, NULL, SA_RESTART, 0);
    install(SIGWINCH, NULL, on_winch, SA_RESTART, 0);
    install(SIGPWR, NULL, on_pwr, SA_RESTART, 0);
    install(SIGURG, on_urg, NULL, SA_RESETHAND | SA_NODEFER, 0);
    install(SIGALRM, on_alarm, NULL, SA_RESTART, 0);
    if (signal(SIGPIPE, SIG_IGN) == SIG_ERR) t_fail("signal(SIGPIPE)");

    sigset_t set;
    sigemptyset(&set);
    for (size_t i = 0; i < sizeof k_main_blocked / sizeof *k_main_blocked; i++)
        sigaddset(&set, k_main_blocked[i]);
    if (sigprocmask(SIG_SETMASK, &set, NULL) != 0) t_fail("sigprocmask");

    // The worker starts with the worker's blocked set (it sets the same itself): a process-wide
    // SIGUSR1 queued below must never find it unblocked, without an alternate stack.
    sigset_t main_set = set, worker_set;
    sigemptyset(&worker_set);
    for (size_t i = 0; i < sizeof k_worker_blocked / sizeof *k_worker_blocked; i++)
        sigaddset(&worker_set, k_worker_blocked[i]);
    if (pthread_sigmask(SIG_SETMASK, &worker_set, NULL) != 0) t_fail("pthread_sigmask");
    pthread_t th;
    if (pthread_create(&th, NULL, worker, NULL) != 0) t_fail("pthread_create");
    if (pthread_sigmask(SIG_SETMASK, &main_set, NULL) != 0) t_fail("pthread_sigmask");

    if (pending) {
        raise(SIGWINCH); // thread-directed, stays pending on the main thread
        union sigval v = {.sival_int = 4242};
        if (sigqueue(getpid(), SIGPWR, v) != 0) t_fail("sigqueue SIGPWR: %s", strerror(errno));
    }
    raise(SIGURG);
    if (g_urg != 1) t_fail("SIGURG not delivered");

    struct itimerval it = {{0, ALARM_US}, {0, ALARM_US}};
    if (setitimer(ITIMER_REAL, &it, NULL) != 0) t_fail("setitimer: %s", strerror(errno));

    uint64_t usr1 = 0, hup = 0;
    for (uint64_t s = 0; s < steps; s++) {
        g_expect_code = SI_TKILL;
        g_sender = getpid();
        raise(SIGUSR1);
        if (g_usr1 != (sig_atomic_t)++usr1)
            t_fail("raise(SIGUSR1): count %d != %" PRIu64, (int)g_usr1, usr1);
        if (s % 3 == 0) {
            g_expect_code = SI_QUEUE;
            g_expect_value = (int)s;
            union sigval v = {.sival_int = (int)s};
            g_sender = getpid();
            if (sigqueue(getpid(), SIGUSR1, v) != 0) t_fail("sigqueue: %s", strerror(errno));
            if (g_usr1 != (sig_atomic_t)++usr1)
                t_fail("sigqueue(SIGUSR1): count %d != %" PRIu64, (int)g_usr1, usr1);
        }
        if (kill(getpid(), SIGHUP) != 0) t_fail("kill: %s", strerror(errno));
        if (g_hup != (sig_atomic_t)++hup)
            t_fail("kill(SIGHUP): count %d != %" PRIu64, (int)g_hup, hup);
        if (g_err) t_fail("step %" PRIu64 ": %s", s, err_text(g_err));

        if (pthread_kill(th, SIGPROF) != 0) t_fail("pthread_kill");
        pthread_mutex_lock(&g_mu);
        while (g_prof < s + 1)
            pthread_cond_wait(&g_cv, &g_mu);
        pthread_mutex_unlock(&g_mu);

        check_mask(k_main_blocked, sizeof k_main_blocked / sizeof *k_main_blocked, k_main_unblocked,
                   sizeof k_main_unblocked / sizeof *k_main_unblocked, "main thread");
        if (s % 16 == 0) {
            check_action(SIGUSR1, (void *)on_usr1, SA_SIGINFO | SA_ONSTACK | SA_RESTART, SIGHUP);
            check_action(SIGHUP, (void *)on_hup, SA_RESTART, 0);
            check_action(SIGWINCH, (void *)on_winch, SA_SIGINFO | SA_RESTART, 0);
            check_action(SIGPWR, (void *)on_pwr, SA_SIGINFO | SA_RESTART, 0);
            check_action(SIGALRM, (void *)on_alarm, SA_RESTART, 0);
            struct sigaction act;
            sigaction(SIGURG, NULL, &act);
            if (act.sa_handler != SIG_DFL)
                t_fail("SIGURG handler not reset to SIG_DFL (SA_RESETHAND)");
            sigaction(SIGPIPE, NULL, &act);
            if (act.sa_handler != SIG_IGN) t_fail("SIGPIPE no longer ignored");
            stack_t cur;
            if (sigaltstack(NULL, &cur) != 0) t_fail("sigaltstack query");
            if (cur.ss_sp != g_alt || cur.ss_size != ALT_SIZE ||
                (cur.ss_flags & (SS_DISABLE | SS_ONSTACK)))
                t_fail("alternate stack changed: sp=%p size=%zu flags=%#x", cur.ss_sp, cur.ss_size,
                       cur.ss_flags);
            if (pending) {
                sigset_t p;
                sigpending(&p);
                if (!sigismember(&p, SIGWINCH))
                    t_fail("pending SIGWINCH lost (step %" PRIu64 ")", s);
                if (!sigismember(&p, SIGPWR)) t_fail("pending SIGPWR lost (step %" PRIu64 ")", s);
            }
            if (g_winch || g_pwr) t_fail("a blocked signal was delivered");
            struct itimerval cur_it;
            getitimer(ITIMER_REAL, &cur_it);
            if (cur_it.it_interval.tv_sec != 0 || cur_it.it_interval.tv_usec != ALARM_US)
                t_fail("interval timer lost: interval %ld.%06ld", (long)cur_it.it_interval.tv_sec,
                       (long)cur_it.it_interval.tv_usec);
        }
        if (s % 1024 == 0) {
            int p[2];
            if (pipe(p) != 0) t_fail("pipe: %s", strerror(errno));
            close(p[0]);
            if (write(p[1], "x", 1) != -1 || errno != EPIPE)
                t_fail("write to a closed pipe did not fail with EPIPE");
            close(p[1]);
        }
        if ((s + 1) % (steps / 10) == 0)
            t_line("step %" PRIu64 " usr1=%" PRIu64 " hup=%" PRIu64 " prof=%" PRIu64, s + 1, usr1,
                   hup, s + 1);
    }

    struct itimerval off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &off, NULL);
    if (pending) {
        sigset_t w;
        sigemptyset(&w);
        sigaddset(&w, SIGWINCH);
        sigaddset(&w, SIGPWR);
        sigprocmask(SIG_UNBLOCK, &w, NULL);
        if (g_winch != 1)
            t_fail("pending SIGWINCH delivered %d times when unblocked, expected 1", (int)g_winch);
        if (g_pwr != 1)
            t_fail("pending SIGPWR delivered %d times when unblocked, expected 1", (int)g_pwr);
        if (g_pwr_value != 4242)
            t_fail("pending SIGPWR carried value %d, expected 4242", g_pwr_value);
    }
    if (g_err) t_fail("%s", err_text(g_err));
    pthread_mutex_lock(&g_mu);
    g_stop = 1;
    pthread_mutex_unlock(&g_mu);
    pthread_kill(th, SIGPROF);
    pthread_join(th, NULL);
    t_line("signals ok usr1=%" PRIu64 " hup=%" PRIu64 " pending=%d", usr1, hup, pending ? 2 : 0);
    return t_pass();
}
