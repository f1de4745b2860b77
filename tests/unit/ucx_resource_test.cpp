// SPDX-License-Identifier: Apache-2.0
// The ucx resource, both ends in one process on loopback: an image arrives unchanged and verified;
// a wrong secret, a damaged record and a sender that gives up are refused and leave nothing
// committed. (The resource conformance suite writes arbitrary bytes, which a receiver refuses by
// design: it only takes images.) The target names of resources/registry.h.
#include <gtest/gtest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <chrono>
#include <fstream>
#include <future>
#include <random>
#include <thread>

#include "ghost-core/image_writer.h"
#include "resources/registry.h"
#include "resources/ucx/ucx_resource.h"

using namespace ghost;

namespace {

class string_sink : public res::sink {
  public:
    result<void> write(const void *d, size_t n) override {
        if (committed || aborted) return error{"closed"};
        data.append((const char *)d, n);
        return {};
    }
    result<void> commit() override {
        // A receiver that freezes after the image's last byte (as a stopped process does).
        if (commit_delay_ms)
            std::this_thread::sleep_for(std::chrono::milliseconds(commit_delay_ms));
        committed = true;
        return {};
    }
    void abort() noexcept override {
        if (!committed) aborted = true;
    }
    std::string describe() const override { return "string"; }
    std::string data;
    bool committed = false, aborted = false;
    int commit_delay_ms = 0;
};

// A complete image whose one region holds `mib` MiB of random pages in 256 KiB records.
std::string image_bytes(size_t mib) {
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
    image::credentials_record c{
        {1000, 1000, 1000, 1000}, {100, 100, 100, 100}, 0, 0, 0, ~0ULL, 0, 0, 0};
    EXPECT_TRUE(w.record(image::rec_credentials, &c, sizeof c));
    image::process_record p{};
    std::string cwd = "/home/user";
    p.cwd_len = (uint32_t)cwd.size();
    const uint64_t base = 0x10000000;
    p.agent_state = base;
    EXPECT_TRUE(w.record(image::rec_process, &p, sizeof p, cwd));
    image::region_record r{};
    r.start = base, r.end = base + (mib << 20), r.kind = image::region_anon_private, r.prot = 3;
    EXPECT_TRUE(w.record(image::rec_region, &r, sizeof r));
    std::mt19937_64 rng(7);
    std::string pages(256 << 10, '\0');
    for (uint64_t off = 0; off < (mib << 20); off += pages.size()) {
        for (size_t i = 0; i < pages.size(); i += 8) {
            uint64_t v = rng();
            std::memcpy(&pages[i], &v, 8);
        }
        EXPECT_TRUE(w.pages(base + off, pages.data(), pages.size()));
    }
    image::thread_record t{};
    t.tid = 4242, t.flags = image::thread_main;
    EXPECT_TRUE(w.record(image::rec_thread, &t, sizeof t));
    EXPECT_TRUE(w.finish());
    return out.data;
}

// A receiver on a port of the kernel's choosing, in a thread of its own.
struct receiver_thread {
    explicit receiver_thread(const std::string &secret, int commit_delay_ms = 0) {
        out.commit_delay_ms = commit_delay_ms;
        std::promise<uint16_t> port;
        auto fut = port.get_future();
        th = std::thread([this, secret, p = std::move(port)]() mutable {
            res::ucx_receive_options opt;
            opt.listen = {"127.0.0.1", 0};
            opt.secret = secret;
            opt.accept_timeout_ms = 20000;
            opt.idle_timeout_ms = 20000;
            opt.on_listening = [&](const res::ucx_address &a) { p.set_value(a.port); };
            auto r = res::receive_ucx_image(opt, out);
            if (!r) {
                failure = r.err().message;
                if (opt.listen.port == 0 && fut_unset) p.set_value(0);
            }
            ok = (bool)r;
        });
        if (fut.wait_for(std::chrono::seconds(20)) == std::future_status::ready) port_ = fut.get();
        fut_unset = false;
    }
    ~receiver_thread() {
        if (th.joinable()) th.join();
    }
    void join() { th.join(); }
    res::ucx_address address() const { return {"127.0.0.1", port_}; }

    string_sink out;
    std::thread th;
    uint16_t port_ = 0;
    bool fut_unset = true;
    bool ok = false;
    std::string failure;
};

// Writes `bytes` in the pieces the exporter uses (a record header, then the payload in parts).
result<void> send_in_pieces(res::sink &s, const std::string &bytes) {
    size_t pos = 0;
    while (pos < bytes.size()) {
        size_t n = std::min<size_t>(pos % 3 ? 24 : (256 << 10) + 8, bytes.size() - pos);
        GHOST_TRY(s.write(bytes.data() + pos, n));
        pos += n;
    }
    return {};
}

const char *secret = "0123456789abcdef0123456789abcdef";

} // namespace

TEST(UcxResource, AnImageArrivesVerifiedAndUnchanged) {
    std::string img = image_bytes(5);
    receiver_thread rx(secret);
    ASSERT_NE(rx.port_, 0) << rx.failure;
    auto s = res::connect_ucx_sink(rx.address(), secret);
    ASSERT_TRUE(s) << s.err().message;
    ASSERT_TRUE(send_in_pieces(**s, img));
    auto c = (*s)->commit();
    EXPECT_TRUE(c) << c.err().message;
    rx.join();
    EXPECT_TRUE(rx.ok) << rx.failure;
    EXPECT_TRUE(rx.out.committed);
    EXPECT_TRUE(rx.out.data == img);
}

// A live migration's receiver: a pre-copy, then the image, on one listener; a sender with the
// wrong secret in between is refused and the listener goes on.
TEST(UcxResource, OneListenerTakesImagesOneAfterTheOther) {
    std::string first = image_bytes(2), second = image_bytes(3);
    string_sink out1, out2, out_bad;
    std::promise<uint16_t> port;
    auto fut = port.get_future();
    std::string failure;
    std::thread th([&] {
        res::ucx_receive_options opt;
        opt.listen = {"127.0.0.1", 0};
        opt.secret = secret;
        opt.accept_timeout_ms = 20000;
        opt.on_listening = [&](const res::ucx_address &a) { port.set_value(a.port); };
        res::ucx_image_receiver rx(opt);
        if (auto l = rx.listen(); !l) {
            failure = l.err().message;
            port.set_value(0);
            return;
        }
        for (string_sink *out : {&out1, &out_bad, &out2})
            if (auto r = rx.receive(*out); !r && out != &out_bad) failure += r.err().message;
    });
    ASSERT_EQ(fut.wait_for(std::chrono::seconds(20)), std::future_status::ready);
    uint16_t p = fut.get();
    ASSERT_NE(p, 0) << failure;
    res::ucx_address to{"127.0.0.1", p};
    for (const std::string *img : {(const std::string *)&first, (const std::string *)nullptr,
                                   (const std::string *)&second}) {
        auto s = res::connect_ucx_sink(to, img ? secret : "another secret");
        if (!img) {
            EXPECT_FALSE(s) << "a wrong secret was taken";
            continue;
        }
        ASSERT_TRUE(s) << s.err().message;
        ASSERT_TRUE(send_in_pieces(**s, *img));
        auto c = (*s)->commit();
        EXPECT_TRUE(c) << c.err().message;
    }
    th.join();
    EXPECT_EQ(failure, "");
    EXPECT_TRUE(out1.committed && out2.committed);
    EXPECT_FALSE(out_bad.committed);
    EXPECT_TRUE(out1.data == first);
    EXPECT_TRUE(out2.data == second);
}

TEST(UcxResource, AWrongSecretIsRefusedBeforeAnyData) {
    receiver_thread rx(secret);
    ASSERT_NE(rx.port_, 0) << rx.failure;
    auto s = res::connect_ucx_sink(rx.address(), "another secret");
    ASSERT_FALSE(s);
    EXPECT_NE(s.err().message.find("wrong secret"), std::string::npos) << s.err().message;
    rx.join();
    EXPECT_FALSE(rx.ok);
    EXPECT_NE(rx.failure.find("does not know the secret"), std::string::npos) << rx.failure;
    EXPECT_FALSE(rx.out.committed);
    EXPECT_TRUE(rx.out.data.empty());
}

TEST(UcxResource, ADamagedRecordIsRefusedAndNothingIsCommitted) {
    std::string img = image_bytes(4);
    img[img.size() / 2] ^= 0x10; // inside a pages record's data
    receiver_thread rx(secret);
    ASSERT_NE(rx.port_, 0) << rx.failure;
    auto s = res::connect_ucx_sink(rx.address(), secret);
    ASSERT_TRUE(s) << s.err().message;
    auto w = send_in_pieces(**s, img);
    auto c = w ? (*s)->commit() : w;
    ASSERT_FALSE(c);
    EXPECT_NE(c.err().message.find("checksum mismatch"), std::string::npos) << c.err().message;
    s->reset(); // the sender closes (the receiver waits for that after a refusal)
    rx.join();
    EXPECT_FALSE(rx.ok);
    EXPECT_FALSE(rx.out.committed);
    EXPECT_TRUE(rx.out.aborted);
    EXPECT_LT(rx.out.data.size(), img.size() / 2); // what came after the damage was not passed on
}

TEST(UcxResource, ASenderThatGivesUpLeavesNothing) {
    std::string img = image_bytes(4);
    receiver_thread rx(secret);
    ASSERT_NE(rx.port_, 0) << rx.failure;
    auto s = res::connect_ucx_sink(rx.address(), secret);
    ASSERT_TRUE(s) << s.err().message;
    ASSERT_TRUE((*s)->write(img.data(), img.size() / 2));
    (*s)->abort();
    s->reset();
    rx.join();
    EXPECT_FALSE(rx.ok);
    EXPECT_NE(rx.failure.find("gave up"), std::string::npos) << rx.failure;
    EXPECT_FALSE(rx.out.committed);
    EXPECT_TRUE(rx.out.aborted);
}

TEST(UcxResource, AReceiverThatNeverConfirmsDoesNotHoldTheSender) {
    // The verdict's bound for a small image is the idle timeout (ucx_sink_options): here 1 s,
    // while the receiver's commit takes 4 s.
    std::string img = image_bytes(2);
    receiver_thread rx(secret, 4000);
    ASSERT_NE(rx.port_, 0) << rx.failure;
    res::ucx_sink_options opt;
    opt.idle_timeout_ms = 1000;
    auto s = res::connect_ucx_sink(rx.address(), secret, opt);
    ASSERT_TRUE(s) << s.err().message;
    ASSERT_TRUE(send_in_pieces(**s, img));
    auto t0 = std::chrono::steady_clock::now();
    auto c = (*s)->commit();
    auto waited = std::chrono::steady_clock::now() - t0;
    ASSERT_FALSE(c);
    EXPECT_NE(c.err().message.find("did not confirm the image within 1 s"), std::string::npos)
        << c.err().message;
    EXPECT_LT(waited, std::chrono::seconds(3)); // not the receiver's 4 s
    s->reset();
    rx.join(); // the receiver's own verdict then finds no sender: it ends, either way
}

TEST(UcxResource, NobodyListening) {
    // A port that was just free: bound, then closed.
    receiver_thread rx(secret);
    ASSERT_NE(rx.port_, 0);
    auto good = res::connect_ucx_sink(rx.address(), secret); // ends that receiver
    ASSERT_TRUE(good);
    (*good)->abort();
    good->reset();
    rx.join();
    res::ucx_sink_options opt;
    opt.connect_timeout_ms = 5000;
    auto s = res::connect_ucx_sink(rx.address(), secret, opt);
    ASSERT_FALSE(s);
    EXPECT_NE(s.err().message.find("ucx://127.0.0.1:"), std::string::npos) << s.err().message;
}

TEST(UcxResource, Addresses) {
    auto a = res::parse_ucx_address("ucx://node7:4000");
    ASSERT_TRUE(a);
    EXPECT_EQ(a->host, "node7");
    EXPECT_EQ(a->port, 4000);
    auto v6 = res::parse_ucx_address("[::1]:9");
    ASSERT_TRUE(v6);
    EXPECT_EQ(v6->host, "::1");
    EXPECT_EQ(v6->str(), "[::1]:9");
    EXPECT_FALSE(res::parse_ucx_address("node7"));
    EXPECT_FALSE(res::parse_ucx_address("node7:0"));
    EXPECT_TRUE(res::parse_ucx_address("node7:0", true));
    EXPECT_FALSE(res::parse_ucx_address("node7:70000"));
    EXPECT_FALSE(res::parse_ucx_address("::1:80"));
}

TEST(UcxResource, SecretFiles) {
    char dir[] = "/tmp/ghost-unit-XXXXXX";
    ASSERT_TRUE(::mkdtemp(dir));
    std::string f = std::string(dir) + "/secret";
    std::ofstream(f) << "s3cret\n";
    ::chmod(f.c_str(), 0644);
    auto open = res::read_ucx_secret(f);
    ASSERT_FALSE(open);
    EXPECT_NE(open.err().message.find("readable by other users"), std::string::npos);
    ::chmod(f.c_str(), 0600);
    auto ok = res::read_ucx_secret(f);
    ASSERT_TRUE(ok) << ok.err().message;
    EXPECT_EQ(*ok, "s3cret");
    ::unlink(f.c_str());
    ::rmdir(dir);
}

TEST(ResourceRegistry, TargetsNameTheirKind) {
    auto u = res::find_resource("ucx://host:5");
    ASSERT_TRUE(u);
    EXPECT_STREQ(u->kind->scheme, "ucx");
    EXPECT_EQ(u->location, "host:5");
    EXPECT_TRUE(u->kind->caps.remote && u->kind->caps.verifies);
    auto f = res::find_resource("fs:/x/image.ghost");
    ASSERT_TRUE(f);
    EXPECT_STREQ(f->kind->scheme, "fs");
    EXPECT_EQ(f->location, "/x/image.ghost");
    auto plain = res::find_resource("/tmp/a:b/image.ghost");
    ASSERT_TRUE(plain);
    EXPECT_STREQ(plain->kind->scheme, "fs");
    EXPECT_EQ(plain->location, "/tmp/a:b/image.ghost");
    auto bad = res::find_resource("nfs://x");
    ASSERT_FALSE(bad);
    EXPECT_NE(bad.err().message.find("known: fs:, mem:, ucx:"), std::string::npos);
}
