#pragma once

// Shared by the gradient-leakage attack suites: a tiny twice-differentiable model of the zoo, the
// gradient a victim would reveal, and the problem an attack is handed.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "bulwark/attack.hpp"
#include "bulwark/model.hpp"
#include "bulwark/rng.hpp"
#include "config.hpp"
#include "models.hpp"

namespace bulwark::test {

/// A sigmoid MLP 1x4x4 -> 8 -> classes with Zhu et al.'s U[-0.5, 0.5] initialisation: 16 input
/// features against d = 136 + 9·classes parameters, so the gradient determines the input.
inline std::unique_ptr<Model> tiny_sigmoid_model(std::int64_t classes = 3) {
  auto options = options_from_string("arch = \"mlp\"\nhidden = [8]\nactivation = \"sigmoid\"\ninit = \"dlg\"",
                                     model_option_specs(), "[model]");
  return build_model(options, {1, 4, 4}, classes);
}

/// ∇θ of the mean cross-entropy of (x, y) at θ: what a victim's first local step reveals.
inline torch::Tensor victim_gradient(const Model& model, const torch::Tensor& theta, const torch::Tensor& x,
                                     const torch::Tensor& y) {
  torch::AutoGradMode grad_mode(true);
  auto params = theta.detach().requires_grad_(true);
  auto loss = torch::cross_entropy_loss(model.forward(params, x), y);
  return torch::autograd::grad({loss}, {params})[0].detach();
}

inline LeakageProblem leakage_problem(const Model& model, const torch::Tensor& theta,
                                      const torch::Tensor& observed, std::int64_t batch,
                                      std::int64_t classes, std::uint64_t seed) {
  LeakageProblem problem;
  problem.model = &model;
  problem.params = theta;
  problem.observed = observed;
  problem.observed_is_mean = true;
  problem.batch_size = batch;
  problem.input_shape = {1, 4, 4};
  problem.num_classes = classes;
  problem.generator = make_generator(seed);
  return problem;
}

/// Mean squared error per feature.
inline double mse(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kDouble) - b.to(torch::kDouble)).pow(2).mean().item<double>();
}

}  // namespace bulwark::test
