// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// account/learn_rules.hpp: server_model::learn's decisions as pure
// functions of plain values (the phase a dimension is in at a time, what an
// answer teaches, how far the margin widens, whether a limit starts on the
// strict window), so that any state backend (a process's account, a shared
// region, a server-side script) can apply the same rules. The rule, its
// bound and its state are in account/learn.hpp.
#ifndef TOLLGATE_ACCOUNT_LEARN_RULES_HPP
#define TOLLGATE_ACCOUNT_LEARN_RULES_HPP

#include <tollgate/config.hpp>
#include <tollgate/account/config.hpp>
#include <tollgate/account/policy.hpp>
#include <tollgate/clock.hpp>
#include <tollgate/decision.hpp>
#include <tollgate/detail/arith.hpp>
#include <tollgate/error.hpp>
#include <tollgate/http.hpp>

#include <cstdint>
#include <limits>
#include <optional>

TOLLGATE_BEGIN_NAMESPACE

namespace account_policy {

// Where a dimension is in learning.
enum class learn_phase : unsigned char {
  strict,  // the strict window at L (nothing learned yet)
  both,    // switched less than a window ago: the window and the spaced bucket
  spaced,  // the margin policy alone
};

constexpr const char* to_string(learn_phase p) noexcept {
  switch (p) {
    case learn_phase::strict: return "strict";
    case learn_phase::both: return "switching";
    case learn_phase::spaced: return "spaced";
  }
  return "?";
}

// The switch word of a dimension that has not switched.
inline constexpr std::int64_t not_switched = std::numeric_limits<std::int64_t>::max();

// The phase at `now` of a dimension that switched at `switched_at`
// (not_switched: never). A `now` before the switch counts as in it.
constexpr learn_phase phase_at(std::int64_t switched_at, nanoseconds window, nanoseconds now) noexcept {
  if (switched_at == not_switched) return learn_phase::strict;
  const std::uint64_t w = window.count() > 0 ? static_cast<std::uint64_t>(window.count()) : 0;
  return now.count() < detail::sat_offset(switched_at, w) ? learn_phase::both : learn_phase::spaced;
}

// Where a dimension is for the next lesson.
enum class learn_stage : unsigned char {
  none,       // not enforced: nothing to learn
  strict,     // not switched
  guarded,    // switched, and the pause that followed its switch not over
  widenable,  // switched, past that pause: a 429 now answers a request the margin policy admitted
};
// The stage at `now` of a dimension that switched at `switched_at` and
// whose switch's pause ends at `guard_end` (not_switched: not yet set).
constexpr learn_stage stage_at(bool enforced, std::int64_t switched_at, std::int64_t guard_end, nanoseconds now) noexcept {
  if (!enforced) return learn_stage::none;
  if (switched_at == not_switched) return learn_stage::strict;
  return now.count() < guard_end ? learn_stage::guarded : learn_stage::widenable;
}

// What one answer teaches.
struct learn_step {
  bool switch_requests = false;
  bool switch_tokens = false;
  bool widen = false;  // double the spacing margin
};
constexpr learn_step learn_from(error_kind k, learn_stage requests, learn_stage tokens) noexcept {
  learn_step s;
  switch (k) {
    case error_kind::rpm:
      s.switch_requests = requests == learn_stage::strict;
      s.widen = requests == learn_stage::widenable;
      break;
    case error_kind::tpm:
      s.switch_tokens = tokens == learn_stage::strict;
      s.widen = tokens == learn_stage::widenable;
      break;
    case error_kind::rate_limit:
      s.switch_requests = requests == learn_stage::strict;
      s.switch_tokens = tokens == learn_stage::strict;
      // Widen only when every enforced dimension is past its guard.
      s.widen = (requests != learn_stage::none || tokens != learn_stage::none) &&
                (requests == learn_stage::none || requests == learn_stage::widenable) &&
                (tokens == learn_stage::none || tokens == learn_stage::widenable);
      break;
    default: break;
  }
  return s;
}

// Whether a dimension starts on the strict window: only where, saturated,
// it admits more than the margin policy. The strict window of K sub-windows
// admits K / (K + 1) of L per W (sliding_window.hpp); the margin policy
// admits `spaced` (its rate). So requests up to RPM 16 start strict (at RPM
// 3, 2.81 per minute against 2.0) and from RPM 17 spaced (at RPM 100, 99
// against 93.75); tokens start strict when m is more than about L / 16.
constexpr bool starts_strict(std::uint64_t l, nanoseconds window, const rate& spaced, std::uint64_t k) noexcept {
  if (window.count() <= 0 || spaced.period.count() <= 0) return true;
  // l K / ((K + 1) W) > count / period, in 128 bits (saturated: a tie
  // at the top keeps the strict window, the policy the model names).
  using u128 = detail::u128;
  constexpr u128 top = ~static_cast<u128>(0);
  auto mul = [](u128 a, u128 b) { return a != 0 && b > top / a ? top : a * b; };
  const u128 lhs = mul(mul(l, k), static_cast<std::uint64_t>(spaced.period.count()));
  const u128 rhs = mul(mul(spaced.count, k + 1), static_cast<std::uint64_t>(window.count()));
  return lhs > rhs || lhs == top;
}

// The margin after a widening: doubled (1 ms from zero), at most `cap`.
constexpr nanoseconds widened_margin(nanoseconds m, nanoseconds cap) noexcept {
  const std::int64_t c = cap.count() > 0 ? cap.count() : 0;
  const std::int64_t x = m.count() <= 0 ? 1000000 : (m.count() > c / 2 ? c : 2 * m.count());
  return nanoseconds(x < c ? x : c);
}

}  // namespace account_policy

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_ACCOUNT_LEARN_RULES_HPP
