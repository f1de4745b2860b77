// SPDX-License-Identifier: Apache-2.0
// import: starts ghost-restart on an image stream and waits until the restored process runs.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "ghost-core/image_reader.h"
#include "runtime/result.h"

namespace ghost::core {

struct import_options {
    std::string restorer;        // path of ghost-restart
    pid_t want_pid = 0;          // the image's pid, kept when the kernel allows (root, pid free)
    bool inherit_stdio = false;  // fds 0-2 are the caller's, whatever the image had
    std::vector<int> source_fds; // an incremental image's sources (open_sources), in its order
    // A process tree (process_tree.h): the restorer's --tree-* arguments, the shared descriptions
    // they name (passed on), and how many restorers report (the root and each live descendant).
    std::vector<std::string> tree_args;
    std::vector<int> tree_fds;
    std::vector<pid_t> tree_pids; // the live descendants' pids: each one's restorer reports
    int processes = 1;
};

// Opens the older images an incremental image takes pages from (`head` is its summary, at least
// its header and tracking record; names are relative to the directory of `image_path`). Each must
// be the very image the new one names (size and hash sum), a regular file of the same owner as
// the image. The caller closes the descriptors.
result<std::vector<int>> open_sources(const std::string &image_path, const image_summary &head);
// The "--sources=FD,..." argument of ghost-restart, or "" for an image without sources.
std::string sources_arg(const std::vector<int> &fds);

// `image_fd` is positioned at the start of the image (file, memfd or pipe). Returns the restored
// process's pid (a child of the caller) once its threads are about to run; on failure the
// restorer's one-line reason, and no process is left behind.
// A tree: every restorer verifies its stream before any of them goes on (the gate), so that a
// tree either comes back whole or not at all.
result<pid_t> import_process(int image_fd, const import_options &opt);

} // namespace ghost::core
