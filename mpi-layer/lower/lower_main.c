/* SPDX-License-Identifier: Apache-2.0 */
/* The lower-half program: started by libghost_mpi through a second ld.so, linked against the real
 * MPI library. It never calls MPI itself: main hands a table of the library's entry points back to
 * the upper half and switches to the upper context for good. Its own frames stay on the lower
 * stack.
 *
 * Hazard: everything here runs with the lower libc and lower TLS; nothing may call into upper code
 * except h->resume. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <link.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "handoff.h"

extern void *const ghost_lower_fns[];
extern const size_t ghost_lower_nfns;
extern void *const ghost_lower_objs[];
extern const size_t ghost_lower_nobjs;
int ghost_lower_hooks_install(void);
extern struct ghost_lower_ledger ghost_lower_ledger_data;

struct parked_slot {
    _Atomic uintptr_t fs;
};

/* Set once by release_parked: the lower half is being dropped in place (a staying rank of a
 * migration takes a fresh one), and its parked threads end. */
static _Atomic uint32_t g_released;

/* A parked thread lends its TCB (thread pointer) to one upper thread; it blocks every signal so
 * that process-directed signals never land on it, and sleeps until the lower half is dropped. */
static void *parked_main(void *arg) {
    struct parked_slot *slot = arg;
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    atomic_store(&slot->fs, (uintptr_t)__builtin_thread_pointer());
    while (atomic_load(&g_released) == 0)
        syscall(SYS_futex, &g_released, FUTEX_WAIT_PRIVATE, 0, NULL, NULL, 0);
    return NULL;
}

static void lower_release_parked(void) {
    atomic_store(&g_released, 1);
    syscall(SYS_futex, &g_released, FUTEX_WAKE_PRIVATE, 0x7fffffff, NULL, NULL, 0);
}

static uintptr_t lower_new_tls(void) {
    struct parked_slot slot;
    atomic_init(&slot.fs, 0);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 64 * 1024);
    pthread_t t;
    int rc = pthread_create(&t, &attr, parked_main, &slot);
    pthread_attr_destroy(&attr);
    if (rc != 0) return 0;
    while (atomic_load(&slot.fs) == 0)
        sched_yield();
    return atomic_load(&slot.fs);
}

struct list_ctx {
    struct ghost_lower_region *out;
    size_t max;
    size_t n;
};

static int list_one(struct dl_phdr_info *info, size_t size, void *data) {
    (void)size;
    struct list_ctx *c = data;
    uintptr_t lo = UINTPTR_MAX, hi = 0;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *p = &info->dlpi_phdr[i];
        if (p->p_type != PT_LOAD) continue;
        uintptr_t s = info->dlpi_addr + p->p_vaddr, e = s + p->p_memsz;
        if (s < lo) lo = s;
        if (e > hi) hi = e;
    }
    if (hi == 0) return 0;
    long pg = 4096;
    lo &= ~(uintptr_t)(pg - 1);
    hi = (hi + pg - 1) & ~(uintptr_t)(pg - 1);
    if (c->n < c->max) {
        c->out[c->n].start = lo;
        c->out[c->n].end = hi;
    }
    c->n++;
    return 0;
}

static size_t lower_list_objects(struct ghost_lower_region *out, size_t max) {
    struct list_ctx c = {out, max, 0};
    dl_iterate_phdr(list_one, &c);
    return c.n;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "ghost_lower: this program is started by libghost_mpi only\n");
        return 2;
    }
    struct ghost_handoff *h = (struct ghost_handoff *)strtoull(argv[1], NULL, 16);
    if (h == NULL || h->magic != GHOST_HANDOFF_MAGIC || h->version != GHOST_HANDOFF_VERSION) {
        fprintf(stderr, "ghost_lower: bad hand-off block %s\n", argv[1]);
        return 2;
    }
    /* The threads the MPI library starts (PMIx, progress and event threads) block every signal,
     * as the parked ones do: the kernel gives a signal of the program's, or the agent's park
     * signal, to any thread that does not block it, and an upper handler cannot run on lower TLS.
     * pthread_create without attributes takes this default (a restored rank's lower half got it
     * from the agent's manager, which starts it with nearly every signal blocked). A library that
     * passes attributes of its own is caught by the upper handlers instead (restart.cpp
     * thread_state, signals.cpp). */
    const char *unseen = getenv("GHOST_MPI_TEST_UNSEEN_LOWER_THREADS"); /* tests: as without */
    pthread_attr_t def;
    if (!(unseen && *unseen == '1') && pthread_getattr_default_np(&def) == 0) {
        sigset_t all;
        sigfillset(&all);
        if (pthread_attr_setsigmask_np(&def, &all) == 0) pthread_setattr_default_np(&def);
        pthread_attr_destroy(&def);
    }
    h->fns = ghost_lower_fns;
    h->nfns = ghost_lower_nfns;
    h->objs = ghost_lower_objs;
    h->nobjs = ghost_lower_nobjs;
    h->main_fs = (uintptr_t)__builtin_thread_pointer();
    h->new_tls = lower_new_tls;
    h->list_objects = lower_list_objects;
    h->ledger = &ghost_lower_ledger_data;
    h->install_hooks = ghost_lower_hooks_install;
    h->release_parked = lower_release_parked;
    h->ompi_pml_selected = dlsym(RTLD_DEFAULT, "mca_pml_base_selected_component");
    h->ompi_mtl_selected = dlsym(RTLD_DEFAULT, "ompi_mtl_base_selected_component");
    h->spawn_fs = lower_new_tls();
    if (h->spawn_fs == 0) {
        fprintf(stderr, "ghost_lower: cannot create the lower spawner thread\n");
        return 2;
    }
    h->resume(h);
    abort(); /* resume never returns */
}
