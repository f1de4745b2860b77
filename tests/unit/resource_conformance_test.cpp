// SPDX-License-Identifier: Apache-2.0
// One suite, run against every resource kind: what a sink accepts, a source gives back unchanged;
// nothing is visible before commit; abort leaves the previous image as it was.
#include <gtest/gtest.h>

#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <functional>
#include <filesystem>
#include <random>

#include "resources/fs/fs_resource.h"
#include "resources/mem/mem_resource.h"

using namespace ghost;

namespace {

std::string random_bytes(size_t n, unsigned seed) {
    std::mt19937_64 rng(seed);
    std::string s(n, '\0');
    for (size_t i = 0; i < n; i += 8) {
        uint64_t v = rng();
        std::memcpy(&s[i], &v, std::min<size_t>(8, n - i));
    }
    return s;
}

std::string drain(res::source &src) {
    std::string out;
    char buf[65536];
    for (;;) {
        auto n = src.read(buf, sizeof buf);
        EXPECT_TRUE(n);
        if (!n || *n == 0) return out;
        out.append(buf, *n);
    }
}

struct temp_dir {
    temp_dir() {
        char tmpl[] = "/tmp/ghost-unit-XXXXXX";
        path = ::mkdtemp(tmpl);
    }
    ~temp_dir() { std::system(("rm -rf " + path).c_str()); }
    std::string path;
};

// A resource under test: makes a sink, and after commit a source for what was committed.
struct resource_kind {
    std::string name;
    std::function<result<std::unique_ptr<res::sink>>(const std::string &dir)> make_sink;
    std::function<result<std::unique_ptr<res::source>>(res::sink &, const std::string &dir)> open;
};

void PrintTo(const resource_kind &k, std::ostream *os) {
    *os << k.name;
}

std::vector<resource_kind> kinds() {
    return {
        {"fs", [](const std::string &dir) { return res::create_file_sink(dir + "/image.ghost"); },
         [](res::sink &, const std::string &dir) {
             return res::open_file_source(dir + "/image.ghost");
         }},
        {"mem",
         [](const std::string &) -> result<std::unique_ptr<res::sink>> {
             auto s = res::mem_sink::create();
             if (!s) return s.err();
             return std::unique_ptr<res::sink>(std::move(*s));
         },
         [](res::sink &s, const std::string &) {
             return static_cast<res::mem_sink &>(s).open_source();
         }},
        // Sized ahead for less than is written: grows past what was taken before parking.
        {"mem_presized",
         [](const std::string &) -> result<std::unique_ptr<res::sink>> {
             auto s = res::mem_sink::create(5 << 20);
             if (!s) return s.err();
             return std::unique_ptr<res::sink>(std::move(*s));
         },
         [](res::sink &s, const std::string &) {
             return static_cast<res::mem_sink &>(s).open_source();
         }},
    };
}

class ResourceConformance : public ::testing::TestWithParam<resource_kind> {
  protected:
    temp_dir dir;
};

} // namespace

TEST_P(ResourceConformance, WhatIsWrittenIsReadBackUnchanged) {
    const size_t sizes[] = {1, 4095, 4096, 4097, 3 << 20, (8 << 20) + 3, 1, 17 << 20};
    std::string expected;
    auto sink = GetParam().make_sink(dir.path);
    ASSERT_TRUE(sink) << sink.err().message;
    unsigned seed = 1;
    for (size_t n : sizes) {
        std::string piece = random_bytes(n, seed++);
        ASSERT_TRUE((*sink)->write(piece.data(), piece.size()));
        expected += piece;
    }
    ASSERT_TRUE((*sink)->commit());
    auto src = GetParam().open(**sink, dir.path);
    ASSERT_TRUE(src) << src.err().message;
    std::string got = drain(**src);
    ASSERT_EQ(got.size(), expected.size());
    EXPECT_TRUE(got == expected);
}

TEST_P(ResourceConformance, EmptyImage) {
    auto sink = GetParam().make_sink(dir.path);
    ASSERT_TRUE(sink);
    ASSERT_TRUE((*sink)->commit());
    auto src = GetParam().open(**sink, dir.path);
    ASSERT_TRUE(src);
    EXPECT_EQ(drain(**src), "");
}

INSTANTIATE_TEST_SUITE_P(AllResources, ResourceConformance, ::testing::ValuesIn(kinds()),
                         [](const auto &info) { return info.param.name; });

TEST(MemResource, GrowsAcrossManyStepsAndFreesWhatWasTakenAhead) {
    auto sink = res::mem_sink::create(300 << 20); // more than is written: cut back at commit
    ASSERT_TRUE(sink) << sink.err().message;
    std::string expected;
    for (unsigned i = 0; i < 30; i++) { // 30 x 7 MiB + 1: crosses the 64 MiB growth steps
        std::string piece = random_bytes((7 << 20) + i, i + 100);
        ASSERT_TRUE((*sink)->write(piece.data(), piece.size()));
        expected += piece;
    }
    ASSERT_TRUE((*sink)->commit());
    EXPECT_FALSE((*sink)->write("x", 1)); // a committed image is closed
    auto src = (*sink)->open_source();
    ASSERT_TRUE(src) << src.err().message;
    struct stat sb;
    ASSERT_EQ(::fstat((*src)->stream_fd(), &sb), 0);
    EXPECT_EQ((size_t)sb.st_size, expected.size());
    EXPECT_TRUE(drain(**src) == expected);
}

TEST(FsResource, NothingIsVisibleBeforeCommitAndAbortKeepsThePreviousImage) {
    temp_dir dir;
    std::string final_path = dir.path + "/image.ghost";
    {
        auto first = res::create_file_sink(final_path);
        ASSERT_TRUE(first);
        ASSERT_TRUE((*first)->write("first", 5));
        struct stat sb;
        EXPECT_NE(::stat(final_path.c_str(), &sb), 0) << "visible before commit";
        ASSERT_TRUE((*first)->commit());
    }
    {
        auto second = res::create_file_sink(final_path);
        ASSERT_TRUE(second);
        std::string big = random_bytes(20 << 20, 7);
        ASSERT_TRUE((*second)->write(big.data(), big.size()));
        (*second)->abort();
    }
    std::ifstream in(final_path);
    std::string content((std::istreambuf_iterator<char>(in)), {});
    EXPECT_EQ(content, "first");
    // No temporary file is left behind.
    int entries = 0;
    for (auto &e : std::filesystem::directory_iterator(dir.path))
        (void)e, entries++;
    EXPECT_EQ(entries, 1);
}

TEST(FsResource, ImagesAreOwnerOnly) {
    temp_dir dir;
    auto s = res::create_file_sink(dir.path + "/sub/image.ghost");
    ASSERT_TRUE(s) << s.err().message;
    ASSERT_TRUE((*s)->commit());
    struct stat sb;
    ASSERT_EQ(::stat((dir.path + "/sub/image.ghost").c_str(), &sb), 0);
    EXPECT_EQ(sb.st_mode & 0777, 0600u);
}

TEST(FsResource, FullDiskFailsCleanlyAndKeepsThePreviousImage) {
    temp_dir dir;
    if (::mount("tmpfs", dir.path.c_str(), "tmpfs", 0, "size=4m,mode=0700") != 0)
        GTEST_SKIP() << "cannot mount a small tmpfs here (needs root)";
    std::string final_path = dir.path + "/image.ghost";
    {
        auto small = res::create_file_sink(final_path);
        ASSERT_TRUE(small);
        ASSERT_TRUE((*small)->write("small", 5));
        ASSERT_TRUE((*small)->commit());
    }
    std::string big = random_bytes(16 << 20, 3);
    auto sink = res::create_file_sink(final_path);
    ASSERT_TRUE(sink);
    auto w = (*sink)->write(big.data(), big.size());
    result<void> c = w ? (*sink)->commit() : w;
    ASSERT_FALSE(c);
    EXPECT_NE(c.err().message.find("No space left on device"), std::string::npos)
        << c.err().message;
    (*sink)->abort();
    std::ifstream in(final_path);
    std::string content((std::istreambuf_iterator<char>(in)), {});
    EXPECT_EQ(content, "small");
    ::umount2(dir.path.c_str(), MNT_DETACH);
}
