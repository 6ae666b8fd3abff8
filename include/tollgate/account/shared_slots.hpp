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
// A word is {time: 48 bits, generation: 16 bits}, as account/slot_table.hpp:
// time 0 is free, else 1 + the holding's admission (or last renewal) time in
// milliseconds from the origin, rounded up. Beside each word an owner word
// {identity: 48 bits, generation: 16 bits} names the process that holds it,
// stored by the holder right after its CAS; its generation ties it to that
// one holding, so a stale owner word (of an earlier holding) never counts.
//
// Reclaim. reap(now) frees a held word by CAS (the CAS decides, once):
//   - past its deadline (lease_timeout after its stamp, if lease_timeout > 0):
//     the backstop for a holder that died or hung;
//   - whose owner word matches its generation and whose identity the
//     caller's liveness check calls dead (the library calls it, and never
//     does I/O of its own): fast recovery from a killed process.
// A holder killed between its CAS and its owner store has no owner yet: its
// word comes back by the deadline only. A scan runs at most once per
// `interval` of the supplied time (and whenever time goes back), region-wide.
// A reclaimed holder that is in fact alive (a deadline passed, a liveness
// check that lied) finds its release CAS failing: nothing is given twice, but
// the server may then see L + 1 requests in flight (as with the in-process
// account's reclaim).
//
// Concurrency. Lock-free. Every CAS on a word is acq_rel: acquire so that a
// new holder sees what the previous holder did before releasing (the usual
// semaphore contract), release for the same pairing the other way; failures
// are relaxed (only the value is used). Owner words are lone values
// (relaxed): the generation check, not ordering, makes them safe. Words hold
// no pointer: the table means the same in every process that maps it.
#ifndef TOLLGATE_ACCOUNT_SHARED_SLOTS_HPP
#define TOLLGATE_ACCOUNT_SHARED_SLOTS_HPP

#include <tollgate/config.hpp>
#include <tollgate/clock.hpp>
#include <tollgate/detail/atomic.hpp>

#include <cstddef>
#include <cstdint>
#include <limits>

TOLLGATE_BEGIN_NAMESPACE

namespace detail {

template <std::size_t Slots>
struct shared_slots {
  static_assert(Slots >= 1 && Slots <= (std::size_t{1} << 20), "1 .. 2^20 slots");
  static constexpr std::size_t none = static_cast<std::size_t>(-1);
  static constexpr unsigned gen_bits = 16;
  static constexpr std::uint64_t gen_mask = (std::uint64_t{1} << gen_bits) - 1;
  static constexpr std::uint64_t max_ms = 9000000000000;  // 285 years: ms * 10^6 fits 63 bits
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
    const std::uint64_t time_part = (ms(now) + 1) << gen_bits;
    std::size_t i = start % n;
    for (std::size_t k = 0; k < n; ++k, i = i + 1 == n ? 0 : i + 1) {
      // relaxed: a guess of a free word; the CAS decides.
      std::uint64_t w = words[i].load(std::memory_order_relaxed);
      if ((w >> gen_bits) != 0) continue;
      const std::uint64_t s = time_part | ((w + 1) & gen_mask);
      // acq_rel/relaxed: see the header.
      if (words[i].compare_exchange_strong(w, s, std::memory_order_acq_rel, std::memory_order_relaxed)) {
        // relaxed: a lone value, tied to this holding by its generation.
        owners[i].store((identity << gen_bits) | (s & gen_mask), std::memory_order_relaxed);
        slot = i;
        stamp = s;
        return true;
      }
    }
    return false;
  }

  // Frees the word taken with `stamp`: true if this call freed it, false if
  // a reaper did first.
  bool give(std::size_t slot, std::uint64_t stamp) noexcept {
    if (slot >= Slots) return false;
    std::uint64_t w = stamp;
    // acq_rel/relaxed: see the header.
    return words[slot].compare_exchange_strong(w, stamp & gen_mask, std::memory_order_acq_rel,
                                               std::memory_order_relaxed);
  }

  // Moves the holding's deadline to lease_timeout after `now` (never back);
  // `stamp` becomes the new value. False once reaped.
  bool renew(std::size_t slot, std::uint64_t& stamp, std::uint64_t identity, nanoseconds now) noexcept {
    if (slot >= Slots) return false;
    const std::uint64_t t_now = ms(now) + 1, t_old = stamp >> gen_bits;
    const std::uint64_t s = ((t_now > t_old ? t_now : t_old) << gen_bits) | ((stamp + 1) & gen_mask);
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
      std::uint64_t w = words[i].load(std::memory_order_relaxed);  // relaxed: re-checked by the CAS
      const std::uint64_t t = w >> gen_bits;
      if (t == 0) continue;
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
      if (words[i].compare_exchange_strong(w, w & gen_mask, std::memory_order_acq_rel, std::memory_order_relaxed))
        ++(expired ? by_deadline : by_death);
    }
  }

  // Words held now (a snapshot).
  std::uint64_t held() const noexcept {
    std::uint64_t c = 0;
    for (std::size_t i = 0; i < static_cast<std::size_t>(limit); ++i)
      c += (words[i].load(std::memory_order_relaxed) >> gen_bits) != 0 ? 1 : 0;  // relaxed: a snapshot
    return c;
  }
};

}  // namespace detail

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_ACCOUNT_SHARED_SLOTS_HPP
