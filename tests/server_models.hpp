// Test-only models of how an API server may count a limit: fixed window,
// sliding log, sliding-window counter, token bucket, GCRA with burst 1.
#ifndef TOLLGATE_TESTS_SERVER_MODELS_HPP
#define TOLLGATE_TESTS_SERVER_MODELS_HPP

#include "support.hpp"

#include <map>
#include <memory>

namespace tgtest {
namespace servers {

struct server {
  virtual ~server() = default;
  virtual bool accept(std::int64_t t, std::uint64_t n) = 0;
};

inline std::int64_t floor_div(std::int64_t a, std::int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

// Fixed window aligned at `phase`: at most L per [phase + kW, phase + (k+1)W).
struct fixed_window_server : server {
  std::uint64_t limit;
  std::int64_t window, phase;
  std::map<std::int64_t, std::uint64_t> used;
  fixed_window_server(std::uint64_t l, std::int64_t w, std::int64_t p) : limit(l), window(w), phase(p) {}
  bool accept(std::int64_t t, std::uint64_t n) override {
    std::uint64_t& u = used[floor_div(t - phase, window)];
    if (u + n > limit) return false;
    u += n;
    return true;
  }
};

// Sliding log: at most L in any (t - W, t].
struct sliding_log_server : server {
  tgtest::sliding_log log;
  sliding_log_server(std::uint64_t l, std::int64_t w) : log(l, w) {}
  bool accept(std::int64_t t, std::uint64_t n) override { return log.try_take(n, t); }
};

// Sliding-window counter as HAProxy's stick-table rate and Cloudflare do it:
// integer millisecond ticks, two fixed periods, the previous one weighted by
// the part of it still inside the window (compared exactly, without the
// rounding down an integer implementation may add). Every request seen is
// counted, rejected or not.
struct window_counter_server : server {
  std::uint64_t limit;
  std::int64_t period_ms, phase;
  std::int64_t start = 0;
  bool started = false;
  std::uint64_t curr = 0, prev = 0;
  window_counter_server(std::uint64_t l, std::int64_t w, std::int64_t p)
      : limit(l), period_ms(w / 1000000), phase(p) {}
  bool accept(std::int64_t t, std::uint64_t n) override {
    const std::int64_t ms = floor_div(t - phase, 1000000);
    if (!started) {
      start = floor_div(ms, period_ms) * period_ms;
      started = true;
    }
    if (ms >= start + period_ms) {
      const std::int64_t k = (ms - start) / period_ms;
      prev = k == 1 ? curr : 0;
      curr = 0;
      start += k * period_ms;
    }
    curr += n;
    // estimate = curr + prev * (P - elapsed) / P, compared without rounding.
    const std::int64_t elapsed = ms - start;
    const i128 scaled = static_cast<i128>(curr) * period_ms + static_cast<i128>(prev) * (period_ms - elapsed);
    return scaled <= static_cast<i128>(limit) * period_ms;
  }
};

// Token bucket: capacity L, refilled continuously at L per W, starts full.
struct bucket_server : server {
  tgtest::rational_bucket b;
  bucket_server(std::uint64_t l, std::int64_t w, std::int64_t t0) : b(l, static_cast<std::uint64_t>(w), l, t0) {}
  bool accept(std::int64_t t, std::uint64_t n) override { return b.try_take(n, t); }
};

// GCRA with burst 1: a request is accepted only when the previous one's
// emission time (n * W / L after it) has passed: perfectly even spacing.
struct gcra1_server : server {
  std::uint64_t limit;
  std::int64_t window;
  i128 tat_scaled;  // theoretical arrival time * L
  gcra1_server(std::uint64_t l, std::int64_t w, std::int64_t t0)
      : limit(l), window(w), tat_scaled(static_cast<i128>(t0) * l) {}
  bool accept(std::int64_t t, std::uint64_t n) override {
    const i128 now = static_cast<i128>(t) * limit;
    if (tat_scaled > now) return false;
    tat_scaled = now + static_cast<i128>(n) * window;
    return true;
  }
};

inline const char* const server_names[] = {"fixed window", "sliding log", "sliding-window counter", "token bucket",
                                    "GCRA burst 1"};
constexpr int server_count = 5;

// A server whose windows (fixed, counter) start at `phase` + kW; the bucket
// and GCRA servers start full / idle at -phase.
inline std::unique_ptr<server> make_server_at(int kind, std::uint64_t l, std::int64_t w, std::int64_t phase) {
  switch (kind) {
    case 0: return std::make_unique<fixed_window_server>(l, w, phase);
    case 1: return std::make_unique<sliding_log_server>(l, w);
    case 2: return std::make_unique<window_counter_server>(l, w, phase);
    case 3: return std::make_unique<bucket_server>(l, w, -phase);
    default: return std::make_unique<gcra1_server>(l, w, -phase);
  }
}

inline std::unique_ptr<server> make_server(int kind, std::uint64_t l, std::int64_t w, tgtest::rng& g) {
  return make_server_at(kind, l, w, static_cast<std::int64_t>(g.between(0, static_cast<std::uint64_t>(w))));
}

}  // namespace servers
}  // namespace tgtest

#endif
