#pragma once

// The server optimiser that applies a round's aggregate to θ: SGD with optional momentum
// (FedAvg, FedAvgM) or Adam (FedAdam, Reddi et al., "Adaptive Federated Optimization", ICLR 2021).
#include <torch/types.h>

#include "bulwark/layout.hpp"
#include "settings.hpp"

namespace bulwark {

class ServerOptimizer {
 public:
  ServerOptimizer(const ServerSettings& settings, Mode mode) : settings_(settings), mode_(mode) {}

  /// θ ← θ − step(direction) with round `round`'s rate. A fedavg aggregate is a delta (θ moves
  /// along it), a fedsgd one a gradient (θ moves against it); weight decay adds λθ to either.
  void step(torch::Tensor& theta, const torch::Tensor& aggregate, std::int64_t round, std::int64_t rounds);

  /// What one round hands to the next: "momentum", "adam_m", "adam_v" (undefined until used).
  StateDict state() const;
  void load(const StateDict& state);

 private:
  const ServerSettings& settings_;
  Mode mode_;
  torch::Tensor momentum_, adam_m_, adam_v_;
};

}  // namespace bulwark
