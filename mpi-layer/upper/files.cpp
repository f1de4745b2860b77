// SPDX-License-Identifier: Apache-2.0
#include "files.h"

#include "quiesce_state.h"

namespace ghost::mpi {

void file_created(uintptr_t fh, uintptr_t comm) {
    if (comm_info *ci = object_clock_new(clock_kind::file, fh, comm)) ci->file = new file_state();
}

void file_note(uintptr_t fh, file_event e) {
    comm_info *ci = object_clock_of(clock_kind::file, fh);
    if (!ci || !ci->file) return;
    switch (e) {
    case file_event::split_begin:
        ci->file->split_open++;
        break;
    case file_event::split_end:
        if (ci->file->split_open > 0) ci->file->split_open--;
        break;
    case file_event::shared:
        ci->file->shared = true;
        break;
    }
}

void file_view_set(uintptr_t fh, record *r) {
    comm_info *ci = object_clock_of(clock_kind::file, fh);
    if (!r) return;
    if (!ci || !ci->file) { // no clock: a checkpoint refuses the file anyway
        delete r;
        return;
    }
    record *was = ci->file->view;
    vobj *v = (vobj *)(void *)fh; // MPI_File is a pointer handle in both MPIs
    record_link_setting(v, r);
    ci->file->view = r;
    if (was) record_drop(was); // superseded: the datatypes only it named may go
}

void file_state_free(file_state *f) {
    if (f->view) record_drop(f->view);
    delete f;
}

file_state *file_state_of(const vobj *file) {
    const comm_info *ci = (const comm_info *)file->ext;
    return ci ? ci->file : nullptr;
}

} // namespace ghost::mpi
