// SPDX-License-Identifier: Apache-2.0
// export: writes a parked process as an image (image_format.h) to a sink, from outside the process.
#pragma once

#include <cstdint>

#include "ghost-core/park_client.h"
#include "ghost-core/resource.h"

namespace ghost::core {

struct export_stats {
    uint64_t image_bytes = 0;  // everything written
    uint64_t memory_bytes = 0; // page data stored
    uint64_t regions = 0;
    uint64_t threads = 0;
    uint64_t files = 0;
};

// The process must be parked by its agent for the whole call. Does not commit the sink.
result<export_stats> export_process(const parked_process &proc, res::sink &out);

} // namespace ghost::core
