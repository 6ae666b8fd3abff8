// Test support shared by the learn tests (test_learn.cpp, in process, and
// redis/test_redis_learn.cpp, in Redis): one rate limit of a scenario in a
// configuration, and the server's 429 for it as Kimi words it, classified as
// the account sees it.
#ifndef TOLLGATE_TESTS_LEARN_SUPPORT_HPP
#define TOLLGATE_TESTS_LEARN_SUPPORT_HPP

#include <tollgate/account/config.hpp>
#include <tollgate/http.hpp>

#include <cstdint>
#include <string>

namespace tgtest {

// max_request 1: a request limit of l per w; else a token limit, requests of
// up to max_request tokens.
inline void put_learn_limit(tollgate::account_config& c, std::uint64_t l, tollgate::nanoseconds w,
                            std::uint64_t max_request) {
  if (max_request == 1) {
    c.rpm = tollgate::limit(l);
    c.request_window = w;
  } else {
    c.tpm = tollgate::limit(l);
    c.token_window = w;
    c.max_request_tokens = max_request;
  }
}

inline tollgate::error_info kimi_rate_429(std::uint64_t l, std::uint64_t max_request) {
  const std::string m = max_request == 1 ? "request reached organization max RPM: " + std::to_string(l)
                                         : "request reached organization TPM rate limit, current: 0, limit: " +
                                               std::to_string(l);
  return tollgate::classify(
      429, "{\"error\":{\"message\":\"" + m + ", please try again after 1 seconds\",\"type\":\"rate_limit_reached_error\"}}");
}

}  // namespace tgtest

#endif  // TOLLGATE_TESTS_LEARN_SUPPORT_HPP
