// SPDX-License-Identifier: Apache-2.0
#include "mpi_detect.h"

#include <elf.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <regex>
#include <vector>

namespace ghost::run {
namespace {

constexpr const char *kOpenMpi = "libmpi.so.40";
constexpr const char *kMpich = "libmpich.so.12";

bool read_at(int fd, void *buf, size_t n, off_t off) {
    return pread(fd, buf, n, off) == (ssize_t)n;
}

// DT_NEEDED entries of a 64-bit ELF; false if the file is not one.
bool needed_libs(const std::string &path, std::vector<std::string> *out, std::string *err) {
    int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        *err = "cannot open " + path + ": " + strerror(errno);
        return false;
    }
    Elf64_Ehdr eh;
    if (!read_at(fd, &eh, sizeof eh, 0) || memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0) {
        close(fd);
        *err = path + " is not an ELF executable";
        return false;
    }
    if (eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_machine != EM_X86_64) {
        close(fd);
        *err = path + " is not an x86-64 executable";
        return false;
    }
    std::vector<Elf64_Phdr> ph(eh.e_phnum);
    if (!read_at(fd, ph.data(), sizeof(Elf64_Phdr) * eh.e_phnum, (off_t)eh.e_phoff)) {
        close(fd);
        *err = "cannot read the program headers of " + path;
        return false;
    }
    // Map virtual addresses (DT_STRTAB) to file offsets through the PT_LOAD segments.
    auto to_off = [&](uint64_t va) -> int64_t {
        for (const auto &p : ph)
            if (p.p_type == PT_LOAD && va >= p.p_vaddr && va < p.p_vaddr + p.p_filesz)
                return (int64_t)(va - p.p_vaddr + p.p_offset);
        return -1;
    };
    for (const auto &p : ph) {
        if (p.p_type != PT_DYNAMIC) continue;
        std::vector<Elf64_Dyn> dyn(p.p_filesz / sizeof(Elf64_Dyn));
        if (!read_at(fd, dyn.data(), dyn.size() * sizeof(Elf64_Dyn), (off_t)p.p_offset)) break;
        uint64_t strtab = 0;
        for (const auto &d : dyn)
            if (d.d_tag == DT_STRTAB) strtab = d.d_un.d_ptr;
        int64_t stroff = to_off(strtab);
        if (stroff < 0) break;
        for (const auto &d : dyn) {
            if (d.d_tag != DT_NEEDED) continue;
            char name[256] = {0};
            if (pread(fd, name, sizeof name - 1, stroff + (off_t)d.d_un.d_val) > 0)
                out->push_back(name);
        }
    }
    close(fd);
    return true;
}

mpi_detection classify(const std::string &lib) {
    mpi_detection d;
    d.library = lib;
    if (lib == kOpenMpi)
        d.flavour = mpi_flavour::openmpi;
    else if (lib == kMpich)
        d.flavour = mpi_flavour::mpich;
    else
        d.flavour = mpi_flavour::unsupported;
    return d;
}

bool is_mpi_soname(const std::string &lib) {
    static const std::regex re(R"(^lib(mpi|mpich)\.so(\.[0-9]+)*$)");
    return std::regex_match(lib, re);
}

} // namespace

std::string resolve_program(const std::string &name) {
    auto ok = [](const std::string &p) {
        struct stat st;
        return stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode) && access(p.c_str(), X_OK) == 0;
    };
    if (name.find('/') != std::string::npos) return ok(name) ? name : std::string();
    const char *path = getenv("PATH");
    std::string p = path ? path : "/usr/bin:/bin";
    size_t pos = 0;
    while (true) {
        size_t c = p.find(':', pos);
        std::string dir = p.substr(pos, c == std::string::npos ? std::string::npos : c - pos);
        std::string cand = (dir.empty() ? "." : dir) + "/" + name;
        if (ok(cand)) return cand;
        if (c == std::string::npos) break;
        pos = c + 1;
    }
    return {};
}

mpi_detection detect_mpi(const std::string &program) {
    std::vector<std::string> libs;
    std::string err;
    if (!needed_libs(program, &libs, &err)) {
        mpi_detection d;
        d.error = err;
        return d;
    }
    for (const auto &l : libs)
        if (is_mpi_soname(l)) return classify(l);
    // Indirect use (through another shared library): ask the dynamic loader.
    std::string cmd = "ldd '" + program + "' 2>/dev/null";
    if (program.find('\'') == std::string::npos) {
        if (FILE *f = popen(cmd.c_str(), "r")) {
            char line[1024];
            mpi_detection found;
            while (fgets(line, sizeof line, f)) {
                char name[512];
                if (sscanf(line, " %511s", name) == 1 && is_mpi_soname(name) &&
                    found.library.empty())
                    found = classify(name);
            }
            pclose(f);
            if (!found.library.empty()) return found;
        }
    }
    return {};
}

} // namespace ghost::run
