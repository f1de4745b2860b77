// SPDX-License-Identifier: Apache-2.0
// export: writes a parked process as an image (image_format.h) to a sink, from outside the process.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ghost-core/image_index.h"
#include "ghost-core/park_client.h"
#include "ghost-core/process_tree.h"
#include "ghost-core/resource.h"

namespace ghost::core {

struct export_stats {
    uint64_t image_bytes = 0;      // everything written
    uint64_t memory_bytes = 0;     // page data stored
    uint64_t referenced_bytes = 0; // pages an incremental image takes from its sources
    uint64_t regions = 0;
    uint64_t threads = 0;
    uint64_t files = 0;
    bool incremental = false;  // the image references its parent
    std::string tracking_note; // with `track`: why the image is not incremental ("" if it is)
    std::vector<std::string> sources; // the names of the images an incremental one reads
    double live_s = 0;                // a pre-copy: how long it copied while the process ran
    uint64_t written_since_bytes = 0; // a pre-copy: what the process wrote while it was copied
};

// Incremental images (image_format.h): with `track`, the export write-protects the process's
// private memory (userfaultfd, through its agent) so that the next export knows which pages were
// written since; with a parent too, the pages that were not are referenced in the parent (or in
// the images it references) instead of stored. The parent must be the image of the process's last
// tracked export (else the image is whole, and `tracking_note` says why).
struct export_options {
    bool track = false;
    std::string parent_path; // the parent image ("": none)
    std::string parent_name; // how the new image names it: relative to the new image's directory
    // The parent as an index (load_index) rather than an image file (parent_path): a pre-copy,
    // which went to another host. parent_name still names it in the new image.
    const image_index *parent_index = nullptr;
    // A process of a tree (process_tree.h): its children are members, not a refusal; the root's
    // image lists the tree; descriptors shared in the tree are written as file_tree_shared.
    const tree_part *tree = nullptr;
};

// The process must be parked by its agent for the whole call. Does not commit the sink.
result<export_stats> export_process(const parked_process &proc, res::sink &out,
                                    const export_options &opt = {});

// A pre-copy (image_format.h, header_pages_only) of a running process (parked_process::
// attach_running): its write tracking is armed (a new scan) and its tracked private memory copied
// while it runs; a page written after the arming is found by the next tracked export, which takes
// the others from this image. Its `index` is that export's parent (export_options::parent_index;
// save_index keeps it for another process), since the image itself goes elsewhere. Does not
// commit the sink.
// With `last_round` (the index of the pre-copy before this one, to the same receiver): a round
// of a pre-copy in rounds, which holds only the pages written since that one began (fails if
// the process's tracking did not go on from it). Its index covers every round, numbered as the
// image after the last round lists them, each round named `name` there.
result<export_stats> export_precopy(parked_process &proc, res::sink &out, image_index &index,
                                    const image_index *last_round = nullptr,
                                    const std::string &name = "");

} // namespace ghost::core
