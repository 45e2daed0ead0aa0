#pragma once

// Gradient-leakage studies (docs/leakage.md; docs/architecture.md, "A round": observe): at chosen
// rounds, chosen honest clients' first local step runs through the LocalTrainer, with the privacy
// hooks as in training, and a reconstruction attack (DLG, iDLG, inverting gradients, ...) is handed what an adversary at one
// of three observation points would see (Wei et al., "Gradient-Leakage Resilient Federated
// Learning", ICDCS 2021):
//
//   point 0  at the server: the victim's upload after the client-level privacy hook (its row of U);
//            in fedavg mode the upload is Δ = −lr·(g + λθ) (+ noise), which the server turns back
//            into a gradient as −Δ/lr − λθ (it knows lr, the weight decay λ and θ);
//   point 1  at the client: the client's local update as the client holds it, after its own
//            client-level hook (Fed-SDP clips and noises at the client, Algorithm 1 of the paper),
//            turned back into a gradient like point 0. With a client-level mechanism that only
//            clips at the client and noises at the server, point 1 and point 0 differ in nothing
//            but where the adversary sits;
//   point 2  at the client during training: one example's gradient, after the per-example hook
//            (Fed-CDP's clipped and noised rows; DP-SGD's clipped rows). Without a per-example
//            mechanism it exists only at batch size 1, where the batch gradient is that example's.
//
// The victim's batch is the first `batch_size` examples of its round's shuffled order (the same
// stream as its real training), so with [leakage] batch_size = [clients] batch_size the observed
// step is the client's real first step, and its upload is θ_local − θ exactly as the client would
// send it. The observation never touches θ or the run's random streams.
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>
#include <toml++/toml.h>

#include "bulwark/attack.hpp"
#include "bulwark/dataset.hpp"
#include "bulwark/model.hpp"
#include "bulwark/options.hpp"
#include "bulwark/privacy.hpp"
#include "experiment.hpp"
#include "partition.hpp"
#include "plugin_set.hpp"

namespace bulwark {

class LocalTrainer;

/// The kernel's keys of `spec`, as resolved, for config.toml (PluginSet adds the attack's options).
void add_leakage_settings(const LeakageSpec& spec, const std::string& attack_name, toml::table& section);

/// Schema of the kernel's keys of [leakage] (`point` and `rounds` also take a single integer).
const std::vector<OptionSpec>& leakage_option_specs();

/// Parses and validates `root`'s [leakage] table; nullopt when the file has none. `total_rounds`
/// bounds `rounds`. Throws Error(Config) in compiler format for a missing attack, a point other
/// than 0, 1 or 2, a round outside the run, or a bad value.
std::optional<LeakageSpec> parse_leakage(const toml::table& root, const std::string& file,
                                         std::int64_t total_rounds);

/// Mean squared error per feature of each example: [B] for inputs [B, ...].
torch::Tensor reconstruction_mse(const torch::Tensor& reconstruction, const torch::Tensor& original);

/// PSNR in dB of each example, 10·log10(peak² / MSE): [B]. `peak` is the data range.
torch::Tensor reconstruction_psnr(const torch::Tensor& reconstruction, const torch::Tensor& original,
                                  double peak);

/// SSIM of each example [B, C, H, W] (Wang, Bovik, Sheikh, Simoncelli, IEEE TIP 2004): an 11×11
/// Gaussian window with σ = 1.5 (narrowed to the largest odd size that fits a smaller image),
/// K1 = 0.01, K2 = 0.03, L = `range`, averaged over the valid window positions and the channels.
/// NaN for inputs that are not images.
torch::Tensor reconstruction_ssim(const torch::Tensor& reconstruction, const torch::Tensor& original,
                                  double range);

/// The order of a batch reconstruction that best matches the originals: entry i is the
/// reconstruction paired with original i, minimising the total MSE (exhaustive up to 8 examples,
/// greedy beyond). Batch attacks recover a set of examples, not their order.
std::vector<std::int64_t> match_reconstructions(const torch::Tensor& reconstruction, const torch::Tensor& original);

/// Metrics compare the reconstruction, clamped to the training inputs' value range, with the
/// original: MSE per feature (the reconstruction distance of Wei et al.'s tables), PSNR and SSIM
/// with that range as peak, label accuracy when labels were not granted; an attack succeeds when
/// its MSE is below `threshold`.
///
/// One leakage study over a run: validated against the experiment when the engine opens its
/// plugins, fed by the engine's round loop, written to the run's folder at the end.
class LeakageStudy {
 public:
  /// Throws Error(Config) when the study cannot observe what it asks for in this experiment: an
  /// attack without a leakage hook, point 2 at a batch size above 1 with no per-example mechanism,
  /// a victim batch size that differs from [clients] batch_size while a privacy mechanism runs
  /// (its noise is calibrated to the protocol's batch), more victims than clients, or point 0 in
  /// fedavg mode at lr = 0 (the upload is then all zeros).
  LeakageStudy(const LeakageSpec& spec, const Labelled<Attack>& attack, const RunSettings& settings,
               const Labelled<PrivacyMechanism>& privacy);
  ~LeakageStudy();

  /// Binds the run's model, data, client split and the trainer whose first step it observes;
  /// results go to `output_dir`.
  void start(const Model& model, const Dataset& data, const Partition& partition, const LocalTrainer& trainer,
             std::uint64_t seed, const std::filesystem::path& output_dir);

  bool observes(std::int64_t round) const;

  /// Picks the round's victims among `candidates` (honest participants with at least batch_size
  /// examples; the choice comes from the (seed, round) leakage stream), observes each at every
  /// point, runs the attack, and rewrites leakage.csv, leakage_attacks.csv and leakage.png.
  void observe(std::int64_t round, const torch::Tensor& theta, const std::vector<std::int64_t>& candidates);

  /// summary.json's "leakage" object: the settings and, per point, the averages over every
  /// attack of the run.
  void add_summary(nlohmann::ordered_json& json) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace bulwark
