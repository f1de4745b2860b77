// SPDX-License-Identifier: Apache-2.0
#include "resources/fs/fs_resource.h"
#include "resources/fs/atomic_file.h"
#include "resources/fs/private_dir.h"
#include "resources/staged_writer.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <memory>

namespace ghost::res {

namespace {

// The image is written to a file nobody else can name or redirect (atomic_file.h) in a directory
// nobody else can change (private_dir.h), through staging buffers by a second thread
// (staged_writer.h), with O_DIRECT where the filesystem allows it: no page cache copy, and the
// final fsync has little left to do.
class file_sink final : public sink {
  public:
    file_sink(std::string final_path, int dirfd, atomic_file file)
        : final_(std::move(final_path)), dirfd_(dirfd), file_(std::move(file)),
          out_(std::make_unique<staged_writer>(file_.fd(), file_.direct(), "image " + final_)) {}
    ~file_sink() override {
        abort();
        ::close(dirfd_);
    }

    result<void> write(const void *data, size_t len) override {
        if (!out_) return error{"image " + final_ + " was already closed"};
        return out_->write(data, len);
    }

    result<void> commit() override {
        if (!out_) return error{"image " + final_ + " was already closed"};
        auto length = out_->finish();
        if (!length) return length.err();
        out_.reset();
        if (::fsync(file_.fd()) != 0) return sys_error("cannot flush image " + final_ + " to disk");
        GHOST_TRY(file_.publish());
        GHOST_TRY(file_.close());
        ::fsync(dirfd_); // the new name itself must survive a crash
        return {};
    }

    void abort() noexcept override {
        out_.reset();
        file_.discard();
    }

    std::string describe() const override { return final_; }

  private:
    std::string final_;
    int dirfd_;
    atomic_file file_;
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

result<std::unique_ptr<sink>> create_file_sink(const std::string &final_path, bool make_dirs) {
    size_t slash = final_path.rfind('/');
    std::string dir = slash == std::string::npos ? "."
                      : slash == 0               ? "/"
                                                 : final_path.substr(0, slash);
    std::string name = final_path.substr(slash == std::string::npos ? 0 : slash + 1);
    auto dirfd = open_private_dir(dir, make_dirs);
    if (!dirfd) return dirfd.err();
    remove_stale_temporaries(*dirfd, name);
    auto file = atomic_file::create(*dirfd, name, "image " + final_path, 0600, true);
    if (!file) {
        ::close(*dirfd);
        return file.err();
    }
    return std::unique_ptr<sink>(new file_sink(final_path, *dirfd, std::move(*file)));
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
