// An account budgeted in yuan takes no dollar amount, and its admissions
// report yuan: mixing them does not compile.
// expect: (no match|no viable|invalid operands)
#include <tollgate/account.hpp>
int main() {
  tollgate::cny_account_config c;
#ifdef TOLLGATE_MISUSE
  c.budget = tollgate::usd::from_units(1);
#else
  c.budget = tollgate::cny::from_units(7);
#endif
  return c.budget ? 0 : 1;
}
