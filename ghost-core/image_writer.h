// SPDX-License-Identifier: Apache-2.0
// Frames records onto a sink: header, hash, and the running count and hash sum the trailer seals.
#pragma once

#include <cstdint>
#include <string_view>

#include "ghost-core/image_format.h"
#include "ghost-core/resource.h"

namespace ghost::core {

class image_writer {
  public:
    explicit image_writer(res::sink &out);
    ~image_writer();
    image_writer(const image_writer &) = delete;
    image_writer &operator=(const image_writer &) = delete;

    // A record whose payload is `fixed` followed by `tail` (a path, pipe data ...).
    result<void> record(image::record_type type, const void *fixed, size_t fixed_len,
                        std::string_view tail = {}, std::string_view tail2 = {});
    // A pages record for [addr, addr + len). len is a multiple of the page size.
    result<void> pages(uint64_t addr, const void *data, size_t len);
    // The same in two steps, so that several threads can hash while one writes in stream order:
    // prepare() is pure and thread-safe; the data must stay valid until the record is written.
    struct prepared_pages {
        image::record_header header;
        uint64_t addr;
        const void *data;
    };
    static prepared_pages prepare_pages(uint64_t addr, const void *data, size_t len);
    result<void> pages(const prepared_pages &p);
    result<void> finish();
    uint64_t bytes() const { return bytes_; }
    uint64_t hash_sum() const { return hash_sum_; } // before finish(): what the trailer seals

  private:
    result<void> emit(const image::record_header &rh, const void *a, size_t alen, const void *b,
                      size_t blen, const void *c, size_t clen);
    result<void> emit(image::record_type type, const void *a, size_t alen, const void *b,
                      size_t blen, const void *c, size_t clen);
    res::sink &out_;
    uint64_t hash_sum_ = 0;
    uint64_t records_ = 0, payload_ = 0, bytes_ = 0;
};

} // namespace ghost::core
