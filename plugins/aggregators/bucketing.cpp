// Bucketing, as a pre-aggregator (Karimireddy, He, Jaggi, "Byzantine-Robust Learning on
// Heterogeneous Datasets via Bucketing", ICLR 2022, Algorithm 1):
//
//   π = a random permutation of 1..n
//   y_i = (1/|B_i|) Σ_{k ∈ B_i} u_{π(k)},   B_i = {(i−1)s + 1, ..., min(is, n)},   i = 1..⌈n/s⌉
//
// The ⌈n/s⌉ bucket means y_i then go to the robust rule after it (`pre = ["bucketing"]`); averaging
// s random rows shrinks the spread between heterogeneous honest clients, which is what lets rules
// such as Krum or the median work on non-IID data. The last bucket holds the n mod s leftover rows
// when s does not divide n. The permutation is drawn from context.generator (the engine's seeded
// Aggregator stream), so a run is reproducible. Each bucket's weight is the sum of its members'
// weights. Used alone, aggregate() buckets and then takes the plain mean of the bucket means.
//
// Note for detection metrics: the rows after bucketing are buckets, not clients, so a rule after
// it flags buckets.
//
// Non-finite rows: a NaN/±Inf row makes its bucket non-finite, i.e. the bucket is Byzantine as a
// whole and the rule after it excludes it; the plain mean of aggregate() skips non-finite buckets
// (g = 0 if none is finite).
//
// Cost: one pass over U (index_add of each row into its bucket).
#include <torch/torch.h>

#include <string>

#include "bulwark/error.hpp"
#include "bulwark/plugin.hpp"
#include "bulwark/robust.hpp"

namespace {

constexpr bulwark::OptionSpec kOptions[] = {
    {"s", bulwark::OptType::Int, "2", 1, bulwark::kInf,
     "Bucket size s: rows averaged per bucket (ceil(n / s) buckets)."},
};

class Bucketing final : public bulwark::Aggregator {
 public:
  explicit Bucketing(const bulwark::Options& options) : s_(options.get<std::int64_t>("s")) {}

  bulwark::UpdateSet preprocess(const torch::Tensor& updates, const torch::Tensor& weights,
                                const bulwark::AggregationContext& context) override {
    bulwark::check_update_matrix(updates, "bucketing");
    if (!context.generator.defined()) {
      throw bulwark::Error(bulwark::ErrorKind::Runtime,
                           "bucketing: context.generator is not set; the engine must pass the "
                           "seeded Aggregator stream for the random permutation");
    }
    const auto n = updates.size(0);
    const auto buckets = (n + s_ - 1) / s_;
    // Row π(k) goes to bucket k / s: scatter the bucket numbers of the positions to the rows.
    const auto index_options = updates.options().dtype(torch::kLong);  // the generator's device
    auto permutation = torch::randperm(n, context.generator, index_options);
    auto bucket_of_position = torch::arange(n, index_options).div(s_, /*rounding_mode=*/"floor");
    auto bucket_of_row = torch::empty({n}, index_options).scatter_(0, permutation, bucket_of_position);

    auto sums = torch::zeros({buckets, updates.size(1)}, updates.options())
                    .index_add_(0, bucket_of_row, updates);
    auto sizes = torch::zeros({buckets}, updates.options())
                     .index_add_(0, bucket_of_row, torch::ones({n}, updates.options()));
    auto member_weights =
        weights.defined() ? weights.to(updates.device()) : torch::ones({n}, updates.options());
    auto bucket_weights = torch::zeros({buckets}, member_weights.options())
                              .index_add_(0, bucket_of_row, member_weights);
    return {sums / sizes.unsqueeze(1), bucket_weights};
  }

  bulwark::AggregationResult aggregate(const torch::Tensor& updates, const torch::Tensor& weights,
                                       const bulwark::AggregationContext& context) override {
    bulwark::AggregationResult result;
    result.aggregate = bulwark::finite_mean(preprocess(updates, weights, context).updates);
    return result;
  }

 private:
  std::int64_t s_;
};

}  // namespace

BULWARK_PLUGIN(bulwark::Aggregator, Bucketing, "bucketing", "1.0.0",
               "Bucketing pre-aggregator (Karimireddy, He, Jaggi, ICLR 2022)",
               "Bucketing (S. P. Karimireddy, L. He, M. Jaggi, 'Byzantine-Robust Learning on "
               "Heterogeneous Datasets via Bucketing', ICLR 2022), a pre-aggregator: the rows are "
               "randomly permuted (context.generator) and split into ceil(n / s) buckets of s "
               "consecutive rows (the last may be smaller); each bucket is replaced by its mean. "
               "Chain with pre = [\"bucketing\"]; alone it averages the bucket means. A NaN/Inf "
               "row makes its bucket non-finite (the next rule excludes it).",
               kOptions)
