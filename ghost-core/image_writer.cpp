// SPDX-License-Identifier: Apache-2.0
#include "ghost-core/image_writer.h"
#include "ghost-core/record_hash.h"

namespace ghost::core {

image_writer::image_writer(res::sink &out) : out_(out) {}

image_writer::~image_writer() = default;

result<void> image_writer::emit(image::record_type type, const void *a, size_t alen, const void *b,
                                size_t blen, const void *c, size_t clen) {
    image::record_hasher h(type);
    h.update(a, alen);
    h.update(b, blen);
    h.update(c, clen);
    image::record_header rh{image::record_magic, type, image::record_version, alen + blen + clen,
                            h.digest()};
    return emit(rh, a, alen, b, blen, c, clen);
}

result<void> image_writer::emit(const image::record_header &rh, const void *a, size_t alen,
                                const void *b, size_t blen, const void *c, size_t clen) {
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
    return pages(prepare_pages(addr, data, len));
}

image_writer::prepared_pages image_writer::prepare_pages(uint64_t addr, const void *data,
                                                         size_t len) {
    image::record_hasher h(image::rec_pages);
    h.update(&addr, sizeof addr);
    h.update(data, len);
    return {{image::record_magic, image::rec_pages, image::record_version, sizeof addr + len,
             h.digest()},
            addr,
            data};
}

result<void> image_writer::pages(const prepared_pages &p) {
    return emit(p.header, &p.addr, sizeof p.addr, p.data, p.header.length - sizeof p.addr, nullptr,
                0);
}

result<void> image_writer::finish() {
    image::trailer_record t{records_, payload_, hash_sum_};
    return emit(image::rec_trailer, &t, sizeof t, nullptr, 0, nullptr, 0);
}

} // namespace ghost::core
