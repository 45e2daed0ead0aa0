// Times one 300-iteration DLG run (Zhu et al. 2019: L-BFGS, lr 1, up to 20 inner iterations per
// step) on the sigmoid LeNet with Fashion-MNIST-shaped inputs (1x28x28, 10 classes, Zhu et al.'s
// U[-0.5, 0.5] weights), for victim batch sizes 1 and 4, loading the real dlg plugin from the
// build tree. The baseline, measured in the same run, is one plain gradient evaluation (forward
// and backward of the cross-entropy at that batch): an attack iteration costs up to 20 L-BFGS
// evaluations of forward + double backward, so the ratio shows what the attack costs relative to
// the training step it inverts. tolerance = 0 keeps the attack from stopping at convergence; once
// L-BFGS has converged, though, its steps return early (as in PyTorch), so a run that recovers the
// input is cheaper than one that does not. The inputs are random U[0, 1) images: the work does
// not depend on what they show. No assertions: the numbers are for people.
//
//   leakage_bench [threads]      (default: LibTorch's default intra-op thread count)
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include "bulwark/attack.hpp"
#include "bulwark/rng.hpp"
#include "config.hpp"
#include "engine.hpp"
#include "loader.hpp"
#include "models.hpp"

namespace {

double seconds(const std::function<void()>& body) {
  const auto start = std::chrono::steady_clock::now();
  body();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

int main(int argc, char** argv) {
  bulwark::init_runtime();  // as the host does
  if (argc > 1) at::set_num_threads(std::max(1, std::atoi(argv[1])));
  try {
    bulwark::PluginRegistry registry({BULWARK_BENCH_PLUGIN_DIR});
    auto library = registry.open(BULWARK_KIND_ATTACK, "dlg");
    auto options = bulwark::options_from_string("iterations = 300\ntolerance = 0", library->option_specs(),
                                                "attack 'dlg'");
    bulwark::PluginHandle<bulwark::Attack> dlg(library, options);
    auto model_options = bulwark::options_from_string("arch = \"lenet\"\ninit = \"dlg\"", bulwark::model_option_specs(),
                                                      "[model]");
    auto model = bulwark::build_model(model_options, {1, 28, 28}, 10);
    auto theta = model->initial_parameters(/*seed=*/1);

    std::printf("DLG, 300 iterations, %s, %d intra-op threads\n", model->describe().c_str(), at::get_num_threads());
    std::printf("%6s %11s %14s %14s %12s %14s\n", "batch", "attack [s]", "per iter [ms]", "gradient [ms]",
                "iter/grad", "attack/grad");
    double first = 0.0;
    for (std::int64_t batch : {1, 4}) {
      auto generator = bulwark::make_generator(/*seed=*/2);
      auto x = torch::rand({batch, 1, 28, 28}, generator);
      auto y = torch::randint(10, {batch}, generator, torch::kLong);
      auto params = theta.detach().requires_grad_(true);
      torch::Tensor observed;
      auto gradient = [&] {
        auto loss = torch::cross_entropy_loss(model->forward(params, x), y);
        observed = torch::autograd::grad({loss}, {params})[0].detach();
      };
      gradient();  // warm-up
      const int repeats = 50;
      const double step = seconds([&] {
                            for (int r = 0; r < repeats; ++r) gradient();
                          }) /
                          repeats;

      bulwark::LeakageProblem problem;
      problem.model = model.get();
      problem.params = theta;
      problem.observed = observed;
      problem.batch_size = batch;
      problem.input_shape = {1, 28, 28};
      problem.num_classes = 10;
      problem.generator = bulwark::make_generator(/*seed=*/3);
      bulwark::LeakageResult result;
      const double attack = seconds([&] { result = dlg->reconstruct(problem); });
      const double mse = (result.inputs - x).pow(2).mean().item<double>();
      if (batch == 1) first = attack;
      const double per_iteration = attack / 300;
      std::printf("%6lld %11.2f %14.2f %14.3f %12.1f %14.0f   (reconstruction MSE %.2e%s)\n",
                  static_cast<long long>(batch), attack, per_iteration * 1e3, step * 1e3, per_iteration / step,
                  attack / step, mse,
                  batch == 1 ? "" : (", " + std::to_string(attack / first).substr(0, 4) + "x batch 1").c_str());
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  return 0;
}
