// SPDX-License-Identifier: Apache-2.0
// Quiescence of one rank (DESIGN.md section 3): the gate every wrapper passes, message counters,
// per-communicator collective clocks, drained messages. The coordinator client (coord_client.cpp)
// drives an epoch; p2p.cpp holds the point-to-point wrappers that count, loop and deliver drained
// messages first.
//
// Gate: a thread entering a wrapper marks itself inside MPI (t_gate.depth, plain stores) and then
// reads g_qflag; the client raises g_qflag and then runs membarrier(PRIVATE_EXPEDITED) before it
// reads the threads' depths (asymmetric Dekker: no fence on the wrapper's path). A thread that
// sees the flag stops at that safe point (wrapper entry, or one iteration of a test loop, always
// with the upper FS loaded) until the epoch lets it go.
#pragma once
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace ghost::mpi {

// What a collective clock counts the collectives of.
enum class clock_kind : uint8_t { comm, window, file };

struct file_state; // files.h
struct record;     // vobj.h

// Per-communicator state, hung off the communicator's vobj (or static for MPICH's predefined
// integer handles). Windows and files have one too: a collective clock of their own.
struct comm_info {
    uint64_t id = 0;      // same on every member: chained from the parent's id and clock
    bool tracked = false; // collective clock kept
    bool inter = false;
    // Made over two groups (an intercommunicator, or made from one): a restart replays its
    // creation in both, so no member may have freed it while another has not; its MPI_Comm_free
    // is a collective on its clock that waits for every member (free_clock).
    bool sync_free = false;
    int n = 0;                     // (remote) group size
    int rank = -1, local_size = 0; // MPI_Comm_rank / MPI_Comm_size (immutable; answered upper)
    int *to_world = nullptr;       // (remote) group rank -> world rank
    std::atomic<uint64_t> seq{0};  // blocking collectives entered on it
    uint64_t target = 0;           // while quiescing: run forward to this
    uintptr_t lower = 0;           // the lower handle, for the drain
    uintptr_t upper = 0;           // the upper handle (the lower one changes with a restart)
    // Made by MPI_Comm_idup: its ranks are read at its first use, once the program has completed
    // the request (the lower communicator may not be usable before), or by a checkpoint's drain.
    // Chained from a tracked parent, it is in the list (its clock reported) from the start.
    std::atomic<bool> unfilled{false};
    bool linked = false; // in the list comms_visit walks
    // A window's clock (quiesce.cpp, win_*) counts its fences, a file's (files.cpp) its
    // collective calls; lower stays 0 (nothing to probe). For a window, the rest is what a
    // checkpoint must know of its epochs: one-sided operations not completed by a
    // synchronisation since, passive-target locks held, lock_all, PSCW epochs open.
    clock_kind of = clock_kind::comm;
    file_state *file = nullptr; // a file's view and what a restart sets again (files.cpp)
    record *errh_set = nullptr; // the last MPI_{Comm,Win}_set_errhandler on it (errhandler_set)
    uint32_t rma_pending = 0;
    // The one target of every pending operation (a flush of it completes them all), or -1 (none
    // yet) or -2 (several): changed with atomics, threads may issue operations at once.
    int rma_target = -1;
    int locks = 0, pscw = 0;
    // MPI_Win_lock_all held (and its assert): a checkpoint carries it (shared locks on every
    // target, none of which another rank's shared lock excludes), a restart takes it again.
    bool lock_all = false;
    int lock_all_assert = 0;
    // A dynamic window's MPI_Win_attach records (settings) of the regions attached now: a restart
    // attaches them again, at the same addresses (the program's memory, in the image).
    std::vector<record *> *attached = nullptr;
    bool fenced = false; // a fence (not MPI_MODE_NOSUCCEED) began an epoch: a restart fences once
    comm_info *next = nullptr, *prev = nullptr;
};

struct thread_gate {
    int depth;           // wrapper nesting (callbacks call wrappers from inside a lower call)
    volatile int parked; // waiting at a safe point
    // Q.passes when it came to that safe point: a PASS since has let it go on, and until it has
    // run (into its call, or parked at its next one) it counts as busy, not parked.
    volatile uint32_t park_passes;
    comm_info *volatile in_coll; // inside a blocking collective on this communicator
    volatile int in_create;      // ... that makes a communicator (COMM_CHAINED in gen_wrappers)
    // Inside MPI_Comm_create_group: collective over its group only, on no clock. Its other
    // members may be parked at their safe points: reported as a creation, which makes the
    // coordinator let parked threads through once (PASS) until it has returned.
    volatile int in_group_create;
    int fn;                       // the outermost wrapper's function (for error messages)
    volatile int in_send;         // inside a blocking send (counted): its receiver drains it
    uintptr_t pending_lreq;       // the lower Irecv of a blocking receive parked at a safe point
    volatile int pending_counted; // ... already counted (and completed) by the drain
    int registered;
    // The status of that receive when the drain found it complete: a restart, which loses the
    // lower request, completes the blocking call with it.
    int pending_source, pending_tag, pending_error;
    long long pending_bytes;
    // One-sided operations this thread issued that no synchronisation has completed yet, and the
    // passive-target locks it holds: it does not stop at a safe point until both are 0 (win_note),
    // so that a checkpoint finds the epochs closed (a fence, unlock or flush is near).
    int rma_ops, rma_locks;
};
extern __thread thread_gate t_gate __attribute__((tls_model("initial-exec")));
extern volatile int g_qflag; // an epoch is in progress: threads stop at safe points
extern bool g_gate_fence;    // membarrier unavailable: wrappers fence themselves
extern bool g_threads_multiple;
// Bumped when a restored rank has bound a fresh lower half: a test loop that sees it changed after
// its safe point holds lower handles of the old one and returns kRedo (p2p.cpp).
extern std::atomic<uint32_t> g_lower_gen;
constexpr int kRedo = -0x6768; // not an MPI error code (those are >= 0)

void gate_register();
void safe_point(comm_info *unused);
// Whether a tracked communicator's collective clock is short of its target (running forward).
bool is_behind();

// The communicator's info is looked up after the safe point: a lookup may call the lower half.
comm_info *comm_info_of_raw(uintptr_t upper_handle);

// Windows made by MPI_Win_create (the generated wrappers call these).
enum class win_event {
    rma,
    fence,
    lock,
    unlock,
    lock_all,
    unlock_all,
    flush,
    flush_all,
    start,
    complete,
    post,
    wait
};
// The clock of a window or a file (upper handle), or nullptr.
comm_info *object_clock_of(clock_kind k, uintptr_t upper);
extern std::atomic<int> g_windows; // live windows with a clock
void win_created(uintptr_t win_upper, uintptr_t comm_upper);
void win_note(uintptr_t win_upper, win_event e, int rank);
// Why this window cannot be carried by a checkpoint now (an epoch holds operations or locks), or
// nullptr.
const char *win_epoch_open(const void *win_vobj);
// Whether the window's last fence began an epoch (a restart then fences the new window once).
bool win_fenced(const void *win_vobj);
// Whether the program holds MPI_Win_lock_all on the window (a restart takes it again, with the
// same assert).
bool win_lock_all_held(const void *win_vobj, int *assert_out);

struct gate {
    comm_info *coll;
    bool group_create = false;
    // of: what `comm` is (a window's clock counts its fences, a file's its collective calls).
    __attribute__((always_inline)) explicit gate(int fn, uintptr_t comm = 0, bool create = false,
                                                 clock_kind of = clock_kind::comm)
        : coll(nullptr) {
        if (__builtin_expect(!t_gate.registered, 0)) gate_register();
        if (t_gate.depth++ != 0) return;
        t_gate.fn = fn;
        if (__builtin_expect(g_gate_fence, 0)) __atomic_thread_fence(__ATOMIC_SEQ_CST);
        asm volatile("" ::: "memory");
        if (__builtin_expect(g_qflag, 0)) safe_point(nullptr);
        if (comm) {
            comm_info *c =
                of == clock_kind::comm ? comm_info_of_raw(comm) : object_clock_of(of, comm);
            if (c && c->tracked) {
                coll = c;
                if (g_threads_multiple)
                    c->seq.fetch_add(1, std::memory_order_relaxed);
                else
                    c->seq.store(c->seq.load(std::memory_order_relaxed) + 1,
                                 std::memory_order_relaxed);
                t_gate.in_coll = c;
                // Until the wrapper has registered the new communicator (comm_created, before
                // this gate ends): the clock cannot see it yet (coord_client.cpp).
                if (create) t_gate.in_create = 1;
            }
        } else if (create) {
            group_create = true;
            t_gate.in_group_create = 1;
        }
    }
    __attribute__((always_inline)) ~gate() {
        if (coll) {
            t_gate.in_coll = nullptr;
            t_gate.in_create = 0;
        }
        if (group_create) t_gate.in_group_create = 0;
        asm volatile("" ::: "memory");
        t_gate.depth--;
    }
    gate(const gate &) = delete;
    gate &operator=(const gate &) = delete;
};

// Inside a lower test loop (lower FS loaded): true when the loop must step out to a safe point.
__attribute__((always_inline)) inline bool quiesce_pending() {
    return __builtin_expect(g_qflag, 0) != 0;
}

// ---- counters ----
extern uint64_t *g_sent; // messages, per world rank; atomic increments only under THREAD_MULTIPLE
extern uint64_t *g_sent_bytes; // their payload (count x type size), per world rank: for status only
extern std::atomic<uint64_t> g_recvd;
extern int g_world_size;
__attribute__((always_inline)) inline void count_send(const comm_info *ci, int dest,
                                                      uint64_t bytes) {
    if (!ci || dest < 0 || dest >= ci->n || !g_sent) return;
    int w = ci->to_world[dest];
    if (__builtin_expect((unsigned)w >= (unsigned)g_world_size, 0)) return;
    if (g_threads_multiple) {
        __atomic_fetch_add(&g_sent[w], 1, __ATOMIC_RELAXED);
        __atomic_fetch_add(&g_sent_bytes[w], bytes, __ATOMIC_RELAXED);
    } else {
        g_sent[w]++;
        g_sent_bytes[w] += bytes;
    }
}
inline void uncount_send(const comm_info *ci, int dest, uint64_t bytes) {
    if (!ci || dest < 0 || dest >= ci->n || !g_sent) return;
    if ((unsigned)ci->to_world[dest] >= (unsigned)g_world_size) return;
    __atomic_fetch_sub(&g_sent[ci->to_world[dest]], 1, __ATOMIC_RELAXED);
    __atomic_fetch_sub(&g_sent_bytes[ci->to_world[dest]], bytes, __ATOMIC_RELAXED);
}
__attribute__((always_inline)) inline void count_recv(uint64_t n = 1) {
    if (g_threads_multiple)
        g_recvd.fetch_add(n, std::memory_order_relaxed);
    else
        g_recvd.store(g_recvd.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
}

// The comm_info of an upper communicator handle (nullptr for MPI_COMM_NULL or unknown values).
template <class H> inline comm_info *comm_info_of(H u) {
    return comm_info_of_raw((uintptr_t)u);
}
// Called after a successful call that produced `newcomm` (collective over `parent`, if any).
void comm_created(uintptr_t newcomm_upper, uintptr_t parent_upper);
// The same for MPI_Comm_dup and MPI_Comm_dup_with_info: the new communicator's ranks are its
// parent's.
void comm_created_dup(uintptr_t newcomm_upper, uintptr_t parent_upper);
// MPI_Comm_idup: the new communicator's clock is chained from the parent now, its ranks are
// read at its first use (comm_info::unfilled).
void comm_created_pending(uintptr_t newcomm_upper, uintptr_t parent_upper);
// Fills every communicator MPI_Comm_idup made that the program has not used yet, once the drain
// has completed the nonblocking collectives (the lower communicators are usable then): messages
// other members sent on it are drained, and an image holds no communicator without its ranks.
void comms_fill_pending();
void comm_freed(void *info);
// MPI_Comm_set_errhandler (MPI_Win_set_errhandler) succeeded: its record (takes r) is kept as the
// communicator's (window's) setting, replayed in its place by a restart. It keeps the error
// handler's record while the object holds it, when the program frees the handler (the usual
// pattern: set, then free).
void comm_errhandler_set(uintptr_t comm_upper, record *r);
void win_errhandler_set(uintptr_t win_upper, record *r);
// MPI_Win_attach succeeded: its record (takes r) is kept until MPI_Win_detach of that base.
void win_attach_set(uintptr_t win_upper, record *r);
void win_detached(uintptr_t win_upper, uintptr_t base);
// After a successful MPI_Win_get_attr that found a value: MPI_WIN_CREATE_FLAVOR of a window the
// program made with MPI_Win_allocate reads MPI_WIN_FLAVOR_ALLOCATE (the lower window is an
// MPI_Win_create one over upper memory, upper/mem.cpp).
void win_flavor_attr(uintptr_t win_upper, int keyval, void *attribute_val);
// Whether the communicator's (or window's) error handler is set by a record a restart replays.
bool errhandler_recorded(bool window, uintptr_t object_upper);
// MPI_Comm_free's clock: the communicator (upper handle) if its free must be collective
// (comm_info::sync_free), else 0.
uintptr_t free_clock(uintptr_t comm_upper);

// ---- drained messages ----
struct drained_msg {
    comm_info *ci;
    int source, tag;
    size_t bytes;
    unsigned char *data;
    drained_msg *next;
};
extern std::atomic<size_t> g_ndrained;
// Removes and returns the first drained message matching (comm, source, tag) in drain order
// (non-overtaking per source); nullptr if none. peek: leave it in place.
drained_msg *drained_take(comm_info *ci, int source, int tag, bool peek);
void drained_free(drained_msg *m);

// ---- the epoch (coord_client.cpp) ----
void quiesce_after_init(int provided);
void quiesce_before_finalize();

// ---- checkpoint and restart (restart.cpp calls these) ----
// At a checkpoint (manager thread, this rank quiescent): requests complete in the lower half become
// complete in the upper half (their status kept); a pending one that a restart could not re-post
// refuses with a reason in `why`. 0 or -1.
// req_convert: this rank holds quiescent and the caller may call the lower half (the
// coordinator thread, before it asks for the image); req_check: quiescent, no lower calls (the
// agent's hook: what is pending must be of a kind a restart re-posts); req_refuse: not quiescent
// (any pending request refuses).
enum req_mode { req_convert, req_check, req_refuse };
int requests_before_checkpoint(int rank, req_mode mode, char *why, size_t why_len);
bool rank_quiescent(); // coord_client.cpp: this rank holds in a quiesce epoch
// In a rank that holds quiescent: what a thread that is not at a safe point is inside (an MPI
// call, or a one-sided epoch it opened), else nullptr (also in a rank not quiescent: unknown).
const char *thread_off_safe_point();
// In a restored rank, after the records are replayed: the lower functions and handles quiescence
// uses, the communicators' lower handles, pending receives re-posted, pending sends complete (their
// receivers have them: the counts agreed). Then test loops redo their calls (g_lower_gen).
bool quiesce_after_restart(uintptr_t fs, const char **why);
// After the replay: every communicator ranks the processes as it did before the checkpoint (a
// topology created with reorder may not); false with a one-line reason otherwise.
bool comms_ranked_as_before(uintptr_t fs, char *why, size_t why_len);
// The coordinator client in a restored rank: every thread forgets the old connection before it
// runs on (system calls only); after the rebuild, the epoch the image was taken in ends and the
// client connects to the new job's coordinator named by envp.
void coord_thread_after_restore();
void coord_after_restore(char *const *envp);
// A staying rank of a live migration that keeps its process (restart.cpp), from the coordinator
// client's thread while the rank holds quiescent. in_place_prepare: before anything is given up,
// what a checkpoint would read and refuse (false with one line); in_place_switch: MPI_Finalize on
// the old lower half (with every rank of the old job), the lower half dropped (lower_drop), a
// fresh one started with `envp` (the new launcher's environment; `inherited`: its descriptors
// that the lower half takes) and everything rebuilt on it, as a restart does. False with one line:
// the rank cannot go on.
bool in_place_prepare(int rank, char *why, size_t why_len);
// Set while the lower half being given up finalizes: the program's attribute callbacks are not
// called (callbacks.cpp); its objects live on.
extern volatile int g_lower_leaving;
// A moved rank's old process, once its image is in its new one: MPI_Finalize with the old job.
bool in_place_leave(char *why, size_t why_len);
bool in_place_switch(char *const *envp, const int32_t *inherited, int inherited_count, char *why,
                     size_t why_len);

} // namespace ghost::mpi

// C ABI for the agent's component hook (mpi-layer/README.md, "Quiescence hooks").
extern "C" {
int ghost_mpi_quiesce(int timeout_ms);
int ghost_mpi_keep_fd(void);
int ghost_mpi_resume(void);
const char *ghost_mpi_quiesce_error(void);
int ghost_mpi_coord_fd(void);
}
