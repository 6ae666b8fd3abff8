// Catch2 v2 without a prebuilt main library: this TU provides main().
#define CATCH_CONFIG_MAIN
#include "catch_compat.hpp"
