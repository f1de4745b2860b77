// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <string>

#include "runtime/result.h"

namespace ghost::core {

// The NT_GNU_BUILD_ID note of an ELF file, as raw bytes; an error if it has none.
result<std::string> elf_build_id(const std::string &path);

std::string hex(const std::string &bytes);

} // namespace ghost::core
