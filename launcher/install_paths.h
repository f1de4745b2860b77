// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <string>

#include "runtime/result.h"

namespace ghost::launcher {

// Absolute path of the running `ghost` executable.
std::string self_path();
// libghost.so and ghost-restart: $GHOST_AGENT_LIB / $GHOST_RESTORER, else next to `ghost` in the
// build tree (../ghost-core/...), else the installed layout (../lib/ghost/).
result<std::string> agent_library();
result<std::string> restorer();
// ghostrun (an MPI job's launcher and coordinator): $GHOSTRUN, else next to `ghost`.
result<std::string> ghostrun();

} // namespace ghost::launcher
