#include "evaluation.hpp"

#include <torch/torch.h>

#include <numeric>
#include <vector>

#include "executor.hpp"

namespace bulwark {

Evaluation evaluate(const Model& model, const torch::Tensor& theta, const torch::Tensor& inputs,
                    const torch::Tensor& labels, std::int64_t chunk, int threads) {
  const auto n = inputs.size(0);
  if (n == 0) return {};
  const auto chunks = (n + chunk - 1) / chunk;
  std::vector<torch::Tensor> correct(chunks), loss(chunks);
  parallel_for(chunks, threads, [&](std::int64_t i) {
    torch::NoGradGuard no_grad;
    const auto start = i * chunk, length = std::min(chunk, n - start);
    auto logits = model.forward(theta, inputs.narrow(0, start, length));
    auto y = labels.narrow(0, start, length);
    correct[i] = logits.argmax(1).eq(y).sum().to(torch::kDouble);
    loss[i] = torch::cross_entropy_loss(logits, y, {}, at::Reduction::Sum).to(torch::kDouble);
  });
  const auto correct_host = torch::stack(correct).cpu(), loss_host = torch::stack(loss).cpu();
  const auto* correct_values = correct_host.data_ptr<double>();
  const auto* loss_values = loss_host.data_ptr<double>();
  return {std::accumulate(correct_values, correct_values + chunks, 0.0) / static_cast<double>(n),
          std::accumulate(loss_values, loss_values + chunks, 0.0) / static_cast<double>(n)};
}

}  // namespace bulwark
