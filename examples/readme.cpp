// The README's snippets, compiled so they stay true.
#include <tollgate/tollgate.hpp>

#include <string_view>

using namespace tollgate;

void first_example() {
  // Kimi Tier1 (September 2026 table): 100 requests per minute, 15 in flight.
  sliding_window<> rpm(per_minute(100));  // never more than 100 in any 60 s
  concurrency_limiter in_flight(15);

  permit p = in_flight.try_acquire();
  if (!p) { /* all 15 busy: wait for a response */ }
  decision d = rpm.try_acquire(1);
  if (d.admitted()) {
    // send the request; `p` releases its slot when it goes out of scope
  } else if (d.later()) {
    // d.retry_after() is the exact wait, rounded up to the nanosecond
  } else {
    // d.never(): the request can never fit this limit
  }
}

void account_example(std::string_view prompt, int status, std::string_view body, const rate_limit_headers& headers,
                     std::uint64_t prompt_tokens, std::uint64_t cached_tokens, std::uint64_t completion_tokens) {
  account<> acct(account_config::from_tier(*kimi_tiers_latest.tier(1)));  // server model: unknown
  request r{model_by_id("kimi-k2.6"), /*prompt tokens*/ estimate_tokens(prompt), /*max_tokens*/ 2000};
  admission<> a = acct.try_admit(r);
  if (a) {
    // send; then, with the response's usage:
    a.lease.settle(usage{prompt_tokens, cached_tokens, completion_tokens}, steady_clock::now());
  } else if (a.decision.later()) {
    // a.refused names every dimension that refused; a.decision.retry_after() is the longest wait
  }
  // feed every error response back (headers: a rate_limit_headers filled by read()):
  acct.on_response(classify(status, body), headers.retry_hint(), steady_clock::now());
}

// A budget in yuan, priced from the CNY list.
bool yuan_example() {
  cny_account_config c = cny_account_config::from_tier(*kimi_tiers_latest.tier(1));
  c.budget = cny::from_units(50);
  account<steady_clock, cny_tag> acct(c);
  admission<steady_clock, cny_tag> a = acct.try_admit(request{model_by_id("kimi-k2.6"), 1000, 2000});
  return a && a.worst_case == cny::from_nanos(1000 * 6500 + 2000 * 27000);  // 6.5 and 27 yuan per million
}

int main() {
  first_example();
  if (!yuan_example()) return 1;
  rate_limit_headers h;
  account_example("Summarise the swarm's results.", 200, "{}", h, 10, 0, 5);
  return 0;
}
