// SPDX-License-Identifier: Apache-2.0
// One error type for host-side code: a one-line message that names the action, the object and the
// cause ("cannot read memory 0x7f..-0x7f.. of pid 42: bad address"). Decided where the error is
// first seen; callers add nothing but may prefix context.
#pragma once

#include <cerrno>
#include <cstring>
#include <string>
#include <utility>
#include <variant>

namespace ghost {

struct error {
    std::string message;
    int sys_errno = 0;
};

// `what` + ": " + strerror(err)
inline error sys_error(std::string what, int err = errno) {
    return error{std::move(what) + ": " + std::strerror(err), err};
}

template <class T> class [[nodiscard]] result {
  public:
    result(T value) : v_(std::move(value)) {}
    result(error e) : v_(std::move(e)) {}
    bool ok() const { return v_.index() == 0; }
    explicit operator bool() const { return ok(); }
    T &value() { return std::get<0>(v_); }
    const T &value() const { return std::get<0>(v_); }
    T *operator->() { return &value(); }
    T &operator*() { return value(); }
    const error &err() const { return std::get<1>(v_); }

  private:
    std::variant<T, error> v_;
};

template <> class [[nodiscard]] result<void> {
  public:
    result() = default;
    result(error e) : e_(std::move(e)), failed_(true) {}
    bool ok() const { return !failed_; }
    explicit operator bool() const { return ok(); }
    const error &err() const { return e_; }

  private:
    error e_;
    bool failed_ = false;
};

#define GHOST_TRY(expr)                                                                            \
    do {                                                                                           \
        auto ghost_try_r_ = (expr);                                                                \
        if (!ghost_try_r_) return ghost_try_r_.err();                                              \
    } while (0)

} // namespace ghost
