#pragma once

// Mechanics shared by the gradient-inversion attacks (dlg, idlg, inverting_gradients): the dummy
// inputs they start from and the analytic label rule. The optimisation itself stays in each
// plugin, where it differs.
#include <cstdint>
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

}  // namespace bulwark
