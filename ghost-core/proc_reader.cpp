// SPDX-License-Identifier: Apache-2.0
#include "ghost-core/proc_reader.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <cstdlib>
#include <sstream>

#include "runtime/uapi.h"

namespace ghost::core {

namespace {
std::string proc_path(pid_t pid, const char *what) {
    return "/proc/" + std::to_string(pid) + "/" + what;
}
} // namespace

result<std::string> read_text(const std::string &path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return sys_error("cannot open " + path);
    std::string out;
    char buf[65536];
    for (;;) {
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n < 0) {
            int e = errno;
            ::close(fd);
            return sys_error("cannot read " + path, e);
        }
        if (n == 0) break;
        out.append(buf, (size_t)n);
    }
    ::close(fd);
    return out;
}

result<std::string> read_link(const std::string &path) {
    char buf[4096];
    ssize_t n = ::readlink(path.c_str(), buf, sizeof buf - 1);
    if (n < 0) return sys_error("cannot read link " + path);
    return std::string(buf, (size_t)n);
}

uint32_t advice_from_vm_flags(const std::string &flags) {
    static const struct {
        const char *name;
        uint32_t bit;
    } known[] = {{"dc", image::advice_dontfork},   {"dd", image::advice_dontdump},
                 {"hg", image::advice_hugepage},   {"nh", image::advice_nohugepage},
                 {"wf", image::advice_wipeonfork}, {"mw", image::advice_maywrite}};
    uint32_t bits = 0;
    std::istringstream in(flags);
    std::string f;
    while (in >> f)
        for (const auto &k : known)
            if (f == k.name) bits |= k.bit;
    return bits;
}

result<std::vector<std::pair<uint64_t, uint64_t>>> guard_ranges(pid_t pid, uint64_t start,
                                                                uint64_t end) {
    std::vector<std::pair<uint64_t, uint64_t>> out;
    std::string path = proc_path(pid, "pagemap");
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return sys_error("cannot open " + path);
    uapi::page_region found[64];
    for (uint64_t at = start; at < end;) {
        uapi::pm_scan_arg arg{};
        arg.size = sizeof arg;
        arg.start = at, arg.end = end;
        arg.vec = (uint64_t)found, arg.vec_len = 64;
        arg.category_mask = uapi::page_is_guard, arg.return_mask = uapi::page_is_guard;
        long n = ::ioctl(fd, uapi::pagemap_scan, &arg);
        if (n < 0) {
            int e = errno;
            ::close(fd);
            if (e == EINVAL || e == ENOTTY) return out; // no guard category: no guard pages
            return sys_error("cannot scan " + path, e);
        }
        for (long i = 0; i < n; i++)
            out.emplace_back(found[i].start, found[i].end);
        if (arg.walk_end <= at) break;
        at = arg.walk_end;
    }
    ::close(fd);
    return out;
}

result<std::vector<vma>> read_maps(pid_t pid) {
    auto text = read_text(proc_path(pid, "smaps"));
    if (!text) return text.err();
    std::vector<vma> out;
    std::istringstream in(*text);
    std::string line;
    while (std::getline(in, line)) {
        if (line.rfind("VmFlags:", 0) == 0) {
            if (!out.empty()) {
                out.back().advice = advice_from_vm_flags(line.substr(8));
                out.back().uffd_wp = (line + " ").find(" uw ") != std::string::npos;
            }
            continue;
        }
        // Other smaps lines are "Key:   value": a mapping's line starts with its hex range.
        size_t colon = line.find(':'), dash = line.find('-');
        if (dash == std::string::npos || (colon != std::string::npos && colon < dash)) continue;
        vma v;
        char perms[5] = {};
        unsigned long long start, end, offset, inode;
        unsigned dev_major, dev_minor;
        int consumed = 0;
        if (std::sscanf(line.c_str(), "%llx-%llx %4s %llx %x:%x %llu %n", &start, &end, perms,
                        &offset, &dev_major, &dev_minor, &inode, &consumed) < 7)
            return error{"cannot parse /proc/" + std::to_string(pid) + "/maps line: " + line};
        v.start = start, v.end = end, v.offset = offset, v.inode = inode;
        v.read = perms[0] == 'r', v.write = perms[1] == 'w', v.exec = perms[2] == 'x';
        v.shared = perms[3] == 's';
        v.path = line.substr((size_t)consumed);
        out.push_back(std::move(v));
    }
    return out;
}

result<image::mm_fields> read_mm_fields(pid_t pid) {
    auto text = read_text(proc_path(pid, "stat"));
    if (!text) return text.err();
    // Field 2 (comm) may hold spaces and parentheses: parse after the last ')'.
    size_t close = text->rfind(')');
    if (close == std::string::npos)
        return error{"cannot parse /proc/" + std::to_string(pid) + "/stat"};
    std::istringstream in(text->substr(close + 2));
    std::vector<std::string> f(2); // fields 1 and 2 skipped; index = field number - 1
    std::string tok;
    while (in >> tok)
        f.push_back(tok);
    if (f.size() < 51)
        return error{"cannot parse /proc/" + std::to_string(pid) + "/stat: too short"};
    auto field = [&](int n) { return std::strtoull(f[(size_t)n - 1].c_str(), nullptr, 10); };
    image::mm_fields m{};
    m.start_code = field(26), m.end_code = field(27), m.start_stack = field(28);
    m.start_data = field(45), m.end_data = field(46), m.start_brk = field(47);
    m.arg_start = field(48), m.arg_end = field(49), m.env_start = field(50), m.env_end = field(51);
    return m;
}

result<std::vector<uint64_t>> read_auxv(pid_t pid) {
    auto text = read_text(proc_path(pid, "auxv"));
    if (!text) return text.err();
    std::vector<uint64_t> words(text->size() / 8);
    std::memcpy(words.data(), text->data(), words.size() * 8);
    return words;
}

result<fd_info> read_fdinfo(pid_t pid, int fd) {
    auto text_path = [](pid_t p, int f) { return proc_path(p, "fdinfo/") + std::to_string(f); };
    auto text = read_text(text_path(pid, fd));
    if (!text) return text.err();
    fd_info info;
    info.fd = fd;
    info.text = *text;
    std::istringstream in(*text);
    for (std::string line; std::getline(in, line);) {
        std::istringstream words(line);
        std::string key, value;
        if (!(words >> key >> value)) continue;
        if (key == "pos:") info.pos = std::strtoll(value.c_str(), nullptr, 10);
        if (key == "flags:") info.flags = (int)std::strtol(value.c_str(), nullptr, 8);
        if (key != "lock:") continue;
        // "lock:\tID: KIND  ADVISORY  ACCESS PID MAJ:MIN:INODE START END" (fs/locks.c)
        std::vector<std::string> w;
        for (std::string word; words >> word;)
            w.push_back(word);
        fd_lock l;
        if (w.size() < 6) return error{"cannot parse a file lock of " + text_path(pid, fd)};
        l.kind = w[0];
        l.access = w[w.size() - 5];
        l.file = w[w.size() - 3];
        l.start = std::strtoll(w[w.size() - 2].c_str(), nullptr, 10);
        l.end = w.back() == "EOF" ? -1 : std::strtoll(w.back().c_str(), nullptr, 10);
        info.locks.push_back(std::move(l));
    }
    return info;
}

result<std::vector<int>> list_fds(pid_t pid) {
    return list_dir_numbers(proc_path(pid, "fd"));
}

result<std::vector<int>> list_dir_numbers(const std::string &path) {
    DIR *d = ::opendir(path.c_str());
    if (!d) return sys_error("cannot list " + path);
    std::vector<int> fds;
    while (dirent *e = ::readdir(d))
        if (e->d_name[0] != '.') fds.push_back(std::atoi(e->d_name));
    ::closedir(d);
    std::sort(fds.begin(), fds.end());
    return fds;
}

result<pagemap> pagemap::open(pid_t pid) {
    std::string path = proc_path(pid, "pagemap");
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return sys_error("cannot open " + path);
    return pagemap(fd);
}

pagemap::~pagemap() {
    if (fd_ >= 0) ::close(fd_);
}

result<void> pagemap::read(uint64_t start, uint64_t end, std::vector<uint64_t> &entries) const {
    size_t n = (end - start) / 4096;
    entries.resize(n);
    size_t bytes = n * 8;
    size_t done = 0;
    while (done < bytes) {
        ssize_t r = ::pread(fd_, (char *)entries.data() + done, bytes - done,
                            (off_t)(start / 4096 * 8 + done));
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return sys_error("cannot read the page map", r < 0 ? errno : EIO);
        done += (size_t)r;
    }
    return {};
}

result<uint64_t> resident_bytes(pid_t pid) {
    auto text = read_text("/proc/" + std::to_string(pid) + "/smaps_rollup");
    if (!text) return text.err();
    size_t at = text->find("\nRss:");
    if (at == std::string::npos)
        return error{"no Rss in /proc/" + std::to_string(pid) + "/smaps_rollup"};
    return (uint64_t)std::strtoull(text->c_str() + at + 5, nullptr, 10) * 1024;
}

result<image::credentials_record> read_credentials(pid_t pid, std::vector<uint32_t> &groups) {
    std::string path = proc_path(pid, "status");
    auto text = read_text(path);
    if (!text) return text.err();
    image::credentials_record c{};
    auto field = [&](const char *name) -> const char * {
        size_t at = text->find(std::string("\n") + name + ":");
        return at == std::string::npos ? nullptr : text->c_str() + at + std::strlen(name) + 2;
    };
    auto ids = [&](const char *name, uint32_t(&out)[4]) {
        const char *p = field(name);
        for (int i = 0; p && i < 4; i++)
            out[i] = (uint32_t)std::strtoul(p, (char **)&p, 10);
        return p != nullptr;
    };
    auto caps = [&](const char *name, uint64_t &out) {
        const char *p = field(name);
        if (p) out = std::strtoull(p, nullptr, 16);
        return p != nullptr;
    };
    bool ok = ids("Uid", c.uid) && ids("Gid", c.gid) && caps("CapInh", c.cap_inheritable) &&
              caps("CapPrm", c.cap_permitted) && caps("CapEff", c.cap_effective) &&
              caps("CapBnd", c.cap_bounding) && caps("CapAmb", c.cap_ambient);
    const char *g = field("Groups");
    if (!ok || !g) return error{"cannot read the credentials in " + path};
    groups.clear();
    for (char *end; *g && *g != '\n'; g = end) {
        unsigned long v = std::strtoul(g, &end, 10);
        if (end == g) break;
        groups.push_back((uint32_t)v);
    }
    const char *nnp = field("NoNewPrivs");
    c.no_new_privs = nnp && std::strtoul(nnp, nullptr, 10) == 1;
    c.group_count = (uint32_t)groups.size();
    return c;
}

} // namespace ghost::core
