// SPDX-License-Identifier: Apache-2.0
// Images in a local or shared directory. A new image is written under a temporary name in the same
// directory, fsync'd, renamed over the final name and the directory fsync'd: a crash at any point
// leaves either the previous image or the new one, never a mix.
#pragma once

#include <memory>
#include <string>

#include "ghost-core/resource.h"

namespace ghost::res {

result<std::unique_ptr<sink>> create_file_sink(const std::string &final_path);
result<std::unique_ptr<source>> open_file_source(const std::string &path);

} // namespace ghost::res
