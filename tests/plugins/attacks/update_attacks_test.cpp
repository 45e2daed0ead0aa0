// Known answers for the update-matrix attacks with a closed form: sign_flip, scaling, gaussian,
// nan, inf, ipm, alie.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>

#include "attack_helpers.hpp"

using namespace bulwark;
using test::matrix;
using test::vec;

TEST_CASE("sign_flip uploads -k times the client's own update and is not omniscient") {
  auto attack = test::load<Attack>("sign_flip", "k = 3");
  CHECK(attack->poisons_updates());
  CHECK_FALSE(attack->omniscient());
  CHECK_FALSE(attack->poisons_data());
  auto own = matrix({{1, -2}, {0.5, 4}});
  attack->poison_updates(own, test::own_context(2, 5, 2));
  // -3 * (1, -2) = (-3, 6);  -3 * (0.5, 4) = (-1.5, -12)
  CHECK_TENSOR_CLOSE(own, matrix({{-3, 6}, {-1.5, -12}}), 1e-12);
  auto plain = test::load<Attack>("sign_flip");
  auto row = matrix({{2, -1}});
  plain->poison_updates(row, test::own_context(1, 5, 1));
  CHECK_TENSOR_CLOSE(row, matrix({{-2, 1}}), 1e-12);  // k = 1 by default
}

TEST_CASE("scaling multiplies the client's own update by gamma") {
  auto attack = test::load<Attack>("scaling", "gamma = 4");
  CHECK_FALSE(attack->omniscient());
  auto own = matrix({{1, -2}});
  attack->poison_updates(own, test::own_context(1, 5, 1));
  CHECK_TENSOR_CLOSE(own, matrix({{4, -8}}), 1e-12);  // 4 * (1, -2)
}

TEST_CASE("gaussian replaces rows by N(mu, sigma^2) draws from the seeded stream") {
  auto attack = test::load<Attack>("gaussian", "mu = 1.0\nsigma = 2.0");
  CHECK_FALSE(attack->omniscient());
  auto own = torch::zeros({2, 50000}, torch::kDouble);
  attack->poison_updates(own, test::own_context(2, 5, 2, /*seed=*/7));
  // 100000 draws: the standard error of the mean is 2/sqrt(1e5) = 0.0063 and that of the standard
  // deviation about 2/sqrt(2e5) = 0.0045, so 0.05 is a margin of about 8 and 11 standard errors.
  CHECK(std::abs(own.mean().item<double>() - 1.0) < 0.05);
  CHECK(std::abs(own.std().item<double>() - 2.0) < 0.05);
  CHECK(std::abs(own[0].mean().item<double>() - own[1].mean().item<double>()) < 0.1);  // both rows drawn

  // Same stream, same draws; another seed, other draws.
  auto again = torch::zeros({2, 50000}, torch::kDouble);
  attack->poison_updates(again, test::own_context(2, 5, 2, /*seed=*/7));
  CHECK(torch::equal(own, again));
  auto other = torch::zeros({2, 50000}, torch::kDouble);
  attack->poison_updates(other, test::own_context(2, 5, 2, /*seed=*/8));
  CHECK_FALSE(torch::equal(own, other));
}

TEST_CASE("nan and inf fault injection make every coordinate non-finite") {
  auto nan = test::load<Attack>("nan");
  auto rows = matrix({{1, 2, 3}, {4, 5, 6}});
  nan->poison_updates(rows, test::own_context(2, 5, 2));
  CHECK(torch::isnan(rows).all().item<bool>());

  auto positive = test::load<Attack>("inf");
  rows = matrix({{1, 2, 3}});
  positive->poison_updates(rows, test::own_context(1, 5, 1));
  CHECK(torch::isposinf(rows).all().item<bool>());

  auto negative = test::load<Attack>("inf", "sign = \"negative\"");
  rows = matrix({{1, 2, 3}});
  negative->poison_updates(rows, test::own_context(1, 5, 1));
  CHECK(torch::isneginf(rows).all().item<bool>());

  auto random = test::load<Attack>("inf", "sign = \"random\"");
  rows = torch::zeros({2, 1000}, torch::kDouble);
  random->poison_updates(rows, test::own_context(2, 5, 2));
  CHECK(torch::isinf(rows).all().item<bool>());
  // Fair coin over 2000 coordinates: both signs appear, each about half the time.
  const auto positives = torch::isposinf(rows).sum().item<std::int64_t>();
  CHECK(positives > 800);
  CHECK(positives < 1200);
}

TEST_CASE("ipm: every malicious row is -epsilon times the mean of the honest rows") {
  auto attack = test::load<Attack>("ipm", "epsilon = 0.5");
  CHECK(attack->omniscient());
  auto updates = matrix({{1, 2}, {3, 4}, {5, 0}, {9, 9}, {7, 7}});
  const auto before = updates.clone();
  attack->poison_updates(updates, test::full_context(5, {3, 4}));
  // honest mean = ((1 + 3 + 5)/3, (2 + 4 + 0)/3) = (3, 2);  -0.5 * (3, 2) = (-1.5, -1)
  CHECK_TENSOR_CLOSE(updates.slice(0, 3, 5), matrix({{-1.5, -1}, {-1.5, -1}}), 1e-12);
  CHECK(torch::equal(updates.slice(0, 0, 3), before.slice(0, 0, 3)));  // honest rows untouched

  SUBCASE("partial knowledge uses the attackers' own honest updates") {
    auto partial = test::load<Attack>("ipm", "epsilon = 1.0\nknowledge = \"partial\"");
    CHECK_FALSE(partial->omniscient());
    auto own = matrix({{2, 4}, {4, 0}});
    partial->poison_updates(own, test::own_context(2, 5, 2));
    // own mean = (3, 2);  -1 * (3, 2)
    CHECK_TENSOR_CLOSE(own, matrix({{-3, -2}, {-3, -2}}), 1e-12);
  }
}

TEST_CASE("ipm optimize picks the grid value that moves the configured aggregate most") {
  auto attack = test::load<Attack>("ipm", "optimize = true\ngrid = [1.0, 0.1, 10.0]");
  auto updates = matrix({{1, 2}, {3, 4}, {5, 0}, {0, 0}});
  auto context = test::full_context(4, {3});
  SUBCASE("against the mean, the largest epsilon wins") {
    // mean(U_eps) - honest mean = (-eps (3, 2) - (3, 2)) / 4, growing with eps: eps = 10.
    context.aggregate_probe = [](const torch::Tensor& u) { return u.mean(0); };
    attack->poison_updates(updates, context);
    CHECK_TENSOR_CLOSE(updates[3], vec({-30, -20}), 1e-12);
  }
  SUBCASE("against a rule that ignores the row's size, ties go to the first grid value") {
    // The lower median of each column of {honest, -eps (3, 2)} with eps > 0: the malicious value
    // is always the smallest, so the answer (1, 0) does not depend on eps: eps = 1.0, the first.
    context.aggregate_probe = [](const torch::Tensor& u) { return std::get<0>(u.median(0)); };
    attack->poison_updates(updates, context);
    CHECK_TENSOR_CLOSE(updates[3], vec({-3, -2}), 1e-12);
  }
  CHECK_THROWS_WITH_AS(test::load<Attack>("ipm", "optimize = true\nknowledge = \"partial\""),
                       doctest::Contains("knowledge = \"full\""), Error);
}

TEST_CASE("alie: mean - z * std with the paper's z for n and f") {
  auto attack = test::load<Attack>("alie");
  CHECK(attack->omniscient());
  // Honest column 0 = {1, 2, 6}: mean 3, sample variance ((1-3)^2 + (2-3)^2 + (6-3)^2) / 2 = 7.
  // Column 1 = {0, 0, 0}: mean 0, std 0.
  auto updates = matrix({{1, 0}, {2, 0}, {6, 0}, {9, 9}, {9, 9}});
  attack->poison_updates(updates, test::full_context(5, {3, 4}));
  // n = 5, f = 2: s = floor(5/2 + 1) - 2 = 1, z = Phi^-1((5 - 1)/5) = Phi^-1(0.8) = 0.8416212336.
  // 3 - 0.8416212336 * sqrt(7) = 0.7732795179
  CHECK_TENSOR_CLOSE(updates.slice(0, 3, 5), matrix({{0.7732795179, 0}, {0.7732795179, 0}}), 1e-9);

  SUBCASE("n = 50, f = 12 gives z = Phi^-1(0.72)") {
    // s = floor(50/2 + 1) - 12 = 14, z = Phi^-1(36/50) = 0.5828415073. Honest {0, 2}: mean 1,
    // std sqrt(2): 1 - 0.5828415073 * sqrt(2) = 0.1757376357.
    auto context = test::full_context(3, {2});
    context.num_clients = 50;  // the statistics come from the rows given, n and f from the context
    context.num_malicious = 12;
    auto small = matrix({{0}, {2}, {5}});
    attack->poison_updates(small, context);
    CHECK(small[2][0].item<double>() == doctest::Approx(0.1757376357).epsilon(1e-9));
  }
  SUBCASE("an explicit z overrides the formula") {
    auto given = test::load<Attack>("alie", "z = 1.5");
    auto u = matrix({{1, 0}, {2, 0}, {6, 0}, {9, 9}});
    given->poison_updates(u, test::full_context(4, {3}));
    // 3 - 1.5 * sqrt(7) = -0.9686269666
    CHECK(u[3][0].item<double>() == doctest::Approx(-0.9686269666).epsilon(1e-9));
  }
  SUBCASE("a malicious majority has no finite z: the message says to give one") {
    // n = 4, f = 3: s = floor(4/2 + 1) - 3 = 0.
    auto u = matrix({{1}, {2}, {3}, {4}});
    CHECK_THROWS_WITH_AS(attack->poison_updates(u, test::full_context(4, {1, 2, 3})),
                         doctest::Contains("give z explicitly"), Error);
  }
  SUBCASE("partial knowledge: the attackers' own updates give mean and std") {
    auto partial = test::load<Attack>("alie", "knowledge = \"partial\"\nz = 1.0");
    CHECK_FALSE(partial->omniscient());
    auto own = matrix({{1}, {3}});
    partial->poison_updates(own, test::own_context(2, 10, 2));
    // mean 2, std sqrt(((1-2)^2 + (3-2)^2) / 1) = sqrt(2): 2 - sqrt(2) = 0.5857864376
    CHECK_TENSOR_CLOSE(own, matrix({{0.5857864376}, {0.5857864376}}), 1e-9);
  }
}

TEST_CASE("alie optimize keeps the grid z that moves the mean aggregate most") {
  auto attack = test::load<Attack>("alie", "optimize = true\ngrid = [0.5, 2.0, 1.0]");
  auto updates = matrix({{1}, {2}, {6}, {0}});
  auto context = test::full_context(4, {3});
  context.aggregate_probe = [](const torch::Tensor& u) { return u.mean(0); };
  attack->poison_updates(updates, context);
  // |mean(U_z) - 3| = z sqrt(7) / 4 grows with z: z = 2.0, row = 3 - 2 sqrt(7) = -2.2915026221
  CHECK(updates[3][0].item<double>() == doctest::Approx(-2.2915026221).epsilon(1e-9));
}

TEST_CASE("ipm and alie search = \"line\": ByzFL's expansion-contraction search of the attack factor") {
  auto updates = matrix({{1, 2}, {3, 4}, {5, 0}, {0, 0}});
  auto context = test::full_context(4, {3});
  SUBCASE("a distance that keeps growing: 20 evaluations of doubling steps, 0, 10, 30, 70, ...") {
    auto attack = test::load<Attack>("ipm", "optimize = true\nsearch = \"line\"");
    context.aggregate_probe = [](const torch::Tensor& u) { return u.mean(0); };
    attack->poison_updates(updates, context);
    // The last expansion point: 10 (2^19 - 1) = 5242870; row = -5242870 (3, 2).
    CHECK_TENSOR_CLOSE(updates[3], vec({-5242870.0 * 3, -5242870.0 * 2}), 1e-6);
  }
  SUBCASE("a distance peaked at epsilon = 17: expansion stops at 30, contraction steps 16, 12.8, ...") {
    auto attack = test::load<Attack>("ipm", "optimize = true\nsearch = \"line\"");
    const auto honest_mean = vec({3, 2});
    context.aggregate_probe = [&](const torch::Tensor& u) {
      const double epsilon = -u[3][0].item<double>() / 3;
      return honest_mean + std::exp(-(epsilon - 17) * (epsilon - 17) / 100);
    };
    attack->poison_updates(updates, context);
    // 0 -> 10 (better) -> 30 (worse; step 20 * 0.8 = 16) -> 26 (worse) -> 10 + 12.8 = 22.8 (better)
    // -> 22.8 + 10.24, + 8.192, ... all worse: epsilon = 22.8 (ByzFL steps only forward).
    CHECK(-updates[3][0].item<double>() / 3 == doctest::Approx(22.8).epsilon(1e-12));
  }
  SUBCASE("alie's default step -10 is ByzFL's +10 in tau = -z") {
    auto attack = test::load<Attack>("alie", "optimize = true\nsearch = \"line\"\nevaluations = 2");
    auto u = matrix({{1}, {2}, {6}, {0}});
    context.aggregate_probe = [](const torch::Tensor& rows) { return rows.mean(0); };
    attack->poison_updates(u, context);
    // z = 0 then z = -10 (farther from the mean): row = 3 + 10 sqrt(7).
    CHECK(u[3][0].item<double>() == doctest::Approx(3 + 10 * std::sqrt(7.0)).epsilon(1e-12));
  }
  CHECK_THROWS_WITH_AS(test::load<Attack>("ipm", "optimize = true\nsearch = \"line\"\nstep = 0"),
                       doctest::Contains("0.5 < ratio < 1, step != 0"), Error);
}

TEST_CASE("mimic copies the target-th honest row into every malicious row") {
  auto first = test::load<Attack>("mimic");
  CHECK(first->omniscient());
  auto updates = matrix({{1, 2}, {9, 9}, {3, 4}, {5, 6}, {9, 9}});
  first->poison_updates(updates, test::full_context(5, {1, 4}));
  CHECK_TENSOR_CLOSE(updates, matrix({{1, 2}, {1, 2}, {3, 4}, {5, 6}, {1, 2}}), 0);
  auto third = test::load<Attack>("mimic", "target = 2");
  third->poison_updates(updates, test::full_context(5, {1, 4}));
  CHECK_TENSOR_CLOSE(updates[4], vec({5, 6}), 0);
  auto beyond = test::load<Attack>("mimic", "target = 3");
  CHECK_THROWS_WITH_AS(beyond->poison_updates(updates, test::full_context(5, {1, 4})),
                       doctest::Contains("only 3 honest clients take part"), Error);
}
