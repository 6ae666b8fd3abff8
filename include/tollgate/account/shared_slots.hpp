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
// there is no step between taking a unit and recording its holding.
//
// A word is detail/slot_word.hpp's: held, 1 + the holding's admission (or
// last renewal) time in milliseconds from the origin rounded up, and a
// generation; a word's stamps never repeat, and here the generation steps
// by exactly one at every take and renewal (next()). Beside each word an
// owner word {identity: 48 bits, generation: 16 bits} names the process
// that holds it; its generation ties it to one holding. Only a holding
// writes its name: the taker that won the take CAS (or a renewal's CAS)
// stores it, plainly, right after; a loser writes nothing. So the take is
// one locked instruction (naming before the CAS took an exchange, and a
// loser's put-back could leave a live holding named for another process:
// three takers at one word, the last loser restoring the first's name).
//
// What an owner word can say of a held word of generation g. Its holder's
// name, once the holder's store lands. Before that, a name of an earlier
// holding of that word: generation g - 1 or older (each holder's store
// precedes its release, which precedes the next take), so it does not
// match (the generation steps by one, where slot_word::next starts at 0
// again in a later millisecond and the previous holding's name would have
// matched). Never another process's name with generation g, but in one
// case: a holder stalled between its CAS and its store past its deadline,
// reclaimed, whose store lands 65,536 x k takes of that word later, within a
// holding of the same generation, and which is then called dead while that
// holding lives (a live holder reclaimed first: the L + 1 case below).
//
// Reclaim. reap(now) frees a held word by CAS (the CAS decides, once):
//   - past its deadline (lease_timeout after its stamp, if lease_timeout > 0):
//     the backstop for a holder that died or hung;
//   - whose owner word matches its generation and whose identity the
//     caller's liveness check calls dead (the library calls it, and never
//     does I/O of its own): fast recovery from a killed process.
// What remains: a holder killed between its CAS (a take or a renewal) and
// its name comes back by the deadline only (one lease_timeout after that
// stamp). A scan runs at most once per
// `interval` of the supplied time (and whenever time goes back), region-wide.
// A reclaimed holder that is in fact alive (a deadline passed, a liveness
// check that lied) finds its release CAS failing, however many takes came
// between (stamps never repeat): nothing is given twice, but the server may
// then see L + 1 requests in flight (as with the in-process account's
// reclaim).
//
// Concurrency. Lock-free. Every CAS on a word is acq_rel: acquire so that a
// new holder sees what the previous holder did before releasing (the usual
// semaphore contract, and the previous holder's name store, so the new
// name follows it in the owner word's order), release for the same pairing
// the other way; failures are relaxed (only the value is used). Owner words
// are written and read relaxed: a reaper reads the word with acquire, then
// the owner word, and acts only on a name whose generation matches the
// word's (above); its CAS re-checks the word. Words hold
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

  // The stamp after `w` for a holding at `t` = 1 + its ms after the origin:
  // as slot_word::next, but the generation always steps by one (a wrap
  // carries a millisecond into the time, a later `t` moves the time on), so
  // an owner word left by a word's previous holding never matches the next
  // (see the header). Stamps still never repeat (the pair increases).
  static constexpr std::uint64_t next(std::uint64_t w, std::uint64_t t) noexcept {
    constexpr std::uint64_t top = ~slot_word::held_bit;  // as slot_word::next: never reached
    const std::uint64_t after = (w & ~slot_word::held_bit) + 1;
    const std::uint64_t at = ((t < max_ms + 1 ? t : max_ms + 1) << gen_bits) | (after & gen_mask);
    const std::uint64_t s = after > at ? after : at;
    return slot_word::held_bit | (s < top ? s : top);
  }

  // Takes a free word among the first `limit`, probing from `start`; writes
  // its index and stamp, and names `identity` (0: none) its owner. False
  // when every word is held.
  bool take(nanoseconds now, std::size_t start, std::uint64_t identity, std::size_t& slot,
            std::uint64_t& stamp) noexcept {
    const std::size_t n = static_cast<std::size_t>(limit);
    if (n == 0) return false;
    const std::uint64_t m = ms(now);
    if (m >= max_ms) return false;  // 285 years past the origin: no stamp (detail/slot_word.hpp)
    const std::uint64_t t = m + 1;
    std::size_t i = start < n ? start : start % n;  // the account passes a start below n: no division
    for (std::size_t k = 0; k < n; ++k, i = i + 1 == n ? 0 : i + 1) {
      // relaxed: a guess of a free word; the CAS decides.
      std::uint64_t w = words[i].load(std::memory_order_relaxed);
      if (slot_word::held(w)) continue;
      const std::uint64_t s = next(w, t);
      // acq_rel/relaxed: see the header. A loser writes nothing.
      if (words[i].compare_exchange_strong(w, s, std::memory_order_acq_rel, std::memory_order_relaxed)) {
        // relaxed: only this holding writes its name (see the header); a
        // plain store where naming before the CAS took an exchange.
        owners[i].store((identity << gen_bits) | slot_word::generation(s), std::memory_order_relaxed);
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
    return words[slot].compare_exchange_strong(w, slot_word::freed(stamp), std::memory_order_acq_rel,
                                               std::memory_order_relaxed);
  }

  // Moves the holding's deadline to lease_timeout after `now` (never back);
  // `stamp` becomes the new value. False once reaped.
  bool renew(std::size_t slot, std::uint64_t& stamp, std::uint64_t identity, nanoseconds now) noexcept {
    if (slot >= Slots) return false;
    const std::uint64_t m = ms(now);
    // acquire: as the reap's load. Past max_ms the deadline stays (slot_word.hpp).
    if (m >= max_ms) return words[slot].load(std::memory_order_acquire) == stamp;
    const std::uint64_t s = next(stamp, m + 1);
    std::uint64_t w = stamp;
    // acq_rel/relaxed: see the header.
    if (!words[slot].compare_exchange_strong(w, s, std::memory_order_acq_rel, std::memory_order_relaxed))
      return false;
    owners[slot].store((identity << gen_bits) | (s & gen_mask), std::memory_order_relaxed);  // relaxed: as in take
    stamp = s;
    return true;
  }

  // The latest `now` at which a holding stamped `stamp` still has a
  // deadline at least lease_timeout away: its stamp's time (its millisecond
  // after the origin), or without a deadline the last `now` take() stamps.
  // Never past that last `now` (max_ms - 1 ms after the origin), so a kept
  // word is never lent where a fresh take is refused.
  std::int64_t fresh_until(std::uint64_t stamp) const noexcept {
    const std::uint64_t t = slot_word::time(stamp);
    const std::uint64_t m = timeout == 0 ? max_ms - 1 : t > 0 ? t - 1 : 0;
    // Capped at max_ms - 1 (a stamp may carry past max_ms: slot_word.hpp),
    // so the product stays below 2^63.
    const std::int64_t since = static_cast<std::int64_t>((m < max_ms - 1 ? m : max_ms - 1) * 1000000);
    std::int64_t at = 0;
    return __builtin_add_overflow(origin, since, &at) ? std::numeric_limits<std::int64_t>::max() : at;
  }

  // A word this process kept for its next lease (account/
  // shared_slot_cache.hpp), held under `stamp`, with `until` its
  // fresh_until(): true if it still is, with a deadline at least
  // lease_timeout after `now` (a `now` at or before `until`: no write), else
  // after a renewal (one CAS); false once a scan freed it, or for a `now`
  // take() refuses (the word is then given back). `slot` is one this table
  // gave (take()).
  [[gnu::always_inline]] bool reuse(std::size_t slot, std::uint64_t& stamp, std::int64_t until, std::uint64_t identity,
                                    nanoseconds now) noexcept {
    // relaxed: only the value is used. This process's CAS that wrote the
    // stamp happens before this load (the same thread, or passed with its
    // shard), so coherence gives that stamp or a later value, a scan's free
    // (stamps never repeat); a scan after this load frees the word as it
    // would an in-flight lease's taken now (its deadline decides).
    if (words[slot].load(std::memory_order_relaxed) != stamp) return false;
    if (now.count() <= until) return true;
    // A `now` that takes no stamp (285 years past the origin, as take())
    // gets no kept word either: renew() would keep a deadline long past.
    if (ms(now) >= max_ms) {
      (void)give(slot, stamp);
      return false;
    }
    if (timeout == 0) return true;  // (unreachable: without a deadline `until` is take()'s last `now`)
    return renew(slot, stamp, identity, now);
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

  // Whether word `slot` is held at `stamp` (a snapshot).
  bool holds(std::size_t slot, std::uint64_t stamp) const noexcept {
    return slot < Slots && words[slot].load(std::memory_order_relaxed) == stamp;  // relaxed: a snapshot
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
