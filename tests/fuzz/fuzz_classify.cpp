// libFuzzer target: the error classifier must accept any bytes as a body,
// with any status. Built with clang -fsanitize=fuzzer,address,undefined.
#include <tollgate/http.hpp>

#include <cstddef>
#include <cstdint>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view s(reinterpret_cast<const char*>(data), size);
  const int status = size > 0 ? 200 + data[0] * 2 : 429;
  const tollgate::error_info e = tollgate::classify(status, s);
  // What it quotes back is a part of the body.
  if (e.message.size() > s.size() || e.type.size() > s.size()) __builtin_trap();
  (void)tollgate::retryable(e.kind);
  return 0;
}
