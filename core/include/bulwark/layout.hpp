#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <torch/types.h>

#include "bulwark/export.hpp"

namespace bulwark {

/// Where each named tensor of a model lives in the flat parameter vector θ[d].
/// Layers are addressed as views (`view(theta, i)`), never copies: the global model, each client's
/// replica, every row of the update matrix U[n, d] and every per-example gradient row share it.
struct BULWARK_API ParamLayout {
  struct Entry {
    std::string name;            ///< e.g. "conv1.weight"
    std::int64_t offset = 0;     ///< first element in the flat vector
    std::int64_t numel = 0;
    std::vector<std::int64_t> shape;
  };

  std::vector<Entry> entries;
  std::int64_t total = 0;  ///< d

  /// Append a tensor of the given shape; returns its index.
  std::size_t add(const std::string& name, const std::vector<std::int64_t>& shape);

  /// Entry i of a flat vector [d] (or of each row of [n, d]) as a view with the entry's shape
  /// (a [n, ...shape] view for a matrix).
  torch::Tensor view(const torch::Tensor& flat, std::size_t i) const;

  /// The slice [offset, offset + numel) along the last dimension, unshaped.
  torch::Tensor slice(const torch::Tensor& flat, std::size_t i) const;

  /// Groups of entries that form one layer (entries sharing the prefix before the last '.'),
  /// in order. Per-layer clipping clips each group.
  std::vector<std::vector<std::size_t>> layers() const;
};

/// Named tensors a stateful plugin saves into a checkpoint and restores from it.
using StateDict = std::map<std::string, torch::Tensor>;

}  // namespace bulwark
