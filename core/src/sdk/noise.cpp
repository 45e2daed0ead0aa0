#include "bulwark/noise.hpp"

#include <random>

#include <ATen/ATen.h>

#include "bulwark/rng.hpp"

namespace bulwark {

at::Tensor gaussian_like(const at::Tensor& like, double stddev, at::Generator generator) {
  const auto device = generator.device();
  return at::empty(like.sizes(), like.options().device(device)).normal_(0.0, stddev, std::move(generator)).to(like.device());
}

at::Generator noise_generator(bool secure, const at::Generator& seeded) {
  if (!secure) return seeded;
  std::random_device entropy;
  return make_generator((static_cast<std::uint64_t>(entropy()) << 32) | entropy(), seeded.device());
}

}  // namespace bulwark
