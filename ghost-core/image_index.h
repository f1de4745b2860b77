// SPDX-License-Identifier: Apache-2.0
// Where an image's pages are, without reading them: the map an incremental export needs of its
// parent (image_format.h, "Incremental images"). Only record headers, addresses and page
// references are read; the page data is checked by the restorer when it uses it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ghost-core/image_format.h"
#include "runtime/result.h"

namespace ghost::core {

// Pages [addr, addr + len) are held by a pages record of source `source`, which covers
// [record_addr, record_addr + record_len) and starts at record_offset in that source.
struct page_span {
    uint64_t addr, len;
    uint32_t source;
    uint64_t record_offset, record_addr, record_len, record_hash;
};

struct image_index {
    uint64_t size = 0, hash_sum = 0, scan_id = 0;
    std::vector<image::image_source> sources; // the image's own sources (names relative to it)
    // By address. `source` indexes `sources`, and sources.size() stands for the image itself:
    // the numbering an image made from this one uses when it lists this one after its sources.
    std::vector<page_span> spans;
};

// Fails when the image is not a complete image (its trailer's counts and hash sum must match its
// record headers), or holds a pages record larger than a reference may name.
result<image_index> index_image(const std::string &path);

// An index kept from the export that wrote an image to the one after it, when the image itself
// is not at hand: a pre-copy streamed to another host (export_options::precopy_index). The file
// is new (O_EXCL, O_NOFOLLOW, 0600) and checksummed; load_index refuses one that is not whole.
result<void> save_index(const image_index &idx, const std::string &path);
result<image_index> load_index(const std::string &path);

} // namespace ghost::core
