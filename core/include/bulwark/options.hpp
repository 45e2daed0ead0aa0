#pragma once

#include <cstdint>
#include <limits>
#include <map>
#include <string>
#include <variant>
#include <vector>

#include "bulwark/export.hpp"
#include "bulwark/plugin_abi.h"

namespace bulwark {

/// One schema entry; plugins write `constexpr bulwark::OptionSpec kOptions[] = {...}`:
///   {"f", bulwark::OptType::Int, "-1", -1, bulwark::kInf, "Declared Byzantine bound."}
using OptionSpec = bulwark_option_spec;

/// Option types, spelled as C++ names for the schema tables.
namespace OptType {
inline constexpr bulwark_opt_type Bool = BULWARK_OPT_BOOL;
inline constexpr bulwark_opt_type Int = BULWARK_OPT_INT;
inline constexpr bulwark_opt_type Float = BULWARK_OPT_FLOAT;
inline constexpr bulwark_opt_type String = BULWARK_OPT_STRING;
inline constexpr bulwark_opt_type List = BULWARK_OPT_LIST;
}  // namespace OptType

inline constexpr double kInf = std::numeric_limits<double>::infinity();

/// A validated option value: bool, int64, double, string or a list of doubles.
using OptionValue = std::variant<bool, std::int64_t, double, std::string, std::vector<double>>;

/// The options a plugin is constructed from: every schema entry present (defaults filled in by the
/// host), each with the type its schema declares. A plain SDK value type; no TOML crosses.
class BULWARK_API Options {
 public:
  /// Typed read. T is bool, std::int64_t, int, double, std::string or std::vector<double>.
  /// Reading a name the schema does not declare is a programming error (it throws Error with
  /// ErrorKind::Runtime naming the option, so a test catches it).
  template <typename T>
  T get(const std::string& name) const;

  /// True when the user wrote this option (as opposed to the schema default).
  bool is_set(const std::string& name) const;
  bool contains(const std::string& name) const { return values_.count(name) != 0; }

  /// Host side: store a validated value. `explicitly_set` says whether it came from the user.
  void set(const std::string& name, OptionValue value, bool explicitly_set = true);

  const std::map<std::string, OptionValue>& values() const { return values_; }

 private:
  const OptionValue& at(const std::string& name) const;
  std::map<std::string, OptionValue> values_;
  std::map<std::string, bool> explicit_;
};

template <>
BULWARK_API bool Options::get<bool>(const std::string& name) const;
template <>
BULWARK_API std::int64_t Options::get<std::int64_t>(const std::string& name) const;
template <>
BULWARK_API int Options::get<int>(const std::string& name) const;
template <>
BULWARK_API double Options::get<double>(const std::string& name) const;
template <>
BULWARK_API std::string Options::get<std::string>(const std::string& name) const;
template <>
BULWARK_API std::vector<double> Options::get<std::vector<double>>(const std::string& name) const;

}  // namespace bulwark
