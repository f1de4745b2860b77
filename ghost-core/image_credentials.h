// SPDX-License-Identifier: Apache-2.0
// Whose privileges a restored process gets. An image records its process's credentials; whoever
// restores it decides nothing: the restored process gets exactly the recorded uids, gids and
// groups, and no capability beyond the recorded ones, or the restore is refused. Two limits:
//  * nobody gains privilege by restoring: uids, gids and groups the restorer could not take itself
//    (no CAP_SETUID / CAP_SETGID) are refused, capabilities it does not have are not given;
//  * an image file is trusted no more than its owner: anyone who can write it can make the restored
//    process run code of their choice. Unless the file belongs to the restorer or to root, every
//    recorded uid must be the owner's, every gid one of the owner's groups, and no capability may
//    be recorded. A regular file that group or others may write is refused outright.
// Freestanding (the restorer includes it): plain data and arithmetic only.
#pragma once

#include <stdint.h>

#include "ghost-core/image_verify.h"

namespace ghost::image {

inline constexpr int cap_setgid = 6, cap_setuid = 7, cap_setpcap = 8, cap_checkpoint_restore = 40;
inline constexpr uint64_t cap_bit(int cap) {
    return 1ULL << cap;
}
// What the restorer keeps effective until the restored threads are about to run: changing ids and
// capabilities, and choosing the threads' tids (clone3 set_tid).
inline constexpr uint64_t restore_caps = cap_bit(cap_setgid) | cap_bit(cap_setuid) |
                                         cap_bit(cap_setpcap) | cap_bit(cap_checkpoint_restore);

// Who restores, and from which file.
struct restore_identity {
    credentials_record self; // the restorer's own, group_count of them in self_groups
    const uint32_t *self_groups;
    uint32_t owner_uid;           // the image file's owner
    const uint32_t *owner_groups; // the owner's groups in the group database
    uint32_t owner_group_count;
    uint32_t file_mode;      // st_mode & 07777
    bool writable_by_others; // a regular file (not a memfd) that group or others may write
};

// What the restored process gets.
struct credentials_plan {
    credentials_record target; // group_count and the groups are the image's
    bool set_groups;           // the image's groups differ from the restorer's
    uint64_t drop_bounding;    // capabilities to drop from the bounding set
    bool dumpable;             // all uids alike and all gids alike, as in any process not setuid
};

inline bool id_in(uint32_t id, const uint32_t *set, uint32_t n) {
    for (uint32_t i = 0; i < n; i++)
        if (set[i] == id) return true;
    return false;
}

inline bool same_ids(const uint32_t *a, uint32_t na, const uint32_t *b, uint32_t nb) {
    for (uint32_t i = 0; i < na; i++)
        if (!id_in(a[i], b, nb)) return false;
    for (uint32_t i = 0; i < nb; i++)
        if (!id_in(b[i], a, na)) return false;
    return true;
}

// Decides what a restore from `image` (with `image_groups`) may give, or why it may not happen.
inline bool plan_credentials(const credentials_record &image, const uint32_t *image_groups,
                             const restore_identity &who, credentials_plan &plan, message &why) {
    const credentials_record &self = who.self;
    if (who.writable_by_others) {
        why.clear().add("the image file may be written by group or others (mode ");
        char oct[8];
        int n = 0;
        for (int shift = 9; shift >= 0; shift -= 3)
            oct[n++] = (char)('0' + ((who.file_mode >> shift) & 7));
        oct[n] = 0;
        why.add(oct).add("): anyone could have changed what it runs");
        return false;
    }
    if (who.owner_uid != self.uid[1] && who.owner_uid != 0) {
        for (uint32_t uid : image.uid)
            if (uid != who.owner_uid)
                return why.clear()
                           .add("the image file is owned by uid ")
                           .num(who.owner_uid)
                           .add(" but its process ran as uid ")
                           .num(uid)
                           .add(": refusing to restore it with more privilege than its owner"),
                       false;
        for (uint32_t i = 0; i < 4 + image.group_count; i++) {
            uint32_t gid = i < 4 ? image.gid[i] : image_groups[i - 4];
            if (!id_in(gid, who.owner_groups, who.owner_group_count))
                return why.clear()
                           .add("the image file is owned by uid ")
                           .num(who.owner_uid)
                           .add(" but its process had group ")
                           .num(gid)
                           .add(", which uid ")
                           .num(who.owner_uid)
                           .add(" is not in: refusing to restore it with more privilege than its "
                                "owner"),
                       false;
        }
        if (image.cap_permitted | image.cap_inheritable)
            return why.clear()
                       .add("the image file is owned by uid ")
                       .num(who.owner_uid)
                       .add(" but its process had capabilities (")
                       .hex(image.cap_permitted | image.cap_inheritable)
                       .add("): refusing to restore it with more privilege than its owner"),
                   false;
    }
    bool can_setuid = self.cap_effective & cap_bit(cap_setuid);
    bool can_setgid = self.cap_effective & cap_bit(cap_setgid);
    for (int i = 0; i < 4; i++) {
        uint32_t n = i < 3 ? 3 : 4; // the fs id may also stay what it is
        if (!can_setuid && !id_in(image.uid[i], self.uid, n))
            return why.clear()
                       .add("the image's process ran as uid ")
                       .num(image.uid[i])
                       .add(", which uid ")
                       .num(self.uid[1])
                       .add(" may not take (no CAP_SETUID)"),
                   false;
        if (!can_setgid && !id_in(image.gid[i], self.gid, n))
            return why.clear()
                       .add("the image's process had gid ")
                       .num(image.gid[i])
                       .add(", which uid ")
                       .num(self.uid[1])
                       .add(" may not take (no CAP_SETGID)"),
                   false;
    }
    plan.set_groups = !same_ids(image_groups, image.group_count, who.self_groups, self.group_count);
    if (plan.set_groups && !can_setgid)
        return why.clear()
                   .add("the image's process had other supplementary groups than uid ")
                   .num(self.uid[1])
                   .add(" has, and it may not change them (no CAP_SETGID)"),
               false;
    plan.target = image;
    credentials_record &t = plan.target;
    t.cap_permitted &= self.cap_permitted;
    t.cap_inheritable &= self.cap_inheritable | self.cap_permitted;
    t.cap_effective &= t.cap_permitted;
    t.cap_ambient &= t.cap_permitted & t.cap_inheritable;
    t.cap_bounding &= self.cap_bounding;
    t.no_new_privs = image.no_new_privs | self.no_new_privs;
    plan.drop_bounding =
        self.cap_effective & cap_bit(cap_setpcap) ? self.cap_bounding & ~image.cap_bounding : 0;
    plan.dumpable = true;
    for (int i = 1; i < 4; i++)
        plan.dumpable &= image.uid[i] == image.uid[0] && image.gid[i] == image.gid[0];
    return true;
}

} // namespace ghost::image
