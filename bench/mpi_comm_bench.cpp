// What a distributed round moves and what it costs (docs/distributed.md), measured with the
// messages the MPI executor sends: rank 0 broadcasts θ (a round's work, encoded as a checkpoint),
// every rank returns its rows of U, rank 0 gathers them (MPI_Gatherv, in chunks). For d = 1e5, 1e6,
// 1e7 and n = 10, 100 clients per round it prints the bytes moved and the broadcast + gather time
// per round, beside one round's training on this machine: L local steps of batch 5 on an MLP
// with d parameters, for the n / ranks clients one rank trains on one thread. The fraction is
// communication / (communication + training). Asserts nothing.
//
//   mpirun -np 2 build/bench/mpi_comm_bench [L=100]
#include <torch/torch.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "checkpoint.hpp"
#include "cluster.hpp"
#include "runtime.hpp"
#include "timing.hpp"

namespace {

using namespace bulwark;

/// One round's communication: θ out, the rows of every rank back to rank 0, decoded there.
double communication_seconds(std::int64_t d, std::int64_t n) {
  const auto ranks = cluster::size(), rank = cluster::rank();
  const std::int64_t mine = n / ranks + (rank < n % ranks ? 1 : 0);
  Checkpoint work;
  work.tensors["theta"] = torch::randn({d});
  std::string reply_bytes;  // rank 0's own rows go straight into U
  if (rank != 0) {
    Checkpoint reply;
    reply.tensors["rows"] = torch::randn({mine, d});
    reply_bytes = encode_checkpoint(reply);
  }
  return bench::best_seconds(
      [&] {
        auto bytes = rank == 0 ? encode_checkpoint(work) : std::string();
        cluster::broadcast(bytes);
        const auto replies = cluster::gather(reply_bytes);
        for (std::size_t r = 1; r < replies.size(); ++r) decode_checkpoint(replies[r], "a reply");
      },
      3, 0.0, 3);
}

/// One SGD step (forward, backward, update) of an MLP 784 -> h -> 10 with about d parameters.
double step_seconds(std::int64_t d) {
  const std::int64_t hidden = std::max<std::int64_t>(1, d / 795);
  torch::nn::Sequential mlp(torch::nn::Linear(784, hidden), torch::nn::ReLU(), torch::nn::Linear(hidden, 10));
  torch::optim::SGD sgd(mlp->parameters(), 0.01);
  const auto x = torch::randn({5, 784});
  const auto y = torch::randint(10, {5}, torch::kLong);
  return bench::best_seconds([&] {
    sgd.zero_grad();
    torch::nll_loss(torch::log_softmax(mlp->forward(x), 1), y).backward();
    sgd.step();
  });
}

}  // namespace

int main(int argc, char** argv) {
  cluster::Session mpi(argc, argv);
  init_runtime();
  if (!cluster::distributed()) {
    std::fprintf(stderr, "mpi_comm_bench measures messages between ranks: run it as mpirun -np 2 %s\n", argv[0]);
    return 2;
  }
  const std::int64_t local_steps = argc > 1 ? std::atoll(argv[1]) : 100;
  const int ranks = cluster::size();
  torch::manual_seed(1);
  if (cluster::rank() == 0) {
    std::printf("mpi_comm_bench: %d ranks on this machine (loopback), L = %lld local steps of batch 5\n", ranks,
                static_cast<long long>(local_steps));
    std::printf("%10s %5s %14s %12s %14s %10s\n", "d", "n", "bytes/round", "comm (s)", "training (s)", "comm share");
  }
  for (const std::int64_t d : {100'000LL, 1'000'000LL, 10'000'000LL}) {
    const double step = cluster::rank() == 0 ? step_seconds(d) : 0.0;
    for (const std::int64_t n : {10LL, 100LL}) {
      const double comm = communication_seconds(d, n);
      if (cluster::rank() != 0) continue;
      // θ to every other rank, and the rows rank 0 does not train back to it (float32).
      const double bytes = 4.0 * static_cast<double>(d) * static_cast<double>((ranks - 1) + (n - (n / ranks + (n % ranks > 0))));
      const double training = step * static_cast<double>(local_steps) * static_cast<double>((n + ranks - 1) / ranks);
      std::printf("%10lld %5lld %14.3e %12.4f %14.3f %9.1f%%\n", static_cast<long long>(d), static_cast<long long>(n),
                  bytes, comm, training, 100.0 * comm / (comm + training));
      std::fflush(stdout);
    }
  }
  return 0;
}
