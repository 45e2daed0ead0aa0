// Inverting Gradients (Geiping, Bauermeister, Dröge, Moeller, "Inverting Gradients — How easy is
// it to break privacy in federated learning?", NeurIPS 2020).
//
// Match the direction of the gradient, not its magnitude, under an image prior:
//
//   x' = argmin_{x' ∈ [a, b]}  1 − ⟨∇θ ℓ(x', y), g⟩ / (‖∇θ ℓ(x', y)‖ ‖g‖)  +  α_TV · TV(x')
//
// with TV(x) = mean |x[..., i, j+1] − x[..., i, j]| + mean |x[..., i+1, j] − x[..., i, j]| (the
// anisotropic total variation of the reference code; 0 for inputs that are not images). The
// optimiser is Adam on the sign of the gradient (the paper's "signed" setting) at lr 0.1, the
// learning rate divided by 10 at 3/8, 5/8 and 7/8 of the iterations, and after every step x' is
// projected back into the data box [input_min, input_max]. Each of `restarts` runs starts from
// x' ~ N(0, 1); the run with the lowest final gradient loss (without the prior) is kept.
//
// Labels: the threat model's labels when it grants them (problem.known_labels); otherwise, for
// batch size 1, the iDLG rule (the class whose row of the final layer's weight gradient sums to the
// most negative value); otherwise label logits y' are optimised jointly with soft targets
// softmax(y'), as DLG does (the reference code's fallback).
#include <torch/torch.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "bulwark/error.hpp"
#include "bulwark/inversion.hpp"
#include "bulwark/model.hpp"
#include "bulwark/plugin.hpp"

namespace {

constexpr bulwark::OptionSpec kOptions[] = {
    {"iterations", bulwark::OptType::Int, "4000", 1, bulwark::kInf,
     "Adam iterations per restart (4000 in the reference configuration).", nullptr},
    {"restarts", bulwark::OptType::Int, "1", 1, bulwark::kInf,
     "Independent runs from fresh random inputs; the one with the lowest gradient loss is kept.", nullptr},
    {"lr", bulwark::OptType::Float, "0.1", 1e-12, bulwark::kInf, "Adam learning rate before decay.", nullptr},
    {"tv", bulwark::OptType::Float, "1e-4", 0, bulwark::kInf, "Weight α_TV of the total-variation prior.",
     nullptr},
    {"signed", bulwark::OptType::Bool, "true", 0, 1,
     "Step on the sign of the input gradient (the paper's setting).", nullptr},
    {"decay", bulwark::OptType::Bool, "true", 0, 1,
     "Divide the learning rate by 10 at 3/8, 5/8 and 7/8 of the iterations.", nullptr},
    {"input_min", bulwark::OptType::Float, "0", -bulwark::kInf, bulwark::kInf,
     "Lower end of the data box the reconstruction is projected into (0 for pixels in [0, 1]).", nullptr},
    {"input_max", bulwark::OptType::Float, "1", -bulwark::kInf, bulwark::kInf,
     "Upper end of the data box (1 for pixels in [0, 1]).", nullptr},
};

torch::Tensor total_variation(const torch::Tensor& x) {
  if (x.dim() != 4) return torch::zeros({}, x.options());
  auto dx = (x.narrow(3, 1, x.size(3) - 1) - x.narrow(3, 0, x.size(3) - 1)).abs().mean();
  auto dy = (x.narrow(2, 1, x.size(2) - 1) - x.narrow(2, 0, x.size(2) - 1)).abs().mean();
  return dx + dy;
}

class InvertingGradients final : public bulwark::Attack {
 public:
  explicit InvertingGradients(const bulwark::Options& options)
      : iterations_(options.get<std::int64_t>("iterations")),
        restarts_(options.get<std::int64_t>("restarts")),
        lr_(options.get<double>("lr")),
        tv_(options.get<double>("tv")),
        signed_(options.get<bool>("signed")),
        decay_(options.get<bool>("decay")),
        low_(options.get<double>("input_min")),
        high_(options.get<double>("input_max")) {
    if (!(low_ < high_)) {
      throw bulwark::Error(bulwark::ErrorKind::Config,
                           "inverting_gradients: input_min must be below input_max, found [" +
                               std::to_string(low_) + ", " + std::to_string(high_) + "]");
    }
    // MultiStepLR milestones of the reference code: iterations // 2.667, // 1.6, // 1.142.
    for (double divisor : {2.667, 1.6, 1.142}) {
      milestones_.push_back(static_cast<std::int64_t>(std::floor(static_cast<double>(iterations_) / divisor)));
    }
  }

  bool reconstructs() const override { return true; }

  bulwark::LeakageResult reconstruct(const bulwark::LeakageProblem& problem) override {
    if (!problem.model || !problem.params.defined() || !problem.observed.defined() ||
        problem.observed.numel() != problem.params.numel()) {
      throw bulwark::Error(bulwark::ErrorKind::Runtime,
                           "inverting_gradients: the problem needs a model, θ [d] and an observed "
                           "gradient [d]");
    }
    torch::AutoGradMode grad_mode(true);
    const auto batch = problem.batch_size;
    auto observed = problem.observed.detach().to(torch::kFloat).flatten();

    torch::Tensor labels;  // hard labels [B], or undefined: optimise label logits
    if (problem.known_labels.defined()) {
      labels = problem.known_labels.to(torch::kLong);
    } else if (batch == 1) {
      const auto label = bulwark::final_layer_label(problem.model->layout(), observed, problem.num_classes);
      if (!label) {
        throw bulwark::Error(bulwark::ErrorKind::Config,
                             "inverting_gradients: labels are unknown and the model has no final fully "
                             "connected layer with one row per class to infer them from; grant the labels "
                             "with [leakage] known_labels = true");
      }
      labels = torch::tensor({*label}, torch::kLong);
    }

    Run best;
    best.score = std::numeric_limits<double>::infinity();
    for (std::int64_t restart = 0; restart < restarts_; ++restart) {
      auto run = single_run(problem, observed, labels);
      // A diverged restart (NaN score) never displaces a finite one, and any run displaces it.
      if (restart == 0 || std::isnan(best.score) || run.score < best.score) best = std::move(run);
    }

    bulwark::LeakageResult result;
    result.inputs = best.inputs;
    result.labels = labels.defined() ? labels : best.label_logits.argmax(1);
    result.iterations = iterations_;
    result.distance_trace = torch::tensor(best.trace, torch::kDouble);
    return result;
  }

 private:
  struct Run {
    torch::Tensor inputs, label_logits;
    std::vector<double> trace;
    double score = 0.0;
  };

  Run single_run(const bulwark::LeakageProblem& problem, const torch::Tensor& observed,
                 const torch::Tensor& labels) const {
    const auto& model = *problem.model;
    auto params = problem.params.detach().to(torch::kFloat).requires_grad_(true);
    std::vector<std::int64_t> sizes{problem.batch_size};
    sizes.insert(sizes.end(), problem.input_shape.begin(), problem.input_shape.end());
    auto x = torch::randn(sizes, problem.generator).requires_grad_(true);
    std::vector<torch::Tensor> variables{x};
    torch::Tensor logits;
    if (!labels.defined()) {
      logits = torch::randn({problem.batch_size, problem.num_classes}, problem.generator).requires_grad_(true);
      variables.push_back(logits);
    }
    const auto reduction = problem.observed_is_mean ? at::Reduction::Mean : at::Reduction::Sum;
    const double observed_norm = observed.norm().item<double>();
    auto gradient_loss = [&](bool with_grad) {
      torch::Tensor loss;
      auto out = model.forward(params, x);
      if (labels.defined()) {
        loss = torch::cross_entropy_loss(out, labels, {}, reduction);
      } else {
        auto per_example = -(torch::softmax(logits, 1) * torch::log_softmax(out, 1)).sum(1);
        loss = problem.observed_is_mean ? per_example.mean() : per_example.sum();
      }
      auto gradient = torch::autograd::grad({loss}, {params}, {}, /*retain_graph=*/true,
                                            /*create_graph=*/with_grad)[0];
      return 1 - (gradient * observed).sum() / (gradient.norm() * observed_norm).clamp_min(1e-30);
    };

    torch::optim::Adam optimizer(variables, torch::optim::AdamOptions(lr_));
    auto& options = static_cast<torch::optim::AdamOptions&>(optimizer.param_groups()[0].options());
    Run run;
    for (std::int64_t it = 0; it < iterations_; ++it) {
      if (decay_) {
        double lr = lr_;
        for (auto m : milestones_) lr *= it >= m ? 0.1 : 1.0;
        options.lr(lr);
      }
      optimizer.zero_grad();
      auto loss = gradient_loss(/*with_grad=*/true);
      auto objective = tv_ > 0 ? loss + tv_ * total_variation(x) : loss;
      auto grads = torch::autograd::grad({objective}, variables);
      x.mutable_grad() = signed_ ? grads[0].sign() : grads[0];
      if (logits.defined()) logits.mutable_grad() = grads[1];
      optimizer.step();
      {
        torch::NoGradGuard no_grad;
        x.clamp_(low_, high_);
      }
      run.trace.push_back(loss.item<double>());
    }
    run.score = gradient_loss(/*with_grad=*/false).item<double>();
    run.inputs = x.detach().clone();
    if (logits.defined()) run.label_logits = logits.detach().clone();
    return run;
  }

  std::int64_t iterations_, restarts_;
  double lr_, tv_;
  bool signed_, decay_;
  double low_, high_;
  std::vector<std::int64_t> milestones_;
};

}  // namespace

BULWARK_PLUGIN(bulwark::Attack, InvertingGradients, "inverting_gradients", "1.0.0",
               "Inverting Gradients: cosine gradient matching with a TV prior, signed Adam, restarts",
               "Inverting Gradients (Geiping, Bauermeister, Dröge, Moeller, 'Inverting Gradients - "
               "How easy is it to break privacy in federated learning?', NeurIPS 2020): minimises "
               "1 - cos(grad of the dummy input, observed gradient) + alpha_TV * TV(x') over inputs "
               "boxed to the data range, with signed Adam (lr 0.1, divided by 10 at 3/8, 5/8 and 7/8 "
               "of the iterations) and several restarts, keeping the run with the lowest gradient "
               "loss. Labels are known, inferred by the iDLG rule (batch size 1), or optimised.",
               kOptions)
