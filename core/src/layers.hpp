#pragma once

// The functional layer set of the model zoo. A layer owns no tensors: it declares its parameters
// in the model's ParamLayout and reads them, at every call, as views of the flat θ[d], so autograd
// of a loss with respect to θ yields one flat gradient. Each parameterised layer also carries its
// per-example gradient rule (Opacus-style: from the layer's input and the gradient with respect to
// its output), which is what makes DP-SGD's [B, d] gradient matrix one backward pass instead of B.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Generator.h>
#include <torch/types.h>

#include "bulwark/layout.hpp"

namespace bulwark::detail {

/// A per-example shape, e.g. {1, 28, 28}; batches are [B, ...shape].
using Shape = std::vector<std::int64_t>;

/// "[1, 28, 28]".
std::string shape_string(const Shape& shape);

class Layer;

/// A parameterised layer met in the per-example forward pass: its input, and its output until the
/// backward pass has reached it.
struct TracedLayer {
  const Layer* layer;
  torch::Tensor input;
  torch::Tensor output;
};

class Layer {
 public:
  virtual ~Layer();

  /// Declares this layer's parameters in `layout` (named "<layer>.weight", "<layer>.bias") for
  /// per-example inputs of shape `input` and returns the per-example output shape. Called once,
  /// in model order. Throws Error(Config) when the layer cannot take `input`.
  virtual Shape build(const Shape& input, ParamLayout& layout) = 0;

  /// Output for a batch x [B, ...input]. `params` holds one view per layout entry of the whole
  /// model (indexed like the layout); the layer reads its own. Differentiable in x and params.
  virtual torch::Tensor forward(const torch::Tensor& x,
                                const std::vector<torch::Tensor>& params) const = 0;

  /// The same layer for `clients` = K clients at once (client-batched training): `params` are
  /// [K, ...entry shape] views of Θ [K, d] and x [K·B, ...input] holds client k's batch in rows
  /// [k·B, (k+1)·B). The default serves layers without parameters, which act per example.
  virtual torch::Tensor forward_stacked(const torch::Tensor& x,
                                        const std::vector<torch::Tensor>& params,
                                        std::int64_t clients) const;

  /// forward (clients = 0: one θ) or forward_stacked (clients = K).
  torch::Tensor run(const torch::Tensor& x, const std::vector<torch::Tensor>& params, std::int64_t clients) const {
    return clients == 0 ? forward(x, params) : forward_stacked(x, params, clients);
  }

  /// run() for the per-example pass: appends a
  /// TracedLayer for every parameterised layer it runs, so that per_example() can be called on
  /// each. Layers made of layers (the residual block) trace their parts instead of themselves.
  virtual torch::Tensor forward_traced(const torch::Tensor& x, const std::vector<torch::Tensor>& params,
                                       std::int64_t clients, std::vector<TracedLayer>& trace) const;

  /// Writes this layer's initial values into its entries of `params` (views of θ, written in
  /// place), drawing from `generator` in entry order: PyTorch's default initialisation, or with
  /// `xavier` Glorot & Bengio's uniform weights, U(±√(6 / (fan_in + fan_out))), and zero biases.
  virtual void initialise(const std::vector<torch::Tensor>& params, at::Generator& generator, bool xavier) const;

  /// Per-example gradients of this layer's parameters. `x` [B, ...input] is the layer's input,
  /// `grad_output` [B, ...output] the gradient of the summed loss with respect to its output.
  /// Writes row b's gradient of each of its entries into `grads[entry]` ([B, ...entry shape]
  /// views of the result matrix). Runs under NoGradGuard.
  virtual void per_example(const torch::Tensor& x, const torch::Tensor& grad_output,
                           const std::vector<torch::Tensor>& grads) const;

  /// Ghost clipping, first pass: each example's squared L2 norm of this layer's gradient [B],
  /// from the `x` and `grad_output` per_example() takes, during the backward pass. Whatever the
  /// second pass needs goes into `kept`: the caller keeps neither x nor grad_output. The default
  /// forms this layer's rows [B, p] with per_example() and keeps them (one layer's rows, never
  /// [B, d]); layers with a cheaper rule override both passes.
  virtual torch::Tensor gradient_norms_squared(const torch::Tensor& x, const torch::Tensor& grad_output,
                                               const ParamLayout& layout, std::vector<torch::Tensor>& kept) const;

  /// Second pass: Σ_b factor_b ∇_b for each client, into `sums` [K, p] (this layer's columns of the
  /// clients' gradients), the B rows forming K equal groups as in forward_stacked and `factors` [B]
  /// one per row.
  virtual void weighted_gradient_sums(const std::vector<torch::Tensor>& kept, const torch::Tensor& factors,
                                      torch::Tensor& sums) const;

  bool has_parameters() const { return count_ > 0; }
  /// This layer's first entry in the layout.
  std::size_t first_entry() const { return first_; }

 protected:
  /// This layer's entries are [first_, first_ + count_) of the layout.
  std::size_t first_ = 0;
  std::size_t count_ = 0;
};

enum class Activation { Relu, Tanh, Sigmoid };

/// "relu" | "tanh" | "sigmoid" (validated by the options schema before it gets here).
Activation parse_activation(const std::string& name);
const char* activation_name(Activation activation);

/// y = x Wᵀ + b for x [B, in]; W [out, in] and b [out] ~ U(±1/√in) (kaiming_uniform, a = √5).
/// Without `bias`, y = x Wᵀ and the layout holds W only.
std::unique_ptr<Layer> linear(std::string name, std::int64_t out_features, bool bias = true);

/// 2-D convolution for x [B, C, H, W]; W [out, C, k, k] and b [out] ~ U(±1/√(C·k·k)).
std::unique_ptr<Layer> conv2d(std::string name, std::int64_t out_channels, std::int64_t kernel,
                              std::int64_t stride, std::int64_t padding, bool bias = true);

/// GroupNorm (Wu & He, 2018) over [B, C, ...] with an affine weight [C] = 1 and bias [C] = 0:
/// `groups` groups, or groups of `channels_per_group` channels (VGG-11-GN's 16).
std::unique_ptr<Layer> group_norm(std::string name, std::int64_t groups);
std::unique_ptr<Layer> group_norm_by_size(std::string name, std::int64_t channels_per_group);

/// [B, C, H, W] -> [B, C], the mean over positions.
std::unique_ptr<Layer> global_avg_pool();

/// ResNet's basic block with GroupNorm (groups of `channels_per_group` channels), see layers.cpp.
std::unique_ptr<Layer> residual_block(std::string name, std::int64_t out_channels, std::int64_t stride,
                                      std::int64_t channels_per_group, Activation act);

/// Non-overlapping pooling with a kernel×kernel window (floor mode, as PyTorch's default).
std::unique_ptr<Layer> max_pool2d(std::int64_t kernel);
std::unique_ptr<Layer> avg_pool2d(std::int64_t kernel);

/// [B, ...shape] -> [B, prod(shape)].
std::unique_ptr<Layer> flatten();

std::unique_ptr<Layer> activation(Activation kind);

}  // namespace bulwark::detail
