// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// redis/layout.hpp: how one account's state lies in Redis, in which units,
// and which configurations a server-side script can hold exactly. No I/O:
// the names and numbers here are what the script (redis/script.hpp) and the
// client side (redis/protocol.hpp, redis/account.hpp) agree on.
//
// Contract (the layout, version 3).
//   Keys. Every key of the account `name` is `tollgate:{name}:<part>`: one
//   hash tag, so a Redis Cluster keeps them on one slot. Two parts, so a
//   decision reads one hash and writes it once:
//     epoch  hash; never expires. lv (3: this layout; an epoch of another
//            layout, 2 included, is refused as corrupt, never misread), origin (server µs when the state
//            began), last (the latest time a call used: it bounds refunds;
//            a call decides at its own time), next (the last lease id), hold (nothing is
//            admitted before it: set when the state was found lost), bhold
//            (1: the budget refuses until restore_budget), committed and
//            spent (money), pause (admissions wait until it), stop (1 after a
//            quota error), started (an admission got past the stop and the
//            pause), test (1: the account takes a supplied `now`), eid (the
//            epoch's tag: the server's TIME when it began, also in test
//            mode; a lease is its tag and its id, so an epoch that follows
//            a loss, whose ids start again at 1, never takes a settlement of
//            the lost epoch's lease as one of its own; two epochs share a tag
//            only when the server's clock steps back onto the very µs the
//            first began at); the lease
//            set's records: lcount (its size as the calls left it), llo (at
//            most its earliest deadline), lease_end (at least its latest
//            deadline, 0 when it is empty), lease_exp (when its key expires,
//            at least lease_end), lgone (the latest deadline of a lease that
//            left the set by time: a call before it finds every slot taken);
//            and the strict windows, r (rpm), t (tpm),
//            d (tpd): field <p>h = the newest sub-window written (counted
//            from origin), <p>0 .. <p>15 = the units admitted in the
//            sub-window j with j mod 16 = that position, for j in
//            h - 15 .. h (a position is zeroed when the head passes it, so an
//            idle account keeps at most 18 small fields per window), and
//            <p>w = the sub-window width in µs the window's counts were made
//            with (0: not enforced yet in this epoch; set by the first call
//            that enforces it); the spaced buckets, r (rpm) and t (tpm):
//            <p>q and <p>f = the TAT, whole µs from origin and ticks below
//            <p>m, <p>m, <p>a, <p>b = the ticks per µs and the interval (µs,
//            ticks) it was counted with (0: none yet), <p>g = the first µs
//            from origin whose admissions may refund (the last change of
//            rate, plus 1); the calendar day: co = its offset code (0: none
//            yet), cd = the day the counts are of, cu = what it used. A
//            field an epoch lacks reads as 0 (so one removed by hand is
//            not told from one never written); a field that is not digits,
//            or a flag (stop, started, bhold) past 1, is corrupt.
//     leases zset; member lease id, score its deadline in server µs, kept
//            only when a lease has something to give back or to guard against
//            applying twice (a concurrency limit, a budget, refunds). A lease
//            past its deadline is removed by the next admission (a worker
//            that died holding it gives its slot back then, never earlier). The key
//            expires at lease_exp, which runs up to an eighth of the lease
//            timeout ahead of the latest deadline, so its expiry moves once
//            per that time (in ms, 1 ms more: the server's expiry clock is
//            the script's start, in ms).
//   Units. Times are whole microseconds of the server's clock (TIME), from
//   the Unix epoch (below 2^53 until the year 2255); windows and the lease
//   timeout are rounded up to a whole µs (a longer window is stricter) and a
//   sub-window is ceil(window / 15) µs, as sliding_window's 15 sub-windows.
//   Money is in nano-units of the budget's currency (money::nanos()).
//   Bounds. Every number the script holds stays below 2^53 (exact in a Lua
//   double) for every configuration check() accepts, for at least 10 years:
//   limits and a request's tokens at most max_units (2^50; a window's sum
//   saturates at 2^52, which only refuses; a calendar day's limit at most
//   2^40 - 1, calendar_quota's, its usage saturating there), a spaced
//   bucket's interval at most its period and that at most max_duration, its
//   TAT saturating at 2^52 µs from origin, its ticks per µs at most 14,000, a budget at most max_money
//   (2^51 nano-units: $2,251,799.81; committed saturates at 2^52), windows
//   and the lease timeout at most max_duration (400 days, in µs about 2^45),
//   lease ids below 2^53 (10 years at 28 million leases a second); day
//   numbers and day starts (days x 86,400 s in µs) below 2^53 until 2255.
//   Configuration. A call carries its limits; the epoch keeps only the
//   widths. A sub-window number means a time only at the width it was
//   counted with (callers with 60 s and 61 s windows would each miss the
//   other's counts), so a call whose width for an enforced window differs
//   from the epoch's is refused with code 9 (outcome other_configuration),
//   nothing written (so is a call that runs another policy for a dimension,
//   a window against a bucket or a rolling day against a calendar day, or a
//   calendar day at another offset); to change a window (request_window, token_window) use a
//   new account name, or delete the account's keys (a state loss: the next
//   call holds as after one). Limits, the concurrency, the budget and the
//   lease timeout may change between calls (a rolling change of tier): each
//   call checks the shared counts against its own limits, so while
//   processes disagree every window admits at most the largest limit in use,
//   and from the first call after the last old process is gone, the new one;
//   a spaced bucket keeps the time its TAT owes until (rounded up into the
//   new ticks), so it spaces by the shortest interval in use.
//   State lost. An epoch key that is missing while others are not, or missing
//   at all on a call, means the state is lost (a restart without persistence,
//   a failover that dropped writes, an eviction): the script starts a new
//   epoch whose hold lasts the longest window in use (a spaced bucket's
//   period and its largest admission's intervals; the lease timeout when
//   concurrency is limited: leases in flight are unknown; with a calendar
//   day at least to its next midnight: the lost day's usage is unknown), and with a
//   budget sets bhold, so the budget refuses until restore_budget says what
//   was spent. A new account holds the same way unless it is created fresh
//   (an operator's statement that nothing ran in the last window: made once,
//   at first deployment; a lost state reads as a new account, so a fresh
//   create at every start would skip the hold, see redis/account.hpp).
//   The hold runs from the time of the call that finds the loss: a call
//   whose time lags (a supplied now behind; a failover to a replica that
//   lost the state and whose clock is behind) starts it early, and up to
//   twice a limit is admitted in one window of the later times (what the
//   lost state counted, and a limit after the early hold; concurrency
//   likewise: the lost leases still running and a limit of new ones). Not
//   fixed: nothing that survives the loss knows the later times.
//   A key lost on its own. The lease set is the one key with an expiry (what
//   the volatile-* eviction policies take), and an operator may delete it.
//   A set whose size is not lcount was changed behind the script's back: a
//   set missing (empty) or smaller before lease_end lost leases: which is unknown
//   but ends by lease_end, so admissions hold until it (outcome held,
//   waiting exactly to it; the epoch is kept, and the budget needs no
//   restore: a lost lease's reservation stays committed, as a dropped
//   lease's, and its refund is not given back). Missing at or after
//   lease_end is no loss (it expired; lgone keeps lease_end for calls at
//   times before it). A set changed to its own size (members replaced) is
//   not detected: the set has no checksum. The windows live in the epoch and
//   are lost only with it. Edge: after the server's clock steps back, the
//   set can expire up to that step before lease_end; it then reads as lost
//   and holds until lease_end, never admitting more than the bound.
#ifndef TOLLGATE_REDIS_LAYOUT_HPP
#define TOLLGATE_REDIS_LAYOUT_HPP

#include <tollgate/config.hpp>
#include <tollgate/account/config.hpp>
#include <tollgate/account/learn_rules.hpp>
#include <tollgate/account/policy.hpp>
#include <tollgate/clock.hpp>
#include <tollgate/detail/arith.hpp>
#include <tollgate/detail/gcra_params.hpp>
#include <tollgate/error.hpp>
#include <tollgate/rate.hpp>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#if !TOLLGATE_NO_EXCEPTIONS
#include <stdexcept>
#endif

TOLLGATE_BEGIN_NAMESPACE

namespace redis {

// Why a configuration cannot run in Redis.
enum class layout_errc : unsigned char {
  ok = 0,
  bad_name,           // empty, longer than 64 bytes, or with a brace, space or control byte
  policy,             // a dimension runs a policy the script does not have (none today: every limiter
                      // of account/policy.hpp has one; kept so that a new limiter is refused, not misread)
  too_large,          // a limit beyond max_units, or a budget beyond max_money
  window,             // a window or lease timeout shorter than 15 µs or longer than max_duration
  no_lease_timeout,   // lease_timeout zero: a lease in Redis needs a deadline
  spacing,            // a spaced bucket the script cannot hold: max_request_tokens not below the token
                      // limit, a rate the bucket refuses (errc::rate_too_fine), or a bucket period
                      // (the limit's intervals) beyond max_duration
  chunk,              // chunked mode (options::chunk_parts, redis/chunk.hpp) on a configuration it cannot
                      // keep exact: a calendar day, no RPM, TPM or TPD
};

constexpr const char* message(layout_errc e) noexcept {
  switch (e) {
    case layout_errc::ok: return "ok";
    case layout_errc::bad_name: return "account name must be 1 to 64 bytes without braces, spaces or control bytes";
    case layout_errc::policy:
      return "a dimension's policy has no Redis script";
    case layout_errc::too_large: return "a limit above 2^50 units or a budget above 2^51 nano-units";
    case layout_errc::window: return "a window or lease timeout shorter than 15 us or longer than 400 days";
    case layout_errc::no_lease_timeout: return "lease_timeout must be positive for an account in Redis";
    case layout_errc::spacing:
      return "a spaced limit the script cannot hold (max_request_tokens at least the token limit, a rate finer "
             "than the bucket holds, or a spacing period beyond 400 days)";
    case layout_errc::chunk:
      return "chunked mode keeps windows, spaced buckets, concurrency and a budget exact: it refuses a "
             "calendar-day TPD and an account with no RPM, TPM or TPD";
  }
  return "unknown layout error";
}

#if !TOLLGATE_NO_EXCEPTIONS
class layout_error : public std::invalid_argument {
 public:
  explicit layout_error(layout_errc e) : std::invalid_argument(message(e)), code_(e) {}
  layout_errc code() const noexcept { return code_; }

 private:
  layout_errc code_;
};
#endif

inline constexpr std::uint64_t max_units = std::uint64_t(1) << 50;
inline constexpr std::int64_t max_money = std::int64_t(1) << 51;
inline constexpr std::uint64_t max_duration_us = 400ULL * 86400ULL * 1000000ULL;
inline constexpr std::uint64_t sub_windows = 15;  // as sliding_window's default
inline constexpr std::uint64_t layout_version = 3;
// The bounds of the contract: a time of the year 2255 (8.9 * 10^15 µs) plus
// the longest duration twice, and a window's sum of the largest limit plus
// a saturated charge, stay below 2^53.
static_assert(8900000000000000ULL + 2 * max_duration_us < (std::uint64_t(1) << 53), "times fit a double");
static_assert(max_units + (std::uint64_t(1) << 52) < (std::uint64_t(1) << 53), "sums fit a double");
static_assert(std::uint64_t(max_money) + (std::uint64_t(1) << 52) < (std::uint64_t(1) << 53), "money fits a double");

// A duration in whole µs, rounded up (0 for a negative one).
constexpr std::uint64_t ceil_us(nanoseconds d) noexcept {
  return d.count() <= 0 ? 0 : detail::ceil_div(static_cast<std::uint64_t>(d.count()), 1000);
}

// One strict window as the script sees it (limit 0: not enforced).
struct window_params {
  std::uint64_t limit = 0;
  std::uint64_t period_us = 0;
  std::uint64_t width_us = 0;  // ceil(period_us / sub_windows)
};

// A spaced bucket (GCRA, burst 1) as the script sees it: time in ticks of
// 1 / per_us µs, per_us = 1000 x the in-process bucket's scale (1 to 14, see
// detail/gcra_params.hpp), so its ticks are the in-process bucket's exactly;
// the emission interval T = whole_us x per_us + ticks (0 <= ticks < per_us).
// per_us 0: the dimension runs no bucket.
struct bucket_params {
  std::uint64_t per_us = 0;
  std::uint64_t whole_us = 0;
  std::uint64_t ticks = 0;
};
// The calendar day's offset as the script takes it: the UTC offset in µs
// plus two days (so that it is positive; 0: no calendar day).
inline constexpr std::uint64_t day_us = 86400ULL * 1000000ULL;
inline constexpr std::uint64_t calendar_day_limit = (std::uint64_t(1) << 40) - 1;  // calendar_quota's

// server_model::learn (account/learn.hpp) in Redis: rpm and tpm each keep
// their strict window and learn's spaced bucket, whose rate follows the
// spacing margin in force. The margin widens in steps (level 0 is
// spacing_margin, each step widened_margin of the one before, up to
// max_level, where it reaches max_spacing_margin); the epoch keeps the
// fleet's level, and a call at a lower one is answered "relearn" with it,
// so each process rebuilds its buckets (learn_rebuild) and calls again.
struct learn_params {
  bool on = false;
  bool spaced_start[2] = {false, false};  // starts_strict false: spaced from the start, nothing to switch
  std::uint64_t level = 0, max_level = 0;
  std::uint64_t extra_tokens = 0;         // tokens a request's own spacing charges, from level 1 on
  std::uint64_t limit[2] = {0, 0};
  nanoseconds window[2] = {nanoseconds(0), nanoseconds(0)};
  std::uint64_t max_request_tokens = 0;
  nanoseconds base{0}, cap{0};
};

// The constants a call carries: the script keeps no limits, so a change of
// limits takes effect at the next call; a window's width it keeps (see
// Configuration above).
struct layout {
  std::string prefix;            // "tollgate:{name}:"
  std::uint64_t concurrency = 0;  // 0: not enforced
  std::uint64_t lease_us = 0;
  bool lease_records = false;    // a lease has something to give back or guard: concurrency, money, refunds
  window_params w[3];            // rpm, tpm, tpd (a spaced or calendar dimension: limit only)
  bucket_params b[2];            // rpm, tpm when spaced
  std::uint64_t day_code = 0;    // the calendar day's offset code (see day_us), 0: a rolling 24 h window
  bool budget = false;
  std::int64_t budget_nanos = 0;
  std::uint64_t hold_us = 0;     // the hold after state loss: the longest window (and lease timeout)
  learn_params learn;            // server_model::learn: its buckets are b, at learn.level

  std::string key(std::string_view part) const { return prefix + std::string(part); }
};

constexpr bool valid_name(std::string_view n) noexcept {
  if (n.empty() || n.size() > 64) return false;
  for (char ch : n) {
    const unsigned char u = static_cast<unsigned char>(ch);
    if (u <= 0x20 || u == 0x7f || ch == '{' || ch == '}') return false;
  }
  return true;
}

namespace detail_layout {
// Bucket k (0 rpm, 1 tpm) of limit v at `margin`, as the in-process account
// builds it; `span` the µs the hold after a loss needs for it: the bucket's
// period (its limit's intervals) and its largest admission's intervals after
// it (a request, or max_request_tokens), capped at twice max_duration.
inline layout_errc spaced_bucket(int k, std::uint64_t v, nanoseconds window, std::uint64_t max_request_tokens,
                                 nanoseconds margin, bucket_params& b, std::uint64_t& span) noexcept {
  using namespace account_policy;
  std::optional<rate> r;
  if (k == 0) r = spaced_request_rate(v, window, margin);
  else r = spaced_token_rate(v, max_request_tokens, window, margin);
  detail::gcra_params p{};
  if (!r || detail::make_gcra_params(*r, 1, p) != errc::ok) return layout_errc::spacing;
  b.per_us = 1000 * p.scale;
  b.whole_us = p.interval / b.per_us;
  b.ticks = p.interval % b.per_us;
  const detail::u128 iv = p.interval;
  const detail::u128 period = (static_cast<detail::u128>(r->count) * iv + b.per_us - 1) / b.per_us;
  if (period > max_duration_us) return layout_errc::spacing;
  const std::uint64_t extra = k == 0 ? 1 : max_request_tokens;
  const detail::u128 more = (static_cast<detail::u128>(extra) * iv + b.per_us - 1) / b.per_us;
  span = static_cast<std::uint64_t>(period + (more < max_duration_us ? more : max_duration_us));
  return layout_errc::ok;
}
}  // namespace detail_layout

// learn's margin at `level`: spacing_margin widened `level` times.
constexpr nanoseconds learn_margin(const learn_params& p, std::uint64_t level) noexcept {
  nanoseconds m = p.base;
  for (std::uint64_t i = 0; i < level && i < 64; ++i) m = account_policy::widened_margin(m, p.cap);
  return m;
}

// Rebuilds learn's buckets (l.b) and its spacing tokens at `level` (at most
// max_level). Every level's rates were checked by make_layout.
inline void learn_rebuild(layout& l, std::uint64_t level) noexcept {
  learn_params& p = l.learn;
  if (!p.on) return;
  p.level = level < p.max_level ? level : p.max_level;
  const nanoseconds m = learn_margin(p, p.level);
  p.extra_tokens = 0;
  for (int k = 0; k < 2; ++k) {
    if (p.limit[k] == 0) continue;
    std::uint64_t span = 0;
    (void)detail_layout::spaced_bucket(k, p.limit[k], p.window[k], p.max_request_tokens, m, l.b[k], span);
    const bucket_params& b = l.b[k];
    // As learn_state::install: from the first widening on, ceil(margin /
    // the interval in whole ns) tokens more per request.
    const std::uint64_t unit = detail::ceil_div(b.whole_us * b.per_us + b.ticks, b.per_us / 1000);
    if (k == 1 && p.level > 0 && unit > 0 && m.count() > 0)
      p.extra_tokens = detail::ceil_div(static_cast<std::uint64_t>(m.count()), unit);
  }
}

// Checks a configuration and builds its layout; `out` is written only on ok.
template <class Currency>
layout_errc make_layout(std::string_view name, const basic_account_config<Currency>& c, layout& out) {
  using namespace account_policy;
  if (!valid_name(name)) return layout_errc::bad_name;
  if (c.lease_timeout <= nanoseconds(0)) return layout_errc::no_lease_timeout;
  layout l;
  l.prefix = "tollgate:{" + std::string(name) + "}:";
  auto fits_time = [](std::uint64_t us) { return us >= sub_windows && us <= max_duration_us; };
  l.lease_us = ceil_us(c.lease_timeout);
  l.lease_records = c.concurrency.is_finite() || c.budget.has_value() || c.refund_unused_tokens;
  if (!fits_time(l.lease_us)) return layout_errc::window;
  if (auto v = c.concurrency.value()) {
    if (*v == 0 || *v > max_units) return layout_errc::too_large;
    l.concurrency = *v;
    l.hold_us = l.lease_us;
  }
  const limit* ls[3] = {&c.rpm, &c.tpm, &c.tpd};
  const limiter kinds[3] = {request_limiter(c), token_limiter(c), day_limiter(c)};
  const nanoseconds periods[3] = {c.request_window, c.token_window, std::chrono::hours(24)};
  for (int k = 0; k < 3; ++k) {
    auto v = ls[k]->value();
    if (!v) continue;
    if (*v == 0 || *v > max_units) return layout_errc::too_large;
    window_params& w = l.w[k];
    w.limit = *v;
    if (kinds[k] == limiter::spaced) {
      // The in-process account's bucket (account/limiters.hpp): the same
      // rate, burst 1, the same ticks.
      std::uint64_t span = 0;
      const layout_errc e = detail_layout::spaced_bucket(k, *v, periods[k], c.max_request_tokens, c.spacing_margin,
                                                         l.b[k], span);
      if (e != layout_errc::ok) return e;
      if (span > l.hold_us) l.hold_us = span;
      continue;
    }
    if (kinds[k] == limiter::calendar_day) {
      if (*v > calendar_day_limit) return layout_errc::too_large;
      if (c.utc_offset > std::chrono::hours(24) || c.utc_offset < -std::chrono::hours(24)) return layout_errc::window;
      const std::int64_t off = static_cast<std::int64_t>(c.utc_offset.count()) * 60 * 1000000;
      l.day_code = static_cast<std::uint64_t>(off + 2 * static_cast<std::int64_t>(day_us));
      continue;  // the hold after a loss lasts to the next midnight (the script reckons it)
    }
    w.period_us = ceil_us(periods[k]);
    if (!fits_time(w.period_us)) return layout_errc::window;
    w.width_us = detail::ceil_div(w.period_us, sub_windows);
    // The hold covers everything the window still counts: K + 1 sub-windows.
    const std::uint64_t span = w.width_us * (sub_windows + 1);
    if (span > l.hold_us) l.hold_us = span;
  }
  if (c.model == server_model::learn) {
    // Both policies per dimension: the strict window (above) and learn's
    // bucket, checked at every margin it can widen to (the widest spaces
    // the longest: the hold covers it).
    learn_params& p = l.learn;
    if (c.max_spacing_margin < c.spacing_margin || c.spacing_margin.count() < 0) return layout_errc::spacing;
    p.on = true;
    p.base = c.spacing_margin;
    p.cap = c.max_spacing_margin;
    p.window[0] = c.request_window;
    p.window[1] = c.token_window;
    p.max_request_tokens = c.max_request_tokens;
    for (nanoseconds m = p.base; p.max_level < 64; ++p.max_level) {
      const nanoseconds w = widened_margin(m, p.cap);
      if (w <= m) break;
      m = w;
    }
    const limit* lk[2] = {&c.rpm, &c.tpm};
    for (int k = 0; k < 2; ++k) {
      const auto v = lk[k]->value();
      if (!v) continue;
      p.limit[k] = *v;
      bucket_params b;
      std::uint64_t span = 0;
      for (std::uint64_t i = 0; i <= p.max_level; ++i) {
        const layout_errc e = detail_layout::spaced_bucket(k, *v, periods[k], c.max_request_tokens, learn_margin(p, i),
                                                           i == 0 ? l.b[k] : b, span);
        if (e != layout_errc::ok) return e;
        if (span > l.hold_us) l.hold_us = span;
      }
      const std::optional<rate> r0 = k == 0 ? std::optional<rate>(spaced_request_rate(*v, c.request_window, p.base))
                                            : spaced_token_rate(*v, c.max_request_tokens, c.token_window, p.base);
      p.spaced_start[k] = !starts_strict(*v, periods[k], *r0, sub_windows);
    }
    learn_rebuild(l, 0);
  }
  if (c.budget) {
    if (c.budget->nanos() < 0 || c.budget->nanos() > max_money) return layout_errc::too_large;
    l.budget = true;
    l.budget_nanos = c.budget->nanos();
  }
  out = std::move(l);
  return layout_errc::ok;
}

// The same, throwing layout_error (aborting without exceptions).
template <class Currency>
layout make_layout(std::string_view name, const basic_account_config<Currency>& c) {
  layout l;
  const layout_errc e = make_layout(name, c, l);
  if (e != layout_errc::ok) {
#if !TOLLGATE_NO_EXCEPTIONS
    throw layout_error(e);
#else
    std::fprintf(stderr, "tollgate: %s\n", message(e));
    std::abort();
#endif
  }
  return l;
}

}  // namespace redis

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_REDIS_LAYOUT_HPP
