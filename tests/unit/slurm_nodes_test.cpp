// SPDX-License-Identifier: Apache-2.0
// ghostrun's view of a Slurm allocation's nodes (launcher/ghostrun/slurm_nodes.h): what it reads
// from scontrol and how it tells a node whose slurmd answers from one that is gone. scontrol is a
// script on PATH printing what Slurm 22.05's prints; the slurmd ports are real sockets here (one
// listening, one closed). The real thing runs in mpi.slurm.node_lost.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cstdlib>
#include <fstream>
#include <string>
#include "launcher/ghostrun/slurm_nodes.h"

namespace {

using ghost::run::node_of_host;
using ghost::run::probe_slurm_nodes;
using ghost::run::slurm_node;

// A TCP socket on 127.0.0.1 with a kernel-chosen port, listening or not (bound only: connections
// to its port are refused).
struct local_port {
    int fd = -1;
    int port = 0;
    explicit local_port(bool listening) {
        fd = socket(AF_INET, SOCK_STREAM, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        EXPECT_EQ(bind(fd, (sockaddr *)&a, sizeof a), 0);
        socklen_t len = sizeof a;
        getsockname(fd, (sockaddr *)&a, &len);
        port = ntohs(a.sin_port);
        if (listening) {
            EXPECT_EQ(listen(fd, 4), 0);
        }
    }
    ~local_port() { close(fd); }
};

class SlurmNodes : public ::testing::Test {
  protected:
    std::string dir, old_path;
    void SetUp() override {
        char tmpl[] = "/tmp/ghost-slurm-nodes.XXXXXX";
        ASSERT_NE(mkdtemp(tmpl), nullptr);
        dir = tmpl;
        const char *p = getenv("PATH");
        old_path = p ? p : "";
        setenv("PATH", (dir + ":" + old_path).c_str(), 1);
        setenv("SLURM_JOB_ID", "7", 1);
        setenv("SLURM_JOB_NODELIST", "n[1-3]", 1);
    }
    void TearDown() override {
        setenv("PATH", old_path.c_str(), 1);
        unsetenv("SLURM_JOB_ID");
        unsetenv("SLURM_JOB_NODELIST");
        std::string cmd = "rm -rf " + dir;
        ASSERT_EQ(system(cmd.c_str()), 0);
    }
    // scontrol: `show node -o n[1-3]` prints `nodes`, `show config` a SlurmdPort line; anything
    // else fails.
    void fake_scontrol(const std::string &nodes, int slurmd_port, int status = 0) {
        std::ofstream f(dir + "/scontrol");
        f << "#!/bin/sh\n"
          << "[ " << status << " = 0 ] || exit " << status << "\n"
          << "if [ \"$1 $2 $3 $4\" = 'show node -o n[1-3]' ]; then cat <<'EOF'\n"
          << nodes << "EOF\n"
          << "elif [ \"$1 $2\" = 'show config' ]; then\n"
          << "  printf 'Configuration data as of now\\nSlurmctldPort           = 6817\\n"
          << "SlurmdPort              = " << slurmd_port << "\\nSlurmdTimeout = 300 sec\\n'\n"
          << "else exit 1; fi\n";
        f.close();
        chmod((dir + "/scontrol").c_str(), 0755);
    }
};

std::string node_line(const std::string &name, const std::string &extra, const std::string &state) {
    // As scontrol show node -o prints it (22.05), values with spaces (OS=) included.
    return "NodeName=" + name + " Arch=x86_64 CoresPerSocket=1  CPUAlloc=1 CPUEfctv=1 " +
           "NodeAddr=127.0.0.1 NodeHostName=" + name + " Version=22.05.8 OS=Linux 6.18 #1 SMP " +
           extra + "RealMemory=1000 State=" + state + " ThreadsPerCore=1 Partitions=test\n";
}

TEST_F(SlurmNodes, TellsAnsweringNodesFromLostOnes) {
    local_port alive(true), dead(false);
    fake_scontrol(node_line("n1", "", "ALLOCATED") +
                      node_line("n2", "Port=" + std::to_string(dead.port) + " ", "ALLOCATED") +
                      node_line("n3", "", "DOWN+NOT_RESPONDING"),
                  alive.port);
    auto nodes = probe_slurm_nodes(3000);
    ASSERT_TRUE(nodes) << nodes.err().message;
    ASSERT_EQ(nodes->size(), 3u);
    const slurm_node &n1 = (*nodes)[0], &n2 = (*nodes)[1], &n3 = (*nodes)[2];
    EXPECT_EQ(n1.name, "n1");
    EXPECT_EQ(n1.addr, "127.0.0.1");
    EXPECT_EQ(n1.port, alive.port); // SlurmdPort: n1 has no Port of its own
    EXPECT_TRUE(n1.answers) << n1.why;
    EXPECT_EQ(n2.port, dead.port);
    EXPECT_FALSE(n2.answers);
    EXPECT_EQ(n2.why, "Connection refused");
    EXPECT_FALSE(n3.answers); // its port listens, but Slurm says it is down
    EXPECT_EQ(n3.why, "Slurm says DOWN+NOT_RESPONDING");
}

TEST_F(SlurmNodes, NothingOutsideSlurm) {
    unsetenv("SLURM_JOB_NODELIST");
    auto nodes = probe_slurm_nodes(1000);
    ASSERT_TRUE(nodes);
    EXPECT_TRUE(nodes->empty());
}

TEST_F(SlurmNodes, ScontrolFailingIsAnError) {
    fake_scontrol("", 1, 1);
    auto nodes = probe_slurm_nodes(1000);
    ASSERT_FALSE(nodes);
    EXPECT_NE(nodes.err().message.find("cannot list the nodes of Slurm job 7"), std::string::npos)
        << nodes.err().message;
}

TEST_F(SlurmNodes, NoNodeIsAnError) {
    fake_scontrol("No nodes in the system\n", 1);
    EXPECT_FALSE(probe_slurm_nodes(1000));
}

TEST(SlurmNodeOfHost, ByNameHostnameOrFirstLabel) {
    std::vector<slurm_node> nodes(2);
    nodes[0].name = "n1";
    nodes[0].hostname = "n1";
    nodes[1].name = "c02";
    nodes[1].hostname = "compute-02.example.org";
    EXPECT_EQ(node_of_host(nodes, "n1"), 0);
    EXPECT_EQ(node_of_host(nodes, "n1.cluster.example.org"), 0);
    EXPECT_EQ(node_of_host(nodes, "compute-02.example.org"), 1);
    EXPECT_EQ(node_of_host(nodes, "n2"), -1);
}

} // namespace
