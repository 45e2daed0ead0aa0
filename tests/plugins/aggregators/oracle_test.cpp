#include <limits>

#include "aggregation_helpers.hpp"

using bulwark::Aggregator;
using namespace bulwark::test;

namespace {
bulwark::AggregationContext with_truth(std::vector<std::int64_t> malicious) {
  auto c = context();
  c.true_malicious_rows = std::move(malicious);
  return c;
}
}  // namespace

TEST_CASE("oracle: asks for the ground truth") {
  CHECK(load<Aggregator>("oracle")->wants_ground_truth());
  CHECK_FALSE(load<Aggregator>("median")->wants_ground_truth());
}

TEST_CASE("oracle: weighted mean of the honest rows") {
  auto rule = load<Aggregator>("oracle");
  auto u = matrix({{1, 2}, {100, 100}, {3, 4}});
  // Row 1 is malicious. Weights 1 and 3 on rows 0 and 2:
  // ((1, 2) * 1 + (3, 4) * 3) / 4 = (10, 14) / 4 = (2.5, 3.5).
  auto result = rule->aggregate(u, vec({1, 5, 3}), with_truth({1}));
  CHECK_TENSOR_CLOSE(result.aggregate, vec({2.5, 3.5}), 1e-15);
  CHECK(result.reports_flags);
  CHECK(result.flagged_rows == std::vector<std::int64_t>{1});
}

TEST_CASE("oracle: plain mean with weighted = false") {
  auto rule = load<Aggregator>("oracle", "weighted = false");
  auto u = matrix({{1, 2}, {100, 100}, {3, 4}});
  // ((1, 2) + (3, 4)) / 2 = (2, 3).
  CHECK_TENSOR_CLOSE(rule->aggregate(u, vec({1, 5, 3}), with_truth({1})).aggregate, vec({2, 3}),
                     1e-15);
}

TEST_CASE("oracle: malicious NaN/Inf rows never reach the aggregate") {
  auto rule = load<Aggregator>("oracle");
  auto nan = std::numeric_limits<double>::quiet_NaN();
  auto u = matrix({{nan, 1}, {1, 2}, {std::numeric_limits<double>::infinity(), 0}, {3, 4}});
  auto result = rule->aggregate(u, unit_weights(u), with_truth({2, 0, 2}));
  CHECK_TENSOR_CLOSE(result.aggregate, vec({2, 3}), 1e-15);
  CHECK(result.flagged_rows == std::vector<std::int64_t>{0, 2});
}

TEST_CASE("oracle: every row malicious gives a zero step, identical rows give that row") {
  auto rule = load<Aggregator>("oracle");
  auto u = matrix({{1, 2}, {3, 4}});
  CHECK_TENSOR_CLOSE(rule->aggregate(u, unit_weights(u), with_truth({0, 1})).aggregate,
                     vec({0, 0}), 0);
  auto row = random_rows(1, 5, 81);
  auto same = row.repeat({4, 1});
  CHECK_TENSOR_CLOSE(rule->aggregate(same, unit_weights(same), with_truth({})).aggregate, row[0],
                     1e-15);
}

TEST_CASE("oracle: refuses a malicious row outside the matrix") {
  auto rule = load<Aggregator>("oracle");
  auto u = matrix({{1, 2}, {3, 4}});
  CHECK_THROWS_WITH_AS(rule->aggregate(u, unit_weights(u), with_truth({2})),
                       doctest::Contains("malicious row 2 is outside the n = 2 rows"),
                       bulwark::Error);
}
