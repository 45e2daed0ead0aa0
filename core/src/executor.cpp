#include "executor.hpp"

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <exception>
#include <map>
#include <mutex>
#include <numeric>
#include <thread>

namespace bulwark {

ClientExecutor::~ClientExecutor() = default;

ThreadExecutor::ThreadExecutor(const LocalTrainer& trainer, const Partition& partition, const ClientSettings& clients,
                               int threads, bool batching)
    : trainer_(trainer), partition_(partition), clients_(clients), threads_(threads), batching_(batching) {}

void ThreadExecutor::train(const RoundWork& work, torch::Tensor& updates, std::vector<double>& losses) {
  std::vector<std::int64_t> rows(work.participants.size());
  std::iota(rows.begin(), rows.end(), 0);
  train_rows(work, rows, updates, losses);
}

void ThreadExecutor::train_rows(const RoundWork& work, const std::vector<std::int64_t>& rows, torch::Tensor& out,
                                std::vector<double>& losses) {
  std::vector<std::int64_t> slot(work.participants.size(), -1);  // row of the round -> row of `out`
  for (std::size_t j = 0; j < rows.size(); ++j) slot[rows[j]] = static_cast<std::int64_t>(j);
  const auto chunks = plan_chunks(work.participants, rows);
  parallel_for(static_cast<std::int64_t>(chunks.size()), threads_, [&](std::int64_t c) {
    std::vector<LocalJob> jobs;
    for (auto i : chunks[c].rows) {
      const auto client = work.participants[i];
      const auto indices = partition_.client(client);
      const auto n = indices.size(0);
      jobs.push_back({indices, n > 0 ? clients_.schedule.steps(n) : 0, client, work.attack_of[i], out[slot[i]],
                      work.starts.defined() ? work.starts[i] : torch::Tensor()});
    }
    const auto chunk_losses = trainer_.train(work.round, work.theta, jobs, chunks[c].width);
    for (std::size_t k = 0; k < chunks[c].rows.size(); ++k) losses[slot[chunks[c].rows[k]]] = chunk_losses[k];
  });
}

std::int64_t ThreadExecutor::cost(std::int64_t client) const {
  const auto n = partition_.size(client);
  return n > 0 ? clients_.schedule.steps(n) * clients_.schedule.batch(n) : 0;
}

/// Client-batched training: rows with data and equal step counts form a group, cut in row order
/// into chunks of at most clients.batch_clients, and further so that every worker has one. A
/// client's stacked arithmetic depends on its own data and on the group's batch width only, not on
/// its chunk (batching_test holds that bit for bit), so the cut may follow the thread count.
/// Without batching every row is a chunk of its own.
std::vector<ThreadExecutor::Chunk> ThreadExecutor::plan_chunks(const std::vector<std::int64_t>& participants,
                                                                const std::vector<std::int64_t>& mine) const {
  std::vector<Chunk> chunks;
  std::vector<bool> is_mine(participants.size(), false);
  for (auto row : mine) is_mine[row] = true;
  std::map<std::int64_t, std::vector<std::int64_t>> groups;  // step count -> rows of the round
  for (std::size_t i = 0; i < participants.size(); ++i) {
    const auto n = partition_.size(participants[i]);
    const auto row = static_cast<std::int64_t>(i);
    if (batching_ && n > 0) {
      groups[clients_.schedule.steps(n)].push_back(row);
    } else if (is_mine[i]) {
      chunks.push_back({{row}});
    }
  }
  const auto cap = clients_.batch_clients;
  for (const auto& [steps, group] : groups) {
    std::int64_t width = 0;  // over the whole group, wherever its rows train
    for (auto row : group) width = std::max(width, clients_.schedule.batch(partition_.size(participants[row])));
    std::vector<std::int64_t> rows;
    for (auto row : group) {
      if (is_mine[row]) rows.push_back(row);
    }
    const auto size = static_cast<std::int64_t>(rows.size());
    const auto count = std::min(size, std::max<std::int64_t>((size + cap - 1) / cap, threads_));
    for (std::int64_t c = 0; c < count; ++c) {
      chunks.push_back({{rows.begin() + c * size / count, rows.begin() + (c + 1) * size / count}, width});
    }
  }
  return chunks;
}

void parallel_for(std::int64_t n, int threads, const std::function<void(std::int64_t)>& fn) {
  if (n <= 0) return;
  threads = static_cast<int>(std::min<std::int64_t>(threads, n));
  if (threads <= 1) {
    for (std::int64_t i = 0; i < n; ++i) fn(i);
    return;
  }
  std::atomic<std::int64_t> next{0};
  std::exception_ptr failure;
  std::mutex failure_mutex;
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&] {
      at::init_num_threads();  // one intra-op thread per worker: parallelism is across clients
      try {
        for (std::int64_t i = next++; i < n; i = next++) fn(i);
      } catch (...) {
        std::lock_guard<std::mutex> lock(failure_mutex);
        if (!failure) failure = std::current_exception();
        next = n;
      }
    });
  }
  for (auto& w : workers) w.join();
  if (failure) std::rethrow_exception(failure);
}

}  // namespace bulwark
