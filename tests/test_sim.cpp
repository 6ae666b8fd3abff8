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

TEST_CASE("sim: N processes with one shared account get no 429; one account each at the full limits do", "[sim]") {
  const server_model models[] = {server_model::fixed_window, server_model::sliding_log, server_model::window_counter,
                                 server_model::token_bucket, server_model::gcra};
  for (int tier : {0, 1, 3}) {
    for (server_model m : models) {
      for (unsigned procs : {2u, 5u}) {
        job j = base(tier);
        j.agents = tier == 0 ? 20 : 120;
        j.requests_per_agent = tier == 0 ? 1 : 3;
        j.server = m;
        j.latency_ms.reset();
        j.processes = procs;
        INFO("tier " << tier << " server " << to_string(m) << " processes " << procs);
        const run_result shared = run(j, true);
        CHECK(shared.rejected_429 == 0);
        CHECK(shared.completed == j.agents * j.requests_per_agent);
        j.shared_account = false;
        const run_result each = run(j, true);
        CHECK(each.rejected_429 > 0);  // N accounts, each believing in the whole tier
        CHECK(each.completed == j.agents * j.requests_per_agent);  // paced: every 429 is resent
        CHECK(each.failed == 0);
      }
    }
  }
  // One process is the plain paced run, event for event.
  job j = base(1);
  j.requests_per_agent = 2;
  const run_result one = run(j, true);
  j.processes = 1;
  j.shared_account = false;
  const run_result also_one = run(j, true);
  CHECK(one.finish == also_one.finish);
  CHECK(one.requests == also_one.requests);
  CHECK(one.cost_usd == also_one.cost_usd);
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

TEST_CASE("sim: a server counter under `seen` also counts what the server refuses", "[sim]") {
  tier_row t{};
  t.concurrency = limit(1);
  t.rpm = limit(2);
  for (server_model m : {server_model::fixed_window, server_model::sliding_log, server_model::window_counter,
                         server_model::token_bucket, server_model::gcra}) {
    INFO("server " << to_string(m));
    server admitted(t, m, server_counting::admitted), seen(t, m, server_counting::seen);
    for (server* s : {&admitted, &seen}) {
      CHECK(s->accept(0, 100) == server::verdict::ok);
      // Three more while the first is in flight: refused for concurrency.
      for (int i = 0; i < 3; ++i) CHECK(s->accept(second, 100) == server::verdict::concurrency);
      --s->in_flight;  // the first response
    }
    // At 31 s one request of RPM 2 has been admitted under every model (GCRA
    // spaces 30 s apart). Counting admitted, the next fits; counting seen,
    // the window also holds the three refusals, so it does not.
    CHECK(admitted.accept(31 * second, 100) == server::verdict::ok);
    CHECK(seen.accept(31 * second, 100) == server::verdict::rpm);
  }
}

TEST_CASE("sim: the unpaced baseline completes more when the server counts only what it admits", "[sim]") {
  job j = base(1);
  j.requests_per_agent = 3;
  j.latency_ms.reset();
  for (server_model m : {server_model::fixed_window, server_model::sliding_log, server_model::window_counter,
                         server_model::token_bucket, server_model::gcra}) {
    INFO("server " << to_string(m));
    j.server = m;
    j.counting = server_counting::admitted;
    const run_result ua = run(j, false), pa = run(j, true);
    j.counting = server_counting::seen;
    const run_result us = run(j, false), ps = run(j, true);
    CHECK(ua.completed > us.completed);
    CHECK(ua.rejected_429 < us.rejected_429);
    // The paced run has no refusals to count: the same either way.
    CHECK(pa.rejected_429 == 0);
    CHECK(ps.rejected_429 == 0);
    CHECK(pa.finish == ps.finish);
    CHECK(pa.completed == ps.completed);
  }
}

TEST_CASE("sim: configuration problems are found before a run, in one line", "[sim]") {
  job ok = base(1);
  CHECK(config_problem(ok).empty());
  // A TPM the library cannot pace exactly: named, with a value it accepts.
  job fine = base(1);
  fine.tier.tpm = limit(1000000000);
  const std::string p = config_problem(fine);
  INFO(p);
  CHECK(p.find("TPM 1000000000") != std::string::npos);
  CHECK(p.find("is accepted") != std::string::npos);
  CHECK(p.find('\n') == std::string::npos);
  // The value it names as accepted is, and the next is not.
  const auto at = p.rfind("; TPM ");
  REQUIRE(at != std::string::npos);
  const std::uint64_t good = std::stoull(p.substr(at + 6));
  fine.tier.tpm = limit(good);
  CHECK(config_problem(fine).empty());
  fine.tier.tpm = limit(good + 1);
  CHECK(!config_problem(fine).empty());
  // A daily limit below one request: it can never be sent.
  job tiny = base(1);
  tiny.tier.tpd = limit(1);
  const std::string q = config_problem(tiny);
  INFO(q);
  CHECK(q.find("can never be admitted by TPD 1") != std::string::npos);
  // Exactly the largest request fits a strict daily window.
  tiny.tier.tpd = limit(largest_request(tiny));
  CHECK(config_problem(tiny).empty());
}

TEST_CASE("sim: a run that cannot finish within the horizon stops by itself", "[sim]") {
  // TPD 4,000 at about 3,000 tokens a request: 3,600 requests need years.
  job j = base(1);
  j.requests_per_agent = 12;
  j.latency_ms.reset();
  j.tier.tpd = limit(4000);
  CHECK(expected_binding(j).longest() > j.horizon);
  CHECK(std::string(expected_binding(j).name) == "TPD");
  // Run anyway (the simulator refuses it before this point): it stops at the horizon.
  const run_result r = run(j, true);
  CHECK(r.ended == run_result::end::horizon);
  CHECK(r.ended_at > j.horizon);
  CHECK(r.completed < r.total);
  CHECK(r.completed >= 300);  // about one a day for a year
  // A short horizon stops a job that would otherwise finish.
  job k = base(1);
  k.horizon = minute;
  const run_result s = run(k, true);
  CHECK(s.ended == run_result::end::horizon);
  CHECK(s.finish <= minute);
  CHECK(s.completed < s.total);
  k.horizon = 365 * 24 * 60 * minute;
  CHECK(run(k, true).ended == run_result::end::done);
}

TEST_CASE("sim: the binding line says which limits are unlimited", "[sim]") {
  job j = base(1);  // Tier1: TPD unlimited
  const binding b = binding_limit(j, run(j, true));
  CHECK(b.tpd_unlimited);
  CHECK(b.by_tpd == 0);
  CHECK_FALSE(b.rpm_unlimited);
  CHECK_FALSE(b.concurrency_unlimited);
  // Estimates saturate rather than overflow for an absurd job.
  job huge = base(0);
  huge.agents = 100000;
  huge.requests_per_agent = 100000;
  huge.tier.rpm = limit(1);
  const binding e = expected_binding(huge);
  CHECK(e.by_rpm > 0);
  CHECK(e.longest() >= e.by_rpm);
  CHECK(simulated_requests(huge, 3) == 3e10);
}
