// The model zoo: sequential stacks of the functional layers in layers.hpp, plus the TorchScript
// member (model_torchscript.cpp). Models hold no mutable state, so forward() and
// per_example_gradients() may run on many worker threads at once.
#include "models.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>

#include <torch/torch.h>

#include "bulwark/clipping.hpp"
#include "bulwark/error.hpp"
#include "bulwark/rng.hpp"
#include "layer_specs.hpp"
#include "layers.hpp"

namespace bulwark {

const std::vector<OptionSpec>& model_option_specs() {
  static const std::vector<OptionSpec> specs = {
      {"arch", OptType::String, "\"cnn\"", 0, 0,
       "Architecture: softmax (multinomial logistic regression), mlp, cnn (2 conv + 3 linear with "
       "GroupNorm and tanh, for DP studies), lenet (the sigmoid LeNet of gradient-leakage studies), "
       "layers (the list in layers), a named network of the reference studies (lenet5_gn, cnn4, cnn2, "
       "vgg11_gn, resnet18; `bulwark describe model` lists their layers) or torchscript (a saved "
       "TorchScript module, see path).",
       "softmax|mlp|cnn|lenet|layers|lenet5_gn|cnn4|cnn2|vgg11_gn|resnet18|torchscript"},
      {"layers", OptType::String, "\"\"", 0, 0,
       "arch = \"layers\": the network as a list of layer specs, in order, e.g. [\"conv 6 5\", \"tanh\", "
       "\"avgpool 2\", \"groupnorm 2\", \"flatten\", \"linear 120\", \"tanh\", \"linear classes\"]. Kinds: "
       "linear N|classes [bias=false]; conv OUT KERNEL [stride=S padding=P bias=false]; maxpool K; avgpool K; "
       "globalavgpool; groupnorm G | groupnorm per_group=C; residual OUT [stride=S per_group=C] (ResNet "
       "basic block with GroupNorm); flatten; relu; tanh; sigmoid; act (the activation option). The last "
       "layer must give one logit per class.",
       nullptr},
      {"hidden", OptType::List, "[200, 200]", 1, kInf,
       "mlp: widths of the hidden layers, in order ([] gives softmax regression).", nullptr},
      {"activation", OptType::String, "\"relu\"", 0, 0,
       "Activation of the mlp's hidden layers and of act layers and residual blocks (layers, presets); "
       "also replaces the cnn's tanh when written.",
       "relu|tanh|sigmoid"},
      {"groups", OptType::Int, "4", 1, 32,
       "cnn: GroupNorm groups per normalisation layer; must divide 16 and 32.", nullptr},
      {"init", OptType::String, "\"default\"", 0, 0,
       "default: PyTorch's default initialisation of each layer; xavier: Glorot uniform weights, zero "
       "biases (Glorot & Bengio 2010); zeros: every parameter 0 (convex models such as softmax; hidden "
       "units of a network started at 0 stay identical); dlg: every weight and bias uniform in [-0.5, "
       "0.5], as in Zhu et al.'s Deep Leakage from Gradients code. lenet's sigmoids saturate from the "
       "default and it does not learn: train it from dlg.",
       "default|xavier|zeros|dlg"},
      {"path", OptType::String, "\"\"", 0, 0,
       "torchscript: file saved with torch.jit.script(model).save(path); the module runs in eval "
       "mode and its saved parameters are θ0.",
       nullptr},
  };
  return specs;
}

namespace detail {

StackedModel::~StackedModel() = default;

std::string thousands(std::int64_t value) {
  auto digits = std::to_string(value < 0 ? -value : value);
  std::string out;
  for (std::size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return value < 0 ? "-" + out : out;
}

}  // namespace detail

namespace {

using detail::Layer;
using detail::Shape;
using detail::shape_string;

class SequentialModel final : public Model, public detail::StackedModel {
 public:
  SequentialModel(std::string arch, std::string summary, Shape input,
                  std::vector<std::unique_ptr<Layer>> layers, std::int64_t num_classes,
                  std::string init)
      : arch_(std::move(arch)),
        summary_(std::move(summary)),
        input_(std::move(input)),
        layers_(std::move(layers)),
        init_(std::move(init)) {
    Shape shape = input_;
    try {
      for (auto& layer : layers_) shape = layer->build(shape, layout_);
    } catch (const Error& e) {
      throw Error(ErrorKind::Config, "[model] arch = \"" + arch_ + "\" with inputs " +
                                         shape_string(input_) + ": " + e.what());
    }
    if (shape != Shape{num_classes}) {
      throw Error(ErrorKind::Config, "[model] arch = \"" + arch_ + "\" ends in shape " + shape_string(shape) +
                                         ", not one logit per class [" + std::to_string(num_classes) +
                                         "]; end the layers with \"linear classes\"");
    }
    for (const auto& entry : layout_.entries) numels_.push_back(entry.numel);
    const auto groups = layout_.layers();
    layer_of_entry_.resize(layout_.entries.size());
    for (std::size_t j = 0; j < groups.size(); ++j) {
      for (auto entry : groups[j]) layer_of_entry_[entry] = static_cast<std::int64_t>(j);
    }
    layer_spans_ = layer_spans(layout_);
  }

  const ParamLayout& layout() const override { return layout_; }

  torch::Tensor forward(const torch::Tensor& params, const torch::Tensor& inputs) const override {
    return run(params, inputs, /*clients=*/0);
  }

  torch::Tensor forward_stacked(const torch::Tensor& params, const torch::Tensor& inputs) const override {
    return run(params, inputs, stacked_clients(params, inputs));
  }

  torch::Tensor per_example_gradients(const torch::Tensor& params, const torch::Tensor& inputs,
                                      const torch::Tensor& labels) const override {
    return per_example(params, inputs, labels, /*clients=*/0, nullptr);
  }

  torch::Tensor per_example_gradients_stacked(const torch::Tensor& params, const torch::Tensor& inputs,
                                              const torch::Tensor& labels,
                                              torch::Tensor* row_losses) const override {
    const auto clients = params.dim() == 1 ? 0 : stacked_clients(params, inputs);
    return per_example(params, inputs, labels, clients, row_losses);
  }

  torch::Tensor clipped_gradient_sums_stacked(const torch::Tensor& params, const torch::Tensor& inputs,
                                              const torch::Tensor& labels, const ClipFactors& clip_factors,
                                              torch::Tensor* row_losses) const override {
    check_inputs(inputs);
    const auto clients = params.dim() == 1 ? 0 : stacked_clients(params, inputs);
    auto sums = torch::zeros({std::max<std::int64_t>(clients, 1), layout_.total}, params.options());
    if (inputs.size(0) == 0) {
      if (row_losses) *row_losses = torch::zeros({0}, params.options());
      return clients == 0 ? sums[0] : sums;
    }
    // First pass, as the backward pass reaches each layer: its norms, and what the second needs.
    auto squares = torch::zeros({inputs.size(0), static_cast<std::int64_t>(layer_spans_.size())}, params.options());
    struct Seen {
      const detail::Layer* layer;
      std::int64_t index;  // in ParamLayout::layers()
      std::vector<torch::Tensor> kept;
    };
    std::vector<Seen> seen;
    traced_pass(params, inputs, labels, clients, row_losses,
                [&](const detail::TracedLayer& traced, const torch::Tensor& grad) {
                  Seen layer{traced.layer, layer_of_entry_[traced.layer->first_entry()], {}};
                  squares.select(1, layer.index)
                      .add_(traced.layer->gradient_norms_squared(traced.input.detach(), grad, layout_, layer.kept));
                  seen.push_back(std::move(layer));
                });
    torch::NoGradGuard no_grad;
    const auto factors = clip_factors(squares.sqrt_());
    for (const auto& layer : seen) {
      const auto& span = layer_spans_[layer.index];
      auto columns = sums.narrow(1, span.offset, span.length);
      layer.layer->weighted_gradient_sums(layer.kept, factors.select(1, layer.index).contiguous(), columns);
    }
    return clients == 0 ? sums[0] : sums;
  }

  bool vectorised() const override { return true; }

  torch::Tensor initial_parameters(std::uint64_t seed) const override {
    torch::NoGradGuard no_grad;
    auto generator = make_generator(seed);
    auto theta = torch::empty({layout_.total});
    if (init_ == "dlg") {
      theta.uniform_(-0.5, 0.5, generator);
    } else if (init_ == "zeros") {
      theta.zero_();
    } else {
      auto views = parameter_views(theta);
      for (const auto& layer : layers_) layer->initialise(views, generator, init_ == "xavier");
    }
    return theta;
  }

  std::string describe() const override {
    return summary_ + ", d = " + detail::thousands(layout_.total);
  }

 private:
  torch::Tensor run(const torch::Tensor& params, const torch::Tensor& inputs, std::int64_t clients) const {
    check_inputs(inputs);
    auto views = parameter_views(params, clients);
    auto h = inputs;
    for (const auto& layer : layers_) h = layer->run(h, views, clients);  // θ [d] or Θ [K, d]
    return h;
  }

  torch::Tensor per_example(const torch::Tensor& params, const torch::Tensor& inputs,
                            const torch::Tensor& labels, std::int64_t clients,
                            torch::Tensor* row_losses) const {
    check_inputs(inputs);
    const auto batch = inputs.size(0);
    if (batch == 0) {
      if (row_losses) *row_losses = torch::zeros({0}, params.options());
      return torch::zeros({0, layout_.total}, params.options());
    }
    auto result = result_buffer(batch * layout_.total, params.options()).view({batch, layout_.total});
    // One [B, ...shape] window of the result per layout entry: the rules write into them in place.
    auto columns = result.split_with_sizes(numels_, /*dim=*/1);
    std::vector<torch::Tensor> grads;
    grads.reserve(columns.size());
    for (std::size_t i = 0; i < columns.size(); ++i) {
      std::vector<std::int64_t> shape{batch};
      const auto& entry_shape = layout_.entries[i].shape;
      shape.insert(shape.end(), entry_shape.begin(), entry_shape.end());
      grads.push_back(columns[i].view(shape));
    }
    traced_pass(params, inputs, labels, clients, row_losses,
                [&](const detail::TracedLayer& traced, const torch::Tensor& grad) {
                  traced.layer->per_example(traced.input.detach(), grad, grads);
                });
    return result;
  }

  using Visit = std::function<void(const detail::TracedLayer&, const torch::Tensor& output_grad)>;

  // Inputs that require grad put every layer output in the graph while θ stays out of it: the
  // backward pass then runs only what reaches the layer outputs, no weight-gradient kernels, and
  // the per-example rules work from each layer's input and output gradient (the rules need no
  // parameters, so they serve stacked clients unchanged). Each parameterised layer is visited,
  // under NoGradGuard, with the gradient of the summed loss at its output as soon as the backward
  // pass has it — from a hook, the last layer first — so that no output gradient outlives its use;
  // the first layer's is the pass's own result.
  void traced_pass(const torch::Tensor& params, const torch::Tensor& inputs, const torch::Tensor& labels,
                   std::int64_t clients, torch::Tensor* row_losses, const Visit& visit) const {
    torch::AutoGradMode grad_mode(true);
    auto views = parameter_views(params.detach(), clients);
    auto h = inputs.detach().requires_grad_(true);
    std::vector<detail::TracedLayer> trace;
    for (const auto& layer : layers_) h = layer->forward_traced(h, views, clients, trace);
    auto losses = torch::nn::functional::cross_entropy(
        h, labels, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kNone));
    if (row_losses) *row_losses = losses.detach();
    for (std::size_t k = 1; k < trace.size(); ++k) {
      trace[k].output.register_hook([&trace, &visit, k](const torch::Tensor& grad) {
        torch::NoGradGuard no_grad;
        visit(trace[k], grad);
      });
      trace[k].output.reset();  // the hook stays with the graph
    }
    const auto first = torch::autograd::grad({losses.sum()}, {trace[0].output})[0];
    trace[0].output.reset();
    torch::NoGradGuard no_grad;
    visit(trace[0], first);
  }

  std::int64_t stacked_clients(const torch::Tensor& params, const torch::Tensor& inputs) const {
    const auto clients = params.dim() == 2 ? params.size(0) : 0;
    if (clients < 1 || inputs.size(0) % clients != 0) {
      throw Error(ErrorKind::Runtime, "model '" + arch_ + "' takes stacked parameters [K, " +
                                          std::to_string(layout_.total) + "] and K·B inputs, got " +
                                          shape_string(params.sizes().vec()) + " and " +
                                          std::to_string(inputs.size(0)) + " inputs");
    }
    return clients;
  }

  // One view per layout entry. split_with_sizes makes a single autograd node whose backward
  // concatenates the entry gradients into the flat [d] gradient (narrow() per entry would
  // materialise and add one [d] tensor per entry).
  // With clients = K > 0, views [K, ...shape] of Θ [K, d].
  std::vector<torch::Tensor> parameter_views(const torch::Tensor& params, std::int64_t clients = 0) const {
    const std::int64_t dims = clients == 0 ? 1 : 2;
    if (params.dim() != dims || params.size(dims - 1) != layout_.total) {
      throw Error(ErrorKind::Runtime, "model '" + arch_ + "' takes parameters [" +
                                          std::to_string(layout_.total) + "], got " +
                                          shape_string(params.sizes().vec()));
    }
    auto parts = params.split_with_sizes(numels_, dims - 1);
    for (std::size_t i = 0; i < parts.size(); ++i) {
      std::vector<std::int64_t> shape;
      if (clients > 0) shape.push_back(clients);
      shape.insert(shape.end(), layout_.entries[i].shape.begin(), layout_.entries[i].shape.end());
      parts[i] = parts[i].view(shape);
    }
    return parts;
  }

  // The [B, d] result lives in a per-thread buffer that is reused once the caller has dropped
  // every reference to the previous result. A fresh allocation of that size is served by mmap
  // (glibc maps anything above 32 MiB afresh), and first-touch page faults then cost more than
  // all the per-example rules together. Every entry is written by some rule, so stale contents
  // never leak.
  static torch::Tensor result_buffer(std::int64_t numel, const torch::TensorOptions& options) {
    thread_local torch::Tensor buffer;
    if (!buffer.defined() || buffer.numel() < numel || !buffer.storage().unique() ||
        buffer.device() != options.device() || buffer.dtype() != options.dtype()) {
      buffer = torch::empty({numel}, options);
    }
    return buffer.narrow(0, 0, numel);
  }

  void check_inputs(const torch::Tensor& inputs) const {
    const auto sizes = inputs.sizes();
    const bool ok = inputs.dim() == static_cast<std::int64_t>(input_.size()) + 1 &&
                    std::equal(input_.begin(), input_.end(), sizes.begin() + 1);
    if (!ok) {
      throw Error(ErrorKind::Runtime, "model '" + arch_ + "' takes inputs [B, " +
                                          shape_string(input_).substr(1) + ", got " +
                                          shape_string(sizes.vec()));
    }
    if (!inputs.is_floating_point()) {
      throw Error(ErrorKind::Runtime, "model '" + arch_ + "' takes floating-point inputs, got " +
                                          std::string(c10::toString(inputs.scalar_type())));
    }
  }

  std::string arch_;
  std::string summary_;
  Shape input_;
  std::vector<std::unique_ptr<Layer>> layers_;
  std::string init_;  ///< [model] init
  ParamLayout layout_;
  std::vector<std::int64_t> numels_;  // layout entry sizes, for split_with_sizes
  std::vector<std::int64_t> layer_of_entry_;  // entry -> its layer in ParamLayout::layers()
  std::vector<LayerSpan> layer_spans_;        // layer -> its columns of θ
};

std::string config_prefix(const std::string& arch) {
  return "[model] arch = \"" + arch + "\"";
}

// cnn and lenet convolve images; tabular rows get a message that says what to use instead.
void require_image(const std::string& arch, const Shape& input) {
  if (input.size() != 3) {
    throw Error(ErrorKind::Config, config_prefix(arch) +
                                       " needs image inputs [C, H, W], but the dataset's examples "
                                       "have shape " +
                                       shape_string(input) +
                                       "; use arch = \"mlp\" or \"softmax\" for tabular data");
  }
}

std::vector<std::int64_t> hidden_widths(const Options& options) {
  std::vector<std::int64_t> widths;
  for (double w : options.get<std::vector<double>>("hidden")) {
    if (w < 1 || std::floor(w) != w) {
      throw Error(ErrorKind::Config,
                  "[model] hidden: widths must be whole numbers >= 1, found " + std::to_string(w));
    }
    widths.push_back(static_cast<std::int64_t>(w));
  }
  return widths;
}

}  // namespace

std::unique_ptr<Model> build_model(const Options& options,
                                   const std::vector<std::int64_t>& input_shape,
                                   std::int64_t num_classes) {
  using namespace detail;
  const auto arch = options.get<std::string>("arch");
  if (num_classes < 1) {
    throw Error(ErrorKind::Config, config_prefix(arch) + ": the dataset declares " +
                                       std::to_string(num_classes) + " classes; need at least 1");
  }
  if (input_shape.empty() ||
      std::any_of(input_shape.begin(), input_shape.end(), [](std::int64_t s) { return s < 1; })) {
    throw Error(ErrorKind::Config, config_prefix(arch) + ": the dataset's examples have shape " +
                                       shape_string(input_shape) + "; need a non-empty shape");
  }
  if (arch == "torchscript") {
    const auto path = options.get<std::string>("path");
    if (path.empty()) {
      throw Error(ErrorKind::Config, config_prefix(arch) +
                                         " needs path = \"model.pt\", a module saved with "
                                         "torch.jit.script(model).save(path)");
    }
    if (options.is_set("init")) {
      throw Error(ErrorKind::Config, config_prefix(arch) + " starts from the module's saved parameters: remove init, "
                                                           "or initialise the module before saving it");
    }
    return load_torchscript_model(path, input_shape, num_classes);
  }

  const auto init = options.get<std::string>("init");
  const auto flat_features =
      std::accumulate(input_shape.begin(), input_shape.end(), std::int64_t{1}, std::multiplies<>());
  std::vector<std::unique_ptr<Layer>> layers;
  std::string summary;
  if (arch == "softmax") {
    layers.push_back(flatten());
    layers.push_back(linear("fc", num_classes));
    summary = "softmax (linear " + std::to_string(flat_features) + " -> " +
              std::to_string(num_classes) + ")";
  } else if (arch == "mlp") {
    const auto act = parse_activation(options.get<std::string>("activation"));
    const auto widths = hidden_widths(options);
    layers.push_back(flatten());
    summary = "mlp (" + std::to_string(flat_features);
    for (std::size_t i = 0; i < widths.size(); ++i) {
      layers.push_back(linear("fc" + std::to_string(i + 1), widths[i]));
      layers.push_back(activation(act));
      summary += "-" + std::to_string(widths[i]);
    }
    layers.push_back(linear("fc" + std::to_string(widths.size() + 1), num_classes));
    summary += "-" + std::to_string(num_classes) + ", " + activation_name(act) + ")";
  } else if (arch == "cnn") {
    require_image(arch, input_shape);
    // tanh rather than ReLU: bounded activations keep clipped DP-SGD gradients informative
    // (Papernot et al., "Tempered Sigmoid Activations for Deep Learning with DP", AAAI 2021),
    // and GroupNorm because batch statistics would mix examples and break per-example clipping.
    const auto act = options.is_set("activation")
                         ? parse_activation(options.get<std::string>("activation"))
                         : Activation::Tanh;
    const auto groups = options.get<std::int64_t>("groups");
    // Pooling before normalisation and activation: they then run on a quarter of the values
    // (tanh is monotone, so only GroupNorm's statistics see the pooled map instead of the full
    // one).
    layers.push_back(conv2d("conv1", 16, /*kernel=*/3, /*stride=*/1, /*padding=*/1));
    layers.push_back(max_pool2d(2));
    layers.push_back(group_norm("gn1", groups));
    layers.push_back(activation(act));
    layers.push_back(conv2d("conv2", 32, /*kernel=*/3, /*stride=*/1, /*padding=*/1));
    layers.push_back(max_pool2d(2));
    layers.push_back(group_norm("gn2", groups));
    layers.push_back(activation(act));
    layers.push_back(flatten());
    layers.push_back(linear("fc1", 64));
    layers.push_back(activation(act));
    layers.push_back(linear("fc2", 32));
    layers.push_back(activation(act));
    layers.push_back(linear("fc3", num_classes));
    summary = std::string("cnn (2 conv + 3 linear, GroupNorm, ") + activation_name(act) + ")";
  } else if (arch == "lenet") {
    require_image(arch, input_shape);
    // Zhu et al.'s LeNet: no pooling and a smooth activation, so the gradient is itself
    // differentiable and gradient-matching attacks can optimise through it.
    layers.push_back(conv2d("conv1", 12, /*kernel=*/5, /*stride=*/2, /*padding=*/2));
    layers.push_back(activation(Activation::Sigmoid));
    layers.push_back(conv2d("conv2", 12, /*kernel=*/5, /*stride=*/2, /*padding=*/2));
    layers.push_back(activation(Activation::Sigmoid));
    layers.push_back(conv2d("conv3", 12, /*kernel=*/5, /*stride=*/1, /*padding=*/2));
    layers.push_back(activation(Activation::Sigmoid));
    layers.push_back(flatten());
    layers.push_back(linear("fc", num_classes));
    summary = "lenet (3 conv 5x5 + 1 linear, sigmoid)";
  } else if (arch == "layers") {
    if (!options.is_set("layers")) {
      throw Error(ErrorKind::Config, config_prefix(arch) + " needs layers = [...], e.g. [\"flatten\", "
                                                           "\"linear 200\", \"relu\", \"linear classes\"]");
    }
    const auto specs = split_layer_specs(options.get<std::string>("layers"));
    layers = parse_layer_specs(specs, num_classes, parse_activation(options.get<std::string>("activation")),
                               "[model] layers");
    summary = "layers (";
    for (std::size_t i = 0; i < specs.size(); ++i) summary += (i ? ", " : "") + specs[i];
    summary += ")";
  } else if (const auto* preset = find_preset(arch)) {
    const auto act = options.get<std::string>("activation");
    const bool reads_act = std::find(preset->layers.begin(), preset->layers.end(), "act") != preset->layers.end();
    if (!reads_act && options.is_set("activation")) {
      throw Error(ErrorKind::Config, config_prefix(arch) + " has fixed activations and does not read activation; "
                                                           "remove it, or write the network out with arch = \"layers\"");
    }
    layers = parse_layer_specs(preset->layers, num_classes, parse_activation(act), config_prefix(arch));
    summary = arch + " (" + std::to_string(preset->layers.size()) + " layers" + (reads_act ? ", " + act : "") + ")";
  } else {
    throw Error(ErrorKind::Config, "[model] unknown arch \"" + arch +
                                       "\"; expected softmax, mlp, cnn, lenet, layers, torchscript or a preset");
  }
  if (arch != "layers" && options.is_set("layers")) {
    throw Error(ErrorKind::Config, config_prefix(arch) + " does not read layers; set arch = \"layers\" to use them");
  }
  if (init != "default") summary.insert(summary.size() - 1, ", " + init + " init");
  return std::make_unique<SequentialModel>(arch, summary, input_shape, std::move(layers), num_classes, init);
}

}  // namespace bulwark
