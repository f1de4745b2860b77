// SPDX-License-Identifier: Apache-2.0
// Attribute keyvals and the attributes set with them, carried across a restart.
//
// A keyval is a number the lower half hands out; a fresh lower half (a restart) hands out others,
// so the application holds numbers of ours (kKeyvalBase + index in the table below) and every
// call that takes one translates it (gen_wrappers.py: KEYVAL_*). Numbers the table does not know
// (the predefined MPI_TAG_UB, MPI_WTIME_IS_GLOBAL, ..., MPI_KEYVAL_INVALID) pass through.
// At a checkpoint the attributes are read back from the lower half, for every live communicator,
// datatype and window and every live keyval of its kind, however they got there (set by the program
// or copied by a copy callback in MPI_Comm_dup); after the replay the keyvals are made again in
// their creation order, then the attributes are set again (no callback runs: the program's copies
// and deletions happened before the checkpoint). The table and the values are upper memory, so part
// of the image.
#include <atomic>
#include <cstdio>
#include <mutex>
#include <vector>

#include "keyvals.h"
#include "lower_api.h"
#include "wrapper_support.h"

namespace ghost::mpi {
namespace {

constexpr int kKeyvalBase = 0x3a000000;
constexpr size_t kMaxKeyvals = 16384;

struct keyval_entry {
    kind k;
    int create_fn; // index of the generated function that made it (its lower call makes it again)
    int lower;
    void *copy_fn, *delete_fn, *extra; // as the program passed them (upper)
    bool freed;                        // a freed slot is used again by the next creation
};

// A fixed table, so that readers take no lock (a thread may be stopped for a checkpoint anywhere
// in the upper half): entries below g_used are complete; creations and frees serialise on g_kv_mu.
keyval_entry g_table[kMaxKeyvals];
std::atomic<size_t> g_used;
std::atomic<bool> g_overflow; // a creation found the table full: checkpoints are refused
std::mutex g_kv_mu;

keyval_entry *entry_of(int upper) {
    if (upper < kKeyvalBase) return nullptr;
    size_t i = (size_t)(upper - kKeyvalBase);
    return i < g_used.load(std::memory_order_acquire) ? &g_table[i] : nullptr;
}

bool is_freed(const keyval_entry &e) {
    return __atomic_load_n(&e.freed, __ATOMIC_ACQUIRE);
}

struct saved_attr {
    kind k;
    uintptr_t object; // upper handle
    int keyval;       // upper
    void *value;
};
std::vector<saved_attr> *g_saved;
std::vector<freed_keyval_attr> *g_freed_attrs; // listed at quiesce
constexpr int kSlots = 3;                      // communicators, datatypes, windows
std::vector<uintptr_t> *g_objects[kSlots];     // the live ones (upper handles), listed at quiesce

int slot(kind k) {
    return k == kind::comm ? 0 : k == kind::datatype ? 1 : 2;
}

kind kind_of_slot(int s) {
    return s == 0 ? kind::comm : s == 1 ? kind::datatype : kind::win;
}

bool alive(kind k, uintptr_t o) {
    vobj *v = k == kind::comm       ? decode<kind::comm>((MPI_Comm)o)
              : k == kind::datatype ? decode<kind::datatype>((MPI_Datatype)o)
                                    : decode<kind::win>((MPI_Win)o);
    return !v || (v->magic == kVobjMagic && v->k == k); // MPICH's predefined ones have no vobj
}

// MPI_{Comm,Type,Win}_get_attr / _set_attr of the lower half on object o (upper handle).
int lower_get_attr(void *fn, int s, uintptr_t o, int keyval, void *value, int *flag) {
    if (s == 0)
        return ((int (*)(MPI_Comm, int, void *, int *))fn)(to_lower<kind::comm>((MPI_Comm)o),
                                                           keyval, value, flag);
    if (s == 1)
        return ((int (*)(MPI_Datatype, int, void *, int *))fn)(
            to_lower<kind::datatype>((MPI_Datatype)o), keyval, value, flag);
    return ((int (*)(MPI_Win, int, void *, int *))fn)(to_lower<kind::win>((MPI_Win)o), keyval,
                                                      value, flag);
}

int lower_set_attr(void *fn, int s, uintptr_t o, int keyval, void *value) {
    if (s == 0)
        return ((int (*)(MPI_Comm, int, void *))fn)(to_lower<kind::comm>((MPI_Comm)o), keyval,
                                                    value);
    if (s == 1)
        return ((int (*)(MPI_Datatype, int, void *))fn)(to_lower<kind::datatype>((MPI_Datatype)o),
                                                        keyval, value);
    return ((int (*)(MPI_Win, int, void *))fn)(to_lower<kind::win>((MPI_Win)o), keyval, value);
}

} // namespace

int keyval_adopt(kind k, int create_fn, int lower, void *copy_fn, void *delete_fn, void *extra) {
    std::lock_guard<std::mutex> g(g_kv_mu);
    // A freed keyval lives on in the attributes that use it (MPI-1 5.7.1): its number still names
    // it in their callbacks, in MPI_Attr_delete and in further frees (MPICH counts references).
    // A freed slot is known dead once the lower library hands its lower number out again: that
    // slot is used again; else a new one (any freed one only when the table is full).
    size_t n = g_used.load(std::memory_order_relaxed), i = 0;
    while (i < n && !(is_freed(g_table[i]) && g_table[i].lower == lower))
        i++;
    if (i == n && n == kMaxKeyvals) {
        i = 0;
        while (i < n && !is_freed(g_table[i]))
            i++;
    }
    if (i == kMaxKeyvals) {
        g_overflow = true;
        return lower;
    }
    // A reused slot: its fields first, then it is marked in use (readers take no lock).
    keyval_entry &e = g_table[i];
    __atomic_store_n(&e.freed, true, __ATOMIC_RELAXED);
    e.k = k;
    e.create_fn = create_fn;
    __atomic_store_n(&e.lower, lower, __ATOMIC_RELAXED);
    e.copy_fn = copy_fn;
    e.delete_fn = delete_fn;
    e.extra = extra;
    __atomic_store_n(&e.freed, false, __ATOMIC_RELEASE);
    if (i == n) g_used.store(n + 1, std::memory_order_release);
    return kKeyvalBase + (int)i;
}

// Freed keyvals translate too: the lower library decides whether the number is still valid.
int keyval_lower(int upper) {
    keyval_entry *e = entry_of(upper);
    return e ? __atomic_load_n(&e->lower, __ATOMIC_ACQUIRE) : upper;
}

// A live keyval first; else the newest freed one with that lower number (its attributes'
// callbacks still run, with the program's number).
int keyval_upper(int lower) {
    size_t n = g_used.load(std::memory_order_acquire);
    int freed = -1;
    for (size_t i = 0; i < n; i++)
        if (__atomic_load_n(&g_table[i].lower, __ATOMIC_ACQUIRE) == lower) {
            if (!is_freed(g_table[i])) return kKeyvalBase + (int)i;
            freed = kKeyvalBase + (int)i;
        }
    return freed >= 0 ? freed : lower;
}

void keyval_drop(int upper) {
    std::lock_guard<std::mutex> g(g_kv_mu);
    if (keyval_entry *e = entry_of(upper)) __atomic_store_n(&e->freed, true, __ATOMIC_RELEASE);
}

bool keyval_freed(int upper) {
    keyval_entry *e = entry_of(upper);
    return e && is_freed(*e);
}

bool keyvals_overflowed() {
    return g_overflow.load();
}

void attrs_prepare(const std::vector<uintptr_t> &comms, const std::vector<uintptr_t> &types,
                   const std::vector<uintptr_t> &wins,
                   const std::vector<freed_keyval_attr> &freed) {
    if (!g_freed_attrs) g_freed_attrs = new std::vector<freed_keyval_attr>();
    *g_freed_attrs = freed;
    size_t nkv[kSlots] = {0, 0, 0}, n = g_used.load(std::memory_order_acquire);
    for (size_t i = 0; i < n; i++)
        if (!is_freed(g_table[i])) nkv[slot(g_table[i].k)]++;
    for (int s = 0; s < kSlots; s++) {
        if (!g_objects[s]) g_objects[s] = new std::vector<uintptr_t>();
        *g_objects[s] = s == 0 ? comms : s == 1 ? types : wins;
    }
    if (!g_saved) g_saved = new std::vector<saved_attr>();
    g_saved->clear();
    // Room for every (object, keyval) pair, plus some for keyvals made meanwhile (checked).
    g_saved->reserve(comms.size() * nkv[0] + types.size() * nkv[1] + wins.size() * nkv[2] +
                     freed.size() + 64);
}

int attrs_read(uintptr_t fs, char *why, size_t why_len) {
    if (!g_saved) return 0;
    size_t n = g_used.load(std::memory_order_acquire);
    void *get_fn[kSlots] = {lower_fn("MPI_Comm_get_attr"), lower_fn("MPI_Type_get_attr"),
                            lower_fn("MPI_Win_get_attr")};
    for (size_t i = 0; i < n; i++) {
        const keyval_entry &e = g_table[i];
        if (is_freed(e)) continue;
        int s = slot(e.k);
        if (!get_fn[s] || !g_objects[s]) continue;
        for (uintptr_t o : *g_objects[s]) {
            // Listed at quiesce: an object a thread freed since (a checkpoint of one rank, not of
            // the quiesced job) is left out.
            if (!alive(kind_of_slot(s), o)) continue;
            void *value = nullptr;
            int flag = 0, rc;
            {
                lower_call lc(fs);
                rc = lower_get_attr(get_fn[s], s, o, e.lower, &value, &flag);
            }
            if (rc != MPI_SUCCESS || !flag) continue;
            if (g_saved->size() == g_saved->capacity()) { // no allocation here
                snprintf(why, why_len, "more attributes than room was made for");
                return -1;
            }
            g_saved->push_back({e.k, o, kKeyvalBase + (int)i, value});
        }
    }
    // Attributes of freed keyvals: only where one was set and not deleted (a freed keyval the
    // lower library has let go of may not be asked about: its error handler would run).
    for (const freed_keyval_attr &f : *g_freed_attrs) { // (attrs_prepare made it)
        keyval_entry *e = entry_of(f.keyval);
        int s = slot(f.k);
        if (!e || !is_freed(*e) || e->k != f.k || !get_fn[s] || !alive(f.k, f.object)) continue;
        void *value = nullptr;
        int flag = 0, rc;
        {
            lower_call lc(fs);
            rc = lower_get_attr(get_fn[s], s, f.object, e->lower, &value, &flag);
        }
        if (rc != MPI_SUCCESS || !flag) continue;
        if (g_saved->size() == g_saved->capacity()) {
            snprintf(why, why_len, "more attributes than room was made for");
            return -1;
        }
        g_saved->push_back({f.k, f.object, f.keyval, value});
    }
    return 0;
}

int attrs_after_restart(uintptr_t fs, char *why, size_t why_len) {
    size_t n = g_used.load(std::memory_order_acquire);
    // A freed keyval is made again if an attribute of it is to be set again.
    auto needed = [&](size_t i) {
        if (!is_freed(g_table[i])) return true;
        if (g_saved)
            for (const saved_attr &a : *g_saved)
                if (a.keyval == kKeyvalBase + (int)i) return true;
        return false;
    };
    for (size_t i = 0; i < n; i++) {
        keyval_entry &e = g_table[i];
        if (!needed(i)) continue;
        void *copy = e.k == kind::comm
                         ? (void *)wrap_comm_copy((MPI_Comm_copy_attr_function *)e.copy_fn)
                     : e.k == kind::datatype
                         ? (void *)wrap_type_copy((MPI_Type_copy_attr_function *)e.copy_fn)
                         : (void *)wrap_win_copy((MPI_Win_copy_attr_function *)e.copy_fn);
        void *del = e.k == kind::comm
                        ? (void *)wrap_comm_delete((MPI_Comm_delete_attr_function *)e.delete_fn)
                    : e.k == kind::datatype
                        ? (void *)wrap_type_delete((MPI_Type_delete_attr_function *)e.delete_fn)
                        : (void *)wrap_win_delete((MPI_Win_delete_attr_function *)e.delete_fn);
        int lower = 0, rc;
        {
            lower_call lc(fs);
            rc = ((int (*)(void *, void *, int *, void *))g_fns[e.create_fn])(copy, del, &lower,
                                                                              e.extra);
        }
        if (rc != MPI_SUCCESS) {
            snprintf(why, why_len, "cannot make an attribute keyval again (%s)",
                     g_fn_names[e.create_fn]);
            return -1;
        }
        e.lower = lower;
    }
    if (!g_saved) return 0;
    void *set_fn[kSlots] = {lower_fn("MPI_Comm_set_attr"), lower_fn("MPI_Type_set_attr"),
                            lower_fn("MPI_Win_set_attr")};
    for (const saved_attr &a : *g_saved) {
        int s = slot(a.k);
        keyval_entry *e = entry_of(a.keyval);
        if (!e || !set_fn[s]) continue;
        int rc;
        {
            lower_call lc(fs);
            rc = lower_set_attr(set_fn[s], s, a.object, e->lower, a.value);
        }
        if (rc != MPI_SUCCESS) {
            snprintf(why, why_len, "cannot set an attribute (keyval %d) on a %s again", a.keyval,
                     kind_name(a.k));
            return -1;
        }
    }
    void *free_fn[kSlots] = {lower_fn("MPI_Comm_free_keyval"), lower_fn("MPI_Type_free_keyval"),
                             lower_fn("MPI_Win_free_keyval")};
    for (size_t i = 0; i < n; i++) {
        keyval_entry &e = g_table[i];
        if (!is_freed(e) || !needed(i)) continue;
        int lower = e.lower, rc = MPI_ERR_INTERN; // e.lower stays: the attributes' callbacks
        if (void *fn = free_fn[slot(e.k)]) {
            lower_call lc(fs);
            rc = ((int (*)(int *))fn)(&lower);
        }
        if (rc != MPI_SUCCESS) {
            snprintf(why, why_len, "cannot free an attribute keyval again (%s)",
                     g_fn_names[e.create_fn]);
            return -1;
        }
    }
    g_saved->clear();
    return 0;
}

} // namespace ghost::mpi
