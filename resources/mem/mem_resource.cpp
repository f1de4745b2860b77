// SPDX-License-Identifier: Apache-2.0
#include "resources/mem/mem_resource.h"
#include "resources/staged_writer.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

namespace ghost::res {

namespace {

class memfd_source final : public source {
  public:
    explicit memfd_source(int fd) : fd_(fd) {}
    ~memfd_source() override { ::close(fd_); }
    result<size_t> read(void *data, size_t len) override {
        ssize_t n = ::read(fd_, data, len);
        if (n < 0) return sys_error("cannot read the memory image");
        return (size_t)n;
    }
    int stream_fd() const override { return fd_; }
    std::string describe() const override { return "memory"; }

  private:
    int fd_;
};

class memfd_sink final : public mem_sink {
  public:
    explicit memfd_sink(int fd) : fd_(fd), out_(std::make_unique<staged_writer>(fd, false, "the memory image")) {}
    ~memfd_sink() override { abort(); }
    result<void> write(const void *data, size_t len) override {
        if (!out_) return error{"the memory image was closed"};
        return out_->write(data, len);
    }
    result<void> commit() override {
        if (!out_) return error{"the memory image was closed"};
        auto length = out_->finish();
        if (!length) return length.err();
        out_.reset();
        committed_ = true;
        return {};
    }
    void abort() noexcept override {
        out_.reset();
        if (fd_ >= 0) ::close(fd_);
        fd_ = -1;
    }
    std::string describe() const override { return "memory"; }
    result<std::unique_ptr<source>> open_source() override {
        if (!committed_ || fd_ < 0) return error{"the memory image is not complete"};
        int fd = ::open(("/proc/self/fd/" + std::to_string(fd_)).c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0) return sys_error("cannot reopen the memory image");
        return std::unique_ptr<source>(new memfd_source(fd));
    }

  private:
    int fd_;
    std::unique_ptr<staged_writer> out_;
    bool committed_ = false;
};

} // namespace

result<std::unique_ptr<mem_sink>> mem_sink::create() {
    int fd = ::memfd_create("ghost-image", MFD_CLOEXEC);
    if (fd < 0) return sys_error("cannot create a memory image");
    return std::unique_ptr<mem_sink>(new memfd_sink(fd));
}

} // namespace ghost::res
