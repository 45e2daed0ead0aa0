#include <algorithm>
#include <limits>

#include "aggregation_helpers.hpp"

using bulwark::Aggregator;
using namespace bulwark::test;

namespace {
std::vector<double> sorted_values(const torch::Tensor& column) {
  auto c = column.contiguous().to(torch::kDouble);
  std::vector<double> values(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
  std::sort(values.begin(), values.end());
  return values;
}
}  // namespace

TEST_CASE("bucketing: s = 2 pairs the rows at random and averages each pair") {
  auto rule = load<Aggregator>("bucketing", "s = 2");
  // Rows 1, 10, 100, 1000: whatever the permutation, each bucket mean is (a + b) / 2 for a
  // distinct pair, so twice the two means add up to 1111 and each is a sum of two of the rows.
  auto u = matrix({{1}, {10}, {100}, {1000}});
  auto set = rule->preprocess(u, vec({1, 2, 3, 4}), context());
  REQUIRE((set.updates.sizes() == torch::IntArrayRef({2, 1})));
  auto doubled = sorted_values(set.updates.flatten() * 2);
  const std::vector<std::vector<double>> pairings = {{11, 1100}, {101, 1010}, {110, 1001}};
  CHECK(std::find(pairings.begin(), pairings.end(), doubled) != pairings.end());
  // Each bucket's weight is the sum of its members' weights: 1 + 2 + 3 + 4 = 10 in total.
  CHECK(set.weights.sum().item<double>() == doctest::Approx(10));
  // Alone: the mean of the bucket means, which for equal buckets is the plain mean 1111 / 4.
  CHECK_TENSOR_CLOSE(run(rule, u).aggregate, vec({277.75}), 1e-12);
}

TEST_CASE("bucketing: ceil(n / s) buckets, the last one smaller") {
  auto rule = load<Aggregator>("bucketing", "s = 2");
  auto u = matrix({{1}, {2}, {4}, {8}, {16}});
  auto set = rule->preprocess(u, unit_weights(u), context());
  // 5 rows, s = 2: buckets of 2, 2 and 1 rows; their sizes are the weights with unit weights.
  CHECK(sorted_values(set.weights) == std::vector<double>{1, 2, 2});
  // size-weighted bucket means add back up to the sum of the rows, 31.
  CHECK((set.updates.flatten() * set.weights).sum().item<double>() == doctest::Approx(31));
}

TEST_CASE("bucketing: s = 1 permutes, s = n averages everything") {
  auto u = random_rows(6, 3, 101);
  auto one = load<Aggregator>("bucketing", "s = 1")->preprocess(u, unit_weights(u), context());
  CHECK(sorted_values(one.updates.select(1, 0)) == sorted_values(u.select(1, 0)));
  auto all = load<Aggregator>("bucketing", "s = 6")->preprocess(u, unit_weights(u), context());
  CHECK_TENSOR_CLOSE(all.updates, u.mean(0, /*keepdim=*/true), 1e-15);
}

TEST_CASE("bucketing: the permutation comes from the context's generator") {
  auto rule = load<Aggregator>("bucketing", "s = 2");
  auto u = random_rows(10, 4, 102);
  auto a = rule->preprocess(u, unit_weights(u), context()).updates;
  auto b = rule->preprocess(u, unit_weights(u), context()).updates;
  CHECK_TENSOR_CLOSE(a, b, 0);  // same seed, same buckets
  auto other = context();
  other.generator = make_generator(/*seed=*/99);
  CHECK_FALSE(torch::equal(rule->preprocess(u, unit_weights(u), other).updates, a));
}

TEST_CASE("bucketing: identical rows give that row") {
  auto rule = load<Aggregator>("bucketing", "s = 3");
  auto row = random_rows(1, 5, 103);
  CHECK_TENSOR_CLOSE(run(rule, row.repeat({7, 1})).aggregate, row[0], 1e-15);
}

TEST_CASE("bucketing: a NaN row spoils only its own bucket, which the plain mean skips") {
  auto rule = load<Aggregator>("bucketing", "s = 2");
  auto nan = std::numeric_limits<double>::quiet_NaN();
  auto u = matrix({{1}, {3}, {nan}, {5}});
  auto set = rule->preprocess(u, unit_weights(u), context());
  CHECK(torch::isnan(set.updates).sum().item<std::int64_t>() == 1);
  auto g = run(rule, u).aggregate;
  CHECK(torch::isfinite(g).all().item<bool>());
  auto finite = set.updates.index({torch::isfinite(set.updates).all(1)});
  CHECK_TENSOR_CLOSE(g, finite.mean(0), 1e-15);
}

TEST_CASE("bucketing: refuses to run without a generator") {
  auto rule = load<Aggregator>("bucketing");
  bulwark::AggregationContext bare;
  CHECK_THROWS_WITH_AS(rule->preprocess(matrix({{1}, {2}}), vec({1, 1}), bare),
                       doctest::Contains("context.generator is not set"), bulwark::Error);
  CHECK_THROWS_WITH_AS(load<Aggregator>("bucketing", "s = 0"), doctest::Contains("s"),
                       bulwark::Error);
}

TEST_CASE("bucketing: a fixed permutation buckets rows in its order, as ByzFL applies numpy's permutation") {
  // pi = [3, 0, 4, 1, 2], s = 2: buckets {3, 0}, {4, 1}, {2}.
  auto rule = load<Aggregator>("bucketing", "s = 2\npermutation = [3, 0, 4, 1, 2]");
  auto u = matrix({{0}, {1}, {2}, {3}, {4}});
  auto set = rule->preprocess(u, unit_weights(u), context());
  CHECK_TENSOR_CLOSE(set.updates, matrix({{1.5}, {2.5}, {2}}), 0);
  CHECK_THROWS_WITH_AS(rule->preprocess(u.narrow(0, 0, 4), unit_weights(u.narrow(0, 0, 4)), context()),
                       doctest::Contains("it has 5 entries"), bulwark::Error);
  auto repeated = load<Aggregator>("bucketing", "s = 2\npermutation = [0, 0, 1, 2, 3]");
  CHECK_THROWS_WITH_AS(repeated->preprocess(u, unit_weights(u), context()),
                       doctest::Contains("with a row repeated or out of range"), bulwark::Error);
}
