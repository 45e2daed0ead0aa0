#pragma once

// The privacy loss random variable (PRV) accountant of Gopi, Lee & Wutschitz, "Numerical
// Composition of Differential Privacy", NeurIPS 2021, for the Poisson-subsampled Gaussian
// mechanism: each step's privacy loss distribution is truncated to [−L, L], discretised on a mesh,
// composed by FFT, and ε is read off the composed distribution with a certified error.
//
// The arithmetic follows Opacus's PRVAccountant step by step (its default accountant), so the two
// agree to rounding (tests/core/prv_accountant_test.cpp):
//   - error parameters: eps_error = 0.01 and delta_error = δ/1000 unless given;
//   - domain: L = max(ε_RDP, eps_error) + 3, where ε_RDP is the larger of the RDP bound of the
//     whole history at δ_error/4 and that of one step of each (q, σ) at δ_error/(8T) (Opacus's
//     reading of Gopi et al., Remark 5.6); mesh Δ = eps_error / √(T log(12/δ_error)/2);
//   - each PRV discretised by CDF differences on the mesh, shifted so its mean equals the
//     continuous mean (Gopi et al., §5), T-fold self-composed by FFT, distinct (q, σ) convolved;
//   - ε reported = the upper bound ε̂(δ − δ_error) + eps_error.
// Where Opacus's PRV accountant breaks this one refuses with Error(Config) and says to use the RDP
// accountant: a mesh of more than 2^24 points (very large ε: Opacus runs out of memory), δ too
// small for the mesh, a discretisation whose mean is off by half a cell, ε lost to overflow.
#include <cstdint>
#include <vector>

namespace bulwark {

class PrvAccountant {
 public:
  /// A run of `steps` consecutive steps at sampling rate q with noise multiplier σ.
  struct Steps {
    double q = 0, sigma = 0;
    std::int64_t steps = 0;
  };

  /// `steps` steps at rate q with noise multiplier σ; consecutive calls with the same (q, σ)
  /// extend one run, as in Opacus. q = 0 adds no privacy loss and is skipped.
  void compose(double q, double sigma, std::int64_t steps);

  /// The upper bound on ε at δ (0 for an empty history, +inf when some σ = 0).
  double epsilon(double delta, double eps_error = 0.01) const;
  double epsilon(double delta, double eps_error, double delta_error) const;

  /// The composed history, for a checkpoint; restore() puts it back.
  const std::vector<Steps>& history() const { return history_; }
  void restore(std::vector<Steps> history) { history_ = std::move(history); }

 private:
  std::vector<Steps> history_;
};

}  // namespace bulwark
