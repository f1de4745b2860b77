// SPDX-License-Identifier: Apache-2.0
// Virtual attribute keyvals, and the attributes carried across a restart (keyvals.cpp).
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "vobj.h"

namespace ghost::mpi {

// The wrappers (gen_wrappers.py, KEYVAL_*): a keyval the lower half made (by the generated
// function `create_fn`) becomes one of ours; ours translate to the lower half's and back (the
// copy and delete callbacks get ours); numbers we did not make pass through unchanged.
int keyval_adopt(kind k, int create_fn, int lower, void *copy_fn, void *delete_fn, void *extra);
int keyval_lower(int upper);
int keyval_upper(int lower);
void keyval_drop(int upper);
bool keyval_freed(int upper);
// More keyvals were made than the table holds (their numbers are the lower half's: a checkpoint
// is refused).
bool keyvals_overflowed();

// At a checkpoint: quiesce lists the live communicators and datatypes and makes room (malloc
// allowed); exclude reads their attributes from the lower half (every other thread stopped: no
// allocation; -1 with a reason if it cannot). After the replay: the keyvals are made again, in
// their order, the attributes set again, and the keyvals the program had freed freed again.
// An attribute set with a keyval the program has freed since, on a live object: MPI keeps such a
// keyval for its attributes, and so does a restart (made again, the attributes set, then freed).
struct freed_keyval_attr {
    kind k;
    uintptr_t object; // upper handle
    int keyval;       // upper
};
void attrs_prepare(const std::vector<uintptr_t> &comms, const std::vector<uintptr_t> &types,
                   const std::vector<uintptr_t> &wins, const std::vector<freed_keyval_attr> &freed);
int attrs_read(uintptr_t fs, char *why, size_t why_len);
int attrs_after_restart(uintptr_t fs, char *why, size_t why_len);

} // namespace ghost::mpi
