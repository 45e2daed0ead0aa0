#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <torch/types.h>

#include "bulwark/dataset.hpp"
#include "bulwark/error.hpp"
#include "bulwark/model.hpp"
#include "experiment.hpp"
#include "loader.hpp"
#include "outputs.hpp"
#include "partition.hpp"
#include "runtime.hpp"

namespace bulwark {


/// What the host shows after each round.
struct RoundProgress {
  std::int64_t round = 0, rounds = 0;
  double test_accuracy = 0.0;  ///< NaN when not evaluated this round
  double test_loss = 0.0;
  double epsilon = 0.0;        ///< NaN when no privacy mechanism
  double round_seconds = 0.0, elapsed_seconds = 0.0, eta_seconds = 0.0;
};

struct RunOptions {
  std::filesystem::path output_dir;  ///< empty: [experiment] output, else runs/<name>
  int threads = -1;                  ///< -1: [experiment] threads
  /// Continue from <output>/checkpoint.bin when there is one (its configuration must match);
  /// otherwise start at round 1. See checkpoint.hpp.
  bool resume = false;
  /// Run in this process alone even under mpirun (a study cell that one rank runs): no other
  /// rank takes part, and this process writes the output folder.
  bool alone = false;
  std::function<void(const RoundProgress&)> on_round;
  /// Asked after every round (Ctrl-C in the binary): true stops the run there, with a checkpoint
  /// to resume from, by throwing RunInterrupted.
  std::function<bool()> stop_requested;
  /// Called once per kind of notice (e.g. a slow fallback was chosen); library code never prints.
  std::function<void(const std::string&)> on_notice;
  /// Rewrites the loaded dataset before it is partitioned (the audit's shadow runs train on
  /// held-out data).
  std::function<void(Dataset&)> adjust_data;
  /// Called once after the last round with the model and the final θ (the process that writes).
  std::function<void(const Model&, const torch::Tensor&)> on_finish;
};

/// A backdoor's success over the run. An intermittent backdoor's last value misleads (it can end
/// near 0 after rounds near 1), so the mean and the maximum over evaluated rounds come with it.
struct BackdoorSummary {
  std::string metric;  ///< its metrics column, e.g. "backdoor_accuracy"
  double last = 0.0, mean = 0.0, max = 0.0;
  std::int64_t evaluations = 0;
};

struct RunSummary {
  std::filesystem::path output_dir;
  std::int64_t rounds_run = 0;
  double final_accuracy = 0.0, best_accuracy = 0.0, final_loss = 0.0;
  double wall_seconds = 0.0;
  std::string stopped_reason;  ///< empty when all rounds ran
  std::vector<std::string> notices;  ///< each notice once, also in summary.json
  std::int64_t resumed_from = 0;  ///< the checkpoint's round when the run resumed, else 0
  std::vector<MetricsRow> metrics;
  std::vector<BackdoorSummary> backdoors;  ///< one per attack with a triggered test set
};

/// A run stopped at a safe point because RunOptions::stop_requested said so: its checkpoint is
/// written and the message says how to resume.
class RunInterrupted : public Error {
 public:
  explicit RunInterrupted(const std::string& message) : Error(ErrorKind::Runtime, message) {}
};

/// One federated run as docs/architecture.md describes it: sample clients, train them concurrently into
/// rows of U[n, d], apply the privacy and attack hooks, aggregate, step the server, evaluate.
/// Construction opens every plugin and validates every option (what `bulwark validate` does);
/// run() loads the data and trains.
class Engine {
 public:
  Engine(ExperimentConfig config, PluginRegistry& registry);
  ~Engine();

  RunSummary run(const RunOptions& options);

  /// The config with every default filled in, as TOML text (written to config.toml).
  std::string resolved_config() const;

  /// What this process runs, as JSON text without paths (PluginSet::build_fingerprint): the ranks
  /// of an MPI job compare it before they start.
  std::string build_fingerprint() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace bulwark
