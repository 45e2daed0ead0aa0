#include "run_accounting.hpp"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <numeric>

namespace bulwark {

RunAccounting::RunAccounting(const ExperimentConfig& config, PluginSet& plugins, const Partition& partition,
                             const Dataset& data, const Model& model)
    : config_(config),
      plugins_(plugins),
      partition_(partition),
      data_(data),
      model_(model),
      ledger_(config.privacy.accounting),
      solved_noise_multiplier_(std::nan("")) {
  const double target = config.privacy.accounting.get<double>("target_epsilon");
  if (!(target > 0)) return;
  const auto& s = config.settings;
  std::vector<std::int64_t> everyone(s.clients.count);
  std::iota(everyone.begin(), everyone.end(), 0);
  auto info = round_info(0, everyone, s.clients.sampling.expected(s.clients.count));
  auto epsilon_of = [&](double sigma) {
    auto trial = plugins.privacy_with_noise(sigma);
    PrivacyLedger projected(config.privacy.accounting);
    for (std::int64_t round = s.privacy_start_round; round <= s.rounds; ++round) {
      info.round = round;
      projected.add(call_plugin(plugins.privacy.label, "accounting", [&] { return trial->accounting(info); }));
    }
    return projected.epsilon().max();
  };
  solved_noise_multiplier_ = solve_noise_multiplier(epsilon_of, target);
  plugins.privacy.plugin = plugins.privacy_with_noise(solved_noise_multiplier_);
}

std::vector<AccountingEvent> RunAccounting::round_events(std::int64_t round,
                                                         const std::vector<std::int64_t>& participants) const {
  if (round < config_.settings.privacy_start_round) return {};
  const auto info = round_info(round, participants, static_cast<std::int64_t>(participants.size()));
  return call_plugin(plugins_.privacy.label, "accounting", [&] { return plugins_.privacy->accounting(info); });
}

double RunAccounting::epsilon_after(const std::vector<AccountingEvent>& events) const {
  return ledger_.epsilon_after(events).max();
}

double RunAccounting::max_epsilon() const { return config_.privacy.accounting.get<double>("max_epsilon"); }

bool RunAccounting::over_budget(double epsilon) const { return max_epsilon() > 0 && epsilon > max_epsilon(); }

RoundAccountingInfo RunAccounting::round_info(std::int64_t round, const std::vector<std::int64_t>& clients,
                                              std::int64_t sampled) const {
  const auto& c = config_.settings.clients;
  RoundAccountingInfo info;
  info.round = round;
  info.total_rounds = config_.settings.rounds;
  info.clients_total = c.count;
  info.clients_sampled = sampled;
  info.client_sampling_rate = c.sampling.client_rate(sampled, c.count);
  info.batch_size = c.schedule.batch_size;
  info.train_samples = data_.train_labels.size(0);
  info.layout = &model_.layout();
  std::int64_t smallest = 0, largest = 0, examples_per_step = 0;  // among clients with data
  double largest_rate = 0.0;                                       // the highest b_i / N_i
  for (auto k : clients) {
    const auto size = partition_.size(k);
    if (size == 0) continue;
    smallest = smallest == 0 ? size : std::min(smallest, size);
    largest = std::max(largest, size);
    const auto batch = c.schedule.batch(size);
    examples_per_step += batch;
    largest_rate = std::max(largest_rate, static_cast<double>(batch) / static_cast<double>(size));
  }
  info.min_client_samples = smallest;
  if (c.schedule.batch_fraction > 0 && smallest > 0) info.batch_size = c.schedule.batch(smallest);
  info.local_steps = sampled > 0 && largest > 0 ? c.schedule.steps(largest) : 0;
  if (config_.privacy.accounting.get<std::string>("example_rate") == "global") {
    // B·K_t/N as the Fed-CDP paper writes it; with batch_fraction the batches the round draws.
    const auto drawn = c.schedule.batch_fraction > 0 ? static_cast<double>(examples_per_step)
                                                     : static_cast<double>(info.batch_size * sampled);
    info.example_sampling_rate = std::min(1.0, drawn / static_cast<double>(info.train_samples));
  } else {
    info.example_sampling_rate = largest_rate;
  }
  return info;
}

}  // namespace bulwark
