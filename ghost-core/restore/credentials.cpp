// SPDX-License-Identifier: Apache-2.0
#include "ghost-core/restore/credentials.h"

#include <asm/unistd.h>
#include <linux/capability.h>
#include <linux/prctl.h>
#include <sys/stat.h>

#include "runtime/raw_syscall.h"

namespace ghost::restore {

namespace {

namespace img = ghost::image;
namespace sys = ghost::sys;
using freestanding::text;

img::credentials_plan g_plan;
uint32_t g_image_groups[img::max_groups], g_own_groups[img::max_groups];
constexpr uint32_t max_owner_groups = 4096;
uint32_t g_owner_groups[max_owner_groups];
uint32_t g_owner_group_count = 0;
int64_t g_owner_groups_uid = -1;

struct cap_sets {
    uint64_t effective, permitted, inheritable;
};

long get_caps(cap_sets &c) {
    __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct d[2] = {};
    long r = sys::call(__NR_capget, &h, d);
    c.effective = d[0].effective | (uint64_t)d[1].effective << 32;
    c.permitted = d[0].permitted | (uint64_t)d[1].permitted << 32;
    c.inheritable = d[0].inheritable | (uint64_t)d[1].inheritable << 32;
    return r;
}

long set_caps(const cap_sets &c) {
    __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct d[2] = {
        {(uint32_t)c.effective, (uint32_t)c.permitted, (uint32_t)c.inheritable},
        {(uint32_t)(c.effective >> 32), (uint32_t)(c.permitted >> 32),
         (uint32_t)(c.inheritable >> 32)}};
    return sys::call(__NR_capset, &h, d);
}

// setfsuid/setfsgid report nothing but the previous id: ask again with an invalid one.
bool set_fs_id(long nr, uint32_t id) {
    sys::call(nr, id);
    return (uint32_t)sys::call(nr, -1L) == id;
}

bool failed(text &why, const char *what, long err) {
    why = text(what);
    if (err) why.add(": ").add(freestanding::errno_name(-err));
    return false;
}

// The calling thread's credentials; its supplementary groups go to `groups` (room for
// image::max_groups).
void read_own_credentials(image::credentials_record &c, uint32_t *groups) {
    c = {};
    sys::call(__NR_getresuid, &c.uid[0], &c.uid[1], &c.uid[2]);
    sys::call(__NR_getresgid, &c.gid[0], &c.gid[1], &c.gid[2]);
    c.uid[3] = (uint32_t)sys::call(__NR_setfsuid, -1L);
    c.gid[3] = (uint32_t)sys::call(__NR_setfsgid, -1L);
    cap_sets caps;
    get_caps(caps);
    c.cap_effective = caps.effective, c.cap_permitted = caps.permitted;
    c.cap_inheritable = caps.inheritable;
    for (int cap = 0; cap < 64; cap++) {
        long r = sys::call(__NR_prctl, PR_CAPBSET_READ, cap, 0, 0, 0);
        if (r < 0) break; // past the kernel's last capability
        if (r == 1) c.cap_bounding |= image::cap_bit(cap);
        if (sys::call(__NR_prctl, PR_CAP_AMBIENT, PR_CAP_AMBIENT_IS_SET, cap, 0, 0) == 1)
            c.cap_ambient |= image::cap_bit(cap);
    }
    c.no_new_privs = sys::call(__NR_prctl, PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 1;
    long n = sys::call(__NR_getgroups, image::max_groups, groups);
    c.group_count = n > 0 ? (uint32_t)n : 0;
}

} // namespace

void set_owner_groups(const char *arg) {
    g_owner_groups_uid = freestanding::parse_dec(arg);
    while (*arg >= '0' && *arg <= '9')
        arg++;
    while ((*arg == ':' || *arg == ',') && g_owner_group_count < max_owner_groups) {
        arg++;
        g_owner_groups[g_owner_group_count++] = (uint32_t)freestanding::parse_dec(arg);
        while (*arg >= '0' && *arg <= '9')
            arg++;
    }
}

bool plan_credentials(const image::credentials_record &image, const char *payload, int image_fd,
                      text &why) {
    memcpy(g_image_groups, payload + sizeof image, image.group_count * 4);
    img::restore_identity who = {};
    read_own_credentials(who.self, g_own_groups);
    who.self_groups = g_own_groups;
    struct stat sb;
    long e = sys::call(__NR_fstat, image_fd, &sb);
    if (sys::failed(e)) return failed(why, "cannot stat the image", e);
    who.owner_uid = sb.st_uid;
    who.file_mode = sb.st_mode & 07777;
    if (S_ISREG(sb.st_mode) && (sb.st_mode & 022)) { // a memfd (duplicate) is ours alone
        char link[64] = {};
        text fd_path = text("/proc/self/fd/").num(image_fd);
        sys::call(__NR_readlink, fd_path.str(), link, sizeof link - 1);
        who.writable_by_others = !freestanding::starts_with(link, "/memfd:");
    }
    if (g_owner_groups_uid == (int64_t)sb.st_uid) {
        who.owner_groups = g_owner_groups;
        who.owner_group_count = g_owner_group_count;
    }
    img::message m;
    if (img::plan_credentials(image, g_image_groups, who, g_plan, m)) return true;
    why = text(m.str());
    return false;
}

// Dumpable as a process with the image's ids would be, unless the program had made itself
// undumpable (to keep its secrets from ptrace and core files): then it stays so throughout.
void restore_dumpable(bool program_dumpable) {
    sys::call(__NR_prctl, PR_SET_DUMPABLE, g_plan.dumpable && program_dumpable ? 1 : 0, 0, 0, 0);
}

bool enter_image_fs_identity(text &why) {
    const image::credentials_record &t = g_plan.target;
    if (g_plan.set_groups) {
        long r = sys::call(__NR_setgroups, t.group_count, g_image_groups);
        if (sys::failed(r)) return failed(why, "cannot take the image's supplementary groups", r);
    }
    if (!set_fs_id(__NR_setfsgid, t.gid[3]))
        return failed(why, "cannot take the image's filesystem gid", 0);
    if (!set_fs_id(__NR_setfsuid, t.uid[3]))
        return failed(why, "cannot take the image's filesystem uid", 0);
    cap_sets now;
    long r = get_caps(now);
    if (sys::failed(r)) return failed(why, "cannot read the restorer's capabilities", r);
    now.effective = (t.cap_effective | image::restore_caps) & now.permitted;
    r = set_caps(now);
    if (sys::failed(r)) return failed(why, "cannot lower the restorer's capabilities", r);
    return true;
}

bool take_image_credentials(text &why) {
    const image::credentials_record &t = g_plan.target;
    for (int cap = 0; cap < 64; cap++) {
        if (!(g_plan.drop_bounding & image::cap_bit(cap))) continue;
        long r = sys::call(__NR_prctl, PR_CAPBSET_DROP, cap, 0, 0, 0);
        if (sys::failed(r)) return failed(why, "cannot drop from the capability bounding set", r);
    }
    long r = sys::call(__NR_setresgid, t.gid[0], t.gid[1], t.gid[2]);
    if (sys::failed(r)) return failed(why, "cannot take the image's gids", r);
    // Keep the permitted set across the change of uid, to lower it to the image's just after.
    sys::call(__NR_prctl, PR_SET_KEEPCAPS, 1, 0, 0, 0);
    r = sys::call(__NR_setresuid, t.uid[0], t.uid[1], t.uid[2]);
    if (sys::failed(r)) return failed(why, "cannot take the image's uids", r);
    cap_sets now;
    get_caps(now);
    now.effective = now.permitted; // the uid change cleared it; the fs ids may need it
    set_caps(now);
    if (!set_fs_id(__NR_setfsgid, t.gid[3]) || !set_fs_id(__NR_setfsuid, t.uid[3]))
        return failed(why, "cannot take the image's filesystem ids", 0);
    r = set_caps({t.cap_effective, t.cap_permitted, t.cap_inheritable});
    if (sys::failed(r)) return failed(why, "cannot take the image's capabilities", r);
    sys::call(__NR_prctl, PR_SET_KEEPCAPS, 0, 0, 0, 0);
    r = sys::call(__NR_prctl, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
    for (int cap = 0; cap < 64 && !sys::failed(r); cap++)
        if (t.cap_ambient & image::cap_bit(cap))
            r = sys::call(__NR_prctl, PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0);
    if (sys::failed(r)) return failed(why, "cannot take the image's ambient capabilities", r);
    if (t.no_new_privs) sys::call(__NR_prctl, PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
    // What the thread has now must be exactly what was planned.
    uint32_t uid[4], gid[4];
    sys::call(__NR_getresuid, &uid[0], &uid[1], &uid[2]);
    sys::call(__NR_getresgid, &gid[0], &gid[1], &gid[2]);
    uid[3] = (uint32_t)sys::call(__NR_setfsuid, -1L);
    gid[3] = (uint32_t)sys::call(__NR_setfsgid, -1L);
    get_caps(now);
    for (int i = 0; i < 4; i++)
        if (uid[i] != t.uid[i] || gid[i] != t.gid[i])
            return failed(why, "the restored thread did not get the image's ids", 0);
    if (now.effective != t.cap_effective || now.permitted != t.cap_permitted ||
        now.inheritable != t.cap_inheritable ||
        (t.no_new_privs && sys::call(__NR_prctl, PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1))
        return failed(why, "the restored thread did not get the image's capabilities", 0);
    return true;
}

} // namespace ghost::restore
