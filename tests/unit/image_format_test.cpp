// SPDX-License-Identifier: Apache-2.0
// The image stream: what the writer frames, the reader accepts, and every kind of damage refused.
#include <gtest/gtest.h>

#include <cstring>
#include <random>

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

// A small but complete image: header, process, two regions (one with pages), a file, a thread.
std::string sample_image() {
    string_sink out;
    core::image_writer w(out);
    image::header_record h{};
    std::memcpy(h.magic, image::file_magic, 8);
    h.format_version = image::format_version;
    h.arch = image::arch_x86_64;
    h.page_size = 4096;
    h.pid = 4242;
    std::string exe = "/usr/bin/example";
    h.exe_path_len = (uint32_t)exe.size();
    EXPECT_TRUE(w.record(image::rec_header, &h, sizeof h, exe));
    image::process_record p{};
    std::string cwd = "/home/user";
    p.cwd_len = (uint32_t)cwd.size();
    EXPECT_TRUE(w.record(image::rec_process, &p, sizeof p, cwd));
    image::region_record r{};
    r.start = 0x10000, r.end = 0x14000, r.kind = image::region_anon_private, r.prot = 3;
    EXPECT_TRUE(w.record(image::rec_region, &r, sizeof r));
    std::string pages(8192, 'x');
    EXPECT_TRUE(w.pages(0x11000, pages.data(), pages.size()));
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
    image::thread_record t{};
    t.tid = 4242, t.flags = image::thread_main;
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
    ASSERT_EQ(s->regions.size(), 2u);
    EXPECT_EQ(s->regions[0].stored_bytes, 8192u);
    EXPECT_EQ(s->regions[1].path, "/usr/lib/libexample.so");
    ASSERT_EQ(s->files.size(), 1u);
    EXPECT_EQ(s->files[0].record.offset, 77);
    EXPECT_EQ(s->files[0].path, "/tmp/data");
    ASSERT_EQ(s->threads.size(), 1u);
    EXPECT_EQ(s->memory_bytes, 8192u);
}

TEST(ImageFormat, EveryFlippedByteIsRefused) {
    std::string good = sample_image();
    // Every byte of the stream is covered by a record hash, a record header check or the trailer.
    for (size_t i = 0; i < good.size(); i += (i < 4096 ? 1 : 97)) {
        std::string bad = good;
        bad[i] ^= 0x5a;
        auto s = read(bad);
        EXPECT_FALSE(s) << "flip at byte " << i << " was not detected";
    }
}

TEST(ImageFormat, EveryTruncationIsRefused) {
    std::string good = sample_image();
    for (size_t len = 0; len < good.size(); len += (len < 512 ? 1 : 61)) {
        auto s = read(good.substr(0, len));
        ASSERT_FALSE(s) << "truncation to " << len << " bytes was not detected";
        EXPECT_NE(s.err().message.find_first_of("ctn"), std::string::npos);
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
