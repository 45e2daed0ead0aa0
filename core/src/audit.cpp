#include "audit.hpp"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <numeric>
#include <utility>

#include <fmt/format.h>
#include <torch/torch.h>

#include "bulwark/error.hpp"
#include "bulwark/rng.hpp"
#include "outputs.hpp"

namespace bulwark {

const std::vector<OptionSpec>& audit_option_specs() {
  static const std::vector<OptionSpec> specs = {
      {"membership_examples", OptType::Int, "1000", 0, kInf,
       "Loss-threshold membership inference: this many training examples (members) against as many test "
       "examples (non-members); 0 = off.",
       nullptr},
      {"shadow_models", OptType::Int, "0", 0, kInf,
       "Offline LiRA (Carlini et al. 2022) beside the loss threshold: this many shadow runs of the experiment "
       "(their own seeds) on the test split without the non-member targets; 0 = off, else at least 2. Each costs "
       "a run.",
       nullptr},
      {"canaries", OptType::Int, "0", 0, kInf,
       "Example-level one-run audit (Steinke et al. 2023): training examples that each stay in their client's data "
       "with probability 1/2; 0 = off.",
       nullptr},
      {"canary_clients", OptType::Int, "0", 0, kInf,
       "Client-level one-run audit: clients whose examples are relabelled and that each keep them, or hold no data, "
       "with probability 1/2; at most half the clients; 0 = off.",
       nullptr},
      {"canary_labels", OptType::String, "\"random\"", 0, 0,
       "random: each canary example gets a uniformly drawn wrong label (easier to memorise, a stronger audit); "
       "true: canaries keep their labels.",
       "random|true"},
      {"guesses", OptType::List, "[]", 1, kInf,
       "k values of the auditor's guessing rule (\"in\" for the k highest scores, \"out\" for the k lowest), each at "
       "most half the canaries (and half the canary clients, when there are any); [] = 1%, 2%, 5%, 10%, 20% and 50% "
       "of them, per level. The best is reported, its confidence Bonferroni-corrected over the list.",
       nullptr},
      {"confidence", OptType::Float, "0.95", 0.5, 1, "Confidence of the audited lower bound on epsilon.", nullptr},
      {"delta", OptType::Float, "1e-5", 0, 1,
       "delta of the audited (epsilon, delta); when not written here, the [privacy] delta (or 1e-5 without one).",
       nullptr},
  };
  return specs;
}

double roc_auc(const std::vector<double>& members, const std::vector<double>& non_members) {
  if (members.empty() || non_members.empty()) return std::nan("");
  // Mann–Whitney U from ranks of the pooled scores, ties given their average rank.
  std::vector<std::pair<double, bool>> pooled;
  for (double s : members) pooled.emplace_back(s, true);
  for (double s : non_members) pooled.emplace_back(s, false);
  std::sort(pooled.begin(), pooled.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  double member_ranks = 0.0;
  for (std::size_t i = 0; i < pooled.size();) {
    std::size_t j = i;
    while (j < pooled.size() && pooled[j].first == pooled[i].first) ++j;
    const double rank = 0.5 * static_cast<double>(i + 1 + j);  // mean of ranks i+1 .. j
    for (std::size_t t = i; t < j; ++t) {
      if (pooled[t].second) member_ranks += rank;
    }
    i = j;
  }
  const double m = static_cast<double>(members.size()), n = static_cast<double>(non_members.size());
  return (member_ranks - m * (m + 1) / 2) / (m * n);
}

double tpr_at_fpr(const std::vector<double>& members, const std::vector<double>& non_members, double fpr) {
  if (members.empty() || non_members.empty()) return std::nan("");
  // Threshold t ("member" when score ≥ t) at each distinct non-member score, from the top: the
  // rule may flag at most floor(fpr · n) non-members.
  auto out = non_members;
  std::sort(out.begin(), out.end(), std::greater<>());
  const auto allowed = static_cast<std::size_t>(std::floor(fpr * static_cast<double>(out.size()) + 1e-9));
  // Flag everything strictly above the (allowed+1)-th highest non-member score.
  const double threshold = allowed < out.size() ? out[allowed] : -std::numeric_limits<double>::infinity();
  const auto flagged = std::count_if(members.begin(), members.end(), [&](double s) { return s > threshold; });
  return static_cast<double>(flagged) / static_cast<double>(members.size());
}

namespace {

double binomial_pmf(std::int64_t k, std::int64_t n, double p) {
  if (k < 0 || k > n) return 0.0;
  if (p <= 0.0) return k == 0 ? 1.0 : 0.0;
  if (p >= 1.0) return k == n ? 1.0 : 0.0;
  const double kk = static_cast<double>(k), nn = static_cast<double>(n);
  return std::exp(std::lgamma(nn + 1) - std::lgamma(kk + 1) - std::lgamma(nn - kk + 1) + kk * std::log(p) +
                  (nn - kk) * std::log1p(-p));
}

}  // namespace

double one_run_p_value(std::int64_t canaries, std::int64_t guesses, std::int64_t correct, double epsilon, double delta) {
  const double q = 1.0 / (1.0 + std::exp(-epsilon));  // accuracy of ε-DP randomised response
  double tail = 0.0;                                   // P[Binomial(r, q) ≥ v]
  for (std::int64_t k = correct; k <= guesses; ++k) tail += binomial_pmf(k, guesses, q);
  double alpha = 0.0, below = 0.0;  // below = P[v > Binomial(r, q) ≥ v − i]
  for (std::int64_t i = 1; i <= correct; ++i) {
    below += binomial_pmf(correct - i, guesses, q);
    alpha = std::max(alpha, below / static_cast<double>(i));
  }
  return std::min(1.0, tail + alpha * delta * 2.0 * static_cast<double>(canaries));
}

double one_run_epsilon(std::int64_t canaries, std::int64_t guesses, std::int64_t correct, double delta,
                       double confidence) {
  const double level = 1.0 - confidence;
  if (guesses == 0 || one_run_p_value(canaries, guesses, correct, 0.0, delta) >= level) return 0.0;
  // p-value grows with ε: bracket the crossing, then bisect (keeping p(low) < level ≤ p(high)).
  double low = 0.0, high = 1.0;
  while (one_run_p_value(canaries, guesses, correct, high, delta) < level && high < 1e3) {
    low = high;
    high *= 2.0;
  }
  for (int step = 0; step < 60; ++step) {
    const double middle = 0.5 * (low + high);
    (one_run_p_value(canaries, guesses, correct, middle, delta) < level ? low : high) = middle;
  }
  return low;
}

std::vector<CanaryGuess> guess_canaries(const std::vector<double>& scores, const std::vector<bool>& included,
                                        const std::vector<std::int64_t>& ks, double delta, double confidence) {
  const auto m = static_cast<std::int64_t>(scores.size());
  std::vector<std::int64_t> order(scores.size());
  std::iota(order.begin(), order.end(), 0);
  // Highest score first; ties by canary index so that the guesses are reproducible.
  std::stable_sort(order.begin(), order.end(), [&](std::int64_t a, std::int64_t b) { return scores[a] > scores[b]; });
  const double corrected = 1.0 - (1.0 - confidence) / static_cast<double>(std::max<std::size_t>(ks.size(), 1));
  std::vector<CanaryGuess> out;
  for (auto k : ks) {
    CanaryGuess guess;
    guess.k = k;
    guess.guesses = 2 * k;
    for (std::int64_t i = 0; i < k; ++i) {
      guess.correct += included[order[i]] ? 1 : 0;
      guess.correct += included[order[m - 1 - i]] ? 0 : 1;
    }
    guess.epsilon = one_run_epsilon(m, guess.guesses, guess.correct, delta, corrected);
    out.push_back(guess);
  }
  return out;
}

PrivacyAudit::PrivacyAudit(Options settings, std::uint64_t seed, std::string file)
    : settings_(std::move(settings)), seed_(seed), file_(std::move(file)) {}

std::int64_t PrivacyAudit::shadow_models() const { return settings_.get<std::int64_t>("shadow_models"); }

std::uint64_t PrivacyAudit::shadow_seed(std::int64_t shadow) const {
  return derive_seed(seed_, shadow, kServer, Stream::Audit) >> 1;  // an [experiment] seed: a non-negative int64
}

double PrivacyAudit::delta(double privacy_delta) const {
  return settings_.is_set("delta") || std::isnan(privacy_delta) ? settings_.get<double>("delta") : privacy_delta;
}

namespace {

[[noreturn]] void cannot(const std::string& file, const std::string& message) {
  throw Error(ErrorKind::Config, file + ": [audit] " + message);
}

/// The first `count` entries of a random order of `pool` [n], sorted (int64).
torch::Tensor draw(const torch::Tensor& pool, std::int64_t count, at::Generator& generator) {
  auto order = torch::randperm(pool.size(0), generator, torch::kLong).narrow(0, 0, count);
  return std::get<0>(pool.index_select(0, order).sort());
}

/// The k values of [audit] guesses, or the default fractions of m.
std::vector<std::int64_t> guess_sizes(const Options& settings, std::int64_t m, const std::string& file) {
  std::vector<std::int64_t> ks;
  const auto written = settings.get<std::vector<double>>("guesses");
  if (written.empty()) {
    for (double fraction : {0.01, 0.02, 0.05, 0.1, 0.2, 0.5}) {
      const auto k = std::max<std::int64_t>(1, static_cast<std::int64_t>(std::ceil(fraction * static_cast<double>(m))));
      if (k <= m / 2 && std::find(ks.begin(), ks.end(), k) == ks.end()) ks.push_back(k);
    }
    return ks;
  }
  for (double k : written) {
    if (k != std::floor(k) || k > static_cast<double>(m / 2)) {
      cannot(file, fmt::format("guesses lists {}; give whole numbers from 1 to half the canaries ({})", k, m / 2));
    }
    ks.push_back(static_cast<std::int64_t>(k));
  }
  return ks;
}

/// Coin flips with probability 1/2.
std::vector<bool> coins(std::int64_t count, at::Generator& generator) {
  const auto flips = (torch::rand({count}, generator, torch::kDouble) < 0.5).contiguous();
  return std::vector<bool>(flips.data_ptr<bool>(), flips.data_ptr<bool>() + count);
}

}  // namespace

void PrivacyAudit::prepare(Dataset& data, Partition& partition) {
  auto generator = make_generator(derive_seed(seed_, 0, kServer, Stream::Audit));
  const auto train_size = data.train_labels.size(0);
  const auto clients = partition.num_clients();
  const auto members = settings_.get<std::int64_t>("membership_examples");
  const auto canaries = settings_.get<std::int64_t>("canaries");
  const auto canary_clients = settings_.get<std::int64_t>("canary_clients");
  if ((canaries > 0 || canary_clients > 0) && partition.indices.size(0) > train_size) {
    cannot(file_, "canaries need every example held by one client, and [data.partition] scheme = \"full\" gives "
                  "every client all of them; use another scheme, or set canaries = canary_clients = 0");
  }
  if (canary_clients > clients / 2) {
    cannot(file_, fmt::format("canary_clients = {} is more than half of the {} clients; lower it", canary_clients,
                              clients));
  }
  const auto shadows = settings_.get<std::int64_t>("shadow_models");
  if (shadows == 1) cannot(file_, "shadow_models = 1 gives no spread to fit; use 0 (off) or at least 2");
  if (shadows > 0 && members == 0) {
    cannot(file_, "shadow_models needs membership targets: set membership_examples > 0");
  }
  if (shadows > 0 && members == data.test_labels.size(0)) {
    cannot(file_, "shadow_models trains on the test examples that are not targets, and membership_examples takes "
                  "them all; lower membership_examples");
  }
  for (const auto& [name, count] : {std::pair{"canaries", canaries}, std::pair{"canary_clients", canary_clients}}) {
    if (count == 1) cannot(file_, fmt::format("{} = 1 leaves nothing to guess against; use 0 (off) or at least 2", name));
    if (count > 0) guess_sizes(settings_, count, file_);  // a bad guesses list is refused before training
  }

  // Canary clients first, then example canaries and members among the other clients' examples.
  std::vector<bool> is_canary_client(clients, false);
  if (canary_clients > 0) {
    const auto chosen = draw(torch::arange(clients, torch::kLong), canary_clients, generator);
    for (std::int64_t i = 0; i < canary_clients; ++i) {
      const auto client = chosen[i].item<std::int64_t>();
      is_canary_client[client] = true;
      client_canaries_.push_back(partition.client(client).clone());
    }
    client_included_ = coins(canary_clients, generator);
  }
  std::vector<torch::Tensor> held;
  for (std::int64_t c = 0; c < clients; ++c) {
    if (!is_canary_client[c]) held.push_back(partition.client(c));
  }
  const auto pool = torch::cat(held);
  // "full": every client holds every example; members are then each example once.
  const auto candidates = partition.indices.size(0) > train_size ? torch::arange(train_size, torch::kLong) : pool;
  if (canaries + members > candidates.size(0)) {
    cannot(file_, fmt::format("canaries = {} and membership_examples = {} need {} training examples outside the canary "
                              "clients; the clients hold {}; lower them",
                              canaries, members, canaries + members, candidates.size(0)));
  }
  if (members > data.test_labels.size(0)) {
    cannot(file_, fmt::format("membership_examples = {} exceeds the {} test examples (the non-members); lower it",
                              members, data.test_labels.size(0)));
  }
  const auto shuffled = candidates.index_select(0, torch::randperm(candidates.size(0), generator, torch::kLong));
  if (canaries > 0) {
    example_canaries_ = std::get<0>(shuffled.narrow(0, 0, canaries).sort());
    example_included_ = coins(canaries, generator);
  }
  if (members > 0) {
    members_ = std::get<0>(shuffled.narrow(0, canaries, members).sort());
    non_members_ = draw(torch::arange(data.test_labels.size(0), torch::kLong), members, generator);
  }

  if (canaries == 0 && canary_clients == 0) return;

  // Canary examples get a uniformly drawn wrong label: y + 1 + U{0..C−2} mod C.
  if (settings_.get<std::string>("canary_labels") == "random") {
    std::vector<torch::Tensor> relabelled = client_canaries_;
    if (canaries > 0) relabelled.push_back(example_canaries_);
    const auto index = torch::cat(relabelled);
    const auto classes = data.num_classes;
    const auto shift = torch::randint(classes - 1, {index.size(0)}, generator, torch::kLong) + 1;
    const auto device_index = index.to(data.train_labels.device());
    const auto labels = (data.train_labels.index_select(0, device_index).to(torch::kCPU) + shift).remainder(classes);
    data.train_labels.index_copy_(0, device_index, labels.to(data.train_labels.device()));
  }

  // Left-out canaries leave the partition: an example leaves its client, a client keeps no data.
  auto kept = torch::ones({train_size}, torch::kBool);
  for (std::int64_t i = 0; i < canaries; ++i) {
    if (!example_included_[i]) kept.data_ptr<bool>()[example_canaries_.data_ptr<std::int64_t>()[i]] = false;
  }
  std::vector<torch::Tensor> shares;
  std::vector<std::int64_t> offsets{0};
  std::size_t canary_client = 0;
  for (std::int64_t c = 0; c < clients; ++c) {
    auto share = partition.client(c);
    if (is_canary_client[c]) {
      if (!client_included_[canary_client++]) share = share.narrow(0, 0, 0);
    } else if (canaries > 0) {
      share = share.masked_select(kept.index_select(0, share));
    }
    shares.push_back(share);
    offsets.push_back(offsets.back() + share.size(0));
  }
  partition.indices = torch::cat(shares);
  partition.offsets = std::move(offsets);
}

namespace {

/// A per-row statistic [rows] of the logits [rows, C] and labels, in double.
using RowStatistic = torch::Tensor (*)(const torch::Tensor& logits, const torch::Tensor& labels);

torch::Tensor cross_entropy(const torch::Tensor& logits, const torch::Tensor& labels) {
  return torch::cross_entropy_loss(logits.to(torch::kDouble), labels, {}, at::Reduction::None);
}

// φ = log p_y − log(1 − p_y) = z_y − logsumexp_{j≠y} z_j, stable where p_y is near 1.
torch::Tensor scaled_confidence(const torch::Tensor& logits, const torch::Tensor& labels) {
  auto z = logits.to(torch::kDouble);
  const auto own = z.gather(1, labels.unsqueeze(1)).squeeze(1);
  const auto others = z.scatter(1, labels.unsqueeze(1), -std::numeric_limits<double>::infinity()).logsumexp(1);
  return own - others;
}

/// `statistic` of the model at θ on the rows `index` of (inputs, labels), in chunks.
std::vector<double> per_example(const Model& model, const torch::Tensor& theta, const torch::Tensor& inputs,
                                const torch::Tensor& labels, const torch::Tensor& index, RowStatistic statistic) {
  torch::NoGradGuard no_grad;
  std::vector<double> out;
  constexpr std::int64_t kChunk = 1000;
  const auto device_index = index.to(inputs.device());
  for (std::int64_t start = 0; start < index.size(0); start += kChunk) {
    const auto rows = device_index.narrow(0, start, std::min(kChunk, index.size(0) - start));
    const auto values = statistic(model.forward(theta, inputs.index_select(0, rows)), labels.index_select(0, rows))
                            .to(torch::kCPU)
                            .contiguous();
    out.insert(out.end(), values.data_ptr<double>(), values.data_ptr<double>() + values.numel());
  }
  return out;
}

std::vector<double> losses(const Model& model, const torch::Tensor& theta, const torch::Tensor& inputs,
                           const torch::Tensor& labels, const torch::Tensor& index) {
  return per_example(model, theta, inputs, labels, index, cross_entropy);
}

/// φ of the members (training split), then of the non-members (test split).
std::vector<double> target_confidences(const Model& model, const torch::Tensor& theta, const Dataset& data,
                                       const torch::Tensor& members, const torch::Tensor& non_members) {
  auto out = per_example(model, theta, data.train_inputs, data.train_labels, members, scaled_confidence);
  const auto outside = per_example(model, theta, data.test_inputs, data.test_labels, non_members, scaled_confidence);
  out.insert(out.end(), outside.begin(), outside.end());
  return out;
}

std::vector<double> negated(std::vector<double> values) {
  for (auto& v : values) v = -v;
  return values;
}

}  // namespace

void PrivacyAudit::use_shadow_data(const Dataset& audited, Dataset& shadow) const {
  auto kept = torch::ones({audited.test_labels.size(0)}, torch::kBool);
  kept.index_fill_(0, non_members_, false);
  const auto rows = kept.nonzero().squeeze(1).to(audited.test_labels.device());
  shadow = audited;
  shadow.train_inputs = audited.test_inputs.index_select(0, rows);
  shadow.train_labels = audited.test_labels.index_select(0, rows);
  shadow.description += fmt::format(" (audit shadow: trains on the {} test examples that are not targets)", rows.size(0));
}

void PrivacyAudit::record_shadow(const Model& model, const torch::Tensor& theta, const Dataset& data) {
  shadow_confidences_.push_back(target_confidences(model, theta, data, members_, non_members_));
}

namespace {

struct CanaryResult {
  double auc;
  CanaryGuess best;
  std::int64_t canaries, included;
};

CanaryResult audit_canaries(const std::vector<double>& scores, const std::vector<bool>& included,
                            const Options& settings, double delta, const std::string& file) {
  std::vector<double> in, out;
  for (std::size_t i = 0; i < scores.size(); ++i) (included[i] ? in : out).push_back(scores[i]);
  const auto m = static_cast<std::int64_t>(scores.size());
  const auto guesses = guess_canaries(scores, included, guess_sizes(settings, m, file), delta,
                                      settings.get<double>("confidence"));
  CanaryResult result{roc_auc(in, out), {}, m, static_cast<std::int64_t>(in.size())};
  for (const auto& g : guesses) {
    if (result.best.guesses == 0 || g.epsilon > result.best.epsilon) result.best = g;
  }
  return result;
}

}  // namespace

nlohmann::ordered_json PrivacyAudit::finish(const Model& model, const torch::Tensor& theta, const Dataset& data,
                                            const LevelEpsilon& accountant, double delta,
                                            const std::filesystem::path& out) const {
  nlohmann::ordered_json json;
  const double confidence = settings_.get<double>("confidence");
  std::string csv =
      "analysis,level,examples,auc,tpr_at_fpr_0.001,tpr_at_fpr_0.01,k,guesses,correct,epsilon_lower_bound,"
      "confidence,delta,accountant_epsilon\n";
  auto number = [](double v) { return format_csv_number(v); };
  auto json_number = [](double v) { return std::isfinite(v) ? nlohmann::ordered_json(v) : nlohmann::ordered_json(); };

  auto membership = [&](const char* analysis, const char* key, const std::vector<double>& in,
                        const std::vector<double>& outside) {
    const double auc = roc_auc(in, outside), low = tpr_at_fpr(in, outside, 0.001), high = tpr_at_fpr(in, outside, 0.01);
    csv += fmt::format("{},example,{},{},{},{},,,,,,,{}\n", analysis, in.size() + outside.size(), number(auc),
                       number(low), number(high), number(accountant.example));
    json[key] = {{"members", in.size()},
                 {"non_members", outside.size()},
                 {"auc", json_number(auc)},
                 {"tpr_at_fpr_0.001", json_number(low)},
                 {"tpr_at_fpr_0.01", json_number(high)}};
  };
  if (members_.defined()) {
    membership("membership_loss", "membership",
               negated(losses(model, theta, data.train_inputs, data.train_labels, members_)),
               negated(losses(model, theta, data.test_inputs, data.test_labels, non_members_)));
  }
  if (shadow_confidences_.size() >= 2) {
    // (φ(x) − μ_out(x)) / σ, σ pooled over the targets' deviations from their own shadow means.
    const auto observed = target_confidences(model, theta, data, members_, non_members_);
    const auto targets = observed.size();
    const auto shadows = static_cast<double>(shadow_confidences_.size());
    std::vector<double> means(targets, 0.0);
    for (const auto& shadow : shadow_confidences_) {
      for (std::size_t x = 0; x < targets; ++x) means[x] += shadow[x] / shadows;
    }
    double squares = 0.0;
    for (const auto& shadow : shadow_confidences_) {
      for (std::size_t x = 0; x < targets; ++x) squares += (shadow[x] - means[x]) * (shadow[x] - means[x]);
    }
    const double sigma = std::sqrt(squares / (static_cast<double>(targets) * (shadows - 1)));
    std::vector<double> scores(targets);
    for (std::size_t x = 0; x < targets; ++x) scores[x] = (observed[x] - means[x]) / sigma;
    const auto members = static_cast<std::ptrdiff_t>(members_.size(0));
    membership("membership_lira", "membership_lira", {scores.begin(), scores.begin() + members},
               {scores.begin() + members, scores.end()});
    json["membership_lira"]["shadow_models"] = shadow_confidences_.size();
  }
  auto report = [&](const char* level, const std::vector<double>& scores, const std::vector<bool>& included,
                    double epsilon) {
    const auto result = audit_canaries(scores, included, settings_, delta, file_);
    csv += fmt::format("canaries_{},{},{},{},,,{},{},{},{},{},{},{}\n", level, level, result.canaries, number(result.auc),
                       result.best.k, result.best.guesses, result.best.correct, number(result.best.epsilon),
                       number(confidence), number(delta), number(epsilon));
    json[std::string("canaries_") + level] = {{"canaries", result.canaries},
                                             {"included", result.included},
                                             {"auc", json_number(result.auc)},
                                             {"k", result.best.k},
                                             {"guesses", result.best.guesses},
                                             {"correct", result.best.correct},
                                             {"epsilon_lower_bound", result.best.epsilon},
                                             {"confidence", confidence},
                                             {"delta", delta},
                                             {"accountant_epsilon", json_number(epsilon)}};
  };
  if (example_canaries_.defined()) {
    report("example", negated(losses(model, theta, data.train_inputs, data.train_labels, example_canaries_)),
           example_included_, accountant.example);
  }
  if (!client_canaries_.empty()) {
    std::vector<double> scores;
    for (const auto& examples : client_canaries_) {
      const auto values = losses(model, theta, data.train_inputs, data.train_labels, examples);
      scores.push_back(values.empty() ? 0.0
                                      : -std::accumulate(values.begin(), values.end(), 0.0) /
                                            static_cast<double>(values.size()));
    }
    report("client", scores, client_included_, accountant.client);
  }
  write_file_atomic(out / "audit.csv", csv);
  return json;
}

}  // namespace bulwark
