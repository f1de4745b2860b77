// SPDX-License-Identifier: Apache-2.0
// The upper half's view of the lower half: the function table, per-thread lower TLS, and the scope
// that enters the lower half around one call.
#pragma once
#include <cstddef>
#include <cstdint>

#include "fs.h"
#include "handoff.h"

namespace ghost::mpi {

extern void *const *g_fns; // lower entry points, generator order
extern ghost_handoff g_handoff;

// This thread's lower thread pointer; 0 until the thread first enters MPI (initial-exec TLS: one
// load).
extern __thread uintptr_t t_lower_fs __attribute__((tls_model("initial-exec")));
// The lower half's generation t_lower_fs belongs to: a staying rank of a migration drops its lower
// half in place while its other threads hold TCBs of it (a restored rank's threads forget theirs
// in thread_after_restore instead).
extern __thread uint32_t t_lower_gen __attribute__((tls_model("initial-exec")));
extern uint32_t g_generation;

inline void set_thread_lower_fs(uintptr_t fs) {
    t_lower_fs = fs;
    t_lower_gen = __atomic_load_n(&g_generation, __ATOMIC_ACQUIRE);
}

// Gives the calling thread its own lower TLS (a parked lower thread's TCB); aborts with a one-line
// message when the lower half is not running (not an MPI process, or start-up failed).
uintptr_t acquire_lower_fs();

// Puts the trampoline in front of the signal handlers installed before the layer started (a
// process that loads MPI late, e.g. Python with mpi4py); the ghost agent's handlers stay direct.
void signals_adopt_installed();

// Upper thread pointer of the upper thread currently borrowing lower TCB `lower_fs` (the
// spawner's included, while a thread takes its lower TLS); 0 if none (a lower helper thread).
// Async-signal-safe, no TLS.
uintptr_t upper_fs_for(uintptr_t lower_fs);

// Whether thread pointer `fs` is an upper thread's: 1 yes, 0 no (a lower TCB), -1 unknown. Every
// upper thread's static TLS holds a mark at a fixed distance from its thread pointer; a lower TCB
// holds the lower libraries' TLS there. Unknown when the mark lies too far from the thread pointer
// to be read safely on a lower thread's stack (a program with large TLS of its own).
// Async-signal-safe, no TLS of the caller's.
int fs_is_upper(uintptr_t fs);

// Enters the lower half for the lifetime of the object. Not re-entrant on purpose: callbacks from
// the lower half switch back with callback_scope. This thread's lower TLS, acquiring it (and
// starting the lower half, if a constructor calls MPI before ours ran) on first use. Wrappers call
// it before translating handles.
__attribute__((always_inline)) inline uintptr_t thread_lower_fs() {
    uintptr_t l = t_lower_fs;
    if (__builtin_expect(l == 0 || t_lower_gen != __atomic_load_n(&g_generation, __ATOMIC_RELAXED),
                         0))
        l = acquire_lower_fs();
    return l;
}

// When this thread's last poll found nothing (p2p.cpp, "polls without FSGSBASE"), or 0: any
// entry into the lower half clears it, so that only polls in a row, nothing else entering
// between them, are paced.
extern __thread uint64_t t_empty_poll_ns __attribute__((tls_model("initial-exec")));

struct lower_call {
    uintptr_t upper;
    __attribute__((always_inline)) lower_call() : lower_call(thread_lower_fs()) {}
    __attribute__((always_inline)) explicit lower_call(uintptr_t l) {
        t_empty_poll_ns = 0;
        upper = current_fs();
        write_fs(l);
    }
    __attribute__((always_inline)) ~lower_call() { write_fs(upper); }
    lower_call(const lower_call &) = delete;
    lower_call &operator=(const lower_call &) = delete;
};

// Upper code called back from the lower half (user ops, error handlers, attribute callbacks) runs
// in this scope: upper FS on entry, the lower FS restored on exit.
struct callback_scope {
    uintptr_t lower;
    bool ok;
    __attribute__((always_inline)) callback_scope() {
        // The lower TCB's own self-pointer (%fs:0, glibc's tcbhead_t.tcb), not the register: no
        // arch_prctl(ARCH_GET_FS) without FSGSBASE.
        lower = current_fs();
        uintptr_t u = upper_fs_for(lower);
        ok = u != 0;
        if (ok) write_fs(u);
    }
    __attribute__((always_inline)) ~callback_scope() {
        if (ok) write_fs(lower);
    }
};

// Generated per flavour: registers predefined objects; false with a reason on mismatch.
bool flavour_bind(const ghost_handoff *h, const char **why);
extern const char *const g_flavour_name;
extern const char *const g_fn_names[];
extern const size_t g_nfns;

// Restart onto a fresh lower half (upper/restart.cpp drives it). lower_forget_thread: in each
// restored thread before it runs (only its own TLS and an atomic store): its lower TLS is void and
// its next MPI call waits for lower_restart_done. lower_restart: starts the lower half with `envp`,
// re-binds the table and predefined handles (`inherited`: the new launcher's descriptors); *init_fs
// is the lower TCB to call MPI_Init_thread on (later handed to the thread that started the first
// lower half). False with a reason.
void lower_forget_thread();
// After each successful MPI_Init: notes the lower half's choice of transport, which every fresh
// lower half after it is asked to make again (Open MPI's PML and MTL; nothing with MPICH).
void note_transport_choice();
bool lower_restart(char *const *envp, const int32_t *inherited, int inherited_count,
                   uintptr_t *init_fs, const char **why);
void lower_restart_done();
// Drops the lower half in place, after its MPI_Finalize (`fs`: the caller's lower TCB): every
// thread's lower TLS is void from here (their next MPI call waits for lower_restart_done), the
// parked threads end, the MPI library's own threads must have ended, the kernel's signal actions
// that run lower code go back to the default, the lower descriptors are closed and its memory is
// unmapped. False with one line (the process cannot go on: the old lower half is finalized).
bool lower_drop(uintptr_t fs, char *why, size_t why_len);
void bind_reset(); // support.cpp: forget the predefined function bindings before flavour_bind

// Nonzero if the layer is active in this process (an MPI program with the lower half started).
bool layer_active();
void fatal(const char *what, const char *detail); // one line on stderr, then _exit(1)

} // namespace ghost::mpi
