// SPDX-License-Identifier: Apache-2.0
#include "ghost-core/image_writer.h"

namespace ghost::core {

image_writer::image_writer(res::sink &out) : out_(out) {}

image_writer::~image_writer() = default;

result<void> image_writer::emit(image::record_type type, const void *a, size_t alen, const void *b,
                                size_t blen, const void *c, size_t clen) {
    XXH3_state_t h;
    XXH3_64bits_reset_withSeed(&h, type);
    XXH3_64bits_update(&h, a, alen);
    if (blen) XXH3_64bits_update(&h, b, blen);
    if (clen) XXH3_64bits_update(&h, c, clen);
    image::record_header rh{image::record_magic, type, image::record_version, alen + blen + clen,
                            XXH3_64bits_digest(&h)};
    GHOST_TRY(out_.write(&rh, sizeof rh));
    GHOST_TRY(out_.write(a, alen));
    if (blen) GHOST_TRY(out_.write(b, blen));
    if (clen) GHOST_TRY(out_.write(c, clen));
    hash_sum_ += rh.hash;
    records_++;
    payload_ += rh.length;
    bytes_ += sizeof rh + rh.length;
    return {};
}

result<void> image_writer::record(image::record_type type, const void *fixed, size_t fixed_len,
                                  std::string_view tail, std::string_view tail2) {
    return emit(type, fixed, fixed_len, tail.data(), tail.size(), tail2.data(), tail2.size());
}

result<void> image_writer::pages(uint64_t addr, const void *data, size_t len) {
    return emit(image::rec_pages, &addr, sizeof addr, data, len, nullptr, 0);
}

result<void> image_writer::finish() {
    image::trailer_record t{records_, payload_, hash_sum_};
    return emit(image::rec_trailer, &t, sizeof t, nullptr, 0, nullptr, 0);
}

} // namespace ghost::core
