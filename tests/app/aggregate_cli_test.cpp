// `bulwark aggregate`: a rule run once on saved updates, as a researcher checks a rule.
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <utility>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "npy.hpp"
#include "test_support.hpp"
#include "tiny_experiment.hpp"

using namespace bulwark;

TEST_CASE("bulwark aggregate runs a rule on a .npy matrix, keeps float64 and prints the flagged rows") {
  auto dir = test::scratch_dir("cli_aggregate");
  // Four honest rows near (1, 1) and one far outlier. Krum with f = 1 scores each row by its
  // n - f - 2 = 2 nearest squared distances; (1, 1) has 0.02 + 0.02 = 0.04, the least.
  auto updates = torch::tensor({1.0, 1.0, 1.1, 0.9, 0.9, 1.0, 1.0, 1.1, 100.0, -100.0}, torch::kDouble).view({5, 2});
  write_npy(dir / "U.npy", updates);
  auto result = test::run_bulwark({"aggregate", "--plugin", "krum", "--updates", (dir / "U.npy").string(), "--set",
                                   "f=1", "--out", (dir / "g.npy").string()});
  INFO(result.output);
  REQUIRE(result.exit_code == 0);
  CHECK(result.output.find("flagged rows: [1, 2, 3, 4]") != std::string::npos);
  auto g = read_npy(dir / "g.npy");
  CHECK((g.scalar_type() == torch::kDouble));
  CHECK(g.equal(torch::tensor({1.0, 1.0}, torch::kDouble)));

  // The coordinate-wise median of the same rows: (1.0, 1.0).
  auto median = test::run_bulwark({"aggregate", "--plugin", "median", "--updates", (dir / "U.npy").string(), "--out",
                                   (dir / "m.npy").string()});
  REQUIRE(median.exit_code == 0);
  CHECK(read_npy(dir / "m.npy").equal(torch::tensor({1.0, 1.0}, torch::kDouble)));
}

TEST_CASE("bulwark aggregate refuses a malformed .npy file and a bad option with exit code 2") {
  auto dir = test::scratch_dir("cli_aggregate_bad");
  test::write_file(dir / "bad.npy", "not a numpy file");
  auto bad = test::run_bulwark({"aggregate", "--plugin", "median", "--updates", (dir / "bad.npy").string(), "--out",
                                (dir / "g.npy").string()});
  CHECK(bad.exit_code == 2);
  CHECK(bad.output.find("bad.npy") != std::string::npos);
  CHECK_FALSE(std::filesystem::exists(dir / "g.npy"));

  write_npy(dir / "U.npy", torch::ones({3, 2}));
  auto option = test::run_bulwark({"aggregate", "--plugin", "krum", "--updates", (dir / "U.npy").string(), "--set",
                                   "ff=1", "--out", (dir / "g.npy").string()});
  CHECK(option.exit_code == 2);
  CHECK(option.output.find("unknown option 'ff' for aggregator 'krum'; did you mean 'f'?") != std::string::npos);
}

TEST_CASE("bulwark aggregate refuses weights that sum to nothing and an empty matrix, naming the file") {
  auto dir = test::scratch_dir("cli_aggregate_weights");
  write_npy(dir / "U.npy", torch::ones({3, 2}));
  for (const auto& [name, weights] : {std::pair<const char*, torch::Tensor>{"zero.npy", torch::zeros({3})},
                                      {"negative.npy", torch::tensor({1.0, -1.0, 1.0})},
                                      {"nan.npy", torch::tensor({1.0, std::nan(""), 1.0})}}) {
    INFO(name);
    write_npy(dir / name, weights);
    auto result = test::run_bulwark({"aggregate", "--plugin", "fedavg", "--updates", (dir / "U.npy").string(),
                                     "--weights", (dir / name).string(), "--out", (dir / "g.npy").string()});
    CHECK(result.exit_code == 2);
    CHECK(result.output.find(std::string(name) + ": weights must be finite, non-negative and not all zero") !=
          std::string::npos);
    CHECK_FALSE(std::filesystem::exists(dir / "g.npy"));
  }
  write_npy(dir / "empty.npy", torch::ones({0, 5}));
  auto empty = test::run_bulwark({"aggregate", "--plugin", "fedavg", "--updates", (dir / "empty.npy").string(), "--out",
                                  (dir / "g.npy").string()});
  CHECK(empty.exit_code == 2);
  CHECK(empty.output.find("empty.npy: holds 0 x 5 updates") != std::string::npos);
}

TEST_CASE("bulwark aggregate --pre runs pre-aggregators in front of the rule, --emit-pre writes their rows") {
  auto dir = test::scratch_dir("cli_aggregate_pre");
  auto updates = torch::tensor({3.0, 4.0, 0.0, 1.0, 6.0, 8.0, 0.3, 0.4}, torch::kDouble).view({4, 2});
  write_npy(dir / "U.npy", updates);
  // clip to norm 1, then the mean: rows (0.6, 0.8), (0, 1), (0.6, 0.8), (0.3, 0.4).
  auto result = test::run_bulwark({"aggregate", "--plugin", "fedavg", "--pre", "clip", "--set", "clip.threshold=1",
                                   "--updates", (dir / "U.npy").string(), "--emit-pre", (dir / "P.npy").string(),
                                   "--out", (dir / "g.npy").string()});
  INFO(result.output);
  REQUIRE(result.exit_code == 0);
  CHECK(result.output.find("'clip -> fedavg'") != std::string::npos);
  auto clipped = torch::tensor({0.6, 0.8, 0.0, 1.0, 0.6, 0.8, 0.3, 0.4}, torch::kDouble).view({4, 2});
  CHECK(read_npy(dir / "P.npy").allclose(clipped, 0, 1e-15));
  CHECK(read_npy(dir / "g.npy").allclose(clipped.mean(0), 0, 1e-15));

  // Two stages, comma-separated, each with its own options; the rule's options stay unprefixed.
  auto chained = test::run_bulwark({"aggregate", "--plugin", "krum", "--pre", "clip,nnm", "--set", "clip.threshold=1",
                                    "--set", "nnm.f=0", "--set", "f=0", "--updates", (dir / "U.npy").string(),
                                    "--out", (dir / "k.npy").string()});
  INFO(chained.output);
  CHECK(chained.exit_code == 0);
  CHECK(chained.output.find("'clip -> nnm -> krum'") != std::string::npos);

  auto no_pre = test::run_bulwark({"aggregate", "--plugin", "fedavg", "--updates", (dir / "U.npy").string(),
                                   "--emit-pre", (dir / "x.npy").string(), "--out", (dir / "x.npy").string()});
  CHECK(no_pre.exit_code == 2);
  CHECK(no_pre.output.find("--emit-pre needs at least one --pre stage") != std::string::npos);
}

TEST_CASE("bulwark aggregate --permutation fixes bucketing's permutation, --state sets centred clipping's start") {
  auto dir = test::scratch_dir("cli_aggregate_injected");
  auto updates = torch::tensor({0.0, 1.0, 2.0, 3.0}, torch::kDouble).view({4, 1});
  write_npy(dir / "U.npy", updates);
  write_npy(dir / "perm.npy", torch::tensor({3.0, 0.0, 1.0, 2.0}, torch::kDouble));
  // Buckets {3, 0} and {1, 2}: rows 1.5 and 1.5.
  auto bucketed = test::run_bulwark({"aggregate", "--plugin", "fedavg", "--pre", "bucketing", "--permutation",
                                     (dir / "perm.npy").string(), "--updates", (dir / "U.npy").string(),
                                     "--emit-pre", (dir / "B.npy").string(), "--out", (dir / "g.npy").string()});
  INFO(bucketed.output);
  REQUIRE(bucketed.exit_code == 0);
  CHECK(read_npy(dir / "B.npy").equal(torch::tensor({1.5, 1.5}, torch::kDouble).view({2, 1})));
  auto nowhere = test::run_bulwark({"aggregate", "--plugin", "median", "--permutation", (dir / "perm.npy").string(),
                                    "--updates", (dir / "U.npy").string(), "--out", (dir / "g.npy").string()});
  CHECK(nowhere.exit_code == 2);
  CHECK(nowhere.output.find("takes a permutation") != std::string::npos);

  // One centred-clipping step from m0 = 10 with tau = 1: every row is 7..10 away, so each moves the
  // centre by -1/4: 10 - 1 = 9. From the default start 0 it would be 0 + (0 + 1 + 1 + 1)/4 = 0.75.
  write_npy(dir / "m0.npy", torch::tensor({10.0}, torch::kDouble));
  auto from_m0 = test::run_bulwark({"aggregate", "--plugin", "centered_clipping", "--set", "tau=1", "--state",
                                    "previous=" + (dir / "m0.npy").string(), "--updates", (dir / "U.npy").string(),
                                    "--out", (dir / "c.npy").string()});
  INFO(from_m0.output);
  REQUIRE(from_m0.exit_code == 0);
  CHECK(read_npy(dir / "c.npy").item<double>() == doctest::Approx(9.0));
}

TEST_CASE("save_updates: a run's saved round is the matrix its rule saw, so bulwark aggregate flags the same rows") {
  auto dir = test::scratch_dir("cli_save_updates");
  test::write_file(dir / "experiment.toml",
                   test::tiny_experiment("\n[aggregator]\nplugin = \"krum\"\n"
                                         "[[attack]]\nplugin = \"sign_flip\"\nbyzantine = 1\nschedule = \"per_round\"\n"));
  auto run = test::run_bulwark({"run", (dir / "experiment.toml").string(), "--set", "experiment.save_updates=[2]",
                                "--set", "clients.per_round=6", "--out", (dir / "out").string(), "-q"});
  INFO(run.output);
  REQUIRE(run.exit_code == 0);
  const auto saved = dir / "out" / "updates";
  CHECK_FALSE(std::filesystem::exists(saved / "round_1.npy"));
  const auto updates = read_npy(saved / "round_2.npy");
  CHECK(updates.size(0) == 6);
  const auto json = nlohmann::json::parse(test::read_file(saved / "round_2.json"));
  CHECK(json.at("round") == 2);
  CHECK(json.at("clients").size() == 6);
  CHECK(json.at("malicious_rows").size() == 1);
  const auto flagged = json.at("flagged_rows").get<std::vector<std::int64_t>>();
  REQUIRE(flagged.size() == 5);  // Krum keeps one row

  auto replay = test::run_bulwark({"aggregate", "--plugin", "krum", "--updates", (saved / "round_2.npy").string(),
                                   "--set", "f=1", "--out", (dir / "g.npy").string()});
  INFO(replay.output);
  REQUIRE(replay.exit_code == 0);
  CHECK(replay.output.find(fmt::format("flagged rows: [{}]", fmt::join(flagged, ", "))) != std::string::npos);
}
