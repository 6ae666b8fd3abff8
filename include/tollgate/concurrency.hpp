// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// concurrency.hpp: a lock-free limit on requests in flight, with a move-only
// RAII permit.
//
// Guarantee. Every admission is decided against the limit in force at that
// instant: the limit and the units held share one atomic word, and acquiring,
// releasing and set_limit are each one successful CAS on it, so they fall in
// one total order and an acquisition that lands compared held + n with the
// limit of its own place in that order. Bound: right after any admission,
// held <= the limit in force; held never goes below zero. Shrinking the limit
// keeps existing permits valid (held may then sit above the new limit); new
// ones are refused (reason::busy) until held + n fits again. n == 0 yields an
// empty, admitted permit; n > limit is `never`. Limits are 1 .. 2^32 - 1
// (larger: errc::too_large); releasing more than is held releases what is held.
//
// Concurrency contract. All member functions are thread-safe and lock-free
// (one CAS loop each to acquire, release and change the limit). A permit must
// not outlive its limiter; a permit releases exactly once (on release() or
// destruction; moving transfers it). in_use/available may be stale on return.
// The state is one address-free atomic word (shareable between processes,
// see shared_region.hpp; permits themselves hold a pointer and are
// per-process). Permits held by a process that dies are never given back:
// the account's leases (account/lease.hpp) are the way to get them back.
#ifndef TOLLGATE_CONCURRENCY_HPP
#define TOLLGATE_CONCURRENCY_HPP

#include <tollgate/config.hpp>
#include <tollgate/decision.hpp>
#include <tollgate/detail/atomic.hpp>
#include <tollgate/error.hpp>

#include <atomic>
#include <cstdint>
#include <utility>

TOLLGATE_BEGIN_NAMESPACE

class concurrency_limiter;

// Holds n units of a concurrency_limiter until released or destroyed.
class permit {
 public:
  permit() noexcept = default;
  permit(const permit&) = delete;
  permit& operator=(const permit&) = delete;
  permit(permit&& o) noexcept : owner_(std::exchange(o.owner_, nullptr)), n_(std::exchange(o.n_, 0)), d_(o.d_) {}
  permit& operator=(permit&& o) noexcept {
    if (this != &o) {
      release();
      owner_ = std::exchange(o.owner_, nullptr);
      n_ = std::exchange(o.n_, 0);
      d_ = o.d_;
    }
    return *this;
  }
  ~permit() { release(); }

  // The decision that produced this permit (admitted, busy or never).
  const tollgate::decision& decision() const noexcept { return d_; }
  explicit operator bool() const noexcept { return d_.admitted(); }
  std::uint64_t count() const noexcept { return n_; }
  // Releases now; later calls and the destructor do nothing.
  inline void release() noexcept;
  // Gives up ownership without releasing: the caller now owes
  // concurrency_limiter::release_detached(count()) exactly once. For wrappers
  // that track their slots themselves (the account reclaims hung ones).
  std::uint64_t detach() noexcept {
    owner_ = nullptr;
    return std::exchange(n_, 0);
  }

 private:
  friend class concurrency_limiter;
  permit(concurrency_limiter* o, std::uint64_t n, tollgate::decision d) noexcept : owner_(o), n_(n), d_(d) {}
  concurrency_limiter* owner_ = nullptr;
  std::uint64_t n_ = 0;
  tollgate::decision d_ = tollgate::decision::refuse(reason::misconfigured);
};

namespace detail {
struct concurrency_probe;  // tests only: reaches the acquisition with a hook
struct nothing_between {
  void operator()() const noexcept {}
};
}  // namespace detail

class alignas(TOLLGATE_CACHELINE_SIZE) concurrency_limiter {
 public:
  static constexpr std::uint64_t max_limit = (std::uint64_t{1} << 32) - 1;

  explicit concurrency_limiter(std::uint64_t limit) {
    const errc e = validate(limit);
    if (e != errc::ok) detail::fail(e);
    state_.store(limit << 32, std::memory_order_relaxed);  // relaxed: construction precedes sharing
  }
  concurrency_limiter(std::uint64_t limit, errc& ec) noexcept {
    ec = validate(limit);
    if (ec == errc::ok) state_.store(limit << 32, std::memory_order_relaxed);  // relaxed: as above
  }
  concurrency_limiter(const concurrency_limiter&) = delete;
  concurrency_limiter& operator=(const concurrency_limiter&) = delete;

  static constexpr errc validate(std::uint64_t limit) noexcept {
    return limit == 0 ? errc::zero_count : limit > max_limit ? errc::too_large : errc::ok;
  }

  permit try_acquire(std::uint64_t n = 1) noexcept { return acquire_with(n, detail::nothing_between{}); }

  // Returns units of a detached permit (see permit::detach).
  void release_detached(std::uint64_t n) noexcept { give_back(n); }

  std::uint64_t in_use() const noexcept { return held_of(state_.load(std::memory_order_relaxed)); }  // relaxed: a snapshot
  std::uint64_t limit() const noexcept { return limit_of(state_.load(std::memory_order_relaxed)); }  // relaxed: a snapshot
  std::uint64_t available() const noexcept {
    const std::uint64_t w = state_.load(std::memory_order_relaxed);  // relaxed: a snapshot, both halves of one instant
    const std::uint64_t l = limit_of(w), u = held_of(w);
    return u >= l ? 0 : l - u;
  }
  [[nodiscard]] errc set_limit(std::uint64_t limit) noexcept {
    const errc e = validate(limit);
    if (e != errc::ok) return e;
    // relaxed (load, and the CAS on success and failure): the limit publishes
    // nothing. The CAS is what orders the change against every acquisition
    // (same word, one modification order); being a read-modify-write it also
    // continues the release sequence of an earlier give_back, so an acquirer
    // that reads this value still synchronises with that release.
    std::uint64_t w = state_.load(std::memory_order_relaxed);
    while (!state_.compare_exchange_weak(w, (limit << 32) | held_of(w), std::memory_order_relaxed,
                                         std::memory_order_relaxed)) {
    }
    return errc::ok;
  }

 private:
  friend class permit;
  friend struct detail::concurrency_probe;

  static constexpr std::uint64_t held_of(std::uint64_t w) noexcept { return w & max_limit; }
  static constexpr std::uint64_t limit_of(std::uint64_t w) noexcept { return w >> 32; }

  // `between` runs after each read of the state, before the decision and the
  // CAS made on it (a no-op but in tests, which stall a thread there).
  template <class Between>
  permit acquire_with(std::uint64_t n, Between&& between) noexcept {
    if (n == 0) return permit(nullptr, 0, decision::admit());
    // acquire: pairs with the release CAS in give_back of the permit whose
    // units we may now take, so whatever its holder did happens-before our
    // use (the usual semaphore contract).
    std::uint64_t w = state_.load(std::memory_order_acquire);
    for (;;) {
      between();
      const std::uint64_t lim = limit_of(w), held = held_of(w);
      if (lim == 0) return permit(nullptr, 0, decision::refuse(reason::misconfigured));
      if (n > lim) return permit(nullptr, 0, decision::refuse(reason::exceeds_capacity));
      if (held + n > lim) return permit(nullptr, 0, decision::wait(nanoseconds(0), reason::busy));
      // acquire on success and failure: as for the load; no release needed,
      // taking units publishes nothing. held + n <= lim < 2^32: no carry
      // into the limit's half.
      if (state_.compare_exchange_weak(w, w + n, std::memory_order_acquire, std::memory_order_acquire))
        return permit(this, n, decision::admit());
    }
  }

  void give_back(std::uint64_t n) noexcept {
    // relaxed: only the CAS below publishes.
    std::uint64_t w = state_.load(std::memory_order_relaxed);
    for (;;) {
      const std::uint64_t held = held_of(w);
      const std::uint64_t take = n < held ? n : held;  // more than held: a caller's bug, kept defined
      if (take == 0) return;
      // release on success: pairs with the acquire in acquire_with of the
      // next holder. relaxed on failure: we only retry.
      if (state_.compare_exchange_weak(w, w - take, std::memory_order_release, std::memory_order_relaxed)) return;
    }
  }

  detail::atomic<std::uint64_t> state_{0};  // {limit: 32 bits, held: 32 bits}; limit 0: misconfigured

  static_assert(std::atomic<std::uint64_t>::is_always_lock_free, "tollgate needs lock-free 64-bit atomics");
};

inline void permit::release() noexcept {
  if (owner_ != nullptr && n_ != 0) owner_->give_back(n_);
  owner_ = nullptr;
  n_ = 0;
}

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_CONCURRENCY_HPP
