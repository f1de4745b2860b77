// SPDX-License-Identifier: Apache-2.0
// Switching the FS base (the thread pointer) between the upper and the lower half.
//
// Contract: write_fs() is the only way upper code enters lower TLS; between two write_fs() calls
// the caller must not touch upper TLS (thread_local, errno, the stack-protector canary at %fs:0x28)
// — all such reads happen before the switch or after the switch back. Functions that switch in
// their own body and run user code in between are marked no_stack_protector.
#pragma once
#include <cstdint>

namespace ghost::mpi {

// Set once by the loader from AT_HWCAP2 (HWCAP2_FSGSBASE); false means arch_prctl fallback.
extern bool g_have_fsgsbase;
// arch_prctl system calls made on the fallback path (all threads; ghost_mpi_fs_switches() reads
// it): tests check that a simple MPI call makes at most two. Never touched on the wrfsbase path.
extern unsigned long g_fs_syscalls;

// glibc keeps the thread pointer itself at %fs:0 (tcbhead_t.tcb), so this is the current FS base.
inline uintptr_t current_fs() {
    uintptr_t v;
    asm volatile("mov %%fs:0, %0" : "=r"(v));
    return v;
}

// Reads the FS base register directly (usable while a foreign TCB is loaded too).
inline uintptr_t read_fs_base() {
    uintptr_t v;
    if (g_have_fsgsbase) {
        asm volatile("rdfsbase %0" : "=r"(v));
        return v;
    }
    long ret;
    __atomic_fetch_add(&g_fs_syscalls, 1, __ATOMIC_RELAXED);
    asm volatile("syscall" : "=a"(ret) : "a"(158), "D"(0x1003), "S"(&v) : "rcx", "r11", "memory");
    return v;
}

inline void write_fs(uintptr_t v) {
    if (__builtin_expect(g_have_fsgsbase, 1)) {
        asm volatile("wrfsbase %0" : : "r"(v) : "memory");
    } else {
        long ret;
        __atomic_fetch_add(&g_fs_syscalls, 1, __ATOMIC_RELAXED);
        asm volatile("syscall"
                     : "=a"(ret)
                     : "a"(158), "D"(0x1002), "S"(v)
                     : "rcx", "r11", "memory");
    }
}

} // namespace ghost::mpi
