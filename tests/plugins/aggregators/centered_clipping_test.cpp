#include <limits>

#include "aggregation_helpers.hpp"

using bulwark::Aggregator;
using namespace bulwark::test;

namespace {
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

torch::Tensor round0_updates() { return matrix({{3, 4}, {0, 0.5}, {-0.6, 0.8}}); }
torch::Tensor round1_updates() { return matrix({{0, 2.7}, {3, 0.7}, {0, 0.7}}); }
}  // namespace

TEST_CASE("centered_clipping: round 0 clips around zero") {
  auto rule = load<Aggregator>("centered_clipping", "tau = 1");
  // v0 = 0. Norms 5, 0.5, 1 -> scales 1/5, 1, 1 -> (0.6, 0.8), (0, 0.5), (-0.6, 0.8).
  // v1 = (0 + 0 - 0.6 + 0.6, 0.8 + 0.5 + 0.8) / 3 = (0, 0.7).
  auto result = run(rule, round0_updates(), context(0, /*round=*/0));
  CHECK_TENSOR_CLOSE(result.aggregate, vec({0, 0.7}), 1e-15);
  CHECK_FALSE(result.reports_flags);
}

TEST_CASE("centered_clipping: the next round is centred on the previous aggregate") {
  auto rule = load<Aggregator>("centered_clipping", "tau = 1");
  run(rule, round0_updates(), context(0, /*round=*/0));
  // v0 = (0, 0.7). Differences (0, 2), (3, 0), (0, 0); norms 2, 3, 0 -> scales 1/2, 1/3, 1
  // -> (0, 1), (1, 0), (0, 0). v1 = (0, 0.7) + (1, 1) / 3 = (1/3, 0.7 + 1/3).
  auto g = run(rule, round1_updates(), context(0, /*round=*/1)).aggregate;
  CHECK_TENSOR_CLOSE(g, vec({1.0 / 3, 0.7 + 1.0 / 3}), 1e-15);
}

TEST_CASE("centered_clipping: L iterations re-centre each time") {
  auto rule = load<Aggregator>("centered_clipping", "tau = 1\niterations = 2");
  // Iteration 1 as in round 0 above: v1 = (0, 0.7).
  // Iteration 2: differences (3, 3.3), (0, -0.2), (-0.6, 0.1); norms sqrt(19.89) = 4.45982...,
  // 0.2, sqrt(0.37) = 0.60828... -> scales 1/4.45982, 1, 1.
  // v2 = (0, 0.7) + ((3, 3.3) / sqrt(19.89) + (0, -0.2) + (-0.6, 0.1)) / 3.
  const double s = std::sqrt(19.89);
  auto g = run(rule, round0_updates(), context(0, 0)).aggregate;
  CHECK_TENSOR_CLOSE(g, vec({(3 / s - 0.6) / 3, 0.7 + (3.3 / s - 0.1) / 3}), 1e-14);
}

TEST_CASE("centered_clipping: save_state/load_state resume exactly") {
  auto first = load<Aggregator>("centered_clipping", "tau = 1");
  auto g0 = run(first, round0_updates(), context(0, 0)).aggregate;
  bulwark::StateDict state;
  first->save_state(state);
  REQUIRE(state.count("previous") == 1);
  CHECK_TENSOR_CLOSE(state.at("previous"), g0, 0);

  auto resumed = load<Aggregator>("centered_clipping", "tau = 1");
  resumed->load_state(state);
  CHECK_TENSOR_CLOSE(run(resumed, round1_updates(), context(0, 1)).aggregate,
                     run(first, round1_updates(), context(0, 1)).aggregate, 0);
  // Without the state, round 1 would start from zero and differ.
  auto fresh = load<Aggregator>("centered_clipping", "tau = 1");
  CHECK_FALSE(torch::allclose(run(fresh, round1_updates(), context(0, 1)).aggregate,
                              run(resumed, round1_updates(), context(0, 1)).aggregate));
}

TEST_CASE("centered_clipping: round 0 always starts from zero") {
  auto rule = load<Aggregator>("centered_clipping", "tau = 1");
  run(rule, round1_updates(), context(0, 0));
  CHECK_TENSOR_CLOSE(run(rule, round0_updates(), context(0, 0)).aggregate, vec({0, 0.7}), 1e-15);
}

TEST_CASE("centered_clipping: one row moves the centre by at most tau / n per iteration") {
  auto rule = load<Aggregator>("centered_clipping", "tau = 0.5");
  auto honest = random_rows(9, 8, 61) * 0.01;
  auto attacked = torch::cat({honest, torch::full({1, 8}, 1e9, torch::kDouble)});
  auto with = run(rule, attacked).aggregate;
  auto without = run(load<Aggregator>("centered_clipping", "tau = 0.5"), honest).aggregate;
  // Honest rows are inside the ball (norm < 0.5), so both are honest means plus at most
  // 0.5 / 10 from the Byzantine row; and the honest mean changes from 1/9 to 1/10 of the sum.
  auto honest_shift = (honest.sum(0) / 10 - honest.sum(0) / 9).norm().item<double>();
  CHECK((with - without).norm().item<double>() <= 0.5 / 10 + honest_shift + 1e-12);
}

TEST_CASE("centered_clipping: invariant to the order of the rows") {
  auto rule = load<Aggregator>("centered_clipping", "tau = 1\niterations = 3");
  auto u = random_rows(9, 6, 62);
  auto permuted = u.index_select(0, torch::randperm(9, make_generator(63), torch::kLong));
  auto a = run(rule, permuted, context(0, 0)).aggregate;
  auto b = run(rule, u, context(0, 0)).aggregate;
  CHECK_TENSOR_CLOSE(a, b, 1e-14);
}

TEST_CASE("centered_clipping: identical rows give that row when tau covers it") {
  auto rule = load<Aggregator>("centered_clipping", "tau = 1e6");
  auto row = random_rows(1, 7, 64);
  CHECK_TENSOR_CLOSE(run(rule, row.repeat({5, 1})).aggregate, row[0], 1e-14);
}

TEST_CASE("centered_clipping: NaN rows are dropped") {
  auto rule = load<Aggregator>("centered_clipping", "tau = 1");
  // Same as round 0 above over the three finite rows (1/3, not 1/4): (0, 0.7).
  auto u = torch::cat({round0_updates(), matrix({{kNaN, 1}})});
  CHECK_TENSOR_CLOSE(run(rule, u, context(0, 0)).aggregate, vec({0, 0.7}), 1e-15);
  // No finite row: the centre stays where it was.
  CHECK_TENSOR_CLOSE(run(rule, matrix({{kNaN, 0}}), context(0, 1)).aggregate, vec({0, 0.7}),
                     1e-15);
}

TEST_CASE("centered_clipping: refusals") {
  CHECK_THROWS_WITH_AS(load<Aggregator>("centered_clipping", "tau = 0"),
                       doctest::Contains("tau must be > 0"), bulwark::Error);
  CHECK_THROWS_WITH_AS(load<Aggregator>("centered_clipping", "iterations = 0"),
                       doctest::Contains("iterations"), bulwark::Error);
  auto rule = load<Aggregator>("centered_clipping", "tau = 1");
  run(rule, round0_updates(), context(0, 0));
  CHECK_THROWS_WITH_AS(run(rule, matrix({{1, 2, 3}}), context(0, 1)),
                       doctest::Contains("the previous aggregate has 2 parameters"),
                       bulwark::Error);
}
