#pragma once

// Per-layer clipping of per-example gradient rows, shared by the per-example mechanisms (DP-SGD,
// Fed-CDP). Layers are those of ParamLayout::layers(), each a contiguous range of θ.
#include <cstdint>
#include <vector>

#include <ATen/core/Tensor.h>

#include "bulwark/export.hpp"
#include "bulwark/layout.hpp"

namespace bulwark {

/// One layer of ParamLayout::layers() as the range [offset, offset + length) of θ.
struct LayerSpan {
  std::int64_t offset = 0, length = 0;
};

/// Every layer's span, in layout order.
BULWARK_API std::vector<LayerSpan> layer_spans(const ParamLayout& layout);

/// Each example's L2 norm of each layer: [B, m] for rows [B, d].
BULWARK_API at::Tensor layer_norms(const at::Tensor& rows, const ParamLayout& layout);

/// Scales layer j of row b by factors[b, j], in place (what an observer of the rows then sees).
BULWARK_API void scale_layers(at::Tensor& rows, const at::Tensor& factors, const ParamLayout& layout);

/// Σ_b factors[b, j] · rows[b, layer j], [d], without writing the rows: one matrix-vector product
/// per layer, a single pass over [B, d].
BULWARK_API at::Tensor weighted_layer_sum(const at::Tensor& rows, const at::Tensor& factors, const ParamLayout& layout);

}  // namespace bulwark
