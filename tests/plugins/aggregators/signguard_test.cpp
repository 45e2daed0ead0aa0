#include <algorithm>
#include <limits>

#include "aggregation_helpers.hpp"

using bulwark::Aggregator;
using namespace bulwark::test;

namespace {

/// 12 honest rows of mixed signs, then 4 attackers whose entries are all positive (a sign pattern
/// no honest row has) at honest-sized norms.
torch::Tensor honest_then_attackers() {
  auto honest = random_rows(12, 200, 41);
  auto attackers = torch::full({4, 200}, 1.0, torch::kDouble) + 0.01 * random_rows(4, 200, 42).abs();
  return torch::cat({honest, attackers});
}

/// The mean of `rows` clipped to the lower median of every row's norm.
torch::Tensor clipped_mean(const torch::Tensor& all, const torch::Tensor& rows) {
  const auto sorted = std::get<0>(all.norm(2, 1).sort());
  const auto clip = sorted[(all.size(0) - 1) / 2].item<double>();
  return (rows * (clip / rows.norm(2, 1, true)).clamp_max(1.0)).mean(0);
}

std::vector<std::int64_t> range(std::int64_t from, std::int64_t to) {
  std::vector<std::int64_t> out;
  for (auto i = from; i < to; ++i) out.push_back(i);
  return out;
}

}  // namespace

TEST_CASE("signguard: a sign pattern of its own puts the attackers outside the main cluster") {
  const auto u = honest_then_attackers();
  auto result = run(load<Aggregator>("signguard", "fraction = 1.0"), u);
  CHECK(result.reports_flags);
  CHECK(result.flagged_rows == range(12, 16));
  CHECK_TENSOR_CLOSE(result.aggregate, clipped_mean(u, u.narrow(0, 0, 12)), 1e-12);
}

TEST_CASE("signguard: the norm band drops rows far below or above the median norm") {
  auto u = honest_then_attackers();
  u[0].mul_(10);    // norm about 10 M: above 3 M
  u[1].mul_(0.05);  // below 0.1 M
  auto result = run(load<Aggregator>("signguard", "fraction = 1.0"), u);
  auto expected = range(2, 12);
  CHECK(result.flagged_rows == std::vector<std::int64_t>{0, 1, 12, 13, 14, 15});
  CHECK_TENSOR_CLOSE(result.aggregate, clipped_mean(u, u.narrow(0, 2, 10)), 1e-12);
  // A wider band keeps both.
  auto wide = run(load<Aggregator>("signguard", "fraction = 1.0\nlower = 0.01\nupper = 20"), u);
  CHECK(wide.flagged_rows == range(12, 16));
}

TEST_CASE("signguard: the coordinate window comes from the seeded stream, NaN entries count as 0") {
  auto u = honest_then_attackers();
  auto rule = load<Aggregator>("signguard", "");
  auto first = run(rule, u, context(0, 3));
  CHECK_TENSOR_CLOSE(run(rule, u, context(0, 3)).aggregate, first.aggregate, 0);
  // Signs over 20 coordinates are noisy: an honest row may fall outside the cluster, no attacker inside.
  const auto attackers = range(12, 16);
  CHECK(std::includes(first.flagged_rows.begin(), first.flagged_rows.end(), attackers.begin(), attackers.end()));
  auto no_generator = context();
  no_generator.generator = at::Generator();
  CHECK_THROWS_WITH_AS(run(rule, u, no_generator), doctest::Contains("generator"), bulwark::Error);

  const double nan = std::numeric_limits<double>::quiet_NaN();
  auto with_nan = u.clone();
  with_nan[2][5] = nan;
  auto zeroed = u.clone();
  zeroed[2][5] = 0.0;
  auto full = load<Aggregator>("signguard", "fraction = 1.0");
  CHECK_TENSOR_CLOSE(run(full, with_nan).aggregate, run(full, zeroed).aggregate, 0);
  // A row with +Inf has an infinite norm: out of the band, flagged, the aggregate finite.
  auto with_inf = u.clone();
  with_inf[3][0] = std::numeric_limits<double>::infinity();
  auto result = run(full, with_inf);
  CHECK(std::find(result.flagged_rows.begin(), result.flagged_rows.end(), 3) != result.flagged_rows.end());
  CHECK(torch::isfinite(result.aggregate).all().item<bool>());
}
