// SPDX-License-Identifier: Apache-2.0
// The ghost image: one byte stream, written once from start to end and read the same way, so that
// the same export feeds a file, a memory buffer or a network connection and import can start before
// the whole image has arrived. Shared by the exporter (host C++), `ghost inspect` and the
// freestanding restorer: plain structs and integers only, no libc.
//
// Stream  := record*            (first record: header; last record: trailer)
// Record  := record_header payload[length]
// Every payload is hashed (XXH3-64, seed = record type); the trailer holds the number of records,
// the payload byte count and the sum (mod 2^64) of the record hashes, so that a corrupt, truncated
// or spliced stream is refused before the restored process is allowed to run. The sum does not
// depend on order, so the restorer can verify pages records in parallel; the order of records is
// checked by structure instead: an image has exactly one valid order (image_verify.h).
//
// Stream order: header, tracking?, credentials, process, tree_member*, tree_shared*, (object
// object_data*)* by id, (region pages*)* by address, file* by fd, file_lock*, thread+ by tid,
// trailer.
//
// A process tree (a process and its descendants, each under ghost) is one image file: the root's
// stream, with a tree_member record for each descendant, then each live descendant's own stream
// in the order of those records (a zombie has no stream: its record holds its exit status).
#pragma once

#include <stdint.h>

namespace ghost::image {

inline constexpr uint32_t record_magic = 0x43524847; // "GHRC"
inline constexpr char file_magic[8] = {'G', 'H', 'O', 'S', 'T', 'I', 'M', 'G'};
// 2: credentials record; 3: memory objects (memfds, deleted files), O_PATH and named pipes;
// 4: file locks; 5: process trees
inline constexpr uint32_t format_version = 5;
inline constexpr uint32_t arch_x86_64 = 62;              // EM_X86_64
inline constexpr uint64_t max_metadata_record = 1 << 20; // every record but pages is smaller
// Where the restorer runs (it is linked there: ghost-core/restore/CMakeLists.txt) and the room it
// keeps: a process with memory there cannot be restored, and its checkpoint is refused.
inline constexpr uint64_t restorer_zone_start = 0x200000000000ULL;
inline constexpr uint64_t restorer_zone_size = 64ULL << 20;
inline constexpr uint64_t max_pages_record = 64ULL << 20;

enum record_type : uint16_t {
    rec_header = 1,
    rec_process = 2,
    rec_region = 3,
    rec_pages = 4,
    rec_file = 5,
    rec_thread = 6,
    rec_trailer = 7,
    rec_credentials = 8,
    rec_object = 9,
    rec_object_data = 10,
    rec_tracking = 11,
    rec_page_ref = 12,
    rec_file_lock = 13,
    rec_tree_member = 14,
    rec_tree_shared = 15,
    rec_tree_data = 16,
};

// Every record's type has its own layout version, bumped when that layout changes.
inline constexpr uint16_t record_version = 1;

struct record_header {
    uint32_t magic;
    uint16_t type;
    uint16_t version;
    uint64_t length; // payload bytes that follow
    uint64_t hash;   // XXH3-64 of the payload, seed = type
};
static_assert(sizeof(record_header) == 24);

struct header_record {
    char magic[8];
    uint32_t format_version;
    uint32_t arch;
    uint32_t page_size;
    uint32_t xsave_size; // CPUID.(EAX=0DH,ECX=0):EBX, the signal frame's FP area depends on it
    uint64_t xcr0;       // enabled XSAVE features
    uint64_t created_ns; // CLOCK_REALTIME
    int32_t pid;
    uint32_t thread_count;
    uint64_t memory_bytes; // page data bytes in the image
    char kernel_release[65];
    char hostname[65];
    char ghost_version[16];
    uint8_t exe_build_id_len;
    uint8_t exe_build_id[20];
    uint8_t flags;         // header_* below (0 in images of before they existed)
    uint32_t exe_path_len; // followed by the executable's path
};
// The agent's components left part of the process out (an MPI rank's lower half): it restarts
// only as a rank of its job (`ghost restart-rank`, under ghostrun), never as a process by itself.
inline constexpr uint8_t header_job_rank = 1;
// A pre-copy (live migration, `ghost checkpoint --precopy-index`): the private memory of a running
// process, copied after its write tracking was armed, and nothing else. Its stream is: header,
// tracking record (no sources), region and pages records, trailer. It is never restored by itself:
// it is the source an incremental image taken later (the process parked) takes its unwritten
// pages from, so that most bytes move while the process still runs.
inline constexpr uint8_t header_pages_only = 2;
// A live migration's pre-copy goes in rounds (at most max_precopy_rounds): each after the first
// holds only the pages written during the last, and lists no sources either; the image after
// them takes every page from the last round that holds it. A receiver keeps each round in a
// memfd it shares with the restorer, and tells the restorer a round is in by writing
// precopy_round_marker into the image's pipe (which no image's first bytes can be: "GHRO" is no
// record magic).
inline constexpr uint32_t max_precopy_rounds = 4;
inline constexpr char precopy_round_marker[8] = {'G', 'H', 'R', 'O', 'U', 'N', 'D', '\n'};

// The process's credentials as /proc/PID/status shows them, followed by group_count uint32_t
// supplementary group ids. A restore never gives more than these (nor more than the image file's
// owner has, nor more than whoever restores has): see image_credentials.h.
struct credentials_record {
    uint32_t uid[4]; // real, effective, saved, filesystem
    uint32_t gid[4];
    uint64_t cap_inheritable, cap_permitted, cap_effective, cap_bounding, cap_ambient;
    uint32_t no_new_privs;
    uint32_t group_count;
};
inline constexpr uint32_t max_groups = 65536; // NGROUPS_MAX

// Kernel mm fields that the restorer re-installs with PR_SET_MM_MAP.
struct mm_fields {
    uint64_t start_code, end_code, start_data, end_data, start_brk, brk, start_stack;
    uint64_t arg_start, arg_end, env_start, env_end;
};

struct special_mapping {
    uint64_t start, end; // 0, 0 when absent
};

inline constexpr int max_signals = 64;
inline constexpr int max_auxv_words = 128;

struct signal_action {
    uint64_t handler, flags, restorer, mask;
};

struct process_record {
    mm_fields mm;
    special_mapping vvar, vvar_vclock, vdso; // moved, never stored
    uint64_t auxv[max_auxv_words];
    uint32_t auxv_words;
    uint32_t umask;
    uint64_t agent_state;               // address of the agent's ghost::agent::state in the image
    signal_action actions[max_signals]; // index = signal number - 1
    uint64_t itimer_real[4];            // struct itimerval: interval sec/usec, value sec/usec
    uint32_t cwd_len;                   // followed by the working directory
    uint32_t pad;
};

// A file object the process sees that exists nowhere but in the kernel: a memfd, or a regular
// file deleted while open (or mapped). Its whole contents travel in the image (object_data records
// after it); the restorer makes it again (memfd_create with the same name; an O_TMPFILE in the
// deleted file's directory) before any region, so that every mapping (object regions) and every
// descriptor (file_object) of it is one object again. `id` is the order of the objects, from 1.
enum object_kind : uint32_t {
    object_memfd = 1,
    object_deleted_file = 2,
};

struct object_record {
    uint64_t id;
    uint32_t kind;
    uint32_t seals; // memfd: F_GET_SEALS, added once every mapping and descriptor is in place
    uint64_t size;
    uint32_t mode;     // permission bits, applied at the end too
    uint32_t name_len; // followed by the memfd's name (without "memfd:") or the file's old path
};
inline constexpr uint64_t max_object_size = 1ULL << 30; // larger objects refuse the checkpoint
inline constexpr uint32_t object_seals_known = 0x3f;    // F_SEAL_SEAL ... F_SEAL_EXEC
// An object_data record's payload: uint64_t offset, then the object's bytes at
// [offset, offset + length - 8). Holes and zero pages are not stored.

enum region_kind : uint32_t {
    region_anon_private = 1,   // pages stored
    region_anon_shared = 2,    // pages stored, recreated as a shared memfd
    region_file_private = 3,   // file re-mapped, copied-on-write pages stored
    region_file_shared = 4,    // file re-mapped shared, nothing stored
    region_stack = 5,          // anon private, grows down
    region_heap = 6,           // anon private, the brk area
    region_object_shared = 7,  // the memory object `object_id` mapped shared, nothing stored
    region_object_private = 8, // the object mapped private, copied-on-write pages stored
    // Shared anonymous memory that several processes of a tree map (made before a fork): the
    // tree's shared memory object `object_id` (a tree_shared record's index), mapped shared at
    // file_offset; nothing stored (its contents are the tree_data records after that record).
    region_tree_shared = 9,
};

struct region_record {
    uint64_t start, end;
    uint32_t prot; // PROT_*
    uint32_t kind; // region_kind
    uint64_t file_offset;
    uint64_t file_dev, file_ino, file_size;
    int64_t file_mtime_ns;
    uint32_t advice;    // region_advice bits: what madvise/mprotect set and the program can see
    uint32_t path_len;  // followed by the path (file kinds)
    uint64_t object_id; // object kinds: the object_record's id
};

// What a region carries besides its contents (the kernel's VmFlags of the mapping, and guard
// pages). A region of guard pages holds nothing: they are installed again over their range.
enum region_advice : uint32_t {
    advice_dontfork = 1u << 0,   // MADV_DONTFORK
    advice_dontdump = 1u << 1,   // MADV_DONTDUMP
    advice_hugepage = 1u << 2,   // MADV_HUGEPAGE
    advice_nohugepage = 1u << 3, // MADV_NOHUGEPAGE
    advice_wipeonfork = 1u << 4, // MADV_WIPEONFORK
    advice_maywrite = 1u << 5,   // a shared file mapping whose file was open for writing
    advice_guard = 1u << 6,      // MADV_GUARD_INSTALL over the whole region
    advice_known = (1u << 7) - 1,
};

// A pages record's payload: uint64_t address, then page data for [address, address + length - 8).

// Incremental images. An image taken with write tracking says so in a tracking record (right
// after the header): the id of the write-protect scan made for it and the images, older ones of
// the same process, that it takes unchanged pages from (its sources). Pages not written since
// the last image are not stored again: a page_ref record names the source's pages record that
// holds them (by offset and hash: the restorer reads that record, checks its hash, and copies the
// part it wants). References always point at the image that holds the bytes, never through
// another reference, so a restore reads each source directly; the chain is bounded by
// max_sources (a longer one makes a full image).
inline constexpr uint32_t max_sources = 8;
static_assert(max_precopy_rounds <= max_sources, "each round is a source");
inline constexpr uint32_t max_source_name = 256; // with its terminating zero
// The largest pages record a reference may name: the exporter writes pages in runs of at most
// 256 KiB (the restorer reads a referenced record whole into a buffer of this size).
inline constexpr uint64_t max_ref_record = 256 << 10;

struct image_source {
    char name[max_source_name]; // relative to the directory of the image that names it
    uint64_t size;              // the source's bytes
    uint64_t hash_sum;          // its trailer's sum of record hashes: which image it is
    uint64_t scan_id;           // its tracking record's scan id
};

struct tracking_record {
    uint64_t scan_id;      // the write-protect scan made for this image (never 0)
    uint32_t source_count; // followed by source_count image_source
    uint32_t pad;
};

struct page_ref_record {
    uint64_t addr, len; // restored pages [addr, addr + len), inside the current region
    uint32_t source;    // index into the tracking record's sources
    uint32_t pad;
    uint64_t record_offset; // the source's pages record: its header's offset in the source
    uint64_t record_addr;   // that record's pages: [record_addr, record_addr + record_len)
    uint64_t record_len;    // (at most max_ref_record)
    uint64_t record_hash;   // and the hash its header holds
};

enum file_kind : uint32_t {
    file_regular = 1,   // reopened by path at its offset (no O_CREAT, O_TRUNC)
    file_directory = 2, // reopened by path
    file_device = 3,    // a memory device reopened by path (/dev/null, /dev/zero, /dev/urandom ...)
    file_inherit = 4,   // a std stream that was a tty, pipe or socket: the restarter's own is used
    // A pipe with a reader and a writer inside the process: recreated (pipe_id names it), its
    // buffered data (carried by the pipe's first record) refilled, `pipe_size` re-applied. The
    // first read-only and the first write-only open file description are the pipe's own ends; every
    // other description of it (a second reader, a read-write one, one reopened through
    // /proc/self/fd) is file_pipe_reopen: opened again through /proc/self/fd of the recreated pipe
    // with `flags`.
    file_pipe_read = 5,
    file_pipe_write = 6,
    file_dup = 7, // shares its open file description (offset, flags) with the lower fd `dup_of`
    file_pipe_reopen = 8,
    file_tty = 9, // /dev/tty or the controlling terminal: /dev/tty of the restarting command
    // A pty pair whose master and slave are both held by the process (pipe_id names it): a new
    // pair from /dev/ptmx, its state (pty_state, data of the master record) re-applied. The master
    // record comes before the slave records of its pair; each slave record is a description
    // opened from the new master (TIOCGPTPEER).
    file_pty_master = 10,
    file_pty_slave = 11,
    file_path = 12, // an O_PATH descriptor of any kind of file: reopened by path with `flags`
    // A named pipe, reopened by path with `flags` (it held no data at checkpoint): the restorer
    // holds it open read-write meanwhile, so that the open does not wait for the other end.
    file_fifo = 13,
    // An open file description of a memory object (`pipe_id` is the object's id): reopened
    // through the restored object with `flags`, at `offset`.
    file_object = 14,
    // An open file description held by more than one process of a tree (a pipe between a parent
    // and its child, a log file both write at one offset): `pipe_id` is the index of its
    // tree_shared record in the root's stream. `ghost restart` makes each such description once
    // and every restorer of the tree inherits it.
    file_tree_shared = 15,
    // Anonymous-inode descriptors, made anew with the state their record's data carries. An
    // eventfd (eventfd_state): its counter and semaphore mode.
    file_eventfd = 16,
    // A timerfd (timerfd_state): armed again for the time that remained, with the expirations
    // not yet read.
    file_timerfd = 17,
    // A signalfd: its data is the signal mask it reads (uint64_t). The signals it would read are
    // the process's pending signals, restored with them.
    file_signalfd = 18,
    // An epoll instance: its data is its watch list (epoll_watch each). The instance is made at
    // its record; the watches are added once every descriptor is in place (they name
    // descriptors of any record, an epoll instance's too).
    file_epoll = 19,
    // One end of a connected pair of unnamed Unix sockets (socketpair) whose two ends the
    // process holds (`pipe_id` names the pair): the first record of a pair makes a new pair.
    // Its data: a socket_state, then the bytes queued for reading at this end (stream sockets
    // only), written again through the other end.
    file_socket_pair = 20,
    // An inotify instance: its data is its watch list (inotify_watch each, followed by the
    // watched file's path). Every watch gets its old number again (the kernel numbers watches
    // in order: the restorer adds and removes a watch of its own for each number skipped). An
    // instance with events queued is refused.
    file_inotify = 21,
    // A listening socket (TCP, or a Unix socket bound to a path or an abstract name) with no
    // connection waiting, a UDP socket (bound, perhaps connected) or Unix datagram socket
    // connected to nobody with nothing queued, or a stream socket not listening nor connected
    // yet: a new socket bound to the same address (if it was), listening with the same backlog or
    // connected to the same peer. Its data: a socket_endpoint.
    file_socket_endpoint = 22,
};

inline const char *file_kind_name(uint32_t kind) {
    static const char *const names[] = {
        "?",        "file",  "dir",         "device",      "inherited",  "pipe-r",
        "pipe-w",   "dup",   "pipe-reopen", "tty",         "pty-master", "pty-slave",
        "o-path",   "fifo",  "object",      "tree-shared", "eventfd",    "timerfd",
        "signalfd", "epoll", "socketpair",  "inotify",     "socket"};
    return kind < sizeof names / sizeof *names ? names[kind] : "?";
}

struct file_record {
    int32_t fd;
    uint32_t kind;
    int32_t flags; // open flags as in fdinfo
    int32_t cloexec;
    int64_t offset;
    uint64_t pipe_id;  // pipes: the pipe's inode; ptys: the pty's index
    uint32_t data_len; // after the path: pipe data buffered at checkpoint, or a pty_state
    uint32_t path_len;
    int32_t dup_of;
    uint32_t pipe_size; // pipes: F_GETPIPE_SZ at checkpoint (0: the default)
};

// Where a descriptor of the process's own /proc/self/maps or smaps stood, by mapping rather than
// by byte (the data of its file_regular record): these files list the mappings as text, and the
// restored process's text differs in length before that point (a restored mapping's flags, Rss):
// a byte offset would resume a half-read listing in the middle of another mapping's lines.
struct proc_maps_position {
    uint64_t vma_start; // the mapping whose lines were being read (~0: the end of the listing)
    uint32_t line;      // the line of its entry (0: the range line)
    uint32_t column;    // bytes into that line
};
static_assert(sizeof(proc_maps_position) == 16);

// Termios as TCGETS2/TCSETS2 exchange it (the kernel's struct termios2): the restorer cannot use
// libc's struct termios.
struct pty_termios {
    uint32_t iflag, oflag, cflag, lflag;
    uint8_t line;
    uint8_t cc[19];
    uint32_t ispeed, ospeed;
};
static_assert(sizeof(pty_termios) == 44);

// The state of a pty pair, read through its master (terminal ioctls on a master act on the slave).
struct pty_state {
    pty_termios termios;
    uint16_t winsize[4]; // struct winsize
    int32_t locked;      // TIOCGPTLCK
    int32_t packet;      // TIOCGPKT
};

struct eventfd_state {
    uint64_t count;
    uint32_t semaphore; // EFD_SEMAPHORE
    uint32_t pad;
};
static_assert(sizeof(eventfd_state) == 16);

// A timerfd as fdinfo shows it. `value` is the time that remained before its next expiration,
// except for an absolute timer on a settable clock (CLOCK_REALTIME, CLOCK_REALTIME_ALARM), where it
// is the expiration's absolute time on that clock: such a timer keeps its date across a restart,
// any other one the time it had left. A periodic timer that expired and was not read since
// shows no remaining time (the kernel moves it on only at the read): it is armed again for one
// interval.
struct timerfd_state {
    int32_t clock;
    uint32_t settime_flags; // TFD_TIMER_ABSTIME, TFD_TIMER_CANCEL_ON_SET
    uint64_t ticks;         // expirations not read yet (TFD_IOC_SET_TICKS)
    int64_t value[2];       // seconds, nanoseconds
    int64_t interval[2];
};
static_assert(sizeof(timerfd_state) == 48);

// One watch of an epoll instance: the descriptor it was added with, its events (EPOLLET,
// EPOLLONESHOT ... included: a one-shot watch that fired shows only those bits, and is added
// back disarmed) and its data.
struct epoll_watch {
    int32_t fd;
    uint32_t events;
    uint64_t data;
};
static_assert(sizeof(epoll_watch) == 16);
inline constexpr uint32_t max_epoll_watches = 8192; // in one image, all instances together

struct socket_state {
    uint32_t type;   // SOCK_STREAM, SOCK_DGRAM, SOCK_SEQPACKET
    uint32_t end;    // 0 for the end with the lower inode, 1 for the other
    uint32_t sndbuf; // SO_SNDBUF, SO_RCVBUF as getsockopt shows them (twice what was set)
    uint32_t rcvbuf;
    uint32_t passcred; // SO_PASSCRED
    uint32_t pad;
};
static_assert(sizeof(socket_state) == 24);
inline constexpr uint32_t max_socket_queue = 512 * 1024; // bytes queued at one end

struct socket_endpoint {
    uint32_t family;  // AF_UNIX, AF_INET, AF_INET6
    uint32_t type;    // SOCK_STREAM, SOCK_SEQPACKET (listening), SOCK_DGRAM (UDP)
    uint32_t backlog; // listen()'s, for a listening socket; 0 otherwise
                      // (type SOCK_DGRAM: UDP or Unix datagrams; a stream type: not listening
                      // nor connected yet)
    uint32_t reuseaddr, reuseport, v6only;
    uint32_t sndbuf, rcvbuf;      // as getsockopt shows them (twice what was set)
    uint32_t local_len, peer_len; // of the sockaddrs below (peer_len 0: not connected)
    uint8_t local[128], peer[128];
};
static_assert(sizeof(socket_endpoint) == 296);

struct inotify_watch {
    int32_t wd; // its number, above the one before
    uint32_t mask;
    uint32_t path_len; // with its terminating zero
    uint32_t pad;
};
static_assert(sizeof(inotify_watch) == 16);
inline constexpr uint32_t max_inotify_watches = 4096; // in one image, all instances together
inline constexpr int32_t max_inotify_wd = 65536;

// A file lock the process held (fdinfo's "lock:" lines), taken again on the restored descriptor
// once every descriptor is in place: flock and OFD locks belong to the open file description
// `fd` is on, POSIX record locks to the process (one record each, on the lowest descriptor of
// the file). A lock another process took meanwhile refuses the restore.
enum lock_kind : uint32_t {
    lock_posix = 1,
    lock_flock = 2,
    lock_ofd = 3,
};
struct file_lock_record {
    int32_t fd;
    uint32_t kind;  // lock_kind
    uint32_t write; // 1: exclusive (F_WRLCK, LOCK_EX); 0: shared
    uint32_t pad;
    int64_t start; // record locks: first byte
    int64_t end;   // record locks: last byte, or -1 (to the end of the file, however long)
};
inline constexpr uint32_t max_file_locks = 256;

struct thread_record {
    int32_t tid;
    uint32_t flags; // thread_main, thread_manager
    uint64_t fs_base;
    uint64_t regs[8]; // rbx rbp r12 r13 r14 r15 rsp rip: the agent's park point, see agent_state.h
    uint32_t mxcsr;
    uint32_t fpucw;
};
inline constexpr uint32_t thread_main = 1;
inline constexpr uint32_t thread_manager = 2;

// A descendant of the image's process (process trees): its ids as they were, and what it was.
// Records come parents before children; among the children of one parent, process group
// leaders before the members of their groups. Each process's group is its parent's, its own, or
// that of an earlier sibling; its session is its parent's or its own.
enum tree_state : uint32_t {
    tree_live = 1,   // its stream follows the root's
    tree_zombie = 2, // ended, not reaped yet: `wait_status` is what its parent's wait() returns
};
struct tree_member_record {
    int32_t pid, ppid, pgid, sid;
    uint32_t state; // tree_state
    int32_t wait_status;
};
inline constexpr uint32_t max_tree_members = 256;
// An open file description that several processes of the tree hold (file_tree_shared): made once
// by `ghost restart`. Pipes: every description of a pipe held in the tree is one record; those
// with the same `pipe_id` (the pipe's inode) are ends of one new pipe (file_pipe_read and
// file_pipe_write records are its ends, file_pipe_reopen ones are opened from them), the first
// record of the pipe carrying its buffered data. Path kinds (file_regular, file_directory,
// file_device, file_path) are reopened by path with `flags` at `offset`, and must still be the
// file `dev`/`ino` names. Kind tree_shared_memory: shared anonymous memory (region_tree_shared)
// of `offset` bytes, its contents in the tree_data records that follow (each: uint64_t offset,
// then bytes; zero pages left out), made once by `ghost restart`.
struct tree_shared_record {
    uint32_t index; // 0, 1, 2 ...: what file_tree_shared records name
    uint32_t kind;  // file_kind
    int32_t flags;
    uint32_t pipe_size;
    int64_t offset;
    uint64_t pipe_id;
    uint64_t dev, ino;
    uint32_t path_len; // followed by the path, then data_len bytes of pipe data
    uint32_t data_len;
};
inline constexpr uint32_t max_tree_shared = 4096;
inline constexpr uint32_t tree_shared_memory = 64;

struct trailer_record {
    uint64_t record_count; // records before the trailer
    uint64_t payload_bytes;
    uint64_t hash_sum; // sum of the record hashes, mod 2^64
};

} // namespace ghost::image
