// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// account/shared_slot_cache.hpp: the shared account's concurrency credit. A
// thread that owns a credit line keeps, in this process's memory, a few of
// the slot words its leases gave back, still held in the region's table
// under this process's name, and hands them to its next leases with no
// locked instruction.
//
// Contract. A kept word stays held (account/shared_slots.hpp): no other
// user can take it, so leases in flight never exceed the limit L, exactly
// as without the cache. A lease gets a kept word only when one plain (relaxed)
// load finds it still at the stamp this process left (a reaper that freed
// it changed it, and stamps never repeat) and that stamp's millisecond is
// the lease's `now`'s or later, so its deadline is at least lease_timeout
// after the admission, as a fresh take's; an older stamp is renewed first
// (one CAS, as lease::renew), so under load one locked instruction per word
// per millisecond. A settle keeps the word (no CAS) while the shelf has
// room, else gives it back as before. Without a deadline (lease_timeout 0)
// any unchanged stamp is reused.
//
// Bound. A shelf keeps at most `cap` words: the credit line's chunk of the
// concurrency limit, L / 1024 up to 16 lines and L / (64 x Lines) above
// (credit.hpp's rule for the windows; limits below that divisor keep none
// and run exactly as without the cache), at most 8. Only a thread that owns
// one of the region's `Lines` credit lines keeps words, so the words kept
// by live users are at most Lines x cap region-wide: other threads of every
// process can be refused falsely by at most that many permits (1.6 % of L
// with 16 lines, under 1/64 of it above), and by the words of dead
// processes until they come back (below). A thread is never refused on
// concurrency by a handle whose shelf (this handle's, for this thread) holds
// a word still held: it uses it first (but at a `now` 285 years past the
// origin, where no take is stamped: the shelf then gives its words back).
// Threads past the first 16 of a process have no shelf.
//
// Reclaim. A kept word is named for this process with its holding's
// generation, so a scan frees it as it frees a slot of an in-flight lease:
// by its deadline (lease_timeout after its stamp: an idle thread's kept
// words come back to the others at the first scan that many seconds after
// its last admission), or once the liveness check calls the process dead.
// A kept word freed by a scan is dropped at its next use (its load finds
// another value). A handle gives its kept words back by CAS when it lets
// its credit lines go (its destructor, open(), attach()); a child of fork()
// forgets its parent's without giving them (claim(): they are the parent's,
// named for it). Without a deadline and without a liveness check, the words
// a dead process kept stay held, as its in-flight slots do.
//
// Concurrency. A shelf is written by the thread owning its shard only
// (detail/shard_counters.hpp: ownership passes through the shard claim's
// release/acquire, and so does the last stamp written), and read by others
// only through `count`, relaxed, as a snapshot (in_flight(), remaining()).
// The words themselves change only by the table's CASes.
#ifndef TOLLGATE_ACCOUNT_SHARED_SLOT_CACHE_HPP
#define TOLLGATE_ACCOUNT_SHARED_SLOT_CACHE_HPP

#include <tollgate/config.hpp>
#include <tollgate/clock.hpp>
#include <tollgate/detail/atomic.hpp>
#include <tollgate/detail/shard_counters.hpp>

#include <cstddef>
#include <cstdint>

TOLLGATE_BEGIN_NAMESPACE

namespace detail {

struct shared_slot_cache {
  static constexpr std::uint32_t max_words = 8;
  static constexpr std::uint64_t divisor = 1024;  // as credit.hpp's

  // The words a shelf keeps for a concurrency limit `l` with `lines` lines.
  static constexpr std::uint32_t cap_for(std::uint64_t l, std::size_t lines) noexcept {
    const std::uint64_t d = lines > detail::thread_shards ? std::uint64_t{64} * lines : divisor;
    const std::uint64_t c = l / d;
    return static_cast<std::uint32_t>(c < max_words ? c : max_words);
  }

  // Atomic only so that snapshots (kept()) may read them, relaxed; written
  // by the shelf's owner only.
  struct entry {
    detail::atomic<std::uint64_t> stamp{0};
    detail::atomic<std::int64_t> until{0};  // the latest `now` that reuses it with no write (Table::fresh_until)
    detail::atomic<std::uint64_t> slot{0};
  };
  // The count, the shelf's cap and the first entry share a cache line.
  struct alignas(TOLLGATE_CACHELINE_SIZE) shelf {
    detail::atomic<std::uint32_t> count{0};
    std::uint32_t cap = 0;  // 0 until its shard's thread owns a credit line (set_owned)
    entry e[max_words];
  };

  shelf shelves[detail::thread_shards];
  std::uint32_t cap = 0;  // what an owned shelf keeps; 0: off

  // Shard `sh`'s thread owns a credit line now: its shelf may keep words.
  void set_owned(unsigned sh) noexcept {
    if (sh < detail::thread_shards) shelves[sh].cap = cap;
  }

  // A kept word for a lease on shard `sh` at `now`: its index and stamp.
  // False when the shelf has none still held (those freed are dropped).
  template <class Table>
  [[gnu::always_inline]] bool take(unsigned sh, Table& t, std::uint64_t identity, nanoseconds now, std::size_t& slot,
                                   std::uint64_t& stamp) noexcept {
    shelf& f = shelves[sh];
    // relaxed (count): this thread owns the shelf; the atomic is for snapshots.
    std::uint32_t n = f.count.load(std::memory_order_relaxed);
    while (n > 0) {
      --n;
      f.count.store(n, std::memory_order_relaxed);  // relaxed: as above
      const entry& x = f.e[n];
      // relaxed (the entry's fields): as the count.
      std::uint64_t s = x.stamp.load(std::memory_order_relaxed);
      const std::size_t i = static_cast<std::size_t>(x.slot.load(std::memory_order_relaxed));
      if (t.reuse(i, s, x.until.load(std::memory_order_relaxed), identity, now)) {
        slot = i;
        stamp = s;
        return true;
      }
    }
    return false;
  }

  // Keeps the word a lease on shard `sh` gives back: false when the shelf
  // is full or not owned (the caller then frees it).
  template <class Table>
  [[gnu::always_inline]] bool put(unsigned sh, const Table& t, std::size_t slot, std::uint64_t stamp) noexcept {
    if (sh >= detail::thread_shards) return false;
    shelf& f = shelves[sh];
    const std::uint32_t n = f.count.load(std::memory_order_relaxed);  // relaxed: as in take
    if (n >= f.cap) return false;
    entry& x = f.e[n];
    // relaxed (all): as the count.
    x.stamp.store(stamp, std::memory_order_relaxed);
    x.until.store(t.fresh_until(stamp), std::memory_order_relaxed);
    x.slot.store(slot, std::memory_order_relaxed);
    f.count.store(n + 1, std::memory_order_relaxed);  // relaxed: as above
    return true;
  }

  // Gives every kept word back to the table (the words a scan freed are
  // untouched: their CAS fails) and disowns every shelf. Only with no
  // admission or settle of this handle running.
  template <class Table>
  void give_all(Table& t) noexcept {
    for (shelf& f : shelves) {
      const std::uint32_t n = f.count.load(std::memory_order_relaxed);  // relaxed: no other user now
      for (std::uint32_t k = 0; k < n; ++k)  // relaxed (the fields): as above
        (void)t.give(static_cast<std::size_t>(f.e[k].slot.load(std::memory_order_relaxed)),
                     f.e[k].stamp.load(std::memory_order_relaxed));
      f.count.store(0, std::memory_order_relaxed);  // relaxed: as above
      f.cap = 0;
    }
  }
  // Forgets every kept word without giving it back (a child of fork(): they
  // are its parent's) and disowns every shelf.
  void forget_all() noexcept {
    for (shelf& f : shelves) {
      f.count.store(0, std::memory_order_relaxed);  // relaxed: as above
      f.cap = 0;
    }
  }
  // Words kept by all shelves and still held at their stamps (a snapshot:
  // an entry a scan freed is not counted, though it stays on its shelf
  // until its next use).
  template <class Table>
  std::uint64_t kept(const Table& t) const noexcept {
    std::uint64_t c = 0;
    for (const shelf& f : shelves) {
      // relaxed (all): a snapshot; an entry being replaced is read as either.
      const std::uint32_t n = f.count.load(std::memory_order_relaxed);
      for (std::uint32_t k = 0; k < n && k < max_words; ++k)
        c += t.holds(static_cast<std::size_t>(f.e[k].slot.load(std::memory_order_relaxed)),
                     f.e[k].stamp.load(std::memory_order_relaxed))
                 ? 1
                 : 0;
    }
    return c;
  }
};

}  // namespace detail

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_ACCOUNT_SHARED_SLOT_CACHE_HPP
