// SPDX-License-Identifier: Apache-2.0
// A new file that nobody else can name or redirect while it is written, and that takes its final
// name in one step. Preferably an unnamed file (O_TMPFILE), linked into its directory only once it
// is complete: a writer killed before that leaves nothing behind. Where the filesystem has no
// unnamed files (NFS, FUSE), a fresh random name created O_CREAT|O_EXCL|O_NOFOLLOW. Either way the
// final name is replaced by rename: a symlink planted there is replaced, never written through.
//
// Temporary names are ".<final name>.tmp-<pid>-<random>@<host>": the fallback's file while it is
// written, and an unnamed file's for the instant between link and rename when the final name
// exists. A writer killed while one exists leaves it behind; remove_stale_temporaries() removes
// those whose writer (on this host) is gone.
#pragma once

#include <sys/types.h>

#include <string>

#include "runtime/result.h"

namespace ghost::res {

class atomic_file {
  public:
    // A new file in the directory `dirfd` (which must stay open while this lives), to be named
    // `name` there; `what` names it in error messages. `direct`: open it O_DIRECT if the
    // filesystem allows (direct() says whether it did). `mode` is reduced by the umask.
    static result<atomic_file> create(int dirfd, const std::string &name, const std::string &what,
                                      mode_t mode, bool direct);
    atomic_file(atomic_file &&other) noexcept;
    atomic_file &operator=(atomic_file &&) = delete;
    ~atomic_file(); // discard() unless published

    int fd() const { return fd_; }
    bool direct() const { return direct_; }

    // The file, complete (and fsync'd by the caller if it must be durable), takes its final name,
    // replacing whatever was there. The directory is not fsync'd; fd() stays open.
    result<void> publish();
    // Closes fd() (after publish, for the errors a filesystem reports only then).
    result<void> close();
    // Closes the file; a temporary name is removed. The final name is left as it was.
    void discard() noexcept;

  private:
    atomic_file(int dirfd, int fd, std::string name, std::string tmp, std::string what, bool direct)
        : dirfd_(dirfd), fd_(fd), name_(std::move(name)), tmp_(std::move(tmp)),
          what_(std::move(what)), direct_(direct) {}
    int dirfd_, fd_;
    std::string name_, tmp_, what_; // tmp_: the current temporary name, if any
    bool direct_, published_ = false;
};

// Removes the temporary files of `name` in `dirfd` that writers on this host left when they were
// killed (their process is gone), and those of earlier ghost versions (".<name>.tmp-<pid>").
void remove_stale_temporaries(int dirfd, const std::string &name);

// Replaces the file at `path` with one holding `contents` (mode 0644 less the umask), written as
// above. For small files (pid files); not fsync'd.
result<void> replace_file(const std::string &path, const std::string &contents);

} // namespace ghost::res
