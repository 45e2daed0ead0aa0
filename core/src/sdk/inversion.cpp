#include "bulwark/inversion.hpp"

#include <ATen/ATen.h>

#include <algorithm>

namespace bulwark {

at::Tensor dummy_inputs(const std::string& init, std::int64_t patch, std::int64_t batch,
                        const std::vector<std::int64_t>& shape, at::Generator generator) {
  std::vector<std::int64_t> sizes{batch};
  sizes.insert(sizes.end(), shape.begin(), shape.end());
  const auto options = at::TensorOptions().dtype(at::kFloat);
  if (init == "normal") return at::randn(sizes, generator, options);
  if (init == "uniform") return at::rand(sizes, generator, options);
  const auto spatial = std::min<std::size_t>(shape.size() >= 3 ? 2 : 1, shape.size());
  std::vector<std::int64_t> patch_sizes = sizes, repeats(sizes.size(), 1);
  for (std::size_t k = sizes.size() - spatial; k < sizes.size(); ++k) {
    patch_sizes[k] = std::min(patch, sizes[k]);
    repeats[k] = (sizes[k] + patch_sizes[k] - 1) / patch_sizes[k];
  }
  auto tiled = at::rand(patch_sizes, generator, options).repeat(repeats);
  for (std::size_t k = sizes.size() - spatial; k < sizes.size(); ++k) {
    tiled = tiled.narrow(static_cast<std::int64_t>(k), 0, sizes[k]);
  }
  return tiled.contiguous();
}

std::optional<std::int64_t> final_layer_label(const ParamLayout& layout, const at::Tensor& gradient,
                                              std::int64_t num_classes) {
  for (auto entry = layout.entries.rbegin(); entry != layout.entries.rend(); ++entry) {
    if (entry->shape.size() == 2 && entry->shape[0] == num_classes) {
      auto weight_gradient = gradient.narrow(0, entry->offset, entry->numel).view(entry->shape);
      return weight_gradient.sum(1).argmin().item<std::int64_t>();
    }
  }
  return std::nullopt;
}

}  // namespace bulwark
