// The round loop: determinism across thread counts, the effect of the hooks, and the runtime
// settings every program applies first (init_runtime).
#include <doctest/doctest.h>
#include <dlfcn.h>

#include <algorithm>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <ATen/Parallel.h>
#include <torch/script.h>
#include <nlohmann/json.hpp>

#include "checkpoint.hpp"
#include "engine.hpp"
#include "npy.hpp"
#include "outputs.hpp"
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

/// θ after `round` rounds of the tiny experiment (5 rounds) with `overrides`: the run stops there as
/// on Ctrl-C, and its checkpoint holds θ.
torch::Tensor theta_after(const std::string& name, std::vector<std::string> overrides, int round) {
  auto dir = test::scratch_dir("engine_" + name);
  test::write_file(dir / "experiment.toml", test::tiny_experiment());
  overrides.push_back("experiment.rounds=5");
  Engine engine(load_experiment((dir / "experiment.toml").string(), overrides), test::registry());
  RunOptions options;
  options.output_dir = dir / "out";
  int finished = 0;
  options.stop_requested = [&finished, round] { return ++finished >= round; };
  CHECK_THROWS_AS(engine.run(options), RunInterrupted);
  return load_checkpoint(checkpoint_path(dir / "out")).tensors.at("theta").to(torch::kDouble);
}

}  // namespace

TEST_CASE("the same file and seed give identical metrics with 1 and 2 worker threads") {
  auto one = run_tiny("threads1", 1);
  auto two = run_tiny("threads2", 2);
  REQUIRE(one.metrics.size() == 3);
  CHECK(test::same_numbers(one, two));
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

TEST_CASE("fltrust: the server's root update rejects every sign-flipped upload and repeats exactly on any thread count") {
  const std::string extra = "\n[aggregator]\nplugin = \"fltrust\"\nroot_size = 50\n"
                            "\n[[attack]]\nplugin = \"sign_flip\"\nbyzantine = 1\nschedule = \"per_round\"\n";
  const auto one = test::run_tiny("engine_fltrust1", extra, {}, 1);
  const auto two = test::run_tiny("engine_fltrust2", extra, {}, 2);
  CHECK(test::same_numbers(one, two));
  REQUIRE(one.metrics.size() == 3);
  for (const auto& row : one.metrics) {
    CHECK(test::metric(row, "detection_recall") == 1.0);     // the flipped row has cosine < 0
    CHECK(test::metric(row, "detection_precision") == 1.0);  // honest rows agree with the root
  }
  CHECK(one.final_accuracy > 0.5);
  // A root dataset larger than the training set is refused before training.
  CHECK_THROWS_WITH_AS(test::run_tiny("engine_fltrust_large", extra, {"aggregator.root_size=601"}),
                       doctest::Contains("asks for a root dataset of 601 examples"), Error);
}

TEST_CASE("flags.csv: each round's upload rows with their client, whether it attacked and whether the rule flagged it") {
  const std::string attack = "\n[[attack]]\nplugin = \"sign_flip\"\nbyzantine = 1\nschedule = \"per_round\"\n";
  const auto summary = test::run_tiny("engine_flags", "\n[aggregator]\nplugin = \"fltrust\"\nroot_size = 50\n" + attack, {});
  std::istringstream text(read_whole_file(summary.output_dir / "flags.csv"));
  std::string line;
  std::getline(text, line);
  CHECK(line == "round,client,malicious,flagged");
  std::map<std::int64_t, std::set<std::int64_t>> clients, attackers;
  while (std::getline(text, line)) {
    std::int64_t round = 0, client = 0, malicious = 0, flagged = 0;
    REQUIRE(std::sscanf(line.c_str(), "%" SCNd64 ",%" SCNd64 ",%" SCNd64 ",%" SCNd64, &round, &client, &malicious, &flagged) == 4);
    CHECK(clients[round].insert(client).second);  // each client once a round
    if (malicious) attackers[round].insert(client);
    CHECK(flagged == malicious);  // FLTrust rejects exactly the flipped upload (as above)
  }
  REQUIRE(clients.size() == summary.metrics.size());
  for (const auto& row : summary.metrics) {
    const auto round = static_cast<std::int64_t>(test::metric(row, "round"));
    CHECK(clients[round].size() == static_cast<std::size_t>(test::metric(row, "clients")));
    CHECK(attackers[round].size() == static_cast<std::size_t>(test::metric(row, "malicious")));
  }
  // A rule that names no rows writes no flags file.
  const auto mean = test::run_tiny("engine_flags_mean", attack, {});
  CHECK_FALSE(std::filesystem::exists(mean.output_dir / "flags.csv"));
}

TEST_CASE("rsa: clients upload their own model minus theta, and theta moves by lr * lambda * sum of signs") {
  // Every client in every round, no server weight decay. Round 1: every x_i is still θ0, so every
  // upload is 0 and θ stays. Round 2: the uploads are x_i (trained in round 1) − θ1, and
  // θ2 = θ1 + lr · λ · Σ_i sign(u_i).
  const std::string extra = "\n[aggregator]\nplugin = \"rsa\"\nlambda = 0.01\n\n[server]\nlr = 0.5\n";
  const std::vector<std::string> overrides = {"clients.per_round=6", "experiment.save_updates=[1, 2]"};
  const auto summary = test::run_tiny("engine_rsa", extra, overrides);
  const auto first = read_npy(summary.output_dir / "updates" / "round_1.npy");
  const auto second = read_npy(summary.output_dir / "updates" / "round_2.npy");
  CHECK(first.abs().max().item<double>() == 0.0);
  CHECK((second != 0).any(1).all().item<bool>());  // every client's own model has left θ
  const auto theta1 = theta_after("rsa_theta1", {"aggregator.plugin=\"rsa\"", "aggregator.lambda=0.01", "server.lr=0.5",
                                                 "clients.per_round=6"}, 1);
  const auto theta2 = theta_after("rsa_theta2", {"aggregator.plugin=\"rsa\"", "aggregator.lambda=0.01", "server.lr=0.5",
                                                 "clients.per_round=6"}, 2);
  const auto theta0 = theta_after("rsa_theta0", {"clients.lr=0"}, 1);  // θ0: with lr 0 nothing moves
  CHECK(torch::equal(theta1, theta0));
  const auto step = 0.5 * 0.01 * torch::sign(second.to(torch::kDouble)).sum(0);
  CHECK(torch::allclose(theta2 - theta1, step, 0, 1e-6));
  // RSA needs fedavg mode and refuses privacy.
  CHECK_THROWS_WITH_AS(test::run_tiny("engine_rsa_fedsgd", extra, {"experiment.mode=\"fedsgd\""}),
                       doctest::Contains("which needs [experiment] mode = \"fedavg\""), Error);
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
    return theta_after("fedsgd_decay_" + std::to_string(weight_decay),
                       {"experiment.mode=\"fedsgd\"", "server.lr=0.5", "clients.weight_decay=" + std::to_string(weight_decay)},
                       1);
  };
  const auto plain = first_model(0.0);
  const auto shrink_small = plain - first_model(0.1), shrink_large = plain - first_model(0.3);
  CHECK(shrink_small.abs().max().item<double>() > 1e-4);
  CHECK(torch::allclose(shrink_large, 3 * shrink_small, 1e-4, 1e-6));
}

TEST_CASE("a client lr schedule sets each round's local step: a step to rate 0 stops training from that round") {
  const std::vector<std::string> constant = {"clients.lr=0.1"};
  auto stopped = constant;
  stopped.insert(stopped.end(), {"clients.lr_schedule=\"step\"", "clients.lr_milestones=[2]", "clients.lr_gamma=0.0"});
  const auto first = theta_after("lr_constant_1", constant, 1);
  CHECK(torch::equal(theta_after("lr_stopped_1", stopped, 1), first));  // round 1 still at 0.1
  CHECK(torch::equal(theta_after("lr_stopped_2", stopped, 2), first));  // round 2 at 0: every Δ is 0
  CHECK_FALSE(torch::allclose(theta_after("lr_constant_2", constant, 2), first));
}

TEST_CASE("server weight decay and the server's lr schedule: theta_r = theta_(r-1) (1 - lr_r lambda) when every update is 0") {
  // Clients at lr 0 upload Δ = 0, so only the server's λθ term moves θ: θ2 = θ0 (1 − ηλ)(1 − ηλ/√2).
  const auto theta0 = theta_after("server_decay_0", {"clients.lr=0.0"}, 1);
  const auto theta2 = theta_after("server_decay_2",
                                  {"clients.lr=0.0", "server.lr=0.5", "server.weight_decay=0.2",
                                   "server.lr_schedule=\"inv_sqrt\""},
                                  2);
  CHECK(theta0.abs().sum().item<double>() > 0);
  CHECK(torch::allclose(theta2, theta0 * (1 - 0.1) * (1 - 0.1 / std::sqrt(2.0)), 1e-6, 1e-9));
}

TEST_CASE("fedsgd mode notices [clients] learning-rate keys it does not use, fedavg mode does not") {
  auto notice_of = [](const std::string& name, const std::string& mode) {
    auto dir = test::scratch_dir("engine_fedsgd_notice_" + name);
    test::write_file(dir / "experiment.toml", test::tiny_experiment());
    Engine engine(load_experiment((dir / "experiment.toml").string(),
                                  {"experiment.mode=\"" + mode + "\"", "experiment.rounds=1", "clients.lr=0.3",
                                   "clients.momentum=0.5"}),
                  test::registry());
    RunOptions options;
    options.output_dir = dir / "out";
    const auto notices = engine.run(options).notices;
    return notices.empty() ? std::string() : notices.front();
  };
  CHECK(notice_of("fedsgd", "fedsgd").find("[clients] lr, momentum has no effect; the step is [server] lr") !=
        std::string::npos);
  CHECK(notice_of("fedavg", "fedavg").empty());
}

TEST_CASE("batch_fraction: each client's batch is that share of its data, 1 gives its full-batch gradient") {
  // The tiny experiment's 6 clients hold 100 examples each, so a fraction f is a batch of 100 f.
  auto run = [](const std::string& name, const std::string& batch, const std::string& mode) {
    auto dir = test::scratch_dir("engine_batch_fraction_" + name);
    auto text = test::tiny_experiment("\n[privacy]\nplugin = \"dp_sgd\"\nnoise_multiplier = 1.0\nclip = 1.0\n");
    text.replace(text.find("batch_size = 16"), 15, batch);
    test::write_file(dir / "experiment.toml", text);
    Engine engine(load_experiment((dir / "experiment.toml").string(), {"experiment.mode=\"" + mode + "\""}),
                  test::registry());
    RunOptions options;
    options.output_dir = dir / "out";
    return engine.run(options);
  };
  for (const char* mode : {"fedavg", "fedsgd"}) {
    CAPTURE(mode);
    const auto fraction = run(std::string("tenth_") + mode, "batch_fraction = 0.1", mode);
    const auto fixed = run(std::string("ten_") + mode, "batch_size = 10", mode);
    CHECK(test::same_numbers(fraction, fixed));
    // The accountant sees the same rate b/N_i and steps (same_numbers compares epsilon_example too).
    CHECK(test::metric(fraction.metrics.back(), "epsilon_example") > 0);
  }
  const auto full = run("full", "batch_fraction = 1.0", "fedsgd");
  CHECK(test::same_numbers(full, run("hundred", "batch_size = 100", "fedsgd")));
  CHECK_FALSE(test::same_numbers(full, run("tenth_again", "batch_fraction = 0.1", "fedsgd")));
}

TEST_CASE("a backdoor's last, mean and largest success over the evaluated rounds reach the summary and summary.json") {
  const auto summary = test::run_tiny("engine_backdoor_summary",
                                      "\n[[attack]]\nplugin = \"backdoor\"\nbyzantine = 2\nboost = 3.0\n",
                                      {"experiment.rounds=5", "experiment.eval_every=2"});
  std::vector<double> evaluated;  // rounds 2, 4 and the last
  for (const auto& row : summary.metrics) {
    const double value = test::metric(row, "backdoor_accuracy");
    if (!std::isnan(value)) evaluated.push_back(value);
  }
  REQUIRE(evaluated.size() == 3);
  REQUIRE(summary.backdoors.size() == 1);
  const auto& backdoor = summary.backdoors[0];
  CHECK(backdoor.metric == "backdoor_accuracy");
  CHECK(backdoor.evaluations == 3);
  CHECK(backdoor.last == evaluated.back());
  CHECK(backdoor.max == *std::max_element(evaluated.begin(), evaluated.end()));
  CHECK(backdoor.mean == doctest::Approx((evaluated[0] + evaluated[1] + evaluated[2]) / 3));
  const auto json = nlohmann::json::parse(test::read_file(summary.output_dir / "summary.json"));
  CHECK(json.at("backdoor").at("backdoor_accuracy").at("max").get<double>() == backdoor.max);
  CHECK(json.at("backdoor").at("backdoor_accuracy").at("evaluations").get<std::int64_t>() == 3);
}

TEST_CASE("[privacy] start_round: earlier rounds train as without privacy and cost nothing, later ones as from round 1") {
  const std::string dp = "\n[privacy]\nplugin = \"dp_sgd\"\nnoise_multiplier = 1.0\nclip = 1.0\n";
  const auto late = test::run_tiny("engine_privacy_late", dp + "start_round = 3\n", {"experiment.rounds=4"});
  const auto none = test::run_tiny("engine_privacy_none", "", {"experiment.rounds=4"});
  const auto two = test::run_tiny("engine_privacy_two", dp, {"experiment.rounds=2"});
  for (int r : {0, 1}) {
    CHECK(std::isnan(test::metric(late.metrics[r], "epsilon_example")));  // nothing charged yet: an empty cell
    CHECK(test::metric(late.metrics[r], "train_loss") == test::metric(none.metrics[r], "train_loss"));
    CHECK(test::metric(late.metrics[r], "test_accuracy") == test::metric(none.metrics[r], "test_accuracy"));
  }
  CHECK(test::metric(late.metrics[2], "train_loss") != test::metric(none.metrics[2], "train_loss"));
  // Two private rounds of the same (q, sigma, steps), wherever they fall.
  CHECK(test::metric(late.metrics[3], "epsilon_example") == test::metric(two.metrics[1], "epsilon_example"));
  CHECK(test::metric(late.metrics[3], "epsilon_example") > 0);
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
