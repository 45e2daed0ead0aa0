#include <limits>

#include "aggregation_helpers.hpp"

using bulwark::Aggregator;
using namespace bulwark::test;

namespace {
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
}  // namespace

TEST_CASE("nnm: each row becomes the mean of its n - f nearest rows, itself included") {
  auto rule = load<Aggregator>("nnm", "f = 1");
  // Rows 0, 1, 3, 10 with n - f = 3 neighbours:
  //   0: squared distances 0, 1, 9, 100 -> {0, 1, 3} -> 4/3
  //   1: 1, 0, 4, 81 -> {1, 0, 3} -> 4/3
  //   3: 9, 4, 0, 49 -> {3, 1, 0} -> 4/3
  //  10: 100, 81, 49, 0 -> {10, 3, 1} -> 14/3
  auto u = matrix({{0}, {1}, {3}, {10}});
  auto weights = vec({1, 2, 3, 4});
  auto set = rule->preprocess(u, weights, context());
  CHECK_TENSOR_CLOSE(set.updates, matrix({{4.0 / 3}, {4.0 / 3}, {4.0 / 3}, {14.0 / 3}}), 1e-14);
  CHECK_TENSOR_CLOSE(set.weights, weights, 0);
  // Alone: (4/3 * 3 + 14/3) / 4 = (26/3) / 4 = 13/6.
  CHECK_TENSOR_CLOSE(rule->aggregate(u, weights, context()).aggregate, vec({13.0 / 6}), 1e-14);
}

TEST_CASE("nnm: rows at equal distance enter the neighbourhood by lowest row index") {
  auto rule = load<Aggregator>("nnm", "f = 3");  // n = 8: n - f = 5 neighbours
  // Row 0 (at 0): itself at 0, row 7 at 0.25, rows 1 and 2 at 1, then rows 3 (-2) and 4 (+2) both
  // at 4 for the fifth place: row 3, the lower index -> (0 + 0.5 - 1 + 1 - 2) / 5 = -0.3 (row 4
  // would give +0.5). All values are dyadic, so the distances tie exactly.
  auto u = matrix({{0}, {-1}, {1}, {-2}, {2}, {10}, {10}, {0.5}});
  const auto mixed = rule->preprocess(u, vec({1, 1, 1, 1, 1, 1, 1, 1}), context()).updates;
  CHECK(mixed[0][0].item<double>() == doctest::Approx(-0.3).epsilon(1e-12));
}

TEST_CASE("nnm: f = -1 takes the declared bound, refuses n <= 2f") {
  auto rule = load<Aggregator>("nnm");
  auto u = matrix({{0}, {1}, {3}, {10}});
  CHECK_TENSOR_CLOSE(rule->preprocess(u, unit_weights(u), context(/*f=*/1)).updates[3],
                     vec({14.0 / 3}), 1e-14);
  CHECK_THROWS_WITH_AS(rule->preprocess(u, unit_weights(u), context(/*f=*/2)),
                       doctest::Contains("needs n > 2f"), bulwark::Error);
  auto two = load<Aggregator>("nnm", "f = 2");
  CHECK_THROWS_WITH_AS(run(two, u), doctest::Contains("found n = 4 with f = 2"), bulwark::Error);
}

TEST_CASE("nnm: permuting the rows permutes the mixed rows") {
  auto rule = load<Aggregator>("nnm", "f = 2");
  auto u = random_rows(9, 5, 111);
  auto order = torch::randperm(9, make_generator(112), torch::kLong);
  auto mixed = rule->preprocess(u, unit_weights(u), context()).updates;
  auto mixed_permuted =
      rule->preprocess(u.index_select(0, order), unit_weights(u), context()).updates;
  CHECK_TENSOR_CLOSE(mixed_permuted, mixed.index_select(0, order), 1e-14);
  CHECK_TENSOR_CLOSE(run(rule, u.index_select(0, order)).aggregate, run(rule, u).aggregate, 1e-14);
}

TEST_CASE("nnm: identical rows give that row") {
  auto rule = load<Aggregator>("nnm", "f = 0");
  auto row = random_rows(1, 6, 113);
  CHECK_TENSOR_CLOSE(run(rule, row.repeat({5, 1})).aggregate, row[0], 1e-14);
}

TEST_CASE("nnm: a NaN row is nobody's neighbour and passes through") {
  auto rule = load<Aggregator>("nnm", "f = 2");
  // n = 5, f = 2 with one NaN row: f' = 1 on the four finite rows, n' - f' = 3 neighbours, so the
  // finite rows mix exactly as in the f = 1 example above.
  auto u = matrix({{0}, {1}, {kNaN}, {3}, {10}});
  auto set = rule->preprocess(u, unit_weights(u), context());
  CHECK(torch::isnan(set.updates[2][0]).item<bool>());
  auto finite_rows = set.updates.index_select(0, torch::tensor({0, 1, 3, 4}, torch::kLong));
  CHECK_TENSOR_CLOSE(finite_rows, matrix({{4.0 / 3}, {4.0 / 3}, {4.0 / 3}, {14.0 / 3}}), 1e-14);
  CHECK_TENSOR_CLOSE(run(rule, u).aggregate, vec({13.0 / 6}), 1e-14);
}
