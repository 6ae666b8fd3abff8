// Test helpers for per-thread credit's false-refusal bound: schedules that
// leave credit idle at sub-window boundaries and then burst, and an exact
// window (the strict window's slot grid, counting only admitted requests)
// to judge each decision against.
#ifndef TOLLGATE_TESTS_CREDIT_ORACLE_HPP
#define TOLLGATE_TESTS_CREDIT_ORACLE_HPP

#include "support.hpp"

#include <algorithm>
#include <cstdint>
#include <map>
#include <vector>

namespace tgtest {

struct credit_step {
  unsigned user;
  std::int64_t at;
  bool burst;  // admit until refused; else one request
};

// `slots` slots of `width` ns from 0: in each, a random part of the users
// (all of them in about a third of the slots) admits one request early in
// the slot, leaving the rest of a chunk idle at the slot's end; with some
// chance one random user then bursts later in the slot. Times strictly
// increase, so no request is stale.
inline std::vector<credit_step> credit_schedule(rng& g, unsigned users, std::int64_t width, unsigned slots) {
  std::vector<credit_step> out;
  const std::uint64_t step = static_cast<std::uint64_t>(width) / (4 * (users + 2));
  for (unsigned j = 0; j < slots; ++j) {
    std::int64_t t = static_cast<std::int64_t>(j) * width + 1;
    const unsigned share = g.chance(35) ? 100 : static_cast<unsigned>(g.between(10, 90));
    for (unsigned u = 0; u < users; ++u) {
      t += static_cast<std::int64_t>(g.between(1, step));
      if (g.chance(share)) out.push_back({u, t, false});
    }
    if (g.chance(j + 1 < slots ? 20 : 100)) {  // the last slot always bursts
      t = static_cast<std::int64_t>(j) * width + width / 2 + static_cast<std::int64_t>(g.between(0, step));
      out.push_back({static_cast<unsigned>(g.between(0, users - 1)), t, true});
    }
  }
  return out;
}

// The exact window on the strict window's grid (origin, width, K + 1 slots):
// a request at slot s fits while the requests admitted in s-K .. s, its own
// too, stay within `limit`.
struct exact_slots {
  std::int64_t origin;
  std::int64_t width;
  std::uint64_t K;
  std::uint64_t limit;
  std::map<std::uint64_t, std::uint64_t> spent;
  std::uint64_t most = 0;        // the most admitted in any K + 1 slots
  std::uint64_t worst_room = 0;  // the most room the exact window had at a refusal
  std::uint64_t refusals = 0;

  std::uint64_t slot(std::int64_t t) const { return static_cast<std::uint64_t>((t - origin) / width); }
  std::uint64_t used(std::uint64_t s) const {
    std::uint64_t sum = 0;
    for (auto it = spent.lower_bound(s >= K ? s - K : 0); it != spent.end() && it->first <= s; ++it) sum += it->second;
    return sum;
  }
  void admitted(std::int64_t t) {
    const std::uint64_t s = slot(t);
    ++spent[s];
    most = std::max(most, used(s));
  }
  void refused(std::int64_t t) {
    ++refusals;
    const std::uint64_t u = used(slot(t));
    worst_room = std::max(worst_room, u >= limit ? 0 : limit - u);
  }
};

}  // namespace tgtest

#endif
