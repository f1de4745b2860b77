// SPDX-License-Identifier: Apache-2.0
#include "resources/staged_writer.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

namespace ghost::res {

staged_writer::staged_writer(int fd, bool direct, std::string what)
    : fd_(fd), direct_(direct), what_(std::move(what)) {
    for (auto &b : bufs_)
        b.data = (char *)std::aligned_alloc(align, buf_size);
    writer_ = std::thread([this] { writer_loop(); });
}

staged_writer::~staged_writer() {
    {
        std::lock_guard lock(mu_);
        stopping_ = true;
        cv_.notify_all();
    }
    writer_.join();
    for (auto &b : bufs_)
        std::free(b.data);
}

result<void> staged_writer::write(const void *data, size_t len) {
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

result<uint64_t> staged_writer::finish() {
    if (cur_ && cur_->len) GHOST_TRY(submit());
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return failed_ || queue_.empty(); });
    if (failed_) return failure_;
    if (direct_ && ::ftruncate(fd_, (off_t)length_) != 0)
        return sys_error("cannot set the length of " + what_);
    return length_;
}

result<void> staged_writer::take_buffer() {
    std::unique_lock lock(mu_);
    auto free_buffer = [&]() -> buffer * {
        for (auto &b : bufs_)
            if (!b.queued) return &b;
        return nullptr;
    };
    cv_.wait(lock, [&] { return failed_ || free_buffer(); });
    if (failed_) return failure_;
    cur_ = free_buffer();
    cur_->len = 0;
    return {};
}

result<void> staged_writer::submit() {
    std::lock_guard lock(mu_);
    if (failed_) return failure_;
    cur_->queued = true;
    queue_.push_back(cur_);
    length_ += cur_->len;
    cur_ = nullptr;
    cv_.notify_all();
    return {};
}

void staged_writer::writer_loop() {
    uint64_t offset = 0;
    for (;;) {
        buffer *b;
        {
            std::unique_lock lock(mu_);
            cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
            if (queue_.empty()) return;
            b = queue_.front();
        }
        size_t len = b->len;
        if (direct_ && len % align) { // only the last buffer: padded, cut back in finish()
            size_t padded = (len + align - 1) / align * align;
            std::memset(b->data + len, 0, padded - len);
            len = padded;
        }
        auto r = write_at(b->data, len, offset);
        offset += len;
        std::lock_guard lock(mu_);
        queue_.pop_front();
        b->queued = false;
        if (!r && !failed_) {
            failed_ = true;
            failure_ = r.err();
        }
        cv_.notify_all();
    }
}

result<void> staged_writer::write_at(const char *p, size_t len, uint64_t offset) {
    while (len) {
        ssize_t n = ::pwrite(fd_, p, len, (off_t)offset);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return sys_error("cannot write " + what_);
        if (n == 0) return error{"cannot write " + what_ + ": no progress"};
        p += n;
        offset += (uint64_t)n;
        len -= (size_t)n;
    }
    return {};
}

} // namespace ghost::res
