// dp_sgd: clipping bounds in every mode, untouched small gradients, the noise scale, accounting.
#include <doctest/doctest.h>

#include <cmath>

#include "privacy_fixtures.hpp"
#include "test_support.hpp"

using namespace bulwark;

TEST_CASE("dp_sgd flat: every per-example norm <= S, smaller rows untouched, g = mean of clipped rows") {
  auto mechanism = test::load<PrivacyMechanism>("dp_sgd", "clip = 0.5\nnoise_multiplier = 0.0");
  CHECK(mechanism->per_example());
  CHECK_FALSE(mechanism->on_client_update());
  const auto layout = test::three_layer_layout();
  const auto original = test::mixed_gradients(12, layout.total, 1);
  auto grads = original.clone();
  auto g = mechanism->privatize_gradients(grads, test::step_context(layout, 12, 7));
  auto before = original.to(torch::kDouble).norm(2, 1), after = grads.to(torch::kDouble).norm(2, 1);
  int clipped = 0, untouched = 0;
  for (std::int64_t b = 0; b < 12; ++b) {
    CHECK(after[b].item<double>() <= 0.5 + 1e-6);
    if (before[b].item<double>() <= 0.5) {
      CHECK(torch::equal(grads[b], original[b]));
      ++untouched;
    } else {
      CHECK(after[b].item<double>() == doctest::Approx(0.5).epsilon(1e-5));  // scaled onto the sphere
      // clipping only rescales: the direction is kept
      CHECK(torch::allclose(grads[b] * before[b].item<double>() / 0.5, original[b], 1e-4, 1e-6));
      ++clipped;
    }
  }
  CHECK(clipped > 2);
  CHECK(untouched > 2);
  CHECK(torch::allclose(g, grads.mean(0), 1e-6, 1e-7));  // σ = 0: (Σ clipped)/B
}

TEST_CASE("dp_sgd per_layer_uniform: each of the m layers <= S/sqrt(m), so each row <= S") {
  auto mechanism = test::load<PrivacyMechanism>("dp_sgd", "clip = 0.9\nclipping = \"per_layer_uniform\"\nnoise_multiplier = 0.0");
  const auto layout = test::three_layer_layout();
  const auto original = test::mixed_gradients(10, layout.total, 2);
  auto grads = original.clone();
  mechanism->privatize_gradients(grads, test::step_context(layout, 10, 7));
  const double bound = 0.9 / std::sqrt(3.0);
  auto before = test::layer_norms(original, layout), after = test::layer_norms(grads, layout);
  CHECK((after <= bound + 1e-6).all().item<bool>());
  CHECK((grads.to(torch::kDouble).norm(2, 1) <= 0.9 + 1e-6).all().item<bool>());
  const auto spans = layer_spans(layout);
  int untouched = 0;
  for (std::int64_t b = 0; b < 10; ++b) {
    for (std::int64_t j = 0; j < 3; ++j) {
      if (before[b][j].item<double>() > bound) continue;
      const auto [offset, length] = spans[j];
      CHECK(torch::equal(grads[b].narrow(0, offset, length), original[b].narrow(0, offset, length)));
      ++untouched;
    }
  }
  CHECK(untouched > 3);
}

TEST_CASE("dp_sgd per_layer_adaptive: S_j = S M_j / sqrt(sum M_k^2) with M_j the batch's largest layer norm") {
  auto mechanism = test::load<PrivacyMechanism>("dp_sgd", "clip = 1.0\nclipping = \"per_layer_adaptive\"\nnoise_multiplier = 0.0");
  ParamLayout layout;
  layout.add("a.weight", {2});
  layout.add("b.weight", {2});
  // Example 0: layer norms (3, 4); example 1: (6, 1); example 2: (0.1, 0.1).
  auto grads = torch::tensor({{3.f, 0.f, 0.f, 4.f}, {0.f, 6.f, 1.f, 0.f}, {0.1f, 0.f, 0.f, 0.1f}});
  const auto original = grads.clone();
  mechanism->privatize_gradients(grads, test::step_context(layout, 3, 7));
  // M = (6, 4), sqrt(36 + 16) = 7.2111: S_a = 6/7.2111 = 0.83205, S_b = 4/7.2111 = 0.55470.
  const double s_a = 6 / std::sqrt(52.0), s_b = 4 / std::sqrt(52.0);
  auto norms = test::layer_norms(grads, layout);
  CHECK(norms[0][0].item<double>() == doctest::Approx(s_a).epsilon(1e-5));
  CHECK(norms[0][1].item<double>() == doctest::Approx(s_b).epsilon(1e-5));
  CHECK(norms[1][0].item<double>() == doctest::Approx(s_a).epsilon(1e-5));
  CHECK(norms[1][1].item<double>() == doctest::Approx(s_b).epsilon(1e-5));  // 1 > 0.5547: clipped
  CHECK(torch::equal(grads[2], original[2]));                               // below both bounds
  CHECK((grads.to(torch::kDouble).norm(2, 1) <= 1.0 + 1e-6).all().item<bool>());  // sqrt(S_a^2 + S_b^2) = S
}

TEST_CASE("dp_sgd noise: std of (sum + N(0, sigma^2 S^2)) / B matches sigma S / B within 2%") {
  const double sigma = 1.5, clip = 2.0;
  const std::int64_t batch = 4, d = 20000;
  auto mechanism = test::load<PrivacyMechanism>("dp_sgd", "clip = 2.0\nnoise_multiplier = 1.5");
  const auto layout = test::flat_layout(d);
  std::vector<torch::Tensor> draws;
  for (std::uint64_t seed = 1; seed <= 20; ++seed) {
    auto zeros = torch::zeros({batch, d});
    draws.push_back(mechanism->privatize_gradients(zeros, test::step_context(layout, batch, seed)));
  }
  const double std = torch::cat(draws).to(torch::kDouble).std().item<double>();  // 400,000 draws
  CHECK(std == doctest::Approx(sigma * clip / batch).epsilon(0.02));  // 0.75
}

TEST_CASE("dp_sgd randomness: seeded by default, the secure generator with secure_rng") {
  const auto layout = test::three_layer_layout();
  auto run = [&](const std::string& options, std::uint64_t seed) {
    auto mechanism = test::load<PrivacyMechanism>("dp_sgd", options);
    auto grads = test::mixed_gradients(4, layout.total, 3);
    return mechanism->privatize_gradients(grads, test::step_context(layout, 4, seed));
  };
  CHECK(torch::equal(run("", 11), run("", 11)));
  CHECK_FALSE(torch::equal(run("", 11), run("", 12)));
  CHECK_FALSE(torch::equal(run("secure_rng = true", 11), run("secure_rng = true", 11)));
}

TEST_CASE("dp_sgd accounting: example level at the host's example rate, sigma, local steps") {
  auto mechanism = test::load<PrivacyMechanism>("dp_sgd", "noise_multiplier = 1.3\nclip = 4.0");
  RoundAccountingInfo info;
  info.example_sampling_rate = 0.05;
  info.client_sampling_rate = 0.1;
  info.local_steps = 20;
  auto events = mechanism->accounting(info);
  REQUIRE(events.size() == 1);
  CHECK(events[0].level == PrivacyLevel::Example);
  CHECK(events[0].sampling_rate == 0.05);
  CHECK(events[0].noise_multiplier == 1.3);  // sensitivity S, noise std 1.3 S: the clip cancels
  CHECK(events[0].steps == 20);
}

TEST_CASE("dp_sgd rejects a non-positive clip") {
  CHECK_THROWS_WITH_AS(test::load<PrivacyMechanism>("dp_sgd", "clip = 0.0"), doctest::Contains("clip must be > 0"),
                       Error);
}

TEST_CASE("dp_sgd with unobserved rows (the training loop): same gradient, rows left as they were") {
  const auto layout = test::three_layer_layout();
  for (const char* mode : {"flat", "per_layer_uniform", "per_layer_adaptive"}) {
    INFO(mode);
    auto mechanism = test::load<PrivacyMechanism>(
        "dp_sgd", std::string("clip = 0.5\nnoise_multiplier = 0.0\nclipping = \"") + mode + "\"");
    const auto original = test::mixed_gradients(9, layout.total, 6);
    auto observed = original.clone(), unobserved = original.clone();
    auto g_observed = mechanism->privatize_gradients(observed, test::step_context(layout, 9, 1));
    auto context = test::step_context(layout, 9, 1);
    context.rows_observed = false;
    auto g_unobserved = mechanism->privatize_gradients(unobserved, context);
    CHECK(torch::allclose(g_unobserved, g_observed, 1e-5, 1e-7));
    CHECK(torch::equal(unobserved, original));
  }
  // The noise is the same N(0, sigma^2 S^2) on the sum: std sigma S / B of the returned gradient.
  auto noisy = test::load<PrivacyMechanism>("dp_sgd", "clip = 2.0\nnoise_multiplier = 1.5");
  CHECK(test::noise_std(*noisy, 4, /*rows_observed=*/false) == doctest::Approx(1.5 * 2.0 / 4).epsilon(0.02));
}
