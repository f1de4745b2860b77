// SPDX-License-Identifier: Apache-2.0
// What /proc tells about another process: its mappings, page presence, descriptors, mm fields.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "ghost-core/image_format.h"
#include "runtime/result.h"

namespace ghost::core {

struct vma {
    uint64_t start = 0, end = 0;
    bool read = false, write = false, exec = false, shared = false;
    uint64_t offset = 0;
    uint64_t inode = 0;
    uint32_t advice = 0;  // image::region_advice bits from VmFlags (read_maps)
    bool uffd_wp = false; // registered for userfaultfd write-protection (VmFlags "uw")
    std::string path;     // "" for anonymous, "[heap]", "[stack]", "/usr/lib/... (deleted)" ...
};

// The mappings of a process, from /proc/<pid>/smaps (maps plus each mapping's VmFlags).
result<std::vector<vma>> read_maps(pid_t pid);
// VmFlags' two-letter names as image::region_advice bits.
uint32_t advice_from_vm_flags(const std::string &flags);
// Ranges of guard pages (MADV_GUARD_INSTALL) in [start, end): PAGEMAP_SCAN; none on kernels
// without guard pages.
result<std::vector<std::pair<uint64_t, uint64_t>>> guard_ranges(pid_t pid, uint64_t start,
                                                                uint64_t end);

// /proc/<pid>/stat fields 26-28 and 45-51 (start_code ... env_end); brk comes from the agent.
result<image::mm_fields> read_mm_fields(pid_t pid);

// /proc/<pid>/auxv as 64-bit words, ending with AT_NULL.
result<std::vector<uint64_t>> read_auxv(pid_t pid);

// The credentials /proc/<pid>/status shows (Uid, Gid, Groups, Cap*, NoNewPrivs); group_count is
// groups->size().
result<image::credentials_record> read_credentials(pid_t pid, std::vector<uint32_t> &groups);

result<std::string> read_link(const std::string &path);
result<std::string> read_text(const std::string &path);
// Resident memory of a process (smaps_rollup "Rss"): an upper bound of the page data of its image,
// read while it still runs, to size a memory image ahead.
result<uint64_t> resident_bytes(pid_t pid);

// A file lock as fdinfo's "lock:" lines show it: flock and OFD locks of this open file
// description, POSIX record locks of this process on the file.
struct fd_lock {
    std::string kind;   // POSIX, OFDLCK, FLOCK, or what else the kernel shows (LEASE, DELEG...)
    std::string access; // READ, WRITE...
    std::string file;   // "MAJ:MIN:INODE"
    int64_t start = 0;
    int64_t end = -1; // the last byte; -1: to the end of the file ("EOF")
};

struct fd_info {
    int fd = -1;
    int64_t pos = 0;
    int flags = 0; // octal "flags:" field; O_CLOEXEC included as the kernel reports it
    std::vector<fd_lock> locks;
    std::string text; // the whole of it: the lines of its kind (eventfd, timerfd, epoll ...)
};
result<fd_info> read_fdinfo(pid_t pid, int fd);
result<std::vector<int>> list_fds(pid_t pid);
// The numeric entries of a directory (/proc/<pid>/fd, /proc/<pid>/task), sorted.
result<std::vector<int>> list_dir_numbers(const std::string &path);

// Page presence from /proc/<pid>/pagemap: one 64-bit entry per page of [start, end).
class pagemap {
  public:
    static result<pagemap> open(pid_t pid);
    pagemap(pagemap &&other) noexcept : fd_(other.fd_) { other.fd_ = -1; }
    ~pagemap();
    result<void> read(uint64_t start, uint64_t end, std::vector<uint64_t> &entries) const;

  private:
    explicit pagemap(int fd) : fd_(fd) {}
    int fd_;
};

} // namespace ghost::core
