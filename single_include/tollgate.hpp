// tollgate — rate limits and budgets for LLM APIs. MIT licence.
//
// GENERATED FILE: do not edit. Built by tools/amalgamate.py from include/;
// edit the headers there and regenerate.
// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// tollgate.hpp: the whole library.
#ifndef TOLLGATE_TOLLGATE_HPP
#define TOLLGATE_TOLLGATE_HPP

// #include <tollgate/config.hpp>  (inlined below)
// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// config.hpp: version, language check, user-overridable configuration macros
// and the versioned namespace. Every other header includes this one first.
#ifndef TOLLGATE_CONFIG_HPP
#define TOLLGATE_CONFIG_HPP

// The one place the version lives; CMake, Meson and the packaging files read
// or compare against these lines.
#define TOLLGATE_VERSION_MAJOR 0
#define TOLLGATE_VERSION_MINOR 5
#define TOLLGATE_VERSION_PATCH 0
#define TOLLGATE_VERSION \
  (TOLLGATE_VERSION_MAJOR * 10000 + TOLLGATE_VERSION_MINOR * 100 + TOLLGATE_VERSION_PATCH)

#if defined(_MSVC_LANG) && _MSVC_LANG > __cplusplus
#define TOLLGATE_CPLUSPLUS _MSVC_LANG
#else
#define TOLLGATE_CPLUSPLUS __cplusplus
#endif
#if TOLLGATE_CPLUSPLUS < 201703L
#error "tollgate needs C++17 or later"
#endif

// Users may put their configuration in <tollgate/tollgate.tweak.hpp> instead
// of passing -D flags to every translation unit.
#if defined(__has_include)
#if __has_include(<tollgate/tollgate.tweak.hpp>)
#include <tollgate/tollgate.tweak.hpp>
#endif
#endif

// Exceptions: detected from the compiler unless the user decides. Without them
// constructors that would throw abort with a message, and every constructor
// has an overload that reports through an error code instead.
#ifndef TOLLGATE_NO_EXCEPTIONS
#if defined(__cpp_exceptions) || defined(__EXCEPTIONS) || defined(_CPPUNWIND)
#define TOLLGATE_NO_EXCEPTIONS 0
#else
#define TOLLGATE_NO_EXCEPTIONS 1
#endif
#endif

// Limiter state is aligned to this so two hot limiters never share a line.
// 128 on x86-64 and AArch64, where the adjacent-line prefetcher pulls pairs
// of 64-byte lines; std::hardware_destructive_interference_size is not used
// because g++ warns about it in headers and clang with libstdc++ lacks it.
#ifndef TOLLGATE_CACHELINE_SIZE
#if defined(__x86_64__) || defined(_M_X64) || defined(__aarch64__) || defined(_M_ARM64)
#define TOLLGATE_CACHELINE_SIZE 128
#else
#define TOLLGATE_CACHELINE_SIZE 64
#endif
#endif

// Inline versioned namespace: two major versions can meet in one program
// without violating the one-definition rule.
#define TOLLGATE_ABI_NAMESPACE v0
#define TOLLGATE_BEGIN_NAMESPACE \
  namespace tollgate {           \
  inline namespace TOLLGATE_ABI_NAMESPACE {
#define TOLLGATE_END_NAMESPACE \
  }                            \
  }

#endif  // TOLLGATE_CONFIG_HPP
// #include <tollgate/error.hpp>  (inlined below)
// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// error.hpp: the error codes of bad configurations, and the exception that
// carries them where exceptions are enabled.
#ifndef TOLLGATE_ERROR_HPP
#define TOLLGATE_ERROR_HPP

// #include <tollgate/config.hpp>  (already above)

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#if !TOLLGATE_NO_EXCEPTIONS
#include <stdexcept>
#include <string>
#endif

TOLLGATE_BEGIN_NAMESPACE

// Why a configuration was refused. `ok` is zero so `if (ec)` reads naturally.
enum class errc : unsigned char {
  ok = 0,
  zero_count,         // a rate of 0 per period, or a limit of 0
  zero_period,        // a period or window of zero or negative length
  zero_burst,         // a bucket that could never hold one unit
  zero_slots,         // a window split into no sub-windows
  too_large,          // a value beyond what the state word can hold
  horizon_too_short,  // the configuration overflows before ten years of uptime
  rate_too_fine,      // the emission interval cannot be represented within 0.1 %
  window_too_short,   // a sliding window's sub-windows are shorter than its 10-year slot counter allows
  not_shareable,      // a feature whose state cannot live in a shared region (shared_account.hpp)
};

// A short, stable English description of `e`.
constexpr const char* message(errc e) noexcept {
  switch (e) {
    case errc::ok: return "ok";
    case errc::zero_count: return "count or limit must be at least 1";
    case errc::zero_period: return "period or window must be a positive duration";
    case errc::zero_burst: return "burst must be at least 1";
    case errc::zero_slots: return "a window needs at least 1 sub-window";
    case errc::too_large: return "value too large for the limiter's state";
    case errc::horizon_too_short:
      return "configuration would overflow before 10 years of uptime";
    case errc::rate_too_fine:
      return "rate too high: its emission interval cannot be represented within 0.1%";
    case errc::window_too_short:
      return "window too short for its sub-window count: each sub-window must be at least 287015 ns "
             "(10 years of uptime in 2^40 slots), so with the default 15 sub-windows the shortest window "
             "is 4305211 ns, about 4.3 ms (sliding_window::min_window; fewer sub-windows allow shorter)";
    case errc::not_shareable:
      return "a shared account cannot run server_model::learn, adaptive_concurrency or trust_rate_limit_headers";
  }
  return "unknown tollgate error";
}

// For an error about one number: the value refused and the largest the
// configuration accepts in its place (both zero when the error has none).
struct error_values {
  std::uint64_t refused = 0;
  std::uint64_t largest_accepted = 0;
  constexpr bool known() const noexcept { return refused != 0 || largest_accepted != 0; }
};

#if !TOLLGATE_NO_EXCEPTIONS
// Thrown by constructors given a configuration they cannot honour exactly.
class config_error : public std::invalid_argument {
 public:
  explicit config_error(errc e) : std::invalid_argument(message(e)), code_(e) {}
  // what() then ends with both numbers.
  config_error(errc e, error_values v)
      : std::invalid_argument(std::string(message(e)) + " (refused " + std::to_string(v.refused) +
                              ", largest accepted " + std::to_string(v.largest_accepted) + ")"),
        code_(e),
        values_(v) {}
  errc code() const noexcept { return code_; }
  const error_values& values() const noexcept { return values_; }

 private:
  errc code_;
  error_values values_;
};
#endif

namespace detail {
// Throws config_error, or without exceptions prints the reason and aborts:
// an invalid limiter must never run silently.
[[noreturn]] inline void fail(errc e) {
#if !TOLLGATE_NO_EXCEPTIONS
  throw config_error(e);
#else
  std::fprintf(stderr, "tollgate: %s\n", message(e));
  std::abort();
#endif
}
// The same with the numbers, when they are known.
[[noreturn]] inline void fail(errc e, error_values v) {
  if (!v.known()) fail(e);
#if !TOLLGATE_NO_EXCEPTIONS
  throw config_error(e, v);
#else
  std::fprintf(stderr, "tollgate: %s (refused %llu, largest accepted %llu)\n", message(e),
               static_cast<unsigned long long>(v.refused), static_cast<unsigned long long>(v.largest_accepted));
  std::abort();
#endif
}
}  // namespace detail

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_ERROR_HPP
// #include <tollgate/clock.hpp>  (inlined below)
// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// clock.hpp: time is std::chrono::nanoseconds, a signed 64-bit count since an
// origin that depends on the clock. A clock is a type with a static
// `now() noexcept -> std::chrono::nanoseconds`, so limiters take it as a
// template parameter and their state stays plain data.
#ifndef TOLLGATE_CLOCK_HPP
#define TOLLGATE_CLOCK_HPP

// #include <tollgate/config.hpp>  (already above)

#include <atomic>
#include <chrono>
#include <cstdint>
#include <type_traits>
#if defined(__unix__) || defined(__APPLE__)
#include <time.h>
#endif

TOLLGATE_BEGIN_NAMESPACE

using nanoseconds = std::chrono::nanoseconds;

// std::chrono::steady_clock in nanoseconds (on Linux: CLOCK_MONOTONIC through
// the vDSO, about 20 ns a read).
struct steady_clock {
  static constexpr bool is_steady = true;
  static nanoseconds now() noexcept {
    return std::chrono::duration_cast<nanoseconds>(std::chrono::steady_clock::now().time_since_epoch());
  }
};

// A cheaper monotonic clock with a coarse resolution: CLOCK_MONOTONIC_COARSE
// on Linux, which advances once per kernel tick (1 to 4 ms; `resolution()`
// tells). It shares CLOCK_MONOTONIC's origin, so it can be mixed with
// steady_clock, but it lags it by up to one tick: limiters treat such a
// reading as a slightly stale one (never more permissive). Elsewhere it is
// steady_clock.
struct coarse_clock {
  static constexpr bool is_steady = true;
  static nanoseconds now() noexcept {
#if defined(__linux__) && defined(CLOCK_MONOTONIC_COARSE)
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return nanoseconds(static_cast<std::int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec);
#else
    return steady_clock::now();
#endif
  }
  // How far apart two distinct readings can be.
  static nanoseconds resolution() noexcept {
#if defined(__linux__) && defined(CLOCK_MONOTONIC_COARSE)
    timespec ts;
    if (clock_getres(CLOCK_MONOTONIC_COARSE, &ts) == 0)
      return nanoseconds(static_cast<std::int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec);
#endif
    return nanoseconds(1);
  }
};

// Wall-clock time in nanoseconds since 1970-01-01T00:00:00Z, for limits that
// reset at a calendar boundary (calendar_quota). Not monotonic.
struct system_clock {
  static constexpr bool is_steady = false;
  static constexpr bool reads_unix_time = true;  // a calendar day needs no mapping
  static nanoseconds now() noexcept {
    return std::chrono::duration_cast<nanoseconds>(std::chrono::system_clock::now().time_since_epoch());
  }
};

// A clock that moves only when told to: for tests and simulations. Each Tag
// type is an independent clock, shared by every limiter that names it. It is
// thread-safe; `set` may move time backwards, which limiters must survive.
template <class Tag>
struct basic_manual_clock {
  static constexpr bool is_steady = false;
  // Tests and simulations set Unix times: a calendar day reads them as such.
  static constexpr bool reads_unix_time = true;
  // relaxed: the value is the only data the clock publishes; a reader that
  // needs ordering with other memory gets it from its own synchronisation.
  static nanoseconds now() noexcept { return nanoseconds(value_.load(std::memory_order_relaxed)); }
  static void set(nanoseconds t) noexcept { value_.store(t.count(), std::memory_order_relaxed); }
  // relaxed RMW: concurrent advances must not lose each other's time, and no
  // other memory rides on the value.
  static nanoseconds advance(nanoseconds d) noexcept {
    return nanoseconds(value_.fetch_add(d.count(), std::memory_order_relaxed) + d.count());
  }

 private:
  static inline std::atomic<std::int64_t> value_{0};
};

namespace detail {
// Whether Clock's readings are Unix time (it says so by reads_unix_time).
template <class C, class = void>
struct reads_unix_time : std::false_type {};
template <class C>
struct reads_unix_time<C, std::void_t<decltype(C::reads_unix_time)>> : std::bool_constant<C::reads_unix_time> {};
}  // namespace detail

struct manual_clock_tag {};
using manual_clock = basic_manual_clock<manual_clock_tag>;

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_CLOCK_HPP
// #include <tollgate/rate.hpp>  (inlined below)
// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// rate.hpp: a count per period, the input of rate limiters.
#ifndef TOLLGATE_RATE_HPP
#define TOLLGATE_RATE_HPP

// #include <tollgate/config.hpp>  (already above)
// #include <tollgate/clock.hpp>  (already above)

#include <chrono>
#include <cstdint>

TOLLGATE_BEGIN_NAMESPACE

// A rate: `count` units per `period`. Periods are chrono durations, so
// `rate{3, 60}` does not compile; write `rate{3, std::chrono::minutes(1)}` or
// `per_minute(3)`.
struct rate {
  std::uint64_t count = 0;
  nanoseconds period{0};

  constexpr rate() noexcept = default;
  template <class Rep, class Period>
  constexpr rate(std::uint64_t n, std::chrono::duration<Rep, Period> p) noexcept
      : count(n), period(std::chrono::duration_cast<nanoseconds>(p)) {}
};

constexpr rate per_second(std::uint64_t n) noexcept { return rate(n, std::chrono::seconds(1)); }
constexpr rate per_minute(std::uint64_t n) noexcept { return rate(n, std::chrono::minutes(1)); }
constexpr rate per_hour(std::uint64_t n) noexcept { return rate(n, std::chrono::hours(1)); }
constexpr rate per_day(std::uint64_t n) noexcept { return rate(n, std::chrono::hours(24)); }

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_RATE_HPP
// #include <tollgate/decision.hpp>  (inlined below)
// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// decision.hpp: the answer every limiter gives. A request is admitted; or it
// is not yet admissible and `retry_after` is the exact wait until it would be
// (rounded up to the nanosecond, never early, assuming nothing else is
// admitted meanwhile); or it can `never` be admitted by this limiter as
// configured (it asks for more than the limiter can ever hold). A refusal of
// either kind has changed no state.
#ifndef TOLLGATE_DECISION_HPP
#define TOLLGATE_DECISION_HPP

// #include <tollgate/config.hpp>  (already above)
// #include <tollgate/clock.hpp>  (already above)

#include <cstdint>

TOLLGATE_BEGIN_NAMESPACE

enum class verdict : std::uint8_t {
  admitted,  // granted and charged
  later,     // refused now; see retry_after and why
  never,     // refused for good: n exceeds what the limiter can ever grant
};

enum class reason : std::uint8_t {
  none,         // admitted
  exhausted,    // capacity is used up until retry_after has passed
  stale_time,   // `now` is older than a window slot already closed; retry with
                // a fresh clock reading (retry_after = the gap)
  busy,         // all concurrency permits are held; a release frees one (no
                // time estimate: retry_after is zero)
  exceeds_capacity,  // never: n > burst, limit or window limit
  misconfigured,     // never: the limiter was built with an error code set
};

class decision {
 public:
  constexpr decision() noexcept = default;

  static constexpr decision admit() noexcept { return decision(verdict::admitted, nanoseconds(0), reason::none); }
  static constexpr decision wait(nanoseconds d, reason r = reason::exhausted) noexcept {
    return decision(verdict::later, d, r);
  }
  static constexpr decision refuse(reason r = reason::exceeds_capacity) noexcept {
    return decision(verdict::never, nanoseconds(0), r);
  }

  constexpr verdict what() const noexcept { return what_; }
  constexpr reason why() const noexcept { return why_; }
  constexpr bool admitted() const noexcept { return what_ == verdict::admitted; }
  constexpr bool later() const noexcept { return what_ == verdict::later; }
  constexpr bool never() const noexcept { return what_ == verdict::never; }
  constexpr explicit operator bool() const noexcept { return admitted(); }
  // The exact wait for `later`; zero otherwise (and for reason::busy).
  constexpr nanoseconds retry_after() const noexcept { return wait_; }

  friend constexpr bool operator==(const decision& a, const decision& b) noexcept {
    return a.what_ == b.what_ && a.why_ == b.why_ && a.wait_ == b.wait_;
  }
  friend constexpr bool operator!=(const decision& a, const decision& b) noexcept { return !(a == b); }

 private:
  constexpr decision(verdict w, nanoseconds d, reason r) noexcept : wait_(d), what_(w), why_(r) {}
  nanoseconds wait_{0};
  verdict what_ = verdict::never;
  reason why_ = reason::misconfigured;
};

constexpr const char* to_string(verdict v) noexcept {
  switch (v) {
    case verdict::admitted: return "admitted";
    case verdict::later: return "later";
    case verdict::never: return "never";
  }
  return "?";
}

constexpr const char* to_string(reason r) noexcept {
  switch (r) {
    case reason::none: return "none";
    case reason::exhausted: return "exhausted";
    case reason::stale_time: return "stale_time";
    case reason::busy: return "busy";
    case reason::exceeds_capacity: return "exceeds_capacity";
    case reason::misconfigured: return "misconfigured";
  }
  return "?";
}

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_DECISION_HPP
// #include <tollgate/token_bucket.hpp>  (inlined below)
// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// token_bucket.hpp: a lock-free GCRA token bucket whose whole state is one
// atomic 64-bit word (the theoretical arrival time, TAT).
//
// Guarantee. With rate r = count/period, emission interval T = period/count
// and burst B: over any interval of length t (in the supplied timestamps), the
// bucket admits at most  B + floor(t / T)  units, and a caller that keeps it
// from ever sitting full gets exactly that many. There is no lost fractional
// refill and no drift: time is counted in ticks of 1/s ns, where s is chosen
// so that T is a whole number of ticks. That is possible for every rate whose
// reduced count/period needs s <= 14 (every Kimi limit needs s = 1: RPM 3 ->
// 20 s, TPM 5,000,000 -> 12 us, TPD 1,500,000 -> 57.6 ms; 7/s needs s = 7).
// Other rates use s = 14 and round T up to the next tick: the bucket then runs
// slower than asked by less than 1/14 ns per unit (`interval()` returns the
// interval in force, `exact()` says which case applies), never faster. Rates
// that cannot be represented within 0.1 % are refused (errc::rate_too_fine).
//
// Horizon. Ticks are counted in 62 bits from an epoch: the origin (the
// construction time, or one you pass) to begin with. Every accepted
// configuration spans at least 10 years from its epoch (`horizon()` says
// exactly how long; configurations that cannot are refused at construction),
// and the bucket never runs out of it: once a call's `now` is 2^57 ticks past
// the epoch (4.6 years / s: 120 days at s = 14), the epoch moves forward to
// 2^56 ticks before it, the TAT with it by the same whole nanoseconds: exact
// (every decision at that `now` or later is the one the old epoch gave). The
// move is a writer's step: try_acquire and charge make it only when no
// writer is inside (they try once, without waiting), set_rate and set_burst
// always do; writers are inside only for a few stores, so months of room
// remain. So a bucket keeps its bound and exact
// waits for any `now` up to INT64_MAX. A `now` before the epoch counts as the
// epoch, so readings that lag the latest by more than 2^56 ticks (2.3 years
// / s: 60 days at s = 14) are evaluated as if made at the epoch: never more
// permissive than the latest time seen.
//
// Time going backwards. A `now` earlier than the state's time is evaluated at
// face value: the decision is never more permissive than one made at the
// latest time seen, and the TAT never decreases (except through `refund`).
// The bound above holds over supplied timestamps in any order. If threads'
// clock readings differ by up to d, then over any real-time interval t at most
// B + floor((t + d) / T) units are admitted. The same rule means that one
// admission or charge at a bogus far-future `now` (INT64_MAX, say) makes the
// bucket owe until then: every ordinary `now` afterwards waits for centuries.
// That is "never more permissive" working as stated; the way out is
// `reset(now)`, which forgets what is owed.
//
// Decisions. n == 0 is always admitted and changes nothing. n > B is
// `never` (reason::exceeds_capacity). Otherwise a refused request gets the
// exact wait, rounded up to the nanosecond: not admissible one nanosecond
// earlier, admissible at it if nothing else is admitted meanwhile. A refusal
// writes nothing.
//
// Refunds. An admission made with a ticket (try_acquire(n, now, ticket),
// try_acquire_and_charge) can give units back with refund(ticket, n, now):
// at most the part of its own intervals still ahead at `now`, in whole
// units, and never more than the bucket owes. That keeps the bound above for
// the units admitted net of refunds, whatever came between (the rule is in
// bucket_ticket.hpp). A ticket from before a set_rate, set_burst or reset
// gives nothing back; an epoch move keeps tickets good (it is exact).
// refund(n, now) without a ticket is deprecated: it is only safe for undoing
// the latest admission.
//
// Reconfiguration during an operation. Every decision is made under the
// configuration in force at its CAS, however many reconfigurations (rate,
// burst, reset or epoch moves) a stalled thread sleeps through: each
// configuration slot carries a 64-bit generation that the call reads before
// the parameters and checks after its CAS (a stale CAS, which can only have
// raised the TAT, is undone if the word is still its own, else left as debt,
// and the call decides again). A refund checks the same generation after its
// CAS; a stale one (which lowered the TAT) is undone if the word is still
// its own, else the ticks it took off are owed again at once, and it
// decides again. In that last case only (four reconfigurations while the
// refund stalled between its read and its CAS, the word back to the exact
// value it read, and another call landing between its CAS and its undo), the
// calls in between may see up to k intervals of the old configuration more
// room (k the units the refund computed), owed back right after.
//
// Writers without a lock. set_rate, set_burst, reset and epoch moves claim
// an owner word by CAS; nothing else waits for them. A writer that finds it
// held waits while the holder shows no change for a few thousand looks
// (yields), then takes it over: a process killed at any instruction of a
// reconfiguration, a reset or a refund delays the next writer by those looks
// (about a millisecond), never forever, and leaves every word consistent (a
// refund holds nothing). A holder taken over while only slow can do no harm:
// its writes to the slot fail (each field is written by CAS under the
// claim's tag, see detail/bucket_slots.hpp), the taker owes one tick more in
// the state word before it reads it, so the old holder's installing CAS
// fails, and it starts again with a new claim. What remains: a holder taken
// over installs a slot the taker is filling if the state word came back to
// the exact value it read after that tick (refunds, or a debt saturated at
// the horizon, can bring it back) while it stalled; and a field tag wraps
// after 2^32 claims.
//
// State layout. The state word holds the TAT in its low 62 bits and, in its
// top two, the tag of the configuration slot in force: a reconfiguration
// fills the next of four slots and installs its tag with one CAS (see
// detail/bucket_slots.hpp for the slots, their generations and the owner
// word; detail/gcra_params.hpp for the ticks).
//
// Concurrency contract. Every member function is thread-safe. try_acquire,
// try_acquire_and_charge and charge are lock-free (one CAS loop on the state
// word, no allocation, no system call besides the clock read of the
// overloads without `now`); refund is lock-free too and never waits (it gives
// nothing back for a ticket from another configuration). available,
// time_until and full_in read one word and may be stale the moment they
// return. set_rate, set_burst and reset take turns on the owner word (see
// above; never waiting for acquirers or refunds); the first two keep the
// units owed at `now`, converted to the new interval and rounded up. A
// change is applied as of the `now` it is given: one that lags the latest
// time seen by d can hand back at most d x (new rate - old rate) units early
// (the skew bound above). The state is standard-layout, address-free atomics
// of lock-free types, so a bucket may live in memory shared between processes.

#ifndef TOLLGATE_TOKEN_BUCKET_HPP
#define TOLLGATE_TOKEN_BUCKET_HPP

// #include <tollgate/config.hpp>  (already above)
// #include <tollgate/bucket_ticket.hpp>  (inlined below)
// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// bucket_ticket.hpp: what a token bucket admission leaves for refunding it
// later, and how much a refund may give back (see token_bucket::refund).
//
// The rule. At `now`, a refund of a ticket returns whole units only, at most
//     min(n, units, (end - now) / T, owed(now) / T)
// where `end` is the admission's time plus the intervals of its units: the
// part of the admission's own intervals still ahead. However many
// admissions, charges and other ticketed refunds came between, giving that
// back keeps every interval within the bucket's bound B + floor(t / T) for
// the units admitted net of refunds. (A refund of the TAT the ticket saw
// would not: an earlier admission's refund can move this one's units down.)
//
// Times are in ticks after the bucket's origin, which an epoch move keeps (it
// moves by whole nanoseconds, and the scale comes with the configuration):
// exact, where a ticket rounded to nanoseconds would keep up to a unit of a
// roll-back at a rate whose tick is finer than a nanosecond.
//
// Whose ticket. A ticket is honoured only by the bucket that issued it, under
// the configuration it was taken under: it names both, and a refund of any
// other ticket gives nothing back. It names the bucket by its address in
// the issuing process: two live objects of one process never share one, so
// a ticket of another live bucket of this process is refused for certain,
// also one of a bucket another process built in shared memory (with this
// process's address of it). It names the configuration by a number drawn at
// construction and at every set_rate, set_burst and reset
// (detail/identity.hpp): never repeated within a process, and salted per
// process, so numbers drawn by two processes that draw n and m of them meet
// with probability at most (n + m + 1) / 2^64. A ticket from before a
// reconfiguration gives nothing back, nor one carried to a bucket restored
// from its bucket's owed() (restore_owed), which would otherwise give back
// units of an admission it never counted.
//
// What remains, told apart by the configuration number alone (so with the
// probability above; for certain when this process drew both numbers): a
// ticket refunded into a bucket now at the issuer's address (the issuer
// destroyed, or its region unmapped and another mapped there); a ticket
// carried to another process; and a ticket built field by field with issuer
// 0 (as the account rebuilds its own), whose address is not checked.

#ifndef TOLLGATE_BUCKET_TICKET_HPP
#define TOLLGATE_BUCKET_TICKET_HPP

// #include <tollgate/config.hpp>  (already above)
// #include <tollgate/detail/arith.hpp>  (inlined below)
// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// detail/arith.hpp: overflow-checked and 128-bit integer helpers. Nothing here
// is public API.
#ifndef TOLLGATE_DETAIL_ARITH_HPP
#define TOLLGATE_DETAIL_ARITH_HPP

// #include <tollgate/config.hpp>  (already above)

#include <cstdint>
#include <limits>

TOLLGATE_BEGIN_NAMESPACE
namespace detail {

#if defined(__SIZEOF_INT128__)
__extension__ typedef unsigned __int128 u128;
__extension__ typedef __int128 i128;
#else
#error "tollgate needs a compiler with a 128-bit integer type (g++, clang)"
#endif

// a * b / c rounded down; c > 0. Saturates at UINT64_MAX.
constexpr std::uint64_t mul_div_floor(std::uint64_t a, std::uint64_t b, std::uint64_t c) noexcept {
  const u128 q = static_cast<u128>(a) * b / c;
  return q > std::numeric_limits<std::uint64_t>::max() ? std::numeric_limits<std::uint64_t>::max()
                                                       : static_cast<std::uint64_t>(q);
}

// a * b / c rounded up; c > 0. Saturates at UINT64_MAX.
constexpr std::uint64_t mul_div_ceil(std::uint64_t a, std::uint64_t b, std::uint64_t c) noexcept {
  const u128 p = static_cast<u128>(a) * b;
  const u128 q = p / c + (p % c != 0 ? 1 : 0);
  return q > std::numeric_limits<std::uint64_t>::max() ? std::numeric_limits<std::uint64_t>::max()
                                                       : static_cast<std::uint64_t>(q);
}

constexpr std::uint64_t sat_add(std::uint64_t a, std::uint64_t b) noexcept {
  return a > std::numeric_limits<std::uint64_t>::max() - b ? std::numeric_limits<std::uint64_t>::max()
                                                           : a + b;
}

constexpr std::uint64_t sat_mul(std::uint64_t a, std::uint64_t b) noexcept {
  const u128 p = static_cast<u128>(a) * b;
  return p > std::numeric_limits<std::uint64_t>::max() ? std::numeric_limits<std::uint64_t>::max()
                                                       : static_cast<std::uint64_t>(p);
}

constexpr std::uint64_t ceil_div(std::uint64_t a, std::uint64_t b) noexcept {
  return a / b + (a % b != 0 ? 1 : 0);
}

constexpr std::uint64_t gcd(std::uint64_t a, std::uint64_t b) noexcept {
  while (b != 0) {
    const std::uint64_t t = a % b;
    a = b;
    b = t;
  }
  return a;
}

// max(0, a - b) for signed 64-bit values, as unsigned, without overflow.
constexpr std::uint64_t positive_difference(std::int64_t a, std::int64_t b) noexcept {
  return a > b ? static_cast<std::uint64_t>(a) - static_cast<std::uint64_t>(b) : 0;
}

// max(0, to - from) as int64, saturating at INT64_MAX: the wait from `from`
// until `to`, defined for every pair of values.
constexpr std::int64_t sat_gap(std::int64_t from, std::int64_t to) noexcept {
  const std::uint64_t d = positive_difference(to, from);
  return d > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()) ? std::numeric_limits<std::int64_t>::max()
                                                                                   : static_cast<std::int64_t>(d);
}

// b + d as int64, saturating at INT64_MAX.
constexpr std::int64_t sat_offset(std::int64_t b, std::uint64_t d) noexcept {
  const std::uint64_t room =
      static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()) - static_cast<std::uint64_t>(b);
  // For negative b the subtraction above wraps to a value > INT64_MAX, which is the true room.
  return d >= room ? std::numeric_limits<std::int64_t>::max()
                   : static_cast<std::int64_t>(static_cast<std::uint64_t>(b) + d);
}

}  // namespace detail
TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_DETAIL_ARITH_HPP
// #include <tollgate/detail/gcra_params.hpp>  (inlined below)
// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// detail/gcra_params.hpp: a GCRA configuration in ticks, and time in it.
// Nothing here is public API; token_bucket.hpp states the guarantees.
//
// Time is counted in ticks of 1/s ns from an epoch, where the scale s is the
// smallest that makes the emission interval T a whole number of ticks, if
// s <= 14; else s = 14 and T is rounded up (slower than asked by less than
// 1/14 ns per unit, never faster), and a rate that would be off by more than
// 0.1 % is refused. Ticks have 62 bits: the top two of the bucket's state word
// tag its configuration slot. A configuration is accepted only if 10 years
// from its epoch and its whole burst (B x T ticks) fit in them.
//
// The conversions below are exact where they can be and round toward refusal
// where they cannot: a `now` maps to whole ticks (saturating at the horizon,
// before the epoch counting as the epoch), and a span in ticks maps back to
// a wait rounded up to the nanosecond.

#ifndef TOLLGATE_DETAIL_GCRA_PARAMS_HPP
#define TOLLGATE_DETAIL_GCRA_PARAMS_HPP

// #include <tollgate/config.hpp>  (already above)
// #include <tollgate/detail/arith.hpp>  (already above)
// #include <tollgate/error.hpp>  (already above)
// #include <tollgate/rate.hpp>  (already above)

#include <cstdint>

TOLLGATE_BEGIN_NAMESPACE
namespace detail {

// The parameters of a GCRA in ticks, computed and validated once.
struct gcra_params {
  std::uint64_t scale = 0;     // ticks per nanosecond
  std::uint64_t interval = 0;  // T, in ticks
  std::uint64_t burst = 0;     // B
  std::uint64_t tau = 0;       // B * T, in ticks
  bool exact = false;
  std::int64_t epoch = 0;      // where tick 0 is, in ns (the origin, or where it moved to)
  std::uint64_t gen = 0;       // which installation of a slot this is (one per reconfiguration)
  std::uint64_t config = 0;    // which rate and burst (epoch moves keep it): tickets name it
};

struct gcra_limits {
  // 62 bits of ticks; the top two bits of the state word tag the
  // configuration slot in force.
  static constexpr std::uint64_t tat_bits = 62;
  static constexpr std::uint64_t max_ticks = (std::uint64_t{1} << tat_bits) - 1;
  // Ten Julian years in nanoseconds: the minimum horizon of any configuration.
  static constexpr std::uint64_t min_horizon_ns = 315576000ULL * 1000000000ULL;
  static constexpr std::uint64_t max_scale = max_ticks / min_horizon_ns;  // 14
};

constexpr errc make_gcra_params(rate r, std::uint64_t burst, gcra_params& out) noexcept {
  using L = gcra_limits;
  if (r.count == 0) return errc::zero_count;
  if (r.period.count() <= 0) return errc::zero_period;
  if (burst == 0) return errc::zero_burst;
  const std::uint64_t p = static_cast<std::uint64_t>(r.period.count());
  const std::uint64_t g = gcd(p, r.count);
  const std::uint64_t s_exact = r.count / g;
  const std::uint64_t t_exact = p / g;
  auto fits = [&](std::uint64_t s, std::uint64_t t) {
    const u128 need = static_cast<u128>(L::min_horizon_ns) * s + static_cast<u128>(burst) * t;
    return need <= L::max_ticks;
  };
  if (s_exact <= L::max_scale && fits(s_exact, t_exact)) {
    out = gcra_params{s_exact, t_exact, burst, burst * t_exact, true};
    return errc::ok;
  }
  if (s_exact <= L::max_scale) return errc::horizon_too_short;  // the burst is what does not fit
  for (std::uint64_t s = L::max_scale; s >= 1; --s) {
    const std::uint64_t t = mul_div_ceil(p, s, r.count);
    // Within 0.1 %: t / s <= 1.001 * p / count.
    if (static_cast<u128>(t) * r.count * 1000 > static_cast<u128>(p) * s * 1001) return errc::rate_too_fine;
    if (fits(s, t)) {
      out = gcra_params{s, t, burst, burst * t, false};
      return errc::ok;
    }
  }
  return errc::horizon_too_short;
}

// `now` in ticks from p's epoch: before it counts as it, and the count stops
// where the burst would no longer fit below the tag bits.
constexpr std::uint64_t gcra_ticks(std::int64_t now, const gcra_params& p) noexcept {
  const std::uint64_t since = positive_difference(now, p.epoch);
  const std::uint64_t cap = gcra_limits::max_ticks - p.tau;
  // Every Kimi limit has scale 1: skip the 128-bit multiply.
  const std::uint64_t t = p.scale == 1 ? since : sat_mul(since, p.scale);
  return t > cap ? cap : t;
}

// The highest TAT a charge at now_t saturates at: one interval below the
// top of the ticks, so that a request after it is admissible at a `now`
// gcra_ticks still counts (tat + T - tau <= the clamp). From max_ticks
// itself that `now` lay one interval past the clamp: the epoch move there
// measured the debt from the clamp, one interval too much, and the wait
// given was short by it. At the clamp itself (a `now` past the horizon,
// whose epoch has not moved yet) the whole range stays, so that nothing
// owed there is lost.
constexpr std::uint64_t gcra_top(const gcra_params& p, std::uint64_t now_t) noexcept {
  return now_t >= gcra_limits::max_ticks - p.tau ? gcra_limits::max_ticks : gcra_limits::max_ticks - p.interval;
}

// `t` ticks after max(now, epoch), as a wait from `now` in ns, rounded up.
constexpr std::int64_t gcra_wait_from(std::int64_t now, std::uint64_t t, const gcra_params& p) noexcept {
  const std::uint64_t w = sat_add(ceil_div(t, p.scale), positive_difference(p.epoch, now));
  return w > static_cast<std::uint64_t>(INT64_MAX) ? INT64_MAX : static_cast<std::int64_t>(w);
}

// Whole units a bucket with the TAT `tat` holds at now_t.
constexpr std::uint64_t gcra_available(std::uint64_t tat, std::uint64_t now_t, const gcra_params& p) noexcept {
  const std::uint64_t owed = tat > now_t ? tat - now_t : 0;
  return owed >= p.tau ? 0 : (p.tau - owed) / p.interval;
}

// The TAT that owes `owed` ns at `now` (a negative `owed` owes nothing),
// saturating at the horizon (gcra_top).
constexpr std::uint64_t gcra_owing(std::int64_t owed, std::int64_t now, const gcra_params& p) noexcept {
  const std::uint64_t owed_ns = owed > 0 ? static_cast<std::uint64_t>(owed) : 0;
  const std::uint64_t now_t = gcra_ticks(now, p);
  const std::uint64_t tat = sat_add(now_t, sat_mul(owed_ns, p.scale));
  const std::uint64_t top = gcra_top(p, now_t);
  return tat > top ? top : tat;
}

// The interval rounded up to whole ns, and how far from its epoch p counts
// exactly; 0 for a misconfigured (all-zero) p.
constexpr std::int64_t gcra_interval_ns(const gcra_params& p) noexcept {
  return p.scale == 0 ? 0 : static_cast<std::int64_t>(ceil_div(p.interval, p.scale));
}
constexpr std::int64_t gcra_horizon_ns(const gcra_params& p) noexcept {
  return p.scale == 0 ? 0 : static_cast<std::int64_t>((gcra_limits::max_ticks - p.tau) / p.scale);
}

// The epoch moves once `now` is 2^57 ticks past it, to 2^56 ticks before
// `now`. One constant for every configuration keeps the hot-path test to a
// compare with a constant; every horizon (>= 10 years >= 2^58.1 ticks) has
// room to spare above it, so a move is due long before a `now` is clamped.
constexpr std::uint64_t gcra_move_ticks = std::uint64_t{1} << 57;
constexpr std::uint64_t gcra_keep_ticks = std::uint64_t{1} << 56;
static_assert(gcra_limits::min_horizon_ns > gcra_move_ticks + gcra_keep_ticks,
              "a move must be due well inside every horizon");
constexpr bool gcra_move_due(std::uint64_t now_t) noexcept { return now_t >= gcra_move_ticks; }

// An epoch for `p` (whose own epoch is ignored) at `now`, moving on from
// `epoch`: that one unless a move is due, else gcra_keep_ticks before `now`
// (whole nanoseconds, so exact; never past `now`, so it fits).
constexpr std::int64_t gcra_epoch_for(gcra_params p, std::int64_t epoch, std::int64_t now) noexcept {
  p.epoch = epoch;
  if (!gcra_move_due(gcra_ticks(now, p))) return epoch;
  const i128 e = static_cast<i128>(now) - static_cast<i128>(gcra_keep_ticks / p.scale);
  return e > epoch ? static_cast<std::int64_t>(e) : epoch;
}

// A TAT under `op` as one under `np` at `now`: the units owed at `now` stay
// owed, at the new interval, rounded up (saturating at the horizon, gcra_top).
constexpr std::uint64_t gcra_convert_tat(std::uint64_t tat, const gcra_params& op, const gcra_params& np,
                                         std::int64_t now) noexcept {
  const std::uint64_t old_now = gcra_ticks(now, op);
  const std::uint64_t owed = tat > old_now ? mul_div_ceil(tat - old_now, np.interval, op.interval) : 0;
  const std::uint64_t new_now = gcra_ticks(now, np);
  const std::uint64_t nt = sat_add(new_now, owed);
  const std::uint64_t top = gcra_top(np, new_now);
  return nt > top ? top : nt;
}

}  // namespace detail
TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_DETAIL_GCRA_PARAMS_HPP
// #include <tollgate/detail/identity.hpp>  (inlined below)
// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// detail/identity.hpp: the identities tickets carry (a token bucket's
// configuration number, a window's, a quota's, a keyed table's), drawn when
// an object is built, reconfigured or restored. Nothing here is public API.
//
// Guarantee. Within one process (one copy of this header's statics: one
// program image), fresh_identity() never returns the same value twice and
// never 0: a 64-bit counter, one step a draw. Each process counts from its
// own salt, 64 bits from the system's random source (getrandom, or
// arc4random_buf), drawn at its first draw and again at the first draw after
// fork(): a process whose pid is not the one that drew the salt draws a new
// one. So two processes (or two program images of one process) that draw n
// and m identities share a value with probability at most (n + m + 1) / 2^64:
// their runs of consecutive values (one longer where a run skips 0) overlap
// only if the salts fall within n + m + 1 of each other. That is how an
// object this process built is told apart from one another process built in
// shared memory (tickets also name the issuer's address, which tells live
// objects of one process apart for certain).
//
// What remains. The bound needs a random salt: where the system has no
// random source (or it fails, as getrandom can before the kernel's pool is
// ready), the salt mixes the clocks, the pid and addresses (ASLR), and
// processes differ only as far as those do. A child whose pid equals the
// pid that drew the salt it inherited (a pid reused across a chain of forks
// whose middle process drew nothing) keeps that run: its draws repeat those
// the drawer made after the fork.
//
// Cost. A draw reads the pid (a system call) and does one atomic increment;
// the first in a process also reads the random source. Construction and
// reconfiguration only: no admission draws.
#ifndef TOLLGATE_DETAIL_IDENTITY_HPP
#define TOLLGATE_DETAIL_IDENTITY_HPP

// #include <tollgate/config.hpp>  (already above)
// #include <tollgate/detail/siphash.hpp>  (inlined below)
// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// detail/siphash.hpp: SipHash-2-4, the keyed hash of the keyed tables.
// Nothing here is public API.
//
// Why SipHash: it is a pseudo-random function of its 128-bit key. A client
// that does not know the key sees outputs it cannot tell from random ones,
// so it cannot pick keys that land in one probe window or share a 64-bit
// hash other than by chance (the odds are stated in keyed_buckets.hpp).
// It is also short, portable and well studied. Input bytes are read one by
// one (little-endian words), so the result is the same on every platform.
#ifndef TOLLGATE_DETAIL_SIPHASH_HPP
#define TOLLGATE_DETAIL_SIPHASH_HPP

// #include <tollgate/config.hpp>  (already above)

#include <cstddef>
#include <cstdint>

TOLLGATE_BEGIN_NAMESPACE
namespace detail {

// SipHash-c-d: `c` rounds per message word, `d` to finish.
template <int C, int D>
class basic_siphash {
  static_assert(C >= 1 && D >= 1, "SipHash needs at least one round of each kind");

 public:
  constexpr basic_siphash(std::uint64_t k0, std::uint64_t k1) noexcept
      : v0_(k0 ^ 0x736f6d6570736575ULL), v1_(k1 ^ 0x646f72616e646f6dULL), v2_(k0 ^ 0x6c7967656e657261ULL),
        v3_(k1 ^ 0x7465646279746573ULL) {}

  // The hash of `len` bytes at `p` (p may be null when len is 0).
  std::uint64_t bytes(const unsigned char* p, std::size_t len) const noexcept {
    std::uint64_t v0 = v0_, v1 = v1_, v2 = v2_, v3 = v3_;
    const std::size_t whole = len - len % 8;
    for (std::size_t i = 0; i < whole; i += 8) compress(v0, v1, v2, v3, load_le(p + i, 8));
    compress(v0, v1, v2, v3, (static_cast<std::uint64_t>(len & 0xff) << 56) | load_le(p + whole, len % 8));
    return finish(v0, v1, v2, v3);
  }

  // The hash of the 8 little-endian bytes of v: bytes() of them, without
  // the byte loop (one message word, then the length block of 8 bytes).
  std::uint64_t word(std::uint64_t v) const noexcept {
    std::uint64_t v0 = v0_, v1 = v1_, v2 = v2_, v3 = v3_;
    compress(v0, v1, v2, v3, v);
    compress(v0, v1, v2, v3, std::uint64_t{8} << 56);
    return finish(v0, v1, v2, v3);
  }

 private:
  static void compress(std::uint64_t& v0, std::uint64_t& v1, std::uint64_t& v2, std::uint64_t& v3,
                       std::uint64_t m) noexcept {
    v3 ^= m;
    for (int i = 0; i < C; ++i) round(v0, v1, v2, v3);
    v0 ^= m;
  }
  static std::uint64_t finish(std::uint64_t& v0, std::uint64_t& v1, std::uint64_t& v2, std::uint64_t& v3) noexcept {
    v2 ^= 0xff;
    for (int i = 0; i < D; ++i) round(v0, v1, v2, v3);
    return v0 ^ v1 ^ v2 ^ v3;
  }
  static constexpr std::uint64_t rotl(std::uint64_t x, int b) noexcept { return (x << b) | (x >> (64 - b)); }
  static void round(std::uint64_t& v0, std::uint64_t& v1, std::uint64_t& v2, std::uint64_t& v3) noexcept {
    v0 += v1;
    v1 = rotl(v1, 13);
    v1 ^= v0;
    v0 = rotl(v0, 32);
    v2 += v3;
    v3 = rotl(v3, 16);
    v3 ^= v2;
    v0 += v3;
    v3 = rotl(v3, 21);
    v3 ^= v0;
    v2 += v1;
    v1 = rotl(v1, 17);
    v1 ^= v2;
    v2 = rotl(v2, 32);
  }
  static std::uint64_t load_le(const unsigned char* p, std::size_t n) noexcept {
    std::uint64_t m = 0;
    for (std::size_t i = 0; i < n; ++i) m |= static_cast<std::uint64_t>(p[i]) << (8 * i);
    return m;
  }

  std::uint64_t v0_, v1_, v2_, v3_;
};

using siphash24 = basic_siphash<2, 4>;
using siphash13 = basic_siphash<1, 3>;

}  // namespace detail
TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_DETAIL_SIPHASH_HPP

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <thread>

#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#define TOLLGATE_DETAIL_HAVE_GETPID 1
#endif
#if defined(__linux__) && defined(__has_include)
#if __has_include(<sys/random.h>)
#include <sys/random.h>
#define TOLLGATE_DETAIL_HAVE_GETRANDOM 1
#endif
#endif
#if !defined(TOLLGATE_DETAIL_HAVE_GETRANDOM) &&                                                      \
    (defined(__APPLE__) || defined(__FreeBSD__) || defined(__OpenBSD__) || defined(__NetBSD__))
#include <stdlib.h>
#define TOLLGATE_DETAIL_HAVE_ARC4RANDOM 1
#endif

TOLLGATE_BEGIN_NAMESPACE
namespace detail {

// This process's pid (0 where there is no fork() to tell apart).
inline std::uint64_t identity_pid() noexcept {
#if defined(TOLLGATE_DETAIL_HAVE_GETPID)
  return static_cast<std::uint64_t>(::getpid());
#else
  return 0;
#endif
}

// A salt for the process `pid`: the random source's 64 bits, keyed into
// SipHash with what differs between processes anyway (in case it has none).
inline std::uint64_t identity_salt(std::uint64_t pid) noexcept {
  std::uint64_t r = 0;
#if defined(TOLLGATE_DETAIL_HAVE_GETRANDOM)
  if (::getrandom(&r, sizeof r, GRND_NONBLOCK) != static_cast<ssize_t>(sizeof r)) r = 0;
#elif defined(TOLLGATE_DETAIL_HAVE_ARC4RANDOM)
  ::arc4random_buf(&r, sizeof r);
#endif
  static const int here = 0;
  const int local = 0;
  const std::uint64_t words[4] = {
      static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()),
      static_cast<std::uint64_t>(std::chrono::system_clock::now().time_since_epoch().count()),
      static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(&here)),
      static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(&local))};
  unsigned char bytes[sizeof words];
  std::memcpy(bytes, words, sizeof words);
  return siphash24(r, pid).bytes(bytes, sizeof bytes);
}

// A new identity (see the header for the guarantee).
inline std::uint64_t fresh_identity() noexcept {
  // `owner` is (pid + 1) << 1 of the process whose salt `last` counts from,
  // with the low bit set while one of its threads draws that salt; 0 before
  // the first draw. Not detail::atomic: no lock-free protocol of a limiter
  // reads them, and no other process sees them (they are this image's).
  static std::atomic<std::uint64_t> owner{0};
  static std::atomic<std::uint64_t> last{0};
  const std::uint64_t pid = identity_pid();
  const std::uint64_t me = (pid + 1) << 1;
  for (;;) {
    // acquire: pairs with the release store below that made `owner` ours,
    // so the salt stored before it is what the increment starts from.
    std::uint64_t o = owner.load(std::memory_order_acquire);
    if (o == me) {
      // relaxed: only uniqueness matters, which the RMW's atomicity gives;
      // it follows the salt's store (the acquire above). The value reaches
      // other threads with the object that carries it.
      const std::uint64_t v = last.fetch_add(1, std::memory_order_relaxed) + 1;
      if (v != 0) return v;  // 0 is a default ticket's
      continue;
    }
    if (o == (me | 1)) {  // another thread of this process draws the salt: a few stores
      std::this_thread::yield();
      continue;
    }
    // Not ours (the first draw, or a salt inherited through fork(), also one
    // a thread of the parent was drawing at the fork): take it. acquire on
    // success: keeps the salt's store after the claim; relaxed on failure:
    // `o` is only compared again, after the acquire load above.
    if (owner.compare_exchange_weak(o, me | 1, std::memory_order_acquire, std::memory_order_relaxed)) {
      // relaxed: published by the release store of `owner` right after.
      last.store(identity_salt(pid), std::memory_order_relaxed);
      // release: pairs with the acquire load above.
      owner.store(me, std::memory_order_release);
    }
  }
}

}  // namespace detail
TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_DETAIL_IDENTITY_HPP

#include <cstdint>

TOLLGATE_BEGIN_NAMESPACE

// A default ticket refunds nothing. Move-only: a copy could refund the same
// units twice. A moved-from ticket holds no units, so refunding it gives
// nothing back.
struct bucket_ticket {
  std::uint64_t end = 0;       // ticks after the origin: admission time + its units' intervals (exact)
  std::uint64_t units = 0;     // units it may still give back
  std::uint64_t config = 0;    // the rate and burst it was taken under (the bucket's number for them)
  std::uintptr_t issuer = 0;   // the issuing bucket's address in this process; 0: not checked

  constexpr bucket_ticket() noexcept = default;
  constexpr bucket_ticket(std::uint64_t e, std::uint64_t u, std::uint64_t c, std::uintptr_t i = 0) noexcept
      : end(e), units(u), config(c), issuer(i) {}
  bucket_ticket(const bucket_ticket&) = delete;
  bucket_ticket& operator=(const bucket_ticket&) = delete;
  constexpr bucket_ticket(bucket_ticket&& o) noexcept : end(o.end), units(o.units), config(o.config), issuer(o.issuer) {
    o.units = 0;
  }
  constexpr bucket_ticket& operator=(bucket_ticket&& o) noexcept {
    if (this != &o) {
      end = o.end;
      config = o.config;
      issuer = o.issuer;
      units = o.units;
      o.units = 0;
    }
    return *this;
  }
};

namespace detail {

// A configuration number no bucket of this process has used, and one of
// another process's with the probability stated above (detail/identity.hpp).
// Never 0, a default ticket's. It reaches other threads through the
// bucket's own publication of its slot.
inline std::uint64_t fresh_bucket_config() noexcept { return fresh_identity(); }

// The ticket of an admission of n units plus `extra` charged, made at now_t
// (ticks from p's epoch) that moved the TAT from `base` (max(TAT, now_t)) to
// `next`, by the bucket at `issuer`. Its own intervals end at now_t + (next - base). Saturating is safe:
// `now` in ticket_refundable then saturates too, and nothing is given back.
constexpr bucket_ticket make_bucket_ticket(const gcra_params& p, std::int64_t origin, std::uint64_t now_t,
                                           std::uint64_t base, std::uint64_t next, std::uint64_t n,
                                           std::uint64_t extra, std::uintptr_t issuer) noexcept {
  bucket_ticket t;
  t.end = sat_add(sat_mul(positive_difference(p.epoch, origin), p.scale), now_t + (next - base));
  t.units = sat_add(n, extra);
  t.config = p.config;
  t.issuer = issuer;
  return t;
}

// Whole units a refund of up to n (<= t.units) may give back at `now`, under
// p (the ticket's configuration), with the state's TAT `tat` (ticks from p's
// epoch) and `now_t` = gcra_ticks(now, p).
constexpr std::uint64_t ticket_refundable(const bucket_ticket& t, std::uint64_t n, std::int64_t now,
                                          std::int64_t origin, const gcra_params& p, std::uint64_t tat,
                                          std::uint64_t now_t) noexcept {
  // `now` in ticks after the origin, counted from the epoch at the earliest,
  // as gcra_ticks counts it (the epoch is never before the origin), but not
  // capped at the horizon; saturating is rounding up, the safe side here.
  const std::uint64_t from = positive_difference(p.epoch, origin);
  std::uint64_t since = positive_difference(now, origin);
  if (since < from) since = from;
  since = sat_mul(since, p.scale);
  if (t.end <= since) return 0;
  if (tat <= now_t) return 0;  // already full at `now`
  std::uint64_t cap = sat_mul(n, p.interval);
  const std::uint64_t own = t.end - since;
  if (own < cap) cap = own;
  if (tat - now_t < cap) cap = tat - now_t;
  return cap / p.interval;
}

}  // namespace detail
TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_BUCKET_TICKET_HPP
// #include <tollgate/clock.hpp>  (already above)
// #include <tollgate/decision.hpp>  (already above)
// #include <tollgate/detail/arith.hpp>  (already above)
// #include <tollgate/detail/atomic.hpp>  (inlined below)
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

// #include <tollgate/config.hpp>  (already above)

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
// #include <tollgate/detail/bucket_slots.hpp>  (inlined below)
// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// detail/bucket_slots.hpp: the token bucket's four configuration slots and
// the writer claim that decides who fills them. Nothing here is public API;
// token_bucket.hpp states the guarantees.
//
// A slot holds one installation of a configuration: its generation (the
// claim number of the writer that filled it: unique, 64 bits, never reused),
// the GCRA parameters in ticks, its epoch, its configuration number (one
// more at every set_rate, set_burst and reset, the same across an epoch
// move: tickets carry it), and the rate as given. The bucket's state word
// names the slot in force in its top two bits. A writer fills the next slot
// (never the one in force) and then installs its tag with one release CAS on
// the state word; that CAS is what publishes the slot.
//
// Reading a slot. Most readers take the state word (acquire), then the
// slot its tag names: its contents are then at least the installation in
// force at the word. An acquirer does it the other way round: it takes the
// generation, then the fields (`hot`), then the word, and uses them only if
// the word carries that slot's tag and the generation, read again after the
// word, is unchanged: then they belong to the installation in force at the
// word. Which slot to read first is a guess, `hint`, that writers update
// after they install. The fields may be torn by a writer refilling the slot;
// the generation, checked again after the reader's CAS, tells.
//
// Writers without a lock (bucket_writer). A writer takes a claim number and
// puts it in the owner word by CAS. A holder that makes no visible progress
// while a waiter looks `takeover_polls` times is taken over: the waiter CASes
// its own number in, so a writer killed at any instruction delays the next
// one by those looks, never forever. A holder that was only slow (not dead)
// can do no harm after that:
//  - every field is one or two words of (32-bit value or half, low 32 bits
//    of the claim number), written by CAS from a value read while the owner word still
//    named the writer; the taker rewrites every field, so each CAS of the
//    old holder expects a word that is gone and fails (until 2^32 further
//    claims bring its tag back: the one wrap that remains);
//  - the generation is written by CAS in the same way, last;
//  - the taker changes the state word (one tick more owed) before it reads
//    which slot is in force, so the old holder's installing CAS, which
//    expects the word it read, fails; if instead that CAS came first, the
//    taker sees the new slot in force and fills the next one;
//  - the owner word is released by CAS, which fails for a holder taken over.
// What remains: the old holder's install succeeds if the state word has come
// back to the exact value it read after the taker's tick (refunds or a
// saturated debt can bring it back). token_bucket.hpp states it.
//
// Every member is a standard-layout atomic of a lock-free type, so the slots
// may live in memory shared between processes.

#ifndef TOLLGATE_DETAIL_BUCKET_SLOTS_HPP
#define TOLLGATE_DETAIL_BUCKET_SLOTS_HPP

// #include <tollgate/config.hpp>  (already above)
// #include <tollgate/detail/atomic.hpp>  (already above)
// #include <tollgate/detail/gcra_params.hpp>  (already above)
// #include <tollgate/rate.hpp>  (already above)

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <thread>

// How many looks at an unchanged owner word a writer waits before it takes
// over (each look after a yield). The interleaving checker counts steps, so
// it uses a few.
#ifndef TOLLGATE_BUCKET_TAKEOVER_POLLS
#if defined(TOLLGATE_INTERLEAVING_CHECKER)
#define TOLLGATE_BUCKET_TAKEOVER_POLLS 3
#else
#define TOLLGATE_BUCKET_TAKEOVER_POLLS 4096
#endif
#endif

TOLLGATE_BEGIN_NAMESPACE
namespace detail {

// A 64-bit value written only by the claimant named in the owner word: two
// words, each (tag << 32 | half).
class owned_u64 {
 public:
  std::uint64_t load() const noexcept {
    std::uint32_t top = 0;
    return load(top) | (static_cast<std::uint64_t>(top) << 62);
  }
  // For a value below 2^62: also the two bits stored above it.
  std::uint64_t load(std::uint32_t& top) const noexcept {
    // acquire (both): pairs with the release CAS in write(), as the
    // generation's pairing in bucket_slots::hot() describes.
    const std::uint64_t h = hi_.load(std::memory_order_acquire) & 0xffffffffu;
    const std::uint64_t l = lo_.load(std::memory_order_acquire);
    top = static_cast<std::uint32_t>(h >> 30);
    return ((h & 0x3fffffffu) << 32) | (l & 0xffffffffu);
  }
  // Before the object is shared.
  void init(std::uint64_t v) noexcept {
    // relaxed: construction happens before any other thread sees the object.
    hi_.store(v >> 32, std::memory_order_relaxed);
    lo_.store(v & 0xffffffffu, std::memory_order_relaxed);
  }
  template <class Mine>
  bool write(std::uint64_t v, std::uint32_t tag, const Mine& mine) noexcept {
    return put(hi_, v >> 32, tag, mine) && put(lo_, v & 0xffffffffu, tag, mine);
  }
  // A value below 2^62 with two more bits above it.
  template <class Mine>
  bool write(std::uint64_t v, std::uint32_t top, std::uint32_t tag, const Mine& mine) noexcept {
    return write((v & ((std::uint64_t{1} << 62) - 1)) | (static_cast<std::uint64_t>(top & 3u) << 62), tag, mine);
  }

  template <class Mine>
  static bool put(atomic<std::uint64_t>& a, std::uint64_t half, std::uint32_t tag, const Mine& mine) noexcept {
    const std::uint64_t want = (static_cast<std::uint64_t>(tag) << 32) | half;
    // relaxed: only the expected value for the CAS; what makes it safe is
    // that it was read before the ownership check below.
    std::uint64_t cur = a.load(std::memory_order_relaxed);
    for (;;) {
      if (!mine()) return false;
      // release: pairs with the acquire loads in load(); relaxed on
      // failure: `cur` is only the next expected value (checked again).
      if (a.compare_exchange_weak(cur, want, std::memory_order_release, std::memory_order_relaxed)) return true;
    }
  }

 private:
  atomic<std::uint64_t> hi_{0}, lo_{0};
};

// A value of at most 32 bits written the same way: one word.
class owned_u32 {
 public:
  std::uint32_t load() const noexcept {
    // acquire: as in owned_u64::load().
    return static_cast<std::uint32_t>(w_.load(std::memory_order_acquire) & 0xffffffffu);
  }
  void init(std::uint32_t v) noexcept {
    // relaxed: construction happens before any other thread sees the object.
    w_.store(v, std::memory_order_relaxed);
  }
  template <class Mine>
  bool write(std::uint32_t v, std::uint32_t tag, const Mine& mine) noexcept {
    return owned_u64::put(w_, v, tag, mine);
  }

 private:
  atomic<std::uint64_t> w_{0};
};

class bucket_slots {
 public:
  static constexpr std::size_t count = 4;
  static constexpr std::size_t next(std::size_t i) noexcept { return (i + 1) & (count - 1); }

  // The fields the hot paths need, the generation first: not the
  // configuration number (config(), for tickets) nor `exact` (full()); tau
  // is computed (validated to fit when the slot was filled; a torn read
  // gives a wrong one, which the generation check catches as it catches any
  // torn field).
  gcra_params hot(std::size_t i) const noexcept {
    const slot& s = s_[i];
    gcra_params p{};
    // acquire: pairs with the release CAS of the generation in store(),
    // written after the fields, so the fields read below are at least that
    // installation's; each field pairs with its own release CAS, so a field
    // of a later installation makes the reader's CAS on the state word fail
    // or its generation check after it differ.
    p.gen = s.gen.load(std::memory_order_acquire);
    // The scale (at most 14) rides in the two spare bits above the interval
    // and the burst (each below 2^62: their product fits 62 bits): one load
    // less on the hot path.
    std::uint32_t lo2 = 0, hi2 = 0;
    p.interval = s.interval.load(lo2);
    p.burst = s.burst.load(hi2);
    p.scale = (hi2 << 2) | lo2;
    p.tau = p.burst * p.interval;  // may wrap only for a torn read: unsigned, caught as said
    p.epoch = static_cast<std::int64_t>(s.epoch.load());
    return p;
  }
  std::uint64_t config(std::size_t i) const noexcept { return s_[i].config.load(); }

  // Everything, off the hot paths.
  gcra_params full(std::size_t i) const noexcept {
    gcra_params p = hot(i);
    p.config = config(i);
    p.exact = s_[i].exact.load() != 0;
    return p;
  }

  // The slot's generation now, for the checks after a read or CAS of the
  // state word.
  std::uint64_t gen(std::size_t i) const noexcept {
    // relaxed: the caller's acquire load or acq_rel CAS of the state word
    // orders it after that, and so after the installation whose tag the
    // word carries.
    return s_[i].gen.load(std::memory_order_relaxed);
  }

  // Which slot the last writer installed: a guess that lets a reader fetch
  // the parameters before the state word (it checks them against the word).
  std::size_t hint() const noexcept {
    // relaxed: only a guess; the reader checks the tag and the generation.
    return hint_.load(std::memory_order_relaxed) & (count - 1);
  }
  void set_hint(std::size_t i) noexcept {
    // relaxed: as in hint(); written after the CAS that installs slot i (a
    // writer taken over may write a stale guess: only a guess).
    hint_.store(static_cast<std::uint32_t>(i), std::memory_order_relaxed);
  }

  // The rate as given (a peek: may be torn by a racing writer; writers read
  // the slot in force, which nobody rewrites while it is in force).
  rate rate_of(std::size_t i) const noexcept {
    return rate(s_[i].count.load(), nanoseconds(static_cast<std::int64_t>(s_[i].period.load())));
  }

  // Fills slot i (not in force) as claimant `p.gen`, while mine() holds; the
  // generation last. False when the claim was lost (the slot is then the
  // taker's to fill).
  template <class Mine>
  bool store(std::size_t i, const gcra_params& p, rate r, const Mine& mine) noexcept {
    slot& s = s_[i];
    const std::uint32_t tag = static_cast<std::uint32_t>(p.gen);
    const std::uint32_t sc = static_cast<std::uint32_t>(p.scale);
    if (!(s.interval.write(p.interval, sc & 3u, tag, mine) && s.burst.write(p.burst, sc >> 2, tag, mine) &&
          s.epoch.write(static_cast<std::uint64_t>(p.epoch), tag, mine) &&
          s.config.write(p.config, tag, mine) && s.exact.write(p.exact ? 1 : 0, tag, mine) &&
          s.count.write(r.count, tag, mine) &&
          s.period.write(static_cast<std::uint64_t>(r.period.count()), tag, mine)))
      return false;
    // relaxed: the expected value only, read before the ownership check.
    std::uint64_t g = s.gen.load(std::memory_order_relaxed);
    for (;;) {
      if (!mine()) return false;
      // release: the generation last, so a reader that sees it sees every
      // field with it (hot()). relaxed on failure: the next expected value.
      if (s.gen.compare_exchange_weak(g, p.gen, std::memory_order_release, std::memory_order_relaxed)) return true;
    }
  }
  // Before the object is shared: slot i gets `p` (or only the epoch, for a
  // misconfigured bucket, with p.burst == 0).
  void init(std::size_t i, const gcra_params& p, rate r) noexcept {
    slot& s = s_[i];
    const std::uint64_t sc = p.scale;
    s.interval.init((p.interval & ((std::uint64_t{1} << 62) - 1)) | ((sc & 3u) << 62));
    s.burst.init((p.burst & ((std::uint64_t{1} << 62) - 1)) | ((sc >> 2) << 62));
    s.epoch.init(static_cast<std::uint64_t>(p.epoch));
    s.config.init(p.config);
    s.exact.init(p.exact ? 1u : 0u);
    s.count.init(r.count);
    s.period.init(static_cast<std::uint64_t>(r.period.count()));
    // relaxed: construction happens before any other thread sees the object.
    s.gen.store(p.gen, std::memory_order_relaxed);
  }

 private:
  // In atomics so a writer racing a reader is not a data race. The fields
  // the hot paths read come first, the generation ahead of them.
  struct slot {
    atomic<std::uint64_t> gen{0};
    owned_u64 interval, burst, epoch, config;  // interval and burst carry the scale above them
    owned_u32 exact;
    owned_u64 count, period;
  };

  slot s_[count];
  atomic<std::uint32_t> hint_{0};

  static_assert(std::atomic<std::uint64_t>::is_always_lock_free, "tollgate needs lock-free 64-bit atomics");
  static_assert(std::atomic<std::uint32_t>::is_always_lock_free, "tollgate needs lock-free 32-bit atomics");
};

// The owner word: 0 when free, else the claim number of the writer inside;
// and the counter claim numbers come from (1 is the construction's).
class bucket_writer {
 public:
  std::uint64_t new_claim() noexcept {
    // relaxed: only uniqueness matters, which the RMW gives in any order.
    return claims_.fetch_add(1, std::memory_order_relaxed) + 1;
  }
  // Takes the owner word for `id`; true when it was taken over from a
  // holder that showed no change for TOLLGATE_BUCKET_TAKEOVER_POLLS looks.
  bool lock(std::uint64_t id) noexcept {
    // acquire (all loads and CASes): pairs with the release CAS that ends
    // the previous holder's turn (unlock), so its slot writes are visible.
    std::uint64_t seen = owner_.load(std::memory_order_acquire);
    unsigned still = 0;
    for (;;) {
      if (seen == 0 || still >= TOLLGATE_BUCKET_TAKEOVER_POLLS) {
        const std::uint64_t was = seen;
        if (owner_.compare_exchange_strong(seen, id, std::memory_order_acquire, std::memory_order_acquire))
          return was != 0;
        still = 0;  // it moved: someone else's turn now
        continue;
      }
      std::this_thread::yield();
      const std::uint64_t now = owner_.load(std::memory_order_acquire);
      still = now == seen ? still + 1 : 0;
      seen = now;
    }
  }
  // Takes the owner word only if it is free: tries once.
  bool try_lock(std::uint64_t id) noexcept {
    std::uint64_t free = 0;
    // acquire: as in lock(); relaxed on failure: nothing is read.
    return owner_.compare_exchange_strong(free, id, std::memory_order_acquire, std::memory_order_relaxed);
  }
  bool holds(std::uint64_t id) const noexcept {
    // acquire: a taker's CAS, once seen, orders our later checks after it.
    return owner_.load(std::memory_order_acquire) == id;
  }
  void unlock(std::uint64_t id) noexcept {
    std::uint64_t mine = id;
    // release: pairs with the acquire in the next lock() or try_lock(). A
    // holder taken over fails and leaves the taker's number in place.
    // relaxed on failure: nothing is read.
    (void)owner_.compare_exchange_strong(mine, 0, std::memory_order_release, std::memory_order_relaxed);
  }

 private:
  atomic<std::uint64_t> owner_{0};
  atomic<std::uint64_t> claims_{1};
};

}  // namespace detail
TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_DETAIL_BUCKET_SLOTS_HPP
// #include <tollgate/detail/gcra_params.hpp>  (already above)
// #include <tollgate/error.hpp>  (already above)
// #include <tollgate/rate.hpp>  (already above)

#include <atomic>
#include <cstddef>
#include <cstdint>

TOLLGATE_BEGIN_NAMESPACE

namespace detail {
// Test seams where a test can reconfigure the bucket (a stalled thread,
// without threads): between an acquirer's read of the parameters and of the
// state, and before its CAS. They do nothing unless a test specialises them.
template <class Clock>
struct token_bucket_stall {
  static void before_load() noexcept {}
  static void before_cas() noexcept {}
};
}  // namespace detail

template <class Clock = steady_clock>
class alignas(TOLLGATE_CACHELINE_SIZE) token_bucket {
  using L = detail::gcra_limits;

 public:
  using clock = Clock;
  enum class start { full, empty };

  // Builds a bucket whose origin is Clock::now(). Throws config_error (or,
  // without exceptions, aborts with the reason) on a bad configuration.
  token_bucket(rate r, std::uint64_t burst, start s = start::full) : token_bucket(r, burst, Clock::now(), s) {}

  // Builds a bucket with an explicit origin: times before it count as it.
  token_bucket(rate r, std::uint64_t burst, nanoseconds origin, start s = start::full) {
    const errc e = init(r, burst, origin, s);
    if (e != errc::ok) detail::fail(e);
  }

  // Never throws: on a bad configuration sets `ec` and builds a bucket that
  // refuses everything with reason::misconfigured.
  token_bucket(rate r, std::uint64_t burst, nanoseconds origin, start s, errc& ec) noexcept {
    ec = init(r, burst, origin, s);
  }

  token_bucket(const token_bucket&) = delete;
  token_bucket& operator=(const token_bucket&) = delete;
  // Checks a configuration without building anything.
  static constexpr errc validate(rate r, std::uint64_t burst) noexcept {
    detail::gcra_params p{};
    return detail::make_gcra_params(r, burst, p);
  }

  // Takes n units if the bucket holds them at `now`.
  decision try_acquire(std::uint64_t n, nanoseconds now) noexcept { return acquire(n, 0, now, nullptr); }
  decision try_acquire(std::uint64_t n = 1) noexcept { return try_acquire(n, Clock::now()); }
  // The same, filling `t` for a later refund (a refusal leaves it empty).
  decision try_acquire(std::uint64_t n, nanoseconds now, bucket_ticket& t) noexcept { return acquire(n, 0, now, &t); }
  // Takes n units if the bucket holds them at `now` and, in the same step,
  // charges `extra` more as debt (usage known to follow the admission). The
  // ticket covers all n + extra units. n == 0 admits and only charges.
  decision try_acquire_and_charge(std::uint64_t n, std::uint64_t extra, nanoseconds now, bucket_ticket& t) noexcept {
    return acquire(n, extra, now, &t);
  }

  // Charges n units unconditionally: usage learnt after the fact becomes a
  // debt that later requests wait out. Saturates at the horizon (one
  // interval below the top of the ticks, so that the wait a request after it
  // is given stays exact).
  void charge(std::uint64_t n, nanoseconds now) noexcept { (void)acquire(0, n, now, nullptr); }
  void charge(std::uint64_t n) noexcept { charge(n, Clock::now()); }

  // Gives back up to n of the units an admission took, as its ticket allows,
  // and returns how many it gave (the ticket keeps the rest): at most
  //     min(n, t.units, (t.end - now) / T, owed(now) / T)
  // whole units, the part of the admission's own intervals still ahead (see
  // bucket_ticket.hpp; the test oracle checks it). A ticket from before a set_rate,
  // set_burst or reset returns nothing, nor one of another bucket (by its
  // address and configuration number: bucket_ticket.hpp states the residue). A refund at a `now` that lags the latest
  // time seen by d can return up to ceil(d / T) units early (the skew bound above).
  std::uint64_t refund(bucket_ticket& t, std::uint64_t n, nanoseconds now) noexcept;

  // Deprecated: a refund without a ticket takes n intervals off the current
  // TAT, which is safe only when no other admission came after the units
  // being returned (one owner undoing its own last acquire). Otherwise it can
  // cancel a later caller's charge; use the ticket overload. The bucket
  // never holds more than B and the TAT never moves below `now`. Returns the
  // whole units actually returned.
  std::uint64_t refund(std::uint64_t n, nanoseconds now) noexcept;
  std::uint64_t refund(std::uint64_t n) noexcept { return refund(n, Clock::now()); }

  // Whole units available at `now` (peek: consumes nothing).
  std::uint64_t available(nanoseconds now) const noexcept {
    const std::uint64_t w = state_.load(std::memory_order_acquire);  // acquire: as in acquire()
    const detail::gcra_params p = hot_params_of(w);
    if (p.burst == 0) return 0;
    return detail::gcra_available(w & L::max_ticks, ticks(now, p), p);
  }
  std::uint64_t available() const noexcept { return available(Clock::now()); }

  // What try_acquire(n, now) would answer, without consuming.
  decision time_until(std::uint64_t n, nanoseconds now) const noexcept {
    if (n == 0) return decision::admit();
    const std::uint64_t w = state_.load(std::memory_order_acquire);  // acquire: as in acquire()
    const detail::gcra_params p = hot_params_of(w);
    if (p.burst == 0) return decision::refuse(reason::misconfigured);
    if (n > p.burst) return decision::refuse(reason::exceeds_capacity);
    const std::uint64_t now_t = ticks(now, p);
    const std::uint64_t tat = w & L::max_ticks;
    const std::uint64_t need = (tat > now_t ? tat : now_t) + n * p.interval;
    if (need - now_t > p.tau) return decision::wait(wait_from(now, need - now_t - p.tau, p));
    return decision::admit();
  }
  decision time_until(std::uint64_t n = 1) const noexcept { return time_until(n, Clock::now()); }

  // Time from `now` until the bucket is full again (its reset time).
  nanoseconds full_in(nanoseconds now) const noexcept {
    const std::uint64_t w = state_.load(std::memory_order_acquire);  // acquire: as in acquire()
    const detail::gcra_params p = hot_params_of(w);
    if (p.burst == 0) return nanoseconds(0);
    const std::uint64_t now_t = ticks(now, p);
    const std::uint64_t tat = w & L::max_ticks;
    return tat > now_t ? wait_from(now, tat - now_t, p) : nanoseconds(0);
  }

  // Snapshot support: what is owed at `now` (time until the bucket is full
  // again), and its inverse for a bucket that has admitted nothing yet:
  // tickets of the bucket whose owed() is restored give nothing back here
  // (bucket_ticket.hpp), but this bucket's own from before it would.
  nanoseconds owed(nanoseconds now) const noexcept { return full_in(now); }
  void restore_owed(nanoseconds owed_for, nanoseconds now) noexcept {
    std::uint64_t w = state_.load(std::memory_order_acquire);  // acquire: as in acquire()
    const detail::gcra_params p = params_of(w);
    if (p.burst == 0) return;
    const std::uint64_t tat = detail::gcra_owing(owed_for.count(), now.count(), p);
    // release: as in reconfigure; the bucket is not shared yet anyway.
    state_.store((w & ~L::max_ticks) | tat, std::memory_order_release);
  }

  // Forgets everything owed: the bucket is full (or empty, with
  // start::empty) as of `now`, and its epoch moves to `now` (or stays at the
  // origin for an earlier one). For recovering from a bogus far-future `now`
  // (see the header); more permissive than anything else here, by design.
  // Takes turns with set_rate on the owner word; an acquire racing it is
  // decided before or after it (the generation check). Tickets from before
  // it give nothing back.
  void reset(nanoseconds now, start st = start::full) noexcept;

  // Live changes keep the units owed at `now` (see the contract above for a
  // stale `now`); an invalid configuration is refused and changes nothing.
  [[nodiscard]] errc set_rate(rate r, nanoseconds now) noexcept { return reconfigure(&r, nullptr, now); }
  [[nodiscard]] errc set_rate(rate r) noexcept { return set_rate(r, Clock::now()); }
  [[nodiscard]] errc set_burst(std::uint64_t b, nanoseconds now) noexcept { return reconfigure(nullptr, &b, now); }
  [[nodiscard]] errc set_burst(std::uint64_t b) noexcept { return set_burst(b, Clock::now()); }

  rate current_rate() const noexcept {
    return slots_.rate_of(slot_index(state_.load(std::memory_order_acquire)));  // acquire: as in acquire()
  }
  std::uint64_t burst() const noexcept { return in_force().burst; }
  // True when the interval in force is exactly period / count.
  bool exact() const noexcept { return in_force().exact; }
  // The rate actually enforced: scale units per (interval in ticks) ns. It
  // equals the configured rate (reduced) when exact(), else it is slower by
  // less than 0.1 %.
  rate effective_rate() const noexcept {
    const detail::gcra_params p = in_force();
    return rate(p.scale, nanoseconds(static_cast<std::int64_t>(p.interval)));
  }
  // The emission interval in force, rounded up to whole nanoseconds.
  nanoseconds interval() const noexcept { return nanoseconds(detail::gcra_interval_ns(in_force())); }
  // How far from its epoch the bucket counts exactly (at least 10 years; the
  // epoch moves forward long before, see the header).
  nanoseconds horizon() const noexcept { return nanoseconds(detail::gcra_horizon_ns(in_force())); }
  nanoseconds origin() const noexcept { return nanoseconds(origin_); }
  // The epoch in force: the origin, or where it has moved to.
  nanoseconds epoch() const noexcept { return nanoseconds(in_force().epoch); }

 private:
  // try_acquire, try_acquire_and_charge and charge: one CAS that adds
  // n + extra intervals, checking only n against the burst (n == 0: none).
  // The tag has two bits, so four reconfigurations while this call is
  // between its read and its CAS can bring back the very word it read, under
  // another installation of the same slot: the slot's generation, read before
  // the parameters and again after the CAS, differs exactly then. Such a CAS
  // only raised the TAT; it is undone if the word is still its own (else
  // kept: debt, the safe side), and the call decides again under the
  // configuration in force. No decision comes from a stale configuration.
  decision acquire(std::uint64_t n, std::uint64_t extra, nanoseconds now, bucket_ticket* t) noexcept {
    if (t) *t = bucket_ticket{};
    if (n == 0 && extra == 0) return decision::admit();
    // The parameters first, from the slot last installed, checked against
    // the word (see "Reading a slot" in detail/bucket_slots.hpp).
    std::size_t i = slots_.hint();
    detail::gcra_params p = slots_.hot(i);
    std::uint64_t now_t = ticks(now, p);
    detail::token_bucket_stall<Clock>::before_load();
    // acquire: pairs with the release CAS in reconfigure_locked() (or store
    // in reset()) that installed the tag we read, or any RMW after it, which
    // continues that release sequence: that slot's contents are visible.
    std::uint64_t w = state_.load(std::memory_order_acquire);
    if (refresh(w, i, p)) now_t = ticks(now, p);
    if (__builtin_expect(detail::gcra_move_due(now_t), 0)) {
      try_move_epoch(now);
      w = state_.load(std::memory_order_acquire);  // acquire: as above
      if (refresh(w, i, p)) now_t = ticks(now, p);
    }
    for (;;) {
      if (p.burst == 0) return decision::refuse(reason::misconfigured);
      if (n > p.burst) return decision::refuse(reason::exceeds_capacity);
      const std::uint64_t tat = w & L::max_ticks;
      const std::uint64_t base = tat > now_t ? tat : now_t;
      // Saturating: a torn read of a slot being rewritten (caught below) must
      // not wrap into a TAT lower than the one read.
      const std::uint64_t need = detail::sat_add(base, detail::sat_mul(n, p.interval));
      if (n > 0 && need - now_t > p.tau) return decision::wait(wait_from(now, need - now_t - p.tau, p));
      std::uint64_t next = need;
      if (extra > 0) next = detail::sat_add(need, detail::sat_mul(extra, p.interval));
      // Saturates at the horizon, one interval below the top (gcra_top): a
      // request after it stays admissible at the wait it is given. Never
      // below `need` (>= tat; <= max_ticks, or it was refused above).
      const std::uint64_t top = detail::gcra_top(p, now_t);
      if (next > top) next = need > top ? need : top;
      const std::uint64_t nw = (w & ~L::max_ticks) | next;
      detail::token_bucket_stall<Clock>::before_cas();
      // acq_rel on success: acquire makes the generation check below see any
      // reinstallation of the slot whose tag this word carries (written
      // before the CAS that installed it, which this CAS follows); release
      // keeps this RMW in the release sequence of the last reconfiguration.
      // On failure `w` is reloaded with acquire, as the first load.
      if (state_.compare_exchange_weak(w, nw, std::memory_order_acq_rel, std::memory_order_acquire)) {
        if (t) p.config = slots_.config(i);  // checked with the generation below, as the other fields
        if (__builtin_expect(slots_.gen(i) == p.gen, 1)) {  // ordered after the CAS, see above
          if (t)
            *t = detail::make_bucket_ticket(p, origin_, now_t, base, next, n, extra,
                                            reinterpret_cast<std::uintptr_t>(this));
          return decision::admit();
        }
        // Stale: undo if the word is still ours. acq_rel / acquire: as above.
        std::uint64_t cur = nw;
        if (state_.compare_exchange_strong(cur, w, std::memory_order_acq_rel, std::memory_order_acquire)) cur = w;
        w = cur;
      }
      if (refresh(w, i, p)) now_t = ticks(now, p);  // lost a race (`w` is the word now) or met a stale slot
    }
  }
  // Re-reads the parameters (and says so) unless slot i's installation `p` is
  // still the one in force at `w` (loaded, or CAS'd, with acquire before).
  bool refresh(std::uint64_t w, std::size_t& i, detail::gcra_params& p) const noexcept {
    if (__builtin_expect(slot_index(w) == i && slots_.gen(i) == p.gen, 1)) return false;
    i = slot_index(w);
    p = slots_.hot(i);
    return true;
  }

  static std::size_t slot_index(std::uint64_t w) noexcept { return static_cast<std::size_t>(w >> L::tat_bits); }

  detail::gcra_params hot_params_of(std::uint64_t w) const noexcept { return slots_.hot(slot_index(w)); }
  detail::gcra_params params_of(std::uint64_t w) const noexcept { return slots_.full(slot_index(w)); }
  // acquire: as in acquire().
  detail::gcra_params in_force() const noexcept { return params_of(state_.load(std::memory_order_acquire)); }

  static std::uint64_t ticks(nanoseconds now, const detail::gcra_params& p) noexcept {
    return detail::gcra_ticks(now.count(), p);
  }
  static nanoseconds wait_from(nanoseconds now, std::uint64_t t, const detail::gcra_params& p) noexcept {
    return nanoseconds(detail::gcra_wait_from(now.count(), t, p));
  }

  // Moves the epoch if no writer is inside: try once, never wait (the hot
  // paths call it; years of room remain to try again).
  [[gnu::noinline, gnu::cold]] void try_move_epoch(nanoseconds now) noexcept {
    const std::uint64_t id = writer_.new_claim();
    if (!writer_.try_lock(id)) return;  // a writer is inside
    bool lost = false;
    (void)reconfigure_locked(id, nullptr, nullptr, now, lost);  // lost: the taker moves it if due
  }

  // Lowers the word `w` (tag i, read with the installation `p`) by `by`
  // ticks, for a refund. True when done under that installation; false with
  // `w` reloaded when the word moved (decide again). A CAS that lands on a
  // slot refilled since `p` was read (four reconfigurations during the
  // call, the word back to its value) is undone if the word is still ours;
  // if not, the ticks are owed again (added back). Either way the call
  // decides again under the slot in force.
  bool lower(std::uint64_t& w, std::size_t i, const detail::gcra_params& p, std::uint64_t by) noexcept;

  // Takes the owner word with a new claim number and returns it; after a
  // takeover, first owes one tick more in the state word, so that the old
  // holder's installing CAS, which expects the word it read, fails (see
  // detail/bucket_slots.hpp). 0 when taken over in turn meanwhile.
  std::uint64_t claim() noexcept {
    const std::uint64_t id = writer_.new_claim();
    if (!writer_.lock(id)) return id;
    std::uint64_t w = state_.load(std::memory_order_acquire);  // acquire: as in acquire()
    while (writer_.holds(id)) {
      const std::uint64_t tat = w & L::max_ticks;
      const std::uint64_t nt = tat < L::max_ticks ? tat + 1 : tat - 1;  // a change either way: saturated, one less
      // acq_rel / acquire: as in acquire(); a charge of one tick, the safe side.
      if (state_.compare_exchange_weak(w, (w & ~L::max_ticks) | nt, std::memory_order_acq_rel,
                                       std::memory_order_acquire))
        return id;
    }
    return 0;
  }

  errc init(rate r, std::uint64_t burst, nanoseconds origin, start st) noexcept;

  // Installs a new rate and/or burst (a null pointer keeps the current one),
  // moving the epoch if `now` is far enough from it. A writer taken over
  // starts again with a new claim.
  errc reconfigure(const rate* nr, const std::uint64_t* nb, nanoseconds now) noexcept {
    for (;;) {
      const std::uint64_t id = claim();
      if (id == 0) continue;
      bool lost = false;
      const errc e = reconfigure_locked(id, nr, nb, now, lost);
      if (!lost) return e;
    }
  }
  // The same, with the owner word held by `id`; releases it, or sets `lost`
  // when taken over (nothing installed, the owner word is the taker's).
  errc reconfigure_locked(std::uint64_t id, const rate* nr, const std::uint64_t* nb, nanoseconds now,
                          bool& lost) noexcept;

  // The state word has its line to itself; what acquirers only read starts
  // on the next line, so another thread's CAS never evicts it. The owner
  // word, which only writers touch, sits after the origin.
  detail::atomic<std::uint64_t> state_{0};
  alignas(TOLLGATE_CACHELINE_SIZE) std::int64_t origin_ = 0;  // written once, before the object is shared
  detail::bucket_writer writer_;
  detail::bucket_slots slots_;

  static_assert(std::atomic<std::uint64_t>::is_always_lock_free, "tollgate needs lock-free 64-bit atomics");
};

TOLLGATE_END_NAMESPACE

// The writers' definitions, which need the class complete.
// #include <tollgate/bucket/writers.hpp>  (inlined below)
// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// bucket/writers.hpp: token_bucket's writers, none of which takes a lock:
// refunds (by ticket, or the unsafe uncapped form), reset, the
// reconfiguration of the rate and the burst, and construction.
//
// Contract (each function's own is with its declaration, token_bucket.hpp).
// A writer claims the owner word with a number no other claim repeats; one
// that shows no change for TOLLGATE_BUCKET_TAKEOVER_POLLS looks is taken
// over, so a writer that stopped for good (a process killed inside
// set_rate) delays the next one, never blocks it. Every slot field a writer
// writes carries its claim, so a writer taken over cannot finish its change
// over the taker's. Refunds exclude nobody: they check the configuration's
// generation after their CAS, as acquirers do, and undo or charge back a
// stale one. The residual cases are stated in token_bucket.hpp.
//
// This header is included by token_bucket.hpp after the class; including
// it alone includes token_bucket.hpp first.
#ifndef TOLLGATE_BUCKET_WRITERS_HPP
#define TOLLGATE_BUCKET_WRITERS_HPP

// #include <tollgate/token_bucket.hpp>  (already above)
// #include <tollgate/config.hpp>  (already above)
// #include <tollgate/bucket_ticket.hpp>  (already above)
// #include <tollgate/decision.hpp>  (already above)
// #include <tollgate/detail/arith.hpp>  (already above)
// #include <tollgate/detail/bucket_slots.hpp>  (already above)
// #include <tollgate/detail/gcra_params.hpp>  (already above)
// #include <tollgate/error.hpp>  (already above)
// #include <tollgate/rate.hpp>  (already above)

#include <cstddef>
#include <cstdint>

TOLLGATE_BEGIN_NAMESPACE

template <class Clock>
std::uint64_t token_bucket<Clock>::refund(bucket_ticket& t, std::uint64_t n, nanoseconds now) noexcept {
  if (n > t.units) n = t.units;
  if (n == 0) return 0;
  if (t.issuer != 0 && t.issuer != reinterpret_cast<std::uintptr_t>(this)) return 0;  // another bucket's
  std::uint64_t got = 0;
  std::uint64_t w = state_.load(std::memory_order_acquire);  // acquire: as in acquire()
  for (;;) {
    const std::size_t i = slot_index(w);
    detail::gcra_params p = slots_.hot(i);
    p.config = slots_.config(i);
    if (p.burst == 0 || p.config != t.config) break;
    const std::uint64_t tat = w & L::max_ticks;
    const std::uint64_t k = detail::ticket_refundable(t, n, now.count(), origin_, p, tat, ticks(now, p));
    if (k == 0) break;
    if (lower(w, i, p, k * p.interval)) {
      got = k;
      t.end -= k * p.interval;  // no wrap (k fits in t.end - now); its intervals end sooner
      break;
    }
  }
  t.units -= got;
  return got;
}

template <class Clock>
std::uint64_t token_bucket<Clock>::refund(std::uint64_t n, nanoseconds now) noexcept {
  if (n == 0) return 0;
  std::uint64_t w = state_.load(std::memory_order_acquire);  // acquire: as in acquire()
  for (;;) {
    const std::size_t i = slot_index(w);
    const detail::gcra_params p = slots_.hot(i);
    if (p.burst == 0) return 0;
    const std::uint64_t now_t = ticks(now, p);
    const std::uint64_t tat = w & L::max_ticks;
    if (tat <= now_t) return 0;  // already full at `now`
    const std::uint64_t back = detail::sat_mul(n, p.interval);
    const std::uint64_t next = tat - now_t > back ? tat - back : now_t;
    if (lower(w, i, p, tat - next)) return (tat - next) / p.interval;
  }
}

template <class Clock>
void token_bucket<Clock>::reset(nanoseconds now, start st) noexcept {
  for (;;) {
    const std::uint64_t id = claim();
    if (id == 0) continue;  // taken over while fencing: claim again
    const auto mine = [&] { return writer_.holds(id); };
    std::uint64_t w = state_.load(std::memory_order_acquire);  // acquire: as in acquire()
    detail::gcra_params p = params_of(w);
    if (p.burst == 0) {
      writer_.unlock(id);
      return;
    }
    const std::size_t cur = slot_index(w), next = detail::bucket_slots::next(cur);
    const rate r = slots_.rate_of(cur);
    p.epoch = now.count() > origin_ ? now.count() : origin_;
    // A new installation (stalled callers see it by the generation) and a
    // new configuration: what was owed is forgotten, so no ticket from
    // before may give back against what comes after.
    p.gen = id;
    p.config = detail::fresh_bucket_config();
    if (!slots_.store(next, p, r, mine)) continue;  // taken over: the taker fills it
    const std::uint64_t nw = (static_cast<std::uint64_t>(next) << L::tat_bits) | (st == start::full ? 0 : p.tau);
    bool done = false;
    while (mine() && slot_index(w) == cur) {
      // release: publishes the slot, as in reconfigure_locked(); acquire
      // on failure: reload as usual. Whatever an acquirer did meanwhile is
      // forgotten too (one that read the old slot fails its CAS or its
      // generation check).
      if (state_.compare_exchange_weak(w, nw, std::memory_order_acq_rel, std::memory_order_acquire)) {
        done = true;
        break;
      }
    }
    if (!done) continue;
    slots_.set_hint(next);
    writer_.unlock(id);
    return;
  }
}

template <class Clock>
bool token_bucket<Clock>::lower(std::uint64_t& w, std::size_t i, const detail::gcra_params& p, std::uint64_t by) noexcept {
  const std::uint64_t nw = w - by;  // by <= the TAT: the tag bits stay
  // acq_rel / acquire: as in acquire(); the generation check after it is
  // ordered by the acquire half.
  if (!state_.compare_exchange_weak(w, nw, std::memory_order_acq_rel, std::memory_order_acquire)) return false;
  if (__builtin_expect(slots_.gen(i) == p.gen, 1)) return true;
  std::uint64_t cur = nw;
  // acq_rel / acquire: as above.
  if (state_.compare_exchange_strong(cur, w, std::memory_order_acq_rel, std::memory_order_acquire)) return false;
  for (;;) {  // overtaken: owe the ticks again, in whatever slot is in force now
    const std::uint64_t tat = cur & L::max_ticks;
    const std::uint64_t back = tat + by > L::max_ticks ? L::max_ticks : tat + by;
    // acq_rel / acquire: as above.
    if (state_.compare_exchange_weak(cur, (cur & ~L::max_ticks) | back, std::memory_order_acq_rel,
                                     std::memory_order_acquire))
      break;
  }
  w = cur;
  return false;
}

template <class Clock>
errc token_bucket<Clock>::init(rate r, std::uint64_t burst, nanoseconds origin, start st) noexcept {
  origin_ = origin.count();
  detail::gcra_params p{};
  const errc e = detail::make_gcra_params(r, burst, p);
  p.epoch = origin_;
  p.gen = 1;  // the construction's claim number
  p.config = detail::fresh_bucket_config();  // not another bucket's (bucket_ticket.hpp)
  if (e != errc::ok) {  // slot 0 stays zero but its epoch: burst 0 means misconfigured
    slots_.init(0, detail::gcra_params{0, 0, 0, 0, false, origin_, 1, 0}, rate());
    return e;
  }
  slots_.init(0, p, r);
  // relaxed: construction happens before any other thread can see the
  // object (publishing it is the user's synchronisation).
  state_.store(st == start::full ? 0 : p.tau, std::memory_order_relaxed);
  return errc::ok;
}

template <class Clock>
errc token_bucket<Clock>::reconfigure_locked(std::uint64_t id, const rate* nr, const std::uint64_t* nb, nanoseconds now,
                                              bool& lost) noexcept {
  const auto mine = [&] { return writer_.holds(id); };
  std::uint64_t w = state_.load(std::memory_order_acquire);  // acquire: as in acquire()
  const std::size_t cur = slot_index(w);
  // Nobody rewrites the slot in force, so these reads are stable.
  const detail::gcra_params cp = params_of(w);
  const rate r = nr ? *nr : slots_.rate_of(cur);
  const std::uint64_t b = nb ? *nb : cp.burst;
  detail::gcra_params np{};
  const errc e = cp.burst == 0 ? errc::ok : detail::make_gcra_params(r, b, np);
  if (cp.burst == 0 || e != errc::ok) {  // a misconfigured bucket stays so
    writer_.unlock(id);
    return e;
  }
  np.epoch = detail::gcra_epoch_for(np, cp.epoch, now.count());
  if (!nr && !nb && np.epoch == cp.epoch) {  // an epoch move that another writer already made
    writer_.unlock(id);
    return errc::ok;
  }
  // An epoch move keeps the configuration (tickets stay good: it is exact).
  np.config = nr || nb ? detail::fresh_bucket_config() : cp.config;
  np.gen = id;
  const std::size_t next = detail::bucket_slots::next(cur);
  if (!slots_.store(next, np, r, mine)) {
    lost = true;
    return errc::ok;
  }
  for (;;) {
    // Taken over (or, past a takeover, the word came back to a value we
    // read and another slot is in force): the taker decides.
    if (!mine() || slot_index(w) != cur) {
      lost = true;
      return errc::ok;
    }
    const std::uint64_t nt = detail::gcra_convert_tat(w & L::max_ticks, cp, np, now.count());
    // release: publishes the slot written above to every reader that
    // acquires a word carrying its tag. acquire on failure: reload as usual.
    if (state_.compare_exchange_weak(w, (static_cast<std::uint64_t>(next) << L::tat_bits) | nt,
                                     std::memory_order_acq_rel, std::memory_order_acquire))
      break;
  }
  slots_.set_hint(next);
  writer_.unlock(id);
  return errc::ok;
}

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_BUCKET_WRITERS_HPP

#endif  // TOLLGATE_TOKEN_BUCKET_HPP
// #include <tollgate/sliding_window.hpp>  (inlined below)
// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// sliding_window.hpp: a strict, lock-free sliding-window counter.
//
// Guarantee. For a limit L per window W: in every half-open window (t - W, t]
// of the supplied timestamps, the units admitted never exceed L, under any
// interleaving of threads. No server that counts "at most L in any W" can
// reject what this admitted (see the compliance tables in docs/server-models.md).
//
// How. Time is cut into slots of width w = ceil(W / K) (K = `Subwindows`,
// default 15). A request at slot s is admitted if the units already admitted
// in slots s-K .. s, plus its own, stay within L. Those K+1 slots cover every
// window (t - W, t] with t in slot s, so the bound holds; the price is that
// the oldest slot counts in full although part of it has left the window.
// Under saturation the window therefore admits about K/(K+1) of L per W
// (15/16 = 93.75 % by default): more sub-windows, more throughput, more
// state. Exactly: a caller that asks continuously gets L per (K+1)*w.
//
// State (fixed size, address-free, shareable between processes): one head
// word {current slot h: 40 bits, units admitted in h: 24 bits} decided by a
// single CAS, and a ring of K+1 words {slot tag: 40 bits, units: 24 bits}
// holding the final counts of the K slots before h, plus one word caching
// their sum for the current head. The thread that moves the head past slot h
// writes h's count into the ring and the new sum into the cache *before* its
// CAS, so any thread that sees the new head also sees both. Hence L (in units) is at
// most 2^24 - 1 = 16,777,215. Larger limits are counted in units of
// u = ceil(L / (2^24 - 1)) tokens: every request is rounded up to whole units
// and L down, so the bound still holds (u = 1 for every Kimi limit; `unit()`
// tells). The 40-bit slot number gives at least 10 years from the origin:
// slots of at least 287,015 ns, so the shortest window is min_window =
// (287,015 - 1) * K + 1 ns, 4,305,211 ns (about 4.3 ms) for the default
// K = 15 and 287,015 ns for K = 1; a shorter one is refused with
// errc::window_too_short. Charges can fill a field: counts saturate at
// 2^24 - 1, which then reads "at least this many". Such a count is never
// refunded from, and a saturated cached sum is not used: decisions and
// retry_after then add up the ring's per-slot counts.
//
// Why this layout (measured in bench/, one thread, same run): one 64-bit word
// of four 12-bit counts is as cheap (0.93x) but caps L at 4,095 with only
// four counters (3/4 of L per W under saturation); a 16-byte CAS alone costs
// 2.6x a one-word CAS and is not lock-free through std::atomic here; coarser
// units fit any L but round every request up. This design reads two words
// and CASes one.
//
// Time going backwards. A `now` in the current head slot or later is exact. A
// `now` in a slot the head has already left cannot be checked (the ring no
// longer holds every window it falls in): it is refused with
// reason::stale_time and retry_after = the time to the head slot's start;
// retry with a fresh clock reading. The Clock overloads re-read the clock.
// The same rule means that one admission or charge at a bogus far-future
// `now` (INT64_MAX, say) moves the head there, and every ordinary `now`
// afterwards is stale (for up to 292 years). The window has not been made
// more permissive, as stated; the way out is `reset()`, which forgets every
// count.
//
// Extreme times. Every function is defined for every `now`: times before the
// origin count as the origin; times past the last of the 2^40 slots count as
// that slot; waits saturate at INT64_MAX and are never negative.
//
// Decisions. n == 0 is admitted and changes nothing. ceil(n/u) > L is
// `never`. A refusal writes nothing; its retry_after is exact: the start of
// the first slot at which the request fits, assuming no other admissions.
//
// Refunds. try_acquire can fill a window_ticket; refund(ticket, n) returns up
// to the ticket's remaining tokens. A refund into a slot that has left the
// window is a no-op (nothing to give back), and so is one into a slot whose
// count is at its ceiling of 2^24 - 1 units (after charge(), say): such a
// count means "at least this many", so no unit of it is provably the
// ticket's, and giving any back could re-open a window that is over its
// limit (the ticket is then left as it was). Concurrent races only ever make
// the ring over-count (the safe side). refund_to_head gives back only while
// the ticket's slot is the head (through the head's release CAS), for callers
// that must know a reader who sees the refund sees what they did before it.
// A ticket of another window, or from before an import, gives nothing back
// (by the issuer's address and identity; window/ticket.hpp states the
// residue).
//
// Live change. set_limit is thread-safe; in any window that spans a change at
// most the larger of the two limits is admitted.
//
// Concurrency contract. All member functions are thread-safe and lock-free.
// try_acquire is one acquire load of the head, one relaxed load of the
// cached sum of the K older slots, and one CAS; moving the head to a new slot
// reads the K ring words and adds a CAS on a ring word and on the cache.
// available/time_until read a snapshot that may be stale on return.
#ifndef TOLLGATE_SLIDING_WINDOW_HPP
#define TOLLGATE_SLIDING_WINDOW_HPP

// #include <tollgate/config.hpp>  (already above)
// #include <tollgate/clock.hpp>  (already above)
// #include <tollgate/decision.hpp>  (already above)
// #include <tollgate/detail/arith.hpp>  (already above)
// #include <tollgate/detail/atomic.hpp>  (already above)
// #include <tollgate/error.hpp>  (already above)
// #include <tollgate/rate.hpp>  (already above)
// #include <tollgate/window/ticket.hpp>  (inlined below)
// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// window/ticket.hpp: the strict window's state word and its ticket.
//
// Contract. One 64-bit word {slot: 40 bits, units: 24 bits} is the unit of
// the window's state (its head, its ring, its cached sum): a count of at most
// 2^24 - 1 units per slot, and 2^40 slots, at least 10 years from the origin
// at the shortest slot width (287,015 ns). The words are plain integers: the
// same in any process that maps them. A window_ticket records what one
// admission charged, so that a refund gives back only that (move-only: a copy
// could refund the same tokens twice; a moved-from ticket holds nothing).
// A ticket names the window object that issued it, twice: by its address in
// the issuing process (two live objects of one process never share one, so
// another live window's ticket is refused for certain, also a ticket of a
// window another process built in shared memory) and by an identity drawn
// at construction and again by import_counts and import_slots
// (detail/identity.hpp: never repeated within a process, salted per
// process, so identities two processes draw, n and m of them, meet with
// probability at most (n + m + 1) / 2^64). A ticket of another window, or
// of this one from before an import, gives nothing back: not into a window
// restored from the old one's counts, which would otherwise give back units
// of an admission it never counted. What the identity alone tells apart
// (with that probability; for certain when this process drew both): a
// ticket refunded into a window now at the issuer's address (the issuer
// destroyed, or its region unmapped and another mapped there) and a ticket
// carried to another process. A ticket built from a slot and tokens (the
// account's) names no window (0, 0) and is not checked.
#ifndef TOLLGATE_WINDOW_TICKET_HPP
#define TOLLGATE_WINDOW_TICKET_HPP

// #include <tollgate/config.hpp>  (already above)
// #include <tollgate/detail/identity.hpp>  (already above)

#include <cstdint>
#include <utility>

TOLLGATE_BEGIN_NAMESPACE

// What a window admission charged: needed to refund it. Move-only: a copy
// could refund the same tokens twice. A moved-from ticket holds nothing, so
// refunding it is a no-op.
struct window_ticket {
  std::uint64_t slot = 0;    // the slot charged
  std::uint64_t tokens = 0;  // tokens still charged to it
  std::uint64_t units = 0;   // the same, in the window's units (rounded up)
  std::uint64_t window = 0;  // the issuing window's identity; 0: not checked
  std::uintptr_t issuer = 0;  // the issuing window's address in this process; 0: not checked

  constexpr window_ticket() noexcept = default;
  constexpr window_ticket(std::uint64_t s, std::uint64_t t, std::uint64_t u) noexcept : slot(s), tokens(t), units(u) {}
  constexpr window_ticket(std::uint64_t s, std::uint64_t t, std::uint64_t u, std::uint64_t w,
                          std::uintptr_t i = 0) noexcept
      : slot(s), tokens(t), units(u), window(w), issuer(i) {}
  window_ticket(const window_ticket&) = delete;
  window_ticket& operator=(const window_ticket&) = delete;
  window_ticket(window_ticket&& o) noexcept
      : slot(o.slot), tokens(std::exchange(o.tokens, 0)), units(std::exchange(o.units, 0)), window(o.window),
        issuer(o.issuer) {}
  window_ticket& operator=(window_ticket&& o) noexcept {
    if (this != &o) {
      slot = o.slot;
      window = o.window;
      issuer = o.issuer;
      tokens = std::exchange(o.tokens, 0);
      units = std::exchange(o.units, 0);
    }
    return *this;
  }
};

namespace detail {

// A new window identity (detail/identity.hpp); it reaches other threads
// with the window itself.
inline std::uint64_t next_window_id() noexcept { return fresh_identity(); }
struct window_limits {
  static constexpr unsigned count_bits = 24;
  static constexpr std::uint64_t max_units = (std::uint64_t{1} << count_bits) - 1;
  static constexpr unsigned slot_bits = 40;
  static constexpr std::uint64_t max_slot = (std::uint64_t{1} << slot_bits) - 1;
  static constexpr std::uint64_t min_horizon_ns = 315576000ULL * 1000000000ULL;  // 10 Julian years
  static constexpr std::uint64_t min_width_ns = (min_horizon_ns + max_slot - 1) / max_slot;
  // errc::window_too_short's message states this figure.
  static_assert(min_width_ns == 287015, "update message(errc::window_too_short)");
};

constexpr std::uint64_t pack_slot(std::uint64_t slot, std::uint64_t units) noexcept {
  return (slot << window_limits::count_bits) | units;
}
constexpr std::uint64_t slot_of_word(std::uint64_t w) noexcept { return w >> window_limits::count_bits; }
constexpr std::uint64_t units_of_word(std::uint64_t w) noexcept { return w & window_limits::max_units; }
}  // namespace detail

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_WINDOW_TICKET_HPP

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

TOLLGATE_BEGIN_NAMESPACE


template <class Clock = steady_clock, std::size_t Subwindows = 15>
class alignas(TOLLGATE_CACHELINE_SIZE) sliding_window {
  static_assert(Subwindows >= 1, "a window needs at least one sub-window");
  static_assert(Subwindows <= 4096, "more than 4096 sub-windows makes every admission slow");
  using L = detail::window_limits;
  static constexpr std::uint64_t K = Subwindows;
  static constexpr std::size_t ring_size = Subwindows + 1;

 public:
  using clock = Clock;
  static constexpr std::size_t subwindows = Subwindows;
  // The shortest window this many sub-windows allow (see the header comment).
  static constexpr nanoseconds min_window{static_cast<std::int64_t>((L::min_width_ns - 1) * K + 1)};

  // limit = r.count units per window r.period; origin = Clock::now().
  explicit sliding_window(rate r) : sliding_window(r, Clock::now()) {}
  sliding_window(rate r, nanoseconds origin) {
    const errc e = init(r, origin);
    if (e != errc::ok) detail::fail(e);
  }
  // Never throws: on error sets `ec`; the window then refuses everything.
  sliding_window(rate r, nanoseconds origin, errc& ec) noexcept { ec = init(r, origin); }

  sliding_window(const sliding_window&) = delete;
  sliding_window& operator=(const sliding_window&) = delete;

  static constexpr errc validate(rate r) noexcept {
    if (r.count == 0) return errc::zero_count;
    if (r.period.count() <= 0) return errc::zero_period;
    const std::uint64_t width = detail::ceil_div(static_cast<std::uint64_t>(r.period.count()), K);
    if (width < L::min_width_ns) return errc::window_too_short;
    return errc::ok;
  }

  decision try_acquire(std::uint64_t n, nanoseconds now, window_ticket& ticket) noexcept {
    ticket = window_ticket{};
    if (n == 0) return decision::admit();
    const std::uint64_t u = unit_;
    if (u == 0) return decision::refuse(reason::misconfigured);
    const std::uint64_t lim = limit_.load(std::memory_order_relaxed);  // relaxed: a lone value, any recent one is valid
    const std::uint64_t nu = u == 1 ? n : detail::ceil_div(n, u);
    if (nu > lim) return decision::refuse(reason::exceeds_capacity);
    const std::uint64_t s = slot_at(now);
    // acquire: pairs with the CAS that installed this head (and, through it,
    // with the ring write its author made before that CAS).
    std::uint64_t w = head_.load(std::memory_order_acquire);
    for (;;) {
      const std::uint64_t h = detail::slot_of_word(w);
      const std::uint64_t cur = detail::units_of_word(w);
      if (s < h) return stale(h, now);
      const std::uint64_t used = window_sum(s, h, cur);
      if (used + nu > lim) return decision::wait(wait_for(s, h, cur, lim - nu, now));
      if (s == h) {
        // acq_rel: acquire as for the load above (on failure too); release
        // so a thread that later moves the head past h and reads this word
        // sees nothing older.
        if (head_.compare_exchange_weak(w, detail::pack_slot(h, cur + nu), std::memory_order_acq_rel,
                                        std::memory_order_acquire)) {
          ticket = window_ticket{s, n, nu, id_, reinterpret_cast<std::uintptr_t>(this)};
          return decision::admit();
        }
      } else {
        publish_final(h, cur);
        publish_older(s, used);  // slot s is empty: `used` is the sum of s-K .. s-1
        // acq_rel: release publishes the ring write just made to every thread
        // that acquires this head; acquire as above.
        if (head_.compare_exchange_weak(w, detail::pack_slot(s, nu), std::memory_order_acq_rel,
                                        std::memory_order_acquire)) {
          ticket = window_ticket{s, n, nu, id_, reinterpret_cast<std::uintptr_t>(this)};
          return decision::admit();
        }
      }
    }
  }
  decision try_acquire(std::uint64_t n, nanoseconds now) noexcept {
    window_ticket t;
    return try_acquire(n, now, t);
  }
  decision try_acquire(std::uint64_t n, window_ticket& ticket) noexcept {
    // A stale reading from this thread's own clock read means another thread
    // read a later time first: read again (bounded) rather than refuse.
    decision d = try_acquire(n, Clock::now(), ticket);
    for (int i = 0; i < 3 && d.why() == reason::stale_time; ++i) d = try_acquire(n, Clock::now(), ticket);
    return d;
  }
  decision try_acquire(std::uint64_t n = 1) noexcept {
    window_ticket t;
    return try_acquire(n, t);
  }

  // Charges n tokens unconditionally (usage learnt after the fact): the
  // window may go over its limit, and later admissions wait until the excess
  // has left it. A stale `now` charges the head slot. Saturates at 2^24 - 1
  // units per slot.
  void charge(std::uint64_t n, nanoseconds now) noexcept;
  void charge(std::uint64_t n) noexcept { charge(n, Clock::now()); }

  // Returns up to n of the ticket's tokens; returns the tokens given back
  // (0 when the ticket's slot has left the window). Updates the ticket.
  std::uint64_t refund(window_ticket& t, std::uint64_t n) noexcept { return refund_impl(t, n, false); }
  // The same, but only while the ticket's slot is still the head slot: a
  // refund that lands, if at all, through the head's release CAS (which a
  // reader acquiring the head then sees with everything stored before it).
  std::uint64_t refund_to_head(window_ticket& t, std::uint64_t n) noexcept { return refund_impl(t, n, true); }

  // Tokens that could be admitted at `now` (peek). A stale `now` is read as
  // the head slot.
  std::uint64_t available(nanoseconds now) const noexcept {
    if (unit_ == 0) return 0;
    const std::uint64_t lim = limit_.load(std::memory_order_relaxed);  // relaxed: as in try_acquire
    const std::uint64_t w = head_.load(std::memory_order_acquire);     // acquire: as in try_acquire
    const std::uint64_t h = detail::slot_of_word(w);
    std::uint64_t s = slot_at(now);
    if (s < h) s = h;
    const std::uint64_t used = window_sum(s, h, detail::units_of_word(w));
    return used >= lim ? 0 : (lim - used) * unit_;
  }
  std::uint64_t available() const noexcept { return available(Clock::now()); }

  // What try_acquire(n, now) would answer, without consuming.
  decision time_until(std::uint64_t n, nanoseconds now) const noexcept {
    if (n == 0) return decision::admit();
    if (unit_ == 0) return decision::refuse(reason::misconfigured);
    const std::uint64_t lim = limit_.load(std::memory_order_relaxed);  // relaxed: as in try_acquire
    const std::uint64_t nu = detail::ceil_div(n, unit_);
    if (nu > lim) return decision::refuse(reason::exceeds_capacity);
    const std::uint64_t w = head_.load(std::memory_order_acquire);  // acquire: as in try_acquire
    const std::uint64_t h = detail::slot_of_word(w);
    const std::uint64_t cur = detail::units_of_word(w);
    const std::uint64_t s = slot_at(now);
    if (s < h) return stale(h, now);
    if (window_sum(s, h, cur) + nu > lim) return decision::wait(wait_for(s, h, cur, lim - nu, now));
    return decision::admit();
  }
  decision time_until(std::uint64_t n = 1) const noexcept { return time_until(n, Clock::now()); }

  // Time from `now` until everything admitted so far has left the window:
  // until the newest slot that still counts something leaves it (zero for a
  // window that counts nothing, however recently its head moved).
  nanoseconds empty_in(nanoseconds now) const noexcept {
    if (unit_ == 0) return nanoseconds(0);
    const std::uint64_t w = head_.load(std::memory_order_acquire);  // acquire: as in try_acquire
    const std::uint64_t h = detail::slot_of_word(w);
    std::uint64_t newest = h;
    if (detail::units_of_word(w) == 0) {
      for (;;) {
        if (newest == 0 || newest + K == h) return nanoseconds(0);  // nothing left in the ring
        --newest;
        if (ring_units(newest) > 0) break;
      }
    }
    return nanoseconds(detail::sat_gap(now.count(), slot_start(newest + K + 1).count()));
  }

  // Snapshot support, by time: every slot still in the window as (time from
  // `now` until the window drops it, units), soonest first. A restarted
  // window given these by import_counts keeps every unit at least that long,
  // whatever its own origin and slot phase. A stale `now` gives longer times
  // (counts stay until the window itself would drop them). The times are at
  // least 1 ns and saturate at INT64_MAX.
  std::vector<std::pair<std::uint64_t, std::uint64_t>> export_counts(nanoseconds now) const {
    return export_counts(now, [](std::uint64_t) { return std::uint64_t{0}; });
  }
  // The same, leaving out `unspent(j)` units of slot j (units a caller
  // counted in advance and has not used: the account's per-thread credit).
  template <class Unspent>
  std::vector<std::pair<std::uint64_t, std::uint64_t>> export_counts(nanoseconds now, Unspent&& unspent) const;

  // The same by age: (age in slots relative to `now`'s slot, units), oldest
  // first. Ages drop where `now` lies in its slot; import_slots has to assume
  // the worst. export_counts keeps it.
  std::vector<std::pair<std::uint64_t, std::uint64_t>> export_slots(nanoseconds now) const {
    return export_slots(now, [](std::uint64_t) { return std::uint64_t{0}; });
  }
  template <class Unspent>
  std::vector<std::pair<std::uint64_t, std::uint64_t>> export_slots(nanoseconds now, Unspent&& unspent) const;

  // The longest time import_counts can keep a count (about the 40-bit slot
  // horizon: at least 10 years); longer times count as this.
  nanoseconds import_horizon() const noexcept;

  // Replaces the window's contents with counts as export_counts gives them
  // (time from `now` until each may leave, units), each kept at least that
  // long: never dropped early (round toward keeping). The window moves its
  // slot grid so that the latest of those times falls on a slot boundary,
  // so a restart at any phase of the old or the new window loses nothing and
  // holds nothing longer than the old window would have (times that did not
  // come from one grid keep some counts up to one slot longer). A time so
  // long that no slot of the window's grid at `now` can hold it makes the
  // window refuse everything (as stale) until it has passed. Units above the
  // 24-bit field saturate; zero times and units are skipped. Not
  // thread-safe: call it before sharing the window (it moves the origin).
  // Tickets from before it, this window's or another's, give nothing back.
  void import_counts(nanoseconds now, const std::vector<std::pair<std::uint64_t, std::uint64_t>>& counts) noexcept;

  // Loads slots by age (export_slots) into a window not shared yet. The
  // position of the old `now` inside its slot is not known, so each count is
  // kept as if it had been at the very start (round toward keeping): until
  // (K + 1 - age) slot widths from `now`. Ages above K have left the window.
  void import_slots(nanoseconds now, const std::vector<std::pair<std::uint64_t, std::uint64_t>>& slots);

  // Forgets every count: the window is as it was built (same origin and
  // limit). For recovering from a bogus far-future `now` (see the header).
  // Not thread-safe: call it while no other thread uses the window.
  void reset() noexcept {
    // relaxed: no other thread may use the window meanwhile (see above); the
    // final release store publishes the cleared ring with the head.
    for (auto& e : ring_) e.store(0, std::memory_order_relaxed);
    older_.store(0, std::memory_order_relaxed);
    head_.store(0, std::memory_order_release);
  }

  // Changes the limit (tokens per window); the window keeps its counts.
  [[nodiscard]] errc set_limit(std::uint64_t tokens) noexcept {
    if (unit_ == 0) return errc::ok;
    if (tokens == 0) return errc::zero_count;
    const std::uint64_t units = tokens / unit_;
    if (units == 0) return errc::zero_count;
    if (units > L::max_units) return errc::too_large;
    limit_.store(units, std::memory_order_relaxed);  // relaxed: a lone value (see try_acquire)
    return errc::ok;
  }

  // The limit in force, in tokens (a multiple of unit()).
  std::uint64_t limit() const noexcept { return limit_.load(std::memory_order_relaxed) * unit_; }
  std::uint64_t unit() const noexcept { return unit_; }
  // The head's slot (a snapshot): a `now` in an earlier slot is stale.
  std::uint64_t head_slot() const noexcept {
    // relaxed: a lone value, read for a decision that needs no count: by
    // coherence it is this thread's own last move or a later one, and every
    // move that happens before the call; a racing move it misses orders the
    // caller's decision before that move.
    return detail::slot_of_word(head_.load(std::memory_order_relaxed));
  }
  nanoseconds window() const noexcept { return nanoseconds(window_); }
  nanoseconds slot_width() const noexcept { return nanoseconds(width_); }
  nanoseconds origin() const noexcept { return nanoseconds(origin_); }

 private:
  // Calls f(j, age, units) for every slot j still in the window at `now`,
  // oldest first, with `unspent(j)` units left out (slots left empty skipped).
  template <class Unspent, class F>
  void visit_slots(nanoseconds now, Unspent& unspent, F&& f) const;

  std::uint64_t refund_impl(window_ticket& t, std::uint64_t n, bool head_only) noexcept;

  errc init(rate r, nanoseconds origin) noexcept {
    origin_ = origin.count();
    id_ = detail::next_window_id();
    const errc e = validate(r);
    if (e != errc::ok) return e;
    window_ = r.period.count();
    width_ = detail::ceil_div(static_cast<std::uint64_t>(r.period.count()), K);
    const std::uint64_t u = r.count <= L::max_units ? 1 : detail::ceil_div(r.count, L::max_units);
    // relaxed: construction precedes sharing.
    limit_.store(r.count / u, std::memory_order_relaxed);
    unit_ = u;
    return errc::ok;
  }

  std::uint64_t slot_at(nanoseconds now) const noexcept {
    const std::uint64_t s = detail::positive_difference(now.count(), origin_) / width_;
    return s > L::max_slot ? L::max_slot : s;
  }
  nanoseconds slot_start(std::uint64_t s) const noexcept {
    return nanoseconds(detail::sat_offset(origin_, detail::sat_mul(s, width_)));
  }

  // A `now` in a slot before the head h: retry once h has started.
  decision stale(std::uint64_t h, nanoseconds now) const noexcept {
    const std::int64_t wait = detail::sat_gap(now.count(), slot_start(h).count());
    return decision::wait(nanoseconds(wait > 0 ? wait : 1), reason::stale_time);
  }

  // Units of slot j as far as the ring knows (j below the head h).
  std::uint64_t ring_units(std::uint64_t j) const noexcept {
    // relaxed: the acquire load of the head that the caller made already
    // made every final count up to h visible; a newer value is only ever a
    // refund (smaller) or an over-count (larger), both safe to see or miss.
    const std::uint64_t r = ring_[j % ring_size].load(std::memory_order_relaxed);
    return detail::slot_of_word(r) == j ? detail::units_of_word(r) : 0;
  }

  // Units admitted in the K slots before head h. The mover that installed h
  // cached that sum in `older_`; the ring is the fallback when the cache
  // already belongs to a later head, or is saturated (then it is only a
  // lower bound of the sum).
  std::uint64_t older_of(std::uint64_t h) const noexcept {
    // relaxed: written before the release CAS that installed head h, which
    // the caller acquired; a refund's later decrement is safe to see or miss.
    const std::uint64_t c = older_.load(std::memory_order_relaxed);
    if (detail::slot_of_word(c) == h && detail::units_of_word(c) != L::max_units) return detail::units_of_word(c);
    std::uint64_t sum = 0;
    for (std::uint64_t j = h >= K ? h - K : 0; j < h; ++j) sum += ring_units(j);
    return sum;
  }

  // Units admitted in slots s-K .. s (s >= h), given head h holding cur.
  std::uint64_t window_sum(std::uint64_t s, std::uint64_t h, std::uint64_t cur) const noexcept {
    if (s == h) return cur + older_of(h);
    const std::uint64_t lo = s >= K ? s - K : 0;
    if (h < lo) return 0;
    std::uint64_t sum = cur;
    for (std::uint64_t j = lo; j < h; ++j) sum += ring_units(j);
    return sum;
  }

  // Time from `now` until the first slot s' > s whose window (s'-K .. s')
  // holds at most `room` units, slots after h being empty. Summed from the
  // ring's per-slot counts (s' > h), never from the cached sum: a saturated
  // cache is below the real sum, and taking real counts off it ends the wait
  // too early.
  nanoseconds wait_for(std::uint64_t s, std::uint64_t h, std::uint64_t cur, std::uint64_t room,
                       nanoseconds now) const noexcept {
    std::uint64_t target = s + 1;
    std::uint64_t lo = target >= K ? target - K : 0;
    std::uint64_t sum = window_sum(target, h, cur);
    while (sum > room && lo <= h) {
      sum -= lo == h ? cur : ring_units(lo);
      ++lo;
      target = lo + K;  // the first slot whose window starts at lo
    }
    const std::int64_t wait = detail::sat_gap(now.count(), slot_start(target).count());
    return nanoseconds(wait > 0 ? wait : 1);
  }

  // Records h's final count in the ring before the head leaves h. Only ever
  // raises the stored count for slot h: racing movers publish counts that are
  // at most the final one, and the winner's is the final one. A mover that
  // stalled after reading head h may resume after the head has gone K + 1 or
  // more slots on: h's entry then holds a newer, live slot (h left every
  // window that slot is in), and overwriting it would erase that slot's
  // count. Such a mover writes nothing, and its head CAS then fails.
  void publish_final(std::uint64_t h, std::uint64_t cur) noexcept {
    detail::atomic<std::uint64_t>& e = ring_[h % ring_size];
    // relaxed: ordered before the head CAS that follows, whose release
    // publishes it.
    std::uint64_t r = e.load(std::memory_order_relaxed);
    for (;;) {
      const std::uint64_t tag = detail::slot_of_word(r);
      if (tag > h || (tag == h && detail::units_of_word(r) >= cur)) return;
      // relaxed: as above; the following release CAS on the head publishes it.
      if (e.compare_exchange_weak(r, detail::pack_slot(h, cur), std::memory_order_relaxed,
                                  std::memory_order_relaxed))
        return;
    }
  }

  // Caches the sum of the K slots before new head s. Racing movers to s
  // computed it from the same final counts, except that a loser may have seen
  // a smaller count for the old head: keeping the largest is never too low.
  void publish_older(std::uint64_t s, std::uint64_t sum) noexcept {
    // After charges a sum can pass the 24-bit field: saturating keeps it at
    // or above any limit, so it still refuses everything it must.
    if (sum > L::max_units) sum = L::max_units;
    // relaxed: ordered before the head CAS that follows, whose release
    // publishes it.
    std::uint64_t c = older_.load(std::memory_order_relaxed);
    for (;;) {
      const std::uint64_t tag = detail::slot_of_word(c);
      if (tag > s || (tag == s && detail::units_of_word(c) >= sum)) return;
      // relaxed: as above.
      if (older_.compare_exchange_weak(c, detail::pack_slot(s, sum), std::memory_order_relaxed,
                                       std::memory_order_relaxed))
        return;
    }
  }

  detail::atomic<std::uint64_t> head_{0};
  detail::atomic<std::uint64_t> older_{0};  // {head slot: 40 bits, units in the K slots before it: 24 bits}
  detail::atomic<std::uint64_t> limit_{0};
  std::uint64_t unit_ = 0;  // 0: misconfigured
  std::uint64_t width_ = 1;
  std::int64_t window_ = 0;
  std::int64_t origin_ = 0;
  std::uint64_t id_ = 0;  // this window's identity (window/ticket.hpp): set by init() and the imports only
  detail::atomic<std::uint64_t> ring_[ring_size] = {};

  static_assert(std::atomic<std::uint64_t>::is_always_lock_free, "tollgate needs lock-free 64-bit atomics");
};

TOLLGATE_END_NAMESPACE

// Definitions of the corrections after the fact (charges, refunds) and of
// the snapshot support.
// #include <tollgate/window/correct.hpp>  (inlined below)
// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// window/correct.hpp: the strict window's corrections after the fact:
// charging usage learnt later (charge) and giving back what a ticket
// charged (refund, refund_to_head).
//
// Contract (each function's own is with its declaration, sliding_window.hpp).
// A charge may take the window over its limit; later admissions then wait
// until the excess has left it. A refund gives back at most what its ticket
// still holds, and nothing once the ticket's slot has left the window or its
// count has saturated (such a count means "at least this many": no unit of
// it is provably the ticket's). Concurrency: lock-free CASes on the head
// (acq_rel, as try_acquire's) and, for refunds into older slots, a release
// CAS on one ring word (for the snapshot export, which acquires it) and a
// relaxed one on the cached sum (lone counters: a reader that misses a
// decrement over-counts, the safe side). Included by
// sliding_window.hpp after the class; including it alone includes that first.
#ifndef TOLLGATE_WINDOW_CORRECT_HPP
#define TOLLGATE_WINDOW_CORRECT_HPP

// #include <tollgate/sliding_window.hpp>  (already above)
// #include <tollgate/config.hpp>  (already above)
// #include <tollgate/detail/arith.hpp>  (already above)
// #include <tollgate/detail/atomic.hpp>  (already above)

#include <cstdint>

TOLLGATE_BEGIN_NAMESPACE

template <class Clock, std::size_t Subwindows>
inline void sliding_window<Clock, Subwindows>::charge(std::uint64_t n, nanoseconds now) noexcept {
  if (n == 0 || unit_ == 0) return;
  const std::uint64_t nu = unit_ == 1 ? n : detail::ceil_div(n, unit_);
  const std::uint64_t s = slot_at(now);
  std::uint64_t w = head_.load(std::memory_order_acquire);  // acquire: as in try_acquire
  for (;;) {
    const std::uint64_t h = detail::slot_of_word(w);
    const std::uint64_t cur = detail::units_of_word(w);
    if (s <= h) {
      const std::uint64_t next = cur + nu > L::max_units || cur + nu < cur ? L::max_units : cur + nu;
      // acq_rel/acquire: as in try_acquire.
      if (head_.compare_exchange_weak(w, detail::pack_slot(h, next), std::memory_order_acq_rel,
                                      std::memory_order_acquire))
        return;
    } else {
      publish_final(h, cur);
      publish_older(s, window_sum(s, h, cur));
      // acq_rel/acquire: as in try_acquire (moving the head).
      if (head_.compare_exchange_weak(w, detail::pack_slot(s, nu > L::max_units ? L::max_units : nu),
                                      std::memory_order_acq_rel, std::memory_order_acquire))
        return;
    }
  }
}

template <class Clock, std::size_t Subwindows>
inline std::uint64_t sliding_window<Clock, Subwindows>::refund_impl(window_ticket& t, std::uint64_t n, bool head_only) noexcept {
  if (n > t.tokens) n = t.tokens;
  if (n == 0 || unit_ == 0 || (t.window != 0 && t.window != id_)) return 0;  // another window's (ticket.hpp)
  if (t.issuer != 0 && t.issuer != reinterpret_cast<std::uintptr_t>(this)) return 0;  // the same
  const std::uint64_t keep_units = detail::ceil_div(t.tokens - n, unit_);
  const std::uint64_t back = t.units - keep_units;
  std::uint64_t w = head_.load(std::memory_order_acquire);  // acquire: as in try_acquire
  for (;;) {
    const std::uint64_t h = detail::slot_of_word(w);
    if (t.slot == h) {
      const std::uint64_t cur = detail::units_of_word(w);
      if (cur == L::max_units) return 0;  // saturated: at least this much, nothing provably ours to give back
      const std::uint64_t take = back < cur ? back : cur;
      // acq_rel/acquire: as in try_acquire.
      if (head_.compare_exchange_weak(w, detail::pack_slot(h, cur - take), std::memory_order_acq_rel,
                                      std::memory_order_acquire))
        break;
      continue;
    }
    if (head_only || t.slot > h || t.slot + K < h) return 0;  // not ours, or out of the window: nothing to give back
    detail::atomic<std::uint64_t>& e = ring_[t.slot % ring_size];
    // relaxed: the ring word carries only itself; the head CAS that moved
    // past t.slot already published its count, and we read that head above.
    std::uint64_t r = e.load(std::memory_order_relaxed);
    for (;;) {
      if (detail::slot_of_word(r) != t.slot) return 0;  // overwritten: slot left the ring
      const std::uint64_t cnt = detail::units_of_word(r);
      if (cnt == L::max_units) return 0;  // saturated: as for the head
      const std::uint64_t take = back < cnt ? back : cnt;
      // release: pairs with the snapshot export's acquire load of the ring
      // word (window/snapshot.hpp), so an export that sees this decrement
      // also sees what the refunder stored before it (the account's credit
      // zeroes its line first). Else a lone counter (failure relaxed):
      // readers that miss the decrement over-count.
      if (e.compare_exchange_weak(r, detail::pack_slot(t.slot, cnt - take), std::memory_order_release,
                                  std::memory_order_relaxed)) {
        // The cached sum for head h was computed before h was installed,
        // hence before this decrement: take the same units off it. A cache
        // for a later head was computed from the ring, with or without this
        // decrement: leave it (too high is safe, twice is not). A saturated
        // cache is only a lower bound of the ring's sum (older_of reads the
        // ring then): taking units off it would make it look exact.
        std::uint64_t c = older_.load(std::memory_order_relaxed);  // relaxed: as in older_of
        while (detail::slot_of_word(c) == h && detail::units_of_word(c) != L::max_units) {
          const std::uint64_t u = detail::units_of_word(c);
          const std::uint64_t off = take < u ? take : u;
          // relaxed: a lone cached sum, as in publish_older.
          if (older_.compare_exchange_weak(c, detail::pack_slot(h, u - off), std::memory_order_relaxed,
                                           std::memory_order_relaxed))
            break;
        }
        break;
      }
    }
    break;
  }
  t.tokens -= n;
  t.units = keep_units;
  return n;
}

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_WINDOW_CORRECT_HPP
// #include <tollgate/window/snapshot.hpp>  (inlined below)
// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// window/snapshot.hpp: the strict window's counts taken out and put back,
// for snapshots (the account's, account/snapshot.hpp) and restarts.
//
// Contract (each function's own is with its declaration, sliding_window.hpp).
// export_counts lists every slot still in the window as (time from `now`
// until the window drops it, units), soonest first; import_counts puts such
// a list into a window not yet shared, keeping every unit at least that
// long, whatever the new window's origin and slot phase: a restart never lets
// a count leave early. The exports read the window as it runs (a snapshot
// that may be stale on return); the imports are not thread-safe (they move
// the origin and rewrite the ring). Included by sliding_window.hpp after the
// class; including it alone includes that first.
#ifndef TOLLGATE_WINDOW_SNAPSHOT_HPP
#define TOLLGATE_WINDOW_SNAPSHOT_HPP

// #include <tollgate/sliding_window.hpp>  (already above)
// #include <tollgate/config.hpp>  (already above)
// #include <tollgate/detail/arith.hpp>  (already above)

#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

TOLLGATE_BEGIN_NAMESPACE

template <class Clock, std::size_t Subwindows>
template <class Unspent>
inline std::vector<std::pair<std::uint64_t, std::uint64_t>> sliding_window<Clock, Subwindows>::export_counts(nanoseconds now, Unspent&& unspent) const {
  std::vector<std::pair<std::uint64_t, std::uint64_t>> out;
  visit_slots(now, unspent, [&](std::uint64_t j, std::uint64_t, std::uint64_t u) {
    // Slot j leaves the window when slot j + K + 1 begins.
    const detail::i128 left = static_cast<detail::i128>(slot_start(j + K + 1).count()) - now.count();
    const detail::i128 top = std::numeric_limits<std::int64_t>::max();
    out.emplace_back(static_cast<std::uint64_t>(left < 1 ? 1 : left > top ? top : left), u);
  });
  return out;
}

template <class Clock, std::size_t Subwindows>
template <class Unspent>
inline std::vector<std::pair<std::uint64_t, std::uint64_t>> sliding_window<Clock, Subwindows>::export_slots(nanoseconds now, Unspent&& unspent) const {
  std::vector<std::pair<std::uint64_t, std::uint64_t>> out;
  visit_slots(now, unspent, [&](std::uint64_t, std::uint64_t age, std::uint64_t u) { out.emplace_back(age, u); });
  return out;
}

template <class Clock, std::size_t Subwindows>
inline nanoseconds sliding_window<Clock, Subwindows>::import_horizon() const noexcept {
  const std::uint64_t t = detail::sat_mul(L::max_slot - 2 * K - 4, width_);
  return nanoseconds(t > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())
                         ? std::numeric_limits<std::int64_t>::max()
                         : static_cast<std::int64_t>(t));
}

template <class Clock, std::size_t Subwindows>
inline void sliding_window<Clock, Subwindows>::import_counts(nanoseconds now, const std::vector<std::pair<std::uint64_t, std::uint64_t>>& counts) noexcept {
  if (unit_ == 0) return;
  id_ = detail::next_window_id();  // the ring is rewritten: no earlier ticket names it (window/ticket.hpp)
  using detail::i128;
  const std::uint64_t horizon = static_cast<std::uint64_t>(import_horizon().count());
  std::uint64_t longest = 0;
  for (const auto& e : counts)
    if (e.second > 0 && e.first > longest) longest = e.first > horizon ? horizon : e.first;
  // relaxed (all stores below but the head's): not shared yet; the head's
  // release store publishes them to acquirers anyway.
  for (auto& r : ring_) r.store(0, std::memory_order_relaxed);
  if (longest == 0) {
    older_.store(0, std::memory_order_relaxed);
    head_.store(0, std::memory_order_release);  // release: as below
    return;
  }
  // The origin: K + 1 slots (or as many as fit above INT64_MIN) before the
  // slot holding `now`, with `now + longest` on a slot boundary.
  const i128 w = static_cast<i128>(width_);
  const i128 phase = (w - static_cast<i128>(longest) % w) % w;
  i128 o = static_cast<i128>(now.count()) - phase - static_cast<i128>(K + 1) * w;
  const i128 bottom = std::numeric_limits<std::int64_t>::min();
  if (o < bottom) o += (bottom - o + w - 1) / w * w;
  origin_ = static_cast<std::int64_t>(o);
  // The earliest slot whose end of life (the start of slot j + K + 1) is at
  // or after now + t: any later slot keeps the units too.
  auto slot_for = [&](std::uint64_t t) -> std::uint64_t {
    if (t > horizon) t = horizon;
    const i128 a = static_cast<i128>(now.count()) + static_cast<i128>(t) - o;
    if (a <= 0) return 0;
    const i128 j = (a + w - 1) / w - static_cast<i128>(K + 1);
    return j < 0 ? 0 : static_cast<std::uint64_t>(j);
  };
  std::uint64_t head = slot_at(now);
  for (const auto& e : counts)
    if (e.second > 0 && e.first > 0 && slot_for(e.first) > head) head = slot_for(e.first);
  std::uint64_t cur = 0, older = 0;
  for (const auto& e : counts) {
    if (e.second == 0 || e.first == 0) continue;
    const std::uint64_t j = slot_for(e.first);
    // Below head - K only when the head is ahead of `now`: such a slot
    // leaves the window before the head's slot starts, and until then the
    // window refuses everything.
    if (j + K < head) continue;
    const std::uint64_t u = e.second > L::max_units ? L::max_units : e.second;
    if (j == head) {
      cur = cur + u > L::max_units ? L::max_units : cur + u;
      continue;
    }
    detail::atomic<std::uint64_t>& r = ring_[j % ring_size];
    const std::uint64_t was = r.load(std::memory_order_relaxed);
    const std::uint64_t had = detail::slot_of_word(was) == j ? detail::units_of_word(was) : 0;
    r.store(detail::pack_slot(j, had + u > L::max_units ? L::max_units : had + u), std::memory_order_relaxed);
    older = detail::sat_add(older, u);
  }
  older_.store(detail::pack_slot(head, older > L::max_units ? L::max_units : older), std::memory_order_relaxed);
  head_.store(detail::pack_slot(head, cur), std::memory_order_release);  // release: publishes the ring to acquirers
}

template <class Clock, std::size_t Subwindows>
inline void sliding_window<Clock, Subwindows>::import_slots(nanoseconds now, const std::vector<std::pair<std::uint64_t, std::uint64_t>>& slots) {
  std::vector<std::pair<std::uint64_t, std::uint64_t>> counts;
  for (const auto& e : slots)
    if (e.first <= K) counts.emplace_back(detail::sat_mul(K + 1 - e.first, width_), e.second);
  import_counts(now, counts);
}

template <class Clock, std::size_t Subwindows>
template <class Unspent, class F>
inline void sliding_window<Clock, Subwindows>::visit_slots(nanoseconds now, Unspent& unspent, F&& f) const {
  if (unit_ == 0) return;
  const std::uint64_t w = head_.load(std::memory_order_acquire);  // acquire: as in try_acquire
  const std::uint64_t h = detail::slot_of_word(w);
  std::uint64_t s = slot_at(now);
  if (s < h) s = h;
  auto put = [&](std::uint64_t j, std::uint64_t u) {
    const std::uint64_t off = unspent(j);
    if (u > off) f(j, s - j, u - off);
  };
  for (std::uint64_t j = (h >= K ? h - K : 0); j < h; ++j) {
    if (j + K < s) continue;
    // acquire: pairs with a ring refund's release CAS (window/correct.hpp),
    // so `unspent(j)`, read after it, sees what the refunder stored before
    // the refund (a unit is then left out once at most).
    const std::uint64_t r = ring_[j % ring_size].load(std::memory_order_acquire);
    put(j, detail::slot_of_word(r) == j ? detail::units_of_word(r) : 0);
  }
  if (h + K >= s) put(h, detail::units_of_word(w));
}

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_WINDOW_SNAPSHOT_HPP

#endif  // TOLLGATE_SLIDING_WINDOW_HPP
// #include <tollgate/calendar_quota.hpp>  (inlined below)
// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// calendar_quota.hpp: a quota per calendar day that resets at midnight of a
// fixed UTC offset, read from wall-clock time (nanoseconds since 1970-01-01Z).
// A quota on another clock (a steady one, whose zero is the boot) is given
// the Unix time at that clock's zero (`clock_origin`) and counts its days as
// the UTC days of `now + clock_origin`.
//
// Use it only when you know in which time zone your server's day resets.
// Kimi says its daily token limit "resets the next day" without naming the
// zone; a rolling 24 h sliding_window stays inside any calendar reset and is
// the safe default for such limits.
//
// Guarantee. Within each calendar day [midnight, next midnight) of the given
// offset, the units admitted never exceed the limit (days of the Unix time
// now + clock_origin, exactly as the quota maps it: a mapping that is off by
// e seconds from true UTC moves every midnight by e). Usage charged after the
// fact (charge) may push a day past it; admissions then wait for the next day.
//
// Time going backwards. A `now` in a day before the one the state is in is
// refused with reason::stale_time (retry_after = time to that day's start);
// the state never moves to an earlier day. Times before 1970 count as day 0.
// The same rule means that one admission or charge at a bogus far-future
// `now` (INT64_MAX is in the year 2262) moves the state to that day, and every
// ordinary `now` afterwards is stale. The quota has not been made more
// permissive, as stated; the way out is `reset()`, which forgets the day and
// its usage. Every function is defined for every `now`; waits are never
// negative, and a wait for a day that starts after INT64_MAX (the last day
// representable) is INT64_MAX. Days are computed in 128 bits, so the day of
// a `now` and the start of the next day agree up to INT64_MAX: the stated
// wait for the next day is exact there too.
//
// Concurrency contract. All member functions are thread-safe; try_acquire,
// charge and refund are one CAS loop on a single word {day: 24 bits, used:
// 40 bits} (limits up to 2^40 - 1). Peeks may be stale on return. The state
// is address-free and may live in shared memory.
#ifndef TOLLGATE_CALENDAR_QUOTA_HPP
#define TOLLGATE_CALENDAR_QUOTA_HPP

// #include <tollgate/config.hpp>  (already above)
// #include <tollgate/clock.hpp>  (already above)
// #include <tollgate/decision.hpp>  (already above)
// #include <tollgate/detail/arith.hpp>  (already above)
// #include <tollgate/detail/atomic.hpp>  (already above)
// #include <tollgate/detail/identity.hpp>  (already above)
// #include <tollgate/error.hpp>  (already above)

#include <atomic>
#include <chrono>
#include <cstdint>
#include <limits>

TOLLGATE_BEGIN_NAMESPACE

// What a quota admission charged, for refunds. It names the quota object
// that issued it, twice: by its address in the issuing process (two live
// objects of one process never share one, so another live quota's ticket
// is refused for certain, also a ticket of a quota another process built in
// shared memory) and by an identity drawn at construction
// (detail/identity.hpp: never repeated within a process, salted per
// process, so identities two processes draw, n and m of them, meet with
// probability at most (n + m + 1) / 2^64). A ticket of another quota gives
// nothing back: not into one restored from the old one's word
// (import_word), which would otherwise give back units of an admission it
// never counted. What the identity alone tells apart (with that
// probability; for certain when this process drew both): a ticket refunded
// into a quota now at the issuer's address (the issuer destroyed, or its
// region unmapped and another mapped there), a ticket carried to another
// process, and one built field by field with issuer 0 (not checked).
// Move-only: a copy could refund the same units twice. A moved-from ticket
// holds no units, so refunding it gives nothing back.
struct quota_ticket {
  std::uint64_t day = 0;
  std::uint64_t units = 0;
  std::uint64_t quota = 0;     // the issuing quota's identity
  std::uintptr_t issuer = 0;   // the issuing quota's address in this process; 0: not checked

  constexpr quota_ticket() noexcept = default;
  constexpr quota_ticket(std::uint64_t d, std::uint64_t u, std::uint64_t q, std::uintptr_t i = 0) noexcept
      : day(d), units(u), quota(q), issuer(i) {}
  quota_ticket(const quota_ticket&) = delete;
  quota_ticket& operator=(const quota_ticket&) = delete;
  constexpr quota_ticket(quota_ticket&& o) noexcept : day(o.day), units(o.units), quota(o.quota), issuer(o.issuer) {
    o.units = 0;
  }
  constexpr quota_ticket& operator=(quota_ticket&& o) noexcept {
    if (this != &o) {
      day = o.day;
      quota = o.quota;
      issuer = o.issuer;
      units = o.units;
      o.units = 0;
    }
    return *this;
  }
};

namespace detail {
// A new quota identity (detail/identity.hpp); it reaches other threads with
// the quota itself.
inline std::uint64_t next_quota_id() noexcept { return fresh_identity(); }
}  // namespace detail

template <class Clock = system_clock>
class alignas(TOLLGATE_CACHELINE_SIZE) calendar_quota {
 public:
  using clock = Clock;
  static constexpr unsigned used_bits = 40;
  static constexpr std::uint64_t max_limit = (std::uint64_t{1} << used_bits) - 1;
  static constexpr std::int64_t day_ns = 86400LL * 1000000000LL;

  // `utc_offset` is the offset of the zone whose midnight resets the quota
  // (+8 h for China Standard Time); at most +-24 h.
  explicit calendar_quota(std::uint64_t limit, std::chrono::minutes utc_offset = std::chrono::minutes(0)) {
    const errc e = init(limit, utc_offset);
    if (e != errc::ok) detail::fail(e);
  }
  calendar_quota(std::uint64_t limit, std::chrono::minutes utc_offset, errc& ec) noexcept {
    ec = init(limit, utc_offset);
  }
  // On a clock whose readings are not Unix time: `clock_origin` is the Unix
  // time (ns since 1970-01-01Z) at the clock's zero; any value is accepted.
  calendar_quota(std::uint64_t limit, std::chrono::minutes utc_offset, nanoseconds clock_origin) {
    const errc e = init(limit, utc_offset);
    if (e != errc::ok) detail::fail(e);
    origin_ = clock_origin.count();
  }
  calendar_quota(std::uint64_t limit, std::chrono::minutes utc_offset, nanoseconds clock_origin, errc& ec) noexcept {
    ec = init(limit, utc_offset);
    origin_ = clock_origin.count();
  }
  calendar_quota(const calendar_quota&) = delete;
  calendar_quota& operator=(const calendar_quota&) = delete;

  static constexpr errc validate(std::uint64_t limit, std::chrono::minutes utc_offset) noexcept {
    if (limit == 0) return errc::zero_count;
    if (limit > max_limit) return errc::too_large;
    if (utc_offset > std::chrono::hours(24) || utc_offset < -std::chrono::hours(24)) return errc::too_large;
    return errc::ok;
  }

  decision try_acquire(std::uint64_t n, nanoseconds now, quota_ticket& ticket) noexcept {
    ticket = quota_ticket{};
    if (n == 0) return decision::admit();
    const std::uint64_t lim = limit_.load(std::memory_order_relaxed);  // relaxed: a lone value
    if (lim == 0) return decision::refuse(reason::misconfigured);
    if (n > lim) return decision::refuse(reason::exceeds_capacity);
    const std::uint64_t d = day_of(now);
    // acquire/acq_rel: the word is the only shared data, so relaxed would do;
    // acquire/release make a quota usable as a hand-off point at no cost on
    // x86 and keep every RMW ordered with the peeks.
    std::uint64_t w = state_.load(std::memory_order_acquire);
    for (;;) {
      const std::uint64_t wd = w >> used_bits;
      if (d < wd) return decision::wait(wait_until(wd, now), reason::stale_time);
      const std::uint64_t used = d > wd ? 0 : (w & max_limit);
      if (used + n > lim) return decision::wait(wait_until(d + 1, now));
      if (state_.compare_exchange_weak(w, (d << used_bits) | (used + n), std::memory_order_acq_rel,
                                       std::memory_order_acquire)) {
        ticket = quota_ticket{d, n, id_, reinterpret_cast<std::uintptr_t>(this)};
        return decision::admit();
      }
    }
  }
  decision try_acquire(std::uint64_t n, nanoseconds now) noexcept {
    quota_ticket t;
    return try_acquire(n, now, t);
  }
  decision try_acquire(std::uint64_t n = 1) noexcept { return try_acquire(n, Clock::now()); }

  // Charges n units unconditionally to the day of `now` (usage known after
  // the fact); saturates at 2^40 - 1. A stale `now` charges the state's day.
  void charge(std::uint64_t n, nanoseconds now) noexcept {
    if (n == 0 || limit_.load(std::memory_order_relaxed) == 0) return;  // relaxed: a lone value
    const std::uint64_t d = day_of(now);
    std::uint64_t w = state_.load(std::memory_order_acquire);  // acquire: as in try_acquire
    for (;;) {
      const std::uint64_t wd = w >> used_bits;
      const std::uint64_t day = d > wd ? d : wd;
      const std::uint64_t used = d > wd ? 0 : (w & max_limit);
      std::uint64_t next = detail::sat_add(used, n);
      if (next > max_limit) next = max_limit;
      // acq_rel/acquire: as in try_acquire.
      if (state_.compare_exchange_weak(w, (day << used_bits) | next, std::memory_order_acq_rel,
                                       std::memory_order_acquire))
        return;
    }
  }

  // Gives back up to n of the ticket's units if its day is still current
  // and the ticket is this quota's (its address and identity, see
  // quota_ticket).
  std::uint64_t refund(quota_ticket& t, std::uint64_t n) noexcept {
    if (n > t.units) n = t.units;
    if (n == 0 || t.quota != id_) return 0;
    if (t.issuer != 0 && t.issuer != reinterpret_cast<std::uintptr_t>(this)) return 0;  // another quota's
    std::uint64_t w = state_.load(std::memory_order_acquire);  // acquire: as in try_acquire
    for (;;) {
      if ((w >> used_bits) != t.day) return 0;  // that day is over
      const std::uint64_t used = w & max_limit;
      const std::uint64_t take = n < used ? n : used;
      // acq_rel/acquire: as in try_acquire.
      if (state_.compare_exchange_weak(w, (t.day << used_bits) | (used - take), std::memory_order_acq_rel,
                                       std::memory_order_acquire)) {
        t.units -= n;
        return n;
      }
    }
  }

  std::uint64_t used(nanoseconds now) const noexcept {
    const std::uint64_t w = state_.load(std::memory_order_acquire);  // acquire: as in try_acquire
    return day_of(now) > (w >> used_bits) ? 0 : (w & max_limit);
  }
  std::uint64_t available(nanoseconds now) const noexcept {
    const std::uint64_t lim = limit_.load(std::memory_order_relaxed);  // relaxed: a lone value
    const std::uint64_t u = used(now);
    return u >= lim ? 0 : lim - u;
  }
  decision time_until(std::uint64_t n, nanoseconds now) const noexcept {
    if (n == 0) return decision::admit();
    const std::uint64_t lim = limit_.load(std::memory_order_relaxed);  // relaxed: a lone value
    if (lim == 0) return decision::refuse(reason::misconfigured);
    if (n > lim) return decision::refuse(reason::exceeds_capacity);
    const std::uint64_t d = day_of(now);
    const std::uint64_t w = state_.load(std::memory_order_acquire);  // acquire: as in try_acquire
    const std::uint64_t wd = w >> used_bits;
    if (d < wd) return decision::wait(wait_until(wd, now), reason::stale_time);
    const std::uint64_t u = d > wd ? 0 : (w & max_limit);
    if (u + n > lim) return decision::wait(wait_until(d + 1, now));
    return decision::admit();
  }
  // Time from `now` to the next reset (the next midnight at the offset).
  // Saturates at INT64_MAX (a `now` long before 1970); never negative.
  nanoseconds reset_in(nanoseconds now) const noexcept {
    return nanoseconds(detail::sat_gap(now.count(), day_start(day_of(now) + 1).count()));
  }

  // Snapshot support: the raw state word {day, used} (days are absolute, so
  // it survives restarts as it is), and its inverse for a quota that has
  // admitted nothing yet: tickets of the quota whose word is imported give
  // nothing back here, but this quota's own from before it would.
  std::uint64_t export_word() const noexcept { return state_.load(std::memory_order_acquire); }  // acquire: as in try_acquire
  void import_word(std::uint64_t w) noexcept { state_.store(w, std::memory_order_release); }      // release: publishes it
  // The day `now` falls in, as the state word counts days (since 1970-01-01
  // at the offset, of now + clock_origin; 0 before it): what a restore
  // checks an imported word by.
  std::uint64_t day_at(nanoseconds now) const noexcept { return day_of(now); }

  // Forgets the day and its usage (for recovering from a bogus far-future
  // `now`, see the header). Thread-safe: an acquire racing it is decided
  // before it (and forgotten) or after it.
  void reset() noexcept { state_.store(0, std::memory_order_release); }  // release: as in import_word

  [[nodiscard]] errc set_limit(std::uint64_t limit) noexcept {
    if (limit_.load(std::memory_order_relaxed) == 0) return errc::ok;  // misconfigured stays so
    const errc e = validate(limit, std::chrono::minutes(0));
    if (e == errc::ok) limit_.store(limit, std::memory_order_relaxed);  // relaxed: a lone value
    return e;
  }
  std::uint64_t limit() const noexcept { return limit_.load(std::memory_order_relaxed); }
  std::chrono::minutes utc_offset() const noexcept {
    return std::chrono::duration_cast<std::chrono::minutes>(nanoseconds(offset_));
  }
  nanoseconds clock_origin() const noexcept { return nanoseconds(origin_); }

 private:
  errc init(std::uint64_t limit, std::chrono::minutes off) noexcept {
    const errc e = validate(limit, off);
    if (e != errc::ok) return e;
    offset_ = std::chrono::duration_cast<nanoseconds>(off).count();
    limit_.store(limit, std::memory_order_relaxed);  // relaxed: construction precedes sharing
    id_ = detail::next_quota_id();
    return errc::ok;
  }
  // In 128 bits, without saturating: day_start below inverts it exactly, so
  // the wait to a day's start ends in that day (a05: a day saturated at
  // INT64_MAX here but not there made that wait 1 ns, for ever).
  std::uint64_t day_of(nanoseconds now) const noexcept {
    const detail::i128 local = static_cast<detail::i128>(now.count()) + origin_ + offset_;
    if (local < 0) return 0;
    // A 64-bit division where it fits (every ordinary time): the 128-bit one is a library call.
    if (local <= std::numeric_limits<std::int64_t>::max()) return static_cast<std::uint64_t>(static_cast<std::int64_t>(local) / day_ns);
    return static_cast<std::uint64_t>(local / day_ns);  // < 2^19: INT64_MAX twice over is 213,504 days
  }
  // From `now` to the start of day d, for a refusal: at least 1 ns; INT64_MAX
  // for a day that starts after INT64_MAX (it never comes).
  nanoseconds wait_until(std::uint64_t d, nanoseconds now) const noexcept {
    if (start_of(d) > std::numeric_limits<std::int64_t>::max()) return nanoseconds::max();
    const std::int64_t wait = detail::sat_gap(now.count(), day_start(d).count());
    return nanoseconds(wait > 0 ? wait : 1);
  }
  detail::i128 start_of(std::uint64_t d) const noexcept {
    return static_cast<detail::i128>(d) * day_ns - origin_ - offset_;
  }
  nanoseconds day_start(std::uint64_t d) const noexcept {
    const detail::i128 t = start_of(d);
    constexpr detail::i128 top = std::numeric_limits<std::int64_t>::max(), bottom = std::numeric_limits<std::int64_t>::min();
    return nanoseconds(t > top ? std::numeric_limits<std::int64_t>::max()
                       : t < bottom ? std::numeric_limits<std::int64_t>::min() : static_cast<std::int64_t>(t));
  }

  detail::atomic<std::uint64_t> state_{0};
  detail::atomic<std::uint64_t> limit_{0};  // 0: misconfigured
  std::int64_t offset_ = 0;
  std::int64_t origin_ = 0;  // the Unix time at the clock's zero
  std::uint64_t id_ = 0;     // this quota's identity (see quota_ticket): set by init() only
};

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_CALENDAR_QUOTA_HPP
// #include <tollgate/concurrency.hpp>  (inlined below)
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

// #include <tollgate/config.hpp>  (already above)
// #include <tollgate/decision.hpp>  (already above)
// #include <tollgate/detail/atomic.hpp>  (already above)
// #include <tollgate/error.hpp>  (already above)

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
// #include <tollgate/money.hpp>  (inlined below)
// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// money.hpp: exact fixed-point money, one type per currency.
//
// An amount is a signed 64-bit count of nano-units (10^-9 of a dollar or a
// yuan): up to about 9.2 billion units either way. Every price this library
// knows is a whole number of nano-units per token ($0.95 per million tokens =
// 950 nano-dollars per token), so the ledger never rounds. Rounding happens
// only when formatting for display: half away from zero, to the decimals
// asked for. USD and CNY are different types; adding one to the other, or
// comparing them, does not compile.
//
// Overflow is never silent: the operators throw money_overflow (or, without
// exceptions, print the reason and abort); the checked_* functions report it
// through their return value instead.
#ifndef TOLLGATE_MONEY_HPP
#define TOLLGATE_MONEY_HPP

// #include <tollgate/config.hpp>  (already above)
// #include <tollgate/detail/arith.hpp>  (already above)

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <string>
#include <string_view>
#if !TOLLGATE_NO_EXCEPTIONS
#include <stdexcept>
#endif

TOLLGATE_BEGIN_NAMESPACE

struct usd_tag {
  static constexpr std::string_view code = "USD";
  static constexpr std::string_view symbol = "$";
};
struct cny_tag {
  static constexpr std::string_view code = "CNY";
  static constexpr std::string_view symbol = "\xC2\xA5";  // U+00A5 YEN SIGN, as the CN price pages write it
};

#if !TOLLGATE_NO_EXCEPTIONS
class money_overflow : public std::overflow_error {
 public:
  money_overflow() : std::overflow_error("tollgate: money amount overflows 64 bits of nano-units") {}
};
#endif

namespace detail {
[[noreturn]] inline void money_overflowed() {
#if !TOLLGATE_NO_EXCEPTIONS
  throw money_overflow();
#else
  std::fputs("tollgate: money amount overflows 64 bits of nano-units\n", stderr);
  std::abort();
#endif
}
}  // namespace detail

template <class Currency>
class money {
 public:
  using currency = Currency;
  static constexpr std::int64_t nanos_per_unit = 1000000000;

  constexpr money() noexcept = default;
  static constexpr money from_nanos(std::int64_t n) noexcept { return money(n); }
  // Whole units: from_units(3) is 3.00.
  static constexpr money from_units(std::int64_t units) {
    if (units > std::numeric_limits<std::int64_t>::max() / nanos_per_unit ||
        units < std::numeric_limits<std::int64_t>::min() / nanos_per_unit)
      detail::money_overflowed();
    return money(units * nanos_per_unit);
  }
  static constexpr money max() noexcept { return money(std::numeric_limits<std::int64_t>::max()); }

  constexpr std::int64_t nanos() const noexcept { return n_; }

  friend constexpr bool operator==(money a, money b) noexcept { return a.n_ == b.n_; }
  friend constexpr bool operator!=(money a, money b) noexcept { return a.n_ != b.n_; }
  friend constexpr bool operator<(money a, money b) noexcept { return a.n_ < b.n_; }
  friend constexpr bool operator<=(money a, money b) noexcept { return a.n_ <= b.n_; }
  friend constexpr bool operator>(money a, money b) noexcept { return a.n_ > b.n_; }
  friend constexpr bool operator>=(money a, money b) noexcept { return a.n_ >= b.n_; }

  // false on overflow (and `out` untouched).
  friend constexpr bool checked_add(money a, money b, money& out) noexcept {
    std::int64_t r = 0;
    if (__builtin_add_overflow(a.n_, b.n_, &r)) return false;
    out = money(r);
    return true;
  }
  friend constexpr bool checked_sub(money a, money b, money& out) noexcept {
    std::int64_t r = 0;
    if (__builtin_sub_overflow(a.n_, b.n_, &r)) return false;
    out = money(r);
    return true;
  }
  friend constexpr bool checked_mul(money a, std::int64_t k, money& out) noexcept {
    std::int64_t r = 0;
    if (__builtin_mul_overflow(a.n_, k, &r)) return false;
    out = money(r);
    return true;
  }
  friend constexpr money operator+(money a, money b) {
    money r;
    if (!checked_add(a, b, r)) detail::money_overflowed();
    return r;
  }
  friend constexpr money operator-(money a, money b) {
    money r;
    if (!checked_sub(a, b, r)) detail::money_overflowed();
    return r;
  }
  friend constexpr money operator*(money a, std::int64_t k) {
    money r;
    if (!checked_mul(a, k, r)) detail::money_overflowed();
    return r;
  }
  constexpr money operator-() const {
    if (n_ == std::numeric_limits<std::int64_t>::min()) detail::money_overflowed();
    return money(-n_);
  }
  constexpr money& operator+=(money b) { return *this = *this + b; }
  constexpr money& operator-=(money b) { return *this = *this - b; }

 private:
  constexpr explicit money(std::int64_t n) noexcept : n_(n) {}
  std::int64_t n_ = 0;
};

using usd = money<usd_tag>;
using cny = money<cny_tag>;

// Formats with the currency symbol and `decimals` (0..9) fraction digits,
// rounding half away from zero: format(usd 3.899999999) == "$3.90";
// negative amounts as "-$1.50".
template <class C>
std::string format(money<C> m, int decimals = 2) {
  if (decimals < 0) decimals = 0;
  if (decimals > 9) decimals = 9;
  const bool neg = m.nanos() < 0;
  // Magnitude as unsigned: INT64_MIN has no positive int64.
  std::uint64_t mag = neg ? 0 - static_cast<std::uint64_t>(m.nanos()) : static_cast<std::uint64_t>(m.nanos());
  std::uint64_t step = 1;
  for (int i = decimals; i < 9; ++i) step *= 10;
  std::uint64_t q = mag / step;
  if ((mag % step) * 2 >= step) ++q;  // half away from zero
  std::uint64_t scale = 1;
  for (int i = 0; i < decimals; ++i) scale *= 10;
  const std::uint64_t whole = q / scale, frac = q % scale;
  char buf[48];
  if (decimals == 0)
    std::snprintf(buf, sizeof buf, "%llu", static_cast<unsigned long long>(whole));
  else
    std::snprintf(buf, sizeof buf, "%llu.%0*llu", static_cast<unsigned long long>(whole), decimals,
                  static_cast<unsigned long long>(frac));
  std::string out;
  if (neg && (whole != 0 || frac != 0)) out += '-';
  out += C::symbol;
  out += buf;
  return out;
}

// Why a money string was refused.
enum class parse_errc : unsigned char {
  ok = 0,
  empty,
  wrong_currency,   // a symbol or code other than this currency's
  bad_character,    // anything but digits, one '.', a leading sign and the symbol
  too_many_decimals,  // more than 9: finer than a nano-unit
  overflow,
};

constexpr const char* message(parse_errc e) noexcept {
  switch (e) {
    case parse_errc::ok: return "ok";
    case parse_errc::empty: return "empty amount";
    case parse_errc::wrong_currency: return "amount is in another currency";
    case parse_errc::bad_character: return "amount is not a decimal number";
    case parse_errc::too_many_decimals: return "amount has more than 9 decimals";
    case parse_errc::overflow: return "amount too large";
  }
  return "?";
}

// Parses "$0.95", "0.95", "-1.5", "USD 3.90", "¥27", "27.00 CNY". Exact: up
// to 9 decimals, never rounded. Spaces around the symbol or code are allowed.
template <class C>
constexpr parse_errc parse(std::string_view s, money<C>& out) noexcept {
  auto trim = [](std::string_view v) {
    while (!v.empty() && v.front() == ' ') v.remove_prefix(1);
    while (!v.empty() && v.back() == ' ') v.remove_suffix(1);
    return v;
  };
  s = trim(s);
  if (s.empty()) return parse_errc::empty;
  bool neg = false;
  if (s.front() == '-' || s.front() == '+') {
    neg = s.front() == '-';
    s = trim(s.substr(1));
  }
  // Currency marks: this currency's symbol or code in front, or its code behind.
  auto strip_front = [&](std::string_view mark) {
    if (s.size() >= mark.size() && s.substr(0, mark.size()) == mark) {
      s = trim(s.substr(mark.size()));
      return true;
    }
    return false;
  };
  if (!strip_front(C::symbol) && !strip_front(C::code)) {
    if (s.size() >= C::code.size() && s.substr(s.size() - C::code.size()) == C::code)
      s = trim(s.substr(0, s.size() - C::code.size()));
  }
  if (!neg && !s.empty() && s.front() == '-') {  // "$-1.5"
    neg = true;
    s = trim(s.substr(1));
  }
  if (s.empty()) return parse_errc::empty;
  std::uint64_t whole = 0, frac = 0;
  int frac_digits = -1, digits = 0;
  for (char ch : s) {
    if (ch == '.') {
      if (frac_digits >= 0) return parse_errc::bad_character;
      frac_digits = 0;
      continue;
    }
    if (ch < '0' || ch > '9') {
      const unsigned char u = static_cast<unsigned char>(ch);
      return (u >= 0x80 || ch == '$' || (ch >= 'A' && ch <= 'Z')) ? parse_errc::wrong_currency
                                                                 : parse_errc::bad_character;
    }
    ++digits;
    const std::uint64_t d = static_cast<std::uint64_t>(ch - '0');
    if (frac_digits < 0) {
      if (whole > (std::numeric_limits<std::uint64_t>::max() - d) / 10) return parse_errc::overflow;
      whole = whole * 10 + d;
    } else {
      if (++frac_digits > 9) return parse_errc::too_many_decimals;
      frac = frac * 10 + d;
    }
  }
  if (digits == 0) return parse_errc::bad_character;
  for (int i = frac_digits < 0 ? 0 : frac_digits; i < 9; ++i) frac *= 10;
  const detail::u128 total = static_cast<detail::u128>(whole) * 1000000000u + frac;
  const detail::u128 limit = neg ? static_cast<detail::u128>(std::numeric_limits<std::int64_t>::max()) + 1
                                 : static_cast<detail::u128>(std::numeric_limits<std::int64_t>::max());
  if (total > limit) return parse_errc::overflow;
  const std::uint64_t t = static_cast<std::uint64_t>(total);
  out = money<C>::from_nanos(neg ? static_cast<std::int64_t>(0 - t) : static_cast<std::int64_t>(t));
  return parse_errc::ok;
}

// A price per token, in nano-units: the same number as the price per million
// tokens in thousandths of a unit ($0.95 per 1M tokens = 950).
template <class C>
struct token_price {
  std::uint64_t nanos_per_token = 0;
  friend constexpr bool operator==(token_price a, token_price b) noexcept {
    return a.nanos_per_token == b.nanos_per_token;
  }
  friend constexpr bool operator!=(token_price a, token_price b) noexcept { return !(a == b); }
};

// The price of one million tokens, as money.
template <class C>
constexpr money<C> per_million(token_price<C> p) {
  if (p.nanos_per_token > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()) / 1000000)
    detail::money_overflowed();
  return money<C>::from_nanos(static_cast<std::int64_t>(p.nanos_per_token * 1000000));
}

// A price given per million tokens as a money string ("0.95", "$0.95"). The
// price per token must come out whole in nano-units (at most 3 decimals per
// million tokens); anything finer cannot be billed exactly and is refused.
enum class price_errc : unsigned char { ok = 0, not_a_number, negative, finer_than_a_nano_unit };

template <class C>
constexpr price_errc price_per_million(std::string_view s, token_price<C>& out) noexcept {
  money<C> m;
  if (parse(s, m) != parse_errc::ok) return price_errc::not_a_number;
  if (m.nanos() < 0) return price_errc::negative;
  if (m.nanos() % 1000000 != 0) return price_errc::finer_than_a_nano_unit;
  out = token_price<C>{static_cast<std::uint64_t>(m.nanos() / 1000000)};
  return price_errc::ok;
}

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_MONEY_HPP
// #include <tollgate/tiers.hpp>  (inlined below)
// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// tiers.hpp: dated tables of Kimi's rate-limit tiers, as constexpr data.
//
// A tier is reached by cumulative recharge (vouchers do not count). Kimi has
// changed the table during 2026, so both versions ship, each with the date it
// was seen and its source; `kimi_tiers_latest` names the newest and nothing
// else in the library assumes a table. A table is a plain constexpr value:
// declare your own of the same type, or copy one and change a row.
//
// "Unlimited" and "unknown" are distinct values of `limit`, never a large
// number or zero.
#ifndef TOLLGATE_TIERS_HPP
#define TOLLGATE_TIERS_HPP

// #include <tollgate/config.hpp>  (already above)
// #include <tollgate/money.hpp>  (already above)

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

TOLLGATE_BEGIN_NAMESPACE

// A limit from a published table: a number, "unlimited", or not published.
class limit {
 public:
  enum class kind : unsigned char { unknown, finite, unlimited };
  constexpr limit() noexcept = default;
  constexpr explicit limit(std::uint64_t v) noexcept : v_(v), k_(kind::finite) {}
  static constexpr limit unlimited() noexcept { return limit(kind::unlimited); }
  static constexpr limit unknown() noexcept { return limit(kind::unknown); }

  constexpr kind what() const noexcept { return k_; }
  constexpr bool is_finite() const noexcept { return k_ == kind::finite; }
  constexpr bool is_unlimited() const noexcept { return k_ == kind::unlimited; }
  constexpr bool is_known() const noexcept { return k_ != kind::unknown; }
  // The number; an empty optional for unlimited and unknown.
  constexpr std::optional<std::uint64_t> value() const noexcept {
    return k_ == kind::finite ? std::optional<std::uint64_t>(v_) : std::nullopt;
  }
  friend constexpr bool operator==(limit a, limit b) noexcept {
    return a.k_ == b.k_ && (a.k_ != kind::finite || a.v_ == b.v_);
  }
  friend constexpr bool operator!=(limit a, limit b) noexcept { return !(a == b); }

 private:
  constexpr explicit limit(kind k) noexcept : k_(k) {}
  std::uint64_t v_ = 0;
  kind k_ = kind::unknown;
};

struct tier_row {
  int tier = 0;
  usd recharge_usd;  // cumulative recharge that unlocks the tier (international site)
  cny recharge_cny;  // the same on the CN site
  limit concurrency, rpm, tpm, tpd;
  limit web_search_qps;  // per search endpoint; not in every table
};

template <std::size_t N>
struct tier_table {
  std::string_view name;
  std::string_view as_of;   // when the figures were seen (YYYY-MM-DD)
  std::string_view source;  // where
  std::array<tier_row, N> rows;

  // The row of tier `t`, if the table has it.
  constexpr std::optional<tier_row> tier(int t) const noexcept {
    for (const tier_row& r : rows)
      if (r.tier == t) return r;
    return std::nullopt;
  }
  // The highest tier whose threshold a cumulative recharge reaches (vouchers
  // do not count); empty below the lowest threshold.
  constexpr std::optional<tier_row> for_recharge(usd paid) const noexcept {
    // Indices, not optional assignment: std::optional's is not constexpr in C++17.
    std::size_t best = N;
    for (std::size_t i = 0; i < N; ++i)
      if (rows[i].recharge_usd <= paid && (best == N || rows[i].recharge_usd >= rows[best].recharge_usd)) best = i;
    return best == N ? std::nullopt : std::optional<tier_row>(rows[best]);
  }
  constexpr std::optional<tier_row> for_recharge(cny paid) const noexcept {
    std::size_t best = N;
    for (std::size_t i = 0; i < N; ++i)
      if (rows[i].recharge_cny <= paid && (best == N || rows[i].recharge_cny >= rows[best].recharge_cny)) best = i;
    return best == N ? std::nullopt : std::optional<tier_row>(rows[best]);
  }
  // A copy with row `r` replacing the row of the same tier (or unchanged if
  // the table has no such tier).
  constexpr tier_table with_row(const tier_row& r) const noexcept {
    tier_table t = *this;
    for (tier_row& x : t.rows)
      if (x.tier == r.tier) x = r;
    return t;
  }
};

namespace detail {
constexpr usd dollars(std::int64_t d) { return usd::from_units(d); }
constexpr cny yuan(std::int64_t y) { return cny::from_units(y); }
}  // namespace detail

// The table of the project's original specification, as the official limits
// page showed it in early to mid 2026 and as quoted verbatim on 2026-05-08.
// No web-search column.
inline constexpr tier_table<6> kimi_tiers_2026_05{
    "Kimi API rate limits (pre-August 2026)",
    "2026-05-08",
    "platform.kimi.ai/docs/pricing/limits (quoted 2026-05-08; same rows on platform.moonshot.ai earlier in 2026); "
    "CNY thresholds from platform.kimi.com/docs/pricing/limits.md",
    {{
        {0, detail::dollars(1), detail::yuan(0), limit(1), limit(3), limit(500000), limit(1500000), limit::unknown()},
        {1, detail::dollars(10), detail::yuan(50), limit(50), limit(200), limit(2000000), limit::unlimited(),
         limit::unknown()},
        {2, detail::dollars(20), detail::yuan(100), limit(100), limit(500), limit(3000000), limit::unlimited(),
         limit::unknown()},
        {3, detail::dollars(100), detail::yuan(500), limit(200), limit(5000), limit(3000000), limit::unlimited(),
         limit::unknown()},
        {4, detail::dollars(1000), detail::yuan(5000), limit(400), limit(5000), limit(4000000), limit::unlimited(),
         limit::unknown()},
        {5, detail::dollars(3000), detail::yuan(20000), limit(1000), limit(10000), limit(5000000),
         limit::unlimited(), limit::unknown()},
    }}};

// The table after Kimi's August 2026 rule change, as transcribed verbatim from
// the international and CN limits pages on 2026-09-23 (Tier2 corroborated by
// account evidence dated 2026-09-19). Concurrency and RPM are much lower than
// in the earlier table; TPM and TPD are unchanged.
inline constexpr tier_table<6> kimi_tiers_2026_09{
    "Kimi API rate limits (September 2026)",
    "2026-09-23",
    "platform.kimi.ai/docs/pricing/limits and platform.kimi.com/docs/pricing/limits, transcribed 2026-09-23; "
    "Tier2 corroborated by account evidence of 2026-09-19",
    {{
        {0, detail::dollars(1), detail::yuan(0), limit(1), limit(3), limit(500000), limit(1500000), limit(1)},
        {1, detail::dollars(10), detail::yuan(50), limit(15), limit(100), limit(2000000), limit::unlimited(),
         limit(3)},
        {2, detail::dollars(20), detail::yuan(100), limit(40), limit(100), limit(3000000), limit::unlimited(),
         limit(5)},
        {3, detail::dollars(100), detail::yuan(500), limit(50), limit(200), limit(3000000), limit::unlimited(),
         limit(10)},
        {4, detail::dollars(1000), detail::yuan(5000), limit(60), limit(200), limit(4000000), limit::unlimited(),
         limit(20)},
        {5, detail::dollars(3000), detail::yuan(20000), limit(100), limit(300), limit(5000000), limit::unlimited(),
         limit(50)},
    }}};

// The newest table tollgate knows. Code that must not change meaning when a
// newer table ships should name a dated table instead.
inline constexpr const tier_table<6>& kimi_tiers_latest = kimi_tiers_2026_09;

// Earlier figures that show the table is data, not a constant. Dated where
// the sources date them; none of them is used by default.
struct kimi_tier_history {
  // Tier0's TPM in 2024-era summaries (a CSDN summary of the limits page).
  static constexpr limit tier0_tpm_2024 = limit(32000);
  static constexpr std::string_view tier0_tpm_2024_source = "wenku.csdn.net/answer/16en79q3iw (2024)";
  // Limits quoted by live 429 messages (third-party fixtures, undated):
  // "TPM rate limit, current: 64001, limit: 64000" and a project-level
  // "TPM rate limit, current: 1410, limit: 100".
  static constexpr limit observed_org_tpm = limit(64000);
  static constexpr limit observed_project_tpm = limit(100);
};

// Recharge rules stated on the limits page (seen 2026-09-23).
struct kimi_recharge_rules {
  static constexpr usd minimum_to_start = usd::from_units(1);  // at least $1 before any call
  static constexpr usd voucher_threshold = usd::from_units(5);  // cumulative recharge that earns...
  static constexpr usd voucher_amount = usd::from_units(5);     // ...a $5 voucher
  static constexpr bool vouchers_count_toward_tier = false;
  static constexpr cny cn_new_user_voucher = cny::from_units(15);  // CN site; not usable for kimi-k3
  static constexpr std::string_view as_of = "2026-09-23";
};

// The Kimi Code plan (a membership plan with its own endpoint and keys, not a
// tier of the API above).
struct kimi_code_plan {
  static constexpr std::string_view endpoint = "https://api.kimi.com/coding/v1";
  static constexpr std::string_view key_prefix = "sk-kimi-";
  static constexpr limit concurrency = limit(30);
  static constexpr std::int64_t quota_window_hours = 5;
  // "A 5-hour token quota supports approximately 300-1,200 API calls": an
  // approximation in the plan's description, not an enforced number.
  static constexpr std::uint64_t approx_calls_per_window_low = 300;
  static constexpr std::uint64_t approx_calls_per_window_high = 1200;
  static constexpr std::string_view as_of = "2026-10";
  static constexpr std::string_view source =
      "kimi.com/code/docs (key advantages), quoted by Moonshot staff at forum.moonshot.ai";
};

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_TIERS_HPP
// #include <tollgate/models.hpp>  (inlined below)
// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// models.hpp: the Kimi model catalog as constexpr data: context windows,
// prices per token in USD and CNY, cache-write and batch prices, the default
// output cap, status and dates, each with where it was seen.
//
// Prices are token_price values: nano-units per token, which is also the
// price per million tokens in thousandths ($0.95 per 1M = 950). A figure the
// sources do not give is `unknown` (an empty optional), never zero; a model
// that has no cached-input price says so (`no_cache`). Retired models stay in
// the catalog with their retirement dates, so old logs can still be costed.
#ifndef TOLLGATE_MODELS_HPP
#define TOLLGATE_MODELS_HPP

// #include <tollgate/config.hpp>  (already above)
// #include <tollgate/money.hpp>  (already above)

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

TOLLGATE_BEGIN_NAMESPACE

enum class model_status : unsigned char { current, deprecated, retired };

// The prices of one model in one currency.
template <class C>
struct price_list {
  std::optional<token_price<C>> input;   // cache miss
  std::optional<token_price<C>> cached;  // cache hit
  std::optional<token_price<C>> output;
  bool no_cache = false;  // the model has no cached-input price (not "unknown")
};

// A published batch price that differs from the 60 %-of-list rule.
struct batch_override {
  std::optional<token_price<usd_tag>> input, cached, output;
  std::string_view as_of, source;
};

struct model_info {
  std::string_view id;
  model_status status = model_status::current;
  std::string_view status_date;  // GA, deprecation or retirement date, if known
  std::optional<std::uint64_t> context_window;
  std::optional<std::uint64_t> default_max_tokens;  // the output cap used when max_tokens is absent
  price_list<usd_tag> usd_prices;
  price_list<cny_tag> cny_prices;
  std::optional<token_price<usd_tag>> cache_write_5m;  // explicit cache writes, 5-minute lifetime
  std::optional<token_price<usd_tag>> cache_write_1h;  // and 1-hour lifetime
  bool batch_available = false;  // the Batch API (60 % of list) is documented for this model
  std::optional<batch_override> batch_published;
  std::string_view as_of;
  std::string_view source;
  std::string_view note;
};

namespace detail {
constexpr std::optional<token_price<usd_tag>> p_usd(std::uint64_t nanos_per_token) {
  return token_price<usd_tag>{nanos_per_token};
}
constexpr std::optional<token_price<cny_tag>> p_cny(std::uint64_t nanos_per_token) {
  return token_price<cny_tag>{nanos_per_token};
}
constexpr std::optional<std::uint64_t> n(std::uint64_t v) { return v; }
inline constexpr std::nullopt_t unknown = std::nullopt;
}  // namespace detail

// The official catalog. Prices per token in nano-units = per 1M tokens in
// thousandths: 950 = $0.95 per 1M.
inline constexpr std::array<model_info, 17> kimi_models{{
    {"kimi-k3", model_status::current, "2026-07", detail::n(1048576), detail::n(131072),
     {detail::p_usd(3000), detail::p_usd(300), detail::p_usd(15000), false},
     {detail::p_cny(20000), detail::p_cny(2000), detail::p_cny(100000), false},
     detail::p_usd(3000), detail::p_usd(6000), false, std::nullopt, "2026-10",
     "platform.kimi.ai/docs/pricing/chat-k3; default cap from the K3 guide",
     "current from about 2026-07; cached hits need a prior prompt over 256 tokens"},
    {"kimi-k2.7-code", model_status::current, "", detail::n(262144), detail::unknown,
     {detail::p_usd(950), detail::p_usd(190), detail::p_usd(4000), false},
     {detail::p_cny(6500), detail::p_cny(1300), detail::p_cny(27000), false}, detail::unknown, detail::unknown, true,
     std::nullopt, "2026-09-02", "pricing page fixtures in public code; listed by GET /v1/models on 2026-09-02",
     "default output cap not published"},
    {"kimi-k2.7-code-highspeed", model_status::current, "", detail::n(262144), detail::unknown,
     {detail::p_usd(1900), detail::p_usd(380), detail::p_usd(8000), false},
     {detail::p_cny(13000), detail::p_cny(2600), detail::p_cny(54000), false}, detail::unknown, detail::unknown,
     false, std::nullopt, "2026-09-02", "pricing page fixtures in public code; listed by GET /v1/models on 2026-09-02",
     "default output cap and batch availability not published"},
    {"kimi-k2.6", model_status::current, "2026-04-20", detail::n(262144), detail::n(32768),
     {detail::p_usd(950), detail::p_usd(160), detail::p_usd(4000), false},
     {detail::p_cny(6500), detail::p_cny(1100), detail::p_cny(27000), false}, detail::unknown, detail::unknown, true,
     batch_override{std::nullopt, token_price<usd_tag>{100}, std::nullopt, "2026-10",
                    "third-party price audit: published batch cached-input price $0.10 per 1M, where the 60 % rule "
                    "gives $0.096"},
     "2026-10", "platform.kimi.ai/docs/pricing/chat-k26", "GA 2026-04-20"},
    {"kimi-k2.5", model_status::retired, "2026-08-31", detail::n(262144), detail::unknown,
     {detail::p_usd(600), detail::p_usd(100), detail::p_usd(3000), false},
     {detail::unknown, detail::unknown, detail::unknown, false}, detail::unknown, detail::unknown, true, std::nullopt,
     "2026-01-26", "model list in public code dated 2026-01-26; retirement reported when calls began to 404",
     "retired 2026-08-31"},
    {"kimi-k2-0905-preview", model_status::retired, "2026-05-25", detail::n(262144), detail::unknown,
     {detail::p_usd(600), detail::p_usd(150), detail::p_usd(2500), false},
     {detail::p_cny(4000), detail::p_cny(1000), detail::p_cny(16000), false}, detail::unknown, detail::unknown,
     false, std::nullopt, "2026-01-26", "model list in public code dated 2026-01-26; Moonshot retirement e-mail",
     "retired 2026-05-25"},
    {"kimi-k2-turbo-preview", model_status::retired, "2026-05-25", detail::n(262144), detail::unknown,
     {detail::p_usd(1150), detail::p_usd(150), detail::p_usd(8000), false},
     {detail::p_cny(8000), detail::p_cny(1000), detail::p_cny(58000), false}, detail::unknown, detail::unknown,
     false, std::nullopt, "2026-01-26", "model list in public code dated 2026-01-26",
     "earlier list prices were $2.40 / $0.60 / $10.00 per 1M; retired 2026-05-25"},
    // The sources give one merged row for the next three models ("262,144 / 131,072" context,
    // "$0.60 / $1.15" input, "$2.50 / $8.00" output, $0.15 cached): only the cached price and
    // the retirement date are unambiguous, so the rest is unknown.
    {"kimi-k2-thinking", model_status::retired, "2026-05-25", detail::unknown, detail::unknown,
     {detail::unknown, detail::p_usd(150), detail::unknown, false},
     {detail::unknown, detail::unknown, detail::unknown, false}, detail::unknown, detail::unknown, false,
     std::nullopt, "2026-05-25", "public model registries (merged row)",
     "context and input/output prices given only as a merged row for three models"},
    {"kimi-k2-thinking-turbo", model_status::retired, "2026-05-25", detail::unknown, detail::unknown,
     {detail::unknown, detail::p_usd(150), detail::unknown, false},
     {detail::unknown, detail::unknown, detail::unknown, false}, detail::unknown, detail::unknown, false,
     std::nullopt, "2026-05-25", "public model registries (merged row)",
     "context and input/output prices given only as a merged row for three models"},
    {"kimi-k2-0711-preview", model_status::retired, "2026-05-25", detail::unknown, detail::unknown,
     {detail::unknown, detail::p_usd(150), detail::unknown, false},
     {detail::unknown, detail::unknown, detail::unknown, false}, detail::unknown, detail::unknown, false,
     std::nullopt, "2026-05-25", "public model registries (merged row)",
     "context and input/output prices given only as a merged row for three models"},
    {"moonshot-v1-8k", model_status::retired, "2026-08-31", detail::n(8192), detail::unknown,
     {detail::p_usd(200), detail::unknown, detail::p_usd(2000), true},
     {detail::p_cny(2000), detail::unknown, detail::p_cny(10000), true}, detail::unknown, detail::unknown, false,
     std::nullopt, "2026-09-02", "official chat-v1 pricing page (public copy)", "retired 2026-08-31; no cache pricing"},
    {"moonshot-v1-32k", model_status::retired, "2026-08-31", detail::n(32768), detail::unknown,
     {detail::p_usd(1000), detail::unknown, detail::p_usd(3000), true},
     {detail::p_cny(5000), detail::unknown, detail::p_cny(20000), true}, detail::unknown, detail::unknown, false,
     std::nullopt, "2026-09-02", "official chat-v1 pricing page (public copy)", "retired 2026-08-31; no cache pricing"},
    {"moonshot-v1-128k", model_status::retired, "2026-08-31", detail::n(131072), detail::unknown,
     {detail::p_usd(2000), detail::unknown, detail::p_usd(5000), true},
     {detail::p_cny(10000), detail::unknown, detail::p_cny(30000), true}, detail::unknown, detail::unknown, false,
     std::nullopt, "2026-09-02", "official chat-v1 pricing page (public copy)", "retired 2026-08-31; no cache pricing"},
    // The vision previews share the moonshot-v1 row in the sources; which figure belongs to
    // which is not stated, so only the retirement is recorded.
    {"moonshot-v1-8k-vision-preview", model_status::retired, "2026-08-31", detail::unknown, detail::unknown,
     {detail::unknown, detail::unknown, detail::unknown, true},
     {detail::unknown, detail::unknown, detail::unknown, true}, detail::unknown, detail::unknown, false,
     std::nullopt, "2026-09-02", "official chat-v1 pricing page (public copy), merged row",
     "retired 2026-08-31; figures not given separately"},
    {"moonshot-v1-32k-vision-preview", model_status::retired, "2026-08-31", detail::unknown, detail::unknown,
     {detail::unknown, detail::unknown, detail::unknown, true},
     {detail::unknown, detail::unknown, detail::unknown, true}, detail::unknown, detail::unknown, false,
     std::nullopt, "2026-09-02", "official chat-v1 pricing page (public copy), merged row",
     "retired 2026-08-31; figures not given separately"},
    {"moonshot-v1-128k-vision-preview", model_status::retired, "2026-08-31", detail::unknown, detail::unknown,
     {detail::unknown, detail::unknown, detail::unknown, true},
     {detail::unknown, detail::unknown, detail::unknown, true}, detail::unknown, detail::unknown, false,
     std::nullopt, "2026-09-02", "official chat-v1 pricing page (public copy), merged row",
     "retired 2026-08-31; figures not given separately"},
    {"kimi-latest", model_status::deprecated, "2026-01-28", detail::unknown, detail::unknown,
     {detail::unknown, detail::unknown, detail::unknown, false},
     {detail::unknown, detail::unknown, detail::unknown, false}, detail::unknown, detail::unknown, false,
     std::nullopt, "2026-01-28", "platform.kimi.com/docs/models", "deprecated 2026-01-28"},
}};

// Prices that are not per token, as published.
struct kimi_other_prices {
  // The $web_search tool: per call, plus its search tokens billed as input
  // (official docs, seen by 2026-10).
  static constexpr usd web_search_call = usd::from_nanos(5000000);  // $0.005
  // Legacy (2024) explicit Context Caching for moonshot-v1 models, CN site:
  // creating a cache ¥24 per 1M tokens, storage ¥10 per 1M tokens per
  // minute, ¥0.02 per call that uses it; cache tokens free during the beta.
  static constexpr token_price<cny_tag> legacy_cache_create = {24000};
  static constexpr token_price<cny_tag> legacy_cache_storage_per_minute = {10000};
  static constexpr cny legacy_cache_call = cny::from_nanos(20000000);  // ¥0.02
  static constexpr std::string_view legacy_cache_source = "platform.moonshot.cn/docs/price/caching (2024)";
  // kimi-k3 cache hits need a previous prompt of more than 256 tokens.
  static constexpr std::uint64_t k3_min_cached_prefix_tokens = 256;
};

// A third-party listing quoted by the project's original specification, from
// an undated pricing guide. It disagrees with the official prices above and is
// kept separate, for comparison only: the calculator never uses it.
struct third_party_price {
  std::string_view id;
  token_price<usd_tag> input, output;
};
inline constexpr std::array<third_party_price, 2> third_party_guide_prices{{
    {"kimi-k2.5", {600}, {2000}},
    {"kimi-k2.6", {550}, {2650}},
}};
inline constexpr std::string_view third_party_guide_note =
    "third-party pricing guide quoted in the original specification; undated; not official";

// Looks a model up by id; empty for an id the catalog does not know.
constexpr std::optional<model_info> find_model(std::string_view id) noexcept {
  for (const model_info& m : kimi_models)
    if (m.id == id) return m;
  return std::nullopt;
}

// The catalog entry itself (static storage), or nullptr for an unknown id:
// what account requests point to.
constexpr const model_info* model_by_id(std::string_view id) noexcept {
  for (const model_info& m : kimi_models)
    if (m.id == id) return &m;
  return nullptr;
}

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_MODELS_HPP
// #include <tollgate/cost.hpp>  (inlined below)
// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// cost.hpp: the exact cost of a call from its token usage and a model's
// prices, and the worst-case cost of a call before it is sent.
//
//   cost = uncached input x input price + cached input x cached price
//        + output x output price + cache writes x their prices
//
// Providers disagree on whether the reported prompt count includes the cached
// tokens: Kimi and OpenAI include them (uncached = prompt - cached), Anthropic
// does not (uncached = prompt). That is an explicit option, never a guess.
// Batch pricing uses the provider's published batch price where one is
// recorded (kimi-k2.6 cached input: $0.10 per 1M), else 60 % of list, which
// must come out whole in nano-units.
//
// Everything is integer arithmetic in 128 bits, checked into 64: no rounding
// anywhere, overflow reported. A price the catalog does not know is an error
// when tokens of that kind were used, never a cost of zero.
#ifndef TOLLGATE_COST_HPP
#define TOLLGATE_COST_HPP

// #include <tollgate/config.hpp>  (already above)
// #include <tollgate/detail/arith.hpp>  (already above)
// #include <tollgate/models.hpp>  (already above)
// #include <tollgate/money.hpp>  (already above)

#include <cstdint>
#include <limits>
#include <optional>
#include <type_traits>

TOLLGATE_BEGIN_NAMESPACE

// Token counts as the API reports them.
struct usage {
  std::uint64_t prompt = 0;      // prompt tokens (see cost_options::prompt_includes_cached)
  std::uint64_t cached = 0;      // prompt tokens served from the cache
  std::uint64_t completion = 0;  // generated tokens
  std::uint64_t cache_write_5m = 0;
  std::uint64_t cache_write_1h = 0;
};

struct cost_options {
  bool prompt_includes_cached = true;  // Kimi, OpenAI: true; Anthropic: false
  bool batch = false;
};

enum class cost_errc : unsigned char {
  ok = 0,
  unknown_price,          // tokens of a kind whose price the catalog does not know
  cached_exceeds_prompt,  // cached > prompt while the prompt is said to include them
  batch_unavailable,      // batch pricing asked for a model without a documented batch price
  batch_not_exact,        // 60 % of a list price is not a whole number of nano-units
  overflow,
};

constexpr const char* message(cost_errc e) noexcept {
  switch (e) {
    case cost_errc::ok: return "ok";
    case cost_errc::unknown_price: return "a price needed for this usage is not known for this model";
    case cost_errc::cached_exceeds_prompt: return "cached tokens exceed prompt tokens";
    case cost_errc::batch_unavailable: return "no batch price is documented for this model";
    case cost_errc::batch_not_exact: return "60% of the list price is not a whole number of nano-units";
    case cost_errc::overflow: return "cost overflows 64 bits of nano-units";
  }
  return "?";
}

template <class C>
struct cost_breakdown {
  cost_errc error = cost_errc::ok;
  money<C> input, cached, output, cache_write, total;
  constexpr explicit operator bool() const noexcept { return error == cost_errc::ok; }
};

namespace detail {
template <class C>
constexpr const price_list<C>& prices_of(const model_info& m) noexcept {
  if constexpr (std::is_same<C, usd_tag>::value)
    return m.usd_prices;
  else
    return m.cny_prices;
}

// The batch price of one class of tokens: published override, else 60 % of list.
template <class C>
constexpr cost_errc batch_price(std::optional<token_price<C>> list, std::optional<token_price<usd_tag>> published,
                                std::optional<token_price<C>>& out) noexcept {
  if constexpr (std::is_same<C, usd_tag>::value) {
    if (published) {
      out = *published;
      return cost_errc::ok;
    }
  } else {
    (void)published;
  }
  if (!list) {
    out = std::nullopt;
    return cost_errc::ok;
  }
  if ((list->nanos_per_token * 6) % 10 != 0) return cost_errc::batch_not_exact;
  out = token_price<C>{list->nanos_per_token * 6 / 10};
  return cost_errc::ok;
}

// count x price into `acc`; false when the price is needed but unknown.
template <class C>
constexpr bool add_term(std::uint64_t count, std::optional<token_price<C>> price, u128& acc, u128& term) noexcept {
  term = 0;
  if (count == 0) return true;
  if (!price) return false;
  term = static_cast<u128>(count) * price->nanos_per_token;  // < 2^128: both factors < 2^64
  // Saturating: each term may be near 2^128, so a plain sum of five could
  // wrap to a small total and pass as ok (a15). Saturated, it is an overflow.
  const u128 room = ~u128{0} - acc;
  acc = term > room ? ~u128{0} : acc + term;
  return true;
}
}  // namespace detail

// The exact cost of a call, split by token class, in currency C (usd_tag or cny_tag).
template <class C = usd_tag>
constexpr cost_breakdown<C> cost(const model_info& m, const usage& u, cost_options o = {}) noexcept {
  cost_breakdown<C> r;
  price_list<C> p = detail::prices_of<C>(m);
  if (o.batch) {
    if (!m.batch_available && !m.batch_published) {
      r.error = cost_errc::batch_unavailable;
      return r;
    }
    const batch_override pub = m.batch_published ? *m.batch_published : batch_override{};
    cost_errc e = detail::batch_price<C>(p.input, pub.input, p.input);
    if (e == cost_errc::ok) e = detail::batch_price<C>(p.cached, pub.cached, p.cached);
    if (e == cost_errc::ok) e = detail::batch_price<C>(p.output, pub.output, p.output);
    if (e != cost_errc::ok) {
      r.error = e;
      return r;
    }
  }
  std::uint64_t uncached = u.prompt;
  if (o.prompt_includes_cached) {
    if (u.cached > u.prompt) {
      r.error = cost_errc::cached_exceeds_prompt;
      return r;
    }
    uncached = u.prompt - u.cached;
  }
  // A model without cache pricing bills cached tokens as ordinary input.
  const std::optional<token_price<C>> cached_price = p.no_cache ? p.input : p.cached;
  std::optional<token_price<C>> w5, w1;
  if constexpr (std::is_same<C, usd_tag>::value) {
    w5 = m.cache_write_5m;
    w1 = m.cache_write_1h;
  }
  detail::u128 total = 0, t_in = 0, t_cached = 0, t_out = 0, t_w5 = 0, t_w1 = 0;
  if (!detail::add_term(uncached, p.input, total, t_in) || !detail::add_term(u.cached, cached_price, total, t_cached) ||
      !detail::add_term(u.completion, p.output, total, t_out) || !detail::add_term(u.cache_write_5m, w5, total, t_w5) ||
      !detail::add_term(u.cache_write_1h, w1, total, t_w1)) {
    r.error = cost_errc::unknown_price;
    return r;
  }
  constexpr detail::u128 top = static_cast<detail::u128>(std::numeric_limits<std::int64_t>::max());
  if (total > top) {
    r.error = cost_errc::overflow;
    return r;
  }
  auto m_of = [](detail::u128 v) { return money<C>::from_nanos(static_cast<std::int64_t>(v)); };
  r.input = m_of(t_in);
  r.cached = m_of(t_cached);
  r.output = m_of(t_out);
  r.cache_write = m_of(t_w5 + t_w1);
  r.total = m_of(total);
  return r;
}

// Explicit cache writes a request asks for: prompt tokens the server writes
// to the cache with a 5-minute or a 1-hour lifetime (kimi-k3), billed on top
// of the prompt.
struct cache_writes {
  std::uint64_t write_5m = 0;
  std::uint64_t write_1h = 0;
};

namespace detail {
template <class C>
[[gnu::always_inline]] constexpr cost_breakdown<C> worst_case(const model_info& m, std::uint64_t prompt_estimate,
                                                              std::optional<std::uint64_t> max_tokens,
                                                              const std::optional<cache_writes>& w,
                                                              cost_options o) noexcept;
}  // namespace detail

// The most a call can cost before it is sent: every prompt token at the
// uncached input price, every allowed output token at the output price, and
// the largest cache write the call can make: its whole prompt at the dearer
// of the model's write prices (a call writes at most its prompt to the
// cache). A model that writes to the cache at prices unknown in C (kimi-k3
// in yuan: its catalog lists dollar write prices only) has no computable
// worst case unless the request declares its writes: unknown_price, which an
// account refuses as `never` (dimension::budget), since a reservation
// without the writes would let them overspend the budget. Declare them
// (cache_writes{} for none) to reserve the rest. Pass the model's default cap when the
// request has no max_tokens; if that is unknown too, the stated worst case is
// the context window minus the prompt. Bounds cost() of every usage with
// prompt <= prompt_estimate and completion <= the cap.
template <class C = usd_tag>
constexpr cost_breakdown<C> worst_case_cost(const model_info& m, std::uint64_t prompt_estimate,
                                            std::optional<std::uint64_t> max_tokens, cost_options o = {}) noexcept {
  return detail::worst_case<C>(m, prompt_estimate, max_tokens, std::nullopt, o);
}
// The same for a request that declares its cache writes: they are priced as
// declared (a write of a kind the model has no price for is unknown_price).
// Bounds cost() of every usage that also writes at most what was declared.
template <class C = usd_tag>
constexpr cost_breakdown<C> worst_case_cost(const model_info& m, std::uint64_t prompt_estimate,
                                            std::optional<std::uint64_t> max_tokens, const cache_writes& declared,
                                            cost_options o = {}) noexcept {
  return detail::worst_case<C>(m, prompt_estimate, max_tokens, declared, o);
}

namespace detail {
template <class C>
[[gnu::always_inline]] constexpr cost_breakdown<C> worst_case(const model_info& m, std::uint64_t prompt_estimate,
                                                              std::optional<std::uint64_t> max_tokens,
                                                              const std::optional<cache_writes>& w,
                                                              cost_options o) noexcept {
  std::uint64_t out = 0;
  if (max_tokens) {
    out = *max_tokens;
  } else if (m.default_max_tokens) {
    out = *m.default_max_tokens;
  } else if (m.context_window) {
    out = *m.context_window > prompt_estimate ? *m.context_window - prompt_estimate : 0;
  } else {
    cost_breakdown<C> r;
    r.error = cost_errc::unknown_price;  // no way to bound the output
    return r;
  }
  usage u;
  u.prompt = prompt_estimate;
  u.completion = out;
  o.prompt_includes_cached = true;
  if (!w && !m.cache_write_5m && !m.cache_write_1h) return cost<C>(m, u, o);  // no writes to price (most models)
  if (w) {
    u.cache_write_5m = w->write_5m;
    u.cache_write_1h = w->write_1h;
  } else if constexpr (std::is_same<C, usd_tag>::value) {
    // Undeclared: the whole prompt at the dearer write price, if any.
    const std::uint64_t p5 = m.cache_write_5m ? m.cache_write_5m->nanos_per_token : 0;
    const std::uint64_t p1 = m.cache_write_1h ? m.cache_write_1h->nanos_per_token : 0;
    if (m.cache_write_1h && p1 >= p5) u.cache_write_1h = prompt_estimate;
    else if (m.cache_write_5m) u.cache_write_5m = prompt_estimate;
  } else {
    // Undeclared writes at prices this currency does not know: no bound (a26).
    cost_breakdown<C> r;
    r.error = cost_errc::unknown_price;
    return r;
  }
  return cost<C>(m, u, o);
}
}  // namespace detail

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_COST_HPP
// #include <tollgate/budget.hpp>  (inlined below)
// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// budget.hpp: a lock-free spending limit with reserve -> settle.
//
// Guarantee. Reservations are admitted only while reserved + settled stays
// within the limit, so as long as every call settles at or below what it
// reserved (reserve the worst case: worst_case_cost), the settled total never
// exceeds the limit, under any number of threads. A call that costs more than
// it reserved is still recorded (the money is spent) and reported as an
// overspend by settle.
//
// Concurrency contract. All member functions are thread-safe and lock-free:
// reserve is one CAS loop, settle one saturating CAS loop on the committed
// total and one on the spent total. remaining/spent may be stale on return. A reservation is
// a plain value; settle it exactly once (settle marks it settled, a second
// settle does nothing). A reservation never settled keeps its money reserved:
// the safe side.
//
// Zero. reserve() of zero (or less) is always admitted, even over an
// overspent or saturated budget: it holds nothing, and a call whose worst
// case is free cannot spend (an account's free requests go through).
//
// Saturation. Totals are 64-bit nano-units (about 9.2 billion units of the
// currency); any limit up to money::max() works, and totals that reach it
// exactly (reservations summing to a limit of money::max()) are ordinary
// totals that shrink back when released. Settling usage whose sum passes it
// (absurd amounts, e.g. two settles of INT64_MAX nano-units) does not wrap:
// `saturated()` turns true for good (a mark no sum can reach: the committed
// total's sign bit), remaining() is zero, spent() sticks at the maximum, and
// every later reserve above zero is refused with `saturated` set in the
// reservation (and `missing` at the maximum). Only a new budget (or
// import_totals) clears it: a count that overflowed cannot be trusted to
// shrink back. export_totals reports a saturated committed total as the
// maximum, which refuses everything above zero when imported.
//
// Placement. The state (two lock-free atomic totals and a limit written once
// before sharing) is address-free: a budget may live in memory shared
// between processes (shared_region.hpp). Reservations are plain values a
// process keeps; one held by a process that dies is never settled, so its
// money stays committed: kept as spent.
#ifndef TOLLGATE_BUDGET_HPP
#define TOLLGATE_BUDGET_HPP

// #include <tollgate/config.hpp>  (already above)
// #include <tollgate/detail/atomic.hpp>  (already above)
// #include <tollgate/error.hpp>  (already above)
// #include <tollgate/money.hpp>  (already above)

#include <atomic>
#include <cstdint>
#include <limits>
#include <utility>

TOLLGATE_BEGIN_NAMESPACE

template <class C>
struct budget_reservation {
  money<C> amount;    // what is held
  money<C> missing;   // when refused: how much more budget it would have needed
  bool admitted = false;
  bool settled = false;
  bool saturated = false;  // refused because the budget's totals overflowed (see budget)
  constexpr explicit operator bool() const noexcept { return admitted; }
};

template <class C>
class alignas(TOLLGATE_CACHELINE_SIZE) budget {
 public:
  explicit budget(money<C> limit) {
    if (limit.nanos() <= 0) detail::fail(errc::zero_count);
    limit_ = limit.nanos();
  }
  budget(money<C> limit, errc& ec) noexcept {
    ec = limit.nanos() <= 0 ? errc::zero_count : errc::ok;
    limit_ = ec == errc::ok ? limit.nanos() : 0;
  }
  budget(const budget&) = delete;
  budget& operator=(const budget&) = delete;

  // Holds `amount` if it fits; otherwise says how much is missing.
  budget_reservation<C> reserve(money<C> amount) noexcept {
    budget_reservation<C> r;
    if (amount.nanos() <= 0) {  // holds nothing: admitted whatever the totals
      r.admitted = true;
      return r;
    }
    // acquire/acq_rel: the committed total is the only shared data; acquire
    // and release make a budget usable as a hand-off point and cost nothing on
    // x86. Every update is an RMW, so none is lost.
    std::int64_t c = committed_.load(std::memory_order_acquire);
    for (;;) {
      if (c < 0) {  // saturated
        r.amount = amount;
        r.missing = money<C>::from_nanos(std::numeric_limits<std::int64_t>::max());
        r.saturated = true;
        return r;
      }
      std::int64_t next = 0;
      if (__builtin_add_overflow(c, amount.nanos(), &next) || next > limit_) {
        r.amount = amount;
        // c + amount - limit, saturating: only reported, never stored.
        std::int64_t miss = 0;
        if (__builtin_sub_overflow(c, limit_, &miss) || __builtin_add_overflow(miss, amount.nanos(), &miss))
          miss = std::numeric_limits<std::int64_t>::max();
        r.missing = money<C>::from_nanos(miss);
        return r;
      }
      if (committed_.compare_exchange_weak(c, next, std::memory_order_acq_rel, std::memory_order_acquire)) {
        r.amount = amount;
        r.admitted = true;
        return r;
      }
    }
  }

  // Records the actual cost of a reserved call and frees the rest of the
  // reservation. Returns reserved - actual: negative is an overspend.
  money<C> settle(budget_reservation<C>& r, money<C> actual) noexcept {
    if (!r.admitted || r.settled) return money<C>();
    r.settled = true;
    if (actual.nanos() < 0) actual = money<C>();
    // Both amounts are >= 0, so the delta cannot overflow; the totals can.
    sat_add(committed_, actual.nanos() - r.amount.nanos(), std::memory_order_acq_rel);  // acq_rel: as in reserve
    add_spent(actual.nanos());
    return money<C>::from_nanos(r.amount.nanos() - actual.nanos());
  }
  // Gives the whole reservation back (the call was not billed, e.g. a 429).
  void release(budget_reservation<C>& r) noexcept { (void)settle(r, money<C>()); }

  // Snapshot support: reserved + settled, and settled, in nano-units; and
  // their inverse for a budget not yet shared.
  std::pair<std::int64_t, std::int64_t> export_totals() const noexcept {
    const std::int64_t c = committed_.load(std::memory_order_acquire);  // acquire: as in remaining
    return {c < 0 ? std::numeric_limits<std::int64_t>::max() : c, spent_.load(std::memory_order_relaxed)};  // relaxed: a statistic
  }
  // Negative totals count as zero.
  void import_totals(std::int64_t committed, std::int64_t spent) noexcept {
    spent_.store(spent < 0 ? 0 : spent, std::memory_order_relaxed);               // relaxed: a statistic
    committed_.store(committed < 0 ? 0 : committed, std::memory_order_release);  // release: as in reserve
  }

  money<C> limit() const noexcept { return money<C>::from_nanos(limit_); }
  // Limit minus everything reserved or settled (never negative).
  money<C> remaining() const noexcept {
    const std::int64_t c = committed_.load(std::memory_order_acquire);  // acquire: as in reserve
    return money<C>::from_nanos(c < 0 || c >= limit_ ? 0 : limit_ - c);
  }
  money<C> spent() const noexcept { return money<C>::from_nanos(spent_.load(std::memory_order_relaxed)); }
  // True once a settle overflowed the totals: the budget then refuses
  // everything (see the header).
  bool saturated() const noexcept {
    return committed_.load(std::memory_order_acquire) < 0;  // acquire: as in reserve
  }

 private:
  // The saturation mark: committed totals are never negative otherwise (a
  // settle gives back at most what its reservation added).
  static constexpr std::int64_t sticky = std::numeric_limits<std::int64_t>::min();

  // t += d; a sum past INT64_MAX sets the mark, which then sticks (a delta of
  // any sign leaves it there; a03: the maximum itself had been the mark, so a
  // budget of money::max() fully reserved stuck). One CAS loop: lock-free,
  // and no update is lost.
  static void sat_add(detail::atomic<std::int64_t>& t, std::int64_t d, std::memory_order order) noexcept {
    // relaxed load and failure order: the loop only recomputes from the
    // value; the successful CAS carries `order` (the caller's pairing).
    std::int64_t c = t.load(std::memory_order_relaxed);
    for (;;) {
      std::int64_t next = 0;
      if (c < 0) return;
      if (__builtin_add_overflow(c, d, &next)) next = sticky;  // only upwards: c >= 0
      else if (next < 0) next = 0;  // more given back than held: only after import_totals under leases
      if (t.compare_exchange_weak(c, next, order, std::memory_order_relaxed)) return;
    }
  }
  // spent += d (d >= 0), sticking at INT64_MAX.
  void add_spent(std::int64_t d) noexcept {
    // relaxed: a statistic; the loop only recomputes from the value.
    std::int64_t c = spent_.load(std::memory_order_relaxed);
    for (;;) {
      std::int64_t next = 0;
      if (__builtin_add_overflow(c, d, &next)) next = std::numeric_limits<std::int64_t>::max();
      if (next == c || spent_.compare_exchange_weak(c, next, std::memory_order_relaxed, std::memory_order_relaxed)) return;
    }
  }

  detail::atomic<std::int64_t> committed_{0};  // reserved + settled, in nano-units
  detail::atomic<std::int64_t> spent_{0};
  std::int64_t limit_ = 0;  // written once before sharing
};

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_BUDGET_HPP
// #include <tollgate/estimate.hpp>  (inlined below)
// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// estimate.hpp: a conservative token estimate from UTF-8 text, for admission
// before the server has counted anything.
//
// This is an estimate, not a tokenizer. It uses the rules of thumb Kimi
// publishes: one token is about 3-4 English characters, or about 1.5-2
// Chinese characters. The default (`conservative`) takes the low ends - 3 and
// 1.5 characters per token - so it errs high, because an estimate that is too
// low causes 429s; `typical` takes 4 and 2. Counting:
//   * ASCII (letters, digits, punctuation, whitespace): 1 / chars_per_token each;
//   * CJK ideographs, kana, hangul, CJK punctuation and full-width forms:
//     1 / cjk_chars_per_token each;
//   * any other code point (accented Latin, Cyrillic, emoji ...): 1 token each
//     (the high side: such text often splits into byte-level tokens);
//   * every invalid UTF-8 byte: 1 token (never a crash);
// then the total is rounded up, the safety margin (percent) added, rounded up.
// Chat requests add per-message and per-request overheads (defaults 4 and 2,
// the OpenAI cookbook's convention: Kimi does not publish its framing).
#ifndef TOLLGATE_ESTIMATE_HPP
#define TOLLGATE_ESTIMATE_HPP

// #include <tollgate/config.hpp>  (already above)

#include <cstddef>
#include <cstdint>
#include <string_view>

TOLLGATE_BEGIN_NAMESPACE

struct estimate_options {
  // Characters per token, in tenths (30 = 3.0).
  std::uint32_t ascii_tenths_per_token = 30;
  std::uint32_t cjk_tenths_per_token = 15;
  std::uint32_t margin_percent = 0;       // added on top, rounded up
  std::uint32_t per_message_overhead = 4;  // chat framing per message
  std::uint32_t per_request_overhead = 2;  // and per request

  static constexpr estimate_options conservative() noexcept { return estimate_options{}; }
  static constexpr estimate_options typical() noexcept { return estimate_options{40, 20, 0, 4, 2}; }
};

// Counts of what the text is made of (whole code points or bytes).
struct text_census {
  std::uint64_t ascii = 0, cjk = 0, other = 0, invalid_bytes = 0;
};

namespace detail {
constexpr bool is_cjk(std::uint32_t cp) noexcept {
  return (cp >= 0x3000 && cp <= 0x303F) ||   // CJK symbols and punctuation
         (cp >= 0x3040 && cp <= 0x30FF) ||   // hiragana, katakana
         (cp >= 0x3400 && cp <= 0x4DBF) ||   // CJK extension A
         (cp >= 0x4E00 && cp <= 0x9FFF) ||   // CJK unified ideographs
         (cp >= 0xAC00 && cp <= 0xD7AF) ||   // hangul syllables
         (cp >= 0xF900 && cp <= 0xFAFF) ||   // CJK compatibility ideographs
         (cp >= 0xFF00 && cp <= 0xFFEF) ||   // half- and full-width forms
         (cp >= 0x20000 && cp <= 0x3FFFF);   // CJK extensions B onwards
}
}  // namespace detail

// Decodes UTF-8 strictly (no overlongs, no surrogates, nothing above U+10FFFF);
// each byte that does not start a valid sequence counts as invalid.
constexpr text_census census(std::string_view s) noexcept {
  text_census c;
  std::size_t i = 0;
  while (i < s.size()) {
    const unsigned char b = static_cast<unsigned char>(s[i]);
    if (b < 0x80) {
      ++c.ascii;
      ++i;
      continue;
    }
    std::size_t len = 0;
    std::uint32_t cp = 0, min = 0;
    if ((b & 0xE0) == 0xC0) {
      len = 2;
      cp = b & 0x1Fu;
      min = 0x80;
    } else if ((b & 0xF0) == 0xE0) {
      len = 3;
      cp = b & 0x0Fu;
      min = 0x800;
    } else if ((b & 0xF8) == 0xF0) {
      len = 4;
      cp = b & 0x07u;
      min = 0x10000;
    }
    bool ok = len != 0 && i + len <= s.size();
    for (std::size_t k = 1; ok && k < len; ++k) {
      const unsigned char cb = static_cast<unsigned char>(s[i + k]);
      if ((cb & 0xC0) != 0x80)
        ok = false;
      else
        cp = (cp << 6) | (cb & 0x3Fu);
    }
    if (ok && (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))) ok = false;
    if (!ok) {
      ++c.invalid_bytes;
      ++i;
      continue;
    }
    if (detail::is_cjk(cp))
      ++c.cjk;
    else
      ++c.other;
    i += len;
  }
  return c;
}

// Estimated tokens for a piece of text (no chat overheads).
constexpr std::uint64_t estimate_tokens(std::string_view text,
                                        estimate_options o = estimate_options::conservative()) noexcept {
  const text_census c = census(text);
  const std::uint64_t at = o.ascii_tenths_per_token ? o.ascii_tenths_per_token : 1;
  const std::uint64_t ct = o.cjk_tenths_per_token ? o.cjk_tenths_per_token : 1;
  // Sum in units of 1 / (at * ct) tokens, then round up once.
  const std::uint64_t num = c.ascii * 10 * ct + c.cjk * 10 * at + (c.other + c.invalid_bytes) * at * ct;
  const std::uint64_t den = at * ct;
  std::uint64_t t = num / den + (num % den != 0 ? 1 : 0);
  if (o.margin_percent) t += (t * o.margin_percent + 99) / 100;
  return t;
}

// Estimated prompt tokens of a chat request: each message's text plus the
// per-message overhead, plus the per-request overhead.
struct chat_message {
  std::string_view role;
  std::string_view content;
};
template <class Range>
constexpr std::uint64_t estimate_chat_tokens(const Range& messages,
                                             estimate_options o = estimate_options::conservative()) noexcept {
  std::uint64_t t = o.per_request_overhead;
  for (const chat_message& m : messages)
    t += estimate_tokens(m.role, o) + estimate_tokens(m.content, o) + o.per_message_overhead;
  return t;
}

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_ESTIMATE_HPP
// #include <tollgate/http.hpp>  (inlined below)
// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// http.hpp: pure parsers for what an LLM API answers about its limits. No
// I/O and no JSON library: std::string_view in, values out. Every function
// accepts any byte string; what it cannot read is "absent" or
// error_kind::unknown, never a crash (the parsers are fuzzed).
//
//   parse_retry_after      "120", "1.5", or an HTTP-date (against `now`)
//   parse_retry_after_ms   "250", "12.5"           (retry-after-ms)
//   parse_go_duration      "1s", "6m0s", "12ms", "2h31m16.752s", "500us"
//   rate_limit_headers     the six x-ratelimit-{limit,remaining,reset}-{requests,tokens}
//   classify(status, body) Kimi's (and OpenAI's) error bodies -> what happened,
//                          whether to retry, and the numbers in the message
#ifndef TOLLGATE_HTTP_HPP
#define TOLLGATE_HTTP_HPP

// #include <tollgate/config.hpp>  (already above)
// #include <tollgate/clock.hpp>  (already above)
// #include <tollgate/detail/arith.hpp>  (already above)

#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <string_view>

TOLLGATE_BEGIN_NAMESPACE

namespace detail {
constexpr char lower(char c) noexcept { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }
constexpr bool iequals(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (lower(a[i]) != lower(b[i])) return false;
  return true;
}
constexpr std::size_t ifind(std::string_view hay, std::string_view needle, std::size_t from = 0) noexcept {
  if (needle.size() > hay.size()) return std::string_view::npos;
  for (std::size_t i = from; i + needle.size() <= hay.size(); ++i)
    if (iequals(hay.substr(i, needle.size()), needle)) return i;
  return std::string_view::npos;
}
constexpr std::string_view trim(std::string_view s) noexcept {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r' || s.back() == '\n')) s.remove_suffix(1);
  return s;
}
constexpr bool is_digit(char c) noexcept { return c >= '0' && c <= '9'; }

// A non-negative decimal number of `unit` nanoseconds, with an optional
// fraction (rounded up to the nanosecond: never early). Saturates at about
// 292 years; anything else is absent.
constexpr std::optional<nanoseconds> decimal_duration(std::string_view s, std::uint64_t unit) noexcept {
  s = trim(s);
  if (s.empty()) return std::nullopt;
  std::uint64_t whole = 0, frac = 0, scale = 1;
  bool any = false, dot = false, big = false, dropped = false;
  for (char c : s) {
    if (c == '.' && !dot) {
      dot = true;
      continue;
    }
    if (!is_digit(c)) return std::nullopt;
    any = true;
    const std::uint64_t d = static_cast<std::uint64_t>(c - '0');
    if (!dot) {
      if (whole > (std::numeric_limits<std::uint64_t>::max() - d) / 10)
        big = true;
      else
        whole = whole * 10 + d;
    } else if (scale < 1000000000000000000ULL) {
      frac = frac * 10 + d;
      scale *= 10;
    } else if (d != 0) {
      dropped = true;  // beyond 18 decimals: round up below
    }
  }
  if (!any) return std::nullopt;
  constexpr std::uint64_t max_ns = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
  if (big || whole > max_ns / unit) return nanoseconds(std::numeric_limits<std::int64_t>::max());
  std::uint64_t ns = whole * unit;
  // frac / scale of a unit, rounded up: frac < scale <= 10^18 and unit <= 10^9*3600.
  const u128 part = (static_cast<u128>(frac) * unit + scale - 1) / scale + (dropped ? 1 : 0);
  if (part > max_ns - ns) return nanoseconds(std::numeric_limits<std::int64_t>::max());
  ns += static_cast<std::uint64_t>(part);
  return nanoseconds(static_cast<std::int64_t>(ns));
}

constexpr std::optional<std::uint64_t> parse_uint(std::string_view s) noexcept {
  s = trim(s);
  if (s.empty()) return std::nullopt;
  std::uint64_t v = 0;
  for (char c : s) {
    if (!is_digit(c)) return std::nullopt;
    const std::uint64_t d = static_cast<std::uint64_t>(c - '0');
    if (v > (std::numeric_limits<std::uint64_t>::max() - d) / 10) return std::nullopt;
    v = v * 10 + d;
  }
  return v;
}

// Days from 1970-01-01 to y-m-d (proleptic Gregorian).
constexpr std::int64_t days_from_civil(std::int64_t y, std::int64_t m, std::int64_t d) noexcept {
  y -= m <= 2 ? 1 : 0;
  const std::int64_t era = (y >= 0 ? y : y - 399) / 400;
  const std::int64_t yoe = y - era * 400;
  const std::int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const std::int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

constexpr int month_index(std::string_view m) noexcept {
  constexpr std::string_view names[] = {"jan", "feb", "mar", "apr", "may", "jun",
                                        "jul", "aug", "sep", "oct", "nov", "dec"};
  for (int i = 0; i < 12; ++i)
    if (iequals(m, names[i])) return i + 1;
  return 0;
}

// "Sun, 06 Nov 1994 08:49:37 GMT" (IMF-fixdate), "Sunday, 06-Nov-94 08:49:37 GMT"
// (RFC 850) and "Sun Nov  6 08:49:37 1994" (asctime): seconds since 1970.
constexpr std::optional<std::int64_t> http_date(std::string_view s) noexcept {
  s = trim(s);
  // Split into tokens on spaces, commas, dashes and colons.
  std::string_view tok[8] = {};
  std::size_t n = 0, i = 0;
  while (i < s.size() && n < 8) {
    while (i < s.size() && (s[i] == ' ' || s[i] == ',' || s[i] == '-' || s[i] == ':')) ++i;
    const std::size_t b = i;
    while (i < s.size() && s[i] != ' ' && s[i] != ',' && s[i] != '-' && s[i] != ':') ++i;
    if (i > b) tok[n++] = s.substr(b, i - b);
  }
  if (i < s.size() && trim(s.substr(i)).size() > 0) return std::nullopt;
  // tokens: weekday day month year hh mm ss GMT | weekday month day hh mm ss year
  std::optional<std::uint64_t> day, year, hh, mm, ss;
  int month = 0;
  if (n == 8 && iequals(tok[7], "GMT")) {
    day = parse_uint(tok[1]);
    month = month_index(tok[2]);
    year = parse_uint(tok[3]);
    hh = parse_uint(tok[4]);
    mm = parse_uint(tok[5]);
    ss = parse_uint(tok[6]);
    if (year && tok[3].size() == 2) *year += *year < 70 ? 2000 : 1900;  // RFC 850 two-digit year
  } else if (n == 7) {
    month = month_index(tok[1]);
    day = parse_uint(tok[2]);
    hh = parse_uint(tok[3]);
    mm = parse_uint(tok[4]);
    ss = parse_uint(tok[5]);
    year = parse_uint(tok[6]);
  } else {
    return std::nullopt;
  }
  if (!day || !year || !hh || !mm || !ss || month == 0 || *day < 1 || *day > 31 || *year > 9999 || *hh > 23 ||
      *mm > 59 || *ss > 60)
    return std::nullopt;
  const std::int64_t days =
      days_from_civil(static_cast<std::int64_t>(*year), month, static_cast<std::int64_t>(*day));
  return days * 86400 + static_cast<std::int64_t>(*hh * 3600 + *mm * 60 + *ss);
}
}  // namespace detail

// Retry-After: delta-seconds (fractions accepted, rounded up to the
// nanosecond) or an HTTP-date, compared with `now` (nanoseconds since
// 1970-01-01Z; a date in the past means 0). Absent when unreadable.
constexpr std::optional<nanoseconds> parse_retry_after(std::string_view v, nanoseconds now_since_epoch) noexcept {
  if (auto d = detail::decimal_duration(v, 1000000000)) return d;
  if (auto t = detail::http_date(v)) {
    const std::int64_t now_s = now_since_epoch.count() / 1000000000;
    const std::int64_t now_frac = now_since_epoch.count() % 1000000000;
    if (*t <= now_s) return nanoseconds(0);
    const std::int64_t secs = *t - now_s;  // up to year 9999: may not fit in nanoseconds
    if (secs > std::numeric_limits<std::int64_t>::max() / 1000000000 - 1)
      return nanoseconds(std::numeric_limits<std::int64_t>::max());
    return nanoseconds(secs * 1000000000 - now_frac);
  }
  return std::nullopt;
}

// retry-after-ms: milliseconds, fractions accepted.
constexpr std::optional<nanoseconds> parse_retry_after_ms(std::string_view v) noexcept {
  return detail::decimal_duration(v, 1000000);
}

// A Go duration as in x-ratelimit-reset-*: a sequence of decimal numbers with
// units h, m, s, ms, us (or µs), ns: "6m0s", "12ms", "2h31m16.752s". "0" alone
// is zero. Absent when unreadable.
constexpr std::optional<nanoseconds> parse_go_duration(std::string_view s) noexcept {
  s = detail::trim(s);
  if (s == "0") return nanoseconds(0);
  if (s.empty()) return std::nullopt;
  std::uint64_t total = 0;
  constexpr std::uint64_t max_ns = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
  std::size_t i = 0;
  while (i < s.size()) {
    const std::size_t b = i;
    while (i < s.size() && (detail::is_digit(s[i]) || s[i] == '.')) ++i;
    if (i == b) return std::nullopt;
    const std::string_view num = s.substr(b, i - b);
    const std::size_t u = i;
    while (i < s.size() && !detail::is_digit(s[i]) && s[i] != '.') ++i;
    const std::string_view unit = s.substr(u, i - u);
    std::uint64_t scale = 0;
    if (unit == "h") scale = 3600000000000ULL;
    else if (unit == "m") scale = 60000000000ULL;
    else if (unit == "s") scale = 1000000000ULL;
    else if (unit == "ms") scale = 1000000ULL;
    else if (unit == "us" || unit == "\xC2\xB5s" || unit == "\xCE\xBCs") scale = 1000ULL;
    else if (unit == "ns") scale = 1ULL;
    else return std::nullopt;
    const auto part = detail::decimal_duration(num, scale);
    if (!part) return std::nullopt;
    const std::uint64_t p = static_cast<std::uint64_t>(part->count());
    total = p > max_ns - total ? max_ns : total + p;
  }
  return nanoseconds(static_cast<std::int64_t>(total));
}

// The OpenAI-style rate-limit headers. Feed each response header through
// `read`; the ones not present stay empty. `read`'s time is Unix time
// (system_clock::now()), not an account's steady `now`: an HTTP-date
// Retry-After is turned into a wait against it.
struct rate_limit_headers {
  std::optional<std::uint64_t> limit_requests, limit_tokens, remaining_requests, remaining_tokens;
  std::optional<nanoseconds> reset_requests, reset_tokens;
  // Hints to wait before retrying, in the order the Stainless SDKs read them.
  std::optional<nanoseconds> retry_after_ms, retry_after, x_retry_after;

  // Returns true if the header was one of these (even if its value was unreadable).
  constexpr bool read(std::string_view name, std::string_view value, nanoseconds now_since_epoch) noexcept {
    name = detail::trim(name);
    using detail::iequals;
    if (iequals(name, "x-ratelimit-limit-requests")) limit_requests = detail::parse_uint(value);
    else if (iequals(name, "x-ratelimit-limit-tokens")) limit_tokens = detail::parse_uint(value);
    else if (iequals(name, "x-ratelimit-remaining-requests")) remaining_requests = detail::parse_uint(value);
    else if (iequals(name, "x-ratelimit-remaining-tokens")) remaining_tokens = detail::parse_uint(value);
    else if (iequals(name, "x-ratelimit-reset-requests")) reset_requests = parse_go_duration(value);
    else if (iequals(name, "x-ratelimit-reset-tokens")) reset_tokens = parse_go_duration(value);
    else if (iequals(name, "retry-after-ms")) retry_after_ms = parse_retry_after_ms(value);
    else if (iequals(name, "retry-after")) retry_after = parse_retry_after(value, now_since_epoch);
    else if (iequals(name, "x-retry-after")) x_retry_after = parse_retry_after(value, now_since_epoch);
    else return false;
    return true;
  }
  // The server's wait hint: retry-after-ms, else retry-after, else x-retry-after.
  constexpr std::optional<nanoseconds> retry_hint() const noexcept {
    if (retry_after_ms) return retry_after_ms;
    if (retry_after) return retry_after;
    return x_retry_after;
  }
};

// What an error response means for the caller.
enum class error_kind : unsigned char {
  none,               // 2xx
  concurrency,        // rate_limit_reached_error: too many requests in flight
  rpm,                // ... requests per minute
  tpm,                // ... tokens per minute (organization or project)
  tpd,                // ... tokens per day: wait for the daily reset, do not spin
  rate_limit,         // a rate limit whose dimension the message does not name
  overloaded,         // engine_overloaded_error: server capacity, not your limit
  quota,              // exceeded_current_quota_error / insufficient_quota: balance; never retry
  auth,               // 401: bad key (keys of kimi.ai, kimi.com and Kimi Code do not mix)
  plan_membership,    // 402 (Kimi Code): membership not verified
  plan_usage,         // 403 (Kimi Code): 5-hour / weekly / monthly usage limit reached
  plan_concurrency,   // 403 (Kimi Code): concurrent request limit
  permission_denied,  // 403: API not open to this account, IP allow-list
  context_too_long,   // 400: prompt (+ max_tokens) beyond the model's context
  content_filter,     // 400: rejected as high risk
  invalid_request,    // other 400s
  not_found,          // 404: unknown or retired model, or tier not unlocked
  server_error,       // 500, 502, 503: retry with backoff
  timeout,            // 504: retry, prefer streaming
  client_closed,      // 499
  unknown,            // anything else
};

constexpr const char* to_string(error_kind k) noexcept {
  switch (k) {
    case error_kind::none: return "none";
    case error_kind::concurrency: return "concurrency";
    case error_kind::rpm: return "rpm";
    case error_kind::tpm: return "tpm";
    case error_kind::tpd: return "tpd";
    case error_kind::rate_limit: return "rate_limit";
    case error_kind::overloaded: return "overloaded";
    case error_kind::quota: return "quota";
    case error_kind::auth: return "auth";
    case error_kind::plan_membership: return "plan_membership";
    case error_kind::plan_usage: return "plan_usage";
    case error_kind::plan_concurrency: return "plan_concurrency";
    case error_kind::permission_denied: return "permission_denied";
    case error_kind::context_too_long: return "context_too_long";
    case error_kind::content_filter: return "content_filter";
    case error_kind::invalid_request: return "invalid_request";
    case error_kind::not_found: return "not_found";
    case error_kind::server_error: return "server_error";
    case error_kind::timeout: return "timeout";
    case error_kind::client_closed: return "client_closed";
    case error_kind::unknown: return "unknown";
  }
  return "?";
}

// Whether a request that failed this way may be sent again (after waiting).
constexpr bool retryable(error_kind k) noexcept {
  switch (k) {
    case error_kind::concurrency:
    case error_kind::rpm:
    case error_kind::tpm:
    case error_kind::tpd:
    case error_kind::rate_limit:
    case error_kind::overloaded:
    case error_kind::plan_usage:
    case error_kind::plan_concurrency:
    case error_kind::server_error:
    case error_kind::timeout:
      return true;
    default:
      return false;
  }
}

struct error_info {
  error_kind kind = error_kind::unknown;
  int status = 0;
  bool retry = false;
  bool project_scope = false;           // a project-level, not organization-level, limit
  std::optional<std::uint64_t> limit;   // the limit named in the message ("max RPM: 200", "limit: 64000")
  std::optional<std::uint64_t> current; // the usage named in the message ("current: 64001")
  std::optional<nanoseconds> hint;      // "please try again after N seconds"
  // These two view into the body given to classify: they are valid only as
  // long as it is.
  std::string_view type;                // error.type, as sent
  std::string_view message;             // error.message, raw (JSON escapes not decoded)
};

namespace detail {
// The raw string value of the first "key": "value" pair in a JSON text, or
// empty. Escapes are skipped over, not decoded.
constexpr std::string_view json_string(std::string_view body, std::string_view key) noexcept {
  std::size_t from = 0;
  while (from < body.size()) {
    const std::size_t k = body.find(key, from);
    if (k == std::string_view::npos) return {};
    from = k + key.size();
    if (k == 0 || body[k - 1] != '"' || from >= body.size() || body[from] != '"') continue;
    std::size_t i = from + 1;
    while (i < body.size() && (body[i] == ' ' || body[i] == '\t' || body[i] == '\n' || body[i] == '\r')) ++i;
    if (i >= body.size() || body[i] != ':') continue;
    ++i;
    while (i < body.size() && (body[i] == ' ' || body[i] == '\t' || body[i] == '\n' || body[i] == '\r')) ++i;
    if (i >= body.size() || body[i] != '"') continue;
    const std::size_t b = ++i;
    while (i < body.size() && body[i] != '"') i += body[i] == '\\' ? 2 : 1;
    if (i > body.size()) return {};
    return body.substr(b, i - b);
  }
  return {};
}

// The number after `label` in `msg` ("max RPM: 200" -> 200), case-insensitive.
constexpr std::optional<std::uint64_t> number_after(std::string_view msg, std::string_view label) noexcept {
  const std::size_t p = ifind(msg, label);
  if (p == std::string_view::npos) return std::nullopt;
  std::size_t i = p + label.size();
  while (i < msg.size() && (msg[i] == ' ' || msg[i] == ':')) ++i;
  const std::size_t b = i;
  while (i < msg.size() && is_digit(msg[i])) ++i;
  return parse_uint(msg.substr(b, i - b));
}
}  // namespace detail

// Classifies an error response from its status and body. Any bytes are fine.
constexpr error_info classify(int status, std::string_view body) noexcept {
  using detail::ifind;
  constexpr auto npos = std::string_view::npos;
  error_info e;
  e.status = status;
  e.type = detail::json_string(body, "type");
  const std::string_view code = detail::json_string(body, "code");
  e.message = detail::json_string(body, "message");
  const std::string_view msg = e.message.empty() ? body : e.message;
  // Case-insensitive search: lower-case the message once (messages are short;
  // a longer one is searched in place, more slowly), then plain finds.
  char low_buf[512] = {};
  const bool lowered = msg.size() <= sizeof low_buf;
  if (lowered)
    for (std::size_t i = 0; i < msg.size(); ++i) low_buf[i] = detail::lower(msg[i]);
  const std::string_view low(low_buf, lowered ? msg.size() : 0);
  // `needle` must be lower case.
  auto has = [&](std::string_view needle) { return lowered ? low.find(needle) != npos : ifind(msg, needle) != npos; };
  auto type_is = [&](std::string_view t) { return detail::iequals(e.type, t) || detail::iequals(code, t); };
  if (const auto after = detail::number_after(msg, "try again after"))
    e.hint = nanoseconds(static_cast<std::int64_t>(*after > 9000000000ULL ? 9000000000ULL : *after) * 1000000000);

  if (status >= 200 && status < 300) {
    e.kind = error_kind::none;
  } else if (type_is("exceeded_current_quota_error") || type_is("insufficient_quota") ||
             (status == 429 && (has("insufficient balance") || has("exceeded your current") || has("exceeded current quota")))) {
    e.kind = error_kind::quota;
  } else if (type_is("engine_overloaded_error")) {
    e.kind = error_kind::overloaded;
  } else if (type_is("rate_limit_reached_error") || type_is("rate_limit_exceeded") || type_is("rate_limit_error") ||
             status == 429) {
    e.project_scope = has("project");
    if (has("concurrency")) {
      e.kind = error_kind::concurrency;
      e.limit = detail::number_after(msg, "concurrency");
    } else if (has("rpm")) {
      e.kind = error_kind::rpm;
      e.limit = detail::number_after(msg, "RPM");
    } else if (has("tpd")) {
      e.kind = error_kind::tpd;
    } else if (has("tpm")) {
      e.kind = error_kind::tpm;
    } else if (detail::iequals(e.type, "requests")) {  // OpenAI: code rate_limit_exceeded, type requests
      e.kind = error_kind::rpm;
    } else if (detail::iequals(e.type, "tokens")) {
      e.kind = error_kind::tpm;
    } else if (has("overloaded") && !type_is("rate_limit_error")) {
      e.kind = error_kind::overloaded;
    } else {
      e.kind = error_kind::rate_limit;
    }
    if (e.kind == error_kind::tpm || e.kind == error_kind::tpd) {
      e.current = detail::number_after(msg, "current");
      e.limit = detail::number_after(msg, "limit:");
    }
  } else if (status == 401) {
    e.kind = error_kind::auth;
  } else if (status == 402) {
    e.kind = error_kind::plan_membership;
  } else if (status == 403) {
    if (has("usage limit"))
      e.kind = error_kind::plan_usage;
    else if (has("concurrent request limit"))
      e.kind = error_kind::plan_concurrency;
    else
      e.kind = error_kind::permission_denied;
  } else if (status == 400) {
    if (type_is("content_filter") || has("high risk"))
      e.kind = error_kind::content_filter;
    else if (has("token length too long") || has("exceeded model token limit") || has("context length") ||
             has("maximum context"))
      e.kind = error_kind::context_too_long;
    else
      e.kind = error_kind::invalid_request;
  } else if (status == 404) {
    e.kind = error_kind::not_found;
  } else if (status == 499) {
    e.kind = error_kind::client_closed;
  } else if (status == 504) {
    e.kind = error_kind::timeout;
  } else if (status >= 500 && status <= 599) {
    e.kind = error_kind::server_error;
  } else {
    e.kind = error_kind::unknown;
  }
  e.retry = retryable(e.kind);
  return e;
}

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_HTTP_HPP
// #include <tollgate/retry.hpp>  (inlined below)
// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// retry.hpp: when (and whether) to send a failed request again.
//
// Backoff grows from `base` by doubling up to `cap`, with full jitter (a wait
// uniform in [0, backoff]) or decorrelated jitter (uniform in [base, 3 x the
// previous wait], capped), from a random source you inject (deterministic
// tests). A server hint (Retry-After and friends, or Kimi's "try again after N
// seconds") is honoured even above `cap`, up to `max_wait`; a longer hint -
// a daily limit's Retry-After of 1,152 s, say - gives up with
// `gave_up::hint_too_long` instead of hanging silently or spinning. Kinds that
// must not be retried (quota, auth, context too long ...) give up at once.
// Every retry must go through the account again: it counts toward RPM like
// any request. Turn off your HTTP SDK's own retries, which no limiter sees.
#ifndef TOLLGATE_RETRY_HPP
#define TOLLGATE_RETRY_HPP

// #include <tollgate/config.hpp>  (already above)
// #include <tollgate/clock.hpp>  (already above)
// #include <tollgate/http.hpp>  (already above)

#include <chrono>
#include <cstdint>
#include <optional>

TOLLGATE_BEGIN_NAMESPACE

enum class jitter : unsigned char { none, full, decorrelated };

struct retry_policy {
  nanoseconds base = std::chrono::milliseconds(500);
  nanoseconds cap = std::chrono::seconds(8);
  nanoseconds max_wait = std::chrono::seconds(120);  // longest server hint still honoured
  int max_attempts = 3;                              // including the first
  std::optional<nanoseconds> deadline;               // give up if the retry would start after it (from the first attempt)
  tollgate::jitter jitter = tollgate::jitter::full;
};

enum class gave_up : unsigned char { no, not_retryable, attempts_exhausted, hint_too_long, deadline };

constexpr const char* to_string(gave_up g) noexcept {
  switch (g) {
    case gave_up::no: return "retry";
    case gave_up::not_retryable: return "not retryable";
    case gave_up::attempts_exhausted: return "attempts exhausted";
    case gave_up::hint_too_long: return "server asks to wait longer than max_wait";
    case gave_up::deadline: return "the retry would start after the deadline";
  }
  return "?";
}

struct retry_decision {
  gave_up reason = gave_up::no;
  nanoseconds wait{0};
  constexpr explicit operator bool() const noexcept { return reason == gave_up::no; }
};

// splitmix64, for callers who need a default source.
struct splitmix64 {
  std::uint64_t state = 0x9E3779B97F4A7C15ULL;
  constexpr std::uint64_t operator()() noexcept {
    std::uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }
};

// The retry state of one logical request.
class retrier {
 public:
  explicit constexpr retrier(retry_policy p = {}) noexcept : p_(p), prev_(p.base) {}

  // After failed attempt number attempts() (1 = the first): whether to try
  // again and how long to wait. `elapsed` is the time since the first
  // attempt; `rng` returns uniform 64-bit values.
  template <class Rng>
  constexpr retry_decision next(const error_info& e, nanoseconds elapsed, Rng& rng,
                                std::optional<nanoseconds> header_hint = std::nullopt) noexcept {
    ++attempts_;
    retry_decision d;
    if (!e.retry) {
      d.reason = gave_up::not_retryable;
      return d;
    }
    if (attempts_ >= p_.max_attempts) {
      d.reason = gave_up::attempts_exhausted;
      return d;
    }
    const std::optional<nanoseconds> hint = header_hint ? header_hint : e.hint;
    const nanoseconds own = backoff(rng);
    if (hint) {
      if (*hint > p_.max_wait) {
        d.reason = gave_up::hint_too_long;
        d.wait = *hint;
        return d;
      }
      d.wait = *hint > own ? *hint : own;  // never earlier than the server asked
    } else {
      d.wait = own;
    }
    if (p_.deadline && elapsed + d.wait > *p_.deadline) {
      d.reason = gave_up::deadline;
      return d;
    }
    return d;
  }

  constexpr int attempts() const noexcept { return attempts_; }

 private:
  template <class Rng>
  constexpr nanoseconds backoff(Rng& rng) noexcept {
    const std::int64_t base = p_.base.count() > 0 ? p_.base.count() : 1;
    const std::int64_t cap = p_.cap.count() > base ? p_.cap.count() : base;
    std::int64_t exp = base;
    for (int i = 1; i < attempts_ && exp < cap; ++i) exp = exp > cap / 2 ? cap : exp * 2;
    if (exp > cap) exp = cap;
    auto uniform = [&](std::int64_t lo, std::int64_t hi) {  // [lo, hi]
      const std::uint64_t span = static_cast<std::uint64_t>(hi - lo) + 1;
      return lo + static_cast<std::int64_t>(rng() % span);
    };
    switch (p_.jitter) {
      case jitter::none: return nanoseconds(exp);
      case jitter::full: return nanoseconds(uniform(0, exp));
      case jitter::decorrelated: {
        const std::int64_t hi = prev_.count() > cap / 3 ? cap : prev_.count() * 3;
        prev_ = nanoseconds(uniform(base, hi > base ? hi : base));
        return prev_;
      }
    }
    return nanoseconds(exp);
  }

  retry_policy p_;
  nanoseconds prev_;
  int attempts_ = 0;
};

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_RETRY_HPP
// #include <tollgate/account.hpp>  (inlined below)
// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// account.hpp: every limit of one API account, taken all at once or not at
// all: concurrency, requests per minute, tokens per minute, tokens per day,
// and an optional budget in dollars (account<Clock>, account_config) or
// yuan (account<Clock, cny_tag>, cny_account_config: prices from the
// model's CNY list; a dollar amount given to it does not compile). Kimi's
// limits are per organization, shared by all models and keys: make one
// account per organization and send every request through it.
//
// The parts, each with its own contract under account/: vocabulary and
// limits (config.hpp), server models' policies and the pure admission
// decisions (policy.hpp), the limiters holding the state (limiters.hpp),
// per-thread credit (credit.hpp), the lease slot table (slot_table.hpp),
// pause and feedback (pause.hpp), statistics (stats.hpp), the snapshot codec
// (snapshot.hpp), the lease (lease.hpp) and settling (settle.hpp).
//
// Admission. try_admit(request, now) reserves a concurrency slot, 1 request,
// prompt + max_tokens tokens in TPM and TPD (Kimi counts max_tokens at
// admission; without one, the model's default output cap, else the context
// window minus the prompt) and the request's worst-case cost (cost.hpp),
// which bounds what settle charges for any usage within the request. In all
// dimensions or in none: a partial success is rolled back, so under
// concurrency a request may be refused falsely but nothing is ever
// over-admitted. A refusal names every dimension that refused, and its wait
// is the largest of theirs; it is `never` when the request can never fit
// (tokens > the limit or above max_request_tokens under a margin policy,
// prompt + max_tokens > the context window, worst-case cost > the budget).
// The wait keeps the decision contract for the whole account, with per-thread
// credit on or off: the same request from the same thread is refused at
// now + wait - 1 ns unless capacity was given back meanwhile (a refund, a
// thread's credit given back, set_limits), and admitted at now + wait unless
// capacity was taken meanwhile (an admission, a debt, a pause). A refusal
// that also names concurrency or the budget needs a permit or money back as
// well (with nothing else waiting, its wait is zero, reason::busy). While
// paused, the wait is the later of the pause's end and the other dimensions'
// (also in an account just restored). A `now` older than one the account has
// seen (another thread's reading, a clock set back) keeps the contract: a
// window or the calendar day that cannot decide at it waits until the time it
// can (its head slot, its day) plus its wait there (reason::exhausted).
// The calendar day maps the account's clock to UTC days once (config.hpp,
// unix_time_at_zero: what a stepped or slewed wall clock does to it).
//
// The algorithm (admit_into): the decisions that need no state (the tokens
// reserved, the dimensions that refuse outright), then the stop and the
// pause; then every dimension in turn (concurrency, requests, tokens, the
// day, money), rolled back on the first refusal, which then asks every
// dimension for its wait without consuming (refuse_and_report; what a
// refusal leaves behind: account/refusal.hpp). The lease
// releases its slot when settled or destroyed; a lease dropped without
// settling keeps its reservations (the safe side). A concurrency slot held
// past lease_timeout is reclaimed when the account runs out of slots
// (stats().reclaimed). on_response(...) pauses the whole account after a
// 429 or an overload and stops it after a quota error, until resume();
// under server_model::learn it also moves a dimension to the margin policy
// (account/learn.hpp: the rule, its bound, and what a snapshot keeps), and
// with adaptive_concurrency a concurrency 429 or an overload lowers the
// concurrency limit, which successes raise again (adaptive_concurrency.hpp);
// with trust_rate_limit_headers, a response's x-ratelimit-remaining/reset
// headers cap what the account admits until that reset
// (account/server_remaining.hpp, observe_rate_limit_headers).
//
// Live change. set_limits moves a running account to another tier's limits
// (same dimensions) keeping what it has counted; it is thread-safe with
// admissions, but config() may then be read torn: read it from one thread.
// Concurrency contract. try_admit, settle and on_response are thread-safe
// and lock-free (each dimension is one of the lock-free primitives; the pause
// is one atomic word); with a waiting_room attached, though, every lease
// release calls the room, which takes its mutex. Counters are exact once
// threads are joined, approximate while they run. A lease must not outlive
// its account. With limits of 1,024 units and more, the first 16 threads take
// window and concurrency units a chunk at a time (credit.hpp: the bounds hold
// exactly; other threads may be refused falsely by at most 1.6 % of a
// window's limit and 3.2 % of the concurrency limit); remaining() and
// in_flight() count credit as not in flight; per_thread_credit = false: off.
//
// Cost. Spending credit, an admission and its settle take one atomic RMW
// (the slot-table word back; none with lease_timeout zero); a refill, one
// CAS per window and one on the permits. Without credit: five. See bench/.
#ifndef TOLLGATE_ACCOUNT_HPP
#define TOLLGATE_ACCOUNT_HPP

// #include <tollgate/config.hpp>  (already above)
// #include <tollgate/account/config.hpp>  (inlined below)
// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// account/config.hpp: the account's vocabulary: the server models it can
// stay inside, the dimensions a decision names, the account's limits
// (basic_account_config, from a tier row) and a request.
//
// Contract. Plain values, no state: every type here is a literal type that
// copies freely and means the same in any process (no pointer but a
// request's model, which names a price list, not state). Which limiter each
// dimension runs, and with which margin, follows from the configuration by
// the functions of account/policy.hpp; the account (account.hpp) enforces it.
#ifndef TOLLGATE_ACCOUNT_CONFIG_HPP
#define TOLLGATE_ACCOUNT_CONFIG_HPP

// #include <tollgate/config.hpp>  (already above)
// #include <tollgate/clock.hpp>  (already above)
// #include <tollgate/cost.hpp>  (already above)
// #include <tollgate/models.hpp>  (already above)
// #include <tollgate/money.hpp>  (already above)
// #include <tollgate/tiers.hpp>  (already above)

#include <chrono>
#include <cstdint>
#include <optional>

TOLLGATE_BEGIN_NAMESPACE

// `learn` (account/learn.hpp): each request and token limit starts on the
// strict window and moves to the margin policy on the first 429 that names it.
enum class server_model : unsigned char { unknown, fixed_window, sliding_log, window_counter, token_bucket, gcra, learn };

constexpr const char* to_string(server_model m) noexcept {
  switch (m) {
    case server_model::unknown: return "unknown";
    case server_model::fixed_window: return "fixed window";
    case server_model::sliding_log: return "sliding log";
    case server_model::window_counter: return "sliding-window counter";
    case server_model::token_bucket: return "token bucket";
    case server_model::gcra: return "GCRA burst 1";
    case server_model::learn: return "learn from 429s";
  }
  return "?";
}

// The dimensions a decision can name, as bits.
enum class dimension : std::uint16_t {
  concurrency = 1 << 0,
  rpm = 1 << 1,
  tpm = 1 << 2,
  tpd = 1 << 3,
  budget = 1 << 4,
  context = 1 << 5,      // prompt + max_tokens beyond the model's context window
  request_size = 1 << 6,  // above max_request_tokens, or no way to bound the output
  paused = 1 << 7,       // after a server 429 or overload
  stopped = 1 << 8,      // after a quota/balance error, until resume()
};

struct dimension_set {
  std::uint16_t bits = 0;
  constexpr bool has(dimension d) const noexcept { return (bits & static_cast<std::uint16_t>(d)) != 0; }
  constexpr void add(dimension d) noexcept { bits = static_cast<std::uint16_t>(bits | static_cast<std::uint16_t>(d)); }
  constexpr bool empty() const noexcept { return bits == 0; }
};

// The account's limits. Currency is the budget's: usd_tag (account_config)
// or cny_tag (cny_account_config); the account computes costs from the
// model's price list in that currency.
template <class Currency = usd_tag>
struct basic_account_config {
  using currency = Currency;
  limit concurrency = limit::unknown();  // unknown or unlimited: not enforced
  limit rpm = limit::unknown();
  limit tpm = limit::unknown();
  limit tpd = limit::unknown();
  server_model model = server_model::unknown;
  bool calendar_day = false;                     // TPD per calendar day at utc_offset, instead of rolling 24 h
  std::chrono::minutes utc_offset{0};
  // For calendar_day: the Unix time (ns since 1970-01-01Z) at the account
  // clock's zero, so that its days are UTC days whatever the clock. Unset:
  // 0 for a clock that reads Unix time (system_clock, manual clocks), else
  // system_clock::now() - Clock::now(), read once at construction. Not part
  // of the configuration a snapshot checks (it differs from boot to boot).
  // The mapping is fixed: a wall clock stepped after construction, or slewed
  // by NTP (up to 500 ppm, 43 s a day), moves the true UTC midnight against
  // the account's by that much, so the daily bound holds for days as the
  // account maps them and a server's day may see up to twice the limit
  // within that drift of its midnight; a new account (or a restore into
  // one) maps afresh.
  std::optional<nanoseconds> unix_time_at_zero;
  bool refund_unused_tokens = false;             // Kimi: false (the server counted max_tokens)
  std::uint64_t max_request_tokens = 65536;      // m: the largest prompt + max_tokens, the margin of token limits
  std::optional<money<Currency>> budget;         // a spending limit, if any
  // The windows of the request and token limits: Kimi's are a minute; a
  // gateway may count per second.
  nanoseconds request_window = std::chrono::minutes(1);
  nanoseconds token_window = std::chrono::minutes(1);
  // A concurrency slot held longer than this (a hung request, a holder that
  // vanished) is reclaimed when the account runs out of slots, and counted in
  // stats().reclaimed. Kimi documents requests of up to two hours. Zero:
  // never, and no slot table (two atomic operations fewer per request).
  nanoseconds lease_timeout = std::chrono::hours(2);
  // Per-thread credit (see the header): on, the first 16 threads take window
  // and concurrency units a chunk at a time and spend them without touching
  // shared state; off, every admission takes its units from the shared
  // limiters and no thread ever holds units another could have used. Off
  // suits accounts shared between processes, where a process that dies
  // holding credit would keep it counted. It does not shape the state: a
  // snapshot restores into an account with the switch either way.
  bool per_thread_credit = true;
  // The longest pause a server's hint (Retry-After, "try again after N
  // seconds") can cause; a longer hint is cut to it and counted in
  // stats().capped_hints. 24 hours: no Kimi limit counts over a longer window
  // (the daily one resets within a day in any time zone), so a longer hint is
  // a mistake, and one of year 9999 must not stop the account for centuries.
  // The account's own waits (its windows, the local daily reset) are not
  // capped. Zero: hints never lengthen a pause. Negative: refused.
  nanoseconds max_pause = std::chrono::hours(24);
  // The margin policy's allowance for a server clock that ticks in
  // milliseconds plus delivery jitter (account/policy.hpp): requests are
  // spaced W / (L - 1) + spacing_margin apart, tokens run over W +
  // spacing_margin. Under server_model::learn a 429 that the margin policy
  // should have prevented doubles it, up to max_spacing_margin
  // (account/learn.hpp). Negative, or a cap below the margin: refused.
  nanoseconds spacing_margin = std::chrono::milliseconds(2);
  // Adaptive concurrency (adaptive_concurrency.hpp): the concurrency limit
  // drops by a tenth on a concurrency 429 or an overload (once per round of
  // requests in flight) and grows back by one per round while in use; never
  // above `concurrency`, never below concurrency_floor (1 .. the limit).
  // Needs a concurrency limit (else refused: zero_count).
  bool adaptive_concurrency = false;
  std::uint64_t concurrency_floor = 1;
  // The server's x-ratelimit-remaining/reset headers as ground truth
  // (account/server_remaining.hpp): after a response that says R remain
  // until now + T, at most R more are admitted before then, less the
  // account's own requests in flight when the response is observed.
  bool trust_rate_limit_headers = false;
  nanoseconds max_spacing_margin = std::chrono::milliseconds(256);

  static constexpr basic_account_config from_tier(const tier_row& t, server_model m = server_model::unknown) noexcept {
    basic_account_config c;
    c.concurrency = t.concurrency;
    c.rpm = t.rpm;
    c.tpm = t.tpm;
    c.tpd = t.tpd;
    c.model = m;
    return c;
  }
};
using account_config = basic_account_config<usd_tag>;
using cny_account_config = basic_account_config<cny_tag>;

struct request {
  const model_info* model = nullptr;  // for the default output cap, context window and prices
  std::uint64_t prompt_tokens = 0;    // an estimate (estimate.hpp) or the tokenizer endpoint's count
  std::optional<std::uint64_t> max_tokens;
  // The explicit cache writes the request asks for (kimi-k3). Without a
  // declaration the reserved worst case assumes the largest: the whole prompt
  // written at the dearer write price. Declared, it reserves exactly those;
  // a usage that writes more is charged in full and reported as overspend.
  std::optional<cache_writes> planned_cache_writes = std::nullopt;
};


TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_ACCOUNT_CONFIG_HPP
// #include <tollgate/account/credit.hpp>  (inlined below)
// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// account/credit.hpp: per-thread credit, which lets the first 16 threads
// spend strict-window units and concurrency units without touching shared
// state.
//
// Window credit. A thread that owns a statistics shard (the first 16 to
// count) takes a strict window's units a chunk at a time: one CAS on the
// window's head admits its request and counts `chunk` more units in the same
// slot, which it then spends on its later requests in that slot with plain
// loads and stores on its own cache line. Every unit is counted in the
// window before it is spent, and spent only in the slot it was counted in,
// and only while that slot is the window's head (a `now` in a slot the head
// has left is stale, refused as without credit; one relaxed load of the
// head word), so the window's bound holds exactly as if each request had
// taken its own units, and a thread decides as it would without credit.
// A window epoch, bumped by a limit change and by a debt (usage settled
// beyond the reservation puts a window over its limit), makes each line
// give its window credit back at its owner's next take and refill through
// the window, which then decides (and waits the debt out) as without
// credit. What a credit costs: units counted but not yet spent. They are
// given back to the window, into the slot they were counted in (the head or
// an older slot still in the window; never one that has left it), when the
// owner's next request finds the slot over or its credit too small, or the
// window refuses it. A line holds units of one slot at a time, at most one
// chunk.
//
// Concurrency credit. The same for the concurrency limit: a thread takes
// 1 + chunk units from the limiter in one CAS and hands them to its later
// leases; a lease released on such a thread returns its unit to that
// thread's credit, which gives everything above one chunk back once it holds
// two. Units held as credit are held from the limiter, so leases in flight
// never exceed the limit. A limit change bumps the epoch, and each thread
// gives its credit back before taking a unit under the new limit. A thread
// that exits holding credit leaves it on its shard, for the next thread that
// claims that shard.
//
// Bound. chunk = limit / 1024 with up to 16 lines (limits below 1,024
// units get no credit and behave exactly as without it), limit / (64 x
// lines) with more (the shared account's `Lines`). Units counted but not
// spent are at any moment at most a chunk per line: other threads can be
// refused falsely by at most 16 chunks of a window (under 1.6 % of its
// limit; `Lines` chunks, under 1/64 of it for any `Lines`, in the shared
// account) and 16 x 2 chunks of the concurrency limit (under 3.2 %): a
// request is refused only where the window, counting only what was
// admitted, has at most that much room for it. After a limit change or a
// debt, a line whose thread does not take again keeps what it held (no other
// thread may write its line): window credit of the old chunk, counted in a
// slot at or before the change's, which leaves the window at the latest
// K + 1 slots (a window and a sub-window) after it; until then the bound is
// 16 chunks of the larger of the old and new limits, and a debt is not
// waited out by those lines' chunks (a chunk per line at most). Concurrency
// credit has no such end: up to 2 old chunks per line stay held until its
// thread next takes or releases a unit (or the next thread claims its shard). Leftovers go back into their
// own slot: were they left counted once another thread moved the window on,
// each line could hold a chunk in every slot of the window (K + 1 times
// the bound). A thread is never refused because of its own credit: a
// refusal gives the refused thread's window credit back (give_back) before
// the account asks the windows for a wait, so the wait is the same with
// credit as without.
//
// Concurrency. Each line is written by the thread that owns its shard only
// (relaxed loads and stores; ownership passes between threads through the
// shard claim's release/acquire, detail/shard_counters.hpp); the fields are
// atomic only so that readers (remaining(), snapshot()) may read them, which
// they do relaxed, as a snapshot. Chunks, the epochs and the head's slot
// are lone values read relaxed: a thread that sees a change late takes (or
// spends) as if its request had come before the change, as a direct
// try_acquire racing it could; a change that happens before the request is
// seen (coherence). The epochs live in this object, one per process: in the
// shared account a debt run up through one process's handle makes only
// that process's lines give back (the others: the bound above). Lines hold window slot
// numbers and times, no pointer: address-free, but owned per thread shard.
#ifndef TOLLGATE_ACCOUNT_CREDIT_HPP
#define TOLLGATE_ACCOUNT_CREDIT_HPP

// #include <tollgate/config.hpp>  (already above)
// #include <tollgate/clock.hpp>  (already above)
// #include <tollgate/concurrency.hpp>  (already above)
// #include <tollgate/detail/arith.hpp>  (already above)
// #include <tollgate/detail/atomic.hpp>  (already above)
// #include <tollgate/detail/shard_counters.hpp>  (inlined below)
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

// #include <tollgate/config.hpp>  (already above)

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
// #include <tollgate/sliding_window.hpp>  (already above)

#include <cstdint>
#include <memory>
#include <optional>

TOLLGATE_BEGIN_NAMESPACE

namespace detail {

template <class Window>
class thread_credit {
 public:
  using window_type = Window;
  enum : unsigned { rpm, tpm, tpd, kinds };  // the windows that can grant credit
  static constexpr std::uint64_t divisor = 1024;
  // What a window's limit is divided by for its chunk, with `lines` lines:
  // 1,024 up to 16 lines, 64 x lines above, so that all lines together hold
  // at most 1/64 of a limit (see the header).
  static constexpr std::uint64_t divisor_for(unsigned lines) noexcept {
    return lines > detail::thread_shards ? std::uint64_t{64} * lines : divisor;
  }

  struct credit {
    detail::atomic<std::uint64_t> slot{0};  // the window slot the units are counted in
    detail::atomic<std::uint64_t> left{0};  // units counted there and not yet spent
    detail::atomic<std::int64_t> start{0}, end{0};  // the slot's span [start, end)
  };
  struct alignas(TOLLGATE_CACHELINE_SIZE) line {
    credit c[kinds];
    // Concurrency units this thread holds from the limiter for leases to
    // come, and the limit change they were taken under.
    detail::atomic<std::uint64_t> units{0};
    detail::atomic<std::uint64_t> epoch{0};
    // The window epoch its window credit was taken under (see renew()).
    detail::atomic<std::uint64_t> window_epoch{0};
  };

  static std::uint64_t chunk_of(const Window& w, unsigned lines = detail::thread_shards) noexcept {
    return w.unit() == 0 ? 0 : w.limit() / w.unit() / divisor_for(lines);
  }

  // The lines, allocated once (at construction: limits raised later may need them).
  void allocate() {
    own_.reset(new line[detail::thread_shards]);
    lines_ = own_.get();
    count_ = detail::thread_shards;
    rescale();
  }
  // The seam over where the lines live: `count` lines at `lines`, owned by
  // the caller (the shared account's region, shared_account.hpp), in place
  // of allocate()'s. Line i is then written only by the user that owns it
  // (the caller's claim, not the shard numbers), who passes i as `shard`.
  void place(line* lines, unsigned count) noexcept {
    own_.reset();
    lines_ = count > 0 ? lines : nullptr;
    count_ = lines_ ? count : 0;
    rescale();
  }
  bool enabled() const noexcept { return lines_ != nullptr; }
  unsigned lines() const noexcept { return count_; }
  // Forgets line i's window credit: its units stay counted where they were
  // taken (the safe side). For a line whose last owner died, whose fields
  // may be half-written; only with no other writer of the line.
  void forget(unsigned i) noexcept {
    if (i >= count_) return;
    for (credit& c : lines_[i].c) {
      // relaxed: the caller owns the line. An empty span: no `now` is in it,
      // so the next take refills and rewrites every field.
      c.left.store(0, std::memory_order_relaxed);
      c.start.store(0, std::memory_order_relaxed);
      c.end.store(0, std::memory_order_relaxed);
    }
  }
  // The windows renew() gives old credit back to, fixed at construction
  // (before the lines are used: plain pointers, read by every line's owner).
  void bind(Window* const (&ws)[kinds]) noexcept {
    for (unsigned k = 0; k < kinds; ++k) windows_[k] = ws[k];
  }
  // Each window's unit, fixed at construction.
  void set_unit(unsigned kind, std::uint64_t u) noexcept { unit_[kind] = u; }

  // The chunks in force: for each window (null: none) and the concurrency
  // limit (0: none); off gives no credit at all. Bumps both epochs, so every
  // thread gives back what it took under the previous limits before it takes
  // more.
  void update(bool on, const Window* const (&ws)[kinds], std::uint64_t conc_limit) noexcept {
    for (unsigned k = 0; k < kinds; ++k) {
      const std::uint64_t units = on && ws[k] && ws[k]->unit() != 0 ? ws[k]->limit() / ws[k]->unit() : 0;
      // relaxed (both): lone values; a thread that sees the old chunk takes a chunk of the old size.
      limit_units_[k].store(units, std::memory_order_relaxed);
      chunk_[k].store(units / divisor_for(count_ > 0 ? count_ : detail::thread_shards), std::memory_order_relaxed);
    }
    conc_chunk_.store(on ? conc_limit / divisor : 0, std::memory_order_relaxed);  // relaxed: as above
    conc_epoch_.fetch_add(1, std::memory_order_relaxed);  // relaxed: as above
    bump_windows();
  }
  // Makes every line give its window credit back before it spends more (a
  // limit changed, or a debt put a window over its limit): its next take
  // then refills through the window, which decides as without credit.
  void bump_windows() noexcept {
    // relaxed: a lone value. A thread that sees the bump late spends its
    // credit as if its request had come before the change (as a direct
    // try_acquire racing it could); one that the change happens before sees it.
    window_epoch_.fetch_add(1, std::memory_order_relaxed);
  }

  // Takes n tokens of window `kind` for a request on `shard`, from credit if
  // it can, else from the window; `slot` is where they were counted.
  // Spending credit is the hot path (inline); refills and refusals are not.
  [[gnu::always_inline]] bool take_window(Window& w, unsigned kind, std::uint64_t n, nanoseconds now,
                                          std::uint64_t& slot, unsigned shard) noexcept {
    if (shard < count_) {
      line& l = lines_[shard];
      credit& c = l.c[kind];
      const std::uint64_t u = unit_[kind];
      const std::uint64_t nu = n <= u ? 1 : detail::ceil_div(n, u);
      // relaxed (all of l): this thread owns the line, see the header.
      // relaxed (window_epoch_): a lone value, see bump_windows().
      const std::uint64_t left = c.left.load(std::memory_order_relaxed);
      if (left >= nu && now.count() >= c.start.load(std::memory_order_relaxed) &&
          now.count() < c.end.load(std::memory_order_relaxed) &&
          l.window_epoch.load(std::memory_order_relaxed) == window_epoch_.load(std::memory_order_relaxed)) {
        const std::uint64_t s = c.slot.load(std::memory_order_relaxed);
        // Only while the slot is the window's head: a `now` in a slot the
        // head has left is stale, refused as without credit (head_slot()'s
        // relaxed load: see there).
        if (s == w.head_slot()) {
          c.left.store(left - nu, std::memory_order_relaxed);
          slot = s;
          return true;
        }
      }
    }
    return take_window_slow(w, kind, n, now, slot, shard);
  }

  [[gnu::noinline]] bool take_window_slow(Window& w, unsigned kind, std::uint64_t n, nanoseconds now,
                                          std::uint64_t& slot, unsigned shard) noexcept {
    window_ticket t;
    if (n == 0 || shard >= count_) {
      const bool ok = w.try_acquire(n, now, t).admitted();
      slot = t.slot;
      return ok;
    }
    renew(lines_[shard]);
    // relaxed: a lone value, changed only by set_limits (which bumps the
    // epoch after it: a chunk of the old size read here goes back at the
    // next take, as renew() gives it back).
    const std::uint64_t chunk = chunk_[kind].load(std::memory_order_relaxed);
    credit& c = lines_[shard].c[kind];
    const std::uint64_t u = w.unit();
    const std::uint64_t nu = n <= u ? 1 : detail::ceil_div(n, u);
    // relaxed (all of c): as above.
    std::uint64_t left = c.left.load(std::memory_order_relaxed);
    const bool same_slot = now.count() >= c.start.load(std::memory_order_relaxed) &&
                           now.count() < c.end.load(std::memory_order_relaxed) &&
                           c.slot.load(std::memory_order_relaxed) == w.head_slot();
    if (chunk > 0 && same_slot && left >= nu) {  // (the fast path's case, for a caller that went straight here)
      c.left.store(left - nu, std::memory_order_relaxed);
      slot = c.slot.load(std::memory_order_relaxed);
      return true;
    }
    if (left > 0) {
      // The slot is over (nothing of it can be spent any more), or what is
      // left is too little for this request: back into its slot, so a line
      // never holds more than the chunk of its last refill.
      give_credit(w, c, left);
      left = 0;
    }
    if (chunk == 0) {  // (limits below the divisor: exactly as without credit)
      const bool ok = w.try_acquire(n, now, t).admitted();
      slot = t.slot;
      return ok;
    }
    // From the window: this request and a chunk more, in one CAS.
    window_ticket big;
    if (w.try_acquire(detail::sat_mul(nu + chunk, u), now, big).admitted()) {
      const std::uint64_t width = static_cast<std::uint64_t>(w.slot_width().count());
      const std::int64_t start = detail::sat_offset(w.origin().count(), detail::sat_mul(big.slot, width));
      c.slot.store(big.slot, std::memory_order_relaxed);
      c.start.store(start, std::memory_order_relaxed);
      c.end.store(detail::sat_offset(start, width), std::memory_order_relaxed);
      c.left.store(big.units > nu ? big.units - nu : 0, std::memory_order_relaxed);
      slot = big.slot;
      return true;
    }
    // No room for a chunk: this request alone (what this thread held is
    // back already, so its own credit never refuses it).
    const bool ok = w.try_acquire(n, now, t).admitted();
    slot = t.slot;
    return ok;
  }

  // After a refusal on `shard`: gives the thread's window credit back (as its
  // next attempt would) and returns the concurrency units it holds under the
  // current limit (a permit it can take).
  std::uint64_t give_back(Window* const (&ws)[kinds], unsigned shard) noexcept {
    if (shard >= count_) return 0;
    line& l = lines_[shard];
    for (unsigned k = 0; k < kinds; ++k) {
      // relaxed: this thread owns the line, see the header.
      const std::uint64_t left = l.c[k].left.load(std::memory_order_relaxed);
      if (ws[k] && left > 0) give_credit(*ws[k], l.c[k], left);
    }
    // relaxed: as in take_unit.
    if (l.epoch.load(std::memory_order_relaxed) == conc_epoch_.load(std::memory_order_relaxed))
      return l.units.load(std::memory_order_relaxed);
    return 0;
  }

  // A concurrency unit for a lease on `shard`. The fast paths (units from
  // this thread's credit, or back to it) are split from the slow ones so
  // that a caller can keep the slow call out of line with no more arguments
  // than it needs (the account does).
  bool take_unit(concurrency_limiter& lim, unsigned shard) noexcept {
    return take_unit_fast(shard) || take_unit_slow(lim, shard);
  }
  [[gnu::always_inline]] bool take_unit_fast(unsigned shard) noexcept {
    if (shard < count_) {
      line& c = lines_[shard];
      // relaxed: as in take_unit_slow.
      const std::uint64_t left = c.units.load(std::memory_order_relaxed);
      if (left > 0 && c.epoch.load(std::memory_order_relaxed) == conc_epoch_.load(std::memory_order_relaxed)) {
        c.units.store(left - 1, std::memory_order_relaxed);
        return true;
      }
    }
    return false;
  }
  bool take_unit_slow(concurrency_limiter& lim, unsigned shard) noexcept {
    if (shard >= count_) return take_direct(lim, 1);
    line& c = lines_[shard];
    // relaxed (c.*): this thread owns the line. relaxed (epoch, chunk): lone
    // values, see the header.
    std::uint64_t left = c.units.load(std::memory_order_relaxed);
    const std::uint64_t epoch = conc_epoch_.load(std::memory_order_relaxed);
    if (c.epoch.load(std::memory_order_relaxed) != epoch) {
      c.units.store(0, std::memory_order_relaxed);
      if (left > 0) lim.release_detached(left);
      left = 0;
      c.epoch.store(epoch, std::memory_order_relaxed);
    }
    if (left > 0) {
      c.units.store(left - 1, std::memory_order_relaxed);
      return true;
    }
    const std::uint64_t chunk = conc_chunk_.load(std::memory_order_relaxed);
    if (chunk > 0 && take_direct(lim, 1 + chunk)) {
      c.units.store(chunk, std::memory_order_relaxed);
      return true;
    }
    return take_direct(lim, 1);
  }
  // A lease's unit back, on the releasing thread.
  void give_unit(concurrency_limiter& lim) noexcept {
    unsigned shard = detail::thread_shards;
    if (!give_unit_fast(shard)) give_unit_slow(lim, shard);
  }
  // True when the unit went back to this thread's credit; else `shard` is
  // the thread's, for give_unit_slow.
  [[gnu::always_inline]] bool give_unit_fast(unsigned& shard) noexcept {
    shard = lines_ ? detail::this_thread_shard() : detail::thread_shards;
    if (shard < count_) {
      line& c = lines_[shard];
      // relaxed: as in take_unit_slow.
      const std::uint64_t left = c.units.load(std::memory_order_relaxed) + 1;
      if (left <= 2 * conc_chunk_.load(std::memory_order_relaxed) &&
          c.epoch.load(std::memory_order_relaxed) == conc_epoch_.load(std::memory_order_relaxed)) {
        c.units.store(left, std::memory_order_relaxed);
        return true;
      }
    }
    return false;
  }
  void give_unit_slow(concurrency_limiter& lim, unsigned shard) noexcept {
    if (shard >= count_) {
      lim.release_detached(1);
      return;
    }
    line& c = lines_[shard];
    // relaxed: as in take_unit.
    const std::uint64_t chunk = conc_chunk_.load(std::memory_order_relaxed);
    const std::uint64_t epoch = conc_epoch_.load(std::memory_order_relaxed);
    const std::uint64_t left = c.units.load(std::memory_order_relaxed) + 1;
    const bool current = c.epoch.load(std::memory_order_relaxed) == epoch;
    if (!current || left > 2 * chunk) {
      const std::uint64_t keep = current ? chunk : 0;
      c.units.store(keep, std::memory_order_relaxed);
      lim.release_detached(left - keep);
    } else {
      c.units.store(left, std::memory_order_relaxed);
    }
  }

  // Concurrency units held as credit by every thread (a snapshot).
  std::uint64_t units_held() const noexcept {
    if (!lines_) return 0;
    std::uint64_t sum = 0;
    // relaxed: a snapshot of other threads' lines.
    for (unsigned i = 0; i < count_; ++i) sum += lines_[i].units.load(std::memory_order_relaxed);
    return sum;
  }
  // Units of window `kind` held as credit in slot j (a snapshot).
  std::uint64_t in_slot(unsigned kind, std::uint64_t j) const noexcept {
    if (!lines_) return 0;
    std::uint64_t sum = 0;
    for (unsigned i = 0; i < count_; ++i) {
      const credit& c = lines_[i].c[kind];
      // relaxed: as in held_at.
      if (c.slot.load(std::memory_order_relaxed) == j) sum += c.left.load(std::memory_order_relaxed);
    }
    return sum;
  }
  // Units of window `kind` held as credit in `now`'s slot, by every thread
  // (a snapshot: owners change them as it is read).
  std::uint64_t held_at(unsigned kind, nanoseconds now) const noexcept {
    if (!lines_) return 0;
    std::uint64_t sum = 0;
    for (unsigned i = 0; i < count_; ++i) {
      const credit& c = lines_[i].c[kind];
      // relaxed: a statistic-grade read of another thread's line.
      if (now.count() >= c.start.load(std::memory_order_relaxed) && now.count() < c.end.load(std::memory_order_relaxed))
        sum += c.left.load(std::memory_order_relaxed);
    }
    return sum;
  }
  // Forgets the window credit (a restore replaced the counts it was taken from).
  void clear_windows() noexcept {
    if (!lines_) return;
    for (unsigned i = 0; i < count_; ++i)
      for (credit& c : lines_[i].c) c.left.store(0, std::memory_order_relaxed);  // relaxed: not shared yet
  }

 private:
  static bool take_direct(concurrency_limiter& lim, std::uint64_t k) noexcept {
    permit p = lim.try_acquire(k);
    if (!p) return false;
    p.detach();  // owed back through release_detached: give_unit, take_unit or the reaper
    return true;
  }
  // Line l's window credit taken under an older window epoch back into its
  // slots (each into the slot it was counted in, while that is in its window).
  void renew(line& l) noexcept {
    // relaxed (l): this thread owns the line; (window_epoch_): see bump_windows().
    const std::uint64_t e = window_epoch_.load(std::memory_order_relaxed);
    if (l.window_epoch.load(std::memory_order_relaxed) == e) return;
    for (unsigned k = 0; k < kinds; ++k) {
      const std::uint64_t left = l.c[k].left.load(std::memory_order_relaxed);
      if (left == 0) continue;
      if (windows_[k]) give_credit(*windows_[k], l.c[k], left);
      else l.c[k].left.store(0, std::memory_order_relaxed);  // (no window of that kind holds it)
    }
    l.window_epoch.store(e, std::memory_order_relaxed);
  }
  static void give_credit(Window& w, credit& c, std::uint64_t left) noexcept {
    // relaxed: as in take_window. Zeroed before the refund, whose release
    // CAS (on the head, or on the slot's ring word once the head has moved
    // on; window/correct.hpp) then carries it to any snapshot() that sees
    // the refund: the export acquires the word it reads before it reads the
    // lines (window/snapshot.hpp), so a snapshot never leaves these units
    // out twice.
    c.left.store(0, std::memory_order_relaxed);
    const std::uint64_t tokens = detail::sat_mul(left, w.unit());
    window_ticket back{c.slot.load(std::memory_order_relaxed), tokens, left};
    // Into the slot the units were counted in, head or not, while it is in
    // the window: exactly those units, never into a slot that has left (the
    // ticketed refund checks both). Were they left counted once the head
    // moved on, each line could hold a chunk in every slot of the window.
    (void)w.refund(back, tokens);
  }

  // The chunks for the number of lines now in place (update() may run
  // before place(); both run before the lines are used).
  void rescale() noexcept {
    const std::uint64_t d = divisor_for(count_ > 0 ? count_ : detail::thread_shards);
    for (unsigned k = 0; k < kinds; ++k)
      // relaxed: as in update().
      chunk_[k].store(limit_units_[k].load(std::memory_order_relaxed) / d, std::memory_order_relaxed);
  }

  std::unique_ptr<line[]> own_;  // allocate()'s lines
  line* lines_ = nullptr;         // one per owned shard (or per claimed line, place()), when some limit grants credit
  unsigned count_ = 0;            // lines at lines_
  detail::atomic<std::uint64_t> chunk_[kinds] = {};
  detail::atomic<std::uint64_t> limit_units_[kinds] = {};  // each window's limit in units, 0: no credit
  std::uint64_t unit_[kinds] = {1, 1, 1};
  detail::atomic<std::uint64_t> conc_chunk_{0}, conc_epoch_{0};
  detail::atomic<std::uint64_t> window_epoch_{0};  // bumped by update() and bump_windows()
  Window* windows_[kinds] = {};                    // bind()'s windows, for renew()
};

}  // namespace detail

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_ACCOUNT_CREDIT_HPP
// #include <tollgate/adaptive_concurrency.hpp>  (inlined below)
// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// adaptive_concurrency.hpp: a concurrency limit that follows the server's
// real one when that is lower than the configured limit (a plan's cap, an
// overloaded backend, other clients on the same key).
//
// The rule (AIMD; the pure functions below, applied to three words):
//   decrease: on a signal (shrinks_concurrency: a concurrency 429, Kimi
//     Code's 403 concurrent-request limit, an overload, a 503 or 529) the
//     limit drops to max(floor, floor(limit * 9 / 10)) = d,
//     once per round: a later signal drops it again only once
//     max(in flight at the drop, d) requests have been admitted since the
//     drop (admissions, which the account counts anyway, rather than
//     releases, which it would have to count on every settle). So the 429s
//     of one burst cost one drop whenever fewer than d admissions come
//     between its first and its last answer fed back, in whatever order its
//     leases were settled (settled first, none is in flight at the drop);
//     a signal with no admission since the last drop never drops again;
//   increase: a success (a lease settled with its usage) while at least
//     half the limit is in flight adds 1 / limit: one more per `limit` such
//     successes, about one per round; never above the configured limit.
//     Back into a limit that was dropped from, it waits `patience` rounds
//     (1, then 2 after repeated drops from the same limit; reset once
//     the limit holds there), so a cap that stays put is probed every few
//     rounds rather than every round;
//   latency never changes it (LLM latency grows with output length; there is
//     no latency input).
//
// Bound (tests/test_learn.cpp, against a simulated server whose cap H is
// hidden and changes mid-run, with a client that keeps the limit in use):
// within 20 rounds of a change the limit stays within 10 % of H for H >= 10
// (it saws between about 9/10 (H + 1) and H + 1), and each drop follows one
// round's excess: the 429s are counted (adaptive_view, and the caller's own
// count); once settled, about one probe above H per 0.1 H + 2 rounds.
// The limit never leaves [floor, configured].
//
// Concurrency. Lock-free: each step is one CAS loop on one word (the limit
// and its growth credit packed in 64 bits) plus relaxed counters; every word
// is a lone value (relaxed: no other data is published through it). The
// account applies the limit to its concurrency_limiter after each change and
// re-reads it, so racing changes end with the limiter at the latest value.
// The words are plain integers: a shared region or a server-side script can
// hold them and apply the same functions; today only the in-process
// account does, and a snapshot does not keep them (a restored account starts
// again at its configured limit).
#ifndef TOLLGATE_ADAPTIVE_CONCURRENCY_HPP
#define TOLLGATE_ADAPTIVE_CONCURRENCY_HPP

// #include <tollgate/config.hpp>  (already above)
// #include <tollgate/detail/arith.hpp>  (already above)
// #include <tollgate/detail/atomic.hpp>  (already above)
// #include <tollgate/error.hpp>  (already above)
// #include <tollgate/http.hpp>  (already above)

#include <cstdint>
#include <optional>

TOLLGATE_BEGIN_NAMESPACE

namespace account_policy {

// Whether an answer says the server holds fewer requests in flight than
// the account sends (the classifier's answers as they are).
constexpr bool shrinks_concurrency(const error_info& e) noexcept {
  return e.kind == error_kind::concurrency || e.kind == error_kind::plan_concurrency ||
         e.kind == error_kind::overloaded || (e.kind == error_kind::server_error && (e.status == 503 || e.status == 529));
}

// The limit after a drop.
constexpr std::uint64_t aimd_decreased(std::uint64_t limit, std::uint64_t floor) noexcept {
  if (limit <= floor) return floor;  // at the floor it stays
  const std::uint64_t down = limit / 10 * 9 + limit % 10 * 9 / 10;  // floor(limit * 9 / 10) < limit, no overflow
  return down < floor ? floor : down;
}

// The limit and growth credit after a success (credit counts successes
// towards the next +1).
struct aimd_state {
  std::uint64_t limit = 0;
  std::uint64_t credit = 0;
};
// `patience`: rounds to wait before growing into the limit last dropped
// from (`failed`; 0: none).
constexpr aimd_state aimd_grown(aimd_state s, std::uint64_t max, std::uint64_t failed = 0,
                                std::uint64_t patience = 1) noexcept {
  if (s.limit >= max) return aimd_state{max, 0};
  const std::uint64_t need = s.limit + 1 == failed && patience > 1 ? detail::sat_mul(s.limit, patience) : s.limit;
  if (s.credit + 1 >= need) return aimd_state{s.limit + 1, 0};
  return aimd_state{s.limit, s.credit + 1};
}
// The patience after a drop from `limit`, given the last drop's limit and
// patience: longer when the same limit fails again.
constexpr std::uint64_t aimd_patience(std::uint64_t limit, std::uint64_t failed, std::uint64_t patience) noexcept {
  if (limit != failed) return 1;
  return patience >= 2 ? 2 : patience + 1;
}
// Whether a success at `in_flight` (counting itself) grows the limit.
constexpr bool aimd_grows(std::uint64_t in_flight, std::uint64_t limit) noexcept {
  return in_flight >= limit / 2 + limit % 2;
}

}  // namespace account_policy

// What the adaptive limit has done (account::adaptive()).
struct adaptive_view {
  std::uint64_t limit = 0;     // in force
  std::uint64_t drops = 0;     // multiplicative decreases
  std::uint64_t signals = 0;   // answers that asked for one (a burst's many count once as a drop)
  std::uint64_t rises = 0;     // additive increases
};

namespace detail {

class adaptive_concurrency {
 public:
  static constexpr std::uint64_t max_limit = 0xFFFFFFFFULL;  // the limit fits 32 bits (concurrency.hpp's too)

  bool on() const noexcept { return on_; }

  // `floor` must be 1 .. max (errc::zero_count, errc::too_large).
  errc init(std::uint64_t max, std::uint64_t floor) noexcept {
    if (floor == 0 || max == 0) return errc::zero_count;
    if (max > max_limit || floor > max) return errc::too_large;
    on_ = true;
    floor_ = floor;
    max_.store(max, std::memory_order_relaxed);   // relaxed: construction precedes sharing
    word_.store(pack(max, 0), std::memory_order_relaxed);
    return errc::ok;
  }

  std::uint64_t limit() const noexcept { return word_.load(std::memory_order_relaxed) >> 32; }  // relaxed: a lone value

  // A signal with `in_flight` leases out, after `admitted` admissions in
  // all: the new limit if it dropped.
  std::optional<std::uint64_t> on_signal(std::uint64_t in_flight, std::uint64_t admitted) noexcept {
    signals_.fetch_add(1, std::memory_order_relaxed);  // relaxed: a counter
    // relaxed: a lone value; the CAS makes one signal per round the dropper.
    std::uint64_t end = round_end_.load(std::memory_order_relaxed);
    if (admitted < end) return std::nullopt;
    // The round: the larger of the leases out and the limit after the drop.
    // The answers of a burst are settled before they are fed back, so the
    // leases out alone can be none while the burst's answers keep coming.
    const std::uint64_t after = account_policy::aimd_decreased(limit(), floor_);
    if (!round_end_.compare_exchange_strong(end, detail::sat_add(admitted, in_flight > after ? in_flight : after),
                                            std::memory_order_relaxed, std::memory_order_relaxed))
      return std::nullopt;
    std::uint64_t w = word_.load(std::memory_order_relaxed);  // relaxed: a lone value
    for (;;) {
      const std::uint64_t l = w >> 32, d = account_policy::aimd_decreased(l, floor_);
      if (d == l) return std::nullopt;
      // relaxed: a lone value (the limiter gets it from the caller).
      if (word_.compare_exchange_weak(w, pack(d, 0), std::memory_order_relaxed, std::memory_order_relaxed)) {
        drops_.fetch_add(1, std::memory_order_relaxed);  // relaxed: a counter
        // relaxed: a lone value; one dropper per round writes it.
        const std::uint64_t f = failed_.load(std::memory_order_relaxed);
        failed_.store(pack(l, account_policy::aimd_patience(l, f >> 32, f & 0xFFFFFFFFULL)), std::memory_order_relaxed);
        return d;
      }
    }
  }

  // A success with `in_flight` leases out (itself included): the new limit
  // if it grew.
  std::optional<std::uint64_t> on_success(std::uint64_t in_flight) noexcept {
    const std::uint64_t max = max_.load(std::memory_order_relaxed);  // relaxed: a lone value
    std::uint64_t w = word_.load(std::memory_order_relaxed);         // relaxed: a lone value
    const std::uint64_t f = failed_.load(std::memory_order_relaxed);  // relaxed: a lone value
    for (;;) {
      const account_policy::aimd_state s{w >> 32, w & 0xFFFFFFFFULL};
      if (!account_policy::aimd_grows(in_flight, s.limit) || s.limit >= max) return std::nullopt;
      // At the limit last dropped from and holding: the cap moved, forget it.
      if (s.limit == f >> 32) failed_.store(0, std::memory_order_relaxed);  // relaxed: a lone value
      const account_policy::aimd_state g = account_policy::aimd_grown(s, max, f >> 32, f & 0xFFFFFFFFULL);
      // relaxed: a lone value.
      if (word_.compare_exchange_weak(w, pack(g.limit, g.credit), std::memory_order_relaxed, std::memory_order_relaxed)) {
        if (g.limit == s.limit) return std::nullopt;
        rises_.fetch_add(1, std::memory_order_relaxed);  // relaxed: a counter
        return g.limit;
      }
    }
  }

  // A new configured limit (set_limits): the limit in force is cut to it.
  errc set_max(std::uint64_t max) noexcept {
    if (max == 0) return errc::zero_count;
    if (max > max_limit) return errc::too_large;
    max_.store(max, std::memory_order_relaxed);  // relaxed: a lone value
    std::uint64_t w = word_.load(std::memory_order_relaxed);
    for (;;) {
      const std::uint64_t l = w >> 32;
      const std::uint64_t f = floor_ < max ? floor_ : max;
      const std::uint64_t n = l > max ? max : l < f ? f : l;
      // relaxed: a lone value.
      if (n == l || word_.compare_exchange_weak(w, pack(n, 0), std::memory_order_relaxed, std::memory_order_relaxed)) break;
    }
    return errc::ok;
  }

  adaptive_view view() const noexcept {
    adaptive_view v;
    v.limit = limit();
    // relaxed: counters.
    v.drops = drops_.load(std::memory_order_relaxed);
    v.signals = signals_.load(std::memory_order_relaxed);
    v.rises = rises_.load(std::memory_order_relaxed);
    return v;
  }

 private:
  static constexpr std::uint64_t pack(std::uint64_t limit, std::uint64_t credit) noexcept {
    return limit << 32 | (credit & 0xFFFFFFFFULL);
  }

  bool on_ = false;
  std::uint64_t floor_ = 1;
  detail::atomic<std::uint64_t> max_{0};
  detail::atomic<std::uint64_t> word_{0};       // limit << 32 | growth credit
  detail::atomic<std::uint64_t> round_end_{0};  // the next drop waits until the admissions reach this
  detail::atomic<std::uint64_t> failed_{0};     // the limit last dropped from << 32 | patience (rounds)
  detail::atomic<std::uint64_t> drops_{0}, signals_{0}, rises_{0};
};

}  // namespace detail

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_ADAPTIVE_CONCURRENCY_HPP
// #include <tollgate/account/learn.hpp>  (inlined below)
// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// account/learn.hpp: server_model::learn: start on the permissive policy,
// move to the safe one when the server says so.
//
// The rule. The request limit and the token limit each start on the most
// permissive policy that is safe against most of the five server models: the
// strict window at L (safe against fixed window, sliding log, token bucket:
// docs/server-models.md) where, saturated, it admits more than the margin
// policy (starts_strict: small limits, RPM 3 say, or a token margin m above
// about L / 16), else the margin policy itself (safe against all five; nothing
// left to learn but the margin). The first rate 429 that names the dimension
// (the classifier in http.hpp: Kimi's "max RPM", "TPM rate limit", OpenAI's
// type "requests" / "tokens") switches it to the margin policy of `unknown`
// (spaced with margin, safe against all five). A rate 429 that names no
// dimension ("Organization Rate limit exceeded") switches every dimension
// still on the strict window. Concurrency, daily (TPD) and overload answers
// teach nothing here: they pause as under every model (pause.hpp), and the
// daily limit keeps its strict 24 h window.
//
// The switch. For one window after it (W of that dimension) a request must
// pass both the strict window and the spaced bucket; from then on, the
// bucket alone. While on the strict window every admission is also charged
// to a shadow: the time the spaced bucket would next admit had it seen the
// same traffic, capped at now + 2L intervals (what the strict window can
// admit in two windows). The bucket starts from the shadow, so the first
// spaced request is spaced from the strict traffic that came before it
// (the window counter's previous period and the GCRA server's arrival time
// both see that traffic). 429s refund nothing here: the server may count
// them (Kimi does not bill them; a counter counts them anyway).
//
// The margin. account_config::spacing_margin (2 ms) is what the margin
// policy adds per request, and to the token window, for a millisecond
// server clock and delivery jitter. A 429 naming a dimension that switched
// earlier, once the pause its switch caused is over (so the request it
// answers was admitted under the margin policy), shows more jitter than
// assumed: the margin doubles, at most to max_spacing_margin (256 ms), for
// both dimensions at once (set_rate keeps what each bucket has counted),
// and from the first widening on each token request is also spaced by the
// margin from the next (it charges ceil(margin / interval) tokens more):
// without that, a small request spaced n (W + margin) / (L - m) before the
// next can reach a GCRA server closer than n W / L, whatever the margin. A
// 429 during that pause widens nothing (it may answer a request admitted
// before the switch).
//
// Bound (tests/test_learn.cpp checks it against the five server models of
// tests/server_models.hpp, with and without 2 ms of delivery jitter, with
// the windows at W + J as policy.hpp asks under jitter J): a caller that
// feeds each answer back (on_response) before its next admission gets at
// most one 429 per rate dimension per account lifetime, and none from a
// fixed-window, sliding-log or token-bucket server; the one 429 comes from
// the sliding-window counter or the GCRA server. The exception is the one
// where the margin policy itself is not safe (tokens against a GCRA server
// with jitter): there learn gets no more 429s than `unknown` plus the one of
// its switch (each later one widens the margin, which `unknown` never does).
// Requests admitted before the first 429 was fed back (in flight, or racing
// on_response) may get 429s too: at most one per such request. After the
// switch's window, throughput is exactly the margin policy's. The caller
// resends every 429'd request; the account loses none.
//
// Lifetime and restarts. The learned state is per dimension when it
// switched, its guard, its shadow and what its spaced bucket owes, and the
// margin: plain integers in nanoseconds. The snapshot (format 3,
// snapshot.hpp) carries them, aged by the wall-clock time between snapshot
// and restore like the window counts, so "account lifetime" above spans
// every account restored from its snapshots in turn: a restore admits
// nothing the account would not have admitted without it. A snapshot
// taken while admissions or answers race it keeps each word on one side of
// the race (the in-flight case of the bound). A format 2 snapshot (earlier
// versions) carries none of them: restored from one, the account starts
// learning again (the bound then counts from the restore, and a restore
// less than two windows after heavy traffic may cost one more 429 per
// dimension). The decisions are the pure functions below (phase_at,
// learn_from, widened_margin); a shared-memory or Redis backend that keeps
// these words beside its state can apply them; only the in-process one does.
//
// Concurrency. Every operation is lock-free (a widening or set_limits sets
// the buckets' rates: token_bucket's writers take no lock). The switch word is written
// once (release, after the bucket is charged from the shadow) and read with
// acquire by admissions, so one that sees the switch sees the bucket's
// state; the shadow and the margin are lone values (relaxed).
#ifndef TOLLGATE_ACCOUNT_LEARN_HPP
#define TOLLGATE_ACCOUNT_LEARN_HPP

// #include <tollgate/config.hpp>  (already above)
// #include <tollgate/account/config.hpp>  (already above)
// #include <tollgate/account/learn_rules.hpp>  (inlined below)
// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// account/learn_rules.hpp: server_model::learn's decisions as pure
// functions of plain values (the phase a dimension is in at a time, what an
// answer teaches, how far the margin widens, whether a limit starts on the
// strict window), so that any state backend (a process's account, a shared
// region, a server-side script) can apply the same rules. The rule, its
// bound and its state are in account/learn.hpp.
#ifndef TOLLGATE_ACCOUNT_LEARN_RULES_HPP
#define TOLLGATE_ACCOUNT_LEARN_RULES_HPP

// #include <tollgate/config.hpp>  (already above)
// #include <tollgate/account/config.hpp>  (already above)
// #include <tollgate/account/policy.hpp>  (inlined below)
// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// account/policy.hpp: the account's decisions that need no state, as
// functions from plain values to plain values: which limiter each dimension
// runs under a server model and with which margin, the largest limits a
// policy can run, how many tokens a request reserves, which dimensions
// refuse a request outright, and how the dimensions' answers compose into
// one refusal and its wait.
//
// Contract. Every function here is pure (constexpr where the types allow),
// defined for every input (saturating, never overflowing) and tested alone
// (tests/test_account_parts.cpp). The account (account.hpp) applies them to
// limiters in its own memory; another state backend (shared memory, a
// server-side script) applies the same functions to its own state, so what a
// backend must share with the account is the state's meaning, these
// constants and the test vectors, not its code.
//
// Server model. Kimi does not document how it counts. `server_model` says
// which model to stay inside; each dimension then uses the policy the
// compliance tests found safe against it (docs/server-models.md, "The compliance
// tables"):
//   fixed_window, sliding_log, token_bucket -> strict sliding window at L
//   window_counter, gcra, unknown (default) -> one request at a time, each
//       spaced by its own size, at L - m per window (m = 1 for requests,
//       plus spacing_margin, 2 ms by default, between requests; m =
//       max_request_tokens for tokens, over the window plus spacing_margin)
//   learn -> the strict window until the first 429 that names the
//       dimension, then the margin policy (account/learn.hpp)
// `unknown` is safe against all five models (the margin costs m per window)
// when the server sees requests at the times they were admitted, or up to
// 1 ms later. Delivery jitter J breaks every policy against some model: a
// request sent just before a window boundary and delivered after it counts
// in the next window. Set request_window and token_window to W + J (the
// server's window plus the largest delay between admission and the server's
// clock) to keep the strict policy safe against fixed window, sliding log and
// token bucket, and the margin policy against all but a GCRA token limit (a
// 1-token request W / (L - m) before the next may arrive closer than W / L).
// The daily limit is a strict rolling 24 h window under every model (safe
// whatever time zone the server's day uses, and against fixed-window, log and
// bucket counting; spacing a day's tokens over the day would cost hours), or a
// per-day quota with `calendar_day`.
#ifndef TOLLGATE_ACCOUNT_POLICY_HPP
#define TOLLGATE_ACCOUNT_POLICY_HPP

// #include <tollgate/config.hpp>  (already above)
// #include <tollgate/account/config.hpp>  (already above)
// #include <tollgate/clock.hpp>  (already above)
// #include <tollgate/cost.hpp>  (already above)
// #include <tollgate/decision.hpp>  (already above)
// #include <tollgate/detail/arith.hpp>  (already above)
// #include <tollgate/error.hpp>  (already above)
// #include <tollgate/models.hpp>  (already above)
// #include <tollgate/money.hpp>  (already above)
// #include <tollgate/rate.hpp>  (already above)
// #include <tollgate/token_bucket.hpp>  (already above)

#include <chrono>
#include <cstdint>
#include <limits>
#include <optional>

TOLLGATE_BEGIN_NAMESPACE

namespace account_policy {

// The limiter a dimension runs.
enum class limiter : unsigned char {
  none,           // not enforced (the limit is unknown or unlimited)
  strict_window,  // sliding_window at L
  spaced,         // token_bucket of burst 1 at L - m, spaced by each request's size
  calendar_day,   // calendar_quota: per day at a UTC offset
};

// Whether a server model lets a dimension run the strict window (learn:
// until it learns otherwise).
constexpr bool strict_for(server_model m) noexcept {
  return m == server_model::fixed_window || m == server_model::sliding_log || m == server_model::token_bucket ||
         m == server_model::learn;
}
// Whether a dimension may run the margin policy under the model (now, or
// after learning): its limits must then be ones that policy can run.
constexpr bool spaced_possible(server_model m) noexcept {
  return !strict_for(m) || m == server_model::learn;
}

template <class Currency>
constexpr limiter request_limiter(const basic_account_config<Currency>& c) noexcept {
  return !c.rpm.is_finite() ? limiter::none : strict_for(c.model) ? limiter::strict_window : limiter::spaced;
}
template <class Currency>
constexpr limiter token_limiter(const basic_account_config<Currency>& c) noexcept {
  return !c.tpm.is_finite() ? limiter::none : strict_for(c.model) ? limiter::strict_window : limiter::spaced;
}
// A strict rolling 24 h window whatever the server model, or a calendar day.
template <class Currency>
constexpr limiter day_limiter(const basic_account_config<Currency>& c) noexcept {
  return !c.tpd.is_finite() ? limiter::none : c.calendar_day ? limiter::calendar_day : limiter::strict_window;
}

// The default spacing margin (account_config::spacing_margin).
inline constexpr nanoseconds default_spacing_margin = std::chrono::milliseconds(2);

// The token margin policy spaces L - m tokens over W + margin (2 ms by
// default): a sliding-window counter that reads its clock in whole
// milliseconds sees up to 1 ms less of the current period than has passed,
// which at exactly (L - m) per W let a saturated client's estimate reach
// L + 0.3 (L = 20,000 per minute, m = 2,000). The 2 ms cover that tick and
// 1 ms of delivery jitter. A window the margin would overflow keeps W; a
// negative margin counts as zero.
constexpr nanoseconds margin_window(nanoseconds w, nanoseconds margin = default_spacing_margin) noexcept {
  const std::int64_t g = margin.count() > 0 ? margin.count() : 0;
  return w.count() > std::numeric_limits<std::int64_t>::max() - g ? w : w + nanoseconds(g);
}

// The spaced request policy: one request of margin per window (a limit of 1
// leaves none to spare), and `margin` (2 ms by default) more between
// requests: at exactly L - 1 evenly spaced, a sliding-window counter's
// estimate sits exactly on L, and a server clock that ticks in milliseconds
// (or 1 ms of jitter) tips it over. `l` must not exceed
// largest_request_limit for the margin (so the window cannot overflow); a
// window that would overflow saturates.
constexpr rate spaced_request_rate(std::uint64_t l, nanoseconds w,
                                   nanoseconds margin = default_spacing_margin) noexcept {
  const std::uint64_t n = l > 1 ? l - 1 : 1;
  const std::uint64_t g = margin.count() > 0 ? static_cast<std::uint64_t>(margin.count()) : 0;
  const std::int64_t span = detail::sat_offset(w.count(), detail::sat_mul(g, n));
  return rate(n, nanoseconds(span));
}
// The spaced token policy: L - m tokens over margin_window(W, margin). The
// margin must leave room: 0 < m < l, else nullopt (errc::too_large).
constexpr std::optional<rate> spaced_token_rate(std::uint64_t l, std::uint64_t m, nanoseconds w,
                                                nanoseconds margin = default_spacing_margin) noexcept {
  if (m == 0 || m >= l) return std::nullopt;
  return rate(l - m, margin_window(w, margin));
}

// The largest token limit (per token_window) a configuration accepts.
// Under a margin policy (window_counter, gcra, unknown) tokens run through
// a bucket spaced at (L - m) per W whose emission interval must be held
// within 0.1 % (token_bucket.hpp): every L - m up to 14,014 per us of W
// qualifies (about one token per 71.3 ns: 840,840,000 + m per minute, so
// 840,905,536 with the default m), and a larger limit is refused
// (errc::rate_too_fine) even where the bucket could run it exactly, so that
// the accepted limits have no holes. The strict window takes any limit.
constexpr std::uint64_t largest_token_limit(server_model model, nanoseconds token_window,
                                            std::uint64_t max_request_tokens) noexcept {
  if (!spaced_possible(model) || token_window.count() <= 0) return std::numeric_limits<std::uint64_t>::max();
  const std::uint64_t w = static_cast<std::uint64_t>(token_window.count());
  return detail::sat_add(detail::mul_div_floor(w, detail::gcra_limits::max_scale * 1001, 1000000), max_request_tokens);
}
// The largest request limit: under a margin policy the spaced interval adds
// the margin (the largest it can grow to, under learn) per request to the
// window, which must fit in 63 bits of nanoseconds (with 2 ms, about
// 4.6 * 10^12 requests per window).
constexpr std::uint64_t largest_request_limit(server_model model, nanoseconds request_window,
                                              nanoseconds margin = default_spacing_margin) noexcept {
  if (!spaced_possible(model) || request_window.count() <= 0 || margin.count() <= 0)
    return std::numeric_limits<std::uint64_t>::max();
  const std::uint64_t room = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max() - request_window.count());
  return room / static_cast<std::uint64_t>(margin.count());
}
// The margin a configuration's spaced requests may come to use.
template <class Currency>
constexpr nanoseconds widest_margin(const basic_account_config<Currency>& c) noexcept {
  return c.model == server_model::learn ? c.max_spacing_margin : c.spacing_margin;
}

// The limits a margin policy can run: too_large for a request limit,
// rate_too_fine for a token limit, with the value refused and the largest
// accepted in `v`.
template <class Currency>
constexpr errc check_limits(const basic_account_config<Currency>& c, const limit& rpm, const limit& tpm,
                            error_values& v) noexcept {
  const std::uint64_t rl = largest_request_limit(c.model, c.request_window, widest_margin(c));
  const std::uint64_t tl = largest_token_limit(c.model, c.token_window, c.max_request_tokens);
  if (auto x = rpm.value(); x && *x > rl) {
    v = error_values{*x, rl};
    return errc::too_large;
  }
  if (auto x = tpm.value(); x && *x > tl) {
    v = error_values{*x, tl};
    return errc::rate_too_fine;
  }
  return errc::ok;
}

// The constants of a configuration that the stateless part of an
// admission reads (fixed at construction: set_limits changes none).
template <class Currency>
struct admission_rules {
  bool spaced_tokens = false;           // the token limit runs the spaced policy
  std::uint64_t max_request_tokens = 0;  // m
  bool budget = false;                  // the account has a budget
  money<Currency> budget_limit;
  static constexpr admission_rules of(const basic_account_config<Currency>& c) noexcept {
    admission_rules x;
    // Under learn the tokens may move to the spaced policy: the same
    // requests are refused from the start.
    x.spaced_tokens = token_limiter(c) == limiter::spaced || (c.model == server_model::learn && c.tpm.is_finite());
    x.max_request_tokens = c.max_request_tokens;
    x.budget = c.budget.has_value();
    if (c.budget) x.budget_limit = *c.budget;
    return x;
  }
};

// The stateless part of an admission: the tokens a request reserves
// (prompt + output, saturated; the output is max_tokens, else the model's
// default output cap, else the context window minus the prompt, zero if the
// prompt fills it: what Kimi counts at admission), the money it reserves (its worst-case
// cost: cost.hpp, with the cache writes it declares, else the largest it can
// make) and the dimensions that refuse it whatever the state (its decision
// is then `never`, reason::exceeds_capacity):
//   request_size: nothing bounds the output (then nothing else is checked);
//     above max_request_tokens under the spaced token policy; a budget and
//     no model to price the request by;
//   context: prompt + output beyond the model's context window;
//   budget: a worst case that cannot be computed or exceeds the budget.
// Returns the tokens (0 when nothing bounds the output); writes `refused`
// and `worst_case` only where it has something to say (the caller starts
// them empty).
template <class Currency>
[[gnu::always_inline]] constexpr std::uint64_t assess(const request& r, const admission_rules<Currency>& x,
                                                      dimension_set& refused, money<Currency>& worst_case) noexcept {
  std::optional<std::uint64_t> out = r.max_tokens;
  if (!out && r.model && r.model->default_max_tokens) out = r.model->default_max_tokens;
  if (!out && r.model && r.model->context_window)
    out = *r.model->context_window > r.prompt_tokens ? *r.model->context_window - r.prompt_tokens : 0;
  if (!out) {
    refused.add(dimension::request_size);  // no way to bound the output
    return 0;
  }
  const std::uint64_t n = detail::sat_add(r.prompt_tokens, *out);
  if (r.model && r.model->context_window && n > *r.model->context_window) refused.add(dimension::context);
  if (x.spaced_tokens && n > x.max_request_tokens) refused.add(dimension::request_size);
  if (x.budget) {
    if (!r.model) {
      refused.add(dimension::request_size);  // a budget needs prices
    } else {
      const auto w = detail::worst_case<Currency>(*r.model, r.prompt_tokens, out, r.planned_cache_writes, cost_options{});
      if (!w) {
        refused.add(dimension::budget);
      } else {
        worst_case = w.total;
        if (w.total > x.budget_limit) refused.add(dimension::budget);
      }
    }
  }
  return n;
}
// The same as values, for other backends and tests.
template <class Currency>
struct assessment {
  dimension_set refused;
  std::uint64_t tokens = 0;
  money<Currency> worst_case;
};
template <class Currency>
constexpr assessment<Currency> assess(const request& r, const admission_rules<Currency>& x) noexcept {
  assessment<Currency> a;
  a.tokens = assess<Currency>(r, x, a.refused, a.worst_case);
  return a;
}

// One refusal from every dimension's answer (asked without consuming, after
// the roll-back). The wait is the largest of the time-based dimensions' (and
// the pause's); `never` if one of them can never admit; reason::busy with no
// wait if only a permit or money can end it (or the refusal lost a race and
// no dimension refuses any more: it names concurrency and is retried soon).
class refusal {
 public:
  constexpr explicit refusal(nanoseconds paused_for = nanoseconds(0)) noexcept : wait_(paused_for) {
    if (paused_for > nanoseconds(0)) refused_.add(dimension::paused);
  }
  // A dimension that refuses with no time-based wait (concurrency, budget).
  constexpr void add(dimension d) noexcept { refused_.add(d); }
  // A time-based dimension's answer to "would you admit at now".
  constexpr void note(dimension d, decision x) noexcept {
    if (x.admitted()) return;
    refused_.add(d);
    if (x.never()) never_ = true;
    if (x.retry_after() > wait_) wait_ = x.retry_after();
  }
  // Every dimension that refused (never empty once finished).
  constexpr dimension_set refused() const noexcept {
    if (!refused_.empty()) return refused_;
    dimension_set s;
    s.add(dimension::concurrency);  // lost a race: report the first, retry soon
    return s;
  }
  constexpr decision result() const noexcept {
    if (never_) return decision::refuse(reason::exceeds_capacity);
    if (wait_ > nanoseconds(0)) return decision::wait(wait_);
    return decision::wait(nanoseconds(0), reason::busy);  // a permit or money must come back first
  }

 private:
  dimension_set refused_;
  nanoseconds wait_{0};
  bool never_ = false;
};

// The emission interval of a strict window's limit: W / L rounded up (the
// spacing a limit implies, the least pause after its 429; pause.hpp).
constexpr nanoseconds emission_interval(nanoseconds window, std::uint64_t l) noexcept {
  const std::uint64_t w = window.count() > 0 ? static_cast<std::uint64_t>(window.count()) : 0;
  return nanoseconds(static_cast<std::int64_t>(detail::ceil_div(w, l > 0 ? l : 1)));
}

constexpr const char* to_string(limiter k, bool daily = false) noexcept {
  switch (k) {
    case limiter::none: return "not enforced";
    case limiter::strict_window: return daily ? "strict window (24 h)" : "strict window";
    case limiter::spaced: return daily ? "spaced with margin (24 h)" : "spaced with margin";
    case limiter::calendar_day: return "calendar day";
  }
  return "?";
}

}  // namespace account_policy

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_ACCOUNT_POLICY_HPP
// #include <tollgate/clock.hpp>  (already above)
// #include <tollgate/decision.hpp>  (already above)
// #include <tollgate/detail/arith.hpp>  (already above)
// #include <tollgate/error.hpp>  (already above)
// #include <tollgate/http.hpp>  (already above)

#include <cstdint>
#include <limits>
#include <optional>

TOLLGATE_BEGIN_NAMESPACE

namespace account_policy {

// Where a dimension is in learning.
enum class learn_phase : unsigned char {
  strict,  // the strict window at L (nothing learned yet)
  both,    // switched less than a window ago: the window and the spaced bucket
  spaced,  // the margin policy alone
};

constexpr const char* to_string(learn_phase p) noexcept {
  switch (p) {
    case learn_phase::strict: return "strict";
    case learn_phase::both: return "switching";
    case learn_phase::spaced: return "spaced";
  }
  return "?";
}

// The switch word of a dimension that has not switched.
inline constexpr std::int64_t not_switched = std::numeric_limits<std::int64_t>::max();

// The phase at `now` of a dimension that switched at `switched_at`
// (not_switched: never). A `now` before the switch counts as in it.
constexpr learn_phase phase_at(std::int64_t switched_at, nanoseconds window, nanoseconds now) noexcept {
  if (switched_at == not_switched) return learn_phase::strict;
  const std::uint64_t w = window.count() > 0 ? static_cast<std::uint64_t>(window.count()) : 0;
  return now.count() < detail::sat_offset(switched_at, w) ? learn_phase::both : learn_phase::spaced;
}

// Where a dimension is for the next lesson.
enum class learn_stage : unsigned char {
  none,       // not enforced: nothing to learn
  strict,     // not switched
  guarded,    // switched, and the pause that followed its switch not over
  widenable,  // switched, past that pause: a 429 now answers a request the margin policy admitted
};
// The stage at `now` of a dimension that switched at `switched_at` and
// whose switch's pause ends at `guard_end` (not_switched: not yet set).
constexpr learn_stage stage_at(bool enforced, std::int64_t switched_at, std::int64_t guard_end, nanoseconds now) noexcept {
  if (!enforced) return learn_stage::none;
  if (switched_at == not_switched) return learn_stage::strict;
  return now.count() < guard_end ? learn_stage::guarded : learn_stage::widenable;
}

// What one answer teaches.
struct learn_step {
  bool switch_requests = false;
  bool switch_tokens = false;
  bool widen = false;  // double the spacing margin
};
constexpr learn_step learn_from(error_kind k, learn_stage requests, learn_stage tokens) noexcept {
  learn_step s;
  switch (k) {
    case error_kind::rpm:
      s.switch_requests = requests == learn_stage::strict;
      s.widen = requests == learn_stage::widenable;
      break;
    case error_kind::tpm:
      s.switch_tokens = tokens == learn_stage::strict;
      s.widen = tokens == learn_stage::widenable;
      break;
    case error_kind::rate_limit:
      s.switch_requests = requests == learn_stage::strict;
      s.switch_tokens = tokens == learn_stage::strict;
      // Widen only when every enforced dimension is past its guard.
      s.widen = (requests != learn_stage::none || tokens != learn_stage::none) &&
                (requests == learn_stage::none || requests == learn_stage::widenable) &&
                (tokens == learn_stage::none || tokens == learn_stage::widenable);
      break;
    default: break;
  }
  return s;
}

// Whether a dimension starts on the strict window: only where, saturated,
// it admits more than the margin policy. The strict window of K sub-windows
// admits K / (K + 1) of L per W (sliding_window.hpp); the margin policy
// admits `spaced` (its rate). So requests up to RPM 16 start strict (at RPM
// 3, 2.81 per minute against 2.0) and from RPM 17 spaced (at RPM 100, 99
// against 93.75); tokens start strict when m is more than about L / 16.
constexpr bool starts_strict(std::uint64_t l, nanoseconds window, const rate& spaced, std::uint64_t k) noexcept {
  if (window.count() <= 0 || spaced.period.count() <= 0) return true;
  // l K / ((K + 1) W) > count / period, in 128 bits (saturated: a tie
  // at the top keeps the strict window, the policy the model names).
  using u128 = detail::u128;
  constexpr u128 top = ~static_cast<u128>(0);
  auto mul = [](u128 a, u128 b) { return a != 0 && b > top / a ? top : a * b; };
  const u128 lhs = mul(mul(l, k), static_cast<std::uint64_t>(spaced.period.count()));
  const u128 rhs = mul(mul(spaced.count, k + 1), static_cast<std::uint64_t>(window.count()));
  return lhs > rhs || lhs == top;
}

// The margin after a widening: doubled (1 ms from zero), at most `cap`.
constexpr nanoseconds widened_margin(nanoseconds m, nanoseconds cap) noexcept {
  const std::int64_t c = cap.count() > 0 ? cap.count() : 0;
  const std::int64_t x = m.count() <= 0 ? 1000000 : (m.count() > c / 2 ? c : 2 * m.count());
  return nanoseconds(x < c ? x : c);
}

}  // namespace account_policy

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_ACCOUNT_LEARN_RULES_HPP
// #include <tollgate/account/pause.hpp>  (inlined below)
// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// account/pause.hpp: what the account does with the server's answer: the
// pause after a 429 or an overload, the stop after a quota error, and the
// state word that holds them.
//
// The rule (pause_after), under every server model and policy alike:
//   RPM 429: for the largest of the server's hint, one emission interval of
//     the request limit (W / L rounded up: RPM 3 means 20 s; under a margin
//     policy the spaced interval in force, 30 s + spacing_margin) and the
//     account's own wait for one more request (Kimi says "try again after 1
//     seconds");
//   TPM 429: the same with the token limit (W / L per token; under a margin
//     policy the interval in force, (W + spacing_margin) / (L - m));
//   under server_model::learn the waits are those of the policy the
//     dimension runs once the answer has taught it (account/learn.hpp);
//   a rate 429 that names no dimension, or concurrency: as RPM (as TPM
//     without a request limit);
//   TPD 429: until the later of the hint and the local daily reset; an
//     account without a daily limit of its own takes the next midnight at
//     utc_offset (config.hpp; UTC by default) as that reset, the calendar
//     day it would count (a server whose day rolls or starts elsewhere
//     answers the first request after it with another TPD 429, which
//     pauses again: one 429 per day at most, not one per request);
//   overload: for the hint, else 1 s, without counting as a limit;
//   quota/balance error: stop until resume() (which does not end a pause).
// A hint counts for at most max_pause (24 h by default; clamp_hint says when
// it was cut, which the account counts in stats().capped_hints); the
// account's own waits are not capped. A pause only ever lengthens;
// clear_pause() ends it.
//
// Contract. clamp_hint and pause_after are pure: the account passes the
// waits its limiters report (its own wait for one request and one token,
// the daily reset), so another state backend gets the same pause from the
// same numbers. pause_state is two words: the pause's end (one int64, moved
// forward only, by CAS) and the stop flag. Both are lone values, so relaxed
// suffices for the pause (a stale read delays or advances a pause by the
// race window, which the server's own limits cover); the stop flag is
// release/acquire so that a stop is seen with what preceded it. Address-free:
// the words mean the same in any process that maps them.
#ifndef TOLLGATE_ACCOUNT_PAUSE_HPP
#define TOLLGATE_ACCOUNT_PAUSE_HPP

// #include <tollgate/config.hpp>  (already above)
// #include <tollgate/clock.hpp>  (already above)
// #include <tollgate/detail/arith.hpp>  (already above)
// #include <tollgate/detail/atomic.hpp>  (already above)
// #include <tollgate/http.hpp>  (already above)

#include <chrono>
#include <cstdint>
#include <limits>
#include <optional>

TOLLGATE_BEGIN_NAMESPACE

namespace account_policy {

// max(0, until - now), saturated: defined for every pair of times.
constexpr nanoseconds time_left(std::int64_t until, nanoseconds now) noexcept {
  const std::uint64_t d = detail::positive_difference(until, now.count());
  constexpr std::uint64_t top = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
  return nanoseconds(static_cast<std::int64_t>(d < top ? d : top));
}

// The kinds of answer whose hint can lengthen a pause.
constexpr bool pauses(error_kind k) noexcept {
  return k == error_kind::concurrency || k == error_kind::rpm || k == error_kind::tpm || k == error_kind::rate_limit ||
         k == error_kind::tpd || k == error_kind::overloaded;
}

struct clamped_hint {
  nanoseconds hint{0};
  bool capped = false;  // the hint was longer than max_pause and was cut to it
};
// The server's hint as a pause may use it: the header's if any, else the
// body's, else none (zero); negative counts as zero; longer than max_pause
// is cut to it (for the kinds that pause).
constexpr clamped_hint clamp_hint(error_kind k, std::optional<nanoseconds> header, std::optional<nanoseconds> body,
                                  nanoseconds max_pause) noexcept {
  nanoseconds h = header ? *header : (body ? *body : nanoseconds(0));
  if (h < nanoseconds(0)) h = nanoseconds(0);
  if (h > max_pause && pauses(k)) return clamped_hint{max_pause, true};
  return clamped_hint{h, false};
}

// What the account's limiters say at the answer's time.
struct own_waits {
  nanoseconds request{0};  // max(emission interval, own wait for one request); 0 without a request limit
  nanoseconds token{0};    // the same for one token
  bool request_limit = false;  // the account enforces a request limit
  nanoseconds daily_reset{0};  // until the daily limit is back to full (without one: until_midnight)
};

// From `now` to the next midnight at `utc_offset` of a clock whose zero is
// Unix time `unix_at_zero`: in (0, 24 h] (a full day at midnight itself).
// In 128 bits: defined for every input.
constexpr nanoseconds until_midnight(nanoseconds now, nanoseconds unix_at_zero, std::chrono::minutes utc_offset) noexcept {
  constexpr detail::i128 day = static_cast<detail::i128>(86400) * 1000000000;
  const detail::i128 local = static_cast<detail::i128>(now.count()) + unix_at_zero.count() +
                             static_cast<detail::i128>(utc_offset.count()) * 60 * 1000000000;
  detail::i128 into = local % day;
  if (into < 0) into += day;
  return nanoseconds(static_cast<std::int64_t>(day - into));
}

enum class response_action : unsigned char { none, pause, stop };
struct response_decision {
  response_action action = response_action::none;
  nanoseconds pause{0};  // for `pause`: how long from the answer's time
};

// The one rule (see the header comment), from a clamped hint.
constexpr response_decision pause_after(error_kind k, nanoseconds hint, const own_waits& w) noexcept {
  switch (k) {
    case error_kind::quota: return response_decision{response_action::stop, nanoseconds(0)};
    case error_kind::concurrency:
    case error_kind::rpm:
    case error_kind::tpm:
    case error_kind::rate_limit: {
      nanoseconds own{0};
      if (k != error_kind::tpm) own = w.request;
      if (k != error_kind::rpm && (k == error_kind::tpm || !w.request_limit)) own = w.token > own ? w.token : own;
      return response_decision{response_action::pause, hint > own ? hint : own};
    }
    case error_kind::tpd:
      return response_decision{response_action::pause, hint > w.daily_reset ? hint : w.daily_reset};
    case error_kind::overloaded:
      return response_decision{response_action::pause, hint > nanoseconds(0) ? hint : std::chrono::seconds(1)};
    default: return response_decision{};
  }
}

}  // namespace account_policy

namespace detail {

// The pause's end and the stop flag (see the header comment).
class pause_state {
 public:
  // A stop that resume() cannot lift (an account built with an error).
  void stop_for_good() noexcept {
    for_good_ = true;
    stopped_.store(true, std::memory_order_relaxed);  // relaxed: construction precedes sharing
  }
  void stop() noexcept { stopped_.store(true, std::memory_order_release); }  // release: pairs with stopped()'s acquire
  void resume() noexcept {
    if (!for_good_) stopped_.store(false, std::memory_order_release);  // release: as in stop
  }
  // Sets the flag as a snapshot had it (a stop for good stays).
  void restore_stop(bool s) noexcept { stopped_.store(s || for_good_, std::memory_order_release); }  // release: as in stop
  bool stopped() const noexcept { return stopped_.load(std::memory_order_acquire); }  // acquire: pairs with stop()
  // relaxed: a lone time value (see the header comment).
  std::int64_t until() const noexcept { return until_.load(std::memory_order_relaxed); }
  void pause_for(nanoseconds d, nanoseconds now) noexcept {
    const std::int64_t u = detail::sat_offset(now.count(), static_cast<std::uint64_t>(d.count() > 0 ? d.count() : 0));
    // relaxed: a lone time value that only moves forward (max by CAS).
    std::int64_t cur = until_.load(std::memory_order_relaxed);
    while (u > cur && !until_.compare_exchange_weak(cur, u, std::memory_order_relaxed)) {
    }
  }
  // relaxed: as in pause_for; a pause_for racing this may land after it and stand.
  void clear() noexcept { until_.store(std::numeric_limits<std::int64_t>::min(), std::memory_order_relaxed); }

 private:
  detail::atomic<std::int64_t> until_{std::numeric_limits<std::int64_t>::min()};
  detail::atomic<bool> stopped_{false};
  bool for_good_ = false;
};

}  // namespace detail

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_ACCOUNT_PAUSE_HPP
// #include <tollgate/account/policy.hpp>  (already above)
// #include <tollgate/bucket_ticket.hpp>  (already above)
// #include <tollgate/clock.hpp>  (already above)
// #include <tollgate/decision.hpp>  (already above)
// #include <tollgate/detail/arith.hpp>  (already above)
// #include <tollgate/detail/atomic.hpp>  (already above)
// #include <tollgate/error.hpp>  (already above)
// #include <tollgate/http.hpp>  (already above)
// #include <tollgate/sliding_window.hpp>  (already above)
// #include <tollgate/tiers.hpp>  (already above)
// #include <tollgate/token_bucket.hpp>  (already above)

#include <cstdint>
#include <limits>
#include <optional>

TOLLGATE_BEGIN_NAMESPACE

// What learning has done so far (account::learned()).
struct learned_view {
  account_policy::learn_phase requests = account_policy::learn_phase::strict;
  account_policy::learn_phase tokens = account_policy::learn_phase::strict;
  std::optional<nanoseconds> requests_switched_at, tokens_switched_at;
  nanoseconds margin{0};       // the spacing margin in force
  std::uint64_t switches = 0;  // dimensions switched
  std::uint64_t widenings = 0;
};

namespace detail {

template <class Clock>
class learn_state {
 public:
  using bucket = token_bucket<Clock>;
  using phase = account_policy::learn_phase;
  struct phases {
    phase requests = phase::strict;
    phase tokens = phase::strict;
  };
  // Lease token tickets (lease::tpm_c_) under learn: a bucket configuration
  // is a small counter, never one of these.
  static constexpr std::uint64_t window_ticket = std::numeric_limits<std::uint64_t>::max();
  static constexpr std::uint64_t no_refund = std::numeric_limits<std::uint64_t>::max() - 1;

  // The sub-windows of the account's strict windows (sliding_window's default).
  static constexpr std::uint64_t strict_subwindows = sliding_window<Clock>::subwindows;

  bool on() const noexcept { return on_; }
  bool has(unsigned k) const noexcept { return b_[k].has_value(); }

  template <class Currency>
  errc build(const basic_account_config<Currency>& c, nanoseconds origin) noexcept {
    if (c.model != server_model::learn) return errc::ok;
    if (c.max_spacing_margin < c.spacing_margin) return errc::zero_period;
    on_ = true;
    window_[0] = c.request_window;
    window_[1] = c.token_window;
    m_ = c.max_request_tokens;
    cap_ = c.max_spacing_margin;
    base_margin_ = c.spacing_margin;
    margin_.store(c.spacing_margin.count(), std::memory_order_relaxed);  // relaxed: construction precedes sharing
    errc e = errc::ok;
    const std::optional<std::uint64_t> l[2] = {c.rpm.value(), c.tpm.value()};
    for (unsigned k = 0; k < 2; ++k) {
      if (!l[k]) continue;
      limit_[k].store(*l[k], std::memory_order_relaxed);  // relaxed: as above
      const std::optional<rate> r = rate_for(k, *l[k], c.spacing_margin);
      if (!r) return errc::too_large;  // the margin must leave room: max_request_tokens < limit
      b_[k].emplace(*r, 1, origin, bucket::start::full, e);
      if (e != errc::ok) return e;
      unit_[k].store(b_[k]->interval().count(), std::memory_order_relaxed);  // relaxed: as above
      if (!account_policy::starts_strict(*l[k], window_[k], *r, strict_subwindows)) {
        // Spaced from the start: switched long ago, guard passed, nothing to switch.
        started_spaced_[k] = true;
        claimed_[k].store(true, std::memory_order_relaxed);  // relaxed: as above
        switched_[k].store(std::numeric_limits<std::int64_t>::min(), std::memory_order_relaxed);
        guard_[k].store(std::numeric_limits<std::int64_t>::min(), std::memory_order_relaxed);
      }
    }
    return errc::ok;
  }

  phases phases_at(nanoseconds now) const noexcept {
    phases p;
    if (b_[0]) p.requests = phase_of(0, now);
    if (b_[1]) p.tokens = phase_of(1, now);
    return p;
  }

  // How long dimension k's strict window still decides at `now` (p its
  // phase): to the end of the "both" phase, 0 once spaced, unbounded
  // before the switch (limiters::always).
  nanoseconds window_left(unsigned k, phase p, nanoseconds now) const noexcept {
    if (!b_[k] || p == phase::strict) return nanoseconds::max();
    if (p == phase::spaced) return nanoseconds(0);
    // acquire: as in phase_of.
    const std::int64_t s = switched_[k].load(std::memory_order_acquire);
    const std::uint64_t w = window_[k].count() > 0 ? static_cast<std::uint64_t>(window_[k].count()) : 0;
    return nanoseconds(static_cast<std::int64_t>(positive_difference(sat_offset(s, w), now.count())));
  }

  // Strict phase: the spaced bucket's next admission had it seen n units
  // at now, at most 2L intervals ahead; never moved back.
  void shadow(unsigned k, std::uint64_t n, nanoseconds now) noexcept {
    if (n == 0 || !b_[k]) return;
    // relaxed: lone values (see the header).
    const std::uint64_t unit = static_cast<std::uint64_t>(unit_[k].load(std::memory_order_relaxed));
    const std::uint64_t l = limit_[k].load(std::memory_order_relaxed);
    const std::int64_t top = sat_offset(now.count(), sat_mul(sat_mul(2, l), unit));
    std::int64_t cur = shadow_[k].load(std::memory_order_relaxed);  // relaxed: a lone value
    for (;;) {
      std::int64_t next = sat_offset(cur > now.count() ? cur : now.count(), sat_mul(n, unit));
      if (next > top) next = top;
      if (next <= cur) return;
      // relaxed: the switch reads it as a lone value; racing charges are the
      // in-flight case of the bound.
      if (shadow_[k].compare_exchange_weak(cur, next, std::memory_order_relaxed, std::memory_order_relaxed)) return;
    }
  }

  // Both or spaced phase: one request at a time (1 unit taken, n - 1 and
  // the per-request spacing charged).
  bool take(unsigned k, std::uint64_t n, nanoseconds now, bucket_ticket& t) noexcept {
    if (n == 0 || !b_[k]) return true;
    // relaxed: a lone value (see install).
    const std::uint64_t extra = k == 1 ? spacing_tokens_.load(std::memory_order_relaxed) : 0;
    return b_[k]->try_acquire_and_charge(1, sat_add(n - 1, extra), now, t).admitted();
  }
  void give(unsigned k, bucket_ticket& t, std::uint64_t n, nanoseconds now) noexcept {
    if (b_[k]) (void)b_[k]->refund(t, n, now);
  }

  // The answer's lesson (learn_from), applied. Returns what it did; the
  // caller then says when the pause it sets ends (guard).
  account_policy::learn_step learn(error_kind kind, nanoseconds now) noexcept {
    if (!on_) return {};
    const account_policy::learn_step s = account_policy::learn_from(kind, stage(0, now), stage(1, now));
    if (s.switch_requests) switch_to_spaced(0, now);
    if (s.switch_tokens) switch_to_spaced(1, now);
    if (s.widen) widen(now);
    return s;
  }
  // The dimensions `s` switched widen on 429s from `end` on (the end of the
  // pause their switch caused: a 429 before it may answer a request
  // admitted before the switch). The first guard set stands.
  void guard(const account_policy::learn_step& s, nanoseconds end) noexcept {
    const bool sw[2] = {s.switch_requests, s.switch_tokens};
    for (unsigned k = 0; k < 2; ++k) {
      std::int64_t expected = account_policy::not_switched;
      // relaxed: a lone value.
      if (sw[k]) guard_[k].compare_exchange_strong(expected, end.count(), std::memory_order_relaxed, std::memory_order_relaxed);
    }
  }

  // The own waits of a switched dimension come from its bucket (both: the
  // later of the bucket's and the window's).
  void adjust(account_policy::own_waits& w, nanoseconds now) const noexcept {
    if (!on_) return;
    const phases p = phases_at(now);
    if (b_[0] && p.requests != phase::strict) {
      const nanoseconds x = own_wait(0, now);
      w.request = p.requests == phase::spaced || x > w.request ? x : w.request;
    }
    if (b_[1] && p.tokens != phase::strict) {
      const nanoseconds x = own_wait(1, now);
      w.token = p.tokens == phase::spaced || x > w.token ? x : w.token;
    }
  }

  // A refusal's waits from the buckets of switched dimensions.
  void report(account_policy::refusal& r, std::uint64_t n, nanoseconds now, phases p) const noexcept {
    if (b_[0] && p.requests != phase::strict) r.note(dimension::rpm, b_[0]->time_until(1, now));
    if (b_[1] && p.tokens != phase::strict && n > 0) r.note(dimension::tpm, b_[1]->time_until(1, now));
  }

  // remaining(): a switched dimension reports its bucket (both: the smaller
  // amount and the later reset).
  template <class View>
  void remaining(View& v, nanoseconds now, std::uint64_t max_request_tokens) const noexcept {
    if (!on_) return;
    const phases p = phases_at(now);
    if (b_[0] && p.requests != phase::strict) {
      const std::uint64_t a = b_[0]->available(now);
      const nanoseconds f = b_[0]->full_in(now);
      const bool only = p.requests == phase::spaced || !v.requests;
      v.requests = only || a < *v.requests ? a : *v.requests;
      v.requests_reset_in = only || f > v.requests_reset_in ? f : v.requests_reset_in;
    }
    if (b_[1] && p.tokens != phase::strict) {
      const std::uint64_t a = b_[1]->available(now) > 0 ? max_request_tokens : 0;  // one request at a time
      const nanoseconds f = b_[1]->full_in(now);
      const bool only = p.tokens == phase::spaced || !v.tokens_minute;
      v.tokens_minute = only || a < *v.tokens_minute ? a : *v.tokens_minute;
      v.tokens_minute_reset_in = only || f > v.tokens_minute_reset_in ? f : v.tokens_minute_reset_in;
    }
  }

  // New limits (set_limits): the buckets keep what they counted.
  errc set_limits(const tier_row& t, nanoseconds now) noexcept {
    const std::optional<std::uint64_t> l[2] = {t.rpm.value(), t.tpm.value()};
    for (unsigned k = 0; k < 2; ++k) {
      if (!b_[k] || !l[k]) continue;
      const std::int64_t m = margin_.load(std::memory_order_relaxed);  // relaxed: a lone value
      if (!rate_for(k, *l[k], nanoseconds(m))) return errc::too_large;
      limit_[k].store(*l[k], std::memory_order_relaxed);  // relaxed: a lone value, re-read by install
    }
    return install(now);
  }

  const char* policy(dimension d) const noexcept {
    const unsigned k = d == dimension::rpm ? 0 : 1;
    if ((d != dimension::rpm && d != dimension::tpm) || !b_[k]) return nullptr;
    // acquire: as in phase_of.
    if (started_spaced_[k]) return "spaced with margin (admits more here than the strict window)";
    return switched_[k].load(std::memory_order_acquire) == account_policy::not_switched
               ? "strict window (learning)"
               : "spaced with margin (learned)";
  }

  // Snapshot support (snapshot.hpp, format 3): the learned words as times
  // relative to the snapshot's `now`. Per dimension with a bucket: the time
  // since the switch, the time left of its guard (none_word: not switched,
  // not set), the shadow's lead and what the spaced bucket owes; then the
  // margin and the widenings.
  static constexpr std::uint64_t none_word = std::numeric_limits<std::uint64_t>::max();
  struct saved_words {
    std::uint64_t since[2] = {none_word, none_word}, guard[2] = {none_word, none_word};
    std::uint64_t lead[2] = {0, 0}, owed[2] = {0, 0};
    std::uint64_t margin = 0, widenings = 0;
  };
  // Defined in account/learn_snapshot.hpp (included at the end of this header).
  saved_words save(nanoseconds now) const noexcept;
  bool fits(const saved_words& w) const noexcept;
  void load(const saved_words& w, nanoseconds now, std::uint64_t down) noexcept;

  learned_view view(nanoseconds now) const noexcept {
    learned_view v;
    const phases p = phases_at(now);
    v.requests = p.requests;
    v.tokens = p.tokens;
    std::optional<nanoseconds>* at[2] = {&v.requests_switched_at, &v.tokens_switched_at};
    for (unsigned k = 0; k < 2; ++k) {
      const std::int64_t s = switched_[k].load(std::memory_order_acquire);  // acquire: as in phase_of
      if (b_[k] && !started_spaced_[k] && s != account_policy::not_switched) *at[k] = nanoseconds(s);
    }
    v.margin = nanoseconds(margin_.load(std::memory_order_relaxed));  // relaxed: a lone value
    v.switches = switches_.load(std::memory_order_relaxed);           // relaxed: a counter
    v.widenings = widenings_.load(std::memory_order_relaxed);         // relaxed: a counter
    return v;
  }

 private:
  account_policy::learn_stage stage(unsigned k, nanoseconds now) const noexcept {
    // acquire: as in phase_of; relaxed: a lone value.
    return account_policy::stage_at(b_[k].has_value(), switched_[k].load(std::memory_order_acquire),
                                    guard_[k].load(std::memory_order_relaxed), now);
  }
  phase phase_of(unsigned k, nanoseconds now) const noexcept {
    // acquire: pairs with the release store in switch_to_spaced, so an
    // admission that sees the switch sees the bucket charged from the shadow.
    return account_policy::phase_at(switched_[k].load(std::memory_order_acquire), window_[k], now);
  }

  std::optional<rate> rate_for(unsigned k, std::uint64_t l, nanoseconds margin) const noexcept {
    if (k == 0) return account_policy::spaced_request_rate(l, window_[0], margin);
    return account_policy::spaced_token_rate(l, m_, window_[1], margin);
  }

  nanoseconds own_wait(unsigned k, nanoseconds now) const noexcept {
    const nanoseconds t = b_[k]->interval();
    const decision d = b_[k]->time_until(1, now);
    return d.later() && d.retry_after() > t ? d.retry_after() : t;
  }

  void switch_to_spaced(unsigned k, nanoseconds now) noexcept {
    // acq_rel on success: one switcher; the flag publishes nothing else.
    // relaxed on failure: another answer is switching it.
    bool expected = false;
    if (!claimed_[k].compare_exchange_strong(expected, true, std::memory_order_acq_rel, std::memory_order_relaxed))
      return;
    // The bucket has not been used: full, it admits at now; charging it the
    // shadow's lead moves its next admission to the shadow's time or later.
    const std::int64_t lead = shadow_[k].load(std::memory_order_relaxed);  // relaxed: a lone value
    const std::int64_t base = lead > now.count() ? lead : now.count();
    charge_lead(k, lead, now.count(), now);
    // release: pairs with the acquire in phase_of (see there).
    switched_[k].store(now.count(), std::memory_order_release);
    switches_.fetch_add(1, std::memory_order_relaxed);  // relaxed: a counter
    // Strict admissions that charged the shadow meanwhile: their lead too.
    const std::int64_t later = shadow_[k].load(std::memory_order_relaxed);  // relaxed: a lone value
    charge_lead(k, later, base, now);
  }
  // Charges the bucket the whole intervals that cover `from` to `until`, as
  // of the time (at most one interval before now) from which they end at
  // `until` exactly: the bucket, unused until now, then next admits at
  // `until` (later if it saw later times: the safe side).
  void charge_lead(unsigned k, std::int64_t until, std::int64_t from, nanoseconds now) noexcept {
    if (until <= from) return;
    const std::uint64_t unit = static_cast<std::uint64_t>(unit_[k].load(std::memory_order_relaxed));  // relaxed: lone
    if (unit == 0) return;
    const std::uint64_t n = ceil_div(positive_difference(until, from), unit);
    const std::uint64_t span = sat_mul(n, unit);
    const std::int64_t at = span >= positive_difference(until, std::numeric_limits<std::int64_t>::min())
                                ? now.count()
                                : static_cast<std::int64_t>(static_cast<std::uint64_t>(until) - span);
    b_[k]->charge(n, nanoseconds(at < now.count() ? at : now.count()));
  }

  void widen(nanoseconds now) noexcept {
    std::int64_t m = margin_.load(std::memory_order_relaxed);  // relaxed: a lone value
    const std::int64_t w = account_policy::widened_margin(nanoseconds(m), cap_).count();
    // relaxed: a lone value; the buckets are reconfigured below from it.
    if (w <= m || !margin_.compare_exchange_strong(m, w, std::memory_order_relaxed, std::memory_order_relaxed)) return;
    widenings_.fetch_add(1, std::memory_order_relaxed);  // relaxed: a counter
    (void)install(now);  // every rate here was accepted with the widest margin (check_limits)
  }

  // Reconfigures the buckets from the margin and limits in force; again if
  // either moved meanwhile, so the last widening's rates stand.
  errc install(nanoseconds now) noexcept {
    for (unsigned k = 0; k < 2; ++k) {
      if (!b_[k]) continue;
      for (int tries = 0; tries < 64; ++tries) {
        // relaxed: lone values, re-read after the reconfiguration.
        const std::int64_t m = margin_.load(std::memory_order_relaxed);
        const std::uint64_t l = limit_[k].load(std::memory_order_relaxed);
        const std::optional<rate> r = rate_for(k, l, nanoseconds(m));
        if (!r) return errc::too_large;
        const errc e = b_[k]->set_rate(*r, now);
        if (e != errc::ok) return e;
        const std::int64_t unit = b_[k]->interval().count();
        unit_[k].store(unit, std::memory_order_relaxed);  // relaxed: a lone value
        if (k == 1 && widenings_.load(std::memory_order_relaxed) > 0 && unit > 0)  // relaxed: lone values
          spacing_tokens_.store(ceil_div(static_cast<std::uint64_t>(m), static_cast<std::uint64_t>(unit)),
                                std::memory_order_relaxed);
        if (margin_.load(std::memory_order_relaxed) == m && limit_[k].load(std::memory_order_relaxed) == l) break;
      }
    }
    return errc::ok;
  }

  bool on_ = false;
  bool started_spaced_[2] = {false, false};
  nanoseconds window_[2] = {nanoseconds(0), nanoseconds(0)};
  std::uint64_t m_ = 0;
  nanoseconds cap_{0};
  nanoseconds base_margin_{0};
  std::optional<bucket> b_[2];
  detail::atomic<std::int64_t> switched_[2] = {{account_policy::not_switched}, {account_policy::not_switched}};
  detail::atomic<bool> claimed_[2] = {{false}, {false}};
  detail::atomic<std::int64_t> guard_[2] = {{account_policy::not_switched}, {account_policy::not_switched}};
  detail::atomic<std::int64_t> shadow_[2] = {{std::numeric_limits<std::int64_t>::min()},
                                             {std::numeric_limits<std::int64_t>::min()}};
  detail::atomic<std::int64_t> unit_[2] = {{0}, {0}};
  detail::atomic<std::uint64_t> limit_[2] = {{0}, {0}};
  detail::atomic<std::int64_t> margin_{0};
  detail::atomic<std::uint64_t> spacing_tokens_{0};  // tokens charged per request for spacing (after a widening)
  detail::atomic<std::uint64_t> switches_{0}, widenings_{0};
};

}  // namespace detail

TOLLGATE_END_NAMESPACE

// #include <tollgate/account/learn_snapshot.hpp>  (inlined below)
// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// account/learn_snapshot.hpp: what a snapshot (account/snapshot.hpp, format 3)
// carries of server_model::learn's state (account/learn.hpp), and how a
// restore applies it: the learned words as times relative to the snapshot's
// `now`, checked against the configuration (fits) before anything is
// written, and applied to a state not yet shared, older by the downtime
// (load), so that what was learned survives a restart and nothing restored
// is fresher than it was.
//
// This header is included by learn.hpp after the class; including it alone
// includes learn.hpp first.
#ifndef TOLLGATE_ACCOUNT_LEARN_SNAPSHOT_HPP
#define TOLLGATE_ACCOUNT_LEARN_SNAPSHOT_HPP

// #include <tollgate/account/learn.hpp>  (already above)
// #include <tollgate/config.hpp>  (already above)
// #include <tollgate/detail/arith.hpp>  (already above)

#include <cstdint>
#include <limits>

TOLLGATE_BEGIN_NAMESPACE
namespace detail {

template <class Clock>
typename learn_state<Clock>::saved_words learn_state<Clock>::save(nanoseconds now) const noexcept {
    saved_words w;
    for (unsigned k = 0; k < 2; ++k) {
      if (!b_[k]) continue;
      // relaxed: lone values; a snapshot racing a switch keeps one side of it.
      const std::int64_t s = switched_[k].load(std::memory_order_relaxed);
      const std::int64_t g = guard_[k].load(std::memory_order_relaxed);
      if (s != account_policy::not_switched) w.since[k] = positive_difference(now.count(), s);
      // A guard read after a switch this snapshot missed goes with it.
      if (g != account_policy::not_switched && s != account_policy::not_switched)
        w.guard[k] = positive_difference(g, now.count());
      w.lead[k] = positive_difference(shadow_[k].load(std::memory_order_relaxed), now.count());  // relaxed: lone
      w.owed[k] = static_cast<std::uint64_t>(b_[k]->owed(now).count());
    }
    w.margin = static_cast<std::uint64_t>(margin_.load(std::memory_order_relaxed));  // relaxed: a lone value
    w.widenings = widenings_.load(std::memory_order_relaxed);                       // relaxed: a counter
    return w;
  }
  // Whether `w` fits this configuration (the margin within its range, every
  // time within int64, a guard only after a switch).
template <class Clock>
bool learn_state<Clock>::fits(const saved_words& w) const noexcept {
    constexpr std::uint64_t top = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
    if (w.margin < static_cast<std::uint64_t>(base_margin_.count()) || w.margin > static_cast<std::uint64_t>(cap_.count()))
      return false;
    for (unsigned k = 0; k < 2; ++k) {
      if (!b_[k]) continue;
      if (w.lead[k] > top || w.owed[k] > top || (w.guard[k] != none_word && w.guard[k] > top)) return false;
      if (w.since[k] == none_word && w.guard[k] != none_word) return false;  // a guard only after a switch
      // A dimension spaced from the start here may come saved "never
      // switched" from an account built strict (set_limits to a higher tier
      // keeps the start it was built with): load() switches it at the restore.
    }
    return true;
  }
  // Applies checked words to a learn state not yet shared, `down` (the
  // wall-clock time between snapshot and restore) later: switches and
  // guards are that much older, leads and debts that much shorter.
template <class Clock>
void learn_state<Clock>::load(const saved_words& w, nanoseconds now, std::uint64_t down) noexcept {
    constexpr std::int64_t lo = std::numeric_limits<std::int64_t>::min();
    // Every store below is relaxed: restore runs before sharing, and the
    // account's release store that ends the restore (setup.hpp) publishes them.
    margin_.store(static_cast<std::int64_t>(w.margin), std::memory_order_relaxed);  // relaxed: see above
    widenings_.store(w.widenings, std::memory_order_relaxed);                       // relaxed: see above
    (void)install(now);  // the margin's rates (accepted at the widest margin by check_limits)
    for (unsigned k = 0; k < 2; ++k) {
      if (!b_[k] || started_spaced_[k]) {
        if (!b_[k]) continue;
        b_[k]->restore_owed(nanoseconds(static_cast<std::int64_t>(w.owed[k] > down ? w.owed[k] - down : 0)), now);
        // Saved on the strict window (never switched): spaced from here on,
        // its bucket charged from the shadow as a switch charges it, so the
        // first spaced request is spaced from the strict traffic before it.
        if (w.since[k] == none_word && w.lead[k] > down)
          charge_lead(k, sat_offset(now.count(), w.lead[k] - down), now.count(), now);
        continue;
      }
      if (w.since[k] != none_word) {
        const std::uint64_t age = sat_add(w.since[k], down);
        const std::uint64_t room = positive_difference(now.count(), lo);
        // relaxed: see above (the restore's release store stands in for switch_to_spaced's).
        switched_[k].store(age >= room ? lo : static_cast<std::int64_t>(static_cast<std::uint64_t>(now.count()) - age),
                           std::memory_order_relaxed);
        claimed_[k].store(true, std::memory_order_relaxed);  // relaxed: see above
        switches_.fetch_add(1, std::memory_order_relaxed);   // relaxed: a counter
      }
      if (w.guard[k] != none_word)  // relaxed: see above
        guard_[k].store(w.guard[k] > down ? sat_offset(now.count(), w.guard[k] - down) : lo, std::memory_order_relaxed);
      if (w.lead[k] > down)  // relaxed: see above
        shadow_[k].store(sat_offset(now.count(), w.lead[k] - down), std::memory_order_relaxed);
      b_[k]->restore_owed(nanoseconds(static_cast<std::int64_t>(w.owed[k] > down ? w.owed[k] - down : 0)), now);
    }
  }

}  // namespace detail
TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_ACCOUNT_LEARN_SNAPSHOT_HPP

#endif  // TOLLGATE_ACCOUNT_LEARN_HPP
// #include <tollgate/account/server_remaining.hpp>  (inlined below)
// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// account/server_remaining.hpp: the server's rate-limit headers as ground
// truth (account_config::trust_rate_limit_headers).
//
// The rule. A response carrying x-ratelimit-remaining-requests R and
// x-ratelimit-reset-requests T (and the same for tokens) says: until now + T
// the server admits at most R more requests, from anyone on the key. The
// account then admits at most R more before now + T, on top of its own
// limits (it never loosens them: its own count still decides where it is
// stricter), for each dimension the headers state, whether the account
// enforces a limit of its own there or not (with no RPM or TPM configured
// the headers are the only rate limit it knows). A snapshot (format 3)
// carries the gates: an account restored from it admits within each gate
// at most its remainder at the snapshot, until the gate's end less the
// wall-clock time restore() is told has passed since (like every count
// there; admissions after the snapshot are in no snapshot). A gate already
// in force is combined with the new one: the later
// end and the smaller remainder, so a response that arrives late never
// loosens it. Another client on the same key then costs throughput, not
// 429s: a 429 (which carries the headers too) closes the gate until the
// reset. Reading T as the time until the first unit comes back is exact for
// a sliding window; a server whose reset means "until the window is empty"
// makes the gate stricter than needed, never looser.
//
// The account's own requests in flight. R was counted before the account's
// own requests still unanswered when the response is observed (admitted,
// neither settled nor dropped) may reach the server: the gate takes R less
// them (and the tokens they reserved), so that they are not counted twice as
// free. Some of them may have reached the server before the answered one
// (R counts those already): the gate is then that many units stricter than
// needed, never looser; among them is the answered request itself when its
// response is observed before its lease is settled (settle first to spare
// that one).
//
// Bound (tests/test_learn.cpp, a sliding-log server shared with a hidden
// client that takes a share of its limit): requests the account admits
// within a gate never exceed its remainder less its own requests in flight
// at the response; 429s come only from units the other client took after
// the last response the account saw (and from requests admitted before the
// account saw any response: they pass no gate).
//
// Contract. Pure combination (tightened); the state is two words per
// dimension (the gate's end, relaxed, and its remainder, taken by CAS),
// address-free. Taking is lock-free (one CAS loop); an admission refused
// later gives its units back. Observations that race may leave the looser
// of the two racing gates (each store is one word).
#ifndef TOLLGATE_ACCOUNT_SERVER_REMAINING_HPP
#define TOLLGATE_ACCOUNT_SERVER_REMAINING_HPP

// #include <tollgate/config.hpp>  (already above)
// #include <tollgate/clock.hpp>  (already above)
// #include <tollgate/decision.hpp>  (already above)
// #include <tollgate/detail/arith.hpp>  (already above)
// #include <tollgate/detail/atomic.hpp>  (already above)
// #include <tollgate/http.hpp>  (already above)

#include <cstdint>
#include <limits>
#include <optional>

TOLLGATE_BEGIN_NAMESPACE

namespace account_policy {

// At most `left` more until `until` (a time in ns).
struct remaining_gate {
  std::int64_t until = std::numeric_limits<std::int64_t>::min();
  std::uint64_t left = 0;
};
// The gate after a response that says `remaining` until now + `reset`,
// given the gate in force (inactive once its end has passed).
constexpr remaining_gate tightened(remaining_gate cur, std::uint64_t remaining, nanoseconds reset,
                                   nanoseconds now) noexcept {
  const std::int64_t end =
      detail::sat_offset(now.count(), static_cast<std::uint64_t>(reset.count() > 0 ? reset.count() : 0));
  if (cur.until <= now.count()) return remaining_gate{end, remaining};
  return remaining_gate{end > cur.until ? end : cur.until, remaining < cur.left ? remaining : cur.left};
}

}  // namespace account_policy

namespace detail {

class remaining_gates {
 public:
  enum class take_result : unsigned char { open, taken, refused };

  bool on() const noexcept { return on_; }
  void enable() noexcept { on_ = true; }

  void observe(const rate_limit_headers& h, nanoseconds now) noexcept {
    if (!on_) return;
    // The account's own requests still unanswered may reach the server
    // after the one this answers: the remainder less them (the safe side).
    // relaxed: lone counters; an admission racing this read is the
    // in-flight case of the bound.
    const std::uint64_t air[2] = {air_[0].load(std::memory_order_relaxed), air_[1].load(std::memory_order_relaxed)};
    if (h.remaining_requests && h.reset_requests) tighten(0, less(*h.remaining_requests, air[0]), *h.reset_requests, now);
    if (h.remaining_tokens && h.reset_tokens) tighten(1, less(*h.remaining_tokens, air[1]), *h.reset_tokens, now);
  }

  // An admission's request and its n tokens are in flight until answered
  // (any settle, or the lease dropped).
  void sent(std::uint64_t n) noexcept {
    air_[0].fetch_add(1, std::memory_order_relaxed);  // relaxed: a lone counter (see observe)
    air_[1].fetch_add(n, std::memory_order_relaxed);  // relaxed: as above
  }
  void answered(std::uint64_t n) noexcept {
    air_[0].fetch_sub(1, std::memory_order_relaxed);  // relaxed: as above; never below what sent added
    air_[1].fetch_sub(n, std::memory_order_relaxed);  // relaxed: as above
  }

  // n units of dimension k (0 requests, 1 tokens) at now.
  take_result take(unsigned k, std::uint64_t n, nanoseconds now) noexcept {
    if (n == 0 || now.count() >= until_[k].load(std::memory_order_acquire)) return take_result::open;  // acquire: see tighten
    std::uint64_t left = left_[k].load(std::memory_order_relaxed);  // relaxed: a lone value taken by CAS
    for (;;) {
      if (left < n) return take_result::refused;
      // relaxed: the remainder is a lone count.
      if (left_[k].compare_exchange_weak(left, left - n, std::memory_order_relaxed, std::memory_order_relaxed))
        return take_result::taken;
    }
  }
  void give(unsigned k, std::uint64_t n) noexcept { left_[k].fetch_add(n, std::memory_order_relaxed); }  // relaxed: as above

  // Snapshot support (snapshot.hpp, format 3): per dimension the time left
  // of the gate at `now` (0: none in force) and its remainder.
  void save(nanoseconds now, std::uint64_t (&out)[4]) const noexcept {
    for (unsigned k = 0; k < 2; ++k) {
      // relaxed: lone values; a snapshot racing an observation keeps one side of it.
      const std::uint64_t t = positive_difference(until_[k].load(std::memory_order_relaxed), now.count());
      out[2 * k] = t;
      out[2 * k + 1] = t == 0 ? 0 : left_[k].load(std::memory_order_relaxed);
    }
  }
  // Applies saved gates, `down` (wall-clock time since the snapshot) later,
  // to gates not yet shared; a gate already in force here combines with
  // each as tightened does (the later end, the smaller remainder).
  void load(const std::uint64_t (&in)[4], nanoseconds now, std::uint64_t down) noexcept {
    if (!on_) return;
    for (unsigned k = 0; k < 2; ++k)
      if (in[2 * k] > down) tighten(k, in[2 * k + 1], nanoseconds(static_cast<std::int64_t>(in[2 * k] - down)), now);
  }

  // The wait a gate imposes on n units at now (zero when it lets them in).
  nanoseconds wait(unsigned k, std::uint64_t n, nanoseconds now) const noexcept {
    const std::int64_t u = until_[k].load(std::memory_order_acquire);  // acquire: see tighten
    if (n == 0 || now.count() >= u || left_[k].load(std::memory_order_relaxed) >= n) return nanoseconds(0);
    return nanoseconds(static_cast<std::int64_t>(positive_difference(u, now.count())));
  }

 private:
  void tighten(unsigned k, std::uint64_t remaining, nanoseconds reset, nanoseconds now) noexcept {
    // relaxed loads: lone values, read to combine.
    const account_policy::remaining_gate cur{until_[k].load(std::memory_order_relaxed),
                                             left_[k].load(std::memory_order_relaxed)};
    const account_policy::remaining_gate g = account_policy::tightened(cur, remaining, reset, now);
    left_[k].store(g.left, std::memory_order_relaxed);  // relaxed: published by the release store below
    // release: pairs with the acquire loads in take and wait, so a taker that
    // sees the new end sees the remainder stored with it.
    until_[k].store(g.until, std::memory_order_release);
  }

  static constexpr std::uint64_t less(std::uint64_t r, std::uint64_t air) noexcept { return r > air ? r - air : 0; }

  bool on_ = false;
  detail::atomic<std::uint64_t> air_[2] = {{0}, {0}};  // the account's own requests and tokens unanswered
  detail::atomic<std::int64_t> until_[2] = {{std::numeric_limits<std::int64_t>::min()},
                                            {std::numeric_limits<std::int64_t>::min()}};
  detail::atomic<std::uint64_t> left_[2] = {{0}, {0}};
};

}  // namespace detail

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_ACCOUNT_SERVER_REMAINING_HPP
// #include <tollgate/account/lease.hpp>  (inlined below)
// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// account/lease.hpp: what an admission hands back: the decision, every
// dimension that refused, and the lease that holds what was reserved.
//
// Contract. A lease is move-only and belongs to the account that admitted
// it, which it must not outlive. It releases its concurrency slot once:
// when settled (settle, settle_rejected, settle_failed, settle_cancelled)
// or destroyed, whichever comes first; a lease dropped without settling
// keeps its reservations (the safe side). It records the tickets its
// dimensions gave (window slots, bucket ends and configurations, the
// calendar day, the money reserved, its slot-table word) so that settling
// can give back or charge exactly what was taken. Settling is thread-safe
// with everything the account does, and lock-free; the settle functions are
// defined after the account (account/settle.hpp). Moving a lease is not
// thread-safe (it is one object).
#ifndef TOLLGATE_ACCOUNT_LEASE_HPP
#define TOLLGATE_ACCOUNT_LEASE_HPP

// #include <tollgate/config.hpp>  (already above)
// #include <tollgate/account/config.hpp>  (already above)
// #include <tollgate/budget.hpp>  (already above)
// #include <tollgate/calendar_quota.hpp>  (already above)
// #include <tollgate/clock.hpp>  (already above)
// #include <tollgate/cost.hpp>  (already above)
// #include <tollgate/decision.hpp>  (already above)
// #include <tollgate/money.hpp>  (already above)

#include <cstddef>
#include <cstdint>
#include <optional>
#include <utility>

TOLLGATE_BEGIN_NAMESPACE

template <class Clock, class Currency>
class account;

// What settling a lease did.
template <class Currency = usd_tag>
struct basic_settle_result {
  money<Currency> cost;              // the exact cost charged (zero when not billed)
  std::int64_t overspend_nanos = 0;  // cost above the money reserved
  std::uint64_t debt_tokens = 0;     // tokens used beyond the reservation
  std::uint64_t refunded_tokens = 0;
};
using settle_result = basic_settle_result<usd_tag>;

namespace detail {
// A settle's money (every lease type): the call's exact cost from the model
// (none: not billed), charged against its reservation when the account has a
// budget. An uncomputable cost keeps the whole reservation as spent: the safe side.
template <class Currency>
void settle_money(std::optional<budget<Currency>>& b, budget_reservation<Currency>& r, const model_info* m,
                  const usage& u, basic_settle_result<Currency>& res) noexcept {
  if (b && r) {
    const auto c = m ? cost<Currency>(*m, u) : cost_breakdown<Currency>{cost_errc::unknown_price, {}, {}, {}, {}, {}};
    const money<Currency> actual = c ? c.total : r.amount;
    const money<Currency> diff = b->settle(r, actual);
    res.cost = actual;
    res.overspend_nanos = diff.nanos() < 0 ? -diff.nanos() : 0;
  } else if (m) {
    const auto c = cost<Currency>(*m, u);
    if (c) res.cost = c.total;
  }
}
}  // namespace detail

template <class Clock = steady_clock, class Currency = usd_tag>
class lease {
 public:
  // User-provided, so that `lease()` runs the member initializers only and
  // does not zero the whole object first (see the fields).
  lease() noexcept {}  // NOLINT(modernize-use-equals-default)
  lease(const lease&) = delete;
  lease& operator=(const lease&) = delete;
  lease(lease&& o) noexcept { take(o); }
  lease& operator=(lease&& o) noexcept {
    if (this != &o) {
      if (acc_) acc_->drop(*this);
      take(o);
    }
    return *this;
  }
  // Dropped without settling: the slot is released, the reservations stay
  // (the safe side). The release is out of line, so that destroying a
  // settled lease (every admission's end) is one inlined test.
  ~lease() {
    if (acc_) acc_->drop(*this);
  }

  explicit operator bool() const noexcept { return acc_ != nullptr; }
  std::uint64_t reserved_tokens() const noexcept { return tokens_; }

  // A heartbeat for a long stream: its concurrency slot is reclaimed only
  // lease_timeout after the last renewal (see account/slot_table.hpp). True
  // while the lease holds its slot; false once the deadline passed and the
  // account took the slot back (the stream then runs beyond the limit's
  // count: settle it as usual), or when it holds none (no concurrency limit,
  // no lease_timeout, or the table was full).
  bool renew(nanoseconds now) noexcept { return acc_ != nullptr && acc_->renew_slot(*this, now); }

  // The response arrived with its usage: charge it exactly.
  basic_settle_result<Currency> settle(const usage& u, nanoseconds now) noexcept;
  // The server answered 429: Kimi does not bill it; the tokens stay counted.
  void settle_rejected(nanoseconds now) noexcept;
  // 5xx, timeout, lost connection without usage: keep the tokens, bill nothing.
  void settle_failed(nanoseconds now) noexcept;
  // A stream cancelled part-way: with the usage known so far (the last usage
  // chunk), exactly as settle; without it, bills the reserved worst case (the
  // server bills what it generated before the cancel, which the caller cannot
  // know) and keeps every reserved token counted, whatever the refund policy.
  // The result's cost is then the reserved worst case (zero without a budget).
  basic_settle_result<Currency> settle_cancelled(const std::optional<usage>& known, nanoseconds now) noexcept;

 private:
  friend class account<Clock, Currency>;
  void take(lease& o) noexcept {
    acc_ = std::exchange(o.acc_, nullptr);
    slot_ = std::exchange(o.slot_, no_slot);
    holds_ = std::exchange(o.holds_, false);
    in_flight_ = std::exchange(o.in_flight_, false);
    day_t_ = std::move(o.day_t_);
    money_ = o.money_;
    tokens_ = std::exchange(o.tokens_, 0);
    if (slot_ != no_slot) stamp_ = o.stamp_;
    if (acc_) {
      rpm_s_ = o.rpm_s_;
      tpm_s_ = o.tpm_s_;
      tpd_s_ = o.tpd_s_;
      rpm_c_ = o.rpm_c_;
      tpm_c_ = o.tpm_c_;
      model_ = o.model_;
    }
  }
  // The fields without an initializer are written by the admission before
  // anything reads them (once acc_ is set) and
  // copied only then. Initializing them would leave one run of zeros longer
  // than 64 bytes in every admission, which g++ clears with `rep stos`: about
  // 11 ns of start-up per try_admit on the machines we measured.
  static constexpr std::size_t no_slot = static_cast<std::size_t>(-1);
  account<Clock, Currency>* acc_ = nullptr;
  std::size_t slot_ = no_slot;  // its entry in the account's slot table, if any
  // Set although always written with slot_: once the release is inlined into
  // a caller, g++ cannot see that through a moved-into default lease and
  // warns in the caller's code (-Wmaybe-uninitialized). It sits between
  // slot_ (all ones) and holds_, so no long run of zeros forms.
  std::uint64_t stamp_ = 0;      // what it wrote there
  bool holds_ = false;           // it holds one concurrency unit
  bool in_flight_ = false;       // counted in flight by the header gates (server_remaining.hpp)
  // The window slots its requests and tokens were counted in (the rest of
  // each window ticket follows from tokens_); for a spaced bucket instead,
  // its ticket's end, with the configuration in *_c_.
  std::uint64_t rpm_s_, tpm_s_, tpd_s_;
  std::uint64_t rpm_c_, tpm_c_;
  quota_ticket day_t_;
  budget_reservation<Currency> money_;
  const model_info* model_;
  std::uint64_t tokens_ = 0;
};

template <class Clock = steady_clock, class Currency = usd_tag>
struct admission {
  tollgate::decision decision = tollgate::decision::refuse(reason::misconfigured);
  dimension_set refused;                   // every dimension that refused
  tollgate::lease<Clock, Currency> lease;  // valid when admitted
  std::uint64_t tokens = 0;                // prompt + max_tokens as reserved (or as it would have been)
  money<Currency> worst_case;              // the money reserved (or that would have been)
  nanoseconds at{0};                       // the `now` the decision was made at
  explicit operator bool() const noexcept { return decision.admitted(); }
};

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_ACCOUNT_LEASE_HPP
// #include <tollgate/account/limiters.hpp>  (inlined below)
// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// account/limiters.hpp: the account's state: one lock-free primitive per
// enforced dimension, built as account/policy.hpp decides.
//
// Contract. Each dimension runs at most one limiter: concurrency a
// concurrency_limiter; requests and tokens per window a strict
// sliding_window or a spaced token_bucket (burst 1, at L - m); the daily
// limit a strict 24 h window or a calendar_quota; money a budget. A
// dimension whose limit is unknown or unlimited has none and admits
// everything. The helpers take and give back one dimension's units by its
// tickets, and peek (without consuming) at what each would answer; none
// allocates, locks or makes a syscall. Bounds are the primitives' own
// (each header states its bound); the account composes them all-or-nothing.
//
// Concurrency. Each limiter is thread-safe and lock-free by itself, and
// their state words are address-free (no pointer), so the same limiters can
// live in memory that several processes map; what this struct adds is only
// which of them exist.
#ifndef TOLLGATE_ACCOUNT_LIMITERS_HPP
#define TOLLGATE_ACCOUNT_LIMITERS_HPP

// #include <tollgate/config.hpp>  (already above)
// #include <tollgate/account/config.hpp>  (already above)
// #include <tollgate/account/pause.hpp>  (already above)
// #include <tollgate/account/policy.hpp>  (already above)
// #include <tollgate/budget.hpp>  (already above)
// #include <tollgate/calendar_quota.hpp>  (already above)
// #include <tollgate/clock.hpp>  (already above)
// #include <tollgate/concurrency.hpp>  (already above)
// #include <tollgate/detail/arith.hpp>  (already above)
// #include <tollgate/error.hpp>  (already above)
// #include <tollgate/money.hpp>  (already above)
// #include <tollgate/sliding_window.hpp>  (already above)
// #include <tollgate/tiers.hpp>  (already above)
// #include <tollgate/token_bucket.hpp>  (already above)

#include <chrono>
#include <cstdint>
#include <limits>
#include <optional>

TOLLGATE_BEGIN_NAMESPACE

// What each dimension could still admit (account::remaining_view).
template <class Currency>
struct basic_remaining_view {
  std::optional<std::uint64_t> concurrency, requests, tokens_minute, tokens_day;
  std::optional<money<Currency>> budget;
  nanoseconds paused_for{0};  // time left of a pause
  bool stopped = false;
  // When each time-based dimension is back to its full limit (its reset).
  nanoseconds requests_reset_in{0}, tokens_minute_reset_in{0}, tokens_day_reset_in{0};
};

namespace detail {

template <class Clock, class Currency>
struct account_limiters {
  using window = sliding_window<Clock>;
  using bucket = token_bucket<Clock>;
  using config_type = basic_account_config<Currency>;

  bool margin_tokens = false;  // tokens run the spaced policy
  std::optional<concurrency_limiter> conc;
  std::optional<window> rpm_w, tpm_w, tpd_w;
  std::optional<bucket> rpm_b, tpm_b, tpd_b;  // tpd_b is never built: the daily limit is a window or a quota
  std::optional<calendar_quota<Clock>> day_q;
  std::optional<budget<Currency>> money;
  // Without a daily limit: where the calendar day of utc_offset starts, for
  // the pause after a TPD 429 (pause.hpp).
  nanoseconds day_origin{0};
  std::chrono::minutes day_offset{0};

  // Builds every dimension of `c` (whose limits check_limits accepted).
  errc build(const config_type& c, nanoseconds origin) noexcept {
    using namespace account_policy;
    errc e = errc::ok;
    if (auto v = c.concurrency.value()) {
      conc.emplace(*v, e);
      if (e != errc::ok) return e;
    }
    if (auto v = c.rpm.value()) {
      if (request_limiter(c) == limiter::strict_window) rpm_w.emplace(rate(*v, c.request_window), origin, e);
      else rpm_b.emplace(spaced_request_rate(*v, c.request_window, c.spacing_margin), 1, origin, bucket::start::full, e);
      if (e != errc::ok) return e;
    }
    margin_tokens = !strict_for(c.model);
    if (auto v = c.tpm.value()) {
      if (token_limiter(c) == limiter::strict_window) {
        tpm_w.emplace(rate(*v, c.token_window), origin, e);
      } else {
        const auto r = spaced_token_rate(*v, c.max_request_tokens, c.token_window, c.spacing_margin);
        if (!r) return errc::too_large;  // the margin must leave room: max_request_tokens < limit
        tpm_b.emplace(*r, 1, origin, bucket::start::full, e);
      }
      if (e != errc::ok) return e;
    }
    if (auto v = c.tpd.value()) {
      if (day_limiter(c) == limiter::calendar_day) day_q.emplace(*v, c.utc_offset, unix_time_at_zero(c), e);
      else tpd_w.emplace(rate(*v, std::chrono::hours(24)), origin, e);
      if (e != errc::ok) return e;
    } else {
      day_origin = unix_time_at_zero(c);
      day_offset = c.utc_offset;
    }
    if (c.budget) money.emplace(*c.budget, e);
    return e;
  }

  // Where the calendar day's `now` is in Unix time (config.hpp).
  static nanoseconds unix_time_at_zero(const config_type& c) noexcept {
    if (c.unix_time_at_zero) return *c.unix_time_at_zero;
    if (detail::reads_unix_time<Clock>::value) return nanoseconds(0);
    const nanoseconds wall = system_clock::now(), here = Clock::now();
    const detail::i128 d = static_cast<detail::i128>(wall.count()) - here.count();
    constexpr detail::i128 top = std::numeric_limits<std::int64_t>::max(), bottom = std::numeric_limits<std::int64_t>::min();
    return nanoseconds(static_cast<std::int64_t>(d > top ? top : d < bottom ? bottom : d));
  }
  // Whether tier `t` enforces exactly the dimensions these limiters do.
  bool same_dimensions(const tier_row& t) const noexcept {
    auto need = [](bool have, const limit& l) { return have != l.is_finite(); };
    return !(need(conc.has_value(), t.concurrency) || need(rpm_w || rpm_b, t.rpm) || need(tpm_w || tpm_b, t.tpm) ||
             need(tpd_w || day_q, t.tpd));
  }
  // The rate limits of `t`, live (concurrency is set by the caller, first).
  errc set_rate_limits(const config_type& c, const tier_row& t, nanoseconds now) noexcept {
    using namespace account_policy;
    errc e = errc::ok;
    if (rpm_w && (e = rpm_w->set_limit(*t.rpm.value())) != errc::ok) return e;
    if (rpm_b && (e = rpm_b->set_rate(spaced_request_rate(*t.rpm.value(), c.request_window, c.spacing_margin), now)) != errc::ok) return e;
    if (tpm_w && (e = tpm_w->set_limit(*t.tpm.value())) != errc::ok) return e;
    if (tpm_b) {
      const auto r = spaced_token_rate(*t.tpm.value(), c.max_request_tokens, c.token_window, c.spacing_margin);
      if (!r) return errc::too_large;
      if ((e = tpm_b->set_rate(*r, now)) != errc::ok) return e;
    }
    if (tpd_w && (e = tpd_w->set_limit(*t.tpd.value())) != errc::ok) return e;
    if (day_q && (e = day_q->set_limit(*t.tpd.value())) != errc::ok) return e;
    return errc::ok;
  }

  // The ticket a window gave (or would have given) for `tokens` in `slot`.
  static window_ticket ticket_for(const window& w, std::uint64_t slot, std::uint64_t tokens) noexcept {
    const std::uint64_t u = w.unit();
    return window_ticket{slot, tokens, tokens == 0 || u == 0 ? 0 : tokens <= u ? 1 : detail::ceil_div(tokens, u)};
  }
  // One request back (its window slot, or its bucket ticket's end and configuration).
  void give_request(std::uint64_t slot, std::uint64_t cfg, nanoseconds now) noexcept {
    if (rpm_w) {
      window_ticket t = ticket_for(*rpm_w, slot, 1);
      (void)rpm_w->refund(t, 1);
    }
    if (rpm_b) {
      bucket_ticket t{slot, 1, cfg};
      (void)rpm_b->refund(t, 1, now);
    }
  }
  // Tokens through the spaced bucket: it takes 1 (the previous request's
  // emission time must have passed) and charges the other n - 1, in one step
  // whose ticket (end in `slot`, configuration in `cfg`) a later refund needs.
  static bool take_spaced(bucket& b, std::uint64_t& slot, std::uint64_t& cfg, std::uint64_t n, nanoseconds now) noexcept {
    bucket_ticket t;
    const bool ok = b.try_acquire_and_charge(1, n - 1, now, t).admitted();
    slot = t.end;
    cfg = t.config;
    return ok;
  }
  // Gives back n of the `reserved` tokens counted in `slot` (a bucket: as
  // its ticket, `slot` and `cfg`, allows).
  static void give_tokens(std::optional<window>& w, std::optional<bucket>& b, std::uint64_t slot, std::uint64_t cfg,
                          std::uint64_t reserved, std::uint64_t n, nanoseconds now) noexcept {
    if (w) {
      window_ticket t = ticket_for(*w, slot, reserved);
      (void)w->refund(t, n);
    }
    if (b) {
      bucket_ticket t{slot, reserved, cfg};
      (void)b->refund(t, n, now);
    }
  }
  static void charge_tokens(std::optional<window>& w, std::optional<bucket>& b, std::uint64_t n, nanoseconds now) noexcept {
    if (w) w->charge(n, now);
    if (b) b->charge(n, now);
  }
  // Usage beyond the reservation: a debt that later admissions wait out.
  void charge_debt(std::uint64_t n, nanoseconds now) noexcept {
    charge_tokens(tpm_w, tpm_b, n, now);
    if (day_q) day_q->charge(n, now);
    else charge_tokens(tpd_w, tpd_b, n, now);
  }

  // The least pause after a 429 of the request (or token) limit: the larger
  // of one emission interval of that limit (W / L rounded up; for the spaced
  // policy, its interval in force) and the account's own wait for one unit of
  // it. The server refused although the account may have had room: it counts
  // differently (another client, another window), so wait at least for the
  // spacing the limit itself implies.
  nanoseconds own_wait(bool requests, nanoseconds now) const noexcept {
    const std::optional<window>& w = requests ? rpm_w : tpm_w;
    const std::optional<bucket>& b = requests ? rpm_b : tpm_b;
    nanoseconds t{0}, own{0};
    if (w) {
      t = account_policy::emission_interval(w->window(), w->limit());
      const decision d = w->time_until(1, now);
      if (d.later() && d.why() != reason::stale_time) own = d.retry_after();
    }
    if (b) {
      t = b->interval();
      const decision d = b->time_until(1, now);
      if (d.later()) own = d.retry_after();
    }
    return t > own ? t : own;
  }
  // Until the daily limit is back to full.
  nanoseconds daily_reset(nanoseconds now) const noexcept {
    if (day_q) return day_q->reset_in(now);
    if (tpd_w) return tpd_w->empty_in(now);
    if (tpd_b) return tpd_b->full_in(now);
    return account_policy::until_midnight(now, day_origin, day_offset);
  }

  // What pause_after needs from the limiters (account/pause.hpp).
  account_policy::own_waits waits(nanoseconds now) const noexcept {
    account_policy::own_waits w;
    w.request_limit = rpm_w || rpm_b;
    if (w.request_limit) w.request = own_wait(true, now);
    if (tpm_w || tpm_b) w.token = own_wait(false, now);
    w.daily_reset = daily_reset(now);
    return w;
  }
  // The strict window of kind k (0 requests, 1 tokens, 2 the day), if any.
  window* strict(unsigned k) noexcept {
    std::optional<window>& w = k == 0 ? rpm_w : k == 1 ? tpm_w : tpd_w;
    return w ? &*w : nullptr;
  }

  // Every time-based dimension's answer for a request of n tokens (peeks).
  // `rpm_w_until`, `tpm_w_until`: how long the strict windows still decide
  // (learn.hpp: 0 once spaced, what is left of the "both" phase during it);
  // a window's wait is cut there, since from then on the bucket alone
  // decides and its wait is reported beside this one.
  static constexpr nanoseconds always = nanoseconds::max();
  void report(account_policy::refusal& r, std::uint64_t n, nanoseconds now, nanoseconds rpm_w_until = always,
              nanoseconds tpm_w_until = always) const noexcept {
    if (rpm_w && rpm_w_until > nanoseconds(0)) r.note(dimension::rpm, cut(ahead(*rpm_w, 1, now), rpm_w_until));
    if (rpm_b) r.note(dimension::rpm, rpm_b->time_until(1, now));
    if (tpm_w && tpm_w_until > nanoseconds(0)) r.note(dimension::tpm, cut(ahead(*tpm_w, n, now), tpm_w_until));
    if (tpm_b) r.note(dimension::tpm, tpm_b->time_until(1, now));
    if (tpd_w) r.note(dimension::tpd, ahead(*tpd_w, n, now));
    if (tpd_b) r.note(dimension::tpd, tpd_b->time_until(1, now));
    if (day_q) r.note(dimension::tpd, ahead(*day_q, n, now));
  }
  // A refusal that lasts at most `until` (> 0): a wait of at most that, the
  // same dimension still named.
  static decision cut(decision d, nanoseconds until) noexcept {
    if (until == always || d.admitted() || (d.later() && d.retry_after() <= until)) return d;
    return decision::wait(until, d.later() ? d.why() : reason::exhausted);
  }
  // A window's or the quota's wait for n at `now`, exact also for a `now`
  // older than one it has seen (a08): such a `now` is refused as stale with
  // the time to its head slot (or day), so the wait is that time plus the
  // wait at the head, the first time it can decide.
  template <class Limiter>
  static decision ahead(const Limiter& x, std::uint64_t n, nanoseconds now) noexcept {
    const decision d = x.time_until(n, now);
    if (!d.later() || d.why() != reason::stale_time) return d;
    const std::int64_t gap = d.retry_after().count();  // > 0
    const decision there = x.time_until(n, nanoseconds(detail::sat_offset(now.count(), static_cast<std::uint64_t>(gap))));
    if (there.never()) return there;
    const std::int64_t more = there.later() ? there.retry_after().count() : 0;
    return decision::wait(nanoseconds(detail::sat_offset(gap, static_cast<std::uint64_t>(more))));
  }

  // The time-based dimensions and money of remaining(); held(k) is what
  // window k (rpm, tpm, tpd) holds as credit in now's slot, in units.
  template <class Held>
  void remaining(basic_remaining_view<Currency>& v, nanoseconds now, std::uint64_t max_request_tokens,
                 Held&& held) const noexcept {
    if (rpm_w) v.requests = rpm_w->available(now) + held(0u) * rpm_w->unit();
    if (rpm_b) v.requests = rpm_b->available(now);
    if (tpm_w) v.tokens_minute = tpm_w->available(now) + held(1u) * tpm_w->unit();
    if (tpm_b) v.tokens_minute = tpm_b->available(now) > 0 ? max_request_tokens : 0;  // one request at a time
    if (tpd_w) v.tokens_day = tpd_w->available(now) + held(2u) * tpd_w->unit();
    if (day_q) v.tokens_day = day_q->available(now);
    if (money) v.budget = money->remaining();
    if (rpm_w) v.requests_reset_in = rpm_w->empty_in(now);
    if (rpm_b) v.requests_reset_in = rpm_b->full_in(now);
    if (tpm_w) v.tokens_minute_reset_in = tpm_w->empty_in(now);
    if (tpm_b) v.tokens_minute_reset_in = tpm_b->full_in(now);
    if (tpd_w) v.tokens_day_reset_in = tpd_w->empty_in(now);
    if (day_q) v.tokens_day_reset_in = day_q->reset_in(now);
  }

  const char* policy(dimension d) const noexcept {
    using account_policy::limiter;
    using account_policy::to_string;
    switch (d) {
      case dimension::rpm: return to_string(rpm_w ? limiter::strict_window : rpm_b ? limiter::spaced : limiter::none);
      case dimension::tpm: return to_string(tpm_w ? limiter::strict_window : tpm_b ? limiter::spaced : limiter::none);
      case dimension::tpd:
        return to_string(day_q ? limiter::calendar_day : tpd_w ? limiter::strict_window : tpd_b ? limiter::spaced : limiter::none,
                         true);
      default: return "";
    }
  }
};

}  // namespace detail

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_ACCOUNT_LIMITERS_HPP
// #include <tollgate/account/pause.hpp>  (already above)
// #include <tollgate/account/policy.hpp>  (already above)
// #include <tollgate/account/slot_table.hpp>  (inlined below)
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

// #include <tollgate/config.hpp>  (already above)
// #include <tollgate/clock.hpp>  (already above)
// #include <tollgate/detail/atomic.hpp>  (already above)
// #include <tollgate/detail/shard_counters.hpp>  (already above)
// #include <tollgate/detail/slot_word.hpp>  (inlined below)
// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// detail/slot_word.hpp: the word that records one holding of a concurrency
// unit, for the account's slot table (account/slot_table.hpp) and the shared
// account's slots (account/shared_slots.hpp).
//
// Layout. {held: 1 bit, time: 47 bits, generation: 16 bits}. The time is 1 +
// the holding's admission (or last renewal) time in milliseconds after the
// table's origin, rounded up (so a holding is never reclaimed early). A free
// word keeps the time and generation of its last holding.
//
// Stamps never repeat. Each stamp a word takes (a take or a renewal) is
// greater than the word's previous one as the pair (time, generation): the
// generation steps by one, the time never goes back (a stale `now` keeps the
// later time), and when the generation wraps to 0 the time steps by at least
// a millisecond. So a holder whose word was reclaimed (past its deadline, or
// its process called dead) and who is in fact alive can never free a later
// holding's word, however many takes came between: its release CAS expects
// a stamp the word will never hold again. (With the time freed to 0 and
// 16-bit generations, 65,536 takes at one stale millisecond brought the
// stamp back and the late release freed a live holding's unit.) The price: a
// holding's recorded time can be later than its own `now`, by the lag of a
// stale `now` behind the word's last stamp, or by a millisecond per 65,536
// takes of one word within a millisecond, and it is then reclaimed that much
// later (the safe side). A `now` at or past max_ms (285 years after the
// origin) takes no stamp at all (the tables refuse it: slot_table.hpp,
// shared_slots.hpp), so one far-future `now` cannot push a word's time to
// where no deadline is reached; the pair may still carry past max_ms + 1 (a
// generation wrap at the last millisecond), up to the field's end, 2^63 - 1,
// which no run of takes reaches (2^63 stamps), so a stamp never comes back.
// A take at a later millisecond starts the generation again at 0: the pair
// still increases. A `now` ahead of the true time by D delays the deadline
// of every later holding of the word by up to D, until the true time passes
// it (the never-back rule; the safe side: a permit comes back later).
#ifndef TOLLGATE_DETAIL_SLOT_WORD_HPP
#define TOLLGATE_DETAIL_SLOT_WORD_HPP

// #include <tollgate/config.hpp>  (already above)

#include <cstdint>

TOLLGATE_BEGIN_NAMESPACE

namespace detail {

struct slot_word {
  static constexpr unsigned gen_bits = 16;
  static constexpr std::uint64_t gen_mask = (std::uint64_t{1} << gen_bits) - 1;
  static constexpr std::uint64_t held_bit = std::uint64_t{1} << 63;
  static constexpr std::uint64_t max_ms = 9000000000000;  // 285 years: ms * 10^6 fits 63 bits

  static constexpr bool held(std::uint64_t w) noexcept { return (w & held_bit) != 0; }
  // 1 + the holding's time in ms after the origin (0: never held).
  static constexpr std::uint64_t time(std::uint64_t w) noexcept { return (w & ~held_bit) >> gen_bits; }
  static constexpr std::uint64_t generation(std::uint64_t w) noexcept { return w & gen_mask; }
  // The word once the holding stamped `w` is given back or reclaimed.
  static constexpr std::uint64_t freed(std::uint64_t w) noexcept { return w & ~held_bit; }
  // The stamp that follows `w` (a free word for a take, the holding's own
  // stamp for a renewal) for a holding at `t` = 1 + its ms after the origin:
  // the pair (time, generation) read as one number, one more than `w`'s, or
  // {t, 0} if that is later. So the generation steps by one, a wrap carries
  // a millisecond into the time, and a stale `t` keeps the later time. Three
  // operations on the admission path, where comparing the fields one by one
  // cost about 12 instructions and 1.5 ns (docs/performance.md).
  static constexpr std::uint64_t next(std::uint64_t w, std::uint64_t t) noexcept {
    constexpr std::uint64_t top = ~held_bit;  // the field's end: 2^63 stamps away, never reached
    const std::uint64_t after = (w & ~held_bit) + 1;
    const std::uint64_t at = (t < max_ms + 1 ? t : max_ms + 1) << gen_bits;
    const std::uint64_t s = after > at ? after : at;
    return held_bit | (s < top ? s : top);
  }
};

}  // namespace detail

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_DETAIL_SLOT_WORD_HPP

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
// #include <tollgate/account/snapshot.hpp>  (inlined below)
// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// account/snapshot.hpp: the account's snapshot as bytes: what it has
// counted (window contents, what buckets owe, the calendar day's usage, the
// budget, a pause or a stop, what server_model::learn has learned, the
// server's stated remainders), so a restart does not reset the daily limit,
// the budget or the lessons. No I/O: the caller stores the bytes. Permits in flight are not
// kept (their money stays committed: the safe side).
//
// Format 3: "TGA1", then little-endian u64 fields: version, the
// configuration's fingerprint, the wall-clock time, the stop flag, the time
// left of the pause; per strict window (requests, tokens, day, those that
// exist) its unit, n and n x (time left, units), soonest first; per spaced
// bucket what it owes; the calendar quota's word; the budget's committed and
// spent; under server_model::learn, per dimension it learns (requests,
// tokens) the time since its switch, the time left of its guard (both
// 2^64 - 1 when not yet), its shadow's lead and what its spaced bucket
// owes, then the margin and the widenings (learn.hpp); the header gates,
// always: per dimension the time left and the remainder (zeros: none); and
// an FNV-1a checksum of every byte before it. The learned words and gates
// age like every other time here.
//
// Time. Each count is stored with the time from the snapshot's `now`
// until this account would have dropped it, and restore() keeps it that
// long minus the wall-clock time between snapshot and restore (pass
// system_clock::now() as `wall`), at any phase of either account's slots:
// a restart never lets a count leave a window earlier than it would have
// without the restart (each window moves its slot grid to the stored
// times, so it holds nothing longer either). Buckets keep what they owe
// (rounded up), pauses what is left of them, the calendar quota its day and
// usage (UTC day numbers at the offset, as the account maps its clock to Unix
// time: config.hpp's unix_time_at_zero, so a reboot, which restarts a steady
// clock, keeps the day). A wall clock that went backwards counts as no time
// passed; one that jumped forward ages the counts by the jump. A stop or a
// pause already set in the restoring account stays (the later pause end
// wins): a restore never lifts a restriction.
//
// Versions. This writes format 3. Format 2 is format 3 without the learned
// words and the gates: restore() reads it as a restart that learned nothing
// and saw no headers. Format 1 (0.1.0) kept window ages in
// whole slots, which drops the position inside the slot; restore() reads
// it rounding toward keeping (as if the snapshot was taken at the start of
// its slot: counts stay up to one slot longer than they had to, never
// shorter). Two things format 1 did not record are assumed: that the
// snapshot's `now` was not behind the windows' latest slot, and that a
// window's unit (limits above 16,777,215 tokens) was that of this account.
//
// restore() refuses, changing nothing, bytes that are not a snapshot
// (bad_format), of an unknown version or of format 1 or 2 into an account
// with server_model::learn or trust_rate_limit_headers, which both came
// with format 3 (wrong_version), of an account
// configured otherwise (other_configuration), short or long (truncated),
// whose checksum does not match (corrupted; it only catches accidents),
// or whose fields do not fit this configuration (out_of_range: more
// window entries than slots, counts above the 24-bit field, times beyond a
// window's or bucket's horizon, ages out of the window, a negative or
// inconsistent budget, a calendar day after tomorrow's, a stop flag other
// than 0 or 1, a learned time beyond INT64_MAX, a guard without a switch, a
// margin outside [spacing_margin, max_spacing_margin], a gate beyond
// INT64_MAX). It refuses with in_use an account that has started taking
// traffic (any try_admit that got past the stop and pause checks to the
// limits, admitted or not, or after a restore one refused by a pause, whose
// wait read the restored counts): its counts would be lost and its leases
// would settle against counts they were not taken from. A restored account
// that has not started may be restored again.
// Restore into a new account, before sharing it. A try_admit that races
// the restore is refused (dimension::paused, reason::busy, no wait) until
// it is done; no other member function may run at the same time.
//
// Concurrency. write() reads the limiters as they run (a count racing it
// lands in this snapshot or the next, never in both: see the window's
// export_counts and the credit's give_back); restore() writes them and must
// not race any other use (the account holds admissions off while it runs).
#ifndef TOLLGATE_ACCOUNT_SNAPSHOT_HPP
#define TOLLGATE_ACCOUNT_SNAPSHOT_HPP

// #include <tollgate/config.hpp>  (already above)
// #include <tollgate/account/config.hpp>  (already above)
// #include <tollgate/account/credit.hpp>  (already above)
// #include <tollgate/account/learn.hpp>  (already above)
// #include <tollgate/account/limiters.hpp>  (already above)
// #include <tollgate/account/pause.hpp>  (already above)
// #include <tollgate/account/server_remaining.hpp>  (already above)
// #include <tollgate/detail/arith.hpp>  (already above)

#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

TOLLGATE_BEGIN_NAMESPACE

namespace detail {
constexpr std::uint64_t fnv1a(std::string_view s) noexcept {
  std::uint64_t h = 1469598103934665603ULL;
  for (char c : s) {
    h ^= static_cast<unsigned char>(c);
    h *= 1099511628211ULL;
  }
  return h;
}
// Little-endian fixed-width encoding for snapshots.
struct byte_writer {
  std::string out;
  void raw(const char* p, std::size_t n) { out.append(p, n); }
  void u64(std::uint64_t v) {
    for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
  }
  std::uint64_t checksum() const noexcept { return fnv1a(out); }
};
struct byte_reader {
  std::string_view in;
  std::size_t pos = 0;
  bool skip(std::size_t n) noexcept {
    if (in.size() - pos < n) return false;
    pos += n;
    return true;
  }
  bool u64(std::uint64_t& v) noexcept {
    if (in.size() - pos < 8) return false;
    v = 0;
    for (int i = 0; i < 8; ++i) v |= static_cast<std::uint64_t>(static_cast<unsigned char>(in[pos + static_cast<std::size_t>(i)])) << (8 * i);
    pos += 8;
    return true;
  }
  std::size_t left() const noexcept { return in.size() - pos; }
};
}  // namespace detail

// Why restore() refused (see the header comment); account::restore_errc.
enum class account_restore_errc : unsigned char {
  ok,
  bad_format,
  wrong_version,
  other_configuration,
  truncated,
  corrupted,
  out_of_range,  // a field does not fit this configuration (see above)
  in_use,        // the account has started taking traffic
};
namespace detail {

template <class Clock, class Currency>
struct account_codec {
  using limiters = account_limiters<Clock, Currency>;
  using window = typename limiters::window;
  using bucket = typename limiters::bucket;
  using credit = thread_credit<window>;
  using config_type = basic_account_config<Currency>;
  using count_list = std::vector<std::pair<std::uint64_t, std::uint64_t>>;
  using learn = learn_state<Clock>;
  static constexpr std::uint64_t version = 3;
  static constexpr std::uint64_t version_no_learn = 2;  // no learned words, no header gates
  static constexpr std::uint64_t version_slots = 1;  // 0.1.0's format: window ages in whole slots

  // A hash of everything that shapes the state: a snapshot only restores
  // into an account configured the same way.
  static std::uint64_t fingerprint(const config_type& c) noexcept {
    byte_writer w;
    for (const limit* l : {&c.concurrency, &c.rpm, &c.tpm, &c.tpd}) {
      w.u64(static_cast<std::uint64_t>(l->what()));
      w.u64(l->value().value_or(0));
    }
    w.u64(static_cast<std::uint64_t>(c.model));
    w.u64(c.calendar_day ? 1 : 0);
    w.u64(static_cast<std::uint64_t>(c.utc_offset.count()));
    w.u64(c.max_request_tokens);
    w.u64(c.budget ? static_cast<std::uint64_t>(c.budget->nanos()) : 0);
    w.u64(static_cast<std::uint64_t>(c.request_window.count()));
    w.u64(static_cast<std::uint64_t>(c.token_window.count()));
    // The budget's currency (USD, the first, adds nothing: fingerprints of
    // USD accounts are those of 0.1.0, so their snapshots still restore).
    if (!std::is_same<Currency, usd_tag>::value) w.raw(Currency::code.data(), Currency::code.size());
    return w.checksum();
  }

  // The limiters alone (no learn state, no gates in force): for tests of the codec.
  static std::string write(const config_type& cfg, const limiters& d, const credit& cr, const pause_state& p,
                           nanoseconds now, nanoseconds wall) {
    const learn ls;
    const remaining_gates g;
    return write(cfg, d, cr, p, ls, g, now, wall);
  }
  static account_restore_errc restore(const config_type& cfg, limiters& d, credit& cr, pause_state& ps,
                                      std::string_view bytes, nanoseconds now, nanoseconds wall) {
    learn ls;
    remaining_gates g;
    return restore(cfg, d, cr, ps, ls, g, bytes, now, wall);
  }

  static std::string write(const config_type& cfg, const limiters& d, const credit& cr, const pause_state& p,
                           const learn& ls, const remaining_gates& g, nanoseconds now, nanoseconds wall) {
    byte_writer w;
    w.raw("TGA1", 4);
    w.u64(version);
    w.u64(fingerprint(cfg));
    w.u64(static_cast<std::uint64_t>(wall.count()));
    w.u64(p.stopped() ? 1 : 0);
    w.u64(detail::positive_difference(p.until(), now.count()));
    const std::optional<window>* ws[credit::kinds] = {&d.rpm_w, &d.tpm_w, &d.tpd_w};
    for (unsigned k = 0; k < credit::kinds; ++k) {
      const std::optional<window>* x = ws[k];
      if (!*x) continue;
      // Credit not yet spent is not carried: like an admission that has not
      // happened yet, it is not part of the state at this moment.
      const auto counts = (*x)->export_counts(now, [&](std::uint64_t j) { return cr.in_slot(k, j); });
      w.u64((*x)->unit());
      w.u64(counts.size());
      for (const auto& e : counts) {
        w.u64(e.first);
        w.u64(e.second);
      }
    }
    for (const std::optional<bucket>* x : {&d.rpm_b, &d.tpm_b})
      if (*x) w.u64(static_cast<std::uint64_t>((*x)->owed(now).count()));
    if (d.day_q) w.u64(d.day_q->export_word());
    if (d.money) {
      const auto t = d.money->export_totals();
      // A settle racing this read can show its spend before its commit:
      // committed is never below spent.
      w.u64(static_cast<std::uint64_t>(t.first > t.second ? t.first : t.second));
      w.u64(static_cast<std::uint64_t>(t.second));
    }
    if (ls.on()) {
      const typename learn::saved_words lw = ls.save(now);
      for (unsigned k = 0; k < 2; ++k) {
        if (!ls.has(k)) continue;
        for (std::uint64_t x : {lw.since[k], lw.guard[k], lw.lead[k], lw.owed[k]}) w.u64(x);
      }
      w.u64(lw.margin);
      w.u64(lw.widenings);
    }
    std::uint64_t gw[4] = {0, 0, 0, 0};
    g.save(now, gw);
    for (std::uint64_t x : gw) w.u64(x);
    w.u64(w.checksum());
    return w.out;
  }


  // Reads one window's entries (format 2: unit, n, n x (time left, units);
  // format 1: n, n x (age, units)) as (time left at the snapshot, units of
  // this window), checking every field.
  static account_restore_errc read_window(byte_reader& r, std::uint64_t ver, const window& w, count_list& out) {
    using WL = detail::window_limits;
    constexpr std::uint64_t K = window::subwindows;
    std::uint64_t unit = w.unit(), n = 0;
    if (ver != version_slots) {
      if (!r.u64(unit)) return account_restore_errc::truncated;
      if (unit == 0) return account_restore_errc::out_of_range;
    }
    if (!r.u64(n)) return account_restore_errc::truncated;
    if (n > K + 1) return account_restore_errc::out_of_range;  // a window holds K + 1 slots
    if (r.left() / 16 < n) return account_restore_errc::truncated;
    const std::uint64_t horizon = static_cast<std::uint64_t>(w.import_horizon().count());
    const std::uint64_t width = static_cast<std::uint64_t>(w.slot_width().count());
    std::uint64_t prev = 0;
    for (std::uint64_t k = 0; k < n; ++k) {
      std::uint64_t a = 0, units = 0;
      (void)r.u64(a);
      (void)r.u64(units);
      if (units == 0 || units > WL::max_units) return account_restore_errc::out_of_range;
      std::uint64_t left = 0;
      if (ver == version_slots) {
        // Ages from oldest to newest, each in the window. Kept as if the
        // snapshot was taken at the start of its slot: the longest it can
        // have had to stay.
        if (a > K || (k > 0 && a >= prev)) return account_restore_errc::out_of_range;
        left = detail::sat_mul(K + 1 - a, width);
      } else {
        // Times left, soonest first, within the window's horizon.
        if (a == 0 || a > horizon || (k > 0 && a <= prev)) return account_restore_errc::out_of_range;
        left = a;
      }
      prev = a;
      // The snapshot's units in this window's (equal unless the limit was
      // changed live across 16,777,215 tokens), rounded up.
      out.emplace_back(left, detail::mul_div_ceil(units, unit, w.unit()));
    }
    return account_restore_errc::ok;
  }

  // The most a bucket can owe: its whole tick range, rounded up.
  static std::uint64_t max_owed(const bucket& b) noexcept {
    const std::uint64_t m = detail::sat_add(detail::sat_add(static_cast<std::uint64_t>(b.horizon().count()),
                                                            detail::sat_mul(b.burst(), static_cast<std::uint64_t>(b.interval().count()))),
                                            1);
    const std::uint64_t top = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
    return m > top ? top : m;
  }

  static account_restore_errc restore(const config_type& cfg, limiters& d, credit& cr, pause_state& ps, learn& ls,
                                      remaining_gates& g, std::string_view bytes, nanoseconds now, nanoseconds wall) {
    detail::byte_reader r{bytes};
    if (bytes.size() < 12 || bytes.substr(0, 4) != "TGA1" || !r.skip(4)) return account_restore_errc::bad_format;
    // The checksum covers every byte before it: check it first, so nothing
    // below reads a corrupted length.
    if (bytes.size() < 4 + 8 * 6) return account_restore_errc::truncated;
    detail::byte_reader tail{bytes.substr(bytes.size() - 8)};
    std::uint64_t sum = 0;
    (void)tail.u64(sum);
    if (detail::fnv1a(bytes.substr(0, bytes.size() - 8)) != sum) return account_restore_errc::corrupted;
    r.in = bytes.substr(0, bytes.size() - 8);  // the fields only
    std::uint64_t ver = 0, fp = 0, then = 0, stop = 0, pause = 0;
    if (!r.u64(ver) || !r.u64(fp) || !r.u64(then) || !r.u64(stop) || !r.u64(pause)) return account_restore_errc::truncated;
    if (ver != version && ver != version_no_learn && ver != version_slots) return account_restore_errc::wrong_version;
    // server_model::learn and the header gates came with format 3: no older
    // snapshot of such an account exists, and one rewritten as older would
    // restore as a restart that learned nothing and saw no headers.
    if (ver != version && (cfg.model == server_model::learn || cfg.trust_rate_limit_headers))
      return account_restore_errc::wrong_version;
    if (fp != fingerprint(cfg)) return account_restore_errc::other_configuration;
    constexpr std::uint64_t top = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
    if (stop > 1 || pause > top) return account_restore_errc::out_of_range;
    count_list win[credit::kinds];
    std::optional<window>* ws[credit::kinds] = {&d.rpm_w, &d.tpm_w, &d.tpd_w};
    for (unsigned i = 0; i < credit::kinds; ++i) {
      if (!*ws[i]) continue;
      const account_restore_errc e = read_window(r, ver, **ws[i], win[i]);
      if (e != account_restore_errc::ok) return e;
    }
    std::uint64_t owed[2] = {0, 0}, day_word = 0, committed = 0, spent = 0;
    std::optional<bucket>* bs[2] = {&d.rpm_b, &d.tpm_b};
    for (int i = 0; i < 2; ++i) {
      if (!*bs[i]) continue;
      if (!r.u64(owed[i])) return account_restore_errc::truncated;
      if (owed[i] > max_owed(**bs[i])) return account_restore_errc::out_of_range;
    }
    if (d.day_q) {
      if (!r.u64(day_word)) return account_restore_errc::truncated;
      // A day after tomorrow (a clock a day ahead is allowed for) would
      // refuse everything as stale for as long.
      if ((day_word >> calendar_quota<Clock>::used_bits) > d.day_q->day_at(now) + 1) return account_restore_errc::out_of_range;
    }
    if (d.money) {
      if (!r.u64(committed) || !r.u64(spent)) return account_restore_errc::truncated;
      // Non-negative, and nothing spent that was not committed. Committed
      // may pass the limit (calls that cost more than they reserved): that
      // budget refuses everything, as before the restart.
      if (committed > top || spent > top || spent > committed) return account_restore_errc::out_of_range;
    }
    typename learn::saved_words lw;
    std::uint64_t gw[4] = {0, 0, 0, 0};
    const bool learned = ver == version && ls.on();
    if (learned) {
      for (unsigned k = 0; k < 2; ++k) {
        if (!ls.has(k)) continue;
        if (!r.u64(lw.since[k]) || !r.u64(lw.guard[k]) || !r.u64(lw.lead[k]) || !r.u64(lw.owed[k]))
          return account_restore_errc::truncated;
      }
      if (!r.u64(lw.margin) || !r.u64(lw.widenings)) return account_restore_errc::truncated;
      if (!ls.fits(lw)) return account_restore_errc::out_of_range;
    }
    if (ver == version) {
      for (std::uint64_t& x : gw)
        if (!r.u64(x)) return account_restore_errc::truncated;
      if (gw[0] > top || gw[2] > top) return account_restore_errc::out_of_range;
    }
    if (r.left() != 0) return account_restore_errc::truncated;

    // Everything checked: apply. The wall-clock time between snapshot and
    // restore, zero if the clock went backwards.
    const detail::i128 gap = static_cast<detail::i128>(wall.count()) - static_cast<std::int64_t>(then);
    const std::uint64_t down = gap <= 0 ? 0 : gap >= static_cast<detail::i128>(top) ? top : static_cast<std::uint64_t>(gap);
    // Credit lines hold nothing in a fresh account; cleared all the same,
    // since what they would hold was counted against the replaced counts.
    cr.clear_windows();
    for (unsigned i = 0; i < credit::kinds; ++i) {
      if (!*ws[i]) continue;
      count_list aged;
      for (const auto& e : win[i])
        if (e.first > down) aged.emplace_back(e.first - down, e.second);
      (*ws[i])->import_counts(now, aged);
    }
    for (int i = 0; i < 2; ++i)
      if (*bs[i]) (*bs[i])->restore_owed(nanoseconds(static_cast<std::int64_t>(owed[i] > down ? owed[i] - down : 0)), now);
    if (d.day_q) d.day_q->import_word(day_word);
    if (d.money) d.money->import_totals(static_cast<std::int64_t>(committed), static_cast<std::int64_t>(spent));
    // A stop set before the restore (a quota error already seen) stays, as a
    // misconfigured account stays stopped: a restore only adds restrictions.
    ps.restore_stop(stop != 0 || ps.stopped());
    if (pause > down) ps.pause_for(nanoseconds(static_cast<std::int64_t>(pause - down)), now);
    if (learned) ls.load(lw, now, down);
    g.load(gw, now, down);
    return account_restore_errc::ok;
  }
};

}  // namespace detail

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_ACCOUNT_SNAPSHOT_HPP
// #include <tollgate/account/stats.hpp>  (inlined below)
// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// account/stats.hpp: the account's counters, for metrics: admissions and
// refusals per dimension, tokens reserved and used, debt, reclaimed slots,
// capped hints, and the time callers waited per dimension.
//
// Contract. Counting never refuses, blocks or allocates. The hot counters
// are per-thread shards (detail/shard_counters.hpp: a plain load and store
// for the first 16 threads to count, a relaxed fetch_add on a shared shard
// for the others); the rare ones are relaxed atomics. Relaxed suffices
// everywhere: each counter is a lone value that orders nothing. A read
// (snapshot()) is exact once the counting threads are joined and
// approximate while they run. Counters saturate only where their 64 bits
// would (never in practice).
#ifndef TOLLGATE_ACCOUNT_STATS_HPP
#define TOLLGATE_ACCOUNT_STATS_HPP

// #include <tollgate/config.hpp>  (already above)
// #include <tollgate/account/config.hpp>  (already above)
// #include <tollgate/clock.hpp>  (already above)
// #include <tollgate/detail/atomic.hpp>  (already above)
// #include <tollgate/detail/shard_counters.hpp>  (already above)

#include <cstddef>
#include <cstdint>

TOLLGATE_BEGIN_NAMESPACE

// Per-dimension counters, for metrics.
struct account_stats {
  std::uint64_t admitted = 0, refused = 0;
  std::uint64_t refused_by[9] = {};  // indexed by the bit position of `dimension`
  std::uint64_t tokens_reserved = 0, tokens_used = 0, debt_tokens = 0;
  std::uint64_t reclaimed = 0;  // concurrency slots taken back from leases past lease_timeout
  std::uint64_t capped_hints = 0;  // server hints longer than max_pause, cut to it
  std::int64_t spent_nanos = 0;  // in nano-units of the budget's currency
  // Time callers spent waiting because of each dimension (indexed like
  // refused_by), as reported by the waiting layer (waiting_room) through
  // account::record_wait. A wait caused by several dimensions counts in each.
  std::int64_t waited_ns_by[9] = {};
};

namespace detail {

class account_counters {
 public:
  // The sharded counters, by index.
  enum : std::size_t { admitted, refused, reserved, used, debt, refused_by, count = refused_by + 9 };

  void add_admitted(unsigned shard, std::uint64_t tokens) noexcept {
    hot_.add_at(shard, admitted, 1);
    hot_.add_at(shard, reserved, tokens);
  }
  // Settling: tokens used, and those beyond the reservation.
  void add_used(std::uint64_t used_tokens, std::uint64_t debt_tokens) noexcept {
    hot_.add2(used, used_tokens, debt, debt_tokens);
  }
  void add_used(std::uint64_t used_tokens) noexcept { hot_.add(used, used_tokens); }
  void count_refusal(dimension_set s) noexcept {
    const unsigned shard = detail::this_thread_shard();
    hot_.add_at(shard, refused, 1);
    for (unsigned i = 0; i < 9; ++i)
      if (s.bits & (1u << i)) hot_.add_at(shard, refused_by + i, 1);
  }
  void add_reclaimed(std::uint64_t n) noexcept {
    if (n) reclaimed_.fetch_add(n, std::memory_order_relaxed);  // relaxed: a statistic
  }
  void add_capped_hint() noexcept { capped_hints_.fetch_add(1, std::memory_order_relaxed); }  // relaxed: a statistic
  void record_wait(dimension_set s, nanoseconds d) noexcept {
    if (d <= nanoseconds(0)) return;
    for (unsigned i = 0; i < 9; ++i)
      if (s.bits & (1u << i)) waited_ns_[i].fetch_add(d.count(), std::memory_order_relaxed);  // relaxed: a statistic
  }
  // Everything but spent_nanos (the budget's).
  account_stats snapshot() const noexcept {
    account_stats s;
    s.admitted = hot_.sum(admitted);
    s.refused = hot_.sum(refused);
    for (unsigned i = 0; i < 9; ++i) s.refused_by[i] = hot_.sum(refused_by + i);
    s.tokens_reserved = hot_.sum(reserved);
    s.tokens_used = hot_.sum(used);
    s.debt_tokens = hot_.sum(debt);
    // relaxed: statistics, see the contract.
    s.reclaimed = reclaimed_.load(std::memory_order_relaxed);
    s.capped_hints = capped_hints_.load(std::memory_order_relaxed);
    for (unsigned i = 0; i < 9; ++i) s.waited_ns_by[i] = waited_ns_[i].load(std::memory_order_relaxed);
    return s;
  }

 private:
  detail::shard_counters<count> hot_;
  detail::atomic<std::uint64_t> reclaimed_{0};
  detail::atomic<std::uint64_t> capped_hints_{0};
  detail::atomic<std::int64_t> waited_ns_[9] = {};
};

}  // namespace detail

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_ACCOUNT_STATS_HPP
// #include <tollgate/clock.hpp>  (already above)
// #include <tollgate/decision.hpp>  (already above)
// #include <tollgate/detail/atomic.hpp>  (already above)
// #include <tollgate/detail/shard_counters.hpp>  (already above)
// #include <tollgate/error.hpp>  (already above)
// #include <tollgate/http.hpp>  (already above)
// #include <tollgate/tiers.hpp>  (already above)

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

TOLLGATE_BEGIN_NAMESPACE

template <class Clock = steady_clock, class Currency = usd_tag>
class account {
  using window = sliding_window<Clock>;
  using lease_type = lease<Clock, Currency>;
  using admission_type = admission<Clock, Currency>;
  using amount = money<Currency>;
  using limiters = detail::account_limiters<Clock, Currency>;
  using credit = detail::thread_credit<window>;
  using codec = detail::account_codec<Clock, Currency>;

 public:
  using clock = Clock;
  using currency = Currency;
  using config_type = basic_account_config<Currency>;
  using restore_errc = account_restore_errc;

  // Throws config_error (aborts without exceptions) on an invalid
  // configuration: a margin policy whose margin is not below its limit, a
  // window the primitives refuse, a negative max_pause, or a limit above what
  // its policy can run (see largest_token_limit), which throws with the limit
  // refused and the largest accepted (config_error::values()).
  explicit account(const config_type& c, nanoseconds origin = Clock::now()) {
    error_values v;
    const errc e = init(c, origin, v);
    if (e != errc::ok) detail::fail(e, v);
  }
  // Never throws: on error sets `ec` (and `v`, for a limit too large); the
  // account then refuses everything for good (stopped, misconfigured).
  account(const config_type& c, nanoseconds origin, errc& ec) noexcept {
    error_values v;
    ec = init_or_stop(c, origin, v);
  }
  account(const config_type& c, nanoseconds origin, errc& ec, error_values& v) noexcept {
    ec = init_or_stop(c, origin, v);
  }

  // The largest limits the configuration accepts (account/policy.hpp).
  static constexpr std::uint64_t largest_token_limit(const config_type& c) noexcept {
    return account_policy::largest_token_limit(c.model, c.token_window, c.max_request_tokens);
  }
  static constexpr std::uint64_t largest_request_limit(const config_type& c) noexcept {
    return account_policy::largest_request_limit(c.model, c.request_window, account_policy::widest_margin(c));
  }
  account(const account&) = delete;
  account& operator=(const account&) = delete;

  const config_type& config() const noexcept { return cfg_; }

  admission_type try_admit(const request& r, nanoseconds now) noexcept {
    admission_type a;  // the only object returned, so it is built in place
    a.at = now;
    admit_into(a, r, now);
    return a;
  }
  admission_type try_admit(const request& r) noexcept { return try_admit(r, Clock::now()); }

  // Feeds the server's answer back from its parts: the status, the headers
  // read into a rate_limit_headers, and the body. A success changes nothing.
  void on_response(int status, const rate_limit_headers& h, std::string_view body, nanoseconds now) noexcept {
    observe_rate_limit_headers(h, now);
    on_response(classify(status, body), h.retry_hint(), now);
  }
  // With trust_rate_limit_headers: what remains until the stated reset, from
  // any response's headers (account/server_remaining.hpp). Else nothing.
  void observe_rate_limit_headers(const rate_limit_headers& h, nanoseconds now) noexcept { gates_.observe(h, now); }
  // The same from a classified error: `hint` is the header hint
  // (rate_limit_headers::retry_hint()), if any (account/pause.hpp).
  void on_response(const error_info& e, std::optional<nanoseconds> hint, nanoseconds now) noexcept;

  // Called after a lease gives capacity back (a permit, money): the
  // waiting room uses it to wake its head waiter. Set it before the account
  // is shared; nullptr removes it.
  void set_release_hook(void (*fn)(void*), void* ctx) noexcept {
    hook_ctx_.store(ctx, std::memory_order_relaxed);  // relaxed: published by the release store below
    hook_fn_.store(fn, std::memory_order_release);    // release: pairs with the acquire in notify_release
  }

  // Lifts a quota/balance stop (after recharging), not a pause.
  void resume() noexcept { pause_.resume(); }
  // Ends a pause now (a hint known wrong, an operator's override); counts and stops stay.
  void clear_pause() noexcept { pause_.clear(); }
  bool stopped() const noexcept { return pause_.stopped(); }
  nanoseconds paused_until() const noexcept { return nanoseconds(pause_.until()); }

  // Leases holding a concurrency unit (not units held as threads' credit).
  std::uint64_t in_flight() const noexcept {
    if (!d_.conc) return 0;
    const std::uint64_t u = d_.conc->in_use(), c = credit_.units_held();
    return u > c ? u - c : 0;
  }
  std::optional<amount> budget_remaining() const noexcept {
    return d_.money ? std::optional<amount>(d_.money->remaining()) : std::nullopt;
  }

  // Adds time a caller spent waiting because of the dimensions in `s` (each
  // counts it): the waiting room reports its sleeps here, and so can a
  // caller's own waiting loop. For metrics (stats().waited_ns_by).
  void record_wait(dimension_set s, nanoseconds d) noexcept { counters_.record_wait(s, d); }
  account_stats stats() const noexcept {
    account_stats s = counters_.snapshot();
    s.spent_nanos = d_.money ? d_.money->spent().nanos() : 0;
    return s;
  }
  // What each dimension could still admit at `now` (peek; consumes nothing).
  // Dimensions not enforced report nothing (account/limiters.hpp).
  using remaining_view = basic_remaining_view<Currency>;
  remaining_view remaining(nanoseconds now) const noexcept {
    remaining_view v;
    if (d_.conc) {
      const std::uint64_t l = d_.conc->limit(), f = in_flight();
      v.concurrency = l > f ? l - f : 0;
    }
    // Units counted in a window but held as a thread's credit can still be
    // admitted (by that thread): they count as remaining.
    d_.remaining(v, now, cfg_.max_request_tokens, [&](unsigned k) { return credit_.held_at(k, now); });
    learn_.remaining(v, now, cfg_.max_request_tokens);
    v.paused_for = account_policy::time_left(pause_.until(), now);
    v.stopped = stopped();
    return v;
  }

  // Moves the account to new limits (an upgrade after a recharge, say)
  // without losing what it has counted: windows keep their counts, buckets
  // what is owed, permits stay held. Only limits the account already
  // enforces can change (a dimension cannot appear or disappear live), and the
  // server model stays. Returns the first error; dimensions before it have
  // changed. Per-thread credit taken under the old limits goes back at each
  // thread's next take (credit.hpp); a thread that does not take again keeps
  // its old chunk: window credit until its slot leaves the window (at most a
  // window and a sub-window after the change; other threads' false refusals
  // up to 16 chunks of the larger limit until then), concurrency credit
  // (2 old chunks at most) until its next take or release.
  [[nodiscard]] errc set_limits(const tier_row& t, nanoseconds now) noexcept;

  // Snapshot and restore (account/snapshot.hpp states the format, the time
  // rule and every refusal). Restore into a new account, before sharing it:
  // restore() refuses with in_use an account that has started taking traffic
  // (any try_admit that got past the stop and pause checks to the limits,
  // admitted or not, or on a restored account one refused by a pause, whose
  // wait read the restored counts). A try_admit that races the restore is refused
  // (dimension::paused, reason::busy, no wait) until it is done; no other
  // member function may run at the same time.
  std::string snapshot(nanoseconds now, nanoseconds wall) const {
    return codec::write(cfg_, d_, credit_, pause_, learn_, gates_, now, wall);
  }
  restore_errc restore(std::string_view bytes, nanoseconds now, nanoseconds wall);

  // The policy each dimension runs, for reports.
  const char* policy(dimension d) const noexcept {
    if (const char* p = learn_.on() ? learn_.policy(d) : nullptr) return p;
    return d_.policy(d);
  }
  // The adaptive concurrency limit (adaptive_concurrency.hpp); all zero
  // when it is off.
  adaptive_view adaptive() const noexcept { return adaptive_.view(); }
  // What server_model::learn has learned (phases at `now`, the margin).
  learned_view learned(nanoseconds now) const noexcept { return learn_.view(now); }

 private:
  friend class lease<Clock, Currency>;

  // Inlined into try_admit: since 0.2.0's cold paths grew, g++ kept it (and
  // release_slot) out of line, which cost about 2 ns per admission and settle
  // at the same instruction count.
  [[gnu::always_inline]] void admit_into(admission_type& a, const request& r, nanoseconds now) noexcept {
    // How many tokens Kimi will count at admission, and what refuses outright.
    const std::uint64_t n = account_policy::assess<Currency>(r, rules_, a.refused, a.worst_case);
    a.tokens = n;
    if (!a.refused.empty()) return refuse_never(a, reason::exceeds_capacity);
    if (pause_.stopped()) {  // acquire: see pause_state
      a.refused.add(dimension::stopped);
      return refuse_never(a, reason::misconfigured);
    }
    const std::int64_t pause = pause_.until();
    const unsigned shard = detail::this_thread_shard();
    if (now.count() < pause) {
      // Paused: nothing is taken; the wait is the later of the pause's end
      // and when every other dimension would admit. A fresh account's
      // limiters are empty: the pause and its header gates. A restored one
      // (a16) holds counts: it starts, so that no restore can write them as
      // they are read. While a restore runs, the pause alone (and the
      // restore's own pause, if any, comes with it). acquire: as below.
      const unsigned char u = use_.load(std::memory_order_acquire);
      if (u == use_started || (u == use_restored && start_use()))
        return refuse_and_report(a, n, now, shard, account_policy::time_left(pause, now));
      return refuse_paused_unused(a, n, now, account_policy::time_left(pause, now), u == use_fresh);
    }
    // acquire: pairs with the release store that ends a restore, so what it
    // restored is visible here. Once traffic has started this reads the
    // same value for ever (one load on the line of the stop flag).
    if (use_.load(std::memory_order_acquire) != use_started && !start_use()) {
      a.refused.add(dimension::paused);  // a restore is being applied
      counters_.count_refusal(a.refused);
      a.decision = decision::wait(nanoseconds(0), reason::busy);
      return;
    }

    // Take every dimension in turn; roll back on the first refusal.
    if (learn_.on() || gates_.on()) return admit_learning(a, r, n, now, shard);
    lease_type& l = a.lease;
    l.rpm_s_ = l.tpm_s_ = l.tpd_s_ = l.rpm_c_ = l.tpm_c_ = 0;  // a dimension not taken leaves its slot 0
    l.model_ = r.model;
    if (d_.conc) {
      // Slots held past their deadline may come back: reap and try again.
      if (!take_unit(shard) && !(reap(now) && take_unit(shard)))
        return refuse_and_report(a, n, now, shard);
      l.holds_ = true;
      l.acc_ = this;  // so that a roll-back below releases the slot
      slots_.claim(now, shard, l.slot_, l.stamp_);
    }
    if (!take_requests(l, now, shard)) return refuse_and_report(a, n, now, shard);
    if (!take_tokens(d_.tpm_w, d_.tpm_b, credit::tpm, l.tpm_s_, l.tpm_c_, n, now, shard))
      return roll_back(a, taken_requests, n, now, shard);
    bool day_ok = true;
    std::uint64_t no_bucket = 0;  // tpd_b is never built: the daily limit is a window or a quota
    if (d_.day_q) day_ok = d_.day_q->try_acquire(n, now, l.day_t_).admitted();
    else day_ok = take_tokens(d_.tpd_w, d_.tpd_b, credit::tpd, l.tpd_s_, no_bucket, n, now, shard);
    if (!day_ok) return roll_back(a, taken_minute, n, now, shard);
    if (d_.money) {
      l.money_ = d_.money->reserve(a.worst_case);
      if (!l.money_) return roll_back(a, taken_day, n, now, shard);
    }
    l.acc_ = this;
    l.tokens_ = n;
    counters_.add_admitted(shard, n);
    a.decision = decision::admit();
  }

  // admit_into when learning from the server (account/learning_admission.hpp).
  [[gnu::noinline]] void admit_learning(admission_type& a, const request& r, std::uint64_t n, nanoseconds now,
                                        unsigned shard) noexcept;

  // Whether the account has started taking traffic (see restore()).
  // Restored: a restore succeeded and no traffic has started.
  enum : unsigned char { use_fresh, use_restoring, use_started, use_restored };
  [[gnu::noinline, gnu::cold]] bool start_use() noexcept;

  // A failed configuration may have built some dimensions and not others:
  // such an account must not admit through the ones it lacks.
  errc init_or_stop(const config_type& c, nanoseconds origin, error_values& vals) noexcept {
    const errc e = init(c, origin, vals);
    if (e != errc::ok) pause_.stop_for_good();
    return e;
  }

  errc init(const config_type& c, nanoseconds origin, error_values& vals) noexcept;
  errc build(const config_type& c, nanoseconds origin, error_values& vals) noexcept;

  void update_chunks() noexcept {
    const window* ws[credit::kinds] = {d_.strict(0), d_.strict(1), d_.strict(2)};
    credit_.update(cfg_.per_thread_credit, ws, d_.conc ? d_.conc->limit() : 0);
  }

  using learn_phase = account_policy::learn_phase;
  using learn_step = account_policy::learn_step;
  using phases = typename detail::learn_state<Clock>::phases;

  // `use_window` false: a learn dimension past its switch (learn.hpp).
  [[gnu::always_inline]] bool take_requests(lease_type& l, nanoseconds now, unsigned shard, bool use_window = true) noexcept {
    if (d_.rpm_w) return !use_window || credit_.take_window(*d_.rpm_w, credit::rpm, 1, now, l.rpm_s_, shard);
    if (d_.rpm_b) return limiters::take_spaced(*d_.rpm_b, l.rpm_s_, l.rpm_c_, 1, now);
    return true;
  }
  // Tokens: a strict window takes n (through credit); the spaced bucket
  // takes 1 and charges n - 1 (limiters.hpp).
  [[gnu::always_inline]] bool take_tokens(std::optional<window>& w, std::optional<typename limiters::bucket>& b,
                                          unsigned kind, std::uint64_t& slot, std::uint64_t& cfg, std::uint64_t n,
                                          nanoseconds now, unsigned shard, bool use_window = true) noexcept {
    if (n == 0) return true;
    if (w) return !use_window || credit_.take_window(*w, kind, n, now, slot, shard);
    if (b) return limiters::take_spaced(*b, slot, cfg, n, now);
    return true;
  }
  // Roll-backs of the request and token limits: a learn window past its
  // switch was not taken.
  void give_request(lease_type& l, phases ph, nanoseconds now) noexcept {
    if (ph.requests != learn_phase::spaced) d_.give_request(l.rpm_s_, l.rpm_c_, now);
  }
  void give_tokens(lease_type& l, phases ph, std::uint64_t n, nanoseconds now) noexcept {
    if (ph.tokens != learn_phase::spaced) limiters::give_tokens(d_.tpm_w, d_.tpm_b, l.tpm_s_, l.tpm_c_, n, n, now);
  }
  // Learn's part of an admission; unused tokens back by the lease's ticket.
  [[gnu::noinline]] bool learn_take(lease_type& l, phases ph, std::uint64_t n, nanoseconds now) noexcept;
  void give_tokens_back(std::uint64_t slot, std::uint64_t cfg, std::uint64_t reserved, std::uint64_t back,
                        nanoseconds now) noexcept;
  // Puts a changed adaptive limit into the limiter (account/feedback.hpp).
  void apply_adaptive(std::optional<std::uint64_t> changed) noexcept;
  // A lease settled with its usage (settle.hpp): the adaptive limit may grow.
  void adaptive_success() noexcept {
    if (adaptive_.on()) apply_adaptive(adaptive_.on_success(in_flight()));
  }

  // What pause_after needs, with learn's switched dimensions.
  account_policy::own_waits waits(nanoseconds now) const noexcept {
    account_policy::own_waits w = d_.waits(now);
    learn_.adjust(w, now);
    return w;
  }

  void give_day(lease_type& l, std::uint64_t n, nanoseconds now) noexcept {
    if (d_.day_q) (void)d_.day_q->refund(l.day_t_, n);
    else limiters::give_tokens(d_.tpd_w, d_.tpd_b, l.tpd_s_, 0, n, n, now);
  }

  // A refusal after some dimensions were taken: give them back, newest
  // first, then report. Out of line, so that the admission path stays small
  // enough for callers to inline.
  enum taken : unsigned char { taken_requests, taken_minute, taken_day };
  [[gnu::noinline]] void roll_back(admission_type& a, taken t, std::uint64_t n, nanoseconds now,
                                   unsigned shard) noexcept;

  void refuse_never(admission_type& a, reason why) noexcept {
    counters_.count_refusal(a.refused);
    a.decision = decision::refuse(why);
  }

  // After a refusal (everything rolled back): ask every dimension, without
  // consuming, whether and how long it would refuse. The wait is exact for
  // the refused thread (the decision contract above): its own window credit
  // is given back first, as its next attempt would before asking the
  // windows, so the windows are asked what they hold for this thread.
  void refuse_and_report(admission_type& a, std::uint64_t n, nanoseconds now, unsigned shard,
                         nanoseconds paused_for = nanoseconds(0)) noexcept;
  void refuse_paused_unused(admission_type& a, std::uint64_t n, nanoseconds now, nanoseconds paused_for, bool fresh) noexcept;

  // lease::renew: moves the lease's slot-table deadline (slot_table.hpp; defined in setup.hpp).
  bool renew_slot(lease_type& l, nanoseconds now) noexcept;
  [[gnu::always_inline]] void release_slot(lease_type& l, bool notify = true) noexcept {
    bool give = l.holds_;
    // Failure: a reaper took the word and returned the unit (slot_table.hpp).
    if (l.holds_ && l.slot_ != lease_type::no_slot) give = slots_.release(l.slot_, l.stamp_);
    unsigned shard = detail::thread_shards;
    if (give && !credit_.give_unit_fast(shard)) give_unit_slow(shard);
    l.holds_ = false;
    if (l.in_flight_) {  // answered or dropped: no longer in flight for the header gates
      gates_.answered(l.tokens_);
      l.in_flight_ = false;
    }
    l.slot_ = lease_type::no_slot;
    l.acc_ = nullptr;
    if (notify) notify_release();
  }

  // A lease destroyed or overwritten unsettled (lease.hpp).
  [[gnu::noinline]] void drop(lease_type& l) noexcept { release_slot(l); }

  // Concurrency units through credit (credit.hpp); the slow paths out of line.
  [[gnu::always_inline]] bool take_unit(unsigned s) noexcept { return credit_.take_unit_fast(s) || take_unit_slow(s); }
  [[gnu::noinline]] bool take_unit_slow(unsigned shard) noexcept { return credit_.take_unit_slow(*d_.conc, shard); }
  [[gnu::noinline]] void give_unit_slow(unsigned shard) noexcept { credit_.give_unit_slow(*d_.conc, shard); }

  // Frees the slots of leases held past lease_timeout; returns how many.
  [[gnu::noinline, gnu::cold]] std::uint64_t reap(nanoseconds now) noexcept {
    const std::uint64_t freed = slots_.reap(now, [this] { d_.conc->release_detached(1); });
    counters_.add_reclaimed(freed);
    return freed;
  }

  void notify_release() noexcept {
    // acquire: pairs with the release store in set_release_hook, so the
    // context is visible.
    if (auto fn = hook_fn_.load(std::memory_order_acquire)) fn(hook_ctx_.load(std::memory_order_relaxed));
  }

  config_type cfg_;
  account_policy::admission_rules<Currency> rules_;
  detail::slot_table slots_;
  detail::atomic<void (*)(void*)> hook_fn_{nullptr};
  detail::atomic<void*> hook_ctx_{nullptr};
  limiters d_;
  detail::learn_state<Clock> learn_;
  detail::adaptive_concurrency adaptive_;
  detail::remaining_gates gates_;
  credit credit_;
  detail::pause_state pause_;
  detail::atomic<unsigned char> use_{use_fresh};  // fresh, restoring, restored or started (see restore())
  detail::account_counters counters_;
};

TOLLGATE_END_NAMESPACE

// The parts that need the account complete: the lease's settle functions,
// and the account's own functions defined out of the class.
// #include <tollgate/account/settle.hpp>  (inlined below)
// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// account/settle.hpp: what settling a lease gives back or charges, by the
// answer the request got.
//
// Contract. settle(usage) charges the exact cost (cost.hpp) against the
// money reserved and, when refund_unused_tokens is set, gives back the
// tokens not used, by the lease's tickets (a window's slot, a bucket's
// ticket, the calendar day); tokens used beyond the reservation are charged
// as debt that later admissions wait out (the windows and the day may then
// go over their limit, never the reservation bound of the requests
// admitted); threads' window credit counted before the debt is given back
// at each one's next take (account/credit.hpp: a line whose thread does not
// take again keeps its chunk until its slot leaves the window). A cost that cannot be computed keeps the whole reservation as
// spent (the safe side). settle_rejected (a 429, which Kimi does not bill)
// frees the money and keeps the tokens counted; settle_failed (5xx,
// timeout) the same; settle_cancelled without a known usage bills the
// reserved worst case and keeps every token. Each releases the lease's
// concurrency slot, once. Thread-safe and lock-free: each step is one of the
// primitives' own operations.
//
// This header is included by account.hpp after the account; including it
// alone includes account.hpp first.
#ifndef TOLLGATE_ACCOUNT_SETTLE_HPP
#define TOLLGATE_ACCOUNT_SETTLE_HPP

// #include <tollgate/account.hpp>  (already above)
// #include <tollgate/config.hpp>  (already above)
// #include <tollgate/account/lease.hpp>  (already above)
// #include <tollgate/cost.hpp>  (already above)
// #include <tollgate/detail/arith.hpp>  (already above)

#include <cstdint>
#include <optional>

TOLLGATE_BEGIN_NAMESPACE

template <class Clock, class Currency>
basic_settle_result<Currency> lease<Clock, Currency>::settle(const usage& u, nanoseconds now) noexcept {
  basic_settle_result<Currency> res;
  if (!acc_) return res;
  account<Clock, Currency>& a = *acc_;
  const std::uint64_t used = detail::sat_add(u.prompt, u.completion);
  const std::uint64_t extra = used > tokens_ ? used - tokens_ : 0;
  a.counters_.add_used(used, extra);
  auto& d = a.d_;
  if (extra > 0) {
    res.debt_tokens = extra;  // beyond the reservation: a debt that later admissions wait out
    d.charge_debt(extra, now);
    // Threads' window credit was counted before the debt: they give it back
    // and refill through the windows, which wait the debt out (credit.hpp).
    a.credit_.bump_windows();
  } else if (a.cfg_.refund_unused_tokens && used < tokens_) {
    const std::uint64_t back = tokens_ - used;
    res.refunded_tokens = back;
    a.give_tokens_back(tpm_s_, tpm_c_, tokens_, back, now);
    if (d.day_q) (void)d.day_q->refund(day_t_, back);
    else d.give_tokens(d.tpd_w, d.tpd_b, tpd_s_, 0, tokens_, back, now);
  }
  detail::settle_money(d.money, money_, model_, u, res);
  if (holds_) a.adaptive_success();  // a success while its slot is still counted in flight
  a.release_slot(*this);
  return res;
}

template <class Clock, class Currency>
void lease<Clock, Currency>::settle_rejected(nanoseconds now) noexcept {
  (void)now;
  if (!acc_) return;
  if (acc_->d_.money && money_) acc_->d_.money->release(money_);
  acc_->release_slot(*this);
}

template <class Clock, class Currency>
void lease<Clock, Currency>::settle_failed(nanoseconds now) noexcept {
  settle_rejected(now);  // the same bookkeeping: tokens stay counted, nothing is billed
}

template <class Clock, class Currency>
basic_settle_result<Currency> lease<Clock, Currency>::settle_cancelled(const std::optional<usage>& known,
                                                                      nanoseconds now) noexcept {
  if (known) return settle(*known, now);
  basic_settle_result<Currency> res;
  if (!acc_) return res;
  account<Clock, Currency>& a = *acc_;
  a.counters_.add_used(tokens_);  // unknown: counted as the whole reservation
  if (a.d_.money && money_) {
    res.cost = money_.amount;
    (void)a.d_.money->settle(money_, money_.amount);
  }
  a.release_slot(*this);
  return res;
}

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_ACCOUNT_SETTLE_HPP
// #include <tollgate/account/refusal.hpp>  (inlined below)
// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// account/refusal.hpp: what a refused admission gives back and reports.
//
// Contract. After a refusal every dimension already taken is given back,
// newest first (roll_back), the refused thread's own window credit too, and
// then every dimension is asked, without consuming, whether and how long it
// would refuse (refuse_and_report): the wait is the largest of them, exact
// for the refused thread (account.hpp's decision contract), `never` when one
// can never admit, and the refused set names every dimension that refuses.
// A roll-back frees nothing that was free before the call, so it wakes no
// waiter. Lock-free; out of line, so that the admission path stays small.
//
// A refusal after some dimensions were taken leaves their counts as they were,
// but not their windows' heads: a strict window that a rolled-back take moved
// to a later sub-window stays there, so a later call with a `now` before that
// sub-window is refused stale (reason::exhausted, its wait to the head's
// sub-window plus the wait there) as after an admission at that time. Never
// more capacity, sometimes a longer wait for a caller whose clock lags (the
// shared account does the same; the Redis account moves no head on a refusal).
//
// This header is included by account.hpp after the account; including it
// alone includes account.hpp first.
#ifndef TOLLGATE_ACCOUNT_REFUSAL_HPP
#define TOLLGATE_ACCOUNT_REFUSAL_HPP

// #include <tollgate/account.hpp>  (already above)
// #include <tollgate/config.hpp>  (already above)
#include <cstdint>

TOLLGATE_BEGIN_NAMESPACE

template <class Clock, class Currency>
void account<Clock, Currency>::roll_back(admission_type& a, taken t, std::uint64_t n, nanoseconds now,
                                   unsigned shard) noexcept {
    lease_type& l = a.lease;
    if (t >= taken_day) give_day(l, n, now);
    if (t >= taken_minute) limiters::give_tokens(d_.tpm_w, d_.tpm_b, l.tpm_s_, l.tpm_c_, n, n, now);
    d_.give_request(l.rpm_s_, l.rpm_c_, now);
    refuse_and_report(a, n, now, shard);
  }

namespace detail {
// The header gates' waits for a request of n tokens, as rpm and tpm.
inline void note_gates(const remaining_gates& g, account_policy::refusal& rf, std::uint64_t n, nanoseconds now) noexcept {
  if (!g.on()) return;
  const nanoseconds gw[2] = {g.wait(0, 1, now), g.wait(1, n, now)};
  if (gw[0] > nanoseconds(0)) rf.note(dimension::rpm, decision::wait(gw[0]));
  if (gw[1] > nanoseconds(0)) rf.note(dimension::tpm, decision::wait(gw[1]));
}
}  // namespace detail

template <class Clock, class Currency>
void account<Clock, Currency>::refuse_and_report(admission_type& a, std::uint64_t n, nanoseconds now, unsigned shard,
                         nanoseconds paused_for) noexcept {
    // A roll-back frees nothing that was free before this call, and the
    // waiting room's head calls try_admit under the room's lock: no hook.
    if (a.lease.acc_) release_slot(a.lease, false);
    a.lease = lease_type();
    window* ws[credit::kinds] = {d_.strict(0), d_.strict(1), d_.strict(2)};
    const std::uint64_t own_units = credit_.give_back(ws, shard);
    account_policy::refusal rf(paused_for);
    if (d_.conc && d_.conc->available() == 0 && own_units == 0) rf.add(dimension::concurrency);
    const phases ph = learn_.on() ? learn_.phases_at(now) : phases{};
    // In learn's "both" phase a window's wait ends with the phase:
    // from then on the bucket alone decides, and its wait is noted below.
    d_.report(rf, n, now, learn_.window_left(0, ph.requests, now), learn_.window_left(1, ph.tokens, now));
    learn_.report(rf, n, now, ph);
    detail::note_gates(gates_, rf, n, now);
    if (d_.money && d_.money->remaining() < a.worst_case) rf.add(dimension::budget);
    a.refused = rf.refused();
    counters_.count_refusal(a.refused);
    a.decision = rf.result();
  }

// Paused before any admission (fresh) or while a restore runs: the limiters
// hold nothing to read, but a fresh account's header gates may (a 429 with
// x-ratelimit headers fed back before any traffic): the pause's end and
// theirs. The gates are words of their own, safe to read here.
template <class Clock, class Currency>
void account<Clock, Currency>::refuse_paused_unused(admission_type& a, std::uint64_t n, nanoseconds now,
                                                    nanoseconds paused_for, bool fresh) noexcept {
    account_policy::refusal rf(paused_for);
    if (fresh) detail::note_gates(gates_, rf, n, now);
    a.refused = rf.refused();
    counters_.count_refusal(a.refused);
    a.decision = rf.result();
  }

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_ACCOUNT_REFUSAL_HPP
// #include <tollgate/account/learning_admission.hpp>  (inlined below)
// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// account/learning_admission.hpp: the account's admission when it learns
// from the server: under server_model::learn (learn.hpp) a dimension past
// its switch skips its strict window and takes learn's spaced bucket, and
// with trust_rate_limit_headers the server's stated remainders gate every
// admission (server_remaining.hpp).
//
// Contract. The same all-or-nothing steps as account::admit_into, in the
// same order, then the header gates, then learn's buckets: a refusal at any
// step gives back every step before it. Settle's refund goes to the ticket
// the admission took (the window's slot before the switch, learn's bucket
// after it; during the overlap window both keep the tokens, the safe side).
// Concurrency: as the account's (lock-free; learn's words and the gates are
// the only state added, each with its own atomic protocol). Kept apart from
// admit_into so that other accounts pay one branch for it.
//
// This header is included by account.hpp after the account; including it
// alone includes account.hpp first.
#ifndef TOLLGATE_ACCOUNT_LEARNING_ADMISSION_HPP
#define TOLLGATE_ACCOUNT_LEARNING_ADMISSION_HPP

// #include <tollgate/account.hpp>  (already above)
// #include <tollgate/config.hpp>  (already above)
// #include <tollgate/account/learn.hpp>  (already above)
// #include <tollgate/account/server_remaining.hpp>  (already above)
// #include <tollgate/bucket_ticket.hpp>  (already above)
#include <cstdint>

TOLLGATE_BEGIN_NAMESPACE

template <class Clock, class Currency>
void account<Clock, Currency>::admit_learning(admission_type& a, const request& r, std::uint64_t n, nanoseconds now,
                                        unsigned shard) noexcept {
    const phases ph = learn_.phases_at(now);
    lease_type& l = a.lease;
    l.rpm_s_ = l.tpm_s_ = l.tpd_s_ = l.rpm_c_ = l.tpm_c_ = 0;  // a dimension not taken leaves its slot 0
    l.model_ = r.model;
    if (d_.conc) {
      // Slots held past their deadline may come back: reap and try again.
      if (!take_unit(shard) && !(reap(now) && take_unit(shard)))
        return refuse_and_report(a, n, now, shard);
      l.holds_ = true;
      l.acc_ = this;  // so that a roll-back below releases the slot
      slots_.claim(now, shard, l.slot_, l.stamp_);
    }
    if (!take_requests(l, now, shard, ph.requests != learn_phase::spaced)) return refuse_and_report(a, n, now, shard);
    if (!take_tokens(d_.tpm_w, d_.tpm_b, credit::tpm, l.tpm_s_, l.tpm_c_, n, now, shard,
                     ph.tokens != learn_phase::spaced)) {
      give_request(l, ph, now);
      return refuse_and_report(a, n, now, shard);
    }
    bool day_ok = true;
    std::uint64_t no_bucket = 0;  // tpd_b is never built: the daily limit is a window or a quota
    if (d_.day_q) day_ok = d_.day_q->try_acquire(n, now, l.day_t_).admitted();
    else day_ok = take_tokens(d_.tpd_w, d_.tpd_b, credit::tpd, l.tpd_s_, no_bucket, n, now, shard);
    if (!day_ok) {
      give_tokens(l, ph, n, now);
      give_request(l, ph, now);
      return refuse_and_report(a, n, now, shard);
    }
    if (d_.money) {
      l.money_ = d_.money->reserve(a.worst_case);
      if (!l.money_) {
        give_day(l, n, now);
        give_tokens(l, ph, n, now);
        give_request(l, ph, now);
        return refuse_and_report(a, n, now, shard);
      }
    }
    using gate = detail::remaining_gates::take_result;
    // Every dimension the server states is gated, enforced here or not: the
    // headers are the only limit the account knows for one it does not enforce.
    const gate gr = gates_.take(0, 1, now);
    const gate gt = gr == gate::refused ? gate::open : gates_.take(1, n, now);
    if (gr == gate::refused || gt == gate::refused || (learn_.on() && !learn_take(l, ph, n, now))) {
      if (gr == gate::taken) gates_.give(0, 1);
      if (gt == gate::taken) gates_.give(1, n);
      if (d_.money) d_.money->release(l.money_);
      give_day(l, n, now);
      give_tokens(l, ph, n, now);
      give_request(l, ph, now);
      return refuse_and_report(a, n, now, shard);
    }
    l.acc_ = this;
    l.tokens_ = n;
    if (gates_.on()) {  // in flight until answered (server_remaining.hpp)
      gates_.sent(n);
      l.in_flight_ = true;
    }
    counters_.add_admitted(shard, n);
    a.decision = decision::admit();
  }

template <class Clock, class Currency>
bool account<Clock, Currency>::learn_take(lease_type& l, phases ph, std::uint64_t n, nanoseconds now) noexcept {
    bucket_ticket rt, tt;
    if (ph.requests != learn_phase::strict && !learn_.take(0, 1, now, rt)) return false;
    if (ph.tokens != learn_phase::strict && !learn_.take(1, n, now, tt)) {
      if (ph.requests != learn_phase::strict) learn_.give(0, rt, 1, now);
      return false;
    }
    if (ph.requests == learn_phase::strict) learn_.shadow(0, 1, now);
    if (ph.tokens == learn_phase::strict) learn_.shadow(1, n, now);
    using ls = detail::learn_state<Clock>;
    if (ph.tokens == learn_phase::strict) {
      l.tpm_c_ = ls::window_ticket;
    } else if (ph.tokens == learn_phase::both) {
      l.tpm_c_ = ls::no_refund;  // two tickets, one field: both keep the tokens (the safe side)
    } else {
      l.tpm_s_ = tt.end;
      l.tpm_c_ = tt.config;
    }
    return true;
  }

template <class Clock, class Currency>
void account<Clock, Currency>::give_tokens_back(std::uint64_t slot, std::uint64_t cfg, std::uint64_t reserved, std::uint64_t back,
                        nanoseconds now) noexcept {
    using ls = detail::learn_state<Clock>;
    if (!learn_.on() || cfg == ls::window_ticket) {
      limiters::give_tokens(d_.tpm_w, d_.tpm_b, slot, learn_.on() ? 0 : cfg, reserved, back, now);
    } else if (cfg != ls::no_refund) {
      bucket_ticket t{slot, reserved, cfg};
      learn_.give(1, t, back, now);
    }
  }

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_ACCOUNT_LEARNING_ADMISSION_HPP
// #include <tollgate/account/feedback.hpp>  (inlined below)
// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// account/feedback.hpp: what the account does with the server's answers.
//
// Contract. on_response(error_info, hint, now) pauses or stops the account
// by pause.hpp's rules; under server_model::learn it first moves the named
// dimension to the margin policy (learn.hpp), so the pause follows the policy
// learned; with adaptive_concurrency a concurrency 429 or an overload lowers
// the concurrency limit (adaptive_concurrency.hpp), and apply_adaptive puts
// a changed limit into the limiter, again if it moved meanwhile, so racing
// changes end at the latest. Thread-safe and lock-free.
//
// This header is included by account.hpp after the account; including it
// alone includes account.hpp first.
#ifndef TOLLGATE_ACCOUNT_FEEDBACK_HPP
#define TOLLGATE_ACCOUNT_FEEDBACK_HPP

// #include <tollgate/account.hpp>  (already above)
// #include <tollgate/config.hpp>  (already above)
// #include <tollgate/adaptive_concurrency.hpp>  (already above)
#include <cstdint>
#include <optional>

TOLLGATE_BEGIN_NAMESPACE

template <class Clock, class Currency>
void account<Clock, Currency>::on_response(const error_info& e, std::optional<nanoseconds> hint, nanoseconds now) noexcept {
    using namespace account_policy;
    const clamped_hint h = clamp_hint(e.kind, hint, e.hint, cfg_.max_pause);
    if (h.capped) counters_.add_capped_hint();
    // Learn first: the pause then follows the policy learned.
    const learn_step learnt = learn_.on() ? learn_.learn(e.kind, now) : learn_step{};
    const response_decision r = pause_after(e.kind, h.hint, waits(now));
    if (r.action == response_action::stop) pause_.stop();
    else if (r.action == response_action::pause) pause_.pause_for(r.pause, now);
    if (learn_.on()) learn_.guard(learnt, nanoseconds(detail::sat_offset(now.count(), static_cast<std::uint64_t>(r.pause.count()))));
    if (adaptive_.on() && account_policy::shrinks_concurrency(e))
      apply_adaptive(adaptive_.on_signal(in_flight(), counters_.snapshot().admitted));
  }

template <class Clock, class Currency>
void account<Clock, Currency>::apply_adaptive(std::optional<std::uint64_t> changed) noexcept {
    if (!changed || !d_.conc) return;
    for (int i = 0; i < 8; ++i) {
      const std::uint64_t l = adaptive_.limit();
      (void)d_.conc->set_limit(l);  // 1 .. 2^32 - 1 (adaptive_concurrency::init)
      if (adaptive_.limit() == l) break;
    }
    update_chunks();
  }

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_ACCOUNT_FEEDBACK_HPP
// #include <tollgate/account/setup.hpp>  (inlined below)
// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// account/setup.hpp: building an account from its configuration, moving it
// to new limits, restoring it from a snapshot, and how it starts taking
// traffic.
//
// Contract. build() makes every dimension the configuration names, or stops
// the account for good with the first error (init_or_stop): an account never
// admits through a dimension it failed to build. set_limits keeps what every
// dimension has counted (account.hpp). restore() applies a snapshot only to
// an account that has not started taking traffic (start_use: one
// compare-exchange from fresh or restored to started), and an admission that
// races it is refused as busy (account.hpp, account/snapshot.hpp).
//
// This header is included by account.hpp after the account; including it
// alone includes account.hpp first.
#ifndef TOLLGATE_ACCOUNT_SETUP_HPP
#define TOLLGATE_ACCOUNT_SETUP_HPP

// #include <tollgate/account.hpp>  (already above)
// #include <tollgate/config.hpp>  (already above)
#include <cstdint>
#include <string_view>

TOLLGATE_BEGIN_NAMESPACE

template <class Clock, class Currency>
errc account<Clock, Currency>::init(const config_type& c, nanoseconds origin, error_values& vals) noexcept {
    const errc e = build(c, origin, vals);
    rules_ = account_policy::admission_rules<Currency>::of(c);  // as built (a failed build may lack some)
    rules_.spaced_tokens = (d_.margin_tokens && d_.tpm_b) || learn_.has(1);
    rules_.budget = d_.money.has_value();
    return e;
  }

template <class Clock, class Currency>
errc account<Clock, Currency>::build(const config_type& c, nanoseconds origin, error_values& vals) noexcept {
    cfg_ = c;
    errc e = errc::ok;
    if (c.max_pause < nanoseconds(0) || c.spacing_margin < nanoseconds(0)) return errc::zero_period;
    if ((e = account_policy::check_limits(c, c.rpm, c.tpm, vals)) != errc::ok) return e;
    if (auto v = c.concurrency.value()) {
      d_.conc.emplace(*v, e);
      if (e != errc::ok) return e;
      slots_.allocate(*v, c.lease_timeout, origin);  // once, here: never on the admission path
    }
    if ((e = d_.build(c, origin)) != errc::ok) return e;
    if ((e = learn_.build(c, origin)) != errc::ok) return e;
    if (c.trust_rate_limit_headers) gates_.enable();
    if (c.adaptive_concurrency) {
      if (!d_.conc) return errc::zero_count;
      if ((e = adaptive_.init(d_.conc->limit(), c.concurrency_floor)) != errc::ok) return e;
    }
    const window* ws[credit::kinds] = {d_.strict(0), d_.strict(1), d_.strict(2)};
    for (unsigned k = 0; k < credit::kinds; ++k)
      if (ws[k] && ws[k]->unit() > 0) credit_.set_unit(k, ws[k]->unit());
    window* const own[credit::kinds] = {d_.strict(0), d_.strict(1), d_.strict(2)};
    credit_.bind(own);
    update_chunks();
    // Once, here: limits raised later (set_limits) may need it.
    if (c.per_thread_credit && (d_.rpm_w || d_.tpm_w || d_.tpd_w || d_.conc)) credit_.allocate();
    return errc::ok;
  }

template <class Clock, class Currency>
errc account<Clock, Currency>::set_limits(const tier_row& t, nanoseconds now) noexcept {
    if (!d_.same_dimensions(t)) return errc::zero_count;  // a dimension would appear or disappear
    errc e = errc::ok;
    error_values ignored;
    if ((e = account_policy::check_limits(cfg_, t.rpm, t.tpm, ignored)) != errc::ok) return e;
    if (d_.conc && (e = d_.conc->set_limit(*t.concurrency.value())) != errc::ok) return e;
    if (adaptive_.on()) {
      if ((e = adaptive_.set_max(*t.concurrency.value())) != errc::ok) return e;
      apply_adaptive(adaptive_.limit());
    }
    update_chunks();  // before any later error: credit taken under the old limit goes back
    if ((e = d_.set_rate_limits(cfg_, t, now)) != errc::ok) return e;
    if (learn_.on() && (e = learn_.set_limits(t, now)) != errc::ok) return e;
    cfg_.concurrency = t.concurrency;
    cfg_.rpm = t.rpm;
    cfg_.tpm = t.tpm;
    cfg_.tpd = t.tpd;
    update_chunks();
    return errc::ok;
  }

template <class Clock, class Currency>
account_restore_errc account<Clock, Currency>::restore(std::string_view bytes, nanoseconds now, nanoseconds wall) {
    unsigned char before = use_fresh;
    // acq_rel: acquire pairs with the release store that ended an earlier
    // restore; the claim itself publishes nothing (admissions that see it
    // refuse without reading state). Failure: relaxed, the value is all we use.
    if (!use_.compare_exchange_strong(before, use_restoring, std::memory_order_acq_rel, std::memory_order_relaxed) &&
        (before != use_restored ||
         !use_.compare_exchange_strong(before, use_restoring, std::memory_order_acq_rel, std::memory_order_relaxed)))
      return restore_errc::in_use;
    const restore_errc e = codec::restore(cfg_, d_, credit_, pause_, learn_, gates_, bytes, now, wall);
    // release: pairs with the acquire load in try_admit, so an admission that
    // sees the account fresh or restored sees everything restored. A refused
    // restore changed nothing: the account is as it was.
    use_.store(e == restore_errc::ok ? static_cast<unsigned char>(use_restored) : before, std::memory_order_release);
    return e;
  }

template <class Clock, class Currency>
bool account<Clock, Currency>::start_use() noexcept {
    unsigned char expected = use_fresh;
    // acq_rel: acquire as in try_admit (the restore's release store); a
    // failure sees `restoring`, `restored` or `started`, read with acquire for
    // the same reason when it is `started` by another admission (no state to see).
    if (use_.compare_exchange_strong(expected, use_started, std::memory_order_acq_rel, std::memory_order_acquire))
      return true;
    // acq_rel/acquire: as above, from a restored account.
    if (expected == use_restored &&
        use_.compare_exchange_strong(expected, use_started, std::memory_order_acq_rel, std::memory_order_acquire))
      return true;
    return expected == use_started;
  }

template <class Clock, class Currency>
bool account<Clock, Currency>::renew_slot(lease_type& l, nanoseconds now) noexcept {
    if (!l.holds_ || l.slot_ == lease_type::no_slot) return false;
    if (slots_.renew(l.slot_, l.stamp_, now)) return true;
    l.holds_ = false;  // reaped: the reaper gave the unit back
    return false;
  }

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_ACCOUNT_SETUP_HPP

#endif  // TOLLGATE_ACCOUNT_HPP
// #include <tollgate/waiting_room.hpp>  (inlined below)
// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// waiting_room.hpp: blocking, fair admission to an account.
//
// admit(request, deadline, cancel) returns an admission, waiting for it if
// need be. Waiters are served strictly in arrival order: only the one at the
// head of the line asks the account; the others sleep on their own condition
// variable and are woken one at a time, when the head leaves. The head sleeps
// for exactly the account's retry_after, or, when the account is waiting for
// a permit or money to come back, until a lease releases capacity (the room
// hooks the account's release notification) or its deadline. So a large
// request is not starved by small ones arriving after it, and 300 agents let
// loose at once do not stampede: one asks, 299 sleep.
//
// A waiter leaves without an admission when its deadline passes or when its
// cancel flag is set (call notify() after setting it: it wakes every waiter,
// so a cancelled one leaves even behind the head); it then returns the
// last refusal the account gave (or a `later` with reason::busy if it never
// asked). Admissions happen only before the deadline: the account is asked
// only at a Clock time < deadline with the flag seen clear, so a call that
// arrives with its deadline past or its flag set is never admitted. (A flag
// set while the account is being asked is seen at the next check.)
//
// Concurrency contract. admit() and notify() are thread-safe. The waiting
// path takes the room's mutex (this is where callers block anyway); the
// account's try_admit stays lock-free for callers that do not wait. A room
// must outlive its waiters and must not outlive its account; one room per
// account (it installs the account's release hook).
#ifndef TOLLGATE_WAITING_ROOM_HPP
#define TOLLGATE_WAITING_ROOM_HPP

// #include <tollgate/config.hpp>  (already above)
// #include <tollgate/account.hpp>  (already above)

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>

TOLLGATE_BEGIN_NAMESPACE

// Where one call stood in a waiting room: numbers the room gives under its
// lock, 1, 2, ... in the order calls arrived and in the order they left
// (admitted or not). Serving in arrival order means: when a call is
// admitted, every call that arrived before it has already left.
struct room_visit {
  std::uint64_t arrival = 0;
  std::uint64_t departure = 0;
};

template <class Clock = steady_clock, class Currency = usd_tag>
class waiting_room {
 public:
  using admission_type = admission<Clock, Currency>;
  explicit waiting_room(account<Clock, Currency>& a) : acct_(a) { acct_.set_release_hook(&waiting_room::on_release, this); }
  ~waiting_room() { acct_.set_release_hook(nullptr, nullptr); }
  waiting_room(const waiting_room&) = delete;
  waiting_room& operator=(const waiting_room&) = delete;

  // `deadline` is a time of the account's Clock. `visit`, if given, receives
  // this call's arrival and departure numbers (for tracing).
  admission_type admit(const request& r, nanoseconds deadline, const std::atomic<bool>* cancel = nullptr,
                       room_visit* visit = nullptr) {
    const nanoseconds arrived = Clock::now();
    struct account_time {  // adds the time spent here to the room's counter, on every way out
      waiting_room& room;
      nanoseconds from;
      ~account_time() {
        const nanoseconds d = Clock::now() - from;
        // relaxed: a statistic.
        room.waited_ns_.fetch_add(d.count() > 0 ? d.count() : 0, std::memory_order_relaxed);
        room.served_.fetch_add(1, std::memory_order_relaxed);
      }
    } timing{*this, arrived};
    waiter me;
    me.visit = visit;
    std::unique_lock<std::mutex> lock(m_);
    line_.push_back(&me);
    if (visit) visit->arrival = arrivals_ + 1;
    ++arrivals_;
    admission_type last;
    last.decision = decision::wait(nanoseconds(0), reason::busy);
    for (;;) {
      const bool give_up = (cancel && cancel->load(std::memory_order_acquire)) || Clock::now() >= deadline;
      if (line_.front() != &me) {
        if (give_up) return leave(me, std::move(last));
        sleep_until(lock, me, deadline);
        continue;
      }
      // The head that gives up leaves without asking (a04: asking once more
      // admitted calls past their deadline or cancelled).
      const nanoseconds asked = Clock::now();
      if (give_up || asked >= deadline) return leave(me, std::move(last));
      last = acct_.try_admit(r, asked);
      if (last || last.decision.never()) return leave(me, std::move(last));
      const nanoseconds w = last.decision.retry_after();
      // A time to wait for, or (a permit, money) a release to wait for.
      sleep_until(lock, me, w > nanoseconds(0) && asked + w < deadline ? asked + w : deadline);
      // From the refusal to the next try: the time these dimensions cost.
      acct_.record_wait(last.refused, Clock::now() - asked);
    }
  }

  // Wakes every waiter to re-check its cancel flag and deadline, and the head
  // to ask the account again: call it after setting a cancel flag, after
  // capacity came back by other means than a lease, or after moving a manual
  // clock. (A lease's release wakes the head alone.)
  void notify() {
    std::lock_guard<std::mutex> lock(m_);
    for (waiter* w : line_) w->cv.notify_one();
  }

  // Total time callers spent in admit(), in the account's Clock, and how
  // many calls returned (for metrics; relaxed counters). The time the head
  // of the line slept, per dimension that refused it, is in the account's
  // stats().waited_ns_by; the rest of waited() is mostly time spent in line
  // behind the head.
  nanoseconds waited() const noexcept { return nanoseconds(waited_ns_.load(std::memory_order_relaxed)); }
  std::uint64_t served() const noexcept { return served_.load(std::memory_order_relaxed); }

  // Waiters in line now (a snapshot).
  std::size_t waiting() {
    std::lock_guard<std::mutex> lock(m_);
    return line_.size();
  }

 private:
  struct waiter {
    std::condition_variable cv;
    room_visit* visit = nullptr;
  };

  static void on_release(void* self) {
    waiting_room& room = *static_cast<waiting_room*>(self);
    std::lock_guard<std::mutex> lock(room.m_);
    if (!room.line_.empty()) room.line_.front()->cv.notify_one();  // only the head asks the account
  }

  admission_type leave(waiter& me, admission_type&& a) {
    ++departures_;
    if (me.visit) me.visit->departure = departures_;
    const bool was_head = line_.front() == &me;
    for (auto it = line_.begin(); it != line_.end(); ++it)
      if (*it == &me) {
        line_.erase(it);
        break;
      }
    if (was_head && !line_.empty()) line_.front()->cv.notify_one();  // the next one's turn: wake it alone
    return std::move(a);
  }

  // Sleeps until woken or `until` (a time of Clock), converted to the
  // standard steady clock the condition variable waits on.
  void sleep_until(std::unique_lock<std::mutex>& lock, waiter& me, nanoseconds until) {
    const nanoseconds left = until - Clock::now();
    if (left <= nanoseconds(0)) return;
    // Cap a single sleep so a Clock that is not real time (a manual clock)
    // still re-checks its deadline now and then.
    const nanoseconds cap = std::chrono::seconds(1);
    me.cv.wait_for(lock, left < cap ? left : cap);
  }

  account<Clock, Currency>& acct_;
  std::atomic<std::int64_t> waited_ns_{0};
  std::atomic<std::uint64_t> served_{0};
  std::mutex m_;
  std::deque<waiter*> line_;
  std::uint64_t arrivals_ = 0, departures_ = 0;  // guarded by m_
};

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_WAITING_ROOM_HPP
// #include <tollgate/keyed_buckets.hpp>  (inlined below)
// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// keyed_buckets.hpp: one GCRA token bucket per key (an end user, a tenant,
// an API key) in a fixed-capacity table that never allocates after its
// construction and never resets a live bucket.
//
// Table. `capacity` entries of 72 bytes (a 64-byte line each, so that two
// threads' keys never share one, and an 8-byte probe hint), allocated once
// by the constructor (memory: 72 x capacity bytes plus the class list;
// keyed/claim.hpp says why the line and the hint). A key (a 64-bit id or a
// string_view) is hashed with SipHash-1-3 under a 128-bit seed the user
// supplies; the entry stores the 64-bit hash, not the key. Linear probing
// over a window of `window` entries from the hash's home (16 unless told):
// a new key takes the window's first unused entry, or else the first one
// that may be reclaimed (below).
// Each entry's limit (rate, burst) is one of a small list of limit classes
// (at most 64), chosen by the call that claims the entry for its key; later
// calls for a live key use the class it was claimed with.
//
// Guarantee. For every key, over any interval t of supplied timestamps, the
// admissions on its entry are at most B + floor(t / T) (the token_bucket
// bound of its class, same exact tick arithmetic), across evictions: an
// entry is reclaimed for another key only when its bucket is full at the
// reclaimer's `now` (TAT not after it), which is the state a fresh bucket
// has, and a reclaimed entry starts with its TAT at the latest `now` any
// claim has seen, so a key that comes back with an earlier `now` owes the
// difference rather than getting units twice. A live entry (not full) is
// never reset, except by erase(). When every entry of a new key's window is
// live, the key is refused with keyed_status::table_full (its decision is
// `later` with the time until the first of those entries is full again or
// past its class's horizon, assuming nothing else is admitted on it; zero
// with reason::busy when none can say; `never` when that time is past the
// new key's class's horizon); a flood of new keys therefore changes no
// live entry. keyed_overflow.hpp sends such keys to a limiter you name.
//
// Collisions. Two keys with the same 64-bit hash share one entry and its
// limit: the conservative side (each may be refused for what the other
// took; neither gets more than the shared limit). Without the seed, a client
// can do no better than chance as long as SipHash-1-3 is a keyed
// pseudo-random function (no attack that does better is known; it has fewer
// rounds of margin than SipHash-2-4, the format-1 hash, see keyed/key.hpp):
// with m live entries a new key shares one with probability at most
// m / 2^64 (5.4e-14 at a million), and N keys over the table's life share
// any entry with probability at most N^2 / 2^65. A key is refused as
// table_full only when all `window` entries from its home are live and not
// full. Linear probing clusters entries, so this is far likelier than the
// a^window of spread entries: measured with the default window of 16 on
// 4096 entries (test "keyed: window occupancy", which prints it), a new key
// is refused at load 0.5 about 0.5 % of the time, at 0.75 about 13 %, at
// 0.9 about 47 % (one placement; another seed or hash moves the first). Size the table for at most half full of live entries (a
// live entry is one that owes: keys active within about burst x interval).
// Ids and strings are hashed under different derived keys, so an id never
// collides with the 8-byte string of its bytes by construction.
//
// Time. Ticks are counted from the table's origin (times before it count as
// it, and their waits are counted from `now`), at each class's scale s. A class counts exactly up to its horizon,
// horizon(cls) = floor((2^62 - 1 - B x T ticks) / s) ns after the origin,
// at least 10 years (token_bucket's rule). Unlike token_bucket the epoch
// never moves, so a class ends there: a `now` past its horizon is refused
// `never` (reason::exceeds_capacity: nothing more can ever be granted),
// for a key of that class and for a new key claiming it (which then takes
// no entry), and so is a refusal before it whose exact wait would end past
// it (table_full included). At the horizon itself decisions are still
// exact. An entry of a class past its horizon is full, as a fresh one is
// there (both refuse everything), and may be reclaimed. A `now` earlier
// than a key's state is evaluated at face value: never more permissive
// than the latest time seen.
//
// Decisions. n == 0 is admitted and changes nothing (and claims nothing).
// Past a class's horizon everything else is `never` (see Time).
// n > the class burst is `never`. Otherwise a refusal writes nothing to the
// bucket and gives the exact wait. A bad class index is refused with
// keyed_status::bad_class. A new key asking for more than its class's
// burst, or past its horizon, is refused without claiming an entry; one
// refused by its fresh bucket (a `now` behind the latest one seen) has
// claimed one, which owes nothing beyond that latest time and is reclaimed
// once full.
//
// Concurrency contract. Every member function is thread-safe. Admission on
// a live key is lock-free and takes one read-modify-write, the bucket's
// CAS: the entry is found by loads alone (its control word holds state,
// class, a count of pins and a 40-bit version that every pin, claim and
// erase advances; construction and restore() leave it 0; the hash and
// claim generation are read between two loads of it that must agree). An
// evictor may reclaim a live entry with no pins whose bucket is full at its
// `now`: it first seals the bucket (one CAS of the TAT word from the full
// value it checked to a seal naming the control word's version and a
// ticket of its own: no TAT has the top bit a seal has), then claims the entry with a CAS expecting that
// control word. The TAT word orders an admission and a seal: an admission's
// CAS that lands first changes the value the seal expects (the seal fails);
// an admission that finds a seal pins the entry (a CAS that advances the
// version, which fails the claim if it has not landed, and keeps further
// claims off the entry), puts in the seal's place the TAT a claim would
// start with (the latest time any claim has seen, which every sealer raised
// to its `now` before sealing: on the safe side of what the full bucket
// owed), admits and unpins; if the claim landed first, the key was full and
// is claimed again elsewhere, losing nothing. An evictor whose claim CAS
// fails puts back the value it sealed, if its seal still stands (seals are
// never equal, so one evictor's undo cannot land on another's seal). An
// admission's CAS that lands on a new occupant (its expected value equal,
// by chance, to the new bucket's start) is seen by the claim generation read
// after it, and the admission looks again: the new occupant keeps that one
// charge (the conservative side), and so does a key whose admission raced
// its own entry's eviction by a `now` far enough ahead to find it full
// again, or its erase (it is charged again in its new entry). Refunds,
// snapshots and the first admission of a claimed entry pin it, so no claim
// can land under them. (The version wraps after 2^40 steps, a seal's
// ticket after 2^22 seals of the table: a thread would have to stall
// between two loads or a load and its CAS for that many operations to be
// fooled.) Claiming a new key is lock-free
// too, except that two claims of one new key racing each other may withdraw
// each other and retry (obstruction-free); no thread ever waits for
// another, and a key never holds two entries. A claimer stalled between its
// claim and its publish keeps that one entry out of use until it runs again
// (others withdraw its claim, only it frees the entry); one stalled between
// its seal and its claim keeps that entry from other claims until it runs
// again or the key's next admission (claims pass a seal that may still
// land, rather than fail it: two claimers failing each other's could go on
// for ever).
// erase() is lock-free: it takes the key out at once; an admission already
// in progress finishes on the erased bucket (as if it came before the
// erase) or, if the entry has been claimed again meanwhile, looks again. Peeks
// (available, contains) may be stale the moment they return, and may read
// a newer occupant of a reclaimed entry (which shows less, never more).
// The state is plain lock-free 64-bit atomics (no pointers), but this class
// allocates its own storage: it is not placeable in shared memory yet.
#ifndef TOLLGATE_KEYED_BUCKETS_HPP
#define TOLLGATE_KEYED_BUCKETS_HPP

// #include <tollgate/config.hpp>  (already above)
// #include <tollgate/clock.hpp>  (already above)
// #include <tollgate/decision.hpp>  (already above)
// #include <tollgate/detail/arith.hpp>  (already above)
// #include <tollgate/detail/atomic.hpp>  (already above)
// #include <tollgate/detail/gcra_params.hpp>  (already above)
// #include <tollgate/detail/siphash.hpp>  (already above)
// #include <tollgate/error.hpp>  (already above)
// #include <tollgate/keyed/claim.hpp>  (inlined below)
// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// keyed/claim.hpp: the entry protocol of the keyed tables (keyed_buckets,
// keyed_permits, keyed_budgets, keyed_windows), generic over what an entry
// holds: pinning a key's live entry, claiming a free or reusable entry for
// a new key, erasing, and the peek. The tables' headers state their
// contracts and bounds; each step below says which atomic operation it
// pairs with.
//
// An entry is a control word, the key's 64-bit hash, a claim generation
// and the table's State (atomics only, written by the table while the
// entry is pinned or owned by its claimer), alone on its 64-byte line: an
// admission writes its entry's line twice or more, and two threads' keys
// sharing a line (or a probe reading another key's control word) cost a
// line transfer per call (measured: up to 3x the time of one thread's
// call at two threads, bench/bench_limiters.cpp's keyed diagnostics).
// Beside the entries, a hint per entry repeats its latest claim's hash on
// lines that only claims write, so a probe passes other keys' entries
// without reading their control words. A table decides when a live,
// unpinned entry may be reused (its state equals a fresh one at the
// claimer's `now`) through the callable it hands to claim(); a pin held
// beyond one call (a permit, a budget reservation) keeps its entry out of
// every claim and, once erased, keeps it erasing until the pin goes.
//
// The control word: state (3 bits), class (6), pins (15), version (40).
// A claim goes empty/free/reusable-live -> claiming (owned: hash written)
// -> hashed (its hash is final for this version; another claim of the key
// may now withdraw it) -> live; or hashed -> withdrawn (by another) -> free
// (by the owner only, so that its state stores cannot land on a new
// occupant), or hashed -> free (by the owner, on finding the key live).
// erase(): live -> free, or live -> erasing while pins are held (no new
// pins), and the last unpin frees it. Every pin, claim and erase advances
// the version; construction leaves it 0.
#ifndef TOLLGATE_KEYED_CLAIM_HPP
#define TOLLGATE_KEYED_CLAIM_HPP

// #include <tollgate/config.hpp>  (already above)
// #include <tollgate/detail/arith.hpp>  (already above)
// #include <tollgate/detail/atomic.hpp>  (already above)

#include <cstddef>
#include <cstdint>
#include <memory>
#include <thread>

TOLLGATE_BEGIN_NAMESPACE
namespace detail {

enum class claim_outcome { claimed, retry, full };

template <class State>
class keyed_slots {
 public:
  static constexpr std::uint64_t st_empty = 0, st_claiming = 1, st_hashed = 2, st_live = 3, st_free = 4,
                                 st_withdrawn = 5, st_erasing = 6;
  static constexpr std::uint64_t st_mask = 7;
  static constexpr unsigned cls_shift = 3, pin_shift = 9, ver_shift = 24;
  static constexpr std::uint64_t cls_mask = std::uint64_t{63} << cls_shift;
  static constexpr std::uint64_t pin_one = std::uint64_t{1} << pin_shift;
  static constexpr std::uint64_t pin_mask = std::uint64_t{0x7fff} << pin_shift;
  static constexpr std::uint64_t ver_one = std::uint64_t{1} << ver_shift;
  static constexpr std::uint64_t ver_mask = ~std::uint64_t{0} << ver_shift;
  // Pins one entry may hold beyond a call (permits, reservations): the rest
  // of the 32767 are for calls in progress, so pin() never waits on held
  // ones unless 16384 calls are in progress on one entry at once.
  static constexpr std::uint64_t max_held = 16383;

  static constexpr std::uint64_t state_of(std::uint64_t c) noexcept { return c & st_mask; }
  static constexpr std::size_t class_of(std::uint64_t c) noexcept {
    return static_cast<std::size_t>((c & cls_mask) >> cls_shift);
  }
  static constexpr std::uint64_t pins_of(std::uint64_t c) noexcept { return (c & pin_mask) >> pin_shift; }

  // `claim` counts the entry's claims (64 bits: a ticket would have to be
  // held across 2^64 claims of one entry to name a later incarnation). Only
  // the owner of a claiming entry writes it; tickets carry it so a refund
  // lands only in the incarnation that was charged.
  struct alignas(64) entry {
    atomic<std::uint64_t> ctl{0};
    atomic<std::uint64_t> hash{0};
    atomic<std::uint64_t> claim{0};
    State s;
  };

  void init(std::size_t capacity, std::size_t window) {
    entries_.reset(new entry[capacity]);
    hints_.reset(new atomic<std::uint64_t>[capacity]);
    for (std::size_t s = 0; s < capacity; ++s) set_hint(s, 0);
    capacity_ = capacity;
    window_ = window < capacity ? window : capacity;
  }
  std::size_t capacity() const noexcept { return capacity_; }
  std::size_t window() const noexcept { return window_; }
  entry& operator[](std::size_t s) const noexcept { return entries_[s]; }
  // Bytes an entry takes: its line and its hint.
  static constexpr std::size_t bytes_per_entry() noexcept { return sizeof(entry) + sizeof(atomic<std::uint64_t>); }
  // Construction and restore() only, before sharing: the hint of an entry
  // restore() writes (or empties). relaxed: the hand-off publishes it.
  void set_hint(std::size_t s, std::uint64_t h) noexcept { hints_[s].store(h, std::memory_order_relaxed); }

  std::size_t home_of(std::uint64_t h) const noexcept {
    return static_cast<std::size_t>((static_cast<u128>(h) * capacity_) >> 64);
  }
  std::size_t at(std::size_t home, std::size_t i) const noexcept {
    const std::size_t s = home + i;
    return s >= capacity_ ? s - capacity_ : s;
  }

  // Finds the key's live entry and pins it (one more pin, version
  // advanced). The entry's hash is read between a load of the control word
  // and a CAS that expects it unchanged: a new occupant writes its hash only
  // after a claim CAS that advances the version, and our CAS (release)
  // precedes that claim CAS (acquire) in the word's order, so the hash we
  // compared cannot be the new occupant's. `pins` is the pin count before
  // ours.
  //
  // First the hint (see may_hold): an entry whose hint names another key is
  // passed without touching its line.
  bool pin(std::uint64_t h, std::size_t& slot, std::size_t& cls, std::uint64_t* pins = nullptr) noexcept {
    const std::size_t home = home_of(h);
    for (std::size_t i = 0; i < window_; ++i) {
      const std::size_t s = at(home, i);
      if (!may_hold(s, h)) continue;
      entry& e = entries_[s];
      // acquire: pairs with the publish CAS (release) of the occupant, so
      // its hash and initial state are visible.
      std::uint64_t c = e.ctl.load(std::memory_order_acquire);
      for (;;) {
        const std::uint64_t st = state_of(c);
        // Slots never return to empty, and a claim takes an entry at or
        // before the first empty one of its window, so no live entry of this
        // key lies past an empty one. (A stale read only sends us to
        // claim(), which rechecks.)
        if (st == st_empty) return false;
        // relaxed: validated by the CAS below, as explained above.
        if (st != st_live || e.hash.load(std::memory_order_relaxed) != h) break;
        if ((c & pin_mask) == pin_mask) {  // 32767 pins: wait for one of the calls in progress
          std::this_thread::yield();
          c = e.ctl.load(std::memory_order_acquire);  // acquire: as above
          continue;
        }
        // acq_rel: release orders our hash read before any later claim CAS
        // (acquire) on this word; acquire pairs with the publish CAS so the
        // state's value is visible. acquire on failure: as the load.
        if (e.ctl.compare_exchange_weak(c, c + pin_one + ver_one, std::memory_order_acq_rel,
                                        std::memory_order_acquire)) {
          slot = s;
          cls = class_of(c);
          if (pins != nullptr) *pins = pins_of(c);
          return true;
        }
      }
    }
    return false;
  }

  // Finds the key's live entry without pinning it (keyed_buckets'
  // admissions): its slot, control word and claim generation, read as one
  // snapshot. The hash and the generation are read between two loads of the
  // control word that must agree: a new occupant writes them (releases)
  // only after a claim CAS that changes the word, and our loads of them
  // (acquires) that saw its writes would make the second load see that
  // CAS or later. Versions do not repeat (2^40), so equal words mean no
  // claim came between. What the caller then does with the entry it
  // checks itself (keyed_buckets.hpp: the seal and the generation).
  bool find(std::uint64_t h, std::size_t& slot, std::uint64_t& ctl, std::uint64_t& gen) const noexcept {
    const std::size_t home = home_of(h);
    for (std::size_t i = 0; i < window_; ++i) {
      const std::size_t s = at(home, i);
      if (!may_hold(s, h)) continue;
      entry& e = entries_[s];
      // acquire: pairs with the publish CAS of the occupant, as in pin().
      std::uint64_t c = e.ctl.load(std::memory_order_acquire);
      for (;;) {
        const std::uint64_t st = state_of(c);
        if (st == st_empty) return false;  // as in pin()
        // acquire (both): pair with the claimer's release stores, see above.
        if (st != st_live || e.hash.load(std::memory_order_acquire) != h) break;
        const std::uint64_t g = e.claim.load(std::memory_order_acquire);
        // acquire: ordered after the loads above; pairs as the first load.
        const std::uint64_t again = e.ctl.load(std::memory_order_acquire);
        if (again != c) {  // a pin, claim or erase came between: look again
          c = again;
          continue;
        }
        slot = s;
        ctl = c;
        gen = g;
        return true;
      }
    }
    return false;
  }

  static void unpin(entry& e) noexcept {
    // release: pairs with an evictor's acquire load of ctl (claim): our
    // state writes happen before its freshness read. An RMW, so it keeps
    // the release sequence of the publish and of other unpins.
    const std::uint64_t was = e.ctl.fetch_sub(pin_one, std::memory_order_release);
    if (state_of(was) == st_erasing && pins_of(was) == 1) {
      // The last pin on an erased entry frees it; nobody else can change an
      // erasing entry with no pins. seq_cst exchange (an RMW, a release):
      // our state writes come before the next claim's CAS.
      (void)e.ctl.exchange(((was - pin_one) & ver_mask) | st_free, std::memory_order_seq_cst);
    }
  }

  // The latest time (ns after the table's origin) seen by any claim: the
  // start of claimed entries, so that a key cannot get units twice by
  // coming back earlier.
  void note_time(std::uint64_t t) noexcept {
    // relaxed: the value travels to a later claimer of a key we evict
    // through our claim CAS (sequenced after this) and that claimer's scan
    // load of the same control word (seq_cst, an acquire; every later
    // change of the word is an RMW, so the release sequence holds), which
    // precedes its read in start_time().
    std::uint64_t w = latest_.load(std::memory_order_relaxed);
    // relaxed / relaxed: a max, only ever raised.
    while (w < t && !latest_.compare_exchange_weak(w, t, std::memory_order_relaxed, std::memory_order_relaxed)) {
    }
  }
  std::uint64_t start_time() const noexcept {
    return latest_.load(std::memory_order_relaxed);  // relaxed: see note_time()
  }
  // restore() only, before sharing. relaxed: as in note_time().
  void set_start_time(std::uint64_t t) noexcept { latest_.store(t, std::memory_order_relaxed); }

  // Claims an entry of the window for the key, published pinned; or says
  // to retry (the key appeared, or our claim lost a same-key race) or that
  // the window is full of entries that cannot be reused.
  // `reusable(entry&, cls)` is asked about live entries with no pins
  // before the first unused one, until one says yes (the table's freshness
  // rule; it may note when the entry will be reusable); `start(entry&)`
  // initialises the state of the claimed entry, after the scan and before
  // the publish, from start_time(). `since` is the claimer's `now` (ns after the origin).
  //
  // Two claimers of one key must not both publish. Each, owning its entry,
  // writes state and hash, then marks it hashed (seq_cst CAS), then scans
  // the window (seq_cst loads) for the key: in the single total order of
  // those steps the later marker's scan sees the earlier one's mark (or its
  // live entry). Seeing a live entry of the key, a claimer withdraws its
  // own; seeing another hashed claim of the key, it withdraws that one (a
  // CAS on its control word: its owner's publish CAS then fails, and it
  // retries and finds ours). So two claims never both publish, and no
  // claimer waits for another: a stalled claim is withdrawn by the next
  // claimer of its key. (Two claimers that withdraw each other both retry:
  // claims of one new key are obstruction-free, not lock-free.)
  template <class Reusable, class Start>
  claim_outcome claim(std::uint64_t h, std::size_t cls, std::uint64_t since, std::size_t& slot, Reusable&& reusable,
                      Start&& start) noexcept {
    auto yes = [](entry&, std::uint64_t) { return true; };
    auto none = [](entry&, std::uint64_t) {};
    return claim(h, cls, since, slot, reusable, start, yes, none);
  }
  // The same, and a table whose admissions do not pin (keyed_buckets) seizes
  // the live entry it is about to reclaim: `seize(entry&, ctl)` after
  // note_time and before the claim CAS (false: retry), `unseize(entry&,
  // ctl)` when that CAS then fails. keyed_buckets.hpp states the protocol.
  template <class Reusable, class Start, class Seize, class Unseize>
  claim_outcome claim(std::uint64_t h, std::size_t cls, std::uint64_t since, std::size_t& slot, Reusable&& reusable,
                      Start&& start, Seize&& seize, Unseize&& unseize) noexcept {
    const std::size_t home = home_of(h);
    constexpr std::size_t none = ~std::size_t{0};
    // An unused entry (empty or free) is taken before a reusable live one:
    // evicting a key that is fresh again loses nothing, but it costs that
    // key a claim on its next call, and a table with room would otherwise
    // keep trading entries between keys. The first unused entry lies at or
    // before the first empty one, so the rule of pin() still holds.
    std::size_t pick = none, pick_i = 0, reuse = none, reuse_i = 0;
    std::uint64_t pick_c = 0, reuse_c = 0;
    for (std::size_t i = 0; i < window_; ++i) {
      const std::size_t s = at(home, i);
      entry& e = entries_[s];
      // seq_cst: part of the claim protocol above; as an acquire it pairs
      // with the publish CAS so a live entry's hash is visible.
      const std::uint64_t c = e.ctl.load(std::memory_order_seq_cst);
      const std::uint64_t st = state_of(c);
      // seq_cst: as the load above.
      if (st == st_live && e.hash.load(std::memory_order_seq_cst) == h) return claim_outcome::retry;  // pin it
      if (pick != none) continue;
      if (st == st_empty || st == st_free) {
        pick = s, pick_i = i, pick_c = c;
        continue;
      }
      // A live entry with no pins: the unpins (releases, RMWs all, so their
      // release sequences reach c) precede c, so `reusable` reads (acquire)
      // every finished call's state; any pin after c advances the version
      // and fails our claim CAS.
      if (reuse == none && st == st_live && pins_of(c) == 0 && reusable(e, class_of(c))) {
        reuse = s, reuse_i = i, reuse_c = c;
      }
    }
    if (pick == none) pick = reuse, pick_i = reuse_i, pick_c = reuse_c;
    if (pick == none) return claim_outcome::full;
    // Before our claim CAS, so that an eviction by us carries our time.
    note_time(since);
    entry& e = entries_[pick];
    const bool live = state_of(pick_c) == st_live;
    if (live && !seize(e, pick_c)) return claim_outcome::retry;
    const std::uint64_t ver = (pick_c & ver_mask) + ver_one;
    std::uint64_t expect = pick_c;
    // seq_cst: the claim; as an acquire it pairs with the pins' release
    // (their hash reads come before our hash store) and the unpins' (as
    // for the state above).
    if (!e.ctl.compare_exchange_strong(expect, ver | st_claiming, std::memory_order_seq_cst)) {
      if (live) unseize(e, pick_c);
      return claim_outcome::retry;
    }
    // The entry is ours until we free it: others may only move it from
    // hashed to withdrawn, and nobody else writes its hash or state.
    // release: published by the hashed CAS (seq_cst, a release), which the
    // scans acquire; a release of its own for find(), whose acquire load of
    // it must order its second load of the control word after our claim.
    e.hash.store(h, std::memory_order_release);
    // relaxed: see may_hold; the publish CAS below (a release) carries it.
    hints_[pick].store(h, std::memory_order_relaxed);
    // A new incarnation: tickets of earlier ones give nothing back here.
    // Only an owner writes it, and each owner's claim CAS (acquire) follows
    // the previous owner's publish or free (releases, RMWs all) in the
    // word's order (the load: relaxed); pinners read it after the publish
    // CAS below.
    // release: as the hash's, for find().
    e.claim.store(e.claim.load(std::memory_order_relaxed) + 1, std::memory_order_release);
    std::uint64_t mine = ver | st_claiming;
    // seq_cst: the mark of the protocol above. Cannot fail: only we write
    // a claiming entry.
    (void)e.ctl.compare_exchange_strong(mine, ver | st_hashed, std::memory_order_seq_cst);
    for (std::size_t i = 0; i < window_; ++i) {
      if (i == pick_i) continue;
      entry& o = entries_[at(home, i)];
      std::uint64_t c = o.ctl.load(std::memory_order_seq_cst);  // seq_cst: the scan
      for (;;) {
        const std::uint64_t st = state_of(c);
        if (st != st_live && st != st_hashed) break;
        // seq_cst: the scan. A hashed or live state fixes the hash for its
        // version, and the CAS below checks the version.
        if (o.hash.load(std::memory_order_seq_cst) != h) break;
        if (st == st_live) {
          // A live entry of the key: withdraw ours. seq_cst exchange (an
          // RMW, so release sequences stay whole): from hashed, or from
          // withdrawn if another claim withdrew us.
          (void)e.ctl.exchange(ver | st_free, std::memory_order_seq_cst);
          return claim_outcome::retry;
        }
        // Another claim of the key: withdraw it (seq_cst CAS; on failure
        // it published or was withdrawn: look again at what it is now).
        if (o.ctl.compare_exchange_strong(c, (c & ver_mask) | st_withdrawn, std::memory_order_seq_cst)) break;
      }
    }
    // The state starts from the latest time any claim has seen, read after
    // the scan: every earlier entry of this key was either seen by the scan
    // (live: we withdrew; hashed: we withdrew it, it never admits) or was
    // already reclaimed, and the scan's load of its control word came after
    // that evictor's claim CAS, so after its note_time(). Its state was
    // fresh at the evictor's `now`: starting here loses none of what it owed.
    start(e);
    // seq_cst (a release): publishes state and hash; pinned for our own
    // call. Fails if another claim of the key withdrew ours.
    std::uint64_t m = ver | st_hashed;
    if (!e.ctl.compare_exchange_strong(m, ver | st_live | (static_cast<std::uint64_t>(cls) << cls_shift) | pin_one,
                                       std::memory_order_seq_cst)) {
      // Withdrawn: only we free it (seq_cst exchange, as above).
      (void)e.ctl.exchange(ver | st_free, std::memory_order_seq_cst);
      return claim_outcome::retry;
    }
    slot = pick;
    return claim_outcome::claimed;
  }

  // Takes the key out: free now, or erasing until its pins go (the last
  // unpin frees it).
  bool erase(std::uint64_t h) noexcept {
    if (capacity_ == 0) return false;
    const std::size_t home = home_of(h);
    for (std::size_t i = 0; i < window_; ++i) {
      if (!may_hold(at(home, i), h)) continue;  // as in pin()
      entry& e = entries_[at(home, i)];
      std::uint64_t c = e.ctl.load(std::memory_order_acquire);  // acquire: as in pin()
      for (;;) {
        if (state_of(c) == st_empty) return false;
        // relaxed: validated by the CAS, as in pin()
        if (state_of(c) != st_live || e.hash.load(std::memory_order_relaxed) != h) break;
        // acq_rel / acquire: as the pin CAS; the version advances so stale
        // pinners fail.
        const std::uint64_t next =
            ((c & ver_mask) + ver_one) | (pins_of(c) == 0 ? st_free : (c & pin_mask) | st_erasing);
        if (e.ctl.compare_exchange_weak(c, next, std::memory_order_acq_rel, std::memory_order_acquire)) return true;
      }
    }
    return false;
  }

  // The key's live entry and its class, without pinning (a peek: a racing
  // reclaim can only show a newer occupant); nullptr when it has none.
  const entry* peek(std::uint64_t h, std::size_t& cls) const noexcept {
    if (capacity_ == 0) return nullptr;
    const std::size_t home = home_of(h);
    for (std::size_t i = 0; i < window_; ++i) {
      if (!may_hold(at(home, i), h)) continue;  // as in pin()
      const entry& e = entries_[at(home, i)];
      const std::uint64_t c = e.ctl.load(std::memory_order_acquire);  // acquire: as in pin()
      if (state_of(c) == st_empty) return nullptr;
      // relaxed: a peek.
      if (state_of(c) != st_live || e.hash.load(std::memory_order_relaxed) != h) continue;
      cls = class_of(c);
      return &e;
    }
    return nullptr;
  }

 private:
  // Whether entry s may be key h's live entry, by its hint: not when the
  // hint names another key (zero, the hint of an entry never claimed or
  // restored empty, says nothing; nor does a key whose hash is zero). Only
  // the owner of a claiming entry writes its hint, with its hash, before
  // its publish. So a hint that names another key is the entry's before a
  // later claim: the entry is not empty (entries never return to empty, so
  // passing it keeps pin()'s rule), and if that later claim was the key's,
  // the read is stale, like a stale control word: the caller goes to
  // claim(), whose scan (seq_cst loads, acquires) reads the publish or
  // later and retries, and the retry reads this hint or a later one
  // (coherence, after the publish it synchronised with). A probe therefore
  // never misses a live entry its claim() scan has seen, and never loops.
  bool may_hold(std::size_t s, std::uint64_t h) const noexcept {
    const std::uint64_t hint = hints_[s].load(std::memory_order_relaxed);  // relaxed: a filter, as argued
    return hint == h || hint == 0;
  }

  std::unique_ptr<entry[]> entries_;
  // One word per entry, 8 to a line, written by claims only (see may_hold).
  std::unique_ptr<atomic<std::uint64_t>[]> hints_;
  std::size_t capacity_ = 0;
  std::size_t window_ = 0;
  atomic<std::uint64_t> latest_{0};
};

}  // namespace detail
TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_KEYED_CLAIM_HPP
// #include <tollgate/keyed/key.hpp>  (inlined below)
// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// keyed/key.hpp: what every keyed table shares — the seed and the keyed
// hash of its keys, and the status of a keyed decision.
#ifndef TOLLGATE_KEYED_KEY_HPP
#define TOLLGATE_KEYED_KEY_HPP

// #include <tollgate/config.hpp>  (already above)
// #include <tollgate/decision.hpp>  (already above)
// #include <tollgate/detail/siphash.hpp>  (already above)

#include <cstdint>
#include <string_view>

TOLLGATE_BEGIN_NAMESPACE

// The secret of a table's hash: 128 bits the user draws at random (and
// keeps, to find the same keys after a restart).
struct hash_seed {
  std::uint64_t k0 = 0;
  std::uint64_t k1 = 0;
};

// The default key hash: SipHash-1-3 under the seed, ids and strings under
// different derived keys. A replacement (tests force collisions with one)
// takes a hash_seed and hashes both key kinds.
//
// Why 1-3 and not 2-4: the hash is a serial chain of rounds on every
// admission (8 rounds for an id under 2-4, 5 under 1-3), and the keyed
// tables' snapshots (format 2) say which hash wrote them. SipHash-1-3 is the
// reduced-round variant hash tables use against collision flooding; it is
// still keyed by the whole seed, with a thinner margin against
// cryptanalysis than 2-4 (keyed_buckets.hpp states what the collision odds
// rest on). Tables of format 1 (SipHash-2-4) are refused by restore() with
// wrong_version, never read under the other hash.
class sip_key_hash {
 public:
  explicit sip_key_hash(hash_seed s) noexcept : ids_(s.k0, s.k1 ^ 0x6964000000000000ULL), strings_(s.k0, s.k1) {}
  std::uint64_t operator()(std::uint64_t id) const noexcept { return ids_.word(id); }
  std::uint64_t operator()(std::string_view s) const noexcept {
    return strings_.bytes(reinterpret_cast<const unsigned char*>(s.data()), s.size());
  }

 private:
  detail::siphash13 ids_;
  detail::siphash13 strings_;
};

enum class keyed_status : std::uint8_t {
  admitted,    // the key's entry admitted
  limited,     // the key's entry refused: see the decision (later or never)
  table_full,  // a new key, and no entry of its window may be reused
  bad_class,   // the class index is not one of the table's (or the table is misconfigured)
  overflow,    // a new key met a full window and went to the overflow limiter: see its decision
};

constexpr const char* to_string(keyed_status s) noexcept {
  switch (s) {
    case keyed_status::admitted: return "admitted";
    case keyed_status::limited: return "limited";
    case keyed_status::table_full: return "table_full";
    case keyed_status::bad_class: return "bad_class";
    case keyed_status::overflow: return "overflow";
  }
  return "?";
}

class keyed_result {
 public:
  constexpr keyed_result(decision d, keyed_status s) noexcept : d_(d), s_(s) {}
  constexpr keyed_status status() const noexcept { return s_; }
  constexpr const decision& result() const noexcept { return d_; }
  // By the key's entry, or by the overflow limiter (keyed_overflow.hpp).
  constexpr bool admitted() const noexcept {
    return s_ == keyed_status::admitted || (s_ == keyed_status::overflow && d_.admitted());
  }
  constexpr bool table_full() const noexcept { return s_ == keyed_status::table_full; }
  constexpr explicit operator bool() const noexcept { return admitted(); }

 private:
  decision d_;
  keyed_status s_;
};

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_KEYED_KEY_HPP
// #include <tollgate/keyed/ticket.hpp>  (inlined below)
// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// keyed/ticket.hpp: what a keyed_buckets or keyed_windows admission leaves
// for refunding it later (keyed_buckets::refund and keyed_windows.hpp's
// give-back state the rules).
//
// A ticket names the table object that issued it: an identity drawn at
// construction and again by restore() (detail/identity.hpp: never 0, never
// repeated within a program image, salted per image and process). A
// ticket of another table, or of this one from before a restore(), gives
// nothing back, even when its slot and claim generation happen to match an
// entry there. Two copies of the header built into shared libraries with
// hidden symbols each draw on their own: identities the two draw, n and m
// of them, meet with probability at most (n + m + 1) / 2^64.
#ifndef TOLLGATE_KEYED_TICKET_HPP
#define TOLLGATE_KEYED_TICKET_HPP

// #include <tollgate/config.hpp>  (already above)
// #include <tollgate/detail/identity.hpp>  (already above)

#include <cstddef>
#include <cstdint>

TOLLGATE_BEGIN_NAMESPACE

// A default ticket gives back nothing. Move-only: a copy could refund the
// same units twice. A moved-from ticket holds no units, so refunding it
// gives nothing back.
struct keyed_ticket {
  std::uint64_t hash = 0;   // the key's
  std::uint64_t end = 0;    // buckets: ticks after the origin, the end of the admission's own intervals;
                            // windows: the slot it charged (numbered from the origin)
  std::uint64_t units = 0;  // units it may still give back
  std::size_t cls = 0;      // the class of the entry it was taken on
  std::size_t slot = 0;     // the entry it was taken on
  std::uint64_t claim = 0;  // that entry's claim generation then (never 0 for a real admission)
  std::uint64_t table = 0;  // the issuing table's identity then (never 0 for a real admission)

  constexpr keyed_ticket() noexcept = default;
  constexpr keyed_ticket(std::uint64_t h, std::uint64_t e, std::uint64_t u, std::size_t c, std::size_t s,
                         std::uint64_t cl, std::uint64_t tb) noexcept
      : hash(h), end(e), units(u), cls(c), slot(s), claim(cl), table(tb) {}
  keyed_ticket(const keyed_ticket&) = delete;
  keyed_ticket& operator=(const keyed_ticket&) = delete;
  constexpr keyed_ticket(keyed_ticket&& o) noexcept
      : hash(o.hash), end(o.end), units(o.units), cls(o.cls), slot(o.slot), claim(o.claim), table(o.table) {
    o.units = 0;
  }
  constexpr keyed_ticket& operator=(keyed_ticket&& o) noexcept {
    if (this != &o) {
      hash = o.hash;
      end = o.end;
      cls = o.cls;
      slot = o.slot;
      claim = o.claim;
      table = o.table;
      units = o.units;
      o.units = 0;
    }
    return *this;
  }
};

namespace detail {

// A new table identity (detail/identity.hpp); it reaches other threads
// with the table itself.
inline std::uint64_t next_keyed_table_id() noexcept { return fresh_identity(); }

}  // namespace detail
TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_KEYED_TICKET_HPP
// #include <tollgate/rate.hpp>  (already above)
// #include <tollgate/token_bucket.hpp>  (already above)

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

TOLLGATE_BEGIN_NAMESPACE

enum class account_restore_errc : unsigned char;  // account/snapshot.hpp

// One limit class: a token bucket's rate and burst.
struct key_class {
  rate r;
  std::uint64_t burst = 0;
};

template <class Clock = steady_clock, class Hash = sip_key_hash>
class keyed_buckets {
  using L = detail::gcra_limits;

 public:
  using clock = Clock;
  static constexpr std::size_t max_classes = 64;
  static constexpr std::size_t default_window = 16;

  // Throws config_error (or aborts without exceptions) on a bad
  // configuration: capacity, window or class list empty (errc::zero_count),
  // more than 64 classes or a capacity over 2^40 (errc::too_large), or a
  // class token_bucket would refuse (its errc). A window larger than the
  // capacity is the capacity.
  // Origin Clock::now(), window 16.
  keyed_buckets(std::size_t capacity, std::initializer_list<key_class> classes, hash_seed seed)
      : keyed_buckets(capacity, std::vector<key_class>(classes), seed, Clock::now()) {}
  keyed_buckets(std::size_t capacity, const std::vector<key_class>& classes, hash_seed seed)
      : keyed_buckets(capacity, classes, seed, Clock::now()) {}
  keyed_buckets(std::size_t capacity, std::initializer_list<key_class> classes, hash_seed seed, nanoseconds origin,
                std::size_t window = default_window)
      : keyed_buckets(capacity, std::vector<key_class>(classes), seed, origin, window) {}
  keyed_buckets(std::size_t capacity, const std::vector<key_class>& classes, hash_seed seed, nanoseconds origin,
                std::size_t window = default_window)
      : hash_(seed) {
    const errc e = init(capacity, classes, origin, window);
    if (e != errc::ok) detail::fail(e);
  }
  // Never throws: on a bad configuration sets `ec` and builds a table that
  // refuses everything with keyed_status::bad_class. (It still allocates
  // the table: running out of memory here terminates.)
  keyed_buckets(std::size_t capacity, const std::vector<key_class>& classes, hash_seed seed, nanoseconds origin,
                std::size_t window, errc& ec) noexcept
      : hash_(seed) {
    ec = init(capacity, classes, origin, window);
  }

  keyed_buckets(const keyed_buckets&) = delete;
  keyed_buckets& operator=(const keyed_buckets&) = delete;

  // Takes n units from the key's bucket (claiming an entry with class `cls`
  // if the key has none).
  keyed_result try_acquire(std::uint64_t id, std::size_t cls, std::uint64_t n, nanoseconds now) noexcept {
    return acquire_hash(hash_(id), cls, n, now, nullptr);
  }
  // The same, and fills `t` for a later refund (a refusal leaves it empty).
  keyed_result try_acquire(std::uint64_t id, std::size_t cls, std::uint64_t n, nanoseconds now,
                           keyed_ticket& t) noexcept {
    return acquire_hash(hash_(id), cls, n, now, &t);
  }
  keyed_result try_acquire(std::string_view key, std::size_t cls, std::uint64_t n, nanoseconds now,
                           keyed_ticket& t) noexcept {
    return acquire_hash(hash_(key), cls, n, now, &t);
  }

  // Gives back up to n of the units an admission took, by token_bucket's
  // ticket rule: whole units only, at most
  //     min(n, t.units, (t.end - now) / T, owed(now) / T)
  // (the part of the admission's own intervals still ahead), so the bound
  // holds for the units admitted net of refunds. Nothing when the key's
  // entry is gone (it was full: nothing is owed) or has another class, or
  // for another key's ticket, or when the key's entry is not the one the
  // admission charged (the key was erased or evicted and claimed an entry
  // again: the ticket names its entry and that entry's claim generation, a
  // 64-bit count of its claims that would wrap only after 2^64 claims of
  // one entry while the ticket is held), or for a ticket of another table
  // object or of this one before its restore() (keyed/ticket.hpp: a
  // restored key's debt already holds what its tickets took, and they name
  // generations a restore cannot tell apart).
  // A `now` that lags by d can give back up to ceil(d / T) units early (token_bucket's
  // skew bound). Returns the units given back.
  std::uint64_t refund(std::uint64_t id, keyed_ticket& t, std::uint64_t n, nanoseconds now) noexcept {
    return refund_hash(hash_(id), t, n, now);
  }
  std::uint64_t refund(std::string_view key, keyed_ticket& t, std::uint64_t n, nanoseconds now) noexcept {
    return refund_hash(hash_(key), t, n, now);
  }
  keyed_result try_acquire(std::string_view key, std::size_t cls, std::uint64_t n, nanoseconds now) noexcept {
    return acquire_hash(hash_(key), cls, n, now, nullptr);
  }
  keyed_result try_acquire(std::uint64_t id, std::size_t cls, std::uint64_t n = 1) noexcept {
    return try_acquire(id, cls, n, Clock::now());
  }
  keyed_result try_acquire(std::string_view key, std::size_t cls, std::uint64_t n = 1) noexcept {
    return try_acquire(key, cls, n, Clock::now());
  }

  // Forgets the key's entry (its bucket is full again: an explicit reset).
  // Admissions in progress on it finish on the old bucket (or, when the
  // entry is claimed again meanwhile, look again). Returns whether the key
  // had an entry.
  bool erase(std::uint64_t id) noexcept { return erase_hash(hash_(id)); }
  bool erase(std::string_view key) noexcept { return erase_hash(hash_(key)); }

  // Whether the key holds an entry (peek; may be stale).
  bool contains(std::uint64_t id) const noexcept { return peek_tat(hash_(id), nullptr, nullptr); }
  bool contains(std::string_view key) const noexcept { return peek_tat(hash_(key), nullptr, nullptr); }

  // Whole units the key could take at `now`: its entry's, or a fresh
  // bucket of class `cls` when it has none (peek; consumes nothing).
  std::uint64_t available(std::uint64_t id, std::size_t cls, nanoseconds now) const noexcept {
    return available_hash(hash_(id), cls, now);
  }
  std::uint64_t available(std::string_view key, std::size_t cls, nanoseconds now) const noexcept {
    return available_hash(hash_(key), cls, now);
  }

  // The table as bytes, and back (keyed/snapshot.hpp states the format, the
  // time rule and every refusal). snapshot() runs beside any traffic;
  // restore() only into a table that has taken none, before sharing it.
  std::string snapshot(nanoseconds now, nanoseconds wall) const;
  account_restore_errc restore(std::string_view bytes, nanoseconds now, nanoseconds wall);

  std::size_t capacity() const noexcept { return capacity_; }
  std::size_t window() const noexcept { return window_; }
  std::size_t classes() const noexcept { return params_.size(); }
  // How long after the origin class `cls` counts exactly (see Time); zero
  // for a bad class index.
  nanoseconds horizon(std::size_t cls) const noexcept {
    return cls < params_.size() ? nanoseconds(detail::gcra_horizon_ns(params_[cls])) : nanoseconds(0);
  }
  static constexpr std::size_t bytes_per_entry() noexcept { return S::bytes_per_entry(); }

 private:
  // The entry protocol (keyed/claim.hpp, which lays out the control word);
  // a bucket's state is its TAT, in ticks of its class after the origin.
  struct bucket_state {
    detail::atomic<std::uint64_t> tat{0};
  };
  using S = detail::keyed_slots<bucket_state>;
  using entry = typename S::entry;
  static constexpr std::uint64_t st_live = S::st_live, st_free = S::st_free, pin_one = S::pin_one,
                                 pin_mask = S::pin_mask, ver_one = S::ver_one, ver_mask = S::ver_mask;
  static constexpr unsigned cls_shift = S::cls_shift;
  static constexpr std::uint64_t state_of(std::uint64_t c) noexcept { return S::state_of(c); }
  static constexpr std::size_t class_of(std::uint64_t c) noexcept { return S::class_of(c); }
  static void unpin(entry& e) noexcept { S::unpin(e); }
  std::size_t home_of(std::uint64_t h) const noexcept { return slots_.home_of(h); }
  std::size_t at(std::size_t home, std::size_t i) const noexcept { return slots_.at(home, i); }

  errc init(std::size_t capacity, const std::vector<key_class>& classes, nanoseconds origin, std::size_t window) {
    if (capacity == 0 || window == 0 || classes.empty()) return errc::zero_count;
    if (classes.size() > max_classes || capacity > (std::size_t{1} << 40)) return errc::too_large;
    std::vector<detail::gcra_params> ps;
    ps.reserve(classes.size());
    for (const key_class& k : classes) {
      detail::gcra_params p{};
      const errc e = detail::make_gcra_params(k.r, k.burst, p);
      if (e != errc::ok) return e;
      ps.push_back(p);
    }
    slots_.init(capacity, window);
    params_ = std::move(ps);
    capacity_ = capacity;
    window_ = slots_.window();
    origin_ = origin.count();
    id_ = detail::next_keyed_table_id();
    return errc::ok;
  }

  // Whether `now` is past class p's horizon: its ticks (saturated) beyond
  // max_ticks - tau, which is since > floor((max_ticks - tau) / s) in ns,
  // without the division on the hot path.
  static bool past_t(std::uint64_t now_t, const detail::gcra_params& p) noexcept { return now_t > L::max_ticks - p.tau; }
  bool past(nanoseconds now, const detail::gcra_params& p) const noexcept { return past_t(ticks(now, p), p); }
  // A refusal at `now` with wait w (counted from max(now, origin)): `never`
  // when that plus w is past p's horizon. A `now` before the origin is
  // decided as the origin, so its wait from `now` is longer by the difference.
  decision wait_or_never(nanoseconds now, nanoseconds w, const detail::gcra_params& p) const noexcept {
    const std::uint64_t at = detail::sat_add(detail::positive_difference(now.count(), origin_),
                                             static_cast<std::uint64_t>(w.count()));
    if (at > static_cast<std::uint64_t>(detail::gcra_horizon_ns(p))) return decision::refuse(reason::exceeds_capacity);
    const std::uint64_t from_now = detail::sat_add(static_cast<std::uint64_t>(w.count()),
                                                   detail::positive_difference(origin_, now.count()));
    const std::uint64_t top = static_cast<std::uint64_t>(INT64_MAX);
    return decision::wait(nanoseconds(static_cast<std::int64_t>(from_now > top ? top : from_now)));
  }

  std::uint64_t ticks(nanoseconds now, const detail::gcra_params& p) const noexcept {
    const std::uint64_t t = detail::sat_mul(detail::positive_difference(now.count(), origin_), p.scale);
    return t > L::max_ticks ? L::max_ticks : t;
  }
  static nanoseconds ticks_to_ns(std::uint64_t t, const detail::gcra_params& p) noexcept {
    const std::uint64_t d = detail::ceil_div(t, p.scale);
    const std::uint64_t top = static_cast<std::uint64_t>(INT64_MAX);
    return nanoseconds(static_cast<std::int64_t>(d > top ? top : d));
  }

  keyed_result acquire_hash(std::uint64_t h, std::size_t cls, std::uint64_t n, nanoseconds now,
                            keyed_ticket* t) noexcept {
    if (t != nullptr) *t = keyed_ticket{};
    if (cls >= params_.size()) return {decision::refuse(reason::misconfigured), keyed_status::bad_class};
    if (n == 0) return {decision::admit(), keyed_status::admitted};
    for (;;) {
      std::size_t slot = 0, slot_cls = cls;
      std::uint64_t ctl = 0, gen = 0;
      if (slots_.find(h, slot, ctl, gen)) {
        // The key's live entry: admitted without a pin (see the contract).
        entry& e = slots_[slot];
        slot_cls = class_of(ctl);
        std::uint64_t end = 0;
        live_how how = live_how::done;
        decision d = admit_live(e, gen, params_[slot_cls], n, now, end, false, how);
        if (how == live_how::moved) continue;  // the entry went to another claim: look again
        if (how == live_how::sealed) {
          // An evictor sealed the bucket: pin the entry, which fails its
          // claim and keeps further claims off it, and admit pinned.
          if (!slots_.pin(h, slot, slot_cls)) continue;  // claimed already: the key was full
          entry& pe = slots_[slot];
          gen = pe.claim.load(std::memory_order_relaxed);  // relaxed: stable while pinned
          d = admit_live(pe, gen, params_[slot_cls], n, now, end, true, how);
          unpin(pe);
          if (how == live_how::moved) continue;
        }
        if (t != nullptr && d.admitted()) *t = keyed_ticket{h, end, n, slot_cls, slot, gen, id_};
        return {d, d.admitted() ? keyed_status::admitted : keyed_status::limited};
      }
      {
        // A new key asking for more than its class can ever hold: refused
        // without taking an entry.
        // So is one past its class's horizon.
        if (n > params_[cls].burst || past(now, params_[cls])) {
          return {decision::refuse(reason::exceeds_capacity), keyed_status::limited};
        }
        std::uint64_t soonest = ~std::uint64_t{0};
        bool known = false;
        const detail::claim_outcome o = claim(h, cls, now, slot, soonest, known);
        if (o == detail::claim_outcome::retry) continue;
        if (o == detail::claim_outcome::full) {
          const std::uint64_t top = static_cast<std::uint64_t>(INT64_MAX);
          const nanoseconds wait(static_cast<std::int64_t>(soonest > top ? top : soonest));
          return {known ? wait_or_never(now, wait, params_[cls]) : decision::wait(nanoseconds(0), reason::busy),
                  keyed_status::table_full};
        }
      }
      // Our claim, published pinned for this call: admitted as on any live
      // entry (a stale evictor may have sealed the new bucket: see the
      // contract), then unpinned.
      entry& e = slots_[slot];
      // relaxed: we wrote it.
      const std::uint64_t mine = e.claim.load(std::memory_order_relaxed);
      std::uint64_t end = 0;
      live_how how = live_how::done;
      const decision d = admit_live(e, mine, params_[slot_cls], n, now, end, true, how);
      unpin(e);
      if (how == live_how::moved) continue;  // erased and claimed again while we admitted: look again
      if (t != nullptr && d.admitted()) *t = keyed_ticket{h, end, n, slot_cls, slot, mine, id_};
      return {d, d.admitted() ? keyed_status::admitted : keyed_status::limited};
    }
  }

  // The seal (see the contract): the TAT word's top bit, which no TAT
  // reaches (a TAT stays at or below max_ticks + tau < 2^63), the version
  // of the control word its evictor read (40 bits: whether its claim may
  // still land) and the low 22 bits of a ticket the evictor drew from the
  // table's count of seals, so that two evictors that read one control word
  // make different seals (equal seals let one's undo land on the other's,
  // found by an independent check; they would need a sealer stalled across
  // 2^22 seals of the table).
  static constexpr unsigned ticket_bits = 22;
  static constexpr std::uint64_t sealed_bit = std::uint64_t{1} << 63;
  static constexpr bool sealed(std::uint64_t w) noexcept { return (w & sealed_bit) != 0; }
  static constexpr std::uint64_t seal_of(std::uint64_t ctl, std::uint64_t ticket) noexcept {
    return sealed_bit | ((ctl >> S::ver_shift) << ticket_bits) | (ticket & ((std::uint64_t{1} << ticket_bits) - 1));
  }
  // Whether seal w names control word ctl's version: its claim may land.
  static constexpr bool pending(std::uint64_t w, std::uint64_t ctl) noexcept {
    return ((w & ~sealed_bit) >> ticket_bits) == (ctl >> S::ver_shift);
  }
  // The TAT a claim starts a bucket of class p with: the latest time any
  // claim has seen (keyed/claim.hpp). It is also what a sealed bucket
  // stands for: full at its evictor's `now`, which that evictor's
  // note_time() put into the latest time before it sealed.
  std::uint64_t start_ticks(const detail::gcra_params& p) const noexcept {
    const std::uint64_t b = detail::sat_mul(slots_.start_time(), p.scale);
    return b > L::max_ticks ? L::max_ticks : b;
  }

  // An admission on an entry of the key (keyed/bucket_ops.hpp), pinned or
  // not; how it ended when it did not decide.
  enum class live_how { done, moved, sealed };
  decision admit_live(entry& e, std::uint64_t gen, const detail::gcra_params& p, std::uint64_t n, nanoseconds now,
                      std::uint64_t& end, bool pinned, live_how& how) noexcept;

  static constexpr std::uint64_t snapshot_version = 2;  // 2: SipHash-1-3 keys (1: SipHash-2-4)
  std::uint64_t fingerprint() const noexcept;  // keyed/snapshot.hpp

  // Defined in keyed/bucket_ops.hpp: the bucket's side of the protocol.
  std::uint64_t refund_hash(std::uint64_t h, keyed_ticket& t, std::uint64_t n, nanoseconds now) noexcept;
  std::uint64_t start_time() const noexcept { return slots_.start_time(); }
  detail::claim_outcome claim(std::uint64_t h, std::size_t cls, nanoseconds now, std::size_t& slot,
                              std::uint64_t& soonest, bool& known) noexcept;
  bool erase_hash(std::uint64_t h) noexcept { return slots_.erase(h); }
  bool peek_tat(std::uint64_t h, std::uint64_t* tat, std::size_t* cls) const noexcept;
  std::uint64_t available_hash(std::uint64_t h, std::size_t cls, nanoseconds now) const noexcept;

  Hash hash_;
  S slots_;
  std::vector<detail::gcra_params> params_;
  std::size_t capacity_ = 0;
  std::size_t window_ = 0;
  std::int64_t origin_ = 0;
  std::uint64_t id_ = 0;  // this table's identity (keyed/ticket.hpp): set by init() and restore() only
  // Whether an admission has landed since construction or restore(), which
  // then refuses (in_use): admissions do not pin, so the versions that tell
  // restore() of claims, pins and erases do not show them. Written once
  // (false to true) per restore, then only read: its line stays shared.
  detail::atomic<bool> admitted_{false};
  // Seals drawn (claims that evict only): tickets that tell seals apart.
  detail::atomic<std::uint64_t> seals_{0};
};

TOLLGATE_END_NAMESPACE

// #include <tollgate/keyed/bucket_ops.hpp>  (inlined below)
// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// keyed/bucket_ops.hpp: keyed_buckets' side of the entry protocol of
// keyed/claim.hpp — its admission without a pin, when a bucket may be reclaimed, how a claimed one
// starts, refunds into it, and the peeks. Included by keyed_buckets.hpp
// after the class, whose header states the contract and the bound.
#ifndef TOLLGATE_KEYED_BUCKET_OPS_HPP
#define TOLLGATE_KEYED_BUCKET_OPS_HPP

// #include <tollgate/keyed_buckets.hpp>  (already above)

TOLLGATE_BEGIN_NAMESPACE

// An admission on an entry of the key (its claim generation gen): the
// bucket's CAS is its one read-modify-write. Unpinned (found by find()),
// it stops at a seal (`how` = sealed: the caller pins the entry and comes
// back) and at a sign that the entry is no longer that incarnation (`how`
// = moved: nothing of this call counts for the key, the caller looks
// again). Pinned, no claim can land, so a seal (of an evictor that read
// the control word before our pin) is replaced by the state it stands for.
template <class Clock, class Hash>
decision keyed_buckets<Clock, Hash>::admit_live(entry& e, std::uint64_t gen, const detail::gcra_params& p,
                                                std::uint64_t n, nanoseconds now, std::uint64_t& end, bool pinned,
                                                live_how& how) noexcept {
  how = live_how::done;
  const std::uint64_t now_t = ticks(now, p);
  if (n > p.burst || past_t(now_t, p)) return decision::refuse(reason::exceeds_capacity);
  detail::atomic<std::uint64_t>& tat = e.s.tat;
  // acquire: pairs with the release of a claimer's start store (its
  // release sequence: every later write of the word is an RMW), so a
  // value a new occupant wrote comes with that occupant's generation,
  // which the checks below then read.
  std::uint64_t w = tat.load(std::memory_order_acquire);
  for (;;) {
    if (sealed(w)) {
      if (!pinned) {
        how = live_how::sealed;
        return decision::refuse(reason::busy);
      }
      // acq_rel / acquire: as the admission's CAS below; on failure w is
      // the word's value (the sealer's own undo came first).
      const std::uint64_t fresh = start_ticks(p);
      if (tat.compare_exchange_strong(w, fresh, std::memory_order_acq_rel, std::memory_order_acquire)) w = fresh;
      continue;
    }
    const std::uint64_t base = w > now_t ? w : now_t;  // <= 2^62 + tau: no overflow below
    const std::uint64_t need = base + n * p.interval;
    if (need - now_t > p.tau) {
      // relaxed: ordered after the acquire that read w (above).
      if (e.claim.load(std::memory_order_relaxed) != gen) break;
      return wait_or_never(now, ticks_to_ns(need - now_t - p.tau, p), p);
    }
    // acq_rel / acquire: the admission; acquire as the load above (also
    // on failure, for the next round's w), release so an evictor's seal
    // CAS and a snapshot that read our value see what came before it.
    if (tat.compare_exchange_weak(w, need, std::memory_order_acq_rel, std::memory_order_acquire)) {
      // relaxed: after the acquire of our CAS.
      if (e.claim.load(std::memory_order_relaxed) == gen) {
        end = need;
        // relaxed: restore() is not run beside admissions (it only tells
        // a table used before it from one that was not).
        if (!admitted_.load(std::memory_order_relaxed)) admitted_.store(true, std::memory_order_relaxed);
        return decision::admit();
      }
      // The entry was claimed again: our CAS charged the erased bucket
      // before that claim, or the new occupant (our w equal, by chance, to
      // its start). Not undone: the new occupant may have taken units on
      // top, and a CAS back cannot tell our charge from an equal value
      // (the interleaving checker's erase scenario found exactly that). It
      // keeps the charge, the conservative side.
      break;
    }
    // relaxed: after the failed CAS's acquire. Not needed for the bound
    // (the check after a successful CAS catches a new occupant) but it
    // spares that occupant a charge.
    if (e.claim.load(std::memory_order_relaxed) != gen) break;
  }
  how = live_how::moved;
  return decision::refuse(reason::busy);
}

template <class Clock, class Hash>
std::uint64_t keyed_buckets<Clock, Hash>::refund_hash(std::uint64_t h, keyed_ticket& t, std::uint64_t n,
                                                       nanoseconds now) noexcept {
  if (n > t.units) n = t.units;
  if (n == 0 || t.hash != h || t.table != id_ || t.cls >= params_.size()) return 0;  // id_: see restore()
  std::size_t slot = 0, cls = 0;
  if (!slots_.pin(h, slot, cls)) return 0;
  std::uint64_t got = 0;
  entry& e = slots_[slot];
  // relaxed: as in acquire_hash(); another incarnation of the key (or of
  // the entry) has another slot or claim generation.
  if (cls == t.cls && slot == t.slot && e.claim.load(std::memory_order_relaxed) == t.claim) {
    const detail::gcra_params& p = params_[cls];
    const std::uint64_t now_t = ticks(now, p);
    detail::atomic<std::uint64_t>& tat = e.s.tat;
    std::uint64_t w = tat.load(std::memory_order_relaxed);  // relaxed: stable in meaning while pinned
    for (;;) {
      if (sealed(w)) {
        // Our pin moved the control word on, so the sealer's claim fails:
        // put back the state the seal stands for (acq_rel / acquire: as
        // admit_live's; on failure w is the word's value), then go on.
        const std::uint64_t fresh = start_ticks(p);
        if (tat.compare_exchange_strong(w, fresh, std::memory_order_acq_rel, std::memory_order_acquire)) w = fresh;
        continue;
      }
      if (w <= now_t || t.end <= now_t) break;  // full at `now`, or its intervals are behind
      std::uint64_t cap = detail::sat_mul(n, p.interval);
      if (t.end - now_t < cap) cap = t.end - now_t;
      if (w - now_t < cap) cap = w - now_t;
      const std::uint64_t k = cap / p.interval;
      if (k == 0) break;
      // relaxed / relaxed: the word is the whole bucket, and its generation
      // cannot change while we are pinned.
      if (tat.compare_exchange_weak(w, w - k * p.interval, std::memory_order_relaxed, std::memory_order_relaxed)) {
        got = k;
        t.end -= k * p.interval;
        break;
      }
    }
  }
  unpin(e);
  t.units -= got;
  return got;
}

// A bucket entry is reusable when it is full at the claimer's `now` (TAT
// not after it) or past its class's horizon (it refuses everything there,
// as a fresh one does), or sealed (full at an earlier evictor's `now`, which
// the latest time covers); otherwise it notes when it will be (`soonest`,
// ns). The claimer seals the one it picks before its claim CAS and
// restores it if that CAS fails (keyed_buckets.hpp states the protocol). A
// claimed bucket starts with its TAT at the latest time any claim has seen
// (keyed/claim.hpp says why that loses nothing owed).
template <class Clock, class Hash>
detail::claim_outcome keyed_buckets<Clock, Hash>::claim(std::uint64_t h, std::size_t cls, nanoseconds now,
                                                        std::size_t& slot, std::uint64_t& soonest,
                                                        bool& known) noexcept {
  const std::uint64_t since = detail::positive_difference(now.count(), origin_);
  auto reusable = [&](entry& e, std::size_t c) {
    const detail::gcra_params& p = params_[c];
    // acquire: pairs with the unpins (release) that precede the control
    // word the claim read with no pins (keyed/claim.hpp).
    const std::uint64_t tat = e.s.tat.load(std::memory_order_acquire);
    const std::uint64_t now_t = ticks(now, p);
    if (sealed(tat)) {
      // A seal whose claimer may still claim (it names the control word
      // as it is) is passed; its claimer finishes, or the key's next
      // admission pins the entry, which makes the seal a stale one.
      // relaxed: a filter; seize() checks again.
      return !pending(tat, e.ctl.load(std::memory_order_relaxed));
    }
    if (tat <= now_t || past_t(now_t, p)) return true;
    // Full when its TAT is reached, or once past its horizon.
    std::uint64_t d = static_cast<std::uint64_t>(ticks_to_ns(tat - now_t, p).count());
    const std::uint64_t end = static_cast<std::uint64_t>(detail::gcra_horizon_ns(p)) + 1 - since;  // > 0: not past
    if (end < d) d = end;
    if (d < soonest) soonest = d;
    known = true;
    return false;
  };
  auto start = [&](entry& e) {
    // release: published by the publish CAS (seq_cst, a release) for
    // pinners, and a release of its own for admit_live(), whose acquire
    // of it orders its generation check after our claim.
    e.s.tat.store(start_ticks(params_[cls]), std::memory_order_release);
  };
  std::uint64_t was = 0, mine = 0;  // the picked bucket's word before our seal, and our seal
  auto seize = [&](entry& e, std::uint64_t c) {
    const detail::gcra_params& p = params_[class_of(c)];
    // acquire: as reusable's load.
    std::uint64_t w = e.s.tat.load(std::memory_order_acquire);
    // Another claimer's seal on the same control word: its claim may still
    // land. Not defeated (two claimers of different keys doing that to
    // each other could go on for ever): the scan passes it (reusable).
    if (sealed(w) && pending(w, c)) return false;
    const std::uint64_t now_t = ticks(now, p);
    if (!sealed(w) && w > now_t && !past_t(now_t, p)) return false;  // owes again: not ours to take
    was = w;
    // relaxed: only the count's atomicity matters (each ticket drawn once).
    mine = seal_of(c, seals_.fetch_add(1, std::memory_order_relaxed));
    // acq_rel / relaxed: the seal. It succeeds only on the value we
    // checked, so no admission came between; acquire pairs with the
    // admissions' releases as reusable's load.
    return e.s.tat.compare_exchange_strong(w, mine, std::memory_order_acq_rel, std::memory_order_relaxed);
  };
  auto unseize = [&](entry& e, std::uint64_t) {
    // Our claim failed: our seal back to the value it replaced. acq_rel /
    // relaxed: our seal is ours alone (its ticket), so while it stands
    // nothing changed the bucket; if an admission replaced it first, this
    // fails and changes nothing.
    std::uint64_t x = mine;
    (void)e.s.tat.compare_exchange_strong(x, was, std::memory_order_acq_rel, std::memory_order_relaxed);
  };
  return slots_.claim(h, cls, since, slot, reusable, start, seize, unseize);
}

// Reads the key's TAT and class without pinning.
template <class Clock, class Hash>
bool keyed_buckets<Clock, Hash>::peek_tat(std::uint64_t h, std::uint64_t* tat, std::size_t* cls) const noexcept {
  std::size_t c = 0;
  const entry* e = slots_.peek(h, c);
  if (e == nullptr) return false;
  if (tat != nullptr) *tat = e->s.tat.load(std::memory_order_relaxed);  // relaxed: a peek
  if (cls != nullptr) *cls = c;
  return true;
}

template <class Clock, class Hash>
std::uint64_t keyed_buckets<Clock, Hash>::available_hash(std::uint64_t h, std::size_t cls,
                                                         nanoseconds now) const noexcept {
  if (cls >= params_.size()) return 0;
  std::uint64_t tat = 0;
  std::size_t c = cls;
  if (!peek_tat(h, &tat, &c)) return past(now, params_[cls]) ? 0 : params_[cls].burst;
  const detail::gcra_params& p = params_[c];
  if (past(now, p)) return 0;
  if (sealed(tat)) tat = start_ticks(p);  // what the seal stands for
  const std::uint64_t now_t = ticks(now, p);
  const std::uint64_t owed = tat > now_t ? tat - now_t : 0;
  return owed >= p.tau ? 0 : (p.tau - owed) / p.interval;
}

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_KEYED_BUCKET_OPS_HPP
// #include <tollgate/keyed/snapshot.hpp>  (inlined below)
// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// keyed/snapshot.hpp: a keyed_buckets table as bytes, and back, so a
// restart does not hand every key a fresh burst. No I/O: the caller stores
// the bytes. Included by keyed_buckets.hpp after the class.
//
// Format 2 (format 1, the same fields with keys under SipHash-2-4, is
// refused with wrong_version): "TGK1", then little-endian u64 fields: version, the table's
// fingerprint (capacity, window, every class's scale, interval and burst,
// and the hash of two fixed probe keys, so a table under another seed or
// hash is told apart without storing the seed), the wall-clock time, how
// far the latest claim time was ahead of the snapshot's `now` (ns), the
// number of entries n, then n x (slot, hash, class, owed), slots strictly
// ascending; and the FNV-1a checksum of every byte before it (the
// account's). `owed` is the time from `now` until the entry's bucket is
// full again, rounded up to the nanosecond; entries that owe nothing are
// fresh and not stored.
//
// Time. restore() keeps each entry's debt for what was left of it minus
// the wall-clock time between snapshot and restore (pass
// system_clock::now() as `wall`; one that went backwards counts as no time
// passed), rounded toward keeping: a restored key is never fresher than it
// was, and each sits in the slot it had (its window and home are those of
// the same capacity). The table's latest claim time is kept the same way,
// so a key that comes back with an earlier `now` still owes what it owed.
//
// restore() refuses, changing nothing, with the account's codes and rules
// (account_restore_errc): bytes that are not a snapshot (bad_format), of an
// unknown version (wrong_version), of a table configured otherwise or under
// another seed (other_configuration), short or long (truncated), whose
// checksum does not match (corrupted; it only catches accidents), or whose
// fields do not fit this table (out_of_range: more entries than the
// capacity, slots not ascending or outside their hash's window, a hash held
// twice, a class index not the table's, nothing owed or more than a
// class's whole tick range, a lead past INT64_MAX). It refuses with in_use a
// table that has started taking traffic (any entry claimed, pinned or
// erased since construction or the last restore), and a misconfigured
// table (bad_class at every call) with other_configuration.
//
// Tickets. restore() draws a new table identity (keyed/ticket.hpp), so no
// keyed_ticket issued before it, by the snapshot's table or any other,
// gives anything back into the restored table: each restored entry's debt
// already counts what those tickets took, and its claim generation starts
// again, so a ticket dead in the old table (its key erased or evicted and
// claimed again) would otherwise name a live entry. The cost is on the
// safe side: units of admissions in flight across a restore are not given
// back.
//
// Concurrency. snapshot() is thread-safe with everything: it pins each live
// entry while it reads it (so it cannot be reclaimed under the read), and
// an admission racing it lands in this snapshot or after it. A key that
// moved to another entry during the scan (reclaimed or erased, then
// claimed again) is stored once, with the larger of its two debts. restore() must
// not race any other use: restore into a new table, before sharing it.
#ifndef TOLLGATE_KEYED_SNAPSHOT_HPP
#define TOLLGATE_KEYED_SNAPSHOT_HPP

// #include <tollgate/keyed_buckets.hpp>  (already above)
// #include <tollgate/account/snapshot.hpp>  (already above)
// #include <tollgate/keyed/snapshot_frame.hpp>  (inlined below)
// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// keyed/snapshot_frame.hpp: the parts of a keyed table's snapshot that do
// not depend on what an entry holds (keyed_buckets, keyed_windows,
// keyed_permits and keyed_budgets): the frame (a 4-byte
// tag, little-endian u64 words, the account's FNV-1a checksum last), the
// "not in use" test, and the entries a restore frees so that lookups reach
// the restored ones past them.
#ifndef TOLLGATE_KEYED_SNAPSHOT_FRAME_HPP
#define TOLLGATE_KEYED_SNAPSHOT_FRAME_HPP

// #include <tollgate/config.hpp>  (already above)
// #include <tollgate/account/snapshot.hpp>  (already above)
// #include <tollgate/keyed/claim.hpp>  (already above)

#include <cstddef>
#include <cstdint>
#include <string_view>

TOLLGATE_BEGIN_NAMESPACE
namespace detail {

// Opens a snapshot: checks the tag, the least size (`head` words after the
// tag, and the checksum) and the checksum, and leaves `r` on the words
// after the tag, the checksum cut off. The checksum comes before any length
// is read, so a corrupted length is never trusted.
inline account_restore_errc open_keyed_snapshot(std::string_view bytes, std::string_view tag, std::size_t head,
                                                byte_reader& r) noexcept {
  using E = account_restore_errc;
  if (bytes.size() < tag.size() + 8 || bytes.substr(0, tag.size()) != tag) return E::bad_format;
  if (bytes.size() < tag.size() + 8 * (head + 1)) return E::truncated;
  byte_reader tail{bytes.substr(bytes.size() - 8)};
  std::uint64_t sum = 0;
  (void)tail.u64(sum);
  if (fnv1a(bytes.substr(0, bytes.size() - 8)) != sum) return E::corrupted;
  r = byte_reader{bytes.substr(0, bytes.size() - 8)};
  (void)r.skip(tag.size());
  return E::ok;
}

// Whether no entry was ever claimed, pinned or erased since construction or
// the last restore (each advances its version; both leave version 0).
// relaxed: restore() must not race other use, so this reads this thread's past.
template <class State>
bool keyed_untouched(const keyed_slots<State>& slots) noexcept {
  using S = keyed_slots<State>;
  for (std::size_t s = 0; s < slots.capacity(); ++s) {
    if ((slots[s].ctl.load(std::memory_order_relaxed) & S::ver_mask) != 0) return false;
  }
  return true;
}

// Lookups stop at an empty entry: the entries between a restored one's
// home and its slot become free (they were occupied in the old table).
// relaxed: restore() only, before sharing.
template <class State>
void keyed_free_before(keyed_slots<State>& slots, std::uint64_t hash, std::size_t slot) noexcept {
  using S = keyed_slots<State>;
  for (std::size_t i = 0, home = slots.home_of(hash); slots.at(home, i) != slot; ++i) {
    typename S::entry& e = slots[slots.at(home, i)];
    if (e.ctl.load(std::memory_order_relaxed) == S::st_empty) e.ctl.store(S::st_free, std::memory_order_relaxed);
  }
}

// Whether `slot` lies in the probe window of `hash`.
template <class State>
bool keyed_in_window(const keyed_slots<State>& slots, std::uint64_t hash, std::uint64_t slot) noexcept {
  if (slot >= slots.capacity()) return false;
  const std::size_t home = slots.home_of(hash), s = static_cast<std::size_t>(slot);
  const std::size_t dist = s >= home ? s - home : s + slots.capacity() - home;
  return dist < slots.window();
}

}  // namespace detail
TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_KEYED_SNAPSHOT_FRAME_HPP

#include <algorithm>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

TOLLGATE_BEGIN_NAMESPACE

template <class Clock, class Hash>
std::uint64_t keyed_buckets<Clock, Hash>::fingerprint() const noexcept {
  detail::byte_writer w;
  w.u64(capacity_);
  w.u64(window_);
  w.u64(params_.size());
  for (const detail::gcra_params& p : params_) {
    w.u64(p.scale);
    w.u64(p.interval);
    w.u64(p.burst);
  }
  w.u64(hash_(std::uint64_t{0x746f6c6c67617465ULL}));
  w.u64(hash_(std::string_view("tollgate keyed table")));
  return w.checksum();
}

template <class Clock, class Hash>
std::string keyed_buckets<Clock, Hash>::snapshot(nanoseconds now, nanoseconds wall) const {
  struct row {
    std::uint64_t slot, hash, cls, owed;
  };
  std::vector<row> rows;
  for (std::size_t s = 0; s < capacity_; ++s) {
    entry& e = slots_[s];
    // acquire: as in pin() (pairs with the publish store).
    std::uint64_t c = e.ctl.load(std::memory_order_acquire);
    for (;;) {
      if (state_of(c) != st_live) break;  // free, erased, or a claim not yet published: fresh
      if ((c & pin_mask) == pin_mask) {  // as in pin(): wait for one of 32767 admissions
        std::this_thread::yield();
        c = e.ctl.load(std::memory_order_acquire);  // acquire: as above
        continue;
      }
      // acq_rel / acquire: the pin of pin(): while pinned the entry cannot
      // be reclaimed, so its hash and class are its occupant's.
      if (!e.ctl.compare_exchange_weak(c, c + pin_one + ver_one, std::memory_order_acq_rel, std::memory_order_acquire))
        continue;
      const detail::gcra_params& p = params_[class_of(c)];
      // relaxed: stable while pinned (hash), or a moment of the bucket (TAT), as in admit().
      const std::uint64_t h = e.hash.load(std::memory_order_relaxed);
      std::uint64_t tat = e.s.tat.load(std::memory_order_relaxed);
      if (sealed(tat)) tat = start_ticks(p);  // what the seal stands for (our pin fails its claim)
      const std::uint64_t now_t = ticks(now, p);
      if (tat > now_t) {
        rows.push_back(row{s, h, class_of(c), static_cast<std::uint64_t>(ticks_to_ns(tat - now_t, p).count())});
      }
      unpin(e);
      break;
    }
  }
  // A key reclaimed or erased and claimed again in another entry while we
  // scanned shows twice: keep its larger debt (the safe side), in one of
  // its slots.
  std::sort(rows.begin(), rows.end(), [](const row& x, const row& y) {
    return x.hash != y.hash ? x.hash < y.hash : x.owed > y.owed;
  });
  rows.erase(std::unique(rows.begin(), rows.end(), [](const row& x, const row& y) { return x.hash == y.hash; }),
             rows.end());
  std::sort(rows.begin(), rows.end(), [](const row& x, const row& y) { return x.slot < y.slot; });
  detail::byte_writer w;
  w.raw("TGK1", 4);
  w.u64(snapshot_version);
  w.u64(fingerprint());
  w.u64(static_cast<std::uint64_t>(wall.count()));
  const std::uint64_t since = detail::positive_difference(now.count(), origin_);
  const std::uint64_t latest = start_time();
  w.u64(latest > since ? latest - since : 0);
  w.u64(rows.size());
  for (const row& r : rows) {
    w.u64(r.slot);
    w.u64(r.hash);
    w.u64(r.cls);
    w.u64(r.owed);
  }
  w.u64(w.checksum());
  return w.out;
}

template <class Clock, class Hash>
account_restore_errc keyed_buckets<Clock, Hash>::restore(std::string_view bytes, nanoseconds now, nanoseconds wall) {
  using E = account_restore_errc;
  // In use: any entry claimed, pinned or erased (construction and restore
  // leave version 0), or any admission (they do not pin: admitted_).
  // relaxed: restore() must not race any other use.
  if (!detail::keyed_untouched(slots_) || admitted_.load(std::memory_order_relaxed)) return E::in_use;
  detail::byte_reader r{bytes};
  // The tag, then the checksum before any length is read.
  const E opened = detail::open_keyed_snapshot(bytes, "TGK1", 5, r);
  if (opened != E::ok) return opened;
  std::uint64_t ver = 0, fp = 0, then = 0, ahead = 0, n = 0;
  if (!r.u64(ver) || !r.u64(fp) || !r.u64(then) || !r.u64(ahead) || !r.u64(n)) return E::truncated;
  if (ver != snapshot_version) return E::wrong_version;
  if (capacity_ == 0 || fp != fingerprint()) return E::other_configuration;
  constexpr std::uint64_t top = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
  if (ahead > top || n > capacity_) return E::out_of_range;
  if (r.left() / 32 < n) return E::truncated;
  struct row {
    std::uint64_t slot, hash, cls, owed;
  };
  std::vector<row> rows;
  rows.reserve(static_cast<std::size_t>(n));
  for (std::uint64_t k = 0; k < n; ++k) {
    row x{};
    (void)r.u64(x.slot);
    (void)r.u64(x.hash);
    (void)r.u64(x.cls);
    (void)r.u64(x.owed);
    // Its slot must lie in its hash's window, slots ascending.
    if (!detail::keyed_in_window(slots_, x.hash, x.slot) || (k > 0 && x.slot <= rows.back().slot))
      return E::out_of_range;
    if (x.cls >= params_.size()) return E::out_of_range;
    const detail::gcra_params& p = params_[static_cast<std::size_t>(x.cls)];
    // The most an entry can owe: its class's whole tick range, rounded up.
    const std::uint64_t most = detail::ceil_div(L::max_ticks, p.scale) + 1;
    if (x.owed == 0 || x.owed > most || x.owed > top) return E::out_of_range;
    rows.push_back(x);
  }
  if (r.left() != 0) return E::truncated;
  {
    std::vector<std::uint64_t> hs;
    hs.reserve(rows.size());
    for (const row& x : rows) hs.push_back(x.hash);
    std::sort(hs.begin(), hs.end());
    if (std::adjacent_find(hs.begin(), hs.end()) != hs.end()) return E::out_of_range;  // a key in two entries
  }

  // Everything checked: apply. The wall-clock time between snapshot and
  // restore, zero if the clock went backwards.
  const detail::i128 gap = static_cast<detail::i128>(wall.count()) - static_cast<std::int64_t>(then);
  const std::uint64_t down = gap <= 0 ? 0 : gap >= static_cast<detail::i128>(top) ? top : static_cast<std::uint64_t>(gap);
  // relaxed stores throughout: nothing may use the table during restore();
  // the caller's hand-off to other threads publishes it.
  // A new identity: the restored entries restart their claim generations,
  // so a ticket of the snapshot's table (or of any other) could name one
  // of them; with another identity none gives anything back here.
  id_ = detail::next_keyed_table_id();
  admitted_.store(false, std::memory_order_relaxed);
  for (std::size_t s = 0; s < capacity_; ++s) {
    slots_[s].ctl.store(0, std::memory_order_relaxed);
    slots_.set_hint(s, 0);
    slots_[s].claim.store(0, std::memory_order_relaxed);
  }
  const std::uint64_t since = detail::positive_difference(now.count(), origin_);
  const std::uint64_t lead = ahead > down ? ahead - down : 0;
  const std::uint64_t latest = detail::sat_add(since, lead);
  slots_.set_start_time(latest > start_time() ? latest : start_time());
  for (const row& x : rows) {
    if (x.owed <= down) continue;  // owed nothing by now: fresh
    const std::size_t slot = static_cast<std::size_t>(x.slot), cls = static_cast<std::size_t>(x.cls);
    const detail::gcra_params& p = params_[cls];
    entry& e = slots_[slot];
    const std::uint64_t tat = detail::sat_add(ticks(now, p), detail::sat_mul(x.owed - down, p.scale));
    e.hash.store(x.hash, std::memory_order_relaxed);
    slots_.set_hint(slot, x.hash);
    e.s.tat.store(tat > L::max_ticks ? L::max_ticks : tat, std::memory_order_relaxed);
    e.claim.store(1, std::memory_order_relaxed);
    e.ctl.store(st_live | (static_cast<std::uint64_t>(cls) << cls_shift), std::memory_order_relaxed);
  }
  for (const row& x : rows) {
    if (x.owed > down) detail::keyed_free_before(slots_, x.hash, static_cast<std::size_t>(x.slot));
  }
  return E::ok;
}

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_KEYED_SNAPSHOT_HPP

#endif  // TOLLGATE_KEYED_BUCKETS_HPP
// #include <tollgate/keyed_permits.hpp>  (inlined below)
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

// #include <tollgate/config.hpp>  (already above)
// #include <tollgate/decision.hpp>  (already above)
// #include <tollgate/detail/atomic.hpp>  (already above)
// #include <tollgate/error.hpp>  (already above)
// #include <tollgate/keyed/claim.hpp>  (already above)
// #include <tollgate/keyed/key.hpp>  (already above)

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

// #include <tollgate/keyed/permit_snapshot.hpp>  (inlined below)
// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// keyed/permit_snapshot.hpp: a keyed_permits table as bytes, and back. No
// I/O: the caller stores the bytes. Included by keyed_permits.hpp after the
// class.
//
// What a restore means. A permits table holds nothing but the units its
// holders hold, and a restart ends every holder. But a gateway's holders
// are requests it sent to a server, and the server does not stop counting
// them when the gateway dies: a generation the client abandoned usually
// runs to its end, and counts against the server's concurrency limit of the
// key until then. A restarted gateway that admitted a full limit at once
// could send twice the limit for a while. So restore() hands the units each
// key held at the snapshot back as permits (a keyed_permit_holds, one
// permit per key), held in the restored table like any other, and says how
// long to keep them: `hold` (the longest a request may run at the server,
// counted from the snapshot: your request timeout) less the wall-clock time
// between snapshot and restore. The table has no clock: the caller releases
// them (clear() or let them go) when keep_for has passed, or earlier when
// it learns those requests are over (the server's own count, say). A hold
// of zero, or one the downtime used up, restores nothing held: the contract
// that a restart releases everything, chosen explicitly. Only units held at
// the snapshot come back; requests started after it are not known.
//
// Format 2 (format 1, the same fields with keys under SipHash-2-4, is
// refused with wrong_version): "TGP1", then little-endian u64 fields: version, the table's
// fingerprint (capacity, window, every class's limit, and the hash of two
// fixed probe keys, so a table under another seed or hash is told apart
// without storing the seed), the wall-clock time, the number of entries n,
// then n x (slot, hash, class, held), slots strictly ascending; and the
// FNV-1a checksum of every byte before it. Entries that hold nothing, and
// erased ones (their limit was reset), are not stored.
//
// restore() refuses, changing nothing (`out` included), with the account's
// codes (account_restore_errc): bytes that are not a snapshot (bad_format),
// of an unknown version (wrong_version), of a table configured otherwise or
// under another seed (other_configuration: another capacity, window, limit
// list or seed; also a misconfigured table), short or long (truncated),
// whose checksum does not match (corrupted; it only catches accidents), or
// whose fields do not fit this table (out_of_range: more entries than the
// capacity, slots not ascending or outside their hash's window, a hash held
// twice, a class index not the table's, held zero or above its class's
// limit). A hold below zero is zero. It refuses with in_use a table that has started
// taking traffic (any entry claimed, pinned or erased since construction)
// or that holds restored permits: a restore that gave permits back makes
// the table in use (those permits release into its entries); one that gave
// none back does not. On success `out` is replaced (permits it held are
// released first).
//
// Concurrency. snapshot() is thread-safe with everything: it pins each live
// entry while it reads its held count (a moment of it: permits acquired or
// released at the same time land in it or not). A key that moved to another
// entry during the scan (erased, then claimed again) is stored once, with
// the larger count. restore() must not race any other use: restore into a
// new table, before sharing it. The permits in `out` must not outlive the
// table, as any permit.
#ifndef TOLLGATE_KEYED_PERMIT_SNAPSHOT_HPP
#define TOLLGATE_KEYED_PERMIT_SNAPSHOT_HPP

// #include <tollgate/keyed_permits.hpp>  (already above)
// #include <tollgate/keyed/snapshot_frame.hpp>  (already above)

#include <algorithm>
#include <limits>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

TOLLGATE_BEGIN_NAMESPACE

// The units a restore gave back, and how long to keep them (see above).
struct keyed_permit_holds {
  std::vector<keyed_permit> permits;  // one per key that held units at the snapshot
  nanoseconds keep_for{0};            // from the restore; zero when nothing came back
  std::uint64_t units() const noexcept {
    std::uint64_t u = 0;
    for (const keyed_permit& p : permits) u += p.count();
    return u;
  }
  void clear() noexcept {
    permits.clear();
    keep_for = nanoseconds(0);
  }
};

template <class Hash>
std::uint64_t keyed_permits<Hash>::fingerprint() const noexcept {
  detail::byte_writer w;
  w.u64(slots_.capacity());
  w.u64(slots_.window());
  w.u64(limits_.size());
  for (const std::uint64_t l : limits_) w.u64(l);
  w.u64(hash_(std::uint64_t{0x746f6c6c67617465ULL}));
  w.u64(hash_(std::string_view("tollgate keyed table")));
  return w.checksum();
}

template <class Hash>
std::string keyed_permits<Hash>::snapshot(nanoseconds wall) const {
  struct row {
    std::uint64_t slot, hash, cls, held;
  };
  std::vector<row> rows;
  for (std::size_t s = 0; s < slots_.capacity(); ++s) {
    typename S::entry& e = slots_[s];
    // acquire: as in keyed_slots::pin() (pairs with the publish CAS).
    std::uint64_t c = e.ctl.load(std::memory_order_acquire);
    for (;;) {
      if (S::state_of(c) != S::st_live) break;  // free, erased, or a claim not yet published
      if ((c & S::pin_mask) == S::pin_mask) {  // as in pin(): wait for one of the calls in progress
        std::this_thread::yield();
        c = e.ctl.load(std::memory_order_acquire);  // acquire: as above
        continue;
      }
      // acq_rel / acquire: the pin of keyed_slots::pin(): while pinned the
      // entry cannot be reclaimed, so its hash and class are its occupant's.
      if (!e.ctl.compare_exchange_weak(c, c + S::pin_one + S::ver_one, std::memory_order_acq_rel,
                                       std::memory_order_acquire))
        continue;
      // relaxed: stable while pinned (hash), or a moment of the count, as in held().
      const std::uint64_t h = e.hash.load(std::memory_order_relaxed);
      const std::uint64_t u = e.s.held.load(std::memory_order_relaxed);
      S::unpin(e);
      if (u != 0) rows.push_back(row{s, h, S::class_of(c), u});
      break;
    }
  }
  // A key erased and claimed again in another entry while we scanned shows
  // twice: keep its larger count (the safe side).
  std::sort(rows.begin(), rows.end(), [](const row& x, const row& y) {
    return x.hash != y.hash ? x.hash < y.hash : x.held > y.held;
  });
  rows.erase(std::unique(rows.begin(), rows.end(), [](const row& x, const row& y) { return x.hash == y.hash; }),
             rows.end());
  std::sort(rows.begin(), rows.end(), [](const row& x, const row& y) { return x.slot < y.slot; });
  detail::byte_writer out;
  out.raw("TGP1", 4);
  out.u64(snapshot_version);
  out.u64(fingerprint());
  out.u64(static_cast<std::uint64_t>(wall.count()));
  out.u64(rows.size());
  for (const row& r : rows) {
    out.u64(r.slot);
    out.u64(r.hash);
    out.u64(r.cls);
    out.u64(r.held);
  }
  out.u64(out.checksum());
  return out.out;
}

template <class Hash>
account_restore_errc keyed_permits<Hash>::restore(std::string_view bytes, nanoseconds wall, nanoseconds hold,
                                                  keyed_permit_holds& out) {
  using E = account_restore_errc;
  if (!detail::keyed_untouched(slots_)) return E::in_use;
  detail::byte_reader r{bytes};
  const E opened = detail::open_keyed_snapshot(bytes, "TGP1", 4, r);
  if (opened != E::ok) return opened;
  std::uint64_t ver = 0, fp = 0, then = 0, n = 0;
  if (!r.u64(ver) || !r.u64(fp) || !r.u64(then) || !r.u64(n)) return E::truncated;
  if (ver != snapshot_version) return E::wrong_version;
  if (slots_.capacity() == 0 || fp != fingerprint()) return E::other_configuration;
  if (n > slots_.capacity()) return E::out_of_range;
  if (r.left() / 32 < n) return E::truncated;
  struct row {
    std::uint64_t slot, hash, cls, held;
  };
  std::vector<row> rows;
  rows.reserve(static_cast<std::size_t>(n));
  for (std::uint64_t k = 0; k < n; ++k) {
    row x{};
    (void)r.u64(x.slot);
    (void)r.u64(x.hash);
    (void)r.u64(x.cls);
    (void)r.u64(x.held);
    if (!detail::keyed_in_window(slots_, x.hash, x.slot) || (k > 0 && x.slot <= rows.back().slot))
      return E::out_of_range;
    if (x.cls >= limits_.size()) return E::out_of_range;
    if (x.held == 0 || x.held > limits_[static_cast<std::size_t>(x.cls)]) return E::out_of_range;
    rows.push_back(x);
  }
  if (r.left() != 0) return E::truncated;
  {
    std::vector<std::uint64_t> hs;
    hs.reserve(rows.size());
    for (const row& x : rows) hs.push_back(x.hash);
    std::sort(hs.begin(), hs.end());
    if (std::adjacent_find(hs.begin(), hs.end()) != hs.end()) return E::out_of_range;  // a key in two entries
  }

  // Everything checked: apply. The wall-clock time between snapshot and
  // restore, zero if the clock went backwards.
  constexpr std::uint64_t top = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
  const detail::i128 gap = static_cast<detail::i128>(wall.count()) - static_cast<std::int64_t>(then);
  const std::uint64_t down = gap <= 0 ? 0 : gap >= static_cast<detail::i128>(top) ? top : static_cast<std::uint64_t>(gap);
  const std::uint64_t h = hold.count() <= 0 ? 0 : static_cast<std::uint64_t>(hold.count());
  keyed_permit_holds back;
  if (h <= down || rows.empty()) {  // nothing held any more: the table as new
    out = std::move(back);
    return E::ok;
  }
  back.keep_for = nanoseconds(static_cast<std::int64_t>(h - down));
  back.permits.reserve(rows.size());
  // relaxed stores throughout: nothing may use the table during restore();
  // the caller's hand-off to other threads publishes it. Each restored
  // entry is live with one pin (its permit's, which the permit's release
  // takes) and version 1: the table is in use.
  for (const row& x : rows) {
    const std::size_t slot = static_cast<std::size_t>(x.slot);
    typename S::entry& e = slots_[slot];
    e.hash.store(x.hash, std::memory_order_relaxed);
    slots_.set_hint(slot, x.hash);
    e.s.held.store(x.held, std::memory_order_relaxed);
    e.claim.store(1, std::memory_order_relaxed);
    e.ctl.store(S::st_live | (x.cls << S::cls_shift) | S::pin_one | S::ver_one, std::memory_order_relaxed);
    back.permits.push_back(keyed_permit(&slots_, slot, x.held, {decision::admit(), keyed_status::admitted}));
  }
  for (const row& x : rows) detail::keyed_free_before(slots_, x.hash, static_cast<std::size_t>(x.slot));
  out = std::move(back);
  return E::ok;
}

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_KEYED_PERMIT_SNAPSHOT_HPP

#endif  // TOLLGATE_KEYED_PERMITS_HPP
// #include <tollgate/keyed_budgets.hpp>  (inlined below)
// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// keyed_budgets.hpp: a spending limit per key (per tenant, per API key)
// with reserve -> settle, in a fixed-capacity table that never allocates
// after its construction and never forgets what a key has spent.
//
// Table. As keyed_buckets (keyed_buckets.hpp: the keyed hash under the
// user's seed, linear probing over a window of `window` entries, at most 64
// limit classes chosen by the call that claims a key's entry), with
// entries of 72 bytes (memory: 72 x capacity bytes plus the class list),
// allocated once by the constructor.
//
// Guarantee. For every key, reservations are admitted only while its
// reserved + settled total stays within its class's limit, so as long as
// every call settles at or below what it reserved, the settled total of
// the key's entry never exceeds the limit (budget.hpp's rule, per key,
// with its zero and saturation rules). Lossless eviction: with
// keyed_budget_reuse::never (the default) an entry is never reclaimed for
// another key: only erase() frees it (the user's explicit reset), so a
// table full of keys refuses new ones with keyed_status::table_full and a
// flood of new keys changes no entry. With keyed_budget_reuse::idle the
// user says budgets reset: an entry with no reservation held may be
// reclaimed, and its key, when it comes back, starts over with a whole
// budget. A held reservation pins its entry: it is
// never reclaimed under it, and an erased one stays out of use until the
// reservations held on it are settled or dropped, into it.
//
// Periods. A table built with a budget_calendar resets its budgets on a
// calendar period of one fixed UTC offset (the whole table: a table per
// period), read from system_clock time (ns since 1970-01-01Z; the
// overloads without `now` read system_clock): budget_period::day (from
// midnight to midnight) or month (from midnight of the first), exact
// Gregorian months and leap years (detail/civil.hpp), in a zone such as
// +05:45 or -12:00. The default, none, is the behaviour above: no time at
// all. Each entry's totals are one word {period, committed}: at the first
// reserve or settle on a key whose `now` is in a later period than its
// entry's, the entry moves to that period, its settled total starts over,
// and what the key's reservations still hold is carried into the new period
// as committed. So the guarantee above holds per period: a reservation is
// admitted only while what is settled in the period plus what is held stays
// within the limit, and the settled total of every period is within the
// limit when every call settles at or below what it reserved. The rules at
// the edges:
// - A reservation admitted in period P and settled in P+1 or later is
//   charged to the period of the settle (its amount was carried into each
//   period since, as committed, and its cost replaces it there); P keeps
//   none of it as settled. reservation.period() names the period charged.
//   One dropped unsettled stays committed in the period of the drop and is
//   carried no further. spent() is the settled total of the entry's period.
// - A `now` before the entry's period (time going backwards, across a
//   boundary or not) is decided in the entry's period, against its total:
//   it never reopens an earlier period's room. So one call at a bogus
//   far-future `now` moves the key into that period for good; erase() is the
//   way out. Times before 1970-01-01 at the offset are all in period 0.
// - Every int64 `now` has an exact period (the year 2262 is month 3507).
//   Limits are at most max_day_limit (about 140,737 units of the currency)
//   for days and max_month_limit (about 4.5 million) for months: the period
//   index shares the word; totals past that saturate as above, for the
//   rest of the period (a new period starts over).
// - A key whose entry is new (first seen, erased, reclaimed with idle)
//   starts with a whole budget in the period of its `now`. erase() and
//   idle reuse are resets, as above; a period ending frees no entry.
// - Threads. The period in the word only grows, and every rollover is a CAS
//   on the word that names the period it leaves, so a call that stalled
//   across a rollover cannot reset the newer period's total nor charge into
//   the finished one (its CAS fails; it decides again in the word's period).
//   What a rollover carries is read from a per-entry total of held amounts
//   that may also count, for a moment, a reserve being decided or a settle
//   just made: a rollover racing those carries them too (the safe side: the
//   new period has that much less room). Without a rollover racing them,
//   decisions are exact against the entry's total.
// Entries stay 64 bytes (the held total takes 8 of the spare bytes).
//
// Restart. snapshot() / restore() (keyed/budget_snapshot.hpp) keep every
// live entry's totals and period as they are; what reservations hold at the
// snapshot stays committed in the entry's period (as if dropped there),
// since a request in flight may be billed though its holder died. No key spends
// more in a period than it could without the restart, and a restore (or a
// clock that went backwards) never reopens money of a period.
//
// Collisions. Two keys with one 64-bit hash share one entry and its limit
// (the conservative side); keyed_buckets.hpp states the probabilities.
//
// Decisions. reserve() of zero or less is admitted and holds nothing (no
// entry claimed). An amount over the key's class limit is refused (status
// limited, `missing` set) without claiming an entry for a new key; so is
// one that does not fit what is left. A key holding about max_held (16383)
// reservations at once is refused (status limited, `busy` set). A bad
// class index is keyed_status::bad_class. Limits are positive money. With
// a period, a reserve is also refused (`busy`) when the amounts held and
// in flight on its entry would pass 2^63 nano-units (over 2,000 calls of
// near the largest limit at once).
//
// Concurrency contract. Every member function is thread-safe and
// lock-free except as keyed/claim.hpp states for claims of one new key
// racing each other (obstruction-free) and for a pin that finds 32767 pins
// on its entry. A reservation must not outlive its table. It is
// move-only; settle or release it through its table exactly once; one
// dropped unsettled keeps its money committed (the safe side) and unpins
// its entry. remaining, spent and contains may be stale the moment they
// return.
#ifndef TOLLGATE_KEYED_BUDGETS_HPP
#define TOLLGATE_KEYED_BUDGETS_HPP

// #include <tollgate/clock.hpp>  (already above)
// #include <tollgate/config.hpp>  (already above)
// #include <tollgate/detail/atomic.hpp>  (already above)
// #include <tollgate/detail/civil.hpp>  (inlined below)
// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// detail/civil.hpp: exact proleptic Gregorian arithmetic on whole days since
// 1970-01-01, and the calendar periods (days, months) of a fixed UTC offset
// that keyed_budgets resets on. Integers only: no <chrono> calendar types
// (C++17), no floating point, no table beyond the month lengths. Nothing here
// is public API.
//
// Periods are counted from the one that holds 1970-01-01 00:00 at the offset
// (index 0); every time before it is in period 0 too (as calendar_quota counts
// its days). A `now` is a system_clock reading (ns since 1970-01-01Z), taken
// in 128 bits with the offset, so every int64 `now` has an exact period:
// at most 106,753 days or 3,508 months, so a day index fits 17 bits and a
// month index 12.
#ifndef TOLLGATE_DETAIL_CIVIL_HPP
#define TOLLGATE_DETAIL_CIVIL_HPP

// #include <tollgate/config.hpp>  (already above)
// #include <tollgate/detail/arith.hpp>  (already above)

#include <cstdint>
#include <limits>

TOLLGATE_BEGIN_NAMESPACE
namespace detail {

constexpr bool civil_leap(std::int64_t y) noexcept { return y % 4 == 0 && (y % 100 != 0 || y % 400 == 0); }

// Leap years among 1..n (n >= 0).
constexpr std::int64_t civil_leaps_through(std::int64_t n) noexcept { return n / 4 - n / 100 + n / 400; }

// Days from 1970-01-01 to 1 January of year y (y >= 1970).
constexpr std::int64_t civil_year_start(std::int64_t y) noexcept {
  return 365 * (y - 1970) + civil_leaps_through(y - 1) - civil_leaps_through(1969);
}

// Days from 1 January to the first of month m (1..12), in a leap year or not.
constexpr std::int64_t civil_month_offset(bool leap, unsigned m) noexcept {
  constexpr std::int64_t before[12] = {0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334};
  return before[m - 1] + (m > 2 && leap ? 1 : 0);
}

// Months since 1970-01 of day d (days since 1970-01-01, d >= 0).
constexpr std::uint64_t civil_month_of_day(std::int64_t d) noexcept {
  // d / 366 is at most the year offset; a year is 365 or 366 days, so the
  // guess is short by at most d / 366 - d / 365.25 + 1: a few steps.
  std::int64_t y = 1970 + d / 366;
  while (civil_year_start(y + 1) <= d) ++y;
  const std::int64_t day_of_year = d - civil_year_start(y);
  const bool leap = civil_leap(y);
  // No month is longer than 31 days, so the month is at least this; the
  // loop runs at most twice.
  unsigned m = static_cast<unsigned>(day_of_year / 31) + 1;
  while (m < 12 && civil_month_offset(leap, m + 1) <= day_of_year) ++m;
  return static_cast<std::uint64_t>((y - 1970) * 12 + static_cast<std::int64_t>(m) - 1);
}

// The first day (days since 1970-01-01) of month q (months since 1970-01).
constexpr std::int64_t civil_month_start(std::uint64_t q) noexcept {
  const std::int64_t y = 1970 + static_cast<std::int64_t>(q / 12);
  return civil_year_start(y) + civil_month_offset(civil_leap(y), static_cast<unsigned>(q % 12) + 1);
}

enum class period_kind : std::uint8_t { none, day, month };

// The periods of one calendar: which period a `now` is in, and when one
// starts. Plain values, fixed at construction.
struct calendar_periods {
  static constexpr std::int64_t day_ns = 86400LL * 1000000000LL;
  // Above every index an int64 `now` maps to, with the offset.
  static constexpr std::uint64_t max_day_index = 106753, max_month_index = 3508;

  period_kind kind = period_kind::none;
  std::int64_t offset_ns = 0;  // the zone's offset from UTC, at most +-24 h

  // The period of `now`; 0 for `none` and for every time before 1970-01-01
  // at the offset.
  constexpr std::uint64_t index(std::int64_t now) const noexcept {
    if (kind == period_kind::none) return 0;
    const i128 local = static_cast<i128>(now) + offset_ns;
    if (local < 0) return 0;
    // A 64-bit division wherever it fits (the 128-bit one is a library
    // call); the days fit int64 either way (local < 2^63 + 1 day).
    const std::int64_t days = local <= std::numeric_limits<std::int64_t>::max()
                                  ? static_cast<std::int64_t>(local) / day_ns
                                  : static_cast<std::int64_t>(local / day_ns);
    return kind == period_kind::day ? static_cast<std::uint64_t>(days) : civil_month_of_day(days);
  }
  // When period q starts (ns since 1970-01-01Z; may lie outside int64).
  constexpr i128 start(std::uint64_t q) const noexcept {
    const std::int64_t days = kind == period_kind::day ? static_cast<std::int64_t>(q) : civil_month_start(q);
    return static_cast<i128>(days) * day_ns - offset_ns;
  }
  // From `now` to the start of the next period: at least 1 ns, INT64_MAX
  // when that start is INT64_MAX or more ns away (or never, for `none`).
  constexpr std::int64_t reset_in(std::int64_t now) const noexcept {
    constexpr std::int64_t top = std::numeric_limits<std::int64_t>::max();
    if (kind == period_kind::none) return top;
    const i128 gap = start(index(now) + 1) - now;
    return gap >= top ? top : gap < 1 ? 1 : static_cast<std::int64_t>(gap);
  }
};

}  // namespace detail
TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_DETAIL_CIVIL_HPP
// #include <tollgate/error.hpp>  (already above)
// #include <tollgate/keyed/budget_reservation.hpp>  (inlined below)
// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// keyed/budget_reservation.hpp: the parts of a per-key budget table
// (keyed_budgets.hpp) that a caller holds or names: the reservation that
// reserve() hands out, the reuse rule and the calendar period a table is
// built with, and the state of one entry.
//
// A reservation holds its amount of one key's budget until it is settled
// (keyed_budgets::settle), released, dropped or destroyed: move-only, and
// dropped at most once. Dropping (or destroying) it unsettled keeps its
// money committed: in a table with a period, in the entry's period of that
// moment and no later one. Not thread-safe itself (one owner); its table is.
#ifndef TOLLGATE_KEYED_BUDGET_RESERVATION_HPP
#define TOLLGATE_KEYED_BUDGET_RESERVATION_HPP

// #include <tollgate/config.hpp>  (already above)
// #include <tollgate/detail/atomic.hpp>  (already above)
// #include <tollgate/keyed/claim.hpp>  (already above)
// #include <tollgate/keyed/key.hpp>  (already above)
// #include <tollgate/money.hpp>  (already above)

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <utility>

TOLLGATE_BEGIN_NAMESPACE

template <class Currency, class Hash>
class keyed_budgets;

namespace detail {
struct keyed_budget_state {
  // Without a period: reserved + settled, nano-units; negative: saturated
  // (budget.hpp). With one: the word {period, committed} (keyed_budgets).
  atomic<std::int64_t> committed{0};
  atomic<std::int64_t> spent{0};  // settled, nano-units; with a period the word {period, spent}
  // With a period: what the reservations pinning the entry hold (or are
  // about to hold, or have just settled), nano-units: what a rollover
  // carries. Unused without a period.
  atomic<std::int64_t> held{0};
};
using keyed_budget_slots = keyed_slots<keyed_budget_state>;
}  // namespace detail

enum class keyed_budget_reuse : std::uint8_t {
  never,  // only erase() frees an entry
  idle,   // budgets reset: an entry with no reservation held may be reclaimed
};

// The calendar period a table's budgets reset on (see the header).
enum class budget_period : std::uint8_t {
  none,   // never (only erase, or reuse idle): the default
  day,    // at every midnight of the offset
  month,  // at midnight of the first of every month of the offset
};
struct budget_calendar {
  budget_period period = budget_period::none;
  std::chrono::minutes utc_offset{0};  // the zone whose midnight resets (+05:45 is 345); at most +-24 h
};

template <class C>
class keyed_reservation {
 public:
  keyed_reservation() noexcept = default;
  keyed_reservation(const keyed_reservation&) = delete;
  keyed_reservation& operator=(const keyed_reservation&) = delete;
  keyed_reservation(keyed_reservation&& o) noexcept { take(o); }
  keyed_reservation& operator=(keyed_reservation&& o) noexcept {
    if (this != &o) {
      drop();
      take(o);
    }
    return *this;
  }
  ~keyed_reservation() { drop(); }

  money<C> amount;   // what is held
  money<C> missing;  // when refused: how much more budget it would have needed
  keyed_status status = keyed_status::bad_class;
  bool busy = false;       // refused: the key holds max_held reservations
  bool saturated = false;  // refused: the key's totals overflowed (budget.hpp)
  bool admitted() const noexcept { return status == keyed_status::admitted; }
  explicit operator bool() const noexcept { return admitted(); }
  // Whether it still holds money (admitted, not settled, not dropped).
  bool held() const noexcept { return owner_ != nullptr; }

  // With a period: the period (keyed_budgets::period_at) its money counts
  // in: the one it was admitted in, and once settled the one it was charged
  // to. 0 without a period.
  std::uint64_t period() const noexcept { return period_; }

  // Unpins its entry without settling: its money stays committed (with a
  // period: in the entry's period of the moment, and no later one).
  void drop() noexcept {
    if (owner_ == nullptr) return;
    auto& e = (*owner_)[slot_];
    // seq_cst: ends our part of what a rollover carries (keyed_budgets,
    // reserve_periodic); our pin (unpinned below) keeps the entry ours.
    if (carries_) (void)e.s.held.fetch_sub(amount.nanos(), std::memory_order_seq_cst);
    carries_ = false;
    detail::keyed_budget_slots::unpin(e);
    owner_ = nullptr;
  }

 private:
  template <class, class>
  friend class keyed_budgets;
  void take(keyed_reservation& o) noexcept {
    amount = o.amount;
    missing = o.missing;
    status = o.status;
    busy = o.busy;
    saturated = o.saturated;
    owner_ = std::exchange(o.owner_, nullptr);
    slot_ = o.slot_;
    period_ = o.period_;
    carries_ = std::exchange(o.carries_, false);
  }
  detail::keyed_budget_slots* owner_ = nullptr;  // set while it pins its entry
  std::size_t slot_ = 0;
  std::uint64_t period_ = 0;
  bool carries_ = false;  // its amount is in the entry's `held` (a table with a period)
};

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_KEYED_BUDGET_RESERVATION_HPP
// #include <tollgate/keyed/claim.hpp>  (already above)
// #include <tollgate/keyed/key.hpp>  (already above)
// #include <tollgate/money.hpp>  (already above)

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

TOLLGATE_BEGIN_NAMESPACE
enum class account_restore_errc : unsigned char;  // account/snapshot.hpp
template <class Currency = usd_tag, class Hash = sip_key_hash>
class keyed_budgets {
  using S = detail::keyed_budget_slots;
  using M = money<Currency>;

 public:
  static constexpr std::size_t max_classes = 64;
  static constexpr std::size_t default_window = 16;
  static constexpr std::uint64_t max_held = S::max_held;
  // The largest limit of a table with a period, in nano-units: the period
  // index shares the committed total's word (17 bits for days, 12 for months).
  static constexpr std::int64_t max_day_limit = (std::int64_t{1} << 47) - 2;
  static constexpr std::int64_t max_month_limit = (std::int64_t{1} << 52) - 2;

  // Throws config_error (or aborts without exceptions) on a bad
  // configuration: capacity, window or limit list empty, or a limit not
  // above zero (errc::zero_count); more than 64 classes or a capacity over
  // 2^40 (errc::too_large). A window larger than the capacity is the
  // capacity.
  keyed_budgets(std::size_t capacity, const std::vector<M>& limits, hash_seed seed,
                keyed_budget_reuse reuse = keyed_budget_reuse::never, std::size_t window = default_window)
      : hash_(seed), reuse_(reuse) {
    const errc e = init(capacity, limits, window, budget_calendar{});
    if (e != errc::ok) detail::fail(e);
  }
  // Never throws: on a bad configuration sets `ec` and builds a table that
  // refuses everything with keyed_status::bad_class.
  keyed_budgets(std::size_t capacity, const std::vector<M>& limits, hash_seed seed, keyed_budget_reuse reuse,
                std::size_t window, errc& ec) noexcept
      : hash_(seed), reuse_(reuse) {
    ec = init(capacity, limits, window, budget_calendar{});
  }
  // Budgets that reset on a calendar period (see the header). Also
  // errc::too_large for an offset beyond +-24 h, an unknown period, or a
  // limit above max_day_limit (day) or max_month_limit (month).
  keyed_budgets(std::size_t capacity, const std::vector<M>& limits, hash_seed seed, budget_calendar calendar,
                keyed_budget_reuse reuse = keyed_budget_reuse::never, std::size_t window = default_window)
      : hash_(seed), reuse_(reuse) {
    const errc e = init(capacity, limits, window, calendar);
    if (e != errc::ok) detail::fail(e);
  }
  keyed_budgets(std::size_t capacity, const std::vector<M>& limits, hash_seed seed, budget_calendar calendar,
                keyed_budget_reuse reuse, std::size_t window, errc& ec) noexcept
      : hash_(seed), reuse_(reuse) {
    ec = init(capacity, limits, window, calendar);
  }
  keyed_budgets(const keyed_budgets&) = delete;
  keyed_budgets& operator=(const keyed_budgets&) = delete;

  // Holds `amount` of the key's budget if it fits (claiming an entry with
  // class `cls` if the key has none). `now` (system_clock time: ns since
  // 1970-01-01Z) names the period; without it a table with a period reads
  // system_clock, one without ignores time.
  keyed_reservation<Currency> reserve(std::uint64_t id, std::size_t cls, M amount) noexcept {
    return reserve_hash(hash_(id), cls, amount, clock_now());
  }
  keyed_reservation<Currency> reserve(std::string_view key, std::size_t cls, M amount) noexcept {
    return reserve_hash(hash_(key), cls, amount, clock_now());
  }
  keyed_reservation<Currency> reserve(std::uint64_t id, std::size_t cls, M amount, nanoseconds now) noexcept {
    return reserve_hash(hash_(id), cls, amount, now);
  }
  keyed_reservation<Currency> reserve(std::string_view key, std::size_t cls, M amount, nanoseconds now) noexcept {
    return reserve_hash(hash_(key), cls, amount, now);
  }

  // Records the actual cost of a reservation of this table and frees the
  // rest of it; returns reserved - actual (negative: an overspend, still
  // recorded). Nothing for one not held (refused, settled, dropped) or of
  // another table. A negative cost counts as zero. With a period the cost
  // counts in the entry's period at `now` (or later, see the header).
  M settle(keyed_reservation<Currency>& r, M actual) noexcept { return settle(r, actual, clock_now()); }
  M settle(keyed_reservation<Currency>& r, M actual, nanoseconds now) noexcept {
    if (r.owner_ != &slots_) return M();
    if (actual.nanos() < 0) actual = M();
    if (periodic()) return settle_periodic(r, actual.nanos(), cal_.index(now.count()));
    typename S::entry& e = slots_[r.slot_];
    // acq_rel: as budget.hpp's committed total; our pin keeps the entry
    // this key's, and the unpin below (release) publishes both totals.
    sat_add(e.s.committed, actual.nanos() - r.amount.nanos());
    add_spent(e.s.spent, actual.nanos());
    r.drop();
    return M::from_nanos(r.amount.nanos() - actual.nanos());
  }
  // Gives the whole reservation back (the call was not billed).
  void release(keyed_reservation<Currency>& r) noexcept { (void)settle(r, M()); }
  void release(keyed_reservation<Currency>& r, nanoseconds now) noexcept { (void)settle(r, M(), now); }

  // What the key may still reserve: its entry's, or a whole class `cls`
  // budget when it has none (peek); zero for a bad class index. With a
  // period, as at `now`: in a later period than the entry's, what a
  // rollover would leave (the limit less what is held).
  M remaining(std::uint64_t id, std::size_t cls) const noexcept { return remaining_hash(hash_(id), cls, clock_now()); }
  M remaining(std::string_view key, std::size_t cls) const noexcept {
    return remaining_hash(hash_(key), cls, clock_now());
  }
  M remaining(std::uint64_t id, std::size_t cls, nanoseconds now) const noexcept {
    return remaining_hash(hash_(id), cls, now);
  }
  M remaining(std::string_view key, std::size_t cls, nanoseconds now) const noexcept {
    return remaining_hash(hash_(key), cls, now);
  }
  // What the key's entry has settled (peek); zero when it has none. With a
  // period: in the entry's period, zero once `now` is in a later one.
  M spent(std::uint64_t id) const noexcept { return spent_hash(hash_(id), clock_now()); }
  M spent(std::string_view key) const noexcept { return spent_hash(hash_(key), clock_now()); }
  M spent(std::uint64_t id, nanoseconds now) const noexcept { return spent_hash(hash_(id), now); }
  M spent(std::string_view key, nanoseconds now) const noexcept { return spent_hash(hash_(key), now); }

  // The period `now` is in (days or months since the one holding
  // 1970-01-01 00:00 at the offset; 0 before it, and always 0 without a
  // period), and the time from `now` to the next reset (at least 1 ns;
  // INT64_MAX without a period or when it is that far).
  std::uint64_t period_at(nanoseconds now) const noexcept { return cal_.index(now.count()); }
  nanoseconds reset_in(nanoseconds now) const noexcept { return nanoseconds(cal_.reset_in(now.count())); }
  budget_calendar calendar() const noexcept { return calendar_; }

  // The table as bytes, and back (keyed/budget_snapshot.hpp states the
  // format, the restart rule and every refusal): what is held at the
  // snapshot comes back committed (a reservation does not survive a
  // restart), each entry in its own period. Time plays no part: an entry is
  // never rolled over by a snapshot, so the overload taking `now` (kept for
  // its callers) ignores it. snapshot() runs beside any traffic; restore()
  // only into a table that has taken none, before sharing it.
  std::string snapshot() const;
  std::string snapshot(nanoseconds) const { return snapshot(); }
  account_restore_errc restore(std::string_view bytes);

  // Forgets the key's budget (an explicit reset; see the header). Returns
  // whether it had an entry.
  bool erase(std::uint64_t id) noexcept { return slots_.erase(hash_(id)); }
  bool erase(std::string_view key) noexcept { return slots_.erase(hash_(key)); }
  bool contains(std::uint64_t id) const noexcept { return peek(hash_(id), nullptr) != nullptr; }
  bool contains(std::string_view key) const noexcept { return peek(hash_(key), nullptr) != nullptr; }

  std::size_t capacity() const noexcept { return slots_.capacity(); }
  std::size_t window() const noexcept { return slots_.window(); }
  std::size_t classes() const noexcept { return limits_.size(); }
  M limit(std::size_t cls) const noexcept { return cls < limits_.size() ? M::from_nanos(limits_[cls]) : M(); }
  static constexpr std::size_t bytes_per_entry() noexcept { return S::bytes_per_entry(); }

 private:
  static constexpr std::int64_t top = std::numeric_limits<std::int64_t>::max();
  static constexpr std::int64_t sticky = std::numeric_limits<std::int64_t>::min();

  errc init(std::size_t capacity, const std::vector<M>& limits, std::size_t window, budget_calendar cal);  // budget_ops.hpp
  static constexpr std::uint64_t snapshot_version = 2;  // 2: SipHash-1-3 keys (1: SipHash-2-4)
  std::uint64_t fingerprint() const noexcept;  // keyed/budget_snapshot.hpp

  bool periodic() const noexcept { return cal_.kind != detail::period_kind::none; }
  nanoseconds clock_now() const noexcept { return periodic() ? system_clock::now() : nanoseconds(0); }

  // The word {period, value} of a table with a period: the period in the top
  // 64 - shift_ bits, the value below; a value of all ones is the saturated
  // mark. Stored in the int64 atomics as the same bits.
  std::uint64_t value_mask() const noexcept { return (std::uint64_t{1} << shift_) - 1; }
  std::uint64_t pack(std::uint64_t period, std::uint64_t value) const noexcept { return (period << shift_) | value; }
  std::uint64_t period_of_word(std::uint64_t w) const noexcept { return w >> shift_; }
  static std::uint64_t bits(std::int64_t v) noexcept { return static_cast<std::uint64_t>(v); }
  static std::int64_t word(std::uint64_t w) noexcept { return static_cast<std::int64_t>(w); }
  // v + d for a value of the word, saturating at the mark, never below 0.
  std::uint64_t add_value(std::uint64_t v, std::int64_t d) const noexcept {
    const std::uint64_t mark = value_mask();
    if (v >= mark) return mark;
    if (d < 0) return bits(-(d + 1)) + 1 >= v ? 0 : v - (bits(-(d + 1)) + 1);
    return bits(d) >= mark - v ? mark : v + bits(d);
  }

  static keyed_reservation<Currency> refused(M amount, std::int64_t missing, keyed_status s) noexcept {
    keyed_reservation<Currency> r;
    r.amount = amount;
    r.missing = M::from_nanos(missing);
    r.status = s;
    return r;
  }
  // committed + amount - limit, saturating: only reported.
  static std::int64_t shortfall(std::int64_t c, std::int64_t amount, std::int64_t limit) noexcept {
    std::int64_t miss = 0;
    if (__builtin_sub_overflow(c, limit, &miss) || __builtin_add_overflow(miss, amount, &miss)) miss = top;
    return miss;
  }

  // Defined in keyed/budget_ops.hpp.
  keyed_reservation<Currency> reserve_hash(std::uint64_t h, std::size_t cls, M amount, nanoseconds now) noexcept;

  // A reservation in a table with a period (the entry pinned by us): the
  // rollover protocol is stated with it, in keyed/budget_ops.hpp.
  keyed_reservation<Currency> reserve_periodic(typename S::entry& e, std::size_t slot, std::int64_t limit, M amount,
                                               std::uint64_t p) noexcept;
  keyed_reservation<Currency> refuse_announced(typename S::entry& e, std::int64_t a, std::int64_t missing,
                                               bool saturated) noexcept {
    // seq_cst: withdraws our announcement (the protocol of reserve_periodic).
    (void)e.s.held.fetch_sub(a, std::memory_order_seq_cst);
    S::unpin(e);
    keyed_reservation<Currency> r = refused(M::from_nanos(a), missing, keyed_status::limited);
    r.saturated = saturated;
    return r;
  }
  // held += a unless it would pass INT64_MAX. seq_cst: the protocol of
  // reserve_periodic; a failed CAS only reloads.
  static bool announce(detail::atomic<std::int64_t>& held, std::int64_t a) noexcept {
    std::int64_t c = held.load(std::memory_order_seq_cst);
    for (;;) {
      std::int64_t next = 0;
      if (__builtin_add_overflow(c, a, &next)) return false;
      if (held.compare_exchange_weak(c, next, std::memory_order_seq_cst, std::memory_order_seq_cst)) return true;
    }
  }
  // The committed total a decision at period p would start from: the word's
  // value in its own period or a later p's rollover (what is held); -1 when
  // saturated. A peek: seq_cst loads only because they cost nothing more.
  std::int64_t committed_view(const typename S::entry& e, std::uint64_t p) const noexcept {
    const std::uint64_t w = bits(e.s.committed.load(std::memory_order_seq_cst));  // seq_cst: see above
    if (period_of_word(w) < p) return e.s.held.load(std::memory_order_seq_cst);    // seq_cst: see above
    return (w & value_mask()) == value_mask() ? -1 : word(w & value_mask());
  }

  // Defined in keyed/budget_ops.hpp.
  M settle_periodic(keyed_reservation<Currency>& r, std::int64_t actual, std::uint64_t p) noexcept;
  // The spent word {period, settled}: a statistic of the word's period.
  void add_spent_periodic(detail::atomic<std::int64_t>& t, std::uint64_t at, std::int64_t d) const noexcept {
    // relaxed: a statistic; the loop only recomputes from the value.
    std::uint64_t c = bits(t.load(std::memory_order_relaxed));
    for (;;) {
      const std::uint64_t q = period_of_word(c);
      if (q > at) return;  // a later period's: ours is over
      const std::uint64_t v = q < at ? 0 : c & value_mask();
      const std::uint64_t next = pack(at, bits(d) >= value_mask() - v ? value_mask() : v + bits(d));
      if (next == c) return;
      std::int64_t expect = word(c);
      if (t.compare_exchange_weak(expect, word(next), std::memory_order_relaxed, std::memory_order_relaxed)) return;
      c = bits(expect);
    }
  }

  // budget.hpp's saturating total: a sum past INT64_MAX sticks at the mark.
  static void sat_add(detail::atomic<std::int64_t>& t, std::int64_t d) noexcept {
    // relaxed load and failure: the loop only recomputes; the successful
    // CAS is acq_rel (as in reserve_hash).
    std::int64_t c = t.load(std::memory_order_relaxed);
    for (;;) {
      std::int64_t next = 0;
      if (c < 0) return;
      if (__builtin_add_overflow(c, d, &next)) next = sticky;
      else if (next < 0) next = 0;
      if (t.compare_exchange_weak(c, next, std::memory_order_acq_rel, std::memory_order_relaxed)) return;
    }
  }
  static void add_spent(detail::atomic<std::int64_t>& t, std::int64_t d) noexcept {
    // relaxed: a statistic; the loop only recomputes from the value.
    std::int64_t c = t.load(std::memory_order_relaxed);
    for (;;) {
      std::int64_t next = 0;
      if (__builtin_add_overflow(c, d, &next)) next = top;
      if (next == c || t.compare_exchange_weak(c, next, std::memory_order_relaxed, std::memory_order_relaxed)) return;
    }
  }

  const typename S::entry* peek(std::uint64_t h, std::size_t* cls) const noexcept {
    std::size_t c = 0;
    const typename S::entry* e = slots_.peek(h, c);
    if (cls != nullptr) *cls = c;
    return e;
  }
  M remaining_hash(std::uint64_t h, std::size_t cls, nanoseconds now) const noexcept {
    if (cls >= limits_.size()) return M();
    std::size_t c = cls;
    const typename S::entry* e = peek(h, &c);
    if (e == nullptr) return M::from_nanos(limits_[cls]);
    const std::int64_t w = periodic() ? committed_view(*e, cal_.index(now.count()))
                                      : e->s.committed.load(std::memory_order_acquire);  // acquire: as in reserve_hash
    return M::from_nanos(w < 0 || w >= limits_[c] ? 0 : limits_[c] - w);
  }
  M spent_hash(std::uint64_t h, nanoseconds now) const noexcept {
    const typename S::entry* e = peek(h, nullptr);
    if (e == nullptr) return M();
    const std::int64_t s = e->s.spent.load(std::memory_order_relaxed);  // relaxed: a statistic
    if (!periodic()) return M::from_nanos(s);
    // relaxed: a statistic (as the spent word).
    const std::uint64_t q = period_of_word(bits(e->s.committed.load(std::memory_order_relaxed)));
    const std::uint64_t p = cal_.index(now.count());
    const std::uint64_t cur = p > q ? p : q;
    return M::from_nanos(period_of_word(bits(s)) == cur ? word(bits(s) & value_mask()) : 0);
  }

  Hash hash_;
  S slots_;
  std::vector<std::int64_t> limits_;
  keyed_budget_reuse reuse_;
  budget_calendar calendar_{};
  detail::calendar_periods cal_{};
  unsigned shift_ = 52;  // with a period: the value bits of the words (47 for days, 52 for months)
};

TOLLGATE_END_NAMESPACE

// #include <tollgate/keyed/budget_ops.hpp>  (inlined below)
// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// keyed/budget_ops.hpp: keyed_budgets' set-up, its reservations and, in a
// table with a period, the rollover protocol and the settlement, out of the
// class so that its header stays readable.
// Included by keyed_budgets.hpp after the class, whose header states the
// contract, the bound and the protocol these follow.
#ifndef TOLLGATE_KEYED_BUDGET_OPS_HPP
#define TOLLGATE_KEYED_BUDGET_OPS_HPP

// #include <tollgate/keyed_budgets.hpp>  (already above)

TOLLGATE_BEGIN_NAMESPACE

template <class Currency, class Hash>
keyed_reservation<Currency> keyed_budgets<Currency, Hash>::reserve_hash(std::uint64_t h, std::size_t cls, M amount,
                                                                        nanoseconds now) noexcept {
  if (cls >= limits_.size()) return refused(amount, 0, keyed_status::bad_class);
  if (amount.nanos() <= 0) return refused(M(), 0, keyed_status::admitted);  // holds nothing
  const std::uint64_t p = cal_.index(now.count());
  std::size_t slot = 0, c = cls;
  std::uint64_t pins = 0;
  for (;;) {
    if (slots_.pin(h, slot, c, &pins)) break;
    if (amount.nanos() > limits_[cls])
      return refused(amount, shortfall(0, amount.nanos(), limits_[cls]), keyed_status::limited);
    const bool idle = reuse_ == keyed_budget_reuse::idle;
    // No pin (checked by the claim): no reservation held. Reused only when
    // the user said budgets reset.
    auto reusable = [idle](typename S::entry&, std::size_t) { return idle; };
    const std::int64_t fresh = periodic() ? word(pack(p, 0)) : 0;  // zero totals, in the claimer's period
    auto start = [fresh](typename S::entry& e) {
      // relaxed: published by the claim's publish CAS (a release).
      e.s.committed.store(fresh, std::memory_order_relaxed);
      e.s.spent.store(fresh, std::memory_order_relaxed);
      e.s.held.store(0, std::memory_order_relaxed);
    };
    const detail::claim_outcome o = slots_.claim(h, cls, 0, slot, reusable, start);
    if (o == detail::claim_outcome::retry) continue;
    if (o == detail::claim_outcome::full) return refused(amount, 0, keyed_status::table_full);
    c = cls;
    pins = 0;
    break;
  }
  typename S::entry& e = slots_[slot];
  const std::int64_t limit = limits_[c];
  if (pins >= max_held) {
    S::unpin(e);
    keyed_reservation<Currency> r = refused(amount, 0, keyed_status::limited);
    r.busy = true;
    return r;
  }
  if (periodic()) return reserve_periodic(e, slot, limit, amount, p);
  // acquire / acq_rel: budget.hpp's orders on the committed total.
  std::int64_t w = e.s.committed.load(std::memory_order_acquire);
  for (;;) {
    std::int64_t next = 0;
    if (w < 0 || __builtin_add_overflow(w, amount.nanos(), &next) || next > limit) {
      S::unpin(e);
      keyed_reservation<Currency> r = refused(amount, w < 0 ? top : shortfall(w, amount.nanos(), limit),
                                              keyed_status::limited);
      r.saturated = w < 0;
      return r;
    }
    if (e.s.committed.compare_exchange_weak(w, next, std::memory_order_acq_rel, std::memory_order_acquire)) break;
  }
  keyed_reservation<Currency> r = refused(amount, 0, keyed_status::admitted);
  r.owner_ = &slots_;  // the pin stays until settle or drop
  r.slot_ = slot;
  return r;
}

template <class Currency, class Hash>
errc keyed_budgets<Currency, Hash>::init(std::size_t capacity, const std::vector<M>& limits, std::size_t window,
                                         budget_calendar cal) {
  if (capacity == 0 || window == 0 || limits.empty()) return errc::zero_count;
  if (limits.size() > max_classes || capacity > (std::size_t{1} << 40)) return errc::too_large;
  if (cal.utc_offset > std::chrono::hours(24) || cal.utc_offset < -std::chrono::hours(24)) return errc::too_large;
  std::int64_t most = top;
  switch (cal.period) {
    case budget_period::none: break;
    case budget_period::day: most = max_day_limit; break;
    case budget_period::month: most = max_month_limit; break;
    default: return errc::too_large;
  }
  std::vector<std::int64_t> ls;
  ls.reserve(limits.size());
  for (const M& l : limits) {
    if (l.nanos() <= 0) return errc::zero_count;
    if (l.nanos() > most) return errc::too_large;
    ls.push_back(l.nanos());
  }
  slots_.init(capacity, window);
  limits_ = std::move(ls);
  calendar_ = cal;
  cal_.kind = cal.period == budget_period::day     ? detail::period_kind::day
              : cal.period == budget_period::month ? detail::period_kind::month
                                                   : detail::period_kind::none;
  cal_.offset_ns = std::chrono::duration_cast<nanoseconds>(cal.utc_offset).count();
  shift_ = cal.period == budget_period::day ? 47 : 52;
  return errc::ok;
}

// The rollover protocol (a table with a period; the entry pinned by us).
//
// The committed word {period q, c} is the only word a decision reads: c is
// what is reserved and settled in q. A call in a later period p replaces
// it, in one CAS, with {p, what is held}, so every transition names the
// period it leaves: a thread that read the word before a rollover and
// stalled fails its CAS (the period field differs, and it only grows), so
// it cannot reset a newer period's total nor add to a finished one; it
// reloads and decides again in the period the word is in now. A `now` in a
// period before the word's is decided in the word's period (never an old
// period's room).
//
// `held` must be at least what the reservations admitted into the word
// hold, at every rollover CAS: a reserve adds its amount to `held` before
// its CAS on the word, and a settle or drop takes it out after its own.
// seq_cst on `held` and on the word make that so: a rollover whose CAS
// follows an admission's read the word at or after that admission's CAS,
// so its later load of `held` follows the admission's add in the single
// order. The error is on the safe side only: a rollover racing a reserve
// in progress (announced, not yet decided) or a settle just done carries
// that amount too, so the new period has that much less room.
template <class Currency, class Hash>
keyed_reservation<Currency> keyed_budgets<Currency, Hash>::reserve_periodic(typename S::entry& e, std::size_t slot,
                                                                            std::int64_t limit, M amount,
                                                                            std::uint64_t p) noexcept {
  const std::int64_t a = amount.nanos();
  if (a > limit || !announce(e.s.held, a)) {
    // Too large for any period, or absurdly many calls in flight (held
    // would pass 2^63): refused as a peek decides, nothing announced.
    const std::int64_t c = committed_view(e, p);
    S::unpin(e);
    keyed_reservation<Currency> r = refused(amount, c < 0 ? top : shortfall(c, a, limit), keyed_status::limited);
    r.saturated = c < 0;
    r.busy = a <= limit;
    return r;
  }
  const std::uint64_t mark = value_mask();
  // seq_cst: the load and the CAS below are the word's side of the
  // protocol above (and acquire/release, as budget.hpp's total).
  std::uint64_t w = bits(e.s.committed.load(std::memory_order_seq_cst));
  std::uint64_t at = 0;
  for (;;) {
    const std::uint64_t q = period_of_word(w), v = w & mark;
    std::uint64_t next = 0;
    if (q < p) {
      // A rollover with our admission: the new period starts with what is
      // held, ours included. seq_cst: the protocol above.
      std::int64_t held = e.s.held.load(std::memory_order_seq_cst);
      if (held < 0) held = 0;  // cannot be (a sum of amounts): defensive
      if (held > limit) return refuse_announced(e, a, shortfall(held, 0, limit), false);
      next = pack(p, bits(held));
      at = p;
    } else {
      if (v == mark) return refuse_announced(e, a, top, true);
      if (word(v) + a > limit) return refuse_announced(e, a, shortfall(word(v), a, limit), false);
      next = pack(q, v + bits(a));
      at = q;
    }
    std::int64_t expect = word(w);
    // seq_cst / seq_cst: the protocol above; on failure we reload.
    if (e.s.committed.compare_exchange_weak(expect, word(next), std::memory_order_seq_cst,
                                            std::memory_order_seq_cst))
      break;
    w = bits(expect);
  }
  keyed_reservation<Currency> r = refused(amount, 0, keyed_status::admitted);
  r.owner_ = &slots_;  // the pin stays until settle or drop
  r.slot_ = slot;
  r.period_ = at;
  r.carries_ = true;
  return r;
}

template <class Currency, class Hash>
auto keyed_budgets<Currency, Hash>::settle_periodic(keyed_reservation<Currency>& r, std::int64_t actual,
                                                    std::uint64_t p) noexcept -> M {
  typename S::entry& e = slots_[r.slot_];
  const std::int64_t a = r.amount.nanos();
  const std::uint64_t mark = value_mask();
  // seq_cst: the word's side of reserve_periodic's protocol; our amount is
  // in the word's value, admitted there or carried by every rollover since
  // (our announcement is still in `held`).
  std::uint64_t w = bits(e.s.committed.load(std::memory_order_seq_cst));
  std::uint64_t at = 0;
  for (;;) {
    const std::uint64_t q = period_of_word(w), v = w & mark;
    std::uint64_t next = 0;
    if (q < p) {
      // Roll over first: what is held (ours included, replaced by the cost).
      const std::int64_t held = e.s.held.load(std::memory_order_seq_cst);  // seq_cst: the protocol
      next = pack(p, add_value(held < 0 ? 0 : bits(held), actual - a));
      at = p;
    } else {
      at = q;
      if (v == mark) break;  // saturated for this period: stays so
      next = pack(q, add_value(v, actual - a));
    }
    std::int64_t expect = word(w);
    // seq_cst / seq_cst: as in reserve_periodic; on failure we reload.
    if (e.s.committed.compare_exchange_weak(expect, word(next), std::memory_order_seq_cst,
                                            std::memory_order_seq_cst))
      break;
    w = bits(expect);
  }
  add_spent_periodic(e.s.spent, at, actual);
  r.period_ = at;
  r.drop();  // takes our amount out of `held` (after our CAS), then unpins
  return M::from_nanos(a - actual);
}

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_KEYED_BUDGET_OPS_HPP
// #include <tollgate/keyed/budget_snapshot.hpp>  (inlined below)
// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// keyed/budget_snapshot.hpp: a keyed_budgets table as bytes, and back, so a
// restart does not hand every key a whole budget again. No I/O: the caller
// stores the bytes. Included by keyed_budgets.hpp after the class.
//
// Format 2 (format 1, the same fields with keys under SipHash-2-4, is
// refused with wrong_version): "TGB1", then little-endian u64 fields: version, the table's
// fingerprint (capacity, window, every class's limit, the calendar's period
// and UTC offset, and the hash of two fixed probe keys, so a table under
// another seed or hash is told apart without storing the seed), the number
// of entries n, then n x (slot, hash, class, period, committed, spent),
// slots strictly ascending; and the FNV-1a checksum of every byte before
// it. Every live entry is stored (a key's class stays its own), erased ones
// are not (erase is a reset). Without a calendar, `period` is 0 and
// `committed` and `spent` are the entry's int64 totals as bits (committed
// INT64_MIN: saturated, budget.hpp); with one, `period` is the entry's
// period and the two are its totals in that period (committed of all ones
// below the period bits: saturated).
//
// What a restart keeps. A reservation does not survive one: its holder
// died, but the request it paid for may have run and be billed. So what is
// held at the snapshot stays committed, in the entry's own period, and
// nothing restored is held: the restored entries have no reservations, no
// pins. A restore is exactly the old table with every reservation held at
// the snapshot dropped there (a drop keeps its money committed in the
// entry's period and carries it no further). Hence no key spends more in a
// period than it could without the restart, counting both processes: what
// the old process settled or held in a period is committed there, and the
// new one starts from it.
// - With a calendar, every entry is stored as it is: its own period and its
//   totals there, whatever the time of the snapshot. A snapshot never rolls
//   an entry over (a snapshot whose clock is ahead of the traffic's, or past
//   a midnight no call has seen, must not move a key into a period no call
//   ran in: a call back in the entry's period would then be decided in the
//   later one, against only what was held, and spend the old period's
//   budget twice). The first call after the restore makes the rollover as
//   it would without the restart: a key whose first call is in a later
//   period starts that period over (nothing is held, so nothing carries:
//   the held money stayed in the entry's period, where a dropped
//   reservation's stays); a call in the entry's period or an earlier one
//   (the wall clock went backwards, before or across the restart) is
//   decided in the entry's period against the stored total, so a restore
//   never reopens money. Neither snapshot() nor restore() needs a time.
// - Without a calendar, held money stays committed for good (as a
//   reservation dropped unsettled).
// `spent` is a statistic, read beside traffic: it may lag `committed` by a
// settle in progress at the snapshot.
//
// restore() refuses, changing nothing, with the account's codes and rules
// (account_restore_errc): bytes that are not a snapshot (bad_format), of an
// unknown version (wrong_version), of a table configured otherwise or under
// another seed (other_configuration: another capacity, window, limit list,
// calendar period or offset, or seed; also a misconfigured table), short or
// long (truncated), whose checksum does not match (corrupted; it only
// catches accidents), or whose fields do not fit this table (out_of_range:
// more entries than the capacity, slots not ascending or outside their
// hash's window, a hash held twice, a class index not the table's; without
// a calendar a period other than 0, a committed total below zero other than
// the saturated mark, a spent total below zero; with one a period past the
// last an int64 time maps to, a total above the value bits). It refuses
// with in_use a table that has started taking traffic (any entry claimed,
// pinned or erased since construction or the last restore). A restored
// table that took no traffic may be restored again (the later bytes win).
// The reuse mode (keyed_budget_reuse) is not part of the configuration.
//
// Concurrency. snapshot() is thread-safe with everything: it pins each live
// entry while it reads it (a moment of its totals: a reservation racing it
// lands in this snapshot or after it). A key that moved to another entry
// during the scan (erased and claimed again) is stored once, the entry
// with the later period, then the larger committed total. restore() must
// not race any other use: restore into a new table, before sharing it.
#ifndef TOLLGATE_KEYED_BUDGET_SNAPSHOT_HPP
#define TOLLGATE_KEYED_BUDGET_SNAPSHOT_HPP

// #include <tollgate/keyed_budgets.hpp>  (already above)
// #include <tollgate/keyed/snapshot_frame.hpp>  (already above)

#include <algorithm>
#include <limits>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

TOLLGATE_BEGIN_NAMESPACE

template <class Currency, class Hash>
std::uint64_t keyed_budgets<Currency, Hash>::fingerprint() const noexcept {
  detail::byte_writer w;
  w.u64(slots_.capacity());
  w.u64(slots_.window());
  w.u64(limits_.size());
  for (const std::int64_t l : limits_) w.u64(bits(l));
  w.u64(static_cast<std::uint64_t>(calendar_.period));
  w.u64(bits(static_cast<std::int64_t>(calendar_.utc_offset.count())));
  w.u64(hash_(std::uint64_t{0x746f6c6c67617465ULL}));
  w.u64(hash_(std::string_view("tollgate keyed table")));
  return w.checksum();
}

template <class Currency, class Hash>
std::string keyed_budgets<Currency, Hash>::snapshot() const {
  struct row {
    std::uint64_t slot, hash, cls, period, committed, spent;
  };
  // The order of "more spent": a later period, then a larger committed
  // total, the saturated mark (INT64_MIN without a calendar) the largest.
  const bool per = periodic();
  auto rank = [per](const row& x) {
    return per || static_cast<std::int64_t>(x.committed) >= 0 ? x.committed : ~std::uint64_t{0};
  };
  const std::uint64_t mark = value_mask();
  std::vector<row> rows;
  for (std::size_t s = 0; s < slots_.capacity(); ++s) {
    typename S::entry& e = slots_[s];
    // acquire: as in keyed_slots::pin() (pairs with the publish CAS).
    std::uint64_t c = e.ctl.load(std::memory_order_acquire);
    for (;;) {
      if (S::state_of(c) != S::st_live) break;  // free, erased, or a claim not yet published
      if ((c & S::pin_mask) == S::pin_mask) {  // as in pin(): wait for one of the calls in progress
        std::this_thread::yield();
        c = e.ctl.load(std::memory_order_acquire);  // acquire: as above
        continue;
      }
      // acq_rel / acquire: the pin of keyed_slots::pin(): while pinned the
      // entry cannot be reclaimed, so its hash, class and totals are its
      // occupant's.
      if (!e.ctl.compare_exchange_weak(c, c + S::pin_one + S::ver_one, std::memory_order_acq_rel,
                                       std::memory_order_acquire))
        continue;
      row x{s, e.hash.load(std::memory_order_relaxed), S::class_of(c), 0, 0, 0};  // relaxed: stable while pinned
      if (per) {
        // relaxed: a statistic; only its value in the committed word's
        // period is kept, so no order between the two words is needed.
        const std::uint64_t sw = bits(e.s.spent.load(std::memory_order_relaxed));
        // seq_cst: as committed_view() (a peek of the word; it alone is kept).
        const std::uint64_t w = bits(e.s.committed.load(std::memory_order_seq_cst));
        // As it is, never rolled over (see the header): the committed total
        // already counts what is held, in the word's period.
        x.period = period_of_word(w);
        x.committed = w & mark;
        x.spent = period_of_word(sw) == x.period ? sw & mark : 0;
      } else {
        // acquire: as remaining(); relaxed: a statistic. Reservations held
        // are in the committed total already.
        x.committed = bits(e.s.committed.load(std::memory_order_acquire));
        const std::int64_t sp = e.s.spent.load(std::memory_order_relaxed);
        x.spent = sp < 0 ? 0 : bits(sp);
      }
      S::unpin(e);
      rows.push_back(x);
      break;
    }
  }
  // A key erased and claimed again in another entry while we scanned shows
  // twice: keep the one that has spent more (the safe side).
  std::sort(rows.begin(), rows.end(), [&rank](const row& x, const row& y) {
    if (x.hash != y.hash) return x.hash < y.hash;
    if (x.period != y.period) return x.period > y.period;
    return rank(x) > rank(y);
  });
  rows.erase(std::unique(rows.begin(), rows.end(), [](const row& x, const row& y) { return x.hash == y.hash; }),
             rows.end());
  std::sort(rows.begin(), rows.end(), [](const row& x, const row& y) { return x.slot < y.slot; });
  detail::byte_writer out;
  out.raw("TGB1", 4);
  out.u64(snapshot_version);
  out.u64(fingerprint());
  out.u64(rows.size());
  for (const row& r : rows) {
    out.u64(r.slot);
    out.u64(r.hash);
    out.u64(r.cls);
    out.u64(r.period);
    out.u64(r.committed);
    out.u64(r.spent);
  }
  out.u64(out.checksum());
  return out.out;
}

template <class Currency, class Hash>
account_restore_errc keyed_budgets<Currency, Hash>::restore(std::string_view bytes) {
  using E = account_restore_errc;
  if (!detail::keyed_untouched(slots_)) return E::in_use;
  detail::byte_reader r{bytes};
  const E opened = detail::open_keyed_snapshot(bytes, "TGB1", 3, r);
  if (opened != E::ok) return opened;
  std::uint64_t ver = 0, fp = 0, n = 0;
  if (!r.u64(ver) || !r.u64(fp) || !r.u64(n)) return E::truncated;
  if (ver != snapshot_version) return E::wrong_version;
  if (slots_.capacity() == 0 || fp != fingerprint()) return E::other_configuration;
  if (n > slots_.capacity()) return E::out_of_range;
  if (r.left() / 48 < n) return E::truncated;
  struct row {
    std::uint64_t slot, hash, cls, period, committed, spent;
  };
  const bool per = periodic();
  const std::uint64_t last = cal_.index(std::numeric_limits<std::int64_t>::max());
  const std::uint64_t mark = value_mask();
  std::vector<row> rows;
  rows.reserve(static_cast<std::size_t>(n));
  for (std::uint64_t k = 0; k < n; ++k) {
    row x{};
    (void)r.u64(x.slot);
    (void)r.u64(x.hash);
    (void)r.u64(x.cls);
    (void)r.u64(x.period);
    (void)r.u64(x.committed);
    (void)r.u64(x.spent);
    if (!detail::keyed_in_window(slots_, x.hash, x.slot) || (k > 0 && x.slot <= rows.back().slot))
      return E::out_of_range;
    if (x.cls >= limits_.size()) return E::out_of_range;
    if (per) {
      if (x.period > last || x.committed > mark || x.spent > mark) return E::out_of_range;
    } else {
      if (x.period != 0 || word(x.spent) < 0) return E::out_of_range;
      if (word(x.committed) < 0 && word(x.committed) != sticky) return E::out_of_range;
    }
    rows.push_back(x);
  }
  if (r.left() != 0) return E::truncated;
  {
    std::vector<std::uint64_t> hs;
    hs.reserve(rows.size());
    for (const row& x : rows) hs.push_back(x.hash);
    std::sort(hs.begin(), hs.end());
    if (std::adjacent_find(hs.begin(), hs.end()) != hs.end()) return E::out_of_range;  // a key in two entries
  }

  // Everything checked: apply. relaxed stores throughout: nothing may use
  // the table during restore(); the caller's hand-off to other threads
  // publishes it. Entries come back live, unpinned, version 0 (so a table
  // that took no traffic since may be restored again), holding nothing.
  for (std::size_t s = 0; s < slots_.capacity(); ++s) {
    slots_[s].ctl.store(0, std::memory_order_relaxed);
    slots_.set_hint(s, 0);
    slots_[s].claim.store(0, std::memory_order_relaxed);
  }
  for (const row& x : rows) {
    typename S::entry& e = slots_[static_cast<std::size_t>(x.slot)];
    e.hash.store(x.hash, std::memory_order_relaxed);
    slots_.set_hint(static_cast<std::size_t>(x.slot), x.hash);
    e.s.committed.store(word(per ? pack(x.period, x.committed) : x.committed), std::memory_order_relaxed);
    e.s.spent.store(word(per ? pack(x.period, x.spent) : x.spent), std::memory_order_relaxed);
    e.s.held.store(0, std::memory_order_relaxed);
    e.claim.store(1, std::memory_order_relaxed);
    e.ctl.store(S::st_live | (x.cls << S::cls_shift), std::memory_order_relaxed);
  }
  for (const row& x : rows) detail::keyed_free_before(slots_, x.hash, static_cast<std::size_t>(x.slot));
  return E::ok;
}

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_KEYED_BUDGET_SNAPSHOT_HPP

#endif  // TOLLGATE_KEYED_BUDGETS_HPP
// #include <tollgate/keyed_windows.hpp>  (inlined below)
// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// keyed_windows.hpp: a strict sliding window per key (per user RPM, say) in
// a fixed-capacity table that never allocates after its construction and
// never resets a live window.
//
// Table. As keyed_buckets (keyed_buckets.hpp: the keyed hash under the
// user's seed, linear probing over a window of `window` entries, at most 64
// limit classes chosen by the call that claims a key's entry), with
// entries of 72 bytes (memory: 72 x capacity bytes plus the class list),
// allocated once by the constructor. A key's whole window is one 64-bit
// word: the number of its newest slot (32 bits) and four 8-bit counts.
//
// Guarantee. For a class of limit L per window W: in every half-open window
// (t - W, t] of the supplied timestamps, the units admitted on a key's
// entry never exceed L, under any interleaving of threads, across
// evictions. sliding_window's scheme with K = 3: slots of width
// w = ceil(W / 3) from the table's origin; an admission at slot s counts
// the units of slots s-3 .. s, which cover every such window, so the bound
// holds and under saturation a key gets about 3/4 of L per W. L is 1 .. 255
// (errc::too_large beyond: a count is 8 bits; keyed_buckets takes any
// burst) and W at least 1 s (errc::window_too_short).
//
// Lossless eviction: an entry is reclaimed for another key only when every
// count it holds has left the window at the claimer's `now` (its newest
// slot 4 or more slots behind, or no count at all), which is the state a
// fresh window has. Every claimed entry (reclaimed, or new for a key never
// seen) starts at the slot of the latest `now` any claim of the table has
// seen, so a key that comes back with an earlier `now` is refused as stale
// rather than counted twice. The price: one claim at a `now` far ahead (a
// clock stepped forward and back, a bogus supplied time) gets every new key
// refused as stale until then, erased ones too; keys that hold an entry are
// not affected (a table of buckets has the same rule). A live entry is never
// reset, except by erase(). When no entry of a new key's window may be
// reused, the key is refused with keyed_status::table_full (`later`, the
// wait until the first of them may be, assuming nothing else is admitted
// on it; zero with reason::busy when none can say); a flood of new keys
// changes no live entry.
//
// Time. Slots are numbered from the table's origin (times before it count
// as it, and their waits are counted from `now`); an entry keeps its newest slot modulo 2^32 and reads a difference
// of 2^31 slots or more as a `now` behind it. So a key's counts are read
// exactly while its calls are less than 2^31 slots apart: 22 years at the
// shortest window, 1 s. A `now` in a slot before a key's newest one is
// refused with reason::stale_time (retry_after: the time to that slot's
// start), as sliding_window does: the slots it falls in are gone.
//
// Restart. snapshot() / restore() (keyed/window_snapshot.hpp) keep every
// count across a restart at least as long as it would have stayed without
// it (at most one slot longer), whatever the downtime and the phases of
// both tables' slot grids, so the bound above holds in wall-clock time
// across the restart.
//
// Give-back. try_acquire can fill a keyed_ticket (keyed/ticket.hpp) naming
// the slot it charged; refund(key, ticket, n) takes up to n of those units
// back out of that very slot, so the bound above holds for the units
// admitted net of give-backs, exactly: a give-back depends on no `now`, so
// a thread that stalls before it returns nothing early (keyed_buckets'
// refund has a skew; this has none). It returns all of them unless the
// key's newest slot has moved 4 or more past the charged one (a call on the
// key at a `now` at least W later came between: no later decision counts
// that slot, so the units are gone from the window anyway), or the key's
// entry is not the one charged (erased or reclaimed meanwhile: the new entry
// owes none of them; the ticket names the entry and its claim generation),
// or the ticket is another table's (or this one's from before a restore()).
// A refund is meant for a request that was never sent (the account refused
// it, say): given back, its units may be admitted again at once.
//
// Decisions. n == 0 is admitted and changes nothing (claims nothing).
// n > L is `never` (reason::exceeds_capacity), for a new key without
// claiming an entry. A refusal writes nothing and gives the exact wait
// until enough of the counted slots have left. A bad class index is
// keyed_status::bad_class.
//
// Concurrency contract. Every member function is thread-safe and
// lock-free except as keyed/claim.hpp states for claims of one new key
// racing each other (obstruction-free). Admission on a live key is a pin
// CAS, a CAS on its window word and an unpin. Peeks (contains) may be
// stale the moment they return.
#ifndef TOLLGATE_KEYED_WINDOWS_HPP
#define TOLLGATE_KEYED_WINDOWS_HPP

// #include <tollgate/config.hpp>  (already above)
// #include <tollgate/clock.hpp>  (already above)
// #include <tollgate/decision.hpp>  (already above)
// #include <tollgate/detail/arith.hpp>  (already above)
// #include <tollgate/detail/atomic.hpp>  (already above)
// #include <tollgate/error.hpp>  (already above)
// #include <tollgate/keyed/claim.hpp>  (already above)
// #include <tollgate/keyed/key.hpp>  (already above)
// #include <tollgate/keyed/ticket.hpp>  (already above)

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

TOLLGATE_BEGIN_NAMESPACE

enum class account_restore_errc : unsigned char;  // account/snapshot.hpp

// One limit class: at most `limit` units in any window of length `window`.
struct window_class {
  std::uint64_t limit = 0;
  nanoseconds window{0};
};

template <class Clock = steady_clock, class Hash = sip_key_hash>
class keyed_windows {
  struct window_state {
    // Bits 0-31: the newest slot's number modulo 2^32; bits 32 + 8i: the
    // count of slot newest - i, i = 0 .. 3.
    detail::atomic<std::uint64_t> word{0};
  };
  using S = detail::keyed_slots<window_state>;
  using entry = typename S::entry;

 public:
  using clock = Clock;
  static constexpr std::size_t max_classes = 64;
  static constexpr std::size_t default_window = 16;
  static constexpr std::uint64_t max_limit = 255;
  static constexpr nanoseconds min_window = nanoseconds(1000000000);

  // Throws config_error (or aborts without exceptions) on a bad
  // configuration: capacity, window or class list empty, or a limit of 0
  // (errc::zero_count); more than 64 classes, a capacity over 2^40 or a
  // limit over 255 (errc::too_large); a window under 1 s
  // (errc::window_too_short).
  keyed_windows(std::size_t capacity, const std::vector<window_class>& classes, hash_seed seed, nanoseconds origin,
                std::size_t window = default_window)
      : hash_(seed) {
    const errc e = init(capacity, classes, origin, window);
    if (e != errc::ok) detail::fail(e);
  }
  // Never throws: on a bad configuration sets `ec` and builds a table that
  // refuses everything with keyed_status::bad_class.
  keyed_windows(std::size_t capacity, const std::vector<window_class>& classes, hash_seed seed, nanoseconds origin,
                std::size_t window, errc& ec) noexcept
      : hash_(seed) {
    ec = init(capacity, classes, origin, window);
  }
  keyed_windows(const keyed_windows&) = delete;
  keyed_windows& operator=(const keyed_windows&) = delete;

  keyed_result try_acquire(std::uint64_t id, std::size_t cls, std::uint64_t n, nanoseconds now) noexcept {
    return acquire_hash(hash_(id), cls, n, now, nullptr);
  }
  keyed_result try_acquire(std::string_view key, std::size_t cls, std::uint64_t n, nanoseconds now) noexcept {
    return acquire_hash(hash_(key), cls, n, now, nullptr);
  }
  // The same, and fills `t` for a later refund (a refusal, or n == 0, leaves
  // it empty).
  keyed_result try_acquire(std::uint64_t id, std::size_t cls, std::uint64_t n, nanoseconds now,
                           keyed_ticket& t) noexcept {
    return acquire_hash(hash_(id), cls, n, now, &t);
  }
  keyed_result try_acquire(std::string_view key, std::size_t cls, std::uint64_t n, nanoseconds now,
                           keyed_ticket& t) noexcept {
    return acquire_hash(hash_(key), cls, n, now, &t);
  }

  // Gives back up to n of the units the ticket's admission charged, out of
  // the slot it charged (the rule above: exact, no `now`). Returns the
  // units given back; the ticket keeps the rest.
  std::uint64_t refund(std::uint64_t id, keyed_ticket& t, std::uint64_t n) noexcept {
    return refund_hash(hash_(id), t, n);
  }
  std::uint64_t refund(std::string_view key, keyed_ticket& t, std::uint64_t n) noexcept {
    return refund_hash(hash_(key), t, n);
  }
  keyed_result try_acquire(std::uint64_t id, std::size_t cls, std::uint64_t n = 1) noexcept {
    return try_acquire(id, cls, n, Clock::now());
  }
  keyed_result try_acquire(std::string_view key, std::size_t cls, std::uint64_t n = 1) noexcept {
    return try_acquire(key, cls, n, Clock::now());
  }

  // Forgets the key's window (an explicit reset). Returns whether it had an entry.
  bool erase(std::uint64_t id) noexcept { return slots_.erase(hash_(id)); }
  bool erase(std::string_view key) noexcept { return slots_.erase(hash_(key)); }
  bool contains(std::uint64_t id) const noexcept { return peek(hash_(id)); }
  bool contains(std::string_view key) const noexcept { return peek(hash_(key)); }

  // The table as bytes, and back (keyed/window_snapshot.hpp states the
  // format, the time rule and every refusal): a restored count stays at
  // least as long as it would have without the restart. snapshot() runs
  // beside any traffic; restore() only into a table that has taken none,
  // before sharing it.
  std::string snapshot(nanoseconds now, nanoseconds wall) const;
  account_restore_errc restore(std::string_view bytes, nanoseconds now, nanoseconds wall);

  std::size_t capacity() const noexcept { return slots_.capacity(); }
  std::size_t window() const noexcept { return slots_.window(); }
  std::size_t classes() const noexcept { return cls_.size(); }
  static constexpr std::size_t bytes_per_entry() noexcept { return S::bytes_per_entry(); }

 private:
  struct params {
    std::uint64_t limit;
    std::uint64_t width;  // slot width w, ns
  };
  static constexpr std::uint64_t tag_mask = 0xffffffffULL;

  errc init(std::size_t capacity, const std::vector<window_class>& classes, nanoseconds origin, std::size_t window) {
    if (capacity == 0 || window == 0 || classes.empty()) return errc::zero_count;
    if (classes.size() > max_classes || capacity > (std::size_t{1} << 40)) return errc::too_large;
    std::vector<params> ps;
    ps.reserve(classes.size());
    for (const window_class& c : classes) {
      if (c.limit == 0) return errc::zero_count;
      if (c.limit > max_limit) return errc::too_large;
      if (c.window < min_window) return errc::window_too_short;
      ps.push_back(params{c.limit, detail::ceil_div(static_cast<std::uint64_t>(c.window.count()), 3)});
    }
    slots_.init(capacity, window);
    cls_ = std::move(ps);
    origin_ = origin.count();
    id_ = detail::next_keyed_table_id();
    return errc::ok;
  }

  static std::uint64_t count(std::uint64_t w, unsigned i) noexcept { return (w >> (32 + 8 * i)) & 0xff; }
  // The window word moved forward d slots (d < 2^31) to slot tag `s`.
  static std::uint64_t shifted(std::uint64_t w, std::uint64_t d, std::uint64_t s) noexcept {
    const std::uint64_t counts = d >= 4 ? 0 : ((w >> 32) << (8 * d)) & tag_mask;
    return (counts << 32) | (s & tag_mask);
  }
  // How many slots the word's newest slot lies behind slot s; 2^31 or more
  // reads as s behind it (stale).
  static std::uint64_t behind(std::uint64_t w, std::uint64_t s) noexcept { return (s - w) & tag_mask; }
  static constexpr std::uint64_t stale_from = std::uint64_t{1} << 31;

  std::uint64_t since(nanoseconds now) const noexcept { return detail::positive_difference(now.count(), origin_); }
  static nanoseconds ns(std::uint64_t v) noexcept {
    const std::uint64_t top = static_cast<std::uint64_t>(INT64_MAX);
    return nanoseconds(static_cast<std::int64_t>(v > top ? top : v));
  }

  // Decides n units at slot s on word w: admitted (sets `next`) or the refusal.
  static decision decide(std::uint64_t w, const params& p, std::uint64_t n, std::uint64_t s, std::uint64_t t,
                         std::uint64_t& next) noexcept {
    const std::uint64_t d = behind(w, s);
    if (d >= stale_from) {
      // Wait for the newest slot's start: ((s + (2^32 - d)) * width) - t.
      const std::uint64_t ahead = (tag_mask + 1) - d;
      return decision::wait(ns(detail::sat_mul(detail::sat_add(s, ahead), p.width) - t), reason::stale_time);
    }
    const std::uint64_t cur = shifted(w, d, s);
    std::uint64_t sum = 0;
    for (unsigned i = 0; i < 4; ++i) sum += count(cur, i);
    if (sum + n <= p.limit) {
      next = cur + (n << 32);  // slot s's count stays <= limit <= 255
      return decision::admit();
    }
    // The oldest counted slots leave at each slot boundary: the first j
    // with the newest 4 - j counts plus n within the limit.
    std::uint64_t left = sum;
    for (unsigned j = 1; j <= 4; ++j) {
      left -= count(cur, 4 - j);
      if (left + n <= p.limit) return decision::wait(ns(detail::sat_mul(s + j, p.width) - t));
    }
    return decision::refuse(reason::exceeds_capacity);  // n > limit: not reached (checked before)
  }

  // A `now` before the origin is decided as the origin; its waits, counted
  // from the origin, are then longer from `now` by the difference.
  keyed_result acquire_hash(std::uint64_t h, std::size_t cls, std::uint64_t n, nanoseconds now,
                            keyed_ticket* tk) noexcept {
    if (tk != nullptr) *tk = keyed_ticket{};
    const keyed_result r = acquire_at(h, cls, n, since(now), tk);
    const decision& d = r.result();
    if (now.count() >= origin_ || !d.later() || d.why() == reason::busy) return r;
    const std::uint64_t early = detail::positive_difference(origin_, now.count());
    return {decision::wait(ns(detail::sat_add(static_cast<std::uint64_t>(d.retry_after().count()), early)), d.why()),
            r.status()};
  }
  keyed_result acquire_at(std::uint64_t h, std::size_t cls, std::uint64_t n, std::uint64_t t,
                          keyed_ticket* tk) noexcept {
    if (cls >= cls_.size()) return {decision::refuse(reason::misconfigured), keyed_status::bad_class};
    if (n == 0) return {decision::admit(), keyed_status::admitted};
    std::size_t slot = 0, c = cls;
    for (;;) {
      if (slots_.pin(h, slot, c)) break;
      if (n > cls_[cls].limit) return {decision::refuse(reason::exceeds_capacity), keyed_status::limited};
      std::uint64_t soonest = ~std::uint64_t{0};
      bool known = false;
      auto reusable = [&](entry& e, std::size_t k) {
        const params& p = cls_[k];
        const std::uint64_t s = t / p.width;
        // acquire: pairs with the unpins (release) that precede the control
        // word the claim read with no pins (keyed/claim.hpp).
        const std::uint64_t w = e.s.word.load(std::memory_order_acquire);
        const std::uint64_t d = behind(w, s);
        if ((w >> 32) == 0 || (d >= 4 && d < stale_from)) return true;
        if (d < 4) {  // reusable once its newest slot is 4 behind
          const std::uint64_t wait = detail::sat_mul(s + 4 - d, p.width) - t;
          if (wait < soonest) soonest = wait;
          known = true;
        }
        return false;
      };
      auto start = [&](entry& e) {
        // relaxed: published by the claim's publish CAS (a release).
        e.s.word.store((slots_.start_time() / cls_[cls].width) & tag_mask, std::memory_order_relaxed);
      };
      const detail::claim_outcome o = slots_.claim(h, cls, t, slot, reusable, start);
      if (o == detail::claim_outcome::retry) continue;
      if (o == detail::claim_outcome::full) {
        return {known ? decision::wait(ns(soonest)) : decision::wait(nanoseconds(0), reason::busy),
                keyed_status::table_full};
      }
      c = cls;
      break;
    }
    entry& e = slots_[slot];
    const params& p = cls_[c];
    decision d = decision::refuse(reason::exceeds_capacity);
    if (n <= p.limit) {
      const std::uint64_t s = t / p.width;
      // relaxed: the word is the key's whole window; CAS atomicity orders
      // the admissions among themselves. Its initial value came with the
      // pin (acquire), and evictors read it after our unpin (release).
      std::uint64_t w = e.s.word.load(std::memory_order_relaxed);
      for (;;) {
        std::uint64_t next = 0;
        d = decide(w, p, n, s, t, next);
        // relaxed / relaxed: as the load above.
        if (!d.admitted() || e.s.word.compare_exchange_weak(w, next, std::memory_order_relaxed,
                                                             std::memory_order_relaxed))
          break;
      }
      // relaxed: the claim generation was written before the publish CAS
      // (release) that our pin's acquire read, or by ourselves; no claim can
      // change it while we hold the pin.
      if (tk != nullptr && d.admitted())
        *tk = keyed_ticket{h, s, n, c, slot, e.claim.load(std::memory_order_relaxed), id_};
    }
    S::unpin(e);
    return {d, d.admitted() ? keyed_status::admitted : keyed_status::limited};
  }

  // Takes back what the ticket may still give out of the slot it charged.
  std::uint64_t refund_hash(std::uint64_t h, keyed_ticket& t, std::uint64_t n) noexcept {
    if (n > t.units) n = t.units;
    if (n == 0 || t.hash != h || t.table != id_ || t.cls >= cls_.size()) return 0;  // id_: see restore()
    std::size_t slot = 0, c = 0;
    if (!slots_.pin(h, slot, c)) return 0;  // gone: its new entry, if any, owes nothing
    std::uint64_t got = 0;
    entry& e = slots_[slot];
    // relaxed: as in acquire_at(); another incarnation of the key (or of the
    // entry) has another slot or claim generation.
    if (c == t.cls && slot == t.slot && e.claim.load(std::memory_order_relaxed) == t.claim) {
      // relaxed: the word is the key's whole window; CAS atomicity orders a
      // give-back among the admissions (as in acquire_at()).
      std::uint64_t w = e.s.word.load(std::memory_order_relaxed);
      for (;;) {
        // The charged slot's position behind the newest; the newest never
        // goes behind a slot this incarnation admitted in, so this is below
        // 2^31, and 4 or more means the slot has left the window.
        const std::uint64_t i = (w - t.end) & tag_mask;
        if (i >= 4) break;
        const std::uint64_t have = count(w, static_cast<unsigned>(i));
        const std::uint64_t k = n < have ? n : have;
        if (k == 0) break;
        // relaxed / relaxed: as the load above.
        if (e.s.word.compare_exchange_weak(w, w - (k << (32 + 8 * i)), std::memory_order_relaxed,
                                           std::memory_order_relaxed)) {
          got = k;
          break;
        }
      }
    }
    S::unpin(e);
    t.units -= got;
    return got;
  }

  bool peek(std::uint64_t h) const noexcept {
    std::size_t c = 0;
    return slots_.peek(h, c) != nullptr;
  }

  static constexpr std::uint64_t snapshot_version = 2;  // 2: SipHash-1-3 keys (1: SipHash-2-4)
  std::uint64_t fingerprint() const noexcept;           // keyed/window_snapshot.hpp
  static std::uint64_t max_left(const params& p) noexcept;  // keyed/window_snapshot.hpp

  Hash hash_;
  S slots_;
  std::vector<params> cls_;
  std::int64_t origin_ = 0;
  std::uint64_t id_ = 0;  // this table's identity (keyed/ticket.hpp): set by init() and restore() only
};

TOLLGATE_END_NAMESPACE

// #include <tollgate/keyed/window_snapshot.hpp>  (inlined below)
// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// keyed/window_snapshot.hpp: a keyed_windows table as bytes, and back, so a
// restart does not hand every key a fresh window. No I/O: the caller stores
// the bytes. Included by keyed_windows.hpp after the class.
//
// Format 2 (format 1, the same fields with keys under SipHash-2-4, is
// refused with wrong_version): "TGW1", then little-endian u64 fields: version, the table's
// fingerprint (capacity, window, every class's limit and slot width, and
// the hash of two fixed probe keys, so a table under another seed or hash
// is told apart without storing the seed), the wall-clock time, how far the
// latest claim time was ahead of the snapshot's `now` (ns), the number of
// entries n, then n x (slot, hash, class, left, counts), slots strictly
// ascending; and the FNV-1a checksum of every byte before it. `left` is the
// time from `now` until the entry's newest slot stops being counted (the
// start of the slot 4 after it; at most (2^31 + 3) slot widths); `counts`
// holds in byte i the count of the slot i before the newest, counts that
// have already left the window zeroed. Entries that count nothing are fresh
// and not stored.
//
// Time. restore() keeps every count for what was left of it minus the
// wall-clock time between snapshot and restore (pass system_clock::now()
// as `wall`; one that went backwards counts as no time passed), rounded
// toward keeping: the restored table's slot grid has its own phase, and
// each count goes to the slot of that grid whose end is the first at or
// after the time the count had to stay, so it stays at most one slot width
// longer than it had to and never shorter, at any phase of either table
// and after any downtime. Counts of one entry keep their distances (whole
// slots apart in both tables). The newest slot moves with its count, so a
// `now` that the old table refused as stale (behind its newest slot) is
// refused by the restored one too, until at least the same moment. The
// table's latest claim time is kept as keyed_buckets keeps it, so a key
// that comes back with an earlier `now` is refused as stale. Hence the
// header's bound holds across a restart in wall-clock time: in every
// window (t - W, t] no key gets more than L, counting the admissions of
// both tables. (Bound of the encoding: a key whose newest slot was 2^31
// slots ahead of the snapshot's `now`, 68 years at 1 s, keeps its newest
// count up to one slot less; it is refused as stale all that while.)
//
// restore() refuses, changing nothing, with the account's codes and rules
// (account_restore_errc): bytes that are not a snapshot (bad_format), of an
// unknown version (wrong_version), of a table configured otherwise or under
// another seed (other_configuration: another capacity, window, class list
// or seed), short or long (truncated), whose checksum does not match
// (corrupted; it only catches accidents), or whose fields do not fit this
// table (out_of_range: more entries than the capacity, slots not ascending
// or outside their hash's window, a hash held twice, a class index not the
// table's, `left` zero or past its bound or INT64_MAX, counts above 32
// bits, a newest count of zero, counts summing above the class's limit, a
// count kept that had left the window, a lead past INT64_MAX). It refuses
// with in_use a table that has started taking traffic (any entry claimed,
// pinned or erased since construction or the last restore), and a
// misconfigured table (bad_class at every call) with other_configuration.
// A restored table that took no traffic may be restored again.
//
// Concurrency. snapshot() is thread-safe with everything: it pins each live
// entry while it reads it, and an admission racing it lands in this
// snapshot or after it. A key that moved to another entry during the scan
// (erased, or its entry reused, then claimed again) is stored once, the
// entry whose newest count stays longer (then the larger sum). restore()
// must not race any other use: restore into a new table, before sharing it.
#ifndef TOLLGATE_KEYED_WINDOW_SNAPSHOT_HPP
#define TOLLGATE_KEYED_WINDOW_SNAPSHOT_HPP

// #include <tollgate/keyed_windows.hpp>  (already above)
// #include <tollgate/keyed/snapshot_frame.hpp>  (already above)

#include <algorithm>
#include <limits>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

TOLLGATE_BEGIN_NAMESPACE

template <class Clock, class Hash>
std::uint64_t keyed_windows<Clock, Hash>::fingerprint() const noexcept {
  detail::byte_writer w;
  w.u64(slots_.capacity());
  w.u64(slots_.window());
  w.u64(cls_.size());
  for (const params& p : cls_) {
    w.u64(p.limit);
    w.u64(p.width);
  }
  w.u64(hash_(std::uint64_t{0x746f6c6c67617465ULL}));
  w.u64(hash_(std::string_view("tollgate keyed table")));
  return w.checksum();
}

template <class Clock, class Hash>
std::uint64_t keyed_windows<Clock, Hash>::max_left(const params& p) noexcept {
  const std::uint64_t top = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
  const std::uint64_t m = detail::sat_mul(stale_from + 3, p.width);
  return m < top ? m : top;
}

template <class Clock, class Hash>
std::string keyed_windows<Clock, Hash>::snapshot(nanoseconds now, nanoseconds wall) const {
  struct row {
    std::uint64_t slot, hash, cls, left, counts, sum;
  };
  std::vector<row> rows;
  const std::uint64_t t = since(now);
  for (std::size_t s = 0; s < slots_.capacity(); ++s) {
    entry& e = slots_[s];
    // acquire: as in keyed_slots::pin() (pairs with the publish CAS).
    std::uint64_t c = e.ctl.load(std::memory_order_acquire);
    for (;;) {
      if (S::state_of(c) != S::st_live) break;  // free, erased, or a claim not yet published: fresh
      if ((c & S::pin_mask) == S::pin_mask) {  // as in pin(): wait for one of 32767 calls
        std::this_thread::yield();
        c = e.ctl.load(std::memory_order_acquire);  // acquire: as above
        continue;
      }
      // acq_rel / acquire: the pin of keyed_slots::pin(): while pinned the
      // entry cannot be reclaimed, so its hash and class are its occupant's.
      if (!e.ctl.compare_exchange_weak(c, c + S::pin_one + S::ver_one, std::memory_order_acq_rel,
                                       std::memory_order_acquire))
        continue;
      const std::size_t k = S::class_of(c);
      const params& p = cls_[k];
      // relaxed: stable while pinned (hash), or a moment of the window (its
      // word), as in acquire_hash().
      const std::uint64_t h = e.hash.load(std::memory_order_relaxed);
      const std::uint64_t w = e.s.word.load(std::memory_order_relaxed);
      S::unpin(e);
      if ((w >> 32) == 0) break;  // counts nothing: fresh
      // The newest slot, as a signed distance from now's slot (the word
      // reads 2^31 or more behind as ahead).
      const std::uint64_t st = t / p.width, d = behind(w, st);
      const detail::i128 newest = static_cast<detail::i128>(st) -
                                  (d < stale_from ? static_cast<detail::i128>(d)
                                                  : -static_cast<detail::i128>((tag_mask + 1) - d));
      // Count i (slot newest - i) is counted until the start of slot newest - i + 4.
      const detail::i128 left0 = (newest + 4) * static_cast<detail::i128>(p.width) - static_cast<detail::i128>(t);
      if (left0 <= 0) break;  // every count has left: fresh
      std::uint64_t counts = 0, sum = 0;
      for (unsigned i = 0; i < 4; ++i) {
        if (left0 - static_cast<detail::i128>(i) * p.width <= 0) break;  // left, and so are the older ones
        counts |= count(w, i) << (8 * i);
        sum += count(w, i);
      }
      const std::uint64_t most = max_left(p);
      const std::uint64_t left = left0 > static_cast<detail::i128>(most) ? most : static_cast<std::uint64_t>(left0);
      rows.push_back(row{s, h, k, left, counts, sum});
      break;
    }
  }
  // A key erased or moved and claimed again in another entry while we
  // scanned shows twice: keep the entry that counts longer (then more).
  std::sort(rows.begin(), rows.end(), [](const row& x, const row& y) {
    if (x.hash != y.hash) return x.hash < y.hash;
    return x.left != y.left ? x.left > y.left : x.sum > y.sum;
  });
  rows.erase(std::unique(rows.begin(), rows.end(), [](const row& x, const row& y) { return x.hash == y.hash; }),
             rows.end());
  std::sort(rows.begin(), rows.end(), [](const row& x, const row& y) { return x.slot < y.slot; });
  detail::byte_writer out;
  out.raw("TGW1", 4);
  out.u64(snapshot_version);
  out.u64(fingerprint());
  out.u64(static_cast<std::uint64_t>(wall.count()));
  const std::uint64_t latest = slots_.start_time();
  out.u64(latest > t ? latest - t : 0);
  out.u64(rows.size());
  for (const row& r : rows) {
    out.u64(r.slot);
    out.u64(r.hash);
    out.u64(r.cls);
    out.u64(r.left);
    out.u64(r.counts);
  }
  out.u64(out.checksum());
  return out.out;
}

template <class Clock, class Hash>
account_restore_errc keyed_windows<Clock, Hash>::restore(std::string_view bytes, nanoseconds now, nanoseconds wall) {
  using E = account_restore_errc;
  if (!detail::keyed_untouched(slots_)) return E::in_use;
  detail::byte_reader r{bytes};
  const E opened = detail::open_keyed_snapshot(bytes, "TGW1", 5, r);
  if (opened != E::ok) return opened;
  std::uint64_t ver = 0, fp = 0, then = 0, ahead = 0, n = 0;
  if (!r.u64(ver) || !r.u64(fp) || !r.u64(then) || !r.u64(ahead) || !r.u64(n)) return E::truncated;
  if (ver != snapshot_version) return E::wrong_version;
  if (slots_.capacity() == 0 || fp != fingerprint()) return E::other_configuration;
  constexpr std::uint64_t top = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
  if (ahead > top || n > slots_.capacity()) return E::out_of_range;
  if (r.left() / 40 < n) return E::truncated;
  struct row {
    std::uint64_t slot, hash, cls, left, counts;
  };
  std::vector<row> rows;
  rows.reserve(static_cast<std::size_t>(n));
  for (std::uint64_t k = 0; k < n; ++k) {
    row x{};
    (void)r.u64(x.slot);
    (void)r.u64(x.hash);
    (void)r.u64(x.cls);
    (void)r.u64(x.left);
    (void)r.u64(x.counts);
    if (!detail::keyed_in_window(slots_, x.hash, x.slot) || (k > 0 && x.slot <= rows.back().slot))
      return E::out_of_range;
    if (x.cls >= cls_.size()) return E::out_of_range;
    const params& p = cls_[static_cast<std::size_t>(x.cls)];
    if (x.left == 0 || x.left > max_left(p)) return E::out_of_range;
    if (x.counts > tag_mask || (x.counts & 0xff) == 0) return E::out_of_range;
    std::uint64_t sum = 0;
    for (unsigned i = 0; i < 4; ++i) {
      const std::uint64_t ci = (x.counts >> (8 * i)) & 0xff;
      // A count whose slot had left the window at the snapshot is not kept.
      if (ci != 0 && x.left <= i * p.width) return E::out_of_range;
      sum += ci;
    }
    if (sum > p.limit) return E::out_of_range;
    rows.push_back(x);
  }
  if (r.left() != 0) return E::truncated;
  {
    std::vector<std::uint64_t> hs;
    hs.reserve(rows.size());
    for (const row& x : rows) hs.push_back(x.hash);
    std::sort(hs.begin(), hs.end());
    if (std::adjacent_find(hs.begin(), hs.end()) != hs.end()) return E::out_of_range;  // a key in two entries
  }

  // Everything checked: apply. The wall-clock time between snapshot and
  // restore, zero if the clock went backwards.
  const detail::i128 gap = static_cast<detail::i128>(wall.count()) - static_cast<std::int64_t>(then);
  const std::uint64_t down = gap <= 0 ? 0 : gap >= static_cast<detail::i128>(top) ? top : static_cast<std::uint64_t>(gap);
  // relaxed stores throughout: nothing may use the table during restore();
  // the caller's hand-off to other threads publishes it.
  for (std::size_t s = 0; s < slots_.capacity(); ++s) {
    slots_[s].ctl.store(0, std::memory_order_relaxed);
    slots_.set_hint(s, 0);
    slots_[s].claim.store(0, std::memory_order_relaxed);
  }
  const std::uint64_t t = since(now);
  const std::uint64_t lead = ahead > down ? ahead - down : 0;
  const std::uint64_t latest = detail::sat_add(t, lead);
  if (latest > slots_.start_time()) slots_.set_start_time(latest);
  for (const row& x : rows) {
    if (x.left <= down) continue;  // every count has left by now: fresh
    const std::size_t slot = static_cast<std::size_t>(x.slot), k = static_cast<std::size_t>(x.cls);
    const params& p = cls_[k];
    const std::uint64_t keep = x.left - down;  // from `now`, until the newest count may leave
    // The newest slot m: the first whose end ((m + 4) slots) is at or after t + keep.
    // t + keep < 2^65 and width >= 1 s: the quotient fits 64 bits. m may be
    // just below the origin (wrapping): only differences mod 2^32 are read.
    const detail::u128 end = (static_cast<detail::u128>(t) + keep + p.width - 1) / p.width;
    detail::i128 m = static_cast<detail::i128>(end) - 4;
    // At most 2^31 slots ahead of now's, so still read as ahead: max_left
    // keeps it there (keep <= (2^31 + 3) widths); this only makes it certain.
    const detail::i128 st = static_cast<detail::i128>(t / p.width);
    if (m - st > static_cast<detail::i128>(stale_from)) m = st + stale_from;
    std::uint64_t counts = 0;
    for (unsigned i = 0; i < 4; ++i) {
      if (keep <= i * p.width) break;  // left during the downtime, as the older ones
      counts |= ((x.counts >> (8 * i)) & 0xff) << (8 * i);
    }
    entry& e = slots_[slot];
    e.hash.store(x.hash, std::memory_order_relaxed);
    slots_.set_hint(slot, x.hash);
    e.s.word.store((counts << 32) | (static_cast<std::uint64_t>(m) & tag_mask), std::memory_order_relaxed);
    e.claim.store(1, std::memory_order_relaxed);
    e.ctl.store(S::st_live | (static_cast<std::uint64_t>(k) << S::cls_shift), std::memory_order_relaxed);
  }
  for (const row& x : rows) {
    if (x.left > down) detail::keyed_free_before(slots_, x.hash, static_cast<std::size_t>(x.slot));
  }
  // A new identity, as keyed_buckets' restore() draws: the restored entries
  // repeat claim generations, and no earlier ticket may name them.
  id_ = detail::next_keyed_table_id();
  return E::ok;
}

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_KEYED_WINDOW_SNAPSHOT_HPP

#endif  // TOLLGATE_KEYED_WINDOWS_HPP
// #include <tollgate/keyed_account.hpp>  (inlined below)
// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// keyed_account.hpp: one request admitted only when both its key's limit
// (keyed_buckets, keyed_windows, keyed_permits, keyed_budgets) and the
// organisation's account admit it.
//
// All or nothing. The key is asked first, with a ticket; a refusal there
// leaves the account untouched. Then the account; if it refuses, the key's
// units are given back at the same `now` by the ticket rule of
// keyed_buckets::refund, which returns all of them unless another refund on
// that key came between (then what the rule allows: the safe side, as a
// refund that returns less only keeps units counted). So a request refused
// by either side holds nothing of the other. The key's bound then holds for
// the units admitted net of these give-backs when `now` is not behind the
// latest time the key has seen; a thread that stalls between its clock
// reading and the give-back (its `now` lagging by d) may return up to
// ceil(d / T) units early, keyed_buckets::refund's skew rule. In between, for the few steps
// of the account's decision, the key's units are held: a concurrent call on
// the same key can be refused for them (the conservative side).
//
// After both admitted, `key_ticket` holds the key's units: a request that is
// never sent can give them back with keys.refund(key, key_ticket, n, now)
// (the ticket rule; nothing once the key's entry was erased or reclaimed,
// whose new entry owes none of them), and settle or drop the lease as the
// account says. Dropping the ticket keeps the key's units counted (the safe
// side), as dropping a lease keeps the account's reservations; the two may
// be given back or dropped in either order, neither touches the other.
//
// The same for keyed_permits and keyed_budgets: the key's permit or
// reservation is taken first; if the account refuses, it is released at
// once (all of it: a permit or reservation gives back exactly what it
// holds), so a refused request holds nothing of either. After both
// admitted the caller holds both and releases or settles each as usual.
//
// The same for keyed_windows, with a ticket: the key is asked first (a
// refusal leaves the account untouched); if the account refuses, the key's
// units are taken back out of the very slot they were counted in
// (keyed_windows.hpp's give-back rule). Bound: for every key, at most L
// units in every window (t - W, t] of the supplied times, counting the
// units admitted net of these give-backs, exactly, under any interleaving:
// a window's give-back depends on no `now`, so a thread that stalls between
// its clock reading and the give-back returns nothing early (no skew, unlike
// the bucket's). It gives back all the units (given_back == units) unless,
// in between, a call on the same key at a `now` at least W later moved the
// key's window 4 slots past them (they are then counted by no later
// decision) or the key was erased or reclaimed (its new entry owes none of
// them); given_back says what came back. While the account decides, the
// units are held: a concurrent call on the key can be refused for them.
// After both admitted, `key_ticket` can give them back with
// keys.refund(key, key_ticket, n) for a request never sent.
//
// Thread-safe as its two parts are; lock-free when both paths are (the
// account's admission, and keyed admission on a live key).
#ifndef TOLLGATE_KEYED_ACCOUNT_HPP
#define TOLLGATE_KEYED_ACCOUNT_HPP

// #include <tollgate/config.hpp>  (already above)
// #include <tollgate/account.hpp>  (already above)
// #include <tollgate/keyed_buckets.hpp>  (already above)
// #include <tollgate/keyed_budgets.hpp>  (already above)
// #include <tollgate/keyed_permits.hpp>  (already above)
// #include <tollgate/keyed_windows.hpp>  (already above)

#include <cstdint>

TOLLGATE_BEGIN_NAMESPACE

template <class Clock = steady_clock, class Currency = usd_tag>
struct keyed_admission {
  keyed_result key{decision::refuse(reason::misconfigured), keyed_status::bad_class};
  bool account_asked = false;                 // false: the key refused, the account was not asked
  admission<Clock, Currency> account;         // the account's answer (and lease) when asked
  std::uint64_t given_back = 0;               // key units returned after an account refusal
  keyed_ticket key_ticket;                    // the key's units when both admitted (else empty)
  bool admitted() const noexcept { return key.admitted() && account_asked && account.decision.admitted(); }
  explicit operator bool() const noexcept { return admitted(); }
};

// Takes `units` from the key's bucket (class `cls` if it claims an entry)
// and admits `r` on the account, both or neither. Key is a 64-bit id or a
// string_view.
template <class Clock, class Currency, class Hash, class Key>
keyed_admission<Clock, Currency> admit_keyed(keyed_buckets<Clock, Hash>& keys, account<Clock, Currency>& acc,
                                             const Key& key, std::size_t cls, std::uint64_t units,
                                             const request& r, nanoseconds now) noexcept {
  keyed_admission<Clock, Currency> out;
  keyed_ticket t;
  out.key = keys.try_acquire(key, cls, units, now, t);
  if (!out.key.admitted()) return out;
  out.account_asked = true;
  out.account = acc.try_admit(r, now);
  if (out.account.decision.admitted()) out.key_ticket = std::move(t);
  else out.given_back = keys.refund(key, t, units, now);
  return out;
}

// Takes `units` from the key's sliding window (class `cls` if it claims an
// entry) and admits `r` on the account, both or neither; the same result as
// for a bucket (given_back: the units taken back out of the window).
template <class Clock, class Currency, class Hash, class Key>
keyed_admission<Clock, Currency> admit_keyed(keyed_windows<Clock, Hash>& keys, account<Clock, Currency>& acc,
                                             const Key& key, std::size_t cls, std::uint64_t units,
                                             const request& r, nanoseconds now) noexcept {
  keyed_admission<Clock, Currency> out;
  keyed_ticket t;
  out.key = keys.try_acquire(key, cls, units, now, t);
  if (!out.key.admitted()) return out;
  out.account_asked = true;
  out.account = acc.try_admit(r, now);
  if (out.account.decision.admitted()) out.key_ticket = std::move(t);
  else out.given_back = keys.refund(key, t, units);
  return out;
}

template <class Clock = steady_clock, class Currency = usd_tag>
struct keyed_permit_admission {
  keyed_permit permit;                  // the key's units when both admitted (else empty)
  keyed_status key = keyed_status::bad_class;  // the key's answer
  bool account_asked = false;           // false: the key refused, the account was not asked
  admission<Clock, Currency> account;   // the account's answer (and lease) when asked
  bool admitted() const noexcept { return key == keyed_status::admitted && account_asked && account.decision.admitted(); }
  explicit operator bool() const noexcept { return admitted(); }
};

// Holds `units` of the key's concurrency limit and admits `r` on the
// account, both or neither.
template <class Clock, class Currency, class Hash, class Key>
keyed_permit_admission<Clock, Currency> admit_keyed(keyed_permits<Hash>& keys, account<Clock, Currency>& acc,
                                                    const Key& key, std::size_t cls, std::uint64_t units,
                                                    const request& r, nanoseconds now) noexcept {
  keyed_permit_admission<Clock, Currency> out;
  keyed_permit p = keys.try_acquire(key, cls, units);
  out.key = p.status();
  if (!p) return out;
  out.account_asked = true;
  out.account = acc.try_admit(r, now);
  if (out.account.decision.admitted()) out.permit = std::move(p);  // else released here
  return out;
}

template <class Clock = steady_clock, class Currency = usd_tag>
struct keyed_budget_admission {
  keyed_reservation<Currency> reservation;  // the key's money when both admitted (else refused or released)
  bool account_asked = false;
  admission<Clock, Currency> account;
  bool admitted() const noexcept { return reservation.admitted() && account_asked && account.decision.admitted(); }
  explicit operator bool() const noexcept { return admitted(); }
};

// Reserves `amount` of the key's budget and admits `r` on the account, both
// or neither. Two clocks: `now` is the account's (its Clock, usually
// steady_clock), `wall` the budget table's (system_clock time, ns since
// 1970-01-01Z: it names the calendar period of a table with one, and a
// refusal by the account releases the reservation at that `wall`). A table
// without a period ignores `wall`.
template <class Clock, class Currency, class Hash, class Key>
keyed_budget_admission<Clock, Currency> admit_keyed(keyed_budgets<Currency, Hash>& keys,
                                                    account<Clock, Currency>& acc, const Key& key, std::size_t cls,
                                                    money<Currency> amount, const request& r, nanoseconds now,
                                                    nanoseconds wall) noexcept {
  keyed_budget_admission<Clock, Currency> out;
  out.reservation = keys.reserve(key, cls, amount, wall);
  if (!out.reservation) return out;
  out.account_asked = true;
  out.account = acc.try_admit(r, now);
  if (!out.account.decision.admitted()) keys.release(out.reservation, wall);
  return out;
}
// The same with the table's time read from system_clock::now() once (so a
// table with a period decides in the wall clock's period; one without
// reads no clock). Pass `wall` above to decide at a time you choose.
template <class Clock, class Currency, class Hash, class Key>
keyed_budget_admission<Clock, Currency> admit_keyed(keyed_budgets<Currency, Hash>& keys,
                                                    account<Clock, Currency>& acc, const Key& key, std::size_t cls,
                                                    money<Currency> amount, const request& r,
                                                    nanoseconds now) noexcept {
  const nanoseconds wall = keys.calendar().period == budget_period::none ? nanoseconds(0) : system_clock::now();
  return admit_keyed(keys, acc, key, cls, amount, r, now, wall);
}

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_KEYED_ACCOUNT_HPP
// #include <tollgate/keyed_overflow.hpp>  (inlined below)
// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// keyed_overflow.hpp: new keys that find their window of a keyed table
// full of live entries are sent to one limiter the user names, instead of
// being refused with table_full. For keyed_buckets and keyed_windows: a
// token_bucket, sliding_window or anything with try_acquire(n, now)
// returning a decision. For keyed_permits: a concurrency_limiter (anything
// with try_acquire(n) returning a permit), whose permit the caller then
// holds and releases. For keyed_budgets: a budget (anything with
// reserve(amount) returning a reservation), settled or released through
// settle_or_overflow() or the budget itself.
//
// Guarantee. The table is asked exactly as by its own call, and only its
// table_full answer is replaced: the request is then decided by the
// overflow limiter (status keyed_status::overflow, the limiter's
// decision). The overflow path reads and writes nothing in the table, so
// every key keeps its entry's bound and no live entry changes; all the keys
// sent to overflow together get at most the overflow limiter's bound (for
// a token bucket of rate r and burst B: B + floor(t / T) over any interval
// t; for a sliding window: its L in every W; for a concurrency limiter: its
// limit held at once; for a budget: its limit reserved and settled, all
// shared among them). A key sent to overflow while its window is full and
// admitted on its own entry later can therefore get its class's bound plus
// what it wins of the overflow limiter's: size the overflow limiter for
// what the table's new keys may share when it is full.
//
// Overflow admissions of buckets and windows carry no keyed_ticket (a
// ticket names an entry); give units back through the overflow limiter's
// own means if it has them. A permit or reservation from the overflow
// limiter returns to that limiter, never to the table. A budget
// reservation names no issuer, so the hold remembers the overflow limiter
// that decided it, and settle_or_overflow() refuses to settle it into any
// other (a mixed-up argument would otherwise free money the other budget
// never held and let it pass its limit).
//
// Thread-safe and lock-free as the table and the limiter are.
#ifndef TOLLGATE_KEYED_OVERFLOW_HPP
#define TOLLGATE_KEYED_OVERFLOW_HPP

// #include <tollgate/budget.hpp>  (already above)
// #include <tollgate/concurrency.hpp>  (already above)
// #include <tollgate/config.hpp>  (already above)
// #include <tollgate/keyed_buckets.hpp>  (already above)
// #include <tollgate/keyed_budgets.hpp>  (already above)
// #include <tollgate/keyed_permits.hpp>  (already above)
// #include <tollgate/keyed_windows.hpp>  (already above)
// #include <tollgate/money.hpp>  (already above)

#include <cstddef>
#include <cstdint>
#include <memory>
#include <utility>

TOLLGATE_BEGIN_NAMESPACE
namespace detail {
struct keyed_overflow_access;
}  // namespace detail

// Takes n units for the key from its entry (claiming one with class `cls`
// if it has none), or from `overflow` when its window is full of live
// entries. Key is a 64-bit id or a string_view.
template <class Clock, class Hash, class Key, class Overflow>
keyed_result try_acquire_or_overflow(keyed_buckets<Clock, Hash>& keys, Overflow& overflow, const Key& key,
                                     std::size_t cls, std::uint64_t n, nanoseconds now) noexcept {
  const keyed_result r = keys.try_acquire(key, cls, n, now);
  if (!r.table_full()) return r;
  return keyed_result(overflow.try_acquire(n, now), keyed_status::overflow);
}

// The same for a keyed_windows table.
template <class Clock, class Hash, class Key, class Overflow>
keyed_result try_acquire_or_overflow(keyed_windows<Clock, Hash>& keys, Overflow& overflow, const Key& key,
                                     std::size_t cls, std::uint64_t n, nanoseconds now) noexcept {
  const keyed_result r = keys.try_acquire(key, cls, n, now);
  if (!r.table_full()) return r;
  return keyed_result(overflow.try_acquire(n, now), keyed_status::overflow);
}

// What a permits or budgets table with an overflow limiter gives: the
// table's hold (a keyed_permit or keyed_reservation), or, when the key's
// window was full, the overflow limiter's (its permit or reservation; the
// table's is then refused with table_full and holds nothing). Move-only as
// the holds are; each returns to its own owner.
template <class KeyHold, class OverflowHold>
struct keyed_overflow_hold {
  KeyHold key;                  // the table's answer and what it holds
  OverflowHold overflow{};      // the overflow limiter's, when `sent`
  bool sent = false;            // the key's window was full: decided by the overflow limiter
  keyed_status status() const noexcept { return sent ? keyed_status::overflow : key_status(key); }
  bool admitted() const noexcept { return sent ? static_cast<bool>(overflow) : static_cast<bool>(key); }
  explicit operator bool() const noexcept { return admitted(); }
  // Whether `limiter` is the overflow limiter that decided it (false when
  // not `sent`).
  template <class Limiter>
  bool decided_by(const Limiter& limiter) const noexcept {
    return sent && issuer_ == static_cast<const void*>(std::addressof(limiter));
  }

 private:
  friend struct detail::keyed_overflow_access;
  const void* issuer_ = nullptr;  // the overflow limiter, when `sent`
  static keyed_status key_status(const keyed_permit& p) noexcept { return p.status(); }
  template <class C>
  static keyed_status key_status(const keyed_reservation<C>& r) noexcept {
    return r.status;
  }
};
namespace detail {
struct keyed_overflow_access {
  template <class H, class L>
  static void mark(H& h, const L& limiter) noexcept {
    h.sent = true;
    h.issuer_ = static_cast<const void*>(std::addressof(limiter));
  }
};
}  // namespace detail
using keyed_overflow_permit = keyed_overflow_hold<keyed_permit, permit>;
template <class C = usd_tag>
using keyed_overflow_reservation = keyed_overflow_hold<keyed_reservation<C>, budget_reservation<C>>;

// Holds n units of the key's concurrency limit (claiming an entry with
// class `cls` if it has none), or n units of `overflow` when its window is
// full of live entries. Release the result's `key` or `overflow` permit
// (whichever it holds) as any permit.
template <class Hash, class Key, class Overflow>
auto try_acquire_or_overflow(keyed_permits<Hash>& keys, Overflow& overflow, const Key& key, std::size_t cls,
                             std::uint64_t n) noexcept
    -> keyed_overflow_hold<keyed_permit, decltype(overflow.try_acquire(n))> {
  keyed_overflow_hold<keyed_permit, decltype(overflow.try_acquire(n))> out;
  out.key = keys.try_acquire(key, cls, n);
  if (out.key.status() != keyed_status::table_full) return out;
  detail::keyed_overflow_access::mark(out, overflow);
  out.overflow = overflow.try_acquire(n);
  return out;
}

// Reserves `amount` of the key's budget (claiming an entry with class
// `cls` if it has none; `now` names the period of a table with one), or of
// `overflow` when its window is full of live entries (a table that reuses
// no entry fills for good: its new keys then all share the overflow
// budget). Settle or release with settle_or_overflow().
template <class Currency, class Hash, class Key, class Overflow>
auto reserve_or_overflow(keyed_budgets<Currency, Hash>& keys, Overflow& overflow, const Key& key, std::size_t cls,
                         money<Currency> amount, nanoseconds now) noexcept
    -> keyed_overflow_hold<keyed_reservation<Currency>, decltype(overflow.reserve(amount))> {
  keyed_overflow_hold<keyed_reservation<Currency>, decltype(overflow.reserve(amount))> out;
  out.key = keys.reserve(key, cls, amount, now);
  if (out.key.status != keyed_status::table_full) return out;
  detail::keyed_overflow_access::mark(out, overflow);
  out.overflow = overflow.reserve(amount);
  return out;
}

// Settles what reserve_or_overflow() holds where it is held (the table at
// `now`, or the overflow budget); returns reserved - actual as their own
// settle does, nothing for a hold already settled or refused. actual zero
// releases it. A hold sent to another overflow budget than `overflow` (or
// made by another table than `keys`: its own settle refuses it) is left as
// it is, still held, and zero returned: settle it with its own.
template <class Currency, class Hash, class Overflow, class OverflowHold>
money<Currency> settle_or_overflow(keyed_budgets<Currency, Hash>& keys, Overflow& overflow,
                                   keyed_overflow_hold<keyed_reservation<Currency>, OverflowHold>& h,
                                   money<Currency> actual, nanoseconds now) noexcept {
  if (h.sent) return h.decided_by(overflow) ? overflow.settle(h.overflow, actual) : money<Currency>();
  return keys.settle(h.key, actual, now);
}

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_KEYED_OVERFLOW_HPP
// #include <tollgate/shared_region.hpp>  (inlined below)
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

// #include <tollgate/config.hpp>  (already above)
// #include <tollgate/budget.hpp>  (already above)
// #include <tollgate/calendar_quota.hpp>  (already above)
// #include <tollgate/clock.hpp>  (already above)
// #include <tollgate/concurrency.hpp>  (already above)
// #include <tollgate/region_key.hpp>  (inlined below)
// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// region_key.hpp: the name of a type as a shared region records it, so that
// a region built for one type is refused (region_errc::wrong_type) when
// attached as another, also one of the same size.
//
// A region stores its object's type key: the size, the alignment and the
// layout class of the type, and region_key<T>::value, a 64-bit name of the
// type and of every template parameter that changes what its bytes mean.
// The library names what it places and what those depend on:
//   token_bucket<Clock>, sliding_window<Clock, Subwindows>,
//   calendar_quota<Clock>, concurrency_limiter, budget<Currency>;
//   the clocks steady_clock, coarse_clock, system_clock,
//   basic_manual_clock<Tag>, basic_region_clock<Tag> (and the tags of
//   manual_clock and region_clock);
//   a currency by its `code` ("USD", "CNY", or your own currency's).
// So budget<usd_tag> never attaches as budget<cny_tag>, token_bucket<
// steady_clock> never as token_bucket<system_clock>, a concurrency_limiter
// never as a calendar_quota or a budget of its size.
//
// Your own types. A type without a specialisation is unnamed (value 0): its
// key is its shape only, so it attaches as any other unnamed type of the
// same size and alignment (never as a named one). Name a type you place in
// a region by specialising region_key, from a name of yours and the keys or
// numbers of its parameters:
//   template <> struct tollgate::region_key<my_counter> {
//     static constexpr std::uint64_t value = tollgate::region_name_key("myapp.counter/1");
//   };
// An unnamed clock (or tag) is 0 too: token_bucket<your_clock> is told apart
// from token_bucket<steady_clock>, but not from token_bucket of another
// unnamed clock; name the clock the same way to tell those apart. A key must
// be the same in every program that maps the region: build it from names
// and numbers, never from addresses, typeid or a compiler's function name
// (they differ between builds and compilers).
#ifndef TOLLGATE_REGION_KEY_HPP
#define TOLLGATE_REGION_KEY_HPP

// #include <tollgate/config.hpp>  (already above)
// #include <tollgate/budget.hpp>  (already above)
// #include <tollgate/calendar_quota.hpp>  (already above)
// #include <tollgate/clock.hpp>  (already above)
// #include <tollgate/concurrency.hpp>  (already above)
// #include <tollgate/sliding_window.hpp>  (already above)
// #include <tollgate/token_bucket.hpp>  (already above)

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <type_traits>

TOLLGATE_BEGIN_NAMESPACE

// The key of a name (FNV-1a of its bytes) with the keys or numbers of its
// parameters mixed in (FNV-1a over their 8 bytes each), in order.
template <class... Vs>
constexpr std::uint64_t region_name_key(std::string_view name, Vs... params) noexcept {
  std::uint64_t h = 14695981039346656037ULL;
  for (const char c : name) {
    h ^= static_cast<unsigned char>(c);
    h *= 1099511628211ULL;
  }
  const std::uint64_t vs[] = {0, static_cast<std::uint64_t>(params)...};
  for (std::size_t j = 1; j < sizeof vs / sizeof vs[0]; ++j)
    for (int i = 0; i < 8; ++i) {
      h ^= (vs[j] >> (8 * i)) & 0xffu;
      h *= 1099511628211ULL;
    }
  return h;
}

// A type's name for regions: 0 (unnamed) unless specialised (see above).
template <class T, class = void>
struct region_key {
  static constexpr std::uint64_t value = 0;
};

namespace detail {
template <class C, class = void>
struct currency_code_key {
  static constexpr std::uint64_t value = 0;
};
template <class C>
struct currency_code_key<C, std::void_t<decltype(C::code)>> {
  static constexpr std::uint64_t value = region_name_key(C::code);
};
}  // namespace detail

template <class Tag>
struct basic_region_clock;
struct region_clock_tag;

template <>
struct region_key<steady_clock> {
  static constexpr std::uint64_t value = region_name_key("tollgate.steady_clock");
};
template <>
struct region_key<coarse_clock> {
  static constexpr std::uint64_t value = region_name_key("tollgate.coarse_clock");
};
template <>
struct region_key<system_clock> {
  static constexpr std::uint64_t value = region_name_key("tollgate.system_clock");
};
template <>
struct region_key<manual_clock_tag> {
  static constexpr std::uint64_t value = region_name_key("tollgate.manual_clock_tag");
};
template <>
struct region_key<region_clock_tag> {
  static constexpr std::uint64_t value = region_name_key("tollgate.region_clock_tag");
};
template <class Tag>
struct region_key<basic_manual_clock<Tag>> {
  static constexpr std::uint64_t value = region_name_key("tollgate.basic_manual_clock", region_key<Tag>::value);
};
template <class Tag>
struct region_key<basic_region_clock<Tag>> {
  static constexpr std::uint64_t value = region_name_key("tollgate.basic_region_clock", region_key<Tag>::value);
};

template <class Clock>
struct region_key<token_bucket<Clock>> {
  static constexpr std::uint64_t value = region_name_key("tollgate.token_bucket", region_key<Clock>::value);
};
template <class Clock, std::size_t Subwindows>
struct region_key<sliding_window<Clock, Subwindows>> {
  static constexpr std::uint64_t value =
      region_name_key("tollgate.sliding_window", region_key<Clock>::value, Subwindows);
};
template <class Clock>
struct region_key<calendar_quota<Clock>> {
  static constexpr std::uint64_t value = region_name_key("tollgate.calendar_quota", region_key<Clock>::value);
};
template <>
struct region_key<concurrency_limiter> {
  static constexpr std::uint64_t value = region_name_key("tollgate.concurrency_limiter");
};
// A currency by its code, or by its own region_key where it has none.
template <class C>
struct region_key<budget<C>> {
  static constexpr std::uint64_t value =
      region_name_key("tollgate.budget", detail::currency_code_key<C>::value, region_key<C>::value);
};

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_REGION_KEY_HPP
// #include <tollgate/sliding_window.hpp>  (already above)
// #include <tollgate/token_bucket.hpp>  (already above)

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
// #include <tollgate/shared_account.hpp>  (inlined below)
// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// shared_account.hpp: one account whose state lives in memory that several
// processes on one host map (a pre-forked pool, a job runner, several
// services): one organisation's limits, kept once for all of them.
//
// Use. The caller makes the bytes (shm_open or memfd_create + a MAP_SHARED
// mmap of shared_account<...>::region_bytes(), at any address; the library
// opens nothing) and every process calls open() with the same configuration
// and its own process identity. The first builds the account in place, the
// others attach (shared_region.hpp: a state word, no lock; two that open at
// once end with one account). The region's fingerprint is the configuration
// (fingerprint()): a process with another configuration is refused with
// region_errc::wrong_config and changes nothing; another layout, size or
// type, or a torn header, with their own codes.
//
// What it enforces, with the in-process account's decisions (account/
// policy.hpp: assess, refusal, the limiters each server model runs;
// account/pause.hpp: clamp_hint, pause_after) applied to state in the
// region (account/limiters.hpp's primitives, one per dimension): RPM, TPM
// and TPD (strict windows, the spaced margin policy, or a calendar day, as
// the server model says), concurrency (account/shared_slots.hpp: one slot
// word per permit), the budget, and the pause and stop after a 429, an
// overload or a quota error, which every process sees at once (one
// process's 429 pauses all). The bounds are the account's (account.hpp):
// all-or-nothing admission, rolled back on the first refusal, never
// over-admitting, across every thread of every process.
// Not here: server_model::learn, adaptive_concurrency,
// trust_rate_limit_headers (their state is not placeable yet: refused,
// errc::not_shareable), snapshots, set_limits, the release hook.
//
// Per-thread credit (account_config::per_thread_credit; account/
// shared_credit.hpp, which states it in full): `Lines` credit lines in the
// region, one per thread of this process's first 16, each taking a strict
// window's units a chunk at a time. Every window stays exact; other threads
// of every process can be refused falsely by at most `Lines` chunks of a
// window (1.6 % of its limit at the default 16, under 1/64 for any Lines);
// a refused thread gives its own credit back before the windows are asked
// for its wait. Credit off: a refusal is false only while a racing
// admission holds units it is about to roll back. Concurrency credit, for
// limits of 1,024 and more (account/shared_slot_cache.hpp): a thread with a
// line keeps up to the line's chunk of the limit (L / 1024, at most 8) of
// the slot words its leases gave back, still held, for its next leases;
// leases in flight never exceed L, other users are refused falsely by at
// most Lines x that. remaining() counts credit as remaining.
//
// Where each part lives (in the region or in this process), the process
// identity and fork(): account/shared_parts.hpp.
//
// Dead processes. A process killed at any instruction leaves every shared
// word consistent: each step is one CAS of a lock-free primitive. What it
// held comes back as follows. Its concurrency slots: when the account runs
// out of slots, by lease_timeout after their last renewal (the backstop;
// lease::renew moves it) and, with a liveness check, at the first scan
// (at most one per scan_interval) after the check calls its identity dead,
// except a slot whose taker (or renewer) was killed between its CAS and its
// name store: the deadline only (account/shared_slots.hpp).
// Its window and token units stay counted until they leave their windows (the
// requests may have reached the server), and so do those its credit lines
// held; the lines come back when a claimer finds none free and the liveness
// check calls it dead (no deadline: shared_credit.hpp). Money it reserved stays committed
// for good: kept as spent (remaining() excludes it; spent() does not
// include it), the safe side.
//
// Handles. A shared_account object is this process's handle: leases point
// at it and must not outlive it, and open() or attach() on a handle that
// still has leases out is not allowed (they would settle into the new
// region). Several handles in one process may share one region (each with
// its own identity or the same one).
//
// Concurrency contract. try_admit, the lease's settles and renew,
// on_response, resume and clear_pause are thread- and process-safe and
// lock-free: no mutex, allocation or syscall on them. open, attach, claim and
// close are not hot, and not thread-safe with any other call on this object
// (admissions, settles, views).
#ifndef TOLLGATE_SHARED_ACCOUNT_HPP
#define TOLLGATE_SHARED_ACCOUNT_HPP

// #include <tollgate/config.hpp>  (already above)
// #include <tollgate/account/config.hpp>  (already above)
// #include <tollgate/account/limiters.hpp>  (already above)
// #include <tollgate/account/policy.hpp>  (already above)
// #include <tollgate/account/shared_credit.hpp>  (inlined below)
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

// #include <tollgate/config.hpp>  (already above)
// #include <tollgate/account/credit.hpp>  (already above)
// #include <tollgate/clock.hpp>  (already above)
// #include <tollgate/detail/atomic.hpp>  (already above)
// #include <tollgate/detail/shard_counters.hpp>  (already above)

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
// #include <tollgate/account/shared_parts.hpp>  (inlined below)
// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// account/shared_parts.hpp: the process-local parts of a shared_account
// (shared_account.hpp): its options, its leases and admissions, its
// statistics, the fork watch, and the state it places in a region (with
// its region_key, so that a region of another account type is refused).
//
// Process identity: nonzero, below 2^48, one that a later process cannot
// repeat (a pid and an incarnation number, say); the liveness check
// (identity -> alive?) must not call a live process dead. Without a check,
// slots come back by their deadline only.
//
// fork(). A child inherits this object and its leases. Until it calls
// claim(its own identity) it admits nothing (dimension::stopped,
// reason::misconfigured, needs_claim() true), so its leases never carry its
// parent's identity; leases it inherited are inert in it (settling or
// dropping one does nothing: the parent settles its own). The epoch is a
// process-local counter bumped by a pthread_atfork child handler that
// open() registers once.
//
// Time. Processes on one host share CLOCK_MONOTONIC (steady_clock); tests
// may use region_clock (shared_region.hpp), whose word lives in a region.
// A `now` older than one the region has seen (another process's later
// reading) keeps the account's rule: a window that cannot decide at it
// refuses it with the wait to the time it can. A slot's deadline counts from
// the `now` it was taken (or renewed) at: a reading that lags by d brings
// that slot's reclaim d earlier.
//
// Included by shared_account.hpp; the lease's members that reach into the
// account are defined in account/shared_lease.hpp, which it includes last.
//
// Where each part of a shared account lives.
//   In the region (address-free: plain atomics and integers, no pointer):
//   the limiters (their std::optional wrappers are trivially destructible
//   and hold their values in place), the pause and stop words, the
//   admission rules (plain values), the slot table and its owner words, the
//   reclaim counters, the credit lines and their owner words.
//   In this process, beside it (the shared_account object): the pointer to
//   the region's state, the configuration (equal in every process, by the
//   fingerprint), this process's identity and liveness check, its fork
//   epoch, its statistics, the credit chunks, which line each of its
//   threads owns and the slot words each keeps (account/shared_slot_cache.hpp). Leases are process-local (they point at this
//   object and name the model, whose prices a settle needs); there is no
//   release hook and no thread-local index.
#ifndef TOLLGATE_ACCOUNT_SHARED_PARTS_HPP
#define TOLLGATE_ACCOUNT_SHARED_PARTS_HPP

// #include <tollgate/config.hpp>  (already above)
// #include <tollgate/account/config.hpp>  (already above)
// #include <tollgate/account/limiters.hpp>  (already above)
// #include <tollgate/account/pause.hpp>  (already above)
// #include <tollgate/account/policy.hpp>  (already above)
// #include <tollgate/account/shared_credit.hpp>  (already above)
// #include <tollgate/account/shared_slots.hpp>  (inlined below)
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

// #include <tollgate/config.hpp>  (already above)
// #include <tollgate/clock.hpp>  (already above)
// #include <tollgate/detail/atomic.hpp>  (already above)
// #include <tollgate/detail/slot_word.hpp>  (already above)

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
// #include <tollgate/account/lease.hpp>  (already above)
// #include <tollgate/clock.hpp>  (already above)
// #include <tollgate/cost.hpp>  (already above)
// #include <tollgate/decision.hpp>  (already above)
// #include <tollgate/detail/atomic.hpp>  (already above)
// #include <tollgate/error.hpp>  (already above)
// #include <tollgate/region_key.hpp>  (already above)
// #include <tollgate/shared_region.hpp>  (already above)

#include <pthread.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <type_traits>

TOLLGATE_BEGIN_NAMESPACE

struct shared_account_options {
  std::uint64_t identity = 0;  // this process: nonzero, below 2^48, never repeated (see the header)
  // Optional: is the process with this identity alive? Called for slots a
  // scan finds held (and for a region left half-built, shared_region.hpp).
  bool (*alive)(std::uint64_t identity, void* context) = nullptr;
  void* context = nullptr;
  // At most one scan for reclaimable slots per this much supplied time,
  // region-wide (without a liveness check: lease_timeout / 16).
  nanoseconds scan_interval = std::chrono::milliseconds(100);
};

struct shared_open_result {
  region_errc region = region_errc::ok;  // the region's answer (shared_region.hpp)
  errc config = errc::ok;                // the configuration's (checked before the region is touched)
  error_values values;                   // for a limit too large
  bool constructed = false;              // this call built the account
  explicit operator bool() const noexcept { return region == region_errc::ok && config == errc::ok; }
};

template <class Clock, class Currency, std::size_t Slots, std::size_t Lines>
class shared_account;

// What settling a shared lease did: as the account's (account/lease.hpp).
template <class Clock = steady_clock, class Currency = usd_tag, std::size_t Slots = 64, std::size_t Lines = 16>
class shared_lease {
 public:
  using owner_type = shared_account<Clock, Currency, Slots, Lines>;
  shared_lease() noexcept = default;
  shared_lease(const shared_lease&) = delete;
  shared_lease& operator=(const shared_lease&) = delete;
  shared_lease(shared_lease&& o) noexcept { take(o); }
  shared_lease& operator=(shared_lease&& o) noexcept {
    if (this != &o) {
      drop();
      take(o);
    }
    return *this;
  }
  // Dropped without settling: the slot is released, the reservations stay.
  ~shared_lease() { drop(); }

  explicit operator bool() const noexcept { return acc_ != nullptr; }
  std::uint64_t reserved_tokens() const noexcept { return tokens_; }

  // A heartbeat (account/lease.hpp): true while the lease holds its slot.
  inline bool renew(nanoseconds now) noexcept;
  inline basic_settle_result<Currency> settle(const usage& u, nanoseconds now) noexcept;
  inline void settle_rejected(nanoseconds now) noexcept;
  void settle_failed(nanoseconds now) noexcept { settle_rejected(now); }
  inline basic_settle_result<Currency> settle_cancelled(const std::optional<usage>& known, nanoseconds now) noexcept;

 private:
  friend class shared_account<Clock, Currency, Slots, Lines>;
  static constexpr std::size_t no_slot = static_cast<std::size_t>(-1);
  inline bool live() const noexcept;  // issued in this process (not inherited through fork)
  inline void drop() noexcept;
  inline void release_slot() noexcept;
  void take(shared_lease& o) noexcept {
    acc_ = std::exchange(o.acc_, nullptr);
    slot_ = std::exchange(o.slot_, no_slot);
    stamp_ = o.stamp_;
    day_t_ = std::move(o.day_t_);
    money_ = o.money_;
    o.money_ = budget_reservation<Currency>();
    tokens_ = std::exchange(o.tokens_, 0);
    if (acc_) {
      epoch_ = o.epoch_;
      rpm_s_ = o.rpm_s_;
      tpm_s_ = o.tpm_s_;
      tpd_s_ = o.tpd_s_;
      rpm_c_ = o.rpm_c_;
      tpm_c_ = o.tpm_c_;
      model_ = o.model_;
    }
  }
  // As the account's lease (account/lease.hpp): the fields without an
  // initializer are written by the admission (once acc_ is set) before
  // anything reads them, and copied only then; initialized, they made one
  // run of zeros of about 130 bytes in every admission, which g++ cleared
  // with `rep stos` (a sixth of an admit + settle's time, by sampling).
  owner_type* acc_ = nullptr;
  std::size_t slot_ = no_slot;
  std::uint64_t stamp_ = 0;  // written with slot_; set so that g++ sees it (as the account's)
  std::uint64_t epoch_;
  std::uint64_t rpm_s_, tpm_s_, tpd_s_, rpm_c_, tpm_c_;
  quota_ticket day_t_;
  budget_reservation<Currency> money_;
  const model_info* model_;
  std::uint64_t tokens_ = 0;
};

template <class Clock = steady_clock, class Currency = usd_tag, std::size_t Slots = 64, std::size_t Lines = 16>
struct shared_admission {
  tollgate::decision decision = tollgate::decision::refuse(reason::misconfigured);
  dimension_set refused;
  shared_lease<Clock, Currency, Slots, Lines> lease;  // valid when admitted
  std::uint64_t tokens = 0;
  money<Currency> worst_case;
  nanoseconds at{0};
  explicit operator bool() const noexcept { return decision.admitted(); }
};

// This process's statistics, and the region's reclaims.
template <class Currency = usd_tag>
struct shared_account_stats {
  std::uint64_t admitted = 0, refused = 0;  // by this process
  std::uint64_t reclaimed_by_deadline = 0, reclaimed_dead = 0;  // by every process
  std::int64_t spent_nanos = 0;  // settled by every process
};

namespace detail {

// Bumped in every child of fork() (see the header).
inline std::atomic<std::uint64_t>& fork_epoch() noexcept {
  static std::atomic<std::uint64_t> e{0};
  return e;
}
inline void bump_fork_epoch() noexcept {
  // relaxed: the child is single-threaded when the handler runs; later
  // threads it starts are ordered after it by their creation.
  fork_epoch().fetch_add(1, std::memory_order_relaxed);
}
inline void watch_forks() noexcept {
  static const int registered = pthread_atfork(nullptr, nullptr, &bump_fork_epoch);
  (void)registered;
}
// Where a thread starts probing the slot table, so two threads do not race
// for the same word; any value is correct.
inline std::size_t probe_start() noexcept {
  static std::atomic<std::size_t> next{0};
  // relaxed: only spreads threads over the table.
  static thread_local const std::size_t mine = next.fetch_add(7, std::memory_order_relaxed);
  return mine;
}

// The limiters' configuration: concurrency is the slot table's.
template <class Currency>
basic_account_config<Currency> shared_limiters_config(const basic_account_config<Currency>& c) noexcept {
  basic_account_config<Currency> x = c;
  x.concurrency = limit::unknown();
  return x;
}

// Every value that shapes the state or the decisions (per_thread_credit
// too: every process must run the lines the same way).
template <class Currency, std::size_t Slots, std::size_t Lines>
std::uint64_t shared_fingerprint(const basic_account_config<Currency>& c) noexcept {
  auto lim = [](const limit& l) -> std::uint64_t { return l.is_finite() ? *l.value() : ~std::uint64_t{0}; };
  return region_fingerprint_of(
      lim(c.concurrency), lim(c.rpm), lim(c.tpm), lim(c.tpd), static_cast<unsigned>(c.model), c.calendar_day,
      c.utc_offset.count(), c.unix_time_at_zero ? c.unix_time_at_zero->count() : 0, c.unix_time_at_zero.has_value(),
      c.refund_unused_tokens, c.max_request_tokens, c.budget ? c.budget->nanos() : -1, c.request_window.count(),
      c.token_window.count(), c.lease_timeout.count(), c.max_pause.count(), c.spacing_margin.count(),
      std::is_same<Currency, usd_tag>::value, Slots, c.per_thread_credit, Lines);
}

// Whether a shared layout of `Slots` slots can run `c`: errc::ok, else the
// first reason (and its values in `v`).
template <class Clock, class Currency, std::size_t Slots>
errc shared_check(const basic_account_config<Currency>& c, error_values& v) noexcept {
  if (c.model == server_model::learn || c.adaptive_concurrency || c.trust_rate_limit_headers)
    return errc::not_shareable;
  if (c.max_pause < nanoseconds(0) || c.spacing_margin < nanoseconds(0)) return errc::zero_period;
  if (auto x = c.concurrency.value()) {
    if (*x == 0) return errc::zero_count;
    if (*x > Slots) {
      v = error_values{*x, Slots};
      return errc::too_large;
    }
  }
  errc e = account_policy::check_limits(c, c.rpm, c.tpm, v);
  if (e != errc::ok) return e;
  // The limiters refuse what they cannot run: build them once, here.
  account_limiters<Clock, Currency> probe;
  return probe.build(shared_limiters_config(c), nanoseconds(0));
}

template <class Clock, class Currency, std::size_t Slots, std::size_t Lines>
struct shared_account_state {
  account_limiters<Clock, Currency> d;  // concurrency is not among them: see slots
  pause_state pause;
  account_policy::admission_rules<Currency> rules;
  std::uint64_t refund_unused = 0;
  shared_slots<Slots> slots;
  detail::atomic<std::uint64_t> reclaimed_deadline{0}, reclaimed_dead{0};
  std::uint64_t credit_on = 0;  // per_thread_credit, as built (the fingerprint holds it too)
  shared_credit_lines<typename account_limiters<Clock, Currency>::window, Lines> credit;
};

}  // namespace detail

// The shared account's state by name, clock, currency and slot count: a
// region built for one of them is refused (wrong_type) as another; "/2":
// the slot words of detail/slot_word.hpp; "/3": the credit lines
// (account/shared_credit.hpp), with their count in the key; "/5": a taker
// names itself after its CAS and the generation always steps by one
// (account/shared_slots.hpp), which a process of "/3" would not keep ("/4"
// was a withdrawn slot protocol's).
template <class Clock, class Currency, std::size_t Slots, std::size_t Lines>
struct region_key<detail::shared_account_state<Clock, Currency, Slots, Lines>> {
  static constexpr std::uint64_t value =
      region_name_key("tollgate.shared_account/5", region_key<Clock>::value, region_key<budget<Currency>>::value,
                      Slots, Lines);
};

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_ACCOUNT_SHARED_PARTS_HPP
// #include <tollgate/account/shared_slot_cache.hpp>  (inlined below)
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

// #include <tollgate/config.hpp>  (already above)
// #include <tollgate/clock.hpp>  (already above)
// #include <tollgate/detail/atomic.hpp>  (already above)
// #include <tollgate/detail/shard_counters.hpp>  (already above)

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
// #include <tollgate/clock.hpp>  (already above)
// #include <tollgate/cost.hpp>  (already above)
// #include <tollgate/decision.hpp>  (already above)
// #include <tollgate/detail/atomic.hpp>  (already above)
// #include <tollgate/detail/shard_counters.hpp>  (already above)
// #include <tollgate/error.hpp>  (already above)
// #include <tollgate/http.hpp>  (already above)
// #include <tollgate/shared_region.hpp>  (already above)

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <new>
#include <optional>
#include <string_view>
#include <type_traits>
#include <utility>

TOLLGATE_BEGIN_NAMESPACE

template <class Clock = steady_clock, class Currency = usd_tag, std::size_t Slots = 64, std::size_t Lines = 16>
class shared_account {
 public:
  using clock = Clock;
  using currency = Currency;
  using config_type = basic_account_config<Currency>;
  using state = detail::shared_account_state<Clock, Currency, Slots, Lines>;
  using lease_type = shared_lease<Clock, Currency, Slots, Lines>;
  using admission_type = shared_admission<Clock, Currency, Slots, Lines>;
  using amount = money<Currency>;
  static_assert(region_placeable<state>::value, "the shared account's state must be placeable in a region");

  // The bytes a region for this account needs.
  static constexpr std::size_t region_bytes() noexcept { return region_size<state>(); }
  // The largest concurrency limit this layout holds (Slots: a parameter).
  static constexpr std::uint64_t max_concurrency = Slots;

  shared_account() noexcept = default;  // attached to nothing: refuses everything
  // Gives back this process's credit lines (not in a child of fork() before
  // claim(): they are its parent's).
  ~shared_account() { release_lines(); }
  shared_account(const shared_account&) = delete;
  shared_account& operator=(const shared_account&) = delete;

  // The configuration's fingerprint (per_thread_credit and the layout's
  // parameters too), and whether this layout can run `c` (errc::ok, else
  // the first reason): account/shared_parts.hpp.
  static std::uint64_t fingerprint(const config_type& c) noexcept {
    return detail::shared_fingerprint<Currency, Slots, Lines>(c);
  }
  static errc check(const config_type& c, error_values& v) noexcept {
    return detail::shared_check<Clock, Currency, Slots>(c, v);
  }

  // Builds the account in the region, or attaches to the one there (see
  // the header). On any error this object stays detached.
  shared_open_result open(void* bytes, std::size_t size, const config_type& c, const shared_account_options& o,
                          nanoseconds origin = Clock::now()) noexcept {
    return open_impl(bytes, size, c, o, origin, true);
  }
  // Attaches only: never builds, never writes the region.
  shared_open_result attach(void* bytes, std::size_t size, const config_type& c,
                            const shared_account_options& o) noexcept {
    return open_impl(bytes, size, c, o, nanoseconds(0), false);
  }

  // After fork(): this process's own identity. False (and nothing changes)
  // for an identity that is zero or too wide. In a child the lines and kept
  // slot words this object names are its parent's: forgotten, not given
  // back. Called again where no fork came between (a new identity for this
  // process), it first gives back what it holds under the old one.
  bool claim(std::uint64_t identity) noexcept {
    if (identity == 0 || identity > detail::shared_slots<Slots>::max_identity) return false;
    if (s_ != nullptr && !needs_claim()) release_lines();  // this process's own: back under the old name
    opts_.identity = identity;
    set_starts();
    epoch_ = detail::fork_epoch().load(std::memory_order_relaxed);  // relaxed: process-local, see bump_fork_epoch
    map_.clear();
    cache_.forget_all();
    return true;
  }
  // Detaches: gives back this process's credit lines and the slot words it
  // keeps, as the destructor does, for a process about to end without
  // running destructors (_exit). No lease of this handle may be out.
  void close() noexcept {
    release_lines();
    s_ = nullptr;
    credit_.place(nullptr, 0);
    cache_.cap = 0;
  }
  // True in a child of fork() until claim(), and in a detached object.
  bool needs_claim() const noexcept {
    return s_ == nullptr || epoch_ != detail::fork_epoch().load(std::memory_order_relaxed);  // relaxed: as in claim
  }
  bool attached() const noexcept { return s_ != nullptr; }
  const config_type& config() const noexcept { return cfg_; }
  std::uint64_t identity() const noexcept { return opts_.identity; }

  // The credit line (0 .. Lines - 1) this thread owns through this handle,
  // or Lines: none (credit off, no line yet, or over 16 threads).
  std::size_t this_thread_credit_line() const noexcept {
    return needs_claim() ? Lines : own_line();
  }
  // The identity owning credit line i (0: free), a snapshot.
  std::uint64_t credit_line_owner(std::size_t i) const noexcept { return s_ ? s_->credit.owner(i) : 0; }
  // Credit lines per region (a parameter of the layout).
  static constexpr std::size_t credit_lines = Lines;

  admission_type try_admit(const request& r, nanoseconds now) noexcept {
    admission_type a;
    a.at = now;
    admit_into(a, r, now);
    return a;
  }
  admission_type try_admit(const request& r) noexcept { return try_admit(r, Clock::now()); }

  void on_response(int status, const rate_limit_headers& h, std::string_view body, nanoseconds now) noexcept {
    on_response(classify(status, body), h.retry_hint(), now);
  }
  void on_response(const error_info& e, std::optional<nanoseconds> hint, nanoseconds now) noexcept {
    if (s_ == nullptr) return;
    using namespace account_policy;
    const clamped_hint h = clamp_hint(e.kind, hint, e.hint, cfg_.max_pause);
    const response_decision r = pause_after(e.kind, h.hint, s_->d.waits(now));
    if (r.action == response_action::stop) s_->pause.stop();
    else if (r.action == response_action::pause) s_->pause.pause_for(r.pause, now);
  }
  void resume() noexcept {
    if (s_) s_->pause.resume();
  }
  void clear_pause() noexcept {
    if (s_) s_->pause.clear();
  }
  bool stopped() const noexcept { return s_ == nullptr || s_->pause.stopped(); }
  nanoseconds paused_until() const noexcept { return s_ ? nanoseconds(s_->pause.until()) : nanoseconds(0); }

  // Leases holding a slot, in every process, and the words other handles
  // keep for their next leases (account/shared_slot_cache.hpp: at most
  // Lines x kept_per_line()); this handle's kept words are not counted.
  // (A snapshot: its words still held; in a child of fork() before claim()
  // its parent's words count as another handle's.)
  std::uint64_t in_flight() const noexcept {
    if (s_ == nullptr) return 0;
    const std::uint64_t h = s_->slots.held(), k = kept_slots();
    return h > k ? h - k : 0;
  }
  // The slot words this handle keeps for its next leases and still holds
  // (a scan may have freed some: those are not counted), and the most a
  // credit line keeps (0: none; shared_slot_cache.hpp).
  std::uint64_t kept_slots() const noexcept { return needs_claim() ? 0 : cache_.kept(s_->slots); }
  std::uint64_t kept_per_line() const noexcept { return s_ ? cache_.cap : 0; }
  std::optional<amount> budget_remaining() const noexcept {
    return s_ && s_->d.money ? std::optional<amount>(s_->d.money->remaining()) : std::nullopt;
  }
  using remaining_view = basic_remaining_view<Currency>;
  remaining_view remaining(nanoseconds now) const noexcept {
    remaining_view v;
    if (s_ == nullptr) return v;
    if (s_->slots.limit > 0) {
      // This handle's kept words count as remaining (as credit does below).
      const std::uint64_t l = s_->slots.limit, f = in_flight();
      v.concurrency = l > f ? l - f : 0;
    }
    // Units counted in a window but held as a line's credit (a snapshot).
    s_->d.remaining(v, now, cfg_.max_request_tokens, [&](unsigned k) { return credit_.held_at(k, now); });
    v.paused_for = account_policy::time_left(s_->pause.until(), now);
    v.stopped = stopped();
    return v;
  }
  shared_account_stats<Currency> stats() const noexcept {
    shared_account_stats<Currency> x;
    x.admitted = counts_.sum(admitted_n);
    x.refused = counts_.sum(refused_n);
    if (s_) {
      x.reclaimed_by_deadline = s_->reclaimed_deadline.load(std::memory_order_relaxed);  // relaxed: statistics
      x.reclaimed_dead = s_->reclaimed_dead.load(std::memory_order_relaxed);             // relaxed: statistics
      x.spent_nanos = s_->d.money ? s_->d.money->spent().nanos() : 0;
    }
    return x;
  }

 private:
  friend class shared_lease<Clock, Currency, Slots, Lines>;
  using limiters = detail::account_limiters<Clock, Currency>;

  static config_type limiters_config(const config_type& c) noexcept { return detail::shared_limiters_config(c); }

  shared_open_result open_impl(void* bytes, std::size_t size, const config_type& c, const shared_account_options& o,
                               nanoseconds origin, bool build) noexcept {
    shared_open_result res;
    release_lines();
    s_ = nullptr;
    credit_.place(nullptr, 0);
    if ((res.config = check(c, res.values)) != errc::ok) return res;
    if (o.identity == 0 || o.identity > detail::shared_slots<Slots>::max_identity) {
      res.region = region_errc::bad_token;
      return res;
    }
    detail::watch_forks();
    region_ref<state> r;
    const std::uint64_t fp = fingerprint(c);
    if (build) {
      region_options ro;
      ro.fingerprint = fp;
      ro.token = o.identity;
      ro.alive = o.alive;
      ro.context = o.context;
      r = open_region<state>(bytes, size, ro, [&](void* where) {
        state* s = ::new (where) state;
        (void)s->d.build(limiters_config(c), origin);  // check() built the same: it cannot fail
        s->rules = account_policy::admission_rules<Currency>::of(c);
        s->rules.spaced_tokens = s->d.margin_tokens && s->d.tpm_b;
        s->rules.budget = s->d.money.has_value();
        s->refund_unused = c.refund_unused_tokens ? 1 : 0;
        s->slots.init(c.concurrency.is_finite() ? *c.concurrency.value() : 0, c.lease_timeout, origin);
        s->credit_on = c.per_thread_credit ? 1 : 0;
        s->credit.init();
      });
    } else {
      r = attach_region<state>(bytes, size, fp);
    }
    res.region = r.error;
    res.constructed = r.constructed;
    if (!r) return res;
    s_ = r.object;
    cfg_ = c;
    opts_ = o;
    epoch_ = detail::fork_epoch().load(std::memory_order_relaxed);  // relaxed: as in claim
    const std::int64_t t = c.lease_timeout.count() > 0 ? c.lease_timeout.count() / 16 : 0;
    interval_ = o.alive ? o.scan_interval.count() : t;
    retry_ = o.scan_interval.count() > 0 ? o.scan_interval.count() : std::int64_t{100000000};
    set_starts();
    set_up_credit();
    return res;
  }

  // Where each shard's thread starts probing the slot words: spread over
  // the limit by shard and identity (any value is correct), and below it,
  // so that a take divides nothing (a `%` by the limit on every admission
  // was a 64-bit division, the one the in-process account does not make).
  void set_starts() noexcept {
    const std::uint64_t n = s_ ? s_->slots.limit : 0, k = detail::thread_shards + 1;
    for (std::uint64_t sh = 0; sh < k; ++sh)
      starts_[sh] = static_cast<std::uint32_t>((sh + opts_.identity) % k * n / k);
  }

  // The chunks, the lines and the shelves' cap (account/shared_cold.hpp).
  void set_up_credit() noexcept;

  // The line this thread owns through this handle (Lines: none), never claiming one.
  unsigned own_line() const noexcept {
    const unsigned sh = detail::this_thread_shard();
    if (!credit_.enabled() || sh >= detail::thread_shards) return static_cast<unsigned>(Lines);
    const std::uint32_t i = map_.line[sh];
    return i != detail::shared_credit_map::no_line ? i : static_cast<unsigned>(Lines);
  }
  // The line this thread spends from: its shard's, claimed on first use.
  [[gnu::always_inline]] unsigned line_for(unsigned sh, nanoseconds now) noexcept {
    if (!credit_.enabled() || sh >= detail::thread_shards) return static_cast<unsigned>(Lines);
    const std::uint32_t i = map_.line[sh];
    return i != detail::shared_credit_map::no_line ? i : claim_line(sh, now);
  }
  // The cold paths (account/shared_cold.hpp): a thread's first line, the
  // lines given back, a scan of the slots.
  [[gnu::noinline, gnu::cold]] unsigned claim_line(unsigned sh, nanoseconds now) noexcept;
  void release_lines() noexcept;
  void refuse_now(admission_type& a, dimension d, reason why) noexcept {
    a.refused.add(d);
    counts_.add(refused_n, 1);
    a.decision = decision::refuse(why);
  }

  // Inlined into try_admit (as the account's): out of line, g++ passed the
  // admission through memory, about 20 instructions more an admission.
  [[gnu::always_inline]] void admit_into(admission_type& a, const request& r, nanoseconds now) noexcept {
    if (needs_claim()) return refuse_now(a, dimension::stopped, reason::misconfigured);
    state& s = *s_;
    const std::uint64_t n = account_policy::assess<Currency>(r, s.rules, a.refused, a.worst_case);
    a.tokens = n;
    if (!a.refused.empty()) {
      counts_.add(refused_n, 1);
      a.decision = decision::refuse(reason::exceeds_capacity);
      return;
    }
    if (s.pause.stopped()) return refuse_now(a, dimension::stopped, reason::misconfigured);
    const std::int64_t pause = s.pause.until();
    if (now.count() < pause) return report(a, n, now, account_policy::time_left(pause, now));

    lease_type& l = a.lease;
    l.acc_ = this;  // so that a roll-back releases what was taken
    l.epoch_ = epoch_;
    l.rpm_s_ = l.tpm_s_ = l.tpd_s_ = l.rpm_c_ = l.tpm_c_ = 0;  // a dimension not taken leaves its slot 0
    l.model_ = r.model;
    const unsigned sh = detail::this_thread_shard();
    const unsigned line = line_for(sh, now);
    if (s.slots.limit > 0 && !(line < Lines && cache_.take(sh, s.slots, opts_.identity, now, l.slot_, l.stamp_))) {
      const std::size_t start = starts_[sh < detail::thread_shards ? sh : detail::thread_shards];
      if (!s.slots.take(now, start, opts_.identity, l.slot_, l.stamp_)) {
        reap(now);
        if (!s.slots.take(now, start, opts_.identity, l.slot_, l.stamp_)) return report(a, n, now);
      }
    }
    limiters& d = s.d;
    if (d.rpm_w) {
      if (!credit_.take_window(*d.rpm_w, credit::rpm, 1, now, l.rpm_s_, line)) return report(a, n, now);
    } else if (d.rpm_b && !limiters::take_spaced(*d.rpm_b, l.rpm_s_, l.rpm_c_, 1, now)) {
      return report(a, n, now);
    }
    if (n > 0 && !take_tokens(d.tpm_w, d.tpm_b, credit::tpm, l.tpm_s_, l.tpm_c_, n, now, line)) {
      d.give_request(l.rpm_s_, l.rpm_c_, now);
      return report(a, n, now);
    }
    bool day_ok = true;
    std::uint64_t no_cfg = 0;
    if (n > 0 && d.day_q) day_ok = d.day_q->try_acquire(n, now, l.day_t_).admitted();
    else if (n > 0) day_ok = take_tokens(d.tpd_w, d.tpd_b, credit::tpd, l.tpd_s_, no_cfg, n, now, line);
    if (!day_ok) {
      limiters::give_tokens(d.tpm_w, d.tpm_b, l.tpm_s_, l.tpm_c_, n, n, now);
      d.give_request(l.rpm_s_, l.rpm_c_, now);
      return report(a, n, now);
    }
    if (d.money) {
      l.money_ = d.money->reserve(a.worst_case);
      if (!l.money_) {
        give_day(l, n, now);
        limiters::give_tokens(d.tpm_w, d.tpm_b, l.tpm_s_, l.tpm_c_, n, n, now);
        d.give_request(l.rpm_s_, l.rpm_c_, now);
        return report(a, n, now);
      }
    }
    l.tokens_ = n;
    counts_.add(admitted_n, 1);
    a.decision = decision::admit();
  }

  [[gnu::always_inline]] bool take_tokens(std::optional<typename limiters::window>& w,
                                          std::optional<typename limiters::bucket>& b, unsigned kind,
                                          std::uint64_t& slot, std::uint64_t& cfg, std::uint64_t n, nanoseconds now,
                                          unsigned line) noexcept {
    if (w) return credit_.take_window(*w, kind, n, now, slot, line);
    if (b) return limiters::take_spaced(*b, slot, cfg, n, now);
    return true;
  }
  void give_day(lease_type& l, std::uint64_t n, nanoseconds now) noexcept {
    limiters& d = s_->d;
    if (d.day_q) (void)d.day_q->refund(l.day_t_, n);
    else limiters::give_tokens(d.tpd_w, d.tpd_b, l.tpd_s_, 0, n, n, now);
  }

  // After a refusal (everything taken so far given back but the slot, which
  // goes first): every dimension asked without consuming, as the account.
  [[gnu::noinline]] void report(admission_type& a, std::uint64_t n, nanoseconds now,
                               nanoseconds paused_for = nanoseconds(0)) noexcept {
    const unsigned line = own_line();
    a.lease.release_slot();
    a.lease = lease_type();
    // The refused thread's own credit back first, as its next attempt would,
    // so the windows are asked what they hold for it (credit.hpp).
    if (line < Lines) {
      limiters& d = s_->d;
      typename credit::window_type* ws[credit::kinds] = {d.strict(0), d.strict(1), d.strict(2)};
      (void)credit_.give_back(ws, line);
    }
    account_policy::refusal rf(paused_for);
    state& s = *s_;
    if (s.slots.limit > 0 && s.slots.held() >= s.slots.limit + kept_by(line)) rf.add(dimension::concurrency);
    s.d.report(rf, n, now);
    if (s.d.money && s.d.money->remaining() < a.worst_case) rf.add(dimension::budget);
    a.refused = rf.refused();
    counts_.add(refused_n, 1);
    a.decision = rf.result();
  }

  [[gnu::noinline, gnu::cold]] void reap(nanoseconds now) noexcept;
  // The words this thread's shelf keeps (it would take them before a free one).
  std::uint64_t kept_by(unsigned line) const noexcept {
    const unsigned sh = detail::this_thread_shard();
    return line < Lines && sh < detail::thread_shards
               ? cache_.shelves[sh].count.load(std::memory_order_relaxed)  // relaxed: this thread's own
               : 0;
  }
  // A settled lease's word: kept on this thread's shelf if it owns a line
  // and the shelf has room (true), else the caller frees it.
  bool keep_slot(std::size_t slot, std::uint64_t stamp) noexcept {
    // A shelf keeps words only once its thread owns a line (set_owned).
    return cache_.put(detail::this_thread_shard(), s_->slots, slot, stamp);
  }

  using credit = detail::thread_credit<typename limiters::window>;
  state* s_ = nullptr;
  credit credit_;                  // this process's view of the region's lines (chunks, units)
  detail::shared_credit_map map_;  // which line each of this process's shards owns
  detail::shared_slot_cache cache_;  // the slot words each shard keeps for its next leases
  std::int64_t retry_ = 0;         // a failed line claim's retry interval
  config_type cfg_;
  shared_account_options opts_;
  std::uint64_t epoch_ = 0;
  std::int64_t interval_ = 0;
  std::uint32_t starts_[detail::thread_shards + 1] = {};  // set_starts()
  // This process's statistics, per thread shard (detail/shard_counters.hpp):
  // a plain load and store where a shared counter cost a locked add on
  // every admission.
  enum : std::size_t { admitted_n, refused_n };
  detail::shard_counters<2> counts_;
};

TOLLGATE_END_NAMESPACE

// The lease's members, which need the account complete, and the account's cold paths.
// #include <tollgate/account/shared_lease.hpp>  (inlined below)
// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// account/shared_lease.hpp: what a shared account's lease does when it is
// settled, rejected, cancelled, renewed or dropped (shared_account.hpp
// declares the lease in account/shared_parts.hpp and includes this at its
// end; including this header alone includes the account).
//
// Contract. As the in-process lease (account/lease.hpp): settle charges the
// usage's exact cost and gives back unused tokens only where the account was
// configured to (`refund_unused_tokens`); extra tokens are charged as debt at
// `now`; a rejected request is not billed (its tokens stay counted); the slot
// word is freed exactly once, by this lease, by the handle that kept it for
// its next leases (account/shared_slot_cache.hpp), or by a reaper (whichever
// CAS wins). A lease used in a child of fork() that has not claimed its own
// identity does nothing: the slot and the money are its parent's.
#ifndef TOLLGATE_ACCOUNT_SHARED_LEASE_HPP
#define TOLLGATE_ACCOUNT_SHARED_LEASE_HPP

// #include <tollgate/shared_account.hpp>  (already above)

#include <cstdint>
#include <optional>

TOLLGATE_BEGIN_NAMESPACE

template <class Clock, class Currency, std::size_t Slots, std::size_t Lines>
bool shared_lease<Clock, Currency, Slots, Lines>::live() const noexcept {
  // relaxed: process-local (see detail::bump_fork_epoch).
  return acc_ != nullptr && epoch_ == detail::fork_epoch().load(std::memory_order_relaxed);
}

template <class Clock, class Currency, std::size_t Slots, std::size_t Lines>
void shared_lease<Clock, Currency, Slots, Lines>::release_slot() noexcept {
  // Kept for this thread's next lease where it can be (no CAS), else freed.
  if (acc_ != nullptr && slot_ != no_slot && !acc_->keep_slot(slot_, stamp_)) (void)acc_->s_->slots.give(slot_, stamp_);
  slot_ = no_slot;
}

template <class Clock, class Currency, std::size_t Slots, std::size_t Lines>
void shared_lease<Clock, Currency, Slots, Lines>::drop() noexcept {
  if (live()) release_slot();
  acc_ = nullptr;
  slot_ = no_slot;
}

template <class Clock, class Currency, std::size_t Slots, std::size_t Lines>
bool shared_lease<Clock, Currency, Slots, Lines>::renew(nanoseconds now) noexcept {
  if (!live() || slot_ == no_slot) return false;
  if (acc_->s_->slots.renew(slot_, stamp_, acc_->opts_.identity, now)) return true;
  slot_ = no_slot;  // reaped: the reaper freed the word
  return false;
}

template <class Clock, class Currency, std::size_t Slots, std::size_t Lines>
basic_settle_result<Currency> shared_lease<Clock, Currency, Slots, Lines>::settle(const usage& u, nanoseconds now) noexcept {
  basic_settle_result<Currency> res;
  if (!live()) {
    drop();
    return res;
  }
  auto& d = acc_->s_->d;
  using limiters = detail::account_limiters<Clock, Currency>;
  const std::uint64_t used = detail::sat_add(u.prompt, u.completion);
  const std::uint64_t extra = used > tokens_ ? used - tokens_ : 0;
  if (extra > 0) {
    res.debt_tokens = extra;
    d.charge_debt(extra, now);
    acc_->credit_.bump_windows();  // this process's lines refill through the windows (credit.hpp)
  } else if (acc_->s_->refund_unused && used < tokens_) {
    const std::uint64_t back = tokens_ - used;
    res.refunded_tokens = back;
    limiters::give_tokens(d.tpm_w, d.tpm_b, tpm_s_, tpm_c_, tokens_, back, now);
    if (d.day_q) (void)d.day_q->refund(day_t_, back);
    else limiters::give_tokens(d.tpd_w, d.tpd_b, tpd_s_, 0, tokens_, back, now);
  }
  detail::settle_money(d.money, money_, model_, u, res);
  drop();
  return res;
}

template <class Clock, class Currency, std::size_t Slots, std::size_t Lines>
void shared_lease<Clock, Currency, Slots, Lines>::settle_rejected(nanoseconds now) noexcept {
  (void)now;
  if (live() && acc_->s_->d.money && money_) acc_->s_->d.money->release(money_);
  drop();
}

template <class Clock, class Currency, std::size_t Slots, std::size_t Lines>
basic_settle_result<Currency> shared_lease<Clock, Currency, Slots, Lines>::settle_cancelled(const std::optional<usage>& known,
                                                                                     nanoseconds now) noexcept {
  if (known) return settle(*known, now);
  basic_settle_result<Currency> res;
  if (live() && acc_->s_->d.money && money_) {
    res.cost = money_.amount;
    (void)acc_->s_->d.money->settle(money_, money_.amount);
  }
  drop();
  return res;
}

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_ACCOUNT_SHARED_LEASE_HPP
// #include <tollgate/account/shared_cold.hpp>  (inlined below)
// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// account/shared_cold.hpp: the shared account's cold paths (shared_account.hpp
// declares them and includes this at its end; including this header alone
// includes the account): the credit set-up at open, a thread's first
// credit line, the lines (and kept slot words) a handle gives back, and a
// scan of the slot words when the account runs out of them. Out of the
// admission path, out of line: none is called by an admission that finds a
// line and a free (or kept) slot word.
#ifndef TOLLGATE_ACCOUNT_SHARED_COLD_HPP
#define TOLLGATE_ACCOUNT_SHARED_COLD_HPP

// #include <tollgate/shared_account.hpp>  (already above)

#include <cstddef>
#include <cstdint>

TOLLGATE_BEGIN_NAMESPACE

template <class Clock, class Currency, std::size_t Slots, std::size_t Lines>
unsigned shared_account<Clock, Currency, Slots, Lines>::claim_line(unsigned sh, nanoseconds now) noexcept {
  const std::int64_t at = map_.retry_at[sh];
  // Retried at most once per retry_ of supplied time (and whenever time goes back).
  std::int64_t ahead = 0;
  if (at != INT64_MIN && now.count() < at && !__builtin_sub_overflow(at, now.count(), &ahead) && ahead <= retry_)
    return static_cast<unsigned>(Lines);
  auto& lines = s_->credit;
  std::uint64_t word = 0;
  std::size_t i = lines.claim(opts_.identity, detail::probe_start(), word);
  if (i == lines.none && opts_.alive) {
    const std::uint64_t me = opts_.identity;
    (void)lines.reap(credit_, [this, me](std::uint64_t who) { return who == me || opts_.alive(who, opts_.context); });
    i = lines.claim(opts_.identity, detail::probe_start(), word);
  }
  if (i == lines.none) {
    map_.retry_at[sh] = detail::sat_offset(now.count(), static_cast<std::uint64_t>(retry_));
    return static_cast<unsigned>(Lines);
  }
  credit_.forget(static_cast<unsigned>(i));  // a dead owner's half-written fields, or nothing
  map_.line[sh] = static_cast<std::uint32_t>(i);
  map_.word[sh] = word;
  cache_.set_owned(sh);  // its shelf may now keep slot words (shared_slot_cache.hpp)
  return static_cast<unsigned>(i);
}

// The chunks and the lines: credit only where some window grants a chunk
// (credit.hpp's chunk_of for this many lines: smaller limits run exactly as
// without credit) or the concurrency limit a kept slot word.
template <class Clock, class Currency, std::size_t Slots, std::size_t Lines>
void shared_account<Clock, Currency, Slots, Lines>::set_up_credit() noexcept {
  map_.clear();
  cache_.forget_all();  // (none kept: release_lines ran first)
  cache_.cap = 0;
  if (!s_->credit_on) return;
  limiters& d = s_->d;
  typename credit::window_type* const ws[credit::kinds] = {d.strict(0), d.strict(1), d.strict(2)};
  credit_.bind(ws);
  bool any = false;
  for (unsigned k = 0; k < credit::kinds; ++k)
    if (ws[k] && ws[k]->unit() > 0) {
      credit_.set_unit(k, ws[k]->unit());
      any = any || credit::chunk_of(*ws[k], static_cast<unsigned>(Lines)) > 0;
    }
  const typename credit::window_type* cws[credit::kinds] = {ws[0], ws[1], ws[2]};
  credit_.update(true, cws, 0);  // concurrency credit is the kept slot words'
  cache_.cap = detail::shared_slot_cache::cap_for(s_->slots.limit, Lines);
  // Lines for the windows' credit or for kept words: either needs an owner
  // per line, which bounds what all users hold (shared_slot_cache.hpp).
  if (any || cache_.cap > 0) credit_.place(s_->credit.lines, static_cast<unsigned>(Lines));
}

// Gives each line this handle's process owns its credit back and frees it.
template <class Clock, class Currency, std::size_t Slots, std::size_t Lines>
void shared_account<Clock, Currency, Slots, Lines>::release_lines() noexcept {
  if (s_ == nullptr || needs_claim() || !credit_.enabled()) {
    map_.clear();
    cache_.forget_all();  // none kept (no line), or the parent's
    return;
  }
  cache_.give_all(s_->slots);  // before the lines: the words are kept only under a line
  limiters& d = s_->d;
  typename credit::window_type* ws[credit::kinds] = {d.strict(0), d.strict(1), d.strict(2)};
  for (unsigned sh = 0; sh < detail::thread_shards; ++sh) {
    const std::uint32_t i = map_.line[sh];
    if (i == detail::shared_credit_map::no_line) continue;
    (void)credit_.give_back(ws, i);
    (void)s_->credit.release(i, map_.word[sh]);
  }
  map_.clear();
}

template <class Clock, class Currency, std::size_t Slots, std::size_t Lines>
void shared_account<Clock, Currency, Slots, Lines>::reap(nanoseconds now) noexcept {
  if (interval_ <= 0 && !(opts_.alive || s_->slots.timeout > 0)) return;
  std::uint64_t by_deadline = 0, by_death = 0;
  const std::uint64_t me = opts_.identity;
  auto alive = [this, me](std::uint64_t who) {
    return who == me || opts_.alive == nullptr || opts_.alive(who, opts_.context);
  };
  s_->slots.reap(now, interval_, alive, by_deadline, by_death);
  // relaxed: statistics.
  if (by_deadline) s_->reclaimed_deadline.fetch_add(by_deadline, std::memory_order_relaxed);
  if (by_death) s_->reclaimed_dead.fetch_add(by_death, std::memory_order_relaxed);
}

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_ACCOUNT_SHARED_COLD_HPP

#endif  // TOLLGATE_SHARED_ACCOUNT_HPP

#endif  // TOLLGATE_TOLLGATE_HPP
