// Framework overhead and thread scaling of a federated round, measured through the real Engine
// on the small-batch workload of the DP papers (DESIGN.md §7): Fashion-MNIST (synthetic 1×28×28
// data of the same shape when the files are missing), 100 clients IID, 10 per round, L = 100
// local iterations, B = 5, the GroupNorm CNN, lr 0.05.
//   (a) overhead: the round time without evaluation, against the same clients' local training
//       written as the plain loop a researcher writes (clone θ, per step: batch, forward, loss,
//       backward, SGD step) and timed in this process; also the engine's own non-training share
//       (time_round − time_train − time_eval) / time_round from its metrics rows.
//   (b) thread scaling: time_train with 1 worker over time_train with 2 workers, beside the
//       machine's own ceiling: the plain loop with its clients split over 2 threads against 1
//       (on a shared virtual machine two vCPUs may not give two cores' throughput).
// Per-round figures are the minimum over the rounds after the first (warm-up). Prints a table;
// asserts nothing.
//
//   round_bench [rounds=4] [local_iterations=100]
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include "config.hpp"
#include "engine_run.hpp"
#include "models.hpp"

namespace {

struct Workload {
  std::int64_t rounds = 4, iterations = 100, batch = 5, per_round = 10, clients = 100;
  double lr = 0.05;
};

std::string experiment_text(const Workload& w) {
  return "[experiment]\nname = \"round_bench\"\nseed = 1\nrounds = " + std::to_string(w.rounds) +
         "\neval_every = " + std::to_string(w.rounds) + "\n\n" + bulwark::bench::fashion_mnist_data_section() +
         "\n[data.partition]\nscheme = \"iid\"\n\n[model]\narch = \"cnn\"\n\n[clients]\ncount = " +
         std::to_string(w.clients) + "\nper_round = " + std::to_string(w.per_round) +
         "\nlocal_iterations = " + std::to_string(w.iterations) + "\nbatch_size = " + std::to_string(w.batch) +
         "\nlr = " + std::to_string(w.lr) + "\n";
}

struct RoundTimes {
  double train = 1e300, round_without_eval = 1e300, own_share = 1e300;
};

/// Runs the workload through the Engine and keeps the best round after the first.
RoundTimes run_engine(bulwark::PluginRegistry& registry, const Workload& w, int threads) {
  const auto summary = bulwark::bench::run_experiment(registry, experiment_text(w), threads);
  RoundTimes best;
  for (std::size_t r = 1; r < summary.metrics.size(); ++r) {
    double train = 0, round = 0, eval = 0;
    for (const auto& [name, value] : summary.metrics[r]) {
      if (name == "time_train") train = value;
      if (name == "time_round") round = value;
      if (name == "time_eval") eval = value;
    }
    best.train = std::min(best.train, train);
    best.round_without_eval = std::min(best.round_without_eval, round - eval);
    best.own_share = std::min(best.own_share, (round - eval - train) / (round - eval));
  }
  return best;
}

/// The plain loop over one round's clients: the pure local-training compute of a round. With
/// `threads` > 1 the clients are split over that many threads (one intra-op thread each).
double plain_loop_seconds(const Workload& w, int threads) {
  const auto model = bulwark::build_model(
      bulwark::options_from_string("arch = \"cnn\"", bulwark::model_option_specs(), "[model]"), {1, 28, 28}, 10);
  const auto theta = model->initial_parameters(/*seed=*/1);
  const std::int64_t local = 600;  // examples per client (60,000 over 100 clients)
  const auto inputs = torch::rand({local * w.per_round, 1, 28, 28});
  const auto labels = torch::randint(10, {local * w.per_round}, torch::kLong);
  auto train = [&](std::int64_t client) {
    auto params = theta.clone().requires_grad_(true);
    torch::Tensor order;
    for (std::int64_t step = 0; step < w.iterations; ++step) {
      const auto position = (step * w.batch) % local;
      if (position == 0) order = torch::randperm(local, torch::kLong) + client * local;
      auto take = order.narrow(0, position, w.batch);
      auto loss = torch::cross_entropy_loss(model->forward(params, inputs.index_select(0, take)),
                                            labels.index_select(0, take));
      auto gradient = torch::autograd::grad({loss}, {params})[0];
      loss.item<double>();
      torch::NoGradGuard no_grad;
      params.sub_(w.lr * gradient);
    }
  };
  double best = 1e300;
  for (int repeat = 0; repeat < 3; ++repeat) {
    const auto start = std::chrono::steady_clock::now();
    std::vector<std::thread> workers;
    for (int t = 0; t < threads; ++t) {
      workers.emplace_back([&, t] {
        at::init_num_threads();
        for (std::int64_t client = t; client < w.per_round; client += threads) train(client);
      });
    }
    for (auto& worker : workers) worker.join();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  bulwark::init_runtime();  // as the host does: parallelism is across clients
  try {
    Workload w;
    if (argc > 1) w.rounds = std::max(2, std::atoi(argv[1]));
    if (argc > 2) w.iterations = std::max(1, std::atoi(argv[2]));
    bulwark::PluginRegistry registry({BULWARK_BENCH_PLUGIN_DIR});
    std::printf("workload: %s, %lld clients IID, %lld per round, L = %lld, B = %lld, cnn, lr %.2f; best of rounds 2..%lld\n",
                bulwark::bench::have_fashion_mnist() ? "Fashion-MNIST" : "synthetic 1x28x28", static_cast<long long>(w.clients),
                static_cast<long long>(w.per_round), static_cast<long long>(w.iterations),
                static_cast<long long>(w.batch), w.lr, static_cast<long long>(w.rounds));
    const double plain = plain_loop_seconds(w, 1);
    const double plain_two = plain_loop_seconds(w, 2);
    const auto one = run_engine(registry, w, 1);
    const auto two = run_engine(registry, w, 2);
    std::printf("%-52s %10.4f s\n", "plain loop, 10 clients (pure local compute)", plain);
    std::printf("%-52s %10.4f s\n", "engine round without eval, 1 worker", one.round_without_eval);
    std::printf("%-52s %10.4f s\n", "engine time_train, 1 worker", one.train);
    std::printf("%-52s %10.4f s\n", "engine round without eval, 2 workers", two.round_without_eval);
    std::printf("%-52s %10.4f s\n", "engine time_train, 2 workers", two.train);
    std::printf("overhead vs plain loop (1 worker): (round - plain) / plain = %+.2f%%  (target <= 5%%)\n",
                100.0 * (one.round_without_eval - plain) / plain);
    std::printf("engine's own share (1 worker): (round - train) / round = %.2f%%\n", 100.0 * one.own_share);
    std::printf("%-52s %10.4f s\n", "plain loop, clients split over 2 threads", plain_two);
    std::printf("thread scaling 1 -> 2 workers: time_train ratio = %.2fx, round ratio = %.2fx  (target >= 1.7x)\n",
                one.train / two.train, one.round_without_eval / two.round_without_eval);
    std::printf("machine ceiling: plain loop 1 -> 2 threads = %.2fx; engine scaling / ceiling = %.2f\n",
                plain / plain_two, (one.train / two.train) / (plain / plain_two));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "round_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
