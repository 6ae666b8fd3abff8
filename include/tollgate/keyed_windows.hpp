// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// keyed_windows.hpp: a strict sliding window per key (per user RPM, say) in
// a fixed-capacity table that never allocates after its construction and
// never resets a live window.
//
// Table. As keyed_buckets (keyed_buckets.hpp: the keyed hash under the
// user's seed, linear probing over a window of `window` entries, at most 64
// limit classes chosen by the call that claims a key's entry), with
// entries of 72 bytes (memory: 72 x capacity bytes plus the class list),
// allocated once by the constructor. A key's whole window is one 64-bit
// word: the number of its newest slot (32 bits) and four 8-bit counts.
//
// Guarantee. For a class of limit L per window W: in every half-open window
// (t - W, t] of the supplied timestamps, the units admitted on a key's
// entry never exceed L, under any interleaving of threads, across
// evictions. sliding_window's scheme with K = 3: slots of width
// w = ceil(W / 3) from the table's origin; an admission at slot s counts
// the units of slots s-3 .. s, which cover every such window, so the bound
// holds and under saturation a key gets about 3/4 of L per W. L is 1 .. 255
// (errc::too_large beyond: a count is 8 bits; keyed_buckets takes any
// burst) and W at least 1 s (errc::window_too_short).
//
// Lossless eviction: an entry is reclaimed for another key only when every
// count it holds has left the window at the claimer's `now` (its newest
// slot 4 or more slots behind, or no count at all), which is the state a
// fresh window has. Every claimed entry (reclaimed, or new for a key never
// seen) starts at the slot of the latest `now` any claim of the table has
// seen, so a key that comes back with an earlier `now` is refused as stale
// rather than counted twice. The price: one claim at a `now` far ahead (a
// clock stepped forward and back, a bogus supplied time) gets every new key
// refused as stale until then, erased ones too; keys that hold an entry are
// not affected (a table of buckets has the same rule). A live entry is never
// reset, except by erase(). When no entry of a new key's window may be
// reused, the key is refused with keyed_status::table_full (`later`, the
// wait until the first of them may be, assuming nothing else is admitted
// on it; zero with reason::busy when none can say); a flood of new keys
// changes no live entry.
//
// Time. Slots are numbered from the table's origin (times before it count
// as it, and their waits are counted from `now`); an entry keeps its newest slot modulo 2^32 and reads a difference
// of 2^31 slots or more as a `now` behind it. So a key's counts are read
// exactly while its calls are less than 2^31 slots apart: 22 years at the
// shortest window, 1 s. A `now` in a slot before a key's newest one is
// refused with reason::stale_time (retry_after: the time to that slot's
// start), as sliding_window does: the slots it falls in are gone.
//
// Restart. snapshot() / restore() (keyed/window_snapshot.hpp) keep every
// count across a restart at least as long as it would have stayed without
// it (at most one slot longer), whatever the downtime and the phases of
// both tables' slot grids, so the bound above holds in wall-clock time
// across the restart.
//
// Give-back. try_acquire can fill a keyed_ticket (keyed/ticket.hpp) naming
// the slot it charged; refund(key, ticket, n) takes up to n of those units
// back out of that very slot, so the bound above holds for the units
// admitted net of give-backs, exactly: a give-back depends on no `now`, so
// a thread that stalls before it returns nothing early (keyed_buckets'
// refund has a skew; this has none). It returns all of them unless the
// key's newest slot has moved 4 or more past the charged one (a call on the
// key at a `now` at least W later came between: no later decision counts
// that slot, so the units are gone from the window anyway), or the key's
// entry is not the one charged (erased or reclaimed meanwhile: the new entry
// owes none of them; the ticket names the entry and its claim generation),
// or the ticket is another table's (or this one's from before a restore()).
// A refund is meant for a request that was never sent (the account refused
// it, say): given back, its units may be admitted again at once.
//
// Decisions. n == 0 is admitted and changes nothing (claims nothing).
// n > L is `never` (reason::exceeds_capacity), for a new key without
// claiming an entry. A refusal writes nothing and gives the exact wait
// until enough of the counted slots have left. A bad class index is
// keyed_status::bad_class.
//
// Concurrency contract. Every member function is thread-safe and
// lock-free except as keyed/claim.hpp states for claims of one new key
// racing each other (obstruction-free). Admission on a live key is a pin
// CAS, a CAS on its window word and an unpin. Peeks (contains) may be
// stale the moment they return.
#ifndef TOLLGATE_KEYED_WINDOWS_HPP
#define TOLLGATE_KEYED_WINDOWS_HPP

#include <tollgate/config.hpp>
#include <tollgate/clock.hpp>
#include <tollgate/decision.hpp>
#include <tollgate/detail/arith.hpp>
#include <tollgate/detail/atomic.hpp>
#include <tollgate/error.hpp>
#include <tollgate/keyed/claim.hpp>
#include <tollgate/keyed/key.hpp>
#include <tollgate/keyed/ticket.hpp>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

TOLLGATE_BEGIN_NAMESPACE

enum class account_restore_errc : unsigned char;  // account/snapshot.hpp

// One limit class: at most `limit` units in any window of length `window`.
struct window_class {
  std::uint64_t limit = 0;
  nanoseconds window{0};
};

template <class Clock = steady_clock, class Hash = sip_key_hash>
class keyed_windows {
  struct window_state {
    // Bits 0-31: the newest slot's number modulo 2^32; bits 32 + 8i: the
    // count of slot newest - i, i = 0 .. 3.
    detail::atomic<std::uint64_t> word{0};
  };
  using S = detail::keyed_slots<window_state>;
  using entry = typename S::entry;

 public:
  using clock = Clock;
  static constexpr std::size_t max_classes = 64;
  static constexpr std::size_t default_window = 16;
  static constexpr std::uint64_t max_limit = 255;
  static constexpr nanoseconds min_window = nanoseconds(1000000000);

  // Throws config_error (or aborts without exceptions) on a bad
  // configuration: capacity, window or class list empty, or a limit of 0
  // (errc::zero_count); more than 64 classes, a capacity over 2^40 or a
  // limit over 255 (errc::too_large); a window under 1 s
  // (errc::window_too_short).
  keyed_windows(std::size_t capacity, const std::vector<window_class>& classes, hash_seed seed, nanoseconds origin,
                std::size_t window = default_window)
      : hash_(seed) {
    const errc e = init(capacity, classes, origin, window);
    if (e != errc::ok) detail::fail(e);
  }
  // Never throws: on a bad configuration sets `ec` and builds a table that
  // refuses everything with keyed_status::bad_class.
  keyed_windows(std::size_t capacity, const std::vector<window_class>& classes, hash_seed seed, nanoseconds origin,
                std::size_t window, errc& ec) noexcept
      : hash_(seed) {
    ec = init(capacity, classes, origin, window);
  }
  keyed_windows(const keyed_windows&) = delete;
  keyed_windows& operator=(const keyed_windows&) = delete;

  keyed_result try_acquire(std::uint64_t id, std::size_t cls, std::uint64_t n, nanoseconds now) noexcept {
    return acquire_hash(hash_(id), cls, n, now, nullptr);
  }
  keyed_result try_acquire(std::string_view key, std::size_t cls, std::uint64_t n, nanoseconds now) noexcept {
    return acquire_hash(hash_(key), cls, n, now, nullptr);
  }
  // The same, and fills `t` for a later refund (a refusal, or n == 0, leaves
  // it empty).
  keyed_result try_acquire(std::uint64_t id, std::size_t cls, std::uint64_t n, nanoseconds now,
                           keyed_ticket& t) noexcept {
    return acquire_hash(hash_(id), cls, n, now, &t);
  }
  keyed_result try_acquire(std::string_view key, std::size_t cls, std::uint64_t n, nanoseconds now,
                           keyed_ticket& t) noexcept {
    return acquire_hash(hash_(key), cls, n, now, &t);
  }

  // Gives back up to n of the units the ticket's admission charged, out of
  // the slot it charged (the rule above: exact, no `now`). Returns the
  // units given back; the ticket keeps the rest.
  std::uint64_t refund(std::uint64_t id, keyed_ticket& t, std::uint64_t n) noexcept {
    return refund_hash(hash_(id), t, n);
  }
  std::uint64_t refund(std::string_view key, keyed_ticket& t, std::uint64_t n) noexcept {
    return refund_hash(hash_(key), t, n);
  }
  keyed_result try_acquire(std::uint64_t id, std::size_t cls, std::uint64_t n = 1) noexcept {
    return try_acquire(id, cls, n, Clock::now());
  }
  keyed_result try_acquire(std::string_view key, std::size_t cls, std::uint64_t n = 1) noexcept {
    return try_acquire(key, cls, n, Clock::now());
  }

  // Forgets the key's window (an explicit reset). Returns whether it had an entry.
  bool erase(std::uint64_t id) noexcept { return slots_.erase(hash_(id)); }
  bool erase(std::string_view key) noexcept { return slots_.erase(hash_(key)); }
  bool contains(std::uint64_t id) const noexcept { return peek(hash_(id)); }
  bool contains(std::string_view key) const noexcept { return peek(hash_(key)); }

  // The table as bytes, and back (keyed/window_snapshot.hpp states the
  // format, the time rule and every refusal): a restored count stays at
  // least as long as it would have without the restart. snapshot() runs
  // beside any traffic; restore() only into a table that has taken none,
  // before sharing it.
  std::string snapshot(nanoseconds now, nanoseconds wall) const;
  account_restore_errc restore(std::string_view bytes, nanoseconds now, nanoseconds wall);

  std::size_t capacity() const noexcept { return slots_.capacity(); }
  std::size_t window() const noexcept { return slots_.window(); }
  std::size_t classes() const noexcept { return cls_.size(); }
  static constexpr std::size_t bytes_per_entry() noexcept { return S::bytes_per_entry(); }

 private:
  struct params {
    std::uint64_t limit;
    std::uint64_t width;  // slot width w, ns
  };
  static constexpr std::uint64_t tag_mask = 0xffffffffULL;

  errc init(std::size_t capacity, const std::vector<window_class>& classes, nanoseconds origin, std::size_t window) {
    if (capacity == 0 || window == 0 || classes.empty()) return errc::zero_count;
    if (classes.size() > max_classes || capacity > (std::size_t{1} << 40)) return errc::too_large;
    std::vector<params> ps;
    ps.reserve(classes.size());
    for (const window_class& c : classes) {
      if (c.limit == 0) return errc::zero_count;
      if (c.limit > max_limit) return errc::too_large;
      if (c.window < min_window) return errc::window_too_short;
      ps.push_back(params{c.limit, detail::ceil_div(static_cast<std::uint64_t>(c.window.count()), 3)});
    }
    slots_.init(capacity, window);
    cls_ = std::move(ps);
    origin_ = origin.count();
    id_ = detail::next_keyed_table_id();
    return errc::ok;
  }

  static std::uint64_t count(std::uint64_t w, unsigned i) noexcept { return (w >> (32 + 8 * i)) & 0xff; }
  // The window word moved forward d slots (d < 2^31) to slot tag `s`.
  static std::uint64_t shifted(std::uint64_t w, std::uint64_t d, std::uint64_t s) noexcept {
    const std::uint64_t counts = d >= 4 ? 0 : ((w >> 32) << (8 * d)) & tag_mask;
    return (counts << 32) | (s & tag_mask);
  }
  // How many slots the word's newest slot lies behind slot s; 2^31 or more
  // reads as s behind it (stale).
  static std::uint64_t behind(std::uint64_t w, std::uint64_t s) noexcept { return (s - w) & tag_mask; }
  static constexpr std::uint64_t stale_from = std::uint64_t{1} << 31;

  std::uint64_t since(nanoseconds now) const noexcept { return detail::positive_difference(now.count(), origin_); }
  static nanoseconds ns(std::uint64_t v) noexcept {
    const std::uint64_t top = static_cast<std::uint64_t>(INT64_MAX);
    return nanoseconds(static_cast<std::int64_t>(v > top ? top : v));
  }

  // Decides n units at slot s on word w: admitted (sets `next`) or the refusal.
  static decision decide(std::uint64_t w, const params& p, std::uint64_t n, std::uint64_t s, std::uint64_t t,
                         std::uint64_t& next) noexcept {
    const std::uint64_t d = behind(w, s);
    if (d >= stale_from) {
      // Wait for the newest slot's start: ((s + (2^32 - d)) * width) - t.
      const std::uint64_t ahead = (tag_mask + 1) - d;
      return decision::wait(ns(detail::sat_mul(detail::sat_add(s, ahead), p.width) - t), reason::stale_time);
    }
    const std::uint64_t cur = shifted(w, d, s);
    std::uint64_t sum = 0;
    for (unsigned i = 0; i < 4; ++i) sum += count(cur, i);
    if (sum + n <= p.limit) {
      next = cur + (n << 32);  // slot s's count stays <= limit <= 255
      return decision::admit();
    }
    // The oldest counted slots leave at each slot boundary: the first j
    // with the newest 4 - j counts plus n within the limit.
    std::uint64_t left = sum;
    for (unsigned j = 1; j <= 4; ++j) {
      left -= count(cur, 4 - j);
      if (left + n <= p.limit) return decision::wait(ns(detail::sat_mul(s + j, p.width) - t));
    }
    return decision::refuse(reason::exceeds_capacity);  // n > limit: not reached (checked before)
  }

  // A `now` before the origin is decided as the origin; its waits, counted
  // from the origin, are then longer from `now` by the difference.
  keyed_result acquire_hash(std::uint64_t h, std::size_t cls, std::uint64_t n, nanoseconds now,
                            keyed_ticket* tk) noexcept {
    if (tk != nullptr) *tk = keyed_ticket{};
    const keyed_result r = acquire_at(h, cls, n, since(now), tk);
    const decision& d = r.result();
    if (now.count() >= origin_ || !d.later() || d.why() == reason::busy) return r;
    const std::uint64_t early = detail::positive_difference(origin_, now.count());
    return {decision::wait(ns(detail::sat_add(static_cast<std::uint64_t>(d.retry_after().count()), early)), d.why()),
            r.status()};
  }
  keyed_result acquire_at(std::uint64_t h, std::size_t cls, std::uint64_t n, std::uint64_t t,
                          keyed_ticket* tk) noexcept {
    if (cls >= cls_.size()) return {decision::refuse(reason::misconfigured), keyed_status::bad_class};
    if (n == 0) return {decision::admit(), keyed_status::admitted};
    std::size_t slot = 0, c = cls;
    for (;;) {
      if (slots_.pin(h, slot, c)) break;
      if (n > cls_[cls].limit) return {decision::refuse(reason::exceeds_capacity), keyed_status::limited};
      std::uint64_t soonest = ~std::uint64_t{0};
      bool known = false;
      auto reusable = [&](entry& e, std::size_t k) {
        const params& p = cls_[k];
        const std::uint64_t s = t / p.width;
        // acquire: pairs with the unpins (release) that precede the control
        // word the claim read with no pins (keyed/claim.hpp).
        const std::uint64_t w = e.s.word.load(std::memory_order_acquire);
        const std::uint64_t d = behind(w, s);
        if ((w >> 32) == 0 || (d >= 4 && d < stale_from)) return true;
        if (d < 4) {  // reusable once its newest slot is 4 behind
          const std::uint64_t wait = detail::sat_mul(s + 4 - d, p.width) - t;
          if (wait < soonest) soonest = wait;
          known = true;
        }
        return false;
      };
      auto start = [&](entry& e) {
        // relaxed: published by the claim's publish CAS (a release).
        e.s.word.store((slots_.start_time() / cls_[cls].width) & tag_mask, std::memory_order_relaxed);
      };
      const detail::claim_outcome o = slots_.claim(h, cls, t, slot, reusable, start);
      if (o == detail::claim_outcome::retry) continue;
      if (o == detail::claim_outcome::full) {
        return {known ? decision::wait(ns(soonest)) : decision::wait(nanoseconds(0), reason::busy),
                keyed_status::table_full};
      }
      c = cls;
      break;
    }
    entry& e = slots_[slot];
    const params& p = cls_[c];
    decision d = decision::refuse(reason::exceeds_capacity);
    if (n <= p.limit) {
      const std::uint64_t s = t / p.width;
      // relaxed: the word is the key's whole window; CAS atomicity orders
      // the admissions among themselves. Its initial value came with the
      // pin (acquire), and evictors read it after our unpin (release).
      std::uint64_t w = e.s.word.load(std::memory_order_relaxed);
      for (;;) {
        std::uint64_t next = 0;
        d = decide(w, p, n, s, t, next);
        // relaxed / relaxed: as the load above.
        if (!d.admitted() || e.s.word.compare_exchange_weak(w, next, std::memory_order_relaxed,
                                                             std::memory_order_relaxed))
          break;
      }
      // relaxed: the claim generation was written before the publish CAS
      // (release) that our pin's acquire read, or by ourselves; no claim can
      // change it while we hold the pin.
      if (tk != nullptr && d.admitted())
        *tk = keyed_ticket{h, s, n, c, slot, e.claim.load(std::memory_order_relaxed), id_};
    }
    S::unpin(e);
    return {d, d.admitted() ? keyed_status::admitted : keyed_status::limited};
  }

  // Takes back what the ticket may still give out of the slot it charged.
  std::uint64_t refund_hash(std::uint64_t h, keyed_ticket& t, std::uint64_t n) noexcept {
    if (n > t.units) n = t.units;
    if (n == 0 || t.hash != h || t.table != id_ || t.cls >= cls_.size()) return 0;  // id_: see restore()
    std::size_t slot = 0, c = 0;
    if (!slots_.pin(h, slot, c)) return 0;  // gone: its new entry, if any, owes nothing
    std::uint64_t got = 0;
    entry& e = slots_[slot];
    // relaxed: as in acquire_at(); another incarnation of the key (or of the
    // entry) has another slot or claim generation.
    if (c == t.cls && slot == t.slot && e.claim.load(std::memory_order_relaxed) == t.claim) {
      // relaxed: the word is the key's whole window; CAS atomicity orders a
      // give-back among the admissions (as in acquire_at()).
      std::uint64_t w = e.s.word.load(std::memory_order_relaxed);
      for (;;) {
        // The charged slot's position behind the newest; the newest never
        // goes behind a slot this incarnation admitted in, so this is below
        // 2^31, and 4 or more means the slot has left the window.
        const std::uint64_t i = (w - t.end) & tag_mask;
        if (i >= 4) break;
        const std::uint64_t have = count(w, static_cast<unsigned>(i));
        const std::uint64_t k = n < have ? n : have;
        if (k == 0) break;
        // relaxed / relaxed: as the load above.
        if (e.s.word.compare_exchange_weak(w, w - (k << (32 + 8 * i)), std::memory_order_relaxed,
                                           std::memory_order_relaxed)) {
          got = k;
          break;
        }
      }
    }
    S::unpin(e);
    t.units -= got;
    return got;
  }

  bool peek(std::uint64_t h) const noexcept {
    std::size_t c = 0;
    return slots_.peek(h, c) != nullptr;
  }

  static constexpr std::uint64_t snapshot_version = 2;  // 2: SipHash-1-3 keys (1: SipHash-2-4)
  std::uint64_t fingerprint() const noexcept;           // keyed/window_snapshot.hpp
  static std::uint64_t max_left(const params& p) noexcept;  // keyed/window_snapshot.hpp

  Hash hash_;
  S slots_;
  std::vector<params> cls_;
  std::int64_t origin_ = 0;
  std::uint64_t id_ = 0;  // this table's identity (keyed/ticket.hpp): set by init() and restore() only
};

TOLLGATE_END_NAMESPACE

#include <tollgate/keyed/window_snapshot.hpp>

#endif  // TOLLGATE_KEYED_WINDOWS_HPP
