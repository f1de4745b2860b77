// SPDX-License-Identifier: Apache-2.0
// deny_syscall NAME -- COMMAND ARGS...: runs COMMAND with system call NAME failing with EPERM (a
// seccomp filter, as a container runtime's profile may install). Lets a test take the paths ghost
// keeps for a call it cannot make: the restorer places restored pages with process_vm_writev and
// falls back to a plain copy where that call is refused.
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

static const struct {
    const char *name;
    long nr;
} known[] = {{"process_vm_writev", SYS_process_vm_writev},
             {"process_vm_readv", SYS_process_vm_readv}};

int main(int argc, char **argv) {
    if (argc < 4 || strcmp(argv[2], "--") != 0) {
        fprintf(stderr, "usage: deny_syscall NAME -- COMMAND ARGS...\n");
        return 2;
    }
    long nr = -1;
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (!strcmp(argv[1], known[i].name)) nr = known[i].nr;
    if (nr < 0) {
        fprintf(stderr, "deny_syscall: unknown system call '%s'\n", argv[1]);
        return 2;
    }
    struct sock_filter code[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)nr, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {sizeof code / sizeof code[0], code};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
        prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0) {
        perror("deny_syscall: seccomp");
        return 2;
    }
    execvp(argv[3], argv + 3);
    fprintf(stderr, "deny_syscall: cannot run %s: %s\n", argv[3], strerror(errno));
    return 127;
}
