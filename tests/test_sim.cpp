// The simulator's numbers against closed-form expectations.
#include "catch_compat.hpp"
#include "tollgate_under_test.hpp"
#include "../examples/sim/swarm.hpp"

using namespace tollgate_sim;

namespace {
job base(int tier_no) {
  job j;
  j.tier = *kimi_tiers_2026_09.tier(tier_no);
  j.model = model_by_id("kimi-k2.6");
  j.agents = 300;
  j.requests_per_agent = 1;
  j.latency_ms = range{2000, 2000};
  return j;
}
}  // namespace

TEST_CASE("sim: at RPM 3, 300 requests cannot finish before 99 minutes", "[sim]") {
  job j = base(0);  // Tier0: RPM 3, concurrency 1
  j.server = server_model::sliding_log;
  j.assumed = server_model::sliding_log;  // strict window at 3 per minute
  const run_result r = run(j, true);
  CHECK(r.rejected_429 == 0);
  CHECK(r.completed == 300);
  // The 300th request starts no earlier than 99 x 60 s after the first.
  CHECK(r.finish >= 99 * minute);
  // The strict window counts its oldest sub-window in full: 3 per 16/15 minute.
  CHECK(r.finish <= 99 * 64 * second + 10 * second);
  // Assuming nothing, one request of margin per minute: 2 per minute, evenly.
  j.assumed = server_model::unknown;
  const run_result u = run(j, true);
  CHECK(u.rejected_429 == 0);
  CHECK(u.finish >= 299 * 30 * second);
  CHECK(u.finish <= 299 * (30 * second + 2 * 1000000) + 10 * second);
}

TEST_CASE("sim: a TPM-bound job takes total tokens / TPM, within one window", "[sim]") {
  job j = base(5);
  j.tier.tpm = limit(200000);
  j.tier.concurrency = limit(1000);
  j.tier.rpm = limit(100000);
  j.prompt = range{3000, 3000};
  j.output = range{1000, 1000};
  j.max_tokens = 1000;
  j.assumed = server_model::sliding_log;  // strict windows: no margin
  const run_result r = run(j, true);
  CHECK(r.rejected_429 == 0);
  // 300 x 4,000 = 1.2M tokens at 200,000 per minute: 6 minutes of windows.
  const ns_t expected = static_cast<ns_t>(1200000 / 200000) * minute;
  CHECK(r.finish >= expected - minute);
  CHECK(r.finish <= expected + minute);
  CHECK(std::string(binding_limit(j, r).name) == "TPM");
}

TEST_CASE("sim: paced runs get zero 429s under every server model; unpaced runs do not", "[sim]") {
  const server_model models[] = {server_model::fixed_window, server_model::sliding_log, server_model::window_counter,
                                 server_model::token_bucket, server_model::gcra};
  for (int tier = 0; tier <= 5; ++tier) {
    for (server_model m : models) {
      job j = base(tier);
      j.requests_per_agent = tier == 0 ? 1 : 3;
      j.server = m;
      j.latency_ms.reset();  // the default: 1 s + output / 60 tokens per second
      INFO("tier " << tier << " server " << to_string(m));
      const run_result p = run(j, true);
      CHECK(p.rejected_429 == 0);
      CHECK(p.failed == 0);
      CHECK(p.completed == j.agents * j.requests_per_agent);
      const run_result u = run(j, false);
      CHECK(u.rejected_429 > 0);
    }
  }
}

TEST_CASE("sim: deterministic for a seed, and the cost is exact", "[sim]") {
  job j = base(2);
  j.requests_per_agent = 2;
  j.cache_hit_percent = 50;
  const run_result a = run(j, true), b = run(j, true);
  CHECK(a.finish == b.finish);
  CHECK(a.cost_usd == b.cost_usd);
  const auto c = cost<usd_tag>(*j.model, usage{a.prompt_tokens, a.cached_tokens, a.output_tokens, 0, 0});
  CHECK(c.total == a.cost_usd);  // the sum of per-call costs equals the cost of the totals
  j.seed = 2;
  CHECK(run(j, true).cost_usd != a.cost_usd);  // another seed, other request sizes
}

TEST_CASE("sim: a budget stops the paced run inside it, in dollars or in yuan", "[sim]") {
  for (bool yuan : {false, true}) {
    INFO((yuan ? "CNY" : "USD"));
    job j = base(1);
    j.requests_per_agent = 2;
    j.budget_in_cny = yuan;
    j.budget_nanos = yuan ? 5000000000 : 1000000000;  // 5 yuan or 1 dollar: well short of the job
    const run_result r = run(j, true);
    CHECK(r.rejected_429 == 0);
    CHECK(r.not_sent_budget > 0);
    CHECK(r.completed + r.failed + r.not_sent_budget == 600);
    // Never above the budget, and exactly the cost of what was sent.
    CHECK(r.budget_spent_nanos <= *j.budget_nanos);
    CHECK(r.budget_spent_nanos == (yuan ? r.cost_cny.nanos() : r.cost_usd.nanos()));
    // A request is dropped only once what is left is below its worst case, and
    // what is left only shrinks: the end is within the largest worst case.
    const std::int64_t largest = yuan ? worst_case_cost<cny_tag>(*j.model, j.prompt.hi, j.max_tokens).total.nanos()
                                      : worst_case_cost<usd_tag>(*j.model, j.prompt.hi, j.max_tokens).total.nanos();
    CHECK(*j.budget_nanos - r.budget_spent_nanos < largest);
    // The unpaced run has no budget (an SDK has none).
    CHECK(run(j, false).not_sent_budget == 0);
  }
  job all = base(1);
  all.budget_nanos = 1000000000000;  // $1,000: the whole job fits
  const run_result r = run(all, true);
  CHECK(r.not_sent_budget == 0);
  CHECK(r.completed == 300);
}
