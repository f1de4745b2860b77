// SPDX-License-Identifier: Apache-2.0
// Which MPI library a program uses, from its ELF dynamic section (DT_NEEDED), with `ldd` as
// fallback for programs that reach MPI through another library; for a Python program, from the
// extension module its mpi4py would load (it links the MPI library; the interpreter does not).
#pragma once
#include <string>
#include <vector>

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

// What every rank runs and which MPI it will load. `command` is PROGRAM and its arguments, where a
// Python interpreter that is a script or shim (pyenv's `python3` on PATH) is replaced by the real
// interpreter (its sys.executable) and a Python script with a `#!` line runs as `INTERPRETER
// SCRIPT ARGS`. `mpi.flavour` is none when nothing tells; `why_unknown` then says why in a few
// words, `mpi.error` when the program cannot be run at all.
struct program_plan {
    std::vector<std::string> command;
    mpi_detection mpi;
    std::string why_unknown;
};
program_plan plan_program(const std::string &name, const std::vector<std::string> &args);

} // namespace ghost::run
