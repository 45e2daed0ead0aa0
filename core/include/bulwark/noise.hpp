#pragma once

#include <array>
#include <cstdint>

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include "bulwark/export.hpp"

namespace bulwark {

/// N(0, stddev²) noise shaped like `like` (its dtype, on its device).
/// - secure = false: drawn from `seeded`, the engine's stream for this draw, on that generator's
///   device, so runs repeat exactly.
/// - secure = true: drawn from the process's cryptographically secure stream
///   (secure_standard_normal), independent of the seed and not reproducible.
BULWARK_API at::Tensor gaussian_like(const at::Tensor& like, double stddev, const at::Generator& seeded,
                                     bool secure = false);

/// `count` independent standard normals (float64, on the host) from a cryptographically secure
/// generator: ChaCha20 (RFC 8439) keyed per thread with 256 bits from the OS (getrandom), its
/// output turned into 53-bit uniforms and those into normals by Box–Muller. An observer of any
/// number of draws cannot predict the next, unlike a seeded PRNG. Floating-point normals still
/// leak through their bit patterns in principle (Mironov, CCS 2012); a discrete Gaussian would
/// close that too.
BULWARK_API at::Tensor secure_standard_normal(std::int64_t count);

/// The ChaCha20 block function of RFC 8439 §2.3: 64 bytes of keystream for (key, counter, nonce).
/// The secure generator's core, exposed for its known-answer test.
BULWARK_API std::array<std::uint8_t, 64> chacha20_block(const std::array<std::uint32_t, 8>& key, std::uint32_t counter,
                                                        const std::array<std::uint32_t, 3>& nonce);

}  // namespace bulwark
