// SPDX-License-Identifier: Apache-2.0
// Lower-half MPI functions the quiescence code calls directly (with lower handles, inside a
// lower_call scope), bypassing the wrappers: no gate, no counting, no translation. Resolved once
// after MPI_Init.
#pragma once
#include <mpi.h>

namespace ghost::mpi {

struct lower_api {
    int (*Isend)(const void *, int, MPI_Datatype, int, int, MPI_Comm, MPI_Request *);
    int (*Issend)(const void *, int, MPI_Datatype, int, int, MPI_Comm, MPI_Request *);
    int (*Irsend)(const void *, int, MPI_Datatype, int, int, MPI_Comm, MPI_Request *);
    int (*Irecv)(void *, int, MPI_Datatype, int, int, MPI_Comm, MPI_Request *);
    int (*Test)(MPI_Request *, int *, MPI_Status *);
    int (*Testall)(int, MPI_Request *, int *, MPI_Status *);
    int (*Waitall)(int, MPI_Request *, MPI_Status *);
    int (*Testany)(int, MPI_Request *, int *, int *, MPI_Status *);
    int (*Testsome)(int, MPI_Request *, int *, int *, MPI_Status *);
    int (*Iprobe)(int, int, MPI_Comm, int *, MPI_Status *);
    int (*Improbe)(int, int, MPI_Comm, int *, MPI_Message *, MPI_Status *);
    int (*Imrecv)(void *, int, MPI_Datatype, MPI_Message *, MPI_Request *);
    int (*Request_get_status)(MPI_Request, int *, MPI_Status *);
    int (*Get_count)(const MPI_Status *, MPI_Datatype, int *);
    int (*Type_size)(MPI_Datatype, int *);
    int (*Type_get_extent)(MPI_Datatype, MPI_Aint *, MPI_Aint *);
    int (*Type_get_true_extent)(MPI_Datatype, MPI_Aint *, MPI_Aint *);
    int (*Unpack)(const void *, int, int *, void *, int, MPI_Datatype, MPI_Comm);
    int (*Pack)(const void *, int, MPI_Datatype, void *, int, int *, MPI_Comm);
    int (*Pack_size)(int, MPI_Datatype, MPI_Comm, int *);
    int (*Status_set_elements_x)(MPI_Status *, MPI_Datatype, MPI_Count);
    int (*Test_cancelled)(const MPI_Status *, int *);
    int (*Comm_group)(MPI_Comm, MPI_Group *);
    int (*Comm_remote_group)(MPI_Comm, MPI_Group *);
    int (*Comm_test_inter)(MPI_Comm, int *);
    int (*Group_size)(MPI_Group, int *);
    int (*Group_translate_ranks)(MPI_Group, int, const int *, MPI_Group, int *);
    int (*Group_free)(MPI_Group *);
    int (*Comm_size)(MPI_Comm, int *);
    int (*Comm_rank)(MPI_Comm, int *);
    int (*Start)(MPI_Request *);
    MPI_Comm world; // lower MPI_COMM_WORLD
    MPI_Group world_group;
    MPI_Datatype byte;   // lower MPI_BYTE
    MPI_Datatype packed; // lower MPI_PACKED
    MPI_Request req_null;
    MPI_Message msg_null;
    bool ready;
};
extern lower_api L;

// Resolves L (after a successful MPI_Init); false with a reason if the table lacks a function.
bool lower_api_bind(const char **why);
void *lower_fn(const char *api);
// p2p.cpp: in a restored rank, the pending requests on the new lower half (quiesce_after_restart).
void requests_after_restart();

} // namespace ghost::mpi
