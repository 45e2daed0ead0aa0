#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "aggregation_helpers.hpp"

using bulwark::Aggregator;
using namespace bulwark::test;

namespace {

/// The authors' weighting, step by step in plain doubles: cosine matrix minus the identity,
/// pardoning, 1 − max, rescale, 1 → 0.99, logit + 0.5, clip.
std::vector<double> reference_weights(const torch::Tensor& histories) {
  const auto m = histories.size(0);
  std::vector<std::vector<double>> cs(static_cast<std::size_t>(m), std::vector<double>(static_cast<std::size_t>(m)));
  for (std::int64_t i = 0; i < m; ++i) {
    for (std::int64_t j = 0; j < m; ++j) {
      const auto dot = (histories[i] * histories[j]).sum().item<double>();
      const auto cosine = dot / (histories[i].norm().item<double>() * histories[j].norm().item<double>());
      cs[i][j] = i == j ? 0.0 : cosine;
    }
  }
  std::vector<double> maxcs(static_cast<std::size_t>(m));
  for (std::int64_t i = 0; i < m; ++i) maxcs[i] = *std::max_element(cs[i].begin(), cs[i].end());
  for (std::int64_t i = 0; i < m; ++i) {
    for (std::int64_t j = 0; j < m; ++j) {
      if (i != j && maxcs[i] < maxcs[j]) cs[i][j] *= maxcs[i] / maxcs[j];
    }
  }
  std::vector<double> wv(static_cast<std::size_t>(m));
  for (std::int64_t i = 0; i < m; ++i) wv[i] = std::clamp(1 - *std::max_element(cs[i].begin(), cs[i].end()), 0.0, 1.0);
  const auto top = *std::max_element(wv.begin(), wv.end());
  for (auto& w : wv) {
    w /= top;
    if (w == 1) w = 0.99;
    w = std::log(w / (1 - w)) + 0.5;
    if (std::isinf(w) || w > 1) w = 1;
    if (w < 0) w = 0;
  }
  return wv;
}

bulwark::AggregationContext round_of(std::vector<std::int64_t> clients, std::int64_t round) {
  auto c = context(0, round);
  c.client_ids = std::move(clients);
  return c;
}

}  // namespace

TEST_CASE("foolsgold: weights from the summed histories equal the authors' computation, g = sum alpha_i u_i") {
  // Two rounds whose sums are histories where the logit lands strictly inside (0, 1) for one client.
  const double a = 0.6;
  auto histories = matrix({{1, 0, 0}, {std::cos(a), std::sin(a), 0}, {0, 0.3, 1}, {0.2, 1, 0.1}});
  auto u0 = random_rows(4, 3, 1), u1 = histories - u0;
  auto rule = load<Aggregator>("foolsgold", "");
  run(rule, u0, round_of({0, 1, 2, 3}, 0));
  auto result = run(rule, u1, round_of({0, 1, 2, 3}, 1));

  const auto alpha = torch::tensor(reference_weights(u0 + u1), torch::kDouble);
  CHECK(alpha.gt(0).logical_and(alpha.lt(1)).any().item<bool>());  // a case where the logit matters
  CHECK_TENSOR_CLOSE(result.aggregate, torch::matmul(alpha, u1), 1e-12);
  std::vector<std::int64_t> zero;
  for (std::int64_t i = 0; i < 4; ++i) {
    if (alpha[i].item<double>() == 0) zero.push_back(i);
  }
  CHECK(zero.size() == 2);
  CHECK(result.reports_flags);
  CHECK(result.flagged_rows == zero);

  auto normalized = load<Aggregator>("foolsgold", "normalize = true");
  run(normalized, u0, round_of({0, 1, 2, 3}, 0));
  CHECK_TENSOR_CLOSE(run(normalized, u1, round_of({0, 1, 2, 3}, 1)).aggregate,
                     torch::matmul(alpha, u1) / alpha.sum(), 1e-12);
}

TEST_CASE("foolsgold: identical sybils get weight 0 and are flagged, honest rows keep weight 1") {
  auto honest = random_rows(4, 30, 7);
  auto sybil = random_rows(1, 30, 8).repeat({3, 1});
  auto u = torch::cat({honest, sybil});
  auto result = run(load<Aggregator>("foolsgold", ""), u, round_of({10, 11, 12, 13, 14, 15, 16}, 0));
  CHECK(result.flagged_rows == std::vector<std::int64_t>{4, 5, 6});
  const auto alpha = torch::tensor(reference_weights(u), torch::kDouble);
  CHECK_TENSOR_CLOSE(result.aggregate, torch::matmul(alpha, u), 1e-12);
  // Every history identical: every alpha is 0 and there is no step.
  auto same = run(load<Aggregator>("foolsgold", ""), sybil, round_of({0, 1, 2}, 0));
  CHECK_TENSOR_CLOSE(same.aggregate, torch::zeros({30}, torch::kDouble), 0);
  CHECK(same.flagged_rows == std::vector<std::int64_t>{0, 1, 2});
}

TEST_CASE("foolsgold: histories follow client ids, not rows, and survive save_state/load_state") {
  auto u0 = random_rows(5, 12, 21), u1 = random_rows(5, 12, 22);
  auto rule = load<Aggregator>("foolsgold", "");
  run(rule, u0, round_of({3, 9, 4, 7, 1}, 0));
  bulwark::StateDict state;
  rule->save_state(state);
  CHECK(state.size() == 5);
  REQUIRE(state.count("history/9") == 1);
  CHECK_TENSOR_CLOSE(state.at("history/9"), u0[1], 0);

  // Round 1 with the rows in another order: the same clients, so the same aggregate.
  const auto order = torch::tensor({4, 2, 0, 3, 1}, torch::kLong);
  auto expected = run(rule, u1, round_of({3, 9, 4, 7, 1}, 1)).aggregate;
  auto resumed = load<Aggregator>("foolsgold", "");
  resumed->load_state(state);
  auto permuted = run(resumed, u1.index_select(0, order), round_of({1, 4, 3, 7, 9}, 1)).aggregate;
  CHECK_TENSOR_CLOSE(permuted, expected, 1e-12);
  // Without the history, round 1 compares this round's updates alone and differs.
  auto fresh = load<Aggregator>("foolsgold", "");
  CHECK_FALSE(torch::allclose(run(fresh, u1, round_of({3, 9, 4, 7, 1}, 1)).aggregate, expected));

  bulwark::StateDict bad{{"history/x", u0[0]}};
  CHECK_THROWS_WITH_AS(fresh->load_state(bad), doctest::Contains("client id"), bulwark::Error);
}

TEST_CASE("foolsgold: a NaN row gets weight 0 and stays out of its client's history") {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  auto u = torch::cat({random_rows(4, 3, 31), matrix({{nan, 0, 1}})});
  auto rule = load<Aggregator>("foolsgold", "");
  auto result = run(rule, u, round_of({0, 1, 2, 3, 4}, 0));
  CHECK(torch::isfinite(result.aggregate).all().item<bool>());
  CHECK(std::find(result.flagged_rows.begin(), result.flagged_rows.end(), 4) != result.flagged_rows.end());
  bulwark::StateDict state;
  rule->save_state(state);
  CHECK(state.count("history/4") == 0);
  CHECK_THROWS_WITH_AS(run(rule, u, context()), doctest::Contains("client_ids"), bulwark::Error);
}
