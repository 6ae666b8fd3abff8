// Attacks on keyed_buckets' unpinned admissions (seal protocol).
#include "../catch_compat.hpp"
#include "explore.hpp"

#include <tollgate/keyed_buckets.hpp>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <map>
#include <sstream>

using namespace tollgate;
using tgcheck::bounds;
using tgcheck::execution;
using tgcheck::scheduler;
using tgtest::ns;

namespace {

constexpr std::int64_t sec = 1000000000;

struct self_hash {
  explicit self_hash(hash_seed) {}
  std::uint64_t operator()(std::uint64_t id) const { return id; }
  std::uint64_t operator()(std::string_view s) const { return s.size(); }
};

struct kop {
  std::uint64_t key;
  std::uint64_t n;  // 0: erase
  std::int64_t at;
};
using kscript = std::vector<kop>;

struct attack_exec : execution {
  keyed_buckets<manual_clock, self_hash> t;
  std::map<std::uint64_t, std::vector<std::pair<std::int64_t, std::uint64_t>>> log;
  std::map<std::uint64_t, std::uint64_t> erased;
  attack_exec(scheduler& s, std::size_t cap, const kscript& setup, const std::vector<kscript>& scripts)
      : t(cap, {{rate(1, ns(sec)), 2}}, hash_seed{}, ns(0), cap) {
    for (const kop& op : setup)
      if (t.try_acquire(op.key, 0, op.n, ns(op.at)).admitted()) log[op.key].emplace_back(op.at, op.n);
    for (std::size_t th = 0; th < scripts.size(); ++th) {
      const kscript sc = scripts[th];
      bodies.push_back([this, &s, sc, th] {
        for (const kop& op : sc) {
          if (op.n == 0) {
            const bool had = t.erase(op.key);
            s.note("T" + std::to_string(th) + " erase(key " + std::to_string(op.key) + "): " + (had ? "had" : "none"));
            if (had) ++erased[op.key];
            continue;
          }
          const keyed_result r = t.try_acquire(op.key, 0, op.n, ns(op.at));
          s.note("T" + std::to_string(th) + " try_acquire(key " + std::to_string(op.key) + ", " +
                 std::to_string(op.n) + ", " + std::to_string(op.at / sec) + " s): " + to_string(r.status()));
          if (r.admitted()) log[op.key].emplace_back(op.at, op.n);
        }
      });
    }
  }
  std::string check(const scheduler::outcome&) override {
    for (const auto& kv : log) {
      const std::uint64_t x = tgtest::bucket_bound_excess(kv.second, 1, sec, 2);
      const auto er = erased.find(kv.first);
      if (x > (er == erased.end() ? 0 : 2 * er->second))
        return "key " + std::to_string(kv.first) + " admitted " + std::to_string(x) + " units over B + t / T";
    }
    return "";
  }
};

tgcheck::factory attack_factory(std::size_t cap, kscript setup, std::vector<kscript> scripts) {
  return [=](scheduler& s) -> std::unique_ptr<execution> {
    return std::make_unique<attack_exec>(s, cap, setup, scripts);
  };
}

}  // namespace

// Two evictors that read the same control word (version v) make the same
// seal S(v). E1 (T0, key 2 at 2 s) seals key 1's full bucket (TAT 2 s);
// E2 (T1, key 2 at 3 s) scans (reads version v) and pauses; T2 admits 1 on
// key 1 at 2 s (unseal: version v+1, TAT = latest 2 s, admit: TAT 3 s), and
// erases key 6 (so the evictors' retries take entry 1, not key 1's); E2
// seals TAT 3 s (full at 3 s) with S(v) again, its claim fails; E1's claim
// fails and its undo (CAS S(v) -> 2 s) lands on E2's seal: key 1's TAT goes
// back to 2 s and T0 then takes key 1's burst again at 2 s.
TEST_CASE("checker attack: keyed_buckets, two evictors' equal seals, a stale undo", "[checker][attack]") {
  scheduler s(3);
  bounds b;
  b.preemptions = 3;
  const auto r = tgcheck::explore_exhaustive(
      s, "attack: equal seals, stale undo, cap 2", 3, b,
      attack_factory(2, {{1, 2, 0}, {6, 2, 2 * sec}},
                     {{{2, 1, 2 * sec}, {1, 2, 2 * sec}}, {{2, 1, 3 * sec}}, {{1, 1, 2 * sec}, {6, 0, 2 * sec}}}),
      // By default it stops early (equal seals showed only by 330,129: the fixed
      // schedules below catch them in the default run); all with LARGE.
      tgcheck::large() ? 3000000 : 100000);
  CHECK(r.failure == "");
}

namespace {

// A fixed schedule: thread 0 runs e0 steps, thread 1 a0, then thread 0 e,
// thread 1 a, for ever (a switch away from a thread that could go on is a
// preemption: the bound is lifted).
class cycle_chooser : public tgcheck::chooser {
 public:
  cycle_chooser(unsigned e0, unsigned a0, unsigned e, unsigned a) : e0_(e0), a0_(a0), e_(e), a_(a) {}
  void begin() override { n_ = 0; }
  int pick_thread(int current, const std::vector<int>& others, bool, bool, std::uint64_t) override {
    const int want = who(n_++);
    if (want == current || current < 0) {
      if (current >= 0) return current;
      return others.empty() ? -1 : others.front();
    }
    for (int o : others)
      if (o == want) return o;
    return current;
  }
  std::size_t pick(std::size_t) override { return 0; }

 private:
  int who(std::uint64_t k) const {
    if (k < e0_) return 0;
    k -= e0_;
    if (k < a0_) return 1;
    k -= a0_;
    return (k % (e_ + a_)) < e_ ? 0 : 1;
  }
  unsigned e0_, a0_, e_, a_;
  std::uint64_t n_ = 0;
};

// Runs the cycles e0 in 6..14 and (a0, e, a) in the given ranges, two
// threads, the preemption bound lifted; true (and the schedule printed)
// when one of them leaves a thread running after 3000 steps.
bool cycle_livelock(const tgcheck::factory& make, std::array<unsigned, 6> r) {
  scheduler s(2);
  bounds b;
  b.preemptions = 1000000;
  b.steps = 3000;
  for (unsigned e0 = 6; e0 <= 14; ++e0)
    for (unsigned a0 = r[0]; a0 <= r[1]; ++a0)
      for (unsigned e = r[2]; e <= r[3]; ++e)
        for (unsigned a = r[4]; a <= r[5]; ++a) {
          cycle_chooser c(e0, a0, e, a);
          tgcheck::recording_chooser rc(&c);
          std::uint64_t steps = 0;
          const std::string v = tgcheck::detail::run_one(s, make, rc, b, steps);
          if (v.rfind("no progress", 0) == 0) {
            std::printf("livelock: e0=%u a0=%u e=%u a=%u: %s\n", e0, a0, e, a, v.c_str());
            tgcheck::result res;
            tgcheck::detail::replay(s, make, b, rc.log(), v, res);
            std::printf("%s\n", res.schedule.substr(0, 4000).c_str());
            return true;
          }
        }
  return false;
}

}  // namespace

// Lock-freedom: T0 claims key 2 at 2 s, evicting key 1 (full at 2 s); T1
// admits on key 1 at 2 s. In the first version each defeated the other: T0's
// seal made T1's TAT CAS fail, T1's version step made T0's claim CAS fail,
// T0's undo and re-seal came before T1's CAS of the seal (now T1 pins). Searches small quanta for a
// schedule in which neither call ever returns.
TEST_CASE("checker attack: keyed_buckets, admission and evictor defeat each other for ever", "[checker][attack2]") {
  CHECK(!cycle_livelock(attack_factory(1, {{1, 2, 0}}, {{{2, 1, 2 * sec}}, {{1, 1, 2 * sec}}}), {4, 12, 6, 14, 2, 8}));
}

// Lock-freedom between claims of different new keys: T0 claims key 2 and
// T1 claims key 3 at 2 s, both evicting key 1 (full). In the first version
// seize() defeated the other's pending seal (a version step), so each could
// fail the other's claim for ever (now a pending seal is passed).
TEST_CASE("checker attack: keyed_buckets, two evictors of different keys defeat each other for ever",
          "[checker][attack3]") {
  CHECK(!cycle_livelock(attack_factory(1, {{1, 2, 0}}, {{{2, 1, 2 * sec}}, {{3, 1, 2 * sec}}}), {4, 14, 4, 14, 4, 14}));
}

// ---- the second independent check: fixed schedules ----
// (Segments of atomic steps, re-aimed by a third check at the code with
// tickets, where each fails if the tickets are removed; a change of the
// steps an operation takes moves them off the race, so the exhaustive
// scenario above is what guards it in general.)
namespace {

// A scripted schedule: segments (thread, steps); thread t takes that many
// atomic steps, then the next segment's thread runs. steps 0 = until it finishes.
class script_chooser : public tgcheck::chooser {
 public:
  explicit script_chooser(std::vector<std::pair<int, unsigned>> segs) : segs_(std::move(segs)) {}
  void begin() override { i_ = 0, used_ = 0, started_.assign(8, false); }
  int pick_thread(int current, const std::vector<int>& others, bool, bool, std::uint64_t) override {
    if (current >= 0) started_[current] = true;
    for (;;) {
      if (i_ >= segs_.size()) {  // after the script: lowest id that can run
        if (current >= 0) return current;
        return others.empty() ? -1 : others.front();
      }
      const int want = segs_[i_].first;
      const bool runnable = want == current || std::find(others.begin(), others.end(), want) != others.end();
      const bool spent = segs_[i_].second != 0 && used_ >= segs_[i_].second;
      if (!runnable || spent) {
        ++i_, used_ = 0;
        continue;
      }
      // A thread switched back to resumes the step it was stopped before;
      // one not started yet asks again at its first step.
      if (want == current || started_[want]) ++used_;
      return want;
    }
  }
  std::size_t pick(std::size_t) override { return 0; }

 private:
  std::vector<std::pair<int, unsigned>> segs_;
  std::size_t i_ = 0, used_ = 0;
  std::vector<bool> started_;
};

std::string run_script(unsigned threads, const tgcheck::factory& make, std::vector<std::pair<int, unsigned>> segs,
                       bool print_trace) {
  scheduler s(threads);
  bounds b;
  b.preemptions = 1000000;
  b.steps = 5000;
  script_chooser c(std::move(segs));
  tgcheck::recording_chooser rc(&c);
  std::uint64_t steps = 0;
  const std::string v = tgcheck::detail::run_one(s, make, rc, b, steps);
  if (print_trace || !v.empty()) {
    tgcheck::result r;
    tgcheck::detail::replay(s, make, b, rc.log(), v, r);
    std::printf("verdict: %s\n%s\n", v.empty() ? "(held)" : v.c_str(), r.schedule.c_str());
  }
  return v;
}

}  // namespace

// Finding 1 (fixed by seal tickets): unseize() computed start_ticks() (loads latest_) before its CAS
// of S(v). Between the load and the CAS, a second evictor E2 that read the
// same control word v raises latest_ to 3 s and seals key 1's bucket, which
// an admission had meanwhile taken to TAT 3 s, with the equal seal S(v).
// E1's CAS then lands on E2's seal with the old latest (2 s): key 1's TAT
// goes back from 3 s to 2 s and it takes its burst again at 2 s.
// Setup: key 1 takes 2 at 0 (TAT 2 s), key 6 2 at 2 s. T0: key 2 @2 s then
// key 1 x2 @2 s; T1: key 2 @3 s; T2: key 1 @2 s then erase key 6.
// Schedule (thread, atomic steps): T1 7 (claim scan: reads version v, key 1
// reusable at 3 s) | T0 10 (scan, note_time, seal S(v)) | T2 to the end
// (finds the seal, pins v+1, replaces it by 2 s, admits: TAT 3 s, erase 6) |
// T0 2 (claim CAS fails, unseize loads latest_ = 2 s) | T1 6 (note_time 3 s,
// seal 3 s -> S(v), claim CAS fails, unseize loads latest_) | T0 to the end
// (its CAS S(v) -> 2 s lands; key 2 takes key 6's freed entry; key 1 x2 at
// 2 s admitted) | T1. 4 preemptions.
TEST_CASE("check2: keyed_buckets, an undo's latest time read before an equal seal", "[checker][check2][check2a]") {
  const std::string v = run_script(
      3,
      attack_factory(2, {{1, 2, 0}, {6, 2, 2 * sec}},
                     {{{2, 1, 2 * sec}, {1, 2, 2 * sec}}, {{2, 1, 3 * sec}}, {{1, 1, 2 * sec}, {6, 0, 2 * sec}}}),
      {{1, 7}, {0, 11}, {2, 0}, {0, 1}, {1, 5}, {0, 0}, {1, 0}}, false);
  CHECK(v == "");
}

// Finding 2 (the same fix): the same in admit_live's pinned path (and refund_hash's): the
// pinned admitter loads start_ticks() (2 s) with S(v) in hand; E1's undo puts
// 2 s back, T0 admits key 1 unpinned (find ignores pins: TAT 3 s), E2 (read
// version v before the pin) seals 3 s with the equal S(v), and the pinned
// CAS S(v) -> 2 s lands: T0's admission is lost, T1 takes it again.
// T0: key 2 @2 s, key 1 @2 s; T1: key 2 @3 s, key 1 @2 s; T2: key 1 @2 s,
// erase key 6. Schedule: T1 7 | T0 10 | T2 13 (find, seal seen, pin, claim
// load, tat load, latest_ load) | T0 to the end | T1 6 | T2 to the end | T1.
TEST_CASE("check2: keyed_buckets, a pinned admission's latest time read before an equal seal",
          "[checker][check2][check2b]") {
  const std::string v = run_script(3,
                                   attack_factory(2, {{1, 2, 0}, {6, 2, 2 * sec}},
                                                  {{{2, 1, 2 * sec}, {1, 1, 2 * sec}},
                                                   {{2, 1, 3 * sec}, {1, 1, 2 * sec}},
                                                   {{1, 1, 2 * sec}, {6, 0, 2 * sec}}}),
                                   {{1, 7}, {0, 11}, {2, 13}, {0, 0}, {1, 5}, {2, 0}, {1, 0}}, false);
  CHECK(v == "");
}
