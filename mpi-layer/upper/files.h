// SPDX-License-Identifier: Apache-2.0
// MPI-IO files (MPI_File_open) across a checkpoint: a file opened over a communicator with a
// collective clock gets a clock of its own, advanced by its collective calls (ranks run forward
// to the same ones, so no collective I/O is in progress at a checkpoint). A restart opens the
// file again by name over the rebuilt communicator (never creating it: a file gone since is an
// error, not an empty file), replays the last MPI_File_set_view (its datatypes kept as zombies
// if the program freed them), sets atomicity, error handler and each rank's individual file
// pointer as they were, and the shared file pointer of a file whose shared pointer was used
// (MPI_File_seek_shared, collective: every member sets the same value, read at the quiescent
// checkpoint). Refused in one line: a split collective open, a file opened with
// MPI_MODE_SEQUENTIAL (no seek there), one opened over a communicator without a clock. The file's
// contents are the file system's (as for any open file of a restarted process).
#pragma once
#include <cstdint>

#include "quiesce.h"
#include "vobj.h"

namespace ghost::mpi {

enum class file_event { split_begin, split_end, shared };

struct file_state {
    record *view = nullptr; // the last MPI_File_set_view (a setting record), or none
    int split_open = 0;     // split collectives begun and not ended
    bool shared = false;    // a shared file pointer operation ran on it
    // Read at a checkpoint, set again by a restart.
    long long position = 0;        // the individual file pointer, in etypes of the view
    long long shared_position = 0; // the shared one (if `shared`), in etypes of the view
    bool shared_read = false;      // ... read for this checkpoint (files_read_shared_positions)
    int atomic = 0;
    bool have_errh = false;
    uintptr_t errh = 0; // upper handle
};

// The generated wrappers call these after a successful call.
void file_created(uintptr_t fh_upper, uintptr_t comm_upper);
void file_note(uintptr_t fh_upper, file_event e);
void file_view_set(uintptr_t fh_upper, record *r); // takes r
void file_state_free(file_state *f);
// The state of an open file (its vobj), or nullptr if it has no clock.
file_state *file_state_of(const vobj *file);
// In a quiescent rank, on the coordinator's thread before the image is written: reads the shared
// file pointer of every file that uses one (restart.cpp).
void files_read_shared_positions();

} // namespace ghost::mpi
