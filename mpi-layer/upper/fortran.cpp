// SPDX-License-Identifier: Apache-2.0
// The Fortran calls that the MPI library's own Fortran bindings cannot make under the layer.
//
// A Fortran program calls the bindings library of its MPI (Open MPI's libmpi_mpifh, MPICH's
// libmpifort), which runs in the upper half and calls the C API, i.e. the layer's wrappers. Most of
// it works so. A few bindings reach into the library's internals instead: Open MPI's attribute
// calls read the attribute table out of the communicator's structure (a layer handle here, not an
// ompi_communicator_t) and its string, keyval and MPI_TYPE_MATCH_SIZE bindings call internal
// helpers; MPICH's attribute calls go to MPII_* helpers. The upper library has no such internals
// (the stub would stop the rank), so the layer defines those entry points itself, under every name
// the bindings give them (it is preloaded, so the program's and the bindings' calls bind to these),
// on top of the C API: one implementation for both MPIs, and attributes the layer already carries.
//
// Attributes follow the MPI standard's language rules (MPI-4.0 19.3.7): a value set from Fortran
// is an integer that C reads through a pointer to it, so the layer keeps it in a cell (upper
// memory, in the image) and sets the cell's address with the C call; a Fortran read gives the
// cell's integer, a C-set attribute's address, or for a predefined attribute the integer it points
// to. Keyvals made from Fortran get C callbacks that call the program's Fortran ones with Fortran's
// conventions (everything by reference, integers for handles and values).
#include <dlfcn.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <unordered_map>
#include <unordered_set>

#include "wrapper_support.h"

namespace ghost::mpi {
namespace {

// Fortran LOGICAL as gfortran (both MPIs' bindings here are built with it) passes it.
constexpr MPI_Fint kTrue = 1, kFalse = 0;

std::mutex g_cells_mu;
std::unordered_set<const void *> *g_cells; // addresses handed to C of values set from Fortran

struct cell {
    MPI_Aint value;
};

void *cell_new(MPI_Aint v) {
    cell *c = (cell *)malloc(sizeof(cell));
    if (!c) return nullptr;
    c->value = v;
    std::lock_guard<std::mutex> g(g_cells_mu);
    if (!g_cells) g_cells = new std::unordered_set<const void *>();
    g_cells->insert(c);
    return c;
}

bool is_cell(const void *p) {
    std::lock_guard<std::mutex> g(g_cells_mu);
    return g_cells && g_cells->count(p);
}

void cell_free(void *p) {
    {
        std::lock_guard<std::mutex> g(g_cells_mu);
        if (!g_cells || !g_cells->erase(p)) return;
    }
    free(p);
}

enum class obj { comm, type, win };

// The C number of a predefined attribute's keyval. MPICH gives Fortran its own numbers for them
// (the C one + 1, MPI_TAG_UB 0x64400002 for 0x64400001), which its C calls answer with the value
// itself rather than its address; the C number keeps one rule (and the layer's own answers) for
// all.
int c_keyval(int keyval) {
#if defined(GHOST_MPI_MPICH)
    const unsigned k = (unsigned)keyval;
    if (((k >> 24) == 0x64 || (k >> 24) == 0x66) && (k & 1) == 0) return keyval - 1;
#endif
    return keyval;
}

// What a Fortran read of an attribute whose C value is p gives.
MPI_Aint fortran_value(int keyval, void *p) {
    if (is_cell(p)) return ((cell *)p)->value;
    switch (keyval) {
    case MPI_TAG_UB:
    case MPI_HOST:
    case MPI_IO:
    case MPI_WTIME_IS_GLOBAL:
    case MPI_APPNUM:
    case MPI_UNIVERSE_SIZE:
    case MPI_LASTUSEDCODE:
    case MPI_WIN_DISP_UNIT:
    case MPI_WIN_CREATE_FLAVOR:
    case MPI_WIN_MODEL:
        return p ? *(int *)p : 0;
    case MPI_WIN_SIZE:
        return p ? *(MPI_Aint *)p : 0;
    default: // MPI_WIN_BASE and attributes set from C: the address itself
        return (MPI_Aint)(uintptr_t)p;
    }
}

int get_attr(obj o, MPI_Fint h, int keyval, MPI_Aint *value, bool *found) {
    keyval = c_keyval(keyval);
    void *p = nullptr;
    int flag = 0, rc;
    switch (o) {
    case obj::comm:
        rc = PMPI_Comm_get_attr(PMPI_Comm_f2c(h), keyval, &p, &flag);
        break;
    case obj::type:
        rc = PMPI_Type_get_attr(PMPI_Type_f2c(h), keyval, &p, &flag);
        break;
    default:
        rc = PMPI_Win_get_attr(PMPI_Win_f2c(h), keyval, &p, &flag);
        break;
    }
    *found = rc == MPI_SUCCESS && flag;
    if (*found) *value = fortran_value(keyval, p);
    return rc;
}

int set_attr(obj o, MPI_Fint h, int keyval, MPI_Aint value) {
    void *c = cell_new(value);
    if (!c) return MPI_ERR_NO_MEM;
    int rc;
    switch (o) {
    case obj::comm:
        rc = PMPI_Comm_set_attr(PMPI_Comm_f2c(h), keyval, c);
        break;
    case obj::type:
        rc = PMPI_Type_set_attr(PMPI_Type_f2c(h), keyval, c);
        break;
    default:
        rc = PMPI_Win_set_attr(PMPI_Win_f2c(h), keyval, c);
        break;
    }
    if (rc != MPI_SUCCESS) cell_free(c);
    return rc;
}

// A keyval made from Fortran: the program's callbacks and extra state. MPI-1 ones
// (MPI_KEYVAL_CREATE) take INTEGER values and extra state, MPI-2 ones INTEGER(MPI_ADDRESS_KIND).
struct fortran_keyval {
    void *copy_fn, *delete_fn;
    MPI_Aint extra;
    bool mpi1;
};

using copy2_fn = void (*)(MPI_Fint *, MPI_Fint *, MPI_Aint *, MPI_Aint *, MPI_Aint *, MPI_Fint *,
                          MPI_Fint *);
using delete2_fn = void (*)(MPI_Fint *, MPI_Fint *, MPI_Aint *, MPI_Aint *, MPI_Fint *);
using copy1_fn = void (*)(MPI_Fint *, MPI_Fint *, MPI_Fint *, MPI_Fint *, MPI_Fint *, MPI_Fint *,
                          MPI_Fint *);
using delete1_fn = void (*)(MPI_Fint *, MPI_Fint *, MPI_Fint *, MPI_Fint *, MPI_Fint *);

int run_copy(MPI_Fint old, int keyval, void *extra, void *in, void *out, int *flag) {
    auto *fk = (fortran_keyval *)extra;
    MPI_Fint fkey = keyval, fflag = kFalse, ierr = MPI_SUCCESS;
    MPI_Aint vin = fortran_value(keyval, in), vout = 0;
    if (fk->mpi1) {
        MPI_Fint e = (MPI_Fint)fk->extra, i1 = (MPI_Fint)vin, o1 = 0;
        ((copy1_fn)fk->copy_fn)(&old, &fkey, &e, &i1, &o1, &fflag, &ierr);
        vout = o1;
    } else {
        ((copy2_fn)fk->copy_fn)(&old, &fkey, &fk->extra, &vin, &vout, &fflag, &ierr);
    }
    *flag = fflag != kFalse;
    if (ierr == MPI_SUCCESS && *flag) {
        void *c = cell_new(vout);
        if (!c) return MPI_ERR_NO_MEM;
        *(void **)out = c;
    }
    return ierr;
}

int run_delete(MPI_Fint h, int keyval, void *value, void *extra) {
    auto *fk = (fortran_keyval *)extra;
    MPI_Fint fkey = keyval, ierr = MPI_SUCCESS;
    MPI_Aint v = fortran_value(keyval, value);
    if (fk->mpi1) {
        MPI_Fint e = (MPI_Fint)fk->extra, v1 = (MPI_Fint)v;
        ((delete1_fn)fk->delete_fn)(&h, &fkey, &v1, &e, &ierr);
    } else {
        ((delete2_fn)fk->delete_fn)(&h, &fkey, &v, &fk->extra, &ierr);
    }
    if (ierr == MPI_SUCCESS) cell_free(value);
    return ierr;
}

int comm_copy(MPI_Comm old, int keyval, void *extra, void *in, void *out, int *flag) {
    return run_copy(PMPI_Comm_c2f(old), keyval, extra, in, out, flag);
}
int comm_delete(MPI_Comm c, int keyval, void *value, void *extra) {
    return run_delete(PMPI_Comm_c2f(c), keyval, value, extra);
}
int type_copy(MPI_Datatype old, int keyval, void *extra, void *in, void *out, int *flag) {
    return run_copy(PMPI_Type_c2f(old), keyval, extra, in, out, flag);
}
int type_delete(MPI_Datatype t, int keyval, void *value, void *extra) {
    return run_delete(PMPI_Type_c2f(t), keyval, value, extra);
}
int win_copy(MPI_Win old, int keyval, void *extra, void *in, void *out, int *flag) {
    return run_copy(PMPI_Win_c2f(old), keyval, extra, in, out, flag);
}
int win_delete(MPI_Win w, int keyval, void *value, void *extra) {
    return run_delete(PMPI_Win_c2f(w), keyval, value, extra);
}

int create_keyval(obj o, void *copy_fn, void *delete_fn, MPI_Aint extra, bool mpi1, int *keyval) {
    auto *fk = (fortran_keyval *)malloc(sizeof(fortran_keyval)); // upper memory: in the image
    if (!fk) return MPI_ERR_NO_MEM;
    *fk = {copy_fn, delete_fn, extra, mpi1};
    int rc;
    switch (o) {
    case obj::comm:
        rc = PMPI_Comm_create_keyval(comm_copy, comm_delete, keyval, fk);
        break;
    case obj::type:
        rc = PMPI_Type_create_keyval(type_copy, type_delete, keyval, fk);
        break;
    default:
        rc = PMPI_Win_create_keyval(win_copy, win_delete, keyval, fk);
        break;
    }
    if (rc != MPI_SUCCESS) free(fk);
    return rc;
}

} // namespace
} // namespace ghost::mpi

using namespace ghost::mpi;

// Every name a Fortran binding goes by: name, name_, name__, NAME and the pmpi_ ones; Open MPI's
// bindings also call each other through ompi_<x>_f, and its mpi_f08 module through MPI_<X>_f08.
#define GHOST_F_ALIAS(impl, sym, params)                                                           \
    extern "C" GHOST_EXPORT void sym params __attribute__((alias(#impl)));
#define GHOST_F_NAMES(impl, lo, UP, params)                                                        \
    GHOST_F_ALIAS(impl, mpi_##lo, params)                                                          \
    GHOST_F_ALIAS(impl, mpi_##lo##_, params)                                                       \
    GHOST_F_ALIAS(impl, mpi_##lo##__, params)                                                      \
    GHOST_F_ALIAS(impl, MPI_##UP, params)                                                          \
    GHOST_F_ALIAS(impl, pmpi_##lo, params)                                                         \
    GHOST_F_ALIAS(impl, pmpi_##lo##_, params)                                                      \
    GHOST_F_ALIAS(impl, pmpi_##lo##__, params)                                                     \
    GHOST_F_ALIAS(impl, PMPI_##UP, params)
#if defined(GHOST_MPI_MPICH)
#define GHOST_F_OMPI_NAMES(impl, lo, Mixed, params)
#else
#define GHOST_F_OMPI_NAMES(impl, lo, Mixed, params)                                                \
    GHOST_F_ALIAS(impl, ompi_##lo##_f, params)                                                     \
    GHOST_F_ALIAS(impl, MPI_##Mixed##_f, params)                                                   \
    GHOST_F_ALIAS(impl, MPI_##Mixed##_f08, params)                                                 \
    GHOST_F_ALIAS(impl, PMPI_##Mixed##_f, params)                                                  \
    GHOST_F_ALIAS(impl, PMPI_##Mixed##_f08, params)
#endif

#define GHOST_F_GET(lo, UP, Mixed, o)                                                              \
    extern "C" void ghost_f_##lo(MPI_Fint *h, MPI_Fint *keyval, MPI_Aint *value, MPI_Fint *flag,   \
                                 MPI_Fint *ierr) {                                                 \
        bool found = false;                                                                        \
        int rc = get_attr(o, *h, *keyval, value, &found);                                          \
        *flag = found ? kTrue : kFalse;                                                            \
        *ierr = rc;                                                                                \
    }                                                                                              \
    GHOST_F_NAMES(ghost_f_##lo, lo, UP,                                                            \
                  (MPI_Fint *, MPI_Fint *, MPI_Aint *, MPI_Fint *, MPI_Fint *))                    \
    GHOST_F_OMPI_NAMES(ghost_f_##lo, lo, Mixed,                                                    \
                       (MPI_Fint *, MPI_Fint *, MPI_Aint *, MPI_Fint *, MPI_Fint *))
#define GHOST_F_SET(lo, UP, Mixed, o)                                                              \
    extern "C" void ghost_f_##lo(MPI_Fint *h, MPI_Fint *keyval, MPI_Aint *value, MPI_Fint *ierr) { \
        *ierr = set_attr(o, *h, *keyval, *value);                                                  \
    }                                                                                              \
    GHOST_F_NAMES(ghost_f_##lo, lo, UP, (MPI_Fint *, MPI_Fint *, MPI_Aint *, MPI_Fint *))          \
    GHOST_F_OMPI_NAMES(ghost_f_##lo, lo, Mixed, (MPI_Fint *, MPI_Fint *, MPI_Aint *, MPI_Fint *))
// MPICH's mpi_f08 keyval calls would make a C keyval with the Fortran callbacks and then have the
// library call them through its internal proxies (MPII_Keyval_set_proxy); their callbacks take
// what MPI-2 Fortran ones take, so they are made here the same way. Their ierror is optional.
#if defined(GHOST_MPI_MPICH)
#define GHOST_F_MPICH_F08_NAMES(impl, lo, params)                                                  \
    GHOST_F_ALIAS(impl, mpi_##lo##_f08_, params)                                                   \
    GHOST_F_ALIAS(impl, pmpir_##lo##_f08_, params)
#else
#define GHOST_F_MPICH_F08_NAMES(impl, lo, params)
#endif
#define GHOST_F_KEYVAL(lo, UP, Mixed, o)                                                           \
    extern "C" void ghost_f_##lo(void *copy_fn, void *delete_fn, MPI_Fint *keyval,                 \
                                 MPI_Aint *extra, MPI_Fint *ierr) {                                \
        int k = MPI_KEYVAL_INVALID;                                                                \
        int rc = create_keyval(o, copy_fn, delete_fn, *extra, false, &k);                          \
        if (rc == MPI_SUCCESS) *keyval = k;                                                        \
        if (ierr) *ierr = rc;                                                                      \
    }                                                                                              \
    GHOST_F_NAMES(ghost_f_##lo, lo, UP, (void *, void *, MPI_Fint *, MPI_Aint *, MPI_Fint *))      \
    GHOST_F_OMPI_NAMES(ghost_f_##lo, lo, Mixed,                                                    \
                       (void *, void *, MPI_Fint *, MPI_Aint *, MPI_Fint *))                       \
    GHOST_F_MPICH_F08_NAMES(ghost_f_##lo, lo, (void *, void *, MPI_Fint *, MPI_Aint *, MPI_Fint *))

GHOST_F_GET(comm_get_attr, COMM_GET_ATTR, Comm_get_attr, obj::comm)
GHOST_F_GET(type_get_attr, TYPE_GET_ATTR, Type_get_attr, obj::type)
GHOST_F_GET(win_get_attr, WIN_GET_ATTR, Win_get_attr, obj::win)
GHOST_F_SET(comm_set_attr, COMM_SET_ATTR, Comm_set_attr, obj::comm)
GHOST_F_SET(type_set_attr, TYPE_SET_ATTR, Type_set_attr, obj::type)
GHOST_F_SET(win_set_attr, WIN_SET_ATTR, Win_set_attr, obj::win)
GHOST_F_KEYVAL(comm_create_keyval, COMM_CREATE_KEYVAL, Comm_create_keyval, obj::comm)
GHOST_F_KEYVAL(type_create_keyval, TYPE_CREATE_KEYVAL, Type_create_keyval, obj::type)
GHOST_F_KEYVAL(win_create_keyval, WIN_CREATE_KEYVAL, Win_create_keyval, obj::win)

// The MPI-1 forms: INTEGER values.
extern "C" void ghost_f_attr_get(MPI_Fint *comm, MPI_Fint *keyval, MPI_Fint *value, MPI_Fint *flag,
                                 MPI_Fint *ierr) {
    bool found = false;
    MPI_Aint v = 0;
    *ierr = get_attr(obj::comm, *comm, *keyval, &v, &found);
    *flag = found ? kTrue : kFalse;
    if (found) *value = (MPI_Fint)v;
}
GHOST_F_NAMES(ghost_f_attr_get, attr_get, ATTR_GET,
              (MPI_Fint *, MPI_Fint *, MPI_Fint *, MPI_Fint *, MPI_Fint *))
GHOST_F_OMPI_NAMES(ghost_f_attr_get, attr_get, Attr_get,
                   (MPI_Fint *, MPI_Fint *, MPI_Fint *, MPI_Fint *, MPI_Fint *))

extern "C" void ghost_f_attr_put(MPI_Fint *comm, MPI_Fint *keyval, MPI_Fint *value,
                                 MPI_Fint *ierr) {
    *ierr = set_attr(obj::comm, *comm, *keyval, *value);
}
GHOST_F_NAMES(ghost_f_attr_put, attr_put, ATTR_PUT,
              (MPI_Fint *, MPI_Fint *, MPI_Fint *, MPI_Fint *))
GHOST_F_OMPI_NAMES(ghost_f_attr_put, attr_put, Attr_put,
                   (MPI_Fint *, MPI_Fint *, MPI_Fint *, MPI_Fint *))

extern "C" void ghost_f_keyval_create(void *copy_fn, void *delete_fn, MPI_Fint *keyval,
                                      MPI_Fint *extra, MPI_Fint *ierr) {
    int k = MPI_KEYVAL_INVALID;
    *ierr = create_keyval(obj::comm, copy_fn, delete_fn, *extra, true, &k);
    if (*ierr == MPI_SUCCESS) *keyval = k;
}
GHOST_F_NAMES(ghost_f_keyval_create, keyval_create, KEYVAL_CREATE,
              (void *, void *, MPI_Fint *, MPI_Fint *, MPI_Fint *))
GHOST_F_OMPI_NAMES(ghost_f_keyval_create, keyval_create, Keyval_create,
                   (void *, void *, MPI_Fint *, MPI_Fint *, MPI_Fint *))

#if !defined(GHOST_MPI_MPICH)
// Open MPI keeps the predefined Fortran callbacks in libmpi itself (the stub here). Their Fortran
// names are its C macros' names (for the C callbacks, not used in this file).
#undef MPI_NULL_COPY_FN
#undef MPI_DUP_FN
#undef MPI_NULL_DELETE_FN
#undef MPI_COMM_NULL_COPY_FN
#undef MPI_COMM_DUP_FN
#undef MPI_COMM_NULL_DELETE_FN
#undef MPI_TYPE_NULL_COPY_FN
#undef MPI_TYPE_DUP_FN
#undef MPI_TYPE_NULL_DELETE_FN
#undef MPI_WIN_NULL_COPY_FN
#undef MPI_WIN_DUP_FN
#undef MPI_WIN_NULL_DELETE_FN
extern "C" void ghost_f_null_copy1(MPI_Fint *, MPI_Fint *, MPI_Fint *, MPI_Fint *, MPI_Fint *,
                                   MPI_Fint *flag, MPI_Fint *ierr) {
    *flag = kFalse;
    *ierr = MPI_SUCCESS;
}
extern "C" void ghost_f_dup1(MPI_Fint *, MPI_Fint *, MPI_Fint *, MPI_Fint *in, MPI_Fint *out,
                             MPI_Fint *flag, MPI_Fint *ierr) {
    *out = *in;
    *flag = kTrue;
    *ierr = MPI_SUCCESS;
}
extern "C" void ghost_f_null_copy2(MPI_Fint *, MPI_Fint *, MPI_Aint *, MPI_Aint *, MPI_Aint *,
                                   MPI_Fint *flag, MPI_Fint *ierr) {
    *flag = kFalse;
    *ierr = MPI_SUCCESS;
}
extern "C" void ghost_f_dup2(MPI_Fint *, MPI_Fint *, MPI_Aint *, MPI_Aint *in, MPI_Aint *out,
                             MPI_Fint *flag, MPI_Fint *ierr) {
    *out = *in;
    *flag = kTrue;
    *ierr = MPI_SUCCESS;
}
extern "C" void ghost_f_null_delete(void *, void *, void *, void *, MPI_Fint *ierr) {
    *ierr = MPI_SUCCESS;
}
#define GHOST_F_CALLBACK(impl, lo, UP, params)                                                     \
    GHOST_F_ALIAS(impl, mpi_##lo, params)                                                          \
    GHOST_F_ALIAS(impl, mpi_##lo##_, params)                                                       \
    GHOST_F_ALIAS(impl, mpi_##lo##__, params)                                                      \
    GHOST_F_ALIAS(impl, MPI_##UP, params)                                                          \
    GHOST_F_ALIAS(impl, ompi_##lo##_f, params)
#define GHOST_COPY1                                                                                \
    (MPI_Fint *, MPI_Fint *, MPI_Fint *, MPI_Fint *, MPI_Fint *, MPI_Fint *, MPI_Fint *)
#define GHOST_COPY2                                                                                \
    (MPI_Fint *, MPI_Fint *, MPI_Aint *, MPI_Aint *, MPI_Aint *, MPI_Fint *, MPI_Fint *)
#define GHOST_DELETE (void *, void *, void *, void *, MPI_Fint *)
GHOST_F_CALLBACK(ghost_f_null_copy1, null_copy_fn, NULL_COPY_FN, GHOST_COPY1)
GHOST_F_CALLBACK(ghost_f_dup1, dup_fn, DUP_FN, GHOST_COPY1)
GHOST_F_CALLBACK(ghost_f_null_delete, null_delete_fn, NULL_DELETE_FN, GHOST_DELETE)
// The MPI-2 ones, for each object kind.
#define GHOST_F_CALLBACKS(lo, UP)                                                                  \
    GHOST_F_CALLBACK(ghost_f_null_copy2, lo##_null_copy_fn, UP##_NULL_COPY_FN, GHOST_COPY2)        \
    GHOST_F_CALLBACK(ghost_f_dup2, lo##_dup_fn, UP##_DUP_FN, GHOST_COPY2)                          \
    GHOST_F_CALLBACK(ghost_f_null_delete, lo##_null_delete_fn, UP##_NULL_DELETE_FN, GHOST_DELETE)
GHOST_F_CALLBACKS(comm, COMM)
GHOST_F_CALLBACKS(type, TYPE)
GHOST_F_CALLBACKS(win, WIN)

namespace {
// A predefined object of Open MPI: the stub's (the layer does not link against it).
template <class H> H predefined(const char *symbol) {
    return (H)dlsym(RTLD_DEFAULT, symbol);
}
} // namespace

// Error handlers made from Fortran (Open MPI makes them with an internal call that marks them
// Fortran's): a C handler that finds the program's Fortran one through the handler the object
// has now, and calls it with Fortran's conventions (the handle and the code, by reference).
namespace {
std::mutex g_errh_mu;
std::unordered_map<uintptr_t, void *> *g_errh_fns; // upper handler -> Fortran subroutine

using fortran_errh = void (*)(MPI_Fint *, MPI_Fint *);

void *fortran_errh_of(MPI_Errhandler h) {
    std::lock_guard<std::mutex> g(g_errh_mu);
    if (!g_errh_fns) return nullptr;
    auto it = g_errh_fns->find((uintptr_t)h);
    return it == g_errh_fns->end() ? nullptr : it->second;
}

// The C handler of an object kind: the object's current handler names the Fortran subroutine.
template <class H, int (*get_errh)(H, MPI_Errhandler *), MPI_Fint (*to_fortran)(H)>
void call_fortran_errh(H *object, int *code, ...) {
    MPI_Errhandler h = nullptr; // (MPI_ERRHANDLER_NULL is the stub's object: not linked)
    get_errh(*object, &h);
    void *fn = fortran_errh_of(h);
    PMPI_Errhandler_free(&h);
    MPI_Fint fo = to_fortran(*object), fcode = *code;
    if (fn) ((fortran_errh)fn)(&fo, &fcode);
}
constexpr auto comm_errh = call_fortran_errh<MPI_Comm, PMPI_Comm_get_errhandler, PMPI_Comm_c2f>;
constexpr auto win_errh = call_fortran_errh<MPI_Win, PMPI_Win_get_errhandler, PMPI_Win_c2f>;
constexpr auto file_errh = call_fortran_errh<MPI_File, PMPI_File_get_errhandler, PMPI_File_c2f>;

void note_errh(int rc, MPI_Errhandler h, void *fn, MPI_Fint *out, MPI_Fint *ierr) {
    *ierr = rc;
    if (rc != MPI_SUCCESS) return;
    {
        std::lock_guard<std::mutex> g(g_errh_mu);
        if (!g_errh_fns) g_errh_fns = new std::unordered_map<uintptr_t, void *>();
        (*g_errh_fns)[(uintptr_t)h] = fn;
    }
    *out = PMPI_Errhandler_c2f(h);
}
} // namespace

#define GHOST_F_ERRH(lo, UP, Mixed, Kind, tramp)                                                   \
    extern "C" void ghost_f_##lo(void *fn, MPI_Fint *out, MPI_Fint *ierr) {                        \
        MPI_Errhandler h = nullptr; /* (MPI_ERRHANDLER_NULL is the stub's object: not linked) */   \
        int rc = PMPI_##Kind##_create_errhandler(tramp, &h);                                       \
        note_errh(rc, h, fn, out, ierr);                                                           \
    }                                                                                              \
    GHOST_F_NAMES(ghost_f_##lo, lo, UP, (void *, MPI_Fint *, MPI_Fint *))                          \
    GHOST_F_OMPI_NAMES(ghost_f_##lo, lo, Mixed, (void *, MPI_Fint *, MPI_Fint *))
GHOST_F_ERRH(comm_create_errhandler, COMM_CREATE_ERRHANDLER, Comm_create_errhandler, Comm,
             comm_errh)
GHOST_F_ERRH(win_create_errhandler, WIN_CREATE_ERRHANDLER, Win_create_errhandler, Win, win_errh)
GHOST_F_ERRH(file_create_errhandler, FILE_CREATE_ERRHANDLER, File_create_errhandler, File,
             file_errh)
// The deprecated form (communicators).
GHOST_F_NAMES(ghost_f_comm_create_errhandler, errhandler_create, ERRHANDLER_CREATE,
              (void *, MPI_Fint *, MPI_Fint *))
GHOST_F_OMPI_NAMES(ghost_f_comm_create_errhandler, errhandler_create, Errhandler_create,
                   (void *, MPI_Fint *, MPI_Fint *))

// Open MPI's string helpers, called by its bindings of every call with a string argument
// (MPI_COMM_SET_NAME, MPI_INFO_SET, MPI_GET_PROCESSOR_NAME, MPI_ERROR_STRING, ...): a Fortran
// string is blank-padded, with no terminator.
extern "C" GHOST_EXPORT int ompi_fortran_string_f2c(const char *fstr, int len, char **cstr) {
    int first = 0, last = len - 1;
    while (first < len && fstr[first] == ' ')
        first++;
    while (last >= first && fstr[last] == ' ')
        last--;
    int n = last >= first ? last - first + 1 : 0;
    char *s = (char *)malloc((size_t)n + 1);
    if (!s) return MPI_ERR_NO_MEM;
    memcpy(s, fstr + first, (size_t)n);
    s[n] = '\0';
    *cstr = s;
    return MPI_SUCCESS;
}

extern "C" GHOST_EXPORT int ompi_fortran_string_c2f(const char *cstr, char *fstr, int len) {
    int n = (int)strnlen(cstr, (size_t)(len > 0 ? len : 0));
    memcpy(fstr, cstr, (size_t)n);
    memset(fstr + n, ' ', (size_t)(len - n));
    return MPI_SUCCESS;
}

// Open MPI's bindings report their own argument errors through this (on MPI_COMM_WORLD, whose
// structure in the upper half is the stub's): the world's handler, as the library would call it.
extern "C" GHOST_EXPORT int ompi_errhandler_invoke(void *, void *, int, int err, const char *) {
    PMPI_Comm_call_errhandler(predefined<MPI_Comm>("ompi_mpi_comm_world"), err);
    return err;
}

// MPI_TYPE_MATCH_SIZE reads the library's table of predefined types. The candidates, in the order
// in which Open MPI 4.1 answers (MPI_INTEGER before MPI_INTEGER4, MPI_REAL8 before
// MPI_DOUBLE_PRECISION; no 2-byte real, no 16-byte integer), the first whose size matches.
extern "C" void ghost_f_type_match_size(MPI_Fint *typeclass, MPI_Fint *size, MPI_Fint *type,
                                        MPI_Fint *ierr) {
    static const char *const integers[] = {"ompi_mpi_integer1", "ompi_mpi_integer2",
                                           "ompi_mpi_integer", "ompi_mpi_integer4",
                                           "ompi_mpi_integer8"};
    static const char *const reals[] = {"ompi_mpi_real", "ompi_mpi_real4", "ompi_mpi_real8",
                                        "ompi_mpi_dblprec", "ompi_mpi_real16"};
    static const char *const complexes[] = {"ompi_mpi_cplex", "ompi_mpi_complex8",
                                            "ompi_mpi_complex16", "ompi_mpi_dblcplex",
                                            "ompi_mpi_complex32"};
    const char *const *c = nullptr;
    size_t n = 0;
    if (*typeclass == MPI_TYPECLASS_INTEGER) {
        c = integers;
        n = sizeof integers / sizeof *integers;
    } else if (*typeclass == MPI_TYPECLASS_REAL) {
        c = reals;
        n = sizeof reals / sizeof *reals;
    } else if (*typeclass == MPI_TYPECLASS_COMPLEX) {
        c = complexes;
        n = sizeof complexes / sizeof *complexes;
    }
    for (size_t i = 0; i < n; i++) {
        int sz = -1;
        MPI_Datatype t = predefined<MPI_Datatype>(c[i]);
        if (t && PMPI_Type_size(t, &sz) == MPI_SUCCESS && sz == *size) {
            *type = PMPI_Type_c2f(t);
            *ierr = MPI_SUCCESS;
            return;
        }
    }
    *type = PMPI_Type_c2f(predefined<MPI_Datatype>("ompi_mpi_datatype_null"));
    PMPI_Comm_call_errhandler(predefined<MPI_Comm>("ompi_mpi_comm_world"),
                              MPI_ERR_ARG); // as the library: fatal by default
    *ierr = MPI_ERR_ARG;
}
GHOST_F_NAMES(ghost_f_type_match_size, type_match_size, TYPE_MATCH_SIZE,
              (MPI_Fint *, MPI_Fint *, MPI_Fint *, MPI_Fint *))
GHOST_F_OMPI_NAMES(ghost_f_type_match_size, type_match_size, Type_match_size,
                   (MPI_Fint *, MPI_Fint *, MPI_Fint *, MPI_Fint *))
#else
// MPICH's mpi_f08 bindings read and write attributes through these (typed: 0 a pointer, 1 an
// INTEGER(MPI_ADDRESS_KIND), 3 an INTEGER).
namespace {
constexpr int kAttrPtr = 0, kAttrInt = 3;

int mpii_get(obj o, MPI_Fint h, int keyval, void *out, int *flag, int type) {
    if (type == kAttrPtr) {
        switch (o) {
        case obj::comm:
            return PMPI_Comm_get_attr(PMPI_Comm_f2c(h), keyval, out, flag);
        case obj::type:
            return PMPI_Type_get_attr(PMPI_Type_f2c(h), keyval, out, flag);
        default:
            return PMPI_Win_get_attr(PMPI_Win_f2c(h), keyval, out, flag);
        }
    }
    bool found = false;
    MPI_Aint v = 0;
    int rc = get_attr(o, h, keyval, &v, &found);
    *flag = found;
    if (found) {
        if (type == kAttrInt)
            *(MPI_Fint *)out = (MPI_Fint)v;
        else
            *(MPI_Aint *)out = v;
    }
    return rc;
}

int mpii_set(obj o, MPI_Fint h, int keyval, void *value, int type) {
    if (type != kAttrPtr) return set_attr(o, h, keyval, (MPI_Aint)(intptr_t)value);
    switch (o) {
    case obj::comm:
        return PMPI_Comm_set_attr(PMPI_Comm_f2c(h), keyval, value);
    case obj::type:
        return PMPI_Type_set_attr(PMPI_Type_f2c(h), keyval, value);
    default:
        return PMPI_Win_set_attr(PMPI_Win_f2c(h), keyval, value);
    }
}
} // namespace

extern "C" GHOST_EXPORT int MPII_Comm_get_attr(MPI_Comm c, int keyval, void *out, int *flag,
                                               int type) {
    return mpii_get(obj::comm, PMPI_Comm_c2f(c), keyval, out, flag, type);
}
extern "C" GHOST_EXPORT int MPII_Type_get_attr(MPI_Datatype t, int keyval, void *out, int *flag,
                                               int type) {
    return mpii_get(obj::type, PMPI_Type_c2f(t), keyval, out, flag, type);
}
extern "C" GHOST_EXPORT int MPII_Win_get_attr(MPI_Win w, int keyval, void *out, int *flag,
                                              int type) {
    return mpii_get(obj::win, PMPI_Win_c2f(w), keyval, out, flag, type);
}
extern "C" GHOST_EXPORT int MPII_Comm_set_attr(MPI_Comm c, int keyval, void *value, int type) {
    return mpii_set(obj::comm, PMPI_Comm_c2f(c), keyval, value, type);
}
extern "C" GHOST_EXPORT int MPII_Type_set_attr(MPI_Datatype t, int keyval, void *value, int type) {
    return mpii_set(obj::type, PMPI_Type_c2f(t), keyval, value, type);
}
extern "C" GHOST_EXPORT int MPII_Win_set_attr(MPI_Win w, int keyval, void *value, int type) {
    return mpii_set(obj::win, PMPI_Win_c2f(w), keyval, value, type);
}
#endif
