// SPDX-License-Identifier: Apache-2.0
// Reads and verifies a whole image from a source without restoring it: `ghost inspect`, and the
// checks a command makes before it starts the restorer. Mirrors image_writer.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ghost-core/image_format.h"
#include "ghost-core/resource.h"

namespace ghost::core {

struct region_summary {
    image::region_record record;
    std::string path;
    uint64_t stored_bytes = 0;
    uint64_t referenced_bytes = 0; // pages taken from the image's sources (incremental images)
};

struct object_summary {
    image::object_record record;
    std::string name;
    uint64_t stored_bytes = 0;
};

struct file_summary {
    image::file_record record;
    std::string path, data;
};

struct image_summary {
    image::header_record header{};
    std::string exe;
    image::credentials_record creds{};
    std::vector<uint32_t> groups;
    image::process_record process{};
    std::string cwd;
    std::vector<object_summary> objects;
    std::vector<region_summary> regions;
    std::vector<file_summary> files;
    std::vector<image::file_lock_record> locks;
    std::vector<image::thread_record> threads;
    uint64_t records = 0;
    uint64_t image_bytes = 0;
    uint64_t memory_bytes = 0;
    uint64_t scan_id = 0; // the write-tracking scan made for the image (0: taken without)
    std::vector<image::image_source> sources; // the older images an incremental one reads
    uint64_t referenced_bytes = 0;
    // A process tree's image (image_format.h): the descendants, the descriptions they share, and
    // each live descendant's own stream (in order).
    std::vector<image::tree_member_record> tree_members;
    uint32_t tree_shared = 0;
    std::vector<image_summary> tree_images;
};

// Verifies the whole image with the restorer's own rules (image_verify.h): framing, order,
// sizes, every record's hash and the trailer. With header_only, stops after the header record
// and the tracking record (if the image has one).
// (`followed`: another stream of the same tree image comes after this one.)
result<image_summary> read_image(res::source &in, bool header_only = false, bool followed = false);

// The header checks the restorer makes first (format version, architecture, kernel release, CPU
// vector state), against this machine.
result<void> check_compatible(const image::header_record &h);

} // namespace ghost::core
