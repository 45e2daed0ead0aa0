#pragma once

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include "bulwark/export.hpp"

namespace bulwark {

/// N(0, stddev²) noise shaped like `like` (its dtype), drawn from `generator` on that generator's
/// device and placed on `like`'s device. Pass a generator of `like`'s device (the engine's
/// contexts do) and nothing crosses between host and device.
BULWARK_API at::Tensor gaussian_like(const at::Tensor& like, double stddev, at::Generator generator);

/// The generator a mechanism draws its noise from: the engine's seeded stream, or with `secure`
/// a fresh generator of the same device seeded from the OS's entropy (std::random_device), which
/// gives up run-to-run reproducibility.
BULWARK_API at::Generator noise_generator(bool secure, const at::Generator& seeded);

}  // namespace bulwark
