// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// http.hpp: pure parsers for what an LLM API answers about its limits. No
// I/O and no JSON library: std::string_view in, values out. Every function
// accepts any byte string; what it cannot read is "absent" or
// error_kind::unknown, never a crash (the parsers are fuzzed).
//
//   parse_retry_after      "120", "1.5", or an HTTP-date (against `now`)
//   parse_retry_after_ms   "250", "12.5"           (retry-after-ms)
//   parse_go_duration      "1s", "6m0s", "12ms", "2h31m16.752s", "500us"
//   rate_limit_headers     the six x-ratelimit-{limit,remaining,reset}-{requests,tokens}
//   classify(status, body) Kimi's (and OpenAI's) error bodies -> what happened,
//                          whether to retry, and the numbers in the message
#ifndef TOLLGATE_HTTP_HPP
#define TOLLGATE_HTTP_HPP

#include <tollgate/config.hpp>
#include <tollgate/clock.hpp>
#include <tollgate/detail/arith.hpp>

#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <string_view>

TOLLGATE_BEGIN_NAMESPACE

namespace detail {
constexpr char lower(char c) noexcept { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }
constexpr bool iequals(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (lower(a[i]) != lower(b[i])) return false;
  return true;
}
constexpr std::size_t ifind(std::string_view hay, std::string_view needle, std::size_t from = 0) noexcept {
  if (needle.size() > hay.size()) return std::string_view::npos;
  for (std::size_t i = from; i + needle.size() <= hay.size(); ++i)
    if (iequals(hay.substr(i, needle.size()), needle)) return i;
  return std::string_view::npos;
}
constexpr std::string_view trim(std::string_view s) noexcept {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r' || s.back() == '\n')) s.remove_suffix(1);
  return s;
}
constexpr bool is_digit(char c) noexcept { return c >= '0' && c <= '9'; }

// A non-negative decimal number of `unit` nanoseconds, with an optional
// fraction (rounded up to the nanosecond: never early). Saturates at about
// 292 years; anything else is absent.
constexpr std::optional<nanoseconds> decimal_duration(std::string_view s, std::uint64_t unit) noexcept {
  s = trim(s);
  if (s.empty()) return std::nullopt;
  std::uint64_t whole = 0, frac = 0, scale = 1;
  bool any = false, dot = false, big = false, dropped = false;
  for (char c : s) {
    if (c == '.' && !dot) {
      dot = true;
      continue;
    }
    if (!is_digit(c)) return std::nullopt;
    any = true;
    const std::uint64_t d = static_cast<std::uint64_t>(c - '0');
    if (!dot) {
      if (whole > (std::numeric_limits<std::uint64_t>::max() - d) / 10)
        big = true;
      else
        whole = whole * 10 + d;
    } else if (scale < 1000000000000000000ULL) {
      frac = frac * 10 + d;
      scale *= 10;
    } else if (d != 0) {
      dropped = true;  // beyond 18 decimals: round up below
    }
  }
  if (!any) return std::nullopt;
  constexpr std::uint64_t max_ns = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
  if (big || whole > max_ns / unit) return nanoseconds(std::numeric_limits<std::int64_t>::max());
  std::uint64_t ns = whole * unit;
  // frac / scale of a unit, rounded up: frac < scale <= 10^18 and unit <= 10^9*3600.
  const u128 part = (static_cast<u128>(frac) * unit + scale - 1) / scale + (dropped ? 1 : 0);
  if (part > max_ns - ns) return nanoseconds(std::numeric_limits<std::int64_t>::max());
  ns += static_cast<std::uint64_t>(part);
  return nanoseconds(static_cast<std::int64_t>(ns));
}

constexpr std::optional<std::uint64_t> parse_uint(std::string_view s) noexcept {
  s = trim(s);
  if (s.empty()) return std::nullopt;
  std::uint64_t v = 0;
  for (char c : s) {
    if (!is_digit(c)) return std::nullopt;
    const std::uint64_t d = static_cast<std::uint64_t>(c - '0');
    if (v > (std::numeric_limits<std::uint64_t>::max() - d) / 10) return std::nullopt;
    v = v * 10 + d;
  }
  return v;
}

// Days from 1970-01-01 to y-m-d (proleptic Gregorian).
constexpr std::int64_t days_from_civil(std::int64_t y, std::int64_t m, std::int64_t d) noexcept {
  y -= m <= 2 ? 1 : 0;
  const std::int64_t era = (y >= 0 ? y : y - 399) / 400;
  const std::int64_t yoe = y - era * 400;
  const std::int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const std::int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

constexpr int month_index(std::string_view m) noexcept {
  constexpr std::string_view names[] = {"jan", "feb", "mar", "apr", "may", "jun",
                                        "jul", "aug", "sep", "oct", "nov", "dec"};
  for (int i = 0; i < 12; ++i)
    if (iequals(m, names[i])) return i + 1;
  return 0;
}

// "Sun, 06 Nov 1994 08:49:37 GMT" (IMF-fixdate), "Sunday, 06-Nov-94 08:49:37 GMT"
// (RFC 850) and "Sun Nov  6 08:49:37 1994" (asctime): seconds since 1970.
constexpr std::optional<std::int64_t> http_date(std::string_view s) noexcept {
  s = trim(s);
  // Split into tokens on spaces, commas, dashes and colons.
  std::string_view tok[8] = {};
  std::size_t n = 0, i = 0;
  while (i < s.size() && n < 8) {
    while (i < s.size() && (s[i] == ' ' || s[i] == ',' || s[i] == '-' || s[i] == ':')) ++i;
    const std::size_t b = i;
    while (i < s.size() && s[i] != ' ' && s[i] != ',' && s[i] != '-' && s[i] != ':') ++i;
    if (i > b) tok[n++] = s.substr(b, i - b);
  }
  if (i < s.size() && trim(s.substr(i)).size() > 0) return std::nullopt;
  // tokens: weekday day month year hh mm ss GMT | weekday month day hh mm ss year
  std::optional<std::uint64_t> day, year, hh, mm, ss;
  int month = 0;
  if (n == 8 && iequals(tok[7], "GMT")) {
    day = parse_uint(tok[1]);
    month = month_index(tok[2]);
    year = parse_uint(tok[3]);
    hh = parse_uint(tok[4]);
    mm = parse_uint(tok[5]);
    ss = parse_uint(tok[6]);
    if (year && tok[3].size() == 2) *year += *year < 70 ? 2000 : 1900;  // RFC 850 two-digit year
  } else if (n == 7) {
    month = month_index(tok[1]);
    day = parse_uint(tok[2]);
    hh = parse_uint(tok[3]);
    mm = parse_uint(tok[4]);
    ss = parse_uint(tok[5]);
    year = parse_uint(tok[6]);
  } else {
    return std::nullopt;
  }
  if (!day || !year || !hh || !mm || !ss || month == 0 || *day < 1 || *day > 31 || *year > 9999 || *hh > 23 ||
      *mm > 59 || *ss > 60)
    return std::nullopt;
  const std::int64_t days =
      days_from_civil(static_cast<std::int64_t>(*year), month, static_cast<std::int64_t>(*day));
  return days * 86400 + static_cast<std::int64_t>(*hh * 3600 + *mm * 60 + *ss);
}
}  // namespace detail

// Retry-After: delta-seconds (fractions accepted, rounded up to the
// nanosecond) or an HTTP-date, compared with `now` (nanoseconds since
// 1970-01-01Z; a date in the past means 0). Absent when unreadable.
constexpr std::optional<nanoseconds> parse_retry_after(std::string_view v, nanoseconds now_since_epoch) noexcept {
  if (auto d = detail::decimal_duration(v, 1000000000)) return d;
  if (auto t = detail::http_date(v)) {
    const std::int64_t now_s = now_since_epoch.count() / 1000000000;
    const std::int64_t now_frac = now_since_epoch.count() % 1000000000;
    if (*t <= now_s) return nanoseconds(0);
    const std::int64_t secs = *t - now_s;  // up to year 9999: may not fit in nanoseconds
    if (secs > std::numeric_limits<std::int64_t>::max() / 1000000000 - 1)
      return nanoseconds(std::numeric_limits<std::int64_t>::max());
    return nanoseconds(secs * 1000000000 - now_frac);
  }
  return std::nullopt;
}

// retry-after-ms: milliseconds, fractions accepted.
constexpr std::optional<nanoseconds> parse_retry_after_ms(std::string_view v) noexcept {
  return detail::decimal_duration(v, 1000000);
}

// A Go duration as in x-ratelimit-reset-*: a sequence of decimal numbers with
// units h, m, s, ms, us (or µs), ns: "6m0s", "12ms", "2h31m16.752s". "0" alone
// is zero. Absent when unreadable.
constexpr std::optional<nanoseconds> parse_go_duration(std::string_view s) noexcept {
  s = detail::trim(s);
  if (s == "0") return nanoseconds(0);
  if (s.empty()) return std::nullopt;
  std::uint64_t total = 0;
  constexpr std::uint64_t max_ns = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
  std::size_t i = 0;
  while (i < s.size()) {
    const std::size_t b = i;
    while (i < s.size() && (detail::is_digit(s[i]) || s[i] == '.')) ++i;
    if (i == b) return std::nullopt;
    const std::string_view num = s.substr(b, i - b);
    const std::size_t u = i;
    while (i < s.size() && !detail::is_digit(s[i]) && s[i] != '.') ++i;
    const std::string_view unit = s.substr(u, i - u);
    std::uint64_t scale = 0;
    if (unit == "h") scale = 3600000000000ULL;
    else if (unit == "m") scale = 60000000000ULL;
    else if (unit == "s") scale = 1000000000ULL;
    else if (unit == "ms") scale = 1000000ULL;
    else if (unit == "us" || unit == "\xC2\xB5s" || unit == "\xCE\xBCs") scale = 1000ULL;
    else if (unit == "ns") scale = 1ULL;
    else return std::nullopt;
    const auto part = detail::decimal_duration(num, scale);
    if (!part) return std::nullopt;
    const std::uint64_t p = static_cast<std::uint64_t>(part->count());
    total = p > max_ns - total ? max_ns : total + p;
  }
  return nanoseconds(static_cast<std::int64_t>(total));
}

// The OpenAI-style rate-limit headers. Feed each response header through
// `read`; the ones not present stay empty. `read`'s time is Unix time
// (system_clock::now()), not an account's steady `now`: an HTTP-date
// Retry-After is turned into a wait against it.
struct rate_limit_headers {
  std::optional<std::uint64_t> limit_requests, limit_tokens, remaining_requests, remaining_tokens;
  std::optional<nanoseconds> reset_requests, reset_tokens;
  // Hints to wait before retrying, in the order the Stainless SDKs read them.
  std::optional<nanoseconds> retry_after_ms, retry_after, x_retry_after;

  // Returns true if the header was one of these (even if its value was unreadable).
  constexpr bool read(std::string_view name, std::string_view value, nanoseconds now_since_epoch) noexcept {
    name = detail::trim(name);
    using detail::iequals;
    if (iequals(name, "x-ratelimit-limit-requests")) limit_requests = detail::parse_uint(value);
    else if (iequals(name, "x-ratelimit-limit-tokens")) limit_tokens = detail::parse_uint(value);
    else if (iequals(name, "x-ratelimit-remaining-requests")) remaining_requests = detail::parse_uint(value);
    else if (iequals(name, "x-ratelimit-remaining-tokens")) remaining_tokens = detail::parse_uint(value);
    else if (iequals(name, "x-ratelimit-reset-requests")) reset_requests = parse_go_duration(value);
    else if (iequals(name, "x-ratelimit-reset-tokens")) reset_tokens = parse_go_duration(value);
    else if (iequals(name, "retry-after-ms")) retry_after_ms = parse_retry_after_ms(value);
    else if (iequals(name, "retry-after")) retry_after = parse_retry_after(value, now_since_epoch);
    else if (iequals(name, "x-retry-after")) x_retry_after = parse_retry_after(value, now_since_epoch);
    else return false;
    return true;
  }
  // The server's wait hint: retry-after-ms, else retry-after, else x-retry-after.
  constexpr std::optional<nanoseconds> retry_hint() const noexcept {
    if (retry_after_ms) return retry_after_ms;
    if (retry_after) return retry_after;
    return x_retry_after;
  }
};

// What an error response means for the caller.
enum class error_kind : unsigned char {
  none,               // 2xx
  concurrency,        // rate_limit_reached_error: too many requests in flight
  rpm,                // ... requests per minute
  tpm,                // ... tokens per minute (organization or project)
  tpd,                // ... tokens per day: wait for the daily reset, do not spin
  rate_limit,         // a rate limit whose dimension the message does not name
  overloaded,         // engine_overloaded_error: server capacity, not your limit
  quota,              // exceeded_current_quota_error / insufficient_quota: balance; never retry
  auth,               // 401: bad key (keys of kimi.ai, kimi.com and Kimi Code do not mix)
  plan_membership,    // 402 (Kimi Code): membership not verified
  plan_usage,         // 403 (Kimi Code): 5-hour / weekly / monthly usage limit reached
  plan_concurrency,   // 403 (Kimi Code): concurrent request limit
  permission_denied,  // 403: API not open to this account, IP allow-list
  context_too_long,   // 400: prompt (+ max_tokens) beyond the model's context
  content_filter,     // 400: rejected as high risk
  invalid_request,    // other 400s
  not_found,          // 404: unknown or retired model, or tier not unlocked
  server_error,       // 500, 502, 503: retry with backoff
  timeout,            // 504: retry, prefer streaming
  client_closed,      // 499
  unknown,            // anything else
};

constexpr const char* to_string(error_kind k) noexcept {
  switch (k) {
    case error_kind::none: return "none";
    case error_kind::concurrency: return "concurrency";
    case error_kind::rpm: return "rpm";
    case error_kind::tpm: return "tpm";
    case error_kind::tpd: return "tpd";
    case error_kind::rate_limit: return "rate_limit";
    case error_kind::overloaded: return "overloaded";
    case error_kind::quota: return "quota";
    case error_kind::auth: return "auth";
    case error_kind::plan_membership: return "plan_membership";
    case error_kind::plan_usage: return "plan_usage";
    case error_kind::plan_concurrency: return "plan_concurrency";
    case error_kind::permission_denied: return "permission_denied";
    case error_kind::context_too_long: return "context_too_long";
    case error_kind::content_filter: return "content_filter";
    case error_kind::invalid_request: return "invalid_request";
    case error_kind::not_found: return "not_found";
    case error_kind::server_error: return "server_error";
    case error_kind::timeout: return "timeout";
    case error_kind::client_closed: return "client_closed";
    case error_kind::unknown: return "unknown";
  }
  return "?";
}

// Whether a request that failed this way may be sent again (after waiting).
constexpr bool retryable(error_kind k) noexcept {
  switch (k) {
    case error_kind::concurrency:
    case error_kind::rpm:
    case error_kind::tpm:
    case error_kind::tpd:
    case error_kind::rate_limit:
    case error_kind::overloaded:
    case error_kind::plan_usage:
    case error_kind::plan_concurrency:
    case error_kind::server_error:
    case error_kind::timeout:
      return true;
    default:
      return false;
  }
}

struct error_info {
  error_kind kind = error_kind::unknown;
  int status = 0;
  bool retry = false;
  bool project_scope = false;           // a project-level, not organization-level, limit
  std::optional<std::uint64_t> limit;   // the limit named in the message ("max RPM: 200", "limit: 64000")
  std::optional<std::uint64_t> current; // the usage named in the message ("current: 64001")
  std::optional<nanoseconds> hint;      // "please try again after N seconds"
  // These two view into the body given to classify: they are valid only as
  // long as it is.
  std::string_view type;                // error.type, as sent
  std::string_view message;             // error.message, raw (JSON escapes not decoded)
};

namespace detail {
// The raw string value of the first "key": "value" pair in a JSON text, or
// empty. Escapes are skipped over, not decoded.
constexpr std::string_view json_string(std::string_view body, std::string_view key) noexcept {
  std::size_t from = 0;
  while (from < body.size()) {
    const std::size_t k = body.find(key, from);
    if (k == std::string_view::npos) return {};
    from = k + key.size();
    if (k == 0 || body[k - 1] != '"' || from >= body.size() || body[from] != '"') continue;
    std::size_t i = from + 1;
    while (i < body.size() && (body[i] == ' ' || body[i] == '\t' || body[i] == '\n' || body[i] == '\r')) ++i;
    if (i >= body.size() || body[i] != ':') continue;
    ++i;
    while (i < body.size() && (body[i] == ' ' || body[i] == '\t' || body[i] == '\n' || body[i] == '\r')) ++i;
    if (i >= body.size() || body[i] != '"') continue;
    const std::size_t b = ++i;
    while (i < body.size() && body[i] != '"') i += body[i] == '\\' ? 2 : 1;
    if (i > body.size()) return {};
    return body.substr(b, i - b);
  }
  return {};
}

// The number after `label` in `msg` ("max RPM: 200" -> 200), case-insensitive.
constexpr std::optional<std::uint64_t> number_after(std::string_view msg, std::string_view label) noexcept {
  const std::size_t p = ifind(msg, label);
  if (p == std::string_view::npos) return std::nullopt;
  std::size_t i = p + label.size();
  while (i < msg.size() && (msg[i] == ' ' || msg[i] == ':')) ++i;
  const std::size_t b = i;
  while (i < msg.size() && is_digit(msg[i])) ++i;
  return parse_uint(msg.substr(b, i - b));
}
}  // namespace detail

// Classifies an error response from its status and body. Any bytes are fine.
constexpr error_info classify(int status, std::string_view body) noexcept {
  using detail::ifind;
  constexpr auto npos = std::string_view::npos;
  error_info e;
  e.status = status;
  e.type = detail::json_string(body, "type");
  const std::string_view code = detail::json_string(body, "code");
  e.message = detail::json_string(body, "message");
  const std::string_view msg = e.message.empty() ? body : e.message;
  // Case-insensitive search: lower-case the message once (messages are short;
  // a longer one is searched in place, more slowly), then plain finds.
  char low_buf[512] = {};
  const bool lowered = msg.size() <= sizeof low_buf;
  if (lowered)
    for (std::size_t i = 0; i < msg.size(); ++i) low_buf[i] = detail::lower(msg[i]);
  const std::string_view low(low_buf, lowered ? msg.size() : 0);
  // `needle` must be lower case.
  auto has = [&](std::string_view needle) { return lowered ? low.find(needle) != npos : ifind(msg, needle) != npos; };
  auto type_is = [&](std::string_view t) { return detail::iequals(e.type, t) || detail::iequals(code, t); };
  if (const auto after = detail::number_after(msg, "try again after"))
    e.hint = nanoseconds(static_cast<std::int64_t>(*after > 9000000000ULL ? 9000000000ULL : *after) * 1000000000);

  if (status >= 200 && status < 300) {
    e.kind = error_kind::none;
  } else if (type_is("exceeded_current_quota_error") || type_is("insufficient_quota") ||
             (status == 429 && (has("insufficient balance") || has("exceeded your current") || has("exceeded current quota")))) {
    e.kind = error_kind::quota;
  } else if (type_is("engine_overloaded_error")) {
    e.kind = error_kind::overloaded;
  } else if (type_is("rate_limit_reached_error") || type_is("rate_limit_exceeded") || type_is("rate_limit_error") ||
             status == 429) {
    e.project_scope = has("project");
    if (has("concurrency")) {
      e.kind = error_kind::concurrency;
      e.limit = detail::number_after(msg, "concurrency");
    } else if (has("rpm")) {
      e.kind = error_kind::rpm;
      e.limit = detail::number_after(msg, "RPM");
    } else if (has("tpd")) {
      e.kind = error_kind::tpd;
    } else if (has("tpm")) {
      e.kind = error_kind::tpm;
    } else if (detail::iequals(e.type, "requests")) {  // OpenAI: code rate_limit_exceeded, type requests
      e.kind = error_kind::rpm;
    } else if (detail::iequals(e.type, "tokens")) {
      e.kind = error_kind::tpm;
    } else if (has("overloaded") && !type_is("rate_limit_error")) {
      e.kind = error_kind::overloaded;
    } else {
      e.kind = error_kind::rate_limit;
    }
    if (e.kind == error_kind::tpm || e.kind == error_kind::tpd) {
      e.current = detail::number_after(msg, "current");
      e.limit = detail::number_after(msg, "limit:");
    }
  } else if (status == 401) {
    e.kind = error_kind::auth;
  } else if (status == 402) {
    e.kind = error_kind::plan_membership;
  } else if (status == 403) {
    if (has("usage limit"))
      e.kind = error_kind::plan_usage;
    else if (has("concurrent request limit"))
      e.kind = error_kind::plan_concurrency;
    else
      e.kind = error_kind::permission_denied;
  } else if (status == 400) {
    if (type_is("content_filter") || has("high risk"))
      e.kind = error_kind::content_filter;
    else if (has("token length too long") || has("exceeded model token limit") || has("context length") ||
             has("maximum context"))
      e.kind = error_kind::context_too_long;
    else
      e.kind = error_kind::invalid_request;
  } else if (status == 404) {
    e.kind = error_kind::not_found;
  } else if (status == 499) {
    e.kind = error_kind::client_closed;
  } else if (status == 504) {
    e.kind = error_kind::timeout;
  } else if (status >= 500 && status <= 599) {
    e.kind = error_kind::server_error;
  } else {
    e.kind = error_kind::unknown;
  }
  e.retry = retryable(e.kind);
  return e;
}

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_HTTP_HPP
