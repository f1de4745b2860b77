// SPDX-License-Identifier: Apache-2.0
#include "lower_loader.h"

#include <elf.h>
#include <fcntl.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstddef>
#include <cstdio>
#include <cstring>

#include "fs.h"

extern "C" void ghost_lower_enter(uintptr_t entry, uintptr_t sp, ghost_handoff *h);
extern "C" void ghost_lower_resume(ghost_handoff *h);

static_assert(offsetof(ghost_handoff, have_fsgsbase) == 12);
static_assert(offsetof(ghost_handoff, upper_saved_sp) == 16);
static_assert(offsetof(ghost_handoff, upper_fs) == 24);

namespace ghost::mpi {
namespace {

constexpr uintptr_t kPage = 4096;
constexpr size_t kLowerStack = 8u << 20;
constexpr size_t kTidOffset =
    0x2d0; // glibc 2.36: offsetof(struct pthread, tid); verified at run time

uintptr_t page_down(uintptr_t v) {
    return v & ~(kPage - 1);
}
uintptr_t page_up(uintptr_t v) {
    return (v + kPage - 1) & ~(kPage - 1);
}

struct mapped_elf {
    uintptr_t base = 0, lo = 0, hi = 0, entry = 0, phdr = 0;
    int phnum = 0;
};

bool map_elf(const std::string &path, mapped_elf *out, std::string *err) {
    int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        *err = "cannot open the lower-half loader " + path + ": " + strerror(errno);
        return false;
    }
    Elf64_Ehdr eh;
    Elf64_Phdr ph[32];
    bool ok = pread(fd, &eh, sizeof eh, 0) == (ssize_t)sizeof eh &&
              memcmp(eh.e_ident, ELFMAG, SELFMAG) == 0 && eh.e_type == ET_DYN && eh.e_phnum <= 32 &&
              pread(fd, ph, sizeof(Elf64_Phdr) * eh.e_phnum, eh.e_phoff) ==
                  (ssize_t)(sizeof(Elf64_Phdr) * eh.e_phnum);
    if (!ok) {
        close(fd);
        *err = "cannot load " + path + ": not a position-independent ELF loader";
        return false;
    }
    uintptr_t lo = UINTPTR_MAX, hi = 0;
    for (int i = 0; i < eh.e_phnum; i++) {
        if (ph[i].p_type != PT_LOAD) continue;
        lo = std::min<uintptr_t>(lo, page_down(ph[i].p_vaddr));
        hi = std::max<uintptr_t>(hi, page_up(ph[i].p_vaddr + ph[i].p_memsz));
    }
    void *span = mmap(nullptr, hi - lo, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (span == MAP_FAILED) {
        close(fd);
        *err = "cannot reserve address space for " + path + ": " + strerror(errno);
        return false;
    }
    uintptr_t base = (uintptr_t)span - lo;
    for (int i = 0; i < eh.e_phnum; i++) {
        const Elf64_Phdr &p = ph[i];
        if (p.p_type != PT_LOAD) continue;
        int prot = ((p.p_flags & PF_R) ? PROT_READ : 0) | ((p.p_flags & PF_W) ? PROT_WRITE : 0) |
                   ((p.p_flags & PF_X) ? PROT_EXEC : 0);
        uintptr_t seg = base + page_down(p.p_vaddr);
        uintptr_t file_end = base + p.p_vaddr + p.p_filesz;
        uintptr_t mem_end = page_up(base + p.p_vaddr + p.p_memsz);
        size_t flen = file_end - seg;
        if (flen > 0 && mmap((void *)seg, flen, prot, MAP_PRIVATE | MAP_FIXED, fd,
                             page_down(p.p_offset)) == MAP_FAILED) {
            close(fd);
            *err = "cannot map a segment of " + path + ": " + strerror(errno);
            return false;
        }
        if (p.p_memsz >
            p.p_filesz) { // .bss: zero the tail of the last file page, map the rest anonymous
            uintptr_t zero_to = std::min(page_up(file_end), mem_end);
            if ((prot & PROT_WRITE) && zero_to > file_end)
                memset((void *)file_end, 0, zero_to - file_end);
            if (mem_end > page_up(file_end) &&
                mmap((void *)page_up(file_end), mem_end - page_up(file_end), prot,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == MAP_FAILED) {
                close(fd);
                *err = "cannot map the bss of " + path + ": " + strerror(errno);
                return false;
            }
        }
    }
    close(fd);
    out->base = base;
    out->lo = base + lo;
    out->hi = base + hi;
    out->entry = base + eh.e_entry;
    out->phnum = eh.e_phnum;
    out->phdr = base + eh.e_phoff;
    for (int i = 0; i < eh.e_phnum; i++)
        if (ph[i].p_type == PT_PHDR) out->phdr = base + ph[i].p_vaddr;
    return true;
}

// Builds argc/argv/envp/auxv at the top of [lo, hi) as the kernel does; returns the initial sp.
uintptr_t build_stack(uintptr_t lo, uintptr_t hi, const std::vector<std::string> &argv,
                      const std::vector<std::string> &env, const mapped_elf &ld,
                      const std::string &execfn) {
    uintptr_t top = hi;
    auto push_str = [&](const std::string &s) {
        top -= s.size() + 1;
        memcpy((void *)top, s.c_str(), s.size() + 1);
        return top;
    };
    std::vector<uintptr_t> argp, envp;
    for (const auto &a : argv)
        argp.push_back(push_str(a));
    for (const auto &e : env)
        envp.push_back(push_str(e));
    uintptr_t platform = push_str("x86_64");
    uintptr_t execfn_p = push_str(execfn);
    top &= ~(uintptr_t)15;
    top -= 16;
    uintptr_t random = top;
    if (getrandom((void *)random, 16, 0) != 16) {
        for (int i = 0; i < 16; i++)
            ((unsigned char *)random)[i] = (unsigned char)(i * 37 + (uintptr_t)&top);
    }
    std::vector<uintptr_t> words;
    words.push_back(argp.size());
    for (auto p : argp)
        words.push_back(p);
    words.push_back(0);
    for (auto p : envp)
        words.push_back(p);
    words.push_back(0);
    auto aux = [&](unsigned long k, uintptr_t v) {
        words.push_back(k);
        words.push_back(v);
    };
    aux(AT_SYSINFO_EHDR, getauxval(AT_SYSINFO_EHDR));
    aux(AT_MINSIGSTKSZ, getauxval(AT_MINSIGSTKSZ));
    aux(AT_HWCAP, getauxval(AT_HWCAP));
    aux(AT_PAGESZ, kPage);
    aux(AT_CLKTCK, getauxval(AT_CLKTCK));
    aux(AT_PHDR, ld.phdr);
    aux(AT_PHENT, sizeof(Elf64_Phdr));
    aux(AT_PHNUM, ld.phnum);
    aux(AT_BASE, 0); // as when the kernel executes ld.so directly
    aux(AT_FLAGS, 0);
    aux(AT_ENTRY, ld.entry);
    aux(AT_UID, getuid());
    aux(AT_EUID, geteuid());
    aux(AT_GID, getgid());
    aux(AT_EGID, getegid());
    aux(AT_SECURE, 0);
    aux(AT_RANDOM, random);
    aux(AT_HWCAP2, getauxval(AT_HWCAP2));
    aux(AT_EXECFN, execfn_p);
    aux(AT_PLATFORM, platform);
    aux(AT_NULL, 0);
    size_t bytes = words.size() * sizeof(uintptr_t);
    uintptr_t sp = (top - bytes) & ~(uintptr_t)15;
    if (lo + 4096 > sp) return 0;
    memcpy((void *)sp, words.data(), bytes);
    return sp;
}

} // namespace

bool lower_start(const lower_start_options &opt, ghost_handoff *h, lower_start_result *res,
                 std::string *err) {
    mapped_elf ld;
    if (!map_elf(opt.ld_so, &ld, err)) return false;
    void *stack = mmap(nullptr, kLowerStack, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (stack == MAP_FAILED) {
        *err = std::string("cannot map the lower-half stack: ") + strerror(errno);
        return false;
    }
    res->ld_lo = ld.lo;
    res->ld_hi = ld.hi;
    res->stack_lo = (uintptr_t)stack;
    res->stack_hi = (uintptr_t)stack + kLowerStack;

    char hex[32];
    snprintf(hex, sizeof hex, "%lx", (unsigned long)(uintptr_t)h);
    std::vector<std::string> argv = {opt.ld_so, opt.program, hex};
    uintptr_t sp = build_stack(res->stack_lo, res->stack_hi, argv, opt.env, ld, opt.program);
    if (sp == 0) {
        *err = "the lower-half environment does not fit on its stack";
        return false;
    }

    // The lower ld.so re-points this thread's robust list and clear_child_tid into the lower TCB.
    void *robust_head = nullptr;
    size_t robust_len = 0;
    syscall(SYS_get_robust_list, 0, &robust_head, &robust_len);
    uintptr_t upper_fs = current_fs();
    pid_t *tid_field = (pid_t *)(upper_fs + kTidOffset);
    bool tid_ok = *tid_field == (pid_t)syscall(SYS_gettid);

    h->upper_fs = upper_fs;
    h->have_fsgsbase = g_have_fsgsbase ? 1 : 0;
    h->resume = ghost_lower_resume;
    h->fns = nullptr;
    ghost_lower_enter(ld.entry, sp, h);
    // Back on the upper stack with the upper FS.
    syscall(SYS_set_robust_list, robust_head, robust_len);
    if (tid_ok) syscall(SYS_set_tid_address, tid_field);
    if (h->fns == nullptr) {
        *err = "the lower-half program " + opt.program + " did not hand its function table back";
        return false;
    }
    return true;
}

} // namespace ghost::mpi
