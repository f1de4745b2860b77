// SPDX-License-Identifier: Apache-2.0
// The fs resource against other users and killed writers: a symlink planted at the image's name or
// at a name a writer once used is never written through; a directory another user can change is
// refused; a killed writer leaves nothing behind, or only what the next writer removes.
#include <gtest/gtest.h>

#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <set>
#include <string>

#include "resources/fs/atomic_file.h"
#include "resources/fs/fs_resource.h"

using namespace ghost;

namespace {

struct temp_dir {
    temp_dir() {
        char tmpl[] = "/tmp/ghost-unit-XXXXXX";
        path = ::mkdtemp(tmpl);
    }
    ~temp_dir() { std::system(("rm -rf " + path).c_str()); }
    std::string path;
};

std::string read_file(const std::string &path) {
    std::ifstream in(path);
    return std::string((std::istreambuf_iterator<char>(in)), {});
}

void write_file(const std::string &path, const std::string &text) {
    std::ofstream(path) << text;
}

std::set<std::string> entries(const std::string &dir) {
    std::set<std::string> names;
    if (DIR *d = ::opendir(dir.c_str())) {
        while (dirent *e = ::readdir(d))
            if (std::string(e->d_name) != "." && std::string(e->d_name) != "..")
                names.insert(e->d_name);
        ::closedir(d);
    }
    return names;
}

result<void> write_image(const std::string &path, const std::string &text) {
    auto s = res::create_file_sink(path);
    if (!s) return s.err();
    GHOST_TRY((*s)->write(text.data(), text.size()));
    return (*s)->commit();
}

// Forks a writer that creates the sink of `path`, writes 16 MiB and is killed before commit.
void killed_writer(const std::string &path) {
    pid_t child = ::fork();
    if (child == 0) {
        auto s = res::create_file_sink(path);
        std::string big(16 << 20, 'k');
        if (s) (void)(*s)->write(big.data(), big.size());
        ::raise(SIGKILL);
        ::_exit(1);
    }
    int ws = 0;
    ::waitpid(child, &ws, 0);
}

pid_t gone_pid() {
    pid_t child = ::fork();
    if (child == 0) ::_exit(0);
    ::waitpid(child, nullptr, 0);
    return child;
}

std::string host() {
    char h[256] = {};
    ::gethostname(h, sizeof h - 1);
    return h;
}

} // namespace

TEST(FsSafety, PlantedSymlinksAreReplacedNotWrittenThrough) {
    temp_dir dir;
    std::string victim = dir.path + "/victim", ckpt = dir.path + "/ckpt";
    write_file(victim, "precious");
    ASSERT_EQ(::mkdir(ckpt.c_str(), 0700), 0);
    // The name earlier versions wrote to, and the final name.
    std::string old_tmp = ".image.ghost.tmp-" + std::to_string(::getpid());
    ASSERT_EQ(::symlink(victim.c_str(), (ckpt + "/" + old_tmp).c_str()), 0);
    ASSERT_EQ(::symlink(victim.c_str(), (ckpt + "/image.ghost").c_str()), 0);
    auto first = write_image(ckpt + "/image.ghost", "first");
    ASSERT_TRUE(first) << first.err().message;
    auto second = write_image(ckpt + "/image.ghost", "second"); // over an existing image
    ASSERT_TRUE(second) << second.err().message;
    EXPECT_EQ(read_file(victim), "precious");
    struct stat sb;
    ASSERT_EQ(::lstat((ckpt + "/image.ghost").c_str(), &sb), 0);
    EXPECT_TRUE(S_ISREG(sb.st_mode));
    EXPECT_EQ(read_file(ckpt + "/image.ghost"), "second");
    EXPECT_EQ(entries(ckpt), (std::set<std::string>{old_tmp, "image.ghost"}));

    // The same for a pid file.
    std::string pid_file = dir.path + "/pid";
    ASSERT_EQ(::symlink(victim.c_str(), pid_file.c_str()), 0);
    ASSERT_EQ(::symlink(victim.c_str(), (pid_file + ".tmp").c_str()), 0);
    auto r = res::replace_file(pid_file, "42\n");
    ASSERT_TRUE(r) << r.err().message;
    EXPECT_EQ(read_file(victim), "precious");
    EXPECT_EQ(read_file(pid_file), "42\n");
}

TEST(FsSafety, DirectoriesOtherUsersCanChangeAreRefused) {
    temp_dir dir;
    auto refused = [](const std::string &d, const std::string &why) {
        auto s = res::create_file_sink(d + "/image.ghost");
        EXPECT_FALSE(s) << d << " was accepted";
        if (!s) {
            EXPECT_NE(s.err().message.find(why), std::string::npos) << s.err().message;
        }
    };
    std::string open = dir.path + "/open";
    ASSERT_EQ(::mkdir(open.c_str(), 0700), 0);
    ASSERT_EQ(::chmod(open.c_str(), 0777), 0);
    refused(open, "writable by other users");
    refused(open + "/sub", "writable by other users");
    EXPECT_TRUE(entries(open).empty()) << "created a directory under a refused one";

    // A sticky directory like /tmp: not as the image directory, fine on the way to it.
    std::string sticky = dir.path + "/sticky";
    ASSERT_EQ(::mkdir(sticky.c_str(), 0700), 0);
    ASSERT_EQ(::chmod(sticky.c_str(), 01777), 0);
    refused(sticky, "writable by other users");
    auto below = write_image(sticky + "/mine/image.ghost", "x");
    EXPECT_TRUE(below) << below.err().message;

    if (::geteuid() != 0) GTEST_SKIP() << "the rest needs root (chown)";
    std::string group = dir.path + "/group";
    ASSERT_EQ(::mkdir(group.c_str(), 0770), 0);
    ASSERT_EQ(::chown(group.c_str(), 0, 65534), 0);
    ASSERT_EQ(::chmod(group.c_str(), 0770), 0);
    refused(group, "writable by other users");

    std::string theirs = dir.path + "/theirs";
    ASSERT_EQ(::mkdir(theirs.c_str(), 0700), 0);
    ASSERT_EQ(::chown(theirs.c_str(), 65534, 65534), 0);
    refused(theirs, "belongs to another user");
    refused(theirs + "/sub", "belongs to another user");

    // A symlink is followed when it is ours, refused when somebody else's.
    std::string mine = dir.path + "/mine", link = dir.path + "/link";
    ASSERT_EQ(::mkdir(mine.c_str(), 0700), 0);
    ASSERT_EQ(::symlink("mine", link.c_str()), 0);
    auto via = write_image(link + "/image.ghost", "via");
    EXPECT_TRUE(via) << via.err().message;
    EXPECT_EQ(read_file(mine + "/image.ghost"), "via");
    ASSERT_EQ(::lchown(link.c_str(), 65534, 65534), 0);
    refused(link, "symlink of another user");
}

TEST(FsSafety, KilledWritersLeaveNothingBehindThatTheNextOneKeeps) {
    temp_dir dir;
    std::string ckpt = dir.path + "/ckpt", path = ckpt + "/image.ghost";
    ASSERT_TRUE(write_image(path, "previous"));
    killed_writer(path);
    EXPECT_EQ(entries(ckpt), (std::set<std::string>{"image.ghost"}));
    EXPECT_EQ(read_file(path), "previous");

    // Debris of earlier versions and of named temporaries (filesystems without unnamed files):
    // removed by the next writer when their writer is gone and was on this host.
    std::string dead = std::to_string(gone_pid()), live = std::to_string(::getpid());
    std::set<std::string> stale = {".image.ghost.tmp-" + dead,
                                   ".image.ghost.tmp-" + dead + "-00000000deadbeef@" + host()};
    std::set<std::string> kept = {".image.ghost.tmp-" + dead + "-00000000deadbeef@elsewhere",
                                  ".image.ghost.tmp-" + live + "-00000000deadbeef@" + host(),
                                  ".other.tmp-" + dead, "image.ghost"};
    for (auto &n : stale)
        write_file(ckpt + "/" + n, "debris");
    for (auto &n : kept)
        if (n != "image.ghost") write_file(ckpt + "/" + n, "not debris");
    ASSERT_TRUE(write_image(path, "next"));
    EXPECT_EQ(entries(ckpt), kept);
    EXPECT_EQ(read_file(path), "next");
}

// Without unnamed files (here: no /proc to link one through), a random name created
// O_EXCL|O_NOFOLLOW; a writer killed meanwhile leaves it, and the next writer removes it.
TEST(FsSafety, WithoutUnnamedFilesARandomExclusiveName) {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (a mount namespace)";
    temp_dir dir;
    pid_t child = ::fork();
    if (child == 0) {
        if (::unshare(CLONE_NEWNS) != 0 ||
            ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0 ||
            ::mount("tmpfs", "/proc", "tmpfs", 0, "size=1m") != 0)
            ::_exit(77);
        int bad = 0;
        auto check = [&](bool ok, const std::string &what) {
            if (!ok) std::fprintf(stderr, "not so: %s\n", what.c_str()), bad++;
        };
        std::string ckpt = dir.path + "/ckpt", path = ckpt + "/image.ghost";
        std::string victim = dir.path + "/victim";
        write_file(victim, "precious");
        ::mkdir(ckpt.c_str(), 0700);
        ::symlink(victim.c_str(), path.c_str());
        auto s = res::create_file_sink(path);
        check((bool)s, "sink created");
        if (!s) ::_exit(1);
        auto names = entries(ckpt);
        std::string prefix = ".image.ghost.tmp-" + std::to_string(::getpid()) + "-";
        auto tmp = std::find_if(names.begin(), names.end(), [&](const std::string &n) {
            return n.rfind(prefix, 0) == 0 && n.size() == prefix.size() + 16 + 1 + host().size() &&
                   n.substr(n.size() - host().size() - 1) == "@" + host();
        });
        check(names.size() == 2 && tmp != names.end(),
              "one temporary .image.ghost.tmp-PID-RANDOM@HOST");
        check((bool)(*s)->write("first", 5) && (bool)(*s)->commit(), "first image written");
        s->reset();
        check(entries(ckpt) == std::set<std::string>{"image.ghost"}, "nothing left but the image");
        check(read_file(path) == "first" && read_file(victim) == "precious", "symlink replaced");
        killed_writer(path);
        check(entries(ckpt).size() == 2, "a killed writer left its temporary");
        check(read_file(path) == "first", "the previous image survives");
        check((bool)write_image(path, "third"), "third image written");
        check(entries(ckpt) == std::set<std::string>{"image.ghost"}, "the next writer removed it");
        ::_exit(bad ? 1 : 0);
    }
    int ws = 0;
    ASSERT_EQ(::waitpid(child, &ws, 0), child);
    ASSERT_TRUE(WIFEXITED(ws));
    if (WEXITSTATUS(ws) == 77) GTEST_SKIP() << "cannot hide /proc in a mount namespace here";
    EXPECT_EQ(WEXITSTATUS(ws), 0);
}
