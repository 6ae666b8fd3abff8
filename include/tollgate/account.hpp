// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// account.hpp: every limit of one API account, taken all at once or not at
// all: concurrency, requests per minute, tokens per minute, tokens per day,
// and an optional budget in dollars (account<Clock>, account_config) or
// yuan (account<Clock, cny_tag>, cny_account_config: prices from the
// model's CNY list; a dollar amount given to it does not compile). Kimi's
// limits are per organization, shared by all models and keys: make one
// account per organization and send every request through it.
//
// The parts, each with its own contract under account/: vocabulary and
// limits (config.hpp), server models' policies and the pure admission
// decisions (policy.hpp), the limiters holding the state (limiters.hpp),
// per-thread credit (credit.hpp), the lease slot table (slot_table.hpp),
// pause and feedback (pause.hpp), statistics (stats.hpp), the snapshot codec
// (snapshot.hpp), the lease (lease.hpp) and settling (settle.hpp).
//
// Admission. try_admit(request, now) reserves a concurrency slot, 1 request,
// prompt + max_tokens tokens in TPM and TPD (Kimi counts max_tokens at
// admission; without one, the model's default output cap, else the context
// window minus the prompt) and the request's worst-case cost (cost.hpp),
// which bounds what settle charges for any usage within the request. In all
// dimensions or in none: a partial success is rolled back, so under
// concurrency a request may be refused falsely but nothing is ever
// over-admitted. A refusal names every dimension that refused, and its wait
// is the largest of theirs; it is `never` when the request can never fit
// (tokens > the limit or above max_request_tokens under a margin policy,
// prompt + max_tokens > the context window, worst-case cost > the budget).
// The wait keeps the decision contract for the whole account, with per-thread
// credit on or off: the same request from the same thread is refused at
// now + wait - 1 ns unless capacity was given back meanwhile (a refund, a
// thread's credit given back, set_limits), and admitted at now + wait unless
// capacity was taken meanwhile (an admission, a debt, a pause). A refusal
// that also names concurrency or the budget needs a permit or money back as
// well (with nothing else waiting, its wait is zero, reason::busy). While
// paused, the wait is the later of the pause's end and the other dimensions'
// (also in an account just restored). A `now` older than one the account has
// seen (another thread's reading, a clock set back) keeps the contract: a
// window or the calendar day that cannot decide at it waits until the time it
// can (its head slot, its day) plus its wait there (reason::exhausted).
// The calendar day maps the account's clock to UTC days once (config.hpp,
// unix_time_at_zero: what a stepped or slewed wall clock does to it).
//
// The algorithm (admit_into): the decisions that need no state (the tokens
// reserved, the dimensions that refuse outright), then the stop and the
// pause; then every dimension in turn (concurrency, requests, tokens, the
// day, money), rolled back on the first refusal, which then asks every
// dimension for its wait without consuming (refuse_and_report; what a
// refusal leaves behind: account/refusal.hpp). The lease
// releases its slot when settled or destroyed; a lease dropped without
// settling keeps its reservations (the safe side). A concurrency slot held
// past lease_timeout is reclaimed when the account runs out of slots
// (stats().reclaimed). on_response(...) pauses the whole account after a
// 429 or an overload and stops it after a quota error, until resume();
// under server_model::learn it also moves a dimension to the margin policy
// (account/learn.hpp: the rule, its bound, and what a snapshot keeps), and
// with adaptive_concurrency a concurrency 429 or an overload lowers the
// concurrency limit, which successes raise again (adaptive_concurrency.hpp);
// with trust_rate_limit_headers, a response's x-ratelimit-remaining/reset
// headers cap what the account admits until that reset
// (account/server_remaining.hpp, observe_rate_limit_headers).
//
// Live change. set_limits moves a running account to another tier's limits
// (same dimensions) keeping what it has counted; it is thread-safe with
// admissions, but config() may then be read torn: read it from one thread.
// Concurrency contract. try_admit, settle and on_response are thread-safe
// and lock-free (each dimension is one of the lock-free primitives; the pause
// is one atomic word); with a waiting_room attached, though, every lease
// release calls the room, which takes its mutex. Counters are exact once
// threads are joined, approximate while they run. A lease must not outlive
// its account. With limits of 1,024 units and more, the first 16 threads take
// window and concurrency units a chunk at a time (credit.hpp: the bounds hold
// exactly; other threads may be refused falsely by at most 1.6 % of a
// window's limit and 3.2 % of the concurrency limit); remaining() and
// in_flight() count credit as not in flight; per_thread_credit = false: off.
//
// Cost. Spending credit, an admission and its settle take one atomic RMW
// (the slot-table word back; none with lease_timeout zero); a refill, one
// CAS per window and one on the permits. Without credit: five. See bench/.
#ifndef TOLLGATE_ACCOUNT_HPP
#define TOLLGATE_ACCOUNT_HPP

#include <tollgate/config.hpp>
#include <tollgate/account/config.hpp>
#include <tollgate/account/credit.hpp>
#include <tollgate/adaptive_concurrency.hpp>
#include <tollgate/account/learn.hpp>
#include <tollgate/account/server_remaining.hpp>
#include <tollgate/account/lease.hpp>
#include <tollgate/account/limiters.hpp>
#include <tollgate/account/pause.hpp>
#include <tollgate/account/policy.hpp>
#include <tollgate/account/slot_table.hpp>
#include <tollgate/account/snapshot.hpp>
#include <tollgate/account/stats.hpp>
#include <tollgate/clock.hpp>
#include <tollgate/decision.hpp>
#include <tollgate/detail/atomic.hpp>
#include <tollgate/detail/shard_counters.hpp>
#include <tollgate/error.hpp>
#include <tollgate/http.hpp>
#include <tollgate/tiers.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

TOLLGATE_BEGIN_NAMESPACE

template <class Clock = steady_clock, class Currency = usd_tag>
class account {
  using window = sliding_window<Clock>;
  using lease_type = lease<Clock, Currency>;
  using admission_type = admission<Clock, Currency>;
  using amount = money<Currency>;
  using limiters = detail::account_limiters<Clock, Currency>;
  using credit = detail::thread_credit<window>;
  using codec = detail::account_codec<Clock, Currency>;

 public:
  using clock = Clock;
  using currency = Currency;
  using config_type = basic_account_config<Currency>;
  using restore_errc = account_restore_errc;

  // Throws config_error (aborts without exceptions) on an invalid
  // configuration: a margin policy whose margin is not below its limit, a
  // window the primitives refuse, a negative max_pause, or a limit above what
  // its policy can run (see largest_token_limit), which throws with the limit
  // refused and the largest accepted (config_error::values()).
  explicit account(const config_type& c, nanoseconds origin = Clock::now()) {
    error_values v;
    const errc e = init(c, origin, v);
    if (e != errc::ok) detail::fail(e, v);
  }
  // Never throws: on error sets `ec` (and `v`, for a limit too large); the
  // account then refuses everything for good (stopped, misconfigured).
  account(const config_type& c, nanoseconds origin, errc& ec) noexcept {
    error_values v;
    ec = init_or_stop(c, origin, v);
  }
  account(const config_type& c, nanoseconds origin, errc& ec, error_values& v) noexcept {
    ec = init_or_stop(c, origin, v);
  }

  // The largest limits the configuration accepts (account/policy.hpp).
  static constexpr std::uint64_t largest_token_limit(const config_type& c) noexcept {
    return account_policy::largest_token_limit(c.model, c.token_window, c.max_request_tokens);
  }
  static constexpr std::uint64_t largest_request_limit(const config_type& c) noexcept {
    return account_policy::largest_request_limit(c.model, c.request_window, account_policy::widest_margin(c));
  }
  account(const account&) = delete;
  account& operator=(const account&) = delete;

  const config_type& config() const noexcept { return cfg_; }

  admission_type try_admit(const request& r, nanoseconds now) noexcept {
    admission_type a;  // the only object returned, so it is built in place
    a.at = now;
    admit_into(a, r, now);
    return a;
  }
  admission_type try_admit(const request& r) noexcept { return try_admit(r, Clock::now()); }

  // Feeds the server's answer back from its parts: the status, the headers
  // read into a rate_limit_headers, and the body. A success changes nothing.
  void on_response(int status, const rate_limit_headers& h, std::string_view body, nanoseconds now) noexcept {
    observe_rate_limit_headers(h, now);
    on_response(classify(status, body), h.retry_hint(), now);
  }
  // With trust_rate_limit_headers: what remains until the stated reset, from
  // any response's headers (account/server_remaining.hpp). Else nothing.
  void observe_rate_limit_headers(const rate_limit_headers& h, nanoseconds now) noexcept { gates_.observe(h, now); }
  // The same from a classified error: `hint` is the header hint
  // (rate_limit_headers::retry_hint()), if any (account/pause.hpp).
  void on_response(const error_info& e, std::optional<nanoseconds> hint, nanoseconds now) noexcept;

  // Called after a lease gives capacity back (a permit, money): the
  // waiting room uses it to wake its head waiter. Set it before the account
  // is shared; nullptr removes it.
  void set_release_hook(void (*fn)(void*), void* ctx) noexcept {
    hook_ctx_.store(ctx, std::memory_order_relaxed);  // relaxed: published by the release store below
    hook_fn_.store(fn, std::memory_order_release);    // release: pairs with the acquire in notify_release
  }

  // Lifts a quota/balance stop (after recharging), not a pause.
  void resume() noexcept { pause_.resume(); }
  // Ends a pause now (a hint known wrong, an operator's override); counts and stops stay.
  void clear_pause() noexcept { pause_.clear(); }
  bool stopped() const noexcept { return pause_.stopped(); }
  nanoseconds paused_until() const noexcept { return nanoseconds(pause_.until()); }

  // Leases holding a concurrency unit (not units held as threads' credit).
  std::uint64_t in_flight() const noexcept {
    if (!d_.conc) return 0;
    const std::uint64_t u = d_.conc->in_use(), c = credit_.units_held();
    return u > c ? u - c : 0;
  }
  std::optional<amount> budget_remaining() const noexcept {
    return d_.money ? std::optional<amount>(d_.money->remaining()) : std::nullopt;
  }

  // Adds time a caller spent waiting because of the dimensions in `s` (each
  // counts it): the waiting room reports its sleeps here, and so can a
  // caller's own waiting loop. For metrics (stats().waited_ns_by).
  void record_wait(dimension_set s, nanoseconds d) noexcept { counters_.record_wait(s, d); }
  account_stats stats() const noexcept {
    account_stats s = counters_.snapshot();
    s.spent_nanos = d_.money ? d_.money->spent().nanos() : 0;
    return s;
  }
  // What each dimension could still admit at `now` (peek; consumes nothing).
  // Dimensions not enforced report nothing (account/limiters.hpp).
  using remaining_view = basic_remaining_view<Currency>;
  remaining_view remaining(nanoseconds now) const noexcept {
    remaining_view v;
    if (d_.conc) {
      const std::uint64_t l = d_.conc->limit(), f = in_flight();
      v.concurrency = l > f ? l - f : 0;
    }
    // Units counted in a window but held as a thread's credit can still be
    // admitted (by that thread): they count as remaining.
    d_.remaining(v, now, cfg_.max_request_tokens, [&](unsigned k) { return credit_.held_at(k, now); });
    learn_.remaining(v, now, cfg_.max_request_tokens);
    v.paused_for = account_policy::time_left(pause_.until(), now);
    v.stopped = stopped();
    return v;
  }

  // Moves the account to new limits (an upgrade after a recharge, say)
  // without losing what it has counted: windows keep their counts, buckets
  // what is owed, permits stay held. Only limits the account already
  // enforces can change (a dimension cannot appear or disappear live), and the
  // server model stays. Returns the first error; dimensions before it have
  // changed. Per-thread credit taken under the old limits goes back at each
  // thread's next take (credit.hpp); a thread that does not take again keeps
  // its old chunk: window credit until its slot leaves the window (at most a
  // window and a sub-window after the change; other threads' false refusals
  // up to 16 chunks of the larger limit until then), concurrency credit
  // (2 old chunks at most) until its next take or release.
  [[nodiscard]] errc set_limits(const tier_row& t, nanoseconds now) noexcept;

  // Snapshot and restore (account/snapshot.hpp states the format, the time
  // rule and every refusal). Restore into a new account, before sharing it:
  // restore() refuses with in_use an account that has started taking traffic
  // (any try_admit that got past the stop and pause checks to the limits,
  // admitted or not, or on a restored account one refused by a pause, whose
  // wait read the restored counts). A try_admit that races the restore is refused
  // (dimension::paused, reason::busy, no wait) until it is done; no other
  // member function may run at the same time.
  std::string snapshot(nanoseconds now, nanoseconds wall) const {
    return codec::write(cfg_, d_, credit_, pause_, learn_, gates_, now, wall);
  }
  restore_errc restore(std::string_view bytes, nanoseconds now, nanoseconds wall);

  // The policy each dimension runs, for reports.
  const char* policy(dimension d) const noexcept {
    if (const char* p = learn_.on() ? learn_.policy(d) : nullptr) return p;
    return d_.policy(d);
  }
  // The adaptive concurrency limit (adaptive_concurrency.hpp); all zero
  // when it is off.
  adaptive_view adaptive() const noexcept { return adaptive_.view(); }
  // What server_model::learn has learned (phases at `now`, the margin).
  learned_view learned(nanoseconds now) const noexcept { return learn_.view(now); }

 private:
  friend class lease<Clock, Currency>;

  // Inlined into try_admit: since 0.2.0's cold paths grew, g++ kept it (and
  // release_slot) out of line, which cost about 2 ns per admission and settle
  // at the same instruction count.
  [[gnu::always_inline]] void admit_into(admission_type& a, const request& r, nanoseconds now) noexcept {
    // How many tokens Kimi will count at admission, and what refuses outright.
    const std::uint64_t n = account_policy::assess<Currency>(r, rules_, a.refused, a.worst_case);
    a.tokens = n;
    if (!a.refused.empty()) return refuse_never(a, reason::exceeds_capacity);
    if (pause_.stopped()) {  // acquire: see pause_state
      a.refused.add(dimension::stopped);
      return refuse_never(a, reason::misconfigured);
    }
    const std::int64_t pause = pause_.until();
    const unsigned shard = detail::this_thread_shard();
    if (now.count() < pause) {
      // Paused: nothing is taken; the wait is the later of the pause's end
      // and when every other dimension would admit. A fresh account's
      // limiters are empty: the pause and its header gates. A restored one
      // (a16) holds counts: it starts, so that no restore can write them as
      // they are read. While a restore runs, the pause alone (and the
      // restore's own pause, if any, comes with it). acquire: as below.
      const unsigned char u = use_.load(std::memory_order_acquire);
      if (u == use_started || (u == use_restored && start_use()))
        return refuse_and_report(a, n, now, shard, account_policy::time_left(pause, now));
      return refuse_paused_unused(a, n, now, account_policy::time_left(pause, now), u == use_fresh);
    }
    // acquire: pairs with the release store that ends a restore, so what it
    // restored is visible here. Once traffic has started this reads the
    // same value for ever (one load on the line of the stop flag).
    if (use_.load(std::memory_order_acquire) != use_started && !start_use()) {
      a.refused.add(dimension::paused);  // a restore is being applied
      counters_.count_refusal(a.refused);
      a.decision = decision::wait(nanoseconds(0), reason::busy);
      return;
    }

    // Take every dimension in turn; roll back on the first refusal.
    if (learn_.on() || gates_.on()) return admit_learning(a, r, n, now, shard);
    lease_type& l = a.lease;
    l.rpm_s_ = l.tpm_s_ = l.tpd_s_ = l.rpm_c_ = l.tpm_c_ = 0;  // a dimension not taken leaves its slot 0
    l.model_ = r.model;
    if (d_.conc) {
      // Slots held past their deadline may come back: reap and try again.
      if (!take_unit(shard) && !(reap(now) && take_unit(shard)))
        return refuse_and_report(a, n, now, shard);
      l.holds_ = true;
      l.acc_ = this;  // so that a roll-back below releases the slot
      slots_.claim(now, shard, l.slot_, l.stamp_);
    }
    if (!take_requests(l, now, shard)) return refuse_and_report(a, n, now, shard);
    if (!take_tokens(d_.tpm_w, d_.tpm_b, credit::tpm, l.tpm_s_, l.tpm_c_, n, now, shard))
      return roll_back(a, taken_requests, n, now, shard);
    bool day_ok = true;
    std::uint64_t no_bucket = 0;  // tpd_b is never built: the daily limit is a window or a quota
    if (d_.day_q) day_ok = d_.day_q->try_acquire(n, now, l.day_t_).admitted();
    else day_ok = take_tokens(d_.tpd_w, d_.tpd_b, credit::tpd, l.tpd_s_, no_bucket, n, now, shard);
    if (!day_ok) return roll_back(a, taken_minute, n, now, shard);
    if (d_.money) {
      l.money_ = d_.money->reserve(a.worst_case);
      if (!l.money_) return roll_back(a, taken_day, n, now, shard);
    }
    l.acc_ = this;
    l.tokens_ = n;
    counters_.add_admitted(shard, n);
    a.decision = decision::admit();
  }

  // admit_into when learning from the server (account/learning_admission.hpp).
  [[gnu::noinline]] void admit_learning(admission_type& a, const request& r, std::uint64_t n, nanoseconds now,
                                        unsigned shard) noexcept;

  // Whether the account has started taking traffic (see restore()).
  // Restored: a restore succeeded and no traffic has started.
  enum : unsigned char { use_fresh, use_restoring, use_started, use_restored };
  [[gnu::noinline, gnu::cold]] bool start_use() noexcept;

  // A failed configuration may have built some dimensions and not others:
  // such an account must not admit through the ones it lacks.
  errc init_or_stop(const config_type& c, nanoseconds origin, error_values& vals) noexcept {
    const errc e = init(c, origin, vals);
    if (e != errc::ok) pause_.stop_for_good();
    return e;
  }

  errc init(const config_type& c, nanoseconds origin, error_values& vals) noexcept;
  errc build(const config_type& c, nanoseconds origin, error_values& vals) noexcept;

  void update_chunks() noexcept {
    const window* ws[credit::kinds] = {d_.strict(0), d_.strict(1), d_.strict(2)};
    credit_.update(cfg_.per_thread_credit, ws, d_.conc ? d_.conc->limit() : 0);
  }

  using learn_phase = account_policy::learn_phase;
  using learn_step = account_policy::learn_step;
  using phases = typename detail::learn_state<Clock>::phases;

  // `use_window` false: a learn dimension past its switch (learn.hpp).
  [[gnu::always_inline]] bool take_requests(lease_type& l, nanoseconds now, unsigned shard, bool use_window = true) noexcept {
    if (d_.rpm_w) return !use_window || credit_.take_window(*d_.rpm_w, credit::rpm, 1, now, l.rpm_s_, shard);
    if (d_.rpm_b) return limiters::take_spaced(*d_.rpm_b, l.rpm_s_, l.rpm_c_, 1, now);
    return true;
  }
  // Tokens: a strict window takes n (through credit); the spaced bucket
  // takes 1 and charges n - 1 (limiters.hpp).
  [[gnu::always_inline]] bool take_tokens(std::optional<window>& w, std::optional<typename limiters::bucket>& b,
                                          unsigned kind, std::uint64_t& slot, std::uint64_t& cfg, std::uint64_t n,
                                          nanoseconds now, unsigned shard, bool use_window = true) noexcept {
    if (n == 0) return true;
    if (w) return !use_window || credit_.take_window(*w, kind, n, now, slot, shard);
    if (b) return limiters::take_spaced(*b, slot, cfg, n, now);
    return true;
  }
  // Roll-backs of the request and token limits: a learn window past its
  // switch was not taken.
  void give_request(lease_type& l, phases ph, nanoseconds now) noexcept {
    if (ph.requests != learn_phase::spaced) d_.give_request(l.rpm_s_, l.rpm_c_, now);
  }
  void give_tokens(lease_type& l, phases ph, std::uint64_t n, nanoseconds now) noexcept {
    if (ph.tokens != learn_phase::spaced) limiters::give_tokens(d_.tpm_w, d_.tpm_b, l.tpm_s_, l.tpm_c_, n, n, now);
  }
  // Learn's part of an admission; unused tokens back by the lease's ticket.
  [[gnu::noinline]] bool learn_take(lease_type& l, phases ph, std::uint64_t n, nanoseconds now) noexcept;
  void give_tokens_back(std::uint64_t slot, std::uint64_t cfg, std::uint64_t reserved, std::uint64_t back,
                        nanoseconds now) noexcept;
  // Puts a changed adaptive limit into the limiter (account/feedback.hpp).
  void apply_adaptive(std::optional<std::uint64_t> changed) noexcept;
  // A lease settled with its usage (settle.hpp): the adaptive limit may grow.
  void adaptive_success() noexcept {
    if (adaptive_.on()) apply_adaptive(adaptive_.on_success(in_flight()));
  }

  // What pause_after needs, with learn's switched dimensions.
  account_policy::own_waits waits(nanoseconds now) const noexcept {
    account_policy::own_waits w = d_.waits(now);
    learn_.adjust(w, now);
    return w;
  }

  void give_day(lease_type& l, std::uint64_t n, nanoseconds now) noexcept {
    if (d_.day_q) (void)d_.day_q->refund(l.day_t_, n);
    else limiters::give_tokens(d_.tpd_w, d_.tpd_b, l.tpd_s_, 0, n, n, now);
  }

  // A refusal after some dimensions were taken: give them back, newest
  // first, then report. Out of line, so that the admission path stays small
  // enough for callers to inline.
  enum taken : unsigned char { taken_requests, taken_minute, taken_day };
  [[gnu::noinline]] void roll_back(admission_type& a, taken t, std::uint64_t n, nanoseconds now,
                                   unsigned shard) noexcept;

  void refuse_never(admission_type& a, reason why) noexcept {
    counters_.count_refusal(a.refused);
    a.decision = decision::refuse(why);
  }

  // After a refusal (everything rolled back): ask every dimension, without
  // consuming, whether and how long it would refuse. The wait is exact for
  // the refused thread (the decision contract above): its own window credit
  // is given back first, as its next attempt would before asking the
  // windows, so the windows are asked what they hold for this thread.
  void refuse_and_report(admission_type& a, std::uint64_t n, nanoseconds now, unsigned shard,
                         nanoseconds paused_for = nanoseconds(0)) noexcept;
  void refuse_paused_unused(admission_type& a, std::uint64_t n, nanoseconds now, nanoseconds paused_for, bool fresh) noexcept;

  // lease::renew: moves the lease's slot-table deadline (slot_table.hpp; defined in setup.hpp).
  bool renew_slot(lease_type& l, nanoseconds now) noexcept;
  [[gnu::always_inline]] void release_slot(lease_type& l, bool notify = true) noexcept {
    bool give = l.holds_;
    // Failure: a reaper took the word and returned the unit (slot_table.hpp).
    if (l.holds_ && l.slot_ != lease_type::no_slot) give = slots_.release(l.slot_, l.stamp_);
    unsigned shard = detail::thread_shards;
    if (give && !credit_.give_unit_fast(shard)) give_unit_slow(shard);
    l.holds_ = false;
    if (l.in_flight_) {  // answered or dropped: no longer in flight for the header gates
      gates_.answered(l.tokens_);
      l.in_flight_ = false;
    }
    l.slot_ = lease_type::no_slot;
    l.acc_ = nullptr;
    if (notify) notify_release();
  }

  // A lease destroyed or overwritten unsettled (lease.hpp).
  [[gnu::noinline]] void drop(lease_type& l) noexcept { release_slot(l); }

  // Concurrency units through credit (credit.hpp); the slow paths out of line.
  [[gnu::always_inline]] bool take_unit(unsigned s) noexcept { return credit_.take_unit_fast(s) || take_unit_slow(s); }
  [[gnu::noinline]] bool take_unit_slow(unsigned shard) noexcept { return credit_.take_unit_slow(*d_.conc, shard); }
  [[gnu::noinline]] void give_unit_slow(unsigned shard) noexcept { credit_.give_unit_slow(*d_.conc, shard); }

  // Frees the slots of leases held past lease_timeout; returns how many.
  [[gnu::noinline, gnu::cold]] std::uint64_t reap(nanoseconds now) noexcept {
    const std::uint64_t freed = slots_.reap(now, [this] { d_.conc->release_detached(1); });
    counters_.add_reclaimed(freed);
    return freed;
  }

  void notify_release() noexcept {
    // acquire: pairs with the release store in set_release_hook, so the
    // context is visible.
    if (auto fn = hook_fn_.load(std::memory_order_acquire)) fn(hook_ctx_.load(std::memory_order_relaxed));
  }

  config_type cfg_;
  account_policy::admission_rules<Currency> rules_;
  detail::slot_table slots_;
  detail::atomic<void (*)(void*)> hook_fn_{nullptr};
  detail::atomic<void*> hook_ctx_{nullptr};
  limiters d_;
  detail::learn_state<Clock> learn_;
  detail::adaptive_concurrency adaptive_;
  detail::remaining_gates gates_;
  credit credit_;
  detail::pause_state pause_;
  detail::atomic<unsigned char> use_{use_fresh};  // fresh, restoring, restored or started (see restore())
  detail::account_counters counters_;
};

TOLLGATE_END_NAMESPACE

// The parts that need the account complete: the lease's settle functions,
// and the account's own functions defined out of the class.
#include <tollgate/account/settle.hpp>
#include <tollgate/account/refusal.hpp>
#include <tollgate/account/learning_admission.hpp>
#include <tollgate/account/feedback.hpp>
#include <tollgate/account/setup.hpp>

#endif  // TOLLGATE_ACCOUNT_HPP
