#pragma once

#include <optional>
#include <string>
#include <vector>

#include <toml++/toml.h>

#include "bulwark/error.hpp"
#include "bulwark/options.hpp"

namespace bulwark {

/// An Error about a place: "file:line:col" of a value in an experiment file, a file, or a
/// command-line argument such as "--set key=value". Only the host program formats it for people
/// ("file:line:col: error: message", the compiler format editors jump to); for any other reader
/// what() is "location: message".
class LocatedError : public Error {
 public:
  LocatedError(ErrorKind kind, std::string location, std::string message);
  const std::string& location() const noexcept { return location_; }
  const std::string& message() const noexcept { return message_; }

 private:
  std::string location_, message_;
};

/// Throws LocatedError(Config) at `location`.
[[noreturn]] void config_error(const std::string& location, const std::string& message);

/// Rethrows `e` with `note` appended to its message, keeping its kind and its location, if any.
[[noreturn]] void rethrow_with_note(const Error& e, const std::string& note);

/// Where a TOML value came from, for messages in compiler format ("file:line:col").
std::string where(const toml::node& node, const std::string& fallback_file = "");

/// Validates `table` against `specs` and returns the Options with defaults filled in.
/// `ignored` keys are skipped (keys the caller handles itself, e.g. "plugin").
/// `what` names the owner in messages, e.g. "aggregator 'krum'".
/// Unknown key -> LocatedError(Config) at file:l:c, "unknown option 'x' for aggregator 'krum'; did you
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

/// Sets the dotted `key` ("clients.lr", "attack.1.byzantine") in `root` to a copy of `value`,
/// creating tables on the way; an empty table removes the key (a study compares "no [privacy]"
/// with a mechanism). "name.N" picks entry N of a list of tables such as [[attack]], and a list
/// with one entry is addressed without its index; a key written quoted with its dots ([sweep]
/// "aggregator.plugin" = [...]) is addressed by its dotted name. Error(Config) at `where` says
/// how to address the key, its examples starting with `set_prefix` ("--set " on the command line).
void set_dotted_key(toml::table& root, const std::string& key, const toml::node& value, const std::string& where,
                    const std::string& set_prefix = "");

/// Applies "a.b.c=value" (value parsed as a TOML value, else taken as a string): --set.
void apply_override(toml::table& root, const std::string& assignment);

}  // namespace bulwark
