// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// keyed_budgets.hpp: a spending limit per key (per tenant, per API key)
// with reserve -> settle, in a fixed-capacity table that never allocates
// after its construction and never forgets what a key has spent.
//
// Table. As keyed_buckets (keyed_buckets.hpp: the keyed hash under the
// user's seed, linear probing over a window of `window` entries, at most 64
// limit classes chosen by the call that claims a key's entry), with
// entries of 72 bytes (memory: 72 x capacity bytes plus the class list),
// allocated once by the constructor.
//
// Guarantee. For every key, reservations are admitted only while its
// reserved + settled total stays within its class's limit, so as long as
// every call settles at or below what it reserved, the settled total of
// the key's entry never exceeds the limit (budget.hpp's rule, per key,
// with its zero and saturation rules). Lossless eviction: with
// keyed_budget_reuse::never (the default) an entry is never reclaimed for
// another key: only erase() frees it (the user's explicit reset), so a
// table full of keys refuses new ones with keyed_status::table_full and a
// flood of new keys changes no entry. With keyed_budget_reuse::idle the
// user says budgets reset: an entry with no reservation held may be
// reclaimed, and its key, when it comes back, starts over with a whole
// budget. A held reservation pins its entry: it is
// never reclaimed under it, and an erased one stays out of use until the
// reservations held on it are settled or dropped, into it.
//
// Periods. A table built with a budget_calendar resets its budgets on a
// calendar period of one fixed UTC offset (the whole table: a table per
// period), read from system_clock time (ns since 1970-01-01Z; the
// overloads without `now` read system_clock): budget_period::day (from
// midnight to midnight) or month (from midnight of the first), exact
// Gregorian months and leap years (detail/civil.hpp), in a zone such as
// +05:45 or -12:00. The default, none, is the behaviour above: no time at
// all. Each entry's totals are one word {period, committed}: at the first
// reserve or settle on a key whose `now` is in a later period than its
// entry's, the entry moves to that period, its settled total starts over,
// and what the key's reservations still hold is carried into the new period
// as committed. So the guarantee above holds per period: a reservation is
// admitted only while what is settled in the period plus what is held stays
// within the limit, and the settled total of every period is within the
// limit when every call settles at or below what it reserved. The rules at
// the edges:
// - A reservation admitted in period P and settled in P+1 or later is
//   charged to the period of the settle (its amount was carried into each
//   period since, as committed, and its cost replaces it there); P keeps
//   none of it as settled. reservation.period() names the period charged.
//   One dropped unsettled stays committed in the period of the drop and is
//   carried no further. spent() is the settled total of the entry's period.
// - A `now` before the entry's period (time going backwards, across a
//   boundary or not) is decided in the entry's period, against its total:
//   it never reopens an earlier period's room. So one call at a bogus
//   far-future `now` moves the key into that period for good; erase() is the
//   way out. Times before 1970-01-01 at the offset are all in period 0.
// - Every int64 `now` has an exact period (the year 2262 is month 3507).
//   Limits are at most max_day_limit (about 140,737 units of the currency)
//   for days and max_month_limit (about 4.5 million) for months: the period
//   index shares the word; totals past that saturate as above, for the
//   rest of the period (a new period starts over).
// - A key whose entry is new (first seen, erased, reclaimed with idle)
//   starts with a whole budget in the period of its `now`. erase() and
//   idle reuse are resets, as above; a period ending frees no entry.
// - Threads. The period in the word only grows, and every rollover is a CAS
//   on the word that names the period it leaves, so a call that stalled
//   across a rollover cannot reset the newer period's total nor charge into
//   the finished one (its CAS fails; it decides again in the word's period).
//   What a rollover carries is read from a per-entry total of held amounts
//   that may also count, for a moment, a reserve being decided or a settle
//   just made: a rollover racing those carries them too (the safe side: the
//   new period has that much less room). Without a rollover racing them,
//   decisions are exact against the entry's total.
// Entries stay 64 bytes (the held total takes 8 of the spare bytes).
//
// Restart. snapshot() / restore() (keyed/budget_snapshot.hpp) keep every
// live entry's totals and period as they are; what reservations hold at the
// snapshot stays committed in the entry's period (as if dropped there),
// since a request in flight may be billed though its holder died. No key spends
// more in a period than it could without the restart, and a restore (or a
// clock that went backwards) never reopens money of a period.
//
// Collisions. Two keys with one 64-bit hash share one entry and its limit
// (the conservative side); keyed_buckets.hpp states the probabilities.
//
// Decisions. reserve() of zero or less is admitted and holds nothing (no
// entry claimed). An amount over the key's class limit is refused (status
// limited, `missing` set) without claiming an entry for a new key; so is
// one that does not fit what is left. A key holding about max_held (16383)
// reservations at once is refused (status limited, `busy` set). A bad
// class index is keyed_status::bad_class. Limits are positive money. With
// a period, a reserve is also refused (`busy`) when the amounts held and
// in flight on its entry would pass 2^63 nano-units (over 2,000 calls of
// near the largest limit at once).
//
// Concurrency contract. Every member function is thread-safe and
// lock-free except as keyed/claim.hpp states for claims of one new key
// racing each other (obstruction-free) and for a pin that finds 32767 pins
// on its entry. A reservation must not outlive its table. It is
// move-only; settle or release it through its table exactly once; one
// dropped unsettled keeps its money committed (the safe side) and unpins
// its entry. remaining, spent and contains may be stale the moment they
// return.
#ifndef TOLLGATE_KEYED_BUDGETS_HPP
#define TOLLGATE_KEYED_BUDGETS_HPP

#include <tollgate/clock.hpp>
#include <tollgate/config.hpp>
#include <tollgate/detail/atomic.hpp>
#include <tollgate/detail/civil.hpp>
#include <tollgate/error.hpp>
#include <tollgate/keyed/budget_reservation.hpp>
#include <tollgate/keyed/claim.hpp>
#include <tollgate/keyed/key.hpp>
#include <tollgate/money.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

TOLLGATE_BEGIN_NAMESPACE
enum class account_restore_errc : unsigned char;  // account/snapshot.hpp
template <class Currency = usd_tag, class Hash = sip_key_hash>
class keyed_budgets {
  using S = detail::keyed_budget_slots;
  using M = money<Currency>;

 public:
  static constexpr std::size_t max_classes = 64;
  static constexpr std::size_t default_window = 16;
  static constexpr std::uint64_t max_held = S::max_held;
  // The largest limit of a table with a period, in nano-units: the period
  // index shares the committed total's word (17 bits for days, 12 for months).
  static constexpr std::int64_t max_day_limit = (std::int64_t{1} << 47) - 2;
  static constexpr std::int64_t max_month_limit = (std::int64_t{1} << 52) - 2;

  // Throws config_error (or aborts without exceptions) on a bad
  // configuration: capacity, window or limit list empty, or a limit not
  // above zero (errc::zero_count); more than 64 classes or a capacity over
  // 2^40 (errc::too_large). A window larger than the capacity is the
  // capacity.
  keyed_budgets(std::size_t capacity, const std::vector<M>& limits, hash_seed seed,
                keyed_budget_reuse reuse = keyed_budget_reuse::never, std::size_t window = default_window)
      : hash_(seed), reuse_(reuse) {
    const errc e = init(capacity, limits, window, budget_calendar{});
    if (e != errc::ok) detail::fail(e);
  }
  // Never throws: on a bad configuration sets `ec` and builds a table that
  // refuses everything with keyed_status::bad_class.
  keyed_budgets(std::size_t capacity, const std::vector<M>& limits, hash_seed seed, keyed_budget_reuse reuse,
                std::size_t window, errc& ec) noexcept
      : hash_(seed), reuse_(reuse) {
    ec = init(capacity, limits, window, budget_calendar{});
  }
  // Budgets that reset on a calendar period (see the header). Also
  // errc::too_large for an offset beyond +-24 h, an unknown period, or a
  // limit above max_day_limit (day) or max_month_limit (month).
  keyed_budgets(std::size_t capacity, const std::vector<M>& limits, hash_seed seed, budget_calendar calendar,
                keyed_budget_reuse reuse = keyed_budget_reuse::never, std::size_t window = default_window)
      : hash_(seed), reuse_(reuse) {
    const errc e = init(capacity, limits, window, calendar);
    if (e != errc::ok) detail::fail(e);
  }
  keyed_budgets(std::size_t capacity, const std::vector<M>& limits, hash_seed seed, budget_calendar calendar,
                keyed_budget_reuse reuse, std::size_t window, errc& ec) noexcept
      : hash_(seed), reuse_(reuse) {
    ec = init(capacity, limits, window, calendar);
  }
  keyed_budgets(const keyed_budgets&) = delete;
  keyed_budgets& operator=(const keyed_budgets&) = delete;

  // Holds `amount` of the key's budget if it fits (claiming an entry with
  // class `cls` if the key has none). `now` (system_clock time: ns since
  // 1970-01-01Z) names the period; without it a table with a period reads
  // system_clock, one without ignores time.
  keyed_reservation<Currency> reserve(std::uint64_t id, std::size_t cls, M amount) noexcept {
    return reserve_hash(hash_(id), cls, amount, clock_now());
  }
  keyed_reservation<Currency> reserve(std::string_view key, std::size_t cls, M amount) noexcept {
    return reserve_hash(hash_(key), cls, amount, clock_now());
  }
  keyed_reservation<Currency> reserve(std::uint64_t id, std::size_t cls, M amount, nanoseconds now) noexcept {
    return reserve_hash(hash_(id), cls, amount, now);
  }
  keyed_reservation<Currency> reserve(std::string_view key, std::size_t cls, M amount, nanoseconds now) noexcept {
    return reserve_hash(hash_(key), cls, amount, now);
  }

  // Records the actual cost of a reservation of this table and frees the
  // rest of it; returns reserved - actual (negative: an overspend, still
  // recorded). Nothing for one not held (refused, settled, dropped) or of
  // another table. A negative cost counts as zero. With a period the cost
  // counts in the entry's period at `now` (or later, see the header).
  M settle(keyed_reservation<Currency>& r, M actual) noexcept { return settle(r, actual, clock_now()); }
  M settle(keyed_reservation<Currency>& r, M actual, nanoseconds now) noexcept {
    if (r.owner_ != &slots_) return M();
    if (actual.nanos() < 0) actual = M();
    if (periodic()) return settle_periodic(r, actual.nanos(), cal_.index(now.count()));
    typename S::entry& e = slots_[r.slot_];
    // acq_rel: as budget.hpp's committed total; our pin keeps the entry
    // this key's, and the unpin below (release) publishes both totals.
    sat_add(e.s.committed, actual.nanos() - r.amount.nanos());
    add_spent(e.s.spent, actual.nanos());
    r.drop();
    return M::from_nanos(r.amount.nanos() - actual.nanos());
  }
  // Gives the whole reservation back (the call was not billed).
  void release(keyed_reservation<Currency>& r) noexcept { (void)settle(r, M()); }
  void release(keyed_reservation<Currency>& r, nanoseconds now) noexcept { (void)settle(r, M(), now); }

  // What the key may still reserve: its entry's, or a whole class `cls`
  // budget when it has none (peek); zero for a bad class index. With a
  // period, as at `now`: in a later period than the entry's, what a
  // rollover would leave (the limit less what is held).
  M remaining(std::uint64_t id, std::size_t cls) const noexcept { return remaining_hash(hash_(id), cls, clock_now()); }
  M remaining(std::string_view key, std::size_t cls) const noexcept {
    return remaining_hash(hash_(key), cls, clock_now());
  }
  M remaining(std::uint64_t id, std::size_t cls, nanoseconds now) const noexcept {
    return remaining_hash(hash_(id), cls, now);
  }
  M remaining(std::string_view key, std::size_t cls, nanoseconds now) const noexcept {
    return remaining_hash(hash_(key), cls, now);
  }
  // What the key's entry has settled (peek); zero when it has none. With a
  // period: in the entry's period, zero once `now` is in a later one.
  M spent(std::uint64_t id) const noexcept { return spent_hash(hash_(id), clock_now()); }
  M spent(std::string_view key) const noexcept { return spent_hash(hash_(key), clock_now()); }
  M spent(std::uint64_t id, nanoseconds now) const noexcept { return spent_hash(hash_(id), now); }
  M spent(std::string_view key, nanoseconds now) const noexcept { return spent_hash(hash_(key), now); }

  // The period `now` is in (days or months since the one holding
  // 1970-01-01 00:00 at the offset; 0 before it, and always 0 without a
  // period), and the time from `now` to the next reset (at least 1 ns;
  // INT64_MAX without a period or when it is that far).
  std::uint64_t period_at(nanoseconds now) const noexcept { return cal_.index(now.count()); }
  nanoseconds reset_in(nanoseconds now) const noexcept { return nanoseconds(cal_.reset_in(now.count())); }
  budget_calendar calendar() const noexcept { return calendar_; }

  // The table as bytes, and back (keyed/budget_snapshot.hpp states the
  // format, the restart rule and every refusal): what is held at the
  // snapshot comes back committed (a reservation does not survive a
  // restart), each entry in its own period. Time plays no part: an entry is
  // never rolled over by a snapshot, so the overload taking `now` (kept for
  // its callers) ignores it. snapshot() runs beside any traffic; restore()
  // only into a table that has taken none, before sharing it.
  std::string snapshot() const;
  std::string snapshot(nanoseconds) const { return snapshot(); }
  account_restore_errc restore(std::string_view bytes);

  // Forgets the key's budget (an explicit reset; see the header). Returns
  // whether it had an entry.
  bool erase(std::uint64_t id) noexcept { return slots_.erase(hash_(id)); }
  bool erase(std::string_view key) noexcept { return slots_.erase(hash_(key)); }
  bool contains(std::uint64_t id) const noexcept { return peek(hash_(id), nullptr) != nullptr; }
  bool contains(std::string_view key) const noexcept { return peek(hash_(key), nullptr) != nullptr; }

  std::size_t capacity() const noexcept { return slots_.capacity(); }
  std::size_t window() const noexcept { return slots_.window(); }
  std::size_t classes() const noexcept { return limits_.size(); }
  M limit(std::size_t cls) const noexcept { return cls < limits_.size() ? M::from_nanos(limits_[cls]) : M(); }
  static constexpr std::size_t bytes_per_entry() noexcept { return S::bytes_per_entry(); }

 private:
  static constexpr std::int64_t top = std::numeric_limits<std::int64_t>::max();
  static constexpr std::int64_t sticky = std::numeric_limits<std::int64_t>::min();

  errc init(std::size_t capacity, const std::vector<M>& limits, std::size_t window, budget_calendar cal);  // budget_ops.hpp
  static constexpr std::uint64_t snapshot_version = 2;  // 2: SipHash-1-3 keys (1: SipHash-2-4)
  std::uint64_t fingerprint() const noexcept;  // keyed/budget_snapshot.hpp

  bool periodic() const noexcept { return cal_.kind != detail::period_kind::none; }
  nanoseconds clock_now() const noexcept { return periodic() ? system_clock::now() : nanoseconds(0); }

  // The word {period, value} of a table with a period: the period in the top
  // 64 - shift_ bits, the value below; a value of all ones is the saturated
  // mark. Stored in the int64 atomics as the same bits.
  std::uint64_t value_mask() const noexcept { return (std::uint64_t{1} << shift_) - 1; }
  std::uint64_t pack(std::uint64_t period, std::uint64_t value) const noexcept { return (period << shift_) | value; }
  std::uint64_t period_of_word(std::uint64_t w) const noexcept { return w >> shift_; }
  static std::uint64_t bits(std::int64_t v) noexcept { return static_cast<std::uint64_t>(v); }
  static std::int64_t word(std::uint64_t w) noexcept { return static_cast<std::int64_t>(w); }
  // v + d for a value of the word, saturating at the mark, never below 0.
  std::uint64_t add_value(std::uint64_t v, std::int64_t d) const noexcept {
    const std::uint64_t mark = value_mask();
    if (v >= mark) return mark;
    if (d < 0) return bits(-(d + 1)) + 1 >= v ? 0 : v - (bits(-(d + 1)) + 1);
    return bits(d) >= mark - v ? mark : v + bits(d);
  }

  static keyed_reservation<Currency> refused(M amount, std::int64_t missing, keyed_status s) noexcept {
    keyed_reservation<Currency> r;
    r.amount = amount;
    r.missing = M::from_nanos(missing);
    r.status = s;
    return r;
  }
  // committed + amount - limit, saturating: only reported.
  static std::int64_t shortfall(std::int64_t c, std::int64_t amount, std::int64_t limit) noexcept {
    std::int64_t miss = 0;
    if (__builtin_sub_overflow(c, limit, &miss) || __builtin_add_overflow(miss, amount, &miss)) miss = top;
    return miss;
  }

  // Defined in keyed/budget_ops.hpp.
  keyed_reservation<Currency> reserve_hash(std::uint64_t h, std::size_t cls, M amount, nanoseconds now) noexcept;

  // A reservation in a table with a period (the entry pinned by us): the
  // rollover protocol is stated with it, in keyed/budget_ops.hpp.
  keyed_reservation<Currency> reserve_periodic(typename S::entry& e, std::size_t slot, std::int64_t limit, M amount,
                                               std::uint64_t p) noexcept;
  keyed_reservation<Currency> refuse_announced(typename S::entry& e, std::int64_t a, std::int64_t missing,
                                               bool saturated) noexcept {
    // seq_cst: withdraws our announcement (the protocol of reserve_periodic).
    (void)e.s.held.fetch_sub(a, std::memory_order_seq_cst);
    S::unpin(e);
    keyed_reservation<Currency> r = refused(M::from_nanos(a), missing, keyed_status::limited);
    r.saturated = saturated;
    return r;
  }
  // held += a unless it would pass INT64_MAX. seq_cst: the protocol of
  // reserve_periodic; a failed CAS only reloads.
  static bool announce(detail::atomic<std::int64_t>& held, std::int64_t a) noexcept {
    std::int64_t c = held.load(std::memory_order_seq_cst);
    for (;;) {
      std::int64_t next = 0;
      if (__builtin_add_overflow(c, a, &next)) return false;
      if (held.compare_exchange_weak(c, next, std::memory_order_seq_cst, std::memory_order_seq_cst)) return true;
    }
  }
  // The committed total a decision at period p would start from: the word's
  // value in its own period or a later p's rollover (what is held); -1 when
  // saturated. A peek: seq_cst loads only because they cost nothing more.
  std::int64_t committed_view(const typename S::entry& e, std::uint64_t p) const noexcept {
    const std::uint64_t w = bits(e.s.committed.load(std::memory_order_seq_cst));  // seq_cst: see above
    if (period_of_word(w) < p) return e.s.held.load(std::memory_order_seq_cst);    // seq_cst: see above
    return (w & value_mask()) == value_mask() ? -1 : word(w & value_mask());
  }

  // Defined in keyed/budget_ops.hpp.
  M settle_periodic(keyed_reservation<Currency>& r, std::int64_t actual, std::uint64_t p) noexcept;
  // The spent word {period, settled}: a statistic of the word's period.
  void add_spent_periodic(detail::atomic<std::int64_t>& t, std::uint64_t at, std::int64_t d) const noexcept {
    // relaxed: a statistic; the loop only recomputes from the value.
    std::uint64_t c = bits(t.load(std::memory_order_relaxed));
    for (;;) {
      const std::uint64_t q = period_of_word(c);
      if (q > at) return;  // a later period's: ours is over
      const std::uint64_t v = q < at ? 0 : c & value_mask();
      const std::uint64_t next = pack(at, bits(d) >= value_mask() - v ? value_mask() : v + bits(d));
      if (next == c) return;
      std::int64_t expect = word(c);
      if (t.compare_exchange_weak(expect, word(next), std::memory_order_relaxed, std::memory_order_relaxed)) return;
      c = bits(expect);
    }
  }

  // budget.hpp's saturating total: a sum past INT64_MAX sticks at the mark.
  static void sat_add(detail::atomic<std::int64_t>& t, std::int64_t d) noexcept {
    // relaxed load and failure: the loop only recomputes; the successful
    // CAS is acq_rel (as in reserve_hash).
    std::int64_t c = t.load(std::memory_order_relaxed);
    for (;;) {
      std::int64_t next = 0;
      if (c < 0) return;
      if (__builtin_add_overflow(c, d, &next)) next = sticky;
      else if (next < 0) next = 0;
      if (t.compare_exchange_weak(c, next, std::memory_order_acq_rel, std::memory_order_relaxed)) return;
    }
  }
  static void add_spent(detail::atomic<std::int64_t>& t, std::int64_t d) noexcept {
    // relaxed: a statistic; the loop only recomputes from the value.
    std::int64_t c = t.load(std::memory_order_relaxed);
    for (;;) {
      std::int64_t next = 0;
      if (__builtin_add_overflow(c, d, &next)) next = top;
      if (next == c || t.compare_exchange_weak(c, next, std::memory_order_relaxed, std::memory_order_relaxed)) return;
    }
  }

  const typename S::entry* peek(std::uint64_t h, std::size_t* cls) const noexcept {
    std::size_t c = 0;
    const typename S::entry* e = slots_.peek(h, c);
    if (cls != nullptr) *cls = c;
    return e;
  }
  M remaining_hash(std::uint64_t h, std::size_t cls, nanoseconds now) const noexcept {
    if (cls >= limits_.size()) return M();
    std::size_t c = cls;
    const typename S::entry* e = peek(h, &c);
    if (e == nullptr) return M::from_nanos(limits_[cls]);
    const std::int64_t w = periodic() ? committed_view(*e, cal_.index(now.count()))
                                      : e->s.committed.load(std::memory_order_acquire);  // acquire: as in reserve_hash
    return M::from_nanos(w < 0 || w >= limits_[c] ? 0 : limits_[c] - w);
  }
  M spent_hash(std::uint64_t h, nanoseconds now) const noexcept {
    const typename S::entry* e = peek(h, nullptr);
    if (e == nullptr) return M();
    const std::int64_t s = e->s.spent.load(std::memory_order_relaxed);  // relaxed: a statistic
    if (!periodic()) return M::from_nanos(s);
    // relaxed: a statistic (as the spent word).
    const std::uint64_t q = period_of_word(bits(e->s.committed.load(std::memory_order_relaxed)));
    const std::uint64_t p = cal_.index(now.count());
    const std::uint64_t cur = p > q ? p : q;
    return M::from_nanos(period_of_word(bits(s)) == cur ? word(bits(s) & value_mask()) : 0);
  }

  Hash hash_;
  S slots_;
  std::vector<std::int64_t> limits_;
  keyed_budget_reuse reuse_;
  budget_calendar calendar_{};
  detail::calendar_periods cal_{};
  unsigned shift_ = 52;  // with a period: the value bits of the words (47 for days, 52 for months)
};

TOLLGATE_END_NAMESPACE

#include <tollgate/keyed/budget_ops.hpp>
#include <tollgate/keyed/budget_snapshot.hpp>

#endif  // TOLLGATE_KEYED_BUDGETS_HPP
