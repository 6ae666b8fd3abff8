// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// shared_account.hpp: one account whose state lives in memory that several
// processes on one host map (a pre-forked pool, a job runner, several
// services): one organisation's limits, kept once for all of them.
//
// Use. The caller makes the bytes (shm_open or memfd_create + a MAP_SHARED
// mmap of shared_account<...>::region_bytes(), at any address; the library
// opens nothing) and every process calls open() with the same configuration
// and its own process identity. The first builds the account in place, the
// others attach (shared_region.hpp: a state word, no lock; two that open at
// once end with one account). The region's fingerprint is the configuration
// (fingerprint()): a process with another configuration is refused with
// region_errc::wrong_config and changes nothing; another layout, size or
// type, or a torn header, with their own codes.
//
// What it enforces, with the in-process account's decisions (account/
// policy.hpp: assess, refusal, the limiters each server model runs;
// account/pause.hpp: clamp_hint, pause_after) applied to state in the
// region (account/limiters.hpp's primitives, one per dimension): RPM, TPM
// and TPD (strict windows, the spaced margin policy, or a calendar day, as
// the server model says), concurrency (account/shared_slots.hpp: one slot
// word per permit), the budget, and the pause and stop after a 429, an
// overload or a quota error, which every process sees at once (one
// process's 429 pauses all). The bounds are the account's (account.hpp):
// all-or-nothing admission, rolled back on the first refusal, never
// over-admitting, across every thread of every process.
// Not here: server_model::learn, adaptive_concurrency,
// trust_rate_limit_headers (their state is not placeable yet: refused,
// errc::not_shareable), snapshots, set_limits, the release hook.
//
// Per-thread credit (account_config::per_thread_credit; account/
// shared_credit.hpp, which states it in full): `Lines` credit lines in the
// region, one per thread of this process's first 16, each taking a strict
// window's units a chunk at a time. Every window stays exact; other threads
// of every process can be refused falsely by at most `Lines` chunks of a
// window (1.6 % of its limit at the default 16, under 1/64 for any Lines);
// a refused thread gives its own credit back before the windows are asked
// for its wait. Credit off: a refusal is false only while a racing
// admission holds units it is about to roll back. Concurrency credit, for
// limits of 1,024 and more (account/shared_slot_cache.hpp): a thread with a
// line keeps up to the line's chunk of the limit (L / 1024, at most 8) of
// the slot words its leases gave back, still held, for its next leases;
// leases in flight never exceed L, other users are refused falsely by at
// most Lines x that. remaining() counts credit as remaining.
//
// Where each part lives (in the region or in this process), the process
// identity and fork(): account/shared_parts.hpp.
//
// Dead processes. A process killed at any instruction leaves every shared
// word consistent: each step is one CAS of a lock-free primitive. What it
// held comes back as follows. Its concurrency slots: when the account runs
// out of slots, by lease_timeout after their last renewal (the backstop;
// lease::renew moves it) and, with a liveness check, at the first scan
// (at most one per scan_interval) after the check calls its identity dead,
// except a slot whose taker (or renewer) was killed between its CAS and its
// name store: the deadline only (account/shared_slots.hpp).
// Its window and token units stay counted until they leave their windows (the
// requests may have reached the server), and so do those its credit lines
// held; the lines come back when a claimer finds none free and the liveness
// check calls it dead (no deadline: shared_credit.hpp). Money it reserved stays committed
// for good: kept as spent (remaining() excludes it; spent() does not
// include it), the safe side.
//
// Handles. A shared_account object is this process's handle: leases point
// at it and must not outlive it, and open() or attach() on a handle that
// still has leases out is not allowed (they would settle into the new
// region). Several handles in one process may share one region (each with
// its own identity or the same one).
//
// Concurrency contract. try_admit, the lease's settles and renew,
// on_response, resume and clear_pause are thread- and process-safe and
// lock-free: no mutex, allocation or syscall on them. open, attach, claim and
// close are not hot, and not thread-safe with any other call on this object
// (admissions, settles, views).
#ifndef TOLLGATE_SHARED_ACCOUNT_HPP
#define TOLLGATE_SHARED_ACCOUNT_HPP

#include <tollgate/config.hpp>
#include <tollgate/account/config.hpp>
#include <tollgate/account/limiters.hpp>
#include <tollgate/account/policy.hpp>
#include <tollgate/account/shared_credit.hpp>
#include <tollgate/account/shared_parts.hpp>
#include <tollgate/account/shared_slot_cache.hpp>
#include <tollgate/clock.hpp>
#include <tollgate/cost.hpp>
#include <tollgate/decision.hpp>
#include <tollgate/detail/atomic.hpp>
#include <tollgate/detail/shard_counters.hpp>
#include <tollgate/error.hpp>
#include <tollgate/http.hpp>
#include <tollgate/shared_region.hpp>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <new>
#include <optional>
#include <string_view>
#include <type_traits>
#include <utility>

TOLLGATE_BEGIN_NAMESPACE

template <class Clock = steady_clock, class Currency = usd_tag, std::size_t Slots = 64, std::size_t Lines = 16>
class shared_account {
 public:
  using clock = Clock;
  using currency = Currency;
  using config_type = basic_account_config<Currency>;
  using state = detail::shared_account_state<Clock, Currency, Slots, Lines>;
  using lease_type = shared_lease<Clock, Currency, Slots, Lines>;
  using admission_type = shared_admission<Clock, Currency, Slots, Lines>;
  using amount = money<Currency>;
  static_assert(region_placeable<state>::value, "the shared account's state must be placeable in a region");

  // The bytes a region for this account needs.
  static constexpr std::size_t region_bytes() noexcept { return region_size<state>(); }
  // The largest concurrency limit this layout holds (Slots: a parameter).
  static constexpr std::uint64_t max_concurrency = Slots;

  shared_account() noexcept = default;  // attached to nothing: refuses everything
  // Gives back this process's credit lines (not in a child of fork() before
  // claim(): they are its parent's).
  ~shared_account() { release_lines(); }
  shared_account(const shared_account&) = delete;
  shared_account& operator=(const shared_account&) = delete;

  // The configuration's fingerprint (per_thread_credit and the layout's
  // parameters too), and whether this layout can run `c` (errc::ok, else
  // the first reason): account/shared_parts.hpp.
  static std::uint64_t fingerprint(const config_type& c) noexcept {
    return detail::shared_fingerprint<Currency, Slots, Lines>(c);
  }
  static errc check(const config_type& c, error_values& v) noexcept {
    return detail::shared_check<Clock, Currency, Slots>(c, v);
  }

  // Builds the account in the region, or attaches to the one there (see
  // the header). On any error this object stays detached.
  shared_open_result open(void* bytes, std::size_t size, const config_type& c, const shared_account_options& o,
                          nanoseconds origin = Clock::now()) noexcept {
    return open_impl(bytes, size, c, o, origin, true);
  }
  // Attaches only: never builds, never writes the region.
  shared_open_result attach(void* bytes, std::size_t size, const config_type& c,
                            const shared_account_options& o) noexcept {
    return open_impl(bytes, size, c, o, nanoseconds(0), false);
  }

  // After fork(): this process's own identity. False (and nothing changes)
  // for an identity that is zero or too wide. In a child the lines and kept
  // slot words this object names are its parent's: forgotten, not given
  // back. Called again where no fork came between (a new identity for this
  // process), it first gives back what it holds under the old one.
  bool claim(std::uint64_t identity) noexcept {
    if (identity == 0 || identity > detail::shared_slots<Slots>::max_identity) return false;
    if (s_ != nullptr && !needs_claim()) release_lines();  // this process's own: back under the old name
    opts_.identity = identity;
    set_starts();
    epoch_ = detail::fork_epoch().load(std::memory_order_relaxed);  // relaxed: process-local, see bump_fork_epoch
    map_.clear();
    cache_.forget_all();
    return true;
  }
  // Detaches: gives back this process's credit lines and the slot words it
  // keeps, as the destructor does, for a process about to end without
  // running destructors (_exit). No lease of this handle may be out.
  void close() noexcept {
    release_lines();
    s_ = nullptr;
    credit_.place(nullptr, 0);
    cache_.cap = 0;
  }
  // True in a child of fork() until claim(), and in a detached object.
  bool needs_claim() const noexcept {
    return s_ == nullptr || epoch_ != detail::fork_epoch().load(std::memory_order_relaxed);  // relaxed: as in claim
  }
  bool attached() const noexcept { return s_ != nullptr; }
  const config_type& config() const noexcept { return cfg_; }
  std::uint64_t identity() const noexcept { return opts_.identity; }

  // The credit line (0 .. Lines - 1) this thread owns through this handle,
  // or Lines: none (credit off, no line yet, or over 16 threads).
  std::size_t this_thread_credit_line() const noexcept {
    return needs_claim() ? Lines : own_line();
  }
  // The identity owning credit line i (0: free), a snapshot.
  std::uint64_t credit_line_owner(std::size_t i) const noexcept { return s_ ? s_->credit.owner(i) : 0; }
  // Credit lines per region (a parameter of the layout).
  static constexpr std::size_t credit_lines = Lines;

  admission_type try_admit(const request& r, nanoseconds now) noexcept {
    admission_type a;
    a.at = now;
    admit_into(a, r, now);
    return a;
  }
  admission_type try_admit(const request& r) noexcept { return try_admit(r, Clock::now()); }

  void on_response(int status, const rate_limit_headers& h, std::string_view body, nanoseconds now) noexcept {
    on_response(classify(status, body), h.retry_hint(), now);
  }
  void on_response(const error_info& e, std::optional<nanoseconds> hint, nanoseconds now) noexcept {
    if (s_ == nullptr) return;
    using namespace account_policy;
    const clamped_hint h = clamp_hint(e.kind, hint, e.hint, cfg_.max_pause);
    const response_decision r = pause_after(e.kind, h.hint, s_->d.waits(now));
    if (r.action == response_action::stop) s_->pause.stop();
    else if (r.action == response_action::pause) s_->pause.pause_for(r.pause, now);
  }
  void resume() noexcept {
    if (s_) s_->pause.resume();
  }
  void clear_pause() noexcept {
    if (s_) s_->pause.clear();
  }
  bool stopped() const noexcept { return s_ == nullptr || s_->pause.stopped(); }
  nanoseconds paused_until() const noexcept { return s_ ? nanoseconds(s_->pause.until()) : nanoseconds(0); }

  // Leases holding a slot, in every process, and the words other handles
  // keep for their next leases (account/shared_slot_cache.hpp: at most
  // Lines x kept_per_line()); this handle's kept words are not counted.
  // (A snapshot: its words still held; in a child of fork() before claim()
  // its parent's words count as another handle's.)
  std::uint64_t in_flight() const noexcept {
    if (s_ == nullptr) return 0;
    const std::uint64_t h = s_->slots.held(), k = kept_slots();
    return h > k ? h - k : 0;
  }
  // The slot words this handle keeps for its next leases and still holds
  // (a scan may have freed some: those are not counted), and the most a
  // credit line keeps (0: none; shared_slot_cache.hpp).
  std::uint64_t kept_slots() const noexcept { return needs_claim() ? 0 : cache_.kept(s_->slots); }
  std::uint64_t kept_per_line() const noexcept { return s_ ? cache_.cap : 0; }
  std::optional<amount> budget_remaining() const noexcept {
    return s_ && s_->d.money ? std::optional<amount>(s_->d.money->remaining()) : std::nullopt;
  }
  using remaining_view = basic_remaining_view<Currency>;
  remaining_view remaining(nanoseconds now) const noexcept {
    remaining_view v;
    if (s_ == nullptr) return v;
    if (s_->slots.limit > 0) {
      // This handle's kept words count as remaining (as credit does below).
      const std::uint64_t l = s_->slots.limit, f = in_flight();
      v.concurrency = l > f ? l - f : 0;
    }
    // Units counted in a window but held as a line's credit (a snapshot).
    s_->d.remaining(v, now, cfg_.max_request_tokens, [&](unsigned k) { return credit_.held_at(k, now); });
    v.paused_for = account_policy::time_left(s_->pause.until(), now);
    v.stopped = stopped();
    return v;
  }
  shared_account_stats<Currency> stats() const noexcept {
    shared_account_stats<Currency> x;
    x.admitted = counts_.sum(admitted_n);
    x.refused = counts_.sum(refused_n);
    if (s_) {
      x.reclaimed_by_deadline = s_->reclaimed_deadline.load(std::memory_order_relaxed);  // relaxed: statistics
      x.reclaimed_dead = s_->reclaimed_dead.load(std::memory_order_relaxed);             // relaxed: statistics
      x.spent_nanos = s_->d.money ? s_->d.money->spent().nanos() : 0;
    }
    return x;
  }

 private:
  friend class shared_lease<Clock, Currency, Slots, Lines>;
  using limiters = detail::account_limiters<Clock, Currency>;

  static config_type limiters_config(const config_type& c) noexcept { return detail::shared_limiters_config(c); }

  shared_open_result open_impl(void* bytes, std::size_t size, const config_type& c, const shared_account_options& o,
                               nanoseconds origin, bool build) noexcept {
    shared_open_result res;
    release_lines();
    s_ = nullptr;
    credit_.place(nullptr, 0);
    if ((res.config = check(c, res.values)) != errc::ok) return res;
    if (o.identity == 0 || o.identity > detail::shared_slots<Slots>::max_identity) {
      res.region = region_errc::bad_token;
      return res;
    }
    detail::watch_forks();
    region_ref<state> r;
    const std::uint64_t fp = fingerprint(c);
    if (build) {
      region_options ro;
      ro.fingerprint = fp;
      ro.token = o.identity;
      ro.alive = o.alive;
      ro.context = o.context;
      r = open_region<state>(bytes, size, ro, [&](void* where) {
        state* s = ::new (where) state;
        (void)s->d.build(limiters_config(c), origin);  // check() built the same: it cannot fail
        s->rules = account_policy::admission_rules<Currency>::of(c);
        s->rules.spaced_tokens = s->d.margin_tokens && s->d.tpm_b;
        s->rules.budget = s->d.money.has_value();
        s->refund_unused = c.refund_unused_tokens ? 1 : 0;
        s->slots.init(c.concurrency.is_finite() ? *c.concurrency.value() : 0, c.lease_timeout, origin);
        s->credit_on = c.per_thread_credit ? 1 : 0;
        s->credit.init();
      });
    } else {
      r = attach_region<state>(bytes, size, fp);
    }
    res.region = r.error;
    res.constructed = r.constructed;
    if (!r) return res;
    s_ = r.object;
    cfg_ = c;
    opts_ = o;
    epoch_ = detail::fork_epoch().load(std::memory_order_relaxed);  // relaxed: as in claim
    const std::int64_t t = c.lease_timeout.count() > 0 ? c.lease_timeout.count() / 16 : 0;
    interval_ = o.alive ? o.scan_interval.count() : t;
    retry_ = o.scan_interval.count() > 0 ? o.scan_interval.count() : std::int64_t{100000000};
    set_starts();
    set_up_credit();
    return res;
  }

  // Where each shard's thread starts probing the slot words: spread over
  // the limit by shard and identity (any value is correct), and below it,
  // so that a take divides nothing (a `%` by the limit on every admission
  // was a 64-bit division, the one the in-process account does not make).
  void set_starts() noexcept {
    const std::uint64_t n = s_ ? s_->slots.limit : 0, k = detail::thread_shards + 1;
    for (std::uint64_t sh = 0; sh < k; ++sh)
      starts_[sh] = static_cast<std::uint32_t>((sh + opts_.identity) % k * n / k);
  }

  // The chunks, the lines and the shelves' cap (account/shared_cold.hpp).
  void set_up_credit() noexcept;

  // The line this thread owns through this handle (Lines: none), never claiming one.
  unsigned own_line() const noexcept {
    const unsigned sh = detail::this_thread_shard();
    if (!credit_.enabled() || sh >= detail::thread_shards) return static_cast<unsigned>(Lines);
    const std::uint32_t i = map_.line[sh];
    return i != detail::shared_credit_map::no_line ? i : static_cast<unsigned>(Lines);
  }
  // The line this thread spends from: its shard's, claimed on first use.
  [[gnu::always_inline]] unsigned line_for(unsigned sh, nanoseconds now) noexcept {
    if (!credit_.enabled() || sh >= detail::thread_shards) return static_cast<unsigned>(Lines);
    const std::uint32_t i = map_.line[sh];
    return i != detail::shared_credit_map::no_line ? i : claim_line(sh, now);
  }
  // The cold paths (account/shared_cold.hpp): a thread's first line, the
  // lines given back, a scan of the slots.
  [[gnu::noinline, gnu::cold]] unsigned claim_line(unsigned sh, nanoseconds now) noexcept;
  void release_lines() noexcept;
  void refuse_now(admission_type& a, dimension d, reason why) noexcept {
    a.refused.add(d);
    counts_.add(refused_n, 1);
    a.decision = decision::refuse(why);
  }

  // Inlined into try_admit (as the account's): out of line, g++ passed the
  // admission through memory, about 20 instructions more an admission.
  [[gnu::always_inline]] void admit_into(admission_type& a, const request& r, nanoseconds now) noexcept {
    if (needs_claim()) return refuse_now(a, dimension::stopped, reason::misconfigured);
    state& s = *s_;
    const std::uint64_t n = account_policy::assess<Currency>(r, s.rules, a.refused, a.worst_case);
    a.tokens = n;
    if (!a.refused.empty()) {
      counts_.add(refused_n, 1);
      a.decision = decision::refuse(reason::exceeds_capacity);
      return;
    }
    if (s.pause.stopped()) return refuse_now(a, dimension::stopped, reason::misconfigured);
    const std::int64_t pause = s.pause.until();
    if (now.count() < pause) return report(a, n, now, account_policy::time_left(pause, now));

    lease_type& l = a.lease;
    l.acc_ = this;  // so that a roll-back releases what was taken
    l.epoch_ = epoch_;
    l.rpm_s_ = l.tpm_s_ = l.tpd_s_ = l.rpm_c_ = l.tpm_c_ = 0;  // a dimension not taken leaves its slot 0
    l.model_ = r.model;
    const unsigned sh = detail::this_thread_shard();
    const unsigned line = line_for(sh, now);
    if (s.slots.limit > 0 && !(line < Lines && cache_.take(sh, s.slots, opts_.identity, now, l.slot_, l.stamp_))) {
      const std::size_t start = starts_[sh < detail::thread_shards ? sh : detail::thread_shards];
      if (!s.slots.take(now, start, opts_.identity, l.slot_, l.stamp_)) {
        reap(now);
        if (!s.slots.take(now, start, opts_.identity, l.slot_, l.stamp_)) return report(a, n, now);
      }
    }
    limiters& d = s.d;
    if (d.rpm_w) {
      if (!credit_.take_window(*d.rpm_w, credit::rpm, 1, now, l.rpm_s_, line)) return report(a, n, now);
    } else if (d.rpm_b && !limiters::take_spaced(*d.rpm_b, l.rpm_s_, l.rpm_c_, 1, now)) {
      return report(a, n, now);
    }
    if (n > 0 && !take_tokens(d.tpm_w, d.tpm_b, credit::tpm, l.tpm_s_, l.tpm_c_, n, now, line)) {
      d.give_request(l.rpm_s_, l.rpm_c_, now);
      return report(a, n, now);
    }
    bool day_ok = true;
    std::uint64_t no_cfg = 0;
    if (n > 0 && d.day_q) day_ok = d.day_q->try_acquire(n, now, l.day_t_).admitted();
    else if (n > 0) day_ok = take_tokens(d.tpd_w, d.tpd_b, credit::tpd, l.tpd_s_, no_cfg, n, now, line);
    if (!day_ok) {
      limiters::give_tokens(d.tpm_w, d.tpm_b, l.tpm_s_, l.tpm_c_, n, n, now);
      d.give_request(l.rpm_s_, l.rpm_c_, now);
      return report(a, n, now);
    }
    if (d.money) {
      l.money_ = d.money->reserve(a.worst_case);
      if (!l.money_) {
        give_day(l, n, now);
        limiters::give_tokens(d.tpm_w, d.tpm_b, l.tpm_s_, l.tpm_c_, n, n, now);
        d.give_request(l.rpm_s_, l.rpm_c_, now);
        return report(a, n, now);
      }
    }
    l.tokens_ = n;
    counts_.add(admitted_n, 1);
    a.decision = decision::admit();
  }

  [[gnu::always_inline]] bool take_tokens(std::optional<typename limiters::window>& w,
                                          std::optional<typename limiters::bucket>& b, unsigned kind,
                                          std::uint64_t& slot, std::uint64_t& cfg, std::uint64_t n, nanoseconds now,
                                          unsigned line) noexcept {
    if (w) return credit_.take_window(*w, kind, n, now, slot, line);
    if (b) return limiters::take_spaced(*b, slot, cfg, n, now);
    return true;
  }
  void give_day(lease_type& l, std::uint64_t n, nanoseconds now) noexcept {
    limiters& d = s_->d;
    if (d.day_q) (void)d.day_q->refund(l.day_t_, n);
    else limiters::give_tokens(d.tpd_w, d.tpd_b, l.tpd_s_, 0, n, n, now);
  }

  // After a refusal (everything taken so far given back but the slot, which
  // goes first): every dimension asked without consuming, as the account.
  [[gnu::noinline]] void report(admission_type& a, std::uint64_t n, nanoseconds now,
                               nanoseconds paused_for = nanoseconds(0)) noexcept {
    const unsigned line = own_line();
    a.lease.release_slot();
    a.lease = lease_type();
    // The refused thread's own credit back first, as its next attempt would,
    // so the windows are asked what they hold for it (credit.hpp).
    if (line < Lines) {
      limiters& d = s_->d;
      typename credit::window_type* ws[credit::kinds] = {d.strict(0), d.strict(1), d.strict(2)};
      (void)credit_.give_back(ws, line);
    }
    account_policy::refusal rf(paused_for);
    state& s = *s_;
    if (s.slots.limit > 0 && s.slots.held() >= s.slots.limit + kept_by(line)) rf.add(dimension::concurrency);
    s.d.report(rf, n, now);
    if (s.d.money && s.d.money->remaining() < a.worst_case) rf.add(dimension::budget);
    a.refused = rf.refused();
    counts_.add(refused_n, 1);
    a.decision = rf.result();
  }

  [[gnu::noinline, gnu::cold]] void reap(nanoseconds now) noexcept;
  // The words this thread's shelf keeps (it would take them before a free one).
  std::uint64_t kept_by(unsigned line) const noexcept {
    const unsigned sh = detail::this_thread_shard();
    return line < Lines && sh < detail::thread_shards
               ? cache_.shelves[sh].count.load(std::memory_order_relaxed)  // relaxed: this thread's own
               : 0;
  }
  // A settled lease's word: kept on this thread's shelf if it owns a line
  // and the shelf has room (true), else the caller frees it.
  bool keep_slot(std::size_t slot, std::uint64_t stamp) noexcept {
    // A shelf keeps words only once its thread owns a line (set_owned).
    return cache_.put(detail::this_thread_shard(), s_->slots, slot, stamp);
  }

  using credit = detail::thread_credit<typename limiters::window>;
  state* s_ = nullptr;
  credit credit_;                  // this process's view of the region's lines (chunks, units)
  detail::shared_credit_map map_;  // which line each of this process's shards owns
  detail::shared_slot_cache cache_;  // the slot words each shard keeps for its next leases
  std::int64_t retry_ = 0;         // a failed line claim's retry interval
  config_type cfg_;
  shared_account_options opts_;
  std::uint64_t epoch_ = 0;
  std::int64_t interval_ = 0;
  std::uint32_t starts_[detail::thread_shards + 1] = {};  // set_starts()
  // This process's statistics, per thread shard (detail/shard_counters.hpp):
  // a plain load and store where a shared counter cost a locked add on
  // every admission.
  enum : std::size_t { admitted_n, refused_n };
  detail::shard_counters<2> counts_;
};

TOLLGATE_END_NAMESPACE

// The lease's members, which need the account complete, and the account's cold paths.
#include <tollgate/account/shared_lease.hpp>
#include <tollgate/account/shared_cold.hpp>

#endif  // TOLLGATE_SHARED_ACCOUNT_HPP
