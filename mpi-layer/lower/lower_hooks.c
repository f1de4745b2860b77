/* SPDX-License-Identifier: Apache-2.0 */
/* Exact attribution of the lower half's memory and file descriptors.
 *
 * The lower libc's mmap family and fd-creating calls are overwritten with a 12-byte `movabs rax;
 * jmp rax` to the hooks below, so libc-internal callers (malloc arenas, thread stacks, fopen) are
 * caught too. Hooks never call the patched originals: they issue the system call themselves and
 * record the result in the ledger the upper half reads. UCX's libucm and Open MPI's memory patcher
 * rewrite the same functions; the upper half runs the lower with them disabled (UCX_MEM_EVENTS=no,
 * memory=^patcher).
 *
 * Hazard: hooks run on any lower thread, possibly with the ledger lock contended; they must not
 * call anything that can itself map memory or open files. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <stdlib.h>
#include <sys/random.h>
#include <unistd.h>

#include "handoff.h"

struct ghost_lower_ledger ghost_lower_ledger_data;
#define L ghost_lower_ledger_data

static long raw6(long n, long a, long b, long c, long d, long e, long f) {
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    register long r9 __asm__("r9") = f;
    long ret;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return ret;
}
#define RAW(n, a, b, c, d, e, f)                                                                   \
    raw6((n), (long)(a), (long)(b), (long)(c), (long)(d), (long)(e), (long)(f))

static long fail(long r) {
    if (r < 0 && r > -4096) {
        errno = (int)-r;
        return -1;
    }
    return r;
}

static void lock(void) {
    while (__atomic_exchange_n(&L.lock, 1, __ATOMIC_ACQUIRE))
        __builtin_ia32_pause();
}
static void unlock(void) {
    __atomic_store_n(&L.lock, 0, __ATOMIC_RELEASE);
}

#define PG 4096ul
static uintptr_t up(uintptr_t v) {
    return (v + PG - 1) & ~(PG - 1);
}

/* Removes [s,e) from every recorded range (splitting where needed). Caller holds the lock. */
static void ledger_cut(uintptr_t s, uintptr_t e) {
    for (uint32_t i = 0; i < L.nregions; i++) {
        struct ghost_lower_region *r = &L.regions[i];
        if (r->end <= s || r->start >= e) continue;
        if (r->start < s && r->end > e) { /* split */
            if (L.nregions < GHOST_LOWER_MAX_REGIONS) {
                L.regions[L.nregions].start = e;
                L.regions[L.nregions].end = r->end;
                L.nregions++;
            } else {
                L.overflow = 1;
            }
            r->end = s;
        } else if (r->start < s) {
            r->end = s;
        } else if (r->end > e) {
            r->start = e;
        } else {
            L.regions[i] = L.regions[--L.nregions];
            i--;
        }
    }
}

static void ledger_add(uintptr_t s, uintptr_t e) {
    e = up(e);
    lock();
    ledger_cut(s, e);
    if (L.nregions < GHOST_LOWER_MAX_REGIONS) {
        L.regions[L.nregions].start = s;
        L.regions[L.nregions].end = e;
        L.nregions++;
    } else {
        L.overflow = 1;
    }
    unlock();
}

static int fd_note(long fd) {
    if (fd >= 0 && fd < GHOST_LOWER_MAX_FDS) __atomic_store_n(&L.fds[fd], 1, __ATOMIC_RELAXED);
    return (int)fd;
}

static void *hook_mmap(void *a, size_t len, int prot, int flags, int fd, off_t off) {
    long r = RAW(SYS_mmap, a, len, prot, flags, fd, off);
    if (r < 0 && r > -4096) {
        errno = (int)-r;
        return MAP_FAILED;
    }
    ledger_add((uintptr_t)r, (uintptr_t)r + len);
    return (void *)r;
}

/* A range leaves the ledger before it is unmapped: removed after, it could already be another
 * thread's new mapping (the kernel reuses a freed range at once), recorded by that thread in
 * between, which the late removal would take out of the ledger (a thread's stack, say: that
 * thread was then neither excluded from a park nor known as a lower thread). A call that fails
 * has unmapped nothing: the range goes back. No lock is held across the system call. */
static void ledger_remove(uintptr_t s, uintptr_t e) {
    lock();
    ledger_cut(s, up(e));
    unlock();
}

static int hook_munmap(void *a, size_t len) {
    ledger_remove((uintptr_t)a, (uintptr_t)a + len);
    long r = RAW(SYS_munmap, a, len, 0, 0, 0, 0);
    if (r != 0) ledger_add((uintptr_t)a, (uintptr_t)a + len);
    return (int)fail(r);
}

static void *hook_mremap(void *old, size_t oldlen, size_t newlen, int flags, ...) {
    void *want = NULL;
    if (flags & MREMAP_FIXED) {
        va_list ap;
        va_start(ap, flags);
        want = va_arg(ap, void *);
        va_end(ap);
    }
    int keeps_old = 0;
#ifdef MREMAP_DONTUNMAP
    keeps_old = (flags & MREMAP_DONTUNMAP) != 0;
#endif
    if (!keeps_old) ledger_remove((uintptr_t)old, (uintptr_t)old + oldlen); /* (as hook_munmap) */
    long r = RAW(SYS_mremap, old, oldlen, newlen, flags, want, 0);
    if (r < 0 && r > -4096) {
        if (!keeps_old) ledger_add((uintptr_t)old, (uintptr_t)old + oldlen);
        errno = (int)-r;
        return MAP_FAILED;
    }
    ledger_add((uintptr_t)r, (uintptr_t)r + newlen);
    return (void *)r;
}

static void *hook_shmat(int id, const void *a, int flg) {
    long r = RAW(SYS_shmat, id, a, flg, 0, 0, 0);
    if (r < 0 && r > -4096) {
        errno = (int)-r;
        return (void *)-1;
    }
    struct shmid_ds ds;
    size_t sz = PG;
    if (RAW(SYS_shmctl, id, IPC_STAT, &ds, 0, 0, 0) == 0) sz = ds.shm_segsz;
    ledger_add((uintptr_t)r, (uintptr_t)r + sz);
    return (void *)r;
}

static int hook_shmdt(const void *a) {
    struct ghost_lower_region gone = {0, 0}; /* (as hook_munmap) */
    lock();
    for (uint32_t i = 0; i < L.nregions; i++)
        if (L.regions[i].start == (uintptr_t)a) {
            gone = L.regions[i];
            L.regions[i] = L.regions[--L.nregions];
            break;
        }
    unlock();
    long r = RAW(SYS_shmdt, a, 0, 0, 0, 0, 0);
    if (r != 0 && gone.end) ledger_add(gone.start, gone.end);
    return (int)fail(r);
}

static int hook_open(const char *p, int fl, ...) {
    va_list ap;
    va_start(ap, fl);
    int mode = va_arg(ap, int);
    va_end(ap);
    return fd_note(fail(RAW(SYS_openat, AT_FDCWD, p, fl, mode, 0, 0)));
}
static int hook_openat(int d, const char *p, int fl, ...) {
    va_list ap;
    va_start(ap, fl);
    int mode = va_arg(ap, int);
    va_end(ap);
    return fd_note(fail(RAW(SYS_openat, d, p, fl, mode, 0, 0)));
}
/* glibc's shm_open and mkostemp open through an internal non-cancellable open the patch above
 * does not reach. */
static int hook_shm_open(const char *name, int fl, mode_t mode) {
    char path[256] = "/dev/shm/";
    while (*name == '/')
        name++;
    size_t n = strlen(name);
    if (n == 0 || n > 200 || strchr(name, '/')) {
        errno = EINVAL;
        return -1;
    }
    memcpy(path + 9, name, n + 1);
    return fd_note(fail(RAW(SYS_openat, AT_FDCWD, path, fl | O_NOFOLLOW | O_CLOEXEC, mode, 0, 0)));
}
static int hook_mkostemps(char *tmpl, int suffixlen, int fl) {
    size_t n = strlen(tmpl);
    if (n < 6 + (size_t)suffixlen) {
        errno = EINVAL;
        return -1;
    }
    char *x = tmpl + n - suffixlen - 6;
    static const char chars[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    for (int attempt = 0; attempt < 1000; attempt++) {
        unsigned long r = 0;
        if (RAW(SYS_getrandom, &r, sizeof r, 0, 0, 0, 0) != sizeof r)
            r = (unsigned long)attempt * 2654435761u;
        for (int i = 0; i < 6; i++, r /= 62)
            x[i] = chars[r % 62];
        long fd = RAW(SYS_openat, AT_FDCWD, tmpl, (fl & ~O_ACCMODE) | O_RDWR | O_CREAT | O_EXCL,
                      0600, 0, 0);
        if (fd != -EEXIST) return fd_note(fail(fd));
    }
    errno = EEXIST;
    return -1;
}
static int hook_mkstemp(char *tmpl) {
    return hook_mkostemps(tmpl, 0, 0);
}
static int hook_mkostemp(char *tmpl, int fl) {
    return hook_mkostemps(tmpl, 0, fl);
}
static int hook_mkstemps(char *tmpl, int suffixlen) {
    return hook_mkostemps(tmpl, suffixlen, 0);
}
static int hook_socket(int a, int b, int c) {
    return fd_note(fail(RAW(SYS_socket, a, b, c, 0, 0, 0)));
}
static int hook_socketpair(int a, int b, int c, int sv[2]) {
    long r = fail(RAW(SYS_socketpair, a, b, c, sv, 0, 0));
    if (r == 0) {
        fd_note(sv[0]);
        fd_note(sv[1]);
    }
    return (int)r;
}
static int hook_pipe2(int fds[2], int fl) {
    long r = fail(RAW(SYS_pipe2, fds, fl, 0, 0, 0, 0));
    if (r == 0) {
        fd_note(fds[0]);
        fd_note(fds[1]);
    }
    return (int)r;
}
static int hook_pipe(int fds[2]) {
    return hook_pipe2(fds, 0);
}
static int hook_accept4(int s, struct sockaddr *a, socklen_t *l, int fl) {
    return fd_note(fail(RAW(SYS_accept4, s, a, l, fl, 0, 0)));
}
static int hook_accept(int s, struct sockaddr *a, socklen_t *l) {
    return hook_accept4(s, a, l, 0);
}
static int hook_dup(int o) {
    return fd_note(fail(RAW(SYS_dup, o, 0, 0, 0, 0, 0)));
}
static int hook_dup3(int o, int n, int fl) {
    return fd_note(fail(RAW(SYS_dup3, o, n, fl, 0, 0, 0)));
}
static int hook_dup2(int o, int n) {
    if (o == n) return (int)fail(RAW(SYS_fcntl, o, F_GETFD, 0, 0, 0, 0)) < 0 ? -1 : n;
    return fd_note(fail(RAW(SYS_dup2, o, n, 0, 0, 0, 0)));
}
static int hook_eventfd(unsigned v, int fl) {
    return fd_note(fail(RAW(SYS_eventfd2, v, fl, 0, 0, 0, 0)));
}
static int hook_epoll_create1(int fl) {
    return fd_note(fail(RAW(SYS_epoll_create1, fl, 0, 0, 0, 0, 0)));
}
static int hook_epoll_create(int sz) {
    (void)sz;
    return hook_epoll_create1(0);
}
static int hook_memfd_create(const char *n, unsigned fl) {
    return fd_note(fail(RAW(SYS_memfd_create, n, fl, 0, 0, 0, 0)));
}
static int hook_timerfd_create(int c, int fl) {
    return fd_note(fail(RAW(SYS_timerfd_create, c, fl, 0, 0, 0, 0)));
}
static int hook_inotify_init1(int fl) {
    return fd_note(fail(RAW(SYS_inotify_init1, fl, 0, 0, 0, 0, 0)));
}
static int hook_fcntl(int fd, int cmd, ...) {
    va_list ap;
    va_start(ap, cmd);
    long arg = va_arg(ap, long);
    va_end(ap);
    long r = fail(RAW(SYS_fcntl, fd, cmd, arg, 0, 0, 0));
    if ((cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC) && r >= 0) fd_note(r);
    return (int)r;
}
/* Libraries that bypass the libc wrappers (UCX's libucm) still call syscall(3). */
static long hook_syscall(long n, ...) {
    va_list ap;
    va_start(ap, n);
    long a = va_arg(ap, long), b = va_arg(ap, long), c = va_arg(ap, long);
    long d = va_arg(ap, long), e = va_arg(ap, long), f = va_arg(ap, long);
    va_end(ap);
    if (n == SYS_munmap) return hook_munmap((void *)a, (size_t)b);
    if (n == SYS_mremap)
        return (long)hook_mremap((void *)a, (size_t)b, (size_t)c, (int)d, (void *)e);
    long r = RAW(n, a, b, c, d, e, f);
    if (r < 0 && r > -4096) return fail(r);
    switch (n) {
    case SYS_mmap:
        ledger_add((uintptr_t)r, (uintptr_t)r + (size_t)b);
        break;
    case SYS_open:
    case SYS_openat:
    case SYS_socket:
    case SYS_accept:
    case SYS_accept4:
    case SYS_dup:
    case SYS_dup2:
    case SYS_dup3:
    case SYS_eventfd:
    case SYS_eventfd2:
    case SYS_epoll_create:
    case SYS_epoll_create1:
    case SYS_memfd_create:
    case SYS_timerfd_create:
    case SYS_inotify_init1:
    case SYS_perf_event_open:
    case SYS_userfaultfd:
    case SYS_pidfd_open:
        fd_note(r);
        break;
    default:
        break;
    }
    return r;
}

static int hook_close(int fd) {
    long r = fail(RAW(SYS_close, fd, 0, 0, 0, 0, 0));
    if (fd >= 0 && fd < GHOST_LOWER_MAX_FDS) __atomic_store_n(&L.fds[fd], 0, __ATOMIC_RELAXED);
    return (int)r;
}

static int patch(void *target, void *hook) {
    unsigned char code[12] = {0x48, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xe0};
    uintptr_t h = (uintptr_t)hook;
    memcpy(code + 2, &h, 8);
    if (memcmp(target, code, sizeof code) == 0)
        return 0; /* an alias of a function already patched */
    uintptr_t pg = (uintptr_t)target & ~(PG - 1);
    size_t len = up((uintptr_t)target + sizeof code) - pg;
    if (RAW(SYS_mprotect, pg, len, PROT_READ | PROT_WRITE | PROT_EXEC, 0, 0, 0) != 0) return -1;
    memcpy(target, code, sizeof code);
    __builtin___clear_cache((char *)target, (char *)target + sizeof code);
    return RAW(SYS_mprotect, pg, len, PROT_READ | PROT_EXEC, 0, 0, 0) == 0 ? 0 : -1;
}

int ghost_lower_hooks_install(void) {
    struct {
        void *target, *hook;
    } t[] = {
        {(void *)mmap, (void *)hook_mmap},
        {(void *)munmap, (void *)hook_munmap},
        {(void *)mremap, (void *)hook_mremap},
        {(void *)shmat, (void *)hook_shmat},
        {(void *)shmdt, (void *)hook_shmdt},
        {(void *)open, (void *)hook_open},
        {(void *)open64, (void *)hook_open},
        {(void *)openat, (void *)hook_openat},
        {(void *)openat64, (void *)hook_openat},
        {(void *)socket, (void *)hook_socket},
        {(void *)shm_open, (void *)hook_shm_open},
        {(void *)mkstemp, (void *)hook_mkstemp},
        {(void *)mkostemp, (void *)hook_mkostemp},
        {(void *)mkstemps, (void *)hook_mkstemps},
        {(void *)mkostemps, (void *)hook_mkostemps},
        {(void *)socketpair, (void *)hook_socketpair},
        {(void *)pipe, (void *)hook_pipe},
        {(void *)pipe2, (void *)hook_pipe2},
        {(void *)accept, (void *)hook_accept},
        {(void *)accept4, (void *)hook_accept4},
        {(void *)dup, (void *)hook_dup},
        {(void *)dup2, (void *)hook_dup2},
        {(void *)dup3, (void *)hook_dup3},
        {(void *)eventfd, (void *)hook_eventfd},
        {(void *)epoll_create, (void *)hook_epoll_create},
        {(void *)epoll_create1, (void *)hook_epoll_create1},
        {(void *)memfd_create, (void *)hook_memfd_create},
        {(void *)timerfd_create, (void *)hook_timerfd_create},
        {(void *)inotify_init1, (void *)hook_inotify_init1},
        {(void *)fcntl, (void *)hook_fcntl},
        {(void *)close, (void *)hook_close},
        {(void *)syscall, (void *)hook_syscall},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        if (patch(t[i].target, t[i].hook) != 0) return -1;
    /* libc closes its own fds (fclose, closedir, ...) through __close_nocancel, not close: without
     * this hook a number the lower half closed that way stayed "lower" in the ledger, and an upper
     * fd that reused it (the coordinator connection, a file the application opened) was taken for
     * the lower half's. */
    void *close_nocancel = dlsym(RTLD_DEFAULT, "__close_nocancel");
    if (close_nocancel && patch(close_nocancel, (void *)hook_close) != 0) return -1;
    return 0;
}
