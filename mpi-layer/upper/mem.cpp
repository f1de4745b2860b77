// SPDX-License-Identifier: Apache-2.0
// Memory the program gets from MPI (MPI_Alloc_mem, MPI_Win_allocate) is the program's: allocated
// in the upper half, so that it is in the rank's image and comes back at the same address after a
// restart. The MPI library would have taken it from its own (lower, never saved) memory: a
// restarted rank would have lost its contents. A window MPI_Win_allocate asked for is made by
// MPI_Win_create over that memory, which a restart makes again like any MPI_Win_create window.
// What is lost: memory an MPI library registers ahead for RDMA (it registers the program's
// memory on first use instead), and the MPI's own choice for such windows (Open MPI 4.1 picks
// its shared-memory osc for an allocated window on one node, another for a created one).
// MPI_WIN_CREATE_FLAVOR still reads MPI_WIN_FLAVOR_ALLOCATE (quiesce.cpp, win_flavor_attr).
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <unordered_map>

#include "answers.h"
#include "wrapper_support.h"

namespace ghost::mpi {
namespace {
std::mutex g_mem_mu;
std::unordered_map<void *, size_t> *g_mem; // base -> bytes, of the blocks handed out
} // namespace

void *upper_alloc(MPI_Aint size) {
    if (size < 0) return nullptr;
    void *p = nullptr;
    // MPI libraries align to a cache line at least; a zero-sized block is still a block.
    if (posix_memalign(&p, 64, size > 0 ? (size_t)size : 1) != 0) return nullptr;
    std::lock_guard<std::mutex> g(g_mem_mu);
    if (!g_mem) g_mem = new std::unordered_map<void *, size_t>();
    (*g_mem)[p] = (size_t)size;
    return p;
}

bool upper_free(void *base) {
    {
        std::lock_guard<std::mutex> g(g_mem_mu);
        if (!g_mem || g_mem->erase(base) == 0) return false;
    }
    free(base);
    return true;
}

void *win_upper_memory(uintptr_t win) {
    if (win == 0 || win == g_upper_null[(int)kind::win]) return nullptr;
    vobj *v = decode<kind::win>((MPI_Win)win);
    if (!v || v->magic != kVobjMagic || v->k != kind::win || !v->rec) return nullptr;
    const char *made_by = g_fn_names[v->rec->fn];
    if (strncmp(made_by, "MPI_Win_allocate", 16) != 0 || strstr(made_by, "shared")) return nullptr;
    return (void *)(uintptr_t)v->rec->args[4];
}

bool u_Alloc_mem(MPI_Aint size, MPI_Info, void *baseptr, int *rc) {
    if (size < 0 || !baseptr) return false; // the library's own error
    void *p = upper_alloc(size);
    if (!p) {
        *rc = MPI_ERR_NO_MEM;
        return true;
    }
    *(void **)baseptr = p;
    *rc = MPI_SUCCESS;
    return true;
}

bool u_Free_mem(void *base, int *rc) {
    if (!upper_free(base)) return false; // not ours: the library's answer
    *rc = MPI_SUCCESS;
    return true;
}

} // namespace ghost::mpi
