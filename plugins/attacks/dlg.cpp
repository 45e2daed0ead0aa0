// Deep Leakage from Gradients (Zhu, Liu, Han, "Deep Leakage from Gradients", NeurIPS 2019).
//
// Given the model f, the point θ and an observed gradient g = ∇θ ℓ(f(x; θ), y), optimise dummy
// inputs x' and dummy label logits y' so that their gradient matches g:
//
//   x', y' = argmin ‖∇θ ℓ(f(x'; θ), softmax(y')) − g‖²,   ℓ(p, q) = −Σ_k q_k log softmax(p)_k
//
// (cross-entropy with the soft targets softmax(y'), averaged over the batch when g is a batch
// mean, summed otherwise), with L-BFGS at learning rate 1 as in the reference code. One attack
// iteration is one L-BFGS step of up to 20 inner iterations (torch.optim.LBFGS's max_iter), so
// `iterations = 300` matches the reference's 300 optimizer.step(closure) calls. The gradient of
// the distance reaches x' and y' through a double backward (create_graph), which is why the
// model must be twice differentiable (the sigmoid LeNet of the paper).
//
// Initialisation (`init`): `uniform` x' ~ U[0, 1); `normal` x' ~ N(0, 1) (the reference code);
// `patterned`: one random p×p patch per image and channel, U[0, 1), tiled over the image — the
// patterned seed of Wei, Liu, Loper, Chow, Gursoy, Truex, Wu, "A Framework for Evaluating Client
// Privacy Leakages in Federated Learning", ESORICS 2020 (inputs without a 2-D layout tile a
// length-p patch along their last axis). Label logits y' ~ N(0, 1).
//
// When the threat model grants the labels (problem.known_labels), y' is fixed to them and only x'
// is optimised. The attack stops early once the matching loss falls below
// tolerance·‖g‖² (the reconstruction has converged), and gives up when the loss turns NaN (L-BFGS
// without line search can diverge, as in the reference); `iterations` in the result counts the
// steps taken until then, and the returned iterate is the one with the lowest matching loss seen.
#include <torch/torch.h>

#include <string>
#include <vector>

#include "bulwark/error.hpp"
#include "bulwark/inversion.hpp"
#include "bulwark/model.hpp"
#include "bulwark/plugin.hpp"

namespace {

constexpr bulwark::OptionSpec kOptions[] = {
    {"iterations", bulwark::OptType::Int, "300", 1, bulwark::kInf,
     "Maximum attack iterations (L-BFGS steps of up to 20 inner iterations each).", nullptr},
    {"lr", bulwark::OptType::Float, "1.0", 1e-12, bulwark::kInf, "L-BFGS learning rate (1 in the paper).",
     nullptr},
    {"init", bulwark::OptType::String, "\"uniform\"", 0, 0,
     "Dummy input initialisation: uniform U[0,1), normal N(0,1) (the reference code), or patterned "
     "(a random patch tiled over the image, Wei et al. 2020).",
     "uniform|normal|patterned"},
    {"patch", bulwark::OptType::Int, "4", 1, bulwark::kInf, "Side of the patterned seed's patch, in pixels.",
     nullptr},
    {"tolerance", bulwark::OptType::Float, "1e-8", 0, bulwark::kInf,
     "Stop once the matching loss is at most tolerance x the squared norm of the observed gradient "
     "(0: always run every iteration).",
     nullptr},
    {"history", bulwark::OptType::Int, "100", 1, bulwark::kInf, "L-BFGS history size.", nullptr},
};

class Dlg final : public bulwark::Attack {
 public:
  explicit Dlg(const bulwark::Options& options)
      : iterations_(options.get<std::int64_t>("iterations")),
        lr_(options.get<double>("lr")),
        init_(options.get<std::string>("init")),
        patch_(options.get<std::int64_t>("patch")),
        tolerance_(options.get<double>("tolerance")),
        history_(options.get<std::int64_t>("history")) {}

  bool reconstructs() const override { return true; }

  bulwark::LeakageResult reconstruct(const bulwark::LeakageProblem& problem) override {
    if (!problem.model || !problem.params.defined() || !problem.observed.defined() ||
        problem.observed.numel() != problem.params.numel()) {
      throw bulwark::Error(bulwark::ErrorKind::Runtime,
                           "dlg: the problem needs a model, θ [d] and an observed gradient [d]");
    }
    torch::AutoGradMode grad_mode(true);
    const auto& model = *problem.model;
    const auto batch = problem.batch_size;
    const bool known = problem.known_labels.defined();
    auto params = problem.params.detach().to(torch::kFloat).requires_grad_(true);
    auto observed = problem.observed.detach().to(torch::kFloat).flatten();
    auto generator = problem.generator;

    auto x = bulwark::dummy_inputs(init_, patch_, batch, problem.input_shape, generator).requires_grad_(true);
    torch::Tensor y;  // label logits [B, K]; soft targets softmax(y)
    std::vector<torch::Tensor> variables{x};
    if (known) {
      y = torch::one_hot(problem.known_labels.to(torch::kLong), problem.num_classes).to(torch::kFloat);
    } else {
      y = torch::randn({batch, problem.num_classes}, generator).requires_grad_(true);
      variables.push_back(y);
    }

    auto matching_loss = [&](bool create_graph) {
      auto targets = known ? y : torch::softmax(y, 1);
      auto per_example = -(targets * torch::log_softmax(model.forward(params, x), 1)).sum(1);
      auto loss = problem.observed_is_mean ? per_example.mean() : per_example.sum();
      auto gradient = torch::autograd::grad({loss}, {params}, {}, /*retain_graph=*/true,
                                            create_graph)[0];
      return (gradient - observed).pow(2).sum();
    };

    const double stop_at = tolerance_ * observed.pow(2).sum().item<double>();
    auto match = bulwark::lbfgs_gradient_matching(variables, matching_loss, iterations_, lr_, history_, stop_at);

    bulwark::LeakageResult result;
    result.inputs = match.best[0];
    result.labels = known ? problem.known_labels.to(torch::kLong) : match.best[1].argmax(1);
    result.iterations = match.iterations;
    result.distance_trace = match.trace;
    return result;
  }

 private:
  std::int64_t iterations_;
  double lr_;
  std::string init_;
  std::int64_t patch_;
  double tolerance_;
  std::int64_t history_;
};

}  // namespace

BULWARK_PLUGIN(bulwark::Attack, Dlg, "dlg", "1.0.0",
               "Deep Leakage from Gradients: L-BFGS gradient matching of dummy inputs and soft labels",
               "DLG (Zhu, Liu, Han, 'Deep Leakage from Gradients', NeurIPS 2019): reconstructs a "
               "client's inputs and labels from an observed gradient by minimising the squared L2 "
               "distance between the observed gradient and the gradient of dummy inputs with soft "
               "labels softmax(y'), with L-BFGS (lr 1). Initialisation uniform, normal or patterned "
               "(Wei et al., 'A Framework for Evaluating Client Privacy Leakages in Federated "
               "Learning', ESORICS 2020). Needs a twice-differentiable model (e.g. the sigmoid LeNet).",
               kOptions)
