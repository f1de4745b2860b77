// SPDX-License-Identifier: Apache-2.0
#include "resources/ucx/ucx_resource.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <ucp/api/ucp.h>
#include <ucs/debug/log_def.h>

#include <algorithm>
#include <chrono>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>
#include <vector>

namespace ghost::res {

namespace {

// --- messages
// Control messages (handshake, verdict) have small tags of their own; the stream's messages carry
// bit 63, their kind and a sequence number, so that the receiver posts a buffer for each of the
// next `window` numbers and takes them in order whatever order they complete in.
enum kind : uint64_t {
    k_hello = 1,   // receiver -> sender: protocol, nonce, the chunk size it receives
    k_auth = 2,    // sender -> receiver: its nonce and its proof
    k_auth_ok = 3, // receiver -> sender: the receiver's proof
    k_verdict = 4, // receiver -> sender: the result (also a refusal, at any time)
    k_data = 5,    // sender -> receiver, stream: a piece of the image
    k_end = 6,     // stream: the image is complete (bytes, pieces)
    k_abort = 7,   // sender -> receiver: drop what you got (answered with a verdict)
};
constexpr uint64_t stream_bit = 1ULL << 63;
constexpr int kind_shift = 48;
constexpr uint64_t seq_mask = (1ULL << kind_shift) - 1;
constexpr uint64_t stream_match = stream_bit | seq_mask; // any kind, this sequence number
uint64_t stream_tag(kind k, uint64_t seq) {
    return stream_bit | ((uint64_t)k << kind_shift) | (seq & seq_mask);
}
kind stream_kind(uint64_t tag) {
    return (kind)((tag & ~stream_bit) >> kind_shift);
}

constexpr char protocol[16] = "ghost-ucx-1";
constexpr size_t nonce_len = 32, mac_len = 32;
constexpr size_t default_chunk = 1 << 20;
constexpr size_t max_chunk = 64 << 20;
constexpr int default_window = 8;

struct hello_msg {
    char proto[16];
    uint8_t nonce[nonce_len];
    uint64_t chunk; // the largest stream message the receiver takes
};
struct auth_msg {
    char proto[16];
    uint8_t nonce[nonce_len];
    uint8_t mac[mac_len];
};
struct auth_ok_msg {
    uint8_t mac[mac_len];
};
struct verdict_msg {
    uint32_t ok;
    char text[500];
};
struct end_msg {
    uint64_t bytes;
    uint64_t pieces;
};

// Each side proves it holds the secret without sending it: HMAC-SHA256 over both nonces and a
// label for its role (a proof cannot be reflected back as the other side's).
void prove(const std::string &secret, const char *role, const uint8_t *nonce_r,
           const uint8_t *nonce_s, uint8_t *mac) {
    std::string msg = std::string(protocol) + " " + role;
    msg.push_back('\0');
    msg.append((const char *)nonce_r, nonce_len);
    msg.append((const char *)nonce_s, nonce_len);
    unsigned len = mac_len;
    ::HMAC(EVP_sha256(), secret.data(), (int)secret.size(), (const unsigned char *)msg.data(),
           msg.size(), mac, &len);
}

bool random_nonce(uint8_t *n) {
    size_t done = 0;
    while (done < nonce_len) {
        ssize_t r = ::getrandom(n + done, nonce_len - done, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return false;
        done += (size_t)r;
    }
    return true;
}

size_t env_size(const char *name, size_t dflt, size_t lo, size_t hi) {
    const char *v = std::getenv(name);
    if (!v || !*v) return dflt;
    char *end = nullptr;
    unsigned long long n = std::strtoull(v, &end, 10);
    if (*end || n < lo || n > hi) return dflt;
    return (size_t)n;
}

// --- UCX's own messages
// UCX logs warnings and errors on stderr (a dropped connection is an error to it); ghost reports
// one line of its own instead, and keeps UCX's last message for it.
std::mutex g_log_mu;
std::string g_last_log;

ucs_log_func_rc_t keep_log(const char *, unsigned, const char *, ucs_log_level_t level,
                           const ucs_log_component_config_t *, const char *fmt, va_list ap) {
    if (level > UCS_LOG_LEVEL_WARN) return UCS_LOG_FUNC_RC_CONTINUE;
    if (level <= UCS_LOG_LEVEL_ERROR) { // warnings (unused variables...) explain no failure
        char buf[512];
        std::vsnprintf(buf, sizeof buf, fmt, ap);
        std::lock_guard lock(g_log_mu);
        g_last_log = buf;
    }
    return UCS_LOG_FUNC_RC_STOP;
}

void quiet_ucx() {
    static std::once_flag once;
    std::call_once(once, [] {
        if (!std::getenv("GHOST_UCX_VERBOSE")) ucs_log_push_handler(keep_log);
    });
}

std::string ucx_why(ucs_status_t s) {
    std::string why = ucs_status_string(s);
    std::lock_guard lock(g_log_mu);
    if (!g_last_log.empty()) why += " (" + g_last_log + ")";
    return why;
}

using clock_type = std::chrono::steady_clock;

// --- one UCX operation (send or receive) and its completion
struct op {
    void *req = nullptr;
    bool done = true;
    ucs_status_t status = UCS_OK;
    size_t length = 0;
    uint64_t tag = 0;
};

void send_done(void *request, ucs_status_t status, void *user) {
    op *o = (op *)user;
    o->status = status;
    o->done = true;
    o->req = nullptr;
    ucp_request_free(request);
}

void recv_done(void *request, ucs_status_t status, const ucp_tag_recv_info_t *info, void *user) {
    op *o = (op *)user;
    o->status = status;
    if (info && status == UCS_OK) o->length = info->length, o->tag = info->sender_tag;
    o->done = true;
    o->req = nullptr;
    ucp_request_free(request);
}

// A UCP context with one worker, driven by whoever waits (no progress thread).
class node {
  public:
    ~node() {
        if (leaked_) { // a request UCX has not let go of may still write into the buffers
            if (worker_) ucp_worker_destroy(worker_);
            return;
        }
        if (memh_) ucp_mem_unmap(ctx_, memh_);
        if (staging_) ::munmap(staging_, staging_len_);
        if (worker_) ucp_worker_destroy(worker_);
        if (ctx_) ucp_cleanup(ctx_);
    }

    // `loopback`: the other side is on this host by a loopback address.
    result<void> init(bool loopback) {
        quiet_ucx();
        // UCX opens TCP lanes on every interface and makes the other side connect back to them:
        // on one host an interface that comes and goes (a container's bridge) broke connections
        // here ("connect to 10.x: Connection refused", endpoint timeouts). A loopback transfer
        // keeps to lo (and shared memory) unless the user chose devices.
        if (loopback) ::setenv("UCX_NET_DEVICES", "lo", 0);
        // UCX 1.13 leaves shared memory out of an endpoint that must report a failed peer (ours
        // do: a receiver or a sender that dies must end the stream) unless it is told to.
        ::setenv("UCX_MM_ERROR_HANDLING", "y", 0);
        // A peer that vanishes without a word (its host crashed or left the network: no FIN, no
        // RST) is noticed by keepalives: UCX's default (20 s, and TCP's after 10 s idle) left a
        // sender waiting for a verdict ~50 s after the receiver's host was gone, a live
        // migration's whole job quiescent meanwhile. Not much shorter: a peer that is only slow
        // (a loaded host) must not be taken for a gone one.
        ::setenv("UCX_KEEPALIVE_INTERVAL", "5s", 0);
        ::setenv("UCX_TCP_KEEPIDLE", "2s", 0);
        ucp_config_t *config = nullptr;
        if (ucs_status_t s = ucp_config_read(nullptr, nullptr, &config); s != UCS_OK)
            return error{"cannot read the UCX configuration: " + ucx_why(s)};
        ucp_params_t p{};
        p.field_mask = UCP_PARAM_FIELD_FEATURES;
        p.features = UCP_FEATURE_TAG;
        ucs_status_t s = ucp_init(&p, config, &ctx_);
        ucp_config_release(config);
        if (s != UCS_OK) return error{"cannot start UCX: " + ucx_why(s)};
        ucp_worker_params_t wp{};
        wp.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
        wp.thread_mode = UCS_THREAD_MODE_SINGLE;
        if ((s = ucp_worker_create(ctx_, &wp, &worker_)) != UCS_OK)
            return error{"cannot start a UCX worker: " + ucx_why(s)};
        return {};
    }

    // `count` buffers of `size` bytes, registered with UCX once (the zero-copy protocols send from
    // and receive into them directly).
    result<char *> staging(size_t size, int count) {
        staging_len_ = size * (size_t)count;
        void *p = ::mmap(nullptr, staging_len_, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
        if (p == MAP_FAILED) {
            staging_ = nullptr;
            return sys_error("cannot allocate network buffers");
        }
        staging_ = (char *)p;
        ucp_mem_map_params_t mp{};
        mp.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH;
        mp.address = staging_;
        mp.length = staging_len_;
        if (ucs_status_t s = ucp_mem_map(ctx_, &mp, &memh_); s != UCS_OK) {
            memh_ = nullptr; // UCX registers on the fly then
        }
        return staging_;
    }

    bool in_staging(const void *p) const {
        return staging_ && (const char *)p >= staging_ && (const char *)p < staging_ + staging_len_;
    }

    result<void> send(ucp_ep_h ep, op &o, const void *buf, size_t len, uint64_t tag) {
        ucp_request_param_t p{};
        p.op_attr_mask =
            UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA | UCP_OP_ATTR_FLAG_NO_IMM_CMPL;
        if (memh_ && in_staging(buf)) p.op_attr_mask |= UCP_OP_ATTR_FIELD_MEMH, p.memh = memh_;
        p.cb.send = send_done;
        p.user_data = &o;
        o.done = false;
        o.status = UCS_INPROGRESS;
        void *r = ucp_tag_send_nbx(ep, buf, len, tag, &p);
        if (UCS_PTR_IS_ERR(r)) {
            o.done = true;
            o.status = UCS_PTR_STATUS(r);
            return error{ucx_why(o.status)};
        }
        o.req = r;
        return {};
    }

    result<void> recv(op &o, void *buf, size_t len, uint64_t tag, uint64_t mask) {
        ucp_request_param_t p{};
        p.op_attr_mask =
            UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA | UCP_OP_ATTR_FLAG_NO_IMM_CMPL;
        if (memh_ && in_staging(buf)) p.op_attr_mask |= UCP_OP_ATTR_FIELD_MEMH, p.memh = memh_;
        p.cb.recv = recv_done;
        p.user_data = &o;
        o.done = false;
        o.status = UCS_INPROGRESS;
        o.length = 0;
        void *r = ucp_tag_recv_nbx(worker_, buf, len, tag, mask, &p);
        if (UCS_PTR_IS_ERR(r)) {
            o.done = true;
            o.status = UCS_PTR_STATUS(r);
            return error{ucx_why(o.status)};
        }
        o.req = r;
        return {};
    }

    // Cancels a pending operation and waits (briefly) until UCX lets go of its buffer.
    void cancel(op &o) {
        if (o.done) return;
        if (o.req) ucp_request_cancel(worker_, o.req);
        auto end = clock_type::now() + std::chrono::seconds(2);
        while (!o.done && clock_type::now() < end)
            progress_or_nap();
        if (!o.done) { // UCX still has it (a matched receive whose peer hangs): no callback after
            if (o.req) ucp_request_free(o.req);
            o.req = nullptr;
            o.done = true;
            o.status = UCS_ERR_CANCELED;
            leaked_ = true; // its buffer may still be written: kept until the process ends
        }
    }

    unsigned progress() { return ucp_worker_progress(worker_); }

    // Progress; after a while without any, naps. A stream under way always has some within a
    // moment; the long waits are for a peer that has work to do first: a sender's next
    // connection (its checkpointer starts, parks the rank, scans its memory), a restore's
    // verdict. Spinning through those took a core of two from the very processes waited for: a
    // receiver idle between pre-copy rounds and until the final image spun about 60% of a core
    // (a --keep migration of a 256 MiB rank on 2 cores). So: 2 ms of spinning, in which the core
    // is offered to whoever else can run on it every 16 empty rounds (a migration streams every
    // rank's image at once, a sender and a receiver per rank, and those that wait for the network
    // spun ahead of those that had work: 4 x 256 MiB over tcp on 2 cores, 3.7 s without, 1.2-1.4 s
    // with), then a 100 us nap per empty round (what an event then waits for, at most).
    void progress_or_nap() {
        if (progress()) {
            idle_ = 0;
            napping_ = false;
            return;
        }
        if (napping_) {
            ::usleep(100);
            return;
        }
        if (idle_++ == 0) {
            idle_since_ = clock_type::now();
            return;
        }
        if ((idle_ & 15) != 0) return;
        if (clock_type::now() - idle_since_ < std::chrono::milliseconds(2))
            ::sched_yield();
        else
            napping_ = true;
    }

    // Drives UCX until `done()` or the timeout (then the error `why()`); `broken()` (the peer is
    // gone) ends the wait early with its own error.
    template <class Done, class Broken>
    result<void> wait(Done done, Broken broken, int timeout_ms, const std::string &why) {
        auto end = clock_type::now() + std::chrono::milliseconds(timeout_ms);
        for (unsigned n = 0;; n++) {
            if (done()) return {};
            if (auto b = broken(); !b) return b;
            progress_or_nap();
            if ((n & 255) == 0 && clock_type::now() > end) return error{why};
        }
    }

    ucp_worker_h worker() const { return worker_; }
    ucp_context_h context() const { return ctx_; }

  private:
    ucp_context_h ctx_ = nullptr;
    ucp_worker_h worker_ = nullptr;
    char *staging_ = nullptr;
    size_t staging_len_ = 0;
    ucp_mem_h memh_ = nullptr;
    uint64_t idle_ = 0; // empty progress rounds in a row
    bool napping_ = false;
    clock_type::time_point idle_since_;
    bool leaked_ = false;
};

// The endpoint to the other side and what happened to it.
struct peer {
    ucp_ep_h ep = nullptr;
    ucs_status_t failed = UCS_OK;
    std::string name;
};

void ep_failed(void *arg, ucp_ep_h, ucs_status_t status) {
    peer *p = (peer *)arg;
    if (p->failed == UCS_OK) p->failed = status;
}

// Flushes what was sent (bounded), then closes; forced when the peer is gone or `force` (what is
// still in flight is dropped: its requests complete as cancelled).
void close_ep(node &n, peer &p, int timeout_ms, bool force = false) {
    if (!p.ep) return;
    ucp_request_param_t prm{};
    prm.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
    prm.flags = p.failed == UCS_OK && !force ? 0 : UCP_EP_CLOSE_FLAG_FORCE;
    void *r = ucp_ep_close_nbx(p.ep, &prm);
    p.ep = nullptr;
    if (!r || UCS_PTR_IS_ERR(r)) return;
    auto end = clock_type::now() + std::chrono::milliseconds(timeout_ms);
    while (ucp_request_check_status(r) == UCS_INPROGRESS && clock_type::now() < end)
        n.progress_or_nap();
    ucp_request_free(r); // not flushed in time: the peer is stuck; UCX finishes it on its own
}

result<std::vector<sockaddr_storage>> resolve(const ucx_address &a, bool passive) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0);
    addrinfo *res = nullptr;
    std::string port = std::to_string(a.port);
    int rc = ::getaddrinfo(a.host.empty() ? nullptr : a.host.c_str(), port.c_str(), &hints, &res);
    if (rc != 0) return error{"cannot resolve " + a.host + ": " + ::gai_strerror(rc)};
    std::vector<sockaddr_storage> out;
    for (addrinfo *i = res; i; i = i->ai_next) {
        sockaddr_storage ss{};
        std::memcpy(&ss, i->ai_addr, i->ai_addrlen);
        out.push_back(ss);
    }
    ::freeaddrinfo(res);
    if (out.empty()) return error{"cannot resolve " + a.host};
    return out;
}

bool is_loopback(const sockaddr_storage &ss) {
    if (ss.ss_family == AF_INET)
        return (ntohl(((const sockaddr_in *)&ss)->sin_addr.s_addr) >> 24) == 127;
    if (ss.ss_family == AF_INET6)
        return IN6_IS_ADDR_LOOPBACK(&((const sockaddr_in6 *)&ss)->sin6_addr);
    return false;
}

socklen_t sockaddr_len(const sockaddr_storage &ss) {
    return ss.ss_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
}

std::string sockaddr_name(const sockaddr_storage &ss) {
    char host[INET6_ADDRSTRLEN] = "?";
    uint16_t port = 0;
    if (ss.ss_family == AF_INET) {
        auto *in = (const sockaddr_in *)&ss;
        ::inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
        port = ntohs(in->sin_port);
        return std::string(host) + ":" + std::to_string(port);
    }
    if (ss.ss_family == AF_INET6) {
        auto *in = (const sockaddr_in6 *)&ss;
        ::inet_ntop(AF_INET6, &in->sin6_addr, host, sizeof host);
        port = ntohs(in->sin6_port);
    }
    return "[" + std::string(host) + "]:" + std::to_string(port);
}

std::string verdict_text(const verdict_msg &v) {
    return std::string(v.text, strnlen(v.text, sizeof v.text));
}

// --- the sender's sink
class ucx_sink final : public sink {
  public:
    ucx_sink(ucx_address to, ucx_sink_options opt) : to_(std::move(to)), opt_(opt) {
        peer_.name = "ucx://" + to_.str();
        // Tests only: one bit of the stream flipped after it left the exporter (a damaged link).
        if (const char *f = std::getenv("GHOST_UCX_TEST_FLIP_AT"); f && *f)
            flip_at_ = std::strtoull(f, nullptr, 10);
    }
    ~ucx_sink() override {
        abort();
        close_ep(n_, peer_, 500, true); // a connection that failed half-way (its sends cancelled)
        for (auto &s : slots_)
            n_.cancel(s.send);
        n_.cancel(verdict_op_);
        n_.cancel(hello_op_);
        n_.cancel(auth_ok_op_);
        n_.cancel(ctl_send_);
    }

    result<void> connect(const std::string &secret) {
        auto addrs = resolve(to_, false);
        if (!addrs) return addrs.err();
        GHOST_TRY(n_.init(is_loopback((*addrs)[0])));
        // Posted before anything can arrive: the receiver's hello, its proof or a refusal.
        GHOST_TRY(n_.recv(hello_op_, &hello_, sizeof hello_, k_hello, ~0ULL));
        GHOST_TRY(n_.recv(auth_ok_op_, &auth_ok_, sizeof auth_ok_, k_auth_ok, ~0ULL));
        GHOST_TRY(n_.recv(verdict_op_, &verdict_, sizeof verdict_, k_verdict, ~0ULL));
        ucp_ep_params_t ep{};
        ep.field_mask = UCP_EP_PARAM_FIELD_FLAGS | UCP_EP_PARAM_FIELD_SOCK_ADDR |
                        UCP_EP_PARAM_FIELD_ERR_HANDLER | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE;
        ep.flags = UCP_EP_PARAMS_FLAGS_CLIENT_SERVER;
        ep.sockaddr.addr = (const sockaddr *)&(*addrs)[0];
        ep.sockaddr.addrlen = sockaddr_len((*addrs)[0]);
        ep.err_mode = UCP_ERR_HANDLING_MODE_PEER;
        ep.err_handler.cb = ep_failed;
        ep.err_handler.arg = &peer_;
        if (ucs_status_t s = ucp_ep_create(n_.worker(), &ep, &peer_.ep); s != UCS_OK) {
            peer_.ep = nullptr;
            return error{"cannot connect to " + peer_.name + ": " + ucx_why(s)};
        }
        auto connect_failed = [&]() -> result<void> {
            if (peer_.failed != UCS_OK)
                return error{"cannot connect to " + peer_.name + ": " + ucx_why(peer_.failed) +
                             " (is `ghost receive` listening there?)"};
            if (verdict_op_.done) return refused();
            return {};
        };
        GHOST_TRY(n_.wait([&] { return hello_op_.done; }, connect_failed, opt_.connect_timeout_ms,
                          "no answer from " + peer_.name + " within " +
                              std::to_string(opt_.connect_timeout_ms / 1000) + " s"));
        if (hello_op_.status != UCS_OK || std::memcmp(hello_.proto, protocol, sizeof protocol) ||
            hello_.chunk < 4096 || hello_.chunk > max_chunk)
            return error{peer_.name + " does not speak ghost's image protocol"};
        auth_msg a{};
        std::memcpy(a.proto, protocol, sizeof protocol);
        if (!random_nonce(a.nonce)) return sys_error("cannot get random bytes");
        prove(secret, "sender", hello_.nonce, a.nonce, a.mac);
        prove(secret, "receiver", hello_.nonce, a.nonce, expect_);
        GHOST_TRY(n_.send(peer_.ep, ctl_send_, &a, sizeof a, k_auth));
        GHOST_TRY(n_.wait([&] { return auth_ok_op_.done; }, connect_failed, opt_.connect_timeout_ms,
                          peer_.name + " did not answer the authentication"));
        if (auth_ok_op_.status != UCS_OK || CRYPTO_memcmp(auth_ok_.mac, expect_, mac_len) != 0)
            return error{peer_.name +
                         " is not a receiver of this job (it does not know the secret)"};
        chunk_ = hello_.chunk;
        window_ = (int)env_size("GHOST_UCX_WINDOW", default_window, 2, 64);
        auto base = n_.staging(chunk_, window_);
        if (!base) return base.err();
        slots_.resize((size_t)window_);
        for (int i = 0; i < window_; i++)
            slots_[(size_t)i].buf = *base + (size_t)i * chunk_;
        connected_ = true;
        return {};
    }

    result<void> write(const void *data, size_t len) override {
        if (!connected_ || closed_) return error{"the image to " + peer_.name + " was closed"};
        const char *p = (const char *)data;
        while (len) {
            slot &s = slots_[cur_];
            if (s.in_flight) GHOST_TRY(reclaim(s));
            size_t n = std::min(len, chunk_ - s.len);
            std::memcpy(s.buf + s.len, p, n);
            if (flip_at_ >= written_ && flip_at_ - written_ < n)
                s.buf[s.len + (flip_at_ - written_)] ^= 1;
            written_ += n;
            s.len += n;
            p += n;
            len -= n;
            if (s.len == chunk_) GHOST_TRY(submit());
        }
        return {};
    }

    result<void> commit() override {
        if (!connected_ || closed_) return error{"the image to " + peer_.name + " was closed"};
        if (slots_[cur_].len) GHOST_TRY(submit());
        end_msg e{bytes_, seq_};
        op end_send;
        GHOST_TRY(n_.send(peer_.ep, end_send, &e, sizeof e, stream_tag(k_end, seq_)));
        auto r = finish(end_send);
        closed_ = true;
        if (!r) {
            n_.cancel(end_send);
            close_ep(n_, peer_, 1000, true);
        }
        return r;
    }

    void abort() noexcept override {
        if (!connected_ || closed_) return;
        closed_ = true;
        if (peer_.failed == UCS_OK && !verdict_op_.done) {
            // Told apart from a lost connection: the receiver answers with its verdict, and the
            // connection is closed only then (or after 2 s).
            op abort_send;
            uint64_t zero = 0;
            if (n_.send(peer_.ep, abort_send, &zero, sizeof zero, k_abort)) {
                (void)n_.wait([&] { return abort_send.done && verdict_op_.done; },
                              [&]() -> result<void> {
                                  if (peer_.failed != UCS_OK) return error{""};
                                  return {};
                              },
                              2000, "");
                n_.cancel(abort_send);
            }
        }
        close_ep(n_, peer_, 1000, true);
    }

    std::string describe() const override { return peer_.name; }

    result<void> idle() override {
        if (!connected_ || closed_) return error{"the image to " + peer_.name + " was closed"};
        n_.progress();
        return gone();
    }

  private:
    struct slot {
        char *buf = nullptr;
        size_t len = 0;
        bool in_flight = false;
        op send;
    };

    result<void> submit() {
        slot &s = slots_[cur_];
        GHOST_TRY(n_.send(peer_.ep, s.send, s.buf, s.len, stream_tag(k_data, seq_)));
        s.in_flight = true;
        bytes_ += s.len;
        seq_++;
        cur_ = (cur_ + 1) % slots_.size();
        n_.progress(); // get it going while the next piece is copied
        return {};
    }

    // The reason the receiver gave, or why it is gone.
    error refused() {
        return error{"the receiver at " + peer_.name + " refused: " + verdict_text(verdict_)};
    }
    result<void> gone() {
        if (verdict_op_.done && verdict_op_.status == UCS_OK && !verdict_.ok) return refused();
        if (peer_.failed != UCS_OK) {
            // A refusal may still be on its way ahead of the connection's end.
            auto end = clock_type::now() + std::chrono::milliseconds(500);
            while (!verdict_op_.done && clock_type::now() < end)
                n_.progress_or_nap();
            if (verdict_op_.done && verdict_op_.status == UCS_OK && !verdict_.ok) return refused();
            return error{"the connection to " + peer_.name + " was lost: " + ucx_why(peer_.failed)};
        }
        return {};
    }

    result<void> reclaim(slot &s) {
        GHOST_TRY(n_.wait([&] { return s.send.done; }, [&] { return gone(); }, opt_.idle_timeout_ms,
                          peer_.name + " took no data for " +
                              std::to_string(opt_.idle_timeout_ms / 1000) + " s"));
        if (s.send.status != UCS_OK) {
            GHOST_TRY(gone());
            return error{"cannot send to " + peer_.name + ": " + ucx_why(s.send.status)};
        }
        s.in_flight = false;
        s.len = 0;
        return {};
    }

    result<void> finish(op &end_send) {
        for (auto &s : slots_)
            if (s.in_flight) GHOST_TRY(reclaim(s));
        int verdict_ms = opt_.verdict_timeout_ms;
        if (verdict_ms <= 0)
            verdict_ms = (int)std::min<uint64_t>(INT32_MAX, (uint64_t)opt_.idle_timeout_ms +
                                                                bytes_ / (1ull << 20) * 10);
        GHOST_TRY(n_.wait([&] { return end_send.done && verdict_op_.done; }, [&] { return gone(); },
                          verdict_ms,
                          peer_.name + " did not confirm the image within " +
                              std::to_string(verdict_ms / 1000) + " s"));
        if (verdict_op_.status != UCS_OK)
            return error{"no verdict from " + peer_.name + ": " + ucx_why(verdict_op_.status)};
        if (!verdict_.ok) return refused();
        close_ep(n_, peer_, 2000);
        return {};
    }

    ucx_address to_;
    ucx_sink_options opt_;
    node n_;
    peer peer_;
    hello_msg hello_{};
    auth_ok_msg auth_ok_{};
    verdict_msg verdict_{};
    uint8_t expect_[mac_len] = {};
    op hello_op_, auth_ok_op_, verdict_op_, ctl_send_;
    bool connected_ = false, closed_ = false;
    size_t chunk_ = default_chunk;
    int window_ = default_window;
    std::vector<slot> slots_;
    size_t cur_ = 0;
    uint64_t seq_ = 0, bytes_ = 0, written_ = 0;
    uint64_t flip_at_ = ~0ULL;
};

// --- the receiver
struct listener_state {
    ucp_listener_h listener = nullptr;
    ucp_conn_request_h request = nullptr;
    bool taken = false;
};

void on_connection(ucp_conn_request_h req, void *arg) {
    auto *l = (listener_state *)arg;
    if (l->taken || l->request) { // one sender per image
        ucp_listener_reject(l->listener, req);
        return;
    }
    l->request = req;
}

// The stream as a source for the image reader: each piece is handed on to `out` once the reader
// has gone past it (every record in it verified), and its buffer is posted again for a later
// piece.
class stream_source final : public source {
  public:
    stream_source(node &n, peer &p, const op &aborted, sink &out, char *base, size_t chunk,
                  int window, int idle_ms)
        : n_(n), p_(p), aborted_(aborted), out_(out), chunk_(chunk), idle_ms_(idle_ms),
          slots_((size_t)window) {
        for (size_t i = 0; i < slots_.size(); i++)
            slots_[i].buf = base + i * chunk;
    }
    ~stream_source() override {
        for (auto &s : slots_)
            n_.cancel(s.recv);
    }

    result<void> start() {
        for (size_t i = 0; i < slots_.size(); i++)
            GHOST_TRY(post(i, i));
        return {};
    }

    result<size_t> read(void *data, size_t len) override {
        auto v = lend(len);
        if (!v) return v.err();
        if (v->len) std::memcpy(data, v->data, v->len);
        return v->len;
    }
    // Page data is verified where it was received: no copy.
    result<view> lend(size_t len) override {
        if (pos_ == len_cur_) {
            if (ended_) return view{};
            GHOST_TRY(next());
            if (ended_) return view{};
        }
        view v{cur_ + pos_, std::min(len, len_cur_ - pos_)};
        consumed(v.len);
        return v;
    }
    int stream_fd() const override { return -1; }
    std::string describe() const override { return "the stream from " + p_.name; }

    uint64_t bytes() const { return bytes_; }
    bool started() const { return seq_ > 0; }
    clock_type::time_point first() const { return first_; }

  private:
    struct slot {
        char *buf = nullptr;
        op recv;
    };

    void consumed(size_t n) {
        pos_ += n;
        if ((since_progress_ += n) >= (256 << 10)) { // keep the network busy while we verify
            n_.progress();
            since_progress_ = 0;
        }
    }

    // The sender gave up, or its connection is gone (a message to give up may still be on its way
    // on another lane).
    result<void> broken() {
        if (aborted_.done && aborted_.status == UCS_OK)
            return error{"the sender at " + p_.name + " gave up the image"};
        if (p_.failed == UCS_OK) return {};
        auto end = clock_type::now() + std::chrono::milliseconds(200);
        while (!aborted_.done && clock_type::now() < end)
            n_.progress_or_nap();
        if (aborted_.done && aborted_.status == UCS_OK)
            return error{"the sender at " + p_.name + " gave up the image"};
        return error{"the connection from " + p_.name + " was lost after " +
                     std::to_string(bytes_) + " bytes: " + ucx_why(p_.failed)};
    }

    result<void> post(size_t i, uint64_t seq) {
        return n_.recv(slots_[i].recv, slots_[i].buf, chunk_, stream_tag(k_data, seq),
                       stream_match);
    }

    result<void> next() {
        if (cur_) { // the reader is past it: verified
            GHOST_TRY(out_.write(cur_, len_cur_));
            GHOST_TRY(post((seq_ - 1) % slots_.size(), seq_ - 1 + slots_.size()));
            cur_ = nullptr;
            len_cur_ = pos_ = 0;
        }
        slot &s = slots_[seq_ % slots_.size()];
        GHOST_TRY(n_.wait([&] { return s.recv.done; }, [&] { return broken(); }, idle_ms_,
                          "the sender at " + p_.name + " sent nothing for " +
                              std::to_string(idle_ms_ / 1000) + " s"));
        if (s.recv.status != UCS_OK) {
            GHOST_TRY(broken()); // the sender gave up or is gone: say so
            return error{"cannot receive from " + p_.name + ": " + ucx_why(s.recv.status)};
        }
        if (seq_ == 0) first_ = clock_type::now();
        seq_++;
        switch (stream_kind(s.recv.tag)) {
        case k_data:
            cur_ = s.buf;
            len_cur_ = s.recv.length;
            pos_ = 0;
            bytes_ += len_cur_;
            return {};
        case k_end: {
            end_msg e{};
            std::memcpy(&e, s.buf, std::min(sizeof e, s.recv.length));
            if (s.recv.length != sizeof e || e.bytes != bytes_ || e.pieces != seq_ - 1)
                return error{"the stream from " + p_.name + " lost pieces on the way"};
            ended_ = true;
            return {};
        }
        default:
            return error{"the stream from " + p_.name + " is garbled"};
        }
    }

    node &n_;
    peer &p_;
    const op &aborted_;
    sink &out_;
    size_t chunk_;
    int idle_ms_;
    std::vector<slot> slots_;
    uint64_t seq_ = 0, bytes_ = 0;
    char *cur_ = nullptr;
    size_t len_cur_ = 0, pos_ = 0, since_progress_ = 0;
    bool ended_ = false;
    clock_type::time_point first_;
};

class receiver {
  public:
    explicit receiver(const ucx_receive_options &opt) : opt_(opt) {}
    ~receiver() {
        src_.reset();
        n_.cancel(abort_op_);
        n_.cancel(auth_op_);
        n_.cancel(ctl_send_);
        close_ep(n_, peer_, 1000);
        if (l_.listener) ucp_listener_destroy(l_.listener);
    }

    result<ucx_received> run(sink &out) {
        GHOST_TRY(start());
        return receive(out);
    }

    result<ucx_address> start() {
        auto addrs = resolve(opt_.listen, true);
        if (!addrs) return addrs.err();
        GHOST_TRY(n_.init(is_loopback((*addrs)[0])));
        GHOST_TRY(listen());
        return bound_;
    }

    // The next sender's image (after start(); again after an image was received).
    result<ucx_received> receive(sink &out) {
        if (received_) { // the last sender is gone: the listener takes a new one
            n_.cancel(abort_op_);
            n_.cancel(auth_op_);
            n_.cancel(ctl_send_);
            peer_ = peer{};
            l_.request = nullptr;
            l_.taken = false;
        }
        received_ = true;
        GHOST_TRY(accept());
        GHOST_TRY(authenticate());
        size_t chunk = env_size("GHOST_UCX_CHUNK", default_chunk, 4096, max_chunk);
        int window = (int)env_size("GHOST_UCX_WINDOW", default_window, 2, 64);
        if (!staging_) {
            auto base = n_.staging(chunk, window);
            if (!base) return fail(base.err(), out);
            staging_ = *base;
        }
        char *const *base = &staging_;
        // The sender learns the chunk size from the hello: the buffers must be there before it
        // sends a piece, so they are posted before the proof that lets it start.
        if (auto r = n_.recv(abort_op_, &abort_msg_, sizeof abort_msg_, k_abort, ~0ULL); !r)
            return fail(r.err(), out);
        src_ = std::make_unique<stream_source>(n_, peer_, abort_op_, out, *base, chunk, window,
                                               opt_.idle_timeout_ms);
        auto &src = src_;
        if (auto r = src->start(); !r) return fail(r.err(), out);
        if (auto r = send_auth_ok(); !r) return fail(r.err(), out);
        auto summary = core::read_image(*src);
        if (!summary) {
            const std::string &why = summary.err().message;
            if (why.find(peer_.name) != std::string::npos) return fail(summary.err(), out);
            return fail(error{"refused the image from " + peer_.name + ": " + why}, out, why);
        }
        if (auto c = out.commit(); !c) return fail(c.err(), out);
        ucx_received got;
        got.summary = std::move(*summary);
        got.peer = peer_.name;
        got.seconds = std::chrono::duration<double>(clock_type::now() - src->first()).count();
        src.reset();
        send_verdict(true, "");
        close_ep(n_, peer_, 5000);
        return got;
    }

  private:
    // Receives still posted (or under way) must be gone before the endpoint closes.
    error fail(const error &e, sink &out, const std::string &told = {}) {
        src_.reset();
        out.abort();
        refuse(told.empty() ? e.message : told);
        return e;
    }

    // The sender closes once it has the refusal: closing first could overtake it (the end of a
    // connection travels on a lane of its own).
    void refuse(const std::string &why) {
        send_verdict(false, why);
        (void)n_.wait([&] { return peer_.failed != UCS_OK; }, [] { return result<void>{}; }, 2000,
                      "");
        close_ep(n_, peer_, 1000);
    }

    void send_verdict(bool ok, const std::string &text) {
        if (!peer_.ep || peer_.failed != UCS_OK) return;
        verdict_ = {};
        verdict_.ok = ok;
        std::snprintf(verdict_.text, sizeof verdict_.text, "%s", text.c_str());
        op o;
        if (!n_.send(peer_.ep, o, &verdict_, sizeof verdict_, k_verdict)) return;
        (void)n_.wait([&] { return o.done; },
                      [&]() -> result<void> {
                          if (peer_.failed != UCS_OK) return error{""};
                          return {};
                      },
                      5000, "");
        n_.cancel(o);
    }

    result<void> listen() {
        auto addrs = resolve(opt_.listen, true);
        if (!addrs) return addrs.err();
        ucp_listener_params_t lp{};
        lp.field_mask = UCP_LISTENER_PARAM_FIELD_SOCK_ADDR | UCP_LISTENER_PARAM_FIELD_CONN_HANDLER;
        lp.sockaddr.addr = (const sockaddr *)&(*addrs)[0];
        lp.sockaddr.addrlen = sockaddr_len((*addrs)[0]);
        lp.conn_handler.cb = on_connection;
        lp.conn_handler.arg = &l_;
        if (ucs_status_t s = ucp_listener_create(n_.worker(), &lp, &l_.listener); s != UCS_OK) {
            l_.listener = nullptr;
            return error{"cannot listen on " + opt_.listen.str() + ": " + ucx_why(s)};
        }
        ucp_listener_attr_t attr{};
        attr.field_mask = UCP_LISTENER_ATTR_FIELD_SOCKADDR;
        ucx_address bound = opt_.listen;
        if (ucp_listener_query(l_.listener, &attr) == UCS_OK) {
            if (attr.sockaddr.ss_family == AF_INET)
                bound.port = ntohs(((sockaddr_in *)&attr.sockaddr)->sin_port);
            else if (attr.sockaddr.ss_family == AF_INET6)
                bound.port = ntohs(((sockaddr_in6 *)&attr.sockaddr)->sin6_port);
        }
        bound_ = bound;
        if (opt_.on_listening) opt_.on_listening(bound);
        return {};
    }

    result<void> accept() {
        GHOST_TRY(n_.wait([&] { return l_.request != nullptr; }, [] { return result<void>{}; },
                          opt_.accept_timeout_ms,
                          "no sender connected to " + bound_.str() + " within " +
                              std::to_string(opt_.accept_timeout_ms / 1000) + " s"));
        l_.taken = true;
        ucp_conn_request_attr_t ca{};
        ca.field_mask = UCP_CONN_REQUEST_ATTR_FIELD_CLIENT_ADDR;
        peer_.name = "?";
        if (ucp_conn_request_query(l_.request, &ca) == UCS_OK)
            peer_.name = sockaddr_name(ca.client_address);
        ucp_ep_params_t ep{};
        ep.field_mask = UCP_EP_PARAM_FIELD_CONN_REQUEST | UCP_EP_PARAM_FIELD_ERR_HANDLER |
                        UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE;
        ep.conn_request = l_.request;
        ep.err_mode = UCP_ERR_HANDLING_MODE_PEER;
        ep.err_handler.cb = ep_failed;
        ep.err_handler.arg = &peer_;
        if (ucs_status_t s = ucp_ep_create(n_.worker(), &ep, &peer_.ep); s != UCS_OK) {
            peer_.ep = nullptr;
            return error{"cannot accept the sender at " + peer_.name + ": " + ucx_why(s)};
        }
        return {};
    }

    result<void> authenticate() {
        GHOST_TRY(n_.recv(auth_op_, &auth_, sizeof auth_, k_auth, ~0ULL));
        std::memcpy(hello_.proto, protocol, sizeof protocol);
        if (!random_nonce(hello_.nonce)) return sys_error("cannot get random bytes");
        hello_.chunk = env_size("GHOST_UCX_CHUNK", default_chunk, 4096, max_chunk);
        GHOST_TRY(n_.send(peer_.ep, ctl_send_, &hello_, sizeof hello_, k_hello));
        auto lost = [&]() -> result<void> {
            if (peer_.failed != UCS_OK)
                return error{"the sender at " + peer_.name +
                             " left before it authenticated: " + ucx_why(peer_.failed)};
            return {};
        };
        GHOST_TRY(n_.wait([&] { return auth_op_.done; }, lost, 10000,
                          "the sender at " + peer_.name + " did not authenticate within 10 s"));
        uint8_t mac[mac_len];
        prove(opt_.secret, "sender", hello_.nonce, auth_.nonce, mac);
        if (auth_op_.status != UCS_OK || std::memcmp(auth_.proto, protocol, sizeof protocol) ||
            CRYPTO_memcmp(mac, auth_.mac, mac_len) != 0) {
            error e{"refused the sender at " + peer_.name + ": it does not know the secret"};
            refuse("wrong secret");
            return e;
        }
        return {};
    }

    result<void> send_auth_ok() {
        auth_ok_msg ok{};
        prove(opt_.secret, "receiver", hello_.nonce, auth_.nonce, ok.mac);
        op o;
        GHOST_TRY(n_.send(peer_.ep, o, &ok, sizeof ok, k_auth_ok));
        auto r = n_.wait([&] { return o.done; },
                         [&]() -> result<void> {
                             if (peer_.failed != UCS_OK)
                                 return error{"the sender at " + peer_.name + " left"};
                             return {};
                         },
                         10000, "cannot answer the sender at " + peer_.name);
        n_.cancel(o);
        return r;
    }

    ucx_receive_options opt_;
    node n_;
    peer peer_;
    listener_state l_;
    hello_msg hello_{};
    auth_msg auth_{};
    verdict_msg verdict_{};
    op auth_op_, ctl_send_, abort_op_;
    uint64_t abort_msg_ = 0;
    std::unique_ptr<stream_source> src_;
    ucx_address bound_;
    bool received_ = false;   // receive() ran: the next one resets the connection's state
    char *staging_ = nullptr; // the network buffers, made once
};

} // namespace

std::string ucx_address::str() const {
    if (host.find(':') != std::string::npos) return "[" + host + "]:" + std::to_string(port);
    return host + ":" + std::to_string(port);
}

result<ucx_address> parse_ucx_address(const std::string &text, bool allow_any_port) {
    std::string s = text;
    if (s.rfind("ucx://", 0) == 0) s = s.substr(6);
    while (!s.empty() && s.back() == '/')
        s.pop_back();
    ucx_address a;
    std::string port;
    if (!s.empty() && s[0] == '[') {
        size_t close = s.find(']');
        if (close == std::string::npos || close + 1 >= s.size() || s[close + 1] != ':')
            return error{"'" + text + "' is not HOST:PORT"};
        a.host = s.substr(1, close - 1);
        port = s.substr(close + 2);
    } else {
        size_t colon = s.rfind(':');
        if (colon == std::string::npos || colon == 0 || s.find(':') != colon)
            return error{"'" + text + "' is not HOST:PORT"};
        a.host = s.substr(0, colon);
        port = s.substr(colon + 1);
    }
    char *end = nullptr;
    long p = port.empty() ? -1 : std::strtol(port.c_str(), &end, 10);
    if (port.empty() || *end || p < (allow_any_port ? 0 : 1) || p > 65535)
        return error{"'" + text + "' has no valid port"};
    a.port = (uint16_t)p;
    return a;
}

result<std::string> read_ucx_secret(const std::string &file, const std::string &fallback) {
    std::string secret;
    if (!file.empty()) {
        struct stat sb;
        if (::stat(file.c_str(), &sb) != 0) return sys_error("cannot read secret file " + file);
        if (sb.st_mode & 077)
            return error{"secret file " + file + " is readable by other users (chmod 600 it)"};
        std::ifstream in(file, std::ios::binary);
        if (!in) return sys_error("cannot read secret file " + file);
        std::stringstream ss;
        ss << in.rdbuf();
        secret = ss.str();
        while (!secret.empty() && std::isspace((unsigned char)secret.back()))
            secret.pop_back();
        if (secret.empty()) return error{"secret file " + file + " is empty"};
        return secret;
    }
    if (const char *env = std::getenv("GHOST_JOB_SECRET"); env && *env) return std::string(env);
    if (!fallback.empty()) return fallback;
    return error{"no secret: give --secret-file FILE or set GHOST_JOB_SECRET"};
}

result<std::unique_ptr<sink>> connect_ucx_sink(const ucx_address &to, const std::string &secret,
                                               const ucx_sink_options &opt) {
    auto s = std::make_unique<ucx_sink>(to, opt);
    GHOST_TRY(s->connect(secret));
    return std::unique_ptr<sink>(std::move(s));
}

result<ucx_received> receive_ucx_image(const ucx_receive_options &opt, sink &out) {
    receiver r(opt);
    auto got = r.run(out);
    if (!got) out.abort(); // (idempotent) also where it failed before any data
    return got;
}

class ucx_receiver_impl : public receiver {
    using receiver::receiver;
};

ucx_image_receiver::ucx_image_receiver(const ucx_receive_options &opt)
    : impl_(std::make_unique<ucx_receiver_impl>(opt)) {}
ucx_image_receiver::~ucx_image_receiver() = default;
result<ucx_address> ucx_image_receiver::listen() {
    return impl_->start();
}
result<ucx_received> ucx_image_receiver::receive(sink &out) {
    auto got = impl_->receive(out);
    if (!got) out.abort();
    return got;
}

} // namespace ghost::res
