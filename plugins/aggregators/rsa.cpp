// RSA, ℓ1-norm regularised form (Li, Xu, Chen, Giannakis, Ling, "RSA: Byzantine-Robust Stochastic
// Aggregation Methods for Distributed Learning from Heterogeneous Datasets", AAAI 2019, eqs. (7)
// and (8)): every regular worker i keeps its own model x_i, the server keeps x_0, and at iteration k
//
//   worker:  x_i^{k+1} = x_i^k − α^k (∇F(x_i^k, ξ_i^k) + λ sign(x_i^k − x_0^k))
//   server:  x_0^{k+1} = x_0^k − α^k (∇f_0(x_0^k) + λ Σ_i sign(x_0^k − x_i^k))
//
// where the sum runs over every worker's message: x_i^k from a regular worker, anything from a
// Byzantine one, which can move each coordinate of x_0 by at most α λ per iteration.
//
// In Bulwark a round is an iteration. client_protocol() asks the kernel for the worker side: each
// client keeps x_i across rounds (θ before its first round; stored and checkpointed by the
// kernel), uploads u_i = x_i^k − θ as x_i stands when the round starts, then trains from x_i with
// λ sign(x − θ) added to every local step's gradient. The paper's worker takes one step:
// `local_iterations = 1`. This rule returns g = λ Σ_i sign(u_i) = −λ Σ_i sign(x_0 − x_i), and the
// server's step θ ← θ + lr · g (fedavg mode) with `[server] lr = α` is the server update; ∇f_0 is
// `[server] weight_decay` (f_0 = w/2 ‖θ‖²). The client and server step sizes are the two lr keys.
// `client_lambda` sets the clients' penalty apart from the server's: the DiverseFL document writes
// the worker step as μ(∇ℓ / n + δ sign(·)) and the server's as μ(λθ + δ Σ sign(·)), which is
// [clients] lr = μ / n with client_lambda = n δ, [server] lr = μ with lambda = δ.
//
// Non-finite entries: sign(±Inf) = ±1 is a message like any other; a NaN entry contributes 0 (no
// pull). Rows are not weighted and nothing is rejected (no flags), as in the paper. RSA runs in
// fedavg mode, without a [privacy] mechanism or [leakage] (the kernel refuses those).
#include <torch/torch.h>

#include <string>

#include "bulwark/error.hpp"
#include "bulwark/plugin.hpp"
#include "bulwark/robust.hpp"

namespace {

constexpr bulwark::OptionSpec kOptions[] = {
    {"lambda", bulwark::OptType::Float, "0.001", 0, bulwark::kInf,
     "lambda: weight of the l1 penalty sum_i ||x_i - x_0||_1, the pull between each client's model and "
     "the server's."},
    {"client_lambda", bulwark::OptType::Float, "-1", -1, bulwark::kInf,
     "The penalty weight in the clients' steps; -1: lambda. n * lambda with [clients] lr = mu / n is "
     "the form whose worker gradient is divided by n (the DiverseFL document's eq. 6)."},
};

class Rsa final : public bulwark::Aggregator {
 public:
  explicit Rsa(const bulwark::Options& options)
      : lambda_(options.get<double>("lambda")), client_lambda_(options.get<double>("client_lambda")) {
    if (client_lambda_ < 0 && client_lambda_ != -1) {
      throw bulwark::Error(bulwark::ErrorKind::Config,
                           "rsa: client_lambda must be >= 0, or -1 for lambda; found " + std::to_string(client_lambda_));
    }
    if (client_lambda_ == -1) client_lambda_ = lambda_;
  }

  bulwark::ClientProtocol client_protocol() const override { return {/*persistent_models=*/true, client_lambda_}; }

  bulwark::AggregationResult aggregate(const torch::Tensor& updates, const torch::Tensor&,
                                       const bulwark::AggregationContext&) override {
    bulwark::check_update_matrix(updates, "rsa");
    bulwark::AggregationResult result;
    // The column sums as a product with a vector of ones (one pass; a reduction along dim 0 is
    // slower): exact integers, then one rounding in the multiplication by λ.
    const auto signs = torch::sign(updates).nan_to_num_(0.0);
    result.aggregate = torch::ones({updates.size(0)}, updates.options()).matmul(signs).mul_(lambda_);
    return result;
  }

 private:
  double lambda_, client_lambda_;
};

}  // namespace

BULWARK_PLUGIN(bulwark::Aggregator, Rsa, "rsa", "1.0.0",
               "RSA: l1-penalised models per client, the server moves by lambda sum sign (Li et al. AAAI 2019)",
               "RSA (L. Li, W. Xu, T. Chen, G. B. Giannakis, Q. Ling, 'RSA: Byzantine-Robust Stochastic "
               "Aggregation Methods for Distributed Learning from Heterogeneous Datasets', AAAI 2019): "
               "each client keeps its own model x_i (kept and checkpointed by the kernel), uploads "
               "x_i - theta and trains from x_i with lambda sign(x_i - theta) added to its gradient; "
               "g = lambda sum_i sign(x_i - theta), so [server] lr is the server's step size and "
               "[server] weight_decay its regulariser; client_lambda (default lambda) is the clients' "
               "penalty. Set local_iterations = 1 for the paper's "
               "algorithm. NaN entries count 0; no flags.",
               kOptions)
