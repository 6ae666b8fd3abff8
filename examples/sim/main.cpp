// tollgate-sim: a swarm of agents against one Kimi account, in virtual time.
// Runs the job paced by tollgate and unpaced (as HTTP SDKs retry by default),
// and reports which limit binds, throughput against the limits, time to
// finish, 429s and the exact cost; --svg writes a plot, --plan compares tiers.
#include "swarm.hpp"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <string_view>

using namespace tollgate_sim;

namespace {

[[noreturn]] void fail(const std::string& msg) {
  std::fprintf(stderr, "tollgate-sim: %s (see --help)\n", msg.c_str());
  std::exit(2);
}

const char* const help_text =
    "usage: tollgate-sim [options]\n"
    "  --table 2026-09|2026-05   Kimi tier table (default 2026-09, the newest)\n"
    "  --tier N                  tier 0..5 (default 1)\n"
    "  --rpm N --tpm N --tpd N --concurrency N   override the tier's limits\n"
    "  --model ID                model (default kimi-k2.6)\n"
    "  --agents N                agents (default 300)\n"
    "  --requests N              requests per agent (default 10)\n"
    "  --prompt N|A-B            prompt tokens (default 1000-3000, uniform)\n"
    "  --output N|A-B            output tokens (default 200-1000)\n"
    "  --max-tokens N|none       max_tokens sent (default 1000; none: the model's default cap)\n"
    "  --cache-hit P             percent of each prompt served from the cache (default 0)\n"
    "  --latency A-B             response time in ms (default 1 s + output / 60 tokens per s)\n"
    "  --server MODEL            how the simulated server counts: fixed, log, counter, bucket, gcra\n"
    "                            (default log)\n"
    "  --assume MODEL            what the account assumes: unknown (default) or one of the above\n"
    "  --retry-after S           seconds the server's 429 asks to wait (default 1, as Kimi sends)\n"
    "  --currency usd|cny        currency of the cost and of --budget (default usd)\n"
    "  --budget AMOUNT           a spending limit for the paced run, e.g. 5 or 0.50 (in --currency);\n"
    "                            requests whose worst case no longer fits are not sent\n"
    "  --seed N                  random seed (default 1)\n"
    "  --svg FILE                write a plot of requests and tokens per minute\n"
    "  --plan                    capacity planning: run the job paced at every tier of the table\n"
    "  --quiet                   no progress line\n";

std::uint64_t parse_count(std::string_view flag, const char* v, std::uint64_t lo, std::uint64_t hi) {
  if (!v) fail(std::string(flag) + " needs a value");
  char* end = nullptr;
  errno = 0;
  const unsigned long long x = std::strtoull(v, &end, 10);
  if (*v == '-' || !end || *end != '\0' || end == v || errno != 0 || x < lo || x > hi)
    fail(std::string(flag) + " needs a whole number in " + std::to_string(lo) + ".." + std::to_string(hi) + ", not '" + v + "'");
  return x;
}

range parse_range(std::string_view flag, const char* v, std::uint64_t hi) {
  if (!v) fail(std::string(flag) + " needs a value");
  const std::string s(v);
  const auto dash = s.find('-');
  if (dash == std::string::npos) {
    const std::uint64_t x = parse_count(flag, v, 0, hi);
    return {x, x};
  }
  const std::uint64_t a = parse_count(flag, s.substr(0, dash).c_str(), 0, hi);
  const std::uint64_t b = parse_count(flag, s.substr(dash + 1).c_str(), 0, hi);
  if (a > b) fail(std::string(flag) + " range is backwards: " + s);
  return {a, b};
}

server_model parse_model(std::string_view flag, const char* v, bool allow_unknown) {
  if (!v) fail(std::string(flag) + " needs a value");
  const std::string_view s(v);
  if (s == "fixed") return server_model::fixed_window;
  if (s == "log") return server_model::sliding_log;
  if (s == "counter") return server_model::window_counter;
  if (s == "bucket") return server_model::token_bucket;
  if (s == "gcra") return server_model::gcra;
  if (allow_unknown && s == "unknown") return server_model::unknown;
  fail(std::string(flag) + " must be fixed, log, counter, bucket, gcra" + (allow_unknown ? " or unknown" : "") + ", not '" + v + "'");
}

std::string duration_text(ns_t t) {
  const long long s = static_cast<long long>(t / second);
  char buf[48];
  if (s >= 86400)
    std::snprintf(buf, sizeof buf, "%lldd %02lldh%02lldm", s / 86400, (s / 3600) % 24, (s / 60) % 60);
  else
    std::snprintf(buf, sizeof buf, "%lldh%02lldm%02llds", s / 3600, (s / 60) % 60, s % 60);
  return buf;
}

std::string limit_text(const limit& l) {
  if (l.is_unlimited()) return "unlimited";
  if (!l.is_known()) return "unknown";
  return std::to_string(*l.value());
}

struct progress_line {
  bool enabled;
  std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
  bool shown = false;
  void operator()(const char* what, double f) {
    if (!enabled) return;
    const auto el = std::chrono::steady_clock::now() - start;
    if (el < std::chrono::seconds(1) && f < 1.0) return;
    if (f >= 1.0 && !shown) return;  // finished quickly: no line at all
    std::fprintf(stderr, "\r%s: %5.1f%%", what, 100.0 * f);
    shown = true;
    if (f >= 1.0) std::fprintf(stderr, "\n");
  }
};

void write_svg(const std::string& file, const job& jb, const run_result& paced, const run_result& unpaced) {
  std::ofstream out(file);
  if (!out) fail("cannot write " + file);
  const int width = 900, panel = 260, margin = 60;
  const std::size_t minutes = std::max<std::size_t>(1, std::max(paced.req_per_min.size(), unpaced.req_per_min.size()));
  auto panel_svg = [&](int top, const char* title, const std::vector<std::uint64_t>& a, const std::vector<std::uint64_t>& b,
                       std::optional<std::uint64_t> lim) {
    std::uint64_t ymax = lim ? *lim : 1;
    for (auto v : a) ymax = std::max(ymax, v);
    for (auto v : b) ymax = std::max(ymax, v);
    ymax = ymax + ymax / 10 + 1;
    auto x = [&](std::size_t i) { return margin + static_cast<double>(i) * (width - 2 * margin) / static_cast<double>(minutes); };
    auto y = [&](double v) { return top + panel - v * panel / static_cast<double>(ymax); };
    out << "<text x='" << margin << "' y='" << top - 8 << "' font-size='14'>" << title << "</text>\n";
    out << "<rect x='" << margin << "' y='" << top << "' width='" << width - 2 * margin << "' height='" << panel
        << "' fill='none' stroke='#999'/>\n";
    out << "<text x='" << margin - 6 << "' y='" << top + 10 << "' font-size='10' text-anchor='end'>" << ymax << "</text>\n";
    out << "<text x='" << margin - 6 << "' y='" << top + panel << "' font-size='10' text-anchor='end'>0</text>\n";
    auto line = [&](const std::vector<std::uint64_t>& v, const char* color) {
      out << "<polyline fill='none' stroke='" << color << "' stroke-width='1.5' points='";
      for (std::size_t i = 0; i < v.size(); ++i) out << x(i) << ',' << y(static_cast<double>(v[i])) << ' ' << x(i + 1) << ','
                                                     << y(static_cast<double>(v[i])) << ' ';
      out << "'/>\n";
    };
    line(b, "#e6842a");
    line(a, "#1f77b4");
    if (lim) {
      out << "<line x1='" << margin << "' x2='" << width - margin << "' y1='" << y(static_cast<double>(*lim)) << "' y2='"
          << y(static_cast<double>(*lim)) << "' stroke='#d62728' stroke-dasharray='6 4'/>\n";
    }
  };
  const int height = 2 * panel + 3 * margin + 40;
  out << "<svg xmlns='http://www.w3.org/2000/svg' width='" << width << "' height='" << height
      << "' font-family='sans-serif'>\n<rect width='100%' height='100%' fill='white'/>\n";
  panel_svg(margin, "requests accepted per minute (red: the RPM limit)", paced.req_per_min, unpaced.req_per_min, jb.tier.rpm.value());
  panel_svg(2 * margin + panel, "tokens counted per minute, prompt + max_tokens (red: the TPM limit)", paced.tok_per_min,
            unpaced.tok_per_min, jb.tier.tpm.value());
  const int ly = 2 * panel + 2 * margin + 30;
  out << "<text x='" << margin << "' y='" << ly << "' font-size='12' fill='#1f77b4'>paced by tollgate</text>\n";
  out << "<text x='" << margin + 160 << "' y='" << ly << "' font-size='12' fill='#e6842a'>unpaced, SDK retries</text>\n";
  out << "<text x='" << margin + 340 << "' y='" << ly << "' font-size='12'>x: minutes (0.." << minutes << ")</text>\n";
  out << "</svg>\n";
}

}  // namespace

int main(int argc, char** argv) {
  job jb;
  std::string table = "2026-09", model_id = "kimi-k2.6", svg, currency = "usd";
  std::optional<std::string> budget_text;
  std::uint64_t tier = 1;
  std::optional<std::uint64_t> rpm, tpm, tpd, conc;
  bool plan = false, quiet = false;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    const char* v = i + 1 < argc ? argv[i + 1] : nullptr;
    auto take = [&]() { ++i; return v; };
    if (a == "--help" || a == "-h") {
      std::fputs(help_text, stdout);
      return 0;
    } else if (a == "--table") {
      table = take() ? v : "";
      if (table != "2026-09" && table != "2026-05") fail("--table must be 2026-09 or 2026-05");
    } else if (a == "--tier") tier = parse_count(a, take(), 0, 5);
    else if (a == "--rpm") rpm = parse_count(a, take(), 1, 1000000000);
    else if (a == "--tpm") tpm = parse_count(a, take(), 1, 1000000000);
    else if (a == "--tpd") tpd = parse_count(a, take(), 1, 1000000000000ULL);
    else if (a == "--concurrency") conc = parse_count(a, take(), 1, 1000000);
    else if (a == "--model") model_id = take() ? v : "";
    else if (a == "--agents") jb.agents = static_cast<unsigned>(parse_count(a, take(), 1, 100000));
    else if (a == "--requests") jb.requests_per_agent = static_cast<unsigned>(parse_count(a, take(), 1, 100000));
    else if (a == "--prompt") jb.prompt = parse_range(a, take(), 10000000);
    else if (a == "--output") jb.output = parse_range(a, take(), 10000000);
    else if (a == "--max-tokens") {
      const char* x = take();
      if (x && std::string_view(x) == "none") jb.max_tokens.reset();
      else jb.max_tokens = parse_count(a, x, 1, 10000000);
    } else if (a == "--cache-hit") jb.cache_hit_percent = static_cast<unsigned>(parse_count(a, take(), 0, 100));
    else if (a == "--latency") jb.latency_ms = parse_range(a, take(), 3600000);
    else if (a == "--server") jb.server = parse_model(a, take(), false);
    else if (a == "--assume") jb.assumed = parse_model(a, take(), true);
    else if (a == "--retry-after") jb.server_retry_after = static_cast<ns_t>(parse_count(a, take(), 0, 86400)) * second;
    else if (a == "--currency") {
      currency = take() ? v : "";
      if (currency != "usd" && currency != "cny") fail("--currency must be usd or cny");
    } else if (a == "--budget") {
      if (!take()) fail("--budget needs an amount");
      budget_text = v;
    } else if (a == "--seed") jb.seed = parse_count(a, take(), 0, UINT64_MAX);
    else if (a == "--svg") {
      if (!take()) fail("--svg needs a file name");
      svg = v;
    } else if (a == "--plan") plan = true;
    else if (a == "--quiet") quiet = true;
    else fail("unknown option '" + std::string(a) + "'");
  }
  jb.model = model_by_id(model_id);
  if (!jb.model) fail("unknown model '" + model_id + "'");
  if (budget_text) {
    jb.budget_in_cny = currency == "cny";
    std::int64_t nanos = 0;
    parse_errc pe = parse_errc::ok;
    if (jb.budget_in_cny) {
      cny amount;
      pe = parse(*budget_text, amount);
      nanos = amount.nanos();
    } else {
      usd amount;
      pe = parse(*budget_text, amount);
      nanos = amount.nanos();
    }
    if (pe != parse_errc::ok) fail("--budget '" + *budget_text + "': " + message(pe));
    if (nanos <= 0) fail("--budget must be more than zero");
    jb.budget_nanos = nanos;
  }
  if (jb.model->status == model_status::retired)
    std::fprintf(stderr, "tollgate-sim: note: %s is retired (%s); costed with its last known prices\n", model_id.c_str(),
                 std::string(jb.model->status_date).c_str());
  if (jb.output.lo > jb.output.hi || jb.prompt.hi == 0) fail("--prompt must allow at least one token");
  if (jb.max_tokens && jb.output.lo > *jb.max_tokens) fail("--output cannot exceed --max-tokens");
  const auto& tt = table == "2026-05" ? kimi_tiers_2026_05 : kimi_tiers_2026_09;
  const std::optional<tier_row> row = tt.tier(static_cast<int>(tier));
  if (!row) fail("no tier " + std::to_string(tier) + " in table " + table);
  auto apply_overrides = [&](tier_row t) {
    if (rpm) t.rpm = limit(*rpm);
    if (tpm) t.tpm = limit(*tpm);
    if (tpd) t.tpd = limit(*tpd);
    if (conc) t.concurrency = limit(*conc);
    return t;
  };
  jb.tier = apply_overrides(*row);
  const std::uint64_t req_tokens = jb.prompt.hi + (jb.max_tokens ? *jb.max_tokens : jb.model->default_max_tokens.value_or(jb.output.hi));
  if (auto v = jb.tier.tpm.value(); v && req_tokens >= *v)
    fail("a request of up to " + std::to_string(req_tokens) + " tokens cannot fit a TPM of " + std::to_string(*v));
  if (jb.model->context_window && req_tokens > *jb.model->context_window)
    fail("prompt + max_tokens (" + std::to_string(req_tokens) + ") exceeds " + model_id + "'s context window");

  progress_line prog{!quiet};
  auto money_text = [&](const run_result& r) {
    if (currency == "cny") return r.cny_known ? format(r.cost_cny) : std::string("unknown (no CNY prices for this model)");
    return format(r.cost_usd);
  };
  auto nanos_text = [&](std::int64_t n) {
    return currency == "cny" ? format(cny::from_nanos(n)) : format(usd::from_nanos(n));
  };

  if (plan) {
    std::printf("Capacity plan: %u agents x %u requests of %s, prompt %llu-%llu, output %llu-%llu tokens; table %s (as of %s)\n",
                jb.agents, jb.requests_per_agent, model_id.c_str(), (unsigned long long)jb.prompt.lo,
                (unsigned long long)jb.prompt.hi, (unsigned long long)jb.output.lo, (unsigned long long)jb.output.hi,
                table.c_str(), std::string(tt.as_of).c_str());
    std::printf("| tier | concurrency | RPM | TPM | TPD | binding limit | time to finish (paced) | 429s | cost |\n");
    std::printf("|---|---|---|---|---|---|---|---|---|\n");
    for (const tier_row& t0 : tt.rows) {
      job j = jb;
      j.tier = apply_overrides(t0);
      if (auto v = j.tier.tpm.value(); v && req_tokens >= *v) {
        std::printf("| %d | %s | %s | %s | %s | requests do not fit TPM | - | - | - |\n", t0.tier,
                    limit_text(j.tier.concurrency).c_str(), limit_text(j.tier.rpm).c_str(), limit_text(j.tier.tpm).c_str(),
                    limit_text(j.tier.tpd).c_str());
        continue;
      }
      const run_result p = run(j, true, [&](double f) { prog("planning", f); });
      const binding b = binding_limit(j, p);
      std::string cost_cell = money_text(p);
      if (p.not_sent_budget > 0) cost_cell += " (" + std::to_string(p.not_sent_budget) + " not sent: budget)";
      std::printf("| %d | %s | %s | %s | %s | %s | %s | %llu | %s |\n", t0.tier, limit_text(j.tier.concurrency).c_str(),
                  limit_text(j.tier.rpm).c_str(), limit_text(j.tier.tpm).c_str(), limit_text(j.tier.tpd).c_str(), b.name,
                  duration_text(p.finish).c_str(), (unsigned long long)p.rejected_429, cost_cell.c_str());
    }
    return 0;
  }

  const run_result paced = run(jb, true, [&](double f) { prog("paced run", f); });
  const run_result unpaced = run(jb, false, [&](double f) { prog("unpaced run", f); });
  const binding b = binding_limit(jb, paced);
  const double mins = std::max(1.0, static_cast<double>(paced.finish) / static_cast<double>(minute));
  std::printf("tollgate-sim: %u agents x %u requests, %s, Tier%d of the %s table (as of %s)\n", jb.agents,
              jb.requests_per_agent, model_id.c_str(), jb.tier.tier, table.c_str(), std::string(tt.as_of).c_str());
  std::printf("limits: concurrency %s, RPM %s, TPM %s, TPD %s; server counts as: %s; account assumes: %s\n",
              limit_text(jb.tier.concurrency).c_str(), limit_text(jb.tier.rpm).c_str(), limit_text(jb.tier.tpm).c_str(),
              limit_text(jb.tier.tpd).c_str(), to_string(jb.server), to_string(jb.assumed));
  std::printf("account policies: RPM %s, TPM %s\n\n", paced.rpm_policy.c_str(), paced.tpm_policy.c_str());
  std::printf("| | paced by tollgate | unpaced (SDK retries) |\n|---|---|---|\n");
  std::printf("| requests completed | %llu of %llu | %llu of %llu |\n", (unsigned long long)paced.completed,
              (unsigned long long)(paced.completed + paced.failed + paced.not_sent_budget),
              (unsigned long long)unpaced.completed, (unsigned long long)(unpaced.completed + unpaced.failed));
  std::printf("| requests lost | %llu | %llu |\n", (unsigned long long)paced.failed, (unsigned long long)unpaced.failed);
  if (jb.budget_nanos)
    std::printf("| not sent: budget spent | %llu | (an SDK has no budget) |\n", (unsigned long long)paced.not_sent_budget);
  std::printf("| 429s | %llu | %llu |\n", (unsigned long long)paced.rejected_429, (unsigned long long)unpaced.rejected_429);
  std::printf("| retries | %llu | %llu |\n", (unsigned long long)paced.retries, (unsigned long long)unpaced.retries);
  std::printf("| time until all done or given up | %s | %s |\n", duration_text(paced.finish).c_str(), duration_text(unpaced.finish).c_str());
  std::printf("| cost | %s | %s |\n\n", money_text(paced).c_str(), money_text(unpaced).c_str());
  std::printf("binding limit: %s (the job alone would need: RPM %s, TPM %s, TPD %s, concurrency %s)\n", b.name,
              duration_text(b.by_rpm).c_str(), duration_text(b.by_tpm).c_str(), duration_text(b.by_tpd).c_str(),
              duration_text(b.by_concurrency).c_str());
  std::printf("paced throughput: %.1f requests/min (limit %s), %.0f tokens/min counted (limit %s)\n",
              static_cast<double>(paced.requests) / mins, limit_text(jb.tier.rpm).c_str(),
              static_cast<double>(paced.reserved_tokens) / mins, limit_text(jb.tier.tpm).c_str());
  if (jb.model) {
    const auto split = cost<usd_tag>(*jb.model, usage{paced.prompt_tokens, paced.cached_tokens, paced.output_tokens, 0, 0});
    std::printf("cost split (paced, USD): input %s, cached %s, output %s; tokens: %llu prompt (%llu cached), %llu output\n",
                format(split.input).c_str(), format(split.cached).c_str(), format(split.output).c_str(),
                (unsigned long long)paced.prompt_tokens, (unsigned long long)paced.cached_tokens,
                (unsigned long long)paced.output_tokens);
  }
  if (jb.budget_nanos)
    std::printf("budget (paced): %s, billed %s; %llu requests not sent because their worst case no longer fit\n",
                nanos_text(*jb.budget_nanos).c_str(), nanos_text(paced.budget_spent_nanos).c_str(),
                (unsigned long long)paced.not_sent_budget);
  if (!svg.empty()) {
    write_svg(svg, jb, paced, unpaced);
    std::printf("plot written to %s\n", svg.c_str());
  }
  return paced.rejected_429 == 0 ? 0 : 1;
}
