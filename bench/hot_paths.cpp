// Instruction counts of the hot paths, for valgrind --tool=callgrind (see
// bench/callgrind.sh). Instruction counts do not drift with a noisy machine.
// Usage: hot_paths CASE N   (runs CASE N times between the measurement marks)
#include <tollgate/tollgate.hpp>

#include <valgrind/callgrind.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string_view>

using namespace tollgate;

int main(int argc, char** argv) {
  if (argc != 3) return 2;
  const std::string_view which = argv[1];
  const long n = std::strtol(argv[2], nullptr, 10);
  token_bucket<manual_clock> allow(per_second(1000000000), 1000000, nanoseconds(0));
  token_bucket<manual_clock> deny(per_day(1), 1, nanoseconds(0), token_bucket<manual_clock>::start::empty);
  sliding_window<manual_clock> wallow(rate(16000000, std::chrono::milliseconds(10)), nanoseconds(0));
  sliding_window<manual_clock> wdeny(per_minute(1), nanoseconds(0));
  (void)wdeny.try_acquire(1, nanoseconds(0));
  concurrency_limiter conc(1000);
  keyed_buckets<manual_clock> keyed(4096, {{per_second(1000000000), 1000000}}, hash_seed{0x1234, 0x5678}, nanoseconds(0));
  account_config cfg;
  cfg.concurrency = limit(1000000);
  cfg.rpm = limit(1000000000);
  cfg.tpm = limit(1000000000);
  cfg.model = server_model::sliding_log;
  account<manual_clock> acct(cfg, nanoseconds(0));
  // The shared account over the same limits but a concurrency of 1,024 (its
  // slot table's size), as bench_limiters.cpp's shared case; the region is
  // this process's memory, which is all a callgrind count needs.
  using shared = shared_account<manual_clock, usd_tag, 1024>;
  account_config scfg = cfg;
  scfg.concurrency = limit(1024);
  void* region = ::operator new(shared::region_bytes(), std::align_val_t{4096});
  std::memset(region, 0, shared::region_bytes());  // an empty region
  shared sacct;
  shared_account_options so;
  so.identity = 1;
  if (!sacct.open(region, shared::region_bytes(), scfg, so, nanoseconds(0))) return 3;
  // And at a concurrency of 64: below 1,024 no slot word is kept (a take and a give CAS a lease).
  using small_shared = shared_account<manual_clock, usd_tag, 64>;
  account_config small_cfg = cfg;
  small_cfg.concurrency = limit(64);
  void* small_region = ::operator new(small_shared::region_bytes(), std::align_val_t{4096});
  std::memset(small_region, 0, small_shared::region_bytes());
  small_shared small_acct;
  if (!small_acct.open(small_region, small_shared::region_bytes(), small_cfg, so, nanoseconds(0))) return 3;
  request r;
  r.model = model_by_id("kimi-k2.6");
  r.prompt_tokens = 1;
  r.max_tokens = 1;
  const std::string_view body =
      "{\"error\":{\"message\":\"request reached organization TPM rate limit, current: 64001, limit: 64000\","
      "\"type\":\"rate_limit_reached_error\"}}";
  long sink = 0;
  // One loop per case, the same shape for all, so the empty case's count is
  // the loop's own cost.
  auto loop = [&](auto&& op) {
    CALLGRIND_START_INSTRUMENTATION;
    for (long i = 0; i < n; ++i) sink += op(i);
    CALLGRIND_STOP_INSTRUMENTATION;
  };
  // Admit one request at i x 20 us and settle it at once, on any account.
  auto admit_settle = [&](auto& acc) {
    return [&r, p = &acc](long i) {
      auto a = p->try_admit(r, nanoseconds(20000 * i));
      const long ok = static_cast<bool>(a);
      a.lease.settle_failed(nanoseconds(20000 * i));
      return ok;
    };
  };
  if (which == "bucket_allow") loop([&](long i) { return long(allow.try_acquire(1, nanoseconds(4 * i)).admitted()); });
  else if (which == "bucket_deny") loop([&](long) { return long(deny.try_acquire(1, nanoseconds(1000)).admitted()); });
  else if (which == "window_allow") loop([&](long i) { return long(wallow.try_acquire(1, nanoseconds(4 * i)).admitted()); });
  else if (which == "window_deny") loop([&](long) { return long(wdeny.try_acquire(1, nanoseconds(1000)).admitted()); });
  else if (which == "keyed_allow")
    loop([&](long i) { return long(keyed.try_acquire(std::uint64_t(i & 1023), 0, 1, nanoseconds(4 * i)).admitted()); });
  else if (which == "concurrency") loop([&](long) { return long(static_cast<bool>(conc.try_acquire())); });
  else if (which == "account") loop(admit_settle(acct));
  else if (which == "shared_account") loop(admit_settle(sacct));
  else if (which == "shared_account_small") loop(admit_settle(small_acct));
  else if (which == "cost") loop([&](long) { return long(cost(*r.model, usage{12000, 3000, 800, 0, 0}).total.nanos() > 0); });
  else if (which == "classify") loop([&](long) { return long(classify(429, body).limit.value_or(0) > 0); });
  else if (which == "retry_after")
    loop([&](long) { return long(parse_retry_after("Mon, 23 Nov 2026 00:00:30 GMT", nanoseconds(0)).has_value()); });
  else if (which == "empty") loop([&](long i) { return long(i & 1); });
  else return 2;
  std::printf("%ld\n", sink);
  return 0;
}
