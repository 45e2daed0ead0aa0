// Label flipping: a malicious client trains on its own inputs with wrong labels.
//
//   default:  y -> C − 1 − y                      (the "9 − y" of MNIST-family robustness studies,
//                                                  e.g. Fang et al., USENIX Security 2020)
//   mapping:  y -> target[i] when y = source[i],  other labels unchanged (Tolpegin, Truex, Gursoy,
//             Liu, "Data Poisoning Attacks Against Federated Learning Systems", ESORICS 2020,
//             source -> target class flips)
//
// Inputs are never touched. The engine calls the hook only on the batches of clients the schedule
// made malicious in that round.
#include <torch/torch.h>

#include <cmath>
#include <string>
#include <vector>

#include "bulwark/error.hpp"
#include "bulwark/plugin.hpp"

namespace {

constexpr bulwark::OptionSpec kOptions[] = {
    {"source", bulwark::OptType::List, "[]", 0, bulwark::kInf,
     "Labels to flip (with `target`); empty: flip every label y to C - 1 - y."},
    {"target", bulwark::OptType::List, "[]", 0, bulwark::kInf,
     "New label of each `source` label, same length as `source`."},
};

std::vector<std::int64_t> whole_labels(const std::vector<double>& values, const char* name) {
  std::vector<std::int64_t> labels;
  for (double v : values) {
    if (v != std::floor(v)) {
      throw bulwark::Error(bulwark::ErrorKind::Config, std::string("label_flip: `") + name +
                                                           "` must list whole class labels; found " +
                                                           std::to_string(v));
    }
    labels.push_back(static_cast<std::int64_t>(v));
  }
  return labels;
}

class LabelFlip final : public bulwark::Attack {
 public:
  explicit LabelFlip(const bulwark::Options& options)
      : source_(whole_labels(options.get<std::vector<double>>("source"), "source")),
        target_(whole_labels(options.get<std::vector<double>>("target"), "target")) {
    if (source_.size() != target_.size()) {
      throw bulwark::Error(bulwark::ErrorKind::Config,
                           "label_flip: `source` and `target` must have the same length (one target "
                           "per source label); found " + std::to_string(source_.size()) + " and " +
                               std::to_string(target_.size()));
    }
  }

  bool poisons_data() const override { return true; }

  void poison_batch(torch::Tensor&, torch::Tensor& labels, const bulwark::DataAttackContext& context) override {
    const auto classes = context.num_classes;
    if (source_.empty()) {
      labels = (classes - 1) - labels;
      return;
    }
    for (auto label : source_) check_class(label, classes, "source");
    for (auto label : target_) check_class(label, classes, "target");
    // A lookup table applied in one gather: every source label is read before any is written,
    // so mappings such as 1 -> 7, 7 -> 1 swap instead of chaining.
    auto table = torch::arange(classes, torch::kLong);
    for (std::size_t i = 0; i < source_.size(); ++i) table[source_[i]] = target_[i];
    table = table.to(labels.device());  // built on the host, where element writes are cheap
    labels = table.index_select(0, labels.to(torch::kLong).flatten()).view(labels.sizes()).to(labels.scalar_type());
  }

 private:
  static void check_class(std::int64_t label, std::int64_t classes, const char* name) {
    if (label < 0 || label >= classes) {
      throw bulwark::Error(bulwark::ErrorKind::Config,
                           std::string("label_flip: `") + name + "` label " + std::to_string(label) +
                               " is not a class of this dataset (0.." + std::to_string(classes - 1) + ")");
    }
  }

  std::vector<std::int64_t> source_, target_;
};

}  // namespace

BULWARK_PLUGIN(bulwark::Attack, LabelFlip, "label_flip", "1.0.0",
               "Label flipping: y -> C-1-y, or a source -> target mapping",
               "Label-flipping data poisoning: a malicious client trains on its own inputs with every "
               "label y replaced by C - 1 - y (the '9 - y' flip of the MNIST-family robustness "
               "studies, e.g. Fang et al., USENIX Security 2020), or with the listed source labels "
               "mapped to the target labels and the others kept (Tolpegin, Truex, Gursoy, Liu, 'Data "
               "Poisoning Attacks Against Federated Learning Systems', ESORICS 2020). Inputs are "
               "unchanged.",
               kOptions)
