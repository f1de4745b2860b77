// SPDX-License-Identifier: Apache-2.0
// A single-threaded program that blocks every signal for a while, steered through files in --dir
// by tests/integration/agent_cases.py: it writes DIR/blocked (holding its tid) once every signal
// is blocked, waits for DIR/go, checks that its signal mask is still the one it set (a
// checkpoint and restart meanwhile must not show), unblocks them, writes DIR/unblocked, then
// waits for DIR/stop and passes.
#include "common.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/syscall.h>

static const char *g_dir;

static int exists(const char *name) {
    char p[4096];
    t_path(p, sizeof p, g_dir, name);
    return access(p, F_OK) == 0;
}

static void create(const char *name, const char *text) {
    char p[4096], tmp[4200];
    t_path(p, sizeof p, g_dir, name);
    snprintf(tmp, sizeof tmp, "%s.tmp", p);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) t_fail("create %s: %s", tmp, strerror(errno));
    t_write_all(fd, text, strlen(text), tmp);
    close(fd);
    if (rename(tmp, p) != 0) t_fail("rename %s: %s", tmp, strerror(errno));
}

// Waits (a bounded time) for DIR/name; some work between looks keeps the program busy.
static uint64_t wait_for(const char *name, uint64_t h) {
    for (int i = 0; i < 60 * 200; i++) {
        if (exists(name)) return h;
        for (int j = 0; j < 1000; j++)
            h = t_mix64(h + (uint64_t)j);
        t_sleep_ns(5 * 1000 * 1000);
    }
    t_fail("%s/%s did not appear within 60 s", g_dir, name);
}

int main(int argc, char **argv) {
    t_init("blocked_park");
    static const char *const known[] = {"--dir", NULL};
    t_check_args(argc, argv, known, "--dir DIR");
    g_dir = t_opt_str(argc, argv, "--dir", NULL);
    if (!g_dir) t_usage("--dir DIR");
    sigset_t all, old;
    sigfillset(&all);
    if (sigprocmask(SIG_BLOCK, &all, &old) != 0) t_fail("sigprocmask: %s", strerror(errno));
    char tid[32];
    snprintf(tid, sizeof tid, "%ld\n", (long)syscall(SYS_gettid));
    create("blocked", tid);
    t_line("every signal blocked");
    sigset_t set_mask, now;
    if (sigprocmask(SIG_BLOCK, NULL, &set_mask) != 0) t_fail("sigprocmask: %s", strerror(errno));
    uint64_t h = wait_for("go", 1);
    if (sigprocmask(SIG_BLOCK, NULL, &now) != 0) t_fail("sigprocmask: %s", strerror(errno));
    for (int sig = 1; sig <= 64; sig++)
        if (sigismember(&now, sig) != sigismember(&set_mask, sig))
            t_fail("signal %d is %s blocked", sig, sigismember(&now, sig) ? "now" : "no longer");
    if (sigprocmask(SIG_SETMASK, &old, NULL) != 0) t_fail("sigprocmask: %s", strerror(errno));
    create("unblocked", "");
    t_line("signals unblocked");
    h = wait_for("stop", h);
    (void)h;
    return t_pass();
}
