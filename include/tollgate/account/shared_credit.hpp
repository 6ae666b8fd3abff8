// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// account/shared_credit.hpp: the shared account's per-thread window credit
// (shared_account.hpp): `Lines` credit lines in the region, each owned by
// one live user, and this process's map from its threads to the lines they
// own.
//
// The lines are account/credit.hpp's (its thread_credit runs them, through
// its place() seam): a window's units are counted in the window by one CAS
// before a line holds them, and spent only in the slot they were counted in,
// so every window's bound holds exactly, across processes, as without
// credit. What a line costs other users: at most one chunk per window held
// but not yet spent (a line's leftover goes back into the slot it was
// counted in, also after another user moved the window on). The chunk is
// limit / 1024 up to 16 lines and limit / (64 x Lines) above, so other
// threads of every process can be refused falsely by at most `Lines` chunks
// of a window: Lines / 1024 of its limit up to 16 lines (1.6 % with the
// default 16), under 1/64 of it (1.6 %) for any `Lines` up to 4,096 (limits
// below the divisor get no credit and run exactly as without it). A thread
// is never refused because of its own credit (a refusal gives its credit
// back before the account asks the windows for a wait).
//
// Owner words. Beside each line, one word {identity: 48 bits, generation:
// 16 bits}; identity 0: free. A claim is one CAS from a free word to this
// process's identity and the next generation, so the word that gives a
// user the line also names it (the generation counts in its low 15 bits;
// the top one marks a word being reaped): a process killed at any instruction either
// holds a line under its own name or changed nothing (no step between
// taking and naming, unlike a slot's separate owner word). A release is one
// CAS back to free, after the owner gave its credit back to the windows.
//
// Dead owners. Units a dead owner's line holds stay counted as used until
// they leave their windows (the safe side: its fields may be half-written,
// so they are never given back). Its line comes back when a claimer finds
// no free line and the caller's liveness check calls the owner dead: the
// reaper first takes the word, by one CAS from the dead owner's word to the
// same word marked "reaping" (the generation's top bit), which decides
// among reapers, once; then it forgets the line's credit and frees the
// word. Claimers and other reapers skip a marked word, so the line has one
// writer from the dead owner's last store to the next owner's first (a
// reaper that forgot before deciding could wipe a line that another reaper
// had freed meanwhile and a live owner had claimed and refilled). A reaper
// killed between its CAS and its free leaves the line marked: lost to
// claims until the region is built again (the safe side: never a second
// writer; its units stay counted as a dead owner's do). There is no deadline: a deadline cannot tell a dead owner
// from a slow one, and a slow owner spends its line with plain stores that
// would race the next owner's (breaking exactness, where a late slot holder
// only finds its release CAS failing). Without a liveness check a dead
// owner's line stays held; a thread that finds no line takes its units from
// the windows directly, exactly, only slower.
//
// Threads. This process claims a line for each of its first 16 threads
// (the shard numbers of detail/shard_counters.hpp), when that thread first
// admits; a shard has one owner thread at a time, ownership passing through
// the shard claim's release/acquire, so a line is written by one thread at a
// time and passes, with its credit, to the next thread that claims the
// shard. A claim that finds no line is retried at most once per retry
// interval of the supplied time (no liveness call on the hot path).
//
// fork(). A child inherits the map; the shared account refuses it until
// claim(), which clears the map without releasing (the lines are the
// parent's); a child's handle torn down before claim() releases nothing.
//
// Concurrency. Owner-word CAS: acq_rel on success, so a new owner sees the
// stores the previous owner (or the reaper's forget) made to the line before
// the CAS or release store that freed it; failures relaxed (only the value
// is used). The
// line's fields are thread_credit's (relaxed, single writer).
#ifndef TOLLGATE_ACCOUNT_SHARED_CREDIT_HPP
#define TOLLGATE_ACCOUNT_SHARED_CREDIT_HPP

#include <tollgate/config.hpp>
#include <tollgate/account/credit.hpp>
#include <tollgate/clock.hpp>
#include <tollgate/detail/atomic.hpp>
#include <tollgate/detail/shard_counters.hpp>

#include <cstddef>
#include <cstdint>

TOLLGATE_BEGIN_NAMESPACE

namespace detail {

// The region's part.
template <class Window, std::size_t Lines>
struct shared_credit_lines {
  static_assert(Lines >= 1 && Lines <= 4096, "1 .. 4096 credit lines");
  using credit = thread_credit<Window>;
  using line = typename credit::line;
  static constexpr unsigned gen_bits = 16;
  static constexpr std::uint64_t gen_mask = (std::uint64_t{1} << gen_bits) - 1;
  // The generation's top bit marks a word a reaper has taken (see the
  // header); the generation counts in the bits below it.
  static constexpr std::uint64_t reaping = std::uint64_t{1} << (gen_bits - 1);
  static constexpr std::uint64_t count_mask = reaping - 1;
  static constexpr std::size_t none = Lines;

  detail::atomic<std::uint64_t> owners[Lines];
  line lines[Lines];

  void init() noexcept {
    for (std::size_t i = 0; i < Lines; ++i) owners[i].store(0, std::memory_order_relaxed);  // relaxed: before sharing
  }

  static constexpr std::uint64_t identity_of(std::uint64_t w) noexcept { return w >> gen_bits; }

  // A free line for `identity` (nonzero, below 2^48), probing from `start`:
  // its index and owner word, or none when every line is held.
  std::size_t claim(std::uint64_t identity, std::size_t start, std::uint64_t& word) noexcept {
    std::size_t i = start % Lines;
    for (std::size_t k = 0; k < Lines; ++k, i = i + 1 == Lines ? 0 : i + 1) {
      // relaxed: a guess; the CAS decides.
      std::uint64_t w = owners[i].load(std::memory_order_relaxed);
      if (identity_of(w) != 0) continue;
      const std::uint64_t mine = (identity << gen_bits) | ((w + 1) & count_mask);
      // acq_rel/relaxed: see the header.
      if (owners[i].compare_exchange_strong(w, mine, std::memory_order_acq_rel, std::memory_order_relaxed)) {
        word = mine;
        return i;
      }
    }
    return none;
  }

  // Frees line i, held under `word`: false if it was not (a reaper freed it).
  bool release(std::size_t i, std::uint64_t word) noexcept {
    if (i >= Lines) return false;
    std::uint64_t w = word;
    // acq_rel/relaxed: see the header (release: the owner's give-back before it).
    return owners[i].compare_exchange_strong(w, word & gen_mask, std::memory_order_acq_rel, std::memory_order_relaxed);
  }

  // Frees the lines whose owner `alive` calls dead, forgetting their credit
  // first (see the header); returns how many it freed.
  template <class Alive>
  std::uint64_t reap(credit& c, Alive&& alive) noexcept {
    std::uint64_t freed = 0;
    for (std::size_t i = 0; i < Lines; ++i) {
      // relaxed: a guess; the CAS below decides, and acquires.
      std::uint64_t w = owners[i].load(std::memory_order_relaxed);
      const std::uint64_t who = identity_of(w);
      if (who == 0 || (w & reaping) != 0 || alive(who)) continue;
      // Take the word first: only the reaper whose CAS moves it from the
      // dead owner's name writes the line. acq_rel: acquire pairs with the
      // claim CAS, so the forget below follows the dead owner's last stores
      // in this thread's view; failure relaxed: another reaper (or the
      // owner's release) decided, and this one touches nothing.
      if (!owners[i].compare_exchange_strong(w, w | reaping, std::memory_order_acq_rel, std::memory_order_relaxed))
        continue;
      c.forget(static_cast<unsigned>(i));
      // release: pairs with the next claim's acq_rel CAS, so its owner sees
      // the forget's stores before its own. A plain store: nobody else
      // changes a word that is being reaped.
      owners[i].store(w & count_mask, std::memory_order_release);
      ++freed;
    }
    return freed;
  }

  // The identity holding line i (0: free), a snapshot.
  std::uint64_t owner(std::size_t i) const noexcept {
    return i < Lines ? identity_of(owners[i].load(std::memory_order_relaxed)) : 0;  // relaxed: a snapshot
  }
};

// This process's part: which line each of its shards owns. Each entry is
// read and written by the thread owning that shard only (plain: ownership
// passes through the shard claim's release/acquire), and by claim(),
// open() and the destructor, which run with no admission of this handle.
struct shared_credit_map {
  static constexpr std::uint32_t no_line = ~std::uint32_t{0};
  std::uint32_t line[thread_shards];
  std::uint64_t word[thread_shards];
  std::int64_t retry_at[thread_shards];

  shared_credit_map() noexcept { clear(); }
  void clear() noexcept {
    for (unsigned s = 0; s < thread_shards; ++s) {
      line[s] = no_line;
      word[s] = 0;
      retry_at[s] = INT64_MIN;
    }
  }
};

}  // namespace detail

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_ACCOUNT_SHARED_CREDIT_HPP
