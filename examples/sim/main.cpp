// tollgate-sim: a swarm of agents against one Kimi account, in virtual time.
// Runs the job paced by tollgate and unpaced (as HTTP SDKs retry by default),
// and reports which limit binds, throughput against the limits, time to
// finish, 429s and the exact cost; --svg writes a plot, --plan compares tiers.
#include "swarm.hpp"

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fstream>
#include <sstream>
#include <set>
#include <string>
#include <string_view>
#include <vector>

using namespace tollgate_sim;

namespace {

// A bad option: one line, exit 2.
[[noreturn]] void fail(const std::string& msg) {
  std::fprintf(stderr, "tollgate-sim: %s (see --help)\n", msg.c_str());
  std::exit(2);
}
// A job that cannot be simulated as asked: one line, exit 2.
[[noreturn]] void refuse(const std::string& msg) {
  std::fprintf(stderr, "tollgate-sim: %s\n", msg.c_str());
  std::exit(2);
}

const char* const help_text =
    "usage: tollgate-sim [options]\n"
    "Runs a swarm of agents against one Kimi account in virtual time, paced by a\n"
    "tollgate account, and unpaced (retrying as HTTP SDKs do by default), and compares them.\n"
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
    "  --latency N|A-B           response time in ms (default 1 s + output / 60 tokens per s)\n"
    "  --server MODEL            the simulated server's window: fixed (fixed window), log (sliding\n"
    "                            log), counter (sliding-window counter), bucket (token bucket),\n"
    "                            gcra (even spacing); default log\n"
    "  --server-counts seen|admitted\n"
    "                            seen: each of the server's window counters also counts the\n"
    "                            requests it refuses (as HAProxy does), so retries keep it full;\n"
    "                            admitted: it counts only what it admits. Default admitted: of the\n"
    "                            two it is the unpaced baseline's better case, so the comparison\n"
    "                            does not flatter tollgate. The table shows the unpaced run under\n"
    "                            both; this flag sets the paced run's server, --plan and --svg\n"
    "  --assume MODEL            what the account assumes of the server: unknown (default: safe\n"
    "                            against every model), learn (the strict window until a 429 names\n"
    "                            the limit, then the margin policy) or one of the --server names\n"
    "  --retry-after S           seconds the server's 429 asks to wait (default 1, as Kimi sends)\n"
    "  --hidden-concurrency N    the server's real concurrency cap, below the tier's and unknown to\n"
    "                            the account, which then adapts its limit (adaptive_concurrency)\n"
    "  --other-client PERCENT    another client on the key sends PERCENT of the RPM limit; the\n"
    "                            server answers with x-ratelimit headers, which the paced account\n"
    "                            trusts (trust_rate_limit_headers)\n"
    "  --processes N             the paced swarm split over N worker processes (default 1): run once\n"
    "                            with one account shared by all of them (in shared memory or Redis)\n"
    "                            and once with one account per process at the tier's full limits,\n"
    "                            as N processes that each configure the tier do (not with --plan)\n"
    "  --currency usd|cny        currency of the cost and of --budget (default usd)\n"
    "  --budget AMOUNT           a spending limit for the paced run, e.g. 5 or 0.50 (in --currency);\n"
    "                            requests whose worst case no longer fits are not sent\n"
    "  --seed N                  random seed (default 1)\n"
    "  --svg FILE                write a plot of requests and tokens per minute (not with --plan)\n"
    "  --plan                    capacity planning: run the job paced at every tier of the table\n"
    "  --force                   run a job above the work limit below\n"
    "  --quiet                   no progress line\n"
    "Each option may be given once. Limits: a job of more than 10000000 simulated requests\n"
    "(agents x requests x 3 runs, or x 6 tiers with --plan) is refused unless --force; a run\n"
    "still going after 365 days of virtual time is stopped, and a job that would need longer\n"
    "at its limits is refused before it starts.\n"
    "Exit status: 0 the paced run had no 429s (--plan: at least one tier finished the job\n"
    "without a 429), 1 it had some (--plan: no tier did), 2 bad options or a job that cannot\n"
    "be simulated (one line on stderr says why).\n";

// Above this many simulated requests a run needs --force (10 to 20 s of work).
constexpr double work_limit = 10000000;

// Digits only: no sign, no spaces, no base prefix, nothing after.
std::uint64_t parse_count(std::string_view flag, const char* v, std::uint64_t lo, std::uint64_t hi) {
  if (!v) fail(std::string(flag) + " needs a value");
  const std::string_view s(v);
  bool ok = !s.empty() && s.size() <= 20;
  for (char c : s) ok = ok && c >= '0' && c <= '9';
  unsigned long long x = 0;
  if (ok) {
    errno = 0;
    char* end = nullptr;
    x = std::strtoull(v, &end, 10);
    ok = errno == 0 && end == v + s.size();
  }
  if (!ok || x < lo || x > hi)
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
  if (allow_unknown && s == "learn") return server_model::learn;
  fail(std::string(flag) + " must be fixed, log, counter, bucket" + (allow_unknown ? ", gcra, unknown or learn" : " or gcra") + ", not '" + v + "'");
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

// A long time in the unit a reader grasps: years, days, or h/m/s.
std::string rough_duration(ns_t t) {
  const double days = static_cast<double>(t) / static_cast<double>(24 * 60 * minute);
  char buf[48];
  if (t == INT64_MAX) return "more than 292 years";
  if (days >= 730) std::snprintf(buf, sizeof buf, "%.1f years", days / 365.25);
  else if (days >= 2 && t % (24 * 60 * minute) == 0) std::snprintf(buf, sizeof buf, "%.0f days", days);
  else if (days >= 2) std::snprintf(buf, sizeof buf, "%.1f days", days);
  else return duration_text(t);
  return buf;
}

const char* assumed_text(server_model m) {
  if (m == server_model::learn) return "learn (strict window until a 429 names the limit)";
  return m == server_model::unknown ? "unknown (safe against every model)" : to_string(m);
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

// Fails now, before any run, if `file` cannot be written; leaves no file behind.
void check_writable(const std::string& file) {
  const bool existed = static_cast<bool>(std::ifstream(file));
  {
    errno = 0;
    std::ofstream probe(file, std::ios::app);
    if (!probe)
      refuse("cannot write --svg file '" + file + "': " + (errno != 0 ? std::strerror(errno) : "it cannot be opened"));
  }
  if (!existed) std::remove(file.c_str());
}

void write_svg(const std::string& file, const job& jb, const run_result& paced, const run_result& unpaced) {
  std::ofstream out(file);
  if (!out) refuse("cannot write " + file);
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
  out << "<text x='" << margin + 160 << "' y='" << ly << "' font-size='12' fill='#e6842a'>unpaced, SDK retries (server counts "
      << to_string(jb.counting) << ")</text>\n";
  out << "<text x='" << margin + 500 << "' y='" << ly << "' font-size='12'>x: minutes (0.." << minutes << ")</text>\n";
  out << "</svg>\n";
}


// Says why a run did not finish, in one line, and exits 2; returns if it did.
void check_finished(const char* which, const job& jb, const run_result& r) {
  if (r.ended == run_result::end::done) return;
  const std::string done = std::to_string(r.completed + r.failed + r.not_sent_budget) + " of " + std::to_string(r.total) +
                           " requests done";
  if (r.ended == run_result::end::horizon)
    refuse(std::string("the ") + which + " run was still going after " + rough_duration(jb.horizon) +
         " of virtual time (" + done + "), the simulator's horizon: shrink the job or raise the limits");
  refuse(std::string("the ") + which + " run stopped at " + duration_text(r.ended_at) + " of virtual time (" + done +
       "): time no longer advances (the server refuses what the account admits and the retry waits 0 s?)");
}

std::string dimension_time(bool unlimited, ns_t t, bool is_tpd) {
  if (unlimited) return "unlimited";
  if (is_tpd && t == 0) return "no time (within one day's limit)";
  return duration_text(t);
}

int real_main(int argc, char** argv) {
  job jb;
  std::string table = "2026-09", model_id = "kimi-k2.6", svg, currency = "usd";
  std::optional<std::string> budget_text;
  std::uint64_t tier = 1;
  std::optional<std::uint64_t> rpm, tpm, tpd, conc;
  bool plan = false, quiet = false, force = false, svg_given = false;
  std::set<std::string> given;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    const char* v = i + 1 < argc ? argv[i + 1] : nullptr;
    auto take = [&]() { ++i; return v; };
    auto need = [&]() -> std::string {
      if (!take()) fail(std::string(a) + " needs a value");
      return v;
    };
    if (a == "--help" || a == "-h") {
      std::fputs(help_text, stdout);
      return 0;
    }
    if (!given.insert(std::string(a)).second) fail(std::string(a) + " is given twice");
    if (a == "--table") {
      table = need();
      if (table != "2026-09" && table != "2026-05") fail("--table must be 2026-09 or 2026-05, not '" + table + "'");
    } else if (a == "--tier") tier = parse_count(a, take(), 0, 5);
    else if (a == "--rpm") rpm = parse_count(a, take(), 1, 1000000000);
    else if (a == "--tpm") tpm = parse_count(a, take(), 1, 1000000000);
    else if (a == "--tpd") tpd = parse_count(a, take(), 1, 1000000000000ULL);
    else if (a == "--concurrency") conc = parse_count(a, take(), 1, 1000000);
    else if (a == "--model") model_id = need();
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
    else if (a == "--server-counts") {
      const std::string c = need();
      if (c == "seen") jb.counting = server_counting::seen;
      else if (c == "admitted") jb.counting = server_counting::admitted;
      else fail("--server-counts must be seen or admitted, not '" + c + "'");
    } else if (a == "--assume") jb.assumed = parse_model(a, take(), true);
    else if (a == "--hidden-concurrency") jb.hidden_concurrency = parse_count(a, take(), 1, 1000000);
    else if (a == "--other-client") jb.other_client_percent = static_cast<unsigned>(parse_count(a, take(), 1, 100));
    else if (a == "--processes") jb.processes = static_cast<unsigned>(parse_count(a, take(), 1, 1024));
    else if (a == "--retry-after") jb.server_retry_after = static_cast<ns_t>(parse_count(a, take(), 0, 86400)) * second;
    else if (a == "--currency") {
      currency = need();
      if (currency != "usd" && currency != "cny") fail("--currency must be usd or cny, not '" + currency + "'");
    } else if (a == "--budget") budget_text = need();
    else if (a == "--seed") jb.seed = parse_count(a, take(), 0, UINT64_MAX);
    else if (a == "--svg") {
      svg = need();
      svg_given = true;
      if (svg.empty()) fail("--svg needs a file name, not an empty one");
    } else if (a == "--plan") plan = true;
    else if (a == "--quiet") quiet = true;
    else if (a == "--force") force = true;
    else fail("unknown option '" + std::string(a) + "'");
  }
  if (plan && svg_given) fail("--svg plots one run; --plan runs one per tier and draws nothing");
  if (plan && jb.processes > 1) fail("--processes compares a shared account with one per process; --plan runs one per tier");
  if (jb.processes > jb.agents) fail("--processes " + std::to_string(jb.processes) + " is more than the " + std::to_string(jb.agents) + " agents");
  if (svg_given) check_writable(svg);  // before any run, not after it
  jb.model = model_by_id(model_id);
  if (!jb.model) {
    std::string known;
    for (const model_info& m : kimi_models) known += (known.empty() ? "" : ", ") + std::string(m.id);
    fail("unknown model '" + model_id + "'; the catalog has: " + known);
  }
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
  if (jb.prompt.hi == 0) fail("--prompt must allow at least one token");
  if (jb.max_tokens && jb.output.lo > *jb.max_tokens)
    fail("--output's lower end (" + std::to_string(jb.output.lo) + ") exceeds --max-tokens (" + std::to_string(*jb.max_tokens) + ")");
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

  // Refuse up front what the runs could not do: too much work, or longer than the horizon.
  const unsigned runs = plan ? static_cast<unsigned>(tt.rows.size()) : jb.processes > 1 ? 4 : 3;
  if (const double work = simulated_requests(jb, runs); work > work_limit && !force) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.3g", work);
    refuse(std::string("this job would simulate about ") + buf + " requests (" + std::to_string(jb.agents) + " agents x " +
         std::to_string(jb.requests_per_agent) + " requests x " + std::to_string(runs) + (plan ? " tiers" : " runs") +
         "), above the " + std::to_string(static_cast<long long>(work_limit)) +
         " the simulator runs without --force (a million takes a second or two)");
  }
  auto too_long = [&](const job& j) -> std::string {
    const binding e = expected_binding(j);
    if (e.longest() <= j.horizon) return {};
    return std::string("the job alone would need about ") + rough_duration(e.longest()) + " at its " + e.name + " limit";
  };

  progress_line prog{!quiet};
  auto money_text = [&](const run_result& r) {
    if (currency == "cny") return r.cny_known ? format(r.cost_cny) : std::string("unknown (no CNY prices for this model)");
    return format(r.cost_usd);
  };
  auto nanos_text = [&](std::int64_t n) {
    return currency == "cny" ? format(cny::from_nanos(n)) : format(usd::from_nanos(n));
  };

  if (plan) {
    // Every tier's configuration is checked before anything runs.
    for (const tier_row& t0 : tt.rows) {
      job j = jb;
      j.tier = apply_overrides(t0);
      const std::string p = config_problem(j);
      if (!p.empty() && p.rfind("a request of up to", 0) != 0) refuse("tier " + std::to_string(t0.tier) + ": " + p);
    }
    std::printf("Capacity plan: %u agents x %u requests of %s, prompt %llu-%llu, output %llu-%llu tokens; table %s (as of %s)\n",
                jb.agents, jb.requests_per_agent, model_id.c_str(), (unsigned long long)jb.prompt.lo,
                (unsigned long long)jb.prompt.hi, (unsigned long long)jb.output.lo, (unsigned long long)jb.output.hi,
                table.c_str(), std::string(tt.as_of).c_str());
    std::printf("server: %s, counting %s requests; account assumes: %s\n", to_string(jb.server), to_string(jb.counting),
                assumed_text(jb.assumed));
    std::printf("| tier | concurrency | RPM | TPM | TPD | binding limit | time to finish (paced) | 429s | cost |\n");
    std::printf("|---|---|---|---|---|---|---|---|---|\n");
    bool some_tier_fits = false;
    for (const tier_row& t0 : tt.rows) {
      job j = jb;
      j.tier = apply_overrides(t0);
      const std::string limits = limit_text(j.tier.concurrency) + " | " + limit_text(j.tier.rpm) + " | " +
                                 limit_text(j.tier.tpm) + " | " + limit_text(j.tier.tpd);
      if (const std::string p = config_problem(j); !p.empty()) {
        std::printf("| %d | %s | never sent: %s | - | - | - |\n", t0.tier, limits.c_str(), p.c_str());
        continue;
      }
      if (const std::string p = too_long(j); !p.empty()) {
        std::printf("| %d | %s | not run: %s, beyond the simulator's horizon of %s | - | - | - |\n", t0.tier, limits.c_str(), p.c_str(),
                    rough_duration(j.horizon).c_str());
        continue;
      }
      const run_result p = run(j, true, [&](double f) { prog("planning", f); });
      const binding b = binding_limit(j, p);
      std::string cost_cell = money_text(p);
      if (p.not_sent_budget > 0) cost_cell += " (" + std::to_string(p.not_sent_budget) + " not sent: budget)";
      std::string time_cell = duration_text(p.finish);
      if (p.ended == run_result::end::horizon) time_cell = "stopped at the horizon (" + rough_duration(j.horizon) + ")";
      else if (p.ended == run_result::end::stalled) time_cell = "stopped: time no longer advances";
      if (p.ended != run_result::end::done)
        time_cell += " (" + std::to_string(p.completed + p.failed + p.not_sent_budget) + " of " + std::to_string(p.total) + " done)";
      std::printf("| %d | %s | %s | %s | %llu | %s |\n", t0.tier, limits.c_str(), b.name, time_cell.c_str(),
                  (unsigned long long)p.rejected_429, cost_cell.c_str());
      if (p.ended == run_result::end::done && p.rejected_429 == 0) some_tier_fits = true;
    }
    if (!some_tier_fits) std::printf("no tier finishes this job without a 429; exit status 1\n");
    return some_tier_fits ? 0 : 1;
  }

  if (const std::string p = config_problem(jb); !p.empty()) refuse(p);
  if (const std::string p = too_long(jb); !p.empty())
    refuse(p + "; the simulator stops runs at " + rough_duration(jb.horizon) + " of virtual time: shrink the job or raise the limits");
  const run_result paced = run(jb, true, [&](double f) { prog("paced run", f); });
  check_finished("paced", jb, paced);
  // N processes, one account each at the full limits: what the shared one replaces.
  // It may never finish (each 429 resent into a server that counts it): it
  // stops at ten times the shared account's time, and the table says so.
  std::optional<run_result> per_process;
  job jp = jb;
  jp.shared_account = false;
  jp.horizon = std::min(jb.horizon, std::max<ns_t>(minute, paced.finish > jb.horizon / 10 ? jb.horizon : 10 * paced.finish));
  if (jb.processes > 1)
    per_process = run(jp, true, [&](double f) { prog("paced run, one account per process", f); });
  job ja = jb, js = jb;
  ja.counting = server_counting::admitted;
  js.counting = server_counting::seen;
  const run_result unpaced_admitted = run(ja, false, [&](double f) { prog("unpaced run, counting admitted", f); });
  check_finished("unpaced", ja, unpaced_admitted);
  const run_result unpaced_seen = run(js, false, [&](double f) { prog("unpaced run, counting seen", f); });
  check_finished("unpaced", js, unpaced_seen);
  const run_result& unpaced = jb.counting == server_counting::seen ? unpaced_seen : unpaced_admitted;
  // The paced run under the other counting only differs if its server refused something.
  std::optional<run_result> paced_other;
  if (paced.rejected_429 > 0) {
    job jo = jb;
    jo.counting = jb.counting == server_counting::seen ? server_counting::admitted : server_counting::seen;
    paced_other = run(jo, true, [&](double f) { prog("paced run, other counting", f); });
    check_finished("paced", jo, *paced_other);
  }

  const binding b = binding_limit(jb, paced);
  const double mins = std::max(1.0, static_cast<double>(paced.finish) / static_cast<double>(minute));
  std::printf("tollgate-sim: %u agents x %u requests, %s, Tier%d of the %s table (as of %s)\n", jb.agents,
              jb.requests_per_agent, model_id.c_str(), jb.tier.tier, table.c_str(), std::string(tt.as_of).c_str());
  std::printf("limits: concurrency %s, RPM %s, TPM %s, TPD %s\n", limit_text(jb.tier.concurrency).c_str(),
              limit_text(jb.tier.rpm).c_str(), limit_text(jb.tier.tpm).c_str(), limit_text(jb.tier.tpd).c_str());
  std::printf("server: %s, counting %s requests (paced run); account assumes: %s\n", to_string(jb.server),
              to_string(jb.counting), assumed_text(jb.assumed));
  std::printf("account policies: RPM %s, TPM %s\n", paced.rpm_policy.c_str(), paced.tpm_policy.c_str());
  if (per_process)
    std::printf("processes: %u, paced by one shared account, and by one account per process at the tier's full limits\n",
                jb.processes);
  std::printf("\n");

  struct column {
    std::string label;
    const run_result* r;
    bool paced;
  };
  std::vector<column> cols;
  const std::string mode = to_string(jb.counting);
  if (paced_other) {
    cols.push_back({"paced, server counts " + mode, &paced, true});
    cols.push_back({std::string("paced, server counts ") + to_string(jb.counting == server_counting::seen ? server_counting::admitted : server_counting::seen), &*paced_other, true});
  } else {
    cols.push_back({per_process ? "paced, one shared account" : "paced by tollgate", &paced, true});
  }
  if (per_process) cols.push_back({"paced, one account per process", &*per_process, true});
  cols.push_back({"unpaced, server counts admitted", &unpaced_admitted, false});
  cols.push_back({"unpaced, server counts seen", &unpaced_seen, false});
  auto row_out = [&](const char* name, const std::function<std::string(const column&)>& cell) {
    std::printf("| %s |", name);
    for (const column& c : cols) std::printf(" %s |", cell(c).c_str());
    std::printf("\n");
  };
  auto num = [](std::uint64_t x) { return std::to_string(x); };
  std::printf("| |");
  for (const column& c : cols) std::printf(" %s |", c.label.c_str());
  std::printf("\n|---|");
  for (std::size_t i = 0; i < cols.size(); ++i) std::printf("---|");
  std::printf("\n");
  row_out("requests completed", [&](const column& c) { return num(c.r->completed) + " of " + num(c.r->total); });
  row_out("requests lost (given up)", [&](const column& c) { return num(c.r->failed); });
  if (jb.budget_nanos)
    row_out("not sent: budget spent", [&](const column& c) { return c.paced ? num(c.r->not_sent_budget) : std::string("(an SDK has no budget)"); });
  row_out("429s", [&](const column& c) { return num(c.r->rejected_429); });
  row_out("retries", [&](const column& c) { return num(c.r->retries); });
  row_out("time until all done or given up", [&](const column& c) {
    if (c.r->ended == run_result::end::horizon)
      return "not done after " + duration_text(c.r == &paced ? jb.horizon : jp.horizon);
    if (c.r->ended == run_result::end::stalled) return std::string("stopped: time no longer advances");
    return duration_text(c.r->finish);
  });
  row_out("cost", [&](const column& c) { return money_text(*c.r); });
  std::printf("\n");
  if (!paced_other)
    std::printf("The paced run had no 429s, so how the server counts refusals does not change it.\n");
  std::printf("Server counts admitted: a window counter counts only what it admits; seen: also what it refuses (as HAProxy does).\n\n");
  std::printf("binding limit: %s (the job alone would need: RPM %s, TPM %s, TPD %s, concurrency %s)\n", b.name,
              dimension_time(b.rpm_unlimited, b.by_rpm, false).c_str(), dimension_time(b.tpm_unlimited, b.by_tpm, false).c_str(),
              dimension_time(b.tpd_unlimited, b.by_tpd, true).c_str(),
              dimension_time(b.concurrency_unlimited, b.by_concurrency, false).c_str());
  std::printf("paced throughput: %.1f requests/min (limit %s), %.0f tokens/min counted as prompt + max_tokens (limit %s)\n",
              static_cast<double>(paced.requests) / mins, limit_text(jb.tier.rpm).c_str(),
              static_cast<double>(paced.reserved_tokens) / mins, limit_text(jb.tier.tpm).c_str());
  {
    // What the server accepted (a 429'd request counts once, when it went
    // through) per minute in the steady state: the mean of the whole minutes
    // between the first and the last (all of them for a run of fewer than 3).
    const std::size_t k = paced.req_per_min.size();
    const std::size_t lo = k >= 3 ? 1 : 0, hi = k >= 3 ? k - 1 : k;
    std::uint64_t reqs = 0, toks = 0;
    for (std::size_t i = lo; i < hi; ++i) {
      reqs += paced.req_per_min[i];
      toks += paced.tok_per_min[i];
    }
    auto share = [&](double x, const limit& l) {
      const auto v = l.value();
      return v ? " (" + std::to_string(static_cast<int>(100.0 * x / static_cast<double>(*v) + 0.5)) + " % of the limit)"
               : std::string();
    };
    const double span = static_cast<double>(hi > lo ? hi - lo : 1);
    const double rq = static_cast<double>(reqs) / span, tk = static_cast<double>(toks) / span;
    std::printf("paced goodput: %.2f requests/min accepted%s, %.0f tokens/min accepted%s, in the steady state\n", rq,
                share(rq, jb.tier.rpm).c_str(), tk, share(tk, jb.tier.tpm).c_str());
  }
  {
    // In the currency of the cost line above (--currency), so the parts add up to it.
    const usage u{paced.prompt_tokens, paced.cached_tokens, paced.output_tokens, 0, 0};
    auto parts = [](const auto& split) {
      return "input " + format(split.input) + ", cached " + format(split.cached) + ", output " + format(split.output);
    };
    std::string text;
    if (currency == "cny") {
      const auto split = cost<cny_tag>(*jb.model, u);
      text = split ? parts(split) : std::string("unknown (no CNY prices for this model)");
    } else {
      text = parts(cost<usd_tag>(*jb.model, u));
    }
    std::printf("cost split (paced, %s): %s; tokens: %llu prompt (%llu cached), %llu output\n",
                currency == "cny" ? "CNY" : "USD", text.c_str(), (unsigned long long)paced.prompt_tokens,
                (unsigned long long)paced.cached_tokens, (unsigned long long)paced.output_tokens);
  }
  if (jb.budget_nanos)
    std::printf("budget (paced): %s, billed %s; %llu requests not sent because their worst case no longer fit\n",
                nanos_text(*jb.budget_nanos).c_str(), nanos_text(paced.budget_spent_nanos).c_str(),
                (unsigned long long)paced.not_sent_budget);
  if (jb.other_client_percent > 0)
    std::printf("other client (paced run): %llu of %llu requests accepted; the account trusted the server's "
                "x-ratelimit headers\n",
                (unsigned long long)paced.other_accepted, (unsigned long long)paced.other_sent);
  if (jb.hidden_concurrency) {
    std::printf("adaptive concurrency (paced): the server's hidden cap %llu against the tier's %s; limit %llu at the end, "
                "%llu drops (%llu signals), %llu rises; %llu concurrency 429s\n",
                (unsigned long long)*jb.hidden_concurrency, limit_text(jb.tier.concurrency).c_str(),
                (unsigned long long)paced.adaptive.limit, (unsigned long long)paced.adaptive.drops,
                (unsigned long long)paced.adaptive.signals, (unsigned long long)paced.adaptive.rises,
                (unsigned long long)paced.rejected_by[static_cast<int>(server::verdict::concurrency)]);
  }
  if (jb.assumed == server_model::learn) {
    using account_policy::learn_phase;
    auto when = [](const std::optional<nanoseconds>& t, learn_phase p) {
      if (t) return "switched to the margin policy at " + duration_text(t->count());
      return std::string(p == learn_phase::strict ? "stayed on the strict window" : "on the margin policy from the start");
    };
    std::printf("learned (paced): RPM %s, TPM %s; spacing margin %.0f ms (%llu widenings)\n",
                when(paced.learned.requests_switched_at, paced.learned.requests).c_str(),
                when(paced.learned.tokens_switched_at, paced.learned.tokens).c_str(),
                static_cast<double>(paced.learned.margin.count()) / 1e6, (unsigned long long)paced.learned.widenings);
  }
  if (paced.rejected_429 > 0 && jb.assumed == server_model::learn)
    std::printf("the paced run got %llu 429s: learning from the server (%s) costs at most one per limit; exit status 1\n",
                (unsigned long long)paced.rejected_429, to_string(jb.server));
  else if (paced.rejected_429 > 0)
    std::printf("the paced run got %llu 429s: the server (%s) counts in a way the account's assumption (%s) does not "
                "cover; exit status 1\n",
                (unsigned long long)paced.rejected_429, to_string(jb.server), to_string(jb.assumed));
  if (!svg.empty()) {
    write_svg(svg, jb, paced, unpaced);
    std::printf("plot written to %s\n", svg.c_str());
  }
  return paced.rejected_429 == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  // Every library refusal the checks above did not foresee still ends in one line.
  try {
    return real_main(argc, argv);
  } catch (const config_error& e) {
    refuse(std::string("the library refused the configuration: ") + e.what());
  } catch (const std::exception& e) {
    refuse(std::string("internal error: ") + e.what());
  }
}
