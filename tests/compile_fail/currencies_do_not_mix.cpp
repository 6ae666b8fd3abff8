// Dollars and yuan are different types: adding them does not compile.
// expect: (no match|invalid operands|no viable)
#include <tollgate/money.hpp>
int main() {
  const tollgate::usd d = tollgate::usd::from_units(1);
  const tollgate::cny y = tollgate::cny::from_units(7);
#ifdef TOLLGATE_MISUSE
  const auto sum = d + y;
#else
  const auto sum = d + d;
  (void)y;
#endif
  return sum.nanos() > 0 ? 0 : 1;
}
