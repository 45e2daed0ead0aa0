#include "bulwark/layout.hpp"

#include <torch/torch.h>

namespace bulwark {

std::size_t ParamLayout::add(const std::string& name, const std::vector<std::int64_t>& shape) {
  Entry entry;
  entry.name = name;
  entry.offset = total;
  entry.shape = shape;
  entry.numel = 1;
  for (auto s : shape) entry.numel *= s;
  total += entry.numel;
  entries.push_back(std::move(entry));
  return entries.size() - 1;
}

torch::Tensor ParamLayout::slice(const torch::Tensor& flat, std::size_t i) const {
  const auto& e = entries.at(i);
  return flat.narrow(-1, e.offset, e.numel);
}

torch::Tensor ParamLayout::view(const torch::Tensor& flat, std::size_t i) const {
  const auto& e = entries.at(i);
  std::vector<std::int64_t> shape;
  if (flat.dim() == 2) shape.push_back(flat.size(0));
  shape.insert(shape.end(), e.shape.begin(), e.shape.end());
  return slice(flat, i).view(shape);
}

std::vector<std::vector<std::size_t>> ParamLayout::layers() const {
  std::vector<std::vector<std::size_t>> groups;
  std::string current;
  for (std::size_t i = 0; i < entries.size(); ++i) {
    const auto& name = entries[i].name;
    auto dot = name.rfind('.');
    std::string prefix = dot == std::string::npos ? name : name.substr(0, dot);
    if (groups.empty() || prefix != current) {
      groups.emplace_back();
      current = prefix;
    }
    groups.back().push_back(i);
  }
  return groups;
}

}  // namespace bulwark
