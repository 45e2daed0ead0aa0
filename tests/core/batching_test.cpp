// Client-batched training (DESIGN.md §7): the stacked form of every zoo model against the model
// evaluated client by client, and the engine with clients.batching on against off, with and
// without privacy.
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <torch/torch.h>

#include "bulwark/clipping.hpp"
#include "bulwark/rng.hpp"
#include "config.hpp"
#include "engine.hpp"
#include "models.hpp"
#include "settings.hpp"
#include "test_support.hpp"
#include "tiny_experiment.hpp"

using namespace bulwark;
using torch::Tensor;

namespace {

constexpr std::int64_t kClients = 3, kBatch = 4;

double max_abs(const Tensor& t) { return t.abs().max().item<double>(); }

/// ∇ of each client's mean cross-entropy, [K, d]: one autograd pass per client on the model.
Tensor client_gradients(const Model& model, const Tensor& params, const Tensor& x, const Tensor& y) {
  std::vector<Tensor> rows;
  for (std::int64_t k = 0; k < params.size(0); ++k) {
    auto p = params[k].detach().requires_grad_(true);
    auto loss = torch::cross_entropy_loss(model.forward(p, x.narrow(0, k * kBatch, kBatch)),
                                          y.narrow(0, k * kBatch, kBatch));
    rows.push_back(torch::autograd::grad({loss}, {p})[0]);
  }
  return torch::stack(rows);
}

Tensor stacked_gradients(const bulwark::detail::StackedModel& model, const Tensor& params, const Tensor& x, const Tensor& y) {
  auto p = params.detach().requires_grad_(true);
  auto losses = torch::cross_entropy_loss(model.forward_stacked(p, x), y, {}, at::Reduction::None)
                    .view({params.size(0), kBatch})
                    .mean(1);
  return torch::autograd::grad({losses.sum()}, {p})[0];
}

struct ZooCase {
  std::string toml;
  std::vector<std::int64_t> shape;
};

const std::vector<ZooCase>& zoo_cases() {
  static const std::vector<ZooCase> cases = {
      {"arch = \"softmax\"", {1, 28, 28}},
      {"arch = \"mlp\"\nhidden = [24, 12]\nactivation = \"sigmoid\"", {54}},
      {"arch = \"cnn\"", {1, 28, 28}},
      {"arch = \"cnn\"\ngroups = 1\nactivation = \"relu\"", {3, 15, 15}},
      {"arch = \"lenet\"", {3, 32, 32}},
      {"arch = \"cnn2\"\nactivation = \"sigmoid\"", {1, 28, 28}},
      // Every kind a layers list adds, residual blocks with and without a 1x1 shortcut included.
      {"arch = \"layers\"\nactivation = \"tanh\"\nlayers = \"conv 4 3 padding=1 bias=false, groupnorm per_group=2, "
       "act, residual 4 per_group=2, avgpool 2, residual 8 stride=2 per_group=4, globalavgpool, linear 6 bias=false, "
       "sigmoid, linear classes\"",
       {3, 12, 12}},
      // Convolutions on small maps, where ghost norms beat forming the rows (2L² < out·C·k·k).
      {"arch = \"layers\"\nlayers = \"conv 16 3, relu, conv 32 3 padding=1, groupnorm 4, residual 32 stride=2 per_group=8, "
       "flatten, linear classes\"",
       {3, 6, 6}},
  };
  return cases;
}

// The case's model and its client-batched form.
std::pair<std::unique_ptr<Model>, const bulwark::detail::StackedModel*> zoo_model(const ZooCase& c) {
  auto model = build_model(options_from_string(c.toml, model_option_specs(), "model"), c.shape, 10);
  const auto* stacked = dynamic_cast<const bulwark::detail::StackedModel*>(model.get());
  REQUIRE(stacked != nullptr);
  return {std::move(model), stacked};
}

// K clients' parameters, away from θ0 and from each other as after some local steps, and their batches.
struct StackedBatch {
  Tensor params, x, y;
};

StackedBatch stacked_batch(const Model& model, const std::vector<std::int64_t>& shape) {
  const auto d = model.layout().total;
  std::vector<std::int64_t> sizes{kClients * kBatch};
  sizes.insert(sizes.end(), shape.begin(), shape.end());
  return {model.initial_parameters(1).unsqueeze(0) + 0.1 * torch::randn({kClients, d}, make_generator(2)),
          torch::rand(sizes, make_generator(3)),
          torch::randint(10, {kClients * kBatch}, make_generator(4), torch::kLong)};
}

}  // namespace

TEST_CASE("stacked zoo models: K clients at once equal each client on the model, and a client's numbers do not depend on K") {
  for (const auto& c : zoo_cases()) {
    CAPTURE(c.toml);
    const auto [model, stacked] = zoo_model(c);
    const auto [params, x, y] = stacked_batch(*model, c.shape);

    auto logits = stacked->forward_stacked(params, x);
    Tensor row_losses;
    auto per_example = stacked->per_example_gradients_stacked(params, x, y, &row_losses).clone();
    CHECK(max_abs(row_losses - torch::cross_entropy_loss(logits, y, {}, at::Reduction::None)) <= 1e-5);
    for (std::int64_t k = 0; k < kClients; ++k) {
      CAPTURE(k);
      auto xk = x.narrow(0, k * kBatch, kBatch), yk = y.narrow(0, k * kBatch, kBatch);
      CHECK(max_abs(logits.narrow(0, k * kBatch, kBatch) - model->forward(params[k], xk)) <= 1e-5);
      auto expected = model->per_example_gradients(params[k], xk, yk);
      CHECK(max_abs(per_example.narrow(0, k * kBatch, kBatch) - expected) <= 1e-5 * std::max(1.0, max_abs(expected)));
      // A single θ [d] takes the model's own path.
      CHECK(torch::equal(stacked->per_example_gradients_stacked(params[k], xk, yk, nullptr), expected));
    }
    auto expected = client_gradients(*model, params, x, y);
    auto gradients = stacked_gradients(*stacked, params, x, y);
    CHECK(max_abs(gradients - expected) <= 1e-5 * std::max(1.0, max_abs(expected)));

    // Client 1 alone (K = 1) and with two others (K = 3): bit for bit, which is what lets the
    // engine cut a round into chunks by thread count.
    auto alone_params = params.narrow(0, 1, 1), alone_x = x.narrow(0, kBatch, kBatch), alone_y = y.narrow(0, kBatch, kBatch);
    CHECK(torch::equal(stacked->forward_stacked(alone_params, alone_x), logits.narrow(0, kBatch, kBatch)));
    CHECK(torch::equal(stacked->per_example_gradients_stacked(alone_params, alone_x, alone_y, nullptr),
                       per_example.narrow(0, kBatch, kBatch)));
    CHECK(torch::equal(stacked_gradients(*stacked, alone_params, alone_x, alone_y), gradients[1].unsqueeze(0)));
  }
}

namespace {

// Each layer clipped to its own bound, with bounds that clip some rows and not others.
Tensor clip_to(const Tensor& bounds, const Tensor& norms) { return torch::clamp_max(bounds.unsqueeze(0) / norms, 1.0); }

// Ghost clipping of K clients' batches (x, y: K equal groups of rows) against the definition from
// the materialised rows: the per-layer norms in double (a float norm over 10^5 entries is itself
// off by several 1e-6; the ghost norms are closer to the truth) and each client's clipped sum, to
// 1e-6. Returns the sums.
Tensor check_ghost_against_rows(const bulwark::detail::StackedModel& stacked, const ParamLayout& layout,
                                const Tensor& params, const Tensor& x, const Tensor& y, const Tensor& bounds) {
  const auto clients = params.size(0), batch = x.size(0) / clients;
  Tensor seen_norms;
  auto sums = stacked.clipped_gradient_sums_stacked(
      params, x, y,
      [&](const Tensor& norms) {
        seen_norms = norms.clone();
        return clip_to(bounds, norms);
      },
      nullptr);
  REQUIRE(sums.sizes() == torch::IntArrayRef{clients, layout.total});
  auto rows = stacked.per_example_gradients_stacked(params, x, y, nullptr).clone();
  auto norms = layer_norms(rows.to(torch::kDouble), layout);
  CHECK(max_abs(seen_norms.to(torch::kDouble) - norms) <= 1e-6 * std::max(1.0, max_abs(norms)));
  auto factors = clip_to(bounds, norms.to(torch::kFloat));
  auto expected = torch::zeros_like(sums);
  const auto spans = layer_spans(layout);
  for (std::size_t j = 0; j < spans.size(); ++j) {
    const auto [offset, length] = spans[j];
    auto weighted = rows.narrow(1, offset, length) * factors.select(1, static_cast<std::int64_t>(j)).unsqueeze(1);
    expected.narrow(1, offset, length).copy_(weighted.view({clients, batch, length}).sum(1));
  }
  CHECK(max_abs(sums - expected) <= 1e-6 * std::max(1.0, max_abs(expected)));
  return sums;
}

}  // namespace

TEST_CASE("ghost clipping: each client's clipped sum equals the sum of its clipped rows to 1e-6, stacked or alone") {
  for (const auto& c : zoo_cases()) {
    CAPTURE(c.toml);
    const auto [model, stacked] = zoo_model(c);
    const auto [params, x, y] = stacked_batch(*model, c.shape);
    const auto& layout = model->layout();
    const auto bounds = 0.05 + 0.5 * torch::rand({static_cast<std::int64_t>(layout.layers().size())}, make_generator(5));
    const auto sums = check_ghost_against_rows(*stacked, layout, params, x, y, bounds);

    // Client 1 alone (K = 1) bit for bit; on the model's own single-θ path to 1e-6.
    auto clip = [&](const Tensor& norms) { return clip_to(bounds, norms); };
    auto alone_x = x.narrow(0, kBatch, kBatch), alone_y = y.narrow(0, kBatch, kBatch);
    CHECK(torch::equal(stacked->clipped_gradient_sums_stacked(params.narrow(0, 1, 1), alone_x, alone_y, clip, nullptr),
                       sums.narrow(0, 1, 1)));
    Tensor row_losses;
    auto single = stacked->clipped_gradient_sums_stacked(params[1], alone_x, alone_y, clip, &row_losses);
    CHECK(single.sizes() == torch::IntArrayRef{layout.total});
    CHECK(max_abs(single - sums[1]) <= 1e-6 * std::max(1.0, max_abs(sums[1])));
    CHECK(max_abs(row_losses - torch::cross_entropy_loss(model->forward(params[1], alone_x), alone_y, {},
                                                         at::Reduction::None)) <= 1e-5);
  }
}

TEST_CASE("ghost clipping: a large batch keeps the second convolution's input and output gradient, not its rows, to the same sums") {
  // The CNN's second convolution has more weights per example (12,800) than input and output
  // gradient numbers (9,408); its rows for 2 x 60 examples exceed the 4 MB chunk budget.
  const auto [model, stacked] = zoo_model({"arch = \"cnn\"", {1, 28, 28}});
  const auto d = model->layout().total;
  const auto params = model->initial_parameters(1).unsqueeze(0) + 0.1 * torch::randn({2, d}, make_generator(2));
  const auto x = torch::rand({120, 1, 28, 28}, make_generator(3));
  const auto y = torch::randint(10, {120}, make_generator(4), torch::kLong);
  const auto bounds = 0.05 + 0.5 * torch::rand({static_cast<std::int64_t>(model->layout().layers().size())}, make_generator(5));
  check_ghost_against_rows(*stacked, model->layout(), params, x, y, bounds);
}

TEST_CASE("stacked zoo models: parameters and inputs that do not stack are refused") {
  auto model = build_model(options_from_string("arch = \"softmax\"", model_option_specs(), "model"), {6}, 10);
  const auto* stacked = dynamic_cast<const bulwark::detail::StackedModel*>(model.get());
  REQUIRE(stacked != nullptr);
  const auto d = model->layout().total;
  CHECK_THROWS_WITH_AS(stacked->forward_stacked(torch::zeros({d}), torch::zeros({4, 6})),
                       doctest::Contains("stacked parameters [K, 70]"), Error);
  CHECK_THROWS_WITH_AS(stacked->forward_stacked(torch::zeros({3, d}), torch::zeros({4, 6})),
                       doctest::Contains("K·B inputs"), Error);
}

TEST_CASE("client-batched training gives the one-by-one numbers to 1e-5, with and without privacy") {
  struct Case {
    std::string name, extra;
    std::vector<std::string> overrides;
  };
  // The tiny run: 100 examples per client at B = 16, so every epoch ends on a short batch of 4
  // (padded rows); dirichlet gives clients different sizes, hence step counts (several groups)
  // and clients with fewer than B examples.
  const std::vector<Case> cases = {
      {"plain", "", {}},
      {"decay_dirichlet", "weight_decay = 0.01\n", {"data.partition.scheme=\"dirichlet\"", "data.partition.alpha=0.3"}},
      {"label_flip", "\n[[attack]]\nplugin = \"label_flip\"\nbyzantine = 2\n", {}},
      {"fedsgd_decay", "weight_decay = 0.01\n", {"experiment.mode=\"fedsgd\"", "clients.batch_size=40"}},
      {"cnn", "", {"model.arch=\"cnn\"", "data.shape=[1, 8, 8]", "clients.local_iterations=3"}},
      {"dp_sgd", "\n[privacy]\nplugin = \"dp_sgd\"\nclip = 0.5\nnoise_multiplier = 0.8\n", {}},
      {"fed_cdp", "\n[privacy]\nplugin = \"fed_cdp\"\nclip = 1.0\nnoise_multiplier = 0.5\n", {"data.partition.scheme=\"dirichlet\""}},
      {"fed_sdp", "\n[privacy]\nplugin = \"fed_sdp\"\nclip = 1.0\nnoise_multiplier = 0.3\n", {}},
  };
  for (const auto& c : cases) {
    CAPTURE(c.name);
    auto off_overrides = c.overrides, on_overrides = c.overrides;
    off_overrides.push_back("clients.batching=\"off\"");
    on_overrides.push_back("clients.batching=\"on\"");
    on_overrides.push_back("clients.batch_clients=3");  // 4 clients a round: chunks of several sizes
    auto off = test::run_tiny("batching_" + c.name + "_off", c.extra, off_overrides);
    auto on = test::run_tiny("batching_" + c.name + "_on", c.extra, on_overrides);
    REQUIRE(off.metrics.size() == on.metrics.size());
    for (std::size_t r = 0; r < off.metrics.size(); ++r) {
      CAPTURE(r);
      for (const char* name : {"train_loss", "test_loss"}) {
        CAPTURE(name);
        const double a = test::metric(off.metrics[r], name), b = test::metric(on.metrics[r], name);
        CHECK(std::abs(a - b) <= 1e-5 * std::max(1.0, std::abs(a)));
      }
    }
    // Training did something, so agreeing is not trivial.
    CHECK(test::metric(off.metrics.back(), "train_loss") != test::metric(off.metrics.front(), "train_loss"));
  }
}

TEST_CASE("client-batched training: the same numbers for any thread count and cap on K") {
  const std::vector<std::string> cnn = {"model.arch=\"cnn\"", "data.shape=[1, 8, 8]", "clients.local_iterations=3",
                                        "clients.batching=\"on\""};
  auto reference = test::run_tiny("batching_threads1", "", cnn, 1);
  for (const auto& [threads, cap] : std::vector<std::pair<int, int>>{{2, 32}, {2, 1}, {1, 3}}) {
    CAPTURE(threads);
    CAPTURE(cap);
    auto overrides = cnn;
    overrides.push_back("clients.batch_clients=" + std::to_string(cap));
    auto run = test::run_tiny("batching_threads" + std::to_string(threads) + "_cap" + std::to_string(cap), "", overrides, threads);
    REQUIRE(run.metrics.size() == reference.metrics.size());
    for (std::size_t r = 0; r < run.metrics.size(); ++r) {
      for (const char* name : {"train_loss", "test_loss", "test_accuracy"}) {
        CAPTURE(name);
        CHECK(test::metric(run.metrics[r], name) == test::metric(reference.metrics[r], name));  // bit for bit
      }
    }
  }
}

TEST_CASE("experiment.device = \"cuda\" without a usable GPU is refused with a clear error, not run on the CPU") {
  if (torch::cuda::is_available()) return;  // device_test.cpp covers the GPU
  auto dir = test::scratch_dir("batching_cuda");
  test::write_file(dir / "experiment.toml", test::tiny_experiment());
  CHECK_THROWS_WITH_AS(Engine(load_experiment((dir / "experiment.toml").string(), {"experiment.device=\"cuda\""}),
                              test::registry()),
                       doctest::Contains("set device = \"cpu\""), Error);
}

TEST_CASE("batching = \"auto\" stacks only convolution-free models up to 65,536 parameters, on and off decide alone") {
  ClientSettings clients;
  CHECK(clients.batches("softmax", 7850));
  CHECK(clients.batches("mlp", 65536));
  CHECK_FALSE(clients.batches("mlp", 65537));
  CHECK_FALSE(clients.batches("lenet", 15000));  // small, but ~20x slower stacked at B = 300 (#21)
  CHECK_FALSE(clients.batches("cnn", 20000));
  CHECK_FALSE(clients.batches("torchscript", 100));
  clients.batching = ClientSettings::Batching::On;
  CHECK(clients.batches("lenet", 15000));
  clients.batching = ClientSettings::Batching::Off;
  CHECK_FALSE(clients.batches("softmax", 7850));
}
