// SPDX-License-Identifier: Apache-2.0
// Images in a local or shared directory that only its user (and root) can change (private_dir.h).
// A new image is written to a file nobody else can name (atomic_file.h), fsync'd, given the final
// name in one step and the directory fsync'd: a crash or a kill at any point leaves either the
// previous image or the new one, never a mix, and no temporary file once its writer is gone.
#pragma once

#include <memory>
#include <string>

#include "ghost-core/resource.h"

namespace ghost::res {

result<std::unique_ptr<sink>> create_file_sink(const std::string &final_path,
                                               bool make_dirs = true);
result<std::unique_ptr<source>> open_file_source(const std::string &path);

} // namespace ghost::res
