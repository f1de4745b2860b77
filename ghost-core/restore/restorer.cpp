// SPDX-License-Identifier: Apache-2.0
// ghost-restart: turns the process it runs in into the process of an image. Freestanding: no libc,
// no allocation, raw system calls, linked far from where applications live. Its inputs are the
// image stream (fd argv[1]), a status pipe (fd argv[2]) on which it writes "OK <pid>" just before
// the restored threads run (if nobody reads it any more, the process goes on all the same), or "ERR
// <one-line reason>" and exits 1 (-1: none, the reason goes to stderr), and its environment, which
// the restored process's agent finds in its state block.
// --rank: an MPI rank started by a new launcher keeps the launcher's descriptors and fds 0-2.
// --gate (with a status socket): the ranks of a job wait for each other's verdict. Once the whole
// image is verified (nothing outside this process changed yet) the restorer writes "VERIFIED" and
// reads one byte: 'G', every rank's image is good, go on (no "OK" follows); anything else, another
// rank refused its image, exit quietly. A refusal here goes to the gate as "ERR <reason>" and the
// exit is quiet too (status 0): the job's launcher reports it in one line, and an MPI launcher
// that saw a rank fail would add a page of its own.
// --moving: a rank of a live migration (`ghost restart-rank --receive`): until it says "OK" a
// failure is the migration's, which ghostrun reports in one line; the exit is quiet as well.
//
// Order matters (each step needs the previous one):
//  1. leave the kernel's stack (entry.S), unmap it: the image's stack may need that place;
//  2. check the header; decide whose credentials the process gets and take the image's groups and
//     filesystem ids (files are opened with the image's rights from here on); move vvar/vdso onto
//     the image's addresses before anything else is mapped;
//  3. make the memory objects (memfds, deleted files) and fill them; map every region and put its
//     pages into place (`place`); every record goes through the verifier `ghost inspect` uses
//     (image_verify.h) before it is acted upon;
//  4. check the trailer: until here nothing outside this process was changed (files are reopened
//     without O_CREAT/O_TRUNC; a deleted file made again is linked at its old path only for the
//     instant it takes to open it there and unlink it);
//  5. descriptors, the objects' modes and seals, mm fields, cwd, umask, signal actions, the
//     agent's hand-off fields;
//  6. start the threads; each takes the image's uids, gids and capabilities; the main thread last
//     (starting threads at their old tids needs the restorer's privilege); then all run.
#include <stddef.h>
#include <stdint.h>

#include <asm/unistd.h>
#include <fcntl.h>
#include <linux/mman.h>
#include <linux/sched.h>
#include <sys/stat.h>

#include "ghost-core/agent/agent_state.h"
#include "ghost-core/image_credentials.h"
#include "ghost-core/image_format.h"
#include "ghost-core/image_verify.h"
#include "ghost-core/lock_scan.h"
#include "ghost-core/restore/credentials.h"
#include "ghost-core/restore/freestanding.h"
#include "runtime/uapi.h"
#include "ghost-core/record_hash.h"
#include "runtime/raw_syscall.h"

extern "C" {
[[noreturn]] void restorer_resume(const ghost::agent::saved_context *ctx);
long restorer_clone_thread(ghost::uapi::clone_args *args, unsigned long size,
                           const ghost::agent::saved_context *ctx);
long restorer_spawn(ghost::uapi::clone_args *args, unsigned long size); // runs restorer_page_worker
void restorer_page_worker();
[[noreturn]] void restorer_thread_entry(const ghost::agent::saved_context *ctx);
extern char __ehdr_start[];
extern char _end[];
alignas(64) char restorer_stack[256 * 1024];
extern char restorer_stack_top[];
}
__asm__(".globl restorer_stack_top\n.set restorer_stack_top, restorer_stack + 256 * 1024\n");

namespace {

namespace img = ghost::image;
namespace sys = ghost::sys;
using namespace ghost::freestanding;

constexpr uint64_t page_size = 4096;
constexpr int max_restored_threads = ghost::agent::max_threads;
constexpr uint64_t thread_stack_size = 8 * 1024; // a restored thread's until it leaves us
// A thread of this process, as pthread_create makes them (restored threads and page workers alike).
constexpr uint64_t thread_clone_flags =
    CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD | CLONE_SYSVSEM;
// The restorer's address zone: its own image, then room to park vvar/vdso while moving them.
constexpr uint64_t zone_size = img::restorer_zone_size;
static_assert(GHOST_RESTORER_ADDRESS == img::restorer_zone_start, "the exporter's idea of it");

int g_image_fd = -1;
int g_status_fd = -1;
bool g_inherit_stdio = false; // duplication: fds 0-2 stay those of the command that asked for it
bool g_gate = false;          // --gate: the status socket's reader reports a refusal
bool g_moving = false;        // --moving: a failure is a live migration's, which ghostrun reports
int g_placed_source = -1;     // the first pre-copy placed ahead: its index in the sources, or -1
bool g_tree = false;          // a process of a tree: --tree-root, --tree-member, --tree-shared

// A process tree (process_tree.h): every descendant of the image's process, as --tree-member
// gives it (in the root's tree_member order), and the descriptions `ghost restart` made for the
// tree (--tree-shared, by index). Each restorer forks its own children before reading its image.
struct tree_member {
    long pid, ppid, pgid, sid, state, wait_status;
    uint64_t offset; // where its stream starts in the image file (live ones)
};
tree_member g_members[img::max_tree_members];
int g_member_count = 0;
long g_tree_root = 0;
int g_tree_fds[img::max_tree_shared];
int g_tree_fd_count = 0;

[[noreturn]] void fail(const text &msg) {
    text line;
    line.add("ERR ").add(msg.str()).add("\n");
    if (g_status_fd < 0 || sys::call(__NR_write, g_status_fd, line.str(), line.size()) < 0) {
        // A gate that answered NOGO (another rank refused its image, which ghostrun reports)
        // and went: its 'N' waits here, and this rank ends as quietly as the others.
        char word = 0;
        if (g_gate &&
            sys::call(__NR_recvfrom, g_status_fd, &word, 1, 0x40 /* MSG_DONTWAIT */, 0, 0) == 1 &&
            word == 'N')
            sys::call(__NR_exit_group, 0);
        sys::call(__NR_write, 2, line.str() + 4, line.size() - 4);
    } else if (g_gate) {
        sys::call(__NR_exit_group, 0);
    }
    sys::call(__NR_exit_group, g_moving ? 0 : 1);
    __builtin_unreachable();
}

[[noreturn]] void fail_errno(text msg, long err) {
    msg.add(": ").add(errno_name(-err));
    fail(msg);
}

// --gate: the image is verified; go on only once every rank's is (see the top of this file).
void wait_for_gate() {
    static const char verified[] = "VERIFIED\n";
    // A gate told NOGO early has answered and gone: its 'N' is still there to read.
    (void)sys::call(__NR_write, g_status_fd, verified, sizeof verified - 1);
    char word = 0;
    long n;
    do
        n = sys::call(__NR_read, g_status_fd, &word, 1);
    while (n == -4 /* EINTR */);
    if (n != 1) {
        g_gate = false; // nobody reads a refusal any more: stderr and status 1
        fail(text("the restart gate ended without an answer"));
    }
    if (word != 'G') sys::call(__NR_exit_group, 0);
    if (g_tree) return; // `ghost restart` waits for every process's verdict after the gate
    sys::call(__NR_close, g_status_fd);
    g_status_fd = -1;
}

ghost::image::record_hasher g_record_hash; // reset() per record
// Every rule an image must follow, the same as `ghost inspect` applies (image_verify.h). It sums
// the hashes the record headers announce; each record's data is checked against its own.
constinit img::stream_verifier g_verifier; // no constructors run here: built at compile time

uint64_t g_stream_pos = 0;     // bytes of the image consumed so far
uint64_t g_readahead_end = 0;  // the disk has been asked for everything below this
bool g_readahead_works = true; // false for pipes and sockets

// Keeps the disk busy ahead of us while we copy, fault in and hash: without it, reading an image
// cold is the sum of disk time and CPU time instead of the larger of the two. The kernel cuts each
// readahead() to the device's read-ahead size (read_ahead_kb, often 128 KiB to 8 MiB): the window
// is asked for in steps no larger than that.
void read_ahead() {
    constexpr uint64_t window = 64ULL << 20, step = 1ULL << 20;
    if (!g_readahead_works) return;
    if (g_readahead_end < g_stream_pos) g_readahead_end = g_stream_pos;
    while (g_readahead_end < g_stream_pos + window) {
        if (sys::failed(sys::call(__NR_readahead, g_image_fd, g_readahead_end, step))) {
            g_readahead_works = false;
            return;
        }
        g_readahead_end += step;
    }
}

// An image from a pipe (a live migration's, a duplicate's) is read through a buffer: a read() per
// record header and per small payload was most of the restore of an image of many small records
// (scattered pages, and a reference for each run between them) on a guest where a system call
// costs 1-4 us. A payload as large as the buffer goes straight to its place.
bool g_pipe = false; // g_image_fd is a pipe or a socket
alignas(64) char g_pipe_buffer[1 << 20];
uint64_t g_pipe_at = 0, g_pipe_len = 0; // what of the buffer is read, and filled

// At least `want` (<= the buffer's size) bytes in the buffer, or fewer at the pipe's end.
uint64_t fill_pipe_buffer(uint64_t want) {
    if (g_pipe_at > 0) {
        memmove(g_pipe_buffer, g_pipe_buffer + g_pipe_at, g_pipe_len - g_pipe_at);
        g_pipe_len -= g_pipe_at, g_pipe_at = 0;
    }
    while (g_pipe_len < want) {
        long n = sys::call(__NR_read, g_image_fd, g_pipe_buffer + g_pipe_len,
                           sizeof g_pipe_buffer - g_pipe_len);
        if (n == -4) continue; // EINTR
        if (n < 0) fail_errno(text("cannot read the image"), n);
        if (n == 0) break;
        g_pipe_len += (uint64_t)n;
    }
    return g_pipe_len;
}

void read_exact(void *dst, uint64_t len) {
    g_stream_pos += len;
    char *p = (char *)dst;
    if (g_pipe) {
        uint64_t n = g_pipe_len - g_pipe_at < len ? g_pipe_len - g_pipe_at : len;
        memcpy(p, g_pipe_buffer + g_pipe_at, n);
        g_pipe_at += n, p += n, len -= n;
        if (len && len < sizeof g_pipe_buffer) {
            uint64_t got = fill_pipe_buffer(len);
            // (A restorer started on a pre-copy whose image never comes: below.)
            if (got == 0 && g_placed_source >= 0 && g_stream_pos == len && p == (char *)dst)
                sys::call(__NR_exit_group, g_moving ? 0 : 1);
            if (got < len) fail(text("the image is truncated"));
            memcpy(p, g_pipe_buffer, len);
            g_pipe_at = len;
            return;
        }
    }
    while (len) {
        long n = sys::call(__NR_read, g_image_fd, p, len > (1 << 30) ? (1 << 30) : len);
        if (n == -4) continue; // EINTR
        if (n < 0) fail_errno(text("cannot read the image"), n);
        // A restorer started on a pre-copy whose image never comes: the migration was given up
        // (the receiver says so).
        if (n == 0 && g_placed_source >= 0 && g_stream_pos == len && p == (char *)dst)
            sys::call(__NR_exit_group, g_moving ? 0 : 1);
        if (n == 0) fail(text("the image is truncated"));
        p += n;
        len -= (uint64_t)n;
    }
}

struct record {
    img::record_header h;
    uint64_t remaining; // payload bytes not read yet
};

bool next_record(record &r) {
    read_exact(&r.h, sizeof r.h);
    if (!g_verifier.next(r.h)) fail(text(g_verifier.why()));
    r.remaining = r.h.length;
    g_record_hash.reset(r.h.type);
    return true;
}

// Reads part of the current record's payload into dst (which may be restored memory) and hashes it.
void read_payload(record &r, void *dst, uint64_t len) {
    if (len > r.remaining) fail(text("the image is corrupt (record shorter than its contents)"));
    read_exact(dst, len);
    g_record_hash.update(dst, len);
    r.remaining -= len;
}

void end_record(record &r) {
    if (r.remaining) fail(text("the image is corrupt (record longer than its contents)"));
    if (!g_verifier.digest(g_record_hash.digest())) fail(text(g_verifier.why()));
}

alignas(8) char g_meta[img::max_metadata_record];

// Reads a whole metadata record into g_meta and verifies it; returns its length.
uint64_t read_metadata(record &r) {
    uint64_t len = r.h.length; // the verifier has bounded it
    read_payload(r, g_meta, len);
    end_record(r);
    if (!g_verifier.metadata(g_meta, len)) fail(text(g_verifier.why()));
    return len;
}

// --- step 1/2: our own mappings ------------------------------------------------------------------

struct range {
    uint64_t start = 0, end = 0;
};
range g_own_stack, g_vdso, g_vvar, g_vvar_vclock;
char g_maps[64 * 1024];

void scan_own_maps() {
    int fd = (int)sys::call(__NR_open, "/proc/self/maps", O_RDONLY | O_CLOEXEC);
    if (fd < 0) fail_errno(text("cannot read /proc/self/maps"), fd);
    uint64_t len = 0;
    for (long n; (n = sys::call(__NR_read, fd, g_maps + len, sizeof g_maps - 1 - len)) > 0;)
        len += (uint64_t)n;
    sys::call(__NR_close, fd);
    g_maps[len] = 0;
    for (char *line = g_maps; *line;) {
        char *eol = line;
        while (*eol && *eol != '\n')
            eol++;
        const char *p = line;
        range r;
        r.start = parse_hex(p);
        p++;
        r.end = parse_hex(p);
        const char *name = eol;
        while (name > line && name[-1] != ' ')
            name--;
        if (starts_with(name, "[stack]"))
            g_own_stack = r;
        else if (starts_with(name, "[vdso]"))
            g_vdso = r;
        else if (starts_with(name, "[vvar_vclock]"))
            g_vvar_vclock = r;
        else if (starts_with(name, "[vvar]"))
            g_vvar = r;
        line = *eol ? eol + 1 : eol;
    }
}

uint64_t zone_start() {
    return (uint64_t)__ehdr_start;
}
uint64_t zone_end() {
    return zone_start() + zone_size;
}

bool overlaps_zone(uint64_t start, uint64_t end) {
    return start < zone_end() && end > zone_start();
}

// Moves one kernel special mapping onto the image's address (same kernel, so same size).
void move_special(range &own, const img::special_mapping &want, const char *name, uint64_t &park) {
    if (!want.start && !own.start) return;
    if (!want.start || !own.start || want.end - want.start != own.end - own.start)
        fail(text("the image was taken under a kernel with another ").add(name).add(" layout"));
    uint64_t len = own.end - own.start;
    // Through a parking place in our zone, so that no move lands on a mapping not moved yet.
    long r = sys::call(__NR_mremap, own.start, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, park);
    if (sys::failed(r)) fail_errno(text("cannot move ").add(name), r);
    own = {park, park + len};
    park += len + page_size;
}

void place_specials(const img::process_record &p) {
    uint64_t park = page_align_up((uint64_t)_end) + (1 << 20);
    move_special(g_vvar, p.vvar, "vvar", park);
    move_special(g_vvar_vclock, p.vvar_vclock, "vvar_vclock", park);
    move_special(g_vdso, p.vdso, "vdso", park);
    struct {
        range *own;
        const img::special_mapping *want;
    } moves[] = {{&g_vvar, &p.vvar}, {&g_vvar_vclock, &p.vvar_vclock}, {&g_vdso, &p.vdso}};
    for (auto &m : moves) {
        if (!m.want->start) continue;
        uint64_t len = m.own->end - m.own->start;
        long r = sys::call(__NR_mremap, m.own->start, len, len, MREMAP_MAYMOVE | MREMAP_FIXED,
                           m.want->start);
        if (sys::failed(r)) fail_errno(text("cannot move the vdso to its image address"), r);
    }
}

// --- step 3: memory objects, then regions --------------------------------------------------------

// A memfd or deleted file made again, its contents filled in from the image, before any region
// maps it. Its mode and seals are applied last (finish_objects): sealed or read-only now, it
// could not be filled, mapped and reopened as the image wants.
struct memory_object {
    int fd; // temporary number, read-write
    uint32_t kind, seals, mode;
    char name[img::max_path]; // a deleted file's old path
};
memory_object g_objects[img::max_image_objects + 1]; // by id (the verifier numbers them 1, 2 ...)
uint64_t g_object_count = 0;
alignas(64) char g_copy[256 * 1024];

int temp_fd(int fd);

// A deleted file's descriptors show its old name ("PATH (deleted)" in /proc): the new file is
// linked at PATH, opened there (descriptors and mappings opened from that one show that name) and
// unlinked at once. If PATH exists now, it keeps its O_TMPFILE name ("DIR/#inode (deleted)").
long take_old_name(long fd, const char *path) {
    text self = text("/proc/self/fd/").num(fd);
    if (sys::failed(sys::call(__NR_linkat, -100 /* AT_FDCWD */, self.str(), -100, path,
                              0x400 /* AT_SYMLINK_FOLLOW */)))
        return fd;
    long named = sys::call(__NR_open, path, O_RDWR | O_NOFOLLOW | O_CLOEXEC, 0);
    struct stat a, b;
    bool same = named >= 0 && !sys::failed(sys::call(__NR_fstat, fd, &a)) &&
                !sys::failed(sys::call(__NR_fstat, named, &b)) && a.st_ino == b.st_ino &&
                a.st_dev == b.st_dev;
    if (same) sys::call(__NR_unlink, path);
    if (!same) {
        if (named >= 0) sys::call(__NR_close, named);
        fail(text("cannot recreate deleted file ").add(path).add(": its name was taken meanwhile"));
    }
    sys::call(__NR_close, fd);
    return named;
}

void make_object(record &r) {
    read_metadata(r);
    img::object_record o;
    memcpy(&o, g_meta, sizeof o);
    char name[img::max_path];
    memcpy(name, g_meta + sizeof o, o.name_len);
    name[o.name_len] = 0;
    long fd;
    if (o.kind == img::object_memfd) {
        fd = sys::call(__NR_memfd_create, name, 1 /* MFD_CLOEXEC */ | 2 /* MFD_ALLOW_SEALING */);
        if (fd < 0) fail_errno(text("cannot recreate memfd ").add(name), fd);
    } else {
        // An unnamed file in the deleted file's directory (the verifier saw an absolute path).
        char dir[img::max_path];
        memcpy(dir, name, o.name_len + 1);
        uint32_t cut = o.name_len;
        while (cut > 0 && dir[cut] != '/')
            cut--;
        dir[cut ? cut : 1] = 0;
        fd = sys::call(__NR_open, dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
        if (fd >= 0) fd = take_old_name(fd, name);
        if (fd < 0)
            fail_errno(text("cannot recreate deleted file ")
                           .add(name)
                           .add(" (an O_TMPFILE in ")
                           .add(dir)
                           .add(")"),
                       fd);
    }
    long t = sys::call(__NR_ftruncate, fd, o.size);
    if (sys::failed(t)) fail_errno(text("cannot size the recreated ").add(name), t);
    memory_object &mo = g_objects[o.id];
    mo.fd = temp_fd((int)fd), mo.kind = o.kind, mo.seals = o.seals, mo.mode = o.mode;
    memcpy(mo.name, name, o.name_len + 1);
    g_object_count = o.id;
}

void fill_object(record &r) {
    uint64_t offset;
    read_payload(r, &offset, sizeof offset);
    if (!g_verifier.object_data(offset)) fail(text(g_verifier.why())); // inside the object
    int fd = g_objects[g_object_count].fd;
    while (r.remaining) {
        uint64_t n = r.remaining < sizeof g_copy ? r.remaining : sizeof g_copy;
        read_payload(r, g_copy, n);
        for (uint64_t done = 0; done < n;) {
            long w = sys::call(__NR_pwrite64, fd, g_copy + done, n - done, offset + done);
            if (w == -4) continue;
            if (w <= 0) fail_errno(text("cannot refill a memory object"), w ? w : -28 /* ENOSPC */);
            done += (uint64_t)w;
        }
        offset += n;
    }
    end_record(r);
}

// Shared memory of a tree: `ghost restart` made it from these records; the stream's hashes are
// still checked here (read and dropped).
void skip_tree_data(record &r) {
    uint64_t offset;
    read_payload(r, &offset, sizeof offset);
    if (!g_verifier.object_data(offset)) fail(text(g_verifier.why()));
    while (r.remaining) {
        uint64_t n = r.remaining < sizeof g_copy ? r.remaining : sizeof g_copy;
        read_payload(r, g_copy, n);
    }
    end_record(r);
}

// A new open file description of object `id`.
long reopen_object(uint64_t id, int flags) {
    text self = text("/proc/self/fd/").num(g_objects[id].fd);
    return sys::call(__NR_open, self.str(), flags | O_CLOEXEC, 0);
}

// Once every mapping and descriptor is in place: the object's mode, then its seals.
void finish_objects() {
    for (uint64_t id = 1; id <= g_object_count; id++) {
        memory_object &o = g_objects[id];
        long r = sys::call(__NR_fchmod, o.fd, o.mode);
        if (!sys::failed(r) && o.seals)
            r = sys::call(__NR_fcntl, o.fd, 1033 /* F_ADD_SEALS */, o.seals);
        if (sys::failed(r)) fail_errno(text("cannot seal memory object #").num(id), r);
        sys::call(__NR_close, o.fd);
    }
}

// --- step 3: regions -----------------------------------------------------------------------------

struct open_region {
    uint64_t start = 0, end = 0;
    uint32_t prot = 0;
    bool active = false;
    bool reprotect = false; // mapped writable to be filled, final protection still to set
    bool placed = false;    // taken as placed from a pre-copy (below)
    uint64_t covered = 0;   // placed: the image has said what lies below this
} g_region;

// --- a pre-copy placed ahead ---------------------------------------------------------------------
// A source that is a pre-copy (image_format.h, header_pages_only) is put into memory before the
// image is read: its anonymous regions mapped, its pages in them. In a live migration the restorer
// starts as soon as the pre-copy is in, while the job still runs, so that this work (page faults,
// hashing, copying: most of a big rank's restore) is not part of the downtime. Then each region of
// the image that is exactly a placed one takes it as it is: its references to pages placed there
// are already satisfied, its pages stored are written over them, and whatever it neither stores
// nor references there (pages the program gave back since) is discarded. Every other placed
// region goes before anything is mapped over it.
// A pre-copy in rounds (coord_client.cpp): each round after the first holds the pages written
// during the last one; it comes through the image's pipe ahead of the image, is kept as a source
// of its own (a memfd: the image may take pages from it that could not be placed) and placed
// over the earlier ones, in the regions it finds placed exactly as it has them (and new ones).
// The image takes each page from the last round that holds it, so a page placed by an earlier
// round and written over by a later one is never taken as placed from the earlier.
struct placed_region {
    uint64_t start, end;
    uint32_t kind;
    bool alive;         // still mapped as placed
    bool taken;         // by a region of the image
    uint64_t mark_base; // its pages' marks in g_page_marks (no_marks: none)
};
struct placed_record { // a pages record of a pre-copy round, placed at its address
    uint32_t source;
    uint64_t offset, addr, len, hash;
};
constexpr uint32_t max_placed_regions = 16384;
// (More are not placed: their pages are copied. Rounds after the first hold a record per run of
// pages written: scattered writes make tens of thousands.)
constexpr uint32_t max_placed_records = 262144;
placed_region g_placed_regions[max_placed_regions]; // in address order
placed_record g_placed_records[max_placed_records]; // in (source, offset) order
uint32_t g_placed_region_count = 0, g_placed_record_count = 0;
placed_region *g_taken_region = nullptr; // the image's region open now, when taken as placed

// Marks for the lock-word search (find_lock_words, below), made as the page workers place the
// pages: a page's mark has bit (id >> 6) % 64 set for each word of it that could hold a thread id
// (its low half, flag bits aside, in [1, 2^22): a Linux id), whichever thread that may be. Once
// the image's old ids are known, only the placed pages whose marks meet theirs are searched,
// those the image wrote again and everything not placed: in a migration, most of a big rank's
// memory is placed and searched no more.
constexpr uint64_t max_marked_pages = 2ULL << 20; // 8 GiB placed
constexpr uint64_t no_marks = ~0ULL;
uint64_t g_page_marks[max_marked_pages];
uint64_t g_marked_pages = 0;
constexpr ghost::lock_scan::id_span any_id = {1, (1u << 22) - 2};

uint64_t id_mark(uint32_t id) {
    return 1ULL << ((id >> 6) & 63);
}

// A worker's slice of a placed pages record: `len` bytes `at` bytes into the record's pages
// (`marks`: those of the record's first page).
void mark_pages(const char *data, uint64_t len, uint64_t at, uint64_t *marks) {
    if (at % 64 || len % 64) { // (after a short read: searched whatever they hold)
        for (uint64_t page = at / page_size; page <= (at + len - 1) / page_size; page++)
            marks[page] = ~0ULL;
        return;
    }
    for (uint64_t block = 0; block < len; block += 64) {
        if (!any_id.any_in_block(data + block)) continue;
        for (uint64_t w = block; w < block + 64; w += 8) {
            uint64_t word = *(const uint64_t *)(data + w);
            if (any_id.holds(word))
                marks[(at + w) / page_size] |=
                    id_mark((uint32_t)word & ghost::lock_scan::futex_tid_mask);
        }
    }
}

// Pages of the taken region open now that the image writes: searched whatever their marks say.
void unmark(uint64_t addr, uint64_t len) {
    const placed_region *p = g_taken_region;
    if (!p || p->mark_base == no_marks) return;
    uint64_t first = (addr - p->start) / page_size,
             last = (addr + len - p->start + page_size - 1) / page_size;
    for (uint64_t i = first; i < last; i++)
        g_page_marks[p->mark_base + i] = ~0ULL;
}

bool is_anonymous(uint32_t kind) {
    return kind == img::region_anon_private || kind == img::region_heap ||
           kind == img::region_stack;
}

// The first placed region that ends above `addr`.
uint32_t placed_from(uint64_t addr) {
    uint32_t lo = 0, hi = g_placed_region_count;
    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2;
        if (g_placed_regions[mid].end <= addr)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

// Unmaps the placed regions that meet [start, end), unless an image region took them.
void drop_placed(uint64_t start, uint64_t end) {
    for (uint32_t i = placed_from(start);
         i < g_placed_region_count && g_placed_regions[i].start < end; i++) {
        placed_region &p = g_placed_regions[i];
        if (!p.alive || p.taken) continue;
        sys::call(__NR_munmap, p.start, p.end - p.start);
        p.alive = false;
    }
}

placed_region *placed_match(const img::region_record &rr) {
    if (!is_anonymous(rr.kind)) return nullptr;
    uint32_t i = placed_from(rr.start);
    if (i == g_placed_region_count) return nullptr;
    placed_region &p = g_placed_regions[i];
    bool same = p.alive && !p.taken && p.start == rr.start && p.end == rr.end && p.kind == rr.kind;
    return same ? &p : nullptr;
}

// In a placed region, the image's pages (stored or referenced) come in address order: what lies
// between them holds nothing now.
void cover(uint64_t addr, uint64_t len) {
    if (!g_region.placed) return;
    if (addr > g_region.covered)
        sys::call(__NR_madvise, g_region.covered, addr - g_region.covered, 4 /* MADV_DONTNEED */);
    g_region.covered = addr + len;
}

void workers_drain();

void flush_refs();

void finish_region() {
    flush_refs();
    if (!g_region.active) return;
    cover(g_region.end, 0);
    g_taken_region = nullptr;
    if (g_region.reprotect) {
        workers_drain(); // nobody may still be filling it
        long r =
            sys::call(__NR_mprotect, g_region.start, g_region.end - g_region.start, g_region.prot);
        if (sys::failed(r)) fail_errno(text("cannot protect region ").hex(g_region.start), r);
    }
    g_region.active = false;
}

text region_name(const img::region_record &rr) {
    text t;
    t.add("region ").hex(rr.start).add("-").hex(rr.end);
    return t;
}

int open_region_file(const img::region_record &rr, const char *path, int flags) {
    int fd = (int)sys::call(__NR_open, path, flags | O_CLOEXEC);
    if (fd < 0)
        fail_errno(text("cannot open ").add(path).add(" for ").add(region_name(rr).str()), fd);
    struct stat sb;
    long r = sys::call(__NR_fstat, fd, &sb);
    if (sys::failed(r)) fail_errno(text("cannot stat ").add(path), r);
    bool same = (uint64_t)sb.st_size == rr.file_size;
    if (rr.kind == img::region_file_private)
        same = same && sb.st_mtim.tv_sec * 1000000000LL + sb.st_mtim.tv_nsec == rr.file_mtime_ns;
    if (!same && rr.kind == img::region_file_private)
        fail(text("file ").add(path).add(" changed since the checkpoint"));
    return fd;
}

// The advice the program gave the region (the same kernel took it at checkpoint time).
void apply_advice(const img::region_record &rr) {
    if (rr.advice & ~img::advice_known) fail(text("the image is corrupt (unknown region advice)"));
    static const struct {
        uint32_t bit;
        int advice;
        const char *name;
    } madvices[] = {{img::advice_dontfork, 10, "MADV_DONTFORK"},
                    {img::advice_dontdump, 16, "MADV_DONTDUMP"},
                    {img::advice_hugepage, 14, "MADV_HUGEPAGE"},
                    {img::advice_nohugepage, 15, "MADV_NOHUGEPAGE"},
                    {img::advice_wipeonfork, 18, "MADV_WIPEONFORK"},
                    {img::advice_guard, ghost::uapi::madv_guard_install, "guard pages"}};
    for (const auto &m : madvices) {
        if (!(rr.advice & m.bit)) continue;
        long r = sys::call(__NR_madvise, rr.start, rr.end - rr.start, m.advice);
        if (sys::failed(r))
            fail_errno(
                text("cannot give ").add(region_name(rr).str()).add(" its advice ").add(m.name), r);
    }
}

void map_region(record &r) {
    finish_region();
    read_metadata(r);
    img::region_record rr;
    memcpy(&rr, g_meta, sizeof rr);
    char path[img::max_path];
    memcpy(path, g_meta + sizeof rr, rr.path_len);
    path[rr.path_len] = 0;
    if (overlaps_zone(rr.start, rr.end))
        fail(region_name(rr).add(" overlaps the restorer at ").hex(zone_start()));
    uint64_t len = rr.end - rr.start;
    uint32_t prot = rr.prot | PROT_READ | PROT_WRITE; // pages are written into place
    g_taken_region = nullptr;
    if (placed_region *p = placed_match(rr)) {
        p->taken = true;
        g_taken_region = p;
        apply_advice(rr);
        g_region = {rr.start, rr.end,  rr.prot, true, rr.prot != (PROT_READ | PROT_WRITE),
                    true,     rr.start};
        return;
    }
    drop_placed(rr.start, rr.end);
    long addr = 0;
    switch (rr.kind) {
    case img::region_anon_private:
    case img::region_heap:
    case img::region_stack:
        addr = sys::call(__NR_mmap, rr.start, len, prot,
                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE |
                             (rr.kind == img::region_stack ? MAP_GROWSDOWN : 0),
                         -1, 0);
        break;
    case img::region_anon_shared: {
        int fd = (int)sys::call(__NR_memfd_create, "ghost-shared", 1 /* MFD_CLOEXEC */);
        if (fd < 0)
            fail_errno(text("cannot create shared memory for ").add(region_name(rr).str()), fd);
        long t = sys::call(__NR_ftruncate, fd, len);
        if (sys::failed(t)) fail_errno(text("cannot size shared memory"), t);
        addr = sys::call(__NR_mmap, rr.start, len, prot, MAP_SHARED | MAP_FIXED_NOREPLACE, fd, 0);
        sys::call(__NR_close, fd);
        break;
    }
    case img::region_file_private: {
        int fd = open_region_file(rr, path, O_RDONLY);
        addr = sys::call(__NR_mmap, rr.start, len, prot, MAP_PRIVATE | MAP_FIXED_NOREPLACE, fd,
                         rr.file_offset);
        sys::call(__NR_close, fd);
        break;
    }
    case img::region_file_shared: {
        // A mapping made read-only from a read-write descriptor may be made writable again.
        bool rw = (rr.prot & PROT_WRITE) || (rr.advice & img::advice_maywrite);
        int fd = open_region_file(rr, path, rw ? O_RDWR : O_RDONLY);
        prot = rr.prot;
        addr = sys::call(__NR_mmap, rr.start, len, prot, MAP_SHARED | MAP_FIXED_NOREPLACE, fd,
                         rr.file_offset);
        sys::call(__NR_close, fd);
        break;
    }
    case img::region_tree_shared: { // made by `ghost restart`, inherited by every restorer
        if (!g_tree || rr.object_id >= (uint64_t)g_tree_fd_count)
            fail(text("the image is corrupt (")
                     .add(region_name(rr).str())
                     .add(" names no shared memory of its tree)"));
        prot = rr.prot;
        addr = sys::call(__NR_mmap, rr.start, len, prot, MAP_SHARED | MAP_FIXED_NOREPLACE,
                         g_tree_fds[rr.object_id], rr.file_offset);
        break;
    }
    case img::region_object_shared:
    case img::region_object_private: { // the verifier saw the object made
        bool shared = rr.kind == img::region_object_shared;
        bool rw = shared && ((rr.prot & PROT_WRITE) || (rr.advice & img::advice_maywrite));
        long fd = reopen_object(rr.object_id, rw ? O_RDWR : O_RDONLY);
        if (fd < 0)
            fail_errno(text("cannot open memory object #")
                           .num(rr.object_id)
                           .add(" for ")
                           .add(region_name(rr).str()),
                       fd);
        if (shared) prot = rr.prot;
        addr = sys::call(__NR_mmap, rr.start, len, prot,
                         (shared ? MAP_SHARED : MAP_PRIVATE) | MAP_FIXED_NOREPLACE, fd,
                         rr.file_offset);
        sys::call(__NR_close, fd);
        break;
    }
    default:
        fail(text("the image is corrupt (unknown region kind)"));
    }
    if (sys::failed(addr)) fail_errno(text("cannot map ").add(region_name(rr).str()), addr);
    if ((uint64_t)addr != rr.start)
        fail(text("cannot map ").add(region_name(rr).str()).add(": moved"));
    apply_advice(rr);
    g_region = {rr.start, rr.end, rr.prot, true, prot != rr.prot};
}

// --- pages, verified in parallel
// ------------------------------------------------------------------ With a seekable image (a file,
// a memfd), the main thread only reads record headers and hands each pages record to two worker
// threads, which read each slice into a buffer, hash it there and place it: copying, page clearing
// and hashing then use both cores. A pipe is read in order by the main thread alone.

constexpr int worker_count = 2;
constexpr uint32_t job_slots = 64;

// A page job is a pages record (read from `fd` a slice at a time, hashed, placed), or with
// pieces, a pages record of an older image that a reference names: read whole into the worker's
// buffer, its hash checked, and the pieces wanted copied into place; or, with find_locks, restored
// memory to search for the agent's lock fix (find_lock_words).
struct ref_piece {
    uint64_t addr, len;
};
constexpr uint32_t max_ref_pieces = 32;

struct page_job {
    uint64_t addr, len, offset, expected;
    int fd;
    uint32_t pieces;
    bool find_locks;
    uint64_t *marks; // placing a pre-copy: the marks of the record's pages (or null)
    ref_piece piece[max_ref_pieces];
    uint32_t ready;    // futex: index + 1 of the job in this slot
    uint32_t finished; // futex: index + 1 of the last job done in this slot
};
page_job g_jobs[job_slots];
uint32_t g_claimed = 0, g_submitted = 0, g_done = 0, g_quit = 0;
int32_t g_worker_tids[worker_count]; // cleared by the kernel when a worker is gone
alignas(16) char g_worker_stacks[worker_count][64 * 1024];
bool g_parallel = false;
uint32_t g_worker_next = 0; // a worker's index: its buffer for referenced records
alignas(64) char g_worker_ref[worker_count][sizeof(img::record_header) + 8 + img::max_ref_record];

long futex_op(uint32_t *addr, int op, uint32_t val) {
    return sys::call(__NR_futex, addr, op, val, 0, 0, 0);
}
uint32_t load32(uint32_t *p) {
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}
void wake_all(uint32_t *p) {
    futex_op(p, 1 /* FUTEX_WAKE */, 0x7fffffff);
}

void pread_exact(int fd, void *dst, uint64_t len, uint64_t off);
void copy_referenced(const char *record, uint64_t record_addr, uint64_t record_len,
                     uint64_t record_hash, const ref_piece *pieces, uint32_t count);
void find_lock_words_in(uint64_t addr, uint64_t len, const uint64_t *marks, char *buffer);

// Puts restored bytes into place through the kernel (process_vm_writev on ourselves), which
// writes the pages through its own mapping of them: our page tables meet each page only when the
// program touches it. On a guest with shadow page tables every first touch of a page, from the
// kernel or from user space, is an exit to the hypervisor; reading into place and hashing there
// paid two per page before the program could run, a plain copy from a buffer one, this none
// (measured on such a guest, 256 MiB: 0.65 s, 0.34 s, 0.05 s; the program pays one exit per page
// it touches later, as after any restorer that reads into place). A plain copy where the call is
// refused (a seccomp filter, an old kernel).
bool g_place_by_kernel = true; // page workers read and clear it
void place(void *dst, const void *src, uint64_t len) {
    if (__atomic_load_n(&g_place_by_kernel, __ATOMIC_RELAXED)) {
        struct iovec_raw {
            const void *base;
            uint64_t len;
        } local = {src, len}, remote = {dst, len};
        long n =
            sys::call(__NR_process_vm_writev, sys::call(__NR_getpid), &local, 1, &remote, 1, 0);
        if (n == (long)len) return;
        __atomic_store_n(&g_place_by_kernel, false, __ATOMIC_RELAXED);
    }
    memcpy(dst, src, len);
}

// `buffer`: the worker's own, max_ref_record bytes at least.
void load_and_verify(const page_job &j, char *buffer) {
    if (j.find_locks) return find_lock_words_in(j.addr, j.len, j.marks, buffer);
    if (j.pieces) {
        pread_exact(j.fd, buffer, sizeof(img::record_header) + 8 + j.len, j.offset);
        copy_referenced(buffer, j.addr, j.len, j.expected, j.piece, j.pieces);
        return;
    }
    if (j.len >= (64 << 10)) sys::call(__NR_madvise, j.addr, j.len, 23 /* MADV_POPULATE_WRITE */);
    // Through the worker's buffer, a slice at a time: read, hashed while in the cache, placed.
    constexpr uint64_t slice = img::max_ref_record;
    ghost::image::record_hasher h(img::rec_pages);
    h.update(&j.addr, sizeof j.addr);
    for (uint64_t done = 0; done < j.len;) {
        uint64_t want = j.len - done < slice ? j.len - done : slice;
        long n = sys::call(__NR_pread64, j.fd, buffer, want, j.offset + done);
        if (n == -4) continue;
        if (n < 0) fail_errno(text("cannot read the image"), n);
        if (n == 0) fail(text("the image is truncated"));
        h.update(buffer, (uint64_t)n);
        place((void *)(j.addr + done), buffer, (uint64_t)n);
        if (j.marks) mark_pages(buffer, (uint64_t)n, done, j.marks);
        done += (uint64_t)n;
    }
    if (h.digest() != j.expected) fail(text(img::checksum_mismatch));
}

extern "C" void restorer_page_worker() {
    char *ref_buffer = g_worker_ref[__atomic_fetch_add(&g_worker_next, 1, __ATOMIC_ACQ_REL)];
    for (;;) {
        uint32_t k = __atomic_fetch_add(&g_claimed, 1, __ATOMIC_ACQ_REL);
        page_job &j = g_jobs[k % job_slots];
        for (uint32_t r; (r = load32(&j.ready)) != k + 1;) {
            if (load32(&g_quit)) return;
            futex_op(&j.ready, 0 /* FUTEX_WAIT */, r);
        }
        load_and_verify(j, ref_buffer);
        __atomic_store_n(&j.finished, k + 1, __ATOMIC_RELEASE);
        wake_all(&j.finished);
        __atomic_add_fetch(&g_done, 1, __ATOMIC_ACQ_REL);
        wake_all(&g_done);
    }
}

void workers_stop();
long g_worker_failure = 0;

// The job slots from the start (no worker is running).
void workers_reset() {
    g_claimed = g_submitted = g_done = g_quit = 0;
    g_worker_next = 0;
    for (page_job &j : g_jobs)
        j.ready = j.finished = 0;
}

// False (none left running) if one cannot be started. (Workers may be started again once the
// last ones are stopped.)
bool spawn_workers() {
    workers_reset();
    for (int i = 0; i < worker_count; i++) {
        ghost::uapi::clone_args args = {};
        args.flags = thread_clone_flags | CLONE_CHILD_CLEARTID;
        args.child_tid = (uint64_t)&g_worker_tids[i];
        args.stack = (uint64_t)g_worker_stacks[i];
        args.stack_size = sizeof g_worker_stacks[i];
        long tid = restorer_spawn(&args, sizeof args);
        if (sys::failed(tid)) {
            g_parallel = i > 0;
            workers_stop();
            g_worker_failure = tid;
            return false;
        }
        g_worker_tids[i] = (int32_t)tid;
    }
    g_parallel = true;
    return true;
}

void workers_start() {
    if (sys::failed(sys::call(__NR_lseek, g_image_fd, 0, 1 /* SEEK_CUR */))) return; // a pipe
    if (!spawn_workers()) fail_errno(text("cannot start a page worker"), g_worker_failure);
}

void workers_submit(const page_job &job) {
    uint32_t k = g_submitted;
    page_job &j = g_jobs[k % job_slots];
    if (k >= job_slots)
        for (uint32_t f; (f = load32(&j.finished)) != k - job_slots + 1;)
            futex_op(&j.finished, 0, f);
    j.addr = job.addr, j.len = job.len, j.offset = job.offset, j.expected = job.expected;
    j.fd = job.fd, j.pieces = job.pieces, j.find_locks = job.find_locks, j.marks = job.marks;
    for (uint32_t i = 0; i < job.pieces; i++)
        j.piece[i] = job.piece[i];
    __atomic_store_n(&j.ready, k + 1, __ATOMIC_RELEASE);
    wake_all(&j.ready);
    g_submitted = k + 1;
}

void workers_drain() {
    for (uint32_t d; (d = load32(&g_done)) != g_submitted;)
        futex_op(&g_done, 0, d);
}

// The workers must be gone before the restored threads run: their stacks are ours.
void workers_stop() {
    if (!g_parallel) return;
    workers_drain();
    __atomic_store_n(&g_quit, 1, __ATOMIC_RELEASE);
    // A worker that looked at g_quit just before it was set may only now go to sleep on its
    // slot (g_quit is not the word it waits on): the slots are woken again until every worker
    // is gone (the kernel clears a worker's tid word as it exits).
    for (int32_t &tid : g_worker_tids)
        for (int32_t t; (t = __atomic_load_n(&tid, __ATOMIC_ACQUIRE)) != 0;) {
            for (page_job &j : g_jobs)
                wake_all(&j.ready);
            struct {
                long sec, nsec;
            } step = {0, 1000 * 1000};
            sys::call(__NR_futex, (uint32_t *)&tid, 0 /* FUTEX_WAIT */, (uint32_t)t, &step, 0, 0);
        }
    g_parallel = false;
}

// A pages record's address, checked to lie in its region, after the pages before it, before any
// of its data is read.
uint64_t pages_address(record &r) {
    uint64_t addr;
    read_payload(r, &addr, sizeof addr);
    if (!g_verifier.pages(addr)) fail(text(g_verifier.why()));
    return addr;
}

// A seekable image: the record's data (the rest of it) is passed over, for the page workers to
// read; returns where it starts.
uint64_t pass_over_data(const record &r) {
    uint64_t offset = g_stream_pos;
    long pos = sys::call(__NR_lseek, g_image_fd, r.remaining, 1 /* SEEK_CUR */);
    if (sys::failed(pos)) fail_errno(text("cannot read the image"), pos);
    g_stream_pos += r.remaining;
    return offset;
}

void submit_pages(const record &r, uint64_t addr, uint64_t offset, uint64_t *marks = nullptr) {
    page_job job = {};
    job.addr = addr, job.len = r.remaining, job.offset = offset, job.expected = r.h.hash;
    job.fd = g_image_fd;
    job.marks = marks;
    workers_submit(job);
}

void fill_pages(record &r) {
    uint64_t addr = pages_address(r);
    uint64_t len = r.remaining;
    cover(addr, len);
    unmark(addr, len);
    read_ahead();
    if (g_parallel) return submit_pages(r, addr, pass_over_data(r));
    // Faulting the pages in bulk first is much cheaper than one fault per page inside read().
    if (len >= (64 << 10)) sys::call(__NR_madvise, addr, len, 23 /* MADV_POPULATE_WRITE */);
    // Through g_copy, as the page workers do (load_and_verify says why).
    for (uint64_t done = 0; done < len;) {
        uint64_t n = len - done < sizeof g_copy ? len - done : sizeof g_copy;
        read_payload(r, g_copy, n);
        place((void *)(addr + done), g_copy, n);
        done += n;
    }
    end_record(r);
}

// --- pages taken from older images (incremental images) ------------------------------------------
// A page reference names a pages record of a source image (an fd the restarting command opened
// and checked: --sources=FD,...). The record is read whole, its hash checked against the one the
// reference holds (which this image's own hash covers), and the part wanted is copied into place.
// References come in address order, and consecutive ones often name the same record: the last
// record read is kept.

constexpr int max_source_fds = (int)img::max_sources;
int g_source_fds[max_source_fds];
int g_source_count = 0;
int g_round_fds[img::max_precopy_rounds]; // --rounds: see take_precopy_round
int g_round_count = 0, g_rounds_taken = 0;
bool g_sources_listed = false;
alignas(64) char g_ref_record[sizeof(img::record_header) + 8 + img::max_ref_record];
int g_ref_cached_source = -1;
uint64_t g_ref_cached_offset = 0;

bool is_source_fd(int fd) {
    for (int i = 0; i < g_source_count; i++)
        if (g_source_fds[i] == fd) return true;
    return false;
}

void read_sources_arg(const char *list) {
    for (const char *p = list; *p;) {
        if (g_source_count == max_source_fds) fail(text("too many source images"));
        g_source_fds[g_source_count++] = (int)parse_dec(p);
        while (*p && *p != ',')
            p++;
        if (*p == ',') p++;
    }
}

// --rounds=FD,...: the memfds of a live migration's further pre-copy rounds (take_precopy_round).
void read_rounds_arg(const char *list) {
    for (const char *p = list; *p;) {
        if (g_round_count == (int)img::max_precopy_rounds) fail(text("too many pre-copy rounds"));
        g_round_fds[g_round_count++] = (int)parse_dec(p);
        while (*p && *p != ',')
            p++;
        if (*p == ',') p++;
    }
}

void read_tracking(record &r) {
    read_metadata(r);
    img::tracking_record t;
    memcpy(&t, g_meta, sizeof t);
    // (A pre-copy placed ahead may be followed by a whole image: it then takes nothing from it.)
    if ((int)t.source_count != g_source_count && !(t.source_count == 0 && g_placed_source >= 0))
        fail(text("the image takes pages from ")
                 .num(t.source_count)
                 .add(" older images; ")
                 .num((uint64_t)g_source_count)
                 .add(" were given"));
    g_sources_listed = true;
}

void pread_exact(int fd, void *dst, uint64_t len, uint64_t off) {
    for (uint64_t done = 0; done < len;) {
        long n = sys::call(__NR_pread64, fd, (char *)dst + done, len - done, off + done);
        if (n == -4) continue;
        if (n < 0) fail_errno(text("cannot read a source image"), n);
        if (n == 0) fail(text("a source image is truncated"));
        done += (uint64_t)n;
    }
}

// `record`: a whole pages record (header and payload) as read from a source image, which must be
// the one the reference named; the pieces go into place.
void copy_referenced(const char *record, uint64_t record_addr, uint64_t record_len,
                     uint64_t record_hash, const ref_piece *pieces, uint32_t count) {
    img::record_header h;
    memcpy(&h, record, sizeof h);
    const char *payload = record + sizeof h;
    uint64_t addr;
    memcpy(&addr, payload, sizeof addr);
    if (h.magic != img::record_magic || h.type != img::rec_pages || h.length != 8 + record_len ||
        h.hash != record_hash || addr != record_addr)
        fail(text("an older image this one takes pages from does not hold them (at ")
                 .hex(record_addr)
                 .add(")"));
    ghost::image::record_hasher hash(img::rec_pages);
    hash.update(payload, 8 + record_len);
    if (hash.digest() != record_hash)
        fail(text("an older image this one takes pages from is corrupt (checksum mismatch)"));
    for (uint32_t i = 0; i < count; i++) {
        const ref_piece &p = pieces[i];
        if (p.len >= 2 * page_size)
            sys::call(__NR_madvise, p.addr, p.len, 23 /* MADV_POPULATE_WRITE */);
        place((void *)p.addr, payload + 8 + (p.addr - record_addr), p.len);
    }
}

// References to one record come one after the other (address order): they make one job, handed
// to the page workers when a reference to another record comes, or the region ends. A reference
// to a whole record is an ordinary page job on the source (read straight into place).
page_job g_ref_job;
bool g_ref_job_open = false;
int g_ref_job_source = -1;

void flush_refs() {
    if (!g_ref_job_open) return;
    workers_submit(g_ref_job);
    g_ref_job_open = false;
}

// Is the record the reference names one placed ahead, in the region open now (taken as placed,
// so that nothing else was written there)?
bool already_placed(const img::page_ref_record &ref) {
    if (!g_region.placed) return false;
    uint32_t lo = 0, hi = g_placed_record_count;
    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2;
        const placed_record &m = g_placed_records[mid];
        if (m.source < ref.source || (m.source == ref.source && m.offset < ref.record_offset))
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == g_placed_record_count) return false;
    const placed_record &p = g_placed_records[lo];
    return p.source == ref.source && p.offset == ref.record_offset && p.addr == ref.record_addr &&
           p.len == ref.record_len && p.hash == ref.record_hash;
}

void fill_referenced(record &r) {
    read_metadata(r); // the verifier checked it lies in the region, in order, inside its record
    img::page_ref_record ref;
    memcpy(&ref, g_meta, sizeof ref);
    cover(ref.addr, ref.len);
    if (already_placed(ref)) return;
    unmark(ref.addr, ref.len);
    int fd = g_source_fds[ref.source];
    if (!g_parallel) { // an image read from a pipe: one record buffer, the last record kept
        if (g_ref_cached_source != (int)ref.source || g_ref_cached_offset != ref.record_offset) {
            g_ref_cached_source = -1;
            pread_exact(fd, g_ref_record, sizeof(img::record_header) + 8 + ref.record_len,
                        ref.record_offset);
            g_ref_cached_source = (int)ref.source, g_ref_cached_offset = ref.record_offset;
        }
        ref_piece piece = {ref.addr, ref.len};
        copy_referenced(g_ref_record, ref.record_addr, ref.record_len, ref.record_hash, &piece, 1);
        return;
    }
    if (ref.addr == ref.record_addr && ref.len == ref.record_len) {
        page_job job = {};
        job.addr = ref.addr, job.len = ref.len, job.expected = ref.record_hash, job.fd = fd;
        job.offset = ref.record_offset + sizeof(img::record_header) + 8;
        workers_submit(job);
        return;
    }
    if (g_ref_job_open &&
        (g_ref_job_source != (int)ref.source || g_ref_job.offset != ref.record_offset ||
         g_ref_job.pieces == max_ref_pieces))
        flush_refs();
    if (!g_ref_job_open) {
        g_ref_job = {};
        g_ref_job.addr = ref.record_addr, g_ref_job.len = ref.record_len;
        g_ref_job.offset = ref.record_offset, g_ref_job.expected = ref.record_hash;
        g_ref_job.fd = fd;
        g_ref_job_source = (int)ref.source;
        g_ref_job_open = true;
    }
    g_ref_job.piece[g_ref_job.pieces++] = {ref.addr, ref.len};
}

// --- placing a pre-copy ahead (see "a pre-copy placed ahead" above) ------------------------------

void check_trailer(record &r);

placed_region *g_placing = nullptr; // the region a pre-copy round's pages go into now
int g_placing_source = -1;

// The region where a round's pages go: one placed exactly so by an earlier round, or a new one
// (none where anything else is: our own vdso, the part of a region an earlier round placed).
placed_region *place_region_ahead(record &r) {
    read_metadata(r);
    img::region_record rr;
    memcpy(&rr, g_meta, sizeof rr);
    // (The exporter writes any other region of a pre-copy as anonymous with no access.)
    if (!is_anonymous(rr.kind) || !rr.prot || overlaps_zone(rr.start, rr.end)) return nullptr;
    uint32_t at = placed_from(rr.start);
    if (at < g_placed_region_count) {
        placed_region &p = g_placed_regions[at];
        if (p.alive && p.start == rr.start && p.end == rr.end && p.kind == rr.kind) return &p;
        if (p.start < rr.end) return nullptr;
    }
    if (g_placed_region_count == max_placed_regions) return nullptr;
    long addr = sys::call(__NR_mmap, rr.start, rr.end - rr.start, PROT_READ | PROT_WRITE,
                          MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE |
                              (rr.kind == img::region_stack ? MAP_GROWSDOWN : 0),
                          -1, 0);
    if (sys::failed(addr)) return nullptr; // (our own vdso there: the image's pages are copied)
    uint64_t pages = (rr.end - rr.start) / page_size, marks = no_marks;
    if (g_marked_pages + pages <= max_marked_pages) {
        marks = g_marked_pages;
        g_marked_pages += pages;
    }
    for (uint32_t i = g_placed_region_count; i > at; i--) // (a later round's: in address order)
        g_placed_regions[i] = g_placed_regions[i - 1];
    g_placed_region_count++;
    g_placed_regions[at] = {rr.start, rr.end, rr.kind, true, false, marks};
    return &g_placed_regions[at];
}

void place_pages_ahead(record &r) {
    uint64_t addr = pages_address(r);
    uint64_t offset = pass_over_data(r);
    if (!g_placing || g_placed_record_count == max_placed_records) return;
    const placed_region &p = *g_placing;
    submit_pages(r, addr, offset,
                 p.mark_base == no_marks
                     ? nullptr
                     : &g_page_marks[p.mark_base + (addr - p.start) / page_size]);
    g_placed_records[g_placed_record_count++] = {(uint32_t)g_placing_source,
                                                 offset - 8 - sizeof(img::record_header), addr,
                                                 r.remaining, r.h.hash};
}

// Places source `index` if it is a pre-copy, each pages record checked against its hash.
void place_ahead(int index) {
    int fd = g_source_fds[index];
    struct {
        img::record_header h;
        img::header_record hr;
    } head;
    long n = sys::call(__NR_pread64, fd, &head, sizeof head, 0);
    if (n != (long)sizeof head || head.h.type != img::rec_header ||
        !(head.hr.flags & img::header_pages_only))
        return;
    // (Read from its start: a receiver that wrote it shares our file position, at its end.)
    if (sys::failed(sys::call(__NR_lseek, fd, 0, 0 /* SEEK_SET */))) return;
    int image_fd = g_image_fd;
    bool pipe = g_pipe; // (what the pipe's buffer holds waits there)
    g_image_fd = fd, g_pipe = false;
    workers_start();
    if (g_parallel) {
        g_placing = nullptr, g_placing_source = index;
        record r;
        for (bool more = true; more;) {
            next_record(r);
            switch (r.h.type) {
            case img::rec_header:
            case img::rec_tracking:
                read_metadata(r);
                break;
            case img::rec_region:
                g_placing = place_region_ahead(r);
                break;
            case img::rec_pages:
                place_pages_ahead(r);
                break;
            case img::rec_trailer:
                check_trailer(r);
                more = false;
                break;
            default:
                fail(text("a source image is corrupt (a record that no pre-copy holds)"));
            }
        }
        workers_stop();
        g_placing = nullptr;
        if (g_placed_source < 0) g_placed_source = index;
    }
    g_image_fd = image_fd, g_pipe = pipe;
    g_stream_pos = g_readahead_end = 0;
    g_readahead_works = true;
    g_verifier = img::stream_verifier{};
}

// After the first pre-copy, a live migration's receiver may say that a further round is in (see
// "a pre-copy placed ahead"): the next of the memfds --rounds gave, whole and verified by it,
// which becomes a source like the first and is placed. False when the image comes instead (its
// first bytes, read to tell, stay in the pipe's buffer).
bool take_precopy_round() {
    constexpr uint64_t len = sizeof img::precopy_round_marker;
    if (!g_pipe) return false;
    uint64_t got = fill_pipe_buffer(len);
    if (got == 0) sys::call(__NR_exit_group, g_moving ? 0 : 1); // (the migration was given up)
    if (got < len) fail(text("the image is truncated"));
    if (memcmp(g_pipe_buffer, img::precopy_round_marker, len) != 0) return false;
    g_pipe_at = len;
    if (g_rounds_taken == g_round_count || g_source_count == max_source_fds)
        fail(text("more pre-copy rounds came than were given"));
    g_source_fds[g_source_count++] = g_round_fds[g_rounds_taken++];
    place_ahead(g_source_count - 1);
    return true;
}

// --- an MPI rank restarted under a new launcher (--rank)
// ------------------------------------------ The new process's environment goes to the restored
// process (the agent's state block names it): the rank's MPI layer starts its fresh lower half with
// it. A rank also keeps what the launcher passed it (Hydra's PMI_FD, Open MPI's pipes: DESIGN 2c)
// on their numbers; an image descriptor whose number the launcher took moves the launcher's out of
// the way (and PMI_FD with it).

struct linux_dirent64_head {
    uint64_t ino;
    int64_t off;
    unsigned short reclen;
    unsigned char type;
    char name[1]; // at offset 19
};

bool g_rank_mode = false;
constexpr int max_env = 4096;
char g_env_buf[256 * 1024];
const char *g_env[max_env + 1];
int g_env_count = 0;
uint64_t g_env_used = 0;
constexpr int max_inherited = ghost::agent::max_inherited_fds;
int32_t g_inherited[max_inherited];
int g_inherited_count = 0;

const char *keep_string(const char *s) {
    uint64_t n = strlen(s) + 1;
    if (g_env_used + n > sizeof g_env_buf) fail(text("the environment is too large"));
    char *at = g_env_buf + g_env_used;
    memcpy(at, s, n);
    g_env_used += n;
    return at;
}

// Before the kernel's stack (where the strings are) goes away.
void capture_environment(char **envp) {
    for (char **e = envp; *e; e++) {
        if (g_env_count == max_env) fail(text("the environment has too many variables"));
        g_env[g_env_count++] = keep_string(*e);
    }
    g_env[g_env_count] = nullptr;
}

// Every descriptor the launcher passed, except the two of our own command line.
bool is_source_fd(
    int fd); // an older image an incremental one takes pages from (ours, not the launcher's)

void note_inherited_fds() {
    int dir = (int)sys::call(__NR_open, "/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir < 0) fail_errno(text("cannot list descriptors"), dir);
    char buf[4096];
    for (long n; (n = sys::call(__NR_getdents64, dir, buf, sizeof buf)) > 0;) {
        for (long off = 0; off < n;) {
            auto *d = (linux_dirent64_head *)(buf + off);
            off += d->reclen;
            if (d->name[0] < '0' || d->name[0] > '9') continue;
            int fd = (int)parse_dec(d->name);
            if (fd == dir || fd == g_image_fd || fd == g_status_fd || is_source_fd(fd)) continue;
            if (g_inherited_count == max_inherited)
                fail(text("the launcher passed more than ").num(max_inherited).add(" descriptors"));
            g_inherited[g_inherited_count++] = fd;
        }
    }
    sys::call(__NR_close, dir);
}

int inherited_index(int fd) {
    for (int i = 0; i < g_inherited_count; i++)
        if (g_inherited[i] == fd) return i;
    return -1;
}

int temp_fd(int fd);

// The image's descriptor `fd` is about to be placed: a launcher descriptor on that number moves.
void make_room(int fd) {
    int i = g_rank_mode ? inherited_index(fd) : -1;
    if (i < 0) return;
    long flags = sys::call(__NR_fcntl, fd, F_GETFD);
    int to = temp_fd(fd); // high, out of the image's way; close-on-exec only if it was
    if (!sys::failed(flags) && !(flags & FD_CLOEXEC)) sys::call(__NR_fcntl, to, F_SETFD, 0);
    g_inherited[i] = to;
    text from, now;
    from.add("PMI_FD=").num(fd);
    now.add("PMI_FD=").num(to);
    for (int k = 0; k < g_env_count; k++)
        if (strcmp(g_env[k], from.str()) == 0) g_env[k] = keep_string(now.str());
}

// After every region is in place (so that the kernel's choice cannot collide with one): the
// environment as a char* array followed by its strings, in a mapping of its own.
void publish_environment(ghost::agent::state *agent) {
    uint64_t array = (uint64_t)(g_env_count + 1) * sizeof(char *);
    uint64_t len = page_align_up(array + g_env_used);
    long m =
        sys::call(__NR_mmap, 0, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (sys::failed(m)) fail_errno(text("cannot map the new environment"), m);
    char **out = (char **)m;
    char *strings = (char *)m + array;
    for (int i = 0; i < g_env_count; i++) {
        uint64_t n = strlen(g_env[i]) + 1;
        memcpy(strings, g_env[i], n);
        out[i] = strings;
        strings += n;
    }
    out[g_env_count] = nullptr;
    agent->env = (uint64_t)m;
    agent->env_map = (uint64_t)m;
    agent->env_map_len = len;
    agent->restore_flags = g_rank_mode ? 1 /* GHOST_RESTORED_RANK */ : 0;
    agent->inherited_fd_count = (uint32_t)g_inherited_count;
    for (int i = 0; i < g_inherited_count; i++)
        agent->inherited_fds[i] = g_inherited[i];
}

// --- step 5: descriptors -------------------------------------------------------------------------

// A recreated pipe: its temporary ends stay open until every descriptor is placed, so that further
// open file descriptions of it can be opened through /proc/self/fd.
struct pipe_pair {
    uint64_t id;
    int ends[2]; // temporary numbers of the read and write ends
    bool placed[2];
};
pipe_pair g_pipes[img::max_image_objects];
int g_pipe_count = 0;

// Recreated socket pairs (file_socket_pair): the two ends, by the socket_state's `end`.
pipe_pair g_socket_pairs[img::max_image_objects];
int g_socket_pair_count = 0;

// A recreated pty pair: the temporary master opens the slave's descriptions.
struct pty_pair {
    uint64_t id;
    int master; // temporary number
    bool placed;
    int32_t locked;
};
pty_pair g_ptys[16];
int g_pty_count = 0;
int g_next_temp_fd = 0; // counts down from the top of the descriptor table

int temp_fd(int fd) {
    long r = sys::call(__NR_fcntl, fd, F_DUPFD_CLOEXEC, --g_next_temp_fd);
    if (sys::failed(r) || r != g_next_temp_fd)
        fail(text("cannot move a descriptor out of the way"));
    sys::call(__NR_close, fd);
    return (int)r;
}

void place_fd(int from, int to, bool cloexec) {
    if (from != to) {
        long r = sys::call(__NR_dup2, from, to);
        if (sys::failed(r)) fail_errno(text("cannot place descriptor ").num(to), r);
        sys::call(__NR_close, from);
    }
    sys::call(__NR_fcntl, to, F_SETFD, cloexec ? FD_CLOEXEC : 0);
}

constexpr int max_fd = 65536;
uint8_t g_fd_in_image[max_fd / 8];

struct linux_dirent64 {
    uint64_t ino;
    int64_t off;
    unsigned short reclen;
    unsigned char type;
    char name[1];
};

bool fd_in_image(int fd) {
    return fd < max_fd && (g_fd_in_image[fd / 8] >> (fd % 8)) & 1;
}

// Whatever the restarter inherited that the image does not have must not leak into the process.
void close_foreign_fds() {
    int dir = (int)sys::call(__NR_open, "/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir < 0) fail_errno(text("cannot list descriptors"), dir);
    char buf[4096];
    int doomed[256], count = 0;
    for (long n; (n = sys::call(__NR_getdents64, dir, buf, sizeof buf)) > 0;) {
        for (long off = 0; off < n;) {
            auto *d = (linux_dirent64 *)(buf + off);
            off += d->reclen;
            if (d->name[0] < '0' || d->name[0] > '9') continue;
            int fd = (int)parse_dec(d->name);
            if (fd == dir || fd == g_image_fd || fd == g_status_fd || fd_in_image(fd)) continue;
            if (inherited_index(fd) >= 0) continue; // a rank's launcher descriptors stay
            if (count < 256) doomed[count++] = fd;
        }
    }
    sys::call(__NR_close, dir);
    for (int i = 0; i < count; i++)
        sys::call(__NR_close, doomed[i]);
    if (count == 256) close_foreign_fds(); // (a tree's shared descriptions can be many)
}

// Like place_fd, but `from` stays open (a pipe's or pty's temporary end).
void place_copy(int from, int to, bool cloexec) {
    long r = sys::call(__NR_dup2, from, to);
    if (sys::failed(r)) fail_errno(text("cannot place descriptor ").num(to), r);
    sys::call(__NR_fcntl, to, F_SETFD, cloexec ? FD_CLOEXEC : 0);
}

int open_flags(const img::file_record &fr) {
    return fr.flags & ~(O_CREAT | O_TRUNC | O_EXCL | O_CLOEXEC);
}

// The flags of a new description opened through a /proc/self/fd magic link: O_NOFOLLOW (kept by
// the kernel in the flags, as Python's tempfile opens its files) would refuse the link itself
// (ELOOP), O_TMPFILE (which includes O_DIRECTORY) asks for a new file. Both only steered the
// original open.
int proc_reopen_flags(const img::file_record &fr) {
    return open_flags(fr) & ~(O_TMPFILE | O_NOCTTY | O_NOFOLLOW);
}

pipe_pair &pipe_of(const img::file_record &fr, const char *data, const text &what) {
    pipe_pair *pp = nullptr;
    for (int i = 0; i < g_pipe_count; i++)
        if (g_pipes[i].id == fr.pipe_id) pp = &g_pipes[i];
    if (!pp) {
        if (g_pipe_count == (int)img::max_image_objects) fail(text("too many pipes in the image"));
        int ends[2];
        long p = sys::call(__NR_pipe2, ends, O_CLOEXEC);
        if (sys::failed(p)) fail_errno(text("cannot create a pipe for ").add(what.str()), p);
        pp = &g_pipes[g_pipe_count++];
        pp->id = fr.pipe_id;
        pp->ends[0] = temp_fd(ends[0]);
        pp->ends[1] = temp_fd(ends[1]);
        pp->placed[0] = pp->placed[1] = false;
        if (fr.pipe_size) {
            long s = sys::call(__NR_fcntl, pp->ends[1], F_SETPIPE_SZ, fr.pipe_size);
            if (sys::failed(s)) fail_errno(text("cannot resize the pipe of ").add(what.str()), s);
        }
    }
    // Buffered data: the write cannot block, the pipe is empty and as large as it was.
    if (fr.data_len) {
        long size = sys::call(__NR_fcntl, pp->ends[1], F_GETPIPE_SZ);
        long w =
            size >= (long)fr.data_len ? sys::call(__NR_write, pp->ends[1], data, fr.data_len) : -1;
        if (w != (long)fr.data_len) fail(text("cannot refill the pipe of ").add(what.str()));
    }
    return *pp;
}

pty_pair &pty_of(const img::file_record &fr, const char *data, const text &what) {
    for (int i = 0; i < g_pty_count; i++)
        if (g_ptys[i].id == fr.pipe_id) return g_ptys[i];
    if (fr.kind != img::file_pty_master || fr.data_len != sizeof(img::pty_state))
        fail(text("the image is corrupt (pty of ").add(what.str()).add(")"));
    if (g_pty_count == 16) fail(text("too many ptys in the image"));
    img::pty_state st;
    memcpy(&st, data, sizeof st);
    long m = sys::call(__NR_open, "/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC, 0);
    if (m < 0) fail_errno(text("cannot open /dev/ptmx for ").add(what.str()), m);
    pty_pair &pp = g_ptys[g_pty_count++];
    pp.id = fr.pipe_id;
    pp.master = temp_fd((int)m);
    pp.placed = false;
    pp.locked = st.locked;
    // Terminal ioctls on a master act on its slave. Locked again once the slaves are open.
    int unlock = 0;
    long r = sys::call(__NR_ioctl, pp.master, ghost::uapi::tiocsptlck, &unlock);
    if (!sys::failed(r)) r = sys::call(__NR_ioctl, pp.master, ghost::uapi::tcsets2, &st.termios);
    if (!sys::failed(r)) r = sys::call(__NR_ioctl, pp.master, ghost::uapi::tiocswinsz, st.winsize);
    if (!sys::failed(r) && st.packet)
        r = sys::call(__NR_ioctl, pp.master, ghost::uapi::tiocpkt, &st.packet);
    if (sys::failed(r)) fail_errno(text("cannot set up the pty of ").add(what.str()), r);
    return pp;
}

bool is_hex(char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}
uint64_t hex_value(char c) {
    return c <= '9' ? (uint64_t)(c - '0') : (uint64_t)(c - 'a' + 10);
}

// Where a half-read /proc/self/maps or smaps listing (fd, just opened) resumes: at the same line
// of the same mapping's entry (or the next entry, if that mapping is gone), counted in this
// process's own listing. Seeking a /proc listing positions it by entry, so the program's next read
// continues with the entries after that one whatever mappings come and go before it.
int64_t maps_offset(int fd, const img::proc_maps_position &at, const text &what) {
    int64_t pos = 0, line_start = 0;
    char head[40]; // the start of the current line: enough for "start-end "
    uint32_t head_len = 0, line = 0;
    bool in_entry = false;
    for (;;) {
        long n = sys::call(__NR_read, fd, g_copy, sizeof g_copy);
        if (n == -4) continue;
        if (n < 0) fail_errno(text("cannot read ").add(what.str()), n);
        if (n == 0) return pos; // its end
        for (long i = 0; i < n; i++, pos++) {
            if (head_len < sizeof head) head[head_len++] = g_copy[i];
            if (g_copy[i] != '\n') continue;
            uint32_t k = 0;
            uint64_t start = 0;
            while (k < head_len && is_hex(head[k]))
                start = start * 16 + hex_value(head[k++]);
            uint32_t dash = k;
            bool range = k > 0 && k < head_len && head[k++] == '-';
            while (range && k < head_len && is_hex(head[k]))
                k++;
            range = range && k > dash + 1 && k < head_len && head[k] == ' ';
            if (range) {
                if (in_entry || start > at.vma_start) return line_start; // past it
                in_entry = start == at.vma_start;
                line = 0;
            }
            if (in_entry && line == at.line) {
                int64_t len = pos - line_start; // without its newline
                return line_start + ((int64_t)at.column < len ? (int64_t)at.column : len);
            }
            line++;
            line_start = pos + 1;
            head_len = 0;
        }
    }
}

// Anonymous-inode descriptors (file_eventfd ...), made anew with the state of their record's
// data (the verifier checked its size). An epoll instance's watches wait in g_epoll_watches
// until every descriptor is in place (arm_epolls).
struct pending_watch {
    int epoll_fd;
    img::epoll_watch watch;
};
pending_watch g_epoll_watches[img::max_epoll_watches];
uint32_t g_epoll_watch_count = 0;

// An inotify instance whose watches have their old numbers. The kernel gives each new watch the
// number after the last one given: a number the image skips is taken by a watch of a memfd of
// our own, removed at once; the events those removals queue are read before the program runs.
long make_inotify(const img::file_record &fr, const char *data) {
    long fd = sys::call(__NR_inotify_init1, O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return fd;
    long gap = -1;
    char gap_path[32];
    int32_t next = 1;
    for (uint32_t at = 0; at < fr.data_len;) {
        img::inotify_watch w;
        memcpy(&w, data + at, sizeof w);
        const char *path = data + at + sizeof w;
        at += (uint32_t)sizeof w + w.path_len;
        while (next < w.wd) {
            if (gap < 0) {
                gap = sys::call(__NR_memfd_create, "ghost-inotify-gap", 1 /* MFD_CLOEXEC */);
                if (gap < 0) return gap;
                text p = text("/proc/self/fd/").num(gap);
                memcpy(gap_path, p.str(), p.size() + 1);
            }
            long g = sys::call(__NR_inotify_add_watch, fd, gap_path, 2 /* IN_MODIFY */);
            if (g < 0) return g;
            sys::call(__NR_inotify_rm_watch, fd, g);
            next = (int32_t)g + 1;
        }
        long got = sys::call(__NR_inotify_add_watch, fd, path, w.mask);
        if (got < 0) fail_errno(text("cannot watch ").add(path).add(" again (inotify)"), got);
        if (got != w.wd)
            fail(text("cannot give the inotify watch of ").add(path).add(" its number again"));
        next = w.wd + 1;
    }
    if (gap >= 0) sys::call(__NR_close, gap);
    while (sys::call(__NR_read, fd, g_copy, sizeof g_copy) > 0) {
    } // the gaps' IN_IGNORED events
    if (!(fr.flags & O_NONBLOCK)) sys::call(__NR_fcntl, fd, F_SETFL, 0);
    return fd;
}

// Whether a Unix socket's path is left from a process that is gone: it names a socket, and no
// live socket is bound to that path (/proc/net/unix). Read, not probed with a connect: the
// original may still run (a duplicate), and must not see a connection. A listing too long to
// read here counts as not stale (the bind then fails).
bool stale_unix_socket(const uint8_t *addr, uint32_t len) {
    struct stat sb;
    const char *path = (const char *)addr + 2;
    if (len <= 2 || !path[0] || sys::failed(sys::call(__NR_stat, path, &sb)) ||
        (sb.st_mode & S_IFMT) != S_IFSOCK)
        return false;
    long fd = sys::call(__NR_open, "/proc/net/unix", O_RDONLY | O_CLOEXEC, 0);
    if (fd < 0) return false;
    long have = 0;
    for (long n; have < (long)sizeof g_copy - 1; have += n)
        if ((n = sys::call(__NR_read, fd, g_copy + have, sizeof g_copy - 1 - have)) <= 0) break;
    bool complete =
        sys::call(__NR_read, fd, g_copy + have, 0) == 0 && have < (long)sizeof g_copy - 1;
    sys::call(__NR_close, fd);
    if (!complete) return false;
    g_copy[have] = 0;
    size_t path_len = strlen(path);
    // "Num: RefCount Protocol Flags Type St Inode Path": the flags are the fourth field.
    for (char *line = g_copy; *line;) {
        char *end = line;
        while (*end && *end != '\n')
            end++;
        const char *field[8] = {};
        int count = 0;
        for (char *c = line; c < end && count < 8;) {
            while (c < end && *c == ' ')
                c++;
            if (c < end) field[count++] = c;
            while (c < end && *c != ' ')
                c++;
        }
        if (count == 8 && (size_t)(end - field[7]) == path_len &&
            memcmp(field[7], path, path_len) == 0)
            return false; // a live socket is bound to it (a listener, a datagram receiver)
        line = *end ? end + 1 : end;
    }
    return true;
}

// A socket bound to its old address again (file_socket_endpoint), listening or connected as it
// was. The address is free once the process it was in is gone (SO_REUSEADDR while binding:
// connections it had accepted may linger in TIME_WAIT); a Unix socket's path that process left
// behind is removed first. An address somebody else holds (the original, running beside a
// duplicate) fails the restore.
long make_endpoint(const img::file_record &fr, const char *data) {
    img::socket_endpoint ep;
    memcpy(&ep, data, sizeof ep);
    ep.local[sizeof ep.local - 1] = 0; // (a Unix path is read as a string below)
    constexpr int sol_socket = 1, so_reuseaddr = 2, so_reuseport = 15, so_sndbuf = 7, so_rcvbuf = 8,
                  ipproto_ipv6 = 41, ipv6_v6only = 26;
    long fd = sys::call(__NR_socket, ep.family, ep.type | O_CLOEXEC | (fr.flags & O_NONBLOCK), 0);
    if (fd < 0) return fd;
    auto set = [fd](int level, int name, int value) {
        return sys::call(__NR_setsockopt, fd, level, name, &value, sizeof value);
    };
    long r = set(sol_socket, so_reuseaddr, 1);
    if (!sys::failed(r) && ep.reuseport) r = set(sol_socket, so_reuseport, 1);
    if (!sys::failed(r) && ep.family == 10) r = set(ipproto_ipv6, ipv6_v6only, (int)ep.v6only);
    if (!sys::failed(r)) r = set(sol_socket, so_sndbuf, (int)(ep.sndbuf / 2));
    if (!sys::failed(r)) r = set(sol_socket, so_rcvbuf, (int)(ep.rcvbuf / 2));
    bool unbound = ep.family == 1 ? ep.local_len <= 2             // unnamed
                                  : !ep.local[2] && !ep.local[3]; // port 0: never bound
    if (!sys::failed(r) && !unbound) {
        r = sys::call(__NR_bind, fd, ep.local, ep.local_len);
        if (r == -98 /* EADDRINUSE */ && ep.family == 1 &&
            stale_unix_socket(ep.local, ep.local_len)) {
            sys::call(__NR_unlink, (const char *)ep.local + 2);
            r = sys::call(__NR_bind, fd, ep.local, ep.local_len);
        }
    }
    if (!sys::failed(r) && ep.backlog) r = sys::call(__NR_listen, fd, ep.backlog);
    if (!sys::failed(r) && ep.peer_len) r = sys::call(__NR_connect, fd, ep.peer, ep.peer_len);
    if (!sys::failed(r) && !ep.reuseaddr) r = set(sol_socket, so_reuseaddr, 0);
    if (sys::failed(r)) {
        sys::call(__NR_close, fd);
        return r;
    }
    return fd;
}

long make_anon(const img::file_record &fr, const char *data) {
    int nonblock = fr.flags & O_NONBLOCK;
    switch (fr.kind) {
    case img::file_eventfd: {
        img::eventfd_state st;
        memcpy(&st, data, sizeof st);
        constexpr int efd_semaphore = 1;
        long fd =
            sys::call(__NR_eventfd2, 0, O_CLOEXEC | nonblock | (st.semaphore ? efd_semaphore : 0));
        if (fd >= 0 && st.count) { // (the counter is 64 bits wide, eventfd2's start value 32)
            long w = sys::call(__NR_write, fd, &st.count, sizeof st.count);
            if (w != (long)sizeof st.count) return sys::failed(w) ? w : -5 /* EIO */;
        }
        return fd;
    }
    case img::file_timerfd: {
        img::timerfd_state st;
        memcpy(&st, data, sizeof st);
        long fd = sys::call(__NR_timerfd_create, st.clock, O_CLOEXEC | nonblock);
        if (fd < 0) return fd;
        struct {
            long interval[2], value[2];
        } spec = {{st.interval[0], st.interval[1]}, {st.value[0], st.value[1]}};
        bool settable = st.clock == 0 /* CLOCK_REALTIME */ || st.clock == 8 /* _ALARM */;
        // The exporter gave an absolute time only for an absolute timer on a settable clock:
        // any other is armed for the time it had left.
        int flags = settable ? (int)st.settime_flags : 0;
        bool expired = !st.value[0] && !st.value[1];
        if (expired && (st.interval[0] || st.interval[1])) { // moved on at its next read
            spec.value[0] = st.interval[0], spec.value[1] = st.interval[1];
            flags = 0;
        }
        long r = expired && !spec.value[0] && !spec.value[1]
                     ? 0
                     : sys::call(__NR_timerfd_settime, fd, flags, &spec, 0);
        constexpr unsigned long tfd_ioc_set_ticks = 0x40085400; // _IOW('T', 0, __u64)
        if (!sys::failed(r) && st.ticks)
            r = sys::call(__NR_ioctl, fd, tfd_ioc_set_ticks, &st.ticks);
        return sys::failed(r) ? r : fd;
    }
    case img::file_signalfd: {
        uint64_t mask;
        memcpy(&mask, data, sizeof mask);
        return sys::call(__NR_signalfd4, -1, &mask, sizeof mask, O_CLOEXEC | nonblock);
    }
    case img::file_inotify:
        return make_inotify(fr, data);
    case img::file_socket_endpoint:
        return make_endpoint(fr, data);
    default: { // file_epoll
        long fd = sys::call(__NR_epoll_create1, O_CLOEXEC);
        if (fd < 0) return fd;
        uint32_t count = fr.data_len / (uint32_t)sizeof(img::epoll_watch);
        if (count > img::max_epoll_watches - g_epoll_watch_count)
            fail(text("the image is corrupt (too many epoll watches)"));
        for (uint32_t i = 0; i < count; i++) {
            pending_watch &w = g_epoll_watches[g_epoll_watch_count++];
            w.epoll_fd = fr.fd;
            memcpy(&w.watch, data + i * sizeof w.watch, sizeof w.watch);
        }
        return fd;
    }
    }
}

// Once every descriptor is in place: the watches of the epoll instances, on the same
// descriptor numbers with the same events and data. (What was ready is ready again: a
// level-triggered watch reports it as before; an edge-triggered one reports it once more.)
void arm_epolls() {
    struct __attribute__((packed)) {
        uint32_t events;
        uint64_t data;
    } ev;
    for (uint32_t i = 0; i < g_epoll_watch_count; i++) {
        const pending_watch &w = g_epoll_watches[i];
        text what = text("the epoll watch of descriptor ")
                        .num(w.watch.fd)
                        .add(" in descriptor ")
                        .num(w.epoll_fd);
        if (!fd_in_image(w.watch.fd)) fail(what.add(": that descriptor is not in the image"));
        ev.events = w.watch.events, ev.data = w.watch.data;
        long r = sys::call(__NR_epoll_ctl, w.epoll_fd, 1 /* EPOLL_CTL_ADD */, w.watch.fd, &ev);
        if (sys::failed(r)) fail_errno(text("cannot restore ").add(what.str()), r);
    }
}

pipe_pair &socket_pair_of(const img::file_record &fr, uint32_t type, const text &what) {
    for (int i = 0; i < g_socket_pair_count; i++)
        if (g_socket_pairs[i].id == fr.pipe_id) return g_socket_pairs[i];
    if (g_socket_pair_count == (int)img::max_image_objects)
        fail(text("too many socket pairs in the image"));
    int ends[2];
    long r = sys::call(__NR_socketpair, 1 /* AF_UNIX */, type | O_CLOEXEC, 0, ends);
    if (sys::failed(r)) fail_errno(text("cannot create a socket pair for ").add(what.str()), r);
    pipe_pair &sp = g_socket_pairs[g_socket_pair_count++];
    sp.id = fr.pipe_id;
    sp.ends[0] = temp_fd(ends[0]);
    sp.ends[1] = temp_fd(ends[1]);
    sp.placed[0] = sp.placed[1] = false;
    return sp;
}

constexpr int sol_socket = 1, so_sndbuf = 7, so_rcvbuf = 8, so_passcred = 16;

void set_socket_option(int sock, int name, int value, const text &what) {
    long r = sys::call(__NR_setsockopt, sock, sol_socket, name, &value, sizeof value);
    if (sys::failed(r)) fail_errno(text("cannot set the socket options of ").add(what.str()), r);
}

// The bytes queued at one end are sent again by the other, which may send that much at once
// only for as long as it takes (a sender's buffer bounds what it has in flight).
void refill_socket(int peer, const char *data, uint32_t len, const text &what) {
    int was = 0;
    uint32_t size = sizeof was;
    long r = sys::call(__NR_getsockopt, peer, sol_socket, so_sndbuf, &was, &size);
    if (sys::failed(r)) fail_errno(text("cannot refill the socket of ").add(what.str()), r);
    set_socket_option(peer, so_sndbuf, (int)(len + 65536), what);
    for (uint32_t done = 0; done < len;) {
        long n = sys::call(__NR_sendto, peer, data + done, len - done,
                           0x40 /* MSG_DONTWAIT */ | 0x4000 /* MSG_NOSIGNAL */, 0, 0);
        if (n == -4) continue;
        if (n <= 0) fail_errno(text("cannot refill the socket of ").add(what.str()), n ? n : -5);
        done += (uint32_t)n;
    }
    set_socket_option(peer, so_sndbuf, was / 2, what); // (getsockopt shows twice what was set)
}

void restore_file(record &r) {
    read_metadata(r);
    img::file_record fr;
    memcpy(&fr, g_meta, sizeof fr);
    if (fr.path_len + fr.data_len > r.h.length - sizeof fr || fr.path_len >= 4096 || fr.fd < 0)
        fail(text("the image is corrupt (bad file record)"));
    if (fr.fd >= g_next_temp_fd)
        fail(text("descriptor ").num(fr.fd).add(" is too high to restore"));
    g_fd_in_image[fr.fd / 8] |= (uint8_t)(1 << (fr.fd % 8));
    char path[4096];
    memcpy(path, g_meta + sizeof fr, fr.path_len);
    path[fr.path_len] = 0;
    const char *data = g_meta + sizeof fr + fr.path_len;
    text what = text("descriptor ").num(fr.fd);
    // Duplication: fds 0-2 are those of the command that asked for it (pipes and ptys are still
    // recreated, for their other descriptors).
    bool skip = g_inherit_stdio && fr.fd <= 2;
    if (!skip && fr.kind != img::file_inherit) make_room(fr.fd);
    switch (fr.kind) {
    case img::file_inherit:
        return;
    case img::file_tree_shared: { // made by `ghost restart`, inherited by every restorer
        if (skip) return;
        if (!g_tree || fr.pipe_id >= (uint64_t)g_tree_fd_count)
            fail(text("the image is corrupt (")
                     .add(what.str())
                     .add(" names no description of its tree)"));
        place_copy(g_tree_fds[fr.pipe_id], fr.fd, fr.cloexec);
        return;
    }
    case img::file_dup: {
        if (skip) return;
        if (fr.dup_of < 0 || fr.dup_of >= fr.fd || !fd_in_image(fr.dup_of))
            fail(text("the image is corrupt (bad duplicate of ").add(what.str()).add(")"));
        long r = sys::call(__NR_dup2, fr.dup_of, fr.fd);
        if (sys::failed(r)) fail_errno(text("cannot duplicate ").add(what.str()), r);
        sys::call(__NR_fcntl, fr.fd, F_SETFD, fr.cloexec ? FD_CLOEXEC : 0);
        return;
    }
    case img::file_object: { // the verifier saw the object made
        if (skip) return;
        long fd = reopen_object(fr.pipe_id, proc_reopen_flags(fr));
        if (fd < 0)
            fail_errno(
                text("cannot reopen memory object #").num(fr.pipe_id).add(" as ").add(what.str()),
                fd);
        if (fr.offset > 0) {
            long s = sys::call(__NR_lseek, fd, fr.offset, 0 /* SEEK_SET */);
            if (sys::failed(s)) fail_errno(text("cannot seek ").add(what.str()), s);
        }
        place_fd((int)fd, fr.fd, fr.cloexec);
        return;
    }
    case img::file_fifo: {
        if (skip) return;
        // Our own read-write description is both ends: the open below cannot wait for the other.
        long hold = sys::call(__NR_open, path, O_RDWR | O_NONBLOCK | O_CLOEXEC, 0);
        if (hold < 0) fail_errno(text("cannot reopen named pipe ").add(path), hold);
        struct stat sb;
        long s = sys::call(__NR_fstat, hold, &sb);
        if (sys::failed(s) || (sb.st_mode & S_IFMT) != S_IFIFO)
            fail(text("cannot reopen ")
                     .add(path)
                     .add(" as ")
                     .add(what.str())
                     .add(": no longer a named pipe"));
        long fd = sys::call(__NR_open, path, open_flags(fr) | O_CLOEXEC, 0);
        sys::call(__NR_close, hold);
        if (fd < 0)
            fail_errno(text("cannot reopen named pipe ").add(path).add(" as ").add(what.str()), fd);
        place_fd((int)fd, fr.fd, fr.cloexec);
        return;
    }
    case img::file_regular:
    case img::file_directory:
    case img::file_path:
    case img::file_device: {
        if (skip) return;
        long fd = sys::call(__NR_open, path, open_flags(fr) | O_CLOEXEC, 0);
        if (fd < 0) fail_errno(text("cannot reopen ").add(path).add(" as ").add(what.str()), fd);
        int64_t offset = fr.offset;
        if (fr.kind == img::file_regular && fr.data_len == sizeof(img::proc_maps_position)) {
            img::proc_maps_position at;
            memcpy(&at, data, sizeof at);
            offset = maps_offset((int)fd, at, what);
        }
        if ((fr.kind == img::file_regular || fr.kind == img::file_directory) && offset > 0) {
            long s = sys::call(__NR_lseek, fd, offset, 0 /* SEEK_SET */);
            if (sys::failed(s)) fail_errno(text("cannot seek ").add(path), s);
        }
        place_fd((int)fd, fr.fd, fr.cloexec);
        return;
    }
    case img::file_tty: {
        if (skip) return;
        long fd = sys::call(__NR_open, "/dev/tty", open_flags(fr) | O_NOCTTY | O_CLOEXEC, 0);
        if (fd == -6 /* ENXIO */)
            fail(text("cannot reopen /dev/tty as ")
                     .add(what.str())
                     .add(": restart it from a terminal (it had a controlling terminal)"));
        if (fd < 0) fail_errno(text("cannot reopen /dev/tty as ").add(what.str()), fd);
        place_fd((int)fd, fr.fd, fr.cloexec);
        return;
    }
    case img::file_pipe_read:
    case img::file_pipe_write:
    case img::file_pipe_reopen: {
        pipe_pair &pp = pipe_of(fr, data, what);
        if (skip) return;
        if (fr.kind == img::file_pipe_reopen) {
            text self = text("/proc/self/fd/").num(pp.ends[0]);
            long fd = sys::call(__NR_open, self.str(), proc_reopen_flags(fr) | O_CLOEXEC, 0);
            if (fd < 0) fail_errno(text("cannot reopen the pipe of ").add(what.str()), fd);
            place_fd((int)fd, fr.fd, fr.cloexec);
            return;
        }
        int end = fr.kind == img::file_pipe_read ? 0 : 1;
        if (pp.placed[end]) fail(text("the image is corrupt (pipe end twice)"));
        place_copy(pp.ends[end], fr.fd, fr.cloexec);
        pp.placed[end] = true;
        int flags = fr.flags & (O_NONBLOCK | O_APPEND);
        if (flags) sys::call(__NR_fcntl, fr.fd, F_SETFL, flags);
        return;
    }
    case img::file_pty_master:
    case img::file_pty_slave: {
        pty_pair &pp = pty_of(fr, data, what);
        if (skip) return;
        int flags = fr.flags & (O_NONBLOCK | O_APPEND);
        if (fr.kind == img::file_pty_master) {
            if (pp.placed) fail(text("the image is corrupt (pty master twice)"));
            place_copy(pp.master, fr.fd, fr.cloexec);
            pp.placed = true;
            if (flags) sys::call(__NR_fcntl, fr.fd, F_SETFL, flags);
            return;
        }
        long fd =
            sys::call(__NR_ioctl, pp.master, ghost::uapi::tiocgptpeer,
                      (fr.flags & (O_ACCMODE | O_NONBLOCK | O_APPEND)) | O_NOCTTY | O_CLOEXEC);
        if (fd < 0) fail_errno(text("cannot open the pty slave of ").add(what.str()), fd);
        place_fd((int)fd, fr.fd, fr.cloexec);
        return;
    }
    case img::file_socket_pair: {
        img::socket_state st;
        memcpy(&st, data, sizeof st);
        pipe_pair &sp = socket_pair_of(fr, st.type, what);
        int end = sp.ends[st.end], peer = sp.ends[1 - st.end];
        set_socket_option(end, so_sndbuf, (int)(st.sndbuf / 2), what);
        set_socket_option(end, so_rcvbuf, (int)(st.rcvbuf / 2), what);
        if (st.passcred) set_socket_option(end, so_passcred, 1, what);
        if (fr.data_len > sizeof st)
            refill_socket(peer, data + sizeof st, fr.data_len - (uint32_t)sizeof st, what);
        if (skip) return;
        if (sp.placed[st.end]) fail(text("the image is corrupt (socket end twice)"));
        place_copy(end, fr.fd, fr.cloexec);
        sp.placed[st.end] = true;
        int flags = fr.flags & (O_NONBLOCK | O_APPEND);
        if (flags) sys::call(__NR_fcntl, fr.fd, F_SETFL, flags);
        return;
    }
    case img::file_eventfd:
    case img::file_timerfd:
    case img::file_signalfd:
    case img::file_epoll:
    case img::file_inotify:
    case img::file_socket_endpoint: {
        if (skip) return;
        long fd = make_anon(fr, data);
        if (fd < 0)
            fail_errno(
                text("cannot make ").add(img::file_kind_name(fr.kind)).add(" ").add(what.str()),
                fd);
        place_fd((int)fd, fr.fd, fr.cloexec);
        return;
    }
    default:
        fail(text("the image is corrupt (unknown descriptor kind)"));
    }
}

// File locks: kept as their records come (after every file record), taken once every
// descriptor is in place and no descriptor of the restorer's own can be closed any more (closing
// any descriptor of a file drops the process's POSIX locks on it).
img::file_lock_record g_locks[img::max_file_locks];
uint32_t g_lock_count;

void read_file_lock(record &r) {
    read_metadata(r);
    if (g_lock_count == img::max_file_locks) fail(text("the image is corrupt (too many locks)"));
    memcpy(&g_locks[g_lock_count++], g_meta, sizeof g_locks[0]);
}

void take_file_locks() {
    constexpr int lock_sh = 1, lock_ex = 2, lock_nb = 4; // flock(2)
    for (uint32_t i = 0; i < g_lock_count; i++) {
        const img::file_lock_record &l = g_locks[i];
        text what = text("the file lock of descriptor ").num(l.fd);
        if (!fd_in_image(l.fd) || (g_inherit_stdio && l.fd <= 2))
            fail(what.add(": the descriptor is not restored"));
        long r;
        if (l.kind == img::lock_flock) {
            r = sys::call(__NR_flock, l.fd, (l.write ? lock_ex : lock_sh) | lock_nb);
        } else {
            struct flock fl = {};
            fl.l_type = l.write ? F_WRLCK : F_RDLCK;
            fl.l_whence = SEEK_SET;
            fl.l_start = l.start;
            fl.l_len = l.end < 0 ? 0 : l.end - l.start + 1; // 0: to the end of the file
            r = sys::call(__NR_fcntl, l.fd, l.kind == img::lock_ofd ? F_OFD_SETLK : F_SETLK, &fl);
        }
        if (r == -11 /* EAGAIN */ || r == -13 /* EACCES */)
            fail(what.add(" is held by another process now"));
        if (sys::failed(r)) fail_errno(text("cannot take ").add(what.str()), r);
    }
}

// Temporary ends are closed, locks re-applied once every descriptor is in place.
void finish_files() {
    for (int i = 0; i < g_pipe_count; i++)
        for (int fd : g_pipes[i].ends)
            sys::call(__NR_close, fd);
    for (int i = 0; i < g_socket_pair_count; i++)
        for (int fd : g_socket_pairs[i].ends)
            sys::call(__NR_close, fd);
    for (int i = 0; i < g_pty_count; i++) {
        if (g_ptys[i].locked) {
            int lock = 1;
            sys::call(__NR_ioctl, g_ptys[i].master, ghost::uapi::tiocsptlck, &lock);
        }
        sys::call(__NR_close, g_ptys[i].master);
    }
}

// --- step 6: threads -----------------------------------------------------------------------------

img::thread_record g_threads[max_restored_threads];
ghost::agent::saved_context g_contexts[max_restored_threads];
int g_thread_count = 0;
bool g_tid_kept[max_restored_threads]; // the thread runs under its id of the image
// Each thread waits on its own until all have taken the image's credentials.
alignas(16) char g_thread_stacks[max_restored_threads][thread_stack_size];
uint32_t g_threads_ready = 0; // futex: threads that took the image's credentials
uint32_t g_threads_go = 0;    // futex: set once the main thread has taken them too

void take_credentials() {
    text why;
    if (!ghost::restore::take_image_credentials(why)) fail(why);
}

// A restored thread's first steps, on its restorer stack (entry.S) with the image's TLS.
extern "C" [[noreturn]] void restorer_thread_entry(const ghost::agent::saved_context *ctx) {
    take_credentials();
    __atomic_add_fetch(&g_threads_ready, 1, __ATOMIC_ACQ_REL);
    wake_all(&g_threads_ready);
    while (!load32(&g_threads_go))
        futex_op(&g_threads_go, 0 /* FUTEX_WAIT */, 0);
    restorer_resume(ctx);
}

void read_thread(record &r) {
    read_metadata(r); // at most max_restored_threads of them
    memcpy(&g_threads[g_thread_count++], g_meta, sizeof(img::thread_record));
}

// Starts every thread but the main one; returns once all have taken the image's credentials.
int spawn_threads(bool keep_tids) {
    int main_index = -1, spawned = 0;
    for (int i = 0; i < g_thread_count; i++) {
        img::thread_record &t = g_threads[i];
        ghost::agent::saved_context &c = g_contexts[i];
        c.rbx = t.regs[0], c.rbp = t.regs[1], c.r12 = t.regs[2], c.r13 = t.regs[3];
        c.r14 = t.regs[4], c.r15 = t.regs[5], c.rsp = t.regs[6], c.rip = t.regs[7];
        c.mxcsr = t.mxcsr, c.fpucw = t.fpucw;
        if (t.flags & img::thread_main) {
            main_index = i;
            g_tid_kept[i] = sys::call(__NR_gettid) == t.tid;
            continue;
        }
        ghost::uapi::clone_args args = {};
        args.flags = thread_clone_flags | CLONE_SETTLS;
        args.stack = (uint64_t)g_thread_stacks[i];
        args.stack_size = thread_stack_size;
        args.tls = t.fs_base;
        uint64_t tid = (uint64_t)t.tid;
        if (keep_tids) {
            args.set_tid = (uint64_t)&tid;
            args.set_tid_size = 1;
        }
        long r = restorer_clone_thread(&args, sizeof args, &c);
        if (r == -17 /* EEXIST */ || r == -1 /* EPERM */ || r == -22 /* EINVAL */) {
            args.set_tid = 0;
            args.set_tid_size = 0;
            r = restorer_clone_thread(&args, sizeof args, &c);
        }
        if (sys::failed(r)) fail_errno(text("cannot start thread ").num(t.tid), r);
        g_tid_kept[i] = r == t.tid;
        spawned++;
    }
    for (uint32_t n; (n = load32(&g_threads_ready)) != (uint32_t)spawned;)
        futex_op(&g_threads_ready, 0 /* FUTEX_WAIT */, n);
    return main_index; // the verifier saw exactly one
}

[[noreturn]] void run_threads(int main_index) {
    __atomic_store_n(&g_threads_go, 1, __ATOMIC_RELEASE);
    wake_all(&g_threads_go);
    long r = sys::call(__NR_arch_prctl, 0x1002 /* ARCH_SET_FS */, g_threads[main_index].fs_base);
    if (sys::failed(r)) fail_errno(text("cannot set the main thread's TLS"), r);
    restorer_resume(&g_contexts[main_index]);
}

// --- the whole -----------------------------------------------------------------------------------

img::process_record g_process;
char g_cwd[4096];

void check_header(record &r) {
    read_metadata(r);
    struct {
        char f[6][65];
    } uts;
    sys::call(__NR_uname, &uts);
    img::message why;
    if (!img::check_compatible(g_verifier.header(), {uts.f[2], img::read_xcr0()}, why))
        fail(text(why.str()));
}

void read_credentials(record &r) {
    read_metadata(r);
    text why;
    if (!ghost::restore::plan_credentials(g_verifier.creds(), g_meta, g_image_fd, why) ||
        !ghost::restore::enter_image_fs_identity(why))
        fail(why);
}

void read_process(record &r) {
    read_metadata(r);
    memcpy(&g_process, g_meta, sizeof g_process);
    memcpy(g_cwd, g_meta + sizeof g_process, g_process.cwd_len);
    g_cwd[g_process.cwd_len] = 0;
    const img::special_mapping *specials[] = {&g_process.vvar, &g_process.vvar_vclock,
                                              &g_process.vdso};
    for (const img::special_mapping *m : specials)
        if (m->start) drop_placed(m->start, m->end);
    place_specials(g_process);
}

void check_trailer(record &r) {
    workers_drain(); // every pages record's data checked against its hash
    read_metadata(r);
    struct stat sb; // nothing may follow (a pipe cannot say without waiting for its writer)
    // (In a tree's image the next process's stream follows: `ghost restart` checked the end.)
    if (!g_tree && !sys::failed(sys::call(__NR_fstat, g_image_fd, &sb)) && S_ISREG(sb.st_mode) &&
        (uint64_t)sb.st_size != g_stream_pos)
        fail(text("the image is corrupt (data after the trailer)"));
}

void install_process_state() {
    ghost::uapi::prctl_mm_map map = {};
    const img::mm_fields &m = g_process.mm;
    map.start_code = m.start_code, map.end_code = m.end_code, map.start_data = m.start_data;
    map.end_data = m.end_data, map.start_brk = m.start_brk, map.brk = m.brk;
    map.start_stack = m.start_stack, map.arg_start = m.arg_start, map.arg_end = m.arg_end;
    map.env_start = m.env_start, map.env_end = m.env_end;
    map.auxv = (unsigned long long *)g_process.auxv;
    map.auxv_size = g_process.auxv_words * 8;
    map.exe_fd = (unsigned)-1;
    long r = sys::call(__NR_prctl, PR_SET_MM, PR_SET_MM_MAP, &map, sizeof map, 0);
    if (sys::failed(r))
        fail_errno(text("cannot set the process's memory layout (PR_SET_MM_MAP)"), r);
    if (g_cwd[0]) {
        r = sys::call(__NR_chdir, g_cwd);
        if (sys::failed(r)) fail_errno(text("cannot enter the working directory ").add(g_cwd), r);
    }
    sys::call(__NR_umask, g_process.umask);
    for (int sig = 1; sig <= img::max_signals; sig++) {
        // (32 and 33 too: glibc's handlers for thread cancellation and set*id calls, installed
        // with the raw call; without them the next pthread_cancel or setuid kills the process.)
        if (sig == 9 || sig == 19) continue; // KILL, STOP
        const img::signal_action &a = g_process.actions[sig - 1];
        ghost::uapi::kernel_sigaction ka = {a.handler, a.flags, a.restorer, a.mask};
        r = sys::call(__NR_rt_sigaction, sig, &ka, 0, 8);
        if (sys::failed(r)) fail_errno(text("cannot restore the action of signal ").num(sig), r);
    }
    auto *agent = (ghost::agent::state *)g_process.agent_state;
    if (!agent) fail(text("the image has no ghost agent"));
    if (agent->magic != ghost::agent::state_magic || agent->version != ghost::agent::state_version)
        fail(text("the image's ghost agent is of another version"));
    // (The verifier saw this address inside a writable region of the image.)
    publish_environment(agent);
    agent->restorer_start = zone_start();
    agent->restorer_end = page_align_up((uint64_t)_end);
    agent->lock_words = 0; // (until find_lock_words has them all)
    agent->restored = 0;
}

// --- the words the agent's lock fix looks at
// ----------------------------------------------------------------------------------------- The
// threads that cannot keep their ids (lock_owners.h) own locks under their old ones, which the
// agent rewrites before any thread runs on. Finding them means reading all the private memory;
// the agent would do it alone while the process waits (0.25 s for 1 GiB here, most of what a
// moved rank adds to a migration's downtime). The restorer does it instead, once every page is
// in and the image's threads (their old ids) are known, on its page workers, through
// /proc/self/mem as the agent would (see place(): the pages are not touched from here); the
// agent is left the words found, and looks at those only. Whatever is not searched, or found in
// too great a number, the agent scans itself.
constexpr uint32_t max_lock_words = 32768;
uint64_t g_lock_words[max_lock_words];
uint32_t g_lock_word_count = 0; // beyond max_lock_words: too many to list
uint32_t g_lock_search_failed = 0;
ghost::lock_scan::id_span g_lock_ids;
uint64_t g_lock_marks; // their marks (id_mark)
int g_self_mem = -1;
char g_lock_maps[64 * 1024];
ghost::lock_scan::present_pages g_present;

void find_lock_words_at(const char *copy, uint64_t addr, uint64_t len) {
    for (uint64_t block = 0; block < len; block += 64) {
        if (!g_lock_ids.any_in_block(copy + block)) continue;
        for (uint64_t w = block; w < block + 64; w += 8) {
            if (!g_lock_ids.holds(*(const uint64_t *)(copy + w))) continue;
            uint32_t k = __atomic_fetch_add(&g_lock_word_count, 1, __ATOMIC_RELAXED);
            if (k < max_lock_words) g_lock_words[k] = addr + w;
        }
    }
}

// [addr, addr + len) through a worker's buffer (max_ref_record bytes at least).
void search_pages(uint64_t addr, uint64_t len, char *buffer) {
    for (uint64_t at = addr; at < addr + len;) {
        uint64_t n = addr + len - at < img::max_ref_record ? addr + len - at : img::max_ref_record;
        if (sys::call(__NR_pread64, g_self_mem, buffer, n, at) == (long)n) {
            find_lock_words_at(buffer, at, n);
        } else { // a page the kernel cannot read (a guard page): the agent will scan
            __atomic_store_n(&g_lock_search_failed, 1, __ATOMIC_RELAXED);
            return;
        }
        at += n;
    }
}

// A page worker's job: [addr, addr + len), or with `marks` (placed pages: theirs), only the pages
// whose marks meet the old ids'.
void find_lock_words_in(uint64_t addr, uint64_t len, const uint64_t *marks, char *buffer) {
    if (!marks) return search_pages(addr, len, buffer);
    uint64_t pages = len / page_size;
    for (uint64_t i = 0; i < pages;) {
        if (!(marks[i] & g_lock_marks)) {
            i++;
            continue;
        }
        uint64_t j = i;
        while (j < pages && (marks[j] & g_lock_marks))
            j++;
        search_pages(addr + i * page_size, (j - i) * page_size, buffer);
        i = j;
    }
}

// Jobs for [start, end), pieces that keep both workers busy on large regions.
void submit_lock_search(uint64_t start, uint64_t end, const uint64_t *marks) {
    constexpr uint64_t piece = 4ULL << 20;
    for (uint64_t at = start; at < end; at += piece) {
        page_job job = {};
        job.addr = at;
        job.len = end - at < piece ? end - at : piece;
        job.find_locks = true;
        job.marks = marks ? (uint64_t *)marks + (at - start) / page_size : nullptr;
        workers_submit(job);
    }
}

// A run of present pages [start, end): where it lies in a placed region the image took, its
// marks tell which pages to search.
void search_run(uint64_t start, uint64_t end) {
    for (uint64_t at = start; at < end;) {
        uint32_t i = placed_from(at);
        while (i < g_placed_region_count && g_placed_regions[i].start < end &&
               (!g_placed_regions[i].taken || g_placed_regions[i].mark_base == no_marks))
            i++;
        if (i == g_placed_region_count || g_placed_regions[i].start >= end)
            return submit_lock_search(at, end, nullptr);
        const placed_region &p = g_placed_regions[i];
        if (p.start > at) submit_lock_search(at, p.start, nullptr);
        at = p.start > at ? p.start : at;
        uint64_t stop = p.end < end ? p.end : end;
        submit_lock_search(at, stop, &g_page_marks[p.mark_base + (at - p.start) / page_size]);
        at = stop;
    }
}

void search_map_line(const char *p, const char *end) {
    ghost::lock_scan::map_entry e;
    // (Our own mappings lie in our zone, where no region of the image may be.)
    if (!ghost::lock_scan::parse_map_line(p, end, e) || !e.writable ||
        overlaps_zone(e.start, e.end))
        return;
    g_present.each_run(e.start, e.end, search_run);
}

void sort_lock_words(uint32_t n) { // heapsort: no allocation, no recursion
    auto sift = [](uint32_t root, uint32_t size) {
        for (uint32_t child; (child = 2 * root + 1) < size; root = child) {
            if (child + 1 < size && g_lock_words[child + 1] > g_lock_words[child]) child++;
            if (g_lock_words[root] >= g_lock_words[child]) return;
            uint64_t t = g_lock_words[root];
            g_lock_words[root] = g_lock_words[child];
            g_lock_words[child] = t;
        }
    };
    for (uint32_t i = n / 2; i-- > 0;)
        sift(i, n);
    for (uint32_t end = n; end-- > 1;) {
        uint64_t t = g_lock_words[0];
        g_lock_words[0] = g_lock_words[end];
        g_lock_words[end] = t;
        sift(0, end);
    }
}

// Every page is in and every thread started (each knows its id); the process is restored and about
// to run (the search takes no part in whether the restore succeeds: it runs after its answer,
// while the job's other ranks, told so, go on with their part of the switch).
void find_lock_words() {
    struct old_ids { // those of the threads that could not keep them
        long operator[](uint32_t i) const { return g_tid_kept[i] ? 0 : g_threads[i].tid; }
    };
    if (!ghost::lock_scan::span_of(old_ids{}, (uint32_t)g_thread_count, g_lock_ids)) return;
    g_lock_marks = 0;
    for (uint64_t id = g_lock_ids.min;
         id <= (uint64_t)g_lock_ids.min + g_lock_ids.span && ~g_lock_marks; id += 64)
        g_lock_marks |= id_mark((uint32_t)id);
    g_lock_marks |= id_mark(g_lock_ids.min + g_lock_ids.span);
    g_self_mem = (int)sys::call(__NR_open, "/proc/self/mem", O_RDONLY | O_CLOEXEC);
    if (g_self_mem < 0) return;
    int pagemap = (int)sys::call(__NR_open, "/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    g_present.use(pagemap);
    if (!spawn_workers()) { // (the agent will scan)
        sys::call(__NR_close, g_self_mem);
        if (pagemap >= 0) sys::call(__NR_close, pagemap);
        return;
    }
    bool listed =
        ghost::lock_scan::for_each_map_line(g_lock_maps, sizeof g_lock_maps, search_map_line);
    workers_stop();
    if (pagemap >= 0) sys::call(__NR_close, pagemap);
    sys::call(__NR_close, g_self_mem);
    if (!listed || load32(&g_lock_search_failed) || g_lock_word_count > max_lock_words) return;
    sort_lock_words(g_lock_word_count);
    auto *agent = (ghost::agent::state *)g_process.agent_state;
    agent->lock_words = (uint64_t)g_lock_words;
    agent->lock_word_count = g_lock_word_count;
    agent->lock_ids_min = g_lock_ids.min;
    agent->lock_ids_span = g_lock_ids.span;
}

} // namespace

// --- step 0: a process tree
// -----------------------------------------------------------------------

// "pid:ppid:pgid:sid:state:wait_status:offset"
void read_tree_member(const char *arg) {
    if (g_member_count == (int)img::max_tree_members) fail(text("too many --tree-member"));
    long v[7];
    for (int i = 0; i < 7; i++) {
        if (*arg < '0' || *arg > '9') fail(text("bad --tree-member"));
        v[i] = parse_dec(arg);
        while (*arg >= '0' && *arg <= '9')
            arg++;
        if (*arg != (i == 6 ? 0 : ':')) fail(text("bad --tree-member"));
        arg++;
    }
    g_members[g_member_count++] = {v[0], v[1], v[2], v[3], v[4], v[5], (uint64_t)v[6]};
}

void read_tree_shared(const char *arg) {
    while (*arg) {
        if (g_tree_fd_count == (int)img::max_tree_shared || *arg < '0' || *arg > '9')
            fail(text("bad --tree-shared"));
        g_tree_fds[g_tree_fd_count++] = (int)parse_dec(arg);
        while (*arg >= '0' && *arg <= '9')
            arg++;
        if (*arg == ',') arg++;
    }
}

// A zombie of the tree: ends as it ended (its parent's wait() gets the same status; a core dump
// is not made again).
[[noreturn]] void become_zombie(const tree_member &m) {
    long st = m.wait_status;
    if ((st & 0x7f) == 0) sys::call(__NR_exit_group, (st >> 8) & 0xff);
    long sig = st & 0x7f;
    struct {
        uint64_t cur, max;
    } none = {0, 0};
    sys::call(__NR_setrlimit, 4 /* RLIMIT_CORE */, &none);
    ghost::uapi::kernel_sigaction dfl = {0 /* SIG_DFL */, 0, 0, 0};
    sys::call(__NR_rt_sigaction, sig, &dfl, 0, 8);
    uint64_t mask = 1ULL << (sig - 1);
    sys::call(__NR_rt_sigprocmask, 1 /* SIG_UNBLOCK */, &mask, 0, 8);
    sys::call(__NR_kill, sys::call(__NR_getpid), sig);
    sys::call(__NR_exit_group, 128 + sig);
    __builtin_unreachable();
}

// A child restorer reads its own stream: a description of its own (the parent's offset moves on
// its own) at the stream's start.
void reopen_image_at(uint64_t offset) {
    text self = text("/proc/self/fd/").num(g_image_fd);
    long fd = sys::call(__NR_open, self.str(), O_RDONLY | O_CLOEXEC, 0);
    if (fd < 0) fail_errno(text("cannot open the image again"), fd);
    long r = sys::call(__NR_lseek, fd, offset, 0 /* SEEK_SET */);
    if (!sys::failed(r)) r = sys::call(__NR_dup3, fd, g_image_fd, O_CLOEXEC);
    sys::call(__NR_close, fd);
    if (sys::failed(r)) fail_errno(text("cannot open the image again"), r);
    g_stream_pos = g_readahead_end = offset;
}

// Forks this process's children of the tree with their pids (clone3 set_tid), in their groups
// and sessions; a live child goes on as the restorer of its own stream (and forks its own
// children first), a zombie ends with its status at once. Group leaders come first among
// siblings (the image's order), and the parent puts each child in its group as well as the child
// itself, so that a later sibling finds its group there.
void spawn_tree() {
    long self = g_tree_root;
    for (int i = 0; i < g_member_count; i++) {
        const tree_member &m = g_members[i];
        if (m.ppid != self) continue;
        bool session = m.sid == m.pid;
        // Its group: its own, an earlier sibling's, or else its parent's (the image guarantees
        // one of these), which it inherits: the parent's as restored, not as recorded.
        bool join = !session && m.pgid == m.pid;
        for (int k = 0; k < i && !join && !session; k++)
            join = g_members[k].ppid == self && g_members[k].pid == m.pgid;
        ghost::uapi::clone_args args{};
        args.exit_signal = 17; // SIGCHLD
        uint64_t want = (uint64_t)m.pid;
        args.set_tid = (uint64_t)&want;
        args.set_tid_size = 1;
        long r = sys::call(__NR_clone3, &args, sizeof args);
        if (r == -17 /* EEXIST */)
            fail(text("cannot give pid ")
                     .num(m.pid)
                     .add(" back to a process of the tree: another "
                          "process has it now"));
        if (sys::failed(r))
            fail_errno(text("cannot give pid ")
                           .num(m.pid)
                           .add(" back to a process of the tree (a tree is restarted by root)"),
                       r);
        if (r == 0) {
            long j = session ? sys::call(__NR_setsid)
                     : join  ? sys::call(__NR_setpgid, 0, m.pgid)
                             : 0;
            if (sys::failed(j))
                fail_errno(
                    text("cannot put pid ").num(m.pid).add(" in its process group ").num(m.pgid),
                    j);
            if (m.state == img::tree_zombie) become_zombie(m);
            self = m.pid;
            reopen_image_at(m.offset);
            i = -1; // now its own children
            continue;
        }
        if (join) sys::call(__NR_setpgid, r, m.pgid); // (whichever of the two comes first)
        if (m.state == img::tree_zombie) {
            char info[128];
            sys::call(__NR_waitid, 1 /* P_PID */, r, info, 4 | 0x01000000 /* WEXITED|WNOWAIT */, 0);
        }
    }
    // The zombies' SIGCHLD is not the program's: its own pending signals come back with its
    // agent, after the restore.
    uint64_t sigchld = 1ULL << (17 - 1);
    struct {
        long sec, nsec;
    } zero = {0, 0};
    while (sys::call(__NR_rt_sigtimedwait, &sigchld, 0, &zero, 8) == 17) {
    }
}

extern "C" [[noreturn]] void restorer_main(uint64_t *sp) {
    long argc = (long)sp[0];
    char **argv = (char **)(sp + 1);
    if (argc < 3)
        fail(text("usage: ghost-restart IMAGE-FD STATUS-FD|-1 [--new-tids] [--inherit-stdio] "
                  "[--rank] [--gate] [--moving] [--sources=FD,...] [--say-placed]"));
    g_image_fd = (int)parse_dec(argv[1]);
    g_status_fd = argv[2][0] == '-' ? -1 : (int)parse_dec(argv[2]);
    capture_environment(argv + argc + 1);
    bool keep_tids = true, say_placed = false;
    for (long i = 3; i < argc; i++) {
        if (strcmp(argv[i], "--new-tids") == 0)
            keep_tids = false;
        else if (strcmp(argv[i], "--inherit-stdio") == 0)
            g_inherit_stdio = true;
        else if (starts_with(argv[i], "--owner-groups="))
            ghost::restore::set_owner_groups(argv[i] + 15);
        else if (strcmp(argv[i], "--rank") == 0)
            g_rank_mode = g_inherit_stdio = true; // a rank writes to its new launcher
        else if (strcmp(argv[i], "--gate") == 0)
            g_gate = true;
        else if (strcmp(argv[i], "--moving") == 0)
            g_moving = true;
        else if (starts_with(argv[i], "--sources="))
            read_sources_arg(argv[i] + 10);
        else if (starts_with(argv[i], "--rounds="))
            read_rounds_arg(argv[i] + 9);
        else if (strcmp(argv[i], "--say-placed") == 0)
            say_placed = true;
        else if (starts_with(argv[i], "--tree-root="))
            g_tree = true, g_tree_root = parse_dec(argv[i] + 12);
        else if (starts_with(argv[i], "--tree-member="))
            read_tree_member(argv[i] + 14);
        else if (starts_with(argv[i], "--tree-shared="))
            read_tree_shared(argv[i] + 14);
        else
            fail(text("unknown option ").add(argv[i]));
    }
    if (g_gate && g_status_fd < 0) {
        g_gate = false;
        fail(text("--gate needs a status socket"));
    }
    if (g_tree && !g_gate) fail(text("--tree-root needs --gate"));
    uint64_t all = ~0ULL;
    sys::call(__NR_rt_sigprocmask, 2 /* SIG_SETMASK */, &all, 0, 8);

    struct {
        uint64_t cur, max;
    } lim;
    sys::call(__NR_getrlimit, 7 /* RLIMIT_NOFILE */, &lim);
    g_next_temp_fd = (int)(lim.cur > 65536 ? 65536 : lim.cur);
    if (g_rank_mode) note_inherited_fds();
    g_image_fd = temp_fd(g_image_fd);
    struct stat image_stat;
    if (!sys::failed(sys::call(__NR_fstat, g_image_fd, &image_stat)))
        g_pipe = S_ISFIFO(image_stat.st_mode) || S_ISSOCK(image_stat.st_mode);
    if (g_status_fd >= 0) g_status_fd = temp_fd(g_status_fd);
    for (int i = 0; i < g_source_count; i++)
        g_source_fds[i] = temp_fd(g_source_fds[i]);
    for (int i = 0; i < g_round_count; i++)
        g_round_fds[i] = temp_fd(g_round_fds[i]);
    for (int i = 0; i < g_tree_fd_count; i++)
        g_tree_fds[i] = temp_fd(g_tree_fds[i]);
    if (g_tree) spawn_tree();

    scan_own_maps();
    if (g_own_stack.start)
        sys::call(__NR_munmap, g_own_stack.start, g_own_stack.end - g_own_stack.start);

    if (!g_tree)
        for (int i = 0; i < g_source_count; i++)
            if (g_placed_source < 0) place_ahead(i);
    // (Started on a pre-copy in a live migration: its sender hears of it once this is said, and
    // of each further round.)
    if (say_placed && g_source_count && g_status_fd >= 0) {
        static const char placed[] = "PLACED\n";
        do
            (void)sys::call(__NR_write, g_status_fd, placed, sizeof placed - 1);
        while (g_placed_source >= 0 && take_precopy_round());
    }
    workers_start();
    record r;
    for (;;) {
        next_record(r); // the verifier lets records come only in their order
        switch (r.h.type) {
        case img::rec_header:
            check_header(r);
            break;
        case img::rec_credentials:
            read_credentials(r);
            break;
        case img::rec_process:
            read_process(r);
            break;
        case img::rec_object:
            make_object(r);
            break;
        case img::rec_object_data:
            fill_object(r);
            break;
        case img::rec_region:
            map_region(r);
            break;
        case img::rec_pages:
            fill_pages(r);
            break;
        case img::rec_tracking:
            read_tracking(r);
            break;
        case img::rec_page_ref:
            fill_referenced(r);
            break;
        case img::rec_file:
            finish_region();
            restore_file(r);
            break;
        case img::rec_file_lock:
            read_file_lock(r);
            break;
        case img::rec_tree_member: // (--tree-member gave them: checked here as part of the stream)
        case img::rec_tree_shared:
            read_metadata(r);
            break;
        case img::rec_tree_data:
            skip_tree_data(r);
            break;
        case img::rec_thread:
            read_thread(r);
            break;
        case img::rec_trailer:
            finish_region();
            if (g_source_count && !g_sources_listed && g_placed_source < 0)
                fail(text("source images were given for an image that takes none"));
            drop_placed(0, ~0ULL); // what no region of the image took
            check_trailer(r);
            goto complete;
        default:
            fail(text("the image is corrupt (unknown record type)"));
        }
    }
complete:
    workers_stop();
    if (g_gate) wait_for_gate();
    finish_files();
    arm_epolls();
    finish_objects();
    close_foreign_fds();
    take_file_locks();
    install_process_state();
    int main_index = spawn_threads(keep_tids); // they take the image's credentials and wait
    take_credentials();                        // the main thread's last: spawning needed ours
    ghost::restore::restore_dumpable(
        ((ghost::agent::state *)g_process.agent_state)->extras.dumpable != 0);
    sys::call(__NR_close, g_image_fd);
    for (int i = 0; i < g_source_count; i++)
        sys::call(__NR_close, g_source_fds[i]);
    g_moving = false; // (the process is the image's now: whatever fails is the job's)
    if (g_status_fd >= 0) {
        text ok;
        ok.add("OK ").num(sys::call(__NR_getpid)).add("\n");
        if (sys::call(__NR_write, g_status_fd, ok.str(), ok.size()) == -32 /* EPIPE */) {
            // Whoever asked for the restore is gone (killed): the process goes on without it.
            // The write queued a SIGPIPE (blocked here) that would end the program as soon as a
            // thread unblocks it: take it off the queue. The program's own pending signals are
            // queued only later, by its agent.
            uint64_t sigpipe = 1ULL << (13 /* SIGPIPE */ - 1);
            struct {
                long sec, nsec;
            } zero = {0, 0};
            sys::call(__NR_rt_sigtimedwait, &sigpipe, 0, &zero, 8);
        } else if (g_tree) {
            // A tree runs once every process of it is restored ('R'): one that failed late makes
            // `ghost restart` end them all before any runs. (Without an answer, `ghost restart`
            // is gone: this process goes on, as a single one does.) A 'G' first in the socket is
            // a slower restorer's, still to be read at its gate: never taken here.
            for (;;) {
                char word = 0;
                long n = sys::call(__NR_recvfrom, g_status_fd, &word, 1, 2 /* MSG_PEEK */, 0, 0);
                if (n == -4 /* EINTR */) continue;
                if (n != 1) break;
                if (word == 'G') {
                    struct {
                        long sec, nsec;
                    } ms = {0, 1000000};
                    sys::call(__NR_nanosleep, &ms, 0);
                    continue;
                }
                do
                    n = sys::call(__NR_read, g_status_fd, &word, 1);
                while (n == -4);
                if (n == 1 && word != 'R') sys::call(__NR_exit_group, 0);
                break;
            }
        }
        sys::call(__NR_close, g_status_fd);
    }
    find_lock_words();
    run_threads(main_index);
}
