// The RDP and GDP accountants (accountant.hpp): closed forms, monotonicity, published values of the
// reference implementations, and the noise-multiplier solver.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "accountant.hpp"
#include "bulwark/error.hpp"
#include "config.hpp"
#include "experiment.hpp"

using namespace bulwark;

namespace {

double epsilon(double q, double sigma, std::int64_t steps, double delta = 1e-5,
               EpsilonConversion conversion = EpsilonConversion::Improved) {
  RdpAccountant accountant;
  accountant.compose(q, sigma, steps);
  return accountant.spent(delta, conversion).epsilon;
}

std::vector<double> range(double from, double to) {  // from, from + 1, ..., to
  std::vector<double> values;
  for (double v = from; v <= to; v += 1) values.push_back(v);
  return values;
}

}  // namespace

TEST_CASE("accountant: without sampling (q = 1) each step costs exactly alpha / (2 sigma^2)") {
  RdpAccountant accountant;
  accountant.compose(/*q=*/1.0, /*sigma=*/2.0, /*steps=*/3);
  const auto& orders = accountant.orders();
  REQUIRE(orders.size() == 99 + 52);  // 1.1..10.9 and 12..63
  CHECK(orders.front() == doctest::Approx(1.1));
  CHECK(orders.back() == 63);
  for (std::size_t k = 0; k < orders.size(); ++k) {
    // 3 steps · α / (2 · 2²)
    CHECK(accountant.rdp()[k] == orders[k] / (2 * 2.0 * 2.0) * 3);
  }
}

TEST_CASE("accountant: no sampling costs nothing, no noise costs everything") {
  CHECK(subsampled_gaussian_rdp(/*q=*/0.0, 1.0, 2.5) == 0.0);
  CHECK(std::isinf(subsampled_gaussian_rdp(0.1, /*sigma=*/0.0, 2.5)));
  CHECK(epsilon(0.0, 1.0, 100) == 0.0);
  CHECK(std::isinf(epsilon(0.1, 0.0, 1)));
  RdpAccountant nothing;
  nothing.compose(0.1, 1.0, /*steps=*/0);
  CHECK(nothing.spent(1e-5, EpsilonConversion::Improved).epsilon == 0.0);
}

TEST_CASE("accountant: epsilon decreases with sigma and increases with steps and q") {
  double previous = INFINITY;
  for (double sigma : {0.6, 0.8, 1.0, 1.5, 2.0, 4.0, 8.0}) {
    const double e = epsilon(0.01, sigma, 1000);
    CHECK(e < previous);
    previous = e;
  }
  previous = 0;
  for (std::int64_t steps : {1, 10, 100, 1000, 10000}) {
    const double e = epsilon(0.01, 1.1, steps);
    CHECK(e > previous);
    previous = e;
  }
  previous = 0;
  for (double q : {0.0005, 0.001, 0.01, 0.05, 0.2, 1.0}) {
    const double e = epsilon(q, 1.1, 100);
    CHECK(e > previous);
    previous = e;
  }
  // The improved conversion (Balle et al. 2020) never certifies more than the standard one.
  CHECK(epsilon(0.01, 1.1, 10000) < epsilon(0.01, 1.1, 10000, 1e-5, EpsilonConversion::Standard));
}

TEST_CASE("accountant: fractional and integer orders match numerical integration of A_alpha") {
  // Reference: RDP(α) = log(A_α)/(α − 1), A_α = ∫ μ0(z) ((1 − q) + q e^{(2z − 1)/(2σ²)})^α dz with
  // μ0 = N(0, σ²), integrated with mpmath.quad at 40 digits (the check TF-Privacy's
  // rdp_accountant_test.py test_compute_log_a_equals_mp makes, with our own parameters).
  struct Case {
    double q, sigma, alpha, rdp;
  };
  const Case cases[] = {
      {0.01, 1.1, 1.5, 9.55452857187483e-5},  {0.01, 1.1, 7.3, 0.000523174930582304},
      {0.1, 2.0, 2.5, 0.00359407719941323},   {0.001, 0.8, 10.9, 0.910340275291523},
      {0.04, 1.5, 3.7, 0.00172981249000544},  {0.5, 3.0, 12.5, 0.253134031232937},
      {0.01, 1.1, 8, 0.000584070335520251},   {0.1, 2.0, 32, 1.62720230101944},
  };
  for (const auto& c : cases) {
    INFO("q = ", c.q, " sigma = ", c.sigma, " alpha = ", c.alpha);
    CHECK(subsampled_gaussian_rdp(c.q, c.sigma, c.alpha) == doctest::Approx(c.rdp).epsilon(1e-6));
  }
}

TEST_CASE("accountant: TF-Privacy's published RDP values (rdp_accountant_test.py)") {
  // tensorflow/privacy, tensorflow_privacy/privacy/analysis/rdp_accountant_test.py:
  // test_compute_rdp_scalar: compute_rdp(q=0.1, noise_multiplier=2, steps=10, orders=5) = 0.07737.
  CHECK(subsampled_gaussian_rdp(0.1, 2.0, 5) * 10 == doctest::Approx(0.07737).epsilon(1e-4));
  // test_compute_rdp_sequence: q = 0.01, sigma = 2.5, 50 steps at orders 1.5, 2.5, 5, 50.
  const double orders[] = {1.5, 2.5, 5, 50};
  const double expected[] = {0.00065, 0.001085, 0.00218075, 0.023846};
  for (int k = 0; k < 4; ++k) {
    INFO("order ", orders[k]);
    CHECK(std::abs(subsampled_gaussian_rdp(0.01, 2.5, orders[k]) * 50 - expected[k]) < 1e-5);
  }
}

TEST_CASE("accountant: TF-Privacy's published epsilons (standard conversion)") {
  SUBCASE("rdp_accountant_test.py test_get_privacy_spent_check_target_delta") {
    // orders 2..32, q = 0.01, sigma = 4, 10000 steps, delta = 1e-5: eps = 1.258575 at order 20.
    RdpAccountant accountant(range(2, 32));
    accountant.compose(0.01, 4.0, 10000);
    auto spent = accountant.spent(1e-5, EpsilonConversion::Standard);
    CHECK(spent.epsilon == doctest::Approx(1.258575).epsilon(1e-6));
    CHECK(spent.order == 20);
  }
  SUBCASE("rdp_accountant_test.py test_check_composition (varying q and sigma)") {
    // 40000 steps at q = 1e-4, sigma = 0.4, then 100 steps at q = 0.1, sigma = 2; delta = 1e-5:
    // eps = 8.509656 at order 2.5 ("compare with Mathematica" in the source).
    RdpAccountant accountant({1.25, 1.5, 1.75, 2., 2.5, 3., 4., 5., 6., 7., 8., 10., 12., 14., 16., 20., 24., 28.,
                              32., 64., 256.});
    accountant.compose(1e-4, 0.4, 40000);
    accountant.compose(0.1, 2.0, 100);
    auto spent = accountant.spent(1e-5, EpsilonConversion::Standard);
    CHECK(spent.epsilon == doctest::Approx(8.509656).epsilon(1e-6));
    CHECK(spent.order == 2.5);
  }
  SUBCASE("compute_dp_sgd_privacy.py docstring: N = 60000, B = 256, sigma = 1.12, 60 epochs -> (2.92, 1e-5)") {
    // q = 256/60000, steps = ceil(60 · 60000 / 256) = 14063, the script's orders.
    std::vector<double> orders = {1.25, 1.5, 1.75, 2., 2.25, 2.5, 3., 3.5, 4., 4.5};
    for (double a : range(5, 63)) orders.push_back(a);
    for (double a : {128., 256., 512.}) orders.push_back(a);
    RdpAccountant accountant(orders);
    accountant.compose(256.0 / 60000.0, 1.12, 14063);
    CHECK(accountant.spent(1e-5, EpsilonConversion::Standard).epsilon == doctest::Approx(2.92).epsilon(0.005));
  }
}

TEST_CASE("accountant: Opacus's published epsilon and noise multiplier (improved conversion)") {
  // pytorch/opacus, opacus/tests/accountants_test.py test_rdp_accountant: sigma = 1.5, q = 0.04,
  // int(90 / 0.04) = 2250 steps, delta = 1e-5, default orders: epsilon = 7.32911117143.
  CHECK(epsilon(0.04, 1.5, 2250) == doctest::Approx(7.32911117143).epsilon(1e-7));
  // test_get_noise_multiplier_rdp_steps: target epsilon 8, delta 1e-5, q = 0.04, 2000 steps ->
  // 1.3562 (Opacus stops its bisection within 0.01 of the target epsilon, so compare to 3e-3).
  const double sigma = solve_noise_multiplier([](double s) { return epsilon(0.04, s, 2000); }, 8.0);
  CHECK(sigma == doctest::Approx(1.3562).epsilon(3e-3));
  CHECK(epsilon(0.04, sigma, 2000) <= 8.0);
  CHECK(epsilon(0.04, sigma * 0.999, 2000) > 8.0);  // the smallest such sigma, to solver precision
}

TEST_CASE("accountant: an optimum at order 63 is extended with TF-Privacy's orders 128, 256, 512, and noted") {
  // Much noise, few steps: the curve is still falling at order 63 (Fed-CDP's sigma = 6 regime).
  RdpAccountant opacus;
  opacus.compose(0.01, 6.0, 100);
  const auto at_63 = opacus.spent(1e-5, EpsilonConversion::Improved);
  CHECK(at_63.order == 63);
  CHECK(std::isnan(at_63.opacus_epsilon));
  CHECK(opacus.order_note(at_63).find("the largest RDP order, 63") != std::string::npos);

  RdpAccountant extended({}, true);
  extended.compose(0.01, 6.0, 100);
  const auto beyond = extended.spent(1e-5, EpsilonConversion::Improved);
  CHECK(beyond.order == 256);
  CHECK(beyond.epsilon < at_63.epsilon);
  CHECK(beyond.opacus_epsilon == at_63.epsilon);
  CHECK(extended.order_note(beyond).find("(Opacus's value)") != std::string::npos);
  CHECK(extended.order_note(beyond).find("largest RDP order") == std::string::npos);
  auto tf_privacy_orders = default_rdp_orders();
  for (double a : extension_rdp_orders()) tf_privacy_orders.push_back(a);
  RdpAccountant listed(tf_privacy_orders);
  listed.compose(0.01, 6.0, 100);
  CHECK(listed.spent(1e-5, EpsilonConversion::Improved).epsilon == beyond.epsilon);

  // Still falling at 512: both notes.
  RdpAccountant far({}, true);
  far.compose(0.01, 20.0, 1);
  const auto at_512 = far.spent(1e-5, EpsilonConversion::Improved);
  CHECK(at_512.order == 512);
  CHECK(far.order_note(at_512).find("(Opacus's value)") != std::string::npos);
  CHECK(far.order_note(at_512).find("the largest RDP order, 512") != std::string::npos);

  // At 63 with 128 worse (Fed-CDP in experiments/fedcdp_vs_fedsdp.toml): the optimum lies between.
  RdpAccountant between({}, true);
  between.compose(5.0 * 10 / 60000, 6 / std::sqrt(7.0), 1000);
  const auto at_last = between.spent(1e-5, EpsilonConversion::Improved);
  CHECK(at_last.order == 63);
  CHECK(std::isnan(at_last.opacus_epsilon));
  CHECK(between.order_note(at_last).find("order 128 gives more: the optimum lies between them") != std::string::npos);

  // Opacus's example sits inside the orders (3.9): the extension changes nothing, no note.
  RdpAccountant inside({}, true);
  inside.compose(0.04, 1.5, 2250);
  const auto interior = inside.spent(1e-5, EpsilonConversion::Improved);
  CHECK(interior.epsilon == epsilon(0.04, 1.5, 2250));
  CHECK(std::isnan(interior.opacus_epsilon));
  CHECK(inside.order_note(interior).empty());
}

TEST_CASE("accountant: the Fed-CDP document's Table VI with the default orders, extended") {
  // 002_beeb9512734881ba, Table VI (delta = 1e-5, sigma = 6, Mironov's conversion as TF-Privacy):
  // Fed-CDP at the global example rate q = 0.01; L = 100 local iterations over T = 100 rounds gives
  // 0.8227, L = 1 gives 0.0845 (Bulwark 0.0841: the document's accountant rounds differently).
  RdpAccountant many({}, true);
  many.compose(0.01, 6.0, 100 * 100);
  CHECK(many.spent(1e-5, EpsilonConversion::Standard).epsilon == doctest::Approx(0.8227).epsilon(1e-4));
  RdpAccountant one({}, true);
  one.compose(0.01, 6.0, 100);
  const auto small = one.spent(1e-5, EpsilonConversion::Standard);
  CHECK(small.order > 63);
  CHECK(small.epsilon == doctest::Approx(0.0845).epsilon(0.01));
}

TEST_CASE("accountant: vanishing RDP certifies epsilon = 0, not a rounding artefact") {
  // Below RDP = -log(1 - delta^2) ≈ 1e-10 an order certifies epsilon = 0 (Canonne, Kamath & Steinke
  // 2020); just above it the improved conversion gives about 0.103 at order 63 (delta = 1e-5):
  // log(62/63) - (log 1e-5 + log 63)/62.
  const std::vector<double> orders = {2.0, 63.0};
  CHECK(rdp_to_epsilon(orders, {-1e-17, -1e-17}, 1e-5, EpsilonConversion::Improved).epsilon == 0.0);
  CHECK(rdp_to_epsilon(orders, {1e-9, 1e-9}, 1e-5, EpsilonConversion::Improved).epsilon ==
        doctest::Approx(std::log(62.0 / 63.0) - (std::log(1e-5) + std::log(63.0)) / 62.0 + 1e-9));
  // Noise large enough to make the per-step RDP vanish reaches any target.
  const double sigma = solve_noise_multiplier([](double s) { return epsilon(0.01, s, 100); }, 0.05);
  CHECK(epsilon(0.01, sigma, 100) <= 0.05);
}

TEST_CASE("accountant: the solver reports a target that no noise can reach") {
  CHECK_THROWS_WITH_AS(solve_noise_multiplier([](double s) { return 1.0 + 1.0 / s; }, 0.5),
                       doctest::Contains("cannot be reached"), Error);
  CHECK_THROWS_WITH_AS(solve_noise_multiplier([](double) { return std::nan(""); }, 1.0),
                       doctest::Contains("no accounting events"), Error);
}

TEST_CASE("privacy ledger: levels, look-ahead, checkpoint state and option errors") {
  auto options = [](const std::string& text) {
    return options_from_string(text, accounting_option_specs(), "[privacy] accounting");
  };
  PrivacyLedger ledger(options(""));
  CHECK(std::isnan(ledger.epsilon().example));
  CHECK(std::isnan(ledger.epsilon().max()));
  const std::vector<AccountingEvent> round = {{PrivacyLevel::Example, 0.01, 1.1, 100}};
  const auto ahead = ledger.epsilon_after(round);
  CHECK(std::isnan(ledger.epsilon().example));  // look-ahead leaves the ledger as it was
  ledger.add(round);
  CHECK(ledger.epsilon().example == ahead.example);
  CHECK(ledger.epsilon().example == doctest::Approx(epsilon(0.01, 1.1, 100)));
  CHECK(std::isnan(ledger.epsilon().client));
  CHECK(ledger.epsilon().max() == ledger.epsilon().example);

  PrivacyLedger restored(options(""));
  restored.load(ledger.state());
  CHECK(restored.epsilon().example == ledger.epsilon().example);
  PrivacyLedger other_orders(options("orders = [2.0, 4.0]"));
  CHECK_THROWS_WITH_AS(other_orders.load(ledger.state()), doctest::Contains("RDP orders"), Error);
  PrivacyLedger unextended(options("extend_orders = false"));
  CHECK_THROWS_WITH_AS(unextended.load(ledger.state()), doctest::Contains("RDP orders"), Error);

  // The run's ledger extends by default and keeps Opacus's value on request.
  const std::vector<AccountingEvent> noisy = {{PrivacyLevel::Client, 0.01, 6.0, 100}};
  PrivacyLedger extending(options(""));
  extending.add(noisy);
  unextended.add(noisy);
  CHECK(extending.epsilon().client < unextended.epsilon().client);
  CHECK(unextended.epsilon().client == doctest::Approx(epsilon(0.01, 6.0, 100)));
  CHECK(extending.order_note().find("(Opacus's value)") != std::string::npos);
  CHECK(unextended.order_note().find("the largest RDP order, 63") != std::string::npos);

  CHECK_THROWS_WITH_AS(PrivacyLedger(options("delta = 0.0")), doctest::Contains("delta = 0 must be in (0, 1)"), Error);
  CHECK_THROWS_WITH_AS(PrivacyLedger(options("orders = [1.0, 2.0]")), doctest::Contains("RDP order 1 is not > 1"), Error);
  CHECK_THROWS_WITH_AS(PrivacyLedger(options("orders = [2.0, 4.0]\nextend_orders = true")),
                       doctest::Contains("extends the default orders only"), Error);
  CHECK_NOTHROW(PrivacyLedger(options("orders = [2.0, 4.0]\nextend_orders = false")));
}

namespace {

// δ(ε) of μ-GDP straight from its definition (Dong, Roth & Su, Corollary 2.13), for moderate
// arguments where nothing underflows.
double gdp_delta_reference(double epsilon, double mu) {
  auto normal_cdf = [](double x) { return 0.5 * std::erfc(-x / std::sqrt(2.0)); };
  return normal_cdf(-epsilon / mu + mu / 2) - std::exp(epsilon) * normal_cdf(-epsilon / mu - mu / 2);
}

}  // namespace

TEST_CASE("gdp: mu of Bu et al.'s MNIST setting (N = 60000, B = 256, sigma = 1.3, 15 epochs) is 0.227") {
  GdpAccountant accountant;
  accountant.compose(256.0 / 60000, 1.3, 3516);  // ⌈15 · 60000 / 256⌉ steps
  CHECK(accountant.mu() == doctest::Approx(0.2272).epsilon(5e-4));
  // μ² adds over steps, also when (q, σ) change between them.
  GdpAccountant split;
  split.compose(256.0 / 60000, 1.3, 1000);
  split.compose(256.0 / 60000, 1.3, 2516);
  CHECK(split.mu() == doctest::Approx(accountant.mu()).epsilon(1e-14));
  GdpAccountant mixed;
  mixed.compose(0.01, 1.0, 10);
  mixed.compose(0.02, 2.0, 5);
  CHECK(mixed.mu_squared() == doctest::Approx(10 * 1e-4 * std::expm1(1.0) + 5 * 4e-4 * std::expm1(0.25)).epsilon(1e-14));
}

TEST_CASE("gdp: Opacus's published GaussianAccountant epsilon (sigma = 1.5, q = 0.04, 2249 steps)") {
  // pytorch/opacus, opacus/tests/accountants_test.py test_gdp_accountant: int(90 // 0.04) = 2249
  // steps, delta = 1e-5: 6.59 < epsilon < 6.6.
  GdpAccountant accountant;
  accountant.compose(0.04, 1.5, 2249);
  CHECK(accountant.epsilon(1e-5) > 6.59);
  CHECK(accountant.epsilon(1e-5) < 6.6);
}

TEST_CASE("gdp: epsilon is the root of delta(epsilon) = delta, to the last digits") {
  // μ = 1 at δ = Φ(−1/2) − e Φ(−3/2) is (1, δ)-DP exactly.
  CHECK(GdpAccountant::gdp_epsilon(1.0, gdp_delta_reference(1.0, 1.0)) == doctest::Approx(1.0).epsilon(1e-12));
  for (double mu : {0.1, 0.5, 1.0, 2.0, 5.0}) {
    for (double delta : {1e-3, 1e-5, 1e-8}) {
      CAPTURE(mu);
      CAPTURE(delta);
      const double epsilon = GdpAccountant::gdp_epsilon(mu, delta);
      CHECK(epsilon > 0);
      CHECK(gdp_delta_reference(epsilon, mu) == doctest::Approx(delta).epsilon(1e-9));
    }
  }
  // δ(0) ≤ δ: (0, δ)-DP already; no noise: no guarantee; a μ so large that Φ underflows: finite.
  CHECK(GdpAccountant::gdp_epsilon(1e-6, 1e-5) == 0.0);
  CHECK(GdpAccountant::gdp_epsilon(0.0, 1e-5) == 0.0);
  CHECK(std::isinf(GdpAccountant::gdp_epsilon(std::numeric_limits<double>::infinity(), 1e-5)));
  const double large = GdpAccountant::gdp_epsilon(40.0, 1e-5);
  CHECK(std::isfinite(large));
  CHECK(large > GdpAccountant::gdp_epsilon(30.0, 1e-5));
  GdpAccountant no_noise;
  no_noise.compose(0.01, 0.0, 1);
  CHECK(std::isinf(no_noise.epsilon(1e-5)));
}

TEST_CASE("privacy ledger with accountant = \"gdp\": GDP epsilon per level, kept by checkpoints") {
  auto options = [](const std::string& text) {
    return options_from_string(text, accounting_option_specs(), "[privacy] accounting");
  };
  PrivacyLedger ledger(options("accountant = \"gdp\""));
  ledger.add({{PrivacyLevel::Client, 0.1, 1.0, 50}});
  GdpAccountant expected;
  expected.compose(0.1, 1.0, 50);
  CHECK(ledger.epsilon().client == expected.epsilon(1e-5));
  CHECK(std::isnan(ledger.epsilon().example));

  PrivacyLedger restored(options("accountant = \"gdp\""));
  restored.load(ledger.state());
  CHECK(restored.epsilon().client == ledger.epsilon().client);
  CHECK_THROWS_WITH_AS(PrivacyLedger(options("accountant = \"pld\"")), doctest::Contains("one of rdp, prv, gdp"),
                       Error);
}

TEST_CASE("privacy ledger with accountant = \"prv\": PRV epsilon per level, histories kept by checkpoints") {
  auto options = [](const std::string& text) {
    return options_from_string(text, accounting_option_specs(), "[privacy] accounting");
  };
  PrivacyLedger ledger(options("accountant = \"prv\""));
  ledger.add({{PrivacyLevel::Example, 0.04, 1.5, 1000}});
  ledger.add({{PrivacyLevel::Example, 0.04, 1.5, 1249}});
  CHECK(std::abs(ledger.epsilon().example - 6.777395712150674) < 1e-7);
  CHECK(std::isnan(ledger.epsilon().client));

  PrivacyLedger restored(options("accountant = \"prv\""));
  restored.load(ledger.state());
  CHECK(restored.epsilon().example == ledger.epsilon().example);
  // A coarser mesh gives a looser bound.
  PrivacyLedger coarse(options("accountant = \"prv\"\nprv_eps_error = 0.1"));
  coarse.add({{PrivacyLevel::Example, 0.04, 1.5, 2249}});
  CHECK(coarse.epsilon().example > ledger.epsilon().example);
  CHECK_THROWS_WITH_AS(PrivacyLedger(options("accountant = \"prv\"\nprv_eps_error = 0")),
                       doctest::Contains("prv_eps_error"), Error);
}
