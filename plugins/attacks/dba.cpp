// DBA, the distributed backdoor attack (Xie, Huang, Chen, Li, "DBA: Distributed Backdoor Attacks
// against Federated Learning", ICLR 2020):
//
//   A global pixel trigger is split into `parts` local triggers, and each malicious client plants
//   only its own part: it stamps its local trigger on a share of every batch and labels those
//   examples `target_label`. The attack is judged with the whole global trigger, which no single
//   client ever trained on.
//
// Trigger geometry (the paper's MNIST setting by default: four 1 × 4 bars, gap 2, at the top left):
// local trigger k (0 ≤ k < parts) is a horizontal bar of `bar_length` pixels of value
// `trigger_value` in every channel, at
//     row    shift + ⌊k / 2⌋ · (1 + gap)
//     column shift + (k mod 2) · (bar_length + gap) … + bar_length − 1,
// so bars fill a two-column grid row by row; the global trigger is the union of all parts.
//
// Which part a client plants: client id mod `parts` (the attack sees client ids, not the
// schedule's list of malicious clients). With `schedule = "per_round"` every part is planted over
// the rounds; with a fixed set the parts planted are those of the drawn ids mod parts, so two
// clients may share a part and another go unplanted. Batch share: the first
// round(poison_fraction · B) examples of the batch (already in random order), 20/64 by default as
// in the paper's MNIST setting. boost = γ scales the malicious update (the paper's scale factor for
// single-shot model replacement); 1 leaves it alone.
//
// Backdoor accuracy (reported by the engine): the share of test inputs whose true label is not
// target_label that the model classifies as target_label once stamped with the global trigger.
#include <torch/torch.h>

#include <cmath>
#include <optional>
#include <string>

#include "bulwark/error.hpp"
#include "bulwark/plugin.hpp"

namespace {

constexpr bulwark::OptionSpec kOptions[] = {
    {"target_label", bulwark::OptType::Int, "2", 0, bulwark::kInf, "The attacker's target class (2 in Xie et al.)."},
    {"parts", bulwark::OptType::Int, "4", 1, bulwark::kInf,
     "Number of local triggers the global trigger is split into; client c plants part c mod parts."},
    {"bar_length", bulwark::OptType::Int, "4", 1, bulwark::kInf, "Pixels in each local trigger's horizontal bar."},
    {"gap", bulwark::OptType::Int, "2", 0, bulwark::kInf, "Pixels between neighbouring bars, across and down."},
    {"shift", bulwark::OptType::Int, "0", 0, bulwark::kInf, "Row and column of the first bar's first pixel."},
    {"trigger_value", bulwark::OptType::Float, "1.0", -bulwark::kInf, bulwark::kInf,
     "Value written into the trigger pixels (the maximum pixel intensity)."},
    {"poison_fraction", bulwark::OptType::Float, "0.3125", 0, 1,
     "Share of each malicious batch stamped and relabelled (20/64 in Xie et al.)."},
    {"boost", bulwark::OptType::Float, "1.0", -bulwark::kInf, bulwark::kInf,
     "Scale gamma of the malicious update (model replacement; 1 = off)."},
};

class DistributedBackdoor final : public bulwark::Attack {
 public:
  explicit DistributedBackdoor(const bulwark::Options& options)
      : target_(options.get<std::int64_t>("target_label")),
        parts_(options.get<std::int64_t>("parts")),
        length_(options.get<std::int64_t>("bar_length")),
        gap_(options.get<std::int64_t>("gap")),
        shift_(options.get<std::int64_t>("shift")),
        value_(options.get<double>("trigger_value")),
        fraction_(options.get<double>("poison_fraction")),
        boost_(options.get<double>("boost")) {}

  bool poisons_data() const override { return true; }

  void poison_batch(torch::Tensor& inputs, torch::Tensor& labels, const bulwark::DataAttackContext& context) override {
    if (target_ >= context.num_classes) {
      throw bulwark::Error(bulwark::ErrorKind::Config, "dba: target_label = " + std::to_string(target_) +
                                                           " is not a class of this dataset (0.." +
                                                           std::to_string(context.num_classes - 1) + ")");
    }
    const auto count = std::llround(fraction_ * static_cast<double>(labels.size(0)));
    if (count == 0) return;
    auto stamped = inputs.narrow(0, 0, count);
    stamp(stamped, context.client % parts_);
    labels.narrow(0, 0, count).fill_(target_);
  }

  bool poisons_updates() const override { return boost_ != 1.0; }

  void poison_updates(torch::Tensor& updates, const bulwark::UpdateAttackContext&) override { updates.mul_(boost_); }

  std::optional<bulwark::LabeledData> backdoor_test_set(const torch::Tensor& test_inputs,
                                                        const torch::Tensor& test_labels) const override {
    auto index = test_labels.ne(target_).nonzero().flatten();
    bulwark::LabeledData set;
    set.inputs = test_inputs.index_select(0, index);
    for (std::int64_t part = 0; part < parts_; ++part) stamp(set.inputs, part);
    set.labels = torch::full({index.size(0)}, target_, test_labels.options());
    return set;
  }

 private:
  /// Writes local trigger `part` into images [B, C, H, W] (or [B, H, W]) in place.
  void stamp(torch::Tensor& images, std::int64_t part) const {
    const auto row = shift_ + (part / 2) * (1 + gap_);
    const auto column = shift_ + (part % 2) * (length_ + gap_);
    if (images.dim() < 3 || row >= images.size(-2) || column + length_ > images.size(-1)) {
      throw bulwark::Error(
          bulwark::ErrorKind::Config,
          "dba: local trigger " + std::to_string(part) + " (row " + std::to_string(row) + ", columns " +
              std::to_string(column) + ".." + std::to_string(column + length_ - 1) + ") does not fit inputs of shape " +
              c10::str(images.sizes()) + "; DBA stamps images: lower parts, bar_length, gap or shift");
    }
    images.narrow(-2, row, 1).narrow(-1, column, length_).fill_(value_);
  }

  std::int64_t target_, parts_, length_, gap_, shift_;
  double value_, fraction_, boost_;
};

}  // namespace

BULWARK_PLUGIN(bulwark::Attack, DistributedBackdoor, "dba", "1.0.0",
               "DBA: distributed backdoor, each malicious client plants one part of the trigger (Xie et al.)",
               "DBA (C. Xie, K. Huang, P.-Y. Chen, B. Li, 'DBA: Distributed Backdoor Attacks against "
               "Federated Learning', ICLR 2020): the global trigger is split into `parts` horizontal "
               "bars of bar_length pixels (gap pixels apart, two per row, from (shift, shift)); "
               "client c stamps only bar c mod parts on a poison_fraction share of each batch (20/64) "
               "and labels them target_label. boost scales the malicious update. Backdoor accuracy: "
               "non-target test inputs stamped with the whole global trigger and classified as "
               "target_label.",
               kOptions)
