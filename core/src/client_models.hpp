#pragma once

// Models that clients keep across rounds (ClientProtocol::persistent_models, RSA): the kernel holds
// x_i for every client that has taken part, d numbers each, and nothing for the others.
#include <cstdint>
#include <map>
#include <vector>

#include <torch/types.h>

#include "bulwark/layout.hpp"

namespace bulwark {

class ClientModels {
 public:
  /// [n, d]: each participant's own model; θ for a client that has not trained yet.
  torch::Tensor starts(const std::vector<std::int64_t>& participants, const torch::Tensor& theta) const;

  /// After the round's training, which wrote Δ_i = x_i' − θ into `updates`: keeps each x_i' and
  /// rewrites `updates` to what the clients upload, x_i − θ with x_i as the round found it.
  void finish(const std::vector<std::int64_t>& participants, const torch::Tensor& starts, const torch::Tensor& theta,
              torch::Tensor& updates);

  /// Checkpoint form: one entry per client, named by its id.
  StateDict state() const;
  void load(const StateDict& state, c10::Device device);

 private:
  std::map<std::int64_t, torch::Tensor> models_;
};

}  // namespace bulwark
