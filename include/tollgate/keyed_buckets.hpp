// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// keyed_buckets.hpp: one GCRA token bucket per key (an end user, a tenant,
// an API key) in a fixed-capacity table that never allocates after its
// construction and never resets a live bucket.
//
// Table. `capacity` entries of 72 bytes (a 64-byte line each, so that two
// threads' keys never share one, and an 8-byte probe hint), allocated once
// by the constructor (memory: 72 x capacity bytes plus the class list;
// keyed/claim.hpp says why the line and the hint). A key (a 64-bit id or a
// string_view) is hashed with SipHash-1-3 under a 128-bit seed the user
// supplies; the entry stores the 64-bit hash, not the key. Linear probing
// over a window of `window` entries from the hash's home (16 unless told):
// a new key takes the window's first unused entry, or else the first one
// that may be reclaimed (below).
// Each entry's limit (rate, burst) is one of a small list of limit classes
// (at most 64), chosen by the call that claims the entry for its key; later
// calls for a live key use the class it was claimed with.
//
// Guarantee. For every key, over any interval t of supplied timestamps, the
// admissions on its entry are at most B + floor(t / T) (the token_bucket
// bound of its class, same exact tick arithmetic), across evictions: an
// entry is reclaimed for another key only when its bucket is full at the
// reclaimer's `now` (TAT not after it), which is the state a fresh bucket
// has, and a reclaimed entry starts with its TAT at the latest `now` any
// claim has seen, so a key that comes back with an earlier `now` owes the
// difference rather than getting units twice. A live entry (not full) is
// never reset, except by erase(). When every entry of a new key's window is
// live, the key is refused with keyed_status::table_full (its decision is
// `later` with the time until the first of those entries is full again or
// past its class's horizon, assuming nothing else is admitted on it; zero
// with reason::busy when none can say; `never` when that time is past the
// new key's class's horizon); a flood of new keys therefore changes no
// live entry. keyed_overflow.hpp sends such keys to a limiter you name.
//
// Collisions. Two keys with the same 64-bit hash share one entry and its
// limit: the conservative side (each may be refused for what the other
// took; neither gets more than the shared limit). Without the seed, a client
// can do no better than chance as long as SipHash-1-3 is a keyed
// pseudo-random function (no attack that does better is known; it has fewer
// rounds of margin than SipHash-2-4, the format-1 hash, see keyed/key.hpp):
// with m live entries a new key shares one with probability at most
// m / 2^64 (5.4e-14 at a million), and N keys over the table's life share
// any entry with probability at most N^2 / 2^65. A key is refused as
// table_full only when all `window` entries from its home are live and not
// full. Linear probing clusters entries, so this is far likelier than the
// a^window of spread entries: measured with the default window of 16 on
// 4096 entries (test "keyed: window occupancy", which prints it), a new key
// is refused at load 0.5 about 0.5 % of the time, at 0.75 about 13 %, at
// 0.9 about 47 % (one placement; another seed or hash moves the first). Size the table for at most half full of live entries (a
// live entry is one that owes: keys active within about burst x interval).
// Ids and strings are hashed under different derived keys, so an id never
// collides with the 8-byte string of its bytes by construction.
//
// Time. Ticks are counted from the table's origin (times before it count as
// it, and their waits are counted from `now`), at each class's scale s. A class counts exactly up to its horizon,
// horizon(cls) = floor((2^62 - 1 - B x T ticks) / s) ns after the origin,
// at least 10 years (token_bucket's rule). Unlike token_bucket the epoch
// never moves, so a class ends there: a `now` past its horizon is refused
// `never` (reason::exceeds_capacity: nothing more can ever be granted),
// for a key of that class and for a new key claiming it (which then takes
// no entry), and so is a refusal before it whose exact wait would end past
// it (table_full included). At the horizon itself decisions are still
// exact. An entry of a class past its horizon is full, as a fresh one is
// there (both refuse everything), and may be reclaimed. A `now` earlier
// than a key's state is evaluated at face value: never more permissive
// than the latest time seen.
//
// Decisions. n == 0 is admitted and changes nothing (and claims nothing).
// Past a class's horizon everything else is `never` (see Time).
// n > the class burst is `never`. Otherwise a refusal writes nothing to the
// bucket and gives the exact wait. A bad class index is refused with
// keyed_status::bad_class. A new key asking for more than its class's
// burst, or past its horizon, is refused without claiming an entry; one
// refused by its fresh bucket (a `now` behind the latest one seen) has
// claimed one, which owes nothing beyond that latest time and is reclaimed
// once full.
//
// Concurrency contract. Every member function is thread-safe. Admission on
// a live key is lock-free and takes one read-modify-write, the bucket's
// CAS: the entry is found by loads alone (its control word holds state,
// class, a count of pins and a 40-bit version that every pin, claim and
// erase advances; construction and restore() leave it 0; the hash and
// claim generation are read between two loads of it that must agree). An
// evictor may reclaim a live entry with no pins whose bucket is full at its
// `now`: it first seals the bucket (one CAS of the TAT word from the full
// value it checked to a seal naming the control word's version and a
// ticket of its own: no TAT has the top bit a seal has), then claims the entry with a CAS expecting that
// control word. The TAT word orders an admission and a seal: an admission's
// CAS that lands first changes the value the seal expects (the seal fails);
// an admission that finds a seal pins the entry (a CAS that advances the
// version, which fails the claim if it has not landed, and keeps further
// claims off the entry), puts in the seal's place the TAT a claim would
// start with (the latest time any claim has seen, which every sealer raised
// to its `now` before sealing: on the safe side of what the full bucket
// owed), admits and unpins; if the claim landed first, the key was full and
// is claimed again elsewhere, losing nothing. An evictor whose claim CAS
// fails puts back the value it sealed, if its seal still stands (seals are
// never equal, so one evictor's undo cannot land on another's seal). An
// admission's CAS that lands on a new occupant (its expected value equal,
// by chance, to the new bucket's start) is seen by the claim generation read
// after it, and the admission looks again: the new occupant keeps that one
// charge (the conservative side), and so does a key whose admission raced
// its own entry's eviction by a `now` far enough ahead to find it full
// again, or its erase (it is charged again in its new entry). Refunds,
// snapshots and the first admission of a claimed entry pin it, so no claim
// can land under them. (The version wraps after 2^40 steps, a seal's
// ticket after 2^22 seals of the table: a thread would have to stall
// between two loads or a load and its CAS for that many operations to be
// fooled.) Claiming a new key is lock-free
// too, except that two claims of one new key racing each other may withdraw
// each other and retry (obstruction-free); no thread ever waits for
// another, and a key never holds two entries. A claimer stalled between its
// claim and its publish keeps that one entry out of use until it runs again
// (others withdraw its claim, only it frees the entry); one stalled between
// its seal and its claim keeps that entry from other claims until it runs
// again or the key's next admission (claims pass a seal that may still
// land, rather than fail it: two claimers failing each other's could go on
// for ever).
// erase() is lock-free: it takes the key out at once; an admission already
// in progress finishes on the erased bucket (as if it came before the
// erase) or, if the entry has been claimed again meanwhile, looks again. Peeks
// (available, contains) may be stale the moment they return, and may read
// a newer occupant of a reclaimed entry (which shows less, never more).
// The state is plain lock-free 64-bit atomics (no pointers), but this class
// allocates its own storage: it is not placeable in shared memory yet.
#ifndef TOLLGATE_KEYED_BUCKETS_HPP
#define TOLLGATE_KEYED_BUCKETS_HPP

#include <tollgate/config.hpp>
#include <tollgate/clock.hpp>
#include <tollgate/decision.hpp>
#include <tollgate/detail/arith.hpp>
#include <tollgate/detail/atomic.hpp>
#include <tollgate/detail/gcra_params.hpp>
#include <tollgate/detail/siphash.hpp>
#include <tollgate/error.hpp>
#include <tollgate/keyed/claim.hpp>
#include <tollgate/keyed/key.hpp>
#include <tollgate/keyed/ticket.hpp>
#include <tollgate/rate.hpp>
#include <tollgate/token_bucket.hpp>

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

TOLLGATE_BEGIN_NAMESPACE

enum class account_restore_errc : unsigned char;  // account/snapshot.hpp

// One limit class: a token bucket's rate and burst.
struct key_class {
  rate r;
  std::uint64_t burst = 0;
};

template <class Clock = steady_clock, class Hash = sip_key_hash>
class keyed_buckets {
  using L = detail::gcra_limits;

 public:
  using clock = Clock;
  static constexpr std::size_t max_classes = 64;
  static constexpr std::size_t default_window = 16;

  // Throws config_error (or aborts without exceptions) on a bad
  // configuration: capacity, window or class list empty (errc::zero_count),
  // more than 64 classes or a capacity over 2^40 (errc::too_large), or a
  // class token_bucket would refuse (its errc). A window larger than the
  // capacity is the capacity.
  // Origin Clock::now(), window 16.
  keyed_buckets(std::size_t capacity, std::initializer_list<key_class> classes, hash_seed seed)
      : keyed_buckets(capacity, std::vector<key_class>(classes), seed, Clock::now()) {}
  keyed_buckets(std::size_t capacity, const std::vector<key_class>& classes, hash_seed seed)
      : keyed_buckets(capacity, classes, seed, Clock::now()) {}
  keyed_buckets(std::size_t capacity, std::initializer_list<key_class> classes, hash_seed seed, nanoseconds origin,
                std::size_t window = default_window)
      : keyed_buckets(capacity, std::vector<key_class>(classes), seed, origin, window) {}
  keyed_buckets(std::size_t capacity, const std::vector<key_class>& classes, hash_seed seed, nanoseconds origin,
                std::size_t window = default_window)
      : hash_(seed) {
    const errc e = init(capacity, classes, origin, window);
    if (e != errc::ok) detail::fail(e);
  }
  // Never throws: on a bad configuration sets `ec` and builds a table that
  // refuses everything with keyed_status::bad_class. (It still allocates
  // the table: running out of memory here terminates.)
  keyed_buckets(std::size_t capacity, const std::vector<key_class>& classes, hash_seed seed, nanoseconds origin,
                std::size_t window, errc& ec) noexcept
      : hash_(seed) {
    ec = init(capacity, classes, origin, window);
  }

  keyed_buckets(const keyed_buckets&) = delete;
  keyed_buckets& operator=(const keyed_buckets&) = delete;

  // Takes n units from the key's bucket (claiming an entry with class `cls`
  // if the key has none).
  keyed_result try_acquire(std::uint64_t id, std::size_t cls, std::uint64_t n, nanoseconds now) noexcept {
    return acquire_hash(hash_(id), cls, n, now, nullptr);
  }
  // The same, and fills `t` for a later refund (a refusal leaves it empty).
  keyed_result try_acquire(std::uint64_t id, std::size_t cls, std::uint64_t n, nanoseconds now,
                           keyed_ticket& t) noexcept {
    return acquire_hash(hash_(id), cls, n, now, &t);
  }
  keyed_result try_acquire(std::string_view key, std::size_t cls, std::uint64_t n, nanoseconds now,
                           keyed_ticket& t) noexcept {
    return acquire_hash(hash_(key), cls, n, now, &t);
  }

  // Gives back up to n of the units an admission took, by token_bucket's
  // ticket rule: whole units only, at most
  //     min(n, t.units, (t.end - now) / T, owed(now) / T)
  // (the part of the admission's own intervals still ahead), so the bound
  // holds for the units admitted net of refunds. Nothing when the key's
  // entry is gone (it was full: nothing is owed) or has another class, or
  // for another key's ticket, or when the key's entry is not the one the
  // admission charged (the key was erased or evicted and claimed an entry
  // again: the ticket names its entry and that entry's claim generation, a
  // 64-bit count of its claims that would wrap only after 2^64 claims of
  // one entry while the ticket is held), or for a ticket of another table
  // object or of this one before its restore() (keyed/ticket.hpp: a
  // restored key's debt already holds what its tickets took, and they name
  // generations a restore cannot tell apart).
  // A `now` that lags by d can give back up to ceil(d / T) units early (token_bucket's
  // skew bound). Returns the units given back.
  std::uint64_t refund(std::uint64_t id, keyed_ticket& t, std::uint64_t n, nanoseconds now) noexcept {
    return refund_hash(hash_(id), t, n, now);
  }
  std::uint64_t refund(std::string_view key, keyed_ticket& t, std::uint64_t n, nanoseconds now) noexcept {
    return refund_hash(hash_(key), t, n, now);
  }
  keyed_result try_acquire(std::string_view key, std::size_t cls, std::uint64_t n, nanoseconds now) noexcept {
    return acquire_hash(hash_(key), cls, n, now, nullptr);
  }
  keyed_result try_acquire(std::uint64_t id, std::size_t cls, std::uint64_t n = 1) noexcept {
    return try_acquire(id, cls, n, Clock::now());
  }
  keyed_result try_acquire(std::string_view key, std::size_t cls, std::uint64_t n = 1) noexcept {
    return try_acquire(key, cls, n, Clock::now());
  }

  // Forgets the key's entry (its bucket is full again: an explicit reset).
  // Admissions in progress on it finish on the old bucket (or, when the
  // entry is claimed again meanwhile, look again). Returns whether the key
  // had an entry.
  bool erase(std::uint64_t id) noexcept { return erase_hash(hash_(id)); }
  bool erase(std::string_view key) noexcept { return erase_hash(hash_(key)); }

  // Whether the key holds an entry (peek; may be stale).
  bool contains(std::uint64_t id) const noexcept { return peek_tat(hash_(id), nullptr, nullptr); }
  bool contains(std::string_view key) const noexcept { return peek_tat(hash_(key), nullptr, nullptr); }

  // Whole units the key could take at `now`: its entry's, or a fresh
  // bucket of class `cls` when it has none (peek; consumes nothing).
  std::uint64_t available(std::uint64_t id, std::size_t cls, nanoseconds now) const noexcept {
    return available_hash(hash_(id), cls, now);
  }
  std::uint64_t available(std::string_view key, std::size_t cls, nanoseconds now) const noexcept {
    return available_hash(hash_(key), cls, now);
  }

  // The table as bytes, and back (keyed/snapshot.hpp states the format, the
  // time rule and every refusal). snapshot() runs beside any traffic;
  // restore() only into a table that has taken none, before sharing it.
  std::string snapshot(nanoseconds now, nanoseconds wall) const;
  account_restore_errc restore(std::string_view bytes, nanoseconds now, nanoseconds wall);

  std::size_t capacity() const noexcept { return capacity_; }
  std::size_t window() const noexcept { return window_; }
  std::size_t classes() const noexcept { return params_.size(); }
  // How long after the origin class `cls` counts exactly (see Time); zero
  // for a bad class index.
  nanoseconds horizon(std::size_t cls) const noexcept {
    return cls < params_.size() ? nanoseconds(detail::gcra_horizon_ns(params_[cls])) : nanoseconds(0);
  }
  static constexpr std::size_t bytes_per_entry() noexcept { return S::bytes_per_entry(); }

 private:
  // The entry protocol (keyed/claim.hpp, which lays out the control word);
  // a bucket's state is its TAT, in ticks of its class after the origin.
  struct bucket_state {
    detail::atomic<std::uint64_t> tat{0};
  };
  using S = detail::keyed_slots<bucket_state>;
  using entry = typename S::entry;
  static constexpr std::uint64_t st_live = S::st_live, st_free = S::st_free, pin_one = S::pin_one,
                                 pin_mask = S::pin_mask, ver_one = S::ver_one, ver_mask = S::ver_mask;
  static constexpr unsigned cls_shift = S::cls_shift;
  static constexpr std::uint64_t state_of(std::uint64_t c) noexcept { return S::state_of(c); }
  static constexpr std::size_t class_of(std::uint64_t c) noexcept { return S::class_of(c); }
  static void unpin(entry& e) noexcept { S::unpin(e); }
  std::size_t home_of(std::uint64_t h) const noexcept { return slots_.home_of(h); }
  std::size_t at(std::size_t home, std::size_t i) const noexcept { return slots_.at(home, i); }

  errc init(std::size_t capacity, const std::vector<key_class>& classes, nanoseconds origin, std::size_t window) {
    if (capacity == 0 || window == 0 || classes.empty()) return errc::zero_count;
    if (classes.size() > max_classes || capacity > (std::size_t{1} << 40)) return errc::too_large;
    std::vector<detail::gcra_params> ps;
    ps.reserve(classes.size());
    for (const key_class& k : classes) {
      detail::gcra_params p{};
      const errc e = detail::make_gcra_params(k.r, k.burst, p);
      if (e != errc::ok) return e;
      ps.push_back(p);
    }
    slots_.init(capacity, window);
    params_ = std::move(ps);
    capacity_ = capacity;
    window_ = slots_.window();
    origin_ = origin.count();
    id_ = detail::next_keyed_table_id();
    return errc::ok;
  }

  // Whether `now` is past class p's horizon: its ticks (saturated) beyond
  // max_ticks - tau, which is since > floor((max_ticks - tau) / s) in ns,
  // without the division on the hot path.
  static bool past_t(std::uint64_t now_t, const detail::gcra_params& p) noexcept { return now_t > L::max_ticks - p.tau; }
  bool past(nanoseconds now, const detail::gcra_params& p) const noexcept { return past_t(ticks(now, p), p); }
  // A refusal at `now` with wait w (counted from max(now, origin)): `never`
  // when that plus w is past p's horizon. A `now` before the origin is
  // decided as the origin, so its wait from `now` is longer by the difference.
  decision wait_or_never(nanoseconds now, nanoseconds w, const detail::gcra_params& p) const noexcept {
    const std::uint64_t at = detail::sat_add(detail::positive_difference(now.count(), origin_),
                                             static_cast<std::uint64_t>(w.count()));
    if (at > static_cast<std::uint64_t>(detail::gcra_horizon_ns(p))) return decision::refuse(reason::exceeds_capacity);
    const std::uint64_t from_now = detail::sat_add(static_cast<std::uint64_t>(w.count()),
                                                   detail::positive_difference(origin_, now.count()));
    const std::uint64_t top = static_cast<std::uint64_t>(INT64_MAX);
    return decision::wait(nanoseconds(static_cast<std::int64_t>(from_now > top ? top : from_now)));
  }

  std::uint64_t ticks(nanoseconds now, const detail::gcra_params& p) const noexcept {
    const std::uint64_t t = detail::sat_mul(detail::positive_difference(now.count(), origin_), p.scale);
    return t > L::max_ticks ? L::max_ticks : t;
  }
  static nanoseconds ticks_to_ns(std::uint64_t t, const detail::gcra_params& p) noexcept {
    const std::uint64_t d = detail::ceil_div(t, p.scale);
    const std::uint64_t top = static_cast<std::uint64_t>(INT64_MAX);
    return nanoseconds(static_cast<std::int64_t>(d > top ? top : d));
  }

  keyed_result acquire_hash(std::uint64_t h, std::size_t cls, std::uint64_t n, nanoseconds now,
                            keyed_ticket* t) noexcept {
    if (t != nullptr) *t = keyed_ticket{};
    if (cls >= params_.size()) return {decision::refuse(reason::misconfigured), keyed_status::bad_class};
    if (n == 0) return {decision::admit(), keyed_status::admitted};
    for (;;) {
      std::size_t slot = 0, slot_cls = cls;
      std::uint64_t ctl = 0, gen = 0;
      if (slots_.find(h, slot, ctl, gen)) {
        // The key's live entry: admitted without a pin (see the contract).
        entry& e = slots_[slot];
        slot_cls = class_of(ctl);
        std::uint64_t end = 0;
        live_how how = live_how::done;
        decision d = admit_live(e, gen, params_[slot_cls], n, now, end, false, how);
        if (how == live_how::moved) continue;  // the entry went to another claim: look again
        if (how == live_how::sealed) {
          // An evictor sealed the bucket: pin the entry, which fails its
          // claim and keeps further claims off it, and admit pinned.
          if (!slots_.pin(h, slot, slot_cls)) continue;  // claimed already: the key was full
          entry& pe = slots_[slot];
          gen = pe.claim.load(std::memory_order_relaxed);  // relaxed: stable while pinned
          d = admit_live(pe, gen, params_[slot_cls], n, now, end, true, how);
          unpin(pe);
          if (how == live_how::moved) continue;
        }
        if (t != nullptr && d.admitted()) *t = keyed_ticket{h, end, n, slot_cls, slot, gen, id_};
        return {d, d.admitted() ? keyed_status::admitted : keyed_status::limited};
      }
      {
        // A new key asking for more than its class can ever hold: refused
        // without taking an entry.
        // So is one past its class's horizon.
        if (n > params_[cls].burst || past(now, params_[cls])) {
          return {decision::refuse(reason::exceeds_capacity), keyed_status::limited};
        }
        std::uint64_t soonest = ~std::uint64_t{0};
        bool known = false;
        const detail::claim_outcome o = claim(h, cls, now, slot, soonest, known);
        if (o == detail::claim_outcome::retry) continue;
        if (o == detail::claim_outcome::full) {
          const std::uint64_t top = static_cast<std::uint64_t>(INT64_MAX);
          const nanoseconds wait(static_cast<std::int64_t>(soonest > top ? top : soonest));
          return {known ? wait_or_never(now, wait, params_[cls]) : decision::wait(nanoseconds(0), reason::busy),
                  keyed_status::table_full};
        }
      }
      // Our claim, published pinned for this call: admitted as on any live
      // entry (a stale evictor may have sealed the new bucket: see the
      // contract), then unpinned.
      entry& e = slots_[slot];
      // relaxed: we wrote it.
      const std::uint64_t mine = e.claim.load(std::memory_order_relaxed);
      std::uint64_t end = 0;
      live_how how = live_how::done;
      const decision d = admit_live(e, mine, params_[slot_cls], n, now, end, true, how);
      unpin(e);
      if (how == live_how::moved) continue;  // erased and claimed again while we admitted: look again
      if (t != nullptr && d.admitted()) *t = keyed_ticket{h, end, n, slot_cls, slot, mine, id_};
      return {d, d.admitted() ? keyed_status::admitted : keyed_status::limited};
    }
  }

  // The seal (see the contract): the TAT word's top bit, which no TAT
  // reaches (a TAT stays at or below max_ticks + tau < 2^63), the version
  // of the control word its evictor read (40 bits: whether its claim may
  // still land) and the low 22 bits of a ticket the evictor drew from the
  // table's count of seals, so that two evictors that read one control word
  // make different seals (equal seals let one's undo land on the other's,
  // found by an independent check; they would need a sealer stalled across
  // 2^22 seals of the table).
  static constexpr unsigned ticket_bits = 22;
  static constexpr std::uint64_t sealed_bit = std::uint64_t{1} << 63;
  static constexpr bool sealed(std::uint64_t w) noexcept { return (w & sealed_bit) != 0; }
  static constexpr std::uint64_t seal_of(std::uint64_t ctl, std::uint64_t ticket) noexcept {
    return sealed_bit | ((ctl >> S::ver_shift) << ticket_bits) | (ticket & ((std::uint64_t{1} << ticket_bits) - 1));
  }
  // Whether seal w names control word ctl's version: its claim may land.
  static constexpr bool pending(std::uint64_t w, std::uint64_t ctl) noexcept {
    return ((w & ~sealed_bit) >> ticket_bits) == (ctl >> S::ver_shift);
  }
  // The TAT a claim starts a bucket of class p with: the latest time any
  // claim has seen (keyed/claim.hpp). It is also what a sealed bucket
  // stands for: full at its evictor's `now`, which that evictor's
  // note_time() put into the latest time before it sealed.
  std::uint64_t start_ticks(const detail::gcra_params& p) const noexcept {
    const std::uint64_t b = detail::sat_mul(slots_.start_time(), p.scale);
    return b > L::max_ticks ? L::max_ticks : b;
  }

  // An admission on an entry of the key (keyed/bucket_ops.hpp), pinned or
  // not; how it ended when it did not decide.
  enum class live_how { done, moved, sealed };
  decision admit_live(entry& e, std::uint64_t gen, const detail::gcra_params& p, std::uint64_t n, nanoseconds now,
                      std::uint64_t& end, bool pinned, live_how& how) noexcept;

  static constexpr std::uint64_t snapshot_version = 2;  // 2: SipHash-1-3 keys (1: SipHash-2-4)
  std::uint64_t fingerprint() const noexcept;  // keyed/snapshot.hpp

  // Defined in keyed/bucket_ops.hpp: the bucket's side of the protocol.
  std::uint64_t refund_hash(std::uint64_t h, keyed_ticket& t, std::uint64_t n, nanoseconds now) noexcept;
  std::uint64_t start_time() const noexcept { return slots_.start_time(); }
  detail::claim_outcome claim(std::uint64_t h, std::size_t cls, nanoseconds now, std::size_t& slot,
                              std::uint64_t& soonest, bool& known) noexcept;
  bool erase_hash(std::uint64_t h) noexcept { return slots_.erase(h); }
  bool peek_tat(std::uint64_t h, std::uint64_t* tat, std::size_t* cls) const noexcept;
  std::uint64_t available_hash(std::uint64_t h, std::size_t cls, nanoseconds now) const noexcept;

  Hash hash_;
  S slots_;
  std::vector<detail::gcra_params> params_;
  std::size_t capacity_ = 0;
  std::size_t window_ = 0;
  std::int64_t origin_ = 0;
  std::uint64_t id_ = 0;  // this table's identity (keyed/ticket.hpp): set by init() and restore() only
  // Whether an admission has landed since construction or restore(), which
  // then refuses (in_use): admissions do not pin, so the versions that tell
  // restore() of claims, pins and erases do not show them. Written once
  // (false to true) per restore, then only read: its line stays shared.
  detail::atomic<bool> admitted_{false};
  // Seals drawn (claims that evict only): tickets that tell seals apart.
  detail::atomic<std::uint64_t> seals_{0};
};

TOLLGATE_END_NAMESPACE

#include <tollgate/keyed/bucket_ops.hpp>
#include <tollgate/keyed/snapshot.hpp>

#endif  // TOLLGATE_KEYED_BUCKETS_HPP
