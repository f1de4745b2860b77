// SPDX-License-Identifier: Apache-2.0
// Binding of predefined objects at start-up and the small helpers the generated wrappers call.
#include <dlfcn.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <mutex>

#include "wrapper_support.h"

namespace ghost::mpi {

uintptr_t g_upper_null[kKinds];
uintptr_t g_lower_null[kKinds];

namespace {
struct fn_pair {
    void *upper;
    void *lower;
};
fn_pair g_fn_map[64];
int g_nfn_map = 0;
const int *g_upper_unweighted = nullptr;
const int *g_lower_unweighted = nullptr;
const int *g_upper_weights_empty = nullptr;
const int *g_lower_weights_empty = nullptr;

int fn_index(const char *api) {
    for (size_t i = 0; i < g_nfns; i++)
        if (strcmp(g_fn_names[i], api) == 0) return (int)i;
    return -1;
}

// Slow-path helper (used to size alltoallw type arrays): calls a lower function by its MPI name.
template <class F, class... A> int call_lower(const char *api, A... args) {
    int i = fn_index(api);
    if (i < 0) return MPI_ERR_INTERN;
    lower_call lc;
    return ((F)g_fns[i])(args...);
}
} // namespace

void *lower_fn(const char *api) {
    int i = fn_index(api);
    return i < 0 ? nullptr : g_fns[i];
}

void *translate_predefined_fn(void *upper) {
    for (int i = 0; i < g_nfn_map; i++)
        if (g_fn_map[i].upper == upper) return g_fn_map[i].lower;
    return nullptr;
}

void bind_reset() {
    g_nfn_map = 0;
}

bool bind_handle(const char *sym, kind k, void *lower, const char **why) {
    void *up = dlsym(RTLD_DEFAULT, sym);
    if (!up) {
        *why =
            "a predefined MPI object is missing from the stub library (is it on LD_LIBRARY_PATH?)";
        return false;
    }
    vobj_register_predefined((vobj *)up, k, (uintptr_t)lower);
    return true;
}

bool bind_null(kind k, const char *sym, void *lower, const char **why) {
    void *up = dlsym(RTLD_DEFAULT, sym);
    if (!up) {
        *why = "a predefined null handle is missing from the stub library";
        return false;
    }
    g_upper_null[(int)k] = (uintptr_t)up;
    g_lower_null[(int)k] = (uintptr_t)lower;
    return true;
}

void bind_function(const char *sym, void *lower) {
    void *up = dlsym(RTLD_DEFAULT, sym);
    if (up && g_nfn_map < 64) g_fn_map[g_nfn_map++] = {up, lower};
}

void bind_value(const char *sym, void *lower_var) {
    void **up = (void **)dlsym(RTLD_DEFAULT, sym);
    const int *lower_val = *(const int *const *)lower_var;
    const int *upper_val = up ? (const int *)*up : nullptr;
    if (strcmp(sym, "MPI_UNWEIGHTED") == 0) {
        g_upper_unweighted = upper_val;
        g_lower_unweighted = lower_val;
    } else if (strcmp(sym, "MPI_WEIGHTS_EMPTY") == 0) {
        g_upper_weights_empty = upper_val;
        g_lower_weights_empty = lower_val;
    }
}

const int *xlate_weights(const int *w) {
    if (w && w == g_upper_unweighted) return g_lower_unweighted;
    if (w && w == g_upper_weights_empty) return g_lower_weights_empty;
    return w;
}
bool weights_sentinel(const int *w) {
    if (!w) return false;
#if !defined(GHOST_MPI_MPICH)
    // Open MPI's are constant addresses, the same in both halves (nothing to bind).
    if (w == MPI_UNWEIGHTED || w == MPI_WEIGHTS_EMPTY) return true;
#endif
    return w == g_upper_unweighted || w == g_upper_weights_empty;
}

size_t weights_len(const int *w, int n) {
    return !w || weights_sentinel(w) || n < 0 ? 0 : (size_t)n;
}

size_t int_sum(const int *a, int n) {
    size_t sum = 0;
    for (int i = 0; a && i < n; i++)
        sum += a[i] > 0 ? (size_t)a[i] : 0;
    return sum;
}

size_t cart_ndims(MPI_Comm upper) {
    int nd = 0;
    if (call_lower<int (*)(MPI_Comm, int *)>("MPI_Cartdim_get", to_lower<kind::comm>(upper), &nd) !=
        MPI_SUCCESS)
        return 0;
    return nd > 0 ? (size_t)nd : 0;
}

int *xlate_weights(int *w) {
    return const_cast<int *>(xlate_weights(static_cast<const int *>(w)));
}

int w_count(MPI_Comm lc, int recv_side, int neighbor, int in_place) {
    if (in_place) return 0;
    if (!neighbor) {
        int inter = 0, n = 0;
        call_lower<int (*)(MPI_Comm, int *)>("MPI_Comm_test_inter", lc, &inter);
        call_lower<int (*)(MPI_Comm, int *)>(inter ? "MPI_Comm_remote_size" : "MPI_Comm_size", lc,
                                             &n);
        return n;
    }
    int topo = MPI_UNDEFINED;
    call_lower<int (*)(MPI_Comm, int *)>("MPI_Topo_test", lc, &topo);
    if (topo == MPI_CART) {
        int nd = 0;
        call_lower<int (*)(MPI_Comm, int *)>("MPI_Cartdim_get", lc, &nd);
        return 2 * nd;
    }
    if (topo == MPI_GRAPH) {
        int rank = 0, n = 0;
        call_lower<int (*)(MPI_Comm, int *)>("MPI_Comm_rank", lc, &rank);
        call_lower<int (*)(MPI_Comm, int, int *)>("MPI_Graph_neighbors_count", lc, rank, &n);
        return n;
    }
    if (topo == MPI_DIST_GRAPH) {
        int in = 0, out = 0, w = 0;
        call_lower<int (*)(MPI_Comm, int *, int *, int *)>("MPI_Dist_graph_neighbors_count", lc,
                                                           &in, &out, &w);
        return recv_side ? in : out;
    }
    return 0;
}

namespace {
std::atomic<const char *> g_uncarried{nullptr}; // the first call whose effect ghost cannot carry
std::atomic<int> g_mpit_sessions{0};            // MPI_T_init_thread calls not finalized yet
} // namespace

void note_uncarried(const char *call) {
    const char *none = nullptr;
    g_uncarried.compare_exchange_strong(none, call);
}

void note_mpit(int delta) {
    g_mpit_sessions.fetch_add(delta);
}

const char *uncarried_state(char *buf, size_t len) {
    if (const char *call = g_uncarried.load()) {
        snprintf(buf, len,
                 "it called %s: large-count (_c) point-to-point calls are not counted, so a "
                 "message of theirs may be in flight",
                 call);
        return buf;
    }
    if (g_mpit_sessions.load() > 0) {
        snprintf(buf, len,
                 "the MPI tool interface (MPI_T_init_thread) is in use: its handles are not "
                 "carried");
        return buf;
    }
    return nullptr;
}

int unsupported(const char *api) {
    char buf[256];
    int n = snprintf(buf, sizeof buf,
                     "ghost-mpi: %s is not supported across the split process yet\n", api);
    if (n > 0) (void)!write(2, buf, (size_t)n);
    return MPI_ERR_UNSUPPORTED_OPERATION;
}

} // namespace ghost::mpi

using namespace ghost::mpi;

// Number of live creation records (objects that would be rebuilt on a fresh lower half).
extern "C" GHOST_EXPORT size_t ghost_mpi_records_count(void) {
    return records_live();
}

// One line per live record: sequence, creating call, object kind, argument count, deep-copied
// arrays.
extern "C" GHOST_EXPORT void ghost_mpi_records_dump(int fd) {
    records_visit(
        [](const record *r, const vobj *v, void *arg) {
            int out = *(int *)arg;
            size_t bytes = 0;
            for (const auto &a : r->arrays)
                bytes += a.size();
            dprintf(out, "ghost-mpi: record %llu %s -> %s, %zu args, %zu arrays (%zu bytes)\n",
                    (unsigned long long)r->seq,
                    r->fn >= 0 && (size_t)r->fn < g_nfns ? g_fn_names[r->fn] : "?",
                    v ? kind_name(v->k) : "?", r->args.size(), r->arrays.size(), bytes);
        },
        &fd);
}
