// Mimic (Karimireddy, He, Jaggi, "Byzantine-Robust Learning on Heterogeneous Datasets via
// Bucketing", ICLR 2022, §5; ByzFL's Mimic, FLPoison's Mimic): every malicious client uploads an
// exact copy of one honest client's update,
//
//   u_mal = u_h,   h = the `target`-th honest row of the round (0 = the first, rows in client order)
//
// The copies are honest-looking, so no outlier test catches them; on heterogeneous data they
// over-weight one client's data distribution and starve the others, which is what stalls robust
// rules without bucketing. Omniscient: it reads the honest rows. The libraries' default target is
// 0; the paper's variant, which learns which client to copy, is not implemented.
#include <string>

#include "bulwark/error.hpp"
#include "bulwark/plugin.hpp"
#include "bulwark/rows.hpp"

namespace {

constexpr bulwark::OptionSpec kOptions[] = {
    {"target", bulwark::OptType::Int, "0", 0, bulwark::kInf,
     "Which honest row of the round to copy (0 = the first honest client in client order)."},
};

class Mimic final : public bulwark::Attack {
 public:
  explicit Mimic(const bulwark::Options& options) : target_(options.get<std::int64_t>("target")) {}

  bool poisons_updates() const override { return true; }
  bool omniscient() const override { return true; }

  void poison_updates(torch::Tensor& updates, const bulwark::UpdateAttackContext& context) override {
    const auto honest = static_cast<std::int64_t>(context.honest_rows.size());
    if (honest == 0) return;  // every participant is malicious: nobody to copy, uploads stay as trained
    if (target_ >= honest) {
      throw bulwark::Error(bulwark::ErrorKind::Config,
                           "mimic: target = " + std::to_string(target_) + " but only " + std::to_string(honest) +
                               " honest clients take part in round " + std::to_string(context.round) +
                               "; choose a target below the smallest number of honest clients per round");
    }
    const auto copied = updates[context.honest_rows[static_cast<std::size_t>(target_)]].clone();
    bulwark::write_rows(updates, context.malicious_rows, copied);
  }

 private:
  std::int64_t target_;
};

}  // namespace

BULWARK_PLUGIN(bulwark::Attack, Mimic, "mimic", "1.0.0",
               "Mimic: copy one honest client's update (Karimireddy, He, Jaggi, ICLR 2022)",
               "Mimic attack (S. P. Karimireddy, L. He, M. Jaggi, 'Byzantine-Robust Learning on "
               "Heterogeneous Datasets via Bucketing', ICLR 2022; as in ByzFL and FLPoison): every "
               "malicious row becomes a copy of the `target`-th honest row of the round (default the "
               "first). Omniscient. Over-weights one client's data on heterogeneous data.",
               kOptions)
