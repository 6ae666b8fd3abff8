// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// account/learn.hpp: server_model::learn: start on the permissive policy,
// move to the safe one when the server says so.
//
// The rule. The request limit and the token limit each start on the most
// permissive policy that is safe against most of the five server models: the
// strict window at L (safe against fixed window, sliding log, token bucket:
// docs/server-models.md) where, saturated, it admits more than the margin
// policy (starts_strict: small limits, RPM 3 say, or a token margin m above
// about L / 16), else the margin policy itself (safe against all five; nothing
// left to learn but the margin). The first rate 429 that names the dimension
// (the classifier in http.hpp: Kimi's "max RPM", "TPM rate limit", OpenAI's
// type "requests" / "tokens") switches it to the margin policy of `unknown`
// (spaced with margin, safe against all five). A rate 429 that names no
// dimension ("Organization Rate limit exceeded") switches every dimension
// still on the strict window. Concurrency, daily (TPD) and overload answers
// teach nothing here: they pause as under every model (pause.hpp), and the
// daily limit keeps its strict 24 h window.
//
// The switch. For one window after it (W of that dimension) a request must
// pass both the strict window and the spaced bucket; from then on, the
// bucket alone. While on the strict window every admission is also charged
// to a shadow: the time the spaced bucket would next admit had it seen the
// same traffic, capped at now + 2L intervals (what the strict window can
// admit in two windows). The bucket starts from the shadow, so the first
// spaced request is spaced from the strict traffic that came before it
// (the window counter's previous period and the GCRA server's arrival time
// both see that traffic). 429s refund nothing here: the server may count
// them (Kimi does not bill them; a counter counts them anyway).
//
// The margin. account_config::spacing_margin (2 ms) is what the margin
// policy adds per request, and to the token window, for a millisecond
// server clock and delivery jitter. A 429 naming a dimension that switched
// earlier, once the pause its switch caused is over (so the request it
// answers was admitted under the margin policy), shows more jitter than
// assumed: the margin doubles, at most to max_spacing_margin (256 ms), for
// both dimensions at once (set_rate keeps what each bucket has counted),
// and from the first widening on each token request is also spaced by the
// margin from the next (it charges ceil(margin / interval) tokens more):
// without that, a small request spaced n (W + margin) / (L - m) before the
// next can reach a GCRA server closer than n W / L, whatever the margin. A
// 429 during that pause widens nothing (it may answer a request admitted
// before the switch).
//
// Bound (tests/test_learn.cpp checks it against the five server models of
// tests/server_models.hpp, with and without 2 ms of delivery jitter, with
// the windows at W + J as policy.hpp asks under jitter J): a caller that
// feeds each answer back (on_response) before its next admission gets at
// most one 429 per rate dimension per account lifetime, and none from a
// fixed-window, sliding-log or token-bucket server; the one 429 comes from
// the sliding-window counter or the GCRA server. The exception is the one
// where the margin policy itself is not safe (tokens against a GCRA server
// with jitter): there learn gets no more 429s than `unknown` plus the one of
// its switch (each later one widens the margin, which `unknown` never does).
// Requests admitted before the first 429 was fed back (in flight, or racing
// on_response) may get 429s too: at most one per such request. After the
// switch's window, throughput is exactly the margin policy's. The caller
// resends every 429'd request; the account loses none.
//
// Lifetime and restarts. The learned state is per dimension when it
// switched, its guard, its shadow and what its spaced bucket owes, and the
// margin: plain integers in nanoseconds. The snapshot (format 3,
// snapshot.hpp) carries them, aged by the wall-clock time between snapshot
// and restore like the window counts, so "account lifetime" above spans
// every account restored from its snapshots in turn: a restore admits
// nothing the account would not have admitted without it. A snapshot
// taken while admissions or answers race it keeps each word on one side of
// the race (the in-flight case of the bound). A format 2 snapshot (earlier
// versions) carries none of them: restored from one, the account starts
// learning again (the bound then counts from the restore, and a restore
// less than two windows after heavy traffic may cost one more 429 per
// dimension). The decisions are the pure functions below (phase_at,
// learn_from, widened_margin); a shared-memory or Redis backend that keeps
// these words beside its state can apply them; only the in-process one does.
//
// Concurrency. Every operation is lock-free (a widening or set_limits sets
// the buckets' rates: token_bucket's writers take no lock). The switch word is written
// once (release, after the bucket is charged from the shadow) and read with
// acquire by admissions, so one that sees the switch sees the bucket's
// state; the shadow and the margin are lone values (relaxed).
#ifndef TOLLGATE_ACCOUNT_LEARN_HPP
#define TOLLGATE_ACCOUNT_LEARN_HPP

#include <tollgate/config.hpp>
#include <tollgate/account/config.hpp>
#include <tollgate/account/learn_rules.hpp>
#include <tollgate/account/pause.hpp>
#include <tollgate/account/policy.hpp>
#include <tollgate/bucket_ticket.hpp>
#include <tollgate/clock.hpp>
#include <tollgate/decision.hpp>
#include <tollgate/detail/arith.hpp>
#include <tollgate/detail/atomic.hpp>
#include <tollgate/error.hpp>
#include <tollgate/http.hpp>
#include <tollgate/sliding_window.hpp>
#include <tollgate/tiers.hpp>
#include <tollgate/token_bucket.hpp>

#include <cstdint>
#include <limits>
#include <optional>

TOLLGATE_BEGIN_NAMESPACE

// What learning has done so far (account::learned()).
struct learned_view {
  account_policy::learn_phase requests = account_policy::learn_phase::strict;
  account_policy::learn_phase tokens = account_policy::learn_phase::strict;
  std::optional<nanoseconds> requests_switched_at, tokens_switched_at;
  nanoseconds margin{0};       // the spacing margin in force
  std::uint64_t switches = 0;  // dimensions switched
  std::uint64_t widenings = 0;
};

namespace detail {

template <class Clock>
class learn_state {
 public:
  using bucket = token_bucket<Clock>;
  using phase = account_policy::learn_phase;
  struct phases {
    phase requests = phase::strict;
    phase tokens = phase::strict;
  };
  // Lease token tickets (lease::tpm_c_) under learn: a bucket configuration
  // is a small counter, never one of these.
  static constexpr std::uint64_t window_ticket = std::numeric_limits<std::uint64_t>::max();
  static constexpr std::uint64_t no_refund = std::numeric_limits<std::uint64_t>::max() - 1;

  // The sub-windows of the account's strict windows (sliding_window's default).
  static constexpr std::uint64_t strict_subwindows = sliding_window<Clock>::subwindows;

  bool on() const noexcept { return on_; }
  bool has(unsigned k) const noexcept { return b_[k].has_value(); }

  template <class Currency>
  errc build(const basic_account_config<Currency>& c, nanoseconds origin) noexcept {
    if (c.model != server_model::learn) return errc::ok;
    if (c.max_spacing_margin < c.spacing_margin) return errc::zero_period;
    on_ = true;
    window_[0] = c.request_window;
    window_[1] = c.token_window;
    m_ = c.max_request_tokens;
    cap_ = c.max_spacing_margin;
    base_margin_ = c.spacing_margin;
    margin_.store(c.spacing_margin.count(), std::memory_order_relaxed);  // relaxed: construction precedes sharing
    errc e = errc::ok;
    const std::optional<std::uint64_t> l[2] = {c.rpm.value(), c.tpm.value()};
    for (unsigned k = 0; k < 2; ++k) {
      if (!l[k]) continue;
      limit_[k].store(*l[k], std::memory_order_relaxed);  // relaxed: as above
      const std::optional<rate> r = rate_for(k, *l[k], c.spacing_margin);
      if (!r) return errc::too_large;  // the margin must leave room: max_request_tokens < limit
      b_[k].emplace(*r, 1, origin, bucket::start::full, e);
      if (e != errc::ok) return e;
      unit_[k].store(b_[k]->interval().count(), std::memory_order_relaxed);  // relaxed: as above
      if (!account_policy::starts_strict(*l[k], window_[k], *r, strict_subwindows)) {
        // Spaced from the start: switched long ago, guard passed, nothing to switch.
        started_spaced_[k] = true;
        claimed_[k].store(true, std::memory_order_relaxed);  // relaxed: as above
        switched_[k].store(std::numeric_limits<std::int64_t>::min(), std::memory_order_relaxed);
        guard_[k].store(std::numeric_limits<std::int64_t>::min(), std::memory_order_relaxed);
      }
    }
    return errc::ok;
  }

  phases phases_at(nanoseconds now) const noexcept {
    phases p;
    if (b_[0]) p.requests = phase_of(0, now);
    if (b_[1]) p.tokens = phase_of(1, now);
    return p;
  }

  // How long dimension k's strict window still decides at `now` (p its
  // phase): to the end of the "both" phase, 0 once spaced, unbounded
  // before the switch (limiters::always).
  nanoseconds window_left(unsigned k, phase p, nanoseconds now) const noexcept {
    if (!b_[k] || p == phase::strict) return nanoseconds::max();
    if (p == phase::spaced) return nanoseconds(0);
    // acquire: as in phase_of.
    const std::int64_t s = switched_[k].load(std::memory_order_acquire);
    const std::uint64_t w = window_[k].count() > 0 ? static_cast<std::uint64_t>(window_[k].count()) : 0;
    return nanoseconds(static_cast<std::int64_t>(positive_difference(sat_offset(s, w), now.count())));
  }

  // Strict phase: the spaced bucket's next admission had it seen n units
  // at now, at most 2L intervals ahead; never moved back.
  void shadow(unsigned k, std::uint64_t n, nanoseconds now) noexcept {
    if (n == 0 || !b_[k]) return;
    // relaxed: lone values (see the header).
    const std::uint64_t unit = static_cast<std::uint64_t>(unit_[k].load(std::memory_order_relaxed));
    const std::uint64_t l = limit_[k].load(std::memory_order_relaxed);
    const std::int64_t top = sat_offset(now.count(), sat_mul(sat_mul(2, l), unit));
    std::int64_t cur = shadow_[k].load(std::memory_order_relaxed);  // relaxed: a lone value
    for (;;) {
      std::int64_t next = sat_offset(cur > now.count() ? cur : now.count(), sat_mul(n, unit));
      if (next > top) next = top;
      if (next <= cur) return;
      // relaxed: the switch reads it as a lone value; racing charges are the
      // in-flight case of the bound.
      if (shadow_[k].compare_exchange_weak(cur, next, std::memory_order_relaxed, std::memory_order_relaxed)) return;
    }
  }

  // Both or spaced phase: one request at a time (1 unit taken, n - 1 and
  // the per-request spacing charged).
  bool take(unsigned k, std::uint64_t n, nanoseconds now, bucket_ticket& t) noexcept {
    if (n == 0 || !b_[k]) return true;
    // relaxed: a lone value (see install).
    const std::uint64_t extra = k == 1 ? spacing_tokens_.load(std::memory_order_relaxed) : 0;
    return b_[k]->try_acquire_and_charge(1, sat_add(n - 1, extra), now, t).admitted();
  }
  void give(unsigned k, bucket_ticket& t, std::uint64_t n, nanoseconds now) noexcept {
    if (b_[k]) (void)b_[k]->refund(t, n, now);
  }

  // The answer's lesson (learn_from), applied. Returns what it did; the
  // caller then says when the pause it sets ends (guard).
  account_policy::learn_step learn(error_kind kind, nanoseconds now) noexcept {
    if (!on_) return {};
    const account_policy::learn_step s = account_policy::learn_from(kind, stage(0, now), stage(1, now));
    if (s.switch_requests) switch_to_spaced(0, now);
    if (s.switch_tokens) switch_to_spaced(1, now);
    if (s.widen) widen(now);
    return s;
  }
  // The dimensions `s` switched widen on 429s from `end` on (the end of the
  // pause their switch caused: a 429 before it may answer a request
  // admitted before the switch). The first guard set stands.
  void guard(const account_policy::learn_step& s, nanoseconds end) noexcept {
    const bool sw[2] = {s.switch_requests, s.switch_tokens};
    for (unsigned k = 0; k < 2; ++k) {
      std::int64_t expected = account_policy::not_switched;
      // relaxed: a lone value.
      if (sw[k]) guard_[k].compare_exchange_strong(expected, end.count(), std::memory_order_relaxed, std::memory_order_relaxed);
    }
  }

  // The own waits of a switched dimension come from its bucket (both: the
  // later of the bucket's and the window's).
  void adjust(account_policy::own_waits& w, nanoseconds now) const noexcept {
    if (!on_) return;
    const phases p = phases_at(now);
    if (b_[0] && p.requests != phase::strict) {
      const nanoseconds x = own_wait(0, now);
      w.request = p.requests == phase::spaced || x > w.request ? x : w.request;
    }
    if (b_[1] && p.tokens != phase::strict) {
      const nanoseconds x = own_wait(1, now);
      w.token = p.tokens == phase::spaced || x > w.token ? x : w.token;
    }
  }

  // A refusal's waits from the buckets of switched dimensions.
  void report(account_policy::refusal& r, std::uint64_t n, nanoseconds now, phases p) const noexcept {
    if (b_[0] && p.requests != phase::strict) r.note(dimension::rpm, b_[0]->time_until(1, now));
    if (b_[1] && p.tokens != phase::strict && n > 0) r.note(dimension::tpm, b_[1]->time_until(1, now));
  }

  // remaining(): a switched dimension reports its bucket (both: the smaller
  // amount and the later reset).
  template <class View>
  void remaining(View& v, nanoseconds now, std::uint64_t max_request_tokens) const noexcept {
    if (!on_) return;
    const phases p = phases_at(now);
    if (b_[0] && p.requests != phase::strict) {
      const std::uint64_t a = b_[0]->available(now);
      const nanoseconds f = b_[0]->full_in(now);
      const bool only = p.requests == phase::spaced || !v.requests;
      v.requests = only || a < *v.requests ? a : *v.requests;
      v.requests_reset_in = only || f > v.requests_reset_in ? f : v.requests_reset_in;
    }
    if (b_[1] && p.tokens != phase::strict) {
      const std::uint64_t a = b_[1]->available(now) > 0 ? max_request_tokens : 0;  // one request at a time
      const nanoseconds f = b_[1]->full_in(now);
      const bool only = p.tokens == phase::spaced || !v.tokens_minute;
      v.tokens_minute = only || a < *v.tokens_minute ? a : *v.tokens_minute;
      v.tokens_minute_reset_in = only || f > v.tokens_minute_reset_in ? f : v.tokens_minute_reset_in;
    }
  }

  // New limits (set_limits): the buckets keep what they counted.
  errc set_limits(const tier_row& t, nanoseconds now) noexcept {
    const std::optional<std::uint64_t> l[2] = {t.rpm.value(), t.tpm.value()};
    for (unsigned k = 0; k < 2; ++k) {
      if (!b_[k] || !l[k]) continue;
      const std::int64_t m = margin_.load(std::memory_order_relaxed);  // relaxed: a lone value
      if (!rate_for(k, *l[k], nanoseconds(m))) return errc::too_large;
      limit_[k].store(*l[k], std::memory_order_relaxed);  // relaxed: a lone value, re-read by install
    }
    return install(now);
  }

  const char* policy(dimension d) const noexcept {
    const unsigned k = d == dimension::rpm ? 0 : 1;
    if ((d != dimension::rpm && d != dimension::tpm) || !b_[k]) return nullptr;
    // acquire: as in phase_of.
    if (started_spaced_[k]) return "spaced with margin (admits more here than the strict window)";
    return switched_[k].load(std::memory_order_acquire) == account_policy::not_switched
               ? "strict window (learning)"
               : "spaced with margin (learned)";
  }

  // Snapshot support (snapshot.hpp, format 3): the learned words as times
  // relative to the snapshot's `now`. Per dimension with a bucket: the time
  // since the switch, the time left of its guard (none_word: not switched,
  // not set), the shadow's lead and what the spaced bucket owes; then the
  // margin and the widenings.
  static constexpr std::uint64_t none_word = std::numeric_limits<std::uint64_t>::max();
  struct saved_words {
    std::uint64_t since[2] = {none_word, none_word}, guard[2] = {none_word, none_word};
    std::uint64_t lead[2] = {0, 0}, owed[2] = {0, 0};
    std::uint64_t margin = 0, widenings = 0;
  };
  // Defined in account/learn_snapshot.hpp (included at the end of this header).
  saved_words save(nanoseconds now) const noexcept;
  bool fits(const saved_words& w) const noexcept;
  void load(const saved_words& w, nanoseconds now, std::uint64_t down) noexcept;

  learned_view view(nanoseconds now) const noexcept {
    learned_view v;
    const phases p = phases_at(now);
    v.requests = p.requests;
    v.tokens = p.tokens;
    std::optional<nanoseconds>* at[2] = {&v.requests_switched_at, &v.tokens_switched_at};
    for (unsigned k = 0; k < 2; ++k) {
      const std::int64_t s = switched_[k].load(std::memory_order_acquire);  // acquire: as in phase_of
      if (b_[k] && !started_spaced_[k] && s != account_policy::not_switched) *at[k] = nanoseconds(s);
    }
    v.margin = nanoseconds(margin_.load(std::memory_order_relaxed));  // relaxed: a lone value
    v.switches = switches_.load(std::memory_order_relaxed);           // relaxed: a counter
    v.widenings = widenings_.load(std::memory_order_relaxed);         // relaxed: a counter
    return v;
  }

 private:
  account_policy::learn_stage stage(unsigned k, nanoseconds now) const noexcept {
    // acquire: as in phase_of; relaxed: a lone value.
    return account_policy::stage_at(b_[k].has_value(), switched_[k].load(std::memory_order_acquire),
                                    guard_[k].load(std::memory_order_relaxed), now);
  }
  phase phase_of(unsigned k, nanoseconds now) const noexcept {
    // acquire: pairs with the release store in switch_to_spaced, so an
    // admission that sees the switch sees the bucket charged from the shadow.
    return account_policy::phase_at(switched_[k].load(std::memory_order_acquire), window_[k], now);
  }

  std::optional<rate> rate_for(unsigned k, std::uint64_t l, nanoseconds margin) const noexcept {
    if (k == 0) return account_policy::spaced_request_rate(l, window_[0], margin);
    return account_policy::spaced_token_rate(l, m_, window_[1], margin);
  }

  nanoseconds own_wait(unsigned k, nanoseconds now) const noexcept {
    const nanoseconds t = b_[k]->interval();
    const decision d = b_[k]->time_until(1, now);
    return d.later() && d.retry_after() > t ? d.retry_after() : t;
  }

  void switch_to_spaced(unsigned k, nanoseconds now) noexcept {
    // acq_rel on success: one switcher; the flag publishes nothing else.
    // relaxed on failure: another answer is switching it.
    bool expected = false;
    if (!claimed_[k].compare_exchange_strong(expected, true, std::memory_order_acq_rel, std::memory_order_relaxed))
      return;
    // The bucket has not been used: full, it admits at now; charging it the
    // shadow's lead moves its next admission to the shadow's time or later.
    const std::int64_t lead = shadow_[k].load(std::memory_order_relaxed);  // relaxed: a lone value
    const std::int64_t base = lead > now.count() ? lead : now.count();
    charge_lead(k, lead, now.count(), now);
    // release: pairs with the acquire in phase_of (see there).
    switched_[k].store(now.count(), std::memory_order_release);
    switches_.fetch_add(1, std::memory_order_relaxed);  // relaxed: a counter
    // Strict admissions that charged the shadow meanwhile: their lead too.
    const std::int64_t later = shadow_[k].load(std::memory_order_relaxed);  // relaxed: a lone value
    charge_lead(k, later, base, now);
  }
  // Charges the bucket the whole intervals that cover `from` to `until`, as
  // of the time (at most one interval before now) from which they end at
  // `until` exactly: the bucket, unused until now, then next admits at
  // `until` (later if it saw later times: the safe side).
  void charge_lead(unsigned k, std::int64_t until, std::int64_t from, nanoseconds now) noexcept {
    if (until <= from) return;
    const std::uint64_t unit = static_cast<std::uint64_t>(unit_[k].load(std::memory_order_relaxed));  // relaxed: lone
    if (unit == 0) return;
    const std::uint64_t n = ceil_div(positive_difference(until, from), unit);
    const std::uint64_t span = sat_mul(n, unit);
    const std::int64_t at = span >= positive_difference(until, std::numeric_limits<std::int64_t>::min())
                                ? now.count()
                                : static_cast<std::int64_t>(static_cast<std::uint64_t>(until) - span);
    b_[k]->charge(n, nanoseconds(at < now.count() ? at : now.count()));
  }

  void widen(nanoseconds now) noexcept {
    std::int64_t m = margin_.load(std::memory_order_relaxed);  // relaxed: a lone value
    const std::int64_t w = account_policy::widened_margin(nanoseconds(m), cap_).count();
    // relaxed: a lone value; the buckets are reconfigured below from it.
    if (w <= m || !margin_.compare_exchange_strong(m, w, std::memory_order_relaxed, std::memory_order_relaxed)) return;
    widenings_.fetch_add(1, std::memory_order_relaxed);  // relaxed: a counter
    (void)install(now);  // every rate here was accepted with the widest margin (check_limits)
  }

  // Reconfigures the buckets from the margin and limits in force; again if
  // either moved meanwhile, so the last widening's rates stand.
  errc install(nanoseconds now) noexcept {
    for (unsigned k = 0; k < 2; ++k) {
      if (!b_[k]) continue;
      for (int tries = 0; tries < 64; ++tries) {
        // relaxed: lone values, re-read after the reconfiguration.
        const std::int64_t m = margin_.load(std::memory_order_relaxed);
        const std::uint64_t l = limit_[k].load(std::memory_order_relaxed);
        const std::optional<rate> r = rate_for(k, l, nanoseconds(m));
        if (!r) return errc::too_large;
        const errc e = b_[k]->set_rate(*r, now);
        if (e != errc::ok) return e;
        const std::int64_t unit = b_[k]->interval().count();
        unit_[k].store(unit, std::memory_order_relaxed);  // relaxed: a lone value
        if (k == 1 && widenings_.load(std::memory_order_relaxed) > 0 && unit > 0)  // relaxed: lone values
          spacing_tokens_.store(ceil_div(static_cast<std::uint64_t>(m), static_cast<std::uint64_t>(unit)),
                                std::memory_order_relaxed);
        if (margin_.load(std::memory_order_relaxed) == m && limit_[k].load(std::memory_order_relaxed) == l) break;
      }
    }
    return errc::ok;
  }

  bool on_ = false;
  bool started_spaced_[2] = {false, false};
  nanoseconds window_[2] = {nanoseconds(0), nanoseconds(0)};
  std::uint64_t m_ = 0;
  nanoseconds cap_{0};
  nanoseconds base_margin_{0};
  std::optional<bucket> b_[2];
  detail::atomic<std::int64_t> switched_[2] = {{account_policy::not_switched}, {account_policy::not_switched}};
  detail::atomic<bool> claimed_[2] = {{false}, {false}};
  detail::atomic<std::int64_t> guard_[2] = {{account_policy::not_switched}, {account_policy::not_switched}};
  detail::atomic<std::int64_t> shadow_[2] = {{std::numeric_limits<std::int64_t>::min()},
                                             {std::numeric_limits<std::int64_t>::min()}};
  detail::atomic<std::int64_t> unit_[2] = {{0}, {0}};
  detail::atomic<std::uint64_t> limit_[2] = {{0}, {0}};
  detail::atomic<std::int64_t> margin_{0};
  detail::atomic<std::uint64_t> spacing_tokens_{0};  // tokens charged per request for spacing (after a widening)
  detail::atomic<std::uint64_t> switches_{0}, widenings_{0};
};

}  // namespace detail

TOLLGATE_END_NAMESPACE

#include <tollgate/account/learn_snapshot.hpp>

#endif  // TOLLGATE_ACCOUNT_LEARN_HPP
