#pragma once

#include <cstdint>

#include <ATen/core/Generator.h>
#include <c10/core/Device.h>

#include "bulwark/export.hpp"

namespace bulwark {

/// What a random stream is used for. Each stream is derived from (seed, round, client, purpose),
/// never from shared state or thread order, so results do not depend on the number of threads.
enum class Stream : std::uint64_t {
  Init = 1,        ///< model initialisation
  Partition = 2,   ///< splitting data among clients
  Sampling = 3,    ///< which clients take part in a round
  Schedule = 4,    ///< which clients are malicious
  Batches = 5,     ///< a client's batch order
  Attack = 6,      ///< attack randomness
  Privacy = 7,     ///< privacy noise
  Aggregator = 8,  ///< randomised aggregators (bucketing, ...)
  Leakage = 9,     ///< gradient-leakage attacks
  Dataset = 10,    ///< synthetic data generation
  Evaluation = 11, ///< the test subset of intermediate evaluations (eval_subset)
  Audit = 12,      ///< privacy audits: canaries and membership-inference targets
};

/// Use as `client` for streams that belong to the server, not to one client.
inline constexpr std::int64_t kServer = -1;

/// A 64-bit seed for one stream, by SplitMix64 mixing of the four coordinates.
BULWARK_API std::uint64_t derive_seed(std::uint64_t seed, std::int64_t round, std::int64_t client,
                                      Stream purpose);

/// A fresh generator of `device` seeded with `seed` (for torch::randn(..., generator), randperm,
/// ...). Draw with it on tensors of that device: a tensor's noise comes from its own device's
/// generator, never from a host draw copied over. CPU and CUDA generators give different numbers
/// for the same seed; each is reproducible on its own.
BULWARK_API at::Generator make_generator(std::uint64_t seed, c10::Device device);

/// A fresh CPU generator: make_generator(seed, CPU).
BULWARK_API at::Generator make_generator(std::uint64_t seed);

/// Shorthand for make_generator(derive_seed(...), device).
BULWARK_API at::Generator stream_generator(std::uint64_t seed, std::int64_t round,
                                           std::int64_t client, Stream purpose, c10::Device device);

/// Shorthand for make_generator(derive_seed(...)), a CPU generator.
BULWARK_API at::Generator stream_generator(std::uint64_t seed, std::int64_t round,
                                           std::int64_t client, Stream purpose);

}  // namespace bulwark
