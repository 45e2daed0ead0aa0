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
// Aggregator stream), so a run is reproducible; the `permutation` option fixes it instead (π as
// the list of row indices in bucket order, as ByzFL's Bucketing applies numpy's permutation),
// which `bulwark aggregate --permutation perm.npy` uses to compare with other libraries. Each bucket's weight is the sum of its members'
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

#include <cmath>
#include <string>
#include <vector>

#include "bulwark/error.hpp"
#include "bulwark/plugin.hpp"
#include "bulwark/robust.hpp"

namespace {

constexpr bulwark::OptionSpec kOptions[] = {
    {"s", bulwark::OptType::Int, "2", 1, bulwark::kInf,
     "Bucket size s: rows averaged per bucket (ceil(n / s) buckets)."},
    {"permutation", bulwark::OptType::List, "[]", 0, bulwark::kInf,
     "Fixed permutation pi (row indices in bucket order, a permutation of 0..n-1); empty: a fresh random "
     "one each round from the seeded stream."},
};

class Bucketing final : public bulwark::Aggregator {
 public:
  explicit Bucketing(const bulwark::Options& options) : s_(options.get<std::int64_t>("s")) {
    for (double row : options.get<std::vector<double>>("permutation")) {
      if (row != std::floor(row)) {
        throw bulwark::Error(bulwark::ErrorKind::Config,
                             "bucketing: permutation entries are row indices; found " + std::to_string(row));
      }
      fixed_permutation_.push_back(static_cast<std::int64_t>(row));
    }
  }

  bulwark::UpdateSet preprocess(const torch::Tensor& updates, const torch::Tensor& weights,
                                const bulwark::AggregationContext& context) override {
    bulwark::check_update_matrix(updates, "bucketing");
    const auto n = updates.size(0);
    const auto index_options = updates.options().dtype(torch::kLong);  // the generator's device
    torch::Tensor permutation;
    if (!fixed_permutation_.empty()) {
      permutation = torch::tensor(fixed_permutation_, torch::kLong);
      if (permutation.numel() != n || !std::get<0>(permutation.sort()).equal(torch::arange(n, torch::kLong))) {
        throw bulwark::Error(bulwark::ErrorKind::Config,
                             "bucketing: permutation must list each of the " + std::to_string(n) + " rows 0.." +
                                 std::to_string(n - 1) + " exactly once; it has " +
                                 std::to_string(permutation.numel()) + " entries" +
                                 (permutation.numel() == n ? ", with a row repeated or out of range" : ""));
      }
      permutation = permutation.to(index_options.device());
    } else if (!context.generator.defined()) {
      throw bulwark::Error(bulwark::ErrorKind::Runtime,
                           "bucketing: context.generator is not set; the engine must pass the "
                           "seeded Aggregator stream for the random permutation");
    } else {
      permutation = torch::randperm(n, context.generator, index_options);
    }
    const auto buckets = (n + s_ - 1) / s_;
    // Row π(k) goes to bucket k / s: scatter the bucket numbers of the positions to the rows.
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
  std::vector<std::int64_t> fixed_permutation_;
};

}  // namespace

BULWARK_PLUGIN(bulwark::Aggregator, Bucketing, "bucketing", "1.0.0",
               "Bucketing pre-aggregator (Karimireddy, He, Jaggi, ICLR 2022)",
               "Bucketing (S. P. Karimireddy, L. He, M. Jaggi, 'Byzantine-Robust Learning on "
               "Heterogeneous Datasets via Bucketing', ICLR 2022), a pre-aggregator: the rows are "
               "randomly permuted (context.generator, or the fixed `permutation`) and split into ceil(n / s) buckets of s "
               "consecutive rows (the last may be smaller); each bucket is replaced by its mean. "
               "Chain with pre = [\"bucketing\"]; alone it averages the bucket means. A NaN/Inf "
               "row makes its bucket non-finite (the next rule excludes it).",
               kOptions)
