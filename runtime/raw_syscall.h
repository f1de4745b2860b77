// SPDX-License-Identifier: Apache-2.0
// Raw x86_64 system calls: no libc, no errno. Used by the freestanding restorer and by the
// in-process agent where libc may not be usable (signal handlers, a thread whose TLS is not yet
// fixed up). Return value: the kernel's, i.e. -errno on failure.
#pragma once

namespace ghost::sys {

inline long call6(long nr, long a1 = 0, long a2 = 0, long a3 = 0, long a4 = 0, long a5 = 0,
                  long a6 = 0) {
    long ret;
    register long r10 __asm__("r10") = a4;
    register long r8 __asm__("r8") = a5;
    register long r9 __asm__("r9") = a6;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(nr), "D"(a1), "S"(a2), "d"(a3), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return ret;
}

template <class... Args> inline long call(long nr, Args... args) {
    return call6(nr, (long)args...);
}

inline bool failed(long ret) {
    return ret < 0 && ret > -4096;
}

} // namespace ghost::sys
