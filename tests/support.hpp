// Test helpers: a seeded generator, oracles written the slow and obvious way,
// and knobs read from the environment.
#ifndef TOLLGATE_TESTS_SUPPORT_HPP
#define TOLLGATE_TESTS_SUPPORT_HPP

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <deque>
#include <limits>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace tgtest {

using ns = std::chrono::nanoseconds;
// Nanosecond counts for the times tests write as integers.
inline constexpr std::int64_t ms = 1000000, sec = 1000 * ms, day_ns = 86400 * sec;
__extension__ typedef unsigned __int128 u128;
__extension__ typedef __int128 i128;

// splitmix64: small, fast, and identical on every platform.
class rng {
 public:
  explicit rng(std::uint64_t seed) : s_(seed) {}
  std::uint64_t next() {
    std::uint64_t z = (s_ += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }
  // Uniform in [lo, hi].
  std::uint64_t between(std::uint64_t lo, std::uint64_t hi) { return lo + next() % (hi - lo + 1); }
  bool chance(unsigned percent) { return next() % 100 < percent; }

 private:
  std::uint64_t s_;
};

// Seeds for property tests: TOLLGATE_SEED=<n> pins one, otherwise a fixed
// list so CI is reproducible.
inline std::vector<std::uint64_t> seeds(std::size_t count) {
  std::vector<std::uint64_t> out;
  if (const char* s = std::getenv("TOLLGATE_SEED")) {
    out.push_back(std::strtoull(s, nullptr, 10));
    return out;
  }
  for (std::size_t i = 0; i < count; ++i) out.push_back(0xC0FFEEULL + 7919ULL * i);
  return out;
}

// A time drawn from the values a hostile or careless caller sends: the ends
// of the range and their neighbours, zero, values around `origin`, the
// int64 boundaries of common scalings, and random ones. For sweeps that check
// every public function is defined for every `now`.
inline std::int64_t extreme_time(rng& g, std::int64_t origin) {
  constexpr std::int64_t lo = std::numeric_limits<std::int64_t>::min(), hi = std::numeric_limits<std::int64_t>::max();
  auto near = [](std::int64_t v, std::int64_t d) {  // v + d without overflow
    if (d > 0) return v > hi - d ? hi : v + d;
    return v < lo - d ? lo : v + d;
  };
  switch (g.between(0, 9)) {
    case 0: return near(lo, static_cast<std::int64_t>(g.between(0, 3)));
    case 1: return near(hi, -static_cast<std::int64_t>(g.between(0, 3)));
    case 2: return static_cast<std::int64_t>(g.between(0, 6)) - 3;
    case 3: return near(origin, static_cast<std::int64_t>(g.between(0, 6)) - 3);
    case 4: return near(origin, static_cast<std::int64_t>(g.next() >> 2));
    case 5: return near(origin, -static_cast<std::int64_t>(g.next() >> 2));
    case 6: return g.chance(50) ? hi / 14 : hi / 2;
    case 7: return near(hi, -static_cast<std::int64_t>(g.next() >> 30));
    case 8: return near(lo, static_cast<std::int64_t>(g.next() >> 30));
    default: return static_cast<std::int64_t>(g.next());
  }
}

// The one project seed: TOLLGATE_SEED when set, else the first of seeds().
inline bool seed_pinned() { return std::getenv("TOLLGATE_SEED") != nullptr; }
inline std::uint64_t project_seed() { return seeds(1).front(); }

// A seed for one random stream of a test (a thread, a trial, a case). With
// TOLLGATE_SEED set it is derived from that seed, so the one seed reaches
// every random test; without it, it is `stream` itself, so a default run
// repeats the same schedules (and the tables the tests print) every time.
inline std::uint64_t seed_for(std::uint64_t stream) {
  if (!seed_pinned()) return stream;
  rng g(project_seed() ^ (stream * 0xD1B54A32D192ED03ULL));
  return g.next();
}

// What to print on failure (with INFO, on the test's own thread: Catch2's
// messages belong to the thread that makes them).
inline std::string seed_note() {
  return seed_pinned() ? "TOLLGATE_SEED=" + std::to_string(project_seed()) : std::string("TOLLGATE_SEED unset");
}

// The size of a long random or exhaustive test, by build: in full, or a
// tenth (at least 1) where the build defines TOLLGATE_TEST_SANITIZED (the
// ASan+UBSan and TSan variants). Those builds look for memory errors,
// undefined behaviour and races, which the first tenth of the schedules
// exercises as well as the rest; the other builds of the suite run every
// schedule, so each bound is still checked in full on every run.
inline std::uint64_t sized(std::uint64_t full) {
#ifdef TOLLGATE_TEST_SANITIZED
  return full / 10 == 0 ? 1 : full / 10;
#else
  return full;
#endif
}
inline bool sanitized_build() {
#ifdef TOLLGATE_TEST_SANITIZED
  return true;
#else
  return false;
#endif
}

// Multiplier for threaded stress sizes: TOLLGATE_STRESS=<n>, default 1.
inline std::uint64_t stress_factor() {
  if (const char* s = std::getenv("TOLLGATE_STRESS")) {
    const std::uint64_t v = std::strtoull(s, nullptr, 10);
    return v == 0 ? 1 : v;
  }
  return 1;
}

// A continuous token bucket in exact rational arithmetic: the balance is kept
// multiplied by `period` so refills (elapsed * count / period) never round. The
// balance may go negative (debt). Times must not decrease.
struct rational_bucket {
  std::uint64_t count, period, burst;
  i128 scaled;  // tokens * period
  std::int64_t last;
  rational_bucket(std::uint64_t c, std::uint64_t p, std::uint64_t b, std::int64_t t0, bool full = true)
      : count(c), period(p), burst(b), scaled(full ? static_cast<i128>(b) * p : 0), last(t0) {}
  i128 cap() const { return static_cast<i128>(burst) * period; }
  void advance(std::int64_t now) {
    if (now <= last) return;
    const i128 add = static_cast<i128>(now - last) * count;
    scaled = cap() - scaled <= add ? cap() : scaled + add;
    last = now;
  }
  bool try_take(std::uint64_t n, std::int64_t now) {
    advance(now);
    if (n == 0) return true;  // defined as always admitted, even in debt
    const i128 need = static_cast<i128>(n) * period;
    if (scaled < need) return false;
    scaled -= need;
    return true;
  }
  void charge(std::uint64_t n, std::int64_t now) {
    advance(now);
    scaled -= static_cast<i128>(n) * period;
  }
  std::uint64_t refund(std::uint64_t n, std::int64_t now) {
    advance(now);
    const i128 before = scaled;
    const i128 add = static_cast<i128>(n) * period;
    scaled = cap() - scaled <= add ? cap() : scaled + add;
    return static_cast<std::uint64_t>((scaled - before) / period);
  }
  std::uint64_t available(std::int64_t now) {
    advance(now);
    return scaled <= 0 ? 0 : static_cast<std::uint64_t>(scaled / period);
  }
  // Nanoseconds until n are available (ceil), assuming nothing else happens.
  std::uint64_t wait_for(std::uint64_t n, std::int64_t now) {
    advance(now);
    const i128 need = static_cast<i128>(n) * period;
    if (n == 0 || scaled >= need) return 0;
    const i128 gap = need - scaled;
    return static_cast<std::uint64_t>((gap + count - 1) / count);
  }
};

// The exact sliding log: admitted (time, n) pairs.
struct sliding_log {
  std::uint64_t limit;
  std::int64_t window;
  std::deque<std::pair<std::int64_t, std::uint64_t>> log;
  std::uint64_t sum = 0;
  sliding_log(std::uint64_t l, std::int64_t w) : limit(l), window(w) {}
  void expire(std::int64_t now) {
    while (!log.empty() && log.front().first <= now - window) {
      sum -= log.front().second;
      log.pop_front();
    }
  }
  // Units in (now - window, now], times non-decreasing.
  std::uint64_t in_window(std::int64_t now) {
    expire(now);
    return sum;
  }
  bool try_take(std::uint64_t n, std::int64_t now) {
    if (in_window(now) + n > limit) return false;
    log.emplace_back(now, n);
    sum += n;
    return true;
  }
};

// Checks "at most L in every half-open window (t - W, t]" over a list of
// admissions sorted by time: returns the largest window sum seen.
inline std::uint64_t max_window_sum(std::vector<std::pair<std::int64_t, std::uint64_t>> events, std::int64_t window) {
  std::sort(events.begin(), events.end());
  std::uint64_t best = 0, sum = 0;
  std::size_t lo = 0;
  for (std::size_t hi = 0; hi < events.size(); ++hi) {
    sum += events[hi].second;
    while (events[lo].first <= events[hi].first - window) sum -= events[lo++].second;
    if (sum > best) best = sum;
  }
  return best;
}

// The largest excess, in whole units rounded up, of any closed interval of
// length t over B + t * count / period (0 when the bound holds everywhere).
inline std::uint64_t bucket_bound_excess(std::vector<std::pair<std::int64_t, std::uint64_t>> events,
                                         std::uint64_t count, std::uint64_t period, std::uint64_t burst) {
  std::sort(events.begin(), events.end());
  i128 prefix = 0, min_k = 0, worst = 0;
  bool have = false;
  std::size_t i = 0;
  while (i < events.size()) {
    std::size_t j = i;
    const std::int64_t t = events[i].first;
    const i128 k_here = prefix * static_cast<i128>(period) - static_cast<i128>(t) * count;
    if (!have || k_here < min_k) min_k = k_here;
    have = true;
    while (j < events.size() && events[j].first == t) prefix += events[j++].second;
    const i128 g = prefix * static_cast<i128>(period) - static_cast<i128>(t) * count;
    const i128 over = g - min_k - static_cast<i128>(burst) * period;
    if (over > worst) worst = over;
    i = j;
  }
  return static_cast<std::uint64_t>((worst + period - 1) / period);
}

}  // namespace tgtest

#endif
