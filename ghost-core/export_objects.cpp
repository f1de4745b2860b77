// SPDX-License-Identifier: Apache-2.0
// Memory objects (memfds, deleted files) found through descriptors and shared mappings, and
// written with their contents. Contents are read through an open file description of our own
// (a reopen of /proc/PID/fd/N or /proc/PID/map_files/...), never the process's: seeking for data
// and holes must not move its offsets.
#include "ghost-core/export_objects.h"

#include <fcntl.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>

namespace ghost::core {

namespace {

constexpr long tmpfs_magic = 0x01021994;
constexpr long hugetlbfs_magic = 0x958458f6;
constexpr size_t page = 4096;
constexpr std::string_view deleted_suffix = " (deleted)";

std::string without_deleted(const std::string &link) {
    if (link.size() >= deleted_suffix.size() &&
        link.compare(link.size() - deleted_suffix.size(), deleted_suffix.size(), deleted_suffix) ==
            0)
        return link.substr(0, link.size() - deleted_suffix.size());
    return link;
}

bool all_zero(const char *p, size_t len) {
    for (size_t i = 0; i < len; i++)
        if (p[i]) return false;
    return true;
}

} // namespace

object_table::~object_table() {
    for (object &o : objects_)
        if (o.fd >= 0) ::close(o.fd);
}

result<uint64_t> object_table::from_descriptor(int fd, const struct stat &sb,
                                               const std::string &link) {
    for (const object &o : objects_)
        if (o.dev == sb.st_dev && o.ino == sb.st_ino) return o.rec.id;
    std::string path = "/proc/" + std::to_string(pid_) + "/fd/" + std::to_string(fd);
    int own = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (own < 0)
        return error{std::string("cannot open it to read its contents: ") + std::strerror(errno)};
    return add(own, sb, link);
}

result<uint64_t> object_table::from_mapping(const vma &v, bool make) {
    if (v.path == "/dev/zero (deleted)") return uint64_t{0}; // shared anonymous memory
    char name[64];
    std::snprintf(name, sizeof name, "/%lx-%lx", (unsigned long)v.start, (unsigned long)v.end);
    std::string path = "/proc/" + std::to_string(pid_) + "/map_files" + name;
    int own = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (own < 0) return uint64_t{0}; // (map_files needs CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE)
    struct stat sb;
    if (::fstat(own, &sb) != 0) {
        ::close(own);
        return uint64_t{0};
    }
    for (const object &o : objects_)
        if (o.dev == sb.st_dev && o.ino == sb.st_ino) {
            ::close(own);
            return o.rec.id;
        }
    if (!make) {
        ::close(own);
        return uint64_t{0};
    }
    auto id = add(own, sb, v.path);
    if (!id)
        return error{"pid " + std::to_string(pid_) + " maps " + v.path + " shared at " +
                     std::string(name + 1) + ": " + id.err().message};
    return id;
}

// Takes `fd` (closed on failure).
result<uint64_t> object_table::add(int fd, const struct stat &sb, const std::string &link) {
    struct closer {
        int &fd;
        ~closer() {
            if (fd >= 0) ::close(fd);
        }
    } guard{fd};
    std::string path = without_deleted(link);
    struct statfs fs;
    if (!S_ISREG(sb.st_mode) || path.empty() || path[0] != '/')
        return error{"a deleted file that is not a regular file cannot be restored"};
    if (::fstatfs(fd, &fs) != 0)
        return error{std::string("cannot statfs it: ") + std::strerror(errno)};
    if (fs.f_type == hugetlbfs_magic) return error{"a hugetlbfs file or memfd cannot be restored"};
    if (sb.st_nlink > 0)
        return error{
            "the file is still linked under another name: it cannot be recreated as it is"};
    if ((uint64_t)sb.st_size > image::max_object_size)
        return error{"its " + std::to_string(sb.st_size) + " bytes exceed the " +
                     std::to_string(image::max_object_size >> 20) +
                     " MiB an image carries for a memfd or deleted file"};
    object o;
    bool memfd = path.rfind("/memfd:", 0) == 0 && fs.f_type == tmpfs_magic;
    o.rec.kind = memfd ? image::object_memfd : image::object_deleted_file;
    o.name = memfd ? path.substr(7) : path;
    if (memfd) {
        int seals = ::fcntl(fd, F_GET_SEALS);
        if (seals < 0)
            return error{std::string("cannot read the memfd's seals: ") + std::strerror(errno)};
        o.rec.seals = (uint32_t)seals;
        if (o.rec.seals & ~image::object_seals_known)
            return error{"the memfd has seals this ghost does not know"};
    } else {
        std::string dir = path.substr(0, path.rfind('/'));
        if (dir.empty()) dir = "/";
        struct stat ds;
        if (::stat(dir.c_str(), &ds) != 0 || !S_ISDIR(ds.st_mode))
            return error{"the file was deleted and its directory " + dir +
                         " is gone: it cannot be recreated"};
    }
    if (o.name.size() >= 4096) return error{"its name is too long"};
    o.rec.id = objects_.size() + 1;
    o.rec.size = (uint64_t)sb.st_size;
    o.rec.mode = sb.st_mode & 07777;
    o.rec.name_len = (uint32_t)o.name.size();
    o.dev = sb.st_dev, o.ino = sb.st_ino;
    if (objects_.size() == 64)
        return error{"the process holds more than 64 memfds and deleted files"};
    o.fd = fd;
    fd = -1;
    objects_.push_back(std::move(o));
    return objects_.back().rec.id;
}

result<void> write_nonzero_runs(image_writer &out, image::record_type kind, int fd, uint64_t from,
                                uint64_t to, const std::string &what) {
    constexpr size_t chunk = 1 << 20;
    std::unique_ptr<char[]> buf(new char[chunk]);
    for (uint64_t at = from; at < to;) {
        size_t n = (size_t)std::min<uint64_t>(chunk, to - at), got = 0;
        while (got < n) {
            ssize_t r = ::pread(fd, buf.get() + got, n - got, (off_t)(at + got));
            if (r < 0 && errno == EINTR) continue;
            if (r < 0) return sys_error("cannot read " + what);
            if (r == 0) return error{"cannot read " + what + " (it shrank)"};
            got += (size_t)r;
        }
        for (size_t i = 0; i < n;) {
            size_t len = std::min(page, n - i);
            if (all_zero(buf.get() + i, len)) {
                i += len;
                continue;
            }
            size_t e = i + len;
            while (e < n && !all_zero(buf.get() + e, std::min(page, n - e)))
                e += std::min(page, n - e);
            uint64_t offset = at + i;
            GHOST_TRY(
                out.record(kind, &offset, sizeof offset, std::string_view(buf.get() + i, e - i)));
            i = e;
        }
        at += n;
    }
    return {};
}

// Only the data ranges (SEEK_DATA/SEEK_HOLE), without their zero pages.
result<void> object_table::write(image_writer &out) const {
    for (const object &o : objects_) {
        GHOST_TRY(out.record(image::rec_object, &o.rec, sizeof o.rec, o.name));
        const off_t size = (off_t)o.rec.size;
        for (off_t pos = 0; pos < size;) {
            off_t data = ::lseek(o.fd, pos, SEEK_DATA);
            if (data < 0 && errno == ENXIO) break;
            if (data < 0) data = pos; // no SEEK_DATA: all of it
            off_t hole = ::lseek(o.fd, data, SEEK_HOLE);
            if (hole < 0 || hole > size) hole = size;
            GHOST_TRY(write_nonzero_runs(out, image::rec_object_data, o.fd, (uint64_t)data,
                                         (uint64_t)hole, "the contents of " + o.name));
            pos = hole;
        }
    }
    return {};
}

} // namespace ghost::core
