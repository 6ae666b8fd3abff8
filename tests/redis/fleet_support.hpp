// Test support for the Redis fleet tests: a chunked fleet's worker thread
// and its records, and forked worker processes (1, 2, 1,
// 2 threads) that write fixed-size records into one pipe, worker 0 first
// and alone until it has written one record, then the others; worker 0 is
// killed (SIGKILL) a given time later. Bounded: 5 s for worker 0's first
// record, 30 s for the whole log.
#ifndef TOLLGATE_TESTS_REDIS_FLEET_SUPPORT_HPP
#define TOLLGATE_TESTS_REDIS_FLEET_SUPPORT_HPP

#include <poll.h>
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <thread>
#include <vector>

#include "../account_support.hpp"
#include "../support.hpp"
#include "redis_support.hpp"

#include <tollgate/redis/account.hpp>

namespace tgredis {

// One record of a chunked fleet's log.
struct chunk_record {
  char kind;  // 'A' admitted (from a chunk or not), 'S' a thread's summary
  std::uint32_t worker;
  std::int64_t t_us;     // 'A': the server time it stands for; 'S': script calls
  std::uint64_t tokens;  // 'A': tokens; 'S': refusals
  std::uint64_t local;   // 'A': 1 when spent from a chunk; 'S': admissions
};

inline void put_record(int fd, const chunk_record& r) {
  const ssize_t k = ::write(fd, &r, sizeof r);  // below PIPE_BUF: one atomic write
  (void)k;
}

// One thread of a chunked fleet at the server's time, on account `name`:
// admit, settle (at most what was reserved) or drop, and pause up to 2 ms
// after `pause_percent` of its admissions; refused, wait what it was told
// plus a random part of it (up to 1 / `spread` of it), 50 ms at most. The
// victim stops after its first admission, holding its chunk until killed.
inline void chunk_worker(int port, int fd, std::uint32_t worker, std::uint64_t seed, bool victim, int run_ms,
                         const char* name, const tollgate::account_config& c, const tollgate::redis::options& o,
                         unsigned pause_percent, std::uint64_t spread) {
  client conn(port);
  std::uint64_t calls = 0;
  tollgate::redis::account<exec> a(name, c, exec{&conn, &calls}, o);
  tgtest::rng g(seed);
  std::uint64_t refusals = 0, admitted = 0;
  const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(run_ms);
  while (std::chrono::steady_clock::now() < end) {
    auto x = a.try_admit(tgtest::req(g.between(1, 30), g.between(1, 30)));
    if (x) {
      ++admitted;
      put_record(fd, chunk_record{'A', worker, x.server_now_us, x.tokens, x.lease.from_chunk() ? 1u : 0u});
      if (victim) {
        for (;;) std::this_thread::sleep_for(std::chrono::milliseconds(20));  // holds it until killed
      }
      if (g.chance(50)) x.lease.settle(tollgate::usage{g.between(0, x.tokens), 0, 0, 0, 0});
      else x.lease.drop();
      if (g.chance(pause_percent)) std::this_thread::sleep_for(std::chrono::microseconds(g.between(0, 2000)));
      continue;
    }
    ++refusals;
    std::int64_t wait_us = x.d.retry_after().count() / 1000;
    if (wait_us <= 0) wait_us = static_cast<std::int64_t>(g.between(200, 1000));
    wait_us += static_cast<std::int64_t>(g.between(0, static_cast<std::uint64_t>(wait_us) / spread));
    std::this_thread::sleep_for(std::chrono::microseconds(wait_us < 50000 ? wait_us : 50000));
  }
  a.release_chunk();
  a.flush();
  put_record(fd, chunk_record{'S', worker, static_cast<std::int64_t>(calls), refusals, admitted});
}

template <class Record>
struct fleet_log {
  std::vector<Record> records;
  bool victim_killed = false;  // worker 0 ended by the SIGKILL
  int others_ok = 0;           // workers 1-3 that exited with 0
  bool forked = true;
};

// work(fd, thread_index, seed, victim) runs in each worker thread; thread
// indices are worker * 2 + k, seeds seed * 31 + worker * 7 + k.
template <class Record, class Work>
fleet_log<Record> run_fleet(std::uint64_t seed, int kill_after_ms, Work work) {
  fleet_log<Record> out;
  int pipefd[2];
  if (::pipe(pipefd) != 0) {
    out.forked = false;
    return out;
  }
  const int threads_of[4] = {1, 2, 1, 2};
  std::vector<pid_t> kids;
  auto spawn = [&](std::uint32_t w) {
    const pid_t p = ::fork();
    if (p == 0) {
      ::close(pipefd[0]);
      std::vector<std::thread> ts;
      for (int k = 0; k < threads_of[w]; ++k)
        ts.emplace_back(work, pipefd[1], w * 2 + static_cast<std::uint32_t>(k),
                        seed * 31 + w * 7 + static_cast<std::uint64_t>(k), w == 0);
      for (auto& t : ts) t.join();
      ::_exit(0);
    }
    return p;
  };
  auto read_one = [&](int timeout_ms) {  // false at the end of every writer
    pollfd pf{pipefd[0], POLLIN, 0};
    if (::poll(&pf, 1, timeout_ms) <= 0) return true;
    Record r;
    const ssize_t k = ::read(pipefd[0], &r, sizeof r);
    if (k == 0) return false;
    if (k == static_cast<ssize_t>(sizeof r)) out.records.push_back(r);
    return true;
  };
  kids.push_back(spawn(0));
  const auto first = std::chrono::steady_clock::now();
  while (kids.back() > 0 && out.records.empty() && std::chrono::steady_clock::now() - first < std::chrono::seconds(5))
    read_one(100);
  for (std::uint32_t w = 1; w < 4; ++w) kids.push_back(spawn(w));
  ::close(pipefd[1]);
  for (pid_t p : kids) out.forked = out.forked && p > 0;
  const auto start = std::chrono::steady_clock::now();
  bool killed = false;
  for (;;) {
    const auto el = std::chrono::steady_clock::now() - start;
    if (!killed && el > std::chrono::milliseconds(kill_after_ms)) {
      if (kids[0] > 0) ::kill(kids[0], SIGKILL);
      killed = true;
    }
    if (el > std::chrono::seconds(30) || !read_one(100)) break;
  }
  ::close(pipefd[0]);
  for (std::size_t i = 0; i < kids.size(); ++i) {
    if (kids[i] <= 0) continue;
    int st = 0;
    if (i == 0) ::kill(kids[0], SIGKILL);  // a no-op when it is dead
    ::waitpid(kids[i], &st, 0);
    if (i == 0) out.victim_killed = WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL;
    else if (WIFEXITED(st) && WEXITSTATUS(st) == 0) ++out.others_ok;
  }
  return out;
}

}  // namespace tgredis

#endif
