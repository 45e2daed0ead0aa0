#include <limits>

#include "aggregation_helpers.hpp"

using bulwark::Aggregator;
using namespace bulwark::test;

TEST_CASE("meamed: per coordinate, the mean of the n - f values nearest the median (ByzFL's example)") {
  auto rule = load<Aggregator>("meamed", "f = 1");
  // ByzFL's documented example: Meamed(1) of [[1,2,3],[4,5,6],[7,8,9]] = [2.5, 3.5, 4.5]. The
  // median row is at distance 0, rows 0 and 2 tie at 3: row 0, the lower index, is kept.
  CHECK_TENSOR_CLOSE(run(rule, matrix({{1, 2, 3}, {4, 5, 6}, {7, 8, 9}})).aggregate, vec({2.5, 3.5, 4.5}), 0);
  // By hand, n = 5, f = 2, one column: median 3; distances 3, 0, 1, 1, 97 -> {3, 2, 4} -> 3.
  // A second column, even n after dropping nothing: values 10, 0, 0, 0, 0 -> median 0 -> 0.
  CHECK_TENSOR_CLOSE(run(load<Aggregator>("meamed", "f = 2"), matrix({{0, 10}, {3, 0}, {2, 0}, {4, 0}, {100, 0}})).aggregate,
                     vec({3, 0}), 1e-15);
  // Even n = 4, f = 1: median (1 + 3) / 2 = 2, distances 2, 1, 1, 8 -> {1, 3, 0} -> 4/3.
  CHECK_TENSOR_CLOSE(run(rule, matrix({{0}, {1}, {3}, {10}})).aggregate, vec({4.0 / 3}), 1e-15);
  CHECK_FALSE(run(rule, matrix({{0}, {1}, {3}, {10}})).reports_flags);
}

TEST_CASE("meamed: against a straightforward float64 reference on random rows, any row order") {
  auto rule = load<Aggregator>("meamed", "f = 3");
  auto u = random_rows(11, 6, 321);
  auto expected = torch::empty({6}, torch::kDouble);
  for (std::int64_t k = 0; k < 6; ++k) {
    std::vector<double> column(11);
    for (std::int64_t i = 0; i < 11; ++i) column[i] = u[i][k].item<double>();
    auto sorted = column;
    std::sort(sorted.begin(), sorted.end());
    const double median = sorted[5];
    std::sort(column.begin(), column.end(),
              [&](double a, double b) { return std::abs(a - median) < std::abs(b - median); });
    double sum = 0;
    for (int i = 0; i < 8; ++i) sum += column[i];
    expected[k] = sum / 8;
  }
  CHECK_TENSOR_CLOSE(run(rule, u).aggregate, expected, 1e-14);
  auto order = torch::randperm(11, make_generator(5), torch::kLong);
  CHECK_TENSOR_CLOSE(run(rule, u.index_select(0, order)).aggregate, expected, 1e-14);
  CHECK((run(rule, u.to(torch::kFloat)).aggregate.scalar_type() == torch::kFloat));
}

TEST_CASE("meamed: identical rows give that row; NaN/Inf rows are removed and lower f; refusals") {
  auto rule = load<Aggregator>("meamed", "f = 1");
  CHECK_TENSOR_CLOSE(run(rule, matrix({{2, -1}, {2, -1}, {2, -1}})).aggregate, vec({2, -1}), 0);
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  // n = 5, f = 2, one NaN row: 4 finite rows with f' = 1 -> 3 values nearest the median 2.5 of
  // {0, 2, 3, 4}: distances 2.5, 0.5, 0.5, 1.5 -> {2, 3, 4} -> 3.
  CHECK_TENSOR_CLOSE(run(load<Aggregator>("meamed", "f = 2"), matrix({{0}, {nan}, {2}, {3}, {4}})).aggregate,
                     vec({3}), 1e-15);
  CHECK_TENSOR_CLOSE(run(rule, matrix({{nan}, {inf}, {-inf}})).aggregate, vec({0}), 0);
  CHECK_THROWS_WITH_AS(run(rule, matrix({{0}, {1}})), doctest::Contains("meamed: needs n > 2f"), bulwark::Error);
  CHECK_TENSOR_CLOSE(load<Aggregator>("meamed")->aggregate(matrix({{0}, {1}, {3}, {10}}), vec({1, 1, 1, 1}), context(1)).aggregate,
                     vec({4.0 / 3}), 1e-15);
}
