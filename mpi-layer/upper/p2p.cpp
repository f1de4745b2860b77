// SPDX-License-Identifier: Apache-2.0
// Point-to-point under quiescence (DESIGN.md section 3).
//
// Counting: a message is counted sent when a send is posted (persistent: started), and received
// when a receive completes (seen by Wait/Test, or by the drain through Request_get_status) or when
// a matched probe takes it off the lower queue. Blocking calls are a nonblocking call plus a test
// loop that stays in the lower half while it spins and steps out to a safe point when an epoch
// begins (the loop's own receive stays posted: the drain counts it if a message completes it).
// Drained messages are matched before anything reaches the lower half; a receive satisfied from
// one completes in the upper half: its request keeps a stand-in lower handle and a status
// (vobj::done), and every completion call treats it as complete without asking the lower half.
#include "p2p.h"

#include <asm/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "answers.h"
#include "lower_api.h"
#include "quiesce_state.h"
#include "wrapper_support.h"

namespace ghost::mpi {
namespace {

struct done_status {
    int source, tag, error;
    long long bytes;
};

#if defined(GHOST_MPI_MPICH)
const MPI_Request kFakeReq = (MPI_Request)0xBC000001;
#else
char g_fake_req_obj;
const MPI_Request kFakeReq = (MPI_Request)(void *)&g_fake_req_obj;
#endif

__attribute__((always_inline)) inline void raw_yield() {
    long r;
    asm volatile("syscall" : "=a"(r) : "a"(24) : "rcx", "r11", "memory");
}

template <class F> __attribute__((always_inline)) inline F lf(void *p) {
    return (F)p;
}

// Runs step() (lower FS) until it reports done; between iterations, when an epoch begins, steps
// out to a safe point and asks woke() (upper FS) whether the call can now finish otherwise.
// Returns kRedo when the rank was checkpointed and restarted while this thread waited at the safe
// point: every lower handle the caller holds belongs to the old lower half.
// first() runs in the same lower scope before the first step (posting the nonblocking call: one
// FS switch in and one out for a call that completes at once); false ends the call with its code.
template <class First, class Step, class Woke> int test_loop(First first, Step step, Woke woke) {
    const uintptr_t lfs = thread_lower_fs();
    const uint32_t gen = g_lower_gen.load(std::memory_order_relaxed);
    unsigned spins = 0;
    bool posted = false;
    for (;;) {
        int rc = MPI_SUCCESS;
        bool done = false;
        {
            lower_call lc(lfs);
            if (!posted) {
                posted = true;
                if (!first(&rc)) done = true;
            }
            while (!done) {
                done = step(&rc);
                if (done || quiesce_pending()) break;
                if (++spins > 2000 && (spins & 63) == 0) raw_yield();
            }
        }
        if (done) return rc;
        safe_point(nullptr);
        // (Drained messages first: they are in upper memory, valid across a restart.)
        if (woke(&rc)) return rc;
        if (__builtin_expect(g_lower_gen.load(std::memory_order_acquire) != gen, 0)) return kRedo;
    }
}
const auto kNoWake = [](int *) { return false; };
const auto kNoFirst = [](int *) { return true; };
template <class Step, class Woke> int test_loop(Step step, Woke woke) {
    return test_loop(kNoFirst, step, woke);
}

// This thread's gate, as a plain pointer that code in a lower scope may write through (the
// compiler cannot recompute it from the FS base, which then is the lower one).
__attribute__((always_inline)) inline thread_gate *gate_ptr() {
    thread_gate *p = &t_gate;
    asm volatile("" : "+r"(p));
    return p;
}

bool status_ignored(const MPI_Status *st) {
    return st == MPI_STATUS_IGNORE;
}

void fill_status(MPI_Status *st, int source, int tag, int err, long long bytes) {
    if (status_ignored(st)) return;
    // MPI_ERROR is the caller's: MPI calls leave it alone but for errors (MPI-3.1 3.2.5; the
    // MPICH suite's mprobe tests preset it and check it after MPI_Recv, MPI_Mrecv, MPI_Wait).
    const int caller_error = st->MPI_ERROR;
    memset(st, 0, sizeof *st);
    st->MPI_SOURCE = source;
    st->MPI_TAG = tag;
    st->MPI_ERROR = err != MPI_SUCCESS ? err : caller_error;
    lower_call lc;
    L.Status_set_elements_x(st, L.byte, (MPI_Count)bytes);
}

// Copies a drained message into (buf, n, dt); MPI_ERR_TRUNCATE if it does not fit.
int deliver(drained_msg *m, void *buf, int n, MPI_Datatype dt, MPI_Comm c, long long *got) {
    int tsize = 0, rc = MPI_SUCCESS;
    lower_call lc;
    L.Type_size(dt, &tsize);
    size_t cap = (size_t)tsize * (size_t)(n > 0 ? n : 0);
    size_t take = m->bytes;
    if (take > cap) {
        take = cap;
        rc = MPI_ERR_TRUNCATE;
    }
    if (tsize > 0 && take >= (size_t)tsize) {
        int pos = 0;
        L.Unpack(m->data, (int)take, &pos, buf, (int)(take / (size_t)tsize), dt, c);
    }
    *got = (long long)take;
    return rc;
}

int deliver_status(drained_msg *m, void *buf, int n, MPI_Datatype dt, MPI_Comm c, MPI_Status *st) {
    long long got = 0;
    int rc = deliver(m, buf, n, dt, c, &got);
    fill_status(st, m->source, m->tag, rc, got);
    drained_free(m);
    return rc;
}

done_status *deliver_done(drained_msg *m, void *buf, int n, MPI_Datatype dt, MPI_Comm c) {
    done_status *d = (done_status *)malloc(sizeof *d);
    if (!d) fatal("cannot complete a receive from a drained message", "out of memory");
    long long got = 0;
    d->error = deliver(m, buf, n, dt, c, &got);
    d->source = m->source;
    d->tag = m->tag;
    d->bytes = got;
    drained_free(m);
    return d;
}

drained_msg *take_drained(MPI_Comm uc, int src, int tag, bool peek = false) {
    if (__builtin_expect(g_ndrained.load(std::memory_order_relaxed) == 0, 1)) return nullptr;
    if (src == MPI_PROC_NULL) return nullptr;
    return drained_take(comm_info_of(uc), src, tag, peek);
}

// After a restart, an array's lower handles again from the upper ones.
void relower(int n, MPI_Request *l, const MPI_Request *u) {
    for (int i = 0; i < n; i++)
        l[i] = to_lower<kind::request>(u[i]);
}

vobj *req_vobj(MPI_Request u) {
    vobj *v = decode<kind::request>(u);
    return v && v->magic == kVobjMagic && v->k == kind::request ? v : nullptr;
}

// ---- polls without FSGSBASE ----
// Without user-space FSGSBASE every entry into the lower half costs two arch_prctl system calls
// (3-10 us on a paravirtualized guest), some 50 times the lower half's own empty MPI_Test. A
// program that polls in a tight loop (HPCC's RandomAccess: MPI_Testany) spent nine tenths of its
// time switching, and its messages advanced only as often as it entered: HPCC ran 9 times slower
// than natively. So, on that path only, a poll (Test, Testany, Testsome, Testall, Iprobe,
// Improbe) that comes less than g_poll_pace_ns after this thread's previous poll found nothing
// answers "nothing yet" without entering: a thread polling in a loop enters at most every
// g_poll_pace_ns, and a poll after any pause always enters. MPI promises that a test repeated
// eventually sees a completion, never that one test does, and a paced poll is always followed by
// one that enters. Only polls in a row are paced: any other call that enters the lower half
// (a barrier, a send) clears the mark (lower_call), so a probe after a barrier always asks. Never
// where "nothing yet" is no possible answer: an array without a request that is surely active
// (null and inactive persistent requests make Testany, Testall and Testsome answer at once), a
// probe of MPI_PROC_NULL.
// g_poll_pace_ns is what three switches in and out cost here (poll_pace_measure): a polling thread
// then spends at most a quarter of its time switching.
uint64_t g_poll_pace_ns = 0; // 0: polls always enter (wrfsbase)

uint64_t monotonic_ns() {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

bool poll_paced() {
    return g_poll_pace_ns && t_empty_poll_ns && monotonic_ns() - t_empty_poll_ns < g_poll_pace_ns;
}

// After a poll that entered the lower half.
void poll_found(bool something) {
    if (g_poll_pace_ns) t_empty_poll_ns = something ? 0 : monotonic_ns();
}

// One of the requests is neither null nor persistent, so active, and not complete in the upper
// half: "nothing yet" is a possible answer for the array.
bool surely_active(int n, const RQ *ur) {
    for (int i = 0; i < n; i++)
        if (vobj *v = req_vobj(ur[i]); v && !(v->qflags & kQPersistent) && !v->done) return true;
    return false;
}

// A request seen complete: count a receive once; a cancelled one counts nothing.
void note_complete(vobj *v, const MPI_Status *st) {
    if (!v || !(v->qflags & kQActive)) return;
    if ((v->qflags & kQRecv) && !(v->qflags & kQCounted)) {
        int cancelled = 0;
        if ((v->qflags & kQCancel) && !status_ignored(st)) {
            lower_call lc;
            L.Test_cancelled(st, &cancelled);
        }
        if (!cancelled && !(v->qflags & kQCancel && status_ignored(st))) count_recv();
    }
    v->qflags &= ~(kQActive | kQCounted | kQCancel);
}

// Completes an upper-done request: its status, and for a persistent one back to inactive.
int finish_done(vobj *v, MPI_Status *st) {
    done_status *d = (done_status *)v->done;
    fill_status(st, d->source, d->tag, d->error, d->bytes);
    int err = d->error;
    if (v->qflags & kQPersistent) {
        free(d);
        v->done = nullptr;
        v->qflags &= ~kQDone;
    }
    return err;
}

// Upper-done requests in an array get a null lower handle (persistent ones keep their inactive
// lower request: the lower half reports it complete at once).
void mask_done(int n, MPI_Request *l, const MPI_Request *u, vobj **vs) {
    for (int i = 0; i < n; i++) {
        vs[i] = req_vobj(u[i]);
        if (vs[i] && vs[i]->done && !(vs[i]->qflags & kQPersistent)) l[i] = L.req_null;
    }
}

struct vobj_array {
    vobj *small[32];
    vobj **p;
    explicit vobj_array(int n) {
        p = n <= 32 ? small : (vobj **)malloc(sizeof(vobj *) * (size_t)n);
        if (!p) fatal("cannot wait for requests", "out of memory");
    }
    ~vobj_array() {
        if (p != small) free(p);
    }
    vobj *&operator[](int i) { return p[i]; }
};

// Statuses for a completion call: the caller's, or a scratch array when the caller ignores them
// and a cancelled receive needs its status looked at.
struct status_array {
    MPI_Status small[8];
    MPI_Status *p;
    bool scratch = false;
    status_array(MPI_Status *user, int n, vobj **vs) : p(user) {
        if (!status_ignored(user)) return;
        bool need = false;
        for (int i = 0; i < n; i++)
            need |= vs[i] && (vs[i]->qflags & kQCancel);
        if (!need) return;
        scratch = true;
        p = n <= 8 ? small : (MPI_Status *)calloc((size_t)n, sizeof(MPI_Status));
        if (!p) fatal("cannot wait for requests", "out of memory");
    }
    ~status_array() {
        if (scratch && p != small) free(p);
    }
    MPI_Status *at(int i) { return status_ignored(p) ? p : p + i; }
};

std::mutex g_mprobed_mu;
struct mprobed {
    uintptr_t fake;
    drained_msg *m;
    uintptr_t pending; // a lower Imrecv still filling m (a matched message the quiesce took)
    mprobed *next;
};
mprobed *g_mprobed = nullptr;
#if defined(GHOST_MPI_MPICH)
uint32_t g_mprobe_serial = 0;
#endif

MPI_Message mprobed_add(drained_msg *m, uintptr_t pending = 0) {
    mprobed *e = (mprobed *)malloc(sizeof *e);
    if (!e) fatal("cannot match a drained message", "out of memory");
    std::lock_guard<std::mutex> g(g_mprobed_mu);
#if defined(GHOST_MPI_MPICH)
    // (as the handle type converts it: MPICH's int handles sign-extend)
    e->fake = (uintptr_t)(MPI_Message)(int)(0xBC000000u | (++g_mprobe_serial & 0x03FFFFFFu));
#else
    e->fake = (uintptr_t)m;
#endif
    e->m = m;
    e->pending = pending;
    e->next = g_mprobed;
    g_mprobed = e;
    return (MPI_Message)e->fake;
}

drained_msg *mprobed_take(MPI_Message l) {
    uintptr_t pending = 0;
    drained_msg *m = nullptr;
    {
        std::lock_guard<std::mutex> g(g_mprobed_mu);
        for (mprobed **pp = &g_mprobed; *pp; pp = &(*pp)->next)
            if ((*pp)->fake == (uintptr_t)l) {
                mprobed *e = *pp;
                *pp = e->next;
                m = e->m;
                pending = e->pending;
                free(e);
                break;
            }
    }
    if (pending) { // (a quiesce ended before its data came: wait for it here)
        MPI_Request r = (MPI_Request)pending;
        int done = 0;
        lower_call lc;
        while (!done && L.Test(&r, &done, MPI_STATUS_IGNORE) == MPI_SUCCESS) {
        }
    }
    return m;
}

// Messages matched in the lower half by Mprobe/Improbe and not received yet (their lower handle,
// envelope and size): the quiesce receives them into upper memory (matched_to_upper), for a
// restart loses the lower half and with it the message, and the handle the application holds.
std::mutex g_matched_mu;
struct matched {
    uintptr_t lower;
    comm_info *ci;
    int source, tag;
    int bytes;
    matched *next;
};
matched *g_matched = nullptr;

void matched_add(MPI_Message l, comm_info *ci, const MPI_Status *st) {
    const long long got = status_bytes(st);
    const int bytes = got > INT_MAX ? MPI_UNDEFINED : (int)got; // (as MPI_Get_count in bytes)
    matched *e = (matched *)malloc(sizeof *e);
    if (!e) fatal("cannot keep a matched message", "out of memory");
    *e = {(uintptr_t)l, ci, st->MPI_SOURCE, st->MPI_TAG, bytes, nullptr};
    std::lock_guard<std::mutex> g(g_matched_mu);
    e->next = g_matched;
    g_matched = e;
}

// The application receives it now (Mrecv, Imrecv): no longer the quiesce's.
void matched_drop(MPI_Message l) {
    if (__atomic_load_n(&g_matched, __ATOMIC_RELAXED) == nullptr) return;
    std::lock_guard<std::mutex> g(g_matched_mu);
    for (matched **pp = &g_matched; *pp; pp = &(*pp)->next)
        if ((*pp)->lower == (uintptr_t)l) {
            matched *e = *pp;
            *pp = e->next;
            free(e);
            return;
        }
}

using isend_fn = int (*)(const void *, int, MPI_Datatype, int, int, MPI_Comm, MPI_Request *);

// A blocking send as a nonblocking one and a test loop.
int send_loop(isend_fn isend, const void *buf, int n, DT dt, int dest, int tag, CM c, CM uc,
              uint64_t bytes) {
    MPI_Request r;
    int rc;
    {
        lower_call lc;
        rc = isend(buf, n, dt, dest, tag, c, &r);
    }
    if (rc != MPI_SUCCESS) return rc;
    count_send(comm_info_of(uc), dest, bytes);
    int rc2 = test_loop(
        [&](int *out) {
            int flag = 0;
            *out = L.Test(&r, &flag, MPI_STATUS_IGNORE);
            return *out != MPI_SUCCESS || flag;
        },
        kNoWake);
    // Restarted: the quiesce's counts agreed, so its receiver has the message.
    return rc2 == kRedo ? MPI_SUCCESS : rc2;
}

int plain_isend(void *fn, cvp buf, int n, DT dt, int dest, int tag, CM c, RQ *r, CM uc,
                uint64_t bytes) {
    int rc;
    {
        lower_call lc;
        rc = lf<isend_fn>(fn)(buf, n, dt, dest, tag, c, r);
    }
    if (rc == MPI_SUCCESS) {
        count_send(comm_info_of(uc), dest, bytes);
        if (r && dest != MPI_PROC_NULL) t_req_init = {kQIsend | kQActive, -1, nullptr, nullptr, {}};
    }
    return rc;
}

int persistent_send(void *fn, cvp buf, int n, DT dt, int dest, int tag, CM c, RQ *r, CM uc) {
    int rc;
    {
        lower_call lc;
        rc = lf<isend_fn>(fn)(buf, n, dt, dest, tag, c, r);
    }
    if (rc == MPI_SUCCESS && r && dest != MPI_PROC_NULL)
        t_req_init = {kQSend | kQPersistent, dest, comm_info_of(uc), nullptr, {}};
    return rc;
}

// The receive loop of Recv/Sendrecv: post() posts r (in the loop's lower scope: a receive that
// completes at once costs one FS switch in and one out); completes it, counting it once. kRedo:
// the rank was restarted and the receive had not completed: the caller posts it again on the new
// lower half.
template <class Post> int recv_loop(Post post, MPI_Request *r, MPI_Status *st) {
    thread_gate *const tg = gate_ptr();
    tg->pending_lreq = 0;
    tg->pending_counted = 0;
    int rc = test_loop(
        [&](int *out) {
            *out = post(r);
            if (*out != MPI_SUCCESS) return false;
            tg->pending_lreq = (uintptr_t)*r; // (before any safe point: the drain may count it)
            return true;
        },
        [&](int *out) {
            int flag = 0;
            *out = L.Test(r, &flag, st);
            return *out != MPI_SUCCESS || flag;
        },
        kNoWake);
    bool counted = t_gate.pending_counted;
    t_gate.pending_lreq = 0;
    if (rc == kRedo && counted) {
        // Completed before the checkpoint (the drain saw it): its status was kept.
        fill_status(st, t_gate.pending_source, t_gate.pending_tag, t_gate.pending_error,
                    t_gate.pending_bytes);
        return t_gate.pending_error;
    }
    if (rc == MPI_SUCCESS && !counted) count_recv();
    return rc;
}

void start_one(vobj *v, MPI_Request *l, int *rc) {
    if (v && (v->qflags & kQRecv) && v->rec && v->rec->args.size() >= 6) {
        // A persistent receive that a drained message satisfies completes in the upper half.
        const auto &a = v->rec->args;
        MPI_Comm uc = (MPI_Comm)(uintptr_t)a[5];
        if (drained_msg *m = take_drained(uc, (int)a[3], (int)a[4])) {
            MPI_Datatype ldt = to_lower<kind::datatype>((MPI_Datatype)(uintptr_t)a[2]);
            v->done =
                deliver_done(m, (void *)(uintptr_t)a[0], (int)a[1], ldt, to_lower<kind::comm>(uc));
            v->qflags |= kQDone;
            *rc = MPI_SUCCESS;
            return;
        }
    }
    {
        lower_call lc;
        *rc = L.Start(l);
    }
    if (*rc != MPI_SUCCESS || !v) return;
    if (v->qflags & kQSend) {
        // The send's arguments are its creation record's: buf, count, datatype (upper), ...
        uint64_t bytes = 0;
        if (v->rec && v->rec->args.size() >= 3)
            bytes =
                payload_bytes((MPI_Datatype)(uintptr_t)v->rec->args[2], (long long)v->rec->args[1]);
        count_send((comm_info *)v->ext, v->peer, bytes);
        v->qflags |= kQActive;
    }
    if (v->qflags & kQRecv) v->qflags = (v->qflags | kQActive) & ~kQCounted;
}

} // namespace

// ---- sends ----

// A blocking send stays one blocking lower call (the transports' inline fast paths): its message is
// counted first, and a quiesce lets the thread stay inside until the drain, where its receiver
// takes the message (eager, rendezvous or synchronous alike) and the send returns.
int blocking_send(void *fn, cvp buf, int n, DT dt, int dest, int tag, CM c, CM uc, uint64_t bytes) {
    count_send(comm_info_of(uc), dest, bytes);
    t_gate.in_send = 1;
    int rc;
    {
        lower_call lc;
        rc = lf<int (*)(cvp, int, DT, int, int, CM)>(fn)(buf, n, dt, dest, tag, c);
    }
    t_gate.in_send = 0;
    if (rc != MPI_SUCCESS) uncount_send(comm_info_of(uc), dest, bytes);
    return rc;
}

int q_Send(void *fn, cvp buf, int n, DT dt, int dest, int tag, CM c, DT udt, CM uc) {
    return blocking_send(fn, buf, n, dt, dest, tag, c, uc, payload_bytes(udt, n));
}
int q_Ssend(void *fn, cvp buf, int n, DT dt, int dest, int tag, CM c, DT udt, CM uc) {
    return blocking_send(fn, buf, n, dt, dest, tag, c, uc, payload_bytes(udt, n));
}
int q_Rsend(void *fn, cvp buf, int n, DT dt, int dest, int tag, CM c, DT udt, CM uc) {
    return blocking_send(fn, buf, n, dt, dest, tag, c, uc, payload_bytes(udt, n));
}
int q_Bsend(void *fn, cvp buf, int n, DT dt, int dest, int tag, CM c, DT udt, CM uc) {
    int rc;
    {
        lower_call lc;
        rc = lf<int (*)(cvp, int, DT, int, int, CM)>(fn)(buf, n, dt, dest, tag, c);
    }
    if (rc == MPI_SUCCESS) count_send(comm_info_of(uc), dest, payload_bytes(udt, n));
    return rc;
}
int q_Isend(void *fn, cvp buf, int n, DT dt, int dest, int tag, CM c, RQ *r, DT udt, CM uc, RQ *) {
    return plain_isend(fn, buf, n, dt, dest, tag, c, r, uc, payload_bytes(udt, n));
}
int q_Issend(void *fn, cvp buf, int n, DT dt, int dest, int tag, CM c, RQ *r, DT udt, CM uc, RQ *) {
    return plain_isend(fn, buf, n, dt, dest, tag, c, r, uc, payload_bytes(udt, n));
}
int q_Irsend(void *fn, cvp buf, int n, DT dt, int dest, int tag, CM c, RQ *r, DT udt, CM uc, RQ *) {
    return plain_isend(fn, buf, n, dt, dest, tag, c, r, uc, payload_bytes(udt, n));
}
int q_Ibsend(void *fn, cvp buf, int n, DT dt, int dest, int tag, CM c, RQ *r, DT udt, CM uc, RQ *) {
    return plain_isend(fn, buf, n, dt, dest, tag, c, r, uc, payload_bytes(udt, n));
}
int q_Send_init(void *fn, cvp buf, int n, DT dt, int dest, int tag, CM c, RQ *r, DT, CM uc, RQ *) {
    return persistent_send(fn, buf, n, dt, dest, tag, c, r, uc);
}
int q_Ssend_init(void *fn, cvp buf, int n, DT dt, int dest, int tag, CM c, RQ *r, DT, CM uc, RQ *) {
    return persistent_send(fn, buf, n, dt, dest, tag, c, r, uc);
}
int q_Rsend_init(void *fn, cvp buf, int n, DT dt, int dest, int tag, CM c, RQ *r, DT, CM uc, RQ *) {
    return persistent_send(fn, buf, n, dt, dest, tag, c, r, uc);
}
int q_Bsend_init(void *fn, cvp buf, int n, DT dt, int dest, int tag, CM c, RQ *r, DT, CM uc, RQ *) {
    return persistent_send(fn, buf, n, dt, dest, tag, c, r, uc);
}

// ---- receives ----

int q_Recv_init(void *fn, void *buf, int n, DT dt, int src, int tag, CM c, RQ *r, DT, CM, RQ *) {
    int rc;
    {
        lower_call lc;
        rc = lf<int (*)(void *, int, DT, int, int, CM, RQ *)>(fn)(buf, n, dt, src, tag, c, r);
    }
    if (rc == MPI_SUCCESS && r && src != MPI_PROC_NULL)
        t_req_init = {kQRecv | kQPersistent, -1, nullptr, nullptr, {}};
    return rc;
}

int q_Recv(void *fn, void *buf, int n, DT dt, int src, int tag, CM c, ST *st, DT udt, CM uc) {
    if (drained_msg *m = take_drained(uc, src, tag)) return deliver_status(m, buf, n, dt, c, st);
    if (src == MPI_PROC_NULL) {
        lower_call lc;
        return lf<int (*)(void *, int, DT, int, int, CM, ST *)>(fn)(buf, n, dt, src, tag, c, st);
    }
    for (;;) {
        MPI_Request r;
        int rc = recv_loop([&](MPI_Request *rq) { return L.Irecv(buf, n, dt, src, tag, c, rq); },
                           &r, st);
        if (rc != kRedo) return rc;
        dt = to_lower<kind::datatype>(udt);
        c = to_lower<kind::comm>(uc);
        if (drained_msg *m = take_drained(uc, src, tag))
            return deliver_status(m, buf, n, dt, c, st);
    }
}

int q_Irecv(void *fn, void *buf, int n, DT dt, int src, int tag, CM c, RQ *r, DT udt, CM uc, RQ *) {
    if (r) {
        if (drained_msg *m = take_drained(uc, src, tag)) {
            *r = kFakeReq;
            t_req_init = {kQDone, -1, nullptr, deliver_done(m, buf, n, dt, c), {}};
            return MPI_SUCCESS;
        }
    }
    int rc;
    {
        lower_call lc;
        rc = lf<int (*)(void *, int, DT, int, int, CM, RQ *)>(fn)(buf, n, dt, src, tag, c, r);
    }
    if (rc == MPI_SUCCESS && r && src != MPI_PROC_NULL) {
        // A restart posts the receive again with this datatype and communicator, which the
        // program may free meanwhile (MPI keeps them for the pending receive): the request holds
        // them until it is freed (request_free), so that neither handle names another object.
        hold_handle<kind::datatype>(udt);
        hold_handle<kind::comm>(uc);
        t_req_init = {kQRecv | kQActive | kQHolds,
                      -1,
                      nullptr,
                      nullptr,
                      {buf, n, src, tag, (uintptr_t)udt, (uintptr_t)uc}};
    }
    return rc;
}

// Sendrecv and Sendrecv_replace; sbytes: the payload sent (status counters).
static int sendrecv(cvp sbuf, int sn, DT sdt, int dest, int stag, void *rbuf, int rn, DT rdt,
                    int src, int rtag, CM c, ST *st, DT urdt, CM uc, uint64_t sbytes) {
    if (drained_msg *m = take_drained(uc, src, rtag)) {
        int rc = send_loop(L.Isend, sbuf, sn, sdt, dest, stag, c, uc, sbytes);
        int rc2 = deliver_status(m, rbuf, rn, rdt, c, st);
        return rc != MPI_SUCCESS ? rc : rc2;
    }
    // One lower scope posts both, tests the send, then the receive (which is pending during the
    // send's test too: a drain counts it and keeps its status).
    MPI_Request rq[2];
    comm_info *const ci = comm_info_of(uc);
    thread_gate *const tg = gate_ptr();
    tg->pending_lreq = 0;
    tg->pending_counted = 0;
    int rc_send = MPI_SUCCESS;
    bool posted = false, send_done = false;
    int rc = test_loop(
        [&](int *out) {
            *out = L.Irecv(rbuf, rn, rdt, src, rtag, c, &rq[0]);
            if (*out == MPI_SUCCESS) *out = L.Isend(sbuf, sn, sdt, dest, stag, c, &rq[1]);
            if (*out != MPI_SUCCESS) return false;
            posted = true;
            count_send(ci, dest, sbytes);
            if (src != MPI_PROC_NULL) tg->pending_lreq = (uintptr_t)rq[0];
            return true;
        },
        [&](int *out) {
            int flag = 0;
            if (!send_done) {
                rc_send = L.Test(&rq[1], &flag, MPI_STATUS_IGNORE);
                if (rc_send == MPI_SUCCESS && !flag) return false;
                send_done = true;
            }
            *out = L.Test(&rq[0], &flag, st);
            return *out != MPI_SUCCESS || flag;
        },
        kNoWake);
    bool counted = t_gate.pending_counted;
    t_gate.pending_lreq = 0;
    if (!posted) return rc;
    if (rc == kRedo) {
        // Restarted: the send was delivered (the counts agreed); the receive is done or posted
        // again on the new lower half.
        if (src == MPI_PROC_NULL) {
            fill_status(st, MPI_PROC_NULL, MPI_ANY_TAG, MPI_SUCCESS, 0);
            return rc_send != MPI_SUCCESS ? rc_send : MPI_SUCCESS;
        }
        if (counted) {
            fill_status(st, t_gate.pending_source, t_gate.pending_tag, t_gate.pending_error,
                        t_gate.pending_bytes);
            return rc_send != MPI_SUCCESS ? rc_send : t_gate.pending_error;
        }
        rc = q_Recv(nullptr, rbuf, rn, to_lower<kind::datatype>(urdt), src, rtag,
                    to_lower<kind::comm>(uc), st, urdt, uc);
        return rc_send != MPI_SUCCESS ? rc_send : rc;
    }
    if (rc == MPI_SUCCESS && src != MPI_PROC_NULL && !counted) count_recv();
    return rc_send != MPI_SUCCESS ? rc_send : rc;
}

int q_Sendrecv(void *, cvp sbuf, int sn, DT sdt, int dest, int stag, void *rbuf, int rn, DT rdt,
               int src, int rtag, CM c, ST *st, DT usdt, DT urdt, CM uc) {
    return sendrecv(sbuf, sn, sdt, dest, stag, rbuf, rn, rdt, src, rtag, c, st, urdt, uc,
                    payload_bytes(usdt, sn));
}

int q_Sendrecv_replace(void *, void *buf, int n, DT dt, int dest, int stag, int src, int rtag, CM c,
                       ST *st, DT udt, CM uc) {
    // Its send buffer is its receive buffer: the outgoing data is packed into a temporary buffer
    // first (upper memory, so in an image), sent as MPI_PACKED (as MPICH's own Sendrecv_replace
    // does; it matches any receive type), and the receive goes straight into buf with the
    // application's type. Then it is a Sendrecv: one lower scope, a test loop with safe points,
    // drained messages first, and a restart completes it.
    int psize = 0, rc;
    {
        lower_call lc;
        rc = L.Pack_size(n, dt, c, &psize);
    }
    if (rc != MPI_SUCCESS) return rc;
    unsigned char small[256];
    unsigned char *tmp =
        psize <= (int)sizeof small ? small : (unsigned char *)malloc((size_t)psize);
    if (!tmp) return MPI_ERR_NO_MEM;
    int pos = 0;
    {
        lower_call lc;
        rc = L.Pack(buf, n, dt, tmp, psize, &pos, c);
    }
    if (rc == MPI_SUCCESS)
        rc = sendrecv(tmp, pos, L.packed, dest, stag, buf, n, dt, src, rtag, c, st, udt, uc,
                      (uint64_t)pos);
    if (tmp != small) free(tmp);
    return rc;
}

// ---- probes ----

void poll_pace_measure() {
    if (g_have_fsgsbase) return;
    if (const char *e = getenv("GHOST_MPI_POLL_PACE_NS"); e && *e) { // 0: never paced
        g_poll_pace_ns = strtoull(e, nullptr, 10);
        return;
    }
    // Best of three batches of ARCH_SET_FS to the thread pointer this thread already has.
    const unsigned long fs = current_fs();
    uint64_t best = UINT64_MAX;
    for (int batch = 0; batch < 3; batch++) {
        const uint64_t t0 = monotonic_ns();
        for (int i = 0; i < 20; i++)
            syscall(SYS_arch_prctl, ARCH_SET_FS, fs);
        best = std::min(best, (monotonic_ns() - t0) / 20);
    }
    g_poll_pace_ns = 6 * best;
}

int q_Iprobe(void *fn, int src, int tag, CM c, int *flag, ST *st, CM uc) {
    if (drained_msg *m = take_drained(uc, src, tag, true)) {
        *flag = 1;
        fill_status(st, m->source, m->tag, MPI_SUCCESS, (long long)m->bytes);
        return MPI_SUCCESS;
    }
    if (src != MPI_PROC_NULL && poll_paced()) {
        *flag = 0;
        return MPI_SUCCESS;
    }
    int rc;
    {
        lower_call lc;
        rc = lf<int (*)(int, int, CM, int *, ST *)>(fn)(src, tag, c, flag, st);
    }
    poll_found(rc != MPI_SUCCESS || *flag);
    return rc;
}

int q_Probe(void *fn, int src, int tag, CM c, ST *st, CM uc) {
    auto from_drained = [&](int *rc) {
        drained_msg *m = take_drained(uc, src, tag, true);
        if (!m) return false;
        fill_status(st, m->source, m->tag, MPI_SUCCESS, (long long)m->bytes);
        *rc = MPI_SUCCESS;
        return true;
    };
    int rc;
    if (from_drained(&rc)) return rc;
    if (src == MPI_PROC_NULL) {
        lower_call lc;
        return lf<int (*)(int, int, CM, ST *)>(fn)(src, tag, c, st);
    }
    for (;;) {
        int rc2 = test_loop(
            [&](int *out) {
                int flag = 0;
                *out = L.Iprobe(src, tag, c, &flag, st);
                return *out != MPI_SUCCESS || flag;
            },
            from_drained);
        if (rc2 != kRedo) return rc2;
        c = to_lower<kind::comm>(uc);
    }
}

int q_Improbe(void *fn, int src, int tag, CM c, int *flag, MS *m, ST *st, CM uc, MS *) {
    if (drained_msg *d = take_drained(uc, src, tag)) {
        *flag = 1;
        fill_status(st, d->source, d->tag, MPI_SUCCESS, (long long)d->bytes);
        *m = mprobed_add(d);
        return MPI_SUCCESS;
    }
    if (src != MPI_PROC_NULL && poll_paced()) {
        *flag = 0;
        return MPI_SUCCESS;
    }
    MPI_Status local;
    MPI_Status *s = status_ignored(st) ? &local : st;
    int rc;
    {
        lower_call lc;
        rc = lf<int (*)(int, int, CM, int *, MS *, ST *)>(fn)(src, tag, c, flag, m, s);
    }
    poll_found(rc != MPI_SUCCESS || *flag);
    if (rc == MPI_SUCCESS && *flag && src != MPI_PROC_NULL && *m != L.msg_null) {
        count_recv();
        matched_add(*m, comm_info_of(uc), s);
    }
    return rc;
}

int q_Mprobe(void *fn, int src, int tag, CM c, MS *m, ST *st, CM uc, MS *) {
    bool drained = false;
    auto from_drained = [&](int *rc) {
        drained_msg *d = take_drained(uc, src, tag);
        if (!d) return false;
        fill_status(st, d->source, d->tag, MPI_SUCCESS, (long long)d->bytes);
        *m = mprobed_add(d);
        *rc = MPI_SUCCESS;
        drained = true;
        return true;
    };
    int rc;
    if (from_drained(&rc)) return rc;
    if (src == MPI_PROC_NULL) {
        lower_call lc;
        return lf<int (*)(int, int, CM, MS *, ST *)>(fn)(src, tag, c, m, st);
    }
    MPI_Status local;
    MPI_Status *s = status_ignored(st) ? &local : st;
    do {
        rc = test_loop(
            [&](int *out) {
                int flag = 0;
                *out = L.Improbe(src, tag, c, &flag, m, s);
                return *out != MPI_SUCCESS || flag;
            },
            from_drained);
        if (rc == kRedo) c = to_lower<kind::comm>(uc);
    } while (rc == kRedo);
    // Taken off the lower queue: it counts as received now (the drain cannot see it any more).
    if (rc == MPI_SUCCESS && !drained && *m != L.msg_null) {
        count_recv();
        matched_add(*m, comm_info_of(uc), s);
    }
    return rc;
}

int q_Mrecv(void *fn, void *buf, int n, DT dt, MS *m, ST *st, DT, MS *) {
    if (m && g_mprobed) {
        if (drained_msg *d = mprobed_take(*m)) {
            *m = L.msg_null;
            return deliver_status(d, buf, n, dt, (MPI_Comm)d->ci->lower, st);
        }
    }
    if (m) matched_drop(*m);
    lower_call lc;
    return lf<int (*)(void *, int, DT, MS *, ST *)>(fn)(buf, n, dt, m, st);
}

int q_Imrecv(void *fn, void *buf, int n, DT dt, MS *m, RQ *r, DT, MS *, RQ *) {
    if (m && r && g_mprobed) {
        if (drained_msg *d = mprobed_take(*m)) {
            *m = L.msg_null;
            *r = kFakeReq;
            t_req_init = {
                kQDone, -1, nullptr, deliver_done(d, buf, n, dt, (MPI_Comm)d->ci->lower), {}};
            return MPI_SUCCESS;
        }
    }
    if (m) matched_drop(*m);
    lower_call lc;
    return lf<int (*)(void *, int, DT, MS *, RQ *)>(fn)(buf, n, dt, m, r);
}

// ---- completion ----

int q_Wait(void *, RQ *r, ST *st, RQ *ur) {
    vobj *v = req_vobj(*ur);
    if (v && v->done) {
        int err = finish_done(v, st);
        if (!(v->qflags & kQPersistent)) *r = L.req_null;
        return err;
    }
    MPI_Status local;
    MPI_Status *s = (v && (v->qflags & kQCancel) && status_ignored(st)) ? &local : st;
    int rc = test_loop(
        [&](int *out) {
            int flag = 0;
            *out = L.Test(r, &flag, s);
            return *out != MPI_SUCCESS || flag;
        },
        kNoWake);
    if (rc == kRedo) { // restarted: the request is complete in the upper half or posted again
        *r = to_lower<kind::request>(*ur);
        return q_Wait(nullptr, r, st, ur);
    }
    if (rc == MPI_SUCCESS) note_complete(v, s);
    return rc;
}

int q_Test(void *, RQ *r, int *flag, ST *st, RQ *ur) {
    vobj *v = req_vobj(*ur);
    if (v && v->done) {
        *flag = 1;
        int err = finish_done(v, st);
        if (!(v->qflags & kQPersistent)) *r = L.req_null;
        return err;
    }
    if (v && !(v->qflags & kQPersistent) && poll_paced()) {
        *flag = 0;
        return MPI_SUCCESS;
    }
    MPI_Status local;
    MPI_Status *s = (v && (v->qflags & kQCancel) && status_ignored(st)) ? &local : st;
    int rc;
    {
        lower_call lc;
        rc = L.Test(r, flag, s);
    }
    poll_found(rc != MPI_SUCCESS || *flag);
    if (rc == MPI_SUCCESS && *flag) note_complete(v, s);
    return rc;
}

int q_Testall(void *, int n, RQ *r, int *flag, ST *st, RQ *ur) {
    if (surely_active(n, ur) && poll_paced()) {
        *flag = 0;
        return MPI_SUCCESS;
    }
    vobj_array vs(n);
    mask_done(n, r, ur, vs.p);
    status_array sa(st, n, vs.p);
    int rc;
    {
        lower_call lc;
        rc = L.Testall(n, r, flag, sa.p);
    }
    poll_found(rc != MPI_SUCCESS || *flag);
    if (*flag) {
        for (int i = 0; i < n; i++) {
            if (vs[i] && vs[i]->done)
                finish_done(vs[i], sa.at(i));
            else
                note_complete(vs[i], sa.at(i));
        }
    } else {
        for (int i = 0; i < n; i++) // not completed: the stand-ins stay
            if (vs[i] && vs[i]->done && !(vs[i]->qflags & kQPersistent)) r[i] = kFakeReq;
    }
    return rc;
}

namespace {
#if defined(GHOST_MPI_MPICH)
// MPICH 4.0.2's MPI_Testall fails on persistent collectives ("Fatal error in internal_Testall")
// and mishandles its I/O requests, which its MPI_Waitall serves: the wait asks each request with
// MPI_Request_get_status (which leaves it alone) and completes them all with MPI_Waitall once
// every one is done, all or none, as MPI_Testall would.
struct all_done_step {
    vobj **vs = nullptr; // the upper requests (generalized ones are not asked: see below)
    int n;
    RQ *r;
    MPI_Status *statuses;
    unsigned char small[64];
    unsigned char *ready;
    all_done_step(int n_, RQ *r_, MPI_Status *st) : n(n_), r(r_), statuses(st), ready(small) {
        if (n > (int)sizeof small) ready = (unsigned char *)malloc((size_t)n);
        if (!ready) fatal("cannot wait for requests", "out of memory");
        memset(ready, 0, (size_t)n);
    }
    ~all_done_step() {
        if (ready != small) free(ready);
    }
    bool operator()(int *out) {
        for (int i = 0; i < n; i++) {
            if (ready[i]) continue;
            // MPICH's MPI_Request_get_status runs a complete generalized request's query
            // function, which MPI_Waitall then runs again (the program sees two calls): one is
            // done once the program has called MPI_Grequest_complete on it.
            if (vs && vs[i] && (vs[i]->qflags & kQGeneralized)) {
                if (!(__atomic_load_n(&vs[i]->qflags, __ATOMIC_ACQUIRE) & kQGreqComplete))
                    return false;
                ready[i] = 1;
                continue;
            }
            int f = 0;
            *out = L.Request_get_status(r[i], &f, MPI_STATUS_IGNORE);
            if (*out != MPI_SUCCESS) return true;
            if (!f) return false;
            ready[i] = 1;
        }
        *out = L.Waitall(n, r, statuses);
        return true;
    }
};
#endif
} // namespace

int q_Waitall(void *, int n, RQ *r, ST *st, RQ *ur) {
    vobj_array vs(n);
    mask_done(n, r, ur, vs.p);
    status_array sa(st, n, vs.p);
#if defined(GHOST_MPI_MPICH)
    all_done_step step(n, r, sa.p);
    step.vs = vs.p;
    int rc = test_loop([&](int *out) { return step(out); }, kNoWake);
#else
    int rc = test_loop(
        [&](int *out) {
            int flag = 0;
            *out = L.Testall(n, r, &flag, sa.p);
            return *out != MPI_SUCCESS || flag;
        },
        kNoWake);
#endif
    if (rc == kRedo) {
        relower(n, r, ur);
        return q_Waitall(nullptr, n, r, st, ur);
    }
    if (rc == MPI_SUCCESS)
        for (int i = 0; i < n; i++) {
            if (vs[i] && vs[i]->done)
                finish_done(vs[i], sa.at(i));
            else
                note_complete(vs[i], sa.at(i));
        }
    return rc;
}

namespace {
// The first upper-done request of an array, or -1.
// Fills vs[0..n) (some_done reads them all).
int first_done(int n, RQ *ur, vobj **vs) {
    int first = -1;
    for (int i = 0; i < n; i++) {
        vs[i] = req_vobj(ur[i]);
        if (first < 0 && vs[i] && vs[i]->done) first = i;
    }
    return first;
}
} // namespace

int q_Testany(void *, int n, RQ *r, int *idx, int *flag, ST *st, RQ *ur) {
    vobj_array vs(n);
    int d = first_done(n, ur, vs.p);
    if (d >= 0) {
        *idx = d;
        *flag = 1;
        int err = finish_done(vs[d], st);
        if (!(vs[d]->qflags & kQPersistent)) r[d] = L.req_null;
        return err;
    }
    if (surely_active(n, ur) && poll_paced()) {
        *flag = 0;
        *idx = MPI_UNDEFINED;
        return MPI_SUCCESS;
    }
    MPI_Status local;
    bool canc = false;
    for (int i = 0; i < n; i++)
        canc |= vs[i] && (vs[i]->qflags & kQCancel);
    MPI_Status *s = canc && status_ignored(st) ? &local : st;
    int rc;
    {
        lower_call lc;
        rc = L.Testany(n, r, idx, flag, s);
    }
    poll_found(rc != MPI_SUCCESS || *flag);
    if (rc == MPI_SUCCESS && *flag && *idx != MPI_UNDEFINED) note_complete(vs[*idx], s);
    return rc;
}

int q_Waitany(void *, int n, RQ *r, int *idx, ST *st, RQ *ur) {
    vobj_array vs(n);
    int d = first_done(n, ur, vs.p);
    if (d >= 0) {
        *idx = d;
        int err = finish_done(vs[d], st);
        if (!(vs[d]->qflags & kQPersistent)) r[d] = L.req_null;
        return err;
    }
    MPI_Status local;
    bool canc = false;
    for (int i = 0; i < n; i++)
        canc |= vs[i] && (vs[i]->qflags & kQCancel);
    MPI_Status *s = canc && status_ignored(st) ? &local : st;
    int rc = test_loop(
        [&](int *out) {
            int flag = 0;
            *out = L.Testany(n, r, idx, &flag, s);
            return *out != MPI_SUCCESS || flag;
        },
        kNoWake);
    if (rc == kRedo) {
        relower(n, r, ur);
        return q_Waitany(nullptr, n, r, idx, st, ur);
    }
    if (rc == MPI_SUCCESS && *idx != MPI_UNDEFINED) note_complete(vs[*idx], s);
    return rc;
}

namespace {
int some_done(int n, RQ *r, int *outc, int *idx, ST *st, vobj **vs) {
    int k = 0;
    for (int i = 0; i < n; i++)
        if (vs[i] && vs[i]->done) {
            MPI_Status *s = status_ignored(st) ? st : st + k;
            finish_done(vs[i], s);
            if (!(vs[i]->qflags & kQPersistent)) r[i] = L.req_null;
            idx[k++] = i;
        }
    *outc = k;
    return MPI_SUCCESS;
}
} // namespace

int q_Testsome(void *, int n, RQ *r, int *outc, int *idx, ST *st, RQ *ur) {
    vobj_array vs(n);
    if (first_done(n, ur, vs.p) >= 0) return some_done(n, r, outc, idx, st, vs.p);
    if (surely_active(n, ur) && poll_paced()) {
        *outc = 0;
        return MPI_SUCCESS;
    }
    status_array sa(st, n, vs.p);
    int rc;
    {
        lower_call lc;
        rc = L.Testsome(n, r, outc, idx, sa.p);
    }
    poll_found(rc != MPI_SUCCESS || *outc != 0);
    if (rc == MPI_SUCCESS && *outc != MPI_UNDEFINED)
        for (int k = 0; k < *outc; k++)
            note_complete(vs[idx[k]], sa.at(k));
    return rc;
}

int q_Waitsome(void *, int n, RQ *r, int *outc, int *idx, ST *st, RQ *ur) {
    vobj_array vs(n);
    if (first_done(n, ur, vs.p) >= 0) return some_done(n, r, outc, idx, st, vs.p);
    status_array sa(st, n, vs.p);
    int rc = test_loop(
        [&](int *out) {
            *out = L.Testsome(n, r, outc, idx, sa.p);
            return *out != MPI_SUCCESS || *outc != 0;
        },
        kNoWake);
    if (rc == kRedo) {
        relower(n, r, ur);
        return q_Waitsome(nullptr, n, r, outc, idx, st, ur);
    }
    if (rc == MPI_SUCCESS && *outc != MPI_UNDEFINED)
        for (int k = 0; k < *outc; k++)
            note_complete(vs[idx[k]], sa.at(k));
    return rc;
}

int q_Request_get_status(void *fn, RQ r, int *flag, ST *st, RQ ur) {
    vobj *v = req_vobj(ur);
    if (v && v->done) {
        done_status *d = (done_status *)v->done;
        *flag = 1;
        fill_status(st, d->source, d->tag, d->error, d->bytes);
        return MPI_SUCCESS;
    }
    lower_call lc;
    return lf<int (*)(RQ, int *, ST *)>(fn)(r, flag, st);
}

int q_Start(void *, RQ *r, RQ *ur) {
    int rc = MPI_SUCCESS;
    start_one(req_vobj(*ur), r, &rc);
    return rc;
}

int q_Startall(void *, int n, RQ *r, RQ *ur) {
    for (int i = 0; i < n; i++) {
        int rc = MPI_SUCCESS;
        start_one(req_vobj(ur[i]), &r[i], &rc);
        if (rc != MPI_SUCCESS) return rc;
    }
    return MPI_SUCCESS;
}

int q_Cancel(void *fn, RQ *r, RQ *ur) {
    vobj *v = req_vobj(*ur);
    if (v && v->done) return MPI_SUCCESS; // already complete: cancelling fails, as MPI says
    if (v) v->qflags |= kQCancel;
    lower_call lc;
    return lf<int (*)(RQ *)>(fn)(r);
}

int q_Request_free(void *fn, RQ *r, RQ *ur) {
    vobj *v = req_vobj(*ur);
    if (v && v->done && !(v->qflags & kQPersistent)) {
        *r = L.req_null;
        return MPI_SUCCESS;
    }
    lower_call lc;
    return lf<int (*)(RQ *)>(fn)(r);
}

// ---- the drain ----

namespace {
struct drain_ctx {
    uint64_t msgs = 0, bytes = 0;
    bool failed = false;
};

// Messages on one communicator that nobody has asked for yet, into upper memory.
void drain_comm(comm_info *ci, void *arg) {
    auto *dc = (drain_ctx *)arg;
    if (!ci->lower) return;
    for (;;) {
        int flag = 0;
        MPI_Message msg;
        MPI_Status st;
        int n = 0;
        {
            lower_call lc;
            if (L.Improbe(MPI_ANY_SOURCE, MPI_ANY_TAG, (MPI_Comm)ci->lower, &flag, &msg, &st) !=
                    MPI_SUCCESS ||
                !flag)
                return;
            L.Get_count(&st, L.byte, &n);
        }
        drained_msg *m = (drained_msg *)calloc(1, sizeof *m);
        unsigned char *data = (unsigned char *)malloc(n > 0 ? (size_t)n : 1);
        if (!m || !data) fatal("cannot drain a message", "out of memory");
        MPI_Request r;
        {
            lower_call lc;
            L.Imrecv(data, n, L.byte, &msg, &r);
            int done = 0;
            while (!done && L.Test(&r, &done, MPI_STATUS_IGNORE) == MPI_SUCCESS) {
            }
        }
        m->ci = ci;
        m->source = st.MPI_SOURCE;
        m->tag = st.MPI_TAG;
        m->bytes = (size_t)n;
        m->data = data;
        drained_push(m);
        count_recv();
        dc->msgs++;
        dc->bytes += (uint64_t)n;
    }
}

// Pending receives of the application (requests) that completed in the lower half meanwhile.
void drain_request(vobj *v, void *) {
    if ((v->qflags & (kQRecv | kQActive)) != (kQRecv | kQActive) || (v->qflags & kQCounted)) return;
    int flag = 0;
    MPI_Status st;
    {
        lower_call lc;
        if (L.Request_get_status((MPI_Request)v->lower, &flag, &st) != MPI_SUCCESS || !flag) return;
    }
    int cancelled = 0;
    if (v->qflags & kQCancel) {
        lower_call lc;
        L.Test_cancelled(&st, &cancelled);
    }
    if (cancelled) {
        v->qflags &= ~kQActive;
        return;
    }
    v->qflags |= kQCounted;
    count_recv();
}

void drain_pending() {
    for (thread_gate *t : gate_threads()) {
        if (!t->parked || !t->pending_lreq || t->pending_counted) continue;
        int flag = 0, bytes = 0;
        MPI_Status st;
        {
            lower_call lc;
            if (L.Request_get_status((MPI_Request)t->pending_lreq, &flag, &st) != MPI_SUCCESS)
                continue;
            if (flag) L.Get_count(&st, L.byte, &bytes);
        }
        if (flag) {
            t->pending_source = st.MPI_SOURCE;
            t->pending_tag = st.MPI_TAG;
            t->pending_error = MPI_SUCCESS; // (a single completion leaves MPI_ERROR unset)
            t->pending_bytes = bytes;
            t->pending_counted = 1;
            count_recv();
        }
    }
    requests_visit(drain_request, nullptr);
}

// Messages matched (Mprobe/Improbe) and not received yet: received into upper memory, their
// message handles turned into stand-ins that Mrecv/Imrecv take from the upper half (mprobed), as
// for a message matched from the drained queue. Already counted (when matched). false when one
// has not arrived by the deadline (its Mrecv waits for it; the next quiesce tries again).
bool matched_to_upper(struct timespec t0, long timeout_ms) {
    for (;;) {
        matched *e;
        {
            std::lock_guard<std::mutex> g(g_matched_mu);
            e = g_matched;
            if (e) g_matched = e->next;
        }
        if (!e) break;
        vobj *v = vobj_find_lower(kind::message, e->lower);
        if (!v || !e->ci) { // (no handle holds it any more; no communicator info: left as it is)
            free(e);
            continue;
        }
        drained_msg *m = (drained_msg *)calloc(1, sizeof *m);
        unsigned char *data = (unsigned char *)malloc(e->bytes > 0 ? (size_t)e->bytes : 1);
        if (!m || !data) fatal("cannot receive a matched message", "out of memory");
        MPI_Message msg = (MPI_Message)e->lower;
        MPI_Request r = L.req_null;
        {
            lower_call lc;
            if (L.Imrecv(data, e->bytes, L.byte, &msg, &r) != MPI_SUCCESS)
                fatal("cannot receive a matched message", "MPI_Imrecv failed");
        }
        m->ci = e->ci;
        m->source = e->source;
        m->tag = e->tag;
        m->bytes = (size_t)e->bytes;
        m->data = data;
        vobj_set_lower(v, (uintptr_t)mprobed_add(m, (uintptr_t)r));
        free(e);
    }
    for (;;) {
        bool waiting = false;
        {
            std::lock_guard<std::mutex> g(g_mprobed_mu);
            for (mprobed *e = g_mprobed; e; e = e->next) {
                if (!e->pending) continue;
                MPI_Request r = (MPI_Request)e->pending;
                int done = 0;
                {
                    lower_call lc;
                    if (L.Test(&r, &done, MPI_STATUS_IGNORE) != MPI_SUCCESS)
                        fatal("cannot receive a matched message", "MPI_Test failed");
                }
                if (done)
                    e->pending = 0;
                else
                    waiting = true;
            }
        }
        if (!waiting) return true;
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if ((now.tv_sec - t0.tv_sec) * 1000 + (now.tv_nsec - t0.tv_nsec) / 1000000 > timeout_ms)
            return false;
        raw_yield();
    }
}
} // namespace

void request_mark_collective(MPI_Request upper, uintptr_t comm) {
    // Only on a communicator with a collective clock (not an intercommunicator): elsewhere the
    // other members may not have started it, and a checkpoint refuses the pending request.
    comm_info *ci = comm_info_of_raw(comm);
    if (!ci || !ci->tracked) return;
    if (vobj *v = req_vobj(upper)) v->qflags |= kQCollective;
}

void request_mark_generalized(MPI_Request upper) {
    if (vobj *v = req_vobj(upper)) v->qflags |= kQGeneralized;
}

void request_mark_generalized_complete(MPI_Request upper) {
    if (vobj *v = req_vobj(upper)) __atomic_or_fetch(&v->qflags, kQGreqComplete, __ATOMIC_RELEASE);
}

void request_mark_io(MPI_Request upper) {
    if (vobj *v = req_vobj(upper)) v->qflags |= kQCollective;
}

namespace {
// A nonblocking collective started on every member (the clock agreed) completes once they all
// make progress, which they do while they drain (and, drained, while they wait for the others):
// each is tested (MPI_Request_get_status: the request stays the program's) until it is complete,
// so that the image holds it complete and a restart needs no lower request for it.
void collective_pending(vobj *v, void *arg) {
    if (!(v->qflags & kQCollective) || v->done || v->ckpt_done ||
        v->lower == (uintptr_t)L.req_null || v->lower == (uintptr_t)kFakeReq)
        return;
    int flag = 0;
    MPI_Status st;
    {
        lower_call lc;
        if (L.Request_get_status((MPI_Request)v->lower, &flag, &st) != MPI_SUCCESS) flag = 0;
    }
    if (!flag) *(bool *)arg = true;
}

bool collectives_complete() {
    bool pending = false;
    requests_visit(collective_pending, &pending);
    return !pending;
}
} // namespace

int drain_until(uint64_t expected, long timeout_ms, uint64_t *msgs, uint64_t *bytes,
                std::string *why) {
    drain_ctx dc;
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    auto drained = [&] {
        return g_recvd.load() >= expected && matched_to_upper(t0, timeout_ms) &&
               collectives_complete();
    };
    // Counted already: nothing sent to this rank is left in the lower half, so no lower call is
    // made (each makes an oversubscribed Open MPI yield the CPU: 15 ms for 8 computing ranks on
    // 2 cores, with nothing in flight).
    while (!drained()) {
        // Nonblocking collectives first: a communicator that MPI_Comm_idup is making may not be
        // probed before it completes (Open MPI's ob1 crashes on one it has not activated yet).
        if (collectives_complete()) {
            drain_pending();
            comms_fill_pending();
            comms_visit(drain_comm, &dc);
            if (drained()) break;
        }
        clock_gettime(CLOCK_MONOTONIC, &now);
        long ms = (now.tv_sec - t0.tv_sec) * 1000 + (now.tv_nsec - t0.tv_nsec) / 1000000;
        if (ms > timeout_ms) {
            *msgs = dc.msgs;
            *bytes = dc.bytes;
            if (g_recvd.load() < expected)
                *why = "received " + std::to_string(g_recvd.load()) + " of " +
                       std::to_string(expected) + " messages";
            else if (!collectives_complete())
                *why = "a nonblocking collective (or MPI_Comm_idup) the program started did not "
                       "complete";
            else
                *why = "a message matched by MPI_Mprobe/MPI_Improbe did not arrive";
            return -1;
        }
        raw_yield();
    }
    comms_fill_pending();
    *msgs = dc.msgs;
    *bytes = dc.bytes;
    return 0;
}

// ---- checkpoint and restart ----

namespace {
struct ckpt_ctx {
    int rank;
    req_mode mode;
    char *why;
    size_t why_len;
    bool refused;
};

// What a restart can post again (or complete: a send's receiver has its message once the
// quiesce's counts agreed).
bool repostable(const vobj *v) {
    const bool persistent = v->qflags & kQPersistent;
    return (v->qflags & kQActive) && !(v->qflags & kQCancel) &&
           ((v->qflags & (kQIsend | kQSend)) ||
            ((v->qflags & kQRecv) && (persistent || v->ra.comm)));
}

// Nothing here changes what the running rank does with its requests (a checkpoint without
// --kill goes on as if none was taken): completions are only recorded, for a restart.
void request_before_checkpoint(vobj *v, void *arg) {
    auto *cx = (ckpt_ctx *)arg;
    if (cx->refused || v->done) return;
    const bool persistent = v->qflags & kQPersistent;
    if (persistent && !(v->qflags & kQActive)) {
        // Inactive: its record makes it again. A completion recorded while it was active at an
        // earlier checkpoint is stale: a restart from this one would complete it with that status.
        if (cx->mode != req_check) {
            free(v->ckpt_done);
            v->ckpt_done = nullptr;
        }
        return;
    }
    if (v->lower == (uintptr_t)L.req_null) return;
    const char *kind_why =
        "a pending nonblocking request that is not a point-to-point send or receive (a "
        "nonblocking collective, MPI_Imrecv, a generalized or cancelled request) cannot be "
        "carried yet";
    // A generalized request the program has not completed: whatever the library answers for it
    // (MPICH's status query may call it complete), its MPI_Grequest_complete after a restart
    // would name a request the new lower half never made.
    if ((v->qflags & kQGeneralized) && !(v->qflags & kQGreqComplete)) {
        const char *greq_why =
            "a generalized request (MPI_Grequest_start) is pending: it cannot be carried yet";
        if (cx->mode == req_check) // (otherwise the coordinator names the rank)
            snprintf(cx->why, cx->why_len, "rank %d: %s", cx->rank, greq_why);
        else
            snprintf(cx->why, cx->why_len, "%s", greq_why);
        cx->refused = true;
        return;
    }
    if (cx->mode == req_check) { // after req_convert, by the agent's manager: no lower calls
        if (v->ckpt_done || repostable(v)) return;
        snprintf(cx->why, cx->why_len, "rank %d: %s", cx->rank, kind_why);
        cx->refused = true;
        return;
    }
    if (cx->mode == req_refuse) {
        snprintf(cx->why, cx->why_len,
                 "rank %d: a nonblocking request is pending and the job is not quiesced: "
                 "checkpoint the whole job (ghost checkpoint JOB)",
                 cx->rank);
        cx->refused = true;
        return;
    }
    int flag = 0, bytes = 0;
    MPI_Status st;
    {
        lower_call lc;
        if (L.Request_get_status((MPI_Request)v->lower, &flag, &st) != MPI_SUCCESS) flag = 0;
        if (flag) L.Get_count(&st, L.byte, &bytes);
    }
    if (!flag) {
        free(v->ckpt_done);
        v->ckpt_done = nullptr;
        if (!repostable(v)) { // (the coordinator names the rank of this thread's answer)
            snprintf(cx->why, cx->why_len, "%s", kind_why);
            cx->refused = true;
        }
        return;
    }
    if (!v->ckpt_done) v->ckpt_done = malloc(sizeof(done_status));
    if (!v->ckpt_done) {
        snprintf(cx->why, cx->why_len, "out of memory");
        cx->refused = true;
        return;
    }
    // (MPI_ERROR is left unset by single completions.)
    *(done_status *)v->ckpt_done = {st.MPI_SOURCE, st.MPI_TAG, MPI_SUCCESS, bytes};
}

void request_after_restart(vobj *v, void *) {
    if (v->done) return;
    const bool persistent = v->qflags & kQPersistent;
    if (v->ckpt_done) { // complete at the checkpoint: complete in the upper half now
        v->done = v->ckpt_done;
        v->ckpt_done = nullptr;
        if (!persistent) v->lower = (uintptr_t)kFakeReq; // persistent: the replayed one
        v->qflags = (v->qflags & ~(kQActive | kQCounted | kQCancel)) | kQDone;
        return;
    }
    if (!(v->qflags & kQActive)) return;
    if (v->qflags & (kQIsend | kQSend)) {
        done_status *d = (done_status *)malloc(sizeof *d);
        if (!d) fatal("cannot carry a send request", "out of memory");
        *d = {MPI_ANY_SOURCE, MPI_ANY_TAG, MPI_SUCCESS, 0};
        v->done = d;
        if (!persistent) v->lower = (uintptr_t)kFakeReq; // persistent: the replayed one, inactive
        v->qflags = (v->qflags & ~kQActive) | kQDone;
        return;
    }
    if (persistent && (v->qflags & kQRecv)) { // the replayed request, started as it was
        MPI_Request l = (MPI_Request)v->lower;
        int rc;
        {
            lower_call lc;
            rc = L.Start(&l);
        }
        if (rc != MPI_SUCCESS) fatal("cannot start a persistent receive again after a restart", "");
        v->lower = (uintptr_t)l;
        v->qflags &= ~kQCounted;
        return;
    }
    if (!(v->qflags & kQRecv) || !v->ra.comm) return;
    const recv_args &a = v->ra;
    MPI_Datatype dt = to_lower<kind::datatype>((MPI_Datatype)a.datatype);
    MPI_Comm c = to_lower<kind::comm>((MPI_Comm)a.comm);
    MPI_Request l = L.req_null;
    int rc;
    {
        lower_call lc;
        rc = L.Irecv(a.buf, a.count, dt, a.source, a.tag, c, &l);
    }
    if (rc != MPI_SUCCESS) fatal("cannot post a pending receive again after a restart", "");
    v->lower = (uintptr_t)l;
    v->qflags &= ~kQCounted;
}
} // namespace

int requests_before_checkpoint(int rank, req_mode mode, char *why, size_t why_len) {
    if (!L.ready) return 0;
    ckpt_ctx cx{rank, mode, why, why_len, false};
    requests_visit(request_before_checkpoint, &cx);
    return cx.refused ? -1 : 0;
}

// request_free of a receive that held its datatype and communicator (q_Irecv).
void release_request_holds(vobj *v) {
    auto as = [](uintptr_t w, auto h) {
        using H = decltype(h);
        if constexpr (std::is_pointer_v<H>)
            return (H)w;
        else
            return (H)(int)w;
    };
    MPI_Datatype dt = as(v->ra.datatype, MPI_Datatype{});
    MPI_Comm c = as(v->ra.comm, MPI_Comm{});
    v->qflags &= ~kQHolds;
    release_handle<kind::datatype>(dt);
    release_handle<kind::comm>(c);
}

void requests_after_restart() {
    requests_visit(request_after_restart, nullptr);
}

void drain_progress() {
    int flag = 0;
    lower_call lc;
    L.Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, L.world, &flag, MPI_STATUS_IGNORE);
}

} // namespace ghost::mpi
