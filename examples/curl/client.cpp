// A libcurl client paced by tollgate: sends chat-completion-shaped POSTs to a
// server that enforces a request rate and a concurrency limit, and reports
// what came back. Modes:
//   unpaced    fire every request at once (the swarm without tollgate)
//   paced      one account with the server's limits (margin policy)
//   overdrive  an account that believes in twice the server's rate: the
//              server's 429s pause the account, and every request is retried
//              until it succeeds (nothing is lost)
//
//   tollgate-curl-client --url URL --requests N --rate R --concurrency C --mode MODE
//                        [--margin-ms M] [--processes P --account shared|each|redis]
//                        [--redis HOST:PORT] [--chunk-parts K]
//
// With --processes P the requests are split over P forked worker processes,
// paced by one shared_account in memory they all map (shared), by one
// account each at the server's full limits (each), or by one account held in
// Redis (redis: built with hiredis; each worker connects on its own), and the
// totals printed. Without hiredis, --account redis exits with status 77.
// --chunk-parts K (redis only) runs the Redis account in chunked mode with the
// in-memory accounts' GCRA policy: each worker leases a slice of the bucket's
// time (K parts of a second's requests) and spaces its own requests in it.
//
// The account spaces admissions; the server spaces arrivals. Between the two lie
// this process's own scheduling, the connection and the server's reading of its
// clock: on a loaded host their jitter runs to several milliseconds, past the
// library's default 2 ms spacing margin (meant for a server's clock ticks). A real
// client over a real network sets the margin to the jitter it sees (20 ms by
// default here; the end-to-end test passes 50 ms for a loaded host).
#include <tollgate/tollgate.hpp>

#include <curl/curl.h>
#if TOLLGATE_CURL_WITH_REDIS
#include <tollgate/redis/account.hpp>
#include <tollgate/redis/hiredis.hpp>
#endif
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

using namespace tollgate;

namespace {
template <class Lease>
struct transfer {
  CURL* easy = nullptr;
  std::string body, retry_after;
  std::size_t index = 0;
  Lease held;
};

// The counts a run prints (and a worker process hands to its parent).
struct counts {
  long sent = 0, ok = 0, lost = 0, rejected = 0, by_rpm = 0, by_conc = 0, by_other = 0;
};

std::size_t on_body(char* p, std::size_t size, std::size_t n, void* user) {
  static_cast<std::string*>(user)->append(p, size * n);
  return size * n;
}
std::size_t on_header(char* p, std::size_t size, std::size_t n, void* user) {
  const std::string_view line(p, size * n);
  const auto colon = line.find(':');
  if (colon != std::string_view::npos) {
    std::string name(line.substr(0, colon));
    for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (name == "retry-after") *static_cast<std::string*>(user) = std::string(line.substr(colon + 1));
  }
  return size * n;
}
[[noreturn]] void usage_error(const char* m) {
  std::fprintf(stderr, "tollgate-curl-client: %s\n", m);
  std::exit(2);
}

// Carries what a run's leases queued (the Redis account sends settlements with
// its next call): nothing to carry for the in-memory accounts.
template <class Account>
void carry(Account*) {}

#if TOLLGATE_CURL_WITH_REDIS
// The Redis account behind the in-memory account's shape, so run() drives
// both: its leases settle without a time (the script decides at the server's
// clock), and a failed transfer drops the lease (the slot comes back, the
// reservations stay, as the in-memory account's settle_failed).
class redis_pacer {
 public:
  using account_type = redis::account<redis::hiredis_executor>;
  struct held_lease {
    account_type::lease_type l;
    void settle(const usage& u, nanoseconds) { l.settle(u); }
    void settle_rejected(nanoseconds) { l.settle_rejected(); }
    void settle_failed(nanoseconds) { l.drop(); }
  };
  struct admission {
    tollgate::decision decision = tollgate::decision::refuse(reason::misconfigured);
    held_lease lease;
    explicit operator bool() const noexcept { return decision.admitted(); }
  };
  redis_pacer(const std::string& name, const account_config& c, const std::string& host, int port, unsigned parts)
      : acct_(name, c, redis::hiredis_executor(host, port, std::chrono::milliseconds(500)), options_of(parts)) {}
  static redis::options options_of(unsigned parts) {
    redis::options o;
    o.chunk_parts = parts;
    return o;
  }
  admission try_admit(const request& r) {
    auto a = acct_.try_admit(r);
    admission out;
    out.decision = a.d;
    out.lease.l = std::move(a.lease);
    return out;
  }
  void on_response(const error_info& e, std::optional<nanoseconds> hint, nanoseconds) {
    (void)acct_.on_response(e, hint);
  }
  bool flush() { return acct_.flush(); }
  // A worker's last flush gives its chunk back first (a slice's unspent
  // time stays spent; a chunk's free slot comes back).
  bool finish() {
    acct_.release_chunk();
    return acct_.flush();
  }
  redis::outcome create_fresh() { return acct_.create(true); }

 private:
  account_type acct_;
};
// Sends the released slots and refunds now, not at the next admission: a
// worker with nothing left to send would otherwise hold its finished slots
// from the other workers until its run ends.
void carry(redis_pacer* p) { (void)p->flush(); }
#endif
}  // namespace

// Sends `requests` requests, paced by `acct` unless it is null (unpaced).
template <class Lease, class Account>
counts run(Account* acct, const std::string& url, long requests) {
  const bool paced = acct != nullptr;
  CURLM* multi = curl_multi_init();
  std::vector<transfer<Lease>> xfers(static_cast<std::size_t>(requests));
  std::deque<std::size_t> pending;
  for (std::size_t i = 0; i < xfers.size(); ++i) pending.push_back(i);
  const std::string payload = "{\"model\":\"kimi-k2.6\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_tokens\":5}";
  counts k;
  long &ok = k.ok, &lost = k.lost, &sent = k.sent, &rejected = k.rejected, &by_rpm = k.by_rpm, &by_conc = k.by_conc,
       &by_other = k.by_other;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  int running = 0;
  while (ok + lost < requests && std::chrono::steady_clock::now() < deadline) {
    long wait_ms = 50;
    while (!pending.empty()) {
      transfer<Lease>& t = xfers[pending.front()];
      if (paced) {
        request r;
        r.prompt_tokens = 10;
        r.max_tokens = 5;
        auto ad = acct->try_admit(r);
        if (!ad) {
          if (ad.decision.never()) usage_error("a request can never be admitted");
          const long ms = static_cast<long>(std::chrono::duration_cast<std::chrono::milliseconds>(ad.decision.retry_after()).count()) + 1;
          wait_ms = ad.decision.retry_after().count() > 0 ? std::min(ms, 50L) : 5;
          break;
        }
        t.held = std::move(ad.lease);
      }
      t.index = pending.front();
      pending.pop_front();
      t.body.clear();
      t.retry_after.clear();
      t.easy = curl_easy_init();
      curl_easy_setopt(t.easy, CURLOPT_URL, url.c_str());
      curl_easy_setopt(t.easy, CURLOPT_POSTFIELDS, payload.c_str());
      curl_easy_setopt(t.easy, CURLOPT_WRITEFUNCTION, on_body);
      curl_easy_setopt(t.easy, CURLOPT_WRITEDATA, &t.body);
      curl_easy_setopt(t.easy, CURLOPT_HEADERFUNCTION, on_header);
      curl_easy_setopt(t.easy, CURLOPT_HEADERDATA, &t.retry_after);
      curl_easy_setopt(t.easy, CURLOPT_PRIVATE, &t);
      curl_easy_setopt(t.easy, CURLOPT_TIMEOUT, 20L);
      curl_multi_add_handle(multi, t.easy);
      ++sent;
    }
    curl_multi_perform(multi, &running);
    curl_multi_poll(multi, nullptr, 0, static_cast<int>(wait_ms), nullptr);
    curl_multi_perform(multi, &running);
    int left = 0;
    while (CURLMsg* msg = curl_multi_info_read(multi, &left)) {
      if (msg->msg != CURLMSG_DONE) continue;
      transfer<Lease>* t = nullptr;
      curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, reinterpret_cast<char**>(&t));
      long status = 0;
      curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &status);
      curl_multi_remove_handle(multi, msg->easy_handle);
      curl_easy_cleanup(msg->easy_handle);
      t->easy = nullptr;
      const nanoseconds now = steady_clock::now();
      if (status == 200) {
        ++ok;
        t->held.settle(usage{10, 0, 5, 0, 0}, now);
        continue;
      }
      const error_info e = classify(static_cast<int>(status), t->body);
      if (status == 429) {
        ++rejected;
        if (e.kind == error_kind::rpm) ++by_rpm;
        else if (e.kind == error_kind::concurrency) ++by_conc;
        else ++by_other;
      }
      if (!paced || !e.retry) {
        ++lost;
        t->held.settle_failed(now);
        continue;
      }
      // Paced: tell the account, and send the request again when it says so.
      acct->on_response(e, parse_retry_after(t->retry_after, system_clock::now()), now);
      t->held.settle_rejected(now);
      pending.push_back(t->index);
    }
    if (paced) carry(acct);
  }
  for (transfer<Lease>& t : xfers)
    if (t.easy) {
      curl_multi_remove_handle(multi, t.easy);
      curl_easy_cleanup(t.easy);
      ++lost;
    }
  curl_multi_cleanup(multi);
  return k;
}

int main(int argc, char** argv) {
  std::string url, mode = "paced";
  std::string sharing = "shared", redis_at = "127.0.0.1:6379";
  long requests = 40, rate_per_s = 10, concurrency = 4, margin_ms = 20, processes = 1, chunk_parts = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string_view a = argv[i];
    if (a == "--url") url = argv[i + 1];
    else if (a == "--requests") requests = std::strtol(argv[i + 1], nullptr, 10);
    else if (a == "--rate") rate_per_s = std::strtol(argv[i + 1], nullptr, 10);
    else if (a == "--concurrency") concurrency = std::strtol(argv[i + 1], nullptr, 10);
    else if (a == "--mode") mode = argv[i + 1];
    else if (a == "--margin-ms") margin_ms = std::strtol(argv[i + 1], nullptr, 10);
    else if (a == "--processes") processes = std::strtol(argv[i + 1], nullptr, 10);
    else if (a == "--account") sharing = argv[i + 1];
    else if (a == "--redis") redis_at = argv[i + 1];
    else if (a == "--chunk-parts") chunk_parts = std::strtol(argv[i + 1], nullptr, 10);
    else usage_error("unknown option");
  }
  if (url.empty() || requests <= 0 || rate_per_s <= 1 || concurrency <= 1 || margin_ms < 0 || margin_ms > 1000)
    usage_error("bad arguments");
  if (mode != "paced" && mode != "unpaced" && mode != "overdrive") usage_error("--mode is paced, unpaced or overdrive");
  if (chunk_parts < 0 || chunk_parts > 1000) usage_error("--chunk-parts is 0..1000");
  if (processes < 1 || processes > 16 || processes > requests) usage_error("--processes is 1..16, at most --requests");
  if (sharing != "shared" && sharing != "each" && sharing != "redis") usage_error("--account is shared, each or redis");
  const bool in_redis = sharing == "redis" && mode != "unpaced";
#if !TOLLGATE_CURL_WITH_REDIS
  if (in_redis) {
    std::fprintf(stderr, "tollgate-curl-client: built without hiredis, --account redis is not available\n");
    return 77;
  }
#endif

  account_config cfg;
  // nginx's limit_req is a leaky bucket (GCRA with burst 1 here): the margin
  // policy. Its limit_conn is released when nginx finalizes a request, which
  // can be a moment after the client has the whole response: one slot of margin.
  cfg.model = server_model::gcra;
  cfg.request_window = std::chrono::seconds(1);
  cfg.spacing_margin = std::chrono::milliseconds(margin_ms);
  if (cfg.max_spacing_margin < cfg.spacing_margin) cfg.max_spacing_margin = cfg.spacing_margin;
  cfg.rpm = limit(static_cast<std::uint64_t>(mode == "overdrive" ? rate_per_s * 2 : rate_per_s));
  cfg.concurrency = limit(static_cast<std::uint64_t>(mode == "overdrive" ? concurrency : concurrency - 1));
  if (in_redis && chunk_parts > 0) {
    // Chunked: the same GCRA policy as the in-memory accounts, its bucket's
    // time leased in slices (one request per slice would be no chunk).
    cfg.lease_timeout = std::chrono::seconds(30);
  } else if (in_redis) {
    // Per request, the strict window (fixed_window, sliding_log,
    // token_bucket) also fits nginx. limit_req is a token bucket: capacity
    // burst + 1, refilled at the rate. With no burst that is capacity 1,
    // which is exactly "no two requests closer than 1 / rate": a strict window
    // of one request per 1 / rate counts the same, where one of `rate` per
    // second would let a whole second's requests through at once. The margin
    // widens that window for the jitter between the script's clock and
    // nginx's (the table's "strict window at L over W + J"); 1 / rate is
    // rounded up to a whole µs, never closer than nginx's spacing.
    cfg.model = server_model::token_bucket;
    cfg.rpm = limit(1);
    cfg.request_window = std::chrono::microseconds((1000000 + rate_per_s - 1) / rate_per_s) + std::chrono::milliseconds(margin_ms);
    // A worker that dies holding a slot gives it back after this, not after
    // the default two hours (and an account created fresh has no hold).
    cfg.lease_timeout = std::chrono::seconds(30);
  }


  using pool_account = shared_account<steady_clock>;
  // The shared account's bytes and every worker's counts, mapped before fork().
  const std::size_t bytes = pool_account::region_bytes() + 16 * sizeof(counts);
  void* mem = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) usage_error("cannot map shared memory");
  counts* per = reinterpret_cast<counts*>(static_cast<unsigned char*>(mem) + pool_account::region_bytes());
  pool_account pool;
  const bool shared = sharing == "shared" && mode != "unpaced";
  if (shared) {
    shared_account_options o;
    o.identity = static_cast<std::uint64_t>(getpid());
    if (!pool.open(mem, pool_account::region_bytes(), cfg, o)) usage_error("the shared account cannot be opened");
  }
#if TOLLGATE_CURL_WITH_REDIS
  std::string redis_host;
  int redis_port = 0;
  // Its own account for the chunked run: the per-request run's epoch counts a
  // strict window, which a bucket's calls may not share.
  const std::string redis_name = chunk_parts > 0 ? "e2e-chunked" : "e2e";
  if (in_redis) {
    const std::size_t colon = redis_at.rfind(':');
    if (colon == std::string::npos || colon == 0) usage_error("--redis is HOST:PORT");
    redis_host = redis_at.substr(0, colon);
    const long p = std::strtol(redis_at.c_str() + colon + 1, nullptr, 10);
    if (p <= 0 || p > 65535) usage_error("--redis is HOST:PORT");
    redis_port = static_cast<int>(p);
    // Before any worker: the test's server was just started empty, so the
    // account is truly fresh (no state-loss hold). A deployment that may have
    // run before calls create(false), see redis/account.hpp.
    redis_pacer first(redis_name, cfg, redis_host, redis_port, static_cast<unsigned>(chunk_parts));
    if (first.create_fresh() != redis::outcome::ok) usage_error("the Redis account cannot be created");
  }
#endif
  // One worker: its share of the requests, its own curl handles and, unless
  // shared, its own account at the server's full limits (or its own
  // connection to the account in Redis).
  auto work = [&](long share) -> counts {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    counts k;
    if (mode == "unpaced") {
      k = run<lease<steady_clock>, account<steady_clock>>(nullptr, url, share);
#if TOLLGATE_CURL_WITH_REDIS
    } else if (in_redis) {
      redis_pacer acct(redis_name, cfg, redis_host, redis_port, static_cast<unsigned>(chunk_parts));
      k = run<redis_pacer::held_lease>(&acct, url, share);
      if (!acct.finish()) std::fprintf(stderr, "tollgate-curl-client: settlements left queued in Redis\n");
#endif
    } else if (shared) {
      k = run<pool_account::lease_type>(&pool, url, share);
    } else {
      account<steady_clock> acct(cfg);
      k = run<lease<steady_clock>>(&acct, url, share);
    }
    curl_global_cleanup();
    return k;
  };
  counts total;
  if (processes == 1) {
    total = work(requests);
  } else {
    std::vector<pid_t> kids;
    for (long p = 0; p < processes; ++p) {
      const long share = requests / processes + (p < requests % processes ? 1 : 0);
      const pid_t pid = fork();
      if (pid < 0) usage_error("fork failed");
      if (pid == 0) {
        if (shared && !pool.claim(static_cast<std::uint64_t>(getpid()))) _exit(3);
        per[p] = work(share);
        _exit(0);
      }
      kids.push_back(pid);
    }
    for (pid_t kid : kids) {
      int st = 0;
      if (waitpid(kid, &st, 0) != kid || !WIFEXITED(st) || WEXITSTATUS(st) != 0) usage_error("a worker process failed");
    }
    for (long p = 0; p < processes; ++p) {
      total.sent += per[p].sent;
      total.ok += per[p].ok;
      total.lost += per[p].lost;
      total.rejected += per[p].rejected;
      total.by_rpm += per[p].by_rpm;
      total.by_conc += per[p].by_conc;
      total.by_other += per[p].by_other;
    }
  }
  const std::string label = processes == 1 ? mode
                                           : mode + " x" + std::to_string(processes) +
                                                 (in_redis ? " (one account in Redis)"
                                                  : shared ? " (one shared account)"
                                                           : " (one account each)");
  std::printf("mode %s: requests %ld, sent %ld, ok %ld, 429 %ld (rpm %ld, concurrency %ld, other %ld), lost %ld\n",
              label.c_str(), requests, total.sent, total.ok, total.rejected, total.by_rpm, total.by_conc, total.by_other,
              total.lost);
  return 0;
}
