#include <cmath>
#include <limits>

#include "aggregation_helpers.hpp"

using bulwark::Aggregator;
using namespace bulwark::test;

TEST_CASE("arc: ByzFL's documented example (f = 1 of 3 rows: the longest is clipped to the second)") {
  auto rule = load<Aggregator>("arc", "f = 1");
  auto u = matrix({{1, 2, 3}, {4, 5, 6}, {7, 8, 9}});
  auto set = rule->preprocess(u, unit_weights(u), context());
  // k = floor(2 * 1/3 * 2) = 1: [7, 8, 9] scaled to the norm of [4, 5, 6].
  const double scale = std::sqrt(77.0) / std::sqrt(194.0);
  CHECK_TENSOR_CLOSE(set.updates, matrix({{1, 2, 3}, {4, 5, 6}, {7 * scale, 8 * scale, 9 * scale}}), 1e-15);
  CHECK_TENSOR_CLOSE(set.updates[2], vec({4.41004009, 5.04004582, 5.67005155}), 1e-8);  // ByzFL's printout
  CHECK_TENSOR_CLOSE(set.weights, unit_weights(u), 0);
}

TEST_CASE("arc: k = floor(2f(n - f)/n) rows clipped to the (k+1)-th largest norm, in any row order") {
  // n = 10, f = 3: k = floor(42/10) = 4. Rows of norms 1..10 (shuffled): 7..10 go to 6.
  auto rule = load<Aggregator>("arc", "f = 3");
  std::vector<double> lengths = {3, 9, 1, 6, 10, 2, 8, 4, 7, 5};
  auto direction = random_rows(10, 5, 3);
  direction = direction / direction.norm(2, 1, true);
  auto u = direction * torch::tensor(lengths, torch::kDouble).unsqueeze(1);
  auto clipped = rule->preprocess(u, unit_weights(u), context()).updates;
  for (std::int64_t i = 0; i < 10; ++i) {
    CAPTURE(i);
    const double expected = std::min(lengths[static_cast<std::size_t>(i)], 6.0);
    CHECK(clipped[i].norm().item<double>() == doctest::Approx(expected).epsilon(1e-14));
    CHECK_TENSOR_CLOSE(clipped[i] / clipped[i].norm(), direction[i], 1e-14);
  }
  // f = 0 clips nothing; alone the rule averages the clipped rows.
  CHECK_TENSOR_CLOSE(load<Aggregator>("arc", "f = 0")->preprocess(u, unit_weights(u), context()).updates, u, 0);
  CHECK_TENSOR_CLOSE(run(rule, u).aggregate, clipped.mean(0), 1e-15);
  // f = -1 takes the declared bound.
  CHECK_TENSOR_CLOSE(load<Aggregator>("arc", "")->preprocess(u, unit_weights(u), context(3)).updates, clipped, 0);
}

TEST_CASE("arc: NaN rows rank longest and pass through, f > n is refused") {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  // n = 4, f = 1: k = floor(6/4) = 1, taken by the NaN row, so nothing finite is clipped.
  auto rule = load<Aggregator>("arc", "f = 1");
  auto u = matrix({{1, 0}, {nan, 0}, {0, 2}, {3, 0}});
  auto set = rule->preprocess(u, unit_weights(u), context());
  CHECK(std::isnan(set.updates[1][0].item<double>()));
  CHECK_TENSOR_CLOSE(set.updates.index_select(0, torch::tensor({0, 2, 3})), matrix({{1, 0}, {0, 2}, {3, 0}}), 0);
  // With a long finite row in its place, that row is clipped to the next longest, 3.
  auto finite = matrix({{1, 0}, {5, 5}, {0, 2}, {3, 0}});
  auto clipped = rule->preprocess(finite, unit_weights(finite), context()).updates;
  CHECK(clipped[1].norm().item<double>() == doctest::Approx(3.0));
  CHECK_THROWS_WITH_AS(run(load<Aggregator>("arc", "f = 5"), u), doctest::Contains("arc: f = 5 exceeds the 4"),
                       bulwark::Error);
}
