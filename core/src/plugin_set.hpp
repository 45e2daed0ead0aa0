#pragma once

// The run's plugins, opened once (what `bulwark validate` checks), with the labels that name them
// in messages, the resolved configuration they produce (config.toml) and their checkpoint state.
// Every call from the kernel into a plugin goes through call_plugin().
#include <optional>
#include <string>
#include <vector>

#include <c10/core/Device.h>
#include <c10/util/Exception.h>
#include <nlohmann/json_fwd.hpp>
#include <toml++/toml.h>

#include "bulwark/aggregator.hpp"
#include "bulwark/attack.hpp"
#include "bulwark/dataset.hpp"
#include "bulwark/error.hpp"
#include "bulwark/privacy.hpp"
#include "checkpoint.hpp"
#include "experiment.hpp"
#include "loader.hpp"
#include "schedule.hpp"

namespace bulwark {

/// Runs a plugin hook. Whatever it throws comes back as an Error that names the plugin (`who`,
/// e.g. "aggregator 'krum'") and the hook, keeping an Error's kind; a LibTorch error keeps only its
/// message, never its trace.
template <typename Fn>
auto call_plugin(const std::string& who, const char* hook, Fn&& fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const Error& e) {
    throw Error(e.kind(), who + " failed in " + hook + "(): " + e.what());
  } catch (const c10::Error& e) {
    throw Error(ErrorKind::Runtime, who + " failed in " + hook + "(): " + e.what_without_backtrace());
  } catch (const std::exception& e) {
    throw Error(ErrorKind::Runtime, who + " failed in " + hook + "(): " + e.what());
  }
}

/// A plugin and the words that name it in messages.
template <typename I>
struct Labelled {
  PluginHandle<I> plugin;
  std::string label;  ///< "aggregator 'krum'"

  I* operator->() const { return plugin.operator->(); }
  explicit operator bool() const { return static_cast<bool>(plugin); }
};

/// One [[attack]]: its plugin, its Byzantine schedule and its triggered test set, if any.
struct ActiveAttack : Labelled<Attack> {
  ScheduleSpec schedule;
  std::optional<LabeledData> backdoor;  ///< set by the engine once the data is loaded
};

class PluginSet {
 public:
  /// Opens every plugin the experiment names and validates its options; Error on the first
  /// problem, with the file position of the section.
  PluginSet(const ExperimentConfig& config, PluginRegistry& registry);

  Labelled<DatasetLoader> dataset;
  std::vector<Labelled<Aggregator>> pre_aggregators;
  Labelled<Aggregator> aggregator;
  std::vector<ActiveAttack> attacks;
  Labelled<PrivacyMechanism> privacy;  ///< empty without [privacy]
  Labelled<Attack> leakage_attack;     ///< empty without [leakage]

  /// The privacy options as validated: target_epsilon re-creates the mechanism from them.
  const Options& privacy_options() const { return privacy_options_; }
  /// A new instance of the privacy mechanism with noise_multiplier = sigma (target_epsilon's
  /// bisection tries them; the solution replaces `privacy`).
  PluginHandle<PrivacyMechanism> privacy_with_noise(double sigma) const;

  /// Every section with its defaults filled in, as TOML: config.toml and the fingerprint a resume
  /// compares. A solved noise multiplier is derived, not configuration, so it is not in here.
  const toml::table& resolved() const { return resolved_; }
  std::string resolved_text() const;

  /// The plugins' own state, under "aggregator", "pre/<i>", "attack/<i>" and "privacy".
  void save_state(Checkpoint& checkpoint) const;
  /// Restores what save_state() wrote, moving every tensor to `device` first.
  void load_state(const Checkpoint& checkpoint, c10::Device device);

  /// summary.json's "plugins": kind, name, version and file of each, in the order of a round.
  nlohmann::ordered_json describe() const;

  /// What this process runs, for comparing the ranks of an MPI job: the SDK and LibTorch
  /// versions, a content hash of the host program, the kernel library and every plugin file, and
  /// the resolved configuration.
  nlohmann::ordered_json build_fingerprint() const;

 private:
  PluginRegistry& registry_;
  Options privacy_options_;
  toml::table resolved_;
};

}  // namespace bulwark
