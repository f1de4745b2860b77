// SPDX-License-Identifier: Apache-2.0
// The descriptors of a parked process, classified for the image: each one becomes a file record the
// restorer can rebuild exactly, or the export is refused with one line naming the first descriptor
// it could not (before anything is written or killed). Mirror: restore_file() in
// restore/restorer.cpp.
#pragma once

#include <sys/types.h>

#include <map>
#include <optional>
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

// One end of a pair of connected unnamed Unix sockets (inode `ino`), read through `sock`, a
// descriptor of the caller's on it: the data of its file_socket_pair record (socket_state, then
// the bytes queued at this end) and the other end's inode. The error says why the socket cannot
// be carried (another kind of socket, named, shut down, datagrams or descriptors queued...).
struct socket_pair_end {
    std::string record_data;
    uint64_t peer = 0;
};
result<socket_pair_end> read_socket_pair_end(int sock, uint64_t ino);

// A socket bound to an address that a restore can bind again (socket_endpoint): a listening
// socket with no connection waiting, a UDP socket with nothing queued. Nothing for a Unix socket
// that does not listen (a pair, read_socket_pair_end); an error for any other.
result<std::optional<image::socket_endpoint>> read_socket_endpoint(int sock, uint64_t ino);

} // namespace ghost::core
