// Benchmarks of the core limiters, each paired with a baseline measured in
// the same run: a one-word CAS, clock reads, a bare one-word GCRA, and a
// conventional token bucket under std::mutex. Compare ratios, not absolute times (bench/run.sh prints
// them): shared machines drift.
#include <tollgate/tollgate.hpp>

#include <benchmark/benchmark.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

using namespace tollgate;
using std::chrono::minutes;
using std::chrono::milliseconds;

namespace {

// Supplied time: each thread advances its own reading and, every 64
// iterations, pulls it up to a shared high-water mark so two threads' times
// stay close (a lagging thread would fall behind the window and stop being
// admitted).
struct supplied_time {
  std::atomic<std::int64_t>& hwm;
  std::int64_t now;
  unsigned n = 0;
  explicit supplied_time(std::atomic<std::int64_t>& h) : hwm(h), now(h.load(std::memory_order_relaxed)) {}
  nanoseconds next(std::int64_t step) {
    now += step;
    if ((++n & 63) == 0) {
      // relaxed: a benchmark heuristic; no other memory depends on it.
      std::int64_t h = hwm.load(std::memory_order_relaxed);
      if (h > now)
        now = h;
      else
        hwm.compare_exchange_weak(h, now, std::memory_order_relaxed);
    }
    return nanoseconds(now);
  }
};

// A conventional token bucket: fractional tokens and a last-refill time.
struct plain_bucket {
  double rate, burst, tokens;
  std::int64_t last = 0;
  bool try_acquire(double n, std::int64_t now) {
    if (now > last) {
      tokens += static_cast<double>(now - last) * rate;
      if (tokens > burst) tokens = burst;
      last = now;
    }
    if (tokens < n) return false;
    tokens -= n;
    return true;
  }
};

// ... guarded by a mutex: the usual way to share one.
class mutex_bucket {
 public:
  mutex_bucket(double per_ns, double burst, bool full) : b_{per_ns, burst, full ? burst : 0} {}
  bool try_acquire(double n, std::int64_t now) {
    std::lock_guard<std::mutex> lock(m_);
    return b_.try_acquire(n, now);
  }

 private:
  std::mutex m_;
  plain_bucket b_;
};

void BM_baseline_cas_one_word(benchmark::State& state) {
  static std::atomic<std::uint64_t> word{0};
  for (auto _ : state) {
    std::uint64_t v = word.load(std::memory_order_acquire);
    while (!word.compare_exchange_weak(v, v + 1, std::memory_order_acq_rel, std::memory_order_acquire)) {
    }
    benchmark::DoNotOptimize(v);
  }
}

void BM_baseline_steady_clock_now(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(tollgate::steady_clock::now());
}

void BM_baseline_coarse_clock_now(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(coarse_clock::now());
}

void BM_baseline_mutex_bucket_allow(benchmark::State& state) {
  static mutex_bucket b(1.0, 1e6, true);  // 10^9 per second
  static std::atomic<std::int64_t> hwm{0};
  supplied_time t(hwm);
  std::int64_t admitted = 0;
  for (auto _ : state) admitted += b.try_acquire(1, t.next(4).count()) ? 1 : 0;
  state.counters["admitted"] = benchmark::Counter(static_cast<double>(admitted), benchmark::Counter::kAvgIterations);
}

void BM_baseline_mutex_bucket_deny(benchmark::State& state) {
  static mutex_bucket b(1e-14, 1, false);  // about one a day, starts empty
  std::int64_t admitted = 0;
  for (auto _ : state) admitted += b.try_acquire(1, 1000) ? 1 : 0;
  state.counters["admitted"] = benchmark::Counter(static_cast<double>(admitted), benchmark::Counter::kAvgIterations);
}

void BM_token_bucket_allow_supplied(benchmark::State& state) {
  static token_bucket<manual_clock> b(per_second(1000000000), 1000000, nanoseconds(0));
  static std::atomic<std::int64_t> hwm{0};
  supplied_time t(hwm);
  std::int64_t admitted = 0;
  for (auto _ : state) admitted += b.try_acquire(1, t.next(4)).admitted() ? 1 : 0;
  state.counters["admitted"] = benchmark::Counter(static_cast<double>(admitted), benchmark::Counter::kAvgIterations);
}

void BM_token_bucket_deny_supplied(benchmark::State& state) {
  static token_bucket<manual_clock> b(per_day(1), 1, nanoseconds(0), token_bucket<manual_clock>::start::empty);
  std::int64_t admitted = 0;
  for (auto _ : state) admitted += b.try_acquire(1, nanoseconds(1000)).admitted() ? 1 : 0;
  state.counters["admitted"] = benchmark::Counter(static_cast<double>(admitted), benchmark::Counter::kAvgIterations);
}

void BM_token_bucket_allow_steady(benchmark::State& state) {
  static token_bucket<tollgate::steady_clock> b(per_second(1000000000), 1000000);
  std::int64_t admitted = 0;
  for (auto _ : state) admitted += b.try_acquire(1).admitted() ? 1 : 0;
  state.counters["admitted"] = benchmark::Counter(static_cast<double>(admitted), benchmark::Counter::kAvgIterations);
}

void BM_token_bucket_allow_coarse(benchmark::State& state) {
  static token_bucket<coarse_clock> b(per_second(1000000000), 1000000000);
  std::int64_t admitted = 0;
  for (auto _ : state) admitted += b.try_acquire(1).admitted() ? 1 : 0;
  state.counters["admitted"] = benchmark::Counter(static_cast<double>(admitted), benchmark::Counter::kAvgIterations);
}

// The bare GCRA, written the obvious way: one 64-bit TAT word in ns, the
// interval and burst beside it; load, compute, one CAS. The same interval
// (1 ns) and burst as the bucket's allow case with the same clock, and the
// same clock read, so a ratio to it is what the bucket's exactness, live
// reconfiguration and layout cost.
struct alignas(TOLLGATE_CACHELINE_SIZE) bare_gcra {
  std::atomic<std::uint64_t> tat{0};
  std::uint64_t interval, tau;  // in ns; tau = burst x interval
  bare_gcra(std::uint64_t interval_ns, std::uint64_t burst) : interval(interval_ns), tau(burst * interval_ns) {}
  bool try_acquire(std::int64_t now_ns) {
    const std::uint64_t now = now_ns > 0 ? static_cast<std::uint64_t>(now_ns) : 0;
    // acquire / acq_rel: the orders the bucket's word has, for a fair floor.
    std::uint64_t t = tat.load(std::memory_order_acquire);
    for (;;) {
      const std::uint64_t next = (t > now ? t : now) + interval;
      if (next - now > tau) return false;
      if (tat.compare_exchange_weak(t, next, std::memory_order_acq_rel, std::memory_order_acquire)) return true;
    }
  }
};

void BM_baseline_gcra_allow_supplied(benchmark::State& state) {
  static bare_gcra g(1, 1000000);
  static std::atomic<std::int64_t> hwm{0};
  supplied_time t(hwm);
  std::int64_t admitted = 0;
  for (auto _ : state) admitted += g.try_acquire(t.next(4).count()) ? 1 : 0;
  state.counters["admitted"] = benchmark::Counter(static_cast<double>(admitted), benchmark::Counter::kAvgIterations);
}

void BM_baseline_gcra_allow_steady(benchmark::State& state) {
  static bare_gcra g(1, 1000000);
  static const std::int64_t origin = tollgate::steady_clock::now().count();
  std::int64_t admitted = 0;
  for (auto _ : state) admitted += g.try_acquire(tollgate::steady_clock::now().count() - origin) ? 1 : 0;
  state.counters["admitted"] = benchmark::Counter(static_cast<double>(admitted), benchmark::Counter::kAvgIterations);
}

void BM_baseline_gcra_allow_coarse(benchmark::State& state) {
  static bare_gcra g(1, 1000000000);
  static const std::int64_t origin = coarse_clock::now().count();
  std::int64_t admitted = 0;
  for (auto _ : state) admitted += g.try_acquire(coarse_clock::now().count() - origin) ? 1 : 0;
  state.counters["admitted"] = benchmark::Counter(static_cast<double>(admitted), benchmark::Counter::kAvgIterations);
}

void BM_sliding_window_allow_supplied(benchmark::State& state) {
  // 16,000,000 per 10 ms (sub-windows of 667 us): far above what two threads ask.
  static sliding_window<manual_clock> w(rate(16000000, milliseconds(10)), nanoseconds(0));
  static std::atomic<std::int64_t> hwm{0};
  supplied_time t(hwm);
  std::int64_t admitted = 0;
  for (auto _ : state) admitted += w.try_acquire(1, t.next(4)).admitted() ? 1 : 0;
  state.counters["admitted"] = benchmark::Counter(static_cast<double>(admitted), benchmark::Counter::kAvgIterations);
}

void BM_sliding_window_deny_supplied(benchmark::State& state) {
  static sliding_window<manual_clock> w(per_minute(1), nanoseconds(0));
  static const bool filled = w.try_acquire(1, nanoseconds(0)).admitted();
  benchmark::DoNotOptimize(filled);
  std::int64_t admitted = 0;
  for (auto _ : state) admitted += w.try_acquire(1, nanoseconds(1000)).admitted() ? 1 : 0;
  state.counters["admitted"] = benchmark::Counter(static_cast<double>(admitted), benchmark::Counter::kAvgIterations);
}

void BM_concurrency_acquire_release(benchmark::State& state) {
  static concurrency_limiter c(1000);
  std::int64_t admitted = 0;
  for (auto _ : state) {
    permit p = c.try_acquire();
    admitted += p ? 1 : 0;
  }
  state.counters["admitted"] = benchmark::Counter(static_cast<double>(admitted), benchmark::Counter::kAvgIterations);
}

// Cost of one call from its usage: paired with the integer multiply-adds it
// reduces to (five products and a sum, checked into 64 bits).
void BM_cost_compute(benchmark::State& state) {
  const model_info m = *find_model("kimi-k2.6");
  volatile std::uint64_t prompt = 12000, cached = 3000, completion = 800;
  std::int64_t sink = 0;
  for (auto _ : state) {
    const auto c = cost(m, usage{prompt, cached, completion, 0, 0});
    sink += c.total.nanos();
    benchmark::DoNotOptimize(sink);
  }
}

void BM_baseline_int_muladd(benchmark::State& state) {
  volatile std::uint64_t prompt = 12000, cached = 3000, completion = 800;
  volatile std::uint64_t p_in = 950, p_cached = 160, p_out = 4000;
  std::int64_t sink = 0;
  for (auto _ : state) {
    const std::uint64_t c = (prompt - cached) * p_in + cached * p_cached + completion * p_out;
    sink += static_cast<std::int64_t>(c);
    benchmark::DoNotOptimize(sink);
  }
}

// The account: admit one request in all dimensions and settle it at once.
// The account cases advance supplied time by 20 us a call: windows of 1e9
// per minute count in units of 60 (2^24 - 1 units at most), so faster calls
// would saturate them and measure refusals instead (the `admitted` counter
// shows the share admitted). The parts and the mutex account use the same
// step.
account_config bench_account_config() {
  account_config c;
  c.concurrency = limit(1000000);
  c.rpm = limit(1000000000);
  c.tpm = limit(1000000000);
  c.tpd = limit::unlimited();
  c.model = server_model::sliding_log;  // strict windows
  return c;
}
request bench_request() {
  static const model_info m = *find_model("kimi-k2.6");
  request r;
  r.model = &m;
  r.prompt_tokens = 1;
  r.max_tokens = 1;
  return r;
}

// Admit one request and settle it at once, `state` times, on one account.
void admit_and_settle(benchmark::State& state, account<manual_clock>& a, std::atomic<std::int64_t>& hwm) {
  supplied_time t(hwm);
  const request r = bench_request();
  std::int64_t admitted = 0;
  for (auto _ : state) {
    auto ad = a.try_admit(r, t.next(20000));
    if (ad) {
      ++admitted;
      ad.lease.settle_failed(t.next(0));
    }
  }
  state.counters["admitted"] = benchmark::Counter(static_cast<double>(admitted), benchmark::Counter::kAvgIterations);
}

void BM_account_admit_release_supplied(benchmark::State& state) {
  static account<manual_clock> a(bench_account_config(), nanoseconds(0));
  static std::atomic<std::int64_t> hwm{0};
  admit_and_settle(state, a, hwm);
}

// The same without reclaiming hung leases (lease_timeout zero: no slot
// table), to show what the table costs.
void BM_account_admit_release_no_reclaim(benchmark::State& state) {
  static account<manual_clock> a(
      [] {
        account_config c = bench_account_config();
        c.lease_timeout = nanoseconds(0);
        return c;
      }(),
      nanoseconds(0));
  static std::atomic<std::int64_t> hwm{0};
  admit_and_settle(state, a, hwm);
}

// The in-process account without per-thread credit (the shared account's
// cost with credit off is about this).
void BM_account_admit_release_no_credit(benchmark::State& state) {
  static account<manual_clock> a(
      [] {
        account_config c = bench_account_config();
        c.per_thread_credit = false;
        return c;
      }(),
      nanoseconds(0));
  static std::atomic<std::int64_t> hwm{0};
  admit_and_settle(state, a, hwm);
}

// The shared account (shared_account.hpp) over the same limits, but a
// concurrency of 1,024 (its slot table's size here; the in-process account's
// 1,000,000 would need a table of that many words): one region in this
// process's memory, admit + settle as above. 1,024 is the least limit with
// concurrency credit (kept slot words, account/shared_slot_cache.hpp), as
// in the in-process account.
using bench_shared = shared_account<manual_clock, usd_tag, 1024>;
account_config bench_shared_config() {
  account_config c = bench_account_config();
  c.concurrency = limit(1024);
  return c;
}
struct shared_bench_region {
  std::atomic<std::int64_t> hwm{0};
  std::atomic<int> stop{0};
  alignas(4096) unsigned char bytes[bench_shared::region_bytes()];
};
shared_bench_region* bench_region() {
  // MAP_SHARED, so that a forked process (the two-process case) shares it.
  static shared_bench_region* r = [] {
    void* p = mmap(nullptr, sizeof(shared_bench_region), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) std::abort();
    return new (p) shared_bench_region;
  }();
  return r;
}
bench_shared& bench_shared_account() {
  static bench_shared a;
  static const bool opened = [] {
    shared_account_options o;
    o.identity = static_cast<std::uint64_t>(getpid());
    return static_cast<bool>(a.open(bench_region()->bytes, bench_shared::region_bytes(), bench_shared_config(), o, nanoseconds(0)));
  }();
  if (!opened) std::abort();
  return a;
}
template <class Account>
std::int64_t shared_loop(Account& a, std::atomic<std::int64_t>& hwm, benchmark::State* state, std::atomic<int>* stop) {
  supplied_time t(hwm);
  const request r = bench_request();
  std::int64_t admitted = 0;
  auto once = [&] {
    auto ad = a.try_admit(r, t.next(20000));
    if (ad) {
      ++admitted;
      ad.lease.settle_failed(t.next(0));
    }
  };
  if (state)
    for (auto _ : *state) once();
  else
    while (stop->load(std::memory_order_relaxed) == 0) once();  // relaxed: a lone flag
  return admitted;
}
// Per-thread credit on (the default): the windows' units come from this
// thread's credit line in the region.
void BM_shared_account_admit_release_supplied(benchmark::State& state) {
  bench_shared& a = bench_shared_account();
  const std::int64_t admitted = shared_loop(a, bench_region()->hwm, &state, nullptr);
  state.counters["admitted"] = benchmark::Counter(static_cast<double>(admitted), benchmark::Counter::kAvgIterations);
}
// Another shared account in its own region, its configuration changed by `edit`.
struct other_shared_region {
  std::atomic<std::int64_t> hwm{0};
  alignas(4096) unsigned char bytes[bench_shared::region_bytes()];
};
template <class Edit>
void shared_variant(benchmark::State& state, Edit edit) {
  static other_shared_region* r = new other_shared_region();  // value-initialised: zero bytes, an empty region
  static bench_shared a;
  static const bool opened = [&] {
    shared_account_options o;
    o.identity = static_cast<std::uint64_t>(getpid());
    account_config c = bench_shared_config();
    edit(c);
    return static_cast<bool>(a.open(r->bytes, bench_shared::region_bytes(), c, o, nanoseconds(0)));
  }();
  if (!opened) std::abort();
  const std::int64_t admitted = shared_loop(a, r->hwm, &state, nullptr);
  state.counters["admitted"] = benchmark::Counter(static_cast<double>(admitted), benchmark::Counter::kAvgIterations);
}
// The same with credit off: every admission takes the shared windows' words.
void BM_shared_account_admit_release_no_credit(benchmark::State& state) {
  shared_variant(state, [](account_config& c) { c.per_thread_credit = false; });
}
// Credit on, no concurrency limit: what the window credit alone costs.
void BM_shared_account_admit_release_no_slots(benchmark::State& state) {
  shared_variant(state, [](account_config& c) { c.concurrency = limit::unknown(); });
}
// Credit on, a concurrency limit below 1,024: no slot word is kept, each
// lease takes one and gives it back (two CAS).
void BM_shared_account_admit_release_small_limit(benchmark::State& state) {
  shared_variant(state, [](account_config& c) { c.concurrency = limit(64); });
}
// The same while a second process (forked, with its own identity) runs the
// same loop on the same region for the whole measurement.
void BM_shared_account_two_processes(benchmark::State& state) {
  bench_shared& a = bench_shared_account();
  shared_bench_region* reg = bench_region();
  reg->stop.store(0);
  const pid_t pid = fork();
  if (pid == 0) {
    if (!a.claim(static_cast<std::uint64_t>(getpid()))) _exit(1);
    (void)shared_loop(a, reg->hwm, nullptr, &reg->stop);
    _exit(0);
  }
  const std::int64_t admitted = shared_loop(a, reg->hwm, &state, nullptr);
  reg->stop.store(1);
  if (pid > 0) waitpid(pid, nullptr, 0);
  state.counters["admitted"] = benchmark::Counter(static_cast<double>(admitted), benchmark::Counter::kAvgIterations);
}

// The same dimensions behind one mutex: a conventional account.
class mutex_account {
 public:
  bool admit(std::int64_t now, std::uint64_t tokens) {
    std::lock_guard<std::mutex> lock(m_);
    if (in_flight_ >= 1000000) return false;
    if (!rpm_.try_acquire(1, now) || !tpm_.try_acquire(static_cast<double>(tokens), now)) return false;
    ++in_flight_;
    return true;
  }
  void release() {
    std::lock_guard<std::mutex> lock(m_);
    --in_flight_;
  }

 private:
  std::mutex m_;
  std::uint64_t in_flight_ = 0;
  plain_bucket rpm_{1e9 / 6e10, 1e9, 1e9}, tpm_{1e9 / 6e10, 1e9, 1e9};
};

void BM_baseline_mutex_account(benchmark::State& state) {
  static mutex_account a;
  static std::atomic<std::int64_t> hwm{0};
  supplied_time t(hwm);
  std::int64_t admitted = 0;
  for (auto _ : state) {
    if (a.admit(t.next(20000).count(), 2)) {
      ++admitted;
      a.release();
    }
  }
  state.counters["admitted"] = benchmark::Counter(static_cast<double>(admitted), benchmark::Counter::kAvgIterations);
}

// The sum of the account's parts, called one after the other: a permit, two
// window admissions and their refunds.
void BM_account_parts(benchmark::State& state) {
  static concurrency_limiter c(1000000);
  static sliding_window<manual_clock> rpm(rate(1000000000, std::chrono::minutes(1)), nanoseconds(0));
  static sliding_window<manual_clock> tpm(rate(1000000000, std::chrono::minutes(1)), nanoseconds(0));
  static std::atomic<std::int64_t> hwm{0};
  supplied_time t(hwm);
  for (auto _ : state) {
    const nanoseconds now = t.next(20000);
    permit p = c.try_acquire();
    window_ticket a, b;
    benchmark::DoNotOptimize(rpm.try_acquire(1, now, a));
    benchmark::DoNotOptimize(tpm.try_acquire(2, now, b));
  }
}

void BM_classify_429(benchmark::State& state) {
  const std::string body =
      "{\"error\":{\"message\":\"request reached organization TPM rate limit, current: 64001, limit: 64000\","
      "\"type\":\"rate_limit_reached_error\"}}";
  for (auto _ : state) {
    const error_info e = classify(429, body);
    benchmark::DoNotOptimize(e.limit);
  }
}

void BM_parse_retry_after(benchmark::State& state) {
  const std::string values[] = {"1", "1152", "Mon, 23 Nov 2026 00:00:30 GMT"};
  std::size_t i = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(parse_retry_after(values[i++ % 3], nanoseconds(1795392000000000000LL)));
  }
}

// --- The account's floor: four read-modify-writes per admit + settle ---
// A permit taken and given back and one CAS per window, with no limiter
// logic: on three cache lines (as the account lays them out) and on one (the
// best any layout could do). Against the mutex account they show what
// co-locating the dimensions could gain with two threads.
struct alignas(TOLLGATE_CACHELINE_SIZE) rmw_line {
  std::atomic<std::uint64_t> w[4] = {};
};
void cas_increment(std::atomic<std::uint64_t>& a) {
  // acq_rel: stands in for a limiter's CAS, which has these orders.
  std::uint64_t v = a.load(std::memory_order_acquire);
  while (!a.compare_exchange_weak(v, v + 1, std::memory_order_acq_rel, std::memory_order_acquire)) {
  }
}
void BM_account_floor_three_lines(benchmark::State& state) {
  static rmw_line lines[3];
  for (auto _ : state) {
    lines[0].w[0].fetch_add(1, std::memory_order_acq_rel);  // acq_rel: as a permit's take
    cas_increment(lines[1].w[0]);
    cas_increment(lines[2].w[0]);
    lines[0].w[0].fetch_sub(1, std::memory_order_acq_rel);  // and give back
  }
}
void BM_account_floor_one_line(benchmark::State& state) {
  static rmw_line line;
  for (auto _ : state) {
    line.w[0].fetch_add(1, std::memory_order_acq_rel);  // as above, every word on one line
    cas_increment(line.w[1]);
    cas_increment(line.w[2]);
    line.w[0].fetch_sub(1, std::memory_order_acq_rel);
  }
}

// --- Other ways to hold a strict window, measured for the trade-off ---

// (a) One 64-bit word: a 16-bit head slot and four 12-bit slot counts (K = 3).
// One CAS decides, but L <= 4,095 and four counters admit 3/4 of L per W.
class packed_word_window {
 public:
  packed_word_window(std::uint64_t limit, std::int64_t width_ns) : limit_(limit), width_(width_ns) {}
  bool try_acquire(std::uint64_t n, std::int64_t now) {
    const std::uint64_t s = static_cast<std::uint64_t>(now / width_) & 0xFFFF;
    std::uint64_t w = word_.load(std::memory_order_acquire);
    for (;;) {
      const std::uint64_t h = w >> 48;
      std::uint64_t counts = w & 0xFFFFFFFFFFFFULL;
      const std::uint64_t gap = (s - h) & 0xFFFF;
      if (gap > 0x8000) return false;  // stale
      for (std::uint64_t j = 1; j <= gap && j <= 4; ++j) counts &= ~(0xFFFULL << (12 * ((h + j) & 3)));
      std::uint64_t sum = 0;
      for (int j = 0; j < 4; ++j) sum += (counts >> (12 * j)) & 0xFFF;
      if (sum + n > limit_) return false;
      counts += n << (12 * (s & 3));
      if (word_.compare_exchange_weak(w, (s << 48) | counts, std::memory_order_acq_rel, std::memory_order_acquire))
        return true;
    }
  }

 private:
  std::atomic<std::uint64_t> word_{0};
  std::uint64_t limit_;
  std::int64_t width_;
};

void BM_window_alt_packed_word_allow(benchmark::State& state) {
  static packed_word_window w(4095, 2000);  // 2 us sub-windows: 500 asks each at 4 ns apart, all admitted
  static std::atomic<std::int64_t> hwm{0};
  supplied_time t(hwm);
  std::int64_t admitted = 0;
  for (auto _ : state) admitted += w.try_acquire(1, t.next(4).count()) ? 1 : 0;
  state.counters["admitted"] = benchmark::Counter(static_cast<double>(admitted), benchmark::Counter::kAvgIterations);
}

// (b) A 16-byte CAS, the floor of any window whose state is two words updated
// together (through libatomic: std::atomic of 16 bytes is not lock-free here).
void BM_window_alt_cas16_increment(benchmark::State& state) {
  alignas(16) static unsigned __int128 word = 0;
  for (auto _ : state) {
    unsigned __int128 v = __atomic_load_n(&word, __ATOMIC_ACQUIRE);
    while (!__atomic_compare_exchange_n(&word, &v, v + 1, true, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
    }
    benchmark::DoNotOptimize(v);
  }
}

}  // namespace

// Keyed admission: each thread cycles over its own 1024 keys of a 4096-entry
// table (one SipHash-1-3, a probe, a pin, the bucket's CAS, an unpin), against
// the same bucket without a key and a std::mutex around a std::unordered_map
// of conventional buckets holding the same keys: with std::hash (no keyed
// hash: the baseline), and with the table's keyed hash.
constexpr std::uint64_t keyed_keys_per_thread = 1024;

void BM_keyed_allow_supplied(benchmark::State& state) {
  static keyed_buckets<manual_clock> t(4096, {{per_second(1000000000), 1000000}}, hash_seed{0x1234, 0x5678},
                                       nanoseconds(0));
  static std::atomic<std::int64_t> hwm{0};
  supplied_time tm(hwm);
  const std::uint64_t base = static_cast<std::uint64_t>(state.thread_index()) * keyed_keys_per_thread;
  std::uint64_t i = 0;
  std::int64_t admitted = 0;
  for (auto _ : state) {
    admitted += t.try_acquire(base + (i++ & (keyed_keys_per_thread - 1)), 0, 1, tm.next(4)).admitted() ? 1 : 0;
  }
  state.counters["admitted"] = benchmark::Counter(static_cast<double>(admitted), benchmark::Counter::kAvgIterations);
}

// Diagnostics for the two-thread case (docs/keyed.md, "Two threads"): each
// thread's time its own, and each thread's keys in its own half of the table.
//
// A thread's own time: no shared high-water mark (a thread only ever touches
// its own keys). It starts from the mark and raises it at the end, so that
// the benchmark's later runs on the same table start past what earlier ones left.
struct own_time {
  std::atomic<std::int64_t>& hwm;
  std::int64_t now;
  explicit own_time(std::atomic<std::int64_t>& h) : hwm(h), now(h.load(std::memory_order_relaxed)) {}
  ~own_time() {
    // relaxed: a benchmark heuristic, as in supplied_time.
    std::int64_t h = hwm.load(std::memory_order_relaxed);
    while (h < now && !hwm.compare_exchange_weak(h, now, std::memory_order_relaxed)) {
    }
  }
  nanoseconds next(std::int64_t step) { return nanoseconds(now += step); }
};

// Keys whose homes (the table's: hash x capacity / 2^64) lie in one half of a
// 4096-entry table, 32 entries clear of either end, so that with a probe
// window of 16 no line, nor pair of adjacent lines, holds both halves' entries.
std::vector<std::uint64_t> keyed_keys_in_half(std::size_t half) {
  const sip_key_hash h{hash_seed{0x1234, 0x5678}};
  std::vector<std::uint64_t> keys;
  for (std::uint64_t id = 0; keys.size() < keyed_keys_per_thread; ++id) {
    const std::size_t home = static_cast<std::size_t>((static_cast<unsigned __int128>(h(id)) * 4096) >> 64);
    if (home >= half * 2048 + 32 && home < half * 2048 + 2048 - 32) keys.push_back(id);
  }
  return keys;
}

template <bool Disjoint, bool OwnTime>
void keyed_allow_variant(benchmark::State& state) {
  static keyed_buckets<manual_clock> t(4096, {{per_second(1000000000), 1000000}}, hash_seed{0x1234, 0x5678},
                                       nanoseconds(0));
  static std::atomic<std::int64_t> hwm{0};
  supplied_time shared(hwm);
  own_time own(hwm);
  std::vector<std::uint64_t> keys(keyed_keys_per_thread);
  const std::uint64_t base = static_cast<std::uint64_t>(state.thread_index()) * keyed_keys_per_thread;
  if (Disjoint)
    keys = keyed_keys_in_half(static_cast<std::size_t>(state.thread_index()) & 1);
  else
    for (std::uint64_t k = 0; k < keyed_keys_per_thread; ++k) keys[k] = base + k;
  std::uint64_t i = 0;
  std::int64_t admitted = 0;
  for (auto _ : state) {
    const nanoseconds now = OwnTime ? own.next(4) : shared.next(4);
    admitted += t.try_acquire(keys[i++ & (keyed_keys_per_thread - 1)], 0, 1, now).admitted() ? 1 : 0;
  }
  state.counters["admitted"] = benchmark::Counter(static_cast<double>(admitted), benchmark::Counter::kAvgIterations);
}
void BM_keyed_allow_disjoint(benchmark::State& state) { keyed_allow_variant<true, false>(state); }
void BM_keyed_allow_own_time(benchmark::State& state) { keyed_allow_variant<false, true>(state); }
void BM_keyed_allow_disjoint_own_time(benchmark::State& state) { keyed_allow_variant<true, true>(state); }

template <class MapHash = std::hash<std::uint64_t>>
class mutex_map {
 public:
  bool try_acquire(std::uint64_t key, std::int64_t now) {
    std::lock_guard<std::mutex> lock(m_);
    auto it = map_.find(key);
    if (it == map_.end()) it = map_.emplace(key, plain_bucket{1.0, 1e6, 1e6}).first;
    return it->second.try_acquire(1, now);
  }

 private:
  std::mutex m_;
  std::unordered_map<std::uint64_t, plain_bucket, MapHash> map_;
};

// The table's keyed hash as the map's hasher.
struct keyed_map_hash {
  sip_key_hash h{hash_seed{0x1234, 0x5678}};
  std::size_t operator()(std::uint64_t k) const noexcept { return static_cast<std::size_t>(h(k)); }
};

template <class MapHash>
void mutex_map_allow(benchmark::State& state) {
  static mutex_map<MapHash> m;
  static std::atomic<std::int64_t> hwm{0};
  supplied_time tm(hwm);
  const std::uint64_t base = static_cast<std::uint64_t>(state.thread_index()) * keyed_keys_per_thread;
  std::uint64_t i = 0;
  std::int64_t admitted = 0;
  for (auto _ : state) admitted += m.try_acquire(base + (i++ & (keyed_keys_per_thread - 1)), tm.next(4).count()) ? 1 : 0;
  state.counters["admitted"] = benchmark::Counter(static_cast<double>(admitted), benchmark::Counter::kAvgIterations);
}

void BM_baseline_mutex_map_allow(benchmark::State& state) { mutex_map_allow<std::hash<std::uint64_t>>(state); }
void BM_baseline_mutex_map_keyed_hash_allow(benchmark::State& state) { mutex_map_allow<keyed_map_hash>(state); }

BENCHMARK(BM_classify_429);
BENCHMARK(BM_parse_retry_after);
BENCHMARK(BM_cost_compute);
BENCHMARK(BM_baseline_int_muladd);

// Thread counts: 1 and 2 here (two cores); add ->Threads(4) etc. on bigger machines.
#define TOLLGATE_BENCH(fn) BENCHMARK(fn)->Threads(1)->Threads(2)->UseRealTime()
TOLLGATE_BENCH(BM_baseline_cas_one_word);
TOLLGATE_BENCH(BM_baseline_steady_clock_now);
TOLLGATE_BENCH(BM_baseline_coarse_clock_now);
TOLLGATE_BENCH(BM_baseline_mutex_bucket_allow);
TOLLGATE_BENCH(BM_baseline_mutex_bucket_deny);
TOLLGATE_BENCH(BM_token_bucket_allow_supplied);
TOLLGATE_BENCH(BM_token_bucket_deny_supplied);
TOLLGATE_BENCH(BM_token_bucket_allow_steady);
TOLLGATE_BENCH(BM_token_bucket_allow_coarse);
TOLLGATE_BENCH(BM_baseline_gcra_allow_supplied);
TOLLGATE_BENCH(BM_baseline_gcra_allow_steady);
TOLLGATE_BENCH(BM_baseline_gcra_allow_coarse);
TOLLGATE_BENCH(BM_sliding_window_allow_supplied);
TOLLGATE_BENCH(BM_sliding_window_deny_supplied);
TOLLGATE_BENCH(BM_concurrency_acquire_release);
TOLLGATE_BENCH(BM_account_admit_release_supplied);
TOLLGATE_BENCH(BM_account_admit_release_no_reclaim);
TOLLGATE_BENCH(BM_account_admit_release_no_credit);
TOLLGATE_BENCH(BM_shared_account_admit_release_supplied);
TOLLGATE_BENCH(BM_shared_account_admit_release_no_credit);
TOLLGATE_BENCH(BM_shared_account_admit_release_no_slots);
TOLLGATE_BENCH(BM_shared_account_admit_release_small_limit);
BENCHMARK(BM_shared_account_two_processes)->UseRealTime();
TOLLGATE_BENCH(BM_baseline_mutex_account);
TOLLGATE_BENCH(BM_account_parts);
TOLLGATE_BENCH(BM_account_floor_three_lines);
TOLLGATE_BENCH(BM_account_floor_one_line);
TOLLGATE_BENCH(BM_window_alt_packed_word_allow);
TOLLGATE_BENCH(BM_window_alt_cas16_increment);
TOLLGATE_BENCH(BM_keyed_allow_supplied);
TOLLGATE_BENCH(BM_keyed_allow_disjoint);
TOLLGATE_BENCH(BM_keyed_allow_own_time);
TOLLGATE_BENCH(BM_keyed_allow_disjoint_own_time);
TOLLGATE_BENCH(BM_baseline_mutex_map_allow);
TOLLGATE_BENCH(BM_baseline_mutex_map_keyed_hash_allow);

int main(int argc, char** argv) {
  // glibc skips the mutex's atomic instructions in a process that has never
  // started a thread: start one so the mutex baseline pays what it does in
  // real programs.
  std::thread([] {}).join();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
