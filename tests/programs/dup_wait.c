// SPDX-License-Identifier: Apache-2.0
// The copy made by `ghost duplicate` must stay out of the original's way, and `ghost duplicate`
// must end with the copy's status. Steered through files in --dir by
// tests/integration/agent_cases.py (dup_wait):
//  * with two helper threads running (the copy re-creates them), the program writes DIR/ready and
//    polls waitpid(-1, WNOHANG) and waitid(P_ALL) every millisecond until DIR/go appears: it has
//    no child of its own, so each must find none; no SIGCHLD may arrive;
//  * the copy (getpid() differs, or as root its pid namespace: it keeps the pid) checks its helper
//  threads still count, prints "copy <status>"
//    and exits with --copy-status after --copy-ms: the original's waits run while the copy
//    lives, exits and is reaped;
//  * after DIR/go (written once `ghost duplicate` ended), the original forks a child of its own
//    that exits with 5: wait() returns exactly it, a further wait() ECHILD, and exactly one
//    SIGCHLD came (its child's).
// It also holds an unnamed file opened as Python's tempfile does (O_TMPFILE|O_NOFOLLOW: the
// kernel keeps O_NOFOLLOW in its flags), which the copy must hold too, with its contents.
#include "common.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>

static const char *g_dir;
static volatile sig_atomic_t g_sigchld = 0;
static volatile uint64_t g_ticks[2];
static volatile int g_stop = 0;
// The original's pid, in memory: in a register or the top of the stack of the main thread the
// copy's agent would take it for the thread's old id and rewrite it (lock_owners.h).
static volatile pid_t g_self;
static volatile ino_t g_self_ns;

static ino_t pid_namespace(void) {
    struct stat sb;
    return stat("/proc/self/ns/pid", &sb) == 0 ? sb.st_ino : 0;
}

static int is_copy(void) {
    return getpid() != g_self || pid_namespace() != g_self_ns;
}

static int exists(const char *name) {
    char p[4096];
    t_path(p, sizeof p, g_dir, name);
    return access(p, F_OK) == 0;
}

static void on_sigchld(int sig) {
    (void)sig;
    g_sigchld = g_sigchld + 1;
}

static void *helper(void *arg) {
    int i = (int)(intptr_t)arg;
    while (!g_stop) {
        g_ticks[i] = g_ticks[i] + 1;
        t_sleep_ns(100 * 1000);
    }
    return NULL;
}

static void no_child_seen(const char *when) {
    int status = 0;
    pid_t w = waitpid(-1, &status, WNOHANG);
    if (w > 0) t_fail("%s: waitpid(-1) saw pid %d (status %#x)", when, (int)w, status);
    if (w < 0 && errno != ECHILD) t_fail("%s: waitpid(-1): %s", when, strerror(errno));
    siginfo_t info;
    memset(&info, 0, sizeof info);
    if (waitid(P_ALL, 0, &info, WEXITED | WNOHANG) == 0 && info.si_pid != 0)
        t_fail("%s: waitid(P_ALL) saw pid %d", when, (int)info.si_pid);
    if (g_sigchld) t_fail("%s: a SIGCHLD arrived", when);
}

int main(int argc, char **argv) {
    t_init("dup_wait");
    static const char *const known[] = {"--dir", "--copy-status", "--copy-ms", NULL};
    const char *usage = "--dir DIR [--copy-status N] [--copy-ms MS]";
    t_check_args(argc, argv, known, usage);
    g_dir = t_opt_str(argc, argv, "--dir", NULL);
    if (!g_dir) t_usage(usage);
    int copy_status = (int)t_opt_u64(argc, argv, "--copy-status", 42);
    uint64_t copy_ms = t_opt_u64(argc, argv, "--copy-ms", 300);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigchld;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGCHLD, &sa, NULL);
    pthread_t threads[2];
    for (int i = 0; i < 2; i++)
        if (pthread_create(&threads[i], NULL, helper, (void *)(intptr_t)i) != 0)
            t_fail("pthread_create");
    g_self = getpid();
    g_self_ns = pid_namespace();
    int tmp = open(g_dir, O_TMPFILE | O_RDWR | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (tmp < 0 || write(tmp, "tmp!", 4) != 4)
        t_fail("O_TMPFILE in %s: %s", g_dir, strerror(errno));
    char p[4096];
    t_path(p, sizeof p, g_dir, "ready");
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) t_fail("create %s: %s", p, strerror(errno));
    close(fd);
    t_line("ready");
    uint64_t copy_since = 0, copy_rounds = 0;
    for (int i = 0; !exists("go"); i++) {
        if (i > 60 * 1000) t_fail("%s/go did not appear within 60 s", g_dir);
        if (is_copy()) {
            if (!copy_rounds++) copy_since = g_ticks[0] + g_ticks[1];
            if (copy_rounds >= copy_ms) { // about a millisecond a round
                uint64_t now = g_ticks[0] + g_ticks[1];
                if (now == copy_since) t_fail("the copy's helper threads do not run");
                char got[4] = {0};
                if (pread(tmp, got, 4, 0) != 4 || memcmp(got, "tmp!", 4) != 0 ||
                    lseek(tmp, 0, SEEK_CUR) != 4)
                    t_fail("the copy's O_TMPFILE lost its contents or offset");
                t_line("copy %d", copy_status);
                exit(copy_status);
            }
        } else {
            no_child_seen("while duplicated");
        }
        t_sleep_ns(1000 * 1000);
    }
    if (is_copy()) t_fail("the copy saw %s/go", g_dir);
    no_child_seen("after the copy ended");
    pid_t child = fork();
    if (child < 0) t_fail("fork: %s", strerror(errno));
    if (child == 0) _exit(5);
    int status = 0;
    pid_t w = wait(&status);
    if (w != child || !WIFEXITED(status) || WEXITSTATUS(status) != 5)
        t_fail("wait() returned %d status %#x, expected its child %d with 5", (int)w, status,
               (int)child);
    w = wait(&status);
    if (w != -1 || errno != ECHILD) t_fail("a second wait() returned %d (expected ECHILD)", (int)w);
    for (int i = 0; i < 1000 && g_sigchld == 0; i++)
        t_sleep_ns(1000 * 1000);
    if (g_sigchld != 1) t_fail("%d SIGCHLD arrived, expected 1 (its own child's)", (int)g_sigchld);
    g_stop = 1;
    for (int i = 0; i < 2; i++)
        pthread_join(threads[i], NULL);
    return t_pass();
}
