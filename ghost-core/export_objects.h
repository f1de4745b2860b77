// SPDX-License-Identifier: Apache-2.0
// Memory objects for the exporter: the memfds and deleted-but-open files a process holds through
// descriptors or shared mappings. Each becomes one object record with its contents, which the
// restorer makes again before any region, so that every descriptor (file_object) and mapping
// (region_object_*) of it shares one object again. Mirror: make_object()/fill_object() in
// restore/restorer.cpp.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <string>
#include <vector>

#include "ghost-core/image_writer.h"
#include "ghost-core/proc_reader.h"
#include "runtime/result.h"

namespace ghost::core {

// Bytes [from, to) of `fd` as records of `kind` (a uint64_t offset, then the bytes): one per run
// of pages that are not all zero, read 1 MiB at a time. `what` names the file in errors.
result<void> write_nonzero_runs(image_writer &out, image::record_type kind, int fd, uint64_t from,
                                uint64_t to, const std::string &what);

class object_table {
  public:
    explicit object_table(pid_t pid) : pid_(pid) {}
    ~object_table();
    object_table(const object_table &) = delete;
    object_table &operator=(const object_table &) = delete;

    // The object behind descriptor `fd` of the process (its link names a deleted file, `sb` is
    // its stat): its id, or a one-line reason why it cannot be carried.
    result<uint64_t> from_descriptor(int fd, const struct stat &sb, const std::string &link);
    // The object a mapping of a deleted file stands for: 0 when it is none that can be carried
    // (the mapping is then stored as memory, as before objects); with `make`, a shared mapping
    // makes its object if no descriptor did.
    result<uint64_t> from_mapping(const vma &v, bool make);

    // The object and object_data records, in id order.
    result<void> write(image_writer &out) const;

  private:
    struct object {
        image::object_record rec{};
        std::string name;
        dev_t dev = 0;
        ino_t ino = 0;
        int fd = -1; // ours, for reading its contents (its own open file description)
    };
    result<uint64_t> add(int fd, const struct stat &sb, const std::string &link);

    pid_t pid_;
    std::vector<object> objects_;
};

} // namespace ghost::core
