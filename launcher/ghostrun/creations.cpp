// SPDX-License-Identifier: Apache-2.0
#include "creations.h"

#include <cstdio>
#include <cstdlib>
#include <set>

namespace ghost::run {

namespace {

// A restart replays each rank's creations one after the other, each collective over its
// parent's members: it ends only if one order of all of them agrees with every rank's (its
// places in `replayed`, the pruned ones left out). Kahn's algorithm over "follows on some
// rank"; "" if there is such an order, else why a restart could not rebuild them.
std::string one_replay_order(
    const std::map<int, std::map<unsigned long long, std::pair<std::string, unsigned long long>>>
        &replayed,
    const std::set<std::pair<std::string, unsigned long long>> &pruned) {
    using creation_name = std::pair<std::string, unsigned long long>;
    std::map<creation_name, std::set<creation_name>> next;
    std::map<creation_name, size_t> waits;
    for (auto &[r, places] : replayed) {
        const creation_name *prev = nullptr;
        for (auto &[place, c] : places) {
            if (pruned.count(c)) continue;
            waits.try_emplace(c, 0);
            if (prev && *prev != c && next[*prev].insert(c).second) waits[c]++;
            prev = &c;
        }
    }
    std::vector<creation_name> ready;
    for (auto &[c, n] : waits)
        if (n == 0) ready.push_back(c);
    size_t done = 0;
    while (!ready.empty()) {
        creation_name c = ready.back();
        ready.pop_back();
        done++;
        for (const creation_name &u : next[c])
            if (--waits[u] == 0) ready.push_back(u);
    }
    if (done == waits.size()) return "";
    return "ranks made communicators concurrently (from several threads) in orders that a "
           "restart cannot replay in one order on every rank; try the checkpoint again";
}

} // namespace

std::string agree_on_creations(const std::map<int, std::vector<std::string>> &made, bool settled,
                               std::map<std::string, std::vector<std::string>> &prune) {
    struct creation {
        int holders = 0, first = -1;
        bool live = false;
    };
    struct parent {
        long size = 0;
        std::map<unsigned long long, creation> at;
    };
    std::map<std::string, parent> parents;
    // Per rank, its creations by their place in the order its restart would replay them.
    using creation_name = std::pair<std::string, unsigned long long>;
    std::map<int, std::map<unsigned long long, creation_name>> replayed;
    for (auto &[r, words] : made)
        for (const std::string &t : words) {
            size_t c1 = t.find(':'), c2 = c1 == std::string::npos ? c1 : t.find(':', c1 + 1);
            if (c2 == std::string::npos)
                return "rank " + std::to_string(r) + " sent a malformed creation list";
            std::string id = t.substr(0, c1);
            parent &p = parents[id];
            p.size = atol(t.c_str() + c1 + 1);
            for (size_t i = c2 + 1; i < t.size();) {
                char *end;
                unsigned long long pos = strtoull(t.c_str() + i, &end, 16);
                bool dead = *end == '~';
                if (dead) end++;
                if (*end == '@') {
                    unsigned long long place = strtoull(end + 1, &end, 16);
                    replayed[r][place] = {id, pos};
                }
                creation &cr = p.at[pos];
                if (cr.holders++ == 0) cr.first = r;
                cr.live |= !dead;
                i = (size_t)(end - t.c_str()) + 1;
            }
        }
    prune.clear();
    std::set<creation_name> pruned;
    for (auto &[id, p] : parents)
        for (auto &[pos, cr] : p.at) {
            if (!cr.live && (settled || cr.holders == p.size)) {
                char b[32];
                snprintf(b, sizeof b, "%llx", pos);
                prune[id].push_back(b);
                pruned.insert({id, pos});
            } else if (settled && cr.holders != p.size) {
                return "rank " + std::to_string(cr.first) + " and " +
                       std::to_string(cr.holders - 1) + " other(s) of the " +
                       std::to_string(p.size) +
                       " members of a communicator (or of an MPI_Comm_create_group's group) hold "
                       "a communicator made over it that the others do not: a restart could not "
                       "rebuild it";
            }
        }
    if (settled) return one_replay_order(replayed, pruned);
    return "";
}

// The tombstones of rank r to drop: " prune <k> <id>:<pos>,<pos>,..." for what it holds.
std::string prune_words(const std::vector<std::string> &made_r,
                        const std::map<std::string, std::vector<std::string>> &prune) {
    std::string out;
    int k = 0;
    for (const std::string &t : made_r) {
        auto it = prune.find(t.substr(0, t.find(':')));
        if (it == prune.end()) continue;
        out += " " + it->first + ":";
        for (size_t i = 0; i < it->second.size(); i++)
            out += (i ? "," : "") + it->second[i];
        k++;
    }
    return k ? " prune " + std::to_string(k) + out : "";
}

} // namespace ghost::run
