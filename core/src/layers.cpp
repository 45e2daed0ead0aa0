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

torch::Tensor Layer::gradient_norms_squared(const torch::Tensor& x, const torch::Tensor& grad_output,
                                            const ParamLayout& layout, std::vector<torch::Tensor>& kept) const {
  const auto batch = x.size(0);
  std::vector<std::int64_t> numels;
  for (std::size_t i = first_; i < first_ + count_; ++i) numels.push_back(layout.entries[i].numel);
  auto rows = torch::empty({batch, std::accumulate(numels.begin(), numels.end(), std::int64_t{0})}, grad_output.options());
  // per_example() indexes its entries by layout position.
  std::vector<torch::Tensor> grads(first_ + count_);
  auto columns = rows.split_with_sizes(numels, /*dim=*/1);
  for (std::size_t i = 0; i < count_; ++i) {
    std::vector<std::int64_t> shape{batch};
    const auto& entry_shape = layout.entries[first_ + i].shape;
    shape.insert(shape.end(), entry_shape.begin(), entry_shape.end());
    grads[first_ + i] = columns[i].view(shape);
  }
  per_example(x, grad_output, grads);
  kept = {rows};
  return rows.square().sum(/*dim=*/1);
}

void Layer::weighted_gradient_sums(const std::vector<torch::Tensor>& kept, const torch::Tensor& factors,
                                   torch::Tensor& sums) const {
  const auto clients = sums.size(0);
  const auto& rows = kept[0];
  sums.copy_(torch::bmm(factors.view({clients, 1, -1}), rows.view({clients, -1, rows.size(1)})).squeeze(1));
}

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

// Per-example rules that need a temporary the size of a layer's input per example (a
// convolution's unfolded input, GroupNorm's normalised input) form it for this many numbers'
// worth of examples at a time (4 MB): whole batches would add tens of MB to a step's peak.
constexpr std::int64_t kChunkBudget = std::int64_t{1} << 20;

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

  // ‖g_b x_bᵀ‖² = ‖g_b‖² ‖x_b‖²: the ghost norm (Goodfellow 2015; Li et al. 2022) in O(in + out)
  // per example, and the clipped sum Σ_b f_b g_b x_bᵀ = (f ⊙ G)ᵀ X, one product per client.
  torch::Tensor gradient_norms_squared(const torch::Tensor& x, const torch::Tensor& grad_output,
                                       const ParamLayout&, std::vector<torch::Tensor>& kept) const override {
    kept = {x, grad_output};
    auto output_norms = grad_output.square().sum(/*dim=*/1);
    auto norms = output_norms * x.square().sum(/*dim=*/1);
    return bias_ ? norms.add_(output_norms) : norms;
  }

  void weighted_gradient_sums(const std::vector<torch::Tensor>& kept, const torch::Tensor& factors,
                              torch::Tensor& sums) const override {
    const auto clients = sums.size(0);
    const auto& x = kept[0];
    auto scaled = (kept[1] * factors.unsqueeze(1)).view({clients, -1, out_});
    auto weight = torch::bmm(scaled.transpose(1, 2), x.reshape({clients, -1, in_}));  // [K, out, in]
    sums.narrow(1, 0, out_ * in_).copy_(weight.view({clients, -1}));
    if (bias_) sums.narrow(1, out_ * in_, out_).copy_(scaled.sum(/*dim=*/1));
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
    out_h_ = out_h;
    out_w_ = out_w;
    positions_ = out_h * out_w;
    ghost_ = 2 * positions_ * positions_ < out_ * in_ * kernel_ * kernel_;
    rows_kept_ = out_ * in_ * kernel_ * kernel_ <= in_ * input[1] * input[2] + out_ * positions_;
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
  // The unfolded input is C·k·k·L numbers per example (80 MB for 16 → 32 channels on 14×14 maps
  // at B = 256), so it is formed for a chunk of examples at a time.
  void per_example(const torch::Tensor& x, const torch::Tensor& grad_output,
                   const std::vector<torch::Tensor>& grads) const override {
    const auto batch = x.size(0);
    auto g = grad_output.reshape({batch, out_, -1});
    auto weight = grads[first_].view({batch, out_, -1});
    for (std::int64_t start = 0; start < batch; start += chunk()) {
      const auto size = std::min(chunk(), batch - start);
      auto rows = weight.narrow(0, start, size);
      at::bmm_out(rows, g.narrow(0, start, size), unfold(x.narrow(0, start, size)).transpose(1, 2));
    }
    if (!bias_) return;
    auto bias = grads[first_ + 1];
    at::sum_out(bias, g, {2});
  }

  // Mixed ghost clipping (Bu, Mao, Xu, "Scalable and Efficient Training of Large Convolutional
  // Neural Networks with Differential Privacy", NeurIPS 2022): with U_b = unfold(x_b) [C·k·k, L]
  // and G_b [out, L], ‖G_b U_bᵀ‖² = Σ_{l,l'} (U_bᵀU_b ⊙ G_bᵀG_b)_{ll'} costs 2L² per example
  // against out·C·k·k for forming the rows; the cheaper is taken. Without ghost norms the rows
  // are kept for the second pass (keeps_rows) or, when x and G are smaller and the rows large,
  // formed a chunk at a time for the norms and formed again for the sum: memory for time.
  torch::Tensor gradient_norms_squared(const torch::Tensor& x, const torch::Tensor& grad_output,
                                       const ParamLayout& layout, std::vector<torch::Tensor>& kept) const override {
    const auto batch = x.size(0);
    if (!ghost_ && keeps_rows(batch)) return Layer::gradient_norms_squared(x, grad_output, layout, kept);
    if (!ghost_) {
      auto g = grad_output.reshape({batch, out_, -1});
      auto norms = bias_ ? g.sum(/*dim=*/2).square().sum(/*dim=*/1) : torch::zeros({batch}, g.options());
      for (std::int64_t start = 0; start < batch; start += chunk()) {
        const auto size = std::min(chunk(), batch - start);
        norms.narrow(0, start, size).add_(chunk_rows(x, g, start, size).square().sum({1, 2}));
      }
      kept = {x, g};
      return norms;
    }
    auto patches = unfold(x);
    auto g = grad_output.reshape({batch, out_, -1});
    kept = {patches, g};
    auto norms = (torch::bmm(patches.transpose(1, 2), patches) * torch::bmm(g.transpose(1, 2), g)).sum({1, 2});
    return bias_ ? norms.add_(g.sum(/*dim=*/2).square().sum(/*dim=*/1)) : norms;
  }

  // Ghost layers: Σ_b f_b G_b U_bᵀ per client as one product over all its rows' positions; with x
  // and G kept, Σ_b f_b G_b U_bᵀ chunk by chunk within each client.
  void weighted_gradient_sums(const std::vector<torch::Tensor>& kept, const torch::Tensor& factors,
                              torch::Tensor& sums) const override {
    if (!ghost_ && keeps_rows(kept[0].size(0))) return Layer::weighted_gradient_sums(kept, factors, sums);
    const auto clients = sums.size(0);
    const auto depth = in_ * kernel_ * kernel_;
    if (!ghost_) {
      const auto& x = kept[0];
      const auto scaled = kept[1] * factors.view({-1, 1, 1});  // [B, out, L]
      const auto width = x.size(0) / clients;
      for (std::int64_t k = 0; k < clients; ++k) {
        auto weight = torch::zeros({out_, depth}, scaled.options());
        for (std::int64_t start = k * width; start < (k + 1) * width; start += chunk()) {
          const auto size = std::min(chunk(), (k + 1) * width - start);
          weight.add_(chunk_rows(x, scaled, start, size).sum(0));
        }
        sums[k].narrow(0, 0, out_ * depth).copy_(weight.view({-1}));
        if (bias_) sums[k].narrow(0, out_ * depth, out_).copy_(scaled.narrow(0, k * width, width).sum(torch::IntArrayRef{0, 2}));
      }
      return;
    }
    auto scaled = kept[1] * factors.view({-1, 1, 1});  // [B, out, L]
    auto outputs = scaled.view({clients, -1, out_, positions_}).transpose(1, 2).reshape({clients, out_, -1});
    auto patches = kept[0].view({clients, -1, depth, positions_}).transpose(2, 3).reshape({clients, -1, depth});
    sums.narrow(1, 0, out_ * depth).copy_(torch::bmm(outputs, patches).view({clients, -1}));
    if (bias_) sums.narrow(1, out_ * depth, out_).copy_(scaled.sum(/*dim=*/2).view({clients, -1, out_}).sum(1));
  }

 private:
  torch::Tensor bias(const std::vector<torch::Tensor>& params) const {
    return bias_ ? params[first_ + 1] : torch::Tensor();
  }

  // unfold(x) [B, C·k·k, L] as a strided view of the padded input, [B, C, k, k, H', W'],
  // materialised by one reshape: cheaper than ATen's im2col kernel.
  torch::Tensor unfold(const torch::Tensor& x) const {
    auto padded = torch::constant_pad_nd(x, {padding_, padding_, padding_, padding_});
    const auto s = padded.strides();
    return padded
        .as_strided({x.size(0), in_, kernel_, kernel_, out_h_, out_w_},
                    {s[0], s[1], s[2], s[3], s[2] * stride_, s[3] * stride_}, padded.storage_offset())
        .reshape({x.size(0), in_ * kernel_ * kernel_, positions_});
  }

  // Whether the second pass works from the rows: they are no larger than x and G, or the batch's
  // rows fit in one chunk budget anyway (then keeping them is faster than forming them twice).
  bool keeps_rows(std::int64_t batch) const {
    return rows_kept_ || batch * out_ * in_ * kernel_ * kernel_ <= kChunkBudget;
  }

  // Examples per chunk of unfolded input (kChunkBudget numbers).
  std::int64_t chunk() const { return std::max<std::int64_t>(1, kChunkBudget / (in_ * kernel_ * kernel_ * positions_)); }

  // Rows start .. start + size of the per-example weight gradients G_b U_bᵀ, [size, out, C·k·k].
  torch::Tensor chunk_rows(const torch::Tensor& x, const torch::Tensor& g, std::int64_t start, std::int64_t size) const {
    return torch::bmm(g.narrow(0, start, size), unfold(x.narrow(0, start, size)).transpose(1, 2));
  }

  static constexpr std::int64_t kIm2colMaxDepth = 32;  // C·k·k of the unfolded patches
  std::string name_;
  std::int64_t out_;
  std::int64_t kernel_;
  std::int64_t stride_;
  std::int64_t padding_;
  bool bias_;
  std::int64_t in_ = 0;
  std::int64_t out_h_ = 0, out_w_ = 0;
  std::int64_t positions_ = 0;  // L = H'·W' output positions
  bool ghost_ = false;          // ghost norms cheaper than forming the rows
  bool rows_kept_ = false;      // the rows no larger than the input and the output gradient
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
  // ∂L/∂γ_b = Σ_positions x̂_b ⊙ g_b and ∂L/∂β_b = Σ_positions g_b. x̂ is formed for a chunk of
  // examples at a time, as the convolution's unfolded input is.
  void per_example(const torch::Tensor& x, const torch::Tensor& grad_output,
                   const std::vector<torch::Tensor>& grads) const override {
    const auto batch = x.size(0);
    auto g = grad_output.reshape({batch, channels_, -1});
    auto weight = grads[first_];
    auto bias = grads[first_ + 1];
    const auto chunk = std::max<std::int64_t>(1, kChunkBudget / (x.numel() / batch));
    for (std::int64_t start = 0; start < batch; start += chunk) {
      const auto size = std::min(chunk, batch - start);
      auto normalised = torch::group_norm(x.narrow(0, start, size), groups_, {}, {}, kEps);
      auto rows = weight.narrow(0, start, size);
      at::sum_out(rows, normalised.reshape({size, channels_, -1}).mul_(g.narrow(0, start, size)), {2});
    }
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
