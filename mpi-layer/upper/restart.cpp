// SPDX-License-Identifier: Apache-2.0
// The MPI layer as a component of the ghost agent (ghost-core/agent/ghost_agent.h): what a rank's
// image leaves out, and how a restored rank gets a fresh lower half.
//
// At a park: quiesce (manager thread, libc allowed) flushes stdio, records the MPI state
// (initialised, thread level) in upper memory, so in the image, and refuses what a restart could
// not rebuild; exclude_threads names the lower half's threads; exclude (everything else stopped, no
// malloc) names its memory and descriptors (upper/attribution.cpp). After a restore: every thread
// forgets its lower TLS before it runs (its next MPI call waits); the manager starts a fresh lower
// half with the new launcher's environment, calls MPI_Init_thread at the level the rank had, and
// replays the creation records in their global order: every rank replays the same collective
// creations in the same order, so communicators come back as they were.
#include <dlfcn.h>
#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <climits>
#include <cstdio>
#include <algorithm>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "answers.h"
#include "attribution.h"
#include "files.h"
#include "quiesce.h"
#include "ghost-core/agent/ghost_agent.h"
#include "wrapper_support.h"

extern char **environ;

namespace ghost::mpi {
namespace {

// Part of the image: what the restart needs to know about the rank's MPI at checkpoint time.
struct mpi_state {
    bool active;      // a lower half was running
    int initialized;  // MPI_Init(_thread) had been called
    int thread_level; // MPI_Query_thread
    int rank;         // in MPI_COMM_WORLD (for messages)
    int size;         // of MPI_COMM_WORLD: a restart needs as many ranks
} g_state;

// The buffer attached for buffered sends (MPI_Buffer_attach), in upper memory: the lower half's
// attachment goes with it, and a restored rank attaches it again. Its messages were all delivered
// at the checkpoint (drained by their receivers), so the new attachment starts empty.
std::mutex g_bsend_mu;
void *g_bsend_buf;
long long g_bsend_size;

int index_of(const char *api) {
    for (size_t i = 0; i < g_nfns; i++)
        if (strcmp(g_fn_names[i], api) == 0) return (int)i;
    return -1;
}

template <class F, class... A> int call_by_name(uintptr_t fs, const char *api, A... args) {
    int i = index_of(api);
    if (i < 0) return MPI_ERR_INTERN;
    lower_call lc(fs);
    return ((F)g_fns[i])(args...);
}

template <class H> H handle_of(uint64_t w) {
    if constexpr (std::is_pointer_v<H>)
        return (H)(uintptr_t)w;
    else
        return (H)(int)(int64_t)w;
}

template <kind K, class H> H lower_null() {
    if constexpr (std::is_pointer_v<H>)
        return (H)g_lower_null[(int)K];
    else
        return (H)(int)g_lower_null[(int)K];
}

// One record, either checked (can it be replayed?) or replayed on the current lower half.
struct replay {
    const record *r;
    bool check;
    uintptr_t fs = 0;
    bool refs_ok = true;
    uintptr_t out = 0;                           // the new lower handle
    std::vector<const record *> *deps = nullptr; // check: the records its handles resolve to

    // Argument i, an upper handle of kind K: checked (it must be predefined or created before this
    // record and still live) or translated to the new lower handle.
    template <kind K, class H> H h(int i) { return hv<K, H>(handle_of<H>(r->args[(size_t)i])); }
    // A handle that named, when this record was made, an object freed since (its slot may hold
    // a newer one now) resolves to that object's zombie record.
    template <kind K, class H> H hv(H u) {
        vobj *v = (uintptr_t)u != g_upper_null[(int)K] ? decode_slot<K>(u) : nullptr;
        bool current =
            !v || (v->magic == kVobjMagic &&
                   ((v->flags & kPredefined) || (v->k == K && v->rec && v->rec->seq < r->seq)));
        if (current) {
            if (deps && v && !(v->flags & kPredefined)) deps->push_back(v->rec);
            return check ? u : to_lower<K>(u);
        }
        const record *z = record_zombie_for(v, r->seq);
        if (!z || z->zombie_kind != (uint8_t)K) {
            refs_ok = false;
            return u;
        }
        if (deps) deps->push_back(z);
        if (check) return u;
        if constexpr (std::is_pointer_v<H>)
            return (H)z->replay_lower;
        else
            return (H)(int)z->replay_lower;
    }
    int i(int k) const { return (int)(int64_t)r->args[(size_t)k]; }
    MPI_Aint a(int k) const { return (MPI_Aint)r->args[(size_t)k]; }
    template <class T> T *arr(int arg) const {
        for (size_t k = 0; k < r->array_arg.size(); k++)
            if (r->array_arg[k] == arg) return (T *)r->arrays[k].data();
        return nullptr;
    }
    size_t arr_bytes(int arg) const {
        for (size_t k = 0; k < r->array_arg.size(); k++)
            if (r->array_arg[k] == arg) return r->arrays[k].size();
        return 0;
    }
    template <class F, class... A> int call(A... args) {
        if (check) return MPI_SUCCESS;
        lower_call lc(fs);
        return ((F)g_fns[r->fn])(args...);
    }
    template <kind K, class H> void made(H l) { out = (uintptr_t)l; }
    // A weights argument (MPI_Dist_graph_create*): the recorded array, or the sentinel the
    // application passed (MPI_UNWEIGHTED, MPI_WEIGHTS_EMPTY), translated; a real array of no
    // element stays a real, non-sentinel pointer.
    const int *weights(int k) const {
        static const int kNone[1] = {0};
        const int *raw = (const int *)(uintptr_t)r->args[(size_t)k];
        if (!raw || weights_sentinel(raw)) return check ? raw : xlate_weights(raw);
        const int *w = arr<const int>(k);
        return w ? w : kNone;
    }
};

uint64_t r_arg(const replay &p, size_t k) {
    return k < p.r->args.size() ? p.r->args[k] : 0;
}

using C = MPI_Comm;
using G = MPI_Group;
using T = MPI_Datatype;
constexpr kind KC = kind::comm, KG = kind::group, KT = kind::datatype;

C world_comm(); // the upper MPI_COMM_WORLD

} // namespace

// MPICH 4.0.2's MPI_Comm_create_group crashes (a null group) over a communicator whose own group
// it has not made yet (it makes it at the first MPI_Comm_group of it) when the group passed is
// not derived from that one. A restart makes groups from the world group (record_group_members)
// and duplicates afresh, so a group the program made from a duplicate is no longer derived from
// it. Open MPI needs nothing.
void comm_group_materialize(MPI_Comm lower_comm, uintptr_t lower_fs) {
#if defined(GHOST_MPI_MPICH)
    G g = lower_null<KG, G>();
    if (call_by_name<int (*)(C, G *)>(lower_fs, "MPI_Comm_group", lower_comm, &g) == MPI_SUCCESS)
        call_by_name<int (*)(G *)>(lower_fs, "MPI_Group_free", &g);
#else
    (void)lower_comm;
    (void)lower_fs;
#endif
}

namespace {

// Returns 1 if `api` is replayable (check) or was replayed; 0 if unknown; -1 on an MPI error.
int replay_one(replay &p, const char *api) {
    auto is = [&](const char *n) { return strcmp(api, n) == 0; };
    int rc = MPI_SUCCESS;
    if (is("MPI_Comm_dup")) {
        C o = lower_null<KC, C>();
        rc = p.call<int (*)(C, C *)>(p.h<KC, C>(0), &o);
        p.made<KC>(o);
    } else if (is("MPI_Comm_dup_with_info")) {
        C o = lower_null<KC, C>();
        rc = p.call<int (*)(C, MPI_Info, C *)>(p.h<KC, C>(0), p.h<kind::info, MPI_Info>(1), &o);
        p.made<KC>(o);
    } else if (is("MPI_Comm_idup") || is("MPI_Comm_idup_with_info")) {
        // Complete in the image (the drain completes it as a nonblocking collective): made again
        // by the blocking call.
        C o = lower_null<KC, C>();
        C parent = p.h<KC, C>(0);
        if (p.check) {
        } else if (is("MPI_Comm_idup")) {
            rc = call_by_name<int (*)(C, C *)>(p.fs, "MPI_Comm_dup", parent, &o);
        } else {
            rc = call_by_name<int (*)(C, MPI_Info, C *)>(p.fs, "MPI_Comm_dup_with_info", parent,
                                                         p.h<kind::info, MPI_Info>(1), &o);
        }
        p.made<KC>(o);
    } else if (is("MPI_Comm_split")) {
        C o = lower_null<KC, C>();
        rc = p.call<int (*)(C, int, int, C *)>(p.h<KC, C>(0), p.i(1), p.i(2), &o);
        p.made<KC>(o);
    } else if (is("MPI_Comm_split_type")) {
        C o = lower_null<KC, C>();
        rc = p.call<int (*)(C, int, int, MPI_Info, C *)>(p.h<KC, C>(0), p.i(1), p.i(2),
                                                         p.h<kind::info, MPI_Info>(3), &o);
        p.made<KC>(o);
    } else if (is("MPI_Comm_create")) {
        C o = lower_null<KC, C>();
        rc = p.call<int (*)(C, G, C *)>(p.h<KC, C>(0), p.h<KG, G>(1), &o);
        p.made<KC>(o);
    } else if (is("MPI_Intercomm_create")) {
        // Both groups replay it at the same place in their orders (it was collective over both).
        C o = lower_null<KC, C>();
        rc = p.call<int (*)(C, int, C, int, int, C *)>(p.h<KC, C>(0), p.i(1), p.h<KC, C>(2), p.i(3),
                                                       p.i(4), &o);
        p.made<KC>(o);
    } else if (is("MPI_Intercomm_merge")) {
        C o = lower_null<KC, C>();
        rc = p.call<int (*)(C, int, C *)>(p.h<KC, C>(0), p.i(1), &o);
        p.made<KC>(o);
    } else if (is("MPI_Comm_create_group")) {
        C o = lower_null<KC, C>();
        C parent = p.h<KC, C>(0);
        if (!p.check) comm_group_materialize(parent, p.fs);
        rc = p.call<int (*)(C, G, int, C *)>(parent, p.h<KG, G>(1), p.i(2), &o);
        p.made<KC>(o);
    } else if (is("MPI_Cart_create")) {
        // Topologies: made again with the same arguments (reorder too: quiesce_after_restart
        // refuses a restart whose MPI ranked this process differently in any communicator).
        C o = lower_null<KC, C>();
        const int *dims = p.arr<const int>(2), *periods = p.arr<const int>(3);
        if (p.i(1) > 0 && (!dims || !periods)) return 0;
        rc = p.call<int (*)(C, int, const int *, const int *, int, C *)>(p.h<KC, C>(0), p.i(1),
                                                                         dims, periods, p.i(4), &o);
        p.made<KC>(o);
    } else if (is("MPI_Cart_sub")) {
        C o = lower_null<KC, C>();
        const int *remain = p.arr<const int>(1);
        if (!remain) return 0;
        rc = p.call<int (*)(C, const int *, C *)>(p.h<KC, C>(0), remain, &o);
        p.made<KC>(o);
    } else if (is("MPI_Graph_create")) {
        C o = lower_null<KC, C>();
        const int *index = p.arr<const int>(2), *edges = p.arr<const int>(3);
        if (p.i(1) > 0 && (!index || (index[p.i(1) - 1] > 0 && !edges))) return 0;
        rc = p.call<int (*)(C, int, const int *, const int *, int, C *)>(p.h<KC, C>(0), p.i(1),
                                                                         index, edges, p.i(4), &o);
        p.made<KC>(o);
    } else if (is("MPI_Dist_graph_create_adjacent")) {
        C o = lower_null<KC, C>();
        const int *src = p.arr<const int>(2), *dst = p.arr<const int>(5);
        if ((p.i(1) > 0 && !src) || (p.i(4) > 0 && !dst)) return 0;
        rc = p.call<int (*)(C, int, const int *, const int *, int, const int *, const int *,
                            MPI_Info, int, C *)>(p.h<KC, C>(0), p.i(1), src, p.weights(3), p.i(4),
                                                 dst, p.weights(6), p.h<kind::info, MPI_Info>(7),
                                                 p.i(8), &o);
        p.made<KC>(o);
    } else if (is("MPI_Dist_graph_create")) {
        C o = lower_null<KC, C>();
        const int *src = p.arr<const int>(2), *deg = p.arr<const int>(3),
                  *dst = p.arr<const int>(4);
        if (p.i(1) > 0 && (!src || !deg || (int_sum(deg, p.i(1)) > 0 && !dst))) return 0;
        rc = p.call<int (*)(C, int, const int *, const int *, const int *, const int *, MPI_Info,
                            int, C *)>(p.h<KC, C>(0), p.i(1), src, deg, dst, p.weights(5),
                                       p.h<kind::info, MPI_Info>(6), p.i(7), &o);
        p.made<KC>(o);
    } else if (is("MPI_Info_create") || is("MPI_Info_dup") || is("MPI_Info_create_env") ||
               is("MPI_Comm_get_info") || is("MPI_File_get_info")) {
        // Made empty: its keys and values, read at the checkpoint, are set after the replay.
        MPI_Info o = lower_null<kind::info, MPI_Info>();
        if (!p.check) rc = call_by_name<int (*)(MPI_Info *)>(p.fs, "MPI_Info_create", &o);
        p.made<kind::info>(o);
    } else if (is("MPI_Comm_group") && p.arr<const int>(1)) {
        // By its members' world ranks (record_group_members): no communicator needed.
        G o = lower_null<KG, G>();
        if (!p.check) {
            G world = lower_null<KG, G>();
            rc = call_by_name<int (*)(C, G *)>(p.fs, "MPI_Comm_group", to_lower<KC>(world_comm()),
                                               &world);
            if (rc == MPI_SUCCESS) {
                rc = call_by_name<int (*)(G, int, const int *, G *)>(
                    p.fs, "MPI_Group_incl", world, (int)(p.arr_bytes(1) / sizeof(int)),
                    p.arr<const int>(1), &o);
                call_by_name<int (*)(G *)>(p.fs, "MPI_Group_free", &world);
            }
        }
        p.made<KG>(o);
    } else if (is("MPI_Comm_group") || is("MPI_Comm_remote_group")) {
        G o = lower_null<KG, G>();
        rc = p.call<int (*)(C, G *)>(p.h<KC, C>(0), &o);
        p.made<KG>(o);
    } else if (is("MPI_Group_incl") || is("MPI_Group_excl")) {
        G o = lower_null<KG, G>();
        const int *ranks = p.arr<const int>(2);
        if (p.i(1) > 0 && !ranks) return 0;
        rc = p.call<int (*)(G, int, const int *, G *)>(p.h<KG, G>(0), p.i(1), ranks, &o);
        p.made<KG>(o);
    } else if (is("MPI_Group_range_incl") || is("MPI_Group_range_excl")) {
        G o = lower_null<KG, G>();
        int(*ranges)[3] = p.arr<int[3]>(2);
        if (p.i(1) > 0 && !ranges) return 0;
        rc = p.call<int (*)(G, int, int(*)[3], G *)>(p.h<KG, G>(0), p.i(1), ranges, &o);
        p.made<KG>(o);
    } else if (is("MPI_Group_union") || is("MPI_Group_intersection") ||
               is("MPI_Group_difference")) {
        G o = lower_null<KG, G>();
        rc = p.call<int (*)(G, G, G *)>(p.h<KG, G>(0), p.h<KG, G>(1), &o);
        p.made<KG>(o);
    } else if (is("MPI_Send_init") || is("MPI_Bsend_init") || is("MPI_Ssend_init") ||
               is("MPI_Rsend_init") || is("MPI_Recv_init")) {
        // Persistent requests: made again inactive; p2p.cpp starts the ones that were active.
        MPI_Request o = lower_null<kind::request, MPI_Request>();
        rc = p.call<int (*)(void *, int, T, int, int, C, MPI_Request *)>(
            (void *)(uintptr_t)p.r->args[0], p.i(1), p.h<KT, T>(2), p.i(3), p.i(4), p.h<KC, C>(5),
            &o);
        p.made<kind::request>(o);
    } else if (is("MPI_Type_contiguous")) {
        T o = lower_null<KT, T>();
        rc = p.call<int (*)(int, T, T *)>(p.i(0), p.h<KT, T>(1), &o);
        p.made<KT>(o);
    } else if (is("MPI_Type_vector")) {
        T o = lower_null<KT, T>();
        rc = p.call<int (*)(int, int, int, T, T *)>(p.i(0), p.i(1), p.i(2), p.h<KT, T>(3), &o);
        p.made<KT>(o);
    } else if (is("MPI_Type_create_hvector") || is("MPI_Type_hvector")) {
        T o = lower_null<KT, T>();
        rc = p.call<int (*)(int, int, MPI_Aint, T, T *)>(p.i(0), p.i(1), p.a(2), p.h<KT, T>(3), &o);
        p.made<KT>(o);
    } else if (is("MPI_Type_indexed")) {
        T o = lower_null<KT, T>();
        const int *bl = p.arr<const int>(1), *d = p.arr<const int>(2);
        if (p.i(0) > 0 && (!bl || !d)) return 0;
        rc = p.call<int (*)(int, const int *, const int *, T, T *)>(p.i(0), bl, d, p.h<KT, T>(3),
                                                                    &o);
        p.made<KT>(o);
    } else if (is("MPI_Type_create_hindexed") || is("MPI_Type_hindexed")) {
        T o = lower_null<KT, T>();
        const int *bl = p.arr<const int>(1);
        const MPI_Aint *d = p.arr<const MPI_Aint>(2);
        if (p.i(0) > 0 && (!bl || !d)) return 0;
        rc = p.call<int (*)(int, const int *, const MPI_Aint *, T, T *)>(p.i(0), bl, d,
                                                                         p.h<KT, T>(3), &o);
        p.made<KT>(o);
    } else if (is("MPI_Type_create_indexed_block")) {
        T o = lower_null<KT, T>();
        const int *d = p.arr<const int>(2);
        if (p.i(0) > 0 && !d) return 0;
        rc = p.call<int (*)(int, int, const int *, T, T *)>(p.i(0), p.i(1), d, p.h<KT, T>(3), &o);
        p.made<KT>(o);
    } else if (is("MPI_Type_create_hindexed_block")) {
        T o = lower_null<KT, T>();
        const MPI_Aint *d = p.arr<const MPI_Aint>(2);
        if (p.i(0) > 0 && !d) return 0;
        rc = p.call<int (*)(int, int, const MPI_Aint *, T, T *)>(p.i(0), p.i(1), d, p.h<KT, T>(3),
                                                                 &o);
        p.made<KT>(o);
    } else if (is("MPI_Type_create_struct") || is("MPI_Type_struct")) {
        T o = lower_null<KT, T>();
        int n = p.i(0);
        const int *bl = p.arr<const int>(1);
        const MPI_Aint *d = p.arr<const MPI_Aint>(2);
        const T *types = p.arr<const T>(3);
        if (n > 0 && (!bl || !d || !types)) return 0;
        std::vector<T> lt((size_t)(n > 0 ? n : 0));
        for (int k = 0; k < n; k++)
            lt[(size_t)k] = p.hv<KT, T>(types[k]);
        rc = p.call<int (*)(int, const int *, const MPI_Aint *, const T *, T *)>(n, bl, d,
                                                                                 lt.data(), &o);
        p.made<KT>(o);
    } else if (is("MPI_Type_create_darray")) {
        T o = lower_null<KT, T>();
        int nd = p.i(2);
        const int *gs = p.arr<const int>(3), *di = p.arr<const int>(4), *da = p.arr<const int>(5),
                  *ps = p.arr<const int>(6);
        if (nd > 0 && (!gs || !di || !da || !ps)) return 0;
        rc = p.call<int (*)(int, int, int, const int *, const int *, const int *, const int *, int,
                            T, T *)>(p.i(0), p.i(1), nd, gs, di, da, ps, p.i(7), p.h<KT, T>(8), &o);
        p.made<KT>(o);
    } else if (is("MPI_Type_create_f90_real") || is("MPI_Type_create_f90_complex")) {
        // Parameterised types: the fresh library gives its own for the same precision and range.
        T o = lower_null<KT, T>();
        rc = p.call<int (*)(int, int, T *)>(p.i(0), p.i(1), &o);
        p.made<KT>(o);
    } else if (is("MPI_Type_create_f90_integer")) {
        T o = lower_null<KT, T>();
        rc = p.call<int (*)(int, T *)>(p.i(0), &o);
        p.made<KT>(o);
    } else if (is("MPI_Type_create_resized")) {
        T o = lower_null<KT, T>();
        rc = p.call<int (*)(T, MPI_Aint, MPI_Aint, T *)>(p.h<KT, T>(0), p.a(1), p.a(2), &o);
        p.made<KT>(o);
    } else if (is("MPI_Type_get_contents") || is("MPI_Type_get_contents_c")) {
        // A member type MPI handed back from another (the program may have freed its own
        // handle to it since): asked of the rebuilt parent again.
        const bool big = is("MPI_Type_get_contents_c");
        const size_t nmax = big ? 4 : 3;
        const int64_t ni = (int64_t)r_arg(p, 1), na = (int64_t)r_arg(p, 2),
                      nc = big ? (int64_t)r_arg(p, 3) : 0, nd = (int64_t)r_arg(p, nmax),
                      at = (int64_t)r_arg(p, nmax + 1);
        if (at < 0 || at >= nd || ni < 0 || na < 0 || nc < 0 || nd > (1 << 20)) return 0;
        T parent = p.h<KT, T>(0);
        T o = lower_null<KT, T>();
        if (!p.check) {
            std::vector<int> ints((size_t)ni + 1);
            std::vector<MPI_Aint> addrs((size_t)na + 1);
            std::vector<MPI_Count> counts((size_t)nc + 1);
            std::vector<T> types((size_t)nd, lower_null<KT, T>());
            if (big)
                rc = p.call<int (*)(T, MPI_Count, MPI_Count, MPI_Count, MPI_Count, int *,
                                    MPI_Aint *, MPI_Count *, T *)>(
                    parent, ni, na, nc, nd, ints.data(), addrs.data(), counts.data(), types.data());
            else
                rc = p.call<int (*)(T, int, int, int, int *, MPI_Aint *, T *)>(
                    parent, (int)ni, (int)na, (int)nd, ints.data(), addrs.data(), types.data());
            if (rc == MPI_SUCCESS) o = types[(size_t)at];
        }
        p.made<KT>(o);
    } else if (is("MPI_Type_dup")) {
        T o = lower_null<KT, T>();
        rc = p.call<int (*)(T, T *)>(p.h<KT, T>(0), &o);
        p.made<KT>(o);
    } else if (is("MPI_Type_create_subarray")) {
        T o = lower_null<KT, T>();
        const int *sz = p.arr<const int>(1), *sub = p.arr<const int>(2), *st = p.arr<const int>(3);
        if (p.i(0) > 0 && (!sz || !sub || !st)) return 0;
        rc = p.call<int (*)(int, const int *, const int *, const int *, int, T, T *)>(
            p.i(0), sz, sub, st, p.i(4), p.h<KT, T>(5), &o);
        p.made<KT>(o);
    } else if (is("MPI_Op_create")) {
        MPI_Op o = lower_null<kind::op, MPI_Op>();
        auto *fn = (MPI_User_function *)(uintptr_t)p.r->args[0];
        rc = p.call<int (*)(MPI_User_function *, int, MPI_Op *)>(p.check ? fn : wrap_op(fn), p.i(1),
                                                                 &o);
        p.made<kind::op>(o);
    } else if (is("MPI_Win_create_errhandler")) {
        MPI_Errhandler o = lower_null<kind::errhandler, MPI_Errhandler>();
        auto *fn = (MPI_Win_errhandler_function *)(uintptr_t)p.r->args[0];
        rc = p.call<int (*)(MPI_Win_errhandler_function *, MPI_Errhandler *)>(
            p.check ? fn : wrap_win_errh(fn), &o);
        p.made<kind::errhandler>(o);
    } else if (is("MPI_File_create_errhandler")) {
        MPI_Errhandler o = lower_null<kind::errhandler, MPI_Errhandler>();
        auto *fn = (MPI_File_errhandler_function *)(uintptr_t)p.r->args[0];
        rc = p.call<int (*)(MPI_File_errhandler_function *, MPI_Errhandler *)>(
            p.check ? fn : wrap_file_errh(fn), &o);
        p.made<kind::errhandler>(o);
    } else if (is("MPI_Win_create")) {
        // The window's memory is the program's (upper, in the image): exposed again at the same
        // address. Its epochs were closed at the checkpoint (win_epoch_open).
        MPI_Win o = lower_null<kind::win, MPI_Win>();
        rc = p.call<int (*)(void *, MPI_Aint, int, MPI_Info, C, MPI_Win *)>(
            (void *)(uintptr_t)p.r->args[0], p.a(1), p.i(2), p.h<kind::info, MPI_Info>(3),
            p.h<KC, C>(4), &o);
        p.made<kind::win>(o);
    } else if (is("MPI_File_open")) {
        // Opened again by name, never created: a file gone since is an error, not an empty file
        // (and MPI_MODE_EXCL would refuse the file the first open made).
        MPI_File o = lower_null<kind::file, MPI_File>();
        const char *name = p.arr<const char>(1);
        if (!name) return 0;
        int amode = p.i(2) & ~(MPI_MODE_CREATE | MPI_MODE_EXCL);
        rc = p.call<int (*)(C, const char *, int, MPI_Info, MPI_File *)>(
            p.h<KC, C>(0), name, amode, p.h<kind::info, MPI_Info>(3), &o);
        p.made<kind::file>(o);
    } else if (is("MPI_Comm_set_errhandler")) { // a setting record (errhandler_set)
        rc = p.call<int (*)(C, MPI_Errhandler)>(p.h<KC, C>(0),
                                                p.h<kind::errhandler, MPI_Errhandler>(1));
    } else if (is("MPI_Win_create_dynamic")) {
        // Its regions come back with the attach records after it (win_attach_set).
        MPI_Win o = lower_null<kind::win, MPI_Win>();
        rc = p.call<int (*)(MPI_Info, C, MPI_Win *)>(p.h<kind::info, MPI_Info>(0), p.h<KC, C>(1),
                                                     &o);
        p.made<kind::win>(o);
    } else if (is("MPI_Win_attach")) { // a setting record: the region, at the same address
        rc = p.call<int (*)(MPI_Win, void *, MPI_Aint)>(p.h<kind::win, MPI_Win>(0),
                                                        (void *)(uintptr_t)p.r->args[1], p.a(2));
    } else if (is("MPI_Win_set_errhandler")) { // a setting record (errhandler_set)
        rc = p.call<int (*)(MPI_Win, MPI_Errhandler)>(p.h<kind::win, MPI_Win>(0),
                                                      p.h<kind::errhandler, MPI_Errhandler>(1));
    } else if (is("MPI_File_set_view")) {
        const char *datarep = p.arr<const char>(4);
        if (!datarep) return 0;
        rc = p.call<int (*)(MPI_File, MPI_Offset, T, T, const char *, MPI_Info)>(
            p.h<kind::file, MPI_File>(0), (MPI_Offset)p.r->args[1], p.h<KT, T>(2), p.h<KT, T>(3),
            datarep, p.h<kind::info, MPI_Info>(5));
    } else if (is("MPI_File_get_group")) {
        G o = lower_null<KG, G>();
        rc = p.call<int (*)(MPI_File, G *)>(p.h<kind::file, MPI_File>(0), &o);
        p.made<KG>(o);
    } else if (is("MPI_Win_allocate") || is("MPI_Win_allocate_c")) {
        // Made over upper memory (mem.cpp), whose address the record keeps: made again over it.
        MPI_Win o = lower_null<kind::win, MPI_Win>();
        void *base = (void *)(uintptr_t)p.r->args[4];
        C comm = p.h<KC, C>(3);
        MPI_Info info = p.h<kind::info, MPI_Info>(2);
        if (p.check) {
        } else if (is("MPI_Win_allocate")) {
            rc = call_by_name<int (*)(void *, MPI_Aint, int, MPI_Info, C, MPI_Win *)>(
                p.fs, "MPI_Win_create", base, p.a(0), p.i(1), info, comm, &o);
        } else {
            rc = call_by_name<int (*)(void *, MPI_Aint, MPI_Aint, MPI_Info, C, MPI_Win *)>(
                p.fs, "MPI_Win_create_c", base, p.a(0), p.a(1), info, comm, &o);
        }
        p.made<kind::win>(o);
    } else if (is("MPI_Win_allocate_shared") || is("MPI_Win_allocate_shared_c")) {
        // The node's segment again at its address (shared_win.cpp), then the window over this
        // rank's part. A freed one (replayed only to be freed again) gets no memory.
        MPI_Win o = lower_null<kind::win, MPI_Win>();
        C comm = p.h<KC, C>(3);
        MPI_Info info = p.h<kind::info, MPI_Info>(2);
        void *base = nullptr;
        MPI_Aint size = 0;
        if (p.check) {
        } else if (!p.r->zombie) {
            char why[240] = "";
            if (shared_win_rebuild(p.r->owner, comm, p.fs, &base, why, sizeof why) != 0) {
                fprintf(stderr, "ghost-mpi: rank %d: %s\n", g_state.rank, why);
                return -1;
            }
            size = p.a(0);
        }
        if (p.check) {
        } else if (is("MPI_Win_allocate_shared")) {
            rc = call_by_name<int (*)(void *, MPI_Aint, int, MPI_Info, C, MPI_Win *)>(
                p.fs, "MPI_Win_create", base, size, p.i(1), info, comm, &o);
        } else {
            rc = call_by_name<int (*)(void *, MPI_Aint, MPI_Aint, MPI_Info, C, MPI_Win *)>(
                p.fs, "MPI_Win_create_c", base, size, p.a(1), info, comm, &o);
        }
        p.made<kind::win>(o);
    } else if (is("MPI_Comm_create_errhandler")) {
        MPI_Errhandler o = lower_null<kind::errhandler, MPI_Errhandler>();
        auto *fn = (MPI_Comm_errhandler_function *)(uintptr_t)p.r->args[0];
        rc = p.call<int (*)(MPI_Comm_errhandler_function *, MPI_Errhandler *)>(
            p.check ? fn : wrap_comm_errh(fn), &o);
        p.made<kind::errhandler>(o);
    } else {
        return 0;
    }
    if (p.check) return p.refs_ok ? 1 : 0;
    return rc == MPI_SUCCESS ? 1 : -1;
}

// Every record in its global order, creations and settings (MPI_File_set_view,
// MPI_Comm_set_errhandler): what a restart replays and a checkpoint checks.
std::vector<std::pair<const record *, const vobj *>> records_in_order() {
    std::vector<std::pair<const record *, const vobj *>> out;
    records_visit(
        [](const record *r, const vobj *v, void *arg) {
            ((std::vector<std::pair<const record *, const vobj *>> *)arg)->push_back({r, v});
        },
        &out);
    return out;
}

// The creation records only: each live object once (a setting record names its object too).
std::vector<std::pair<const record *, const vobj *>> live_records() {
    auto out = records_in_order();
    out.erase(
        std::remove_if(out.begin(), out.end(), [](const auto &rv) { return rv.first->setting; }),
        out.end());
    return out;
}

const char *api_of(const record *r) {
    return r->fn >= 0 && (size_t)r->fn < g_nfns ? g_fn_names[r->fn] : "an unknown call";
}

} // namespace

// The order a restart replays the records in: the same function of the records at a checkpoint,
// which reports the collective creations' places in it (made_report; the coordinator refuses the
// checkpoint if two ranks would replay two of them in opposite orders), and at the restart.
// Not the order they were made in: threads that make communicators concurrently over different
// parents make them in different orders on different ranks, and a restart replaying each rank's
// order in one thread would wait for ever in the first creation that the other ranks replay
// later (MPICH's threads/comm/dup_leak_test). Here each record comes after the records its
// replay resolves its handles to (a setting also after its object's earlier settings); among the
// records ready, first those no other rank takes part in, in the order they were made, then the
// collective creation with the smallest position on its parent's clock (the parent's id breaks
// ties), then the MPI_Comm_create_group with the smallest name (group_key). Positions, ids and
// names are the same on every member, and a creation waits only for what it is made from, which
// is the same on every rank as long as that is its parent: one order.
std::vector<std::pair<const record *, const vobj *>> replay_order() {
    records_read_guard reading;
    auto recs = records_in_order();
    const size_t n = recs.size();
    std::unordered_map<const record *, size_t> at;
    at.reserve(n);
    for (size_t i = 0; i < n; i++)
        at.emplace(recs[i].first, i);
    std::vector<std::vector<size_t>> users(n);
    std::vector<size_t> waits(n, 0);
    std::unordered_map<const void *, size_t> last_setting;
    std::vector<const record *> deps;
    for (size_t i = 0; i < n; i++) {
        const record *r = recs[i].first;
        deps.clear();
        replay p{r, true};
        p.deps = &deps;
        replay_one(p, api_of(r));
        if (r->setting && r->owner) {
            auto [it, fresh] = last_setting.try_emplace(r->owner, i);
            if (!fresh) {
                deps.push_back(recs[it->second].first);
                it->second = i;
            }
        }
        std::sort(deps.begin(), deps.end());
        deps.erase(std::unique(deps.begin(), deps.end()), deps.end());
        for (const record *d : deps)
            if (auto it = at.find(d); it != at.end() && it->second < i) {
                users[it->second].push_back(i);
                waits[i]++;
            }
    }
    // Ready records by (collective, clock position, parent id, made-order).
    using key = std::tuple<int, uint64_t, uint64_t, size_t>;
    auto key_of = [&](size_t i) {
        const record *r = recs[i].first;
        if (r->parent_pos != 0) return key{1, r->parent_pos, r->parent_id, i};
        if (r->group_key != 0) return key{2, r->group_key, 0, i};
        return key{0, 0, 0, i};
    };
    std::set<key> ready;
    for (size_t i = 0; i < n; i++)
        if (waits[i] == 0) ready.insert(key_of(i));
    std::vector<std::pair<const record *, const vobj *>> out;
    out.reserve(n);
    while (!ready.empty()) {
        size_t i = std::get<3>(*ready.begin());
        ready.erase(ready.begin());
        out.push_back(recs[i]);
        for (size_t u : users[i])
            if (--waits[u] == 0) ready.insert(key_of(u));
    }
    // Every dependency points to an earlier record: none is left out (kept as made otherwise).
    return out.size() == n ? out : recs;
}

namespace {

// --- what communicators and windows carry besides their creation: error handler, name --------
// Listed at quiesce (the communicators alive then, MPI_COMM_WORLD and MPI_COMM_SELF first, then
// the windows), read from the lower half while every application thread is stopped (exclude: no
// upper allocation, the vector is sized already), set again after the replay. Part of the image.

struct comm_extra {
    kind k;                    // KC or kind::win
    C comm;                    // k == KC
    MPI_Win win;               // k == kind::win
    MPI_Errhandler errh;       // upper, found after a restore (the reverse map has the old lowers)
    MPI_Errhandler lower_errh; // as read at the checkpoint
    bool have_errh;
    char name[MPI_MAX_OBJECT_NAME];
};
std::vector<comm_extra> *g_extras;

// The calls that read and set an object's error handler and name, per kind.
struct extra_calls {
    int get_errh, set_errh, get_name, set_name;
};
extra_calls extra_calls_of(kind k) {
    if (k == kind::win)
        return {index_of("MPI_Win_get_errhandler"), index_of("MPI_Win_set_errhandler"),
                index_of("MPI_Win_get_name"), index_of("MPI_Win_set_name")};
    return {index_of("MPI_Comm_get_errhandler"), index_of("MPI_Comm_set_errhandler"),
            index_of("MPI_Comm_get_name"), index_of("MPI_Comm_set_name")};
}

// Calls `fn` with the extra's lower handle (a communicator or a window: their handle types
// differ in Open MPI).
template <class F> auto with_lower(const comm_extra &e, F fn) {
    return e.k == kind::win ? fn(to_lower<kind::win>(e.win)) : fn(to_lower<KC>(e.comm));
}

template <class H> H predefined(const char *ompi_symbol, H mpich_value) {
#if defined(GHOST_MPI_MPICH)
    (void)ompi_symbol;
    return mpich_value;
#else
    (void)mpich_value;
    return (H)dlsym(RTLD_DEFAULT, ompi_symbol);
#endif
}

C world_comm() {
#if defined(GHOST_MPI_MPICH)
    return MPI_COMM_WORLD;
#else
    return predefined<C>("ompi_mpi_comm_world", nullptr);
#endif
}

void list_comms() {
    if (!g_extras) g_extras = new std::vector<comm_extra>();
    g_extras->clear();
#if defined(GHOST_MPI_MPICH)
    C world = MPI_COMM_WORLD, self = MPI_COMM_SELF;
#else
    C world = nullptr, self = nullptr;
#endif
    for (C c :
         {predefined<C>("ompi_mpi_comm_world", world), predefined<C>("ompi_mpi_comm_self", self)})
        if (c) g_extras->push_back({KC, c, {}, {}, {}, false, ""});
    // Each object once (listed twice, a restart set its attributes twice, and setting an
    // attribute again calls the delete callback of the value it replaces).
    for (const auto &[r, v] : live_records()) {
        (void)r;
        if (v && v->k == KC)
            g_extras->push_back({KC, encode<KC, C>(const_cast<vobj *>(v)), {}, {}, {}, false, ""});
        else if (v && v->k == kind::win)
            g_extras->push_back({kind::win,
                                 {},
                                 encode<kind::win, MPI_Win>(const_cast<vobj *>(v)),
                                 {},
                                 {},
                                 false,
                                 ""});
    }
}

bool extra_alive(const comm_extra &e) {
    if (e.k == kind::win) {
        vobj *v = decode<kind::win>(e.win);
        return v && v->magic == kVobjMagic && v->k == kind::win;
    }
    vobj *v = decode<KC>(e.comm);
    return !v || (v->magic == kVobjMagic && v->k == KC); // MPICH predefined: no vobj
}

// Every application thread stopped: lower calls only.
void read_comm_extras(uintptr_t fs) {
    int free_errh = index_of("MPI_Errhandler_free");
    if (!g_extras || free_errh < 0) return;
    for (comm_extra &e : *g_extras) {
        e.have_errh = false;
        e.name[0] = 0;
        extra_calls x = extra_calls_of(e.k);
        if (!extra_alive(e) || x.get_errh < 0 || x.get_name < 0) continue;
        MPI_Errhandler leh = lower_null<kind::errhandler, MPI_Errhandler>();
        int len = 0, rc;
        {
            lower_call lc(fs);
            rc = with_lower(e, [&](auto l) {
                using H = decltype(l);
                int got = ((int (*)(H, MPI_Errhandler *))g_fns[x.get_errh])(l, &leh);
                ((int (*)(H, char *, int *))g_fns[x.get_name])(l, e.name, &len);
                return got;
            });
        }
        if (rc != MPI_SUCCESS) continue;
        e.lower_errh = leh; // translated after a restore: the reverse map takes a lock
        e.have_errh = true;
        lower_call lc(fs);
        ((int (*)(MPI_Errhandler *))g_fns[free_errh])(&leh);
    }
}

// Whether the lower errhandler handle names one the program still holds (or a predefined one):
// one it has freed is not known here any more, and a restart would have no handle to set.
bool errhandler_known(MPI_Errhandler leh) {
#if defined(GHOST_MPI_MPICH)
    if (mpich_predefined((uint32_t)leh)) return true;
#endif
    return vobj_find_lower(kind::errhandler, (uintptr_t)leh) != nullptr;
}

// At a checkpoint (lower calls allowed): the first live communicator or window whose error
// handler is one the program has freed and that no record of it sets, or nullptr.
// MPI_Comm_set_errhandler then MPI_Errhandler_free is carried (the setting record keeps the
// handler's), but a communicator that got such a handler otherwise (MPI_Comm_dup of one), or a
// window given one and the handler freed, has nothing a restart could set again.
const comm_extra *extra_with_freed_errhandler(uintptr_t fs) {
    if (!g_extras) return nullptr;
    for (const comm_extra &e : *g_extras) {
        extra_calls x = extra_calls_of(e.k);
        if (!extra_alive(e) || x.get_errh < 0) continue;
        MPI_Errhandler leh = lower_null<kind::errhandler, MPI_Errhandler>();
        int rc = with_lower(e, [&](auto l) {
            lower_call lc(fs);
            return ((int (*)(decltype(l), MPI_Errhandler *))g_fns[x.get_errh])(l, &leh);
        });
        if (rc != MPI_SUCCESS) continue;
        bool known = errhandler_known(leh) ||
                     errhandler_recorded(e.k == kind::win,
                                         e.k == kind::win ? (uintptr_t)e.win : (uintptr_t)e.comm);
        call_by_name<int (*)(MPI_Errhandler *)>(fs, "MPI_Errhandler_free", &leh);
        if (!known) return &e;
    }
    return nullptr;
}

// In a restored process, before the new lower half is bound.
void translate_comm_extras() {
    if (!g_extras) return;
    for (comm_extra &e : *g_extras) {
        if (!e.have_errh) continue;
        // A handler the program has freed has no object here any more: the replay of the
        // communicator's setting record set it again (comm_errhandler_set).
        if (!errhandler_known(e.lower_errh))
            e.have_errh = false;
        else
            e.errh = lookup<kind::errhandler>(e.lower_errh);
    }
}

void write_comm_extras(uintptr_t fs) {
    if (!g_extras) return;
    for (const comm_extra &e : *g_extras) {
        extra_calls x = extra_calls_of(e.k);
        if (!extra_alive(e) || x.set_errh < 0 || x.set_name < 0) continue;
        MPI_Errhandler leh = to_lower<kind::errhandler>(e.errh);
        with_lower(e, [&](auto l) {
            using H = decltype(l);
            lower_call lc(fs);
            if (e.have_errh) ((int (*)(H, MPI_Errhandler))g_fns[x.set_errh])(l, leh);
            if (e.name[0]) ((int (*)(H, const char *))g_fns[x.set_name])(l, e.name);
            return 0;
        });
    }
}

void free_lower(kind k, uintptr_t l, uintptr_t fs) {
    const char *api = k == KC                 ? "MPI_Comm_free"
                      : k == KG               ? "MPI_Group_free"
                      : k == KT               ? "MPI_Type_free"
                      : k == kind::op         ? "MPI_Op_free"
                      : k == kind::errhandler ? "MPI_Errhandler_free"
                      : k == kind::win        ? "MPI_Win_free"
                                              : nullptr;
    int i = api ? index_of(api) : -1;
    if (i < 0) return;
    lower_call lc(fs);
    if constexpr (std::is_pointer_v<C>) {
        void *h = (void *)l;
        ((int (*)(void **))g_fns[i])(&h);
    } else {
        int h = (int)l;
        ((int (*)(int *))g_fns[i])(&h);
    }
}

// --- info objects: keys and values ------------------------------------------------------------
// Read at quiesce (every application thread at a safe point), set again on the objects the replay
// made empty. Part of the image.

struct info_saved {
    MPI_Info info; // upper
    std::vector<std::pair<std::string, std::string>> kv;
};
std::vector<info_saved> *g_infos;

bool read_infos(uintptr_t fs) {
    if (!g_infos) g_infos = new std::vector<info_saved>();
    g_infos->clear();
    for (const auto &[r, v] : live_records()) {
        if (!v || v->k != kind::info) continue;
        info_saved s{encode<kind::info, MPI_Info>(const_cast<vobj *>(v)), {}};
        MPI_Info l = to_lower<kind::info>(s.info);
        int n = 0;
        if (call_by_name<int (*)(MPI_Info, int *)>(fs, "MPI_Info_get_nkeys", l, &n) != MPI_SUCCESS)
            return false;
        for (int i = 0; i < n; i++) {
            char key[MPI_MAX_INFO_KEY + 1] = "";
            int len = 0, flag = 0;
            if (call_by_name<int (*)(MPI_Info, int, char *)>(fs, "MPI_Info_get_nthkey", l, i,
                                                             key) != MPI_SUCCESS ||
                call_by_name<int (*)(MPI_Info, const char *, int *, int *)>(
                    fs, "MPI_Info_get_valuelen", l, key, &len, &flag) != MPI_SUCCESS)
                return false;
            if (!flag) continue;
            std::string val((size_t)len + 1, '\0');
            if (call_by_name<int (*)(MPI_Info, const char *, int, char *, int *)>(
                    fs, "MPI_Info_get", l, key, len, val.data(), &flag) != MPI_SUCCESS)
                return false;
            val.resize(strnlen(val.c_str(), (size_t)len));
            s.kv.push_back({key, val});
        }
        g_infos->push_back(std::move(s));
    }
    return true;
}

bool write_infos(uintptr_t fs) {
    if (!g_infos) return true;
    for (const info_saved &s : *g_infos) {
        MPI_Info l = to_lower<kind::info>(s.info);
        for (const auto &[k, v] : s.kv)
            if (call_by_name<int (*)(MPI_Info, const char *, const char *)>(
                    fs, "MPI_Info_set", l, k.c_str(), v.c_str()) != MPI_SUCCESS)
                return false;
    }
    return true;
}

// --- attributes ---------------------------------------------------------------------------------

struct attr_key {
    kind k;
    uintptr_t object;
    int keyval;
    bool operator<(const attr_key &o) const {
        return std::tie(k, object, keyval) < std::tie(o.k, o.object, o.keyval);
    }
};
std::mutex g_attr_mu;
std::set<attr_key> *g_attrs; // set, not yet deleted (the object may have been freed since)

// The attributes still set on live objects with keyvals the program has freed (those of live
// keyvals are read for every live object at the checkpoint: keyvals.cpp). Entries of freed objects
// go.
std::vector<freed_keyval_attr> freed_keyval_attrs() {
    std::vector<freed_keyval_attr> out;
    std::lock_guard<std::mutex> g(g_attr_mu);
    if (!g_attrs) return out;
    for (auto it = g_attrs->begin(); it != g_attrs->end();) {
        vobj *v = nullptr;
        if (it->k == KC)
            v = decode<KC>((C)it->object);
        else if (it->k == KT)
            v = decode<KT>((T)it->object);
        else
            v = decode<kind::win>((MPI_Win)it->object);
        // Predefined objects of MPICH have no vobj: live all the same.
        bool live = !v || (v->magic == kVobjMagic && v->k == it->k);
        if (!live) {
            it = g_attrs->erase(it);
            continue;
        }
        if (keyval_freed(it->keyval)) out.push_back({it->k, it->object, it->keyval});
        ++it;
    }
    return out;
}

// The program's stdio streams, flushed before the image is taken (else buffered lines print twice:
// the image has them too). The hooks run on the agent's manager thread, which has a descriptor
// table of its own: fflush(NULL) there wrote each buffer to the manager's descriptor of that number
// (none: EBADF, and glibc drops the buffer: a LAMMPS log lost every line before a checkpoint, also
// in a job that went on; or one of the manager's own descriptors). Each stream with pending output
// is written through a duplicate of the program's descriptor (pidfd_getfd: the same open file
// description, so the same offset and flags), swapped in under the stream's lock and the list
// lock, in glibc's own order. A stream whose descriptor cannot be duplicated keeps its buffer (the
// image carries it).
extern "C" FILE *_IO_list_all; // glibc's list of open streams (struct _IO_FILE_plus *)
extern "C" void _IO_list_lock(void);
extern "C" void _IO_list_unlock(void);

void flush_program_streams() {
    int pidfd = (int)syscall(SYS_pidfd_open, getpid(), 0);
    _IO_list_lock();
    for (FILE *f = _IO_list_all; f; f = f->_chain) {
        flockfile(f);
        int fd = f->_fileno;
        if (f->_IO_write_ptr > f->_IO_write_base && fd >= 0 && pidfd >= 0) {
            int dup = (int)syscall(SYS_pidfd_getfd, pidfd, fd, 0);
            if (dup >= 0) {
                f->_fileno = dup;
                fflush_unlocked(f);
                f->_fileno = fd;
                close(dup);
            }
        }
        funlockfile(f);
    }
    _IO_list_unlock();
    if (pidfd >= 0) close(pidfd);
}

// --- files: what a restart sets again ------------------------------------------------------------

const char *file_name(const record *r) {
    for (size_t k = 0; k < r->array_arg.size(); k++)
        if (r->array_arg[k] == 1) return (const char *)r->arrays[k].data();
    return "?";
}

// At a checkpoint (this rank quiescent, lower calls allowed): why the file that record r opened
// cannot be carried, or nullptr once its pointer, atomicity and error handler are read.
const char *file_before_checkpoint(const record *r, const vobj *v, uintptr_t fs) {
    file_state *f = file_state_of(v);
    if (!f) return "it was opened over a communicator without a collective clock";
    if (f->split_open > 0) return "a split collective (MPI_File_*_begin) is open on it";
    if (r->args[2] & MPI_MODE_SEQUENTIAL)
        return "it was opened with MPI_MODE_SEQUENTIAL, whose shared file pointer a restart "
               "cannot set again";
    MPI_File l = to_lower<kind::file>(encode<kind::file, MPI_File>(const_cast<vobj *>(v)));
    // The value the coordinator thread read (files_read_shared_positions); else read here,
    // where the MPI allows it (ROMIO reads its shared pointer from a file that the program's
    // threads opened, which the agent's thread has no descriptor of).
    if (f->shared && !f->shared_read) {
        MPI_Offset shared_pos = 0;
        if (call_by_name<int (*)(MPI_File, MPI_Offset *)>(fs, "MPI_File_get_position_shared", l,
                                                          &shared_pos) != MPI_SUCCESS)
            return "its shared file pointer cannot be read here (a job checkpoint reads it)";
        f->shared_position = shared_pos;
    }
    f->shared_read = false; // the next checkpoint reads it again
    MPI_Offset pos = 0;
    MPI_Errhandler leh = lower_null<kind::errhandler, MPI_Errhandler>();
    if (call_by_name<int (*)(MPI_File, MPI_Offset *)>(fs, "MPI_File_get_position", l, &pos) !=
            MPI_SUCCESS ||
        call_by_name<int (*)(MPI_File, int *)>(fs, "MPI_File_get_atomicity", l, &f->atomic) !=
            MPI_SUCCESS)
        return "its file pointer or atomicity cannot be read";
    f->position = pos;
    if (call_by_name<int (*)(MPI_File, MPI_Errhandler *)>(fs, "MPI_File_get_errhandler", l, &leh) !=
        MPI_SUCCESS)
        return "its error handler cannot be read";
    bool known = errhandler_known(leh);
    f->have_errh = known;
    if (known) f->errh = (uintptr_t)lookup<kind::errhandler>(leh);
    call_by_name<int (*)(MPI_Errhandler *)>(fs, "MPI_Errhandler_free", &leh);
    if (!known) return "its error handler was freed by the program and cannot be set again";
    return nullptr;
}

// Called by the coordinator's thread of a quiescent rank, before its image is written: the shared
// file pointer of each file that uses one (every shared pointer operation has completed, the
// drain completed the nonblocking ones: every member reads the same value). A thread of the
// program's, so that the MPI may use descriptors the program's threads opened.
} // namespace

void files_read_shared_positions() {
    uintptr_t fs = thread_lower_fs();
    for (const auto &[r, v] : live_records()) {
        if (!v || v->k != kind::file || r->zombie || r->setting) continue;
        file_state *f = file_state_of(v);
        if (!f || !f->shared) continue;
        MPI_File l = to_lower<kind::file>(encode<kind::file, MPI_File>(const_cast<vobj *>(v)));
        MPI_Offset pos = 0;
        f->shared_read = call_by_name<int (*)(MPI_File, MPI_Offset *)>(
                             fs, "MPI_File_get_position_shared", l, &pos) == MPI_SUCCESS;
        if (f->shared_read) f->shared_position = pos;
    }
}

namespace {

// After the replay: each open file's individual pointer (its view is set again: MPI_File_set_view
// put the pointers at 0), its shared pointer if used (MPI_File_seek_shared is collective: every
// member walks its files in the order they were opened, as the opens themselves were) and its
// error handler.
bool files_after_restart(uintptr_t fs) {
    for (const auto &[r, v] : live_records()) {
        if (!v || v->k != kind::file || r->zombie) continue;
        const file_state *f = file_state_of(v);
        if (!f) continue;
        MPI_File l = to_lower<kind::file>(encode<kind::file, MPI_File>(const_cast<vobj *>(v)));
        if (call_by_name<int (*)(MPI_File, MPI_Offset, int)>(
                fs, "MPI_File_seek", l, (MPI_Offset)f->position, MPI_SEEK_SET) != MPI_SUCCESS)
            return false;
        if (f->shared && call_by_name<int (*)(MPI_File, MPI_Offset, int)>(
                             fs, "MPI_File_seek_shared", l, (MPI_Offset)f->shared_position,
                             MPI_SEEK_SET) != MPI_SUCCESS)
            return false;
        if (f->have_errh && call_by_name<int (*)(MPI_File, MPI_Errhandler)>(
                                fs, "MPI_File_set_errhandler", l,
                                to_lower<kind::errhandler>((MPI_Errhandler)f->errh)) != MPI_SUCCESS)
            return false;
    }
    return true;
}

// --- the hooks ----------------------------------------------------------------------------------

int quiesce(void *, char *why, size_t why_len) {
    g_state.active = layer_active();
    if (!g_state.active) return 0;
    int init = 0, fin = 0, level = MPI_THREAD_SINGLE, rank = -1;
    // The rank as the launcher named it (MPI_COMM_WORLD is the stub's object: not linked here).
    for (const char *var : {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK"})
        if (const char *v = getenv(var); v && *v) {
            rank = atoi(v);
            break;
        }
    // Before any lower call: in a quiescent rank no application thread is inside MPI, nor can one
    // enter it without parking at its safe point. One that is all the same would make this
    // thread's lower calls wait behind it (MPICH's global lock, held by a call that waits for a
    // rank holding quiescent, never released): the park would hang until the requester gives up
    // ("did not answer"). Refused in one line instead.
    char uncarried[256];
    if (const char *reason = uncarried_state(uncarried, sizeof uncarried)) {
        snprintf(why, why_len, "rank %d: %s", rank, reason);
        return -1;
    }
    if (const char *in = thread_off_safe_point()) {
        snprintf(why, why_len, "rank %d: a thread stayed inside %s although the rank is quiescent",
                 rank, in);
        return -1;
    }
    flush_program_streams();
    uintptr_t fs = thread_lower_fs(); // the manager's own lower TLS, while malloc is allowed
    call_by_name<int (*)(int *)>(fs, "MPI_Initialized", &init);
    call_by_name<int (*)(int *)>(fs, "MPI_Finalized", &fin);
    int size = -1;
    if (init && !fin) {
        call_by_name<int (*)(int *)>(fs, "MPI_Query_thread", &level);
        call_by_name<int (*)(C, int *)>(fs, "MPI_Comm_size", to_lower<KC>(world_comm()), &size);
    }
    g_state.initialized = init;
    g_state.thread_level = level;
    g_state.rank = rank;
    g_state.size = size;
    if (fin) {
        snprintf(why, why_len, "rank %d: MPI_Finalize was called: a restart could not go on", rank);
        return -1;
    }
    if (keyvals_overflowed()) {
        snprintf(why, why_len,
                 "rank %d: the program made more attribute keyvals than the layer can carry", rank);
        return -1;
    }
    // Requests: complete ones keep their status in upper memory; pending ones are posted again by
    // a restart (only in a quiescent rank: no message in flight, no thread inside MPI).
    if (requests_before_checkpoint(rank, rank_quiescent() ? req_check : req_refuse, why, why_len) !=
        0)
        return -1;
    list_comms();
    if (const comm_extra *e = extra_with_freed_errhandler(fs)) {
        snprintf(why, why_len,
                 e->k == KC ? "rank %d: a communicator holds an error handler the program has "
                              "freed, which it got from another (MPI_Comm_dup): it cannot be set "
                              "again after a restart yet"
                            : "rank %d: a window holds an error handler the program has freed "
                              "and that no MPI_Win_set_errhandler of it set: it cannot be set "
                              "again after a restart yet",
                 rank);
        return -1;
    }
    {
        std::vector<uintptr_t> comms, types, wins;
        for (const comm_extra &e : *g_extras)
            if (e.k == KC) comms.push_back((uintptr_t)e.comm);
        for (const auto &[r, v] : live_records()) {
            if (v && v->k == KT) types.push_back((uintptr_t)encode<KT, T>(const_cast<vobj *>(v)));
            if (v && v->k == kind::win)
                wins.push_back((uintptr_t)encode<kind::win, MPI_Win>(const_cast<vobj *>(v)));
        }
        attrs_prepare(comms, types, wins, freed_keyval_attrs());
    }
    if (!read_infos(fs)) {
        snprintf(why, why_len, "rank %d: cannot read an info object's keys and values", rank);
        return -1;
    }
    for (const auto &[r, v] : records_in_order()) {
        if (v && v->k == kind::win &&
            (!strcmp(api_of(r), "MPI_Win_create") || !strcmp(api_of(r), "MPI_Win_allocate") ||
             !strcmp(api_of(r), "MPI_Win_allocate_c") ||
             !strncmp(api_of(r), "MPI_Win_allocate_shared", 23) ||
             !strcmp(api_of(r), "MPI_Win_create_dynamic")))
            if (const char *open = win_epoch_open(v)) {
                snprintf(why, why_len, "rank %d: the window made by %s cannot be carried now: %s",
                         rank, api_of(r), open);
                return -1;
            }
        if (v && v->k == kind::file && !r->setting)
            if (const char *no = file_before_checkpoint(r, v, fs)) {
                snprintf(why, why_len, "rank %d: the MPI file %s cannot be carried now: %s", rank,
                         file_name(r), no);
                return -1;
            }
        replay p{r, true};
        if (replay_one(p, api_of(r)) != 1) {
            snprintf(why, why_len,
                     "rank %d: the %s made by %s cannot be rebuilt on a fresh MPI library yet%s",
                     rank,
                     v           ? kind_name(v->k)
                     : r->zombie ? kind_name((kind)r->zombie_kind)
                                 : "object",
                     api_of(r), p.refs_ok ? "" : " (it was made from an object freed since)");
            return -1;
        }
    }
    return 0;
}

size_t exclude_threads(void *, int *tids, size_t max) {
    if (!g_state.active) return 0;
    return ghost_mpi_lower_threads(tids, max);
}

struct dirent64_head {
    uint64_t ino;
    int64_t off;
    unsigned short reclen;
    unsigned char type;
    char name[1];
};

// Every other thread is stopped: system calls, stack and static buffers only.
int exclude(void *, const ghost_exclude_sink *sink) {
    if (!g_state.active) return 0;
    // First the lower calls (whatever they map is then excluded too).
    if (g_state.initialized) {
        read_comm_extras(t_lower_fs);
        char why[160];
        if (attrs_read(t_lower_fs, why, sizeof why) != 0) {
            // No allocation here: the reason goes to stderr, the park fails.
            dprintf(2, "ghost-mpi: rank %d: attributes not read: %s\n", g_state.rank, why);
            return -1;
        }
    }
    static ghost_lower_region regions[GHOST_LOWER_MAX_REGIONS + 2048];
    size_t n = attribution_lower_regions_nomalloc(regions, sizeof regions / sizeof regions[0]);
    if (n == SIZE_MAX || n > sizeof regions / sizeof regions[0]) return -1;
    for (size_t i = 0; i < n; i++)
        if (sink->region(sink->ctx, regions[i].start, regions[i].end) != 0) return -1;

    // The connection to the job coordinator: a restored rank makes a new one. That to the
    // placeholder of a kept rank: a restored rank runs under its own launcher.
    if (int coord = ghost_mpi_coord_fd(); coord >= 0 && sink->fd(sink->ctx, coord) != 0) return -1;
    if (int keep = ghost_mpi_keep_fd(); keep >= 0 && sink->fd(sink->ctx, keep) != 0) return -1;
    int dir = (int)syscall(SYS_open, "/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir < 0) return -1;
    char buf[4096];
    for (long got; (got = syscall(SYS_getdents64, dir, buf, sizeof buf)) > 0;) {
        for (long off = 0; off < got;) {
            auto *d = (dirent64_head *)(buf + off);
            off += d->reclen;
            if (d->name[0] < '0' || d->name[0] > '9') continue;
            int fd = 0;
            for (const char *c = d->name; *c >= '0' && *c <= '9'; c++)
                fd = fd * 10 + (*c - '0');
            if (fd != dir && ghost_mpi_fd_is_lower(fd) && sink->fd(sink->ctx, fd) != 0) {
                syscall(SYS_close, dir);
                return -1;
            }
        }
    }
    syscall(SYS_close, dir);
    return 0;
}

void thread_after_restore(void *) {
    if (!g_state.active) return;
    lower_forget_thread();
    coord_thread_after_restore();
    shared_win_hold_writes();
}

// Starts a fresh lower half with `envp` (the new launcher's environment) and rebuilds on it
// everything the program holds, as the checkpoint read it (quiesce, exclude): a restored rank's
// after_restore, and a staying rank of a migration that keeps its process (in_place_switch).
int rebuild_on_fresh_lower(char *const *envp, const int32_t *inherited, int inherited_count,
                           char *why, size_t why_len) {
    uintptr_t fs = 0;
    const char *err = nullptr;
    translate_comm_extras();
    if (!lower_restart(envp, inherited, inherited_count, &fs, &err)) {
        snprintf(why, why_len, "rank %d: cannot start a fresh lower half: %s", g_state.rank,
                 err ? err : "unknown cause");
        return -1;
    }
    if (g_state.initialized) {
        int provided = 0;
        int rc = call_by_name<int (*)(int *, char ***, int, int *)>(
            fs, "MPI_Init_thread", (int *)nullptr, (char ***)nullptr, g_state.thread_level,
            &provided);
        if (rc != MPI_SUCCESS || provided < g_state.thread_level) {
            snprintf(why, why_len, "rank %d: MPI_Init_thread on the fresh lower half failed",
                     g_state.rank);
            return -1;
        }
        note_transport_choice();
        int size = -1;
        call_by_name<int (*)(C, int *)>(fs, "MPI_Comm_size", to_lower<KC>(world_comm()), &size);
        if (size != g_state.size) {
            snprintf(why, why_len,
                     "rank %d: the image is of a job of %d ranks, this job has %d: restart it with "
                     "as many",
                     g_state.rank, g_state.size, size);
            return -1;
        }
    }
    int commit = index_of("MPI_Type_commit");
    // Freed objects go again as the application freed them: each zombie right after the last
    // record made from it (a job that made and freed thousands of communicators holds them as
    // tombstones until its next checkpoint; all alive at once would exhaust the MPI's context
    // ids).
    auto records = replay_order();
    std::map<const record *, std::vector<const record *>> free_after;
    {
        // Each zombie goes after the last record replayed that is made from it.
        std::unordered_map<const record *, const record *> last;
        std::vector<const record *> deps;
        for (const auto &[r, v] : records) {
            if (r->zombie) last[r] = r;
            deps.clear();
            replay p{r, true};
            p.deps = &deps;
            replay_one(p, api_of(r));
            for (const record *d : deps)
                if (d->zombie) last[d] = r;
        }
        // In replay order (the same on every rank), not the map's.
        for (const auto &[r, v] : records)
            if (auto it = last.find(r); it != last.end()) free_after[it->second].push_back(r);
    }
    const bool trace = getenv("GHOST_MPI_TRACE_REPLAY") != nullptr;
    for (const auto &[r, v] : records) {
        replay p{r, false, fs};
        if (trace)
            dprintf(2, "ghost-mpi: rank %d: replay %s parent %llx:%llu group %llx\n", g_state.rank,
                    api_of(r), (unsigned long long)r->parent_id, (unsigned long long)r->parent_pos,
                    (unsigned long long)r->group_key);
        if (replay_one(p, api_of(r)) != 1) {
            if (v && v->k == kind::file)
                snprintf(why, why_len, "rank %d: cannot %s the MPI file %s again", g_state.rank,
                         r->setting ? "set the view of" : "open", file_name(v->rec));
            else
                snprintf(why, why_len, "rank %d: cannot rebuild the %s made by %s", g_state.rank,
                         v ? kind_name(v->k) : "object", api_of(r));
            return -1;
        }
        if (r->zombie) const_cast<record *>(r)->replay_lower = p.out;
        // A datatype is committed again, a freed one too (a file view made from it needs it so).
        if (((v && v->k == KT) || (r->zombie && r->zombie_kind == (uint8_t)KT)) && commit >= 0 &&
            !r->setting) {
            T t = handle_of<T>(p.out);
            lower_call lc(fs);
            ((int (*)(T *))g_fns[commit])(&t);
        }
        if (v && !r->zombie && !r->setting) {
            if (v->k == kind::request) {
                const_cast<vobj *>(v)->lower = p.out; // requests have no reverse map
            } else {
                vobj_set_lower(const_cast<vobj *>(v), p.out);
                // Made once here; the program holds it as often as the MPI handed it out.
                int mine = const_cast<vobj *>(v)->refs.load() - (int)v->holds;
                const_cast<vobj *>(v)->lower_refs_owed = mine > 1 ? (uint64_t)(mine - 1) : 0;
            }
            // A window whose fences had begun an epoch: so must the new one's (an MPI may
            // refuse operations before a first fence). Collective: every member replays it here.
            if (v->k == kind::win && win_fenced(v) &&
                call_by_name<int (*)(int, MPI_Win)>(fs, "MPI_Win_fence", 0,
                                                    handle_of<MPI_Win>(p.out)) != MPI_SUCCESS) {
                snprintf(why, why_len, "rank %d: cannot fence a rebuilt window", g_state.rank);
                return -1;
            }
            // MPI_Win_lock_all held at the checkpoint (its operations were completed then):
            // held again, before the program can use the window.
            int lock_all_assert = 0;
            if (v->k == kind::win && win_lock_all_held(v, &lock_all_assert) &&
                call_by_name<int (*)(int, MPI_Win)>(fs, "MPI_Win_lock_all", lock_all_assert,
                                                    handle_of<MPI_Win>(p.out)) != MPI_SUCCESS) {
                snprintf(why, why_len, "rank %d: cannot take MPI_Win_lock_all on a rebuilt window",
                         g_state.rank);
                return -1;
            }
            // Atomic mode: the same on every member, set collectively where the open was.
            if (v->k == kind::file && file_state_of(v) && file_state_of(v)->atomic &&
                call_by_name<int (*)(MPI_File, int)>(
                    fs, "MPI_File_set_atomicity", handle_of<MPI_File>(p.out), 1) != MPI_SUCCESS) {
                snprintf(why, why_len, "rank %d: cannot set a reopened file's atomic mode",
                         g_state.rank);
                return -1;
            }
        }
        if (auto it = free_after.find(r); it != free_after.end())
            for (const record *z : it->second)
                free_lower((kind)z->zombie_kind, z->replay_lower, fs);
    }
    write_comm_extras(fs);
    if (!files_after_restart(fs)) {
        snprintf(why, why_len,
                 "rank %d: cannot set a reopened MPI file's pointer or error handler again",
                 g_state.rank);
        return -1;
    }
    if (!write_infos(fs)) {
        snprintf(why, why_len, "rank %d: cannot set an info object's keys and values again",
                 g_state.rank);
        return -1;
    }
    if (char what[200]; attrs_after_restart(fs, what, sizeof what) != 0) {
        snprintf(why, why_len, "rank %d: %s", g_state.rank, what);
        return -1;
    }
    if (g_bsend_buf) {
        int rc = g_bsend_size <= INT_MAX
                     ? call_by_name<int (*)(void *, int)>(fs, "MPI_Buffer_attach", g_bsend_buf,
                                                          (int)g_bsend_size)
                     : call_by_name<int (*)(void *, MPI_Count)>(
                           fs, "MPI_Buffer_attach_c", g_bsend_buf, (MPI_Count)g_bsend_size);
        if (rc != MPI_SUCCESS) {
            snprintf(why, why_len, "rank %d: cannot attach the buffered-send buffer again",
                     g_state.rank);
            return -1;
        }
    }
    if (!quiesce_after_restart(fs, &err)) {
        snprintf(why, why_len, "rank %d: cannot rebind quiescence to the fresh lower half: %s",
                 g_state.rank, err ? err : "unknown cause");
        return -1;
    }
    if (char what[200]; !comms_ranked_as_before(fs, what, sizeof what)) {
        snprintf(why, why_len, "rank %d: %s", g_state.rank, what);
        return -1;
    }
    lower_restart_done();
    shared_win_release_writes();
    return 0;
}

int after_restore(void *, const ghost_restore_info *info, char *why, size_t why_len) {
    if (!g_state.active) return 0;
    char *const *envp = info->envp && info->envp[0] ? info->envp : environ;
    if (rebuild_on_fresh_lower(envp, info->inherited, (int)info->inherited_count, why, why_len) !=
        0)
        return -1;
    coord_after_restore(envp);
    return 0;
}

// In the park signal's handler, whatever the FS: no TLS, no allocation, no lock (the ledger's
// is only the fallback when the upper mark cannot be read).
__attribute__((no_stack_protector)) int thread_state(void *) {
    if (!layer_active()) return GHOST_THREAD_APP;
    uintptr_t fs = read_fs_base();
    // An upper thread inside an MPI call, or getting its lower TLS (on the spawner's TCB).
    if (upper_fs_for(fs) || fs == g_handoff.spawn_fs) return GHOST_THREAD_BUSY;
    // Otherwise a TCB that is not an upper thread's is a lower thread's own, one that
    // exclude_threads missed (it was running while it was looked at): the park handler would run
    // the upper libc on its lower TLS (a SIGSEGV in strtoull, seen in CI).
    switch (fs_is_upper(fs)) {
    case 1:
        return GHOST_THREAD_APP;
    case 0:
        return GHOST_THREAD_OWN;
    default:
        return attribution_addr_is_lower(fs) ? GHOST_THREAD_OWN : GHOST_THREAD_APP;
    }
}

const ghost_component g_component = {
    GHOST_AGENT_API_VERSION, "mpi",         nullptr,     quiesce, exclude_threads, exclude, nullptr,
    thread_after_restore,    after_restore, thread_state};

__attribute__((constructor)) void register_with_agent() {
    auto reg = (int (*)(const ghost_component *))dlsym(RTLD_DEFAULT, "ghost_agent_register");
    if (reg) reg(&g_component);
}

} // namespace

void bsend_buffer_note(void *buf, long long size) {
    std::lock_guard<std::mutex> g(g_bsend_mu);
    g_bsend_buf = buf;
    g_bsend_size = buf ? size : 0;
}

volatile int g_lower_leaving = 0;

bool in_place_prepare(int rank, char *why, size_t why_len) {
    if (!layer_active()) {
        snprintf(why, why_len, "the MPI layer is not running in this process");
        return false;
    }
    if (shared_win_any()) {
        snprintf(why, why_len,
                 "a window of shared memory (MPI_Win_allocate_shared) ties this rank to its "
                 "node's other ranks: move them all (--via ucx without --keep, or --via fs)");
        return false;
    }
    // What a checkpoint reads, in its order: first what the coordinator thread does before it
    // asks for the image (save_image: the requests settled, the shared file pointers read), then
    // the agent's quiesce hook, then its exclude hook (the communicators' extras, the attributes).
    // This thread holds a lower TLS of its own; the other application threads are outside MPI and
    // stay so (quiescent).
    if (requests_before_checkpoint(rank, req_convert, why, why_len) != 0) return false;
    files_read_shared_positions();
    if (quiesce(nullptr, why, why_len) != 0) return false;
    if (!g_state.initialized) {
        snprintf(why, why_len, "rank %d has not called MPI_Init", g_state.rank);
        return false;
    }
    uintptr_t fs = thread_lower_fs();
    read_comm_extras(fs);
    if (attrs_read(fs, why, why_len) != 0) return false;
    fflush(nullptr);
    return true;
}

// MPI_Finalize on the lower half this process gives up, without telling the program.
// The old lower half's MPI_Finalize closes the files still open in it, and deletes those opened
// with MPI_MODE_DELETE_ON_CLOSE: but they stay open in the program, which reopens them on its
// fresh lower half (or in its moved process). Each such file gets a second name of this process's
// first, which puts it back if the finalize deleted it (the rank that deletes it is one that
// made a name: every rank does), before any rank opens it again (after the new job's MPI_Init,
// which waits for every rank). A ROMIO prefix ("ufs:") is not part of the path.
int finalize_given_up(uintptr_t fs) {
    struct second_name {
        std::string path, link;
    };
    std::vector<second_name> names;
    for (const auto &[r, v] : records_in_order()) {
        if (!v || v->k != kind::file || r->setting || !(r->args[2] & MPI_MODE_DELETE_ON_CLOSE))
            continue;
        std::string path = file_name(r);
        if (size_t colon = path.find(':');
            colon != std::string::npos && colon > 1 && path.find('/') == colon + 1)
            path.erase(0, colon + 1);
        std::string link = path + ".ghost-kept-" + std::to_string((long)getpid());
        unlink(link.c_str());
        if (::link(path.c_str(), link.c_str()) == 0) names.push_back({path, link});
    }
    g_lower_leaving = 1;
    int rc = call_by_name<int (*)()>(fs, "MPI_Finalize");
    g_lower_leaving = 0;
    for (const auto &n : names) {
        if (access(n.path.c_str(), F_OK) != 0 && errno == ENOENT)
            (void)!::link(n.link.c_str(), n.path.c_str());
        unlink(n.link.c_str());
    }
    return rc;
}

bool in_place_leave(char *why, size_t why_len) {
    if (!layer_active() || !g_state.initialized) return true;
    if (finalize_given_up(thread_lower_fs()) != MPI_SUCCESS) {
        snprintf(why, why_len, "rank %d: MPI_Finalize of the old lower half failed", g_state.rank);
        return false;
    }
    return true;
}

bool in_place_switch(char *const *envp, const int32_t *inherited, int inherited_count, char *why,
                     size_t why_len) {
    uintptr_t fs = thread_lower_fs();
    // Out of the old job, with every other rank of it (those that move too): then the old
    // launcher sees this rank end its MPI as a rank does, and it does not take the job down when
    // the process leaves it for good.
    if (finalize_given_up(fs) != MPI_SUCCESS) {
        snprintf(why, why_len, "rank %d: MPI_Finalize of the old lower half failed", g_state.rank);
        return false;
    }
    if (!lower_drop(fs, why, why_len)) return false;
    return rebuild_on_fresh_lower(envp, inherited, inherited_count, why, why_len) == 0;
}

void attr_note(kind k, uintptr_t object, int keyval, bool set) {
    std::lock_guard<std::mutex> g(g_attr_mu);
    if (!g_attrs) g_attrs = new std::set<attr_key>();
    if (set)
        g_attrs->insert({k, object, keyval});
    else
        g_attrs->erase({k, object, keyval});
}

} // namespace ghost::mpi
