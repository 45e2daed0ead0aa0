#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "bulwark/model.hpp"
#include "bulwark/options.hpp"

namespace bulwark {

/// Schema of the [model] section (validated like a plugin's options).
const std::vector<OptionSpec>& model_option_specs();

/// Builds a model of the zoo from the validated [model] options:
///   arch = "softmax" | "mlp" | "cnn" | "lenet" | "layers" | a preset of layer_specs.hpp | "torchscript"
/// for inputs of `input_shape` (per example) and `num_classes` outputs.
/// Throws Error(Config) for an input shape the architecture cannot take, Error(Data) for a
/// TorchScript file that cannot be loaded.
///
/// The zoo (docs/design-notes.md, "Layers": per-example gradients are vectorised for every layer of these):
///   softmax  flatten, linear F -> classes (multinomial logistic regression)
///   mlp      flatten, [linear -> activation] per `hidden` width, linear -> classes
///   cnn      conv 3x3 (16) + maxpool 2 + GroupNorm + tanh, conv 3x3 (32) + maxpool 2 +
///            GroupNorm + tanh, linear 64, tanh, linear 32, tanh, linear classes (DP studies)
///   lenet    3 conv 5x5 (12 channels, strides 2, 2, 1, padding 2) with sigmoid, linear classes:
///            the twice-differentiable LeNet of Zhu et al., "Deep Leakage from Gradients" (2019)
///   layers   the `[model] layers` list (parse_layer_specs); the presets lenet5_gn, cnn4, cnn2,
///            vgg11_gn and resnet18 are fixed lists of the same grammar
///   torchscript  a module saved with torch.jit.script(model).save(path), run in eval mode;
///            its per-example gradients use the batch-size-1 loop.
std::unique_ptr<Model> build_model(const Options& options,
                                   const std::vector<std::int64_t>& input_shape,
                                   std::int64_t num_classes);

namespace detail {

/// The client-batched form of a zoo model (docs/design-notes.md, "Client-batched training"): K clients' parameters Θ [K, d] in one
/// pass. Inputs [K·B, ...] hold client k's batch in rows [k·B, (k+1)·B), evaluated at Θ[k]. The
/// layer models implement it; the engine trains clients one by one for models that do not.
class StackedModel {
 public:
  virtual ~StackedModel();

  /// logits [K·B, classes]; differentiable with respect to `params`.
  virtual torch::Tensor forward_stacked(const torch::Tensor& params,
                                        const torch::Tensor& inputs) const = 0;

  /// Per-example gradients [K·B, d] of the summed cross-entropy, row r taken at Θ[r / B]; also
  /// for a single θ [d] (then as Model::per_example_gradients). When `row_losses` is given it
  /// receives each row's cross-entropy [K·B] from the same forward pass.
  virtual torch::Tensor per_example_gradients_stacked(const torch::Tensor& params,
                                                      const torch::Tensor& inputs,
                                                      const torch::Tensor& labels,
                                                      torch::Tensor* row_losses) const = 0;

  /// Maps per-example, per-layer gradient norms [K·B, m] to clipping factors [K·B, m].
  using ClipFactors = std::function<torch::Tensor(const torch::Tensor& layer_norms)>;

  /// Ghost clipping: each client's Σ_b Σ_j f_bj ∇_bj [K, d] (or [d] for one θ), where f =
  /// `clip_factors`(norms) and column j of the norms is layer j of ParamLayout::layers(); from the
  /// same pass and layer inputs and output gradients as per_example_gradients_stacked, without
  /// its [K·B, d] rows.
  virtual torch::Tensor clipped_gradient_sums_stacked(const torch::Tensor& params, const torch::Tensor& inputs,
                                                      const torch::Tensor& labels, const ClipFactors& clip_factors,
                                                      torch::Tensor* row_losses) const = 0;
};

/// The TorchScript member of the zoo (model_torchscript.cpp). `path` must name a module saved by
/// torch.jit.script(...).save() or torch::jit::Module::save(); Error(Data) otherwise.
std::unique_ptr<Model> load_torchscript_model(const std::string& path,
                                              const std::vector<std::int64_t>& input_shape,
                                              std::int64_t num_classes);

/// "107,722": parameter counts in descriptions.
std::string thousands(std::int64_t value);

}  // namespace detail

}  // namespace bulwark
