// A gateway in front of one organisation's account: thousands of end users
// on two plans, each user limited by its plan (keyed_buckets), every request
// also inside the organisation's limits (account), all or nothing.
//
// It runs ten simulated minutes on a manual clock, then checks that no user
// got more than its plan allows over the run and prints what was refused
// and why.
//   tollgate-gateway [--users N]
#include <tollgate/tollgate.hpp>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

using namespace tollgate;

namespace {

// splitmix64: a small deterministic generator for the simulated traffic.
struct rng {
  std::uint64_t s;
  std::uint64_t next() {
    std::uint64_t z = (s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }
};

struct plan {
  const char* name;
  std::uint64_t per_minute;
  std::uint64_t burst;
};

}  // namespace

int main(int argc, char** argv) {
  std::uint64_t users = 5000;
  for (int i = 1; i + 1 < argc; ++i)
    if (std::strcmp(argv[i], "--users") == 0) users = std::strtoull(argv[i + 1], nullptr, 10);
  if (users == 0) {
    std::fprintf(stderr, "gateway: --users must be at least 1\n");
    return 2;
  }

  // Class 0: the free plan; class 1: the pro plan (every tenth user).
  const plan plans[2] = {{"free", 2, 2}, {"pro", 20, 5}};
  // 4096 entries of 72 bytes: 288 KiB whatever the number of users. A user
  // holds an entry only while its bucket owes (a minute or so after its last
  // request on the free plan), so the table needs room for the users active
  // at once, not for all of them.
  keyed_buckets<manual_clock> keys(4096,
                                   {{per_minute(plans[0].per_minute), plans[0].burst},
                                    {per_minute(plans[1].per_minute), plans[1].burst}},
                                   hash_seed{0x243F6A8885A308D3ULL, 0x13198A2E03707344ULL}, nanoseconds(0));

  account_config c;
  c.concurrency = limit(200);
  c.rpm = limit(1200);
  c.tpm = limit(10000000);
  c.tpd = limit(100000000);
  c.model = server_model::sliding_log;
  c.max_request_tokens = 8000;
  account<manual_clock> acc(c, nanoseconds(0));
  static const model_info model = *find_model("kimi-k2.6");
  request r;
  r.model = &model;
  r.prompt_tokens = 1500;
  r.max_tokens = 500;

  rng g{42};
  std::vector<std::uint64_t> admitted(users, 0);
  std::uint64_t ok = 0, by_key = 0, by_account = 0, full = 0;
  const std::int64_t minute = 60000000000LL, run = 10 * minute, step = 20000000;  // a request every 20 ms
  for (std::int64_t now = 0; now < run; now += step) {
    // Most traffic comes from a few hundred active users at a time.
    const std::uint64_t user = (g.next() % 100 < 80) ? (static_cast<std::uint64_t>(now / minute) * 300 + g.next() % 300) % users
                                                     : g.next() % users;
    const std::size_t cls = user % 10 == 0 ? 1 : 0;
    auto a = admit_keyed(keys, acc, user, cls, 1, r, nanoseconds(now));
    if (a) {
      ++ok;
      ++admitted[user];
      // The response came back at once with its usage.
      a.account.lease.settle(usage{1500, 0, 300, 0, 0}, nanoseconds(now));
    } else if (a.key.table_full()) {
      ++full;
    } else if (!a.account_asked) {
      ++by_key;
    } else {
      ++by_account;
    }
  }

  // Over the run, a user can get at most burst + per_minute x minutes.
  std::uint64_t over = 0;
  for (std::uint64_t u = 0; u < users; ++u) {
    const plan& p = plans[u % 10 == 0 ? 1 : 0];
    if (admitted[u] > p.burst + p.per_minute * 10) ++over;
  }
  std::printf("gateway: %llu users, %llu requests over 10 minutes\n", static_cast<unsigned long long>(users),
              static_cast<unsigned long long>(run / step));
  std::printf("  admitted %llu; refused by the user's plan %llu, by the account %llu, table full %llu\n",
              static_cast<unsigned long long>(ok), static_cast<unsigned long long>(by_key),
              static_cast<unsigned long long>(by_account), static_cast<unsigned long long>(full));
  std::printf("  table: %zu entries of %zu bytes (%zu KiB)\n", keys.capacity(), keys.bytes_per_entry(),
              keys.capacity() * keys.bytes_per_entry() / 1024);
  std::printf("  %llu users over their plan\n", static_cast<unsigned long long>(over));
  return over == 0 ? 0 : 1;
}
