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

#include <tollgate/config.hpp>
#include <tollgate/detail/siphash.hpp>

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
