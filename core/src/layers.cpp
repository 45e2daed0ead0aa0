#include "layers.hpp"

#include <cmath>
#include <cstring>
#include <numeric>
#include <type_traits>

#include <torch/torch.h>

#include "bulwark/error.hpp"

namespace bulwark::detail {

std::string shape_string(const Shape& shape) {
  std::string out = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i > 0) out += ", ";
    out += std::to_string(shape[i]);
  }
  return out + "]";
}

Layer::~Layer() = default;
torch::Tensor Layer::forward_stacked(const torch::Tensor& x, const std::vector<torch::Tensor>& params,
                                     std::int64_t) const {
  return forward(x, params);
}
torch::Tensor Layer::forward_traced(const torch::Tensor& x, const std::vector<torch::Tensor>& params,
                                    std::int64_t clients, std::vector<TracedLayer>& trace) const {
  auto y = run(x, params, clients);
  if (has_parameters()) trace.push_back({this, x, y});
  return y;
}
void Layer::initialise(const std::vector<torch::Tensor>&, at::Generator&, bool) const {}
void Layer::per_example(const torch::Tensor&, const torch::Tensor&,
                        const std::vector<torch::Tensor>&) const {}

Activation parse_activation(const std::string& name) {
  if (name == "relu") return Activation::Relu;
  if (name == "tanh") return Activation::Tanh;
  if (name == "sigmoid") return Activation::Sigmoid;
  throw Error(ErrorKind::Config,
              "unknown activation '" + name + "'; expected one of relu, tanh, sigmoid");
}

const char* activation_name(Activation activation) {
  switch (activation) {
    case Activation::Relu:
      return "relu";
    case Activation::Tanh:
      return "tanh";
    default:
      return "sigmoid";
  }
}

namespace {

[[noreturn]] void cannot_take(const std::string& what, const Shape& input, const std::string& why) {
  throw Error(ErrorKind::Config,
              what + " cannot take inputs of shape " + shape_string(input) + ": " + why);
}

// PyTorch's default for Linear and Conv2d: kaiming_uniform_(a = √5) on the weight, whose bound
// gain·√(3 / fan_in) with gain = √(2 / (1 + a²)) simplifies to 1/√fan_in, and the bias drawn
// from the same interval. Weight first, then bias, as nn.Module's reset_parameters() does.
// A layer without bias passes an undefined `bias` and draws the weight only, as PyTorch does.
void default_uniform(const torch::Tensor& weight, const torch::Tensor& bias, std::int64_t fan_in,
                     at::Generator& generator) {
  const double bound = 1.0 / std::sqrt(static_cast<double>(fan_in));
  weight.uniform_(-bound, bound, generator);
  if (bias.defined()) bias.uniform_(-bound, bound, generator);
}

// Glorot & Bengio, "Understanding the difficulty of training deep feedforward neural networks",
// AISTATS 2010, eq. (16); torch.nn.init.xavier_uniform_ with gain 1.
void xavier_uniform(const torch::Tensor& weight, const torch::Tensor& bias, std::int64_t fan_in, std::int64_t fan_out,
                    at::Generator& generator) {
  const double bound = std::sqrt(6.0 / static_cast<double>(fan_in + fan_out));
  weight.uniform_(-bound, bound, generator);
  if (bias.defined()) bias.zero_();
}

// Identity whose backward hands on the gradient contiguous. The stacked linear layer's input
// gradient comes out of a transposed product, and reshaping it back is a view for K = 1 but a copy
// for K > 1; the layers below it would then reduce (a bias gradient) over a layout that depends on
// K, and a client's numbers would too.
struct ContiguousGradient : torch::autograd::Function<ContiguousGradient> {
  static torch::Tensor forward(torch::autograd::AutogradContext*, const torch::Tensor& x) { return x.clone(); }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext*,
                                                 torch::autograd::variable_list grads) {
    return {grads[0].contiguous()};
  }
};

class Linear final : public Layer {
 public:
  Linear(std::string name, std::int64_t out, bool bias) : name_(std::move(name)), out_(out), bias_(bias) {}

  Shape build(const Shape& input, ParamLayout& layout) override {
    if (input.size() != 1) {
      cannot_take("linear layer '" + name_ + "'", input, "it needs flat [F] features (flatten first)");
    }
    in_ = input[0];
    first_ = layout.add(name_ + ".weight", {out_, in_});
    if (bias_) layout.add(name_ + ".bias", {out_});
    count_ = bias_ ? 2 : 1;
    return {out_};
  }

  torch::Tensor forward(const torch::Tensor& x,
                        const std::vector<torch::Tensor>& params) const override {
    return torch::linear(x, params[first_], bias(params));
  }

  // Yᵀ = W Xᵀ + b per client: the weight gradient then comes out of the product in W's own
  // [out, in] layout and joins Θ's gradient without a transposed copy (an MLP step at K = 32
  // twice as fast as Y = X Wᵀ + b).
  torch::Tensor forward_stacked(const torch::Tensor& x, const std::vector<torch::Tensor>& params,
                                std::int64_t clients) const override {
    const auto input = x.requires_grad() ? ContiguousGradient::apply(x) : x;
    const auto columns = input.view({clients, -1, in_}).transpose(1, 2);
    auto transposed = bias_ ? torch::baddbmm(params[first_ + 1].unsqueeze(2), params[first_], columns)
                            : torch::bmm(params[first_], columns);  // [K, out, B]
    return transposed.transpose(1, 2).contiguous().view({-1, out_});
  }

  void initialise(const std::vector<torch::Tensor>& params, at::Generator& generator, bool xavier) const override {
    if (xavier) return xavier_uniform(params[first_], bias(params), in_, out_, generator);
    default_uniform(params[first_], bias(params), in_, generator);
  }

  // ∂L/∂W for example b is the outer product g_b x_bᵀ; ∂L/∂b is g_b. The outer products are
  // written straight into the result rows (no [B, out, in] temporary).
  void per_example(const torch::Tensor& x, const torch::Tensor& grad_output,
                   const std::vector<torch::Tensor>& grads) const override {
    auto weight = grads[first_];  // at::*_out take non-const handles
    at::mul_out(weight, grad_output.unsqueeze(2), x.unsqueeze(1));
    if (bias_) grads[first_ + 1].copy_(grad_output);
  }

 private:
  torch::Tensor bias(const std::vector<torch::Tensor>& params) const {
    return bias_ ? params[first_ + 1] : torch::Tensor();
  }

  std::string name_;
  std::int64_t out_;
  bool bias_;
  std::int64_t in_ = 0;
};

class Conv2d final : public Layer {
 public:
  Conv2d(std::string name, std::int64_t out, std::int64_t kernel, std::int64_t stride,
         std::int64_t padding, bool bias)
      : name_(std::move(name)), out_(out), kernel_(kernel), stride_(stride), padding_(padding), bias_(bias) {}

  Shape build(const Shape& input, ParamLayout& layout) override {
    const std::string what = "convolution '" + name_ + "'";
    if (input.size() != 3) cannot_take(what, input, "it needs image inputs [C, H, W]");
    in_ = input[0];
    const auto out_h = (input[1] + 2 * padding_ - kernel_) / stride_ + 1;
    const auto out_w = (input[2] + 2 * padding_ - kernel_) / stride_ + 1;
    if (input[1] + 2 * padding_ < kernel_ || input[2] + 2 * padding_ < kernel_) {
      cannot_take(what, input,
                  "the image is smaller than its " + std::to_string(kernel_) + "x" +
                      std::to_string(kernel_) + " kernel");
    }
    first_ = layout.add(name_ + ".weight", {out_, in_, kernel_, kernel_});
    if (bias_) layout.add(name_ + ".bias", {out_});
    count_ = bias_ ? 2 : 1;
    return {out_, out_h, out_w};
  }

  torch::Tensor forward(const torch::Tensor& x,
                        const std::vector<torch::Tensor>& params) const override {
    // Few input channels (the first layer on raw pixels): on a CPU, im2col + GEMM beats oneDNN,
    // whose layout reorders dominate such a small product (about 5x forward + backward at 1 -> 16
    // channels); wider layers, and every layer on a GPU, go to torch::conv2d.
    if (x.is_cpu() && in_ * kernel_ * kernel_ <= kIm2colMaxDepth) {
      return torch::thnn_conv2d(x, params[first_], {kernel_, kernel_}, bias(params),
                                {stride_, stride_}, {padding_, padding_});
    }
    return torch::conv2d(x, params[first_], bias(params), {stride_, stride_},
                         {padding_, padding_});
  }

  // im2col + one matrix product per client: unlike a grouped convolution (groups = K), each
  // client's arithmetic is the same whatever K is, so results do not depend on how clients are
  // batched.
  torch::Tensor forward_stacked(const torch::Tensor& x, const std::vector<torch::Tensor>& params,
                                std::int64_t clients) const override {
    const auto out_h = (x.size(2) + 2 * padding_ - kernel_) / stride_ + 1;
    const auto out_w = (x.size(3) + 2 * padding_ - kernel_) / stride_ + 1;
    auto columns = torch::im2col(x, {kernel_, kernel_}, {1, 1}, {padding_, padding_},
                                 {stride_, stride_})
                       .view({clients, -1, in_ * kernel_ * kernel_, out_h * out_w});
    auto weight = params[first_].reshape({clients, 1, out_, in_ * kernel_ * kernel_});
    auto y = torch::matmul(weight, columns);
    if (bias_) y = y + params[first_ + 1].view({clients, 1, out_, 1});
    return y.view({-1, out_, out_h, out_w});
  }

  void initialise(const std::vector<torch::Tensor>& params, at::Generator& generator, bool xavier) const override {
    const auto window = kernel_ * kernel_;
    if (xavier) return xavier_uniform(params[first_], bias(params), in_ * window, out_ * window, generator);
    default_uniform(params[first_], bias(params), in_ * window, generator);
  }

  // A convolution is a matrix product with the unfolded input: for example b,
  // ∂L/∂W_b [out, C·k·k] = G_b [out, L] · unfold(x_b)ᵀ [L, C·k·k] over the L output positions,
  // and ∂L/∂b_b sums G_b over positions. One batched matmul for the whole batch.
  void per_example(const torch::Tensor& x, const torch::Tensor& grad_output,
                   const std::vector<torch::Tensor>& grads) const override {
    const auto batch = x.size(0);
    const auto out_h = grad_output.size(2);
    const auto out_w = grad_output.size(3);
    // unfold(x) as a strided view of the padded input, [B, C, k, k, H', W'], materialised by one
    // reshape: cheaper than ATen's im2col kernel.
    auto padded = torch::constant_pad_nd(x, {padding_, padding_, padding_, padding_});
    const auto s = padded.strides();
    auto columns = padded
                       .as_strided({batch, in_, kernel_, kernel_, out_h, out_w},
                                   {s[0], s[1], s[2], s[3], s[2] * stride_, s[3] * stride_},
                                   padded.storage_offset())
                       .reshape({batch, in_ * kernel_ * kernel_, out_h * out_w});
    auto g = grad_output.reshape({batch, out_, -1});
    auto weight = grads[first_].view({batch, out_, -1});
    at::bmm_out(weight, g, columns.transpose(1, 2));
    if (!bias_) return;
    auto bias = grads[first_ + 1];
    at::sum_out(bias, g, {2});
  }

 private:
  torch::Tensor bias(const std::vector<torch::Tensor>& params) const {
    return bias_ ? params[first_ + 1] : torch::Tensor();
  }

  static constexpr std::int64_t kIm2colMaxDepth = 32;  // C·k·k of the unfolded patches
  std::string name_;
  std::int64_t out_;
  std::int64_t kernel_;
  std::int64_t stride_;
  std::int64_t padding_;
  bool bias_;
  std::int64_t in_ = 0;
};

class GroupNorm final : public Layer {
 public:
  // Exactly one of `groups` and `per_group` (channels in each group) is positive.
  GroupNorm(std::string name, std::int64_t groups, std::int64_t per_group)
      : name_(std::move(name)), groups_(groups), per_group_(per_group) {}

  Shape build(const Shape& input, ParamLayout& layout) override {
    const std::string what = "group norm '" + name_ + "'";
    if (input.empty()) cannot_take(what, input, "it needs channels");
    channels_ = input[0];
    if (per_group_ > 0) {
      if (channels_ % per_group_ != 0) {
        cannot_take(what, input,
                    "groups of " + std::to_string(per_group_) + " channels do not divide " +
                        std::to_string(channels_) + " channels");
      }
      groups_ = channels_ / per_group_;
    }
    if (channels_ % groups_ != 0) {
      cannot_take(what, input,
                  std::to_string(groups_) + " groups do not divide " + std::to_string(channels_) +
                      " channels; choose groups that divide it");
    }
    first_ = layout.add(name_ + ".weight", {channels_});
    layout.add(name_ + ".bias", {channels_});
    count_ = 2;
    return input;
  }

  torch::Tensor forward(const torch::Tensor& x,
                        const std::vector<torch::Tensor>& params) const override {
    return torch::group_norm(x, groups_, params[first_], params[first_ + 1], kEps);
  }

  // Statistics are per example; only the affine γ, β differ between clients.
  torch::Tensor forward_stacked(const torch::Tensor& x, const std::vector<torch::Tensor>& params,
                                std::int64_t clients) const override {
    auto normalised = torch::group_norm(x, groups_, {}, {}, kEps);
    auto grouped = normalised.view({clients, x.size(0) / clients, channels_, -1});
    return (grouped * params[first_].view({clients, 1, channels_, 1}) +
            params[first_ + 1].view({clients, 1, channels_, 1}))
        .view(x.sizes());
  }

  void initialise(const std::vector<torch::Tensor>& params, at::Generator&, bool) const override {
    params[first_].fill_(1.0);
    params[first_ + 1].fill_(0.0);
  }

  // y = x̂·γ + β per channel, with x̂ the group-normalised input (which does not depend on γ, β):
  // ∂L/∂γ_b = Σ_positions x̂_b ⊙ g_b and ∂L/∂β_b = Σ_positions g_b.
  void per_example(const torch::Tensor& x, const torch::Tensor& grad_output,
                   const std::vector<torch::Tensor>& grads) const override {
    const auto batch = x.size(0);
    auto normalised = torch::group_norm(x, groups_, {}, {}, kEps);
    auto g = grad_output.reshape({batch, channels_, -1});
    auto weight = grads[first_];
    auto bias = grads[first_ + 1];
    at::sum_out(weight, normalised.reshape({batch, channels_, -1}).mul_(g), {2});
    at::sum_out(bias, g, {2});
  }

 private:
  static constexpr double kEps = 1e-5;  // PyTorch's default
  std::string name_;
  std::int64_t groups_;
  std::int64_t per_group_;
  std::int64_t channels_ = 0;
};

// 2x2 max pooling in plain loops (floor mode, exact). ATen 1.13's CPU max_pool2d records a 64-bit
// index per output with a scalar NCHW kernel and took over half of a GroupNorm-CNN training step
// at B = 50 (docs/performance.md); here a window's winner is one byte, row-major 0..3, chosen as
// ATen chooses it (the first maximum, or the last NaN). The gradient moves values between windows
// and winners without arithmetic, as two autograd functions that are each other's derivative, so
// gradients of any order (gradient-matching attacks differentiate through ∇θ) stay exact.
namespace pool2x2 {

// y, or x when `take_x`, chosen on the bits: x86 has no scalar floating-point conditional move, and
// GCC compiles a float ?: to a branch that mispredicts on about every other window (4x slower).
template <typename T>
T pick(bool take_x, T x, T y) {
  using Bits = std::conditional_t<sizeof(T) == 4, std::uint32_t, std::uint64_t>;
  Bits bx, by;
  std::memcpy(&bx, &x, sizeof(T));
  std::memcpy(&by, &y, sizeof(T));
  const Bits mask = Bits{0} - static_cast<Bits>(take_x);
  const Bits chosen = (bx & mask) | (by & ~mask);
  T out;
  std::memcpy(&out, &chosen, sizeof(T));
  return out;
}

// ATen's rule for a later window element x against the current maximum y.
template <typename T>
bool replaces(T x, T y) {
  return (x > y) | (x != x);
}

// For x [N, C, H, W]: winners [N, C, H/2, W/2] and, when `values` is given, the maxima there.
// The window is decided pairwise, top pair, bottom pair, then between them, which is ATen's
// row-major scan: ties keep the earlier element, NaN replaces anything.
torch::Tensor find_winners(const torch::Tensor& input, torch::Tensor* values) {
  const auto x = input.contiguous();
  const auto planes = x.size(0) * x.size(1), height = x.size(2), width = x.size(3);
  const auto rows = height / 2, columns = width / 2;
  auto winners = torch::empty({x.size(0), x.size(1), rows, columns}, x.options().dtype(torch::kUInt8));
  if (values) *values = torch::empty({x.size(0), x.size(1), rows, columns}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "max_pool_2x2", [&] {
    const auto* in = x.data_ptr<scalar_t>();
    auto* winner = winners.data_ptr<std::uint8_t>();
    auto* out = values ? values->data_ptr<scalar_t>() : nullptr;
    for (std::int64_t p = 0; p < planes; ++p) {
      for (std::int64_t i = 0; i < rows; ++i) {
        const auto* top = in + (p * height + 2 * i) * width;
        const auto* bottom = top + width;
        for (std::int64_t j = 0; j < columns; ++j) {
          const scalar_t a = top[2 * j], b = top[2 * j + 1], c = bottom[2 * j], d = bottom[2 * j + 1];
          const bool right_top = replaces(b, a), right_bottom = replaces(d, c);
          const scalar_t upper = pick(right_top, b, a), lower = pick(right_bottom, d, c);
          const bool below = replaces(lower, upper);
          if (out) *out++ = pick(below, lower, upper);
          const int column = below ? right_bottom : right_top;  // integer select: no branch
          *winner++ = static_cast<std::uint8_t>(2 * below + column);
        }
      }
    }
  });
  return winners;
}

// visit(k, at) for every window k of `winners` [N, C, rows, columns] in order, `at` being where
// its winner lies in the [N, C, height, width] maps.
template <typename Visit>
void for_each_winner(const torch::Tensor& winners, std::int64_t height, std::int64_t width, Visit&& visit) {
  const auto planes = winners.size(0) * winners.size(1), rows = winners.size(2), columns = winners.size(3);
  const auto* winner = winners.data_ptr<std::uint8_t>();
  std::int64_t k = 0;
  for (std::int64_t p = 0; p < planes; ++p) {
    for (std::int64_t i = 0; i < rows; ++i) {
      for (std::int64_t j = 0; j < columns; ++j, ++k) {
        const auto w = winner[k];
        visit(k, (p * height + 2 * i + (w >> 1)) * width + 2 * j + (w & 1));
      }
    }
  }
}

// out [N, C, H/2, W/2] = x at each window's winner.
torch::Tensor gather(const torch::Tensor& input, const torch::Tensor& winners) {
  const auto x = input.contiguous();
  auto out = torch::empty(winners.sizes(), x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "max_pool_2x2_gather", [&] {
    const auto* in = x.data_ptr<scalar_t>();
    auto* result = out.data_ptr<scalar_t>();
    for_each_winner(winners, x.size(2), x.size(3), [&](std::int64_t k, std::int64_t at) { result[k] = in[at]; });
  });
  return out;
}

// x [N, C, height, width] holding g at each window's winner and 0 elsewhere (and in the row or
// column that floor mode drops).
torch::Tensor scatter(const torch::Tensor& values, const torch::Tensor& winners, std::int64_t height,
                      std::int64_t width) {
  const auto g = values.contiguous();
  auto out = torch::zeros({g.size(0), g.size(1), height, width}, g.options());
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "max_pool_2x2_scatter", [&] {
    const auto* in = g.data_ptr<scalar_t>();
    auto* result = out.data_ptr<scalar_t>();
    for_each_winner(winners, height, width, [&](std::int64_t k, std::int64_t at) { result[at] = in[k]; });
  });
  return out;
}

struct Scatter;

// Pooling with gradient: x -> x at the winners.
struct Gather : torch::autograd::Function<Gather> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& winners) {
    ctx->save_for_backward({winners});
    ctx->saved_data["height"] = x.size(2);
    ctx->saved_data["width"] = x.size(3);
    return gather(x, winners);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads);
};

// Its derivative: g -> g placed at the winners.
struct Scatter : torch::autograd::Function<Scatter> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& g,
                               const torch::Tensor& winners, std::int64_t height, std::int64_t width) {
    ctx->save_for_backward({winners});
    return scatter(g, winners, height, width);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    return {Gather::apply(grads[0], ctx->get_saved_variables()[0]), {}, {}, {}};
  }
};

torch::autograd::variable_list Gather::backward(torch::autograd::AutogradContext* ctx,
                                                torch::autograd::variable_list grads) {
  return {Scatter::apply(grads[0], ctx->get_saved_variables()[0], ctx->saved_data["height"].toInt(),
                         ctx->saved_data["width"].toInt()),
          {}};
}

torch::Tensor max_pool(const torch::Tensor& x) {
  if (!x.is_cpu()) return torch::max_pool2d(x, {2, 2});  // the loops read host memory
  if (torch::GradMode::is_enabled() && x.requires_grad()) return Gather::apply(x, find_winners(x, nullptr));
  torch::Tensor values;
  find_winners(x, &values);
  return values;
}

}  // namespace pool2x2

class Pool2d final : public Layer {
 public:
  Pool2d(std::int64_t kernel, bool max) : kernel_(kernel), max_(max) {}

  Shape build(const Shape& input, ParamLayout&) override {
    const std::string what = std::string(max_ ? "max" : "average") + " pooling " +
                             std::to_string(kernel_) + "x" + std::to_string(kernel_);
    if (input.size() != 3) cannot_take(what, input, "it needs feature maps [C, H, W]");
    if (input[1] < kernel_ || input[2] < kernel_) {
      cannot_take(what, input, "the feature map is smaller than the window");
    }
    return {input[0], input[1] / kernel_, input[2] / kernel_};
  }

  torch::Tensor forward(const torch::Tensor& x, const std::vector<torch::Tensor>&) const override {
    if (!max_) return torch::avg_pool2d(x, {kernel_, kernel_});
    if (kernel_ == 2) return pool2x2::max_pool(x);
    return torch::max_pool2d(x, {kernel_, kernel_});
  }

 private:
  std::int64_t kernel_;
  bool max_;
};

class Flatten final : public Layer {
 public:
  Shape build(const Shape& input, ParamLayout&) override {
    return {std::accumulate(input.begin(), input.end(), std::int64_t{1}, std::multiplies<>())};
  }

  torch::Tensor forward(const torch::Tensor& x, const std::vector<torch::Tensor>&) const override {
    return x.flatten(1);
  }
};

// [C, H, W] -> [C]: the mean over positions that ends ResNet before its classifier.
class GlobalAvgPool final : public Layer {
 public:
  Shape build(const Shape& input, ParamLayout&) override {
    if (input.size() != 3) cannot_take("global average pooling", input, "it needs feature maps [C, H, W]");
    return {input[0]};
  }

  torch::Tensor forward(const torch::Tensor& x, const std::vector<torch::Tensor>&) const override {
    return x.mean({2, 3});
  }
};

class Act final : public Layer {
 public:
  explicit Act(Activation kind) : kind_(kind) {}

  Shape build(const Shape& input, ParamLayout&) override { return input; }

  torch::Tensor forward(const torch::Tensor& x, const std::vector<torch::Tensor>&) const override {
    switch (kind_) {
      case Activation::Relu:
        return torch::relu(x);
      case Activation::Tanh:
        return torch::tanh(x);
      default:
        return torch::sigmoid(x);
    }
  }

 private:
  Activation kind_;
};

// The basic block of ResNet-18/34 (He et al., "Deep Residual Learning for Image Recognition",
// CVPR 2016) with GroupNorm in place of BatchNorm, whose batch statistics would mix the examples
// that per-example clipping keeps apart:
//   y = act(gn2(conv2(act(gn1(conv1(x))))) + shortcut(x)),
// conv1 3x3 with `stride` and conv2 3x3, both padded by 1 and without bias. The shortcut is x
// itself, or a 1x1 convolution with `stride` and a GroupNorm where the shape changes. The parts
// are layers of their own, so each keeps its per-example rule.
class Residual final : public Layer {
 public:
  Residual(std::string name, std::int64_t out, std::int64_t stride, std::int64_t per_group, Activation act)
      : conv1_(name + ".conv1", out, 3, stride, 1, /*bias=*/false),
        gn1_(name + ".gn1", 0, per_group),
        conv2_(name + ".conv2", out, 3, 1, 1, /*bias=*/false),
        gn2_(name + ".gn2", 0, per_group),
        act_(act),
        name_(std::move(name)),
        out_(out),
        stride_(stride),
        per_group_(per_group) {}

  Shape build(const Shape& input, ParamLayout& layout) override {
    if (input.size() != 3) cannot_take("residual block '" + name_ + "'", input, "it needs feature maps [C, H, W]");
    first_ = layout.entries.size();
    auto shape = gn1_.build(conv1_.build(input, layout), layout);
    shape = gn2_.build(conv2_.build(shape, layout), layout);
    if (stride_ != 1 || input[0] != out_) {
      shortcut_conv_ = std::make_unique<Conv2d>(name_ + ".shortcut", out_, 1, stride_, 0, /*bias=*/false);
      shortcut_gn_ = std::make_unique<GroupNorm>(name_ + ".shortcut_gn", 0, per_group_);
      shortcut_gn_->build(shortcut_conv_->build(input, layout), layout);
    }
    count_ = layout.entries.size() - first_;
    return shape;
  }

  torch::Tensor forward(const torch::Tensor& x, const std::vector<torch::Tensor>& params) const override {
    return block(x, params, 0, nullptr);
  }

  torch::Tensor forward_stacked(const torch::Tensor& x, const std::vector<torch::Tensor>& params,
                                std::int64_t clients) const override {
    return block(x, params, clients, nullptr);
  }

  torch::Tensor forward_traced(const torch::Tensor& x, const std::vector<torch::Tensor>& params,
                               std::int64_t clients, std::vector<TracedLayer>& trace) const override {
    return block(x, params, clients, &trace);
  }

  void initialise(const std::vector<torch::Tensor>& params, at::Generator& generator, bool xavier) const override {
    for (const Layer* part : parts()) part->initialise(params, generator, xavier);
  }

 private:
  std::vector<const Layer*> parts() const {
    std::vector<const Layer*> all{&conv1_, &gn1_, &conv2_, &gn2_};
    if (shortcut_conv_) all.insert(all.end(), {shortcut_conv_.get(), shortcut_gn_.get()});
    return all;
  }

  // Runs a part the way this block is run: plainly, client-batched, or traced for per-example rules.
  static torch::Tensor step(const Layer& part, const torch::Tensor& x, const std::vector<torch::Tensor>& params,
                            std::int64_t clients, std::vector<TracedLayer>* trace) {
    return trace ? part.forward_traced(x, params, clients, *trace) : part.run(x, params, clients);
  }

  torch::Tensor block(const torch::Tensor& x, const std::vector<torch::Tensor>& params, std::int64_t clients,
                    std::vector<TracedLayer>* trace) const {
    auto h = act_.forward(step(gn1_, step(conv1_, x, params, clients, trace), params, clients, trace), params);
    h = step(gn2_, step(conv2_, h, params, clients, trace), params, clients, trace);
    const auto shortcut =
        shortcut_conv_
            ? step(*shortcut_gn_, step(*shortcut_conv_, x, params, clients, trace), params, clients, trace)
            : x;
    return act_.forward(h + shortcut, params);
  }

  Conv2d conv1_;
  GroupNorm gn1_;
  Conv2d conv2_;
  GroupNorm gn2_;
  std::unique_ptr<Conv2d> shortcut_conv_;
  std::unique_ptr<GroupNorm> shortcut_gn_;
  Act act_;
  std::string name_;
  std::int64_t out_;
  std::int64_t stride_;
  std::int64_t per_group_;
};

}  // namespace

std::unique_ptr<Layer> linear(std::string name, std::int64_t out_features, bool bias) {
  return std::make_unique<Linear>(std::move(name), out_features, bias);
}

std::unique_ptr<Layer> conv2d(std::string name, std::int64_t out_channels, std::int64_t kernel,
                              std::int64_t stride, std::int64_t padding, bool bias) {
  return std::make_unique<Conv2d>(std::move(name), out_channels, kernel, stride, padding, bias);
}

std::unique_ptr<Layer> group_norm(std::string name, std::int64_t groups) {
  return std::make_unique<GroupNorm>(std::move(name), groups, 0);
}

std::unique_ptr<Layer> group_norm_by_size(std::string name, std::int64_t channels_per_group) {
  return std::make_unique<GroupNorm>(std::move(name), 0, channels_per_group);
}

std::unique_ptr<Layer> global_avg_pool() {
  return std::make_unique<GlobalAvgPool>();
}

std::unique_ptr<Layer> residual_block(std::string name, std::int64_t out_channels, std::int64_t stride,
                                      std::int64_t channels_per_group, Activation act) {
  return std::make_unique<Residual>(std::move(name), out_channels, stride, channels_per_group, act);
}

std::unique_ptr<Layer> max_pool2d(std::int64_t kernel) {
  return std::make_unique<Pool2d>(kernel, /*max=*/true);
}

std::unique_ptr<Layer> avg_pool2d(std::int64_t kernel) {
  return std::make_unique<Pool2d>(kernel, /*max=*/false);
}

std::unique_ptr<Layer> flatten() {
  return std::make_unique<Flatten>();
}

std::unique_ptr<Layer> activation(Activation kind) {
  return std::make_unique<Act>(kind);
}

}  // namespace bulwark::detail
