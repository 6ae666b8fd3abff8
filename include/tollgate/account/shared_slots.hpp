// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// account/shared_slots.hpp: the shared account's concurrency limit, as a
// table of slot words in the region, one word per permit.
//
// Contract. The concurrency limit L is the number of words in use (the
// first L of the table's `Slots`): a lease holds one word, so at most L
// leases hold one at any instant, with no separate counter. Taking a slot is
// one CAS on a free word; giving it back, one CAS from the value written.
// A process killed at any instruction has either won its CAS (the word is
// held, with its stamp, and comes back as below) or not (nothing changed):
// there is no step between taking a unit and recording who holds it.
//
// A word is detail/slot_word.hpp's: held, 1 + the holding's admission (or
// last renewal) time in milliseconds from the origin rounded up, and a
// generation; a word's stamps never repeat. Beside each word an owner word
// {identity: 48 bits, generation: 16 bits} names the process that holds it;
// its generation ties it to one holding, so an owner word of an earlier
// holding never counts. A taker names itself in the owner word (an
// exchange) before its take CAS, so a process killed right after winning
// that CAS is named already; one that loses the CAS puts back what it
// replaced unless the owner word changed since.
//
// Reclaim. reap(now) frees a held word by CAS (the CAS decides, once):
//   - past its deadline (lease_timeout after its stamp, if lease_timeout > 0):
//     the backstop for a holder that died or hung;
//   - whose owner word matches its generation and whose identity the
//     caller's liveness check calls dead (the library calls it, and never
//     does I/O of its own): fast recovery from a killed process.
// What remains: a renewal names the new generation only after its CAS, so
// a holder killed between the two comes back by the deadline only (one
// lease_timeout after that renewal); and a taker that lost its CAS to
// another process for the same generation names itself until it puts the
// owner word back, so if it is killed in those few steps and called dead,
// the winner's word is reclaimed while it runs (the case below). A scan runs at most once per
// `interval` of the supplied time (and whenever time goes back), region-wide.
// A reclaimed holder that is in fact alive (a deadline passed, a liveness
// check that lied) finds its release CAS failing, however many takes came
// between (stamps never repeat): nothing is given twice, but the server may
// then see L + 1 requests in flight (as with the in-process account's
// reclaim).
//
// Concurrency. Lock-free. Every CAS on a word is acq_rel: acquire so that a
// new holder sees what the previous holder did before releasing (the usual
// semaphore contract), release for the same pairing the other way; failures
// are relaxed (only the value is used). Owner words are written relaxed: a
// taker's exchange precedes its take CAS (a release), and the reaper reads
// the word with acquire before the owner, so a reaper that sees a holding
// sees its holder's name or a later owner value; the generation check
// discards any other holding's. Words hold
// no pointer: the table means the same in every process that maps it.
#ifndef TOLLGATE_ACCOUNT_SHARED_SLOTS_HPP
#define TOLLGATE_ACCOUNT_SHARED_SLOTS_HPP

#include <tollgate/config.hpp>
#include <tollgate/clock.hpp>
#include <tollgate/detail/atomic.hpp>
#include <tollgate/detail/slot_word.hpp>

#include <cstddef>
#include <cstdint>
#include <limits>

TOLLGATE_BEGIN_NAMESPACE

namespace detail {

template <std::size_t Slots>
struct shared_slots {
  static_assert(Slots >= 1 && Slots <= (std::size_t{1} << 20), "1 .. 2^20 slots");
  static constexpr std::size_t none = static_cast<std::size_t>(-1);
  static constexpr unsigned gen_bits = slot_word::gen_bits;
  static constexpr std::uint64_t gen_mask = slot_word::gen_mask;
  static constexpr std::uint64_t max_ms = slot_word::max_ms;
  static constexpr std::uint64_t max_identity = (std::uint64_t{1} << 48) - 1;

  // Written once by the constructor, before the region is ready.
  std::uint64_t limit;  // words in use: 0 (no concurrency limit) .. Slots
  std::int64_t origin;
  std::int64_t timeout;  // lease_timeout in ns; 0: no deadline
  detail::atomic<std::int64_t> last_scan;
  detail::atomic<std::uint64_t> words[Slots];
  detail::atomic<std::uint64_t> owners[Slots];

  void init(std::uint64_t l, nanoseconds lease_timeout, nanoseconds o) noexcept {
    limit = l;
    origin = o.count();
    timeout = lease_timeout.count() > 0 ? lease_timeout.count() : 0;
    // relaxed: construction precedes sharing (the region's release CAS publishes it).
    last_scan.store(std::numeric_limits<std::int64_t>::min(), std::memory_order_relaxed);
    for (std::size_t i = 0; i < Slots; ++i) {
      words[i].store(0, std::memory_order_relaxed);   // relaxed: as above
      owners[i].store(0, std::memory_order_relaxed);  // relaxed: as above
    }
  }

  std::uint64_t ms(nanoseconds now) const noexcept {
    std::int64_t d = 0;
    if (__builtin_sub_overflow(now.count(), origin, &d)) return now.count() > origin ? max_ms : 0;
    if (d <= 0) return 0;
    const std::uint64_t m = (static_cast<std::uint64_t>(d) + 999999) / 1000000;  // rounded up
    return m < max_ms ? m : max_ms;
  }

  // Takes a free word among the first `limit`, probing from `start`; writes
  // its index and stamp, and names `identity` (0: none) its owner. False
  // when every word is held.
  bool take(nanoseconds now, std::size_t start, std::uint64_t identity, std::size_t& slot,
            std::uint64_t& stamp) noexcept {
    const std::size_t n = static_cast<std::size_t>(limit);
    if (n == 0) return false;
    const std::uint64_t t = ms(now) + 1;
    std::size_t i = start % n;
    for (std::size_t k = 0; k < n; ++k, i = i + 1 == n ? 0 : i + 1) {
      // relaxed: a guess of a free word; the CAS decides.
      std::uint64_t w = words[i].load(std::memory_order_relaxed);
      if (slot_word::held(w)) continue;
      const std::uint64_t s = slot_word::next(w, t);
      const std::uint64_t mine = (identity << gen_bits) | slot_word::generation(s);
      // relaxed: ordered before the take CAS by that CAS's release (see the header).
      const std::uint64_t before = owners[i].exchange(mine, std::memory_order_relaxed);
      // acq_rel/relaxed: see the header.
      if (words[i].compare_exchange_strong(w, s, std::memory_order_acq_rel, std::memory_order_relaxed)) {
        slot = i;
        stamp = s;
        return true;
      }
      // Lost: put back what this call replaced, unless the owner word moved on.
      std::uint64_t expect = mine;
      // relaxed/relaxed: a lone value, as above.
      owners[i].compare_exchange_strong(expect, before, std::memory_order_relaxed, std::memory_order_relaxed);
    }
    return false;
  }

  // Frees the word taken with `stamp`: true if this call freed it, false if
  // a reaper did first.
  bool give(std::size_t slot, std::uint64_t stamp) noexcept {
    if (slot >= Slots) return false;
    std::uint64_t w = stamp;
    // acq_rel/relaxed: see the header.
    return words[slot].compare_exchange_strong(w, slot_word::freed(stamp), std::memory_order_acq_rel,
                                               std::memory_order_relaxed);
  }

  // Moves the holding's deadline to lease_timeout after `now` (never back);
  // `stamp` becomes the new value. False once reaped.
  bool renew(std::size_t slot, std::uint64_t& stamp, std::uint64_t identity, nanoseconds now) noexcept {
    if (slot >= Slots) return false;
    const std::uint64_t s = slot_word::next(stamp, ms(now) + 1);
    std::uint64_t w = stamp;
    // acq_rel/relaxed: see the header.
    if (!words[slot].compare_exchange_strong(w, s, std::memory_order_acq_rel, std::memory_order_relaxed))
      return false;
    owners[slot].store((identity << gen_bits) | (s & gen_mask), std::memory_order_relaxed);  // relaxed: as in take
    stamp = s;
    return true;
  }

  // Frees the words of holdings past the deadline or of dead owners (see
  // the header). `alive(identity)` is the caller's check (null: none);
  // counts what it freed in `by_deadline` and `by_death`.
  template <class Alive>
  void reap(nanoseconds now, std::int64_t interval, Alive&& alive, std::uint64_t& by_deadline,
            std::uint64_t& by_death) noexcept {
    // relaxed: a lone time value; two scanners at once are harmless (each word's CAS decides).
    const std::int64_t last = last_scan.load(std::memory_order_relaxed);
    std::int64_t since = 0;
    if (last != std::numeric_limits<std::int64_t>::min() && !__builtin_sub_overflow(now.count(), last, &since) &&
        since >= 0 && since < interval)
      return;
    last_scan.store(now.count(), std::memory_order_relaxed);  // relaxed: as above
    std::int64_t rel = 0;
    const bool timed = timeout > 0 && !__builtin_sub_overflow(now.count(), origin, &rel);
    const std::size_t n = static_cast<std::size_t>(limit);
    for (std::size_t i = 0; i < n; ++i) {
      // acquire: pairs with the take CAS (release) so the owner read below is
      // the holder's name or later (see the header); the CAS re-checks the value.
      std::uint64_t w = words[i].load(std::memory_order_acquire);
      if (!slot_word::held(w)) continue;
      const std::uint64_t t = slot_word::time(w);
      const std::int64_t held_since = static_cast<std::int64_t>(t - 1) * 1000000;
      bool expired = timed && rel >= held_since && rel - held_since >= timeout;
      bool dead = false;
      if (!expired) {
        const std::uint64_t o = owners[i].load(std::memory_order_relaxed);  // relaxed: see the header
        const std::uint64_t who = o >> gen_bits;
        dead = who != 0 && (o & gen_mask) == (w & gen_mask) && !alive(who);
      }
      if (!expired && !dead) continue;
      // acq_rel/relaxed: see the header.
      if (words[i].compare_exchange_strong(w, slot_word::freed(w), std::memory_order_acq_rel,
                                           std::memory_order_relaxed))
        ++(expired ? by_deadline : by_death);
    }
  }

  // Words held now (a snapshot).
  std::uint64_t held() const noexcept {
    std::uint64_t c = 0;
    for (std::size_t i = 0; i < static_cast<std::size_t>(limit); ++i)
      c += slot_word::held(words[i].load(std::memory_order_relaxed)) ? 1 : 0;  // relaxed: a snapshot
    return c;
  }
};

}  // namespace detail

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_ACCOUNT_SHARED_SLOTS_HPP
