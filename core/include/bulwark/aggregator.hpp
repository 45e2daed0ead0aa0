#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include <torch/types.h>

#include "bulwark/export.hpp"
#include "bulwark/layout.hpp"

namespace bulwark {

class Model;

/// Everything a rule may know about the round besides the update matrix.
struct AggregationContext {
  std::int64_t round = 0;
  torch::Tensor params;                   ///< θ [d] before this round's update
  const ParamLayout* layout = nullptr;
  const Model* model = nullptr;
  /// Declared Byzantine bound: how many of this round's rows the experiment expects to be
  /// malicious (from the attack configuration; 0 when clean). Rules take it when their own `f`
  /// option is left at its default.
  std::int64_t byzantine_bound = 0;
  std::vector<std::int64_t> client_ids;   ///< client id of each row
  at::Generator generator;                ///< seeded stream for randomised rules, of U's device
  /// DiverseFL: the guiding update for row j, computed by the server at θ on the sample that
  /// row j's client shared (same quantity as an upload: a gradient in FedSGD mode, a local-training
  /// delta in FedAvg mode). Empty unless `shared_sample_fraction()` > 0.
  std::function<torch::Tensor(std::int64_t row)> guiding_update;
  /// FLTrust: the server's own update at θ on its clean root dataset (as many local steps as the
  /// round's clients take, honestly and without privacy hooks; the same quantity as an upload).
  /// Empty unless `root_sample_size()` > 0.
  std::function<torch::Tensor()> root_update;
  /// Ground truth, filled only for rules whose `wants_ground_truth()` is true (the oracle).
  std::vector<std::int64_t> true_malicious_rows;
};

/// A rule's answer: one vector g[d], and for rules that accept or reject clients, which rows were
/// rejected (the engine scores these against the true malicious set).
struct AggregationResult {
  torch::Tensor aggregate;                ///< g [d], same dtype as the updates
  bool reports_flags = false;             ///< true when flagged_rows is meaningful
  std::vector<std::int64_t> flagged_rows; ///< rows judged malicious (not used in the aggregate)
};

/// A transformed update matrix, produced by a pre-aggregator.
struct UpdateSet {
  torch::Tensor updates;  ///< [m, d]
  torch::Tensor weights;  ///< [m]
};

/// What a rule asks of the clients' local training (RSA); the defaults change nothing.
struct ClientProtocol {
  /// Each client keeps its own model x_i across rounds: it uploads x_i − θ as x_i stands at the
  /// start of the round, then trains from x_i (not θ) and keeps the result. The kernel stores x_i
  /// for the clients that have taken part (θ before a client's first round) and checkpoints it.
  bool persistent_models = false;
  /// λ ≥ 0: every local step adds λ · sign(x − θ) to the client's gradient (RSA's ℓ1 pull to θ).
  double sign_penalty = 0.0;
};

/// Aggregation rule plugin: (U[n, d], weights[n], context) -> g[d].
///
/// Rows of U are the clients' uploads in the round (FedAvg: Δ = θ_local − θ; FedSGD: the
/// gradient). A row may contain NaN or Inf (a faulty or malicious client): a robust rule must not
/// crash and should not let it poison g; document what yours does. `weights` are the clients'
/// sample counts (float64 or float32 [n]); unweighted rules ignore them. Called on the main thread,
/// once per round, in round order; the rule may keep state between rounds (save it through
/// save_state/load_state so checkpoints resume exactly).
class BULWARK_API Aggregator {
 public:
  virtual ~Aggregator();

  virtual AggregationResult aggregate(const torch::Tensor& updates, const torch::Tensor& weights,
                                      const AggregationContext& context) = 0;

  /// Pre-aggregators (clipping, bucketing, nearest-neighbour mixing) override this and are
  /// chained in front of a rule with `pre = [...]`; the default is the identity.
  virtual UpdateSet preprocess(const torch::Tensor& updates, const torch::Tensor& weights,
                               const AggregationContext& context);

  /// DiverseFL-style rules: fraction of each client's data shared with the server before training.
  virtual double shared_sample_fraction() const { return 0.0; }

  /// FLTrust-style rules: how many training examples the server draws (seeded, once, uniformly
  /// from the whole training set) as its clean root dataset; 0 for none.
  virtual std::int64_t root_sample_size() const { return 0; }

  /// RSA-style rules: how the clients must train for this rule.
  virtual ClientProtocol client_protocol() const { return {}; }

  /// Only the oracle says yes: it is then given the true malicious rows.
  virtual bool wants_ground_truth() const { return false; }

  virtual void save_state(StateDict& state) const;
  virtual void load_state(const StateDict& state);
};

}  // namespace bulwark
