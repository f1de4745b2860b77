// SPDX-License-Identifier: Apache-2.0
// A failed checkpoint's logs that its failure names outlive the generation's removal
// (launcher/ghostrun/ckpt_dir.h, keep_named_logs).
#include "launcher/ghostrun/ckpt_dir.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <string>

namespace ghost::run {
namespace {

struct temp_dir {
    std::string path;
    temp_dir() {
        char tmpl[] = "/tmp/ghost-ckpt-dir-test.XXXXXX";
        path = mkdtemp(tmpl);
    }
    ~temp_dir() { std::system(("rm -rf '" + path + "'").c_str()); }
};

bool exists(const std::string &p) {
    struct stat sb;
    return stat(p.c_str(), &sb) == 0;
}

TEST(CkptDir, ALogTheFailureNamesOutlivesTheGeneration) {
    temp_dir d;
    std::string tmp = d.path + "/.gen-2.job-7";
    ASSERT_EQ(mkdir(tmp.c_str(), 0700), 0);
    std::ofstream(tmp + "/rank1.ghost.log") << "the checkpointer's report\n";
    std::ofstream(tmp + "/rank0.ghost.log") << "not named\n";
    std::ofstream(tmp + "/rank1.ghost") << "image";
    std::string why = "rank 1: the checkpointer failed (see " + tmp + "/rank1.ghost.log)";
    std::string told = keep_named_logs(tmp, why);
    EXPECT_EQ(told, "rank 1: the checkpointer failed (see " + d.path + "/failed.rank1.ghost.log)");
    discard_generation(tmp);
    EXPECT_FALSE(exists(tmp));
    std::ifstream kept(d.path + "/failed.rank1.ghost.log");
    std::string line;
    ASSERT_TRUE(std::getline(kept, line));
    EXPECT_EQ(line, "the checkpointer's report");
    EXPECT_FALSE(exists(d.path + "/failed.rank0.ghost.log")); // not named: gone with the rest
}

TEST(CkptDir, AFailureThatNamesNoLogIsLeftAsItIs) {
    temp_dir d;
    std::string tmp = d.path + "/.gen-1.job-7";
    ASSERT_EQ(mkdir(tmp.c_str(), 0700), 0);
    std::ofstream(tmp + "/rank0.ghost.log") << "x\n";
    EXPECT_EQ(keep_named_logs(tmp, "rank 0 disconnected"), "rank 0 disconnected");
    EXPECT_EQ(keep_named_logs("", "no generation"), "no generation");
    EXPECT_FALSE(exists(d.path + "/failed.rank0.ghost.log"));
}

} // namespace
} // namespace ghost::run
