// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// account/limiters.hpp: the account's state: one lock-free primitive per
// enforced dimension, built as account/policy.hpp decides.
//
// Contract. Each dimension runs at most one limiter: concurrency a
// concurrency_limiter; requests and tokens per window a strict
// sliding_window or a spaced token_bucket (burst 1, at L - m); the daily
// limit a strict 24 h window or a calendar_quota; money a budget. A
// dimension whose limit is unknown or unlimited has none and admits
// everything. The helpers take and give back one dimension's units by its
// tickets, and peek (without consuming) at what each would answer; none
// allocates, locks or makes a syscall. Bounds are the primitives' own
// (each header states its bound); the account composes them all-or-nothing.
//
// Concurrency. Each limiter is thread-safe and lock-free by itself, and
// their state words are address-free (no pointer), so the same limiters can
// live in memory that several processes map; what this struct adds is only
// which of them exist.
#ifndef TOLLGATE_ACCOUNT_LIMITERS_HPP
#define TOLLGATE_ACCOUNT_LIMITERS_HPP

#include <tollgate/config.hpp>
#include <tollgate/account/config.hpp>
#include <tollgate/account/pause.hpp>
#include <tollgate/account/policy.hpp>
#include <tollgate/budget.hpp>
#include <tollgate/calendar_quota.hpp>
#include <tollgate/clock.hpp>
#include <tollgate/concurrency.hpp>
#include <tollgate/detail/arith.hpp>
#include <tollgate/error.hpp>
#include <tollgate/money.hpp>
#include <tollgate/sliding_window.hpp>
#include <tollgate/tiers.hpp>
#include <tollgate/token_bucket.hpp>

#include <chrono>
#include <cstdint>
#include <limits>
#include <optional>

TOLLGATE_BEGIN_NAMESPACE

// What each dimension could still admit (account::remaining_view).
template <class Currency>
struct basic_remaining_view {
  std::optional<std::uint64_t> concurrency, requests, tokens_minute, tokens_day;
  std::optional<money<Currency>> budget;
  nanoseconds paused_for{0};  // time left of a pause
  bool stopped = false;
  // When each time-based dimension is back to its full limit (its reset).
  nanoseconds requests_reset_in{0}, tokens_minute_reset_in{0}, tokens_day_reset_in{0};
};

namespace detail {

template <class Clock, class Currency>
struct account_limiters {
  using window = sliding_window<Clock>;
  using bucket = token_bucket<Clock>;
  using config_type = basic_account_config<Currency>;

  bool margin_tokens = false;  // tokens run the spaced policy
  std::optional<concurrency_limiter> conc;
  std::optional<window> rpm_w, tpm_w, tpd_w;
  std::optional<bucket> rpm_b, tpm_b, tpd_b;  // tpd_b is never built: the daily limit is a window or a quota
  std::optional<calendar_quota<Clock>> day_q;
  std::optional<budget<Currency>> money;
  // Without a daily limit: where the calendar day of utc_offset starts, for
  // the pause after a TPD 429 (pause.hpp).
  nanoseconds day_origin{0};
  std::chrono::minutes day_offset{0};

  // Builds every dimension of `c` (whose limits check_limits accepted).
  errc build(const config_type& c, nanoseconds origin) noexcept {
    using namespace account_policy;
    errc e = errc::ok;
    if (auto v = c.concurrency.value()) {
      conc.emplace(*v, e);
      if (e != errc::ok) return e;
    }
    if (auto v = c.rpm.value()) {
      if (request_limiter(c) == limiter::strict_window) rpm_w.emplace(rate(*v, c.request_window), origin, e);
      else rpm_b.emplace(spaced_request_rate(*v, c.request_window, c.spacing_margin), 1, origin, bucket::start::full, e);
      if (e != errc::ok) return e;
    }
    margin_tokens = !strict_for(c.model);
    if (auto v = c.tpm.value()) {
      if (token_limiter(c) == limiter::strict_window) {
        tpm_w.emplace(rate(*v, c.token_window), origin, e);
      } else {
        const auto r = spaced_token_rate(*v, c.max_request_tokens, c.token_window, c.spacing_margin);
        if (!r) return errc::too_large;  // the margin must leave room: max_request_tokens < limit
        tpm_b.emplace(*r, 1, origin, bucket::start::full, e);
      }
      if (e != errc::ok) return e;
    }
    if (auto v = c.tpd.value()) {
      if (day_limiter(c) == limiter::calendar_day) day_q.emplace(*v, c.utc_offset, unix_time_at_zero(c), e);
      else tpd_w.emplace(rate(*v, std::chrono::hours(24)), origin, e);
      if (e != errc::ok) return e;
    } else {
      day_origin = unix_time_at_zero(c);
      day_offset = c.utc_offset;
    }
    if (c.budget) money.emplace(*c.budget, e);
    return e;
  }

  // Where the calendar day's `now` is in Unix time (config.hpp).
  static nanoseconds unix_time_at_zero(const config_type& c) noexcept {
    if (c.unix_time_at_zero) return *c.unix_time_at_zero;
    if (detail::reads_unix_time<Clock>::value) return nanoseconds(0);
    const nanoseconds wall = system_clock::now(), here = Clock::now();
    const detail::i128 d = static_cast<detail::i128>(wall.count()) - here.count();
    constexpr detail::i128 top = std::numeric_limits<std::int64_t>::max(), bottom = std::numeric_limits<std::int64_t>::min();
    return nanoseconds(static_cast<std::int64_t>(d > top ? top : d < bottom ? bottom : d));
  }
  // Whether tier `t` enforces exactly the dimensions these limiters do.
  bool same_dimensions(const tier_row& t) const noexcept {
    auto need = [](bool have, const limit& l) { return have != l.is_finite(); };
    return !(need(conc.has_value(), t.concurrency) || need(rpm_w || rpm_b, t.rpm) || need(tpm_w || tpm_b, t.tpm) ||
             need(tpd_w || day_q, t.tpd));
  }
  // The rate limits of `t`, live (concurrency is set by the caller, first).
  errc set_rate_limits(const config_type& c, const tier_row& t, nanoseconds now) noexcept {
    using namespace account_policy;
    errc e = errc::ok;
    if (rpm_w && (e = rpm_w->set_limit(*t.rpm.value())) != errc::ok) return e;
    if (rpm_b && (e = rpm_b->set_rate(spaced_request_rate(*t.rpm.value(), c.request_window, c.spacing_margin), now)) != errc::ok) return e;
    if (tpm_w && (e = tpm_w->set_limit(*t.tpm.value())) != errc::ok) return e;
    if (tpm_b) {
      const auto r = spaced_token_rate(*t.tpm.value(), c.max_request_tokens, c.token_window, c.spacing_margin);
      if (!r) return errc::too_large;
      if ((e = tpm_b->set_rate(*r, now)) != errc::ok) return e;
    }
    if (tpd_w && (e = tpd_w->set_limit(*t.tpd.value())) != errc::ok) return e;
    if (day_q && (e = day_q->set_limit(*t.tpd.value())) != errc::ok) return e;
    return errc::ok;
  }

  // The ticket a window gave (or would have given) for `tokens` in `slot`.
  static window_ticket ticket_for(const window& w, std::uint64_t slot, std::uint64_t tokens) noexcept {
    const std::uint64_t u = w.unit();
    return window_ticket{slot, tokens, tokens == 0 || u == 0 ? 0 : tokens <= u ? 1 : detail::ceil_div(tokens, u)};
  }
  // One request back (its window slot, or its bucket ticket's end and configuration).
  void give_request(std::uint64_t slot, std::uint64_t cfg, nanoseconds now) noexcept {
    if (rpm_w) {
      window_ticket t = ticket_for(*rpm_w, slot, 1);
      (void)rpm_w->refund(t, 1);
    }
    if (rpm_b) {
      bucket_ticket t{slot, 1, cfg};
      (void)rpm_b->refund(t, 1, now);
    }
  }
  // Tokens through the spaced bucket: it takes 1 (the previous request's
  // emission time must have passed) and charges the other n - 1, in one step
  // whose ticket (end in `slot`, configuration in `cfg`) a later refund needs.
  static bool take_spaced(bucket& b, std::uint64_t& slot, std::uint64_t& cfg, std::uint64_t n, nanoseconds now) noexcept {
    bucket_ticket t;
    const bool ok = b.try_acquire_and_charge(1, n - 1, now, t).admitted();
    slot = t.end;
    cfg = t.config;
    return ok;
  }
  // Gives back n of the `reserved` tokens counted in `slot` (a bucket: as
  // its ticket, `slot` and `cfg`, allows).
  static void give_tokens(std::optional<window>& w, std::optional<bucket>& b, std::uint64_t slot, std::uint64_t cfg,
                          std::uint64_t reserved, std::uint64_t n, nanoseconds now) noexcept {
    if (w) {
      window_ticket t = ticket_for(*w, slot, reserved);
      (void)w->refund(t, n);
    }
    if (b) {
      bucket_ticket t{slot, reserved, cfg};
      (void)b->refund(t, n, now);
    }
  }
  static void charge_tokens(std::optional<window>& w, std::optional<bucket>& b, std::uint64_t n, nanoseconds now) noexcept {
    if (w) w->charge(n, now);
    if (b) b->charge(n, now);
  }
  // Usage beyond the reservation: a debt that later admissions wait out.
  void charge_debt(std::uint64_t n, nanoseconds now) noexcept {
    charge_tokens(tpm_w, tpm_b, n, now);
    if (day_q) day_q->charge(n, now);
    else charge_tokens(tpd_w, tpd_b, n, now);
  }

  // The least pause after a 429 of the request (or token) limit: the larger
  // of one emission interval of that limit (W / L rounded up; for the spaced
  // policy, its interval in force) and the account's own wait for one unit of
  // it. The server refused although the account may have had room: it counts
  // differently (another client, another window), so wait at least for the
  // spacing the limit itself implies.
  nanoseconds own_wait(bool requests, nanoseconds now) const noexcept {
    const std::optional<window>& w = requests ? rpm_w : tpm_w;
    const std::optional<bucket>& b = requests ? rpm_b : tpm_b;
    nanoseconds t{0}, own{0};
    if (w) {
      t = account_policy::emission_interval(w->window(), w->limit());
      const decision d = w->time_until(1, now);
      if (d.later() && d.why() != reason::stale_time) own = d.retry_after();
    }
    if (b) {
      t = b->interval();
      const decision d = b->time_until(1, now);
      if (d.later()) own = d.retry_after();
    }
    return t > own ? t : own;
  }
  // Until the daily limit is back to full.
  nanoseconds daily_reset(nanoseconds now) const noexcept {
    if (day_q) return day_q->reset_in(now);
    if (tpd_w) return tpd_w->empty_in(now);
    if (tpd_b) return tpd_b->full_in(now);
    return account_policy::until_midnight(now, day_origin, day_offset);
  }

  // What pause_after needs from the limiters (account/pause.hpp).
  account_policy::own_waits waits(nanoseconds now) const noexcept {
    account_policy::own_waits w;
    w.request_limit = rpm_w || rpm_b;
    if (w.request_limit) w.request = own_wait(true, now);
    if (tpm_w || tpm_b) w.token = own_wait(false, now);
    w.daily_reset = daily_reset(now);
    return w;
  }
  // The strict window of kind k (0 requests, 1 tokens, 2 the day), if any.
  window* strict(unsigned k) noexcept {
    std::optional<window>& w = k == 0 ? rpm_w : k == 1 ? tpm_w : tpd_w;
    return w ? &*w : nullptr;
  }

  // Every time-based dimension's answer for a request of n tokens (peeks).
  // `rpm_w_until`, `tpm_w_until`: how long the strict windows still decide
  // (learn.hpp: 0 once spaced, what is left of the "both" phase during it);
  // a window's wait is cut there, since from then on the bucket alone
  // decides and its wait is reported beside this one.
  static constexpr nanoseconds always = nanoseconds::max();
  void report(account_policy::refusal& r, std::uint64_t n, nanoseconds now, nanoseconds rpm_w_until = always,
              nanoseconds tpm_w_until = always) const noexcept {
    if (rpm_w && rpm_w_until > nanoseconds(0)) r.note(dimension::rpm, cut(ahead(*rpm_w, 1, now), rpm_w_until));
    if (rpm_b) r.note(dimension::rpm, rpm_b->time_until(1, now));
    if (tpm_w && tpm_w_until > nanoseconds(0)) r.note(dimension::tpm, cut(ahead(*tpm_w, n, now), tpm_w_until));
    if (tpm_b) r.note(dimension::tpm, tpm_b->time_until(1, now));
    if (tpd_w) r.note(dimension::tpd, ahead(*tpd_w, n, now));
    if (tpd_b) r.note(dimension::tpd, tpd_b->time_until(1, now));
    if (day_q) r.note(dimension::tpd, ahead(*day_q, n, now));
  }
  // A refusal that lasts at most `until` (> 0): a wait of at most that, the
  // same dimension still named.
  static decision cut(decision d, nanoseconds until) noexcept {
    if (until == always || d.admitted() || (d.later() && d.retry_after() <= until)) return d;
    return decision::wait(until, d.later() ? d.why() : reason::exhausted);
  }
  // A window's or the quota's wait for n at `now`, exact also for a `now`
  // older than one it has seen (a08): such a `now` is refused as stale with
  // the time to its head slot (or day), so the wait is that time plus the
  // wait at the head, the first time it can decide.
  template <class Limiter>
  static decision ahead(const Limiter& x, std::uint64_t n, nanoseconds now) noexcept {
    const decision d = x.time_until(n, now);
    if (!d.later() || d.why() != reason::stale_time) return d;
    const std::int64_t gap = d.retry_after().count();  // > 0
    const decision there = x.time_until(n, nanoseconds(detail::sat_offset(now.count(), static_cast<std::uint64_t>(gap))));
    if (there.never()) return there;
    const std::int64_t more = there.later() ? there.retry_after().count() : 0;
    return decision::wait(nanoseconds(detail::sat_offset(gap, static_cast<std::uint64_t>(more))));
  }

  // The time-based dimensions and money of remaining(); held(k) is what
  // window k (rpm, tpm, tpd) holds as credit in now's slot, in units.
  template <class Held>
  void remaining(basic_remaining_view<Currency>& v, nanoseconds now, std::uint64_t max_request_tokens,
                 Held&& held) const noexcept {
    if (rpm_w) v.requests = rpm_w->available(now) + held(0u) * rpm_w->unit();
    if (rpm_b) v.requests = rpm_b->available(now);
    if (tpm_w) v.tokens_minute = tpm_w->available(now) + held(1u) * tpm_w->unit();
    if (tpm_b) v.tokens_minute = tpm_b->available(now) > 0 ? max_request_tokens : 0;  // one request at a time
    if (tpd_w) v.tokens_day = tpd_w->available(now) + held(2u) * tpd_w->unit();
    if (day_q) v.tokens_day = day_q->available(now);
    if (money) v.budget = money->remaining();
    if (rpm_w) v.requests_reset_in = rpm_w->empty_in(now);
    if (rpm_b) v.requests_reset_in = rpm_b->full_in(now);
    if (tpm_w) v.tokens_minute_reset_in = tpm_w->empty_in(now);
    if (tpm_b) v.tokens_minute_reset_in = tpm_b->full_in(now);
    if (tpd_w) v.tokens_day_reset_in = tpd_w->empty_in(now);
    if (day_q) v.tokens_day_reset_in = day_q->reset_in(now);
  }

  const char* policy(dimension d) const noexcept {
    using account_policy::limiter;
    using account_policy::to_string;
    switch (d) {
      case dimension::rpm: return to_string(rpm_w ? limiter::strict_window : rpm_b ? limiter::spaced : limiter::none);
      case dimension::tpm: return to_string(tpm_w ? limiter::strict_window : tpm_b ? limiter::spaced : limiter::none);
      case dimension::tpd:
        return to_string(day_q ? limiter::calendar_day : tpd_w ? limiter::strict_window : tpd_b ? limiter::spaced : limiter::none,
                         true);
      default: return "";
    }
  }
};

}  // namespace detail

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_ACCOUNT_LIMITERS_HPP
