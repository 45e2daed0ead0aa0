#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <torch/types.h>

#include "bulwark/export.hpp"

namespace bulwark {

/// A labelled classification dataset held in memory.
/// inputs: float32 [N, ...input_shape] (images [N, C, H, W] scaled to [0, 1] or normalised;
/// tabular [N, F]); labels: int64 [N] in [0, num_classes).
struct BULWARK_API Dataset {
  torch::Tensor train_inputs, train_labels;
  torch::Tensor test_inputs, test_labels;
  std::int64_t num_classes = 0;
  std::vector<std::int64_t> input_shape;  ///< per example, e.g. {1, 28, 28}
  std::string description;                ///< e.g. "Fashion-MNIST (IDX, 60000 train / 10000 test)"
};

/// What a loader may use besides its options.
struct DatasetContext {
  std::uint64_t seed = 0;  ///< experiment seed (for synthetic data or shuffled splits)
};

/// Dataset loader plugin: options -> tensors. Reads real formats; a bad file gets an Error naming
/// the file and what was wrong (truncated, wrong magic, label out of range), never a crash.
class BULWARK_API DatasetLoader {
 public:
  virtual ~DatasetLoader();
  /// Called once per run, before training, on the main thread.
  virtual Dataset load(const DatasetContext& context) = 0;
};

}  // namespace bulwark
