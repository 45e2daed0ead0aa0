#include <limits>

#include "aggregation_helpers.hpp"

using bulwark::Aggregator;
using namespace bulwark::test;

TEST_CASE("monna: the mean of the pivot's n - f nearest rows (ByzFL's example), flagging the rest") {
  // ByzFL's documented example: MoNNA(f = 1, idx = 1) of [[1,2,3],[4,5,6],[7,8,9]] = [2.5, 3.5, 4.5]:
  // rows 0 and 2 are equally far from row 1; row 0, the lower index, is the neighbour.
  auto rule = load<Aggregator>("monna", "f = 1\npivot = 1");
  auto result = run(rule, matrix({{1, 2, 3}, {4, 5, 6}, {7, 8, 9}}));
  CHECK_TENSOR_CLOSE(result.aggregate, vec({2.5, 3.5, 4.5}), 0);
  CHECK(result.reports_flags);
  CHECK(result.flagged_rows == std::vector<std::int64_t>{2});
  // Pivot 0 at 0: squared distances 0, 1, 9, 100, 4 with n - f = 3 -> rows {0, 1, 4} -> (0 + 1 - 2) / 3.
  auto by_hand = run(load<Aggregator>("monna", "f = 2"), matrix({{0}, {1}, {3}, {10}, {-2}}));
  CHECK_TENSOR_CLOSE(by_hand.aggregate, vec({-1.0 / 3}), 1e-15);
  CHECK(by_hand.flagged_rows == std::vector<std::int64_t>{2, 3});
}

TEST_CASE("monna: permuting the other rows changes nothing, float32 stays float32") {
  auto rule = load<Aggregator>("monna", "f = 3");
  auto u = random_rows(10, 4, 77);
  const auto expected = run(rule, u).aggregate;
  auto order = torch::cat({torch::zeros({1}, torch::kLong), torch::randperm(9, make_generator(3), torch::kLong) + 1});
  CHECK_TENSOR_CLOSE(run(rule, u.index_select(0, order)).aggregate, expected, 1e-14);
  // Against the definition: sort by distance to row 0, average the first n - f = 7.
  auto distance = (u - u[0]).pow(2).sum(1);
  auto nearest = std::get<1>(distance.sort()).narrow(0, 0, 7);
  CHECK_TENSOR_CLOSE(expected, u.index_select(0, nearest).mean(0), 1e-14);
  CHECK((run(rule, u.to(torch::kFloat)).aggregate.scalar_type() == torch::kFloat));
}

TEST_CASE("monna: NaN rows are nobody's neighbour, a NaN pivot, a pivot outside the matrix and n <= 2f are refused") {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  auto rule = load<Aggregator>("monna", "f = 1");
  auto result = run(rule, matrix({{0}, {nan}, {1}, {5}}));
  CHECK_TENSOR_CLOSE(result.aggregate, vec({2}), 1e-15);  // rows 0, 2, 3: the three finite ones
  CHECK(result.flagged_rows == std::vector<std::int64_t>{1});
  CHECK_THROWS_WITH_AS(run(rule, matrix({{nan}, {0}, {1}})), doctest::Contains("pivot row 0 holds NaN or Inf"),
                       bulwark::Error);
  CHECK_THROWS_WITH_AS(run(load<Aggregator>("monna", "f = 1\npivot = 7"), matrix({{0}, {1}, {2}})),
                       doctest::Contains("pivot = 7 is not a row of the 3 updates"), bulwark::Error);
  CHECK_THROWS_WITH_AS(run(rule, matrix({{0}, {1}})), doctest::Contains("monna: needs n > 2f"), bulwark::Error);
  CHECK_TENSOR_CLOSE(run(rule, matrix({{3, 3}, {3, 3}, {3, 3}})).aggregate, vec({3, 3}), 0);
}
