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
    std::string dir;   // default: the launch's --ckpt-dir (a job: ghostrun's --ckpt-dir)
    std::string image; // the image file itself (instead of DIR/image.ghost), e.g. DIR/rank3.ghost
    bool kill = false;
    std::string target; // a job id (it names <runtime dir>/job-JOB.sock) or a pid
    pid_t pid = 0;
    int timeout_ms = 10000;  // a job: bound of the quiesce
    std::string to;          // a resource target (resources/registry.h): ucx://HOST:PORT, fs:PATH
    std::string secret_file; // remote targets: the shared secret (default $GHOST_JOB_SECRET)
    // Incremental images: track writes, and store only the pages written since `parent` (default:
    // the image the new one replaces); the first such checkpoint of a process is whole.
    bool incremental = false;
    std::string parent;
    // The image's directory must exist: a job's coordinator makes each generation's directory
    // before its ranks write into it, and removes it when the checkpoint fails; a rank's
    // checkpointer that finishes later must not make it again.
    bool no_mkdir = false;
    // A pre-copy (core::export_precopy): the memory copied while the process runs, its index
    // saved to this file; and the image after it, which takes the pages not written since from
    // it (named kPrecopyName beside the image, or given to the restorer by descriptor).
    std::string precopy_index;
    std::string after_precopy; // the pre-copy's index file
    // Connected and ready (--to), the checkpointer waits on its standard input before it parks
    // the process: 'g' then the input's end is its go; the end alone, its dismissal (the agent's
    // GHOST_CHECKPOINT_STANDBY).
    bool standby = false;
};
int cmd_checkpoint(checkpoint_args a);
// How an image taken after a pre-copy names it (its tracking record's source).
inline constexpr const char *kPrecopyName = "precopy.ghost";

struct restart_args {
    std::string image; // a directory (its image.ghost) or an image file; or a job's checkpoint
                       // directory (DIR/latest) or generation (DIR/gen-N/manifest.json)
    std::string pid_file;
    bool new_pid = false;
    std::vector<std::string> mpirun_opts; // a job: for its new mpirun
};
int cmd_restart(const restart_args &a);

struct duplicate_args {
    pid_t pid = 0;
    std::string pid_file;
    bool detach = false;
    bool via_image = false; // the export+restore path even where the fast (fork) one applies
    bool new_ids = false;   // the fast copy under a new pid (not in a pid namespace of its own)
    bool precopy = false;   // (through an image) its memory copied first while the process runs
    std::string to;         // ucx://HOST:PORT: the copy is restored there by `ghost receive`
    std::string secret_file;
};
int cmd_duplicate(const duplicate_args &a);

// The restart entry of one MPI rank under a new mpirun: picks DIR/rank<R>.ghost by the rank the
// launcher gave this process (OMPI_COMM_WORLD_RANK, PMIX_RANK, PMI_RANK) and execs the restorer
// in place, so that the launcher's pid, descriptors and environment become the restored rank's.
int cmd_restart_rank(const std::string &dir);
int cmd_restart_rank_receive();

int cmd_inspect(const std::string &image);

// The other end of `checkpoint --to ucx://` and `duplicate --to ucx://`: accepts one sender that
// proves it holds the secret, verifies the image as it arrives and either writes it (atomically)
// to `out` or restores it while it streams in, then waits for the restored process.
struct receive_args {
    std::string listen; // ADDR:PORT (port 0: the kernel picks one, printed on stderr)
    std::string secret_file;
    std::string out; // an image file or directory
    bool restore = false;
    std::string pid_file; // --restore: the restored pid
    int timeout_s = 600;  // waiting for a sender
};
int cmd_receive(const receive_args &a);

struct status_args {
    std::string job; // empty: every job and process
    bool json = false;
};
int cmd_status(const status_args &a);

// Diagnostic: quiesces every rank of an MPI job (no image), prints the phase times and what was
// drained, and resumes the job.
struct quiesce_args {
    std::string job;
    int timeout_ms = 10000;
};
int cmd_quiesce(const quiesce_args &a);

// Moves ranks of an MPI job to another host: a checkpoint of every rank (--via fs:DIR: into DIR,
// which the hosts share; default: the job's --ckpt-dir), then a new mpirun that starts them again,
// those ranks on `to`. Prints the phases and the downtime.
struct migrate_args {
    std::string job;
    std::string ranks;            // "R[,R2...]"
    std::string to;               // host, as mpirun names it
    std::string via;              // "fs:DIR" or empty
    bool keep = false;            // --keep: the ranks that stay keep their processes (ucx only)
    int precopy = -1;             // 1 --precopy, 0 --no-precopy, -1 unsaid (ucx: pre-copy)
    int precopy_rounds = 0;       // at most this many pre-copy rounds (0: unsaid, the most)
    int timeout_ms = 10000;       // bound of the quiesce
    int start_timeout_ms = 60000; // bound of the relaunch (every rank connected again)
};
int cmd_migrate(const migrate_args &a);

// "ghost: <message>" on stderr; returns 1.
int fail(const std::string &message);

} // namespace ghost::launcher
