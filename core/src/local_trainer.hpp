#pragma once

// One client's local run in a round (docs/architecture.md, "A round": train): its batches, the data and step
// hooks of a malicious client's attack, local SGD, the per-example privacy hook at every step and the
// client-level hook on the finished upload. Training, the server's own updates and the leakage
// observation points all run through it, so no copy of the client step exists elsewhere.
#include <cstdint>
#include <vector>

#include <torch/types.h>

#include "bulwark/dataset.hpp"
#include "bulwark/model.hpp"
#include "plugin_set.hpp"
#include "settings.hpp"

namespace bulwark {

namespace detail {
class StackedModel;
}

/// One client's local work in a round.
struct LocalJob {
  torch::Tensor indices;  ///< its training examples
  std::int64_t steps = 0;
  std::int64_t client = 0;
  int attack_index = -1;  ///< into PluginSet::attacks; -1 = honest
  torch::Tensor row;      ///< written: Δ (fedavg) or the gradient (fedsgd), after the client-level hook
  torch::Tensor start;    ///< the model it trains from (a client's own, ClientProtocol); undefined: θ
};

/// A client's first local step as an observer sees it (leakage.hpp).
struct ObservedStep {
  torch::Tensor inputs, labels;  ///< the step's batch
  /// Per-example gradients after the per-example hook [B, d]; without a per-example mechanism, the
  /// batch gradient [1, d].
  torch::Tensor rows;
  torch::Tensor upload;  ///< what the client would upload after this one step, after its client-level hook
};

class LocalTrainer {
 public:
  LocalTrainer(const RunSettings& settings, const PluginSet& plugins, const Dataset& data, const Model& model);

  /// Local SGD of `jobs` from θ, each with every hook that applies to it; returns each job's mean
  /// train loss (NaN for a client without data). With `width` > 0 the jobs (equal step counts)
  /// train as one stacked model — Θ [K, d], each client's batch padded to `width` rows that carry
  /// no loss — otherwise the single job trains on the model itself.
  std::vector<double> train(std::int64_t round, const torch::Tensor& theta, const std::vector<LocalJob>& jobs,
                            std::int64_t width = 0) const;

  /// The server's own local run on examples it holds, honestly and without privacy hooks: DiverseFL's
  /// guiding update (a client's shared sample, that client's `steps` so the norms compare) and
  /// FLTrust's root update (the root dataset, client = kServer).
  torch::Tensor server_update(std::int64_t round, const torch::Tensor& theta, const torch::Tensor& shared,
                               std::int64_t client, std::int64_t steps) const;

  /// The first step of `client`'s real local run in `round` on a batch of `batch` examples (its
  /// first `batch` in the round's shuffled order), with the privacy hooks as in training. Touches
  /// no state of the run.
  ObservedStep observe_first_step(std::int64_t round, const torch::Tensor& theta, const torch::Tensor& indices,
                                  std::int64_t client, std::int64_t batch) const;

  /// The model's client-batched form, or null when it has none.
  const detail::StackedModel* stacked_model() const { return stacked_; }

 private:
  struct Pass {
    bool server_side = false;        ///< skip attack and privacy hooks (server_update)
    std::int64_t width = 0;          ///< stacked batch width; 0: one job on the model itself
    std::int64_t batch_size = 0;     ///< 0: [clients] batch_size
    ObservedStep* observed = nullptr;  ///< stop after the first step and record it here
  };
  std::vector<double> run(std::int64_t round, const torch::Tensor& theta, const std::vector<LocalJob>& jobs,
                          const Pass& pass) const;
  /// A malicious client's step hook on its row of the step's gradient (a view, rewritten in place).
  void shape_step(std::int64_t round, std::int64_t step, const LocalJob& job, torch::Tensor gradient) const;
  /// A malicious client's data hook on its rows of the step's batch (views, rewritten in place).
  void poison_batch(std::int64_t round, const LocalJob& job, at::Generator& generator, torch::Tensor inputs,
                    torch::Tensor labels) const;

  const RunSettings& settings_;
  const PluginSet& plugins_;
  const Dataset& data_;
  const Model& model_;
  const detail::StackedModel* stacked_;
};

}  // namespace bulwark
