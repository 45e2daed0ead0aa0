#include <limits>

#include "aggregation_helpers.hpp"

using bulwark::Aggregator;
using namespace bulwark::test;

namespace {
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// Rows hold 7, 20, 1, 0, 3. With f = 1 the Krum scores (2 nearest squared distances) are
//   7: 16 + 36 = 52;  20: 169 + 289 = 458;  1: 1 + 4 = 5;  0: 1 + 9 = 10;  3: 4 + 9 = 13.
// Ranked: 1 (row 2), 0 (row 3), 3 (row 4), 7 (row 0), 20 (row 1).
torch::Tensor line_points() { return matrix({{7, 0}, {20, 0}, {1, 0}, {0, 0}, {3, 0}}); }
}  // namespace

TEST_CASE("multi_krum: averages the m best-scored rows") {
  auto rule = load<Aggregator>("multi_krum", "f = 1\nm = 2");
  // m = 2: rows holding 1 and 0 -> (1 + 0) / 2 = 0.5.
  auto result = run(rule, line_points());
  CHECK_TENSOR_CLOSE(result.aggregate, vec({0.5, 0}), 0);
  CHECK(result.reports_flags);
  CHECK(result.flagged_rows == std::vector<std::int64_t>{0, 1, 4});
}

TEST_CASE("multi_krum: m defaults to n - f") {
  auto rule = load<Aggregator>("multi_krum", "f = 1");
  // m = 5 - 1 = 4: rows holding 1, 0, 3, 7 -> 11 / 4 = 2.75; only the row holding 20 is flagged.
  auto result = run(rule, line_points());
  CHECK_TENSOR_CLOSE(result.aggregate, vec({2.75, 0}), 1e-15);
  CHECK(result.flagged_rows == std::vector<std::int64_t>{1});
}

TEST_CASE("multi_krum: m = 1 is Krum") {
  auto multi = load<Aggregator>("multi_krum", "f = 2\nm = 1");
  auto krum = load<Aggregator>("krum", "f = 2");
  auto u = random_rows(9, 5, 31);
  CHECK_TENSOR_CLOSE(run(multi, u).aggregate, run(krum, u).aggregate, 0);
}

TEST_CASE("multi_krum: refusals") {
  auto rule = load<Aggregator>("multi_krum", "f = 1");
  CHECK_THROWS_WITH_AS(run(rule, matrix({{1}, {2}, {3}, {4}})),
                       doctest::Contains("needs n > 2f + 2"), bulwark::Error);
  auto too_many = load<Aggregator>("multi_krum", "f = 1\nm = 6");
  CHECK_THROWS_WITH_AS(run(too_many, line_points()),
                       doctest::Contains("m = 6 exceeds the n = 5 updates"), bulwark::Error);
  CHECK_THROWS_WITH_AS(load<Aggregator>("multi_krum", "m = 0"),
                       doctest::Contains("m = 0 selects no update"), bulwark::Error);
}

TEST_CASE("multi_krum: invariant to the order of the rows") {
  auto rule = load<Aggregator>("multi_krum", "f = 2\nm = 4");
  auto u = random_rows(11, 6, 32);
  auto permuted = u.index_select(0, torch::randperm(11, make_generator(33), torch::kLong));
  CHECK_TENSOR_CLOSE(run(rule, permuted).aggregate, run(rule, u).aggregate, 1e-15);
}

TEST_CASE("multi_krum: identical rows give that row") {
  auto rule = load<Aggregator>("multi_krum", "f = 0");
  auto row = random_rows(1, 7, 34);
  CHECK_TENSOR_CLOSE(run(rule, row.repeat({4, 1})).aggregate, row[0], 1e-15);
}

TEST_CASE("multi_krum: NaN rows are excluded and flagged") {
  auto rule = load<Aggregator>("multi_krum", "f = 1");
  // The NaN row is removed (f' = 0); neighbours 6 - 1 - 2 = 3 on the five finite rows:
  //   7: 101;  20: 819;  1: 41;  0: 59;  3: 29.
  // Default m = n - f = 5, capped at the 5 finite rows: the mean of all five,
  // (7 + 20 + 1 + 0 + 3) / 5 = 6.2.
  auto u = torch::cat({line_points(), matrix({{kNaN, 0}})});
  auto result = run(rule, u);
  CHECK_TENSOR_CLOSE(result.aggregate, vec({6.2, 0}), 1e-15);
  CHECK(result.flagged_rows == std::vector<std::int64_t>{5});
  // m = 2: the two best, rows holding 3 and 1 -> 2.
  auto two = load<Aggregator>("multi_krum", "f = 1\nm = 2");
  CHECK_TENSOR_CLOSE(run(two, u).aggregate, vec({2, 0}), 0);
}
