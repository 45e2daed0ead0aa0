#include <limits>

#include "aggregation_helpers.hpp"

using bulwark::Aggregator;
using namespace bulwark::test;

namespace {
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();
}  // namespace

TEST_CASE("geometric_median: one smoothed Weiszfeld step from the mean (unweighted)") {
  auto rule = load<Aggregator>("geometric_median", "weighted = false\nmax_iterations = 1");
  // Points 0, 3, 4, alpha = 1/3 each. v0 = 7/3; distances 7/3, 2/3, 5/3;
  // beta = alpha / distance = 1/7, 1/2, 1/5; v1 = (3/2 + 4/5) / (1/7 + 1/2 + 1/5)
  //    = (23/10) / (59/70) = 161/59.
  auto g = run(rule, matrix({{0}, {3}, {4}})).aggregate;
  CHECK_TENSOR_CLOSE(g, vec({161.0 / 59}), 1e-14);
}

TEST_CASE("geometric_median: alpha follows the sample counts with weighted = true") {
  auto rule = load<Aggregator>("geometric_median", "max_iterations = 1");
  // Weights 1, 1, 2: alpha = 1/4, 1/4, 1/2. v0 = (0 + 3 + 8) / 4 = 11/4; distances 11/4, 1/4, 5/4;
  // beta = 1/11, 1, 2/5; v1 = (3 + 8/5) / (1/11 + 1 + 2/5) = (23/5) / (82/55) = 253/82.
  auto u = matrix({{0}, {3}, {4}});
  auto g = rule->aggregate(u, vec({1, 1, 2}), context()).aggregate;
  CHECK_TENSOR_CLOSE(g, vec({253.0 / 82}), 1e-14);
}

TEST_CASE("geometric_median: converges to the minimiser of the sum of distances") {
  auto rule = load<Aggregator>("geometric_median", "max_iterations = 500\ntolerance = 0");
  // In 1-D the geometric median of {0, 1, 10} is the middle point 1 (the mean is 11/3).
  CHECK_TENSOR_CLOSE(run(rule, matrix({{0}, {1}, {10}})).aggregate, vec({1}), 1e-4);
  // (0, 0) with weight 2 and (1, 0), (0, 1), (-1, 0) with weight 1: the unit vectors from (0, 0)
  // to the others sum to (0, 1), of norm 1 < 2, so (0, 0) is the minimiser. (The weighted mean is
  // (0, 0.2).)
  auto u = matrix({{0, 0}, {1, 0}, {0, 1}, {-1, 0}});
  CHECK_TENSOR_CLOSE(rule->aggregate(u, vec({2, 1, 1, 1}), context()).aggregate, vec({0, 0}), 1e-4);
}

TEST_CASE("geometric_median: invariant to the order of the rows") {
  auto rule = load<Aggregator>("geometric_median");
  auto u = random_rows(9, 6, 51);
  auto permuted = u.index_select(0, torch::randperm(9, make_generator(52), torch::kLong));
  CHECK_TENSOR_CLOSE(run(rule, permuted).aggregate, run(rule, u).aggregate, 1e-12);
}

TEST_CASE("geometric_median: translation-equivariant") {
  auto rule = load<Aggregator>("geometric_median");
  auto u = random_rows(9, 5, 53);
  auto c = random_rows(1, 5, 54)[0] * 10;
  CHECK_TENSOR_CLOSE(run(rule, u + c).aggregate, run(rule, u).aggregate + c, 1e-10);
}

TEST_CASE("geometric_median: identical rows give that row") {
  auto rule = load<Aggregator>("geometric_median");
  auto row = random_rows(1, 7, 55);
  CHECK_TENSOR_CLOSE(run(rule, row.repeat({5, 1})).aggregate, row[0], 1e-14);
}

TEST_CASE("geometric_median: rows with a non-finite norm are dropped") {
  auto rule = load<Aggregator>("geometric_median");
  auto finite = random_rows(6, 4, 56);
  auto u = torch::cat({finite.narrow(0, 0, 3), matrix({{kNaN, 0, 0, 0}}), finite.narrow(0, 3, 3),
                       matrix({{0, kInf, 0, 0}})});
  auto g = run(rule, u).aggregate;
  CHECK(torch::isfinite(g).all().item<bool>());
  CHECK_TENSOR_CLOSE(g, run(rule, finite).aggregate, 1e-14);
  CHECK_TENSOR_CLOSE(run(rule, matrix({{kNaN}, {kInf}})).aggregate, vec({0}), 0);
}

TEST_CASE("geometric_median: refusals") {
  CHECK_THROWS_WITH_AS(load<Aggregator>("geometric_median", "nu = 0"),
                       doctest::Contains("nu must be > 0"), bulwark::Error);
  CHECK_THROWS_WITH_AS(load<Aggregator>("geometric_median", "max_iterations = 0"),
                       doctest::Contains("max_iterations"), bulwark::Error);
  auto rule = load<Aggregator>("geometric_median");
  CHECK_THROWS_WITH_AS(rule->aggregate(matrix({{0}, {1}}), vec({1, -1}), context()),
                       doctest::Contains("row weights must be finite, non-negative"),
                       bulwark::Error);
}

TEST_CASE("geometric_median: start = \"zero\" with ByzFL's settings is ByzFL's GeometricMedian") {
  // ByzFL: z = 0, then T = 3 times beta_i = (1/n) / max(nu, ||u_i - z||), z = sum beta_i u_i / sum beta_i.
  auto rule = load<Aggregator>("geometric_median",
                               "start = \"zero\"\nnu = 0.1\nmax_iterations = 3\ntolerance = 0\nweighted = false");
  auto u = random_rows(7, 4, 31) + 2;
  auto z = torch::zeros({4}, torch::kDouble);
  for (int step = 0; step < 3; ++step) {
    auto beta = (1.0 / 7) / (u - z).norm(2, 1).clamp_min(0.1);
    z = (beta.unsqueeze(1) * u).sum(0) / beta.sum();
  }
  CHECK_TENSOR_CLOSE(run(rule, u).aggregate, z, 1e-14);
  // The default start (the mean) gives another point after 3 steps.
  auto from_mean = load<Aggregator>("geometric_median", "nu = 0.1\nmax_iterations = 3\ntolerance = 0\nweighted = false");
  CHECK_FALSE(run(from_mean, u).aggregate.allclose(z, 0, 1e-10));
}
