#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include <torch/types.h>

#include "bulwark/export.hpp"
#include "bulwark/layout.hpp"

namespace bulwark {

class Model;

/// Context of the data hook: one batch of one malicious client.
struct DataAttackContext {
  std::int64_t round = 0;
  std::int64_t client = 0;
  std::int64_t num_classes = 0;
  at::Generator generator;  ///< seeded per (round, client), of the batch's device
};

/// Context of the step hook: one local SGD step of one malicious client.
struct StepAttackContext {
  std::int64_t round = 0;
  std::int64_t client = 0;
  std::int64_t step = 0;  ///< 0-based within the client's local run
};

/// Context of the update hook.
struct UpdateAttackContext {
  std::int64_t round = 0;
  torch::Tensor params;                     ///< θ [d] the round started from
  const ParamLayout* layout = nullptr;
  std::vector<std::int64_t> malicious_rows; ///< rows of `updates` this attack controls
  std::vector<std::int64_t> honest_rows;    ///< the other rows (empty unless omniscient)
  std::int64_t num_clients = 0;             ///< n, all rows of the round
  std::int64_t num_malicious = 0;           ///< f, all malicious rows of the round
  at::Generator generator;
  /// Runs the experiment's configured aggregator (pre-aggregators included) on a candidate
  /// matrix of the same shape as the round's full U, without changing its state. For attacks that
  /// optimise against the defence. Empty when not omniscient.
  std::function<torch::Tensor(const torch::Tensor& updates)> aggregate_probe;
};

/// Inputs and labels.
struct LabeledData {
  torch::Tensor inputs;
  torch::Tensor labels;
};

/// What a gradient-leakage attack is given: the model, the point θ, and what it observed.
struct LeakageProblem {
  const Model* model = nullptr;
  torch::Tensor params;            ///< θ [d] at which `observed` was computed
  torch::Tensor observed;          ///< observed gradient [d] (summed or averaged over the batch)
  bool observed_is_mean = true;    ///< mean over the batch (true) or sum
  std::int64_t batch_size = 1;
  std::vector<std::int64_t> input_shape;
  std::int64_t num_classes = 0;
  torch::Tensor known_labels;      ///< [B] when the threat model grants labels; undefined otherwise
  at::Generator generator;
};

/// A reconstruction.
struct LeakageResult {
  torch::Tensor inputs;            ///< [B, ...input_shape]
  torch::Tensor labels;            ///< [B] int64 (inferred or known)
  std::int64_t iterations = 0;     ///< optimisation iterations used
  torch::Tensor distance_trace;    ///< optional [iterations] gradient-matching loss
};

/// Attack plugin. Up to three hooks; an attack overrides the ones it uses and says so.
/// Which clients are malicious, and from which round, is the schedule's job (the engine's), not
/// the attack's.
class BULWARK_API Attack {
 public:
  virtual ~Attack();

  /// Data hook: rewrite a malicious client's batch in place (inputs [B, ...], labels [B]).
  /// Called on worker threads, concurrently for different clients: keep it free of shared state.
  virtual bool poisons_data() const { return false; }
  virtual void poison_batch(torch::Tensor& inputs, torch::Tensor& labels,
                            const DataAttackContext& context);

  /// Round hook: called on the main thread at the start of every round, before any client trains,
  /// with the global model θ [d] (attacks that learn from θ's history, such as Neurotoxin). Keep
  /// what it learns in save_state: under mpirun the other ranks receive the state, not the call.
  virtual void begin_round(std::int64_t round, const torch::Tensor& params);

  /// Step hook: rewrite a malicious client's gradient [d] in place before each of its local SGD
  /// steps (after any per-example privacy hook, before weight decay and momentum). Called on worker
  /// threads, concurrently for different clients: read state, write none.
  virtual bool shapes_steps() const { return false; }
  virtual void shape_step(torch::Tensor& gradient, const StepAttackContext& context);

  /// Update hook: rewrite the malicious rows of `updates` in place. Omniscient attacks see the
  /// round's full U[n, d] (honest rows too); the others get only their own rows [m, d].
  /// Called on the main thread after every client has trained.
  virtual bool poisons_updates() const { return false; }
  virtual bool omniscient() const { return false; }
  virtual void poison_updates(torch::Tensor& updates, const UpdateAttackContext& context);

  /// Backdoor evaluation: the triggered (or source-class) test inputs and the attacker's target
  /// labels; the engine reports the fraction classified as the target as backdoor accuracy.
  virtual std::optional<LabeledData> backdoor_test_set(const torch::Tensor& test_inputs,
                                                       const torch::Tensor& test_labels) const;

  /// Leakage hook: reconstruct inputs (and labels) from an observed gradient.
  virtual bool reconstructs() const { return false; }
  virtual LeakageResult reconstruct(const LeakageProblem& problem);

  virtual void save_state(StateDict& state) const;
  virtual void load_state(const StateDict& state);
};

}  // namespace bulwark
