// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// account/slot_table.hpp: the table that lets the account take back the
// concurrency units of hung leases (held past lease_timeout).
//
// Contract. One word per slot (detail/slot_word.hpp: held, the lease's
// admission time in milliseconds from the origin rounded up, so a lease is
// never reclaimed early, and a generation). A lease claims a free word
// (claim) with a CAS to the next stamp, and frees it (release) with a CAS
// from the stamp it wrote; a reaper (reap) that finds a word past the
// deadline frees it with the same CAS. Whoever wins returns the unit, so it
// is returned exactly once. A word's stamps never repeat, so a reclaimed
// holder's late release fails whatever came between (a stale supplied
// `now` standing still for 65,536 claims included).
//
// Layout. A shared table of twice the concurrency limit (at most 2^20
// words), so a later upgrade still finds room, then limit / 16 words (1 to
// 64) for each of the first 16 threads, which each claims with a plain store
// (no other thread claims them; others only free held words, by CAS). A
// lease that finds no free word (the limit was raised past the table) cannot
// be reclaimed. Allocated once, at construction; never on the admission path.
//
// Bound. The table is scanned at most once per lease_timeout / 16 of time
// (and again whenever time goes backwards), so a hung lease comes back by the
// first refusal at least lease_timeout / 16 after the previous scan and after
// its own deadline. A lease that renews (renew: a CAS to a later stamp, as a
// heartbeat of long streams) moves its deadline to lease_timeout after the
// renewal, so a short timeout (seconds) can serve long streams while a dead
// holder's unit still comes back within about 17/16 of it. While the account is full and nothing can have expired,
// a refusal costs a load, not a scan.
//
// Concurrency. Lock-free. Every CAS is acq_rel: it publishes nothing else,
// but keeps each word's claims, releases and reclaims in one modification
// order; a failed CAS reads with relaxed (only its value is used). The words
// hold no pointer: the table is address-free given its origin.
#ifndef TOLLGATE_ACCOUNT_SLOT_TABLE_HPP
#define TOLLGATE_ACCOUNT_SLOT_TABLE_HPP

#include <tollgate/config.hpp>
#include <tollgate/clock.hpp>
#include <tollgate/detail/atomic.hpp>
#include <tollgate/detail/shard_counters.hpp>
#include <tollgate/detail/slot_word.hpp>

#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>

TOLLGATE_BEGIN_NAMESPACE

namespace detail {

class slot_table {
 public:
  static constexpr std::size_t no_slot = static_cast<std::size_t>(-1);
  static constexpr std::uint64_t max_ms = slot_word::max_ms;

  // Builds the table for a concurrency limit; a zero timeout builds none
  // (no lease is ever reclaimed, and claims cost nothing).
  void allocate(std::uint64_t limit, nanoseconds lease_timeout, nanoseconds origin) {
    origin_ = origin.count();
    timeout_ = lease_timeout.count();
    if (lease_timeout <= nanoseconds(0) || limit == 0) return;
    count_ = static_cast<std::size_t>(limit * 2 < 1u << 20 ? limit * 2 : 1u << 20);
    stride_ = count_ / (detail::thread_shards + 1);
    own_ = static_cast<std::size_t>(limit / 16 < 1 ? 1 : limit / 16 > 64 ? 64 : limit / 16);
    total_ = count_ + detail::thread_shards * own_;
    words_.reset(new detail::atomic<std::uint64_t>[total_]);
    for (std::size_t i = 0; i < total_; ++i) words_[i].store(0, std::memory_order_relaxed);  // relaxed: not shared yet
  }
  bool enabled() const noexcept { return count_ != 0; }

  // Milliseconds from the origin, rounded up, saturated to [0, max_ms].
  std::uint64_t ms(nanoseconds now) const noexcept {
    std::int64_t d = 0;
    if (__builtin_sub_overflow(now.count(), origin_, &d)) return now.count() > origin_ ? max_ms : 0;
    if (d <= 0) return 0;
    const std::uint64_t m = (static_cast<std::uint64_t>(d) + 999999) / 1000000;  // rounded up
    return m < max_ms ? m : max_ms;
  }

  // Claims a word for a lease admitted at `now` on `shard`: sets its index
  // and the stamp written, or leaves both as they were when none is free (or
  // there is no table). Inline: g++ stopped inlining it into try_admit once
  // the stamps never repeat (detail/slot_word.hpp), which cost a call and
  // about 10 instructions an admission.
  [[gnu::always_inline]] void claim(nanoseconds now, unsigned shard, std::size_t& slot, std::uint64_t& stamp) noexcept {
    if (count_ == 0) return;
    const std::uint64_t m = ms(now);
    if (m >= max_ms) return;  // 285 years past the origin: no word, as when none is free (slot_word.hpp)
    const std::uint64_t t = m + 1;
    if (shard < detail::thread_shards) {
      // The thread's own words first: only their owner turns a free word
      // held (others only free held words, by CAS), so a plain store claims it.
      const std::size_t base = count_ + static_cast<std::size_t>(shard) * own_;
      for (std::size_t i = base; i < base + own_; ++i) {
        // relaxed: this thread's own last write, or a CAS that freed the word
        // (a stale `held` only makes us look further).
        const std::uint64_t w = words_[i].load(std::memory_order_relaxed);
        if (slot_word::held(w)) continue;
        const std::uint64_t s = slot_word::next(w, t);
        // relaxed: no other thread can write a free word of this region, so
        // nothing comes between the load and this store; the CASes that later
        // free it are ordered with it by the word's own modification order.
        words_[i].store(s, std::memory_order_relaxed);
        slot = i;
        stamp = s;
        return;
      }
    }
    // The shared words. Start at a place that depends on the thread, so two
    // threads do not probe the same words.
    std::size_t i = static_cast<std::size_t>(shard) * stride_;
    for (std::size_t k = 0; k < count_; ++k, i = i + 1 == count_ ? 0 : i + 1) {
      // relaxed: only a guess of a free word; the CAS decides.
      std::uint64_t expected = words_[i].load(std::memory_order_relaxed);
      if (slot_word::held(expected)) continue;
      const std::uint64_t s = slot_word::next(expected, t);
      // acq_rel: see the header; acquire on failure is not needed.
      if (words_[i].compare_exchange_strong(expected, s, std::memory_order_acq_rel, std::memory_order_relaxed)) {
        slot = i;
        stamp = s;
        return;
      }
    }
    // No free word (the limit was raised past the table).
  }

  // Frees a word claimed with `stamp`: true if this call freed it (the
  // caller returns the unit), false if a reaper did first (it returned it).
  [[gnu::always_inline]] bool release(std::size_t slot, std::uint64_t stamp) noexcept {
    std::uint64_t expected = stamp;
    // acq_rel/relaxed: as in claim.
    return words_[slot].compare_exchange_strong(expected, slot_word::freed(stamp), std::memory_order_acq_rel,
                                                std::memory_order_relaxed);
  }

  // Renews a word claimed with `stamp` as of `now`: its deadline moves to
  // now + the timeout (never back: a stale `now` keeps the later stamp), and
  // `stamp` becomes the new value (another generation, so a reaper that read
  // the old one fails its CAS). False if a reaper freed it first: the unit
  // has been returned, the lease no longer holds it.
  bool renew(std::size_t slot, std::uint64_t& stamp, nanoseconds now) noexcept {
    const std::uint64_t m = ms(now);
    // acquire: as in claim. Past max_ms the deadline stays (slot_word.hpp).
    if (m >= max_ms) return words_[slot].load(std::memory_order_acquire) == stamp;
    const std::uint64_t s = slot_word::next(stamp, m + 1);
    std::uint64_t expected = stamp;
    // acq_rel/relaxed: as in claim.
    if (!words_[slot].compare_exchange_strong(expected, s, std::memory_order_acq_rel, std::memory_order_relaxed))
      return false;
    stamp = s;
    return true;
  }

  // Frees the words of leases held past the timeout, calling give() once for
  // each; returns how many (see the bound in the header comment).
  template <class Give>
  std::uint64_t reap(nanoseconds now, Give&& give) noexcept {
    if (count_ == 0 || timeout_ <= 0) return 0;
    // relaxed: a lone time value; two threads may both scan (each word's CAS decides).
    const std::int64_t last = last_reap_.load(std::memory_order_relaxed);
    std::int64_t since_last = 0;
    if (last != std::numeric_limits<std::int64_t>::min() && !__builtin_sub_overflow(now.count(), last, &since_last) &&
        since_last >= 0 && since_last < timeout_ / 16)
      return 0;
    last_reap_.store(now.count(), std::memory_order_relaxed);  // relaxed: as above
    std::int64_t rel = 0;
    if (__builtin_sub_overflow(now.count(), origin_, &rel)) return 0;  // a `now` no lease can be measured against
    std::uint64_t freed = 0;
    for (std::size_t i = 0; i < total_; ++i) {
      std::uint64_t v = words_[i].load(std::memory_order_relaxed);  // relaxed: re-checked by the CAS
      if (!slot_word::held(v)) continue;
      const std::uint64_t t = slot_word::time(v);
      // Held since (t - 1) ms after the origin, at the latest.
      const std::int64_t since = static_cast<std::int64_t>(t - 1) * 1000000;
      if (rel < since || rel - since < timeout_) continue;
      // acq_rel/relaxed: as in claim.
      if (words_[i].compare_exchange_strong(v, slot_word::freed(v), std::memory_order_acq_rel,
                                            std::memory_order_relaxed)) {
        give();
        ++freed;
      }
    }
    return freed;
  }

  // For tests: how many words are held now.
  std::size_t held() const noexcept {
    std::size_t n = 0;
    for (std::size_t i = 0; i < total_; ++i) n += slot_word::held(words_[i].load(std::memory_order_relaxed)) ? 1 : 0;  // relaxed: a count
    return n;
  }
  std::size_t size() const noexcept { return total_; }

 private:
  std::unique_ptr<detail::atomic<std::uint64_t>[]> words_;
  std::size_t count_ = 0;   // shared words
  std::size_t stride_ = 0;  // count_ / (thread_shards + 1): where each thread starts looking
  std::size_t own_ = 0;     // words per owned shard
  std::size_t total_ = 0;
  std::int64_t origin_ = 0;
  std::int64_t timeout_ = 0;
  detail::atomic<std::int64_t> last_reap_{std::numeric_limits<std::int64_t>::min()};  // when reap last scanned
};

}  // namespace detail

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_ACCOUNT_SLOT_TABLE_HPP
