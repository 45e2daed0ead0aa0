// TOML experiment files and option validation. Every error names the place of the offending
// value (LocatedError), which the host prints in compiler format so editors can jump to it.
#include "config.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <limits>
#include <sstream>

#include <fmt/format.h>
#include <fmt/ranges.h>  // fmt::join (moved here in fmt 11)

#include "bulwark/error.hpp"

namespace bulwark {

std::string where(const toml::node& node, const std::string& fallback_file) {
  const auto& source = node.source();
  std::string file = source.path ? *source.path : fallback_file;
  if (file.empty()) file = "<input>";
  if (source.begin.line == 0) return file;
  return fmt::format("{}:{}:{}", file, source.begin.line, source.begin.column);
}

LocatedError::LocatedError(ErrorKind kind, std::string location, std::string message)
    : Error(kind, location + ": " + message), location_(std::move(location)), message_(std::move(message)) {}

void config_error(const std::string& location, const std::string& message) {
  throw LocatedError(ErrorKind::Config, location, message);
}

void rethrow_with_note(const Error& e, const std::string& note) {
  if (const auto* located = dynamic_cast<const LocatedError*>(&e)) {
    throw LocatedError(e.kind(), located->location(), located->message() + note);
  }
  throw Error(e.kind(), e.what() + note);
}

namespace {

std::size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diagonal = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      std::size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] != b[j - 1] ? 1 : 0)});
      diagonal = up;
    }
  }
  return row[b.size()];
}

const char* type_word(bulwark_opt_type type) {
  switch (type) {
    case BULWARK_OPT_BOOL: return "a boolean (true/false)";
    case BULWARK_OPT_INT: return "an integer";
    case BULWARK_OPT_FLOAT: return "a number";
    case BULWARK_OPT_STRING: return "a string";
    default: return "an array of numbers";
  }
}

std::string found_word(const toml::node& node) {
  switch (node.type()) {
    case toml::node_type::boolean: return "a boolean";
    case toml::node_type::integer: return "the integer " + std::to_string(*node.value<std::int64_t>());
    case toml::node_type::floating_point: return fmt::format("the float {}", *node.value<double>());
    case toml::node_type::string: return "the string \"" + *node.value<std::string>() + "\"";
    case toml::node_type::array: return "an array";
    case toml::node_type::table: return "a table";
    default: return "a date/time";
  }
}

std::string format_number(double v) {
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  return fmt::format("{}", v);
}

void check_range(double value, const OptionSpec& spec, const std::string& location,
                 const std::string& owner) {
  if (value < spec.min || value > spec.max || std::isnan(value)) {
    config_error(location, fmt::format("option '{}' for {} must be in [{}, {}], found {}", spec.name,
                                       owner, format_number(spec.min), format_number(spec.max),
                                       format_number(value)));
  }
}

// Numbers reach float32 tensors (rates, bounds, scales): inf, NaN or a value past float's range
// would run to a silent non-finite result, so no option takes one.
void check_finite(double value, const OptionSpec& spec, const std::string& location, const std::string& owner) {
  if (!std::isfinite(value) || std::fabs(value) > std::numeric_limits<float>::max()) {
    config_error(location, fmt::format("option '{}' for {} must be a finite number of at most {:g} in magnitude, "
                                       "found {}",
                                       spec.name, owner, std::numeric_limits<float>::max(), format_number(value)));
  }
}

OptionValue convert(const toml::node& node, const OptionSpec& spec, const std::string& location,
                    const std::string& owner) {
  auto wrong = [&]() {
    config_error(location, fmt::format("option '{}' for {} must be {}, found {}", spec.name, owner,
                                       type_word(spec.type), found_word(node)));
  };
  switch (spec.type) {
    case BULWARK_OPT_BOOL:
      if (!node.is_boolean()) wrong();
      return *node.value<bool>();
    case BULWARK_OPT_INT: {
      if (!node.is_integer()) wrong();
      auto v = *node.value<std::int64_t>();
      check_range(static_cast<double>(v), spec, location, owner);
      return v;
    }
    case BULWARK_OPT_FLOAT: {
      if (!node.is_number()) wrong();
      auto v = *node.value<double>();
      check_finite(v, spec, location, owner);
      check_range(v, spec, location, owner);
      return v;
    }
    case BULWARK_OPT_STRING: {
      if (!node.is_string()) wrong();
      auto v = *node.value<std::string>();
      if (spec.choices) {
        std::vector<std::string> choices;
        std::stringstream in(spec.choices);
        std::string choice;
        while (std::getline(in, choice, '|')) choices.push_back(choice);
        if (std::find(choices.begin(), choices.end(), v) == choices.end()) {
          std::string message = fmt::format("option '{}' for {} must be one of {}, found \"{}\"",
                                            spec.name, owner, fmt::join(choices, ", "), v);
          if (auto guess = nearest(v, choices)) message += "; did you mean '" + *guess + "'?";
          config_error(location, message);
        }
      }
      return v;
    }
    default: {
      const auto* array = node.as_array();
      if (!array) wrong();
      std::vector<double> values;
      for (const auto& item : *array) {
        if (!item.is_number()) wrong();
        values.push_back(*item.value<double>());
        check_finite(values.back(), spec, where(item, location), owner);
        check_range(values.back(), spec, where(item, location), owner);
      }
      return values;
    }
  }
}

}  // namespace

std::optional<std::string> nearest(const std::string& word, const std::vector<std::string>& candidates) {
  std::optional<std::string> best;
  std::size_t best_distance = std::max<std::size_t>(2, word.size() / 3) + 1;
  for (const auto& candidate : candidates) {
    auto d = edit_distance(word, candidate);
    if (d < best_distance) {
      best_distance = d;
      best = candidate;
    }
  }
  return best;
}

Options validate_options(const toml::table& table, const std::vector<OptionSpec>& specs,
                         const std::string& what, const std::vector<std::string>& ignored,
                         const std::string& file) {
  Options options;
  std::vector<std::string> names;
  for (const auto& spec : specs) names.emplace_back(spec.name);

  for (const auto& [key, node] : table) {
    const std::string name(key.str());
    if (std::find(ignored.begin(), ignored.end(), name) != ignored.end()) continue;
    auto spec = std::find_if(specs.begin(), specs.end(),
                             [&](const OptionSpec& s) { return name == s.name; });
    if (spec == specs.end()) {
      // Point at the key itself, where the typo is.
      const auto& at = key.source();
      std::string location = at.begin.line
                                 ? fmt::format("{}:{}:{}", at.path ? *at.path : file, at.begin.line, at.begin.column)
                                 : where(table, file);
      std::string message = "unknown option '" + name + "' for " + what;
      auto guess = nearest(name, names);
      if (guess) message += "; did you mean '" + *guess + "'?";
      message += names.empty() ? "; it takes no options"
                               : fmt::format("{} valid options: {}", guess ? "" : ";", fmt::join(names, ", "));
      config_error(location, message);
    }
    options.set(name, convert(node, *spec, where(node, file), what), /*explicitly_set=*/true);
  }

  for (const auto& spec : specs) {
    if (options.contains(spec.name)) continue;
    if (!spec.default_value) {
      config_error(where(table, file), "missing required option '" + std::string(spec.name) + "' for " + what);
    }
    toml::table parsed;
    try {
      parsed = toml::parse(std::string("v = ") + spec.default_value);
    } catch (const toml::parse_error& e) {
      throw Error(ErrorKind::Runtime, fmt::format("{}: default of option '{}' is not a TOML value: {}",
                                                  what, spec.name, spec.default_value));
    }
    options.set(spec.name, convert(*parsed.get("v"), spec, what + " (schema default)", what),
                /*explicitly_set=*/false);
  }
  return options;
}

Options options_from_string(const std::string& toml_text, const std::vector<OptionSpec>& specs,
                            const std::string& what) {
  toml::table table;
  try {
    table = toml::parse(std::string_view(toml_text), std::string_view("<options>"));
  } catch (const toml::parse_error& e) {
    config_error(fmt::format("<options>:{}:{}", e.source().begin.line, e.source().begin.column),
                 std::string(e.description()));
  }
  return validate_options(table, specs, what);
}

toml::table parse_toml_file(const std::string& path) {
  if (std::filesystem::is_directory(path)) {
    config_error(path, "is a folder, not an experiment file: give the .toml file (a run's folder is read by "
                       "`bulwark report`)");
  }
  try {
    return toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    const auto& begin = e.source().begin;
    if (begin.line == 0) {
      config_error(path, "cannot read the file: " + std::string(e.description()));
    }
    config_error(fmt::format("{}:{}:{}", path, begin.line, begin.column),
                 "malformed TOML: " + std::string(e.description()));
  }
}

namespace {

bool is_list_index(const std::string& part) {
  return !part.empty() && part.size() < 10 &&
         std::all_of(part.begin(), part.end(), [](unsigned char c) { return std::isdigit(c); });
}

}  // namespace

void set_dotted_key(toml::table& root, const std::string& key, const toml::node& value, const std::string& where,
                    const std::string& set_prefix) {
  std::vector<std::string> parts;
  std::stringstream in(key);
  for (std::string part; std::getline(in, part, '.');) parts.push_back(part);
  if (parts.empty()) config_error(where, "no key to set");
  const bool remove = value.is_table() && value.as_table()->empty();
  const auto fail = [&](const std::string& message) { config_error(where, message); };
  const auto rest = [&](std::size_t from) {
    return fmt::format("{}", fmt::join(parts.begin() + static_cast<std::ptrdiff_t>(from), parts.end(), "."));
  };
  toml::node* current = &root;
  for (std::size_t i = 0; i < parts.size();) {
    const auto& part = parts[i];
    const bool last = i + 1 == parts.size();
    if (auto* array = current->as_array()) {
      // A list with one table ([[attack]] written once) is addressed without its index.
      if (!is_list_index(part) && array->size() == 1 && (*array)[0].is_table()) {
        current = array->get(0);
        continue;
      }
      if (!is_list_index(part)) {
        if (last) {
          fail(fmt::format("[[{0}]] has {1} entries; name one by index from 0, e.g. {2}{0}.0.{3}", parts[i - 1],
                           array->size(), set_prefix, part));
        }
        fail(fmt::format("'{}' indexes the list [[{}]]; use a number from 0", part, parts[i - 1]));
      }
      const auto index = std::stoul(part);
      if (index >= array->size()) {
        fail(fmt::format("entry {} does not exist: the list [[{}]] has {} entries, numbered from 0", index,
                         parts[i - 1], array->size()));
      }
      if (last) {
        if (remove) {
          array->erase(array->begin() + static_cast<std::ptrdiff_t>(index));
        } else if (const auto* entry = value.as_table()) {
          array->replace(array->begin() + static_cast<std::ptrdiff_t>(index), *entry);
        } else {
          fail(fmt::format("an entry of [[{}]] is a table; set one of its keys, e.g. {}{}.{}.plugin", parts[i - 1],
                           set_prefix, parts[i - 1], index));
        }
        return;
      }
      current = array->get(index);
      ++i;
      continue;
    }
    auto* table = current->as_table();
    if (!table) fail(fmt::format("'{}' is not a table, so it has no '{}'", parts[i - 1], part));
    // A key written quoted with its dots ([sweep] "aggregator.plugin" = [...]) is the rest of the path.
    const auto literal = rest(i);
    if (last || table->contains(literal)) {
      if (remove) {
        table->erase(literal);
      } else {
        value.visit([&](auto&& v) { table->insert_or_assign(literal, v); });
      }
      return;
    }
    // An index after a name addresses an entry of a list such as [[attack]]; creating a table
    // named "3" would only surface later as an unrelated complaint.
    const bool indexes_next = is_list_index(parts[i + 1]);
    if (!table->contains(part)) {
      if (remove) return;  // nothing there to remove
      if (indexes_next) {
        fail(fmt::format("the file has no list [[{0}]], so there is no entry {1} to change; add [[{0}]] entries to "
                         "the file{2}",
                         part, parts[i + 1],
                         set_prefix.empty() ? "" : fmt::format(", or add one with {0}{1}.plugin=NAME {0}{1}.KEY=VALUE",
                                                               set_prefix, part)));
      }
      table->insert(part, toml::table{});
    }
    current = table->get(part);
    if (indexes_next && current->is_table()) {
      fail(fmt::format("[{0}] is one table, not a list [[{0}]]; drop the index: {1}{0}.{2}", part, set_prefix,
                       rest(i + 2)));
    }
    ++i;
  }
}

void apply_override(toml::table& root, const std::string& assignment) {
  auto equals = assignment.find('=');
  if (equals == std::string::npos || equals == 0) {
    config_error("--set " + assignment, "expected key=value, e.g. --set clients.batch_size=32");
  }
  std::string key = assignment.substr(0, equals);
  std::string text = assignment.substr(equals + 1);
  key.erase(key.find_last_not_of(" \t") + 1);

  // The value as TOML (numbers, booleans, arrays, quoted strings); anything else is a bare string.
  toml::table parsed;
  try {
    parsed = toml::parse("v = " + text);
  } catch (const toml::parse_error&) {
    parsed.insert_or_assign("v", text);
  }
  set_dotted_key(root, key, *parsed.get("v"), "--set " + assignment, "--set ");
}

}  // namespace bulwark
