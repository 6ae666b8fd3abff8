// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// keyed_permits.hpp: a concurrency limit per key (requests in flight per
// end user, tenant or API key) in a fixed-capacity table that never
// allocates after its construction and never forgets a held permit.
//
// Table. As keyed_buckets (keyed_buckets.hpp: the keyed hash under the
// user's seed, linear probing over a window of `window` entries, at most 64
// limit classes chosen by the call that claims a key's entry), with
// entries of 72 bytes (memory: 72 x capacity bytes plus the class list),
// allocated once by the constructor.
//
// Guarantee. For every key, right after any admission the units held on
// its entry are at most its class's limit, and the held units never go
// below zero. Lossless eviction: a held permit pins its entry (the pin
// count of the entry's control word, keyed/claim.hpp), and an entry is
// reclaimed for another key only with no pin, so only when nothing is held
// on it, which is the state a fresh entry has. When every entry of a new
// key's window holds permits, the key is refused with
// keyed_status::table_full (reason::busy, no wait: a release frees one),
// and no held permit is touched; a flood of new keys therefore changes no
// live entry. erase() takes the key out at once (its next acquisition
// claims a fresh entry: an explicit reset of its limit); its entry is
// reused only after the permits held on it are released, into it.
//
// Collisions. Two keys with one 64-bit hash share one entry and its limit
// (the conservative side); keyed_buckets.hpp states the probabilities and
// the window's refusal rates, which hold here with "live" read as "holds a
// permit".
//
// Decisions. n == 0 is admitted and holds nothing (and claims nothing).
// n over the key's class limit is `never` (reason::exceeds_capacity), for
// a new key without claiming an entry. held + n over the limit is refused
// `later` with reason::busy and no wait (concurrency_limiter's rule). So is
// a key already holding max_held (16383) permit objects at once, however
// few units each holds (each pins its entry once). A bad class index is
// keyed_status::bad_class. Limits are 1 .. 2^32 - 1.
//
// Restart. snapshot() / restore() keep what each key held across a
// restart: the server may still be running the stopped process's
// requests, so restore() gives those units back as permits to hold for a
// stated time (the longest a request runs, less the downtime) and the
// caller releases them then; a hold of zero releases everything at the
// restart. keyed/permit_snapshot.hpp states it in full.
//
// Concurrency contract. Every member function is thread-safe and
// lock-free except as keyed/claim.hpp states for claims of one new key
// racing each other (obstruction-free) and for a pin that finds 32767 pins
// on its entry (it waits for one of the calls in progress: 16384 of them
// at once on one key). Acquiring on a live key is a pin CAS and a CAS on
// the held count; releasing is a fetch_sub on it and an unpin. A permit
// must not outlive its table; it releases exactly once (release() or its
// destructor; moving transfers it). in_use and contains may be stale the
// moment they return.
#ifndef TOLLGATE_KEYED_PERMITS_HPP
#define TOLLGATE_KEYED_PERMITS_HPP

#include <tollgate/config.hpp>
#include <tollgate/decision.hpp>
#include <tollgate/detail/atomic.hpp>
#include <tollgate/error.hpp>
#include <tollgate/keyed/claim.hpp>
#include <tollgate/keyed/key.hpp>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

TOLLGATE_BEGIN_NAMESPACE

enum class account_restore_errc : unsigned char;  // account/snapshot.hpp
struct keyed_permit_holds;                         // keyed/permit_snapshot.hpp
namespace detail {
struct keyed_permit_state {
  atomic<std::uint64_t> held{0};  // units held on the entry
};
using keyed_permit_slots = keyed_slots<keyed_permit_state>;
}  // namespace detail

// Holds n units of one key's limit in a keyed_permits table until released
// or destroyed.
class keyed_permit {
 public:
  keyed_permit() noexcept = default;
  keyed_permit(const keyed_permit&) = delete;
  keyed_permit& operator=(const keyed_permit&) = delete;
  keyed_permit(keyed_permit&& o) noexcept
      : owner_(std::exchange(o.owner_, nullptr)), slot_(o.slot_), n_(std::exchange(o.n_, 0)), r_(o.r_) {}
  keyed_permit& operator=(keyed_permit&& o) noexcept {
    if (this != &o) {
      release();
      owner_ = std::exchange(o.owner_, nullptr);
      slot_ = o.slot_;
      n_ = std::exchange(o.n_, 0);
      r_ = o.r_;
    }
    return *this;
  }
  ~keyed_permit() { release(); }

  // The answer that produced this permit.
  const keyed_result& result() const noexcept { return r_; }
  keyed_status status() const noexcept { return r_.status(); }
  explicit operator bool() const noexcept { return r_.admitted(); }
  std::uint64_t count() const noexcept { return n_; }
  // Releases now; later calls and the destructor do nothing.
  void release() noexcept {
    if (owner_ == nullptr) return;
    detail::keyed_permit_slots::entry& e = (*owner_)[slot_];
    // relaxed: the held count's changes are ordered among themselves by
    // their atomicity; the unpin below (release) carries this one to the
    // next claimer of the entry (its acquire load of the control word).
    (void)e.s.held.fetch_sub(n_, std::memory_order_relaxed);
    detail::keyed_permit_slots::unpin(e);
    owner_ = nullptr;
    n_ = 0;
  }

 private:
  template <class>
  friend class keyed_permits;
  keyed_permit(detail::keyed_permit_slots* o, std::size_t slot, std::uint64_t n, keyed_result r) noexcept
      : owner_(o), slot_(slot), n_(n), r_(r) {}
  detail::keyed_permit_slots* owner_ = nullptr;
  std::size_t slot_ = 0;
  std::uint64_t n_ = 0;
  keyed_result r_{decision::refuse(reason::misconfigured), keyed_status::bad_class};
};

template <class Hash = sip_key_hash>
class keyed_permits {
  using S = detail::keyed_permit_slots;

 public:
  static constexpr std::size_t max_classes = 64;
  static constexpr std::size_t default_window = 16;
  static constexpr std::uint64_t max_limit = 0xffffffffULL;
  static constexpr std::uint64_t max_held = S::max_held;

  // Throws config_error (or aborts without exceptions) on a bad
  // configuration: capacity, window or limit list empty, or a limit of 0
  // (errc::zero_count); more than 64 classes, a capacity over 2^40 or a
  // limit over 2^32 - 1 (errc::too_large). A window larger than the
  // capacity is the capacity.
  keyed_permits(std::size_t capacity, const std::vector<std::uint64_t>& limits, hash_seed seed,
                std::size_t window = default_window)
      : hash_(seed) {
    const errc e = init(capacity, limits, window);
    if (e != errc::ok) detail::fail(e);
  }
  // Never throws: on a bad configuration sets `ec` and builds a table that
  // refuses everything with keyed_status::bad_class.
  keyed_permits(std::size_t capacity, const std::vector<std::uint64_t>& limits, hash_seed seed, std::size_t window,
                errc& ec) noexcept
      : hash_(seed) {
    ec = init(capacity, limits, window);
  }
  keyed_permits(const keyed_permits&) = delete;
  keyed_permits& operator=(const keyed_permits&) = delete;

  // Holds n units of the key's limit (claiming an entry with class `cls` if
  // the key has none).
  keyed_permit try_acquire(std::uint64_t id, std::size_t cls, std::uint64_t n = 1) noexcept {
    return acquire_hash(hash_(id), cls, n);
  }
  keyed_permit try_acquire(std::string_view key, std::size_t cls, std::uint64_t n = 1) noexcept {
    return acquire_hash(hash_(key), cls, n);
  }

  // Takes the key out (see the header). Returns whether it had an entry.
  bool erase(std::uint64_t id) noexcept { return slots_.erase(hash_(id)); }
  bool erase(std::string_view key) noexcept { return slots_.erase(hash_(key)); }
  bool contains(std::uint64_t id) const noexcept { return peek(hash_(id)) != nullptr; }
  bool contains(std::string_view key) const noexcept { return peek(hash_(key)) != nullptr; }
  // Units the key holds (peek).
  std::uint64_t in_use(std::uint64_t id) const noexcept { return held(hash_(id)); }
  std::uint64_t in_use(std::string_view key) const noexcept { return held(hash_(key)); }

  // The units held per key as bytes, and back as permits to keep for a
  // stated time (keyed/permit_snapshot.hpp states what a restore means for
  // the holders of a stopped process, the format and every refusal).
  // snapshot() runs beside any traffic; restore() only into a table that
  // has taken none, before sharing it. Pass system_clock::now() as `wall`;
  // `hold` is the longest a request may run at the server.
  std::string snapshot(nanoseconds wall) const;
  account_restore_errc restore(std::string_view bytes, nanoseconds wall, nanoseconds hold, keyed_permit_holds& out);

  std::size_t capacity() const noexcept { return slots_.capacity(); }
  std::size_t window() const noexcept { return slots_.window(); }
  std::size_t classes() const noexcept { return limits_.size(); }
  // Class `cls`'s limit; zero for a bad class index.
  std::uint64_t limit(std::size_t cls) const noexcept { return cls < limits_.size() ? limits_[cls] : 0; }
  static constexpr std::size_t bytes_per_entry() noexcept { return S::bytes_per_entry(); }

 private:
  errc init(std::size_t capacity, const std::vector<std::uint64_t>& limits, std::size_t window) {
    if (capacity == 0 || window == 0 || limits.empty()) return errc::zero_count;
    if (limits.size() > max_classes || capacity > (std::size_t{1} << 40)) return errc::too_large;
    for (const std::uint64_t l : limits) {
      if (l == 0) return errc::zero_count;
      if (l > max_limit) return errc::too_large;
    }
    slots_.init(capacity, window);
    limits_ = limits;
    return errc::ok;
  }

  static keyed_permit refusal(decision d, keyed_status s) noexcept { return keyed_permit(nullptr, 0, 0, {d, s}); }

  keyed_permit acquire_hash(std::uint64_t h, std::size_t cls, std::uint64_t n) noexcept {
    if (cls >= limits_.size()) return refusal(decision::refuse(reason::misconfigured), keyed_status::bad_class);
    if (n == 0) return keyed_permit(nullptr, 0, 0, {decision::admit(), keyed_status::admitted});
    const decision busy = decision::wait(nanoseconds(0), reason::busy);
    std::size_t slot = 0, c = cls;
    std::uint64_t pins = 0;
    for (;;) {
      if (slots_.pin(h, slot, c, &pins)) break;
      if (n > limits_[cls]) return refusal(decision::refuse(reason::exceeds_capacity), keyed_status::limited);
      // Reusable: no pin (checked by the claim), so nothing held; the held
      // count says so too. relaxed: the claim's acquire load of the control
      // word follows the last release's unpin (release), which follows its
      // fetch_sub.
      auto reusable = [](typename S::entry& e, std::size_t) { return e.s.held.load(std::memory_order_relaxed) == 0; };
      // relaxed: published by the claim's publish CAS (a release).
      auto start = [](typename S::entry& e) { e.s.held.store(0, std::memory_order_relaxed); };
      const detail::claim_outcome o = slots_.claim(h, cls, 0, slot, reusable, start);
      if (o == detail::claim_outcome::retry) continue;
      if (o == detail::claim_outcome::full) return refusal(busy, keyed_status::table_full);
      c = cls;
      pins = 0;
      break;
    }
    typename S::entry& e = slots_[slot];
    if (n > limits_[c] || pins >= max_held) {
      S::unpin(e);
      return refusal(n > limits_[c] ? decision::refuse(reason::exceeds_capacity) : busy, keyed_status::limited);
    }
    // relaxed: as in keyed_permit::release(); our pin keeps the entry ours.
    std::uint64_t w = e.s.held.load(std::memory_order_relaxed);
    for (;;) {
      if (w + n > limits_[c]) {  // w <= limit <= 2^32 - 1: no overflow
        S::unpin(e);
        return refusal(busy, keyed_status::limited);
      }
      // relaxed / relaxed: as the load above.
      if (e.s.held.compare_exchange_weak(w, w + n, std::memory_order_relaxed, std::memory_order_relaxed)) break;
    }
    // The pin stays: the permit's release takes it.
    return keyed_permit(&slots_, slot, n, {decision::admit(), keyed_status::admitted});
  }

  const typename S::entry* peek(std::uint64_t h) const noexcept {
    std::size_t c = 0;
    return slots_.peek(h, c);
  }
  std::uint64_t held(std::uint64_t h) const noexcept {
    const typename S::entry* e = peek(h);
    return e == nullptr ? 0 : e->s.held.load(std::memory_order_relaxed);  // relaxed: a peek
  }

  static constexpr std::uint64_t snapshot_version = 2;  // 2: SipHash-1-3 keys (1: SipHash-2-4)
  std::uint64_t fingerprint() const noexcept;  // keyed/permit_snapshot.hpp

  Hash hash_;
  S slots_;
  std::vector<std::uint64_t> limits_;
};

TOLLGATE_END_NAMESPACE

#include <tollgate/keyed/permit_snapshot.hpp>

#endif  // TOLLGATE_KEYED_PERMITS_HPP
