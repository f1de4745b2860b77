// SPDX-License-Identifier: Apache-2.0
// Children that end in ways the kernel reports only once their last thread is gone: a child that
// enters seccomp (strict mode; a filter that kills the thread; a filter that kills the process; a
// filter that fails every other call with EPERM, exit_group included) and one whose main thread
// calls pthread_exit while another thread finishes later. For each, the parent's waitpid must
// return, within a bound, the status a plain process gets (a ghost agent thread left running in
// the child kept it alive forever), and the pthread_exit child must still run its atexit handler.
#include "common.h"

#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#define WAIT_LIMIT_S 20

static int g_report = -1; // write end of the pipe to the parent

// Allows read, write, exit, rt_sigreturn (and exit_group if asked); anything else gets `other`.
static void install_filter(unsigned other, int allow_exit_group) {
    struct sock_filter code[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_read, 5, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_write, 4, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_exit, 3, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_rt_sigreturn, 2, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, allow_exit_group ? SYS_exit_group : SYS_exit, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, other),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {(unsigned short)(sizeof code / sizeof code[0]), code};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) _exit(90);
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) != 0) _exit(91);
}

static void *late_thread(void *arg) {
    (void)arg;
    t_sleep_ns(200 * 1000 * 1000); // the main thread has long called pthread_exit
    return NULL;                   // the last thread: glibc calls exit(0)
}

static void at_exit_report(void) {
    t_write_all(g_report, "atexit\n", 7, "report pipe");
}

static void child(int kind) {
    // A thread killed by seccomp alone takes the process with it: no core file wanted.
    struct rlimit no_core = {0, 0};
    setrlimit(RLIMIT_CORE, &no_core);
    switch (kind) {
    case 0:
        prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT);
        t_write_all(g_report, "strict\n", 7, "report pipe");
        exit(3); // exit_group is not allowed: the kernel kills the thread
    case 1:
        install_filter(SECCOMP_RET_KILL_THREAD, 0);
        exit(4);
    case 2:
        install_filter(SECCOMP_RET_KILL_PROCESS, 0);
        exit(5);
    case 3:
        install_filter(SECCOMP_RET_ERRNO | EPERM, 0);
        exit(6); // exit_group fails with EPERM; glibc then ends the thread with SYS_exit(6)
    case 4: {
        atexit(at_exit_report);
        pthread_t t;
        if (pthread_create(&t, NULL, late_thread, NULL) != 0) _exit(92);
        pthread_exit(NULL);
    }
    }
    _exit(93);
}

static const char *const kinds[] = {"seccomp strict", "seccomp filter, kill thread",
                                    "seccomp filter, kill process", "seccomp filter, EPERM",
                                    "pthread_exit in main"};

int main(int argc, char **argv) {
    t_init("seccomp_child");
    static const char *const known[] = {NULL};
    t_check_args(argc, argv, known, "");
    const int n = (int)(sizeof kinds / sizeof kinds[0]);
    int expect[] = {SIGKILL, SIGSYS, SIGSYS, 6 << 8, 0};
    pid_t pids[5];
    int pipes[5][2];
    // All children at once: each may take the ghost agent up to a second to end.
    for (int k = 0; k < n; k++) {
        if (pipe(pipes[k]) != 0) t_fail("pipe: %s", strerror(errno));
        fflush(stdout);
        pids[k] = fork();
        if (pids[k] < 0) t_fail("fork: %s", strerror(errno));
        if (pids[k] == 0) {
            close(pipes[k][0]);
            g_report = pipes[k][1];
            child(k);
        }
        close(pipes[k][1]);
    }
    for (int k = 0; k < n; k++) {
        int ws = 0;
        pid_t got = 0;
        for (int tries = 0; tries < WAIT_LIMIT_S * 100 && got == 0; tries++) {
            got = waitpid(pids[k], &ws, WNOHANG);
            if (got == 0) t_sleep_ns(10 * 1000 * 1000);
        }
        if (got == 0) {
            for (int j = k; j < n; j++)
                kill(pids[j], SIGKILL);
            t_fail("%s: the child did not end within %d s (a thread of it still runs)", kinds[k],
                   WAIT_LIMIT_S);
        }
        if (got < 0) t_fail("%s: waitpid: %s", kinds[k], strerror(errno));
        int want = expect[k];
        int ok = (want & 0x7f) ? WIFSIGNALED(ws) && WTERMSIG(ws) == want
                               : WIFEXITED(ws) && WEXITSTATUS(ws) == want >> 8;
        if (!ok)
            t_fail("%s: wait status %#x, expected %s %d", kinds[k], ws,
                   (want & 0x7f) ? "signal" : "exit code", (want & 0x7f) ? want : want >> 8);
        char said[64] = "";
        size_t len = t_read_full(pipes[k][0], said, sizeof said - 1, "report pipe");
        said[len] = 0;
        close(pipes[k][0]);
        const char *want_said = k == 0 ? "strict\n" : k == 4 ? "atexit\n" : "";
        if (strcmp(said, want_said) != 0)
            t_fail("%s: the child reported \"%s\", expected \"%s\"", kinds[k], said, want_said);
        t_line("%s: status as expected", kinds[k]);
    }
    return t_pass();
}
