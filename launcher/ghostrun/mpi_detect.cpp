// SPDX-License-Identifier: Apache-2.0
#include "mpi_detect.h"

#include <elf.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
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

bool is_elf(const std::string &path) {
    int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    char m[SELFMAG];
    bool ok = read_at(fd, m, SELFMAG, 0) && memcmp(m, ELFMAG, SELFMAG) == 0;
    close(fd);
    return ok;
}

std::string base_name(const std::string &path) {
    size_t slash = path.rfind('/');
    return slash == std::string::npos ? path : path.substr(slash + 1);
}

// python, python3, python3.11 (the names a Python interpreter goes by).
bool python_name(const std::string &path) {
    static const std::regex re(R"(^python[0-9.]*$)");
    return std::regex_match(base_name(path), re);
}

// A script's `#!INTERPRETER [ARG]` line; false without one.
bool shebang(const std::string &path, std::string *interp, std::string *arg) {
    int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    char buf[256] = {0};
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    close(fd);
    if (n < 3 || buf[0] != '#' || buf[1] != '!') return false;
    std::string line(buf + 2, (size_t)n - 2);
    line = line.substr(0, line.find('\n'));
    size_t b = line.find_first_not_of(" \t");
    if (b == std::string::npos) return false;
    size_t e = line.find_first_of(" \t", b);
    *interp = line.substr(b, e == std::string::npos ? std::string::npos : e - b);
    arg->clear();
    if (e != std::string::npos) {
        size_t ab = line.find_first_not_of(" \t", e);
        if (ab != std::string::npos) {
            *arg = line.substr(ab);
            arg->erase(arg->find_last_not_of(" \t\r") + 1);
        }
    }
    return true;
}

// The first line `argv` prints on stdout (stdin and stderr closed to /dev/null), within 20 s;
// empty when it fails.
std::string first_line_of(const std::vector<std::string> &argv) {
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0) return {};
    pid_t pid = fork();
    if (pid < 0) {
        close(p[0]);
        close(p[1]);
        return {};
    }
    if (pid == 0) {
        int null = open("/dev/null", O_RDWR);
        dup2(null, 0);
        dup2(null, 2);
        dup2(p[1], 1);
        std::vector<char *> av;
        for (const auto &a : argv)
            av.push_back(const_cast<char *>(a.c_str()));
        av.push_back(nullptr);
        execv(av[0], av.data());
        _exit(127);
    }
    close(p[1]);
    std::string out;
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        long left =
            20000 - ((now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000);
        struct pollfd pf = {p[0], POLLIN, 0};
        if (left <= 0 || poll(&pf, 1, (int)left) <= 0) {
            kill(pid, SIGKILL);
            out.clear();
            break;
        }
        char buf[4096];
        ssize_t n = read(p[0], buf, sizeof buf);
        if (n <= 0 || out.size() > 65536) break;
        out.append(buf, (size_t)n);
    }
    close(p[0]);
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) return {};
    return out.substr(0, out.find('\n'));
}

// The interpreter a Python command really is: itself when it is an ELF executable (a venv's
// python stays the venv's), else (a shell script, a shim) what it reports as sys.executable.
std::string real_python(const std::string &python, std::string *why) {
    if (is_elf(python)) return python;
    std::string exe = first_line_of({python, "-c", "import sys; print(sys.executable)"});
    if (exe.empty() || exe[0] != '/' || !is_elf(exe)) {
        *why = python + " is a script that did not name a Python interpreter (sys.executable)";
        return {};
    }
    return exe;
}

// The MPI that `python`'s mpi4py loads: its MPI extension module's libraries. find_spec imports
// the mpi4py package only, never mpi4py.MPI (which would initialise MPI).
mpi_detection mpi4py_mpi(const std::string &python, std::string *why) {
    std::string origin =
        first_line_of({python, "-c",
                       "import importlib.util as u; s = u.find_spec('mpi4py.MPI'); "
                       "print(s.origin if s and s.origin else '')"});
    if (origin.empty() || origin[0] != '/') {
        *why = python + " has no mpi4py";
        return {};
    }
    mpi_detection d = detect_mpi(origin);
    if (!d.error.empty()) {
        *why = "cannot inspect mpi4py's " + origin + ": " + d.error;
        return {};
    }
    if (d.flavour == mpi_flavour::none) *why = "mpi4py's " + origin + " links no MPI library";
    return d;
}

} // namespace

program_plan plan_program(const std::string &name, const std::vector<std::string> &args) {
    program_plan plan;
    std::string prog = resolve_program(name);
    if (prog.empty()) {
        plan.mpi.error = "no such executable";
        return plan;
    }
    std::string python; // the interpreter when the program is Python
    if (is_elf(prog)) {
        plan.command = {prog};
        plan.mpi = detect_mpi(prog);
        if (!plan.mpi.error.empty() || plan.mpi.flavour != mpi_flavour::none || !python_name(prog))
            goto done;
        python = prog;
    } else {
        std::string interp, arg;
        if (!shebang(prog, &interp, &arg)) {
            plan.mpi.error = prog + " is neither an ELF executable nor a script with a #! line";
            return plan;
        }
        if (python_name(prog)) { // `python3` itself is a script: pyenv's shim, a wrapper
            python = real_python(prog, &plan.why_unknown);
            if (python.empty()) {
                plan.mpi.error = plan.why_unknown;
                return plan;
            }
            plan.command = {python};
        } else {
            // A Python script: #!/usr/bin/python3, or #!/usr/bin/env python3 (PATH decides).
            std::string py = base_name(interp) == "env" && arg.find(' ') == std::string::npos
                                 ? resolve_program(arg)
                                 : interp;
            if (py.empty() || !python_name(py)) {
                plan.command = {name};
                plan.why_unknown = prog + " is a script run by " + interp +
                                   (arg.empty() ? "" : " " + arg) +
                                   ", which ghostrun cannot look into";
                goto done;
            }
            std::string why;
            python = real_python(py, &why);
            if (python.empty()) {
                plan.mpi.error = why;
                return plan;
            }
            plan.command = {python, prog};
        }
    }
    plan.mpi = mpi4py_mpi(python, &plan.why_unknown);
    if (plan.mpi.flavour == mpi_flavour::none && plan.why_unknown.empty())
        plan.why_unknown = python + " links no MPI library";
done:
    for (const auto &a : args)
        plan.command.push_back(a);
    return plan;
}

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
