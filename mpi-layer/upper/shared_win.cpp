// SPDX-License-Identifier: Apache-2.0
// Windows of memory shared by the ranks of a node (MPI_Win_allocate_shared). The MPI library would
// put the node's segment in its own memory: in no image, and a fresh library after a restart would
// map it elsewhere, under the program's pointers. So the layer makes the segment itself, in upper
// memory: rank 0 of the communicator creates a memfd, every member maps all of it (opened through
// /proc/<pid>/fd of rank 0: no name that anyone else could open, take or leave behind), and the
// window is made by MPI_Win_create over each rank's part; MPI_Win_shared_query is answered here.
// Parts are contiguous in rank order (page-aligned with the info key alloc_shared_noncontig).
// A restart maps a new segment at the same address in every member, filled from rank 0's copy:
// every member's image holds the whole segment as it was at the quiescent checkpoint, so rank 0's
// is everyone's. The program's pointers into it, to its own part and to the others', stay right.
#include <dlfcn.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "answers.h"
#include "runtime/uapi.h"
#include "lower_api.h"
#include "wrapper_support.h"

namespace ghost::mpi {

struct shared_segment {
    uintptr_t base = 0;
    size_t length = 0; // mapped bytes: whole pages, one at least
    int n = 0, rank = 0;
    std::vector<MPI_Aint> size, disp, offset; // per member of the communicator
};

namespace {

std::mutex g_mu;
std::unordered_map<const void *, shared_segment *> *g_wins; // window vobj -> its segment

template <class F> F lower(const char *api) {
    return (F)lower_fn(api);
}

// What each member says at the first exchange.
struct member_entry {
    int64_t size, disp;
    int32_t on_node; // every member of the communicator shares this rank's node
    int32_t noncontig;
};

// What rank 0 says at the second: where to open the segment, or why not.
struct leader_entry {
    int32_t ok, pid, fd, pad;
    uint64_t dev, ino;
};

// The lower MPI_BYTE. Not L.byte: a restart replays the windows before L is bound again.
MPI_Datatype lower_byte() {
#if defined(GHOST_MPI_MPICH)
    return MPI_BYTE;
#else
    vobj *b = (vobj *)dlsym(RTLD_DEFAULT, "ompi_mpi_byte");
    return b ? (MPI_Datatype)b->lower : (MPI_Datatype)g_lower_null[(int)kind::datatype];
#endif
}

int allgather(const void *mine, void *all, int bytes, MPI_Comm lcomm, uintptr_t lfs) {
    auto fn = lower<int (*)(const void *, int, MPI_Datatype, void *, int, MPI_Datatype, MPI_Comm)>(
        "MPI_Allgather");
    if (!fn) return MPI_ERR_INTERN;
    MPI_Datatype byte = lower_byte();
    lower_call lc(lfs);
    return fn(mine, bytes, byte, all, bytes, byte, lcomm);
}

// This rank in lcomm and its size (false if the library cannot tell).
bool rank_size(MPI_Comm lcomm, uintptr_t lfs, int *rank, int *n) {
    auto crank = lower<int (*)(MPI_Comm, int *)>("MPI_Comm_rank");
    auto csize = lower<int (*)(MPI_Comm, int *)>("MPI_Comm_size");
    if (!crank || !csize) return false;
    lower_call lc(lfs);
    return crank(lcomm, rank) == MPI_SUCCESS && csize(lcomm, n) == MPI_SUCCESS;
}

// Whether every member of lcomm runs on this rank's node, as the MPI library itself tells.
bool all_on_node(MPI_Comm lcomm, int n, uintptr_t lfs) {
    auto split = lower<int (*)(MPI_Comm, int, int, MPI_Info, MPI_Comm *)>("MPI_Comm_split_type");
    auto cfree = lower<int (*)(MPI_Comm *)>("MPI_Comm_free");
    auto csize = lower<int (*)(MPI_Comm, int *)>("MPI_Comm_size");
    if (!split || !cfree || !csize) return false;
    lower_call lc(lfs);
    MPI_Comm node;
    if (split(lcomm, MPI_COMM_TYPE_SHARED, 0, (MPI_Info)g_lower_null[(int)kind::info], &node) !=
        MPI_SUCCESS)
        return false;
    int here = -1;
    csize(node, &here);
    cfree(&node);
    return here == n;
}

bool info_noncontig(MPI_Info linfo, uintptr_t lfs) {
    auto get = lower<int (*)(MPI_Info, const char *, int, char *, int *)>("MPI_Info_get");
    if (!get || linfo == (MPI_Info)g_lower_null[(int)kind::info]) return false;
    char value[16] = "";
    int flag = 0, rc;
    {
        lower_call lc(lfs);
        rc = get(linfo, "alloc_shared_noncontig", (int)sizeof value - 1, value, &flag);
    }
    return rc == MPI_SUCCESS && flag && strcasecmp(value, "true") == 0; // upper TLS (locale)
}

size_t page_size() {
    static size_t p = (size_t)sysconf(_SC_PAGESIZE);
    return p;
}

size_t round_pages(size_t bytes) {
    size_t p = page_size();
    return bytes == 0 ? p : (bytes + p - 1) / p * p;
}

void call_errhandler(MPI_Comm lcomm, int code, uintptr_t lfs) {
    auto call = lower<int (*)(MPI_Comm, int)>("MPI_Comm_call_errhandler");
    if (!call) return;
    lower_call lc(lfs);
    call(lcomm, code);
}

// Rank 0's memfd of `length` bytes (-errno on failure), filled from `from` when given.
int make_memfd(size_t length, const void *from) {
    int fd = memfd_create("ghost-mpi-window", MFD_CLOEXEC);
    if (fd < 0) return -errno;
    if (ftruncate(fd, (off_t)length) != 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    for (size_t done = 0; from && done < length;) {
        ssize_t w = pwrite(fd, (const char *)from + done, length - done, (off_t)done);
        if (w <= 0) {
            int e = w < 0 ? errno : EIO;
            close(fd);
            return -e;
        }
        done += (size_t)w;
    }
    return fd;
}

// Rank 0's segment made known to the others, each opens it and maps it (at `at`, replacing what
// is there, if not null), then all agree. Returns the mapping or MAP_FAILED on every member.
void *share_segment(int rank, size_t length, void *at, const void *fill, MPI_Comm lcomm, int n,
                    uintptr_t lfs, char *why, size_t why_len) {
    int flags = MAP_SHARED | (at ? MAP_FIXED : 0);
    leader_entry mine{}, *all = new leader_entry[(size_t)n];
    int fd = -1;
    void *map = MAP_FAILED;
    if (rank == 0) {
        fd = make_memfd(length, fill);
        struct stat st;
        if (fd >= 0 && fstat(fd, &st) == 0) {
            map = mmap(at, length, PROT_READ | PROT_WRITE, flags, fd, 0);
            mine = {map != MAP_FAILED,   (int32_t)getpid(),  fd, 0,
                    (uint64_t)st.st_dev, (uint64_t)st.st_ino};
        }
        if (map == MAP_FAILED)
            snprintf(why, why_len, "cannot make the segment of %zu bytes: %s", length,
                     strerror(fd < 0 ? -fd : errno));
    }
    bool ok = allgather(&mine, all, (int)sizeof mine, lcomm, lfs) == MPI_SUCCESS;
    if (ok && rank != 0) {
        ok = false;
        if (all[0].ok) {
            char path[64];
            snprintf(path, sizeof path, "/proc/%d/fd/%d", all[0].pid, all[0].fd);
            int mfd = open(path, O_RDWR | O_CLOEXEC);
            struct stat st;
            // The same file as rank 0's (not another process's that took its pid elsewhere).
            if (mfd >= 0 && fstat(mfd, &st) == 0 && (uint64_t)st.st_dev == all[0].dev &&
                (uint64_t)st.st_ino == all[0].ino) {
                map = mmap(at, length, PROT_READ | PROT_WRITE, flags, mfd, 0);
                ok = map != MAP_FAILED;
            }
            if (!ok)
                snprintf(why, why_len, "cannot map rank 0's segment (%s): %s", path,
                         strerror(errno));
            if (mfd >= 0) close(mfd);
        }
    } else if (rank == 0) {
        ok = ok && map != MAP_FAILED;
    }
    // Everyone has it mapped (or failed) before rank 0 closes its descriptor.
    int32_t mine_ok = ok, *oks = new int32_t[(size_t)n];
    bool all_ok = allgather(&mine_ok, oks, (int)sizeof mine_ok, lcomm, lfs) == MPI_SUCCESS;
    for (int i = 0; all_ok && i < n; i++)
        all_ok = oks[i] != 0;
    if (fd >= 0) close(fd);
    delete[] oks;
    delete[] all;
    if (!all_ok && map != MAP_FAILED && !at) munmap(map, length);
    if (!all_ok && !why[0]) snprintf(why, why_len, "another rank could not map the segment");
    return all_ok ? map : MAP_FAILED;
}

// A rank's part; an empty part is NULL, as MPI libraries give it.
void *part_of(const shared_segment *s, int rank) {
    if (s->size[(size_t)rank] == 0) return nullptr;
    return (void *)(s->base + (uintptr_t)s->offset[(size_t)rank]);
}

} // namespace

int shared_win_allocate(MPI_Aint size, MPI_Aint disp_unit, MPI_Info linfo, MPI_Comm lcomm,
                        uintptr_t lfs, void **base, shared_segment **out) {
    *out = nullptr;
    int rank = -1, n = 0;
    if (!rank_size(lcomm, lfs, &rank, &n)) return MPI_ERR_COMM;
    member_entry mine{size, disp_unit, all_on_node(lcomm, n, lfs), info_noncontig(linfo, lfs)};
    std::vector<member_entry> all((size_t)n);
    int rc = allgather(&mine, all.data(), (int)sizeof mine, lcomm, lfs);
    if (rc != MPI_SUCCESS) return rc;
    // The same verdict on every member, from the same entries.
    int err = MPI_SUCCESS;
    for (const member_entry &e : all)
        if (e.size < 0)
            err = MPI_ERR_SIZE;
        else if (e.disp <= 0 && err == MPI_SUCCESS)
            err = MPI_ERR_DISP;
        else if (!e.on_node && err == MPI_SUCCESS)
            err = MPI_ERR_RMA_SHARED;
    if (err != MPI_SUCCESS) {
        call_errhandler(lcomm, err, lfs);
        return err;
    }
    auto *s = new shared_segment();
    s->n = n;
    s->rank = rank;
    size_t at = 0;
    for (const member_entry &e : all) {
        if (all[0].noncontig) at = (at + page_size() - 1) / page_size() * page_size();
        s->size.push_back((MPI_Aint)e.size);
        s->disp.push_back((MPI_Aint)e.disp);
        s->offset.push_back((MPI_Aint)at);
        at += (size_t)e.size;
    }
    s->length = round_pages(at);
    char why[200] = "";
    void *map = share_segment(rank, s->length, nullptr, nullptr, lcomm, n, lfs, why, sizeof why);
    if (map == MAP_FAILED) {
        fprintf(stderr, "ghost-mpi: MPI_Win_allocate_shared: %s\n", why);
        delete s;
        call_errhandler(lcomm, MPI_ERR_NO_MEM, lfs);
        return MPI_ERR_NO_MEM;
    }
    s->base = (uintptr_t)map;
    *base = part_of(s, rank);
    *out = s;
    return MPI_SUCCESS;
}

void shared_win_adopted(uintptr_t win, shared_segment *s) {
    vobj *v = decode<kind::win>((MPI_Win)win);
    if (!v || !s) return;
    std::lock_guard<std::mutex> g(g_mu);
    if (!g_wins) g_wins = new std::unordered_map<const void *, shared_segment *>();
    (*g_wins)[v] = s;
}

shared_segment *shared_win_of(uintptr_t win) {
    if (win == 0 || win == g_upper_null[(int)kind::win]) return nullptr;
    vobj *v = decode<kind::win>((MPI_Win)win);
    std::lock_guard<std::mutex> g(g_mu);
    if (!v || !g_wins) return nullptr;
    auto it = g_wins->find(v);
    return it == g_wins->end() ? nullptr : it->second;
}

void shared_win_release(shared_segment *s) {
    {
        std::lock_guard<std::mutex> g(g_mu);
        if (g_wins)
            for (auto it = g_wins->begin(); it != g_wins->end(); ++it)
                if (it->second == s) {
                    g_wins->erase(it);
                    break;
                }
    }
    if (s->base) munmap((void *)s->base, s->length);
    delete s;
}

namespace {
std::atomic<int> g_holding{0}; // 1 once write-protected for this restore
int g_hold_fd = -1;            // the userfaultfd that holds the writers
} // namespace

void shared_win_hold_writes() {
    if (g_holding.exchange(1) != 0 || !g_wins || g_wins->empty()) return;
    int fd = -1;
    for (unsigned long long features :
         {UFFD_FEATURE_WP_HUGETLBFS_SHMEM | ghost::uapi::uffd_feature_wp_unpopulated,
          (unsigned long long)UFFD_FEATURE_WP_HUGETLBFS_SHMEM}) {
        for (int mode : {0, (int)UFFD_USER_MODE_ONLY}) { // (without privilege: user faults only)
            fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | mode);
            if (fd >= 0) break;
        }
        if (fd < 0) return;
        struct uffdio_api api = {UFFD_API, features, 0};
        if (ioctl(fd, UFFDIO_API, &api) == 0) break;
        close(fd);
        fd = -1;
    }
    if (fd < 0) return;
    for (const auto &w : *g_wins) {
        const shared_segment *seg = w.second;
        struct uffdio_register reg = {{seg->base, seg->length}, UFFDIO_REGISTER_MODE_WP, 0};
        struct uffdio_writeprotect wp = {{seg->base, seg->length}, UFFDIO_WRITEPROTECT_MODE_WP};
        if (ioctl(fd, UFFDIO_REGISTER, &reg) == 0) ioctl(fd, UFFDIO_WRITEPROTECT, &wp);
    }
    g_hold_fd = fd;
}

bool shared_win_any() {
    return g_wins && !g_wins->empty();
}

void shared_win_release_writes() {
    // Closing it wakes every waiting writer: its fault is taken again, on the shared segment
    // mapped in place of this rank's own copy by then.
    if (g_hold_fd >= 0) close(g_hold_fd);
    g_hold_fd = -1;
    g_holding.store(0);
}

bool u_Win_shared_query(MPI_Win win, int rank, MPI_Aint *size, int *disp_unit, void *baseptr,
                        int *rc) {
    shared_segment *s = shared_win_of((uintptr_t)win);
    if (!s || !size || !disp_unit || !baseptr) return false;
    if (rank == MPI_PROC_NULL) { // the lowest rank with memory
        for (int i = 0; i < s->n && rank == MPI_PROC_NULL; i++)
            if (s->size[(size_t)i] > 0) rank = i;
        if (rank == MPI_PROC_NULL) {
            *size = 0;
            *disp_unit = (int)s->disp[0];
            *(void **)baseptr = nullptr;
            *rc = MPI_SUCCESS;
            return true;
        }
    }
    if (rank < 0 || rank >= s->n) return false; // the library's own error
    *size = s->size[(size_t)rank];
    *disp_unit = (int)s->disp[(size_t)rank];
    *(void **)baseptr = part_of(s, rank);
    *rc = MPI_SUCCESS;
    return true;
}

bool u_Win_shared_query_c(MPI_Win win, int rank, MPI_Aint *size, MPI_Aint *disp_unit, void *baseptr,
                          int *rc) {
    int disp = 0;
    if (!disp_unit || !u_Win_shared_query(win, rank, size, &disp, baseptr, rc)) return false;
    shared_segment *s = shared_win_of((uintptr_t)win);
    *disp_unit = s && rank >= 0 && rank < s->n ? s->disp[(size_t)rank] : disp;
    return true;
}

int shared_win_rebuild(const void *win_vobj, MPI_Comm lcomm, uintptr_t lfs, void **base, char *why,
                       size_t why_len) {
    shared_segment *s = nullptr;
    {
        std::lock_guard<std::mutex> g(g_mu);
        if (g_wins) {
            auto it = g_wins->find(win_vobj);
            if (it != g_wins->end()) s = it->second;
        }
    }
    int rank = -1, n = 0;
    if (!rank_size(lcomm, lfs, &rank, &n) || n <= 0) {
        snprintf(why, why_len, "cannot read the shared window's communicator");
        return -1;
    }
    // Every member decides alike whether it goes on (no member may stay behind in a collective).
    int32_t mine = s && s->rank == rank && s->n == n && all_on_node(lcomm, n, lfs);
    std::vector<int32_t> all((size_t)(n > 0 ? n : 1));
    if (allgather(&mine, all.data(), (int)sizeof mine, lcomm, lfs) != MPI_SUCCESS) {
        snprintf(why, why_len, "the ranks of a shared window could not agree");
        return -1;
    }
    for (int i = 0; i < n; i++)
        if (!all[(size_t)i]) {
            snprintf(why, why_len,
                     "the ranks of a window made by MPI_Win_allocate_shared are not all on one "
                     "node now (rank %d of it); restart them on one host",
                     i);
            return -1;
        }
    void *at = (void *)s->base;
    if (share_segment(rank, s->length, at, rank == 0 ? at : nullptr, lcomm, n, lfs, why, why_len) ==
        MAP_FAILED)
        return -1;
    *base = part_of(s, rank);
    return 0;
}

} // namespace ghost::mpi
