// SPDX-License-Identifier: Apache-2.0
#include "slurm_nodes.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace ghost::run {
namespace {

long long now_ms() {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

// A command's standard output; the command is killed if it has not ended within timeout_ms (an
// scontrol whose slurmctld does not answer would otherwise hold the relaunch for MessageTimeout
// and its retries).
result<std::string> capture(const std::vector<std::string> &argv, int timeout_ms) {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) return sys_error("cannot run " + argv[0]);
    std::vector<char *> av;
    for (const auto &a : argv)
        av.push_back(const_cast<char *>(a.c_str()));
    av.push_back(nullptr);
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(fds[0]);
        close(fds[1]);
        return sys_error("cannot run " + argv[0], e);
    }
    if (pid == 0) {
        dup2(fds[1], 1);
        int null = open("/dev/null", O_RDONLY);
        if (null >= 0) dup2(null, 0);
        execvp(av[0], av.data());
        _exit(127);
    }
    close(fds[1]);
    std::string out;
    long long deadline = now_ms() + timeout_ms;
    bool timed_out = false;
    for (;;) {
        long long left = deadline - now_ms();
        if (left <= 0) {
            timed_out = true;
            break;
        }
        struct pollfd p = {fds[0], POLLIN, 0};
        int n = poll(&p, 1, (int)left);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) continue;
        char buf[4096];
        ssize_t r = read(fds[0], buf, sizeof buf);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        out.append(buf, (size_t)r);
    }
    close(fds[0]);
    if (timed_out) kill(pid, SIGKILL);
    int ws = 0;
    while (waitpid(pid, &ws, 0) < 0 && errno == EINTR) {
    }
    if (timed_out)
        return error{argv[0] + " did not answer within " + std::to_string(timeout_ms / 1000) +
                     " s"};
    if (!WIFEXITED(ws) || WEXITSTATUS(ws) != 0)
        return error{argv[0] + " " + argv[1] + " failed" +
                     (WIFEXITED(ws) && WEXITSTATUS(ws) == 127 ? " (not found)" : "")};
    return out;
}

// The value of KEY=VALUE in one line of `scontrol show node -o` (values without spaces).
std::string field(const std::string &line, const std::string &key) {
    size_t at = 0;
    for (;;) {
        at = line.find(key + "=", at);
        if (at == std::string::npos) return "";
        if (at == 0 || line[at - 1] == ' ') break;
        at += key.size();
    }
    size_t start = at + key.size() + 1, end = line.find(' ', start);
    return line.substr(start, end == std::string::npos ? std::string::npos : end - start);
}

// Starts a non-blocking connection to addr:port; -1 (and `why`) when it cannot even start.
int start_connect(const std::string &addr, int port, std::string *why) {
    struct addrinfo hints = {}, *res = nullptr;
    hints.ai_socktype = SOCK_STREAM;
    std::string service = std::to_string(port);
    if (int e = getaddrinfo(addr.c_str(), service.c_str(), &hints, &res); e != 0) {
        *why = "cannot resolve " + addr + ": " + gai_strerror(e);
        return -1;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        *why = std::string("socket: ") + strerror(errno);
        freeaddrinfo(res);
        return -1;
    }
    int r = connect(fd, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    if (r == 0 || errno == EINPROGRESS) return fd;
    *why = strerror(errno);
    close(fd);
    return -1;
}

} // namespace

result<std::vector<slurm_node>> probe_slurm_nodes(int timeout_ms) {
    const char *job = getenv("SLURM_JOB_ID");
    const char *list = getenv("SLURM_JOB_NODELIST");
    if (!job || !*job || !list || !*list) return std::vector<slurm_node>{};
    auto text = capture({"scontrol", "show", "node", "-o", list}, 15000);
    if (!text)
        return error{"cannot list the nodes of Slurm job " + std::string(job) + ": " +
                     text.err().message};
    std::vector<slurm_node> nodes;
    size_t pos = 0;
    while (pos < text->size()) {
        size_t nl = text->find('\n', pos);
        std::string line =
            text->substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
        pos = nl == std::string::npos ? text->size() : nl + 1;
        slurm_node n;
        n.name = field(line, "NodeName");
        if (n.name.empty()) continue;
        n.hostname = field(line, "NodeHostName");
        n.addr = field(line, "NodeAddr");
        if (n.addr.empty()) n.addr = n.hostname.empty() ? n.name : n.hostname;
        n.port = atoi(field(line, "Port").c_str());
        std::string state = field(line, "State");
        if (state.find("DOWN") != std::string::npos ||
            state.find("NOT_RESPONDING") != std::string::npos)
            n.why = "Slurm says " + state;
        nodes.push_back(n);
    }
    if (nodes.empty())
        return error{"scontrol show node names no node of Slurm job " + std::string(job)};
    // `scontrol show node` shows a Port only for a node configured with its own; the others
    // listen on the cluster's SlurmdPort.
    bool need_port = false;
    for (const auto &n : nodes)
        need_port = need_port || n.port <= 0;
    if (need_port) {
        auto conf = capture({"scontrol", "show", "config"}, 15000);
        int port = 0;
        if (conf) {
            size_t at = conf->find("\nSlurmdPort");
            if (at != std::string::npos) {
                size_t eq = conf->find('=', at);
                if (eq != std::string::npos) port = atoi(conf->c_str() + eq + 1);
            }
        }
        if (port <= 0)
            return error{"cannot tell the port of Slurm's slurmd (scontrol show config: " +
                         (conf ? std::string("no SlurmdPort") : conf.err().message) + ")"};
        for (auto &n : nodes)
            if (n.port <= 0) n.port = port;
    }
    // Every slurmd at once: one connection each, polled together until all have answered or the
    // time is up.
    std::vector<int> fds(nodes.size(), -1);
    for (size_t i = 0; i < nodes.size(); i++) {
        if (!nodes[i].why.empty()) continue;
        fds[i] = start_connect(nodes[i].addr, nodes[i].port, &nodes[i].why);
    }
    long long deadline = now_ms() + timeout_ms;
    for (;;) {
        std::vector<struct pollfd> p;
        std::vector<size_t> which;
        for (size_t i = 0; i < nodes.size(); i++)
            if (fds[i] >= 0) {
                p.push_back({fds[i], POLLOUT, 0});
                which.push_back(i);
            }
        long long left = deadline - now_ms();
        if (p.empty() || left <= 0) break;
        int n = poll(p.data(), p.size(), (int)left);
        if (n < 0 && errno != EINTR) break;
        for (size_t k = 0; n > 0 && k < p.size(); k++) {
            if (!p[k].revents) continue;
            size_t i = which[k];
            int err = 0;
            socklen_t len = sizeof err;
            if (getsockopt(fds[i], SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
            if (err == 0)
                nodes[i].answers = true;
            else
                nodes[i].why = strerror(err);
            close(fds[i]);
            fds[i] = -1;
        }
    }
    for (size_t i = 0; i < nodes.size(); i++)
        if (fds[i] >= 0) {
            close(fds[i]);
            nodes[i].why = "no answer in " + std::to_string(timeout_ms / 1000) + " s";
        }
    for (auto &n : nodes)
        if (!n.answers && n.why.empty()) n.why = "no answer";
    return nodes;
}

int node_of_host(const std::vector<slurm_node> &nodes, const std::string &host) {
    std::string first = host.substr(0, host.find('.'));
    for (size_t i = 0; i < nodes.size(); i++)
        if (nodes[i].name == host || nodes[i].hostname == host || nodes[i].name == first)
            return (int)i;
    return -1;
}

} // namespace ghost::run
