#pragma once

#include <cstdint>
#include <vector>

#include <torch/types.h>

#include "bulwark/options.hpp"

namespace bulwark {

/// Every client's share of the training set, as index views into one flat index tensor:
/// client i holds indices[offsets[i] : offsets[i + 1]]. No example is copied.
struct Partition {
  torch::Tensor indices;               ///< int64 [total assigned]
  std::vector<std::int64_t> offsets;   ///< num_clients + 1 entries

  std::int64_t num_clients() const { return static_cast<std::int64_t>(offsets.size()) - 1; }
  std::int64_t size(std::int64_t client) const { return offsets[client + 1] - offsets[client]; }
  torch::Tensor client(std::int64_t client) const {
    return indices.narrow(0, offsets[client], size(client));
  }
};

/// Schema of the [data.partition] table (scheme plus its parameters).
const std::vector<OptionSpec>& partition_option_specs();

/// Splits examples with `labels` [N] among `num_clients` by the validated options:
///   scheme = "iid" | "dirichlet" (alpha) | "shards" (shards_per_client) | "sorted"
///          | "quantity" (distribution = "power_law" | "lognormal", ...) | "full"
/// Deterministic for a seed. Every scheme except "full" assigns each example to exactly one
/// client; "full" gives every client all examples. Throws Error(Config) when impossible (e.g. more
/// clients than examples).
Partition make_partition(const torch::Tensor& labels, std::int64_t num_classes,
                         std::int64_t num_clients, const Options& options, std::uint64_t seed);

/// What each client shares with the server before training (DiverseFL): ceil(fraction × N_i) of
/// its examples, drawn from its (seed, 0, client) aggregator stream. Stored like a partition.
Partition draw_shared_samples(const Partition& partition, double fraction, std::uint64_t seed);

/// The server's root dataset (FLTrust): `size` of the `train_size` training examples, uniformly
/// without replacement from the server's (seed, 0) aggregator stream. int64 [size].
torch::Tensor draw_root_samples(std::int64_t train_size, std::int64_t size, std::uint64_t seed);

}  // namespace bulwark
