// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// keyed_budgets.hpp: a spending limit per key (per tenant, per API key)
// with reserve -> settle, in a fixed-capacity table that never allocates
// after its construction and never forgets what a key has spent.
//
// Table. As keyed_buckets (keyed_buckets.hpp: the keyed hash under the
// user's seed, linear probing over a window of `window` entries, at most 64
// limit classes chosen by the call that claims a key's entry), with
// entries of 64 bytes (memory: 64 x capacity bytes plus the class list),
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
// Collisions. Two keys with one 64-bit hash share one entry and its limit
// (the conservative side); keyed_buckets.hpp states the probabilities.
//
// Decisions. reserve() of zero or less is admitted and holds nothing (no
// entry claimed). An amount over the key's class limit is refused (status
// limited, `missing` set) without claiming an entry for a new key; so is
// one that does not fit what is left. A key holding about max_held (16383)
// reservations at once is refused (status limited, `busy` set). A bad
// class index is keyed_status::bad_class. Limits are positive money.
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

#include <tollgate/config.hpp>
#include <tollgate/detail/atomic.hpp>
#include <tollgate/error.hpp>
#include <tollgate/keyed/claim.hpp>
#include <tollgate/keyed/key.hpp>
#include <tollgate/money.hpp>

#include <cstddef>
#include <cstdint>
#include <limits>
#include <string_view>
#include <utility>
#include <vector>

TOLLGATE_BEGIN_NAMESPACE
namespace detail {
struct keyed_budget_state {
  atomic<std::int64_t> committed{0};  // reserved + settled, nano-units; negative: saturated (budget.hpp)
  atomic<std::int64_t> spent{0};      // settled, nano-units
};
using keyed_budget_slots = keyed_slots<keyed_budget_state>;
}  // namespace detail

enum class keyed_budget_reuse : std::uint8_t {
  never,  // only erase() frees an entry
  idle,   // budgets reset: an entry with no reservation held may be reclaimed
};

template <class C>
class keyed_reservation {
 public:
  keyed_reservation() noexcept = default;
  keyed_reservation(const keyed_reservation&) = delete;
  keyed_reservation& operator=(const keyed_reservation&) = delete;
  keyed_reservation(keyed_reservation&& o) noexcept { take(o); }
  keyed_reservation& operator=(keyed_reservation&& o) noexcept {
    if (this != &o) {
      drop();
      take(o);
    }
    return *this;
  }
  ~keyed_reservation() { drop(); }

  money<C> amount;   // what is held
  money<C> missing;  // when refused: how much more budget it would have needed
  keyed_status status = keyed_status::bad_class;
  bool busy = false;       // refused: the key holds max_held reservations
  bool saturated = false;  // refused: the key's totals overflowed (budget.hpp)
  bool admitted() const noexcept { return status == keyed_status::admitted; }
  explicit operator bool() const noexcept { return admitted(); }
  // Whether it still holds money (admitted, not settled, not dropped).
  bool held() const noexcept { return owner_ != nullptr; }

  // Unpins its entry without settling: its money stays committed.
  void drop() noexcept {
    if (owner_ == nullptr) return;
    detail::keyed_budget_slots::unpin((*owner_)[slot_]);
    owner_ = nullptr;
  }

 private:
  template <class, class>
  friend class keyed_budgets;
  void take(keyed_reservation& o) noexcept {
    amount = o.amount;
    missing = o.missing;
    status = o.status;
    busy = o.busy;
    saturated = o.saturated;
    owner_ = std::exchange(o.owner_, nullptr);
    slot_ = o.slot_;
  }
  detail::keyed_budget_slots* owner_ = nullptr;  // set while it pins its entry
  std::size_t slot_ = 0;
};

template <class Currency = usd_tag, class Hash = sip_key_hash>
class keyed_budgets {
  using S = detail::keyed_budget_slots;
  using M = money<Currency>;

 public:
  static constexpr std::size_t max_classes = 64;
  static constexpr std::size_t default_window = 16;
  static constexpr std::uint64_t max_held = S::max_held;

  // Throws config_error (or aborts without exceptions) on a bad
  // configuration: capacity, window or limit list empty, or a limit not
  // above zero (errc::zero_count); more than 64 classes or a capacity over
  // 2^40 (errc::too_large). A window larger than the capacity is the
  // capacity.
  keyed_budgets(std::size_t capacity, const std::vector<M>& limits, hash_seed seed,
                keyed_budget_reuse reuse = keyed_budget_reuse::never, std::size_t window = default_window)
      : hash_(seed), reuse_(reuse) {
    const errc e = init(capacity, limits, window);
    if (e != errc::ok) detail::fail(e);
  }
  // Never throws: on a bad configuration sets `ec` and builds a table that
  // refuses everything with keyed_status::bad_class.
  keyed_budgets(std::size_t capacity, const std::vector<M>& limits, hash_seed seed, keyed_budget_reuse reuse,
                std::size_t window, errc& ec) noexcept
      : hash_(seed), reuse_(reuse) {
    ec = init(capacity, limits, window);
  }
  keyed_budgets(const keyed_budgets&) = delete;
  keyed_budgets& operator=(const keyed_budgets&) = delete;

  // Holds `amount` of the key's budget if it fits (claiming an entry with
  // class `cls` if the key has none).
  keyed_reservation<Currency> reserve(std::uint64_t id, std::size_t cls, M amount) noexcept {
    return reserve_hash(hash_(id), cls, amount);
  }
  keyed_reservation<Currency> reserve(std::string_view key, std::size_t cls, M amount) noexcept {
    return reserve_hash(hash_(key), cls, amount);
  }

  // Records the actual cost of a reservation of this table and frees the
  // rest of it; returns reserved - actual (negative: an overspend, still
  // recorded). Nothing for one not held (refused, settled, dropped) or of
  // another table. A negative cost counts as zero.
  M settle(keyed_reservation<Currency>& r, M actual) noexcept {
    if (r.owner_ != &slots_) return M();
    if (actual.nanos() < 0) actual = M();
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

  // What the key may still reserve: its entry's, or a whole class `cls`
  // budget when it has none (peek); zero for a bad class index.
  M remaining(std::uint64_t id, std::size_t cls) const noexcept { return remaining_hash(hash_(id), cls); }
  M remaining(std::string_view key, std::size_t cls) const noexcept { return remaining_hash(hash_(key), cls); }
  // What the key's entry has settled (peek); zero when it has none.
  M spent(std::uint64_t id) const noexcept { return spent_hash(hash_(id)); }
  M spent(std::string_view key) const noexcept { return spent_hash(hash_(key)); }

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
  static constexpr std::size_t bytes_per_entry() noexcept { return sizeof(typename S::entry); }

 private:
  static constexpr std::int64_t top = std::numeric_limits<std::int64_t>::max();
  static constexpr std::int64_t sticky = std::numeric_limits<std::int64_t>::min();

  errc init(std::size_t capacity, const std::vector<M>& limits, std::size_t window) {
    if (capacity == 0 || window == 0 || limits.empty()) return errc::zero_count;
    if (limits.size() > max_classes || capacity > (std::size_t{1} << 40)) return errc::too_large;
    std::vector<std::int64_t> ls;
    ls.reserve(limits.size());
    for (const M& l : limits) {
      if (l.nanos() <= 0) return errc::zero_count;
      ls.push_back(l.nanos());
    }
    slots_.init(capacity, window);
    limits_ = std::move(ls);
    return errc::ok;
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

  keyed_reservation<Currency> reserve_hash(std::uint64_t h, std::size_t cls, M amount) noexcept {
    if (cls >= limits_.size()) return refused(amount, 0, keyed_status::bad_class);
    if (amount.nanos() <= 0) return refused(M(), 0, keyed_status::admitted);  // holds nothing
    std::size_t slot = 0, c = cls;
    std::uint64_t pins = 0;
    for (;;) {
      if (slots_.pin(h, slot, c, &pins)) break;
      if (amount.nanos() > limits_[cls])
        return refused(amount, shortfall(0, amount.nanos(), limits_[cls]), keyed_status::limited);
      const bool idle = reuse_ == keyed_budget_reuse::idle;
      // No pin (checked by the claim): no reservation held. Reused only when
      // the user said budgets reset.
      auto reusable = [idle](typename S::entry&, std::size_t) { return idle; };
      auto start = [](typename S::entry& e) {
        // relaxed: published by the claim's publish CAS (a release).
        e.s.committed.store(0, std::memory_order_relaxed);
        e.s.spent.store(0, std::memory_order_relaxed);
      };
      const detail::claim_outcome o = slots_.claim(h, cls, 0, slot, reusable, start);
      if (o == detail::claim_outcome::retry) continue;
      if (o == detail::claim_outcome::full) return refused(amount, 0, keyed_status::table_full);
      c = cls;
      pins = 0;
      break;
    }
    typename S::entry& e = slots_[slot];
    const std::int64_t limit = limits_[c];
    if (pins >= max_held) {
      S::unpin(e);
      keyed_reservation<Currency> r = refused(amount, 0, keyed_status::limited);
      r.busy = true;
      return r;
    }
    // acquire / acq_rel: budget.hpp's orders on the committed total.
    std::int64_t w = e.s.committed.load(std::memory_order_acquire);
    for (;;) {
      std::int64_t next = 0;
      if (w < 0 || __builtin_add_overflow(w, amount.nanos(), &next) || next > limit) {
        S::unpin(e);
        keyed_reservation<Currency> r = refused(amount, w < 0 ? top : shortfall(w, amount.nanos(), limit),
                                                keyed_status::limited);
        r.saturated = w < 0;
        return r;
      }
      if (e.s.committed.compare_exchange_weak(w, next, std::memory_order_acq_rel, std::memory_order_acquire)) break;
    }
    keyed_reservation<Currency> r = refused(amount, 0, keyed_status::admitted);
    r.owner_ = &slots_;  // the pin stays until settle or drop
    r.slot_ = slot;
    return r;
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
  M remaining_hash(std::uint64_t h, std::size_t cls) const noexcept {
    if (cls >= limits_.size()) return M();
    std::size_t c = cls;
    const typename S::entry* e = peek(h, &c);
    if (e == nullptr) return M::from_nanos(limits_[cls]);
    const std::int64_t w = e->s.committed.load(std::memory_order_acquire);  // acquire: as in reserve_hash
    return M::from_nanos(w < 0 || w >= limits_[c] ? 0 : limits_[c] - w);
  }
  M spent_hash(std::uint64_t h) const noexcept {
    const typename S::entry* e = peek(h, nullptr);
    return M::from_nanos(e == nullptr ? 0 : e->s.spent.load(std::memory_order_relaxed));  // relaxed: a statistic
  }

  Hash hash_;
  S slots_;
  std::vector<std::int64_t> limits_;
  keyed_budget_reuse reuse_;
};

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_KEYED_BUDGETS_HPP
