// SPDX-License-Identifier: Apache-2.0
// The resource kinds by name: what each can do, and how a sink is opened from a target the user
// wrote ("ucx://HOST:PORT", "fs:PATH", "mem:", or a plain path, which is fs).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "ghost-core/resource.h"

namespace ghost::res {

struct resource_caps {
    bool durable;   // the image survives this host's crash once committed
    bool remote;    // the image ends up on another host
    bool verifies;  // the other end checks every record before commit() returns
    bool streaming; // nothing is staged: the other end can restore while the export runs
};

struct sink_request {
    std::string secret;          // remote kinds: the shared secret (ucx_resource.h)
    uint64_t expected_bytes = 0; // mem: memory taken ahead, before the process is parked
};

struct resource_kind {
    const char *scheme;
    const char *summary;
    resource_caps caps;
    result<std::unique_ptr<sink>> (*open_sink)(const std::string &location, const sink_request &r);
};

const std::vector<resource_kind> &resource_kinds();

struct resource_target {
    const resource_kind *kind;
    std::string location; // the rest of the target: a path, HOST:PORT, nothing
};
// Refuses an unknown scheme in one line.
result<resource_target> find_resource(const std::string &target);

result<std::unique_ptr<sink>> open_sink(const resource_target &t, const sink_request &r);

} // namespace ghost::res
