// SPDX-License-Identifier: Apache-2.0
// Writes a byte stream to a descriptor through a few aligned staging buffers and a writer thread,
// so that producing the stream (copying a process's memory) and writing it overlap on two cores.
// With `direct` (a file opened O_DIRECT) the device reads the staging buffers itself; the last
// partial buffer is padded to the block size and the file cut back to the stream's length.
// Used by the fs resource (the memory resource maps its memfd and copies into it).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <thread>

#include "runtime/result.h"

namespace ghost::res {

class staged_writer {
  public:
    // `what` names the target in error messages ("image /x/image.ghost").
    staged_writer(int fd, bool direct, std::string what);
    ~staged_writer(); // stops the thread; does not close fd
    staged_writer(const staged_writer &) = delete;
    staged_writer &operator=(const staged_writer &) = delete;

    result<void> write(const void *data, size_t len);
    // Everything written so far is in the descriptor (not yet fsync'd); returns the stream length.
    result<uint64_t> finish();

  private:
    static constexpr size_t buf_size = 8 << 20;
    static constexpr size_t align = 4096;
    struct buffer {
        char *data = nullptr;
        size_t len = 0;
        bool queued = false;
    };

    result<void> take_buffer();
    result<void> submit();
    void writer_loop();
    result<void> write_at(const char *p, size_t len, uint64_t offset);

    int fd_;
    bool direct_;
    std::string what_;
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

} // namespace ghost::res
