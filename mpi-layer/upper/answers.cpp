// SPDX-License-Identifier: Apache-2.0
// Calls answered in the upper half (answers.h). What is cached is immutable for the object's life
// and lives in upper memory, so a restored rank (fresh lower half, same job layout, the records
// replayed) answers the same: communicator rank and size come from comm_info (filled when the
// communicator is first seen), the init state and thread level from the Init wrappers (a
// checkpoint is refused after MPI_Finalize), datatype sizes from the datatype's vobj.
#include "answers.h"

#include <stdio.h>
#include <time.h>

#include <atomic>
#include <climits>
#include <cmath>
#include <mutex>

#include "lower_api.h"
#include "quiesce.h"
#include "wrapper_support.h"

namespace ghost::mpi {
namespace {

int g_inited = 0;        // MPI_Init(_thread) succeeded
int g_finalized = 0;     // MPI_Finalize succeeded
int g_provided = -1;     // the thread level MPI_Init(_thread) gave (-1: not known)
uintptr_t g_init_fs = 0; // upper thread pointer of the thread that initialised MPI
// Datatype vobjs: what the upper half holds of the type (qflags).
constexpr uint32_t kQSizeKnown = 1u << 20;       // peer holds MPI_Type_size
constexpr uint32_t kQExtentKnown = 1u << 21;     // dt.lb, dt.extent: MPI_Type_get_extent
constexpr uint32_t kQTrueExtentKnown = 1u << 22; // dt.true_lb, dt.true_extent

// MPI_Wtime as the flavour defines it, computed in the upper half: Open MPI 4.1 is
// clock_gettime(CLOCK_MONOTONIC) minus an origin taken at MPI_Init (ompi_wtime_time_origin),
// MPICH 4.0 clock_gettime(CLOCK_REALTIME) minus a whole number of seconds taken at its
// initialisation (MPL_wtime). The origin is read once from the lower half's own MPI_Wtime.
#if defined(GHOST_MPI_MPICH)
constexpr clockid_t kWtimeClock = CLOCK_REALTIME;
#else
constexpr clockid_t kWtimeClock = CLOCK_MONOTONIC;
#endif
std::atomic<int> g_wtime_ready{0};
long long g_origin_sec = 0, g_origin_nsec = 0;
std::atomic<uint64_t> g_wtick_bits{0};
std::mutex g_time_mu;

template <class F> F lower_named(const char *api) {
    return (F)lower_fn(api);
}

bool calibrate_wtime() {
    std::lock_guard<std::mutex> g(g_time_mu);
    if (g_wtime_ready.load(std::memory_order_acquire)) return true;
    auto wtime = lower_named<double (*)()>("MPI_Wtime");
    if (!wtime) return false;
    struct timespec t;
    double w;
    {
        lower_call lc;
        w = wtime();
    }
    clock_gettime(kWtimeClock, &t);
    const long long now_ns = (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
#if defined(GHOST_MPI_MPICH)
    g_origin_sec = llround((double)now_ns * 1e-9 - w);
    g_origin_nsec = 0;
#else
    long long o = now_ns - llround(w * 1e9);
    g_origin_sec = o / 1000000000LL;
    g_origin_nsec = o % 1000000000LL;
#endif
    g_wtime_ready.store(1, std::memory_order_release);
    return true;
}

} // namespace

// Why MULTIPLE always: a quiescence drains in-flight messages from the layer's own thread
// (coord_client.cpp) while an application thread may sit in a blocking lower call (a Send the
// drain lets complete). A lower half initialised at MPI_THREAD_SINGLE takes no locks and gives
// UCX a single-threaded worker: two threads inside it corrupt its state (MPICH ch4:ucx asserted
// `worker->inprogress++ == 0` in such a run). The application still sees the level it asked for.
int lower_init(uintptr_t lfs, int *argc, char ***argv, int required, int *app_level) {
    auto init_thread = lower_named<int (*)(int *, char ***, int, int *)>("MPI_Init_thread");
    int got = MPI_THREAD_SINGLE, rc;
    {
        lower_call lc(lfs);
        rc = init_thread(argc, argv, MPI_THREAD_MULTIPLE, &got);
    }
    if (rc != MPI_SUCCESS) return rc;
    if (got < MPI_THREAD_MULTIPLE)
        dprintf(2,
                "ghost-mpi: the MPI library gives thread level %d, not MPI_THREAD_MULTIPLE: a "
                "checkpoint that comes while a thread is blocked in a send may fail\n",
                got);
    *app_level = required < got ? required : got;
    return rc;
}

void note_initialized(int provided) {
    g_provided = provided;
    g_init_fs = current_fs();
    __atomic_store_n(&g_inited, 1, __ATOMIC_RELEASE);
}

void note_finalized() {
    __atomic_store_n(&g_finalized, 1, __ATOMIC_RELEASE);
}

static inline bool live() {
    return __atomic_load_n(&g_inited, __ATOMIC_ACQUIRE) &&
           !__atomic_load_n(&g_finalized, __ATOMIC_ACQUIRE);
}

bool world_initialized() {
    return live();
}

bool u_Comm_rank(MPI_Comm c, int *rank, int *rc) {
    if (!rank || !live()) return false;
    comm_info *ci = comm_info_of(c);
    if (!ci) return false;
    int r = __atomic_load_n(&ci->rank, __ATOMIC_ACQUIRE);
    if (r < 0) return false;
    *rank = r;
    *rc = MPI_SUCCESS;
    return true;
}

bool u_Comm_size(MPI_Comm c, int *size, int *rc) {
    if (!size || !live()) return false;
    comm_info *ci = comm_info_of(c);
    if (!ci || __atomic_load_n(&ci->rank, __ATOMIC_ACQUIRE) < 0) return false;
    *size = ci->local_size;
    *rc = MPI_SUCCESS;
    return true;
}

bool u_Initialized(int *flag, int *rc) {
    if (!flag || !__atomic_load_n(&g_inited, __ATOMIC_ACQUIRE)) return false;
    *flag = 1; // stays true after MPI_Finalize
    *rc = MPI_SUCCESS;
    return true;
}

bool u_Finalized(int *flag, int *rc) {
    if (!flag || !__atomic_load_n(&g_inited, __ATOMIC_ACQUIRE)) return false;
    *flag = __atomic_load_n(&g_finalized, __ATOMIC_ACQUIRE);
    *rc = MPI_SUCCESS;
    return true;
}

bool u_Query_thread(int *provided, int *rc) {
    if (!provided || !live() || g_provided < 0) return false;
    *provided = g_provided;
    *rc = MPI_SUCCESS;
    return true;
}

bool u_Is_thread_main(int *flag, int *rc) {
    if (!flag || !live() || !g_init_fs) return false;
    *flag = current_fs() == g_init_fs;
    *rc = MPI_SUCCESS;
    return true;
}

#if defined(GHOST_MPI_MPICH)
namespace {
// Builtin MPICH datatypes carry their size in the handle (MPIR_Datatype_get_basic_size).
bool mpich_builtin_size(MPI_Datatype t, int *size) {
    uint32_t h = (uint32_t)t;
    if ((h >> 30) != 1 || ((h >> 26) & 0xF) != 0x3) return false;
    *size = (int)((h & 0xff00u) >> 8);
    return true;
}
} // namespace
#endif

bool u_Type_size(MPI_Datatype t, int *size, int *rc) {
    if (!size || !live()) return false;
#if defined(GHOST_MPI_MPICH)
    if (mpich_builtin_size(t, size)) {
        *rc = MPI_SUCCESS;
        return true;
    }
#endif
    vobj *v = decode<kind::datatype>(t);
    if (!v || v->magic != kVobjMagic || v->k != kind::datatype) return false;
    if (__atomic_load_n(&v->qflags, __ATOMIC_ACQUIRE) & kQSizeKnown) {
        *size = v->peer;
        *rc = MPI_SUCCESS;
        return true;
    }
    if (!L.ready) return false;
    int s = 0, r;
    MPI_Datatype l = (MPI_Datatype)v->lower;
    {
        lower_call lc;
        r = L.Type_size(l, &s);
    }
    if (r == MPI_SUCCESS) {
        v->peer = s;
        __atomic_fetch_or(&v->qflags, kQSizeKnown, __ATOMIC_RELEASE);
        *size = s;
    }
    *rc = r;
    return true;
}

namespace {
// MPI_Type_get_extent or MPI_Type_get_true_extent (true_extent) from the datatype's vobj, asked of
// the lower half the first time.
bool type_extent(MPI_Datatype t, bool true_extent, MPI_Aint *lb, MPI_Aint *extent, int *rc) {
    if (!lb || !extent || !live()) return false;
#if defined(GHOST_MPI_MPICH)
    if (int size = 0; mpich_builtin_size(t, &size)) { // (MPIR_Type_get_extent_impl's builtins)
        *lb = 0;
        *extent = size;
        *rc = MPI_SUCCESS;
        return true;
    }
#endif
    vobj *v = decode<kind::datatype>(t);
    if (!v || v->magic != kVobjMagic || v->k != kind::datatype) return false;
    const uint32_t known = true_extent ? kQTrueExtentKnown : kQExtentKnown;
    int64_t &cached_lb = true_extent ? v->dt.true_lb : v->dt.lb;
    int64_t &cached_extent = true_extent ? v->dt.true_extent : v->dt.extent;
    if (__atomic_load_n(&v->qflags, __ATOMIC_ACQUIRE) & known) {
        *lb = (MPI_Aint)cached_lb;
        *extent = (MPI_Aint)cached_extent;
        *rc = MPI_SUCCESS;
        return true;
    }
    if (!L.ready) return false;
    MPI_Aint l_lb = 0, l_extent = 0;
    int r;
    MPI_Datatype l = (MPI_Datatype)v->lower;
    {
        lower_call lc;
        r = true_extent ? L.Type_get_true_extent(l, &l_lb, &l_extent)
                        : L.Type_get_extent(l, &l_lb, &l_extent);
    }
    if (r == MPI_SUCCESS) {
        // (Two threads asking at once both write the same values.)
        cached_lb = l_lb;
        cached_extent = l_extent;
        __atomic_fetch_or(&v->qflags, known, __ATOMIC_RELEASE);
        *lb = l_lb;
        *extent = l_extent;
    }
    *rc = r;
    return true;
}
} // namespace

bool u_Type_get_extent(MPI_Datatype t, MPI_Aint *lb, MPI_Aint *extent, int *rc) {
    return type_extent(t, false, lb, extent, rc);
}

bool u_Type_get_true_extent(MPI_Datatype t, MPI_Aint *lb, MPI_Aint *extent, int *rc) {
    return type_extent(t, true, lb, extent, rc);
}

long long status_bytes(const MPI_Status *st) {
#if defined(GHOST_MPI_MPICH)
    // MPIR_STATUS_GET_COUNT: the count's high bits above the cancelled bit.
    return (long long)((((unsigned long long)((unsigned)st->count_hi_and_cancelled >> 1))
                        << (8 * sizeof(int))) +
                       (unsigned)st->count_lo);
#else
    return (long long)st->_ucount;
#endif
}

bool u_Get_count(const MPI_Status *st, MPI_Datatype t, int *count, int *rc) {
    if (!count || !st || st == MPI_STATUS_IGNORE || !live()) return false;
    int size = 0;
#if defined(GHOST_MPI_MPICH)
    if (!mpich_builtin_size(t, &size)) return false;
#else
    vobj *v = decode<kind::datatype>(t);
    if (!v || v->magic != kVobjMagic || v->k != kind::datatype || !(v->flags & kPredefined))
        return false;
    int r = MPI_SUCCESS;
    if (!u_Type_size(t, &size, &r) || r != MPI_SUCCESS) return false;
#endif
    if (size <= 0) return false; // (the libraries differ there)
    const long long bytes = status_bytes(st);
    const long long n = bytes / size;
    *count = n * size != bytes || n > INT_MAX ? MPI_UNDEFINED : (int)n;
    *rc = MPI_SUCCESS;
    return true;
}

uint64_t payload_bytes(MPI_Datatype upper_type, long long count) {
    int size = 0, rc = MPI_ERR_TYPE;
    if (count <= 0 || !u_Type_size(upper_type, &size, &rc) || rc != MPI_SUCCESS || size <= 0)
        return 0;
    return (uint64_t)size * (uint64_t)count;
}

bool u_Wtime(double *out) {
    if (!live()) return false;
    if (!g_wtime_ready.load(std::memory_order_acquire) && !calibrate_wtime()) return false;
    struct timespec t;
    clock_gettime(kWtimeClock, &t);
    *out = (double)((long long)t.tv_sec - g_origin_sec) +
           (double)((long long)t.tv_nsec - g_origin_nsec) / 1e9;
    return true;
}

bool u_Wtick(double *out) {
    if (!live()) return false;
    uint64_t bits = g_wtick_bits.load(std::memory_order_acquire);
    double d;
    if (!bits) {
        auto wtick = lower_named<double (*)()>("MPI_Wtick");
        if (!wtick) return false;
        {
            lower_call lc;
            d = wtick();
        }
        memcpy(&bits, &d, sizeof d);
        g_wtick_bits.store(bits, std::memory_order_release);
    }
    memcpy(&d, &bits, sizeof d);
    *out = d;
    return true;
}

} // namespace ghost::mpi
