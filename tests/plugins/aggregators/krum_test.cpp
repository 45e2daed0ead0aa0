#include <algorithm>
#include <limits>

#include "aggregation_helpers.hpp"

using bulwark::Aggregator;
using namespace bulwark::test;

namespace {
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

// Five points on a line, in scrambled row order: rows hold 7, 20, 1, 0, 3.
torch::Tensor line_points() { return matrix({{7, 0}, {20, 0}, {1, 0}, {0, 0}, {3, 0}}); }

/// Index of the row of `u` equal to `g`, or -1.
std::int64_t row_of(const torch::Tensor& u, const torch::Tensor& g) {
  for (std::int64_t i = 0; i < u.size(0); ++i) {
    if (torch::equal(u[i], g)) return i;
  }
  return -1;
}
}  // namespace

TEST_CASE("krum: scores by the n - f - 2 nearest squared distances and returns the best row") {
  auto rule = load<Aggregator>("krum", "f = 1");
  // n = 5, f = 1: each row sums its 2 smallest squared distances to the others.
  //   7: to 20, 1, 0, 3 -> 169, 36, 49, 16 -> 16 + 36 = 52
  //  20: 169, 361, 400, 289 -> 169 + 289 = 458
  //   1: 36, 361, 1, 4 -> 1 + 4 = 5      <- minimum
  //   0: 49, 400, 1, 9 -> 1 + 9 = 10
  //   3: 16, 289, 4, 9 -> 4 + 9 = 13
  auto result = run(rule, line_points());
  CHECK_TENSOR_CLOSE(result.aggregate, vec({1, 0}), 0);
  CHECK(result.reports_flags);
  CHECK(result.flagged_rows == std::vector<std::int64_t>{0, 1, 3, 4});
}

TEST_CASE("krum: f = -1 takes the declared Byzantine bound") {
  auto rule = load<Aggregator>("krum");
  CHECK_TENSOR_CLOSE(run(rule, line_points(), context(/*f=*/1)).aggregate, vec({1, 0}), 0);
  CHECK_THROWS_WITH_AS(run(rule, line_points(), context(/*f=*/2)),
                       doctest::Contains("needs n > 2f + 2"), bulwark::Error);
}

TEST_CASE("krum: refuses n <= 2f + 2") {
  auto rule = load<Aggregator>("krum", "f = 1");
  auto four = matrix({{1}, {2}, {3}, {4}});
  CHECK_THROWS_WITH_AS(run(rule, four), doctest::Contains("needs n > 2f + 2"), bulwark::Error);
  CHECK_THROWS_WITH_AS(run(rule, four), doctest::Contains("found n = 4 with f = 1"),
                       bulwark::Error);
  CHECK_THROWS_WITH_AS(load<Aggregator>("krum", "f = -2"), doctest::Contains("f"),
                       bulwark::Error);
}

TEST_CASE("krum: returns one of the input rows") {
  auto rule = load<Aggregator>("krum", "f = 2");
  auto u = random_rows(11, 6, 21);
  auto result = run(rule, u);
  const auto selected = row_of(u, result.aggregate);
  REQUIRE(selected >= 0);
  CHECK(result.flagged_rows.size() == 10);
  CHECK(std::find(result.flagged_rows.begin(), result.flagged_rows.end(), selected) ==
        result.flagged_rows.end());
}

TEST_CASE("krum: invariant to the order of the rows") {
  auto rule = load<Aggregator>("krum", "f = 2");
  auto u = random_rows(11, 6, 22);
  auto permuted = u.index_select(0, torch::randperm(11, make_generator(23), torch::kLong));
  CHECK_TENSOR_CLOSE(run(rule, permuted).aggregate, run(rule, u).aggregate, 0);
}

TEST_CASE("krum: identical rows give that row") {
  auto rule = load<Aggregator>("krum", "f = 0");
  auto row = random_rows(1, 7, 24);
  CHECK_TENSOR_CLOSE(run(rule, row.repeat({4, 1})).aggregate, row[0], 0);
}

TEST_CASE("krum: a Byzantine row of 1e9 moves it by less than the honest spread") {
  auto rule = load<Aggregator>("krum", "f = 1");
  auto honest = random_rows(10, 8, 25);
  auto spread = std::get<0>(honest.max(0)) - std::get<0>(honest.min(0));
  auto attacked = torch::cat({honest, torch::full({1, 8}, 1e9, torch::kDouble)});
  auto g = run(rule, attacked).aggregate;
  CHECK(row_of(honest, g) >= 0);
  CHECK(((g - run(rule, honest).aggregate).abs() < spread).all().item<bool>());
}

TEST_CASE("krum: NaN/Inf rows are never selected and are flagged") {
  auto rule = load<Aggregator>("krum", "f = 1");
  // The NaN row is removed and f drops to 0; n' = 5, neighbours n - f - 2 = 3:
  //   7: 16 + 36 + 49 = 101;  20: 169 + 289 + 361 = 819;  1: 1 + 4 + 36 = 41;
  //   0: 1 + 9 + 49 = 59;     3: 4 + 9 + 16 = 29   <- minimum
  auto u = torch::cat({line_points(), matrix({{kNaN, 0}})});
  auto result = run(rule, u);
  CHECK_TENSOR_CLOSE(result.aggregate, vec({3, 0}), 0);
  CHECK(result.flagged_rows == std::vector<std::int64_t>{0, 1, 2, 3, 5});

  auto two_bad = torch::cat({random_rows(6, 3, 26), matrix({{kInf, 0, 0}, {0, kNaN, 1}})});
  auto g = run(load<Aggregator>("krum", "f = 2"), two_bad).aggregate;
  CHECK(torch::isfinite(g).all().item<bool>());
  CHECK(row_of(two_bad.narrow(0, 0, 6), g) >= 0);
}

TEST_CASE("krum: a float32 row whose squared norm overflows float32 is ranked in float64, not picked") {
  auto rule = load<Aggregator>("krum", "f = 1");
  auto u = random_rows(6, 4, 27).to(torch::kFloat32);
  u[2].fill_(1e20);  // finite, but ||u||^2 = 4e40 > FLT_MAX
  auto result = run(rule, u);
  CHECK((result.aggregate.scalar_type() == torch::kFloat32));
  CHECK((result.aggregate.abs() < 10).all().item<bool>());
  CHECK(std::find(result.flagged_rows.begin(), result.flagged_rows.end(), 2) !=
        result.flagged_rows.end());
}

TEST_CASE("krum: among identical best rows the lowest row index is picked, as documented") {
  // Copies of one central row at rows 2, 5 and 7 among scattered ones tie exactly, and their
  // scores must too: scores read from a Gram matrix can come out an ulp apart between copies.
  auto rule = load<Aggregator>("krum", "f = 2");
  for (int seed = 0; seed < 40; ++seed) {
    CAPTURE(seed);
    auto u = random_rows(12, 500, 100 + seed);
    const auto centre = u.mean(0);
    for (auto row : {2, 5, 7}) u[row].copy_(centre);
    const auto flagged = run(rule, u).flagged_rows;
    CHECK(std::find(flagged.begin(), flagged.end(), 2) == flagged.end());  // row 2 is the pick
  }
}
