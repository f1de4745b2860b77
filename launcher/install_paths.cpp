// SPDX-License-Identifier: Apache-2.0
#include "launcher/install_paths.h"

#include <unistd.h>

#include <cstdlib>

namespace ghost::launcher {

namespace {

result<std::string> find(const char *env, const char *build_rel, const char *install_rel,
                         const char *what) {
    if (const char *e = std::getenv(env); e && *e) {
        if (::access(e, R_OK) == 0) return std::string(e);
        return error{std::string(what) + " " + e + " (from $" + env + ") is missing"};
    }
    std::string self = self_path();
    std::string dir = self.substr(0, self.rfind('/'));
    for (const char *rel : {build_rel, install_rel}) {
        std::string p = dir + "/" + rel;
        if (::access(p.c_str(), R_OK) == 0) {
            char real[4096];
            if (::realpath(p.c_str(), real)) return std::string(real);
            return p;
        }
    }
    return error{std::string("cannot find ") + what + " next to " + self +
                 " (is the build complete?)"};
}

} // namespace

std::string self_path() {
    char buf[4096];
    ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
    return n > 0 ? std::string(buf, (size_t)n) : std::string("ghost");
}

result<std::string> agent_library() {
    return find("GHOST_AGENT_LIB", "../ghost-core/agent/libghost.so", "../lib/ghost/libghost.so",
                "the ghost agent libghost.so");
}

result<std::string> restorer() {
    return find("GHOST_RESTORER", "../ghost-core/restore/ghost-restart",
                "../lib/ghost/ghost-restart", "the restorer ghost-restart");
}

result<std::string> ghostrun() {
    return find("GHOSTRUN", "ghostrun/ghostrun", "ghostrun", "ghostrun");
}

} // namespace ghost::launcher
