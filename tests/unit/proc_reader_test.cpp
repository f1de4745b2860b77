// SPDX-License-Identifier: Apache-2.0
#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "ghost-core/elf_build_id.h"
#include "ghost-core/proc_reader.h"

using namespace ghost;

TEST(ProcReader, MapsOfSelfHaveStackAndExecutable) {
    auto maps = core::read_maps(::getpid());
    ASSERT_TRUE(maps) << maps.err().message;
    bool stack = false, exe = false;
    auto self = core::read_link("/proc/self/exe");
    ASSERT_TRUE(self);
    for (const auto &v : *maps) {
        stack |= v.path == "[stack]";
        exe |= v.path == *self && v.exec;
        EXPECT_LT(v.start, v.end);
    }
    EXPECT_TRUE(stack);
    EXPECT_TRUE(exe);
}

TEST(ProcReader, MmFieldsAreConsistent) {
    auto mm = core::read_mm_fields(::getpid());
    ASSERT_TRUE(mm) << mm.err().message;
    EXPECT_LT(mm->start_code, mm->end_code);
    EXPECT_LE(mm->arg_start, mm->arg_end);
    EXPECT_LE(mm->env_start, mm->env_end);
    EXPECT_LE(mm->start_brk, (uint64_t)::sbrk(0));
}

TEST(ProcReader, FdinfoGivesOffsetAndFlags) {
    int fd = ::open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::lseek(fd, 123, SEEK_SET), 123);
    auto info = core::read_fdinfo(::getpid(), fd);
    ASSERT_TRUE(info);
    EXPECT_EQ(info->pos, 123);
    EXPECT_TRUE(info->flags & O_CLOEXEC);
    ::close(fd);
}

TEST(ProcReader, PagemapSeesTouchedPagesOnly) {
    const size_t n = 64;
    char *p = (char *)::aligned_alloc(4096, n * 4096);
    ASSERT_NE(p, nullptr);
    ::madvise(p, n * 4096, MADV_DONTNEED);
    for (size_t i = 0; i < n; i += 2)
        p[i * 4096] = 1;
    auto pm = core::pagemap::open(::getpid());
    ASSERT_TRUE(pm);
    std::vector<uint64_t> entries;
    ASSERT_TRUE(pm->read((uint64_t)p, (uint64_t)p + n * 4096, entries));
    for (size_t i = 0; i < n; i++)
        EXPECT_EQ((entries[i] >> 63) & 1, i % 2 == 0 ? 1u : 0u) << i;
    ::free(p);
}

TEST(ElfBuildId, OwnExecutableHasOneAndTextFilesDoNot) {
    auto id = core::elf_build_id("/proc/self/exe");
    ASSERT_TRUE(id) << id.err().message;
    EXPECT_GE(id->size(), 16u);
    EXPECT_FALSE(core::elf_build_id("/etc/hostname"));
}
