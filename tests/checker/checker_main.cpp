// The interleaving checker's own test binary (built with
// TOLLGATE_INTERLEAVING_CHECKER): Catch2's main.
#define CATCH_CONFIG_MAIN
#include "../catch_compat.hpp"
