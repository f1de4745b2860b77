// SPDX-License-Identifier: Apache-2.0
// ghost-restart: turns the process it runs in into the process of an image. Freestanding: no libc,
// no allocation, raw system calls, linked far from where applications live. Its only inputs are the
// image stream (fd argv[1]) and a status pipe (fd argv[2]) on which it writes "OK <pid>" just
// before the restored threads run (if nobody reads it any more, the process goes on all the same),
// or "ERR <one-line reason>" and exits 1.
//
// Order matters (each step needs the previous one):
//  1. leave the kernel's stack (entry.S), unmap it: the image's stack may need that place;
//  2. check the header; move vvar/vdso onto the image's addresses before anything else is mapped;
//  3. map every region and read its pages straight into place, verifying every record's hash;
//  4. check the trailer: until here nothing outside this process was changed (files are reopened
//     without O_CREAT/O_TRUNC);
//  5. descriptors, mm fields, cwd, umask, signal actions, the agent's hand-off fields;
//  6. start the threads at their park points (same tids when the kernel allows it), main last.
#include <stddef.h>
#include <stdint.h>

#include <asm/unistd.h>
#include <fcntl.h>
#include <linux/mman.h>
#include <linux/sched.h>
#include <sys/stat.h>

#include "ghost-core/agent/agent_state.h"
#include "ghost-core/image_format.h"
#include "ghost-core/restore/freestanding.h"
#include "ghost-core/record_hash.h"
#include "runtime/raw_syscall.h"
#include "runtime/uapi.h"

extern "C" {
[[noreturn]] void restorer_resume(const ghost::agent::saved_context *ctx);
long restorer_clone_thread(ghost::uapi::clone_args *args, unsigned long size,
                           const ghost::agent::saved_context *ctx);
long restorer_spawn(ghost::uapi::clone_args *args, unsigned long size); // runs restorer_page_worker
void restorer_page_worker();
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
constexpr uint64_t thread_stack_size = 16 * 1024;
// A thread of this process, as pthread_create makes them (restored threads and page workers alike).
constexpr uint64_t thread_clone_flags =
    CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD | CLONE_SYSVSEM;
// The restorer's address zone: its own image, then room to park vvar/vdso while moving them.
constexpr uint64_t zone_size = 64ULL << 20;

int g_image_fd = -1;
int g_status_fd = -1;
bool g_inherit_stdio = false; // duplication: fds 0-2 stay those of the command that asked for it

[[noreturn]] void fail(const text &msg) {
    text line;
    line.add("ERR ").add(msg.str()).add("\n");
    if (g_status_fd < 0 || sys::call(__NR_write, g_status_fd, line.str(), line.size()) < 0)
        sys::call(__NR_write, 2, line.str() + 4, line.size() - 4);
    sys::call(__NR_exit_group, 1);
    __builtin_unreachable();
}

[[noreturn]] void fail_errno(text msg, long err) {
    msg.add(": ").add(errno_name(-err));
    fail(msg);
}

ghost::image::record_hasher g_record_hash; // reset() per record
uint64_t g_records = 0, g_payload_bytes = 0;
uint64_t g_hash_sum = 0; // of the records verified so far; page workers add theirs atomically

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

void read_exact(void *dst, uint64_t len) {
    g_stream_pos += len;
    char *p = (char *)dst;
    while (len) {
        long n = sys::call(__NR_read, g_image_fd, p, len > (1 << 30) ? (1 << 30) : len);
        if (n == -4) continue; // EINTR
        if (n < 0) fail_errno(text("cannot read the image"), n);
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
    if (r.h.magic != img::record_magic) fail(text("the image is corrupt (bad record magic)"));
    if (r.h.version != img::record_version)
        fail(text("the image was written by another ghost version (record version)"));
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
    uint64_t hash = g_record_hash.digest();
    if (hash != r.h.hash) fail(text("the image is corrupt (checksum mismatch in a record)"));
    __atomic_add_fetch(&g_hash_sum, hash, __ATOMIC_RELAXED);
    g_records++;
    g_payload_bytes += r.h.length;
}

alignas(8) char g_meta[img::max_metadata_record];

// Reads a whole metadata record into g_meta; returns its length.
uint64_t read_metadata(record &r, uint64_t min_len) {
    if (r.h.length > sizeof g_meta || r.h.length < min_len)
        fail(text("the image is corrupt (bad record length)"));
    uint64_t len = r.h.length;
    read_payload(r, g_meta, len);
    end_record(r);
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

// --- step 3: regions -----------------------------------------------------------------------------

struct open_region {
    uint64_t start = 0, end = 0;
    uint32_t prot = 0;
    bool active = false;
    bool reprotect = false; // mapped writable to be filled, final protection still to set
} g_region;

void workers_drain();

void finish_region() {
    if (!g_region.active) return;
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

void map_region(record &r) {
    finish_region();
    read_metadata(r, sizeof(img::region_record));
    img::region_record rr;
    memcpy(&rr, g_meta, sizeof rr);
    if (rr.path_len > r.h.length - sizeof rr || rr.path_len >= 4096 || rr.start >= rr.end ||
        (rr.start | rr.end) % page_size)
        fail(text("the image is corrupt (bad region record)"));
    char path[4096];
    memcpy(path, g_meta + sizeof rr, rr.path_len);
    path[rr.path_len] = 0;
    if (overlaps_zone(rr.start, rr.end))
        fail(region_name(rr).add(" overlaps the restorer at ").hex(zone_start()));
    uint64_t len = rr.end - rr.start;
    uint32_t prot = rr.prot | PROT_READ | PROT_WRITE; // pages are read into place
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
        int fd = open_region_file(rr, path, (rr.prot & PROT_WRITE) ? O_RDWR : O_RDONLY);
        prot = rr.prot;
        addr = sys::call(__NR_mmap, rr.start, len, prot, MAP_SHARED | MAP_FIXED_NOREPLACE, fd,
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
    g_region = {rr.start, rr.end, rr.prot, true, prot != rr.prot};
}

// --- pages, verified in parallel
// ------------------------------------------------------------------ With a seekable image (a file,
// a memfd), the main thread only reads record headers and hands each pages record to two worker
// threads, which fault the pages in, pread the data straight into place and hash it: copying, page
// clearing and hashing then use both cores. A pipe is read in order by the main thread alone.

constexpr int worker_count = 2;
constexpr uint32_t job_slots = 64;

struct page_job {
    uint64_t addr, len, offset, expected;
    uint32_t ready;    // futex: index + 1 of the job in this slot
    uint32_t finished; // futex: index + 1 of the last job done in this slot
};
page_job g_jobs[job_slots];
uint32_t g_claimed = 0, g_submitted = 0, g_done = 0, g_quit = 0;
int32_t g_worker_tids[worker_count]; // cleared by the kernel when a worker is gone
alignas(16) char g_worker_stacks[worker_count][64 * 1024];
bool g_parallel = false;

long futex_op(uint32_t *addr, int op, uint32_t val) {
    return sys::call(__NR_futex, addr, op, val, 0, 0, 0);
}
uint32_t load32(uint32_t *p) {
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}
void wake_all(uint32_t *p) {
    futex_op(p, 1 /* FUTEX_WAKE */, 0x7fffffff);
}

void load_and_verify(const page_job &j) {
    if (j.len >= (64 << 10)) sys::call(__NR_madvise, j.addr, j.len, 23 /* MADV_POPULATE_WRITE */);
    for (uint64_t done = 0; done < j.len;) {
        long n = sys::call(__NR_pread64, g_image_fd, j.addr + done, j.len - done, j.offset + done);
        if (n == -4) continue;
        if (n < 0) fail_errno(text("cannot read the image"), n);
        if (n == 0) fail(text("the image is truncated"));
        done += (uint64_t)n;
    }
    ghost::image::record_hasher h(img::rec_pages);
    h.update(&j.addr, sizeof j.addr);
    h.update((const void *)j.addr, j.len);
    uint64_t hash = h.digest();
    if (hash != j.expected) fail(text("the image is corrupt (checksum mismatch in a record)"));
    __atomic_add_fetch(&g_hash_sum, hash, __ATOMIC_RELAXED);
}

extern "C" void restorer_page_worker() {
    for (;;) {
        uint32_t k = __atomic_fetch_add(&g_claimed, 1, __ATOMIC_ACQ_REL);
        page_job &j = g_jobs[k % job_slots];
        for (uint32_t r; (r = load32(&j.ready)) != k + 1;) {
            if (load32(&g_quit)) return;
            futex_op(&j.ready, 0 /* FUTEX_WAIT */, r);
        }
        load_and_verify(j);
        __atomic_store_n(&j.finished, k + 1, __ATOMIC_RELEASE);
        wake_all(&j.finished);
        __atomic_add_fetch(&g_done, 1, __ATOMIC_ACQ_REL);
        wake_all(&g_done);
    }
}

void workers_start() {
    if (sys::failed(sys::call(__NR_lseek, g_image_fd, 0, 1 /* SEEK_CUR */))) return; // a pipe
    for (int i = 0; i < worker_count; i++) {
        ghost::uapi::clone_args args = {};
        args.flags = thread_clone_flags | CLONE_CHILD_CLEARTID;
        args.child_tid = (uint64_t)&g_worker_tids[i];
        args.stack = (uint64_t)g_worker_stacks[i];
        args.stack_size = sizeof g_worker_stacks[i];
        long tid = restorer_spawn(&args, sizeof args);
        if (sys::failed(tid)) fail_errno(text("cannot start a page worker"), tid);
        g_worker_tids[i] = (int32_t)tid;
    }
    g_parallel = true;
}

void workers_submit(uint64_t addr, uint64_t len, uint64_t offset, uint64_t expected) {
    uint32_t k = g_submitted;
    page_job &j = g_jobs[k % job_slots];
    if (k >= job_slots)
        for (uint32_t f; (f = load32(&j.finished)) != k - job_slots + 1;)
            futex_op(&j.finished, 0, f);
    j.addr = addr, j.len = len, j.offset = offset, j.expected = expected;
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
    for (page_job &j : g_jobs)
        wake_all(&j.ready);
    for (int32_t &tid : g_worker_tids)
        for (int32_t t; (t = __atomic_load_n(&tid, __ATOMIC_ACQUIRE)) != 0;)
            futex_op((uint32_t *)&tid, 0, (uint32_t)t);
    g_parallel = false;
}

void fill_pages(record &r) {
    uint64_t addr;
    if (r.h.length < sizeof addr + page_size) fail(text("the image is corrupt (bad pages record)"));
    read_payload(r, &addr, sizeof addr);
    uint64_t len = r.remaining;
    if (!g_region.active || addr < g_region.start || addr + len > g_region.end ||
        addr % page_size || len % page_size)
        fail(text("the image is corrupt (pages outside their region)"));
    read_ahead();
    if (g_parallel) {
        uint64_t offset = g_stream_pos;
        long pos = sys::call(__NR_lseek, g_image_fd, len, 1 /* SEEK_CUR */);
        if (sys::failed(pos)) fail_errno(text("cannot read the image"), pos);
        g_stream_pos += len;
        g_records++;
        g_payload_bytes += r.h.length;
        workers_submit(addr, len, offset, r.h.hash);
        return;
    }
    // Faulting the pages in bulk first is much cheaper than one fault per page inside read().
    if (len >= (64 << 10)) sys::call(__NR_madvise, addr, len, 23 /* MADV_POPULATE_WRITE */);
    // In slices that stay in the CPU cache between the copy from the kernel and the hash.
    constexpr uint64_t slice = 256 << 10;
    for (uint64_t done = 0; done < len; done += slice)
        read_payload(r, (void *)(addr + done), len - done < slice ? len - done : slice);
    end_record(r);
}

// --- step 5: descriptors -------------------------------------------------------------------------

struct pipe_pair {
    uint64_t id;
    int ends[2];  // temporary numbers of the read and write ends, -1 once placed
    int write_fd; // where the write end is now (temporary or final), to refill buffered data
};
pipe_pair g_pipes[64];
int g_pipe_count = 0;
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
            if (count < 256) doomed[count++] = fd;
        }
    }
    sys::call(__NR_close, dir);
    for (int i = 0; i < count; i++)
        sys::call(__NR_close, doomed[i]);
}

void restore_file(record &r) {
    read_metadata(r, sizeof(img::file_record));
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
    if (g_inherit_stdio && fr.fd <= 2) return;
    switch (fr.kind) {
    case img::file_inherit:
        return;
    case img::file_dup: {
        if (fr.dup_of < 0 || fr.dup_of >= fr.fd || !fd_in_image(fr.dup_of))
            fail(text("the image is corrupt (bad duplicate of ").add(what.str()).add(")"));
        long r = sys::call(__NR_dup2, fr.dup_of, fr.fd);
        if (sys::failed(r)) fail_errno(text("cannot duplicate ").add(what.str()), r);
        sys::call(__NR_fcntl, fr.fd, F_SETFD, fr.cloexec ? FD_CLOEXEC : 0);
        return;
    }
    case img::file_regular:
    case img::file_directory:
    case img::file_device: {
        int flags = fr.flags & ~(O_CREAT | O_TRUNC | O_EXCL);
        long fd = sys::call(__NR_open, path, flags | O_CLOEXEC, 0);
        if (fd < 0) fail_errno(text("cannot reopen ").add(path).add(" as ").add(what.str()), fd);
        if (fr.kind != img::file_device && fr.offset > 0) {
            long s = sys::call(__NR_lseek, fd, fr.offset, 0 /* SEEK_SET */);
            if (sys::failed(s)) fail_errno(text("cannot seek ").add(path), s);
        }
        place_fd((int)fd, fr.fd, fr.cloexec);
        return;
    }
    case img::file_pipe_read:
    case img::file_pipe_write: {
        pipe_pair *pp = nullptr;
        for (int i = 0; i < g_pipe_count; i++)
            if (g_pipes[i].id == fr.pipe_id) pp = &g_pipes[i];
        if (!pp) {
            if (g_pipe_count == 64) fail(text("too many pipes in the image"));
            int ends[2];
            long p = sys::call(__NR_pipe2, ends, O_CLOEXEC);
            if (sys::failed(p)) fail_errno(text("cannot create a pipe for ").add(what.str()), p);
            pp = &g_pipes[g_pipe_count++];
            pp->id = fr.pipe_id;
            pp->ends[0] = temp_fd(ends[0]);
            pp->ends[1] = temp_fd(ends[1]);
            pp->write_fd = pp->ends[1];
        }
        int end = fr.kind == img::file_pipe_read ? 0 : 1;
        if (pp->ends[end] < 0) fail(text("the image is corrupt (pipe end twice)"));
        if (end == 0 && fr.data_len) {
            long w = sys::call(__NR_write, pp->write_fd, data, fr.data_len);
            if (w != (long)fr.data_len) fail(text("cannot refill the pipe of ").add(what.str()));
        }
        place_fd(pp->ends[end], fr.fd, fr.cloexec);
        pp->ends[end] = -1;
        if (end == 1) pp->write_fd = fr.fd;
        int flags = fr.flags & (O_NONBLOCK | O_APPEND);
        if (flags) sys::call(__NR_fcntl, fr.fd, F_SETFL, flags);
        return;
    }
    default:
        fail(text("the image is corrupt (unknown descriptor kind)"));
    }
}

// --- step 6: threads -----------------------------------------------------------------------------

img::thread_record g_threads[max_restored_threads];
ghost::agent::saved_context g_contexts[max_restored_threads];
int g_thread_count = 0;
alignas(16) char g_thread_stacks[8][thread_stack_size];

void read_thread(record &r) {
    read_metadata(r, sizeof(img::thread_record));
    if (g_thread_count == max_restored_threads) fail(text("too many threads in the image"));
    memcpy(&g_threads[g_thread_count++], g_meta, sizeof(img::thread_record));
}

bool g_started[max_restored_threads];

[[noreturn]] void start_threads(bool keep_tids) {
    int main_index = -1;
    for (int i = 0; i < g_thread_count; i++) {
        img::thread_record &t = g_threads[i];
        ghost::agent::saved_context &c = g_contexts[i];
        c.rbx = t.regs[0], c.rbp = t.regs[1], c.r12 = t.regs[2], c.r13 = t.regs[3];
        c.r14 = t.regs[4], c.r15 = t.regs[5], c.rsp = t.regs[6], c.rip = t.regs[7];
        c.mxcsr = t.mxcsr, c.fpucw = t.fpucw;
        if (t.flags & img::thread_main) main_index = i;
    }
    if (main_index < 0) fail(text("the image has no main thread"));
    // First every thread whose tid is free, then the others: a thread that has to take a new tid
    // must not take one that a thread after it could still have had back (a changed tid costs
    // the agent a search for the locks held under the old one).
    uint32_t started = 0;
    for (int pass = keep_tids ? 0 : 1; pass < 2; pass++) {
        for (int i = 0; i < g_thread_count; i++) {
            img::thread_record &t = g_threads[i];
            if ((t.flags & img::thread_main) || g_started[i]) continue;
            // A thread needs a stack only for the few instructions before it switches to its own.
            ghost::uapi::clone_args args = {};
            args.flags = thread_clone_flags | CLONE_SETTLS;
            args.stack = (uint64_t)g_thread_stacks[started % 8];
            args.stack_size = thread_stack_size;
            args.tls = t.fs_base;
            uint64_t tid = (uint64_t)t.tid;
            if (pass == 0) {
                args.set_tid = (uint64_t)&tid;
                args.set_tid_size = 1;
            }
            long r = restorer_clone_thread(&args, sizeof args, &g_contexts[i]);
            if (pass == 0 &&
                (r == -17 /* EEXIST */ || r == -1 /* EPERM */ || r == -22 /* EINVAL */))
                continue;
            if (sys::failed(r)) fail_errno(text("cannot start thread ").num(t.tid), r);
            g_started[i] = true;
            started++;
        }
    }
    long r = sys::call(__NR_arch_prctl, 0x1002 /* ARCH_SET_FS */, g_threads[main_index].fs_base);
    if (sys::failed(r)) fail_errno(text("cannot set the main thread's TLS"), r);
    restorer_resume(&g_contexts[main_index]);
}

// --- the whole -----------------------------------------------------------------------------------

img::process_record g_process;
char g_cwd[4096];

void check_header(record &r) {
    uint64_t len = read_metadata(r, sizeof(img::header_record));
    (void)len;
    img::header_record h;
    memcpy(&h, g_meta, sizeof h);
    if (memcmp(h.magic, img::file_magic, sizeof h.magic) != 0) fail(text("not a ghost image"));
    if (h.format_version != img::format_version)
        fail(text("the image has format version ")
                 .num(h.format_version)
                 .add(", expected ")
                 .num(img::format_version));
    if (h.arch != img::arch_x86_64 || h.page_size != page_size)
        fail(text("the image is for another architecture"));
    struct {
        char f[6][65];
    } uts;
    sys::call(__NR_uname, &uts);
    h.kernel_release[64] = 0;
    if (strcmp(uts.f[2], h.kernel_release) != 0)
        fail(text("the image was taken under kernel ")
                 .add(h.kernel_release)
                 .add(", this is ")
                 .add(uts.f[2]));
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    if ((((uint64_t)hi << 32) | lo) != h.xcr0)
        fail(text("the image was taken on a CPU with other vector registers (XCR0)"));
}

void read_process(record &r) {
    uint64_t len = read_metadata(r, sizeof(img::process_record));
    memcpy(&g_process, g_meta, sizeof g_process);
    if (g_process.cwd_len >= sizeof g_cwd || g_process.cwd_len > len - sizeof g_process ||
        g_process.auxv_words > img::max_auxv_words)
        fail(text("the image is corrupt (bad process record)"));
    memcpy(g_cwd, g_meta + sizeof g_process, g_process.cwd_len);
    g_cwd[g_process.cwd_len] = 0;
    place_specials(g_process);
}

void check_trailer(record &r) {
    workers_drain();
    uint64_t records = g_records, bytes = g_payload_bytes;
    uint64_t sum = __atomic_load_n(&g_hash_sum, __ATOMIC_ACQUIRE);
    read_metadata(r, sizeof(img::trailer_record));
    img::trailer_record t;
    memcpy(&t, g_meta, sizeof t);
    if (t.record_count != records || t.payload_bytes != bytes || t.hash_sum != sum)
        fail(text("the image is corrupt (records missing or added)"));
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
        if (sig == 9 || sig == 19 || sig == 32 || sig == 33) continue; // KILL, STOP, glibc-internal
        const img::signal_action &a = g_process.actions[sig - 1];
        ghost::uapi::kernel_sigaction ka = {a.handler, a.flags, a.restorer, a.mask};
        r = sys::call(__NR_rt_sigaction, sig, &ka, 0, 8);
        if (sys::failed(r)) fail_errno(text("cannot restore the action of signal ").num(sig), r);
    }
    auto *agent = (ghost::agent::state *)g_process.agent_state;
    if (!agent) fail(text("the image has no ghost agent"));
    if (agent->magic != ghost::agent::state_magic || agent->version != ghost::agent::state_version)
        fail(text("the image's ghost agent is of another version"));
    agent->restorer_start = zone_start();
    agent->restorer_end = page_align_up((uint64_t)_end);
    agent->restored = 0;
}

} // namespace

extern "C" [[noreturn]] void restorer_main(uint64_t *sp) {
    long argc = (long)sp[0];
    char **argv = (char **)(sp + 1);
    if (argc < 3)
        fail(text("usage: ghost-restart IMAGE-FD STATUS-FD [--new-tids] [--inherit-stdio]"));
    g_image_fd = (int)parse_dec(argv[1]);
    g_status_fd = (int)parse_dec(argv[2]);
    bool keep_tids = true;
    for (long i = 3; i < argc; i++) {
        if (strcmp(argv[i], "--new-tids") == 0)
            keep_tids = false;
        else if (strcmp(argv[i], "--inherit-stdio") == 0)
            g_inherit_stdio = true;
        else
            fail(text("unknown option ").add(argv[i]));
    }
    uint64_t all = ~0ULL;
    sys::call(__NR_rt_sigprocmask, 2 /* SIG_SETMASK */, &all, 0, 8);

    struct {
        uint64_t cur, max;
    } lim;
    sys::call(__NR_getrlimit, 7 /* RLIMIT_NOFILE */, &lim);
    g_next_temp_fd = (int)(lim.cur > 65536 ? 65536 : lim.cur);
    g_image_fd = temp_fd(g_image_fd);
    g_status_fd = temp_fd(g_status_fd);

    scan_own_maps();
    if (g_own_stack.start)
        sys::call(__NR_munmap, g_own_stack.start, g_own_stack.end - g_own_stack.start);

    workers_start();
    record r;
    next_record(r);
    if (r.h.type != img::rec_header) fail(text("not a ghost image"));
    check_header(r);
    bool have_process = false;
    for (;;) {
        next_record(r);
        if (!have_process && r.h.type != img::rec_process)
            fail(text("the image is corrupt (process record missing)"));
        switch (r.h.type) {
        case img::rec_process:
            read_process(r);
            have_process = true;
            break;
        case img::rec_region:
            map_region(r);
            break;
        case img::rec_pages:
            fill_pages(r);
            break;
        case img::rec_file:
            finish_region();
            restore_file(r);
            break;
        case img::rec_thread:
            read_thread(r);
            break;
        case img::rec_trailer:
            finish_region();
            check_trailer(r);
            goto complete;
        default:
            fail(text("the image is corrupt (unknown record type)"));
        }
    }
complete:
    workers_stop();
    for (int i = 0; i < g_pipe_count; i++)
        for (int fd : g_pipes[i].ends)
            if (fd >= 0) sys::call(__NR_close, fd);
    close_foreign_fds();
    install_process_state();
    sys::call(__NR_close, g_image_fd);
    text ok;
    ok.add("OK ").num(sys::call(__NR_getpid)).add("\n");
    if (sys::call(__NR_write, g_status_fd, ok.str(), ok.size()) == -32 /* EPIPE */) {
        // Whoever asked for the restore is gone (killed): the process goes on without it. The
        // write queued a SIGPIPE (blocked here) that would end the program as soon as a thread
        // unblocks it: take it off the queue. The program's own pending signals are queued only
        // later, by its agent.
        uint64_t sigpipe = 1ULL << (13 /* SIGPIPE */ - 1);
        struct {
            long sec, nsec;
        } zero = {0, 0};
        sys::call(__NR_rt_sigtimedwait, &sigpipe, 0, &zero, 8);
    }
    sys::call(__NR_close, g_status_fd);
    start_threads(keep_tids);
}
