// SPDX-License-Identifier: Apache-2.0
// Handle translation between the application's virtual handles and the lower half's handles.
// Included by the generated wrappers after the flavour's mpi.h. Per kind K:
//   to_lower<K>(u)        any upper handle -> lower handle (unknown values pass through so that the
//   lower
//                         library reports the same error native MPI would)
//   adopt<K>(l, rec)      lower handle just returned -> upper handle (predefined, known, or a new
//   vobj) drop<K>(u)            after a successful free: release the vobj, u = upper null
//   settle<K>(u, l)       after a call that may complete/consume it (Wait, Test, Mrecv): follow the
//   lower
// Contract: no function here touches the lower half or switches FS.
#pragma once
#include <cstdint>
#include <type_traits>

#include "vobj.h"

namespace ghost::mpi {

extern uintptr_t g_upper_null[kKinds];
extern uintptr_t g_lower_null[kKinds];

#if defined(GHOST_MPI_MPICH)
constexpr uint32_t kVirtualTag = 0xC0000000u;
constexpr uint32_t mpich_kind_bits(kind k) {
    switch (k) {
    case kind::comm:
        return 0x1;
    case kind::group:
        return 0x2;
    case kind::datatype:
        return 0x3;
    case kind::errhandler:
        return 0x5;
    case kind::op:
        return 0x6;
    case kind::info:
        return 0x7;
    case kind::win:
        return 0x8;
    case kind::request:
        return 0xB;
    case kind::message:
        return 0xB;
    case kind::session:
        return 0xE;
    default:
        return 0xF;
    }
}
// Predefined MPICH handles are identical in both halves: builtin (kind 01) and null (kind 00)
// values, plus the five pair datatypes, which are direct handles 0x8c000000-0x8c000004 (mpi.h:
// MPI_FLOAT_INT .. MPI_LONG_DOUBLE_INT). The direct handles after them are the application's first
// derived datatypes: those are created objects (a wider range once passed them through raw, with
// no creation record, so that a restart lost them).
inline bool mpich_predefined(uint32_t h) {
    uint32_t hk = h >> 30;
    return hk == 0 || hk == 1 || (h >= 0x8c000000u && h <= 0x8c000004u);
}
#endif

// The slot a handle names, whether or not it holds a live object now (decode: live ones only, for
// integer handles; a pointer handle is its slot).
template <kind K, class H> inline vobj *decode_slot(H u) {
    if constexpr (std::is_pointer_v<H>) {
        return (vobj *)(void *)u;
    } else {
#if defined(GHOST_MPI_MPICH)
        uint32_t x = (uint32_t)u;
        if ((x & kVirtualTag) != kVirtualTag) return nullptr;
        return vobj_slot(x & 0x03FFFFFFu);
#else
        static_assert(std::is_pointer_v<H>, "integer handles only exist in MPICH");
        return nullptr;
#endif
    }
}

template <kind K, class H> inline vobj *decode(H u) {
    vobj *v = decode_slot<K>(u);
    if constexpr (std::is_pointer_v<H>)
        return v;
    else
        return v && v->magic == kVobjMagic ? v : nullptr;
}

template <kind K, class H> inline H encode(vobj *v) {
    if constexpr (std::is_pointer_v<H>) {
        return (H)(void *)v;
    } else {
#if defined(GHOST_MPI_MPICH)
        return (H)(int)(kVirtualTag | (mpich_kind_bits(K) << 26) | v->index);
#else
        return (H)0;
#endif
    }
}

template <kind K, class H> inline H to_lower(H u) {
    if constexpr (std::is_pointer_v<H>) {
        vobj *v = (vobj *)(void *)u;
        if (v == nullptr) return u;
        if (__builtin_expect(v->magic == kVobjMagic, 1)) return (H)v->lower;
        return v->flags == kFreed ? (H)g_lower_null[(int)K] : u;
    } else {
#if defined(GHOST_MPI_MPICH)
        uint32_t x = (uint32_t)u;
        if ((x & kVirtualTag) != kVirtualTag) return u;
        vobj *v = vobj_at(x & 0x03FFFFFFu);
        if (!v || v->k != K) return (H)g_lower_null[(int)K];
        return (H)v->lower;
#else
        return u;
#endif
    }
}

template <kind K, class H> inline bool lower_is_null(H l) {
    return (uintptr_t)l == g_lower_null[(int)K];
}

// `known`: the library may hand out an object it handed out before (MPI_Comm_get_parent's parent
// communicator), which is then the same upper object, counted once more.
template <kind K, class H> H adopt(H l, record *rec, bool known = false) {
    uintptr_t lw = (uintptr_t)l;
    if (lw == g_lower_null[(int)K]) {
        if constexpr (K == kind::comm) {
            record_keep_orphan(rec); // collective: the other ranks replay it too
        } else {
            delete rec;
        }
        return (H)g_upper_null[(int)K];
    }
#if defined(GHOST_MPI_MPICH)
    if constexpr (!std::is_pointer_v<H>) {
        if (mpich_predefined((uint32_t)lw)) {
            delete rec;
            return l;
        }
    }
#endif
    vobj *v;
    if constexpr (K == kind::request) {
        v = request_new(K, lw);
    } else if (!known && (K == kind::comm || K == kind::win || K == kind::file)) {
        // Each creation of these is a new object, never one handed out before. A lower handle
        // still known here belongs to an object another thread has just freed: the library gave
        // the freed handle again before that thread forgot it (MPICH does, under
        // MPI_THREAD_MULTIPLE). Sharing that entry made the new communicator the freed one's,
        // its creation record dead on this rank only (mpi.job_ckpt.migkeep_comm_threads.mpich:
        // a checkpoint refused, "hold a communicator made over it that the others do not").
        // The new object takes the handle over; the freed one's vobj_free leaves it alone.
        v = vobj_new(K, lw);
    } else {
        v = vobj_find_lower_ref(K, lw);
        if (!v) v = vobj_new(K, lw);
    }
    if (!v) {
        delete rec;
        return l; // out of handle space: hand the raw value out (logged by the caller's error path)
    }
    if (rec) record_attach(v, rec);
    if constexpr (std::is_pointer_v<H>) {
        return (H)(void *)v;
    } else {
        if (v->flags & kPredefined) return l;
        return encode<K, H>(v);
    }
}

// MPI_<X>_c2f of a created object: its Fortran handle (vobj.h, kFortranBase); false for a
// predefined or null one (the library's own number, from the lower half).
template <kind K, class H> bool fortran_of(H u, MPI_Fint *f) {
    if ((uintptr_t)u == g_upper_null[(int)K]) return false;
    vobj *v = decode<K>(u);
    if (!v || v->magic != kVobjMagic || v->k != K || (v->flags & kPredefined)) return false;
    *f = v->f_handle;
    return true;
}

// MPI_<X>_f2c of a Fortran handle of ours: its object (the null handle if none); false for a
// library number.
template <kind K, class H> bool from_fortran(MPI_Fint f, H *u) {
    if (f < kFortranBase) return false;
    vobj *v = vobj_at((uint32_t)(f - kFortranBase));
    if (!v || v->k != K || (v->flags & kPredefined)) {
        *u = (H)g_upper_null[(int)K];
        return true;
    }
    if constexpr (std::is_pointer_v<H>)
        *u = (H)(void *)v;
    else
        *u = encode<K, H>(v);
    return true;
}

// Lower -> upper for an object the lower half hands to a callback (must already be known).
template <kind K, class H> H lookup(H l) {
    uintptr_t lw = (uintptr_t)l;
    if (lw == g_lower_null[(int)K]) return (H)g_upper_null[(int)K];
#if defined(GHOST_MPI_MPICH)
    if constexpr (!std::is_pointer_v<H>) {
        if (mpich_predefined((uint32_t)lw)) return l;
    }
#endif
    vobj *v = vobj_find_lower(K, lw);
    if (!v) return l;
    if constexpr (std::is_pointer_v<H>) {
        return (H)(void *)v;
    } else {
        return (v->flags & kPredefined) ? l : encode<K, H>(v);
    }
}

template <kind K, class H> void drop(H &u) {
    vobj *v = decode<K>(u);
    if (v && v->magic == kVobjMagic && !(v->flags & kPredefined)) {
        if constexpr (K == kind::request) {
            request_free(v);
        } else {
            int left = v->refs.fetch_sub(1) - 1;
            if (left == 0)
                vobj_free(v);
            else if (left == __atomic_load_n(&v->holds, __ATOMIC_ACQUIRE))
                vobj_unmap_lower(v); // only requests hold it now: the program has freed it
        }
    }
    u = (H)g_upper_null[(int)K];
}

// A free of u that the lower half must not see (vobj::lower_refs_owed): true once per owed
// reference.
template <kind K, class H> bool lower_ref_owed(H u) {
    vobj *v = (uintptr_t)u == g_upper_null[(int)K] ? nullptr : decode<K>(u);
    if (!v || v->magic != kVobjMagic || v->k != K || (v->flags & kPredefined)) return false;
    uint64_t n = __atomic_load_n(&v->lower_refs_owed, __ATOMIC_ACQUIRE);
    while (n > 0 && !__atomic_compare_exchange_n(&v->lower_refs_owed, &n, n - 1, false,
                                                 __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
    }
    return n > 0;
}

// A reference on a program's object beyond the program's own (a pending request that names it):
// the object, its handle and its record stay until drop() lets go of the last one.
template <kind K, class H> void hold_handle(H u) {
    vobj *v = (uintptr_t)u == g_upper_null[(int)K] ? nullptr : decode<K>(u);
    if (v && v->magic == kVobjMagic && v->k == K && !(v->flags & kPredefined)) {
        __atomic_add_fetch(&v->holds, 1, __ATOMIC_ACQ_REL);
        v->refs.fetch_add(1);
    }
}

// Lets go of a hold_handle() reference.
template <kind K, class H> void release_handle(H u) {
    vobj *v = (uintptr_t)u == g_upper_null[(int)K] ? nullptr : decode<K>(u);
    if (!v || v->magic != kVobjMagic || v->k != K || (v->flags & kPredefined)) return;
    __atomic_sub_fetch(&v->holds, 1, __ATOMIC_ACQ_REL);
    drop<K>(u);
}

template <kind K, class H> inline void settle(H &u, H l_after) {
    if (lower_is_null<K>(l_after)) {
        if ((uintptr_t)u != g_upper_null[(int)K]) drop<K>(u);
        return;
    }
    vobj *v = decode<K>(u);
    if (v && v->magic == kVobjMagic && v->lower != (uintptr_t)l_after) {
        if constexpr (K == kind::request) {
            v->lower = (uintptr_t)l_after;
        } else {
            vobj_set_lower(v, (uintptr_t)l_after);
        }
    }
}

} // namespace ghost::mpi
