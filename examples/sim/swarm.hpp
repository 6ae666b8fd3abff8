// The swarm simulator's engine: N agents share one Kimi account in virtual
// time, against a simulated server that counts with a chosen window model.
// Used by tollgate-sim and by its tests. Standard library only.
#ifndef TOLLGATE_SIM_SWARM_HPP
#define TOLLGATE_SIM_SWARM_HPP

// (Already included as the generated single header when a test built it so.)
#ifndef TOLLGATE_TOLLGATE_HPP
#include <tollgate/tollgate.hpp>
#endif

#include <algorithm>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <queue>
#include <string>
#include <vector>

namespace tollgate_sim {

using namespace tollgate;
using ns_t = std::int64_t;
constexpr ns_t second = 1000000000;
constexpr ns_t minute = 60 * second;

// splitmix64: deterministic for a seed on every platform.
struct rng {
  std::uint64_t s;
  std::uint64_t next() {
    std::uint64_t z = (s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }
  std::uint64_t between(std::uint64_t lo, std::uint64_t hi) { return hi <= lo ? lo : lo + next() % (hi - lo + 1); }
};

struct range {
  std::uint64_t lo = 0, hi = 0;
};
// How a simulated server's window counters treat a request they refuse.
// `seen`: every counter counts every request it sees, refused or not (as
// HAProxy's stick-table rates do), so retries keep the window full. `admitted`:
// a counter counts only requests the server admits.
enum class server_counting : unsigned char { admitted, seen };

constexpr const char* to_string(server_counting c) noexcept {
  return c == server_counting::seen ? "seen" : "admitted";
}

struct job {
  tier_row tier{};
  const model_info* model = nullptr;
  unsigned agents = 300;
  unsigned requests_per_agent = 10;
  range prompt{1000, 3000};
  range output{200, 1000};
  std::optional<std::uint64_t> max_tokens = 1000;  // nullopt: the request omits it
  unsigned cache_hit_percent = 0;
  std::optional<range> latency_ms;  // default: 1 s + output / 60 tokens per second
  server_model server = server_model::sliding_log;
  server_counting counting = server_counting::admitted;
  server_model assumed = server_model::unknown;
  // The server's real concurrency cap, when it is below what the tier says
  // (a plan's cap, other clients): the paced account then adapts its limit
  // (account_config::adaptive_concurrency).
  std::optional<std::uint64_t> hidden_concurrency;
  // Another client on the same key, outside tollgate, sending this percent
  // of the RPM limit (requests of TPM / RPM tokens each) at random times;
  // the server then answers with x-ratelimit-remaining/reset headers, which
  // the paced account trusts (account_config::trust_rate_limit_headers).
  unsigned other_client_percent = 0;
  bool trust_headers = true;  // with another client: whether the paced account trusts the headers
  ns_t server_retry_after = second;  // what the server's 429 says (Kimi: 1 s)
  std::uint64_t seed = 1;
  // A spending limit for the paced run, in nano-units of USD or (budget_in_cny) CNY.
  std::optional<std::int64_t> budget_nanos;
  bool budget_in_cny = false;
  // A run still going at this virtual time is stopped (run_result::ended).
  ns_t horizon = 365 * 24 * 60 * minute;
  // The paced swarm split over this many processes (agent i in process
  // i % processes, each process serving its own agents in arrival order), with
  // one account for all of them (shared_account: an account in shared memory or
  // in Redis) or one account each at the tier's full limits (what N processes
  // that each configure the tier do).
  unsigned processes = 1;
  bool shared_account = true;
};

// --- the simulated server: concurrency exactly, RPM and TPM under a window
// model, TPD as a 24 h sliding log. Counts prompt + max_tokens at admission,
// as Kimi does; whether a refused request is counted is job::counting.
class window_model {
 public:
  virtual ~window_model() = default;
  // Would n more units at t stay within the limit? Moves the model to t.
  virtual bool fits(ns_t t, std::uint64_t n) = 0;
  // Counts n units at t (called after fits at the same t).
  virtual void add(ns_t t, std::uint64_t n) = 0;
  // What its headers say after fits/add at t: units that remain, and how
  // long until that can grow (x-ratelimit-remaining / -reset).
  virtual std::uint64_t remaining(ns_t t) const = 0;
  virtual ns_t reset(ns_t t) const = 0;
};

inline ns_t floor_div(ns_t a, ns_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

class fixed_window_model : public window_model {
  std::uint64_t l_;
  ns_t w_;
  std::map<ns_t, std::uint64_t> used_;
 public:
  fixed_window_model(std::uint64_t l, ns_t w) : l_(l), w_(w) {}
  bool fits(ns_t t, std::uint64_t n) override {
    const auto it = used_.find(floor_div(t, w_));
    return (it == used_.end() ? 0 : it->second) + n <= l_;
  }
  void add(ns_t t, std::uint64_t n) override { used_[floor_div(t, w_)] += n; }
  std::uint64_t remaining(ns_t t) const override {
    const auto it = used_.find(floor_div(t, w_));
    const std::uint64_t u = it == used_.end() ? 0 : it->second;
    return u < l_ ? l_ - u : 0;
  }
  ns_t reset(ns_t t) const override { return (floor_div(t, w_) + 1) * w_ - t; }
};
class sliding_log_model : public window_model {
  std::uint64_t l_, sum_ = 0;
  ns_t w_;
  std::deque<std::pair<ns_t, std::uint64_t>> log_;
 public:
  sliding_log_model(std::uint64_t l, ns_t w) : l_(l), w_(w) {}
  bool fits(ns_t t, std::uint64_t n) override {
    while (!log_.empty() && log_.front().first <= t - w_) {
      sum_ -= log_.front().second;
      log_.pop_front();
    }
    return sum_ + n <= l_;
  }
  void add(ns_t t, std::uint64_t n) override {
    log_.emplace_back(t, n);
    sum_ += n;
  }
  std::uint64_t remaining(ns_t) const override { return sum_ < l_ ? l_ - sum_ : 0; }
  ns_t reset(ns_t t) const override { return log_.empty() ? w_ : std::max<ns_t>(1, log_.front().first + w_ - t); }
};
class window_counter_model : public window_model {  // HAProxy / Cloudflare estimate, exact comparison
  std::uint64_t l_, curr_ = 0, prev_ = 0;
  ns_t p_, start_ = 0, ms_ = 0;
  bool started_ = false;
 public:
  window_counter_model(std::uint64_t l, ns_t w) : l_(l), p_(w / 1000000) {}
  bool fits(ns_t t, std::uint64_t n) override {
    ms_ = floor_div(t, 1000000);
    if (!started_) {
      start_ = floor_div(ms_, p_) * p_;
      started_ = true;
    }
    if (ms_ >= start_ + p_) {
      const ns_t k = (ms_ - start_) / p_;
      prev_ = k == 1 ? curr_ : 0;
      curr_ = 0;
      start_ += k * p_;
    }
    using tollgate::detail::i128;
    const i128 lhs = static_cast<i128>(curr_ + n) * p_ + static_cast<i128>(prev_) * (p_ - (ms_ - start_));
    return lhs <= static_cast<i128>(l_) * p_;
  }
  void add(ns_t, std::uint64_t n) override { curr_ += n; }
  // The estimate may fall with every millisecond tick: a reset of 1 ms.
  std::uint64_t remaining(ns_t) const override {
    using tollgate::detail::i128;
    const i128 est = static_cast<i128>(curr_) * p_ + static_cast<i128>(prev_) * (p_ - (ms_ - start_));
    const i128 cap = static_cast<i128>(l_) * p_;
    return est >= cap ? 0 : static_cast<std::uint64_t>((cap - est) / p_);
  }
  ns_t reset(ns_t) const override { return 1000000; }
};
class bucket_model : public window_model {  // capacity L, refill L per W
  std::uint64_t l_;
  ns_t w_, last_ = 0;
  tollgate::detail::i128 scaled_;  // tokens * W; below zero when it counts refusals
 public:
  bucket_model(std::uint64_t l, ns_t w) : l_(l), w_(w), scaled_(static_cast<tollgate::detail::i128>(l) * w) {}
  bool fits(ns_t t, std::uint64_t n) override {
    if (t > last_) {
      const tollgate::detail::i128 cap = static_cast<tollgate::detail::i128>(l_) * w_;
      scaled_ += static_cast<tollgate::detail::i128>(t - last_) * l_;
      if (scaled_ > cap) scaled_ = cap;
      last_ = t;
    }
    return scaled_ >= static_cast<tollgate::detail::i128>(n) * w_;
  }
  void add(ns_t, std::uint64_t n) override { scaled_ -= static_cast<tollgate::detail::i128>(n) * w_; }
  std::uint64_t remaining(ns_t) const override { return scaled_ <= 0 ? 0 : static_cast<std::uint64_t>(scaled_ / w_); }
  ns_t reset(ns_t) const override {  // until one more whole unit
    using tollgate::detail::i128;
    const i128 next = (scaled_ >= 0 ? scaled_ / w_ + 1 : -((-scaled_) / w_)) * static_cast<i128>(w_);
    return static_cast<ns_t>(std::max<i128>(1, (next - scaled_ + l_ - 1) / l_));
  }
};
class gcra1_model : public window_model {  // even spacing W / L
  std::uint64_t l_;
  ns_t w_;
  tollgate::detail::i128 tat_ = 0, now_ = 0;  // * L
 public:
  gcra1_model(std::uint64_t l, ns_t w) : l_(l), w_(w) {}
  bool fits(ns_t t, std::uint64_t) override {
    now_ = static_cast<tollgate::detail::i128>(t) * l_;
    return tat_ <= now_;
  }
  void add(ns_t, std::uint64_t n) override { tat_ = std::max(tat_, now_) + static_cast<tollgate::detail::i128>(n) * w_; }
  std::uint64_t remaining(ns_t) const override { return tat_ <= now_ ? 1 : 0; }
  ns_t reset(ns_t) const override {
    return tat_ <= now_ ? 1 : static_cast<ns_t>((tat_ - now_ + static_cast<tollgate::detail::i128>(l_) - 1) / l_);
  }
};

inline std::unique_ptr<window_model> make_model(server_model m, std::uint64_t l, ns_t w) {
  switch (m) {
    case server_model::fixed_window: return std::make_unique<fixed_window_model>(l, w);
    case server_model::window_counter: return std::make_unique<window_counter_model>(l, w);
    case server_model::token_bucket: return std::make_unique<bucket_model>(l, w);
    case server_model::gcra: return std::make_unique<gcra1_model>(l, w);
    default: return std::make_unique<sliding_log_model>(l, w);
  }
}

struct server {
  std::optional<std::uint64_t> conc;
  std::uint64_t in_flight = 0;
  server_counting counting;
  std::unique_ptr<window_model> rpm, tpm, tpd;
  enum class verdict { ok, concurrency, rpm, tpm, tpd };
  server(const tier_row& t, server_model m, server_counting c, std::optional<std::uint64_t> hidden = std::nullopt)
      : conc(hidden ? hidden : t.concurrency.value()), counting(c) {
    if (auto v = t.rpm.value()) rpm = make_model(m, *v, minute);
    if (auto v = t.tpm.value()) tpm = make_model(m, *v, minute);
    if (auto v = t.tpd.value()) tpd = std::make_unique<sliding_log_model>(*v, 24 * 60 * minute);
  }
  verdict accept(ns_t t, std::uint64_t tokens) {
    verdict v = verdict::ok;
    if (conc && in_flight >= *conc) v = verdict::concurrency;
    // Every counter is asked (each moves to t), the first refusal names the verdict.
    if (rpm && !rpm->fits(t, 1) && v == verdict::ok) v = verdict::rpm;
    if (tpm && !tpm->fits(t, tokens) && v == verdict::ok) v = verdict::tpm;
    if (tpd && !tpd->fits(t, tokens) && v == verdict::ok) v = verdict::tpd;
    if (v == verdict::ok || counting == server_counting::seen) {
      if (rpm) rpm->add(t, 1);
      if (tpm) tpm->add(t, tokens);
      if (tpd) tpd->add(t, tokens);
    }
    if (v == verdict::ok) ++in_flight;
    return v;
  }
  // The other client's request: the windows only (it holds no slot we see).
  bool accept_other(ns_t t, std::uint64_t tokens) {
    const std::optional<std::uint64_t> c = conc;
    conc.reset();  // its requests do not count against our concurrency
    const verdict v = accept(t, tokens);
    conc = c;
    if (v == verdict::ok) --in_flight;
    return v == verdict::ok;
  }
  // The headers of an answer at t (after accept at t).
  rate_limit_headers headers(ns_t t) const {
    rate_limit_headers h;
    if (rpm) {
      h.remaining_requests = rpm->remaining(t);
      h.reset_requests = nanoseconds(rpm->reset(t));
    }
    if (tpm) {
      h.remaining_tokens = tpm->remaining(t);
      h.reset_tokens = nanoseconds(tpm->reset(t));
    }
    return h;
  }
};

// A Kimi-style 429 body for a refusal, so the client classifies it as Kimi's would be.
inline std::string body_for(server::verdict v, const tier_row& t, std::optional<std::uint64_t> conc = std::nullopt) {
  auto num = [](std::optional<std::uint64_t> x) { return std::to_string(x ? *x : 0); };
  std::string m;
  switch (v) {
    case server::verdict::concurrency: m = "request reached max organization concurrency: " + num(conc ? conc : t.concurrency.value()); break;
    case server::verdict::rpm: m = "request reached organization max RPM: " + num(t.rpm.value()); break;
    case server::verdict::tpm: m = "request reached organization TPM rate limit, current: 0, limit: " + num(t.tpm.value()); break;
    default: m = "request reached organization TPD rate limit, current: 0, limit: " + num(t.tpd.value()); break;
  }
  return "{\"error\":{\"message\":\"" + m + ", please try again after 1 seconds\",\"type\":\"rate_limit_reached_error\"}}";
}

struct run_result {
  std::uint64_t requests = 0, completed = 0, failed = 0, rejected_429 = 0, retries = 0;
  std::uint64_t rejected_by[5] = {};  // by server verdict
  ns_t finish = 0;
  std::uint64_t prompt_tokens = 0, cached_tokens = 0, output_tokens = 0, reserved_tokens = 0;
  usd cost_usd;
  cny cost_cny;
  bool cny_known = true;
  // Per simulated minute: requests accepted by the server and tokens (prompt + max_tokens) counted.
  std::vector<std::uint64_t> req_per_min, tok_per_min;
  account_stats stats{};
  std::string rpm_policy, tpm_policy;
  learned_view learned{};  // under --assume learn: what the account learned by the end
  adaptive_view adaptive{};  // with a hidden concurrency cap: the adaptive limit at the end
  std::uint64_t other_sent = 0, other_accepted = 0;  // the other client's requests
  // Paced with a budget: requests never sent because the budget ran out
  // (nothing in flight could give money back), and what the account billed.
  std::uint64_t not_sent_budget = 0;
  std::int64_t budget_spent_nanos = 0;
  // How the run ended: every request done, stopped at job::horizon, or
  // stopped because virtual time no longer moved (or nothing was left to
  // move it) with requests still to do. `ended_at` is the virtual time then.
  enum class end { done, horizon, stalled } ended = end::done;
  ns_t ended_at = 0;
  std::uint64_t total = 0;  // requests in the job
};

// The output cap a request of the job reserves, and its largest prompt + cap.
inline std::uint64_t max_output(const job& jb) {
  if (jb.max_tokens) return *jb.max_tokens;
  return jb.model && jb.model->default_max_tokens ? *jb.model->default_max_tokens : jb.output.hi;
}
inline std::uint64_t largest_request(const job& jb) { return jb.prompt.hi + max_output(jb); }

// The paced run's account: the tier's limits, what the job assumes of the
// server, the job's largest request as the token margin, and the budget.
template <class Currency>
basic_account_config<Currency> account_config_for(const job& jb, bool with_budget) {
  basic_account_config<Currency> cfg = basic_account_config<Currency>::from_tier(jb.tier, jb.assumed);
  if (jb.budget_nanos && with_budget) cfg.budget = money<Currency>::from_nanos(*jb.budget_nanos);
  cfg.max_request_tokens = largest_request(jb);
  if (auto v = jb.tier.tpm.value(); v && *v > 1) cfg.max_request_tokens = std::min<std::uint64_t>(cfg.max_request_tokens, *v - 1);
  if (jb.hidden_concurrency && cfg.concurrency.is_finite()) cfg.adaptive_concurrency = true;
  if (jb.other_client_percent > 0 && jb.trust_headers) cfg.trust_rate_limit_headers = true;
  return cfg;
}

// Runs the job paced by a tollgate account (`paced`) or unpaced, as popular
// HTTP SDKs behave by default: two retries, backoff 0.5 s doubling to 8 s,
// honouring a short Retry-After. `progress` is called now and then with the
// fraction done. The account's configuration must be valid (config_problem).
template <class Currency>
run_result run_in(const job& jb, bool paced, const std::function<void(double)>& progress) {
  rng g{jb.seed * 7919 + 1};
  server srv(jb.tier, jb.server, jb.counting, jb.hidden_concurrency);
  const basic_account_config<Currency> cfg = account_config_for<Currency>(jb, paced);
  const std::uint64_t max_out = max_output(jb);
  const unsigned procs = paced ? std::max(1u, jb.processes) : 1u;
  std::vector<std::unique_ptr<account<manual_clock, Currency>>> accounts;
  for (unsigned p = 0; p < (jb.shared_account ? 1u : procs); ++p)
    accounts.push_back(std::make_unique<account<manual_clock, Currency>>(cfg, nanoseconds(0)));
  auto account_of = [&](unsigned process) -> account<manual_clock, Currency>& {
    return *accounts[jb.shared_account ? 0 : process];
  };
  account<manual_clock, Currency>& acct = *accounts[0];
  run_result r;
  r.rpm_policy = acct.policy(dimension::rpm);
  r.tpm_policy = acct.policy(dimension::tpm);

  struct agent_state {
    unsigned left;
    unsigned tries = 0;
    std::uint64_t prompt = 0, out = 0;
    lease<manual_clock, Currency> held;
  };
  std::vector<agent_state> agents(jb.agents);
  for (auto& a : agents) a.left = jb.requests_per_agent;
  const std::uint64_t total = static_cast<std::uint64_t>(jb.agents) * jb.requests_per_agent;

  // Events: responses first at equal times, then dispatch.
  struct event {
    ns_t t;
    int kind;  // 0 = response, 1 = agent ready (unpaced), 2 = dispatcher wakes (paced), 3 = the other client
    unsigned agent;
    // Dispatchers of several processes at one instant wake in process order.
    bool operator>(const event& o) const {
      if (t != o.t) return t > o.t;
      if (kind != o.kind) return kind > o.kind;
      return kind == 2 && agent > o.agent;
    }
  };
  std::priority_queue<event, std::vector<event>, std::greater<event>> q;
  // Paced, per process: agents waiting their turn in arrival order, and
  // whether its dispatcher has a wake-up pending.
  std::vector<std::deque<unsigned>> ready_in(procs);
  std::vector<char> scheduled_in(procs, 0);
  for (unsigned i = 0; i < jb.agents; ++i) {
    if (paced) ready_in[i % procs].push_back(i);
    else q.push({static_cast<ns_t>(g.between(0, 1000000)), 1, i});
  }
  if (paced)
    for (unsigned p = 0; p < procs; ++p) {
      q.push({0, 2, p});
      scheduled_in[p] = 1;
    }
  // The other client: percent of RPM, each request TPM / RPM tokens (or the
  // job's mean request without a request limit).
  ns_t other_gap = 0;
  std::uint64_t other_tokens = 0;
  if (jb.other_client_percent > 0) {
    const double mean = static_cast<double>(jb.prompt.lo + jb.prompt.hi) / 2 + static_cast<double>(max_output(jb));
    const auto rl = jb.tier.rpm.value();
    const auto tl = jb.tier.tpm.value();
    double per_min = 0;
    if (rl) per_min = static_cast<double>(*rl) * jb.other_client_percent / 100.0;
    else if (tl) per_min = static_cast<double>(*tl) * jb.other_client_percent / 100.0 / mean;
    other_tokens = rl && tl ? std::max<std::uint64_t>(1, *tl / *rl) : static_cast<std::uint64_t>(mean);
    if (per_min > 0) {
      other_gap = std::max<ns_t>(1, static_cast<ns_t>(static_cast<double>(minute) / per_min));
      q.push({static_cast<ns_t>(g.between(0, static_cast<std::uint64_t>(other_gap))), 3, 0});
    }
  }
  auto record = [&](ns_t t, std::uint64_t tokens) {
    const std::size_t m = static_cast<std::size_t>(t / minute);
    if (r.req_per_min.size() <= m) {
      r.req_per_min.resize(m + 1, 0);
      r.tok_per_min.resize(m + 1, 0);
    }
    ++r.req_per_min[m];
    r.tok_per_min[m] += tokens;
  };
  auto new_shape = [&](agent_state& a) {
    a.prompt = g.between(jb.prompt.lo, jb.prompt.hi);
    a.out = g.between(jb.output.lo, jb.output.hi);
    if (jb.max_tokens && a.out > *jb.max_tokens) a.out = *jb.max_tokens;
  };
  auto latency = [&](const agent_state& a) -> ns_t {
    if (jb.latency_ms) return static_cast<ns_t>(g.between(jb.latency_ms->lo, jb.latency_ms->hi)) * 1000000;
    return second + static_cast<ns_t>(a.out) * second / 60;
  };
  auto finish_one = [&](agent_state& a, ns_t t, bool ok) {
    if (ok) ++r.completed;
    else ++r.failed;
    a.tries = 0;
    --a.left;
    (void)t;
  };
  std::uint64_t events = 0;
  // At one virtual instant each agent can at most respond, become ready and
  // wake the dispatcher once: more events than that there mean time is stuck.
  const std::uint64_t same_time_limit = 4 * static_cast<std::uint64_t>(jb.agents) + 64;
  std::uint64_t same_time = 0;
  ns_t last_t = -1;
  r.total = total;
  for (auto& a : agents) new_shape(a);
  while (!q.empty()) {
    const event e = q.top();
    q.pop();
    if (e.t > jb.horizon) {
      r.ended = run_result::end::horizon;
      r.ended_at = e.t;
      break;
    }
    if (e.t != last_t) {
      last_t = e.t;
      same_time = 0;
    } else if (++same_time > same_time_limit) {
      r.ended = run_result::end::stalled;
      r.ended_at = e.t;
      break;
    }
    if (progress && (++events & 0xFFFF) == 0) progress(static_cast<double>(r.completed + r.failed) / static_cast<double>(total));
    if (e.kind == 3) {  // the other client: one request, then the next in about other_gap
      ++r.other_sent;
      if (srv.accept_other(e.t, other_tokens)) ++r.other_accepted;
      if (r.completed + r.failed + r.not_sent_budget < total)
        q.push({e.t + static_cast<ns_t>(g.between(static_cast<std::uint64_t>(other_gap / 2),
                                                  static_cast<std::uint64_t>(other_gap + other_gap / 2))),
                3, 0});
      continue;
    }
    agent_state& ag = agents[e.agent];
    if (e.kind == 0) {  // a response
      --srv.in_flight;
      const std::uint64_t cached = ag.prompt * jb.cache_hit_percent / 100;
      const usage u{ag.prompt, cached, ag.out, 0, 0};
      r.prompt_tokens += ag.prompt;
      r.cached_tokens += cached;
      r.output_tokens += ag.out;
      if (jb.model) {
        if (const auto c = cost<usd_tag>(*jb.model, u)) r.cost_usd += c.total;
        if (const auto c = cost<cny_tag>(*jb.model, u)) r.cost_cny += c.total;
        else r.cny_known = false;
      }
      if (paced) ag.held.settle(u, nanoseconds(e.t));
      finish_one(ag, e.t, true);
      r.finish = std::max(r.finish, e.t);
      const unsigned proc = e.agent % procs;
      if (ag.left > 0) {
        new_shape(ag);
        if (paced) ready_in[proc].push_back(e.agent);
        else q.push({e.t, 1, e.agent});
      }
      // The slot it gave back may serve any process that shares its account.
      for (unsigned p = 0; paced && p < procs; ++p)
        if ((p == proc || jb.shared_account) && !scheduled_in[p] && !ready_in[p].empty()) {
          q.push({e.t, 2, p});
          scheduled_in[p] = 1;
        }
      continue;
    }
    if (e.kind == 2) {  // paced dispatcher of process e.agent: serve its agents in arrival order
      const unsigned proc = e.agent;
      std::deque<unsigned>& ready = ready_in[proc];
      char& dispatcher_scheduled = scheduled_in[proc];
      account<manual_clock, Currency>& ac = account_of(proc);
      dispatcher_scheduled = 0;
      while (!ready.empty()) {
        agent_state& a = agents[ready.front()];
        request rq{jb.model, a.prompt, jb.max_tokens};
        auto ad = ac.try_admit(rq, nanoseconds(e.t));
        if (!ad) {
          // The head's request is dropped; the agent goes to the back of the
          // line with its next request, if it has one.
          auto next_request = [&] {
            const unsigned who = ready.front();
            ready.pop_front();
            if (agents[who].left > 0) {
              new_shape(agents[who]);
              ready.push_back(who);
            }
          };
          if (ad.decision.never()) {  // cannot ever fit: report and drop it
            finish_one(a, e.t, false);
            next_request();
            continue;
          }
          if (ad.refused.has(dimension::budget) && srv.in_flight == 0) {
            // What is left of the budget is below this request's worst case
            // and no call in flight can give money back: it is never sent.
            // The agent goes on with its next (perhaps smaller) request.
            ++r.not_sent_budget;
            --a.left;
            a.tries = 0;
            r.finish = std::max(r.finish, e.t);
            next_request();
            continue;
          }
          const ns_t w = ad.decision.retry_after().count();
          if (w > 0) {  // a time to wait; otherwise a response will wake us
            q.push({e.t + w, 2, proc});
            dispatcher_scheduled = 1;
          }
          break;
        }
        const unsigned who = ready.front();
        ready.pop_front();
        ++r.requests;
        r.reserved_tokens += ad.tokens;
        const server::verdict v = srv.accept(e.t, ad.tokens);
        if (jb.other_client_percent > 0) ac.observe_rate_limit_headers(srv.headers(e.t), nanoseconds(e.t));
        if (v == server::verdict::ok) {
          record(e.t, ad.tokens);
          agents[who].held = std::move(ad.lease);
          q.push({e.t + latency(agents[who]), 0, who});
        } else {
          ++r.rejected_429;
          ++r.rejected_by[static_cast<int>(v)];
          ad.lease.settle_rejected(nanoseconds(e.t));
          const std::string body = body_for(v, jb.tier, jb.hidden_concurrency);
          ac.on_response(classify(429, body), nanoseconds(jb.server_retry_after), nanoseconds(e.t));
          ++r.retries;
          ready.push_front(who);  // keeps its turn
          q.push({e.t + jb.server_retry_after, 2, proc});
          dispatcher_scheduled = 1;
          break;
        }
      }
      continue;
    }
    // Unpaced: fire now; on a 429 retry like an SDK, at most twice.
    ++r.requests;
    const std::uint64_t tokens = ag.prompt + max_out;
    const server::verdict v = srv.accept(e.t, tokens);
    if (v == server::verdict::ok) {
      record(e.t, tokens);
      q.push({e.t + latency(ag), 0, e.agent});
      continue;
    }
    ++r.rejected_429;
    ++r.rejected_by[static_cast<int>(v)];
    if (ag.tries < 2) {
      const ns_t backoff = std::min<ns_t>(8 * second, (second / 2) << ag.tries);
      const ns_t jittered = backoff - static_cast<ns_t>(g.between(0, static_cast<std::uint64_t>(backoff / 4)));
      ++ag.tries;
      ++r.retries;
      q.push({e.t + std::max(jittered, jb.server_retry_after), 1, e.agent});
    } else {
      finish_one(ag, e.t, false);  // the SDK gives up: the request is lost
      r.finish = std::max(r.finish, e.t);
      if (ag.left > 0) {
        new_shape(ag);
        q.push({e.t + second, 1, e.agent});
      }
    }
  }
  if (r.ended == run_result::end::done && r.completed + r.failed + r.not_sent_budget < total) {
    r.ended = run_result::end::stalled;  // nothing left to happen, requests left to do
    r.ended_at = last_t;
  }
  // One account per process: the first one's view, and the money of all.
  r.stats = acct.stats();
  r.learned = acct.learned(nanoseconds(last_t > 0 ? last_t : 0));
  r.adaptive = acct.adaptive();
  r.budget_spent_nanos = 0;
  for (const auto& ac : accounts) r.budget_spent_nanos += ac->stats().spent_nanos;
  if (progress) progress(1.0);
  return r;
}

inline run_result run(const job& jb, bool paced, const std::function<void(double)>& progress = {}) {
  return jb.budget_in_cny ? run_in<cny_tag>(jb, paced, progress) : run_in<usd_tag>(jb, paced, progress);
}

// Which limit binds: the time each dimension alone would need for the job.
// A dimension without a limit (unlimited, or not in the tier) needs no time
// and says so in `unlimited`. Times saturate at the largest ns_t.
struct binding {
  const char* name = "none";
  ns_t by_rpm = 0, by_tpm = 0, by_tpd = 0, by_concurrency = 0;
  bool rpm_unlimited = true, tpm_unlimited = true, tpd_unlimited = true, concurrency_unlimited = true;
  ns_t longest() const { return std::max(std::max(by_rpm, by_tpm), std::max(by_tpd, by_concurrency)); }
};

// A non-negative double of nanoseconds as ns_t, saturating (a cast of a
// double beyond the range would be undefined).
inline ns_t saturating_ns(double x) {
  if (!(x > 0)) return 0;
  if (x >= 9.2e18) return INT64_MAX;
  return static_cast<ns_t>(x);
}

// From totals: requests sent, tokens counted (prompt + max_tokens) and the
// mean output of a request.
inline binding binding_for(const job& jb, double reqs, double toks, double mean_output) {
  binding b;
  if (auto v = jb.tier.rpm.value()) {
    b.rpm_unlimited = false;
    b.by_rpm = saturating_ns(reqs / static_cast<double>(*v) * minute);
  }
  if (auto v = jb.tier.tpm.value()) {
    b.tpm_unlimited = false;
    b.by_tpm = saturating_ns(toks / static_cast<double>(*v) * minute);
  }
  // A daily limit admits its first L at once (rolling window), then L a day.
  if (auto v = jb.tier.tpd.value()) {
    b.tpd_unlimited = false;
    if (toks > static_cast<double>(*v))
      b.by_tpd = saturating_ns((toks - static_cast<double>(*v)) / static_cast<double>(*v) * 24 * 60 * minute);
  }
  if (auto v = jb.tier.concurrency.value()) {
    b.concurrency_unlimited = false;
    const double lat = jb.latency_ms ? static_cast<double>(jb.latency_ms->lo + jb.latency_ms->hi) / 2 / 1000
                                     : 1.0 + mean_output / 60;
    b.by_concurrency = saturating_ns(reqs * lat / static_cast<double>(*v) * second);
  }
  ns_t worst = 0;
  if (b.by_rpm > worst) { worst = b.by_rpm; b.name = "RPM"; }
  if (b.by_tpm > worst) { worst = b.by_tpm; b.name = "TPM"; }
  if (b.by_tpd > worst) { worst = b.by_tpd; b.name = "TPD"; }
  if (b.by_concurrency > worst) { worst = b.by_concurrency; b.name = "concurrency"; }
  return b;
}

// From what the paced run sent.
inline binding binding_limit(const job& jb, const run_result& paced) {
  const double reqs = static_cast<double>(paced.requests);
  return binding_for(jb, reqs, static_cast<double>(paced.reserved_tokens),
                     static_cast<double>(paced.output_tokens) / std::max(1.0, reqs));
}

// Before any run: from the job's mean request (every request sent once).
inline binding expected_binding(const job& jb) {
  const double reqs = static_cast<double>(jb.agents) * static_cast<double>(jb.requests_per_agent);
  const double mean_prompt = (static_cast<double>(jb.prompt.lo) + static_cast<double>(jb.prompt.hi)) / 2;
  double mean_out = (static_cast<double>(jb.output.lo) + static_cast<double>(jb.output.hi)) / 2;
  if (jb.max_tokens) mean_out = std::min(mean_out, static_cast<double>(*jb.max_tokens));
  return binding_for(jb, reqs, reqs * (mean_prompt + static_cast<double>(max_output(jb))), mean_out);
}

// The requests the runs would simulate, for the work estimate.
inline double simulated_requests(const job& jb, unsigned runs) {
  return static_cast<double>(jb.agents) * static_cast<double>(jb.requests_per_agent) * runs;
}

// Why the job's paced run cannot be configured or cannot ever send its largest
// request, as one line; empty when it can run. Asks the library itself: the
// account's configuration check and a probe of the largest request.
template <class Currency>
std::string config_problem_in(const job& jb) {
  if (auto v = jb.tier.tpm.value(); v && largest_request(jb) >= *v)
    return "a request of up to " + std::to_string(largest_request(jb)) + " tokens (prompt + max_tokens) cannot fit a TPM of " +
           std::to_string(*v) + ": lower --prompt or --max-tokens, or raise --tpm";
  if (jb.model && jb.model->context_window && largest_request(jb) > *jb.model->context_window)
    return "prompt + max_tokens (" + std::to_string(largest_request(jb)) + ") exceeds " + std::string(jb.model->id) +
           "'s context window of " + std::to_string(*jb.model->context_window) + " tokens: lower --prompt or --max-tokens";
  using cfg_t = basic_account_config<Currency>;
  const cfg_t cfg = account_config_for<Currency>(jb, true);
  errc e = errc::ok;
  {
    account<manual_clock, Currency> a(cfg, nanoseconds(0), e);
  }
  if (e != errc::ok) {
    // Name the dimension: the first that is refused alone.
    struct one {
      const char* name;
      limit lim;
      limit cfg_t::*field;
    };
    const one dims[] = {{"concurrency", jb.tier.concurrency, &cfg_t::concurrency},
                        {"RPM", jb.tier.rpm, &cfg_t::rpm},
                        {"TPM", jb.tier.tpm, &cfg_t::tpm},
                        {"TPD", jb.tier.tpd, &cfg_t::tpd}};
    for (const one& d : dims) {
      cfg_t c = cfg;
      c.concurrency = c.rpm = c.tpm = c.tpd = limit::unknown();
      c.budget.reset();
      auto refusal = [&](std::uint64_t x) {
        c.*d.field = limit(x);
        errc e1 = errc::ok;
        account<manual_clock, Currency> a(c, nanoseconds(0), e1);
        return e1;
      };
      const std::optional<std::uint64_t> v = d.lim.value();
      if (!v) continue;
      const errc e1 = refusal(*v);
      if (e1 == errc::ok) continue;
      std::string msg = std::string("the library refuses ") + d.name + " " + std::to_string(*v) + " for this account (" +
                        message(e1) + ")";
      // The boundary below it, by bisection from a value it accepts: what to ask for instead.
      std::uint64_t lo = 0;
      for (std::uint64_t cand : {std::uint64_t{1}, largest_request(jb) + 1})
        if (lo == 0 && cand < *v && refusal(cand) == errc::ok) lo = cand;
      if (lo != 0) {
        std::uint64_t hi = *v;  // refused; lo accepted
        while (hi - lo > 1) {
          const std::uint64_t mid = lo + (hi - lo) / 2;
          (refusal(mid) == errc::ok ? lo : hi) = mid;
        }
        msg += "; " + std::string(d.name) + " " + std::to_string(lo) + " is accepted, " + std::to_string(hi) + " is not";
      }
      return msg;
    }
    return std::string("the account cannot be configured: ") + message(e);
  }
  // The largest request at time zero, on an account without a budget.
  account<manual_clock, Currency> a(account_config_for<Currency>(jb, false), nanoseconds(0));
  auto ad = a.try_admit(request{jb.model, jb.prompt.hi, jb.max_tokens}, nanoseconds(0));
  if (ad || !ad.decision.never()) return {};
  std::string why;
  auto add = [&](dimension d, const char* name, const limit& l) {
    if (!ad.refused.has(d)) return;
    if (!why.empty()) why += ", ";
    why += name;
    if (const auto v = l.value()) why += " " + std::to_string(*v);
  };
  add(dimension::concurrency, "concurrency", jb.tier.concurrency);
  add(dimension::rpm, "RPM", jb.tier.rpm);
  add(dimension::tpm, "TPM", jb.tier.tpm);
  add(dimension::tpd, "TPD", jb.tier.tpd);
  add(dimension::context, "the model's context window", limit::unknown());
  add(dimension::request_size, "the account's largest request", limit::unknown());
  if (why.empty()) why = "the account";
  return "a request of up to " + std::to_string(largest_request(jb)) + " tokens (prompt + max_tokens) can never be admitted by " +
         why + ": lower --prompt or --max-tokens, or raise the limit";
}

inline std::string config_problem(const job& jb) {
  return jb.budget_in_cny ? config_problem_in<cny_tag>(jb) : config_problem_in<usd_tag>(jb);
}

}  // namespace tollgate_sim

#endif
