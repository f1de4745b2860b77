// SPDX-License-Identifier: Apache-2.0
// Export reads everything from outside the parked process: /proc for the layout and descriptors
// (classified in export_files.cpp), process_vm_readv for memory, the agent's state block for what
// only the process could tell.
// Its mirror image is ghost-core/restore/restorer.cpp, which reads the records in the same order.
#include "ghost-core/export.h"

#include <emmintrin.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <sstream>
#include <atomic>
#include <cpuid.h>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "ghost-core/agent/agent_state.h"
#include "ghost-core/elf_build_id.h"
#include "ghost-core/export_files.h"
#include "ghost-core/export_objects.h"
#include "ghost-core/image_writer.h"
#include "ghost-core/proc_reader.h"
#include "runtime/uapi.h"

#ifndef GHOST_VERSION
#define GHOST_VERSION "dev"
#endif

namespace ghost::core {

namespace {

constexpr uint64_t page = 4096;
// Memory is copied in pieces that stay in the L2 cache while they are scanned for zero pages,
// hashed and copied on to the sink; each memory worker has one such piece. (Reading straight into a
// memory image's own mapping saves that copy but was measured no faster: process_vm_readv's copy
// into memory not in the cache costs as much as the copy into this buffer and the non-temporal
// copy on to the image together.)
constexpr size_t chunk_bytes = 256 << 10;

bool ends_with(const std::string &s, std::string_view suffix) {
    return s.size() >= suffix.size() &&
           s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string range_name(uint64_t start, uint64_t end) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "0x%lx-0x%lx", (unsigned long)start, (unsigned long)end);
    return buf;
}

// Reads memory of another process. process_vm_readv is one copy; /proc/pid/mem also reaches
// mappings without PROT_READ (guard areas that still hold data).
class memory_reader {
  public:
    explicit memory_reader(pid_t pid) : pid_(pid) {
        std::string path = "/proc/" + std::to_string(pid) + "/mem";
        mem_fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    }
    ~memory_reader() {
        if (mem_fd_ >= 0) ::close(mem_fd_);
    }
    result<void> read(uint64_t addr, void *dst, size_t len) const {
        iovec local{dst, len}, remote{(void *)addr, len};
        ssize_t n = ::process_vm_readv(pid_, &local, 1, &remote, 1, 0);
        if (n == (ssize_t)len) return {};
        size_t done = n > 0 ? (size_t)n : 0;
        while (done < len && mem_fd_ >= 0) {
            ssize_t r = ::pread(mem_fd_, (char *)dst + done, len - done, (off_t)(addr + done));
            if (r <= 0) break;
            done += (size_t)r;
        }
        if (done == len) return {};
        return sys_error("cannot read memory " + range_name(addr, addr + len) + " of pid " +
                         std::to_string(pid_));
    }

  private:
    pid_t pid_;
    int mem_fd_;
};

// A page with data almost always shows it in its first cache line: only zero-looking pages are
// read whole (in 512-byte steps, branch-free inside a step).
bool page_is_zero(const char *p) {
    const uint64_t *w = (const uint64_t *)p;
    for (size_t i = 0; i < page / 8; i += 64) {
        uint64_t acc = 0;
        for (size_t k = 0; k < 64; k++)
            acc |= w[i + k];
        if (acc) return false;
    }
    return true;
}

enum class want { none, present_or_swapped, anon_only, all };

struct classified {
    image::region_kind kind;
    want pages;
    bool skip = false;
};

// `object`: the memory object (export_objects.h) the mapping's deleted file is, 0 if none.
result<classified> classify(const vma &v, pid_t pid, uint64_t object) {
    const std::string &p = v.path;
    // Kernel objects that a mapping stands for and no restore can rebuild from its pages: mapped
    // as plain memory they would silently stop being what the program uses.
    if (p == "/[aio] (deleted)")
        return error{"pid " + std::to_string(pid) + " has a Linux AIO context (io_setup) at " +
                     range_name(v.start, v.end) + ": AIO contexts cannot be checkpointed"};
    // (The kernel names a segment's mapping /SYSV<key> and gives it its shmid as inode.)
    if (p.rfind("/SYSV", 0) == 0 && ends_with(p, " (deleted)"))
        return error{"pid " + std::to_string(pid) + " attaches SysV shared memory segment key 0x" +
                     p.substr(5, 8) + " (shmid " + std::to_string(v.inode) + ") at " +
                     range_name(v.start, v.end) + ": SysV shared memory cannot be checkpointed"};
    if (p == "[vsyscall]") return classified{image::region_anon_private, want::none, true};
    if (p == "[heap]") return classified{image::region_heap, want::present_or_swapped};
    if (p == "[stack]") return classified{image::region_stack, want::present_or_swapped};
    bool anon = p.empty() || p.rfind("[anon:", 0) == 0 || p.rfind("[stack:", 0) == 0;
    // A memfd or deleted file the image carries as an object is mapped again from it.
    if (object)
        return classified{v.shared ? image::region_object_shared : image::region_object_private,
                          v.shared ? want::none : want::anon_only};
    // Another deleted or replaced file (shared anonymous memory, a file the restorer cannot
    // reach) cannot be mapped again: its whole contents go into the image.
    bool gone = ends_with(p, " (deleted)");
    if (!anon && !gone && p[0] == '/') {
        struct stat sb;
        if (::stat(p.c_str(), &sb) != 0 || sb.st_ino != v.inode)
            gone = true;
        else if (!S_ISREG(sb.st_mode))
            return error{"pid " + std::to_string(pid) + " maps " + p + " at " +
                         range_name(v.start, v.end) + ": device mappings cannot be checkpointed"};
    }
    if (anon)
        return classified{v.shared ? image::region_anon_shared : image::region_anon_private,
                          v.shared ? want::all : want::present_or_swapped};
    if (gone)
        return classified{v.shared ? image::region_anon_shared : image::region_anon_private,
                          want::all};
    if (p[0] != '/') return error{"pid " + std::to_string(pid) + " has an unknown mapping " + p};
    if (v.shared) return classified{image::region_file_shared, want::none};
    return classified{image::region_file_private, want::anon_only};
}

// The jobs of the memory part of an image, in stream order: a region record, then chunks of its
// wanted pages. Chunks are copied, scanned and hashed by several threads at once; each thread then
// waits for its job's turn to write, so the stream comes out in the order the jobs were handed out.
struct memory_job {
    enum kind { region_start, chunk, done } what = done;
    uint64_t ticket = 0;
    image::region_record region{}; // region: the record, with `path` as its tail
    std::string path;
    uint64_t addr = 0; // chunk: [addr, addr + len)
    size_t len = 0;
};

class exporter {
  public:
    exporter(const parked_process &proc, res::sink &out)
        : pid_(proc.pid()), proc_(proc), writer_(out), mem_(proc.pid()) {}

    result<export_stats> run() {
        GHOST_TRY(read_agent_state());
        // Children, then descriptors: one the restorer could not rebuild refuses the checkpoint
        // before any memory is copied (children first: a pipe to a child is only their symptom).
        GHOST_TRY(refuse_children());
        GHOST_TRY(collect_files());
        auto all_maps = read_maps(pid_);
        if (!all_maps) return all_maps.err();
        auto maps = without_excluded(*all_maps);
        if (!maps) return maps.err();
        GHOST_TRY(split_guard_pages(*maps));
        GHOST_TRY(classify_mappings(*maps));
        GHOST_TRY(write_header());
        GHOST_TRY(write_credentials());
        GHOST_TRY(write_process(*maps));
        GHOST_TRY(objects_.write(writer_));
        auto pm = pagemap::open(pid_);
        if (!pm) return pm.err();
        GHOST_TRY(run_memory_workers(*maps, *pm));
        GHOST_TRY(write_files());
        GHOST_TRY(write_threads());
        GHOST_TRY(writer_.finish());
        stats_.image_bytes = writer_.bytes();
        return stats_;
    }

  private:
    // On 2 cores, 2 workers copy at twice the speed of one (process_vm_readv is the bottleneck);
    // beyond 4 the sink's single writer is.
    static constexpr unsigned max_memory_workers = 4;

    result<void> run_memory_workers(const std::vector<vma> &maps, const pagemap &pm) {
        maps_ = &maps, pagemap_ = &pm;
        unsigned n = std::clamp(std::thread::hardware_concurrency(), 1u, max_memory_workers);
        std::vector<std::thread> helpers;
        for (unsigned i = 1; i < n; i++) {
            try {
                helpers.emplace_back([this] { memory_worker(); });
            } catch (const std::system_error &) { // no thread to be had: fewer workers, same image
                break;
            }
        }
        memory_worker();
        for (auto &t : helpers)
            t.join();
        if (failed_) return failure_;
        return {};
    }

    // Every mapping is classified once before anything is written: one that cannot be restored
    // (a device, an AIO context, SysV shared memory) refuses the checkpoint here. Mappings of
    // deleted files find their memory objects: shared ones make theirs if no descriptor did;
    // private ones map an object only if there is one anyway (else their pages are stored).
    result<void> classify_mappings(const std::vector<vma> &maps) {
        for (bool shared : {true, false})
            for (const vma &v : maps) {
                if (v.shared != shared || !ends_with(v.path, " (deleted)")) continue;
                if (v.path == "/[aio] (deleted)" || v.path.rfind("/SYSV", 0) == 0) continue;
                auto id = objects_.from_mapping(v, shared);
                if (!id) return id.err();
                if (*id) object_of_[v.start] = *id;
            }
        for (const vma &v : maps) {
            if (v.path == "[vdso]" || v.path == "[vvar]" || v.path == "[vvar_vclock]") continue;
            auto c = classify(v, pid_, object_at(v));
            if (!c) return c.err();
        }
        return {};
    }
    uint64_t object_at(const vma &v) const {
        auto it = object_of_.find(v.start);
        return it == object_of_.end() ? 0 : it->second;
    }

    // Child processes are not part of an image: a restored parent would wait for children that
    // are gone (ECHILD) and its pipes to them would be dead. Refused before anything is written.
    // (The checkpointer the agent itself started for a signalled checkpoint is not the program's.)
    result<void> refuse_children() {
        auto tasks = list_dir_numbers("/proc/" + std::to_string(pid_) + "/task");
        if (!tasks) return tasks.err();
        for (int tid : *tasks) {
            auto kids = read_text("/proc/" + std::to_string(pid_) + "/task/" + std::to_string(tid) +
                                  "/children");
            if (!kids) continue; // the thread is gone
            std::istringstream in(*kids);
            for (int child; in >> child;) {
                bool copy = false; // a fast duplicate's copy (agent_state.h)
                for (uint32_t i = 0; i < std::min<uint32_t>(state_->copy_count, 64) && !copy; i++)
                    copy = state_->copy_pids[i] == child;
                if (!copy && child != ::getpid() && child != state_->checkpointer_pid)
                    return error{"pid " + std::to_string(pid_) + " has a child process (pid " +
                                 std::to_string(child) +
                                 "): process trees cannot be checkpointed yet"};
            }
        }
        return {};
    }

    // The maps minus what the agent's components left out (an MPI rank's lower half): a mapping
    // is cut where an excluded range covers part of it (the kernel merges neighbouring anonymous
    // mappings of both halves into one).
    result<std::vector<vma>> without_excluded(const std::vector<vma> &maps) const {
        uint32_t n = std::min<uint32_t>(state_->excluded_region_count, agent::max_excluded_regions);
        std::vector<agent::state::range> ex(state_->excluded_regions, state_->excluded_regions + n);
        std::sort(ex.begin(), ex.end(),
                  [](const auto &a, const auto &b) { return a.start < b.start; });
        std::vector<vma> out;
        for (const vma &v : maps) {
            // The kernel's own mappings are the process's whatever a component says (the lower
            // half's dl_iterate_phdr lists the vdso too).
            if (v.path == "[vdso]" || v.path == "[vvar]" || v.path == "[vvar_vclock]") {
                out.push_back(v);
                continue;
            }
            uint64_t at = v.start;
            for (const auto &r : ex) {
                if (r.end <= at || r.start >= v.end) continue;
                if (r.start > at) {
                    vma piece = v;
                    piece.start = at, piece.end = r.start;
                    piece.offset = v.offset + (at - v.start);
                    out.push_back(piece);
                }
                at = std::max(at, r.end);
                if (at >= v.end) break;
            }
            if (at < v.end) {
                vma piece = v;
                piece.start = at;
                piece.offset = v.offset + (at - v.start);
                out.push_back(piece);
            }
        }
        return out;
    }

    result<void> read_agent_state() {
        state_ = std::make_unique<agent::state>();
        GHOST_TRY(mem_.read(proc_.state_address(), state_.get(), sizeof(agent::state)));
        if (state_->magic != agent::state_magic || state_->version != agent::state_version)
            return error{"pid " + std::to_string(pid_) + " runs a ghost agent of another version"};
        return {};
    }

    result<void> write_header() {
        image::header_record h{};
        std::memcpy(h.magic, image::file_magic, sizeof h.magic);
        h.format_version = image::format_version;
        h.arch = image::arch_x86_64;
        h.page_size = page;
        unsigned eax, ebx, ecx, edx;
        __cpuid_count(0xd, 0, eax, ebx, ecx, edx);
        h.xsave_size = ebx;
        unsigned lo, hi;
        __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
        h.xcr0 = ((uint64_t)hi << 32) | lo;
        timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        h.created_ns = (uint64_t)now.tv_sec * 1000000000ULL + (uint64_t)now.tv_nsec;
        h.pid = pid_;
        h.thread_count = proc_.threads();
        utsname u;
        uname(&u);
        std::snprintf(h.kernel_release, sizeof h.kernel_release, "%s", u.release);
        std::snprintf(h.hostname, sizeof h.hostname, "%s", u.nodename);
        std::snprintf(h.ghost_version, sizeof h.ghost_version, "%s", GHOST_VERSION);
        auto exe = read_link("/proc/" + std::to_string(pid_) + "/exe");
        if (!exe) return exe.err();
        exe_ = *exe;
        auto id = elf_build_id(exe_);
        if (id) {
            h.exe_build_id_len = (uint8_t)std::min<size_t>(id->size(), sizeof h.exe_build_id);
            std::memcpy(h.exe_build_id, id->data(), h.exe_build_id_len);
        }
        h.exe_path_len = (uint32_t)exe_.size();
        return writer_.record(image::rec_header, &h, sizeof h, exe_);
    }

    // Whose rights the process has: a restore gives it no more (image_credentials.h).
    result<void> write_credentials() {
        std::vector<uint32_t> groups;
        auto c = read_credentials(pid_, groups);
        if (!c) return c.err();
        return writer_.record(image::rec_credentials, &*c, sizeof *c,
                              {(const char *)groups.data(), groups.size() * sizeof(uint32_t)});
    }

    result<void> write_process(const std::vector<vma> &maps) {
        auto p = std::make_unique<image::process_record>();
        auto mm = read_mm_fields(pid_);
        if (!mm) return mm.err();
        p->mm = *mm;
        p->mm.brk = state_->brk;
        for (const vma &v : maps) {
            image::special_mapping s{v.start, v.end};
            if (v.path == "[vdso]") p->vdso = s;
            if (v.path == "[vvar]") p->vvar = s;
            if (v.path == "[vvar_vclock]") p->vvar_vclock = s;
        }
        auto auxv = read_auxv(pid_);
        if (!auxv) return auxv.err();
        if (auxv->size() > image::max_auxv_words)
            return error{"pid " + std::to_string(pid_) + " has an auxiliary vector too large"};
        std::copy(auxv->begin(), auxv->end(), p->auxv);
        p->auxv_words = (uint32_t)auxv->size();
        auto status = read_text("/proc/" + std::to_string(pid_) + "/status");
        if (!status) return status.err();
        size_t at = status->find("Umask:");
        p->umask = at == std::string::npos
                       ? 022
                       : (uint32_t)std::strtoul(status->c_str() + at + 6, nullptr, 8);
        p->agent_state = proc_.state_address();
        std::copy(std::begin(state_->actions), std::end(state_->actions), p->actions);
        std::copy(std::begin(state_->itimer_real), std::end(state_->itimer_real), p->itimer_real);
        auto cwd = read_link("/proc/" + std::to_string(pid_) + "/cwd");
        if (!cwd) return cwd.err();
        if (ends_with(*cwd, " (deleted)"))
            return error{"the working directory of pid " + std::to_string(pid_) + " was deleted"};
        p->cwd_len = (uint32_t)cwd->size();
        return writer_.record(image::rec_process, p.get(), sizeof *p, *cwd);
    }

    // Hands out the next job under mu_: walks the regions and, inside one, its runs of wanted
    // pages.
    // Guard pages (MADV_GUARD_INSTALL) cannot be read and hold nothing: each run of them becomes
    // a region of its own that the restorer maps and guards again.
    result<void> split_guard_pages(std::vector<vma> &maps) {
        uint64_t end = 0; // of user space: [vsyscall] lies beyond it, where the scan fails
        for (const vma &v : maps)
            if (v.path != "[vsyscall]") end = std::max(end, v.end);
        if (!end) return {};
        auto guards = guard_ranges(pid_, maps.front().start, end);
        if (!guards) return guards.err();
        if (guards->empty()) return {};
        std::vector<vma> out;
        size_t g = 0;
        for (vma v : maps) {
            while (g < guards->size() && (*guards)[g].second <= v.start)
                g++;
            for (size_t k = g; k < guards->size() && (*guards)[k].first < v.end; k++) {
                uint64_t gs = std::max(v.start, (*guards)[k].first);
                uint64_t ge = std::min(v.end, (*guards)[k].second);
                if (gs > v.start) {
                    vma before = v;
                    before.end = gs;
                    out.push_back(before);
                }
                vma guard = v;
                guard.start = gs, guard.end = ge, guard.advice |= image::advice_guard;
                guard.offset += gs - v.start;
                out.push_back(guard);
                v.offset += ge - v.start;
                v.start = ge;
            }
            if (v.start < v.end) out.push_back(v);
        }
        maps = std::move(out);
        return {};
    }

    result<memory_job> next_job() {
        memory_job j;
        while (region_ < maps_->size()) {
            const vma &v = (*maps_)[region_];
            if (!in_region_) {
                region_pages_ = want::none;
                if (v.path == "[vdso]" || v.path == "[vvar]" || v.path == "[vvar_vclock]") {
                    region_++;
                    continue;
                }
                auto c = classify(v, pid_, object_at(v));
                if (!c) return c.err();
                if (c->skip) {
                    region_++;
                    continue;
                }
                GHOST_TRY(region_record(v, c->kind, j));
                region_pages_ = v.advice & image::advice_guard ? want::none : c->pages;
                in_region_ = region_pages_ != want::none;
                next_page_ = 0;
                window_start_ = 0;
                entries_.clear();
                if (!in_region_) region_++;
                j.ticket = tickets_++;
                return j;
            }
            size_t n = (v.end - v.start) / page, i = next_page_;
            for (; i < n; i++) {
                if (i - window_start_ >= entries_.size()) GHOST_TRY(read_window(v, i));
                if (wanted(entries_[i - window_start_])) break;
            }
            if (i == n) {
                in_region_ = false;
                region_++;
                continue;
            }
            size_t e = i + 1;
            for (; e < n && (e - i) * page < chunk_bytes; e++) {
                if (e - window_start_ >= entries_.size()) GHOST_TRY(read_window(v, e));
                if (!wanted(entries_[e - window_start_])) break;
            }
            next_page_ = e;
            j.what = memory_job::chunk;
            j.addr = v.start + i * page;
            j.len = (e - i) * page;
            j.ticket = tickets_++;
            return j;
        }
        j.what = memory_job::done;
        return j;
    }

    // A region's page map is read a window at a time as the jobs reach it (under mu_): reading a
    // large region's whole map at once kept the other workers waiting for milliseconds.
    static constexpr size_t pagemap_window = 8192; // pages: 32 MiB of address, 64 KiB of map
    result<void> read_window(const vma &v, size_t first) {
        size_t end = std::min((v.end - v.start) / page, first + pagemap_window);
        GHOST_TRY(pagemap_->read(v.start + first * page, v.start + end * page, entries_));
        window_start_ = first;
        return {};
    }

    bool wanted(uint64_t e) const {
        switch (region_pages_) {
        case want::all:
            return true;
        case want::present_or_swapped:
            return (e & (uapi::pm_present | uapi::pm_swapped)) != 0;
        case want::anon_only:
            return (e & uapi::pm_swapped) ||
                   ((e & uapi::pm_present) && !(e & uapi::pm_file_or_shared));
        default:
            return false;
        }
    }

    result<void> region_record(const vma &v, image::region_kind kind, memory_job &j) {
        j.what = memory_job::region_start;
        image::region_record &r = j.region;
        r.start = v.start, r.end = v.end, r.kind = kind;
        r.prot = (v.read ? PROT_READ : 0) | (v.write ? PROT_WRITE : 0) | (v.exec ? PROT_EXEC : 0);
        r.advice = v.advice & image::advice_known;
        r.object_id = object_at(v);
        if (r.object_id) r.file_offset = v.offset;
        if (kind == image::region_file_private || kind == image::region_file_shared) {
            j.path = v.path;
            struct stat sb;
            if (::stat(j.path.c_str(), &sb) != 0)
                return sys_error("cannot stat mapped file " + j.path);
            r.file_offset = v.offset, r.file_dev = sb.st_dev, r.file_ino = sb.st_ino;
            r.file_size = (uint64_t)sb.st_size;
            r.file_mtime_ns = (int64_t)sb.st_mtim.tv_sec * 1000000000LL + sb.st_mtim.tv_nsec;
            r.path_len = (uint32_t)j.path.size();
        }
        return {};
    }

    void memory_worker() {
        struct free_deleter {
            void operator()(char *p) const { std::free(p); }
        };
        std::unique_ptr<char, free_deleter> buffer((char *)std::aligned_alloc(page, chunk_bytes));
        std::vector<image_writer::prepared_pages> runs;
        for (;;) {
            memory_job j;
            {
                std::lock_guard lock(mu_);
                if (failed_) return;
                auto next = next_job();
                if (!next) return fail(next.err());
                j = std::move(*next);
            }
            if (j.what == memory_job::done) return;
            runs.clear();
            if (j.what == memory_job::chunk) {
                if (auto r = mem_.read(j.addr, buffer.get(), j.len); !r) return fail(r.err());
                nonzero_runs(j.addr, buffer.get(), j.len, runs);
            }
            if (!wait_turn(j.ticket)) return;
            if (auto r = write_job(j, runs); !r) return fail(r.err());
            turn_.store(j.ticket + 1, std::memory_order_release);
            turn_.notify_all();
        }
    }

    // The writing turn passes from worker to worker once per chunk, every few tens of
    // microseconds: a worker spins for it a while before it sleeps (waking a sleeping thread costs
    // about as long as a turn on a VM). False when the export failed.
    bool wait_turn(uint64_t ticket) {
        for (int spin = 0;; spin++) {
            uint64_t t = turn_.load(std::memory_order_acquire);
            if (t == ticket) return true;
            if (t == turn_failed) return false;
            if (spin < 1000)
                _mm_pause();
            else
                turn_.wait(t, std::memory_order_acquire);
        }
    }

    void fail(const error &e) {
        std::lock_guard lock(mu_);
        if (!failed_) failure_ = e;
        failed_ = true;
        turn_.store(turn_failed, std::memory_order_release);
        turn_.notify_all();
    }

    // Runs of non-zero pages, hashed (outside the writing turn).
    static void nonzero_runs(uint64_t addr, const char *data, size_t len,
                             std::vector<image_writer::prepared_pages> &runs) {
        size_t pages = len / page;
        for (size_t i = 0; i < pages;) {
            if (page_is_zero(data + i * page)) {
                i++;
                continue;
            }
            size_t e = i + 1;
            while (e < pages && !page_is_zero(data + e * page))
                e++;
            runs.push_back(
                image_writer::prepare_pages(addr + i * page, data + i * page, (e - i) * page));
            i = e;
        }
    }

    // Called in the job's turn, under mu_.
    result<void> write_job(const memory_job &j,
                           const std::vector<image_writer::prepared_pages> &runs) {
        if (j.what == memory_job::region_start) {
            stats_.regions++;
            return writer_.record(image::rec_region, &j.region, sizeof j.region, j.path);
        }
        for (const auto &p : runs) {
            GHOST_TRY(writer_.pages(p));
            stats_.memory_bytes += p.header.length - sizeof p.addr;
        }
        return {};
    }

    result<void> collect_files();
    result<void> write_files();
    // By tid: an image has one valid order (image_verify.h).
    result<void> write_threads() {
        std::vector<const agent::thread_slot *> parked;
        for (uint32_t i = 0; i < state_->thread_count && i < (uint32_t)agent::max_threads; i++)
            if (state_->threads[i].state == agent::slot_parked)
                parked.push_back(&state_->threads[i]);
        std::sort(parked.begin(), parked.end(),
                  [](const auto *a, const auto *b) { return a->tid < b->tid; });
        for (const agent::thread_slot *slot : parked) {
            const agent::thread_slot &s = *slot;
            image::thread_record t{};
            t.tid = s.tid, t.flags = s.flags, t.fs_base = s.fs_base;
            const agent::saved_context &c = s.ctx;
            uint64_t regs[8] = {c.rbx, c.rbp, c.r12, c.r13, c.r14, c.r15, c.rsp, c.rip};
            std::copy(std::begin(regs), std::end(regs), t.regs);
            t.mxcsr = c.mxcsr, t.fpucw = c.fpucw & 0xffff;
            GHOST_TRY(writer_.record(image::rec_thread, &t, sizeof t));
            stats_.threads++;
        }
        if (!stats_.threads) return error{"pid " + std::to_string(pid_) + " has no parked thread"};
        return {};
    }

    pid_t pid_;
    const parked_process &proc_;
    image_writer writer_;
    memory_reader mem_;
    std::unique_ptr<agent::state> state_;
    std::string exe_;
    std::vector<exported_file> files_;
    object_table objects_{pid_};
    std::map<uint64_t, uint64_t> object_of_; // mapping start -> memory object id
    export_stats stats_;

    // The memory jobs: handed out and written under mu_.
    std::mutex mu_;
    const std::vector<vma> *maps_ = nullptr;
    const pagemap *pagemap_ = nullptr;
    size_t region_ = 0, next_page_ = 0, window_start_ = 0; // pages of the region
    bool in_region_ = false;
    want region_pages_ = want::none;
    std::vector<uint64_t> entries_;
    uint64_t tickets_ = 0;
    bool failed_ = false;
    // The ticket whose job is written next; only its worker touches writer_ and stats_.
    static constexpr uint64_t turn_failed = ~0ULL;
    std::atomic<uint64_t> turn_{0};
    error failure_;
};

result<void> exporter::collect_files() {
    std::vector<int> internal;
    for (uint32_t i = 0; i < state_->internal_fd_count && i < agent::max_internal_fds; i++)
        internal.push_back(state_->internal_fds[i]);
    // What components left out (an MPI rank's lower half) is not the program's either.
    uint32_t n = std::min<uint32_t>(state_->excluded_fd_count, agent::max_excluded_fds);
    for (uint32_t i = 0; i < n; i++)
        internal.push_back(state_->excluded_fds[i]);
    auto files = core::collect_files(pid_, internal, objects_);
    if (!files) return files.err();
    files_ = std::move(*files);
    return {};
}

result<void> exporter::write_files() {
    for (const exported_file &f : files_) {
        GHOST_TRY(writer_.record(image::rec_file, &f.record, sizeof f.record, f.path, f.data));
        stats_.files++;
    }
    return {};
}

} // namespace

result<export_stats> export_process(const parked_process &proc, res::sink &out) {
    exporter e(proc, out);
    return e.run();
}

} // namespace ghost::core
