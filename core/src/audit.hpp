#pragma once

// Empirical privacy of the trained model, measured inside the experiment by its [audit] section
// (docs/privacy.md), next to the accountant's ε:
//
//   membership inference  the loss-threshold attack (Yeom, Giacomelli, Fredrikson, Jha, CSF 2018):
//                         score −ℓ(x, y) of `membership_examples` training examples (members)
//                         against as many test examples (non-members); AUC and the true-positive
//                         rate at false-positive rates 0.1 % and 1 % (Carlini et al., S&P 2022).
//                         With `shadow_models` S ≥ 2, also offline LiRA (Carlini, Chien, Nasr,
//                         Song, Terzis, Tramèr, "Membership Inference Attacks From First
//                         Principles", S&P 2022, §VI-C): the engine trains S shadow runs of the same
//                         experiment (their own seeds) on the test split without the non-member
//                         targets, so every target is "out" for every shadow; each target's
//                         logit-scaled confidence φ = log p_y − log(1 − p_y) gets a Gaussian
//                         N(μ_out(x), σ²) over the shadows (σ pooled over targets: the paper's
//                         fixed variance, for few shadows), and its score is (φ(x) − μ_out(x))/σ.
//   one-run auditing      Steinke, Nasr, Jagielski, "Privacy Auditing with One (1) Training Run",
//                         NeurIPS 2023: m canaries, each kept in training with probability 1/2 by
//                         the audit's own stream; after the run the auditor guesses "in" for the k
//                         highest scores and "out" for the k lowest, and the number of correct
//                         guesses bounds ε from below at the stated confidence.
//                         Example-level canaries are training examples (by default relabelled at
//                         random) that stay in their client's data or leave it; client-level
//                         canaries are whole clients whose examples are relabelled, and which hold
//                         them or no data at all (the zero-out neighbour, Kairouz et al. 2021).
//
// Every draw comes from the (seed, Audit) stream, before training and identically on every rank.
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/types.h>

#include "accountant.hpp"
#include "bulwark/dataset.hpp"
#include "bulwark/model.hpp"
#include "bulwark/options.hpp"
#include "partition.hpp"

namespace bulwark {

/// Schema of the [audit] section.
const std::vector<OptionSpec>& audit_option_specs();

/// Area under the ROC curve of `members`' scores against `non_members`' (higher = member): the
/// probability that a random member outscores a random non-member, ties counting one half.
double roc_auc(const std::vector<double>& members, const std::vector<double>& non_members);

/// The highest true-positive rate among thresholds whose false-positive rate is at most `fpr`.
double tpr_at_fpr(const std::vector<double>& members, const std::vector<double>& non_members, double fpr);

/// Steinke et al. 2023, Algorithm 3 (p-value for (ε, δ)-DP): an upper bound on the probability of
/// `correct` or more right guesses out of `guesses` among `canaries` under (ε, δ)-DP,
/// P[Binomial(r, e^ε/(1+e^ε)) ≥ v] + 2mδ · max_{1≤i≤v} P[v > Binomial(r, e^ε/(1+e^ε)) ≥ v − i] / i.
double one_run_p_value(std::int64_t canaries, std::int64_t guesses, std::int64_t correct, double epsilon, double delta);

/// The largest ε whose p-value is below 1 − `confidence` (the audit's lower bound: with that
/// confidence the run is not (ε, δ)-DP); 0 when no ε > 0 is rejected.
double one_run_epsilon(std::int64_t canaries, std::int64_t guesses, std::int64_t correct, double delta,
                       double confidence);

/// One guessing rule: "in" for the k highest scores, "out" for the k lowest.
struct CanaryGuess {
  std::int64_t k = 0, guesses = 0, correct = 0;
  double epsilon = 0.0;  ///< one_run_epsilon at the Bonferroni-corrected confidence
};

/// Each k of `ks` (at most half the canaries) scored against who was `included`, its bound at
/// confidence 1 − (1 − `confidence`)/|ks|, so that the best of them holds at `confidence`.
std::vector<CanaryGuess> guess_canaries(const std::vector<double>& scores, const std::vector<bool>& included,
                                        const std::vector<std::int64_t>& ks, double delta, double confidence);

/// The [audit] section of a run: set up before training, measured after it.
class PrivacyAudit {
 public:
  PrivacyAudit(Options settings, std::uint64_t seed, std::string file);

  /// Draws the membership targets and the canaries, relabels the canaries and takes the left-out
  /// ones out of `partition`. Throws Error(Config) when the data cannot hold what is asked.
  void prepare(Dataset& data, Partition& partition);

  /// Scores everything on the final model at θ, writes <out>/audit.csv and returns what
  /// summary.json records under "audit". `accountant` is the run's ε per level (NaN without one)
  /// and `delta` the accountant's δ (with no [privacy], the [audit] delta).
  nlohmann::ordered_json finish(const Model& model, const torch::Tensor& theta, const Dataset& data,
                                const LevelEpsilon& accountant, double delta, const std::filesystem::path& out) const;

  /// The δ of the bounds: [audit] delta when written, else `privacy_delta` when there is one.
  double delta(double privacy_delta) const;

  /// Offline LiRA's shadow runs: how many, shadow s's seed (1-based), and its data: the audited
  /// run's, with the training split replaced by the test split without the non-member targets.
  std::int64_t shadow_models() const;
  std::uint64_t shadow_seed(std::int64_t shadow) const;
  void use_shadow_data(const Dataset& audited, Dataset& shadow) const;

  /// Records a finished shadow's φ of every target; `data` is the audited run's (the targets').
  void record_shadow(const Model& model, const torch::Tensor& theta, const Dataset& data);

 private:
  Options settings_;
  std::uint64_t seed_;
  std::string file_;
  torch::Tensor members_, non_members_;     // train / test indices
  std::vector<std::vector<double>> shadow_confidences_;  // per shadow: φ of members, then non-members
  torch::Tensor example_canaries_;          // train indices
  std::vector<bool> example_included_;
  std::vector<torch::Tensor> client_canaries_;  // each canary client's train indices
  std::vector<bool> client_included_;
};

}  // namespace bulwark
