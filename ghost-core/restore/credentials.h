// SPDX-License-Identifier: Apache-2.0
// The restorer's side of credentials (the rules are in ghost-core/image_credentials.h): decide what
// the restored process gets, then take it in two steps. Credentials belong to each thread: every
// restored thread takes them itself, from the same starting point, before it runs the image's code.
#pragma once

#include <stdint.h>

#include "ghost-core/image_credentials.h"
#include "ghost-core/restore/freestanding.h"

namespace ghost::restore {

// --owner-groups=UID:GID,GID...: the groups the group database gives the image file's owner (the
// restorer cannot read it: NSS). Used only when UID is the owner the restorer sees.
void set_owner_groups(const char *arg);

// From a verified credentials record (its payload) and the image's descriptor: what the restored
// process gets, or why the restore is refused. Reads the calling thread's own credentials.
bool plan_credentials(const image::credentials_record &image, const char *payload, int image_fd,
                      freestanding::text &why);

// Before anything of the image is opened or mapped: the image's groups and filesystem ids, and no
// effective capability beyond the image's own and those the restore still needs
// (image::restore_caps). Files are then opened with the image's rights, not the restorer's.
bool enter_image_fs_identity(freestanding::text &why);

// Last, in each thread: the image's uids, gids and capabilities exactly (read back to be sure).
bool take_image_credentials(freestanding::text &why);

// Once every thread has taken them: a change of ids made the process undumpable, so that ghost
// could not checkpoint it again; dumpable again unless its ids differ among themselves (as after
// a setuid program's exec, which the kernel makes undumpable), or the program had made itself
// undumpable (PR_SET_DUMPABLE 0, as the agent saw at the park).
void restore_dumpable(bool program_dumpable);

} // namespace ghost::restore
