// The cost of privacy per local step: for the zoo's GroupNorm CNN on 1×28×28 inputs at batch sizes
// 5, 64 and 256, the time of one private local step (per-example clipping + the mechanism: dp_sgd
// flat and per-layer and fed_cdp with ghost clipping as the engine runs them, dp_sgd flat also
// with the [B, d] rows formed) divided by the time of the non-private step (one forward/backward on the batch), both
// measured in this run exactly as the engine's local trainer performs them. "fed_cdp observed" is
// Fed-CDP writing every noised per-example row (what a leakage observer sees; B·d Gaussian draws),
// which the training loop skips. Then the peak memory of a step at batch 256, each configuration in
// its own child process: the rise of the peak resident set above the resident set before the step.
// Single intra-op thread by default, as each client worker runs. Prints tables; asserts nothing
// (DESIGN.md §7).
//
//   privacy_bench [threads]
//   privacy_bench --child-memory plain|rows|ghost [threads]   one step configuration, prints "peak_kib N"
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
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
#include "process_memory.hpp"
#include "timing.hpp"

namespace {

using bulwark::PluginHandle;
using bulwark::PrivacyMechanism;

double seconds(const std::function<void()>& body) { return bulwark::bench::best_seconds(body, 5, 0.3, 200); }

struct Mechanism {
  std::string label, plugin, options;
  bool rows_observed;  // false: as in the engine's training loop; true: as under a leakage observer
  bool ghost;          // clipped from the layers' norms (clips_by_layer_norms), as the training loop does
};

const std::vector<Mechanism> kMechanisms = {
    {"dp_sgd flat", "dp_sgd", "clip = 1.0\nnoise_multiplier = 1.0", false, true},
    {"dp_sgd flat rows", "dp_sgd", "clip = 1.0\nnoise_multiplier = 1.0", false, false},
    {"dp_sgd per-layer", "dp_sgd", "clip = 1.0\nnoise_multiplier = 1.0\nclipping = \"per_layer_uniform\"", false, true},
    {"fed_cdp", "fed_cdp", "clip = 4.0\nnoise_multiplier = 6.0", false, true},
    {"fed_cdp observed", "fed_cdp", "clip = 4.0\nnoise_multiplier = 6.0", true, false},
};

/// The model, its parameters and the plugins every step below uses.
struct Setup {
  bulwark::PluginRegistry registry{std::vector<std::filesystem::path>{BULWARK_BENCH_PLUGIN_DIR}};
  std::unique_ptr<bulwark::Model> model = bulwark::build_model(
      bulwark::options_from_string("arch = \"cnn\"", bulwark::model_option_specs(), "[model]"), {1, 28, 28}, 10);
  // The zoo's per-example paths as the engine calls them (per-row losses from the same pass).
  const bulwark::detail::StackedModel* stacked = dynamic_cast<const bulwark::detail::StackedModel*>(model.get());
  torch::Tensor theta = model->initial_parameters(/*seed=*/1);

  PluginHandle<PrivacyMechanism> open(const std::string& plugin, const std::string& options) {
    auto library = registry.open(BULWARK_KIND_PRIVACY, plugin);
    return PluginHandle<PrivacyMechanism>(
        library, bulwark::options_from_string(options, library->option_specs(), "privacy '" + plugin + "'"));
  }

  bulwark::PrivacyStepContext context(std::int64_t batch, bool rows_observed) const {
    bulwark::PrivacyStepContext context;
    context.round = 1;
    context.total_rounds = 10;
    context.steps = 1;
    context.batch_size = batch;
    context.layout = &model->layout();
    context.generator = bulwark::make_generator(/*seed=*/3);
    context.rows_observed = rows_observed;
    return context;
  }
};

constexpr double kLr = 0.01;

/// The engine's non-private step: loss, gradient at θ, SGD update.
void plain_step(const Setup& setup, torch::Tensor& local, const torch::Tensor& inputs, const torch::Tensor& labels) {
  auto loss = torch::cross_entropy_loss(setup.model->forward(local, inputs), labels);
  auto gradient = torch::autograd::grad({loss}, {local})[0];
  (void)loss.item<double>();
  torch::NoGradGuard no_grad;
  local.sub_(gradient, kLr);
}

/// The gradient the engine's private step applies: ghost clipping, or the mechanism on the rows.
torch::Tensor private_gradient(const Setup& setup, PrivacyMechanism& mechanism, bool ghost,
                               const bulwark::PrivacyStepContext& context, const torch::Tensor& local,
                               const torch::Tensor& inputs, const torch::Tensor& labels, torch::Tensor& row_losses) {
  if (ghost) {
    auto sums = setup.stacked->clipped_gradient_sums_stacked(
        local, inputs, labels, [&](const torch::Tensor& norms) { return mechanism.clip_factors(norms, context); },
        &row_losses);
    return mechanism.privatize_clipped_sum(sums, context);
  }
  auto rows = setup.stacked->per_example_gradients_stacked(local, inputs, labels, &row_losses);
  return mechanism.privatize_gradients(rows, context);
}

/// The engine's private step: the private gradient, the per-row losses for the metrics, SGD update.
void private_step(const Setup& setup, PrivacyMechanism& mechanism, bool ghost, const bulwark::PrivacyStepContext& context,
                  torch::Tensor& local, const torch::Tensor& inputs, const torch::Tensor& labels) {
  torch::Tensor row_losses;
  auto gradient = private_gradient(setup, mechanism, ghost, context, local, inputs, labels, row_losses);
  (void)row_losses.mean().item<double>();
  torch::NoGradGuard no_grad;
  local.sub_(gradient, kLr);
}

struct Batch {
  torch::Tensor inputs, labels;
};

Batch batch_of(std::int64_t size) {
  auto generator = bulwark::make_generator(static_cast<std::uint64_t>(size));
  auto inputs = torch::randn({size, 1, 28, 28}, generator);
  return {inputs, torch::randint(10, {size}, generator, torch::kLong)};
}

constexpr std::int64_t kMemoryBatch = 256;

/// One configuration's step at batch 256, three times; prints the peak's rise above the resident
/// set before the first step.
int memory_child(const std::string& kind) {
  Setup setup;
  auto mechanism = setup.open("dp_sgd", "clip = 1.0\nnoise_multiplier = 1.0");
  const auto batch = batch_of(kMemoryBatch);
  auto local = setup.theta.clone().requires_grad_(true);
  const auto context = setup.context(kMemoryBatch, false);
  const long before = bulwark::bench::status_kib("VmRSS");
  for (int i = 0; i < 3; ++i) {
    if (kind == "plain") {
      plain_step(setup, local, batch.inputs, batch.labels);
    } else {
      private_step(setup, *mechanism, kind == "ghost", context, local, batch.inputs, batch.labels);
    }
  }
  std::printf("peak_kib %ld\n", bulwark::bench::status_kib("VmHWM") - before);
  return 0;
}

void timing_table(Setup& setup) {
  std::vector<PluginHandle<PrivacyMechanism>> handles;
  for (const auto& m : kMechanisms) handles.push_back(setup.open(m.plugin, m.options));
  // Ghost clipping against the rows, noise off: the same gradient up to rounding.
  auto noiseless = setup.open("dp_sgd", "clip = 1.0\nnoise_multiplier = 0.0");

  std::printf("privacy_bench: %s, %d intra-op thread(s); time per local step, ratio to the non-private step\n",
              setup.model->describe().c_str(), at::get_num_threads());
  std::printf("%6s %14s %20s", "batch", "non-private", "per-example grads");
  for (const auto& m : kMechanisms) std::printf(" %22s", m.label.c_str());
  std::printf("\n");

  // Where the private step's time goes (the mechanism alone on a ready [B, d] matrix) and how far
  // ghost clipping is from the rows: printed after the main table.
  std::vector<std::string> breakdown, agreement;
  for (std::int64_t size : {5, 64, 256}) {
    const auto batch = batch_of(size);
    auto local = setup.theta.clone().requires_grad_(true);
    const double plain = seconds([&] { plain_step(setup, local, batch.inputs, batch.labels); });
    const double per_example =
        seconds([&] { (void)setup.model->per_example_gradients(local, batch.inputs, batch.labels); });
    std::printf("%6lld %11.3f ms %13.3f ms %4.2fx", static_cast<long long>(size), plain * 1e3, per_example * 1e3,
                per_example / plain);
    for (std::size_t k = 0; k < handles.size(); ++k) {
      const auto context = setup.context(size, kMechanisms[k].rows_observed);
      const double step = seconds(
          [&] { private_step(setup, *handles[k], kMechanisms[k].ghost, context, local, batch.inputs, batch.labels); });
      std::printf(" %11.3f ms %5.2fx", step * 1e3, step / plain);
    }
    std::printf("\n");

    const auto ready = setup.model->per_example_gradients(local, batch.inputs, batch.labels).clone();
    auto scratch = torch::empty_like(ready);
    const double copy = seconds([&] { scratch.copy_(ready); });
    std::string line = std::to_string(size) + ":";
    for (std::size_t k = 0; k < handles.size(); ++k) {
      if (kMechanisms[k].ghost) continue;
      const auto context = setup.context(size, kMechanisms[k].rows_observed);
      const double alone = seconds([&] {
        scratch.copy_(ready);
        (void)handles[k]->privatize_gradients(scratch, context);
      }) - copy;
      line += " " + kMechanisms[k].label + " " + std::to_string(alone * 1e3) + " ms,";
    }
    breakdown.push_back(line.substr(0, line.size() - 1));

    torch::Tensor unused;
    const auto context = setup.context(size, false);
    const auto with_rows = private_gradient(setup, *noiseless, false, context, local, batch.inputs, batch.labels, unused);
    const auto ghost = private_gradient(setup, *noiseless, true, context, local, batch.inputs, batch.labels, unused);
    agreement.push_back(std::to_string(size) + ": max |ghost - rows| = " +
                        std::to_string((ghost - with_rows).abs().max().item<double>()) + " (max |g| = " +
                        std::to_string(with_rows.abs().max().item<double>()) + ")");
  }
  std::printf("\nmechanism alone on a ready [B, d] matrix, per batch size:\n");
  for (const auto& line : breakdown) std::printf("  %s\n", line.c_str());
  std::printf("\ndp_sgd flat, noise off: ghost clipping against the materialised rows:\n");
  for (const auto& line : agreement) std::printf("  %s\n", line.c_str());
}

void memory_table(const std::string& threads) {
  const auto self = std::filesystem::read_symlink("/proc/self/exe").string();
  std::printf("\npeak memory of a local step at batch %lld, above the resident set before it (own process each):\n",
              static_cast<long long>(kMemoryBatch));
  long plain = -1;
  for (const char* kind : {"plain", "rows", "ghost"}) {
    const long kib = bulwark::bench::child_peak_kib("'" + self + "' --child-memory " + kind + " " + threads);
    if (kind == std::string("plain")) plain = kib;
    const char* label = kind == std::string("plain") ? "non-private"
                        : kind == std::string("rows") ? "dp_sgd flat, [B, d] rows"
                                                      : "dp_sgd flat, ghost clipping";
    if (kib < 0 || plain <= 0) {
      std::printf("  %-28s failed\n", label);
      continue;
    }
    std::printf("  %-28s %8.1f MiB %6.2fx\n", label, kib / 1024.0, static_cast<double>(kib) / plain);
  }
}

}  // namespace

int main(int argc, char** argv) {
  bulwark::init_runtime();  // as the host does
  const bool child = argc > 2 && std::string(argv[1]) == "--child-memory";
  const int threads_arg = child ? 3 : 1;
  const std::string threads = argc > threads_arg ? argv[threads_arg] : "1";
  at::set_num_threads(std::max(1, std::atoi(threads.c_str())));
  try {
    if (child) return memory_child(argv[2]);
    Setup setup;
    timing_table(setup);
    memory_table(threads);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "privacy_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
