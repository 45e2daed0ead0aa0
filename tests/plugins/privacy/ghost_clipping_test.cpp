// Ghost clipping's hooks (PrivacyMechanism::clips_by_layer_norms): for each per-example mechanism
// and mode, factors from the per-layer norms and the clipped sum handed to privatize_clipped_sum
// give the gradient privatize_gradients gives on the rows, noise included; what the host computes
// from the layers instead of the rows is checked against the rows in tests/core/batching_test.cpp.
#include <doctest/doctest.h>

#include <string>

#include "bulwark/clipping.hpp"
#include "privacy_fixtures.hpp"
#include "test_support.hpp"

using namespace bulwark;

TEST_CASE("ghost hooks: factors from the layer norms and privatize_clipped_sum give privatize_gradients' gradient") {
  const auto layout = test::three_layer_layout();
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"dp_sgd", "clip = 0.5\nnoise_multiplier = 1.2"},
      {"dp_sgd", "clip = 0.5\nnoise_multiplier = 1.2\nclipping = \"per_layer_uniform\""},
      {"dp_sgd", "clip = 0.5\nnoise_multiplier = 1.2\nclipping = \"per_layer_adaptive\""},
      {"fed_cdp", "clip = 0.3\nnoise_multiplier = 2.0\nschedule = \"linear\"\nclip_end = 0.1"},
      {"fed_cdp", "clip = 0.3\nnoise_multiplier = 2.0\nnoise = \"per_batch\""},
  };
  for (const auto& [plugin, options] : cases) {
    CAPTURE(plugin);
    CAPTURE(options);
    auto mechanism = test::load<PrivacyMechanism>(plugin, options);
    REQUIRE(mechanism->clips_by_layer_norms());
    const auto rows = test::mixed_gradients(10, layout.total, 3);
    auto unobserved = test::step_context(layout, 10, /*seed=*/9, /*round=*/4);
    unobserved.rows_observed = false;
    auto copy = rows.clone();
    const auto expected = mechanism->privatize_gradients(copy, unobserved);

    const auto norms = layer_norms(rows, layout);
    const auto context = test::step_context(layout, 10, /*seed=*/9, /*round=*/4);
    const auto factors = mechanism->clip_factors(norms, context);
    REQUIRE(factors.sizes() == norms.sizes());
    CHECK(factors.min().item<double>() > 0);
    CHECK(factors.max().item<double>() == 1.0);  // small rows are kept as they are
    CHECK(factors.min().item<double>() < 0.01);  // large ones are clipped
    auto sum = weighted_layer_sum(rows, factors, layout);
    CHECK(torch::allclose(mechanism->privatize_clipped_sum(sum, context), expected, 1e-6, 1e-7));
  }
}

TEST_CASE("ghost hooks: dp_sgd flat gives each row one factor, min(1, S / its whole norm), on every layer") {
  auto mechanism = test::load<PrivacyMechanism>("dp_sgd", "clip = 0.5\nnoise_multiplier = 0.0");
  const auto layout = test::three_layer_layout();
  const auto rows = test::mixed_gradients(8, layout.total, 4);
  const auto factors = mechanism->clip_factors(layer_norms(rows, layout), test::step_context(layout, 8, 1));
  const auto whole = rows.norm(2, 1);
  for (std::int64_t b = 0; b < 8; ++b) {
    const double expected = std::min(1.0, 0.5 / whole[b].item<double>());
    for (std::int64_t j = 0; j < factors.size(1); ++j) {
      CHECK(factors[b][j].item<double>() == doctest::Approx(expected).epsilon(1e-5));
    }
  }
}

TEST_CASE("ghost hooks: an empty batch's clipped sum is refused, and mechanisms without the hooks say so") {
  const auto layout = test::three_layer_layout();
  auto sum = torch::zeros({layout.total});
  for (const char* plugin : {"dp_sgd", "fed_cdp"}) {
    auto mechanism = test::load<PrivacyMechanism>(plugin, "");
    CHECK_THROWS_WITH_AS(mechanism->privatize_clipped_sum(sum, test::step_context(layout, 0, 1)),
                         doctest::Contains("empty batch"), Error);
  }
  auto client_level = test::load<PrivacyMechanism>("fed_sdp", "");
  CHECK_FALSE(client_level->clips_by_layer_norms());
  CHECK_THROWS_WITH_AS(client_level->clip_factors(torch::ones({2, 3}), test::step_context(layout, 2, 1)),
                       doctest::Contains("does not clip from layer norms"), Error);
}
