// RDP of the Poisson-subsampled Gaussian mechanism (Mironov, Talwar & Zhang 2019, §3.3), in log
// space throughout: A_α = E_{z~μ0}[(μ(z)/μ0(z))^α] with μ0 = N(0, σ²), μ = (1 − q)μ0 + q N(1, σ²),
// and RDP(α) = log(A_α)/(α − 1).
#include "accountant.hpp"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>

#include <fmt/format.h>
#include <fmt/ranges.h>  // fmt::join

#include "bulwark/error.hpp"

namespace bulwark {

namespace {

constexpr double kInfinity = std::numeric_limits<double>::infinity();

/// log(e^x + e^y) without overflow.
double log_add(double x, double y) {
  const double a = std::min(x, y), b = std::max(x, y);
  if (a == -kInfinity) return b;
  return std::log1p(std::exp(a - b)) + b;
}

/// log(e^x − e^y) for x ≥ y. The series terms subtracted are always smaller than the running
/// sum; a rounding-level inversion means the difference is 0.
double log_sub(double x, double y) {
  if (y == -kInfinity) return x;
  if (x <= y) return -kInfinity;
  const double diff = std::expm1(x - y);
  if (std::isinf(diff)) return x;  // e^(x−y) overflows: e^y is negligible next to e^x
  return std::log(diff) + y;
}

/// log(erfc(x)), accurate where erfc underflows: the asymptotic series of log erfc at +∞ beyond
/// x = 25 (erfc(25) ≈ 8e-274, still a normal double).
double log_erfc(double x) {
  if (x < 25) return std::log(std::erfc(x));
  const double x2 = x * x;
  return -0.5 * std::log(M_PI) - std::log(x) - x2 - 0.5 / x2 + 0.625 / (x2 * x2) -
         37.0 / 24.0 / (x2 * x2 * x2) + 353.0 / 64.0 / (x2 * x2 * x2 * x2);
}

/// log A_α for integer α: the binomial expansion of E[((1 − q) + q e^{(2z − 1)/(2σ²)})^α].
double log_a_integer(double q, double sigma, std::int64_t alpha) {
  double log_a = -kInfinity;
  const double log_q = std::log(q), log_1mq = std::log1p(-q), a = static_cast<double>(alpha);
  for (std::int64_t k = 0; k <= alpha; ++k) {
    const double i = static_cast<double>(k);
    const double log_binom = std::lgamma(a + 1) - std::lgamma(i + 1) - std::lgamma(a - i + 1);
    log_a = log_add(log_a, log_binom + i * log_q + (a - i) * log_1mq + (i * i - i) / (2 * sigma * sigma));
  }
  return log_a;
}

/// log A_α for fractional α: the integral split at z0 where μ = μ0's mixture weights cross,
/// each half expanded in a generalised binomial series (coefficients change sign once i > α),
/// summed until both new terms are below e^-30.
double log_a_fractional(double q, double sigma, double alpha) {
  double log_a0 = -kInfinity, log_a1 = -kInfinity;
  const double z0 = sigma * sigma * std::log(1 / q - 1) + 0.5;
  const double log_q = std::log(q), log_1mq = std::log1p(-q);
  double log_coef = 0.0;  // log |binom(α, i)|
  bool positive = true;   // sign of binom(α, i)
  for (std::int64_t k = 0;; ++k) {
    const double i = static_cast<double>(k);
    if (k > 0) {
      // binom(α, i) = binom(α, i − 1) · (α − i + 1) / i
      const double factor = alpha - i + 1;
      log_coef += std::log(std::abs(factor)) - std::log(i);
      if (factor < 0) positive = !positive;
    }
    const double j = alpha - i;
    const double log_t0 = log_coef + i * log_q + j * log_1mq;
    const double log_t1 = log_coef + j * log_q + i * log_1mq;
    const double log_e0 = std::log(0.5) + log_erfc((i - z0) / (M_SQRT2 * sigma));
    const double log_e1 = std::log(0.5) + log_erfc((z0 - j) / (M_SQRT2 * sigma));
    const double log_s0 = log_t0 + (i * i - i) / (2 * sigma * sigma) + log_e0;
    const double log_s1 = log_t1 + (j * j - j) / (2 * sigma * sigma) + log_e1;
    if (positive) {
      log_a0 = log_add(log_a0, log_s0);
      log_a1 = log_add(log_a1, log_s1);
    } else {
      log_a0 = log_sub(log_a0, log_s0);
      log_a1 = log_sub(log_a1, log_s1);
    }
    if (std::max(log_s0, log_s1) < -30) break;
    if (k > 1000000) {
      throw Error(ErrorKind::Runtime, fmt::format("RDP series did not converge for q = {}, sigma = {}, "
                                                  "alpha = {}", q, sigma, alpha));
    }
  }
  return log_add(log_a0, log_a1);
}

// log Φ(x) of the standard normal CDF, also where Φ(x) underflows (x < −37): there the
// asymptotic series log φ(x) − log(−x) + log(1 − 1/x² + 3/x⁴), exact to double precision.
double log_normal_cdf(double x) {
  if (x > -37) return std::log(0.5 * std::erfc(-x / std::sqrt(2.0)));
  const double inverse_square = 1 / (x * x);
  constexpr double kLogTwoPi = 1.8378770664093454836;
  return -0.5 * x * x - 0.5 * kLogTwoPi - std::log(-x) +
         std::log1p(-inverse_square + 3 * inverse_square * inverse_square);
}

// δ(ε) of μ-GDP, in log space for the e^ε factor.
double gdp_delta(double epsilon, double mu) {
  return std::exp(log_normal_cdf(-epsilon / mu + mu / 2)) -
         std::exp(epsilon + log_normal_cdf(-epsilon / mu - mu / 2));
}

}  // namespace

EpsilonConversion parse_conversion(const std::string& name) {
  if (name == "improved") return EpsilonConversion::Improved;
  if (name == "standard") return EpsilonConversion::Standard;
  throw Error(ErrorKind::Config, "unknown RDP conversion '" + name + "'; expected improved or standard");
}

std::vector<double> default_rdp_orders() {
  std::vector<double> orders;
  for (int x = 1; x < 100; ++x) orders.push_back(1 + x / 10.0);
  for (int a = 12; a < 64; ++a) orders.push_back(a);
  return orders;
}

std::vector<double> extension_rdp_orders() { return {128, 256, 512}; }

double subsampled_gaussian_rdp(double q, double sigma, double alpha) {
  if (q == 0) return 0;
  if (sigma == 0) return kInfinity;
  if (q == 1) return alpha / (2 * sigma * sigma);
  if (std::isinf(alpha)) return kInfinity;
  const double log_a = std::floor(alpha) == alpha
                           ? log_a_integer(q, sigma, static_cast<std::int64_t>(alpha))
                           : log_a_fractional(q, sigma, alpha);
  return log_a / (alpha - 1);
}

PrivacySpent rdp_to_epsilon(const std::vector<double>& orders, const std::vector<double>& rdp, double delta,
                            EpsilonConversion conversion) {
  // An order whose RDP is at most −log(1 − δ²) certifies ε = 0 outright (Canonne, Kamath &
  // Steinke 2020, as in Google's dp_accounting): the total variation distance is then ≤ δ. The
  // threshold (≈ δ²) also absorbs rounding in the log-space series, which can leave a vanishing
  // RDP a hair below 0.
  const double zero_threshold = -std::log1p(-delta * delta);
  PrivacySpent best;
  for (std::size_t k = 0; k < orders.size(); ++k) {
    const double a = orders[k], r = rdp[k];
    if (std::isinf(r) || std::isnan(r)) continue;
    double epsilon = 0.0;
    if (r > zero_threshold) {
      epsilon = conversion == EpsilonConversion::Improved
                    ? r + std::log((a - 1) / a) - (std::log(delta) + std::log(a)) / (a - 1)
                    : r - std::log(delta) / (a - 1);
      epsilon = std::max(epsilon, 0.0);
    }
    if (epsilon < best.epsilon) best = {epsilon, a};
  }
  return best;
}

RdpAccountant::RdpAccountant(std::vector<double> orders, bool extend) : orders_(std::move(orders)) {
  const bool defaults = orders_.empty();
  if (defaults) orders_ = default_rdp_orders();
  base_orders_ = orders_.size();
  if (defaults && extend) {
    const auto more = extension_rdp_orders();
    orders_.insert(orders_.end(), more.begin(), more.end());
  }
  for (double a : orders_) {
    if (!(a > 1)) {
      throw Error(ErrorKind::Config, fmt::format("RDP order {} is not > 1; orders are the α > 1 at which "
                                                 "Rényi DP is tracked, e.g. orders = [1.5, 2, 4, 8, 16, 32, 64]", a));
    }
  }
  rdp_.assign(orders_.size(), 0.0);
}

void RdpAccountant::compose(double q, double sigma, std::int64_t steps) {
  if (steps <= 0) return;
  if (!(q >= 0 && q <= 1) || !(sigma >= 0)) {
    throw Error(ErrorKind::Runtime, fmt::format("privacy accounting got sampling rate q = {} and noise multiplier "
                                                "{}; expected q in [0, 1] and a noise multiplier >= 0", q, sigma));
  }
  if (q != cached_q_ || sigma != cached_sigma_) {
    cached_step_.resize(orders_.size());
    for (std::size_t k = 0; k < orders_.size(); ++k) cached_step_[k] = subsampled_gaussian_rdp(q, sigma, orders_[k]);
    cached_q_ = q;
    cached_sigma_ = sigma;
  }
  for (std::size_t k = 0; k < orders_.size(); ++k) rdp_[k] += cached_step_[k] * static_cast<double>(steps);
}

void RdpAccountant::restore(std::vector<double> rdp) {
  if (rdp.size() != orders_.size()) throw Error(ErrorKind::Data, "RDP curve of the wrong length");
  rdp_ = std::move(rdp);
}

PrivacySpent RdpAccountant::spent(double delta, EpsilonConversion conversion) const {
  const auto base_end = static_cast<std::ptrdiff_t>(base_orders_);
  const std::vector<double> base_orders(orders_.begin(), orders_.begin() + base_end),
      base_rdp(rdp_.begin(), rdp_.begin() + base_end);
  auto spent = rdp_to_epsilon(base_orders, base_rdp, delta, conversion);
  if (base_orders_ == orders_.size() || spent.order != base_orders.back()) return spent;
  auto extended = rdp_to_epsilon(orders_, rdp_, delta, conversion);
  if (!(extended.epsilon < spent.epsilon)) return spent;
  extended.opacus_epsilon = spent.epsilon;
  return extended;
}

std::string RdpAccountant::order_note(const PrivacySpent& spent) const {
  const bool extended = !std::isnan(spent.opacus_epsilon);
  if (!extended && base_orders_ < orders_.size() && spent.order == orders_[base_orders_ - 1]) {
    return fmt::format("epsilon is attained at RDP order {}, the last of Opacus's orders, and order {} gives more: "
                       "the optimum lies between them, where epsilon may be slightly smaller; list orders in "
                       "between with [privacy] orders (or --orders) to see",
                       spent.order, orders_[base_orders_]);
  }
  std::string note;
  if (extended) {
    note = fmt::format("epsilon {:.6g} is attained at RDP order {}: Opacus's orders end at 63, where epsilon is "
                       "{:.6g} (Opacus's value), so orders {} were added as TF-Privacy's compute_dp_sgd_privacy has "
                       "them; [privacy] extend_orders = false (or --no-extend-orders) keeps Opacus's.",
                       spent.epsilon, spent.order, spent.opacus_epsilon, fmt::join(extension_rdp_orders(), ", "));
  }
  if (spent.order == *std::max_element(orders_.begin(), orders_.end())) {
    note += fmt::format("{}epsilon is attained at the largest RDP order, {}: larger orders may give a smaller "
                        "epsilon; add them with [privacy] orders (or --orders)",
                        note.empty() ? "" : " ", spent.order);
  }
  return note;
}

void check_order_extension(bool extend_asked, const std::vector<double>& orders, const std::string& extend_option) {
  if (extend_asked && !orders.empty()) {
    throw Error(ErrorKind::Config, fmt::format("{} extends the default orders only; the orders listed are used as "
                                               "they are: drop {}, or list the larger orders too",
                                               extend_option, extend_option));
  }
}

void GdpAccountant::compose(double q, double sigma, std::int64_t steps) {
  if (steps <= 0) return;
  if (!(q >= 0 && q <= 1) || !(sigma >= 0)) {
    throw Error(ErrorKind::Runtime, fmt::format("privacy accounting got sampling rate q = {} and noise multiplier "
                                                "{}; expected q in [0, 1] and a noise multiplier >= 0", q, sigma));
  }
  if (q == 0) return;
  mu_squared_ += static_cast<double>(steps) * q * q * std::expm1(1 / (sigma * sigma));
}

double GdpAccountant::gdp_epsilon(double mu, double delta) {
  if (std::isinf(mu)) return kInfinity;
  if (!(mu > 0) || gdp_delta(0, mu) <= delta) return 0;
  // δ(ε) falls from δ(0) > δ towards 0: bracket the root, then bisect to the last bit.
  double low = 0, high = 1;
  while (gdp_delta(high, mu) > delta) {
    low = high;
    high *= 2;
    if (std::isinf(high)) return kInfinity;
  }
  for (int i = 0; i < 2000 && high - low > 4 * std::numeric_limits<double>::epsilon() * high; ++i) {
    const double mid = 0.5 * (low + high);
    (gdp_delta(mid, mu) > delta ? low : high) = mid;
  }
  return high;
}

AccountantKind parse_accountant(const std::string& name) {
  if (name == "rdp") return AccountantKind::Rdp;
  if (name == "prv") return AccountantKind::Prv;
  if (name == "gdp") return AccountantKind::Gdp;
  throw Error(ErrorKind::Config, "unknown accountant '" + name + "'; expected rdp, prv or gdp");
}

double LevelEpsilon::max() const {
  if (std::isnan(example)) return client;
  if (std::isnan(client)) return example;
  return std::max(example, client);
}

PrivacyLedger::PrivacyLedger(const Options& accounting)
    : delta_(accounting.get<double>("delta")),
      prv_eps_error_(accounting.get<double>("prv_eps_error")),
      kind_(parse_accountant(accounting.get<std::string>("accountant"))),
      conversion_(parse_conversion(accounting.get<std::string>("conversion"))),
      levels_{RdpAccountant(accounting.get<std::vector<double>>("orders"), accounting.get<bool>("extend_orders")),
              RdpAccountant(accounting.get<std::vector<double>>("orders"), accounting.get<bool>("extend_orders"))} {
  if (!(delta_ > 0 && delta_ < 1)) {
    throw Error(ErrorKind::Config, fmt::format("[privacy] delta = {} must be in (0, 1); the usual choice is "
                                               "below 1/N for N training examples, e.g. delta = 1e-5", delta_));
  }
  check_order_extension(accounting.is_set("extend_orders") && accounting.get<bool>("extend_orders"),
                        accounting.get<std::vector<double>>("orders"), "[privacy] extend_orders = true");
  if (!(prv_eps_error_ > 0)) {
    throw Error(ErrorKind::Config, fmt::format("[privacy] prv_eps_error = {} must be > 0, e.g. 0.01 (Opacus's "
                                               "default)", prv_eps_error_));
  }
}

void PrivacyLedger::add(const std::vector<AccountingEvent>& events) {
  for (const auto& event : events) {
    const auto level = static_cast<std::size_t>(event.level);
    if (level > 1) throw Error(ErrorKind::Runtime, "privacy accounting event with an unknown level");
    used_[level] = true;
    switch (kind_) {
      case AccountantKind::Rdp:
        levels_[level].compose(event.sampling_rate, event.noise_multiplier, event.steps);
        break;
      case AccountantKind::Prv:
        prv_levels_[level].compose(event.sampling_rate, event.noise_multiplier, event.steps);
        break;
      case AccountantKind::Gdp:
        gdp_levels_[level].compose(event.sampling_rate, event.noise_multiplier, event.steps);
        break;
    }
  }
}

LevelEpsilon PrivacyLedger::epsilon() const {
  auto level_epsilon = [&](std::size_t level) {
    if (!used_[level]) return std::numeric_limits<double>::quiet_NaN();
    switch (kind_) {
      case AccountantKind::Prv: return prv_levels_[level].epsilon(delta_, prv_eps_error_);
      case AccountantKind::Gdp: return gdp_levels_[level].epsilon(delta_);
      case AccountantKind::Rdp: break;
    }
    return levels_[level].spent(delta_, conversion_).epsilon;
  };
  return {level_epsilon(0), level_epsilon(1)};
}

std::string PrivacyLedger::order_note() const {
  if (kind_ != AccountantKind::Rdp) return {};
  for (std::size_t level = 0; level < 2; ++level) {
    if (!used_[level]) continue;
    auto note = levels_[level].order_note(levels_[level].spent(delta_, conversion_));
    if (!note.empty()) return note;
  }
  return {};
}

LevelEpsilon PrivacyLedger::epsilon_after(const std::vector<AccountingEvent>& events) const {
  PrivacyLedger next = *this;
  next.add(events);
  return next.epsilon();
}

namespace {

// A PRV history as rows (q, σ, steps) of a [k, 3] float64 tensor; steps are exact below 2^53.
torch::Tensor prv_history_tensor(const std::vector<PrvAccountant::Steps>& history) {
  auto rows = torch::zeros({static_cast<std::int64_t>(history.size()), 3}, torch::kDouble);
  for (std::size_t i = 0; i < history.size(); ++i) {
    const auto row = static_cast<std::int64_t>(i);
    rows[row][0] = history[i].q;
    rows[row][1] = history[i].sigma;
    rows[row][2] = static_cast<double>(history[i].steps);
  }
  return rows;
}

std::vector<PrvAccountant::Steps> prv_history(const torch::Tensor& rows) {
  const auto values = rows.to(torch::kDouble).contiguous();
  if (values.dim() != 2 || values.size(1) != 3) {
    throw Error(ErrorKind::Data, "the checkpoint's PRV history is not a [k, 3] table; run without --resume");
  }
  std::vector<PrvAccountant::Steps> history;
  for (std::int64_t i = 0; i < values.size(0); ++i) {
    history.push_back({values[i][0].item<double>(), values[i][1].item<double>(),
                       static_cast<std::int64_t>(values[i][2].item<double>())});
  }
  return history;
}

}  // namespace

StateDict PrivacyLedger::state() const {
  auto curve = [](const std::vector<double>& values) { return torch::tensor(values, torch::kDouble); };
  return {{"orders", curve(levels_[0].orders())},
          {"example", curve(levels_[0].rdp())},
          {"client", curve(levels_[1].rdp())},
          {"used", torch::tensor({used_[0] ? 1.0 : 0.0, used_[1] ? 1.0 : 0.0}, torch::kDouble)},
          {"gdp_mu_squared", curve({gdp_levels_[0].mu_squared(), gdp_levels_[1].mu_squared()})},
          {"prv_example", prv_history_tensor(prv_levels_[0].history())},
          {"prv_client", prv_history_tensor(prv_levels_[1].history())}};
}

void PrivacyLedger::load(const StateDict& state) {
  auto values = [&](const char* key) {
    auto it = state.find(key);
    if (it == state.end()) return std::vector<double>();
    auto t = it->second.to(torch::kDouble).contiguous();
    return std::vector<double>(t.data_ptr<double>(), t.data_ptr<double>() + t.numel());
  };
  const auto orders = values("orders"), example = values("example"), client = values("client"), used = values("used"),
             gdp = values("gdp_mu_squared");
  if (orders != levels_[0].orders() || example.size() != orders.size() || client.size() != orders.size() ||
      used.size() != 2 || gdp.size() != 2) {
    throw Error(ErrorKind::Data, "the checkpoint's privacy ledger does not match this run's RDP orders; "
                                 "run without --resume to start over");
  }
  levels_[0].restore(example);
  levels_[1].restore(client);
  gdp_levels_[0].restore(gdp[0]);
  gdp_levels_[1].restore(gdp[1]);
  const auto prv_example = state.find("prv_example"), prv_client = state.find("prv_client");
  if (prv_example == state.end() || prv_client == state.end()) {
    throw Error(ErrorKind::Data, "the checkpoint's privacy ledger has no PRV history (written by an older "
                                 "Bulwark); run without --resume to start over");
  }
  prv_levels_[0].restore(prv_history(prv_example->second));
  prv_levels_[1].restore(prv_history(prv_client->second));
  used_[0] = used[0] != 0;
  used_[1] = used[1] != 0;
}

double solve_noise_multiplier(const std::function<double(double)>& epsilon_of, double target_epsilon) {
  constexpr double kMaxSigma = 1e6;
  double low = 0.0, high = 1.0;
  double epsilon = epsilon_of(high);
  if (std::isnan(epsilon)) {
    throw Error(ErrorKind::Config, "target_epsilon: the privacy mechanism reports no accounting events, so "
                                   "no noise multiplier can be solved for");
  }
  while (epsilon > target_epsilon) {
    low = high;
    high *= 2;
    if (high > kMaxSigma) {
      throw Error(ErrorKind::Config,
                  fmt::format("target_epsilon = {} cannot be reached with any noise multiplier up to {:g} "
                              "(epsilon stays at {:.4g}); raise target_epsilon or delta, or add larger RDP orders",
                              target_epsilon, kMaxSigma, epsilon));
    }
    epsilon = epsilon_of(high);
  }
  // Invariant: epsilon_of(high) <= target < epsilon_of(low) (ε(0) = ∞).
  while (high - low > 1e-5 * high) {
    const double mid = 0.5 * (low + high);
    (epsilon_of(mid) <= target_epsilon ? high : low) = mid;
  }
  return high;
}

}  // namespace bulwark
