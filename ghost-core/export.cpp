// SPDX-License-Identifier: Apache-2.0
// Export reads everything from outside the parked process: /proc for the layout and descriptors
// (classified in export_files.cpp), process_vm_readv for memory, the agent's state block for what
// only the process could tell.
// Its mirror image is ghost-core/restore/restorer.cpp, which reads the records in the same order.
#include "ghost-core/export.h"

#include <dirent.h>
#include <emmintrin.h>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/random.h>
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
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "ghost-core/agent/agent_state.h"
#include "ghost-core/elf_build_id.h"
#include "ghost-core/export_files.h"
#include "ghost-core/export_objects.h"
#include "ghost-core/image_index.h"
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

// A run of pages of one kind: stored (copied into the image) or referenced (in an older image).
struct page_segment {
    uint64_t addr, len;
    bool referenced;
};

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
    // The stored segments of a job, one after the other into dst, in as few calls as the kernel
    // allows (IOV_MAX ranges a call); a short read falls back to read() piece by piece.
    result<void> read(const std::vector<page_segment> &segs, char *dst) const {
        std::vector<iovec> remote;
        size_t total = 0;
        for (const page_segment &s : segs)
            if (!s.referenced) {
                remote.push_back({(void *)s.addr, s.len});
                total += s.len;
            }
        iovec local{dst, total};
        if (!remote.empty() && remote.size() <= 1024 &&
            ::process_vm_readv(pid_, &local, 1, remote.data(), remote.size(), 0) == (ssize_t)total)
            return {};
        for (const iovec &r : remote) {
            GHOST_TRY(read((uint64_t)r.iov_base, dst, r.iov_len));
            dst += r.iov_len;
        }
        return {};
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
    enum kind { region_start, pages, done } what = done;
    uint64_t ticket = 0;
    image::region_record region{}; // region: the record, with `path` as its tail
    std::string path;
    // pages: runs in address order, at most chunk_bytes of them stored (an incremental image's
    // written pages are often single pages apart: one job, one process_vm_readv for many).
    std::vector<page_segment> segments;
};

// What a pages job writes, in address order: pages records and page references.
struct page_output {
    bool is_ref;
    image_writer::prepared_pages pages;
    image::page_ref_record ref;
};

// The first RDMA device of this host (/sys/class/infiniband: InfiniBand, RoCE, iWARP), or "".
std::string rdma_device() {
    // Tests only: GHOST_TEST_INFINIBAND_DIR stands for /sys/class/infiniband (a host with RDMA
    // devices, whose processes are never pre-copied).
    const char *dir = std::getenv("GHOST_TEST_INFINIBAND_DIR");
    DIR *d = ::opendir(dir && *dir ? dir : "/sys/class/infiniband");
    if (!d) return {};
    std::string found;
    while (dirent *e = ::readdir(d))
        if (e->d_name[0] != '.') {
            found = e->d_name;
            break;
        }
    ::closedir(d);
    return found;
}

struct page_range {
    uint64_t start, end;
};

// Whether the pages of a mapping can be tracked for writes: private memory whose pages an image
// stores. (Shared memory may be written through another process's mapping, which no tracking of
// ours sees.)
bool trackable(image::region_kind kind) {
    switch (kind) {
    case image::region_anon_private:
    case image::region_heap:
    case image::region_stack:
    case image::region_file_private:
    case image::region_object_private:
        return true;
    default:
        return false;
    }
}

class exporter {
  public:
    exporter(const parked_process &proc, res::sink &out, const export_options &opt)
        : pid_(proc.pid()), proc_(proc), opt_(opt), writer_(out), mem_(proc.pid()) {}
    ~exporter() {
        if (track_fd_ >= 0) ::close(track_fd_);
    }

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
        if (opt_.track) GHOST_TRY(start_tracking(*maps));
        GHOST_TRY(write_header());
        GHOST_TRY(write_tracking());
        GHOST_TRY(write_credentials());
        GHOST_TRY(write_process(*maps));
        GHOST_TRY(write_tree());
        GHOST_TRY(objects_.write(writer_));
        auto pm = pagemap::open(pid_);
        if (!pm) return pm.err();
        GHOST_TRY(run_memory_workers(*maps, *pm));
        GHOST_TRY(write_files());
        GHOST_TRY(write_threads());
        GHOST_TRY(writer_.finish());
        stats_.image_bytes = writer_.bytes();
        stats_.incremental = incremental_;
        return stats_;
    }

    // export_precopy: the process runs (attach_running); what is copied after the tracking is
    // armed and written again is found by the next export's scan.
    result<export_stats> run_precopy(parked_process &proc, image_index &idx) {
        precopy_ = true;
        // (The process runs throughout: on an early return, proc's destructor only closes the
        // agent connection.)
        GHOST_TRY(read_agent_state());
        // Nothing is left out: what the agent's components leave out of an image (an MPI rank's
        // lower half) is known only in a park. Every mapping with tracked writes must have its
        // pages here, or the export after this one would take them from here.
        auto maps = read_maps(pid_);
        if (!maps) return maps.err();
        GHOST_TRY(split_guard_pages(*maps));
        GHOST_TRY(classify_mappings(*maps));
        GHOST_TRY(start_tracking(*maps));
        if (!scan_id_) return error{"no write tracking: " + stats_.tracking_note};
        // A round after another (opt_.parent_index) must go on from the last one's index. (Past
        // the new scan: the image after this one is whole, as its caller is told.)
        if (opt_.parent_index && !incremental_)
            return error{"this pre-copy round cannot follow the last one: " + stats_.tracking_note};
        GHOST_TRY(proc.resume()); // the agent is free again: the tracking descriptor is ours
        auto t_resumed = std::chrono::steady_clock::now();
        GHOST_TRY(write_header());
        GHOST_TRY(write_tracking());
        auto pm = pagemap::open(pid_);
        if (!pm) return pm.err();
        GHOST_TRY(run_memory_workers(registered_, *pm));
        uint64_t sealed = writer_.hash_sum();
        GHOST_TRY(writer_.finish());
        GHOST_TRY(count_written_since(stats_.written_since_bytes));
        stats_.image_bytes = writer_.bytes();
        stats_.live_s =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t_resumed).count();
        idx = {};
        idx.size = writer_.bytes(), idx.hash_sum = sealed, idx.scan_id = scan_id_;
        idx.spans = std::move(precopy_spans_);
        if (incremental_) {
            idx.sources = parent_.sources;
            idx.sources.push_back(parent_as_source());
        }
        return stats_;
    }

  private:
    // --- write tracking (export_options.track) ---------------------------------------------------
    // Order matters: the scan id goes into the process before any page is write-protected, so
    // that an export failing past this point leaves an id that no image on disk has (the next
    // image is then whole); each mapping is registered and its written pages are read and
    // protected again in one PAGEMAP_SCAN, before any of its data is copied (a page written
    // after that is found by the next export).
    result<void> start_tracking(const std::vector<vma> &maps) {
        // A network card with RDMA writes into registered memory without the page tables: such
        // writes would go unseen, and an image taking those pages from its parent would be wrong.
        if (std::string dev = rdma_device(); !dev.empty()) {
            stats_.tracking_note = "this host has an RDMA device (" + dev +
                                   "), whose writes into memory write tracking cannot see";
            return {};
        }
        auto fd = proc_.tracking_fd();
        if (!fd) {
            stats_.tracking_note = fd.err().message;
            return {};
        }
        track_fd_ = *fd;
        if (!opt_.parent_path.empty() || opt_.parent_index) {
            auto idx = opt_.parent_index ? result<image_index>(*opt_.parent_index)
                                         : index_image(opt_.parent_path);
            if (!idx)
                stats_.tracking_note = "the previous image cannot be used: " + idx.err().message;
            else if (!idx->scan_id || idx->scan_id != state_->track_scan_id)
                stats_.tracking_note = "the previous image is not the process's last tracked one";
            else if (idx->sources.size() + 1 > image::max_sources)
                stats_.tracking_note = "a whole image after " + std::to_string(image::max_sources) +
                                       " incremental ones";
            else if (opt_.parent_name.empty() || opt_.parent_name.size() >= image::max_source_name)
                stats_.tracking_note = "the previous image has no name to give";
            // (A pre-copy's pages are in place at its receiver already: none is read back.)
            else if (double a = opt_.parent_index ? 1.0 : read_amplification(*idx);
                     a > max_read_amplification)
                stats_.tracking_note = "the older images are mostly overwritten (a restart would "
                                       "read " +
                                       std::to_string(a).substr(0, 4) +
                                       " times the pages it takes from them)";
            else {
                parent_ = std::move(*idx);
                incremental_ = true;
            }
        }
        // A pre-copy round after another fails before anything changes in the process: the
        // last round's index is still good for the image after it.
        if (precopy_ && opt_.parent_index && !incremental_)
            return error{"no pre-copy round can follow the last one: " + stats_.tracking_note};
        while (!scan_id_)
            if (::getrandom(&scan_id_, sizeof scan_id_, 0) != sizeof scan_id_)
                return sys_error("cannot draw a scan id");
        uint64_t at = proc_.state_address() + offsetof(agent::state, track_scan_id);
        iovec local{&scan_id_, sizeof scan_id_}, remote{(void *)at, sizeof scan_id_};
        if (::process_vm_writev(pid_, &local, 1, &remote, 1, 0) != (ssize_t)sizeof scan_id_)
            return sys_error("cannot write into pid " + std::to_string(pid_));
        auto pm_fd =
            ::open(("/proc/" + std::to_string(pid_) + "/pagemap").c_str(), O_RDONLY | O_CLOEXEC);
        if (pm_fd < 0) return sys_error("cannot open the page map of pid " + std::to_string(pid_));
        result<void> r = {};
        for (const vma &v : maps) {
            auto c = classify(v, pid_, object_at(v));
            if (!c || c->skip || !trackable(c->kind) || (v.advice & image::advice_guard)) continue;
            uapi::uffdio_register_arg reg{v.start, v.end - v.start, uapi::uffdio_register_mode_wp,
                                          0};
            bool registered = ::ioctl(track_fd_, uapi::uffdio_register_ioctl, &reg) == 0;
            if (!registered) continue; // not trackable (its pages are stored whole every time)
            registered_.push_back(v);
            std::vector<page_range> written;
            if (!(r = written_pages(pm_fd, v, written))) break;
            // Tracked since the parent only if it was registered already (a new registration
            // reports every page written anyway).
            if (incremental_ && v.uffd_wp) written_[v.start] = std::move(written);
        }
        ::close(pm_fd);
        // Nothing tracked since the parent (the process was restored from it since): a whole
        // image, which ends the chain.
        if (incremental_ && written_.empty()) {
            incremental_ = false;
            stats_.tracking_note = "no memory was tracked since the previous image";
        }
        return r;
    }

    // A restart reads every pages record a reference names whole: how many bytes it reads for
    // each byte it keeps, if the new image took all its pages from these. Random writes leave
    // older records mostly overwritten; past max_read_amplification the image is whole again.
    static constexpr double max_read_amplification = 1.5;
    static double read_amplification(const image_index &idx) {
        std::map<std::pair<uint32_t, uint64_t>, uint64_t> records;
        uint64_t kept = 0;
        for (const page_span &s : idx.spans) {
            records[{s.source, s.record_offset}] = s.record_len;
            kept += s.len;
        }
        uint64_t read = 0;
        for (const auto &r : records)
            read += r.second;
        return kept ? (double)read / (double)kept : 1.0;
    }

    // What the process wrote in its tracked mappings since this export's scan (a pre-copy: what a
    // round after it would copy), without protecting anything again.
    result<void> count_written_since(uint64_t &bytes) {
        auto pm_fd =
            ::open(("/proc/" + std::to_string(pid_) + "/pagemap").c_str(), O_RDONLY | O_CLOEXEC);
        if (pm_fd < 0) return sys_error("cannot open the page map of pid " + std::to_string(pid_));
        bytes = 0;
        // (Present: a page never touched has no data to copy, written or not. A mapping unmapped
        // meanwhile counts for nothing.)
        for (const vma &v : registered_)
            (void)scan_pages(pm_fd, v, 0, uapi::page_is_written | uapi::page_is_present,
                             [&](uint64_t start, uint64_t end) { bytes += end - start; });
        ::close(pm_fd);
        return {};
    }

    // PAGEMAP_SCAN over `v` with `flags`: each run of pages in all of `categories` goes to
    // `each(start, end)`, in address order. False when the kernel refused the scan.
    template <class F>
    static bool scan_pages(int pm_fd, const vma &v, uint64_t flags, uint64_t categories, F each) {
        uapi::page_region found[256];
        for (uint64_t at = v.start; at < v.end;) {
            uapi::pm_scan_arg arg{};
            arg.size = sizeof arg;
            arg.flags = flags;
            arg.start = at, arg.end = v.end;
            arg.vec = (uint64_t)found, arg.vec_len = 256;
            arg.category_mask = arg.return_mask = categories;
            long n = ::ioctl(pm_fd, uapi::pagemap_scan, &arg);
            if (n < 0) return false;
            for (long i = 0; i < n; i++)
                each(found[i].start, found[i].end);
            if (arg.walk_end <= at) break;
            at = arg.walk_end;
        }
        return true;
    }

    // The pages of `v` written since the last scan, write-protected again.
    result<void> written_pages(int pm_fd, const vma &v, std::vector<page_range> &out) {
        auto add = [&](uint64_t start, uint64_t end) {
            if (!out.empty() && out.back().end == start)
                out.back().end = end;
            else
                out.push_back({start, end});
        };
        if (!scan_pages(pm_fd, v, uapi::pm_scan_wp_matching | uapi::pm_scan_check_wpasync,
                        uapi::page_is_written, add))
            return sys_error("cannot scan the written pages of " + range_name(v.start, v.end));
        return {};
    }

    // How an image made from parent_ names it among its sources.
    image::image_source parent_as_source() const {
        image::image_source me{};
        std::memcpy(me.name, opt_.parent_name.data(), opt_.parent_name.size());
        me.size = parent_.size, me.hash_sum = parent_.hash_sum, me.scan_id = parent_.scan_id;
        return me;
    }

    // (A pre-copy round after another lists no sources: it holds pages only, which its receiver
    // puts over the last round's. Its index goes on from the last one's: run_precopy.)
    result<void> write_tracking() {
        if (!scan_id_) return {};
        image::tracking_record t{};
        t.scan_id = scan_id_;
        std::string tail;
        if (incremental_ && !precopy_) {
            std::vector<image::image_source> sources = parent_.sources;
            sources.push_back(parent_as_source());
            for (const auto &src : sources)
                stats_.sources.emplace_back(src.name, strnlen(src.name, sizeof src.name));
            t.source_count = (uint32_t)sources.size();
            tail.assign((const char *)sources.data(), sources.size() * sizeof sources[0]);
        }
        return writer_.record(image::rec_tracking, &t, sizeof t, tail);
    }

    // The page references for [addr, addr + len): the parts its parent holds (the rest was zero
    // or the mapped file's there, and still is).
    void resolve_refs(uint64_t addr, uint64_t len, std::vector<page_output> &out) const {
        const auto &spans = parent_.spans;
        auto it = std::upper_bound(spans.begin(), spans.end(), addr,
                                   [](uint64_t a, const page_span &s) { return a < s.addr; });
        if (it != spans.begin()) --it;
        for (uint64_t end = addr + len; it != spans.end() && it->addr < end; ++it) {
            uint64_t s = std::max(addr, it->addr), e = std::min(end, it->addr + it->len);
            if (s >= e) continue;
            image::page_ref_record r{};
            r.addr = s, r.len = e - s, r.source = it->source;
            r.record_offset = it->record_offset, r.record_addr = it->record_addr;
            r.record_len = it->record_len, r.record_hash = it->record_hash;
            // A run that continues the last reference in the same record extends it.
            if (!out.empty() && out.back().is_ref) {
                image::page_ref_record &last = out.back().ref;
                if (last.source == r.source && last.record_offset == r.record_offset &&
                    last.addr + last.len == r.addr) {
                    last.len += r.len;
                    continue;
                }
            }
            out.push_back({true, {}, r});
        }
    }

    // On 2 cores, 2 workers copy at twice the speed of one (process_vm_readv is the bottleneck);
    // beyond 4 the sink's single writer is.
    static constexpr unsigned max_memory_workers = 4;
    static constexpr size_t max_job_segments = 256;

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
                if (v.shared != shared || !ends_with(v.path, " (deleted)") || tree_memory_at(v))
                    continue;
                if (v.path == "/[aio] (deleted)" || v.path.rfind("/SYSV", 0) == 0) continue;
                auto id = objects_.from_mapping(v, shared);
                if (!id && precopy_) continue; // (a pre-copy leaves out what it cannot take)
                if (!id) return id.err();
                if (*id) object_of_[v.start] = *id;
            }
        // A pre-copy takes what it can: what an image refuses is refused by the image after it
        // (or is an MPI rank's lower half, which that image leaves out).
        if (precopy_) return {};
        for (const vma &v : maps) {
            if (v.path == "[vdso]" || v.path == "[vvar]" || v.path == "[vvar_vclock]") continue;
            if (v.start < image::restorer_zone_start + image::restorer_zone_size &&
                v.end > image::restorer_zone_start) {
                char range[64];
                std::snprintf(range, sizeof range, "%llx-%llx", (unsigned long long)v.start,
                              (unsigned long long)v.end);
                return error{"pid " + std::to_string(pid_) + " maps memory at " + range +
                             ", where ghost's restorer runs: it could not be restored"};
            }
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
                bool member = opt_.tree && opt_.tree->members_pids.count(child);
                if (!copy && !member && child != ::getpid() && child != state_->checkpointer_pid)
                    return error{"pid " + std::to_string(pid_) + " has a child process (pid " +
                                 std::to_string(child) +
                                 "): a process tree is carried only by `ghost checkpoint` into "
                                 "an image file, not by a duplicate nor an MPI rank's checkpoint"};
            }
        }
        return {};
    }

    // The root of a process tree lists it: its descendants, then the descriptions they share.
    result<void> write_tree() {
        if (!opt_.tree || !opt_.tree->root) return {};
        for (const image::tree_member_record &m : opt_.tree->members)
            GHOST_TRY(writer_.record(image::rec_tree_member, &m, sizeof m));
        for (const tree_shared_file &s : opt_.tree->shared) {
            image::tree_shared_record r = s.record;
            r.path_len = (uint32_t)s.path.size();
            r.data_len = (uint32_t)s.data.size();
            GHOST_TRY(writer_.record(image::rec_tree_shared, &r, sizeof r, s.path, s.data));
            if (s.record.kind == image::tree_shared_memory) GHOST_TRY(write_tree_memory(s));
        }
        return {};
    }

    // Shared memory's contents, read through the object a process of the tree maps (its
    // map_files entry), as tree_data records: runs of pages that are not all zero.
    result<void> write_tree_memory(const tree_shared_file &s) {
        char range[64];
        std::snprintf(range, sizeof range, "%llx-%llx", (unsigned long long)s.holder_start,
                      (unsigned long long)s.holder_end);
        std::string file = "/proc/" + std::to_string(s.holder) + "/map_files/" + range;
        int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0) return sys_error("cannot open the shared memory " + file);
        auto done = write_nonzero_runs(writer_, image::rec_tree_data, fd, 0,
                                       (uint64_t)s.record.offset, "the shared memory " + file);
        ::close(fd);
        return done;
    }

    // The tree's shared memory this process maps (region_tree_shared): its index + 1, or 0.
    uint32_t tree_memory_at(const vma &v) const {
        if (!opt_.tree) return 0;
        auto it = opt_.tree->shared_maps.find(v.start);
        return it == opt_.tree->shared_maps.end() ? 0 : it->second + 1;
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
        auto st = core::read_agent_state(proc_);
        if (!st) return st.err();
        state_ = std::move(*st);
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
        if (state_->excluded_region_count > 0) h.flags |= image::header_job_rank;
        if (precopy_) h.flags |= image::header_pages_only;
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
                auto c = tree_memory_at(v)
                             ? result<classified>(classified{image::region_tree_shared, want::none})
                             : classify(v, pid_, object_at(v));
                if (!c) return c.err();
                if (c->skip) {
                    region_++;
                    continue;
                }
                // (A pre-copy's regions only hold pages: no file or object. The anonymous ones
                // say what they are, so that a receiver can put them in place ahead of the image
                // (restorer.cpp); any other is written as anonymous with no access.)
                if (precopy_) {
                    bool anonymous = c->kind == image::region_anon_private ||
                                     c->kind == image::region_heap ||
                                     c->kind == image::region_stack;
                    j.what = memory_job::region_start;
                    j.region.start = v.start, j.region.end = v.end;
                    j.region.kind = anonymous ? c->kind : image::region_anon_private;
                    if (anonymous)
                        j.region.prot = (v.read ? PROT_READ : 0) | (v.write ? PROT_WRITE : 0) |
                                        (v.exec ? PROT_EXEC : 0);
                } else {
                    GHOST_TRY(region_record(v, c->kind, j));
                }
                region_pages_ = v.advice & image::advice_guard ? want::none : c->pages;
                in_region_ = region_pages_ != want::none;
                next_page_ = 0;
                window_start_ = 0;
                entries_.clear();
                auto w = written_.find(v.start);
                region_written_ = w == written_.end() ? nullptr : &w->second;
                written_at_ = 0;
                if (!in_region_) region_++;
                j.ticket = tickets_++;
                return j;
            }
            // Runs of this region, until chunk_bytes of them are stored or the region ends.
            j.what = memory_job::pages;
            size_t n = (v.end - v.start) / page, stored = 0;
            while (j.segments.size() < max_job_segments && stored < chunk_bytes) {
                size_t i = next_page_;
                page_class cls = page_class::none;
                for (; i < n; i++) {
                    if (i - window_start_ >= entries_.size()) GHOST_TRY(read_window(v, i));
                    if ((cls = classify_page(v.start + i * page, entries_[i - window_start_])) !=
                        page_class::none)
                        break;
                }
                if (i == n) {
                    in_region_ = false;
                    region_++;
                    break;
                }
                bool referenced = cls == page_class::referenced;
                size_t limit = referenced ? n : (chunk_bytes - stored) / page;
                size_t e = i + 1;
                for (; e < n && e - i < limit; e++) {
                    if (e - window_start_ >= entries_.size()) GHOST_TRY(read_window(v, e));
                    if (classify_page(v.start + e * page, entries_[e - window_start_]) != cls)
                        break;
                }
                next_page_ = e;
                j.segments.push_back({v.start + i * page, (e - i) * page, referenced});
                if (!referenced) stored += (e - i) * page;
            }
            if (j.segments.empty()) continue;
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

    // What an image does with a page: nothing (zero, or the mapped file's), store it, or (in a
    // mapping tracked since the parent) reference the parent's copy of a page not written since.
    enum class page_class { none, stored, referenced };
    page_class classify_page(uint64_t addr, uint64_t entry) {
        if (!wanted(entry)) return page_class::none;
        if (!region_written_) return page_class::stored;
        const auto &w = *region_written_;
        while (written_at_ < w.size() && w[written_at_].end <= addr)
            written_at_++;
        bool written = written_at_ < w.size() && w[written_at_].start <= addr;
        if (written) return page_class::stored;
        // In a private file mapping "swapped" may be a write-protect marker the kernel left where
        // it dropped a page (reclaim, MADV_DONTNEED): the page reads as the file's now, which the
        // older image does not hold (or holds a dropped private copy of). Stored, not referenced.
        if (region_pages_ == want::anon_only && (entry & uapi::pm_swapped))
            return page_class::stored;
        return entry & (uapi::pm_present | uapi::pm_swapped) ? page_class::referenced
                                                             : page_class::none;
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
        if (kind == image::region_tree_shared)
            r.object_id = tree_memory_at(v) - 1, r.file_offset = v.offset;
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
        std::vector<page_output> output;
        std::vector<bool> lost; // segments a pre-copy could not read (unmapped while it ran)
        for (;;) {
            memory_job j;
            std::optional<error> job_error;
            {
                std::lock_guard lock(mu_);
                if (failed_) return;
                auto next = next_job();
                if (next)
                    j = std::move(*next);
                else
                    job_error = next.err();
            }
            // fail() takes mu_ itself (not recursive): a target that vanished while its maps were
            // read deadlocked this worker on its own lock, and the checkpointer never exited.
            if (job_error) return fail(*job_error);
            if (j.what == memory_job::done) return;
            output.clear();
            if (j.what == memory_job::pages) {
                lost.assign(j.segments.size(), false);
                if (auto r = mem_.read(j.segments, buffer.get()); !r) {
                    if (!precopy_) return fail(r.err());
                    // The process runs: a segment unmapped meanwhile is left out. Whatever is
                    // mapped there later is a new mapping, which this tracking does not cover:
                    // the export after this one stores it whole.
                    size_t at = 0;
                    for (size_t k = 0; k < j.segments.size(); k++) {
                        lost[k] = !mem_.read({j.segments[k]}, buffer.get() + at);
                        at += j.segments[k].len;
                    }
                }
                size_t at = 0;
                for (size_t k = 0; k < j.segments.size(); k++) {
                    const page_segment &seg = j.segments[k];
                    if (seg.referenced) {
                        resolve_refs(seg.addr, seg.len, output);
                        continue;
                    }
                    if (!lost[k]) nonzero_runs(seg.addr, buffer.get() + at, seg.len, output);
                    at += seg.len;
                }
            }
            if (!wait_turn(j.ticket)) return;
            if (auto r = write_job(j, output); !r) return fail(r.err());
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
                             std::vector<page_output> &runs) {
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
                {false,
                 image_writer::prepare_pages(addr + i * page, data + i * page, (e - i) * page),
                 {}});
            i = e;
        }
    }

    // Called in the job's turn, which orders the writes (mu_ is not held).
    result<void> write_job(const memory_job &j, const std::vector<page_output> &output) {
        if (j.what == memory_job::region_start) {
            stats_.regions++;
            return writer_.record(image::rec_region, &j.region, sizeof j.region, j.path);
        }
        // A pre-copy round writes no references: what the last rounds hold stays where they
        // put it. Its index (precopy_spans_) numbers its sources as the image after it will.
        uint32_t self = incremental_ ? (uint32_t)parent_.sources.size() + 1 : 0;
        for (const page_output &o : output) {
            if (o.is_ref) {
                stats_.referenced_bytes += o.ref.len;
                if (precopy_) {
                    const image::page_ref_record &r = o.ref;
                    precopy_spans_.push_back({r.addr, r.len, r.source, r.record_offset,
                                              r.record_addr, r.record_len, r.record_hash});
                    continue;
                }
                GHOST_TRY(writer_.record(image::rec_page_ref, &o.ref, sizeof o.ref));
            } else {
                uint64_t len = o.pages.header.length - sizeof o.pages.addr;
                if (precopy_)
                    precopy_spans_.push_back({o.pages.addr, len, self, writer_.bytes(),
                                              o.pages.addr, len, o.pages.header.hash});
                GHOST_TRY(writer_.pages(o.pages));
                stats_.memory_bytes += o.pages.header.length - sizeof o.pages.addr;
            }
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
    const export_options &opt_;
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
    const std::vector<page_range> *region_written_ = nullptr; // tracked since the parent
    size_t written_at_ = 0;

    // Write tracking (start_tracking).
    int track_fd_ = -1;
    uint64_t scan_id_ = 0;        // 0: the image is taken without tracking
    std::vector<vma> registered_; // the mappings tracked by this export's scan
    bool precopy_ = false;
    std::vector<page_span> precopy_spans_; // the pages records a pre-copy wrote, in order
    bool incremental_ = false;
    image_index parent_;
    std::map<uint64_t, std::vector<page_range>> written_; // mapping start -> pages written
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
    static const std::map<int, uint32_t> none;
    auto files =
        core::collect_files(pid_, internal, objects_, opt_.tree ? opt_.tree->shared_fds : none);
    if (!files) return files.err();
    files_ = std::move(*files);
    return {};
}

result<void> exporter::write_files() {
    for (const exported_file &f : files_) {
        GHOST_TRY(writer_.record(image::rec_file, &f.record, sizeof f.record, f.path, f.data));
        stats_.files++;
    }
    for (const exported_file &f : files_)
        for (const image::file_lock_record &l : f.locks)
            GHOST_TRY(writer_.record(image::rec_file_lock, &l, sizeof l));
    return {};
}

} // namespace

result<export_stats> export_process(const parked_process &proc, res::sink &out,
                                    const export_options &opt) {
    exporter e(proc, out, opt);
    return e.run();
}

result<export_stats> export_precopy(parked_process &proc, res::sink &out, image_index &index,
                                    const image_index *last_round, const std::string &name) {
    export_options opt;
    opt.track = true;
    opt.parent_index = last_round;
    opt.parent_name = name;
    exporter e(proc, out, opt);
    return e.run_precopy(proc, index);
}

} // namespace ghost::core
