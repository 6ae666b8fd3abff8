// Exploration drivers of the interleaving checker: exhaustive (every
// schedule within the bounds) and random (PCT-style), each checking every
// execution against the scenario's oracle and printing what it explored.
#ifndef TOLLGATE_TESTS_CHECKER_EXPLORE_HPP
#define TOLLGATE_TESTS_CHECKER_EXPLORE_HPP

#include "scheduler.hpp"

#include <chrono>
#include <cstdlib>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace tgcheck {

// One execution's state: the structure under test, the bodies of its
// logical threads and the oracle. Built fresh for every execution.
struct execution {
  virtual ~execution() = default;
  std::vector<std::function<void()>> bodies;
  // "" when the execution keeps every bound, else what broke.
  virtual std::string check(const scheduler::outcome& o) = 0;
};
using factory = std::function<std::unique_ptr<execution>(scheduler&)>;

struct result {
  std::string name;
  std::uint64_t executions = 0;
  std::uint64_t max_steps = 0;
  bool complete = false;  // exhaustive and every schedule tried
  std::string failure;    // empty: every execution held
  std::string schedule;   // the failing execution, step by step
};

// TOLLGATE_CHECKER_LARGE=1: larger bounds and more random schedules.
inline bool large() {
  const char* s = std::getenv("TOLLGATE_CHECKER_LARGE");
  return s != nullptr && *s != '\0' && *s != '0';
}

namespace detail {
inline std::string run_one(scheduler& s, const factory& make, chooser& c, const bounds& b, std::uint64_t& steps) {
  std::unique_ptr<execution> e = make(s);
  std::string verdict;
  const scheduler::outcome o = s.run(e->bodies, c, b, [&](const scheduler::outcome& out) {
    if (!out.progress)
      verdict = "no progress: a thread was still running after " + std::to_string(b.steps) + " steps";
    else
      verdict = e->check(out);
  });
  steps = o.steps;
  return verdict;
}

inline void replay(scheduler& s, const factory& make, const bounds& b, const std::vector<long long>& log,
                   const std::string& expected, result& r) {
  recording_chooser rc = recording_chooser::replay(log);
  s.set_tracing(true);
  std::uint64_t steps = 0;
  const std::string again = run_one(s, make, rc, b, steps);
  s.set_tracing(false);
  r.schedule = s.trace();
  if (again != expected) r.schedule += "  (replay ended differently: " + again + ")\n";
}

inline void print(const result& r, const char* mode, unsigned threads, const bounds& b, double secs) {
  std::printf("checker: %-44s %9llu executions (%s%s), %u threads, <= %u preemptions, <= %u crashes, <= %llu steps"
              " (bound %llu), %.1f s%s\n",
              r.name.c_str(), static_cast<unsigned long long>(r.executions), mode,
              r.complete ? ", complete" : "", threads, b.preemptions, b.crashes,
              static_cast<unsigned long long>(r.max_steps), static_cast<unsigned long long>(b.steps), secs,
              r.failure.empty() ? "" : "  FAILED");
  if (!r.failure.empty()) std::printf("  %s\n  schedule:\n%s", r.failure.c_str(), r.schedule.c_str());
  std::fflush(stdout);
}
}  // namespace detail

// Every schedule within `b` (up to `cap` executions).
inline result explore_exhaustive(scheduler& s, const std::string& name, unsigned threads, const bounds& b,
                                 const factory& make, std::uint64_t cap = 2000000) {
  const auto t0 = std::chrono::steady_clock::now();
  result r;
  r.name = name;
  dfs_chooser dfs;
  for (;;) {
    recording_chooser rc(&dfs);
    std::uint64_t steps = 0;
    const std::string v = detail::run_one(s, make, rc, b, steps);
    ++r.executions;
    if (steps > r.max_steps) r.max_steps = steps;
    if (dfs.diverged() && r.failure.empty()) r.failure = "the scenario is not deterministic under replay";
    if (!v.empty()) r.failure = v;
    if (!r.failure.empty()) {
      detail::replay(s, make, b, rc.log(), r.failure, r);
      break;
    }
    if (!dfs.advance()) {
      r.complete = true;
      break;
    }
    if (r.executions >= cap) break;
  }
  detail::print(r, "exhaustive", threads, b,
                std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  return r;
}

// `runs` random priority schedules of depth `depth` (at most depth - 1
// priority drops, hence preemptions), seeded from the project seed.
inline result explore_random(scheduler& s, const std::string& name, unsigned threads, const bounds& b,
                             const factory& make, std::uint64_t runs, std::uint64_t seed, unsigned depth,
                             std::uint64_t expected_steps, unsigned crash_percent) {
  const auto t0 = std::chrono::steady_clock::now();
  result r;
  r.name = name;
  pct_chooser pct(seed, threads, depth, expected_steps, crash_percent);
  for (std::uint64_t i = 0; i < runs; ++i) {
    recording_chooser rc(&pct);
    std::uint64_t steps = 0;
    const std::string v = detail::run_one(s, make, rc, b, steps);
    ++r.executions;
    if (steps > r.max_steps) r.max_steps = steps;
    if (!v.empty()) {
      r.failure = v + " (seed " + std::to_string(seed) + ", run " + std::to_string(i) + ")";
      detail::replay(s, make, b, rc.log(), v, r);
      break;
    }
  }
  detail::print(r, "random PCT", threads, b,
                std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  return r;
}

// A supplied clock shared by the logical threads of one execution: before
// each operation a thread moves it by one of `jumps` (a scheduler choice)
// and reads it.
struct supplied_clock {
  std::int64_t t = 0;
  std::vector<std::int64_t> jumps;
  std::int64_t next(scheduler& s) {
    const std::int64_t d = jumps[s.choose(jumps.size())];
    t += d;
    s.note("now = " + std::to_string(t) + " (jump " + std::to_string(d) + ")");
    return t;
  }
};

}  // namespace tgcheck

#endif
