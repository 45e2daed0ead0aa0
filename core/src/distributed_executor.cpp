#include "distributed_executor.hpp"

#include <torch/torch.h>

#include <algorithm>
#include <numeric>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "checkpoint.hpp"
#include "cluster.hpp"

namespace bulwark {

namespace {

constexpr std::int64_t kStop = -1;  // the round number that ends serve()

template <typename T>
torch::Tensor as_tensor(const std::vector<T>& values) {
  return torch::tensor(std::vector<std::int64_t>(values.begin(), values.end()), torch::kLong);
}

template <typename T>
std::vector<T> as_vector(const torch::Tensor& tensor) {
  auto values = tensor.to(torch::kLong).contiguous();
  return std::vector<T>(values.data_ptr<std::int64_t>(), values.data_ptr<std::int64_t>() + values.numel());
}

/// A failure report (cluster::describe_failure) as a uint8 tensor, so a reply is one Checkpoint.
torch::Tensor text_tensor(const std::string& text) {
  auto tensor = torch::empty({static_cast<std::int64_t>(text.size())}, torch::kUInt8);
  std::copy(text.begin(), text.end(), reinterpret_cast<char*>(tensor.data_ptr<std::uint8_t>()));
  return tensor;
}

std::string tensor_text(const torch::Tensor& tensor) {
  const auto* data = reinterpret_cast<const char*>(tensor.data_ptr<std::uint8_t>());
  return std::string(data, data + tensor.numel());
}

std::vector<std::int64_t> rows_of(const std::vector<int>& owner, int rank) {
  std::vector<std::int64_t> rows;
  for (std::size_t i = 0; i < owner.size(); ++i) {
    if (owner[i] == rank) rows.push_back(static_cast<std::int64_t>(i));
  }
  return rows;
}

}  // namespace

DistributedExecutor::DistributedExecutor(ThreadExecutor& local, PluginSet& plugins)
    : local_(local), plugins_(plugins) {}

DistributedExecutor::~DistributedExecutor() { stop(); }

std::vector<int> DistributedExecutor::assign(const RoundWork& work) const {
  const auto n = work.participants.size();
  std::vector<std::int64_t> cost(n), order(n);
  for (std::size_t i = 0; i < n; ++i) cost[i] = local_.cost(work.participants[i]);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](std::int64_t a, std::int64_t b) { return cost[a] > cost[b]; });
  std::vector<std::int64_t> load(cluster::size(), 0);
  std::vector<int> owner(n, 0);
  for (auto row : order) {
    const auto least = std::min_element(load.begin(), load.end()) - load.begin();
    owner[row] = static_cast<int>(least);
    load[least] += cost[row];
  }
  return owner;
}

void DistributedExecutor::train(const RoundWork& work, torch::Tensor& updates, std::vector<double>& losses) {
  const auto owner = assign(work);
  Checkpoint message;
  message.round = work.round;
  message.tensors = {{"theta", work.theta},
                     {"participants", as_tensor(work.participants)},
                     {"attack_of", as_tensor(work.attack_of)},
                     {"owner", as_tensor(owner)}};
  if (work.starts.defined()) message.tensors["starts"] = work.starts;
  plugins_.save_state(message);  // e.g. an adaptive clip the server moved last round
  auto bytes = encode_checkpoint(message);
  cluster::broadcast(bytes);

  // Rank 0's own rows go straight into U; it sends itself nothing.
  const auto mine = rows_of(owner, 0);
  std::exception_ptr own_failure;
  try {
    auto out = torch::empty({static_cast<std::int64_t>(mine.size()), updates.size(1)}, updates.options());
    std::vector<double> mine_losses(mine.size());
    local_.train_rows(work, mine, out, mine_losses);
    if (!mine.empty()) updates.index_copy_(0, as_tensor(mine).to(updates.device()), out);
    for (std::size_t j = 0; j < mine.size(); ++j) losses[mine[j]] = mine_losses[j];
  } catch (...) {
    own_failure = std::current_exception();
  }
  const auto replies = cluster::gather("");
  if (own_failure) std::rethrow_exception(own_failure);
  for (int r = 1; r < static_cast<int>(replies.size()); ++r) {
    const auto reply = decode_checkpoint(replies[r], "the reply of rank " + std::to_string(r));
    if (reply.tensors.count("failure")) cluster::rethrow_failure(tensor_text(reply.tensors.at("failure")), r);
    const auto rows = rows_of(owner, r);
    if (rows.empty()) continue;
    updates.index_copy_(0, as_tensor(rows).to(updates.device()), reply.tensors.at("rows").to(updates.device()));
    const auto values = reply.tensors.at("losses").contiguous();
    for (std::size_t j = 0; j < rows.size(); ++j) losses[rows[j]] = values.data_ptr<double>()[j];
  }
}

void DistributedExecutor::serve(c10::Device device) {
  while (true) {
    std::string bytes;
    cluster::broadcast(bytes);
    const auto message = decode_checkpoint(bytes, "the message of rank 0");
    if (message.round == kStop) return;
    Checkpoint reply;
    reply.round = message.round;
    try {
      RoundWork work;
      work.round = message.round;
      work.theta = message.tensors.at("theta").to(device);
      work.participants = as_vector<std::int64_t>(message.tensors.at("participants"));
      work.attack_of = as_vector<int>(message.tensors.at("attack_of"));
      if (message.tensors.count("starts")) work.starts = message.tensors.at("starts").to(device);
      plugins_.load_state(message, device);
      const auto rows = rows_of(as_vector<int>(message.tensors.at("owner")), cluster::rank());
      auto out = torch::empty({static_cast<std::int64_t>(rows.size()), work.theta.size(0)}, work.theta.options());
      std::vector<double> losses(rows.size());
      local_.train_rows(work, rows, out, losses);
      reply.tensors = {{"rows", out}, {"losses", torch::tensor(losses, torch::kDouble)}};
    } catch (...) {
      reply.tensors = {{"failure", text_tensor(cluster::describe_failure(std::current_exception()))}};
    }
    cluster::gather(encode_checkpoint(reply));
  }
}

void DistributedExecutor::stop() noexcept {
  if (stopped_ || cluster::rank() != 0 || !cluster::distributed()) return;
  stopped_ = true;
  try {
    Checkpoint message;
    message.round = kStop;
    auto bytes = encode_checkpoint(message);
    cluster::broadcast(bytes);
  } catch (...) {
    // Nothing more can be done: the job ends with rank 0's error.
  }
}

void check_same_build(const std::string& fingerprint) {
  if (!cluster::distributed()) return;
  const auto prints = cluster::gather(fingerprint);
  std::exception_ptr failure;
  for (int r = 1; r < static_cast<int>(prints.size()) && !failure; ++r) {
    if (prints[r] == prints[0]) continue;
    const auto mine = nlohmann::json::parse(prints[0]), theirs = nlohmann::json::parse(prints[r]);
    std::string what = "another build";
    for (const auto& [key, words] : {std::pair<const char*, const char*>{"config", "another experiment configuration"},
                                     {"plugins", "another plugin set"},
                                     {"torch", "another LibTorch"},
                                     {"kernel", "another libbulwark_core"},
                                     {"program", "another bulwark binary"}}) {
      if (mine.at(key) != theirs.at(key)) what = words;
    }
    failure = std::make_exception_ptr(Error(
        ErrorKind::Config, fmt::format("rank {} runs {} than rank 0; every rank of a job must run the same Bulwark "
                                       "build, plugin files and experiment file (install the same build on every node)",
                                       r, what)));
  }
  cluster::agree(failure);
}

}  // namespace bulwark
