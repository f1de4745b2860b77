// SPDX-License-Identifier: Apache-2.0
// One image streamed over UCX, end to end, timed: a synthetic image of --mib MiB of random pages
// in 256 KiB pages records (as the exporter writes them; their hashes computed ahead, as the
// export's memory workers do beside the writer) goes through the ucx sink to a receiver in a
// forked process, which verifies every record and copies it into a memfd (--out mem) or drops it
// (--out null). Prints one line: bytes, seconds from connect to the verdict, GB/s.
// --receiver-netns puts the receiver in that network namespace (a path such as
// /var/run/netns/NAME), listening on --receiver-addr: the sender, in the namespace this runs in,
// reaches it over the network between them (an emulated host's veth).
//
//   image_ucx_stream [--mib 1024] [--out mem|null] [--reps 1] [--receiver-netns PATH
//                    --receiver-addr IP]
#include <fcntl.h>
#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "ghost-core/image_writer.h"
#include "resources/mem/mem_resource.h"
#include "resources/ucx/ucx_resource.h"

using namespace ghost;

namespace {

class null_sink : public res::sink {
  public:
    result<void> write(const void *, size_t) override { return {}; }
    result<void> commit() override { return {}; }
    void abort() noexcept override {}
    std::string describe() const override { return "null"; }
};

struct synthetic {
    std::vector<char> memory;
    std::vector<core::image_writer::prepared_pages> runs;
    static constexpr uint64_t base = 0x10000000;
};

// Writes the image to `out`: header, credentials, process, one region with all the pages (the
// agent's state at its start), a main thread, the trailer.
result<uint64_t> write_image(res::sink &out, const synthetic &s) {
    core::image_writer w(out);
    image::header_record h{};
    std::memcpy(h.magic, image::file_magic, 8);
    h.format_version = image::format_version;
    h.arch = image::arch_x86_64;
    h.page_size = 4096;
    h.pid = 4242;
    std::string exe = "/usr/bin/example";
    h.exe_path_len = (uint32_t)exe.size();
    GHOST_TRY(w.record(image::rec_header, &h, sizeof h, exe));
    image::credentials_record c{{0, 0, 0, 0}, {0, 0, 0, 0}, 0, 0, 0, ~0ULL, 0, 0, 0};
    GHOST_TRY(w.record(image::rec_credentials, &c, sizeof c));
    image::process_record p{};
    std::string cwd = "/";
    p.cwd_len = (uint32_t)cwd.size();
    p.agent_state = synthetic::base;
    GHOST_TRY(w.record(image::rec_process, &p, sizeof p, cwd));
    image::region_record r{};
    r.start = synthetic::base, r.end = synthetic::base + s.memory.size();
    r.kind = image::region_anon_private, r.prot = 3;
    GHOST_TRY(w.record(image::rec_region, &r, sizeof r));
    for (const auto &run : s.runs)
        GHOST_TRY(w.pages(run));
    image::thread_record t{};
    t.tid = 4242, t.flags = image::thread_main;
    GHOST_TRY(w.record(image::rec_thread, &t, sizeof t));
    GHOST_TRY(w.finish());
    return w.bytes();
}

double now() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

} // namespace

int main(int argc, char **argv) {
    size_t mib = 1024;
    std::string out = "mem";
    int reps = 1;
    std::string netns, address = "127.0.0.1";
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!std::strcmp(argv[i], "--mib"))
            mib = std::strtoul(argv[i + 1], nullptr, 10);
        else if (!std::strcmp(argv[i], "--out"))
            out = argv[i + 1];
        else if (!std::strcmp(argv[i], "--reps"))
            reps = std::atoi(argv[i + 1]);
        else if (!std::strcmp(argv[i], "--receiver-netns"))
            netns = argv[i + 1];
        else if (!std::strcmp(argv[i], "--receiver-addr"))
            address = argv[i + 1];
    }
    synthetic s;
    s.memory.resize(mib << 20);
    std::mt19937_64 rng(1);
    for (size_t i = 0; i < s.memory.size(); i += 8) {
        uint64_t v = rng();
        std::memcpy(&s.memory[i], &v, 8);
    }
    constexpr size_t chunk = 256 << 10; // the exporter's piece
    for (size_t off = 0; off < s.memory.size(); off += chunk)
        s.runs.push_back(core::image_writer::prepare_pages(
            synthetic::base + off, s.memory.data() + off, std::min(chunk, s.memory.size() - off)));
    if (out == "local") { // the two ends' own work without the network: frame, verify
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
        } str;
        str.data.reserve((mib << 20) + (1 << 20));
        double t0 = now();
        if (!write_image(str, s)) return 1;
        double t1 = now();
        class string_source : public res::source {
          public:
            explicit string_source(const std::string &d) : d_(d) {}
            result<size_t> read(void *p, size_t n) override {
                n = std::min(n, d_.size() - pos_);
                std::memcpy(p, d_.data() + pos_, n);
                pos_ += n;
                return n;
            }
            int stream_fd() const override { return -1; }
            std::string describe() const override { return "string"; }

          private:
            const std::string &d_;
            size_t pos_ = 0;
        } src(str.data);
        auto sum = core::read_image(src);
        double t2 = now();
        if (!sum) return std::fprintf(stderr, "verify: %s\n", sum.err().message.c_str()), 1;
        std::printf("frame_gb_per_s=%.3f verify_gb_per_s=%.3f\n", str.data.size() / (t1 - t0) / 1e9,
                    str.data.size() / (t2 - t1) / 1e9);
        return 0;
    }
    std::string secret = "benchmark-secret";
    for (int rep = 0; rep < reps; rep++) {
        int ports[2];
        if (::pipe(ports) != 0) return 1;
        pid_t child = ::fork();
        if (child == 0) {
            ::close(ports[0]);
            if (!netns.empty()) {
                int ns = ::open(netns.c_str(), O_RDONLY | O_CLOEXEC);
                if (ns < 0 || ::setns(ns, CLONE_NEWNET) != 0) {
                    std::fprintf(stderr, "receiver: cannot enter %s\n", netns.c_str());
                    ::_exit(1);
                }
                ::close(ns);
            }
            res::ucx_receive_options opt;
            opt.listen = {address, 0};
            opt.secret = secret;
            opt.accept_timeout_ms = 30000;
            opt.on_listening = [&](const res::ucx_address &a) {
                (void)!::write(ports[1], &a.port, sizeof a.port);
                ::close(ports[1]);
            };
            std::unique_ptr<res::sink> sink;
            if (out == "mem") {
                auto m = res::mem_sink::create(mib << 20);
                if (!m) return 1;
                sink = std::move(*m);
            } else {
                sink = std::make_unique<null_sink>();
            }
            auto got = res::receive_ucx_image(opt, *sink);
            if (!got) std::fprintf(stderr, "receiver: %s\n", got.err().message.c_str());
            ::_exit(got ? 0 : 1);
        }
        ::close(ports[1]);
        uint16_t port = 0;
        if (::read(ports[0], &port, sizeof port) != sizeof port) return 1;
        ::close(ports[0]);
        double t0 = now();
        auto sink = res::connect_ucx_sink({address, port}, secret);
        if (!sink) {
            std::fprintf(stderr, "sender: %s\n", sink.err().message.c_str());
            return 1;
        }
        double t1 = now();
        auto bytes = write_image(**sink, s);
        if (!bytes) {
            std::fprintf(stderr, "sender: %s\n", bytes.err().message.c_str());
            return 1;
        }
        double tw = now();
        if (auto c = (*sink)->commit(); !c) {
            std::fprintf(stderr, "sender: %s\n", c.err().message.c_str());
            return 1;
        }
        double t2 = now();
        int ws = 0;
        ::waitpid(child, &ws, 0);
        if (!WIFEXITED(ws) || WEXITSTATUS(ws) != 0) return 1;
        std::printf("bytes=%llu connect_s=%.4f write_s=%.4f commit_s=%.4f stream_s=%.4f "
                    "gb_per_s=%.3f\n",
                    (unsigned long long)*bytes, t1 - t0, tw - t1, t2 - tw, t2 - t1,
                    (double)*bytes / (t2 - t1) / 1e9);
        std::fflush(stdout);
    }
    return 0;
}
