// SPDX-License-Identifier: Apache-2.0
// Everything the generated wrappers use, after the flavour's mpi.h (found through the include path
// the build sets per flavour). Keep this header small: it is compiled into ~600 wrappers.
#pragma once
#include <mpi.h>

#include <cstdlib>
#include <cstring>
#include <type_traits>

#include "handles.h"
#include "files.h"
#include "keyvals.h"
#include "runtime.h"

#define GHOST_EXPORT __attribute__((visibility("default")))

namespace ghost::mpi {

template <class T> inline uint64_t raw_word(T v) {
    if constexpr (std::is_pointer_v<T>) {
        return (uint64_t)(uintptr_t)v;
    } else if constexpr (std::is_floating_point_v<T>) {
        uint64_t w = 0;
        memcpy(&w, &v, sizeof v);
        return w;
    } else {
        return (uint64_t)(int64_t)v;
    }
}

// Lower-side copy of a handle array: on the stack when small, on the heap when a nonblocking call
// may read it after returning (then owned by the request through keep_alive).
template <class H> struct handle_array {
    H small[32];
    H *p;
    handle_array(int n, bool persist) {
        p = (n <= 32 && !persist) ? small : (H *)malloc(sizeof(H) * (size_t)(n > 0 ? n : 1));
        if (!p) fatal("cannot translate a handle array", "out of memory");
    }
    ~handle_array() {
        if (p != small) free(p);
    }
    handle_array(const handle_array &) = delete;
    handle_array &operator=(const handle_array &) = delete;
    H &operator[](int i) { return p[i]; }
    H *data() { return p; }
    H *release() {
        H *r = p;
        p = small;
        return r;
    }
};

// Ties lower-side arrays to a request until it is freed (at most two: send and receive types).
template <kind K, class H> void keep_alive(H u, void *mem) {
    vobj *v = decode<K>(u);
    if (!v || v->magic != kVobjMagic || (v->flags & kPredefined)) {
        free(mem);
        return;
    }
    if (!v->keep) v->keep = calloc(2, sizeof(void *));
    void **slots = (void **)v->keep;
    if (slots && !slots[0])
        slots[0] = mem;
    else if (slots && !slots[1])
        slots[1] = mem;
    else
        free(mem); // cannot happen with the generated callers; never leak
}

// Handles returned as function results (f2c conversions): known objects are not re-counted.
template <kind K, class H> H lookup_or_adopt(H l) {
    H u = lookup<K>(l);
    if ((uintptr_t)u != (uintptr_t)l || (uintptr_t)l == g_lower_null[(int)K]) return u;
    return adopt<K>(l, nullptr);
}

const int *xlate_weights(const int *w);
int *xlate_weights(int *w);
// MPI_UNWEIGHTED or MPI_WEIGHTS_EMPTY of the upper (application's) library: not an array.
bool weights_sentinel(const int *w);
// A creation collective over communicator `upper` (tracked by the collective clock): names it in
// the record by the communicator's id, size and clock (record::parent_pos); quiesce.cpp.
void record_set_parent(record *r, uintptr_t upper);
// MPI_Comm_create_group (collective over the group only): names the creation in the record by
// its communicator's id, tag, group and how many such this process made before
// (record::group_key), and returns that name (0: its communicator has no clock); quiesce.cpp.
uint64_t record_set_group_key(record *r, uintptr_t comm, MPI_Group group, int tag);
// After MPI_Comm_group made `lower_group` (not one handed out before): its members by world rank
// in the record, which a restart then makes as MPI_Group_incl of the world group, without the
// communicator (restart.cpp); quiesce.cpp.
void record_group_members(record *r, MPI_Group lower_group);
// Before MPI_Comm_create_group over `lower_comm`: under MPICH, makes the communicator's own group
// (restart.cpp).
void comm_group_materialize(MPI_Comm lower_comm, uintptr_t lower_fs);
// After MPI_Comm_create_group made `newcomm`: its collective clock, with an id from that name
// (the same on every member), so that a checkpoint can bring its members to one collective.
void comm_created_group(uintptr_t newcomm, uint64_t group_key);
// Every record (with the object it made) in the order a restart replays them (restart.cpp).
std::vector<std::pair<const record *, const vobj *>> replay_order();
// A request a nonblocking collective made (p2p.cpp): a checkpoint's drain completes it.
void request_mark_collective(MPI_Request upper, uintptr_t comm);
// A nonblocking file operation: it completes by itself, so the drain completes it too.
void request_mark_io(MPI_Request upper);
// Lengths of arrays a creation record copies: a weights array (none for a sentinel), the sum of
// a degrees array, the dimensions of a Cartesian communicator (upper handle).
size_t weights_len(const int *w, int n);
size_t int_sum(const int *a, int n);
size_t cart_ndims(MPI_Comm upper);
// Element count of an (neighbor_)alltoallw type array: comm size / remote size, or in/out degree.
int w_count(MPI_Comm lower_comm, int recv_side, int neighbor, int in_place);
int unsupported(const char *api);
// A call whose effect a checkpoint cannot carry (large-count point-to-point calls, which the
// quiesce does not count): from then on every checkpoint of the rank is refused in one line.
void note_uncarried(const char *call);
void note_mpit(int delta); // MPI_T_init_thread (+1) and MPI_T_finalize (-1) that succeeded
// Why this rank's checkpoint is refused (in `buf`), or nullptr.
const char *uncarried_state(char *buf, size_t len);
bool world_initialized(); // MPI_Init (or _thread) returned, MPI_Finalize not yet
void request_mark_generalized(MPI_Request upper);
void request_mark_generalized_complete(MPI_Request upper);

MPI_User_function *wrap_op(MPI_User_function *fn);
MPI_Comm_errhandler_function *wrap_comm_errh(MPI_Comm_errhandler_function *fn);
MPI_Win_errhandler_function *wrap_win_errh(MPI_Win_errhandler_function *fn);
MPI_File_errhandler_function *wrap_file_errh(MPI_File_errhandler_function *fn);
MPI_Comm_copy_attr_function *wrap_comm_copy(MPI_Comm_copy_attr_function *fn);
MPI_Comm_delete_attr_function *wrap_comm_delete(MPI_Comm_delete_attr_function *fn);
MPI_Type_copy_attr_function *wrap_type_copy(MPI_Type_copy_attr_function *fn);
MPI_Type_delete_attr_function *wrap_type_delete(MPI_Type_delete_attr_function *fn);
MPI_Win_copy_attr_function *wrap_win_copy(MPI_Win_copy_attr_function *fn);
MPI_Win_delete_attr_function *wrap_win_delete(MPI_Win_delete_attr_function *fn);
MPI_Grequest_query_function *wrap_greq_query(MPI_Grequest_query_function *fn);
MPI_Grequest_free_function *wrap_greq_free(MPI_Grequest_free_function *fn);
MPI_Grequest_cancel_function *wrap_greq_cancel(MPI_Grequest_cancel_function *fn);
MPI_Datarep_conversion_function *wrap_datarep_conv(MPI_Datarep_conversion_function *fn);
MPI_Datarep_extent_function *wrap_datarep_extent(MPI_Datarep_extent_function *fn);
#if defined(GHOST_MPI_MPICH)
MPI_Datarep_conversion_function_c *wrap_datarep_conv_c(MPI_Datarep_conversion_function_c *fn);
MPI_User_function_c *wrap_op_c(MPI_User_function_c *fn);
MPI_Session_errhandler_function *wrap_session_errh(MPI_Session_errhandler_function *fn);
#endif

// Used by the generated flavour_bind().
bool bind_handle(const char *sym, kind k, void *lower, const char **why);
bool bind_null(kind k, const char *sym, void *lower, const char **why);
void bind_function(const char *sym, void *lower);
void bind_value(const char *sym, void *lower_var);

// An attribute set on (or deleted from) an object: attributes live in the lower half, so a
// checkpoint refuses while one is set on a live object (restart.cpp).
void attr_note(kind k, uintptr_t object, int keyval, bool set);
// The buffer attached for buffered sends (MPI_Buffer_attach; nullptr after MPI_Buffer_detach): the
// lower half's attachment is lost with it, so a restart attaches it again (restart.cpp).
void bsend_buffer_note(void *buf, long long size);

} // namespace ghost::mpi
