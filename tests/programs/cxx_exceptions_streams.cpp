// SPDX-License-Identifier: Apache-2.0
// C++ runtime state across a checkpoint:
//  * exceptions thrown and caught every step through call chains of varying depth with RAII
//    guards (std::runtime_error, a custom type, int, std::out_of_range from vector::at, rethrow,
//    std::exception_ptr, std::throw_with_nested), in the main thread and concurrently in a worker
//    thread that hands some of its exceptions to the main thread as std::exception_ptr;
//  * std::cout with persistent formatting state (hex, showbase, fill, width) and
//    sync_with_stdio(false), so its buffer is the iostream's own;
//  * a std::stringstream accumulating text, checked against an independently kept hash/length;
//  * a std::ofstream to a file in --dir, flushed now and then, re-read with std::ifstream at the
//  end.
#include "common.h"

#include <atomic>
#include <condition_variable>
#include <deque>
#include <exception>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <map>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace {

std::atomic<long> g_live{0}; // RAII guards alive right now
thread_local long t_constructed = 0;
thread_local long t_destroyed = 0;

struct Guard {
    explicit Guard(uint64_t v) : value(v) {
        g_live++;
        t_constructed++;
    }
    ~Guard() {
        g_live--;
        t_destroyed++;
    }
    Guard(const Guard &) = delete;
    Guard &operator=(const Guard &) = delete;
    uint64_t value;
};

struct Custom {
    uint64_t step;
    std::string text;
};

[[noreturn]] void fail(const std::string &why) {
    std::cout << std::flush;
    t_fail("%s", why.c_str());
}

// Throws the step's kind of exception from `depth` frames down.
uint64_t dive(uint64_t step, int depth, int kind) {
    Guard g(step + (uint64_t)depth);
    if (depth > 0) return dive(step, depth - 1, kind) + g.value;
    switch (kind) {
    case 0:
        throw std::runtime_error("runtime " + std::to_string(step));
    case 1:
        throw Custom{step, "custom-" + std::to_string(step * 3)};
    case 2:
        throw(int)(step % 100000);
    case 3: {
        std::vector<int> v(3);
        return (uint64_t)v.at(step % 7 + 3); // always out of range
    }
    case 4:
        try {
            throw std::logic_error("inner " + std::to_string(step));
        } catch (...) {
            std::throw_with_nested(std::runtime_error("outer " + std::to_string(step)));
        }
    default:
        try {
            throw Custom{step, "rethrown"};
        } catch (Custom &c) {
            c.step += 1;
            throw; // the same object, modified
        }
    }
}

// One round: returns a value that depends only on the step.
uint64_t round_trip(uint64_t step) {
    const int kind = (int)(step % 6);
    const int depth = (int)(step % 9);
    uint64_t seen = 0;
    try {
        dive(step, depth, kind);
        fail("no exception at step " + std::to_string(step));
    } catch (const std::out_of_range &e) {
        if (kind != 3) fail("unexpected out_of_range");
        seen = 3;
    } catch (const Custom &c) {
        if (kind == 1 && (c.step != step || c.text != "custom-" + std::to_string(step * 3)))
            fail("custom exception payload wrong");
        if (kind == 5 && (c.step != step + 1 || c.text != "rethrown"))
            fail("rethrown payload wrong");
        if (kind != 1 && kind != 5) fail("unexpected Custom");
        seen = c.step;
    } catch (int v) {
        if (kind != 2 || (uint64_t)v != step % 100000) fail("int exception wrong");
        seen = (uint64_t)v;
    } catch (const std::runtime_error &e) {
        if (kind == 0) {
            if (e.what() != "runtime " + std::to_string(step)) fail("runtime_error message wrong");
            seen = std::string(e.what()).size();
        } else if (kind == 4) {
            if (e.what() != "outer " + std::to_string(step)) fail("nested outer message wrong");
            try {
                std::rethrow_if_nested(e);
                fail("nested exception missing");
            } catch (const std::logic_error &inner) {
                if (inner.what() != "inner " + std::to_string(step))
                    fail("nested inner message wrong");
                seen = 44;
            }
        } else {
            fail("unexpected runtime_error");
        }
    }
    return t_mix64(seen ^ step);
}

std::mutex g_mu;
std::condition_variable g_cv;
std::deque<std::pair<uint64_t, std::exception_ptr>> g_queue;
bool g_worker_done = false;

void worker(uint64_t steps) {
    for (uint64_t i = 0; i < steps; i++) {
        uint64_t step = i * 7 + 1;
        round_trip(step);
        if (i % 16 == 0) {
            std::exception_ptr p;
            try {
                dive(step, (int)(i % 5), 1);
            } catch (...) {
                p = std::current_exception();
            }
            std::lock_guard lk(g_mu);
            g_queue.emplace_back(step, p);
            g_cv.notify_one();
        }
    }
    if (t_constructed != t_destroyed) fail("worker: RAII guards leaked");
    std::lock_guard lk(g_mu);
    g_worker_done = true;
    g_cv.notify_one();
}

uint64_t drain(bool wait_all) {
    uint64_t n = 0;
    std::unique_lock lk(g_mu);
    for (;;) {
        while (!g_queue.empty()) {
            auto [step, p] = g_queue.front();
            g_queue.pop_front();
            lk.unlock();
            try {
                std::rethrow_exception(p);
            } catch (const Custom &c) {
                if (c.step != step) fail("exception_ptr from the worker carries a wrong step");
            }
            n++;
            lk.lock();
        }
        if (!wait_all || g_worker_done) return n;
        g_cv.wait(lk);
    }
}

} // namespace

int main(int argc, char **argv) {
    t_init("cxx_exceptions_streams");
    static const char *const known[] = {"--dir", "--steps", nullptr};
    const char *usage = "--dir DIR [--steps N]";
    t_check_args(argc, argv, known, usage);
    const char *dir = t_opt_str(argc, argv, "--dir", nullptr);
    const uint64_t steps = t_opt_u64(argc, argv, "--steps", 200000);
    if (!dir || steps < 10) t_usage(usage);

    std::ios::sync_with_stdio(false);
    std::cout << "cxx_exceptions_streams steps=" << steps << "\n" << std::flush;
    std::cout << std::hex << std::showbase << std::internal << std::setfill('0');
    const auto want_flags = std::cout.flags();

    const std::string path = std::string(dir) + "/stream_out.txt";
    std::ofstream out(path, std::ios::out | std::ios::trunc);
    if (!out) fail("cannot create " + path);

    const uint64_t worker_steps = steps / 4;
    std::thread th(worker, worker_steps);

    std::stringstream ss;
    uint64_t ss_len = 0, ss_hash = T_FNV_INIT, acc = 0, from_worker = 0;
    std::map<uint64_t, std::string> recent;
    for (uint64_t s = 0; s < steps; s++) {
        uint64_t v = round_trip(s);
        acc ^= v;
        // Appended piece by piece: GCC 12 warns falsely (-Wrestrict, its bug 105329) about
        // `"literal" + std::string&&` at -O3.
        std::string piece = "s";
        piece += std::to_string(s);
        piece += ':';
        piece += std::to_string(v % 1000);
        piece += ';';
        ss << piece;
        ss_len += piece.size();
        ss_hash = t_fnv1a(ss_hash, piece.data(), piece.size());
        recent[s % 97] = piece;

        out << "line " << s << ' ' << (v % 100000) << '\n';
        if (s % 101 == 100) out.flush();
        if (!out) fail("ofstream write failed");

        if (s % 512 == 0) {
            const std::string all = ss.str();
            if (all.size() != ss_len) fail("stringstream length changed");
            if (t_fnv1a(T_FNV_INIT, all.data(), all.size()) != ss_hash)
                fail("stringstream content changed");
            if (all.compare(all.size() - piece.size(), piece.size(), piece) != 0)
                fail("stringstream tail wrong");
            if (std::cout.flags() != want_flags || std::cout.fill() != '0')
                fail("std::cout formatting state changed");
            if (t_constructed != t_destroyed) fail("main: RAII guards leaked");
            from_worker += drain(false);
        }
        if ((s + 1) % (steps / 10) == 0)
            std::cout << "step " << std::dec << (s + 1) << std::hex << " acc=" << std::setw(18)
                      << acc << " ss=" << std::setw(18) << ss_hash << '\n'
                      << std::flush;
    }
    from_worker += drain(true);
    th.join();
    if (from_worker != (worker_steps + 15) / 16)
        fail("received " + std::to_string(from_worker) + " exception_ptrs from the worker");
    if (g_live != 0) fail("RAII guards alive at the end");

    // std::istringstream over the accumulated text: parse it back.
    std::istringstream in(ss.str());
    std::string tok;
    uint64_t parsed = 0;
    while (std::getline(in, tok, ';')) {
        std::string want = "s"; // (appended: the same GCC 12 false warning as above)
        want += std::to_string(parsed);
        want += tok.substr(tok.find(':'));
        if (tok != want) fail("parse back failed");
        parsed++;
    }
    if (parsed != steps) fail("parsed " + std::to_string(parsed) + " pieces");

    out.close();
    if (!out) fail("ofstream close failed");
    std::ifstream back(path);
    std::string line;
    uint64_t n = 0;
    while (std::getline(back, line)) {
        const uint64_t v = round_trip(n);
        if (line != "line " + std::to_string(n) + " " + std::to_string(v % 100000))
            fail("stream_out.txt line " + std::to_string(n) + " wrong: " + line);
        n++;
    }
    if (n != steps) fail("stream_out.txt has " + std::to_string(n) + " lines");

    std::cout << std::dec << "exceptions ok steps=" << steps << " worker=" << worker_steps
              << " pieces=" << parsed << " recent=" << recent.size() << '\n'
              << std::flush;
    t_gate();
    std::cout << "PASS " << t_name << std::endl;
    return 0;
}
