// Meson's precompiled header for the unit test binary (CMake lists the two
// headers in target_precompile_headers). Meson wants it in a directory of
// its own, with no sources beside it.
#include "../catch_compat.hpp"
#include "../tollgate_under_test.hpp"
