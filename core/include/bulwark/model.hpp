#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <torch/types.h>

#include "bulwark/export.hpp"
#include "bulwark/layout.hpp"

namespace bulwark {

/// A classification model as a pure function of its flat parameters: logits = f(x; θ).
///
/// The kernel builds models from its layer set (or a TorchScript file); plugins receive a
/// `const Model&` to compute forward passes and gradients at any θ they choose (leakage attacks,
/// DiverseFL's guiding gradients, per-example gradient mechanisms). `forward` is const and safe to
/// call from several threads at once. Parameters are read as views of `params`, so
/// `torch::autograd::grad(loss, {params})` returns one flat gradient [d] in the layout's order.
class BULWARK_API Model {
 public:
  virtual ~Model();

  /// Names, offsets and shapes of the parameters inside θ[d].
  virtual const ParamLayout& layout() const = 0;

  /// logits [B, classes] for inputs [B, ...input_shape], with parameters viewed from
  /// `params` [d]. Differentiable with respect to both `params` and `inputs`.
  virtual torch::Tensor forward(const torch::Tensor& params, const torch::Tensor& inputs) const = 0;

  /// Per-example gradients of the summed cross-entropy loss: row b of the result [B, d] is
  /// ∇θ loss(x_b, y_b). The kernel computes it vectorised from layer inputs and output gradients
  /// where every layer has a rule; `vectorised()` says whether that holds for this model.
  virtual torch::Tensor per_example_gradients(const torch::Tensor& params,
                                              const torch::Tensor& inputs,
                                              const torch::Tensor& labels) const = 0;
  virtual bool vectorised() const = 0;

  /// Fresh parameters θ0 [d] (PyTorch's default initialisation of each layer), from `seed`.
  virtual torch::Tensor initial_parameters(std::uint64_t seed) const = 0;

  /// A short description, e.g. "cnn (2 conv + 3 linear, GroupNorm, tanh), d = 109,386".
  virtual std::string describe() const = 0;
};

}  // namespace bulwark
