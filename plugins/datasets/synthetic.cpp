// Synthetic Gaussian-mixture classification data, for tests, benchmarks and quick experiments.
//
//   y ~ uniform over {0, ..., C-1} (exactly balanced: counts differ by at most one)
//   x = mu_y + noise * eps,   eps ~ N(0, I_D)
//
// The class means are mu_c = (separation / sqrt 2) q_c with q_1..q_C orthonormal (the QR factor of
// a Gaussian D x C matrix), so every pair of means lies exactly `separation` apart when C <= D
// (random unit directions when C > D). Two classes are confused with probability
// Phi(-separation / (2 noise)) by the Bayes rule, so the defaults (5, 1) give a task that softmax
// regression learns to about 95% accuracy. Everything is drawn from the experiment seed's Dataset
// stream: same options and seed, same data.
//
// The construction is the standard Gaussian-mixture benchmark, as in scikit-learn's
// make_classification (Guyon, "Design of experiments of the NIPS 2003 variable selection
// benchmark", 2003), with means placed on an orthonormal frame.
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "bulwark/error.hpp"
#include "bulwark/plugin.hpp"
#include "bulwark/rng.hpp"

namespace {

constexpr bulwark::OptionSpec kOptions[] = {
    {"classes", bulwark::OptType::Int, "10", 2, 100000, "Number of classes C.", nullptr},
    {"features", bulwark::OptType::Int, "20", 1, bulwark::kInf,
     "Features per example D (ignored when `shape` is given).", nullptr},
    {"shape", bulwark::OptType::List, "[]", 1, bulwark::kInf,
     "Per-example shape, e.g. [1, 28, 28] for image-like data (empty: [features]).", nullptr},
    {"train_size", bulwark::OptType::Int, "10000", 1, bulwark::kInf, "Training examples.", nullptr},
    {"test_size", bulwark::OptType::Int, "2000", 1, bulwark::kInf, "Test examples.", nullptr},
    {"separation", bulwark::OptType::Float, "5.0", 0, bulwark::kInf,
     "Distance between any two class means (larger = easier).", nullptr},
    {"noise", bulwark::OptType::Float, "1.0", 0, bulwark::kInf,
     "Standard deviation of the isotropic Gaussian noise around each mean.", nullptr},
};

std::vector<std::int64_t> example_shape(const bulwark::Options& options) {
  const auto listed = options.get<std::vector<double>>("shape");
  if (listed.empty()) return {options.get<std::int64_t>("features")};
  std::vector<std::int64_t> shape;
  for (double extent : listed) {
    if (extent != std::floor(extent)) {
      throw bulwark::Error(
          bulwark::ErrorKind::Config,
          "synthetic: `shape` entries must be whole numbers; found " + std::to_string(extent));
    }
    shape.push_back(static_cast<std::int64_t>(extent));
  }
  return shape;
}

class SyntheticDataset final : public bulwark::DatasetLoader {
 public:
  explicit SyntheticDataset(const bulwark::Options& options)
      : classes_(options.get<std::int64_t>("classes")),
        shape_(example_shape(options)),
        train_size_(options.get<std::int64_t>("train_size")),
        test_size_(options.get<std::int64_t>("test_size")),
        separation_(options.get<double>("separation")),
        noise_(options.get<double>("noise")) {
    // Refuse at once what this machine cannot hold, rather than fail deep in the allocator.
    const double bytes = 4.0 * static_cast<double>(c10::multiply_integers(shape_)) *
                         (static_cast<double>(train_size_) + static_cast<double>(test_size_));
    const double memory = static_cast<double>(::sysconf(_SC_PHYS_PAGES)) * static_cast<double>(::sysconf(_SC_PAGE_SIZE));
    if (memory > 0 && bytes > memory) {
      throw bulwark::Error(bulwark::ErrorKind::Config,
                           "synthetic: train_size + test_size = " + std::to_string(train_size_ + test_size_) +
                               " examples need " + std::to_string(static_cast<long long>(bytes / (1 << 30))) +
                               " GiB for their inputs; this machine has " +
                               std::to_string(static_cast<long long>(memory / (1 << 30))) +
                               " GiB: lower train_size or test_size");
    }
  }

  bulwark::Dataset load(const bulwark::DatasetContext& context) override {
    // Keep this order of draws (means, train, test): it defines the data for a seed.
    auto gen = bulwark::stream_generator(context.seed, /*round=*/0, bulwark::kServer,
                                         bulwark::Stream::Dataset);
    const std::int64_t d = c10::multiply_integers(shape_);
    auto directions = torch::randn({d, classes_}, gen, torch::kDouble);
    if (classes_ <= d) {
      directions = std::get<0>(torch::linalg_qr(directions));  // orthonormal columns
    } else {
      directions.div_(directions.norm(2, /*dim=*/0, /*keepdim=*/true));
    }
    const auto means = directions.t().mul(separation_ / std::sqrt(2.0)).to(torch::kFloat);

    bulwark::Dataset data;
    std::tie(data.train_inputs, data.train_labels) = sample(means, train_size_, gen);
    std::tie(data.test_inputs, data.test_labels) = sample(means, test_size_, gen);
    data.num_classes = classes_;
    data.input_shape = shape_;
    data.description = "Synthetic Gaussian mixture (" + std::to_string(classes_) + " classes, " +
                       std::to_string(d) + " features, separation " + c10::str(separation_) +
                       ", noise " + c10::str(noise_) + "; " + std::to_string(train_size_) +
                       " train / " + std::to_string(test_size_) + " test)";
    return data;
  }

 private:
  std::pair<torch::Tensor, torch::Tensor> sample(const torch::Tensor& means, std::int64_t n,
                                                 at::Generator& gen) const {
    // A random permutation taken mod C: exactly balanced classes in random order.
    auto labels = torch::randperm(n, gen, torch::kLong).remainder_(classes_);
    auto inputs = torch::randn({n, means.size(1)}, gen, torch::kFloat).mul_(noise_);
    inputs.add_(means.index_select(0, labels));
    std::vector<std::int64_t> shape{n};
    shape.insert(shape.end(), shape_.begin(), shape_.end());
    return {inputs.view(shape), labels};
  }

  std::int64_t classes_;
  std::vector<std::int64_t> shape_;
  std::int64_t train_size_, test_size_;
  double separation_, noise_;
};

}  // namespace

BULWARK_PLUGIN(bulwark::DatasetLoader, SyntheticDataset, "synthetic", "1.0.0",
               "Seeded Gaussian-mixture classification data (tabular or image-shaped)",
               "Gaussian-mixture classification set: balanced labels y, inputs x = mu_y + noise * "
               "eps with class means on an orthonormal frame, pairwise `separation` apart, so the "
               "Bayes pairwise error is Phi(-separation / (2 noise)). Deterministic from the "
               "options and the experiment seed. The standard synthetic benchmark, cf. "
               "scikit-learn's make_classification (Guyon, NIPS 2003 feature selection "
               "challenge design).",
               kOptions)
