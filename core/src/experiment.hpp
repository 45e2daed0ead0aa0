#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <toml++/toml.h>

#include "bulwark/options.hpp"
#include "settings.hpp"

namespace bulwark {

/// A plugin named in the experiment file: its name (or path), the TOML table holding its options
/// (validated later against the plugin's own schema, skipping `ignored` keys that belong to the
/// kernel), and where it was written. `table` points into ExperimentConfig::root, never a copy:
/// toml++ drops source positions on copy, and messages need line and column.
struct ComponentSpec {
  std::string plugin;
  const toml::table* table = nullptr;  ///< null: no options given
  std::vector<std::string> ignored;
  std::string location;  ///< "file:line:col" of the section
};

/// One attack of the [[attack]] list and its Byzantine schedule.
struct AttackSpec {
  ComponentSpec component;
  Options schedule;  ///< byzantine, byzantine_fraction, schedule, start_round, markov_p, markov_k
};

/// The privacy mechanism and the accountant's settings.
struct PrivacySpec {
  ComponentSpec component;
  Options accounting;  ///< delta, max_epsilon, target_epsilon, example_rate, ...
};

/// The [leakage] section: the attack plugin and its options (every key leakage_option_specs()
/// does not name), where it looks, on whom (leakage.hpp).
struct LeakageSpec {
  ComponentSpec attack;              ///< plugin = the `attack` key; table = [leakage]
  Options settings;                  ///< victims, batch_size, threshold, known_labels
  std::vector<int> points;           ///< sorted, distinct, each 0, 1 or 2
  std::vector<std::int64_t> rounds;  ///< sorted, distinct, each in [1, rounds]
};

/// A validated experiment file. Core sections are validated against their schemas here; plugin
/// options are validated when the plugins are opened (Engine), against each plugin's schema.
struct ExperimentConfig {
  std::string file;
  std::shared_ptr<const toml::table> root;  ///< the file after --set overrides
  Options experiment, clients, server, model, partition;  ///< as validated (config.toml writes them)
  RunSettings settings;  ///< [experiment], [clients], [server] decoded: what the kernel reads
  ComponentSpec data;
  ComponentSpec aggregator;
  std::vector<ComponentSpec> pre_aggregators;
  std::vector<AttackSpec> attacks;
  bool has_privacy = false;
  PrivacySpec privacy;
  std::optional<LeakageSpec> leakage;
  std::optional<Options> audit;  ///< [audit] as validated (audit.hpp)
};

/// Schemas of the core sections (also printed by `bulwark describe experiment`).
const std::vector<OptionSpec>& experiment_option_specs();
const std::vector<OptionSpec>& client_option_specs();
const std::vector<OptionSpec>& server_option_specs();
const std::vector<OptionSpec>& schedule_option_specs();
const std::vector<OptionSpec>& accounting_option_specs();

/// Reads and validates `file`, applying `overrides` ("key=value") first.
ExperimentConfig load_experiment(const std::string& file, const std::vector<std::string>& overrides = {});

/// Where `key` ("clients.count") is written in the experiment file ("file:line:col"), or the file
/// when it is not written there (a default), for errors found after parsing.
std::string location_of(const ExperimentConfig& config, const char* key);

/// One folder name, not a path: not empty, no '/' or '\\', not "." or "..", no control characters.
bool is_plain_folder_name(const std::string& name);

/// Where a run writes when no --out is given: [experiment] output, else runs/<name>. A name that
/// is not one plain folder name (a '/', "..") is an error at the name's line: it would write
/// outside runs/.
std::filesystem::path default_output_dir(const ExperimentConfig& config);

/// Validates an already-parsed table (used by sweeps, which build one table per cell).
ExperimentConfig parse_experiment(std::shared_ptr<const toml::table> root, const std::string& file);

}  // namespace bulwark
