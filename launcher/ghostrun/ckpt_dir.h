// SPDX-License-Identifier: Apache-2.0
// A job's checkpoint directory (DESIGN.md section 5):
//
//   DIR/gen-<N>/rank<R>.ghost      every rank's image (and rank<R>.ghost.log, its checkpointer's)
//   DIR/gen-<N>/manifest.json      the job: ranks, MPI flavour, mpirun options, hosts, pids,
//                                  program, each image's size and trailer hash, generation, time
//   DIR/latest                     "gen-<N>\n": the newest COMPLETE generation
//   DIR/ended                      "gen-<N>\n": a job ran to its end after gen-<N> (mark_ended)
//   DIR/gen-<N>.refused            a generation a rank's restorer refused during an automatic
//                                  restart (set_aside_generation), kept for a look
//
// A generation is written as DIR/.gen-<N>.job-<JOB> (a name a restart never takes), its manifest
// last (atomic_file, fsync'd), then the directory is fsync'd and renamed to gen-<N>, DIR fsync'd,
// `latest` replaced atomically and DIR fsync'd again; only then are generations older than the
// last two removed. A checkpoint that fails or is interrupted leaves the previous generation and
// `latest` untouched; its .gen-<N>.job-<JOB> is removed (or, if the coordinator was killed, by the
// next checkpoint of any job in DIR whose coordinator is gone).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/result.h"

namespace ghost::run {

struct manifest_rank {
    int rank = 0;
    std::string host;
    long pid = 0;
    uint64_t bytes = 0;
    std::string hash; // "xxh3sum:<hex>" (image_trailer.h)
};

struct manifest {
    int generation = 0;
    std::string job;     // the coordinator that wrote it
    std::string flavour; // openmpi | mpich
    std::vector<std::string> mpirun_opts;
    std::vector<std::string> argv; // the program and its arguments as first started
    long long time = 0;            // seconds since the epoch
    std::vector<manifest_rank> ranks;
    // The job's own settings, which `ghost restart` keeps unless its command gives them again
    // (absent from manifests written before session 31: none).
    double interval_s = 0;
    bool incremental = false;
    int auto_restarts = 0;
};

constexpr int kKeepGenerations = 2;

std::string gen_name(int generation); // "gen-<N>"
std::string rank_image(int rank);     // "rank<R>.ghost"
std::string manifest_json(const manifest &m);

// The number after the newest gen-<N> or .gen-<N>.* in DIR (1 for an empty or missing DIR).
int next_generation(const std::string &dir);

// Creates DIR (private_dir rules) and holds it for this job while this process lives (an
// exclusive flock on the directory; the descriptor is returned and stays open): each job rotates,
// publishes and resumes generations in its DIR as its own, so a second live job given the same
// DIR is refused. A filesystem without flock is used without the hold.
result<int> claim_checkpoint_dir(const std::string &dir);

// Creates DIR (private_dir rules) and DIR/.gen-<N>.job-<JOB>; returns the latter's path.
result<std::string> begin_generation(const std::string &dir, int generation,
                                     const std::string &job);

// Writes the manifest into the temporary directory and publishes it as described above. Returns the
// final gen-<N> path.
result<std::string> publish_generation(const std::string &dir, const std::string &tmp,
                                       const manifest &m);

// Removes a generation that did not complete (best effort).
void discard_generation(const std::string &tmp);

// The logs of the unfinished generation `tmp` that `why` (a failure) names, moved next to it as
// DIR/failed.<name> (the last failure's, replaced by the next one's): `why` with their new names.
std::string keep_named_logs(const std::string &tmp, std::string why);

// DIR (with `latest`) or a gen-<N> directory -> the generation's absolute path.
result<std::string> resolve_generation(const std::string &dir);
result<manifest> read_manifest(const std::string &gen_dir);

// Every rank image is present, has the manifest's size and trailer hash, its header and the
// older images it builds on are sound, and it fits this host (image_reader.h): what can be checked
// without reading the pages, whose hashes each rank's restorer verifies (the restart's gates). The
// reason names the rank.
result<void> verify_generation(const std::string &gen_dir, const manifest &m);

// A generation whose images a rank refused (corrupt on disk since it was written): renamed
// gen-<N>.refused, and `latest` names the newest older generation of the same program (argv, MPI,
// ranks) that passes verify_generation, whose directory is returned. Nothing changes when there
// is none.
result<std::string> set_aside_generation(const std::string &gen_dir, const manifest &like);

// DIR/ended holds "gen-<N>\n" when a job ran to its end (status 0) after generation N was DIR's
// latest: a new start of the same program then starts afresh instead of resuming from it. An
// error (the reason, and what was done instead) when it cannot be written.
result<void> mark_ended(const std::string &gen_dir);
// The newest complete generation of DIR a new start of a program should resume from: DIR's
// latest, unless DIR/ended names it. An error when there is none (the reason in a few words).
result<std::string> resumable_generation(const std::string &dir);

} // namespace ghost::run
