// Private runs end to end: ε per round in metrics.csv, max_epsilon stopping the run, and
// target_epsilon solving the noise multiplier (engine + accountant + real mechanism plugins).
#include <doctest/doctest.h>

#include <cmath>

#include "accountant.hpp"
#include "engine.hpp"
#include "test_support.hpp"
#include "tiny_experiment.hpp"

using namespace bulwark;

namespace {

// tiny_experiment(): 600 training examples split IID over 6 clients (N_i = 100), 4 clients per
// round, one local epoch at B = 16, i.e. ceil(100/16) = 7 local steps per round.
constexpr double kExampleRate = 16.0 / 100.0;
constexpr std::int64_t kStepsPerRound = 7;

RunSummary run_private(const std::string& name, const std::string& privacy, const std::vector<std::string>& overrides = {}) {
  return test::run_tiny("private_" + name, "\n[privacy]\n" + privacy, overrides);
}

double accountant_epsilon(double q, double sigma, std::int64_t steps) {
  RdpAccountant accountant;
  accountant.compose(q, sigma, steps);
  return accountant.spent(1e-5, EpsilonConversion::Improved).epsilon;
}

}  // namespace

TEST_CASE("a dp_sgd run reports a rising example-level epsilon every round and stops at max_epsilon") {
  auto summary = run_private("max_epsilon", "plugin = \"dp_sgd\"\nnoise_multiplier = 1.0\nclip = 1.0\nmax_epsilon = 6.0",
                             {"experiment.rounds=20"});
  INFO(summary.stopped_reason);
  REQUIRE(summary.rounds_run >= 2);
  CHECK(summary.rounds_run < 20);
  CHECK(summary.stopped_reason.find("max_epsilon = 6") != std::string::npos);
  double previous = 0;
  for (std::size_t r = 0; r < summary.metrics.size(); ++r) {
    const double e = test::metric(summary.metrics[r], "epsilon_example");
    // Round r + 1 has composed (r + 1) · 7 steps at q = 16/100 with sigma = 1.
    CHECK(e == doctest::Approx(accountant_epsilon(kExampleRate, 1.0, (r + 1) * kStepsPerRound)));
    CHECK(e > previous);
    CHECK(e <= 6.0);
    CHECK(std::isnan(test::metric(summary.metrics[r], "epsilon_client")));  // dp_sgd protects examples only
    previous = e;
  }
  // The next round would have crossed the budget.
  CHECK(accountant_epsilon(kExampleRate, 1.0, (summary.rounds_run + 1) * kStepsPerRound) > 6.0);
  auto csv = test::read_file(summary.output_dir / "metrics.csv");
  CHECK(csv.find("epsilon_example,epsilon_client") != std::string::npos);
}

TEST_CASE("target_epsilon solves the noise multiplier so that the run ends just under the target") {
  auto summary = run_private("target", "plugin = \"dp_sgd\"\nclip = 1.0\ntarget_epsilon = 2.0", {"experiment.rounds=4"});
  REQUIRE(summary.rounds_run == 4);
  const double final_epsilon = test::metric(summary.metrics.back(), "epsilon_example");
  CHECK(final_epsilon <= 2.0);
  CHECK(final_epsilon > 1.999);  // every round is as projected (equal clients, fixed K_t)
  // The solution is reported in summary.json; config.toml stays as written (studies and --resume
  // compare it with the file).
  CHECK(test::read_file(summary.output_dir / "summary.json").find("\"solved_noise_multiplier\": ") != std::string::npos);
  CHECK(test::read_file(summary.output_dir / "config.toml").find("noise_multiplier") == std::string::npos);
}

TEST_CASE("fed_sdp reports client-level epsilon at q = K_t/K, one step per round") {
  auto summary = run_private("fed_sdp", "plugin = \"fed_sdp\"\nnoise_multiplier = 1.0\nclip = 1.0\nnoise_at = \"server\"");
  REQUIRE(summary.rounds_run == 3);
  for (std::size_t r = 0; r < 3; ++r) {
    CHECK(std::isnan(test::metric(summary.metrics[r], "epsilon_example")));
    CHECK(test::metric(summary.metrics[r], "epsilon_client") == doctest::Approx(accountant_epsilon(4.0 / 6.0, 1.0, r + 1)));
  }
}

TEST_CASE("fed_cdp with the global example rate B K_t / N and sigma / sqrt(M) (mlp [16]: M = 2 layers)") {
  auto summary = run_private("fed_cdp", "plugin = \"fed_cdp\"\nnoise_multiplier = 6.0\nclip = 4.0\nexample_rate = \"global\"",
                             {"experiment.rounds=2"});
  REQUIRE(summary.rounds_run == 2);
  // q = 16 · 4 / 600, sigma / sqrt(2), 7 steps per round
  CHECK(test::metric(summary.metrics[1], "epsilon_example") ==
        doctest::Approx(accountant_epsilon(64.0 / 600.0, 6.0 / std::sqrt(2.0), 2 * kStepsPerRound)));
}

TEST_CASE("accountant = \"prv\": the run's epsilon is the PRV accountant's over the composed steps") {
  auto summary = run_private("prv", "plugin = \"dp_sgd\"\nnoise_multiplier = 1.0\nclip = 1.0\naccountant = \"prv\"",
                             {"experiment.rounds=2"});
  REQUIRE(summary.rounds_run == 2);
  for (std::size_t r = 0; r < 2; ++r) {
    PrvAccountant prv;
    prv.compose(kExampleRate, 1.0, (r + 1) * kStepsPerRound);
    const double e = test::metric(summary.metrics[r], "epsilon_example");
    CHECK(e == prv.epsilon(1e-5));
    CHECK(e < accountant_epsilon(kExampleRate, 1.0, (r + 1) * kStepsPerRound));  // tighter than RDP
  }
}

TEST_CASE("privacy accounting options are checked when the engine opens the mechanism") {
  auto open = [](const std::string& name, const std::string& privacy) {
    auto dir = test::scratch_dir("private_options_" + name);
    test::write_file(dir / "experiment.toml", test::tiny_experiment("\n[privacy]\n" + privacy));
    Engine engine(load_experiment((dir / "experiment.toml").string()), test::registry());
  };
  CHECK_THROWS_WITH_AS(open("both", "plugin = \"dp_sgd\"\nnoise_multiplier = 1.0\ntarget_epsilon = 2.0"),
                       doctest::Contains("give either noise_multiplier or target_epsilon"), Error);
  CHECK_THROWS_WITH_AS(open("no_sigma", "plugin = \"ldp_gaussian\"\nstd = 0.1\nclip = 1.0\ntarget_epsilon = 2.0"),
                       doctest::Contains("target_epsilon needs a mechanism with a noise_multiplier option"), Error);
  CHECK_THROWS_WITH_AS(open("delta", "plugin = \"dp_sgd\"\ndelta = 0.0"), doctest::Contains("delta = 0 must be in (0, 1)"),
                       Error);
  CHECK_THROWS_WITH_AS(open("over", "plugin = \"dp_sgd\"\ntarget_epsilon = 5.0\nmax_epsilon = 3.0"),
                       doctest::Contains("exceeds max_epsilon"), Error);
}
