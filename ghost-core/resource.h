// SPDX-License-Identifier: Apache-2.0
// Where an image goes and where it comes from: a byte stream, written once and read once (the seed
// paper's resource plug-ins). Export writes to a sink; import reads from a source. Implementations
// live in resources/<kind>/ and are listed by name in resources/registry.cpp.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "runtime/result.h"

namespace ghost::res {

class sink {
  public:
    virtual ~sink() = default;
    virtual result<void> write(const void *data, size_t len) = 0;
    // Makes the image durable and visible under its final name. Nothing is visible before.
    virtual result<void> commit() = 0;
    // Drops a partial image; the previous one (if any) is untouched. Idempotent.
    virtual void abort() noexcept = 0;
    virtual std::string describe() const = 0;
    // Called now and then by a writer that waits before its first write (a checkpointer standing
    // by for a quiescent process): keeps the way to the other side serviced, and fails once that
    // side is gone or has refused. A file has nothing to service.
    virtual result<void> idle() { return {}; }
};

class source {
  public:
    virtual ~source() = default;
    // Returns 0 at the end of the stream.
    virtual result<size_t> read(void *data, size_t len) = 0;
    // Up to `len` next bytes where the source already holds them, consumed as read() would
    // consume them and valid until the next call on the source; {nullptr, 0} at the end of the
    // stream, or when the source lends no memory (the caller reads instead). Saves a copy where
    // the bytes are already in memory (a stream's receive buffers).
    struct view {
        const char *data = nullptr;
        size_t len = 0;
    };
    virtual result<view> lend(size_t len) {
        (void)len;
        return view{};
    }
    // A descriptor positioned at the start of the image that the restorer can read directly, or -1.
    virtual int stream_fd() const = 0;
    virtual std::string describe() const = 0;
};

} // namespace ghost::res
