#include "schedule.hpp"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>

#include "bulwark/error.hpp"
#include "bulwark/rng.hpp"

namespace bulwark {

namespace {

std::vector<std::int64_t> to_vector(const torch::Tensor& t) {
  auto c = t.to(torch::kLong).contiguous();
  return {c.data_ptr<std::int64_t>(), c.data_ptr<std::int64_t>() + c.numel()};
}

// Stream coordinates: the permutation behind fixed sets and pools is (round 0, kServer); attack
// a's per-round draws use client = a, its markov chains client = -2 - a, so no two attacks (and
// no two purposes) share a stream.
std::int64_t per_round_stream(std::size_t a) { return static_cast<std::int64_t>(a); }
std::int64_t markov_stream(std::size_t a) { return -2 - static_cast<std::int64_t>(a); }

/// `byzantine`, or round(byzantine_fraction · population) when a fraction is given.
std::int64_t resolved_count(const ScheduleSpec& spec, std::int64_t population) {
  if (spec.fraction > 0) return std::llround(spec.fraction * static_cast<double>(population));
  return spec.count;
}

}  // namespace

ScheduleSpec ScheduleSpec::from_options(const Options& schedule, std::string label) {
  ScheduleSpec spec;
  spec.label = std::move(label);
  spec.kind = schedule.get<std::string>("schedule");
  spec.count = schedule.get<std::int64_t>("byzantine");
  spec.fraction = schedule.get<double>("byzantine_fraction");
  spec.start_round = schedule.get<std::int64_t>("start_round");
  spec.end_round = schedule.get<std::int64_t>("end_round");
  spec.markov_p = schedule.get<double>("markov_p");
  spec.markov_k = schedule.get<std::int64_t>("markov_k");
  spec.pool_class = schedule.get<std::int64_t>("pool_class");
  return spec;
}

ByzantineSchedule::ByzantineSchedule(std::vector<ScheduleSpec> attacks, std::int64_t num_clients,
                                     std::uint64_t seed, const HoldsLabel& holds)
    : attacks_(std::move(attacks)), num_clients_(num_clients), seed_(seed) {
  const auto order = to_vector(
      torch::randperm(num_clients_, stream_generator(seed_, 0, kServer, Stream::Schedule), torch::kLong));
  // Fixed sets and pools take the first clients of `order` that no earlier attack took (and that
  // hold their pool_class): disjoint, and without pool_class consecutive slices of `order`.
  std::vector<bool> taken(num_clients_, false);
  eligible_.resize(attacks_.size());
  remaining_.resize(attacks_.size());
  markov_round_.assign(attacks_.size(), 0);
  for (std::size_t a = 0; a < attacks_.size(); ++a) {
    const auto& spec = attacks_[a];
    if (spec.kind != "fixed" && spec.kind != "per_round" && spec.kind != "markov") {
      throw Error(ErrorKind::Config, spec.label + ": unknown schedule '" + spec.kind +
                                         "'; expected fixed, per_round or markov");
    }
    if (spec.end_round > 0 && spec.end_round < spec.start_round) {
      throw Error(ErrorKind::Config, spec.label + ": end_round = " + std::to_string(spec.end_round) +
                                         " comes before start_round = " + std::to_string(spec.start_round) +
                                         "; set end_round >= start_round, or 0 to attack to the end of the run");
    }
    if (spec.pool_class >= 0 && spec.kind == "per_round") {
      throw Error(ErrorKind::Config, spec.label + ": pool_class restricts the clients of a fixed set or markov pool; "
                                                  "per_round draws from each round's participants: use schedule = "
                                                  "\"fixed\" or \"markov\", or remove pool_class");
    }
    auto qualifies = [&](std::int64_t client) {
      return spec.pool_class < 0 || !holds || holds(client, spec.pool_class);
    };
    auto& eligible = eligible_[a];
    const bool all_clients = spec.kind == "markov" && spec.count == 0 && spec.fraction == 0;
    if (all_clients) {
      for (std::int64_t client = 0; client < num_clients_; ++client) {
        if (qualifies(client)) eligible.push_back(client);
      }
    } else if (spec.kind != "per_round") {
      const auto count = resolved_count(spec, num_clients_);
      for (auto client : order) {
        if (static_cast<std::int64_t>(eligible.size()) == count) break;
        if (!taken[client] && qualifies(client)) eligible.push_back(client);
      }
      if (static_cast<std::int64_t>(eligible.size()) < count) {
        const std::string among = spec.pool_class >= 0 ? " holding label " + std::to_string(spec.pool_class) : "";
        throw Error(ErrorKind::Config,
                    spec.label + ": asks for " + std::to_string(count) + " malicious clients but only " +
                        std::to_string(eligible.size()) + " of clients.count = " + std::to_string(num_clients_) +
                        among + " are left (fixed sets and markov pools of different attacks are disjoint); "
                        "lower byzantine/byzantine_fraction or raise clients.count");
      }
      for (auto client : eligible) taken[client] = true;
      std::sort(eligible.begin(), eligible.end());
    }
    if (spec.kind == "markov") {
      remaining_[a].assign(eligible.size(), 0);
      markov_round_[a] = spec.start_round - 1;
    }
  }
}

void ByzantineSchedule::advance_markov(std::size_t a, std::int64_t round) {
  const auto& spec = attacks_[a];
  auto& remaining = remaining_[a];
  if (round < markov_round_[a]) {  // asked for an earlier round: replay from the start
    std::fill(remaining.begin(), remaining.end(), 0);
    markov_round_[a] = spec.start_round - 1;
  }
  while (markov_round_[a] < round) {
    const auto t = ++markov_round_[a];
    auto draws = torch::rand({static_cast<std::int64_t>(remaining.size())},
                             stream_generator(seed_, t, markov_stream(a), Stream::Schedule), torch::kDouble);
    const auto* u = draws.data_ptr<double>();
    for (std::size_t c = 0; c < remaining.size(); ++c) {
      if (remaining[c] > 0) {
        --remaining[c];  // Mi -> Mi+1, and Mk -> B (no draw: a spell is never longer than k)
      } else if (u[c] < spec.markov_p) {
        remaining[c] = spec.markov_k;  // B -> M1: this round is the first of k
      }
    }
  }
}

std::vector<int> ByzantineSchedule::malicious(std::int64_t round,
                                              const std::vector<std::int64_t>& participants) {
  std::vector<int> owner(participants.size(), -1);
  for (std::size_t a = 0; a < attacks_.size(); ++a) {
    const auto& spec = attacks_[a];
    if (round < spec.start_round || (spec.end_round > 0 && round > spec.end_round)) continue;
    if (spec.kind == "per_round") {
      std::vector<std::size_t> free;
      for (std::size_t i = 0; i < participants.size(); ++i) {
        if (owner[i] < 0) free.push_back(i);
      }
      const auto count = std::min<std::int64_t>(
          resolved_count(spec, static_cast<std::int64_t>(participants.size())), static_cast<std::int64_t>(free.size()));
      const auto pick = to_vector(torch::randperm(static_cast<std::int64_t>(free.size()),
                                                  stream_generator(seed_, round, per_round_stream(a), Stream::Schedule),
                                                  torch::kLong));
      for (std::int64_t j = 0; j < count; ++j) owner[free[pick[j]]] = static_cast<int>(a);
      continue;
    }
    if (spec.kind == "markov") advance_markov(a, round);
    const auto& eligible = eligible_[a];
    for (std::size_t i = 0; i < participants.size(); ++i) {
      if (owner[i] >= 0) continue;
      auto at = std::lower_bound(eligible.begin(), eligible.end(), participants[i]);
      if (at == eligible.end() || *at != participants[i]) continue;
      if (spec.kind == "fixed" || remaining_[a][at - eligible.begin()] > 0) owner[i] = static_cast<int>(a);
    }
  }
  return owner;
}

}  // namespace bulwark
