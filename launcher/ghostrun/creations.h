// SPDX-License-Identifier: Apache-2.0
// The coordinator's agreement on the communicator creations a restart replays (runtime/
// job_protocol.h, "made" lists of CLOCK and TOMBSTONES answers): which tombstones every member may
// drop, and whether a restart could rebuild the communicators at all.
#pragma once

#include <map>
#include <string>
#include <vector>

namespace ghost::run {

// A restart replays each communicator creation collectively over its parent: every member of
// the parent must hold a record of it (live, or a tombstone). A creation that every holder
// reports dead ("~": freed or MPI_COMM_NULL there, named by nothing kept) and that no member
// keeps alive is replayed by nobody: pruned (a member without it pruned it before). Fills
// `prune` (communicator id -> sorted positions); returns why a restart could not rebuild the
// communicators, or "". An MPI_Comm_create_group (collective over its group, not a parent) is
// listed as the one creation (position 1) of a pseudo-parent named by the creation's name, with
// the group's size.
// Between epochs (a tombstone round: `settled` false) ranks run on: a member that has not
// returned from a creation yet does not list it, so only what every member lists dead goes,
// and nothing is refused (the next epoch checks).
std::string agree_on_creations(const std::map<int, std::vector<std::string>> &made, bool settled,
                               std::map<std::string, std::vector<std::string>> &prune);

// The tombstones of rank r to drop: " prune <k> <id>:<pos>,<pos>,..." for what it holds.
std::string prune_words(const std::vector<std::string> &made_r,
                        const std::map<std::string, std::vector<std::string>> &prune);

} // namespace ghost::run
