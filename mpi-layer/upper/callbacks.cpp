// SPDX-License-Identifier: Apache-2.0
// User callbacks invoked by the lower half (reduction ops, error handlers, attribute copy/delete,
// generalized requests, data representations).
//
// The lower library calls a trampoline with the lower FS loaded and lower handles as arguments.
// Each trampoline is bound to one slot holding the user's function: it switches to the calling
// thread's upper FS (callback_scope), translates the handles to upper ones, calls the user, and
// switches back. Hazard: trampolines must not read upper TLS or the stack canary before the switch
// (no_stack_protector).
#include <array>
#include <mutex>
#include <utility>

#include "wrapper_support.h"

namespace ghost::mpi {

void *translate_predefined_fn(void *upper);

namespace {

constexpr int kSlots = 64;

template <class F> struct slot_table {
    F *fns[kSlots] = {};
    std::mutex mu;
    int find_or_add(F *fn) {
        std::lock_guard<std::mutex> g(mu);
        for (int i = 0; i < kSlots; i++)
            if (fns[i] == fn) return i;
        for (int i = 0; i < kSlots; i++)
            if (!fns[i]) {
                fns[i] = fn;
                return i;
            }
        return -1;
    }
};

#define NOSP __attribute__((no_stack_protector, noinline))

slot_table<MPI_User_function> op_slots;
template <int N> NOSP void op_tramp(void *in, void *inout, int *len, MPI_Datatype *dt) {
    callback_scope cs;
    MPI_Datatype u = lookup<kind::datatype>(*dt);
    op_slots.fns[N](in, inout, len, &u);
}

slot_table<MPI_Comm_errhandler_function> comm_errh_slots;
template <int N> NOSP void comm_errh_tramp(MPI_Comm *c, int *code, ...) {
    callback_scope cs;
    MPI_Comm u = lookup<kind::comm>(*c);
    comm_errh_slots.fns[N](&u, code);
}

slot_table<MPI_Win_errhandler_function> win_errh_slots;
template <int N> NOSP void win_errh_tramp(MPI_Win *w, int *code, ...) {
    callback_scope cs;
    MPI_Win u = lookup<kind::win>(*w);
    win_errh_slots.fns[N](&u, code);
}

slot_table<MPI_File_errhandler_function> file_errh_slots;
template <int N> NOSP void file_errh_tramp(MPI_File *f, int *code, ...) {
    callback_scope cs;
    MPI_File u = lookup<kind::file>(*f);
    file_errh_slots.fns[N](&u, code);
}

// While a lower half that the process gives up finalizes (in_place_switch, in_place_leave), its
// MPI_Finalize deletes the attributes it holds: the program's objects live on (rebuilt on the
// fresh lower half), so its callbacks are not told.
#define ATTR_SLOTS(NAME, H, K, COPY_T, DEL_T)                                                      \
    slot_table<COPY_T> NAME##_copy_slots;                                                          \
    template <int N>                                                                               \
    NOSP int NAME##_copy_tramp(H o, int key, void *extra, void *in, void *out, int *flag) {        \
        if (g_lower_leaving) {                                                                     \
            *flag = 0;                                                                             \
            return MPI_SUCCESS;                                                                    \
        }                                                                                          \
        callback_scope cs;                                                                         \
        return NAME##_copy_slots.fns[N](lookup<K>(o), keyval_upper(key), extra, in, out, flag);    \
    }                                                                                              \
    slot_table<DEL_T> NAME##_delete_slots;                                                         \
    template <int N> NOSP int NAME##_delete_tramp(H o, int key, void *val, void *extra) {          \
        if (g_lower_leaving) return MPI_SUCCESS;                                                   \
        callback_scope cs;                                                                         \
        return NAME##_delete_slots.fns[N](lookup<K>(o), keyval_upper(key), val, extra);            \
    }

ATTR_SLOTS(comm, MPI_Comm, kind::comm, MPI_Comm_copy_attr_function, MPI_Comm_delete_attr_function)
ATTR_SLOTS(type, MPI_Datatype, kind::datatype, MPI_Type_copy_attr_function,
           MPI_Type_delete_attr_function)
ATTR_SLOTS(win, MPI_Win, kind::win, MPI_Win_copy_attr_function, MPI_Win_delete_attr_function)

// Generalized requests: extra_state and MPI_Status pass through unchanged (one MPI library, one
// status layout); only the FS has to be the caller's.
slot_table<MPI_Grequest_query_function> greq_query_slots;
template <int N> NOSP int greq_query_tramp(void *extra, MPI_Status *status) {
    callback_scope cs;
    return greq_query_slots.fns[N](extra, status);
}
slot_table<MPI_Grequest_free_function> greq_free_slots;
template <int N> NOSP int greq_free_tramp(void *extra) {
    callback_scope cs;
    return greq_free_slots.fns[N](extra);
}
slot_table<MPI_Grequest_cancel_function> greq_cancel_slots;
template <int N> NOSP int greq_cancel_tramp(void *extra, int complete) {
    callback_scope cs;
    return greq_cancel_slots.fns[N](extra, complete);
}

// User data representations (MPI-IO): the datatype is the lower one.
slot_table<MPI_Datarep_conversion_function> datarep_conv_slots;
template <int N>
NOSP int datarep_conv_tramp(void *userbuf, MPI_Datatype dt, int count, void *filebuf,
                            MPI_Offset pos, void *extra) {
    callback_scope cs;
    return datarep_conv_slots.fns[N](userbuf, lookup<kind::datatype>(dt), count, filebuf, pos,
                                     extra);
}
slot_table<MPI_Datarep_extent_function> datarep_extent_slots;
template <int N> NOSP int datarep_extent_tramp(MPI_Datatype dt, MPI_Aint *extent, void *extra) {
    callback_scope cs;
    return datarep_extent_slots.fns[N](lookup<kind::datatype>(dt), extent, extra);
}

#if defined(GHOST_MPI_MPICH)
slot_table<MPI_Datarep_conversion_function_c> datarep_conv_c_slots;
template <int N>
NOSP int datarep_conv_c_tramp(void *userbuf, MPI_Datatype dt, MPI_Count count, void *filebuf,
                              MPI_Offset pos, void *extra) {
    callback_scope cs;
    return datarep_conv_c_slots.fns[N](userbuf, lookup<kind::datatype>(dt), count, filebuf, pos,
                                       extra);
}
slot_table<MPI_User_function_c> op_c_slots;
template <int N> NOSP void op_c_tramp(void *in, void *inout, MPI_Count *len, MPI_Datatype *dt) {
    callback_scope cs;
    MPI_Datatype u = lookup<kind::datatype>(*dt);
    op_c_slots.fns[N](in, inout, len, &u);
}
slot_table<MPI_Session_errhandler_function> session_errh_slots;
template <int N> NOSP void session_errh_tramp(MPI_Session *s, int *code, ...) {
    callback_scope cs;
    MPI_Session u = lookup<kind::session>(*s);
    session_errh_slots.fns[N](&u, code);
}
#endif

template <class F, template <int> class Pick, size_t... I>
constexpr std::array<F *, sizeof...(I)> make_table(std::index_sequence<I...>) {
    return {Pick<(int)I>::value...};
}

#define TABLE(NAME, FTYPE)                                                                         \
    template <int N> struct NAME##_pick { static constexpr FTYPE *value = &NAME##_tramp<N>; };     \
    const std::array<FTYPE *, kSlots> NAME##_tramps =                                              \
        make_table<FTYPE, NAME##_pick>(std::make_index_sequence<kSlots>{});

TABLE(op, MPI_User_function)
TABLE(comm_errh, MPI_Comm_errhandler_function)
TABLE(win_errh, MPI_Win_errhandler_function)
TABLE(file_errh, MPI_File_errhandler_function)
TABLE(comm_copy, MPI_Comm_copy_attr_function)
TABLE(comm_delete, MPI_Comm_delete_attr_function)
TABLE(type_copy, MPI_Type_copy_attr_function)
TABLE(type_delete, MPI_Type_delete_attr_function)
TABLE(win_copy, MPI_Win_copy_attr_function)
TABLE(win_delete, MPI_Win_delete_attr_function)
TABLE(greq_query, MPI_Grequest_query_function)
TABLE(greq_free, MPI_Grequest_free_function)
TABLE(greq_cancel, MPI_Grequest_cancel_function)
TABLE(datarep_conv, MPI_Datarep_conversion_function)
TABLE(datarep_extent, MPI_Datarep_extent_function)
#if defined(GHOST_MPI_MPICH)
TABLE(datarep_conv_c, MPI_Datarep_conversion_function_c)
TABLE(op_c, MPI_User_function_c)
TABLE(session_errh, MPI_Session_errhandler_function)
#endif

template <class F>
F *wrap(F *fn, slot_table<F> &slots, const std::array<F *, kSlots> &tramps, const char *what) {
    if (!fn) return fn;
    if (void *l = translate_predefined_fn((void *)fn)) return (F *)l;
    int i = slots.find_or_add(fn);
    if (i < 0) fatal("too many distinct user callbacks", what);
    return tramps[i];
}

} // namespace

MPI_User_function *wrap_op(MPI_User_function *f) {
    return wrap(f, op_slots, op_tramps, "reduction ops");
}
MPI_Comm_errhandler_function *wrap_comm_errh(MPI_Comm_errhandler_function *f) {
    return wrap(f, comm_errh_slots, comm_errh_tramps, "communicator error handlers");
}
MPI_Win_errhandler_function *wrap_win_errh(MPI_Win_errhandler_function *f) {
    return wrap(f, win_errh_slots, win_errh_tramps, "window error handlers");
}
MPI_File_errhandler_function *wrap_file_errh(MPI_File_errhandler_function *f) {
    return wrap(f, file_errh_slots, file_errh_tramps, "file error handlers");
}
MPI_Comm_copy_attr_function *wrap_comm_copy(MPI_Comm_copy_attr_function *f) {
    return wrap(f, comm_copy_slots, comm_copy_tramps, "attribute callbacks");
}
MPI_Comm_delete_attr_function *wrap_comm_delete(MPI_Comm_delete_attr_function *f) {
    return wrap(f, comm_delete_slots, comm_delete_tramps, "attribute callbacks");
}
MPI_Type_copy_attr_function *wrap_type_copy(MPI_Type_copy_attr_function *f) {
    return wrap(f, type_copy_slots, type_copy_tramps, "attribute callbacks");
}
MPI_Type_delete_attr_function *wrap_type_delete(MPI_Type_delete_attr_function *f) {
    return wrap(f, type_delete_slots, type_delete_tramps, "attribute callbacks");
}
MPI_Win_copy_attr_function *wrap_win_copy(MPI_Win_copy_attr_function *f) {
    return wrap(f, win_copy_slots, win_copy_tramps, "attribute callbacks");
}
MPI_Win_delete_attr_function *wrap_win_delete(MPI_Win_delete_attr_function *f) {
    return wrap(f, win_delete_slots, win_delete_tramps, "attribute callbacks");
}
MPI_Grequest_query_function *wrap_greq_query(MPI_Grequest_query_function *f) {
    return wrap(f, greq_query_slots, greq_query_tramps, "generalized request callbacks");
}
MPI_Grequest_free_function *wrap_greq_free(MPI_Grequest_free_function *f) {
    return wrap(f, greq_free_slots, greq_free_tramps, "generalized request callbacks");
}
MPI_Grequest_cancel_function *wrap_greq_cancel(MPI_Grequest_cancel_function *f) {
    return wrap(f, greq_cancel_slots, greq_cancel_tramps, "generalized request callbacks");
}
MPI_Datarep_conversion_function *wrap_datarep_conv(MPI_Datarep_conversion_function *f) {
    return wrap(f, datarep_conv_slots, datarep_conv_tramps, "data representation callbacks");
}
MPI_Datarep_extent_function *wrap_datarep_extent(MPI_Datarep_extent_function *f) {
    return wrap(f, datarep_extent_slots, datarep_extent_tramps, "data representation callbacks");
}
#if defined(GHOST_MPI_MPICH)
MPI_Datarep_conversion_function_c *wrap_datarep_conv_c(MPI_Datarep_conversion_function_c *f) {
    return wrap(f, datarep_conv_c_slots, datarep_conv_c_tramps, "data representation callbacks");
}
MPI_User_function_c *wrap_op_c(MPI_User_function_c *f) {
    return wrap(f, op_c_slots, op_c_tramps, "reduction ops");
}
MPI_Session_errhandler_function *wrap_session_errh(MPI_Session_errhandler_function *f) {
    return wrap(f, session_errh_slots, session_errh_tramps, "session error handlers");
}
#endif

} // namespace ghost::mpi
