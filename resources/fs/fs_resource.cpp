// SPDX-License-Identifier: Apache-2.0
#include "resources/fs/fs_resource.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

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

// Writes go through a few aligned staging buffers to a writer thread, so that copying memory (the
// exporter) and writing the disk overlap on two cores. The file is opened with O_DIRECT where the
// filesystem allows it: the disk reads the staging buffers itself, there is no page cache copy and
// the final fsync has little left to do. The last partial buffer is padded to the block size for
// O_DIRECT and the file truncated back to the stream's length.
class file_sink final : public sink {
  public:
    file_sink(std::string final_path, std::string tmp_path, int fd, bool direct)
        : final_(std::move(final_path)), tmp_(std::move(tmp_path)), fd_(fd), direct_(direct) {
        for (auto &b : bufs_) b.data = (char *)std::aligned_alloc(align, buf_size);
        writer_ = std::thread([this] { writer_loop(); });
    }
    ~file_sink() override {
        stop_writer();
        abort();
        for (auto &b : bufs_) std::free(b.data);
    }

    result<void> write(const void *data, size_t len) override {
        const char *p = (const char *)data;
        while (len) {
            if (!cur_) GHOST_TRY(take_buffer());
            size_t n = std::min(len, buf_size - cur_->len);
            std::memcpy(cur_->data + cur_->len, p, n);
            cur_->len += n;
            p += n;
            len -= n;
            if (cur_->len == buf_size) GHOST_TRY(submit());
        }
        return {};
    }

    result<void> commit() override {
        if (fd_ < 0) return error{"image " + final_ + " was already closed"};
        if (cur_ && cur_->len) GHOST_TRY(submit());
        GHOST_TRY(drain());
        if (direct_ && ::ftruncate(fd_, (off_t)length_) != 0)
            return sys_error("cannot set the length of image " + final_);
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
        stop_writer();
        if (fd_ >= 0) ::close(fd_);
        fd_ = -1;
        if (!tmp_.empty()) ::unlink(tmp_.c_str());
        tmp_.clear();
    }

    std::string describe() const override { return final_; }

  private:
    static constexpr size_t buf_size = 8 << 20;
    static constexpr size_t align = 4096;
    struct buffer {
        char *data = nullptr;
        size_t len = 0;
        bool queued = false;
    };

    result<void> take_buffer() {
        std::unique_lock lock(mu_);
        cv_.wait(lock, [&] { return failed_ || std::any_of(std::begin(bufs_), std::end(bufs_), [](const buffer &b) { return !b.queued; }); });
        if (failed_) return failure_;
        for (auto &b : bufs_)
            if (!b.queued) {
                cur_ = &b;
                cur_->len = 0;
                return {};
            }
        return error{"no staging buffer"};
    }

    result<void> submit() {
        std::lock_guard lock(mu_);
        if (failed_) return failure_;
        cur_->queued = true;
        queue_.push_back(cur_);
        length_ += cur_->len;
        cur_ = nullptr;
        cv_.notify_all();
        return {};
    }

    result<void> drain() {
        std::unique_lock lock(mu_);
        cv_.wait(lock, [&] { return failed_ || queue_.empty(); });
        if (failed_) return failure_;
        return {};
    }

    void stop_writer() {
        if (!writer_.joinable()) return;
        {
            std::lock_guard lock(mu_);
            stopping_ = true;
            cv_.notify_all();
        }
        writer_.join();
    }

    void writer_loop() {
        off_t offset = 0;
        for (;;) {
            buffer *b;
            {
                std::unique_lock lock(mu_);
                cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
                if (queue_.empty()) return;
                b = queue_.front();
            }
            size_t len = b->len;
            if (direct_ && len % align) { // only the last buffer: pad, truncated at commit
                size_t padded = (len + align - 1) / align * align;
                std::memset(b->data + len, 0, padded - len);
                len = padded;
            }
            auto r = write_at(b->data, len, offset);
            offset += (off_t)len;
            std::lock_guard lock(mu_);
            queue_.pop_front();
            b->queued = false;
            if (!r) {
                failed_ = true;
                failure_ = r.err();
            }
            cv_.notify_all();
        }
    }

    result<void> write_at(const char *p, size_t len, off_t offset) {
        while (len) {
            ssize_t n = ::pwrite(fd_, p, len, offset);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) return sys_error("cannot write image " + final_);
            if (n == 0) return error{"cannot write image " + final_ + ": no progress"};
            p += n;
            offset += n;
            len -= (size_t)n;
        }
        return {};
    }

    std::string final_, tmp_;
    int fd_;
    bool direct_;
    buffer bufs_[3];
    buffer *cur_ = nullptr;
    uint64_t length_ = 0;
    std::mutex mu_;
    std::condition_variable cv_;
    std::deque<buffer *> queue_;
    bool stopping_ = false, failed_ = false;
    error failure_;
    std::thread writer_;
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
