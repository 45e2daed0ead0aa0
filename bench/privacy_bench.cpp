// The cost of privacy per local step: for the zoo's GroupNorm CNN on 1×28×28 inputs at batch sizes
// 5, 64 and 256, the time of one private local step (vectorised per-example gradients + the
// mechanism: dp_sgd flat, dp_sgd per-layer, fed_cdp) divided by the time of the non-private step
// (one forward/backward on the batch), both measured in this run exactly as the engine's
// train_client performs them. "fed_cdp observed" is Fed-CDP writing every noised per-example row
// (what a leakage observer sees; B·d Gaussian draws), which the training loop skips. Single
// intra-op thread by default, as each client worker runs.
// Prints a table; asserts nothing (DESIGN.md §7).
//
//   privacy_bench [threads]
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

#include "bulwark/rng.hpp"
#include "config.hpp"
#include "engine.hpp"
#include "loader.hpp"
#include "models.hpp"
#include "timing.hpp"

namespace {

double seconds(const std::function<void()>& body) { return bulwark::bench::best_seconds(body, 5, 0.3, 200); }

struct Mechanism {
  std::string label, plugin, options;
  bool rows_observed;  // false: as in the engine's training loop; true: as under a leakage observer
};

}  // namespace

int main(int argc, char** argv) {
  bulwark::init_runtime();  // as the host does
  if (argc > 1) at::set_num_threads(std::max(1, std::atoi(argv[1])));
  try {
    bulwark::PluginRegistry registry({BULWARK_BENCH_PLUGIN_DIR});
    const auto model = bulwark::build_model(
        bulwark::options_from_string("arch = \"cnn\"", bulwark::model_option_specs(), "[model]"), {1, 28, 28}, 10);
    const auto& layout = model->layout();
    // The zoo's per-example path as the engine calls it (per-row losses from the same pass).
    const auto* stacked = dynamic_cast<const bulwark::detail::StackedModel*>(model.get());
    const auto theta = model->initial_parameters(/*seed=*/1);
    const double lr = 0.01;

    const std::vector<Mechanism> mechanisms = {
        {"dp_sgd flat", "dp_sgd", "clip = 1.0\nnoise_multiplier = 1.0", false},
        {"dp_sgd per-layer", "dp_sgd", "clip = 1.0\nnoise_multiplier = 1.0\nclipping = \"per_layer_uniform\"", false},
        {"fed_cdp", "fed_cdp", "clip = 4.0\nnoise_multiplier = 6.0", false},
        {"fed_cdp observed", "fed_cdp", "clip = 4.0\nnoise_multiplier = 6.0", true},
    };
    std::vector<bulwark::PluginHandle<bulwark::PrivacyMechanism>> handles;
    for (const auto& m : mechanisms) {
      auto library = registry.open(BULWARK_KIND_PRIVACY, m.plugin);
      handles.emplace_back(library, bulwark::options_from_string(m.options, library->option_specs(),
                                                                 "privacy '" + m.plugin + "'"));
    }

    std::printf("privacy_bench: %s, %d intra-op thread(s); time per local step, ratio to the non-private step\n",
                model->describe().c_str(), at::get_num_threads());
    std::printf("%6s %14s %20s", "batch", "non-private", "per-example grads");
    for (const auto& m : mechanisms) std::printf(" %22s", m.label.c_str());
    std::printf("\n");

    // Where the private step's time goes: the mechanism alone on a ready [B, d] matrix. Printed
    // after the main table.
    std::vector<std::string> breakdown;
    for (std::int64_t batch : {5, 64, 256}) {
      auto generator = bulwark::make_generator(static_cast<std::uint64_t>(batch));
      const auto inputs = torch::randn({batch, 1, 28, 28}, generator);
      const auto labels = torch::randint(10, {batch}, generator, torch::kLong);
      auto local = theta.clone().requires_grad_(true);

      // The engine's non-private step: loss, gradient at θ, SGD update.
      const double plain = seconds([&] {
        auto loss = torch::cross_entropy_loss(model->forward(local, inputs), labels);
        auto gradient = torch::autograd::grad({loss}, {local})[0];
        (void)loss.item<double>();
        torch::NoGradGuard no_grad;
        local.sub_(gradient, lr);
      });
      const double per_example = seconds([&] { (void)model->per_example_gradients(local, inputs, labels); });
      std::printf("%6lld %11.3f ms %13.3f ms %4.2fx", static_cast<long long>(batch), plain * 1e3, per_example * 1e3,
                  per_example / plain);

      for (std::size_t k = 0; k < handles.size(); ++k) {
        auto& mechanism = handles[k];
        bulwark::PrivacyStepContext context;
        context.rows_observed = mechanisms[k].rows_observed;
        context.round = 1;
        context.total_rounds = 10;
        context.steps = 1;
        context.batch_size = batch;
        context.layout = &layout;
        context.generator = bulwark::make_generator(/*seed=*/3);
        // The engine's private step: per-example gradients with the per-row losses of the same
        // pass (for the metrics), the mechanism, SGD update.
        const double private_step = seconds([&] {
          torch::Tensor row_losses;
          auto grads = stacked->per_example_gradients_stacked(local, inputs, labels, &row_losses);
          auto gradient = mechanism->privatize_gradients(grads, context);
          (void)row_losses.mean().item<double>();
          torch::NoGradGuard no_grad;
          local.sub_(gradient, lr);
        });
        std::printf(" %11.3f ms %5.2fx", private_step * 1e3, private_step / plain);
      }
      std::printf("\n");

      const auto ready = model->per_example_gradients(local, inputs, labels).clone();
      auto scratch = torch::empty_like(ready);
      const double copy = seconds([&] { scratch.copy_(ready); });
      std::string line = std::to_string(batch) + ":";
      for (std::size_t k = 0; k < handles.size(); ++k) {
        bulwark::PrivacyStepContext context;
        context.round = 1;
        context.total_rounds = 10;
        context.batch_size = batch;
        context.layout = &layout;
        context.generator = bulwark::make_generator(/*seed=*/3);
        context.rows_observed = mechanisms[k].rows_observed;
        const double alone = seconds([&] {
          scratch.copy_(ready);
          (void)handles[k]->privatize_gradients(scratch, context);
        }) - copy;
        line += (k == 0 ? " " : ", ") + mechanisms[k].label + " " + std::to_string(alone * 1e3) + " ms";
      }
      breakdown.push_back(line);
    }
    std::printf("\nmechanism alone on a ready [B, d] matrix, per batch size:\n");
    for (const auto& line : breakdown) std::printf("  %s\n", line.c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "privacy_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
