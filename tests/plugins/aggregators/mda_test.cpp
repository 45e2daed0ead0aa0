#include <algorithm>
#include <limits>
#include <tuple>

#include "aggregation_helpers.hpp"

using bulwark::Aggregator;
using namespace bulwark::test;

namespace {

// ByzFL's definition verbatim in float64: every (n − f)-subset in lexicographic order, the first
// one of strictly smallest diameter wins.
std::vector<std::int64_t> brute_force_subset(const torch::Tensor& u, std::int64_t f) {
  const auto n = u.size(0), k = n - f;
  std::vector<std::int64_t> subset(static_cast<std::size_t>(k)), best;
  for (std::int64_t i = 0; i < k; ++i) subset[static_cast<std::size_t>(i)] = i;
  double best_diameter = std::numeric_limits<double>::infinity();
  while (true) {
    double diameter = 0;
    for (auto i : subset) {
      for (auto j : subset) diameter = std::max(diameter, (u[i] - u[j]).pow(2).sum().item<double>());
    }
    if (diameter < best_diameter) best_diameter = diameter, best = subset;
    if (!next_subset(subset, n)) break;
  }
  return best;
}

}  // namespace

TEST_CASE("mda: ByzFL's documented example and a hand-checked case") {
  // ByzFL MDA(f = 1) of [[1,2,3],[4,5,6],[7,8,9]] = [2.5, 3.5, 4.5]: {0, 1} and {1, 2} have the same
  // diameter; {0, 1} comes first.
  auto rule = load<Aggregator>("mda", "f = 1");
  auto byzfl = run(rule, matrix({{1, 2, 3}, {4, 5, 6}, {7, 8, 9}}));
  CHECK_TENSOR_CLOSE(byzfl.aggregate, vec({2.5, 3.5, 4.5}), 0);
  CHECK(byzfl.flagged_rows == std::vector<std::int64_t>{2});
  // 0 1 2 10 11, f = 2: {0, 1, 2} has diameter 2, any set with 10 or 11 more -> mean 1.
  auto by_hand = run(load<Aggregator>("mda", "f = 2"), matrix({{0}, {10}, {1}, {11}, {2}}));
  CHECK_TENSOR_CLOSE(by_hand.aggregate, vec({1}), 1e-15);
  CHECK(by_hand.flagged_rows == std::vector<std::int64_t>{1, 3});
}

TEST_CASE("mda: equals the subset enumeration on random and tied matrices") {
  for (const auto& [n, f, d, seed] : std::vector<std::tuple<std::int64_t, std::int64_t, std::int64_t, std::uint64_t>>{
           {5, 2, 3, 1}, {7, 3, 2, 2}, {9, 4, 5, 3}, {10, 3, 1, 4}, {11, 5, 4, 5}}) {
    CAPTURE(n);
    CAPTURE(f);
    auto rule = load<Aggregator>("mda", "f = " + std::to_string(f));
    auto u = random_rows(n, d, seed);
    const auto kept = brute_force_subset(u, f);
    auto result = run(rule, u);
    CHECK(result.flagged_rows == rows_outside(kept, n));
    CHECK_TENSOR_CLOSE(result.aggregate, u.index_select(0, torch::tensor(kept)).mean(0), 1e-14);
    // Permuting rows permutes the choice: the kept rows are the same vectors.
    auto order = torch::randperm(n, make_generator(seed + 100), torch::kLong);
    CHECK_TENSOR_CLOSE(run(rule, u.index_select(0, order)).aggregate, result.aggregate, 1e-14);
  }
  // Integer lattice points: many equal distances, so the lexicographic tie rule decides.
  for (std::uint64_t seed = 10; seed < 16; ++seed) {
    CAPTURE(seed);
    auto u = torch::randint(0, 3, {9, 2}, make_generator(seed), torch::kDouble);
    const auto kept = brute_force_subset(u, 3);
    auto result = run(load<Aggregator>("mda", "f = 3"), u);
    CHECK(result.flagged_rows == rows_outside(kept, 9));
  }
}

TEST_CASE("mda: exact at n = 50, f = 10 without enumerating C(50, 10) subsets") {
  // 40 honest rows near 0 (diameter about 1) and 10 attackers spread on a sphere of radius 3: the optimal subset is
  // the honest one, found in well under a second (ByzFL's loop would visit 1.03e10 subsets).
  auto honest = random_rows(40, 20, 7) * 0.1;
  auto attackers = random_rows(10, 20, 8);
  attackers = attackers / attackers.norm(2, 1, true) * 3;
  auto u = torch::cat({attackers, honest});
  auto result = run(load<Aggregator>("mda", "f = 10"), u);
  CHECK(result.flagged_rows == std::vector<std::int64_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
  CHECK_TENSOR_CLOSE(result.aggregate, honest.mean(0), 1e-14);
}

TEST_CASE("mda: NaN rows are never kept, n <= 2f is refused, f = -1 takes the declared bound") {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  auto rule = load<Aggregator>("mda", "f = 1");
  auto result = run(rule, matrix({{0}, {nan}, {1}, {5}}));
  CHECK_TENSOR_CLOSE(result.aggregate, vec({2}), 1e-15);  // the three finite rows
  CHECK(result.flagged_rows == std::vector<std::int64_t>{1});
  CHECK_THROWS_WITH_AS(run(rule, matrix({{0}, {1}})), doctest::Contains("mda: needs n > 2f"), bulwark::Error);
  auto u = random_rows(7, 3, 21);
  CHECK_TENSOR_CLOSE(run(load<Aggregator>("mda", ""), u, context(3)).aggregate,
                     run(load<Aggregator>("mda", "f = 3"), u).aggregate, 0);
  CHECK((run(rule, matrix({{1}, {2}, {3}}).to(torch::kFloat)).aggregate.scalar_type() == torch::kFloat));
}
