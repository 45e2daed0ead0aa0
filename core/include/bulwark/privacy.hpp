#pragma once

#include <cstdint>
#include <vector>

#include <torch/types.h>

#include "bulwark/export.hpp"
#include "bulwark/layout.hpp"

namespace bulwark {

/// The unit a guarantee protects.
enum class PrivacyLevel {
  Example = 0,  ///< one training example of one client (DP-SGD, Fed-CDP)
  Client = 1,   ///< all of one client's data (Fed-SDP, DP-FedAvg)
};

/// One local training step of one client.
struct PrivacyStepContext {
  std::int64_t round = 0;
  std::int64_t total_rounds = 0;
  std::int64_t client = 0;
  std::int64_t step = 0;          ///< local step within the round, from 0
  std::int64_t steps = 0;         ///< local steps this client takes in the round
  std::int64_t batch_size = 0;    ///< rows of the per-example gradient matrix
  const ParamLayout* layout = nullptr;
  at::Generator generator;        ///< seeded per (round, client), of the rows' device; advance it, never reseed it
  /// Whether anything reads `per_example_grads` after the hook (a type-2 leakage observation).
  /// When false (the engine's training loop), a mechanism may leave the rows as they are and
  /// compute the gradient it returns directly, provided its distribution is unchanged.
  bool rows_observed = true;
};

/// A client's finished upload, before it leaves the client.
struct ClientUpdateContext {
  std::int64_t round = 0;
  std::int64_t total_rounds = 0;
  std::int64_t client = 0;
  std::int64_t num_samples = 0;
  const ParamLayout* layout = nullptr;
  at::Generator generator;
};

/// The server's aggregate, before the server step.
struct ServerPrivacyContext {
  std::int64_t round = 0;
  std::int64_t total_rounds = 0;
  std::int64_t clients_in_round = 0;
  const ParamLayout* layout = nullptr;
  at::Generator generator;
};

/// What the round looked like, for the accountant.
struct RoundAccountingInfo {
  std::int64_t round = 0;
  std::int64_t total_rounds = 0;
  std::int64_t clients_total = 0;        ///< K
  std::int64_t clients_sampled = 0;      ///< K_t
  double client_sampling_rate = 0.0;     ///< q = K_t / K (or the Poisson rate)
  std::int64_t local_steps = 0;          ///< steps per client this round (largest over clients)
  std::int64_t batch_size = 0;           ///< B: [clients] batch_size, or with batch_fraction the smallest client's batch
  std::int64_t min_client_samples = 0;   ///< smallest N_i among the round's clients
  std::int64_t train_samples = 0;        ///< N, all clients together
  /// Example-level sampling rate per the [privacy] `example_rate` option: local = B/N_i of the
  /// round's smallest client (capped at 1), global = B·K_t/N (the Fed-CDP paper's view).
  double example_sampling_rate = 0.0;
  const ParamLayout* layout = nullptr;   ///< the model's layout (per-layer sensitivities)
};

/// What a mechanism did in a round, in the terms of the subsampled Gaussian mechanism:
/// `steps` compositions at sampling rate q with noise std = noise_multiplier × sensitivity.
struct AccountingEvent {
  PrivacyLevel level = PrivacyLevel::Example;
  double sampling_rate = 1.0;
  double noise_multiplier = 0.0;
  std::int64_t steps = 0;
};

/// The option through which the host sets a mechanism's noise level. A mechanism whose accounted
/// noise multiplier is governed by one number declares it as a Float option with this name; with
/// [privacy] target_epsilon the host solves for it by bisection (creating throw-away instances
/// with the option overridden and asking each for accounting() over the projected run) and then
/// creates the mechanism with the solved value, as if the user had written it.
inline constexpr char kNoiseMultiplierOption[] = "noise_multiplier";

/// Privacy mechanism plugin: up to three hooks on the round (docs/architecture.md, "A round": train and aggregate).
class BULWARK_API PrivacyMechanism {
 public:
  virtual ~PrivacyMechanism();

  /// Per-example hook, at every local step. `per_example_grads` [B, d] (rows follow the model's
  /// ParamLayout) may be clipped and noised in place: what is left there is what a type-2 leakage
  /// observer sees. Returns the gradient [d] the local optimiser applies. Called on worker
  /// threads, concurrently for different clients.
  virtual bool per_example() const { return false; }
  virtual torch::Tensor privatize_gradients(torch::Tensor& per_example_grads,
                                            const PrivacyStepContext& context);

  /// Clipping from per-layer norms, without the rows (ghost clipping). A per-example mechanism
  /// whose hook is "scale example b's gradient of layer j by a factor f_bj that depends only on
  /// the per-example, per-layer L2 norms; sum over the batch; privatise the sum" returns true and
  /// implements the two hooks below. Where nobody observes the rows and the model is one of the
  /// kernel's layer models, the host then obtains the norms and Σ_b Σ_j f_bj ∇_bj from each
  /// layer's inputs and output gradients without forming [B, d] (Li et al. 2022; Bu et al. 2023),
  /// and calls clip_factors, then privatize_clipped_sum, instead of privatize_gradients.
  virtual bool clips_by_layer_norms() const { return false; }
  /// Factors [B, m] for the norms [B, m]: column j is layer j of ParamLayout::layers().
  virtual torch::Tensor clip_factors(const torch::Tensor& layer_norms, const PrivacyStepContext& context);
  /// The gradient [d] the local optimiser applies, from the clipped sum [d] (may be changed in place).
  virtual torch::Tensor privatize_clipped_sum(torch::Tensor& clipped_sum, const PrivacyStepContext& context);

  /// Client hook: rewrite the client's upload [d] in place (client-level clipping/noise, local
  /// DP). Worker threads, concurrently for different clients.
  virtual bool on_client_update() const { return false; }
  virtual void privatize_update(torch::Tensor& update, const ClientUpdateContext& context);

  /// Server hook: rewrite the aggregate g [d] in place (central noise). Main thread.
  virtual bool on_server() const { return false; }
  virtual void privatize_aggregate(torch::Tensor& aggregate, const ServerPrivacyContext& context);

  /// What the round cost, for the RDP accountant. Called once per round, when the round's clients
  /// are known and before they train (so the host can stop before `max_epsilon` is exceeded), and
  /// on throw-away instances for projected rounds when the host solves `target_epsilon`. Must
  /// depend on `info` and the options only, not on state the hooks change.
  virtual std::vector<AccountingEvent> accounting(const RoundAccountingInfo& info) const;

  virtual void save_state(StateDict& state) const;
  virtual void load_state(const StateDict& state);
};

}  // namespace bulwark
