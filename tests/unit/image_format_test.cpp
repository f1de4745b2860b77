// SPDX-License-Identifier: Apache-2.0
// The image stream: what the writer frames, the reader accepts, and every kind of damage refused.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <random>

#include "ghost-core/agent/agent_state.h"
#include "ghost-core/image_credentials.h"
#include "ghost-core/image_index.h"
#include "ghost-core/image_reader.h"
#include "ghost-core/image_writer.h"
#include "resources/mem/mem_resource.h"

using namespace ghost;

namespace {

class string_sink : public res::sink {
  public:
    result<void> write(const void *d, size_t n) override {
        data.append((const char *)d, n);
        return {};
    }
    result<void> commit() override { return {}; }
    void abort() noexcept override {}
    std::string describe() const override { return "string"; }
    std::string data;
};

class string_source : public res::source {
  public:
    explicit string_source(std::string d) : data_(std::move(d)) {}
    result<size_t> read(void *d, size_t n) override {
        n = std::min(n, data_.size() - pos_);
        std::memcpy(d, data_.data() + pos_, n);
        pos_ += n;
        return n;
    }
    int stream_fd() const override { return -1; }
    std::string describe() const override { return "string"; }

  private:
    std::string data_;
    size_t pos_ = 0;
};

// Lends its bytes (source::lend) in pieces of at most `piece` bytes, as a stream lends its receive
// buffers: a record's data may end or begin anywhere in a piece.
class lending_source : public res::source {
  public:
    lending_source(std::string d, size_t piece) : data_(std::move(d)), piece_(piece) {}
    result<size_t> read(void *d, size_t n) override {
        n = std::min({n, piece_ - pos_ % piece_, data_.size() - pos_});
        std::memcpy(d, data_.data() + pos_, n);
        pos_ += n;
        return n;
    }
    result<view> lend(size_t n) override {
        n = std::min({n, piece_ - pos_ % piece_, data_.size() - pos_});
        view v{n ? data_.data() + pos_ : nullptr, n};
        pos_ += n;
        lent += n;
        return v;
    }
    int stream_fd() const override { return -1; }
    std::string describe() const override { return "lending"; }
    size_t lent = 0;

  private:
    std::string data_;
    size_t piece_, pos_ = 0;
};

// A small but complete image: header, credentials, process, two regions (one with pages, one
// holding the agent's state), two files, two threads.
// The header of the test images: this format, this architecture, pid 4242.
image::header_record test_header() {
    image::header_record h{};
    std::memcpy(h.magic, image::file_magic, 8);
    h.format_version = image::format_version;
    h.arch = image::arch_x86_64;
    h.page_size = 4096;
    h.pid = 4242;
    return h;
}

std::string sample_image() {
    string_sink out;
    core::image_writer w(out);
    image::header_record h = test_header();
    std::string exe = "/usr/bin/example";
    h.exe_path_len = (uint32_t)exe.size();
    EXPECT_TRUE(w.record(image::rec_header, &h, sizeof h, exe));
    image::credentials_record c{
        {1000, 1000, 1000, 1000}, {100, 100, 100, 100}, 0, 0, 0, ~0ULL, 0, 0, 2};
    uint32_t groups[2] = {100, 27};
    EXPECT_TRUE(
        w.record(image::rec_credentials, &c, sizeof c, {(const char *)groups, sizeof groups}));
    image::process_record p{};
    std::string cwd = "/home/user";
    p.cwd_len = (uint32_t)cwd.size();
    p.agent_state = 0x18000;
    EXPECT_TRUE(w.record(image::rec_process, &p, sizeof p, cwd));
    image::region_record r{};
    r.start = 0x10000, r.end = 0x14000, r.kind = image::region_anon_private, r.prot = 3;
    EXPECT_TRUE(w.record(image::rec_region, &r, sizeof r));
    std::string pages(4096, 'x');
    EXPECT_TRUE(w.pages(0x11000, pages.data(), pages.size()));
    EXPECT_TRUE(w.pages(0x12000, pages.data(), pages.size()));
    image::region_record a{};
    a.start = 0x18000, a.end = 0x1c000, a.kind = image::region_anon_private, a.prot = 3;
    EXPECT_TRUE(w.record(image::rec_region, &a, sizeof a));
    EXPECT_TRUE(w.pages(0x18000, pages.data(), pages.size()));
    image::region_record f{};
    f.start = 0x20000, f.end = 0x21000, f.kind = image::region_file_private, f.prot = 1;
    std::string lib = "/usr/lib/libexample.so";
    f.path_len = (uint32_t)lib.size();
    EXPECT_TRUE(w.record(image::rec_region, &f, sizeof f, lib));
    image::file_record fr{};
    fr.fd = 3, fr.kind = image::file_regular, fr.offset = 77;
    std::string path = "/tmp/data";
    fr.path_len = (uint32_t)path.size();
    EXPECT_TRUE(w.record(image::rec_file, &fr, sizeof fr, path));
    image::file_record dup{};
    dup.fd = 5, dup.kind = image::file_dup, dup.dup_of = 3;
    EXPECT_TRUE(w.record(image::rec_file, &dup, sizeof dup));
    image::thread_record t{};
    t.tid = 4242, t.flags = image::thread_main;
    EXPECT_TRUE(w.record(image::rec_thread, &t, sizeof t));
    t.tid = 4243, t.flags = image::thread_manager;
    EXPECT_TRUE(w.record(image::rec_thread, &t, sizeof t));
    EXPECT_TRUE(w.finish());
    EXPECT_EQ(w.bytes(), out.data.size());
    return out.data;
}

result<core::image_summary> read(const std::string &bytes) {
    string_source in(bytes);
    return core::read_image(in);
}

} // namespace

TEST(ImageFormat, RoundTrip) {
    auto s = read(sample_image());
    ASSERT_TRUE(s) << s.err().message;
    EXPECT_EQ(s->header.pid, 4242);
    EXPECT_EQ(s->exe, "/usr/bin/example");
    EXPECT_EQ(s->cwd, "/home/user");
    EXPECT_EQ(s->creds.uid[1], 1000u);
    EXPECT_EQ(s->groups, (std::vector<uint32_t>{100, 27}));
    ASSERT_EQ(s->regions.size(), 3u);
    EXPECT_EQ(s->regions[0].stored_bytes, 8192u);
    EXPECT_EQ(s->regions[2].path, "/usr/lib/libexample.so");
    ASSERT_EQ(s->files.size(), 2u);
    EXPECT_EQ(s->files[0].record.offset, 77);
    EXPECT_EQ(s->files[0].path, "/tmp/data");
    ASSERT_EQ(s->threads.size(), 2u);
    EXPECT_EQ(s->memory_bytes, 3 * 4096u);
}

TEST(ImageFormat, PageDataIsVerifiedWhereTheSourceLendsIt) {
    std::string good = sample_image();
    for (size_t piece : {1, 7, 4096, 5000, 1 << 20}) {
        lending_source in(good, piece);
        auto s = core::read_image(in);
        ASSERT_TRUE(s) << "pieces of " << piece << ": " << s.err().message;
        EXPECT_EQ(s->memory_bytes, 3 * 4096u);
        EXPECT_GE(in.lent, 2 * 4096u) << "pieces of " << piece; // the page data, not copied
    }
    // A flipped byte of page data, found where it was lent.
    size_t page_data = good.find(std::string(64, 'x'));
    ASSERT_NE(page_data, std::string::npos);
    std::string bad = good;
    bad[page_data + 100] ^= 1;
    for (size_t piece : {7, 5000}) {
        lending_source in(bad, piece);
        EXPECT_FALSE(core::read_image(in)) << "pieces of " << piece;
    }
}

// The records of an intact stream, as [offset, end) byte ranges.
std::vector<std::pair<size_t, size_t>> records_of(const std::string &bytes) {
    std::vector<std::pair<size_t, size_t>> out;
    for (size_t off = 0; off < bytes.size();) {
        image::record_header h;
        std::memcpy(&h, bytes.data() + off, sizeof h);
        out.emplace_back(off, off + sizeof h + h.length);
        off += sizeof h + h.length;
    }
    return out;
}

TEST(ImageFormat, EverySwapOfTwoRecordsIsRefused) {
    // Each record keeps its hash and the trailer's sum does not depend on order: only the order
    // rules can tell (the restorer once refused, after `ghost inspect` had said "checksums OK").
    std::string good = sample_image();
    auto recs = records_of(good);
    for (size_t i = 0; i < recs.size(); i++) {
        for (size_t j = i + 1; j < recs.size(); j++) {
            auto [ai, bi] = recs[i];
            auto [aj, bj] = recs[j];
            std::string ri = good.substr(ai, bi - ai), rj = good.substr(aj, bj - aj);
            if (ri == rj) continue;
            std::string bad =
                good.substr(0, ai) + rj + good.substr(bi, aj - bi) + ri + good.substr(bj);
            EXPECT_FALSE(read(bad)) << "records " << i << " and " << j << " swapped were accepted";
        }
    }
}

TEST(ImageFormat, RecordsOutOfPlaceAreRefused) {
    std::string good = sample_image();
    auto recs = records_of(good);
    // A repeated record: refused where it stands, before the trailer could tell.
    for (size_t i = 0; i + 1 < recs.size(); i++) {
        auto [a, b] = recs[i];
        auto s = read(good.substr(0, b) + good.substr(a, b - a) + good.substr(b));
        ASSERT_FALSE(s) << "record " << i << " repeated was accepted";
        if (i >= 3) { // after header, credentials and process, which may come only once
            EXPECT_EQ(s.err().message.find("missing or added"), std::string::npos)
                << "record " << i << ": " << s.err().message;
        }
    }
}

TEST(ImageFormat, TrailingGarbageAndSplicesAreRefused) {
    std::string good = sample_image();
    EXPECT_FALSE(read(good + "x"));
    // Drop one whole record (the thread record sits just before the trailer): hashes still match
    // record by record, only the trailer's count and hash sum can tell.
    size_t trailer = good.size() - sizeof(image::record_header) - sizeof(image::trailer_record);
    size_t thread = trailer - sizeof(image::record_header) - sizeof(image::thread_record);
    std::string spliced = good.substr(0, thread) + good.substr(trailer);
    auto s = read(spliced);
    ASSERT_FALSE(s);
    EXPECT_NE(s.err().message.find("missing or added"), std::string::npos) << s.err().message;
}

TEST(ImageFormat, ForeignDataIsNotAnImage) {
    auto s = read(std::string(4096, '\x7f'));
    ASSERT_FALSE(s);
    EXPECT_EQ(s.err().message, "not a ghost image");
    auto e = read("");
    ASSERT_FALSE(e);
    EXPECT_EQ(e.err().message, "the image is empty");
}

TEST(ImageFormat, OneVerifierForInspectAndRestorer) {
    // Pages outside their region, with every hash intact: the exact case that `ghost inspect`
    // passed and the restorer refused.
    image::stream_verifier v;
    std::string good = sample_image();
    auto recs = records_of(good);
    bool refused = false;
    for (auto [a, b] : recs) {
        image::record_header h;
        std::memcpy(&h, good.data() + a, sizeof h);
        ASSERT_TRUE(v.next(h)) << v.why();
        if (h.type == image::rec_pages) {
            uint64_t addr;
            std::memcpy(&addr, good.data() + a + sizeof h, 8);
            ASSERT_TRUE(v.pages(addr)) << v.why();
            refused = !v.pages(addr); // the same pages once more: out of order
            break;
        }
        ASSERT_TRUE(v.metadata(good.data() + a + sizeof h, h.length)) << v.why();
    }
    EXPECT_TRUE(refused);
}

namespace {

image::credentials_record ids(uint32_t uid, uint32_t gid, uint64_t caps = 0) {
    image::credentials_record c{};
    for (int i = 0; i < 4; i++)
        c.uid[i] = uid, c.gid[i] = gid;
    c.cap_permitted = c.cap_effective = caps;
    c.cap_bounding = (1ULL << 41) - 1;
    return c;
}

struct restore_case {
    image::credentials_record image;
    std::vector<uint32_t> image_groups;
    image::credentials_record self;
    std::vector<uint32_t> self_groups;
    uint32_t owner;
    std::vector<uint32_t> owner_groups;
    uint32_t mode = 0600;
    bool writable = false;
};

std::string plan(const restore_case &c, image::credentials_plan *out = nullptr) {
    image::restore_identity who{};
    who.self = c.self;
    who.self.group_count = (uint32_t)c.self_groups.size();
    who.self_groups = c.self_groups.data();
    who.owner_uid = c.owner;
    who.owner_groups = c.owner_groups.data();
    who.owner_group_count = (uint32_t)c.owner_groups.size();
    who.file_mode = c.mode;
    who.writable_by_others = c.writable;
    image::credentials_record img = c.image;
    img.group_count = (uint32_t)c.image_groups.size();
    image::credentials_plan p{};
    image::message why;
    if (!image::plan_credentials(img, c.image_groups.data(), who, p, why)) return why.str();
    if (out) *out = p;
    return "";
}

constexpr uint64_t all_caps = (1ULL << 41) - 1;

} // namespace

TEST(ImageCredentials, RootRestoresAUsersImageAsThatUser) {
    image::credentials_plan p;
    ASSERT_EQ(plan({ids(1000, 1000), {1000, 100}, ids(0, 0, all_caps), {}, 1000, {1000, 100}}, &p),
              "");
    EXPECT_EQ(p.target.uid[0], 1000u);
    EXPECT_EQ(p.target.gid[3], 1000u);
    EXPECT_EQ(p.target.cap_permitted | p.target.cap_effective, 0u);
    EXPECT_TRUE(p.set_groups);
    EXPECT_TRUE(p.dumpable);
}

TEST(ImageCredentials, AnImageGetsNoMoreThanItsOwnerHas) {
    // Root image chowned to a user, or a user's image claiming root: forgeable by that user.
    EXPECT_NE(plan({ids(0, 0, all_caps), {}, ids(0, 0, all_caps), {}, 1000, {1000}})
                  .find("owned by uid 1000 but its process ran as uid 0"),
              std::string::npos);
    // A group the owner is not in.
    EXPECT_NE(
        plan({ids(1000, 1000), {1000, 27}, ids(0, 0, all_caps), {}, 1000, {1000}}).find("group 27"),
        std::string::npos);
    // Capabilities a user cannot have given.
    EXPECT_NE(plan({ids(1000, 1000, 1ULL << 12), {1000}, ids(0, 0, all_caps), {}, 1000, {1000}})
                  .find("capabilities"),
              std::string::npos);
    // Writable by others: anybody's.
    EXPECT_NE(plan({ids(0, 0, all_caps), {}, ids(0, 0, all_caps), {}, 0, {}, 0666, true})
                  .find("mode 0666"),
              std::string::npos);
    // Root's own file, or root's file recording a user: trusted.
    EXPECT_EQ(plan({ids(0, 0, all_caps), {}, ids(0, 0, all_caps), {}, 0, {}}), "");
    EXPECT_EQ(plan({ids(1000, 1000), {1000}, ids(0, 0, all_caps), {}, 0, {}}), "");
}

TEST(ImageCredentials, NobodyGainsPrivilegeByRestoring) {
    EXPECT_NE(plan({ids(0, 0, all_caps), {}, ids(1000, 1000), {1000}, 1000, {1000}})
                  .find("uid 1000 may not take"),
              std::string::npos);
    EXPECT_NE(plan({ids(1000, 1000), {1000, 27}, ids(1000, 1000), {1000}, 1000, {1000, 27}})
                  .find("supplementary groups"),
              std::string::npos);
    // A user restoring its own image: nothing to change.
    image::credentials_plan p;
    ASSERT_EQ(plan({ids(1000, 1000), {1000}, ids(1000, 1000), {1000}, 1000, {1000}}, &p), "");
    EXPECT_FALSE(p.set_groups);
    // Capabilities the restorer lacks are not given (here: a root image, a root restorer with
    // fewer capabilities).
    ASSERT_EQ(plan({ids(0, 0, all_caps), {}, ids(0, 0, 0xff), {}, 0, {}}, &p), "");
    EXPECT_EQ(p.target.cap_permitted, 0xffu);
}

TEST(ImageFormat, IncompatibleHeadersAreExplained) {
    image::header_record h{};
    std::memcpy(h.magic, image::file_magic, 8);
    h.format_version = image::format_version + 1;
    auto r = core::check_compatible(h);
    ASSERT_FALSE(r);
    EXPECT_NE(r.err().message.find("format version"), std::string::npos);
    h.format_version = image::format_version;
    h.arch = image::arch_x86_64;
    h.page_size = 4096;
    std::snprintf(h.kernel_release, sizeof h.kernel_release, "2.6.32-ancient");
    r = core::check_compatible(h);
    ASSERT_FALSE(r);
    EXPECT_NE(r.err().message.find("kernel 2.6.32-ancient"), std::string::npos);
}

namespace {

// An incremental image (one source): a tracking record after the header, and a region whose
// pages are partly referenced in the source. `ref` is the reference it holds; `tracking_late`
// puts the tracking record after the credentials; `sources` is its number of sources.
std::string incremental_image(image::page_ref_record ref, bool tracking_late = false,
                              uint32_t sources = 1) {
    string_sink out;
    core::image_writer w(out);
    image::header_record h = test_header();
    EXPECT_TRUE(w.record(image::rec_header, &h, sizeof h));
    image::tracking_record t{};
    t.scan_id = 77, t.source_count = sources;
    std::vector<image::image_source> srcs(sources);
    for (auto &s : srcs) {
        std::strcpy(s.name, "image-000000000000004d.ghost");
        s.size = 1 << 20, s.hash_sum = 5, s.scan_id = 76;
    }
    std::string tail((const char *)srcs.data(), srcs.size() * sizeof(image::image_source));
    if (!tracking_late) {
        EXPECT_TRUE(w.record(image::rec_tracking, &t, sizeof t, tail));
    }
    image::credentials_record c{
        {1000, 1000, 1000, 1000}, {100, 100, 100, 100}, 0, 0, 0, 0, 0, 0, 0};
    EXPECT_TRUE(w.record(image::rec_credentials, &c, sizeof c));
    if (tracking_late) {
        EXPECT_TRUE(w.record(image::rec_tracking, &t, sizeof t, tail));
    }
    image::process_record p{};
    p.agent_state = 0x18000;
    EXPECT_TRUE(w.record(image::rec_process, &p, sizeof p));
    image::region_record r{};
    r.start = 0x10000, r.end = 0x14000, r.kind = image::region_anon_private, r.prot = 3;
    EXPECT_TRUE(w.record(image::rec_region, &r, sizeof r));
    EXPECT_TRUE(w.record(image::rec_page_ref, &ref, sizeof ref));
    std::string pages(4096, 'x');
    EXPECT_TRUE(w.pages(0x13000, pages.data(), pages.size()));
    image::region_record a{};
    a.start = 0x18000, a.end = 0x1c000, a.kind = image::region_anon_private, a.prot = 3;
    EXPECT_TRUE(w.record(image::rec_region, &a, sizeof a));
    image::thread_record th{};
    th.tid = 4242, th.flags = image::thread_main;
    EXPECT_TRUE(w.record(image::rec_thread, &th, sizeof th));
    EXPECT_TRUE(w.finish());
    return out.data;
}

image::page_ref_record good_ref() {
    image::page_ref_record r{};
    r.addr = 0x11000, r.len = 0x2000, r.source = 0;
    r.record_offset = 4096, r.record_addr = 0x10000, r.record_len = 0x4000, r.record_hash = 9;
    return r;
}

} // namespace

TEST(ImageFormat, IncrementalImagesAreChecked) {
    auto s = read(incremental_image(good_ref()));
    ASSERT_TRUE(s) << s.err().message;
    EXPECT_EQ(s->scan_id, 77u);
    ASSERT_EQ(s->sources.size(), 1u);
    EXPECT_EQ(s->referenced_bytes, 0x2000u);
    EXPECT_EQ(s->memory_bytes, 4096u);

    auto refused = [](const std::string &bytes, const char *why) {
        auto r = read(bytes);
        EXPECT_FALSE(r) << why;
        return r ? std::string() : r.err().message;
    };
    image::page_ref_record r = good_ref();
    r.source = 1; // the image has one source
    EXPECT_NE(refused(incremental_image(r), "source index").find("page reference"),
              std::string::npos);
    r = good_ref();
    r.addr = 0x13000, r.len = 0x2000; // beyond the record it names
    refused(incremental_image(r), "outside its record");
    r = good_ref();
    r.record_addr = 0x13000, r.addr = 0x13000, r.record_len = r.len = 0x2000; // beyond the region
    refused(incremental_image(r), "outside its region");
    r = good_ref();
    r.addr = 0x13000, r.record_addr = 0x12000, r.len = 0x1000; // the stored page's place
    refused(incremental_image(r), "overlapping stored pages");
    r = good_ref();
    r.record_len = image::max_ref_record + 4096;
    refused(incremental_image(r), "a record too large to reference");
    EXPECT_NE(refused(incremental_image(good_ref(), true), "tracking late").find("out of order"),
              std::string::npos);
    refused(incremental_image(good_ref(), false, 0), "a reference without sources");
    refused(incremental_image(good_ref(), false, image::max_sources + 1), "too many sources");
}

namespace {

// A pre-copy (header_pages_only): header, tracking record, then regions and their pages only.
std::string precopy_image(bool with_tracking = true, bool with_thread = false) {
    string_sink out;
    core::image_writer w(out);
    image::header_record h = test_header();
    h.flags = image::header_pages_only;
    EXPECT_TRUE(w.record(image::rec_header, &h, sizeof h));
    if (with_tracking) {
        image::tracking_record t{};
        t.scan_id = 99;
        EXPECT_TRUE(w.record(image::rec_tracking, &t, sizeof t));
    }
    image::region_record r{};
    r.start = 0x10000, r.end = 0x14000, r.kind = image::region_anon_private, r.prot = 3;
    EXPECT_TRUE(w.record(image::rec_region, &r, sizeof r));
    std::string pages(4096, 'p');
    EXPECT_TRUE(w.pages(0x11000, pages.data(), pages.size()));
    if (with_thread) {
        image::thread_record t{};
        t.tid = 4242, t.flags = image::thread_main;
        EXPECT_TRUE(w.record(image::rec_thread, &t, sizeof t));
    }
    EXPECT_TRUE(w.finish());
    return out.data;
}

} // namespace

TEST(ImageFormat, PrecopiesHoldPagesOnlyAndAreNeverRestored) {
    auto s = read(precopy_image());
    ASSERT_TRUE(s) << s.err().message;
    EXPECT_EQ(s->scan_id, 99u);
    EXPECT_EQ(s->memory_bytes, 4096u);
    EXPECT_TRUE(s->threads.empty());
    // It exists only as the source of a later image: it needs a tracking record, holds no thread.
    EXPECT_FALSE(read(precopy_image(false)));
    EXPECT_FALSE(read(precopy_image(true, true)));
    // Nobody restores it by itself.
    image::message why;
    EXPECT_FALSE(
        image::check_compatible(s->header, {s->header.kernel_release, s->header.xcr0}, why));
    EXPECT_NE(std::string(why.str()).find("pre-copy"), std::string::npos) << why.str();
    // A flag this ghost does not know is refused, not ignored.
    image::header_record h = test_header();
    h.flags = 0x80;
    EXPECT_FALSE(image::check_header_fields(h, why));
}

TEST(ImageIndex, SavedIndexesComeBackWholeOrNotAtAll) {
    char dir[] = "/tmp/ghost-index-XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    std::string path = std::string(dir) + "/idx";
    core::image_index idx;
    idx.size = 12345, idx.hash_sum = 0xabcdef, idx.scan_id = 7;
    idx.spans.push_back({0x10000, 0x2000, 0, 24, 0x10000, 0x2000, 0x55});
    idx.spans.push_back({0x20000, 0x1000, 0, 9000, 0x20000, 0x1000, 0x66});
    ASSERT_TRUE(core::save_index(idx, path));
    EXPECT_FALSE(core::save_index(idx, path)) << "an existing file is not replaced";
    auto back = core::load_index(path);
    ASSERT_TRUE(back) << back.err().message;
    EXPECT_EQ(back->size, 12345u);
    EXPECT_EQ(back->scan_id, 7u);
    ASSERT_EQ(back->spans.size(), 2u);
    EXPECT_EQ(back->spans[1].record_offset, 9000u);
    // One byte changed, or the file cut short: refused.
    int fd = ::open(path.c_str(), O_RDWR);
    ASSERT_GE(fd, 0);
    char c = 0;
    ASSERT_EQ(::pread(fd, &c, 1, 60), 1);
    c ^= 1;
    ASSERT_EQ(::pwrite(fd, &c, 1, 60), 1);
    EXPECT_FALSE(core::load_index(path));
    c ^= 1;
    ASSERT_EQ(::pwrite(fd, &c, 1, 60), 1);
    EXPECT_TRUE(core::load_index(path));
    struct stat sb;
    ASSERT_EQ(::fstat(fd, &sb), 0);
    ASSERT_EQ(::ftruncate(fd, sb.st_size - 1), 0);
    ::close(fd);
    EXPECT_FALSE(core::load_index(path));
    ::unlink(path.c_str());
    ::rmdir(dir);
}
