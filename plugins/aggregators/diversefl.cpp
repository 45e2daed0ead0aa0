// DiverseFL (Prakash, Hashemi, Wang, Annavaram, Avestimehr, "Mitigating Byzantine Attacks in
// Federated Learning", arXiv:2010.07541, 2020; later versions titled by the method, DiverseFL):
//
//   Before training, each client j shares a small random sample (fraction `sample_fraction`) of its
//   data with the server. Every round the server computes the guiding update z̃_j on j's sample at
//   θ (the same quantity the client uploads), and accepts client j iff
//     (C1)  ⟨u_j, z̃_j⟩ > 0                         (same direction)
//     (C2)  ε1 < ‖u_j‖ / ‖z̃_j‖ < ε2                 (comparable magnitude)
//   g = the mean of the accepted rows (0 when none is accepted).
//
// The guiding updates come from the engine through context.guiding_update(j); this plugin asks for
// them by returning `sample_fraction` from shared_sample_fraction(). Outside an experiment (for
// example `bulwark aggregate`) there are no shared samples and aggregate() refuses to run.
//
// Non-finite rows: a NaN/±Inf in u_j (or z̃_j) makes the dot product or the norm ratio NaN/Inf,
// which fails C1 or C2, so the row is rejected and flagged like any other rejected row.
//
// Flags: every rejected row (reports_flags = true).
#include <torch/torch.h>

#include <string>
#include <vector>

#include "bulwark/error.hpp"
#include "bulwark/plugin.hpp"
#include "bulwark/robust.hpp"

namespace {

constexpr bulwark::OptionSpec kOptions[] = {
    {"sample_fraction", bulwark::OptType::Float, "0.01", 0, 1,
     "Fraction of each client's data shared with the server before training (e.g. 0.01, 0.03)."},
    {"epsilon1", bulwark::OptType::Float, "0.5", 0, bulwark::kInf,
     "Lower bound eps1 of the norm ratio ||u_j|| / ||z_j|| (condition C2)."},
    {"epsilon2", bulwark::OptType::Float, "2", 0, bulwark::kInf,
     "Upper bound eps2 of the norm ratio ||u_j|| / ||z_j|| (condition C2)."},
};

class DiverseFL final : public bulwark::Aggregator {
 public:
  explicit DiverseFL(const bulwark::Options& options)
      : sample_fraction_(options.get<double>("sample_fraction")),
        epsilon1_(options.get<double>("epsilon1")),
        epsilon2_(options.get<double>("epsilon2")) {
    if (!(sample_fraction_ > 0)) {
      throw bulwark::Error(bulwark::ErrorKind::Config,
                           "diversefl: sample_fraction must be > 0 (each client must share some "
                           "data with the server); found " + std::to_string(sample_fraction_));
    }
    if (!(epsilon1_ < epsilon2_)) {
      throw bulwark::Error(bulwark::ErrorKind::Config,
                           "diversefl: needs epsilon1 < epsilon2 (the accepted range of "
                           "||u_j|| / ||z_j||); found epsilon1 = " + std::to_string(epsilon1_) +
                               ", epsilon2 = " + std::to_string(epsilon2_));
    }
  }

  double shared_sample_fraction() const override { return sample_fraction_; }

  bulwark::AggregationResult aggregate(const torch::Tensor& updates, const torch::Tensor&,
                                       const bulwark::AggregationContext& context) override {
    bulwark::check_update_matrix(updates, "diversefl");
    if (!context.guiding_update) {
      throw bulwark::Error(bulwark::ErrorKind::Config,
                           "diversefl: the engine did not provide shared samples "
                           "(AggregationContext::guiding_update is empty); DiverseFL needs the "
                           "server-side guiding update of every client, so run it inside an "
                           "experiment rather than on saved updates");
    }
    const auto n = updates.size(0);
    const auto d = updates.size(1);
    std::vector<torch::Tensor> guides;
    guides.reserve(n);
    for (std::int64_t j = 0; j < n; ++j) {
      auto z = context.guiding_update(j);
      if (!z.defined() || z.numel() != d) {
        throw bulwark::Error(bulwark::ErrorKind::Runtime,
                             "diversefl: the guiding update for row " + std::to_string(j) +
                                 " has " + std::to_string(z.defined() ? z.numel() : 0) +
                                 " entries; expected d = " + std::to_string(d));
      }
      guides.push_back(z.reshape({d}).to(updates.device(), updates.scalar_type()));
    }
    auto guide = torch::stack(guides);

    auto dots = (updates * guide).sum(/*dim=*/1).to(torch::kDouble);
    auto ratio = updates.norm(2, /*dim=*/1).to(torch::kDouble) /
                 guide.norm(2, /*dim=*/1).to(torch::kDouble);
    // NaN compares false everywhere, so a non-finite row fails C1 or C2 and is rejected.
    auto accepted = (dots > 0).logical_and_(ratio > epsilon1_).logical_and_(ratio < epsilon2_);

    bulwark::AggregationResult result;
    result.reports_flags = true;
    auto chosen = accepted.nonzero().flatten();
    result.aggregate = chosen.numel() > 0 ? updates.index_select(0, chosen).mean(/*dim=*/0)
                                          : torch::zeros({d}, updates.options());
    auto flagged = (~accepted).nonzero().flatten().cpu().contiguous();
    result.flagged_rows.assign(flagged.data_ptr<std::int64_t>(),
                               flagged.data_ptr<std::int64_t>() + flagged.numel());
    return result;
  }

 private:
  double sample_fraction_;
  double epsilon1_;
  double epsilon2_;
};

}  // namespace

BULWARK_PLUGIN(bulwark::Aggregator, DiverseFL, "diversefl", "1.0.0",
               "DiverseFL: per-client guiding updates on shared samples (Prakash & Avestimehr)",
               "DiverseFL (S. Prakash, H. Hashemi, Y. Wang, M. Annavaram, S. Avestimehr, "
               "'Mitigating Byzantine Attacks in Federated Learning', arXiv:2010.07541, 2020): "
               "each client shares a fraction sample_fraction of its data with the server; every "
               "round the server computes the guiding update z_j on client j's sample and accepts "
               "j iff <u_j, z_j> > 0 and epsilon1 < ||u_j|| / ||z_j|| < epsilon2; g is the mean of "
               "the accepted uploads (0 if none). Needs the engine's shared samples "
               "(context.guiding_update). Flags every rejected row.",
               kOptions)
