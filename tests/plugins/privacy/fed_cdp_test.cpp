// fed_cdp: per-example per-layer clipping, per-example noise left in the rows (or, with noise =
// per_batch, one draw on their sum), clip schedules, and both accounting conventions.
#include <doctest/doctest.h>

#include <cmath>

#include "privacy_fixtures.hpp"
#include "test_support.hpp"

using namespace bulwark;

TEST_CASE("fed_cdp clipping: every layer of every example <= C, smaller layers untouched") {
  auto mechanism = test::load<PrivacyMechanism>("fed_cdp", "clip = 0.3\nnoise_multiplier = 0.0");
  CHECK(mechanism->per_example());
  const auto layout = test::three_layer_layout();
  const auto original = test::mixed_gradients(12, layout.total, 4);
  auto grads = original.clone();
  auto g = mechanism->privatize_gradients(grads, test::step_context(layout, 12, 1));
  auto before = test::layer_norms(original, layout), after = test::layer_norms(grads, layout);
  CHECK((after <= 0.3 + 1e-6).all().item<bool>());
  const auto spans = layer_spans(layout);
  int untouched = 0, clipped = 0;
  for (std::int64_t b = 0; b < 12; ++b) {
    for (std::int64_t j = 0; j < 3; ++j) {
      const auto [offset, length] = spans[j];
      if (before[b][j].item<double>() <= 0.3) {
        CHECK(torch::equal(grads[b].narrow(0, offset, length), original[b].narrow(0, offset, length)));
        ++untouched;
      } else {
        CHECK(after[b][j].item<double>() == doctest::Approx(0.3).epsilon(1e-5));
        ++clipped;
      }
    }
  }
  CHECK(untouched > 3);
  CHECK(clipped > 3);
  // Per-layer clipping to C bounds a whole example by C sqrt(M) (M = 3), not by C.
  CHECK((grads.to(torch::kDouble).norm(2, 1) <= 0.3 * std::sqrt(3.0) + 1e-6).all().item<bool>());
  CHECK(torch::allclose(g, grads.mean(0), 1e-6, 1e-7));
}

TEST_CASE("fed_cdp noise: each example's row gets N(0, sigma^2 C^2), left in place for a type-2 observer") {
  const double sigma = 6.0, clip = 4.0;
  const std::int64_t batch = 5, d = 20000;
  auto mechanism = test::load<PrivacyMechanism>("fed_cdp", "clip = 4.0\nnoise_multiplier = 6.0");
  const auto layout = test::flat_layout(d);
  std::vector<torch::Tensor> rows, means;
  for (std::uint64_t seed = 1; seed <= 4; ++seed) {
    auto grads = torch::zeros({batch, d});
    auto g = mechanism->privatize_gradients(grads, test::step_context(layout, batch, seed));
    CHECK(torch::allclose(g, grads.mean(0), 1e-5, 1e-5));  // the average of the noised rows
    rows.push_back(grads);
    means.push_back(g);
  }
  auto all_rows = torch::cat(rows).to(torch::kDouble);  // 400,000 noise draws
  CHECK(all_rows.std().item<double>() == doctest::Approx(sigma * clip).epsilon(0.02));  // 24
  // Rows are independent: their mean has std sigma C / sqrt(B).
  CHECK(torch::cat(means).to(torch::kDouble).std().item<double>() ==
        doctest::Approx(sigma * clip / std::sqrt(static_cast<double>(batch))).epsilon(0.02));
}

TEST_CASE("fed_cdp clip schedules: constant, linear, exponential and step over the rounds") {
  // One example whose single layer is far above every bound: after clipping its norm is C_t.
  const auto layout = test::flat_layout(8);
  auto clip_at = [&](const std::string& options, std::int64_t round, std::int64_t rounds) {
    auto mechanism = test::load<PrivacyMechanism>("fed_cdp", "noise_multiplier = 0.0\n" + options);
    auto grads = torch::full({1, 8}, 100.0f);
    mechanism->privatize_gradients(grads, test::step_context(layout, 1, 1, round, rounds));
    return grads.norm().item<double>();
  };
  for (std::int64_t t = 1; t <= 5; ++t) {
    INFO("round ", t);
    CHECK(clip_at("clip = 4.0", t, 5) == doctest::Approx(4.0));
    // linear 6 -> 2 over 5 rounds: 6, 5, 4, 3, 2
    CHECK(clip_at("clip = 6.0\nclip_end = 2.0\nschedule = \"linear\"", t, 5) == doctest::Approx(7.0 - t));
    // exponential: 6 (2/6)^((t - 1)/4)
    CHECK(clip_at("clip = 6.0\nclip_end = 2.0\nschedule = \"exponential\"", t, 5) ==
          doctest::Approx(6.0 * std::pow(1.0 / 3.0, (t - 1) / 4.0)));
  }
  // step: 6 halved every 2 rounds, not below 2: 6, 6, 3, 3, 2, 2
  const double steps[] = {6, 6, 3, 3, 2, 2};
  for (std::int64_t t = 1; t <= 6; ++t) {
    CHECK(clip_at("clip = 6.0\nclip_end = 2.0\nschedule = \"step\"\nstep_every = 2\nstep_factor = 0.5", t, 6) ==
          doctest::Approx(steps[t - 1]));
  }
}

TEST_CASE("fed_cdp accounting: true noise multiplier sigma/sqrt(M) by default, sigma with paper_accounting") {
  const auto layout = test::three_layer_layout();  // M = 3
  RoundAccountingInfo info;
  info.example_sampling_rate = 0.01;
  info.local_steps = 100;
  info.layout = &layout;
  auto events = test::load<PrivacyMechanism>("fed_cdp", "noise_multiplier = 6.0")->accounting(info);
  REQUIRE(events.size() == 1);
  CHECK(events[0].level == PrivacyLevel::Example);
  CHECK(events[0].noise_multiplier == doctest::Approx(6.0 / std::sqrt(3.0)));
  CHECK(events[0].sampling_rate == 0.01);
  CHECK(events[0].steps == 100);
  auto paper = test::load<PrivacyMechanism>("fed_cdp", "noise_multiplier = 6.0\npaper_accounting = true")->accounting(info);
  CHECK(paper[0].noise_multiplier == 6.0);
}

TEST_CASE("fed_cdp with unobserved rows draws the B noises as their sum: same mean and std of g") {
  const auto layout = test::three_layer_layout();
  auto exact = test::load<PrivacyMechanism>("fed_cdp", "clip = 0.3\nnoise_multiplier = 0.0");
  const auto original = test::mixed_gradients(12, layout.total, 8);
  auto observed = original.clone(), unobserved = original.clone();
  auto g_observed = exact->privatize_gradients(observed, test::step_context(layout, 12, 1));
  auto context = test::step_context(layout, 12, 1);
  context.rows_observed = false;
  CHECK(torch::allclose(exact->privatize_gradients(unobserved, context), g_observed, 1e-5, 1e-7));
  CHECK(torch::equal(unobserved, original));

  // sigma = 6, C = 4, B = 5: g carries N(0, (6 · 4)² / 5), std 10.733, exactly as the observed path.
  auto noisy = test::load<PrivacyMechanism>("fed_cdp", "clip = 4.0\nnoise_multiplier = 6.0");
  CHECK(test::noise_std(*noisy, 5, /*rows_observed=*/false) == doctest::Approx(24.0 / std::sqrt(5.0)).epsilon(0.02));
}

TEST_CASE("fed_cdp noise = per_batch: rows clipped but not noised, one N(0, sigma^2 C^2) on their sum") {
  const auto layout = test::three_layer_layout();
  const auto original = test::mixed_gradients(12, layout.total, 9);
  auto clipped = original.clone();
  test::load<PrivacyMechanism>("fed_cdp", "clip = 0.3\nnoise_multiplier = 0.0")
      ->privatize_gradients(clipped, test::step_context(layout, 12, 1));
  auto per_batch = test::load<PrivacyMechanism>("fed_cdp", "clip = 0.3\nnoise_multiplier = 6.0\nnoise = \"per_batch\"");
  auto rows = original.clone();
  auto g = per_batch->privatize_gradients(rows, test::step_context(layout, 12, 1));
  CHECK(torch::equal(rows, clipped));  // what a type-2 observer sees: clipped, un-noised
  CHECK_FALSE(torch::allclose(g, clipped.mean(0), 1e-3, 1e-3));

  // sigma = 6, C = 4, B = 5: g carries N(0, (6 · 4 / 5)²), std 4.8, whether or not rows are observed.
  auto noisy = test::load<PrivacyMechanism>("fed_cdp", "clip = 4.0\nnoise_multiplier = 6.0\nnoise = \"per_batch\"");
  for (bool observed : {true, false}) {
    CAPTURE(observed);
    CHECK(test::noise_std(*noisy, 5, observed) == doctest::Approx(24.0 / 5.0).epsilon(0.02));
  }
  // The accountant is charged as for Algorithm 2.
  bulwark::RoundAccountingInfo info;
  info.layout = &layout;
  info.example_sampling_rate = 0.01;
  info.local_steps = 100;
  CHECK(per_batch->accounting(info)[0].noise_multiplier ==
        test::load<PrivacyMechanism>("fed_cdp", "clip = 0.3\nnoise_multiplier = 6.0")->accounting(info)[0].noise_multiplier);
}
