// SPDX-License-Identifier: Apache-2.0
// Images in memory: an anonymous memory file (memfd). The sink's commit hands the memory over to a
// source; nothing touches a disk. Used for duplication and to measure export/import without I/O.
#pragma once

#include <cstdint>
#include <memory>

#include "ghost-core/resource.h"

namespace ghost::res {

class mem_sink : public sink {
  public:
    // `expected_bytes` of memory are allocated now, before the process is parked: a fresh page
    // costs more than copying into it (zeroing), and none of that needs to happen while the
    // process is stopped. The image may grow beyond it; what is left is freed.
    static result<std::unique_ptr<mem_sink>> create(uint64_t expected_bytes = 0);
    // After commit: a source reading the image from its start (the memory stays while it lives).
    virtual result<std::unique_ptr<source>> open_source() = 0;
};

} // namespace ghost::res
