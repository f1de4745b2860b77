// SPDX-License-Identifier: Apache-2.0
#include "ghost-core/elf_build_id.h"

#include <elf.h>
#include <fcntl.h>
#include <unistd.h>

#include <vector>

namespace ghost::core {

result<std::string> elf_build_id(const std::string &path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return sys_error("cannot open " + path);
    auto fail = [&](const char *why) -> result<std::string> {
        ::close(fd);
        return error{path + ": " + why};
    };
    Elf64_Ehdr eh;
    if (::pread(fd, &eh, sizeof eh, 0) != sizeof eh ||
        std::memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0 || eh.e_ident[EI_CLASS] != ELFCLASS64 ||
        eh.e_phentsize != sizeof(Elf64_Phdr))
        return fail("not a 64-bit ELF file");
    std::vector<Elf64_Phdr> ph(eh.e_phnum);
    ssize_t want = (ssize_t)(ph.size() * sizeof(Elf64_Phdr));
    if (::pread(fd, ph.data(), (size_t)want, (off_t)eh.e_phoff) != want)
        return fail("truncated program headers");
    for (const Elf64_Phdr &p : ph) {
        if (p.p_type != PT_NOTE || p.p_filesz > (1 << 16)) continue;
        std::vector<char> notes(p.p_filesz);
        if (::pread(fd, notes.data(), notes.size(), (off_t)p.p_offset) != (ssize_t)notes.size())
            continue;
        for (size_t off = 0; off + sizeof(Elf64_Nhdr) <= notes.size();) {
            Elf64_Nhdr nh;
            std::memcpy(&nh, notes.data() + off, sizeof nh);
            size_t name_at = off + sizeof nh;
            size_t desc_at = name_at + ((nh.n_namesz + 3) & ~3u);
            size_t next = desc_at + ((nh.n_descsz + 3) & ~3u);
            if (next > notes.size()) break;
            if (nh.n_type == NT_GNU_BUILD_ID && nh.n_namesz == 4 &&
                std::memcmp(notes.data() + name_at, "GNU", 4) == 0) {
                ::close(fd);
                return std::string(notes.data() + desc_at, nh.n_descsz);
            }
            off = next;
        }
    }
    return fail("no build id");
}

std::string hex(const std::string &bytes) {
    static const char digits[] = "0123456789abcdef";
    std::string out;
    for (unsigned char c : bytes) {
        out += digits[c >> 4];
        out += digits[c & 15];
    }
    return out;
}

} // namespace ghost::core
