#include <cmath>
#include <limits>

#include "aggregation_helpers.hpp"

using bulwark::Aggregator;
using namespace bulwark::test;

namespace {
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

/// A context whose root update (the server's update on its root dataset) is `root`.
bulwark::AggregationContext rooted(const torch::Tensor& root) {
  auto c = context();
  c.root_update = [root] { return root; };
  return c;
}

/// FLTrust written out row by row in float64 (Cao et al., Algorithm 2).
torch::Tensor reference(const torch::Tensor& u, const torch::Tensor& root) {
  const double root_norm = root.norm().item<double>();
  auto sum = torch::zeros({u.size(1)}, torch::kDouble);
  double total = 0;
  for (std::int64_t i = 0; i < u.size(0); ++i) {
    const double norm = u[i].norm().item<double>();
    const double trust = std::max(0.0, u[i].dot(root).item<double>() / (norm * root_norm));
    sum += trust * (root_norm / norm) * u[i];
    total += trust;
  }
  return total > 0 ? sum / total : sum;
}
}  // namespace

TEST_CASE("fltrust: asks the engine for a root dataset of root_size examples") {
  CHECK(load<Aggregator>("fltrust")->root_sample_size() == 100);
  CHECK(load<Aggregator>("fltrust", "root_size = 500")->root_sample_size() == 500);
}

TEST_CASE("fltrust: trust is ReLU(cos) against the root update, and every row is rescaled to its norm") {
  auto rule = load<Aggregator>("fltrust");
  auto u = matrix({{2, 0}, {0, 3}, {1, 1}, {-1, 0}});
  // Root g0 = (1, 0). Row 0: cos 1, rescaled (1, 0). Row 1: cos 0, trust 0. Row 2: cos 1/sqrt 2,
  // rescaled (1, 1)/sqrt 2. Row 3: cos -1, trust 0.
  // g = (1·(1, 0) + (1/sqrt 2)·(1, 1)/sqrt 2) / (1 + 1/sqrt 2) = (1.5, 0.5) / (1 + 1/sqrt 2).
  auto result = rule->aggregate(u, unit_weights(u), rooted(vec({1, 0})));
  const double total = 1 + 1 / std::sqrt(2.0);
  CHECK_TENSOR_CLOSE(result.aggregate, vec({1.5 / total, 0.5 / total}), 1e-15);
  CHECK(result.reports_flags);
  CHECK(result.flagged_rows == std::vector<std::int64_t>{1, 3});
}

TEST_CASE("fltrust: the aggregate has the root update's norm scale, whatever the uploads' norms") {
  auto rule = load<Aggregator>("fltrust");
  auto u = matrix({{100, 0}, {0.001, 0}});
  // Both rows point along g0 = (3, 0): each has trust 1 and is rescaled to (3, 0).
  auto result = rule->aggregate(u, unit_weights(u), rooted(vec({3, 0})));
  CHECK_TENSOR_CLOSE(result.aggregate, vec({3, 0}), 1e-12);
  CHECK(result.flagged_rows.empty());
}

TEST_CASE("fltrust: random rows agree with a float64 reference, in any client order, in float32 too") {
  auto rule = load<Aggregator>("fltrust");
  auto u = random_rows(12, 9, 81);
  auto root = random_rows(1, 9, 82)[0];
  auto expected = reference(u, root);
  auto result = rule->aggregate(u, unit_weights(u), rooted(root));
  CHECK_TENSOR_CLOSE(result.aggregate, expected, 1e-13);
  // Rows with a negative cosine are exactly the flagged ones.
  std::vector<std::int64_t> negative;
  for (std::int64_t i = 0; i < 12; ++i) {
    if (u[i].dot(root).item<double>() <= 0) negative.push_back(i);
  }
  REQUIRE(!negative.empty());
  CHECK(result.flagged_rows == negative);
  auto order = torch::randperm(12, make_generator(83), torch::kLong);
  CHECK_TENSOR_CLOSE(rule->aggregate(u.index_select(0, order), unit_weights(u), rooted(root)).aggregate, expected,
                     1e-13);
  auto single = rule->aggregate(u.to(torch::kFloat), unit_weights(u), rooted(root.to(torch::kFloat))).aggregate;
  CHECK((single.scalar_type() == torch::kFloat));
  CHECK_TENSOR_CLOSE(single.to(torch::kDouble), expected, 1e-5);
}

TEST_CASE("fltrust: NaN, Inf and zero rows get trust 0 and are flagged, the rest is unaffected") {
  auto rule = load<Aggregator>("fltrust");
  auto inf = std::numeric_limits<double>::infinity();
  auto u = matrix({{1, 1}, {kNaN, 0}, {inf, 0}, {0, 0}, {2, 0}});
  auto result = rule->aggregate(u, unit_weights(u), rooted(vec({1, 0})));
  CHECK_TENSOR_CLOSE(result.aggregate, reference(matrix({{1, 1}, {2, 0}}), vec({1, 0})), 1e-15);
  CHECK(result.flagged_rows == std::vector<std::int64_t>{1, 2, 3});
}

TEST_CASE("fltrust: no trusted row, or a zero root update, gives a zero step and flags every row") {
  auto rule = load<Aggregator>("fltrust");
  auto u = matrix({{-1, 0}, {0, 5}});
  auto result = rule->aggregate(u, unit_weights(u), rooted(vec({1, 0})));
  CHECK_TENSOR_CLOSE(result.aggregate, vec({0, 0}), 0);
  CHECK(result.flagged_rows == std::vector<std::int64_t>{0, 1});
  result = rule->aggregate(matrix({{1, 0}}), vec({1}), rooted(vec({0, 0})));
  CHECK_TENSOR_CLOSE(result.aggregate, vec({0, 0}), 0);
  CHECK(result.flagged_rows == std::vector<std::int64_t>{0});
}

TEST_CASE("fltrust: duplicated rows count once each, like distinct clients") {
  auto rule = load<Aggregator>("fltrust");
  auto u = matrix({{1, 0}, {1, 0}, {0, 1}});
  // Against g0 = (2, 1) rows 0 and 1 have cosine 2/sqrt 5, row 2 has 1/sqrt 5; all are rescaled to
  // norm sqrt 5, and the duplicate weighs as two clients.
  auto root = vec({2, 1});
  CHECK_TENSOR_CLOSE(rule->aggregate(u, unit_weights(u), rooted(root)).aggregate, reference(u, root), 1e-15);
}

TEST_CASE("fltrust: refusals") {
  auto rule = load<Aggregator>("fltrust");
  CHECK_THROWS_WITH_AS(run(rule, matrix({{1, 0}})), doctest::Contains("the engine did not provide a root dataset"),
                       bulwark::Error);
  CHECK_THROWS_WITH_AS(rule->aggregate(matrix({{1, 0}}), vec({1}), rooted(vec({1, 0, 0}))),
                       doctest::Contains("expected d = 2"), bulwark::Error);
  CHECK_THROWS_WITH_AS(load<Aggregator>("fltrust", "root_size = 0"), doctest::Contains("root_size"), bulwark::Error);
}
