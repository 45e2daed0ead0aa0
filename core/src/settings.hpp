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
  double batch_fraction = 0.0;    ///< > 0: each client's batch is this share of its n examples

  /// The batch of a client with n > 0 examples: batch_size (at most n), or with batch_fraction
  /// max(1, round(fraction · n)).
  std::int64_t batch(std::int64_t n) const;
  /// Local steps of a client with n > 0 examples (the trainer and the accountant share it).
  std::int64_t steps(std::int64_t n) const;
};

/// A learning rate that follows the round: `base` shaped by one schedule, after an optional
/// linear warm-up ([clients] / [server] lr_schedule and its options). A pure function of the
/// round, so a resumed run needs no state for it.
struct LrSchedule {
  enum class Kind {
    Constant,     ///< base
    Step,         ///< base · gamma^(milestones ≤ r)  (torch MultiStepLR)
    InverseSqrt,  ///< base / √r
    Exponential,  ///< base · gamma^(r − 1)  (torch ExponentialLR)
    Cosine,       ///< min + (base − min)(1 + cos(π (r − 1) / R)) / 2  (torch CosineAnnealingLR, T_max = R)
  };
  Kind kind = Kind::Constant;
  double base = 0.0;
  std::vector<std::int64_t> milestones;  ///< Step: rounds from which one more factor gamma applies
  double gamma = 0.1;                    ///< Step, Exponential
  double min = 0.0;                      ///< Cosine: the floor
  std::int64_t warmup_rounds = 0;        ///< rounds 1..W go linearly from warmup_from towards the schedule
  double warmup_from = 0.0;

  /// The rate of round r (1-based) of a run of `rounds`.
  double at(std::int64_t round, std::int64_t rounds) const;
};

/// [clients]: the local optimiser and how clients are batched on the device.
struct ClientSettings {
  std::int64_t count = 0;
  Sampling sampling;
  LocalSchedule schedule;
  LrSchedule lr;
  double momentum = 0.0, weight_decay = 0.0;
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
  LrSchedule lr;
  double momentum = 0.0, beta1 = 0.9, beta2 = 0.99, tau = 1e-3;
  double weight_decay = 0.0;  ///< λ: the step direction gets + λθ (DiverseFL's update (13))
};

/// [experiment], [clients] and [server] as the kernel uses them.
struct RunSettings {
  std::string name, output, device;
  std::uint64_t seed = 1;
  std::int64_t rounds = 1, eval_every = 1, eval_batch_size = 1000, checkpoint_every = 0;
  std::int64_t eval_subset = 0;  ///< test examples of intermediate evaluations; 0 = all
  int threads = 0;  ///< 0: all cores
  Mode mode = Mode::FedAvg;
  std::vector<std::int64_t> save_updates;  ///< rounds whose U is written to updates/ (sorted)
  std::int64_t privacy_start_round = 1;  ///< [privacy] start_round: no privacy hook runs, nothing is charged, before it
  ClientSettings clients;
  ServerSettings server;
};

/// Decodes validated sections (every key present, defaults filled in by validate_options).
RunSettings decode_settings(const Options& experiment, const Options& clients, const Options& server);

}  // namespace bulwark
