// A small demo of the limiters in virtual time: a swarm of agents shares one
// account limited to 3 requests per minute and 1 request in flight (the
// Tier0 row of Kimi's tables). Each agent sends one request. Without pacing
// they all fire at once and the server rejects nearly all of them; paced by
// tollgate (a concurrency permit plus an evenly spaced RPM budget with a
// one-request margin), none is rejected.
//
//   tollgate-demo [--agents N]
#include <tollgate/tollgate.hpp>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <string>
#include <vector>

using namespace tollgate;
using std::chrono::duration_cast;
using std::chrono::milliseconds;
using std::chrono::minutes;
using std::chrono::seconds;

namespace {
// The server, as strict as any model: at most 3 in any 60 s, 1 in flight.
struct server {
  std::deque<nanoseconds> log;
  nanoseconds busy_until{0};
  bool accept(nanoseconds t, nanoseconds latency) {
    while (!log.empty() && log.front() <= t - minutes(1)) log.pop_front();
    if (log.size() >= 3 || t < busy_until) return false;
    log.push_back(t);
    busy_until = t + latency;
    return true;
  }
};

std::string clock_text(nanoseconds t) {
  const long long s = static_cast<long long>(duration_cast<seconds>(t).count());
  char buf[32];
  std::snprintf(buf, sizeof buf, "%lldh%02lldm%02llds", s / 3600, (s / 60) % 60, s % 60);
  return buf;
}
}  // namespace

int main(int argc, char** argv) {
  long agents = 300;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--agents") == 0 && i + 1 < argc) {
      char* end = nullptr;
      agents = std::strtol(argv[++i], &end, 10);
      if (!end || *end != '\0' || agents <= 0 || agents > 1000000) {
        std::fprintf(stderr, "tollgate-demo: --agents needs a positive number\n");
        return 2;
      }
    } else {
      std::fprintf(stderr, "usage: tollgate-demo [--agents N]\n");
      return 2;
    }
  }
  const nanoseconds latency = seconds(4);

  // Unpaced: every agent fires at t = 0; the server takes one.
  server s1;
  long rejected = 0;
  for (long a = 0; a < agents; ++a)
    if (!s1.accept(nanoseconds(0), latency)) ++rejected;
  std::printf("unpaced: %ld agents fire at once: %ld rejected (429)\n", agents, rejected);

  // Paced: one shared account; each agent asks, waits exactly retry_after.
  concurrency_limiter in_flight(1);
  token_bucket<manual_clock> rpm(rate(2, minutes(1)), 1, nanoseconds(0));  // 3 RPM with a margin of 1
  server s2;
  long paced_rejected = 0;
  nanoseconds now{0}, last{0};
  std::vector<permit> held;
  nanoseconds release_at{0};
  for (long a = 0; a < agents; ++a) {
    for (;;) {
      if (!held.empty() && now >= release_at) held.clear();  // the response arrived
      permit p = in_flight.try_acquire();
      if (!p) {
        now = release_at;
        continue;
      }
      const decision d = rpm.try_acquire(1, now);
      if (!d) {
        now += d.retry_after();  // the permit is returned on scope exit
        continue;
      }
      if (!s2.accept(now, latency)) ++paced_rejected;
      held.push_back(std::move(p));
      release_at = now + latency;
      last = now;
      break;
    }
  }
  std::printf("paced:   %ld agents, last request sent at %s, paced: %ld rejected (429)\n", agents,
              clock_text(last).c_str(), paced_rejected);
  return paced_rejected == 0 ? 0 : 1;
}
