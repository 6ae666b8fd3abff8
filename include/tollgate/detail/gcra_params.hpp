// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// detail/gcra_params.hpp: a GCRA configuration in ticks, and time in it.
// Nothing here is public API; token_bucket.hpp states the guarantees.
//
// Time is counted in ticks of 1/s ns from an epoch, where the scale s is the
// smallest that makes the emission interval T a whole number of ticks, if
// s <= 14; else s = 14 and T is rounded up (slower than asked by less than
// 1/14 ns per unit, never faster), and a rate that would be off by more than
// 0.1 % is refused. Ticks have 62 bits: the top two of the bucket's state word
// tag its configuration slot. A configuration is accepted only if 10 years
// from its epoch and its whole burst (B x T ticks) fit in them.
//
// The conversions below are exact where they can be and round toward refusal
// where they cannot: a `now` maps to whole ticks (saturating at the horizon,
// before the epoch counting as the epoch), and a span in ticks maps back to
// a wait rounded up to the nanosecond.

#ifndef TOLLGATE_DETAIL_GCRA_PARAMS_HPP
#define TOLLGATE_DETAIL_GCRA_PARAMS_HPP

#include <tollgate/config.hpp>
#include <tollgate/detail/arith.hpp>
#include <tollgate/error.hpp>
#include <tollgate/rate.hpp>

#include <cstdint>

TOLLGATE_BEGIN_NAMESPACE
namespace detail {

// The parameters of a GCRA in ticks, computed and validated once.
struct gcra_params {
  std::uint64_t scale = 0;     // ticks per nanosecond
  std::uint64_t interval = 0;  // T, in ticks
  std::uint64_t burst = 0;     // B
  std::uint64_t tau = 0;       // B * T, in ticks
  bool exact = false;
  std::int64_t epoch = 0;      // where tick 0 is, in ns (the origin, or where it moved to)
  std::uint64_t gen = 0;       // which installation of a slot this is (one per reconfiguration)
  std::uint64_t config = 0;    // which rate and burst (epoch moves keep it): tickets name it
};

struct gcra_limits {
  // 62 bits of ticks; the top two bits of the state word tag the
  // configuration slot in force.
  static constexpr std::uint64_t tat_bits = 62;
  static constexpr std::uint64_t max_ticks = (std::uint64_t{1} << tat_bits) - 1;
  // Ten Julian years in nanoseconds: the minimum horizon of any configuration.
  static constexpr std::uint64_t min_horizon_ns = 315576000ULL * 1000000000ULL;
  static constexpr std::uint64_t max_scale = max_ticks / min_horizon_ns;  // 14
};

constexpr errc make_gcra_params(rate r, std::uint64_t burst, gcra_params& out) noexcept {
  using L = gcra_limits;
  if (r.count == 0) return errc::zero_count;
  if (r.period.count() <= 0) return errc::zero_period;
  if (burst == 0) return errc::zero_burst;
  const std::uint64_t p = static_cast<std::uint64_t>(r.period.count());
  const std::uint64_t g = gcd(p, r.count);
  const std::uint64_t s_exact = r.count / g;
  const std::uint64_t t_exact = p / g;
  auto fits = [&](std::uint64_t s, std::uint64_t t) {
    const u128 need = static_cast<u128>(L::min_horizon_ns) * s + static_cast<u128>(burst) * t;
    return need <= L::max_ticks;
  };
  if (s_exact <= L::max_scale && fits(s_exact, t_exact)) {
    out = gcra_params{s_exact, t_exact, burst, burst * t_exact, true};
    return errc::ok;
  }
  if (s_exact <= L::max_scale) return errc::horizon_too_short;  // the burst is what does not fit
  for (std::uint64_t s = L::max_scale; s >= 1; --s) {
    const std::uint64_t t = mul_div_ceil(p, s, r.count);
    // Within 0.1 %: t / s <= 1.001 * p / count.
    if (static_cast<u128>(t) * r.count * 1000 > static_cast<u128>(p) * s * 1001) return errc::rate_too_fine;
    if (fits(s, t)) {
      out = gcra_params{s, t, burst, burst * t, false};
      return errc::ok;
    }
  }
  return errc::horizon_too_short;
}

// `now` in ticks from p's epoch: before it counts as it, and the count stops
// where the burst would no longer fit below the tag bits.
constexpr std::uint64_t gcra_ticks(std::int64_t now, const gcra_params& p) noexcept {
  const std::uint64_t since = positive_difference(now, p.epoch);
  const std::uint64_t cap = gcra_limits::max_ticks - p.tau;
  // Every Kimi limit has scale 1: skip the 128-bit multiply.
  const std::uint64_t t = p.scale == 1 ? since : sat_mul(since, p.scale);
  return t > cap ? cap : t;
}

// The highest TAT a charge at now_t saturates at: one interval below the
// top of the ticks, so that a request after it is admissible at a `now`
// gcra_ticks still counts (tat + T - tau <= the clamp). From max_ticks
// itself that `now` lay one interval past the clamp: the epoch move there
// measured the debt from the clamp, one interval too much, and the wait
// given was short by it. At the clamp itself (a `now` past the horizon,
// whose epoch has not moved yet) the whole range stays, so that nothing
// owed there is lost.
constexpr std::uint64_t gcra_top(const gcra_params& p, std::uint64_t now_t) noexcept {
  return now_t >= gcra_limits::max_ticks - p.tau ? gcra_limits::max_ticks : gcra_limits::max_ticks - p.interval;
}

// `t` ticks after max(now, epoch), as a wait from `now` in ns, rounded up.
constexpr std::int64_t gcra_wait_from(std::int64_t now, std::uint64_t t, const gcra_params& p) noexcept {
  const std::uint64_t w = sat_add(ceil_div(t, p.scale), positive_difference(p.epoch, now));
  return w > static_cast<std::uint64_t>(INT64_MAX) ? INT64_MAX : static_cast<std::int64_t>(w);
}

// Whole units a bucket with the TAT `tat` holds at now_t.
constexpr std::uint64_t gcra_available(std::uint64_t tat, std::uint64_t now_t, const gcra_params& p) noexcept {
  const std::uint64_t owed = tat > now_t ? tat - now_t : 0;
  return owed >= p.tau ? 0 : (p.tau - owed) / p.interval;
}

// The TAT that owes `owed` ns at `now` (a negative `owed` owes nothing),
// saturating at the horizon (gcra_top).
constexpr std::uint64_t gcra_owing(std::int64_t owed, std::int64_t now, const gcra_params& p) noexcept {
  const std::uint64_t owed_ns = owed > 0 ? static_cast<std::uint64_t>(owed) : 0;
  const std::uint64_t now_t = gcra_ticks(now, p);
  const std::uint64_t tat = sat_add(now_t, sat_mul(owed_ns, p.scale));
  const std::uint64_t top = gcra_top(p, now_t);
  return tat > top ? top : tat;
}

// The interval rounded up to whole ns, and how far from its epoch p counts
// exactly; 0 for a misconfigured (all-zero) p.
constexpr std::int64_t gcra_interval_ns(const gcra_params& p) noexcept {
  return p.scale == 0 ? 0 : static_cast<std::int64_t>(ceil_div(p.interval, p.scale));
}
constexpr std::int64_t gcra_horizon_ns(const gcra_params& p) noexcept {
  return p.scale == 0 ? 0 : static_cast<std::int64_t>((gcra_limits::max_ticks - p.tau) / p.scale);
}

// The epoch moves once `now` is 2^57 ticks past it, to 2^56 ticks before
// `now`. One constant for every configuration keeps the hot-path test to a
// compare with a constant; every horizon (>= 10 years >= 2^58.1 ticks) has
// room to spare above it, so a move is due long before a `now` is clamped.
constexpr std::uint64_t gcra_move_ticks = std::uint64_t{1} << 57;
constexpr std::uint64_t gcra_keep_ticks = std::uint64_t{1} << 56;
static_assert(gcra_limits::min_horizon_ns > gcra_move_ticks + gcra_keep_ticks,
              "a move must be due well inside every horizon");
constexpr bool gcra_move_due(std::uint64_t now_t) noexcept { return now_t >= gcra_move_ticks; }

// An epoch for `p` (whose own epoch is ignored) at `now`, moving on from
// `epoch`: that one unless a move is due, else gcra_keep_ticks before `now`
// (whole nanoseconds, so exact; never past `now`, so it fits).
constexpr std::int64_t gcra_epoch_for(gcra_params p, std::int64_t epoch, std::int64_t now) noexcept {
  p.epoch = epoch;
  if (!gcra_move_due(gcra_ticks(now, p))) return epoch;
  const i128 e = static_cast<i128>(now) - static_cast<i128>(gcra_keep_ticks / p.scale);
  return e > epoch ? static_cast<std::int64_t>(e) : epoch;
}

// A TAT under `op` as one under `np` at `now`: the units owed at `now` stay
// owed, at the new interval, rounded up (saturating at the horizon, gcra_top).
constexpr std::uint64_t gcra_convert_tat(std::uint64_t tat, const gcra_params& op, const gcra_params& np,
                                         std::int64_t now) noexcept {
  const std::uint64_t old_now = gcra_ticks(now, op);
  const std::uint64_t owed = tat > old_now ? mul_div_ceil(tat - old_now, np.interval, op.interval) : 0;
  const std::uint64_t new_now = gcra_ticks(now, np);
  const std::uint64_t nt = sat_add(new_now, owed);
  const std::uint64_t top = gcra_top(np, new_now);
  return nt > top ? top : nt;
}

}  // namespace detail
TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_DETAIL_GCRA_PARAMS_HPP
