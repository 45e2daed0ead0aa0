#pragma once

// The kernel's own sections, decoded once into types when the experiment is parsed
// (experiment.cpp). The option schemas stay the source of defaults, validation and `bulwark
// describe`; after decoding, no kernel code reads [experiment], [clients] or [server] by key.
#include <cstdint>
#include <string>
#include <vector>

#include "bulwark/options.hpp"

namespace bulwark {

/// [experiment] mode: what a client uploads.
enum class Mode {
  FedAvg,  ///< Δ = θ_local − θ after local training
  FedSgd,  ///< one gradient at θ on one batch
};

/// Who takes part in a round ([clients] per_round / fraction / poisson_rate; at most one is set).
struct Sampling {
  enum class Kind { Everyone, FixedCount, Poisson };
  Kind kind = Kind::Everyone;
  std::int64_t count = 0;  ///< FixedCount: clients per round (fraction is rounded to it)
  double rate = 0.0;       ///< Poisson: each client's probability of taking part

  /// The round's participants, ascending, drawn from the (seed, round) sampling stream.
  std::vector<std::int64_t> draw(std::uint64_t seed, std::int64_t round, std::int64_t clients) const;
  /// K_t as draw() gives it; the mean for Poisson sampling.
  std::int64_t expected(std::int64_t clients) const;
  /// The client-level sampling rate the accountant sees for a round of `sampled` clients.
  double client_rate(std::int64_t sampled, std::int64_t clients) const;
};

/// How long a client trains in a round.
struct LocalSchedule {
  bool one_step = false;          ///< fedsgd: one batch, one gradient
  std::int64_t iterations = 0;    ///< > 0: this many steps, whatever the client's size
  std::int64_t epochs = 1;        ///< otherwise: passes over the client's n examples
  std::int64_t batch_size = 32;

  /// Local steps of a client with n > 0 examples (the trainer and the accountant share it).
  std::int64_t steps(std::int64_t n) const;
};

/// [clients]: the local optimiser and how clients are batched on the device.
struct ClientSettings {
  std::int64_t count = 0;
  Sampling sampling;
  LocalSchedule schedule;
  double lr = 0.0, momentum = 0.0, weight_decay = 0.0;
  enum class Batching { Auto, On, Off } batching = Batching::Auto;
  std::int64_t batch_clients = 32;

  /// Whether clients train stacked, for a model with a stacked form: On, Off, or for Auto only
  /// where it is known to be faster on a CPU, a model without convolutions (`arch` softmax or
  /// mlp) of at most 65,536 parameters. Decided from the file alone, so the numbers (which
  /// batching changes to float rounding) do not depend on the machine.
  bool batches(const std::string& arch, std::int64_t parameters) const;
};

/// [server]: the optimiser that applies the aggregate to θ.
struct ServerSettings {
  enum class Optimizer { Sgd, Adam } optimizer = Optimizer::Sgd;
  double lr = 1.0, momentum = 0.0, beta1 = 0.9, beta2 = 0.99, tau = 1e-3;
};

/// [experiment], [clients] and [server] as the kernel uses them.
struct RunSettings {
  std::string name, output, device;
  std::uint64_t seed = 1;
  std::int64_t rounds = 1, eval_every = 1, eval_batch_size = 1000, checkpoint_every = 0;
  std::int64_t eval_subset = 0;  ///< test examples of intermediate evaluations; 0 = all
  int threads = 0;  ///< 0: all cores
  Mode mode = Mode::FedAvg;
  ClientSettings clients;
  ServerSettings server;
};

/// Decodes validated sections (every key present, defaults filled in by validate_options).
RunSettings decode_settings(const Options& experiment, const Options& clients, const Options& server);

}  // namespace bulwark
