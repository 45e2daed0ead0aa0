#include "client_models.hpp"

#include <torch/torch.h>

#include <string>

namespace bulwark {

torch::Tensor ClientModels::starts(const std::vector<std::int64_t>& participants, const torch::Tensor& theta) const {
  auto starts = theta.unsqueeze(0).repeat({static_cast<std::int64_t>(participants.size()), 1});
  for (std::size_t i = 0; i < participants.size(); ++i) {
    auto it = models_.find(participants[i]);
    if (it != models_.end()) starts[static_cast<std::int64_t>(i)].copy_(it->second);
  }
  return starts;
}

void ClientModels::finish(const std::vector<std::int64_t>& participants, const torch::Tensor& starts,
                          const torch::Tensor& theta, torch::Tensor& updates) {
  const auto finished = updates + theta;
  for (std::size_t i = 0; i < participants.size(); ++i) {
    models_[participants[i]] = finished[static_cast<std::int64_t>(i)].clone();
  }
  updates = starts - theta;
}

StateDict ClientModels::state() const {
  StateDict state;
  for (const auto& [client, model] : models_) state[std::to_string(client)] = model;
  return state;
}

void ClientModels::load(const StateDict& state, c10::Device device) {
  models_.clear();
  for (const auto& [client, model] : state) models_[std::stoll(client)] = model.to(device);
}

}  // namespace bulwark
