// SPDX-License-Identifier: Apache-2.0
// State shared by the safe points (quiesce.cpp), the epoch driver (coord_client.cpp) and the
// point-to-point wrappers (p2p.cpp). Not included by the generated wrappers.
#pragma once
#include <atomic>
#include <cstdint>
#include <vector>

#include "quiesce.h"

namespace ghost::mpi {

enum epoch_phase : int {
    phase_run = 0,     // no epoch
    phase_clock = 1,   // threads stop at safe points; blocking collectives finish or wait
    phase_forward = 2, // ranks behind a collective clock run forward to the target
    phase_hold = 3,    // every thread parked: drain, then hold until resumed
};

struct quiesce_state {
    std::atomic<int> phase{phase_run};
    std::atomic<int> behind{0};   // this rank is behind some communicator's target
    std::atomic<uint32_t> gen{0}; // bumped (and futex-woken) on every change parked threads see
    // Bumped when an epoch ends (resume_local) or the coordinator says PASS: each thread parked
    // then goes on into its call, even with the flag raised, and stops at its next safe point (a
    // creation some ranks wait inside, for ranks no clock brings there, can then complete).
    std::atomic<uint32_t> passes{0};
    std::vector<thread_gate *> threads; // registered application threads (g_threads_mu)
};
extern quiesce_state Q;

std::vector<thread_gate *> gate_threads();
void quiesce_wake();
void comms_visit(void (*fn)(comm_info *, void *), void *arg);
// A window's or a file's clock, made by the call that made it over communicator `comm` (nullptr
// when that communicator has no clock: the object is then refused by a checkpoint).
comm_info *object_clock_new(clock_kind k, uintptr_t object, uintptr_t comm);
bool comms_init(const char **why);
void drained_push(drained_msg *m);

} // namespace ghost::mpi
