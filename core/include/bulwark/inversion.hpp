#pragma once

// Mechanics shared by the gradient-inversion attacks (dlg, idlg, inverting_gradients): the dummy
// inputs they start from and the analytic label rule. The optimisation itself stays in each
// plugin, where it differs.
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include "bulwark/export.hpp"
#include "bulwark/layout.hpp"

namespace bulwark {

/// Dummy inputs [batch, ...shape], float32 on the CPU, drawn from `generator` as `init` says:
/// "uniform" U[0, 1), "normal" N(0, 1) (the DLG reference code), or "patterned" — a random
/// patch × patch tile repeated over the last two axes of an image [C, H, W] (the last axis
/// otherwise) and cropped (Wei et al., "A Framework for Evaluating Client Privacy Leakages in
/// Federated Learning", ESORICS 2020).
BULWARK_API at::Tensor dummy_inputs(const std::string& init, std::int64_t patch, std::int64_t batch,
                                    const std::vector<std::int64_t>& shape, at::Generator generator);

/// iDLG's label of a single example (Zhao, Mopuri, Bilen, arXiv:2001.02610, 2020): the class
/// whose row of the final layer's weight gradient sums to the most negative value. The final layer
/// is the last 2-D entry of `layout` with `num_classes` rows; nullopt when the model has none.
BULWARK_API std::optional<std::int64_t> final_layer_label(const ParamLayout& layout, const at::Tensor& gradient,
                                                          std::int64_t num_classes);

/// What lbfgs_gradient_matching() found.
struct GradientMatch {
  std::vector<at::Tensor> best;  ///< the variables (detached) at the lowest matching loss seen
  std::int64_t iterations = 0;   ///< steps taken until convergence, divergence or the budget
  at::Tensor trace;              ///< the matching loss at each iterate, float64
};

/// Gradient matching with L-BFGS as DLG runs it (Zhu, Liu, Han, NeurIPS 2019; the reference code's
/// torch.optim.LBFGS, `lr`, history `history`): minimises `matching_loss(create_graph)` — the
/// squared distance between the dummy gradient and the observed one — over `variables`. One
/// iteration is one L-BFGS step (up to 20 inner evaluations). It stops after `iterations` steps,
/// once the loss is at most `stop_at` (converged), or when it turns NaN/Inf (L-BFGS without line
/// search can diverge), and returns the iterate with the lowest loss it saw.
BULWARK_API GradientMatch lbfgs_gradient_matching(const std::vector<at::Tensor>& variables,
                                                  const std::function<at::Tensor(bool)>& matching_loss,
                                                  std::int64_t iterations, double lr, std::int64_t history,
                                                  double stop_at);

}  // namespace bulwark
