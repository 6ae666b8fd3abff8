// Test helpers shared by the account's tests: the model most tests price with,
// and a request built from a prompt size and max_tokens.
#ifndef TOLLGATE_TESTS_ACCOUNT_SUPPORT_HPP
#define TOLLGATE_TESTS_ACCOUNT_SUPPORT_HPP

#include "tollgate_under_test.hpp"

#include <cstdint>

namespace tgtest {

inline const tollgate::model_info* k26() {
  static const tollgate::model_info m = *tollgate::find_model("kimi-k2.6");
  return &m;
}

inline tollgate::request req(std::uint64_t prompt, std::uint64_t max_tokens) {
  tollgate::request r;
  r.model = k26();
  r.prompt_tokens = prompt;
  r.max_tokens = max_tokens;
  return r;
}

}  // namespace tgtest

#endif
