// SPDX-License-Identifier: Apache-2.0
// Which MPI library a program uses, from its ELF dynamic section (DT_NEEDED), with `ldd` as
// fallback for programs that reach MPI through another library.
#pragma once
#include <string>

namespace ghost::run {

enum class mpi_flavour { none, openmpi, mpich, unsupported };

struct mpi_detection {
    mpi_flavour flavour = mpi_flavour::none;
    std::string library; // the MPI soname found (also for unsupported ones)
    std::string error;   // non-empty: the program could not be inspected (one line)
};

// `program` is a path (resolved by the caller).
mpi_detection detect_mpi(const std::string &program);

// Resolves a command name through PATH like execvp; empty if not found or not executable.
std::string resolve_program(const std::string &name);

} // namespace ghost::run
