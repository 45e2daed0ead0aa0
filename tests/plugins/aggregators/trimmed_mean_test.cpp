#include <limits>

#include "aggregation_helpers.hpp"

using bulwark::Aggregator;
using namespace bulwark::test;

namespace {
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// Column 0: {1, 100, 2, 4, 3} sorted 1, 2, 3, 4, 100.  Column 1: {3, -50, 0, 1, 2} sorted -50, 0,
// 1, 2, 3.
torch::Tensor five_rows() { return matrix({{1, 3}, {100, -50}, {2, 0}, {4, 1}, {3, 2}}); }
}  // namespace

TEST_CASE("trimmed_mean: b = 1 drops the largest and smallest value of every coordinate") {
  auto rule = load<Aggregator>("trimmed_mean", "b = 1");
  // Column 0: (2 + 3 + 4) / 3 = 3.  Column 1: (0 + 1 + 2) / 3 = 1.
  CHECK_TENSOR_CLOSE(run(rule, five_rows()).aggregate, vec({3, 1}), 1e-15);
}

TEST_CASE("trimmed_mean: beta gives b = floor(beta n)") {
  // beta = 0.25, n = 5: b = floor(1.25) = 1, the same answer as b = 1.
  auto rule = load<Aggregator>("trimmed_mean", "beta = 0.25");
  CHECK_TENSOR_CLOSE(run(rule, five_rows()).aggregate, vec({3, 1}), 1e-15);
  // beta = 0.1, n = 5: b = floor(0.5) = 0, the plain mean (110 / 5 = 22, -44 / 5 = -8.8).
  auto none = load<Aggregator>("trimmed_mean", "beta = 0.1");
  CHECK_TENSOR_CLOSE(run(none, five_rows()).aggregate, vec({22, -8.8}), 1e-12);
}

TEST_CASE("trimmed_mean: without b or beta, b is the declared Byzantine bound") {
  auto rule = load<Aggregator>("trimmed_mean");
  CHECK_TENSOR_CLOSE(run(rule, five_rows(), context(/*f=*/1)).aggregate, vec({3, 1}), 1e-15);
  CHECK_TENSOR_CLOSE(run(rule, five_rows(), context(/*f=*/0)).aggregate, vec({22, -8.8}), 1e-12);
}

TEST_CASE("trimmed_mean: refuses n <= 2b") {
  auto rule = load<Aggregator>("trimmed_mean", "b = 2");
  auto four = matrix({{1}, {2}, {3}, {4}});
  CHECK_THROWS_WITH_AS(run(rule, four), doctest::Contains("needs n > 2b"), bulwark::Error);
  CHECK_THROWS_WITH_AS(run(rule, four), doctest::Contains("b = 2 values from each end of n = 4"),
                       bulwark::Error);
  auto half = load<Aggregator>("trimmed_mean", "beta = 0.5");
  CHECK_THROWS_WITH_AS(run(half, four), doctest::Contains("needs n > 2b"), bulwark::Error);
  auto declared = load<Aggregator>("trimmed_mean");
  CHECK_THROWS_WITH_AS(run(declared, four, context(/*f=*/2)), doctest::Contains("needs n > 2b"),
                       bulwark::Error);
}

TEST_CASE("trimmed_mean: refuses b and beta together, and beta out of range") {
  CHECK_THROWS_WITH_AS(load<Aggregator>("trimmed_mean", "b = 1\nbeta = 0.2"),
                       doctest::Contains("set either b (a count) or beta (a fraction), not both"),
                       bulwark::Error);
  CHECK_THROWS_WITH_AS(load<Aggregator>("trimmed_mean", "beta = 0.6"), doctest::Contains("beta"),
                       bulwark::Error);
}

TEST_CASE("trimmed_mean: invariant to the order of the rows") {
  auto rule = load<Aggregator>("trimmed_mean", "b = 2");
  auto u = random_rows(9, 6, 11);
  auto permuted = u.index_select(0, torch::randperm(9, make_generator(12), torch::kLong));
  CHECK_TENSOR_CLOSE(run(rule, permuted).aggregate, run(rule, u).aggregate, 1e-15);
}

TEST_CASE("trimmed_mean: translation-equivariant") {
  auto rule = load<Aggregator>("trimmed_mean", "b = 2");
  auto u = random_rows(9, 5, 13);
  auto c = random_rows(1, 5, 14)[0] * 10;
  CHECK_TENSOR_CLOSE(run(rule, u + c).aggregate, run(rule, u).aggregate + c, 1e-12);
}

TEST_CASE("trimmed_mean: identical rows give that row") {
  auto rule = load<Aggregator>("trimmed_mean", "b = 1");
  auto row = random_rows(1, 7, 15);
  CHECK_TENSOR_CLOSE(run(rule, row.repeat({5, 1})).aggregate, row[0], 1e-15);
}

TEST_CASE("trimmed_mean: a Byzantine row of 1e9 moves it by less than the honest spread") {
  auto rule = load<Aggregator>("trimmed_mean", "b = 1");
  auto honest = random_rows(10, 8, 16);
  auto spread = std::get<0>(honest.max(0)) - std::get<0>(honest.min(0));
  auto attacked = torch::cat({honest, torch::full({1, 8}, 1e9, torch::kDouble)});
  auto moved = (run(rule, attacked).aggregate - run(rule, honest).aggregate).abs();
  CHECK((moved < spread).all().item<bool>());
}

TEST_CASE("trimmed_mean: NaN/Inf rows are dropped and count against the trim") {
  auto with_nan = torch::cat({five_rows(), matrix({{kNaN, 7}})});
  // b = 1, one bad row: b' = max(1 - 1, 0) = 0, the mean of the five finite rows = (22, -8.8).
  auto b1 = load<Aggregator>("trimmed_mean", "b = 1");
  CHECK_TENSOR_CLOSE(run(b1, with_nan).aggregate, vec({22, -8.8}), 1e-12);
  // b = 2, one bad row (n = 6 > 4): b' = 1 on the five finite rows = (3, 1) as above.
  auto b2 = load<Aggregator>("trimmed_mean", "b = 2");
  CHECK_TENSOR_CLOSE(run(b2, with_nan).aggregate, vec({3, 1}), 1e-15);
  auto none = matrix({{kNaN, 1}, {1, std::numeric_limits<double>::infinity()}, {kNaN, kNaN}});
  CHECK_TENSOR_CLOSE(run(b1, none).aggregate, vec({0, 0}), 0);
}
