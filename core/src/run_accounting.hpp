#pragma once

// A run's privacy accounting (accountant.hpp does the arithmetic): the view of each round that a
// mechanism's accounting() hook is given, target_epsilon's noise solution, and the ledger that
// the round loop charges and the budget check reads.
#include <cstdint>
#include <vector>

#include "accountant.hpp"
#include "bulwark/dataset.hpp"
#include "bulwark/model.hpp"
#include "experiment.hpp"
#include "partition.hpp"
#include "plugin_set.hpp"

namespace bulwark {

class RunAccounting {
 public:
  /// With target_epsilon, first solves the noise multiplier that spends it over the projected run
  /// (every round as round_info() sees it over all clients, so the real run spends at most the
  /// target) by bisection on throw-away instances of the mechanism, then replaces
  /// plugins.privacy with the solution. The solution is derived, not configuration: summary.json
  /// records it, config.toml (the fingerprint studies and --resume compare) stays as written.
  RunAccounting(const ExperimentConfig& config, PluginSet& plugins, const Partition& partition,
                const Dataset& data, const Model& model);

  /// The mechanism's events for a round of these participants (charged by charge()).
  std::vector<AccountingEvent> round_events(std::int64_t round, const std::vector<std::int64_t>& participants) const;
  /// ε (the worst level) after `events`, and whether that exceeds [privacy] max_epsilon.
  double epsilon_after(const std::vector<AccountingEvent>& events) const;
  bool over_budget(double epsilon) const;
  double max_epsilon() const;

  void charge(const std::vector<AccountingEvent>& events) { ledger_.add(events); }
  LevelEpsilon epsilon() const { return ledger_.epsilon(); }
  PrivacyLedger& ledger() { return ledger_; }
  const PrivacyLedger& ledger() const { return ledger_; }

  double solved_noise_multiplier() const { return solved_noise_multiplier_; }  ///< NaN when not solved

 private:
  /// The accountant's view of a round in which `sampled` of K clients take part, `clients` being
  /// them (or, for a projection, every client: the worst case). Example-level rate and steps are
  /// the worst over those clients: the smallest N_i gives the largest rate B/N_i, the largest N_i
  /// the most steps (equal for all when local_iterations is set).
  RoundAccountingInfo round_info(std::int64_t round, const std::vector<std::int64_t>& clients,
                                 std::int64_t sampled) const;

  const ExperimentConfig& config_;
  PluginSet& plugins_;
  const Partition& partition_;
  const Dataset& data_;
  const Model& model_;
  PrivacyLedger ledger_;
  double solved_noise_multiplier_;
};

}  // namespace bulwark
