#pragma once

#include <cmath>
#include <cstdint>

#include <torch/types.h>

#include "bulwark/model.hpp"

namespace bulwark {

struct Evaluation {
  double accuracy = std::nan(""), loss = std::nan("");  ///< NaN: not evaluated
};

/// Accuracy (of predicting `labels`) and mean cross-entropy of the model at θ over a set, in
/// fixed chunks of `chunk` examples on `threads` workers, whose partial sums are added in chunk
/// order: the same numbers for any thread count. One device-to-host copy at the end.
Evaluation evaluate(const Model& model, const torch::Tensor& theta, const torch::Tensor& inputs,
                    const torch::Tensor& labels, std::int64_t chunk, int threads);

}  // namespace bulwark
