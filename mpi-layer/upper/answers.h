// SPDX-License-Identifier: Apache-2.0
// Calls the upper half answers from what it already holds, without entering the lower half
// (mpi-layer/README.md, "Calls answered in the upper half"). Each u_<name> takes the wrapper's
// upper arguments, returns true with the call's result in *rc (or *out), or false: the wrapper
// then makes the lower call as usual (erroneous arguments, not yet known, MPI not initialised).
#pragma once
#include <mpi.h>
#include <stddef.h>
#include <stdint.h>

namespace ghost::mpi {

bool u_Comm_rank(MPI_Comm c, int *rank, int *rc);
bool u_Comm_size(MPI_Comm c, int *size, int *rc);
bool u_Initialized(int *flag, int *rc);
bool u_Finalized(int *flag, int *rc);
bool u_Query_thread(int *provided, int *rc);
bool u_Is_thread_main(int *flag, int *rc);
bool u_Type_size(MPI_Datatype t, int *size, int *rc);
// (Python's mpi4py asks for a buffer's datatype extent at every send and receive.)
bool u_Type_get_extent(MPI_Datatype t, MPI_Aint *lb, MPI_Aint *extent, int *rc);
bool u_Type_get_true_extent(MPI_Datatype t, MPI_Aint *lb, MPI_Aint *extent, int *rc);
// For a predefined datatype only (a derived one may be uncommitted: the library's error then).
// (mpi4py's pickled receive is MPI_Mprobe, MPI_Get_count, MPI_Mrecv.)
bool u_Get_count(const MPI_Status *st, MPI_Datatype t, int *count, int *rc);
// The bytes a status says arrived, read as the library itself reads its MPI_Status.
long long status_bytes(const MPI_Status *st);
bool u_Wtime(double *out);
bool u_Wtick(double *out);
// MPI_Alloc_mem / MPI_Free_mem (mem.cpp): blocks of upper memory, in the rank's image.
bool u_Alloc_mem(MPI_Aint size, MPI_Info info, void *baseptr, int *rc);
bool u_Free_mem(void *base, int *rc);
void *upper_alloc(MPI_Aint size); // nullptr if it cannot
bool upper_free(void *base);      // false if base is not such a block
// The memory MPI_Win_allocate gave window `win` (upper handle), or nullptr.
void *win_upper_memory(uintptr_t win);

// MPI_Win_allocate_shared (shared_win.cpp): the node's segment, mapped by the layer in upper
// memory. shared_win_allocate is collective over lcomm; on success *base is this rank's part, for
// MPI_Win_create, and *seg the segment, which shared_win_adopted ties to the window (upper handle)
// or shared_win_release unmaps (also after MPI_Win_free).
struct shared_segment;
int shared_win_allocate(MPI_Aint size, MPI_Aint disp_unit, MPI_Info linfo, MPI_Comm lcomm,
                        uintptr_t lfs, void **base, shared_segment **seg);
void shared_win_adopted(uintptr_t win, shared_segment *seg);
shared_segment *shared_win_of(uintptr_t win); // nullptr: not a shared window
void shared_win_release(shared_segment *seg);
bool u_Win_shared_query(MPI_Win win, int rank, MPI_Aint *size, int *disp_unit, void *baseptr,
                        int *rc);
bool u_Win_shared_query_c(MPI_Win win, int rank, MPI_Aint *size, MPI_Aint *disp_unit, void *baseptr,
                          int *rc);
// A restart (collective over lcomm, the window's new lower communicator): a new segment at the
// same address in every member, with rank 0's contents; *base: this rank's part. -1 with a reason.
int shared_win_rebuild(const void *win_vobj, MPI_Comm lcomm, uintptr_t lfs, void **base, char *why,
                       size_t why_len);
// A restored rank's application threads run again before the rebuild (the agent resumes them
// first: a parked thread may hold a lock the rebuild needs). A write of theirs to a segment
// meanwhile would land in this rank's own copy, which the rebuild replaces with rank 0's: lost
// (rank 0 then read the other rank's part of the step before). So shared_win_hold_writes, with
// every application thread still parked (system calls only; the first caller of a restore does
// it), write-protects the segments with a userfaultfd: a writer waits in the kernel, reads go on.
// shared_win_release_writes, once every window is rebuilt, lets the writers write, into the
// shared segment now mapped in its place.
void shared_win_hold_writes();
void shared_win_release_writes();
bool shared_win_any(); // the rank holds a window of shared memory

// MPI_Init and MPI_Init_thread: initialises the lower half at MPI_THREAD_MULTIPLE whatever the
// application asks, and puts in *app_level the level the application is told: what it required,
// or less if the library gives less (what the library itself would have answered).
int lower_init(uintptr_t lfs, int *argc, char ***argv, int required, int *app_level);

// count elements of the application's datatype in bytes, from the size the upper half caches
// (u_Type_size: one lower call the first time a datatype is seen); 0 if it cannot be known.
// Called outside any lower scope.
uint64_t payload_bytes(MPI_Datatype upper_type, long long count);

// State kept in upper memory (so in a rank's image): set by the Init/Finalize wrappers.
void note_initialized(
    int provided); // after a successful MPI_Init(_thread): the application's level
void note_finalized();
// After a successful MPI_Type_size that went to the lower half: remember it.
void note_type_size(MPI_Datatype t, int size);

} // namespace ghost::mpi
