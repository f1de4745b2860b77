// SPDX-License-Identifier: Apache-2.0
// Descriptor classification for the exporter. The rule: a descriptor goes into the image only as
// something the restorer rebuilds exactly; anything else refuses the checkpoint here, while the
// process is still parked and nothing has been killed. Open file descriptions are compared with
// kcmp(KCMP_FILE); the state of a pipe or pty is read through a descriptor of our own on the same
// object (pidfd_getfd, or a reopen of /proc/PID/fd/N for a pipe).
#include "ghost-core/export_files.h"

#include <fcntl.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <linux/unix_diag.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <time.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstring>
#include <map>
#include <vector>
#include <optional>
#include <set>

#include "ghost-core/proc_reader.h"
#include "runtime/uapi.h"

namespace ghost::core {

namespace {

constexpr long nsfs_magic = 0x6e736673;
constexpr long mqueue_magic = 0x19800202;
constexpr int kcmp_file = 0;
constexpr int kcmp_epoll_tfd = 7;
struct kcmp_epoll_slot { // linux/kcmp.h
    uint32_t efd, tfd, toff;
};

bool starts_with(const std::string &s, std::string_view prefix) {
    return s.compare(0, prefix.size(), prefix) == 0;
}

bool ends_with(const std::string &s, std::string_view suffix) {
    return s.size() >= suffix.size() &&
           s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

class owned_fd {
  public:
    explicit owned_fd(int fd = -1) : fd_(fd) {}
    owned_fd(owned_fd &&o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
    owned_fd &operator=(owned_fd &&o) noexcept {
        std::swap(fd_, o.fd_);
        return *this;
    }
    ~owned_fd() {
        if (fd_ >= 0) ::close(fd_);
    }
    int get() const { return fd_; }

  private:
    int fd_;
};

struct fd_entry {
    int fd = -1;
    std::string link;
    fd_info info;
    struct stat sb {};
    int same_as = -1; // the lowest descriptor on the same open file description, if not this one
};

// The lines of a /proc listing (fdinfo, mountinfo), without their newlines.
std::vector<std::string> lines_of(const std::string &text) {
    std::vector<std::string> lines;
    for (size_t at = 0; at < text.size();) {
        size_t end = text.find('\n', at);
        if (end == std::string::npos) end = text.size();
        lines.push_back(text.substr(at, end - at));
        at = end + 1;
    }
    return lines;
}

// The rest of the fdinfo line that starts with `key`, if there is one.
std::optional<std::string> fdinfo_field(const std::string &text, std::string_view key) {
    for (const std::string &line : lines_of(text))
        if (line.compare(0, key.size(), key) == 0) return line.substr(key.size());
    return std::nullopt;
}

// What sock_diag tells of a Unix socket, by inode (in the exporter's network namespace).
struct unix_socket_info {
    uint8_t state = 0;    // TCP_ESTABLISHED (1) for a connected one
    uint32_t peer = 0;    // the peer's inode, 0 if none
    bool named = false;   // bound to a path or an abstract name
    uint8_t shutdown = 0; // SHUT_RD/SHUT_WR bits (RCV_SHUTDOWN 1, SEND_SHUTDOWN 2)
    uint32_t backlog = 0; // a listening socket's (its RQLEN's write queue)
};

// A sock_diag socket that has sent `req` (a netlink header and its request), to read the answer.
template <class Req> result<owned_fd> sock_diag_ask(Req &req, uint16_t flags) {
    owned_fd nl(::socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG));
    if (nl.get() < 0) return sys_error("cannot open a sock_diag socket");
    req.h.nlmsg_len = sizeof req;
    req.h.nlmsg_type = SOCK_DIAG_BY_FAMILY;
    req.h.nlmsg_flags = flags;
    if (::send(nl.get(), &req, sizeof req, 0) != (ssize_t)sizeof req)
        return sys_error("cannot query sock_diag");
    return nl;
}

result<unix_socket_info> unix_socket(uint64_t ino) {
    struct {
        nlmsghdr h;
        unix_diag_req r;
    } req{};
    req.r.sdiag_family = AF_UNIX;
    req.r.udiag_states = ~0u;
    req.r.udiag_ino = (uint32_t)ino;
    req.r.udiag_show = UDIAG_SHOW_NAME | UDIAG_SHOW_PEER | UDIAG_SHOW_RQLEN;
    req.r.udiag_cookie[0] = req.r.udiag_cookie[1] = ~0u; // INET_DIAG_NOCOOKIE
    auto nl = sock_diag_ask(req, NLM_F_REQUEST);
    if (!nl) return nl.err();
    alignas(nlmsghdr) char buf[8192];
    ssize_t n = ::recv(nl->get(), buf, sizeof buf, 0);
    if (n < 0) return sys_error("cannot read sock_diag's answer");
    auto *h = (nlmsghdr *)buf;
    if (!NLMSG_OK(h, (size_t)n) || h->nlmsg_type != SOCK_DIAG_BY_FAMILY)
        return error{"sock_diag does not know the socket (is unix_diag available?)"};
    auto *m = (unix_diag_msg *)NLMSG_DATA(h);
    unix_socket_info info;
    info.state = m->udiag_state;
    int len = (int)(h->nlmsg_len - NLMSG_LENGTH(sizeof *m));
    for (auto *a = (rtattr *)(m + 1); RTA_OK(a, len); a = RTA_NEXT(a, len)) {
        if (a->rta_type == UNIX_DIAG_NAME) info.named = true;
        if (a->rta_type == UNIX_DIAG_PEER && RTA_PAYLOAD(a) >= 4)
            std::memcpy(&info.peer, RTA_DATA(a), 4);
        if (a->rta_type == UNIX_DIAG_SHUTDOWN && RTA_PAYLOAD(a) >= 1)
            info.shutdown = *(uint8_t *)RTA_DATA(a);
        if (a->rta_type == UNIX_DIAG_RQLEN && RTA_PAYLOAD(a) >= sizeof(unix_diag_rqlen))
            info.backlog = ((unix_diag_rqlen *)RTA_DATA(a))->udiag_wqueue;
    }
    return info;
}

// A listening TCP socket's backlog, from inet_diag (a dump of the listeners of its family).
result<uint32_t> tcp_listen_backlog(int family, uint64_t ino) {
    struct {
        nlmsghdr h;
        inet_diag_req_v2 r;
    } req{};
    req.r.sdiag_family = (uint8_t)family;
    req.r.sdiag_protocol = IPPROTO_TCP;
    req.r.idiag_states = 1u << 10; // TCP_LISTEN
    auto nl = sock_diag_ask(req, NLM_F_REQUEST | NLM_F_DUMP);
    if (!nl) return nl.err();
    alignas(nlmsghdr) char buf[32768];
    for (;;) {
        ssize_t n = ::recv(nl->get(), buf, sizeof buf, 0);
        if (n <= 0) return sys_error("cannot read sock_diag's answer");
        for (auto *h = (nlmsghdr *)buf; NLMSG_OK(h, (size_t)n); h = NLMSG_NEXT(h, n)) {
            if (h->nlmsg_type == NLMSG_DONE || h->nlmsg_type == NLMSG_ERROR)
                return error{"sock_diag does not list the listening socket (is inet_diag "
                             "available?)"};
            auto *m = (inet_diag_msg *)NLMSG_DATA(h);
            if (m->idiag_inode == ino) return m->idiag_wqueue;
        }
    }
}

bool is_pty_slave(dev_t rdev) {
    return major(rdev) >= 136 && major(rdev) <= 143;
}
uint64_t pty_index(dev_t rdev) {
    return (uint64_t)(major(rdev) - 136) * 256 + minor(rdev);
}
bool is_memory_device(dev_t rdev) { // null, zero, full, random, urandom: no state to lose
    unsigned m = minor(rdev);
    return major(rdev) == 1 && (m == 3 || m == 5 || m == 7 || m == 8 || m == 9);
}

class classifier {
  public:
    classifier(pid_t pid, object_table &objects, const std::map<int, uint32_t> &tree_shared)
        : pid_(pid), objects_(objects), tree_shared_(tree_shared) {}
    ~classifier() {
        if (pidfd_ >= 0) ::close(pidfd_);
    }

    result<std::vector<exported_file>> run(const std::vector<int> &internal) {
        GHOST_TRY(read_entries(internal));
        GHOST_TRY(read_ctty());
        GHOST_TRY(find_duplicates());
        std::vector<exported_file> masters, others, dups;
        std::map<int, bool> inherited;
        for (const fd_entry &e : entries_) {
            exported_file f;
            f.record.fd = e.fd;
            f.record.cloexec = (e.info.flags & O_CLOEXEC) != 0;
            if (auto it = tree_shared_.find(e.fd); it != tree_shared_.end()) {
                if (!e.info.locks.empty())
                    return refuse(e, "a file lock on a description shared in a process tree "
                                     "cannot be restored");
                f.record.kind = image::file_tree_shared;
                f.record.pipe_id = it->second;
                others.push_back(std::move(f));
                continue;
            }
            // A std stream on the description of an inherited one is inherited too: a dup of
            // the restarter's stdin would become the process's stdout.
            if (e.same_as >= 0 && !(e.fd <= 2 && inherited[e.same_as])) {
                f.record.kind = image::file_dup;
                f.record.dup_of = e.same_as;
                GHOST_TRY(add_locks(e, f));
                dups.push_back(std::move(f));
                continue;
            }
            if (e.same_as >= 0) {
                f.record.kind = image::file_inherit;
                others.push_back(std::move(f));
                continue;
            }
            f.record.flags = e.info.flags & ~O_CLOEXEC;
            GHOST_TRY(classify(e, f));
            GHOST_TRY(add_locks(e, f));
            inherited[e.fd] = f.record.kind == image::file_inherit;
            (f.record.kind == image::file_pty_master ? masters : others).push_back(std::move(f));
        }
        std::vector<exported_file> out = std::move(masters);
        for (auto *part : {&others, &dups})
            for (auto &f : *part)
                out.push_back(std::move(f));
        for (auto &f : out) {
            f.record.path_len = (uint32_t)f.path.size();
            f.record.data_len = (uint32_t)f.data.size();
        }
        return out;
    }

  private:
    // The file locks shown on this descriptor, as records the restorer takes again on it: flock
    // and OFD locks of its open file description (on the first descriptor of that description),
    // POSIX record locks of the process taken through it (once, however many descriptors show
    // them). Only on descriptions the restorer opens anew, of the same file.
    result<void> add_locks(const fd_entry &e, exported_file &f) {
        for (const fd_lock &l : e.info.locks) {
            image::file_lock_record r{};
            r.fd = e.fd;
            r.write = l.access == "WRITE";
            if (!r.write && l.access != "READ")
                return refuse(e, "it holds a file lock of a kind ghost does not carry (" + l.kind +
                                     " " + l.access + ")");
            if (l.kind == "POSIX") {
                r.kind = image::lock_posix;
                r.start = l.start, r.end = l.end;
                std::string key = l.file + " " + std::to_string(l.start) + " " +
                                  std::to_string(l.end) + " " + l.access;
                if (!posix_locks_.insert(key).second) continue;
            } else if (l.kind == "OFDLCK" || l.kind == "FLOCK") {
                if (e.same_as >= 0) continue; // the description's, on its first descriptor
                r.kind = l.kind == "FLOCK" ? image::lock_flock : image::lock_ofd;
                r.start = l.kind == "FLOCK" ? 0 : l.start;
                r.end = l.kind == "FLOCK" ? -1 : l.end;
            } else {
                return refuse(e, "it holds a file lease or lock of a kind ghost does not carry (" +
                                     l.kind + ")");
            }
            uint32_t kind =
                f.record.kind == image::file_dup ? kind_of_[f.record.dup_of] : f.record.kind;
            if (kind != image::file_regular && kind != image::file_directory &&
                kind != image::file_object)
                return refuse(e, "a file lock on this kind of descriptor cannot be restored");
            if (++lock_count_ > image::max_file_locks)
                return refuse(e, "the process holds more than " +
                                     std::to_string(image::max_file_locks) + " file locks");
            f.locks.push_back(r);
        }
        kind_of_[e.fd] = f.record.kind;
        return {};
    }

    std::string fd_path(int fd) const {
        return "/proc/" + std::to_string(pid_) + "/fd/" + std::to_string(fd);
    }

    error refuse(const fd_entry &e, const std::string &why) const {
        return error{"cannot checkpoint descriptor " + std::to_string(e.fd) + " (" + e.link +
                     ") of pid " + std::to_string(pid_) + ": " + why};
    }

    result<void> read_entries(const std::vector<int> &internal) {
        auto fds = list_fds(pid_);
        if (!fds) return fds.err();
        for (int fd : *fds) {
            if (std::find(internal.begin(), internal.end(), fd) != internal.end()) continue;
            fd_entry e;
            e.fd = fd;
            auto link = read_link(fd_path(fd));
            auto info = read_fdinfo(pid_, fd);
            // A descriptor that vanished was the agent's (the program's threads are parked).
            if (!link && link.err().sys_errno == ENOENT) continue;
            if (!link) return link.err();
            if (!info) return info.err();
            if (::stat(fd_path(fd).c_str(), &e.sb) != 0) {
                if (errno == ENOENT) continue;
                return sys_error("cannot stat descriptor " + std::to_string(fd) + " of pid " +
                                 std::to_string(pid_));
            }
            e.link = *link, e.info = *info;
            entries_.push_back(std::move(e));
        }
        return {};
    }

    // The controlling terminal: /proc/PID/stat field 7 (tty_nr), 0 when there is none.
    result<void> read_ctty() {
        auto stat = read_text("/proc/" + std::to_string(pid_) + "/stat");
        if (!stat) return stat.err();
        size_t at = stat->rfind(')');
        unsigned long long tty_nr = 0;
        if (at == std::string::npos ||
            std::sscanf(stat->c_str() + at + 1, " %*c %*d %*d %*d %llu", &tty_nr) != 1)
            return error{"cannot parse /proc/" + std::to_string(pid_) + "/stat"};
        ctty_ = tty_nr
                    ? makedev((tty_nr >> 8) & 0xfff, (tty_nr & 0xff) | ((tty_nr >> 12) & 0xfff00))
                    : 0;
        return {};
    }

    // Descriptors made by dup() share one open file description (offset, flags): restored as one.
    result<void> find_duplicates() {
        for (size_t i = 0; i < entries_.size(); i++) {
            fd_entry &e = entries_[i];
            for (size_t j = 0; j < i; j++) {
                const fd_entry &o = entries_[j];
                if (o.same_as >= 0 || o.sb.st_ino != e.sb.st_ino || o.sb.st_dev != e.sb.st_dev)
                    continue;
                long r = ::syscall(SYS_kcmp, pid_, pid_, kcmp_file, o.fd, e.fd);
                if (r < 0)
                    return sys_error("cannot compare descriptors " + std::to_string(o.fd) +
                                     " and " + std::to_string(e.fd) + " of pid " +
                                     std::to_string(pid_) + " (kcmp)");
                if (r == 0) {
                    e.same_as = o.fd;
                    break;
                }
            }
        }
        return {};
    }

    // A descriptor of ours on the target's open file description.
    result<owned_fd> grab(const fd_entry &e) {
        if (pidfd_ < 0) {
            pidfd_ = (int)::syscall(SYS_pidfd_open, pid_, 0);
            if (pidfd_ < 0) return sys_error("cannot open a pidfd of pid " + std::to_string(pid_));
        }
        int fd = (int)::syscall(SYS_pidfd_getfd, pidfd_, e.fd, 0);
        if (fd < 0)
            return sys_error("cannot take a copy of descriptor " + std::to_string(e.fd) +
                             " of pid " + std::to_string(pid_));
        return owned_fd(fd);
    }

    result<void> classify(const fd_entry &e, exported_file &f) {
        bool std_stream = e.fd <= 2;
        if (starts_with(e.link, "anon_inode:")) return classify_anon(e, f);
        mode_t type = e.sb.st_mode & S_IFMT;
        if (e.info.flags & O_PATH) return classify_path(e, f); // whatever it names
        if (type == S_IFREG || type == S_IFDIR) return classify_path(e, f);
        if (type == S_IFIFO && !e.link.empty() && e.link[0] == '/') return classify_fifo(e, f);
        if (type == S_IFCHR) return classify_device(e, f);
        if (type == S_IFIFO && starts_with(e.link, "pipe:")) return classify_pipe(e, f);
        // A std stream that is one end of a socketpair the process holds both ends of is made
        // again with its pair, as a pipe is (taking the restarting command's stream instead
        // would leave the other end with no peer).
        if (std_stream && type == S_IFSOCK && own_socket_pair(e)) return classify_socket(e, f);
        if (std_stream && (type == S_IFIFO || type == S_IFSOCK)) {
            f.record.kind = image::file_inherit; // the restarting command's own stream
            return {};
        }
        if (type == S_IFSOCK) return classify_socket(e, f);
        if (type == S_IFIFO) return refuse(e, "a named pipe cannot be restored");
        return refuse(e, "this kind of descriptor cannot be restored");
    }

    // Anonymous-inode descriptors whose whole state fdinfo shows are made anew with it. Their
    // events (an eventfd's counter, a signalfd's pending signals) are the process's own: nothing
    // else holds them, or their description would be shared in its tree (refused there).
    result<void> classify_anon(const fd_entry &e, exported_file &f) {
        const std::string &t = e.info.text;
        auto put = [&f](const auto &state) {
            f.data.assign((const char *)&state, sizeof state);
            return result<void>{};
        };
        if (e.link == "anon_inode:[eventfd]") {
            image::eventfd_state st{};
            auto count = fdinfo_field(t, "eventfd-count:");
            auto sem = fdinfo_field(t, "eventfd-semaphore:");
            if (!count || !sem)
                return refuse(e, "this kernel does not show an eventfd's state (Linux 6.6 does)");
            st.count = std::strtoull(count->c_str(), nullptr, 16);
            st.semaphore = std::atoi(sem->c_str()) != 0;
            f.record.kind = image::file_eventfd;
            return put(st);
        }
        if (e.link == "anon_inode:[timerfd]") {
            image::timerfd_state st{};
            auto clock = fdinfo_field(t, "clockid:");
            auto ticks = fdinfo_field(t, "ticks:");
            auto flags = fdinfo_field(t, "settime flags:");
            auto value = fdinfo_field(t, "it_value:");
            auto interval = fdinfo_field(t, "it_interval:");
            unsigned long long v[2], iv[2];
            if (!clock || !ticks || !flags || !value || !interval ||
                std::sscanf(value->c_str(), " (%llu, %llu)", &v[0], &v[1]) != 2 ||
                std::sscanf(interval->c_str(), " (%llu, %llu)", &iv[0], &iv[1]) != 2)
                return refuse(e, "cannot read the timer's state");
            st.clock = std::atoi(clock->c_str());
            st.ticks = std::strtoull(ticks->c_str(), nullptr, 10);
            st.settime_flags = (uint32_t)std::strtoul(flags->c_str(), nullptr, 8);
            st.value[0] = (int64_t)v[0], st.value[1] = (int64_t)v[1];
            st.interval[0] = (int64_t)iv[0], st.interval[1] = (int64_t)iv[1];
            bool settable = st.clock == CLOCK_REALTIME || st.clock == CLOCK_REALTIME_ALARM;
            if ((st.settime_flags & 1 /* TFD_TIMER_ABSTIME */) && settable &&
                (st.value[0] || st.value[1])) {
                struct timespec now;
                ::clock_gettime(CLOCK_REALTIME, &now);
                st.value[0] += now.tv_sec, st.value[1] += now.tv_nsec;
                if (st.value[1] >= 1000000000) st.value[0]++, st.value[1] -= 1000000000;
            }
            f.record.kind = image::file_timerfd;
            return put(st);
        }
        if (e.link == "anon_inode:[signalfd]") {
            auto mask = fdinfo_field(t, "sigmask:");
            if (!mask) return refuse(e, "cannot read the signalfd's mask");
            uint64_t m = std::strtoull(mask->c_str(), nullptr, 16);
            f.record.kind = image::file_signalfd;
            return put(m);
        }
        if (e.link == "anon_inode:[eventpoll]") return classify_epoll(e, f);
        if (e.link == "anon_inode:inotify") return classify_inotify(e, f);
        return refuse(e, "this kind of descriptor cannot be restored");
    }

    // An epoll instance's watches: fdinfo lists each with the descriptor number it was added
    // with. That number must still hold the very file watched (kcmp), or the restored watch
    // would be on another file, or on none: a file closed under that number but still open
    // elsewhere stays watched under it.
    result<void> classify_epoll(const fd_entry &e, exported_file &f) {
        std::vector<image::epoll_watch> watches;
        std::map<int, uint32_t> seen; // watches per descriptor number so far (kcmp's toff)
        for (const std::string &line : lines_of(e.info.text)) {
            if (!starts_with(line, "tfd:")) continue;
            int fd;
            unsigned events;
            unsigned long long data;
            if (std::sscanf(line.c_str(), "tfd: %d events: %x data: %llx", &fd, &events, &data) !=
                3)
                return refuse(e, "cannot read its watch list");
            kcmp_epoll_slot slot{(uint32_t)e.fd, (uint32_t)fd, seen[fd]++};
            bool held = std::any_of(entries_.begin(), entries_.end(),
                                    [fd](const fd_entry &o) { return o.fd == fd; });
            if (!held || ::syscall(SYS_kcmp, pid_, pid_, kcmp_epoll_tfd, fd, &slot) != 0)
                return refuse(e, "it watches a file under descriptor number " + std::to_string(fd) +
                                     ", which no longer holds that file (it was closed while "
                                     "another descriptor kept it open)");
            watches.push_back({fd, events, data});
        }
        epoll_watches_ += watches.size();
        if (epoll_watches_ > image::max_epoll_watches)
            return refuse(e, "the process's epoll instances watch more than " +
                                 std::to_string(image::max_epoll_watches) + " descriptors");
        f.record.kind = image::file_epoll;
        f.data.assign((const char *)watches.data(), watches.size() * sizeof(image::epoll_watch));
        return {};
    }

    // A socket is carried when it is one end of a connected pair of unnamed Unix sockets whose
    // other end the process holds too (a socketpair, as an event loop's wake-up channel). A pair
    // with ends in several processes of a tree is the tree's (tree_shared).
    result<void> classify_socket(const fd_entry &e, exported_file &f) {
        auto own = grab(e);
        if (!own) return own.err();
        auto endpoint = read_socket_endpoint(own->get(), e.sb.st_ino);
        if (!endpoint) return refuse(e, endpoint.err().message);
        if (*endpoint) {
            f.record.kind = image::file_socket_endpoint;
            f.data.assign((const char *)&**endpoint, sizeof **endpoint);
            return {};
        }
        auto end = read_socket_pair_end(own->get(), e.sb.st_ino);
        if (!end) return refuse(e, end.err().message);
        if (!holds_socket(end->peer, e.sb.st_dev)) // (the peer read_socket_pair_end found)
            return refuse(e, "a socket to another process cannot be restored");
        f.record.kind = image::file_socket_pair;
        f.record.pipe_id = std::min<uint64_t>(e.sb.st_ino, end->peer);
        f.data = std::move(end->record_data);
        return {};
    }

    // Whether a socket is one end of a socketpair whose other end the process holds too.
    bool own_socket_pair(const fd_entry &e) {
        auto info = unix_socket(e.sb.st_ino);
        return info && info->peer && holds_socket(info->peer, e.sb.st_dev);
    }
    bool holds_socket(uint64_t ino, dev_t dev) const {
        return std::any_of(entries_.begin(), entries_.end(), [&](const fd_entry &o) {
            return o.sb.st_ino == ino && (o.sb.st_mode & S_IFMT) == S_IFSOCK && o.sb.st_dev == dev;
        });
    }

    // An inotify instance's watches: fdinfo names each watched file by a file handle, turned
    // back into a path here (open_by_handle_at, which needs CAP_DAC_READ_SEARCH). Events already
    // queued cannot be read without taking them from the process: such an instance is refused.
    result<void> classify_inotify(const fd_entry &e, exported_file &f) {
        auto queued = queued_bytes(e);
        if (!queued) return queued.err();
        if (*queued)
            return refuse(e, std::to_string(*queued) +
                                 " bytes of inotify events are queued, which cannot be "
                                 "restored (try again once the program has read them)");
        std::map<int32_t, std::pair<uint32_t, std::string>> by_number; // (fdinfo: newest first)
        for (const std::string &line : lines_of(e.info.text)) {
            if (!starts_with(line, "inotify wd:")) continue;
            unsigned wd, sdev, mask, ignored, bytes, type;
            unsigned long ino;
            char hex[2 * 128 + 1];
            if (std::sscanf(line.c_str(),
                            "inotify wd:%x ino:%lx sdev:%x mask:%x ignored_mask:%x "
                            "fhandle-bytes:%x fhandle-type:%x f_handle:%256s",
                            &wd, &ino, &sdev, &mask, &ignored, &bytes, &type, hex) != 8 ||
                bytes > 128 || std::strlen(hex) != 2 * bytes)
                return refuse(e, "cannot read its watch list");
            if (++inotify_watches_ > image::max_inotify_watches || wd > image::max_inotify_wd)
                return refuse(e,
                              "it has more watches, or higher watch numbers, than ghost carries");
            auto path = watched_path(makedev(sdev >> 20, sdev & 0xfffff), ino, bytes, type, hex);
            if (!path) return refuse(e, path.err().message);
            by_number[(int32_t)wd] = {mask, *path};
        }
        std::string watches;
        for (const auto &[wd, watch] : by_number) {
            image::inotify_watch w{wd, watch.first, (uint32_t)watch.second.size() + 1, 0};
            watches.append((const char *)&w, sizeof w);
            watches.append(watch.second.c_str(), watch.second.size() + 1);
        }
        f.record.kind = image::file_inotify;
        f.data = std::move(watches);
        return {};
    }

    // The path of the file a handle of the inotify fdinfo names, checked to be that file.
    static result<std::string> watched_path(dev_t dev, unsigned long ino, unsigned bytes,
                                            unsigned type, const char *hex) {
        std::string mount;
        auto info = read_text("/proc/self/mountinfo");
        if (!info) return info.err();
        std::string want = std::to_string(major(dev)) + ":" + std::to_string(minor(dev));
        for (const std::string &line : lines_of(*info)) {
            char id[32], point[4096];
            if (std::sscanf(line.c_str(), "%*d %*d %31s %*s %4095s", id, point) == 2 &&
                want == id) {
                mount = point;
                break;
            }
        }
        for (size_t i = 0; (i = mount.find('\\', i)) != std::string::npos; i++)
            if (i + 3 < mount.size()) // mountinfo escapes spaces and such as \ooo
                mount.replace(i, 4, 1,
                              (char)std::strtol(mount.substr(i + 1, 3).c_str(), nullptr, 8));
        if (mount.empty()) return error{"a watched file is on a filesystem not mounted here"};
        owned_fd mfd(::open(mount.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)); // (not O_PATH)
        if (mfd.get() < 0) return sys_error("cannot open the mount " + mount);
        std::vector<char> buf(sizeof(file_handle) + bytes);
        auto *fh = (file_handle *)buf.data();
        fh->handle_bytes = bytes;
        fh->handle_type = (int)type;
        for (unsigned i = 0; i < bytes; i++)
            fh->f_handle[i] =
                (unsigned char)std::strtoul(std::string(hex + 2 * i, 2).c_str(), nullptr, 16);
        owned_fd file(::open_by_handle_at(mfd.get(), fh, O_PATH | O_CLOEXEC));
        if (file.get() < 0 && errno == EPERM)
            return error{"finding the path of a watched file needs CAP_DAC_READ_SEARCH (root)"};
        if (file.get() < 0) return sys_error("a watched file cannot be found");
        auto path = read_link("/proc/self/fd/" + std::to_string(file.get()));
        if (!path) return path.err();
        struct stat now;
        if (path->empty() || (*path)[0] != '/' || ends_with(*path, " (deleted)") ||
            ::stat(path->c_str(), &now) != 0 || now.st_ino != ino || now.st_dev != dev)
            return error{"a watched file (" + *path + ") has no path that names it"};
        return *path;
    }

    // Regular files and directories, and O_PATH descriptors of anything, are reopened by path:
    // the path must still name that very file.
    result<void> classify_path(const fd_entry &e, exported_file &f) {
        bool o_path = (e.info.flags & O_PATH) != 0;
        struct statfs on {};
        if (::statfs(fd_path(e.fd).c_str(), &on) != 0) on.f_type = 0;
        if (on.f_type == mqueue_magic) return refuse(e, "a POSIX message queue cannot be restored");
        if (e.link.empty() || e.link[0] != '/') {
            if (on.f_type == nsfs_magic)
                return refuse(e, "a namespace descriptor cannot be restored");
            return refuse(e, "it has no path to reopen it by");
        }
        if (ends_with(e.link, " (deleted)")) {
            if (o_path) return refuse(e, "the file was deleted");
            if ((e.sb.st_mode & S_IFMT) != S_IFREG) return refuse(e, "the directory was deleted");
            auto id = objects_.from_descriptor(e.fd, e.sb, e.link); // a memfd or deleted file
            if (!id) return refuse(e, id.err().message);
            f.record.kind = image::file_object;
            f.record.pipe_id = *id;
            f.record.offset = e.info.pos;
            return {};
        }
        // The process's own /proc files (its smaps, status...) are its own again after a restore:
        // they are reopened through /proc/self. Other processes' are not carried, nor per-thread
        // ones (thread ids change).
        std::string own = "/proc/" + std::to_string(pid_) + "/";
        bool self_proc = starts_with(e.link, own) && !starts_with(e.link, own + "task/");
        if (!self_proc && starts_with(e.link, "/proc/") && e.link.size() > 6 &&
            std::isdigit(e.link[6]))
            return refuse(e, "a /proc file of another process or thread cannot be restored");
        struct stat now; // (an O_PATH|O_NOFOLLOW descriptor may name a symbolic link itself)
        int r =
            S_ISLNK(e.sb.st_mode) ? ::lstat(e.link.c_str(), &now) : ::stat(e.link.c_str(), &now);
        if (r != 0)
            return refuse(e, std::string("its path cannot be reopened: ") + std::strerror(errno));
        if (now.st_dev != e.sb.st_dev || now.st_ino != e.sb.st_ino)
            return refuse(e, "its path now names another file");
        f.record.kind = o_path                               ? image::file_path
                        : (e.sb.st_mode & S_IFMT) == S_IFREG ? image::file_regular
                                                             : image::file_directory;
        f.record.offset = e.info.pos;
        f.path = self_proc ? "/proc/self/" + e.link.substr(own.size()) : e.link;
        if (self_proc && e.info.pos > 0 && f.record.kind == image::file_regular &&
            (f.path == "/proc/self/maps" || f.path == "/proc/self/smaps")) {
            auto text = read_text(e.link); // what the parked process reads there
            if (!text) return refuse(e, "cannot read it: " + text.err().message);
            image::proc_maps_position at = maps_position(*text, (uint64_t)e.info.pos);
            f.data.assign((const char *)&at, sizeof at);
        }
        return {};
    }

    // Whether [line, end) of a listing is an entry's first line, "start-end " in hex.
    static bool range_line(const std::string &t, size_t line, size_t end, uint64_t &start) {
        size_t i = line;
        auto hex = [&](uint64_t &v) {
            size_t from = i;
            for (v = 0; i < end && std::isxdigit((unsigned char)t[i]); i++)
                v = v * 16 + (uint64_t)(std::isdigit((unsigned char)t[i])
                                            ? t[i] - '0'
                                            : (t[i] | 0x20) - 'a' + 10);
            return i > from;
        };
        uint64_t stop;
        if (!hex(start) || i >= end || t[i++] != '-' || !hex(stop)) return false;
        return i < end && t[i] == ' ';
    }

    // The entry (a line starting "start-end ") and the line within it that byte `pos` of a
    // maps/smaps listing falls in.
    static image::proc_maps_position maps_position(const std::string &text, uint64_t pos) {
        image::proc_maps_position at{~0ULL, 0, 0};
        for (size_t line = 0, k = 0; line < text.size() && line <= pos; k++) {
            size_t end = text.find('\n', line);
            end = end == std::string::npos ? text.size() : end + 1;
            uint64_t start = 0;
            if (range_line(text, line, end, start)) at.vma_start = start, k = 0;
            if (pos < end) {
                at.line = (uint32_t)k, at.column = (uint32_t)(pos - line);
                return at;
            }
            line = end;
        }
        return {~0ULL, 0, 0}; // at or beyond its end
    }

    // A named pipe is reopened by its path with the same access mode (the restorer holds it open
    // read-write meanwhile, so that no open blocks). Data buffered in it lives only in the kernel
    // while someone holds the pipe open: carried, it would be read twice whenever another process
    // (or the original, after a duplication) still holds it, so a checkpoint is refused instead.
    result<void> classify_fifo(const fd_entry &e, exported_file &f) {
        if (ends_with(e.link, " (deleted)"))
            return refuse(e, "the named pipe was deleted: it cannot be reopened");
        struct stat now;
        if (::stat(e.link.c_str(), &now) != 0)
            return refuse(e, std::string("its path cannot be reopened: ") + std::strerror(errno));
        if (now.st_dev != e.sb.st_dev || now.st_ino != e.sb.st_ino || !S_ISFIFO(now.st_mode))
            return refuse(e, "its path no longer names that named pipe");
        if (e.info.flags & O_DIRECT)
            return refuse(e, "a packet-mode named pipe (O_DIRECT) cannot be restored");
        auto queued = queued_bytes(e);
        if (!queued) return queued.err();
        if (*queued)
            return refuse(e, std::to_string(*queued) +
                                 " unread bytes are buffered in the named pipe, which cannot be "
                                 "restored (read them first)");
        f.record.kind = image::file_fifo;
        f.path = e.link;
        return {};
    }

    // What is queued to be read at a descriptor (FIONREAD), through a copy of it.
    result<int> queued_bytes(const fd_entry &e) {
        auto own = grab(e);
        if (!own) return own.err();
        int queued = 0;
        if (::ioctl(own->get(), FIONREAD, &queued) != 0)
            return refuse(e,
                          std::string("cannot read what is queued in it: ") + std::strerror(errno));
        return queued;
    }

    result<void> classify_device(const fd_entry &e, exported_file &f) {
        dev_t rdev = e.sb.st_rdev;
        bool std_stream = e.fd <= 2;
        if (is_memory_device(rdev)) {
            struct stat now;
            if (e.link[0] != '/' || ::stat(e.link.c_str(), &now) != 0 || now.st_rdev != rdev)
                return refuse(e, "its path no longer names the same device");
            f.record.kind = image::file_device;
            f.path = e.link;
            return {};
        }
        if (rdev == makedev(5, 2)) return classify_pty_master(e, f);
        if (is_pty_slave(rdev) && find_master(pty_index(rdev))) {
            if (rdev == ctty_)
                return refuse(e, "the process's controlling terminal is a pty it holds itself");
            f.record.kind = image::file_pty_slave;
            f.record.pipe_id = pty_index(rdev);
            return {};
        }
        auto own = grab(e);
        if (!own) return own.err();
        image::pty_termios t;
        bool tty = ::ioctl(own->get(), uapi::tcgets2, &t) == 0;
        if (tty && std_stream) {
            f.record.kind = image::file_inherit;
            return {};
        }
        if (tty && (rdev == makedev(5, 0) || (ctty_ && rdev == ctty_))) {
            f.record.kind = image::file_tty; // /dev/tty of whoever restarts it
            return {};
        }
        if (tty)
            return refuse(e, "a terminal other than the controlling terminal cannot be restored");
        return refuse(e, "the device cannot be reopened with its state");
    }

    const fd_entry *find_master(uint64_t index) {
        for (const fd_entry &o : entries_) {
            if (o.same_as >= 0 || o.sb.st_rdev != makedev(5, 2) ||
                (o.sb.st_mode & S_IFMT) != S_IFCHR)
                continue;
            auto own = grab(o);
            unsigned n;
            if (own && ::ioctl(own->get(), uapi::tiocgptn, &n) == 0 && n == index) return &o;
        }
        return nullptr;
    }

    result<void> classify_pty_master(const fd_entry &e, exported_file &f) {
        auto own = grab(e);
        if (!own) return own.err();
        unsigned index;
        if (::ioctl(own->get(), uapi::tiocgptn, &index) != 0)
            return refuse(e, std::string("cannot read its pty number: ") + std::strerror(errno));
        const fd_entry *slave = nullptr;
        for (const fd_entry &o : entries_)
            if (o.same_as < 0 && (o.sb.st_mode & S_IFMT) == S_IFCHR && is_pty_slave(o.sb.st_rdev) &&
                pty_index(o.sb.st_rdev) == index)
                slave = &o;
        if (!slave)
            return refuse(e, "the slave of this pty is not held by the process (another process "
                             "may hold it)");
        image::pty_state st{};
        int pending_out = 0, pending_in = 0;
        if (::ioctl(own->get(), uapi::tcgets2, &st.termios) != 0 ||
            ::ioctl(own->get(), uapi::tiocgwinsz, st.winsize) != 0 ||
            ::ioctl(own->get(), uapi::tiocgptlck, &st.locked) != 0 ||
            ::ioctl(own->get(), uapi::tiocgpkt, &st.packet) != 0 ||
            ::ioctl(own->get(), uapi::tiocinq, &pending_out) != 0)
            return refuse(e, std::string("cannot read the pty's state: ") + std::strerror(errno));
        auto slave_own = grab(*slave);
        if (!slave_own) return slave_own.err();
        if (::ioctl(slave_own->get(), uapi::tiocinq, &pending_in) != 0)
            return refuse(e, std::string("cannot read the pty's state: ") + std::strerror(errno));
        if (pending_out || pending_in)
            return refuse(e, std::to_string(pending_out + pending_in) +
                                 " bytes are buffered in the pty, which cannot be restored "
                                 "(try again)");
        f.record.kind = image::file_pty_master;
        f.record.pipe_id = index;
        f.path = "/dev/ptmx";
        f.data.assign((const char *)&st, sizeof st);
        return {};
    }

    // A pipe is restored when the process holds a reader and a writer of it: its first read-only
    // and first write-only descriptions become the new pipe's ends, every other description is
    // reopened from them. The first record of the pipe carries its buffered data.
    result<void> classify_pipe(const fd_entry &e, exported_file &f) {
        if (e.info.flags & O_DIRECT)
            return refuse(e, "a packet-mode pipe (O_DIRECT) cannot be restored");
        bool reader = false, writer = false;
        const fd_entry *first_read = nullptr, *first_write = nullptr, *first = nullptr;
        for (const fd_entry &o : entries_) {
            if (o.same_as >= 0 || o.sb.st_ino != e.sb.st_ino || o.sb.st_dev != e.sb.st_dev ||
                (o.sb.st_mode & S_IFMT) != S_IFIFO)
                continue;
            int mode = o.info.flags & O_ACCMODE;
            reader |= mode != O_WRONLY;
            writer |= mode != O_RDONLY;
            if (mode == O_RDONLY && !first_read) first_read = &o;
            if (mode == O_WRONLY && !first_write) first_write = &o;
            if (!first) first = &o;
        }
        if (!reader || !writer) {
            if (e.fd <= 2) {
                f.record.kind = image::file_inherit;
                return {};
            }
            return refuse(e, "a pipe to another process cannot be restored");
        }
        f.record.kind = &e == first_read    ? image::file_pipe_read
                        : &e == first_write ? image::file_pipe_write
                                            : image::file_pipe_reopen;
        f.record.pipe_id = e.sb.st_ino;
        return read_pipe(e, f, &e == first);
    }

    result<void> read_pipe(const fd_entry &e, exported_file &f, bool with_data) {
        auto r = peek_pipe(fd_path(e.fd), f.record.pipe_size, with_data ? &f.data : nullptr);
        if (!r) return refuse(e, r.err().message);
        return {};
    }

    pid_t pid_;
    object_table &objects_;
    const std::map<int, uint32_t> &tree_shared_;
    int pidfd_ = -1;
    dev_t ctty_ = 0;
    std::vector<fd_entry> entries_;
    std::set<std::string> posix_locks_; // file, range and access of those already recorded
    std::map<int, uint32_t> kind_of_;   // record kind by fd, for the locks of duplicates
    uint32_t lock_count_ = 0;
    size_t epoll_watches_ = 0;
    uint32_t inotify_watches_ = 0;
};

} // namespace

result<void> peek_pipe(const std::string &path, uint32_t &capacity, std::string *data) {
    owned_fd src(::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
    if (src.get() < 0) return sys_error("cannot open it");
    int size = ::fcntl(src.get(), F_GETPIPE_SZ);
    int queued = 0;
    if (size < 0 || ::ioctl(src.get(), FIONREAD, &queued) != 0)
        return sys_error("cannot read its size");
    capacity = (uint32_t)size;
    if (!data || queued == 0) return {};
    int p[2];
    if (::pipe2(p, O_CLOEXEC | O_NONBLOCK) != 0) return sys_error("cannot create a pipe");
    owned_fd r(p[0]), w(p[1]);
    if (::fcntl(w.get(), F_SETPIPE_SZ, size) < size)
        return error{"cannot make a pipe as large as it to read its data"};
    ssize_t n = ::tee(src.get(), w.get(), (size_t)size, SPLICE_F_NONBLOCK);
    data->resize(n > 0 ? (size_t)n : 0);
    ssize_t got = n > 0 ? ::read(r.get(), data->data(), (size_t)n) : 0;
    if (n != queued || got != n)
        return error{"cannot read the " + std::to_string(queued) + " bytes buffered in it"};
    return {};
}

result<std::optional<image::socket_endpoint>> read_socket_endpoint(int sock, uint64_t ino) {
    int domain = 0, type = 0, protocol = 0, listening = 0;
    auto opt = [&](int level, int name, uint32_t &v) {
        int value = 0;
        socklen_t len = sizeof value;
        bool ok = ::getsockopt(sock, level, name, &value, &len) == 0;
        v = (uint32_t)value;
        return ok;
    };
    auto opt_int = [&](int name, int &v) {
        socklen_t len = sizeof v;
        return ::getsockopt(sock, SOL_SOCKET, name, &v, &len) == 0;
    };
    if (!opt_int(SO_DOMAIN, domain) || !opt_int(SO_TYPE, type) || !opt_int(SO_PROTOCOL, protocol) ||
        !opt_int(SO_ACCEPTCONN, listening))
        return sys_error("cannot read the socket's options");
    if (domain == AF_UNIX && !listening) {
        auto info = unix_socket(ino);
        if (!info) return info.err();
        if (info->peer) return std::optional<image::socket_endpoint>(); // a pair, or refused
    }
    error only{"a socket cannot be restored (listening sockets, sockets not connected yet, UDP "
               "sockets and pairs of connected unnamed Unix sockets whose ends the process or "
               "its tree holds can)"};
    bool inet = domain == AF_INET || domain == AF_INET6;
    if (!inet && domain != AF_UNIX) return only;
    image::socket_endpoint ep{};
    ep.family = (uint32_t)domain, ep.type = (uint32_t)type;
    socklen_t len = sizeof ep.local;
    if (::getsockname(sock, (sockaddr *)ep.local, &len) != 0)
        return sys_error("cannot read the socket's address");
    ep.local_len = len;
    if (listening) {
        if ((type != SOCK_STREAM && type != SOCK_SEQPACKET) || (inet && protocol != IPPROTO_TCP))
            return only;
        if (domain == AF_UNIX && ep.local_len <= sizeof(sa_family_t))
            return error{"an unnamed listening Unix socket cannot be restored"};
        pollfd p{sock, POLLIN, 0};
        if (::poll(&p, 1, 0) > 0)
            return error{"connections wait to be accepted on the listening socket, which cannot "
                         "be restored (try again)"};
        if (domain == AF_UNIX) {
            auto info = unix_socket(ino);
            if (!info) return info.err();
            ep.backlog = info->backlog;
        } else {
            auto backlog = tcp_listen_backlog(domain, ino);
            if (!backlog) return backlog.err();
            ep.backlog = *backlog;
        }
        if (!ep.backlog) ep.backlog = 1; // (listen(0) takes one connection too)
    } else if (type == SOCK_DGRAM && (!inet || protocol == IPPROTO_UDP)) {
        // UDP, or a Unix datagram socket connected to nobody (a peer: a pair above)
        char probe;
        if (::recv(sock, &probe, 0, MSG_PEEK | MSG_DONTWAIT | MSG_TRUNC) >= 0 || errno != EAGAIN)
            return error{"datagrams are queued in the socket, which cannot be restored (read "
                         "them first)"};
        len = sizeof ep.peer;
        if (inet && ::getpeername(sock, (sockaddr *)ep.peer, &len) == 0)
            ep.peer_len = len;
        else if (inet && errno != ENOTCONN)
            return sys_error("cannot read the socket's peer");
    } else {
        // A stream socket made, perhaps bound, but neither listening nor connected yet (a
        // server between socket() and listen()): made and bound again. A TCP connection is not
        // carried.
        if ((type != SOCK_STREAM && type != SOCK_SEQPACKET) || (inet && protocol != IPPROTO_TCP))
            return only;
        if (inet) {
            tcp_info ti{};
            socklen_t ti_len = sizeof ti;
            if (::getsockopt(sock, IPPROTO_TCP, TCP_INFO, &ti, &ti_len) != 0)
                return sys_error("cannot read the socket's state");
            if (ti.tcpi_state != 7 /* TCP_CLOSE */)
                return error{"a TCP connection cannot be restored"};
        }
    }
    if (!opt(SOL_SOCKET, SO_REUSEADDR, ep.reuseaddr) ||
        !opt(SOL_SOCKET, SO_REUSEPORT, ep.reuseport) || !opt(SOL_SOCKET, SO_SNDBUF, ep.sndbuf) ||
        !opt(SOL_SOCKET, SO_RCVBUF, ep.rcvbuf) ||
        (domain == AF_INET6 && !opt(IPPROTO_IPV6, IPV6_V6ONLY, ep.v6only)))
        return sys_error("cannot read the socket's options");
    ep.reuseaddr = ep.reuseaddr != 0, ep.reuseport = ep.reuseport != 0, ep.v6only = ep.v6only != 0;
    return std::optional<image::socket_endpoint>(ep);
}

// (The state is read through `sock`, a descriptor of ours on the socket.)
result<socket_pair_end> read_socket_pair_end(int sock, uint64_t ino) {
    int domain = 0, type = 0, passcred = 0, sndbuf = 0, rcvbuf = 0;
    auto opt = [&](int name, int &v) {
        socklen_t len = sizeof v;
        return ::getsockopt(sock, SOL_SOCKET, name, &v, &len) == 0;
    };
    if (!opt(SO_DOMAIN, domain) || !opt(SO_TYPE, type) || !opt(SO_PASSCRED, passcred) ||
        !opt(SO_SNDBUF, sndbuf) || !opt(SO_RCVBUF, rcvbuf))
        return sys_error("cannot read the socket's options");
    error only{"a socket cannot be restored (a pair of connected unnamed Unix sockets whose "
               "ends the process or its tree holds can)"};
    if (domain != AF_UNIX || (type != SOCK_STREAM && type != SOCK_DGRAM && type != SOCK_SEQPACKET))
        return only;
    auto info = unix_socket(ino);
    if (!info) return info.err();
    if (info->state != 1 /* TCP_ESTABLISHED */ || info->named || !info->peer) return only;
    auto peer = unix_socket(info->peer);
    if (!peer) return peer.err();
    if (peer->named || info->shutdown || peer->shutdown)
        return error{"a socket that is named or shut down in one direction cannot be restored"};
    socket_pair_end out;
    out.peer = info->peer;
    image::socket_state st{};
    st.type = (uint32_t)type;
    st.end = ino < info->peer ? 0 : 1;
    st.sndbuf = (uint32_t)sndbuf, st.rcvbuf = (uint32_t)rcvbuf;
    st.passcred = passcred != 0;
    out.record_data.assign((const char *)&st, sizeof st);
    // The bytes queued for reading at this end, peeked (the process reads them later).
    if (type != SOCK_STREAM) {
        char probe;
        if (::recv(sock, &probe, 0, MSG_PEEK | MSG_DONTWAIT | MSG_TRUNC) >= 0 || errno != EAGAIN)
            return error{"messages are queued in the datagram socket, which cannot be restored "
                         "(read them first)"};
        return out;
    }
    int queued = 0;
    if (::ioctl(sock, FIONREAD, &queued) != 0) return sys_error("cannot read the socket's queue");
    if (queued == 0) return out;
    if ((uint32_t)queued > image::max_socket_queue)
        return error{std::to_string(queued) + " bytes are queued in the socket, more than " +
                     std::to_string(image::max_socket_queue) + " (read them first)"};
    std::string data((size_t)queued, '\0');
    alignas(cmsghdr) char control[CMSG_SPACE(253 * sizeof(int))];
    iovec iov{data.data(), data.size()};
    msghdr msg{};
    msg.msg_iov = &iov, msg.msg_iovlen = 1;
    msg.msg_control = control, msg.msg_controllen = sizeof control;
    ssize_t got = ::recvmsg(sock, &msg, MSG_PEEK | MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    bool rights = false;
    for (cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        rights = true;
        size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < count; i++)
            ::close(((int *)CMSG_DATA(c))[i]);
    }
    if (rights) return error{"descriptors are in flight in the socket, which cannot be restored"};
    if (got != queued)
        return error{"cannot read the " + std::to_string(queued) +
                     " bytes queued in the socket (read them first)"};
    out.record_data += data;
    return out;
}

result<std::vector<exported_file>> collect_files(pid_t pid, const std::vector<int> &internal,
                                                 object_table &objects,
                                                 const std::map<int, uint32_t> &tree_shared) {
    return classifier(pid, objects, tree_shared).run(internal);
}

} // namespace ghost::core
