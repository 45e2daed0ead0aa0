// Feasibility of client-batched local training (issue 9; not wired into the engine): one local
// SGD step of K clients of the zoo's GroupNorm CNN at B = 5, either K separate steps on the real
// model (what train_client does today) or one step of a stacked form written here — parameters
// Θ [K, d], convolutions as grouped convolutions (groups = K), GroupNorm with K·groups groups and
// per-client affine (or, second row, convolutions as im2col + batched matmul and GroupNorm per
// example with the per-client affine broadcast), linear layers as batched matmul, loss = Σ_k mean cross-entropy of client k
// (so ∂loss/∂Θ_k is client k's own gradient). Checks the stacked form against the model (max
// difference of per-client losses and gradients) and prints the time ratio. Non-private only.
// Asserts nothing.
//
//   batched_step_bench [K ...]   (default 10 50)
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include "config.hpp"
#include "models.hpp"
#include "timing.hpp"

namespace {

constexpr std::int64_t kBatch = 5, kGroups = 4;

double seconds(const std::function<void()>& body) { return bulwark::bench::best_seconds(body, 5, 0.5, 100); }

/// Client-stacked view [K, ...shape] of the layout entry `name` of Θ [K, d].
torch::Tensor entry(const bulwark::ParamLayout& layout, const torch::Tensor& stacked, const std::string& name) {
  for (const auto& e : layout.entries) {
    if (e.name != name) continue;
    std::vector<std::int64_t> shape = {stacked.size(0)};
    shape.insert(shape.end(), e.shape.begin(), e.shape.end());
    return stacked.narrow(1, e.offset, e.numel).reshape(shape);
  }
  throw std::runtime_error("no layout entry " + name);
}

/// Per-client mean cross-entropy [K] of the stacked CNN for x [K, B, C, H, W], y [K, B].
/// `unfold`: convolutions as im2col + batched matmul instead of one grouped convolution.
torch::Tensor stacked_losses(const bulwark::ParamLayout& layout, const torch::Tensor& stacked,
                             const torch::Tensor& x, const torch::Tensor& y, bool unfold) {
  const auto k = x.size(0), b = x.size(1);
  auto flat = [&](const std::string& name) {
    auto t = entry(layout, stacked, name);
    std::vector<std::int64_t> shape = {t.size(0) * t.size(1)};
    for (std::int64_t i = 2; i < t.dim(); ++i) shape.push_back(t.size(i));
    return t.reshape(shape);
  };
  torch::Tensor h;
  if (unfold) {
    h = x;  // [K, B, C, H, W] throughout
    for (const char* stage : {"1", "2"}) {
      const std::string conv = std::string("conv") + stage, gn = std::string("gn") + stage;
      const auto c = h.size(2), height = h.size(3), width = h.size(4);
      auto weight = entry(layout, stacked, conv + ".weight");  // [K, O, C, 3, 3]
      const auto out = weight.size(1);
      auto cols = torch::im2col(h.reshape({k * b, c, height, width}), {3, 3}, {1, 1}, {1, 1}, {1, 1})
                      .reshape({k, b, c * 9, height * width});
      h = torch::matmul(weight.reshape({k, 1, out, c * 9}), cols) +
          entry(layout, stacked, conv + ".bias").reshape({k, 1, out, 1});
      h = torch::max_pool2d(h.reshape({k * b, out, height, width}), 2);
      h = torch::group_norm(h, kGroups, {}, {}, 1e-5).reshape({k, b, out, height / 2, width / 2});
      h = torch::tanh(h * entry(layout, stacked, gn + ".weight").reshape({k, 1, out, 1, 1}) +
                      entry(layout, stacked, gn + ".bias").reshape({k, 1, out, 1, 1}));
    }
    h = h.reshape({k, b, -1});
  } else {
    h = x.transpose(0, 1).reshape({b, k * x.size(2), x.size(3), x.size(4)});
    for (const char* stage : {"1", "2"}) {
      const std::string conv = std::string("conv") + stage, gn = std::string("gn") + stage;
      h = torch::conv2d(h, flat(conv + ".weight"), flat(conv + ".bias"), 1, 1, 1, k);
      h = torch::max_pool2d(h, 2);
      h = torch::tanh(torch::group_norm(h, k * kGroups, flat(gn + ".weight"), flat(gn + ".bias"), 1e-5));
    }
    h = h.reshape({b, k, -1}).transpose(0, 1);  // [K, B, C·H·W], per-client flatten order
  }
  for (const char* fc : {"fc1", "fc2", "fc3"}) {
    h = torch::baddbmm(entry(layout, stacked, std::string(fc) + ".bias").unsqueeze(1), h,
                       entry(layout, stacked, std::string(fc) + ".weight").transpose(1, 2));
    if (std::string(fc) != "fc3") h = torch::tanh(h);
  }
  return torch::cross_entropy_loss(h.reshape({k * b, -1}), y.reshape({k * b}), {}, at::Reduction::None)
      .reshape({k, b})
      .mean(1);
}

}  // namespace

int main(int argc, char** argv) {
  at::set_num_threads(1);
  try {
    std::vector<std::int64_t> sizes;
    for (int i = 1; i < argc; ++i) sizes.push_back(std::atoll(argv[i]));
    if (sizes.empty()) sizes = {10, 50};
    const auto model = bulwark::build_model(
        bulwark::options_from_string("arch = \"cnn\"", bulwark::model_option_specs(), "[model]"), {1, 28, 28}, 10);
    const auto& layout = model->layout();
    const auto theta = model->initial_parameters(/*seed=*/1);
    const double lr = 0.05;
    std::printf("GroupNorm CNN (d = %lld), B = %lld, one local SGD step per client, 1 intra-op thread\n",
                static_cast<long long>(layout.total), static_cast<long long>(kBatch));
    std::printf("%6s %-8s %14s %14s %10s %14s\n", "K", "conv as", "one-by-one ms", "stacked ms", "speed-up", "max |diff|");
    for (auto k : sizes) {
      const auto x = torch::rand({k, kBatch, 1, 28, 28});
      const auto y = torch::randint(10, {k, kBatch}, torch::kLong);
      // Different parameters per client, as after a few local steps.
      const auto start = theta.unsqueeze(0) + 0.01 * torch::randn({k, layout.total});
      for (bool unfold : {false, true}) {
        double diff = 0;
        {
          auto stacked = start.clone().requires_grad_(true);
          auto losses = stacked_losses(layout, stacked, x, y, unfold);
          auto grads = torch::autograd::grad({losses.sum()}, {stacked})[0];
          for (std::int64_t c = 0; c < k; ++c) {
            auto local = start[c].clone().requires_grad_(true);
            auto loss = torch::cross_entropy_loss(model->forward(local, x[c]), y[c]);
            auto grad = torch::autograd::grad({loss}, {local})[0];
            diff = std::max({diff, std::abs(loss.item<double>() - losses[c].item<double>()),
                             (grad - grads[c]).abs().max().item<double>()});
          }
        }

        const double one_by_one = seconds([&] {
          for (std::int64_t c = 0; c < k; ++c) {
            auto local = start[c].clone().requires_grad_(true);
            auto loss = torch::cross_entropy_loss(model->forward(local, x[c]), y[c]);
            auto grad = torch::autograd::grad({loss}, {local})[0];
            loss.item<double>();
            torch::NoGradGuard no_grad;
            local.sub_(lr * grad);
          }
        });
        const double stacked_time = seconds([&] {
          auto stacked = start.clone().requires_grad_(true);
          auto losses = stacked_losses(layout, stacked, x, y, unfold);
          auto grads = torch::autograd::grad({losses.sum()}, {stacked})[0];
          losses.sum().item<double>();
          torch::NoGradGuard no_grad;
          stacked.sub_(lr * grads);
        });
        std::printf("%6lld %-8s %14.3f %14.3f %9.2fx %14.2e\n", static_cast<long long>(k),
                    unfold ? "im2col" : "grouped", 1e3 * one_by_one, 1e3 * stacked_time,
                    one_by_one / stacked_time, diff);
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "batched_step_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
