// SPDX-License-Identifier: Apache-2.0
#include "attribution.h"

#include <dirent.h>
#include <dlfcn.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <link.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <mutex>
#include <string>
#include <vector>

#include "runtime.h"

namespace ghost::mpi {
namespace {

using range = ghost_lower_region;

std::vector<range> *g_pre_maps;     // upper: everything mapped before the lower half existed
std::vector<range> *g_lower_static; // loader mappings + start-up diff
std::vector<int> *g_lower_fds_static;
// Every descriptor open when the lower half started (sorted): only those opened during its start-up
// are the start-up diff's. After a restart, the restored program's own files are open by then and
// are not the launcher's (the second checkpoint left them out as lower: a file a rank had open
// before its first checkpoint was gone after the restart of a restarted job).
std::vector<int> *g_fds_before;
// Identity (device, inode) of each fd of g_lower_fds_static when it was recorded: a number the
// lower half closed later may be reused by the upper half (the coordinator connection is).
std::vector<std::pair<dev_t, ino_t>> *g_lower_fds_ident;
bool g_ready = false;
// The program break when the snapshot below was taken: the upper malloc may still move it (its
// main arena grows by brk, not through the hooked mmap family) until guard_brk's guard stops it.
uintptr_t g_brk_at_snapshot = 0;

// Upper ledger: the upper libc's mmap family, patched like the lower one.
constexpr size_t kUpperMax = 65536;
range g_upper[kUpperMax];
size_t g_nupper = 0;
volatile int g_upper_lock = 0;
bool g_upper_overflow = false;

void ulock() {
    while (__atomic_exchange_n(&g_upper_lock, 1, __ATOMIC_ACQUIRE))
        __builtin_ia32_pause();
}
void uunlock() {
    __atomic_store_n(&g_upper_lock, 0, __ATOMIC_RELEASE);
}
uintptr_t pup(uintptr_t v) {
    return (v + 4095) & ~(uintptr_t)4095;
}

void upper_cut(uintptr_t s, uintptr_t e) {
    for (size_t i = 0; i < g_nupper; i++) {
        range &r = g_upper[i];
        if (r.end <= s || r.start >= e) continue;
        if (r.start < s && r.end > e) {
            if (g_nupper < kUpperMax)
                g_upper[g_nupper++] = {e, r.end};
            else
                g_upper_overflow = true;
            r.end = s;
        } else if (r.start < s) {
            r.end = s;
        } else if (r.end > e) {
            r.start = e;
        } else {
            g_upper[i--] = g_upper[--g_nupper];
        }
    }
}
void upper_add(uintptr_t s, uintptr_t e) {
    ulock();
    upper_cut(s, pup(e));
    // extend a neighbour when possible (malloc maps many adjacent chunks)
    bool merged = false;
    for (size_t i = 0; i < g_nupper && !merged; i++) {
        if (g_upper[i].end == s) {
            g_upper[i].end = pup(e);
            merged = true;
        } else if (g_upper[i].start == pup(e)) {
            g_upper[i].start = s;
            merged = true;
        }
    }
    if (!merged) {
        if (g_nupper < kUpperMax)
            g_upper[g_nupper++] = {s, pup(e)};
        else
            g_upper_overflow = true;
    }
    uunlock();
}

long raw6(long n, long a, long b, long c, long d, long e, long f) {
    register long r10 asm("r10") = d;
    register long r8 asm("r8") = e;
    register long r9 asm("r9") = f;
    long ret;
    asm volatile("syscall"
                 : "=a"(ret)
                 : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                 : "rcx", "r11", "memory");
    return ret;
}

void *hook_mmap(void *a, size_t len, int prot, int flags, int fd, off_t off) {
    long r = raw6(SYS_mmap, (long)a, (long)len, prot, flags, fd, off);
    if (r < 0 && r > -4096) {
        errno = (int)-r;
        return MAP_FAILED;
    }
    upper_add((uintptr_t)r, (uintptr_t)r + len);
    return (void *)r;
}
// A range leaves the ledger before it is unmapped, and goes back if the call fails (see the
// lower half's hooks, lower_hooks.c: removed after, it could already be another thread's new
// mapping). No lock is held across the system call.
void upper_remove(uintptr_t s, uintptr_t e) {
    ulock();
    upper_cut(s, pup(e));
    uunlock();
}
int hook_munmap(void *a, size_t len) {
    upper_remove((uintptr_t)a, (uintptr_t)a + len);
    long r = raw6(SYS_munmap, (long)a, (long)len, 0, 0, 0, 0);
    if (r < 0) {
        upper_add((uintptr_t)a, (uintptr_t)a + len);
        errno = (int)-r;
        return -1;
    }
    return 0;
}
void *hook_mremap(void *old, size_t oldlen, size_t newlen, int flags, ...) {
    void *want = nullptr;
    if (flags & MREMAP_FIXED) {
        va_list ap;
        va_start(ap, flags);
        want = va_arg(ap, void *);
        va_end(ap);
    }
    upper_remove((uintptr_t)old, (uintptr_t)old + oldlen); // (as hook_munmap)
    long r = raw6(SYS_mremap, (long)old, (long)oldlen, (long)newlen, flags, (long)want, 0);
    if (r < 0 && r > -4096) {
        upper_add((uintptr_t)old, (uintptr_t)old + oldlen);
        errno = (int)-r;
        return MAP_FAILED;
    }
    upper_add((uintptr_t)r, (uintptr_t)r + newlen);
    return (void *)r;
}

bool patch(void *target, void *hook) {
    unsigned char code[12] = {0x48, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xe0};
    uintptr_t h = (uintptr_t)hook;
    memcpy(code + 2, &h, 8);
    uintptr_t pg = (uintptr_t)target & ~(uintptr_t)4095;
    size_t len = pup((uintptr_t)target + sizeof code) - pg;
    if (mprotect((void *)pg, len, PROT_READ | PROT_WRITE | PROT_EXEC) != 0) return false;
    memcpy(target, code, sizeof code);
    __builtin___clear_cache((char *)target, (char *)target + sizeof code);
    return mprotect((void *)pg, len, PROT_READ | PROT_EXEC) == 0;
}

std::vector<range> read_maps(std::vector<std::string> *lines = nullptr) {
    std::vector<range> out;
    int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return out;
    std::string text;
    char buf[8192];
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0)
        text.append(buf, (size_t)n);
    close(fd);
    size_t pos = 0;
    while (pos < text.size()) {
        size_t eol = text.find('\n', pos);
        if (eol == std::string::npos) eol = text.size();
        unsigned long s, e;
        if (sscanf(text.c_str() + pos, "%lx-%lx", &s, &e) == 2) {
            range r{s, e};
            if (text.find("[stack]", pos) < eol)
                r.start |= 1; // flag: the upper main stack (grows down)
            out.push_back(r);
            if (lines) lines->push_back(text.substr(pos, eol - pos));
        }
        pos = eol + 1;
    }
    return out;
}

std::vector<int> read_fds() {
    std::vector<int> out;
    DIR *d = opendir("/proc/self/fd");
    if (!d) return out;
    int self = dirfd(d);
    while (dirent *e = readdir(d)) {
        if (e->d_name[0] == '.') continue;
        int fd = atoi(e->d_name);
        if (fd != self) out.push_back(fd);
    }
    closedir(d);
    std::sort(out.begin(), out.end());
    return out;
}

std::vector<range> merged(std::vector<range> v) {
    std::sort(v.begin(), v.end(), [](const range &a, const range &b) { return a.start < b.start; });
    std::vector<range> out;
    for (auto r : v) {
        r.start &= ~(uintptr_t)1;
        if (r.end <= r.start) continue;
        if (!out.empty() && r.start <= out.back().end)
            out.back().end = std::max(out.back().end, r.end);
        else
            out.push_back(r);
    }
    return out;
}

std::vector<range> lower_ranges() {
    std::vector<range> all = *g_lower_static;
    range objs[512];
    size_t n;
    {
        lower_call lc;
        n = g_handoff.list_objects(objs, 512);
    }
    all.insert(all.end(), objs, objs + std::min<size_t>(n, 512));
    ghost_lower_ledger *L = g_handoff.ledger;
    while (__atomic_exchange_n(&L->lock, 1, __ATOMIC_ACQUIRE))
        __builtin_ia32_pause();
    all.insert(all.end(), L->regions, L->regions + L->nregions);
    __atomic_store_n(&L->lock, 0, __ATOMIC_RELEASE);
    return merged(all);
}

int upper_obj(dl_phdr_info *info, size_t, void *data) {
    auto *v = static_cast<std::vector<range> *>(data);
    uintptr_t lo = UINTPTR_MAX, hi = 0;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const auto &p = info->dlpi_phdr[i];
        if (p.p_type != PT_LOAD) continue;
        lo = std::min<uintptr_t>(lo, info->dlpi_addr + p.p_vaddr);
        hi = std::max<uintptr_t>(hi, info->dlpi_addr + p.p_vaddr + p.p_memsz);
    }
    if (hi) v->push_back({lo & ~(uintptr_t)4095, pup(hi)});
    return 0;
}

std::vector<range> upper_ranges() {
    std::vector<range> all = *g_pre_maps;
    ulock();
    all.insert(all.end(), g_upper, g_upper + g_nupper);
    uunlock();
    dl_iterate_phdr(upper_obj, &all);
    return merged(all);
}

} // namespace

// The descriptors open when this library was loaded (at exec: the launcher's), with their
// identity. A process that starts the layer at its first MPI call (mpi4py) has opened files of its
// own by then: only those still open from exec are the launcher's (a file Python opened before
// importing mpi4py.MPI was taken for a lower one and was gone after a restart: EBADF).
struct launch_fd {
    int fd;
    dev_t dev;
    ino_t ino;
};
launch_fd g_launch_fds[256];
int g_nlaunch_fds = -1; // -1: not recorded (every descriptor open at the start counts)

__attribute__((constructor)) void record_launch_fds() {
    DIR *d = opendir("/proc/self/fd");
    if (!d) return;
    int self = dirfd(d), n = 0;
    bool all = true;
    while (dirent *e = readdir(d)) {
        if (e->d_name[0] == '.') continue;
        int fd = atoi(e->d_name);
        struct stat sb {};
        if (fd == self || fstat(fd, &sb) != 0) continue;
        if (n == 256) {
            all = false;
            break;
        }
        g_launch_fds[n++] = {fd, sb.st_dev, sb.st_ino};
    }
    closedir(d);
    if (all) g_nlaunch_fds = n;
}

bool open_since_launch(int fd) {
    if (g_nlaunch_fds < 0) return true;
    struct stat sb {};
    if (fstat(fd, &sb) != 0) return false;
    for (int i = 0; i < g_nlaunch_fds; i++)
        if (g_launch_fds[i].fd == fd)
            return g_launch_fds[i].dev == sb.st_dev && g_launch_fds[i].ino == sb.st_ino;
    return false;
}

void attribution_forget() {
    g_ready = false;
}

void attribution_before_lower(const int32_t *inherited, int inherited_count) {
    g_ready = false;
    delete g_pre_maps; // a restart's second start: the old lower half is gone
    delete g_lower_static;
    delete g_lower_fds_static;
    delete g_fds_before;
    g_pre_maps = new std::vector<range>();
    g_lower_static = new std::vector<range>();
    g_lower_fds_static = new std::vector<int>();
    g_fds_before = new std::vector<int>(read_fds()); // sorted
    // The upper libc's mmap family first, so the snapshot below plus the ledger cover all upper
    // memory.
    patch((void *)&mmap, (void *)&hook_mmap);
    patch((void *)&munmap, (void *)&hook_munmap);
    patch((void *)&mremap, (void *)&hook_mremap);
    g_brk_at_snapshot = (uintptr_t)sbrk(0);
    *g_pre_maps = read_maps();
    // Inherited from the launcher: lower (DESIGN 2c). After a restart the restorer names them
    // (the restored process's own descriptors are open too by then).
    if (inherited_count >= 0) {
        for (int i = 0; i < inherited_count; i++)
            if (inherited[i] > 2) g_lower_fds_static->push_back(inherited[i]);
        std::sort(g_lower_fds_static->begin(), g_lower_fds_static->end());
    } else {
        // The ghost agent's own descriptors, if it started first, are not the launcher's.
        auto agent_fd = (int (*)(int))dlsym(RTLD_DEFAULT, "ghost_agent_owns_fd");
        for (int fd : read_fds())
            if (fd > 2 && !(agent_fd && agent_fd(fd)) && open_since_launch(fd))
                g_lower_fds_static->push_back(fd);
    }
}

std::atomic<int> g_upper_fds[2] = {-1, -1}; // by upper_fd_use

void attribution_note_upper_fd(int fd, upper_fd_use use) {
    g_upper_fds[(int)use] = fd;
}

void attribution_note_upper_guard(uintptr_t lo, uintptr_t hi) {
    upper_add(lo, hi);
}

void attribution_note_upper_heap(uintptr_t brk_now) {
    uintptr_t lo = g_brk_at_snapshot & ~(uintptr_t)4095;
    if (g_brk_at_snapshot && brk_now > lo) upper_add(lo, brk_now);
}

void attribution_after_lower(const lower_start_result &res, bool hooks_installed) {
    g_lower_static->push_back({res.ld_lo, res.ld_hi});
    g_lower_static->push_back({res.stack_lo, res.stack_hi});
    std::vector<range> before = merged(*g_pre_maps);
    ulock();
    before.insert(before.end(), g_upper, g_upper + g_nupper);
    uunlock();
    before = merged(before);
    for (const auto &r :
         read_maps()) { // start-up diff: new since the snapshot and not upper-mapped
        if (r.start & 1) continue;
        uintptr_t s = r.start;
        for (const auto &b : before) {
            if (b.end <= s || b.start >= r.end) continue;
            if (b.start > s) g_lower_static->push_back({s, b.start});
            s = std::max(s, b.end);
        }
        if (s < r.end) g_lower_static->push_back({s, r.end});
    }
    const std::vector<int> &pre = *g_fds_before;
    for (int fd : read_fds())
        if (fd > 2 && !std::binary_search(pre.begin(), pre.end(), fd))
            g_lower_fds_static->push_back(fd);
    std::sort(g_lower_fds_static->begin(), g_lower_fds_static->end());
    delete g_lower_fds_ident;
    g_lower_fds_ident = new std::vector<std::pair<dev_t, ino_t>>();
    for (int fd : *g_lower_fds_static) {
        struct stat sb {};
        fstat(fd, &sb);
        g_lower_fds_ident->push_back({sb.st_dev, sb.st_ino});
    }
    if (!hooks_installed) {
        static const char msg[] =
            "ghost-mpi: warning: cannot hook the lower libc; lower memory attribution is partial\n";
        (void)!write(2, msg, sizeof msg - 1);
    }
    g_ready = true;
}

} // namespace ghost::mpi

using namespace ghost::mpi;

extern "C" __attribute__((visibility("default"))) size_t
ghost_mpi_lower_regions(ghost_lower_region *out, size_t max) {
    if (!g_ready) return 0;
    auto v = lower_ranges();
    for (size_t i = 0; i < v.size() && i < max; i++)
        out[i] = v[i];
    return v.size();
}

namespace ghost::mpi {

bool attribution_addr_is_lower(uintptr_t addr) {
    if (!g_ready) return false;
    for (const range &r : *g_lower_static)
        if (addr >= r.start && addr < r.end) return true;
    ghost_lower_ledger *L = g_handoff.ledger;
    while (__atomic_exchange_n(&L->lock, 1, __ATOMIC_ACQUIRE))
        __builtin_ia32_pause();
    bool found = false;
    for (uint32_t i = 0; i < L->nregions && !found; i++)
        found = addr >= L->regions[i].start && addr < L->regions[i].end;
    __atomic_store_n(&L->lock, 0, __ATOMIC_RELEASE);
    return found;
}

size_t attribution_lower_regions_nomalloc(ghost_lower_region *out, size_t max) {
    static range scratch[GHOST_LOWER_MAX_REGIONS + 2048];
    constexpr size_t cap = sizeof scratch / sizeof scratch[0];
    if (!g_ready || !t_lower_fs) return SIZE_MAX;
    size_t n = 0;
    for (const range &r : *g_lower_static)
        if (n < cap) scratch[n++] = r;
    {
        lower_call lc(t_lower_fs);
        size_t got = g_handoff.list_objects(scratch + n, 512 < cap - n ? 512 : cap - n);
        n += std::min<size_t>(got, std::min<size_t>(512, cap - n));
    }
    ghost_lower_ledger *L = g_handoff.ledger;
    while (__atomic_exchange_n(&L->lock, 1, __ATOMIC_ACQUIRE))
        __builtin_ia32_pause();
    for (uint32_t i = 0; i < L->nregions && n < cap; i++)
        scratch[n++] = L->regions[i];
    bool overflow = L->overflow != 0;
    __atomic_store_n(&L->lock, 0, __ATOMIC_RELEASE);
    if (overflow || n == cap) return SIZE_MAX;
    std::sort(scratch, scratch + n,
              [](const range &a, const range &b) { return a.start < b.start; });
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        range r = scratch[i];
        r.start &= ~(uintptr_t)4095;
        r.end = pup(r.end);
        if (r.end <= r.start) continue;
        if (m && r.start <= scratch[m - 1].end)
            scratch[m - 1].end = std::max(scratch[m - 1].end, r.end);
        else
            scratch[m++] = r;
    }
    for (size_t i = 0; i < m && i < max; i++)
        out[i] = scratch[i];
    return m;
}

} // namespace ghost::mpi

// fstat of the program's descriptor `fd`, through /proc/self/fd: the ghost agent's manager thread,
// which asks at a checkpoint, has a descriptor table of its own. No allocation, no libc state.
static bool program_fstat(int fd, struct stat *sb) {
    char path[32] = "/proc/self/fd/";
    char digits[12];
    int n = 0;
    for (unsigned v = (unsigned)fd; n == 0 || v; v /= 10)
        digits[n++] = (char)('0' + v % 10);
    size_t at = 14;
    while (n)
        path[at++] = digits[--n];
    path[at] = 0;
    if (syscall(SYS_newfstatat, AT_FDCWD, path, sb, 0) == 0) return true;
    return fstat(fd, sb) == 0;
}

extern "C" __attribute__((visibility("default"))) int ghost_mpi_fd_is_lower(int fd) {
    if (!g_ready || fd < 0 || fd == g_upper_fds[0].load() || fd == g_upper_fds[1].load()) return 0;
    auto it = std::lower_bound(g_lower_fds_static->begin(), g_lower_fds_static->end(), fd);
    if (it != g_lower_fds_static->end() && *it == fd) {
        struct stat sb {};
        const auto &id = (*g_lower_fds_ident)[(size_t)(it - g_lower_fds_static->begin())];
        if (program_fstat(fd, &sb) && sb.st_dev == id.first && sb.st_ino == id.second) return 1;
    }
    return fd < GHOST_LOWER_MAX_FDS && __atomic_load_n(&g_handoff.ledger->fds[fd], __ATOMIC_RELAXED)
               ? 1
               : 0;
}

namespace {
// Whether thread tid blocks the agent's park signal (63: SigBlk bit 62).
bool blocks_park_signal(int tid) {
    char path[64], buf[2048];
    snprintf(path, sizeof path, "/proc/self/task/%d/status", tid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    ssize_t k = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (k <= 0) return false;
    buf[k] = 0;
    const char *at = strstr(buf, "SigBlk:");
    return at && (strtoull(at + 7, nullptr, 16) >> 62) & 1;
}
} // namespace

extern "C" __attribute__((visibility("default"))) size_t ghost_mpi_lower_threads(int *out,
                                                                                 size_t max) {
    if (!g_ready) return 0;
    auto lower = lower_ranges();
    size_t n = 0;
    DIR *d = opendir("/proc/self/task");
    if (!d) return 0;
    // Tests only: the lower threads that take signals go unseen, as one is that runs while it is
    // looked at (the park signal then finds it: restart.cpp thread_state).
    const char *unseen = getenv("GHOST_MPI_TEST_UNSEEN_LOWER_THREADS");
    const bool test_unseen = unseen && *unseen == '1';
    while (dirent *e = readdir(d)) {
        if (e->d_name[0] == '.') continue;
        int tid = atoi(e->d_name);
        if (test_unseen && !blocks_park_signal(tid)) continue;
        char path[64], buf[256];
        snprintf(path, sizeof path, "/proc/self/task/%d/syscall", tid);
        // A running thread shows no stack pointer: looked at again until it blocks. The lower
        // half's threads block every signal, the agent's park signal (63) too, and cannot be
        // parked if missed here: such a thread is looked at for up to a second (under load a
        // thread the fresh lower half has just started can stay runnable that long), any other
        // only briefly (an application thread that computes is parked, not looked at).
        const int attempts = blocks_park_signal(tid) ? 1000 : 50;
        for (int attempt = 0; attempt < attempts;
             attempt++) { // "running" has no sp; a blocked thread has
            int fd = open(path, O_RDONLY | O_CLOEXEC);
            if (fd < 0) break;
            ssize_t k = read(fd, buf, sizeof buf - 1);
            close(fd);
            if (k <= 0) break;
            buf[k] = 0;
            if (strncmp(buf, "running", 7) == 0) {
                if (attempt < 50) {
                    sched_yield();
                } else {
                    struct timespec ms = {0, 1000 * 1000};
                    nanosleep(&ms, nullptr);
                }
                continue;
            }
            // "nr a1 a2 a3 a4 a5 a6 sp pc"
            unsigned long f[9] = {0};
            char *p = buf;
            for (int i = 0; i < 9 && p; i++) {
                f[i] = strtoul(p, &p, 0);
                while (*p == ' ')
                    p++;
            }
            uintptr_t sp = f[7];
            for (const auto &r : lower)
                if (sp >= r.start && sp < r.end) {
                    if (n < max) out[n] = tid;
                    n++;
                    break;
                }
            break;
        }
    }
    closedir(d);
    return n;
}

extern "C" __attribute__((visibility("default"))) int
ghost_mpi_attribution_check(int report_fd, size_t *nreg, size_t *nbytes) {
    if (!g_ready) return -1;
    auto lower = lower_ranges();
    auto upper = upper_ranges();
    std::vector<range> known = lower;
    known.insert(known.end(), upper.begin(), upper.end());
    known = merged(known);
    size_t regions = 0, bytes = 0;
    std::vector<std::string> lines;
    auto maps = read_maps(&lines);
    for (size_t li = 0; li < maps.size(); li++) {
        const auto &r = maps[li];
        if (r.end <= r.start) continue;
        if (r.start & 1) continue; // the upper [stack] (it grows below the snapshot)
        uintptr_t s = r.start;
        for (const auto &k : known) {
            if (k.end <= s || k.start >= r.end) continue;
            if (k.start > s) {
                regions++;
                bytes += k.start - s;
                if (report_fd >= 0)
                    dprintf(report_fd, "ghost-mpi: unattributed %lx-%lx in %s\n", (unsigned long)s,
                            (unsigned long)k.start, lines[li].c_str());
            }
            s = std::max(s, k.end);
        }
        if (s < r.end) {
            regions++;
            bytes += r.end - s;
            if (report_fd >= 0)
                dprintf(report_fd, "ghost-mpi: unattributed %lx-%lx in %s\n", (unsigned long)s,
                        (unsigned long)r.end, lines[li].c_str());
        }
    }
    if (g_upper_overflow || g_handoff.ledger->overflow) {
        regions++;
        if (report_fd >= 0) dprintf(report_fd, "ghost-mpi: attribution ledger overflow\n");
    }
    if (nreg) *nreg = regions;
    if (nbytes) *nbytes = bytes;
    return regions ? 1 : 0;
}
