// The Redis account's throughput beside a reference one-key GCRA script (the
// common open-source design: one EVALSHA per request, the server's TIME, one
// string key with its expiry), measured in the same run against one local
// redis-server that this program starts on 127.0.0.1 (a free port, no
// persistence) and stops through its pid.
//
// For 1, 2 and 4 forked processes, each with its own connection, for a fixed
// time: admissions a second, round trips (commands sent) per admitted and
// settled request, p50 and p99 of one admission's call. The account decides
// concurrency, RPM, TPM, TPD and a budget at once; its limits are high enough
// that every request is admitted (the admission path is what is measured),
// and each admitted request settles at once (its settlement carried by the
// next call, as a worker that settles before its next request does).
// Beside them, the chunked mode (options::chunk_parts, redis/chunk.hpp) on the
// same five dimensions with strict windows, with chunks of 10 and of 100
// requests (a slot each, reused by each request in turn, and money for more
// than the chunk's requests): one call per chunk, the rest spent in the
// process; and that account without chunks. Each round runs the reference
// and then each account row, alternating; a row's ratio is the median of its
// rounds' ratios to the same round's reference, with their range.
//
// Usage: tollgate_redis_bench [seconds per run, default 2] [rounds, default 3]
//   [policy: strict (sliding_log, the default here) or spaced (server model
//   unknown, the library's default: spaced buckets for RPM and TPM, with no
//   spacing margin so that the spacing does not bound the rate; RPM 100 M
//   and TPM 800 M a minute, within what the spaced policy takes; its chunked
//   rows are that account in slices of 10 and 100 ms of the buckets' time;
//   or learn: the same rows under server_model::learn, which at these
//   limits starts spaced: learn's words and phases beside the buckets)]
// Bounded: every run stops at its time (3 x 5 x rounds runs in all); the
// server is killed on exit.
#include "../tests/redis/redis_support.hpp"

#include <tollgate/account/config.hpp>
#include <tollgate/models.hpp>
#include <tollgate/redis/account.hpp>

#include <sys/utsname.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

using namespace tollgate;
namespace tr = tollgate::redis;
using tgredis::client;
using tgredis::server;

namespace {

// The reference: GCRA on one key (theoretical arrival time), at the server's
// clock, in µs. One call per request; a refusal writes nothing.
constexpr const char* gcra = R"lua(
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local emission, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local allow_at = tat + emission - burst
if allow_at > now then return {0, allow_at - now} end
local new = tat + emission
redis.call('SET', KEYS[1], string.format('%.0f', new), 'PX', math.ceil((new - now) / 1000) + 1)
return {1, 0}
)lua";

struct counting_exec {
  client* c;
  std::uint64_t* calls;
  tr::reply operator()(const std::vector<std::string>& argv) const {
    ++*calls;
    return c->call(argv);
  }
};

struct result {
  std::uint64_t admitted = 0, refused = 0, calls = 0, errors = 0;
  std::vector<std::uint32_t> lat_ns;  // per admission call, capped at 4 s
};

using steady = std::chrono::steady_clock;

std::uint32_t since_ns(steady::time_point t0) {
  const auto d = std::chrono::duration_cast<std::chrono::nanoseconds>(steady::now() - t0).count();
  return static_cast<std::uint32_t>(std::min<long long>(d, 4000000000LL));
}

bool g_spaced = false;
bool g_learn = false;  // "learn": the spaced rows under server_model::learn (spaced from the start at these limits)

account_config account_under_test() {
  account_config c;
  c.model = g_learn ? server_model::learn : g_spaced ? server_model::unknown : server_model::sliding_log;
  c.concurrency = limit(1000000);
  c.rpm = limit(g_spaced ? 100000000 : 1000000000);  // spaced: 600 ns apart (1e9 would be finer than 0.1 %)
  c.tpm = limit(g_spaced ? 800000000 : 1000000000000);
  if (g_spaced) c.spacing_margin = nanoseconds(0);
  c.tpd = limit(1000000000000000);
  c.budget = usd::from_nanos(std::int64_t(1) << 50);
  c.lease_timeout = std::chrono::seconds(60);
  return c;
}

// The chunked rows' account: the account's five dimensions with strict
// windows (RPM 10^9, TPM 10^12, TPD 10^15), so that every request is
// admitted; chunk_parts makes a chunk of `chunk` requests (its tokens, a
// (10^9 / chunk)th of TPM, and its money, of the budget, cover more) and
// one slot.
account_config chunked_under_test() {
  account_config c;
  c.model = server_model::sliding_log;
  c.concurrency = limit(1000000);
  c.rpm = limit(1000000000);
  c.tpm = limit(1000000000000);
  c.tpd = limit(1000000000000000);
  c.budget = usd::from_nanos(std::int64_t(1) << 50);
  c.lease_timeout = std::chrono::seconds(60);
  return c;
}
// chunk 1: that account without chunked mode (one call a request).
// Spaced (sliced): the spaced account with chunks of `chunk` ms of its
// buckets' time (RPM's minute in 60,000 / chunk parts), each a slice one
// process spaces its requests in, 600 ns apart, with no call.
bool sliced(unsigned chunk) { return g_spaced && chunk > 1; }
tr::options chunk_options(unsigned chunk) {
  tr::options o;
  o.chunk_parts = chunk <= 1 ? 0 : sliced(chunk) ? 60000u / chunk : 1000000000u / chunk;
  return o;
}
account_config config_of(unsigned chunk) {
  return chunk == 0 || sliced(chunk) ? account_under_test() : chunked_under_test();
}
const char* name_of(unsigned chunk) { return chunk == 0 ? "bench" : sliced(chunk) ? "bench_slice" : "bench_chunk"; }

result run_account(int port, const char* name, double seconds, unsigned chunk) {
  result r;
  client conn(port);
  if (!conn.connected()) return r;
  counting_exec ex{&conn, &r.calls};
  tr::account<counting_exec> a(name, config_of(chunk), ex, chunk_options(chunk));
  static const model_info k26 = *find_model("kimi-k2.6");
  request q;
  q.model = &k26;
  q.prompt_tokens = 100;
  q.max_tokens = 50;
  r.lat_ns.reserve(1 << 20);
  const auto end = steady::now() + std::chrono::duration<double>(seconds);
  while (steady::now() < end) {
    const auto t0 = steady::now();
    auto x = a.try_admit(q);
    if (r.lat_ns.size() < (1u << 22)) r.lat_ns.push_back(since_ns(t0));
    if (x.how != tr::outcome::ok) {
      ++r.errors;
      continue;
    }
    if (!x) {
      ++r.refused;
      continue;
    }
    ++r.admitted;
    x.lease.settle(usage{100, 50, 0, 0, 0});
  }
  a.release_chunk();
  a.flush();  // the last settlement (and chunk): counted as the run's round trips
  return r;
}

result run_gcra(int port, const std::string& sha, double seconds) {
  result r;
  client conn(port);
  if (!conn.connected()) return r;
  const std::vector<std::string> argv = {"EVALSHA", sha, "1", "gcra:{bench}", "1", "1000000000"};
  r.lat_ns.reserve(1 << 20);
  const auto end = steady::now() + std::chrono::duration<double>(seconds);
  while (steady::now() < end) {
    const auto t0 = steady::now();
    const tr::reply x = conn.call(argv);
    ++r.calls;
    if (r.lat_ns.size() < (1u << 22)) r.lat_ns.push_back(since_ns(t0));
    if (x.type != tr::reply::kind::array || x.elements.size() != 2) {
      ++r.errors;
      continue;
    }
    if (x.elements[0].integer == 1) ++r.admitted;
    else ++r.refused;
  }
  return r;
}

// One forked run of `procs` workers; each writes its counts and latencies
// into a pipe, the parent merges them.
// chunk: 0 the account, else the chunked account with chunks of `chunk`.
result fleet(int procs, bool reference, int port, const std::string& sha, double seconds, unsigned chunk = 0) {
  std::vector<pid_t> pids;
  std::vector<int> fds;
  for (int i = 0; i < procs; ++i) {
    int p[2];
    if (::pipe(p) != 0) break;
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::close(p[0]);
      const result r = reference ? run_gcra(port, sha, seconds)
                                 : run_account(port, name_of(chunk), seconds, chunk);
      const std::uint64_t head[5] = {r.admitted, r.refused, r.calls, r.errors, r.lat_ns.size()};
      auto put = [&](const void* b, std::size_t n) {
        const char* c = static_cast<const char*>(b);
        while (n > 0) {
          const ssize_t k = ::write(p[1], c, n);
          if (k <= 0) ::_exit(2);
          c += k;
          n -= static_cast<std::size_t>(k);
        }
      };
      put(head, sizeof head);
      put(r.lat_ns.data(), r.lat_ns.size() * sizeof(std::uint32_t));
      ::_exit(0);
    }
    ::close(p[1]);
    if (pid < 0) {
      ::close(p[0]);
      break;
    }
    pids.push_back(pid);
    fds.push_back(p[0]);
  }
  result all;
  for (std::size_t i = 0; i < fds.size(); ++i) {
    auto get = [&](void* b, std::size_t n) {
      char* c = static_cast<char*>(b);
      while (n > 0) {
        const ssize_t k = ::read(fds[i], c, n);
        if (k <= 0) return false;
        c += k;
        n -= static_cast<std::size_t>(k);
      }
      return true;
    };
    std::uint64_t head[5] = {0, 0, 0, 0, 0};
    if (get(head, sizeof head) && head[4] < (1u << 23)) {
      std::vector<std::uint32_t> lat(head[4]);
      if (get(lat.data(), lat.size() * sizeof(std::uint32_t))) {
        all.admitted += head[0];
        all.refused += head[1];
        all.calls += head[2];
        all.errors += head[3];
        all.lat_ns.insert(all.lat_ns.end(), lat.begin(), lat.end());
      }
    }
    ::close(fds[i]);
  }
  for (pid_t p : pids) {
    int st = 0;
    ::waitpid(p, &st, 0);
  }
  return all;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

double pct(std::vector<std::uint32_t>& v, double q) {
  if (v.empty()) return 0;
  const std::size_t i = std::min(v.size() - 1, static_cast<std::size_t>(q * static_cast<double>(v.size())));
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(i), v.end());
  return v[i] / 1000.0;
}

std::string cpu_model() {
  std::ifstream f("/proc/cpuinfo");
  std::string l;
  while (std::getline(f, l))
    if (l.compare(0, 10, "model name") == 0) return l.substr(l.find(':') + 2);
  return "unknown";
}

// From INFO commandstats: the script's server time per call (µs) and the
// commands it ran per call (every command but the EVALSHA itself).
struct server_side {
  double usec_per_script = 0, commands_per_script = 0;
};
server_side commandstats(client& admin) {
  server_side out;
  const tr::reply r = admin.call({"INFO", "commandstats"});
  if (r.type != tr::reply::kind::string) return out;
  double scripts = 0, inner = 0;
  std::size_t b = 0;
  while (b < r.str.size()) {
    std::size_t e = r.str.find("\r\n", b);
    if (e == std::string::npos) e = r.str.size();
    const std::string l = r.str.substr(b, e - b);
    b = e + 2;
    if (l.compare(0, 8, "cmdstat_") != 0) continue;
    const std::string name = l.substr(8, l.find(':') - 8);
    const std::size_t c = l.find("calls="), u = l.find("usec_per_call=");
    if (c == std::string::npos || u == std::string::npos) continue;
    const double calls = std::atof(l.c_str() + c + 6);
    if (name == "evalsha") {
      scripts = calls;
      out.usec_per_script = std::atof(l.c_str() + u + 14);
    } else if (name != "info" && name != "config" && name != "script" && name != "eval") {
      inner += calls;
    }
  }
  if (scripts > 0) out.commands_per_script = inner / scripts;
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  double seconds = argc > 1 ? std::atof(argv[1]) : 2.0;
  if (!(seconds > 0.05 && seconds <= 60)) seconds = 2.0;
  int rounds = argc > 2 ? std::atoi(argv[2]) : 3;
  if (rounds < 1 || rounds > 15) rounds = 3;
  g_learn = argc > 3 && std::string(argv[3]) == "learn";
  g_spaced = g_learn || (argc > 3 && std::string(argv[3]) == "spaced");
  server srv;
  if (!srv.running()) {
    std::fprintf(stderr, "redis-server not found or not starting\n");
    return 1;
  }
  client admin(srv.port());
  const tr::reply load = admin.call({"SCRIPT", "LOAD", gcra});
  if (load.type != tr::reply::kind::string) {
    std::fprintf(stderr, "SCRIPT LOAD failed\n");
    return 1;
  }
  {
    // The account's epoch (fresh: nothing ran on it).
    std::uint64_t n = 0;
    tr::account<counting_exec> a("bench", account_under_test(), counting_exec{&admin, &n});
    tr::account<counting_exec> b("bench_chunk", chunked_under_test(), counting_exec{&admin, &n}, chunk_options(10));
    tr::account<counting_exec> c("bench_slice", account_under_test(), counting_exec{&admin, &n}, chunk_options(10));
    if (a.create(true) != tr::outcome::ok || b.create(true) != tr::outcome::ok || c.create(true) != tr::outcome::ok) {
      std::fprintf(stderr, "create failed\n");
      return 1;
    }
  }
  const tr::reply info = admin.call({"INFO", "server"});
  std::string version = "?";
  if (info.type == tr::reply::kind::string) {
    const std::size_t p = info.str.find("redis_version:");
    if (p != std::string::npos) version = info.str.substr(p + 14, info.str.find('\r', p) - p - 14);
  }
  utsname u{};
  ::uname(&u);
  std::printf("machine: %s, %ld online CPUs, %s %s; redis-server %s; %.1f s per run, %d rounds\n",
              cpu_model().c_str(), ::sysconf(_SC_NPROCESSORS_ONLN), u.sysname, u.release, version.c_str(), seconds,
              rounds);
  std::printf("| procs | script | admissions/s | ratio (range) | round trips / request | p50 us | p99 us | server us / "
              "call | server calls / call | errors |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|---|\n");
  // The account; its strict form without chunks, chunked by 10 and by 100 requests.
  constexpr int rows = 4;
  const unsigned chunks[rows] = {0, 1, 10, 100};
  const char* names[rows] = {"tollgate account", "strict windows, no chunks",
                             g_spaced ? "spaced, 10 ms slices" : "chunked, 10 a chunk",
                             g_spaced ? "spaced, 100 ms slices" : "chunked, 100 a chunk"};
  for (int procs : {1, 2, 4}) {
    // Rounds alternate the scripts, so a neighbour's load on a shared
    // machine falls on each; the rates are the rounds' medians, the latencies
    // and the server's figures pooled over the rounds.
    result ref, acc[rows];
    std::vector<double> rates_ref, rates_acc[rows], ratios[rows];
    server_side sref, sacc[rows];
    for (int round = 0; round < rounds; ++round) {
      (void)admin.call({"CONFIG", "RESETSTAT"});
      result r = fleet(procs, true, srv.port(), load.str, seconds);
      const server_side s1 = commandstats(admin);
      rates_ref.push_back(static_cast<double>(r.admitted) / seconds);
      sref.usec_per_script += s1.usec_per_script / rounds;
      sref.commands_per_script += s1.commands_per_script / rounds;
      auto pool = [](result& into, const result& x) {
        into.admitted += x.admitted;
        into.refused += x.refused;
        into.calls += x.calls;
        into.errors += x.errors;
        into.lat_ns.insert(into.lat_ns.end(), x.lat_ns.begin(), x.lat_ns.end());
      };
      pool(ref, r);
      for (int k = 0; k < rows; ++k) {
        (void)admin.call({"CONFIG", "RESETSTAT"});
        result a = fleet(procs, false, srv.port(), load.str, seconds, chunks[k]);
        const server_side s2 = commandstats(admin);
        rates_acc[k].push_back(static_cast<double>(a.admitted) / seconds);
        ratios[k].push_back(r.admitted > 0 ? static_cast<double>(a.admitted) / static_cast<double>(r.admitted) : 0);
        sacc[k].usec_per_script += s2.usec_per_script / rounds;
        sacc[k].commands_per_script += s2.commands_per_script / rounds;
        pool(acc[k], a);
      }
    }
    auto row = [&](const char* what, result& r, double rate, const std::vector<double>* rs, const server_side& ss) {
      const double trips = r.admitted > 0 ? static_cast<double>(r.calls) / static_cast<double>(r.admitted) : 0;
      char ratio[64] = "1.00";
      if (rs)
        std::snprintf(ratio, sizeof ratio, "%.2f (%.2f-%.2f)", median(*rs), *std::min_element(rs->begin(), rs->end()),
                      *std::max_element(rs->begin(), rs->end()));
      std::printf("| %d | %s | %.0f | %s | %.3f | %.1f | %.1f | %.1f | %.1f | %llu |\n", procs, what, rate, ratio, trips,
                  pct(r.lat_ns, 0.50), pct(r.lat_ns, 0.99), ss.usec_per_script, ss.commands_per_script,
                  static_cast<unsigned long long>(r.errors));
    };
    row("GCRA, one key", ref, median(rates_ref), nullptr, sref);
    for (int k = 0; k < rows; ++k) row(names[k], acc[k], median(rates_acc[k]), &ratios[k], sacc[k]);
    std::fflush(stdout);
  }
  return 0;
}
