// SPDX-License-Identifier: Apache-2.0
#include "resources/fs/atomic_file.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "runtime/control.h"

namespace ghost::res {

namespace {

std::string host_name() {
    char h[256] = {};
    if (::gethostname(h, sizeof h - 1) != 0 || !h[0]) return "localhost";
    return h;
}

// ".<name>.tmp-<pid>-<random>@<host>". Created O_EXCL (or linked, which never replaces): a name
// somebody guessed and planted only costs another try.
std::string temporary_name(const std::string &name) {
    static std::atomic<uint64_t> counter{0};
    uint64_t r = 0;
    if (::getrandom(&r, sizeof r, GRND_NONBLOCK) != (ssize_t)sizeof r) {
        timespec ts{};
        ::clock_gettime(CLOCK_MONOTONIC, &ts);
        r = (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ull ^ counter++;
    }
    char buf[64];
    std::snprintf(buf, sizeof buf, ".tmp-%d-%016llx@", (int)::getpid(), (unsigned long long)r);
    return "." + name + buf + host_name();
}

// Gives the unnamed file `fd` the name `name` in `dirfd`; never replaces an existing name (EEXIST).
int link_unnamed(int fd, int dirfd, const char *name) {
    if (::linkat(fd, "", dirfd, name, AT_EMPTY_PATH) == 0) return 0;
    if (errno != ENOENT) return -1; // ENOENT: AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH
    char proc[64];
    std::snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
    return ::linkat(AT_FDCWD, proc, dirfd, name, AT_SYMLINK_FOLLOW);
}

constexpr int name_attempts = 16;

} // namespace

result<atomic_file> atomic_file::create(int dirfd, const std::string &name, const std::string &what,
                                        mode_t mode, bool direct) {
    if (name.empty() || name.find('/') != std::string::npos || name == "." || name == "..")
        return error{"cannot create " + what + ": not a file name"};
    // O_DIRECT is asked for afterwards (fcntl): an open that creates the file and then fails for
    // O_DIRECT alone would leave the file behind.
    auto try_direct = [&](int fd) {
        int fl = ::fcntl(fd, F_GETFL);
        return direct && fl >= 0 && ::fcntl(fd, F_SETFL, fl | O_DIRECT) == 0;
    };
    // An unnamed file needs /proc to be linked later (or CAP_DAC_READ_SEARCH): without it, none.
    if (::access("/proc/self/fd", X_OK) == 0) {
        int fd = ::openat(dirfd, ".", O_TMPFILE | O_WRONLY | O_CLOEXEC, mode);
        if (fd >= 0) return atomic_file(dirfd, fd, name, "", what, try_direct(fd));
        // Else the filesystem has no unnamed files (EOPNOTSUPP, EISDIR on old kernels): a name.
    }
    for (int attempt = 0; attempt < name_attempts; attempt++) {
        std::string tmp = temporary_name(name);
        int fd = ::openat(dirfd, tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                          mode);
        if (fd >= 0) return atomic_file(dirfd, fd, name, tmp, what, try_direct(fd));
        if (errno != EEXIST) return sys_error("cannot create " + what + " (as " + tmp + ")");
    }
    return error{"cannot create " + what + ": every temporary name tried exists"};
}

atomic_file::atomic_file(atomic_file &&other) noexcept
    : dirfd_(other.dirfd_), fd_(other.fd_), name_(std::move(other.name_)),
      tmp_(std::move(other.tmp_)), what_(std::move(other.what_)), direct_(other.direct_),
      published_(other.published_) {
    other.fd_ = -1;
    other.tmp_.clear();
}

atomic_file::~atomic_file() {
    discard();
}

result<void> atomic_file::publish() {
    if (fd_ < 0 || published_) return error{what_ + " was already closed"};
    if (tmp_.empty()) {
        // Straight to the final name when there is none yet: no temporary name ever exists.
        if (link_unnamed(fd_, dirfd_, name_.c_str()) == 0) {
            published_ = true;
            return {};
        }
        if (errno != EEXIST) return sys_error("cannot link " + what_ + " into its directory");
        for (int attempt = 0; attempt < name_attempts && tmp_.empty(); attempt++) {
            std::string tmp = temporary_name(name_);
            if (link_unnamed(fd_, dirfd_, tmp.c_str()) == 0)
                tmp_ = tmp;
            else if (errno != EEXIST)
                return sys_error("cannot link " + what_ + " into its directory as " + tmp);
        }
        if (tmp_.empty()) return error{"cannot link " + what_ + ": every temporary name exists"};
    }
    if (::renameat(dirfd_, tmp_.c_str(), dirfd_, name_.c_str()) != 0)
        return sys_error("cannot rename " + tmp_ + " to " + what_);
    tmp_.clear();
    published_ = true;
    return {};
}

result<void> atomic_file::close() {
    int fd = fd_;
    fd_ = -1;
    if (fd >= 0 && ::close(fd) != 0) return sys_error("cannot close " + what_);
    return {};
}

void atomic_file::discard() noexcept {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    if (!tmp_.empty()) ::unlinkat(dirfd_, tmp_.c_str(), 0);
    tmp_.clear();
}

void remove_stale_temporaries(int dirfd, const std::string &name) {
    int fd = ::openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return;
    DIR *d = ::fdopendir(fd);
    if (!d) {
        ::close(fd);
        return;
    }
    const std::string prefix = "." + name + ".tmp-";
    const std::string host = host_name();
    while (dirent *e = ::readdir(d)) {
        const char *n = e->d_name;
        if (std::strncmp(n, prefix.c_str(), prefix.size()) != 0) continue;
        const char *digits = n + prefix.size();
        if (!std::isdigit((unsigned char)*digits)) continue;
        char *end = nullptr;
        long pid = std::strtol(digits, &end, 10);
        if (pid <= 0 || pid > INT_MAX) continue;
        // Earlier versions wrote ".<name>.tmp-<pid>"; a writer on another host sharing the
        // directory is not ours to judge.
        const char *at = std::strchr(end, '@');
        bool this_host = *end == 0 || (*end == '-' && at && host == at + 1);
        if (!this_host || !control::process_gone((int)pid)) continue;
        struct stat sb;
        if (::fstatat(dirfd, n, &sb, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(sb.st_mode))
            ::unlinkat(dirfd, n, 0);
    }
    ::closedir(d);
}

result<void> replace_file(const std::string &path, const std::string &contents) {
    size_t slash = path.rfind('/');
    std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
    std::string name = slash == std::string::npos ? path : path.substr(slash + 1);
    int dirfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dirfd < 0) return sys_error("cannot open directory " + dir);
    result<void> r = [&]() -> result<void> {
        remove_stale_temporaries(dirfd, name);
        auto f = atomic_file::create(dirfd, name, path, 0644, false);
        if (!f) return f.err();
        for (size_t done = 0; done < contents.size();) {
            ssize_t n = ::write(f->fd(), contents.data() + done, contents.size() - done);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) return sys_error("cannot write " + path);
            done += (size_t)n;
        }
        GHOST_TRY(f->publish());
        return f->close();
    }();
    ::close(dirfd);
    return r;
}

} // namespace ghost::res
