/* SPDX-License-Identifier: Apache-2.0 */
/* fs_probe: which ways of switching the thread pointer (FS base) work on this machine, and what
 * each costs. The layer switches FS twice per MPI call (upper/fs.h); without user-space FSGSBASE
 * it uses arch_prctl. This measures the alternatives weighed in mpi-layer/README.md ("FS switches,
 * and kernels without FSGSBASE"):
 *   - arch_prctl(ARCH_SET_FS), and a plain system call for reference;
 *   - wrfsbase/rdfsbase: whether they execute at all, and whether the kernel keeps a base written
 *     with them across context switches (it only does when it enables FSGSBASE itself, AT_HWCAP2
 *     bit 1);
 *   - an LDT selector (modify_ldt, then `mov SEL, %fs`): whether the load works, and its cost;
 *   - a GDT TLS selector (set_thread_area).
 * Between a switch to a fake TCB and the switch back only raw system calls run (no libc: it would
 * read its TLS through the fake TCB). Figures are the best of several batches (noise only adds).
 * Not a test: prints one line per mechanism, exits 0. */
#define _GNU_SOURCE
#include <asm/ldt.h>
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

enum { kBatches = 15, kBatch = 2000 };

static sigjmp_buf g_jump;
static volatile sig_atomic_t g_signal;

static void on_fault(int sig) {
    g_signal = sig;
    siglongjmp(g_jump, 1);
}

static double now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

static long raw1(long nr, long a) {
    long ret;
    __asm__ volatile("syscall" : "=a"(ret) : "a"(nr), "D"(a) : "rcx", "r11", "memory");
    return ret;
}

static long raw2(long nr, long a, long b) {
    long ret;
    __asm__ volatile("syscall" : "=a"(ret) : "a"(nr), "D"(a), "S"(b) : "rcx", "r11", "memory");
    return ret;
}

static uintptr_t get_fs(void) {
    uintptr_t v = 0;
    raw2(SYS_arch_prctl, 0x1003 /* ARCH_GET_FS */, (long)&v);
    return v;
}

static void set_fs(uintptr_t v) {
    raw2(SYS_arch_prctl, 0x1002 /* ARCH_SET_FS */, (long)v);
}

/* A fake TCB in the middle of a zeroed mapping (TLS lies below a TCB), %fs:0 pointing at itself. */
static uintptr_t fake_tcb(int low) {
    char *m = mmap(NULL, 65536, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | (low ? MAP_32BIT : 0), -1, 0);
    if (m == MAP_FAILED) return 0;
    uintptr_t *tcb = (uintptr_t *)(m + 32768);
    tcb[0] = (uintptr_t)tcb;
    return (uintptr_t)tcb;
}

static void report_arch_prctl(void) {
    uintptr_t fs = get_fs();
    double best_set = 1e18, best_plain = 1e18;
    for (int b = 0; b < kBatches; b++) {
        double t0 = now_ns();
        for (int i = 0; i < kBatch; i++)
            set_fs(fs);
        double t1 = now_ns();
        for (int i = 0; i < kBatch; i++)
            raw1(SYS_getppid, 0);
        double t2 = now_ns();
        if ((t1 - t0) / kBatch < best_set) best_set = (t1 - t0) / kBatch;
        if ((t2 - t1) / kBatch < best_plain) best_plain = (t2 - t1) / kBatch;
    }
    printf("arch_prctl(ARCH_SET_FS): works, %.0f ns each (a plain system call, getppid: %.0f ns)\n",
           best_set, best_plain);
}

static void report_wrfsbase(void) {
    int kernel_has = (getauxval(AT_HWCAP2) & 2) != 0;
    uintptr_t up = get_fs(), fake = fake_tcb(0);
    g_signal = 0;
    if (sigsetjmp(g_jump, 1) == 0) {
        uintptr_t v;
        __asm__ volatile("rdfsbase %0" : "=r"(v));
        (void)v;
    } else {
        printf("wrfsbase: does not execute (signal %d); AT_HWCAP2 FSGSBASE %s\n", (int)g_signal,
               kernel_has ? "set" : "clear");
        return;
    }
    double best = 1e18;
    for (int b = 0; b < kBatches; b++) {
        double t0 = now_ns();
        for (int i = 0; i < kBatch; i++) {
            __asm__ volatile("wrfsbase %0" : : "r"(fake) : "memory");
            __asm__ volatile("wrfsbase %0" : : "r"(up) : "memory");
        }
        double t1 = now_ns();
        if ((t1 - t0) / kBatch < best) best = (t1 - t0) / kBatch;
    }
    /* Does the kernel keep the written base when the thread sleeps (a context switch)? */
    int lost = 0, tries = 50;
    struct timespec nap = {0, 100000};
    for (int i = 0; i < tries; i++) {
        uintptr_t v;
        __asm__ volatile("wrfsbase %0" : : "r"(fake) : "memory");
        raw2(SYS_nanosleep, (long)&nap, 0);
        __asm__ volatile("rdfsbase %0" : "=r"(v));
        __asm__ volatile("wrfsbase %0" : : "r"(up) : "memory");
        if (v != fake) lost++;
    }
    /* The same across plain system calls (no sleep): a kernel entry alone keeps it. */
    int lost_plain = 0;
    for (int i = 0; i < tries; i++) {
        uintptr_t v;
        __asm__ volatile("wrfsbase %0" : : "r"(fake) : "memory");
        raw1(SYS_getppid, 0);
        __asm__ volatile("rdfsbase %0" : "=r"(v));
        __asm__ volatile("wrfsbase %0" : : "r"(up) : "memory");
        if (v != fake) lost_plain++;
    }
    printf("wrfsbase: executes, %.1f ns per pair; AT_HWCAP2 FSGSBASE %s; base written lost across "
           "a plain system call in %d of %d tries, across a 100 us sleep in %d of %d%s\n",
           best, kernel_has ? "set" : "clear", lost_plain, tries, lost, tries,
           lost ? " (the kernel restores its own saved base at a context switch: unusable)" : "");
}

static int ldt_write(int entry, uintptr_t base) {
    struct user_desc d;
    memset(&d, 0, sizeof d);
    d.entry_number = (unsigned)entry;
    d.base_addr = (unsigned)base;
    d.limit = 0xfffff;
    d.seg_32bit = 1;
    d.limit_in_pages = 1;
    d.useable = 1;
    return syscall(SYS_modify_ldt, 1, &d, sizeof d) == 0 ? 0 : -1;
}

static void report_ldt(void) {
    uintptr_t a = fake_tcb(1), b = fake_tcb(1), up = get_fs();
    if (!a || !b || a >= (1ul << 32) || b >= (1ul << 32)) {
        printf("LDT selector: no MAP_32BIT memory for a test TCB\n");
        return;
    }
    if (ldt_write(1, a) != 0 || ldt_write(2, b) != 0) {
        printf("LDT selector: modify_ldt refused (%s)\n", strerror(errno));
        return;
    }
    const unsigned short sel_a = 1 << 3 | 7, sel_b = 2 << 3 | 7; /* TI = LDT, RPL 3 */
    uintptr_t seen = 0;
    g_signal = 0;
    if (sigsetjmp(g_jump, 1) == 0) {
        __asm__ volatile("mov %1, %%fs\n\tmov %%fs:0, %0" : "=r"(seen) : "r"(sel_a) : "memory");
        set_fs(up);
    } else {
        set_fs(up); /* the faulting load left FS as it was; make sure */
        printf("LDT selector: modify_ldt accepts the entry, but loading its selector faults "
               "(signal %d): the LDT is not usable here\n",
               (int)g_signal);
        return;
    }
    if (seen != a) {
        printf("LDT selector: loads, but %%fs:0 reads %#lx instead of %#lx\n", (unsigned long)seen,
               (unsigned long)a);
        return;
    }
    double best2 = 1e18, best1 = 1e18;
    for (int n = 0; n < kBatches; n++) {
        double t0 = now_ns();
        for (int i = 0; i < kBatch; i++) {
            __asm__ volatile("mov %0, %%fs" : : "r"(sel_a) : "memory");
            __asm__ volatile("mov %0, %%fs" : : "r"(sel_b) : "memory");
        }
        double t1 = now_ns();
        for (int i = 0; i < kBatch; i++) {
            __asm__ volatile("mov %0, %%fs" : : "r"(sel_a) : "memory");
            set_fs(up);
        }
        double t2 = now_ns();
        set_fs(up);
        if ((t1 - t0) / kBatch < best2) best2 = (t1 - t0) / kBatch;
        if ((t2 - t1) / kBatch < best1) best1 = (t2 - t1) / kBatch;
    }
    printf("LDT selector: works; 2 selector loads (both TCBs below 4 GiB) %.1f ns; selector in + "
           "arch_prctl out %.0f ns\n",
           best2, best1);
}

static void report_gdt_tls(void) {
    struct user_desc d;
    memset(&d, 0, sizeof d);
    d.entry_number = (unsigned)-1;
    d.base_addr = (unsigned)fake_tcb(1);
    d.limit = 0xfffff;
    d.seg_32bit = 1;
    d.limit_in_pages = 1;
    d.useable = 1;
    if (syscall(SYS_set_thread_area, &d) != 0) {
        printf("GDT TLS selector (set_thread_area): refused (%s)\n", strerror(errno));
        return;
    }
    printf("GDT TLS selector (set_thread_area): entry %u accepted (not measured further)\n",
           d.entry_number);
}

int main(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_fault;
    sigaction(SIGSEGV, &sa, NULL);
    sigaction(SIGILL, &sa, NULL);
    sigaction(SIGBUS, &sa, NULL);
    char host[256] = "?";
    gethostname(host, sizeof host - 1);
    printf("# fs_probe on %s, AT_HWCAP2 %#lx\n", host, getauxval(AT_HWCAP2));
    report_arch_prctl();
    report_wrfsbase();
    report_ldt();
    report_gdt_tls();
    return 0;
}
