// libFuzzer target: the UTF-8 census and token estimate on any bytes (valid
// UTF-8 or not). Counts never exceed the bytes they came from.
#include <tollgate/estimate.hpp>

#include <cstddef>
#include <cstdint>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view s(reinterpret_cast<const char*>(data), size);
  const tollgate::text_census c = tollgate::census(s);
  if (c.ascii + c.cjk + c.other + c.invalid_bytes > size) __builtin_trap();
  if (tollgate::estimate_tokens(s) > size + 1) __builtin_trap();
  return 0;
}
