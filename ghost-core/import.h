// SPDX-License-Identifier: Apache-2.0
// import: starts ghost-restart on an image stream and waits until the restored process runs.
#pragma once

#include <sys/types.h>

#include <string>

#include "runtime/result.h"

namespace ghost::core {

struct import_options {
    std::string restorer;       // path of ghost-restart
    pid_t want_pid = 0;         // the image's pid, kept when the kernel allows (root, pid free)
    bool inherit_stdio = false; // fds 0-2 are the caller's, whatever the image had
};

// `image_fd` is positioned at the start of the image (file, memfd or pipe). Returns the restored
// process's pid (a child of the caller) once its threads are about to run; on failure the
// restorer's one-line reason, and no process is left behind.
result<pid_t> import_process(int image_fd, const import_options &opt);

} // namespace ghost::core
