#include <limits>

#include "aggregation_helpers.hpp"

using bulwark::Aggregator;
using namespace bulwark::test;

TEST_CASE("clip: scales rows longer than the threshold down to it") {
  auto rule = load<Aggregator>("clip", "threshold = 1");
  // (3, 4) has norm 5 -> (0.6, 0.8); (0.3, 0.4) has norm 0.5 and (0, 0) norm 0: unchanged.
  auto u = matrix({{3, 4}, {0.3, 0.4}, {0, 0}});
  auto weights = vec({1, 2, 3});
  auto set = rule->preprocess(u, weights, context());
  CHECK_TENSOR_CLOSE(set.updates, matrix({{0.6, 0.8}, {0.3, 0.4}, {0, 0}}), 1e-15);
  CHECK_TENSOR_CLOSE(set.weights, weights, 0);
  // Alone: the plain mean of the clipped rows, (0.9, 1.2) / 3 = (0.3, 0.4).
  CHECK_TENSOR_CLOSE(rule->aggregate(u, weights, context()).aggregate, vec({0.3, 0.4}), 1e-15);
}

TEST_CASE("clip: NaN rows pass through preprocess and are skipped by the plain mean") {
  auto rule = load<Aggregator>("clip", "threshold = 1");
  auto nan = std::numeric_limits<double>::quiet_NaN();
  auto u = matrix({{3, 4}, {nan, 0}, {0.3, 0.4}});
  auto set = rule->preprocess(u, unit_weights(u), context());
  CHECK(torch::isnan(set.updates[1][0]).item<bool>());
  CHECK_TENSOR_CLOSE(set.updates[0], vec({0.6, 0.8}), 1e-15);
  // (0.6 + 0.3, 0.8 + 0.4) / 2 = (0.45, 0.6).
  CHECK_TENSOR_CLOSE(rule->aggregate(u, unit_weights(u), context()).aggregate, vec({0.45, 0.6}),
                     1e-15);
}

TEST_CASE("clip: a float32 row whose norm overflows is still clipped exactly") {
  auto rule = load<Aggregator>("clip", "threshold = 1");
  auto u = torch::full({2, 4}, 3e38f, torch::kFloat32);  // norm 6e38 > FLT_MAX
  u[1].fill_(0.1f);
  // Row 0 points along (1, 1, 1, 1): clipped to (0.5, 0.5, 0.5, 0.5).
  auto set = rule->preprocess(u, torch::ones({2}), context());
  CHECK_TENSOR_CLOSE(set.updates[0], vec({0.5, 0.5, 0.5, 0.5}), 1e-6);
  CHECK_TENSOR_CLOSE(set.updates[1], vec({0.1, 0.1, 0.1, 0.1}), 1e-7);
}

TEST_CASE("clip: identical rows within the threshold give that row, invariant to row order") {
  auto rule = load<Aggregator>("clip", "threshold = 1e6");
  auto row = random_rows(1, 6, 91);
  CHECK_TENSOR_CLOSE(run(rule, row.repeat({4, 1})).aggregate, row[0], 1e-15);
  auto small = load<Aggregator>("clip", "threshold = 0.5");
  auto u = random_rows(7, 5, 92);
  auto permuted = u.index_select(0, torch::randperm(7, make_generator(93), torch::kLong));
  CHECK_TENSOR_CLOSE(run(small, permuted).aggregate, run(small, u).aggregate, 1e-15);
}

TEST_CASE("clip: refusals") {
  CHECK_THROWS_WITH_AS(load<Aggregator>("clip"), doctest::Contains("threshold"), bulwark::Error);
  CHECK_THROWS_WITH_AS(load<Aggregator>("clip", "threshold = 0"),
                       doctest::Contains("threshold must be > 0"), bulwark::Error);
}
