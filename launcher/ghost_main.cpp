// SPDX-License-Identifier: Apache-2.0
#include <CLI/CLI.hpp>

#include <cstdio>

#include "ghost-core/image_format.h"
#include "launcher/commands.h"

using namespace ghost::launcher;

int main(int argc, char **argv) {
    CLI::App app{"ghost: checkpoint, restart and duplicate unmodified processes"};
    app.require_subcommand(1);

    launch_args la;
    auto *launch = app.add_subcommand("launch", "run a program under ghost and wait for it");
    launch->add_option("--ckpt-dir", la.ckpt_dir,
                       "where its checkpoints go (default ./ghost-ckpt)");
    launch->add_option("--pid-file", la.pid_file, "write the program's pid here");
    launch
        ->add_option("--ckpt-signal", la.ckpt_signal,
                     "signal that checkpoints it from outside (default 12, SIGUSR2; 0: none)")
        ->check(CLI::Range(0, 64));
    launch->add_flag(
        "--keep-fds", la.keep_fds,
        "keep inherited pipes and sockets above fd 2 (the process cannot be restarted)");
    launch->add_option("command", la.command, "PROGRAM ARGS...")->required();
    launch->prefix_command();

    checkpoint_args ca;
    auto *ckpt = app.add_subcommand("checkpoint", "write an image of a running process");
    auto *ckpt_dir =
        ckpt->add_option("--dir", ca.dir, "image directory (default: the launch's --ckpt-dir)");
    ckpt->add_option("--image", ca.image, "image file (instead of DIR/image.ghost)")
        ->excludes(ckpt_dir);
    ckpt->add_flag("--incremental", ca.incremental,
                   "store only the pages written since the previous image (which is kept)");
    ckpt->add_option("--parent", ca.parent,
                     "with --incremental: the previous image (default: the one replaced)");
    ckpt->add_flag("--kill", ca.kill,
                   "kill the process (a job: every rank and mpirun) once the images are durable");
    ckpt->add_option("--timeout", ca.timeout_ms,
                     "a job: milliseconds the ranks have to become quiescent")
        ->check(CLI::Range(1, 3600000));
    ckpt->add_option("--to", ca.to,
                     "send the image elsewhere: ucx://HOST:PORT (a `ghost receive` there), "
                     "fs:PATH");
    ckpt->add_option(
        "--secret-file", ca.secret_file,
        "--to ucx://: the shared secret (default: $GHOST_JOB_SECRET, or the process's)");
    ckpt->add_option("--precopy-index", ca.precopy_index,
                     "a pre-copy: copy the memory while the process runs (write tracking armed "
                     "first), and save the index the image after it needs to this new file");
    ckpt->add_option("--after-precopy", ca.after_precopy,
                     "store only the pages written since the pre-copy whose index this file "
                     "holds (the pre-copy is named precopy.ghost beside the image)");
    ckpt->add_flag("--standby", ca.standby,
                   "with --to: connect, then wait before parking the process until standard "
                   "input gives 'g' and ends (its end alone: exit 3, the process untouched)");
    ckpt->add_flag("--no-mkdir", ca.no_mkdir,
                   "the image's directory must exist (how a job's ranks write theirs)");
    ckpt->add_option("target", ca.target, "job id (as ghostrun prints it) or process id")
        ->required();

    restart_args ra;
    auto *restart =
        app.add_subcommand("restart", "restore a process from its image and wait for it");
    restart->add_option("--pid-file", ra.pid_file, "write the restored pid here");
    restart->add_flag("--new-pid", ra.new_pid, "do not try to keep the original pid");
    restart
        ->add_option("image", ra.image,
                     "image directory or file, or an MPI job's checkpoint directory (then "
                     "mpirun options may follow: --host, --hostfile, --oversubscribe...)")
        ->required();
    restart->prefix_command(); // after the directory, everything is mpirun's
    // Only --help: -h would take mpirun's -host, -hostfile and Hydra's -hosts for a help request.
    restart->set_help_flag("--help", "Print this help message and exit");

    std::string rank_dir;
    auto *restart_rank = app.add_subcommand(
        "restart-rank", "(run by mpirun) become this MPI rank's process from DIR/rank<R>.ghost");
    bool rank_receive = false;
    restart_rank->add_option("dir", rank_dir, "checkpoint directory");
    restart_rank->add_flag("--receive", rank_receive,
                           "take the image from the rank's old process over UCX (a live "
                           "migration; the coordinator tells it where to send)");

    duplicate_args da;
    auto *dup = app.add_subcommand("duplicate", "start an independent copy of a running process");
    dup->add_option("pid", da.pid, "process id")->required();
    dup->add_option("--pid-file", da.pid_file, "write the copy's pid here");
    dup->add_flag("--detach", da.detach, "do not wait for the copy");
    dup->add_flag("--via-image", da.via_image,
                  "copy through an image (export + restore) even where a fork can make it");
    dup->add_flag("--precopy", da.precopy,
                  "with --via-image: copy the memory while the process runs, then stop it only "
                  "for what it wrote since");
    dup->add_flag("--new-ids", da.new_ids,
                  "the fork's copy gets a pid and thread ids of its own (as root it keeps the "
                  "original's in a pid namespace of its own, which is faster)");
    dup->add_option("--to", da.to,
                    "run the copy elsewhere: ucx://HOST:PORT (a `ghost receive --restore` there)");
    dup->add_option("--secret-file", da.secret_file,
                    "--to: the shared secret (default: $GHOST_JOB_SECRET, or the process's)");

    receive_args rva;
    auto *recv = app.add_subcommand(
        "receive", "receive one image sent with --to ucx://, verify it, write or restore it");
    recv->add_option("--listen", rva.listen, "ADDR:PORT to listen on (port 0: any, printed)")
        ->required();
    recv->add_option("--secret-file", rva.secret_file,
                     "the shared secret (default: $GHOST_JOB_SECRET)");
    auto *recv_out = recv->add_option("--out", rva.out, "write the image here (file or directory)");
    auto *recv_restore =
        recv->add_flag("--restore", rva.restore, "restore it as it arrives and wait for it");
    recv_out->excludes(recv_restore);
    recv->add_option("--pid-file", rva.pid_file, "--restore: write the restored pid here");
    recv->add_option("--timeout", rva.timeout_s, "seconds to wait for a sender (default 600)")
        ->check(CLI::Range(1, 86400));

    migrate_args ma;
    auto *migrate = app.add_subcommand(
        "migrate", "move ranks of an MPI job to another host (checkpoint, relaunch placed anew)");
    migrate->add_option("job", ma.job, "job id (ghostrun prints it at start)")->required();
    migrate->add_option("--rank", ma.ranks, "rank(s) to move: R[,R2...]")->required();
    migrate->add_option("--to", ma.to, "destination host, as mpirun names it")->required();
    migrate->add_option("--via", ma.via,
                        "ucx (default): every rank's image streams from its process to its new "
                        "one, nothing on disk; fs:DIR: the images go through DIR, which both "
                        "hosts see (fs: the job's --ckpt-dir)");
    migrate->add_flag("--keep", ma.keep,
                      "with --via ucx: the ranks that do not move keep their processes and "
                      "memory (they take a fresh MPI library in place); only the moved ones "
                      "stream their images");
    auto *precopy = migrate->add_flag_callback(
        "--precopy", [&ma] { ma.precopy = 1; },
        "with --via ucx (the default there): each streaming rank's memory is copied while it runs "
        "and put in place on the destination, then the job stops and only what it wrote since is "
        "sent");
    migrate
        ->add_flag_callback(
            "--no-precopy", [&ma] { ma.precopy = 0; },
            "with --via ucx: no pre-copy, each streaming rank's whole image is sent while the job "
            "is stopped")
        ->excludes(precopy);
    migrate
        ->add_option("--precopy-rounds", ma.precopy_rounds,
                     "with the pre-copy: at most this many rounds (each after the first copies "
                     "what the rank wrote during the last; default 4, the most)")
        ->check(CLI::Range(1, (int)ghost::image::max_precopy_rounds));
    migrate->add_option("--timeout", ma.timeout_ms, "milliseconds the ranks have to quiesce")
        ->check(CLI::Range(1, 3600000));
    migrate
        ->add_option("--start-timeout", ma.start_timeout_ms,
                     "milliseconds the relaunched ranks have to run again before the job is "
                     "relaunched where it was (default 60000)")
        ->check(CLI::Range(1000, 3600000));

    std::string image;
    auto *inspect = app.add_subcommand("inspect", "verify an image and describe it");
    inspect->add_option("image", image, "image directory or file")->required();

    status_args sa;
    auto *status =
        app.add_subcommand("status", "list the MPI jobs and processes running under ghost");
    status->add_option("job", sa.job, "job id (ghostrun prints it at start)");
    status->add_flag("--json", sa.json, "machine-readable output");

    quiesce_args qa;
    auto *quiesce = app.add_subcommand(
        "quiesce", "diagnostic: quiesce every rank of an MPI job, report the phases, resume it");
    quiesce->group(""); // hidden
    quiesce->add_option("job", qa.job, "job id")->required();
    quiesce->add_option("--timeout", qa.timeout_ms, "milliseconds before the attempt is abandoned")
        ->check(CLI::Range(1, 3600000));

    try {
        app.parse(argc, argv);
    } catch (const CLI::CallForHelp &e) {
        return app.exit(e);
    } catch (const CLI::ParseError &e) {
        std::fprintf(stderr, "ghost: %s (see ghost --help)\n", e.what());
        return 2;
    }
    if (*launch) return cmd_launch(la);
    if (*ckpt) return cmd_checkpoint(ca);
    if (*restart) {
        ra.mpirun_opts = restart->remaining();
        return cmd_restart(ra);
    }
    if (*restart_rank) {
        if (rank_receive != rank_dir.empty())
            return fail("restart-rank takes a checkpoint directory or --receive");
        return rank_receive ? cmd_restart_rank_receive() : cmd_restart_rank(rank_dir);
    }
    if (*dup) return cmd_duplicate(da);
    if (*inspect) return cmd_inspect(image);
    if (*migrate) return cmd_migrate(ma);
    if (*recv) {
        if (rva.out.empty() && !rva.restore) {
            std::fprintf(stderr,
                         "ghost: receive needs --out IMAGE or --restore (see ghost --help)\n");
            return 2;
        }
        return cmd_receive(rva);
    }
    if (*status) return cmd_status(sa);
    if (*quiesce) return cmd_quiesce(qa);
    return 2;
}
