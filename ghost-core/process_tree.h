// SPDX-License-Identifier: Apache-2.0
// Process trees: a process and its descendants (each under ghost: they inherit its agent) are
// checkpointed into one image file and restarted as the same tree: the same pids, parents,
// process groups and sessions, zombies with their exit status, and the open file descriptions
// they share (pipes between them, a log file they append to at one offset) made once and held by
// each again. Checkpoint: list_tree (before parking), plan_tree (every live process parked), one
// export each (export_options::tree). Restart: read_tree_layout, make_shared_files, then the
// restorer (its --tree-* options) forks the tree.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "ghost-core/image_format.h"
#include "runtime/result.h"

namespace ghost::core {

class parked_process;

struct tree_shared_file {
    image::tree_shared_record record{};
    std::string path, data;
    // Shared memory (tree_shared_memory): a process that maps it, and where, to read it from.
    pid_t holder = 0;
    uint64_t holder_start = 0, holder_end = 0;
    // At restart: where its tree_data records' payloads are in the image file (position, length).
    std::vector<std::pair<uint64_t, uint64_t>> data_records;
};

// What the export of one process of a tree adds (export_options::tree).
struct tree_part {
    bool root = false;                              // its image lists the tree:
    std::vector<image::tree_member_record> members; //   the descendants,
    std::vector<tree_shared_file> shared;           //   the descriptions they share
    std::map<int, uint32_t> shared_fds;             // its descriptors of those: index
    std::map<uint64_t, uint32_t> shared_maps;       // its mappings of shared memory: index
    std::set<pid_t> members_pids;                   // children it may have
};

struct tree_plan {
    image::tree_member_record root{}; // the root's own ids (ppid: its parent outside the tree)
    std::vector<image::tree_member_record> members; // descendants, in image order
    std::vector<tree_shared_file> shared;
    std::map<pid_t, std::map<int, uint32_t>> shared_fds;       // by live process (root included)
    std::map<pid_t, std::map<uint64_t, uint32_t>> shared_maps; // by process: mapping start

    std::vector<pid_t> live() const; // the root, then the live descendants in image order
    tree_part part(pid_t pid) const;
};

// The descendants of `root`, parents before children, each parent's children with group and
// session leaders first (tree_member_record's order), with their ids and states. `skip`: not the
// program's (the checkpointer, a fast duplicate's copies); their descendants are skipped too.
// Refuses, in one line, a tree the restorer could not rebuild: a stopped or traced process, a
// process group or session that cannot be formed again from inside the tree.
result<tree_plan> list_tree(pid_t root, const std::set<pid_t> &skip);

// The children of a parked process that are not its program's: the `ghost checkpoint` its agent
// started, the copies fast duplicates made (they are the original's children, not part of it).
result<std::set<pid_t>> agent_children(const parked_process &p);

// With every live process of the tree parked (`parked`, the root first): the open file
// descriptions several of them hold become shared records; anything shared that cannot be
// rebuilt (memory mapped shared by two of them, a socket between them) refuses the checkpoint.
result<void> plan_tree(tree_plan &plan, const std::vector<const parked_process *> &parked);

// --- restart ------------------------------------------------------------------------------------

struct tree_layout {
    std::vector<image::tree_member_record> members;
    std::vector<tree_shared_file> shared;
    std::vector<uint64_t> offsets; // the live members' streams, in order: where each starts
};

// The tree an image file holds (no members: a single process), read from its records' headers
// without reading the memory they carry (the restorers verify every byte of their own stream).
// `root` is the pid the image's first stream names: every member must descend from it, parents
// listed before children, each pid once (else a restorer would wait for one never forked).
result<tree_layout> read_tree_layout(int image_fd, pid_t root);

// Makes every shared description of the tree, in index order (close-on-exec): pipes with their
// data, files reopened at their offsets. Files are opened with the rights of the image file's
// owner (`owner_uid`, and its groups), never more.
result<std::vector<int>> make_shared_files(const tree_layout &tree, uid_t owner_uid, int image_fd);

} // namespace ghost::core
