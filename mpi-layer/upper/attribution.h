// SPDX-License-Identifier: Apache-2.0
// Knowing exactly what belongs to the lower half (DESIGN 2.6): memory ranges, file descriptors,
// threads.
//
// Sources, all combined at query time: the loader's own mappings (second ld.so, lower stack); a
// diff of /proc/self/maps and /proc/self/fd around the lower half's start-up; the lower objects
// from the lower dl_iterate_phdr; the ledger of the hooked lower libc (mmap family, fd-creating
// calls); launcher fds inherited before start-up. The upper half is known from the pre-start
// snapshot, its own hooked mmap family and its dl_iterate_phdr, so that anything in neither set is
// reported as unattributed.
#pragma once
#include <cstddef>
#include <cstdint>

#include "handoff.h"
#include "lower_loader.h"

namespace ghost::mpi {

// `inherited`: the launcher's descriptors (a restart: the restorer's list); -1: all open ones.
void attribution_before_lower(const int32_t *inherited = nullptr, int inherited_count = -1);
// The lower half is being unmapped in place (lower_drop): nothing is known until the next start.
void attribution_forget();
// An fd the upper half itself opened after the lower half started (the coordinator connection,
// a kept rank's placeholder connection): never the lower half's, whatever the lower ledger
// remembers of that number. One per use; a new one replaces the last.
enum class upper_fd_use { coordinator = 0, placeholder = 1 };
void attribution_note_upper_fd(int fd, upper_fd_use use);
void attribution_note_upper_guard(uintptr_t lo, uintptr_t hi);
// The program break once guard_brk has stopped it: what the upper malloc added to its brk heap
// since attribution_before_lower's snapshot (reading /proc/self/maps allocates; in a process that
// starts the layer late, Python's, the heap is often full) is upper, not start-up diff.
void attribution_note_upper_heap(uintptr_t brk_now);
void attribution_after_lower(const lower_start_result &res, bool hooks_installed);
// Every lower range, merged, into out[max] without allocating (for the agent's exclude hook, with
// the other threads stopped); the calling thread must hold a lower TLS. SIZE_MAX when attribution
// is incomplete (ledger overflow) or the layer is not running.
size_t attribution_lower_regions_nomalloc(ghost_lower_region *out, size_t max);
// Whether addr lies in memory the lower half's start-up or its libc mapped (a lower thread's stack
// and TCB); lock-free but for the ledger's spin lock, no allocation, no TLS (signal handlers).
bool attribution_addr_is_lower(uintptr_t addr);

} // namespace ghost::mpi

extern "C" {
// Sorted, merged lower-half address ranges; returns the total count (may exceed max).
size_t ghost_mpi_lower_regions(struct ghost_lower_region *out, size_t max);
// 1 if fd belongs to the lower half.
int ghost_mpi_fd_is_lower(int fd);
// Thread ids whose stack pointer lies in lower memory (MPI helper threads, parked TLS donors).
size_t ghost_mpi_lower_threads(int *out, size_t max);
// Counts /proc/self/maps bytes that are neither lower nor upper; lists them on report_fd (-1:
// silent). Returns 0 when everything is attributed, 1 otherwise, -1 when the layer is inactive.
int ghost_mpi_attribution_check(int report_fd, size_t *unattributed_regions,
                                size_t *unattributed_bytes);
}
