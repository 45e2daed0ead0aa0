// Min-Max, Min-Sum (Shejwalkar & Houmansadr) and Fang's trimmed-mean attack: known answers on
// hand-checkable matrices, and the published constraints on random ones.
#include <doctest/doctest.h>

#include <cmath>

#include "attack_helpers.hpp"

using namespace bulwark;
using test::matrix;
using test::vec;

namespace {

/// Squared distances of `row` to every row of `rows`.
torch::Tensor squared_distances(const torch::Tensor& rows, const torch::Tensor& row) {
  return (rows - row.unsqueeze(0)).pow(2).sum(1);
}

/// Three honest rows (0,0), (4,0), (0,4) and one malicious row (index 3). Mean μ = (4/3, 4/3).
torch::Tensor triangle() { return matrix({{0, 0}, {4, 0}, {0, 4}, {9, 9}}); }

}  // namespace

TEST_CASE("minmax: unit-vector direction, the largest gamma within the honest diameter") {
  auto attack = test::load<Attack>("minmax");
  CHECK(attack->omniscient());
  auto updates = triangle();
  attack->poison_updates(updates, test::full_context(4, {3}));
  // p = -(1, 1)/sqrt(2), so u_mal = t (1, 1) with t = 4/3 - gamma/sqrt(2). Largest squared honest
  // distance: |(4,0) - (0,4)|^2 = 32. The farthest honest row from u_mal is (4,0) (or (0,4)):
  // (t - 4)^2 + t^2 <= 32  <=>  t^2 - 4t - 8 <= 0  <=>  t >= 2 - 2 sqrt(3) = -1.4641016151.
  // (At that t, |u_mal - (0,0)|^2 = 2 t^2 = 4.29 <= 32.) gamma* = sqrt(2) (4/3 - t) = 3.9561704440.
  const double t = 2 - 2 * std::sqrt(3.0);
  CHECK_TENSOR_CLOSE(updates[3], vec({t, t}), 1e-4);
  const double gamma = (vec({4.0 / 3, 4.0 / 3}) - updates[3]).norm().item<double>();
  CHECK(gamma == doctest::Approx(3.9561704440).epsilon(1e-5));
  CHECK(gamma <= 3.9561704440 + 1e-12);  // the search never returns an infeasible gamma
}

TEST_CASE("minmax and minsum meet their constraints with a maximal gamma, for every direction") {
  const auto honest = torch::randn({6, 10}, make_generator(11), torch::kDouble).add_(1.0);
  const auto mean = honest.mean(0);
  const auto pairwise = torch::cdist(honest, honest).pow(2);
  const double diameter = pairwise.max().item<double>();
  const auto sums = pairwise.sum(1);
  for (const char* direction : {"unit_vec", "sign", "std"}) {
    INFO("direction = " << direction);
    auto p = std::string(direction) == "unit_vec" ? -mean / mean.norm()
             : std::string(direction) == "sign"   ? -mean.sign()
                                                  : -honest.std(0);
    for (const char* rule : {"minmax", "minsum"}) {
      INFO("attack = " << rule);
      auto attack = test::load<Attack>(rule, std::string("direction = \"") + direction + "\"");
      auto updates = torch::cat({honest, torch::zeros({2, 10}, torch::kDouble)});
      attack->poison_updates(updates, test::full_context(8, {6, 7}));
      const auto malicious = updates[6];
      CHECK(torch::equal(updates[6], updates[7]));  // all malicious rows send the same vector
      // u_mal = mean + gamma p: recover gamma along p.
      const double gamma = (malicious - mean).dot(p).item<double>() / p.dot(p).item<double>();
      CHECK_TENSOR_CLOSE(malicious, mean + gamma * p, 1e-9);
      CHECK(gamma > 0);
      auto violates = [&](double g) {
        auto candidate = mean + g * p;
        return std::string(rule) == "minmax"
                   ? squared_distances(honest, candidate).max().item<double>() > diameter
                   : squared_distances(honest, candidate).sum().item<double>() > sums.max().item<double>();
      };
      CHECK_FALSE(violates(gamma));
      CHECK(violates(gamma + 1e-4));  // maximal: the binary search tolerance is 1e-5
    }
  }
}

TEST_CASE("minsum: the summed squared distance bound, paper (max) and authors' code (min)") {
  // Honest sums of squared distances: (0,0): 16 + 16 = 32; (4,0): 16 + 32 = 48; (0,4): 48.
  // sum_i |u_mal - u_i|^2 = sum_i |mu - u_i|^2 + 3 gamma^2 (|p| = 1, the cross term is 0) and
  // sum_i |mu - u_i|^2 = 32/9 + 80/9 + 80/9 = 64/3.
  SUBCASE("bound = max: 64/3 + 3 gamma^2 <= 48, gamma* = sqrt(80)/3 = 2.9814239700") {
    auto attack = test::load<Attack>("minsum");
    auto updates = triangle();
    attack->poison_updates(updates, test::full_context(4, {3}));
    // u_mal = (4/3 - gamma*/sqrt(2)) (1, 1) = -0.7748517734 (1, 1)
    CHECK_TENSOR_CLOSE(updates[3], vec({-0.7748517734, -0.7748517734}), 1e-4);
  }
  SUBCASE("bound = min: 64/3 + 3 gamma^2 <= 32, gamma* = sqrt(32)/3 = 4 sqrt(2)/3") {
    auto attack = test::load<Attack>("minsum", "bound = \"min\"");
    auto updates = triangle();
    attack->poison_updates(updates, test::full_context(4, {3}));
    // u_mal = (4/3 - (4 sqrt(2)/3)/sqrt(2)) (1, 1) = (0, 0)
    CHECK_TENSOR_CLOSE(updates[3], vec({0, 0}), 1e-4);
  }
}

TEST_CASE("minmax partial knowledge works from the attackers' own updates only") {
  auto attack = test::load<Attack>("minmax", "knowledge = \"partial\"");
  CHECK_FALSE(attack->omniscient());
  // Own rows (0,0), (4,0), (0,4) play the honest ones: the triangle answer again, in all three rows.
  auto own = matrix({{0, 0}, {4, 0}, {0, 4}});
  attack->poison_updates(own, test::own_context(3, 10, 3));
  const double t = 2 - 2 * std::sqrt(3.0);
  CHECK_TENSOR_CLOSE(own, matrix({{t, t}, {t, t}, {t, t}}), 1e-4);
}

TEST_CASE("fang: each coordinate beyond the benign extreme opposite to the mean direction") {
  auto attack = test::load<Attack>("fang");
  CHECK(attack->omniscient());
  // Rows 0-2 honest, rows 3-4 the attackers' (their pre-attack updates). Per column:
  //   0: honest {1, 3, 2}, sum of all rows 6 > 0, w_min = 1 > 0   -> [w_min/2, w_min]   = [0.5, 1]
  //   1: honest {-1,-2,-3}, sum -6,               w_max = -1 <= 0 -> [w_max, w_max/2]   = [-1, -0.5]
  //   2: honest {2,-1, 1}, sum 2 > 0,             w_min = -1 <= 0 -> [2 w_min, w_min]   = [-2, -1]
  //   3: honest {-2, 1,-1}, sum -2,               w_max = 1 > 0   -> [w_max, 2 w_max]   = [1, 2]
  //   4: honest {1, 1,-1} (sum 1) but the attackers' own -3 make the pre-attack sum -2:
  //                                               w_max = 1 > 0   -> [1, 2]
  auto updates = matrix({{1, -1, 2, -2, 1}, {3, -2, -1, 1, 1}, {2, -3, 1, -1, -1}, {0, 0, 0, 0, -3}, {0, 0, 0, 0, 0}});
  const auto honest = updates.slice(0, 0, 3).clone();
  attack->poison_updates(updates, test::full_context(5, {3, 4}));
  const auto low = vec({0.5, -1, -2, 1, 1}), high = vec({1, -0.5, -1, 2, 2});
  for (std::int64_t row : {3, 4}) {
    INFO("row " << row << ": " << test::show(updates[row]));
    CHECK(updates[row].ge(low).all().item<bool>());
    CHECK(updates[row].le(high).all().item<bool>());
  }
  CHECK_FALSE(torch::equal(updates[3], updates[4]));  // each malicious row draws its own values
  CHECK(torch::equal(updates.slice(0, 0, 3), honest));

  SUBCASE("b = 3 widens the intervals by the paper's factor") {
    auto wide = test::load<Attack>("fang", "b = 3.0");
    auto u = matrix({{1, -1}, {3, -2}, {2, -3}, {0, 0}});
    wide->poison_updates(u, test::full_context(4, {3}));
    // column 0: [1/3, 1]; column 1: [-1, -1/3]
    CHECK(u[3][0].item<double>() >= 1.0 / 3);
    CHECK(u[3][0].item<double>() <= 1.0);
    CHECK(u[3][1].item<double>() >= -1.0);
    CHECK(u[3][1].item<double>() <= -1.0 / 3);
  }
}

TEST_CASE("fang moves the coordinate-wise median against the honest direction") {
  // 7 honest rows around +1 in every coordinate, 3 attackers: the median of the attacked matrix is
  // pushed below the honest median (the property the paper's attack is built for).
  auto generator = make_generator(5);
  auto honest = torch::randn({7, 50}, generator, torch::kDouble).mul_(0.1).add_(1.0);
  auto updates = torch::cat({honest, honest.slice(0, 0, 3)});
  auto attack = test::load<Attack>("fang");
  attack->poison_updates(updates, test::full_context(10, {7, 8, 9}));
  const auto honest_median = std::get<0>(honest.median(0));
  const auto attacked_median = std::get<0>(updates.median(0));
  CHECK(attacked_median.lt(honest_median).all().item<bool>());
}
