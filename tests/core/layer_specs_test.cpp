// Declarative models: `[model] layers` and the named networks of the reference studies. Parameter
// counts worked out by hand, the lists equal to the hand-written zoo members they restate,
// per-example gradients of the new layers (no-bias linear/conv, average pooling, GroupNorm by group
// size, residual blocks, global average pooling) against plain autograd, and every error a
// mistyped list can give. Their client-stacked form is checked with the zoo's in batching_test.cpp.
#include <cstdint>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <torch/torch.h>

#include "bulwark/error.hpp"
#include "bulwark/rng.hpp"
#include "config.hpp"
#include "layer_specs.hpp"
#include "models.hpp"
#include "test_support.hpp"
#include "tiny_experiment.hpp"

namespace {

using torch::Tensor;
namespace F = torch::nn::functional;

std::unique_ptr<bulwark::Model> make(const std::string& toml, const std::vector<std::int64_t>& shape) {
  auto options = bulwark::options_from_string(toml, bulwark::model_option_specs(), "model");
  return bulwark::build_model(options, shape, 10);
}

Tensor inputs(const std::vector<std::int64_t>& shape, std::int64_t batch, std::uint64_t seed) {
  std::vector<std::int64_t> sizes{batch};
  sizes.insert(sizes.end(), shape.begin(), shape.end());
  return torch::rand(sizes, bulwark::make_generator(seed));
}

Tensor labels(std::int64_t batch, std::uint64_t seed) {
  return torch::randint(10, {batch}, bulwark::make_generator(seed), torch::kLong);
}

double max_abs(const Tensor& t) { return t.abs().max().item<double>(); }

// ∇θ of the summed cross-entropy by plain autograd through Model::forward.
Tensor autograd_gradient(const bulwark::Model& model, const Tensor& theta, const Tensor& x, const Tensor& y) {
  auto p = theta.detach().requires_grad_(true);
  auto loss = F::cross_entropy(model.forward(p, x), y, F::CrossEntropyFuncOptions().reduction(torch::kSum));
  return torch::autograd::grad({loss}, {p})[0];
}

// Every new kind in one small network: no-bias conv, GroupNorm by group size, a residual block
// keeping its shape and one that halves it (1x1 shortcut), average pooling, global average pooling
// and a no-bias linear layer.
const char* kEveryKind =
    "arch = \"layers\"\nactivation = \"tanh\"\nlayers = \"conv 4 3 padding=1 bias=false, groupnorm per_group=2, "
    "act, residual 4 per_group=2, avgpool 2, residual 8 stride=2 per_group=4, globalavgpool, linear 6 bias=false, "
    "sigmoid, linear classes\"";

}  // namespace

TEST_CASE("layer specs: the text of [model] layers splits at commas and newlines, blanks trimmed") {
  using bulwark::detail::split_layer_specs;
  CHECK(split_layer_specs("conv 6 5, tanh,avgpool 2") == std::vector<std::string>{"conv 6 5", "tanh", "avgpool 2"});
  CHECK(split_layer_specs("  flatten \n\tlinear classes\r\n") == std::vector<std::string>{"flatten", "linear classes"});
  CHECK(split_layer_specs(" , \n").empty());
}

// d by hand (weights + biases; GroupNorm has a scale and a shift per channel):
//   lenet5_gn 1x28x28: conv1 6·25+6 = 156 (24x24, pool 12x12), gn1 12, conv2 16·6·25+16 = 2,416
//                      (8x8, pool 4x4), gn2 32, fc1 120·256+120 = 30,840, fc2 84·120+84 = 10,164,
//                      fc3 10·84+10 = 850 -> 44,470
//   lenet5_gn 3x32x32: conv1 6·75+6 = 456 (28, 14), 12, 2,416 (10, 5), 32, fc1 120·400+120 = 48,120,
//                      10,164, 850 -> 62,050 (LeNet-5's 62,006 plus 44 GroupNorm parameters)
//   cnn2 1x28x28 (no biases): conv1 32·9 = 288 (26, 13), conv2 64·32·9 = 18,432 (11, 5),
//                      fc 10·64·25 = 16,000 -> 34,720
//   cnn4 1x28x28: 32·9+32 = 320, 32·32·9+32 = 9,248 (pool 14), 64·32·9+64 = 18,496,
//                 64·64·9+64 = 36,928 (pool 7), fc 10·64·49+10 = 31,370 -> 96,362
//   vgg11_gn 3x32x32: convs 1,792 + 73,856 + 295,168 + 590,080 + 1,180,160 + 3·2,359,808 = 9,220,480,
//                     GroupNorm 2·(64+128+2·256+4·512) = 5,504, linear 262,656·2 + 5,130 -> 9,756,426
//   resnet18 3x32x32: 11,173,962, the count of the usual CIFAR ResNet-18 (BatchNorm's affine
//                     parameters and GroupNorm's are both two per channel)
TEST_CASE("layer specs: the named networks have the parameter counts worked out by hand") {
  struct Case {
    std::string arch;
    std::vector<std::int64_t> shape;
    std::int64_t d;
  };
  const std::vector<Case> cases = {
      {"lenet5_gn", {1, 28, 28}, 44470}, {"lenet5_gn", {3, 32, 32}, 62050}, {"cnn2", {1, 28, 28}, 34720},
      {"cnn4", {1, 28, 28}, 96362},      {"vgg11_gn", {3, 32, 32}, 9756426}, {"resnet18", {3, 32, 32}, 11173962},
  };
  for (const auto& c : cases) {
    CAPTURE(c.arch);
    auto model = make("arch = \"" + c.arch + "\"", c.shape);
    CHECK(model->layout().total == c.d);
    CHECK(model->vectorised());
    auto theta = model->initial_parameters(1);
    CHECK(model->forward(theta, inputs(c.shape, 2, 2)).sizes() == torch::IntArrayRef{2, 10});
    CHECK(model->describe().find("d = " + bulwark::detail::thousands(c.d)) != std::string::npos);
  }
  // Only the first conv of cnn2 has no bias term in its layout.
  const auto cnn2 = make("arch = \"cnn2\"", {1, 28, 28});
  const auto& layout = cnn2->layout();
  REQUIRE(layout.entries.size() == 3);
  CHECK(layout.entries[0].name == "conv1.weight");
  CHECK(layout.entries[2].name == "fc1.weight");
  CHECK(make("arch = \"cnn4\"\nactivation = \"tanh\"", {1, 28, 28})->describe() ==
        "cnn4 (12 layers, tanh), d = 96,362");
}

TEST_CASE("layer specs: lists that restate cnn, lenet and mlp give the same θ0 and the same logits") {
  struct Case {
    std::string zoo, listed;
    std::vector<std::int64_t> shape;
  };
  const std::vector<Case> cases = {
      {"arch = \"cnn\"",
       "arch = \"layers\"\nlayers = \"conv 16 3 padding=1, maxpool 2, groupnorm 4, tanh, conv 32 3 padding=1, maxpool 2, groupnorm 4, tanh, "
       "flatten, linear 64, tanh, linear 32, tanh, linear classes\"",
       {1, 28, 28}},
      {"arch = \"lenet\"",
       "arch = \"layers\"\nlayers = \"conv 12 5 stride=2 padding=2, sigmoid, conv 12 5 stride=2 padding=2, sigmoid, conv 12 5 padding=2, "
       "sigmoid, flatten, linear classes\"",
       {3, 32, 32}},
      {"arch = \"mlp\"\nhidden = [24, 12]\nactivation = \"sigmoid\"",
       "arch = \"layers\"\nactivation = \"sigmoid\"\nlayers = \"flatten, linear 24, act, linear 12, act, linear classes\"",
       {54}},
  };
  for (const auto& c : cases) {
    CAPTURE(c.zoo);
    auto zoo = make(c.zoo, c.shape);
    auto listed = make(c.listed, c.shape);
    REQUIRE(listed->layout().total == zoo->layout().total);
    auto theta = zoo->initial_parameters(4);
    CHECK(torch::equal(listed->initial_parameters(4), theta));
    auto x = inputs(c.shape, 3, 5);
    CHECK(torch::equal(listed->forward(theta, x), zoo->forward(theta, x)));
  }
}

TEST_CASE("layer specs: per-example gradients of the new layers equal the batch-size-1 autograd loop") {
  struct Case {
    std::string toml;
    std::vector<std::int64_t> shape;
  };
  const std::vector<Case> cases = {
      {kEveryKind, {3, 12, 12}},
      {"arch = \"lenet5_gn\"", {1, 28, 28}},
      {"arch = \"cnn2\"\nactivation = \"sigmoid\"", {1, 28, 28}},
  };
  for (const auto& c : cases) {
    CAPTURE(c.toml);
    auto model = make(c.toml, c.shape);
    // Away from θ0, so GroupNorm's scales and shifts are not 1 and 0.
    auto theta = model->initial_parameters(3) + 0.2 * torch::randn({model->layout().total}, bulwark::make_generator(4));
    auto x = inputs(c.shape, 5, 5);
    auto y = labels(5, 6);
    auto per_example = model->per_example_gradients(theta, x, y);
    REQUIRE(per_example.sizes() == torch::IntArrayRef{5, model->layout().total});
    for (std::int64_t b = 0; b < 5; ++b) {
      CAPTURE(b);
      auto row = autograd_gradient(*model, theta, x.narrow(0, b, 1), y.narrow(0, b, 1));
      CHECK(max_abs(row) > 0);
      CHECK(max_abs(per_example[b] - row) <= 1e-5 * std::max(1.0, max_abs(row)));
    }
  }
}

TEST_CASE("layer specs: a mistyped list is a configuration error naming the spec and what to write") {
  auto fails = [](const std::string& layers, const std::string& message, std::vector<std::int64_t> shape = {1, 8, 8}) {
    CAPTURE(layers);
    CHECK_THROWS_WITH_AS(make("arch = \"layers\"\nlayers = \"" + layers + "\"", shape),
                         doctest::Contains(message.c_str()), bulwark::Error);
    try {
      make("arch = \"layers\"\nlayers = \"" + layers + "\"", shape);
    } catch (const bulwark::Error& e) {
      CHECK((e.kind() == bulwark::ErrorKind::Config));
    }
  };
  fails("flatten, lineer 16", "[model] layers[1] = \"lineer 16\": unknown layer 'lineer'; expected linear, conv");
  fails("conv 6", "[model] layers[0] = \"conv 6\": needs a kernel size after the channels, e.g. \"conv 16 5\"");
  fails("conv six 5", "output channels must be a whole number >= 1, found 'six'");
  fails("conv 6 5 stride=0", "stride must be a whole number >= 1, found '0'");
  fails("conv 6 5 padding=-1", "padding must be a whole number >= 0, found '-1'");
  fails("conv 6 5 groups=2", "unknown key 'groups'; valid: stride, padding, bias");
  fails("conv 6 5 bias=no", "bias must be true or false, found 'no'");
  fails("conv 6 5 7", "too many values; write it as \"conv 16 5 stride=1 padding=2\"");
  fails("flatten, linear", "needs a width or 'classes', e.g. \"linear 120\"");
  fails("flatten x", "too many values; write it as \"flatten\"");
  fails("tanh stride=2", "unknown key 'stride'; tanh takes none");
  fails("groupnorm", "give the number of groups or per_group=<channels>");
  fails("groupnorm 2 per_group=4", "give the number of groups or per_group=<channels>");
  fails(" , ", "[model] layers is empty; list the layers");
  fails("flatten, linear 16", "ends in shape [16], not one logit per class [10]; end the layers with \"linear classes\"");
  fails("linear classes", "[model] arch = \"layers\"");
  fails("conv 4 3, groupnorm 3, flatten, linear classes", "3 groups do not divide 4 channels");
  fails("conv 4 9, flatten, linear classes", "[model] arch = \"layers\"");

  CHECK_THROWS_WITH_AS(make("arch = \"layers\"", {1, 8, 8}), doctest::Contains("needs layers = [...]"),
                       bulwark::Error);
  CHECK_THROWS_WITH_AS(make("arch = \"mlp\"\nlayers = \"flatten\"", {54}),
                       doctest::Contains("does not read layers; set arch = \"layers\""), bulwark::Error);
  CHECK_THROWS_WITH_AS(make("arch = \"lenet5_gn\"\nactivation = \"relu\"", {1, 28, 28}),
                       doctest::Contains("has fixed activations and does not read activation"), bulwark::Error);
  CHECK_THROWS_WITH_AS(make("arch = \"vgg11_gn\"", {1, 28, 28}), doctest::Contains("smaller than the window"),
                       bulwark::Error);
}

TEST_CASE("layer specs: a TOML array of specs trains exactly like the zoo mlp it restates") {
  // The tiny experiment's mlp (hidden = [16], relu) written as a list: the same run, number for number.
  // Both train client by client (batching = "auto" stacks only the zoo's softmax and mlp).
  auto zoo = bulwark::test::run_tiny("layers_zoo", "", {"clients.batching=\"off\""});
  auto listed = bulwark::test::run_tiny("layers_listed", "",
                                        {"clients.batching=\"off\"", "model.arch=\"layers\"",
                                         "model.layers=[\"linear 16\", \"relu\", \"linear classes\"]"});
  REQUIRE(zoo.metrics.size() == 3);
  CHECK(bulwark::test::same_numbers(listed, zoo));
}

TEST_CASE("layer specs: the host binary names a layers array it cannot use and runs one it can") {
  const auto dir = bulwark::test::scratch_dir("layers_cli");
  bulwark::test::write_file(dir / "tiny.toml", bulwark::test::tiny_experiment());
  auto run = [&](const std::string& layers, const std::string& out) {
    return bulwark::test::run_bulwark({"run", (dir / "tiny.toml").string(), "--out", (dir / out).string(), "--set",
                                       "model.arch=\"layers\"", "--set", "model.layers=" + layers});
  };
  auto good = run("[\"linear 16\", \"tanh\", \"linear classes\"]", "good");
  REQUIRE(good.exit_code == 0);
  CHECK(bulwark::test::read_file(dir / "good" / "summary.json").find("layers (linear 16, tanh, linear classes), d = ") !=
        std::string::npos);
  auto not_string = run("[\"linear 16\", 3]", "not_string");
  CHECK(not_string.exit_code != 0);
  CHECK(not_string.output.find("[model] layers: every layer is a string") != std::string::npos);
  auto joined = run("[\"linear 16, relu\", \"linear classes\"]", "joined");
  CHECK(joined.exit_code != 0);
  CHECK(joined.output.find("one layer per string, found \"linear 16, relu\"") != std::string::npos);
  auto unknown = run("[\"linear 16\", \"relu6\", \"linear classes\"]", "unknown");
  CHECK(unknown.exit_code != 0);
  CHECK(unknown.output.find("[model] layers[1] = \"relu6\": unknown layer 'relu6'") != std::string::npos);
}
