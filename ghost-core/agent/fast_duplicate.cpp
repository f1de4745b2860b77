// SPDX-License-Identifier: Apache-2.0
// The forking thread's half of a fast duplicate (fast_duplicate.h). Everything runs in a park
// handler while every other thread of the process is parked (any libc lock may be held): system
// calls, stack buffers and the static tables below only.
//
// Order: (1) plan the descriptors and the memory, and prepare everything that can fail in the
// original, where a failure only means falling back: reopened files, new pipes, `ghost
// duplicate`'s stdio, all on spare descriptor numbers; (2) fork; (3) in the original, close the
// spare descriptors and wait until the copy has taken from it the memory fork left out or wiped
// (a failure there: falling back too); (4) in the copy, take that memory, move the spare
// descriptors onto their numbers, start the threads, resume.
#include "ghost-core/agent/fast_duplicate.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/kcmp.h>
#include <linux/sched.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include "runtime/raw_syscall.h"
#include "runtime/uapi.h"

extern "C" [[noreturn]] void ghost_context_resume(const ghost::agent::saved_context *ctx);
extern "C" long ghost_clone_resume(unsigned long flags, void *stack, unsigned long tls,
                                   const ghost::agent::saved_context *ctx);
extern "C" long ghost_clone3_resume(struct clone_args *args, size_t size,
                                    const ghost::agent::saved_context *ctx);

namespace ghost::agent {

namespace {

namespace sys = ghost::sys;
namespace uapi = ghost::uapi;

constexpr int max_fds = 1024;
constexpr int max_regions = 8192;
constexpr int max_carried = 64;
constexpr unsigned long thread_flags =
    CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD | CLONE_SYSVSEM | CLONE_SETTLS;
#ifndef MADV_WIPEONFORK
#define MADV_WIPEONFORK 18
#define MADV_KEEPONFORK 19
#endif
constexpr int pidfd_thread = O_EXCL; // PIDFD_THREAD (Linux 6.9)

// fd_proc: a /proc file of the process itself (its pagemap, smaps...), reopened in the copy as
// the copy's own (as the restore path does); fd_reopen: any other file, reopened before the fork.
enum fd_kind : uint8_t { fd_stdio, fd_keep, fd_reopen, fd_pipe, fd_proc };
constexpr int max_proc_fds = 16;

struct fd_plan {
    int32_t fd;
    uint8_t kind;
    uint8_t cloexec;
    int32_t flags;  // F_GETFL
    int32_t leader; // index of the first entry of the same open file description (or itself)
    int32_t spare;  // the copy's description, on a spare number (leaders only), or -1
    uint64_t dev, ino;
};

// A mapping of the original (/proc/self/maps).
struct region_plan {
    uint64_t start, end;
    uint32_t prot;
    uint8_t anon_private; // what fork may leave out (MADV_DONTFORK) or wipe (MADV_WIPEONFORK)
};

fd_plan g_fds[max_fds];
int g_fd_count;
region_plan g_regions[max_regions];
int g_region_count;
int g_carried[max_carried]; // in the copy: regions fork left out or wiped (indices in g_regions)
uint64_t g_carried_wiped;   // bit i: g_carried[i] was wiped (else left out)
int g_stdio_spare[3];
struct proc_file {
    int32_t index;  // in g_fds
    char rest[120]; // the path after /proc/PID/
} g_proc[max_proc_fds];
int g_proc_count;
char g_maps_buf[64 * 1024];
uapi::page_region g_runs[64];

bool refuse(dup_request &req, const char *fmt, long a = 0, const char *s = "") {
    snprintf(req.why, sizeof req.why, fmt, a, s);
    return false;
}

uint64_t now_ns() {
    struct timespec t;
    sys::call(SYS_clock_gettime, CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000ULL + (uint64_t)t.tv_nsec;
}

void close_spares() {
    for (int i = 0; i < g_fd_count; i++)
        if (g_fds[i].spare >= 0) sys::call(SYS_close, g_fds[i].spare);
    for (int &fd : g_stdio_spare)
        if (fd >= 0) sys::call(SYS_close, fd), fd = -1;
}

bool is_memory_device(dev_t rdev) {
    unsigned mi = minor(rdev);
    return major(rdev) == 1 && (mi == 3 || mi == 5 || mi == 7 || mi == 8 || mi == 9);
}

bool same_description(int a, int b) {
    long pid = sys::call(SYS_getpid);
    return sys::call(SYS_kcmp, pid, pid, KCMP_FILE, a, b) == 0;
}

// A descriptor reopened from /proc/PID/... of this process becomes fd_proc.
bool classify_proc(dup_request &req, int i) {
    fd_plan &p = g_fds[i];
    char path[64], link[256], own[32];
    snprintf(path, sizeof path, "/proc/thread-self/fd/%d", p.fd);
    long len = sys::call(SYS_readlink, path, link, sizeof link - 1);
    if (len <= 0) return true;
    link[len] = 0;
    int n = snprintf(own, sizeof own, "/proc/%d/", (int)sys::call(SYS_getpid));
    if (strncmp(link, own, (size_t)n) != 0) return true;
    if (strncmp(link + n, "task/", 5) == 0)
        return refuse(req, "descriptor %ld is a /proc file of one thread", p.fd);
    if (g_proc_count >= max_proc_fds || strlen(link + n) >= sizeof g_proc[0].rest)
        return refuse(req, "too many /proc files (descriptor %ld)", p.fd);
    g_proc[g_proc_count].index = i;
    memcpy(g_proc[g_proc_count].rest, link + n, strlen(link + n) + 1);
    g_proc_count++;
    p.kind = fd_proc;
    return true;
}

// A file reopened through /proc is a new open file description of the same file: not so for a
// POSIX message queue (the same queue, shared with the original), and the copy's description
// would hold none of the file locks of the original's. Both go the image path, which refuses
// the queue and takes the locks again (or refuses when the original's exclude them).
bool check_reopenable(dup_request &req, const fd_plan &p) {
    constexpr long mqueue_magic = 0x19800202;
    struct statfs fs;
    if (!sys::failed(sys::call(SYS_fstatfs, p.fd, &fs)) && fs.f_type == mqueue_magic)
        return refuse(req, "descriptor %ld is a POSIX message queue", p.fd);
    if (p.flags & O_PATH) return true; // no locks through an O_PATH descriptor
    char path[64], info[1024];
    snprintf(path, sizeof path, "/proc/thread-self/fdinfo/%d", p.fd);
    int fd = (int)sys::call(SYS_open, path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return refuse(req, "cannot read the state of descriptor %ld", p.fd);
    long n = sys::call(SYS_read, fd, info, sizeof info - 1);
    sys::call(SYS_close, fd);
    if (n < 0) return refuse(req, "cannot read the state of descriptor %ld", p.fd);
    info[n] = 0;
    if (strstr(info, "\nlock:")) return refuse(req, "descriptor %ld holds a file lock", p.fd);
    return true;
}

// (1) The descriptors of the program's table (this thread's), classified.
bool plan_fds(dup_request &req) {
    g_fd_count = 0;
    int dir = (int)sys::call(SYS_open, "/proc/thread-self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir < 0) return refuse(req, "cannot list the descriptors (%ld)", dir);
    char buf[4096];
    for (long n; (n = sys::call(SYS_getdents64, dir, buf, sizeof buf)) > 0;) {
        for (long off = 0; off < n;) {
            auto *d = (struct dirent64 *)(buf + off);
            off += d->d_reclen;
            if (d->d_name[0] < '0' || d->d_name[0] > '9') continue;
            int fd = 0;
            for (const char *c = d->d_name; *c; c++)
                fd = fd * 10 + (*c - '0');
            if (fd == dir) continue;
            if (g_fd_count >= max_fds) {
                sys::call(SYS_close, dir);
                return refuse(req, "more than %ld descriptors", max_fds);
            }
            g_fds[g_fd_count++] = {fd, fd_keep, 0, 0, -1, -1, 0, 0};
        }
    }
    sys::call(SYS_close, dir);
    for (int i = 0; i < g_fd_count; i++) {
        fd_plan &p = g_fds[i];
        p.leader = i;
        struct stat sb;
        if (sys::failed(sys::call(SYS_fstat, p.fd, &sb)))
            return refuse(req, "cannot stat descriptor %ld", p.fd);
        p.flags = (int)sys::call(SYS_fcntl, p.fd, F_GETFL);
        p.cloexec = (sys::call(SYS_fcntl, p.fd, F_GETFD) & FD_CLOEXEC) != 0;
        p.dev = sb.st_dev, p.ino = sb.st_ino;
        mode_t type = sb.st_mode & S_IFMT;
        if (p.fd <= 2)
            p.kind = fd_stdio;
        else if ((p.flags & O_PATH) || type == S_IFREG || type == S_IFDIR)
            p.kind = fd_reopen;
        else if (type == S_IFCHR && is_memory_device(sb.st_rdev))
            p.kind = fd_keep; // no state of its own: sharing it changes nothing
        else if (type == S_IFIFO) {
            char path[64], link[64];
            snprintf(path, sizeof path, "/proc/thread-self/fd/%d", p.fd);
            long len = sys::call(SYS_readlink, path, link, sizeof link - 1);
            if (len < 5 || memcmp(link, "pipe:", 5) != 0 || (p.flags & O_DIRECT))
                return refuse(req, "descriptor %ld is a named or packet-mode pipe", p.fd);
            p.kind = fd_pipe;
        } else
            return refuse(req, "descriptor %ld is of a kind fork would share", p.fd);
        if (p.kind == fd_reopen && !check_reopenable(req, p)) return false;
        if (p.kind == fd_reopen && !classify_proc(req, i)) return false;
        if (p.kind == fd_reopen || p.kind == fd_pipe || p.kind == fd_proc)
            for (int j = 0; j < i; j++)
                if (g_fds[j].leader == j && g_fds[j].kind == p.kind && g_fds[j].dev == p.dev &&
                    g_fds[j].ino == p.ino && same_description(g_fds[j].fd, p.fd)) {
                    p.leader = j;
                    break;
                }
    }
    return true;
}

// The copy's pipe for the pipe of leader `i`: both ends held by the process, or refused. Returns
// the new pipe's ends in `ends`; every description of the old pipe gets one (reopened from them).
bool prepare_pipe(dup_request &req, int i) {
    const fd_plan &first = g_fds[i];
    int reader = -1, writer = -1;
    for (int j = i; j < g_fd_count; j++) {
        const fd_plan &o = g_fds[j];
        if (o.kind != fd_pipe || o.leader != j || o.ino != first.ino || o.dev != first.dev)
            continue;
        int mode = o.flags & O_ACCMODE;
        if (mode == O_RDONLY && reader < 0) reader = j;
        if (mode == O_WRONLY && writer < 0) writer = j;
        if (mode == O_RDWR && reader < 0) reader = j;
        if (mode == O_RDWR && writer < 0) writer = j;
    }
    for (int j = 0; j < i; j++) // an earlier description of this pipe did the work
        if (g_fds[j].kind == fd_pipe && g_fds[j].ino == first.ino && g_fds[j].dev == first.dev)
            return true;
    if (reader < 0 || writer < 0)
        return refuse(req, "descriptor %ld is a pipe to another process", first.fd);
    int ends[2];
    if (sys::failed(sys::call(SYS_pipe2, ends, O_CLOEXEC)))
        return refuse(req, "cannot create a pipe");
    long size = sys::call(SYS_fcntl, g_fds[reader].fd, F_GETPIPE_SZ);
    if (size > 0) sys::call(SYS_fcntl, ends[1], F_SETPIPE_SZ, size);
    // The buffered data, read without taking it from the original's pipe.
    int queued = 0;
    sys::call(SYS_ioctl, g_fds[reader].fd, FIONREAD, &queued);
    long copied =
        queued ? sys::call(SYS_tee, g_fds[reader].fd, ends[1], (long)queued, SPLICE_F_NONBLOCK) : 0;
    if (copied != queued) {
        sys::call(SYS_close, ends[0]), sys::call(SYS_close, ends[1]);
        return refuse(req, "cannot copy the %ld bytes buffered in a pipe", queued);
    }
    for (int j = i; j < g_fd_count; j++) {
        fd_plan &o = g_fds[j];
        if (o.kind != fd_pipe || o.leader != j || o.ino != first.ino || o.dev != first.dev)
            continue;
        int spare;
        if (j == reader && (o.flags & O_ACCMODE) == O_RDONLY)
            spare = ends[0], ends[0] = -1;
        else if (j == writer && (o.flags & O_ACCMODE) == O_WRONLY)
            spare = ends[1], ends[1] = -1;
        else {
            char path[64];
            snprintf(path, sizeof path, "/proc/thread-self/fd/%d",
                     (o.flags & O_ACCMODE) == O_WRONLY
                         ? (ends[1] >= 0 ? ends[1] : g_fds[writer].spare)
                         : (ends[0] >= 0 ? ends[0] : g_fds[reader].spare));
            spare = (int)sys::call(SYS_open, path, (o.flags & O_ACCMODE) | O_CLOEXEC);
            if (spare < 0) return refuse(req, "cannot reopen a pipe for descriptor %ld", o.fd);
        }
        sys::call(SYS_fcntl, spare, F_SETFL, o.flags);
        o.spare = spare;
    }
    if (ends[0] >= 0) sys::call(SYS_close, ends[0]);
    if (ends[1] >= 0) sys::call(SYS_close, ends[1]);
    return true;
}

// Everything the copy's table needs, on spare numbers of the program's table (closed again in
// the original after the fork).
bool prepare_fds(dup_request &req) {
    for (int i = 0; i < g_fd_count; i++) {
        fd_plan &p = g_fds[i];
        if (p.leader != i) continue;
        if (p.kind == fd_reopen) {
            char path[64];
            snprintf(path, sizeof path, "/proc/thread-self/fd/%d", p.fd);
            int flags = p.flags & ~(O_CREAT | O_EXCL | O_TRUNC | O_NOCTTY);
            // O_NOFOLLOW (as Python's tempfile opens) would refuse the magic link itself, and
            // O_TMPFILE asks for a new file: both only steered the original open. An O_PATH
            // descriptor keeps its flags.
            if (!(p.flags & O_PATH)) flags &= ~(O_NOFOLLOW | O_TMPFILE);
            long fd = sys::call(SYS_open, path, flags | O_CLOEXEC);
            if (fd < 0) return refuse(req, "cannot reopen descriptor %ld", p.fd);
            p.spare = (int)fd;
            if (!(p.flags & O_PATH)) {
                long pos = sys::call(SYS_lseek, p.fd, 0, SEEK_CUR);
                if (pos > 0) sys::call(SYS_lseek, fd, pos, SEEK_SET);
            }
        } else if (p.kind == fd_pipe && !prepare_pipe(req, i)) {
            return false;
        }
    }
    // `ghost duplicate`'s fds 0-2, from the manager's table.
    long pfd = sys::call(SYS_pidfd_open, req.manager_tid, pidfd_thread);
    if (pfd < 0)
        return refuse(req, "cannot reach the manager's descriptors (pidfd_open: %ld)", pfd);
    bool ok = true;
    for (int i = 0; i < 3 && ok; i++) {
        g_stdio_spare[i] = (int)sys::call(SYS_pidfd_getfd, pfd, req.stdio[i], 0);
        ok = g_stdio_spare[i] >= 0;
    }
    sys::call(SYS_close, pfd);
    if (!ok) return refuse(req, "cannot take the requester's standard streams");
    return true;
}

// An smaps header line: "start-end perms offset dev inode   path".
bool parse_header(const char *line, region_plan &r, char *perms, const char **path) {
    const char *c = line;
    auto hex = [&](uint64_t &out) {
        out = 0;
        const char *from = c;
        for (;; c++) {
            int d = *c >= '0' && *c <= '9' ? *c - '0' : *c >= 'a' && *c <= 'f' ? *c - 'a' + 10 : -1;
            if (d < 0) break;
            out = out << 4 | (uint64_t)d;
        }
        return c != from;
    };
    if (!hex(r.start) || *c++ != '-' || !hex(r.end) || *c++ != ' ') return false;
    memcpy(perms, c, 4);
    c += 4;
    for (int field = 0; field < 3; field++) { // offset, dev, inode
        while (*c == ' ')
            c++;
        while (*c && *c != ' ' && *c != '\n')
            c++;
    }
    while (*c == ' ')
        c++;
    *path = c;
    return true;
}

bool starts(const char *s, const char *prefix) {
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

// Calls f(region, perms, path) for each line of /proc/self/maps, in address order. False when
// the map cannot be read.
template <class F> bool for_each_mapping(F f) {
    int fd = (int)sys::call(SYS_open, "/proc/self/maps", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    size_t have = 0;
    bool ok = true;
    for (;;) {
        long n = sys::call(SYS_read, fd, g_maps_buf + have, sizeof g_maps_buf - 1 - have);
        if (n < 0) ok = false;
        if (n <= 0) break;
        have += (size_t)n;
        g_maps_buf[have] = 0;
        char *line = g_maps_buf;
        for (char *nl; (nl = strchr(line, '\n')); line = nl + 1) {
            *nl = 0;
            region_plan r = {};
            char perms[4];
            const char *path;
            if (!parse_header(line, r, perms, &path)) continue;
            r.prot = (perms[0] == 'r' ? PROT_READ : 0) | (perms[1] == 'w' ? PROT_WRITE : 0) |
                     (perms[2] == 'x' ? PROT_EXEC : 0);
            f(r, perms, path);
        }
        have = (size_t)(g_maps_buf + have - line);
        memmove(g_maps_buf, line, have);
    }
    sys::call(SYS_close, fd);
    return ok;
}

// (1) The original's mappings, and what fork would share: refused (the image path copies it).
// Which ones carry fork advice is not read here (that takes /proc/self/smaps, which walks every
// page: 12-16 ms at 1 GiB, all of it in the park): the copy finds them by what fork did to them.
bool plan_memory(dup_request &req) {
    g_region_count = 0;
    const char *why = nullptr;
    bool read = for_each_mapping([&](region_plan r, const char *perms, const char *path) {
        bool shared = perms[3] == 's';
        // Shared anonymous memory: the copy would see the original's writes until it remapped
        // it (a counter in it came out ahead in the copy).
        if (shared && (starts(path, "/dev/zero") || starts(path, "[anon_shmem")))
            why = "the process maps shared anonymous memory that fork would share";
        else if (shared && (starts(path, "/SYSV") || strstr(path, "(deleted)")))
            why = "the process maps shared memory that fork would share (SysV or memfd)";
        if (g_region_count == max_regions) {
            why = "the process has too many memory mappings for a fork copy";
            return;
        }
        r.anon_private = !shared && (!*path || starts(path, "[heap]") || starts(path, "[stack") ||
                                     starts(path, "[anon:"));
        g_regions[g_region_count++] = r;
    });
    if (!read) why = "cannot read the memory map";
    if (why) {
        snprintf(req.why, sizeof req.why, "%s", why);
        return false;
    }
    return true;
}

// The runs of pages of [start, end) in `pagemap`'s process that hold data (present or swapped,
// guard pages left out where the kernel can tell them): how many went into g_runs (at most
// `most`), or < 0 when PAGEMAP_SCAN cannot tell (Linux < 6.7).
long data_runs(int pagemap, uint64_t start, uint64_t end, uint64_t most) {
    uapi::pm_scan_arg arg = {};
    arg.size = sizeof arg;
    arg.start = start;
    arg.end = end;
    arg.vec = (uint64_t)g_runs;
    arg.vec_len = sizeof g_runs / sizeof g_runs[0];
    arg.max_pages = most;
    arg.category_anyof_mask = arg.return_mask = uapi::page_is_present | uapi::page_is_swapped;
    arg.category_mask = arg.category_inverted = uapi::page_is_guard;
    long n = sys::call(SYS_ioctl, pagemap, uapi::pagemap_scan, &arg);
    if (n == -EINVAL) { // a kernel without the guard category (before 6.14)
        arg.category_mask = arg.category_inverted = 0;
        n = sys::call(SYS_ioctl, pagemap, uapi::pagemap_scan, &arg);
    }
    return n;
}

// In the copy: the memory fork left out or wiped becomes the copy's with the original's data, read
// through `orig_mem` (the original's /proc/self/mem, opened before the fork: the original stays
// parked until the copy answers). Fork leaves out a mapping advised MADV_DONTFORK (the copy's map
// lacks it) and gives empty a mapping advised MADV_WIPEONFORK (no page where the original has
// some). The advice is the copy's too, as the original's. Returns nullptr or why not.
const char *carry_fork_dropped(int orig_mem, int orig_pagemap) {
    int own_pagemap = (int)sys::call(SYS_open, "/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    if (own_pagemap < 0) return "cannot read its own page map";
    int carried = 0, i = 0;
    g_carried_wiped = 0;
    const char *why = nullptr;
    auto carry = [&](int index, bool wiped) {
        if (carried == max_carried) {
            why = "too many mappings with fork advice";
            return;
        }
        if (wiped) g_carried_wiped |= 1ULL << carried;
        g_carried[carried++] = index;
    };
    bool read = for_each_mapping([&](region_plan c, const char *, const char *) {
        for (; i < g_region_count && g_regions[i].start < c.start; i++)
            carry(i, false); // left out by fork
        if (i == g_region_count || g_regions[i].start != c.start || g_regions[i].end != c.end) {
            why = "its memory map is not the original's";
            return;
        }
        const region_plan &r = g_regions[i++];
        if (!r.anon_private || why) return;
        long own = data_runs(own_pagemap, r.start, r.end, 1);
        if (own < 0) {
            why = "cannot scan its pages (PAGEMAP_SCAN, Linux 6.7)";
        } else if (own == 0) {
            long orig = data_runs(orig_pagemap, r.start, r.end, 1);
            if (orig < 0) why = "cannot scan the original's pages";
            if (orig > 0) carry(i - 1, true); // wiped by fork
        }
    });
    for (; i < g_region_count; i++)
        carry(i, false);
    sys::call(SYS_close, own_pagemap);
    if (!read) return "cannot read its memory map";
    if (why) return why;
    for (int k = 0; k < carried; k++) {
        const region_plan &r = g_regions[g_carried[k]];
        bool wiped = (g_carried_wiped >> k) & 1;
        uint64_t len = r.end - r.start;
        if (!r.anon_private) return "fork left out a mapping that is not anonymous memory";
        long e = wiped ? sys::call(SYS_mprotect, r.start, len, PROT_READ | PROT_WRITE)
                       : sys::call(SYS_mmap, r.start, len, PROT_READ | PROT_WRITE,
                                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
        if (sys::failed(e)) return "cannot map memory that fork left out";
        for (uint64_t at = r.start; at < r.end;) {
            long n = data_runs(orig_pagemap, at, r.end, ~0ULL);
            if (n < 0) return "cannot scan the original's pages";
            if (n == 0) break;
            for (long j = 0; j < n; j++)
                for (uint64_t p = g_runs[j].start; p < g_runs[j].end;) {
                    long got = sys::call(SYS_pread64, orig_mem, p, g_runs[j].end - p, p);
                    if (got <= 0) return "cannot read the original's memory";
                    p += (uint64_t)got;
                }
            at = g_runs[n - 1].end;
        }
        sys::call(SYS_mprotect, r.start, len, r.prot);
        if (!wiped) sys::call(SYS_madvise, r.start, len, MADV_DONTFORK);
    }
    return nullptr;
}

[[noreturn]] void copy_fails(const char *what, long err) {
    char line[200];
    int n = snprintf(line, sizeof line, "ghost-agent[%d]: the duplicate cannot start: %s (%ld)\n",
                     (int)sys::call(SYS_getpid), what, err);
    sys::call(SYS_write, 2, line, n);
    for (;;)
        sys::call(SYS_exit_group, 1);
}

// (4) In the copy: the prepared descriptors onto their numbers.
void install_fds() {
    for (int i = 0; i < 3; i++) {
        long r = sys::call(SYS_dup3, g_stdio_spare[i], i, 0);
        if (sys::failed(r)) copy_fails("cannot set a standard stream", r);
    }
    for (int i = 0; i < g_proc_count; i++) {
        fd_plan &p = g_fds[g_proc[i].index];
        char path[160];
        snprintf(path, sizeof path, "/proc/self/%s", g_proc[i].rest);
        long pos = sys::call(SYS_lseek, p.fd, 0, SEEK_CUR);
        long fd = sys::call(SYS_open, path, p.flags | O_CLOEXEC);
        if (sys::failed(fd)) copy_fails("cannot reopen a /proc file", fd);
        if (pos > 0) sys::call(SYS_lseek, fd, pos, SEEK_SET);
        p.spare = (int)fd;
    }
    for (int i = 0; i < g_fd_count; i++) {
        const fd_plan &p = g_fds[i];
        if (p.kind != fd_reopen && p.kind != fd_pipe && p.kind != fd_proc) continue;
        long r = sys::call(SYS_dup3, g_fds[p.leader].spare, p.fd, p.cloexec ? O_CLOEXEC : 0);
        if (sys::failed(r)) copy_fails("cannot set a descriptor", r);
    }
    close_spares();
}

// (4) In a copy that kept the ids: /proc shows its own pid namespace (else /proc/<getpid()> is
// the original, which has the same number outside); the host's /proc stays reachable at
// req.host_proc, where ghost finds the pid the host knows the copy by. Mounts stay slaves of the
// host's: a file system mounted later outside is seen inside, nothing goes the other way.
void own_proc_view(const dup_request &req) {
    long e = sys::call(SYS_unshare, CLONE_NEWNS);
    if (sys::failed(e)) copy_fails("cannot make a mount namespace", e);
    e = sys::call(SYS_mount, 0, "/", 0, MS_REC | MS_SLAVE, 0);
    if (sys::failed(e)) copy_fails("cannot make the mounts private", e);
    e = sys::call(SYS_mount, "/proc", req.host_proc, 0, MS_BIND | MS_REC, 0);
    if (sys::failed(e)) copy_fails("cannot keep the host's /proc", e);
    e = sys::call(SYS_mount, "proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, 0);
    if (sys::failed(e)) copy_fails("cannot mount /proc", e);
}

// (2) The copy in the pid namespace `ns`, its pid the original's (the forking thread is the main
// one: its tid is the pid). Returns what clone3 did (0 in the copy); the original's later
// children stay in its own namespace whatever happened.
long clone_keeping_ids(int ns, int own_ns) {
    if (sys::failed(sys::call(SYS_setns, ns, CLONE_NEWPID))) return -1;
    int64_t pid = sys::call(SYS_getpid);
    struct clone_args args = {};
    args.exit_signal = 0;
    args.set_tid = (uint64_t)&pid;
    args.set_tid_size = 1;
    long r = sys::call(SYS_clone3, &args, sizeof args);
    if (r == 0) return 0;
    if (long e = sys::call(SYS_setns, own_ns, CLONE_NEWPID); sys::failed(e)) {
        // Never left so: this thread's next child would be born in the copy's namespace.
        if (r > 0) sys::call(SYS_kill, r, SIGKILL);
        char line[160];
        int n = snprintf(line, sizeof line,
                         "ghost-agent[%d]: cannot return to the pid namespace (setns: %ld)\n",
                         (int)sys::call(SYS_getpid), e);
        sys::call(SYS_write, 2, line, n);
        for (;;)
            sys::call(SYS_exit_group, 1);
    }
    return r;
}

// The copy's namespace from the manager's table, and this thread's own to come back to.
bool take_pid_namespace(const dup_request &req, int &ns, int &own_ns) {
    ns = own_ns = -1;
    if (req.pid_namespace < 0) return false;
    long pfd = sys::call(SYS_pidfd_open, req.manager_tid, pidfd_thread);
    if (pfd < 0) return false;
    ns = (int)sys::call(SYS_pidfd_getfd, pfd, req.pid_namespace, 0);
    sys::call(SYS_close, pfd);
    own_ns = (int)sys::call(SYS_open, "/proc/thread-self/ns/pid", O_RDONLY | O_CLOEXEC);
    if (ns >= 0 && own_ns >= 0) return true;
    if (ns >= 0) sys::call(SYS_close, ns);
    if (own_ns >= 0) sys::call(SYS_close, own_ns);
    ns = own_ns = -1;
    return false;
}

} // namespace

void duplicate_fork(dup_request &req, state &st, thread_slot *self) {
    uint64_t t0 = now_ns();
    g_stdio_spare[0] = g_stdio_spare[1] = g_stdio_spare[2] = -1;
    req.copy_pid = 0;
    req.why[0] = 0;
    g_fd_count = g_region_count = g_proc_count = 0;
    bool ok = plan_fds(req) && plan_memory(req) && prepare_fds(req);
    if (!ok) {
        close_spares();
        return;
    }
    // What the copy needs to take the memory fork leaves out or wipes from the original (still
    // parked until the copy answers on `answer`): the original's memory and page map.
    int orig_mem = (int)sys::call(SYS_open, "/proc/self/mem", O_RDONLY | O_CLOEXEC);
    int orig_pagemap = (int)sys::call(SYS_open, "/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    int answer[2] = {-1, -1};
    if (orig_mem < 0 || orig_pagemap < 0 || sys::failed(sys::call(SYS_pipe2, answer, O_CLOEXEC))) {
        if (orig_mem >= 0) sys::call(SYS_close, orig_mem);
        if (orig_pagemap >= 0) sys::call(SYS_close, orig_pagemap);
        close_spares();
        refuse(req, "cannot open its own memory to copy");
        return;
    }
    auto close_memory = [&] {
        const int fds[] = {orig_mem, orig_pagemap, answer[0], answer[1]};
        for (int fd : fds)
            if (fd >= 0) sys::call(SYS_close, fd);
    };
    // exit signal 0: the original's wait() never sees the copy, no SIGCHLD; nothing shared.
    int ns, own_ns;
    long pid = -1;
    bool kept = false;
    if (take_pid_namespace(req, ns, own_ns)) {
        pid = clone_keeping_ids(ns, own_ns);
        kept = pid >= 0;
        if (pid != 0) sys::call(SYS_close, ns), sys::call(SYS_close, own_ns);
    }
    if (!kept) pid = sys::call(SYS_clone, 0, 0, 0, 0, 0);
    if (pid != 0) { // the original
        close_spares();
        if (sys::failed(pid)) {
            close_memory();
            snprintf(req.why, sizeof req.why, "fork failed (%ld)", pid);
            return;
        }
        // Parked until the copy has taken what it needs of this memory: 'G', or why not.
        sys::call(SYS_close, answer[1]);
        answer[1] = -1;
        char reply[sizeof req.why] = {};
        struct pollfd wait_copy = {answer[0], POLLIN, 0};
        struct timespec limit = {10, 0};
        long got = sys::call(SYS_ppoll, &wait_copy, 1, &limit, nullptr, 8) == 1
                       ? sys::call(SYS_read, answer[0], reply, sizeof reply - 1)
                       : 0;
        close_memory();
        if (got != 1 || reply[0] != 'G') {
            sys::call(SYS_kill, pid, SIGKILL);
            siginfo_t info;
            sys::call(SYS_waitid, P_PID, pid, &info, WEXITED | __WALL, nullptr);
            snprintf(req.why, sizeof req.why, "the copy could not take its memory: %.150s",
                     got > 1 && reply[0] == 'F' ? reply + 1 : "it did not answer");
            return;
        }
        req.copy_pid = (int32_t)pid;
        req.kept_ids = kept;
        req.fork_ns = now_ns() - t0;
        return;
    }
    // The copy: this thread alone, every signal blocked. First what it needs of the original,
    // which resumes once told: on failure the request falls back to the image path.
    const char *short_of = carry_fork_dropped(orig_mem, orig_pagemap);
    char reply[sizeof req.why];
    int len = snprintf(reply, sizeof reply, "%s%s", short_of ? "F" : "G", short_of ? short_of : "");
    sys::call(SYS_write, answer[1], reply, len);
    if (short_of)
        for (;;)
            sys::call(SYS_exit_group, 1);
    close_memory();
    if (kept) {
        sys::call(SYS_close, ns), sys::call(SYS_close, own_ns);
        own_proc_view(req);
    }
    install_fds();
    st.restored = 0;
    for (uint32_t i = 0; i < st.thread_count; i++) {
        thread_slot &t = st.threads[i];
        if (&t == self || t.state != slot_parked) continue;
        uint64_t stack = (t.ctx.rsp - 1024) & ~15ULL;
        long r;
        if (kept) {
            int64_t tid = t.tid;
            struct clone_args args = {};
            args.flags = thread_flags;
            args.stack = stack - 64; // the thread starts at stack + stack_size
            args.stack_size = 64;
            args.tls = t.fs_base;
            args.set_tid = (uint64_t)&tid;
            args.set_tid_size = 1;
            r = ghost_clone3_resume(&args, sizeof args, &t.ctx);
        } else {
            r = ghost_clone_resume(thread_flags, (void *)stack, t.fs_base, &t.ctx);
        }
        if (sys::failed(r)) copy_fails("cannot start a thread", r);
    }
    ghost_context_resume(&self->ctx);
}

} // namespace ghost::agent
