#include <limits>

#include "aggregation_helpers.hpp"

using bulwark::Aggregator;
using namespace bulwark::test;

namespace {
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();
}  // namespace

TEST_CASE("median: odd n takes the middle value of every coordinate") {
  auto rule = load<Aggregator>("median");
  // Column 0: {1, 3, 2} sorted 1, 2, 3 -> 2.  Column 1: {10, -2, 7} sorted -2, 7, 10 -> 7.
  auto g = run(rule, matrix({{1, 10}, {3, -2}, {2, 7}})).aggregate;
  CHECK_TENSOR_CLOSE(g, vec({2, 7}), 0);
}

TEST_CASE("median: even n averages the two middle values") {
  auto rule = load<Aggregator>("median");
  // Column 0: {1, 4, 2, 8} sorted 1, 2, 4, 8 -> (2 + 4) / 2 = 3.
  // Column 1: {10, -2, 7, 0} sorted -2, 0, 7, 10 -> (0 + 7) / 2 = 3.5 (torch.median alone: 0).
  auto g = run(rule, matrix({{1, 10}, {4, -2}, {2, 7}, {8, 0}})).aggregate;
  CHECK_TENSOR_CLOSE(g, vec({3, 3.5}), 0);
}

TEST_CASE("median: keeps the dtype and reports no flags") {
  auto rule = load<Aggregator>("median");
  auto result = run(rule, random_rows(5, 3, 1).to(torch::kFloat32));
  CHECK((result.aggregate.scalar_type() == torch::kFloat32));
  CHECK((result.aggregate.sizes() == torch::IntArrayRef({3})));
  CHECK_FALSE(result.reports_flags);
}

TEST_CASE("median: invariant to the order of the rows (odd and even n)") {
  auto rule = load<Aggregator>("median");
  for (std::int64_t n : {9, 8}) {
    auto u = random_rows(n, 6, 2);
    auto permuted = u.index_select(0, torch::randperm(n, make_generator(3), torch::kLong));
    CHECK_TENSOR_CLOSE(run(rule, permuted).aggregate, run(rule, u).aggregate, 0);
  }
}

TEST_CASE("median: translation-equivariant, median(U + c) = median(U) + c") {
  auto rule = load<Aggregator>("median");
  auto u = random_rows(8, 5, 4);
  auto c = random_rows(1, 5, 5)[0] * 10;
  CHECK_TENSOR_CLOSE(run(rule, u + c).aggregate, run(rule, u).aggregate + c, 1e-12);
}

TEST_CASE("median: identical rows give that row") {
  auto rule = load<Aggregator>("median");
  auto row = random_rows(1, 7, 6);
  CHECK_TENSOR_CLOSE(run(rule, row.repeat({6, 1})).aggregate, row[0], 0);
}

TEST_CASE("median: a Byzantine row of 1e9 moves it by less than the honest spread") {
  auto rule = load<Aggregator>("median");
  auto honest = random_rows(10, 8, 7);
  auto spread = std::get<0>(honest.max(0)) - std::get<0>(honest.min(0));
  auto attacked = torch::cat({honest, torch::full({1, 8}, 1e9, torch::kDouble)});
  auto moved = (run(rule, attacked).aggregate - run(rule, honest).aggregate).abs();
  CHECK((moved < spread).all().item<bool>());
}

TEST_CASE("median: rows with NaN or Inf are dropped, not propagated") {
  auto rule = load<Aggregator>("median");
  // Finite rows {1, 10}, {3, -2}, {2, 7}: medians 2 and 7 as in the odd-n case above.
  auto g = run(rule, matrix({{1, 10}, {kNaN, 0}, {3, -2}, {kInf, -kInf}, {2, 7}})).aggregate;
  CHECK_TENSOR_CLOSE(g, vec({2, 7}), 0);
  // No finite row at all: no step.
  CHECK_TENSOR_CLOSE(run(rule, matrix({{kNaN, 1}, {2, kInf}})).aggregate, vec({0, 0}), 0);
}

TEST_CASE("median: refuses something that is not an update matrix") {
  auto rule = load<Aggregator>("median");
  CHECK_THROWS_WITH_AS(rule->aggregate(vec({1, 2, 3}), vec({1}), context()),
                       doctest::Contains("expected the update matrix U[n, d]"), bulwark::Error);
}
