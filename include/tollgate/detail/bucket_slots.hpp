// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// detail/bucket_slots.hpp: the token bucket's four configuration slots and
// the writer claim that decides who fills them. Nothing here is public API;
// token_bucket.hpp states the guarantees.
//
// A slot holds one installation of a configuration: its generation (the
// claim number of the writer that filled it: unique, 64 bits, never reused),
// the GCRA parameters in ticks, its epoch, its configuration number (one
// more at every set_rate, set_burst and reset, the same across an epoch
// move: tickets carry it), and the rate as given. The bucket's state word
// names the slot in force in its top two bits. A writer fills the next slot
// (never the one in force) and then installs its tag with one release CAS on
// the state word; that CAS is what publishes the slot.
//
// Reading a slot. Most readers take the state word (acquire), then the
// slot its tag names: its contents are then at least the installation in
// force at the word. An acquirer does it the other way round: it takes the
// generation, then the fields (`hot`), then the word, and uses them only if
// the word carries that slot's tag and the generation, read again after the
// word, is unchanged: then they belong to the installation in force at the
// word. Which slot to read first is a guess, `hint`, that writers update
// after they install. The fields may be torn by a writer refilling the slot;
// the generation, checked again after the reader's CAS, tells.
//
// Writers without a lock (bucket_writer). A writer takes a claim number and
// puts it in the owner word by CAS. A holder that makes no visible progress
// while a waiter looks `takeover_polls` times is taken over: the waiter CASes
// its own number in, so a writer killed at any instruction delays the next
// one by those looks, never forever. A holder that was only slow (not dead)
// can do no harm after that:
//  - every field is one or two words of (32-bit value or half, low 32 bits
//    of the claim number), written by CAS from a value read while the owner word still
//    named the writer; the taker rewrites every field, so each CAS of the
//    old holder expects a word that is gone and fails (until 2^32 further
//    claims bring its tag back: the one wrap that remains);
//  - the generation is written by CAS in the same way, last;
//  - the taker changes the state word (one tick more owed) before it reads
//    which slot is in force, so the old holder's installing CAS, which
//    expects the word it read, fails; if instead that CAS came first, the
//    taker sees the new slot in force and fills the next one;
//  - the owner word is released by CAS, which fails for a holder taken over.
// What remains: the old holder's install succeeds if the state word has come
// back to the exact value it read after the taker's tick (refunds or a
// saturated debt can bring it back). token_bucket.hpp states it.
//
// Every member is a standard-layout atomic of a lock-free type, so the slots
// may live in memory shared between processes.

#ifndef TOLLGATE_DETAIL_BUCKET_SLOTS_HPP
#define TOLLGATE_DETAIL_BUCKET_SLOTS_HPP

#include <tollgate/config.hpp>
#include <tollgate/detail/atomic.hpp>
#include <tollgate/detail/gcra_params.hpp>
#include <tollgate/rate.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <thread>

// How many looks at an unchanged owner word a writer waits before it takes
// over (each look after a yield). The interleaving checker counts steps, so
// it uses a few.
#ifndef TOLLGATE_BUCKET_TAKEOVER_POLLS
#if defined(TOLLGATE_INTERLEAVING_CHECKER)
#define TOLLGATE_BUCKET_TAKEOVER_POLLS 3
#else
#define TOLLGATE_BUCKET_TAKEOVER_POLLS 4096
#endif
#endif

TOLLGATE_BEGIN_NAMESPACE
namespace detail {

// A 64-bit value written only by the claimant named in the owner word: two
// words, each (tag << 32 | half).
class owned_u64 {
 public:
  std::uint64_t load() const noexcept {
    std::uint32_t top = 0;
    return load(top) | (static_cast<std::uint64_t>(top) << 62);
  }
  // For a value below 2^62: also the two bits stored above it.
  std::uint64_t load(std::uint32_t& top) const noexcept {
    // acquire (both): pairs with the release CAS in write(), as the
    // generation's pairing in bucket_slots::hot() describes.
    const std::uint64_t h = hi_.load(std::memory_order_acquire) & 0xffffffffu;
    const std::uint64_t l = lo_.load(std::memory_order_acquire);
    top = static_cast<std::uint32_t>(h >> 30);
    return ((h & 0x3fffffffu) << 32) | (l & 0xffffffffu);
  }
  // Before the object is shared.
  void init(std::uint64_t v) noexcept {
    // relaxed: construction happens before any other thread sees the object.
    hi_.store(v >> 32, std::memory_order_relaxed);
    lo_.store(v & 0xffffffffu, std::memory_order_relaxed);
  }
  template <class Mine>
  bool write(std::uint64_t v, std::uint32_t tag, const Mine& mine) noexcept {
    return put(hi_, v >> 32, tag, mine) && put(lo_, v & 0xffffffffu, tag, mine);
  }
  // A value below 2^62 with two more bits above it.
  template <class Mine>
  bool write(std::uint64_t v, std::uint32_t top, std::uint32_t tag, const Mine& mine) noexcept {
    return write((v & ((std::uint64_t{1} << 62) - 1)) | (static_cast<std::uint64_t>(top & 3u) << 62), tag, mine);
  }

  template <class Mine>
  static bool put(atomic<std::uint64_t>& a, std::uint64_t half, std::uint32_t tag, const Mine& mine) noexcept {
    const std::uint64_t want = (static_cast<std::uint64_t>(tag) << 32) | half;
    // relaxed: only the expected value for the CAS; what makes it safe is
    // that it was read before the ownership check below.
    std::uint64_t cur = a.load(std::memory_order_relaxed);
    for (;;) {
      if (!mine()) return false;
      // release: pairs with the acquire loads in load(); relaxed on
      // failure: `cur` is only the next expected value (checked again).
      if (a.compare_exchange_weak(cur, want, std::memory_order_release, std::memory_order_relaxed)) return true;
    }
  }

 private:
  atomic<std::uint64_t> hi_{0}, lo_{0};
};

// A value of at most 32 bits written the same way: one word.
class owned_u32 {
 public:
  std::uint32_t load() const noexcept {
    // acquire: as in owned_u64::load().
    return static_cast<std::uint32_t>(w_.load(std::memory_order_acquire) & 0xffffffffu);
  }
  void init(std::uint32_t v) noexcept {
    // relaxed: construction happens before any other thread sees the object.
    w_.store(v, std::memory_order_relaxed);
  }
  template <class Mine>
  bool write(std::uint32_t v, std::uint32_t tag, const Mine& mine) noexcept {
    return owned_u64::put(w_, v, tag, mine);
  }

 private:
  atomic<std::uint64_t> w_{0};
};

class bucket_slots {
 public:
  static constexpr std::size_t count = 4;
  static constexpr std::size_t next(std::size_t i) noexcept { return (i + 1) & (count - 1); }

  // The fields the hot paths need, the generation first: not the
  // configuration number (config(), for tickets) nor `exact` (full()); tau
  // is computed (validated to fit when the slot was filled; a torn read
  // gives a wrong one, which the generation check catches as it catches any
  // torn field).
  gcra_params hot(std::size_t i) const noexcept {
    const slot& s = s_[i];
    gcra_params p{};
    // acquire: pairs with the release CAS of the generation in store(),
    // written after the fields, so the fields read below are at least that
    // installation's; each field pairs with its own release CAS, so a field
    // of a later installation makes the reader's CAS on the state word fail
    // or its generation check after it differ.
    p.gen = s.gen.load(std::memory_order_acquire);
    // The scale (at most 14) rides in the two spare bits above the interval
    // and the burst (each below 2^62: their product fits 62 bits): one load
    // less on the hot path.
    std::uint32_t lo2 = 0, hi2 = 0;
    p.interval = s.interval.load(lo2);
    p.burst = s.burst.load(hi2);
    p.scale = (hi2 << 2) | lo2;
    p.tau = p.burst * p.interval;  // may wrap only for a torn read: unsigned, caught as said
    p.epoch = static_cast<std::int64_t>(s.epoch.load());
    return p;
  }
  std::uint64_t config(std::size_t i) const noexcept { return s_[i].config.load(); }

  // Everything, off the hot paths.
  gcra_params full(std::size_t i) const noexcept {
    gcra_params p = hot(i);
    p.config = config(i);
    p.exact = s_[i].exact.load() != 0;
    return p;
  }

  // The slot's generation now, for the checks after a read or CAS of the
  // state word.
  std::uint64_t gen(std::size_t i) const noexcept {
    // relaxed: the caller's acquire load or acq_rel CAS of the state word
    // orders it after that, and so after the installation whose tag the
    // word carries.
    return s_[i].gen.load(std::memory_order_relaxed);
  }

  // Which slot the last writer installed: a guess that lets a reader fetch
  // the parameters before the state word (it checks them against the word).
  std::size_t hint() const noexcept {
    // relaxed: only a guess; the reader checks the tag and the generation.
    return hint_.load(std::memory_order_relaxed) & (count - 1);
  }
  void set_hint(std::size_t i) noexcept {
    // relaxed: as in hint(); written after the CAS that installs slot i (a
    // writer taken over may write a stale guess: only a guess).
    hint_.store(static_cast<std::uint32_t>(i), std::memory_order_relaxed);
  }

  // The rate as given (a peek: may be torn by a racing writer; writers read
  // the slot in force, which nobody rewrites while it is in force).
  rate rate_of(std::size_t i) const noexcept {
    return rate(s_[i].count.load(), nanoseconds(static_cast<std::int64_t>(s_[i].period.load())));
  }

  // Fills slot i (not in force) as claimant `p.gen`, while mine() holds; the
  // generation last. False when the claim was lost (the slot is then the
  // taker's to fill).
  template <class Mine>
  bool store(std::size_t i, const gcra_params& p, rate r, const Mine& mine) noexcept {
    slot& s = s_[i];
    const std::uint32_t tag = static_cast<std::uint32_t>(p.gen);
    const std::uint32_t sc = static_cast<std::uint32_t>(p.scale);
    if (!(s.interval.write(p.interval, sc & 3u, tag, mine) && s.burst.write(p.burst, sc >> 2, tag, mine) &&
          s.epoch.write(static_cast<std::uint64_t>(p.epoch), tag, mine) &&
          s.config.write(p.config, tag, mine) && s.exact.write(p.exact ? 1 : 0, tag, mine) &&
          s.count.write(r.count, tag, mine) &&
          s.period.write(static_cast<std::uint64_t>(r.period.count()), tag, mine)))
      return false;
    // relaxed: the expected value only, read before the ownership check.
    std::uint64_t g = s.gen.load(std::memory_order_relaxed);
    for (;;) {
      if (!mine()) return false;
      // release: the generation last, so a reader that sees it sees every
      // field with it (hot()). relaxed on failure: the next expected value.
      if (s.gen.compare_exchange_weak(g, p.gen, std::memory_order_release, std::memory_order_relaxed)) return true;
    }
  }
  // Before the object is shared: slot i gets `p` (or only the epoch, for a
  // misconfigured bucket, with p.burst == 0).
  void init(std::size_t i, const gcra_params& p, rate r) noexcept {
    slot& s = s_[i];
    const std::uint64_t sc = p.scale;
    s.interval.init((p.interval & ((std::uint64_t{1} << 62) - 1)) | ((sc & 3u) << 62));
    s.burst.init((p.burst & ((std::uint64_t{1} << 62) - 1)) | ((sc >> 2) << 62));
    s.epoch.init(static_cast<std::uint64_t>(p.epoch));
    s.config.init(p.config);
    s.exact.init(p.exact ? 1u : 0u);
    s.count.init(r.count);
    s.period.init(static_cast<std::uint64_t>(r.period.count()));
    // relaxed: construction happens before any other thread sees the object.
    s.gen.store(p.gen, std::memory_order_relaxed);
  }

 private:
  // In atomics so a writer racing a reader is not a data race. The fields
  // the hot paths read come first, the generation ahead of them.
  struct slot {
    atomic<std::uint64_t> gen{0};
    owned_u64 interval, burst, epoch, config;  // interval and burst carry the scale above them
    owned_u32 exact;
    owned_u64 count, period;
  };

  slot s_[count];
  atomic<std::uint32_t> hint_{0};

  static_assert(std::atomic<std::uint64_t>::is_always_lock_free, "tollgate needs lock-free 64-bit atomics");
  static_assert(std::atomic<std::uint32_t>::is_always_lock_free, "tollgate needs lock-free 32-bit atomics");
};

// The owner word: 0 when free, else the claim number of the writer inside;
// and the counter claim numbers come from (1 is the construction's).
class bucket_writer {
 public:
  std::uint64_t new_claim() noexcept {
    // relaxed: only uniqueness matters, which the RMW gives in any order.
    return claims_.fetch_add(1, std::memory_order_relaxed) + 1;
  }
  // Takes the owner word for `id`; true when it was taken over from a
  // holder that showed no change for TOLLGATE_BUCKET_TAKEOVER_POLLS looks.
  bool lock(std::uint64_t id) noexcept {
    // acquire (all loads and CASes): pairs with the release CAS that ends
    // the previous holder's turn (unlock), so its slot writes are visible.
    std::uint64_t seen = owner_.load(std::memory_order_acquire);
    unsigned still = 0;
    for (;;) {
      if (seen == 0 || still >= TOLLGATE_BUCKET_TAKEOVER_POLLS) {
        const std::uint64_t was = seen;
        if (owner_.compare_exchange_strong(seen, id, std::memory_order_acquire, std::memory_order_acquire))
          return was != 0;
        still = 0;  // it moved: someone else's turn now
        continue;
      }
      std::this_thread::yield();
      const std::uint64_t now = owner_.load(std::memory_order_acquire);
      still = now == seen ? still + 1 : 0;
      seen = now;
    }
  }
  // Takes the owner word only if it is free: tries once.
  bool try_lock(std::uint64_t id) noexcept {
    std::uint64_t free = 0;
    // acquire: as in lock(); relaxed on failure: nothing is read.
    return owner_.compare_exchange_strong(free, id, std::memory_order_acquire, std::memory_order_relaxed);
  }
  bool holds(std::uint64_t id) const noexcept {
    // acquire: a taker's CAS, once seen, orders our later checks after it.
    return owner_.load(std::memory_order_acquire) == id;
  }
  void unlock(std::uint64_t id) noexcept {
    std::uint64_t mine = id;
    // release: pairs with the acquire in the next lock() or try_lock(). A
    // holder taken over fails and leaves the taker's number in place.
    // relaxed on failure: nothing is read.
    (void)owner_.compare_exchange_strong(mine, 0, std::memory_order_release, std::memory_order_relaxed);
  }

 private:
  atomic<std::uint64_t> owner_{0};
  atomic<std::uint64_t> claims_{1};
};

}  // namespace detail
TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_DETAIL_BUCKET_SLOTS_HPP
