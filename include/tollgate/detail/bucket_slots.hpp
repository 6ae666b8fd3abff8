// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// detail/bucket_slots.hpp: the token bucket's four configuration slots and
// the writer flag that serialises what fills them. Nothing here is public
// API; token_bucket.hpp states the guarantees.
//
// A slot holds one installation of a configuration: its generation (one more
// than the previous installation's, in any slot; 64 bits, so it never
// wraps), the GCRA parameters in ticks, its epoch, its configuration number
// (one more at every set_rate, set_burst and reset, the same across an epoch
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
// word. (A writer refills a slot only after moving the tag away from it, and
// a reader that saw any of its stores reads the word after that move.)
// Which slot to read first is a guess, `hint`, that writers update after
// they install. Reading the parameters ahead of the word keeps them off the
// chain from the word to the CAS: once the word arrives, only the GCRA's own
// steps stand before the CAS, as in a bare one-word GCRA. Either way the
// fields may be torn by a writer refilling the slot; the generation, checked
// again after the reader's CAS, tells (it differs exactly when the slot was
// refilled since, see token_bucket's acquire).
//
// The writer flag (bucket_writer): bit 0 is held by a reconfiguration, a
// reset or an epoch move; every refund inside adds 2. Refunds lower the TAT,
// so a stale reconfiguration could not be undone after one: they keep
// writers out while they run, and never wait (one that meets a writer gives
// nothing back). Writers wait for refunds already inside and spin against
// each other, never against acquirers. The flag lives beside the state word
// (refunds and writers change both), the slots on lines of their own, which
// only writers change.
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

TOLLGATE_BEGIN_NAMESPACE
namespace detail {

class bucket_slots {
 public:
  static constexpr std::size_t count = 4;
  static constexpr std::size_t next(std::size_t i) noexcept { return (i + 1) & (count - 1); }

  // The fields the hot paths need (`exact` is for reporting only), the
  // generation first.
  gcra_params hot(std::size_t i) const noexcept {
    const slot& s = s_[i];
    gcra_params p{};
    // acquire (all): the generation pairs with its release store in store(),
    // written after the fields, so the fields read below are at least that
    // installation's; each field pairs with its own release store, so a field
    // of a later installation makes the reader's CAS on the state word fail
    // or its generation check after it differ.
    p.gen = s.gen.load(std::memory_order_acquire);
    p.scale = s.scale.load(std::memory_order_acquire);
    p.interval = s.interval.load(std::memory_order_acquire);
    p.burst = s.burst.load(std::memory_order_acquire);
    p.tau = s.tau.load(std::memory_order_acquire);
    p.epoch = s.epoch.load(std::memory_order_acquire);
    p.config = s.config.load(std::memory_order_acquire);
    return p;
  }

  // The same with `exact`, off the hot paths.
  gcra_params full(std::size_t i) const noexcept {
    gcra_params p = hot(i);
    p.exact = s_[i].exact.load(std::memory_order_acquire) != 0;  // acquire: as in hot()
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
    // relaxed: as in hint(); written after the CAS that installs slot i.
    hint_.store(static_cast<std::uint32_t>(i), std::memory_order_relaxed);
  }

  // The rate as given, for a writer holding the flag.
  rate rate_locked(std::size_t i) const noexcept {
    // relaxed: written before the flag's last release, which the writer acquired.
    return rate(s_[i].count.load(std::memory_order_relaxed),
                nanoseconds(static_cast<std::int64_t>(s_[i].period.load(std::memory_order_relaxed))));
  }
  // The same for anyone (a peek: may be torn by a racing set_rate).
  rate rate_peek(std::size_t i) const noexcept {
    // acquire: as in hot().
    return rate(s_[i].count.load(std::memory_order_acquire),
                nanoseconds(static_cast<std::int64_t>(s_[i].period.load(std::memory_order_acquire))));
  }

  // Fills slot i: with the flag held and i not in force, or before sharing.
  void store(std::size_t i, const gcra_params& p, rate r) noexcept {
    slot& s = s_[i];
    // release (all): pairs with the acquire loads in hot(); the generation
    // last, so a reader that sees it sees every field with it. Nobody can act
    // on this slot before the release CAS (or store) on the state word that
    // installs its tag (a reader of the old tag's word fails its CAS or its
    // generation check).
    s.scale.store(p.scale, std::memory_order_release);
    s.interval.store(p.interval, std::memory_order_release);
    s.burst.store(p.burst, std::memory_order_release);
    s.tau.store(p.tau, std::memory_order_release);
    s.epoch.store(p.epoch, std::memory_order_release);
    s.config.store(p.config, std::memory_order_release);
    s.exact.store(p.exact ? 1 : 0, std::memory_order_release);
    s.count.store(r.count, std::memory_order_release);
    s.period.store(static_cast<std::uint64_t>(r.period.count()), std::memory_order_release);
    s.gen.store(p.gen, std::memory_order_release);
  }
  // Only the epoch, before the object is shared (a misconfigured bucket).
  void init_epoch(std::int64_t e) noexcept {
    // relaxed: construction happens before any other thread can see the
    // object (publishing it is the user's synchronisation).
    s_[0].epoch.store(e, std::memory_order_relaxed);
  }

 private:
  // In atomics so a writer racing a reader is not a data race. The fields
  // the hot paths read come first, the generation ahead of them.
  struct slot {
    atomic<std::uint64_t> gen{0}, scale{0}, interval{0}, burst{0}, tau{0};
    atomic<std::int64_t> epoch{0};
    atomic<std::uint64_t> config{0}, exact{0}, count{0}, period{0};
  };

  slot s_[count];
  atomic<std::uint32_t> hint_{0};

  static_assert(std::atomic<std::uint64_t>::is_always_lock_free, "tollgate needs lock-free 64-bit atomics");
  static_assert(std::atomic<std::uint32_t>::is_always_lock_free, "tollgate needs lock-free 32-bit atomics");
};

// The writer flag: bit 0 for a writer, 2 for every refund inside.
class bucket_writer {
 public:
  // Takes bit 0 of the flag (new refunds then stay out), then waits for the
  // refunds inside to leave. acquire (all): pairs with the release store
  // that ends the previous writer's critical section, so we see the slot
  // contents it wrote, and with leave_refund, so their CASes come before ours.
  void lock() noexcept {
    std::uint32_t v = flag_.load(std::memory_order_relaxed);  // relaxed: a guess for the CAS
    for (;;) {
      if (v & 1u) {
        std::this_thread::yield();
        v = flag_.load(std::memory_order_relaxed);  // relaxed: as above
      } else if (flag_.compare_exchange_weak(v, v | 1u, std::memory_order_acquire, std::memory_order_relaxed)) {
        break;
      }
    }
    while (flag_.load(std::memory_order_acquire) != 1u) std::this_thread::yield();
  }
  // Takes the flag only if nobody holds it and no refund runs: tries once.
  bool try_lock() noexcept {
    // acquire: as in lock(); relaxed on failure: nothing is read.
    std::uint32_t free = 0;
    return flag_.compare_exchange_strong(free, 1, std::memory_order_acquire, std::memory_order_relaxed);
  }
  void unlock() noexcept {
    // release: pairs with the acquire in the next lock() or
    // try_lock(), and with enter_refund().
    flag_.store(0, std::memory_order_release);
  }

  // Counts a refund in, unless a writer holds the flag.
  bool enter_refund() noexcept {
    // relaxed: only a first guess for the CAS.
    std::uint32_t v = flag_.load(std::memory_order_relaxed);
    do {
      if (v & 1u) return false;
      // acquire: pairs with the release that ends a writer's critical
      // section, so its slot writes are visible (the state load repeats it).
    } while (!flag_.compare_exchange_weak(v, v + 2, std::memory_order_acquire, std::memory_order_relaxed));
    return true;
  }
  void leave_refund() noexcept {
    // release: pairs with the writer's acquire wait in lock(), so the
    // refund's CAS on the state word comes before anything the writer does.
    flag_.fetch_sub(2, std::memory_order_release);
  }

 private:
  atomic<std::uint32_t> flag_{0};
};

}  // namespace detail
TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_DETAIL_BUCKET_SLOTS_HPP
