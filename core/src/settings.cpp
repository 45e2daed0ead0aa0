#include "settings.hpp"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "bulwark/rng.hpp"

namespace bulwark {

std::vector<std::int64_t> Sampling::draw(std::uint64_t seed, std::int64_t round, std::int64_t clients) const {
  auto to_vector = [](const torch::Tensor& t) {
    auto c = t.to(torch::kLong).contiguous();
    return std::vector<std::int64_t>(c.data_ptr<std::int64_t>(), c.data_ptr<std::int64_t>() + c.numel());
  };
  if (kind == Kind::Poisson) {
    auto draws = torch::rand({clients}, stream_generator(seed, round, kServer, Stream::Sampling), torch::kDouble);
    return to_vector(torch::nonzero(draws < rate).flatten());
  }
  if (kind == Kind::Everyone || count == clients) {
    std::vector<std::int64_t> everyone(clients);
    std::iota(everyone.begin(), everyone.end(), 0);
    return everyone;
  }
  auto order = torch::randperm(clients, stream_generator(seed, round, kServer, Stream::Sampling), torch::kLong);
  auto chosen = to_vector(order.narrow(0, 0, count));
  std::sort(chosen.begin(), chosen.end());
  return chosen;
}

std::int64_t Sampling::expected(std::int64_t clients) const {
  switch (kind) {
    case Kind::Poisson: return std::max<std::int64_t>(1, std::llround(rate * static_cast<double>(clients)));
    case Kind::FixedCount: return count;
    case Kind::Everyone: break;
  }
  return clients;
}

double Sampling::client_rate(std::int64_t sampled, std::int64_t clients) const {
  return kind == Kind::Poisson ? rate : static_cast<double>(sampled) / static_cast<double>(clients);
}

std::int64_t LocalSchedule::batch(std::int64_t n) const {
  if (batch_fraction > 0) return std::max<std::int64_t>(1, std::llround(batch_fraction * static_cast<double>(n)));
  return std::min(batch_size, n);
}

std::int64_t LocalSchedule::steps(std::int64_t n) const {
  if (one_step) return 1;
  if (iterations > 0) return iterations;
  const auto b = batch(n);
  return epochs * ((n + b - 1) / b);
}

double LrSchedule::at(std::int64_t round, std::int64_t rounds) const {
  if (round <= warmup_rounds) {
    const double target = LrSchedule{kind, base, milestones, gamma, min}.at(warmup_rounds + 1, rounds);
    return warmup_from + (target - warmup_from) * static_cast<double>(round - 1) / static_cast<double>(warmup_rounds);
  }
  const auto r = static_cast<double>(round);
  switch (kind) {
    case Kind::Constant: break;
    case Kind::Step: {
      const auto passed = std::count_if(milestones.begin(), milestones.end(), [&](std::int64_t m) { return m <= round; });
      return base * std::pow(gamma, static_cast<double>(passed));
    }
    case Kind::InverseSqrt: return base / std::sqrt(r);
    case Kind::Exponential: return base * std::pow(gamma, r - 1);
    case Kind::Cosine: {
      const double pi = std::acos(-1.0);
      return min + (base - min) * (1 + std::cos(pi * (r - 1) / static_cast<double>(rounds))) / 2;
    }
  }
  return base;
}

// Measured (bench/batching_bench, 2 workers): softmax d = 7,850 2.5-3.7x and MLP d = 50,890
// 1.4-2.0x faster stacked, the GroupNorm CNN d = 107,722 0.7-0.9x; reported on Fashion-MNIST
// (#21), the sigmoid LeNet (d ≈ 15k) at B = 300 about 20x slower. A stacked convolution is an
// im2col and a matrix product per client, bound by arithmetic that stacking does not share.
bool ClientSettings::batches(const std::string& arch, std::int64_t parameters) const {
  constexpr std::int64_t kAutoMaxParameters = 65536;
  if (batching != Batching::Auto) return batching == Batching::On;
  return (arch == "softmax" || arch == "mlp") && parameters <= kAutoMaxParameters;
}

namespace {

LrSchedule decode_lr(const Options& section) {
  LrSchedule lr;
  const auto kind = section.get<std::string>("lr_schedule");
  lr.kind = kind == "step"          ? LrSchedule::Kind::Step
            : kind == "inv_sqrt"    ? LrSchedule::Kind::InverseSqrt
            : kind == "exponential" ? LrSchedule::Kind::Exponential
            : kind == "cosine"      ? LrSchedule::Kind::Cosine
                                    : LrSchedule::Kind::Constant;
  lr.base = section.get<double>("lr");
  for (double m : section.get<std::vector<double>>("lr_milestones")) lr.milestones.push_back(std::llround(m));
  lr.gamma = section.get<double>("lr_gamma");
  lr.min = section.get<double>("lr_min");
  lr.warmup_rounds = section.get<std::int64_t>("lr_warmup_rounds");
  lr.warmup_from = section.get<double>("lr_warmup_from");
  return lr;
}

}  // namespace

RunSettings decode_settings(const Options& experiment, const Options& clients, const Options& server) {
  RunSettings s;
  s.name = experiment.get<std::string>("name");
  s.output = experiment.get<std::string>("output");
  s.device = experiment.get<std::string>("device");
  s.seed = static_cast<std::uint64_t>(experiment.get<std::int64_t>("seed"));
  s.rounds = experiment.get<std::int64_t>("rounds");
  s.eval_every = experiment.get<std::int64_t>("eval_every");
  s.eval_batch_size = experiment.get<std::int64_t>("eval_batch_size");
  s.eval_subset = experiment.get<std::int64_t>("eval_subset");
  s.checkpoint_every = experiment.get<std::int64_t>("checkpoint_every");
  s.threads = static_cast<int>(experiment.get<std::int64_t>("threads"));
  s.mode = experiment.get<std::string>("mode") == "fedsgd" ? Mode::FedSgd : Mode::FedAvg;
  for (double round : experiment.get<std::vector<double>>("save_updates")) s.save_updates.push_back(std::llround(round));
  std::sort(s.save_updates.begin(), s.save_updates.end());

  auto& c = s.clients;
  c.count = clients.get<std::int64_t>("count");
  // The parser admits at most one of the three sampling keys.
  if (clients.get<double>("poisson_rate") > 0) {
    c.sampling = {Sampling::Kind::Poisson, 0, clients.get<double>("poisson_rate")};
  } else if (clients.get<double>("fraction") > 0) {
    const auto count = std::llround(clients.get<double>("fraction") * static_cast<double>(c.count));
    c.sampling = {Sampling::Kind::FixedCount, std::max<std::int64_t>(1, count), 0.0};
  } else if (clients.get<std::int64_t>("per_round") > 0) {
    c.sampling = {Sampling::Kind::FixedCount, clients.get<std::int64_t>("per_round"), 0.0};
  }
  c.schedule.one_step = s.mode == Mode::FedSgd;
  c.schedule.iterations = clients.get<std::int64_t>("local_iterations");
  c.schedule.epochs = clients.get<std::int64_t>("local_epochs");
  c.schedule.batch_size = clients.get<std::int64_t>("batch_size");
  c.schedule.batch_fraction = clients.get<double>("batch_fraction");
  c.lr = decode_lr(clients);
  c.momentum = clients.get<double>("momentum");
  c.weight_decay = clients.get<double>("weight_decay");
  const auto batching = clients.get<std::string>("batching");
  c.batching = batching == "on" ? ClientSettings::Batching::On
               : batching == "off" ? ClientSettings::Batching::Off
                                   : ClientSettings::Batching::Auto;
  c.batch_clients = clients.get<std::int64_t>("batch_clients");

  auto& v = s.server;
  v.optimizer = server.get<std::string>("optimizer") == "adam" ? ServerSettings::Optimizer::Adam
                                                               : ServerSettings::Optimizer::Sgd;
  v.lr = decode_lr(server);
  v.weight_decay = server.get<double>("weight_decay");
  v.momentum = server.get<double>("momentum");
  v.beta1 = server.get<double>("beta1");
  v.beta2 = server.get<double>("beta2");
  v.tau = server.get<double>("tau");
  return s;
}

}  // namespace bulwark
