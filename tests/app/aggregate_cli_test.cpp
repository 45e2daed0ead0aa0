// `bulwark aggregate`: a rule run once on saved updates, as a researcher checks a rule.
#include <doctest/doctest.h>

#include <cmath>
#include <utility>

#include "npy.hpp"
#include "test_support.hpp"

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
