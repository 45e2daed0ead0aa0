// Improved Deep Leakage from Gradients (Zhao, Mopuri, Bilen, "iDLG: Improved Deep Leakage from
// Gradients", arXiv:2001.02610, 2020).
//
// Label first, analytically. For one example with cross-entropy loss and a final fully connected
// layer z = W h + b, row i of the weight gradient is
//
//   ∂ℓ/∂W_i = (softmax(z)_i − 1[i = c]) · h,
//
// and when the layer's input h is non-negative (it follows a sigmoid or ReLU), the row sum
// Σ_j ∂ℓ/∂W_ij is negative exactly for the true class c and non-negative for every other class.
// So c = argmin_i Σ_j g_W[i, j] (the reference code's rule). The final layer is the last 2-D
// entry of the model's ParamLayout with one row per class.
//
// Then the input alone, as DLG does it but with the label fixed:
//
//   x' = argmin ‖∇θ CE(f(x'; θ), c) − g‖²   (L-BFGS, lr 1)
//
// The rule needs batch size 1; larger batches need the labels from the threat model
// (problem.known_labels), in which case they are used and nothing is inferred. One attack
// iteration is one L-BFGS step (up to 20 inner iterations); the attack stops once the matching
// loss is below tolerance·‖g‖² or turns NaN, reports the steps taken until then, and returns the
// iterate with the lowest loss it saw.
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

class Idlg final : public bulwark::Attack {
 public:
  explicit Idlg(const bulwark::Options& options)
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
                           "idlg: the problem needs a model, θ [d] and an observed gradient [d]");
    }
    torch::AutoGradMode grad_mode(true);
    const auto& model = *problem.model;
    const auto batch = problem.batch_size;
    auto params = problem.params.detach().to(torch::kFloat).requires_grad_(true);
    auto observed = problem.observed.detach().to(torch::kFloat).flatten();

    torch::Tensor labels;
    if (problem.known_labels.defined()) {
      labels = problem.known_labels.to(torch::kLong);
    } else if (batch == 1) {
      const auto label = bulwark::final_layer_label(model.layout(), observed, problem.num_classes);
      if (!label) {
        throw bulwark::Error(bulwark::ErrorKind::Config,
                             "idlg: the model has no final fully connected layer with one row per class (" +
                                 std::to_string(problem.num_classes) +
                                 "), which iDLG's label rule reads; use attack = \"dlg\" or "
                                 "\"inverting_gradients\"");
      }
      labels = torch::tensor({*label}, torch::kLong);
    } else {
      throw bulwark::Error(bulwark::ErrorKind::Config,
                           "idlg infers labels for batch size 1 only (Zhao et al. 2020), but the "
                           "victim's batch has " + std::to_string(batch) +
                               " examples; set [leakage] batch_size = 1, grant the labels with "
                               "known_labels = true, or use attack = \"dlg\"");
    }

    auto x = bulwark::dummy_inputs(init_, patch_, batch, problem.input_shape, problem.generator).requires_grad_(true);
    auto matching_loss = [&](bool create_graph) {
      auto loss = torch::cross_entropy_loss(model.forward(params, x), labels, {},
                                            problem.observed_is_mean ? at::Reduction::Mean : at::Reduction::Sum);
      auto gradient = torch::autograd::grad({loss}, {params}, {}, /*retain_graph=*/true,
                                            create_graph)[0];
      return (gradient - observed).pow(2).sum();
    };
    const double stop_at = tolerance_ * observed.pow(2).sum().item<double>();
    auto match = bulwark::lbfgs_gradient_matching({x}, matching_loss, iterations_, lr_, history_, stop_at);

    bulwark::LeakageResult result;
    result.inputs = match.best[0];
    result.labels = labels;
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

BULWARK_PLUGIN(bulwark::Attack, Idlg, "idlg", "1.0.0",
               "iDLG: the label from the last layer's gradient signs, then L-BFGS input matching",
               "iDLG (Zhao, Mopuri, Bilen, 'iDLG: Improved Deep Leakage from Gradients', "
               "arXiv:2001.02610, 2020): for one example with cross-entropy loss, the row of the final "
               "fully connected layer's weight gradient that sums to a negative value is the true "
               "class (its input is non-negative after a sigmoid or ReLU). With the label fixed, the "
               "input is reconstructed as in DLG by L-BFGS (lr 1) on the squared L2 distance of "
               "gradients. Batch size 1 unless the labels are known.",
               kOptions)
