// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// shared_region.hpp: one limiter in memory that several processes map.
//
// The library opens nothing and does no I/O: the caller makes the bytes (a
// MAP_SHARED mmap of shm_open, memfd_create or a file, made before fork() or
// mapped again in each process, at any address) and hands them here; the
// first caller constructs the object in place, every later one attaches.
//
// Layout: a 64-byte header, then the object at the next multiple of its
// alignment. The header holds a state word, the magic, the layout version,
// the sizes (region, header, object), the object's type key, the caller's
// fingerprint of the configuration, and a check word over all of them.
//
// Who constructs. The state word goes empty (0: the zeroed bytes of a fresh
// mapping) -> constructing (with the constructor's token) -> ready, by CAS,
// no lock: of two processes that open at once, exactly one wins the first
// CAS and builds; the other gets region_errc::constructing until the winner's
// release CAS makes it ready, then attaches. A constructor that dies between
// the two CASes leaves `constructing` with its token for good; the caller may
// pass a liveness check (token -> alive?, the library calls it and does no
// I/O of its own): when it says dead, the opener takes the region over with
// its own token and builds again from scratch. The check must not answer
// "dead" for a constructor that is only slow (use a pid with an incarnation
// number a reused pid cannot repeat): two builders writing the same bytes
// would tear them. Without a check, such a region stays refused with
// region_errc::constructing and the caller decides (a fresh region).
//
// Attaching checks everything before using anything, and a refusal changes
// no byte: another magic (or garbage), another layout version, a region of
// another size, another object type or size, another fingerprint, or a check
// word that does not match (a torn or scribbled header) each have their own
// region_errc. The object's type is told by its key (region_key.hpp): its
// shape and a name of the type with what changes its meaning (the
// primitive, its clock, its currency, its sub-windows); a type of your own
// is named by specialising region_key, else only its shape is checked.
//
// What may live in a region. The object must be standard-layout and
// trivially destructible (static_asserts below): no pointer, no virtual
// table, nothing a destructor must free (nobody destroys it; it lives as long
// as the mapping). The five primitives qualify: their state is plain
// lock-free atomics and integers written once before sharing, and each says
// so in its header (token_bucket, sliding_window, calendar_quota,
// concurrency_limiter, budget). What stays process-local beside a region:
// the clock (a type, not data: steady_clock reads the same CLOCK_MONOTONIC in
// every process on one host; region_clock reads a word in the region, for
// tests), permits (a permit points at its limiter through this process's
// address of it) and tickets (plain values a process keeps; a ticket names
// its issuer by this process's address of it, so another process refunding
// it gives back only where it maps the object at that same address).
//
// Processes killed at any instruction leave every word of these primitives
// consistent (no lock: token_bucket's writers take over a dead one, see its
// header); what a dead process held stays held: its concurrency permits are
// not given back and its budget reservations stay committed (kept as spent).
//
// Concurrency contract: open_region and attach_region are thread- and
// process-safe; the memory orders are on each atomic operation below.

#ifndef TOLLGATE_SHARED_REGION_HPP
#define TOLLGATE_SHARED_REGION_HPP

#include <tollgate/config.hpp>
#include <tollgate/budget.hpp>
#include <tollgate/calendar_quota.hpp>
#include <tollgate/clock.hpp>
#include <tollgate/concurrency.hpp>
#include <tollgate/region_key.hpp>
#include <tollgate/sliding_window.hpp>
#include <tollgate/token_bucket.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <new>
#include <type_traits>

TOLLGATE_BEGIN_NAMESPACE

enum class region_errc : unsigned char {
  ok = 0,
  null_bytes,      // no bytes given
  too_small,       // fewer bytes than region_size<T>()
  misaligned,      // the bytes do not start at a multiple of alignof(T) (nor 64)
  bad_token,       // open_region needs a nonzero token below 2^62
  constructing,    // another opener is building it (or died doing so, see above)
  bad_magic,       // not a tollgate region (or garbage)
  wrong_version,   // built by a library with another layout version
  wrong_size,      // built for another number of bytes
  wrong_type,      // built for another object type or size
  wrong_config,    // built with another fingerprint
  corrupt,         // the header's check word does not match: torn or scribbled
  taken_over,      // this opener was declared dead while building: nothing it built counts
};

constexpr const char* message(region_errc e) noexcept {
  switch (e) {
    case region_errc::ok: return "ok";
    case region_errc::null_bytes: return "no bytes given for the region";
    case region_errc::too_small: return "the region is smaller than its header and object";
    case region_errc::misaligned: return "the region's bytes are not aligned for its object";
    case region_errc::bad_token: return "the opener's token must be nonzero and below 2^62";
    case region_errc::constructing: return "the region is being constructed by another opener";
    case region_errc::bad_magic: return "not a tollgate region";
    case region_errc::wrong_version: return "the region has another layout version";
    case region_errc::wrong_size: return "the region was built for another size";
    case region_errc::wrong_type: return "the region holds another object type";
    case region_errc::wrong_config: return "the region was built with another configuration fingerprint";
    case region_errc::corrupt: return "the region's header is torn or corrupt";
    case region_errc::taken_over: return "this opener was taken over while constructing";
  }
  return "unknown region error";
}

// Bumped whenever the layout of the header or of a placeable object changes.
constexpr std::uint32_t region_layout_version = 1;

// Whether T may live in a region (see the header comment).
template <class T>
struct region_placeable
    : std::integral_constant<bool, std::is_standard_layout<T>::value && std::is_trivially_destructible<T>::value> {};

// Mixes configuration values into a fingerprint (FNV-1a over their 8 bytes
// each); any function of the configuration will do, as long as every process
// computes the same one.
constexpr std::uint64_t region_fingerprint(std::uint64_t h, std::uint64_t v) noexcept {
  for (int i = 0; i < 8; ++i) {
    h ^= (v >> (8 * i)) & 0xffu;
    h *= 1099511628211ULL;
  }
  return h;
}
template <class... Vs>
constexpr std::uint64_t region_fingerprint_of(Vs... vs) noexcept {
  std::uint64_t h = 14695981039346656037ULL;
  ((h = region_fingerprint(h, static_cast<std::uint64_t>(vs))), ...);
  return h;
}

namespace detail {
struct region_header {
  atomic<std::uint64_t> state;  // phase in the low two bits, the constructor's token above
  // Written by the constructor before its release CAS to ready, read only
  // after an acquire load that sees ready: no race.
  std::uint64_t magic;
  std::uint32_t version;
  std::uint32_t header_size;
  std::uint64_t size;
  std::uint64_t type;  // the object type's key: its shape and its name (region_key.hpp)
  std::uint64_t fingerprint;
  std::uint64_t object_size;
  std::uint64_t check;
};
static_assert(sizeof(region_header) == 64, "the region header is 64 bytes");
static_assert(std::is_standard_layout<region_header>::value, "the region header is standard-layout");
static_assert(std::atomic<std::uint64_t>::is_always_lock_free, "tollgate needs lock-free 64-bit atomics");

constexpr std::uint64_t region_magic = 0x31656e6f67677467ULL;  // "tggogne1"
constexpr std::uint64_t phase_empty = 0, phase_constructing = 1, phase_ready = 2, phase_mask = 3;

template <class T>
constexpr std::size_t region_offset() noexcept {
  return alignof(T) > sizeof(region_header) ? alignof(T) : sizeof(region_header);
}
template <class T>
constexpr std::uint64_t region_type_key() noexcept {
  // The type's shape (size, alignment, layout class) and its name.
  return region_fingerprint_of(sizeof(T), alignof(T), std::is_standard_layout<T>::value, region_key<T>::value);
}
inline std::uint64_t region_check(const region_header& h) noexcept {
  return region_fingerprint_of(h.magic, h.version, h.header_size, h.size, h.type, h.fingerprint, h.object_size);
}
}  // namespace detail

// The bytes a region holding a T needs.
template <class T>
constexpr std::size_t region_size() noexcept {
  return detail::region_offset<T>() + sizeof(T);
}

template <class T>
struct region_ref {
  T* object = nullptr;
  region_errc error = region_errc::ok;
  bool constructed = false;  // this call built it
  explicit operator bool() const noexcept { return object != nullptr; }
};

struct region_options {
  std::uint64_t fingerprint = 0;  // of the configuration (region_fingerprint_of)
  std::uint64_t token = 0;        // this opener's identity, nonzero, below 2^62
  // Optional: is the opener with this token alive? Called only for a region
  // left `constructing`; "false" lets this opener take it over.
  bool (*alive)(std::uint64_t token, void* context) = nullptr;
  void* context = nullptr;
};

namespace detail {
template <class T>
region_errc region_validate(const void* bytes, std::size_t size, std::uint64_t fingerprint) noexcept {
  const region_header& h = *static_cast<const region_header*>(bytes);
  if (h.magic != region_magic) return region_errc::bad_magic;
  if (h.check != region_check(h)) return region_errc::corrupt;
  if (h.version != region_layout_version || h.header_size != sizeof(region_header))
    return region_errc::wrong_version;
  if (h.size != size) return region_errc::wrong_size;
  if (h.type != region_type_key<T>() || h.object_size != sizeof(T)) return region_errc::wrong_type;
  if (h.fingerprint != fingerprint) return region_errc::wrong_config;
  return region_errc::ok;
}
template <class T>
region_errc region_shape(const void* bytes, std::size_t size) noexcept {
  if (bytes == nullptr) return region_errc::null_bytes;
  if (size < region_size<T>()) return region_errc::too_small;
  const std::size_t a = alignof(T) > alignof(region_header) ? alignof(T) : alignof(region_header);
  if (reinterpret_cast<std::uintptr_t>(bytes) % a != 0) return region_errc::misaligned;
  return region_errc::ok;
}
}  // namespace detail

// Attaches to a region another process built; never constructs, never
// writes. region_errc::constructing while it is being built.
template <class T>
region_ref<T> attach_region(void* bytes, std::size_t size, std::uint64_t fingerprint) noexcept {
  static_assert(region_placeable<T>::value, "T must be standard-layout and trivially destructible");
  region_ref<T> r;
  r.error = detail::region_shape<T>(bytes, size);
  if (r.error != region_errc::ok) return r;
  auto& h = *static_cast<detail::region_header*>(bytes);
  // acquire: pairs with the constructor's release CAS to ready, so the
  // header fields and the object built before it are visible.
  const std::uint64_t st = h.state.load(std::memory_order_acquire);
  const std::uint64_t phase = st & detail::phase_mask;
  if (phase == detail::phase_empty || phase == detail::phase_constructing) {
    r.error = region_errc::constructing;
    return r;
  }
  if (phase != detail::phase_ready) {
    r.error = region_errc::bad_magic;  // no state we ever write
    return r;
  }
  r.error = detail::region_validate<T>(bytes, size, fingerprint);
  if (r.error == region_errc::ok)
    r.object = std::launder(reinterpret_cast<T*>(static_cast<unsigned char*>(bytes) + detail::region_offset<T>()));
  return r;
}

// Constructs the object with make(void* where) (a placement new of T) if
// the region is empty, else attaches (see the header for a region left
// `constructing`). `make` runs at most once per call, only in the opener that
// won the region.
template <class T, class Make>
region_ref<T> open_region(void* bytes, std::size_t size, const region_options& o, Make&& make) noexcept {
  static_assert(region_placeable<T>::value, "T must be standard-layout and trivially destructible");
  region_ref<T> r;
  r.error = detail::region_shape<T>(bytes, size);
  if (r.error != region_errc::ok) return r;
  if (o.token == 0 || o.token >= (std::uint64_t{1} << 62)) {
    r.error = region_errc::bad_token;
    return r;
  }
  auto& h = *static_cast<detail::region_header*>(bytes);
  const std::uint64_t mine = (o.token << 2) | detail::phase_constructing;
  // acquire (load and both CAS failures): as in attach_region.
  std::uint64_t st = h.state.load(std::memory_order_acquire);
  bool won = false;
  if (st == detail::phase_empty) {
    // acquire on success: nothing to see yet, but keeps the construction
    // after the claim; the release that publishes it is the CAS to ready.
    won = h.state.compare_exchange_strong(st, mine, std::memory_order_acquire, std::memory_order_acquire);
  }
  if (!won && (st & detail::phase_mask) == detail::phase_constructing && o.alive != nullptr &&
      !o.alive(st >> 2, o.context)) {
    // The builder is dead: take over (acquire: as above).
    won = h.state.compare_exchange_strong(st, mine, std::memory_order_acquire, std::memory_order_acquire);
  }
  if (!won) return attach_region<T>(bytes, size, o.fingerprint);

  unsigned char* at = static_cast<unsigned char*>(bytes) + detail::region_offset<T>();
  make(static_cast<void*>(at));
  h.magic = detail::region_magic;
  h.version = region_layout_version;
  h.header_size = sizeof(detail::region_header);
  h.size = size;
  h.type = detail::region_type_key<T>();
  h.fingerprint = o.fingerprint;
  h.object_size = sizeof(T);
  h.check = detail::region_check(h);
  std::uint64_t expect = mine;
  // release: publishes the header and the object to every acquire load that
  // sees ready. relaxed on failure: we were taken over; nothing is read.
  if (!h.state.compare_exchange_strong(expect, detail::phase_ready, std::memory_order_release,
                                       std::memory_order_relaxed)) {
    r.error = region_errc::taken_over;
    return r;
  }
  r.object = std::launder(reinterpret_cast<T*>(at));
  r.constructed = true;
  return r;
}

// A manual clock whose time is a word in a region (for tests and
// simulations across processes): each process binds it to its own address
// of the word before use. The pointer is per process; the time is shared.
template <class Tag>
struct basic_region_clock {
  static constexpr bool is_steady = false;
  static void bind(std::atomic<std::int64_t>* word) noexcept { word_ = word; }
  // relaxed: the value is the only data the clock publishes, as manual_clock.
  static nanoseconds now() noexcept { return nanoseconds(word_->load(std::memory_order_relaxed)); }
  // relaxed RMW: advances from several processes must not lose each other's.
  static nanoseconds advance(nanoseconds d) noexcept {
    return nanoseconds(word_->fetch_add(d.count(), std::memory_order_relaxed) + d.count());
  }

 private:
  static inline std::atomic<std::int64_t>* word_ = nullptr;
};
struct region_clock_tag {};
using region_clock = basic_region_clock<region_clock_tag>;

// The primitives that may live in a region.
static_assert(region_placeable<token_bucket<steady_clock>>::value, "token_bucket is placeable");
static_assert(region_placeable<sliding_window<steady_clock>>::value, "sliding_window is placeable");
static_assert(region_placeable<calendar_quota<system_clock>>::value, "calendar_quota is placeable");
static_assert(region_placeable<concurrency_limiter>::value, "concurrency_limiter is placeable");
static_assert(region_placeable<budget<usd_tag>>::value, "budget is placeable");

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_SHARED_REGION_HPP
