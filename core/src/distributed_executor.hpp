#pragma once

// A round's clients across the ranks of an MPI job (docs/distributed.md). Rank 0 runs the round
// as always; at the train phase it sends every rank θ, the round's participants and the plugins'
// state, each rank (rank 0 too) trains the clients assigned to it with its own ThreadExecutor,
// and their rows of U come back to rank 0 in client order. Robust rules need every row, so rows
// are gathered, never summed. A client's numbers do not depend on the rank that trains it, so
// the run is bit-identical for any number of ranks.
#include <cstdint>
#include <string>
#include <vector>

#include "executor.hpp"
#include "plugin_set.hpp"

namespace bulwark {

class DistributedExecutor final : public ClientExecutor {
 public:
  DistributedExecutor(ThreadExecutor& local, PluginSet& plugins);
  ~DistributedExecutor() override;

  /// Rank 0: one round, as the engine calls any executor.
  void train(const RoundWork& work, torch::Tensor& updates, std::vector<double>& losses) override;

  /// Ranks > 0: trains what rank 0 sends, round after round, until rank 0 stops.
  void serve(c10::Device device);

  /// Rank 0: releases the other ranks from serve() (the run ended, or failed). Idempotent.
  void stop() noexcept;

  /// The rank that trains each row: rows balanced by cost (steps × batch), largest first, each to
  /// the least-loaded rank (ties to the lower row and the lower rank). Deterministic.
  std::vector<int> assign(const RoundWork& work) const;

 private:
  ThreadExecutor& local_;
  PluginSet& plugins_;
  bool stopped_ = false;
};

/// Refuses to start an MPI job whose ranks differ in what they run: rank 0 compares every rank's
/// `fingerprint` (PluginSet::build_fingerprint as JSON text; a study's lists every cell's) with its own, and the job fails on
/// every rank with one message naming the first rank that differs and what differs.
void check_same_build(const std::string& fingerprint);

}  // namespace bulwark
