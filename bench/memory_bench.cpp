// Peak resident memory against the number of clients (DESIGN.md §7: memory grows with the clients
// of one round, not with the total). Each size runs in its own child process (this program
// re-executed with --child N) so the peaks do not mix: a synthetic experiment with N clients, a
// small MLP, 100 clients per round, 3 rounds, then the child prints its VmHWM from
// /proc/self/status; once plain and once with a sign_flip attack on a markov schedule over all
// clients (the schedule keeps per-client chain state). The baseline is the first size. Prints a
// table; asserts nothing.
//
//   memory_bench [N ...]               (default 1000 10000 100000)
//   memory_bench --child N [markov]    one run, prints "peak_kib <VmHWM>"
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include "engine_run.hpp"
#include "process_memory.hpp"

namespace {

namespace fs = std::filesystem;

/// Two training examples per client: the data grows with N like the partition does.
std::string experiment_text(std::int64_t clients, bool markov) {
  const std::string attack = markov ? "\n[attack]\nplugin = \"sign_flip\"\nschedule = \"markov\"\nmarkov_p = 0.01\n" : "";
  return "[experiment]\nname = \"memory_bench\"\nseed = 1\nrounds = 3\n\n"
         "[data]\nplugin = \"synthetic\"\nfeatures = 20\ntrain_size = " + std::to_string(2 * clients) +
         "\ntest_size = 2000\n\n[data.partition]\nscheme = \"iid\"\n\n[model]\narch = \"mlp\"\nhidden = [64]\n\n"
         "[clients]\ncount = " + std::to_string(clients) + "\nper_round = 100\nlocal_iterations = 5\nbatch_size = 2\nlr = 0.1\n" + attack;
}

int child(std::int64_t clients, bool markov) {
  bulwark::init_runtime();  // as the host does
  {
    bulwark::PluginRegistry registry({BULWARK_BENCH_PLUGIN_DIR});
    bulwark::bench::run_experiment(registry, experiment_text(clients, markov), /*threads=*/2);
  }
  std::printf("peak_kib %ld\n", bulwark::bench::status_kib("VmHWM"));
  return 0;
}

/// Runs this program with --child N and returns the child's peak in KiB, or -1.
long measure(const std::string& self, std::int64_t clients, bool markov) {
  return bulwark::bench::child_peak_kib("'" + self + "' --child " + std::to_string(clients) + (markov ? " markov" : ""));
}

}  // namespace

int main(int argc, char** argv) {
  try {
    if (argc >= 3 && std::string(argv[1]) == "--child") return child(std::atoll(argv[2]), argc > 3);
    std::vector<std::int64_t> sizes;
    for (int i = 1; i < argc; ++i) sizes.push_back(std::atoll(argv[i]));
    if (sizes.empty()) sizes = {1000, 10000, 100000};
    const auto self = fs::read_symlink("/proc/self/exe").string();
    std::printf("synthetic (20 features, 2 examples per client), MLP [64], 100 clients per round, 3 rounds\n");
    std::printf("%12s %18s %10s %18s %10s\n", "clients", "peak RSS MiB", "vs first", "markov attack MiB", "vs first");
    double first[2] = {0, 0};
    for (auto n : sizes) {
      std::printf("%12lld", static_cast<long long>(n));
      for (int markov = 0; markov < 2; ++markov) {
        const long kib = measure(self, n, markov == 1);
        if (kib < 0) {
          std::printf(" %18s %10s", "failed", "");
          continue;
        }
        const double mib = static_cast<double>(kib) / 1024.0;
        if (first[markov] == 0) first[markov] = mib;
        std::printf(" %18.1f %9.2fx", mib, mib / first[markov]);
      }
      std::printf("\n");
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "memory_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
