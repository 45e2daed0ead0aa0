// `bulwark privacy`, the epsilon calculator, and ε in the progress line of a private run.
#include <doctest/doctest.h>

#include <cmath>

#include <nlohmann/json.hpp>

#include "accountant.hpp"
#include "test_support.hpp"
#include "tiny_experiment.hpp"

using namespace bulwark;

TEST_CASE("bulwark privacy prints epsilon (Opacus's published example)") {
  // pytorch/opacus opacus/tests/accountants_test.py: sigma = 1.5, q = 0.04, 2250 steps, delta = 1e-5
  // -> epsilon 7.32911117143 with the default orders.
  auto result = test::run_bulwark({"privacy", "--sampling-rate", "0.04", "--noise-multiplier", "1.5", "--steps", "2250",
                                   "--delta", "1e-5"});
  INFO(result.output);
  CHECK(result.exit_code == 0);
  CHECK(result.output.find("epsilon              7.32911") != std::string::npos);
  CHECK(result.output.find("improved conversion") != std::string::npos);
}

TEST_CASE("bulwark privacy extends Opacus's orders when epsilon sits at 63, notes it, and only then") {
  auto parse = [](const test::RunResult& result) {
    return nlohmann::json::parse(result.output.substr(result.output.find('{')));
  };
  auto boundary = test::run_bulwark({"privacy", "-q", "0.01", "-s", "6", "-T", "100", "--json"});
  INFO(boundary.output);
  REQUIRE(boundary.exit_code == 0);
  const auto extended = parse(boundary);
  CHECK(extended.at("order").get<double>() == 256);
  CHECK(extended.at("note").get<std::string>().find("(Opacus's value)") != std::string::npos);
  auto opacus = test::run_bulwark({"privacy", "-q", "0.01", "-s", "6", "-T", "100", "--json", "--no-extend-orders"});
  INFO(opacus.output);
  REQUIRE(opacus.exit_code == 0);
  const auto at_63 = parse(opacus);
  CHECK(at_63.at("order").get<double>() == 63);
  CHECK(at_63.at("note").get<std::string>().find("larger orders may give a smaller epsilon") != std::string::npos);
  CHECK(extended.at("opacus_epsilon").get<double>() == at_63.at("epsilon").get<double>());
  CHECK(extended.at("epsilon").get<double>() < at_63.at("epsilon").get<double>());
  auto inside = test::run_bulwark({"privacy", "-q", "0.04", "-s", "1.5", "-T", "2250"});
  CHECK(inside.output.find("notice") == std::string::npos);
  auto listed = test::run_bulwark({"privacy", "-q", "0.01", "-s", "6", "-T", "100", "--orders", "2", "63", "--extend-orders"});
  CHECK(listed.exit_code == 2);
  CHECK(listed.output.find("extends the default orders only") != std::string::npos);
}

TEST_CASE("bulwark privacy --conversion standard reproduces TF-Privacy's compute_dp_sgd_privacy example") {
  // N = 60000, B = 256, sigma = 1.12, 60 epochs: q = 0.0042667, 14063 steps -> (2.92, 1e-5)-DP.
  // The script's orders: 1.25, 1.5, 1.75, 2, 2.25, 2.5, 3, 3.5, 4, 4.5, 5..63, 128, 256, 512.
  std::vector<std::string> args = {"privacy", "-q", "0.004266666666666667", "-s", "1.12", "-T", "14063",
                                   "--conversion", "standard", "--orders", "1.25", "1.5", "1.75", "2", "2.25",
                                   "2.5", "3", "3.5", "4", "4.5"};
  for (int order = 5; order < 64; ++order) args.push_back(std::to_string(order));
  for (const char* order : {"128", "256", "512"}) args.emplace_back(order);
  auto result = test::run_bulwark(args);
  INFO(result.output);
  CHECK(result.exit_code == 0);
  CHECK(result.output.find("epsilon              2.92") != std::string::npos);
}

TEST_CASE("bulwark privacy --json: every number reads back to the accountant's double") {
  auto result = test::run_bulwark({"privacy", "-q", "0.04", "-s", "1.5", "-T", "2250", "--json"});
  INFO(result.output);
  REQUIRE(result.exit_code == 0);
  const auto json = nlohmann::json::parse(result.output);
  RdpAccountant accountant;
  accountant.compose(0.04, 1.5, 2250);
  const auto spent = accountant.spent(1e-5, EpsilonConversion::Improved);
  CHECK(json.at("accountant") == "rdp");
  CHECK(json.at("epsilon").get<double>() == spent.epsilon);  // bit for bit, not to 6 digits
  CHECK(json.at("order").get<double>() == spent.order);
  CHECK(json.at("steps").get<std::int64_t>() == 2250);
  CHECK(json.at("conversion") == "improved");
}

TEST_CASE("bulwark privacy --accountant gdp: Opacus's GaussianAccountant example, mu and epsilon") {
  // opacus/tests/accountants_test.py test_gdp_accountant: sigma = 1.5, q = 0.04, 2249 steps -> 6.59 < eps < 6.6.
  auto result = test::run_bulwark({"privacy", "-q", "0.04", "-s", "1.5", "-T", "2249", "--accountant", "gdp", "--json"});
  INFO(result.output);
  REQUIRE(result.exit_code == 0);
  const auto json = nlohmann::json::parse(result.output);
  CHECK(json.at("accountant") == "gdp");
  CHECK(json.at("epsilon").get<double>() > 6.59);
  CHECK(json.at("epsilon").get<double>() < 6.6);
  CHECK(json.at("mu").get<double>() == doctest::Approx(0.04 * std::sqrt(2249 * std::expm1(1 / 2.25))).epsilon(1e-14));
  CHECK_FALSE(json.contains("order"));

  auto orders = test::run_bulwark({"privacy", "-q", "0.04", "-s", "1.5", "-T", "10", "--accountant", "gdp",
                                   "--orders", "2", "4"});
  CHECK(orders.exit_code == 2);
  CHECK(orders.output.find("the gdp accountant has none") != std::string::npos);
}

TEST_CASE("bulwark privacy --target-epsilon prints the noise multiplier") {
  // Opacus test_get_noise_multiplier_rdp_steps: epsilon 8, delta 1e-5, q = 0.04, 2000 steps -> 1.3562.
  auto result = test::run_bulwark({"privacy", "-q", "0.04", "-T", "2000", "--target-epsilon", "8"});
  INFO(result.output);
  CHECK(result.exit_code == 0);
  CHECK(result.output.find("noise multiplier     1.35") != std::string::npos);
  CHECK(result.output.find("solved for target epsilon 8") != std::string::npos);
}

TEST_CASE("bulwark privacy: missing noise, a bad delta or a bad rate are usage errors") {
  auto none = test::run_bulwark({"privacy", "-q", "0.01", "-T", "100"});
  CHECK(none.exit_code == 2);
  CHECK(none.output.find("give --noise-multiplier") != std::string::npos);
  auto delta = test::run_bulwark({"privacy", "-q", "0.01", "-T", "100", "-s", "1", "--delta", "2"});
  CHECK(delta.exit_code == 2);
  CHECK(delta.output.find("--delta = 2 must be in (0, 1)") != std::string::npos);
  auto rate = test::run_bulwark({"privacy", "-q", "1.5", "-T", "100", "-s", "1"});
  CHECK(rate.exit_code == 2);
}

TEST_CASE("bulwark run: a private run shows epsilon per round and why it stopped") {
  auto dir = test::scratch_dir("cli_private_run");
  test::write_file(dir / "dp.toml", test::tiny_experiment("\n[privacy]\nplugin = \"dp_sgd\"\nnoise_multiplier = 1.0\n"
                                                          "max_epsilon = 6.0\n"));
  auto result = test::run_bulwark({"run", (dir / "dp.toml").string(), "--out", (dir / "out").string(), "--set",
                                   "experiment.rounds=20", "--verbose"});
  INFO(result.output);
  CHECK(result.exit_code == 0);
  CHECK(result.output.find("eps ") != std::string::npos);
  CHECK(result.output.find("max_epsilon = 6") != std::string::npos);
}

TEST_CASE("bulwark privacy --accountant prv: Opacus's PRVAccountant example and its noise multiplier") {
  // opacus/tests/accountants_test.py test_prv_accountant: sigma = 1.5, q = 0.04, 2249 steps -> 6.777395712150674.
  auto result = test::run_bulwark({"privacy", "-q", "0.04", "-s", "1.5", "-T", "2249", "--accountant", "prv", "--json"});
  INFO(result.output);
  REQUIRE(result.exit_code == 0);
  const auto json = nlohmann::json::parse(result.output);
  CHECK(json.at("accountant") == "prv");
  PrvAccountant accountant;
  accountant.compose(0.04, 1.5, 2249);
  CHECK(json.at("epsilon").get<double>() == accountant.epsilon(1e-5));
  CHECK(std::abs(json.at("epsilon").get<double>() - 6.777395712150674) < 1e-7);
  CHECK(json.at("eps_error").get<double>() == 0.01);
  CHECK(json.at("delta_error").get<double>() == 1e-8);

  // test_get_noise_multiplier_prv_steps: epsilon 8 at q = 0.04, 2000 steps -> 1.2915 (Opacus stops
  // within 0.01 of the target from below; this solver goes on to a relative 1e-5).
  auto solved = test::run_bulwark({"privacy", "-q", "0.04", "-T", "2000", "--target-epsilon", "8", "--accountant",
                                   "prv", "--json"});
  INFO(solved.output);
  REQUIRE(solved.exit_code == 0);
  const double sigma = nlohmann::json::parse(solved.output).at("noise_multiplier").get<double>();
  CHECK(sigma == doctest::Approx(1.2915).epsilon(2e-3));
  PrvAccountant at_sigma;
  at_sigma.compose(0.04, sigma, 2000);
  CHECK(at_sigma.epsilon(1e-5) <= 8.0);

  auto huge = test::run_bulwark({"privacy", "-q", "1", "-s", "0.1", "-T", "100", "--accountant", "prv"});
  CHECK(huge.exit_code == 2);
  CHECK(huge.output.find("use accountant = \"rdp\"") != std::string::npos);
}
