// SPDX-License-Identifier: Apache-2.0
#include "ckpt_dir.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "ghost-core/image_reader.h"
#include "ghost-core/import.h"
#include "ghost-core/image_trailer.h"
#include "resources/fs/atomic_file.h"
#include "resources/fs/fs_resource.h"
#include "resources/fs/private_dir.h"

namespace ghost::run {
namespace {

std::string absolute(const std::string &path) {
    if (!path.empty() && path[0] == '/') return path;
    char cwd[4096];
    if (!getcwd(cwd, sizeof cwd)) return path;
    return std::string(cwd) + "/" + path;
}

// N of "gen-<N>" (exact), else -1.
int gen_number(const std::string &name) {
    if (name.rfind("gen-", 0) != 0 || name.size() < 5 || name.size() > 13) return -1;
    if (name.find_first_not_of("0123456789", 4) != std::string::npos) return -1;
    return atoi(name.c_str() + 4);
}

// N and JOB of ".gen-<N>.job-<JOB>", else -1.
int tmp_number(const std::string &name, std::string *job) {
    if (name.rfind(".gen-", 0) != 0) return -1;
    size_t dot = name.find(".job-", 5);
    if (dot == std::string::npos) return -1;
    int n = gen_number(name.substr(1, dot - 1));
    if (job) *job = name.substr(dot + 5);
    return n;
}

// N of "gen-<N>.refused" (set_aside_generation), else -1.
int refused_number(const std::string &name) {
    const std::string suffix = ".refused";
    if (name.size() <= suffix.size() ||
        name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0)
        return -1;
    return gen_number(name.substr(0, name.size() - suffix.size()));
}

std::vector<std::string> entries(const std::string &dir) {
    std::vector<std::string> v;
    DIR *d = opendir(dir.c_str());
    if (!d) return v;
    while (dirent *e = readdir(d))
        v.push_back(e->d_name);
    closedir(d);
    return v;
}

result<void> fsync_dir(const std::string &dir) {
    int fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return sys_error("cannot open " + dir);
    int rc = fsync(fd);
    int err = errno;
    close(fd);
    if (rc != 0) return sys_error("cannot sync " + dir, err);
    return {};
}

// A generation given up while a rank's checkpointer still writes into it (another rank failed):
// the writer may link its image in between the unlinks and the rmdir, which then fails, and the
// image would stay as debris. Once the rmdir succeeds no writer can add anything (its link into
// the removed directory fails), so it is tried again while the directory is not empty.
void remove_tree(const std::string &dir) {
    for (int attempt = 0; attempt < 100; attempt++) {
        for (const auto &n : entries(dir))
            if (n != "." && n != "..") unlink((dir + "/" + n).c_str());
        if (rmdir(dir.c_str()) == 0 || errno != ENOTEMPTY) return;
    }
}

result<void> write_durable(const std::string &dir, const std::string &name,
                           const std::string &contents) {
    int dirfd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dirfd < 0) return sys_error("cannot open " + dir);
    result<void> r = [&]() -> result<void> {
        res::remove_stale_temporaries(dirfd, name);
        auto f = res::atomic_file::create(dirfd, name, dir + "/" + name, 0600, false);
        if (!f) return f.err();
        for (size_t done = 0; done < contents.size();) {
            ssize_t n = write(f->fd(), contents.data() + done, contents.size() - done);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) return sys_error("cannot write " + dir + "/" + name);
            done += (size_t)n;
        }
        if (fsync(f->fd()) != 0) return sys_error("cannot sync " + dir + "/" + name);
        GHOST_TRY(f->publish());
        GHOST_TRY(f->close());
        if (fsync(dirfd) != 0) return sys_error("cannot sync " + dir);
        return {};
    }();
    close(dirfd);
    return r;
}

} // namespace

std::string gen_name(int generation) {
    return "gen-" + std::to_string(generation);
}

std::string rank_image(int rank) {
    return "rank" + std::to_string(rank) + ".ghost";
}

std::string manifest_json(const manifest &m) {
    nlohmann::ordered_json j;
    j["format"] = "ghost-job-checkpoint 1";
    j["generation"] = m.generation;
    j["job"] = m.job;
    j["time"] = m.time;
    j["mpi"] = m.flavour;
    j["size"] = m.ranks.size();
    j["mpirun_options"] = m.mpirun_opts;
    j["argv"] = m.argv;
    nlohmann::ordered_json ranks = nlohmann::ordered_json::array();
    for (const auto &r : m.ranks)
        ranks.push_back({{"rank", r.rank},
                         {"host", r.host},
                         {"pid", r.pid},
                         {"image", rank_image(r.rank)},
                         {"bytes", r.bytes},
                         {"hash", r.hash}});
    j["ranks"] = ranks;
    j["settings"] = {{"interval_s", m.interval_s},
                     {"incremental", m.incremental},
                     {"auto_restarts", m.auto_restarts}};
    return j.dump(2) + "\n";
}

int next_generation(const std::string &dir) {
    int mx = 0;
    for (const auto &n : entries(dir))
        mx = std::max({mx, gen_number(n), tmp_number(n, nullptr), refused_number(n)});
    return mx + 1;
}

result<int> claim_checkpoint_dir(const std::string &dir) {
    auto fd = res::open_private_dir(dir);
    if (!fd) return fd.err();
    if (::flock(*fd, LOCK_EX | LOCK_NB) != 0 && errno == EWOULDBLOCK) {
        ::close(*fd);
        return error{dir + " is the checkpoint directory of another job that is still running: " +
                     "give this one its own (--ckpt-dir)"};
    }
    return *fd;
}

result<std::string> begin_generation(const std::string &dir, int generation,
                                     const std::string &job) {
    auto fd = res::open_private_dir(dir);
    if (!fd) return fd.err();
    close(*fd);
    // What coordinators that were killed mid-checkpoint left.
    for (const auto &n : entries(dir)) {
        std::string owner;
        if (tmp_number(n, &owner) < 0 || owner.empty()) continue;
        long pid = atol(owner.c_str());
        if (owner == job || (pid > 0 && kill((pid_t)pid, 0) != 0 && errno == ESRCH))
            remove_tree(dir + "/" + n);
    }
    std::string tmp = dir + "/." + gen_name(generation) + ".job-" + job;
    if (mkdir(tmp.c_str(), 0700) != 0) return sys_error("cannot create " + tmp);
    return tmp;
}

void discard_generation(const std::string &tmp) {
    if (!tmp.empty()) remove_tree(tmp);
}

std::string keep_named_logs(const std::string &tmp, std::string why) {
    size_t slash = tmp.rfind('/');
    if (tmp.empty() || slash == std::string::npos) return why;
    for (const auto &n : entries(tmp)) {
        if (n.size() < 4 || n.compare(n.size() - 4, 4, ".log") != 0) continue;
        std::string from = tmp + "/" + n, to = tmp.substr(0, slash) + "/failed." + n;
        size_t at = why.find(from);
        if (at == std::string::npos) continue;
        // A rename: it needs no room on a full disk, and replaces an older failure's log.
        if (rename(from.c_str(), to.c_str()) == 0) why.replace(at, from.size(), to);
    }
    return why;
}

// The generations whose images those of `gen_dir` take pages from (incremental images name their
// sources "../gen-N/rankR.ghost"). False when an image cannot be read: nothing may go then.
bool source_generations(const std::string &gen_dir, std::set<int> &out) {
    for (const auto &n : entries(gen_dir)) {
        if (n.size() < 6 || n.compare(n.size() - 6, 6, ".ghost") != 0) continue;
        auto src = res::open_file_source(gen_dir + "/" + n);
        if (!src) return false;
        auto head = core::read_image(**src, true);
        if (!head) return false;
        for (const auto &s : head->sources) {
            std::string name(s.name, strnlen(s.name, sizeof s.name));
            size_t slash = name.find('/', 3);
            if (name.rfind("../", 0) != 0 || slash == std::string::npos) return false;
            int g = gen_number(name.substr(3, slash - 3));
            if (g < 0) return false;
            out.insert(g);
        }
    }
    return true;
}

result<std::string> publish_generation(const std::string &dir, const std::string &tmp,
                                       const manifest &m) {
    GHOST_TRY(write_durable(tmp, "manifest.json", manifest_json(m)));
    std::string gen = dir + "/" + gen_name(m.generation);
    if (rename(tmp.c_str(), gen.c_str()) != 0) return sys_error("cannot rename " + tmp);
    GHOST_TRY(fsync_dir(dir));
    GHOST_TRY(write_durable(dir, "latest", gen_name(m.generation) + "\n"));
    // Only complete generations below the newest two go; never the one `latest` names, nor one
    // whose images a kept generation's incremental images take pages from.
    std::vector<int> gens;
    for (const auto &n : entries(dir))
        if (int g = gen_number(n); g >= 0 && g <= m.generation) gens.push_back(g);
    std::sort(gens.rbegin(), gens.rend());
    std::set<int> keep;
    for (size_t i = 0; i < gens.size() && i < kKeepGenerations; i++) {
        keep.insert(gens[i]);
        if (!source_generations(dir + "/" + gen_name(gens[i]), keep)) return gen;
    }
    for (int g : gens)
        if (!keep.count(g)) remove_tree(dir + "/" + gen_name(g));
    return gen;
}

result<std::string> resolve_generation(const std::string &arg) {
    std::string dir = absolute(arg);
    while (dir.size() > 1 && dir.back() == '/')
        dir.pop_back();
    struct stat sb;
    if (stat(dir.c_str(), &sb) != 0) return sys_error("cannot open " + arg);
    if (!S_ISDIR(sb.st_mode)) return error{arg + " is not a checkpoint directory"};
    if (access((dir + "/manifest.json").c_str(), F_OK) == 0) return dir;
    std::ifstream in(dir + "/latest");
    std::string name;
    if (!in || !std::getline(in, name))
        return error{"no complete checkpoint in " + arg + " (no " + arg + "/latest)"};
    if (gen_number(name) < 0) return error{dir + "/latest does not name a generation"};
    // A job that ran to its end after its last checkpoint: restarting it would run its end again
    // (its output twice, its files written again). Named explicitly, the generation still is.
    std::ifstream e(dir + "/ended");
    std::string ended;
    if (e && std::getline(e, ended) && ended == name)
        return error{"the job ran to its end after " + name + " (" + dir + "/ended); `ghost " +
                     "restart " + dir + "/" + name + "` restarts from that generation anyway"};
    return dir + "/" + name;
}

result<manifest> read_manifest(const std::string &gen) {
    std::ifstream in(gen + "/manifest.json");
    if (!in) return error{"no manifest in " + gen + " (an incomplete checkpoint)"};
    manifest m;
    try {
        auto j = nlohmann::json::parse(in);
        if (j.at("format").get<std::string>() != "ghost-job-checkpoint 1")
            return error{gen + "/manifest.json: unknown format"};
        m.generation = j.at("generation").get<int>();
        m.job = j.at("job").get<std::string>();
        m.time = j.at("time").get<long long>();
        m.flavour = j.at("mpi").get<std::string>();
        m.mpirun_opts = j.at("mpirun_options").get<std::vector<std::string>>();
        m.argv = j.at("argv").get<std::vector<std::string>>();
        size_t size = j.at("size").get<size_t>();
        for (const auto &r : j.at("ranks")) {
            manifest_rank e;
            e.rank = r.at("rank").get<int>();
            e.host = r.at("host").get<std::string>();
            e.pid = r.at("pid").get<long>();
            e.bytes = r.at("bytes").get<uint64_t>();
            e.hash = r.at("hash").get<std::string>();
            if (e.rank != (int)m.ranks.size())
                return error{gen + "/manifest.json: the ranks are not 0.." +
                             std::to_string(size - 1)};
            m.ranks.push_back(e);
        }
        if (auto st = j.find("settings"); st != j.end()) {
            m.interval_s = st->value("interval_s", 0.0);
            m.incremental = st->value("incremental", false);
            m.auto_restarts = st->value("auto_restarts", 0);
            if (m.interval_s < 0 || m.interval_s > 31536000 || m.auto_restarts < 0)
                return error{gen + "/manifest.json: impossible settings"};
        }
        if (m.ranks.size() != size || size == 0)
            return error{gen + "/manifest.json: " + std::to_string(m.ranks.size()) +
                         " ranks listed, size " + std::to_string(size)};
    } catch (const std::exception &e) {
        return error{gen + "/manifest.json is corrupt: " + e.what()};
    }
    return m;
}

result<void> verify_generation(const std::string &gen, const manifest &m) {
    for (const auto &r : m.ranks) {
        std::string path = gen + "/" + rank_image(r.rank);
        std::string who = "rank " + std::to_string(r.rank) + "'s image " + path;
        int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0) return sys_error(who);
        uint64_t size = 0, sum = 0;
        const char *why = "";
        bool ok = core::read_image_trailer(fd, &size, &sum, &why);
        close(fd);
        if (size != r.bytes)
            return error{who + " is truncated or changed: " + std::to_string(size) +
                         " bytes, the manifest says " + std::to_string(r.bytes)};
        if (!ok) return error{who + ": " + why};
        if (core::image_hash_name(sum) != r.hash)
            return error{who + " is not the one the manifest names (hash " +
                         core::image_hash_name(sum) + ", expected " + r.hash + ")"};
        auto src = res::open_file_source(path);
        if (!src) return error{who + ": " + src.err().message};
        auto s = core::read_image(**src, true);
        if (!s) return error{who + ": " + s.err().message};
        // An incremental image's older images must all be there, unchanged.
        auto sources = core::open_sources(path, *s);
        if (!sources) return error{who + ": " + sources.err().message};
        for (int fd : *sources)
            close(fd);
        if (auto c = core::check_compatible(s->header); !c)
            return error{who + " cannot be restored here: " + c.err().message};
    }
    return {};
}

result<std::string> set_aside_generation(const std::string &gen_dir, const manifest &like) {
    size_t slash = gen_dir.rfind('/');
    int refused = slash == std::string::npos ? -1 : gen_number(gen_dir.substr(slash + 1));
    if (refused < 0) return error{gen_dir + " is not a generation directory"};
    std::string dir = gen_dir.substr(0, slash);
    std::vector<int> gens;
    for (const auto &n : entries(dir))
        if (int g = gen_number(n); g >= 0 && g < refused) gens.push_back(g);
    std::sort(gens.rbegin(), gens.rend());
    for (int g : gens) {
        std::string older = dir + "/" + gen_name(g);
        auto m = read_manifest(older);
        if (!m || m->argv != like.argv || m->flavour != like.flavour ||
            m->ranks.size() != like.ranks.size() || !verify_generation(older, *m))
            continue;
        // Out of the rotation (a kept generation would make it `latest` again, and it would
        // push a good one out), numbered still (the next generation is not gen-<N> again).
        std::string aside = gen_dir + ".refused";
        if (rename(gen_dir.c_str(), aside.c_str()) != 0)
            return sys_error("cannot rename " + gen_dir + " to " + aside);
        GHOST_TRY(fsync_dir(dir));
        GHOST_TRY(write_durable(dir, "latest", gen_name(g) + "\n"));
        return older;
    }
    return error{"no older complete checkpoint of this program in " + dir};
}

result<void> mark_ended(const std::string &gen_dir) {
    size_t slash = gen_dir.rfind('/');
    if (slash == std::string::npos || slash == 0) return {};
    std::string dir = gen_dir.substr(0, slash), name = gen_dir.substr(slash + 1);
    std::ifstream in(dir + "/latest");
    std::string latest;
    if (!in || !std::getline(in, latest) || latest != name) return {}; // a newer job's checkpoint
    auto written = write_durable(dir, "ended", name + "\n");
    if (written) return {};
    // (A full disk.) `latest` becomes `ended`: a rename needs no room, and without `latest` the
    // same command starts afresh; `ghost restart DIR/gen-N` still restarts from it.
    std::string latest_path = dir + "/latest", ended_path = dir + "/ended";
    if (::rename(latest_path.c_str(), ended_path.c_str()) == 0) {
        if (int d = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); d >= 0) {
            ::fsync(d);
            ::close(d);
        }
        return error{written.err().message + "; " + latest_path +
                     " was renamed to it, so that the same command starts afresh"};
    }
    return error{written.err().message + "; the same command would resume this finished job " +
                 "from " + name + ": remove " + latest_path};
}

result<std::string> resumable_generation(const std::string &dir) {
    // DIR's latest only (resolve_generation reads it), never DIR itself as a generation.
    if (::access((dir + "/latest").c_str(), F_OK) != 0) return error{"no checkpoint"};
    return resolve_generation(dir); // refuses a job that ran to its end
}

} // namespace ghost::run
