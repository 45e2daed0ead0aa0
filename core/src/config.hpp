#pragma once

#include <optional>
#include <string>
#include <vector>

#include <toml++/toml.h>

#include "bulwark/options.hpp"

namespace bulwark {

/// Where a TOML value came from, for messages in compiler format ("file:line:col").
std::string where(const toml::node& node, const std::string& fallback_file = "");

/// Validates `table` against `specs` and returns the Options with defaults filled in.
/// `ignored` keys are skipped (keys the caller handles itself, e.g. "plugin").
/// `what` names the owner in messages, e.g. "aggregator 'krum'".
/// Unknown key -> Error(Config) "file:l:c: error: unknown option 'x' for aggregator 'krum'; did you
/// mean 'f'? valid options: f, multi"; wrong type or out of range -> the same format with expected
/// and found.
Options validate_options(const toml::table& table, const std::vector<OptionSpec>& specs,
                         const std::string& what, const std::vector<std::string>& ignored = {},
                         const std::string& file = "");

/// Options from a TOML snippet ("f = 1\nmulti = 3"), for tests and `bulwark aggregate --set`.
Options options_from_string(const std::string& toml_text, const std::vector<OptionSpec>& specs,
                            const std::string& what);

/// The nearest candidate by edit distance (at most 2, or a third of the length), if any.
std::optional<std::string> nearest(const std::string& word, const std::vector<std::string>& candidates);

/// Parses a TOML file; syntax errors become Error(Config) with file:line:column.
toml::table parse_toml_file(const std::string& path);

/// Applies "a.b.c=value" (value parsed as a TOML value, else taken as a string).
void apply_override(toml::table& root, const std::string& assignment);

}  // namespace bulwark
