// SPDX-License-Identifier: Apache-2.0
// Images over the network with UCX (tag messages; UCX picks the transport: RDMA where the fabric
// has it, TCP or shared memory here). A sender's sink connects to a receiver that listens on an
// address, both prove that they hold the same secret, the sink streams the image while the export
// runs (nothing is staged in a file), and the receiver verifies every record as it arrives
// (ghost-core/image_reader.h) and passes the verified bytes on to a sink of its own (an image file,
// the restorer). The sender's commit() returns once the receiver has the whole image verified and
// made durable (or restored): see README.md for the protocol.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "ghost-core/image_reader.h"
#include "ghost-core/resource.h"

namespace ghost::res {

struct ucx_address {
    std::string host; // a name or a numeric address (IPv6 in brackets on the command line)
    uint16_t port = 0;
    std::string str() const;
};

// "HOST:PORT" or "[V6ADDR]:PORT" (an optional "ucx://" in front). Port 0 is allowed only where
// `allow_any_port` (a receiver that lets the kernel pick).
result<ucx_address> parse_ucx_address(const std::string &text, bool allow_any_port = false);

// The shared secret: the contents of `file` (trailing white space dropped; the file must not be
// readable by other users), else $GHOST_JOB_SECRET, else `fallback` (e.g. the process's own
// GHOST_JOB_SECRET). An error when there is none.
result<std::string> read_ucx_secret(const std::string &file, const std::string &fallback = {});

struct ucx_sink_options {
    int connect_timeout_ms = 10000; // connection and handshake
    int idle_timeout_ms = 30000;    // no progress on a send for this long: the receiver is gone
    // commit: the receiver checks the end and makes the image durable (or restores it). Records
    // are verified as they arrive, so what is left is bounded by the image's size: 0 waits the
    // idle timeout plus 10 s per GiB sent (a receiver that stopped after the last byte, or froze,
    // must not hold the sender, and a live migration's quiescent job, for minutes).
    int verdict_timeout_ms = 0;
};

// Connects and authenticates now (before any process is parked): an unreachable receiver or a
// wrong secret fails here.
result<std::unique_ptr<sink>> connect_ucx_sink(const ucx_address &to, const std::string &secret,
                                               const ucx_sink_options &opt = {});

struct ucx_receive_options {
    ucx_address listen;
    std::string secret;
    int accept_timeout_ms = 600000; // waiting for a sender
    int idle_timeout_ms = 30000;    // waiting for the next piece of the stream
    // Called once the listener is bound (the port the kernel picked when listen.port was 0).
    std::function<void(const ucx_address &bound)> on_listening;
};

struct ucx_received {
    core::image_summary summary;
    std::string peer;   // the sender's address
    double seconds = 0; // from the first data to the verdict
};

// Accepts one sender, receives one image and writes it to `out` (each piece once every record in
// it has been verified), then commits `out`; the sender's commit() gets the result. A failure
// (wrong secret, corrupt record, the sender gone, a timeout, out's commit) aborts `out` and is
// reported to the sender if it is still there.
result<ucx_received> receive_ucx_image(const ucx_receive_options &opt, sink &out);

// The same for several images one after the other on one listener (a live migration's pre-copy,
// then the image taken after it): listen() once, then receive() for each sender in turn.
class ucx_receiver_impl;
class ucx_image_receiver {
  public:
    explicit ucx_image_receiver(const ucx_receive_options &opt);
    ~ucx_image_receiver();
    result<ucx_address> listen(); // (calls opt.on_listening)
    result<ucx_received> receive(sink &out);

  private:
    std::unique_ptr<ucx_receiver_impl> impl_;
};

} // namespace ghost::res
