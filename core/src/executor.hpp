#pragma once

// The seam between a round and where its clients train (docs/architecture.md, "Executors"). The
// engine hands over "train these clients of this round from θ, write their rows of U in client
// order"; where and how that happens is the executor's business. ThreadExecutor is the one in
// this version: worker threads on this process's device. A distributed executor (clients on other
// processes) or another device plugs in here without touching the round.
#include <cstdint>
#include <functional>
#include <vector>

#include <torch/types.h>

#include "local_trainer.hpp"
#include "partition.hpp"

namespace bulwark {

/// One round's training, as the engine hands it over.
struct RoundWork {
  std::int64_t round = 0;
  torch::Tensor theta;                     ///< θ [d], read only
  std::vector<std::int64_t> participants;  ///< client ids, ascending; row i of U is participants[i]
  std::vector<int> attack_of;              ///< per row: index into PluginSet::attacks, -1 = honest
  torch::Tensor starts;                    ///< [n, d]: row i trains from starts[i]; undefined: all from θ
};

class ClientExecutor {
 public:
  virtual ~ClientExecutor();
  /// Writes participant i's upload into updates[i] ([n, d], on θ's device) and its mean train loss
  /// into losses[i] (NaN for a client without data). Every client must get the numbers it would
  /// get training alone, whatever the executor's worker count or placement.
  virtual void train(const RoundWork& work, torch::Tensor& updates, std::vector<double>& losses) = 0;
};

/// The clients of a round on `threads` worker threads, grouped into client-batched chunks where
/// the model has a stacked form and batching is on (docs/design-notes.md, "Client-batched training").
class ThreadExecutor final : public ClientExecutor {
 public:
  ThreadExecutor(const LocalTrainer& trainer, const Partition& partition, const ClientSettings& clients,
                 int threads, bool batching);
  void train(const RoundWork& work, torch::Tensor& updates, std::vector<double>& losses) override;

  /// Trains only the round's rows `rows` (ascending), row rows[j] into out[j] and losses[j]. Stacked
  /// batch widths still come from the whole round, so a client's numbers do not depend on which
  /// of the round's rows this process trains (DistributedExecutor relies on it).
  void train_rows(const RoundWork& work, const std::vector<std::int64_t>& rows, torch::Tensor& out,
                  std::vector<double>& losses);

  /// Local steps × batch size: what a client's training costs, to balance work across processes.
  std::int64_t cost(std::int64_t client) const;

 private:
  /// Rows of the round that train together.
  struct Chunk {
    std::vector<std::int64_t> rows;
    std::int64_t width = 0;  ///< rows per client in the stacked batch; 0: one row, on the model itself
  };
  std::vector<Chunk> plan_chunks(const std::vector<std::int64_t>& participants,
                                 const std::vector<std::int64_t>& rows) const;

  const LocalTrainer& trainer_;
  const Partition& partition_;
  const ClientSettings& clients_;
  int threads_;
  bool batching_;
};

/// Runs fn(i) for i in [0, n) on `threads` workers, one intra-op thread each. Which thread runs
/// which i varies: callers make fn(i) depend on i alone. The first exception is rethrown.
void parallel_for(std::int64_t n, int threads, const std::function<void(std::int64_t)>& fn);

}  // namespace bulwark
