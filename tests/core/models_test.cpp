// The model zoo: shapes and parameter counts (worked out by hand below), PyTorch's default
// initialisation, training through the flat θ, equality with a reference built from plain ATen
// ops, twice-differentiability, thread safety, the TorchScript member and every promised error.
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include <doctest/doctest.h>
#include <torch/script.h>
#include <torch/torch.h>

#include "bulwark/error.hpp"
#include "bulwark/rng.hpp"
#include "config.hpp"
#include "models.hpp"
#include "test_support.hpp"

namespace {

using torch::Tensor;
namespace F = torch::nn::functional;

std::unique_ptr<bulwark::Model> make(const std::string& toml,
                                     const std::vector<std::int64_t>& shape,
                                     std::int64_t classes = 10) {
  auto options = bulwark::options_from_string(toml, bulwark::model_option_specs(), "model");
  return bulwark::build_model(options, shape, classes);
}

Tensor batch_of(const std::vector<std::int64_t>& shape, std::int64_t batch, std::uint64_t seed) {
  std::vector<std::int64_t> sizes{batch};
  sizes.insert(sizes.end(), shape.begin(), shape.end());
  auto generator = bulwark::make_generator(seed);
  return torch::rand(sizes, generator);
}

Tensor labels_of(std::int64_t batch, std::int64_t classes, std::uint64_t seed) {
  auto generator = bulwark::make_generator(seed);
  return torch::randint(classes, {batch}, generator, torch::kLong);
}

Tensor summed_loss(const bulwark::Model& model, const Tensor& params, const Tensor& x,
                   const Tensor& y) {
  return F::cross_entropy(model.forward(params, x), y,
                          F::CrossEntropyFuncOptions().reduction(torch::kSum));
}

Tensor gradient(const bulwark::Model& model, const Tensor& theta, const Tensor& x,
                const Tensor& y) {
  auto p = theta.detach().requires_grad_(true);
  return torch::autograd::grad({summed_loss(model, p, x, y)}, {p})[0];
}

std::size_t entry(const bulwark::ParamLayout& layout, const std::string& name) {
  for (std::size_t i = 0; i < layout.entries.size(); ++i) {
    if (layout.entries[i].name == name) return i;
  }
  FAIL("no layout entry " << name);
  return 0;
}

double max_abs(const Tensor& t) {
  return t.abs().max().item<double>();
}

struct ZooCase {
  std::string toml;
  std::vector<std::int64_t> shape;
  std::int64_t d;  // worked out in the comment of the test below
};

// d by hand (weights + biases):
//   softmax 1x28x28: 784·10 + 10 = 7,850
//   mlp 784-200-200-10: 784·200+200 + 200·200+200 + 200·10+10 = 157,000 + 40,200 + 2,010 = 199,210
//   mlp on tabular [54], hidden [32]: 54·32+32 + 32·10+10 = 1,760 + 330 = 2,090
//   cnn 1x28x28: conv1 16·1·9+16 = 160, gn1 32, conv2 32·16·9+32 = 4,640, gn2 64,
//                fc1 64·(32·7·7)+64 = 100,416, fc2 32·64+32 = 2,080, fc3 10·32+10 = 330 -> 107,722
//   cnn 3x32x32: conv1 16·27+16 = 448, gn1 32, conv2 4,640, gn2 64, fc1 64·(32·8·8)+64 = 131,136,
//                fc2 2,080, fc3 330 -> 138,730
//   lenet 1x28x28: conv1 12·1·25+12 = 312, conv2 = conv3 = 12·12·25+12 = 3,612,
//                  fc 10·(12·7·7)+10 = 5,890 -> 13,426
//   lenet 3x32x32: conv1 12·3·25+12 = 912, 3,612, 3,612, fc 10·(12·8·8)+10 = 7,690 -> 15,826
const std::vector<ZooCase>& zoo() {
  static const std::vector<ZooCase> cases = {
      {"arch = \"softmax\"", {1, 28, 28}, 7850},
      {"arch = \"mlp\"", {1, 28, 28}, 199210},
      {"arch = \"mlp\"\nhidden = [32]\nactivation = \"tanh\"", {54}, 2090},
      {"arch = \"cnn\"", {1, 28, 28}, 107722},
      {"arch = \"cnn\"", {3, 32, 32}, 138730},
      {"arch = \"lenet\"", {1, 28, 28}, 13426},
      {"arch = \"lenet\"", {3, 32, 32}, 15826},
  };
  return cases;
}

}  // namespace

TEST_CASE("model zoo: logits shape, layout covering d exactly, and the description") {
  for (const auto& c : zoo()) {
    CAPTURE(c.toml);
    auto model = make(c.toml, c.shape);
    const auto& layout = model->layout();
    CHECK(layout.total == c.d);
    std::int64_t offset = 0;
    for (const auto& e : layout.entries) {
      CHECK(e.offset == offset);
      offset += e.numel;
    }
    CHECK(offset == c.d);
    auto theta = model->initial_parameters(1);
    CHECK(theta.sizes() == torch::IntArrayRef{c.d});
    CHECK((theta.scalar_type() == torch::kFloat));
    auto logits = model->forward(theta, batch_of(c.shape, 3, 2));
    CHECK(logits.sizes() == torch::IntArrayRef{3, 10});
    CHECK(model->describe().find("d = " + bulwark::detail::thousands(c.d)) != std::string::npos);
    CHECK(model->vectorised());
  }
  CHECK(make("arch = \"cnn\"", {1, 28, 28})->describe() ==
        "cnn (2 conv + 3 linear, GroupNorm, tanh), d = 107,722");
  CHECK(make("arch = \"softmax\"", {1, 28, 28})->describe() ==
        "softmax (linear 784 -> 10), d = 7,850");
  CHECK(make("arch = \"mlp\"", {1, 28, 28})->describe() ==
        "mlp (784-200-200-10, relu), d = 199,210");
  CHECK(make("arch = \"cnn\"\nactivation = \"relu\"", {1, 28, 28})->describe().find("relu") !=
        std::string::npos);
  CHECK(make("arch = \"cnn\"\ngroups = 8", {1, 28, 28})->layout().total == 107722);
}

TEST_CASE("model zoo: the [model] schema documents every option and defaults to the cnn") {
  for (const auto& spec : bulwark::model_option_specs()) {
    CAPTURE(spec.name);
    CHECK(spec.doc != nullptr);
    CHECK(std::string(spec.doc).size() > 10);
  }
  auto defaults = bulwark::options_from_string("", bulwark::model_option_specs(), "model");
  CHECK(defaults.get<std::string>("arch") == "cnn");
  CHECK(defaults.get<std::vector<double>>("hidden") == std::vector<double>{200, 200});
  CHECK_THROWS_AS(
      bulwark::options_from_string("arch = \"resnet\"", bulwark::model_option_specs(), "model"),
      bulwark::Error);
}

TEST_CASE("model zoo: initial parameters are deterministic per seed and differ across seeds") {
  for (const auto& c : zoo()) {
    CAPTURE(c.toml);
    auto model = make(c.toml, c.shape);
    CHECK(torch::equal(model->initial_parameters(7), model->initial_parameters(7)));
    CHECK_FALSE(torch::equal(model->initial_parameters(7), model->initial_parameters(8)));
    // A second model built from the same options draws the same θ0.
    CHECK(torch::equal(model->initial_parameters(7), make(c.toml, c.shape)->initial_parameters(7)));
  }
}

TEST_CASE("model zoo: PyTorch's default initialisation, layer by layer") {
  auto model = make("arch = \"cnn\"", {1, 28, 28});
  const auto& layout = model->layout();
  auto theta = model->initial_parameters(3);
  // kaiming_uniform(a = √5) and the bias both give U(±1/√fan_in): fan_in of conv1 is 1·3·3 = 9,
  // of conv2 16·3·3 = 144, of fc1 1,568. The largest draw of a few hundred comes close to the
  // bound.
  const std::vector<std::pair<std::string, double>> fan_ins = {
      {"conv1.weight", 9}, {"conv2.weight", 144}, {"fc1.weight", 1568},
      {"fc1.bias", 1568},  {"fc2.weight", 64},    {"fc3.weight", 32}};
  for (const auto& [name, fan_in] : fan_ins) {
    CAPTURE(name);
    const double bound = 1.0 / std::sqrt(fan_in);
    auto values = layout.view(theta, entry(layout, name));
    CHECK(max_abs(values) <= bound);
    CHECK(max_abs(values) > 0.8 * bound);
  }
  CHECK(torch::equal(layout.view(theta, entry(layout, "gn1.weight")), torch::ones({16})));
  CHECK(torch::equal(layout.view(theta, entry(layout, "gn2.bias")), torch::zeros({32})));

  // init = "dlg": every weight and bias U(-0.5, 0.5), as in Zhu et al.'s code.
  auto dlg = make("arch = \"lenet\"\ninit = \"dlg\"", {3, 32, 32})->initial_parameters(3);
  CHECK(dlg.max().item<double>() <= 0.5);
  CHECK(dlg.min().item<double>() >= -0.5);
  CHECK(max_abs(dlg) > 0.49);
}

TEST_CASE("model zoo: init xavier draws Glorot-uniform weights with zero biases, init zeros gives theta0 = 0") {
  auto model = make("arch = \"cnn\"\ninit = \"xavier\"", {1, 28, 28});
  const auto& layout = model->layout();
  auto theta = model->initial_parameters(3);
  // Bound √(6 / (fan_in + fan_out)): a convolution's fans are channels × 3 × 3.
  const std::vector<std::pair<std::string, double>> fans = {
      {"conv1.weight", 9 + 144}, {"conv2.weight", 144 + 288}, {"fc1.weight", 1568 + 64}, {"fc3.weight", 32 + 10}};
  for (const auto& [name, fan_sum] : fans) {
    CAPTURE(name);
    const double bound = std::sqrt(6.0 / fan_sum);
    auto values = layout.view(theta, entry(layout, name));
    CHECK(max_abs(values) <= bound);
    CHECK(max_abs(values) > 0.8 * bound);
  }
  for (const char* bias : {"conv1.bias", "fc1.bias", "fc3.bias"}) CHECK(max_abs(layout.view(theta, entry(layout, bias))) == 0);
  CHECK(torch::equal(layout.view(theta, entry(layout, "gn1.weight")), torch::ones({16})));
  CHECK(model->describe().find("xavier init") != std::string::npos);

  auto zeros = make("arch = \"softmax\"\ninit = \"zeros\"", {1, 28, 28})->initial_parameters(3);
  CHECK(zeros.numel() == 7850);
  CHECK(max_abs(zeros) == 0);
}

TEST_CASE(
    "model zoo: an SGD step on the flat buffer changes θ and lowers the loss on a fixed batch") {
  for (const auto& c : zoo()) {
    CAPTURE(c.toml);
    auto model = make(c.toml, c.shape);
    auto theta = model->initial_parameters(5);
    auto x = batch_of(c.shape, 16, 6);
    auto y = labels_of(16, 10, 7);
    auto g = gradient(*model, theta, x, y) / 16;
    REQUIRE(g.sizes() == theta.sizes());
    // The gradient reaches every parameter tensor through its view of θ.
    for (std::size_t i = 0; i < model->layout().entries.size(); ++i) {
      CAPTURE(model->layout().entries[i].name);
      CHECK(max_abs(model->layout().slice(g, i)) > 0);
    }
    torch::NoGradGuard no_grad;
    auto before = summed_loss(*model, theta, x, y).item<double>();
    auto stepped = theta - 0.05 * g;
    CHECK_FALSE(torch::equal(stepped, theta));
    CHECK(summed_loss(*model, stepped, x, y).item<double>() < before);
  }
}

TEST_CASE(
    "model zoo: the last bias's gradient is the summed softmax residual (layout addresses θ)") {
  // For summed cross-entropy, ∂L/∂b = Σ_b (softmax(z_b) − onehot(y_b)) for the output bias b.
  auto model = make("arch = \"cnn\"", {1, 28, 28});
  auto theta = model->initial_parameters(1);
  auto x = batch_of({1, 28, 28}, 5, 2);
  auto y = labels_of(5, 10, 3);
  auto g = gradient(*model, theta, x, y);
  torch::NoGradGuard no_grad;
  auto residual = torch::softmax(model->forward(theta, x), 1) - F::one_hot(y, 10).to(torch::kFloat);
  auto bias = model->layout().view(g, entry(model->layout(), "fc3.bias"));
  CHECK(max_abs(bias - residual.sum(0)) < 1e-5);
}

TEST_CASE("model zoo: the cnn equals the same network written with plain ATen ops") {
  // Ties on flat backgrounds (zeroed rows give equal conv outputs in a pooling window) and odd
  // sizes (27 -> 13 -> 6, floor mode) exercise the pooling's index bookkeeping.
  for (const std::vector<std::int64_t> shape :
       {std::vector<std::int64_t>{1, 28, 28}, {3, 32, 32}, {1, 27, 27}}) {
    CAPTURE(shape[1]);
    auto model = make("arch = \"cnn\"", shape);
    const auto& layout = model->layout();
    auto theta = model->initial_parameters(4);
    auto x = batch_of(shape, 6, 5);
    x.narrow(2, 0, 10).zero_();
    auto y = labels_of(6, 10, 6);
    auto reference = [&](const Tensor& p) {
      auto v = [&](const std::string& name) { return layout.view(p, entry(layout, name)); };
      auto h = torch::conv2d(x, v("conv1.weight"), v("conv1.bias"), 1, 1);
      h = torch::tanh(
          torch::group_norm(torch::max_pool2d(h, {2, 2}), 4, v("gn1.weight"), v("gn1.bias")));
      h = torch::conv2d(h, v("conv2.weight"), v("conv2.bias"), 1, 1);
      h = torch::tanh(
          torch::group_norm(torch::max_pool2d(h, {2, 2}), 4, v("gn2.weight"), v("gn2.bias")));
      h = torch::tanh(torch::linear(h.flatten(1), v("fc1.weight"), v("fc1.bias")));
      h = torch::tanh(torch::linear(h, v("fc2.weight"), v("fc2.bias")));
      return torch::linear(h, v("fc3.weight"), v("fc3.bias"));
    };
    auto p = theta.detach().requires_grad_(true);
    auto expected_logits = reference(p);
    auto expected_grad = torch::autograd::grad(
        {F::cross_entropy(expected_logits, y, F::CrossEntropyFuncOptions().reduction(torch::kSum))},
        {p})[0];
    CHECK(max_abs(model->forward(theta, x) - expected_logits) < 1e-5);
    CHECK(max_abs(gradient(*model, theta, x, y) - expected_grad) <
          1e-5 * std::max(1.0, max_abs(expected_grad)));
  }
}

namespace {

// ‖∇θ L(θ, x)‖² and its derivative in x along v: by double backward and by central differences.
void check_double_backward(const bulwark::Model& model, const std::vector<std::int64_t>& shape,
                           std::int64_t classes = 10) {
  auto theta = model.initial_parameters(9).to(torch::kDouble);
  auto x = batch_of(shape, 2, 10).to(torch::kDouble);
  auto y = labels_of(2, classes, 11);
  auto v = batch_of(shape, 2, 12).to(torch::kDouble) - 0.5;
  auto grad_norm = [&](const Tensor& input, bool create_graph) {
    auto p = theta.detach().requires_grad_(true);
    auto g = torch::autograd::grad({summed_loss(model, p, input, y)}, {p}, {}, create_graph,
                                   create_graph)[0];
    return g.pow(2).sum();
  };
  auto input = x.detach().requires_grad_(true);
  auto dx = torch::autograd::grad({grad_norm(input, true)}, {input})[0];
  const double analytic = (dx * v).sum().item<double>();
  const double eps = 1e-5;
  const double numeric = (grad_norm(x + eps * v, false).item<double>() -
                          grad_norm(x - eps * v, false).item<double>()) /
                         (2 * eps);
  CHECK(std::abs(analytic) > 1e-8);
  CHECK(analytic == doctest::Approx(numeric).epsilon(1e-4));
}

}  // namespace

TEST_CASE(
    "model zoo: lenet is twice differentiable (gradient matching differentiates through ∇θ)") {
  check_double_backward(*make("arch = \"lenet\"", {1, 28, 28}), {1, 28, 28});
  check_double_backward(*make("arch = \"lenet\"", {3, 32, 32}), {3, 32, 32});
  check_double_backward(*make("arch = \"mlp\"\nactivation = \"sigmoid\"", {1, 8, 8}), {1, 8, 8});
}

TEST_CASE("model zoo: forward is safe to call from several threads at once") {
  auto model = make("arch = \"cnn\"", {1, 28, 28});
  std::vector<Tensor> thetas, inputs, expected(4), got(4);
  for (int t = 0; t < 4; ++t) {
    thetas.push_back(model->initial_parameters(20 + t));
    inputs.push_back(batch_of({1, 28, 28}, 8, 30 + t));
    expected[t] = model->forward(thetas[t], inputs[t]);
  }
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 5; ++i) got[t] = model->forward(thetas[t], inputs[t]);
    });
  }
  for (auto& thread : threads) thread.join();
  for (int t = 0; t < 4; ++t) CHECK(torch::equal(got[t], expected[t]));
}

TEST_CASE(
    "model zoo: inputs the architecture cannot take are configuration errors that say what to "
    "use") {
  CHECK_THROWS_WITH_AS(
      make("arch = \"cnn\"", {54}),
      doctest::Contains("[model] arch = \"cnn\" needs image inputs [C, H, W], but the "
                        "dataset's examples have shape [54]; use arch = \"mlp\""),
      bulwark::Error);
  CHECK_THROWS_WITH_AS(make("arch = \"lenet\"", {54}), doctest::Contains("needs image inputs"),
                       bulwark::Error);
  CHECK_THROWS_WITH_AS(make("arch = \"cnn\"\ngroups = 3", {1, 28, 28}),
                       doctest::Contains("3 groups do not divide 16 channels"), bulwark::Error);
  CHECK_THROWS_WITH_AS(make("arch = \"cnn\"", {1, 2, 2}),
                       doctest::Contains("smaller than the window"), bulwark::Error);
  CHECK_THROWS_WITH_AS(make("arch = \"mlp\"\nhidden = [16.5]", {54}),
                       doctest::Contains("widths must be whole numbers"), bulwark::Error);
  try {
    make("arch = \"cnn\"", {54});
  } catch (const bulwark::Error& e) {
    CHECK((e.kind() == bulwark::ErrorKind::Config));
  }
  // Calls with the wrong shapes are programming errors, reported with both shapes.
  auto model = make("arch = \"cnn\"", {1, 28, 28});
  auto theta = model->initial_parameters(1);
  CHECK_THROWS_WITH_AS(model->forward(theta, torch::zeros({2, 784})),
                       doctest::Contains("takes inputs [B, 1, 28, 28], got [2, 784]"),
                       bulwark::Error);
  CHECK_THROWS_WITH_AS(model->forward(theta.narrow(0, 0, 100), torch::zeros({2, 1, 28, 28})),
                       doctest::Contains("takes parameters [107722], got [100]"), bulwark::Error);
}

// ---------------------------------------------------------------------------------------------
// TorchScript: a module built and saved from C++ (no Python), loaded through the zoo.

namespace {

constexpr std::int64_t kTsClasses = 5;

// x [B, 3, 4] -> flatten (12) -> hidden: tanh(x Wᵀ + b) (16) -> logits (5).
// d = 16·12 + 16 + 5·16 + 5 = 293.
std::filesystem::path save_tiny_module(const std::string& name) {
  torch::jit::Module hidden("Hidden");
  hidden.register_parameter("weight", torch::randn({16, 12}) * 0.3, /*is_buffer=*/false);
  hidden.register_parameter("bias", torch::randn({16}) * 0.1, /*is_buffer=*/false);
  hidden.define(R"(
def forward(self, x):
    return torch.tanh(torch.matmul(x, self.weight.t()) + self.bias)
)");
  torch::jit::Module net("TinyNet");
  net.register_module("hidden", hidden);
  net.register_parameter("out_weight", torch::randn({kTsClasses, 16}) * 0.3, /*is_buffer=*/false);
  net.register_parameter("out_bias", torch::zeros({kTsClasses}), /*is_buffer=*/false);
  net.define(R"(
def forward(self, x):
    h = self.hidden.forward(x.flatten(1))
    return torch.matmul(h, self.out_weight.t()) + self.out_bias
)");
  auto path = bulwark::test::scratch_dir(name) / "tiny.pt";
  net.save(path.string());
  return path;
}

std::unique_ptr<bulwark::Model> load_tiny(const std::filesystem::path& path,
                                          std::vector<std::int64_t> shape = {3, 4},
                                          std::int64_t classes = kTsClasses) {
  return make("arch = \"torchscript\"\npath = \"" + path.string() + "\"", shape, classes);
}

// The same network computed directly from θ's views.
Tensor tiny_reference(const bulwark::Model& model, const Tensor& theta, const Tensor& x) {
  const auto& layout = model.layout();
  auto v = [&](const std::string& name) { return layout.view(theta, entry(layout, name)); };
  auto h = torch::tanh(torch::matmul(x.flatten(1), v("hidden.weight").t()) + v("hidden.bias"));
  return torch::matmul(h, v("out_weight").t()) + v("out_bias");
}

}  // namespace

TEST_CASE("model torchscript: parameters become the layout and forward reads them from θ") {
  auto path = save_tiny_module("ts_forward");
  auto model = load_tiny(path);
  const auto& layout = model->layout();
  CHECK(layout.total == 293);
  CHECK(layout.entries.size() == 4);
  CHECK(layout.entries[entry(layout, "hidden.weight")].shape == std::vector<std::int64_t>{16, 12});
  CHECK(layout.entries[entry(layout, "out_bias")].shape == std::vector<std::int64_t>{kTsClasses});
  CHECK_FALSE(model->vectorised());
  CHECK(model->describe().find("d = 293") != std::string::npos);

  // θ0 is the saved module's own parameters.
  auto saved = torch::jit::load(path.string());
  auto theta0 = model->initial_parameters(1);
  for (const auto& p : saved.named_parameters()) {
    CAPTURE(p.name);
    CHECK(torch::equal(layout.view(theta0, entry(layout, p.name)), p.value));
  }
  // Any other θ is what forward uses, not the module's parameters.
  auto theta = torch::randn({293}, bulwark::make_generator(2)) * 0.3;
  auto x = batch_of({3, 4}, 7, 3);
  CHECK(max_abs(model->forward(theta, x) - tiny_reference(*model, theta, x)) < 1e-6);
}

TEST_CASE(
    "model torchscript: training through θ, and the batch-size-1 fallback for per-example "
    "gradients") {
  auto model = load_tiny(save_tiny_module("ts_train"));
  auto theta = model->initial_parameters(1);
  auto x = batch_of({3, 4}, 9, 4);
  auto y = labels_of(9, kTsClasses, 5);
  auto g = gradient(*model, theta, x, y);
  // Autograd through the module equals autograd through the reference written with θ's views.
  auto p = theta.detach().requires_grad_(true);
  auto expected =
      torch::autograd::grad({F::cross_entropy(tiny_reference(*model, p, x), y,
                                              F::CrossEntropyFuncOptions().reduction(torch::kSum))},
                            {p})[0];
  CHECK(max_abs(g - expected) < 1e-5);
  {
    torch::NoGradGuard no_grad;
    auto stepped = theta - 0.05 * g / 9;
    CHECK(summed_loss(*model, stepped, x, y).item<double>() <
          summed_loss(*model, theta, x, y).item<double>());
  }
  auto per_example = model->per_example_gradients(theta, x, y);
  REQUIRE(per_example.sizes() == torch::IntArrayRef{9, 293});
  for (std::int64_t b = 0; b < 9; ++b) {
    auto row = gradient(*model, theta, x.narrow(0, b, 1), y.narrow(0, b, 1));
    CHECK(max_abs(per_example[b] - row) <= 1e-5);
  }
  CHECK(max_abs(per_example.sum(0) - g) < 1e-4);
  check_double_backward(*model, {3, 4}, kTsClasses);
}

TEST_CASE(
    "model torchscript: concurrent calls each see their own θ (one module clone per thread)") {
  auto model = load_tiny(save_tiny_module("ts_threads"));
  std::vector<Tensor> thetas, inputs;
  for (int t = 0; t < 4; ++t) {
    thetas.push_back(torch::randn({293}, bulwark::make_generator(40 + t)) * 0.3);
    inputs.push_back(batch_of({3, 4}, 6, 50 + t));
  }
  std::vector<double> errors(4, 1.0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      double worst = 0;
      for (int i = 0; i < 50; ++i) {
        worst = std::max(worst, max_abs(model->forward(thetas[t], inputs[t]) -
                                        tiny_reference(*model, thetas[t], inputs[t])));
      }
      errors[t] = worst;
    });
  }
  for (auto& thread : threads) thread.join();
  for (int t = 0; t < 4; ++t) CHECK(errors[t] < 1e-6);
}

TEST_CASE("model torchscript: files that cannot be loaded or used give one clear error") {
  auto dir = bulwark::test::scratch_dir("ts_errors");
  CHECK_THROWS_WITH_AS(make("arch = \"torchscript\"\npath = \"" + save_tiny_module("ts_init").string() + "\"\ninit = \"zeros\"",
                            {3, 4}, kTsClasses),
                       doctest::Contains("starts from the module's saved parameters: remove init"), bulwark::Error);
  const auto missing = (dir / "missing.pt").string();
  CHECK_THROWS_WITH_AS(
      load_tiny(missing),
      doctest::Contains((missing + ": cannot load TorchScript model: no such file; save it "
                                   "with torch.jit.script(model).save(path)")
                            .c_str()),
      bulwark::Error);
  try {
    load_tiny(missing);
  } catch (const bulwark::Error& e) {
    CHECK((e.kind() == bulwark::ErrorKind::Data));
  }
  bulwark::test::write_file(dir / "garbage.pt", "this is not a TorchScript archive");
  CHECK_THROWS_WITH_AS(load_tiny(dir / "garbage.pt"),
                       doctest::Contains("cannot load TorchScript model: "), bulwark::Error);
  CHECK_THROWS_WITH_AS(load_tiny(dir), doctest::Contains("not a regular file"), bulwark::Error);
  CHECK_THROWS_WITH_AS(make("arch = \"torchscript\"", {3, 4}), doctest::Contains("needs path = "),
                       bulwark::Error);
  auto path = save_tiny_module("ts_mismatch");
  CHECK_THROWS_WITH_AS(
      load_tiny(path, {3, 4}, 7),
      doctest::Contains("returns shape [1, 5] for inputs [1, 3, 4]; expected [1, 7] logits"),
      bulwark::Error);
  CHECK_THROWS_WITH_AS(
      load_tiny(path, {5}),
      doctest::Contains("cannot take the dataset's inputs [1, 5]: forward() failed: "
                        "RuntimeError: mat1 and mat2 shapes cannot be multiplied"),
      bulwark::Error);
}
