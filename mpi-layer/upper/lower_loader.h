// SPDX-License-Identifier: Apache-2.0
// Starting the lower half: map a second ld.so, give it a fresh stack, argv/envp/auxv, and run the
// lower program until its main hands the function table back (DESIGN.md section 2).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "handoff.h"

namespace ghost::mpi {

struct lower_start_options {
    std::string ld_so;            // the dynamic loader to map (e.g. /lib64/ld-linux-x86-64.so.2)
    std::string program;          // the lower-half program linked against the real MPI library
    std::vector<std::string> env; // complete environment of the lower half
};

// Ranges the loader itself mapped for the lower half (ld.so image, lower stack).
struct lower_start_result {
    uintptr_t ld_lo = 0, ld_hi = 0;
    uintptr_t stack_lo = 0, stack_hi = 0;
};

// Starts the lower half and fills h's "out" part. Returns false with a one-line reason in *err.
// Must run on the main thread, before any other thread exists (the kernel's robust-list and
// clear_child_tid of this thread are re-pointed to upper memory afterwards).
bool lower_start(const lower_start_options &opt, ghost_handoff *h, lower_start_result *res,
                 std::string *err);

} // namespace ghost::mpi
