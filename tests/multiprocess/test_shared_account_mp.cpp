// Multi-process tests of shared_account: forked processes (1-2 threads
// each) open one region at once (one builds, the rest attach), every
// admission and settle is logged per thread into shared memory, and the
// parent merges the logs and checks the exact bounds: the strict request
// and token windows, the daily total, concurrency (intervals ordered by one
// shared sequence counter) and the budget. A second test SIGKILLs processes
// while they hold slots and reservations: the others go on, the bounds
// hold, the dead ones' slots come back at the next scan (the liveness check
// reads a table the parent writes after reaping) and their money stays
// committed. A third forks after attaching. Per-thread credit is on or off
// at random in the first, on in the others (the credit lines of
// account/shared_credit.hpp: a child never uses its parent's, a dead
// process's come back through the liveness check). Concurrency limits of
// 1,024 and more run kept slot words (account/shared_slot_cache.hpp): there
// the parent holds all but a few slots as ballast for the whole run, so the
// workers meet the limit, and the bound checked is the few left. Time is a manual clock whose
// word lives in shared memory (region_clock): no sleep, no wall-clock
// assert; every wait is bounded in count and time; children are reaped
// (killed first on failure). Seeds: the project seed (TOLLGATE_SEED).

#include "../catch_compat.hpp"
#include "../account_support.hpp"
#include "../support.hpp"

#include <tollgate/shared_account.hpp>

#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <thread>
#include <vector>

using namespace tollgate;

namespace {

constexpr std::int64_t ms = 1000000, sec = 1000 * ms;
constexpr std::size_t max_procs = 8, max_threads = 2, log_cap = 1 << 12, max_ids = 1024;
using shared = shared_account<region_clock, usd_tag, 2048>;

struct entry {
  std::int64_t t;          // the admission's `now`
  std::uint64_t tokens;    // counted in the token windows (reserved; refunds are off in these tests)
  std::uint64_t seq_a;     // taken after the admission
  std::uint64_t seq_r;     // taken before the settle
  std::int64_t cost;       // settled cost, nano-dollars
  std::atomic<std::uint32_t> state;  // 0 none, 1 admitted (t, tokens, seq_a), 2 settled (seq_r, cost)
};
struct thread_log {
  std::atomic<std::uint64_t> used;
  std::atomic<std::uint64_t> ops;
  entry e[log_cap];
};
struct board {
  std::atomic<std::int64_t> clock;
  std::atomic<std::uint64_t> seq;
  std::atomic<std::uint64_t> built, attached, refused_config, errors, kept;
  std::atomic<std::uint32_t> dead[max_ids];  // by identity: set by the parent once it has reaped the process
  std::atomic<std::uint64_t> kill_seq[max_ids];  // the sequence number taken just before the kill
  std::atomic<std::uint64_t> allow[max_procs];   // how far each process slot may go (kill test)
  thread_log t[max_procs][max_threads];
};

void* map_shared(std::size_t n) {
  void* p = mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  return p == MAP_FAILED ? nullptr : p;
}

board* B = nullptr;  // mapped before fork: the same address in every child

bool alive(std::uint64_t id, void*) { return id >= max_ids || B->dead[id].load() == 0; }

struct plan {
  account_config c;
  std::uint64_t max_prompt = 1, max_out = 1;
  std::uint64_t ballast = 0;  // slots the parent holds (limits of 1,024 and more)
  std::uint64_t free_slots() const { return *c.concurrency.value() - ballast; }
};

plan draw(tgtest::rng& g) {
  plan p;
  account_config& c = p.c;
  c.model = server_model::fixed_window;
  c.concurrency = limit(g.between(1, 8));
  const bool kept = g.chance(40);  // kept slot words (with credit on), all but 1-8 slots held by the parent
  c.rpm = limit(g.chance(75) ? g.between(5, 400) : g.between(1024, 4000));
  // Below and above 1,024 (the credit threshold: a chunk is limit / 1024).
  // Credit on or off: the bounds are the same, exact.
  c.per_thread_credit = g.chance(60);
  c.tpm = limit(g.chance(50) ? g.between(200, 1023) : g.between(1024, 60000));
  c.tpd = limit(g.between(2000, 400000));
  c.request_window = std::chrono::seconds(1);
  c.token_window = std::chrono::seconds(1);
  c.budget = usd::from_nanos(static_cast<std::int64_t>(g.between(2000, 2000000)) * 1000);
  // Long: a lease reclaimed from a live holder would end its slot before
  // its logged interval does (the deadline is tested in test_shared_account.cpp).
  c.lease_timeout = std::chrono::hours(2);
  c.refund_unused_tokens = false;
  c.unix_time_at_zero = nanoseconds(0);
  if (kept) {
    // Limits the ballast fits in, spread over a few windows before the workers start.
    c.concurrency = limit(g.between(1024, 2048));
    p.ballast = *c.concurrency.value() - g.between(1, 8);
    c.rpm = limit(g.between(1024, 4000));
    c.tpm = limit(g.between(20000, 60000));
    c.tpd = limit(g.between(400000, 800000));
    c.budget = usd::from_nanos(static_cast<std::int64_t>(g.between(1000000, 2000000)) * 1000);
  }
  const std::uint64_t tl = *c.tpm.value();
  p.max_prompt = std::max<std::uint64_t>(1, std::min<std::uint64_t>(tl / 4, 300));
  p.max_out = std::max<std::uint64_t>(1, std::min<std::uint64_t>(tl / 4, 300));
  return p;
}

shared_account_options opts(std::uint64_t id) {
  shared_account_options o;
  o.identity = id;
  o.alive = &alive;
  o.scan_interval = nanoseconds(ms);
  return o;
}

// Opens the region, retrying while another process builds it (bounded).
bool open_shared(shared& a, void* bytes, const account_config& c, std::uint64_t id) {
  for (int tries = 0; tries < 2000000; ++tries) {
    const shared_open_result r = a.open(bytes, shared::region_bytes(), c, opts(id), nanoseconds(0));
    if (r) {
      (r.constructed ? B->built : B->attached).fetch_add(1);
      return true;
    }
    if (r.region != region_errc::constructing) return false;
    std::this_thread::yield();
  }
  return false;
}

struct held_lease {
  shared::lease_type l;
  entry* e = nullptr;
  std::uint64_t prompt = 0, out = 0;  // what the request asked for: its usage stays within (no overspend)
};

// One thread: `ops` rounds (0: until killed, paced by allow[pi]).
void work(shared& a, std::size_t pi, std::size_t ti, std::uint64_t seed, std::uint64_t ops, const plan& p) {
  tgtest::rng g(seed);
  thread_log& me = B->t[pi][ti];
  std::vector<held_lease> held;
  held.reserve(4);
  for (std::uint64_t k = 0; ops == 0 || k < ops; ++k) {
    if (ops == 0)
      while (me.ops.load(std::memory_order_relaxed) >= B->allow[pi].load(std::memory_order_relaxed))
        std::this_thread::yield();  // paced by the parent, which kills this process
    me.ops.fetch_add(1, std::memory_order_relaxed);
    const std::int64_t step = g.chance(10) ? static_cast<std::int64_t>(g.between(0, sec / 4))
                                           : static_cast<std::int64_t>(g.between(0, 3 * ms));
    const nanoseconds now = region_clock::advance(nanoseconds(step));
    if (!held.empty() && (held.size() >= 2 || g.chance(45))) {
      const std::size_t i = static_cast<std::size_t>(g.between(0, held.size() - 1));
      held_lease& h = held[i];
      h.e->seq_r = B->seq.fetch_add(1);
      const std::uint64_t pr = g.between(0, h.prompt), co = g.between(0, h.out);
      std::int64_t cost = 0;
      if (g.chance(85)) cost = h.l.settle(usage{pr, 0, co, 0, 0}, now).cost.nanos();
      else h.l.settle_rejected(now);
      h.e->cost = cost;
      h.e->state.store(2, std::memory_order_release);
      held.erase(held.begin() + static_cast<std::ptrdiff_t>(i));
      continue;
    }
    for (held_lease& h : held)
      if (g.chance(20)) (void)h.l.renew(now);
    request r;
    r.model = tgtest::k26();
    r.prompt_tokens = g.between(1, p.max_prompt);
    r.max_tokens = g.between(1, p.max_out);
    auto x = a.try_admit(r, now);
    if (!x) continue;
    const std::uint64_t i = me.used.load(std::memory_order_relaxed);
    if (i >= log_cap) _exit(0);  // the log is full: stop logging, and stop admitting
    entry& e = me.e[i];
    e.t = now.count();
    e.tokens = x.tokens;
    e.seq_a = B->seq.fetch_add(1);
    e.state.store(1, std::memory_order_release);
    me.used.store(i + 1, std::memory_order_relaxed);
    held.push_back(held_lease{std::move(x.lease), &e, r.prompt_tokens, *r.max_tokens});
  }
  for (held_lease& h : held) {
    h.e->seq_r = B->seq.fetch_add(1);
    h.l.settle_failed(nanoseconds(B->clock.load()));
    h.e->cost = 0;
    h.e->state.store(2, std::memory_order_release);
  }
}

void stop(pid_t& p) {
  if (p <= 0) return;
  kill(p, SIGKILL);
  waitpid(p, nullptr, 0);
  p = -1;
}
struct children {
  std::vector<pid_t> pids;
  ~children() {
    for (pid_t& p : pids) stop(p);
  }
  bool wait_all(std::chrono::seconds limit) {
    const auto end = std::chrono::steady_clock::now() + limit;
    bool ok = true;
    for (pid_t& p : pids) {
      if (p <= 0) continue;
      int st = 0;
      for (;;) {
        const pid_t r = waitpid(p, &st, WNOHANG);
        if (r == p) break;
        if (r < 0 || std::chrono::steady_clock::now() > end) {
          stop(p);
          ok = false;
          break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(1));  // polling a child, not a timing assert
      }
      if (p > 0 && (!WIFEXITED(st) || WEXITSTATUS(st) != 0)) {
        std::fprintf(stderr, "child %d: %s %d\n", static_cast<int>(p), WIFEXITED(st) ? "exit" : "signal",
                     WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
        ok = false;
      }
      p = -1;
    }
    return ok;
  }
};

[[noreturn]] void child(void* bytes, const plan& p, std::size_t pi, std::size_t threads, std::uint64_t id,
                        std::uint64_t seed, std::uint64_t ops, pid_t parent) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != parent) _exit(6);
  static shared a;  // static: the threads use it until _exit
  if (!open_shared(a, bytes, p.c, id)) {
    B->errors.fetch_add(1);
    _exit(3);
  }
  std::vector<std::thread> ts;
  for (std::size_t t = 0; t < threads; ++t)
    ts.emplace_back([&, t] { work(a, pi, t, seed * 31 + t, ops, p); });
  for (auto& t : ts) t.join();
  B->kept.fetch_add(a.kept_slots());
  a.close();  // its kept words and lines back (_exit runs no destructor)
  _exit(0);
}

struct merged {
  std::vector<std::pair<std::int64_t, std::uint64_t>> adm;  // (t, tokens)
  std::vector<std::pair<std::uint64_t, int>> ev;            // (seq, +1 / -1)
  std::int64_t cost = 0;
  std::uint64_t settled = 0;
};

// `ends`: the sequence number by which an unsettled entry of process slot
// pi surely ended (its kill), else the end of time.
template <class End>
merged merge(std::size_t procs, std::size_t threads, End&& ends) {
  merged m;
  for (std::size_t pi = 0; pi < procs; ++pi)
    for (std::size_t ti = 0; ti < threads; ++ti) {
      const thread_log& L = B->t[pi][ti];
      const std::uint64_t n = std::min<std::uint64_t>(L.used.load(), log_cap);
      for (std::uint64_t i = 0; i < n; ++i) {
        const entry& e = L.e[i];
        const std::uint32_t st = e.state.load(std::memory_order_acquire);
        if (st == 0) continue;
        m.adm.emplace_back(e.t, e.tokens);
        m.ev.emplace_back(e.seq_a, +1);
        if (st == 2) {
          m.ev.emplace_back(e.seq_r, -1);
          m.cost += e.cost;
          ++m.settled;
        } else {
          // Killed holding it: held until its kill; killed inside its
          // settle (seq_r taken, released after it): counted to seq_r only,
          // a shorter interval than it held (the safe side of the check).
          m.ev.emplace_back(e.seq_r != 0 ? e.seq_r : ends(pi, e), -1);
        }
      }
    }
  return m;
}

// The largest count of requests and tokens in any window (t - w, t].
void window_peaks(std::vector<std::pair<std::int64_t, std::uint64_t>> a, std::int64_t w, std::uint64_t& req,
                  std::uint64_t& tok) {
  std::sort(a.begin(), a.end());
  req = tok = 0;
  std::uint64_t sum = 0;
  std::size_t lo = 0;
  for (std::size_t hi = 0; hi < a.size(); ++hi) {
    sum += a[hi].second;
    while (a[lo].first <= a[hi].first - w) sum -= a[lo++].second;
    // Everything at a[hi].first is in: later entries with the same time are added next round.
    req = std::max<std::uint64_t>(req, hi - lo + 1);
    tok = std::max(tok, sum);
  }
}
// The most intervals open at once (a release at seq s comes after an acquire at s? never: seqs are unique).
std::uint64_t peak_open(std::vector<std::pair<std::uint64_t, int>> ev) {
  std::sort(ev.begin(), ev.end());
  std::int64_t open = 0, peak = 0;
  for (auto& x : ev) {
    open += x.second;
    peak = std::max(peak, open);
  }
  return static_cast<std::uint64_t>(peak);
}

void reset_board() {
  std::memset(static_cast<void*>(B), 0, sizeof(board));
  region_clock::bind(&B->clock);
}

}  // namespace

TEST_CASE("multiprocess account: 2-8 processes x 1-2 threads; merged logs keep every bound", "[multiprocess_account][bounds]") {
  B = static_cast<board*>(map_shared(sizeof(board)));
  REQUIRE(B != nullptr);
  void* bytes = map_shared(shared::region_bytes());
  REQUIRE(bytes != nullptr);
  const std::uint64_t seed = tgtest::seed_for(16100);
  tgtest::rng g(seed);
  INFO(tgtest::seed_note() << " stream seed " << seed);
  std::uint64_t total = 0, refused_somewhere = 0, kept_trials = 0, kept_at_limit = 0, kept_words = 0;
  for (int trial = 0; trial < 40; ++trial) {
    reset_board();
    std::memset(bytes, 0, shared::region_bytes());
    const plan p = draw(g);
    // The ballast: built and held by the parent before the workers start.
    shared parent_handle;
    std::vector<shared::lease_type> ballast;
    if (p.ballast > 0) {
      // Half a window's requests a second; the workers start two windows
      // after the last, so the ballast's units have left their windows.
      REQUIRE(open_shared(parent_handle, bytes, p.c, 300));
      const std::uint64_t per = *p.c.rpm.value() / 2;
      for (std::uint64_t i = 0; i < p.ballast; ++i) {
        auto x = parent_handle.try_admit(tgtest::req(1, 1), nanoseconds(static_cast<std::int64_t>(i / per) * sec));
        REQUIRE(x);
        ballast.push_back(std::move(x.lease));
      }
      B->clock.store(static_cast<std::int64_t>(p.ballast / per + 2) * sec);
    }
    const std::size_t procs = static_cast<std::size_t>(g.between(2, 8));
    const std::size_t threads = static_cast<std::size_t>(g.between(1, 2));
    INFO("trial " << trial << ": " << procs << " processes x " << threads << " threads, credit "
                  << p.c.per_thread_credit << ", conc " << *p.c.concurrency.value() << " rpm " << *p.c.rpm.value() << " tpm " << *p.c.tpm.value() << " tpd "
                  << *p.c.tpd.value() << " budget " << p.c.budget->nanos());
    children kids;
    const pid_t parent = getpid();
    for (std::size_t pi = 0; pi < procs; ++pi) {
      const pid_t pid = fork();
      REQUIRE(pid >= 0);
      if (pid == 0) child(bytes, p, pi, threads, 1 + pi, g.between(1, 1u << 30), 2000, parent);
      kids.pids.push_back(pid);
    }
    // One more process with another configuration: refused, changes nothing.
    {
      const pid_t pid = fork();
      REQUIRE(pid >= 0);
      if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        account_config other = p.c;
        other.rpm = limit(*p.c.rpm.value() + 1);
        shared a;
        // After the region is built (else this one could win the build and
        // refuse everyone else: a race of the test, not of the account).
        for (int tries = 0; tries < 20000000 && B->built.load() == 0; ++tries) std::this_thread::yield();
        for (int tries = 0; tries < 2000000; ++tries) {
          const shared_open_result r = a.open(bytes, shared::region_bytes(), other, opts(100), nanoseconds(0));
          if (r.region == region_errc::wrong_config) {
            B->refused_config.fetch_add(1);
            _exit(0);
          }
          if (r.region != region_errc::constructing) _exit(4);  // built or any other answer: wrong
          std::this_thread::yield();
        }
        _exit(5);
      }
      kids.pids.push_back(pid);
    }
    REQUIRE(kids.wait_all(std::chrono::seconds(60)));
    CHECK(B->built.load() == 1);
    CHECK(B->attached.load() == procs - (p.ballast > 0 ? 0 : 1));
    CHECK(B->refused_config.load() == 1);
    CHECK(B->errors.load() == 0);
    const merged m = merge(procs, threads, [](std::size_t, const entry&) { return ~std::uint64_t{0}; });
    std::uint64_t req = 0, tok = 0;
    window_peaks(m.adm, sec, req, tok);
    CHECK(req <= *p.c.rpm.value());
    CHECK(tok <= *p.c.tpm.value());
    std::uint64_t day = 0;
    for (auto& x : m.adm) day += x.second;
    CHECK(day <= *p.c.tpd.value());
    CHECK(peak_open(m.ev) <= p.free_slots());
    CHECK(m.cost <= p.c.budget->nanos());
    CHECK(m.settled == m.adm.size());  // every thread settled what it held
    // The region agrees: nothing in flight, the money spent is what was logged.
    for (auto& l : ballast) l.settle_failed(nanoseconds(0));
    parent_handle.close();
    shared view;
    REQUIRE(view.attach(bytes, shared::region_bytes(), p.c, opts(200)));
    CHECK(view.in_flight() == 0);
    CHECK(view.stats().spent_nanos == m.cost);
    total += m.adm.size();
    if (req == *p.c.rpm.value() || tok + p.max_prompt + p.max_out > *p.c.tpm.value() || m.cost * 2 > p.c.budget->nanos() ||
        (p.ballast > 0 && peak_open(m.ev) == p.free_slots()))
      ++refused_somewhere;
    if (p.ballast > 0) {
      ++kept_trials;
      if (peak_open(m.ev) == p.free_slots()) ++kept_at_limit;
      kept_words += B->kept.load();
    }
  }
  INFO(total << " admissions; kept slot words in " << kept_trials << " trials, " << kept_at_limit
             << " reaching their limit, " << kept_words << " words kept at the workers' ends");
  CHECK(kept_trials >= 5);
  CHECK(kept_at_limit >= 3);
  CHECK(kept_words > 0);
  CHECK(total > 8000);
  CHECK(refused_somewhere >= 20);  // the limits were reached, not just stayed under
}

TEST_CASE("multiprocess account: processes SIGKILLed holding slots and money; the others go on, the slots come back",
          "[multiprocess_account][kill]") {
  B = static_cast<board*>(map_shared(sizeof(board)));
  REQUIRE(B != nullptr);
  void* bytes = map_shared(shared::region_bytes());
  REQUIRE(bytes != nullptr);
  reset_board();
  std::memset(bytes, 0, shared::region_bytes());
  const std::uint64_t seed = tgtest::seed_for(16200);
  tgtest::rng g(seed);
  INFO(tgtest::seed_note() << " stream seed " << seed);
  plan p = draw(g);
  // 4 processes x 2 threads hold at most 2 leases each: 16 fit, and a
  // dead process's slots must come back for its next incarnation to get any.
  // A limit of 1,024 with all but 16 held by the parent: the workers keep
  // slot words (one a line), and die holding them too.
  p.c.concurrency = limit(1024);
  p.ballast = 1024 - 16;
  p.c.rpm = limit(100000);
  p.c.tpm = limit(2000000);
  p.c.tpd = limit(1u << 30);
  p.c.budget = usd::from_nanos(std::int64_t{1} << 40);
  // Credit on: rpm and tpm grant chunks of 97 and 1,953, so processes die
  // at random points of a line's claim, refill, spend and give-back too.
  p.c.per_thread_credit = true;
  p.max_prompt = p.max_out = 100;
  const std::size_t procs = 4, threads = 2;
  shared parent_handle;
  std::vector<shared::lease_type> ballast;
  REQUIRE(open_shared(parent_handle, bytes, p.c, 300));
  for (std::uint64_t i = 0; i < p.ballast; ++i) {
    auto x = parent_handle.try_admit(tgtest::req(1, 1), nanoseconds(0));
    REQUIRE(x);
    ballast.push_back(std::move(x.lease));
  }
  children kids;
  kids.pids.resize(procs, -1);
  std::uint64_t id_of[max_procs] = {};
  std::uint64_t next_id = 1;
  const pid_t parent = getpid();
  auto spawn = [&](std::size_t pi) {
    id_of[pi] = next_id++;
    const pid_t pid = fork();
    if (pid == 0) child(bytes, p, pi, threads, id_of[pi], g.between(1, 1u << 30), 0, parent);
    kids.pids[pi] = pid;
    return pid > 0;
  };
  for (std::size_t pi = 0; pi < procs; ++pi) REQUIRE(spawn(pi));
  // Everything an earlier incarnation of slot pi logged and did not
  // settle ended by its kill.
  std::vector<std::vector<std::uint64_t>> killed_at(procs);  // per slot: kill seqs of its incarnations, in order
  std::vector<std::vector<std::uint64_t>> log_mark(procs);   // per slot: log length (summed over threads) at each kill
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(40);
  unsigned kills = 0;
  std::uint64_t progress_after_kill = 0;
  for (unsigned round = 0; kills < 150 && round < 600 && std::chrono::steady_clock::now() < end; ++round) {
    const std::size_t victim = static_cast<std::size_t>(g.between(0, procs - 1));
    // Let every process run some operations, then kill the victim mid-way.
    for (std::size_t pi = 0; pi < procs; ++pi) B->allow[pi].fetch_add(g.between(5, 60));
    const std::uint64_t target = B->allow[victim].load();
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (B->t[victim][0].ops.load() + 3 < target && std::chrono::steady_clock::now() < until)
      std::this_thread::yield();
    const std::uint64_t others_before = B->t[(victim + 1) % procs][0].used.load();
    B->kill_seq[id_of[victim]].store(B->seq.fetch_add(1));
    killed_at[victim].push_back(B->kill_seq[id_of[victim]].load());
    stop(kids.pids[victim]);
    B->dead[id_of[victim]].store(1);  // reaped: the liveness check may now say so
    ++kills;
    // The next incarnation appends after a skipped line (the dead one may
    // have written a line without counting it): mark where its lines end.
    for (std::size_t t = 0; t < threads; ++t) {
      const std::uint64_t u = B->t[victim][t].used.load() + 1;
      B->t[victim][t].used.store(u);
      log_mark[victim].push_back(u);
    }
    for (std::size_t t = 0; t < threads; ++t) B->t[victim][t].ops.store(0);
    B->allow[victim].store(0);
    REQUIRE(spawn(victim));
    // The others go on after the kill: another process admits again.
    const std::size_t other = (victim + 1) % procs;
    B->allow[other].fetch_add(40);
    const auto until2 = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (B->t[other][0].used.load() < others_before + 3 && std::chrono::steady_clock::now() < until2)
      std::this_thread::yield();
    if (B->t[other][0].used.load() >= others_before + 3) ++progress_after_kill;
  }
  INFO(kills << " kills, " << progress_after_kill << " rounds with progress after the kill");
  CHECK(kills >= 100);
  CHECK(progress_after_kill == kills);
  // Stop everyone at once (all dead now), then check.
  for (std::size_t pi = 0; pi < procs; ++pi) {
    B->kill_seq[id_of[pi]].store(B->seq.fetch_add(1));
    killed_at[pi].push_back(B->kill_seq[id_of[pi]].load());
    stop(kids.pids[pi]);
    for (std::size_t t = 0; t < threads; ++t) log_mark[pi].push_back(B->t[pi][t].used.load() + 1);
    B->dead[id_of[pi]].store(1);
  }
  // An unsettled entry ended by the kill of the incarnation that wrote it:
  // the first kill whose log mark (of its thread) lies beyond the entry.
  auto ends = [&](std::size_t pi, const entry& e) -> std::uint64_t {
    for (std::size_t t = 0; t < threads; ++t) {
      const thread_log& L = B->t[pi][t];
      if (&e < L.e || &e >= L.e + log_cap) continue;
      const std::uint64_t idx = static_cast<std::uint64_t>(&e - L.e);
      for (std::size_t k = 0; k < killed_at[pi].size(); ++k)
        if (idx < log_mark[pi][k * threads + t]) return killed_at[pi][k];
    }
    return ~std::uint64_t{0};
  };
  const merged m = merge(procs, threads, ends);
  CHECK(peak_open(m.ev) <= 16);
  std::uint64_t req = 0, tok = 0;
  window_peaks(m.adm, sec, req, tok);
  CHECK(req <= *p.c.rpm.value());
  CHECK(tok <= *p.c.tpm.value());
  // Every slot comes back: all holders are dead, one scan frees them.
  shared last;
  REQUIRE(last.attach(bytes, shared::region_bytes(), p.c, opts(next_id)));
  region_clock::advance(std::chrono::milliseconds(10));
  std::vector<shared::admission_type> took;
  for (int i = 0; i < 16; ++i) {
    took.push_back(last.try_admit(tgtest::req(10, 10), region_clock::now()));
    CHECK(took.back());
  }
  CHECK_FALSE(last.try_admit(tgtest::req(10, 10), region_clock::now()));
  CHECK(last.in_flight() == 1024);  // with the parent's ballast
  // Lines of the dead come back through the liveness check: this thread has one.
  CHECK(last.this_thread_credit_line() < shared::credit_lines);
  const auto s = last.stats();
  INFO("reclaimed: " << s.reclaimed_dead << " dead, " << s.reclaimed_by_deadline << " by deadline");
  CHECK(s.reclaimed_dead + s.reclaimed_by_deadline > 0);
  // Money the dead reserved stays committed: remaining <= budget - what was settled.
  CHECK(last.budget_remaining()->nanos() <= p.c.budget->nanos() - m.cost);
}

TEST_CASE("multiprocess account: fork after attach; the child claims its own identity before it admits",
          "[multiprocess_account][fork]") {
  B = static_cast<board*>(map_shared(sizeof(board)));
  REQUIRE(B != nullptr);
  void* bytes = map_shared(shared::region_bytes());
  REQUIRE(bytes != nullptr);
  reset_board();
  std::memset(bytes, 0, shared::region_bytes());
  plan p;
  p.c.model = server_model::fixed_window;
  p.c.concurrency = limit(3);
  p.c.rpm = limit(100);
  p.c.tpm = limit(1u << 20);  // credit: chunks of 1,024 tokens
  p.c.lease_timeout = std::chrono::hours(2);
  shared a;
  REQUIRE(a.open(bytes, shared::region_bytes(), p.c, opts(1), nanoseconds(0)));
  auto mine = a.try_admit(tgtest::req(10, 10), nanoseconds(0));
  REQUIRE(mine);
  const std::size_t line = a.this_thread_credit_line();
  REQUIRE(line < shared::credit_lines);
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    int code = 0;
    if (!a.needs_claim()) code |= 1;
    auto x = a.try_admit(tgtest::req(10, 10), nanoseconds(0));
    if (x || !x.refused.has(dimension::stopped)) code |= 2;
    (void)mine.lease.settle(usage{1, 0, 1, 0, 0}, nanoseconds(0));  // the parent's: inert here
    if (a.in_flight() != 1) code |= 4;
    if (!a.claim(2)) code |= 8;
    static auto held = a.try_admit(tgtest::req(10, 10), nanoseconds(0));
    if (!held || a.in_flight() != 2) code |= 16;
    // Its own credit line, never the parent's.
    const std::size_t l = a.this_thread_credit_line();
    if (l == line || l >= shared::credit_lines || a.credit_line_owner(l) != 2 || a.credit_line_owner(line) != 1)
      code |= 32;
    B->allow[0].store(1);  // holding: the parent may now check
    while (B->allow[1].load() == 0) std::this_thread::yield();  // bounded by the parent's kill
    _exit(code);
  }
  children kids;
  kids.pids.push_back(pid);
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (B->allow[0].load() == 0 && std::chrono::steady_clock::now() < until) std::this_thread::yield();
  REQUIRE(B->allow[0].load() == 1);
  CHECK(a.in_flight() == 2);
  // The parent "dies" (its identity declared dead): only its own slot is
  // reclaimed, not the child's, which carries the child's identity.
  B->dead[1].store(1);
  shared third;
  REQUIRE(third.attach(bytes, shared::region_bytes(), p.c, opts(3)));
  auto t1 = third.try_admit(tgtest::req(10, 10), nanoseconds(ms));
  REQUIRE(t1);  // one slot was free anyway
  auto t2 = third.try_admit(tgtest::req(10, 10), nanoseconds(2 * ms));
  REQUIRE(t2);  // the scan freed the parent's slot
  CHECK(third.stats().reclaimed_dead == 1);
  CHECK(third.credit_line_owner(line) == 1);  // lines are reaped only when a claimer finds none free
  CHECK_FALSE(third.try_admit(tgtest::req(10, 10), nanoseconds(3 * ms)));  // the child's is still held
  B->allow[1].store(1);
  int st = 0;
  const auto until2 = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  pid_t r = 0;
  while ((r = waitpid(pid, &st, WNOHANG)) == 0 && std::chrono::steady_clock::now() < until2) std::this_thread::yield();
  REQUIRE(r == pid);
  kids.pids.clear();
  REQUIRE(WIFEXITED(st));
  CHECK(WEXITSTATUS(st) == 0);
}
