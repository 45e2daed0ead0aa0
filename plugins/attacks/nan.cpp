// Fault injection: malicious rows become NaN in every coordinate.
//
// Not an attack from a paper but the fault model of DESIGN.md §6: a NaN upload is data, not a
// crash. It must reach the aggregator (robust rules must cope: coordinate-wise median and Krum drop
// non-finite rows, FedAvg propagates them) and the engine counts such rows in the
// `nonfinite_updates` column of metrics.csv. Non-omniscient.
#include <torch/torch.h>

#include <limits>

#include "bulwark/plugin.hpp"

namespace {

class NaN final : public bulwark::Attack {
 public:
  explicit NaN(const bulwark::Options&) {}

  bool poisons_updates() const override { return true; }

  void poison_updates(torch::Tensor& updates, const bulwark::UpdateAttackContext&) override {
    updates.fill_(std::numeric_limits<double>::quiet_NaN());
  }
};

}  // namespace

BULWARK_PLUGIN(bulwark::Attack, NaN, "nan", "1.0.0",
               "Fault injection: malicious rows become NaN",
               "Fault-injection attack: every coordinate of every malicious row becomes NaN (a "
               "crashed or corrupted client). The run continues: the aggregator receives the rows "
               "and the engine counts them in metrics.csv (nonfinite_updates). Tests that a rule "
               "survives non-finite input; no options.",
               nullptr)
