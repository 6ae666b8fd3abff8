// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// detail/shard_counters.hpp: statistics counters that cost a plain load and
// store on the hot path instead of a locked read-modify-write. Nothing here
// is public API.
//
// Each thread claims one of `thread_shards` process-wide shard numbers for
// its lifetime (the first time it counts) and gives it back when it exits.
// A shard number has one owner at a time, so the owner may update its shard
// of any shard_counters with a relaxed load and store. Threads that find no
// free number share one more shard, updated with fetch_add. Readers add the
// shards with relaxed loads: approximate while writers run, exact once they
// are joined. A thread's first count claims its number (a few exchanges) and
// registers the thread-exit hook that gives it back, which the C++ runtime
// may do with one allocation; later counts are a thread-local read away.
#ifndef TOLLGATE_DETAIL_SHARD_COUNTERS_HPP
#define TOLLGATE_DETAIL_SHARD_COUNTERS_HPP

#include <tollgate/config.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>

TOLLGATE_BEGIN_NAMESPACE
namespace detail {

constexpr unsigned thread_shards = 16;  // owned shards; number thread_shards is the shared one

inline std::atomic<bool>* shard_claims() noexcept {
  static std::atomic<bool> claims[thread_shards] = {};
  return claims;
}

struct shard_claim {
  unsigned index = thread_shards;
  shard_claim() noexcept {
    std::atomic<bool>* c = shard_claims();
    for (unsigned i = 0; i < thread_shards; ++i) {
      // acquire: pairs with the release store of the previous owner's exit,
      // so its last stores to the shard happen before this thread's loads.
      if (!c[i].load(std::memory_order_relaxed) && !c[i].exchange(true, std::memory_order_acquire)) {
        index = i;
        return;
      }
    }
  }
  ~shard_claim() {
    // release: pairs with the acquire exchange of the next owner.
    if (index < thread_shards) shard_claims()[index].store(false, std::memory_order_release);
    index = thread_shards;  // counting from a later thread_local destructor goes to the shared shard
  }
  shard_claim(const shard_claim&) = delete;
  shard_claim& operator=(const shard_claim&) = delete;
};

inline unsigned this_thread_shard() noexcept {
  static thread_local shard_claim claim;
  return claim.index;
}

// N counters, one cache-line-aligned copy per shard.
template <std::size_t N>
class shard_counters {
 public:
  void add(std::size_t i, std::uint64_t v) noexcept { add_at(this_thread_shard(), i, v); }
  // Several counters of one event, with one shard lookup.
  void add2(std::size_t i, std::uint64_t v, std::size_t j, std::uint64_t w) noexcept {
    const unsigned s = this_thread_shard();
    add_at(s, i, v);
    add_at(s, j, w);
  }
  std::uint64_t sum(std::size_t i) const noexcept {
    std::uint64_t t = 0;
    // relaxed: statistics; exact once the writers are joined (join orders them).
    for (const shard& s : shards_) t += s.c[i].load(std::memory_order_relaxed);
    return t;
  }
  // Adds to counter i of the calling thread's shard (restore uses it before
  // the counters are shared).
  void add_at(unsigned s, std::size_t i, std::uint64_t v) noexcept {
    std::atomic<std::uint64_t>& c = shards_[s].c[i];
    if (s < thread_shards)
      // relaxed: this thread owns the shard (see shard_claim); only readers race, and they read statistics.
      c.store(c.load(std::memory_order_relaxed) + v, std::memory_order_relaxed);
    else
      c.fetch_add(v, std::memory_order_relaxed);  // relaxed: a statistic on the shared shard
  }

 private:
  struct alignas(TOLLGATE_CACHELINE_SIZE) shard {
    std::atomic<std::uint64_t> c[N] = {};
  };
  shard shards_[thread_shards + 1];
};

}  // namespace detail
TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_DETAIL_SHARD_COUNTERS_HPP
