// The client-level mechanisms: fed_sdp (client or server noise), ldp_gaussian, and
// dp_fedavg_adaptive (adaptive clip, count noise, state).
#include <doctest/doctest.h>

#include <cmath>

#include "privacy_fixtures.hpp"
#include "test_support.hpp"

using namespace bulwark;

namespace {

/// Std of the noise a client hook adds to a zero update [d], over `draws` seeds.
double client_noise_std(PrivacyMechanism& mechanism, const ParamLayout& layout, int draws) {
  std::vector<torch::Tensor> samples;
  for (int seed = 1; seed <= draws; ++seed) {
    auto update = torch::zeros({layout.total});
    mechanism.privatize_update(update, test::client_context(layout, static_cast<std::uint64_t>(seed)));
    samples.push_back(update);
  }
  return torch::cat(samples).to(torch::kDouble).std().item<double>();
}

}  // namespace

TEST_CASE("fed_sdp clipping: a long update is scaled to C, a short one untouched, per layer to C/sqrt(m)") {
  const auto layout = test::three_layer_layout();
  auto flat = test::load<PrivacyMechanism>("fed_sdp", "clip = 2.0\nnoise_multiplier = 0.0");
  CHECK(flat->on_client_update());
  CHECK_FALSE(flat->on_server());
  auto rows = test::mixed_gradients(8, layout.total, 5) * 10;  // norms ~0.01 .. 1000
  for (std::int64_t b = 0; b < 8; ++b) {
    const auto original = rows[b].clone();
    auto update = rows[b].clone();
    flat->privatize_update(update, test::client_context(layout, 1));
    const double before = original.norm().item<double>();
    if (before <= 2.0) {
      CHECK(torch::equal(update, original));
    } else {
      CHECK(update.norm().item<double>() == doctest::Approx(2.0).epsilon(1e-5));
    }
  }
  auto per_layer = test::load<PrivacyMechanism>("fed_sdp", "clip = 2.0\nnoise_multiplier = 0.0\nclipping = \"per_layer\"");
  auto update = rows[7].clone();
  per_layer->privatize_update(update, test::client_context(layout, 1));
  auto norms = test::layer_norms(update.unsqueeze(0), layout);
  CHECK((norms <= 2.0 / std::sqrt(3.0) + 1e-6).all().item<bool>());
  CHECK(update.norm().item<double>() <= 2.0 + 1e-6);
}

TEST_CASE("fed_sdp noise: N(0, sigma^2 C^2) per upload at the client, sigma C / K_t on the mean at the server") {
  const auto layout = test::flat_layout(50000);
  auto client = test::load<PrivacyMechanism>("fed_sdp", "clip = 0.5\nnoise_multiplier = 1.2");
  CHECK(client_noise_std(*client, layout, 8) == doctest::Approx(1.2 * 0.5).epsilon(0.02));

  auto server = test::load<PrivacyMechanism>("fed_sdp", "clip = 0.5\nnoise_multiplier = 1.2\nnoise_at = \"server\"");
  CHECK(server->on_server());
  CHECK(client_noise_std(*server, layout, 1) == 0.0);  // clients only clip
  std::vector<torch::Tensor> samples;
  for (std::uint64_t seed = 1; seed <= 8; ++seed) {
    auto aggregate = torch::zeros({layout.total});
    server->privatize_aggregate(aggregate, test::server_context(layout, /*clients=*/4, seed));
    samples.push_back(aggregate);
  }
  CHECK(torch::cat(samples).to(torch::kDouble).std().item<double>() == doctest::Approx(1.2 * 0.5 / 4).epsilon(0.02));
}

TEST_CASE("fed_sdp accounting: client level, one step per round at q = K_t/K with noise multiplier sigma") {
  RoundAccountingInfo info;
  info.client_sampling_rate = 0.1;
  info.example_sampling_rate = 0.5;
  info.local_steps = 100;
  auto events = test::load<PrivacyMechanism>("fed_sdp", "noise_multiplier = 1.1")->accounting(info);
  REQUIRE(events.size() == 1);
  CHECK(events[0].level == PrivacyLevel::Client);
  CHECK(events[0].sampling_rate == 0.1);
  CHECK(events[0].noise_multiplier == 1.1);
  CHECK(events[0].steps == 1);
}

TEST_CASE("fed_sdp per_layer_c: every layer to C as Algorithm 1 writes it, accounted at sigma/sqrt(m) or the paper's sigma") {
  const auto layout = test::three_layer_layout();
  auto rows = test::mixed_gradients(8, layout.total, 5) * 10;
  auto per_layer_c = test::load<PrivacyMechanism>("fed_sdp", "clip = 2.0\nnoise_multiplier = 0.0\nclipping = \"per_layer_c\"");
  auto update = rows[7].clone();
  const auto before = test::layer_norms(rows[7].unsqueeze(0), layout);
  per_layer_c->privatize_update(update, test::client_context(layout, 1));
  const auto after = test::layer_norms(update.unsqueeze(0), layout);
  REQUIRE((before > 2.0).any().item<bool>());
  // A layer above C lands on C; one within it is untouched.
  CHECK(torch::allclose(after, torch::where(before > 2.0, torch::full_like(before, 2.0), before), 1e-5, 1e-6));
  CHECK(update.norm().item<double>() > 2.0 + 1e-3);  // more than flat's bound: the sensitivity is C sqrt(m)

  RoundAccountingInfo info;
  info.client_sampling_rate = 0.1;
  info.layout = &layout;
  auto loaded = [](const std::string& extra) {
    return test::load<PrivacyMechanism>("fed_sdp", "noise_multiplier = 6.0\nclipping = \"per_layer_c\"" + extra);
  };
  CHECK(loaded("")->accounting(info)[0].noise_multiplier == doctest::Approx(6.0 / std::sqrt(3.0)));
  CHECK(loaded("\npaper_accounting = true")->accounting(info)[0].noise_multiplier == 6.0);
  CHECK_THROWS_WITH_AS(test::load<PrivacyMechanism>("fed_sdp", "paper_accounting = true"),
                       doctest::Contains("paper_accounting applies to clipping = \"per_layer_c\" only"), Error);
}

TEST_CASE("ldp_gaussian: optional clipping, N(0, s^2) on every upload, epsilon only with clipping") {
  const auto layout = test::flat_layout(50000);
  auto noisy = test::load<PrivacyMechanism>("ldp_gaussian", "std = 0.3");
  CHECK(client_noise_std(*noisy, layout, 8) == doctest::Approx(0.3).epsilon(0.02));
  RoundAccountingInfo info;
  info.client_sampling_rate = 0.1;
  CHECK(noisy->accounting(info).empty());  // unbounded sensitivity: no guarantee to report

  auto clipped = test::load<PrivacyMechanism>("ldp_gaussian", "std = 0.0\nclip = 1.5");
  auto update = torch::full({layout.total}, 1.0f);
  clipped->privatize_update(update, test::client_context(layout, 1));
  CHECK(update.norm().item<double>() == doctest::Approx(1.5).epsilon(1e-5));

  auto both = test::load<PrivacyMechanism>("ldp_gaussian", "std = 3.0\nclip = 1.5");
  auto events = both->accounting(info);
  REQUIRE(events.size() == 1);
  CHECK(events[0].level == PrivacyLevel::Client);
  CHECK(events[0].sampling_rate == 1.0);           // the server sees who uploads: no amplification
  CHECK(events[0].noise_multiplier == 3.0 / 3.0);  // s / (2C): two datasets of a client differ by 2C
  CHECK_THROWS_WITH_AS(test::load<PrivacyMechanism>("ldp_gaussian", ""), doctest::Contains("std"), Error);
}

TEST_CASE("dp_fedavg_adaptive: the clip moves geometrically towards the target quantile") {
  const auto layout = test::flat_layout(4);
  auto mechanism = test::load<PrivacyMechanism>(
      "dp_fedavg_adaptive", "noise_multiplier = 0.0\ncount_noise = 0.0\nclip_init = 1.0\ntarget_quantile = 0.5\nclip_lr = 0.2");
  CHECK(mechanism->on_client_update());
  CHECK(mechanism->on_server());
  auto round = [&](std::vector<double> norms) {
    for (double norm : norms) {
      auto update = torch::tensor({static_cast<float>(norm), 0.f, 0.f, 0.f});
      mechanism->privatize_update(update, test::client_context(layout, 1));
      CHECK(update.norm().item<double>() <= 1.0 + 1e-6);  // C <= 1 in every round below
    }
    auto aggregate = torch::zeros({4});
    mechanism->privatize_aggregate(aggregate, test::server_context(layout, static_cast<std::int64_t>(norms.size()), 1));
    StateDict state;
    mechanism->save_state(state);
    return state.at("clip").item<double>();
  };
  // Round 1, C = 1: norms 0.5, 0.8 fit, 2 and 3 are clipped: b = 2/4 = gamma, C stays 1.
  CHECK(round({0.5, 0.8, 2.0, 3.0}) == doctest::Approx(1.0));
  // Round 2: all 4 fit, b = 1: C = exp(-0.2 (1 - 0.5)) = 0.904837.
  CHECK(round({0.5, 0.5, 0.5, 0.5}) == doctest::Approx(std::exp(-0.1)));
  // Round 3, C = 0.904837: none fits, b = 0: C = 0.904837 exp(0.1) = 1.
  CHECK(round({2.0, 2.0}) == doctest::Approx(1.0));

  // State survives a checkpoint: a fresh instance continues from the saved clip.
  StateDict state;
  mechanism->save_state(state);
  auto restored = test::load<PrivacyMechanism>("dp_fedavg_adaptive", "noise_multiplier = 0.0\ncount_noise = 0.0");
  restored->load_state(state);
  auto update = torch::tensor({3.f, 4.f, 0.f, 0.f});
  restored->privatize_update(update, test::client_context(layout, 1));
  CHECK(update.norm().item<double>() == doctest::Approx(1.0).epsilon(1e-5));
}

TEST_CASE("dp_fedavg_adaptive noise: update noise sigma_Delta C / m with sigma_Delta = (sigma^-2 - (2 sigma_b)^-2)^-1/2") {
  const auto layout = test::flat_layout(50000);
  const std::string options = "noise_multiplier = 1.0\ncount_noise = 1.0\nclip_init = 2.0";
  std::vector<torch::Tensor> samples;
  for (std::uint64_t seed = 1; seed <= 8; ++seed) {
    auto mechanism = test::load<PrivacyMechanism>("dp_fedavg_adaptive", options);  // fresh C = 2 each time
    auto aggregate = torch::zeros({layout.total});
    mechanism->privatize_aggregate(aggregate, test::server_context(layout, /*clients=*/10, seed));
    samples.push_back(aggregate);
  }
  // sigma_Delta = (1 - 1/4)^-1/2 = 1.154701; std = 1.154701 · 2 / 10 = 0.230940
  const double expected = 1.0 / std::sqrt(1.0 - 0.25) * 2.0 / 10.0;
  CHECK(torch::cat(samples).to(torch::kDouble).std().item<double>() == doctest::Approx(expected).epsilon(0.02));
}

TEST_CASE("dp_fedavg_adaptive accounting: client level at the effective sigma, sigma_b <= sigma/2 is an error") {
  RoundAccountingInfo info;
  info.client_sampling_rate = 0.1;
  info.clients_sampled = 100;  // default sigma_b = 100/20 = 5
  auto events = test::load<PrivacyMechanism>("dp_fedavg_adaptive", "noise_multiplier = 1.3")->accounting(info);
  REQUIRE(events.size() == 1);
  CHECK(events[0].level == PrivacyLevel::Client);
  CHECK(events[0].noise_multiplier == 1.3);
  CHECK(events[0].sampling_rate == 0.1);
  CHECK(events[0].steps == 1);
  auto weak = test::load<PrivacyMechanism>("dp_fedavg_adaptive", "noise_multiplier = 1.0\ncount_noise = 0.4");
  CHECK_THROWS_WITH_AS(weak->accounting(info), doctest::Contains("must exceed noise_multiplier / 2"), Error);
}
