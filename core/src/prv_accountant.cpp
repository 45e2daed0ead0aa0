// The PRV accountant (prv_accountant.hpp). Every step mirrors Opacus's PRVAccountant
// (opacus/accountants/prv.py and analysis/prv/) so that the same inputs give the same mesh, the
// same shifts and the same ε; comments name the step of Gopi et al. each piece implements.
#include "prv_accountant.hpp"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include <fmt/format.h>

#include "accountant.hpp"
#include "bulwark/error.hpp"

namespace bulwark {

namespace {

constexpr double kInfinity = std::numeric_limits<double>::infinity();
// Beyond this many mesh points the FFTs need gigabytes; Opacus runs out of memory there too.
constexpr std::int64_t kMaxMeshPoints = std::int64_t{1} << 24;

/// The mesh [t_min, t_max] with `size` (even) points; `shift` is how far it has been moved right.
struct Domain {
  double t_min = 0, t_max = 0;
  std::int64_t size = 0;
  double shift = 0;

  double dt() const { return (t_max - t_min) / static_cast<double>(size - 1); }
  /// The points, as numpy.linspace(t_min, t_max, size) computes them.
  std::vector<double> points() const {
    std::vector<double> t(static_cast<std::size_t>(size));
    const double step = dt();
    for (std::int64_t i = 0; i < size; ++i) t[static_cast<std::size_t>(i)] = static_cast<double>(i) * step + t_min;
    t.back() = t_max;
    return t;
  }
  Domain shifted(double by) const { return {t_min + by, t_max + by, size, shift + by}; }

  /// [−L, L] widened to multiples of dt, with one more point if needed to make the size even.
  static Domain aligned(double half_width, double dt) {
    Domain d;
    d.t_min = std::floor(-half_width / dt) * dt;
    d.t_max = std::ceil(half_width / dt) * dt;
    const double points = std::round((d.t_max - d.t_min) / dt) + 1;
    if (!(points <= static_cast<double>(kMaxMeshPoints))) {
      throw Error(ErrorKind::Config,
                  fmt::format("the PRV accountant would need {:.3g} mesh points for this history (privacy-loss "
                              "domain ±{:.4g}); use accountant = \"rdp\", or a larger eps_error", points, half_width));
    }
    d.size = static_cast<std::int64_t>(points);
    if (d.size % 2 == 1) {
      d.size += 1;
      d.t_max += dt;
    }
    return d;
  }
};

/// The privacy loss random variable of one Poisson-subsampled Gaussian step, truncated to the
/// domain [t_min, t_max] and renormalised. CDF of Gopi et al., Proposition B.4: with
/// z = log((e^t + q − 1)/q), F(t) = 1 − q/2 erfc((2zσ² − 1)/(2√2σ)) − (1 − q)/2 erfc((2zσ² + 1)/(2√2σ))
/// for t > log(1 − q), and 0 below.
class TruncatedGaussianPrv {
 public:
  TruncatedGaussianPrv(double q, double sigma, double t_min, double t_max)
      : q_(q), sigma_(sigma), t_min_(t_min), t_max_(t_max), mass_(cdf(t_max) - cdf(t_min)) {}

  double truncated_cdf(double t) const {
    if (t < t_min_) return 0.0;
    if (t < t_max_) return (cdf(t) - cdf(t_min_)) / mass_;
    return 1.0;
  }

  /// E[t] of the truncated variable, integrating by parts, E[t] = [t F(t)] − ∫ F, over the
  /// pieces Opacus uses (log-spaced towards 0 from both sides, where the mass concentrates).
  double mean() const {
    const int lower_exponent = static_cast<int>(std::log10(std::abs(t_min_)));
    const int upper_exponent = static_cast<int>(std::log10(t_max_));
    std::vector<double> cuts{t_min_};
    for (int k = 0; k < 10; ++k) cuts.push_back(-std::pow(10.0, lower_exponent + (-5.0 - lower_exponent) * k / 9));
    cuts.push_back(0.0);
    for (int k = 0; k < 10; ++k) cuts.push_back(std::pow(10.0, -5.0 + (upper_exponent + 5.0) * k / 9));
    cuts.push_back(t_max_);
    double mean = 0.0;
    for (std::size_t k = 0; k + 1 < cuts.size(); ++k) {
      const double left = cuts[k], right = cuts[k + 1];
      mean += right * truncated_cdf(right) - left * truncated_cdf(left) -
              integrate([this](double t) { return truncated_cdf(t); }, left, right, 0);
    }
    return mean;
  }

 private:
  double cdf(double t) const {
    if (!(t > std::log(1 - q_))) return 0.0;
    const double z = std::log((std::exp(t) + q_ - 1) / q_);
    const double scale = 2 * M_SQRT2 * sigma_;
    return -q_ * std::erfc((2 * z * sigma_ * sigma_ - 1) / scale) / 2 -
           (1 - q_) * std::erfc((2 * z * sigma_ * sigma_ + 1) / scale) / 2 + 1.0;
  }

  /// Adaptive Gauss–Kronrod (7/15 points) to an absolute 1e-15 per piece: the shift it feeds
  /// is multiplied by the number of steps.
  template <class F>
  static double integrate(const F& f, double a, double b, int depth) {
    static constexpr double kNodes[8] = {0.991455371120812639206854697526329, 0.949107912342758524526189684047851,
                                         0.864864423359769072789712788640926, 0.741531185599394439863864773280788,
                                         0.586087235467691130294144845693013, 0.405845151377397166906606412076961,
                                         0.207784955007898467600689403773245, 0.0};
    static constexpr double kKronrod[8] = {0.022935322010529224963732008058970, 0.063092092629978553290700663189204,
                                           0.104790010322250183839876322541518, 0.140653259715525918745189590510238,
                                           0.169004726639267902826583426598550, 0.190350578064785409913256402421014,
                                           0.204432940075298892414161999234649, 0.209482141084727828012999174891714};
    static constexpr double kGauss[4] = {0.129484966168869693270611432679082, 0.279705391489276667901467771423780,
                                         0.381830050505118944950369775488975, 0.417959183673469387755102040816327};
    const double centre = 0.5 * (a + b), half = 0.5 * (b - a);
    const double f_centre = f(centre);
    double kronrod = kKronrod[7] * f_centre, gauss = kGauss[3] * f_centre;
    for (int k = 0; k < 7; ++k) {
      const double pair = f(centre - half * kNodes[k]) + f(centre + half * kNodes[k]);
      kronrod += kKronrod[k] * pair;
      if (k % 2 == 1) gauss += kGauss[k / 2] * pair;
    }
    kronrod *= half;
    gauss *= half;
    if (std::abs(kronrod - gauss) <= 1e-15 || depth >= 60) return kronrod;
    return integrate(f, a, centre, depth + 1) + integrate(f, centre, b, depth + 1);
  }

  double q_, sigma_, t_min_, t_max_, mass_;
};

/// A distribution on a mesh: pmf[i] is the probability of domain point i.
struct DiscretePrv {
  std::vector<double> pmf;
  Domain domain;
};

/// Gopi et al. §5: the probability of each mesh cell, then the domain moved so that the discrete
/// mean equals the continuous one.
DiscretePrv discretise(const PrvAccountant::Steps& run, const Domain& domain) {
  const TruncatedGaussianPrv prv(run.q, run.sigma, domain.t_min, domain.t_max);
  const auto t = domain.points();
  const double half_cell = domain.dt() / 2;
  DiscretePrv out{std::vector<double>(t.size()), domain};
  double discrete_mean = 0.0;
  for (std::size_t i = 0; i < t.size(); ++i) {
    out.pmf[i] = prv.truncated_cdf(t[i] + half_cell) - prv.truncated_cdf(t[i] - half_cell);
    discrete_mean += t[i] * out.pmf[i];
  }
  const double mean_shift = prv.mean() - discrete_mean;
  if (!(std::abs(mean_shift) < half_cell)) {
    throw Error(ErrorKind::Config, fmt::format("the PRV accountant cannot discretise q = {}, sigma = {} on its mesh "
                                               "(the discrete mean is {:.3g} off); use accountant = \"rdp\"",
                                               run.q, run.sigma, mean_shift));
  }
  out.domain = domain.shifted(mean_shift);
  return out;
}

torch::Tensor as_tensor(const std::vector<double>& values) {
  return torch::from_blob(const_cast<double*>(values.data()), {static_cast<std::int64_t>(values.size())},
                          torch::kDouble);
}

std::vector<double> as_vector(const torch::Tensor& values) {
  const auto t = values.contiguous();
  return {t.data_ptr<double>(), t.data_ptr<double>() + t.numel()};
}

/// The distribution of the sum of `count` independent copies, by FFT. The circular convolution
/// wraps the sum's offset (count − 1)·t_min around the mesh; the roll undoes it for a mesh with
/// t_min = −(size/2 − 1)·dt, which Domain::aligned builds.
DiscretePrv self_compose(const DiscretePrv& prv, std::int64_t count) {
  const auto size = prv.domain.size;
  const auto composed = as_vector(torch::fft::irfft(torch::fft::rfft(as_tensor(prv.pmf)).pow(count), size));
  std::int64_t roll = count - 1;
  if (count % 2 == 0) roll += size / 2;
  DiscretePrv out{std::vector<double>(composed.size()), prv.domain.shifted(prv.domain.shift * (count - 1))};
  for (std::int64_t i = 0; i < size; ++i) out.pmf[static_cast<std::size_t>((i + roll) % size)] = composed[i];
  return out;
}

/// The distribution of the sum of two, on the left one's mesh (the centred part of the full
/// linear convolution, as scipy.signal.convolve(mode = "same")).
DiscretePrv compose_two(const DiscretePrv& left, const DiscretePrv& right) {
  const auto size = left.domain.size;
  const auto full = torch::fft::irfft(torch::fft::rfft(as_tensor(left.pmf), 2 * size) *
                                          torch::fft::rfft(as_tensor(right.pmf), 2 * size), 2 * size);
  return {as_vector(full.slice(0, (size - 1) / 2, (size - 1) / 2 + size)), left.domain.shifted(right.domain.shift)};
}

/// ε with δ(ε) = δ from the composed PRV (Gopi et al., §4): δ(ε) = Σ_{t ≥ ε} p(t) (1 − e^{ε − t}),
/// evaluated at the mesh points, then solved exactly within the cell where it crosses δ. Beyond
/// t ≈ 709 e^t overflows and −δ(t) turns NaN there, which the bisection treats as ≥ −δ, as numpy's
/// searchsorted does: where ε itself is below that, the answer is unaffected.
double epsilon_at(const DiscretePrv& prv, double delta) {
  const auto t = prv.domain.points();
  const auto& p = prv.pmf;
  const std::size_t n = p.size();
  std::vector<double> tail(n), weighted_tail(n), delta_at(n);  // Σ_{j≥i} p_j, Σ_{j≥i} p_j e^{−t_j}
  double sum = 0, weighted = 0;
  for (std::size_t i = n; i-- > 0;) {
    sum += p[i];
    weighted += p[i] * std::exp(-t[i]);
    tail[i] = sum;
    weighted_tail[i] = weighted;
  }
  for (std::size_t i = 0; i < n; ++i) delta_at[i] = std::exp(t[i]) * weighted_tail[i] - tail[i];  // −δ(t_i)
  // The first mesh point where −δ(t) ≥ −δ (numpy.searchsorted's bisection, side = "left").
  std::size_t low = 0, high = n;
  while (low < high) {
    const std::size_t mid = low + ((high - low) >> 1);
    if (delta_at[mid] < -delta) {
      low = mid + 1;
    } else {
      high = mid;
    }
  }
  if (low == 0 || low >= n) {
    throw Error(ErrorKind::Config, fmt::format("the PRV accountant's domain does not contain epsilon at delta = {}; "
                                               "use accountant = \"rdp\"", delta));
  }
  return std::log((tail[low] - delta) / weighted_tail[low]);
}

/// ε at δ of the RDP accountant with Opacus's default orders and conversion, unclamped, as
/// Opacus's RDPAccountant.get_epsilon returns it: the PRV domain is sized from it.
double rdp_epsilon(const std::vector<PrvAccountant::Steps>& runs, double delta) {
  RdpAccountant rdp;
  for (const auto& run : runs) rdp.compose(run.q, run.sigma, run.steps);
  double best = kInfinity;
  for (std::size_t k = 0; k < rdp.orders().size(); ++k) {
    const double a = rdp.orders()[k];
    const double epsilon = rdp.rdp()[k] + std::log((a - 1) / a) - (std::log(delta) + std::log(a)) / (a - 1);
    if (epsilon < best) best = epsilon;
  }
  return best;
}

}  // namespace

void PrvAccountant::compose(double q, double sigma, std::int64_t steps) {
  if (steps <= 0) return;
  if (!(q >= 0 && q <= 1) || !(sigma >= 0)) {
    throw Error(ErrorKind::Runtime, fmt::format("privacy accounting got sampling rate q = {} and noise multiplier "
                                                "{}; expected q in [0, 1] and a noise multiplier >= 0", q, sigma));
  }
  if (q == 0) return;
  if (!history_.empty() && history_.back().q == q && history_.back().sigma == sigma) {
    history_.back().steps += steps;
  } else {
    history_.push_back({q, sigma, steps});
  }
}

double PrvAccountant::epsilon(double delta, double eps_error) const {
  return epsilon(delta, eps_error, delta / 1000);
}

double PrvAccountant::epsilon(double delta, double eps_error, double delta_error) const {
  if (history_.empty()) return 0.0;
  if (!(eps_error > 0) || !(delta_error > 0 && delta_error < delta)) {
    throw Error(ErrorKind::Config, fmt::format("PRV error parameters eps_error = {}, delta_error = {} must be > 0, "
                                               "with delta_error below delta = {}", eps_error, delta_error, delta));
  }
  for (const auto& run : history_) {
    if (run.sigma == 0) return kInfinity;
  }
  std::int64_t total_steps = 0;
  for (const auto& run : history_) total_steps += run.steps;
  const double steps = static_cast<double>(total_steps);

  // Domain (Gopi et al., Remark 5.6, as Opacus sizes it) and mesh.
  double bound = rdp_epsilon(history_, delta_error / 4);
  for (const auto& run : history_) bound = std::max(bound, rdp_epsilon({{run.q, run.sigma, 1}}, delta_error / (8 * steps)));
  const double half_width = std::max(bound, eps_error) + 3;
  const double mesh = eps_error / std::sqrt(steps * std::log(12 / delta_error) / 2);
  const Domain domain = Domain::aligned(half_width, mesh);
  if (std::numeric_limits<long double>::epsilon() * static_cast<double>(domain.size) > delta - delta_error) {
    throw Error(ErrorKind::Config, fmt::format("delta = {} is too small for the PRV accountant's {} mesh points: "
                                               "rounding would dominate; raise delta or use accountant = \"rdp\"",
                                               delta, domain.size));
  }

  std::vector<DiscretePrv> parts;
  for (const auto& run : history_) parts.push_back(self_compose(discretise(run, domain), run.steps));
  // Convolve neighbours pairwise until one is left (an odd one out waits a level).
  while (parts.size() > 1) {
    std::vector<DiscretePrv> next;
    if (parts.size() % 2 == 1) {
      next.push_back(std::move(parts.back()));
      parts.pop_back();
    }
    for (std::size_t i = 0; i + 1 < parts.size(); i += 2) next.push_back(compose_two(parts[i], parts[i + 1]));
    parts = std::move(next);
  }
  const double epsilon = epsilon_at(parts.front(), delta - delta_error) + eps_error;
  if (!std::isfinite(epsilon)) {
    throw Error(ErrorKind::Config, fmt::format("the PRV accountant lost epsilon to overflow (the RDP bound is "
                                               "{:.4g}); use accountant = \"rdp\"", bound));
  }
  return epsilon;
}

}  // namespace bulwark
