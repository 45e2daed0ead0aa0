#include <algorithm>
#include <limits>

#include "aggregation_helpers.hpp"

using bulwark::Aggregator;
using namespace bulwark::test;

TEST_CASE("dnc: with every coordinate, the n - cf rows of smallest projection on the top singular vector") {
  // b >= d: one deterministic pass. Reference from the definition with an SVD of the centred rows.
  auto u = random_rows(9, 4, 5);
  u.narrow(0, 0, 2).add_(torch::tensor({6.0, -6.0, 6.0, 0.0}, torch::kDouble));
  auto rule = load<Aggregator>("dnc", "f = 2\niterations = 1\nsubsample = 100");
  auto result = run(rule, u);
  const auto centred = u - u.mean(0);
  const auto v = std::get<2>(torch::linalg::svd(centred, false, c10::nullopt))[0];
  const auto scores = centred.matmul(v).pow(2);
  const auto kept = std::get<1>(scores.sort()).narrow(0, 0, 7);
  CHECK_TENSOR_CLOSE(result.aggregate, u.index_select(0, kept).mean(0), 1e-12);
  CHECK(result.flagged_rows == std::vector<std::int64_t>{0, 1});
  // c = 0.5 removes floor(0.5 f) = 1 row per pass.
  auto half = run(load<Aggregator>("dnc", "f = 2\niterations = 1\nsubsample = 100\nfilter_fraction = 0.5"), u);
  CHECK(half.flagged_rows.size() == 1);
}

TEST_CASE("dnc: random sub-sampling is seeded, order-free on clear outliers, and flags them") {
  auto honest = random_rows(15, 300, 11);
  auto attackers = random_rows(3, 300, 12) * 0.1 + 4;
  auto u = torch::cat({honest, attackers});
  auto rule = load<Aggregator>("dnc", "f = 3\nsubsample = 50");
  auto first = run(rule, u, context(0, 1));
  auto again = run(rule, u, context(0, 1));
  CHECK_TENSOR_CLOSE(first.aggregate, again.aggregate, 0);
  CHECK(first.flagged_rows == std::vector<std::int64_t>{15, 16, 17});
  CHECK_TENSOR_CLOSE(first.aggregate, honest.mean(0), 1e-12);
  // f = -1 takes the declared bound.
  CHECK(run(load<Aggregator>("dnc", "subsample = 50"), u, context(3, 1)).flagged_rows == first.flagged_rows);
}

TEST_CASE("dnc: NaN rows are removed first, removing every row is refused") {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  auto u = torch::cat({random_rows(5, 3, 2), matrix({{nan, 0, 0}})});
  auto result = run(load<Aggregator>("dnc", "f = 1\nsubsample = 10"), u);
  CHECK(std::find(result.flagged_rows.begin(), result.flagged_rows.end(), 5) != result.flagged_rows.end());
  CHECK(torch::isfinite(result.aggregate).all().item<bool>());
  CHECK_THROWS_WITH_AS(run(load<Aggregator>("dnc", "f = 3\nfilter_fraction = 2"), random_rows(5, 3, 1)),
                       doctest::Contains("leaves none"), bulwark::Error);
}
