#include "bulwark/clipping.hpp"

#include <ATen/ATen.h>

#include <vector>

namespace bulwark {

std::vector<LayerSpan> layer_spans(const ParamLayout& layout) {
  std::vector<LayerSpan> spans;
  for (const auto& group : layout.layers()) {
    const auto& first = layout.entries[group.front()];
    const auto& last = layout.entries[group.back()];
    spans.push_back({first.offset, last.offset + last.numel - first.offset});
  }
  return spans;
}

at::Tensor layer_norms(const at::Tensor& rows, const ParamLayout& layout) {
  std::vector<at::Tensor> columns;
  for (const auto& s : layer_spans(layout)) columns.push_back(rows.narrow(1, s.offset, s.length).norm(2, /*dim=*/1));
  return at::stack(columns, /*dim=*/1);
}

void scale_layers(at::Tensor& rows, const at::Tensor& factors, const ParamLayout& layout) {
  const auto spans = layer_spans(layout);
  for (std::size_t j = 0; j < spans.size(); ++j) {
    rows.narrow(1, spans[j].offset, spans[j].length).mul_(factors.select(1, static_cast<std::int64_t>(j)).unsqueeze(1));
  }
}

at::Tensor weighted_layer_sum(const at::Tensor& rows, const at::Tensor& factors, const ParamLayout& layout) {
  const auto spans = layer_spans(layout);
  auto sum = at::empty({rows.size(1)}, rows.options());
  for (std::size_t j = 0; j < spans.size(); ++j) {
    auto out = sum.narrow(0, spans[j].offset, spans[j].length);
    at::mv_out(out, rows.narrow(1, spans[j].offset, spans[j].length).t(),
               factors.select(1, static_cast<std::int64_t>(j)).contiguous());
  }
  return sum;
}

}  // namespace bulwark
