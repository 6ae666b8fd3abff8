// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// detail/atomic.hpp: the atomic type of every lock-free structure. Nothing
// here is public API.
//
// Normally detail::atomic<T> is std::atomic<T> itself: no cost, and the
// structures stay standard-layout atomics of lock-free types (address-free,
// shareable between processes).
//
// With TOLLGATE_INTERLEAVING_CHECKER defined (the test-only build of the
// interleaving checker, never a user's build) it is a wrapper whose every
// operation first calls interleaving_hook::step, so a scheduler can switch
// logical threads before each atomic step and explore the interleavings of
// an operation one step at a time. The wrapper keeps the operations, their
// memory orders and their results; only the hook is added.
#ifndef TOLLGATE_DETAIL_ATOMIC_HPP
#define TOLLGATE_DETAIL_ATOMIC_HPP

#include <tollgate/config.hpp>

#include <atomic>

TOLLGATE_BEGIN_NAMESPACE
namespace detail {

#if defined(TOLLGATE_INTERLEAVING_CHECKER)

enum class atomic_op { load, store, exchange, compare_exchange, fetch_add, fetch_sub, fetch_or, fetch_and };

struct interleaving_hook {
  using step_fn = void (*)(const void* address, atomic_op op) noexcept;
  // Set once by the checker before it starts any thread (thread creation
  // orders the write before every read); null means no hook.
  static inline step_fn step = nullptr;
  static void before(const void* address, atomic_op op) noexcept {
    if (step != nullptr) step(address, op);
  }
};

template <class T>
class atomic {
 public:
  static constexpr bool is_always_lock_free = std::atomic<T>::is_always_lock_free;

  constexpr atomic() noexcept : a_(T{}) {}
  constexpr atomic(T v) noexcept : a_(v) {}  // NOLINT: implicit, as std::atomic's
  atomic(const atomic&) = delete;
  atomic& operator=(const atomic&) = delete;

  // Each operation is the std::atomic one with the same orders, after the
  // hook; the comments on the callers' operations name the pairings. (The
  // fetch_ members exist for integral T only: instantiated on use.)
  T load(std::memory_order o = std::memory_order_seq_cst) const noexcept {
    interleaving_hook::before(this, atomic_op::load);
    return a_.load(o);
  }
  void store(T v, std::memory_order o = std::memory_order_seq_cst) noexcept {
    interleaving_hook::before(this, atomic_op::store);
    a_.store(v, o);
  }
  T exchange(T v, std::memory_order o = std::memory_order_seq_cst) noexcept {
    interleaving_hook::before(this, atomic_op::exchange);
    return a_.exchange(v, o);
  }
  bool compare_exchange_weak(T& expected, T desired, std::memory_order success, std::memory_order failure) noexcept {
    interleaving_hook::before(this, atomic_op::compare_exchange);
    return a_.compare_exchange_weak(expected, desired, success, failure);
  }
  bool compare_exchange_weak(T& expected, T desired, std::memory_order o = std::memory_order_seq_cst) noexcept {
    interleaving_hook::before(this, atomic_op::compare_exchange);
    return a_.compare_exchange_weak(expected, desired, o);
  }
  bool compare_exchange_strong(T& expected, T desired, std::memory_order success, std::memory_order failure) noexcept {
    interleaving_hook::before(this, atomic_op::compare_exchange);
    return a_.compare_exchange_strong(expected, desired, success, failure);
  }
  bool compare_exchange_strong(T& expected, T desired, std::memory_order o = std::memory_order_seq_cst) noexcept {
    interleaving_hook::before(this, atomic_op::compare_exchange);
    return a_.compare_exchange_strong(expected, desired, o);
  }
  T fetch_add(T v, std::memory_order o = std::memory_order_seq_cst) noexcept {
    interleaving_hook::before(this, atomic_op::fetch_add);
    return a_.fetch_add(v, o);
  }
  T fetch_sub(T v, std::memory_order o = std::memory_order_seq_cst) noexcept {
    interleaving_hook::before(this, atomic_op::fetch_sub);
    return a_.fetch_sub(v, o);
  }
  T fetch_or(T v, std::memory_order o = std::memory_order_seq_cst) noexcept {
    interleaving_hook::before(this, atomic_op::fetch_or);
    return a_.fetch_or(v, o);
  }
  T fetch_and(T v, std::memory_order o = std::memory_order_seq_cst) noexcept {
    interleaving_hook::before(this, atomic_op::fetch_and);
    return a_.fetch_and(v, o);
  }

 private:
  std::atomic<T> a_;
};

#else

template <class T>
using atomic = std::atomic<T>;

#endif

}  // namespace detail
TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_DETAIL_ATOMIC_HPP
