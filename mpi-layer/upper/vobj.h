// SPDX-License-Identifier: Apache-2.0
// Virtual MPI objects: every handle the application holds names an upper-half vobj, never a lower
// object, so that the lower half can be thrown away and the objects rebuilt on a fresh one from
// their records.
//
// Encoding (chosen per handle type, see handles.h): pointer handles (all of Open MPI, MPICH's
// MPI_File) are the vobj's address; integer handles (MPICH) are 0xC0000000 | kind bits << 26 |
// index into g_vobj table. Predefined handles: Open MPI's upper predefined objects (in the stub
// library or copied into the executable) carry a vobj header written at start-up; MPICH's
// predefined integers are the same in both halves and pass through untouched.
#pragma once
#include <cstddef>
#include <atomic>
#include <cstdint>
#include <vector>

namespace ghost::mpi {

enum class kind : uint8_t {
    comm,
    group,
    datatype,
    op,
    errhandler,
    info,
    win,
    file,
    request,
    message,
    session,
    count
};
constexpr int kKinds = (int)kind::count;
const char *kind_name(kind k);

constexpr uint32_t kVobjMagic = 0x6f76686fu; // "ohvo"
constexpr uint8_t kPredefined = 1, kFreed = 2;

// How an object came to exist: the generated function that created it and its arguments as the
// upper half passed them (handles as upper handles), with arrays deep-copied. seq orders creations
// globally.
struct record {
    uint64_t seq = 0;
    int fn = -1;                // index into the generated function list (g_fn_names)
    std::vector<uint64_t> args; // raw argument words
    std::vector<int> array_arg; // argument index of each deep-copied array
    std::vector<std::vector<uint8_t>> arrays;
    record *prev = nullptr; // live-record list, oldest first
    record *next = nullptr;
    const void *owner = nullptr; // the vobj it created
    // A freed object whose record a live record still names (a communicator split from one freed
    // since, a datatype built from a freed one): kept, so that a restart rebuilds the parent first
    // and frees it after. `was` is the freed vobj's slot (its handle), valid for records with a seq
    // between `seq` and `freed_seq`.
    bool zombie = false;
    uint8_t zombie_kind = 0; // kind
    const void *was = nullptr;
    uint64_t freed_seq = 0;
    uintptr_t replay_lower = 0; // its lower handle on the new lower half, during a replay
    // Creations collective over their first communicator: that communicator's collective clock
    // at the creation (the same on every member), which names the creation job-wide, with the
    // communicator's id and size (comm_info). A restart replays such a creation collectively over
    // the parent, so every member must keep its record, whatever became of the result here: freed
    // (a zombie) or MPI_COMM_NULL (an orphan), it is a tombstone, dropped only once the coordinator
    // has seen it dead on every member (`released`).
    uint64_t parent_pos = 0;
    uint64_t parent_id = 0;
    int parent_size = 0;
    bool released = false;
    // MPI_Comm_create_group: the creation's name, the same on every member of the group
    // (record_set_group_key), and the group's size in parent_size; 0 otherwise. Orders it in a
    // restart's replay (replay_order), collective over the group: freed here, it is a tombstone
    // as above until the coordinator has seen it dead on every member of the group.
    uint64_t group_key = 0;
    // A call that set something on its owner rather than made it (MPI_File_set_view): replayed
    // on the owner's new lower object in its place in the order, which it does not replace;
    // dropped when superseded or when the owner goes (record_drop).
    bool setting = false;
};

// What a restart needs to post a pending MPI_Irecv again on a fresh lower half (upper handles).
struct recv_args {
    void *buf;
    int count, source, tag;
    uintptr_t datatype, comm;
};

struct vobj {
    uint32_t magic;
    kind k;
    uint8_t flags;
    uint16_t holds; // of refs, those a pending request holds (hold_handle), not the program
    uint32_t index; // position in the index table (integer encodings); 0 for predefined
    uintptr_t lower;
    std::atomic<int> refs;
    record *rec;
    vobj *next_free;
    void *keep;      // requests: void*[2] of lower-side arrays a nonblocking call may read until
                     // completion
    void *ext;       // communicators: comm_info (quiesce.h); messages: a drained_msg
    uint32_t qflags; // requests and messages: kQ* below
    int32_t peer;    // persistent sends: destination (comm rank); with ext = comm_info
    void *done;      // requests completed in the upper half: their status (malloc'd)
    void *ckpt_done; // requests complete in the lower half at the last checkpoint: their status
                     // (malloc'd); a restart completes them with it in the upper half
    // After a restart: how many of the program's references to this object the fresh lower half
    // does not count. An MPI may hand the same object out again (MPI_Comm_group of duplicates of
    // one communicator, MPI_Comm_get_errhandler), adding a lower reference each time, which the
    // program frees each time; a restart makes the object once. So many frees are the upper
    // half's alone (lower_ref_owed).
    uint64_t lower_refs_owed;
    uint64_t spare;
    // The object's Fortran handle (kFortranBase + index, fortran_of). Here, because Open MPI's
    // Fortran bindings read a request's Fortran handle from its structure after MPI_Wait/Test
    // (req_f_to_c_index, at this offset of an ompi_request_t), not through MPI_Request_c2f.
    int32_t f_handle;
    int32_t pad2;
    union {
        recv_args ra; // MPI_Irecv requests (kQRecv without kQPersistent): their arguments
        // Datatypes: MPI_Type_get_extent's and MPI_Type_get_true_extent's answers, once asked
        // (kQExtentKnown, kQTrueExtentKnown); a datatype's extents never change.
        struct {
            int64_t lb, extent, true_lb, true_extent;
        } dt;
    };
};

// Request bookkeeping for quiescence (vobj::qflags).
constexpr uint32_t kQRecv = 1;    // a receive: its completion counts one received message
constexpr uint32_t kQActive = 2;  // posted (or started) and not yet seen complete
constexpr uint32_t kQCounted = 4; // its completion was already counted (by the drain)
constexpr uint32_t kQPersistent = 8;
constexpr uint32_t kQSend = 16;    // a persistent send: each start counts one message
constexpr uint32_t kQDrained = 32; // messages: matched from the drained queue (ext)

constexpr uint32_t kQDone = 64;        // completed in the upper half (from a drained message): ext
                                       // holds its status; the lower handle is a stand-in
constexpr uint32_t kQCancel = 128;     // MPI_Cancel was called on it
constexpr uint32_t kQIsend = 256;      // a nonblocking send (counted when posted)
constexpr uint32_t kQCollective = 512; // a nonblocking collective: the drain completes it
constexpr uint32_t kQHolds = 1024;     // holds a reference on ra.datatype and ra.comm (hold_handle)
constexpr uint32_t kQGeneralized = 2048;  // made by MPI_Grequest_start
constexpr uint32_t kQGreqComplete = 4096; // MPI_Grequest_complete was called on it

// Fortran handles of created objects (Open MPI; MPICH's Fortran handles are its C handles): an
// index into the layer's own table, so the same after a restart, whatever the new lower half's
// numbers. Predefined objects keep the library's (fixed) numbers. Above every predefined one.
constexpr int32_t kFortranBase = 0x20000000;
#if !defined(GHOST_MPI_MPICH)
static_assert(offsetof(vobj, f_handle) == 0x68, "Open MPI 4.1 reads req_f_to_c_index there");
#endif

// Bookkeeping the next request_new() on this thread takes over (set by the p2p wrappers right
// before the generated code adopts the new request), then cleared.
struct request_init {
    uint32_t qflags;
    int32_t peer;
    void *ext;
    void *done;
    recv_args ra;
};
extern __thread request_init t_req_init __attribute__((tls_model("initial-exec")));

// Visits every live request vobj (quiescence: the threads that could change them are parked).
void requests_visit(void (*fn)(vobj *, void *), void *arg);

// Index table for integer encodings: lock-free reads, chunks never freed.
vobj *vobj_at(uint32_t index);
// The slot itself, live or freed (a record's handle may name a slot freed since: its zombie).
vobj *vobj_slot(uint32_t index);

vobj *vobj_new(kind k, uintptr_t lower); // refs = 1, registered in the reverse map (requests: not)
void vobj_free(vobj *v); // drops the reverse-map entry and the record; reuses the slot
vobj *vobj_find_lower(kind k, uintptr_t lower); // reverse map: predefined and live objects
// The live object for a lower handle with one more reference taken, or nullptr. An object whose
// last reference another thread is dropping does not count: MPI has freed its lower handle and
// may have given it to this new object (MPICH's message handles, two threads probing and
// receiving at once), which must get an object of its own.
vobj *vobj_find_lower_ref(kind k, uintptr_t lower);
// The program has freed v but a pending request still holds it: MPI may give its lower handle to
// a new object, which must not be taken for v.
void vobj_unmap_lower(vobj *v);
void vobj_register_predefined(vobj *v, kind k, uintptr_t lower);
void vobj_set_lower(vobj *v, uintptr_t lower);
// Forgets every lower handle of the reverse maps (before a fresh lower half is bound: its
// addresses may repeat the old ones).
void vobj_forget_lowers();
// A collective creation whose result was null on this rank (MPI_COMM_NULL from Comm_split with
// MPI_UNDEFINED, Comm_create outside the group): kept, ownerless, so that a replay calls it here
// too.
void record_keep_orphan(record *r);
// The zombie record (see record) that stood for slot `was` when record seq `at` was made, if any.
const record *record_zombie_for(const void *was, uint64_t at);
// A creation a restart replays collectively over other ranks: over its parent communicator
// (parent_pos), or over its group (MPI_Comm_create_group: group_key). Its record is a tombstone
// once its result is dead here, until every member's is.
bool chained(const record *r);
// The name every member gives a collective creation (records_visit_chained): the parent
// communicator's id and the position on its clock, or for an MPI_Comm_create_group its group_key
// and position 1 (the one creation of that name).
struct chain_name {
    uint64_t parent_id, pos;
};
chain_name chained_name(const record *r);
// Visits the records of collective creations over a tracked communicator (parent_pos set) or
// over a group (MPI_Comm_create_group: group_key set), oldest first, under the record lock;
// `dead`: a tombstone no other kept record names, which a restart only makes to free it again
// (droppable once every member's is).
void records_visit_chained(void (*fn)(const record *, bool dead, void *), void *arg);
// While one lives, records unlinked are not deleted: the records a reader listed stay readable
// outside the record lock (replay_order, at a checkpoint's clock rounds).
struct records_read_guard {
    records_read_guard();
    ~records_read_guard();
    records_read_guard(const records_read_guard &) = delete;
    records_read_guard &operator=(const records_read_guard &) = delete;
};
// Drops the tombstones of these chained_name()s (every member holds them dead: the coordinator's
// agreement; `positions` sorted). Returns how many records went.
size_t records_release(uint64_t parent_id, const std::vector<uint64_t> &positions);

// Requests are created and completed on the hot path: per-thread free lists, no reverse map.
vobj *request_new(kind k, uintptr_t lower);
void request_free(vobj *v);
void request_cache_flush(); // at thread exit: this thread's cached request slots go back to the
                            // pool

// Records
record *record_begin(int fn, int nargs);
// The record of a datatype MPI_Type_get_contents (wrapper fn) handed out as member `index` of
// `parent`: parent, the call's maxima (nmax of them), index.
record *contents_record(int fn, uint64_t parent, const uint64_t *maxima, int nmax, int index);
void record_add_array(record *r, int arg, const void *p, size_t bytes);
void record_attach(vobj *v, record *r); // links r into the live list (takes ownership)
size_t records_live();
// Links a setting record (record::setting) owned by v, after every record made so far.
void record_link_setting(vobj *v, record *r);
// Unlinks and deletes a record, then drops the zombies only it named.
void record_drop(record *r);
// Visits live records oldest first, under the record lock (fn must not create or free objects).
void records_visit(void (*fn)(const record *, const vobj *owner, void *), void *arg);
uint64_t records_next_seq();

} // namespace ghost::mpi
