#pragma once

// The privacy accountant: Rényi differential privacy (RDP) of the Poisson-subsampled Gaussian
// mechanism (Mironov, Talwar & Zhang, "Rényi Differential Privacy of the Sampled Gaussian
// Mechanism", 2019), composed over steps whose sampling rate and noise may vary, and converted to
// (ε, δ). The numbers match Opacus's RDPAccountant (and, with the standard conversion, TF-Privacy's
// compute_dp_sgd_privacy); tests/core/accountant_test.cpp checks published values.
//
// Conversion: `improved` (default) is Balle et al., "Hypothesis Testing Interpretations and Rényi
// Differential Privacy", AISTATS 2020, Theorem 21 — what Opacus uses:
//   ε = min_α  RDP(α) + log((α − 1)/α) − (log δ + log α)/(α − 1)
// `standard` is Mironov, "Rényi Differential Privacy", CSF 2017, Proposition 3 — what TF-Privacy's
// compute_dp_sgd_privacy used for its published examples:
//   ε = min_α  RDP(α) + log(1/δ)/(α − 1)
// Both are valid upper bounds; the improved one is never larger.
//
// Like Opacus and TF-Privacy, the analysis assumes Poisson sampling, while the engine draws
// fixed-size client sets and shuffled fixed-size batches: the usual gap in DP-SGD practice.
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "bulwark/options.hpp"
#include "bulwark/privacy.hpp"
#include "prv_accountant.hpp"

namespace bulwark {

enum class EpsilonConversion { Improved, Standard };

/// "improved" | "standard" (the [privacy] `conversion` option); Error(Config) otherwise.
EpsilonConversion parse_conversion(const std::string& name);

/// Opacus's default orders: 1.1, 1.2, ..., 10.9 and 12, 13, ..., 63.
std::vector<double> default_rdp_orders();

/// The orders TF-Privacy's compute_dp_sgd_privacy adds beyond Opacus's: 128, 256, 512.
std::vector<double> extension_rdp_orders();

/// RDP at order α > 1 of ONE step of the Poisson-subsampled Gaussian mechanism: each record is
/// included with probability q, and the sum of the included records' contributions (L2
/// sensitivity 1) gets N(0, σ²) noise. Exact for integer α; for fractional α the series of
/// Mironov et al. §3.3 is summed until its terms fall below e^-30. q = 1 gives α/(2σ²); σ = 0
/// gives +inf; q = 0 gives 0.
double subsampled_gaussian_rdp(double q, double sigma, double alpha);

struct PrivacySpent {
  double epsilon = std::numeric_limits<double>::infinity();
  double order = std::numeric_limits<double>::quiet_NaN();  ///< the α that attains ε
  /// ε over Opacus's default orders alone when the extension orders gave a smaller one (what
  /// Opacus reports); NaN otherwise.
  double opacus_epsilon = std::numeric_limits<double>::quiet_NaN();
};

/// (ε, δ) from an RDP curve: the minimum over the orders of the chosen conversion, clamped at 0;
/// an order with RDP ≤ −log(1 − δ²) certifies ε = 0 (Canonne, Kamath & Steinke 2020). ε = +inf
/// when every order is infinite.
PrivacySpent rdp_to_epsilon(const std::vector<double>& orders, const std::vector<double>& rdp,
                            double delta, EpsilonConversion conversion);

/// Error(Config) when an extension of the default orders is asked for (`extend_option`, as the
/// user wrote it) while `orders` are listed: the extension applies to the default orders only.
void check_order_extension(bool extend_asked, const std::vector<double>& orders, const std::string& extend_option);

/// An RDP curve over a fixed order list; composition adds curves.
///
/// With the default orders the optimum can sit at the largest, 63 (much noise, few steps: the
/// Fed-CDP σ = 6 regime), and a larger order then gives a smaller ε. `extend` tracks
/// extension_rdp_orders() too and uses them exactly then, as TF-Privacy's order list does; ε is
/// otherwise the minimum over Opacus's orders, equal to Opacus's.
class RdpAccountant {
 public:
  /// Orders must all be > 1 (Error(Config) otherwise); empty means default_rdp_orders(), and only
  /// those are extended.
  explicit RdpAccountant(std::vector<double> orders = {}, bool extend = false);

  /// `steps` steps at sampling rate q with noise multiplier σ (noise std / L2 sensitivity).
  void compose(double q, double sigma, std::int64_t steps);

  PrivacySpent spent(double delta, EpsilonConversion conversion) const;
  /// A notice for `spent` (this accountant's): that the extension orders lowered ε from Opacus's
  /// value, that ε sits at 63 with 128 worse (the optimum lies between), or that ε sits at the
  /// largest tracked order and larger ones may lower it; empty when the optimum is inside the
  /// orders.
  std::string order_note(const PrivacySpent& spent) const;
  /// Replaces the composed curve (a checkpoint's; same orders).
  void restore(std::vector<double> rdp);
  /// Every tracked order, the extension ones last.
  const std::vector<double>& orders() const { return orders_; }
  const std::vector<double>& rdp() const { return rdp_; }

 private:
  std::vector<double> orders_, rdp_;
  std::size_t base_orders_;  // orders_[base_orders_..] are the extension
  // The per-step curve of the last (q, σ): a run composes the same step round after round.
  double cached_q_ = -1, cached_sigma_ = -1;
  std::vector<double> cached_step_;
};

/// Gaussian differential privacy (Dong, Roth & Su, "Gaussian Differential Privacy", JRSS-B 2022)
/// of the Poisson-subsampled Gaussian mechanism through the central limit theorem of Bu, Dong,
/// Long & Su, "Deep Learning with Gaussian Differential Privacy", HDSR 2020: T steps at rate q with
/// noise multiplier σ are approximately μ-GDP with μ = q √(T (e^{1/σ²} − 1)), and steps with other
/// (q, σ) add their terms under the root. Opacus's GaussianAccountant (poisson = True) computes
/// the same μ and ε, and refuses (q, σ) that change between steps. The CLT is an approximation
/// that can understate ε for few steps or large q (Gopi et al. 2021); RDP is the safe default.
class GdpAccountant {
 public:
  /// `steps` steps at sampling rate q with noise multiplier σ: μ² grows by T q² (e^{1/σ²} − 1).
  void compose(double q, double sigma, std::int64_t steps);
  double mu() const { return std::sqrt(mu_squared_); }
  /// ε at δ: the root of δ(ε) = Φ(−ε/μ + μ/2) − e^ε Φ(−ε/μ − μ/2) (Dong et al., Corollary 2.13);
  /// 0 when δ(0) ≤ δ already, +inf when μ is.
  double epsilon(double delta) const { return gdp_epsilon(mu(), delta); }
  /// μ² of the composed steps, for a checkpoint; restore() puts it back.
  double mu_squared() const { return mu_squared_; }
  void restore(double mu_squared) { mu_squared_ = mu_squared; }

  static double gdp_epsilon(double mu, double delta);

 private:
  double mu_squared_ = 0.0;
};

/// "rdp" | "prv" | "gdp" (the [privacy] `accountant` option and `bulwark privacy --accountant`).
enum class AccountantKind { Rdp, Prv, Gdp };
AccountantKind parse_accountant(const std::string& name);

/// ε of each protected level; NaN for a level no mechanism event has mentioned.
struct LevelEpsilon {
  double example = std::numeric_limits<double>::quiet_NaN();
  double client = std::numeric_limits<double>::quiet_NaN();
  /// The larger of the reported levels (NaN when neither is).
  double max() const;
};

/// A run's privacy ledger: one accountant per level (example, client), RDP, PRV or GDP as the
/// [privacy] `accountant` option says, fed with the privacy mechanism's AccountingEvents round
/// after round, and read with the [privacy] accounting options (delta, orders, conversion,
/// prv_eps_error).
class PrivacyLedger {
 public:
  /// Validates delta ∈ (0, 1), the orders and the conversion; Error(Config) naming the option.
  explicit PrivacyLedger(const Options& accounting);

  void add(const std::vector<AccountingEvent>& events);
  LevelEpsilon epsilon() const;
  /// RdpAccountant::order_note() of the first level that has one; empty for the other
  /// accountants.
  std::string order_note() const;
  /// ε if `events` were added too (the ledger is unchanged): max_epsilon's look-ahead.
  LevelEpsilon epsilon_after(const std::vector<AccountingEvent>& events) const;

  /// The composed RDP curves, PRV histories and GDP μ², for a checkpoint; load() restores them
  /// (Error(Data) when the checkpoint was written with other orders).
  StateDict state() const;
  void load(const StateDict& state);

 private:
  double delta_, prv_eps_error_;
  AccountantKind kind_;
  EpsilonConversion conversion_;
  RdpAccountant levels_[2];  // indexed by PrivacyLevel
  PrvAccountant prv_levels_[2];
  GdpAccountant gdp_levels_[2];
  bool used_[2] = {false, false};
};

/// The smallest noise multiplier σ (to a relative 1e-5) with epsilon_of(σ) ≤ target, by
/// bisection; epsilon_of must be non-increasing in σ. Error(Config) when no σ ≤ 1e6 reaches the
/// target or epsilon_of is NaN (the mechanism reports nothing to account).
double solve_noise_multiplier(const std::function<double(double)>& epsilon_of, double target_epsilon);

}  // namespace bulwark
