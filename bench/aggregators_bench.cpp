// Times every bundled aggregation rule on one round of n = 100 float32 updates of d = 1,000,000
// parameters, loaded through the real plugin loader from the build tree, and prints seconds,
// effective bandwidth (U read once) and, for the rules built on the Gram matrix, GFLOP/s. Baselines
// are measured in the same run: the plain mean (fedavg), one sort of U along dim 0 (what median and
// trimmed mean should cost), and one n×n×d Gram matmul U Uᵀ (the arithmetic of the distance rules,
// which also pay for centring the rows on their coordinate-wise median, about one sort: see
// bulwark/robust.hpp); the Krum/Gram and Krum/sort ratios are printed for n = 10, 50, 100. The exact subset rules are timed where the issue sets them:
// MDA at n = 50, f = 10 (C(50, 10) = 1e10 subsets, never enumerated) and SMEA, which enumerates, at
// n = 20, f = 5. No assertion on time anywhere: the numbers are for people.
//
//   aggregators_bench [threads] [rule,rule,...]
//
// threads defaults to LibTorch's default intra-op thread count; a list of rule names times only
// those rules (with the baselines, and without the subset-rule and Krum-scaling sections).
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include "bulwark/rng.hpp"
#include "config.hpp"
#include "engine.hpp"
#include "loader.hpp"
#include "timing.hpp"

namespace {

constexpr std::int64_t kD = 1'000'000;
constexpr int kRepetitions = 3;

double seconds(const std::function<void()>& body) { return bulwark::bench::best_seconds(body, kRepetitions, 0, kRepetitions); }

struct Rule {
  std::string name;
  std::string options;  // TOML text
  double gram_matmuls;  // n×n×d products the rule is built on (0: a streaming rule)
};

bulwark::PluginHandle<bulwark::Aggregator> load(bulwark::PluginRegistry& registry,
                                                const Rule& rule) {
  auto library = registry.open(BULWARK_KIND_AGGREGATOR, rule.name);
  auto options = bulwark::options_from_string(rule.options, library->option_specs(),
                                              "aggregator '" + rule.name + "'");
  return bulwark::PluginHandle<bulwark::Aggregator>(library, options);
}

/// The engine's view of a round: declared bound f, seeded generator, DiverseFL guiding updates and
/// FLTrust's root update (here simply uploads: computing them is the engine's cost, not the rule's),
/// and the ground truth for the oracle.
bulwark::AggregationContext round_context(const torch::Tensor& updates, std::int64_t f) {
  bulwark::AggregationContext context;
  context.byzantine_bound = f;
  context.generator = bulwark::make_generator(/*seed=*/7);
  context.guiding_update = [updates](std::int64_t row) { return updates[row]; };
  context.root_update = [updates] { return updates[updates.size(0) - 1]; };
  for (std::int64_t i = 0; i < f; ++i) context.true_malicious_rows.push_back(i);
  for (std::int64_t i = 0; i < updates.size(0); ++i) context.client_ids.push_back(i);  // FoolsGold's histories
  return context;
}

}  // namespace

int main(int argc, char** argv) {
  bulwark::init_runtime();  // as the host does
  if (argc > 1) at::set_num_threads(std::max(1, std::atoi(argv[1])));
  const std::string only = argc > 2 ? "," + std::string(argv[2]) + "," : "";
  try {
    bulwark::PluginRegistry registry({BULWARK_BENCH_PLUGIN_DIR});
    auto generator = bulwark::make_generator(/*seed=*/1);

    const std::int64_t n = 100;
    const std::int64_t f = (n - 3) / 4;  // the largest f Bulyan accepts: n >= 4f + 3
    auto updates = torch::randn({n, kD}, generator, torch::kFloat32);
    auto weights = torch::ones({n}, torch::kFloat64);
    const double bytes = static_cast<double>(updates.numel()) * updates.element_size();
    const double gram_flops = 2.0 * n * n * kD;

    std::printf("aggregators_bench: n = %lld, d = %lld, float32 (U = %.0f MB), f = %lld, %d "
                "threads, best of %d\n\n",
                static_cast<long long>(n), static_cast<long long>(kD), bytes / 1e6,
                static_cast<long long>(f), at::get_num_threads(), kRepetitions);

    const double mean_s = seconds([&] { (void)updates.mean(0); });
    const double sort_s = seconds([&] { (void)updates.sort(0); });
    const double gram_s = seconds([&] { (void)torch::matmul(updates, updates.t()); });
    std::printf("%-40s %10s %10s %10s\n", "baseline", "seconds", "GB/s", "GFLOP/s");
    std::printf("%-40s %10.4f %10.2f %10s\n", "mean of U along dim 0", mean_s, bytes / mean_s / 1e9,
                "");
    std::printf("%-40s %10.4f %10.2f %10s\n", "sort of U along dim 0", sort_s, bytes / sort_s / 1e9,
                "");
    std::printf("%-40s %10.4f %10.2f %10.2f\n\n", "Gram matmul U U^T (n x n x d)", gram_s,
                bytes / gram_s / 1e9, gram_flops / gram_s / 1e9);

    const std::vector<Rule> rules = {
        {"fedavg", "", 0},
        {"oracle", "", 0},
        {"median", "", 0},
        {"trimmed_mean", "", 0},
        {"krum", "", 1},
        {"multi_krum", "", 1},
        {"bulyan", "", 1},
        {"geometric_median", "", 0},
        {"geometric_median", "max_iterations = 4", 0},
        {"centered_clipping", "", 0},
        {"centered_clipping", "iterations = 3", 0},
        {"diversefl", "", 0},
        {"clip", "threshold = 1", 0},
        {"bucketing", "s = 2", 0},
        {"nnm", "", 2},
        {"arc", "", 0},
        {"meamed", "", 0},
        {"monna", "", 1},
        {"caf", "", 1},
        {"dnc", "", 0},
        {"foolsgold", "", 1},
        {"clipped_clustering", "", 1},
        {"signguard", "", 0},
        {"fltrust", "", 0},
        {"flame", "", 1},
        {"rsa", "", 0},
    };
    std::printf("%-40s %10s %10s %10s %9s %9s %9s\n", "rule (options)", "seconds", "GB/s",
                "GFLOP/s", "/ mean", "/ sort", "/ Gram");
    auto context = round_context(updates, f);
    for (const auto& rule : rules) {
      if (!only.empty() && only.find("," + rule.name + ",") == std::string::npos) continue;
      auto handle = load(registry, rule);
      const double s = seconds([&] { (void)handle->aggregate(updates, weights, context); });
      const std::string label = rule.name + (rule.options.empty() ? "" : " (" + rule.options + ")");
      char flops[32] = "";
      if (rule.gram_matmuls > 0) {
        std::snprintf(flops, sizeof flops, "%.2f", rule.gram_matmuls * gram_flops / s / 1e9);
      }
      std::printf("%-40s %10.4f %10.2f %10s %9.2f %9.2f %9.2f\n", label.c_str(), s,
                  bytes / s / 1e9, flops, s / mean_s, s / sort_s, s / gram_s);
    }

    if (!only.empty()) return 0;
    std::printf("\nExact subset rules (same d), against one Gram matmul of their own n rows\n");
    std::printf("%-40s %10s %12s %10s\n", "rule", "seconds", "Gram s", "/ Gram");
    for (const auto& [rows, rule] : std::vector<std::pair<std::int64_t, Rule>>{{50, {"mda", "f = 10", 1}},
                                                                              {20, {"smea", "f = 5", 1}}}) {
      auto u = updates.narrow(0, 0, rows);
      auto w = torch::ones({rows}, torch::kFloat64);
      auto c = round_context(u, 0);
      auto handle = load(registry, rule);
      const double s = seconds([&] { (void)handle->aggregate(u, w, c); });
      const double g_s = seconds([&] { (void)torch::matmul(u, u.t()); });
      const std::string label = rule.name + " (n = " + std::to_string(rows) + ", " + rule.options + ")";
      std::printf("%-40s %10.4f %12.4f %10.2f\n", label.c_str(), s, g_s, s / g_s);
    }

    std::printf("\nKrum scaling (d = %lld): one Gram matmul plus the median centring (about one sort), "
                "not n^2 distance passes\n", static_cast<long long>(kD));
    std::printf("%6s %4s %12s %12s %12s %12s %12s\n", "n", "f", "krum s", "Gram s", "sort s", "krum/Gram",
                "krum/sort");
    auto krum = load(registry, {"krum", "", 1});
    for (std::int64_t rows : {10, 50, 100}) {
      auto u = torch::randn({rows, kD}, generator, torch::kFloat32);
      const std::int64_t bound = (rows - 3) / 4;
      auto c = round_context(u, bound);
      auto w = torch::ones({rows}, torch::kFloat64);
      const double krum_s = seconds([&] { (void)krum->aggregate(u, w, c); });
      const double g_s = seconds([&] { (void)torch::matmul(u, u.t()); });
      const double sort_s = seconds([&] { (void)u.sort(0); });
      std::printf("%6lld %4lld %12.4f %12.4f %12.4f %12.2f %12.2f\n", static_cast<long long>(rows),
                  static_cast<long long>(bound), krum_s, g_s, sort_s, krum_s / g_s, krum_s / sort_s);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "aggregators_bench: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
