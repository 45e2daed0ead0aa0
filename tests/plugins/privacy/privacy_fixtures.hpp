#pragma once

// Shared fixtures of the privacy mechanism tests: a small layered layout, hook contexts,
// per-layer norms of a [B, d] matrix, and the noise a step leaves.
#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "bulwark/clipping.hpp"
#include "bulwark/privacy.hpp"
#include "bulwark/rng.hpp"

namespace bulwark::test {

/// Three layers: fc1 (weight [4, 3] + bias [4] = 16), fc2 ([5, 4] + [5] = 25), fc3 ([2, 5] = 10):
/// d = 51, m = 3.
inline ParamLayout three_layer_layout() {
  ParamLayout layout;
  layout.add("fc1.weight", {4, 3});
  layout.add("fc1.bias", {4});
  layout.add("fc2.weight", {5, 4});
  layout.add("fc2.bias", {5});
  layout.add("fc3.weight", {2, 5});
  return layout;
}

/// One layer of `d` coordinates, for noise statistics.
inline ParamLayout flat_layout(std::int64_t d) {
  ParamLayout layout;
  layout.add("w.weight", {d});
  return layout;
}

inline PrivacyStepContext step_context(const ParamLayout& layout, std::int64_t batch, std::uint64_t seed,
                                       std::int64_t round = 1, std::int64_t rounds = 10) {
  PrivacyStepContext context;
  context.round = round;
  context.total_rounds = rounds;
  context.steps = 1;
  context.batch_size = batch;
  context.layout = &layout;
  context.generator = make_generator(seed);
  return context;
}

inline ClientUpdateContext client_context(const ParamLayout& layout, std::uint64_t seed) {
  ClientUpdateContext context;
  context.round = 1;
  context.total_rounds = 10;
  context.num_samples = 100;
  context.layout = &layout;
  context.generator = make_generator(seed);
  return context;
}

inline ServerPrivacyContext server_context(const ParamLayout& layout, std::int64_t clients, std::uint64_t seed) {
  ServerPrivacyContext context;
  context.round = 1;
  context.total_rounds = 10;
  context.clients_in_round = clients;
  context.layout = &layout;
  context.generator = make_generator(seed);
  return context;
}

/// L2 norm of each layer of each row: [B, m], in double.
inline torch::Tensor layer_norms(const torch::Tensor& rows, const ParamLayout& layout) {
  return bulwark::layer_norms(rows.to(torch::kDouble), layout);
}

/// Per-example gradients [B, d] whose rows have very different scales: some far above any bound
/// used in the tests, some far below.
inline torch::Tensor mixed_gradients(std::int64_t batch, std::int64_t d, std::uint64_t seed) {
  auto g = torch::randn({batch, d}, make_generator(seed));
  auto scales = torch::logspace(-3, 2, batch);  // 0.001 .. 100
  return g * scales.unsqueeze(1) / std::sqrt(static_cast<double>(d));
}

/// The std of g's entries over 20 steps of `mechanism` on zero gradients [batch, 20000]: what
/// its noise alone leaves in the averaged gradient.
inline double noise_std(PrivacyMechanism& mechanism, std::int64_t batch, bool rows_observed) {
  const auto flat = flat_layout(20000);
  std::vector<torch::Tensor> means;
  for (std::uint64_t seed = 1; seed <= 20; ++seed) {
    auto zeros = torch::zeros({batch, 20000});
    auto context = step_context(flat, batch, seed);
    context.rows_observed = rows_observed;
    means.push_back(mechanism.privatize_gradients(zeros, context));
  }
  return torch::cat(means).to(torch::kDouble).std().item<double>();
}

}  // namespace bulwark::test
