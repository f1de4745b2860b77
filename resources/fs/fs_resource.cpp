// SPDX-License-Identifier: Apache-2.0
#include "resources/fs/fs_resource.h"
#include "resources/staged_writer.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <memory>

namespace ghost::res {

namespace {

std::string parent_of(const std::string &path) {
    size_t slash = path.rfind('/');
    if (slash == std::string::npos) return ".";
    if (slash == 0) return "/";
    return path.substr(0, slash);
}

result<void> make_dirs(const std::string &dir) {
    if (dir.empty() || dir == "/" || dir == ".") return {};
    struct stat sb;
    if (::stat(dir.c_str(), &sb) == 0) {
        if (!S_ISDIR(sb.st_mode)) return error{dir + " is not a directory"};
        return {};
    }
    GHOST_TRY(make_dirs(parent_of(dir)));
    if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST)
        return sys_error("cannot create directory " + dir);
    return {};
}

// The temporary file is written through staging buffers by a second thread (staged_writer.h),
// with O_DIRECT where the filesystem allows it: no page cache copy, and the final fsync has
// little left to do.
class file_sink final : public sink {
  public:
    file_sink(std::string final_path, std::string tmp_path, int fd, bool direct)
        : final_(std::move(final_path)), tmp_(std::move(tmp_path)), fd_(fd),
          out_(std::make_unique<staged_writer>(fd, direct, "image " + final_)) {}
    ~file_sink() override { abort(); }

    result<void> write(const void *data, size_t len) override {
        if (!out_) return error{"image " + final_ + " was already closed"};
        return out_->write(data, len);
    }

    result<void> commit() override {
        if (!out_) return error{"image " + final_ + " was already closed"};
        auto length = out_->finish();
        if (!length) return length.err();
        out_.reset();
        if (::fsync(fd_) != 0) return sys_error("cannot flush image " + final_ + " to disk");
        int fd = fd_;
        fd_ = -1;
        if (::close(fd) != 0) return sys_error("cannot close image " + final_);
        if (::rename(tmp_.c_str(), final_.c_str()) != 0)
            return sys_error("cannot rename " + tmp_ + " to " + final_);
        tmp_.clear();
        int dir = ::open(parent_of(final_).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dir >= 0) {
            ::fsync(dir); // the rename itself must survive a crash
            ::close(dir);
        }
        return {};
    }

    void abort() noexcept override {
        out_.reset();
        if (fd_ >= 0) ::close(fd_);
        fd_ = -1;
        if (!tmp_.empty()) ::unlink(tmp_.c_str());
        tmp_.clear();
    }

    std::string describe() const override { return final_; }

  private:
    std::string final_, tmp_;
    int fd_;
    std::unique_ptr<staged_writer> out_;
};

class file_source final : public source {
  public:
    file_source(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
    ~file_source() override { ::close(fd_); }
    result<size_t> read(void *data, size_t len) override {
        for (;;) {
            ssize_t n = ::read(fd_, data, len);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) return sys_error("cannot read image " + path_);
            return (size_t)n;
        }
    }
    int stream_fd() const override { return fd_; }
    std::string describe() const override { return path_; }

  private:
    std::string path_;
    int fd_;
};

} // namespace

result<std::unique_ptr<sink>> create_file_sink(const std::string &final_path) {
    GHOST_TRY(make_dirs(parent_of(final_path)));
    std::string tmp = parent_of(final_path) + "/." + final_path.substr(final_path.rfind('/') + 1) +
                      ".tmp-" + std::to_string(::getpid());
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_DIRECT, 0600);
    bool direct = fd >= 0;
    if (fd < 0 && errno == EINVAL) // the filesystem has no direct I/O (tmpfs before 6.6, some FUSE)
        fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return sys_error("cannot create image " + tmp);
    return std::unique_ptr<sink>(new file_sink(final_path, tmp, fd, direct));
}

result<std::unique_ptr<source>> open_file_source(const std::string &path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return sys_error("cannot open image " + path);
    struct stat sb;
    if (::fstat(fd, &sb) == 0 && !S_ISREG(sb.st_mode)) {
        ::close(fd);
        return error{path + " is not an image file"};
    }
    return std::unique_ptr<source>(new file_source(path, fd));
}

} // namespace ghost::res
