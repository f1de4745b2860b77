// SPDX-License-Identifier: Apache-2.0
// The gate's slow side (safe points), communicator bookkeeping (world-rank tables for the message
// counters, collective-clock ids) and the queue of drained messages.
#include "quiesce.h"

#include <dlfcn.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "lower_api.h"
#include "files.h"
#include "quiesce_state.h"
#include "wrapper_support.h"

namespace ghost::mpi {

__thread thread_gate t_gate __attribute__((tls_model("initial-exec")));
volatile int g_qflag = 0;
bool g_gate_fence = false;
bool g_threads_multiple = false;
uint64_t *g_sent = nullptr;
uint64_t *g_sent_bytes = nullptr;
std::atomic<uint64_t> g_recvd{0};
int g_world_size = 0;
std::atomic<size_t> g_ndrained{0};
std::atomic<uint32_t> g_lower_gen{0};
lower_api L;
quiesce_state Q;

namespace {

std::mutex g_threads_mu;
pthread_key_t g_gate_key;
pthread_once_t g_gate_once = PTHREAD_ONCE_INIT;

std::mutex g_comm_mu;
comm_info *g_comms = nullptr; // registry of live communicators (drain, clock report)
comm_info g_mpich_world, g_mpich_self;

std::mutex g_drained_mu;
drained_msg *g_drained_head = nullptr, *g_drained_tail = nullptr;

void gate_unregister(void *p) {
    std::lock_guard<std::mutex> g(g_threads_mu);
    for (auto &slot : Q.threads)
        if (slot == p) slot = nullptr;
}

void gate_key_init() {
    pthread_key_create(&g_gate_key, gate_unregister);
}

void futex_wait(std::atomic<uint32_t> *w, uint32_t v, long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
    syscall(SYS_futex, (uint32_t *)w, FUTEX_WAIT_PRIVATE, v, &ts, nullptr, 0);
}

uint64_t mix(uint64_t x) { // splitmix64 finaliser
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

void link_comm(comm_info *ci) {
    std::lock_guard<std::mutex> g(g_comm_mu);
    ci->linked = true;
    ci->next = g_comms;
    ci->prev = nullptr;
    if (g_comms) g_comms->prev = ci;
    g_comms = ci;
}

// Fills the world-rank table of a lower communicator; false if the lower half cannot tell.
// (Upper allocations only outside the lower_call scopes: malloc reads upper TLS.)
bool fill_ranks(comm_info *ci, MPI_Comm lc) {
    if (!L.ready) return false;
    int inter = 0, n = 0, rank = -1, local_size = 0;
    MPI_Group g;
    // Groups up to this size are translated in the same lower scope, into the stack (each scope
    // costs two arch_prctl where the CPU has no user-space FSGSBASE).
    constexpr int kStackRanks = 256;
    int in_stack[kStackRanks], out_stack[kStackRanks];
    int rc = MPI_ERR_OTHER;
    {
        lower_call scope;
        if (L.Comm_test_inter(lc, &inter) != MPI_SUCCESS) return false;
        if (L.Comm_rank(lc, &rank) != MPI_SUCCESS || L.Comm_size(lc, &local_size) != MPI_SUCCESS)
            return false;
        if ((inter ? L.Comm_remote_group(lc, &g) : L.Comm_group(lc, &g)) != MPI_SUCCESS)
            return false;
        L.Group_size(g, &n);
        if (n <= kStackRanks) {
            for (int i = 0; i < n; i++)
                in_stack[i] = i;
            rc = L.Group_translate_ranks(g, n, in_stack, L.world_group, out_stack);
            L.Group_free(&g);
        }
    }
    int *out = (int *)malloc(sizeof(int) * (size_t)(n > 0 ? n : 1));
    if (!out) fatal("cannot map a communicator's ranks", "out of memory");
    if (n <= kStackRanks) {
        memcpy(out, out_stack, sizeof(int) * (size_t)(n > 0 ? n : 0));
    } else {
        int *in = (int *)malloc(sizeof(int) * (size_t)n);
        if (!in) fatal("cannot map a communicator's ranks", "out of memory");
        for (int i = 0; i < n; i++)
            in[i] = i;
        {
            lower_call scope;
            rc = L.Group_translate_ranks(g, n, in, L.world_group, out);
            L.Group_free(&g);
        }
        free(in);
    }
    if (rc != MPI_SUCCESS) {
        free(out);
        return false;
    }
    ci->inter = inter != 0;
    ci->n = n;
    ci->local_size = local_size;
    ci->to_world = out;
    ci->lower = (uintptr_t)lc;
    __atomic_store_n(&ci->rank, rank, __ATOMIC_RELEASE); // last: u_Comm_rank trusts it when set
    return true;
}

comm_info *make_info(uintptr_t lower, uintptr_t upper) {
    comm_info *ci = new comm_info();
    if (!fill_ranks(ci, (MPI_Comm)lower)) {
        delete ci;
        return nullptr;
    }
    ci->upper = upper;
    link_comm(ci);
    return ci;
}

// The first use of a communicator MPI_Comm_idup made (the program has completed its request):
// its ranks, and it joins the list if it is not in it. False if the lower half cannot tell them
// yet.
bool fill_pending(comm_info *ci, vobj *v, uintptr_t upper) {
    static std::mutex mu;
    std::lock_guard<std::mutex> g(mu);
    if (!ci->unfilled.load(std::memory_order_acquire)) return true;
    if (!fill_ranks(ci, (MPI_Comm)v->lower)) return false;
    ci->upper = upper;
    if (!ci->linked) link_comm(ci);
    ci->unfilled.store(false, std::memory_order_release);
    return true;
}

} // namespace

void gate_register() {
    pthread_once(&g_gate_once, gate_key_init);
    std::lock_guard<std::mutex> g(g_threads_mu);
    t_gate.registered = 1;
    for (auto &slot : Q.threads)
        if (!slot) {
            slot = &t_gate;
            pthread_setspecific(g_gate_key, &t_gate);
            return;
        }
    Q.threads.push_back(&t_gate);
    pthread_setspecific(g_gate_key, &t_gate);
}

std::vector<thread_gate *> gate_threads() {
    std::lock_guard<std::mutex> g(g_threads_mu);
    std::vector<thread_gate *> v;
    for (auto *t : Q.threads)
        if (t) v.push_back(t);
    return v;
}

void safe_point(comm_info *) {
    if (t_gate.rma_ops > 0 || t_gate.rma_locks > 0) return; // runs on to its synchronisation
    const uint32_t passes = Q.passes.load(std::memory_order_acquire);
    t_gate.park_passes = passes;
    for (;;) {
        if (!g_qflag || Q.passes.load(std::memory_order_acquire) != passes) return;
        uint32_t gen = Q.gen.load(std::memory_order_acquire);
        // A rank behind some communicator's target runs on, through any call (collectives on
        // other communicators included); the next clock round catches their members up. Behind
        // is looked at here, not only in the flag the coordinator thread clears: a rank that
        // has caught up stops at its next call (running on past the targets until that thread
        // ran again moved them for the others, round after round, in tight collective loops).
        if (Q.phase.load() == phase_forward && Q.behind.load() && is_behind()) return;
        t_gate.parked = 1;
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        if (g_qflag && Q.gen.load() == gen) futex_wait(&Q.gen, gen, 50);
        t_gate.parked = 0;
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
    }
}

bool is_behind() {
    bool behind = false;
    comms_visit(
        [](comm_info *c, void *arg) {
            if (c->tracked && c->seq.load() < c->target) *(bool *)arg = true;
        },
        &behind);
    return behind;
}

void quiesce_wake() {
    Q.gen.fetch_add(1);
    syscall(SYS_futex, (uint32_t *)&Q.gen, FUTEX_WAKE_PRIVATE, 0x7fffffff, nullptr, nullptr, 0);
}

// ---- communicators ----

comm_info *comm_info_of_raw(uintptr_t u) {
    if (u == g_upper_null[(int)kind::comm] || u == 0) return nullptr;
#if defined(GHOST_MPI_MPICH)
    if (u == (uintptr_t)MPI_COMM_WORLD) return g_mpich_world.n ? &g_mpich_world : nullptr;
    if (u == (uintptr_t)MPI_COMM_SELF) return g_mpich_self.n ? &g_mpich_self : nullptr;
    vobj *v = decode<kind::comm>((MPI_Comm)u);
#else
    vobj *v = (vobj *)u;
#endif
    if (!v || v->magic != kVobjMagic || v->k != kind::comm) return nullptr;
    if (__builtin_expect(v->ext != nullptr, 1)) {
        comm_info *ci = (comm_info *)v->ext;
        if (__builtin_expect(ci->unfilled.load(std::memory_order_acquire), 0) &&
            !fill_pending(ci, v, u))
            return nullptr;
        return ci;
    }
    // A communicator made by a call whose wrapper gave it no comm_info (MPI_Comm_spawn,
    // MPI_Comm_accept, ...) or before comm_created ran: counted, untracked by the collective
    // clock until comm_created (or comm_created_group) gives it one.
    if (!L.ready) return nullptr;
    comm_info *ci = make_info(v->lower, u);
    comm_info *expected = nullptr;
    if (ci && !__atomic_compare_exchange_n((comm_info **)&v->ext, &expected, ci, false,
                                           __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
        comm_freed(ci);
        return expected;
    }
    return ci;
}

// ---- windows and files: clocks of their own ----

namespace {
template <kind K> vobj *object_vobj(uintptr_t u) {
    if (u == g_upper_null[(int)K] || u == 0) return nullptr;
    vobj *v = K == kind::win ? decode<K>((MPI_Win)u) : decode<K>((MPI_File)u);
    return v && v->magic == kVobjMagic && v->k == K ? v : nullptr;
}
} // namespace

std::atomic<int> g_windows{0};

comm_info *object_clock_of(clock_kind k, uintptr_t u) {
    vobj *v = k == clock_kind::window ? object_vobj<kind::win>(u) : object_vobj<kind::file>(u);
    return v ? (comm_info *)v->ext : nullptr;
}

comm_info *object_clock_new(clock_kind k, uintptr_t object, uintptr_t comm) {
    vobj *v = !L.ready                  ? nullptr
              : k == clock_kind::window ? object_vobj<kind::win>(object)
                                        : object_vobj<kind::file>(object);
    comm_info *p = v ? comm_info_of_raw(comm) : nullptr;
    // A communicator of one process (MPI_COMM_SELF) needs no clock of its own to agree on.
    const bool solo = p && !p->tracked && p->local_size == 1 && p->n == 1;
    if (!p || (!p->tracked && !solo) || p->inter || p->n <= 0 || v->ext) return nullptr;
    comm_info *ci = new comm_info();
    ci->of = k;
    ci->n = p->n;
    ci->rank = p->rank;
    ci->local_size = p->local_size;
    ci->to_world = (int *)malloc(sizeof(int) * (size_t)p->n);
    if (!ci->to_world) fatal("cannot note a window or file", "out of memory");
    memcpy(ci->to_world, p->to_world, sizeof(int) * (size_t)p->n);
    // Same on every member: the communicator's id and its clock at the creation, and a constant
    // that sets it apart from a communicator made there.
    uint64_t tag = k == clock_kind::window ? 0x77696e646f77ull : 0x66696c65ull;
    static std::atomic<uint64_t> solo_made{0};
    if (solo) // this process's alone: its world rank and a count set it apart
        ci->id = mix(mix((uint64_t)p->to_world[0] + 1) ^ mix(++solo_made * 0x9e3779b97f4a7c15ull) ^
                     mix(tag + 1));
    else
        ci->id = mix(p->id ^ mix(p->seq.load() * 0x100000001b3ull) ^ mix(tag));
    ci->tracked = true;
    v->ext = ci;
    link_comm(ci);
    return ci;
}

void win_created(uintptr_t win, uintptr_t comm) {
    if (object_clock_new(clock_kind::window, win, comm)) g_windows.fetch_add(1);
}

// rank: the target of an operation or lock; a fence's assert.
void win_note(uintptr_t win, win_event e, int rank) {
    comm_info *ci = object_clock_of(clock_kind::window, win);
    if (!ci) return;
    // This thread's share (safe_point): the same rules, per thread.
    switch (e) {
    case win_event::rma:
        t_gate.rma_ops++;
        break;
    case win_event::lock:
        t_gate.rma_locks++;
        break;
    case win_event::unlock:
        if (t_gate.rma_locks > 0 && --t_gate.rma_locks == 0) t_gate.rma_ops = 0;
        break;
    case win_event::flush:
        if (t_gate.rma_locks <= 1) t_gate.rma_ops = 0;
        break;
    case win_event::unlock_all:
        if (t_gate.rma_locks == 0) t_gate.rma_ops = 0;
        break;
    case win_event::fence:
    case win_event::flush_all:
    case win_event::complete:
    case win_event::wait:
        t_gate.rma_ops = 0;
        break;
    case win_event::lock_all:
    case win_event::start:
    case win_event::post:
        break;
    }
    switch (e) {
    case win_event::rma: {
        // Written only when it changes (the usual loop puts to the same target again and again).
        // A failed exchange leaves in `seen` what another thread set first.
        int seen = __atomic_load_n(&ci->rma_target, __ATOMIC_RELAXED);
        if (seen == -1 && __atomic_compare_exchange_n(&ci->rma_target, &seen, rank, false,
                                                      __ATOMIC_RELAXED, __ATOMIC_RELAXED))
            seen = rank;
        if (seen != rank && seen != -2) __atomic_store_n(&ci->rma_target, -2, __ATOMIC_RELAXED);
        __atomic_fetch_add(&ci->rma_pending, 1, __ATOMIC_RELAXED);
        return;
    }
    case win_event::fence:
        ci->fenced = (rank & MPI_MODE_NOSUCCEED) == 0;
        break;
    case win_event::flush_all:
        break;
    case win_event::lock:
        ci->locks++;
        return;
    case win_event::unlock:
        if (--ci->locks > 0 || ci->lock_all) return;
        break;
    case win_event::lock_all:
        ci->lock_all_assert = rank;
        ci->lock_all = true;
        return;
    case win_event::unlock_all:
        ci->lock_all = false;
        if (ci->locks > 0) return;
        break;
    case win_event::flush: // completes the operations to one target: all of them if only one
        if ((ci->lock_all || ci->locks > 1) &&
            __atomic_load_n(&ci->rma_target, __ATOMIC_RELAXED) != rank)
            return;
        break;
    case win_event::start:
    case win_event::post:
        ci->pscw++;
        return;
    case win_event::complete:
    case win_event::wait:
        if (--ci->pscw > 0) return;
        break;
    }
    __atomic_store_n(&ci->rma_pending, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&ci->rma_target, -1, __ATOMIC_RELAXED);
}

bool win_fenced(const void *win_vobj_p) {
    const comm_info *ci = (const comm_info *)((const vobj *)win_vobj_p)->ext;
    return ci && ci->fenced;
}

bool win_lock_all_held(const void *win_vobj_p, int *assert_out) {
    const comm_info *ci = (const comm_info *)((const vobj *)win_vobj_p)->ext;
    if (!ci || !ci->lock_all) return false;
    *assert_out = ci->lock_all_assert;
    return true;
}

const char *win_epoch_open(const void *win_vobj_p) {
    const comm_info *ci = (const comm_info *)((const vobj *)win_vobj_p)->ext;
    if (!ci) return "it has no collective clock (not made over an intracommunicator)";
    if (ci->locks > 0) return "a passive-target lock is held on it";
    if (ci->pscw != 0) return "a post/start/complete/wait epoch is open on it";
    if (__atomic_load_n(&ci->rma_pending, __ATOMIC_RELAXED) != 0)
        return "one-sided operations on it are not completed by a synchronisation yet";
    return nullptr;
}

namespace {
// The layer's object of a new communicator (upper handle) that has no comm_info yet, or nullptr.
vobj *new_comm_vobj(uintptr_t newcomm) {
    if (newcomm == g_upper_null[(int)kind::comm] || !L.ready) return nullptr;
#if defined(GHOST_MPI_MPICH)
    vobj *v = decode<kind::comm>((MPI_Comm)newcomm);
#else
    vobj *v = (vobj *)newcomm;
#endif
    return v && v->magic == kVobjMagic && v->k == kind::comm && !v->ext ? v : nullptr;
}
} // namespace

void comm_created_pending(uintptr_t newcomm, uintptr_t parent) {
    vobj *v = new_comm_vobj(newcomm);
    if (!v) return;
    comm_info *ci = new comm_info();
    ci->unfilled = true;
    comm_info *p = parent ? comm_info_of_raw(parent) : nullptr;
    if (p && p->tracked && !p->inter && p->n > 0) {
        // As comm_created's chaining: a duplicate's first world rank is its parent's.
        ci->id =
            mix(p->id ^ mix(p->seq.load() * 0x100000001b3ull) ^ mix((uint64_t)p->to_world[0] + 7));
        ci->tracked = true;
    }
    ci->upper = newcomm;
    comm_info *expected = nullptr;
    if (!__atomic_compare_exchange_n((comm_info **)&v->ext, &expected, ci, false, __ATOMIC_ACQ_REL,
                                     __ATOMIC_ACQUIRE)) {
        delete ci;
        return;
    }
    // Its clock is in every report from now on (at 0 until its first use fills it): a member
    // that has completed the request may be inside a collective on it while the others have not
    // used it yet; had they not reported it, the clocks agreed without them and that member
    // stayed inside for ever (a checkpoint refused for "a thread stayed inside MPI_Allreduce").
    if (ci->tracked) link_comm(ci);
}

void comms_fill_pending() {
    std::vector<uintptr_t> pending;
    {
        std::lock_guard<std::mutex> g(g_comm_mu);
        for (comm_info *c = g_comms; c; c = c->next)
            if (c->unfilled.load(std::memory_order_acquire)) pending.push_back(c->upper);
    }
    for (uintptr_t u : pending)
        comm_info_of_raw(u);
}

namespace {
// How many creations named `key` (a hash of what names one on every member) this process made
// before this one; the count is in upper memory, so in the image.
uint64_t times_made_before(uint64_t key) {
    static std::mutex mu;
    static std::unordered_map<uint64_t, uint64_t> *made;
    std::lock_guard<std::mutex> g(mu);
    if (!made) made = new std::unordered_map<uint64_t, uint64_t>();
    return (*made)[key]++;
}

// An intercommunicator's members (both groups' world ranks, sorted: the same list on every member
// of either group), hashed; 0 if the lower half cannot tell.
uint64_t inter_members_hash(const comm_info *ci) {
    MPI_Group g;
    int n = 0;
    {
        lower_call scope;
        if (L.Comm_group((MPI_Comm)ci->lower, &g) != MPI_SUCCESS) return 0;
        L.Group_size(g, &n);
    }
    std::vector<int> in((size_t)n), members((size_t)n + (size_t)ci->n);
    for (int i = 0; i < n; i++)
        in[(size_t)i] = i;
    int rc;
    {
        lower_call scope;
        rc = L.Group_translate_ranks(g, n, in.data(), L.world_group, members.data());
        L.Group_free(&g);
    }
    if (rc != MPI_SUCCESS) return 0;
    std::copy(ci->to_world, ci->to_world + ci->n, members.begin() + n);
    std::sort(members.begin(), members.end());
    uint64_t h = mix(members.size());
    for (int w : members)
        h = mix(h ^ (uint64_t)(unsigned)w);
    return h;
}
} // namespace

void comm_created_dup(uintptr_t newcomm, uintptr_t parent) {
    vobj *v = new_comm_vobj(newcomm);
    comm_info *p = parent ? comm_info_of_raw(parent) : nullptr;
    if (v && p && p->n > 0 && p->to_world) {
        // A duplicate has its parent's group(s), rank and size: no lower call to learn them.
        comm_info *ci = new comm_info();
        ci->inter = p->inter;
        ci->n = p->n;
        ci->local_size = p->local_size;
        ci->to_world = (int *)malloc(sizeof(int) * (size_t)p->n);
        if (!ci->to_world) fatal("cannot map a communicator's ranks", "out of memory");
        memcpy(ci->to_world, p->to_world, sizeof(int) * (size_t)p->n);
        ci->lower = v->lower;
        ci->upper = newcomm;
        __atomic_store_n(&ci->rank, __atomic_load_n(&p->rank, __ATOMIC_ACQUIRE), __ATOMIC_RELEASE);
        link_comm(ci);
        comm_info *expected = nullptr;
        if (!__atomic_compare_exchange_n((comm_info **)&v->ext, &expected, ci, false,
                                         __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
            comm_freed(ci);
    }
    comm_created(newcomm, parent);
}

void comm_created(uintptr_t newcomm, uintptr_t parent) {
    if (newcomm == g_upper_null[(int)kind::comm] || !L.ready) return;
    comm_info *ci = comm_info_of_raw(newcomm);
    if (!ci) return;
    comm_info *p = parent ? comm_info_of_raw(parent) : nullptr;
    if (!p || !p->tracked || ci->n <= 0 || ci->tracked) return;
    ci->sync_free = ci->inter || p->inter;
    if (!ci->inter) {
        // Same on every member: the parent's id, the creating collective's number on the parent,
        // and the new group's first world rank (the groups of one Comm_split are disjoint).
        ci->id =
            mix(p->id ^ mix(p->seq.load() * 0x100000001b3ull) ^ mix((uint64_t)ci->to_world[0] + 7));
        ci->tracked = true;
        return;
    }
    // An intercommunicator: its members and how many with the same members this process has
    // made before over the same kind of parent (both groups make them in one order: a creation
    // is collective over both). Made from an intercommunicator (Comm_dup, Comm_split), that
    // parent's id and clock are the same on both sides too; made by MPI_Intercomm_create, the
    // parents are the two groups' own communicators, which the id cannot name.
    uint64_t members = inter_members_hash(ci);
    if (members == 0) return;
    uint64_t key = members ^ (p->inter ? mix(p->id ^ mix(p->seq.load() * 0x100000001b3ull)) : 0);
    uint64_t nth = times_made_before(key);
    ci->id = mix(key ^ mix(nth * 0x9e3779b97f4a7c15ull) ^ mix(0x696e746572ull));
    ci->tracked = true;
}

uintptr_t free_clock(uintptr_t upper) {
    comm_info *ci = upper ? comm_info_of_raw(upper) : nullptr;
    return ci && ci->sync_free && ci->tracked ? upper : 0;
}

void record_set_parent(record *r, uintptr_t upper) {
    comm_info *ci = r ? comm_info_of_raw(upper) : nullptr;
    // Over an intercommunicator the creation's members are both groups: no tombstone (its
    // record is an ordinary one, a zombie if freed).
    if (!ci || !ci->tracked || ci->inter) return;
    r->parent_pos = ci->seq.load();
    r->parent_id = ci->id;
    r->parent_size = ci->local_size;
}

uint64_t record_set_group_key(record *r, uintptr_t comm, MPI_Group group, int tag) {
    comm_info *ci = L.ready ? comm_info_of_raw(comm) : nullptr;
    if (!ci || !ci->tracked || ci->inter) return 0;
    MPI_Group g = to_lower<kind::group>(group);
    int n = 0;
    {
        lower_call scope;
        if (L.Group_size(g, &n) != MPI_SUCCESS || n <= 0) return 0;
    }
    std::vector<int> in((size_t)n), members((size_t)n);
    for (int i = 0; i < n; i++)
        in[(size_t)i] = i;
    {
        lower_call scope;
        if (L.Group_translate_ranks(g, n, in.data(), L.world_group, members.data()) != MPI_SUCCESS)
            return 0;
    }
    // The communicator, the tag and the new group's world ranks in their order: the same on every
    // member, and members make the creations with all three the same in one order.
    uint64_t h = mix(ci->id ^ mix((uint64_t)(uint32_t)tag + 0x67726f7570ull));
    for (int w : members)
        h = mix(h ^ (uint64_t)(uint32_t)w);
    uint64_t nth = times_made_before(h);
    const uint64_t key = mix(h ^ mix((nth + 1) * 0x9e3779b97f4a7c15ull)) | 1;
    if (r) {
        r->group_key = key;
        r->parent_size = n;
    }
    return key;
}

// Why not replay MPI_Comm_group itself: an MPI may hand one group object out for several
// communicators (Open MPI: a duplicate shares its parent's group), and the record is the first
// hand-out's. Threads that race make that first hand-out from different communicators on
// different ranks, so a replay that waited for its communicator would put the creations made
// over the group (MPI_Comm_create) at different places in different ranks' orders
// (replay_order): a restart that waited for ever. By world ranks, a group needs no communicator.
// A group with a process outside MPI_COMM_WORLD keeps the plain record.
void record_group_members(record *r, MPI_Group lower_group) {
    if (!r || !L.ready || vobj_find_lower(kind::group, (uintptr_t)lower_group)) return;
    int n = 0;
    {
        lower_call scope; // the upper half's malloc must not run in it (its TLS is the lower's)
        if (L.Group_size(lower_group, &n) != MPI_SUCCESS || n <= 0) return;
    }
    std::vector<int> in((size_t)n), members((size_t)n);
    for (int i = 0; i < n; i++)
        in[(size_t)i] = i;
    {
        lower_call scope;
        if (L.Group_translate_ranks(lower_group, n, in.data(), L.world_group, members.data()) !=
            MPI_SUCCESS)
            return;
    }
    for (int w : members)
        if (w == MPI_UNDEFINED) return;
    record_add_array(r, 1, members.data(), members.size() * sizeof(int));
    r->args[0] = g_upper_null[(int)kind::comm]; // names no communicator: keeps no zombie
}

void comm_created_group(uintptr_t newcomm, uint64_t group_key) {
    if (newcomm == g_upper_null[(int)kind::comm] || !L.ready || group_key == 0) return;
    comm_info *ci = comm_info_of_raw(newcomm);
    if (!ci || ci->n <= 0 || ci->inter || ci->tracked) return;
    // Every member named the creation alike (its parent has a clock on each, or on none): the
    // clock is kept on every member or on none, as a clock must be.
    ci->id = mix(group_key ^ mix(0x6372656174655f67ull));
    ci->tracked = true;
}

namespace {
// The object's clock (its comm_info) and vobj, for a communicator or a window: what its setting
// records (error handler, attached regions) hang on.
comm_info *clock_owner(kind k, uintptr_t object, vobj **v_out) {
    if (k == kind::win) {
        *v_out = object_vobj<kind::win>(object);
        return *v_out ? (comm_info *)(*v_out)->ext : nullptr;
    }
    comm_info *ci = comm_info_of_raw(object);
#if defined(GHOST_MPI_MPICH)
    *v_out = decode<kind::comm>((MPI_Comm)object); // MPICH's predefined ones have no vobj
#else
    *v_out = (vobj *)object;
#endif
    return ci;
}
} // namespace

void errhandler_set(kind k, uintptr_t object, record *r) {
    if (!r) return;
    vobj *v = nullptr;
    comm_info *ci = clock_owner(k, object, &v);
    if (!ci) { // no clock: a checkpoint refuses a freed handler on it, as before
        delete r;
        return;
    }
    record_link_setting(v, r);
    record *was = __atomic_exchange_n(&ci->errh_set, r, __ATOMIC_ACQ_REL);
    if (was) record_drop(was); // superseded: a handler only it named may go
}

void comm_errhandler_set(uintptr_t comm, record *r) {
    errhandler_set(kind::comm, comm, r);
}

void win_errhandler_set(uintptr_t win, record *r) {
    errhandler_set(kind::win, win, r);
}

namespace {
std::mutex g_attach_mu; // the windows' attached lists
} // namespace

void win_attach_set(uintptr_t win, record *r) {
    if (!r) return;
    vobj *v = nullptr;
    comm_info *ci = clock_owner(kind::win, win, &v);
    if (!ci) { // no clock: a checkpoint refuses the window anyway
        delete r;
        return;
    }
    record_link_setting(v, r);
    std::lock_guard<std::mutex> g(g_attach_mu);
    if (!ci->attached) ci->attached = new std::vector<record *>();
    ci->attached->push_back(r);
}

void win_flavor_attr(uintptr_t win, int keyval, void *attribute_val) {
    static int allocate_flavor = MPI_WIN_FLAVOR_ALLOCATE, shared_flavor = MPI_WIN_FLAVOR_SHARED;
    if (keyval != MPI_WIN_CREATE_FLAVOR || !attribute_val) return;
    vobj *v = object_vobj<kind::win>(win);
    if (!v || !v->rec || v->rec->fn < 0) return;
    const char *made_by = g_fn_names[v->rec->fn];
    if (strcmp(made_by, "MPI_Win_allocate") == 0 || strcmp(made_by, "MPI_Win_allocate_c") == 0)
        *(int **)attribute_val = &allocate_flavor;
    else if (strncmp(made_by, "MPI_Win_allocate_shared", 23) == 0)
        *(int **)attribute_val = &shared_flavor;
}

void win_detached(uintptr_t win, uintptr_t base) {
    comm_info *ci = object_clock_of(clock_kind::window, win);
    if (!ci) return;
    record *gone = nullptr;
    {
        std::lock_guard<std::mutex> g(g_attach_mu);
        if (!ci->attached) return;
        auto &list = *ci->attached;
        for (size_t i = 0; i < list.size(); i++)
            if (list[i]->args[1] == base) {
                gone = list[i];
                list.erase(list.begin() + (long)i);
                break;
            }
    }
    if (gone) record_drop(gone);
}

bool errhandler_recorded(bool window, uintptr_t object) {
    vobj *v = nullptr;
    comm_info *ci = clock_owner(window ? kind::win : kind::comm, object, &v);
    return ci && __atomic_load_n(&ci->errh_set, __ATOMIC_ACQUIRE) != nullptr;
}

void comm_freed(void *info) {
    comm_info *ci = (comm_info *)info;
    if (record *r = __atomic_exchange_n(&ci->errh_set, nullptr, __ATOMIC_ACQ_REL)) record_drop(r);
    std::vector<record *> *attached;
    {
        std::lock_guard<std::mutex> g(g_attach_mu);
        attached = ci->attached;
        ci->attached = nullptr;
    }
    if (attached) {
        for (record *r : *attached)
            record_drop(r);
        delete attached;
    }
    if (ci->of == clock_kind::window) g_windows.fetch_sub(1);
    if (ci->file) file_state_free(ci->file);
    {
        std::lock_guard<std::mutex> g(g_comm_mu);
        if (ci->linked) {
            (ci->prev ? ci->prev->next : g_comms) = ci->next;
            if (ci->next) ci->next->prev = ci->prev;
        }
    }
    // Drained messages on it are never received: free them.
    {
        std::lock_guard<std::mutex> g(g_drained_mu);
        drained_msg **pp = &g_drained_head;
        g_drained_tail = nullptr;
        while (*pp) {
            if ((*pp)->ci == ci) {
                drained_msg *m = *pp;
                *pp = m->next;
                free(m->data);
                free(m);
                g_ndrained.fetch_sub(1);
            } else {
                g_drained_tail = *pp;
                pp = &(*pp)->next;
            }
        }
    }
    free(ci->to_world);
    delete ci;
}

void comms_visit(void (*fn)(comm_info *, void *), void *arg) {
    std::lock_guard<std::mutex> g(g_comm_mu);
    for (comm_info *c = g_comms; c; c = c->next)
        fn(c, arg);
}

// The predefined communicators and the counters, right after MPI_Init.
bool comms_init(const char **why) {
    if (!lower_api_bind(why)) return false;
    {
        lower_call lc;
        if (L.Comm_group(L.world, &L.world_group) != MPI_SUCCESS ||
            L.Comm_size(L.world, &g_world_size) != MPI_SUCCESS) {
            *why = "cannot read MPI_COMM_WORLD";
            return false;
        }
    }
    g_sent_bytes = (uint64_t *)calloc((size_t)g_world_size, sizeof(uint64_t));
    g_sent = g_sent_bytes ? (uint64_t *)calloc((size_t)g_world_size, sizeof(uint64_t)) : nullptr;
#if defined(GHOST_MPI_MPICH)
    comm_info *w = &g_mpich_world, *s = &g_mpich_self;
    if (!fill_ranks(w, MPI_COMM_WORLD) || !fill_ranks(s, MPI_COMM_SELF)) {
        *why = "cannot map the predefined communicators";
        return false;
    }
    w->upper = (uintptr_t)MPI_COMM_WORLD;
    s->upper = (uintptr_t)MPI_COMM_SELF;
    link_comm(w);
    link_comm(s);
#else
    vobj *wv = (vobj *)dlsym(RTLD_DEFAULT, "ompi_mpi_comm_world");
    vobj *sv = (vobj *)dlsym(RTLD_DEFAULT, "ompi_mpi_comm_self");
    if (!wv || !sv) {
        *why = "the stub library lacks the predefined communicators";
        return false;
    }
    comm_info *w = make_info(wv->lower, (uintptr_t)wv), *s = make_info(sv->lower, (uintptr_t)sv);
    if (!w || !s) {
        *why = "cannot map the predefined communicators";
        return false;
    }
    wv->ext = w;
    sv->ext = s;
#endif
    w->id = 1;
    w->tracked = true;
    return true;
}

// ---- drained messages ----

void drained_push(drained_msg *m) {
    std::lock_guard<std::mutex> g(g_drained_mu);
    m->next = nullptr;
    if (g_drained_tail)
        g_drained_tail->next = m;
    else
        g_drained_head = m;
    g_drained_tail = m;
    g_ndrained.fetch_add(1);
}

drained_msg *drained_take(comm_info *ci, int source, int tag, bool peek) {
    if (!ci) return nullptr;
    std::lock_guard<std::mutex> g(g_drained_mu);
    drained_msg *prev = nullptr;
    for (drained_msg *m = g_drained_head; m; prev = m, m = m->next) {
        if (m->ci != ci) continue;
        if (source != MPI_ANY_SOURCE && m->source != source) continue;
        if (tag != MPI_ANY_TAG && m->tag != tag) continue;
        if (peek) return m;
        (prev ? prev->next : g_drained_head) = m->next;
        if (g_drained_tail == m) g_drained_tail = prev;
        m->next = nullptr;
        g_ndrained.fetch_sub(1);
        return m;
    }
    return nullptr;
}

void drained_free(drained_msg *m) {
    if (!m) return;
    free(m->data);
    free(m);
}

// ---- lower functions ----

bool lower_api_bind(const char **why) {
    struct entry {
        const char *name;
        void **slot;
    } e[] = {{"MPI_Isend", (void **)&L.Isend},
             {"MPI_Issend", (void **)&L.Issend},
             {"MPI_Irsend", (void **)&L.Irsend},
             {"MPI_Irecv", (void **)&L.Irecv},
             {"MPI_Test", (void **)&L.Test},
             {"MPI_Testall", (void **)&L.Testall},
             {"MPI_Waitall", (void **)&L.Waitall},
             {"MPI_Testany", (void **)&L.Testany},
             {"MPI_Testsome", (void **)&L.Testsome},
             {"MPI_Iprobe", (void **)&L.Iprobe},
             {"MPI_Improbe", (void **)&L.Improbe},
             {"MPI_Imrecv", (void **)&L.Imrecv},
             {"MPI_Request_get_status", (void **)&L.Request_get_status},
             {"MPI_Get_count", (void **)&L.Get_count},
             {"MPI_Type_size", (void **)&L.Type_size},
             {"MPI_Type_get_extent", (void **)&L.Type_get_extent},
             {"MPI_Type_get_true_extent", (void **)&L.Type_get_true_extent},
             {"MPI_Unpack", (void **)&L.Unpack},
             {"MPI_Pack", (void **)&L.Pack},
             {"MPI_Pack_size", (void **)&L.Pack_size},
             {"MPI_Status_set_elements_x", (void **)&L.Status_set_elements_x},
             {"MPI_Test_cancelled", (void **)&L.Test_cancelled},
             {"MPI_Comm_group", (void **)&L.Comm_group},
             {"MPI_Comm_remote_group", (void **)&L.Comm_remote_group},
             {"MPI_Comm_test_inter", (void **)&L.Comm_test_inter},
             {"MPI_Group_size", (void **)&L.Group_size},
             {"MPI_Group_translate_ranks", (void **)&L.Group_translate_ranks},
             {"MPI_Group_free", (void **)&L.Group_free},
             {"MPI_Comm_size", (void **)&L.Comm_size},
             {"MPI_Comm_rank", (void **)&L.Comm_rank},
             {"MPI_Start", (void **)&L.Start}};
    for (auto &x : e) {
        *x.slot = lower_fn(x.name);
        if (!*x.slot) {
            *why = "the lower MPI library lacks a function quiescence needs";
            return false;
        }
    }
#if defined(GHOST_MPI_MPICH)
    L.world = MPI_COMM_WORLD;
    L.byte = MPI_BYTE;
    L.packed = MPI_PACKED;
#else
    vobj *w = (vobj *)dlsym(RTLD_DEFAULT, "ompi_mpi_comm_world");
    vobj *b = (vobj *)dlsym(RTLD_DEFAULT, "ompi_mpi_byte");
    vobj *pk = (vobj *)dlsym(RTLD_DEFAULT, "ompi_mpi_packed");
    if (!w || !b || !pk) {
        *why = "the stub library lacks MPI_COMM_WORLD, MPI_BYTE or MPI_PACKED";
        return false;
    }
    L.world = (MPI_Comm)w->lower;
    L.byte = (MPI_Datatype)b->lower;
    L.packed = (MPI_Datatype)pk->lower;
#endif
    L.req_null = (MPI_Request)g_lower_null[(int)kind::request];
    L.msg_null = (MPI_Message)g_lower_null[(int)kind::message];
    L.ready = true;
    return true;
}

bool quiesce_after_restart(uintptr_t fs, const char **why) {
    if (!L.ready) return true; // quiescence was never bound: nothing refers to the old lower half
    // The manager borrows the restarted lower half's main TLS (its own was forgotten, and other
    // threads wait for the restart to finish before they take theirs).
    struct borrow {
        explicit borrow(uintptr_t f) { set_thread_lower_fs(f); }
        ~borrow() { t_lower_fs = 0; }
    } b(fs);
    L.ready = false;
    if (!lower_api_bind(why)) return false;
    {
        lower_call lc;
        if (L.Comm_group(L.world, &L.world_group) != MPI_SUCCESS) {
            *why = "cannot read MPI_COMM_WORLD's group";
            return false;
        }
    }
    {
        std::lock_guard<std::mutex> g(g_comm_mu);
        for (comm_info *c = g_comms; c; c = c->next)
            if (c->of == clock_kind::comm)
                c->lower = (uintptr_t)to_lower<kind::comm>((MPI_Comm)c->upper);
    }
    requests_after_restart();
    g_lower_gen.fetch_add(1);
    return true;
}

bool comms_ranked_as_before(uintptr_t fs, char *why, size_t why_len) {
    if (!L.ready) return true;
    struct borrow {
        explicit borrow(uintptr_t f) { set_thread_lower_fs(f); }
        ~borrow() { t_lower_fs = 0; }
    } b(fs);
    std::lock_guard<std::mutex> g(g_comm_mu);
    for (comm_info *c = g_comms; c; c = c->next) {
        if (c->of != clock_kind::comm || c->unfilled.load(std::memory_order_acquire)) continue;
        comm_info now;
        if (!fill_ranks(&now, (MPI_Comm)c->lower)) {
            snprintf(why, why_len, "cannot read the ranks of a rebuilt communicator");
            return false;
        }
        bool same =
            now.rank == c->rank && now.local_size == c->local_size && now.n == c->n &&
            now.inter == c->inter &&
            (c->n <= 0 || memcmp(now.to_world, c->to_world, sizeof(int) * (size_t)c->n) == 0);
        int was = c->rank, is = now.rank;
        free(now.to_world);
        if (!same) {
            snprintf(why, why_len,
                     "a rebuilt communicator of %d ranks ranks its processes differently (this "
                     "one was %d, is %d): the MPI reordered it",
                     c->local_size, was, is);
            return false;
        }
    }
    return true;
}

} // namespace ghost::mpi
