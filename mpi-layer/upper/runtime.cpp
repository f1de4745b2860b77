// SPDX-License-Identifier: Apache-2.0
// Start-up of the split process: the LD_PRELOAD constructor starts the lower half (only in a
// process that has the flavour's MPI soname loaded; in one that loads it later with dlopen, the
// first MPI call does), binds the function table and predefined handles, and hands out one lower
// TLS per upper thread.
#include "runtime.h"

#include <dirent.h>
#include <signal.h>
#include <time.h>
#include <dlfcn.h>
#include <sys/auxv.h>
#include <linux/futex.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cctype>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "attribution.h"
#include "p2p.h"
#include "lower_loader.h"
#include "vobj.h"

#ifndef GHOST_MPI_SONAME
#error "GHOST_MPI_SONAME must name the MPI library this layer is built for"
#endif
#ifndef GHOST_MPI_LOWER_NAME
#error "GHOST_MPI_LOWER_NAME must name the lower-half program"
#endif

extern char **environ;

namespace ghost::mpi {

bool g_have_fsgsbase = false;
unsigned long g_fs_syscalls = 0;
void *const *g_fns = nullptr;
ghost_handoff g_handoff;
__thread uintptr_t t_lower_fs __attribute__((tls_model("initial-exec"))) = 0;
__thread uint32_t t_lower_gen __attribute__((tls_model("initial-exec"))) = 0;
__thread uint64_t t_empty_poll_ns __attribute__((tls_model("initial-exec"))) = 0;
// Restarts: each fresh lower half is a new generation; a lease of an older one is void. While
// g_restarting is set (from the moment a restored thread runs, or a staying rank drops its lower
// half, until the new lower half is bound), a thread's first MPI call waits in acquire_lower_fs.
uint32_t g_generation = 0;

namespace {
constexpr uint64_t kUpperMark = 0x6b72616d72657070ULL; // "ppermark"
__thread uint64_t t_upper_mark __attribute__((tls_model("initial-exec"))) = kUpperMark;
// Distance of t_upper_mark from the thread pointer (negative: static TLS lies below the TCB); 0
// when too far to be read on any lower thread: a lower TCB that a signal can find (a thread's, at
// the top of its stack) has its static TLS, then its stack (16 KiB at least), below it.
constexpr intptr_t kMarkReach = 4096;
intptr_t g_mark_offset = 0;
// The upper thread pointer of the thread that runs on the lower spawner's TCB (acquire_lower_fs).
std::atomic<uintptr_t> g_spawn_borrower{0};

constexpr size_t kMaxThreads = 4096;
struct fs_pair {
    std::atomic<uintptr_t> lower;
    std::atomic<uintptr_t> upper;
};
fs_pair g_pairs[kMaxThreads];
std::atomic<size_t> g_npairs{0};
std::mutex g_spawn_mu;
std::vector<uintptr_t> *g_free_lower_fs = nullptr; // TCBs of exited upper threads, reusable
bool g_active = false;
uint32_t g_restarting = 0;     // futex word
uintptr_t g_main_upper_fs = 0; // the thread that started the lower half (and called MPI_Init)
uintptr_t g_main_lower_fs = 0; // its lower TCB in the current generation, until it takes it

void pair_set(uintptr_t lower, uintptr_t upper) {
    size_t n = g_npairs.load(std::memory_order_acquire);
    for (size_t i = 0; i < n; i++)
        if (g_pairs[i].lower.load(std::memory_order_relaxed) == lower) {
            g_pairs[i].upper.store(upper, std::memory_order_release);
            return;
        }
    if (n >= kMaxThreads) fatal("cannot give a thread its lower-half TLS", "too many threads");
    g_pairs[n].lower.store(lower, std::memory_order_relaxed);
    g_pairs[n].upper.store(upper, std::memory_order_relaxed);
    g_npairs.store(n + 1, std::memory_order_release); // writers hold g_spawn_mu
}

// Returns this thread's lower TCB to the pool when the upper thread exits.
struct tls_lease {
    uintptr_t fs = 0;
    uint32_t generation = 0;
    ~tls_lease() {
        request_cache_flush();
        if (!fs || generation != g_generation) return;
        std::lock_guard<std::mutex> g(g_spawn_mu);
        pair_set(fs, 0);
        g_free_lower_fs->push_back(fs);
    }
};
thread_local tls_lease t_lease;

std::string self_dir() {
    Dl_info info;
    if (!dladdr((void *)&self_dir, &info) || !info.dli_fname) return ".";
    std::string p = info.dli_fname;
    auto slash = p.rfind('/');
    return slash == std::string::npos ? "." : p.substr(0, slash);
}

// Open MPI's choice of point-to-point components, as the last lower half's MPI_Init made it
// (upper memory: in the image). A fresh lower half is asked for the same one (lower_environment),
// unless its environment names its own: the kept ranks of a migration made this choice and a new
// rank must match it, and MPI_Init then probes no other (opening pml cm and its MTLs took 0.2 s
// of every MPI_Init on a machine without their hardware).
struct transport_choice {
    char pml[64];
    char mtl[64];
} g_transport;

// The name of an MCA component struct (opal's mca_base_component_2_1_0_t, the same since Open
// MPI 2: project name at 12, type name at 40, component name at 84) if it is one of `type`'s.
void read_component(const void *component, const char *type, char (&out)[64]) {
    out[0] = 0;
    if (!component) return;
    const char *c = static_cast<const char *>(component);
    if (strncmp(c + 12, "ompi", 16) != 0 || strncmp(c + 40, type, 32) != 0) return;
    const char *name = c + 84;
    size_t n = strnlen(name, 64);
    if (n == 0 || n == 64) return;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)name[i]) && name[i] != '_') return;
    memcpy(out, name, n + 1);
}

// The lower half's environment from `envp` (the process's own at start-up; after a restart, the
// one the new launcher gave the restored process).
std::vector<std::string> lower_environment(char *const *envp) {
    std::vector<std::string> env;
    const char *stub = nullptr;
    for (char *const *e = envp; e && *e; e++)
        if (strncmp(*e, "GHOST_STUB_DIR=", 15) == 0) stub = *e + 15;
    if (!stub) stub = getenv("GHOST_STUB_DIR");
    bool have_tunables = false, have_osc = false, have_pml = false, have_mtl = false;
    for (char *const *e = envp; e && *e; e++) {
        std::string s = *e;
        if (s.rfind("OMPI_MCA_osc=", 0) == 0) have_osc = true;
        if (s.rfind("OMPI_MCA_pml=", 0) == 0) have_pml = true;
        if (s.rfind("OMPI_MCA_mtl=", 0) == 0) have_mtl = true;
        if (s.rfind("LD_PRELOAD=", 0) == 0)
            continue; // else the lower ld.so preloads us again (DESIGN 2.2)
        if (s.rfind("LD_LIBRARY_PATH=", 0) ==
            0) { // drop the stub directory: the lower needs the real MPI
            std::string out, rest = s.substr(16);
            size_t pos = 0;
            while (pos <= rest.size()) {
                size_t c = rest.find(':', pos);
                std::string part =
                    rest.substr(pos, c == std::string::npos ? std::string::npos : c - pos);
                if (!part.empty() && !(stub && part == stub))
                    out += (out.empty() ? "" : ":") + part;
                if (c == std::string::npos) break;
                pos = c + 1;
            }
            if (!out.empty()) env.push_back("LD_LIBRARY_PATH=" + out);
            continue;
        }
        if (s.rfind("GLIBC_TUNABLES=", 0) == 0) {
            s += ":glibc.pthread.rseq=0";
            have_tunables = true;
        }
        env.push_back(s);
    }
    if (!have_tunables) env.push_back("GLIBC_TUNABLES=glibc.pthread.rseq=0"); // the upper owns rseq
    // No signal handlers from the lower MPI stack; no rewriting of the lower libc's mmap family.
    env.push_back("OMPI_MCA_opal_signal=");
    env.push_back("OMPI_MCA_memory=^patcher");
    env.push_back("UCX_MEM_EVENTS=no");
    env.push_back("UCX_MEM_MALLOC_HOOKS=no");
    env.push_back("UCX_ERROR_SIGNALS=");
    env.push_back("UCX_HANDLE_ERRORS=none");
    // Every window the layer makes is an MPI_Win_create (or _dynamic) one (mem.cpp,
    // shared_win.cpp), which Open MPI 4.1's osc sm cannot serve: yet it takes the windows of a
    // one-process communicator and fails their creation (MPI_ERR_WIN for an MPI_Win_allocate on
    // MPI_COMM_SELF, which natively gets sm). Left out unless the program's environment names
    // the one-sided components itself.
    if (!have_osc) env.push_back("OMPI_MCA_osc=^sm");
    if (!have_pml && g_transport.pml[0]) {
        env.push_back(std::string("OMPI_MCA_pml=") + g_transport.pml);
        if (!have_mtl && g_transport.mtl[0])
            env.push_back(std::string("OMPI_MCA_mtl=") + g_transport.mtl);
    }
    return env;
}

// Both mallocs would share the kernel's brk: a PROT_NONE guard right after it makes both fall back
// to mmap (DESIGN 2.1).
void guard_brk() {
    uintptr_t cur = (uintptr_t)sbrk(0);
    uintptr_t at = (cur + 4095) & ~(uintptr_t)4095;
    void *g = mmap((void *)at, 16 * 4096, PROT_NONE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    if (g != MAP_FAILED) attribution_note_upper_guard((uintptr_t)g, (uintptr_t)g + 16 * 4096);
    attribution_note_upper_heap(cur);
}

bool disabled() {
    const char *off = getenv("GHOST_MPI_DISABLE");
    return off && *off && strcmp(off, "0") != 0;
}

// Only in a process that has the flavour's MPI library (the stub) loaded: not in mpirun, shells,
// children. A stub that came with a dlopen'ed module (mpi4py's) is in that module's local scope
// only: made global (and kept), the predefined objects are found where the executable's are.
bool soname_loaded() {
    return dlopen(GHOST_MPI_SONAME, RTLD_LAZY | RTLD_NOLOAD | RTLD_GLOBAL) != nullptr;
}

std::atomic<bool> g_start_attempted{false};
std::mutex g_start_mu;

// Runs as a constructor, or later from the first MPI call: earlier than our constructor when
// another library's constructor calls MPI (Open MPI's C++ bindings do: initialiser order across
// LD_PRELOAD is not ours), or long after it in a process that loads MPI with dlopen (Python's
// mpi4py imports an extension module that needs the soname): there the constructor found no MPI
// and left the start to the first call.
__attribute__((constructor)) void ghost_mpi_start() {
    std::lock_guard<std::mutex> start_guard(g_start_mu);
    if (g_start_attempted.load()) return;
    if (disabled()) {
        g_start_attempted.store(true);
        return;
    }
    if (!soname_loaded()) return; // not (yet) an MPI process
    g_start_attempted.store(true);
    g_have_fsgsbase = (getauxval(AT_HWCAP2) & 2) != 0; // HWCAP2_FSGSBASE
    if (intptr_t off = (intptr_t)&t_upper_mark - (intptr_t)current_fs();
        off < 0 && off >= -kMarkReach)
        g_mark_offset = off;
    const char *force = getenv("GHOST_MPI_FORCE_ARCH_PRCTL");
    if (force && *force == '1') g_have_fsgsbase = false;
    poll_pace_measure();
    g_free_lower_fs = new std::vector<uintptr_t>();
    attribution_before_lower();
    guard_brk();

    lower_start_options opt;
    opt.ld_so = "/lib64/ld-linux-x86-64.so.2";
    const char *prog = getenv("GHOST_MPI_LOWER");
    opt.program = prog && *prog ? prog : self_dir() + "/" GHOST_MPI_LOWER_NAME;
    opt.env = lower_environment(environ);
    if (access(opt.program.c_str(), X_OK) != 0)
        fatal("cannot start the lower half", (opt.program + ": not found").c_str());

    g_handoff.magic = GHOST_HANDOFF_MAGIC;
    g_handoff.version = GHOST_HANDOFF_VERSION;
    lower_start_result res;
    std::string err;
    if (!lower_start(opt, &g_handoff, &res, &err))
        fatal("cannot start the lower half", err.c_str());
    const char *why = nullptr;
    if (!flavour_bind(&g_handoff, &why)) fatal("cannot bind the lower MPI library", why);
    g_fns = g_handoff.fns;
    t_lower_fs = g_handoff.main_fs;
    g_main_upper_fs = current_fs();
    pair_set(g_handoff.main_fs, current_fs());
    g_active = true;
    int hook_rc = -1;
    const char *nohooks =
        getenv("GHOST_MPI_NO_HOOKS"); // diagnostics only: attribution then incomplete
    if (!(nohooks && *nohooks == '1')) {
        lower_call lc;
        hook_rc = g_handoff.install_hooks();
    }
    attribution_after_lower(res, hook_rc == 0);
    signals_adopt_installed();
}

} // namespace

void note_transport_choice() {
    read_component(g_handoff.ompi_pml_selected, "pml", g_transport.pml);
    if (strcmp(g_transport.pml, "cm") == 0)
        read_component(g_handoff.ompi_mtl_selected, "mtl", g_transport.mtl);
    else
        g_transport.mtl[0] = 0;
}

bool layer_active() {
    return g_active;
}

void fatal(const char *what, const char *detail) {
    char buf[512];
    int n =
        snprintf(buf, sizeof buf, "ghost-mpi: %s: %s\n", what, detail ? detail : "unknown cause");
    if (n > 0) (void)!write(2, buf, (size_t)std::min(n, (int)sizeof buf - 1));
    _exit(1);
}

uintptr_t acquire_lower_fs() {
    if (!g_active && !g_start_attempted.load()) ghost_mpi_start();
    for (uint32_t r; (r = __atomic_load_n(&g_restarting, __ATOMIC_ACQUIRE)) != 0;)
        syscall(SYS_futex, &g_restarting, FUTEX_WAIT_PRIVATE, r, nullptr, nullptr, 0);
    const uint32_t gen = __atomic_load_n(&g_generation, __ATOMIC_ACQUIRE);
    if (g_active && t_lower_fs && t_lower_gen == gen)
        return t_lower_fs; // the start-up just gave this (main) thread its TLS
    if (!g_active)
        fatal("MPI called without a lower half",
              "this process was not started as an MPI rank under ghostrun (or " GHOST_MPI_SONAME
              " is not its MPI)");
    std::lock_guard<std::mutex> g(g_spawn_mu);
    uintptr_t fs = 0;
    if (g_main_lower_fs && current_fs() == g_main_upper_fs) {
        // After a restart: the thread that called MPI_Init gets the TCB that called it again.
        set_thread_lower_fs(g_main_lower_fs);
        g_main_lower_fs = 0;
        return t_lower_fs;
    }
    if (!g_free_lower_fs->empty()) {
        fs = g_free_lower_fs->back();
        g_free_lower_fs->pop_back();
    } else {
        uintptr_t upper = current_fs();
        g_spawn_borrower.store(upper, std::memory_order_release);
        write_fs(g_handoff.spawn_fs);
        fs = g_handoff.new_tls();
        write_fs(upper);
        g_spawn_borrower.store(0, std::memory_order_release);
        if (fs == 0)
            fatal("cannot give a thread its lower-half TLS",
                  "pthread_create failed in the lower half");
        g_handoff.nthreads_parked++;
    }
    pair_set(fs, current_fs());
    set_thread_lower_fs(fs);
    t_lease.fs = fs;
    t_lease.generation = g_generation;
    return fs;
}

void lower_forget_thread() {
    t_lower_fs = 0;
    __atomic_store_n(&g_restarting, 1, __ATOMIC_RELEASE);
}

bool lower_restart(char *const *envp, const int32_t *inherited, int inherited_count,
                   uintptr_t *init_fs, const char **why) {
    static std::string err;
    std::lock_guard<std::mutex> g(g_spawn_mu);
    __atomic_add_fetch(&g_generation, 1, __ATOMIC_RELEASE);
    g_npairs.store(0, std::memory_order_release);
    g_free_lower_fs->clear();
    attribution_before_lower(inherited, inherited_count);
    guard_brk(); // in place from the image already, normally
    lower_start_options opt;
    opt.ld_so = "/lib64/ld-linux-x86-64.so.2";
    const char *prog = getenv("GHOST_MPI_LOWER");
    opt.program = prog && *prog ? prog : self_dir() + "/" GHOST_MPI_LOWER_NAME;
    opt.env = lower_environment(envp);
    ghost_handoff fresh = {};
    fresh.magic = GHOST_HANDOFF_MAGIC;
    fresh.version = GHOST_HANDOFF_VERSION;
    g_handoff = fresh;
    lower_start_result res;
    if (!lower_start(opt, &g_handoff, &res, &err)) {
        *why = err.c_str();
        return false;
    }
    vobj_forget_lowers();
    bind_reset();
    if (!flavour_bind(&g_handoff, why)) return false;
    g_fns = g_handoff.fns;
    pair_set(g_handoff.main_fs, g_main_upper_fs);
    g_main_lower_fs = g_handoff.main_fs;
    int hook_rc;
    {
        lower_call lc(g_handoff.main_fs);
        hook_rc = g_handoff.install_hooks();
    }
    attribution_after_lower(res, hook_rc == 0);
    *init_fs = g_handoff.main_fs;
    return true;
}

bool lower_drop(uintptr_t fs, char *why, size_t why_len) {
    // From here every thread's lower TCB is void, and a thread that calls MPI waits until the
    // fresh lower half is bound (lower_restart_done).
    // The lower threads are found by their stack pointer, which only a blocked thread shows: the
    // parked ones are asleep now, and are named before their release (and before any lower call
    // is held back: the scan reads the lower half's layout). Once released they run lower code on
    // their way out; one that is merely preempted then looks like any thread that runs, and the
    // scan below could miss it: each is waited for until it is gone.
    static int parked[4096];
    size_t nparked = std::min(ghost_mpi_lower_threads(parked, 4096), (size_t)4096);
    __atomic_store_n(&g_restarting, 1, __ATOMIC_RELEASE);
    __atomic_add_fetch(&g_generation, 1, __ATOMIC_RELEASE);
    {
        lower_call lc(fs);
        g_handoff.release_parked();
    }
    for (long waited_ms = 0;;) {
        size_t alive = 0;
        int alive_tid = 0;
        for (size_t i = 0; i < nparked; i++)
            if (parked[i] > 0 &&
                (syscall(SYS_tgkill, getpid(), parked[i], 0) == 0 || errno != ESRCH))
                alive++, alive_tid = parked[i];
            else
                parked[i] = 0;
        if (!alive) break;
        if (waited_ms >= 5000) {
            snprintf(why, why_len,
                     "%zu thread(s) of the MPI library (tid %d) did not end when it was given up: "
                     "its lower half cannot be dropped in place",
                     alive, alive_tid);
            return false;
        }
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, nullptr);
        waited_ms += 2;
    }
    // Lower calls from here (attribution lists the lower objects) run on the lower main TCB: no
    // thread's, so it outlives the parked ones (the caller's own TCB was one of theirs). No other
    // thread is inside the lower half: the rank is quiescent.
    set_thread_lower_fs(g_handoff.main_fs);
    // The parked threads end now; the MPI library's own (PMIx, progress) ended in MPI_Finalize.
    // One still there would run unmapped code once it woke up.
    int tids[8];
    size_t left = 0;
    for (int i = 0; i < 500; i++) {
        left = ghost_mpi_lower_threads(tids, 8);
        if (left == 0) break;
        struct timespec ts = {0, 10000000};
        nanosleep(&ts, nullptr);
    }
    if (left) {
        snprintf(why, why_len,
                 "%zu thread(s) of the MPI library (tid %d) did not end at its MPI_Finalize: its "
                 "lower half cannot be dropped in place",
                 left, tids[0]);
        return false;
    }
    static ghost_lower_region regions[GHOST_LOWER_MAX_REGIONS + 2048];
    size_t n = attribution_lower_regions_nomalloc(regions, sizeof regions / sizeof regions[0]);
    if (n == SIZE_MAX || n > sizeof regions / sizeof regions[0]) {
        snprintf(why, why_len, "the lower half's memory is not wholly known (ledger overflow)");
        return false;
    }
    auto in_lower = [&](uintptr_t a) {
        for (size_t i = 0; i < n; i++)
            if (a >= regions[i].start && a < regions[i].end) return true;
        return false;
    };
    // The MPI library's own handlers (backtraces on SIGSEGV...) are installed with the lower
    // libc, past the layer's sigaction: the kernel would jump into unmapped code.
    for (int sig = 1; sig < 65; sig++) {
        struct kernel_sigaction {
            uintptr_t handler;
            unsigned long flags;
            uintptr_t restorer;
            uint64_t mask;
        } old{}, dfl{};
        if (sig == SIGKILL || sig == SIGSTOP) continue;
        if (syscall(SYS_rt_sigaction, sig, nullptr, &old, 8) != 0) continue;
        if (old.handler > 1 && (in_lower(old.handler) || in_lower(old.restorer)))
            syscall(SYS_rt_sigaction, sig, &dfl, nullptr, 8);
    }
    for (int fd = 0; fd < GHOST_LOWER_MAX_FDS; fd++)
        if (ghost_mpi_fd_is_lower(fd)) close(fd);
    attribution_forget();
    // The kernel's own mappings are in the lower link map too (the vDSO): they stay, and so does
    // anything else that is not the lower half's alone.
    std::vector<std::pair<uintptr_t, uintptr_t>> keep;
    if (FILE *maps = fopen("/proc/self/maps", "re")) {
        char line[512];
        while (fgets(line, sizeof line, maps)) {
            unsigned long lo = 0, hi = 0;
            if (sscanf(line, "%lx-%lx", &lo, &hi) == 2 &&
                (strstr(line, "[vdso]") || strstr(line, "[vvar") || strstr(line, "[vsyscall]") ||
                 strstr(line, "[stack]")))
                keep.emplace_back(lo, hi);
        }
        fclose(maps);
    }
    std::sort(keep.begin(), keep.end());
    for (size_t i = 0; i < n; i++) {
        uintptr_t at = regions[i].start, end = regions[i].end;
        for (const auto &[klo, khi] : keep) {
            if (khi <= at || klo >= end) continue;
            if (klo > at) munmap((void *)at, klo - at);
            at = std::max<uintptr_t>(at, khi);
        }
        if (at < end) munmap((void *)at, end - at);
    }
    t_lower_fs = 0;
    g_npairs.store(0, std::memory_order_release);
    return true;
}

void lower_restart_done() {
    __atomic_store_n(&g_restarting, 0, __ATOMIC_RELEASE);
    syscall(SYS_futex, &g_restarting, FUTEX_WAKE_PRIVATE, INT32_MAX, nullptr, nullptr, 0);
}

uintptr_t upper_fs_for(uintptr_t lower_fs) {
    if (lower_fs == g_handoff.spawn_fs) return g_spawn_borrower.load(std::memory_order_acquire);
    size_t n = g_npairs.load(std::memory_order_acquire);
    for (size_t i = 0; i < n; i++)
        if (g_pairs[i].lower.load(std::memory_order_relaxed) == lower_fs)
            return g_pairs[i].upper.load(std::memory_order_acquire);
    return 0;
}

int fs_is_upper(uintptr_t fs) {
    if (g_mark_offset == 0 || fs == 0) return -1;
    return *(const volatile uint64_t *)(fs + g_mark_offset) == kUpperMark ? 1 : 0;
}

} // namespace ghost::mpi

// Test hook: arch_prctl system calls the layer made to switch or read FS (0 with wrfsbase).
extern "C" __attribute__((visibility("default"))) unsigned long ghost_mpi_fs_switches(void) {
    return __atomic_load_n(&ghost::mpi::g_fs_syscalls, __ATOMIC_RELAXED);
}
