// SPDX-License-Identifier: Apache-2.0
// An image's identity without reading it: its size and the trailer's sum of record hashes (the
// last record of every image, image_format.h). A job manifest names each rank's image by both; a
// full verification (image_reader.h) then proves the records add up to that sum.
#pragma once

#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>

#include "ghost-core/image_format.h"

namespace ghost::core {

// Reads the trailer of the image open as `fd`. Returns false (with a reason) when the file is too
// short or does not end with a trailer record (a truncated or unfinished image).
inline bool read_image_trailer(int fd, uint64_t *size, uint64_t *hash_sum, const char **why) {
    struct stat sb;
    if (fstat(fd, &sb) != 0) return *why = "cannot stat it", false;
    *size = (uint64_t)sb.st_size;
    struct {
        image::record_header h;
        image::trailer_record t;
    } tail;
    static_assert(sizeof tail == sizeof(image::record_header) + sizeof(image::trailer_record));
    if ((uint64_t)sb.st_size < sizeof tail + sizeof(image::record_header))
        return *why = "it is truncated (too short for an image)", false;
    if (pread(fd, &tail, sizeof tail, sb.st_size - (off_t)sizeof tail) != (ssize_t)sizeof tail)
        return *why = "cannot read its end", false;
    if (tail.h.magic != image::record_magic || tail.h.type != image::rec_trailer ||
        tail.h.length != sizeof(image::trailer_record))
        return *why = "it is truncated (no trailer at its end)", false;
    *hash_sum = tail.t.hash_sum;
    return true;
}

// "xxh3sum:<16 hex digits>", the form manifests use.
inline std::string image_hash_name(uint64_t hash_sum) {
    char b[32];
    snprintf(b, sizeof b, "xxh3sum:%016llx", (unsigned long long)hash_sum);
    return b;
}

} // namespace ghost::core
