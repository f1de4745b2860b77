// SPDX-License-Identifier: Apache-2.0
// The job coordinator's two line protocols (one request or event per '\n'-terminated line).
//
// Ranks <-> coordinator, over TCP (ranks may run on other hosts). The rank's first line:
//   HELLO <job> <secret> <rank> <size> <pid> <host>      ->  WELCOME   or   REFUSED <reason>
// A wrong job or secret is refused, logged by ghostrun, and the connection closed. Afterwards:
//   coordinator: QUIESCE <epoch>                       a quiesce (DESIGN.md section 3) begins
//   rank:        CLOCK <epoch> <n> <id> <seq> ... [creating <k>] [made <m> <word> ...]
//                sent <size> <sent to 0> ...
//                collective sequence numbers per communicator; k > 0: threads inside a collective
//                that makes a communicator (that round does not end the clock phase); made: per
//                communicator, the creations collective over it that a restart would replay, as
//                one word "<id>:<size>:<pos>[~],<pos>[~],..." (hex id, its size, the hex positions
//                of its clock at each creation; "~": the result is dead on this rank, freed or
//                MPI_COMM_NULL, and named by no record kept); then the point-to-point messages
//                this rank sent to each world rank
//   coordinator: TARGET <epoch> <agreed 0|1> <n> <id> <seq> ... [prune <k> <id>:<pos>,<pos>...]
//                the largest of each, to run forward to (0: another CLOCK follows). With 1 the
//                counts of that round are final (threads stay at their safe points; a rank
//                checks that they did not change), every member of each communicator holds the
//                creations over it that someone keeps alive (else the epoch is refused: a restart
//                could not replay them), and `prune` names this rank's records of creations dead
//                on every member, which it drops (replayed by nobody). Before a TARGET:
//   coordinator: PASS <epoch>   rounds have found threads inside a communicator creation for
//                300 ms (MPI_Intercomm_create waits for the other group, which no clock brings
//                there): every thread parked at a safe point goes on into its call once and stops
//                at its next safe point. With agreed 1, at once:
//   coordinator: DRAIN <epoch> <expected>                what its peers sent it, in total
//   rank:        DRAINED <epoch> <messages> <bytes>      drained into upper memory
//   coordinator: QUIESCED <epoch>                        every rank drained: the job is quiescent
//   coordinator: RESUME <epoch>                          rank: RESUMED <epoch>
//   coordinator: STOP <epoch>     (checkpoint --kill, every image durable) the rank kills itself
//                                 with SIGKILL, still quiescent: it runs no step past its image
//   coordinator: SAVE <epoch> <timeout_ms> <image path>  (a checkpoint, after QUIESCED) the rank
//                has its agent write its image there (ghost_agent_request_checkpoint, then
//                ghost_agent_checkpoint_wait(timeout_ms)), still quiescent
//   coordinator: PARENT <epoch> <image path>|-   (ghostrun --incremental, just before SAVE) the
//                image is incremental (ghost_agent_request_incremental): only the pages written
//                since that image of the rank (its previous generation's) are stored; "-": a
//                whole image, from which write tracking starts
//   rank:        SAVED <epoch> <bytes> <xxh3sum:hex> <export_s> <sync_s>   the image is durable
//                (size and trailer hash for the manifest; the checkpointer's phase times)
//   coordinator: PRECOPY <id> <timeout_ms> ucx://<addr:port> [<rounds>]   (a live migration,
//                before its epoch, the job running) the rank has its agent stream a pre-copy of
//                its memory there (`ghost checkpoint --to --precopy-index <private
//                dir>/send-<pid>.precopy-index`: its write tracking armed, its memory copied while
//                it runs, nothing parked), in rounds: each after the first copies only what was
//                written during the last (`--after-precopy` the same index too), while that is
//                over 8 MiB and, after the second, at most half the round; at most <rounds>
//                (default and most: 4; coord_client.cpp)
//                After the rounds the rank's agent starts the checkpointer of its final image
//                (`ghost checkpoint --standby --after-precopy`): connected and ready, it waits
//                for the SEND below (a later command, or 30 s without one, dismisses it).
//   rank:        PRECOPIED <id> <bytes> <copy_s> <rounds>, or NOPRECOPY <id> process <reason> (it
//                then sends a whole image), or NOPRECOPY <id> receiver <reason> (the receiver
//                failed: lost, refused; the migration is abandoned before the job stops)
//   coordinator: SEND <epoch> <timeout_ms> ucx://<addr:port> [precopied]   (a live migration,
//                after QUIESCED) the rank has its agent stream its image there (`ghost checkpoint
//                --to`, the job secret from a 0600 file in its private runtime directory; with
//                "precopied", `--after-precopy` its index: only the pages written since the
//                pre-copy began), still quiescent, and is not killed: it waits for STOP (moved)
//                or RESUME (the migration failed)
//   rank:        SENT <epoch> <bytes> <export_s> <sync_s>   the receiver's verdict: complete
//   A live migration's new rank process (`ghost restart-rank --receive`), on a connection of its
//   own, as its first line: RECEIVER <job> <secret> <rank> <addr:port>  (it listens there with
//   UCX; refused and closed like a bad HELLO). The coordinator closes it when the migration ends;
//   a receiver whose connection closes before its image has arrived ends itself.
//   A restarting rank's gate (`ghost restart-rank DIR`, a process of its own beside the rank's
//   restorer), on a connection of its own: GATE <job> <secret> <rank> <size>  (refused and closed
//   like a bad HELLO), then VERIFIED once the restorer verified the whole image, or
//   REFUSED <rank R's image PATH: reason> (the restorer's verdict), or ENDED <why> (the
//   restorer ended without one: killed, or it could not start; mpirun ends the launch). The
//   coordinator answers GO once every rank of the launch is VERIFIED (the restorers go on), NOGO
//   to every gate once one refused (the ranks end quietly, having run nothing of the program;
//   ghostrun ends with that reason in one line).
//   rank:        ERROR <epoch> <reason>                  the epoch is abandoned (everyone resumes)
//   rank:        FINALIZED                               MPI_Finalize was called
//   rank:        STATS <cpu_s> <rss_bytes> <n> <sent to 0> ... <sent to n-1> [<key> <value>]...
//                about every second outside epochs: CPU time, resident memory, point-to-point
//                messages sent to each world rank (the quiesce counters); then keyed figures (a
//                reader skips keys it does not know): run_s <s> and wait_s <s> (how long the
//                rank's main thread ran, and was runnable without a CPU: /proc/self/schedstat;
//                the balancer's measure of an overloaded host), cpus <n> (the host's online
//                CPUs), bound <list> (the CPUs the rank may run on, "0-3,6"), bytes <b0,b1,...>
//                (payload bytes sent to each world rank with those messages: count x type
//                size), records <n> (the layer's records of MPI objects, tombstones among them);
//                the coordinator keeps the latest
//   coordinator: TOMBSTONES <round>   (outside epochs and migrations, when a rank's records grew
//                by 1000 since the last round, and a second after a round that pruned some)
//   rank:        TOMBSTONES <round> [made <m> <word> ...]   its creations, as in CLOCK, at once
//                (the rank runs on)
//   coordinator: PRUNE <round> prune <k> <id>:<pos>,<pos>...   the tombstones of this rank that
//                every member of their communicator listed dead, dropped: a job that makes and
//                frees communicators step after step keeps bounded records without checkpoints
// Every wait on either side is bounded; EOF means the other side is gone (ranks run on without
// checkpoints; the coordinator marks the rank lost).
//
// `ghost` <-> coordinator, over <runtime dir>/job-<JOB>.sock (SO_PEERCRED: the owner only):
//   STATUS        ->  JOB <job> <ranks> <mpirun pid> <program>, then RANK <r> <pid> <host> <state>
//                     per rank, then END
//   QUIESCE <ms>  ->  OK <ranks> quiesce_s=<s> drain_s=<s> total_s=<s> drained=<n> bytes=<n>
//                     or ERROR <reason> (the job resumes either way)
//   CHECKPOINT <kill 0|1> <quiesce_ms> <save_ms> <dir or ->
//                 ->  OK generation=<N> dir=<gen dir> ranks=<n> bytes=<n> quiesce_s=<s>
//                     export_s=<s> sync_s=<s> total_s=<s> [killed=1]   once every image, the
//                     manifest and <dir>/latest are durable (ckpt_dir.h); the job resumes, or with
//                     kill 1 mpirun is ended (ghostrun exits 75). Or ERROR <reason>: no
//                     rank is left quiescent, the previous generation is untouched.
//                     "-": ghostrun's --ckpt-dir. Periodic checkpoints (--interval) take the same
//                     path without a requester.
//   MIGRATE <quiesce_ms> <start_ms> <host> <rank,rank,...> <dir or ->
//                 ->  OK ranks=<r,...> to=<host> generation=<N> quiesce_s=<s> export_s=<s>
//                     relaunch_s=<s> downtime_s=<s>   once every rank runs again (connected to
//                     the coordinator), those ranks on <host>, the others where they were. As a
//                     CHECKPOINT with kill 1 into <dir>, then a new mpirun that places rank R on
//                     its host; ghostrun goes on. If the ranks cannot start there (mpirun fails
//                     or they do not connect within start_ms), the job is relaunched where it was
//                     and the answer is ERROR <reason>; the job goes on either way.
//                 <dir> "ucx" (`ghost migrate --via ucx`, the default): a live migration, no
//                 image on disk. While the job runs (the prelude), a second mpirun starts
//                 `ghost restart-rank --receive` for every rank (the moved ones on <host>); once
//                 every receiver said RECEIVER, with "+precopy" each rank that streams gets PRECOPY
//                 (its receiver keeps the pre-copy in a memfd); once each answered (or at once
//                 without), every rank is quiesced and
//                 stays so, each old rank gets SEND (with "precopied" after a PRECOPIED), and
//                 once all answered SENT, the new processes (restored, each on a fresh lower half)
//                 say HELLO and hold, quiescent, in the same epoch; once every one has: STOP to the
//                 old ranks, RESUME <epoch> to the new ones, the old mpirun (and those of ranks
//                 an earlier --keep move kept) is ended and reaped, the job is the new mpirun's
//                 (how ghostrun ends an mpirun so that it prints no failure banner: coordinator.cpp
//                 end_mpirun; a new mpirun's process that gives up before the switch exits with
//                 status 0).
//                 ->  OK ranks=<r,...> to=<host> via=ucx bytes=<n> precopy_bytes=<n>
//                 precopy_rounds=<n> (the most any rank made) prepare_s=<s> (receivers up)
//                 precopy_s=<s> (the job ran so far) quiesce_s=<s> transfer_s=<s> export_s=<s> (the
//                 slowest sender's, within transfer) reconnect_s=<s> downtime_s=<s> (from the
//                 quiesce: the job stopped) total_s=<s> (from the request). Before the switch any
//                 failure (the new mpirun exits, receivers missing after start_ms, a rank lost or
//                 finalized in the prelude, a transfer fails, a new process not connected start_ms
//                 after the last SENT) kills the new mpirun and resumes the old ranks (the new ones
//                 have run no step): ERROR the ranks could not move to <host> (<why>); the job goes
//                 on where it was (answered once the new mpirun is gone). A pre-copy the process
//                 cannot give is no failure: that rank sends a whole image (NOPRECOPY process); one
//                 whose receiver failed is (NOPRECOPY receiver), before the job stops.
//                 "ucx+precopy" and "ucx+keep+precopy" (`ghost migrate`'s default; `--no-precopy`
//                 leaves "+precopy" out) ask for the pre-copies, "+rounds<N>" after "+precopy"
//                 (`--precopy-rounds N`) for at most N rounds each. <dir> "ucx+keep"
//                 (`ghost migrate --keep`): the same, but the ranks that do not move keep their
//                 processes and memory. The new mpirun starts a placeholder
//                 (`ghost restart-rank --receive` finding its rank in GHOST_KEEP=<rank>:<pid>,...)
//                 for each of them beside the rank's process on its host (it waits for the rank
//                 to listen as long as its mpirun lives, an hour at most); only the moved ranks get
//                 PRECOPY; a staying rank gets ACCEPT <epoch> <timeout_ms> instead of SEND: it
//                 checks it can be kept (else ERROR, the migration is abandoned as above), listens
//                 on <runtime dir>/keep-<pid>.sock, takes its placeholder's keep_hello, then says
//                 ACCEPTED <epoch>. Once every moved rank said SENT and every staying one
//                 ACCEPTED (the switch): LEAVE <epoch> to the moved ranks' old processes
//                 (MPI_Finalize on their lower half, exit 0), DETACH <epoch> to the staying ones
//                 (MPI_Finalize with them, the lower half dropped in place, a fresh one started
//                 with the placeholder's environment, everything rebuilt on it, the placeholder's
//                 streams on fds 0-2): REATTACHED <epoch>. Once the new processes said HELLO and
//                 the staying ranks REATTACHED, RESUME <epoch> to all. The old mpirun is not
//                 signalled: the staying processes are its children; it ends with them. After the
//                 switch a rank that cannot go on ends the job (its placeholder's status).
//   STATUS also sends RSTAT <r> <age_s> <STATS fields> after a rank's RANK line once it has sent
//                 STATS, and CKPT <generation> <unix time> <gen dir> before END once there is one.
//                 Under ghostrun --balance, before CKPT: BALANCER <interval_s> <state> <moves>
//                 <failed> <last move, text> (state: measuring, considering, moving, balanced,
//                 waiting), then BHOST <host> <ranks> <cpus> <CPU share or -> <avoided 0|1> per
//                 host the job has had ranks on (the last window's view).
//   The built-in balancer starts its moves as MIGRATE ... ucx+keep does (the same
//   begin_migration; "ucx" after one of its moves with +keep failed), without a requester; a
//   moved rank's new process gets GHOST_BIND=<rank>:<cpu> through its mpirun and binds to that
//   CPU's core (hwloc) before its image arrives.
#pragma once

#include <cstdint>
#include <string>

namespace ghost::job {

// A host name as MIGRATE carries it (one protocol word, never an mpirun option).
inline bool is_host_name(const std::string &h) {
    return !h.empty() && h[0] != '-' && h.size() < 256 &&
           h.find_first_not_of(
               "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_") ==
               std::string::npos;
}

// Environment ghostrun gives every rank (passed to mpirun by name only, never as a value on a
// command line that other users could read in /proc/PID/cmdline).
constexpr const char *kEnvCoordinator = "GHOST_JOB_COORD"; // "addr,addr,...:port"
constexpr const char *kEnvJob = "GHOST_JOB_ID";
constexpr const char *kEnvSecret = "GHOST_JOB_SECRET";
constexpr int kSecretHexLen = 64;

// A placeholder <-> its staying rank (`ghost migrate --keep`), over a Unix socket in the rank's
// private runtime directory, <runtime dir>/keep-<pid>.sock (mode 0600 in a 0700 directory; the
// rank checks the peer's uid too). The placeholder sends a keep_hello with its descriptors
// 0, 1, 2 (and Hydra's PMI_FD when it has one) as SCM_RIGHTS, then the job secret, then its
// environment ("NAME=value\0" strings). The rank answers nothing until it runs on its fresh lower
// half (kKeepAdopted), or, later, when it leaves that placeholder's mpirun for the next one's
// (kKeepDetached: the placeholder exits 0, as its rank finalized there). A placeholder whose
// connection closes before kKeepAdopted ends with status 1 (the migration was abandoned); after
// it, it waits for the rank's process and exits with its status.
constexpr const char *kEnvKeep = "GHOST_KEEP"; // "<rank>:<pid>,..."
struct keep_hello {
    char magic[8]; // kKeepMagic
    int32_t rank;
    uint32_t secret_len;
    uint64_t env_len;
    uint32_t nfds; // 3 or 4
    uint32_t pad;
};
constexpr char kKeepMagic[8] = {'g', 'h', 'o', 's', 't', 'k', 'p', '1'};
constexpr char kKeepAdopted = 'A', kKeepDetached = 'D';

} // namespace ghost::job
