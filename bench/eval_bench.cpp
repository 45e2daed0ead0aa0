// Test-set evaluation against the machine's ceiling (docs/performance.md, "Evaluation"): the
// GroupNorm CNN on the 10,000 Fashion-MNIST test images (synthetic images of that shape when the
// files are missing), timed by the engine itself (time_eval of a one-round run, 1 and 2 worker
// threads), in GFLOP/s from the layers' multiply-adds (2 flops each), next to a float32 GEMM of
// 1024 × 1024 on 1 and 2 threads measured in the same run: the fraction of what this CPU does on
// the best-case kernel. Also the same evaluation on a 2,000-image subset (eval_subset). Asserts
// nothing.
//
//   eval_bench
#include <torch/torch.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "engine_run.hpp"
#include "runtime.hpp"
#include "timing.hpp"

namespace {

// Multiply-adds of one 1×28×28 image through the CNN (models.cpp): conv1 3×3×1→16 at 28×28,
// conv2 3×3×16→32 at 14×14, fc1 1568→64, fc2 64→32, fc3 32→10.
constexpr double kMacsPerImage = 28.0 * 28 * 16 * 9 + 14.0 * 14 * 32 * 16 * 9 + 1568.0 * 64 + 64.0 * 32 + 32.0 * 10;

double evaluation_seconds(bulwark::PluginRegistry& registry, int threads, std::int64_t subset) {
  const std::string experiment = "[experiment]\nname = \"eval_bench\"\nrounds = 3\neval_every = 1\neval_subset = " +
                                 std::to_string(subset) + "\n" + bulwark::bench::fashion_mnist_data_section() +
                                 "[model]\narch = \"cnn\"\n[clients]\ncount = 10\nper_round = 1\n"
                                 "local_iterations = 1\nbatch_size = 5\n";
  const auto summary = bulwark::bench::run_experiment(registry, experiment, threads);
  // Rounds 1 and 2 evaluate the subset (or the full set); the best of the two. Round 3, the last,
  // always evaluates the full set.
  double best = 1e300;
  for (std::size_t round = 0; round + 1 < summary.metrics.size(); ++round) {
    for (const auto& [column, value] : summary.metrics[round]) {
      if (column == "time_eval") best = std::min(best, value);
    }
  }
  return best;
}

/// GFLOP/s of `threads` concurrent 1024 × 1024 float32 GEMMs (one LibTorch thread each).
double gemm_gflops(int threads) {
  const std::int64_t n = 1024;
  std::vector<torch::Tensor> a, b;
  for (int t = 0; t < threads; ++t) {
    a.push_back(torch::randn({n, n}));
    b.push_back(torch::randn({n, n}));
  }
  const double seconds = bulwark::bench::best_seconds([&] {
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) pool.emplace_back([&, t] { torch::mm(a[t], b[t]); });
    for (auto& thread : pool) thread.join();
  });
  return 2.0 * n * n * n * threads / seconds / 1e9;
}

}  // namespace

int main() {
  bulwark::init_runtime();
  bulwark::PluginRegistry registry;
  const double test_images = 10000;
  std::printf("eval_bench: GroupNorm CNN, %s, %.0f test images, %.2f M multiply-adds per image\n",
              bulwark::bench::have_fashion_mnist() ? "Fashion-MNIST" : "synthetic 1x28x28", test_images,
              kMacsPerImage / 1e6);
  std::printf("%-34s %10s %10s %14s %12s\n", "", "seconds", "GFLOP/s", "GEMM GFLOP/s", "of GEMM");
  for (int threads : {1, 2}) {
    const double seconds = evaluation_seconds(registry, threads, 0);
    const double gflops = 2.0 * kMacsPerImage * test_images / seconds / 1e9;
    const double peak = gemm_gflops(threads);
    std::printf("%-34s %10.3f %10.1f %14.1f %11.0f%%\n",
                (std::string("full test set, ") + std::to_string(threads) + " thread" + (threads > 1 ? "s" : "")).c_str(),
                seconds, gflops, peak, 100.0 * gflops / peak);
  }
  const double subset = evaluation_seconds(registry, 2, 2000);
  std::printf("%-34s %10.3f\n", "eval_subset = 2000, 2 threads", subset);
  return 0;
}
