// Client-batched against one-by-one local training, measured through the real Engine (issue 9,
// DESIGN.md §7). Workload of the DP papers: Fashion-MNIST (synthetic 1×28×28 data of the same
// shape when the files are missing), 100 clients IID, L = 100 local iterations, B = 5, lr 0.05,
// 10 or 50 clients per round, without privacy and with fed_cdp (C = 4, σ = 6). Each row runs the
// same experiment with clients.batching = "off" and "on" on the same workers and prints the
// ratio of their time_train (best round after the first), and the largest difference of the
// test loss between the two runs (the two forms agree to float rounding). Rows for the GroupNorm
// CNN (d = 107,722), a one-hidden-layer MLP and softmax regression show where batching pays on
// this machine. First, the ceiling of any client batching on this machine: one local step of K
// clients at B = 5 (K steps of the model) against one step of the model at B = 5K with shared
// weights, which no stack of K different models can beat. Asserts nothing.
//
//   batching_bench [rounds=3] [local_iterations=100] [threads=2]
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <ATen/Parallel.h>

#include <torch/torch.h>

#include "config.hpp"
#include "engine_run.hpp"
#include "models.hpp"
#include "timing.hpp"

namespace {

struct Row {
  std::string label, model, privacy;
  std::int64_t per_round;
};

struct Timing {
  double train = 1e300;
  std::vector<double> test_loss;
};

Timing run(bulwark::PluginRegistry& registry, const Row& row, const std::string& batching,
           std::int64_t rounds, std::int64_t iterations, int threads) {
  const auto summary = bulwark::bench::run_experiment(
      registry,
      "[experiment]\nname = \"batching_bench\"\nseed = 1\nrounds = " + std::to_string(rounds) + "\n\n" +
          bulwark::bench::fashion_mnist_data_section() + "\n[data.partition]\nscheme = \"iid\"\n\n[model]\n" +
          row.model + "\n\n[clients]\ncount = 100\nper_round = " + std::to_string(row.per_round) +
          "\nlocal_iterations = " + std::to_string(iterations) + "\nbatch_size = 5\nlr = 0.05\nbatching = \"" +
          batching + "\"\n" + row.privacy,
      threads);
  Timing timing;
  for (std::size_t r = 0; r < summary.metrics.size(); ++r) {
    for (const auto& [name, value] : summary.metrics[r]) {
      if (name == "time_train" && r > 0) timing.train = std::min(timing.train, value);
      if (name == "test_loss") timing.test_loss.push_back(value);
    }
  }
  return timing;
}

/// K separate B = 5 steps of the model over one B = 5K step with shared weights.
void print_ceiling(const std::string& model_toml, const std::string& label) {
  const auto model = bulwark::build_model(
      bulwark::options_from_string(model_toml, bulwark::model_option_specs(), "[model]"), {1, 28, 28}, 10);
  const auto theta = model->initial_parameters(/*seed=*/1);
  auto step_seconds = [&](std::int64_t batch) {
    const auto x = torch::rand({batch, 1, 28, 28});
    const auto y = torch::randint(10, {batch}, torch::kLong);
    return bulwark::bench::best_seconds([&] {
      auto params = theta.clone().requires_grad_(true);
      auto loss = torch::cross_entropy_loss(model->forward(params, x), y);
      auto gradient = torch::autograd::grad({loss}, {params})[0];
      torch::NoGradGuard no_grad;
      params.sub_(0.05 * gradient);
    });
  };
  const double small = step_seconds(5);
  for (std::int64_t k : {10, 50}) {
    const double shared = step_seconds(5 * k);
    std::printf("%-20s %9lld %14.3f %14.3f %9.2fx\n", label.c_str(), static_cast<long long>(k), 1e3 * k * small,
                1e3 * shared, k * small / shared);
  }
}

}  // namespace

int main(int argc, char** argv) {
  bulwark::init_runtime();  // as the host does: parallelism is across clients
  try {
    const std::int64_t rounds = argc > 1 ? std::max(2, std::atoi(argv[1])) : 3;
    const std::int64_t iterations = argc > 2 ? std::max(1, std::atoi(argv[2])) : 100;
    const int threads = argc > 3 ? std::max(1, std::atoi(argv[3])) : 2;
    bulwark::PluginRegistry registry({BULWARK_BENCH_PLUGIN_DIR});
    const std::string fed_cdp = "\n[privacy]\nplugin = \"fed_cdp\"\nclip = 4.0\nnoise_multiplier = 6.0\n";
    const std::string cnn = "arch = \"cnn\"", mlp = "arch = \"mlp\"\nhidden = [64]", softmax = "arch = \"softmax\"";
    const std::vector<Row> rows = {
        {"cnn", cnn, "", 10},          {"cnn + fed_cdp", cnn, fed_cdp, 10},
        {"cnn", cnn, "", 50},          {"cnn + fed_cdp", cnn, fed_cdp, 50},
        {"mlp [64]", mlp, "", 10},     {"mlp [64] + fed_cdp", mlp, fed_cdp, 10},
        {"mlp [64]", mlp, "", 50},     {"softmax", softmax, "", 10},
        {"softmax + fed_cdp", softmax, fed_cdp, 10}, {"softmax", softmax, "", 50},
    };
    std::printf("Ceiling: one local step, K steps at B = 5 against one step at B = 5K (shared weights), 1 thread\n");
    std::printf("%-20s %9s %14s %14s %10s\n", "model", "K", "K x B=5 ms", "B=5K ms", "ceiling");
    for (const auto& [label, model] : {std::pair{"cnn", cnn}, {"mlp [64]", mlp}, {"softmax", softmax}}) {
      print_ceiling(model, label);
    }
    std::printf("\n%s, 100 clients IID, L = %lld, B = 5, lr 0.05, %d workers; time_train per round, best of rounds 2..%lld\n",
                bulwark::bench::have_fashion_mnist() ? "Fashion-MNIST" : "synthetic 1x28x28", static_cast<long long>(iterations),
                threads, static_cast<long long>(rounds));
    std::printf("%-20s %9s %14s %14s %10s %16s\n", "model", "clients", "one-by-one s", "batched s", "speed-up",
                "max |d test_loss|");
    for (const auto& row : rows) {
      const auto off = run(registry, row, "off", rounds, iterations, threads);
      const auto on = run(registry, row, "on", rounds, iterations, threads);
      double difference = 0;
      for (std::size_t r = 0; r < off.test_loss.size() && r < on.test_loss.size(); ++r) {
        difference = std::max(difference, std::abs(off.test_loss[r] - on.test_loss[r]));
      }
      std::printf("%-20s %9lld %14.3f %14.3f %9.2fx %16.2e\n", row.label.c_str(), static_cast<long long>(row.per_round),
                  off.train, on.train, off.train / on.train, difference);
      std::fflush(stdout);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "batching_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
