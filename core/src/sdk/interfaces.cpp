// Out-of-line destructors and default hooks: LLVM's anchor idiom. Each interface's vtable and
// typeinfo live once, in libbulwark_sdk.so, shared by the host and every plugin.
#include <torch/torch.h>

#include "bulwark/aggregator.hpp"
#include "bulwark/attack.hpp"
#include "bulwark/dataset.hpp"
#include "bulwark/error.hpp"
#include "bulwark/model.hpp"
#include "bulwark/privacy.hpp"

namespace bulwark {

Model::~Model() = default;
DatasetLoader::~DatasetLoader() = default;

Aggregator::~Aggregator() = default;
UpdateSet Aggregator::preprocess(const torch::Tensor& updates, const torch::Tensor& weights,
                                 const AggregationContext&) {
  return {updates, weights};
}
void Aggregator::save_state(StateDict&) const {}
void Aggregator::load_state(const StateDict&) {}

Attack::~Attack() = default;
void Attack::poison_batch(torch::Tensor&, torch::Tensor&, const DataAttackContext&) {}
void Attack::begin_round(std::int64_t, const torch::Tensor&) {}
void Attack::shape_step(torch::Tensor&, const StepAttackContext&) {}
void Attack::poison_updates(torch::Tensor&, const UpdateAttackContext&) {}
std::optional<LabeledData> Attack::backdoor_test_set(const torch::Tensor&,
                                                     const torch::Tensor&) const {
  return std::nullopt;
}
LeakageResult Attack::reconstruct(const LeakageProblem&) {
  throw Error(ErrorKind::Runtime, "this attack does not reconstruct inputs (reconstructs() is false)");
}
void Attack::save_state(StateDict&) const {}
void Attack::load_state(const StateDict&) {}

PrivacyMechanism::~PrivacyMechanism() = default;
torch::Tensor PrivacyMechanism::privatize_gradients(torch::Tensor& per_example_grads,
                                                    const PrivacyStepContext&) {
  return per_example_grads.mean(0);
}
torch::Tensor PrivacyMechanism::clip_factors(const torch::Tensor&, const PrivacyStepContext&) {
  throw Error(ErrorKind::Runtime, "this mechanism does not clip from layer norms (clips_by_layer_norms() is false)");
}
torch::Tensor PrivacyMechanism::privatize_clipped_sum(torch::Tensor&, const PrivacyStepContext&) {
  throw Error(ErrorKind::Runtime, "this mechanism does not clip from layer norms (clips_by_layer_norms() is false)");
}
void PrivacyMechanism::privatize_update(torch::Tensor&, const ClientUpdateContext&) {}
void PrivacyMechanism::privatize_aggregate(torch::Tensor&, const ServerPrivacyContext&) {}
std::vector<AccountingEvent> PrivacyMechanism::accounting(const RoundAccountingInfo&) const {
  return {};
}
void PrivacyMechanism::save_state(StateDict&) const {}
void PrivacyMechanism::load_state(const StateDict&) {}

}  // namespace bulwark
