#include "bulwark/inversion.hpp"

#include <ATen/ATen.h>
#include <torch/autograd.h>
#include <torch/optim/lbfgs.h>

#include <algorithm>
#include <cmath>
#include <limits>

namespace bulwark {

at::Tensor dummy_inputs(const std::string& init, std::int64_t patch, std::int64_t batch,
                        const std::vector<std::int64_t>& shape, at::Generator generator) {
  std::vector<std::int64_t> sizes{batch};
  sizes.insert(sizes.end(), shape.begin(), shape.end());
  const auto options = at::TensorOptions().dtype(at::kFloat);
  if (init == "normal") return at::randn(sizes, generator, options);
  if (init == "uniform") return at::rand(sizes, generator, options);
  const auto spatial = std::min<std::size_t>(shape.size() >= 3 ? 2 : 1, shape.size());
  std::vector<std::int64_t> patch_sizes = sizes, repeats(sizes.size(), 1);
  for (std::size_t k = sizes.size() - spatial; k < sizes.size(); ++k) {
    patch_sizes[k] = std::min(patch, sizes[k]);
    repeats[k] = (sizes[k] + patch_sizes[k] - 1) / patch_sizes[k];
  }
  auto tiled = at::rand(patch_sizes, generator, options).repeat(repeats);
  for (std::size_t k = sizes.size() - spatial; k < sizes.size(); ++k) {
    tiled = tiled.narrow(static_cast<std::int64_t>(k), 0, sizes[k]);
  }
  return tiled.contiguous();
}

std::optional<std::int64_t> final_layer_label(const ParamLayout& layout, const at::Tensor& gradient,
                                              std::int64_t num_classes) {
  for (auto entry = layout.entries.rbegin(); entry != layout.entries.rend(); ++entry) {
    if (entry->shape.size() == 2 && entry->shape[0] == num_classes) {
      auto weight_gradient = gradient.narrow(0, entry->offset, entry->numel).view(entry->shape);
      return weight_gradient.sum(1).argmin().item<std::int64_t>();
    }
  }
  return std::nullopt;
}

GradientMatch lbfgs_gradient_matching(const std::vector<at::Tensor>& variables,
                                      const std::function<at::Tensor(bool)>& matching_loss, std::int64_t iterations,
                                      double lr, std::int64_t history, double stop_at) {
  torch::optim::LBFGS optimizer(variables, torch::optim::LBFGSOptions(lr).history_size(history));
  auto closure = [&] {
    auto distance = matching_loss(/*create_graph=*/true);
    auto grads = torch::autograd::grad({distance}, variables);
    for (std::size_t i = 0; i < variables.size(); ++i) variables[i].mutable_grad() = grads[i];
    return distance.detach();
  };
  auto snapshot = [&] {
    std::vector<at::Tensor> values;
    for (const auto& v : variables) values.push_back(v.detach().clone());
    return values;
  };
  GradientMatch match;
  match.best = snapshot();
  double best = std::numeric_limits<double>::infinity();
  std::vector<double> trace;
  match.iterations = iterations;
  for (std::int64_t it = 0; it < iterations; ++it) {
    auto before = snapshot();
    // step() returns the loss at the point it started from: the iterate after `it` steps.
    const double loss = optimizer.step(closure).item<double>();
    trace.push_back(loss);
    if (!std::isfinite(loss)) {
      match.iterations = it;
      break;
    }
    if (loss < best) {
      best = loss;
      match.best = std::move(before);
    }
    if (loss <= stop_at) {
      match.iterations = it;
      break;
    }
  }
  if (match.iterations == iterations) {  // the last step's result has not been scored yet
    const double loss = matching_loss(/*create_graph=*/false).item<double>();
    trace.push_back(loss);
    if (loss < best) match.best = snapshot();
  }
  match.trace = at::tensor(trace, at::kDouble);
  return match;
}

}  // namespace bulwark
