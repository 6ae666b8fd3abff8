// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// adaptive_concurrency.hpp: a concurrency limit that follows the server's
// real one when that is lower than the configured limit (a plan's cap, an
// overloaded backend, other clients on the same key).
//
// The rule (AIMD; the pure functions below, applied to three words):
//   decrease: on a signal (shrinks_concurrency: a concurrency 429, Kimi
//     Code's 403 concurrent-request limit, an overload, a 503 or 529) the
//     limit drops to max(floor, floor(limit * 9 / 10)) = d,
//     once per round: a later signal drops it again only once
//     max(in flight at the drop, d) requests have been admitted since the
//     drop (admissions, which the account counts anyway, rather than
//     releases, which it would have to count on every settle). So the 429s
//     of one burst cost one drop whenever fewer than d admissions come
//     between its first and its last answer fed back, in whatever order its
//     leases were settled (settled first, none is in flight at the drop);
//     a signal with no admission since the last drop never drops again;
//   increase: a success (a lease settled with its usage) while at least
//     half the limit is in flight adds 1 / limit: one more per `limit` such
//     successes, about one per round; never above the configured limit.
//     Back into a limit that was dropped from, it waits `patience` rounds
//     (1, then 2 after repeated drops from the same limit; reset once
//     the limit holds there), so a cap that stays put is probed every few
//     rounds rather than every round;
//   latency never changes it (LLM latency grows with output length; there is
//     no latency input).
//
// Bound (tests/test_learn.cpp, against a simulated server whose cap H is
// hidden and changes mid-run, with a client that keeps the limit in use):
// within 20 rounds of a change the limit stays within 10 % of H for H >= 10
// (it saws between about 9/10 (H + 1) and H + 1), and each drop follows one
// round's excess: the 429s are counted (adaptive_view, and the caller's own
// count); once settled, about one probe above H per 0.1 H + 2 rounds.
// The limit never leaves [floor, configured].
//
// Concurrency. Lock-free: each step is one CAS loop on one word (the limit
// and its growth credit packed in 64 bits) plus relaxed counters; every word
// is a lone value (relaxed: no other data is published through it). The
// account applies the limit to its concurrency_limiter after each change and
// re-reads it, so racing changes end with the limiter at the latest value.
// The words are plain integers: a shared region or a server-side script can
// hold them and apply the same functions; today only the in-process
// account does, and a snapshot does not keep them (a restored account starts
// again at its configured limit).
#ifndef TOLLGATE_ADAPTIVE_CONCURRENCY_HPP
#define TOLLGATE_ADAPTIVE_CONCURRENCY_HPP

#include <tollgate/config.hpp>
#include <tollgate/detail/arith.hpp>
#include <tollgate/detail/atomic.hpp>
#include <tollgate/error.hpp>
#include <tollgate/http.hpp>

#include <cstdint>
#include <optional>

TOLLGATE_BEGIN_NAMESPACE

namespace account_policy {

// Whether an answer says the server holds fewer requests in flight than
// the account sends (the classifier's answers as they are).
constexpr bool shrinks_concurrency(const error_info& e) noexcept {
  return e.kind == error_kind::concurrency || e.kind == error_kind::plan_concurrency ||
         e.kind == error_kind::overloaded || (e.kind == error_kind::server_error && (e.status == 503 || e.status == 529));
}

// The limit after a drop.
constexpr std::uint64_t aimd_decreased(std::uint64_t limit, std::uint64_t floor) noexcept {
  if (limit <= floor) return floor;  // at the floor it stays
  const std::uint64_t down = limit / 10 * 9 + limit % 10 * 9 / 10;  // floor(limit * 9 / 10) < limit, no overflow
  return down < floor ? floor : down;
}

// The limit and growth credit after a success (credit counts successes
// towards the next +1).
struct aimd_state {
  std::uint64_t limit = 0;
  std::uint64_t credit = 0;
};
// `patience`: rounds to wait before growing into the limit last dropped
// from (`failed`; 0: none).
constexpr aimd_state aimd_grown(aimd_state s, std::uint64_t max, std::uint64_t failed = 0,
                                std::uint64_t patience = 1) noexcept {
  if (s.limit >= max) return aimd_state{max, 0};
  const std::uint64_t need = s.limit + 1 == failed && patience > 1 ? detail::sat_mul(s.limit, patience) : s.limit;
  if (s.credit + 1 >= need) return aimd_state{s.limit + 1, 0};
  return aimd_state{s.limit, s.credit + 1};
}
// The patience after a drop from `limit`, given the last drop's limit and
// patience: longer when the same limit fails again.
constexpr std::uint64_t aimd_patience(std::uint64_t limit, std::uint64_t failed, std::uint64_t patience) noexcept {
  if (limit != failed) return 1;
  return patience >= 2 ? 2 : patience + 1;
}
// Whether a success at `in_flight` (counting itself) grows the limit.
constexpr bool aimd_grows(std::uint64_t in_flight, std::uint64_t limit) noexcept {
  return in_flight >= limit / 2 + limit % 2;
}

}  // namespace account_policy

// What the adaptive limit has done (account::adaptive()).
struct adaptive_view {
  std::uint64_t limit = 0;     // in force
  std::uint64_t drops = 0;     // multiplicative decreases
  std::uint64_t signals = 0;   // answers that asked for one (a burst's many count once as a drop)
  std::uint64_t rises = 0;     // additive increases
};

namespace detail {

class adaptive_concurrency {
 public:
  static constexpr std::uint64_t max_limit = 0xFFFFFFFFULL;  // the limit fits 32 bits (concurrency.hpp's too)

  bool on() const noexcept { return on_; }

  // `floor` must be 1 .. max (errc::zero_count, errc::too_large).
  errc init(std::uint64_t max, std::uint64_t floor) noexcept {
    if (floor == 0 || max == 0) return errc::zero_count;
    if (max > max_limit || floor > max) return errc::too_large;
    on_ = true;
    floor_ = floor;
    max_.store(max, std::memory_order_relaxed);   // relaxed: construction precedes sharing
    word_.store(pack(max, 0), std::memory_order_relaxed);
    return errc::ok;
  }

  std::uint64_t limit() const noexcept { return word_.load(std::memory_order_relaxed) >> 32; }  // relaxed: a lone value

  // A signal with `in_flight` leases out, after `admitted` admissions in
  // all: the new limit if it dropped.
  std::optional<std::uint64_t> on_signal(std::uint64_t in_flight, std::uint64_t admitted) noexcept {
    signals_.fetch_add(1, std::memory_order_relaxed);  // relaxed: a counter
    // relaxed: a lone value; the CAS makes one signal per round the dropper.
    std::uint64_t end = round_end_.load(std::memory_order_relaxed);
    if (admitted < end) return std::nullopt;
    // The round: the larger of the leases out and the limit after the drop.
    // The answers of a burst are settled before they are fed back, so the
    // leases out alone can be none while the burst's answers keep coming.
    const std::uint64_t after = account_policy::aimd_decreased(limit(), floor_);
    if (!round_end_.compare_exchange_strong(end, detail::sat_add(admitted, in_flight > after ? in_flight : after),
                                            std::memory_order_relaxed, std::memory_order_relaxed))
      return std::nullopt;
    std::uint64_t w = word_.load(std::memory_order_relaxed);  // relaxed: a lone value
    for (;;) {
      const std::uint64_t l = w >> 32, d = account_policy::aimd_decreased(l, floor_);
      if (d == l) return std::nullopt;
      // relaxed: a lone value (the limiter gets it from the caller).
      if (word_.compare_exchange_weak(w, pack(d, 0), std::memory_order_relaxed, std::memory_order_relaxed)) {
        drops_.fetch_add(1, std::memory_order_relaxed);  // relaxed: a counter
        // relaxed: a lone value; one dropper per round writes it.
        const std::uint64_t f = failed_.load(std::memory_order_relaxed);
        failed_.store(pack(l, account_policy::aimd_patience(l, f >> 32, f & 0xFFFFFFFFULL)), std::memory_order_relaxed);
        return d;
      }
    }
  }

  // A success with `in_flight` leases out (itself included): the new limit
  // if it grew.
  std::optional<std::uint64_t> on_success(std::uint64_t in_flight) noexcept {
    const std::uint64_t max = max_.load(std::memory_order_relaxed);  // relaxed: a lone value
    std::uint64_t w = word_.load(std::memory_order_relaxed);         // relaxed: a lone value
    const std::uint64_t f = failed_.load(std::memory_order_relaxed);  // relaxed: a lone value
    for (;;) {
      const account_policy::aimd_state s{w >> 32, w & 0xFFFFFFFFULL};
      if (!account_policy::aimd_grows(in_flight, s.limit) || s.limit >= max) return std::nullopt;
      // At the limit last dropped from and holding: the cap moved, forget it.
      if (s.limit == f >> 32) failed_.store(0, std::memory_order_relaxed);  // relaxed: a lone value
      const account_policy::aimd_state g = account_policy::aimd_grown(s, max, f >> 32, f & 0xFFFFFFFFULL);
      // relaxed: a lone value.
      if (word_.compare_exchange_weak(w, pack(g.limit, g.credit), std::memory_order_relaxed, std::memory_order_relaxed)) {
        if (g.limit == s.limit) return std::nullopt;
        rises_.fetch_add(1, std::memory_order_relaxed);  // relaxed: a counter
        return g.limit;
      }
    }
  }

  // A new configured limit (set_limits): the limit in force is cut to it.
  errc set_max(std::uint64_t max) noexcept {
    if (max == 0) return errc::zero_count;
    if (max > max_limit) return errc::too_large;
    max_.store(max, std::memory_order_relaxed);  // relaxed: a lone value
    std::uint64_t w = word_.load(std::memory_order_relaxed);
    for (;;) {
      const std::uint64_t l = w >> 32;
      const std::uint64_t f = floor_ < max ? floor_ : max;
      const std::uint64_t n = l > max ? max : l < f ? f : l;
      // relaxed: a lone value.
      if (n == l || word_.compare_exchange_weak(w, pack(n, 0), std::memory_order_relaxed, std::memory_order_relaxed)) break;
    }
    return errc::ok;
  }

  adaptive_view view() const noexcept {
    adaptive_view v;
    v.limit = limit();
    // relaxed: counters.
    v.drops = drops_.load(std::memory_order_relaxed);
    v.signals = signals_.load(std::memory_order_relaxed);
    v.rises = rises_.load(std::memory_order_relaxed);
    return v;
  }

 private:
  static constexpr std::uint64_t pack(std::uint64_t limit, std::uint64_t credit) noexcept {
    return limit << 32 | (credit & 0xFFFFFFFFULL);
  }

  bool on_ = false;
  std::uint64_t floor_ = 1;
  detail::atomic<std::uint64_t> max_{0};
  detail::atomic<std::uint64_t> word_{0};       // limit << 32 | growth credit
  detail::atomic<std::uint64_t> round_end_{0};  // the next drop waits until the admissions reach this
  detail::atomic<std::uint64_t> failed_{0};     // the limit last dropped from << 32 | patience (rounds)
  detail::atomic<std::uint64_t> drops_{0}, signals_{0}, rises_{0};
};

}  // namespace detail

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_ADAPTIVE_CONCURRENCY_HPP
