// SPDX-License-Identifier: Apache-2.0
#include "vobj.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <unordered_map>

namespace ghost::mpi {
namespace {

constexpr uint32_t kChunkBits = 12, kChunk = 1u << kChunkBits, kDirSize = 1u << 14; // 64M indices
std::atomic<vobj *> g_dir[kDirSize];
std::mutex g_alloc_mu;
uint32_t g_next_index = 1;    // 0 is never a valid created index
vobj *g_free_slots = nullptr; // freed non-request vobjs (index kept)

std::mutex g_map_mu;
std::unordered_map<uintptr_t, vobj *> *g_maps[kKinds];

std::mutex g_rec_mu;
// Records that may be dropped once nothing kept names them: zombies of objects that are not
// tombstones held for the coordinator's agreement, and released tombstones. Kept apart so that a
// free looks at these only, not at every tombstone held (a job that splits and frees in a loop
// holds thousands until its next checkpoint). Under g_rec_mu.
std::vector<record *> *g_prunable;
record *g_rec_head = nullptr;
record *g_rec_tail = nullptr;
size_t g_rec_live = 0;
std::atomic<uint64_t> g_seq{1};
// Readers of records outside g_rec_mu (replay_order at a checkpoint's clock rounds, while a thread
// may still be returning from a free): records unlinked meanwhile wait here for the last one.
std::atomic<int> g_rec_readers{0};
std::vector<record *> *g_graveyard; // under g_rec_mu

// Deletes records already unlinked, or keeps them until the last reader is done.
void dispose(std::vector<record *> &unlinked) {
    {
        std::lock_guard<std::mutex> g(g_rec_mu);
        if (g_rec_readers.load() > 0) {
            if (!g_graveyard) g_graveyard = new std::vector<record *>();
            g_graveyard->insert(g_graveyard->end(), unlinked.begin(), unlinked.end());
            unlinked.clear();
            return;
        }
    }
    for (record *r : unlinked)
        delete r;
    unlinked.clear();
}

void dispose_one(record *r) {
    std::vector<record *> one{r};
    dispose(one);
}

vobj *alloc_slot() {
    std::lock_guard<std::mutex> g(g_alloc_mu);
    if (g_free_slots) {
        vobj *v = g_free_slots;
        g_free_slots = v->next_free;
        return v;
    }
    uint32_t idx = g_next_index;
    if ((idx & (kChunk - 1)) == 0 || idx == 1) {
        uint32_t c = idx >> kChunkBits;
        if (c >= kDirSize) return nullptr;
        if (g_dir[c].load(std::memory_order_relaxed) == nullptr) {
            void *mem = calloc(kChunk, sizeof(vobj));
            if (!mem) return nullptr;
            g_dir[c].store(static_cast<vobj *>(mem), std::memory_order_release);
        }
    }
    g_next_index++;
    vobj *v = &g_dir[idx >> kChunkBits].load(std::memory_order_relaxed)[idx & (kChunk - 1)];
    v->index = idx;
    v->f_handle = kFortranBase + (int32_t)idx; // a slot keeps its index, so its Fortran handle
    return v;
}

std::unordered_map<uintptr_t, vobj *> &map_of(kind k) {
    auto *&m = g_maps[(int)k];
    if (!m) m = new std::unordered_map<uintptr_t, vobj *>();
    return *m;
}

void init(vobj *v, kind k, uintptr_t lower) {
    uint32_t idx = v->index;
    v->magic = kVobjMagic;
    v->k = k;
    v->flags = 0;
    v->holds = 0;
    v->index = idx;
    v->lower = lower;
    new (&v->refs) std::atomic<int>(1);
    v->rec = nullptr;
    v->next_free = nullptr;
    v->keep = nullptr;
    v->ext = nullptr;
    v->qflags = 0;
    v->peer = -1;
    v->done = nullptr;
    v->ckpt_done = nullptr;
    v->lower_refs_owed = 0;
}

// Appends r to the live list with the next seq.
void link_tail(record *r) {
    std::lock_guard<std::mutex> g(g_rec_mu);
    r->seq = g_seq.fetch_add(1);
    r->prev = g_rec_tail;
    r->next = nullptr;
    (g_rec_tail ? g_rec_tail->next : g_rec_head) = r;
    g_rec_tail = r;
    g_rec_live++;
}

void record_unlink(record *r) {
    std::lock_guard<std::mutex> g(g_rec_mu);
    (r->prev ? r->prev->next : g_rec_head) = r->next;
    (r->next ? r->next->prev : g_rec_tail) = r->prev;
    g_rec_live--;
}

// Whether record r names the object in slot `was` (a handle word in its arguments or arrays). The
// records do not say which words are handles: any equal word counts (a false match only keeps a
// zombie that a restart then rebuilds and frees for nothing).
bool names(const record *r, const void *was) {
#if defined(GHOST_MPI_MPICH)
    uint32_t index = ((const vobj *)was)->index;
    auto match = [&](uint32_t w) {
        return (w & 0xC0000000u) == 0xC0000000u && (w & 0x03FFFFFFu) == index;
    };
    for (uint64_t w : r->args)
        if (match((uint32_t)w)) return true;
    for (const auto &a : r->arrays)
        for (size_t i = 0; i + 4 <= a.size(); i += 4) {
            uint32_t w;
            memcpy(&w, a.data() + i, 4);
            if (match(w)) return true;
        }
#else
    uint64_t want = (uint64_t)(uintptr_t)was;
    for (uint64_t w : r->args)
        if (w == want) return true;
    for (const auto &a : r->arrays)
        for (size_t i = 0; i + 8 <= a.size(); i += 8) {
            uint64_t w;
            memcpy(&w, a.data() + i, 8);
            if (w == want) return true;
        }
#endif
    return false;
}

// Whether a kept record names zombie z's object: one made before z was freed (later ones may name
// its slot reused). Records are linked in seq order (seq is taken under g_rec_mu). Under g_rec_mu.
bool zombie_needed(const record *z) {
    for (const record *r = z->next; r && r->seq < z->freed_seq; r = r->next)
        if (names(r, z->was)) return true;
    return false;
}

// A collective creation's record whose result is dead here: freed (zombie) or MPI_COMM_NULL
// (orphan: no owner ever).
bool dead_result(const record *r) {
    return r->zombie || r->owner == nullptr;
}

// Drops the records a restart no longer needs (g_prunable), newest first, so that a chain of freed
// parents goes at once: zombies no kept record names, and released tombstones.
void records_prune() {
    std::vector<record *> doomed;
    {
        std::lock_guard<std::mutex> g(g_rec_mu);
        if (!g_prunable) return;
        auto &c = *g_prunable;
        for (bool dropped = true; dropped;) {
            dropped = false;
            for (size_t i = c.size(); i-- > 0;) {
                record *z = c[i];
                if (z->zombie && zombie_needed(z)) continue;
                (z->prev ? z->prev->next : g_rec_head) = z->next;
                (z->next ? z->next->prev : g_rec_tail) = z->prev;
                g_rec_live--;
                doomed.push_back(z);
                c.erase(c.begin() + (long)i);
                dropped = true;
            }
        }
    }
    dispose(doomed);
}

// Under g_rec_mu.
void prunable_add(record *r) {
    if (!g_prunable) g_prunable = new std::vector<record *>();
    g_prunable->push_back(r);
}

// Per-thread free list of request vobjs: plain initial-exec TLS (no guard on the hot path); handed
// back to the shared pool by request_cache_flush() when the thread's lower TLS lease ends.
__thread vobj *t_req_head __attribute__((tls_model("initial-exec"))) = nullptr;

} // namespace

__thread request_init t_req_init
    __attribute__((tls_model("initial-exec"))) = {0, -1, nullptr, nullptr, {}};

const char *kind_name(kind k) {
    static const char *names[] = {"communicator", "group",   "datatype", "op",
                                  "errhandler",   "info",    "window",   "file",
                                  "request",      "message", "session"};
    return (int)k < kKinds ? names[(int)k] : "object";
}

vobj *vobj_slot(uint32_t index) {
    vobj *chunk = g_dir[(index >> kChunkBits) & (kDirSize - 1)].load(std::memory_order_acquire);
    if (!chunk || index == 0 || index >= (kDirSize << kChunkBits)) return nullptr;
    return &chunk[index & (kChunk - 1)];
}

vobj *vobj_at(uint32_t index) {
    vobj *v = vobj_slot(index);
    return v && v->magic == kVobjMagic ? v : nullptr;
}

vobj *vobj_new(kind k, uintptr_t lower) {
    vobj *v = alloc_slot();
    if (!v) return nullptr;
    init(v, k, lower);
    std::lock_guard<std::mutex> g(g_map_mu);
    map_of(k)[lower] = v;
    return v;
}

void comm_freed(void *info);

void vobj_free(vobj *v) {
    if ((v->k == kind::comm || v->k == kind::win || v->k == kind::file) &&
        v->ext) { // its comm_info (a file's drops its view record)
        comm_freed(v->ext);
        v->ext = nullptr;
    }
    {
        std::lock_guard<std::mutex> g(g_map_mu);
        auto &m = map_of(v->k);
        auto it = m.find(v->lower);
        if (it != m.end() && it->second == v) m.erase(it);
    }
    if (v->rec && v->k == kind::file) {
        // A closed file is never opened again by a restart (its name may be gone or be another
        // file's by then, and MPI_MODE_DELETE_ON_CLOSE would delete it): no zombie. Its close is
        // collective on its own clock, so no member holds it open at a checkpoint either.
        record_drop(v->rec);
        v->rec = nullptr;
    }
    if (v->rec) {
        record *r = v->rec;
        v->rec = nullptr;
        {
            std::lock_guard<std::mutex> g(g_rec_mu);
            r->zombie = true;
            r->zombie_kind = (uint8_t)v->k;
            r->was = v;
            r->owner = nullptr;
            r->freed_seq = g_seq.fetch_add(1); // under g_rec_mu: records stay in seq order
            if (!chained(r)) prunable_add(r);  // else a tombstone, until agreed
        }
        records_prune();
    }
    v->magic = 0;
    v->flags = kFreed;
    std::lock_guard<std::mutex> g(g_alloc_mu);
    v->next_free = g_free_slots;
    g_free_slots = v;
}

vobj *vobj_find_lower(kind k, uintptr_t lower) {
    std::lock_guard<std::mutex> g(g_map_mu);
    auto &m = map_of(k);
    auto it = m.find(lower);
    return it == m.end() ? nullptr : it->second;
}

vobj *vobj_find_lower_ref(kind k, uintptr_t lower) {
    std::lock_guard<std::mutex> g(g_map_mu);
    auto &m = map_of(k);
    auto it = m.find(lower);
    if (it == m.end()) return nullptr;
    vobj *v = it->second;
    if (v->flags & kPredefined) return v;
    int n = v->refs.load();
    while (n > 0 && !v->refs.compare_exchange_weak(n, n + 1)) {
    }
    return n > 0 ? v : nullptr;
}

void vobj_unmap_lower(vobj *v) {
    std::lock_guard<std::mutex> g(g_map_mu);
    auto &m = map_of(v->k);
    auto it = m.find(v->lower);
    if (it != m.end() && it->second == v) m.erase(it);
}

void vobj_register_predefined(vobj *v, kind k, uintptr_t lower) {
    // Bound again after a restart: a communicator keeps its quiescence info (collective clock,
    // drained messages name it).
    void *ext = v->magic == kVobjMagic && v->k == k ? v->ext : nullptr;
    v->index = 0;
    init(v, k, lower);
    v->ext = ext;
    v->flags = kPredefined;
    v->f_handle = 0; // MPI_REQUEST_NULL's, read by Open MPI's Fortran MPI_Wait (vobj.h)
    std::lock_guard<std::mutex> g(g_map_mu);
    map_of(k).emplace(lower,
                      v); // the first name of an object wins (aliases share the lower object)
}

void vobj_set_lower(vobj *v, uintptr_t lower) {
    std::lock_guard<std::mutex> g(g_map_mu);
    auto &m = map_of(v->k);
    auto it = m.find(v->lower);
    if (it != m.end() && it->second == v) m.erase(it);
    v->lower = lower;
    m[lower] = v;
}

void vobj_forget_lowers() {
    std::lock_guard<std::mutex> g(g_map_mu);
    for (auto *m : g_maps)
        if (m) m->clear();
}

const record *record_zombie_for(const void *was, uint64_t at) {
    std::lock_guard<std::mutex> g(g_rec_mu);
    for (record *z = g_rec_head; z; z = z->next)
        if (z->zombie && z->was == was && z->seq < at && at < z->freed_seq) return z;
    return nullptr;
}

void record_keep_orphan(record *r) {
    if (!r) return;
    r->owner = nullptr;
    link_tail(r);
}

vobj *request_new(kind k, uintptr_t lower) {
    vobj *v = t_req_head;
    if (__builtin_expect(v != nullptr, 1)) {
        t_req_head = v->next_free;
    } else {
        v = alloc_slot();
        if (!v) return nullptr;
    }
    uint32_t idx = v->index;
    v->magic = kVobjMagic;
    v->k = k;
    v->flags = 0;
    v->index = idx;
    v->lower = lower;
    v->rec = nullptr;
    v->next_free = nullptr;
    v->keep = nullptr;
    v->ext = t_req_init.ext;
    v->qflags = t_req_init.qflags;
    v->peer = t_req_init.peer;
    v->done = t_req_init.done;
    v->ckpt_done = nullptr;
    if (t_req_init.qflags & kQRecv) v->ra = t_req_init.ra;
    if (__builtin_expect(t_req_init.qflags != 0, 0)) t_req_init = {0, -1, nullptr, nullptr, {}};
    return v;
}

void release_request_holds(vobj *v); // p2p.cpp

void request_free(vobj *v) {
    if (v->qflags & kQHolds) release_request_holds(v);
    free(v->done);
    v->done = nullptr;
    free(v->ckpt_done);
    v->ckpt_done = nullptr;
    v->ext = nullptr;
    v->qflags = 0;
    if (v->keep) { // two lower-side arrays (see keep_alive)
        void **slots = (void **)v->keep;
        free(slots[0]);
        free(slots[1]);
        free(slots);
        v->keep = nullptr;
    }
    if (v->rec) {
        record_unlink(v->rec);
        dispose_one(v->rec);
        v->rec = nullptr;
    }
    v->magic = 0;
    v->flags = kFreed;
    v->next_free = t_req_head;
    t_req_head = v;
}

void requests_visit(void (*fn)(vobj *, void *), void *arg) {
    uint32_t end;
    {
        std::lock_guard<std::mutex> g(g_alloc_mu);
        end = g_next_index;
    }
    for (uint32_t i = 1; i < end; i++) {
        vobj *chunk = g_dir[i >> kChunkBits].load(std::memory_order_acquire);
        if (!chunk) continue;
        vobj *v = &chunk[i & (kChunk - 1)];
        if (v->magic == kVobjMagic && v->k == kind::request) fn(v, arg);
    }
}

void request_cache_flush() {
    std::lock_guard<std::mutex> g(g_alloc_mu);
    while (t_req_head) {
        vobj *n = t_req_head->next_free;
        t_req_head->next_free = g_free_slots;
        g_free_slots = t_req_head;
        t_req_head = n;
    }
}

record *record_begin(int fn, int nargs) {
    record *r = new (std::nothrow) record();
    if (!r) return nullptr;
    r->fn = fn;
    r->args.resize(nargs);
    return r;
}

record *contents_record(int fn, uint64_t parent, const uint64_t *maxima, int nmax, int index) {
    record *r = record_begin(fn, nmax + 2);
    if (!r) return nullptr;
    r->args[0] = parent;
    for (int i = 0; i < nmax; i++)
        r->args[(size_t)i + 1] = maxima[i];
    r->args[(size_t)nmax + 1] = (uint64_t)index;
    return r;
}

void record_add_array(record *r, int arg, const void *p, size_t bytes) {
    if (!r || !p) return;
    r->array_arg.push_back(arg);
    r->arrays.emplace_back((const uint8_t *)p, (const uint8_t *)p + bytes);
}

void record_attach(vobj *v, record *r) {
    if (!r) return;
    if (!v || v->rec ||
        (v->flags & kPredefined)) { // an existing object handed out again: keep its origin
        delete r;
        return;
    }
    r->owner = v;
    link_tail(r);
    v->rec = r;
}

void record_link_setting(vobj *v, record *r) {
    r->setting = true;
    r->owner = v;
    link_tail(r);
}

void record_drop(record *r) {
    record_unlink(r);
    dispose_one(r);
    records_prune();
}

records_read_guard::records_read_guard() {
    g_rec_readers.fetch_add(1);
}

records_read_guard::~records_read_guard() {
    std::vector<record *> done;
    {
        std::lock_guard<std::mutex> g(g_rec_mu);
        if (g_rec_readers.fetch_sub(1) == 1 && g_graveyard) done.swap(*g_graveyard);
    }
    for (record *r : done)
        delete r;
}

void records_visit(void (*fn)(const record *, const vobj *, void *), void *arg) {
    std::lock_guard<std::mutex> g(g_rec_mu);
    for (record *r = g_rec_head; r; r = r->next)
        fn(r, (const vobj *)r->owner, arg);
}

bool chained(const record *r) {
    return r->parent_pos != 0 || r->group_key != 0;
}

chain_name chained_name(const record *r) {
    return r->parent_pos != 0 ? chain_name{r->parent_id, r->parent_pos}
                              : chain_name{r->group_key, 1};
}

void records_visit_chained(void (*fn)(const record *, bool, void *), void *arg) {
    std::lock_guard<std::mutex> g(g_rec_mu);
    for (record *r = g_rec_head; r; r = r->next)
        if (chained(r)) fn(r, dead_result(r) && !(r->zombie && zombie_needed(r)), arg);
}

size_t records_release(uint64_t parent_id, const std::vector<uint64_t> &positions) {
    size_t before;
    {
        std::lock_guard<std::mutex> g(g_rec_mu);
        before = g_rec_live;
        for (record *r = g_rec_head; r; r = r->next)
            if (chained(r) && dead_result(r) && !r->released &&
                chained_name(r).parent_id == parent_id &&
                std::binary_search(positions.begin(), positions.end(), chained_name(r).pos)) {
                r->released = true;
                prunable_add(r);
            }
    }
    records_prune();
    std::lock_guard<std::mutex> g(g_rec_mu);
    return before - g_rec_live;
}

size_t records_live() {
    std::lock_guard<std::mutex> g(g_rec_mu);
    return g_rec_live;
}

uint64_t records_next_seq() {
    return g_seq.load();
}

} // namespace ghost::mpi
