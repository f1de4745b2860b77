// SPDX-License-Identifier: Apache-2.0
#include "resources/registry.h"
#include "resources/fs/fs_resource.h"
#include "resources/mem/mem_resource.h"
#include "resources/ucx/ucx_resource.h"

#include <sys/stat.h>

namespace ghost::res {

namespace {

result<std::unique_ptr<sink>> open_fs(const std::string &location, const sink_request &) {
    if (location.empty()) return error{"fs: needs a path (fs:DIR or fs:FILE)"};
    struct stat sb;
    if (::stat(location.c_str(), &sb) == 0 && S_ISDIR(sb.st_mode))
        return create_file_sink(location + "/image.ghost");
    return create_file_sink(location);
}

result<std::unique_ptr<sink>> open_mem(const std::string &, const sink_request &r) {
    auto s = mem_sink::create(r.expected_bytes);
    if (!s) return s.err();
    return std::unique_ptr<sink>(std::move(*s));
}

result<std::unique_ptr<sink>> open_ucx(const std::string &location, const sink_request &r) {
    auto to = parse_ucx_address(location);
    if (!to) return to.err();
    if (r.secret.empty()) return error{"ucx: no secret to authenticate with"};
    return connect_ucx_sink(*to, r.secret);
}

} // namespace

const std::vector<resource_kind> &resource_kinds() {
    static const std::vector<resource_kind> kinds = {
        {"fs", "a file in a local or shared directory", {true, false, false, false}, open_fs},
        {"mem", "a memory file in this process", {false, false, false, false}, open_mem},
        {"ucx", "a `ghost receive` on another host, over UCX", {false, true, true, true}, open_ucx},
    };
    return kinds;
}

result<resource_target> find_resource(const std::string &target) {
    size_t colon = target.find(':');
    // A plain path is a file; so is one with a colon further on ("dir/a:b").
    if (colon == std::string::npos || target.find('/') < colon)
        return resource_target{&resource_kinds()[0], target};
    std::string scheme = target.substr(0, colon);
    std::string rest = target.substr(colon + 1);
    if (rest.rfind("//", 0) == 0) rest = rest.substr(2);
    for (const auto &k : resource_kinds())
        if (scheme == k.scheme) return resource_target{&k, rest};
    std::string names;
    for (const auto &k : resource_kinds())
        names += (names.empty() ? "" : ", ") + std::string(k.scheme) + ":";
    return error{"unknown image target '" + target + "' (known: " + names + " or a path)"};
}

result<std::unique_ptr<sink>> open_sink(const resource_target &t, const sink_request &r) {
    return t.kind->open_sink(t.location, r);
}

} // namespace ghost::res
