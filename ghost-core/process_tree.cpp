// SPDX-License-Identifier: Apache-2.0
#include "ghost-core/process_tree.h"

#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstring>
#include <memory>
#include <sstream>

#include "ghost-core/agent/agent_state.h"
#include "ghost-core/export_files.h"
#include "ghost-core/park_client.h"
#include "ghost-core/proc_reader.h"
#include "ghost-core/record_hash.h"
#include "ghost-core/image_verify.h"

namespace ghost::core {

namespace {

constexpr int kcmp_file = 0;

std::string pid_str(pid_t p) {
    return std::to_string(p);
}

struct proc_ids {
    image::tree_member_record rec{};
    char state = '?';
};

result<proc_ids> read_ids(pid_t pid) {
    auto st = read_text("/proc/" + pid_str(pid) + "/stat");
    if (!st) return st.err();
    size_t at = st->rfind(')');
    if (at == std::string::npos) return error{"cannot parse /proc/" + pid_str(pid) + "/stat"};
    std::istringstream in(st->substr(at + 2));
    std::vector<std::string> f;
    for (std::string w; in >> w;)
        f.push_back(w);
    // f[0] is field 3 (state): ppid 4, pgrp 5, session 6, exit_code 52.
    if (f.size() < 50) return error{"cannot parse /proc/" + pid_str(pid) + "/stat"};
    proc_ids ids;
    ids.state = f[0][0];
    ids.rec.pid = pid;
    ids.rec.ppid = std::atoi(f[1].c_str());
    ids.rec.pgid = std::atoi(f[2].c_str());
    ids.rec.sid = std::atoi(f[3].c_str());
    ids.rec.state = ids.state == 'Z' ? image::tree_zombie : image::tree_live;
    ids.rec.wait_status = ids.state == 'Z' ? std::atoi(f[49].c_str()) : 0;
    return ids;
}

std::vector<pid_t> children_of(pid_t pid) {
    std::vector<pid_t> out;
    auto tasks = list_dir_numbers("/proc/" + pid_str(pid) + "/task");
    if (!tasks) return out;
    for (int tid : *tasks) {
        auto kids =
            read_text("/proc/" + pid_str(pid) + "/task/" + std::to_string(tid) + "/children");
        if (!kids) continue;
        std::istringstream in(*kids);
        for (pid_t c; in >> c;)
            out.push_back(c);
    }
    std::sort(out.begin(), out.end());
    out.erase(std::unique(out.begin(), out.end()), out.end());
    return out;
}

// One descriptor of one process of the tree.
struct held_fd {
    pid_t pid;
    int fd;
    std::string link;
    struct stat sb;
    fd_info info;
    int description = -1; // index into the descriptions of its file
};

std::string fd_path(pid_t pid, int fd) {
    return "/proc/" + pid_str(pid) + "/fd/" + std::to_string(fd);
}

error refuse(const held_fd &h, const std::string &why) {
    return error{"cannot checkpoint descriptor " + std::to_string(h.fd) + " (" + h.link +
                 ") of pid " + pid_str(h.pid) + ": " + why};
}

// The agent's own descriptors (and what its components leave out): never the program's.
result<std::vector<int>> agent_fds(const parked_process &p) {
    auto got = read_agent_state(p);
    if (!got) return got.err();
    const auto &st = *got;
    std::vector<int> out;
    for (uint32_t i = 0; i < std::min<uint32_t>(st->internal_fd_count, agent::max_internal_fds);
         i++)
        out.push_back(st->internal_fds[i]);
    for (uint32_t i = 0; i < std::min<uint32_t>(st->excluded_fd_count, agent::max_excluded_fds);
         i++)
        out.push_back(st->excluded_fds[i]);
    return out;
}

bool is_memory_device(dev_t rdev) {
    unsigned m = minor(rdev);
    return major(rdev) == 1 && (m == 3 || m == 5 || m == 7 || m == 8 || m == 9);
}

// Whether a process outside the tree holds a write end of the pipe `h` is on.
bool written_elsewhere(const held_fd &h, const std::set<pid_t> &tree) {
    auto procs = list_dir_numbers("/proc");
    if (!procs) return true;
    for (int pid : *procs) {
        if (tree.count(pid)) continue;
        auto fds = list_dir_numbers("/proc/" + std::to_string(pid) + "/fd");
        if (!fds) continue;
        for (int fd : *fds) {
            auto link = read_link(fd_path(pid, fd));
            if (!link || *link != h.link) continue;
            auto info = read_fdinfo(pid, fd);
            if (!info || (info->flags & O_ACCMODE) != O_RDONLY) return true;
        }
    }
    return false;
}

// Buffered data of a pipe, read without consuming it (tee into a pipe of our own).
result<void> read_pipe_data(const held_fd &h, tree_shared_file &out) {
    auto r = peek_pipe(fd_path(h.pid, h.fd), out.record.pipe_size, &out.data);
    if (!r) return refuse(h, r.err().message);
    return {};
}

} // namespace

result<std::set<pid_t>> agent_children(const parked_process &p) {
    auto st = read_agent_state(p);
    if (!st) return st.err();
    std::set<pid_t> out;
    if ((*st)->checkpointer_pid > 0) out.insert((*st)->checkpointer_pid);
    for (uint32_t i = 0; i < std::min<uint32_t>((*st)->copy_count, 64); i++)
        out.insert((*st)->copy_pids[i]);
    return out;
}

std::vector<pid_t> tree_plan::live() const {
    std::vector<pid_t> out = {root.pid};
    for (const auto &m : members)
        if (m.state == image::tree_live) out.push_back(m.pid);
    return out;
}

tree_part tree_plan::part(pid_t pid) const {
    tree_part p;
    p.root = pid == root.pid;
    if (p.root) p.members = members, p.shared = shared;
    if (auto it = shared_fds.find(pid); it != shared_fds.end()) p.shared_fds = it->second;
    if (auto it = shared_maps.find(pid); it != shared_maps.end()) p.shared_maps = it->second;
    for (const auto &m : members)
        if (m.ppid == pid) p.members_pids.insert(m.pid);
    return p;
}

// One end of a socket pair (read_socket_pair_end), through a copy of a holder's descriptor.
result<socket_pair_end> socket_end(const held_fd &h) {
    int pidfd = (int)::syscall(SYS_pidfd_open, h.pid, 0);
    if (pidfd < 0) return sys_error("cannot open a pidfd of pid " + pid_str(h.pid));
    int fd = (int)::syscall(SYS_pidfd_getfd, pidfd, h.fd, 0);
    ::close(pidfd);
    if (fd < 0)
        return sys_error("cannot take a copy of descriptor " + std::to_string(h.fd) + " of pid " +
                         pid_str(h.pid));
    auto end = read_socket_pair_end(fd, h.sb.st_ino);
    ::close(fd);
    return end;
}

result<tree_plan> list_tree(pid_t root, const std::set<pid_t> &skip) {
    tree_plan plan;
    auto r = read_ids(root);
    if (!r) return r.err();
    plan.root = r->rec;
    std::map<pid_t, image::tree_member_record> by_pid = {{root, plan.root}};
    std::vector<pid_t> queue = {root};
    for (size_t q = 0; q < queue.size(); q++) {
        const image::tree_member_record parent = by_pid[queue[q]];
        std::vector<image::tree_member_record> kids;
        for (pid_t c : children_of(parent.pid)) {
            if (skip.count(c)) continue;
            auto ids = read_ids(c);
            if (!ids || ids->rec.ppid != parent.pid || ids->state == 'X') continue; // gone
            // (A tracee shows 'S' while its tracer lets it run: TracerPid tells.)
            auto status = read_text("/proc/" + pid_str(c) + "/status");
            size_t tracer = status ? status->find("TracerPid:") : std::string::npos;
            bool traced =
                tracer != std::string::npos && std::atoi(status->c_str() + tracer + 10) != 0;
            if (ids->state == 'T' || ids->state == 't' || traced)
                return error{"pid " + pid_str(c) + " (a child of pid " + pid_str(parent.pid) +
                             ") is stopped or traced: a process tree is checkpointed running, "
                             "untraced"};
            kids.push_back(ids->rec);
        }
        // Leaders first: a member joins a group its earlier sibling leads.
        std::stable_sort(kids.begin(), kids.end(), [](const auto &a, const auto &b) {
            bool la = a.pgid == a.pid || a.sid == a.pid, lb = b.pgid == b.pid || b.sid == b.pid;
            return la != lb ? la : a.pid < b.pid;
        });
        std::vector<image::tree_member_record> done;
        for (const auto &k : kids) {
            std::string who =
                "pid " + pid_str(k.pid) + " (a child of pid " + pid_str(parent.pid) + ")";
            if (k.sid == k.pid) {
                if (k.pgid != k.pid)
                    return error{who + " leads a session but not its process group: the tree "
                                       "cannot be formed again"};
            } else if (k.sid != parent.sid) {
                return error{who + " is in the session of a process outside the tree: the tree "
                                   "cannot be formed again"};
            } else if (k.pgid != parent.pgid && k.pgid != k.pid &&
                       std::none_of(done.begin(), done.end(), [&](const auto &s) {
                           return s.pid == k.pgid && s.sid == k.sid;
                       })) {
                return error{who + " is in process group " + pid_str(k.pgid) +
                             ", led by a process that is neither it, its parent's group nor an "
                             "earlier sibling: the tree cannot be formed again"};
            }
            done.push_back(k);
            plan.members.push_back(k);
            if (plan.members.size() > image::max_tree_members)
                return error{"pid " + pid_str(root) + " has more than " +
                             std::to_string(image::max_tree_members) + " descendants"};
            by_pid[k.pid] = k;
            if (k.state == image::tree_live) queue.push_back(k.pid);
        }
    }
    // The members of a tree in a pid namespace of its own (a fast duplicate's copy) know each
    // other by that namespace's pids, which a restart here could not give them back.
    struct stat ours {
    }, theirs{};
    if (!plan.members.empty() && ::stat("/proc/self/ns/pid", &ours) == 0 &&
        ::stat(("/proc/" + pid_str(root) + "/ns/pid").c_str(), &theirs) == 0 &&
        ours.st_ino != theirs.st_ino)
        return error{"pid " + pid_str(root) +
                     " and its children run in a pid namespace of their "
                     "own (a duplicate's copy): its process tree cannot be carried (its processes "
                     "know each other by pids a restart could not give back)"};
    return plan;
}

result<void> plan_tree(tree_plan &plan, const std::vector<const parked_process *> &parked) {
    // Every descriptor of every live process, by file.
    std::vector<held_fd> held;
    for (const parked_process *p : parked) {
        auto internal = agent_fds(*p);
        if (!internal) return internal.err();
        auto fds = list_fds(p->pid());
        if (!fds) return fds.err();
        for (int fd : *fds) {
            if (std::find(internal->begin(), internal->end(), fd) != internal->end()) continue;
            held_fd h{p->pid(), fd, {}, {}, {}};
            auto link = read_link(fd_path(h.pid, fd));
            auto info = read_fdinfo(h.pid, fd);
            if (!link || !info || ::stat(fd_path(h.pid, fd).c_str(), &h.sb) != 0) continue;
            h.link = *link, h.info = *info;
            held.push_back(std::move(h));
        }
    }
    // Open file descriptions, compared with kcmp among the descriptors of one file.
    struct description {
        std::vector<size_t> fds; // into held
        std::set<pid_t> pids;
    };
    std::map<std::pair<dev_t, ino_t>, std::vector<description>> files;
    for (size_t i = 0; i < held.size(); i++) {
        held_fd &h = held[i];
        auto &descs = files[{h.sb.st_dev, h.sb.st_ino}];
        for (size_t d = 0; d < descs.size() && h.description < 0; d++) {
            const held_fd &o = held[descs[d].fds[0]];
            long r = ::syscall(SYS_kcmp, o.pid, h.pid, kcmp_file, o.fd, h.fd);
            if (r < 0)
                return sys_error("cannot compare descriptors of pids " + pid_str(o.pid) + " and " +
                                 pid_str(h.pid) + " (kcmp)");
            if (r == 0) h.description = (int)d;
        }
        if (h.description < 0) {
            h.description = (int)descs.size();
            descs.emplace_back();
        }
        descs[(size_t)h.description].fds.push_back(i);
        descs[(size_t)h.description].pids.insert(h.pid);
    }
    auto add_shared = [&](const description &d, image::file_kind kind, const std::string &path) {
        tree_shared_file s;
        const held_fd &h = held[d.fds[0]];
        s.record.index = (uint32_t)plan.shared.size();
        s.record.kind = kind;
        s.record.flags = h.info.flags & ~O_CLOEXEC;
        s.record.offset = h.info.pos;
        s.record.dev = h.sb.st_dev, s.record.ino = h.sb.st_ino;
        s.path = path;
        for (size_t i : d.fds)
            plan.shared_fds[held[i].pid][held[i].fd] = s.record.index;
        plan.shared.push_back(std::move(s));
        return &plan.shared.back();
    };
    auto all_std_streams = [&](const description &d) {
        return std::all_of(d.fds.begin(), d.fds.end(), [&](size_t i) { return held[i].fd <= 2; });
    };
    std::set<pid_t> tree_pids;
    for (const parked_process *p : parked)
        tree_pids.insert(p->pid());
    for (auto &[key, descs] : files) {
        std::set<pid_t> holders;
        for (const auto &d : descs)
            holders.insert(d.pids.begin(), d.pids.end());
        const held_fd &first = held[descs[0].fds[0]];
        mode_t type = first.sb.st_mode & S_IFMT;
        bool pipe = type == S_IFIFO && first.link.rfind("pipe:", 0) == 0;
        const description *reader = nullptr, *writer = nullptr;
        for (const auto &d : descs) {
            int mode = held[d.fds[0]].info.flags & O_ACCMODE;
            if (mode == O_RDONLY && !reader) reader = &d;
            if (mode == O_WRONLY && !writer) writer = &d;
        }
        // A pipe whose writers have all closed it (a child's stdin the parent wrote and closed):
        // its data and end of file are the tree's to carry, even with one reader, a std stream
        // included (taking the restarting command's stream instead would lose the data).
        bool writer_gone = pipe && reader && !writer && !written_elsewhere(first, tree_pids);
        // A pair of Unix sockets with its ends in several processes of the tree (Python's
        // multiprocessing.Pipe): the restart makes it once and gives each end to its holders.
        // (A socket that is not such a pair is left to the refusals below and the exporter's.)
        if (type == S_IFSOCK && descs.size() == 1) {
            auto end = socket_end(first);
            auto peer = end ? files.find({first.sb.st_dev, (ino_t)end->peer}) : files.end();
            if (peer != files.end()) {
                std::set<pid_t> pair_pids = holders;
                for (const auto &d : peer->second)
                    pair_pids.insert(d.pids.begin(), d.pids.end());
                if (pair_pids.size() > 1) {
                    tree_shared_file *s = add_shared(descs[0], image::file_socket_pair, "");
                    s->record.pipe_id = std::min<uint64_t>(first.sb.st_ino, end->peer);
                    s->record.offset = 0;
                    s->data = std::move(end->record_data);
                    continue;
                }
            }
        }
        if (holders.size() < 2 && !writer_gone)
            continue; // one process's own: its export rebuilds it
        if (pipe) {
            // A pipe between processes of the tree: every description of it is made again.
            if (!reader || (!writer && !writer_gone)) {
                if (std::all_of(descs.begin(), descs.end(), all_std_streams)) continue;
                return refuse(first, std::string("a pipe to a process outside the tree cannot be "
                                                 "restored"));
            }
            if (first.info.flags & O_DIRECT)
                return refuse(first, "a packet-mode pipe (O_DIRECT) cannot be restored");
            bool with_data = true;
            for (const auto &d : descs) {
                image::file_kind kind = &d == reader   ? image::file_pipe_read
                                        : &d == writer ? image::file_pipe_write
                                                       : image::file_pipe_reopen;
                tree_shared_file *s = add_shared(d, kind, "");
                s->record.pipe_id = first.sb.st_ino;
                s->record.offset = 0;
                if (with_data) GHOST_TRY(read_pipe_data(held[d.fds[0]], *s));
                with_data = false;
            }
            continue;
        }
        for (const auto &d : descs) {
            if (d.pids.size() < 2) continue;
            const held_fd &h = held[d.fds[0]];
            bool o_path = (h.info.flags & O_PATH) != 0;
            if ((type == S_IFREG || type == S_IFDIR || o_path) && !h.link.empty() &&
                h.link[0] == '/' && h.link.find(" (deleted)") == std::string::npos &&
                h.link.rfind("/proc/", 0) != 0) {
                struct stat now;
                if (::stat(h.link.c_str(), &now) != 0 || now.st_dev != h.sb.st_dev ||
                    now.st_ino != h.sb.st_ino)
                    return refuse(h, "its path no longer names it");
                add_shared(d,
                           o_path            ? image::file_path
                           : type == S_IFREG ? image::file_regular
                                             : image::file_directory,
                           h.link);
                continue;
            }
            if (type == S_IFCHR && is_memory_device(h.sb.st_rdev) && h.link[0] == '/') {
                add_shared(d, image::file_device, h.link);
                continue;
            }
            // Ttys, sockets and pipes from outside as std streams: each process takes those of
            // the command that restarts the tree, as a single process does.
            if (all_std_streams(d) && (type == S_IFCHR || type == S_IFSOCK || type == S_IFIFO))
                continue;
            const held_fd &other = held[*std::find_if(
                d.fds.begin(), d.fds.end(), [&](size_t i) { return held[i].pid != h.pid; })];
            return refuse(h, "its open file description is shared with pid " + pid_str(other.pid) +
                                 " (descriptor " + std::to_string(other.fd) +
                                 "), and one of this kind cannot be shared again by a restart");
        }
    }
    // Memory mapped shared from one object by several processes. Shared anonymous memory (made
    // before a fork: /dev/zero) becomes the tree's: made once by the restart, mapped by each. So
    // does a memfd or deleted file that no descriptor of the tree holds (sem_open's semaphores
    // and Python's multiprocessing locks: mapped, then unlinked and closed); one that a
    // descriptor holds too would be two objects after a restart: refused.
    struct mapping {
        pid_t pid;
        uint64_t start, end;
    };
    std::map<std::pair<uint64_t, std::string>, std::vector<mapping>> shared_memory;
    for (const parked_process *p : parked) {
        auto maps = read_maps(p->pid());
        if (!maps) return maps.err();
        for (const vma &v : *maps)
            if (v.shared && v.path.find(" (deleted)") != std::string::npos)
                shared_memory[{v.inode, v.path}].push_back({p->pid(), v.start, v.end});
    }
    for (const auto &[key, maps] : shared_memory) {
        std::set<pid_t> pids;
        for (const mapping &m : maps)
            pids.insert(m.pid);
        if (pids.size() < 2) continue;
        bool held_too = std::any_of(held.begin(), held.end(), [&](const held_fd &h) {
            return h.sb.st_ino == key.first && h.link == key.second;
        });
        if (key.second != "/dev/zero (deleted)" && held_too)
            return error{"cannot checkpoint the process tree of pid " + pid_str(plan.root.pid) +
                         ": pids " + pid_str(*pids.begin()) + " and " + pid_str(*pids.rbegin()) +
                         " share memory (" + key.second +
                         ") that a descriptor holds too, which a restart cannot share again"};
        const mapping &first = maps[0];
        char range[64];
        std::snprintf(range, sizeof range, "%llx-%llx", (unsigned long long)first.start,
                      (unsigned long long)first.end);
        struct stat sb;
        std::string file = "/proc/" + pid_str(first.pid) + "/map_files/" + range;
        if (::stat(file.c_str(), &sb) != 0)
            return sys_error("cannot checkpoint the process tree of pid " + pid_str(plan.root.pid) +
                             ": cannot open the memory pids " + pid_str(*pids.begin()) + " and " +
                             pid_str(*pids.rbegin()) + " share (" + file + ")");
        tree_shared_file s;
        s.record.index = (uint32_t)plan.shared.size();
        s.record.kind = image::tree_shared_memory;
        s.record.offset = sb.st_size;
        s.record.dev = sb.st_dev, s.record.ino = sb.st_ino;
        s.holder = first.pid, s.holder_start = first.start, s.holder_end = first.end;
        for (const mapping &m : maps)
            plan.shared_maps[m.pid][m.start] = s.record.index;
        plan.shared.push_back(std::move(s));
    }
    return {};
}

// --- restart ------------------------------------------------------------------------------------

namespace {

bool pread_exact(int fd, void *dst, size_t len, uint64_t off) {
    char *p = (char *)dst;
    while (len) {
        ssize_t n = ::pread(fd, p, len, (off_t)off);
        if (n <= 0) {
            if (n < 0 && errno == EINTR) continue;
            return false;
        }
        p += n, len -= (size_t)n, off += (uint64_t)n;
    }
    return true;
}

} // namespace

result<tree_layout> read_tree_layout(int fd, pid_t root) {
    tree_layout t;
    struct stat sb;
    if (::fstat(fd, &sb) != 0) return sys_error("cannot stat the image");
    uint64_t size = (uint64_t)sb.st_size, pos = 0;
    const error corrupt{"the image is corrupt (its process tree)"};
    // Walks one stream from `pos` to the end of its trailer; the root's tree records are read.
    auto walk = [&](bool root) -> result<void> {
        bool first = true;
        for (;;) {
            image::record_header h;
            if (pos + sizeof h > size || !pread_exact(fd, &h, sizeof h, pos))
                return error{"the image is truncated"};
            if (h.magic != image::record_magic || (first && h.type != image::rec_header) ||
                h.length > size - pos - sizeof h)
                return corrupt;
            first = false;
            pos += sizeof h;
            if (root && h.type == image::rec_tree_data) {
                if (t.shared.empty() || t.shared.back().record.kind != image::tree_shared_memory ||
                    h.length <= 8)
                    return corrupt;
                t.shared.back().data_records.push_back({pos, h.length});
            }
            if (root && (h.type == image::rec_tree_member || h.type == image::rec_tree_shared)) {
                if (h.length > image::max_metadata_record) return corrupt;
                std::string payload(h.length, '\0');
                if (!pread_exact(fd, payload.data(), h.length, pos))
                    return error{"the image is truncated"};
                image::record_hasher hash(h.type);
                hash.update(payload.data(), payload.size());
                if (hash.digest() != h.hash)
                    return error{"the image is corrupt (checksum mismatch)"};
                if (h.type == image::rec_tree_member) {
                    if (h.length != sizeof(image::tree_member_record)) return corrupt;
                    image::tree_member_record m;
                    std::memcpy(&m, payload.data(), sizeof m);
                    if (m.pid <= 0 ||
                        (m.state != image::tree_live && m.state != image::tree_zombie) ||
                        t.members.size() >= image::max_tree_members)
                        return corrupt;
                    t.members.push_back(m);
                } else {
                    tree_shared_file s;
                    if (h.length < sizeof s.record) return corrupt;
                    std::memcpy(&s.record, payload.data(), sizeof s.record);
                    if (s.record.index != t.shared.size() ||
                        (uint64_t)s.record.path_len + s.record.data_len !=
                            h.length - sizeof s.record)
                        return corrupt;
                    s.path = payload.substr(sizeof s.record, s.record.path_len);
                    s.data = payload.substr(sizeof s.record + s.record.path_len);
                    t.shared.push_back(std::move(s));
                }
            }
            pos += h.length;
            if (h.type == image::rec_trailer) return {};
        }
    };
    GHOST_TRY(walk(true));
    std::set<pid_t> parents = {root}, seen = {root};
    for (const auto &m : t.members) {
        if (!seen.insert(m.pid).second || !parents.count(m.ppid)) return corrupt;
        if (m.state == image::tree_live) parents.insert(m.pid);
    }
    for (const auto &m : t.members) {
        if (m.state != image::tree_live) continue;
        t.offsets.push_back(pos);
        GHOST_TRY(walk(false));
    }
    if (pos != size) return error{"the image is corrupt (data after the trailer)"};
    return t;
}

namespace {

// Opens a shared description of a path kind; -1 with errno, or -2 when it names another file.
int open_shared_path(const tree_shared_file &s) {
    int flags = s.record.flags & ~(O_CREAT | O_TRUNC | O_EXCL | O_NOCTTY | O_CLOEXEC | O_TMPFILE);
    int fd = ::open(s.path.c_str(), flags | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) return -1;
    struct stat sb;
    if (::fstat(fd, &sb) != 0 || sb.st_dev != s.record.dev || sb.st_ino != s.record.ino) {
        ::close(fd);
        return -2;
    }
    if (s.record.kind == image::file_regular && ::lseek(fd, s.record.offset, SEEK_SET) < 0) {
        ::close(fd);
        return -1;
    }
    return fd;
}

} // namespace

// Shared anonymous memory of `size` bytes as a descriptor: the object of a shared anonymous
// mapping of our own (/proc/self/map_files: the processes map "/dev/zero (deleted)" again, as
// before), or a memfd where that cannot be opened.
int shared_memory_object(uint64_t size) {
    void *m = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (m != MAP_FAILED) {
        char path[96];
        std::snprintf(path, sizeof path, "/proc/self/map_files/%llx-%llx",
                      (unsigned long long)(uintptr_t)m, (unsigned long long)((uintptr_t)m + size));
        int fd = ::open(path, O_RDWR | O_CLOEXEC);
        ::munmap(m, size);
        if (fd >= 0) return fd;
    }
    int fd = (int)::memfd_create("dev/zero", MFD_CLOEXEC);
    if (fd >= 0 && ::ftruncate(fd, (off_t)size) != 0) {
        ::close(fd);
        return -1;
    }
    return fd;
}

// Fills shared memory from its tree_data records, each checked against its hash.
result<void> fill_shared_memory(int image_fd, const tree_shared_file &s, int fd) {
    std::string payload;
    for (auto [pos, len] : s.data_records) {
        payload.resize(len);
        image::record_header h;
        if (!pread_exact(image_fd, &h, sizeof h, pos - sizeof h) ||
            !pread_exact(image_fd, payload.data(), len, pos))
            return error{"the image is truncated"};
        image::record_hasher hash(image::rec_tree_data);
        hash.update(payload.data(), len);
        if (hash.digest() != h.hash) return error{"the image is corrupt (checksum mismatch)"};
        uint64_t offset;
        std::memcpy(&offset, payload.data(), sizeof offset);
        if (offset > (uint64_t)s.record.offset || len - 8 > (uint64_t)s.record.offset - offset)
            return error{"the image is corrupt (shared memory data outside its object)"};
        for (uint64_t done = 0; done < len - 8;) {
            ssize_t w =
                ::pwrite(fd, payload.data() + 8 + done, len - 8 - done, (off_t)(offset + done));
            if (w < 0 && errno == EINTR) continue;
            if (w <= 0) return sys_error("cannot refill the tree's shared memory");
            done += (uint64_t)w;
        }
    }
    return {};
}

// Socket pairs: one new pair per pipe_id. Each end gets its options, and the bytes queued at it
// are sent again by the other end (whose send buffer bounds what it has in flight: raised
// meanwhile).
result<void> make_socket_pairs(const tree_layout &tree, std::vector<int> &fds) {
    std::map<uint64_t, std::array<int, 2>> pairs;
    auto close_pairs = [&] {
        for (auto &[id, ends] : pairs)
            for (int fd : ends)
                if (fd >= 0) ::close(fd);
    };
    auto set = [](int fd, int name, int value) {
        return ::setsockopt(fd, SOL_SOCKET, name, &value, sizeof value) == 0;
    };
    std::vector<std::pair<size_t, int>> taken; // record, its end
    std::set<std::pair<uint64_t, uint32_t>> seen;
    for (size_t i = 0; i < tree.shared.size(); i++) {
        const tree_shared_file &s = tree.shared[i];
        if (s.record.kind != image::file_socket_pair) continue;
        image::socket_state st;
        std::memcpy(&st, s.data.data(), sizeof st); // (the verifier checked its size)
        auto it = pairs.find(s.record.pipe_id);
        if (it == pairs.end()) {
            int sv[2];
            if (::socketpair(AF_UNIX, (int)st.type | SOCK_CLOEXEC, 0, sv) != 0) {
                close_pairs();
                return sys_error("cannot create a socket pair of the tree");
            }
            it = pairs.insert({s.record.pipe_id, {sv[0], sv[1]}}).first;
        }
        int mine = it->second[st.end], other = it->second[1 - st.end];
        if (!seen.insert({s.record.pipe_id, st.end}).second) {
            close_pairs();
            return error{"the image is corrupt (a socket end twice in its tree)"};
        }
        size_t queued = s.data.size() - sizeof st;
        int was = 0;
        socklen_t len = sizeof was;
        bool ok = set(mine, SO_SNDBUF, (int)st.sndbuf / 2) &&
                  set(mine, SO_RCVBUF, (int)st.rcvbuf / 2) &&
                  (!st.passcred || set(mine, SO_PASSCRED, 1));
        if (ok && queued) {
            ok = ::getsockopt(other, SOL_SOCKET, SO_SNDBUF, &was, &len) == 0 &&
                 set(other, SO_SNDBUF, (int)queued + 65536) &&
                 ::send(other, s.data.data() + sizeof st, queued, MSG_DONTWAIT | MSG_NOSIGNAL) ==
                     (ssize_t)queued &&
                 set(other, SO_SNDBUF, was / 2);
        }
        if (!ok) {
            close_pairs();
            return sys_error("cannot make a socket pair of the tree as it was");
        }
        (void)::fcntl(mine, F_SETFL, s.record.flags & (O_NONBLOCK | O_APPEND));
        taken.push_back({i, mine});
    }
    // Each end once its pair's data is in (an end is handed over only now: its refill may need
    // it as the sender).
    for (auto [i, fd] : taken) {
        fds[i] = fd;
        for (auto &[id, ends] : pairs)
            for (int &e : ends)
                if (e == fd) e = -1;
    }
    close_pairs(); // ends no record took
    return {};
}

result<std::vector<int>> make_shared_files(const tree_layout &tree, uid_t owner_uid, int image_fd) {
    std::vector<int> fds(tree.shared.size(), -1);
    auto fail = [&](error e) -> result<std::vector<int>> {
        for (int fd : fds)
            if (fd >= 0) ::close(fd);
        return e;
    };
    for (size_t i = 0; i < tree.shared.size(); i++) {
        const tree_shared_file &s = tree.shared[i];
        if (s.record.kind != image::tree_shared_memory) continue;
        fds[i] = shared_memory_object((uint64_t)s.record.offset);
        if (fds[i] < 0) return fail(sys_error("cannot make the tree's shared memory"));
        if (auto r = fill_shared_memory(image_fd, s, fds[i]); !r) return fail(r.err());
    }
    // Pipes: one new pipe per pipe_id, its data written once.
    std::map<uint64_t, std::pair<int, int>> pipes;
    for (size_t i = 0; i < tree.shared.size(); i++) {
        const tree_shared_file &s = tree.shared[i];
        uint32_t k = s.record.kind;
        if (k != image::file_pipe_read && k != image::file_pipe_write &&
            k != image::file_pipe_reopen)
            continue;
        auto it = pipes.find(s.record.pipe_id);
        if (it == pipes.end()) {
            int p[2];
            if (::pipe2(p, O_CLOEXEC) != 0) return fail(sys_error("cannot create a pipe"));
            if (s.record.pipe_size) (void)::fcntl(p[1], F_SETPIPE_SZ, (int)s.record.pipe_size);
            if (!s.data.empty() &&
                ::write(p[1], s.data.data(), s.data.size()) != (ssize_t)s.data.size()) {
                ::close(p[0]), ::close(p[1]);
                return fail(sys_error("cannot refill a pipe of the tree"));
            }
            it = pipes.insert({s.record.pipe_id, {p[0], p[1]}}).first;
            fds[i] = -1;
        }
    }
    for (size_t i = 0; i < tree.shared.size(); i++) {
        const tree_shared_file &s = tree.shared[i];
        auto it = pipes.find(s.record.pipe_id);
        int status_flags =
            s.record.flags & (O_NONBLOCK | O_APPEND | O_ASYNC | O_DIRECT | O_NOATIME);
        if (s.record.kind == image::file_pipe_read || s.record.kind == image::file_pipe_write) {
            int &end =
                s.record.kind == image::file_pipe_read ? it->second.first : it->second.second;
            if (end < 0) return fail(error{"the image is corrupt (a pipe end twice in its tree)"});
            fds[i] = end;
            end = -1; // taken
            (void)::fcntl(fds[i], F_SETFL, status_flags);
        }
    }
    for (size_t i = 0; i < tree.shared.size(); i++) {
        const tree_shared_file &s = tree.shared[i];
        if (s.record.kind != image::file_pipe_reopen) continue;
        int from = -1;
        for (size_t j = 0; j < tree.shared.size() && from < 0; j++)
            if (tree.shared[j].record.pipe_id == s.record.pipe_id && fds[j] >= 0 &&
                tree.shared[j].record.kind != image::file_pipe_reopen)
                from = fds[j];
        if (from < 0) return fail(error{"the image is corrupt (a pipe of its tree has no end)"});
        std::string path = "/proc/self/fd/" + std::to_string(from);
        fds[i] = ::open(path.c_str(), (s.record.flags & ~O_CLOEXEC) | O_CLOEXEC);
        if (fds[i] < 0) return fail(sys_error("cannot reopen a pipe of the tree"));
    }
    for (auto &[id, ends] : pipes) { // ends no record took (an image without one of them)
        if (ends.first >= 0) ::close(ends.first);
        if (ends.second >= 0) ::close(ends.second);
    }
    if (auto r = make_socket_pairs(tree, fds); !r) return fail(r.err());
    // Files: opened with no more rights than the image file's owner.
    std::vector<size_t> paths;
    for (size_t i = 0; i < tree.shared.size(); i++)
        if (!tree.shared[i].path.empty()) paths.push_back(i);
    if (paths.empty()) return fds;
    auto name = [&](size_t i) { return tree.shared[i].path; };
    if (::geteuid() != 0 || owner_uid == 0) {
        for (size_t i : paths) {
            fds[i] = open_shared_path(tree.shared[i]);
            if (fds[i] == -2) return fail(error{name(i) + " now names another file"});
            if (fds[i] < 0) return fail(sys_error("cannot reopen " + name(i)));
        }
        return fds;
    }
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
        return fail(sys_error("cannot create a socket pair"));
    passwd pw, *found = nullptr;
    std::vector<char> buf(1 << 16);
    std::vector<gid_t> groups(4096);
    int ngroups = 0;
    gid_t gid = (gid_t)-1;
    if (::getpwuid_r(owner_uid, &pw, buf.data(), buf.size(), &found) == 0 && found) {
        gid = pw.pw_gid;
        ngroups = (int)groups.size();
        if (::getgrouplist(pw.pw_name, pw.pw_gid, groups.data(), &ngroups) < 0) ngroups = 0;
    }
    pid_t child = ::fork();
    if (child < 0) {
        ::close(sv[0]), ::close(sv[1]);
        return fail(sys_error("cannot fork"));
    }
    if (child == 0) {
        ::close(sv[0]);
        if (::setgroups((size_t)ngroups, groups.data()) != 0 ||
            (gid != (gid_t)-1 && ::setresgid(gid, gid, gid) != 0) ||
            ::setresuid(owner_uid, owner_uid, owner_uid) != 0)
            ::_exit(2);
        for (size_t i : paths) {
            int fd = open_shared_path(tree.shared[i]);
            int err = fd == -2 ? -2 : fd < 0 ? errno : 0;
            char data[sizeof(int)];
            std::memcpy(data, &err, sizeof err);
            iovec io{data, sizeof data};
            alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int))] = {};
            msghdr m{};
            m.msg_iov = &io, m.msg_iovlen = 1;
            if (fd >= 0) {
                m.msg_control = ctl, m.msg_controllen = sizeof ctl;
                cmsghdr *c = CMSG_FIRSTHDR(&m);
                c->cmsg_level = SOL_SOCKET, c->cmsg_type = SCM_RIGHTS;
                c->cmsg_len = CMSG_LEN(sizeof(int));
                std::memcpy(CMSG_DATA(c), &fd, sizeof fd);
            }
            if (::sendmsg(sv[1], &m, 0) < 0) ::_exit(3);
            if (fd >= 0) ::close(fd);
        }
        ::_exit(0);
    }
    ::close(sv[1]);
    std::string why;
    for (size_t i : paths) {
        int err = 0;
        iovec io{&err, sizeof err};
        alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int))] = {};
        msghdr m{};
        m.msg_iov = &io, m.msg_iovlen = 1, m.msg_control = ctl, m.msg_controllen = sizeof ctl;
        if (::recvmsg(sv[0], &m, MSG_CMSG_CLOEXEC) != (ssize_t)sizeof err) {
            why = "cannot reopen " + name(i) + " as the image's owner";
            break;
        }
        if (cmsghdr *c = CMSG_FIRSTHDR(&m); c && c->cmsg_type == SCM_RIGHTS)
            std::memcpy(&fds[i], CMSG_DATA(c), sizeof(int));
        if (err == -2)
            why = name(i) + " now names another file";
        else if (err)
            why = "cannot reopen " + name(i) + ": " + std::strerror(err);
        if (!why.empty()) break;
    }
    ::close(sv[0]);
    int ws;
    ::waitpid(child, &ws, 0);
    if (!why.empty()) return fail(error{why});
    return fds;
}

} // namespace ghost::core
