// A second state backend for the account's decisions, for tests only.
//
// The in-process account keeps its state in lock-free primitives; this one
// keeps all of it as plain 64-bit integers in one byte buffer (no pointer,
// no atomic: the buffer means the same wherever it is mapped) and guards it
// with a mutex. What it shares with the account is what a shared-memory or
// server-side backend would share: the decisions of account/policy.hpp and
// account/pause.hpp (assess, admission_rules, refusal, clamp_hint,
// pause_after, emission_interval) and the meaning of the state (a strict
// window's slot grid and ring, a permit count, committed and spent money,
// the pause's end and the stop flag). Its window arithmetic is written anew
// from that meaning, so a differential test against the account checks the
// seam, not one implementation against itself.
//
// Scope: strict windows with a unit of 1 (limits below 2^24), concurrency
// without the slot table (lease_timeout zero), a budget, pause and stop;
// limits below 1,024 (no per-thread credit). Not the spaced bucket policy.
#ifndef TOLLGATE_TESTS_ACCOUNT_BACKEND_HPP
#define TOLLGATE_TESTS_ACCOUNT_BACKEND_HPP

#include "tollgate_under_test.hpp"

#include <cstdint>
#include <cstring>
#include <limits>
#include <map>
#include <mutex>
#include <optional>
#include <type_traits>

namespace tgtest {

// The state, as it lies in the buffer.
struct plain_account_state {
  static constexpr std::uint64_t K = 15;  // sub-windows, as sliding_window's default
  struct window {
    std::uint64_t on = 0, limit = 0, width = 1;
    std::int64_t origin = 0, period = 0;
    std::uint64_t head = 0;
    std::uint64_t tag[K + 1] = {}, units[K + 1] = {};
  };
  std::uint64_t conc_on = 0, conc_limit = 0, in_use = 0;
  window w[3];  // requests, tokens per window, tokens per day
  std::uint64_t budget_on = 0;
  std::int64_t budget_limit = 0, committed = 0, spent = 0;
  std::int64_t pause_until = std::numeric_limits<std::int64_t>::min();
  std::uint64_t stopped = 0;
  std::uint64_t started = 0;  // an admission got past the stop and the pause (account.hpp, restore())
};
static_assert(std::is_trivially_copyable<plain_account_state>::value, "the state is plain bytes");

class plain_account {
  using S = plain_account_state;
  using W = S::window;
  using nanoseconds = tollgate::nanoseconds;
  using decision = tollgate::decision;
  using reason = tollgate::reason;
  using dimension = tollgate::dimension;

 public:
  struct admission {
    decision d = decision::refuse(reason::misconfigured);
    tollgate::dimension_set refused;
    std::uint64_t tokens = 0;
    tollgate::money<tollgate::usd_tag> worst_case;
    std::uint64_t lease = 0;  // 0: none
  };

  // Only the configurations this backend covers (see the header).
  static bool covers(const tollgate::account_config& c) {
    using namespace tollgate::account_policy;
    auto small = [](const tollgate::limit& l) { return !l.is_finite() || *l.value() < 1024; };
    return c.lease_timeout == nanoseconds(0) && small(c.concurrency) && small(c.rpm) && small(c.tpm) && small(c.tpd) &&
           request_limiter(c) != limiter::spaced && token_limiter(c) != limiter::spaced &&
           day_limiter(c) != limiter::calendar_day;
  }

  plain_account(const tollgate::account_config& c, nanoseconds origin) : cfg_(c) {
    rules_ = tollgate::account_policy::admission_rules<tollgate::usd_tag>::of(c);
    S s;
    if (auto v = c.concurrency.value()) {
      s.conc_on = 1;
      s.conc_limit = *v;
    }
    const tollgate::limit* ls[3] = {&c.rpm, &c.tpm, &c.tpd};
    const nanoseconds periods[3] = {c.request_window, c.token_window, std::chrono::hours(24)};
    for (int k = 0; k < 3; ++k) {
      if (!ls[k]->is_finite()) continue;
      W& w = s.w[k];
      w.on = 1;
      w.limit = *ls[k]->value();
      w.period = periods[k].count();
      w.width = tollgate::detail::ceil_div(static_cast<std::uint64_t>(w.period), S::K);
      w.origin = origin.count();
    }
    if (c.budget) {
      s.budget_on = 1;
      s.budget_limit = c.budget->nanos();
    }
    store(s);
  }

  admission try_admit(const tollgate::request& r, nanoseconds now) {
    std::lock_guard<std::mutex> g(m_);
    S s = load();
    admission a;
    a.tokens = tollgate::account_policy::assess(r, rules_, a.refused, a.worst_case);
    if (!a.refused.empty()) {
      a.d = decision::refuse(reason::exceeds_capacity);
      return a;
    }
    if (s.stopped) {
      a.refused.add(dimension::stopped);
      a.d = decision::refuse(reason::misconfigured);
      return a;
    }
    const std::uint64_t n = a.tokens;
    if (now.count() < s.pause_until) {
      if (s.started) return refuse(s, a, n, now, tollgate::account_policy::time_left(s.pause_until, now));
      a.refused.add(dimension::paused);  // before traffic: the pause alone
      a.d = decision::wait(tollgate::account_policy::time_left(s.pause_until, now));
      return a;
    }
    s.started = 1;
    store(s);
    // Every dimension or none: check all, then write all (the state is ours
    // under the lock, so nothing changes between).
    if (s.conc_on && s.in_use >= s.conc_limit) return refuse(s, a, n, now);
    const std::uint64_t need[3] = {1, n, n};
    for (int k = 0; k < 3; ++k)
      if (s.w[k].on && need[k] > 0 && !answer(s.w[k], need[k], now).admitted()) return refuse(s, a, n, now);
    if (s.budget_on && (a.worst_case.nanos() > s.budget_limit - s.committed)) return refuse(s, a, n, now);
    held h;
    if (s.conc_on) ++s.in_use;
    for (int k = 0; k < 3; ++k)
      if (s.w[k].on && need[k] > 0) h.slot[k] = add(s.w[k], need[k], now);
    if (s.budget_on) {
      s.committed += a.worst_case.nanos();
      h.money = a.worst_case.nanos();
    }
    h.tokens = n;
    h.model = r.model;
    a.lease = ++next_;
    leases_[a.lease] = h;
    a.d = decision::admit();
    store(s);
    return a;
  }

  void settle(std::uint64_t id, const tollgate::usage& u, nanoseconds now) {
    std::lock_guard<std::mutex> g(m_);
    auto it = leases_.find(id);
    if (it == leases_.end()) return;
    S s = load();
    const held& h = it->second;
    const std::uint64_t used = tollgate::detail::sat_add(u.prompt, u.completion);
    if (used > h.tokens) {
      for (int k = 1; k < 3; ++k)
        if (s.w[k].on) charge(s.w[k], used - h.tokens, now);
    } else if (cfg_.refund_unused_tokens && used < h.tokens) {
      for (int k = 1; k < 3; ++k)
        if (s.w[k].on) give_back(s.w[k], h.slot[k], h.tokens - used);
    }
    if (s.budget_on) {
      // An uncomputable cost keeps the whole reservation as spent.
      std::int64_t actual = h.money;
      if (h.model) {
        const auto c = tollgate::cost(*h.model, u);
        if (c) actual = c.total.nanos();
      }
      s.committed += actual - h.money;
      s.spent += actual;
    }
    release(s, it);
  }
  void settle_rejected(std::uint64_t id) {
    std::lock_guard<std::mutex> g(m_);
    auto it = leases_.find(id);
    if (it == leases_.end()) return;
    S s = load();
    if (s.budget_on) s.committed -= it->second.money;
    release(s, it);
  }
  void drop(std::uint64_t id) {
    std::lock_guard<std::mutex> g(m_);
    auto it = leases_.find(id);
    if (it == leases_.end()) return;
    S s = load();
    release(s, it);
  }

  void on_response(const tollgate::error_info& e, std::optional<nanoseconds> hint, nanoseconds now) {
    using namespace tollgate::account_policy;
    std::lock_guard<std::mutex> g(m_);
    S s = load();
    const clamped_hint h = clamp_hint(e.kind, hint, e.hint, cfg_.max_pause);
    own_waits w;
    w.request_limit = s.w[0].on != 0;
    if (s.w[0].on) w.request = own_wait(s.w[0], now);
    if (s.w[1].on) w.token = own_wait(s.w[1], now);
    // Without a daily limit: the next midnight at utc_offset (a manual
    // clock reads Unix time unless the configuration says otherwise).
    if (s.w[2].on) w.daily_reset = empty_in(s.w[2], now);
    else w.daily_reset = until_midnight(now, cfg_.unix_time_at_zero.value_or(nanoseconds(0)), cfg_.utc_offset);
    const response_decision r = pause_after(e.kind, h.hint, w);
    if (r.action == response_action::stop) s.stopped = 1;
    if (r.action == response_action::pause) {
      const std::int64_t until = tollgate::detail::sat_offset(now.count(), static_cast<std::uint64_t>(r.pause.count()));
      if (until > s.pause_until) s.pause_until = until;
    }
    store(s);
  }
  void resume() {
    std::lock_guard<std::mutex> g(m_);
    S s = load();
    s.stopped = 0;
    store(s);
  }

  void clear_pause() {
    std::lock_guard<std::mutex> g(m_);
    S s = load();
    s.pause_until = std::numeric_limits<std::int64_t>::min();
    store(s);
  }

  std::uint64_t in_flight() {
    std::lock_guard<std::mutex> g(m_);
    return load().in_use;
  }
  std::int64_t committed() {
    std::lock_guard<std::mutex> g(m_);
    return load().committed;
  }
  // What window k could still admit at `now` (as sliding_window::available).
  std::uint64_t available(int k, nanoseconds now) {
    std::lock_guard<std::mutex> g(m_);
    S s = load();
    const W& w = s.w[k];
    std::uint64_t t = slot_at(w, now);
    if (t < w.head) t = w.head;
    const std::uint64_t used = sum(w, t);
    return used >= w.limit ? 0 : w.limit - used;
  }

 private:
  struct held {
    std::uint64_t slot[3] = {};
    std::uint64_t tokens = 0;
    std::int64_t money = 0;
    const tollgate::model_info* model = nullptr;  // process-local, like the lease object
  };

  S load() const {
    S s;
    std::memcpy(&s, bytes_, sizeof s);
    return s;
  }
  void store(const S& s) { std::memcpy(bytes_, &s, sizeof s); }

  void release(S& s, std::map<std::uint64_t, held>::iterator it) {
    if (s.conc_on && s.in_use > 0) --s.in_use;
    leases_.erase(it);
    store(s);
  }

  // --- A strict window over plain integers: slot j counts in [j - K, j].
  static std::uint64_t slot_at(const W& w, nanoseconds now) {
    return tollgate::detail::positive_difference(now.count(), w.origin) / w.width;
  }
  static std::int64_t slot_start(const W& w, std::uint64_t j) {
    return tollgate::detail::sat_offset(w.origin, tollgate::detail::sat_mul(j, w.width));
  }
  static std::uint64_t units_in(const W& w, std::uint64_t j) {
    if (j > w.head) return 0;
    const std::uint64_t i = j % (S::K + 1);
    return w.tag[i] == j ? w.units[i] : 0;
  }
  static std::uint64_t sum(const W& w, std::uint64_t s) {  // slots s - K .. s
    std::uint64_t t = 0;
    for (std::uint64_t j = s >= S::K ? s - S::K : 0; j <= s; ++j) t += units_in(w, j);
    return t;
  }
  // The first later slot whose window holds at most `room`, as a wait.
  static nanoseconds wait_for(const W& w, std::uint64_t s, std::uint64_t room, nanoseconds now) {
    std::uint64_t target = s + 1;
    while (sum(w, target) > room && target <= w.head + S::K) ++target;
    const std::int64_t d = tollgate::detail::sat_gap(now.count(), slot_start(w, target));
    return nanoseconds(d > 0 ? d : 1);
  }
  static decision answer(const W& w, std::uint64_t n, nanoseconds now) {
    if (n == 0) return decision::admit();
    if (n > w.limit) return decision::refuse(reason::exceeds_capacity);
    const std::uint64_t s = slot_at(w, now);
    if (s < w.head) {
      const std::int64_t d = tollgate::detail::sat_gap(now.count(), slot_start(w, w.head));
      return decision::wait(nanoseconds(d > 0 ? d : 1), reason::stale_time);
    }
    if (sum(w, s) + n > w.limit) return decision::wait(wait_for(w, s, w.limit - n, now));
    return decision::admit();
  }
  static void put(W& w, std::uint64_t s, std::uint64_t n) {
    if (s > w.head) w.head = s;
    const std::uint64_t i = s % (S::K + 1);
    if (w.tag[i] != s) {
      w.tag[i] = s;
      w.units[i] = 0;
    }
    w.units[i] += n;
  }
  static std::uint64_t add(W& w, std::uint64_t n, nanoseconds now) {
    const std::uint64_t s = slot_at(w, now);
    put(w, s, n);
    return s;
  }
  static void charge(W& w, std::uint64_t n, nanoseconds now) {  // a stale `now` charges the head
    std::uint64_t s = slot_at(w, now);
    if (s < w.head) s = w.head;
    put(w, s, n);
  }
  static void give_back(W& w, std::uint64_t slot, std::uint64_t n) {
    if (slot > w.head || slot + S::K < w.head) return;  // left the window
    const std::uint64_t i = slot % (S::K + 1);
    if (w.tag[i] != slot) return;
    w.units[i] -= n < w.units[i] ? n : w.units[i];
  }
  static nanoseconds empty_in(const W& w, nanoseconds now) {
    std::uint64_t newest = w.head;
    while (units_in(w, newest) == 0) {
      if (newest == 0 || newest + S::K == w.head) return nanoseconds(0);
      --newest;
    }
    return nanoseconds(tollgate::detail::sat_gap(now.count(), slot_start(w, newest + S::K + 1)));
  }
  nanoseconds own_wait(const W& w, nanoseconds now) const {
    const nanoseconds t = tollgate::account_policy::emission_interval(nanoseconds(w.period), w.limit);
    const decision d = answer(w, 1, now);
    const nanoseconds own = d.later() && d.why() != reason::stale_time ? d.retry_after() : nanoseconds(0);
    return t > own ? t : own;
  }

  // The refusal: every dimension asked without consuming, composed by the
  // account's own rule.
  admission refuse(const S& s, admission& a, std::uint64_t n, nanoseconds now, nanoseconds paused_for = nanoseconds(0)) {
    tollgate::account_policy::refusal rf(paused_for);
    if (s.conc_on && s.in_use >= s.conc_limit) rf.add(dimension::concurrency);
    const dimension dims[3] = {dimension::rpm, dimension::tpm, dimension::tpd};
    const std::uint64_t need[3] = {1, n, n};
    for (int k = 0; k < 3; ++k)
      if (s.w[k].on) rf.note(dims[k], answer(s.w[k], need[k], now));
    const std::int64_t left = s.committed >= s.budget_limit ? 0 : s.budget_limit - s.committed;
    if (s.budget_on && left < a.worst_case.nanos()) rf.add(dimension::budget);
    a.refused = rf.refused();
    a.d = rf.result();
    return a;
  }

  tollgate::account_config cfg_;
  tollgate::account_policy::admission_rules<tollgate::usd_tag> rules_;
  std::mutex m_;
  alignas(8) unsigned char bytes_[sizeof(plain_account_state)] = {};
  std::map<std::uint64_t, held> leases_;
  std::uint64_t next_ = 0;
};

}  // namespace tgtest

#endif
