// The shared account's kept slot words (account/shared_slot_cache.hpp): a
// settle keeps its word for the thread's next lease, which reuses it with
// no write while its stamp's millisecond is current, renews it otherwise,
// and drops it once a scan freed it; the words kept bound what other users
// are refused falsely, and never what is in flight; handles give theirs back,
// a child of fork() forgets its parent's, a dead process's come back.
#include "catch_compat.hpp"
#include "account_support.hpp"
#include "support.hpp"
#include "tollgate_under_test.hpp"

#include <cstdint>
#include <cstring>
#include <new>
#include <vector>

#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace tollgate;

namespace {

using tgtest::ms;
using tgtest::sec;
constexpr std::size_t ktable = 4096;
using kshared = shared_account<manual_clock, usd_tag, ktable>;

struct alignas(4096) kregion {
  unsigned char b[kshared::region_bytes()];
};

shared_account_options kwho(std::uint64_t id, bool (*alive)(std::uint64_t, void*) = nullptr) {
  shared_account_options o;
  o.identity = id;
  o.alive = alive;
  o.scan_interval = nanoseconds(0);
  return o;
}

// Only a concurrency limit: an admission writes nothing else in the region.
account_config conc_only(std::uint64_t l, std::int64_t timeout_ns) {
  account_config c;
  c.model = server_model::sliding_log;
  c.concurrency = limit(l);
  c.lease_timeout = nanoseconds(timeout_ns);
  return c;
}

std::vector<kshared::lease_type> ktake_all(kshared& h, nanoseconds now, std::size_t most) {
  std::vector<kshared::lease_type> v;
  for (std::size_t i = 0; i < most; ++i) {
    auto a = h.try_admit(tgtest::req(1, 1), now);
    if (!a) break;
    v.push_back(std::move(a.lease));
  }
  return v;
}

std::uint64_t dead_id = 0;
bool alive_but_dead_id(std::uint64_t id, void*) { return id != dead_id; }

}  // namespace

TEST_CASE("kept slots: the cap is the line's chunk of the limit, none below 1,024", "[shared_account][slot_cache]") {
  using cache = detail::shared_slot_cache;
  CHECK(cache::cap_for(1023, 16) == 0);
  CHECK(cache::cap_for(1024, 16) == 1);
  CHECK(cache::cap_for(3000, 16) == 2);
  CHECK(cache::cap_for(1u << 20, 16) == cache::max_words);
  CHECK(cache::cap_for(64 * 32 * 3, 32) == 3);  // above 16 lines: L / (64 x Lines)
  CHECK(cache::cap_for(64 * 32 - 1, 32) == 0);
  static kregion mem;
  std::memset(mem.b, 0, sizeof mem.b);
  kshared h;
  REQUIRE(h.open(mem.b, sizeof mem.b, conc_only(1023, sec), kwho(1), nanoseconds(0)));
  CHECK(h.kept_per_line() == 0);
  auto a = h.try_admit(tgtest::req(1, 1), nanoseconds(0));
  REQUIRE(a);
  a.lease.settle_failed(nanoseconds(0));
  CHECK(h.kept_slots() == 0);  // below the divisor: given back, exactly as without the cache
  CHECK(h.in_flight() == 0);
  // Credit off: no lines, nothing kept, at any limit.
  std::memset(mem.b, 0, sizeof mem.b);
  account_config off = conc_only(4096, sec);
  off.per_thread_credit = false;
  REQUIRE(h.open(mem.b, sizeof mem.b, off, kwho(1), nanoseconds(0)));
  CHECK(h.kept_per_line() == 0);
  auto b = h.try_admit(tgtest::req(1, 1), nanoseconds(0));
  REQUIRE(b);
  b.lease.settle_failed(nanoseconds(0));
  CHECK(h.kept_slots() == 0);
}

TEST_CASE("kept slots: reused with no write within the stamp's millisecond, renewed after it", "[shared_account][slot_cache]") {
  static kregion mem;
  std::memset(mem.b, 0, sizeof mem.b);
  kshared h, other;
  const account_config c = conc_only(2048, 10 * sec);
  REQUIRE(h.open(mem.b, sizeof mem.b, c, kwho(1), nanoseconds(0)));
  REQUIRE(other.attach(mem.b, sizeof mem.b, c, kwho(2)));
  REQUIRE(h.kept_per_line() == 2);
  auto a = h.try_admit(tgtest::req(1, 1), nanoseconds(ms / 2));
  REQUIRE(a);
  a.lease.settle_failed(nanoseconds(ms / 2));
  CHECK(h.kept_slots() == 1);
  CHECK(h.in_flight() == 0);      // this handle's kept word is not in flight
  CHECK(other.in_flight() == 1);  // another handle sees it held
  CHECK(h.remaining(nanoseconds(ms)).concurrency == 2048);
  CHECK(other.remaining(nanoseconds(ms)).concurrency == 2047);
  // The same millisecond (rounded up: 0.5 ms and 1 ms are both stamp 1 ms):
  // admit and settle leave every byte of the region as it was.
  static unsigned char before[sizeof mem.b];
  std::memcpy(before, mem.b, sizeof mem.b);
  for (int i = 0; i < 100; ++i) {
    auto x = h.try_admit(tgtest::req(1, 1), nanoseconds(ms));
    REQUIRE(x);
    CHECK(h.kept_slots() == 0);
    CHECK(other.in_flight() == 1);
    x.lease.settle_failed(nanoseconds(ms));
  }
  CHECK(std::memcmp(before, mem.b, sizeof mem.b) == 0);
  // A later millisecond renews the word (a write), and its deadline moves:
  // 10 s after the renewal at 5 s, not after the take at 1 ms.
  auto y = h.try_admit(tgtest::req(1, 1), nanoseconds(5 * sec));
  REQUIRE(y);
  CHECK(std::memcmp(before, mem.b, sizeof mem.b) != 0);
  // Another handle fills the ktable at 14.9 s and scans: nothing has expired.
  auto full = ktake_all(other, nanoseconds(14 * sec + 900 * ms), ktable);
  CHECK(full.size() == 2047);
  CHECK_FALSE(other.try_admit(tgtest::req(1, 1), nanoseconds(14 * sec + 950 * ms)));
  CHECK(other.stats().reclaimed_by_deadline == 0);
  CHECK(y.lease.renew(nanoseconds(14 * sec + 960 * ms)));
  y.lease.settle_failed(nanoseconds(14 * sec + 960 * ms));
  CHECK(h.kept_slots() == 1);
  // Idle after that renewal at 14.96 s: the kept word is reclaimed by its
  // deadline, 10 s later, like any hung lease (scans at most every
  // lease_timeout / 16 = 625 ms here); the keeper drops it at its next
  // admission, which then finds no free word (the other handle holds them all).
  for (auto& l : full) l.settle_failed(nanoseconds(15 * sec));  // other's own shelf keeps 2, gives the rest
  CHECK(other.kept_slots() == 2);
  auto full2 = ktake_all(other, nanoseconds(24 * sec), ktable);
  CHECK(full2.size() == 2047);
  CHECK(other.stats().reclaimed_by_deadline == 0);
  CHECK_FALSE(other.try_admit(tgtest::req(1, 1), nanoseconds(24 * sec + 900 * ms)));  // a scan: not yet
  CHECK(other.stats().reclaimed_by_deadline == 0);
  auto freed_one = other.try_admit(tgtest::req(1, 1), nanoseconds(25 * sec + 600 * ms));
  CHECK(freed_one);  // past 24.96 s: freed by the scan
  CHECK(other.stats().reclaimed_by_deadline == 1);
  // Freed by the scan and taken by another: no longer counted as kept (the
  // entry stays on the shelf until its next use), so the views agree.
  CHECK(h.kept_slots() == 0);
  CHECK(h.in_flight() == 2048);
  CHECK(h.remaining(nanoseconds(25 * sec + 600 * ms)).concurrency == 0);
  auto z = h.try_admit(tgtest::req(1, 1), nanoseconds(25 * sec + 700 * ms));
  CHECK_FALSE(z);
  CHECK(z.refused.has(dimension::concurrency));
  CHECK(h.kept_slots() == 0);  // dropped
  CHECK(other.in_flight() == 2048);
  // Nothing was given twice: every word is held by exactly one lease.
  freed_one.lease.settle_failed(nanoseconds(25 * sec));
  for (auto& l : full2) l.settle_failed(nanoseconds(25 * sec));
  CHECK(other.kept_slots() == 2);
  CHECK(h.in_flight() == 2);
  other.close();
  CHECK(h.in_flight() == 0);
}

TEST_CASE("kept slots: a now past the last millisecond gets no kept word, as no fresh one", "[shared_account][slot_cache]") {
  static kregion mem;
  std::memset(mem.b, 0, sizeof mem.b);
  kshared h;
  REQUIRE(h.open(mem.b, sizeof mem.b, conc_only(1024, 10 * sec), kwho(1), nanoseconds(0)));
  auto a = h.try_admit(tgtest::req(1, 1), nanoseconds(0));
  REQUIRE(a);
  a.lease.settle_failed(nanoseconds(0));
  REQUIRE(h.kept_slots() == 1);
  // 285 years on: a fresh take is refused (no stamp: detail/slot_word.hpp),
  // and the kept word, whose deadline is long past, is given back, not lent.
  auto late = h.try_admit(tgtest::req(1, 1), nanoseconds::max());
  CHECK_FALSE(late);
  CHECK(late.refused.has(dimension::concurrency));
  CHECK(h.kept_slots() == 0);
  CHECK(h.in_flight() == 0);
  kshared view;
  REQUIRE(view.attach(mem.b, sizeof mem.b, conc_only(1024, 10 * sec), kwho(2)));
  CHECK(view.in_flight() == 0);
  // Without a deadline too: the last `now` a take stamps bounds the reuse.
  std::memset(mem.b, 0, sizeof mem.b);
  kshared n;
  REQUIRE(n.open(mem.b, sizeof mem.b, conc_only(1024, 0), kwho(3), nanoseconds(0)));
  auto b = n.try_admit(tgtest::req(1, 1), nanoseconds(0));
  REQUIRE(b);
  b.lease.settle_failed(nanoseconds(0));
  REQUIRE(n.kept_slots() == 1);
  const std::int64_t last_take = static_cast<std::int64_t>(detail::slot_word::max_ms - 1) * ms;
  auto edge = n.try_admit(tgtest::req(1, 1), nanoseconds(last_take));
  CHECK(edge);  // the last stamped millisecond: reused
  edge.lease.settle_failed(nanoseconds(last_take));
  CHECK(n.kept_slots() == 1);
  CHECK_FALSE(n.try_admit(tgtest::req(1, 1), nanoseconds(last_take + 1)));  // past it: as a take, refused
  CHECK(n.kept_slots() == 0);
  CHECK(n.in_flight() == 0);
  n.close();
}

TEST_CASE("kept slots: a thread is never refused while it keeps a word; others by at most Lines x cap, on random schedules",
          "[shared_account][slot_cache]") {
  // One thread, several handles on one region: each handle is one user with
  // its own credit line and shelf. The schedule's own count of leases held
  // is the oracle: never over the limit; a refusal only when the words held
  // in flight plus the words other users keep fill the limit and the refused
  // user keeps none; an admission whenever a word is free.
  const std::uint64_t seed = tgtest::seed_for(16400);
  tgtest::rng g(seed);
  INFO(tgtest::seed_note() << " stream seed " << seed);
  static kregion mem;
  std::uint64_t refusals = 0, admissions = 0, with_kept = 0;
  for (int trial = 0; trial < 30; ++trial) {
    std::memset(mem.b, 0, sizeof mem.b);
    const std::uint64_t l = g.between(1024, 4096);
    const std::size_t users = static_cast<std::size_t>(g.between(2, 6));
    const account_config c = conc_only(l, 0);
    std::vector<kshared> hs(users);
    for (std::size_t u = 0; u < users; ++u) REQUIRE(hs[u].open(mem.b, sizeof mem.b, c, kwho(1 + u), nanoseconds(0)));
    const std::uint64_t cap = hs[0].kept_per_line();
    REQUIRE(cap == detail::shared_slot_cache::cap_for(l, kshared::credit_lines));
    INFO("trial " << trial << " limit " << l << " users " << users << " cap " << cap);
    std::vector<std::vector<kshared::lease_type>> held(users);
    std::uint64_t flying = 0;
    // Most of the limit held first by user 0, so the limit is reached often.
    const std::uint64_t base = l - g.between(2, 3 * cap + 4);
    for (std::uint64_t i = 0; i < base; ++i) {
      auto a = hs[0].try_admit(tgtest::req(1, 1), nanoseconds(0));
      REQUIRE(a);
      held[0].push_back(std::move(a.lease));
      ++flying;
    }
    for (int step = 0; step < 3000; ++step) {
      const std::size_t u = static_cast<std::size_t>(g.between(0, users - 1));
      const nanoseconds now(static_cast<std::int64_t>(step) * ms);
      if (!held[u].empty() && g.chance(48)) {
        const std::size_t i = static_cast<std::size_t>(g.between(0, held[u].size() - 1));
        held[u][i].settle_failed(now);
        held[u].erase(held[u].begin() + static_cast<std::ptrdiff_t>(i));
        --flying;
        REQUIRE(hs[u].kept_slots() <= cap);
        continue;
      }
      std::uint64_t others = 0;
      for (std::size_t v = 0; v < users; ++v)
        if (v != u) others += hs[v].kept_slots();
      REQUIRE(others <= (users - 1) * cap);
      const std::uint64_t mine = hs[u].kept_slots();
      if (mine > 0) ++with_kept;
      auto a = hs[u].try_admit(tgtest::req(1, 1), now);
      if (a) {
        ++admissions;
        REQUIRE(flying + others < l);  // a word was free for it, or its own
        held[u].push_back(std::move(a.lease));
        ++flying;
      } else {
        ++refusals;
        REQUIRE(a.refused.has(dimension::concurrency));
        REQUIRE(mine == 0);               // never refused while it kept a word
        REQUIRE(flying + others == l);    // refused only with every word in flight or kept by another
      }
      REQUIRE(flying <= l);
      REQUIRE(hs[u].in_flight() == flying + others);  // held, less its own kept words
    }
    for (std::size_t u = 0; u < users; ++u)
      for (auto& x : held[u]) x.settle_failed(nanoseconds(0));
    for (auto& h : hs) h.close();
    kshared view;
    REQUIRE(view.attach(mem.b, sizeof mem.b, c, kwho(99)));
    CHECK(view.in_flight() == 0);  // closed handles gave every kept word back
  }
  INFO(admissions << " admissions, " << refusals << " refusals, " << with_kept << " with a kept word");
  CHECK(refusals > 1000);
  CHECK(with_kept > 1000);
}

TEST_CASE("kept slots: a dead process's come back at the next scan; its stale entries are dropped",
          "[shared_account][slot_cache]") {
  static kregion mem;
  std::memset(mem.b, 0, sizeof mem.b);
  const account_config c = conc_only(1024, 0);  // no deadline: only the liveness check frees
  // A handle whose destructor never runs (a killed process's).
  alignas(kshared) static unsigned char raw[sizeof(kshared)];
  kshared& ghost = *::new (raw) kshared;
  kshared h;
  REQUIRE(ghost.open(mem.b, sizeof mem.b, c, kwho(7, &alive_but_dead_id), nanoseconds(0)));
  REQUIRE(h.attach(mem.b, sizeof mem.b, c, kwho(8, &alive_but_dead_id)));
  auto g1 = ghost.try_admit(tgtest::req(1, 1), nanoseconds(0));
  REQUIRE(g1);
  g1.lease.settle_failed(nanoseconds(0));
  REQUIRE(ghost.kept_slots() == 1);
  auto full = ktake_all(h, nanoseconds(ms), 2000);
  CHECK(full.size() == 1023);  // the ghost's kept word is held
  CHECK(h.stats().reclaimed_dead == 0);
  dead_id = 7;  // the liveness check now calls it dead
  auto x = h.try_admit(tgtest::req(1, 1), nanoseconds(2 * ms));
  CHECK(x);
  CHECK(h.stats().reclaimed_dead == 1);
  // The "dead" one, in fact running (a check that lied), finds its entry
  // stale: it takes nothing, and gives nothing twice.
  auto y = ghost.try_admit(tgtest::req(1, 1), nanoseconds(3 * ms));
  CHECK_FALSE(y);
  CHECK(ghost.kept_slots() == 0);
  CHECK(h.in_flight() == 1024);
  dead_id = 0;
  x.lease.settle_failed(nanoseconds(4 * ms));
  for (auto& l : full) l.settle_failed(nanoseconds(4 * ms));
  h.close();
  kshared view;
  REQUIRE(view.attach(mem.b, sizeof mem.b, c, kwho(9)));
  CHECK(view.in_flight() == 0);
}

TEST_CASE("kept slots: claim() with no fork between gives back what the old identity kept", "[shared_account][slot_cache]") {
  static kregion mem;
  std::memset(mem.b, 0, sizeof mem.b);
  const account_config c = conc_only(1024, 0);  // no deadline, no liveness check: a forgotten word is lost
  kshared h, view;
  REQUIRE(h.open(mem.b, sizeof mem.b, c, kwho(1), nanoseconds(0)));
  REQUIRE(view.attach(mem.b, sizeof mem.b, c, kwho(9)));
  auto a = h.try_admit(tgtest::req(1, 1), nanoseconds(0));
  REQUIRE(a);
  a.lease.settle_failed(nanoseconds(0));
  REQUIRE(h.kept_slots() == 1);
  REQUIRE(h.this_thread_credit_line() < kshared::credit_lines);
  REQUIRE(h.claim(2));
  CHECK(h.kept_slots() == 0);
  CHECK(view.in_flight() == 0);  // given back, not lost
  for (std::size_t i = 0; i < kshared::credit_lines; ++i) CHECK(view.credit_line_owner(i) != 1);
  auto b = h.try_admit(tgtest::req(1, 1), nanoseconds(0));
  REQUIRE(b);
  CHECK(h.credit_line_owner(h.this_thread_credit_line()) == 2);
  b.lease.settle_failed(nanoseconds(0));
  h.close();
  CHECK(view.in_flight() == 0);
}

TEST_CASE("kept slots: a child of fork() forgets its parent's kept words and keeps its own", "[shared_account][slot_cache]") {
  struct page {
    kregion r;
    std::uint64_t child_kept, child_in_flight, child_ok;
  };
  void* p = mmap(nullptr, sizeof(page), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  REQUIRE(p != MAP_FAILED);
  page& pg = *::new (p) page();
  const account_config c = conc_only(1024, 10 * sec);
  kshared h;
  REQUIRE(h.open(pg.r.b, sizeof pg.r.b, c, kwho(1), nanoseconds(0)));
  auto a = h.try_admit(tgtest::req(1, 1), nanoseconds(0));
  REQUIRE(a);
  a.lease.settle_failed(nanoseconds(0));
  REQUIRE(h.kept_slots() == 1);
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    std::uint64_t ok = 1;
    // Before claim(): the parent's kept word is another handle's held word.
    if (h.kept_slots() != 0 || h.in_flight() != 1) ok = 0;
    if (!h.claim(2)) ok = 0;
    pg.child_kept = h.kept_slots();  // 0: the parent's word is not the child's
    auto x = h.try_admit(tgtest::req(1, 1), nanoseconds(0));
    if (!x) ok = 0;
    pg.child_in_flight = h.in_flight();  // its lease and the parent's kept word
    x.lease.settle_failed(nanoseconds(0));
    if (h.kept_slots() != 1) ok = 0;  // its own, now
    h.close();  // gives its own back, not the parent's
    pg.child_ok = ok;
    _exit(0);
  }
  int st = 0;
  REQUIRE(waitpid(pid, &st, 0) == pid);
  REQUIRE(WIFEXITED(st));
  CHECK(pg.child_ok == 1);
  CHECK(pg.child_kept == 0);
  CHECK(pg.child_in_flight == 2);
  CHECK(h.kept_slots() == 1);
  CHECK(h.in_flight() == 0);
  kshared view;
  REQUIRE(view.attach(pg.r.b, sizeof pg.r.b, c, kwho(3)));
  CHECK(view.in_flight() == 1);  // the parent's kept word only
  // And the parent still reuses it (same millisecond as its stamp).
  auto b = h.try_admit(tgtest::req(1, 1), nanoseconds(0));
  CHECK(b);
  CHECK(h.kept_slots() == 0);
  CHECK(view.in_flight() == 1);
  b.lease.settle_failed(nanoseconds(0));
  h.close();
  CHECK(view.in_flight() == 0);
  view.close();  // before the bytes go
  munmap(p, sizeof(page));
}
