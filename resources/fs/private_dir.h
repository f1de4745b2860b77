// SPDX-License-Identifier: Apache-2.0
// The directory an image goes to, opened so that no other user can change where its path leads or
// what it holds: otherwise they could swap a planted symlink in for the image or the directory, and
// `ghost checkpoint` run by root would write where they chose.
#pragma once

#include <string>

#include "runtime/result.h"

namespace ghost::res {

// Opens `dir` (relative to the current directory unless absolute), creating what is missing with
// mode 0700, walking it one component at a time. Refused with a one-line reason when
//   - a directory on the way belongs to another user than this one or root, or other users may
//     write to it (group or world write permission) and it is not sticky like /tmp;
//   - a symlink on the way belongs to another user than this one or root (others are followed);
//   - `dir` itself is writable by other users, sticky or not.
// A group write permission does not count when the group holds this user alone (the "user private
// group" of Debian's umask 002). Returns an O_RDONLY|O_DIRECTORY descriptor of `dir`. With
// `create` false, a missing directory is an error instead.
result<int> open_private_dir(const std::string &dir, bool create = true);

} // namespace ghost::res
