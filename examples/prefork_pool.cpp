// A pre-forked pool of worker processes paced by one shared account.
//
// The parent maps a region, opens the account in it and forks the workers;
// each worker claims its own identity (its pid: required after fork) and
// sends "requests" (a sleep stands in for the HTTP call) through the one
// account, so the pool as a whole stays inside the organisation's limits.
// One worker is killed (SIGKILL) while it holds a slot: the others take the
// slot back at their next scan, through the liveness check below. The
// parent then merges the workers' logs and checks the limits.
//
// Unrelated processes would shm_open a name instead (and ftruncate it to
// region_bytes()), then mmap it MAP_SHARED; everything else is the same.
//
//   tollgate-prefork [--workers N] [--seconds S]
#include <tollgate/shared_account.hpp>
#include <tollgate/models.hpp>

#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

using namespace tollgate;
using pool_account = shared_account<steady_clock>;

namespace {

constexpr std::size_t max_workers = 16, log_cap = 4096;

struct worker_log {
  std::atomic<std::uint64_t> n;
  std::int64_t at[log_cap];  // when each admission was decided
  std::atomic<std::uint64_t> refused, for_slot;  // refusals, and those that named concurrency
};
struct board {
  std::atomic<std::uint64_t> peak_in_flight;
  worker_log w[max_workers];
};

// Alive unless the pid is gone. The parent reaps its workers at once, so a
// dead worker is not left as a zombie that kill() would still find. A pid
// reused within the run is called alive: the safe side (its slot then comes
// back by lease_timeout).
bool alive(std::uint64_t id, void*) {
  return kill(static_cast<pid_t>(id), 0) == 0 || errno != ESRCH;
}

void* map_shared(std::size_t n) {
  void* p = mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  return p == MAP_FAILED ? nullptr : p;
}

[[noreturn]] void worker(pool_account& acc, board& b, std::size_t me, std::chrono::milliseconds run, bool crash) {
  // After fork: this process's own identity, before any admission.
  if (!acc.claim(static_cast<std::uint64_t>(getpid()))) _exit(3);
  static const model_info k26 = *find_model("kimi-k2.6");
  const model_info* model = &k26;
  worker_log& log = b.w[me];
  const auto start = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() - start < run) {
    request r;
    r.model = model;
    r.prompt_tokens = 40;
    r.max_tokens = 60;
    const nanoseconds now = steady_clock::now();
    auto a = acc.try_admit(r, now);
    if (!a) {
      log.refused.fetch_add(1, std::memory_order_relaxed);
      if (a.refused.has(dimension::concurrency)) log.for_slot.fetch_add(1, std::memory_order_relaxed);
      // Wait as told (a slot: a little), at most 50 ms, at least 1 ms.
      const auto w = std::min<nanoseconds>(std::max<nanoseconds>(a.decision.retry_after(), std::chrono::milliseconds(1)),
                                           std::chrono::milliseconds(50));
      std::this_thread::sleep_for(w);
      continue;
    }
    const std::uint64_t i = log.n.load(std::memory_order_relaxed);
    if (i < log_cap) {
      log.at[i] = now.count();
      log.n.store(i + 1, std::memory_order_release);
    }
    std::uint64_t f = acc.in_flight(), seen = b.peak_in_flight.load();
    while (f > seen && !b.peak_in_flight.compare_exchange_weak(seen, f)) {
    }
    if (crash && i == 2) raise(SIGKILL);  // dies holding its slot, at its third admission
    std::this_thread::sleep_for(std::chrono::milliseconds(30));  // the request in flight
    (void)a.lease.settle(usage{40, 0, 50, 0, 0}, steady_clock::now());
    // The next request takes a moment to prepare. (Without any gap, a worker
    // that just released a slot takes it back before the others look: the
    // account is not fair, a waiting_room in each process would queue them.)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  _exit(0);
}

}  // namespace

int main(int argc, char** argv) {
  std::size_t workers = 4;
  long seconds = 2;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--workers") == 0) workers = static_cast<std::size_t>(std::atoi(argv[i + 1]));
    else if (std::strcmp(argv[i], "--seconds") == 0) seconds = std::atol(argv[i + 1]);
  }
  if (workers < 2 || workers > max_workers || seconds < 1 || seconds > 60) {
    std::fprintf(stderr, "usage: tollgate-prefork [--workers 2..16] [--seconds 1..60]\n");
    return 2;
  }

  // The organisation's limits, once for the whole pool: 3 in flight, 60
  // requests and 4,000 tokens per second (a gateway counting per second).
  account_config c;
  c.model = server_model::fixed_window;
  c.concurrency = limit(3);
  c.rpm = limit(60);
  c.tpm = limit(4000);
  c.request_window = std::chrono::seconds(1);
  c.token_window = std::chrono::seconds(1);
  c.lease_timeout = std::chrono::seconds(10);  // the backstop; the liveness check is faster

  void* bytes = map_shared(pool_account::region_bytes());
  auto* b = static_cast<board*>(map_shared(sizeof(board)));
  if (bytes == nullptr || b == nullptr) return 1;
  static pool_account acc;
  shared_account_options o;
  o.identity = static_cast<std::uint64_t>(getpid());
  o.alive = &alive;
  o.scan_interval = std::chrono::milliseconds(20);
  const shared_open_result r = acc.open(bytes, pool_account::region_bytes(), c, o);
  if (!r) {
    std::fprintf(stderr, "open: %s / %s\n", message(r.region), message(r.config));
    return 1;
  }

  std::vector<pid_t> pids;
  for (std::size_t i = 0; i < workers; ++i) {
    const pid_t pid = fork();
    if (pid < 0) return 1;
    if (pid == 0) worker(acc, *b, i, std::chrono::milliseconds(seconds * 1000), i == 0);
    pids.push_back(pid);
  }
  unsigned killed = 0, failed = 0;
  for (std::size_t k = 0; k < workers; ++k) {  // reap each as it ends: no zombie for the liveness check
    int st = 0;
    if (wait(&st) < 0) return 1;
    if (WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL) ++killed;
    else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) ++failed;
  }

  // Merge the logs: the most admissions in any 1 s window.
  std::vector<std::int64_t> all;
  for (std::size_t i = 0; i < workers; ++i) {
    const std::uint64_t n = std::min<std::uint64_t>(b->w[i].n.load(), log_cap);
    std::printf("worker %zu: %llu admitted, %llu refused (%llu for a slot)%s\n", i, static_cast<unsigned long long>(n),
                static_cast<unsigned long long>(b->w[i].refused.load()),
                static_cast<unsigned long long>(b->w[i].for_slot.load()), i == 0 ? ", killed holding a slot" : "");
    all.insert(all.end(), b->w[i].at, b->w[i].at + n);
  }
  std::sort(all.begin(), all.end());
  std::size_t most = 0;
  for (std::size_t lo = 0, hi = 0; hi < all.size(); ++hi) {
    while (all[lo] <= all[hi] - 1000000000) ++lo;
    most = std::max(most, hi - lo + 1);
  }
  const auto s = acc.stats();
  std::printf("pool: %zu admitted in %ld s; most in any 1 s window %zu (limit 60); most in flight %llu (limit 3)\n",
              all.size(), seconds, most, static_cast<unsigned long long>(b->peak_in_flight.load()));
  std::printf("killed worker's slot: %llu reclaimed through the liveness check, %llu by deadline\n",
              static_cast<unsigned long long>(s.reclaimed_dead), static_cast<unsigned long long>(s.reclaimed_by_deadline));
  const bool ok = failed == 0 && killed == 1 && most <= 60 && b->peak_in_flight.load() <= 3 && s.reclaimed_dead == 1;
  std::printf("%s\n", ok ? "the pool stayed within every limit" : "FAILED");
  return ok ? 0 : 1;
}
