// The round loop: determinism across thread counts, the effect of the hooks, and the runtime
// settings every program applies first (init_runtime).
#include <doctest/doctest.h>
#include <dlfcn.h>

#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#include <ATen/Parallel.h>
#include <torch/script.h>

#include "checkpoint.hpp"
#include "engine.hpp"
#include "test_support.hpp"
#include "tiny_experiment.hpp"

using namespace bulwark;

namespace {
RunSummary run_tiny(const std::string& name, int threads, const std::string& extra = "") {
  auto dir = test::scratch_dir("engine_" + name);
  test::write_file(dir / "experiment.toml", test::tiny_experiment(extra));
  Engine engine(load_experiment((dir / "experiment.toml").string()), test::registry());
  RunOptions options;
  options.output_dir = dir / "out";
  options.threads = threads;
  return engine.run(options);
}

/// Metrics without the wall-clock columns.
std::vector<MetricsRow> numbers(const RunSummary& summary) {
  std::vector<MetricsRow> rows;
  for (const auto& row : summary.metrics) {
    MetricsRow kept;
    for (const auto& [name, value] : row) {
      if (name.rfind("time_", 0) != 0) kept.emplace_back(name, value);
    }
    rows.push_back(kept);
  }
  return rows;
}
}  // namespace

TEST_CASE("the same file and seed give identical metrics with 1 and 2 worker threads") {
  auto one = run_tiny("threads1", 1);
  auto two = run_tiny("threads2", 2);
  REQUIRE(one.metrics.size() == 3);
  auto a = numbers(one), b = numbers(two);
  for (std::size_t r = 0; r < a.size(); ++r) {
    for (std::size_t c = 0; c < a[r].size(); ++c) {
      INFO(a[r][c].first, " round ", r + 1);
      // Bit-identical, not approximately equal: NaN cells must match as NaN.
      CHECK((a[r][c].second == b[r][c].second || (std::isnan(a[r][c].second) && std::isnan(b[r][c].second))));
    }
  }
  CHECK(one.final_accuracy > 0.5);  // the synthetic task is learnable: training happened
}

TEST_CASE("eval_subset: rounds before the last test one fixed subset, the last the full test set, training unchanged") {
  auto dir = test::scratch_dir("engine_eval_subset");
  test::write_file(dir / "experiment.toml", test::tiny_experiment());  // 3 rounds, 200 test examples
  auto run = [&](const std::vector<std::string>& overrides, const std::string& out) {
    Engine engine(load_experiment((dir / "experiment.toml").string(), overrides), test::registry());
    RunOptions options;
    options.output_dir = dir / out;
    options.threads = 2;
    return engine.run(options);
  };
  auto column = [](const RunSummary& summary, const std::string& name) {
    std::vector<double> values;
    for (const auto& row : summary.metrics) {
      for (const auto& [key, value] : row) {
        if (key == name) values.push_back(value);
      }
    }
    return values;
  };
  const auto full = run({}, "full");
  const auto subset = run({"experiment.eval_subset=50"}, "subset");
  const auto again = run({"experiment.eval_subset=50"}, "again");
  CHECK(column(subset, "test_examples") == std::vector<double>{50, 50, 200});
  CHECK(column(full, "test_examples").empty());  // no column unless asked for
  CHECK(column(subset, "train_loss") == column(full, "train_loss"));  // evaluation never touches training
  CHECK(subset.final_accuracy == full.final_accuracy);                 // the last round: the full set
  CHECK(column(subset, "test_accuracy") == column(again, "test_accuracy"));  // the same subset every run
}

TEST_CASE("a run never replaces a finished run's outputs: running into its folder again is refused") {
  auto dir = test::scratch_dir("engine_finished_folder");
  test::write_file(dir / "experiment.toml", test::tiny_experiment());
  auto run = [&](const std::vector<std::string>& overrides, bool resume) {
    Engine engine(load_experiment((dir / "experiment.toml").string(), overrides), test::registry());
    RunOptions options;
    options.output_dir = dir / "out";
    options.threads = 1;
    options.resume = resume;
    return engine.run(options);
  };
  run({}, false);
  const auto config = test::read_file(dir / "out" / "config.toml");
  const auto summary = test::read_file(dir / "out" / "summary.json");
  for (bool resume : {false, true}) {
    CAPTURE(resume);
    CHECK_THROWS_WITH_AS(run({"clients.lr=0.2"}, resume), doctest::Contains("holds a finished run (its summary.json)"),
                         Error);
  }
  CHECK(test::read_file(dir / "out" / "config.toml") == config);
  CHECK(test::read_file(dir / "out" / "summary.json") == summary);
}

TEST_CASE("more clients than training examples is an error at clients.count, not in the allocator") {
  auto dir = test::scratch_dir("engine_too_many_clients");
  test::write_file(dir / "experiment.toml", test::tiny_experiment());  // 600 training examples
  Engine engine(load_experiment((dir / "experiment.toml").string(), {"clients.count=1000"}), test::registry());
  RunOptions options;
  options.output_dir = dir / "out";
  CHECK_THROWS_WITH_AS(engine.run(options), doctest::Contains("[clients] count = 1000 exceeds the 600 training examples"),
                       Error);
  // Far beyond any dataset, the count is refused where it is written, before the engine exists.
  CHECK_THROWS_WITH_AS(load_experiment((dir / "experiment.toml").string(), {"clients.count=100000000000"}),
                       doctest::Contains("option 'count' for [clients] must be in [1, 100000000], found 100000000000"),
                       Error);
}

TEST_CASE("a different seed gives different numbers") {
  auto a = run_tiny("seed_a", 2);
  auto b = run_tiny("seed_b", 2);
  auto c_dir = test::scratch_dir("engine_seed_c");
  test::write_file(c_dir / "experiment.toml", test::tiny_experiment());
  Engine engine(load_experiment((c_dir / "experiment.toml").string(), {"experiment.seed=8"}), test::registry());
  RunOptions options;
  options.output_dir = c_dir / "out";
  auto c = engine.run(options);
  CHECK(a.metrics.back()[6].second == b.metrics.back()[6].second);  // train_loss, same seed
  CHECK(a.metrics.back()[6].second != c.metrics.back()[6].second);
}

TEST_CASE("fedsgd mode uploads one gradient per client and still learns") {
  auto dir = test::scratch_dir("engine_fedsgd");
  test::write_file(dir / "experiment.toml", test::tiny_experiment("\n[server]\nlr = 1.0\n"));
  Engine engine(load_experiment((dir / "experiment.toml").string(), {"experiment.mode=\"fedsgd\"", "experiment.rounds=30"}),
                test::registry());
  RunOptions options;
  options.output_dir = dir / "out";
  auto fedsgd = engine.run(options);
  CHECK(fedsgd.rounds_run == 30);
  CHECK(fedsgd.final_accuracy > 0.5);  // 30 averaged-gradient steps learn the synthetic task
}

TEST_CASE("fedsgd mode uploads the regularised gradient: weight decay lambda adds lambda * theta to every upload") {
  // θ1 = θ0 − η·mean(g + λθ0) = θ1(λ = 0) − ηλθ0: the first round's model moves linearly in λ.
  auto first_model = [](double weight_decay) {
    auto dir = test::scratch_dir("engine_fedsgd_decay_" + std::to_string(weight_decay));
    test::write_file(dir / "experiment.toml", test::tiny_experiment());
    Engine engine(load_experiment((dir / "experiment.toml").string(),
                                  {"experiment.mode=\"fedsgd\"", "server.lr=0.5",
                                   "clients.weight_decay=" + std::to_string(weight_decay)}),
                  test::registry());
    RunOptions options;
    options.output_dir = dir / "out";
    options.stop_requested = [] { return true; };  // stop after round 1, keeping θ1 in the checkpoint
    CHECK_THROWS_AS(engine.run(options), RunInterrupted);
    return load_checkpoint(checkpoint_path(dir / "out")).tensors.at("theta").to(torch::kDouble);
  };
  const auto plain = first_model(0.0);
  const auto shrink_small = plain - first_model(0.1), shrink_large = plain - first_model(0.3);
  CHECK(shrink_small.abs().max().item<double>() > 1e-4);
  CHECK(torch::allclose(shrink_large, 3 * shrink_small, 1e-4, 1e-6));
}

TEST_CASE("outputs: config.toml, metrics.csv with one row per round, summary.json") {
  auto summary = run_tiny("outputs", 2);
  auto dir = summary.output_dir;
  auto csv = test::read_file(dir / "metrics.csv");
  CHECK(csv.rfind("round,clients,malicious,nonfinite_updates,test_accuracy,test_loss,train_loss,", 0) == 0);
  CHECK(std::count(csv.begin(), csv.end(), '\n') == 4);  // header + 3 rounds
  auto jsonl = test::read_file(dir / "metrics.jsonl");
  CHECK(std::count(jsonl.begin(), jsonl.end(), '\n') == 3);
  auto resolved = test::read_file(dir / "config.toml");
  CHECK(resolved.find("batch_size = 16") != std::string::npos);
  CHECK(resolved.find("weight_decay = 0.0") != std::string::npos);  // defaults are written out
  CHECK(test::read_file(dir / "summary.json").find("\"final_test_accuracy\"") != std::string::npos);
  // No temporary files are left behind by the atomic writes.
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    CHECK(entry.path().string().find(".tmp.") == std::string::npos);
  }
}

TEST_CASE("a model without vectorised per-example rules is noticed once when a per-example mechanism needs them") {
  // A TorchScript model has no per-example rule: x [B, 12] -> logits (2).
  torch::jit::Module net("Tiny");
  net.register_parameter("weight", torch::zeros({2, 12}), /*is_buffer=*/false);
  net.define("def forward(self, x):\n    return torch.matmul(x.flatten(1), self.weight.t())\n");
  auto dir = test::scratch_dir("engine_notice");
  net.save((dir / "tiny.pt").string());
  test::write_file(dir / "experiment.toml",
                   "[experiment]\nrounds = 1\n[data]\nplugin = \"synthetic\"\nclasses = 2\nfeatures = 12\n"
                   "train_size = 40\ntest_size = 10\n[model]\narch = \"torchscript\"\npath = \"tiny.pt\"\n"
                   "[clients]\ncount = 2\nbatch_size = 4\nlocal_iterations = 1\n"
                   "[privacy]\nplugin = \"dp_sgd\"\nnoise_multiplier = 1.0\n");
  Engine engine(load_experiment((dir / "experiment.toml").string()), test::registry());
  std::vector<std::string> notices;
  RunOptions options;
  options.output_dir = dir / "out";
  options.on_notice = [&](const std::string& notice) { notices.push_back(notice); };
  auto summary = engine.run(options);
  REQUIRE(notices.size() == 1);
  CHECK(notices[0].find("loop of batch-size-1 backward passes") != std::string::npos);
  CHECK(summary.notices == notices);
  CHECK(test::read_file(dir / "out" / "summary.json").find("batch-size-1") != std::string::npos);
}

TEST_CASE("init_runtime: one LibTorch and one OpenBLAS thread per worker, and OpenBLAS kernels the CPU supports") {
  // The test main calls init_runtime() first, as the host does.
  CHECK(at::get_num_threads() == 1);
  using GetThreads = int (*)();
  using CoreName = char* (*)();
  auto blas_threads = reinterpret_cast<GetThreads>(::dlsym(RTLD_DEFAULT, "openblas_get_num_threads"));
  auto core_name = reinterpret_cast<CoreName>(::dlsym(RTLD_DEFAULT, "openblas_get_corename"));
  if (!blas_threads || !core_name) {
    MESSAGE("LibTorch's BLAS is not OpenBLAS here; nothing to check");
    return;
  }
  CHECK(blas_threads() == 1);
  // Prescott is OpenBLAS's SSE3 fallback for CPUs it does not recognise; a user's
  // OPENBLAS_CORETYPE may ask for anything (init_runtime leaves the environment as it found it).
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && !std::getenv("OPENBLAS_CORETYPE")) {
    CHECK(std::string(core_name()) != "Prescott");
  }
}
