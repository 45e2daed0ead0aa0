#pragma once

/// The one include a plugin file needs besides its interface header:
///   BULWARK_PLUGIN(bulwark::Aggregator, Krum, "krum", "1.0.0", "one-line summary",
///                  "paragraph with the paper citation", kOptions)
/// as the last line of the file. It exports the handshake symbol (plugin_abi.h) and the
/// create/destroy pair. A second use in one library is a link error: one plugin per library.

#include <cstdint>
#include <cstddef>
#include <type_traits>

#include <torch/version.h>

#include "bulwark/aggregator.hpp"
#include "bulwark/attack.hpp"
#include "bulwark/dataset.hpp"
#include "bulwark/options.hpp"
#include "bulwark/plugin_abi.h"
#include "bulwark/privacy.hpp"

#if defined(__clang__)
#define BULWARK_COMPILER_ID "Clang " __clang_version__
#elif defined(__GNUC__)
#define BULWARK_COMPILER_ID "GCC " __VERSION__
#else
#define BULWARK_COMPILER_ID "unknown"
#endif

namespace bulwark::detail {

template <typename Interface>
struct KindOf;  // only the four plugin interfaces have a kind
template <>
struct KindOf<DatasetLoader> : std::integral_constant<std::uint32_t, BULWARK_KIND_DATASET> {};
template <>
struct KindOf<Aggregator> : std::integral_constant<std::uint32_t, BULWARK_KIND_AGGREGATOR> {};
template <>
struct KindOf<Attack> : std::integral_constant<std::uint32_t, BULWARK_KIND_ATTACK> {};
template <>
struct KindOf<PrivacyMechanism> : std::integral_constant<std::uint32_t, BULWARK_KIND_PRIVACY> {};

template <std::size_t N>
constexpr const OptionSpec* option_data(const OptionSpec (&specs)[N]) { return specs; }
constexpr const OptionSpec* option_data(std::nullptr_t) { return nullptr; }
template <std::size_t N>
constexpr std::uint32_t option_count(const OptionSpec (&)[N]) { return N; }
constexpr std::uint32_t option_count(std::nullptr_t) { return 0; }

}  // namespace bulwark::detail

/// Pass `nullptr` as Options for a plugin without options.
#define BULWARK_PLUGIN(Interface, Class, NAME, VERSION, SUMMARY, DOC, OPTIONS)                  \
  static_assert(std::is_base_of_v<Interface, Class>,                                           \
                #Class " must derive from " #Interface);                                       \
  static_assert(std::is_constructible_v<Class, const ::bulwark::Options&>,                     \
                #Class " must be constructible from const bulwark::Options&");                 \
  namespace {                                                                                  \
  void* bulwark_plugin_create(const void* options) {                                           \
    /* Cast to the interface before void*: the host casts back to the interface. */           \
    Interface* instance = new Class(*static_cast<const ::bulwark::Options*>(options));         \
    return static_cast<void*>(instance);                                                       \
  }                                                                                            \
  void bulwark_plugin_destroy(void* instance) { delete static_cast<Interface*>(instance); }     \
  constexpr struct bulwark_plugin_info bulwark_plugin_info_data = {                            \
      BULWARK_PLUGIN_ABI_VERSION,                                                              \
      sizeof(struct bulwark_plugin_info),                                                      \
      ::bulwark::detail::KindOf<Interface>::value,                                             \
      NAME,                                                                                    \
      VERSION,                                                                                 \
      SUMMARY,                                                                                 \
      DOC,                                                                                     \
      BULWARK_SDK_VERSION,                                                                     \
      TORCH_VERSION,                                                                           \
      BULWARK_COMPILER_ID,                                                                     \
      _GLIBCXX_USE_CXX11_ABI,                                                                  \
      ::bulwark::detail::option_data(OPTIONS),                                                 \
      ::bulwark::detail::option_count(OPTIONS),                                                \
      &bulwark_plugin_create,                                                                  \
      &bulwark_plugin_destroy,                                                                 \
  };                                                                                           \
  }                                                                                            \
  extern "C" __attribute__((visibility("default"))) const struct bulwark_plugin_info*          \
  bulwark_plugin_info(void) {                                                                  \
    return &bulwark_plugin_info_data;                                                          \
  }
