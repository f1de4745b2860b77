// SPDX-License-Identifier: Apache-2.0
// Stable kernel UAPI values that Debian 12's 6.1 headers lack (or that freestanding code cannot
// include).
#pragma once

#ifndef PR_SET_MM
#define PR_SET_MM 35
#endif
#ifndef PR_SET_MM_MAP
#define PR_SET_MM_MAP 14
#endif
#ifndef PR_SET_MM_EXE_FILE
#define PR_SET_MM_EXE_FILE 13
#endif
#ifndef PR_GET_TID_ADDRESS
#define PR_GET_TID_ADDRESS 40
#endif
#ifndef CLONE_CLEAR_SIGHAND
#define CLONE_CLEAR_SIGHAND 0x100000000ULL
#endif
#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif
#ifndef MREMAP_DONTUNMAP
#define MREMAP_DONTUNMAP 4
#endif
#ifndef RSEQ_SIG
#define RSEQ_SIG 0x53053053
#endif

namespace ghost::uapi {

// PAGEMAP_SCAN (linux/fs.h, 6.7; the guard category 6.14).
struct page_region {
    unsigned long long start, end, categories;
};
struct pm_scan_arg {
    unsigned long long size, flags, start, end, walk_end, vec, vec_len, max_pages;
    unsigned long long category_inverted, category_mask, category_anyof_mask, return_mask;
};
inline constexpr unsigned long pagemap_scan = 0xc0606610UL; // _IOWR('f', 16, struct pm_scan_arg)
inline constexpr unsigned long long page_is_present = 1ULL << 3;
inline constexpr unsigned long long page_is_swapped = 1ULL << 4;
inline constexpr unsigned long long page_is_guard = 1ULL << 8;
inline constexpr unsigned long long page_is_written = 1ULL << 1;
inline constexpr unsigned long long pm_scan_wp_matching = 1ULL << 0;
inline constexpr unsigned long long pm_scan_check_wpasync = 1ULL << 1;

// Write tracking with userfaultfd (linux/userfaultfd.h; the asynchronous mode is 6.7): a write to
// a write-protected page is let through by the kernel itself and leaves the page unprotected,
// which PAGEMAP_SCAN reports as PAGE_IS_WRITTEN (and re-protects with PM_SCAN_WP_MATCHING).
inline constexpr int uffd_user_mode_only = 1;
inline constexpr unsigned long long uffd_api = 0xaa;
inline constexpr unsigned long long uffd_feature_wp_unpopulated = 1ULL << 13;
inline constexpr unsigned long long uffd_feature_wp_async = 1ULL << 15;
inline constexpr unsigned long long uffdio_register_mode_wp = 1ULL << 1;
struct uffdio_api_arg {
    unsigned long long api, features, ioctls;
};
struct uffdio_register_arg {
    unsigned long long start, len, mode, ioctls;
};
inline constexpr unsigned long uffdio_api_ioctl = 0xc018aa3fUL;      // _IOWR(0xaa, 0x3f, 24 bytes)
inline constexpr unsigned long uffdio_register_ioctl = 0xc020aa00UL; // _IOWR(0xaa, 0x00, 32 bytes)
inline constexpr int madv_guard_install = 102;

// struct prctl_mm_map (linux/prctl.h)
struct prctl_mm_map {
    unsigned long long start_code, end_code, start_data, end_data, start_brk, brk, start_stack;
    unsigned long long arg_start, arg_end, env_start, env_end;
    unsigned long long *auxv;
    unsigned int auxv_size;
    unsigned int exe_fd;
};

// struct clone_args (linux/sched.h), version with set_tid (CLONE_ARGS_SIZE_VER1 = 80 bytes)
struct clone_args {
    unsigned long long flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls;
    unsigned long long set_tid, set_tid_size;
};

// The kernel's struct sigaction for rt_sigaction on x86_64 (not glibc's).
struct kernel_sigaction {
    unsigned long handler;
    unsigned long flags;
    unsigned long restorer;
    unsigned long mask;
};

// pagemap entry bits (Documentation/admin-guide/mm/pagemap.rst)
inline constexpr unsigned long long pm_present = 1ULL << 63;
inline constexpr unsigned long long pm_swapped = 1ULL << 62;
inline constexpr unsigned long long pm_file_or_shared = 1ULL << 61;

// Terminal ioctls (asm-generic/ioctls.h; TCGETS2/TCSETS2 take a struct termios2 of 44 bytes).
inline constexpr unsigned long tcgets2 = 0x802c542a;
inline constexpr unsigned long tcsets2 = 0x402c542b;
inline constexpr unsigned long tiocgwinsz = 0x5413;
inline constexpr unsigned long tiocswinsz = 0x5414;
inline constexpr unsigned long tiocinq = 0x541b; // FIONREAD
inline constexpr unsigned long tiocpkt = 0x5420;
inline constexpr unsigned long tiocgptn = 0x80045430;
inline constexpr unsigned long tiocsptlck = 0x40045431;
inline constexpr unsigned long tiocgpkt = 0x80045438;
inline constexpr unsigned long tiocgptlck = 0x80045439;
inline constexpr unsigned long tiocgptpeer = 0x5441;

} // namespace ghost::uapi
