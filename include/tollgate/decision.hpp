// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// decision.hpp: the answer every limiter gives. A request is admitted; or it
// is not yet admissible and `retry_after` is the exact wait until it would be
// (rounded up to the nanosecond, never early, assuming nothing else is
// admitted meanwhile); or it can `never` be admitted by this limiter as
// configured (it asks for more than the limiter can ever hold). A refusal of
// either kind has changed no state.
#ifndef TOLLGATE_DECISION_HPP
#define TOLLGATE_DECISION_HPP

#include <tollgate/config.hpp>
#include <tollgate/clock.hpp>

#include <cstdint>

TOLLGATE_BEGIN_NAMESPACE

enum class verdict : std::uint8_t {
  admitted,  // granted and charged
  later,     // refused now; see retry_after and why
  never,     // refused for good: n exceeds what the limiter can ever grant
};

enum class reason : std::uint8_t {
  none,         // admitted
  exhausted,    // capacity is used up until retry_after has passed
  stale_time,   // `now` is older than a window slot already closed; retry with
                // a fresh clock reading (retry_after = the gap)
  busy,         // all concurrency permits are held; a release frees one (no
                // time estimate: retry_after is zero)
  exceeds_capacity,  // never: n > burst, limit or window limit
  misconfigured,     // never: the limiter was built with an error code set
};

class decision {
 public:
  constexpr decision() noexcept = default;

  static constexpr decision admit() noexcept { return decision(verdict::admitted, nanoseconds(0), reason::none); }
  static constexpr decision wait(nanoseconds d, reason r = reason::exhausted) noexcept {
    return decision(verdict::later, d, r);
  }
  static constexpr decision refuse(reason r = reason::exceeds_capacity) noexcept {
    return decision(verdict::never, nanoseconds(0), r);
  }

  constexpr verdict what() const noexcept { return what_; }
  constexpr reason why() const noexcept { return why_; }
  constexpr bool admitted() const noexcept { return what_ == verdict::admitted; }
  constexpr bool later() const noexcept { return what_ == verdict::later; }
  constexpr bool never() const noexcept { return what_ == verdict::never; }
  constexpr explicit operator bool() const noexcept { return admitted(); }
  // The exact wait for `later`; zero otherwise (and for reason::busy).
  constexpr nanoseconds retry_after() const noexcept { return wait_; }

  friend constexpr bool operator==(const decision& a, const decision& b) noexcept {
    return a.what_ == b.what_ && a.why_ == b.why_ && a.wait_ == b.wait_;
  }
  friend constexpr bool operator!=(const decision& a, const decision& b) noexcept { return !(a == b); }

 private:
  constexpr decision(verdict w, nanoseconds d, reason r) noexcept : wait_(d), what_(w), why_(r) {}
  nanoseconds wait_{0};
  verdict what_ = verdict::never;
  reason why_ = reason::misconfigured;
};

constexpr const char* to_string(verdict v) noexcept {
  switch (v) {
    case verdict::admitted: return "admitted";
    case verdict::later: return "later";
    case verdict::never: return "never";
  }
  return "?";
}

constexpr const char* to_string(reason r) noexcept {
  switch (r) {
    case reason::none: return "none";
    case reason::exhausted: return "exhausted";
    case reason::stale_time: return "stale_time";
    case reason::busy: return "busy";
    case reason::exceeds_capacity: return "exceeds_capacity";
    case reason::misconfigured: return "misconfigured";
  }
  return "?";
}

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_DECISION_HPP
