// SPDX-License-Identifier: Apache-2.0
// Images in memory: an anonymous memory file (memfd). The sink's commit hands the memory over to a
// source; nothing touches a disk. Used for duplication and to measure export/import without I/O.
#pragma once

#include <memory>

#include "ghost-core/resource.h"

namespace ghost::res {

class mem_sink : public sink {
  public:
    static result<std::unique_ptr<mem_sink>> create();
    // After commit: a source reading the image from its start (the memory stays while it lives).
    virtual result<std::unique_ptr<source>> open_source() = 0;
};

} // namespace ghost::res
