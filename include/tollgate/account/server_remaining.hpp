// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// account/server_remaining.hpp: the server's rate-limit headers as ground
// truth (account_config::trust_rate_limit_headers).
//
// The rule. A response carrying x-ratelimit-remaining-requests R and
// x-ratelimit-reset-requests T (and the same for tokens) says: until now + T
// the server admits at most R more requests, from anyone on the key. The
// account then admits at most R more before now + T, on top of its own
// limits (it never loosens them: its own count still decides where it is
// stricter), for each dimension the headers state, whether the account
// enforces a limit of its own there or not (with no RPM or TPM configured
// the headers are the only rate limit it knows). A snapshot (format 3)
// carries the gates: an account restored from it admits within each gate
// at most its remainder at the snapshot, until the gate's end less the
// wall-clock time restore() is told has passed since (like every count
// there; admissions after the snapshot are in no snapshot). A gate already
// in force is combined with the new one: the later
// end and the smaller remainder, so a response that arrives late never
// loosens it. Another client on the same key then costs throughput, not
// 429s: a 429 (which carries the headers too) closes the gate until the
// reset. Reading T as the time until the first unit comes back is exact for
// a sliding window; a server whose reset means "until the window is empty"
// makes the gate stricter than needed, never looser.
//
// The account's own requests in flight. R was counted before the account's
// own requests still unanswered when the response is observed (admitted,
// neither settled nor dropped) may reach the server: the gate takes R less
// them (and the tokens they reserved), so that they are not counted twice as
// free. Some of them may have reached the server before the answered one
// (R counts those already): the gate is then that many units stricter than
// needed, never looser; among them is the answered request itself when its
// response is observed before its lease is settled (settle first to spare
// that one).
//
// Bound (tests/test_learn.cpp, a sliding-log server shared with a hidden
// client that takes a share of its limit): requests the account admits
// within a gate never exceed its remainder less its own requests in flight
// at the response; 429s come only from units the other client took after
// the last response the account saw (and from requests admitted before the
// account saw any response: they pass no gate).
//
// Contract. Pure combination (tightened); the state is two words per
// dimension (the gate's end, relaxed, and its remainder, taken by CAS),
// address-free. Taking is lock-free (one CAS loop); an admission refused
// later gives its units back. Observations that race may leave the looser
// of the two racing gates (each store is one word).
#ifndef TOLLGATE_ACCOUNT_SERVER_REMAINING_HPP
#define TOLLGATE_ACCOUNT_SERVER_REMAINING_HPP

#include <tollgate/config.hpp>
#include <tollgate/clock.hpp>
#include <tollgate/decision.hpp>
#include <tollgate/detail/arith.hpp>
#include <tollgate/detail/atomic.hpp>
#include <tollgate/http.hpp>

#include <cstdint>
#include <limits>
#include <optional>

TOLLGATE_BEGIN_NAMESPACE

namespace account_policy {

// At most `left` more until `until` (a time in ns).
struct remaining_gate {
  std::int64_t until = std::numeric_limits<std::int64_t>::min();
  std::uint64_t left = 0;
};
// The gate after a response that says `remaining` until now + `reset`,
// given the gate in force (inactive once its end has passed).
constexpr remaining_gate tightened(remaining_gate cur, std::uint64_t remaining, nanoseconds reset,
                                   nanoseconds now) noexcept {
  const std::int64_t end =
      detail::sat_offset(now.count(), static_cast<std::uint64_t>(reset.count() > 0 ? reset.count() : 0));
  if (cur.until <= now.count()) return remaining_gate{end, remaining};
  return remaining_gate{end > cur.until ? end : cur.until, remaining < cur.left ? remaining : cur.left};
}

}  // namespace account_policy

namespace detail {

class remaining_gates {
 public:
  enum class take_result : unsigned char { open, taken, refused };

  bool on() const noexcept { return on_; }
  void enable() noexcept { on_ = true; }

  void observe(const rate_limit_headers& h, nanoseconds now) noexcept {
    if (!on_) return;
    // The account's own requests still unanswered may reach the server
    // after the one this answers: the remainder less them (the safe side).
    // relaxed: lone counters; an admission racing this read is the
    // in-flight case of the bound.
    const std::uint64_t air[2] = {air_[0].load(std::memory_order_relaxed), air_[1].load(std::memory_order_relaxed)};
    if (h.remaining_requests && h.reset_requests) tighten(0, less(*h.remaining_requests, air[0]), *h.reset_requests, now);
    if (h.remaining_tokens && h.reset_tokens) tighten(1, less(*h.remaining_tokens, air[1]), *h.reset_tokens, now);
  }

  // An admission's request and its n tokens are in flight until answered
  // (any settle, or the lease dropped).
  void sent(std::uint64_t n) noexcept {
    air_[0].fetch_add(1, std::memory_order_relaxed);  // relaxed: a lone counter (see observe)
    air_[1].fetch_add(n, std::memory_order_relaxed);  // relaxed: as above
  }
  void answered(std::uint64_t n) noexcept {
    air_[0].fetch_sub(1, std::memory_order_relaxed);  // relaxed: as above; never below what sent added
    air_[1].fetch_sub(n, std::memory_order_relaxed);  // relaxed: as above
  }

  // n units of dimension k (0 requests, 1 tokens) at now.
  take_result take(unsigned k, std::uint64_t n, nanoseconds now) noexcept {
    if (n == 0 || now.count() >= until_[k].load(std::memory_order_acquire)) return take_result::open;  // acquire: see tighten
    std::uint64_t left = left_[k].load(std::memory_order_relaxed);  // relaxed: a lone value taken by CAS
    for (;;) {
      if (left < n) return take_result::refused;
      // relaxed: the remainder is a lone count.
      if (left_[k].compare_exchange_weak(left, left - n, std::memory_order_relaxed, std::memory_order_relaxed))
        return take_result::taken;
    }
  }
  void give(unsigned k, std::uint64_t n) noexcept { left_[k].fetch_add(n, std::memory_order_relaxed); }  // relaxed: as above

  // Snapshot support (snapshot.hpp, format 3): per dimension the time left
  // of the gate at `now` (0: none in force) and its remainder.
  void save(nanoseconds now, std::uint64_t (&out)[4]) const noexcept {
    for (unsigned k = 0; k < 2; ++k) {
      // relaxed: lone values; a snapshot racing an observation keeps one side of it.
      const std::uint64_t t = positive_difference(until_[k].load(std::memory_order_relaxed), now.count());
      out[2 * k] = t;
      out[2 * k + 1] = t == 0 ? 0 : left_[k].load(std::memory_order_relaxed);
    }
  }
  // Applies saved gates, `down` (wall-clock time since the snapshot) later,
  // to gates not yet shared; a gate already in force here combines with
  // each as tightened does (the later end, the smaller remainder).
  void load(const std::uint64_t (&in)[4], nanoseconds now, std::uint64_t down) noexcept {
    if (!on_) return;
    for (unsigned k = 0; k < 2; ++k)
      if (in[2 * k] > down) tighten(k, in[2 * k + 1], nanoseconds(static_cast<std::int64_t>(in[2 * k] - down)), now);
  }

  // The wait a gate imposes on n units at now (zero when it lets them in).
  nanoseconds wait(unsigned k, std::uint64_t n, nanoseconds now) const noexcept {
    const std::int64_t u = until_[k].load(std::memory_order_acquire);  // acquire: see tighten
    if (n == 0 || now.count() >= u || left_[k].load(std::memory_order_relaxed) >= n) return nanoseconds(0);
    return nanoseconds(static_cast<std::int64_t>(positive_difference(u, now.count())));
  }

 private:
  void tighten(unsigned k, std::uint64_t remaining, nanoseconds reset, nanoseconds now) noexcept {
    // relaxed loads: lone values, read to combine.
    const account_policy::remaining_gate cur{until_[k].load(std::memory_order_relaxed),
                                             left_[k].load(std::memory_order_relaxed)};
    const account_policy::remaining_gate g = account_policy::tightened(cur, remaining, reset, now);
    left_[k].store(g.left, std::memory_order_relaxed);  // relaxed: published by the release store below
    // release: pairs with the acquire loads in take and wait, so a taker that
    // sees the new end sees the remainder stored with it.
    until_[k].store(g.until, std::memory_order_release);
  }

  static constexpr std::uint64_t less(std::uint64_t r, std::uint64_t air) noexcept { return r > air ? r - air : 0; }

  bool on_ = false;
  detail::atomic<std::uint64_t> air_[2] = {{0}, {0}};  // the account's own requests and tokens unanswered
  detail::atomic<std::int64_t> until_[2] = {{std::numeric_limits<std::int64_t>::min()},
                                            {std::numeric_limits<std::int64_t>::min()}};
  detail::atomic<std::uint64_t> left_[2] = {{0}, {0}};
};

}  // namespace detail

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_ACCOUNT_SERVER_REMAINING_HPP
