#include "server_optimizer.hpp"

#include <torch/torch.h>

namespace bulwark {

void ServerOptimizer::step(torch::Tensor& theta, const torch::Tensor& aggregate, std::int64_t round,
                           std::int64_t rounds) {
  torch::NoGradGuard no_grad;
  const auto& s = settings_;
  const double lr = s.lr.at(round, rounds);
  auto direction = (mode_ == Mode::FedSgd ? aggregate : -aggregate).to(theta.scalar_type());
  if (s.weight_decay > 0) direction = direction + s.weight_decay * theta;
  if (s.optimizer == ServerSettings::Optimizer::Adam) {
    if (!adam_m_.defined()) {
      adam_m_ = torch::zeros_like(theta);
      adam_v_ = torch::zeros_like(theta);
    }
    adam_m_.mul_(s.beta1).add_(direction, 1 - s.beta1);
    adam_v_.mul_(s.beta2).addcmul_(direction, direction, 1 - s.beta2);
    theta.sub_(lr * adam_m_ / (adam_v_.sqrt() + s.tau));
    return;
  }
  if (s.momentum > 0) {
    momentum_ = momentum_.defined() ? momentum_.mul_(s.momentum).add_(direction) : direction.clone();
    direction = momentum_;
  }
  theta.sub_(lr * direction);
}

StateDict ServerOptimizer::state() const { return {{"momentum", momentum_}, {"adam_m", adam_m_}, {"adam_v", adam_v_}}; }

void ServerOptimizer::load(const StateDict& state) {
  auto get = [&](const char* key) {
    auto it = state.find(key);
    return it == state.end() ? torch::Tensor() : it->second;
  };
  momentum_ = get("momentum");
  adam_m_ = get("adam_m");
  adam_v_ = get("adam_v");
}

}  // namespace bulwark
