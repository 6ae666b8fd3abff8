#include "catch_compat.hpp"
#include "support.hpp"
#include "tollgate_under_test.hpp"

#include <string>

using namespace tollgate;
using namespace std::chrono;
using tgtest::ns;

namespace {
// 2026-11-23T00:00:00Z in nanoseconds since 1970.
constexpr ns monday = hours(24) * 20780;

std::string kimi_error(const char* type, const char* message) {
  return std::string("{\"error\":{\"message\":\"") + message + "\",\"type\":\"" + type + "\"}}";
}
}  // namespace

TEST_CASE("Retry-After: seconds, fractions, HTTP-dates", "[http]") {
  STATIC_REQUIRE(*parse_retry_after("120", ns(0)) == seconds(120));
  CHECK(*parse_retry_after(" 1 ", monday) == seconds(1));
  CHECK(*parse_retry_after("1152", monday) == seconds(1152));
  CHECK(*parse_retry_after("1.5", monday) == milliseconds(1500));
  CHECK(*parse_retry_after("0.0000000001", monday) == ns(1));  // rounded up, never early
  CHECK(*parse_retry_after("Mon, 23 Nov 2026 00:00:30 GMT", monday) == seconds(30));
  CHECK(*parse_retry_after("Monday, 23-Nov-26 00:01:00 GMT", monday) == minutes(1));
  CHECK(*parse_retry_after("Mon Nov 23 00:00:05 2026", monday) == seconds(5));
  CHECK(*parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", monday) == ns(0));  // in the past
  CHECK(*parse_retry_after("Mon, 23 Nov 2026 00:00:30 GMT", monday + milliseconds(250)) == milliseconds(29750));
  for (const char* bad : {"", "-1", "abc", "1e3", "1.2.3", "Mon, 32 Nov 2026 00:00:00 GMT", "Mon, 23 Foo 2026 00:00:00 GMT",
                          "Mon, 23 Nov 2026 25:00:00 GMT", "Mon, 23 Nov 2026 00:00:00 UTC"})
    CHECK_FALSE(parse_retry_after(bad, monday));
  CHECK(*parse_retry_after("99999999999999999999999", monday) == ns(std::numeric_limits<std::int64_t>::max()));
  CHECK(*parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", monday) == ns(std::numeric_limits<std::int64_t>::max()));
  CHECK(*parse_retry_after_ms("250") == milliseconds(250));
  CHECK(*parse_retry_after_ms("12.5") == microseconds(12500));
}

TEST_CASE("Go durations in x-ratelimit-reset-*", "[http]") {
  STATIC_REQUIRE(*parse_go_duration("1s") == seconds(1));
  CHECK(*parse_go_duration("6m0s") == minutes(6));
  CHECK(*parse_go_duration("12ms") == milliseconds(12));
  CHECK(*parse_go_duration("9ms") == milliseconds(9));
  CHECK(*parse_go_duration("1.2s") == milliseconds(1200));
  CHECK(*parse_go_duration("2h31m16.752s") == hours(2) + minutes(31) + milliseconds(16752));
  CHECK(*parse_go_duration("500us") == microseconds(500));
  CHECK(*parse_go_duration("500\xC2\xB5s") == microseconds(500));
  CHECK(*parse_go_duration("7ns") == ns(7));
  CHECK(*parse_go_duration("0") == ns(0));
  for (const char* bad : {"", "s", "1", "1x", "1s2", "-1s", "1..2s", "h1"}) CHECK_FALSE(parse_go_duration(bad));
}

TEST_CASE("the six x-ratelimit headers and the retry hints", "[http]") {
  rate_limit_headers h;
  CHECK(h.read("X-RateLimit-Limit-Requests", "5000", monday));
  CHECK(h.read("x-ratelimit-limit-tokens", "3000000", monday));
  CHECK(h.read("x-ratelimit-remaining-requests", "4999", monday));
  CHECK(h.read("x-ratelimit-remaining-tokens", "2999000", monday));
  CHECK(h.read("x-ratelimit-reset-requests", "12ms", monday));
  CHECK(h.read("x-ratelimit-reset-tokens", "6m0s", monday));
  CHECK_FALSE(h.read("content-type", "application/json", monday));
  CHECK(*h.limit_requests == 5000);
  CHECK(*h.remaining_tokens == 2999000);
  CHECK(*h.reset_requests == milliseconds(12));
  CHECK(*h.reset_tokens == minutes(6));
  CHECK_FALSE(h.retry_hint());
  // Azure sometimes sends -1: unreadable, so absent.
  CHECK(h.read("x-ratelimit-remaining-requests", "-1", monday));
  CHECK_FALSE(h.remaining_requests);
  // Kimi sent both retry-after and x-retry-after; retry-after-ms wins when present.
  CHECK(h.read("x-retry-after", "1", monday));
  CHECK(*h.retry_hint() == seconds(1));
  CHECK(h.read("Retry-After", "2", monday));
  CHECK(*h.retry_hint() == seconds(2));
  CHECK(h.read("retry-after-ms", "1500", monday));
  CHECK(*h.retry_hint() == milliseconds(1500));
}

TEST_CASE("classify: Kimi's rate_limit_reached_error, split by dimension with its numbers", "[http]") {
  // error_info's type and message view into the body: keep it alive.
  const std::string body = kimi_error("rate_limit_reached_error",
                                      "request reached max organization concurrency: 50, please try again after 1 seconds");
  const error_info c = classify(429, body);
  CHECK(c.kind == error_kind::concurrency);
  CHECK(*c.limit == 50);
  CHECK(*c.hint == seconds(1));
  CHECK(c.retry);
  CHECK(c.type == "rate_limit_reached_error");
  const error_info r = classify(429, kimi_error("rate_limit_reached_error",
                                               "request reached organization max RPM: 200, please try again after 1 seconds"));
  CHECK(r.kind == error_kind::rpm);
  CHECK(*r.limit == 200);
  const error_info t = classify(429, kimi_error("rate_limit_reached_error",
                                               "request reached organization TPM rate limit, current: 64001, limit: 64000"));
  CHECK(t.kind == error_kind::tpm);
  CHECK(*t.current == 64001);
  CHECK(*t.limit == 64000);
  CHECK_FALSE(t.project_scope);
  const error_info p = classify(429, kimi_error("rate_limit_reached_error",
                                               "request reached project TPM rate limit, current: 1410, limit: 100"));
  CHECK(p.kind == error_kind::tpm);
  CHECK(p.project_scope);
  CHECK(*p.limit == 100);
  const error_info d = classify(429, kimi_error("rate_limit_reached_error",
                                               "request reached organization TPD rate limit, current: 1500100, limit: 1500000"));
  CHECK(d.kind == error_kind::tpd);
  CHECK(*d.limit == 1500000);
  CHECK(d.retry);
  const error_info g = classify(429, kimi_error("rate_limit_reached_error",
                                               "Organization Rate limit exceeded, please try again after 1 seconds"));
  CHECK(g.kind == error_kind::rate_limit);
  CHECK(*g.hint == seconds(1));
}

TEST_CASE("classify: overload, quota, auth, plans, bad requests, server errors", "[http]") {
  const error_info o = classify(429, kimi_error("engine_overloaded_error",
                                               "The engine is currently overloaded, please try again later"));
  CHECK(o.kind == error_kind::overloaded);
  CHECK(o.retry);
  for (const char* m : {"Your account org-abc<ak-xyz> is suspended due to insufficient balance, please recharge your account or check your plan and billing details",
                        "You exceeded your current token quota: 0, please check your account balance",
                        "Your account org-abc is not active, organization org-abc exceeded current quota"}) {
    const error_info q = classify(429, kimi_error("exceeded_current_quota_error", m));
    CHECK(q.kind == error_kind::quota);
    CHECK_FALSE(q.retry);  // a balance problem: never retry
  }
  CHECK(classify(429, "{\"error\":{\"message\":\"You exceeded your current quota\",\"type\":\"insufficient_quota\"}}").kind ==
        error_kind::quota);
  CHECK(classify(401, kimi_error("invalid_authentication_error", "Invalid Authentication")).kind == error_kind::auth);
  CHECK(classify(401, kimi_error("incorrect_api_key_error", "Incorrect API key provided")).kind == error_kind::auth);
  CHECK(classify(402, "{\"error\":{\"message\":\"unable to verify your membership benefits\"}}").kind ==
        error_kind::plan_membership);
  const error_info u = classify(403, "{\"error\":{\"message\":\"You've reached your 5-hour usage limit. Please try again later.\"}}");
  CHECK(u.kind == error_kind::plan_usage);
  CHECK(u.retry);
  CHECK(classify(403, "{\"error\":{\"message\":\"You have exceeded the concurrent request limit\"}}").kind ==
        error_kind::plan_concurrency);
  CHECK(classify(403, kimi_error("permission_denied_error", "The API you are accessing is not open")).kind ==
        error_kind::permission_denied);
  CHECK(classify(400, kimi_error("invalid_request_error", "Input token length too long")).kind == error_kind::context_too_long);
  CHECK(classify(400, kimi_error("invalid_request_error", "Your request exceeded model token limit: 262144")).kind ==
        error_kind::context_too_long);
  CHECK(classify(400, kimi_error("content_filter", "The request was rejected because it was considered high risk")).kind ==
        error_kind::content_filter);
  CHECK_FALSE(classify(400, kimi_error("content_filter", "x")).retry);
  CHECK(classify(400, kimi_error("invalid_request_error", "Invalid request: temperature")).kind == error_kind::invalid_request);
  CHECK(classify(404, kimi_error("resource_not_found_error", "Not found the model kimi-k2.5 or Permission denied")).kind ==
        error_kind::not_found);
  CHECK(classify(500, kimi_error("server_error", "unexpected_output")).kind == error_kind::server_error);
  CHECK(classify(503, "<html>Service Unavailable</html>").kind == error_kind::server_error);
  CHECK(classify(504, "").kind == error_kind::timeout);
  CHECK(classify(504, "").retry);
  CHECK(classify(499, "").kind == error_kind::client_closed);
  CHECK(classify(200, "{}").kind == error_kind::none);
  CHECK(classify(418, "teapot").kind == error_kind::unknown);
  // OpenAI's shape: code rate_limit_exceeded, type requests / tokens.
  CHECK(classify(429, "{\"error\":{\"message\":\"Rate limit reached\",\"type\":\"requests\",\"code\":\"rate_limit_exceeded\"}}").kind ==
        error_kind::rpm);
  CHECK(classify(429, "{\"error\":{\"message\":\"Rate limit reached\",\"type\":\"tokens\",\"code\":\"rate_limit_exceeded\"}}").kind ==
        error_kind::tpm);
  // Kimi Code's Anthropic-style face: a plan limit dressed as overload.
  CHECK(classify(429, kimi_error("rate_limit_error", "The engine is currently overloaded")).kind == error_kind::rate_limit);
  // A 429 with no body is still a rate limit.
  CHECK(classify(429, "").kind == error_kind::rate_limit);
}

TEST_CASE("classify and parsers survive any bytes", "[http]") {
  INFO(tgtest::seed_note());
  tgtest::rng g(tgtest::seed_for(77));
  const std::string seeds[] = {kimi_error("rate_limit_reached_error", "organization max RPM: 200, please try again after 1 seconds"),
                               "Mon, 23 Nov 2026 00:00:30 GMT", "2h31m16.752s", "{\"type\":\"", "\"message\": \"\\\""};
  for (int i = 0; i < 20000; ++i) {
    std::string s = seeds[g.between(0, 4)];
    const std::size_t edits = static_cast<std::size_t>(g.between(0, 6));
    for (std::size_t k = 0; k < edits && !s.empty(); ++k) {
      const std::size_t at = static_cast<std::size_t>(g.between(0, s.size() - 1));
      switch (g.between(0, 2)) {
        case 0: s[at] = static_cast<char>(g.between(0, 255)); break;
        case 1: s.erase(at, 1); break;
        default: s.insert(at, 1, static_cast<char>(g.between(0, 255))); break;
      }
    }
    const error_info e = classify(static_cast<int>(g.between(0, 600)), s);
    CHECK(e.message.size() <= s.size());
    (void)parse_retry_after(s, monday);
    (void)parse_go_duration(s);
  }
}

TEST_CASE("retry: backoff with jitter, server hints, giving up", "[http]") {
  splitmix64 rng;
  {
    retrier r(retry_policy{milliseconds(500), seconds(8), seconds(120), 5, std::nullopt, jitter::none});
    const error_info e = classify(503, "");
    CHECK(r.next(e, ns(0), rng).wait == milliseconds(500));
    CHECK(r.next(e, ns(0), rng).wait == seconds(1));
    CHECK(r.next(e, ns(0), rng).wait == seconds(2));
    CHECK(r.next(e, ns(0), rng).wait == seconds(4));
    const retry_decision final_try = r.next(e, ns(0), rng);
    CHECK(final_try.reason == gave_up::attempts_exhausted);
  }
  {
    // Full jitter stays within [0, backoff]; decorrelated within [base, cap].
    retrier full(retry_policy{milliseconds(500), seconds(8), seconds(120), 100, std::nullopt, jitter::full});
    retrier dec(retry_policy{milliseconds(500), seconds(8), seconds(120), 100, std::nullopt, jitter::decorrelated});
    const error_info e = classify(500, "");
    for (int i = 0; i < 50; ++i) {
      const retry_decision a = full.next(e, ns(0), rng), b = dec.next(e, ns(0), rng);
      CHECK(a.wait >= ns(0));
      CHECK(a.wait <= seconds(8));
      CHECK(b.wait >= milliseconds(500));
      CHECK(b.wait <= seconds(8));
    }
  }
  {
    retrier r;  // defaults: 3 attempts, hints up to 120 s
    // Kimi says "try again after 1 seconds": never retry earlier than that.
    const error_info e = classify(429, kimi_error("rate_limit_reached_error", "organization max RPM: 3, please try again after 1 seconds"));
    const retry_decision d = r.next(e, ns(0), rng);
    CHECK(d);
    CHECK(d.wait >= seconds(1));
    // A header hint above the cap is honoured...
    retrier r2;
    CHECK(r2.next(classify(429, ""), ns(0), rng, seconds(30)).wait == seconds(30));
    // ... but a TPD Retry-After of 1,152 s gives up with the reason, not a silent hang.
    retrier r3;
    const retry_decision tpd = r3.next(classify(429, kimi_error("rate_limit_reached_error", "organization TPD rate limit, current: 2, limit: 1")),
                                       ns(0), rng, seconds(1152));
    CHECK(tpd.reason == gave_up::hint_too_long);
    CHECK(tpd.wait == seconds(1152));
    // Never retried: quota, auth, context.
    retrier r4;
    CHECK(r4.next(classify(429, kimi_error("exceeded_current_quota_error", "insufficient balance")), ns(0), rng).reason ==
          gave_up::not_retryable);
    // Deadline.
    retrier r5(retry_policy{milliseconds(500), seconds(8), seconds(120), 5, seconds(10), jitter::none});
    CHECK(r5.next(classify(503, ""), seconds(9) + milliseconds(600), rng).reason == gave_up::deadline);
    CHECK(std::string(to_string(gave_up::hint_too_long)).find("max_wait") != std::string::npos);
  }
}
