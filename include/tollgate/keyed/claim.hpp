// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// keyed/claim.hpp: the entry protocol of the keyed tables (keyed_buckets,
// keyed_permits, keyed_budgets, keyed_windows), generic over what an entry
// holds: pinning a key's live entry, claiming a free or reusable entry for
// a new key, erasing, and the peek. The tables' headers state their
// contracts and bounds; each step below says which atomic operation it
// pairs with.
//
// An entry is a control word, the key's 64-bit hash, a claim generation
// and the table's State (atomics only, written by the table while the
// entry is pinned or owned by its claimer), alone on its 64-byte line: an
// admission writes its entry's line twice or more, and two threads' keys
// sharing a line (or a probe reading another key's control word) cost a
// line transfer per call (measured: up to 3x the time of one thread's
// call at two threads, bench/bench_limiters.cpp's keyed diagnostics).
// Beside the entries, a hint per entry repeats its latest claim's hash on
// lines that only claims write, so a probe passes other keys' entries
// without reading their control words. A table decides when a live,
// unpinned entry may be reused (its state equals a fresh one at the
// claimer's `now`) through the callable it hands to claim(); a pin held
// beyond one call (a permit, a budget reservation) keeps its entry out of
// every claim and, once erased, keeps it erasing until the pin goes.
//
// The control word: state (3 bits), class (6), pins (15), version (40).
// A claim goes empty/free/reusable-live -> claiming (owned: hash written)
// -> hashed (its hash is final for this version; another claim of the key
// may now withdraw it) -> live; or hashed -> withdrawn (by another) -> free
// (by the owner only, so that its state stores cannot land on a new
// occupant), or hashed -> free (by the owner, on finding the key live).
// erase(): live -> free, or live -> erasing while pins are held (no new
// pins), and the last unpin frees it. Every pin, claim and erase advances
// the version; construction leaves it 0.
#ifndef TOLLGATE_KEYED_CLAIM_HPP
#define TOLLGATE_KEYED_CLAIM_HPP

#include <tollgate/config.hpp>
#include <tollgate/detail/arith.hpp>
#include <tollgate/detail/atomic.hpp>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <thread>

TOLLGATE_BEGIN_NAMESPACE
namespace detail {

enum class claim_outcome { claimed, retry, full };

template <class State>
class keyed_slots {
 public:
  static constexpr std::uint64_t st_empty = 0, st_claiming = 1, st_hashed = 2, st_live = 3, st_free = 4,
                                 st_withdrawn = 5, st_erasing = 6;
  static constexpr std::uint64_t st_mask = 7;
  static constexpr unsigned cls_shift = 3, pin_shift = 9, ver_shift = 24;
  static constexpr std::uint64_t cls_mask = std::uint64_t{63} << cls_shift;
  static constexpr std::uint64_t pin_one = std::uint64_t{1} << pin_shift;
  static constexpr std::uint64_t pin_mask = std::uint64_t{0x7fff} << pin_shift;
  static constexpr std::uint64_t ver_one = std::uint64_t{1} << ver_shift;
  static constexpr std::uint64_t ver_mask = ~std::uint64_t{0} << ver_shift;
  // Pins one entry may hold beyond a call (permits, reservations): the rest
  // of the 32767 are for calls in progress, so pin() never waits on held
  // ones unless 16384 calls are in progress on one entry at once.
  static constexpr std::uint64_t max_held = 16383;

  static constexpr std::uint64_t state_of(std::uint64_t c) noexcept { return c & st_mask; }
  static constexpr std::size_t class_of(std::uint64_t c) noexcept {
    return static_cast<std::size_t>((c & cls_mask) >> cls_shift);
  }
  static constexpr std::uint64_t pins_of(std::uint64_t c) noexcept { return (c & pin_mask) >> pin_shift; }

  // `claim` counts the entry's claims (64 bits: a ticket would have to be
  // held across 2^64 claims of one entry to name a later incarnation). Only
  // the owner of a claiming entry writes it; tickets carry it so a refund
  // lands only in the incarnation that was charged.
  struct alignas(64) entry {
    atomic<std::uint64_t> ctl{0};
    atomic<std::uint64_t> hash{0};
    atomic<std::uint64_t> claim{0};
    State s;
  };

  void init(std::size_t capacity, std::size_t window) {
    entries_.reset(new entry[capacity]);
    hints_.reset(new atomic<std::uint64_t>[capacity]);
    for (std::size_t s = 0; s < capacity; ++s) set_hint(s, 0);
    capacity_ = capacity;
    window_ = window < capacity ? window : capacity;
  }
  std::size_t capacity() const noexcept { return capacity_; }
  std::size_t window() const noexcept { return window_; }
  entry& operator[](std::size_t s) const noexcept { return entries_[s]; }
  // Bytes an entry takes: its line and its hint.
  static constexpr std::size_t bytes_per_entry() noexcept { return sizeof(entry) + sizeof(atomic<std::uint64_t>); }
  // Construction and restore() only, before sharing: the hint of an entry
  // restore() writes (or empties). relaxed: the hand-off publishes it.
  void set_hint(std::size_t s, std::uint64_t h) noexcept { hints_[s].store(h, std::memory_order_relaxed); }

  std::size_t home_of(std::uint64_t h) const noexcept {
    return static_cast<std::size_t>((static_cast<u128>(h) * capacity_) >> 64);
  }
  std::size_t at(std::size_t home, std::size_t i) const noexcept {
    const std::size_t s = home + i;
    return s >= capacity_ ? s - capacity_ : s;
  }

  // Finds the key's live entry and pins it (one more pin, version
  // advanced). The entry's hash is read between a load of the control word
  // and a CAS that expects it unchanged: a new occupant writes its hash only
  // after a claim CAS that advances the version, and our CAS (release)
  // precedes that claim CAS (acquire) in the word's order, so the hash we
  // compared cannot be the new occupant's. `pins` is the pin count before
  // ours.
  //
  // First the hint (see may_hold): an entry whose hint names another key is
  // passed without touching its line.
  bool pin(std::uint64_t h, std::size_t& slot, std::size_t& cls, std::uint64_t* pins = nullptr) noexcept {
    const std::size_t home = home_of(h);
    for (std::size_t i = 0; i < window_; ++i) {
      const std::size_t s = at(home, i);
      if (!may_hold(s, h)) continue;
      entry& e = entries_[s];
      // acquire: pairs with the publish CAS (release) of the occupant, so
      // its hash and initial state are visible.
      std::uint64_t c = e.ctl.load(std::memory_order_acquire);
      for (;;) {
        const std::uint64_t st = state_of(c);
        // Slots never return to empty, and a claim takes an entry at or
        // before the first empty one of its window, so no live entry of this
        // key lies past an empty one. (A stale read only sends us to
        // claim(), which rechecks.)
        if (st == st_empty) return false;
        // relaxed: validated by the CAS below, as explained above.
        if (st != st_live || e.hash.load(std::memory_order_relaxed) != h) break;
        if ((c & pin_mask) == pin_mask) {  // 32767 pins: wait for one of the calls in progress
          std::this_thread::yield();
          c = e.ctl.load(std::memory_order_acquire);  // acquire: as above
          continue;
        }
        // acq_rel: release orders our hash read before any later claim CAS
        // (acquire) on this word; acquire pairs with the publish CAS so the
        // state's value is visible. acquire on failure: as the load.
        if (e.ctl.compare_exchange_weak(c, c + pin_one + ver_one, std::memory_order_acq_rel,
                                        std::memory_order_acquire)) {
          slot = s;
          cls = class_of(c);
          if (pins != nullptr) *pins = pins_of(c);
          return true;
        }
      }
    }
    return false;
  }

  // Finds the key's live entry without pinning it (keyed_buckets'
  // admissions): its slot, control word and claim generation, read as one
  // snapshot. The hash and the generation are read between two loads of the
  // control word that must agree: a new occupant writes them (releases)
  // only after a claim CAS that changes the word, and our loads of them
  // (acquires) that saw its writes would make the second load see that
  // CAS or later. Versions do not repeat (2^40), so equal words mean no
  // claim came between. What the caller then does with the entry it
  // checks itself (keyed_buckets.hpp: the seal and the generation).
  bool find(std::uint64_t h, std::size_t& slot, std::uint64_t& ctl, std::uint64_t& gen) const noexcept {
    const std::size_t home = home_of(h);
    for (std::size_t i = 0; i < window_; ++i) {
      const std::size_t s = at(home, i);
      if (!may_hold(s, h)) continue;
      entry& e = entries_[s];
      // acquire: pairs with the publish CAS of the occupant, as in pin().
      std::uint64_t c = e.ctl.load(std::memory_order_acquire);
      for (;;) {
        const std::uint64_t st = state_of(c);
        if (st == st_empty) return false;  // as in pin()
        // acquire (both): pair with the claimer's release stores, see above.
        if (st != st_live || e.hash.load(std::memory_order_acquire) != h) break;
        const std::uint64_t g = e.claim.load(std::memory_order_acquire);
        // acquire: ordered after the loads above; pairs as the first load.
        const std::uint64_t again = e.ctl.load(std::memory_order_acquire);
        if (again != c) {  // a pin, claim or erase came between: look again
          c = again;
          continue;
        }
        slot = s;
        ctl = c;
        gen = g;
        return true;
      }
    }
    return false;
  }

  static void unpin(entry& e) noexcept {
    // release: pairs with an evictor's acquire load of ctl (claim): our
    // state writes happen before its freshness read. An RMW, so it keeps
    // the release sequence of the publish and of other unpins.
    const std::uint64_t was = e.ctl.fetch_sub(pin_one, std::memory_order_release);
    if (state_of(was) == st_erasing && pins_of(was) == 1) {
      // The last pin on an erased entry frees it; nobody else can change an
      // erasing entry with no pins. seq_cst exchange (an RMW, a release):
      // our state writes come before the next claim's CAS.
      (void)e.ctl.exchange(((was - pin_one) & ver_mask) | st_free, std::memory_order_seq_cst);
    }
  }

  // The latest time (ns after the table's origin) seen by any claim: the
  // start of claimed entries, so that a key cannot get units twice by
  // coming back earlier.
  void note_time(std::uint64_t t) noexcept {
    // relaxed: the value travels to a later claimer of a key we evict
    // through our claim CAS (sequenced after this) and that claimer's scan
    // load of the same control word (seq_cst, an acquire; every later
    // change of the word is an RMW, so the release sequence holds), which
    // precedes its read in start_time().
    std::uint64_t w = latest_.load(std::memory_order_relaxed);
    // relaxed / relaxed: a max, only ever raised.
    while (w < t && !latest_.compare_exchange_weak(w, t, std::memory_order_relaxed, std::memory_order_relaxed)) {
    }
  }
  std::uint64_t start_time() const noexcept {
    return latest_.load(std::memory_order_relaxed);  // relaxed: see note_time()
  }
  // restore() only, before sharing. relaxed: as in note_time().
  void set_start_time(std::uint64_t t) noexcept { latest_.store(t, std::memory_order_relaxed); }

  // Claims an entry of the window for the key, published pinned; or says
  // to retry (the key appeared, or our claim lost a same-key race) or that
  // the window is full of entries that cannot be reused.
  // `reusable(entry&, cls)` is asked about live entries with no pins
  // before the first unused one, until one says yes (the table's freshness
  // rule; it may note when the entry will be reusable); `start(entry&)`
  // initialises the state of the claimed entry, after the scan and before
  // the publish, from start_time(). `since` is the claimer's `now` (ns after the origin).
  //
  // Two claimers of one key must not both publish. Each, owning its entry,
  // writes state and hash, then marks it hashed (seq_cst CAS), then scans
  // the window (seq_cst loads) for the key: in the single total order of
  // those steps the later marker's scan sees the earlier one's mark (or its
  // live entry). Seeing a live entry of the key, a claimer withdraws its
  // own; seeing another hashed claim of the key, it withdraws that one (a
  // CAS on its control word: its owner's publish CAS then fails, and it
  // retries and finds ours). So two claims never both publish, and no
  // claimer waits for another: a stalled claim is withdrawn by the next
  // claimer of its key. (Two claimers that withdraw each other both retry:
  // claims of one new key are obstruction-free, not lock-free.)
  template <class Reusable, class Start>
  claim_outcome claim(std::uint64_t h, std::size_t cls, std::uint64_t since, std::size_t& slot, Reusable&& reusable,
                      Start&& start) noexcept {
    auto yes = [](entry&, std::uint64_t) { return true; };
    auto none = [](entry&, std::uint64_t) {};
    return claim(h, cls, since, slot, reusable, start, yes, none);
  }
  // The same, and a table whose admissions do not pin (keyed_buckets) seizes
  // the live entry it is about to reclaim: `seize(entry&, ctl)` after
  // note_time and before the claim CAS (false: retry), `unseize(entry&,
  // ctl)` when that CAS then fails. keyed_buckets.hpp states the protocol.
  template <class Reusable, class Start, class Seize, class Unseize>
  claim_outcome claim(std::uint64_t h, std::size_t cls, std::uint64_t since, std::size_t& slot, Reusable&& reusable,
                      Start&& start, Seize&& seize, Unseize&& unseize) noexcept {
    const std::size_t home = home_of(h);
    constexpr std::size_t none = ~std::size_t{0};
    // An unused entry (empty or free) is taken before a reusable live one:
    // evicting a key that is fresh again loses nothing, but it costs that
    // key a claim on its next call, and a table with room would otherwise
    // keep trading entries between keys. The first unused entry lies at or
    // before the first empty one, so the rule of pin() still holds.
    std::size_t pick = none, pick_i = 0, reuse = none, reuse_i = 0;
    std::uint64_t pick_c = 0, reuse_c = 0;
    for (std::size_t i = 0; i < window_; ++i) {
      const std::size_t s = at(home, i);
      entry& e = entries_[s];
      // seq_cst: part of the claim protocol above; as an acquire it pairs
      // with the publish CAS so a live entry's hash is visible.
      const std::uint64_t c = e.ctl.load(std::memory_order_seq_cst);
      const std::uint64_t st = state_of(c);
      // seq_cst: as the load above.
      if (st == st_live && e.hash.load(std::memory_order_seq_cst) == h) return claim_outcome::retry;  // pin it
      if (pick != none) continue;
      if (st == st_empty || st == st_free) {
        pick = s, pick_i = i, pick_c = c;
        continue;
      }
      // A live entry with no pins: the unpins (releases, RMWs all, so their
      // release sequences reach c) precede c, so `reusable` reads (acquire)
      // every finished call's state; any pin after c advances the version
      // and fails our claim CAS.
      if (reuse == none && st == st_live && pins_of(c) == 0 && reusable(e, class_of(c))) {
        reuse = s, reuse_i = i, reuse_c = c;
      }
    }
    if (pick == none) pick = reuse, pick_i = reuse_i, pick_c = reuse_c;
    if (pick == none) return claim_outcome::full;
    // Before our claim CAS, so that an eviction by us carries our time.
    note_time(since);
    entry& e = entries_[pick];
    const bool live = state_of(pick_c) == st_live;
    if (live && !seize(e, pick_c)) return claim_outcome::retry;
    const std::uint64_t ver = (pick_c & ver_mask) + ver_one;
    std::uint64_t expect = pick_c;
    // seq_cst: the claim; as an acquire it pairs with the pins' release
    // (their hash reads come before our hash store) and the unpins' (as
    // for the state above).
    if (!e.ctl.compare_exchange_strong(expect, ver | st_claiming, std::memory_order_seq_cst)) {
      if (live) unseize(e, pick_c);
      return claim_outcome::retry;
    }
    // The entry is ours until we free it: others may only move it from
    // hashed to withdrawn, and nobody else writes its hash or state.
    // release: published by the hashed CAS (seq_cst, a release), which the
    // scans acquire; a release of its own for find(), whose acquire load of
    // it must order its second load of the control word after our claim.
    e.hash.store(h, std::memory_order_release);
    // relaxed: see may_hold; the publish CAS below (a release) carries it.
    hints_[pick].store(h, std::memory_order_relaxed);
    // A new incarnation: tickets of earlier ones give nothing back here.
    // Only an owner writes it, and each owner's claim CAS (acquire) follows
    // the previous owner's publish or free (releases, RMWs all) in the
    // word's order (the load: relaxed); pinners read it after the publish
    // CAS below.
    // release: as the hash's, for find().
    e.claim.store(e.claim.load(std::memory_order_relaxed) + 1, std::memory_order_release);
    std::uint64_t mine = ver | st_claiming;
    // seq_cst: the mark of the protocol above. Cannot fail: only we write
    // a claiming entry.
    (void)e.ctl.compare_exchange_strong(mine, ver | st_hashed, std::memory_order_seq_cst);
    for (std::size_t i = 0; i < window_; ++i) {
      if (i == pick_i) continue;
      entry& o = entries_[at(home, i)];
      std::uint64_t c = o.ctl.load(std::memory_order_seq_cst);  // seq_cst: the scan
      for (;;) {
        const std::uint64_t st = state_of(c);
        if (st != st_live && st != st_hashed) break;
        // seq_cst: the scan. A hashed or live state fixes the hash for its
        // version, and the CAS below checks the version.
        if (o.hash.load(std::memory_order_seq_cst) != h) break;
        if (st == st_live) {
          // A live entry of the key: withdraw ours. seq_cst exchange (an
          // RMW, so release sequences stay whole): from hashed, or from
          // withdrawn if another claim withdrew us.
          (void)e.ctl.exchange(ver | st_free, std::memory_order_seq_cst);
          return claim_outcome::retry;
        }
        // Another claim of the key: withdraw it (seq_cst CAS; on failure
        // it published or was withdrawn: look again at what it is now).
        if (o.ctl.compare_exchange_strong(c, (c & ver_mask) | st_withdrawn, std::memory_order_seq_cst)) break;
      }
    }
    // The state starts from the latest time any claim has seen, read after
    // the scan: every earlier entry of this key was either seen by the scan
    // (live: we withdrew; hashed: we withdrew it, it never admits) or was
    // already reclaimed, and the scan's load of its control word came after
    // that evictor's claim CAS, so after its note_time(). Its state was
    // fresh at the evictor's `now`: starting here loses none of what it owed.
    start(e);
    // seq_cst (a release): publishes state and hash; pinned for our own
    // call. Fails if another claim of the key withdrew ours.
    std::uint64_t m = ver | st_hashed;
    if (!e.ctl.compare_exchange_strong(m, ver | st_live | (static_cast<std::uint64_t>(cls) << cls_shift) | pin_one,
                                       std::memory_order_seq_cst)) {
      // Withdrawn: only we free it (seq_cst exchange, as above).
      (void)e.ctl.exchange(ver | st_free, std::memory_order_seq_cst);
      return claim_outcome::retry;
    }
    slot = pick;
    return claim_outcome::claimed;
  }

  // Takes the key out: free now, or erasing until its pins go (the last
  // unpin frees it).
  bool erase(std::uint64_t h) noexcept {
    if (capacity_ == 0) return false;
    const std::size_t home = home_of(h);
    for (std::size_t i = 0; i < window_; ++i) {
      if (!may_hold(at(home, i), h)) continue;  // as in pin()
      entry& e = entries_[at(home, i)];
      std::uint64_t c = e.ctl.load(std::memory_order_acquire);  // acquire: as in pin()
      for (;;) {
        if (state_of(c) == st_empty) return false;
        // relaxed: validated by the CAS, as in pin()
        if (state_of(c) != st_live || e.hash.load(std::memory_order_relaxed) != h) break;
        // acq_rel / acquire: as the pin CAS; the version advances so stale
        // pinners fail.
        const std::uint64_t next =
            ((c & ver_mask) + ver_one) | (pins_of(c) == 0 ? st_free : (c & pin_mask) | st_erasing);
        if (e.ctl.compare_exchange_weak(c, next, std::memory_order_acq_rel, std::memory_order_acquire)) return true;
      }
    }
    return false;
  }

  // The key's live entry and its class, without pinning (a peek: a racing
  // reclaim can only show a newer occupant); nullptr when it has none.
  const entry* peek(std::uint64_t h, std::size_t& cls) const noexcept {
    if (capacity_ == 0) return nullptr;
    const std::size_t home = home_of(h);
    for (std::size_t i = 0; i < window_; ++i) {
      if (!may_hold(at(home, i), h)) continue;  // as in pin()
      const entry& e = entries_[at(home, i)];
      const std::uint64_t c = e.ctl.load(std::memory_order_acquire);  // acquire: as in pin()
      if (state_of(c) == st_empty) return nullptr;
      // relaxed: a peek.
      if (state_of(c) != st_live || e.hash.load(std::memory_order_relaxed) != h) continue;
      cls = class_of(c);
      return &e;
    }
    return nullptr;
  }

 private:
  // Whether entry s may be key h's live entry, by its hint: not when the
  // hint names another key (zero, the hint of an entry never claimed or
  // restored empty, says nothing; nor does a key whose hash is zero). Only
  // the owner of a claiming entry writes its hint, with its hash, before
  // its publish. So a hint that names another key is the entry's before a
  // later claim: the entry is not empty (entries never return to empty, so
  // passing it keeps pin()'s rule), and if that later claim was the key's,
  // the read is stale, like a stale control word: the caller goes to
  // claim(), whose scan (seq_cst loads, acquires) reads the publish or
  // later and retries, and the retry reads this hint or a later one
  // (coherence, after the publish it synchronised with). A probe therefore
  // never misses a live entry its claim() scan has seen, and never loops.
  bool may_hold(std::size_t s, std::uint64_t h) const noexcept {
    const std::uint64_t hint = hints_[s].load(std::memory_order_relaxed);  // relaxed: a filter, as argued
    return hint == h || hint == 0;
  }

  std::unique_ptr<entry[]> entries_;
  // One word per entry, 8 to a line, written by claims only (see may_hold).
  std::unique_ptr<atomic<std::uint64_t>[]> hints_;
  std::size_t capacity_ = 0;
  std::size_t window_ = 0;
  atomic<std::uint64_t> latest_{0};
};

}  // namespace detail
TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_KEYED_CLAIM_HPP
