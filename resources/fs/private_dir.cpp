// SPDX-License-Identifier: Apache-2.0
#include "resources/fs/private_dir.h"

#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <deque>
#include <vector>

namespace ghost::res {

namespace {

// Debian's user private group: named after this user, its primary group, no other member listed.
bool group_holds_only_us(gid_t gid) {
    std::vector<char> buf(16384);
    passwd pw{}, *pwp = nullptr;
    if (::getpwuid_r(::geteuid(), &pw, buf.data(), buf.size() / 2, &pwp) != 0 || !pwp ||
        pw.pw_gid != gid)
        return false;
    group gr{}, *grp = nullptr;
    if (::getgrgid_r(gid, &gr, buf.data() + buf.size() / 2, buf.size() / 2, &grp) != 0 || !grp ||
        std::strcmp(gr.gr_name, pw.pw_name) != 0)
        return false;
    for (char **m = gr.gr_mem; *m; m++)
        if (std::strcmp(*m, pw.pw_name) != 0) return false;
    return true;
}

// Empty if nobody but this user and root can change directory `path` (`sb`); else why not.
std::string who_else_writes(const struct stat &sb, const std::string &path, bool final) {
    char why[128];
    if (sb.st_uid != ::geteuid() && sb.st_uid != 0) {
        std::snprintf(why, sizeof why, " belongs to another user (uid %u)", (unsigned)sb.st_uid);
        return path + why;
    }
    mode_t w = sb.st_mode & (S_IWGRP | S_IWOTH);
    if ((w & S_IWGRP) && group_holds_only_us(sb.st_gid)) w &= ~S_IWGRP;
    // A sticky directory (/tmp) lets others add names, not rename or remove ours: fine on the way
    // to the image directory, not as the image directory.
    if (w && (final || !(sb.st_mode & S_ISVTX))) {
        std::snprintf(why, sizeof why, " is writable by other users (mode %04o)",
                      (unsigned)(sb.st_mode & 07777));
        return path + why;
    }
    return {};
}

std::string join(const std::string &dir, const std::string &name) {
    std::string path = dir; // (appended: GCC 12 warns falsely about "/" + name, its bug 105329)
    if (path != "/") path += '/';
    path += name;
    return path;
}

std::string parent_of(const std::string &path) {
    size_t slash = path.rfind('/');
    return slash == 0 || slash == std::string::npos ? "/" : path.substr(0, slash);
}

void push_components(std::deque<std::string> &todo, const std::string &path) {
    std::vector<std::string> parts;
    for (size_t i = 0; i < path.size();) {
        size_t j = path.find('/', i);
        if (j == std::string::npos) j = path.size();
        if (j > i) parts.push_back(path.substr(i, j - i));
        i = j + 1;
    }
    for (auto it = parts.rbegin(); it != parts.rend(); ++it)
        todo.push_front(*it);
}

class fd_holder {
  public:
    explicit fd_holder(int fd = -1) : fd_(fd) {}
    ~fd_holder() { reset(); }
    fd_holder(const fd_holder &) = delete;
    fd_holder &operator=(const fd_holder &) = delete;
    void reset(int fd = -1) {
        if (fd_ >= 0) ::close(fd_);
        fd_ = fd;
    }
    int get() const { return fd_; }
    int release() {
        int fd = fd_;
        fd_ = -1;
        return fd;
    }

  private:
    int fd_;
};

} // namespace

result<int> open_private_dir(const std::string &dir_arg, bool create) {
    std::string dir = dir_arg.empty() ? "." : dir_arg;
    if (dir[0] != '/') {
        char cwd[4096];
        if (!::getcwd(cwd, sizeof cwd)) return sys_error("cannot find the current directory");
        dir = join(cwd, dir);
    }
    const std::string refused = "refusing image directory " + dir + ": ";
    std::deque<std::string> todo;
    push_components(todo, dir);
    fd_holder cur(::open("/", O_PATH | O_DIRECTORY | O_CLOEXEC));
    std::string where = "/"; // cur's path, for messages
    struct stat sb;
    if (cur.get() < 0 || ::fstat(cur.get(), &sb) != 0) return sys_error("cannot open /");
    if (auto why = who_else_writes(sb, where, false); !why.empty()) return error{refused + why};
    int links = 0;
    while (!todo.empty()) {
        std::string name = todo.front();
        todo.pop_front();
        if (name == ".") continue;
        std::string path = name == ".." ? parent_of(where) : join(where, name);
        // O_PATH|O_NOFOLLOW: a symlink is opened itself, looked at before it is followed.
        int fd = ::openat(cur.get(), name.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0 && errno == ENOENT && create) {
            if (::mkdirat(cur.get(), name.c_str(), 0700) != 0 && errno != EEXIST)
                return sys_error("cannot create directory " + path);
            fd = ::openat(cur.get(), name.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC);
        }
        if (fd < 0) return sys_error("cannot open directory " + path);
        fd_holder next(fd);
        if (::fstat(fd, &sb) != 0) return sys_error("cannot look at " + path);
        if (S_ISLNK(sb.st_mode)) {
            if (sb.st_uid != ::geteuid() && sb.st_uid != 0)
                return error{refused + path + " is a symlink of another user"};
            if (++links > 40) return error{"cannot open directory " + dir + ": too many symlinks"};
            char target[4096];
            ssize_t n = ::readlinkat(fd, "", target, sizeof target - 1);
            if (n <= 0) return sys_error("cannot read symlink " + path);
            target[n] = 0;
            push_components(todo, target);
            if (target[0] == '/') {
                cur.reset(::open("/", O_PATH | O_DIRECTORY | O_CLOEXEC));
                where.assign(1, '/'); // (not = "/": GCC 12 bug 105651, a false -Wrestrict)
                if (cur.get() < 0) return sys_error("cannot open /");
            }
            continue;
        }
        if (!S_ISDIR(sb.st_mode)) return error{"cannot use " + path + ": not a directory"};
        if (auto why = who_else_writes(sb, path, false); !why.empty()) return error{refused + why};
        cur.reset(next.release());
        where = path;
    }
    if (::fstat(cur.get(), &sb) != 0) return sys_error("cannot look at " + where);
    if (auto why = who_else_writes(sb, where, true); !why.empty()) return error{refused + why};
    int fd = ::openat(cur.get(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return sys_error("cannot open directory " + dir);
    return fd;
}

} // namespace ghost::res
