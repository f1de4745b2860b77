/* SPDX-License-Identifier: Apache-2.0 */
/* The one struct the upper half (libghost_mpi) and the lower-half program share.
 *
 * Contract: the upper half fills the "in" part, starts the lower half's ld.so with the struct's
 * address in argv[1]; the lower program's main fills the "out" part and calls resume(h), which
 * never returns to the lower side. After that, lower functions are only ever called by upper code
 * with FS switched to a lower thread pointer (main_fs for the main thread, one parked lower thread
 * per other upper thread). */
#ifndef GHOST_MPI_HANDOFF_H
#define GHOST_MPI_HANDOFF_H
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define GHOST_HANDOFF_MAGIC 0x67686f73744c4f57ull /* "ghostLOW" */
#define GHOST_HANDOFF_VERSION 3u
#define GHOST_LOWER_MAX_REGIONS 4096
#define GHOST_LOWER_MAX_FDS 1024

/* A range of address space (or an fd when end == 0) the lower half owns. */
struct ghost_lower_region {
    uintptr_t start;
    uintptr_t end;
};

/* Filled by the lower program's hooks on its own libc (mmap family, fd-creating calls). Guarded by
 * `lock` (a spin lock word; taken with atomic exchange) because lower helper threads map memory
 * too. */
struct ghost_lower_ledger {
    volatile int lock;
    uint32_t nregions;
    struct ghost_lower_region regions[GHOST_LOWER_MAX_REGIONS];
    uint32_t overflow; /* non-zero: a region did not fit, attribution is incomplete */
    uint8_t fds[GHOST_LOWER_MAX_FDS]; /* 1: fd was created by lower code */
};

struct ghost_handoff {
    uint64_t magic;
    uint32_t version;
    uint32_t have_fsgsbase;
    /* in (upper): */
    uintptr_t upper_saved_sp; /* written by ghost_lower_enter */
    uintptr_t upper_fs;
    void (*resume)(
        struct ghost_handoff *h); /* upper code; switches back to the saved upper context */
    /* out (lower): */
    void *const *fns; /* lower addresses of the generated function list, in generator order */
    size_t nfns;
    void *const *objs; /* lower addresses/values of predefined objects, in generator order */
    size_t nobjs;
    uintptr_t main_fs;  /* lower thread pointer for the upper main thread */
    uintptr_t spawn_fs; /* lower thread pointer used only (under an upper lock) to call new_tls */
    uintptr_t (*new_tls)(void); /* creates a parked lower thread, returns its thread pointer */
    /* Lists loaded lower objects' address spans into out[max]; returns the count (may exceed max).
     */
    size_t (*list_objects)(struct ghost_lower_region *out, size_t max);
    struct ghost_lower_ledger *ledger;
    int (*install_hooks)(void); /* patches the lower libc; 0 on success */
    uint32_t nthreads_parked;
    /* Ends every parked thread (their TCBs must be lent to no upper thread any more): the lower
     * half is about to be unmapped in place. */
    void (*release_parked)(void);
    /* Open MPI's selected point-to-point components (mca_pml_base_selected_component,
     * ompi_mtl_base_selected_component: MCA component structs its MPI_Init fills), or NULL with
     * another MPI. */
    const void *ompi_pml_selected;
    const void *ompi_mtl_selected;
};

#ifdef __cplusplus
}
#endif
#endif
