#include "bulwark/options.hpp"

#include <cmath>

#include "bulwark/error.hpp"

namespace bulwark {

namespace {
const char* type_name(const OptionValue& value) {
  switch (value.index()) {
    case 0: return "bool";
    case 1: return "integer";
    case 2: return "float";
    case 3: return "string";
    default: return "list";
  }
}

[[noreturn]] void wrong_type(const std::string& name, const OptionValue& value, const char* wanted) {
  throw Error(ErrorKind::Runtime, "option '" + name + "' holds a " + type_name(value) +
                                      ", read as " + wanted + " (plugin bug: read it as its schema type)");
}
}  // namespace

const OptionValue& Options::at(const std::string& name) const {
  auto it = values_.find(name);
  if (it == values_.end()) {
    throw Error(ErrorKind::Runtime,
                "option '" + name + "' is not declared in the plugin's schema (plugin bug)");
  }
  return it->second;
}

bool Options::is_set(const std::string& name) const {
  auto it = explicit_.find(name);
  return it != explicit_.end() && it->second;
}

void Options::set(const std::string& name, OptionValue value, bool explicitly_set) {
  values_[name] = std::move(value);
  explicit_[name] = explicitly_set;
}

template <>
bool Options::get<bool>(const std::string& name) const {
  const auto& v = at(name);
  if (auto p = std::get_if<bool>(&v)) return *p;
  wrong_type(name, v, "bool");
}

template <>
std::int64_t Options::get<std::int64_t>(const std::string& name) const {
  const auto& v = at(name);
  if (auto p = std::get_if<std::int64_t>(&v)) return *p;
  wrong_type(name, v, "integer");
}

template <>
int Options::get<int>(const std::string& name) const {
  return static_cast<int>(get<std::int64_t>(name));
}

template <>
double Options::get<double>(const std::string& name) const {
  const auto& v = at(name);
  if (auto p = std::get_if<double>(&v)) return *p;
  if (auto p = std::get_if<std::int64_t>(&v)) return static_cast<double>(*p);
  wrong_type(name, v, "float");
}

template <>
std::string Options::get<std::string>(const std::string& name) const {
  const auto& v = at(name);
  if (auto p = std::get_if<std::string>(&v)) return *p;
  wrong_type(name, v, "string");
}

template <>
std::vector<double> Options::get<std::vector<double>>(const std::string& name) const {
  const auto& v = at(name);
  if (auto p = std::get_if<std::vector<double>>(&v)) return *p;
  wrong_type(name, v, "list");
}

}  // namespace bulwark
