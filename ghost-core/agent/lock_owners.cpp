// SPDX-License-Identifier: Apache-2.0
// See lock_owners.h. Two sources, the precise one first:
//  1. robust mutexes (PI or not): every one a thread holds, or is taking or releasing, is on that
//     thread's robust list (glibc enqueues it there for the kernel); the lists are walked from the
//     heads the agent recorded at park time;
//  2. every other lock: glibc keeps no list of them, so the process's private writable memory is
//     searched (lock_scan.h), present pages only (PAGEMAP_SCAN, or mincore on kernels without
//     it), read through /proc/self/mem (scan_run says why), one 8-byte aligned word at a time; or,
//     after a restore, only the words its restorer found in that memory (it searched it on its
//     page workers, while they were still there). A word equal to an old id is rewritten only where
//     it sits in a complete, consistent glibc lock of a kind that checks its owner: a recursive or
//     error-checking mutex (plain or priority-protect) with its owner there, a priority-inheritance
//     mutex with the id in its lock word, a write-locked rwlock with the id as its writer.
//     "Consistent" means every field of the 40- or 56-byte object holds a value glibc can leave
//     there while the lock is held (kind, lock state, counts, zero list links and padding), so that
//     an ordinary int that happens to equal an id is left alone. Normal and adaptive mutexes record
//     an owner too but never check it: they are not touched.
// The loader's _dl_load_lock, _dl_load_write_lock and _dl_load_tls_lock are recursive mutexes in
// ld.so's _rtld_global (writable private data): the scan finds them like any other.
//
// Shared file mappings are never written: in a duplicate they are the original's memory too, and
// a process-shared lock there is held by the original as well (the copy's owner id cannot be
// made right for both). Anonymous shared memory is restored as a private memfd, which is scanned.
// The agent's own image (its state block holds the old ids) is skipped.
//
// Each lock is rewritten at most once, with the full old-to-new table: a thread's new id may be
// another thread's old one (ids are handed out while the restorer creates threads).
#include "ghost-core/agent/lock_owners.h"

#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <pthread.h>
#include <stddef.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <ucontext.h>

#include <utility>

#include "ghost-core/agent/agent_state.h"
#include "ghost-core/lock_scan.h"
#include "runtime/raw_syscall.h"

namespace ghost::agent {

namespace {

namespace sys = ghost::sys;

constexpr uint64_t page_size = 4096;

// glibc's struct __pthread_mutex_s and struct __pthread_rwlock_arch_t on x86_64 (public ABI).
struct mutex_words {
    uint32_t lock;
    uint32_t count;
    int32_t owner;
    uint32_t nusers;
    uint32_t kind;
    int16_t spins, elision;
    uint64_t prev, next;
};
static_assert(sizeof(mutex_words) == 40);

struct rwlock_words {
    uint32_t readers, writers, wrphase_futex, writers_futex, pad3, pad4;
    int32_t cur_writer;
    uint32_t shared;
    int8_t rwelision;
    uint8_t pad1[7];
    uint64_t pad2;
    uint32_t flags;
};
static_assert(offsetof(rwlock_words, cur_writer) == 24 && offsetof(rwlock_words, flags) == 48);

// Mutex kind bits (glibc's pthreadP.h).
constexpr uint32_t kind_type_mask = 3; // normal, recursive, errorcheck, adaptive
constexpr uint32_t kind_recursive = 1, kind_errorcheck = 2;
constexpr uint32_t kind_robust = 16, kind_pi = 32, kind_pp = 64, kind_pshared = 128;
constexpr uint32_t kind_no_elision = 512;
// Elision (256) is left out: such a mutex records no owner.
constexpr uint32_t kind_known =
    kind_type_mask | kind_robust | kind_pi | kind_pp | kind_pshared | kind_no_elision;
constexpr uint32_t pp_ceiling_mask = 0xfff80000u;
// Futex word bits (linux/futex.h).
using lock_scan::futex_tid_mask;
constexpr uint32_t futex_owner_died = 0x40000000u;
// rwlock __readers bits and __writers_futex values (glibc's pthread_rwlock_common.c).
constexpr uint32_t rw_wrphase = 1, rw_wrlocked = 2, rw_futex_used = 2;
constexpr uint32_t max_users = 1u << 22; // more holders/waiters than any process has threads

struct range {
    uint64_t start, end;
    bool writable; // private (ours alone) and writable: may be rewritten; else only read
};

uint64_t g_agent_start, g_agent_end;
uint64_t g_skip_start, g_skip_end; // the restorer, in a restored process
uint64_t g_libc_text_start, g_libc_text_end;

constexpr uint32_t max_ranges = 8192;
range g_ranges[max_ranges]; // readable memory in address order, like neighbours merged
uint32_t g_range_count;
char g_maps[64 * 1024];

tid_change g_changes[max_threads]; // sorted by `from`
uint32_t g_change_count;
lock_scan::id_span g_ids; // the old ids of g_changes

constexpr uint32_t max_robust = 4096;
uint64_t g_robust_words[max_robust];
uint32_t g_robust_count;

lock_fix_result g_result;

int32_t new_tid(uint32_t old) {
    uint32_t lo = 0, hi = g_change_count;
    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2;
        if ((uint32_t)g_changes[mid].from < old)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < g_change_count && (uint32_t)g_changes[lo].from == old ? g_changes[lo].to : 0;
}

// Whether [addr, addr + len) can be read (and, with `write`, rewritten).
bool in_ranges(uint64_t addr, uint64_t len, bool write) {
    uint32_t lo = 0, hi = g_range_count;
    while (lo < hi) { // first range ending above addr
        uint32_t mid = (lo + hi) / 2;
        if (g_ranges[mid].end <= addr)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == g_range_count || g_ranges[lo].start > addr) return false;
    // A readable object may span two neighbouring ranges of different kinds.
    for (uint32_t i = lo; i < g_range_count; i++) {
        if (write && !g_ranges[i].writable) return false;
        if (addr + len <= g_ranges[i].end) return true;
        if (i + 1 == g_range_count || g_ranges[i + 1].start != g_ranges[i].end) return false;
    }
    return false;
}

void store32(uint64_t addr, uint32_t v) {
    __atomic_store_n((uint32_t *)addr, v, __ATOMIC_RELAXED);
}

// --- the memory that may be rewritten --------------------------------------------------------

void add_range(uint64_t start, uint64_t end, bool writable) {
    if (start >= end) return;
    range &last = g_ranges[g_range_count ? g_range_count - 1 : 0];
    if (g_range_count && last.end == start && last.writable == writable) {
        last.end = end;
        return;
    }
    if (g_range_count == max_ranges) {
        g_result.incomplete = true;
        return;
    }
    g_ranges[g_range_count++] = {start, end, writable};
}

// One line of /proc/self/maps.
void map_line(const char *p, const char *end) {
    lock_scan::map_entry e;
    if (!lock_scan::parse_map_line(p, end, e) || !e.searched) return;
    // Read, never rewritten: the agent's own image, which may share a line with a neighbour (its
    // .bss is anonymous memory), and the restorer's, gone as soon as the fix is done.
    std::pair<uint64_t, uint64_t> skips[2] = {{g_agent_start, g_agent_end},
                                              {g_skip_start, g_skip_end}};
    if (skips[1].first < skips[0].first) std::swap(skips[0], skips[1]);
    uint64_t start = e.start;
    for (const auto &[skip_start, skip_end] : skips) {
        uint64_t lo = start > skip_start ? start : skip_start;
        uint64_t hi = e.end < skip_end ? e.end : skip_end;
        if (lo >= hi) continue;
        add_range(start, lo, e.writable);
        add_range(lo, hi, false);
        start = hi;
    }
    add_range(start, e.end, e.writable);
}

void list_ranges() {
    g_range_count = 0;
    if (!lock_scan::for_each_map_line(g_maps, sizeof g_maps, map_line)) g_result.incomplete = true;
}

// --- 1. robust lists -------------------------------------------------------------------------

void add_robust_word(uint64_t addr) {
    if (addr % 4 || !in_ranges(addr, 4, true)) return;
    for (uint32_t i = 0; i < g_robust_count; i++)
        if (g_robust_words[i] == addr) return;
    if (g_robust_count == max_robust) {
        g_result.incomplete = true;
        return;
    }
    g_robust_words[g_robust_count++] = addr;
}

// struct robust_list_head (linux/futex.h): the list (entries point to the next entry, bit 0 marks
// a PI mutex, the last points back to the head), the offset from an entry to its futex word, and
// the entry being added or removed right now.
void walk_robust_list(uint64_t head) {
    if (head % 8 || !in_ranges(head, 24, false)) return;
    const uint64_t *h = (const uint64_t *)head;
    int64_t offset = (int64_t)h[1];
    if (offset < -4096 || offset > 4096) return;
    uint64_t entry = h[0] & ~1ULL;
    for (uint32_t n = 0; entry != head; n++) {
        if (n == 1u << 20 || entry % 8 || !in_ranges(entry, 8, false)) {
            g_result.incomplete = true;
            break;
        }
        add_robust_word(entry + (uint64_t)offset);
        entry = *(const uint64_t *)entry & ~1ULL;
    }
    if (h[2]) add_robust_word((h[2] & ~1ULL) + (uint64_t)offset);
}

// A copy of a lock, read to be looked at, on the scanning thread's stack: wiped when it goes, or
// the scan could read it later among the stack's dead bytes and take it for one more lock (a
// scan run on a thread of the program, as the unit tests do, found 512 of 511 locks).
template <class T> struct lock_copy {
    T v;
    explicit lock_copy(uint64_t a) { memcpy(&v, (const void *)a, sizeof v); }
    ~lock_copy() {
        volatile unsigned char *p = (volatile unsigned char *)&v;
        for (size_t i = 0; i < sizeof v; i++)
            p[i] = 0;
    }
    lock_copy(const lock_copy &) = delete;
    lock_copy &operator=(const lock_copy &) = delete;
};

void fix_robust_word(uint64_t addr) {
    uint32_t word = *(const uint32_t *)addr;
    int32_t to = new_tid(word & futex_tid_mask);
    if (!to) return;
    store32(addr, (word & ~futex_tid_mask) | (uint32_t)to);
    g_result.robust++;
    // A glibc mutex also names its owner in __owner (unless the owner died: INT_MAX, INT_MAX-1).
    if (in_ranges(addr, sizeof(mutex_words), true)) {
        lock_copy<mutex_words> c(addr);
        const mutex_words &m = c.v;
        if ((m.kind & kind_robust) && (uint32_t)m.owner == (word & futex_tid_mask))
            store32(addr + offsetof(mutex_words, owner), (uint32_t)to);
    }
}

// --- 2. the scan -----------------------------------------------------------------------------

bool plausible_mutex(const mutex_words &m) {
    return !(m.kind & ~kind_known) && !(m.kind & kind_robust) &&
           (m.kind & (kind_pi | kind_pp)) != (kind_pi | kind_pp) && m.spins == 0 &&
           m.elision == 0 && m.prev == 0 && m.next == 0 && m.nusers <= max_users;
}

// A recursive or error-checking mutex (plain or priority-protect) whose __owner is at a + 8.
bool fix_mutex_by_owner(uint64_t a) {
    lock_copy<mutex_words> c(a);
    const mutex_words &m = c.v;
    int32_t to = new_tid((uint32_t)m.owner);
    if (!to || !plausible_mutex(m) || (m.kind & kind_pi) || m.nusers == 0) return false;
    uint32_t type = m.kind & kind_type_mask;
    if (type != kind_recursive && type != kind_errorcheck) return false;
    // A recursive mutex counts its owner's locks; the slow paths (priority protect) set 1 for
    // any type and leave it when unlocking, the fast error-checking path never sets it.
    if (type == kind_recursive ? m.count == 0 : m.count > (m.kind & kind_pp ? 1u : 0u))
        return false;
    uint32_t state = m.kind & kind_pp ? m.lock & ~pp_ceiling_mask : m.lock;
    if (state != 1 && state != 2) return false; // locked, locked with waiters
    store32(a + offsetof(mutex_words, owner), (uint32_t)to);
    g_result.mutexes++;
    return true;
}

// A priority-inheritance mutex (not robust) whose lock word at a holds the owner's id; its
// __owner follows a few instructions after the lock is taken, so it may still be 0.
bool fix_pi_mutex_by_lock(uint64_t a) {
    lock_copy<mutex_words> c(a);
    const mutex_words &m = c.v;
    uint32_t old = m.lock & futex_tid_mask;
    int32_t to = new_tid(old);
    if (!to || !plausible_mutex(m) || !(m.kind & kind_pi) || (m.lock & futex_owner_died))
        return false;
    if (m.owner != 0 && (uint32_t)m.owner != old) return false;
    if ((m.kind & kind_type_mask) != kind_recursive && m.count > 1) return false;
    store32(a, (m.lock & ~futex_tid_mask) | (uint32_t)to);
    if (m.owner != 0) store32(a + offsetof(mutex_words, owner), (uint32_t)to);
    g_result.mutexes++;
    return true;
}

// A write-locked rwlock whose __cur_writer is at a + 24.
bool fix_rwlock(uint64_t a) {
    lock_copy<rwlock_words> c(a);
    const rwlock_words &r = c.v;
    int32_t to = new_tid((uint32_t)r.cur_writer);
    if (!to) return false;
    bool pads = r.pad3 == 0 && r.pad4 == 0 && r.rwelision == 0 && r.pad2 == 0;
    for (uint8_t b : r.pad1)
        pads = pads && b == 0;
    // Held by a writer: write phase and primary writer set, the writers' futex enabled.
    if (!pads || (r.readers & (rw_wrphase | rw_wrlocked)) != (rw_wrphase | rw_wrlocked) ||
        (r.writers_futex & ~rw_futex_used) != 1 || r.wrphase_futex > 3 || r.shared > 1 ||
        r.flags > 2)
        return false;
    store32(a + offsetof(rwlock_words, cur_writer), (uint32_t)to);
    g_result.rwlocks++;
    return true;
}

// Tries the word at p (equal to an old id, its flag bits aside) in each role; returns where the
// scan goes on: past the lock it rewrote, or the next word.
uint64_t try_word(uint64_t p, const range &r) {
    if (p >= r.start + 8 && p + 32 <= r.end && fix_mutex_by_owner(p - 8)) return p + 32;
    if (p + 40 <= r.end && fix_pi_mutex_by_lock(p)) return p + 40;
    if (p >= r.start + 24 && p + 32 <= r.end && fix_rwlock(p - 24)) return p + 32;
    return p + 8;
}

// The scan reads the memory through /proc/self/mem into a small buffer rather than touching it:
// in a fast duplicate's copy every page was just copied by fork, and the first access to each one
// from the copy costs a page-table fault wherever the hypervisor shadows page tables (4 s for
// 1 GiB on a paravirtualized guest, against 0.5 s read through the kernel, which walks the page
// tables in software and copies through its own mapping); on plain hardware both run at memory
// speed. Only the few candidate words are then looked at in place.
int g_mem_fd = -1;
alignas(64) unsigned char g_chunk[256 * 1024];

// Scans [start, end) (64-byte aligned) from its copy at `copy`; returns where the next block
// starts (past a lock rewritten across the end).
uint64_t scan_copy(uint64_t start, uint64_t end, const unsigned char *copy, uint64_t from,
                   const range &r) {
    const uint64_t delta = (uint64_t)copy - start;
    uint64_t next = from;
    for (uint64_t block = start; block < end; block += 64) {
        if (block + 64 <= next || !g_ids.any_in_block((const void *)(block + delta))) continue;
        for (uint64_t w = block; w < block + 64; w += 8)
            if (w >= next && g_ids.holds(*(const uint64_t *)(w + delta))) next = try_word(w, r);
    }
    return next;
}

// [start, end) page-aligned (PAGEMAP_SCAN and mincore give page runs).
void scan_run(uint64_t start, uint64_t end, const range &r) {
    uint64_t next = start;
    for (uint64_t at = start; at < end;) {
        uint64_t len = end - at < sizeof g_chunk ? end - at : sizeof g_chunk;
        if (sys::call(SYS_pread64, g_mem_fd, g_chunk, len, at) == (long)len) {
            next = scan_copy(at, at + len, g_chunk, next, r);
            at += len;
            continue;
        }
        // A page the kernel cannot read (a guard page on a kernel that does not report them, a
        // mapping shrunk meanwhile): the rest of the chunk a page at a time, that page left out.
        for (uint64_t end_of_chunk = at + len; at < end_of_chunk; at += page_size) {
            if (sys::call(SYS_pread64, g_mem_fd, g_chunk, page_size, at) == (long)page_size)
                next = scan_copy(at, at + page_size, g_chunk, next, r);
            else
                g_result.incomplete = true;
        }
    }
}

// The executable segment of the libc that holds pthread_mutex_lock.
int find_libc_text(struct dl_phdr_info *info, size_t, void *) {
    uint64_t fn = (uint64_t)(void *)&pthread_mutex_lock;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) &ph = info->dlpi_phdr[i];
        uint64_t s = info->dlpi_addr + ph.p_vaddr, e = s + ph.p_memsz;
        if (ph.p_type != PT_LOAD || !(ph.p_flags & PF_X) || fn < s || fn >= e) continue;
        g_libc_text_start = s;
        g_libc_text_end = e;
        return 1;
    }
    return 0;
}

int find_agent(struct dl_phdr_info *info, size_t, void *) {
    uint64_t self = (uint64_t)&g_agent_start, lo = ~0ULL, hi = 0;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) &ph = info->dlpi_phdr[i];
        if (ph.p_type != PT_LOAD) continue;
        uint64_t s = info->dlpi_addr + ph.p_vaddr, e = s + ph.p_memsz;
        if (s < lo) lo = s;
        if (e > hi) hi = e;
    }
    if (self < lo || self >= hi) return 0;
    g_agent_start = lo & ~(page_size - 1);
    g_agent_end = (hi + page_size - 1) & ~(page_size - 1);
    return 1;
}

// Reads memory of this process that may not be mapped (false when it is not).
bool read_self(uint64_t addr, void *to, uint64_t len) {
    struct iovec local = {to, len}, remote = {(void *)addr, len};
    return sys::call(SYS_process_vm_readv, sys::call(SYS_getpid), &local, 1, &remote, 1, 0) ==
           (long)len;
}

// Whether a mutex of this kind stores its owner's id and checks it (normal and adaptive mutexes
// store it but never look at it; with elision, nothing is stored).
bool records_owner(uint32_t kind) {
    uint32_t type = kind & kind_type_mask;
    return !(kind & ~kind_known) && ((kind & (kind_robust | kind_pi | kind_pp)) ||
                                     type == kind_recursive || type == kind_errorcheck);
}

} // namespace

void fix_interrupted_thread(void *ucontext, int32_t old_tid, int32_t new_tid) {
    if (old_tid <= 0 || new_tid <= 0 || old_tid == new_tid) return;
    greg_t *g = ((ucontext_t *)ucontext)->uc_mcontext.gregs;
    uint64_t rip = (uint64_t)g[REG_RIP], old = (uint32_t)old_tid;
    uint16_t insn = 0;
    bool at_syscall = read_self(rip, &insn, sizeof insn) && insn == 0x050f;
    if (at_syscall) {
        // Waiting: a futex call to be restarted (the kernel has put the instruction pointer back
        // on the `syscall` and the call number back in rax) on a mutex's lock word (its first
        // field), of a kind that checks its owner. The lock functions keep the id in a
        // callee-saved register or their frame across the wait.
        mutex_words m;
        if ((g[REG_RAX] != SYS_futex && g[REG_RAX] != SYS_restart_syscall) || g[REG_RDI] % 8 ||
            !read_self((uint64_t)g[REG_RDI], &m, sizeof m) || !records_owner(m.kind) ||
            m.spins != 0 || m.elision != 0)
            return;
        static const int callee_saved[] = {REG_RBX, REG_RBP, REG_R12, REG_R13, REG_R14, REG_R15};
        for (int r : callee_saved)
            if ((uint64_t)g[r] == old) g[r] = new_tid;
    } else {
        // Running inside libc (a lock function between reading the id and storing it, or
        // pthread_kill between reading a tid and signalling it): the id may be in any register.
        if (rip < g_libc_text_start || rip >= g_libc_text_end) return;
        static const int general[] = {REG_RAX, REG_RBX, REG_RCX, REG_RDX, REG_RSI,
                                      REG_RDI, REG_RBP, REG_R8,  REG_R9,  REG_R10,
                                      REG_R11, REG_R12, REG_R13, REG_R14, REG_R15};
        for (int r : general)
            if ((uint64_t)g[r] == old) g[r] = new_tid;
    }
    constexpr uint64_t window = 128;
    uint32_t frame[window / 4];
    uint64_t rsp = (uint64_t)g[REG_RSP] & ~3ULL;
    if (!read_self(rsp, frame, sizeof frame)) return;
    for (uint64_t i = 0; i < window / 4; i++)
        if (frame[i] == old) store32(rsp + i * 4, (uint32_t)new_tid);
}

void lock_owners_init() {
    dl_iterate_phdr(find_agent, nullptr);
    dl_iterate_phdr(find_libc_text, nullptr);
}

// The words a restorer found (in address order), each tried where it is.
void try_found(const found_words &found) {
    uint64_t next = 0;
    uint32_t r = 0;
    for (uint32_t i = 0; i < found.count; i++) {
        uint64_t w = found.words[i];
        while (r < g_range_count && g_ranges[r].end <= w)
            r++;
        if (r == g_range_count) break;
        const range &in = g_ranges[r];
        if (w < next || w < in.start || w % 8 || !in.writable) continue;
        if (g_ids.holds(*(const uint64_t *)w)) next = try_word(w, in);
    }
}

lock_fix_result fix_lock_owners(const tid_change *changes, uint32_t count,
                                const uint64_t *robust_heads, uint32_t head_count,
                                const found_words *found) {
    g_result = {};
    g_skip_start = found ? found->restorer_start : 0;
    g_skip_end = found ? found->restorer_end : 0;
    g_change_count = 0;
    for (uint32_t i = 0; i < count && g_change_count < max_threads; i++) {
        if (changes[i].from <= 0 || changes[i].to <= 0 || changes[i].from == changes[i].to)
            continue;
        uint32_t j = g_change_count++; // insertion sort: a few entries
        while (j > 0 && g_changes[j - 1].from > changes[i].from) {
            g_changes[j] = g_changes[j - 1];
            j--;
        }
        g_changes[j] = changes[i];
    }
    if (!g_change_count) return g_result;
    g_ids = {(uint32_t)g_changes[0].from,
             (uint32_t)g_changes[g_change_count - 1].from - (uint32_t)g_changes[0].from};

    list_ranges();
    g_robust_count = 0;
    for (uint32_t i = 0; i < head_count; i++)
        if (robust_heads[i]) walk_robust_list(robust_heads[i]);
    for (uint32_t i = 0; i < g_robust_count; i++)
        fix_robust_word(g_robust_words[i]);

    // The restorer searched for every old id, in all the memory scanned below.
    if (found && found->words && found->ids.covers(g_ids)) {
        try_found(*found);
        return g_result;
    }
    g_mem_fd = (int)sys::call(SYS_open, "/proc/self/mem", O_RDONLY | O_CLOEXEC);
    if (g_mem_fd < 0) {
        g_result.incomplete = true;
        return g_result;
    }
    int pagemap = (int)sys::call(SYS_open, "/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    static lock_scan::present_pages present; // (10 KiB: not on the stack)
    present.use(pagemap);
    for (uint32_t i = 0; i < g_range_count; i++) {
        const range &r = g_ranges[i];
        if (r.writable)
            present.each_run(r.start, r.end, [&r](uint64_t a, uint64_t b) { scan_run(a, b, r); });
    }
    if (pagemap >= 0) sys::call(SYS_close, pagemap);
    sys::call(SYS_close, g_mem_fd);
    g_mem_fd = -1;
    return g_result;
}

} // namespace ghost::agent
