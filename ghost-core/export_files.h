// SPDX-License-Identifier: Apache-2.0
// The descriptors of a parked process, classified for the image: each one becomes a file record the
// restorer can rebuild exactly, or the export is refused with one line naming the first descriptor
// it could not (before anything is written or killed). Mirror: restore_file() in
// restore/restorer.cpp.
#pragma once

#include <sys/types.h>

#include <map>
#include <string>
#include <vector>

#include "ghost-core/export_objects.h"
#include "ghost-core/image_format.h"
#include "runtime/result.h"

namespace ghost::core {

struct exported_file {
    image::file_record record{};
    std::string path, data;                     // the record's tails
    std::vector<image::file_lock_record> locks; // written after every file record
};

// Every descriptor of `pid` but the agent's own (`internal`), in the order the restorer needs
// them: pty masters, then the other open file descriptions in descriptor order, then duplicates.
// Memfds and deleted files become objects of `objects` (file_object records name them).
// `tree_shared`: descriptors of open file descriptions the process shares with others of its
// tree, by fd: written as file_tree_shared records naming that index.
result<std::vector<exported_file>> collect_files(pid_t pid, const std::vector<int> &internal,
                                                 object_table &objects,
                                                 const std::map<int, uint32_t> &tree_shared = {});

// A pipe's capacity and, with `data`, the bytes buffered in it, read through `path` (its
// /proc/PID/fd/N) without consuming them: tee() into a pipe of our own. The error says why, for
// the caller's refusal of that descriptor.
result<void> peek_pipe(const std::string &path, uint32_t &capacity, std::string *data);

} // namespace ghost::core
