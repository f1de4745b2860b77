// SPDX-License-Identifier: Apache-2.0
// The `ghost` subcommands. Each returns the process exit status; errors are printed as one line.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

namespace ghost::launcher {

struct launch_args {
    std::string ckpt_dir = "ghost-ckpt";
    std::string pid_file;
    int ckpt_signal = 12;  // SIGUSR2
    bool keep_fds = false; // keep inherited pipes/sockets above fd 2
    std::vector<std::string> command;
};
int cmd_launch(const launch_args &a);

struct checkpoint_args {
    std::string dir;   // default: the launch's --ckpt-dir
    std::string image; // the image file itself (instead of DIR/image.ghost), e.g. DIR/rank3.ghost
    bool kill = false;
    pid_t pid = 0;
};
int cmd_checkpoint(const checkpoint_args &a);

struct restart_args {
    std::string image; // a directory (its image.ghost) or an image file
    std::string pid_file;
    bool new_pid = false;
};
int cmd_restart(const restart_args &a);

struct duplicate_args {
    pid_t pid = 0;
    std::string pid_file;
    bool detach = false;
    bool via_image = false; // the export+restore path even where the fast (fork) one applies
};
int cmd_duplicate(const duplicate_args &a);

// The restart entry of one MPI rank under a new mpirun: picks DIR/rank<R>.ghost by the rank the
// launcher gave this process (OMPI_COMM_WORLD_RANK, PMIX_RANK, PMI_RANK) and execs the restorer
// in place, so that the launcher's pid, descriptors and environment become the restored rank's.
int cmd_restart_rank(const std::string &dir);

int cmd_inspect(const std::string &image);
int cmd_status();

// "ghost: <message>" on stderr; returns 1.
int fail(const std::string &message);

} // namespace ghost::launcher
