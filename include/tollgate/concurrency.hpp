// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// concurrency.hpp: a lock-free limit on requests in flight, with a move-only
// RAII permit.
//
// Guarantee. The units held never exceed the limit in force when they were
// acquired and never go below zero. Shrinking the limit keeps existing permits
// valid; new ones are refused (reason::busy) until the units held are back
// below the new limit. n == 0 yields an empty, admitted permit; n > limit is
// `never`.
//
// Concurrency contract. All member functions are thread-safe and lock-free
// (one CAS loop to acquire, one fetch_sub to release). A permit must not
// outlive its limiter; a permit releases exactly once (on release() or
// destruction; moving transfers it). in_use/available may be stale on return.
// The state is one address-free atomic word (shareable between processes;
// permits themselves hold a pointer and are per-process).
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

class alignas(TOLLGATE_CACHELINE_SIZE) concurrency_limiter {
 public:
  explicit concurrency_limiter(std::uint64_t limit) {
    const errc e = validate(limit);
    if (e != errc::ok) detail::fail(e);
    limit_.store(limit, std::memory_order_relaxed);  // relaxed: construction precedes sharing
  }
  concurrency_limiter(std::uint64_t limit, errc& ec) noexcept {
    ec = validate(limit);
    if (ec == errc::ok) limit_.store(limit, std::memory_order_relaxed);  // relaxed: as above
  }
  concurrency_limiter(const concurrency_limiter&) = delete;
  concurrency_limiter& operator=(const concurrency_limiter&) = delete;

  static constexpr errc validate(std::uint64_t limit) noexcept {
    return limit == 0 ? errc::zero_count : errc::ok;
  }

  permit try_acquire(std::uint64_t n = 1) noexcept {
    if (n == 0) return permit(nullptr, 0, decision::admit());
    const std::uint64_t lim = limit_.load(std::memory_order_relaxed);  // relaxed: a lone value
    if (lim == 0) return permit(nullptr, 0, decision::refuse(reason::misconfigured));
    if (n > lim) return permit(nullptr, 0, decision::refuse(reason::exceeds_capacity));
    // acquire: pairs with the release fetch_sub of the permit whose units we
    // may now take, so whatever its holder did happens-before our use (the
    // usual semaphore contract).
    std::uint64_t c = held_.load(std::memory_order_acquire);
    for (;;) {
      // (c > lim after a shrink; written so that c + n cannot wrap)
      if (c > lim || n > lim - c) return permit(nullptr, 0, decision::wait(nanoseconds(0), reason::busy));
      // acquire on success and failure: as for the load; no release needed,
      // taking units publishes nothing.
      if (held_.compare_exchange_weak(c, c + n, std::memory_order_acquire, std::memory_order_acquire))
        return permit(this, n, decision::admit());
    }
  }

  // Returns units of a detached permit (see permit::detach).
  void release_detached(std::uint64_t n) noexcept { give_back(n); }

  std::uint64_t in_use() const noexcept { return held_.load(std::memory_order_relaxed); }  // relaxed: a snapshot
  std::uint64_t limit() const noexcept { return limit_.load(std::memory_order_relaxed); }   // relaxed: a lone value
  std::uint64_t available() const noexcept {
    const std::uint64_t l = limit(), u = in_use();
    return u >= l ? 0 : l - u;
  }
  [[nodiscard]] errc set_limit(std::uint64_t limit) noexcept {
    const errc e = validate(limit);
    if (e == errc::ok) limit_.store(limit, std::memory_order_relaxed);  // relaxed: a lone value
    return e;
  }

 private:
  friend class permit;
  // Never below zero: release_detached of more than is held (a misuse)
  // stops at zero instead of wrapping to a count that refuses for ever.
  void give_back(std::uint64_t n) noexcept {
    // relaxed load and failure order: only the value is needed to compute
    // the next one; the successful CAS carries the release.
    std::uint64_t c = held_.load(std::memory_order_relaxed);
    // release: pairs with the acquire in try_acquire of the next holder.
    while (!held_.compare_exchange_weak(c, c > n ? c - n : 0, std::memory_order_release, std::memory_order_relaxed)) {
    }
  }
  detail::atomic<std::uint64_t> held_{0};
  detail::atomic<std::uint64_t> limit_{0};  // 0: misconfigured
};

inline void permit::release() noexcept {
  if (owner_ != nullptr && n_ != 0) owner_->give_back(n_);
  owner_ = nullptr;
  n_ = 0;
}

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_CONCURRENCY_HPP
