// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// config.hpp: version, language check, user-overridable configuration macros
// and the versioned namespace. Every other header includes this one first.
#ifndef TOLLGATE_CONFIG_HPP
#define TOLLGATE_CONFIG_HPP

// The one place the version lives; CMake, Meson and the packaging files read
// or compare against these lines.
#define TOLLGATE_VERSION_MAJOR 0
#define TOLLGATE_VERSION_MINOR 5
#define TOLLGATE_VERSION_PATCH 0
#define TOLLGATE_VERSION \
  (TOLLGATE_VERSION_MAJOR * 10000 + TOLLGATE_VERSION_MINOR * 100 + TOLLGATE_VERSION_PATCH)

#if defined(_MSVC_LANG) && _MSVC_LANG > __cplusplus
#define TOLLGATE_CPLUSPLUS _MSVC_LANG
#else
#define TOLLGATE_CPLUSPLUS __cplusplus
#endif
#if TOLLGATE_CPLUSPLUS < 201703L
#error "tollgate needs C++17 or later"
#endif

// Users may put their configuration in <tollgate/tollgate.tweak.hpp> instead
// of passing -D flags to every translation unit.
#if defined(__has_include)
#if __has_include(<tollgate/tollgate.tweak.hpp>)
#include <tollgate/tollgate.tweak.hpp>
#endif
#endif

// Exceptions: detected from the compiler unless the user decides. Without them
// constructors that would throw abort with a message, and every constructor
// has an overload that reports through an error code instead.
#ifndef TOLLGATE_NO_EXCEPTIONS
#if defined(__cpp_exceptions) || defined(__EXCEPTIONS) || defined(_CPPUNWIND)
#define TOLLGATE_NO_EXCEPTIONS 0
#else
#define TOLLGATE_NO_EXCEPTIONS 1
#endif
#endif

// Limiter state is aligned to this so two hot limiters never share a line.
// 128 on x86-64 and AArch64, where the adjacent-line prefetcher pulls pairs
// of 64-byte lines; std::hardware_destructive_interference_size is not used
// because g++ warns about it in headers and clang with libstdc++ lacks it.
#ifndef TOLLGATE_CACHELINE_SIZE
#if defined(__x86_64__) || defined(_M_X64) || defined(__aarch64__) || defined(_M_ARM64)
#define TOLLGATE_CACHELINE_SIZE 128
#else
#define TOLLGATE_CACHELINE_SIZE 64
#endif
#endif

// Inline versioned namespace: two major versions can meet in one program
// without violating the one-definition rule.
#define TOLLGATE_ABI_NAMESPACE v0
#define TOLLGATE_BEGIN_NAMESPACE \
  namespace tollgate {           \
  inline namespace TOLLGATE_ABI_NAMESPACE {
#define TOLLGATE_END_NAMESPACE \
  }                            \
  }

#endif  // TOLLGATE_CONFIG_HPP
