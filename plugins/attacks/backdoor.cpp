// Backdoor attacks: the poisoned model behaves normally except on the attacker's chosen inputs.
//
// (a) semantic (mode = "semantic"): every example of class `source_label` in a malicious batch is
//     relabelled `target_label` (e.g. all 4s labelled 9 — the backdoor of DiverseFL: Prakash,
//     Hashemi, Wang, Annavaram, Avestimehr, "Mitigating Byzantine Attacks in Federated
//     Learning", arXiv:2010.07541; a label-level variant of the semantic backdoors of
//     Bagdasaryan et al. 2020).
// (b) pixel pattern (mode = "trigger"): Bagdasaryan, Veit, Hua, Estrin, Shmatikov, "How To
//     Backdoor Federated Learning", AISTATS 2020: a small pattern stamped on a share of each
//     malicious batch, those examples labelled `target_label`. Here the pattern is a
//     trigger_size × trigger_size square of value `trigger_value` (the pixel maximum, 1 for the
//     idx loader's [0, 1] pixels) in one corner of every channel; flat inputs [B, F] get
//     trigger_size² consecutive features at the start (left corners) or end (right corners).
//
// Share of each batch: the first round(poison_fraction · m) of the batch's m eligible examples
// (semantic: the source-class ones; trigger: all), batch order being already random. The default
// poison_fraction = −1 picks the paper's value: 1 for semantic (every source example relabelled),
// 20/64 for trigger (Bagdasaryan et al. mix 20 backdoored images into each batch of 64).
//
// Model replacement (Bagdasaryan et al.): the attacker submits X = γ(L − G) + G, i.e. its
// update Δ = L − G scaled by γ = `boost` (γ ≈ n/η makes X replace the global model). With
// boost ≠ 1 the attack also rewrites its own rows: u_mal = γ · u (non-omniscient).
//
// Neurotoxin (Zhang, Panda, Song, Yang, Mahoney, Mittal, Ramchandran, Gonzalez, "Neurotoxin:
// Durable Backdoors in Federated Learning", ICML 2022): with keep_fraction = ρ < 1 the malicious
// gradient is projected, before every local step, onto the ρ share of coordinates that the last
// global update changed least: the attacker estimates the benign direction as Δ = θ_t − θ_{t−1},
// zeroes its gradient on the ⌈(1 − ρ)·d⌉ coordinates of largest |Δ| (torch.topk's choice among
// ties) and trains on the rest, where benign clients are unlikely to overwrite the backdoor. The
// authors' code calls ρ gradmask_ratio (0.95 for images) and estimates Δ from a gradient on the
// attacker's clean data; the paper's estimate, the global update, is used here. In the first round
// there is no global update yet and nothing is masked. State: θ_{t−1} and the mask, checkpointed.
//
// Backdoor accuracy (reported by the engine): the fraction of the backdoor test set classified as
// `target_label`, where the set is — semantic: the test inputs of class source_label; trigger: the
// test inputs whose true label is not target_label, stamped with the pattern.
#include <torch/torch.h>

#include <cmath>
#include <optional>
#include <string>

#include "bulwark/error.hpp"
#include "bulwark/plugin.hpp"

namespace {

constexpr bulwark::OptionSpec kOptions[] = {
    {"mode", bulwark::OptType::String, "\"semantic\"", 0, 0,
     "semantic: relabel source_label as target_label; trigger: stamp a pixel pattern and relabel.",
     "semantic|trigger"},
    {"source_label", bulwark::OptType::Int, "4", 0, bulwark::kInf, "semantic: the class relabelled."},
    {"target_label", bulwark::OptType::Int, "9", 0, bulwark::kInf, "The attacker's target class."},
    {"poison_fraction", bulwark::OptType::Float, "-1", -1, 1,
     "Share of each batch's eligible examples poisoned; -1: 1 for semantic, 20/64 for trigger "
     "(Bagdasaryan et al.)."},
    {"trigger_size", bulwark::OptType::Int, "3", 1, bulwark::kInf,
     "trigger: side of the square pattern in pixels (flat inputs: size^2 features)."},
    {"trigger_position", bulwark::OptType::String, "\"top_left\"", 0, 0, "trigger: corner of the pattern.",
     "top_left|top_right|bottom_left|bottom_right"},
    {"trigger_value", bulwark::OptType::Float, "1.0", -bulwark::kInf, bulwark::kInf,
     "trigger: value written into the pattern (the maximum pixel intensity)."},
    {"boost", bulwark::OptType::Float, "1.0", -bulwark::kInf, bulwark::kInf,
     "Model-replacement scale gamma: the malicious update is multiplied by it (1 = off)."},
    {"keep_fraction", bulwark::OptType::Float, "1.0", 0, 1,
     "Neurotoxin: share of coordinates the malicious gradient may use, those least changed by the "
     "last global update (0.95 in Zhang et al.'s code; 1 = off)."},
};

class Backdoor final : public bulwark::Attack {
 public:
  explicit Backdoor(const bulwark::Options& options)
      : semantic_(options.get<std::string>("mode") == "semantic"),
        source_(options.get<std::int64_t>("source_label")),
        target_(options.get<std::int64_t>("target_label")),
        size_(options.get<std::int64_t>("trigger_size")),
        position_(options.get<std::string>("trigger_position")),
        value_(options.get<double>("trigger_value")),
        boost_(options.get<double>("boost")),
        keep_(options.get<double>("keep_fraction")) {
    if (!(keep_ > 0)) {
      throw bulwark::Error(bulwark::ErrorKind::Config,
                           "backdoor: keep_fraction must be in (0, 1] (the share of coordinates Neurotoxin "
                           "trains on; 1 = off); found 0");
    }
    fraction_ = options.get<double>("poison_fraction");
    if (fraction_ < 0) {
      if (fraction_ != -1) {
        throw bulwark::Error(bulwark::ErrorKind::Config,
                             "backdoor: poison_fraction must be in [0, 1], or -1 for the paper's value; "
                             "found " + std::to_string(fraction_));
      }
      fraction_ = semantic_ ? 1.0 : 20.0 / 64.0;
    }
    if (semantic_ && source_ == target_) {
      throw bulwark::Error(bulwark::ErrorKind::Config,
                           "backdoor: source_label and target_label are both " + std::to_string(source_) +
                               "; a semantic backdoor relabels one class as another");
    }
  }

  bool poisons_data() const override { return true; }

  void poison_batch(torch::Tensor& inputs, torch::Tensor& labels, const bulwark::DataAttackContext& context) override {
    check_label(target_, context.num_classes, "target_label");
    if (semantic_) check_label(source_, context.num_classes, "source_label");
    auto eligible = semantic_ ? labels.eq(source_).nonzero().flatten()
                              : torch::arange(labels.size(0), labels.options().dtype(torch::kLong));
    const auto count = std::llround(fraction_ * static_cast<double>(eligible.size(0)));
    if (count == 0) return;
    auto chosen = eligible.narrow(0, 0, count);
    labels.index_fill_(0, chosen, target_);
    if (!semantic_) {
      auto stamped = inputs.index_select(0, chosen);
      stamp(stamped);
      inputs.index_copy_(0, chosen, stamped);
    }
  }

  bool shapes_steps() const override { return keep_ < 1.0; }

  void begin_round(std::int64_t, const torch::Tensor& params) override {
    if (keep_ == 1.0) return;
    if (previous_.defined()) {
      const auto d = params.size(0);
      const auto avoided = d - static_cast<std::int64_t>(std::floor(keep_ * static_cast<double>(d)));
      const auto largest = std::get<1>((params - previous_).abs_().topk(avoided, /*dim=*/0, /*largest=*/true,
                                                                          /*sorted=*/false));
      mask_ = torch::ones_like(params).index_fill_(0, largest, 0);
    }
    previous_ = params.clone();
  }

  void shape_step(torch::Tensor& gradient, const bulwark::StepAttackContext&) override {
    if (mask_.defined()) gradient.mul_(mask_);
  }

  void save_state(bulwark::StateDict& state) const override {
    if (previous_.defined()) state["previous"] = previous_;
    if (mask_.defined()) state["mask"] = mask_;
  }

  void load_state(const bulwark::StateDict& state) override {
    auto previous = state.find("previous");
    auto mask = state.find("mask");
    previous_ = previous == state.end() ? torch::Tensor() : previous->second.clone();
    mask_ = mask == state.end() ? torch::Tensor() : mask->second.clone();
  }

  bool poisons_updates() const override { return boost_ != 1.0; }

  void poison_updates(torch::Tensor& updates, const bulwark::UpdateAttackContext&) override {
    updates.mul_(boost_);
  }

  std::optional<bulwark::LabeledData> backdoor_test_set(const torch::Tensor& test_inputs,
                                                        const torch::Tensor& test_labels) const override {
    auto keep = semantic_ ? test_labels.eq(source_) : test_labels.ne(target_);
    auto index = keep.nonzero().flatten();
    bulwark::LabeledData set;
    set.inputs = test_inputs.index_select(0, index);
    if (!semantic_) stamp(set.inputs);
    set.labels = torch::full({index.size(0)}, target_, test_labels.options());
    return set;
  }

 private:
  static void check_label(std::int64_t label, std::int64_t classes, const char* name) {
    if (label >= classes) {
      throw bulwark::Error(bulwark::ErrorKind::Config, std::string("backdoor: ") + name + " = " +
                                                           std::to_string(label) + " is not a class of this dataset (0.." +
                                                           std::to_string(classes - 1) + ")");
    }
  }

  /// Writes the pattern into inputs [B, ...] in place.
  void stamp(torch::Tensor& inputs) const {
    const bool top = position_.rfind("top", 0) == 0;
    const bool left = position_.find("left") != std::string::npos;
    if (inputs.dim() == 2) {  // flat features: size² of them at one end
      const auto width = inputs.size(1), count = size_ * size_;
      require(count <= width, "flat inputs have " + std::to_string(width) + " features");
      inputs.narrow(1, left ? 0 : width - count, count).fill_(value_);
      return;
    }
    require(inputs.dim() >= 3, "inputs of shape " + c10::str(inputs.sizes()) + " have no image axes");
    const auto height = inputs.size(-2), width = inputs.size(-1);
    require(size_ <= height && size_ <= width,
            "images are " + std::to_string(height) + "x" + std::to_string(width));
    inputs.narrow(-2, top ? 0 : height - size_, size_).narrow(-1, left ? 0 : width - size_, size_).fill_(value_);
  }

  void require(bool ok, const std::string& found) const {
    if (!ok) {
      throw bulwark::Error(bulwark::ErrorKind::Config,
                           "backdoor: a trigger_size = " + std::to_string(size_) + " pattern does not fit: " +
                               found + "; lower trigger_size");
    }
  }

  bool semantic_;
  std::int64_t source_, target_, size_;
  std::string position_;
  double value_, boost_, keep_, fraction_;
  torch::Tensor previous_;  ///< Neurotoxin: θ of the last round
  torch::Tensor mask_;      ///< Neurotoxin: 1 on the coordinates the gradient may use
};

}  // namespace

BULWARK_PLUGIN(bulwark::Attack, Backdoor, "backdoor", "1.0.0",
               "Backdoor: semantic relabelling or pixel-pattern trigger, optional model replacement",
               "Backdoor data poisoning with optional model replacement. mode = semantic relabels "
               "every source_label example of a malicious batch as target_label (e.g. 4 -> 9, the "
               "backdoor of DiverseFL, Prakash et al., arXiv:2010.07541). mode = trigger stamps a trigger_size x "
               "trigger_size square of trigger_value in one corner of a poison_fraction share of "
               "each batch (20/64 by default) and labels those examples target_label: the "
               "pixel-pattern backdoor of Bagdasaryan, Veit, Hua, Estrin, Shmatikov, 'How To "
               "Backdoor Federated Learning', AISTATS 2020. boost = gamma scales the malicious "
               "update (their model replacement, X = gamma (L - G) + G). keep_fraction < 1 is "
               "Neurotoxin (Zhang et al., ICML 2022): before each local step the malicious gradient "
               "is zeroed on the coordinates the last global update changed most, keeping a "
               "keep_fraction share. Backdoor accuracy: the "
               "share of source-class (semantic) or stamped non-target (trigger) test inputs "
               "classified as target_label.",
               kOptions)
