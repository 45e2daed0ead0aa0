// Fault injection: malicious rows become ±Inf.
//
//   sign = "positive": u_mal = +Inf in every coordinate; "negative": −Inf; "random": each
//   coordinate independently ±Inf with probability 1/2 (from the round's attack stream).
//
// The overflow fault of DESIGN.md §6: the run continues, the aggregator receives the rows, and the
// engine counts them in `nonfinite_updates`. Non-omniscient.
#include <torch/torch.h>

#include <limits>
#include <string>

#include "bulwark/plugin.hpp"

namespace {

constexpr bulwark::OptionSpec kOptions[] = {
    {"sign", bulwark::OptType::String, "\"positive\"", 0, 0,
     "positive: +Inf everywhere; negative: -Inf everywhere; random: each coordinate +-Inf with "
     "probability 1/2.",
     "positive|negative|random"},
};

class Inf final : public bulwark::Attack {
 public:
  explicit Inf(const bulwark::Options& options) : sign_(options.get<std::string>("sign")) {}

  bool poisons_updates() const override { return true; }

  void poison_updates(torch::Tensor& updates, const bulwark::UpdateAttackContext& context) override {
    constexpr double kInfinity = std::numeric_limits<double>::infinity();
    if (sign_ == "random") {
      auto generator = context.generator;
      // bernoulli_ gives 0/1; map to -Inf/+Inf: (2b − 1) · Inf.
      updates.bernoulli_(0.5, generator).mul_(2).sub_(1).mul_(kInfinity);
      return;
    }
    updates.fill_(sign_ == "positive" ? kInfinity : -kInfinity);
  }

 private:
  std::string sign_;
};

}  // namespace

BULWARK_PLUGIN(bulwark::Attack, Inf, "inf", "1.0.0",
               "Fault injection: malicious rows become +-Inf",
               "Fault-injection attack: every coordinate of every malicious row becomes +Inf "
               "(sign = positive), -Inf (negative) or an independent fair choice of the two "
               "(random, from the seeded attack stream). The run continues: the aggregator receives "
               "the rows and the engine counts them in metrics.csv (nonfinite_updates).",
               kOptions)
